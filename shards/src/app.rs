//! The application every shard runs: the gate (decode, check, route) in front of the services.
//!
//! The gate owns nothing but per-session protocol state; it checks each client frame (known opcode,
//! not server-internal, body decodes, `Hello` first), then routes the request to the shard its
//! component names, where it enters the service's bounded inbound queue.

use std::any::Any;

use lattice_core::net::compress::{BodyCompressor, CompressConfig};
use lattice_core::net::{CloseReason, Frame, SessionId};
use lattice_core::runtime::{ShardApp, ShardCx};
use lattice_core::telemetry::metrics::ShardMetrics;
use lattice_proto::version::{check_hello, PROTOCOL};
use lattice_proto::{error_code, pb, AnyMessage, OpcodeInfo};

use crate::service::ctx::Encoder;
use crate::service::registry::BuildError;
use crate::service::{build_service, Ctx, Req, ServiceInstance, SERVICES};

/// Messages between shards.
pub enum AppMsg {
    /// A client request routed to the shard that owns its key.
    Request {
        /// Service index.
        service: usize,
        /// Component index within the service.
        comp: usize,
        /// The request.
        req: Req<AnyMessage>,
    },
    /// A component-to-component message.
    Internal {
        /// Service index.
        service: usize,
        /// The payload, downcast by the receiving component.
        payload: Box<dyn Any + Send>,
    },
    /// A session closed on some shard: components drop what they keep for it.
    SessionClosed(SessionId),
}

/// Settings the app needs besides the component sections.
#[derive(Clone)]
pub struct AppSettings {
    /// Merged config table (component sections are read from it).
    pub table: toml::Table,
    /// Inbound queue limit per service.
    pub queue_limit: usize,
    /// Requests a service handles per loop pass.
    pub batch: usize,
    /// Body compression.
    pub compress: CompressConfig,
}

/// One shard's application.
pub struct App {
    services: Vec<ServiceInstance>,
    enc: Encoder,
    inflated: Vec<u8>,
    /// Per slot: (session id, greeted).
    greeted: Vec<(SessionId, bool)>,
    batch: usize,
}

impl App {
    /// Builds every service for shard `shard`.
    pub fn new(s: &AppSettings, shard: usize, shards: usize) -> Result<App, BuildError> {
        let services = SERVICES
            .iter()
            .map(|d| build_service(d, &s.table, shard, shards, s.queue_limit))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(App {
            services,
            enc: Encoder::new(BodyCompressor::new(s.compress)),
            inflated: Vec::new(),
            greeted: Vec::new(),
            batch: s.batch.max(1),
        })
    }

    fn is_greeted(&self, s: SessionId) -> bool {
        matches!(self.greeted.get(s.slot() as usize), Some((id, true)) if *id == s)
    }

    fn set_greeted(&mut self, s: SessionId, v: bool) {
        let slot = s.slot() as usize;
        if self.greeted.len() <= slot {
            self.greeted
                .resize(slot + 1, (SessionId::from_u64(u64::MAX), false));
        }
        self.greeted[slot] = (s, v);
    }

    fn hello(&mut self, cx: &ShardCx<AppMsg>, session: SessionId, rid: u32, hello: pb::Hello) {
        match check_hello(&hello.client_version, PROTOCOL) {
            Ok(_) => {
                self.set_greeted(session, true);
                let w = pb::Welcome {
                    server_version: PROTOCOL.to_string(),
                    session_id: session.as_u64(),
                };
                Ctx::new(cx, &mut self.enc).reply(session, rid, &w);
            }
            Err(r) => {
                let msg = r.to_string();
                let mut ctx = Ctx::new(cx, &mut self.enc);
                ctx.error(
                    session,
                    rid,
                    lattice_proto::opcode::HELLO,
                    r.error_code(),
                    &msg,
                );
                ctx.close(session, msg);
            }
        }
    }

    /// Queues (or, when nothing waits, handles at once) a request on this shard.
    fn accept(
        &mut self,
        cx: &ShardCx<AppMsg>,
        si: usize,
        ci: usize,
        req: Req<AnyMessage>,
        inline: bool,
    ) {
        let svc = &mut self.services[si];
        if inline && svc.queue.is_empty() {
            svc.handle(ci, &mut Ctx::new(cx, &mut self.enc), req);
            return;
        }
        if svc.queue.len() >= svc.queue_limit {
            ShardMetrics::add(&cx.m().dropped_busy_total, 1);
            let (s, rid, op) = (req.session, req.request_id, req.opcode);
            Ctx::new(cx, &mut self.enc).error(
                s,
                rid,
                op,
                error_code::BUSY,
                "service busy, retry later",
            );
            return;
        }
        svc.queue.push_back((ci, req));
        self.publish_depth(cx);
        cx.notify();
    }

    fn publish_depth(&self, cx: &ShardCx<AppMsg>) {
        let depth: usize = self.services.iter().map(|s| s.queue.len()).sum();
        cx.m()
            .service_queue_depth
            .store(depth as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

fn log_in(session: SessionId, rid: u32, info: &OpcodeInfo, msg: &AnyMessage) {
    if tracing::enabled!(tracing::Level::TRACE) {
        if info.no_log_request {
            tracing::trace!(%session, request_id = rid, opcode = info.opcode, msg = info.name, body = "<not logged>", "frame in");
        } else {
            tracing::trace!(%session, request_id = rid, opcode = info.opcode, msg = info.name, body = ?msg, "frame in");
        }
    }
}

impl ShardApp for App {
    type Msg = AppMsg;

    fn on_start(&mut self, cx: &ShardCx<AppMsg>) {
        for svc in &mut self.services {
            svc.start(&mut Ctx::new(cx, &mut self.enc));
        }
    }

    fn on_open(&mut self, _cx: &ShardCx<AppMsg>, session: SessionId) {
        self.set_greeted(session, false);
    }

    fn on_frame(&mut self, cx: &ShardCx<AppMsg>, session: SessionId, frame: Frame<'_>) {
        let h = frame.header;
        let m = cx.m();
        let Some(info) = lattice_proto::info(h.opcode) else {
            ShardMetrics::add(&m.unknown_opcode_total, 1);
            tracing::debug!(%session, opcode = h.opcode, "unknown opcode; frame skipped");
            Ctx::new(cx, &mut self.enc).error(
                session,
                h.request_id,
                h.opcode,
                error_code::UNKNOWN_OPCODE,
                "unknown opcode",
            );
            return;
        };
        if info.no_client {
            ShardMetrics::add(&m.rejected_internal_total, 1);
            tracing::warn!(%session, opcode = h.opcode, msg = info.name, "client sent a server-internal message; rejected");
            Ctx::new(cx, &mut self.enc).error(
                session,
                h.request_id,
                h.opcode,
                error_code::NOT_ALLOWED,
                "server-internal message",
            );
            return;
        }
        let body: &[u8] = if h.compressed() {
            self.inflated.clear();
            if let Err(e) = self.enc.compressor.inflate(frame.body, &mut self.inflated) {
                cx.close(session, CloseReason::Protocol(e.to_string()));
                return;
            }
            &self.inflated
        } else {
            frame.body
        };
        let msg = match lattice_proto::decode(h.opcode, body) {
            Ok(msg) => msg,
            Err(e) => {
                ShardMetrics::add(&m.bad_request_total, 1);
                tracing::debug!(%session, opcode = h.opcode, error = %e, "bad request");
                Ctx::new(cx, &mut self.enc).error(
                    session,
                    h.request_id,
                    h.opcode,
                    e.error_code(),
                    &e.to_string(),
                );
                return;
            }
        };
        log_in(session, h.request_id, info, &msg);
        let msg = match msg {
            AnyMessage::Hello(hello) => return self.hello(cx, session, h.request_id, hello),
            other => other,
        };
        if !self.is_greeted(session) {
            let mut ctx = Ctx::new(cx, &mut self.enc);
            ctx.error(
                session,
                h.request_id,
                h.opcode,
                error_code::NOT_ALLOWED,
                "send Hello first",
            );
            ctx.close(session, "first message was not Hello");
            return;
        }
        for si in 0..self.services.len() {
            let Some(&ci) = self.services[si].by_opcode.get(&h.opcode) else {
                continue;
            };
            let dst = self.services[si].components[ci]
                .route(&msg, session)
                .shard(cx.id, cx.shards);
            let req = Req {
                session,
                request_id: h.request_id,
                opcode: h.opcode,
                msg,
            };
            if dst == cx.id {
                self.accept(cx, si, ci, req, true);
            } else {
                cx.send(
                    dst,
                    AppMsg::Request {
                        service: si,
                        comp: ci,
                        req,
                    },
                );
            }
            return;
        }
        Ctx::new(cx, &mut self.enc).error(
            session,
            h.request_id,
            h.opcode,
            error_code::NOT_ALLOWED,
            "not a request message",
        );
    }

    fn on_message(&mut self, cx: &ShardCx<AppMsg>, msg: AppMsg) {
        match msg {
            AppMsg::Request { service, comp, req } => self.accept(cx, service, comp, req, false),
            AppMsg::Internal { service, payload } => {
                let mut payload = Some(payload);
                if let Some(svc) = self.services.get_mut(service) {
                    for c in &mut svc.components {
                        let Some(p) = payload.take() else { break };
                        payload = c.on_internal(&mut Ctx::new(cx, &mut self.enc), p);
                    }
                }
                if payload.is_some() {
                    tracing::warn!(service, "internal message taken by no component");
                }
            }
            AppMsg::SessionClosed(session) => {
                for svc in &mut self.services {
                    for c in &mut svc.components {
                        c.on_session_closed(&mut Ctx::new(cx, &mut self.enc), session);
                    }
                }
            }
        }
    }

    fn run_queued(&mut self, cx: &ShardCx<AppMsg>, _budget: usize) -> bool {
        let mut more = false;
        for svc in &mut self.services {
            for _ in 0..self.batch {
                let Some((ci, req)) = svc.queue.pop_front() else {
                    break;
                };
                svc.handle(ci, &mut Ctx::new(cx, &mut self.enc), req);
            }
            more |= !svc.queue.is_empty();
        }
        self.publish_depth(cx);
        more
    }

    fn on_close(&mut self, cx: &ShardCx<AppMsg>, session: SessionId, _reason: &CloseReason) {
        self.set_greeted(session, false);
        for shard in 0..cx.shards {
            cx.send(shard, AppMsg::SessionClosed(session));
        }
    }

    fn on_shutdown(&mut self, cx: &ShardCx<AppMsg>) {
        for svc in &mut self.services {
            svc.stop(&mut Ctx::new(cx, &mut self.enc));
        }
    }
}

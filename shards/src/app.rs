//! The application every shard runs: the gate in front of the service host.

use std::sync::Arc;

use lattice_runtime::{ShardApp, ShardCx};
use lattice_storage::StorageHandle;
use lattice_wire::compress::{BodyCompressor, CompressConfig};
use lattice_wire::http::Request;
use lattice_wire::{CloseReason, Frame, FrameHeader, Limited, RpcReply, SessionId};

use crate::center::ids::{IdGen, IdLease};
use crate::cluster::forward::Forwarder;
use crate::cluster::link::serve::LinkServe;
use crate::cluster::node::ClusterNode;
use crate::gate::{Checked, Gate};
use crate::host::{Parts, ServiceHost};
use crate::http::HttpRoutes;
use crate::metrics::AppMetrics;
use crate::service::calendar::CalendarDriver;
use crate::service::registry::BuildError;
use crate::service::timers::TimerTable;
use crate::service::{Encoder, ShardMsg};
use lattice_runtime::time::{Calendar, LastFired};

/// What every shard's application is built from.
#[derive(Clone)]
pub struct AppSettings {
    /// Merged config table (service and component sections are read from it).
    pub table: toml::Table,
    /// Body compression.
    pub compress: CompressConfig,
    /// Largest frame sent (`net.max_frame`).
    pub max_frame: u32,
    /// The storage engine, if any.
    pub storage: Option<StorageHandle>,
    /// Counters of every shard's application (index = shard).
    pub metrics: Arc<Vec<AppMetrics>>,
    /// The machine-id lease and the persisted last id timestamp (every id goes above it). Without
    /// one, `Ctx::next_id` always fails.
    pub ids: Option<(Arc<IdLease>, u64)>,
    /// The game calendar (`[calendar]`); without one components get no calendar events.
    pub calendar: Option<Calendar>,
    /// Persisted last-fired calendar times per shard (missing = a first start, nothing owed).
    pub calendar_last: Arc<Vec<LastFired>>,
    /// Lua scripts, when `lua.dir` is set.
    pub lua: Option<Arc<crate::lua::Scripts>>,
    /// `POST /rpc/...`: how long to wait for a handler's reply (`http.rpc_timeout_ms`).
    pub rpc_timeout: std::time::Duration,
    /// `http.ws_path`, for the demo page.
    pub ws_path: String,
    /// This node in a cluster (`[cluster]`): accepts node links; on a gate without the logic role,
    /// routes requests over them. `None`: links are refused like any unknown request.
    pub cluster: Option<Arc<ClusterNode>>,
}

/// One shard's application.
pub struct App {
    gate: Gate,
    host: ServiceHost,
    http: HttpRoutes,
    /// Node links accepted on this shard and their proxy sessions.
    links: LinkServe,
    /// On a gate without the logic role: routing to logic nodes.
    forward: Option<Forwarder>,
}

impl App {
    /// Builds every service for shard `shard` of `shards`.
    pub fn new(s: &AppSettings, shard: usize, shards: usize) -> Result<App, BuildError> {
        let ids = match &s.ids {
            Some((lease, floor)) => IdGen::new(lease.clone(), shard, *floor),
            None => IdGen::none(shard),
        };
        let calendar = match &s.calendar {
            Some(cal) => {
                let last = s.calendar_last.get(shard).copied().unwrap_or_default();
                match CalendarDriver::new(cal.clone(), last, std::time::SystemTime::now()) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        tracing::error!(shard, error = %e, "calendar unavailable on this shard");
                        None
                    }
                }
            }
            None => None,
        };
        let parts = Parts {
            enc: Encoder::new(BodyCompressor::new(s.compress), s.max_frame),
            timers: TimerTable::default(),
            storage: s.storage.clone(),
            metrics: s.metrics.clone(),
            shard,
            ids,
            calendar,
            id_metrics: crate::center::id_metrics(shard),
        };
        let mut host = ServiceHost::new(&s.table, shard, shards, parts)?;
        if let Some(scripts) = &s.lua {
            host.set_lua(crate::lua::LuaShard::new(scripts.clone(), shard));
        }
        let me = s.cluster.as_ref().map(|c| c.me.clone()).unwrap_or_default();
        Ok(App {
            gate: Gate::new(s.metrics.clone(), shard, host.requests()),
            host,
            http: HttpRoutes::new(s.rpc_timeout, &s.ws_path),
            links: LinkServe::new(
                me,
                s.cluster.as_ref().map_or(usize::MAX, |c| c.max_proxies()),
                s.cluster
                    .as_ref()
                    .map(|c| c.link_secret().to_owned())
                    .unwrap_or_default(),
            ),
            forward: s
                .cluster
                .as_ref()
                .filter(|c| c.routes_remotely())
                .map(|c| Forwarder::new(c.clone())),
        })
    }

    /// Sends what components queued for proxy sessions back over their links (the link session
    /// lives on the proxy's shard). Inlined: it runs after every frame and is almost always empty
    /// (the call itself cost 18 instructions per echo round trip).
    #[inline]
    fn drain_proxied(&mut self, cx: &ShardCx<ShardMsg>) {
        if !self.host.encoder().proxied.is_empty() {
            self.send_proxied(cx);
        }
    }

    #[inline(never)]
    fn send_proxied(&mut self, cx: &ShardCx<ShardMsg>) {
        let out = std::mem::take(&mut self.host.encoder().proxied);
        for (p, f) in out {
            if p.shard() == cx.id {
                self.links.deliver(cx, self.host.encoder(), p, f);
            } else {
                cx.send(p.shard(), ShardMsg::ProxyDeliver(p, f));
            }
        }
    }
}

/// Link messages (`LinkHello` … `LinkSessionClosed`) go to the link side, not to components.
fn is_link_opcode(op: u16) -> bool {
    (1001..=1005).contains(&op)
}

impl ShardApp for App {
    type Msg = ShardMsg;

    fn on_start(&mut self, cx: &ShardCx<ShardMsg>) {
        self.host.start(cx);
        if let Some(f) = &self.forward {
            f.arm(cx);
        }
        self.drain_proxied(cx);
    }

    fn on_frame(&mut self, cx: &ShardCx<ShardMsg>, session: SessionId, frame: Frame<'_>) {
        match self.gate.check(cx, self.host.encoder(), session, frame) {
            Checked::Request(info, msg) if is_link_opcode(info.opcode) => {
                if !self
                    .links
                    .frame(cx, &mut self.host, session, frame.header, &msg)
                {
                    self.host.request(cx, session, frame.header, info, msg)
                }
                AppMetrics::set(&self.host.m().link_proxies, self.links.proxies() as u64);
            }
            Checked::Request(info, msg) => match self.forward.as_mut() {
                Some(fw) => {
                    let route = self.host.route_of(info, &msg, session);
                    fw.request(
                        cx,
                        self.host.encoder(),
                        session,
                        frame.header,
                        info,
                        msg,
                        route,
                    )
                }
                None => self.host.request(cx, session, frame.header, info, msg),
            },
            // Components greet game clients (the icon manifest); a node link is not one: a push
            // before its `LinkWelcome` would break the link's handshake.
            Checked::Welcomed => {
                let link = cx
                    .inspect_session(session, |s| s.session_type().may_send_internal())
                    .unwrap_or(false);
                if !link {
                    self.host.session_ready(cx, session)
                }
            }
            Checked::Done => {}
        }
        self.drain_proxied(cx);
    }

    fn on_rate_limited(
        &mut self,
        cx: &ShardCx<ShardMsg>,
        session: SessionId,
        header: FrameHeader,
        which: Limited,
    ) {
        self.gate
            .rate_limited(cx, self.host.encoder(), session, header, which);
    }

    fn on_handover(&mut self, cx: &ShardCx<ShardMsg>, session: SessionId, msg: ShardMsg) {
        match msg {
            ShardMsg::Resume(req) => {
                crate::resume::resume_here(cx, self.host.encoder(), session, req)
            }
            _ => cx.close(
                session,
                CloseReason::App("unexpected socket handover".into()),
            ),
        }
    }

    fn on_http(&mut self, cx: &ShardCx<ShardMsg>, session: SessionId, req: Request) {
        self.http.request(cx, &mut self.host, session, req);
    }

    fn on_rpc_reply(&mut self, cx: &ShardCx<ShardMsg>, session: SessionId, reply: RpcReply) {
        self.http.reply(cx, self.host.encoder(), session, reply);
    }

    fn on_message(&mut self, cx: &ShardCx<ShardMsg>, msg: ShardMsg) {
        match msg {
            ShardMsg::ProxyDeliver(p, f) => self.links.deliver(cx, self.host.encoder(), p, f),
            ShardMsg::LinkReplaced(node, newer) => self.links.replaced(cx, &node, newer),
            ShardMsg::LinkInbound(batch) => match &self.forward {
                Some(fw) => fw.inbound(cx, batch),
                None => tracing::error!("link frames on a node that routes nothing; dropped"),
            },
            msg => self.host.message(cx, msg),
        }
        self.drain_proxied(cx);
    }

    fn run_queued(&mut self, cx: &ShardCx<ShardMsg>, budget: usize) -> bool {
        let more = self.host.run_queued(cx, budget);
        self.drain_proxied(cx);
        more
    }

    fn on_timer(&mut self, cx: &ShardCx<ShardMsg>, token: u64) {
        self.host.timer(cx, token);
        self.drain_proxied(cx);
    }

    fn on_close(&mut self, cx: &ShardCx<ShardMsg>, session: SessionId, reason: &CloseReason) {
        if *reason == CloseReason::HandedOver {
            // It only carried a socket to a resumed session: no component ever saw it.
            return;
        }
        self.links.closed(cx, session);
        AppMetrics::set(&self.host.m().link_proxies, self.links.proxies() as u64);
        if let Some(fw) = self.forward.as_mut() {
            fw.closed(session);
        }
        for shard in 0..cx.shards {
            cx.send(shard, ShardMsg::SessionClosed(session));
        }
    }

    /// Components stop once the drain is over, not when it starts: requests still being worked
    /// on when shutdown began (a password hash, a storage write) are answered first, and the ids
    /// they issue are in the last timestamp reported to the center.
    fn on_stopped(&mut self, cx: &ShardCx<ShardMsg>) {
        self.host.stop(cx);
        self.gate.flush_warnings();
    }

    /// Requests this gate sent to logic nodes and not yet answered keep the drain waiting.
    fn has_pending_work(&self, cx: &ShardCx<ShardMsg>) -> bool {
        self.forward
            .as_ref()
            .is_some_and(|f| f.awaiting_replies(cx.id))
    }
}

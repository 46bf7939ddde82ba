//! The application every shard runs: the gate in front of the service host.

use std::sync::Arc;

use lattice_runtime::{ShardApp, ShardCx};
use lattice_storage::StorageHandle;
use lattice_wire::compress::{BodyCompressor, CompressConfig};
use lattice_wire::http::Request;
use lattice_wire::{CloseReason, Frame, FrameHeader, Limited, RpcReply, SessionId};

use crate::center::ids::{IdGen, IdLease};
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
}

/// One shard's application.
pub struct App {
    gate: Gate,
    host: ServiceHost,
    http: HttpRoutes,
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
        Ok(App {
            gate: Gate::new(s.metrics.clone(), shard),
            host,
            http: HttpRoutes::new(s.rpc_timeout),
        })
    }
}

impl ShardApp for App {
    type Msg = ShardMsg;

    fn on_start(&mut self, cx: &ShardCx<ShardMsg>) {
        self.host.start(cx);
    }

    fn on_frame(&mut self, cx: &ShardCx<ShardMsg>, session: SessionId, frame: Frame<'_>) {
        match self.gate.check(cx, self.host.encoder(), session, frame) {
            Checked::Request(info, msg) => self.host.request(cx, session, frame.header, info, msg),
            Checked::Welcomed => self.host.session_ready(cx, session),
            Checked::Done => {}
        }
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
        self.host.message(cx, msg);
    }

    fn run_queued(&mut self, cx: &ShardCx<ShardMsg>, budget: usize) -> bool {
        self.host.run_queued(cx, budget)
    }

    fn on_timer(&mut self, cx: &ShardCx<ShardMsg>, token: u64) {
        self.host.timer(cx, token);
    }

    fn on_close(&mut self, cx: &ShardCx<ShardMsg>, session: SessionId, reason: &CloseReason) {
        if *reason == CloseReason::HandedOver {
            // It only carried a socket to a resumed session: no component ever saw it.
            return;
        }
        for shard in 0..cx.shards {
            cx.send(shard, ShardMsg::SessionClosed(session));
        }
    }

    fn on_shutdown(&mut self, cx: &ShardCx<ShardMsg>) {
        self.host.stop(cx);
    }
}

//! The application every shard runs: the gate in front of the service host.

use std::sync::Arc;

use lattice_runtime::{ShardApp, ShardCx};
use lattice_storage::StorageHandle;
use lattice_wire::compress::{BodyCompressor, CompressConfig};
use lattice_wire::http::Request;
use lattice_wire::{CloseReason, Frame, FrameHeader, Limited, RpcReply, SessionId};

use crate::gate::{Checked, Gate};
use crate::host::{Parts, ServiceHost};
use crate::http::HttpRoutes;
use crate::metrics::AppMetrics;
use crate::service::registry::BuildError;
use crate::service::timers::TimerTable;
use crate::service::{Encoder, ShardMsg};

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
        let parts = Parts {
            enc: Encoder::new(BodyCompressor::new(s.compress), s.max_frame),
            timers: TimerTable::default(),
            storage: s.storage.clone(),
            metrics: s.metrics.clone(),
            shard,
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
        if let Checked::Request(info, msg) =
            self.gate.check(cx, self.host.encoder(), session, frame)
        {
            self.host.request(cx, session, frame.header, info, msg);
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

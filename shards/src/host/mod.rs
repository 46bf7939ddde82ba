//! The service host: the services of one shard, the table from message to component, the bounded
//! inbound queues, and every call into a component (handlers, lifecycle, timers, continuations,
//! internal messages, session-closed notices).
//!
//! A request the gate let through is routed by its component ([`crate::service::Component::route`])
//! to a shard: handled at once when it stays here and nothing waits before it, queued when
//! something does (`BUSY` past the service's `queue_limit`), or sent across the mesh as a
//! refusable message (`BUSY` past `runtime.mesh_backlog_limit`). Queued work runs in
//! [`ServiceHost::run_queued`] within the loop's budget.

#[cfg(test)]
mod calendar_tests;
pub mod opcode_metrics;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::Arc;

use lattice_proto::{error_code, pb, AnyMessage, OpcodeInfo};
use lattice_runtime::ShardCx;
use lattice_storage::StorageHandle;
use lattice_wire::{FrameHeader, SessionId};

use crate::center::ids::IdGen;
use crate::lua::host::ScriptError;
use crate::metrics::AppMetrics;
use crate::service::calendar::CalendarDriver;
use crate::service::registry::{build_service, services, BuildError, ServiceInstance};
use crate::service::timers::TimerTable;
use crate::service::{Ctx, Encoder, Req, ShardMsg};

/// The timer table's service index of the calendar's own timer (no service has it).
const CALENDAR_TIMER: u16 = u16::MAX;

/// What a [`Ctx`] is built from, apart from the services themselves.
pub(crate) struct Parts {
    pub enc: Encoder,
    pub timers: TimerTable,
    pub storage: Option<StorageHandle>,
    pub metrics: Arc<Vec<AppMetrics>>,
    pub shard: usize,
    pub ids: IdGen,
    pub calendar: Option<CalendarDriver>,
    /// This shard's id counters (`center::id_metrics(shard)`), looked up once here rather than
    /// for every `Ctx` (one per request).
    pub id_metrics: &'static crate::center::IdMetrics,
}

impl Parts {
    fn ctx<'a>(&'a mut self, cx: &'a ShardCx<ShardMsg>, me: Option<(u16, u16)>) -> Ctx<'a> {
        Ctx {
            cx,
            enc: &mut self.enc,
            timers: &mut self.timers,
            storage: self.storage.as_ref(),
            metrics: &self.metrics[self.shard],
            ids: &mut self.ids,
            id_metrics: self.id_metrics,
            calendar: self.calendar.as_ref().map(|c| c.calendar()),
            me,
        }
    }
}

/// The services of one shard.
pub struct ServiceHost {
    services: Vec<ServiceInstance>,
    /// Indexed by [`OpcodeInfo::index`]: the (service, component) that handles the message.
    routes: Vec<Option<(u16, u16)>>,
    pub(crate) parts: Parts,
    /// The calendar's pending timer (its next boundary).
    pub(crate) calendar_timer: Option<crate::service::TimerId>,
    /// This shard's Lua scripts, if any: they take a request before the components.
    lua: Option<crate::lua::LuaShard>,
    /// Script failures a client can cause once per request: logged at most `log.warn_burst` per
    /// window (they are counted in `lattice_lua_errors_total` and `lattice_reply_too_large_total`).
    warns: lattice_runtime::telemetry::warn_limit::WarnLimiter,
    /// Session closes that wait for the requests queued before them (each service's
    /// `queued_total` when the close came): a `JoinRoom` queued here and then its session's close
    /// must take effect in that order, or the session would stay in the room. Bounded by the
    /// sessions that close while requests wait; emptied as the queues drain.
    closes: VecDeque<(SessionId, Vec<u64>)>,
}

impl ServiceHost {
    /// Builds every declared service for shard `shard` of `shards` from the merged config.
    pub(crate) fn new(
        table: &toml::Table,
        shard: usize,
        shards: usize,
        parts: Parts,
    ) -> Result<ServiceHost, BuildError> {
        let services = services()
            .into_iter()
            .map(|d| build_service(d, table, shard, shards))
            .collect::<Result<Vec<_>, _>>()?;
        ServiceHost::with_services(services, parts)
    }

    /// A host over built services; fails when two components handle the same message.
    pub(crate) fn with_services(
        services: Vec<ServiceInstance>,
        parts: Parts,
    ) -> Result<ServiceHost, BuildError> {
        let mut routes: Vec<Option<(u16, u16)>> = vec![None; lattice_proto::COUNT];
        for (si, svc) in services.iter().enumerate() {
            for (ci, comp) in svc.components.iter().enumerate() {
                for op in comp.opcodes() {
                    let info =
                        lattice_proto::info(op).expect("LatticeMessage opcodes are registered");
                    let slot = &mut routes[info.index as usize];
                    if let Some((psi, pci)) = *slot {
                        return Err(BuildError::DuplicateOpcode {
                            opcode: op,
                            first: services[psi as usize].components[pci as usize].name(),
                            second: comp.name(),
                        });
                    }
                    *slot = Some((si as u16, ci as u16));
                }
            }
        }
        Ok(ServiceHost {
            services,
            routes,
            parts,
            calendar_timer: None,
            lua: None,
            warns: lattice_runtime::telemetry::warn_limit::WarnLimiter::from_defaults(),
            closes: VecDeque::new(),
        })
    }

    /// Gives this shard's scripts to the host.
    pub(crate) fn set_lua(&mut self, lua: crate::lua::LuaShard) {
        self.lua = Some(lua);
    }

    /// This shard's scripts (the calendar wiring calls [`crate::lua::LuaShard::calendar`]).
    pub fn lua(&mut self) -> Option<&mut crate::lua::LuaShard> {
        self.lua.as_mut()
    }

    /// A script handles the request: reply with what it returns, or `INTERNAL` when it fails or
    /// returns nothing to a request with a request id. Returns false when no script handles this
    /// opcode.
    fn scripted(
        &mut self,
        cx: &ShardCx<ShardMsg>,
        session: SessionId,
        h: FrameHeader,
        msg: &AnyMessage,
    ) -> bool {
        let Some(lua) = self.lua.as_mut() else {
            return false;
        };
        // Scripts take requests only: a handler for a message no component takes as one (a
        // server-to-client message such as `Pong`) is never called, and the client gets the
        // usual `NOT_ALLOWED` "not a request message".
        if lattice_proto::info(h.opcode).is_none_or(|i| self.routes[i.index as usize].is_none()) {
            return false;
        }
        let Some(host) = lua.handler_for(h.opcode) else {
            return false;
        };
        let t0 = opcode_metrics::now();
        let mut r = host.handle(msg, session.as_u64());
        if h.request_id != 0 && matches!(r, Ok(None)) {
            // Its client waits on the request id: an answer it can settle, and a failure counted.
            r = Err(ScriptError::NoReply);
        }
        lua.count(&r);
        let mut ctx = self.parts.ctx(cx, None);
        match r {
            Ok(Some(mut reply)) => {
                // An `Error` names the request's opcode (PROTOCOL.md): filled in when the script
                // leaves it 0.
                if let AnyMessage::Error(e) = &mut reply {
                    if e.opcode == 0 {
                        e.opcode = u32::from(h.opcode);
                    }
                }
                if !ctx.enc.send_any(cx, session, h.request_id, &reply) {
                    AppMetrics::add(&ctx.metrics.reply_too_large_total, 1);
                    let now = ctx.now_ms();
                    self.warns.warn("lua_reply_too_large", now, || {
                        tracing::error!(%session, opcode = h.opcode, "lua: script reply larger than net.max_frame - 8 bytes (the 8 a sequenced session's extension takes); answered INTERNAL instead");
                    });
                    // As a component's reply too large: the session gets the error under the
                    // request's id (0 included, as for a push).
                    let e = pb::Error {
                        code: error_code::INTERNAL,
                        message: "reply too large".into(),
                        opcode: 0,
                    };
                    ctx.enc.send(cx, session, h.request_id, &e);
                }
            }
            Ok(None) => {}
            Err(e) => {
                let now = ctx.now_ms();
                self.warns.warn("lua_script_failed", now, || {
                    // Escaped as `lattice.log` text is: a script's error() often carries the
                    // client's own text, whose line breaks would forge log lines (the traceback's
                    // lines stay on this one too).
                    let error = crate::lua::host::log_text(&e.to_string());
                    tracing::warn!(%session, opcode = h.opcode, %error, "lua: script failed; answered INTERNAL");
                });
                let text = match e {
                    ScriptError::NoReply => "script returned no reply",
                    _ => "script error",
                };
                ctx.error(session, h.request_id, h.opcode, error_code::INTERNAL, text);
            }
        }
        opcode_metrics::record(cx.id, h.opcode, t0);
        true
    }

    /// The encoder (the gate answers with it too).
    pub(crate) fn encoder(&mut self) -> &mut Encoder {
        &mut self.parts.enc
    }

    /// This shard's application counters.
    pub(crate) fn m(&self) -> &AppMetrics {
        &self.parts.metrics[self.parts.shard]
    }

    /// True when a component takes `info`'s message as a request (scripts take only those). Every
    /// other message a client may send is server-to-client: answered `NOT_ALLOWED` "not a request
    /// message" whatever its body.
    pub fn takes(&self, info: &OpcodeInfo) -> bool {
        self.routes[info.index as usize].is_some()
    }

    /// Which messages components take as requests, by [`OpcodeInfo::index`] (for the gate).
    pub fn requests(&self) -> Vec<bool> {
        self.routes.iter().map(Option::is_some).collect()
    }

    /// Where the component that handles `msg` would route it (`None`: no component handles it,
    /// or a script does). A gate node routes by it to a logic node (`cluster::forward`).
    pub fn route_of(
        &mut self,
        info: &OpcodeInfo,
        msg: &AnyMessage,
        session: SessionId,
    ) -> Option<crate::service::Route> {
        if let Some(lua) = self.lua.as_mut() {
            if lua.handler_for(info.opcode).is_some() {
                return None;
            }
        }
        let (si, ci) = self.routes[info.index as usize]?;
        Some(self.services[si as usize].components[ci as usize].route(msg, session))
    }

    /// Routes a request the gate let through.
    pub fn request(
        &mut self,
        cx: &ShardCx<ShardMsg>,
        session: SessionId,
        h: FrameHeader,
        info: &OpcodeInfo,
        msg: AnyMessage,
    ) {
        if self.scripted(cx, session, h, &msg) {
            return;
        }
        let Some((si, ci)) = self.routes[info.index as usize] else {
            self.parts.ctx(cx, None).error(
                session,
                h.request_id,
                h.opcode,
                error_code::NOT_ALLOWED,
                "not a request message",
            );
            return;
        };
        let dst = self.services[si as usize].components[ci as usize]
            .route(&msg, session)
            .shard(cx.id, cx.shards);
        let req = Req {
            session,
            request_id: h.request_id,
            opcode: h.opcode,
            msg,
        };
        if dst == cx.id {
            // `accept`'s first case, here: the common request (nothing queued) goes straight to
            // its handler without one more call frame and copy of the request.
            let svc = &mut self.services[si as usize];
            if svc.queue.is_empty() {
                svc.handle(ci, &mut self.parts.ctx(cx, Some((si, ci))), req);
            } else {
                self.accept(cx, si, ci, req, true);
            }
            return;
        }
        if let Err(ShardMsg::Request { req, .. }) = cx.try_send(
            dst,
            ShardMsg::Request {
                service: si,
                comp: ci,
                req,
            },
        ) {
            self.busy(cx, req, "mesh backlog full, retry later");
        }
    }

    /// Handles (`inline` and nothing queued) or queues a request on this shard.
    fn accept(
        &mut self,
        cx: &ShardCx<ShardMsg>,
        si: u16,
        ci: u16,
        req: Req<AnyMessage>,
        inline: bool,
    ) {
        let svc = &mut self.services[si as usize];
        if inline && svc.queue.is_empty() {
            svc.handle(ci, &mut self.parts.ctx(cx, Some((si, ci))), req);
            return;
        }
        if self.enqueue(cx, si, ci, req) {
            self.publish_depth();
            cx.notify();
        }
    }

    /// Puts `req` at the back of its service's queue, or answers it `BUSY` (counted) when the
    /// queue holds `queue_limit` requests. Returns whether it was queued.
    fn enqueue(&mut self, cx: &ShardCx<ShardMsg>, si: u16, ci: u16, req: Req<AnyMessage>) -> bool {
        let svc = &mut self.services[si as usize];
        if svc.queue.len() >= svc.config.queue_limit {
            self.busy(cx, req, "service busy, retry later");
            return false;
        }
        svc.queue.push_back((ci, req));
        svc.queued_total += 1;
        debug_assert!(svc.queue.len() <= svc.config.queue_limit);
        true
    }

    fn busy(&mut self, cx: &ShardCx<ShardMsg>, req: Req<AnyMessage>, why: &str) {
        AppMetrics::add(&self.m().dropped_busy_total, 1);
        self.parts.ctx(cx, None).error(
            req.session,
            req.request_id,
            req.opcode,
            error_code::BUSY,
            why,
        );
    }

    fn publish_depth(&self) {
        let depth: usize = self.services.iter().map(|s| s.queue.len()).sum();
        AppMetrics::set(&self.m().service_queue_depth, depth as u64);
    }

    /// Runs queued requests, at most `budget` in all and each service's `batch`. Returns true
    /// when some remain.
    pub fn run_queued(&mut self, cx: &ShardCx<ShardMsg>, budget: usize) -> bool {
        let mut left = budget;
        let mut more = false;
        for (si, svc) in self.services.iter_mut().enumerate() {
            let n = svc.config.batch.max(1).min(left);
            for _ in 0..n {
                let Some((ci, req)) = svc.queue.pop_front() else {
                    break;
                };
                left -= 1;
                svc.handle(ci, &mut self.parts.ctx(cx, Some((si as u16, ci))), req);
            }
            more |= !svc.queue.is_empty();
        }
        self.publish_depth();
        self.run_closes(cx);
        more
    }

    /// A session closed: components hear it once every request queued on this shard before the
    /// close was handled (at once when nothing waits).
    fn session_closed(&mut self, cx: &ShardCx<ShardMsg>, session: SessionId) {
        if self.closes.is_empty() && self.services.iter().all(|s| s.queue.is_empty()) {
            self.each(cx, |c, ctx| c.on_session_closed(ctx, session));
            return;
        }
        let marks = self.services.iter().map(|s| s.queued_total).collect();
        self.closes.push_back((session, marks));
    }

    /// Delivers the waiting closes whose requests ahead of them were all handled, in order.
    fn run_closes(&mut self, cx: &ShardCx<ShardMsg>) {
        while let Some((session, marks)) = self.closes.front() {
            let ahead_done = self
                .services
                .iter()
                .zip(marks)
                .all(|(s, m)| s.queued_total - s.queue.len() as u64 >= *m);
            if !ahead_done {
                return;
            }
            let session = *session;
            self.closes.pop_front();
            self.each(cx, |c, ctx| c.on_session_closed(ctx, session));
        }
    }

    /// Queues a request that came over the mesh behind the service's queue (`BUSY` past
    /// `queue_limit`, as [`ServiceHost::accept`]). During a loop pass the shard runs
    /// [`ServiceHost::run_queued`] later in the same pass, which publishes the queue-depth gauge
    /// once for all the requests the pass took, so neither the gauge (a sum over the services)
    /// nor a notify is paid per request; outside a pass (a test driving the host) it is
    /// [`ServiceHost::accept`].
    fn queue_remote(&mut self, cx: &ShardCx<ShardMsg>, si: u16, ci: u16, req: Req<AnyMessage>) {
        if !cx.in_pass() {
            self.accept(cx, si, ci, req, false);
            return;
        }
        self.enqueue(cx, si, ci, req);
    }

    /// A message from a shard (this one included).
    pub fn message(&mut self, cx: &ShardCx<ShardMsg>, msg: ShardMsg) {
        match msg {
            ShardMsg::Request { service, comp, req } => self.queue_remote(cx, service, comp, req),
            ShardMsg::Internal { service, payload } => {
                let mut payload = Some(payload);
                if let Some(svc) = self.services.get_mut(service as usize) {
                    for (ci, c) in svc.components.iter_mut().enumerate() {
                        let Some(p) = payload.take() else { break };
                        payload =
                            c.on_internal(&mut self.parts.ctx(cx, Some((service, ci as u16))), p);
                    }
                }
                if payload.is_some() {
                    tracing::warn!(service, "internal message taken by no component");
                }
            }
            ShardMsg::Resume(req) => {
                tracing::error!(session = %req.target, "Resume request outside a socket handover; dropped")
            }
            ShardMsg::ProxyDeliver(..) | ShardMsg::LinkInbound(..) | ShardMsg::LinkReplaced(..) => {
                tracing::error!("node-link message on a node without links; dropped")
            }
            ShardMsg::SessionClosed(session) => self.session_closed(cx, session),
            ShardMsg::Continue { service, comp, f } => {
                let Some(c) = self
                    .services
                    .get_mut(service as usize)
                    .and_then(|s| s.components.get_mut(comp as usize))
                else {
                    return;
                };
                let mut ctx = self.parts.ctx(cx, Some((service, comp)));
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    f(c.as_any_mut(), &mut ctx)
                }));
                if let Err(p) = r {
                    AppMetrics::add(&ctx.metrics.handler_panics_total, 1);
                    tracing::error!(component = c.name(), panic = %lattice_runtime::shard::panic_message(&*p), "continuation panicked");
                }
            }
        }
    }

    /// A component timer fired.
    pub fn timer(&mut self, cx: &ShardCx<ShardMsg>, token: u64) {
        let Some(f) = self.parts.timers.fired(token) else {
            return;
        };
        AppMetrics::set(&self.m().timers_app_pending, self.parts.timers.len() as u64);
        if f.service == CALENDAR_TIMER {
            self.calendar_tick(cx);
            return;
        }
        if let Some(c) = self
            .services
            .get_mut(f.service as usize)
            .and_then(|s| s.components.get_mut(f.comp as usize))
        {
            c.on_timer(&mut self.parts.ctx(cx, Some((f.service, f.comp))), f.token);
        }
    }

    /// Runs each component's `init`, then each `start`, service by service, in order; then the
    /// calendar's catch-up (events missed while the server was down) and its first timer.
    pub fn start(&mut self, cx: &ShardCx<ShardMsg>) {
        for si in 0..self.services.len() {
            for phase in ["init", "start"] {
                let svc = &mut self.services[si];
                for (ci, c) in svc.components.iter_mut().enumerate() {
                    tracing::debug!(service = svc.decl.name, component = c.name(), phase);
                    let mut ctx = self.parts.ctx(cx, Some((si as u16, ci as u16)));
                    if phase == "init" {
                        c.init(&mut ctx);
                    } else {
                        c.start(&mut ctx);
                    }
                }
            }
        }
        self.calendar_tick(cx);
    }

    /// Delivers the calendar boundaries passed since the last poll to every component, persists
    /// what fired, and sets the timer for the next boundary.
    pub(crate) fn calendar_tick(&mut self, cx: &ShardCx<ShardMsg>) {
        let Some(cal) = self.parts.calendar.as_mut() else {
            return;
        };
        let now = cx.wall_now();
        let crossed = match cal.poll(now) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(shard = cx.id, error = %e, "calendar poll failed");
                Vec::new()
            }
        };
        let delay = cal.delay_to_next(now);
        let row = crate::service::calendar::to_row(cal.last_fired());
        for c in &crossed {
            tracing::info!(shard = cx.id, boundary = %c.boundary, count = c.count, "calendar event");
            let c = *c;
            self.each(cx, |comp, ctx| comp.on_calendar(ctx, &c));
            // Then the scripts' hook of this boundary (`lattice.on_calendar("day", f)`), once per
            // event as components get it; a failing hook is counted and logged, the shard goes on.
            if let Some(lua) = self.lua.as_mut() {
                if let Err(e) = lua.calendar(&c.boundary.to_string()) {
                    tracing::warn!(shard = cx.id, boundary = %c.boundary, error = %e, "lua: calendar hook failed");
                }
            }
        }
        if !crossed.is_empty() {
            if let Some(st) = &self.parts.storage {
                let mark = st
                    .table(crate::service::calendar::TABLE)
                    .ok_or(lattice_storage::StorageError::Closed)
                    .and_then(|t| {
                        st.insert(t, vec![lattice_storage::Value::Int(cx.id as i64)], row)
                    });
                if let Err(e) = mark {
                    tracing::error!(shard = cx.id, error = %e, "calendar: cannot persist last-fired times; these events may fire again after a restart");
                }
            }
        }
        if let Some(old) = self.calendar_timer.take() {
            self.parts.timers.cancel(cx, old);
        }
        match delay {
            Ok(d) => match self.parts.timers.set(cx, d, false, CALENDAR_TIMER, 0, 0) {
                Ok(id) => self.calendar_timer = Some(id),
                Err(e) => {
                    tracing::error!(shard = cx.id, error = %e, "calendar: cannot set the next timer; calendar events stop");
                }
            },
            Err(e) => tracing::error!(shard = cx.id, error = %e, "calendar: no next boundary"),
        }
    }

    /// A session of this shard completed its handshake: every component hears it.
    pub fn session_ready(&mut self, cx: &ShardCx<ShardMsg>, session: SessionId) {
        self.each(cx, |c, ctx| c.on_session_ready(ctx, session));
    }

    /// Runs each component's `stop`, in reverse order of `start`; then reports the shard's last id
    /// timestamp to the center (which records it when it releases the lease).
    pub fn stop(&mut self, cx: &ShardCx<ShardMsg>) {
        for si in (0..self.services.len()).rev() {
            let svc = &mut self.services[si];
            for (ci, c) in svc.components.iter_mut().enumerate().rev() {
                tracing::debug!(service = svc.decl.name, component = c.name(), "stop");
                c.stop(&mut self.parts.ctx(cx, Some((si as u16, ci as u16))));
            }
        }
        self.parts.ids.report_stop(self.parts.shard);
        // The script failures a window still held back are summarised before the shard ends.
        self.warns.flush();
    }

    fn each(
        &mut self,
        cx: &ShardCx<ShardMsg>,
        mut f: impl FnMut(&mut dyn crate::service::registry::ErasedComponent, &mut Ctx<'_>),
    ) {
        for (si, svc) in self.services.iter_mut().enumerate() {
            for (ci, c) in svc.components.iter_mut().enumerate() {
                f(
                    c.as_mut(),
                    &mut self.parts.ctx(cx, Some((si as u16, ci as u16))),
                );
            }
        }
    }
}

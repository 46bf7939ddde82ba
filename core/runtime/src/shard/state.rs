//! A shard's state shared by its loop and its connection tasks (same thread), and how sessions
//! enter, run and leave it.

use std::cell::RefCell;
use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lattice_wire::{
    Binding, CloseReason, Input, Limited, MonoTime, SessionId, SessionType, SocketEnd, StackConfig,
};
use monoio::net::tcp::stream_poll::TcpStreamPoll;

use super::app::ShardApp;
use super::close_log::{self, CloseLog};
use super::cx::{Envelope, ShardCx, TimerItem, TICK};
use crate::mesh::ring::Consumer;
use crate::net::conn::{self, ConnHost, Ended};
use crate::net::table::Handover;
use crate::net::tls::ShardTls;
use crate::net::SessionCell;
use crate::telemetry::gateway::GatewayMetrics;
use crate::telemetry::metrics::ShardMetrics;
use crate::telemetry::warn_limit::{Summary, Verdict, WarnLimiter};

/// Longest a parked shard sleeps before its next loop pass, even with nothing to do.
pub const IDLE_PASS_MAX: Duration = Duration::from_millis(500);

/// One listener's accept ring on a shard: sockets its acceptor handed to this shard, what its
/// sessions speak, and whether they run over TLS.
pub(crate) struct AcceptIn {
    pub stack: Arc<StackConfig>,
    pub ring: Consumer<TcpStream>,
    pub tls: bool,
}

/// The shard's state: its context, its application and what its loop drains.
pub(crate) struct ShardState<A: ShardApp> {
    pub cx: ShardCx<A::Msg>,
    pub app: RefCell<A>,
    pub read_buf: RefCell<Box<[u8]>>,
    /// Plaintext decrypted from one read of a TLS session; frames and requests are taken from it,
    /// so they borrow the shard, never the session. Grows to what one read yields (at most
    /// `net.read_buffer` plus one incomplete TLS record, ≈ 18 KiB) and stays.
    pub tls_plain: RefCell<Vec<u8>>,
    pub ins: Vec<Option<Consumer<Envelope<A::Msg>>>>,
    /// One ring per listener.
    pub accept_in: Vec<AcceptIn>,
    /// What TLS sessions of this shard need (every TLS listener shares one certificate source).
    pub tls: Option<ShardTls>,
    pub quiet: Arc<Vec<AtomicBool>>,
    pub mesh_batch: usize,
    pub queued_budget: usize,
    pub drain_timeout: Duration,
    /// Rate limit of protocol-violation warnings on this shard.
    pub warns: RefCell<WarnLimiter>,
}

impl<A: ShardApp> ShardState<A> {
    /// Fires due timers (bounded per pass). Returns true if any fired.
    pub fn run_timers(&self) -> bool {
        let now = self.cx.clock.borrow_mut().refresh();
        let mut fired = Vec::new();
        let outcome = self
            .cx
            .wheel
            .borrow_mut()
            .advance(TICK.tick_of(now), |e| fired.push(e.item));
        let m = self.cx.m();
        if outcome.budget_hit {
            ShardMetrics::add(&m.timers_deferred_total, 1);
        }
        ShardMetrics::add(&m.timers_fired_total, fired.len() as u64);
        for item in &fired {
            match *item {
                TimerItem::Session(id) => self.session_deadline(id, now),
                TimerItem::App(token) => {
                    guarded(self, "on_timer", |app| app.on_timer(&self.cx, token));
                }
            }
        }
        let stats = self.cx.wheel.borrow().stats();
        ShardMetrics::set(&m.timers_pending, stats.pending);
        ShardMetrics::set(&m.timers_dead_records, stats.dead_records);
        ShardMetrics::set(&m.timers_compacted_total, stats.compacted);
        ShardMetrics::set(
            &m.clock_backwards_total,
            self.cx.clock.borrow().stats().backwards_clamped,
        );
        self.warns
            .borrow_mut()
            .poll(now.as_nanos() / 1_000_000, |s| {
                log_suppressed(self.cx.id, s)
            });
        !fired.is_empty()
    }

    /// Logs the summaries of every window with suppressed warnings, ended or not: at the stop,
    /// the window would otherwise never end and its closes would be in no log line.
    pub(crate) fn flush_suppressed(&self) {
        self.warns
            .borrow_mut()
            .poll(u64::MAX, |s| log_suppressed(self.cx.id, s));
    }

    fn session_deadline(&self, id: SessionId, now: MonoTime) {
        let Some(cell) = self.cx.sessions.borrow().get(id).cloned() else {
            return;
        };
        cell.timer.set(None);
        let (was_attached, closing, attached, output) = {
            let mut s = cell.session.borrow_mut();
            let was_attached = s.is_attached();
            let before = s.unsent();
            let http = s.transport() == lattice_wire::Transport::Http;
            // A deadline during the lingering close of a refused request is not a second one.
            let ending = s.close_reason().or(s.closing_after_flush()).is_some();
            s.handle_timeout(now);
            if let Some(tls) = &self.tls {
                tls.count(&s.take_tls_events());
            }
            let why = s.close_reason().or(s.closing_after_flush());
            if http && !ending && matches!(why, Some(CloseReason::Protocol(_))) {
                // The head deadline passed (answered 408).
                GatewayMetrics::add(
                    &self.cx.metrics.gateway[self.cx.id].http_bad_requests_total,
                    1,
                );
            }
            (
                was_attached,
                s.is_closing(),
                s.is_attached(),
                s.unsent() != before,
            )
        };
        if closing {
            if attached {
                cell.wake();
            } else {
                self.closed(&cell, None);
            }
            return;
        }
        if was_attached && !attached {
            // Idle: the socket is dropped (its task finds itself stale), the session waits.
            self.detached(&cell, &CloseReason::IdleTimeout);
            cell.wake();
        } else if output {
            // A deadline may queue output on an idle connection (an `Ack`, a WebSocket ping, an
            // HTTP 408 or 504): wake the task so it is written now, not after the next input.
            cell.wake();
        }
        self.cx.arm_session_timer(&cell);
    }

    /// On HTTP and WebSocket sessions, input and the application can bring the session's
    /// deadline forward (an upgrade starts pings, a request starts a head or reply deadline),
    /// and on a resumable session an acknowledgement may now be due before the idle deadline:
    /// move its timer. (A plain binary session's deadline only moves later with input; its timer
    /// fires and re-arms.)
    fn rearm(&self, cell: &Rc<SessionCell>) {
        let plain_binary = {
            let s = cell.session.borrow();
            s.is_closing()
                || (s.transport() == lattice_wire::Transport::Binary && !s.is_resumable())
        };
        if !plain_binary {
            self.cx.arm_session_timer(cell);
        }
    }

    /// A resumable session lost its socket: count, log, arm the resume window.
    fn detached(&self, cell: &Rc<SessionCell>, why: &CloseReason) {
        let cx = &self.cx;
        ShardMetrics::add(&cx.cm().sessions_detached_total, 1);
        if *why == CloseReason::SendBufferOverflow {
            ShardMetrics::add(&cx.cm().send_overflow_detached_total, 1);
        }
        cx.detached_changed(1);
        tracing::info!(session = %cell.id(), peer = %cell.peer(), reason = %why, window_ms = cx.continuity.session.resume_window_ms, "session detached; resumable");
        cx.arm_session_timer(cell);
    }

    /// Removes sessions that closed while detached (no socket task will end them).
    pub fn reap(&self) -> bool {
        let cells = self.cx.take_reap();
        let any = !cells.is_empty();
        for cell in cells {
            self.closed(&cell, None);
        }
        any
    }

    /// Removes `cell`'s session (once), counts and logs why it closed, and tells the application.
    /// `reason` overrides the session's own close reason (a socket end seen by the task).
    pub(crate) fn closed(&self, cell: &Rc<SessionCell>, reason: Option<CloseReason>) {
        let cx = &self.cx;
        let id = cell.id();
        if !cx.sessions.borrow_mut().remove(id) {
            return;
        }
        if let Some(tls) = &self.tls {
            let mut s = cell.session.borrow_mut();
            if s.is_tls() {
                tls.count(&s.take_tls_events());
                tls.closed();
            }
        }
        let (reason, was_detached) = {
            let s = cell.session.borrow();
            let reason = reason
                .or_else(|| s.close_reason().cloned())
                .unwrap_or(CloseReason::PeerClosed);
            (reason, !s.is_attached())
        };
        if was_detached {
            cx.detached_changed(-1);
        }
        if let Some(h) = cell.timer.take() {
            cx.wheel.borrow_mut().cancel(h);
        }
        cx.open_counter().fetch_sub(1, Ordering::Relaxed);
        let m = cx.m();
        ShardMetrics::set(&m.sessions_open, cx.session_count() as u64);
        ShardMetrics::add(self.close_counter(&reason), 1);
        match close_log::classify(&reason) {
            CloseLog::Quiet => {
                tracing::debug!(session = %id, peer = %cell.peer(), %reason, "session closed")
            }
            CloseLog::Ordinary => {
                tracing::info!(session = %id, peer = %cell.peer(), %reason, "session closed")
            }
            // Protocol violations (every layer: frames, HTTP, WebSocket, TLS), rate-limit closes
            // and overflows stay at warn, rate-limited per reason.
            CloseLog::Violation(key) => {
                let now_ms = cx.clock.borrow().now().as_nanos() / 1_000_000;
                let (verdict, summary) = self.warns.borrow_mut().check(key, now_ms);
                if let Some(s) = summary {
                    log_suppressed(cx.id, s);
                }
                if verdict == Verdict::Log {
                    tracing::warn!(session = %id, peer = %cell.peer(), %reason, "session closed");
                } else {
                    tracing::debug!(session = %id, peer = %cell.peer(), %reason, "session closed");
                }
            }
        }
        guarded(self, "on_close", |app| app.on_close(cx, id, &reason));
    }

    /// The socket of `cell` ended before it could be handed over (its session closed first): the
    /// session it was to serve, already rebound to it, must not wait for a socket that will not
    /// come — it detaches (and waits for another resume); a message for another shard is dropped.
    fn abandon_handover(&self, cell: &Rc<SessionCell>, now: MonoTime) {
        match cell.take_handover() {
            Some(Handover::Local(target, binding)) => {
                let end = target.session.borrow_mut().socket_failed(
                    binding,
                    now,
                    "the resuming socket closed before it was handed over".into(),
                );
                match end {
                    SocketEnd::Detached => {
                        self.detached(&target, &CloseReason::Io("handover aborted".into()))
                    }
                    // Closing with no socket task to end it.
                    SocketEnd::Closed(_) => self.cx.reap_later(target),
                    SocketEnd::Stale => {}
                }
            }
            Some(Handover::Remote) => {
                let _ = self.cx.take_handover(cell.id());
            }
            None => {}
        }
    }

    /// Hands the socket of `cell` (which carried a `Resume`) to where its handover says.
    fn hand_over_socket(self: &Rc<Self>, cell: &Rc<SessionCell>, stream: TcpStreamPoll) {
        let cx = &self.cx;
        let leftover = cell.take_pending_input();
        match cell.take_handover() {
            Some(Handover::Local(target, binding)) => {
                let live = target.session.borrow().is_current(binding);
                if live {
                    target.set_peer(cell.peer());
                    target.set_pending_input(leftover);
                    conn::spawn(self, target, binding, stream);
                } else {
                    // A newer socket won meanwhile (or the session closed): this one is stale.
                    ShardMetrics::add(&cx.cm().stale_sockets_total, 1);
                }
            }
            Some(Handover::Remote) => match cx.take_handover(cell.id()) {
                Some((dst, msg)) => match conn::into_std(stream) {
                    Ok(stream) => {
                        ShardMetrics::add(&cx.cm().handovers_sent_total, 1);
                        // The socket's layer (a WebSocket's framing) serves it on `dst` too.
                        let layer = cell.session.borrow_mut().take_socket_layer();
                        cx.hand_off(dst, stream, cell.peer(), leftover, layer, msg);
                    }
                    Err(e) => {
                        tracing::warn!(session = %cell.id(), error = %e, "cannot hand the socket over; closed")
                    }
                },
                None => tracing::error!(session = %cell.id(), "handover without its message"),
            },
            None => {}
        }
        self.closed(cell, Some(CloseReason::HandedOver));
    }

    /// A socket handed over by another shard: adopt it as a temporary session with the transport
    /// layer it had there, give it the bytes that followed its `Resume`, and let the application
    /// resume the session it names.
    pub(crate) fn adopt_handed(
        self: &Rc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        leftover: Vec<u8>,
        layer: lattice_wire::SocketLayer,
        msg: A::Msg,
    ) {
        let cx = &self.cx;
        let stream = match conn::register(stream) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "cannot register a handed-over socket");
                return;
            }
        };
        cx.open_counter().fetch_add(1, Ordering::Relaxed);
        // Resume is offered without TLS only, so a handed-over socket is a plain one; its layer
        // (binary frames, or a WebSocket after its upgrade) came with it.
        let stack = Arc::new(StackConfig::binary(SessionType::Client));
        let Some(cell) = self.open_session(peer, &stack, false) else {
            self.not_adopted();
            return;
        };
        cell.session.borrow_mut().set_socket_layer(layer);
        ShardMetrics::add(&cx.cm().handovers_received_total, 1);
        cell.set_pending_input(leftover);
        let binding = cell.session.borrow().binding();
        let id = cell.id();
        conn::spawn(self, cell, binding, stream);
        if cx.is_draining() {
            // A Resume is not answered during the drain: the socket closes with the other
            // sessions when it ends (and is logged like them).
            return;
        }
        guarded(self, "on_handover", |app| app.on_handover(cx, id, msg));
    }

    /// How long the loop may park before the next timer is due.
    pub fn park_timeout(&self) -> Option<Duration> {
        let timer = self
            .cx
            .wheel
            .borrow()
            .next_deadline()
            .map(|next| self.cx.clock.borrow().until_tick(next, TICK));
        // Suppressed warnings are summarised when their window ends, even on an idle shard.
        let summary = self.warns.borrow().next_due().map(|due| {
            let now = self.cx.clock.borrow().now().as_nanos() / 1_000_000;
            Duration::from_millis(due.saturating_sub(now))
        });
        let due = match (timer, summary) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b).unwrap_or(IDLE_PASS_MAX),
        };
        // An idle shard still makes a pass every IDLE_PASS_MAX: a pass count that stops moving
        // means the shard is stuck in a callback (the alert watcher relies on it).
        Some(due.min(IDLE_PASS_MAX))
    }

    /// True when the loop has something to do without waiting.
    pub fn has_input(&self) -> bool {
        self.cx.signals[self.cx.id].control_pending()
            || self.cx.has_local_work()
            || self.accept_in.iter().any(|a| !a.ring.is_empty())
            || self.ins.iter().flatten().any(|c| !c.is_empty())
    }

    fn close_counter(&self, reason: &CloseReason) -> &std::sync::atomic::AtomicU64 {
        let m = self.cx.m();
        match reason {
            CloseReason::PeerClosed => &m.sessions_closed_peer_total,
            CloseReason::Protocol(_) => &m.sessions_closed_protocol_total,
            CloseReason::SendBufferOverflow => &m.sessions_closed_send_overflow_total,
            CloseReason::Io(_) => &m.sessions_closed_io_total,
            CloseReason::App(_) => &m.sessions_closed_app_total,
            CloseReason::Shutdown => &m.sessions_closed_shutdown_total,
            CloseReason::IdleTimeout => &m.sessions_closed_idle_total,
            CloseReason::RateLimited => &self.cx.cm().sessions_closed_rate_limited_total,
            CloseReason::ResumeExpired(_) => &self.cx.cm().sessions_closed_resume_expired_total,
            CloseReason::Admin(_) => &self.cx.cm().sessions_closed_admin_total,
            CloseReason::HandedOver => &self.cx.cm().sessions_closed_handed_over_total,
        }
    }
}

impl<A: ShardApp> ShardState<A> {
    /// Opens a session for a socket, accepted here or handed over by another shard.
    pub(crate) fn open_session(
        &self,
        peer: SocketAddr,
        stack: &Arc<StackConfig>,
        tls: bool,
    ) -> Option<Rc<SessionCell>> {
        let cx = &self.cx;
        // During the drain too: a socket the acceptor handed over before it stopped becomes a
        // session that is closed (and logged) with the others when the drain ends; it reads
        // nothing meanwhile, so a Hello on it is not answered.
        let cell = match (tls, &self.tls) {
            (false, _) => cx.open_session_on(peer, stack, |s| s),
            (true, Some(t)) => {
                let now = cx.clock.borrow_mut().refresh();
                let layer = match t.layer(now) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(%peer, error = %e, "cannot start TLS for a connection");
                        return None;
                    }
                };
                t.opened();
                cx.open_session_on(peer, stack, |s| s.with_tls(layer))
            }
            (true, None) => {
                tracing::error!(%peer, "TLS connection on a shard without TLS settings");
                return None;
            }
        };
        let id = cell.id();
        ShardMetrics::set(&cx.m().sessions_open, cx.session_count() as u64);
        tracing::debug!(session = %id, %peer, "session opened");
        guarded(self, "on_open", |app| app.on_open(cx, id));
        Some(cell)
    }
}

impl<A: ShardApp> ConnHost for ShardState<A> {
    /// A connection from this shard's acceptor (counted in `connections_accepted_total`; a socket
    /// handed over by another shard opens through [`ShardState::open_session`] and is not).
    fn open(
        &self,
        peer: SocketAddr,
        stack: &Arc<StackConfig>,
        tls: bool,
    ) -> Option<Rc<SessionCell>> {
        let cell = self.open_session(peer, stack, tls)?;
        ShardMetrics::add(&self.cx.m().connections_accepted_total, 1);
        Some(cell)
    }

    fn input(&self, cell: &Rc<SessionCell>, binding: Binding, bytes: &mut [u8]) {
        let now = self.cx.clock.borrow_mut().refresh();
        match &self.tls {
            Some(tls) if cell.session.borrow().is_tls() => {
                self.tls_input(tls, cell, binding, now, bytes)
            }
            _ => self.events(cell, binding, now, bytes),
        }
    }

    fn rpc_reply(&self, cell: &Rc<SessionCell>) {
        let cx = &self.cx;
        let id = cell.id();
        let Some(reply) = cell.session.borrow_mut().take_rpc_reply() else {
            return;
        };
        if guarded(self, "on_rpc_reply", |app| app.on_rpc_reply(cx, id, reply)).is_none() {
            cell.session
                .borrow_mut()
                .close(CloseReason::App("internal error".into()));
        }
        self.rearm(cell);
    }

    fn ended(
        self: &Rc<Self>,
        cell: &Rc<SessionCell>,
        binding: Binding,
        end: Ended,
        stream: TcpStreamPoll,
    ) {
        let cx = &self.cx;
        let now = cx.clock.borrow_mut().refresh();
        if !matches!(end, Ended::HandOver) {
            self.abandon_handover(cell, now);
        }
        let outcome = match end {
            Ended::HandOver => return self.hand_over_socket(cell, stream),
            Ended::Stale => SocketEnd::Stale,
            Ended::Closing(reason) => SocketEnd::Closed(reason),
            Ended::PeerClosed => cell.session.borrow_mut().peer_closed(binding, now),
            Ended::Overflowed => cell.session.borrow_mut().socket_overflowed(binding, now),
            Ended::Failed(e) => cell.session.borrow_mut().socket_failed(binding, now, e),
        };
        if let Ok(mut buf) = self.read_buf.try_borrow_mut() {
            conn::discard_unread(&stream, &mut buf);
        }
        drop(stream);
        match outcome {
            SocketEnd::Stale => {
                ShardMetrics::add(&cx.cm().stale_sockets_total, 1);
                tracing::debug!(session = %cell.id(), "stale socket closed");
            }
            SocketEnd::Detached => {
                let why = cell
                    .session
                    .borrow()
                    .detached()
                    .map(|d| d.1.clone())
                    .unwrap_or(CloseReason::PeerClosed);
                self.detached(cell, &why);
            }
            SocketEnd::Closed(reason) => self.closed(cell, Some(reason)),
        }
    }

    fn read_buf(&self) -> &RefCell<Box<[u8]>> {
        &self.read_buf
    }

    fn metrics(&self) -> &ShardMetrics {
        self.cx.m()
    }

    fn draining(&self) -> bool {
        self.cx.is_draining()
    }

    fn reads_per_poll(&self) -> usize {
        self.cx.net.reads_per_poll.max(1)
    }

    fn not_adopted(&self) {
        self.cx.open_counter().fetch_sub(1, Ordering::Relaxed);
    }

    fn may_linger(&self, cell: &Rc<SessionCell>) -> bool {
        let cx = &self.cx;
        let now = cx.clock.borrow_mut().refresh();
        let until = match cell.linger_until() {
            Some(until) if now >= until => return false,
            Some(until) => until,
            None => {
                let until = now
                    .saturating_add(Duration::from_millis(cx.continuity.session.close_linger_ms));
                cell.set_linger_until(until);
                until
            }
        };
        // Every time: an earlier deadline of the session (idle, handshake) may have taken the
        // cell's one timer and fired since; this keeps one armed at the linger's end.
        cx.arm_timer_at(cell, until);
        true
    }
}

impl<A: ShardApp> ShardState<A> {
    /// Runs `bytes` (plaintext, transformed in place by the layers) through the session's layers
    /// and the application: frames to `on_frame`, HTTP requests to `on_http`.
    fn events(&self, cell: &Rc<SessionCell>, binding: Binding, now: MonoTime, bytes: &mut [u8]) {
        let cx = &self.cx;
        let id = cell.id();
        let m = cx.m();
        let cm = cx.cm();
        let gw = &cx.metrics.gateway[cx.id];
        let mut input = bytes;
        // Requests this read sends to other shards wake them once, after the last frame.
        cx.defer_wakes();
        // One catch_unwind per read, not per frame: a panic closes this session only.
        let served = guarded(self, "on_frame", |app| loop {
            // The borrow ends before the application runs: it may queue output to this session.
            let next = {
                let mut s = cell.session.borrow_mut();
                let was_http = s.transport() == lattice_wire::Transport::Http;
                let next = s.receive_event(binding, now, &mut input);
                if was_http && s.transport() != lattice_wire::Transport::Http {
                    GatewayMetrics::add(&gw.ws_upgrades_total, 1);
                }
                next
            };
            match next {
                Ok(Some(Input::Frame(frame))) => {
                    ShardMetrics::add(&m.frames_in_total, 1);
                    app.on_frame(cx, id, frame.frame());
                }
                Ok(Some(Input::Request(req))) => {
                    GatewayMetrics::add(&gw.http_requests_total, 1);
                    app.on_http(cx, id, req);
                }
                Ok(Some(Input::RateLimited(header, which, close))) => {
                    ShardMetrics::add(&m.frames_in_total, 1);
                    ShardMetrics::add(
                        match which {
                            Limited::Messages => &cm.rate_limited_msgs_total,
                            Limited::Bytes => &cm.rate_limited_bytes_total,
                        },
                        1,
                    );
                    app.on_rate_limited(cx, id, header, which);
                    if close {
                        // After the answer, so the client learns why.
                        cell.session.borrow_mut().close(CloseReason::RateLimited);
                    }
                }
                Ok(Some(Input::Duplicate(_, over))) => {
                    ShardMetrics::add(&m.frames_in_total, 1);
                    ShardMetrics::add(&cm.duplicates_dropped_total, 1);
                    count_over(cm, over);
                }
                Ok(Some(Input::Ack(over))) => {
                    ShardMetrics::add(&m.frames_in_total, 1);
                    count_over(cm, over);
                }
                Ok(None) => break,
                Err(reason) => {
                    if matches!(
                        cell.session.borrow().transport(),
                        lattice_wire::Transport::Http
                    ) {
                        GatewayMetrics::add(&gw.http_bad_requests_total, 1);
                    }
                    tracing::debug!(session = %id, %reason, "protocol error");
                    break;
                }
            }
            if cell.session.borrow().is_closing() {
                break;
            }
            if cell.has_handover() {
                // The socket goes to another session: what follows is that session's input.
                cell.extend_pending_input(input);
                break;
            }
        });
        cx.flush_wakes();
        if served.is_none() {
            cell.session
                .borrow_mut()
                .close(CloseReason::App("internal error".into()));
        }
        self.rearm(cell);
    }

    /// A read on a TLS session: decrypt into the shard's plaintext buffer, then the layers above
    /// as usual. An empty read still runs input the session holds (pipelined HTTP requests).
    fn tls_input(
        &self,
        tls: &ShardTls,
        cell: &Rc<SessionCell>,
        binding: Binding,
        now: MonoTime,
        bytes: &[u8],
    ) {
        let mut plain = self.tls_plain.borrow_mut();
        plain.clear();
        let read = cell
            .session
            .borrow_mut()
            .receive_tls(now, bytes, &mut plain);
        let first_handshake = {
            let mut s = cell.session.borrow_mut();
            let ev = s.take_tls_events();
            tls.count(&ev);
            ev.handshake_done
        };
        if let Some(version) = first_handshake {
            let s = cell.session.borrow();
            let t = s.tls();
            tracing::debug!(
                session = %cell.id(),
                peer = %cell.peer(),
                version = version.name(),
                suite = ?t.and_then(|t| t.cipher_suite()),
                sni = t.and_then(|t| t.server_name()).unwrap_or(""),
                "tls handshake complete"
            );
        }
        self.events(cell, binding, now, &mut plain[..]);
        if matches!(read, Ok(r) if r.peer_closed) {
            cell.session.borrow_mut().close(CloseReason::PeerClosed);
        }
        // Deadlines can move earlier here (a completed handshake schedules its first key
        // update): re-arm, which keeps an earlier timer and is cheap otherwise.
        self.cx.arm_session_timer(cell);
    }
}

/// One summary line for warnings the shard's limiter held back.
fn log_suppressed(shard: usize, s: Summary) {
    tracing::warn!(
        shard,
        reason = s.reason,
        suppressed = s.suppressed,
        window_ms = s.window_ms,
        "session closed: further warnings of this reason suppressed in the last window"
    );
}

/// Calls into the application, catching a panic so the shard goes on. Returns None on panic.
pub(crate) fn guarded<A: ShardApp, R>(
    st: &ShardState<A>,
    what: &str,
    f: impl FnOnce(&mut A) -> R,
) -> Option<R> {
    let mut app = match st.app.try_borrow_mut() {
        Ok(a) => a,
        Err(_) => {
            tracing::error!(
                shard = st.cx.id,
                what,
                "application re-entered; call skipped"
            );
            return None;
        }
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut app))) {
        Ok(r) => Some(r),
        Err(p) => {
            ShardMetrics::add(&st.cx.m().app_panics_total, 1);
            tracing::error!(shard = st.cx.id, what, panic = %panic_message(&*p), "application panicked; shard continues");
            None
        }
    }
}

/// The text of a panic payload.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".into()
    }
}

/// Counts a frame that was over a rate limit but is answered with nothing (an `Ack`, a duplicate).
fn count_over(cm: &crate::telemetry::continuity::ContinuityMetrics, over: Option<Limited>) {
    use crate::telemetry::continuity::ContinuityMetrics;
    match over {
        Some(Limited::Messages) => ContinuityMetrics::add(&cm.rate_limited_msgs_total, 1),
        Some(Limited::Bytes) => ContinuityMetrics::add(&cm.rate_limited_bytes_total, 1),
        None => {}
    }
}

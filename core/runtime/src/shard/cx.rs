//! [`ShardCx`]: what the application on a shard can do — send to shards, deliver frames to
//! sessions anywhere, close sessions, set timers, wait for work done off the shard.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lattice_wire::http::Response;
use lattice_wire::{
    CloseReason, ResumeError, Resumption, SendError, Sent, Session, SessionId, SessionLimits,
    SessionRates, StackConfig, TOKEN_LEN,
};

use super::batch::FrameBatch;
use crate::mesh::backlog::{Backlog, Queued, Refused};
use crate::mesh::ring::Producer;
use crate::mesh::ShardSignal;
use crate::net::continuity::ContinuityConfig;
use crate::net::table::Handover;
use crate::net::tokens::TokenSource;
use crate::net::{NetConfig, SessionCell, SessionTable};
use crate::telemetry::continuity::ContinuityMetrics;
use crate::telemetry::metrics::{Metrics, ShardMetrics};
use crate::time::{Clock, MonoTime, TickLen, TimerError, TimerHandle, TimerWheel, WheelConfig};

/// The wheel's tick: 1 ms.
pub(crate) const TICK: TickLen = TickLen::MILLISECOND;

/// What a shard's timer wheel holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimerItem {
    /// A session's deadline ([`Session::poll_timeout`]).
    Session(SessionId),
    /// An application timer; the token goes to [`super::ShardApp::on_timer`].
    App(u64),
}

/// What travels on the mesh rings.
pub(crate) enum Envelope<M> {
    /// One encoded frame for one session of the receiving shard.
    Deliver(SessionId, Vec<u8>),
    /// One encoded frame for several sessions of the receiving shard (broadcast).
    DeliverMany(Vec<SessionId>, Arc<[u8]>),
    /// Encoded frames for sessions of the receiving shard, written during one loop pass of the
    /// sender ([`ShardCx::deliver_with`]): each as its session id (8 bytes), its length (4 bytes,
    /// both little-endian) and the frame. One ring slot, one wake-up check and one buffer for
    /// up to `runtime.mesh_batch` replies instead of one each.
    DeliverBatch(Vec<u8>),
    /// Close a session of the receiving shard.
    Close(SessionId, CloseReason),
    /// Close a session of the receiving shard, keeping a detached one's replay for one resume
    /// ([`ShardCx::close_keeping_replay`]).
    CloseKeepingReplay(SessionId, CloseReason),
    /// An application message.
    App(M),
    /// A socket that carried a `Resume` for a session of the receiving shard: adopt it, give it
    /// `leftover` (bytes read after the `Resume`) first, and pass `msg` to
    /// [`super::ShardApp::on_handover`]. Boxed: it is rare and, inline, more than twice the size
    /// of every other envelope, and every envelope is copied into and out of a ring slot of the
    /// largest one's size (232 bytes then, a `memcpy` call each way; 120 now, copied inline).
    Adopt(Box<Adoption<M>>),
}

/// A socket handed to the shard that owns its session ([`Envelope::Adopt`]).
pub(crate) struct Adoption<M> {
    /// The socket, deregistered from the sending shard.
    pub stream: std::net::TcpStream,
    /// Its peer address.
    pub peer: std::net::SocketAddr,
    /// Bytes it sent after the `Resume`, not yet processed.
    pub leftover: Vec<u8>,
    /// Its transport layer (WebSocket framing and what it holds), which goes on serving it.
    pub layer: lattice_wire::SocketLayer,
    /// What the application asked to carry.
    pub msg: M,
}

/// Why [`ShardCx::rebind`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RebindError {
    /// No live session has that id on this shard.
    #[error("unknown or closed session")]
    UnknownSession,
    /// The socket's own session is gone (it closed meanwhile).
    #[error("the resuming socket is gone")]
    NoSocket,
    /// The session refused the resume.
    #[error("{0}")]
    Resume(#[from] ResumeError),
}

/// Settings of a shard's context.
#[derive(Clone)]
pub(crate) struct CxSettings {
    pub net: NetConfig,
    pub continuity: ContinuityConfig,
    pub continuity_metrics: Arc<Vec<ContinuityMetrics>>,
    pub backlog_limit: usize,
    pub wheel: WheelConfig,
}

/// The application's handle on its shard. Every method is cheap and never blocks.
pub struct ShardCx<M> {
    /// This shard's index.
    pub id: usize,
    /// Number of shards.
    pub shards: usize,
    /// Shared metrics (this shard writes `metrics.shards[id]`).
    pub metrics: Arc<Metrics>,
    /// Network settings.
    pub net: NetConfig,
    /// Resume, rate-limit and access settings as the shard started with them (rate limits may
    /// change live: see [`ShardCx::session_rates`]).
    pub continuity: ContinuityConfig,
    continuity_metrics: Arc<Vec<ContinuityMetrics>>,
    limits: RefCell<Arc<SessionLimits>>,
    tokens: RefCell<TokenSource>,
    /// Sessions that closed while detached (no connection task to end them): removed by the loop.
    reap: RefCell<Vec<Rc<SessionCell>>>,
    /// Sockets on their way to another shard: (temporary session, destination, message).
    handovers: RefCell<Vec<(SessionId, usize, M)>>,
    detached: Cell<u64>,
    outs: Vec<Option<Producer<Envelope<M>>>>,
    backlog: RefCell<Backlog<Envelope<M>>>,
    self_queue: Rc<RefCell<VecDeque<M>>>,
    /// Futures of [`ShardCx::spawn_then`] not finished yet: the drain waits for them.
    spawned: Rc<Cell<usize>>,
    backlog_limit: usize,
    pub(crate) signals: Arc<Vec<ShardSignal>>,
    pub(crate) sessions: RefCell<SessionTable>,
    pub(crate) clock: RefCell<Clock>,
    pub(crate) wheel: RefCell<TimerWheel<TimerItem>>,
    local_work: Cell<bool>,
    /// True while the shard loop runs the synchronous part of a pass (no connection task can run
    /// meanwhile): the loop is awake and runs the application's queued work before it next
    /// parks, so a notify needs no wake-up.
    in_pass: Cell<bool>,
    /// Replies for sessions of other shards written during this pass, one batch per destination,
    /// sent at the end of the pass, before any other message to the same shard, or when a batch
    /// holds `batch_limit` frames.
    batches: RefCell<Vec<FrameBatch>>,
    /// True while some batch holds a frame: a pass that batched nothing (most passes under a
    /// light load) and a push with nothing batched pay one flag test, not a look at each batch.
    batched: Cell<bool>,
    /// Frames per batch (`runtime.mesh_batch`); 0 sends every reply alone.
    batch_limit: Cell<usize>,
    /// While set (a loop pass, or a connection task serving one read), a message put on a ring
    /// leaves the consumer's wake-up check to [`ShardCx::flush_wakes`] at the end of it: one
    /// fence and check per destination per pass or read instead of one per message.
    defer_wakes: Cell<bool>,
    /// Destinations (bit `dst`, shards 0–63) owed a wake-up check; a destination of 64 or more
    /// is checked at once.
    owed_wakes: Cell<u64>,
    pub(crate) draining: Cell<bool>,
}

impl<M: Send + 'static> ShardCx<M> {
    pub(crate) fn new(
        id: usize,
        shards: usize,
        metrics: Arc<Metrics>,
        settings: CxSettings,
        outs: Vec<Option<Producer<Envelope<M>>>>,
        signals: Arc<Vec<ShardSignal>>,
        clock: Clock,
    ) -> Self {
        let now = TICK.tick_of(clock.now());
        let wheel = TimerWheel::starting_at(settings.wheel, now).unwrap_or_else(|e| {
            tracing::error!(shard = id, error = %e, "bad timer wheel settings; using defaults");
            TimerWheel::starting_at(WheelConfig::default(), now)
                .expect("default wheel settings are valid")
        });
        ShardCx {
            id,
            shards,
            metrics,
            limits: RefCell::new(Arc::new(settings.net.session_limits(&settings.continuity))),
            net: settings.net,
            continuity: settings.continuity,
            continuity_metrics: settings.continuity_metrics,
            tokens: RefCell::new(TokenSource::default()),
            reap: RefCell::new(Vec::new()),
            handovers: RefCell::new(Vec::new()),
            detached: Cell::new(0),
            outs,
            backlog: RefCell::new(Backlog::new(shards, settings.backlog_limit)),
            self_queue: Rc::new(RefCell::new(VecDeque::new())),
            spawned: Rc::new(Cell::new(0)),
            backlog_limit: settings.backlog_limit,
            signals,
            sessions: RefCell::new(SessionTable::default()),
            clock: RefCell::new(clock),
            wheel: RefCell::new(wheel),
            local_work: Cell::new(false),
            in_pass: Cell::new(false),
            batches: RefCell::new((0..shards).map(|_| FrameBatch::default()).collect()),
            batched: Cell::new(false),
            batch_limit: Cell::new(0),
            defer_wakes: Cell::new(false),
            owed_wakes: Cell::new(0),
            draining: Cell::new(false),
        }
    }

    /// A context attached to no mesh and no sockets, for unit tests and tools. Sends to other
    /// shards are refused (logged), deliveries find no session unless one is added with
    /// [`ShardCx::open_session`].
    pub fn standalone(id: usize, shards: usize, net: NetConfig) -> Self {
        Self::standalone_with_clock(id, shards, net, Clock::new())
    }

    /// [`ShardCx::standalone`] on a given clock, e.g. [`Clock::manual`] for tests on simulated
    /// time (move it, then [`ShardCx::refresh_clock`]).
    pub fn standalone_with_clock(id: usize, shards: usize, net: NetConfig, clock: Clock) -> Self {
        let shards = shards.max(id + 1);
        ShardCx::new(
            id,
            shards,
            Arc::new(Metrics::new(shards)),
            CxSettings {
                net,
                continuity: ContinuityConfig::default(),
                continuity_metrics: Arc::new((0..shards).map(|_| Default::default()).collect()),
                backlog_limit: 1024,
                wheel: WheelConfig::default(),
            },
            (0..shards).map(|_| None).collect(),
            Arc::new((0..shards).map(|_| ShardSignal::new(1)).collect()),
            clock,
        )
    }

    /// This shard's metrics.
    pub fn m(&self) -> &ShardMetrics {
        &self.metrics.shards[self.id]
    }

    /// This shard's resume, rate-limit and operator counters.
    pub fn cm(&self) -> &ContinuityMetrics {
        &self.continuity_metrics[self.id]
    }

    // ---- messages ----

    /// Sends an application message to shard `dst` (this shard included). Never drops: a full ring
    /// keeps the message in the backlog, retried every pass; past `runtime.mesh_backlog_limit` it is
    /// still queued and counted (`mesh_backlog_over_limit_total`). Use it for replies, notices and
    /// anything whose loss would lose state; use [`ShardCx::try_send`] for client requests.
    pub fn send(&self, dst: usize, msg: M) {
        if dst == self.id {
            let mut q = self.self_queue.borrow_mut();
            if q.len() >= self.backlog_limit {
                ShardMetrics::add(&self.m().mesh_backlog_over_limit_total, 1);
            }
            q.push_back(msg);
            drop(q);
            self.notify();
        } else if self.push(dst, Envelope::App(msg), true).is_err() {
            unreachable!("never-drop sends are not refused");
        }
    }

    /// Sends a refusable message: handed back when the backlog for `dst` (or this shard's own
    /// queue) already holds `runtime.mesh_backlog_limit` messages, counted as
    /// `mesh_backlog_refused_total`. The caller answers `BUSY`.
    pub fn try_send(&self, dst: usize, msg: M) -> Result<(), M> {
        if dst == self.id {
            let mut q = self.self_queue.borrow_mut();
            if q.len() >= self.backlog_limit {
                ShardMetrics::add(&self.m().mesh_backlog_refused_total, 1);
                return Err(msg);
            }
            q.push_back(msg);
            drop(q);
            self.notify();
            return Ok(());
        }
        match self.push(dst, Envelope::App(msg), false) {
            Ok(()) => Ok(()),
            Err(Envelope::App(m)) => Err(m),
            Err(_) => unreachable!("push hands back what it was given"),
        }
    }

    /// Runs `fut` on this shard (a local task) and, when it completes, queues `map(output)` for
    /// this shard's [`super::ShardApp::on_message`]. This is how a handler waits for work done off
    /// the shard (a storage read, a password hash) without blocking. Must be called on the shard's
    /// own thread inside its runtime. The drain at shutdown waits for it (bounded).
    pub fn spawn_then<T: 'static>(
        &self,
        fut: impl Future<Output = T> + 'static,
        map: impl FnOnce(T) -> M + 'static,
    ) {
        self.spawn_counted(fut, map, true);
    }

    /// As [`ShardCx::spawn_then`] for a future that waits for input from outside indefinitely
    /// (frames from node links): the drain does not wait for it.
    pub fn spawn_watch<T: 'static>(
        &self,
        fut: impl Future<Output = T> + 'static,
        map: impl FnOnce(T) -> M + 'static,
    ) {
        self.spawn_counted(fut, map, false);
    }

    fn spawn_counted<T: 'static>(
        &self,
        fut: impl Future<Output = T> + 'static,
        map: impl FnOnce(T) -> M + 'static,
        counted: bool,
    ) {
        let queue = self.self_queue.clone();
        let signals = self.signals.clone();
        let id = self.id;
        let spawned = counted.then(|| self.spawned.clone());
        if let Some(n) = &spawned {
            n.set(n.get() + 1);
        }
        monoio::spawn(async move {
            let out = fut.await;
            if let Some(n) = &spawned {
                n.set(n.get() - 1);
            }
            queue.borrow_mut().push_back(map(out));
            // A task of this shard: its own thread.
            signals[id].wake_own();
        });
    }

    // ---- sessions ----

    /// Queues an encoded frame for `session`, wherever it lives.
    pub fn deliver(&self, session: SessionId, frame: Vec<u8>) {
        if session.shard() == self.id {
            self.deliver_local(session, &frame);
        } else if session.shard() < self.shards {
            let _ = self.push(session.shard(), Envelope::Deliver(session, frame), true);
        }
    }

    /// Queues a frame of exactly `len` bytes for `session`, written by `write`: straight into the
    /// session's outbound queue when it lives on this shard (no copy). For a session of another
    /// shard, during a loop pass (a handler run from the loop: a request that came over the
    /// mesh, a timer, a message), into that shard's batch, sent as one mesh message at the end of
    /// the pass (or when it holds `runtime.mesh_batch` frames, or before any other message to
    /// that shard, which keeps order); outside a pass (a handler run by a connection task), into
    /// a buffer of its own sent at once.
    pub fn deliver_with(&self, session: SessionId, len: usize, write: impl FnOnce(&mut Vec<u8>)) {
        let dst = session.shard();
        if dst == self.id {
            let table = self.sessions.borrow();
            let Some(cell) = table.get(session) else {
                return;
            };
            let r = cell.session.borrow_mut().send_with(len, write);
            self.sent(cell, r);
        } else if dst < self.shards {
            if self.in_pass.get() && self.batch_limit.get() > 0 && u32::try_from(len).is_ok() {
                let frames = self.batches.borrow_mut()[dst].push_with(session, len, write);
                self.batched.set(true);
                if frames >= self.batch_limit.get() {
                    ShardMetrics::add(&self.m().mesh_batches_full_total, 1);
                    self.flush_batch(dst);
                }
                return;
            }
            let mut frame = Vec::with_capacity(len);
            write(&mut frame);
            let _ = self.push(dst, Envelope::Deliver(session, frame), true);
        }
    }

    /// Sends the batch gathered for `dst`, if any.
    #[inline(never)]
    fn flush_batch(&self, dst: usize) {
        let Some(bytes) = self
            .batches
            .borrow_mut()
            .get_mut(dst)
            .and_then(FrameBatch::take)
        else {
            return;
        };
        let _ = self.push_now(dst, Envelope::DeliverBatch(bytes), true);
    }

    /// Sends every batch gathered during this pass (the loop calls it at the end of a pass).
    pub(crate) fn flush_batches(&self) {
        if !self.batched.replace(false) {
            return;
        }
        for dst in 0..self.shards {
            self.flush_batch(dst);
        }
    }

    /// From now on, leave the wake-up checks of ring pushes to [`ShardCx::flush_wakes`], which
    /// the caller must call before it next awaits (a consumer not woken would sleep with a
    /// message queued until something else woke it).
    pub(crate) fn defer_wakes(&self) {
        self.defer_wakes.set(true);
    }

    /// Wakes every destination a deferred push left parked, and ends the deferral.
    pub(crate) fn flush_wakes(&self) {
        self.defer_wakes.set(false);
        let mut owed = self.owed_wakes.replace(0);
        while owed != 0 {
            let dst = owed.trailing_zeros() as usize;
            owed &= owed - 1;
            if self.signals[dst].wake() {
                ShardMetrics::add(&self.m().mesh_wakeups_total, 1);
            }
        }
    }

    /// Frames per delivery batch (`runtime.mesh_batch`; 0: no batching).
    pub(crate) fn set_batch_limit(&self, frames: usize) {
        self.batch_limit.set(frames);
    }

    /// Delivers every frame of an [`Envelope::DeliverBatch`] to its session of this shard.
    pub(crate) fn deliver_batch(&self, bytes: &[u8]) {
        for (id, frame) in super::batch::frames(bytes) {
            debug_assert_eq!(id.shard(), self.id, "delivery routed to the wrong shard");
            self.deliver_local(id, frame);
        }
    }

    /// Queues one encoded frame for many sessions, one mesh message per owning shard.
    pub fn deliver_many(&self, sessions: &[SessionId], frame: &[u8]) {
        let mut per_shard: Vec<Vec<SessionId>> = vec![Vec::new(); self.shards];
        for s in sessions {
            if let Some(v) = per_shard.get_mut(s.shard()) {
                v.push(*s);
            }
        }
        let shared: Arc<[u8]> = Arc::from(frame);
        for (shard, list) in per_shard.into_iter().enumerate() {
            if list.is_empty() {
                continue;
            }
            if shard == self.id {
                for s in list {
                    self.deliver_local(s, frame);
                }
            } else {
                let _ = self.push(shard, Envelope::DeliverMany(list, shared.clone()), true);
            }
        }
    }

    /// Closes `session` (wherever it lives) with `reason`; queued output is flushed first when the
    /// socket takes it. A detached session closes at once.
    pub fn close(&self, session: SessionId, reason: CloseReason) {
        self.close_with(session, reason, false);
    }

    /// [`ShardCx::close`], except that a detached (resumable) session holding frames for a
    /// replay (the `Kicked` pushed just before) keeps them for one resume: it closes once a
    /// resume has delivered them, or at the end of its resume window, with `reason` either way
    /// ([`Session::close_keeping_replay`]).
    pub fn close_keeping_replay(&self, session: SessionId, reason: CloseReason) {
        self.close_with(session, reason, true);
    }

    fn close_with(&self, session: SessionId, reason: CloseReason, keep_replay: bool) {
        if session.shard() == self.id {
            if let Some(cell) = self.sessions.borrow().get(session) {
                let (attached, closing) = {
                    let mut s = cell.session.borrow_mut();
                    if keep_replay {
                        s.close_keeping_replay(reason);
                    } else {
                        s.close(reason);
                    }
                    (s.is_attached(), s.is_closing())
                };
                if attached {
                    cell.wake();
                } else if closing {
                    // No socket task will end it: the loop removes it.
                    self.reap.borrow_mut().push(cell.clone());
                    self.notify();
                }
            }
        } else if session.shard() < self.shards {
            let envelope = if keep_replay {
                Envelope::CloseKeepingReplay(session, reason)
            } else {
                Envelope::Close(session, reason)
            };
            let _ = self.push(session.shard(), envelope, true);
        }
    }

    /// Reads the state machine of `session` if it lives on this shard and is open: `f` cannot
    /// change it, so nothing is compared or woken afterwards (the gate asks this of every frame).
    #[inline]
    pub fn inspect_session<R>(
        &self,
        session: SessionId,
        f: impl FnOnce(&Session) -> R,
    ) -> Option<R> {
        let table = self.sessions.borrow();
        let cell = table.get(session)?;
        let s = cell.session.borrow();
        Some(f(&s))
    }

    /// Runs `f` on the state machine of `session` if it lives on this shard and is open. The
    /// connection task is woken when `f` queued output or started a close.
    pub fn with_session<R>(
        &self,
        session: SessionId,
        f: impl FnOnce(&mut Session) -> R,
    ) -> Option<R> {
        let table = self.sessions.borrow();
        let cell = table.get(session)?;
        let mut s = cell.session.borrow_mut();
        let before = (s.unsent(), s.is_closing());
        let r = f(&mut s);
        let changed = (s.unsent(), s.is_closing()) != before;
        let orphan = s.is_closing() && !s.is_attached() && !before.1;
        drop(s);
        if orphan {
            self.reap_later(cell.clone());
        } else if changed {
            cell.wake();
        }
        Some(r)
    }

    /// The peer address of `session` if it lives on this shard and is open. Cost: a table lookup.
    pub fn peer(&self, session: SessionId) -> Option<std::net::SocketAddr> {
        self.sessions.borrow().get(session).map(|c| c.peer())
    }

    /// Live sessions on this shard.
    pub fn session_count(&self) -> usize {
        self.sessions.borrow().len()
    }

    /// Answers the HTTP request `session` (of this shard) is waiting on; see
    /// [`lattice_wire::Session::respond`]. Returns false when the session is gone, closing or
    /// waits for no answer.
    pub fn respond(&self, session: SessionId, resp: &Response) -> bool {
        matches!(
            self.with_session(session, |s| s.respond(resp)),
            Some(Ok(()))
        )
    }

    /// Registers a binary client session for a connection from `peer` (a test).
    pub fn open_session(&self, peer: std::net::SocketAddr) -> Rc<SessionCell> {
        self.open_session_on(
            peer,
            &Arc::new(StackConfig::binary(lattice_wire::SessionType::Client)),
            |s| s,
        )
    }

    /// Registers a session for a connection from `peer` on a listener with protocol stack
    /// `stack` (the connection task, or a test), with layers added by `layers` before any byte
    /// flows (e.g. TLS: `|s| s.with_tls(layer)`).
    pub fn open_session_on(
        &self,
        peer: std::net::SocketAddr,
        stack: &Arc<StackConfig>,
        layers: impl FnOnce(Session) -> Session,
    ) -> Rc<SessionCell> {
        let now = self.clock.borrow_mut().refresh();
        let mut table = self.sessions.borrow_mut();
        let id = table.next_id(self.id);
        let session = layers(Session::new_on(
            id,
            Arc::clone(&self.limits.borrow()),
            stack,
            now,
        ));
        let cell = Rc::new(SessionCell::new(session, peer, now));
        table.insert(cell.clone());
        drop(table);
        self.arm_session_timer(&cell);
        cell
    }

    /// The peer address of a session of this shard.
    pub fn session_peer(&self, session: SessionId) -> Option<std::net::SocketAddr> {
        self.sessions.borrow().get(session).map(|c| c.peer())
    }

    // ---- resume ----

    /// A fresh resume token (16 bytes from the kernel's CSPRNG). `None` (logged) when
    /// `/dev/urandom` cannot be read: the caller then offers no resume.
    pub fn new_token(&self) -> Option<[u8; TOKEN_LEN]> {
        match self.tokens.borrow_mut().token() {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::error!(shard = self.id, error = %e, "no resume token");
                None
            }
        }
    }

    /// Rebinds session `target` of this shard to the socket of session `temp` (whose first frame
    /// was a `Resume`): `resume` gets `target`'s session and `temp`'s and runs
    /// [`Session::resume_from`] (which moves the socket's transport layer); when it accepts, the old
    /// socket of `target` (if any) is fenced, `temp`'s connection task hands its socket (and any
    /// bytes read after the `Resume`) to `target`, and `temp` ends ([`CloseReason::HandedOver`]).
    /// Refused (nothing changes) when `target` is not a live session here or the session refuses.
    pub fn rebind(
        &self,
        temp: SessionId,
        target: SessionId,
        resume: impl FnOnce(&mut Session, &mut Session) -> Result<Resumption, ResumeError>,
    ) -> Result<Resumption, RebindError> {
        let (tcell, cell) = {
            let table = self.sessions.borrow();
            let tcell = table.get(temp).cloned().ok_or(RebindError::NoSocket)?;
            let cell = match table.get(target) {
                Some(c) if target != temp => c.clone(),
                _ => return Err(RebindError::UnknownSession),
            };
            (tcell, cell)
        };
        let (was_detached, r) = {
            let mut s = cell.session.borrow_mut();
            let mut t = tcell.session.borrow_mut();
            let was_detached = !s.is_attached();
            (was_detached, resume(&mut s, &mut t))
        };
        let r = r?;
        tcell.set_handover(Handover::Local(cell.clone(), r.binding));
        tcell.wake();
        // The old binding's task, if one still runs, finds itself fenced.
        cell.wake();
        if was_detached {
            self.detached_changed(-1);
        }
        self.arm_session_timer(&cell);
        let m = self.cm();
        ShardMetrics::add(&m.sessions_resumed_total, 1);
        ShardMetrics::add(&m.replayed_frames_total, r.replayed as u64);
        if r.resync {
            ShardMetrics::add(&m.resyncs_total, 1);
        }
        Ok(r)
    }

    /// Sends the socket of session `temp` (whose first frame was a `Resume` for a session of shard
    /// `dst`) to shard `dst` with `msg`, which that shard's application gets in
    /// [`super::ShardApp::on_handover`] with the id of the session that holds the socket there.
    /// `temp` ends ([`CloseReason::HandedOver`]). Hands `msg` back when `dst` is this shard or out
    /// of range, or `temp` is not a live session here.
    pub fn hand_over(&self, temp: SessionId, dst: usize, msg: M) -> Result<(), M> {
        if dst >= self.shards || dst == self.id {
            return Err(msg);
        }
        let table = self.sessions.borrow();
        let Some(tcell) = table.get(temp) else {
            return Err(msg);
        };
        tcell.set_handover(Handover::Remote);
        tcell.wake();
        self.handovers.borrow_mut().push((temp, dst, msg));
        Ok(())
    }

    /// Sends a socket to shard `dst` (never dropped: a handover is bounded by the resumes that
    /// caused it).
    pub(crate) fn hand_off(
        &self,
        dst: usize,
        stream: std::net::TcpStream,
        peer: std::net::SocketAddr,
        leftover: Vec<u8>,
        layer: lattice_wire::SocketLayer,
        msg: M,
    ) {
        let env = Envelope::Adopt(Box::new(Adoption {
            stream,
            peer,
            leftover,
            layer,
            msg,
        }));
        if self.push(dst, env, true).is_err() {
            unreachable!("never-drop sends are not refused");
        }
    }

    pub(crate) fn take_handover(&self, temp: SessionId) -> Option<(usize, M)> {
        let mut list = self.handovers.borrow_mut();
        let i = list.iter().position(|h| h.0 == temp)?;
        let (_, dst, msg) = list.swap_remove(i);
        Some((dst, msg))
    }

    /// The rate limits new sessions get (and, after a live change, every session of this shard).
    pub fn session_rates(&self) -> SessionRates {
        self.limits.borrow().rates
    }

    pub(crate) fn set_session_rates(&self, rates: SessionRates) {
        let mut l = **self.limits.borrow();
        l.rates = rates;
        let shared = Arc::new(l);
        *self.limits.borrow_mut() = Arc::clone(&shared);
        for cell in self.sessions.borrow().iter() {
            let mut session = cell.session.borrow_mut();
            // Sessions keep sharing one copy of the limits; one whose other limits differ (a
            // node link, with its own send bound) gets its own.
            if !session.set_shared_limits(&shared) {
                session.set_rates(rates);
            }
        }
    }

    pub(crate) fn take_reap(&self) -> Vec<Rc<SessionCell>> {
        std::mem::take(&mut *self.reap.borrow_mut())
    }

    pub(crate) fn reap_later(&self, cell: Rc<SessionCell>) {
        self.reap.borrow_mut().push(cell);
        self.notify();
    }

    /// Moves the detached-sessions gauge by `delta`.
    pub(crate) fn detached_changed(&self, delta: i64) {
        let v = self.detached.get().saturating_add_signed(delta);
        self.detached.set(v);
        ShardMetrics::set(&self.cm().sessions_detached, v);
    }

    pub(crate) fn deliver_local(&self, id: SessionId, frame: &[u8]) {
        let table = self.sessions.borrow();
        let Some(cell) = table.get(id) else {
            return;
        };
        let r = cell.session.borrow_mut().send(frame);
        self.sent(cell, r);
    }

    fn sent(&self, cell: &SessionCell, r: Result<Sent, SendError>) {
        match r {
            Ok(sent) => {
                ShardMetrics::add(&self.m().frames_out_total, 1);
                if sent.evicted > 0 {
                    ShardMetrics::add(&self.cm().replay_evicted_total, sent.evicted as u64);
                }
                cell.wake();
            }
            Err(SendError::Overflow) => cell.wake(),
            Err(SendError::NoChannel) => {
                crate::telemetry::gateway::GatewayMetrics::add(
                    &self.metrics.gateway[self.id].frames_no_channel_total,
                    1,
                );
            }
            Err(SendError::Closing) => {}
        }
    }

    /// Schedules the session's next deadline in the wheel (kept when an earlier one is pending).
    pub(crate) fn arm_session_timer(&self, cell: &SessionCell) {
        let Some(at) = cell.session.borrow().poll_timeout() else {
            return;
        };
        self.arm_timer_at(cell, at);
    }

    /// Schedules a deadline of the session at `at` (kept when an earlier one is pending).
    pub(crate) fn arm_timer_at(&self, cell: &SessionCell, at: MonoTime) {
        let tick = TICK.tick_of(at) + 1;
        let mut wheel = self.wheel.borrow_mut();
        let next = wheel.next_deadline();
        let armed = match cell.timer.get().map(|h| (h, wheel.deadline_of(h))) {
            Some((_, Some(d))) if d <= tick => return,
            Some((h, Some(_))) if wheel.reschedule(h, tick).is_ok() => true,
            _ => match wheel.insert(tick, TimerItem::Session(cell.id())) {
                Ok(h) => {
                    cell.timer.set(Some(h));
                    true
                }
                Err(e) => {
                    ShardMetrics::add(&self.m().timers_rejected_total, 1);
                    tracing::warn!(session = %cell.id(), error = %e, "cannot arm session timer");
                    false
                }
            },
        };
        drop(wheel);
        // A connection task (not the loop) may arm a deadline earlier than the one the parked
        // loop sleeps until (a detach, an acknowledgement due): wake it to sleep less.
        if armed && next.is_none_or(|n| tick < n) {
            self.timer_moved();
        }
    }

    /// A deadline may now be earlier than the one the loop parked on (a connection task or a
    /// handler set it while the loop slept): wake the loop so it parks again with the new
    /// timeout. Costs one fence and a load when the loop is not parked.
    fn timer_moved(&self) {
        if !self.in_pass.get() {
            self.signals[self.id].wake_own();
        }
    }

    // ---- time ----

    /// The shard's time (refreshed once per loop pass and when a session reads).
    pub fn now(&self) -> MonoTime {
        self.clock.borrow().now()
    }

    /// Wall-clock time derived from the shard's clock.
    pub fn wall_now(&self) -> SystemTime {
        self.clock.borrow().wall_now()
    }

    /// Reads the clock source again (the loop does this every pass; tests and tools driving a
    /// standalone context call it after moving a manual clock).
    pub fn refresh_clock(&self) -> MonoTime {
        self.clock.borrow_mut().refresh()
    }

    /// Calls [`super::ShardApp::on_timer`] with `token` once, `delay` from now (1 ms resolution,
    /// never early). Fails when the wheel is full (`runtime.timer_max_timers`, counted).
    pub fn timer_after(&self, delay: Duration, token: u64) -> Result<TimerHandle, TimerError> {
        let at = self.clock.borrow().deadline_after(delay, TICK);
        let r = self.wheel.borrow_mut().insert(at, TimerItem::App(token));
        self.timer_moved();
        self.count_timer(r)
    }

    /// Calls [`super::ShardApp::on_timer`] with `token` every `period` (at least 1 ms) until
    /// cancelled. Fails when the wheel is full (counted).
    pub fn timer_every(&self, period: Duration, token: u64) -> Result<TimerHandle, TimerError> {
        let ticks = TICK.ticks_ceil(period).max(1);
        let first = self.clock.borrow().deadline_after(period, TICK);
        let r = self
            .wheel
            .borrow_mut()
            .insert_periodic(first, ticks, TimerItem::App(token));
        self.timer_moved();
        self.count_timer(r)
    }

    /// Cancels a timer. Returns false when it already fired (one-shot) or was cancelled.
    pub fn cancel_timer(&self, handle: TimerHandle) -> bool {
        self.wheel.borrow_mut().cancel(handle)
    }

    fn count_timer(&self, r: Result<TimerHandle, TimerError>) -> Result<TimerHandle, TimerError> {
        if r.is_err() {
            ShardMetrics::add(&self.m().timers_rejected_total, 1);
        }
        r
    }

    // ---- loop ----

    /// Tells the shard's loop there is queued work for [`super::ShardApp::run_queued`]. Cost: a
    /// flag store during a loop pass (the loop is running and looks at the flag before it
    /// parks); otherwise a load of the park flag, and the loop's wake-up when it parked.
    pub fn notify(&self) {
        self.local_work.set(true);
        if !self.in_pass.get() {
            self.signals[self.id].wake_own();
        }
    }

    /// True while the shard loop runs a pass: work queued now (messages, `run_queued` work) is
    /// looked at before the loop next parks, without a wake-up.
    pub fn in_pass(&self) -> bool {
        self.in_pass.get()
    }

    /// The loop starts (true) or ends (false) the synchronous part of a pass.
    pub(crate) fn set_in_pass(&self, on: bool) {
        self.in_pass.set(on);
    }

    /// Futures of [`ShardCx::spawn_then`] still running (their results not queued yet).
    pub fn spawned_pending(&self) -> usize {
        self.spawned.get()
    }

    /// True once shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.get()
    }

    pub(crate) fn take_local_work(&self) -> bool {
        self.local_work.replace(false)
    }

    pub(crate) fn has_local_work(&self) -> bool {
        self.local_work.get()
            || !self.self_queue.borrow().is_empty()
            || !self.reap.borrow().is_empty()
    }

    /// Takes the oldest message this shard sent itself. The shard loop does this every pass;
    /// tests and tools that drive a standalone context call it themselves.
    pub fn take_message(&self) -> Option<M> {
        self.self_queue.borrow_mut().pop_front()
    }

    pub(crate) fn self_queue_len(&self) -> usize {
        self.self_queue.borrow().len()
    }

    pub(crate) fn open_counter(&self) -> &std::sync::atomic::AtomicUsize {
        &self.signals[self.id].open_sessions
    }

    /// Sends `env` to `dst` after the replies batched for `dst` (per-destination order).
    /// Inlined, with the flush out of line: the envelope (up to 120 bytes) is then built where
    /// `push_now` reads it instead of being copied once more on the way.
    #[inline]
    fn push(&self, dst: usize, env: Envelope<M>, never_drop: bool) -> Result<(), Envelope<M>> {
        if self.batched.get()
            && self
                .batches
                .borrow()
                .get(dst)
                .is_some_and(|b| !b.is_empty())
        {
            self.flush_batch(dst);
        }
        self.push_now(dst, env, never_drop)
    }

    fn push_now(&self, dst: usize, env: Envelope<M>, never_drop: bool) -> Result<(), Envelope<M>> {
        let Some(ring) = self.outs.get(dst).and_then(Option::as_ref) else {
            tracing::error!(
                shard = self.id,
                dst,
                "no mesh ring to this shard; message dropped"
            );
            return Ok(());
        };
        let m = self.m();
        let mut backlog = self.backlog.borrow_mut();
        // Keep order: once a backlog exists for `dst`, new messages queue behind it.
        let env = if backlog.len_for(dst) == 0 {
            match ring.push(env) {
                Ok(()) => {
                    ShardMetrics::add(&m.mesh_sent_total, 1);
                    if self.defer_wakes.get() && dst < 64 {
                        self.owed_wakes.set(self.owed_wakes.get() | 1 << dst);
                    } else if self.signals[dst].wake() {
                        ShardMetrics::add(&m.mesh_wakeups_total, 1);
                    }
                    return Ok(());
                }
                Err(back) => {
                    ShardMetrics::add(&m.mesh_ring_full_total, 1);
                    back
                }
            }
        } else {
            env
        };
        match backlog.push(dst, env, never_drop) {
            Ok(Queued::WithinLimit) => {}
            Ok(Queued::OverLimit) => ShardMetrics::add(&m.mesh_backlog_over_limit_total, 1),
            Err(Refused(env)) => {
                ShardMetrics::add(&m.mesh_backlog_refused_total, 1);
                return Err(env);
            }
        }
        ShardMetrics::set(&m.mesh_backlog, backlog.len() as u64);
        self.signals[dst].wake();
        Ok(())
    }

    /// Retries backlogged sends. Returns true if some remain.
    pub(crate) fn flush_backlog(&self) -> bool {
        let mut backlog = self.backlog.borrow_mut();
        if backlog.is_empty() {
            return false;
        }
        let m = self.m();
        for dst in 0..backlog.destinations() {
            let Some(ring) = self.outs[dst].as_ref() else {
                continue;
            };
            if backlog.len_for(dst) == 0 {
                continue;
            }
            let sent = backlog.drain_into(dst, |env| ring.push(env));
            if sent > 0 {
                ShardMetrics::add(&m.mesh_sent_total, sent as u64);
                self.signals[dst].wake();
            }
        }
        ShardMetrics::set(&m.mesh_backlog, backlog.len() as u64);
        !backlog.is_empty()
    }
}

#[cfg(test)]
mod envelope_size_tests {
    /// Every envelope is copied into and out of a ring slot as large as the largest one: the
    /// rare socket handover stays boxed so a slot stays one request's size (about 120 bytes for
    /// the server's message type, which is copied inline rather than by a `memcpy` call).
    #[test]
    fn a_handover_does_not_set_the_slot_size() {
        // Deliver, DeliverMany, Close and a boxed Adopt: at most 40 bytes and a tag.
        assert!(std::mem::size_of::<super::Envelope<()>>() <= 48);
        // An application message of 112 bytes (the server's `ShardMsg`) and a tag.
        assert!(std::mem::size_of::<super::Envelope<[u64; 14]>>() <= 120);
    }
}

#[cfg(test)]
mod batch_order_tests {
    use super::*;
    use crate::mesh::ring::{ring, Consumer};

    /// Shard 0 of 2 with a real ring to shard 1; `limit` frames per delivery batch.
    fn cx_to_shard_1(limit: usize) -> (ShardCx<u32>, Consumer<Envelope<u32>>) {
        let (p, c) = ring(16);
        let cx = ShardCx::new(
            0,
            2,
            Arc::new(Metrics::new(2)),
            CxSettings {
                net: NetConfig::for_tests(),
                continuity: ContinuityConfig::default(),
                continuity_metrics: Arc::new((0..2).map(|_| Default::default()).collect()),
                backlog_limit: 16,
                wheel: WheelConfig::default(),
            },
            vec![None, Some(p)],
            Arc::new((0..2).map(|_| ShardSignal::new(1)).collect()),
            Clock::new(),
        );
        cx.set_batch_limit(limit);
        (cx, c)
    }

    fn batch(env: Option<Envelope<u32>>) -> Vec<(SessionId, Vec<u8>)> {
        match env {
            Some(Envelope::DeliverBatch(b)) => super::super::batch::frames(&b)
                .map(|(s, f)| (s, f.to_vec()))
                .collect(),
            _ => panic!("expected a delivery batch"),
        }
    }

    #[test]
    fn replies_in_a_pass_go_as_one_message_at_its_end() {
        let (cx, c) = cx_to_shard_1(64);
        let (a, b) = (SessionId::new(1, 1, 1), SessionId::new(1, 2, 1));
        cx.set_in_pass(true);
        cx.deliver_with(a, 2, |v| v.extend_from_slice(b"p1"));
        cx.deliver_with(b, 2, |v| v.extend_from_slice(b"p2"));
        assert!(c.pop().is_none(), "held until the end of the pass");
        cx.flush_batches();
        cx.set_in_pass(false);
        assert_eq!(batch(c.pop()), [(a, b"p1".to_vec()), (b, b"p2".to_vec())]);
        assert!(c.pop().is_none(), "one message for both");
        assert_eq!(
            cx.m()
                .mesh_sent_total
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }

    #[test]
    fn a_full_batch_goes_at_once_and_other_messages_keep_their_order() {
        let (cx, c) = cx_to_shard_1(2);
        let s = SessionId::new(1, 1, 1);
        cx.set_in_pass(true);
        cx.deliver_with(s, 1, |v| v.push(1));
        cx.deliver_with(s, 1, |v| v.push(2));
        assert_eq!(
            batch(c.pop()).len(),
            2,
            "sent when it held runtime.mesh_batch frames"
        );
        let full = || {
            cx.m()
                .mesh_batches_full_total
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        assert_eq!(full(), 1, "the bound's hit is counted");
        // A reply, then a close and an application message to the same shard: the reply goes
        // first, or the session would close before it.
        cx.deliver_with(s, 1, |v| v.push(3));
        cx.close(s, CloseReason::Shutdown);
        cx.send(1, 7);
        assert_eq!(batch(c.pop()), [(s, vec![3])]);
        assert!(matches!(c.pop(), Some(Envelope::Close(id, _)) if id == s));
        assert!(matches!(c.pop(), Some(Envelope::App(7))));
        cx.flush_batches();
        assert!(c.pop().is_none(), "nothing left over");
        assert_eq!(full(), 1, "a batch sent early for order is not a full one");
    }

    #[test]
    fn deferred_wake_ups_wake_a_parked_consumer_once_at_the_end() {
        struct Count(std::sync::atomic::AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let woken = |c: &Arc<Count>| c.0.load(std::sync::atomic::Ordering::SeqCst);
        let wakeups = |cx: &ShardCx<u32>| {
            cx.m()
                .mesh_wakeups_total
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        let (cx, c) = cx_to_shard_1(64);
        let count = Arc::new(Count(std::sync::atomic::AtomicUsize::new(0)));
        let waker = std::task::Waker::from(count.clone());
        cx.signals[1].prepare_park(&waker);
        cx.defer_wakes();
        cx.try_send(1, 1).unwrap();
        cx.try_send(1, 2).unwrap();
        assert_eq!(woken(&count), 0, "no wake-up per message");
        cx.flush_wakes();
        assert_eq!(woken(&count), 1, "one wake-up for both");
        assert_eq!(wakeups(&cx), 1);
        assert!(matches!(c.pop(), Some(Envelope::App(1))));
        assert!(matches!(c.pop(), Some(Envelope::App(2))));
        // The deferral ended with the flush: the next message wakes at once.
        cx.signals[1].prepare_park(&waker);
        cx.try_send(1, 3).unwrap();
        assert_eq!(woken(&count), 2);
        // Nothing owed: a flush wakes nobody.
        cx.signals[1].prepare_park(&waker);
        cx.defer_wakes();
        cx.flush_wakes();
        assert_eq!(woken(&count), 2);
        assert_eq!(wakeups(&cx), 2);
    }

    #[test]
    fn outside_a_pass_a_reply_goes_alone_and_at_once() {
        let (cx, c) = cx_to_shard_1(64);
        let s = SessionId::new(1, 1, 1);
        cx.deliver_with(s, 3, |v| v.extend_from_slice(b"abc"));
        assert!(matches!(c.pop(), Some(Envelope::Deliver(id, f)) if id == s && f == b"abc"));
        // And with batching off (`set_batch_limit(0)`), also within a pass.
        cx.set_batch_limit(0);
        cx.set_in_pass(true);
        cx.deliver_with(s, 1, |v| v.push(9));
        assert!(matches!(c.pop(), Some(Envelope::Deliver(_, f)) if f == [9]));
    }
}

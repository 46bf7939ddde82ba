//! One shard: its mesh loop, its session table and the application (roles) running on it.
//!
//! The mesh loop is the shard's "loop pass": control lane first, then the backlog of sends that
//! found a ring full, new sockets from the acceptor, every incoming ring (a bounded batch each),
//! then the application's queued work. When a pass finds nothing it parks until a producer, a
//! connection task or a control command wakes it.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::net::TcpStream;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::mesh::ring::{Consumer, Producer};
use crate::mesh::{Control, ShardSignal};
use crate::net::frame::Frame;
use crate::net::session::{CloseReason, SessionId, SessionShared, SessionTable};
use crate::net::NetConfig;
use crate::telemetry::metrics::{Metrics, ShardMetrics};
use crate::time::{Clock, TickLen, TimerWheel, WheelConfig};

/// What a shard's timer wheel holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimerItem {
    /// Check whether a session has been idle for `net.idle_timeout_ms`.
    SessionIdle(SessionId),
}

const TICK: TickLen = TickLen::MILLISECOND;

/// The application a shard runs: the roles (gate, logic, …) composed by the binary. One instance per
/// shard, created on the shard's thread; it is never shared, so it needs no locks.
///
/// Callbacks must not block. Panics inside callbacks are caught by the runtime (the session being
/// served is closed), but an application should catch handler panics itself to answer the client.
pub trait ShardApp: 'static {
    /// Messages the application sends between shards.
    type Msg: Send + 'static;

    /// The shard's loop is starting (called once, before any other callback).
    fn on_start(&mut self, _cx: &ShardCx<Self::Msg>) {}

    /// A session opened on this shard.
    fn on_open(&mut self, _cx: &ShardCx<Self::Msg>, _session: SessionId) {}

    /// A complete frame arrived from one of this shard's sessions.
    fn on_frame(&mut self, cx: &ShardCx<Self::Msg>, session: SessionId, frame: Frame<'_>);

    /// A message from another shard (or from this one through [`ShardCx::send`]).
    fn on_message(&mut self, cx: &ShardCx<Self::Msg>, msg: Self::Msg);

    /// Runs queued work, at most `budget` items. Returns true if work remains.
    fn run_queued(&mut self, _cx: &ShardCx<Self::Msg>, _budget: usize) -> bool {
        false
    }

    /// A session of this shard closed (already removed from the table).
    fn on_close(&mut self, _cx: &ShardCx<Self::Msg>, _session: SessionId, _reason: &CloseReason) {}

    /// Shutdown began (called once per shard before draining).
    fn on_shutdown(&mut self, _cx: &ShardCx<Self::Msg>) {}
}

/// What a shard's application (and its connection tasks) can do: send to other shards, deliver
/// frames to sessions anywhere, close sessions.
pub struct ShardCx<M> {
    /// This shard's index.
    pub id: usize,
    /// Number of shards.
    pub shards: usize,
    /// Shared metrics (this shard writes `metrics.shards[id]`).
    pub metrics: Arc<Metrics>,
    /// Network settings.
    pub net: NetConfig,
    outs: Vec<Option<Producer<Envelope<M>>>>,
    backlog: RefCell<Vec<VecDeque<Envelope<M>>>>,
    backlog_len: Cell<usize>,
    self_queue: RefCell<VecDeque<M>>,
    signals: Arc<Vec<ShardSignal>>,
    pub(crate) sessions: RefCell<SessionTable>,
    local_work: Cell<bool>,
    pub(crate) draining: Cell<bool>,
}

/// What travels on the mesh rings.
pub(crate) enum Envelope<M> {
    /// One encoded frame for one session of the receiving shard.
    Deliver(SessionId, Vec<u8>),
    /// One encoded frame for several sessions of the receiving shard (broadcast).
    DeliverMany(Vec<SessionId>, Arc<[u8]>),
    /// Close a session of the receiving shard.
    Close(SessionId, CloseReason),
    /// An application message.
    App(M),
}

impl<M: Send + 'static> ShardCx<M> {
    /// A context attached to no mesh and no sockets, for unit tests and tools. Sends to other shards
    /// are refused (logged), deliveries find no session.
    pub fn standalone(id: usize, shards: usize, net: NetConfig) -> Self {
        ShardCx {
            id,
            shards,
            metrics: Arc::new(Metrics::new(shards.max(id + 1))),
            net,
            outs: (0..shards).map(|_| None).collect(),
            backlog: RefCell::new((0..shards).map(|_| VecDeque::new()).collect()),
            backlog_len: Cell::new(0),
            self_queue: RefCell::new(VecDeque::new()),
            signals: Arc::new(
                (0..shards.max(id + 1))
                    .map(|_| ShardSignal::new(1))
                    .collect(),
            ),
            sessions: RefCell::new(SessionTable::default()),
            local_work: Cell::new(false),
            draining: Cell::new(false),
        }
    }

    /// This shard's metrics.
    pub fn m(&self) -> &ShardMetrics {
        &self.metrics.shards[self.id]
    }

    /// Sends an application message to shard `dst` (this shard included). Never drops: a full ring
    /// keeps the message in a local backlog that is retried every pass (counted).
    pub fn send(&self, dst: usize, msg: M) {
        if dst == self.id {
            self.self_queue.borrow_mut().push_back(msg);
            self.notify();
        } else {
            self.push(dst, Envelope::App(msg));
        }
    }

    /// Queues an encoded frame for `session`, wherever it lives.
    pub fn deliver(&self, session: SessionId, frame: Vec<u8>) {
        if session.shard() == self.id {
            self.deliver_local(session, &frame);
        } else if session.shard() < self.shards {
            self.push(session.shard(), Envelope::Deliver(session, frame));
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
                self.push(shard, Envelope::DeliverMany(list, shared.clone()));
            }
        }
    }

    /// Closes `session` (wherever it lives) with `reason`; queued output is flushed first when the
    /// socket takes it.
    pub fn close(&self, session: SessionId, reason: CloseReason) {
        if session.shard() == self.id {
            if let Some(s) = self.sessions.borrow().get(session) {
                s.close(reason);
            }
        } else if session.shard() < self.shards {
            self.push(session.shard(), Envelope::Close(session, reason));
        }
    }

    /// Tells the shard's loop there is queued work for [`ShardApp::run_queued`].
    pub fn notify(&self) {
        self.local_work.set(true);
        self.signals[self.id].wake();
    }

    /// True once shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.get()
    }

    /// Live sessions on this shard.
    pub fn session_count(&self) -> usize {
        self.sessions.borrow().len()
    }

    pub(crate) fn open_counter(&self) -> &std::sync::atomic::AtomicUsize {
        &self.signals[self.id].open_sessions
    }

    fn deliver_local(&self, id: SessionId, frame: &[u8]) {
        let table = self.sessions.borrow();
        let Some(s) = table.get(id) else {
            return;
        };
        let mut out = s.out.borrow_mut();
        if out.unsent() + frame.len() > self.net.send_buffer_limit {
            drop(out);
            s.close(CloseReason::SendBufferOverflow);
            return;
        }
        out.bytes.extend_from_slice(frame);
        drop(out);
        ShardMetrics::add(&self.m().frames_out_total, 1);
        s.wake();
    }

    fn push(&self, dst: usize, env: Envelope<M>) {
        let mut backlog = self.backlog.borrow_mut();
        let m = self.m();
        // Keep order: once a backlog exists for `dst`, new messages queue behind it.
        if backlog[dst].is_empty() {
            let Some(ring) = self.outs.get(dst).and_then(Option::as_ref) else {
                tracing::error!(
                    shard = self.id,
                    dst,
                    "no mesh ring to this shard; message dropped"
                );
                return;
            };
            match ring.push(env) {
                Ok(()) => {
                    ShardMetrics::add(&m.mesh_sent_total, 1);
                    if self.signals[dst].is_parked() {
                        ShardMetrics::add(&m.mesh_wakeups_total, 1);
                    }
                    self.signals[dst].wake();
                    return;
                }
                Err(back) => {
                    backlog[dst].push_back(back);
                }
            }
        } else {
            backlog[dst].push_back(env);
        }
        ShardMetrics::add(&m.mesh_ring_full_total, 1);
        self.backlog_len.set(self.backlog_len.get() + 1);
        m.mesh_backlog
            .store(self.backlog_len.get() as u64, Ordering::Relaxed);
        self.signals[dst].wake();
    }

    /// Retries backlogged sends. Returns true if some remain.
    fn flush_backlog(&self) -> bool {
        if self.backlog_len.get() == 0 {
            return false;
        }
        let mut backlog = self.backlog.borrow_mut();
        let mut left = 0;
        for (dst, q) in backlog.iter_mut().enumerate() {
            let Some(ring) = self.outs[dst].as_ref() else {
                continue;
            };
            let mut sent = false;
            while let Some(env) = q.pop_front() {
                match ring.push(env) {
                    Ok(()) => {
                        sent = true;
                        ShardMetrics::add(&self.m().mesh_sent_total, 1);
                    }
                    Err(back) => {
                        q.push_front(back);
                        break;
                    }
                }
            }
            if sent {
                self.signals[dst].wake();
            }
            left += q.len();
        }
        self.backlog_len.set(left);
        self.m().mesh_backlog.store(left as u64, Ordering::Relaxed);
        left > 0
    }
}

/// Everything a shard thread needs, built by [`crate::runtime::Server::start`].
pub(crate) struct ShardParts<M> {
    pub id: usize,
    pub shards: usize,
    pub outs: Vec<Option<Producer<Envelope<M>>>>,
    pub ins: Vec<Option<Consumer<Envelope<M>>>>,
    pub accept_in: Consumer<TcpStream>,
    pub signals: Arc<Vec<ShardSignal>>,
    pub quiet: Arc<Vec<AtomicBool>>,
    pub metrics: Arc<Metrics>,
    pub net: NetConfig,
    pub mesh_batch: usize,
    pub drain_timeout: Duration,
    pub wheel: WheelConfig,
}

/// The shard's state, shared by its mesh loop and its connection tasks (same thread).
pub(crate) struct ShardState<A: ShardApp> {
    pub cx: ShardCx<A::Msg>,
    pub app: RefCell<A>,
    pub read_buf: RefCell<Box<[u8]>>,
    ins: Vec<Option<Consumer<Envelope<A::Msg>>>>,
    accept_in: Consumer<TcpStream>,
    quiet: Arc<Vec<AtomicBool>>,
    mesh_batch: usize,
    drain_timeout: Duration,
    /// The shard's clock, refreshed once per loop pass (and by a session when it reads).
    pub clock: RefCell<Clock>,
    /// The shard's timers.
    pub wheel: RefCell<TimerWheel<TimerItem>>,
    /// `net.idle_timeout_ms`, if on.
    pub idle_timeout: Option<Duration>,
}

impl<A: ShardApp> ShardState<A> {
    fn signal(&self) -> &ShardSignal {
        &self.cx.signals[self.cx.id]
    }

    /// Schedules the idle check of `sess` at `last_seen + idle_timeout` (no-op when off).
    pub(crate) fn arm_idle_timer(&self, sess: &SessionShared) {
        let Some(timeout) = self.idle_timeout else {
            return;
        };
        let at = TICK.tick_of(sess.last_seen.get().saturating_add(timeout)) + 1;
        match self
            .wheel
            .borrow_mut()
            .insert(at, TimerItem::SessionIdle(sess.id))
        {
            Ok(h) => sess.idle_timer.set(Some(h)),
            Err(e) => {
                ShardMetrics::add(&self.cx.m().timers_rejected_total, 1);
                tracing::warn!(session = %sess.id, error = %e, "cannot arm idle timer");
            }
        }
    }

    /// Fires due timers (bounded per pass). Returns true if any fired.
    fn run_timers(&self) -> bool {
        let now = self.clock.borrow_mut().refresh();
        let mut fired = Vec::new();
        let outcome = self
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
                TimerItem::SessionIdle(id) => self.check_idle(id, now),
            }
        }
        let stats = self.wheel.borrow().stats();
        m.timers_pending.store(stats.pending, Ordering::Relaxed);
        m.clock_backwards_total.store(
            self.clock.borrow().stats().backwards_clamped,
            Ordering::Relaxed,
        );
        !fired.is_empty()
    }

    fn check_idle(&self, id: SessionId, now: crate::time::MonoTime) {
        let Some(timeout) = self.idle_timeout else {
            return;
        };
        let table = self.cx.sessions.borrow();
        let Some(sess) = table.get(id) else {
            return;
        };
        sess.idle_timer.set(None);
        if now.saturating_since(sess.last_seen.get()) >= timeout {
            sess.close(CloseReason::IdleTimeout);
        } else {
            self.arm_idle_timer(sess);
        }
    }

    /// How long the loop may park before the next timer is due.
    fn park_timeout(&self) -> Option<Duration> {
        let next = self.wheel.borrow().next_deadline()?;
        Some(self.clock.borrow().until_tick(next, TICK))
    }

    fn has_input(&self) -> bool {
        self.signal().control_pending()
            || self.cx.local_work.get()
            || !self.cx.self_queue.borrow().is_empty()
            || !self.accept_in.is_empty()
            || self.ins.iter().flatten().any(|c| !c.is_empty())
    }
}

/// Runs one shard until it has shut down. Called inside the shard's runtime.
pub(crate) async fn run<A: ShardApp>(parts: ShardParts<A::Msg>, make_app: impl FnOnce() -> A) {
    let read_buf = vec![0u8; parts.net.read_buffer.max(4096)].into_boxed_slice();
    let cx = ShardCx {
        id: parts.id,
        shards: parts.shards,
        metrics: parts.metrics,
        net: parts.net,
        outs: parts.outs,
        backlog: RefCell::new((0..parts.shards).map(|_| VecDeque::new()).collect()),
        backlog_len: Cell::new(0),
        self_queue: RefCell::new(VecDeque::new()),
        signals: parts.signals,
        sessions: RefCell::new(SessionTable::default()),
        local_work: Cell::new(false),
        draining: Cell::new(false),
    };
    let mut clock = Clock::new();
    let now = clock.refresh();
    let wheel = match TimerWheel::starting_at(parts.wheel, TICK.tick_of(now)) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(shard = parts.id, error = %e, "bad timer wheel settings; using defaults");
            TimerWheel::starting_at(WheelConfig::default(), TICK.tick_of(now))
                .expect("default wheel settings are valid")
        }
    };
    let idle_timeout =
        (cx.net.idle_timeout_ms > 0).then(|| Duration::from_millis(cx.net.idle_timeout_ms));
    let st = Rc::new(ShardState {
        clock: RefCell::new(clock),
        wheel: RefCell::new(wheel),
        idle_timeout,
        cx,
        app: RefCell::new(make_app()),
        read_buf: RefCell::new(read_buf),
        ins: parts.ins,
        accept_in: parts.accept_in,
        quiet: parts.quiet,
        mesh_batch: parts.mesh_batch,
        drain_timeout: parts.drain_timeout,
    });
    mesh_loop(st).await;
}

async fn mesh_loop<A: ShardApp>(st: Rc<ShardState<A>>) {
    let id = st.cx.id;
    let alloc_duties = crate::runtime::allocator_duties();
    if alloc_duties {
        if let Err(e) = lattice_alloc::register_heap(&format!("shard-{id}")) {
            tracing::warn!(shard = id, error = %e, "allocator: no own heap; using the shared fallback heap");
        }
    }
    guarded(&st, "on_start", |app| app.on_start(&st.cx));
    let mut drain_deadline: Option<Instant> = None;
    loop {
        let mut worked = false;
        for cmd in st.signal().take_control() {
            match cmd {
                Control::Shutdown if drain_deadline.is_none() => {
                    tracing::info!(
                        shard = id,
                        sessions = st.cx.session_count(),
                        "shutdown: draining"
                    );
                    st.cx.draining.set(true);
                    drain_deadline = Some(Instant::now() + st.drain_timeout);
                    guarded(&st, "on_shutdown", |app| app.on_shutdown(&st.cx));
                    for s in st.cx.sessions.borrow().iter() {
                        s.wake();
                    }
                }
                Control::Shutdown => {}
            }
            worked = true;
        }
        if st.run_timers() {
            worked = true;
        }
        let backlog_left = st.cx.flush_backlog();
        while let Some(stream) = st.accept_in.pop() {
            worked = true;
            crate::net::conn::adopt(&st, stream);
        }
        for src in 0..st.ins.len() {
            let Some(ring) = st.ins[src].as_ref() else {
                continue;
            };
            for _ in 0..st.mesh_batch {
                let Some(env) = ring.pop() else { break };
                worked = true;
                ShardMetrics::add(&st.cx.m().mesh_received_total, 1);
                dispatch(&st, env);
            }
        }
        loop {
            let next = st.cx.self_queue.borrow_mut().pop_front();
            let Some(msg) = next else { break };
            worked = true;
            guarded(&st, "on_message", |app| app.on_message(&st.cx, msg));
        }
        if alloc_duties {
            lattice_alloc::flush_thread();
            if id == 0 {
                lattice_alloc::central_pool_pass(64);
            }
        }
        st.cx.local_work.set(false);
        let more = guarded(&st, "run_queued", |app| app.run_queued(&st.cx, 256)).unwrap_or(false);
        if more {
            st.cx.local_work.set(true);
            worked = true;
        }

        if let Some(deadline) = drain_deadline {
            if drain_step(&st, worked || backlog_left, deadline) {
                return;
            }
            monoio::time::sleep(Duration::from_millis(2)).await;
            continue;
        }
        if worked {
            YieldNow(false).await;
        } else if backlog_left {
            monoio::time::sleep(Duration::from_micros(100)).await;
        } else {
            let park = Park {
                st: &st,
                armed: false,
            };
            match st.park_timeout() {
                None => park.await,
                Some(d) => {
                    let mut park = std::pin::pin!(park);
                    let mut sleep = std::pin::pin!(monoio::time::sleep(d));
                    std::future::poll_fn(|cx| {
                        if park.as_mut().poll(cx).is_ready() || sleep.as_mut().poll(cx).is_ready() {
                            Poll::Ready(())
                        } else {
                            Poll::Pending
                        }
                    })
                    .await;
                }
            }
        }
    }
}

/// One drain check. Returns true when the shard may stop.
fn drain_step<A: ShardApp>(st: &ShardState<A>, busy: bool, deadline: Instant) -> bool {
    let id = st.cx.id;
    let unsent: usize = st
        .cx
        .sessions
        .borrow()
        .iter()
        .map(|s| s.out.borrow().unsent())
        .sum();
    let locally_quiet = !busy && unsent == 0 && !st.has_input();
    st.quiet[id].store(locally_quiet, Ordering::SeqCst);
    let all_quiet =
        locally_quiet && st.quiet.iter().all(|q| q.load(Ordering::SeqCst)) && !st.has_input();
    let timed_out = Instant::now() >= deadline;
    if all_quiet || timed_out {
        let table = st.cx.sessions.borrow();
        if table.is_empty() {
            tracing::info!(shard = id, "shutdown: shard stopped");
            return true;
        }
        if timed_out {
            tracing::warn!(
                shard = id,
                sessions = table.len(),
                unsent,
                "shutdown: drain timeout, closing sessions with unsent output"
            );
        }
        for s in table.iter() {
            s.close(CloseReason::Shutdown);
        }
    }
    false
}

fn dispatch<A: ShardApp>(st: &Rc<ShardState<A>>, env: Envelope<A::Msg>) {
    match env {
        Envelope::Deliver(s, frame) => st.cx.deliver_local(s, &frame),
        Envelope::DeliverMany(list, frame) => {
            for s in list {
                st.cx.deliver_local(s, &frame);
            }
        }
        Envelope::Close(s, reason) => st.cx.close(s, reason),
        Envelope::App(msg) => {
            guarded(st, "on_message", |app| app.on_message(&st.cx, msg));
        }
    }
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
            ShardMetrics::add(&st.cx.m().handler_panics_total, 1);
            tracing::error!(shard = st.cx.id, what, panic = %panic_message(&p), "application panicked; shard continues");
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

pub(crate) struct YieldNow(pub bool);

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

struct Park<'a, A: ShardApp> {
    st: &'a ShardState<A>,
    armed: bool,
}

impl<A: ShardApp> Drop for Park<'_, A> {
    fn drop(&mut self) {
        // Woken by the timer instead: we are running, so producers need not wake us.
        if self.armed {
            self.st.signal().cancel_park();
        }
    }
}

impl<A: ShardApp> Future for Park<'_, A> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let sig = self.st.signal();
        if self.armed {
            sig.cancel_park();
            return Poll::Ready(());
        }
        self.armed = true;
        sig.prepare_park(cx.waker());
        if self.st.has_input() {
            sig.cancel_park();
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// Registers a new session in the table (called by the connection set-up).
pub(crate) fn new_session<A: ShardApp>(
    st: &ShardState<A>,
    peer: std::net::SocketAddr,
) -> Rc<SessionShared> {
    let id = st.cx.id;
    st.cx.sessions.borrow_mut().insert_with(id, |sid| {
        Rc::new(SessionShared {
            id: sid,
            peer,
            out: RefCell::default(),
            closing: RefCell::default(),
            waker: Cell::new(None),
            last_seen: Cell::new(crate::time::MonoTime(0)),
            idle_timer: Cell::new(None),
        })
    })
}

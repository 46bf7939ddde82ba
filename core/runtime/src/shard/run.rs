//! The shard loop: one "pass" drains the control lane, fires due timers, retries the backlog, adopts
//! new sockets, drains every incoming ring (a bounded batch each), runs messages the shard sent
//! itself, then the application's queued work (bounded by `runtime.queued_budget`). When a pass
//! finds nothing it parks until a producer, a connection task, a control command or the next timer
//! wakes it.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use lattice_wire::CloseReason;

use super::app::ShardApp;
use super::cx::{Adoption, CxSettings, Envelope, ShardCx};
use super::state::{guarded, AcceptIn, ShardState};
use crate::mesh::ring::{Consumer, Producer};
use crate::mesh::{Control, ShardSignal};
use crate::telemetry::metrics::{Metrics, ShardMetrics};
use crate::time::Clock;

/// Everything a shard thread needs, built by [`crate::Server::start`].
pub(crate) struct ShardParts<M> {
    pub id: usize,
    pub shards: usize,
    pub outs: Vec<Option<Producer<Envelope<M>>>>,
    pub ins: Vec<Option<Consumer<Envelope<M>>>>,
    /// One ring per listener, with the listener's protocol stack and TLS flag.
    pub accept_in: Vec<AcceptIn>,
    /// What TLS sessions need, when a listener has TLS.
    pub tls: Option<crate::net::tls::ShardTls>,
    pub signals: Arc<Vec<ShardSignal>>,
    pub quiet: Arc<Vec<AtomicBool>>,
    pub metrics: Arc<Metrics>,
    pub settings: CxSettings,
    pub mesh_batch: usize,
    pub queued_budget: usize,
    pub drain_timeout: Duration,
}

/// Runs one shard until it has shut down. Called inside the shard's runtime.
pub(crate) async fn run<A: ShardApp>(parts: ShardParts<A::Msg>, make_app: impl FnOnce() -> A) {
    let read_buf = vec![0u8; parts.settings.net.read_buffer.max(4096)].into_boxed_slice();
    let mut clock = Clock::new();
    clock.refresh();
    let cx = ShardCx::new(
        parts.id,
        parts.shards,
        parts.metrics,
        parts.settings,
        parts.outs,
        parts.signals,
        clock,
    );
    cx.set_batch_limit(parts.mesh_batch);
    let st = Rc::new(ShardState {
        cx,
        app: RefCell::new(make_app()),
        read_buf: RefCell::new(read_buf),
        tls_plain: RefCell::new(Vec::new()),
        ins: parts.ins,
        accept_in: parts.accept_in,
        tls: parts.tls,
        quiet: parts.quiet,
        mesh_batch: parts.mesh_batch,
        queued_budget: parts.queued_budget,
        drain_timeout: parts.drain_timeout,
        warns: RefCell::new(crate::telemetry::warn_limit::WarnLimiter::from_defaults()),
    });
    mesh_loop(st).await;
}

async fn mesh_loop<A: ShardApp>(st: Rc<ShardState<A>>) {
    let id = st.cx.id;
    let alloc_duties = crate::allocator_duties();
    if alloc_duties {
        if let Err(e) = lattice_alloc::register_heap(&format!("shard-{id}")) {
            tracing::warn!(shard = id, error = %e, "allocator: no own heap; using the shared fallback heap");
        }
    }
    guarded(&st, "on_start", |app| app.on_start(&st.cx));
    let mut drain_deadline: Option<Instant> = None;
    loop {
        let mut worked = false;
        // Nothing below awaits until the end of the pass: no connection task runs meanwhile.
        st.cx.set_in_pass(true);
        st.cx.defer_wakes();
        ShardMetrics::add(&st.cx.m().loop_passes_total, 1);
        for cmd in st.cx.signals[id].take_control() {
            match cmd {
                Control::Shutdown if drain_deadline.is_none() => {
                    ShardMetrics::add(&st.cx.cm().control_commands_total, 1);
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
                other => st.run_control(other),
            }
            worked = true;
        }
        if st.reap() {
            worked = true;
        }
        if st.run_timers() {
            worked = true;
        }
        let backlog_left = st.cx.flush_backlog();
        for a in &st.accept_in {
            while let Some(stream) = a.ring.pop() {
                worked = true;
                crate::net::conn::adopt(&st, stream, &a.stack, a.tls);
            }
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
        // Only what was queued before this pass: a message that queues another runs next pass.
        let queued = st.cx.self_queue_len();
        ShardMetrics::set(&st.cx.m().self_queue_depth, queued as u64);
        for _ in 0..queued {
            let Some(msg) = st.cx.take_message() else {
                break;
            };
            worked = true;
            guarded(&st, "on_message", |app| app.on_message(&st.cx, msg));
        }
        if alloc_duties {
            lattice_alloc::flush_thread();
            if id == 0 {
                lattice_alloc::central_pool_pass(64);
            }
        }
        st.cx.take_local_work();
        let budget = st.queued_budget;
        let more =
            guarded(&st, "run_queued", |app| app.run_queued(&st.cx, budget)).unwrap_or(false);
        if more {
            st.cx.notify();
            worked = true;
        }
        // The replies this pass wrote for other shards' sessions: one mesh message per shard.
        st.cx.flush_batches();
        st.cx.flush_wakes();
        st.cx.set_in_pass(false);

        if let Some(deadline) = drain_deadline {
            if drain_step(&st, worked || backlog_left, deadline) {
                st.flush_suppressed();
                guarded(&st, "on_stopped", |app| app.on_stopped(&st.cx));
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
            // The park protocol (announce, re-check every input, sleep) lives with the signal,
            // where the loom model checks it.
            let park = st.cx.signals[id].park(|| st.has_input());
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
        .map(|s| s.session.borrow().unsent())
        .sum();
    // Work in flight (a component's awaited call, a request sent to a peer node) will produce
    // replies: wait for it as for unsent output.
    let spawned = st.cx.spawned_pending();
    let app_pending =
        guarded(st, "has_pending_work", |app| app.has_pending_work(&st.cx)).unwrap_or(false);
    let in_flight = spawned > 0 || app_pending;
    let locally_quiet = !busy && unsent == 0 && !in_flight && !st.has_input();
    st.quiet[id].store(locally_quiet, Ordering::SeqCst);
    let all_quiet =
        locally_quiet && st.quiet.iter().all(|q| q.load(Ordering::SeqCst)) && !st.has_input();
    let timed_out = Instant::now() >= deadline;
    if all_quiet || timed_out {
        let table = st.cx.sessions.borrow();
        if table.is_empty() {
            // "shutdown: shard stopped" is logged when the thread ends (`Server::start`), after
            // `on_stopped` and the runtime's teardown: until then the shard is still waited for.
            return true;
        }
        if timed_out {
            tracing::warn!(
                shard = id,
                sessions = table.len(),
                unsent,
                awaited_calls = spawned,
                awaited_peers = app_pending,
                "shutdown: drain timeout, closing sessions with unsent output or work in flight"
            );
        }
        let cells: Vec<_> = table.iter().cloned().collect();
        drop(table);
        for s in cells {
            let attached = {
                let mut session = s.session.borrow_mut();
                session.close(CloseReason::Shutdown);
                session.is_attached()
            };
            if attached {
                s.wake();
            } else {
                // A detached session has no task to end it: the next pass removes it.
                st.cx.reap_later(s);
            }
        }
    }
    false
}

fn dispatch<A: ShardApp>(st: &Rc<ShardState<A>>, env: Envelope<A::Msg>) {
    match env {
        Envelope::Deliver(s, frame) => {
            debug_assert_eq!(s.shard(), st.cx.id, "delivery routed to the wrong shard");
            st.cx.deliver_local(s, &frame)
        }
        Envelope::DeliverBatch(bytes) => st.cx.deliver_batch(&bytes),
        Envelope::DeliverMany(list, frame) => {
            debug_assert!(list.iter().all(|s| s.shard() == st.cx.id));
            for s in list {
                st.cx.deliver_local(s, &frame);
            }
        }
        Envelope::Close(s, reason) => st.cx.close(s, reason),
        Envelope::CloseKeepingReplay(s, reason) => st.cx.close_keeping_replay(s, reason),
        Envelope::Adopt(h) => {
            let Adoption {
                stream,
                peer,
                leftover,
                layer,
                msg,
            } = *h;
            st.adopt_handed(stream, peer, leftover, layer, msg)
        }
        Envelope::App(msg) => {
            guarded(st, "on_message", |app| app.on_message(&st.cx, msg));
        }
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

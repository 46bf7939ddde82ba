//! Model check (loom) of the mesh: the real SPSC [`ring`] and the real park/wake protocol of
//! [`ShardSignal`] (its [`ShardSignal::park`] future is what the shard loop awaits), built on
//! loom's atomics, cells and locks through the mesh's `sync` shim. Loom runs each model under
//! every interleaving (within the preemption bound) and every value the memory model lets a
//! load return, and reports a data race on a ring slot, a leaked `Arc`, or a deadlock — a consumer
//! asleep with nobody left to wake it — as a failure.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release -p lattice-runtime --test loom_mesh`
//! (with a separate `CARGO_TARGET_DIR`, since the cfg changes every artifact; `deploy/ci/mesh.sh`).
#![cfg(loom)]

use std::future::Future;
use std::task::{Context, Wake, Waker};

use lattice_runtime::mesh::ring::{ring, Consumer};
use lattice_runtime::mesh::{Control, ShardSignal};
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

fn model() -> loom::model::Builder {
    let mut b = loom::model::Builder::new();
    // Bounded like the allocator's model: 3 preemptions reach every ordering of a 2-thread
    // handshake this small, and keep the run to seconds.
    b.preemption_bound = Some(3);
    b
}

/// A message that records its own drop, so the model can check every value is dropped exactly
/// once wherever it ends (received, handed back by a full ring, or left in the ring at the end).
struct Msg {
    seq: usize,
    drops: Arc<Vec<AtomicUsize>>,
}

impl Drop for Msg {
    fn drop(&mut self) {
        self.drops[self.seq].fetch_add(1, Ordering::Relaxed);
    }
}

fn drop_counters(n: usize) -> Arc<Vec<AtomicUsize>> {
    Arc::new((0..n).map(|_| AtomicUsize::new(0)).collect())
}

fn assert_each_dropped_once(drops: &[AtomicUsize]) {
    for (seq, d) in drops.iter().enumerate() {
        assert_eq!(d.load(Ordering::Relaxed), 1, "message {seq} dropped ≠ once");
    }
}

#[test]
fn ring_delivers_every_message_once_in_order() {
    // Capacity 2, four messages: the producer meets a full ring (twice over, so slots are reused
    // after a wrap) and the consumer an empty one.
    const N: usize = 4;
    model().check(|| {
        let drops = drop_counters(N);
        let (p, c) = ring::<Msg>(2);
        let d = drops.clone();
        let producer = thread::spawn(move || {
            for seq in 0..N {
                let mut msg = Msg {
                    seq,
                    drops: d.clone(),
                };
                // A full ring hands the message back; retry it (the mesh keeps it in its
                // backlog instead), yielding so loom schedules the consumer.
                while let Err(back) = p.push(msg) {
                    msg = back;
                    thread::yield_now();
                }
            }
        });
        let mut got = Vec::new();
        while got.len() < N {
            match c.pop() {
                Some(m) => got.push(m.seq),
                None => thread::yield_now(),
            }
        }
        producer.join().unwrap();
        assert!(c.pop().is_none(), "a message delivered twice");
        assert_eq!(got, [0, 1, 2, 3], "lost or reordered");
        drop(c);
        assert_each_dropped_once(&drops);
    });
}

#[test]
fn unreceived_messages_are_dropped_exactly_once() {
    // The producer sends three into a 2-slot ring without retrying and then drops its half; the
    // consumer takes at most one and drops its half concurrently, so either thread may run the
    // ring's own drop, with the ring full, empty or in between.
    const N: usize = 3;
    model().check(|| {
        let drops = drop_counters(N);
        let (p, c) = ring::<Msg>(2);
        let d = drops.clone();
        let producer = thread::spawn(move || {
            let mut refused = 0;
            for seq in 0..N {
                let msg = Msg {
                    seq,
                    drops: d.clone(),
                };
                if p.push(msg).is_err() {
                    refused += 1; // the handed-back message is dropped here
                }
            }
            drop(p);
            refused
        });
        let first = c.pop().map(|m| m.seq);
        drop(c);
        let refused = producer.join().unwrap();
        if let Some(seq) = first {
            assert_eq!(seq, 0, "the first message out is the first in");
        }
        assert!(refused <= 1, "a 2-slot ring refused {refused} of 3");
        assert_each_dropped_once(&drops);
    });
}

/// The consumer's executor: a waker that counts its wakes and unparks the consumer thread, and a
/// `block_on` that sleeps (loom-parks) while the future is pending. A lost wake-up leaves the
/// consumer parked forever, which loom reports as a deadlock.
struct Unparker {
    thread: thread::Thread,
    wakes: std::sync::Arc<AtomicUsize>,
}

impl Wake for Unparker {
    fn wake(self: std::sync::Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
        self.thread.unpark();
    }
}

fn counting_waker() -> (Waker, std::sync::Arc<AtomicUsize>) {
    let wakes = std::sync::Arc::new(AtomicUsize::new(0));
    let waker = Waker::from(std::sync::Arc::new(Unparker {
        thread: thread::current(),
        wakes: wakes.clone(),
    }));
    (waker, wakes)
}

/// Polls `fut` to completion on this thread; returns how many polls returned `Pending`.
fn block_on(waker: &Waker, fut: impl Future<Output = ()>) -> usize {
    let mut fut = std::pin::pin!(fut);
    let mut cx = Context::from_waker(waker);
    let mut pendings = 0;
    while fut.as_mut().poll(&mut cx).is_pending() {
        pendings += 1;
        thread::park();
    }
    pendings
}

/// The shard loop's shape, reduced to the mesh: drain the ring, and park when it is empty.
/// Returns (messages received in order, parks announced, parks that slept).
fn consume(
    sig: &ShardSignal,
    c: &Consumer<usize>,
    n: usize,
    waker: &Waker,
) -> (Vec<usize>, usize, usize) {
    let (mut got, mut announced, mut slept) = (Vec::new(), 0, 0);
    loop {
        while let Some(v) = c.pop() {
            got.push(v);
        }
        if got.len() == n {
            return (got, announced, slept);
        }
        announced += 1;
        slept += block_on(waker, sig.park(|| !c.is_empty()));
    }
}

#[test]
fn parked_consumer_is_never_left_asleep_with_a_message() {
    const N: usize = 3;
    model().check(|| {
        let sig = Arc::new(ShardSignal::new(4));
        // Room for every message: the producer never waits, so only park/wake can lose one.
        let (p, c) = ring::<usize>(N);
        let s = sig.clone();
        let producer = thread::spawn(move || {
            for v in 0..N {
                p.push(v).unwrap();
                s.wake();
            }
        });
        let (waker, wakes) = counting_waker();
        let (got, announced, slept) = consume(&sig, &c, N, &waker);
        producer.join().unwrap();
        assert_eq!(got, [0, 1, 2]);
        // Each announced park is claimed by at most one producer (`parked` is swapped back), so
        // wakes never outnumber parks; a park that slept was ended by one of those wakes.
        let woken = wakes.load(Ordering::SeqCst);
        assert!(woken <= announced, "{woken} wakes for {announced} parks");
        assert!(slept <= woken, "{slept} sleeps ended by {woken} wakes");
        // The consumer is running now: a wake is a no-op, the waker is not called.
        assert!(!sig.is_parked());
        sig.wake();
        assert_eq!(wakes.load(Ordering::SeqCst), woken);
    });
}

#[test]
fn wake_of_a_running_consumer_is_a_no_op() {
    // The producer publishes and wakes while the consumer drains without ever parking: the
    // waker from an earlier, completed park must not be called.
    model().check(|| {
        let sig = Arc::new(ShardSignal::new(4));
        let (p, c) = ring::<usize>(2);
        let (waker, wakes) = counting_waker();
        // One park that ends before the producer starts: it leaves the waker stored.
        p.push(7).unwrap();
        assert_eq!(block_on(&waker, sig.park(|| !c.is_empty())), 0);
        assert_eq!(c.pop(), Some(7));
        let s = sig.clone();
        let producer = thread::spawn(move || {
            p.push(8).unwrap();
            s.wake();
        });
        let got = loop {
            if let Some(v) = c.pop() {
                break v;
            }
            thread::yield_now();
        };
        producer.join().unwrap();
        assert_eq!(got, 8);
        assert_eq!(
            wakes.load(Ordering::SeqCst),
            0,
            "a running consumer was woken"
        );
    });
}

#[test]
fn control_command_wakes_a_parking_consumer() {
    // The control lane (a mutex-guarded queue plus a pending flag) feeds the same park: a command
    // pushed while the consumer parks is taken, never slept on.
    model().check(|| {
        let sig = Arc::new(ShardSignal::new(1));
        let s = sig.clone();
        let admin = thread::spawn(move || s.push_control(Control::Shutdown).unwrap());
        let (waker, _wakes) = counting_waker();
        let mut cmds = Vec::new();
        loop {
            cmds.extend(sig.take_control());
            if !cmds.is_empty() {
                break;
            }
            block_on(&waker, sig.park(|| sig.control_pending()));
        }
        admin.join().unwrap();
        assert_eq!(cmds, [Control::Shutdown]);
        assert!(sig.take_control().is_empty(), "a command taken twice");
    });
}

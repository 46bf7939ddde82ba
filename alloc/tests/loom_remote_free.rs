//! Model check (loom) of the remote-free lanes: the real [`Ring`] and [`DutyFlag`] types, with
//! the central pool's routing (pop from a heap's `out` ring, push to the owner's `back` ring,
//! park on a full ring, retry parked first) and the abandoned-heap hand-over re-stated on top.
//! Checks that no batch is lost or delivered twice under every interleaving loom explores, and
//! that the central state and an abandoned heap's state are never touched by two threads at once.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release -p lattice-alloc --test loom_remote_free`
//! (with a separate `CARGO_TARGET_DIR`, since the cfg changes every artifact).
#![cfg(loom)]

use lattice_alloc::ring::Ring;
use lattice_alloc::sync::DutyFlag;
use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicU32, Ordering};
use loom::sync::Arc;
use loom::thread;

struct Central {
    flag: DutyFlag,
    /// parked messages per destination (0 = owner, 1 = heap A)
    parked: UnsafeCell<[Vec<usize>; 2]>,
}

/// Heap A frees blocks owned by heap O: batches (values 1..=3) travel A.out → central →
/// O.back; O empties each and sends the node home (value | RETURN) over O.out → central →
/// A.back, as `heap.rs` does with batch nodes.
struct World {
    a_out: Ring,
    a_back: Ring,
    o_out: Ring,
    o_back: Ring,
    central: Central,
}

const RETURN: usize = 0x100;

/// One central pass; returns false if another thread held the duty.
fn pass(w: &World) -> bool {
    if !w.central.flag.try_acquire() {
        return false;
    }
    w.central.parked.with_mut(|p| {
        // SAFETY: the flag gives us exclusive access (loom checks it).
        let parked = unsafe { &mut *p };
        let backs = [&w.o_back, &w.a_back];
        // parked first
        for d in 0..2 {
            parked[d].retain(|&m| !backs[d].push(m));
        }
        for out in [&w.a_out, &w.o_out] {
            while let Some(m) = out.pop() {
                let d = if m & RETURN != 0 { 1 } else { 0 };
                if !parked[d].is_empty() || !backs[d].push(m) {
                    parked[d].push(m);
                }
            }
        }
    });
    w.central.flag.release();
    true
}

/// Heap O's drain: frees the batch (records it) and sends the node home; a full ring stalls
/// the return, which goes out at the next flush.
fn owner_drain(w: &World, got: &mut Vec<usize>, stalled: &mut Vec<usize>) {
    stalled.retain(|&m| !w.o_out.push(m));
    while let Some(m) = w.o_back.pop() {
        assert_eq!(m & RETURN, 0, "a return reached the owner");
        got.push(m);
        if !w.o_out.push(m | RETURN) {
            stalled.push(m | RETURN);
        }
    }
}

fn model() -> loom::model::Builder {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b
}

#[test]
fn batches_and_node_returns_are_delivered_exactly_once() {
    model().check(|| {
        let w = Arc::new(World {
            a_out: Ring::new(),
            a_back: Ring::new(),
            o_out: Ring::new(),
            o_back: Ring::new(),
            central: Central {
                flag: DutyFlag::new(),
                parked: UnsafeCell::new([Vec::new(), Vec::new()]),
            },
        });
        // heap A: sends 3 batches over a 2-slot ring; on a full ring it runs a pass and
        // retries once, else keeps the batch stalled; it also collects its returned nodes
        let wa = w.clone();
        let a = thread::spawn(move || {
            let mut pending: Vec<usize> = vec![1, 2, 3];
            let mut homes = Vec::new();
            for _ in 0..3 {
                if let Some(&b) = pending.first() {
                    if wa.a_out.push(b) || (pass(&wa) && wa.a_out.push(b)) {
                        pending.remove(0);
                    }
                }
                while let Some(m) = wa.a_back.pop() {
                    homes.push(m);
                }
            }
            (pending, homes)
        });
        // the owner drains (and runs the duty once, as a heap that is owed frees does)
        let wo = w.clone();
        let o = thread::spawn(move || {
            let (mut got, mut stalled) = (Vec::new(), Vec::new());
            owner_drain(&wo, &mut got, &mut stalled);
            pass(&wo);
            owner_drain(&wo, &mut got, &mut stalled);
            (got, stalled)
        });
        let (left, mut homes) = a.join().unwrap();
        let (mut got, mut stalled) = o.join().unwrap();
        // shutdown (what settle() does): flush what is left, pass, drain, until quiet
        let mut left = left;
        for _ in 0..12 {
            left.retain(|&b| !w.a_out.push(b));
            assert!(pass(&w), "nobody else holds the duty now");
            owner_drain(&w, &mut got, &mut stalled);
            assert!(pass(&w));
            while let Some(m) = w.a_back.pop() {
                homes.push(m);
            }
        }
        assert!(left.is_empty() && stalled.is_empty());
        got.sort_unstable();
        homes.sort_unstable();
        assert_eq!(got, vec![1, 2, 3], "lost or duplicated batch");
        assert_eq!(
            homes,
            vec![1 | RETURN, 2 | RETURN, 3 | RETURN],
            "lost or duplicated node return"
        );
    });
}

const ACTIVE: u32 = 1;
const ABANDONED: u32 = 2;
const CENTRAL: u32 = 3;

#[test]
fn abandoned_heap_has_one_owner_at_a_time() {
    model().check(|| {
        let state = Arc::new(AtomicU32::new(ACTIVE));
        let local = Arc::new(UnsafeCell::new(0u32)); // the heap's owner-local state
                                                     // the exiting thread: last touch of its heap, then hand-over
        let (s1, l1) = (state.clone(), local.clone());
        let exiting = thread::spawn(move || {
            // SAFETY: we own the heap while ACTIVE.
            l1.with_mut(|p| unsafe { *p += 1 });
            s1.store(ABANDONED, Ordering::Release);
        });
        // central pool servicing abandoned heaps
        let (s2, l2) = (state.clone(), local.clone());
        let central = thread::spawn(move || {
            if s2
                .compare_exchange(ABANDONED, CENTRAL, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                // SAFETY: the CAS made us the owner.
                l2.with_mut(|p| unsafe { *p += 10 });
                s2.store(ABANDONED, Ordering::Release);
            }
        });
        // a new thread adopting an abandoned heap
        let adopted = state
            .compare_exchange(ABANDONED, ACTIVE, Ordering::Acquire, Ordering::Relaxed)
            .is_ok();
        if adopted {
            // SAFETY: the CAS made us the owner.
            local.with_mut(|p| unsafe { *p += 100 });
        }
        exiting.join().unwrap();
        central.join().unwrap();
        // SAFETY: all threads joined.
        let v = local.with(|p| unsafe { *p });
        assert!(
            v % 10 == 1 || v % 100 == 11,
            "exiting thread's write lost: {v}"
        );
    });
}

#[test]
fn flag_is_free_after_join() {
    model().check(|| {
        let f = Arc::new(DutyFlag::new());
        let f2 = f.clone();
        let t = thread::spawn(move || {
            if f2.try_acquire() {
                f2.release();
            }
        });
        let mine = f.try_acquire();
        if mine {
            f.release();
        }
        t.join().unwrap();
        let a = f.try_acquire();
        let b = f.try_acquire();
        assert!(a, "mine={mine} second={b}");
        f.release();
    });
}

//! The central pool: routes remote-free batches from every heap's `out` ring to the owner's
//! `back` ring, parks batches whose owner's ring is full (overflow, counted), and services
//! abandoned heaps (threads that exited) and the fallback heap.
//!
//! It is a *duty*, not a thread: whoever holds the [`DutyFlag`] runs a bounded pass. Shard 0
//! calls [`central_pool_pass`] once per loop pass; any heap also runs a pass when it is owed
//! frees and a class ran dry, or when its `out` ring is full. Taking the flag never waits, so
//! no thread ever blocks on the central pool.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::heap::*;
use crate::sync::DutyFlag;

static FLAG: DutyFlag = DutyFlag::new();

struct CentralState {
    /// Per destination: messages parked because its `back` ring was full, linked through
    /// offset 0 of each message (tagged values).
    parked: [usize; MAX_HEAPS],
    parked_mask: [u64; MAX_HEAPS / 64],
}

struct CentralCell(UnsafeCell<CentralState>);
// SAFETY: the state is only touched by the holder of FLAG (acquire/release hand-off).
unsafe impl Sync for CentralCell {}

static CENTRAL: CentralCell = CentralCell(UnsafeCell::new(CentralState {
    parked: [0; MAX_HEAPS],
    parked_mask: [0; MAX_HEAPS / 64],
}));

pub(crate) static PASSES: AtomicU64 = AtomicU64::new(0);
pub(crate) static PASSES_SKIPPED_BUSY: AtomicU64 = AtomicU64::new(0);
pub(crate) static BATCHES_ROUTED: AtomicU64 = AtomicU64::new(0);
pub(crate) static OVERFLOW_EVENTS: AtomicU64 = AtomicU64::new(0);
pub(crate) static OVERFLOW_BLOCKS: AtomicU64 = AtomicU64::new(0);
pub(crate) static BUDGET_EXHAUSTED: AtomicU64 = AtomicU64::new(0);
pub(crate) static ABANDONED_SERVICED: AtomicU64 = AtomicU64::new(0);

/// Runs one bounded pass of the central pool duty: moves at most `budget` batches from heaps'
/// `out` rings to their owners, retries parked (overflow) batches, and services abandoned heaps
/// and the fallback heap. Returns the number of batches moved (0 when another thread holds the
/// duty right now — the call never waits).
///
/// Cost: one atomic swap when busy; otherwise O(heaps) ring probes plus the batches moved
/// (a batch is one pointer, not a walk of its blocks, except when it is parked). Shard 0 of a
/// Lattice server calls this once per loop pass with a budget of a few dozen.
pub fn central_pool_pass(budget: usize) -> usize {
    if !FLAG.try_acquire() {
        PASSES_SKIPPED_BUSY.fetch_add(1, Ordering::Relaxed);
        return 0;
    }
    // SAFETY: we hold the flag, which makes us the only user of CENTRAL and the consumer of
    // every `out` ring / producer of every `back` ring.
    let moved = unsafe { pass(&mut *CENTRAL.0.get(), budget) };
    FLAG.release();
    PASSES.fetch_add(1, Ordering::Relaxed);
    moved
}

/// Messages parked at the central pool because their destination's `back` ring was full.
pub(crate) fn parked_blocks() -> u64 {
    OVERFLOW_BLOCKS.load(Ordering::Relaxed)
}

unsafe fn pass(st: &mut CentralState, budget: usize) -> usize {
    let n = heap_count();
    // parked batches first: they are the oldest
    for w in 0..MAX_HEAPS / 64 {
        let mut m = st.parked_mask[w];
        while m != 0 {
            let owner = w * 64 + m.trailing_zeros() as usize;
            m &= m - 1;
            // SAFETY: we are central.
            unsafe { deliver_parked(st, owner) };
        }
    }
    let mut moved = 0;
    'heaps: for i in 0..n {
        let h = heap_ptr(i);
        if h.is_null() {
            continue;
        }
        // SAFETY: published heaps are never unmapped; we are the `out` ring consumer.
        let hs = unsafe { &(*h).shared };
        while let Some(v) = hs.out.pop() {
            // SAFETY: v is a message published by the heap.
            unsafe { route(st, v) };
            moved += 1;
            if moved >= budget {
                BUDGET_EXHAUSTED.fetch_add(1, Ordering::Relaxed);
                break 'heaps;
            }
        }
    }
    for i in 0..n {
        let h = heap_ptr(i);
        if h.is_null() {
            continue;
        }
        // SAFETY: published heaps are never unmapped.
        let heap = unsafe { &*h };
        let state = heap.shared.state.load(Ordering::Relaxed);
        if state == STATE_ABANDONED
            && heap
                .shared
                .state
                .compare_exchange(
                    STATE_ABANDONED,
                    STATE_CENTRAL,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            // SAFETY: the CAS made us the heap's owner until we store ABANDONED again.
            unsafe { service(st, heap, 0) };
            heap.shared.state.store(STATE_ABANDONED, Ordering::Release);
            ABANDONED_SERVICED.fetch_add(1, Ordering::Relaxed);
        } else if state == STATE_FALLBACK && crate::thread::FALLBACK_LOCK.try_lock() {
            // SAFETY: the lock makes us the fallback heap's owner.
            unsafe { service(st, heap, RETAIN_EMPTY_SEGMENTS) };
            crate::thread::FALLBACK_LOCK.unlock();
        }
    }
    moved
}

/// Drains what came back to a heap nobody runs, and routes what it still had pending.
unsafe fn service(st: &mut CentralState, heap: &Heap, retain: u32) {
    // SAFETY: caller made us the heap's owner.
    unsafe {
        // only the central pool (us) fills back rings, so this ends
        while !heap.shared.back.is_empty() {
            heap.drain_back(DRAIN_BUDGET);
        }
        heap.take_pending(|v| {
            let (blocks, dest) = message_info(v);
            if blocks > 0 {
                (*heap_ptr(dest))
                    .shared
                    .inbound_sent
                    .fetch_add(blocks, Ordering::Relaxed);
                bump(&heap.shared.remote_sent_blocks, blocks);
                bump(&heap.shared.remote_sent_batches, 1);
            }
            route(st, v);
        });
        heap.trim(retain);
    }
}

unsafe fn route(st: &mut CentralState, v: usize) {
    // SAFETY: v is a published message; its destination heap is published.
    unsafe {
        let dest = message_dest(v);
        BATCHES_ROUTED.fetch_add(1, Ordering::Relaxed);
        if st.parked[dest] == 0 && (*heap_ptr(dest)).shared.back.push(v) {
            return;
        }
        // park: push on the destination's parked list (offset 0 of the message is its link)
        OVERFLOW_EVENTS.fetch_add(1, Ordering::Relaxed);
        *((v & !TAG_MASK) as *mut usize) = st.parked[dest];
        st.parked[dest] = v;
        st.parked_mask[dest / 64] |= 1u64 << (dest % 64);
        OVERFLOW_BLOCKS.fetch_add(1, Ordering::Relaxed);
    }
}

unsafe fn deliver_parked(st: &mut CentralState, dest: usize) {
    // SAFETY: parked messages belong to the central pool until published.
    unsafe {
        let oh = heap_ptr(dest);
        while st.parked[dest] != 0 {
            let v = st.parked[dest];
            let next = *((v & !TAG_MASK) as *const usize);
            if !(*oh).shared.back.push(v) {
                return;
            }
            st.parked[dest] = next;
            OVERFLOW_BLOCKS.fetch_sub(1, Ordering::Relaxed);
        }
        st.parked_mask[dest / 64] &= !(1u64 << (dest % 64));
    }
}

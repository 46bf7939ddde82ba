//! The central pool: routes remote-free batches from every heap's `out` ring to the owner's
//! `back` ring, parks batches whose owner's ring is full (overflow, counted), and services
//! abandoned heaps (threads that exited) and the fallback heap.
//!
//! It is a *duty*, not a thread: whoever holds the [`DutyFlag`] runs a bounded pass. Shard 0
//! calls [`central_pool_pass`] once per loop pass; any heap also runs a pass when it is owed
//! frees and a class ran dry, or when its `out` ring is full. Taking the flag never waits, so
//! no thread ever blocks on the central pool.

use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::heap::*;
use crate::segment::Block;
use crate::sync::DutyFlag;

static FLAG: DutyFlag = DutyFlag::new();

struct CentralState {
    overflow: [Pending; MAX_HEAPS],
    overflow_mask: [u64; MAX_HEAPS / 64],
}

struct CentralCell(UnsafeCell<CentralState>);
// SAFETY: the state is only touched by the holder of FLAG (acquire/release hand-off).
unsafe impl Sync for CentralCell {}

static CENTRAL: CentralCell = CentralCell(UnsafeCell::new(CentralState {
    overflow: [Pending { head: ptr::null_mut(), tail: ptr::null_mut(), count: 0, bytes: 0 }; MAX_HEAPS],
    overflow_mask: [0; MAX_HEAPS / 64],
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

/// Blocks parked at the central pool because their owner's `back` ring was full.
pub(crate) fn parked_blocks() -> u64 {
    OVERFLOW_BLOCKS.load(Ordering::Relaxed)
}

unsafe fn pass(st: &mut CentralState, budget: usize) -> usize {
    let n = heap_count();
    // parked batches first: they are the oldest
    for w in 0..MAX_HEAPS / 64 {
        let mut m = st.overflow_mask[w];
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
            // SAFETY: v is a batch head published by the heap.
            unsafe { route(st, v as *mut Block) };
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
                .compare_exchange(STATE_ABANDONED, STATE_CENTRAL, Ordering::Acquire, Ordering::Relaxed)
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
        while heap.drain_back(DRAIN_BUDGET) > 0 {}
        heap.take_pending(|owner, pd| {
            (*pd.head).count = pd.count;
            (*pd.head).owner = owner as u32;
            let oh = heap_ptr(owner);
            (*oh).shared.inbound_sent.fetch_add(u64::from(pd.count), Ordering::Relaxed);
            bump(&heap.shared.remote_sent_blocks, u64::from(pd.count));
            bump(&heap.shared.remote_sent_batches, 1);
            route(st, pd.head);
        });
        heap.trim(retain);
    }
}

unsafe fn route(st: &mut CentralState, head: *mut Block) {
    // SAFETY: head is a published batch; its owner heap is published.
    unsafe {
        let owner = (*head).owner as usize;
        BATCHES_ROUTED.fetch_add(1, Ordering::Relaxed);
        if st.overflow[owner].count == 0 {
            let oh = heap_ptr(owner);
            if (*oh).shared.back.push(head as usize) {
                return;
            }
        }
        // park: append the batch to the owner's overflow chain (walk to its tail)
        OVERFLOW_EVENTS.fetch_add(1, Ordering::Relaxed);
        let n = (*head).count;
        let mut tail = head;
        for _ in 1..n {
            tail = (*tail).next;
        }
        let pd = &mut st.overflow[owner];
        (*tail).next = pd.head;
        if pd.count == 0 {
            pd.tail = tail;
            st.overflow_mask[owner / 64] |= 1u64 << (owner % 64);
        }
        pd.head = head;
        pd.count += n;
        OVERFLOW_BLOCKS.fetch_add(u64::from(n), Ordering::Relaxed);
    }
}

unsafe fn deliver_parked(st: &mut CentralState, owner: usize) {
    let pd = st.overflow[owner];
    // SAFETY: parked blocks are ours (central) until published.
    unsafe {
        (*pd.head).count = pd.count;
        (*pd.head).owner = owner as u32;
        let oh = heap_ptr(owner);
        if (*oh).shared.back.push(pd.head as usize) {
            st.overflow[owner] = Pending { head: ptr::null_mut(), tail: ptr::null_mut(), count: 0, bytes: 0 };
            st.overflow_mask[owner / 64] &= !(1u64 << (owner % 64));
            OVERFLOW_BLOCKS.fetch_sub(u64::from(pd.count), Ordering::Relaxed);
        }
    }
}

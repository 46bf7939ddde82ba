//! A heap: the slabs of one thread (a shard, a helper thread, or the shared fallback heap).
//!
//! The hot paths (`alloc_small`, `free_small` of an own block) touch only owner-local state:
//! the class's page list and the page's free list. A block owned by another heap is pushed on
//! a per-owner batch node (an array of 62 pointers in a 512-byte block of our own) and the
//! node is sent over the heap's `out` ring when full or at [`BATCH_BYTES`]. Batches owed to this
//! heap arrive on its `back` ring and are drained when a class runs dry or on
//! [`crate::flush_thread`].
//!
//! Split into `HeapShared` (atomics any thread may read: rings, state, counters — every
//! counter has a single writer, the current owner) and `HeapLocal` (owner-exclusive).

use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use crate::os::{self, round_up, OS_PAGE};
use crate::ring::Ring;
use crate::segment::*;
use crate::size_class::{class_size, NUM_CLASSES};

/// Maximum number of heaps (threads with their own heap at the same time, plus the fallback).
/// Threads beyond it share the fallback heap under a lock; this is counted.
pub const MAX_HEAPS: usize = 256;
/// A pending remote batch is sent once it holds this many bytes …
pub const BATCH_BYTES: u32 = 16 * 1024;
/// Batches drained from the `back` ring per refill (bounds the time of one slow path).
pub const DRAIN_BUDGET: usize = 64;
/// Central-pool batches a heap moves when it runs the duty opportunistically.
pub const OPPORTUNISTIC_PASS_BUDGET: usize = 64;
/// Fully empty segments a heap keeps mapped; beyond this they go back to the OS.
pub const RETAIN_EMPTY_SEGMENTS: u32 = 1;

/// Heap slot states.
pub const STATE_ACTIVE: u32 = 1;
/// The owning thread exited; the central pool services the heap until a new thread adopts it.
pub const STATE_ABANDONED: u32 = 2;
/// The central pool is servicing an abandoned heap right now.
pub const STATE_CENTRAL: u32 = 3;
/// Heap 0: shared by threads without a heap, guarded by a lock.
pub const STATE_FALLBACK: u32 = 4;

/// Writes `v + 1` to a single-writer counter (plain load/store, no locked instruction).
#[inline]
pub(crate) fn bump(c: &AtomicU64, by: u64) {
    c.store(
        c.load(Ordering::Relaxed).wrapping_add(by),
        Ordering::Relaxed,
    );
}

#[derive(Clone, Copy)]
pub(crate) struct Pending {
    pub node: *mut Node,
    pub bytes: u32,
}

/// Per-heap counters and lanes readable from any thread.
pub(crate) struct HeapShared {
    pub id: u32,
    pub state: AtomicU32,
    pub out: Ring,
    pub back: Ring,
    /// Blocks other heaps have sent towards this heap (multi-writer: `fetch_add`, per batch).
    pub inbound_sent: AtomicU64,
    /// Blocks this heap got back (single writer).
    pub inbound_received: AtomicU64,
    pub class_allocs: [AtomicU64; NUM_CLASSES],
    pub class_frees: [AtomicU64; NUM_CLASSES],
    pub remote_sent_blocks: AtomicU64,
    pub remote_sent_batches: AtomicU64,
    pub out_ring_full: AtomicU64,
    pub stalled: AtomicU64,
    pub stalled_now: AtomicU64,
    pub pages_in_use: AtomicU64,
    pub segments: AtomicU64,
    pub adoptions: AtomicU64,
    pub large_allocs: AtomicU64,
    pub large_alloc_bytes: AtomicU64,
    pub large_frees: AtomicU64,
    pub large_free_bytes: AtomicU64,
    pub large_cached_bytes: AtomicU64,
    pub large_cache_hits: AtomicU64,
    pub name_len: AtomicU8,
    pub name: [AtomicU8; 32],
}

/// Owner-exclusive slab state.
pub(crate) struct HeapLocal {
    classes: [*mut PageMeta; NUM_CLASSES],
    /// Last page of each class list: pages that were full and got a block back go here, so the
    /// head page fills up first and nearly empty pages get the chance to empty (fragmentation).
    tails: [*mut PageMeta; NUM_CLASSES],
    segs: *mut Segment,
    empty_segs: u32,
    pending: [Pending; MAX_HEAPS],
    pending_mask: [u64; MAX_HEAPS / 64],
    /// Messages that found the out ring full (linked through offset 0, tagged).
    stalled: usize,
    stalled_n: usize,
    pub(crate) large: crate::large::LargeCache,
}

/// A heap. Lives in its own OS mapping, never freed (slots are reused by new threads).
pub(crate) struct Heap {
    pub shared: HeapShared,
    local: UnsafeCell<HeapLocal>,
}

// SAFETY: `local` is only touched by the one thread that currently owns the heap (its thread,
// the holder of the fallback lock, or the central pool while the heap is abandoned); ownership
// moves through acquire/release operations on `state` or the lock. Everything else is atomic.
unsafe impl Sync for Heap {}

static HEAPS: [AtomicPtr<Heap>; MAX_HEAPS] = [const { AtomicPtr::new(ptr::null_mut()) }; MAX_HEAPS];
/// Slots handed out so far (slot 0 is the fallback heap).
static HEAP_COUNT: AtomicUsize = AtomicUsize::new(1);
static INIT: AtomicU32 = AtomicU32::new(0);
pub(crate) static HEAPS_EXHAUSTED: AtomicU64 = AtomicU64::new(0);
pub(crate) static FALLBACK_USES: AtomicU64 = AtomicU64::new(0);
pub(crate) static META_BYTES: AtomicU64 = AtomicU64::new(0);

pub(crate) const HEAP_MAP: usize = round_up(core::mem::size_of::<Heap>(), OS_PAGE);

/// Number of heap slots that may hold a heap.
#[inline]
pub(crate) fn heap_count() -> usize {
    HEAP_COUNT.load(Ordering::Acquire).min(MAX_HEAPS)
}

/// Heap in slot `i`, or null if the slot is not (yet) published.
#[inline]
pub(crate) fn heap_ptr(i: usize) -> *const Heap {
    HEAPS[i].load(Ordering::Acquire)
}

fn create_heap(id: u32, state: u32) -> *mut Heap {
    let p = os::map_aligned(HEAP_MAP, OS_PAGE) as *mut Heap;
    if p.is_null() {
        return p;
    }
    META_BYTES.fetch_add(HEAP_MAP as u64, Ordering::Relaxed);
    // SAFETY: fresh zeroed mapping large enough for a Heap; all-zero is a valid Heap (atomics 0,
    // null pointers, false, empty rings), so only `id` and `state` need writing.
    unsafe {
        ptr::addr_of_mut!((*p).shared.id).write(id);
        (*p).shared.state.store(state, Ordering::Relaxed);
    }
    p
}

/// Creates the fallback heap once. Spins only while another thread is creating it.
fn ensure_init() {
    if INIT.load(Ordering::Acquire) == 2 {
        return;
    }
    if INIT
        .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        let h = create_heap(0, STATE_FALLBACK);
        HEAPS[0].store(h, Ordering::Release);
        INIT.store(2, Ordering::Release);
    } else {
        while INIT.load(Ordering::Acquire) != 2 {
            core::hint::spin_loop();
        }
    }
}

/// The fallback heap (null only if the OS refused 12 KiB at start-up).
pub(crate) fn fallback_heap() -> *const Heap {
    ensure_init();
    heap_ptr(0)
}

/// Gives the calling thread a heap: adopts an abandoned one, else creates one. Null when all
/// slots are taken (counted) or the OS refuses memory; the caller then uses the fallback heap.
pub(crate) fn acquire_heap() -> *const Heap {
    ensure_init();
    let n = heap_count();
    for i in 1..n {
        let h = heap_ptr(i);
        if h.is_null() {
            continue;
        }
        // SAFETY: published heaps are never unmapped.
        let hs = unsafe { &(*h).shared };
        if hs.state.load(Ordering::Relaxed) == STATE_ABANDONED
            && hs
                .state
                .compare_exchange(
                    STATE_ABANDONED,
                    STATE_ACTIVE,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            hs.name_len.store(0, Ordering::Relaxed);
            bump(&hs.adoptions, 1);
            return h;
        }
    }
    let id = HEAP_COUNT.fetch_add(1, Ordering::AcqRel);
    if id >= MAX_HEAPS {
        HEAPS_EXHAUSTED.fetch_add(1, Ordering::Relaxed);
        return ptr::null();
    }
    let h = create_heap(id as u32, STATE_ACTIVE);
    HEAPS[id].store(h, Ordering::Release);
    h
}

impl Heap {
    /// Owner-exclusive state.
    ///
    /// # Safety
    /// The caller must currently own the heap (see the `Sync` impl) and must not hold another
    /// reference obtained from this function.
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn local(&self) -> &mut HeapLocal {
        // SAFETY: exclusivity guaranteed by the caller.
        unsafe { &mut *self.local.get() }
    }

    /// Allocates one block of class `c`. Null only when the OS refuses memory.
    ///
    /// # Safety
    /// The caller owns the heap.
    #[inline]
    pub(crate) unsafe fn alloc_small(&self, c: usize) -> *mut u8 {
        // SAFETY: caller owns the heap.
        let l = unsafe { self.local() };
        let page = l.classes[c];
        if !page.is_null() {
            // SAFETY: pages on a class list belong to a live segment of this heap and have a
            // free block or bump space left (full pages are unlinked).
            unsafe { return self.take_from_page(l, c, page) };
        }
        // SAFETY: caller owns the heap.
        unsafe { self.alloc_slow(l, c) }
    }

    #[inline]
    unsafe fn take_from_page(&self, l: &mut HeapLocal, c: usize, page: *mut PageMeta) -> *mut u8 {
        // SAFETY: see alloc_small.
        let pg = unsafe { &mut *page };
        let b = pg.free;
        let out = if !b.is_null() {
            // SAFETY: free-list blocks are inside the page and hold a valid `next`.
            pg.free = unsafe { (*b).next };
            b as *mut u8
        } else {
            debug_assert!(pg.bump < pg.end);
            let o = pg.bump;
            pg.bump += pg.block_size as usize;
            o as *mut u8
        };
        pg.used += 1;
        if pg.free.is_null() && pg.bump >= pg.end {
            // SAFETY: page is on list c.
            unsafe { unlink(l, c, page) };
        }
        bump(&self.shared.class_allocs[c], 1);
        out
    }

    #[cold]
    unsafe fn alloc_slow(&self, l: &mut HeapLocal, c: usize) -> *mut u8 {
        // 0. our own messages that found the ring full
        if l.stalled != 0 {
            // SAFETY: we own the heap.
            unsafe { self.retry_stalled(l) };
        }
        // 1. frees owed to us that already came back
        // SAFETY: we own the heap.
        unsafe { self.drain(l, DRAIN_BUDGET) };
        if l.classes[c].is_null() && self.owed() > 0 {
            // 2. frees owed but still at the central pool: run the duty if nobody is
            crate::central::central_pool_pass(OPPORTUNISTIC_PASS_BUDGET);
            // SAFETY: we own the heap.
            unsafe { self.drain(l, DRAIN_BUDGET) };
        }
        if l.classes[c].is_null() {
            // 3. a fresh page
            // SAFETY: we own the heap.
            if unsafe { !self.new_page(l, c) } {
                return ptr::null_mut();
            }
        }
        let page = l.classes[c];
        // SAFETY: list c is non-empty.
        unsafe { self.take_from_page(l, c, page) }
    }

    /// Blocks other heaps sent towards us that have not arrived yet.
    #[inline]
    fn owed(&self) -> u64 {
        self.shared
            .inbound_sent
            .load(Ordering::Relaxed)
            .saturating_sub(self.shared.inbound_received.load(Ordering::Relaxed))
    }

    unsafe fn new_page(&self, l: &mut HeapLocal, c: usize) -> bool {
        let mut seg = l.segs;
        // SAFETY: the segment list holds live segments of this heap.
        unsafe {
            while !seg.is_null() && (*seg).free_mask == 0 {
                seg = (*seg).next;
            }
        }
        if seg.is_null() {
            seg = os::map_aligned(SEG_SIZE, SEG_SIZE) as *mut Segment;
            if seg.is_null() {
                return false;
            }
            META_BYTES.fetch_add(META_SIZE as u64, Ordering::Relaxed);
            bump(&self.shared.segments, 1);
            // SAFETY: fresh zeroed segment; we initialise its header.
            unsafe {
                (*seg).kind = KIND_SMALL;
                (*seg).owner = self.shared.id;
                (*seg).free_mask = u64::MAX;
                (*seg).used_pages = 0;
                push_seg(l, seg);
            }
            l.empty_segs += 1;
        } else if l.segs != seg {
            // SAFETY: seg is on the list.
            unsafe {
                unlink_seg(l, seg);
                push_seg(l, seg);
            }
        }
        // SAFETY: seg is a live segment of ours with a free page.
        unsafe {
            let i = (*seg).free_mask.trailing_zeros() as usize;
            (*seg).free_mask &= !(1u64 << i);
            if (*seg).used_pages == 0 {
                l.empty_segs -= 1;
            }
            (*seg).used_pages += 1;
            let size = class_size(c);
            let (start, end) = page_area(seg as usize, i);
            let cap = (end - start) / size;
            debug_assert!(cap >= 1);
            let page = ptr::addr_of_mut!((*seg).pages[i]);
            page.write(PageMeta {
                free: ptr::null_mut(),
                bump: start,
                end: start + cap * size,
                prev: ptr::null_mut(),
                next: ptr::null_mut(),
                used: 0,
                block_size: size as u32,
                class: c as u8,
                in_list: false,
                assigned: true,
            });
            push_front(l, c, page);
        }
        bump(&self.shared.pages_in_use, 1);
        true
    }

    /// Frees a small block `p` of segment `seg` (any owner).
    ///
    /// # Safety
    /// The caller owns this heap; `p` is a live small block in `seg`.
    #[inline]
    pub(crate) unsafe fn free_small(&self, p: *mut u8, seg: *mut Segment, size_hint: usize) {
        // SAFETY: caller owns the heap.
        let l = unsafe { self.local() };
        // SAFETY: `seg` is live while `p` is; `owner` never changes after creation.
        if unsafe { (*seg).owner } == self.shared.id {
            // SAFETY: our own block.
            unsafe { self.free_local(l, p, seg) }
        } else {
            // SAFETY: live block of another heap.
            unsafe { self.free_remote(l, p, seg, size_hint) }
        }
    }

    #[inline]
    unsafe fn free_local(&self, l: &mut HeapLocal, p: *mut u8, seg: *mut Segment) {
        // SAFETY: p is a live block of our segment; its page is assigned.
        unsafe {
            let page = page_of(seg, p);
            let pg = &mut *page;
            debug_assert!(pg.assigned && pg.used > 0);
            debug_assert!({
                let (start, _) = page_area(seg as usize, page_index(p));
                let a = p as usize;
                a >= start && a < pg.end && (a - start).is_multiple_of(pg.block_size as usize)
            });
            let b = p as *mut Block;
            (*b).next = pg.free;
            pg.free = b;
            pg.used -= 1;
            let c = pg.class as usize;
            bump(&self.shared.class_frees[c], 1);
            if !pg.in_list {
                push_back(l, c, page);
            } else if pg.used == 0 && !(pg.prev.is_null() && pg.next.is_null()) {
                unlink(l, c, page);
                self.retire_page(l, seg, page);
            }
        }
    }

    unsafe fn retire_page(&self, l: &mut HeapLocal, seg: *mut Segment, page: *mut PageMeta) {
        // SAFETY: page is an empty, unlinked page of our live segment.
        unsafe {
            (*page).assigned = false;
            let i = (page as usize - ptr::addr_of!((*seg).pages) as usize)
                / core::mem::size_of::<PageMeta>();
            (*seg).free_mask |= 1u64 << i;
            (*seg).used_pages -= 1;
            bump(&self.shared.pages_in_use, u64::MAX); // wrapping -1
            if (*seg).used_pages == 0 {
                l.empty_segs += 1;
                if l.empty_segs > RETAIN_EMPTY_SEGMENTS {
                    self.release_segment(l, seg);
                }
            }
        }
    }

    unsafe fn release_segment(&self, l: &mut HeapLocal, seg: *mut Segment) {
        // SAFETY: seg is ours, on the list, with no page in use: nobody can hold a block in it.
        unsafe {
            debug_assert!((*seg).used_pages == 0);
            unlink_seg(l, seg);
            l.empty_segs -= 1;
            bump(&self.shared.segments, u64::MAX);
            META_BYTES.fetch_sub(META_SIZE as u64, Ordering::Relaxed);
            os::unmap(seg as *mut u8, SEG_SIZE);
        }
    }

    /// Returns every fully empty segment beyond `retain` to the OS.
    ///
    /// # Safety
    /// The caller owns the heap.
    pub(crate) unsafe fn trim(&self, retain: u32) {
        // SAFETY: caller owns the heap.
        let l = unsafe { self.local() };
        if retain == 0 {
            l.large.clear();
            self.shared.large_cached_bytes.store(0, Ordering::Relaxed);
        }
        let mut seg = l.segs;
        while !seg.is_null() && l.empty_segs > retain {
            // SAFETY: list of our live segments; read next before a possible unmap.
            unsafe {
                let next = (*seg).next;
                if (*seg).used_pages == 0 {
                    self.release_segment(l, seg);
                }
                seg = next;
            }
        }
    }

    /// Kept out of line so that the own-block path of `free_small` (inlined into every
    /// `dealloc`) needs no saved registers. The common case — append to the owner's pending
    /// node — is a handful of instructions; starting and sending a node are out of line too.
    #[inline(never)]
    unsafe fn free_remote(
        &self,
        l: &mut HeapLocal,
        p: *mut u8,
        seg: *mut Segment,
        size_hint: usize,
    ) {
        // SAFETY: block is live, so its segment header is stable. The page metadata is not read:
        // its owner writes that line all the time, and the caller's size is a good enough
        // estimate for the batch byte bound.
        let owner = unsafe { (*seg).owner } as usize;
        let size = size_hint.clamp(16, u32::MAX as usize) as u32;
        let pd = &mut l.pending[owner];
        let node = pd.node;
        if node.is_null() {
            // SAFETY: we own the heap; p is a dead block of `owner`.
            return unsafe { self.start_batch(l, owner, p, size) };
        }
        // SAFETY: the pending node is ours and not full (it is sent when it fills).
        let full = unsafe {
            let n = (*node).count as usize;
            (*node).ptrs[n] = p;
            (*node).count = n as u32 + 1;
            n + 1 >= NODE_PTRS
        };
        pd.bytes = pd.bytes.saturating_add(size);
        if full || pd.bytes >= BATCH_BYTES {
            // SAFETY: we own the heap.
            unsafe { self.send(l, owner) };
        }
    }

    /// First remote free towards `owner` since its last batch went: a new node holding `p`.
    #[cold]
    #[inline(never)]
    unsafe fn start_batch(&self, l: &mut HeapLocal, owner: usize, p: *mut u8, size: u32) {
        // SAFETY: we own the heap; the node is a block of our own (class 512 B).
        let node = unsafe { self.alloc_in(l, node_class()) } as *mut Node;
        if node.is_null() {
            // out of memory for a node: send the block alone
            // SAFETY: we own the heap; p is a dead block of `owner`.
            unsafe { self.send_value(l, p as usize | TAG_SINGLE) };
            return;
        }
        // SAFETY: fresh node of ours.
        unsafe {
            (*node).link = 0;
            (*node).count = 1;
            (*node).owner = owner as u32;
            (*node).ptrs[0] = p;
        }
        l.pending[owner] = Pending { node, bytes: size };
        l.pending_mask[owner / 64] |= 1u64 << (owner % 64);
        if size >= BATCH_BYTES {
            // SAFETY: we own the heap.
            unsafe { self.send(l, owner) };
        }
    }

    /// Sends the pending node for `owner`.
    #[inline(never)]
    unsafe fn send(&self, l: &mut HeapLocal, owner: usize) {
        let pd = l.pending[owner];
        if pd.node.is_null() {
            return;
        }
        l.pending[owner] = Pending {
            node: ptr::null_mut(),
            bytes: 0,
        };
        l.pending_mask[owner / 64] &= !(1u64 << (owner % 64));
        // SAFETY: we own the heap and the node.
        unsafe { self.send_value(l, pd.node as usize) };
    }

    /// Puts one message on our `out` ring. On a full ring: one opportunistic central pass and a
    /// retry; if still full the message is stalled (kept on a local list, counted) and goes
    /// out at the next flush.
    unsafe fn send_value(&self, l: &mut HeapLocal, v: usize) {
        // SAFETY (block): we own the heap; v is ours until published.
        if l.stalled != 0 && unsafe { self.retry_stalled(l) } > 0 {
            // older messages first; the ring is still full: run the duty (someone has to,
            // or the owners never get their blocks back) and retry, else wait behind them
            bump(&self.shared.out_ring_full, 1);
            crate::central::central_pool_pass(OPPORTUNISTIC_PASS_BUDGET);
            // SAFETY: as above.
            if unsafe { self.retry_stalled(l) } > 0 {
                // SAFETY: as above.
                unsafe { self.stall(l, v) };
                return;
            }
        }
        // SAFETY: v is ours until published.
        let info = unsafe { message_info(v) };
        if self.shared.out.push(v) {
            self.note_sent(info);
            return;
        }
        bump(&self.shared.out_ring_full, 1);
        crate::central::central_pool_pass(OPPORTUNISTIC_PASS_BUDGET);
        if self.shared.out.push(v) {
            self.note_sent(info);
            return;
        }
        // SAFETY: v is ours until published.
        unsafe { self.stall(l, v) };
    }

    /// Keeps a message that found the ring full (offset 0 of every message is its link).
    unsafe fn stall(&self, l: &mut HeapLocal, v: usize) {
        // SAFETY: v's memory is ours until published.
        unsafe { *((v & !TAG_MASK) as *mut usize) = l.stalled };
        l.stalled = v;
        l.stalled_n += 1;
        bump(&self.shared.stalled, 1);
        self.shared
            .stalled_now
            .store(l.stalled_n as u64, Ordering::Relaxed);
    }

    /// Pushes stalled messages while the ring has room; returns how many are left. Stops at
    /// the first full push, so a full ring costs one probe, not a walk.
    unsafe fn retry_stalled(&self, l: &mut HeapLocal) -> usize {
        let mut v = l.stalled;
        while v != 0 {
            // SAFETY: stalled messages are ours; offset 0 is their link.
            let (next, info) = unsafe { (*((v & !TAG_MASK) as *const usize), message_info(v)) };
            if !self.shared.out.push(v) {
                break;
            }
            self.note_sent(info);
            l.stalled_n -= 1;
            v = next;
        }
        l.stalled = v;
        self.shared
            .stalled_now
            .store(l.stalled_n as u64, Ordering::Relaxed);
        l.stalled_n
    }

    /// Counts a published message (blocks, destination) as sent by us.
    #[inline]
    fn note_sent(&self, (blocks, dest): (u64, usize)) {
        if blocks > 0 {
            let oh = heap_ptr(dest);
            // SAFETY: a heap that owns blocks is published and never unmapped.
            unsafe {
                (*oh)
                    .shared
                    .inbound_sent
                    .fetch_add(blocks, Ordering::Relaxed)
            };
            bump(&self.shared.remote_sent_blocks, blocks);
            bump(&self.shared.remote_sent_batches, 1);
        }
    }

    /// Allocation from an already borrowed `HeapLocal`.
    unsafe fn alloc_in(&self, l: &mut HeapLocal, c: usize) -> *mut u8 {
        let page = l.classes[c];
        if !page.is_null() {
            // SAFETY: see alloc_small.
            unsafe { return self.take_from_page(l, c, page) };
        }
        // SAFETY: we own the heap.
        unsafe { self.alloc_slow(l, c) }
    }

    /// Sends every pending node and retries stalled messages; returns how many messages are
    /// still stalled (out ring full).
    ///
    /// # Safety
    /// The caller owns the heap.
    pub(crate) unsafe fn flush(&self) -> usize {
        // SAFETY: caller owns the heap.
        let l = unsafe { self.local() };
        // SAFETY: caller owns the heap.
        unsafe { self.retry_stalled(l) };
        for w in 0..MAX_HEAPS / 64 {
            let mut m = l.pending_mask[w];
            while m != 0 {
                let owner = w * 64 + m.trailing_zeros() as usize;
                m &= m - 1;
                // SAFETY: caller owns the heap.
                unsafe { self.send(l, owner) };
            }
        }
        // SAFETY: caller owns the heap.
        unsafe { self.retry_stalled(l) }
    }

    /// Takes every pending node and stalled message out of this heap (the central pool does
    /// this while it services an abandoned heap): calls `f(message)` for each.
    ///
    /// # Safety
    /// The caller owns the heap.
    pub(crate) unsafe fn take_pending(&self, mut f: impl FnMut(usize)) {
        // SAFETY: caller owns the heap.
        let l = unsafe { self.local() };
        let mut v = core::mem::take(&mut l.stalled);
        l.stalled_n = 0;
        self.shared.stalled_now.store(0, Ordering::Relaxed);
        while v != 0 {
            // SAFETY: stalled messages are ours.
            let next = unsafe { *((v & !TAG_MASK) as *const usize) };
            f(v);
            v = next;
        }
        for w in 0..MAX_HEAPS / 64 {
            let mut m = l.pending_mask[w];
            l.pending_mask[w] = 0;
            while m != 0 {
                let owner = w * 64 + m.trailing_zeros() as usize;
                m &= m - 1;
                let pd = l.pending[owner];
                l.pending[owner] = Pending {
                    node: ptr::null_mut(),
                    bytes: 0,
                };
                f(pd.node as usize);
            }
        }
    }

    /// Handles up to `max` messages that came back on our `back` ring; returns blocks freed.
    ///
    /// # Safety
    /// The caller owns the heap (it is the `back` ring's consumer).
    pub(crate) unsafe fn drain_back(&self, max: usize) -> u64 {
        // SAFETY: caller owns the heap.
        let l = unsafe { self.local() };
        // SAFETY: caller owns the heap.
        unsafe { self.drain(l, max) }
    }

    unsafe fn drain(&self, l: &mut HeapLocal, max: usize) -> u64 {
        let mut total = 0u64;
        for _ in 0..max {
            let Some(v) = self.shared.back.pop() else {
                break;
            };
            let p = v & !TAG_MASK;
            // SAFETY: every message on our back ring is memory of ours: a node full of our
            // blocks, our own node coming home, or a single block of ours.
            unsafe {
                match v & TAG_MASK {
                    0 => {
                        let node = p as *mut Node;
                        debug_assert!((*node).owner == self.shared.id);
                        let n = (*node).count as usize;
                        for i in 0..n {
                            let b = (*node).ptrs[i];
                            let seg = segment_of(b);
                            debug_assert!(
                                (*seg).kind == KIND_SMALL && (*seg).owner == self.shared.id
                            );
                            self.free_local(l, b, seg);
                        }
                        total += n as u64;
                        // the node goes home to the heap that filled it
                        self.send_value(l, p | TAG_RETURN);
                    }
                    TAG_RETURN => {
                        let seg = segment_of(p as *const u8);
                        debug_assert!((*seg).owner == self.shared.id);
                        self.free_local(l, p as *mut u8, seg);
                    }
                    _ => {
                        let seg = segment_of(p as *const u8);
                        debug_assert!((*seg).owner == self.shared.id);
                        self.free_local(l, p as *mut u8, seg);
                        total += 1;
                    }
                }
            }
        }
        if total > 0 {
            bump(&self.shared.inbound_received, total);
        }
        total
    }
}

/// Tag bits of a message on a ring (messages are 16-byte aligned pointers).
pub(crate) const TAG_MASK: usize = 3;
/// A node of ours that the owner of its blocks has emptied and sent home.
pub(crate) const TAG_RETURN: usize = 1;
/// A single block (sent without a node when no node could be allocated).
pub(crate) const TAG_SINGLE: usize = 2;

/// Block pointers per batch node.
pub const NODE_PTRS: usize = 62;

/// A batch of remote frees for one owner: an array of block pointers, so the owner frees them
/// without chasing a linked list through cold blocks. Nodes are 512-byte blocks of the heap
/// that fills them and are sent back to it (tag [`TAG_RETURN`]) once emptied.
#[repr(C)]
pub(crate) struct Node {
    /// Link for stalled/parked lists (offset 0 of every message).
    pub link: usize,
    pub count: u32,
    pub owner: u32,
    pub ptrs: [*mut u8; NODE_PTRS],
}

const _: () = assert!(core::mem::size_of::<Node>() == 512);

#[inline]
fn node_class() -> usize {
    crate::size_class::class_of(512)
}

/// Destination heap of a message.
///
/// # Safety
/// `v` is a live message.
#[inline]
pub(crate) unsafe fn message_dest(v: usize) -> usize {
    let p = v & !TAG_MASK;
    // SAFETY: caller guarantees liveness.
    unsafe {
        if v & TAG_MASK == 0 {
            (*(p as *const Node)).owner as usize
        } else {
            (*segment_of(p as *const u8)).owner as usize
        }
    }
}

/// Blocks a message carries for its destination (returned nodes carry none).
///
/// # Safety
/// `v` is a message not yet visible to its destination.
#[inline]
pub(crate) unsafe fn message_blocks(v: usize) -> u64 {
    match v & TAG_MASK {
        // SAFETY: caller guarantees the node is still ours.
        0 => u64::from(unsafe { (*((v & !TAG_MASK) as *const Node)).count }),
        TAG_RETURN => 0,
        _ => 1,
    }
}

/// (blocks carried, destination heap) of a message.
///
/// # Safety
/// `v` is a message not yet visible to its destination.
#[inline]
pub(crate) unsafe fn message_info(v: usize) -> (u64, usize) {
    // SAFETY: forwarded.
    unsafe { (message_blocks(v), message_dest(v)) }
}

// ---- intrusive lists (owner-local) ----

unsafe fn push_front(l: &mut HeapLocal, c: usize, page: *mut PageMeta) {
    let head = l.classes[c];
    // SAFETY: page and head are live pages of this heap.
    unsafe {
        (*page).prev = ptr::null_mut();
        (*page).next = head;
        (*page).in_list = true;
        if !head.is_null() {
            (*head).prev = page;
        } else {
            l.tails[c] = page;
        }
    }
    l.classes[c] = page;
}

unsafe fn push_back(l: &mut HeapLocal, c: usize, page: *mut PageMeta) {
    let tail = l.tails[c];
    if tail.is_null() {
        // SAFETY: forwarded.
        return unsafe { push_front(l, c, page) };
    }
    // SAFETY: page and tail are live pages of this heap.
    unsafe {
        (*page).next = ptr::null_mut();
        (*page).prev = tail;
        (*page).in_list = true;
        (*tail).next = page;
    }
    l.tails[c] = page;
}

unsafe fn unlink(l: &mut HeapLocal, c: usize, page: *mut PageMeta) {
    // SAFETY: page is on list c.
    unsafe {
        let (p, n) = ((*page).prev, (*page).next);
        if p.is_null() {
            l.classes[c] = n;
        } else {
            (*p).next = n;
        }
        if !n.is_null() {
            (*n).prev = p;
        } else {
            l.tails[c] = p;
        }
        (*page).prev = ptr::null_mut();
        (*page).next = ptr::null_mut();
        (*page).in_list = false;
    }
}

unsafe fn push_seg(l: &mut HeapLocal, seg: *mut Segment) {
    // SAFETY: live segments of this heap.
    unsafe {
        (*seg).prev = ptr::null_mut();
        (*seg).next = l.segs;
        if !l.segs.is_null() {
            (*l.segs).prev = seg;
        }
    }
    l.segs = seg;
}

unsafe fn unlink_seg(l: &mut HeapLocal, seg: *mut Segment) {
    // SAFETY: seg is on the list.
    unsafe {
        let (p, n) = ((*seg).prev, (*seg).next);
        if p.is_null() {
            l.segs = n;
        } else {
            (*p).next = n;
        }
        if !n.is_null() {
            (*n).prev = p;
        }
    }
}

//! `lattice-alloc`: a per-thread size-class allocator with batched remote frees through a
//! central pool, usable as `#[global_allocator]`.
//!
//! * Each thread (a shard, or any helper thread) gets its own heap of 64 KiB slab pages carved
//!   from 4 MiB segments; the owner of a block is found by masking its address (no table).
//! * A free of a block owned by another heap is batched per owner and sent over an SPSC ring to
//!   the central pool, which routes the batch to the owner's return ring; the owner frees the
//!   whole batch when it next refills. No lock on any of these paths.
//! * The central pool is a duty ([`central_pool_pass`]) run by shard 0 each loop pass and
//!   opportunistically by any heap that is owed frees — never a thread that blocks.
//! * Allocations above the large threshold (32 KiB by default) get their own mapping.
//! * [`snapshot`] and [`leak_report`] expose live bytes per heap and class, remote frees in
//!   flight, and OS bytes mapped/returned. [`ObjectPool`] is a typed pool on top.
//!
//! What it never does: take a lock on the small-object path, wait for another thread, or
//! allocate from inside itself. See `docs/ALLOC.md` for the design and the numbers.
#![warn(missing_docs)]

pub mod ring;
pub mod sync;

#[cfg(not(loom))]
mod central;
#[cfg(not(loom))]
mod heap;
#[cfg(not(loom))]
mod large;
#[cfg(not(loom))]
mod monitor;
#[cfg(not(loom))]
mod os;
#[cfg(not(loom))]
mod pool;
#[cfg(not(loom))]
mod segment;
#[cfg(not(loom))]
pub mod size_class;
#[cfg(not(loom))]
mod thread;

#[cfg(not(loom))]
pub use api::*;

#[cfg(not(loom))]
mod api {
    use core::alloc::{GlobalAlloc, Layout};
    use core::fmt;
    use core::sync::atomic::Ordering;

    pub use crate::central::central_pool_pass;
    pub use crate::heap::{BATCH_BYTES, MAX_HEAPS, NODE_PTRS};
    pub use crate::large::{LARGE_CACHE_BYTES, LARGE_CACHE_SLOTS};
    pub use crate::monitor::{
        leak_report, snapshot, ClassSnapshot, HeapSnapshot, HeapState, MemorySnapshot,
    };
    pub use crate::os::process_rss_bytes;
    pub use crate::pool::{ObjectPool, PoolError, PoolStats, Pooled, RemoteBox};
    use crate::segment::{page_of, segment_of, KIND_LARGE};
    pub use crate::segment::{META_SIZE, PAGE_SIZE, SEG_SIZE};
    pub use crate::size_class::MAX_SMALL;
    use crate::size_class::{class_of, class_size};

    /// Largest alignment served from slabs; larger alignments take the large path.
    pub const MAX_SLAB_ALIGN: usize = 4096;
    /// Default large threshold: requests above it get their own OS mapping.
    pub const DEFAULT_LARGE_THRESHOLD: usize = MAX_SMALL;

    /// The allocator. Zero-sized apart from its large threshold; all instances share the same
    /// per-thread heaps, so a block from one instance may be freed through another.
    ///
    /// ```ignore
    /// #[global_allocator]
    /// static GLOBAL: lattice_alloc::LatticeAlloc = lattice_alloc::LatticeAlloc::new();
    /// ```
    #[derive(Clone, Copy, Debug)]
    pub struct LatticeAlloc {
        large_threshold: usize,
    }

    impl Default for LatticeAlloc {
        fn default() -> Self {
            Self::new()
        }
    }

    impl LatticeAlloc {
        /// Allocator with the default large threshold (32 KiB).
        pub const fn new() -> Self {
            Self {
                large_threshold: DEFAULT_LARGE_THRESHOLD,
            }
        }

        /// Allocator whose large threshold is `bytes`, clamped to `16..=MAX_SMALL`: requests
        /// above it get a dedicated OS mapping.
        pub const fn with_large_threshold(bytes: usize) -> Self {
            let t = if bytes < 16 {
                16
            } else if bytes > MAX_SMALL {
                MAX_SMALL
            } else {
                bytes
            };
            Self { large_threshold: t }
        }

        /// The effective large threshold.
        pub const fn large_threshold(&self) -> usize {
            self.large_threshold
        }

        #[inline]
        fn slab_size(&self, layout: Layout) -> Option<usize> {
            let align = layout.align();
            if align > MAX_SLAB_ALIGN {
                return None;
            }
            let size = layout.size().max(1);
            // round up to the alignment so the class is a multiple of it (see size_class)
            let s = (size + align - 1) & !(align - 1);
            (s <= self.large_threshold).then_some(s)
        }

        /// Every case of `alloc` outside its fast path (large, aligned above 8, no heap yet).
        #[inline(never)]
        unsafe fn alloc_general(&self, layout: Layout) -> *mut u8 {
            // SAFETY: forwarded contract.
            unsafe { self.alloc_inner(layout).0 }
        }

        #[inline]
        unsafe fn alloc_inner(&self, layout: Layout) -> (*mut u8, bool) {
            if let Some(s) = self.slab_size(layout) {
                let c = class_of(s);
                // SAFETY: with_heap gives us exclusive use of the heap.
                return (
                    crate::thread::with_heap(|h| unsafe { h.alloc_small(c) }),
                    false,
                );
            }
            // SAFETY: with_heap gives us exclusive use of the heap.
            crate::thread::with_heap(|h| unsafe {
                crate::large::alloc(h, layout.size(), layout.align())
            })
        }

        /// Usable size of a live block (its class size, or the requested size for large ones).
        ///
        /// # Safety
        /// `p` is a live block from this allocator.
        pub unsafe fn usable_size(&self, p: *const u8) -> usize {
            let seg = segment_of(p);
            // SAFETY: a live block keeps its segment header live and immutable.
            unsafe {
                if (*seg).kind == KIND_LARGE {
                    crate::large::usable_size(p)
                } else {
                    (*page_of(seg, p)).block_size as usize
                }
            }
        }
    }

    // SAFETY: every path returns memory of at least `layout.size()` bytes aligned to
    // `layout.align()` that no other live allocation overlaps (slab blocks are handed out once
    // until freed; large blocks own their mapping), or null on failure.
    unsafe impl GlobalAlloc for LatticeAlloc {
        #[inline]
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // Fast path: alignment ≤ 8 (every class size is a multiple of 8, so every slab
            // block is 8-aligned) and a size under the threshold, on a thread with its own
            // heap. No closure and no tuple, so nothing is spilled on the way.
            if layout.align() <= 8 && layout.size() <= self.large_threshold {
                let h = crate::thread::current_heap();
                if !h.is_null() {
                    // SAFETY: the thread owns its heap; class_of's argument is ≤ MAX_SMALL.
                    return unsafe { (*h).alloc_small(class_of(layout.size())) };
                }
            }
            // SAFETY: forwarded contract.
            unsafe { self.alloc_general(layout) }
        }

        #[inline]
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            // SAFETY: forwarded contract; we zero what we return unless the OS already did.
            unsafe {
                let (p, fresh) = self.alloc_inner(layout);
                if !p.is_null() && !fresh {
                    core::ptr::write_bytes(p, 0, layout.size());
                }
                p
            }
        }

        #[inline]
        unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
            if p.is_null() {
                return;
            }
            let seg = segment_of(p);
            // SAFETY: p is a live block of ours (caller contract), so its header is readable;
            // the thread owns its heap.
            unsafe {
                if (*seg).kind != KIND_LARGE {
                    let h = crate::thread::current_heap();
                    if !h.is_null() {
                        (*h).free_small(p, seg, layout.size());
                        return;
                    }
                }
                dealloc_general(p, seg, layout.size());
            }
        }

        unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let seg = segment_of(p);
            // SAFETY: p is live; we only read immutable metadata, then either keep p or move it
            // with the GlobalAlloc contract.
            unsafe {
                let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
                    return core::ptr::null_mut();
                };
                if (*seg).kind == KIND_LARGE {
                    if self.slab_size(new_layout).is_none()
                        && crate::thread::with_heap(|h| {
                            crate::large::resize_in_place(h, p, new_size)
                        })
                    {
                        return p;
                    }
                } else if let Some(s) = self.slab_size(new_layout) {
                    let page = page_of(seg, p);
                    let c = (*page).class as usize;
                    if class_of(s) == c || (s <= class_size(c) && c > 0 && s > class_size(c) / 2) {
                        return p;
                    }
                }
                let q = self.alloc_inner(new_layout).0;
                if !q.is_null() {
                    core::ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
                    self.dealloc(p, layout);
                }
                q
            }
        }
    }

    /// Every case of `dealloc` outside its fast path: large blocks, and threads without their own
    /// heap (before the first allocation, after TLS teardown, or beyond [`MAX_HEAPS`]).
    ///
    /// # Safety
    /// `p` is a live block of this allocator in `seg`; `size` is its layout size.
    #[cold]
    #[inline(never)]
    unsafe fn dealloc_general(p: *mut u8, seg: *mut crate::segment::Segment, size: usize) {
        // SAFETY: forwarded contract; with_heap gives us exclusive use of the heap.
        unsafe {
            if (*seg).kind == KIND_LARGE {
                crate::thread::with_heap(|h| crate::large::free(h, p));
            } else {
                crate::thread::with_heap(|h| h.free_small(p, seg, size));
            }
        }
    }

    /// Id of a heap (its slot; reused when a thread exits and another adopts the heap).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct HeapId(pub u32);

    impl fmt::Display for HeapId {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "heap {}", self.0)
        }
    }

    /// Why [`register_heap`] failed.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum RegisterError {
        /// Names are at most 32 bytes.
        NameTooLong(usize),
        /// All heap slots are taken, or the thread is exiting: it runs on the shared fallback
        /// heap.
        NoOwnHeap,
    }

    impl fmt::Display for RegisterError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                Self::NameTooLong(n) => write!(f, "heap name is {n} bytes, the limit is 32"),
                Self::NoOwnHeap => write!(
                    f,
                    "no heap slot free ({MAX_HEAPS} in use) or thread exiting"
                ),
            }
        }
    }

    impl std::error::Error for RegisterError {}

    /// Gives the calling thread its own heap (if it has none yet) and names it, e.g.
    /// `"shard-3"`; the name shows in [`snapshot`] and [`leak_report`]. Shards call this first
    /// thing. Cost: a slot scan on first use, then a few stores.
    pub fn register_heap(name: &str) -> Result<HeapId, RegisterError> {
        if name.len() > 32 {
            return Err(RegisterError::NameTooLong(name.len()));
        }
        let h = crate::thread::ensure_own_heap();
        if h.is_null() {
            return Err(RegisterError::NoOwnHeap);
        }
        // SAFETY: published heaps are never unmapped; name bytes are atomics.
        let hs = unsafe { &(*h).shared };
        for (i, b) in name.bytes().enumerate() {
            hs.name[i].store(b, Ordering::Relaxed);
        }
        hs.name_len.store(name.len() as u8, Ordering::Release);
        Ok(HeapId(hs.id))
    }

    /// The calling thread's own heap, if it has one.
    pub fn current_heap_id() -> Option<HeapId> {
        let h = crate::thread::current_heap();
        // SAFETY: published heaps are never unmapped.
        (!h.is_null()).then(|| HeapId(unsafe { (*h).shared.id }))
    }

    /// Sends the calling thread's pending remote frees and frees what came back to it. A shard
    /// calls this once per loop pass (shard 0 then calls [`central_pool_pass`]). Returns the
    /// number of batches still pending because the ring was full (they go at the next call).
    /// Does nothing on a thread without its own heap.
    pub fn flush_thread() -> usize {
        let h = crate::thread::current_heap();
        if h.is_null() {
            return 0;
        }
        // SAFETY: the thread owns its heap.
        unsafe {
            let left = (*h).flush();
            (*h).drain_back(usize::MAX);
            left
        }
    }

    /// Flushes this thread and runs central passes until nothing moves (at most `max_rounds`
    /// rounds); for shutdown and tests. Returns batches moved. Frees pending on other live
    /// threads stay there until those threads flush.
    pub fn settle(max_rounds: usize) -> usize {
        let mut total = 0;
        let mut idle = 0;
        for _ in 0..max_rounds {
            flush_thread();
            let moved = central_pool_pass(usize::MAX);
            flush_thread();
            total += moved;
            if moved == 0 {
                idle += 1;
                if idle >= 2 {
                    break;
                }
                std::thread::yield_now();
            } else {
                idle = 0;
            }
        }
        total
    }
}

#[cfg(all(test, not(loom)))]
mod tests;

//! Large allocations: one OS mapping each, aligned to the segment size so that the same
//! address mask finds their header, plus a small bounded per-heap cache of freed mappings so
//! that a thread that frees and re-allocates large buffers pays no syscall and takes no lock.
//! A large block may be freed on any thread; its mapping then lands in that thread's cache.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::heap::{bump, Heap};
use crate::os::{self, round_up, OS_PAGE};
use crate::segment::{segment_of, KIND_LARGE, SEG_SIZE};

/// Freed mappings a heap keeps for reuse (count bound).
pub const LARGE_CACHE_SLOTS: usize = 8;
/// Bytes of freed mappings a heap keeps for reuse (size bound).
pub const LARGE_CACHE_BYTES: usize = 32 << 20;
/// Bytes of a large mapping counted as metadata (the header).
pub const LARGE_HEADER: usize = 64;
/// A shrink that frees at least this many bytes unmaps the tail.
const SHRINK_UNMAP_MIN: usize = 1 << 20;

pub(crate) static GROWS_IN_PLACE: AtomicU64 = AtomicU64::new(0);

#[repr(C)]
struct LargeHeader {
    kind: u32,
    _pad: u32,
    map_size: usize,
    offset: usize,
    size: usize,
}

/// A heap's cache of freed large mappings (all-zero = empty). Owner-local.
pub(crate) struct LargeCache {
    slots: [(usize, usize); LARGE_CACHE_SLOTS], // (base, map_size); base 0 = empty
    bytes: usize,
    clock: usize,
}

impl LargeCache {
    fn take(&mut self, need: usize) -> usize {
        let mut best = usize::MAX;
        for (i, &(base, size)) in self.slots.iter().enumerate() {
            if base != 0
                && size >= need
                && size <= need.saturating_mul(2)
                && (best == usize::MAX || size < self.slots[best].1)
            {
                best = i;
            }
        }
        if best == usize::MAX {
            return 0;
        }
        let (base, size) = self.slots[best];
        self.slots[best] = (0, 0);
        self.bytes -= size;
        base
    }

    /// Keeps a mapping; returns what must be unmapped (the evicted entry, or the mapping itself
    /// when it cannot be kept).
    fn put(&mut self, base: usize, size: usize) -> Option<(usize, usize)> {
        if size > LARGE_CACHE_BYTES {
            return Some((base, size));
        }
        let mut evicted = None;
        let slot = match self.slots.iter().position(|s| s.0 == 0) {
            Some(i) => i,
            None => {
                self.clock = (self.clock + 1) % LARGE_CACHE_SLOTS;
                evicted = Some(self.slots[self.clock]);
                self.bytes -= self.slots[self.clock].1;
                self.slots[self.clock] = (0, 0);
                self.clock
            }
        };
        if self.bytes + size > LARGE_CACHE_BYTES {
            // make room: drop the evicted one (if any) and keep the newest only if it fits
            if let Some(e) = evicted {
                // SAFETY: evicted mappings are unused.
                unsafe { os::unmap(e.0 as *mut u8, e.1) };
            }
            evicted = None;
            while self.bytes + size > LARGE_CACHE_BYTES {
                let Some(i) = (0..LARGE_CACHE_SLOTS)
                    .filter(|&i| self.slots[i].0 != 0)
                    .max_by_key(|&i| self.slots[i].1)
                else {
                    break;
                };
                let e = self.slots[i];
                self.bytes -= e.1;
                self.slots[i] = (0, 0);
                // SAFETY: cached mappings are unused.
                unsafe { os::unmap(e.0 as *mut u8, e.1) };
            }
        }
        self.slots[slot] = (base, size);
        self.bytes += size;
        evicted
    }

    /// Returns every cached mapping to the OS.
    pub(crate) fn clear(&mut self) {
        for s in self.slots.iter_mut() {
            if s.0 != 0 {
                // SAFETY: cached mappings are unused.
                unsafe { os::unmap(s.0 as *mut u8, s.1) };
                *s = (0, 0);
            }
        }
        self.bytes = 0;
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

/// Allocates `size` bytes aligned to `align` in a dedicated mapping. Returns the pointer and
/// whether the memory is known to be zero (fresh from the OS). Null when `align >= SEG_SIZE`
/// (4 MiB), on overflow, or when the OS refuses.
///
/// # Safety
/// The caller owns `h`.
pub(crate) unsafe fn alloc(h: &Heap, size: usize, align: usize) -> (*mut u8, bool) {
    if align >= SEG_SIZE {
        return (core::ptr::null_mut(), false);
    }
    let offset = align.max(LARGE_HEADER);
    let Some(need) = size
        .checked_add(offset)
        .and_then(|n| n.checked_add(OS_PAGE - 1))
    else {
        return (core::ptr::null_mut(), false);
    };
    let need = need & !(OS_PAGE - 1);
    // SAFETY: caller owns h.
    let cache = unsafe { &mut h.local().large };
    let mut base = cache.take(need);
    let mut fresh = false;
    let map_size;
    if base != 0 {
        bump(&h.shared.large_cache_hits, 1);
        // SAFETY: cached mappings are ours and unused; the header is at their base.
        map_size = unsafe { (*(base as *mut LargeHeader)).map_size };
    } else {
        base = os::map_aligned(need, SEG_SIZE) as usize;
        if base == 0 {
            return (core::ptr::null_mut(), false);
        }
        fresh = true;
        map_size = need;
    }
    h.shared
        .large_cached_bytes
        .store(cache.bytes() as u64, Ordering::Relaxed);
    // SAFETY: base is a mapping of map_size ≥ offset + size bytes owned by us.
    unsafe {
        (base as *mut LargeHeader).write(LargeHeader {
            kind: KIND_LARGE,
            _pad: 0,
            map_size,
            offset,
            size,
        });
    }
    bump(&h.shared.large_allocs, 1);
    bump(&h.shared.large_alloc_bytes, size as u64);
    ((base + offset) as *mut u8, fresh)
}

/// Frees a large allocation (on any thread).
///
/// # Safety
/// The caller owns `h`; `p` was returned by [`alloc`] and is not used afterwards.
pub(crate) unsafe fn free(h: &Heap, p: *mut u8) {
    let hdr = segment_of(p) as *mut LargeHeader;
    // SAFETY: p is live, so its header is.
    let (base, map_size, size) = unsafe { (hdr as usize, (*hdr).map_size, (*hdr).size) };
    bump(&h.shared.large_frees, 1);
    bump(&h.shared.large_free_bytes, size as u64);
    // SAFETY: caller owns h.
    let cache = unsafe { &mut h.local().large };
    if let Some((b, s)) = cache.put(base, map_size) {
        // SAFETY: evicted or uncacheable mappings are unused.
        unsafe { os::unmap(b as *mut u8, s) };
    }
    h.shared
        .large_cached_bytes
        .store(cache.bytes() as u64, Ordering::Relaxed);
}

/// Usable size of a large allocation.
///
/// # Safety
/// `p` is a live large allocation.
pub(crate) unsafe fn usable_size(p: *const u8) -> usize {
    let h = segment_of(p) as *mut LargeHeader;
    // SAFETY: live header.
    unsafe { (*h).size }
}

/// Resizes a large allocation without moving it: within the mapping, or by growing the mapping
/// in place (`mremap` without MAYMOVE). Shrinks unmap the tail when that frees ≥ 1 MiB.
///
/// # Safety
/// The caller owns `heap`; `p` is a live large allocation.
pub(crate) unsafe fn resize_in_place(heap: &Heap, p: *mut u8, new_size: usize) -> bool {
    let h = segment_of(p) as *mut LargeHeader;
    // SAFETY: live header, owned by the caller's allocation.
    unsafe {
        let (base, map_size, offset, old) = (h as usize, (*h).map_size, (*h).offset, (*h).size);
        let Some(need) = new_size
            .checked_add(offset)
            .and_then(|n| n.checked_add(OS_PAGE - 1))
        else {
            return false;
        };
        let need = need & !(OS_PAGE - 1);
        if need <= map_size {
            if map_size - need >= SHRINK_UNMAP_MIN {
                os::unmap((base + need) as *mut u8, map_size - need);
                (*h).map_size = need;
            }
        } else if os::grow_in_place(base as *mut u8, map_size, round_up(need, OS_PAGE)) {
            (*h).map_size = need;
            GROWS_IN_PLACE.fetch_add(1, Ordering::Relaxed);
        } else {
            return false;
        }
        (*h).size = new_size;
        if new_size >= old {
            bump(&heap.shared.large_alloc_bytes, (new_size - old) as u64);
        } else {
            bump(&heap.shared.large_free_bytes, (old - new_size) as u64);
        }
        true
    }
}

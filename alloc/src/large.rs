//! Large allocations: one OS mapping each, aligned to the segment size so that the same
//! address mask finds their header, plus a small bounded cache of freed mappings so that a
//! program that frees and re-allocates large buffers does not pay two syscalls each time.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::heap::META_BYTES;
use crate::os::{self, round_up, OS_PAGE};
use crate::segment::{segment_of, KIND_LARGE, SEG_SIZE};
use crate::sync::SpinLock;

/// Freed mappings kept for reuse (count bound).
pub const LARGE_CACHE_SLOTS: usize = 16;
/// Bytes of freed mappings kept for reuse (size bound).
pub const LARGE_CACHE_BYTES: usize = 64 << 20;
/// Mappings larger than this are never cached.
pub const LARGE_CACHE_MAX_ENTRY: usize = 32 << 20;
/// Bytes of a large mapping counted as metadata (the header).
pub const LARGE_HEADER: usize = 64;
/// A shrink that frees at least this many bytes unmaps the tail.
const SHRINK_UNMAP_MIN: usize = 1 << 20;

#[repr(C)]
struct LargeHeader {
    kind: u32,
    _pad: u32,
    map_size: usize,
    offset: usize,
    size: usize,
}

struct Cache {
    slots: [(usize, usize); LARGE_CACHE_SLOTS], // (base, map_size), base 0 = empty
    bytes: usize,
    clock: usize,
}

struct CacheCell(UnsafeCell<Cache>);
// SAFETY: only touched while CACHE_LOCK is held.
unsafe impl Sync for CacheCell {}

static CACHE_LOCK: SpinLock = SpinLock::new();
static CACHE: CacheCell = CacheCell(UnsafeCell::new(Cache { slots: [(0, 0); LARGE_CACHE_SLOTS], bytes: 0, clock: 0 }));

pub(crate) static LIVE_BYTES: AtomicU64 = AtomicU64::new(0);
pub(crate) static LIVE_COUNT: AtomicU64 = AtomicU64::new(0);
pub(crate) static TOTAL_ALLOCS: AtomicU64 = AtomicU64::new(0);
pub(crate) static CACHE_HITS: AtomicU64 = AtomicU64::new(0);
pub(crate) static CACHED_BYTES: AtomicU64 = AtomicU64::new(0);
pub(crate) static GROWS_IN_PLACE: AtomicU64 = AtomicU64::new(0);

fn cache_take(need: usize) -> usize {
    CACHE_LOCK.lock();
    // SAFETY: lock held.
    let c = unsafe { &mut *CACHE.0.get() };
    let mut best = usize::MAX;
    for (i, &(base, size)) in c.slots.iter().enumerate() {
        if base != 0 && size >= need && size <= need.saturating_mul(2) && (best == usize::MAX || size < c.slots[best].1) {
            best = i;
        }
    }
    let mut out = 0;
    if best != usize::MAX {
        let (base, size) = c.slots[best];
        c.slots[best] = (0, 0);
        c.bytes -= size;
        CACHED_BYTES.store(c.bytes as u64, Ordering::Relaxed);
        out = base;
    }
    CACHE_LOCK.unlock();
    out
}

/// Caches a freed mapping; evicts an older one when a bound is hit. Returns mappings that must
/// be unmapped by the caller (outside the lock).
fn cache_put(base: usize, size: usize) -> [(usize, usize); 2] {
    let mut evict = [(0, 0); 2];
    if size > LARGE_CACHE_MAX_ENTRY {
        evict[0] = (base, size);
        return evict;
    }
    CACHE_LOCK.lock();
    // SAFETY: lock held.
    let c = unsafe { &mut *CACHE.0.get() };
    let mut n = 0;
    while c.bytes + size > LARGE_CACHE_BYTES && n < 1 {
        // evict the largest entry
        if let Some(i) = (0..LARGE_CACHE_SLOTS).filter(|&i| c.slots[i].0 != 0).max_by_key(|&i| c.slots[i].1) {
            evict[n] = c.slots[i];
            c.bytes -= c.slots[i].1;
            c.slots[i] = (0, 0);
        }
        n += 1;
    }
    if c.bytes + size > LARGE_CACHE_BYTES {
        evict[1] = (base, size);
    } else {
        let slot = match c.slots.iter().position(|s| s.0 == 0) {
            Some(i) => i,
            None => {
                c.clock = (c.clock + 1) % LARGE_CACHE_SLOTS;
                let i = c.clock;
                evict[1] = c.slots[i];
                c.bytes -= c.slots[i].1;
                i
            }
        };
        c.slots[slot] = (base, size);
        c.bytes += size;
    }
    CACHED_BYTES.store(c.bytes as u64, Ordering::Relaxed);
    CACHE_LOCK.unlock();
    evict
}

/// Allocates `size` bytes aligned to `align` in a dedicated mapping. Returns the pointer and
/// whether the memory is known to be zero (fresh from the OS). Null when `align >= SEG_SIZE`
/// (4 MiB), on overflow, or when the OS refuses.
pub(crate) fn alloc(size: usize, align: usize) -> (*mut u8, bool) {
    if align >= SEG_SIZE {
        return (core::ptr::null_mut(), false);
    }
    let offset = align.max(LARGE_HEADER);
    let Some(need) = size.checked_add(offset).and_then(|n| n.checked_add(OS_PAGE - 1)) else {
        return (core::ptr::null_mut(), false);
    };
    let need = need & !(OS_PAGE - 1);
    let mut base = cache_take(need);
    let mut fresh = false;
    let map_size;
    if base != 0 {
        CACHE_HITS.fetch_add(1, Ordering::Relaxed);
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
    // SAFETY: base is a mapping of map_size ≥ offset + size bytes owned by us.
    unsafe {
        (base as *mut LargeHeader).write(LargeHeader { kind: KIND_LARGE, _pad: 0, map_size, offset, size });
    }
    LIVE_BYTES.fetch_add(size as u64, Ordering::Relaxed);
    LIVE_COUNT.fetch_add(1, Ordering::Relaxed);
    TOTAL_ALLOCS.fetch_add(1, Ordering::Relaxed);
    META_BYTES.fetch_add(LARGE_HEADER as u64, Ordering::Relaxed);
    ((base + offset) as *mut u8, fresh)
}

/// Frees a large allocation (from any thread).
///
/// # Safety
/// `p` was returned by [`alloc`] and is not used afterwards.
pub(crate) unsafe fn free(p: *mut u8) {
    let h = segment_of(p) as *mut LargeHeader;
    // SAFETY: p is live, so its header is.
    let (base, map_size, size) = unsafe { (h as usize, (*h).map_size, (*h).size) };
    LIVE_BYTES.fetch_sub(size as u64, Ordering::Relaxed);
    LIVE_COUNT.fetch_sub(1, Ordering::Relaxed);
    META_BYTES.fetch_sub(LARGE_HEADER as u64, Ordering::Relaxed);
    for (b, s) in cache_put(base, map_size) {
        if b != 0 {
            // SAFETY: evicted or uncached mappings are unused.
            unsafe { os::unmap(b as *mut u8, s) };
        }
    }
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
/// `p` is a live large allocation.
pub(crate) unsafe fn resize_in_place(p: *mut u8, new_size: usize) -> bool {
    let h = segment_of(p) as *mut LargeHeader;
    // SAFETY: live header, owned by the caller's allocation.
    unsafe {
        let (base, map_size, offset, old) = (h as usize, (*h).map_size, (*h).offset, (*h).size);
        let Some(need) = new_size.checked_add(offset).and_then(|n| n.checked_add(OS_PAGE - 1)) else {
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
            LIVE_BYTES.fetch_add((new_size - old) as u64, Ordering::Relaxed);
        } else {
            LIVE_BYTES.fetch_sub((old - new_size) as u64, Ordering::Relaxed);
        }
        true
    }
}

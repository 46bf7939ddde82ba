//! Memory monitor: a point-in-time snapshot of every heap and the OS footprint, and a
//! human-readable leak report.
//!
//! Counters are single-writer and read with relaxed loads, so a snapshot taken while threads
//! run is a consistent-enough estimate (each number is exact for some recent instant).

use core::fmt::Write as _;
use core::sync::atomic::Ordering;

use crate::heap::{
    self, heap_count, heap_ptr, STATE_ABANDONED, STATE_ACTIVE, STATE_CENTRAL, STATE_FALLBACK,
};
use crate::size_class::{class_size, NUM_CLASSES};

/// Live blocks of one size class in one heap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassSnapshot {
    /// Block size of the class.
    pub class_size: usize,
    /// Blocks allocated and not yet freed back to this heap (includes remote frees in flight).
    pub live_allocs: u64,
    /// `live_allocs * class_size`.
    pub live_bytes: u64,
    /// Blocks allocated since start.
    pub total_allocs: u64,
}

/// Who runs a heap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeapState {
    /// A live thread owns it.
    Active,
    /// Its thread exited; the central pool services it until a new thread adopts it.
    Abandoned,
    /// The shared fallback heap (threads without a heap of their own).
    Fallback,
}

/// One heap.
#[derive(Clone, Debug)]
pub struct HeapSnapshot {
    /// Slot id.
    pub id: u32,
    /// Name given by [`crate::register_heap`], empty if none.
    pub name: String,
    /// Who runs it.
    pub state: HeapState,
    /// Classes with any activity (total_allocs > 0).
    pub classes: Vec<ClassSnapshot>,
    /// Sum of `live_bytes` over classes.
    pub live_bytes: u64,
    /// Sum of `live_allocs` over classes.
    pub live_allocs: u64,
    /// Blocks this heap sent to other owners through the central pool.
    pub remote_sent_blocks: u64,
    /// Batches this heap sent.
    pub remote_sent_batches: u64,
    /// Blocks sent towards this heap that it has not freed yet (at the central pool or on its
    /// return ring).
    pub remote_inbound_in_flight: u64,
    /// Times this heap's outbound ring was full.
    pub out_ring_full: u64,
    /// Messages waiting in this heap because its outbound ring was full (now).
    pub stalled_messages: u64,
    /// Slab pages in use.
    pub pages_in_use: u64,
    /// Segments mapped.
    pub segments: u64,
    /// Times a new thread adopted this heap.
    pub adoptions: u64,
}

/// The whole allocator.
#[derive(Clone, Debug)]
pub struct MemorySnapshot {
    /// Every heap slot in use.
    pub heaps: Vec<HeapSnapshot>,
    /// Live large allocations and their bytes.
    pub large_live_allocs: u64,
    /// Requested bytes of live large allocations.
    pub large_live_bytes: u64,
    /// Freed large mappings kept for reuse.
    pub large_cached_bytes: u64,
    /// Remote-freed blocks not yet back at their owner (sum over heaps).
    pub remote_in_flight_blocks: u64,
    /// Messages (batch nodes, returned nodes) parked at the central pool because their
    /// destination's ring was full.
    pub remote_parked_messages: u64,
    /// Bytes mapped from the OS since start.
    pub os_mapped_bytes: u64,
    /// Bytes returned to the OS since start.
    pub os_returned_bytes: u64,
    /// `os_mapped_bytes - os_returned_bytes`.
    pub os_current_bytes: u64,
    /// Bytes of that used for metadata (segment headers, heap structs, large headers).
    pub metadata_bytes: u64,
    /// Central pool passes run / skipped because another thread held the duty.
    pub central_passes: u64,
    /// See `central_passes`.
    pub central_passes_busy: u64,
    /// Batches routed by the central pool.
    pub central_batches_routed: u64,
    /// Times a batch had to be parked (owner ring full).
    pub central_overflow_events: u64,
    /// Times a pass stopped at its budget.
    pub central_budget_exhausted: u64,
    /// Allocations served by the shared fallback heap (threads without their own heap).
    pub fallback_uses: u64,
    /// Times a thread found every heap slot taken.
    pub heaps_exhausted: u64,
    /// Process resident set size when the snapshot was taken.
    pub process_rss_bytes: u64,
}

/// Takes a snapshot. Cost: O(heaps × classes) relaxed loads plus the returned vectors; safe to
/// call from any thread at any time (it allocates through the global allocator, like any code).
pub fn snapshot() -> MemorySnapshot {
    let mut heaps = Vec::new();
    let mut in_flight = 0u64;
    let (mut la_n, mut la_b, mut lf_n, mut lf_b, mut l_cached) = (0u64, 0u64, 0u64, 0u64, 0u64);
    for i in 0..heap_count() {
        let h = heap_ptr(i);
        if h.is_null() {
            continue;
        }
        // SAFETY: published heaps are never unmapped; we only read atomics.
        let hs = unsafe { &(*h).shared };
        let state = match hs.state.load(Ordering::Acquire) {
            STATE_ACTIVE => HeapState::Active,
            STATE_ABANDONED | STATE_CENTRAL => HeapState::Abandoned,
            STATE_FALLBACK => HeapState::Fallback,
            _ => continue,
        };
        let len = hs.name_len.load(Ordering::Acquire) as usize;
        let name_bytes: Vec<u8> = hs.name[..len.min(32)]
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let mut classes = Vec::new();
        let (mut lb, mut la) = (0, 0);
        for c in 0..NUM_CLASSES {
            let allocs = hs.class_allocs[c].load(Ordering::Relaxed);
            if allocs == 0 {
                continue;
            }
            let frees = hs.class_frees[c].load(Ordering::Relaxed);
            let live = allocs.saturating_sub(frees);
            let bytes = live * class_size(c) as u64;
            lb += bytes;
            la += live;
            classes.push(ClassSnapshot {
                class_size: class_size(c),
                live_allocs: live,
                live_bytes: bytes,
                total_allocs: allocs,
            });
        }
        let inbound = hs
            .inbound_sent
            .load(Ordering::Relaxed)
            .saturating_sub(hs.inbound_received.load(Ordering::Relaxed));
        in_flight += inbound;
        la_n += hs.large_allocs.load(Ordering::Relaxed);
        la_b += hs.large_alloc_bytes.load(Ordering::Relaxed);
        lf_n += hs.large_frees.load(Ordering::Relaxed);
        lf_b += hs.large_free_bytes.load(Ordering::Relaxed);
        l_cached += hs.large_cached_bytes.load(Ordering::Relaxed);
        heaps.push(HeapSnapshot {
            id: hs.id,
            name: String::from_utf8_lossy(&name_bytes).into_owned(),
            state,
            classes,
            live_bytes: lb,
            live_allocs: la,
            remote_sent_blocks: hs.remote_sent_blocks.load(Ordering::Relaxed),
            remote_sent_batches: hs.remote_sent_batches.load(Ordering::Relaxed),
            remote_inbound_in_flight: inbound,
            out_ring_full: hs.out_ring_full.load(Ordering::Relaxed),
            stalled_messages: hs.stalled_now.load(Ordering::Relaxed),
            pages_in_use: hs.pages_in_use.load(Ordering::Relaxed),
            segments: hs.segments.load(Ordering::Relaxed),
            adoptions: hs.adoptions.load(Ordering::Relaxed),
        });
    }
    let mapped = crate::os::OS_MAPPED.load(Ordering::Relaxed);
    let returned = crate::os::OS_RETURNED.load(Ordering::Relaxed);
    MemorySnapshot {
        heaps,
        large_live_allocs: la_n.saturating_sub(lf_n),
        large_live_bytes: la_b.saturating_sub(lf_b),
        large_cached_bytes: l_cached,
        remote_in_flight_blocks: in_flight,
        remote_parked_messages: crate::central::parked_blocks(),
        os_mapped_bytes: mapped,
        os_returned_bytes: returned,
        os_current_bytes: mapped.saturating_sub(returned),
        metadata_bytes: heap::META_BYTES.load(Ordering::Relaxed)
            + la_n.saturating_sub(lf_n) * crate::large::LARGE_HEADER as u64,
        central_passes: crate::central::PASSES.load(Ordering::Relaxed),
        central_passes_busy: crate::central::PASSES_SKIPPED_BUSY.load(Ordering::Relaxed),
        central_batches_routed: crate::central::BATCHES_ROUTED.load(Ordering::Relaxed),
        central_overflow_events: crate::central::OVERFLOW_EVENTS.load(Ordering::Relaxed),
        central_budget_exhausted: crate::central::BUDGET_EXHAUSTED.load(Ordering::Relaxed),
        fallback_uses: heap::FALLBACK_USES.load(Ordering::Relaxed),
        heaps_exhausted: heap::HEAPS_EXHAUSTED.load(Ordering::Relaxed),
        process_rss_bytes: crate::os::process_rss_bytes(),
    }
}

impl MemorySnapshot {
    /// Live small-block bytes over all heaps.
    pub fn small_live_bytes(&self) -> u64 {
        self.heaps.iter().map(|h| h.live_bytes).sum()
    }
    /// Live small blocks over all heaps.
    pub fn small_live_allocs(&self) -> u64 {
        self.heaps.iter().map(|h| h.live_allocs).sum()
    }
}

/// What is still live, per heap and class, after flushing this thread and settling the central
/// pool. `lattice` logs it at shutdown. Cost: a few central passes plus a snapshot.
pub fn leak_report() -> String {
    crate::settle(16);
    let s = snapshot();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "lattice-alloc leak report: {} small blocks ({} B) live in {} heaps; {} large ({} B); {} remote frees in flight ({} parked)",
        s.small_live_allocs(),
        s.small_live_bytes(),
        s.heaps.len(),
        s.large_live_allocs,
        s.large_live_bytes,
        s.remote_in_flight_blocks,
        s.remote_parked_messages
    );
    let _ = writeln!(
        out,
        "os: mapped {} B, returned {} B, current {} B (metadata {} B), rss {} B",
        s.os_mapped_bytes,
        s.os_returned_bytes,
        s.os_current_bytes,
        s.metadata_bytes,
        s.process_rss_bytes
    );
    for h in &s.heaps {
        if h.live_allocs == 0 && h.remote_inbound_in_flight == 0 {
            continue;
        }
        let name = if h.name.is_empty() {
            "-"
        } else {
            h.name.as_str()
        };
        let _ = writeln!(
            out,
            "heap {} ({name}, {:?}): {} blocks, {} B live, {} inbound in flight",
            h.id, h.state, h.live_allocs, h.live_bytes, h.remote_inbound_in_flight
        );
        for c in h.classes.iter().filter(|c| c.live_allocs > 0) {
            let _ = writeln!(
                out,
                "  class {:>6} B: {} live ({} B)",
                c.class_size, c.live_allocs, c.live_bytes
            );
        }
    }
    out
}

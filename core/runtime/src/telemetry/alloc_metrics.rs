//! Prometheus rendering of the `lattice-alloc` memory monitor (used when it is the global allocator).

use super::prom::{Kind, Writer};

/// A per-heap gauge: metric name, help text, and how to read it from a heap's snapshot.
type HeapGauge = (
    &'static str,
    &'static str,
    fn(&lattice_alloc::HeapSnapshot) -> u64,
);

/// Appends the allocator's families to `out`. Cost: one [`lattice_alloc::snapshot`].
pub fn render(w: &mut Writer<'_>) {
    let s = lattice_alloc::snapshot();
    let heap_gauges: [HeapGauge; 4] = [
        (
            "lattice_alloc_heap_live_bytes",
            "Bytes live in small-object pages of each heap.",
            |h| h.live_bytes,
        ),
        (
            "lattice_alloc_heap_live_allocs",
            "Small allocations live in each heap.",
            |h| h.live_allocs,
        ),
        (
            "lattice_alloc_heap_pages_in_use",
            "64 KiB pages in use by each heap.",
            |h| h.pages_in_use,
        ),
        (
            "lattice_alloc_heap_stalled_messages",
            "Remote-free messages waiting for a full ring, per heap.",
            |h| h.stalled_messages,
        ),
    ];
    let heap_families = heap_gauges
        .iter()
        .map(|(n, h, f)| (*n, Kind::Gauge, *h, *f))
        .chain([(
            "lattice_alloc_heap_remote_sent_blocks_total",
            Kind::Counter,
            "Blocks each heap freed that belonged to another heap.",
            (|h| h.remote_sent_blocks) as fn(&lattice_alloc::HeapSnapshot) -> u64,
        )]);
    for (name, kind, help, f) in heap_families {
        w.family(name, kind, help);
        for h in &s.heaps {
            let id = h.id.to_string();
            w.sample(name, &[("heap", &id), ("name", &h.name)], f(h));
        }
    }
    let gauges = [
        (
            "lattice_alloc_large_live_bytes",
            "Bytes in live large (own mapping) allocations.",
            s.large_live_bytes,
        ),
        (
            "lattice_alloc_large_cached_bytes",
            "Bytes of large mappings cached for reuse.",
            s.large_cached_bytes,
        ),
        (
            "lattice_alloc_remote_in_flight_blocks",
            "Remotely freed blocks not yet back with their owner.",
            s.remote_in_flight_blocks,
        ),
        (
            "lattice_alloc_os_current_bytes",
            "Bytes currently mapped from the OS.",
            s.os_current_bytes,
        ),
        (
            "lattice_alloc_metadata_bytes",
            "Allocator metadata bytes.",
            s.metadata_bytes,
        ),
    ];
    for (name, help, v) in gauges {
        w.single(name, Kind::Gauge, help, v);
    }
    let counters = [
        (
            "lattice_alloc_os_mapped_bytes_total",
            "Bytes mapped from the OS so far.",
            s.os_mapped_bytes,
        ),
        (
            "lattice_alloc_os_returned_bytes_total",
            "Bytes returned to the OS so far.",
            s.os_returned_bytes,
        ),
        (
            "lattice_alloc_central_passes_total",
            "Central pool passes run.",
            s.central_passes,
        ),
        (
            "lattice_alloc_central_overflow_events_total",
            "Times the central pool parked a message because a ring was full.",
            s.central_overflow_events,
        ),
    ];
    for (name, help, v) in counters {
        w.single(name, Kind::Counter, help, v);
    }
}

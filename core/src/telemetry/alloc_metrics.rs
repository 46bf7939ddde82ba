//! Prometheus rendering of the `lattice-alloc` memory monitor (used when it is the global allocator).

use std::fmt::Write as _;

fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', " ")
}

/// A per-heap gauge: metric name, help text, and how to read it from a heap's snapshot.
type HeapGauge = (
    &'static str,
    &'static str,
    fn(&lattice_alloc::HeapSnapshot) -> u64,
);

/// Appends the allocator's families to `out`. Cost: one [`lattice_alloc::snapshot`].
pub fn render(out: &mut String) {
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
    for (name, help, f) in heap_gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for h in &s.heaps {
            let _ = writeln!(
                out,
                "{name}{{heap=\"{}\",name=\"{}\"}} {}",
                h.id,
                label(&h.name),
                f(h)
            );
        }
    }
    let _ = writeln!(out, "# HELP lattice_alloc_heap_remote_sent_blocks_total Blocks each heap freed that belonged to another heap.\n# TYPE lattice_alloc_heap_remote_sent_blocks_total counter");
    for h in &s.heaps {
        let _ = writeln!(
            out,
            "lattice_alloc_heap_remote_sent_blocks_total{{heap=\"{}\",name=\"{}\"}} {}",
            h.id,
            label(&h.name),
            h.remote_sent_blocks
        );
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
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
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
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
    }
}

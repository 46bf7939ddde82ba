//! Per-shard runtime counters and the registry of everything `/metrics` renders.
//!
//! Each shard writes only its own [`ShardMetrics`] (relaxed atomics on its own cache lines); the
//! admin listener reads them all when scraped. Other subsystems add their families through
//! [`Metrics::add_renderer`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::prom::{Kind, Writer};

crate::shard_counters! {
    /// Counters and gauges of one shard's runtime: connections, sessions, bytes, mesh, timers.
    /// Roles count their own (`lattice-server`'s gate and service metrics).
    pub struct ShardMetrics("lattice") {
        connections_accepted_total: Counter, "Connections handed to this shard by the acceptor.";
        connections_rejected_total: Counter, "Connections refused because net.max_connections was reached.";
        sessions_open: Gauge, "Connections with a session on this shard (binary, WebSocket, and HTTP connections until they close or upgrade), detached resumable sessions included (see lattice_sessions_detached).";
        sessions_closed_peer_total: Counter, "Sessions closed by the peer.";
        sessions_closed_protocol_total: Counter, "Sessions closed for a protocol error (bad length, flags, truncated frame, bad compressed body).";
        sessions_closed_send_overflow_total: Counter, "Sessions closed because their send buffer passed net.send_buffer_limit.";
        sessions_closed_io_total: Counter, "Sessions closed on a socket error.";
        sessions_closed_app_total: Counter, "Sessions closed by the application (e.g. version mismatch, no Hello first).";
        sessions_closed_shutdown_total: Counter, "Sessions closed by server shutdown.";
        sessions_closed_idle_total: Counter, "Sessions closed because the peer sent nothing for net.idle_timeout_ms.";
        frames_in_total: Counter, "Frames decoded from clients.";
        frames_out_total: Counter, "Frames queued to clients.";
        bytes_in_total: Counter, "Bytes read from client sockets.";
        bytes_out_total: Counter, "Bytes written to client sockets.";
        app_panics_total: Counter, "Panics caught around application callbacks outside handlers (the session being served was closed).";
        mesh_sent_total: Counter, "Messages this shard put on rings to other shards.";
        mesh_received_total: Counter, "Messages this shard took from other shards' rings.";
        mesh_ring_full_total: Counter, "Sends that found the destination ring full and waited in the backlog.";
        mesh_backlog: Gauge, "Messages waiting in this shard's backlog for full rings.";
        mesh_backlog_refused_total: Counter, "Sends refused because the backlog for their destination was at runtime.mesh_backlog_limit (client requests answered BUSY).";
        mesh_backlog_over_limit_total: Counter, "Never-drop messages queued while the backlog for their destination was at its limit.";
        mesh_wakeups_total: Counter, "Times this shard woke a parked shard.";
        mesh_batches_full_total: Counter, "Reply batches for another shard sent before the end of a loop pass because they held runtime.mesh_batch frames.";
        self_queue_depth: Gauge, "Messages this shard sent to itself, waiting for the next pass.";
        timers_pending: Gauge, "Timers pending in this shard's wheel.";
        timers_fired_total: Counter, "Timers fired by this shard's wheel.";
        timers_deferred_total: Counter, "Passes that hit runtime.timer_max_fire_per_pass (the rest fired next pass).";
        timers_rejected_total: Counter, "Timer inserts refused because the wheel was full (runtime.timer_max_timers).";
        timers_dead_records: Gauge, "Records of cancelled or rescheduled timers still in this shard's wheel (4 bytes each; compacted once they exceed half the pending timers + 16384, the wheel's dead_record_slack).";
        timers_compacted_total: Counter, "Dead timer records dropped by the wheel's compaction (the rest go when their slot comes up).";
        clock_backwards_total: Counter, "Clock readings that went backwards and were clamped.";
        loop_passes_total: Counter, "Loop passes this shard completed (a shard that is not parked and makes no pass is stuck).";
    }
}

type Renderer = Box<dyn Fn(&mut Writer<'_>) + Send + Sync>;

/// All shards' metrics plus renderers contributed by other subsystems.
pub struct Metrics {
    /// One entry per shard, indexed by shard id.
    pub shards: Vec<ShardMetrics>,
    /// I/O driver of each shard: 0 unknown, 1 io_uring, 2 epoll.
    pub drivers: Vec<AtomicU64>,
    /// Gateway transport counters, one entry per shard.
    pub gateway: Vec<super::gateway::GatewayMetrics>,
    extra: Mutex<Vec<Renderer>>,
}

impl Metrics {
    /// Metrics for `shards` shards, all zero.
    pub fn new(shards: usize) -> Self {
        Metrics {
            shards: (0..shards).map(|_| ShardMetrics::default()).collect(),
            drivers: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            gateway: (0..shards).map(|_| Default::default()).collect(),
            extra: Mutex::new(Vec::new()),
        }
    }

    /// Adds a renderer that appends complete metric families (with `# HELP`/`# TYPE`).
    pub fn add_renderer(&self, r: impl Fn(&mut Writer<'_>) + Send + Sync + 'static) {
        self.extra
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(r));
    }

    /// Sum of one field over all shards.
    pub fn total(&self, f: impl Fn(&ShardMetrics) -> &AtomicU64) -> u64 {
        self.shards
            .iter()
            .map(|s| f(s).load(Ordering::Relaxed))
            .sum()
    }

    /// Renders everything in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        let mut w = Writer::new(&mut out);
        ShardMetrics::render(&self.shards, &mut w);
        super::gateway::GatewayMetrics::render(&self.gateway, &mut w);
        w.family(
            "lattice_shard_driver",
            Kind::Gauge,
            "I/O driver each shard runs on (1 = this one).",
        );
        for (shard, d) in self.drivers.iter().enumerate() {
            let d = d.load(Ordering::Relaxed);
            let shard = shard.to_string();
            for (code, name) in [(1, "uring"), (2, "epoll")] {
                w.sample(
                    "lattice_shard_driver",
                    &[("shard", &shard), ("driver", name)],
                    u64::from(d == code),
                );
            }
        }
        for r in self.extra.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            r(&mut w);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_shard_and_extra_families() {
        let m = Metrics::new(2);
        ShardMetrics::add(&m.shards[1].frames_in_total, 5);
        m.drivers[0].store(2, Ordering::Relaxed);
        m.add_renderer(|w| {
            w.single("x", Kind::Gauge, "y", 1u64);
        });
        let text = m.render();
        assert!(text.contains("lattice_frames_in_total{shard=\"1\"} 5\n"));
        assert!(text.contains("lattice_frames_in_total{shard=\"0\"} 0\n"));
        assert!(text.contains("lattice_shard_driver{shard=\"0\",driver=\"epoll\"} 1\n"));
        assert!(text.contains("lattice_shard_driver{shard=\"0\",driver=\"uring\"} 0\n"));
        assert!(text.ends_with("x 1\n"));
        assert_eq!(m.total(|s| &s.frames_in_total), 5);
    }
}

//! Per-shard counters and their Prometheus text rendering.
//!
//! Each shard writes only its own [`ShardMetrics`] (relaxed atomics on its own cache lines); the
//! admin listener reads them all when scraped. Other subsystems add their families through
//! [`Metrics::add_renderer`].

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

macro_rules! shard_metrics {
    ($( $field:ident : $kind:literal, $help:literal; )*) => {
        /// Counters and gauges of one shard. Field names are the Prometheus names without the
        /// `lattice_` prefix.
        #[derive(Default)]
        #[repr(align(128))]
        pub struct ShardMetrics {
            $( #[doc = $help] pub $field: AtomicU64, )*
            /// I/O driver of the shard: 0 unknown, 1 io_uring, 2 epoll.
            pub driver: AtomicU64,
        }

        const DESCRIPTORS: &[(&str, &str, &str)] = &[ $( (stringify!($field), $kind, $help), )* ];

        impl ShardMetrics {
            fn values(&self) -> Vec<u64> {
                vec![ $( self.$field.load(Ordering::Relaxed), )* ]
            }
        }
    };
}

shard_metrics! {
    connections_accepted_total: "counter", "Connections handed to this shard by the acceptor.";
    connections_rejected_total: "counter", "Connections refused because net.max_connections was reached.";
    sessions_open: "gauge", "Sessions currently open on this shard.";
    sessions_closed_peer_total: "counter", "Sessions closed by the peer.";
    sessions_closed_protocol_total: "counter", "Sessions closed for a protocol error (bad length, flags, truncated frame).";
    sessions_closed_send_overflow_total: "counter", "Sessions closed because their send buffer passed net.send_buffer_limit.";
    sessions_closed_io_total: "counter", "Sessions closed on a socket error.";
    sessions_closed_app_total: "counter", "Sessions closed by the application (e.g. version mismatch).";
    sessions_closed_shutdown_total: "counter", "Sessions closed by server shutdown.";
    sessions_closed_idle_total: "counter", "Sessions closed because the peer sent nothing for net.idle_timeout_ms.";
    frames_in_total: "counter", "Frames decoded from clients.";
    frames_out_total: "counter", "Frames queued to clients.";
    bytes_in_total: "counter", "Bytes read from client sockets.";
    bytes_out_total: "counter", "Bytes written to client sockets.";
    unknown_opcode_total: "counter", "Client frames with an opcode no message has (skipped, answered with an error).";
    rejected_internal_total: "counter", "Client frames carrying a server-internal (no_client) opcode (rejected).";
    bad_request_total: "counter", "Client frames whose body did not decode (answered with an error).";
    dropped_busy_total: "counter", "Client requests dropped because the service inbound queue was full.";
    handler_panics_total: "counter", "Handler panics caught (answered with an error; the shard went on).";
    mesh_sent_total: "counter", "Messages this shard sent to other shards.";
    mesh_received_total: "counter", "Messages this shard received from other shards.";
    mesh_ring_full_total: "counter", "Sends that found the destination ring full and were kept in the backlog.";
    mesh_backlog: "gauge", "Messages waiting in this shard's backlog for a full ring.";
    mesh_wakeups_total: "counter", "Times this shard woke a parked shard.";
    service_queue_depth: "gauge", "Requests waiting in this shard's service inbound queues.";
    timers_pending: "gauge", "Timers pending in this shard's wheel.";
    timers_fired_total: "counter", "Timers fired by this shard's wheel.";
    timers_deferred_total: "counter", "Passes that hit runtime.timer_max_fire_per_pass (the rest fired next pass).";
    timers_rejected_total: "counter", "Timer inserts refused because the wheel was full (runtime.timer_max_timers).";
    clock_backwards_total: "counter", "Clock readings that went backwards and were clamped.";
}

impl ShardMetrics {
    /// Adds `n` to a counter (relaxed).
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

type Renderer = Box<dyn Fn(&mut String) + Send + Sync>;

/// All shards' metrics plus renderers contributed by other subsystems.
pub struct Metrics {
    /// One entry per shard, indexed by shard id.
    pub shards: Vec<ShardMetrics>,
    extra: Mutex<Vec<Renderer>>,
}

impl Metrics {
    /// Metrics for `shards` shards, all zero.
    pub fn new(shards: usize) -> Self {
        Metrics {
            shards: (0..shards).map(|_| ShardMetrics::default()).collect(),
            extra: Mutex::new(Vec::new()),
        }
    }

    /// Adds a renderer that appends complete metric families (with `# HELP`/`# TYPE`).
    pub fn add_renderer(&self, r: impl Fn(&mut String) + Send + Sync + 'static) {
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
        let values: Vec<Vec<u64>> = self.shards.iter().map(|s| s.values()).collect();
        for (i, (name, kind, help)) in DESCRIPTORS.iter().enumerate() {
            let _ = writeln!(out, "# HELP lattice_{name} {help}");
            let _ = writeln!(out, "# TYPE lattice_{name} {kind}");
            for (shard, v) in values.iter().enumerate() {
                let _ = writeln!(out, "lattice_{name}{{shard=\"{shard}\"}} {}", v[i]);
            }
        }
        out.push_str("# HELP lattice_shard_driver I/O driver each shard runs on (1 = this one).\n");
        out.push_str("# TYPE lattice_shard_driver gauge\n");
        for (shard, s) in self.shards.iter().enumerate() {
            let d = s.driver.load(Ordering::Relaxed);
            for (code, name) in [(1, "uring"), (2, "epoll")] {
                let _ = writeln!(
                    out,
                    "lattice_shard_driver{{shard=\"{shard}\",driver=\"{name}\"}} {}",
                    u64::from(d == code)
                );
            }
        }
        for r in self.extra.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            r(&mut out);
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
        m.shards[0].driver.store(2, Ordering::Relaxed);
        m.add_renderer(|o| o.push_str("# HELP x y\n# TYPE x gauge\nx 1\n"));
        let text = m.render();
        assert!(text.contains("lattice_frames_in_total{shard=\"1\"} 5\n"));
        assert!(text.contains("lattice_frames_in_total{shard=\"0\"} 0\n"));
        assert!(text.contains("lattice_shard_driver{shard=\"0\",driver=\"epoll\"} 1\n"));
        assert!(text.contains("lattice_shard_driver{shard=\"0\",driver=\"uring\"} 0\n"));
        assert!(text.ends_with("x 1\n"));
        assert_eq!(m.total(|s| &s.frames_in_total), 5);
    }
}

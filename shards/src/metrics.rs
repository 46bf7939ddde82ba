//! The server's own metric families: the gate's and the services' counters per shard, and the
//! storage engine's snapshot — all rendered through the runtime's one Prometheus writer.

use lattice_runtime::telemetry::prom::{Kind, Writer};
use lattice_storage::metrics::{KindSnapshot, Summary};
use lattice_storage::MetricsSnapshot;

lattice_runtime::shard_counters! {
    /// Counters of the application on one shard: the gate's checks and the service host.
    pub struct AppMetrics("lattice") {
        unknown_opcode_total: Counter, "Client frames with an opcode no message has (answered with an error).";
        rejected_internal_total: Counter, "Client frames carrying a server-internal (no_client) opcode (rejected).";
        bad_request_total: Counter, "Client frames whose body did not decode (answered with an error).";
        not_hello_total: Counter, "Sessions whose first frame was not an accepted Hello (answered with an error and closed).";
        dropped_busy_total: Counter, "Client requests refused with BUSY (service queue or mesh backlog full).";
        handler_panics_total: Counter, "Handler panics caught (answered with an error; the shard went on).";
        reply_too_large_total: Counter, "Replies or broadcasts that would have exceeded net.max_frame (not sent).";
        link_proxies: Gauge, "Proxy sessions on this shard: clients of gates that sent requests to this logic node over links.";
        link_proxies_refused_total: Counter, "Link requests answered BUSY because this shard held cluster.link_max_proxies proxy sessions.";
        link_secret_refused_total: Counter, "Links refused because their LinkHello did not bring this node's cluster.link_secret.";
        chat_rooms_full_total: Counter, "JoinRoom answered BUSY: this shard held chat.max_rooms_per_shard rooms.";
        chat_room_full_total: Counter, "JoinRoom answered BUSY: the room held chat.max_members members.";
        chat_session_rooms_full_total: Counter, "JoinRoom answered BUSY: the session was in chat.max_rooms_per_session rooms of this shard.";
        service_queue_depth: Gauge, "Requests waiting in this shard's service inbound queues.";
        timers_app_pending: Gauge, "Component timers pending on this shard.";
    }
}

/// A family of a storage snapshot: name, help, and how to read its value.
type Family<T, V> = (&'static str, &'static str, fn(&T) -> V);

/// Appends the storage engine's families (prefix `lattice_storage_`). Latencies in seconds; each
/// statement kind is a label.
pub fn render_storage(s: &MetricsSnapshot, w: &mut Writer<'_>) {
    const P: &str = "lattice_storage";
    let by_kind: [Family<KindSnapshot, u64>; 3] = [
        (
            "statements_total",
            "Statements executed, by kind (select is a read).",
            |k| k.statements,
        ),
        (
            "rows_total",
            "Rows read or written by successful statements, by kind.",
            |k| k.rows,
        ),
        (
            "statement_errors_total",
            "Failed statements, by kind.",
            |k| k.errors,
        ),
    ];
    for (name, help, f) in by_kind {
        let name = format!("{P}_{name}");
        w.family(&name, Kind::Counter, help);
        for k in &s.kinds {
            w.sample(&name, &[("kind", k.kind.as_str())], f(k));
        }
    }
    let name = format!("{P}_statement_seconds");
    w.family(&name, Kind::Summary, "Statement latency, by kind.");
    for k in &s.kinds {
        let l = &k.latency_us;
        let kind = k.kind.as_str();
        w.sample(
            &name,
            &[("kind", kind), ("quantile", "0.5")],
            secs(l.p50 as f64),
        );
        w.sample(
            &name,
            &[("kind", kind), ("quantile", "0.99")],
            secs(l.p99 as f64),
        );
        w.sample(
            &format!("{name}_sum"),
            &[("kind", kind)],
            secs(l.mean * l.count as f64),
        );
        w.sample(&format!("{name}_count"), &[("kind", kind)], l.count);
    }
    let stats: [Family<Summary, f64>; 3] = [
        ("min", "Smallest", |s| s.min as f64),
        ("max", "Largest", |s| s.max as f64),
        ("mean", "Mean", |s| s.mean),
    ];
    for (stat, help, f) in stats {
        let name = format!("{P}_statement_{stat}_seconds");
        w.family(
            &name,
            Kind::Gauge,
            &format!("{help} statement latency since start, by kind."),
        );
        for k in &s.kinds {
            w.sample(&name, &[("kind", k.kind.as_str())], secs(f(&k.latency_us)));
        }
    }
    let b = &s.flush_batch_rows;
    let name = format!("{P}_flush_rows");
    w.family(&name, Kind::Summary, "Rows per flush, after coalescing.")
        .sample(&name, &[("quantile", "0.5")], b.p50)
        .sample(&name, &[("quantile", "0.99")], b.p99)
        .sample(&format!("{name}_sum"), &[], s.flushed_rows)
        .sample(&format!("{name}_count"), &[], s.flushes);
    let counters: [(&str, &str, u64); 18] = [
        (
            "dirty_marks_total",
            "Marks journaled and acknowledged.",
            s.dirty_marks,
        ),
        (
            "coalesced_marks_total",
            "Marks folded into an already dirty row.",
            s.coalesced_marks,
        ),
        (
            "backpressure_total",
            "Marks refused because the queue was full.",
            s.backpressure,
        ),
        (
            "dirty_limit_hits_total",
            "Pauses of the journal thread at dirty_limit.",
            s.dirty_limit_hits,
        ),
        (
            "journal_written_bytes_total",
            "Bytes appended to the journal.",
            s.journal_bytes_written,
        ),
        (
            "journal_appends_total",
            "Journal group writes.",
            s.journal_appends,
        ),
        (
            "journal_errors_total",
            "Journal write failures (marks refused).",
            s.journal_errors,
        ),
        (
            "journal_replayed_total",
            "Marks replayed from the journal at start.",
            s.journal_replayed,
        ),
        (
            "journal_missing_total",
            "Unconfirmed journal seqs no segment held at start: a segment deleted or moved by hand (the ERROR line names them).",
            s.journal_missing,
        ),
        (
            "retries_total",
            "Statement retries after network errors.",
            s.retries,
        ),
        ("dumps_total", "Records appended to the dump file.", s.dumps),
        (
            "replays_total",
            "Dump records replayed and removed.",
            s.replays,
        ),
        (
            "replay_failures_total",
            "Dump record replays that failed (kept).",
            s.replay_failures,
        ),
        (
            "unpersisted_total",
            "Flushes left to the journal (neither database nor dump worked).",
            s.unpersisted,
        ),
        (
            "dirty_reads_total",
            "Reads answered from dirty rows.",
            s.dirty_reads,
        ),
        ("pings_total", "Idle pings.", s.pings),
        ("ping_failures_total", "Failed idle pings.", s.ping_failures),
        (
            "flushed_rows_total",
            "Rows written by flushes.",
            s.flushed_rows,
        ),
    ];
    for (n, h, v) in counters {
        w.single(&format!("{P}_{n}"), Kind::Counter, h, v);
    }
    let gauges: [(&str, &str, u64); 4] = [
        ("dirty_rows", "Distinct dirty rows now.", s.dirty_rows),
        (
            "journal_bytes",
            "Bytes in live journal segments.",
            s.journal_bytes,
        ),
        (
            "dump_pending",
            "Records waiting in the dump file.",
            s.dump_pending,
        ),
        (
            "uptime_seconds",
            "Seconds since the storage opened.",
            s.uptime.as_secs(),
        ),
    ];
    for (n, h, v) in gauges {
        w.single(&format!("{P}_{n}"), Kind::Gauge, h, v);
    }
}

fn secs(us: f64) -> f64 {
    us / 1e6
}

//! Counters of session continuity and operator control: resume, replay, fencing, rate limits,
//! IP rules. Per shard (the shard's own cache lines), plus the acceptor's, which have no shard.

use std::sync::atomic::{AtomicU64, Ordering};

use super::prom::{Kind, Writer};

crate::shard_counters! {
    /// Resume, replay, rate-limit and operator counters of one shard.
    pub struct ContinuityMetrics("lattice") {
        sessions_detached: Gauge, "Resumable sessions on this shard without a socket, waiting for a Resume.";
        sessions_detached_total: Counter, "Times a resumable session lost its socket (peer closed, socket error, idle timeout, send buffer overflow) and detached instead of closing.";
        send_overflow_detached_total: Counter, "Resumable sessions whose socket was ended because their queue passed net.send_buffer_limit (the client did not read); they detached, counted in sessions_detached_total too.";
        sessions_resumed_total: Counter, "Resume requests accepted: the session was rebound to a new socket.";
        resume_rejected_total: Counter, "Resume requests refused (unknown or closed session, bad token, seq ahead of what was sent, not resumable).";
        resyncs_total: Counter, "Accepted resumes whose missing frames had been evicted: the client was told to resynchronise.";
        replayed_frames_total: Counter, "Frames replayed to resumed sessions.";
        replay_evicted_total: Counter, "Sent, unacknowledged frames evicted from replay buffers (session.replay_max_frames / replay_max_bytes).";
        duplicates_dropped_total: Counter, "Client frames dropped because their sequence number was already received (resends after a resume).";
        handovers_sent_total: Counter, "Sockets carrying a Resume handed to the shard that owns the session.";
        handovers_received_total: Counter, "Sockets received from another shard to resume a session of this one.";
        stale_sockets_total: Counter, "Sockets fenced by a newer binding (or dropped when their session detached), closed without touching the session.";
        sessions_closed_resume_expired_total: Counter, "Detached sessions closed because no Resume came within session.resume_window_ms.";
        sessions_closed_rate_limited_total: Counter, "Sessions closed by a rate limit whose policy is close.";
        sessions_closed_admin_total: Counter, "Sessions closed by an operator (admin API, IP rule change).";
        sessions_closed_handed_over_total: Counter, "Temporary sessions whose socket went on to serve a resumed session.";
        rate_limited_msgs_total: Counter, "Client frames refused by limits.session_msgs_per_s (answered RATE_LIMITED).";
        rate_limited_bytes_total: Counter, "Client frames refused by limits.session_bytes_per_s (answered RATE_LIMITED).";
        control_commands_total: Counter, "Control-lane commands this shard ran (shutdown, close, session listing, rate changes).";
    }
}

/// The acceptor's counters (one set per process).
#[derive(Debug, Default)]
pub struct AcceptMetrics {
    /// Connections refused by the IP rules.
    pub denied_total: AtomicU64,
    /// Connections refused by the per-address rate limit.
    pub ip_limited_total: AtomicU64,
    /// Entries evicted from the per-address table.
    pub ip_table_evicted_total: AtomicU64,
    /// Addresses in the per-address table.
    pub ip_table_entries: AtomicU64,
    /// Refused connections closed at once because the listener's linger queue was full.
    pub linger_full_total: AtomicU64,
}

impl AcceptMetrics {
    /// Appends the families.
    pub fn render(&self, w: &mut Writer<'_>) {
        let v = |a: &AtomicU64| a.load(Ordering::Relaxed);
        w.single(
            "lattice_connections_denied_total",
            Kind::Counter,
            "Connections refused at accept by the IP rules ([access], PUT /admin/ip-rules).",
            v(&self.denied_total),
        );
        w.single(
            "lattice_connections_linger_full_total",
            Kind::Counter,
            "Refused connections closed at once, without waiting for the client to read the refusal, because 256 refused connections of that listener were already lingering.",
            v(&self.linger_full_total),
        );
        w.single(
            "lattice_admin_refused_total",
            Kind::Counter,
            "Admin requests answered 503: 16 admin connections at once, or 2 slow operator commands already running.",
            v(&super::admin::REFUSED_TOTAL),
        );
        w.single(
            "lattice_connections_ip_limited_total",
            Kind::Counter,
            "Connections refused at accept by limits.ip_conns_per_s.",
            v(&self.ip_limited_total),
        );
        w.single(
            "lattice_ip_table_evicted_total",
            Kind::Counter,
            "Entries evicted from the per-address connection table (limits.ip_table_size).",
            v(&self.ip_table_evicted_total),
        );
        w.single(
            "lattice_ip_table_entries",
            Kind::Gauge,
            "Source addresses in the per-address connection table.",
            v(&self.ip_table_entries),
        );
    }
}

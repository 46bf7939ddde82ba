//! TLS counters: per shard (handshakes, failures, key updates, errors) and per process
//! (certificate reloads), rendered through the runtime's one Prometheus writer.

use std::sync::Arc;

use lattice_wire::tls::{TlsEvents, TlsVersion};

use super::source::TlsSource;
use crate::telemetry::prom::{Kind, Writer};

crate::shard_counters! {
    /// TLS counters of one shard's sessions.
    pub struct TlsMetrics("lattice_tls") {
        sessions_open: Gauge, "TLS sessions currently open on this shard.";
        handshakes_tls13_total: Counter, "TLS handshakes completed on TLS 1.3.";
        handshakes_tls12_total: Counter, "TLS handshakes completed on TLS 1.2.";
        handshake_failures_total: Counter, "TLS handshakes that failed: not TLS, a ClientHello rustls refused, an alert from the client, the peer leaving mid-handshake.";
        handshake_timeouts_total: Counter, "TLS handshakes not complete within tls.handshake_timeout_ms (session closed).";
        errors_total: Counter, "TLS errors after the handshake: a record that fails decryption or breaks TLS, an oversize record, a record cut short at close.";
        key_updates_total: Counter, "TLS 1.3 key updates sent on tls.key_update_interval_s.";
        key_updates_skipped_total: Counter, "Interval key updates skipped because the previous one was still unsent (a peer that does not read).";
        peer_key_update_requests_total: Counter, "KeyUpdate requests from peers, answered at once.";
    }
}

impl TlsMetrics {
    /// Adds what one session's layer reported.
    pub fn count(&self, ev: &TlsEvents) {
        match ev.handshake_done {
            Some(TlsVersion::Tls13) => Self::add(&self.handshakes_tls13_total, 1),
            Some(TlsVersion::Tls12) => Self::add(&self.handshakes_tls12_total, 1),
            None => {}
        }
        if ev.handshake_failed {
            Self::add(&self.handshake_failures_total, 1);
        }
        if ev.handshake_timed_out {
            Self::add(&self.handshake_timeouts_total, 1);
        }
        Self::add(&self.errors_total, ev.errors.into());
        Self::add(&self.key_updates_total, ev.key_updates.into());
        Self::add(
            &self.key_updates_skipped_total,
            ev.key_updates_skipped.into(),
        );
        Self::add(
            &self.peer_key_update_requests_total,
            ev.peer_key_update_requests.into(),
        );
    }
}

/// Renders every shard's TLS counters and the certificate source's reload counters.
pub fn render(shards: &[TlsMetrics], source: &Arc<TlsSource>, w: &mut Writer<'_>) {
    TlsMetrics::render(shards, w);
    w.single(
        "lattice_tls_cert_reloads_total",
        Kind::Counter,
        "Certificate and key reloads that succeeded (SIGHUP or POST /admin/tls/reload).",
        source.reloads(),
    );
    w.single(
        "lattice_tls_cert_reload_failures_total",
        Kind::Counter,
        "Certificate and key reloads that failed (the previous certificate stayed in use).",
        source.reload_failures(),
    );
    w.single(
        "lattice_tls_cert_generation",
        Kind::Gauge,
        "Generation of the certificate served to new handshakes (1 at start, +1 per reload).",
        source.generation(),
    );
}

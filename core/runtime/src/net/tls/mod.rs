//! TLS glue: the `[tls]` section, the certificate source ([`TlsSource`], reloadable), and what a
//! shard needs to open TLS sessions ([`ShardTls`]): the current configuration, the session
//! settings and the counters.
//!
//! The protocol work (rustls driven by hand, key updates, deadlines) is
//! `lattice_wire::tls::TlsLayer`, inside the session; this module never sees a record.

mod metrics;
mod source;

pub use metrics::{render, TlsMetrics};
pub use source::{Loaded, TlsLoadError, TlsSource};

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lattice_wire::tls::rustls::ServerConfig;
use lattice_wire::tls::{TlsEvents, TlsLayer, TlsSettings};
use lattice_wire::MonoTime;

/// `[tls]` section: the certificate, the TLS listeners (binary frames over TLS; HTTPS and WSS) and
/// the per-session settings.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Listen address of the binary-frames-over-TLS listener; empty = off.
    pub listen: String,
    /// Listen address of the HTTPS + WSS listener; empty = off.
    pub http_listen: String,
    /// PEM certificate chain file (leaf first); empty = TLS off.
    pub cert: String,
    /// PEM private key file (PKCS#8, PKCS#1 or SEC1); empty = TLS off.
    pub key: String,
    /// Seconds between TLS 1.3 key updates on each session; 0 = never.
    pub key_update_interval_s: u64,
    /// Milliseconds a handshake may take from accept; 0 = no limit.
    pub handshake_timeout_ms: u64,
}

impl TlsConfig {
    /// True when a certificate or a key is configured (both are then required).
    pub fn enabled(&self) -> bool {
        !self.cert.is_empty() || !self.key.is_empty()
    }

    /// The per-session settings.
    pub fn settings(&self) -> TlsSettings {
        TlsSettings {
            key_update_interval: (self.key_update_interval_s > 0)
                .then(|| Duration::from_secs(self.key_update_interval_s)),
            handshake_timeout: (self.handshake_timeout_ms > 0)
                .then(|| Duration::from_millis(self.handshake_timeout_ms)),
        }
    }

    /// Reads the certificate and key. Fails naming the key at fault (`tls.cert`, `tls.key`);
    /// a missing one of the pair is reported too.
    pub fn load(&self) -> Result<TlsSource, TlsLoadError> {
        for (key, value) in [("tls.cert", &self.cert), ("tls.key", &self.key)] {
            if value.is_empty() {
                return Err(TlsLoadError::Read {
                    key,
                    path: "(empty)".into(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "tls.cert and tls.key must be given together",
                    ),
                });
            }
        }
        TlsSource::load(Path::new(&self.cert), Path::new(&self.key), Vec::new())
    }
}

/// What the TLS listeners serve with (given to [`crate::Server::start_listeners`]): one
/// certificate source for all of them, reloaded in one place.
#[derive(Debug, Clone)]
pub struct TlsServing {
    /// Certificate source (shared with whoever reloads it).
    pub source: Arc<TlsSource>,
    /// Per-session settings.
    pub settings: TlsSettings,
}

/// One shard's view of a TLS listener. Lives on the shard's thread.
pub(crate) struct ShardTls {
    shard: usize,
    source: Arc<TlsSource>,
    settings: TlsSettings,
    cached: RefCell<(u64, Arc<ServerConfig>)>,
    metrics: Arc<Vec<TlsMetrics>>,
    open: Cell<u64>,
}

impl ShardTls {
    pub(crate) fn new(
        shard: usize,
        source: Arc<TlsSource>,
        settings: TlsSettings,
        metrics: Arc<Vec<TlsMetrics>>,
    ) -> ShardTls {
        let cached = RefCell::new(source.current());
        ShardTls {
            shard,
            source,
            settings,
            cached,
            metrics,
            open: Cell::new(0),
        }
    }

    /// A TLS layer for a connection accepted at `now`, with the certificate served now.
    pub(crate) fn layer(&self, now: MonoTime) -> Result<TlsLayer, String> {
        let generation = self.source.generation();
        if generation != self.cached.borrow().0 {
            *self.cached.borrow_mut() = self.source.current();
        }
        let config = self.cached.borrow().1.clone();
        TlsLayer::new(config, self.settings, now).map_err(|e| e.to_string())
    }

    fn m(&self) -> &TlsMetrics {
        &self.metrics[self.shard]
    }

    /// Counts a session's TLS events.
    pub(crate) fn count(&self, ev: &TlsEvents) {
        if !ev.is_empty() {
            self.m().count(ev);
        }
    }

    pub(crate) fn opened(&self) {
        self.open.set(self.open.get() + 1);
        TlsMetrics::set(&self.m().sessions_open, self.open.get());
    }

    pub(crate) fn closed(&self) {
        self.open.set(self.open.get().saturating_sub(1));
        TlsMetrics::set(&self.m().sessions_open, self.open.get());
    }
}

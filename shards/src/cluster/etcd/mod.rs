//! Membership and machine-id leases in etcd (docs/CLUSTER.md, "Membership and machine ids").
//!
//! - [`client`]: a blocking client of etcd's JSON gateway (`/v3/*`) over `std::net` sockets and
//!   lattice-wire's sans-IO HTTP/1.1 client codec, every request bounded by a timeout and counted;
//! - [`membership`]: the discovery thread: registers this node under a lease, keeps it alive,
//!   registers again after the lease was lost, and publishes the live set into
//!   [`Members`](super::members::Members);
//! - [`leases`]: machine-id leases ([`LeaseStore`](crate::center::lease::LeaseStore)) over etcd
//!   keys bound to an etcd lease;
//! - [`node`]: what this node registers, from its configuration;
//! - [`watch`]: a watch on a key prefix (the gateway's never-ending chunked answer), read between
//!   keep-alives on the discovery thread.
//!
//! Why the JSON gateway and not the `etcd-client` crate: the crate brings tokio, tonic and a
//! `protoc` build step to a 2-core build for six calls; the gateway needs only the HTTP/1.1 codec
//! the project already has. Why a thread of its own with blocking sockets: no shard ever waits on
//! etcd, and the thread's work (a few requests a second) needs no event loop.
//!
//! Key layout under `etcd.prefix` (default `lattice`):
//! - `<prefix>/nodes/<node_id>` → JSON `{node_id, roles, internal_addr, started_unix_ms,
//!   instance}`, bound to the node's membership lease (`etcd.lease_ttl_ms`);
//! - `<prefix>/machine-ids/<id>` → JSON `{owner, instance}`, bound to the holder's machine-id
//!   lease (`center.lease_ttl_ms`);
//! - `<prefix>/machine-id-last/<id>` → JSON `{owner, last_ts_ms}`, no lease: the highest id
//!   timestamp that may have been issued under the id (kept forever).

pub mod client;
pub mod leases;
pub mod membership;
pub mod node;
pub mod watch;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lattice_runtime::telemetry::prom::{Kind, Writer};

pub use membership::{start, EtcdHandle};

/// `[etcd]` section (deploy/lattice.toml).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdConfig {
    /// etcd client URLs (`http://host:port`); empty = no etcd (single node).
    pub endpoints: Vec<String>,
    /// First segment of every key.
    pub prefix: String,
    /// Membership lease TTL, ms (etcd counts whole seconds: rounded up).
    pub lease_ttl_ms: u64,
    /// How often the whole live set is read again besides the watch, ms.
    pub resync_interval_ms: u64,
    /// Connect, write and whole-response timeout of one request, ms.
    pub request_timeout_ms: u64,
    /// Largest response body accepted, bytes.
    pub max_response_bytes: usize,
    /// Most nodes read from the live set.
    pub max_nodes: usize,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: Vec::new(),
            prefix: "lattice".into(),
            lease_ttl_ms: 5000,
            resync_interval_ms: 10_000,
            request_timeout_ms: 1000,
            max_response_bytes: 4 << 20,
            max_nodes: 1024,
        }
    }
}

impl EtcdConfig {
    /// Whether etcd is configured.
    pub fn enabled(&self) -> bool {
        !self.endpoints.is_empty()
    }

    /// Checks every key; the error names the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for e in &self.endpoints {
            client::Endpoint::parse(e).map_err(|p| ("etcd.endpoints", p))?;
        }
        // One segment: with a `/` inside, the keys of prefix `a/nodes` would lie under those of
        // prefix `a`, and the two clusters would see each other's nodes.
        if self.prefix.is_empty() || self.prefix.contains('/') {
            return Err((
                "etcd.prefix",
                "must be one non-empty key segment, without / (clusters sharing an etcd need prefixes that are not the start of each other's keys)".into(),
            ));
        }
        if self.lease_ttl_ms < 1000 {
            return Err((
                "etcd.lease_ttl_ms",
                format!(
                    "{} is too short: at least 1000 (etcd leases count whole seconds)",
                    self.lease_ttl_ms
                ),
            ));
        }
        if self.request_timeout_ms == 0 || self.request_timeout_ms * 3 > self.lease_ttl_ms {
            return Err((
                "etcd.request_timeout_ms",
                "must be at least 1 and at most a third of etcd.lease_ttl_ms (a keep-alive must be able to fail and be retried before the lease runs out)".into(),
            ));
        }
        if self.resync_interval_ms < 100 {
            return Err((
                "etcd.resync_interval_ms",
                "must be at least 100 (the watch sees changes as they happen; this is the safety net)".into(),
            ));
        }
        if self.max_response_bytes < 4096 {
            return Err(("etcd.max_response_bytes", "must be at least 4096".into()));
        }
        if self.max_nodes == 0 {
            return Err(("etcd.max_nodes", "must be at least 1".into()));
        }
        Ok(())
    }

    /// The parsed endpoints (call after [`EtcdConfig::validate`]).
    pub fn parsed_endpoints(&self) -> Result<Vec<client::Endpoint>, EtcdError> {
        self.endpoints
            .iter()
            .map(|e| client::Endpoint::parse(e).map_err(EtcdError::Config))
            .collect()
    }

    /// A client with this section's bounds.
    pub fn client(&self, stats: std::sync::Arc<EtcdStats>) -> Result<client::Client, EtcdError> {
        let eps = self.parsed_endpoints()?;
        if eps.is_empty() {
            return Err(EtcdError::Config("etcd.endpoints is empty".into()));
        }
        Ok(client::Client::new(
            eps,
            Duration::from_millis(self.request_timeout_ms),
            self.max_response_bytes,
            stats,
        ))
    }
}

/// Why an etcd operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// The configuration is unusable.
    #[error("etcd config: {0}")]
    Config(String),
    /// No endpoint could be reached, or none answered within `etcd.request_timeout_ms`.
    #[error("etcd unreachable: {0}")]
    Unreachable(String),
    /// An endpoint answered something that is not etcd's JSON gateway (garbage, a cut response,
    /// an oversized one).
    #[error("etcd protocol: {0}")]
    Protocol(String),
    /// etcd refused the request.
    #[error("etcd refused the request (status {status}): {message}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// etcd's message.
        message: String,
    },
    /// Another live process is registered under this node's name.
    #[error("node_id {node_id:?} is registered in etcd by another live process (started {started_unix_ms} Unix ms); give each node its own name")]
    NodeIdTaken {
        /// The name.
        node_id: String,
        /// When the other process started.
        started_unix_ms: u64,
    },
    /// The discovery thread could not be started.
    #[error("cannot start the etcd discovery thread: {0}")]
    Thread(std::io::Error),
}

/// Counters of the etcd client and membership (rendered on `/metrics` as `lattice_etcd_*`).
#[derive(Debug, Default)]
pub struct EtcdStats {
    pub(crate) requests: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) registrations: AtomicU64,
    pub(crate) lease_lost: AtomicU64,
    pub(crate) members: AtomicU64,
    pub(crate) registered: AtomicU64,
    pub(crate) view_failures: AtomicU64,
    pub(crate) view_full: AtomicU64,
}

impl EtcdStats {
    /// Appends the `lattice_etcd_*` families.
    pub fn render(&self, w: &mut Writer<'_>) {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        w.single(
            "lattice_etcd_requests_total",
            Kind::Counter,
            "Requests sent to etcd (each endpoint tried counts once).",
            r(&self.requests),
        );
        w.single(
            "lattice_etcd_request_failures_total",
            Kind::Counter,
            "Requests to etcd that failed (unreachable, timed out, refused, or answered garbage).",
            r(&self.failures),
        );
        w.single(
            "lattice_etcd_registrations_total",
            Kind::Counter,
            "Times this node registered under a new membership lease (1 at start; more after the lease was lost).",
            r(&self.registrations),
        );
        w.single(
            "lattice_etcd_lease_lost_total",
            Kind::Counter,
            "Membership leases found expired or revoked (the node then registers again).",
            r(&self.lease_lost),
        );
        w.single(
            "lattice_etcd_registered",
            Kind::Gauge,
            "1 while this node's registration is confirmed by a keep-alive within its TTL.",
            r(&self.registered),
        );
        w.single(
            "lattice_etcd_members",
            Kind::Gauge,
            "Live nodes in the last view read from etcd (this one included).",
            r(&self.members),
        );
        w.single(
            "lattice_etcd_view_full",
            Kind::Gauge,
            "1 while the last view read from etcd hit etcd.max_nodes: live nodes beyond it are not seen (raise etcd.max_nodes).",
            r(&self.view_full),
        );
        w.single(
            "lattice_etcd_view_failures_total",
            Kind::Counter,
            "Reads of the live set that failed and watches on it that ended (the last view is kept).",
            r(&self.view_failures),
        );
    }
}

/// The key of node `node_id`.
pub fn node_key(prefix: &str, node_id: &str) -> String {
    format!("{prefix}/nodes/{node_id}")
}

/// Wall-clock now in Unix ms.
pub(crate) fn now_ms() -> u64 {
    crate::center::now_ms()
}

/// Seconds of an etcd lease covering `ms` (rounded up, at least 1).
pub(crate) fn ttl_secs(ms: u64) -> i64 {
    i64::try_from(ms.div_ceil(1000).max(1)).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_bounds_name_the_key() {
        assert!(EtcdConfig::default().validate().is_ok());
        let key_of = |f: fn(&mut EtcdConfig)| {
            let mut c = EtcdConfig::default();
            f(&mut c);
            c.validate().unwrap_err().0
        };
        assert_eq!(
            key_of(|c| c.endpoints = vec!["127.0.0.1:2379".into()]),
            "etcd.endpoints"
        );
        assert_eq!(key_of(|c| c.lease_ttl_ms = 0), "etcd.lease_ttl_ms");
        assert_eq!(
            key_of(|c| c.request_timeout_ms = 4000),
            "etcd.request_timeout_ms"
        );
        assert_eq!(key_of(|c| c.prefix = "a/".into()), "etcd.prefix");
        assert_eq!(key_of(|c| c.prefix = "a/nodes".into()), "etcd.prefix");
        assert_eq!(key_of(|c| c.prefix = "/a".into()), "etcd.prefix");
        assert_eq!(
            key_of(|c| c.resync_interval_ms = 0),
            "etcd.resync_interval_ms"
        );
        assert_eq!(key_of(|c| c.max_nodes = 0), "etcd.max_nodes");
    }

    #[test]
    fn documented_defaults_are_the_code_defaults_and_bad_values_fail_the_load() {
        let c = crate::config::Config::load(None, vec![], vec![]).unwrap();
        let e: EtcdConfig = lattice_runtime::config::typed_section(&c.table, "etcd").unwrap();
        assert_eq!(format!("{e:?}"), format!("{:?}", EtcdConfig::default()));
        for (k, v) in [
            ("etcd.lease_ttl_ms", "0"),
            ("etcd.endpoints", r#"["localhost:2379"]"#),
        ] {
            let err = crate::config::Config::load(None, vec![], vec![(k.into(), v.into())])
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("`{k}`")), "{k}: {err}");
        }
    }

    #[test]
    fn ttl_rounds_up_to_whole_seconds() {
        assert_eq!(ttl_secs(1), 1);
        assert_eq!(ttl_secs(1000), 1);
        assert_eq!(ttl_secs(1001), 2);
        assert_eq!(ttl_secs(30_000), 30);
    }
}

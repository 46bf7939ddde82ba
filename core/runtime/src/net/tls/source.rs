//! [`TlsSource`]: the listener's certificate and key, read from their files, and reloaded on
//! request (SIGHUP, the admin route) without touching live sessions.
//!
//! A live session keeps the `rustls::ServerConfig` it was accepted with (an `Arc`); a reload
//! publishes a new one that every shard picks up for its next handshake. Shards check a
//! generation number (one relaxed atomic load per accepted TLS connection) and take the lock only
//! when it changed, so the handshake path shares no lock between shards in steady state.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lattice_wire::tls::rustls::server::ProducesTickets;
use lattice_wire::tls::rustls::ServerConfig;
use lattice_wire::tls::{new_ticketer, server_config, ServerOptions, TlsConfigError};

/// Why the certificate or key cannot be used. Its message names the file; [`TlsLoadError::key`]
/// names the config key at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsLoadError {
    /// A file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// `tls.cert` or `tls.key`.
        key: &'static str,
        /// The file.
        path: String,
        /// OS error.
        source: std::io::Error,
    },
    /// The files were read but do not make a usable certificate and key.
    #[error("{path}: {source}")]
    Invalid {
        /// `tls.cert` or `tls.key`.
        key: &'static str,
        /// The file at fault.
        path: String,
        /// What is wrong.
        source: TlsConfigError,
    },
}

impl TlsLoadError {
    /// The config key at fault: `tls.cert` or `tls.key`.
    pub fn key(&self) -> &'static str {
        match self {
            TlsLoadError::Read { key, .. } | TlsLoadError::Invalid { key, .. } => key,
        }
    }
}

/// What a successful (re)load installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// Generation of the configuration now served (1 at start, +1 per reload).
    pub generation: u64,
    /// Certificates in the chain.
    pub chain_len: usize,
}

/// The certificate and key files of a TLS listener and the configuration built from them.
pub struct TlsSource {
    cert: PathBuf,
    key: PathBuf,
    alpn: Vec<Vec<u8>>,
    /// Kept across reloads so session tickets issued before a reload still resume after it.
    ticketer: Arc<dyn ProducesTickets>,
    current: Mutex<Arc<ServerConfig>>,
    generation: AtomicU64,
    reloads: AtomicU64,
    reload_failures: AtomicU64,
}

impl std::fmt::Debug for TlsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSource")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

impl TlsSource {
    /// Reads and checks `cert` and `key` (PEM) and builds the first configuration. `alpn`: the
    /// protocols the listener selects from (empty = none).
    pub fn load(cert: &Path, key: &Path, alpn: Vec<Vec<u8>>) -> Result<TlsSource, TlsLoadError> {
        let ticketer = new_ticketer().map_err(|source| TlsLoadError::Invalid {
            key: "tls.key",
            path: key.display().to_string(),
            source,
        })?;
        let (config, _) = build(cert, key, &alpn, &ticketer)?;
        Ok(TlsSource {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            alpn,
            ticketer,
            current: Mutex::new(Arc::new(config)),
            generation: AtomicU64::new(1),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
        })
    }

    /// Reads the files again and, when they are good, serves them to every new handshake; live
    /// sessions keep the configuration they started with. On failure the current configuration
    /// stays and the failure is counted.
    ///
    /// Cost: reads two files and parses them (on the caller's thread: the admin thread or the
    /// main thread, never a shard).
    pub fn reload(&self) -> Result<Loaded, TlsLoadError> {
        match build(&self.cert, &self.key, &self.alpn, &self.ticketer) {
            Ok((config, chain_len)) => {
                let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
                *cur = Arc::new(config);
                // Published under the lock: a shard that sees the new generation finds the new
                // configuration when it takes the lock.
                let generation = self.generation.fetch_add(1, Ordering::Release) + 1;
                drop(cur);
                self.reloads.fetch_add(1, Ordering::Relaxed);
                Ok(Loaded {
                    generation,
                    chain_len,
                })
            }
            Err(e) => {
                self.reload_failures.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// The generation now served.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The configuration now served and its generation.
    pub fn current(&self) -> (u64, Arc<ServerConfig>) {
        let cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        (self.generation(), cur.clone())
    }

    /// Successful reloads since start.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// Failed reloads since start.
    pub fn reload_failures(&self) -> u64 {
        self.reload_failures.load(Ordering::Relaxed)
    }

    /// The certificate file.
    pub fn cert_path(&self) -> &Path {
        &self.cert
    }
}

fn build(
    cert: &Path,
    key: &Path,
    alpn: &[Vec<u8>],
    ticketer: &Arc<dyn ProducesTickets>,
) -> Result<(ServerConfig, usize), TlsLoadError> {
    let read = |what: &'static str, path: &Path| {
        std::fs::read(path).map_err(|source| TlsLoadError::Read {
            key: what,
            path: path.display().to_string(),
            source,
        })
    };
    let cert_pem = read("tls.cert", cert)?;
    let key_pem = read("tls.key", key)?;
    let opts = ServerOptions {
        alpn: alpn.to_vec(),
        ticketer: Some(ticketer.clone()),
    };
    let chain_len = String::from_utf8_lossy(&cert_pem)
        .matches("-----BEGIN CERTIFICATE-----")
        .count();
    let config = server_config(&cert_pem, &key_pem, &opts).map_err(|source| {
        let (what, path) = if source.is_key() {
            ("tls.key", key)
        } else {
            ("tls.cert", cert)
        };
        TlsLoadError::Invalid {
            key: what,
            path: path.display().to_string(),
            source,
        }
    })?;
    Ok((config, chain_len))
}

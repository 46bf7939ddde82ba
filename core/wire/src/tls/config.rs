//! The server's TLS configuration from PEM bytes: certificate chain, private key, versions,
//! tickets. Reading the files is the caller's business (this crate touches no file).

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{NoServerSessionStorage, ProducesTickets};
use rustls::ServerConfig;

/// Why a certificate or key cannot be used. The message names which of the two is at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// The certificate file holds no `CERTIFICATE` block or a malformed one.
    #[error("certificate: {0}")]
    Cert(String),
    /// The key file holds no private key block or a malformed one.
    #[error("private key: {0}")]
    Key(String),
    /// rustls refused the pair (the key does not match the certificate, an unsupported key type).
    #[error("certificate and key: {0}")]
    Pair(String),
    /// The crypto provider could not start (no randomness for the ticket key).
    #[error("crypto provider: {0}")]
    Provider(String),
}

impl TlsConfigError {
    /// True when the key (rather than the certificate) is at fault.
    pub fn is_key(&self) -> bool {
        matches!(self, TlsConfigError::Key(_) | TlsConfigError::Pair(_))
    }
}

/// What the server config needs besides the certificate and key.
#[derive(Clone)]
pub struct ServerOptions {
    /// ALPN protocols the server selects from, in preference order; empty = no ALPN (a client's
    /// offer is ignored and no protocol is selected).
    pub alpn: Vec<Vec<u8>>,
    /// Encrypts TLS 1.3 and 1.2 session tickets. Keep the same one across certificate reloads so
    /// clients resume across them; `None` makes a new one (tickets from earlier configurations then
    /// no longer resume).
    pub ticketer: Option<Arc<dyn ProducesTickets>>,
}

impl std::fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerOptions")
            .field("alpn", &self.alpn)
            .field("ticketer", &self.ticketer.is_some())
            .finish()
    }
}

/// A new ticketer (AES-GCM or ChaCha20-Poly1305 keys rotated every 6 hours, by rustls' ring
/// provider).
pub fn new_ticketer() -> Result<Arc<dyn ProducesTickets>, TlsConfigError> {
    rustls::crypto::ring::Ticketer::new().map_err(|e| TlsConfigError::Provider(e.to_string()))
}

/// Builds a server configuration: TLS 1.3 and 1.2 on rustls' ring provider, no client
/// certificates, the given chain (`cert_pem`: one or more `CERTIFICATE` blocks, leaf first) and
/// key (`key_pem`: PKCS#8, PKCS#1 or SEC1), stateless session tickets (one per TLS 1.3
/// handshake) and no server-side session cache (no lock shared between shards on the handshake
/// path), no 0-RTT.
///
/// Cost: parses the PEM and checks that the key matches the leaf certificate; done once per
/// (re)load, never per connection.
pub fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    opts: &ServerOptions,
) -> Result<ServerConfig, TlsConfigError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsConfigError::Cert(pem_error(e)))?;
    if chain.is_empty() {
        return Err(TlsConfigError::Cert(
            "no PEM CERTIFICATE block found".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
        TlsConfigError::Key(match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "no PEM PRIVATE KEY block found (PKCS#8, PKCS#1 or SEC1)".into()
            }
            other => pem_error(other),
        })
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsConfigError::Provider(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsConfigError::Pair(e.to_string()))?;
    cfg.alpn_protocols = opts.alpn.clone();
    cfg.session_storage = Arc::new(NoServerSessionStorage {});
    cfg.ticketer = match &opts.ticketer {
        Some(t) => t.clone(),
        None => new_ticketer()?,
    };
    cfg.send_tls13_tickets = 1;
    cfg.max_early_data_size = 0;
    Ok(cfg)
}

fn pem_error(e: rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error as E;
    match e {
        E::NoItemsFound => "no PEM CERTIFICATE block found".into(),
        other => format!("malformed PEM ({other:?})"),
    }
}

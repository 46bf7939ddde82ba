//! TLS as a byte-transport layer of the session (feature `tls`): rustls 0.23 on its `ring`
//! provider, TLS 1.3 and 1.2, driven by hand inside the sans-IO session — bytes and time in,
//! plaintext, ciphertext and deadlines out; no socket, no clock.
//!
//! - [`TlsLayer`] (`layer.rs`): one session's `rustls::ServerConnection`, its outbound
//!   ciphertext queue, the handshake deadline and the interval key update;
//! - [`RecordTracker`] (`record.rs`): record boundaries seen from outside rustls, for clear close
//!   reasons (not TLS at all, oversize record, record cut short at close);
//! - [`server_config`] (`config.rs`): a `rustls::ServerConfig` from PEM bytes.
//!
//! The session owns an optional [`TlsLayer`] ([`crate::Session::with_tls`]); with it,
//! [`crate::Session::receive_tls`] turns ciphertext into plaintext for
//! [`crate::Session::receive`], and [`crate::Session::transmit`] hands out ciphertext.
//!
//! What this module never does: read certificate files (the runtime does), log, or count (it
//! reports [`TlsEvents`]; the runtime counts them).

mod config;
mod layer;
mod record;

pub use config::{new_ticketer, server_config, ServerOptions, TlsConfigError};
pub use layer::{TlsEvents, TlsLayer, TlsRead, TlsSettings, TlsVersion};
pub use record::{RecordError, RecordTracker, MAX_RECORD_BODY, RECORD_HEADER_LEN};

/// rustls, re-exported so that callers name the same version (`ServerConfig`, client types in
/// tests).
pub use rustls;

#[cfg(test)]
mod tests;

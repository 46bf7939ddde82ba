//! [`TlsLayer`]: one session's TLS state, a byte-transport layer under the frame codec.
//!
//! Ciphertext in ([`TlsLayer::read`]) gives plaintext appended to a buffer the caller owns (the
//! shard's scratch buffer, so frames decoded from it never borrow the session); plaintext in
//! ([`TlsLayer::seal`]) gives ciphertext in the layer's own outbound queue
//! ([`TlsLayer::pending`] / [`TlsLayer::consume`]). Everything rustls wants to send — handshake
//! flights, alerts, the answer to a peer's KeyUpdate, our own KeyUpdate — is moved into that queue
//! at the end of every call, so it goes out with the next write even when the application writes
//! nothing (monoio-rustls leaves a KeyUpdate answer waiting for the next application write).
//!
//! Time: a handshake deadline (`handshake_timeout`) until the handshake completes, then, on TLS
//! 1.3, a key-update deadline every `key_update_interval`; both come out of
//! [`TlsLayer::poll_timeout`] and fire in [`TlsLayer::handle_timeout`].
//!
//! Memory at rest: the rustls connection (keys, record layer, about 2 KiB here) and rustls' input
//! buffer (4 KiB once anything was read, up to 18 KiB while a large record is incomplete); the
//! outbound queue is released when drained.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use rustls::{ProtocolVersion, ServerConfig, ServerConnection};

use super::record::RecordTracker;
use crate::session_id::CloseReason;
use crate::time::MonoTime;

/// A TLS session's timing settings (from `[tls]`). Cheap to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsSettings {
    /// Rotate traffic keys (TLS 1.3 KeyUpdate, update requested) this often; `None` = never.
    pub key_update_interval: Option<Duration>,
    /// Close a session whose handshake is not complete this long after it opened; `None` = never.
    pub handshake_timeout: Option<Duration>,
}

/// The TLS version a handshake settled on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

impl TlsVersion {
    /// `"TLSv1.2"` or `"TLSv1.3"`.
    pub fn name(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "TLSv1.2",
            TlsVersion::Tls13 => "TLSv1.3",
        }
    }
}

/// What happened in a TLS layer since the last [`TlsLayer::take_events`]; the runtime counts it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TlsEvents {
    /// The handshake completed, on this version.
    pub handshake_done: Option<TlsVersion>,
    /// The handshake failed (an error before it completed, or the peer left in the middle).
    pub handshake_failed: bool,
    /// The handshake did not complete within `handshake_timeout`.
    pub handshake_timed_out: bool,
    /// A TLS error after the handshake (bad record, failed decryption, oversize or truncated
    /// record).
    pub errors: u32,
    /// Key updates we sent on the interval.
    pub key_updates: u32,
    /// Interval key updates skipped because the previous one was still unsent.
    pub key_updates_skipped: u32,
    /// KeyUpdate requests from the peer that we answered.
    pub peer_key_update_requests: u32,
}

impl TlsEvents {
    /// True when nothing happened.
    pub fn is_empty(&self) -> bool {
        *self == TlsEvents::default()
    }
}

/// What [`TlsLayer::read`] found besides plaintext.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TlsRead {
    /// The peer sent `close_notify`: it sends nothing more. The caller processes the plaintext
    /// it got, then closes the session ([`CloseReason::PeerClosed`]).
    pub peer_closed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Handshaking,
    Established(TlsVersion),
    /// rustls failed (its alert is queued) or we refused the stream: nothing more is read or sent
    /// but what is queued.
    Failed,
}

/// One session's TLS state. See the module documentation.
pub struct TlsLayer {
    conn: ServerConnection,
    settings: TlsSettings,
    phase: Phase,
    /// Handshake deadline while handshaking.
    handshake_deadline: Option<MonoTime>,
    /// Next interval key update, once established on TLS 1.3.
    next_key_update: Option<MonoTime>,
    /// Our last key update is still in `out` (not yet taken by the socket).
    key_update_unsent: bool,
    /// The peer sent application data since our last key update (or none was sent yet). Each
    /// key update asks for the peer's, and rustls on either side refuses more than 32 of those
    /// in a row without application data between them: a peer that stays silent gets one.
    peer_data_since_update: bool,
    /// Ciphertext bytes received (0 = the peer never spoke).
    bytes_in: u64,
    peer_closed: bool,
    close_sent: bool,
    records: RecordTracker,
    out: Vec<u8>,
    written: usize,
    events: TlsEvents,
}

impl std::fmt::Debug for TlsLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsLayer")
            .field("phase", &self.phase)
            .field("unsent", &self.unsent())
            .field("out_capacity", &self.out.capacity())
            .field("next_key_update", &self.next_key_update)
            .finish_non_exhaustive()
    }
}

impl TlsLayer {
    /// A layer for a connection accepted at `now` with `config` (the listener's current
    /// certificate). Fails only when rustls refuses the configuration.
    pub fn new(
        config: Arc<ServerConfig>,
        settings: TlsSettings,
        now: MonoTime,
    ) -> Result<TlsLayer, rustls::Error> {
        let mut conn = ServerConnection::new(config)?;
        // The session bounds its own queue (`send_buffer_limit`); rustls' copy must not refuse
        // part of a write that the session already accepted.
        conn.set_buffer_limit(None);
        Ok(TlsLayer {
            conn,
            settings,
            phase: Phase::Handshaking,
            handshake_deadline: settings.handshake_timeout.map(|t| now.saturating_add(t)),
            next_key_update: None,
            key_update_unsent: false,
            peer_data_since_update: true,
            bytes_in: 0,
            peer_closed: false,
            close_sent: false,
            records: RecordTracker::default(),
            out: Vec::new(),
            written: 0,
            events: TlsEvents::default(),
        })
    }

    // ---- input ----

    /// Takes `input` (ciphertext the peer sent, received at `now`) and appends the plaintext it
    /// carries to `plain`. Handshake and KeyUpdate answers are queued for the peer.
    ///
    /// Cost: rustls copies the ciphertext into its input buffer (4 KiB at a time), decrypts in
    /// place, and hands the plaintext over with one more copy into `plain`.
    ///
    /// Fails when the bytes are not TLS, break TLS, or rustls refuses them (the alert rustls
    /// queued is in [`TlsLayer::pending`]); the error is the session's close reason. Input after
    /// a failure or after the peer's `close_notify` is ignored.
    pub fn read(
        &mut self,
        now: MonoTime,
        input: &[u8],
        plain: &mut Vec<u8>,
    ) -> Result<TlsRead, CloseReason> {
        if self.phase == Phase::Failed || self.peer_closed {
            return Ok(TlsRead {
                peer_closed: self.peer_closed,
            });
        }
        self.bytes_in += input.len() as u64;
        if let Err(e) = self.records.feed(input) {
            return Err(self.refuse(e.to_string()));
        }
        let mut rest = input;
        while !rest.is_empty() {
            match self.conn.read_tls(&mut rest) {
                // Only after close_notify: the rest is ignored (RFC 8446 §6.1).
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(self.refuse(e.to_string())),
            }
            let state = match self.conn.process_new_packets() {
                Ok(s) => s,
                Err(e) => return Err(self.rustls_failed(&e)),
            };
            let n = state.plaintext_bytes_to_read();
            if n > 0 {
                self.peer_data_since_update = true;
                let start = plain.len();
                plain.resize(start + n, 0);
                if let Err(e) = self.conn.reader().read_exact(&mut plain[start..]) {
                    plain.truncate(start);
                    return Err(self.refuse(format!("reading decrypted data: {e}")));
                }
            }
            if state.peer_has_closed() {
                self.peer_closed = true;
                break;
            }
        }
        self.after_progress(now);
        if self.phase != Phase::Handshaking {
            // A KeyUpdate asking for ours is answered by rustls only when the application next
            // writes; an empty write makes it queue the answer now.
            let before = self.conn.wants_write();
            let _ = self.conn.writer().write(&[]);
            if !before && self.conn.wants_write() {
                self.events.peer_key_update_requests += 1;
            }
        }
        self.pull();
        Ok(TlsRead {
            peer_closed: self.peer_closed,
        })
    }

    /// The peer closed the connection: the close reason when TLS says it ended badly (in the
    /// middle of the handshake or of a record), else `None` and the layers above judge.
    pub fn peer_finished(&mut self) -> Option<CloseReason> {
        if self.phase == Phase::Failed {
            return None;
        }
        if let Some((have, need)) = self.records.partial() {
            return Some(self.refuse(format!(
                "truncated record at close ({have} of {need} bytes)"
            )));
        }
        if self.phase == Phase::Handshaking && self.bytes_in > 0 {
            return Some(self.refuse("peer closed during the handshake".into()));
        }
        None
    }

    // ---- output ----

    /// Encrypts `plain` into the outbound queue. Returns how many bytes of `plain` were taken:
    /// all of them, unless the layer failed (then all are dropped: the session is closing).
    ///
    /// Cost: rustls cuts `plain` into records of at most 16 KiB and encrypts each; one copy of
    /// the ciphertext into the queue.
    pub fn seal(&mut self, plain: &[u8]) -> usize {
        if plain.is_empty() || self.phase == Phase::Failed || self.close_sent {
            return plain.len();
        }
        match self.conn.writer().write(plain) {
            Ok(n) => {
                debug_assert_eq!(n, plain.len(), "no rustls buffer limit is set");
                self.pull();
                n
            }
            Err(_) => plain.len(),
        }
    }

    /// Ciphertext waiting for the socket.
    pub fn pending(&self) -> &[u8] {
        &self.out[self.written..]
    }

    /// The socket took `n` bytes of [`TlsLayer::pending`].
    pub fn consume(&mut self, n: usize) {
        self.written += n;
        assert!(self.written <= self.out.len(), "consumed more than queued");
        if self.written == self.out.len() {
            // Released, not kept: an idle TLS session holds no outbound buffer (one small
            // allocation per write batch is cheap next to the encryption and the syscall).
            self.written = 0;
            self.key_update_unsent = false;
            self.out = Vec::new();
        }
    }

    /// Ciphertext bytes queued and not yet written.
    pub fn unsent(&self) -> usize {
        self.out.len() - self.written
    }

    /// Queues `close_notify` (once; not after a failure) after sealing what the session still
    /// had queued, which the caller passes as `plain`. Returns the bytes of `plain` taken.
    pub fn close(&mut self, plain: &[u8]) -> usize {
        let n = self.seal(plain);
        if !self.close_sent && self.phase != Phase::Failed {
            self.close_sent = true;
            self.conn.send_close_notify();
            self.pull();
        }
        n
    }

    // ---- time ----

    /// The next deadline: the handshake deadline while handshaking, the next key update once
    /// established on TLS 1.3 (when an interval is set).
    pub fn poll_timeout(&self) -> Option<MonoTime> {
        match self.phase {
            Phase::Handshaking => self.handshake_deadline,
            Phase::Established(_) if !self.close_sent => self.next_key_update,
            _ => None,
        }
    }

    /// Fires what is due at `now`. A handshake past its deadline fails with the close reason;
    /// a key update that is due is sent (or skipped and counted when the previous one is still
    /// unsent) and the next one scheduled `key_update_interval` from `now`.
    pub fn handle_timeout(&mut self, now: MonoTime) -> Result<(), CloseReason> {
        match self.phase {
            Phase::Handshaking => {
                if let (Some(d), Some(t)) =
                    (self.handshake_deadline, self.settings.handshake_timeout)
                {
                    if now >= d {
                        self.events.handshake_timed_out = true;
                        self.phase = Phase::Failed;
                        return Err(CloseReason::Protocol(format!(
                            "tls: handshake not complete after {} ms",
                            t.as_millis()
                        )));
                    }
                }
            }
            Phase::Established(_) => {
                let (Some(due), Some(every)) =
                    (self.next_key_update, self.settings.key_update_interval)
                else {
                    return Ok(());
                };
                if now < due || self.close_sent {
                    return Ok(());
                }
                if self.key_update_unsent || !self.peer_data_since_update {
                    self.events.key_updates_skipped += 1;
                } else {
                    match self.conn.refresh_traffic_keys() {
                        Ok(()) => {
                            self.events.key_updates += 1;
                            self.peer_data_since_update = false;
                            self.pull();
                            self.key_update_unsent = self.unsent() > 0;
                        }
                        Err(_) => self.events.key_updates_skipped += 1,
                    }
                }
                self.next_key_update = Some(now.saturating_add(every));
            }
            Phase::Failed => {}
        }
        Ok(())
    }

    // ---- state ----

    /// True until the handshake completed (and after a failure during it).
    pub fn is_handshaking(&self) -> bool {
        !matches!(self.phase, Phase::Established(_))
    }

    /// The negotiated version, once the handshake completed.
    pub fn version(&self) -> Option<TlsVersion> {
        match self.phase {
            Phase::Established(v) => Some(v),
            _ => None,
        }
    }

    /// The negotiated cipher suite (for logs), once known.
    pub fn cipher_suite(&self) -> Option<rustls::CipherSuite> {
        self.conn.negotiated_cipher_suite().map(|s| s.suite())
    }

    /// The server name the client asked for (SNI), if any.
    pub fn server_name(&self) -> Option<&str> {
        self.conn.server_name()
    }

    /// Takes the events since the last call.
    pub fn take_events(&mut self) -> TlsEvents {
        std::mem::take(&mut self.events)
    }

    // ---- internals ----

    /// Moves everything rustls queued into our outbound queue.
    fn pull(&mut self) {
        while self.conn.wants_write() {
            // Writing into a Vec cannot fail or stall.
            match self.conn.write_tls(&mut self.out) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    fn after_progress(&mut self, now: MonoTime) {
        if self.phase != Phase::Handshaking || self.conn.is_handshaking() {
            return;
        }
        let version = match self.conn.protocol_version() {
            Some(ProtocolVersion::TLSv1_3) => TlsVersion::Tls13,
            _ => TlsVersion::Tls12,
        };
        self.phase = Phase::Established(version);
        self.handshake_deadline = None;
        self.events.handshake_done = Some(version);
        if version == TlsVersion::Tls13 {
            self.next_key_update = self
                .settings
                .key_update_interval
                .map(|i| now.saturating_add(i));
        }
    }

    /// rustls refused the input; its alert is queued for the peer.
    fn rustls_failed(&mut self, e: &rustls::Error) -> CloseReason {
        self.pull();
        self.fail(e.to_string())
    }

    /// We refused the input before rustls saw it (or rustls' I/O layer did).
    fn refuse(&mut self, why: String) -> CloseReason {
        self.fail(why)
    }

    fn fail(&mut self, why: String) -> CloseReason {
        if self.phase == Phase::Handshaking {
            self.events.handshake_failed = true;
        } else {
            self.events.errors += 1;
        }
        self.phase = Phase::Failed;
        CloseReason::Protocol(format!("tls: {why}"))
    }
}

//! The session state machine: one client connection's protocol state, with no socket and no clock.
//!
//! In the shape of quinn-proto's `Connection`: the runtime feeds it bytes and the time
//! ([`Session::receive`]), queues frames for the peer ([`Session::send`]), takes bytes to write
//! ([`Session::transmit`] / [`Session::transmitted`]), asks when it next needs the time
//! ([`Session::poll_timeout`]) and fires that deadline ([`Session::handle_timeout`]). Everything a
//! session is lives here: the frame decoder, the bounded outbound queue, the idle deadline, the
//! handshake (Hello) state and the close reason. Byte-transport layers sit under the frame codec:
//! TLS (feature `tls`, [`crate::tls::TlsLayer`], attached with [`Session::with_tls`]). The layers
//! to come (WebSocket, resume, rate limits) belong here too, so a test or a simulation can drive
//! thousands of sessions with no network and a fake clock.
//!
//! What it never does: read a clock, touch a socket, decode a protobuf body or log.

use std::time::Duration;

use crate::frame::{Decoder, FrameBuf, FrameError};
use crate::session_id::{CloseReason, SessionId};
use crate::time::MonoTime;

/// The opcode of `Hello`, the first frame of every session (fixed by the protocol).
pub const HELLO_OPCODE: u16 = 1;

/// A session's limits (from `[net]`). Cheap to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Largest frame accepted from the peer, header included.
    pub max_frame: u32,
    /// Bytes the outbound queue holds before the session is closed for not reading. A frame is
    /// always accepted into an empty queue, so one frame of up to `max_frame` bytes always fits.
    pub send_buffer_limit: usize,
    /// Close the session when the peer sends nothing for this long; `None` = never.
    pub idle_timeout: Option<Duration>,
}

/// Where the session is in its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    /// No accepted `Hello` yet: the only frame the gate lets through is `Hello`.
    AwaitingHello,
    /// `Hello` was accepted (`Welcome` sent).
    Ready,
}

/// Why [`Session::send`] refused a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The session is closing; the frame was dropped.
    #[error("session closing")]
    Closing,
    /// The queue would pass `send_buffer_limit`: the session is now closing with
    /// [`CloseReason::SendBufferOverflow`].
    #[error("send buffer overflow")]
    Overflow,
}

/// One session's protocol state. See the module documentation.
///
/// Memory at rest: about 120 bytes plus the unsent output and an incomplete input frame; both
/// buffers are released when drained, so an idle session holds no buffer.
#[derive(Debug)]
pub struct Session {
    id: SessionId,
    limits: SessionLimits,
    decoder: Decoder,
    out: OutQueue,
    last_seen: MonoTime,
    handshake: Handshake,
    closing: Option<CloseReason>,
    /// The TLS layer under the frame codec, when the listener has TLS. Boxed: plain sessions pay
    /// one pointer.
    #[cfg(feature = "tls")]
    tls: Option<Box<crate::tls::TlsLayer>>,
}

impl Session {
    /// A new session, opened at `now`.
    pub fn new(id: SessionId, limits: SessionLimits, now: MonoTime) -> Session {
        Session {
            id,
            limits,
            decoder: Decoder::new(limits.max_frame),
            out: OutQueue::default(),
            last_seen: now,
            handshake: Handshake::AwaitingHello,
            closing: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// The session id.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The limits the session was opened with.
    pub fn limits(&self) -> SessionLimits {
        self.limits
    }

    // ---- input ----

    /// Takes the next frame from `input` (bytes the peer sent, received at `now`; on a TLS
    /// session, the plaintext [`Session::receive_tls`] gave), advancing
    /// `input` past it. Call repeatedly until it returns `Ok(None)`: then `input` is empty and an
    /// incomplete trailing frame is kept for the next call. The frame never borrows the session.
    ///
    /// Returns `Ok(None)` at once, ignoring `input`, once the session is closing.
    ///
    /// Fails when the bytes break the framing rules; the session is then closing with
    /// [`CloseReason::Protocol`] and the error is that reason.
    pub fn receive<'a>(
        &mut self,
        now: MonoTime,
        input: &mut &'a [u8],
    ) -> Result<Option<FrameBuf<'a>>, CloseReason> {
        if self.closing.is_some() {
            *input = &[];
            return Ok(None);
        }
        if !input.is_empty() {
            self.last_seen = now;
        }
        match self.decoder.next(input) {
            Ok(f) => Ok(f),
            Err(e) => {
                let reason = CloseReason::Protocol(e.to_string());
                self.close(reason.clone());
                Err(reason)
            }
        }
    }

    /// The peer closed its side: the reason the session ends (a clean close, or a frame cut short).
    /// The session is closing afterwards.
    pub fn peer_closed(&mut self) -> CloseReason {
        #[cfg(feature = "tls")]
        if let Some(reason) = self.tls.as_deref_mut().and_then(|t| t.peer_finished()) {
            self.close(reason);
        }
        let reason = match self.decoder.finish() {
            Ok(()) => CloseReason::PeerClosed,
            Err(e @ FrameError::Truncated { .. }) => CloseReason::Protocol(e.to_string()),
            Err(e) => CloseReason::Protocol(e.to_string()),
        };
        self.close(reason);
        self.closing.clone().unwrap_or(CloseReason::PeerClosed)
    }

    /// Bytes of an incomplete input frame held for the next [`Session::receive`]. Always fewer
    /// than `max(max_frame, 12)`: an incomplete frame is shorter than its length, which is at most
    /// `max_frame`, and a header is 12 bytes.
    pub fn buffered_input(&self) -> usize {
        self.decoder.pending_len()
    }

    /// When the peer last sent bytes.
    pub fn last_seen(&self) -> MonoTime {
        self.last_seen
    }

    // ---- handshake ----

    /// The handshake state.
    pub fn handshake(&self) -> Handshake {
        self.handshake
    }

    /// True once `Hello` was accepted.
    pub fn is_ready(&self) -> bool {
        self.handshake == Handshake::Ready
    }

    /// The gate accepted the peer's `Hello`.
    pub fn hello_accepted(&mut self) {
        self.handshake = Handshake::Ready;
    }

    // ---- output ----

    /// Queues one encoded frame for the peer.
    ///
    /// Refused when the session is closing, or when the queue is not empty and would pass
    /// `send_buffer_limit` (the session is then closing with
    /// [`CloseReason::SendBufferOverflow`]). A frame is always accepted into an empty queue.
    ///
    /// Cost: one copy of `frame` into the queue.
    pub fn send(&mut self, frame: &[u8]) -> Result<(), SendError> {
        self.send_with(frame.len(), |out| out.extend_from_slice(frame))
    }

    /// Queues a frame of exactly `len` bytes written by `write` straight into the queue (no
    /// intermediate buffer). Same rules as [`Session::send`]; `write` is not called when refused.
    pub fn send_with(
        &mut self,
        len: usize,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), SendError> {
        if self.closing.is_some() {
            return Err(SendError::Closing);
        }
        let queued = self.unsent();
        if queued > 0 && queued + len > self.limits.send_buffer_limit {
            self.close(CloseReason::SendBufferOverflow);
            return Err(SendError::Overflow);
        }
        let before = self.out.bytes.len();
        write(&mut self.out.bytes);
        debug_assert_eq!(
            self.out.bytes.len() - before,
            len,
            "send_with wrote a different length"
        );
        Ok(())
    }

    /// Bytes waiting for the socket (the front of the queue). On a TLS session the queued frames
    /// are encrypted first (all of them, in as few records as rustls cuts), so this is ciphertext.
    pub fn transmit(&mut self) -> &[u8] {
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_deref_mut() {
            let n = tls.seal(&self.out.bytes[self.out.written..]);
            self.out.consume(n);
            return tls.pending();
        }
        &self.out.bytes[self.out.written..]
    }

    /// The socket took `n` bytes of [`Session::transmit`].
    pub fn transmitted(&mut self, n: usize) {
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_deref_mut() {
            tls.consume(n);
            return;
        }
        self.out.consume(n);
    }

    /// Bytes queued and not yet written (frames, and on a TLS session ciphertext not yet taken
    /// by the socket).
    pub fn unsent(&self) -> usize {
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_deref() {
            return self.out.unsent() + tls.unsent();
        }
        self.out.unsent()
    }

    // ---- time ----

    /// The next time the runtime must call [`Session::handle_timeout`], if any.
    pub fn poll_timeout(&self) -> Option<MonoTime> {
        if self.closing.is_some() {
            return None;
        }
        let idle = self
            .limits
            .idle_timeout
            .map(|t| self.last_seen.saturating_add(t));
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_deref() {
            return earliest(idle, tls.poll_timeout());
        }
        idle
    }

    /// Fires what is due at `now`: a session idle for `idle_timeout` starts closing with
    /// [`CloseReason::IdleTimeout`]; on a TLS session, a handshake past its deadline closes it
    /// and a due key update is queued. Early or repeated calls are harmless.
    pub fn handle_timeout(&mut self, now: MonoTime) {
        #[cfg(feature = "tls")]
        if self.closing.is_none() {
            if let Some(Err(reason)) = self.tls.as_deref_mut().map(|t| t.handle_timeout(now)) {
                self.close(reason);
                return;
            }
        }
        // Due exactly when `now` reaches the deadline `poll_timeout` reports. (Measuring the idle
        // time instead disagreed with it at the edges: a `now` behind `last_seen` with a zero
        // timeout closed before the deadline, and a deadline saturated at the end of time was
        // reported due but never fired, so a timer re-armed on it would fire forever.)
        if let Some(deadline) = self.poll_timeout() {
            if now >= deadline {
                self.close(CloseReason::IdleTimeout);
            }
        }
    }

    // ---- close ----

    /// Starts closing with `reason` (the first reason wins). Queued output may still be written.
    pub fn close(&mut self, reason: CloseReason) {
        if self.closing.is_none() {
            self.closing = Some(reason);
            // TLS: the frames still queued are encrypted now, then close_notify follows them.
            // (Not for a peer that does not read: nothing more is written to it.)
            #[cfg(feature = "tls")]
            if let Some(tls) = self.tls.as_deref_mut() {
                if self.closing != Some(CloseReason::SendBufferOverflow) {
                    let n = tls.close(&self.out.bytes[self.out.written..]);
                    self.out.consume(n);
                }
            }
        }
    }

    /// Why the session is closing, once it is.
    pub fn close_reason(&self) -> Option<&CloseReason> {
        self.closing.as_ref()
    }

    /// True once the session is closing.
    pub fn is_closing(&self) -> bool {
        self.closing.is_some()
    }
}

/// TLS under the frame codec (feature `tls`). The layer itself is [`crate::tls::TlsLayer`]; these
/// are the session's few points of contact with it.
#[cfg(feature = "tls")]
impl Session {
    /// Puts TLS under the frame codec: from now on the runtime feeds ciphertext through
    /// [`Session::receive_tls`], and [`Session::transmit`] hands out ciphertext. Call before
    /// any byte was received or queued.
    pub fn with_tls(mut self, tls: crate::tls::TlsLayer) -> Session {
        debug_assert!(self.out.unsent() == 0 && self.decoder.pending_len() == 0);
        self.tls = Some(Box::new(tls));
        self
    }

    /// True when the session runs over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The TLS layer (version, cipher suite, server name), when the session runs over TLS.
    pub fn tls(&self) -> Option<&crate::tls::TlsLayer> {
        self.tls.as_deref()
    }

    /// Decrypts `input` (ciphertext received at `now`) and appends the plaintext to `plain`, a
    /// buffer the caller owns (the shard's scratch buffer): the caller then takes frames out of
    /// it with [`Session::receive`], so frames never borrow the session. Whatever TLS must answer
    /// (handshake flights, alerts, a KeyUpdate answer) is queued for [`Session::transmit`] before
    /// this returns, so the runtime's write after every read sends it.
    ///
    /// When the result says `peer_closed` (the peer's `close_notify`), the caller processes the
    /// plaintext and then closes the session with [`CloseReason::PeerClosed`].
    ///
    /// Fails when the input breaks TLS; the session is then closing with that reason (a
    /// [`CloseReason::Protocol`] starting `tls:`), and rustls' alert, if any, is queued. Ignores
    /// `input` once closing. On a session without TLS, copies `input` to `plain`.
    pub fn receive_tls(
        &mut self,
        now: MonoTime,
        input: &[u8],
        plain: &mut Vec<u8>,
    ) -> Result<crate::tls::TlsRead, CloseReason> {
        if self.closing.is_some() {
            return Ok(crate::tls::TlsRead::default());
        }
        let Some(tls) = self.tls.as_deref_mut() else {
            plain.extend_from_slice(input);
            return Ok(crate::tls::TlsRead::default());
        };
        if !input.is_empty() {
            self.last_seen = now;
        }
        tls.read(now, input, plain).inspect_err(|reason| {
            self.close(reason.clone());
        })
    }

    /// What the TLS layer did since the last call (handshakes, failures, key updates), for the
    /// runtime to count. Empty on a session without TLS.
    pub fn take_tls_events(&mut self) -> crate::tls::TlsEvents {
        self.tls
            .as_deref_mut()
            .map(|t| t.take_events())
            .unwrap_or_default()
    }
}

/// The earlier of two optional deadlines.
#[cfg(feature = "tls")]
fn earliest(a: Option<MonoTime>, b: Option<MonoTime>) -> Option<MonoTime> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The outbound queue: encoded bytes and how much of the front is written.
#[derive(Debug, Default)]
struct OutQueue {
    bytes: Vec<u8>,
    written: usize,
}

impl OutQueue {
    /// Kept when drained; larger buffers are released so idle sessions stay small.
    const KEEP: usize = 4096;

    fn unsent(&self) -> usize {
        self.bytes.len() - self.written
    }

    fn consume(&mut self, n: usize) {
        self.written += n;
        assert!(
            self.written <= self.bytes.len(),
            "consumed more than queued"
        );
        if self.written == self.bytes.len() {
            self.written = 0;
            if self.bytes.capacity() > Self::KEEP {
                self.bytes = Vec::new();
            } else {
                self.bytes.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{encode, encode_into, HEADER_LEN};

    const MS: u64 = 1_000_000;

    fn limits() -> SessionLimits {
        SessionLimits {
            max_frame: 1024,
            send_buffer_limit: 100,
            idle_timeout: Some(Duration::from_millis(50)),
        }
    }

    fn session() -> Session {
        Session::new(SessionId::new(0, 1, 0), limits(), MonoTime(0))
    }

    /// Feeds `bytes` and collects (opcode, request id, body) of every frame.
    fn drain(
        s: &mut Session,
        now: u64,
        bytes: &[u8],
    ) -> Result<Vec<(u16, u32, Vec<u8>)>, CloseReason> {
        let mut input = bytes;
        let mut out = Vec::new();
        while let Some(f) = s.receive(MonoTime(now), &mut input)? {
            let f = f.frame();
            out.push((f.header.opcode, f.header.request_id, f.body.to_vec()));
        }
        assert!(input.is_empty());
        Ok(out)
    }

    #[test]
    fn frames_in_split_across_reads_arrive_once_in_order() {
        let mut s = session();
        let mut bytes = encode(HELLO_OPCODE, 0, 1, b"v");
        encode_into(&mut bytes, 4, 0, 2, b"ping");
        encode_into(&mut bytes, 4, 0, 3, b"");
        let mut got = Vec::new();
        for chunk in bytes.chunks(5) {
            got.extend(drain(&mut s, 1, chunk).unwrap());
        }
        let ids: Vec<u32> = got.iter().map(|f| f.1).collect();
        assert_eq!(ids, [1, 2, 3]);
        assert_eq!(got[1].2, b"ping");
        assert_eq!(s.peer_closed(), CloseReason::PeerClosed);
    }

    #[test]
    fn bad_framing_closes_with_the_frame_error() {
        let mut s = session();
        let mut bad = encode(4, 0, 1, b"");
        bad[0] = 3;
        let err = drain(&mut s, 1, &bad).unwrap_err();
        assert!(
            matches!(err, CloseReason::Protocol(ref m) if m.contains("out of range")),
            "{err}"
        );
        assert_eq!(s.close_reason(), Some(&err));
        assert!(
            drain(&mut s, 2, &encode(4, 0, 2, b"")).unwrap().is_empty(),
            "closing: input ignored"
        );
    }

    #[test]
    fn truncated_frame_at_peer_close_is_a_protocol_error() {
        let mut s = session();
        drain(&mut s, 1, &encode(4, 0, 1, b"hello")[..7]).unwrap();
        assert!(matches!(s.peer_closed(), CloseReason::Protocol(m) if m.contains("truncated")));
    }

    #[test]
    fn one_frame_always_fits_an_empty_queue_then_the_limit_holds() {
        let mut s = session();
        let big = vec![7u8; 300]; // above send_buffer_limit (100)
        s.send(&big).expect("an empty queue takes any one frame");
        assert_eq!(s.unsent(), 300);
        assert_eq!(s.send(b"x"), Err(SendError::Overflow));
        assert_eq!(s.close_reason(), Some(&CloseReason::SendBufferOverflow));
        assert_eq!(s.send(b"y"), Err(SendError::Closing));
    }

    #[test]
    fn transmit_and_transmitted_drain_the_queue_and_release_big_buffers() {
        let mut s = session();
        s.send(&[1; 60]).unwrap();
        s.send(&[2; 40]).unwrap();
        assert_eq!(s.transmit().len(), 100);
        s.transmitted(70);
        assert_eq!(s.transmit(), &[2; 30][..]);
        s.transmitted(30);
        assert_eq!(s.unsent(), 0);
        let mut s = Session::new(
            SessionId::new(0, 2, 0),
            SessionLimits {
                send_buffer_limit: 1 << 20,
                ..limits()
            },
            MonoTime(0),
        );
        s.send(&vec![0; 10_000]).unwrap();
        s.transmitted(10_000);
        assert_eq!(
            s.out.bytes.capacity(),
            0,
            "a drained large buffer is released"
        );
    }

    #[test]
    fn send_with_writes_in_place() {
        let mut s = session();
        s.send_with(HEADER_LEN + 2, |out| encode_into(out, 5, 0, 9, b"ok"))
            .unwrap();
        assert_eq!(s.transmit(), &encode(5, 0, 9, b"ok")[..]);
    }

    #[test]
    fn idle_deadline_moves_with_input_and_fires_once_due() {
        let mut s = session();
        assert_eq!(s.poll_timeout(), Some(MonoTime(50 * MS)));
        drain(&mut s, 30 * MS, &encode(4, 0, 1, b"")).unwrap();
        assert_eq!(s.poll_timeout(), Some(MonoTime(80 * MS)));
        s.handle_timeout(MonoTime(50 * MS)); // the old deadline: early now
        assert!(!s.is_closing());
        s.handle_timeout(MonoTime(80 * MS));
        assert_eq!(s.close_reason(), Some(&CloseReason::IdleTimeout));
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn handle_timeout_fires_exactly_at_the_polled_deadline() {
        // The two edges where measuring `now - last_seen` disagreed with `poll_timeout`: the
        // first found by the `session` fuzz target, the second (saturation) by review of the same
        // line.
        let zero = SessionLimits {
            idle_timeout: Some(Duration::ZERO),
            ..limits()
        };
        let mut s = Session::new(SessionId::new(0, 1, 0), zero, MonoTime(944));
        assert_eq!(s.poll_timeout(), Some(MonoTime(944)));
        s.handle_timeout(MonoTime(0)); // before the deadline (a caller's clock behind ours)
        assert!(
            !s.is_closing(),
            "closed before the deadline poll_timeout gave"
        );
        s.handle_timeout(MonoTime(944));
        assert_eq!(s.close_reason(), Some(&CloseReason::IdleTimeout));

        let mut s = Session::new(SessionId::new(0, 1, 0), limits(), MonoTime(u64::MAX - 1));
        assert_eq!(s.poll_timeout(), Some(MonoTime(u64::MAX)), "saturated");
        s.handle_timeout(MonoTime(u64::MAX));
        assert_eq!(
            s.close_reason(),
            Some(&CloseReason::IdleTimeout),
            "a deadline reported due must fire"
        );
    }

    #[test]
    fn no_idle_timeout_means_no_deadline() {
        let s = Session::new(
            SessionId::new(0, 1, 0),
            SessionLimits {
                idle_timeout: None,
                ..limits()
            },
            MonoTime(0),
        );
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn first_close_reason_wins_and_handshake_moves_once() {
        let mut s = session();
        assert_eq!(s.handshake(), Handshake::AwaitingHello);
        s.hello_accepted();
        assert!(s.is_ready());
        s.close(CloseReason::Shutdown);
        s.close(CloseReason::IdleTimeout);
        assert_eq!(s.close_reason(), Some(&CloseReason::Shutdown));
    }
}

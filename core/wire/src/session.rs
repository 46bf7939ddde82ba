//! The session state machine: one client connection's protocol state, with no socket and no clock.
//!
//! In the shape of quinn-proto's `Connection`: the runtime feeds it bytes and the time
//! ([`Session::receive`]), queues frames for the peer ([`Session::send`]), takes bytes to write
//! ([`Session::transmit`] / [`Session::transmitted`]), asks when it next needs the time
//! ([`Session::poll_timeout`]) and fires that deadline ([`Session::handle_timeout`]). Everything a
//! session is lives here: the frame decoder, the bounded outbound queue, the idle deadline, the
//! handshake (Hello) state and the close reason. The byte-transport layers under the frames
//! (binary, HTTP/1.1, WebSocket: [`crate::stack`]) are the session's too, so a test or a
//! simulation can drive thousands of sessions with no network and a fake clock. TLS (feature
//! `tls`, [`crate::tls::TlsLayer`], attached with [`Session::with_tls`]) sits under them: the
//! runtime decrypts with [`Session::receive_tls`] into a buffer it owns, then takes events out of
//! the plaintext; [`Session::transmit`] encrypts what is queued.
//!
//! Input: [`Session::receive_event`] gives [`Event`]s — frames, and HTTP requests the application
//! answers with [`Session::respond`]. [`Session::receive`] is the frames-only form for binary
//! sessions.
//!
//! What it never does: read a clock, touch a socket, decode a protobuf body or log.

use std::sync::Arc;
use std::time::Duration;

use crate::frame::FrameBuf;
use crate::http::Response;
use crate::session_id::{CloseReason, SessionId};
use crate::stack::{Event, Layer, RpcReply, SessionType, StackConfig, Step, Transport};
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
    /// The session's transport cannot carry this frame (an HTTP connection not waiting for a
    /// reply with this request id, or the WebSocket echo endpoint); the frame was dropped.
    #[error("no channel for frames on this transport")]
    NoChannel,
}

/// One session's protocol state. See the module documentation.
///
/// Memory at rest: about 140 bytes plus the unsent output and an incomplete input frame; both
/// buffers are released when drained, so an idle session holds no buffer. An HTTP or WebSocket
/// session adds its layer (one allocation of about 100–200 bytes).
#[derive(Debug)]
pub struct Session {
    id: SessionId,
    limits: SessionLimits,
    layer: Layer,
    session_type: SessionType,
    out: OutQueue,
    last_seen: MonoTime,
    handshake: Handshake,
    closing: Option<CloseReason>,
    /// Close with this reason once the queue is written (a close handshake, `Connection: close`).
    /// Boxed: rare, and a binary session should stay small.
    linger: Option<Box<CloseReason>>,
    /// The TLS layer under the other layers, when the listener has TLS. Boxed: plain sessions pay
    /// one pointer.
    #[cfg(feature = "tls")]
    tls: Option<Box<crate::tls::TlsLayer>>,
}

impl Session {
    /// A new binary client session (frames over the byte stream), opened at `now`.
    pub fn new(id: SessionId, limits: SessionLimits, now: MonoTime) -> Session {
        Session::new_on(
            id,
            limits,
            &Arc::new(StackConfig::binary(SessionType::Client)),
            now,
        )
    }

    /// A new session of a listener with protocol stack `stack`, opened at `now`.
    pub fn new_on(
        id: SessionId,
        limits: SessionLimits,
        stack: &Arc<StackConfig>,
        now: MonoTime,
    ) -> Session {
        Session {
            id,
            limits,
            layer: Layer::new(stack, limits.max_frame, now),
            session_type: stack.session_type,
            out: OutQueue::default(),
            last_seen: now,
            handshake: Handshake::AwaitingHello,
            closing: None,
            linger: None,
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

    /// What the session is (its listener's session type).
    pub fn session_type(&self) -> SessionType {
        self.session_type
    }

    /// The layer the session speaks now (an HTTP session becomes WebSocket when it upgrades).
    pub fn transport(&self) -> Transport {
        self.layer.transport()
    }

    // ---- input ----

    /// Takes the next frame from `input` (bytes the peer sent, received at `now`), advancing
    /// `input` past it. Call repeatedly until it returns `Ok(None)`: then `input` is empty and an
    /// incomplete trailing frame is kept for the next call. The frame never borrows the session.
    ///
    /// Binary sessions only (their input needs no transformation): on another transport use
    /// [`Session::receive_event`]; here the session closes with a protocol error.
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
        let Layer::Binary(decoder) = &mut self.layer else {
            *input = &[];
            let reason = CloseReason::Protocol("receive() on a non-binary session".into());
            self.close(reason.clone());
            return Err(reason);
        };
        if !input.is_empty() {
            self.last_seen = now;
        }
        match decoder.next(input) {
            Ok(f) => Ok(f),
            Err(e) => {
                let reason = CloseReason::Protocol(e.to_string());
                self.close(reason.clone());
                Err(reason)
            }
        }
    }

    /// Takes the next event from `input` (bytes the peer sent, received at `now`), advancing
    /// `input` past what it used. Call repeatedly until `Ok(None)`: then `input` is empty and
    /// incomplete input is kept. Events never borrow the session.
    ///
    /// `input` is mutable because layers transform it in place (WebSocket unmasking), so a frame
    /// that arrives whole in one read is handed out borrowed from it, with no copy. An HTTP
    /// request is answered with [`Session::respond`]; until then no further request is given
    /// (pipelined ones wait, see [`Session::has_pending_input`]). A WebSocket upgrade, pings,
    /// and the close handshake are handled here.
    ///
    /// Returns `Ok(None)` at once, ignoring `input`, once the session is closing. Fails when the
    /// bytes break the protocol; what the protocol answers (an HTTP status, a close frame with
    /// its code) is queued, the session is closing, and the error is the reason.
    pub fn receive_event<'a>(
        &mut self,
        now: MonoTime,
        input: &mut &'a mut [u8],
    ) -> Result<Option<Event<'a>>, CloseReason> {
        if self.closing.is_some() || self.linger.is_some() {
            *input = &mut [];
            return Ok(None);
        }
        if !input.is_empty() {
            self.last_seen = now;
        }
        let was_http = self.layer.transport() == Transport::Http;
        let step = self.layer.receive(now, input, &mut self.out.bytes);
        if was_http && self.layer.transport() != Transport::Http {
            // The 101 grew the queue past what a WebSocket session's frames need: let the buffer
            // go once it is written, so an idle WebSocket holds none.
            self.out.release_when_drained = true;
        }
        match step {
            Step::Event(e) => Ok(Some(e)),
            Step::Idle => {
                self.check_queue();
                Ok(None)
            }
            Step::Linger(reason) => {
                *input = &mut [];
                self.close_after_flush(reason);
                Ok(None)
            }
            Step::Fail(reason) => {
                *input = &mut [];
                self.close(reason.clone());
                Err(reason)
            }
        }
    }

    /// True when held input can give events without new bytes: call
    /// [`Session::receive_event`] with an empty input (pipelined HTTP requests behind one just
    /// answered).
    pub fn has_pending_input(&self) -> bool {
        self.closing.is_none() && self.linger.is_none() && self.layer.has_pending_input()
    }

    /// False while an HTTP request waits for its response: the runtime stops reading, so a
    /// pipelining client is held back by TCP instead of by the server's memory.
    pub fn wants_input(&self) -> bool {
        self.layer.wants_input()
    }

    /// The peer closed its side: the reason the session ends (a clean close, or a frame cut short).
    /// The session is closing afterwards.
    pub fn peer_closed(&mut self) -> CloseReason {
        #[cfg(feature = "tls")]
        if let Some(reason) = self.tls.as_deref_mut().and_then(|t| t.peer_finished()) {
            self.close(reason);
        }
        let reason = match self.layer.finish() {
            Ok(()) => CloseReason::PeerClosed,
            Err(e) => CloseReason::Protocol(e),
        };
        self.close(reason);
        self.closing.clone().unwrap_or(CloseReason::PeerClosed)
    }

    /// Bytes of incomplete input held for the next call. On a binary session always fewer than
    /// `max(max_frame, 12)`: an incomplete frame is shorter than its length, which is at most
    /// `max_frame`, and a header is 12 bytes. An HTTP session holds at most one request being
    /// received (head ≤ its limit, body ≤ `max_frame`) plus one read pipelined behind it.
    pub fn buffered_input(&self) -> usize {
        self.layer.buffered()
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
    ///
    /// On a WebSocket session the frame goes out as one binary message (a 2–10 byte header
    /// before it, counted against the bound). On an HTTP session it is taken only as the reply
    /// awaited with [`Session::expect_reply`], else refused with [`SendError::NoChannel`].
    pub fn send_with(
        &mut self,
        len: usize,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), SendError> {
        if self.closing.is_some() || self.linger.is_some() {
            return Err(SendError::Closing);
        }
        let queued = self.unsent();
        if queued > 0 && queued + self.layer.framed_len(len) > self.limits.send_buffer_limit {
            self.close(CloseReason::SendBufferOverflow);
            return Err(SendError::Overflow);
        }
        let before = self.out.bytes.len();
        let mut wrote = 0;
        let carried = self.layer.write_frame(&mut self.out.bytes, len, |out| {
            let at = out.len();
            write(out);
            wrote = out.len() - at;
        });
        if !carried {
            return Err(SendError::NoChannel);
        }
        debug_assert_eq!(wrote, len, "send_with wrote a different length");
        debug_assert!(self.out.bytes.len() >= before);
        Ok(())
    }

    // ---- HTTP ----

    /// Answers the HTTP request last handed out by [`Session::receive_event`]. When that request
    /// asked to close (`Connection: close`, HTTP/1.0), the session closes once the response is
    /// written. Refused ([`SendError::NoChannel`]) when no request waits for an answer; bounded
    /// like [`Session::send`] (a response always fits an empty queue).
    pub fn respond(&mut self, resp: &Response) -> Result<(), SendError> {
        if self.closing.is_some() || self.linger.is_some() {
            return Err(SendError::Closing);
        }
        let queued = self.unsent();
        if queued > 0 && queued + resp.body.len() > self.limits.send_buffer_limit {
            self.close(CloseReason::SendBufferOverflow);
            return Err(SendError::Overflow);
        }
        match self.layer.respond(resp, &mut self.out.bytes) {
            None => Err(SendError::NoChannel),
            Some(true) => Ok(()),
            Some(false) => {
                self.close_after_flush(CloseReason::PeerClosed);
                Ok(())
            }
        }
    }

    /// The request last handed out is relayed to a handler as a frame with `request_id`: the
    /// first frame queued to this session with that request id becomes its reply
    /// ([`Session::take_rpc_reply`]). Past `deadline` the session answers `504` itself. `tag`
    /// is the caller's (e.g. the reply's encoding). False when no request waits or one reply is
    /// already awaited.
    pub fn expect_reply(&mut self, request_id: u32, tag: u32, deadline: MonoTime) -> bool {
        self.layer.expect_reply(request_id, tag, deadline)
    }

    /// True when an awaited reply frame arrived: take it with [`Session::take_rpc_reply`] and
    /// answer the request with [`Session::respond`].
    pub fn has_rpc_reply(&self) -> bool {
        self.layer.has_reply()
    }

    /// The awaited reply frame, once it arrived.
    pub fn take_rpc_reply(&mut self) -> Option<RpcReply> {
        self.layer.take_reply()
    }

    /// Bytes waiting for the socket (the front of the queue). On a TLS session the queued bytes
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
        } else {
            self.out.consume(n);
        }
        #[cfg(not(feature = "tls"))]
        self.out.consume(n);
        if self.unsent() == 0 {
            if let Some(reason) = self.linger.take() {
                self.close(*reason);
            }
        }
    }

    /// Bytes queued and not yet written (on a TLS session, plaintext not yet sealed plus
    /// ciphertext not yet taken by the socket).
    pub fn unsent(&self) -> usize {
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_deref() {
            return self.out.unsent() + tls.unsent();
        }
        self.out.unsent()
    }

    // ---- time ----

    /// The next time the runtime must call [`Session::handle_timeout`], if any: the idle
    /// deadline, or earlier a layer's (an HTTP head or reply deadline, a WebSocket ping).
    pub fn poll_timeout(&self) -> Option<MonoTime> {
        if self.closing.is_some() {
            return None;
        }
        let t = earliest(self.idle_deadline(), self.layer.poll_timeout());
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_deref() {
            return earliest(t, tls.poll_timeout());
        }
        t
    }

    fn idle_deadline(&self) -> Option<MonoTime> {
        self.limits
            .idle_timeout
            .map(|t| self.last_seen.saturating_add(t))
    }

    /// Fires what is due at `now`: a session idle for `idle_timeout` starts closing with
    /// [`CloseReason::IdleTimeout`]; a layer's deadline queues what it sends (a `408` or `504`,
    /// a ping). Early or repeated calls are harmless. Output may be queued: write it.
    pub fn handle_timeout(&mut self, now: MonoTime) {
        if self.closing.is_some() {
            return;
        }
        // TLS: a handshake past its deadline closes the session; a due key update is queued.
        #[cfg(feature = "tls")]
        if let Some(Err(reason)) = self.tls.as_deref_mut().map(|t| t.handle_timeout(now)) {
            self.close(reason);
            return;
        }
        // Due exactly when `now` reaches the deadline `poll_timeout` reports. (Measuring the idle
        // time instead disagreed with it at the edges: a `now` behind `last_seen` with a zero
        // timeout closed before the deadline, and a deadline saturated at the end of time was
        // reported due but never fired, so a timer re-armed on it would fire forever.)
        if let Some(deadline) = self.idle_deadline() {
            if now >= deadline {
                self.close(CloseReason::IdleTimeout);
                return;
            }
        }
        if let Some(reason) = self.layer.handle_timeout(now, &mut self.out.bytes) {
            self.close_after_flush(reason);
        }
        self.check_queue();
    }

    // ---- close ----

    /// Starts closing with `reason` (the first reason wins). Queued output may still be written;
    /// a WebSocket session queues its close frame (with the code for `reason`) first.
    pub fn close(&mut self, reason: CloseReason) {
        if self.closing.is_none() {
            // Not for a peer that does not read: nothing more is written to it.
            if reason != CloseReason::SendBufferOverflow {
                self.layer.on_close(&reason, &mut self.out.bytes);
                // TLS: what is still queued is encrypted now, then close_notify follows it.
                #[cfg(feature = "tls")]
                if let Some(tls) = self.tls.as_deref_mut() {
                    let n = tls.close(&self.out.bytes[self.out.written..]);
                    self.out.consume(n);
                }
            }
            self.closing = Some(reason);
        }
    }

    /// Closes with `reason` once everything queued is written (at once when nothing is). Input
    /// is ignored from now on; the idle deadline still bounds a peer that does not read.
    pub fn close_after_flush(&mut self, reason: CloseReason) {
        if self.closing.is_some() {
            return;
        }
        if self.unsent() == 0 {
            self.close(reason);
        } else if self.linger.is_none() {
            self.linger = Some(Box::new(reason));
        }
    }

    /// Layers queue protocol answers (pongs, echoes) on input; a peer that sends them faster than
    /// it reads passes the bound like any other output (one echoed message, header included,
    /// always fits).
    fn check_queue(&mut self) {
        let one = self.limits.max_frame as usize + crate::ws::frame::MAX_HEADER_LEN;
        if self.unsent() > self.limits.send_buffer_limit.max(one) {
            self.close(CloseReason::SendBufferOverflow);
        }
    }

    /// The reason the session will close with once its queue is written
    /// ([`Session::close_after_flush`]), until then.
    pub fn closing_after_flush(&self) -> Option<&CloseReason> {
        self.linger.as_deref()
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

/// TLS under the other layers (feature `tls`). The layer itself is [`crate::tls::TlsLayer`]; these
/// are the session's few points of contact with it.
#[cfg(feature = "tls")]
impl Session {
    /// Puts TLS under the frame codec: from now on the runtime feeds ciphertext through
    /// [`Session::receive_tls`], and [`Session::transmit`] hands out ciphertext. Call before
    /// any byte was received or queued.
    pub fn with_tls(mut self, tls: crate::tls::TlsLayer) -> Session {
        debug_assert!(self.out.unsent() == 0 && self.layer.buffered() == 0);
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
    /// buffer the caller owns (the shard's scratch buffer): the caller then takes frames or events
    /// out of it with [`Session::receive`] / [`Session::receive_event`], so they never borrow
    /// the session. Whatever TLS must answer
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
    /// Release the buffer (whatever its size) the next time it drains.
    release_when_drained: bool,
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
            if self.bytes.capacity() > Self::KEEP || self.release_when_drained {
                self.release_when_drained = false;
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

#[cfg(test)]
mod stack_tests {
    //! The session over the HTTP and WebSocket layers: upgrade, frames in binary messages,
    //! close handshakes, pings, RPC replies, deadlines.
    use super::*;
    use crate::frame::encode;
    use crate::http::HttpLimits;
    use crate::stack::{StackKind, WsSettings};
    use crate::ws::frame::apply_mask;

    const MS: u64 = 1_000_000;

    fn http_session(echo: bool) -> Session {
        let cfg = Arc::new(StackConfig {
            kind: StackKind::Http,
            session_type: SessionType::Client,
            http: HttpLimits {
                head_timeout: Duration::from_millis(100),
                ..HttpLimits::default()
            },
            ws: WsSettings {
                echo_path: if echo { "/echo".into() } else { String::new() },
                ping_interval: Some(Duration::from_millis(30)),
                ..WsSettings::default()
            },
        });
        Session::new_on(
            SessionId::new(0, 1, 0),
            SessionLimits {
                max_frame: 1024,
                send_buffer_limit: 4096,
                idle_timeout: Some(Duration::from_millis(1000)),
            },
            &cfg,
            MonoTime(0),
        )
    }

    fn ws_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut v = vec![0x80 | opcode];
        if payload.len() < 126 {
            v.push(0x80 | payload.len() as u8);
        } else {
            v.push(0x80 | 126);
            v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        v.extend_from_slice(&mask);
        let mut p = payload.to_vec();
        apply_mask(&mut p, mask, 0);
        v.extend(p);
        v
    }

    const UPGRADE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: lattice.v1\r\n\r\n";

    /// Events of one read, frames and requests as owned values.
    fn feed(s: &mut Session, now: u64, bytes: &[u8]) -> Result<Vec<String>, CloseReason> {
        let mut owned = bytes.to_vec();
        let mut input: &mut [u8] = &mut owned;
        let mut got = Vec::new();
        while let Some(ev) = s.receive_event(MonoTime(now), &mut input)? {
            got.push(match ev {
                Event::Frame(f) => {
                    let f = f.frame();
                    format!(
                        "frame {} {} {:?}",
                        f.header.opcode, f.header.request_id, f.body
                    )
                }
                Event::Request(r) => format!("{} {}", r.method, r.path),
            });
        }
        Ok(got)
    }

    fn drain(s: &mut Session) -> Vec<u8> {
        let out = s.transmit().to_vec();
        s.transmitted(out.len());
        out
    }

    #[test]
    fn upgrade_then_frames_in_binary_messages_both_ways() {
        let mut s = http_session(false);
        assert_eq!(s.transport(), Transport::Http);
        let mut bytes = UPGRADE.to_vec();
        // A frame right behind the upgrade request, in the same read.
        bytes.extend(ws_frame(2, &encode(1, 0, 7, b"v")));
        let got = feed(&mut s, 1, &bytes).unwrap();
        assert_eq!(got, ["frame 1 7 [118]"]);
        assert_eq!(s.transport(), Transport::WebSocket);
        let hs = String::from_utf8(drain(&mut s)).unwrap();
        assert!(
            hs.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
            "{hs}"
        );
        assert!(hs.contains("Sec-WebSocket-Protocol: lattice.v1\r\n"));
        let got = feed(
            &mut s,
            2,
            &[
                ws_frame(2, &encode(4, 0, 8, b"ping")),
                ws_frame(2, &encode(4, 0, 9, b"")),
            ]
            .concat(),
        )
        .unwrap();
        assert_eq!(got, ["frame 4 8 [112, 105, 110, 103]", "frame 4 9 []"]);
        s.send(&encode(5, 0, 8, b"pong")).unwrap();
        let out = drain(&mut s);
        assert_eq!(out[..2], [0x82, 16], "one binary message per frame");
        assert_eq!(&out[2..], &encode(5, 0, 8, b"pong")[..]);
        assert_eq!(s.buffered_input(), 0);
    }

    #[test]
    fn bad_messages_close_with_their_codes() {
        let cases: Vec<(Vec<u8>, u16)> = vec![
            (ws_frame(1, b"text"), 1003),
            (ws_frame(2, b"abc"), 1007),
            (
                ws_frame(2, &[encode(4, 0, 1, b""), encode(4, 0, 2, b"")].concat()),
                1007,
            ),
            (ws_frame(2, &vec![0; 1025]), 1009),
            (vec![0x82, 0x01, b'x'], 1002),
        ];
        for (bytes, code) in cases {
            let mut s = http_session(false);
            feed(&mut s, 1, UPGRADE).unwrap();
            drain(&mut s);
            let e = feed(&mut s, 2, &bytes).unwrap_err();
            assert!(matches!(e, CloseReason::Protocol(_)), "{e:?}");
            let out = drain(&mut s);
            assert_eq!(out[0], 0x88, "a close frame");
            assert_eq!(u16::from_be_bytes([out[2], out[3]]), code, "{e}");
            assert!(s.is_closing());
        }
    }

    #[test]
    fn close_handshake_lingers_until_written() {
        let mut s = http_session(false);
        feed(&mut s, 1, UPGRADE).unwrap();
        drain(&mut s);
        assert!(feed(&mut s, 2, &ws_frame(8, &1000u16.to_be_bytes()))
            .unwrap()
            .is_empty());
        assert!(!s.is_closing(), "not before the answer is written");
        assert_eq!(s.transmit(), [0x88, 2, 0x03, 0xE8]);
        s.transmitted(4);
        assert_eq!(s.close_reason(), Some(&CloseReason::PeerClosed));
        // A server close sends its code.
        let mut s = http_session(false);
        feed(&mut s, 1, UPGRADE).unwrap();
        drain(&mut s);
        s.close(CloseReason::Shutdown);
        assert_eq!(&drain(&mut s)[..4], [0x88, 17, 0x03, 0xE9]);
    }

    #[test]
    fn pings_on_the_interval_and_pongs_to_pings() {
        let mut s = http_session(false);
        feed(&mut s, 0, UPGRADE).unwrap();
        drain(&mut s);
        assert_eq!(s.poll_timeout(), Some(MonoTime(30 * MS)));
        s.handle_timeout(MonoTime(30 * MS));
        assert_eq!(drain(&mut s), [0x89, 0]);
        assert_eq!(s.poll_timeout(), Some(MonoTime(60 * MS)));
        feed(&mut s, 40 * MS, &ws_frame(9, b"hi")).unwrap();
        assert_eq!(drain(&mut s), [0x8A, 2, b'h', b'i']);
        // The idle deadline still rules: no input for idle_timeout closes with Going Away.
        s.handle_timeout(MonoTime(1040 * MS));
        assert_eq!(s.close_reason(), Some(&CloseReason::IdleTimeout));
        assert_eq!(&drain(&mut s)[..4], [0x88, 14, 0x03, 0xE9]);
    }

    #[test]
    fn echo_path_echoes_text_and_binary() {
        let mut s = http_session(true);
        feed(
            &mut s,
            1,
            &String::from_utf8(UPGRADE.to_vec())
                .unwrap()
                .replace("/ws", "/echo")
                .into_bytes(),
        )
        .unwrap();
        assert_eq!(s.transport(), Transport::WebSocketEcho);
        drain(&mut s);
        assert!(feed(
            &mut s,
            2,
            &[ws_frame(1, "héllo".as_bytes()), ws_frame(2, b"\x00\x01")].concat()
        )
        .unwrap()
        .is_empty());
        let mut want = vec![0x81, 6];
        want.extend("héllo".as_bytes());
        want.extend([0x82, 2, 0, 1]);
        assert_eq!(drain(&mut s), want);
        assert_eq!(s.send(&encode(5, 0, 0, b"")), Err(SendError::NoChannel));
    }

    #[test]
    fn http_requests_responses_and_rpc_replies() {
        let mut s = http_session(false);
        let got = feed(&mut s, 1, b"GET /healthz HTTP/1.1\r\n\r\nPOST /rpc/Ping HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
        assert_eq!(got, ["GET /healthz"]);
        assert!(!s.wants_input());
        assert_eq!(
            s.send(&encode(5, 0, 3, b"")),
            Err(SendError::NoChannel),
            "no reply awaited"
        );
        s.respond(&Response::text(200, "ok\n")).unwrap();
        assert_eq!(
            s.respond(&Response::text(200, "twice")),
            Err(SendError::NoChannel)
        );
        assert!(s.has_pending_input());
        let got = feed(&mut s, 2, &[]).unwrap();
        assert_eq!(got, ["POST /rpc/Ping"]);
        assert!(s.expect_reply(77, 1, MonoTime(500 * MS)));
        assert!(!s.expect_reply(78, 1, MonoTime(500 * MS)), "one at a time");
        assert_eq!(
            s.send(&encode(13, 0, 0, b"push")),
            Err(SendError::NoChannel)
        );
        s.send(&encode(5, 0, 77, b"p")).unwrap();
        assert!(s.has_rpc_reply());
        let reply = s.take_rpc_reply().unwrap();
        assert_eq!((reply.request_id, reply.tag), (77, 1));
        assert_eq!(reply.frame, encode(5, 0, 77, b"p"));
        s.respond(&Response::text(200, "pong")).unwrap();
        assert!(!s.is_closing(), "Connection: close waits for the write");
        let out = String::from_utf8(drain(&mut s)).unwrap();
        assert!(out.ends_with("Connection: close\r\n\r\npong"), "{out}");
        assert_eq!(s.close_reason(), Some(&CloseReason::PeerClosed));
    }

    #[test]
    fn rpc_without_a_reply_gets_504_and_slow_heads_408() {
        let mut s = http_session(false);
        feed(
            &mut s,
            1,
            b"POST /rpc/Ping HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap();
        s.expect_reply(1, 0, MonoTime(50 * MS));
        assert_eq!(s.poll_timeout(), Some(MonoTime(50 * MS)));
        s.handle_timeout(MonoTime(50 * MS));
        assert!(String::from_utf8(drain(&mut s))
            .unwrap()
            .starts_with("HTTP/1.1 504 "));
        assert!(!s.is_closing(), "keep-alive goes on");

        let mut s = http_session(false);
        feed(&mut s, 10 * MS, b"GET / HT").unwrap();
        assert_eq!(
            s.poll_timeout(),
            Some(MonoTime(100 * MS)),
            "head deadline from the open"
        );
        s.handle_timeout(MonoTime(100 * MS));
        assert!(String::from_utf8(drain(&mut s))
            .unwrap()
            .starts_with("HTTP/1.1 408 "));
        assert!(
            matches!(s.close_reason(), Some(CloseReason::Protocol(m)) if m.contains("not complete"))
        );
    }

    #[test]
    fn refused_upgrades_answer_and_close() {
        let mut s = http_session(false);
        feed(&mut s, 1, b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let out = String::from_utf8(drain(&mut s)).unwrap();
        assert!(
            out.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
            "{out}"
        );
        assert!(matches!(s.close_reason(), Some(CloseReason::Protocol(m)) if m.contains("426")));
        let mut s = http_session(false);
        let e = feed(&mut s, 1, b"BAD\r\n\r\n").unwrap_err();
        assert!(matches!(e, CloseReason::Protocol(m) if m.contains("http: malformed")));
        assert!(drain(&mut s).starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
    }
}

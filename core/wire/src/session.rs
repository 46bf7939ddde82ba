//! The session state machine: one client session's protocol state, with no socket and no clock.
//!
//! In the shape of quinn-proto's `Connection`: the runtime feeds it bytes and the time
//! ([`Session::receive`]), queues frames for the peer ([`Session::send`]), takes bytes to write
//! ([`Session::transmit`] / [`Session::transmitted`]), asks when it next needs the time
//! ([`Session::poll_timeout`]) and fires that deadline ([`Session::handle_timeout`]). Everything a
//! session is lives here: the frame decoder, the bounded outbound queue, the idle deadline, the
//! handshake (Hello) state, the close reason, the rate limits, and resume:
//!
//! - **Bindings.** A session is served by at most one socket at a time, its *binding*. Every call
//!   that comes from a socket names the [`Binding`] it was given; a call from an older binding (a
//!   socket replaced by a resume, or dropped at the idle timeout) is ignored, so a stale socket's
//!   late reads, writes and close never touch the session.
//! - **Sequencing** (once [`Session::enable_resume`] was called, after the peer asked for it in
//!   `Hello`): every frame either way carries the 8-byte extension (`seq`, `ack`) of
//!   [`crate::frame::FLAG_SEQ`]. Frames the session sends are numbered 1, 2, … and kept until the
//!   peer acknowledges them (bounded by `replay_max_frames` / `replay_max_bytes`: the oldest
//!   written frames are evicted, counted); frames the peer sends must be numbered consecutively,
//!   and one already received (a resend after a resume) is reported as a duplicate and never
//!   handed to the application twice. Acknowledgements ride on every outgoing frame; when nothing
//!   goes out, an `Ack` frame leaves after `ack_delay`.
//! - **Detach and resume.** When the socket of a resumable session ends (peer closed, socket
//!   error, idle timeout), the session *detaches* instead of closing: it keeps its state and its
//!   replay buffer for `resume_window`, frames queued meanwhile go to the replay buffer, and only
//!   when the window passes does it close ([`CloseReason::ResumeExpired`], naming why the socket
//!   was lost). [`Session::resume`] checks the token, fences the old binding, rotates the token,
//!   writes the answer (`Resumed`) and replays from the first frame the peer did not receive — or,
//!   when that frame was evicted, drops the replay buffer and reports `resync`.
//!
//! Sequence numbers are 64-bit counters inside; the wire carries their low 32 bits, expanded
//! against the nearest expected value ([`expand_seq`]), which is unambiguous because the replay
//! buffer holds far fewer than 2³¹ frames.
//!
//! What it never does: read a clock, touch a socket, decode a protobuf body or log.

mod out;

use std::time::Duration;

use crate::frame::{
    encode_seq_into, Decoder, FrameBuf, FrameHeader, EXT_LEN, FLAG_SEQ, HEADER_LEN,
};
use crate::rate::{Limited, RateState, SessionRates};
use crate::session_id::{CloseReason, SessionId};
use crate::time::MonoTime;
use out::OutQueue;

/// The opcode of `Hello`, the first frame of a new session (fixed by the protocol).
pub const HELLO_OPCODE: u16 = 1;
/// The opcode of `Resume`, the first frame of a socket that resumes a session.
pub const RESUME_OPCODE: u16 = 30;
/// The opcode of `Resumed`, the answer to an accepted `Resume`.
pub const RESUMED_OPCODE: u16 = 31;
/// The opcode of `Ack`: an empty frame that carries only the extension's `ack`, never sequenced.
pub const ACK_OPCODE: u16 = 32;
/// Bytes of a resume token.
pub const TOKEN_LEN: usize = 16;

/// Resume settings (`[session]`). Cheap to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumeLimits {
    /// How long a detached session waits for a `Resume` before it closes.
    pub window: Duration,
    /// Most sequenced frames kept for replay (written and not acknowledged).
    pub max_frames: usize,
    /// Most bytes kept for replay.
    pub max_bytes: usize,
    /// How long an acknowledgement may wait for an outgoing frame to ride on before an `Ack`
    /// frame carries it.
    pub ack_delay: Duration,
}

/// A session's limits (from `[net]`, `[session]` and `[limits]`). Cheap to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Largest frame accepted from the peer, header included.
    pub max_frame: u32,
    /// Bytes the outbound queue holds before the session is closed for not reading. A frame is
    /// always accepted into an empty queue, so one frame of up to `max_frame` bytes always fits.
    /// Frames replayed to a new socket do not count (the replay limits bound them).
    pub send_buffer_limit: usize,
    /// Close (or, resumable, detach) the session when the peer sends nothing for this long;
    /// `None` = never.
    pub idle_timeout: Option<Duration>,
    /// Resume bounds; used once resume is enabled.
    pub resume: ResumeLimits,
    /// Rate limits on what the peer sends.
    pub rates: SessionRates,
}

impl SessionLimits {
    /// Limits with resume bounds of 30 s, 1024 frames, 1 MiB, a 200 ms ack delay and no rate
    /// limit (for tests and tools; the server takes them from its configuration).
    pub fn basic(max_frame: u32, send_buffer_limit: usize, idle_timeout: Option<Duration>) -> Self {
        SessionLimits {
            max_frame,
            send_buffer_limit,
            idle_timeout,
            resume: ResumeLimits {
                window: Duration::from_secs(30),
                max_frames: 1024,
                max_bytes: 1 << 20,
                ack_delay: Duration::from_millis(200),
            },
            rates: SessionRates::UNLIMITED,
        }
    }
}

/// Where the session is in its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    /// No accepted `Hello` yet: the only frames the gate lets through are `Hello` and `Resume`.
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

/// What [`Session::send`] did with an accepted frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sent {
    /// Written, unacknowledged frames evicted from the replay buffer to make room (a peer that
    /// resumes before acknowledging them will be told to resynchronise).
    pub evicted: usize,
}

/// Identifies the socket that serves a session; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Binding(u32);

impl Binding {
    /// The generation number (grows by one at every rebind and detach, wrapping).
    pub fn generation(self) -> u32 {
        self.0
    }
}

/// What [`Session::receive`] took from the input.
#[derive(Debug)]
pub enum Input<'a> {
    /// A frame for the application.
    Frame(FrameBuf<'a>),
    /// A frame over a rate limit: not for the application; answer it with `Error{RATE_LIMITED}`
    /// (its request id and opcode are in the header). When the third field is true the limit's
    /// policy closes the session: answer, then close it with [`CloseReason::RateLimited`].
    RateLimited(FrameHeader, Limited, bool),
    /// A sequenced frame received before (a resend after a resume): dropped.
    Duplicate(FrameHeader),
    /// An `Ack` frame: its acknowledgement was applied.
    Ack,
}

/// What became of a session when its socket ended ([`Session::peer_closed`],
/// [`Session::socket_failed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketEnd {
    /// The socket was not the session's binding any more: nothing changed.
    Stale,
    /// The session is resumable: it waits for a `Resume` until the window passes.
    Detached,
    /// The session is closing with this reason; the caller removes it.
    Closed(CloseReason),
}

/// An accepted [`Session::resume`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resumption {
    /// The new socket's binding.
    pub binding: Binding,
    /// The first frame the peer lacks was evicted: the replay buffer was dropped and the peer
    /// must resynchronise its state; the next frame it gets is `sent + 1`.
    pub resync: bool,
    /// The `seq` of the last frame received from the peer (it resends what follows).
    pub received: u32,
    /// The `seq` of the last frame the session sent before this resume.
    pub sent: u32,
    /// Frames that will be replayed (0 with `resync`).
    pub replayed: usize,
}

/// Why [`Session::resume`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    /// The session is closing.
    #[error("session is closed")]
    Closed,
    /// The session never enabled resume.
    #[error("session is not resumable")]
    NotResumable,
    /// The token does not match.
    #[error("bad resume token")]
    BadToken,
    /// The peer claims a frame that was never sent.
    #[error("last_received_seq is ahead of what was sent")]
    BadSeq,
    /// A newer attempt was accepted already: this one arrived late.
    #[error("attempt {got} is not above the last accepted ({last})")]
    StaleAttempt {
        /// The attempt number given.
        got: u32,
        /// The last one accepted.
        last: u32,
    },
}

/// Expands a 32-bit wire sequence number to the 64-bit counter value congruent to it (mod 2³²)
/// that is nearest to `reference`. Values "before 0" come out as 0 (never a valid sequence
/// number of a frame, so the caller refuses them).
pub fn expand_seq(wire: u32, reference: u64) -> u64 {
    let diff = i64::from(wire.wrapping_sub(reference as u32) as i32);
    (reference as i64).saturating_add(diff).max(0) as u64
}

/// The resume state of a session that enabled it (boxed: sessions without resume stay small).
#[derive(Debug)]
struct Resume {
    token: [u8; TOKEN_LEN],
    /// The token the peer resumed with last, still accepted until the peer sends a frame on the
    /// new socket: the `Resumed` that carried the new token may have been lost with that socket.
    fallback: Option<[u8; TOKEN_LEN]>,
    /// Sequence number of the next frame sent (the first is 1).
    next_seq: u64,
    /// Highest sequence number the peer acknowledged.
    acked: u64,
    /// Highest sequence number received from the peer.
    received: u64,
    /// The `attempt` of the last accepted resume (0 before any).
    attempt: u32,
    /// When an `Ack` frame must leave (a frame was received and no outgoing frame carried it).
    ack_due: Option<MonoTime>,
}

/// One session's protocol state. See the module documentation.
///
/// Memory at rest: about 200 bytes plus the unsent output, an incomplete input frame and, with
/// resume, a boxed 56-byte state and the replay buffer; buffers are released when drained, so an
/// idle session without unacknowledged frames holds no buffer.
#[derive(Debug)]
pub struct Session {
    id: SessionId,
    limits: SessionLimits,
    decoder: Decoder,
    out: OutQueue,
    /// Absolute queue offset where the current socket was bound: the send limit counts unsent
    /// bytes after it (what is replayed before it is bounded by the replay limits).
    bound_at: u64,
    last_seen: MonoTime,
    handshake: Handshake,
    closing: Option<CloseReason>,
    binding: Binding,
    /// Without a socket since (time, why).
    detached: Option<(MonoTime, CloseReason)>,
    resume: Option<Box<Resume>>,
    rate: RateState,
}

impl Session {
    /// A new session, opened at `now`, served by the socket of [`Session::binding`].
    pub fn new(id: SessionId, limits: SessionLimits, now: MonoTime) -> Session {
        Session {
            id,
            limits,
            decoder: Decoder::new(limits.max_frame),
            out: OutQueue::default(),
            bound_at: 0,
            last_seen: now,
            handshake: Handshake::AwaitingHello,
            closing: None,
            binding: Binding(0),
            detached: None,
            resume: None,
            rate: RateState::default(),
        }
    }

    /// The session id.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The limits the session runs with.
    pub fn limits(&self) -> SessionLimits {
        self.limits
    }

    /// Replaces the rate limits (a live reload). The limiter state is kept.
    pub fn set_rates(&mut self, rates: SessionRates) {
        self.limits.rates = rates;
    }

    // ---- bindings ----

    /// The current binding (meaningful while [`Session::is_attached`]).
    pub fn binding(&self) -> Binding {
        self.binding
    }

    /// True while a socket serves the session.
    pub fn is_attached(&self) -> bool {
        self.detached.is_none()
    }

    /// True when `b` is the binding of the socket serving the session now.
    pub fn is_current(&self, b: Binding) -> bool {
        self.detached.is_none() && b == self.binding
    }

    /// Since when, and why, the session has had no socket.
    pub fn detached(&self) -> Option<&(MonoTime, CloseReason)> {
        self.detached.as_ref()
    }

    // ---- input ----

    /// Takes the next item from `input` (bytes the socket of binding `b` read at `now`), advancing
    /// `input` past it. Call repeatedly until it returns `Ok(None)`: then `input` is empty and an
    /// incomplete trailing frame is kept for the next call. A frame never borrows the session.
    ///
    /// Returns `Ok(None)` at once, ignoring `input`, once the session is closing or when `b` is
    /// not the current binding (a stale socket's late read).
    ///
    /// Fails when the bytes break the framing or sequencing rules (a frame without the extension
    /// on a resumable session or with it on another, an acknowledgement of a frame never sent, a
    /// gap in the peer's sequence numbers); the session is then closing with
    /// [`CloseReason::Protocol`] and the error is that reason.
    ///
    /// Every frame is charged to the rate limits (`len` bytes, one message); a frame for the
    /// application over a limit comes out as [`Input::RateLimited`].
    pub fn receive<'a>(
        &mut self,
        b: Binding,
        now: MonoTime,
        input: &mut &'a [u8],
    ) -> Result<Option<Input<'a>>, CloseReason> {
        if self.closing.is_some() || !self.is_current(b) {
            *input = &[];
            return Ok(None);
        }
        if !input.is_empty() {
            self.last_seen = now;
        }
        let frame = match self.decoder.next(input) {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(None),
            Err(e) => return Err(self.protocol_error(e.to_string())),
        };
        let h = frame.frame().header;
        let limited = self.rate.check(&self.limits.rates, now, h.length as usize);
        if let Some(r) = self.resume.as_deref_mut() {
            if !h.sequenced() {
                return Err(self.protocol_error(format!(
                    "frame (opcode {}) without SEQ on a resumable session",
                    h.opcode
                )));
            }
            let sent = r.next_seq - 1;
            let ack = expand_seq(h.ack, sent);
            if ack > sent {
                return Err(self.protocol_error(format!(
                    "ack {} of a frame never sent (last sent {})",
                    h.ack, sent as u32
                )));
            }
            if ack > r.acked {
                r.acked = ack;
                self.out.trim(ack);
            }
            // A frame on this socket: the peer read the `Resumed` and holds the new token.
            r.fallback = None;
            if h.opcode == ACK_OPCODE {
                return Ok(Some(Input::Ack));
            }
            let expected = r.received + 1;
            let seq = expand_seq(h.seq, expected);
            if seq < expected {
                return Ok(Some(Input::Duplicate(h)));
            }
            if seq > expected {
                return Err(self.protocol_error(format!(
                    "sequence gap: got seq {}, expected {}",
                    h.seq, expected as u32
                )));
            }
            r.received = seq;
            if r.ack_due.is_none() {
                r.ack_due = Some(now.saturating_add(self.limits.resume.ack_delay));
            }
        } else if h.sequenced() {
            return Err(self.protocol_error(format!(
                "SEQ flag on a session without resume (opcode {})",
                h.opcode
            )));
        }
        match limited {
            Ok(()) => Ok(Some(Input::Frame(frame))),
            Err((which, close)) => Ok(Some(Input::RateLimited(h, which, close))),
        }
    }

    fn protocol_error(&mut self, why: String) -> CloseReason {
        let reason = CloseReason::Protocol(why);
        self.close(reason.clone());
        reason
    }

    /// The peer closed the socket of binding `b`: a clean end, or one in the middle of a frame.
    /// A resumable session detaches (both are how a network cut looks); another closes with
    /// [`CloseReason::PeerClosed`] or, mid-frame, [`CloseReason::Protocol`].
    pub fn peer_closed(&mut self, b: Binding, now: MonoTime) -> SocketEnd {
        if !self.is_current(b) && self.closing.is_none() {
            return SocketEnd::Stale;
        }
        let reason = match self.decoder.finish() {
            Ok(()) => CloseReason::PeerClosed,
            Err(e) => CloseReason::Protocol(e.to_string()),
        };
        self.socket_ended(b, now, reason)
    }

    /// The socket of binding `b` failed (`why` is the error's text): detach a resumable session,
    /// close another with [`CloseReason::Io`].
    pub fn socket_failed(&mut self, b: Binding, now: MonoTime, why: String) -> SocketEnd {
        self.socket_ended(b, now, CloseReason::Io(why))
    }

    fn socket_ended(&mut self, b: Binding, now: MonoTime, reason: CloseReason) -> SocketEnd {
        if let Some(r) = &self.closing {
            return if b == self.binding {
                SocketEnd::Closed(r.clone())
            } else {
                SocketEnd::Stale
            };
        }
        if !self.is_current(b) {
            return SocketEnd::Stale;
        }
        if self.resume.is_some() {
            self.detach(now, reason);
            SocketEnd::Detached
        } else {
            self.close(reason.clone());
            SocketEnd::Closed(reason)
        }
    }

    /// No socket any more: fence the binding, keep everything queued for a replay.
    fn detach(&mut self, now: MonoTime, reason: CloseReason) {
        self.binding = Binding(self.binding.0.wrapping_add(1));
        self.detached = Some((now, reason));
        self.decoder = Decoder::new(self.limits.max_frame);
        self.out.write_off();
        if let Some(r) = self.resume.as_deref_mut() {
            r.ack_due = None;
        }
        let max = self.limits.resume;
        self.out.evict(max.max_frames, max.max_bytes);
    }

    /// Bytes of an incomplete input frame held for the next [`Session::receive`]. Always fewer
    /// than `max(max_frame, 20)`.
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

    // ---- resume ----

    /// Turns sequencing and resume on, with `token` as the first resume token. Frames queued
    /// before (the `Welcome` that carries the token) go out without the extension; every frame
    /// queued after carries it, and every frame the peer sends from now on must. Called once;
    /// later calls change nothing.
    pub fn enable_resume(&mut self, token: [u8; TOKEN_LEN]) {
        if self.resume.is_some() {
            return;
        }
        self.out.track();
        self.resume = Some(Box::new(Resume {
            token,
            fallback: None,
            next_seq: 1,
            acked: 0,
            received: 0,
            attempt: 0,
            ack_due: None,
        }));
    }

    /// True once resume is enabled.
    pub fn is_resumable(&self) -> bool {
        self.resume.is_some()
    }

    /// The current resume token.
    pub fn token(&self) -> Option<&[u8; TOKEN_LEN]> {
        self.resume.as_ref().map(|r| &r.token)
    }

    /// Sequence numbers: (last sent, last acknowledged by the peer, last received), if resumable.
    pub fn seqs(&self) -> Option<(u64, u64, u64)> {
        self.resume
            .as_ref()
            .map(|r| (r.next_seq - 1, r.acked, r.received))
    }

    /// Sequenced frames and bytes kept for replay.
    pub fn replay_held(&self) -> (usize, usize) {
        (self.out.retained_frames(), self.out.retained_bytes())
    }

    /// A new socket presents `token`, the `seq` of the last frame it received (`last_received`, as
    /// on the wire) and its `attempt` number (raised by the peer at every resume of the session,
    /// so an older attempt that reaches the server late cannot take the session back). On success the old binding (if any) is fenced, the
    /// token becomes `new_token`, the input decoder starts afresh, `answer` writes the frame that
    /// goes out first on the new socket (`Resumed`, built from the [`Resumption`]), and the frames
    /// the peer lacks follow it — or, when one of them was evicted, none do and the resumption says
    /// `resync`. The idle deadline restarts at `now`.
    ///
    /// The token is accepted when it is the current one or, until the peer sends its first frame
    /// on the socket of the last resume, the one that resume used (its `Resumed` may have been
    /// lost with that socket). Refused (nothing changes) when the session is closing, not
    /// resumable, the token is neither (compared in constant time), `last_received` is ahead of
    /// what was sent or `attempt` is not above the last accepted one.
    #[allow(clippy::too_many_arguments)]
    pub fn resume(
        &mut self,
        now: MonoTime,
        token: &[u8],
        last_received: u32,
        attempt: u32,
        new_token: [u8; TOKEN_LEN],
        answer: impl FnOnce(&Resumption, &mut Vec<u8>),
    ) -> Result<Resumption, ResumeError> {
        if self.closing.is_some() {
            return Err(ResumeError::Closed);
        }
        let r = self
            .resume
            .as_deref_mut()
            .ok_or(ResumeError::NotResumable)?;
        // Both compared, always: which one matched must not show in the time taken.
        let current = tokens_equal(token, &r.token);
        let fallback = r.fallback.is_some_and(|f| tokens_equal(token, &f));
        if !current && !fallback {
            return Err(ResumeError::BadToken);
        }
        let sent = r.next_seq - 1;
        let last = expand_seq(last_received, sent);
        if last > sent {
            return Err(ResumeError::BadSeq);
        }
        if attempt <= r.attempt {
            return Err(ResumeError::StaleAttempt {
                got: attempt,
                last: r.attempt,
            });
        }
        r.attempt = attempt;
        let first_kept = self.out.oldest_seq().unwrap_or(sent + 1);
        let resync = last + 1 < first_kept;
        r.acked = r.acked.max(last);
        if current {
            // Until the peer shows it got `new_token`, the token it just used still works.
            r.fallback = Some(r.token);
        }
        r.token = new_token;
        r.ack_due = None;
        let received = r.received;
        if resync {
            self.out.drop_all();
        } else {
            self.out.trim(r.acked);
        }
        self.binding = Binding(self.binding.0.wrapping_add(1));
        self.detached = None;
        self.last_seen = now;
        self.decoder = Decoder::new(self.limits.max_frame);
        let res = Resumption {
            binding: self.binding,
            resync,
            received: received as u32,
            sent: sent as u32,
            replayed: if resync {
                0
            } else {
                self.out.retained_frames()
            },
        };
        let mut first = Vec::new();
        answer(&res, &mut first);
        self.out.rebind(first);
        self.bound_at = self.out.tail();
        Ok(res)
    }

    // ---- output ----

    /// Queues one encoded frame (12-byte header, no extension) for the peer.
    ///
    /// Refused when the session is closing, or when the queue is not empty and would pass
    /// `send_buffer_limit` (the session is then closing with
    /// [`CloseReason::SendBufferOverflow`]). A frame is always accepted into an empty queue. On a
    /// resumable session the frame gets the next sequence number and the extension (8 bytes; the
    /// caller keeps frames `EXT_LEN` below `max_frame`), and is kept for replay; while detached it
    /// goes straight to the replay buffer.
    ///
    /// Cost: one copy of `frame` into the queue (plus a move of its body past the extension).
    pub fn send(&mut self, frame: &[u8]) -> Result<Sent, SendError> {
        self.send_with(frame.len(), |out| out.extend_from_slice(frame))
    }

    /// Queues a frame of exactly `len` bytes (12-byte header, no extension) written by `write`
    /// straight into the queue (no intermediate buffer). Same rules as [`Session::send`]; `write`
    /// is not called when refused.
    pub fn send_with(
        &mut self,
        len: usize,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Result<Sent, SendError> {
        if self.closing.is_some() {
            return Err(SendError::Closing);
        }
        let queued = self.out.unsent_since(self.bound_at);
        let wire_len = len + if self.resume.is_some() { EXT_LEN } else { 0 };
        if self.detached.is_none()
            && queued > 0
            && queued + wire_len > self.limits.send_buffer_limit
        {
            self.close(CloseReason::SendBufferOverflow);
            return Err(SendError::Overflow);
        }
        let Some(r) = self.resume.as_deref_mut() else {
            self.out.push_with(len, 0, write);
            return Ok(Sent::default());
        };
        let seq = r.next_seq;
        r.next_seq += 1;
        r.ack_due = None;
        let ack = r.received as u32;
        self.out.push_with(len + EXT_LEN, seq, |v| {
            let at = v.len();
            write(v);
            debug_assert_eq!(v.len() - at, len, "send_with wrote a different length");
            add_extension(v, at, seq as u32, ack);
        });
        if self.detached.is_some() {
            self.out.write_off();
        }
        let max = self.limits.resume;
        let (evicted, _) = self.out.evict(max.max_frames, max.max_bytes);
        Ok(Sent { evicted })
    }

    /// Bytes waiting for the socket of binding `b` (empty for a stale binding).
    pub fn transmit(&self, b: Binding) -> &[u8] {
        if self.is_current(b) {
            self.out.transmit()
        } else {
            &[]
        }
    }

    /// The socket of binding `b` took `n` bytes of [`Session::transmit`] (ignored for a stale
    /// binding).
    pub fn transmitted(&mut self, b: Binding, n: usize) {
        if self.is_current(b) {
            self.out.transmitted(n);
        }
    }

    /// Bytes queued and not yet written.
    pub fn unsent(&self) -> usize {
        self.out.unsent()
    }

    // ---- time ----

    /// The next time the runtime must call [`Session::handle_timeout`], if any: the end of the
    /// resume window while detached; otherwise the idle deadline or, earlier, an acknowledgement
    /// due.
    pub fn poll_timeout(&self) -> Option<MonoTime> {
        if self.closing.is_some() {
            return None;
        }
        if let Some((at, _)) = &self.detached {
            return Some(at.saturating_add(self.limits.resume.window));
        }
        let idle = self
            .limits
            .idle_timeout
            .map(|t| self.last_seen.saturating_add(t));
        let ack = self.resume.as_ref().and_then(|r| r.ack_due);
        match (idle, ack) {
            (Some(i), Some(a)) => Some(i.min(a)),
            (i, a) => i.or(a),
        }
    }

    /// Fires what is due at `now`: a detached session whose window passed closes
    /// ([`CloseReason::ResumeExpired`]); a session idle for `idle_timeout` detaches (resumable) or
    /// closes ([`CloseReason::IdleTimeout`]); an acknowledgement due goes out in an `Ack` frame.
    /// Early or repeated calls are harmless.
    pub fn handle_timeout(&mut self, now: MonoTime) {
        // Each deadline fires exactly when `now` reaches what `poll_timeout` reports. (Measuring
        // the idle time instead disagreed with it at the edges: see the fuzz target `session`.)
        if self.closing.is_some() {
            return;
        }
        if let Some((at, why)) = &self.detached {
            if now >= at.saturating_add(self.limits.resume.window) {
                let reason = CloseReason::ResumeExpired(why.to_string());
                self.close(reason);
            }
            return;
        }
        if let Some(t) = self.limits.idle_timeout {
            if now >= self.last_seen.saturating_add(t) {
                if self.resume.is_some() {
                    self.detach(now, CloseReason::IdleTimeout);
                } else {
                    self.close(CloseReason::IdleTimeout);
                }
                return;
            }
        }
        let Some(r) = self.resume.as_deref_mut() else {
            return;
        };
        if r.ack_due.is_some_and(|d| now >= d) {
            r.ack_due = None;
            let ack = r.received as u32;
            self.out.push_with(HEADER_LEN + EXT_LEN, 0, |v| {
                encode_seq_into(v, ACK_OPCODE, 0, 0, 0, ack, &[]);
            });
        }
    }

    // ---- close ----

    /// Starts closing with `reason` (the first reason wins). Queued output may still be written.
    pub fn close(&mut self, reason: CloseReason) {
        if self.closing.is_none() {
            self.closing = Some(reason);
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

/// Inserts the 8-byte extension into the plain frame that starts at `at` in `v`: the body moves
/// up, `length` grows by 8, the `SEQ` flag is set.
fn add_extension(v: &mut Vec<u8>, at: usize, seq: u32, ack: u32) {
    let end = v.len();
    debug_assert!(end - at >= HEADER_LEN, "a frame has a header");
    v.resize(end + EXT_LEN, 0);
    v.copy_within(at + HEADER_LEN..end, at + HEADER_LEN + EXT_LEN);
    v[at + HEADER_LEN..at + HEADER_LEN + 4].copy_from_slice(&seq.to_le_bytes());
    v[at + HEADER_LEN + 4..at + HEADER_LEN + 8].copy_from_slice(&ack.to_le_bytes());
    let length = u32::from_le_bytes([v[at], v[at + 1], v[at + 2], v[at + 3]]) + EXT_LEN as u32;
    v[at..at + 4].copy_from_slice(&length.to_le_bytes());
    let flags = u16::from_le_bytes([v[at + 6], v[at + 7]]);
    debug_assert_eq!(flags & FLAG_SEQ, 0, "the caller writes plain frames");
    v[at + 6..at + 8].copy_from_slice(&(flags | FLAG_SEQ).to_le_bytes());
}

/// Compares two tokens in time independent of where they differ.
fn tokens_equal(a: &[u8], b: &[u8; TOKEN_LEN]) -> bool {
    if a.len() != TOKEN_LEN {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    // A data dependency the optimiser cannot turn into an early exit.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests;

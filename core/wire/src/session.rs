//! The session state machine: one client connection's protocol state, with no socket and no clock.
//!
//! In the shape of quinn-proto's `Connection`: the runtime feeds it bytes and the time
//! ([`Session::receive`]), queues frames for the peer ([`Session::send`]), takes bytes to write
//! ([`Session::transmit`] / [`Session::transmitted`]), asks when it next needs the time
//! ([`Session::poll_timeout`]) and fires that deadline ([`Session::handle_timeout`]). Everything a
//! session is lives here: the frame decoder, the bounded outbound queue, the idle deadline, the
//! handshake (Hello) state, the close reason, the rate limits, and resume. The byte-transport
//! layers under the frames (binary, HTTP/1.1, WebSocket: [`crate::stack`]) are the session's too,
//! so a test or a simulation can drive thousands of sessions with no network and a fake clock. TLS
//! (feature `tls`, [`crate::tls::TlsLayer`], attached with [`Session::with_tls`]) sits under them:
//! the runtime decrypts with [`Session::receive_tls`] into a buffer it owns, then takes input out
//! of the plaintext; [`Session::transmit`] encrypts what is queued.
//!
//! Input: [`Session::receive_event`] gives [`Input`]s — frames, and HTTP requests the application
//! answers with [`Session::respond`]. [`Session::receive`] is the frames-only form for binary
//! sessions.
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
//! Resume is offered on binary and WebSocket sessions without TLS ([`Session::supports_resume`]).
//! The socket that presents a `Resume` gives its transport layer to the session it resumes
//! ([`Session::resume_from`]); the session's queued frames (the replay buffer) are framed for the
//! transport it was opened on, so only a socket of that transport can resume it. A TLS
//! connection's state is not carried, so the gate refuses a `Resume` over TLS and grants no resume
//! in `Welcome` there.
//!
//! What it never does: read a clock, touch a socket, decode a protobuf body or log.

mod out;

use std::sync::Arc;
use std::time::Duration;

use crate::frame::{
    encode_seq_into, starts_tls_client_hello, Decoder, FrameBuf, FrameError, FrameHeader, EXT_LEN,
    FLAG_SEQ, HEADER_LEN,
};
use crate::http::{Request, Response};
use crate::rate::{Limited, RateState, SessionRates};
use crate::session_id::{CloseReason, SessionId};
use crate::stack::{next_frame, Event, Layer, RpcReply, SessionType, StackConfig, Step, Transport};
use crate::time::MonoTime;
use crate::ws::conn::WsConn;
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
    /// `send_buffer_limit` of internal sessions (node links: one carries the traffic of a whole
    /// gate, a room's broadcast to its clients included).
    pub internal_send_buffer_limit: usize,
    /// Close (or, resumable, detach) the session when the peer sends nothing for this long;
    /// `None` = never.
    pub idle_timeout: Option<Duration>,
    /// Close a session whose peer has not had a `Hello` (or `Resume`) accepted this long after the
    /// session opened (frames and WebSocket sessions; not HTTP requests, not the WebSocket echo
    /// endpoint); `None` = never. Unlike the idle timeout, nothing the peer sends extends it.
    pub hello_timeout: Option<Duration>,
    /// Resume bounds; used once resume is enabled.
    pub resume: ResumeLimits,
    /// Rate limits on what the peer sends.
    pub rates: SessionRates,
}

impl SessionLimits {
    /// Limits with resume bounds of 30 s, 1024 frames, 1 MiB, a 200 ms ack delay and no rate
    /// limit (for tests and tools; the server takes them from its configuration).
    pub const fn basic(
        max_frame: u32,
        send_buffer_limit: usize,
        idle_timeout: Option<Duration>,
    ) -> Self {
        SessionLimits {
            max_frame,
            send_buffer_limit,
            internal_send_buffer_limit: send_buffer_limit,
            idle_timeout,
            hello_timeout: None,
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
    /// The session's transport cannot carry this frame (an HTTP connection not waiting for a
    /// reply with this request id, or the WebSocket echo endpoint); the frame was dropped.
    #[error("no channel for frames on this transport")]
    NoChannel,
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

/// What [`Session::receive`] and [`Session::receive_event`] took from the input.
#[derive(Debug)]
pub enum Input<'a> {
    /// A frame for the application.
    Frame(FrameBuf<'a>),
    /// An HTTP request to answer with [`Session::respond`] (HTTP sessions only).
    Request(Request),
    /// A frame over a rate limit: not for the application; answer it with `Error{RATE_LIMITED}`
    /// (its request id and opcode are in the header). When the third field is true the limit's
    /// policy closes the session: answer, then close it with [`CloseReason::RateLimited`].
    RateLimited(FrameHeader, Limited, bool),
    /// A sequenced frame received before (a resend after a resume): dropped. The limit it passed,
    /// if it was over one (count it; nothing is answered).
    Duplicate(FrameHeader, Option<Limited>),
    /// An `Ack` frame: its acknowledgement was applied. The limit it passed, if it was over one
    /// (count it; nothing is answered).
    Ack(Option<Limited>),
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
    #[error("attempt {got} is not above the last accepted ({}){}", last, if *last == 0 { ": attempts start at 1" } else { "" })]
    StaleAttempt {
        /// The attempt number given.
        got: u32,
        /// The last one accepted.
        last: u32,
    },
    /// The socket's transport is not the one the session was opened on (a binary session
    /// resumed over WebSocket or the other way round), or it runs over TLS.
    #[error("a {session} session cannot be resumed over a {socket} connection")]
    Transport {
        /// The session's transport.
        session: &'static str,
        /// The resuming socket's.
        socket: &'static str,
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
    /// The session's transport carries frames in WebSocket binary messages: every frame it
    /// queues (kept for replay too) is written behind its message header, and only a WebSocket
    /// socket can resume it.
    ws: bool,
}

impl Resume {
    /// The transport this session's frames are framed for (and that a resume must arrive on).
    fn transport(&self) -> Transport {
        if self.ws {
            Transport::WebSocket
        } else {
            Transport::Binary
        }
    }
}

/// A socket's transport layer state (its WebSocket framing, or its frame decoder), taken out of
/// the temporary session that read a `Resume` so that it can travel with the socket to the
/// session's shard ([`Session::take_socket_layer`], [`Session::with_socket_layer`]). Its size is
/// one enum (the WebSocket state is boxed); moving it copies nothing it holds.
#[derive(Debug)]
pub struct SocketLayer(Layer);

/// One session's protocol state. See the module documentation.
///
/// Memory at rest: about 220 bytes plus the unsent output, an incomplete input frame and, with
/// resume, a boxed 56-byte state and the replay buffer; buffers are released when drained, so an
/// idle session without unacknowledged frames holds no buffer. An HTTP or WebSocket session adds
/// its layer (one allocation of about 100–200 bytes).
#[derive(Debug)]
pub struct Session {
    id: SessionId,
    /// Shared by the sessions of a listener (the runtime hands every new session the same one):
    /// one pointer per session instead of a 136-byte copy. A live change of the rate limits
    /// gives the changed session its own copy ([`Session::set_rates`]).
    limits: Arc<SessionLimits>,
    layer: Layer,
    session_type: SessionType,
    out: OutQueue,
    /// Absolute queue offset where the current socket was bound: the send limit counts unsent
    /// bytes after it (what is replayed before it is bounded by the replay limits).
    bound_at: u64,
    /// When the peer last sent something (the idle deadline counts from it); while a `Hello`
    /// deadline runs, when the session opened (or a WebSocket upgrade was asked for): input does
    /// not move it then.
    last_seen: MonoTime,
    handshake: Handshake,
    /// Why the session is closing, once it is. Boxed: set once per session, at its end.
    closing: Option<Box<CloseReason>>,
    /// Close with this reason once the queue is written (a close handshake, `Connection: close`).
    /// Boxed: rare, and a binary session should stay small.
    linger: Option<Box<CloseReason>>,
    binding: Binding,
    /// A sequenced WebSocket session's peer sent a close frame: the runtime ends the socket as
    /// if the peer had closed it, so the session detaches (see [`Session::peer_ended`]).
    peer_ended: bool,
    /// A resumable session's queue passed `send_buffer_limit` (its client does not read): the
    /// runtime ends the socket and the session detaches with [`CloseReason::SendBufferOverflow`]
    /// (see [`Session::send_overflowed`]), its frames kept for a replay like any lost socket's.
    overflowed: bool,
    /// Without a socket since (time, why). Boxed: only resumable sessions detach.
    detached: Option<Box<(MonoTime, CloseReason)>>,
    resume: Option<Box<Resume>>,
    rate: RateState,
    /// The TLS layer under the other layers, when the listener has TLS. Boxed: plain sessions pay
    /// one pointer.
    #[cfg(feature = "tls")]
    tls: Option<Box<crate::tls::TlsLayer>>,
}

/// How much longer than `max_frame` a frame read on an internal session (a node link) may be: a
/// link frame wraps a whole client frame (at most `max_frame`) with the client's session id,
/// request id, opcode and address, their keys and lengths, and the sequence extension.
pub const INTERNAL_FRAME_SLACK: u32 = 256;

/// The largest frame a session of `session_type` reads.
fn read_max_frame(limits: &SessionLimits, session_type: SessionType) -> u32 {
    match session_type {
        SessionType::Internal => limits.max_frame.saturating_add(INTERNAL_FRAME_SLACK),
        _ => limits.max_frame,
    }
}

impl Session {
    /// A new binary client session (frames over the byte stream), opened at `now`, served by the
    /// socket of [`Session::binding`].
    pub fn new(id: SessionId, limits: impl Into<Arc<SessionLimits>>, now: MonoTime) -> Session {
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
        limits: impl Into<Arc<SessionLimits>>,
        stack: &Arc<StackConfig>,
        now: MonoTime,
    ) -> Session {
        let mut limits = limits.into();
        // A node link has its own send bound: a copy of the limits with it (links are few, and
        // the send path stays one comparison).
        if stack.session_type == SessionType::Internal
            && limits.internal_send_buffer_limit != limits.send_buffer_limit
        {
            limits = Arc::new(SessionLimits {
                send_buffer_limit: limits.internal_send_buffer_limit,
                ..*limits
            });
        }
        let layer = Layer::new(stack, read_max_frame(&limits, stack.session_type), now);
        Session {
            id,
            limits,
            layer,
            session_type: stack.session_type,
            out: OutQueue::default(),
            bound_at: 0,
            last_seen: now,
            handshake: Handshake::AwaitingHello,
            closing: None,
            linger: None,
            binding: Binding(0),
            peer_ended: false,
            overflowed: false,
            detached: None,
            resume: None,
            rate: RateState::default(),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// The session id.
    #[inline]
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The limits the session runs with.
    pub fn limits(&self) -> SessionLimits {
        *self.limits
    }

    /// Replaces the rate limits (a live reload). The limiter state is kept. The session's limits
    /// become its own copy when they were shared; [`Session::set_shared_limits`] shares again.
    pub fn set_rates(&mut self, rates: SessionRates) {
        if self.limits.rates != rates {
            Arc::make_mut(&mut self.limits).rates = rates;
        }
    }

    /// Takes `limits` (shared with other sessions) when they differ from the session's own in
    /// the rate limits at most — a live reload of the rate limits given to every session of a
    /// shard at the cost of one pointer each. Returns false, and changes nothing, when any other
    /// limit differs (the frame and send bounds a session started with do not change under it).
    pub fn set_shared_limits(&mut self, limits: &Arc<SessionLimits>) -> bool {
        let mut same_but_rates = **limits;
        same_but_rates.rates = self.limits.rates;
        if same_but_rates != *self.limits {
            return false;
        }
        self.limits = Arc::clone(limits);
        true
    }

    /// What the session is (its listener's session type).
    pub fn session_type(&self) -> SessionType {
        self.session_type
    }

    /// The layer the session speaks now (an HTTP session becomes WebSocket when it upgrades).
    #[inline]
    pub fn transport(&self) -> Transport {
        self.layer.transport()
    }

    // ---- bindings ----

    /// The current binding (meaningful while [`Session::is_attached`]).
    #[inline]
    pub fn binding(&self) -> Binding {
        self.binding
    }

    /// True while a socket serves the session.
    #[inline]
    pub fn is_attached(&self) -> bool {
        self.detached.is_none()
    }

    /// True when `b` is the binding of the socket serving the session now.
    #[inline]
    pub fn is_current(&self, b: Binding) -> bool {
        self.detached.is_none() && b == self.binding
    }

    /// Since when, and why, the session has had no socket.
    pub fn detached(&self) -> Option<&(MonoTime, CloseReason)> {
        self.detached.as_deref()
    }

    // ---- input ----

    /// Takes the next item from `input` (bytes the socket of binding `b` read at `now`), advancing
    /// `input` past it. Call repeatedly until it returns `Ok(None)`: then `input` is empty and an
    /// incomplete trailing frame is kept for the next call. A frame never borrows the session.
    ///
    /// Binary sessions only (their input needs no transformation): on another transport use
    /// [`Session::receive_event`]; here the session closes with a protocol error.
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
        if self.closing.is_some() || self.linger.is_some() || !self.is_current(b) {
            *input = &[];
            return Ok(None);
        }
        if self.handshake == Handshake::Ready {
            if !input.is_empty() {
                self.last_seen = now;
            }
        } else if let Err(reason) = self.before_hello(now, input) {
            *input = &[];
            return Err(reason);
        }
        let Layer::Binary(decoder) = &mut self.layer else {
            *input = &[];
            return Err(self.protocol_error("receive() on a non-binary session".into()));
        };
        let frame = match decoder.next(input) {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(None),
            Err(e) => return Err(self.protocol_error(e.to_string())),
        };
        self.on_frame(now, frame)
    }

    /// Takes the next item from `input` (bytes the socket of binding `b` read at `now`),
    /// advancing `input` past what it used. Call repeatedly until `Ok(None)`: then `input` is
    /// empty and incomplete input is kept. Items never borrow the session.
    ///
    /// `input` is mutable because layers transform it in place (WebSocket unmasking), so a frame
    /// that arrives whole in one read is handed out borrowed from it, with no copy. An HTTP
    /// request is answered with [`Session::respond`]; until then no further request is given
    /// (pipelined ones wait, see [`Session::has_pending_input`]). A WebSocket upgrade, pings,
    /// and the close handshake are handled here. Frames go through the same rate limits and
    /// sequencing as in [`Session::receive`].
    ///
    /// Returns `Ok(None)` at once, ignoring `input`, once the session is closing or `b` is stale.
    /// Fails when the bytes break the protocol; what the protocol answers (an HTTP status, a
    /// close frame with its code) is queued, the session is closing, and the error is the reason.
    pub fn receive_event<'a>(
        &mut self,
        b: Binding,
        now: MonoTime,
        input: &mut &'a mut [u8],
    ) -> Result<Option<Input<'a>>, CloseReason> {
        if self.closing.is_some() || self.linger.is_some() || !self.is_current(b) {
            *input = &mut [];
            return Ok(None);
        }
        if self.handshake == Handshake::Ready {
            if !input.is_empty() {
                self.last_seen = now;
            }
        } else if let Err(reason) = self.before_hello(now, input) {
            *input = &mut [];
            return Err(reason);
        }
        // The common case first, without a layer step: the binary layer queues nothing on input,
        // so there is no raw output to seal, no bound to re-check and no upgrade to notice (what
        // the general path below does for the other layers).
        if let Layer::Binary(dec) = &mut self.layer {
            return match next_frame(dec, input) {
                Ok(Some(f)) => self.on_frame(now, f),
                Ok(None) => Ok(None),
                Err(e) => {
                    *input = &mut [];
                    let reason = CloseReason::Protocol(e.to_string());
                    self.close(reason.clone());
                    Err(reason)
                }
            };
        }
        if self.http_response_unsent() {
            // Requests pipelined behind a response still being written are kept, not parsed:
            // `has_pending_input` hands them out once it is written.
            if let Layer::Http(h) = &mut self.layer {
                h.conn.feed(now, input);
            }
            *input = &mut [];
            return Ok(None);
        }
        let was_http = self.layer.transport() == Transport::Http;
        let queued_before = self.queued_for_bound();
        let step = self.layer.receive(now, input, self.out.raw());
        self.out.seal_raw();
        if was_http && self.layer.transport() != Transport::Http {
            // The 101 grew the queue past what a WebSocket session's frames need: let the buffer
            // go once it is written, so an idle WebSocket holds none.
            self.out.release_when_drained();
        }
        match step {
            Step::Event(Event::Frame(f)) => self.on_frame(now, f),
            Step::Event(Event::Request(r)) => Ok(Some(Input::Request(r))),
            Step::Idle => {
                self.check_queue(queued_before);
                Ok(None)
            }
            Step::Linger(CloseReason::PeerClosed) if self.resume.is_some() => {
                // A sequenced WebSocket session whose peer sent a close frame: a browser cannot
                // cut its socket any other way, so this counts as the socket ending (the
                // runtime sees `peer_ended` and the session detaches), not as the session's end.
                *input = &mut [];
                self.peer_ended = true;
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

    /// Rate limits and sequencing of one frame the peer sent.
    ///
    /// Inlined into the read paths (once per frame): a session without resume pays the rate
    /// check and one test; sequencing is out of line in [`Session::sequence`].
    #[inline(always)]
    fn on_frame<'a>(
        &mut self,
        now: MonoTime,
        frame: FrameBuf<'a>,
    ) -> Result<Option<Input<'a>>, CloseReason> {
        let h = *frame.header();
        // Charged before sequencing, so acknowledgements and duplicates count too. Node links
        // (`internal` sessions) are not limited: they carry many clients' frames, each already
        // limited on its own session at the gate, and a refusal there has no client to answer.
        let limited = if self.session_type == SessionType::Internal {
            Ok(())
        } else {
            self.rate.check(&self.limits.rates, now, h.length as usize)
        };
        if self.resume.is_some() || h.sequenced() {
            if let Some(done) = self.sequence(now, &h)? {
                // An `Ack` or a duplicate over a limit is dropped unanswered (it is counted), and
                // does not count toward `close_after`: a client acknowledging what the server
                // pushed is not closed for it.
                let over = limited.err().map(|(which, _)| {
                    self.rate.forgive(&self.limits.rates, which);
                    which
                });
                return Ok(Some(match done {
                    Input::Ack(_) => Input::Ack(over),
                    Input::Duplicate(h, _) => Input::Duplicate(h, over),
                    other => other,
                }));
            }
        }
        match limited {
            Ok(()) => Ok(Some(Input::Frame(frame))),
            Err((which, close)) => Ok(Some(Input::RateLimited(h, which, close))),
        }
    }

    /// Sequencing of one frame on a resumable session, and the refusal of a sequenced frame on
    /// another. `Ok(None)`: a new frame in order (the caller hands it out under the rate
    /// limits); `Ok(Some(_))`: an `Ack` or a duplicate, handed out as it is; an error closes the
    /// session.
    #[inline(never)]
    fn sequence(
        &mut self,
        now: MonoTime,
        h: &FrameHeader,
    ) -> Result<Option<Input<'static>>, CloseReason> {
        let Some(r) = self.resume.as_deref_mut() else {
            if h.opcode == HELLO_OPCODE || h.opcode == RESUME_OPCODE {
                // It starts a socket, sequenced session or not: the flag is the mistake.
                return Err(self.protocol_error(format!(
                    "SEQ flag on a {} (opcode {}): Hello and Resume are sent without it",
                    if h.opcode == HELLO_OPCODE {
                        "Hello"
                    } else {
                        "Resume"
                    },
                    h.opcode
                )));
            }
            return Err(self.protocol_error(format!(
                "SEQ flag on a session without resume (opcode {})",
                h.opcode
            )));
        };
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
            return Ok(Some(Input::Ack(None)));
        }
        let expected = r.received + 1;
        let seq = expand_seq(h.seq, expected);
        if seq < expected {
            return Ok(Some(Input::Duplicate(*h, None)));
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
        Ok(None)
    }

    fn protocol_error(&mut self, why: String) -> CloseReason {
        let reason = CloseReason::Protocol(why);
        self.close(reason.clone());
        reason
    }

    /// True when held input can give events without new bytes: call
    /// [`Session::receive_event`] with an empty input (pipelined HTTP requests behind one just
    /// answered).
    #[inline]
    pub fn has_pending_input(&self) -> bool {
        self.closing.is_none()
            && self.linger.is_none()
            && self.layer.has_pending_input()
            && !self.http_response_unsent()
    }

    /// An HTTP response is still being written: the next pipelined request waits for it (read
    /// and parsed only once it is out), so pipelined responses never pile up in the send queue
    /// past `send_buffer_limit`, and a client that does not read is held back by TCP.
    #[inline]
    fn http_response_unsent(&self) -> bool {
        matches!(self.layer, Layer::Http(_)) && self.out.unsent() > 0
    }

    /// True when the peer of a sequenced WebSocket session sent a close frame: the runtime must
    /// end the socket of the current binding as if the peer had closed it
    /// ([`Session::peer_closed`]), which detaches the session. Cleared by a resume.
    #[inline]
    pub fn peer_ended(&self) -> bool {
        self.peer_ended
    }

    /// False while an HTTP request waits for its response, and until that response is written:
    /// the runtime stops reading, so a pipelining client is held back by TCP instead of by the
    /// server's memory.
    #[inline]
    pub fn wants_input(&self) -> bool {
        self.layer.wants_input() && !self.http_response_unsent()
    }

    /// True when a resumable session's queue passed `send_buffer_limit` while attached: the
    /// runtime must end the socket of the current binding ([`Session::socket_overflowed`]), which
    /// detaches the session. Cleared by the detach.
    #[inline]
    pub fn send_overflowed(&self) -> bool {
        self.overflowed
    }

    /// The socket of binding `b` is ended for [`Session::send_overflowed`]: the session detaches
    /// with [`CloseReason::SendBufferOverflow`] (a client that read too slowly resumes, told to
    /// resynchronise if the replay bounds evicted what it missed).
    pub fn socket_overflowed(&mut self, b: Binding, now: MonoTime) -> SocketEnd {
        self.socket_ended(b, now, CloseReason::SendBufferOverflow)
    }

    /// The peer closed the socket of binding `b`: a clean end, or one in the middle of a frame.
    /// A resumable session detaches (both are how a network cut looks); another closes with
    /// [`CloseReason::PeerClosed`] or, mid-frame (or TLS without `close_notify`),
    /// [`CloseReason::Protocol`].
    pub fn peer_closed(&mut self, b: Binding, now: MonoTime) -> SocketEnd {
        if !self.is_current(b) && self.closing.is_none() {
            return SocketEnd::Stale;
        }
        if self.closing.is_none() {
            #[cfg(feature = "tls")]
            if let Some(reason) = self.tls.as_deref_mut().and_then(|t| t.peer_finished()) {
                self.close(reason);
            }
        }
        let reason = match self.layer.finish() {
            Ok(()) => CloseReason::PeerClosed,
            Err(e) => CloseReason::Protocol(e),
        };
        self.socket_ended(b, now, reason)
    }

    /// [`Session::peer_closed`] on the current binding, returning the reason (the TLS tests).
    #[cfg(all(test, feature = "tls"))]
    pub(crate) fn peer_closed_reason(&mut self) -> CloseReason {
        let (b, now) = (self.binding, self.last_seen);
        match self.peer_closed(b, now) {
            SocketEnd::Closed(r) => r,
            other => panic!("not closed: {other:?}"),
        }
    }

    /// The socket of binding `b` failed (`why` is the error's text): detach a resumable session,
    /// close another with [`CloseReason::Io`].
    pub fn socket_failed(&mut self, b: Binding, now: MonoTime, why: String) -> SocketEnd {
        self.socket_ended(b, now, CloseReason::Io(why))
    }

    fn socket_ended(&mut self, b: Binding, now: MonoTime, reason: CloseReason) -> SocketEnd {
        if let Some(r) = self.closing.as_deref() {
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
        self.detached = Some(Box::new((now, reason)));
        self.layer = Layer::Binary(Decoder::new(read_max_frame(
            &self.limits,
            self.session_type,
        )));
        // A layer's lingering close (a WebSocket close handshake) ends with its socket; the
        // application's close of a detached session ([`Session::close_keeping_replay`]) waits for
        // the next resume or the window's end, also when the socket of a resume is lost before the
        // replay was written.
        if !matches!(self.linger.as_deref(), Some(CloseReason::App(_))) {
            self.linger = None;
        }
        self.peer_ended = false;
        self.overflowed = false;
        self.out.write_off();
        if let Some(r) = self.resume.as_deref_mut() {
            r.ack_due = None;
        }
        let max = self.limits.resume;
        self.out.evict(max.max_frames, max.max_bytes);
    }

    /// Bytes of incomplete input held for the next call. On a binary session always fewer than
    /// `max(max_frame, 20)`: an incomplete frame is shorter than its length, which is at most
    /// `max_frame`, and a header with its extension is 20 bytes. An HTTP session holds at most
    /// one request being received (head ≤ its limit, body ≤ `max_frame`) plus one read
    /// pipelined behind it.
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

    /// The gate accepted the peer's `Hello`, read at `now` (the idle deadline counts from it).
    pub fn hello_accepted(&mut self, now: MonoTime) {
        self.handshake = Handshake::Ready;
        self.last_seen = self.last_seen.max(now);
    }

    // ---- resume ----

    /// True when this session's socket can carry resume: a binary or (non-echo) WebSocket
    /// session without TLS. A TLS connection's state is not carried by a socket handover, so
    /// resume is neither granted nor accepted there (the module documentation says why).
    pub fn supports_resume(&self) -> bool {
        #[cfg(feature = "tls")]
        if self.tls.is_some() {
            return false;
        }
        matches!(
            self.layer.transport(),
            Transport::Binary | Transport::WebSocket
        )
    }

    /// Takes this session's transport layer (after the `Resume` it read), leaving a fresh frame
    /// decoder: the layer goes with the socket to the session's shard. Nothing is allocated.
    pub fn take_socket_layer(&mut self) -> SocketLayer {
        let fresh = Layer::Binary(Decoder::new(read_max_frame(
            &self.limits,
            self.session_type,
        )));
        SocketLayer(std::mem::replace(&mut self.layer, fresh))
    }

    /// This session (a temporary one holding a handed-over socket) reads and writes through
    /// `layer`, the layer the socket had on the shard that handed it over.
    pub fn with_socket_layer(mut self, layer: SocketLayer) -> Session {
        self.layer = layer.0;
        self
    }

    /// Puts `layer` in place of this session's transport layer (see
    /// [`Session::with_socket_layer`]).
    pub fn set_socket_layer(&mut self, layer: SocketLayer) {
        self.layer = layer.0;
    }

    /// Turns sequencing and resume on, with `token` as the first resume token. Frames queued
    /// before (the `Welcome` that carries the token) go out without the extension; every frame
    /// queued after carries it, and every frame the peer sends from now on must. Called once;
    /// later calls change nothing, and so does a call on a session that does not
    /// [`Session::supports_resume`].
    pub fn enable_resume(&mut self, token: [u8; TOKEN_LEN]) {
        if self.resume.is_some() || !self.supports_resume() {
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
            ws: self.layer.transport() == Transport::WebSocket,
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
    ///
    /// This form is for a binary socket whose frame decoder starts afresh; a session whose
    /// frames travel over WebSocket is refused ([`ResumeError::Transport`]): use
    /// [`Session::resume_from`].
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
        let fresh = Layer::Binary(Decoder::new(read_max_frame(
            &self.limits,
            self.session_type,
        )));
        self.resume_on(
            fresh,
            false,
            now,
            token,
            last_received,
            attempt,
            new_token,
            answer,
        )
        .map_err(|(e, _)| e)
    }

    /// [`Session::resume`] on the socket of `socket` (the temporary session that read the
    /// `Resume`): on success this session takes `socket`'s transport layer (its WebSocket
    /// framing and any input it holds; `socket` keeps a fresh frame decoder and ends), so the
    /// `Resumed` and the replay go out framed for the new socket. The transport must be the one
    /// the session was opened on (binary, or WebSocket), and without TLS: frames kept for
    /// replay are already framed for it. Refused otherwise with [`ResumeError::Transport`];
    /// nothing changes on refusal, in either session.
    #[allow(clippy::too_many_arguments)]
    pub fn resume_from(
        &mut self,
        socket: &mut Session,
        now: MonoTime,
        token: &[u8],
        last_received: u32,
        attempt: u32,
        new_token: [u8; TOKEN_LEN],
        answer: impl FnOnce(&Resumption, &mut Vec<u8>),
    ) -> Result<Resumption, ResumeError> {
        let layer = socket.take_socket_layer().0;
        let tls = socket.tls_unsent_layer();
        match self.resume_on(
            layer,
            tls,
            now,
            token,
            last_received,
            attempt,
            new_token,
            answer,
        ) {
            Ok(r) => Ok(r),
            Err((e, layer)) => {
                socket.layer = layer;
                Err(e)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn resume_on(
        &mut self,
        layer: Layer,
        tls: bool,
        now: MonoTime,
        token: &[u8],
        last_received: u32,
        attempt: u32,
        new_token: [u8; TOKEN_LEN],
        answer: impl FnOnce(&Resumption, &mut Vec<u8>),
    ) -> Result<Resumption, (ResumeError, Layer)> {
        if self.closing.is_some() {
            return Err((ResumeError::Closed, layer));
        }
        let Some(r) = self.resume.as_deref_mut() else {
            return Err((ResumeError::NotResumable, layer));
        };
        // The token before the transport: without it a client must not learn which transport a
        // live session runs over (nor anything else about it).
        if !token_matches(r, token) {
            return Err((ResumeError::BadToken, layer));
        }
        let from = layer.transport();
        if tls || from != r.transport() {
            return Err((
                ResumeError::Transport {
                    session: transport_name(r.transport(), false),
                    socket: transport_name(from, tls),
                },
                layer,
            ));
        }
        // Past here every refusal hands the layer back.
        match Self::check_resume(r, token, last_received, attempt) {
            Ok(current) => {
                Ok(self.resume_accepted(layer, current, now, last_received, new_token, answer))
            }
            Err(e) => Err((e, layer)),
        }
    }

    /// The checks of a resume that change nothing: returns whether `token` is the current one
    /// (else it is the fallback).
    fn check_resume(
        r: &mut Resume,
        token: &[u8],
        last_received: u32,
        attempt: u32,
    ) -> Result<bool, ResumeError> {
        if !token_matches(r, token) {
            return Err(ResumeError::BadToken);
        }
        let current = tokens_equal(token, &r.token);
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
        Ok(current)
    }

    /// An accepted resume: fence, rotate, rewind, answer first.
    fn resume_accepted(
        &mut self,
        layer: Layer,
        current: bool,
        now: MonoTime,
        last_received: u32,
        new_token: [u8; TOKEN_LEN],
        answer: impl FnOnce(&Resumption, &mut Vec<u8>),
    ) -> Resumption {
        let Some(r) = self.resume.as_deref_mut() else {
            unreachable!("checked by resume_on");
        };
        let sent = r.next_seq - 1;
        let last = expand_seq(last_received, sent);
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
        self.layer = layer;
        // `linger` stays: detaching kept only the application's close, made while detached, and
        // the session ends once the replay (what it kept for this resume) is written.
        self.peer_ended = false;
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
        let mut plain = Vec::new();
        answer(&res, &mut plain);
        // The answer goes out framed for the new socket (a WebSocket message header on a
        // WebSocket), like every frame.
        let mut first = Vec::with_capacity(plain.len() + 10);
        self.layer
            .write_frame(&mut first, plain.len(), |o| o.extend_from_slice(&plain));
        self.out.rebind(first);
        self.bound_at = self.out.tail();
        res
    }

    // ---- output ----

    /// Queues one encoded frame (12-byte header, no extension) for the peer.
    ///
    /// Refused when the session is closing, or when the queue is not empty and would pass
    /// `send_buffer_limit` (the session is then closing with
    /// [`CloseReason::SendBufferOverflow`]; a resumable session takes the frame instead and is to
    /// detach, [`Session::send_overflowed`]). A frame is always accepted into an empty queue. On a
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
    ///
    /// On a WebSocket session the frame goes out as one binary message (a 2–10 byte header
    /// before it, counted against the bound). On an HTTP session it is taken only as the reply
    /// awaited with [`Session::expect_reply`], else refused with [`SendError::NoChannel`].
    pub fn send_with(
        &mut self,
        len: usize,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Result<Sent, SendError> {
        if self.closing.is_some() || self.linger.is_some() {
            return Err(SendError::Closing);
        }
        if let (Layer::Binary(_), None) = (&self.layer, &self.resume) {
            // The common case first: a binary session without resume writes the frame as it
            // is (no framing, no sequence number, nothing kept for replay), and such a session
            // is never detached (only resumable ones are).
            debug_assert!(self.detached.is_none(), "only resumable sessions detach");
            let queued = self.out.unsent_since(self.bound_at) + self.tls_unsent();
            if queued > 0 && queued + len > self.limits.send_buffer_limit {
                self.close(CloseReason::SendBufferOverflow);
                return Err(SendError::Overflow);
            }
            self.out.push_with(0, |out| {
                let at = out.len();
                write(out);
                debug_assert_eq!(out.len() - at, len, "send_with wrote a different length");
            });
            return Ok(Sent::default());
        }
        let queued = self.out.unsent_since(self.bound_at) + self.tls_unsent();
        let wire_len = self
            .layer
            .framed_len(len + if self.resume.is_some() { EXT_LEN } else { 0 });
        if self.detached.is_none()
            && queued > 0
            && queued + wire_len > self.limits.send_buffer_limit
        {
            if self.resume.is_none() {
                self.close(CloseReason::SendBufferOverflow);
                return Err(SendError::Overflow);
            }
            // Resumable: the frame is sequenced and kept below like any other, and the socket
            // ends (the session detaches) instead of the session.
            self.overflowed = true;
        }
        let Some(r) = self.resume.as_deref_mut() else {
            let layer = &mut self.layer;
            let mut carried = false;
            self.out.push_with(0, |out| {
                carried = layer.write_frame(out, len, |out| {
                    let at = out.len();
                    write(out);
                    debug_assert_eq!(out.len() - at, len, "send_with wrote a different length");
                });
            });
            return if carried {
                Ok(Sent::default())
            } else {
                Err(SendError::NoChannel)
            };
        };
        // Resumable: a binary or WebSocket session (`supports_resume`). The framing follows the
        // session's transport, not the layer (detached, there is none): kept frames are replayed
        // as they are to a socket of the same transport.
        let seq = r.next_seq;
        r.next_seq += 1;
        r.ack_due = None;
        let ack = r.received as u32;
        let ws = r.ws;
        self.out.push_with(seq, |v| {
            if ws {
                WsConn::binary_header(v, len + EXT_LEN);
            }
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

    // ---- HTTP ----

    /// Answers the HTTP request last handed out by [`Session::receive_event`]. When that request
    /// asked to close (`Connection: close`, HTTP/1.0), the session closes once the response is
    /// written. Refused ([`SendError::NoChannel`]) when no request waits for an answer; bounded
    /// like [`Session::send`] (a response always fits an empty queue).
    pub fn respond(&mut self, resp: &Response) -> Result<(), SendError> {
        if self.closing.is_some() || self.linger.is_some() {
            return Err(SendError::Closing);
        }
        let queued = self.out.unsent_since(self.bound_at) + self.tls_unsent();
        if queued > 0 && queued + resp.body.len() > self.limits.send_buffer_limit {
            self.close(CloseReason::SendBufferOverflow);
            return Err(SendError::Overflow);
        }
        let written = self.layer.respond(resp, self.out.raw());
        self.out.seal_raw();
        match written {
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
    #[inline]
    pub fn has_rpc_reply(&self) -> bool {
        self.layer.has_reply()
    }

    /// The awaited reply frame, once it arrived.
    pub fn take_rpc_reply(&mut self) -> Option<RpcReply> {
        self.layer.take_reply()
    }

    /// Bytes waiting for the socket of binding `b` (empty for a stale binding). On a TLS session
    /// the queued bytes are encrypted first (all of them, in as few records as rustls cuts), so
    /// this is ciphertext.
    // Inlined: the runtime calls it after every write and at every turn of a connection's task;
    // TLS sessions go out of line.
    #[inline]
    pub fn transmit(&mut self, b: Binding) -> &[u8] {
        if !self.is_current(b) {
            return &[];
        }
        #[cfg(feature = "tls")]
        if self.tls.is_some() {
            return self.transmit_tls();
        }
        self.out.transmit()
    }

    /// [`Session::transmit`] on a TLS session: seals what is queued.
    #[cfg(feature = "tls")]
    fn transmit_tls(&mut self) -> &[u8] {
        if let Some(tls) = self.tls.as_deref_mut() {
            loop {
                let plain = self.out.transmit();
                if plain.is_empty() {
                    break;
                }
                let n = tls.seal(plain);
                if n == 0 {
                    break;
                }
                self.out.transmitted(n);
            }
            return tls.pending();
        }
        self.out.transmit()
    }

    /// The socket of binding `b` took `n` bytes of [`Session::transmit`] (ignored for a stale
    /// binding).
    pub fn transmitted(&mut self, b: Binding, n: usize) {
        if !self.is_current(b) {
            return;
        }
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_deref_mut() {
            tls.consume(n);
        } else {
            self.out.transmitted(n);
        }
        #[cfg(not(feature = "tls"))]
        self.out.transmitted(n);
        // A lingering close is rare: test it before measuring what is left.
        if self.linger.is_some() && self.unsent() == 0 {
            if let Some(reason) = self.linger.take() {
                self.close(*reason);
            }
        }
    }

    /// Bytes queued and not yet written (on a TLS session, plaintext not yet sealed plus
    /// ciphertext not yet taken by the socket).
    // Inlined: the runtime compares it before and after each send to know whether to wake.
    #[inline]
    pub fn unsent(&self) -> usize {
        self.out.unsent() + self.tls_unsent()
    }

    /// True when the session runs over TLS (false without the `tls` feature).
    fn tls_unsent_layer(&self) -> bool {
        #[cfg(feature = "tls")]
        if self.tls.is_some() {
            return true;
        }
        false
    }

    fn tls_unsent(&self) -> usize {
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_deref() {
            return tls.unsent();
        }
        0
    }

    // ---- time ----

    /// The next time the runtime must call [`Session::handle_timeout`], if any: the end of the
    /// resume window while detached; otherwise the idle deadline or, earlier, an acknowledgement
    /// due or a layer's deadline (an HTTP head or reply deadline, a WebSocket ping, a TLS
    /// handshake or key update).
    pub fn poll_timeout(&self) -> Option<MonoTime> {
        if self.closing.is_some() {
            return None;
        }
        if let Some((at, _)) = self.detached.as_deref() {
            return Some(at.saturating_add(self.limits.resume.window));
        }
        let ack = self.resume.as_ref().and_then(|r| r.ack_due);
        let t = earliest(
            earliest(earliest(self.idle_deadline(), self.hello_deadline()), ack),
            self.layer.poll_timeout(),
        );
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_deref() {
            return earliest(t, tls.poll_timeout());
        }
        t
    }

    /// Input before an accepted `Hello` (both read paths, out of their line): it refreshes
    /// `last_seen` unless a `Hello` deadline runs (`last_seen` then holds the session's start),
    /// and a TLS ClientHello sent to the plain frame port closes the session at once.
    #[cold]
    #[inline(never)]
    fn before_hello(&mut self, now: MonoTime, input: &[u8]) -> Result<(), CloseReason> {
        if !input.is_empty() && !self.hello_bounded_slow() {
            self.last_seen = now;
        }
        if self.tls_instead_of_frames(input) {
            return Err(self.protocol_error(FrameError::TlsClientHello.to_string()));
        }
        Ok(())
    }

    /// Before the `Hello`: true when a binary session's first bytes are a TLS ClientHello (see
    /// [`starts_tls_client_hello`]), which a short ClientHello would otherwise make the session
    /// wait on as a frame of up to 66 KB.
    fn tls_instead_of_frames(&self, input: &[u8]) -> bool {
        matches!(&self.layer, Layer::Binary(d) if d.pending_len() == 0 && d.is_idle())
            && starts_tls_client_hello(input)
    }

    /// True while a `Hello` deadline runs: no `Hello` accepted yet on a frame or WebSocket session
    /// (not HTTP requests, not the echo endpoint) with `hello_timeout` set.
    #[inline]
    fn hello_bounded(&self) -> bool {
        self.handshake != Handshake::Ready && self.hello_bounded_slow()
    }

    #[inline(never)]
    fn hello_bounded_slow(&self) -> bool {
        self.limits.hello_timeout.is_some()
            && match &self.layer {
                Layer::Binary(_) => true,
                Layer::Ws(w) => !w.is_echo(),
                _ => false,
            }
    }

    /// While a `Hello` deadline runs: when it is (`last_seen` holds the session's start then).
    fn hello_deadline(&self) -> Option<MonoTime> {
        if !self.hello_bounded() {
            return None;
        }
        self.limits
            .hello_timeout
            .map(|t| self.last_seen.saturating_add(t))
    }

    fn idle_deadline(&self) -> Option<MonoTime> {
        self.limits
            .idle_timeout
            .map(|t| self.last_seen.saturating_add(t))
    }

    /// Fires what is due at `now`: a detached session whose window passed closes
    /// ([`CloseReason::ResumeExpired`]); a session idle for `idle_timeout` detaches (resumable) or
    /// closes ([`CloseReason::IdleTimeout`]); an acknowledgement due goes out in an `Ack` frame; a
    /// layer's deadline queues what it sends (a `408` or `504`, a ping). Early or repeated calls
    /// are harmless. Output may be queued: write it.
    pub fn handle_timeout(&mut self, now: MonoTime) {
        // Each deadline fires exactly when `now` reaches what `poll_timeout` reports. (Measuring
        // the idle time instead disagreed with it at the edges: see the fuzz target `session`.)
        if self.closing.is_some() {
            return;
        }
        if let Some((at, why)) = self.detached.as_deref() {
            if now >= at.saturating_add(self.limits.resume.window) {
                // Closed while detached (`close_keeping_replay`), it ends with that reason.
                let reason = match self.linger.take() {
                    Some(r) => *r,
                    None => CloseReason::ResumeExpired(why.to_string()),
                };
                self.close(reason);
            }
            return;
        }
        // TLS: a handshake past its deadline closes the session; a due key update is queued.
        #[cfg(feature = "tls")]
        if let Some(Err(reason)) = self.tls.as_deref_mut().map(|t| t.handle_timeout(now)) {
            self.close(reason);
            return;
        }
        if let Some(deadline) = self.hello_deadline() {
            if now >= deadline {
                let ms = self.limits.hello_timeout.map_or(0, |t| t.as_millis());
                self.close(CloseReason::Protocol(format!(
                    "no Hello within {ms} ms of the connection (net.hello_timeout_ms)"
                )));
                return;
            }
        }
        if let Some(deadline) = self.idle_deadline() {
            if now >= deadline {
                if self.resume.is_some() {
                    self.detach(now, CloseReason::IdleTimeout);
                } else {
                    self.close(CloseReason::IdleTimeout);
                }
                return;
            }
        }
        let queued_before = self.queued_for_bound();
        let timed_out = self.layer.handle_timeout(now, self.out.raw());
        self.out.seal_raw();
        if let Some(reason) = timed_out {
            self.close_after_flush(reason);
        }
        if let Some(r) = self.resume.as_deref_mut() {
            if r.ack_due.is_some_and(|d| now >= d) {
                r.ack_due = None;
                let ack = r.received as u32;
                let ws = r.ws;
                self.out.push_with(0, |v| {
                    if ws {
                        WsConn::binary_header(v, HEADER_LEN + EXT_LEN);
                    }
                    encode_seq_into(v, ACK_OPCODE, 0, 0, 0, ack, &[]);
                });
            }
        }
        self.check_queue(queued_before);
    }

    // ---- close ----

    /// Starts closing with `reason` (the first reason wins). Queued output may still be written;
    /// a WebSocket session queues its close frame (with the code for `reason`) first.
    pub fn close(&mut self, reason: CloseReason) {
        if self.closing.is_none() {
            // Not for a peer that does not read: nothing more is written to it.
            if reason != CloseReason::SendBufferOverflow {
                self.layer.on_close(&reason, self.out.raw());
                self.out.seal_raw();
                // TLS: what is still queued is encrypted now, then close_notify follows it.
                #[cfg(feature = "tls")]
                if let Some(tls) = self.tls.as_deref_mut() {
                    let n = tls.close(self.out.transmit());
                    self.out.transmitted(n);
                }
            }
            self.closing = Some(Box::new(reason));
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

    /// Closes with `reason` ([`Session::close`]), except a detached session that holds frames
    /// for a replay (a `Kicked` pushed just before): it keeps them for one resume, which writes
    /// them and then closes the session with `reason`; the end of the resume window closes it
    /// with `reason` too. Meanwhile nothing more is sent and input is ignored.
    pub fn close_keeping_replay(&mut self, reason: CloseReason) {
        if self.closing.is_some() {
            return;
        }
        if self.detached.is_some() && self.replay_held().0 > 0 {
            if self.linger.is_none() {
                self.linger = Some(Box::new(reason));
            }
        } else {
            self.close(reason);
        }
    }

    /// Layers queue protocol answers (pongs, echoes) on input; a peer that sends them faster than
    /// it reads passes the bound like any other output (one echoed message, header included,
    /// always fits).
    /// Frames replayed to a new socket do not count here either (as in [`Session::send_with`]):
    /// the replay limits bound them.
    /// Only output queued since `before` (what [`Session::queued_for_bound`] said before the
    /// layer ran) can pass the bound here: a frame the application queued into an empty queue was
    /// accepted whatever its size, and a timer or a read that queues nothing must not close the
    /// session for it afterwards.
    fn check_queue(&mut self, before: usize) {
        let one = self.limits.max_frame as usize + crate::ws::frame::MAX_HEADER_LEN;
        let queued = self.queued_for_bound();
        if queued > before && queued > self.limits.send_buffer_limit.max(one) {
            if self.resume.is_some() && self.detached.is_none() {
                self.overflowed = true;
            } else {
                self.close(CloseReason::SendBufferOverflow);
            }
        }
    }

    /// Bytes the send bound applies to: unsent output of the current binding (not a replay) and
    /// TLS records not yet written.
    fn queued_for_bound(&self) -> usize {
        self.out.unsent_since(self.bound_at) + self.tls_unsent()
    }

    /// The reason the session will close with once its queue is written
    /// ([`Session::close_after_flush`]), until then.
    pub fn closing_after_flush(&self) -> Option<&CloseReason> {
        self.linger.as_deref()
    }

    /// Why the session is closing, once it is.
    #[inline]
    pub fn close_reason(&self) -> Option<&CloseReason> {
        self.closing.as_deref()
    }

    /// True once the session is closing.
    #[inline]
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
        debug_assert!(self.resume.is_none(), "resume is not offered over TLS");
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
        if self.tls.is_some() && !input.is_empty() && !self.hello_bounded() {
            self.last_seen = now;
        }
        let Some(tls) = self.tls.as_deref_mut() else {
            plain.extend_from_slice(input);
            return Ok(crate::tls::TlsRead::default());
        };
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

/// How a transport is named in a refused resume.
fn transport_name(t: Transport, tls: bool) -> &'static str {
    match (t, tls) {
        (_, true) => "TLS",
        (Transport::Binary, _) => "binary",
        (Transport::WebSocket, _) => "WebSocket",
        (Transport::WebSocketEcho, _) => "WebSocket echo",
        (Transport::Http, _) => "HTTP",
    }
}

/// Whether `token` is the session's current resume token or its fallback (both compared, always:
/// which one matched must not show in the time taken).
fn token_matches(r: &Resume, token: &[u8]) -> bool {
    let current = tokens_equal(token, &r.token);
    let fallback = r.fallback.is_some_and(|f| tokens_equal(token, &f));
    current | fallback
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

/// The earlier of two optional deadlines.
fn earliest(a: Option<MonoTime>, b: Option<MonoTime>) -> Option<MonoTime> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod layer_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod ws_resume_tests;

//! The byte-transport layers under a session's frames: what turns the bytes of a connection into
//! session events and frames back into bytes.
//!
//! A listener's protocol stack ([`StackKind`]) decides where a session starts:
//! - `binary`: Lattice frames straight over the byte stream ([`Layer::Binary`]);
//! - `http`: HTTP/1.1 requests ([`Layer::Http`]); `GET` on the WebSocket path upgrades the
//!   connection to WebSocket ([`Layer::Ws`]), where each binary message carries one frame (or,
//!   on the echo path used by the conformance suite, every message is echoed).
//!
//! The session ([`crate::Session`]) owns one [`Layer`] and its outbound queue; everything else a
//! session is (handshake, bounds, close reason) stays in `session.rs`. A layer that transforms
//! bytes below these (TLS) sits under this one: it hands plaintext to [`Layer::receive`] and
//! encrypts what the queue holds. A binary session's frames skip `Layer::receive` (the
//! session's read path takes them from the decoder with `next_frame`, the per-frame hot path),
//! and its sends skip `Layer::write_frame`: the binary layer adds nothing either way.

use std::sync::Arc;
use std::time::Duration;

use crate::frame::{parse_header, Decoder, Frame, FrameBuf, FrameError};
use crate::http::{with_head, HeadView, HttpConn, HttpLimits, Next, Request, Response};
use crate::session_id::CloseReason;
use crate::time::MonoTime;
use crate::ws::frame::{close_code, encode_frame, header_len, OP_BINARY, OP_TEXT};
use crate::ws::{check_upgrade, Payload, WsConn, WsError, WsEvent};

/// A listener's protocol stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum StackKind {
    /// Lattice frames over the byte stream.
    Binary,
    /// HTTP/1.1; the WebSocket path upgrades to WebSocket.
    Http,
}

/// What a listener's sessions are, and so what they may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum SessionType {
    /// Game clients: stacks `binary` and `http`; every opcode except server-internal
    /// (`no_client`) ones.
    Client,
    /// Other Lattice nodes: stack `binary`; every opcode.
    Internal,
    /// Operators: the admin listener (HTTP on its own thread); no frames.
    Admin,
}

impl SessionType {
    /// The name used in configuration and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionType::Client => "client",
            SessionType::Internal => "internal",
            SessionType::Admin => "admin",
        }
    }

    /// True when this type may use `stack`.
    pub fn allows(self, stack: StackKind) -> bool {
        match self {
            SessionType::Client => true,
            SessionType::Internal => stack == StackKind::Binary,
            SessionType::Admin => stack == StackKind::Http,
        }
    }

    /// True when sessions of this type may send server-internal (`no_client`) opcodes.
    pub fn may_send_internal(self) -> bool {
        self == SessionType::Internal
    }
}

/// WebSocket settings of an HTTP listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsSettings {
    /// The path that upgrades to a Lattice WebSocket (`/ws`).
    pub path: String,
    /// A path whose WebSocket echoes every message (text and binary) instead of carrying frames:
    /// the conformance suite's endpoint. Empty = none.
    pub echo_path: String,
    /// Allowed `Origin` values; empty = any.
    pub origins: Vec<String>,
    /// The server pings an open WebSocket this often; `None` = never.
    pub ping_interval: Option<Duration>,
}

impl Default for WsSettings {
    fn default() -> Self {
        WsSettings {
            path: "/ws".into(),
            echo_path: String::new(),
            origins: Vec::new(),
            ping_interval: Some(Duration::from_secs(15)),
        }
    }
}

/// What a listener gives each of its sessions. Shared (one per listener), read-only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackConfig {
    /// Where sessions start.
    pub kind: StackKind,
    /// What they are.
    pub session_type: SessionType,
    /// HTTP limits (stack `http`).
    pub http: HttpLimits,
    /// WebSocket settings (stack `http`).
    pub ws: WsSettings,
}

impl StackConfig {
    /// Frames over TCP for `session_type`.
    pub fn binary(session_type: SessionType) -> StackConfig {
        StackConfig {
            kind: StackKind::Binary,
            session_type,
            http: HttpLimits::default(),
            ws: WsSettings::default(),
        }
    }
}

/// The layer a session speaks now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Frames over the byte stream.
    Binary,
    /// HTTP/1.1 requests.
    Http,
    /// WebSocket messages carrying frames.
    WebSocket,
    /// WebSocket messages echoed (the conformance endpoint).
    WebSocketEcho,
}

/// What a session's input gives the application.
#[derive(Debug)]
pub enum Event<'a> {
    /// A complete frame (stack `binary`, or one WebSocket binary message).
    Frame(FrameBuf<'a>),
    /// An HTTP request to answer with [`crate::Session::respond`].
    Request(Request),
}

/// The reply frame to an HTTP request relayed as a frame request
/// ([`crate::Session::expect_reply`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcReply {
    /// The request id given to `expect_reply` (the frame carries it).
    pub request_id: u32,
    /// The caller's tag given to `expect_reply`.
    pub tag: u32,
    /// The whole frame, header included.
    pub frame: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Rpc {
    request_id: u32,
    tag: u32,
    deadline: MonoTime,
}

#[derive(Debug)]
pub(crate) struct HttpLayer {
    pub conn: HttpConn,
    cfg: Arc<StackConfig>,
    max_frame: u32,
    rpc: Option<Rpc>,
    reply: Option<RpcReply>,
    /// A request was handed out: the connection may no longer become a WebSocket (what it did
    /// as HTTP, such as an `/rpc` login or a late reply, must not end up in a WebSocket session).
    served: bool,
}

/// Kept small: one per open WebSocket (the idle memory budget is 1 KiB per connection).
#[derive(Debug)]
pub(crate) struct WsLayer {
    pub conn: WsConn,
    echo: bool,
    max_frame: u32,
    /// Ping interval in ms; 0 = never.
    ping_ms: u32,
    /// When the next ping is due (meaningless when `ping_ms` is 0).
    next_ping: MonoTime,
    /// Bytes that followed the upgrade request in the same read (rare: clients wait for `101`).
    carry: Option<Box<[u8]>>,
}

impl WsLayer {
    /// The conformance endpoint: it echoes messages and never carries a session's frames.
    pub(crate) fn is_echo(&self) -> bool {
        self.echo
    }
}

impl WsLayer {
    fn next_ping(&self) -> Option<MonoTime> {
        (self.ping_ms > 0).then_some(self.next_ping)
    }
}

/// The layers. See the module documentation.
#[derive(Debug)]
pub(crate) enum Layer {
    Binary(Decoder),
    /// An HTTP connection before its first bytes: nothing allocated, so a WebSocket upgrade that
    /// arrives whole in one read never allocates the HTTP layer (at 10,000 connections opening at
    /// once, freed HTTP layers would stay behind as holes in the heap).
    HttpFresh {
        cfg: Arc<StackConfig>,
        max_frame: u32,
        opened: MonoTime,
    },
    // Boxed: HTTP connections are few and short; a binary session stays small.
    Http(Box<HttpLayer>),
    Ws(Box<WsLayer>),
}

/// What one step of input did besides giving an event.
pub(crate) enum Step<'a> {
    /// An event for the application.
    Event(Event<'a>),
    /// Nothing (more) for now: the input is used up.
    Idle,
    /// The peer broke the protocol: close now with this reason (a response or close frame is
    /// queued already when the protocol has one).
    Fail(CloseReason),
    /// Close once the queue is written (a close handshake, `Connection: close`).
    Linger(CloseReason),
}

impl Layer {
    pub(crate) fn new(cfg: &Arc<StackConfig>, max_frame: u32, now: MonoTime) -> Layer {
        match cfg.kind {
            StackKind::Binary => Layer::Binary(Decoder::new(max_frame)),
            StackKind::Http => Layer::HttpFresh {
                cfg: cfg.clone(),
                max_frame,
                opened: now,
            },
        }
    }

    fn http_limits(cfg: &StackConfig, max_frame: u32) -> HttpLimits {
        HttpLimits {
            max_body: cfg.http.max_body.min(max_frame as usize),
            ..cfg.http
        }
    }

    /// A fresh HTTP connection gets its HTTP layer (its head deadline still from the open).
    fn materialize(&mut self) {
        if let Layer::HttpFresh {
            cfg,
            max_frame,
            opened,
        } = self
        {
            let conn = HttpConn::new(Layer::http_limits(cfg, *max_frame), *opened);
            *self = Layer::Http(Box::new(HttpLayer {
                conn,
                cfg: cfg.clone(),
                max_frame: *max_frame,
                rpc: None,
                served: false,
                reply: None,
            }));
        }
    }

    #[inline]
    pub(crate) fn transport(&self) -> Transport {
        match self {
            Layer::Binary(_) => Transport::Binary,
            Layer::Http(_) | Layer::HttpFresh { .. } => Transport::Http,
            Layer::Ws(w) if w.echo => Transport::WebSocketEcho,
            Layer::Ws(_) => Transport::WebSocket,
        }
    }

    pub(crate) fn buffered(&self) -> usize {
        match self {
            Layer::Binary(d) => d.pending_len(),
            Layer::Http(h) => h.conn.buffered(),
            Layer::HttpFresh { .. } => 0,
            Layer::Ws(w) => w.conn.buffered() + w.carry.as_ref().map_or(0, |c| c.len()),
        }
    }

    /// The next event from `input`; see [`crate::Session::receive_event`].
    pub(crate) fn receive<'a>(
        &mut self,
        now: MonoTime,
        input: &mut &'a mut [u8],
        out: &mut Vec<u8>,
    ) -> Step<'a> {
        match self {
            Layer::Binary(dec) => match next_frame(dec, input) {
                Ok(Some(f)) => Step::Event(Event::Frame(f)),
                Ok(None) => Step::Idle,
                Err(e) => Step::Fail(CloseReason::Protocol(e.to_string())),
            },
            Layer::HttpFresh { cfg, max_frame, .. } => {
                if input.is_empty() {
                    return Step::Idle;
                }
                // The usual upgrade: the whole request in one read. Checked borrowed from the
                // read buffer, so an upgrade allocates nothing but the WebSocket layer.
                let ws = &cfg.ws;
                let limits = Layer::http_limits(cfg, *max_frame);
                let upgrade = with_head(input, &limits, |raw| {
                    let echo = !ws.echo_path.is_empty() && raw.path() == ws.echo_path;
                    (raw.path() == ws.path || echo).then(|| {
                        (
                            echo,
                            raw.method() == "HEAD",
                            check_upgrade(raw, &ws.origins),
                        )
                    })
                });
                if let Ok(Some((Some((echo, head_request, checked)), head_len, body_len))) = upgrade
                {
                    if input.len() >= head_len + body_len {
                        let rest = input[head_len + body_len..].to_vec();
                        *input = &mut [];
                        return match checked {
                            Ok(accepted) => {
                                accepted.encode(out);
                                let (cfg, max_frame) = (cfg.clone(), *max_frame);
                                self.upgrade(&cfg, max_frame, now, echo, rest, out)
                            }
                            Err(resp) => {
                                resp.encode_for(true, head_request, out);
                                Step::Linger(CloseReason::Protocol(format!(
                                    "websocket handshake refused ({})",
                                    resp.status
                                )))
                            }
                        };
                    }
                }
                self.materialize();
                self.receive(now, input, out)
            }
            Layer::Http(h) => {
                h.conn.feed(now, input);
                *input = &mut [];
                let req = match h.conn.next_request(out) {
                    Next::Wait => return Step::Idle,
                    Next::Failed(e) => {
                        return Step::Fail(CloseReason::Protocol(format!("http: {e}")))
                    }
                    Next::Request(r) => r,
                };
                let ws = &h.cfg.ws;
                let echo = !ws.echo_path.is_empty() && req.path == ws.echo_path;
                if req.path != ws.path && !echo {
                    h.served = true;
                    return Step::Event(Event::Request(req));
                }
                let checked = if h.served {
                    Err(Response::text(
                        400,
                        "a WebSocket upgrade must be the first request of its connection\n",
                    ))
                } else {
                    check_upgrade(&req, &ws.origins)
                };
                match checked {
                    Err(resp) => {
                        h.conn.respond_and_close(&resp, out);
                        Step::Linger(CloseReason::Protocol(format!(
                            "websocket handshake refused ({})",
                            resp.status
                        )))
                    }
                    Ok(accepted) => {
                        accepted.encode(out);
                        let carry = h.conn.take_rest();
                        let (cfg, max_frame) = (h.cfg.clone(), h.max_frame);
                        self.upgrade(&cfg, max_frame, now, echo, carry, out)
                    }
                }
            }
            Layer::Ws(w) => {
                if let Some(carry) = w.carry.take() {
                    let mut carry = carry.into_vec();
                    carry.extend_from_slice(input);
                    *input = &mut [];
                    let mut rest: &mut [u8] = &mut carry;
                    let step = ws_step(w, &mut rest, out).into_owned();
                    if !rest.is_empty() {
                        w.carry = Some(rest.to_vec().into_boxed_slice());
                    }
                    return step;
                }
                ws_step(w, input, out)
            }
        }
    }

    /// Becomes a WebSocket layer (the `101` is queued); `carry` are bytes the peer sent behind
    /// the upgrade request.
    fn upgrade(
        &mut self,
        cfg: &StackConfig,
        max_frame: u32,
        now: MonoTime,
        echo: bool,
        carry: Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Step<'static> {
        let ping_ms = cfg
            .ws
            .ping_interval
            .map_or(0, |d| d.as_millis().clamp(1, u32::MAX as u128) as u32);
        *self = Layer::Ws(Box::new(WsLayer {
            conn: WsConn::new(max_frame, echo),
            echo,
            max_frame,
            ping_ms,
            next_ping: now.saturating_add(Duration::from_millis(u64::from(ping_ms))),
            carry: (!carry.is_empty()).then(|| carry.into_boxed_slice()),
        }));
        if let Layer::Ws(w) = self {
            if w.carry.is_some() {
                // Bytes sent right behind the request are WebSocket frames.
                return self.receive(now, &mut (&mut [][..]), out).into_owned();
            }
        }
        Step::Idle
    }

    /// True when held bytes can give events without new input (pipelined HTTP requests behind
    /// an answered one, WebSocket bytes carried over the upgrade).
    #[inline]
    pub(crate) fn has_pending_input(&self) -> bool {
        match self {
            Layer::Binary(_) | Layer::HttpFresh { .. } => false,
            Layer::Http(h) => h.conn.has_pending_input(),
            Layer::Ws(w) => w.carry.is_some(),
        }
    }

    /// False while an HTTP request waits for its response.
    #[inline]
    pub(crate) fn wants_input(&self) -> bool {
        match self {
            Layer::Http(h) => h.conn.wants_input(),
            _ => true,
        }
    }

    pub(crate) fn finish(&self) -> Result<(), String> {
        match self {
            Layer::Binary(d) => d.finish().map_err(|e| e.to_string()),
            _ => Ok(()),
        }
    }

    // ---- output ----

    /// Bytes a frame of `len` adds to the queue (the WebSocket header included).
    pub(crate) fn framed_len(&self, len: usize) -> usize {
        match self {
            Layer::Ws(_) => header_len(len) + len,
            _ => len,
        }
    }

    /// Writes one frame of `len` bytes (by `write`) for the peer. Returns false when this
    /// transport cannot carry it (an HTTP session not waiting for that reply).
    pub(crate) fn write_frame(
        &mut self,
        out: &mut Vec<u8>,
        len: usize,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> bool {
        match self {
            Layer::Binary(_) => write(out),
            Layer::Ws(w) if !w.echo => {
                WsConn::binary_header(out, len);
                write(out);
            }
            Layer::Ws(_) | Layer::HttpFresh { .. } => return false,
            Layer::Http(h) => {
                let Some(rpc) = h.rpc else { return false };
                let mut frame = Vec::with_capacity(len);
                write(&mut frame);
                let rid = frame
                    .get(8..12)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                if h.reply.is_some() || rid != Some(rpc.request_id) {
                    return false;
                }
                h.rpc = None;
                h.reply = Some(RpcReply {
                    request_id: rpc.request_id,
                    tag: rpc.tag,
                    frame,
                });
            }
        }
        true
    }

    /// Appends an HTTP response to the request being answered. Returns (written, keep_alive).
    pub(crate) fn respond(&mut self, resp: &Response, out: &mut Vec<u8>) -> Option<bool> {
        let Layer::Http(h) = self else { return None };
        if !h.conn.waiting_response() {
            return None;
        }
        h.rpc = None;
        Some(h.conn.respond(resp, out))
    }

    pub(crate) fn expect_reply(&mut self, request_id: u32, tag: u32, deadline: MonoTime) -> bool {
        match self {
            Layer::Http(h) if h.conn.waiting_response() && h.rpc.is_none() && h.reply.is_none() => {
                h.rpc = Some(Rpc {
                    request_id,
                    tag,
                    deadline,
                });
                true
            }
            _ => false,
        }
    }

    pub(crate) fn take_reply(&mut self) -> Option<RpcReply> {
        match self {
            Layer::Http(h) => h.reply.take(),
            _ => None,
        }
    }

    #[inline]
    pub(crate) fn has_reply(&self) -> bool {
        matches!(self, Layer::Http(h) if h.reply.is_some())
    }

    /// Queues what the protocol sends when the server closes for `reason` (a WebSocket close
    /// frame with its code).
    pub(crate) fn on_close(&mut self, reason: &CloseReason, out: &mut Vec<u8>) {
        if let Layer::Ws(w) = self {
            let code = match reason {
                CloseReason::PeerClosed => close_code::NORMAL,
                CloseReason::Shutdown | CloseReason::IdleTimeout => close_code::GOING_AWAY,
                CloseReason::Protocol(_) => close_code::PROTOCOL_ERROR,
                CloseReason::App(m) if m == "internal error" => close_code::INTERNAL,
                CloseReason::App(_)
                | CloseReason::SendBufferOverflow
                | CloseReason::RateLimited => close_code::POLICY,
                CloseReason::Admin(_) => close_code::GOING_AWAY,
                // A resumable WebSocket session expires or hands over detached or on a fresh
                // binary layer, so no close frame goes out for these in practice.
                CloseReason::ResumeExpired(_) | CloseReason::HandedOver => close_code::GOING_AWAY,
                CloseReason::Io(_) => return,
            };
            w.conn.send_close(out, code, &reason.to_string());
        }
    }

    // ---- time ----

    pub(crate) fn poll_timeout(&self) -> Option<MonoTime> {
        match self {
            Layer::Binary(_) => None,
            Layer::HttpFresh { cfg, opened, .. } => {
                Some(opened.saturating_add(cfg.http.head_timeout))
            }
            Layer::Http(h) => min_opt(h.conn.poll_timeout(), h.rpc.map(|r| r.deadline)),
            Layer::Ws(w) if w.conn.close_sent() => None,
            Layer::Ws(w) => w.next_ping(),
        }
    }

    /// Fires what is due at `now`. Returns a reason to close when the protocol ends the session.
    pub(crate) fn handle_timeout(
        &mut self,
        now: MonoTime,
        out: &mut Vec<u8>,
    ) -> Option<CloseReason> {
        if matches!(self, Layer::HttpFresh { .. }) && self.poll_timeout().is_some_and(|d| now >= d)
        {
            self.materialize();
        }
        match self {
            Layer::HttpFresh { .. } => None,
            Layer::Binary(_) => None,
            Layer::Http(h) => {
                if let Some(e) = h.conn.handle_timeout(now, out) {
                    return Some(CloseReason::Protocol(format!("http: {e}")));
                }
                if let Some(r) = h.rpc.filter(|r| now >= r.deadline) {
                    h.rpc = None;
                    let _ = r;
                    let keep = h.conn.respond(
                        &Response::text(504, "no reply from the handler in time\n"),
                        out,
                    );
                    if !keep {
                        return Some(CloseReason::PeerClosed);
                    }
                }
                None
            }
            Layer::Ws(w) => {
                if let Some(at) = w.next_ping() {
                    if now >= at {
                        w.conn.send_ping(out);
                        w.next_ping =
                            now.saturating_add(Duration::from_millis(u64::from(w.ping_ms)));
                    }
                }
                None
            }
        }
    }
}

impl Step<'_> {
    fn into_owned(self) -> Step<'static> {
        match self {
            Step::Event(Event::Frame(f)) => Step::Event(Event::Frame(owned_frame(f))),
            Step::Event(Event::Request(r)) => Step::Event(Event::Request(r)),
            Step::Idle => Step::Idle,
            Step::Fail(r) => Step::Fail(r),
            Step::Linger(r) => Step::Linger(r),
        }
    }
}

fn owned_frame(f: FrameBuf<'_>) -> FrameBuf<'static> {
    match f {
        FrameBuf::Assembled { header, bytes } => FrameBuf::Assembled { header, bytes },
        FrameBuf::Borrowed(fr) => {
            let h = fr.header;
            let mut bytes = Vec::with_capacity(h.header_len() + fr.body.len());
            if h.sequenced() {
                crate::frame::encode_seq_into(
                    &mut bytes,
                    h.opcode,
                    h.flags,
                    h.request_id,
                    h.seq,
                    h.ack,
                    fr.body,
                );
            } else {
                crate::frame::encode_into(&mut bytes, h.opcode, h.flags, h.request_id, fr.body);
            }
            FrameBuf::Assembled {
                header: fr.header,
                bytes,
            }
        }
    }
}

fn min_opt(a: Option<MonoTime>, b: Option<MonoTime>) -> Option<MonoTime> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The decoder's `next` over a mutable input: a frame wholly at the start of `input` is handed
/// out borrowed (no copy), as `Decoder::next` does for a shared input.
///
/// Inlined (the read path's per-frame step); what is not a whole frame at the start of `input`
/// goes out of line to [`next_frame_buffered`].
#[inline]
pub(crate) fn next_frame<'a>(
    dec: &mut Decoder,
    input: &mut &'a mut [u8],
) -> Result<Option<FrameBuf<'a>>, FrameError> {
    if dec.pending_len() == 0 {
        match parse_header(input, dec.max_frame()) {
            Ok(Some(h)) if input.len() >= h.length as usize => {
                let (frame, rest) = std::mem::take(input).split_at_mut(h.length as usize);
                *input = rest;
                let frame: &'a [u8] = frame;
                return Ok(Some(FrameBuf::Borrowed(Frame {
                    header: h,
                    // After the sequence extension when the frame has one.
                    body: &frame[h.header_len()..],
                })));
            }
            // The read is used up (the call that ends every read): nothing to keep, nothing
            // to hand out, unless the decoder failed before (then `next` repeats the error).
            Ok(None) if input.is_empty() && dec.is_idle() => return Ok(None),
            _ => {}
        }
    }
    next_frame_buffered(dec, input)
}

/// A frame continued from earlier reads, an incomplete one, or an error: the decoder hands out
/// owned frames only on this path.
#[inline(never)]
fn next_frame_buffered<'a>(
    dec: &mut Decoder,
    input: &mut &'a mut [u8],
) -> Result<Option<FrameBuf<'a>>, FrameError> {
    let mut shared: &[u8] = input;
    let r = dec.next(&mut shared).map(|f| f.map(owned_frame));
    let used = input.len() - shared.len();
    let (_, rest) = std::mem::take(input).split_at_mut(used);
    *input = rest;
    r
}

fn ws_step<'a>(w: &mut WsLayer, input: &mut &'a mut [u8], out: &mut Vec<u8>) -> Step<'a> {
    loop {
        let ev = match w.conn.next(input, out) {
            Ok(Some(ev)) => ev,
            Ok(None) => return Step::Idle,
            Err(e) => return ws_fail(w, e, out),
        };
        match ev {
            WsEvent::Closed(code) => {
                return Step::Linger(match code {
                    None | Some(close_code::NORMAL) | Some(close_code::GOING_AWAY) => {
                        CloseReason::PeerClosed
                    }
                    Some(c) => {
                        CloseReason::Protocol(format!("websocket closed by the peer with code {c}"))
                    }
                })
            }
            WsEvent::Text(p) if w.echo => encode_frame(out, OP_TEXT, p.as_slice()),
            WsEvent::Binary(p) if w.echo => encode_frame(out, OP_BINARY, p.as_slice()),
            WsEvent::Text(_) => return ws_fail(w, WsError::Text, out),
            WsEvent::Binary(p) => {
                return match one_frame(p, w.max_frame) {
                    Ok(f) => Step::Event(Event::Frame(f)),
                    Err(e) => ws_fail(w, WsError::NotOneFrame(e), out),
                }
            }
        }
    }
}

fn ws_fail<'a>(w: &mut WsLayer, e: WsError, out: &mut Vec<u8>) -> Step<'a> {
    let reason = format!("websocket: {e}");
    w.conn.send_close(out, e.close_code(), &reason);
    Step::Fail(CloseReason::Protocol(reason))
}

/// A binary message that must be exactly one Lattice frame.
fn one_frame(p: Payload<'_>, max_frame: u32) -> Result<FrameBuf<'_>, String> {
    let bytes = p.as_slice();
    let header = match parse_header(bytes, max_frame) {
        Ok(Some(h)) => h,
        Ok(None) => {
            return Err(format!(
                "{} bytes, shorter than a frame header",
                bytes.len()
            ))
        }
        Err(e) => return Err(e.to_string()),
    };
    if header.length as usize != bytes.len() {
        return Err(format!(
            "frame length {} in a message of {} bytes",
            header.length,
            bytes.len()
        ));
    }
    Ok(match p {
        Payload::Borrowed(b) => FrameBuf::Borrowed(Frame {
            header,
            body: &b[header.header_len()..],
        }),
        Payload::Owned(bytes) => FrameBuf::Assembled { header, bytes },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_types_and_stacks() {
        assert!(SessionType::Client.allows(StackKind::Binary));
        assert!(SessionType::Client.allows(StackKind::Http));
        assert!(!SessionType::Internal.allows(StackKind::Http));
        assert!(!SessionType::Admin.allows(StackKind::Binary));
        assert!(SessionType::Internal.may_send_internal());
        assert!(!SessionType::Client.may_send_internal());
    }

    #[test]
    fn one_frame_per_message() {
        let f = crate::frame::encode(4, 0, 9, b"hi");
        assert!(one_frame(Payload::Borrowed(&f), 1024).is_ok());
        let mut two = f.clone();
        two.extend_from_slice(&f);
        assert!(one_frame(Payload::Borrowed(&two), 1024)
            .unwrap_err()
            .contains("frame length 14 in a message of 28"));
        assert!(one_frame(Payload::Owned(f[..5].to_vec()), 1024).is_err());
        assert!(one_frame(Payload::Borrowed(&f), 12)
            .unwrap_err()
            .contains("out of range"));
    }
}

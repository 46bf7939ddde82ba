//! The gate: every client frame passes here before any service sees it.
//!
//! It checks the frame against the session's handshake state (kept in the session state machine),
//! the opcode registry and the message's flags, inflates a compressed body, decodes it, and answers
//! `Hello` itself. What it lets through is a decoded request for the service host. It never routes,
//! queues or runs a handler.
//!
//! The rule before `Hello` (docs/PROTOCOL.md, "Handshake"): until a `Hello` has been accepted, any
//! frame that is not a valid, accepted `Hello` — or a `Resume` taking the socket to an existing
//! session ([`crate::resume`]) — is answered with an `Error` and the session is closed, whatever
//! its opcode, known or not.

use std::sync::Arc;

use lattice_proto::version::{check_hello, PROTOCOL};
use lattice_proto::{error_code, opcode, pb, AnyMessage, OpcodeInfo};
use lattice_runtime::telemetry::warn_limit::{Verdict, WarnLimiter};
use lattice_runtime::ShardCx;
use lattice_wire::{CloseReason, Frame, FrameHeader, Limited, SessionId};

use crate::metrics::AppMetrics;
use crate::service::{Encoder, ShardMsg};

/// The gate of one shard.
pub struct Gate {
    inflated: Vec<u8>,
    metrics: Arc<Vec<AppMetrics>>,
    shard: usize,
    /// Rate limit of the gate's protocol-violation warnings (`log.warn_burst`).
    warns: WarnLimiter,
    born: std::time::Instant,
    /// Messages a component takes as requests, by [`OpcodeInfo::index`] (`ServiceHost::requests`).
    requests: Vec<bool>,
}

/// What the gate made of a frame.
pub enum Checked {
    /// A request for the service host.
    Request(&'static OpcodeInfo, AnyMessage),
    /// Answered (or the session closed) here.
    Done,
    /// The session's first `Hello` was accepted and answered with `Welcome`: the services hear
    /// that the session is ready.
    Welcomed,
}

impl Gate {
    /// Logs what the warning limit still holds back (at the stop).
    pub fn flush_warnings(&mut self) {
        self.warns.flush();
    }

    /// The gate of shard `shard`, counting into `metrics[shard]`.
    pub fn new(metrics: Arc<Vec<AppMetrics>>, shard: usize, requests: Vec<bool>) -> Gate {
        Gate {
            inflated: Vec::new(),
            metrics,
            shard,
            warns: WarnLimiter::from_defaults(),
            born: std::time::Instant::now(),
            requests,
        }
    }

    fn m(&self) -> &AppMetrics {
        &self.metrics[self.shard]
    }

    /// Checks one frame from `session` (a session of this shard).
    pub fn check(
        &mut self,
        cx: &ShardCx<ShardMsg>,
        enc: &mut Encoder,
        session: SessionId,
        frame: Frame<'_>,
    ) -> Checked {
        let h = frame.header;
        let (ready, may_internal) = cx
            .inspect_session(session, |s| {
                (s.is_ready(), s.session_type().may_send_internal())
            })
            .unwrap_or((false, false));
        if ready && h.opcode == opcode::RESUME {
            tracing::debug!(%session, "Resume on a greeted session");
            return answered(
                cx,
                enc,
                session,
                &h,
                error_code::NOT_ALLOWED,
                "Resume must be the first frame of a socket",
            );
        }
        if !ready && h.opcode != opcode::HELLO && h.opcode != opcode::RESUME {
            AppMetrics::add(&self.m().not_hello_total, 1);
            tracing::debug!(%session, opcode = h.opcode, "first frame is not Hello");
            return self.refuse(
                cx,
                enc,
                session,
                h.request_id,
                h.opcode,
                error_code::NOT_ALLOWED,
                "send Hello first",
            );
        }
        let Some(info) = lattice_proto::info(h.opcode) else {
            AppMetrics::add(&self.m().unknown_opcode_total, 1);
            tracing::debug!(%session, opcode = h.opcode, "unknown opcode; frame skipped");
            return answered(
                cx,
                enc,
                session,
                &h,
                error_code::UNKNOWN_OPCODE,
                "unknown opcode",
            );
        };
        if info.no_client && !may_internal {
            AppMetrics::add(&self.m().rejected_internal_total, 1);
            let now_ms = self.born.elapsed().as_millis() as u64;
            let (verdict, summary) = self.warns.check("server_internal_message", now_ms);
            if let Some(s) = summary {
                tracing::warn!(shard = self.shard, reason = s.reason, suppressed = s.suppressed, window_ms = s.window_ms, "client sent a server-internal message: further warnings of this reason suppressed in the last window");
            }
            if verdict == Verdict::Log {
                tracing::warn!(%session, opcode = h.opcode, msg = info.name, "client sent a server-internal message; rejected");
            }
            return answered(
                cx,
                enc,
                session,
                &h,
                error_code::NOT_ALLOWED,
                "server-internal message",
            );
        }
        if ready
            && !info.no_client
            && h.opcode != opcode::HELLO
            && h.opcode != opcode::RESUME
            && !self
                .requests
                .get(info.index as usize)
                .copied()
                .unwrap_or(false)
        {
            // A server-to-client message (Pong, Said, ...): refused before its body is looked at,
            // so a wrong opcode on a request says what happened, not how the body misdecodes.
            return answered(
                cx,
                enc,
                session,
                &h,
                error_code::NOT_ALLOWED,
                "not a request message",
            );
        }
        let body: &[u8] = if h.compressed() {
            self.inflated.clear();
            if let Err(e) = enc.compressor.inflate(frame.body, &mut self.inflated) {
                cx.close(session, CloseReason::Protocol(e.to_string()));
                return Checked::Done;
            }
            &self.inflated
        } else {
            frame.body
        };
        let msg = match lattice_proto::decode(h.opcode, body) {
            Ok(msg) => msg,
            Err(e) => {
                AppMetrics::add(&self.m().bad_request_total, 1);
                tracing::debug!(%session, opcode = h.opcode, error = %e, "bad request");
                // A `Hello` that does not decode is refused like any other refused `Hello`:
                // before the handshake and on a greeted session alike, the session closes.
                if !ready || h.opcode == opcode::HELLO {
                    if !ready {
                        AppMetrics::add(&self.m().not_hello_total, 1);
                    }
                    return self.refuse(
                        cx,
                        enc,
                        session,
                        h.request_id,
                        h.opcode,
                        e.error_code(),
                        &e.to_string(),
                    );
                }
                error(
                    cx,
                    enc,
                    session,
                    h.request_id,
                    h.opcode,
                    e.error_code(),
                    &e.to_string(),
                );
                return Checked::Done;
            }
        };
        log_in(session, h.request_id, info, &msg);
        if h.opcode == opcode::HELLO || h.opcode == opcode::RESUME {
            return self.greeting(cx, enc, session, h.request_id, ready, info, msg);
        }
        // Every other message goes to the host as it was decoded (one move, no second match).
        Checked::Request(info, msg)
    }

    /// `Hello` or `Resume`, which the gate answers itself. Out of line: once per session.
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn greeting(
        &mut self,
        cx: &ShardCx<ShardMsg>,
        enc: &mut Encoder,
        session: SessionId,
        rid: u32,
        ready: bool,
        info: &'static OpcodeInfo,
        msg: AnyMessage,
    ) -> Checked {
        match msg {
            AnyMessage::Hello(hello) => {
                if self.hello(cx, enc, session, rid, hello) && !ready {
                    Checked::Welcomed
                } else {
                    Checked::Done
                }
            }
            AnyMessage::Resume(r) => {
                crate::resume::on_resume(cx, enc, session, rid, r);
                Checked::Done
            }
            // Not reached (those opcodes decode to those messages); the request path as before.
            msg => Checked::Request(info, msg),
        }
    }

    /// A frame over one of the session's rate limits: `Error{RATE_LIMITED}` with its request id
    /// and opcode (and, before the handshake, the session closes like any refused first frame).
    pub fn rate_limited(
        &mut self,
        cx: &ShardCx<ShardMsg>,
        enc: &mut Encoder,
        session: SessionId,
        h: FrameHeader,
        which: Limited,
    ) {
        let why = match which {
            Limited::Messages => {
                "rate limited: too many frames per second (limits.session_msgs_per_s)"
            }
            Limited::Bytes => {
                "rate limited: too many bytes per second (limits.session_bytes_per_s)"
            }
        };
        let ready = cx
            .inspect_session(session, |s| s.is_ready())
            .unwrap_or(false);
        if ready {
            error(
                cx,
                enc,
                session,
                h.request_id,
                h.opcode,
                error_code::RATE_LIMITED,
                why,
            );
        } else {
            self.refuse(
                cx,
                enc,
                session,
                h.request_id,
                h.opcode,
                error_code::RATE_LIMITED,
                why,
            );
        }
    }

    /// `Hello`: the version check. Accepted: `Welcome` (again, with the same session id, for a
    /// second `Hello`) and true. Refused: `Error{VERSION_MISMATCH}`, the session closes, false.
    fn hello(
        &mut self,
        cx: &ShardCx<ShardMsg>,
        enc: &mut Encoder,
        session: SessionId,
        rid: u32,
        hello: pb::Hello,
    ) -> bool {
        match check_hello(&hello.client_version, PROTOCOL) {
            Ok(_) => {
                let (first, token, resumable) = cx
                    .with_session(session, |s| {
                        let first = !s.is_ready();
                        s.hello_accepted(cx.now());
                        (first, s.token().copied(), s.supports_resume())
                    })
                    .unwrap_or((false, None, false));
                // Resume is granted by the first accepted Hello only (a later Hello gets the
                // token in force), and only where the transport supports it (binary frames or
                // WebSocket, without TLS): elsewhere the Welcome carries no token.
                let new_token = if first && hello.resume && resumable {
                    cx.new_token()
                } else {
                    None
                };
                let w = pb::Welcome {
                    server_version: PROTOCOL.to_string(),
                    session_id: session.as_u64(),
                    resume_token: new_token.or(token).map(|t| t.to_vec()).unwrap_or_default(),
                };
                enc.send(cx, session, rid, &w);
                if let Some(t) = new_token {
                    // After the Welcome is queued: it goes out without the extension, every
                    // later frame with it.
                    cx.with_session(session, |s| s.enable_resume(t));
                }
                true
            }
            Err(r) => {
                let msg = r.to_string();
                AppMetrics::add(&self.m().not_hello_total, 1);
                self.refuse(cx, enc, session, rid, opcode::HELLO, r.error_code(), &msg);
                false
            }
        }
    }

    /// Answers with an error and closes the session (the handshake failed).
    #[allow(clippy::too_many_arguments)]
    fn refuse(
        &self,
        cx: &ShardCx<ShardMsg>,
        enc: &mut Encoder,
        session: SessionId,
        rid: u32,
        op: u16,
        code: u32,
        message: &str,
    ) -> Checked {
        error(cx, enc, session, rid, op, code, message);
        cx.close(
            session,
            CloseReason::App(format!("handshake failed: {message}")),
        );
        Checked::Done
    }
}

/// Answers the frame with `Error{code, message}`; the gate is done with it.
fn answered(
    cx: &ShardCx<ShardMsg>,
    enc: &mut Encoder,
    session: SessionId,
    h: &FrameHeader,
    code: u32,
    message: &str,
) -> Checked {
    error(cx, enc, session, h.request_id, h.opcode, code, message);
    Checked::Done
}

fn error(
    cx: &ShardCx<ShardMsg>,
    enc: &mut Encoder,
    session: SessionId,
    rid: u32,
    op: u16,
    code: u32,
    message: &str,
) {
    let e = pb::Error {
        code,
        message: message.to_string(),
        opcode: u32::from(op),
    };
    enc.send(cx, session, rid, &e);
}

fn log_in(session: SessionId, rid: u32, info: &OpcodeInfo, msg: &AnyMessage) {
    if tracing::enabled!(tracing::Level::TRACE) {
        if info.no_log_request {
            tracing::trace!(%session, request_id = rid, opcode = info.opcode, msg = info.name, body = "<not logged>", "frame in");
        } else {
            tracing::trace!(%session, request_id = rid, opcode = info.opcode, msg = info.name, body = ?msg, "frame in");
        }
    }
}

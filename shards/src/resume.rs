//! Resume at the gate: a socket whose first frame is `Resume` takes over an existing session.
//!
//! The session lives on the shard its id names. When the socket arrived on another shard, the
//! socket itself is handed to that shard (`ShardCx::hand_over`) with the decoded request, so the
//! session never moves and nothing is proxied; there the request is checked like a local one.
//! The session state machine does the checking, the fencing of the old socket and the replay
//! (`lattice_wire::Session::resume`); this file decodes, encodes `Resumed` and reports.

use lattice_proto::{error_code, opcode, pb};
use lattice_runtime::telemetry::metrics::ShardMetrics;
use lattice_runtime::ShardCx;
use lattice_wire::frame;
use lattice_wire::{CloseReason, SessionId};
use prost::Message;

use crate::service::{Encoder, ShardMsg};

/// A decoded `Resume`, on its way to the shard that owns the session.
#[derive(Debug)]
pub struct ResumeRequest {
    /// The session to take over.
    pub target: SessionId,
    /// Its current token.
    pub token: Vec<u8>,
    /// The `seq` of the last frame the client received.
    pub last_received: u32,
    /// The client's attempt number.
    pub attempt: u32,
    /// The `Resume` frame's request id (echoed in the answer).
    pub request_id: u32,
}

/// A `Resume` arrived as the first frame of `socket`'s session (a temporary session: it only
/// carries the socket).
pub fn on_resume(
    cx: &ShardCx<ShardMsg>,
    enc: &mut Encoder,
    socket: SessionId,
    request_id: u32,
    msg: pb::Resume,
) {
    let req = ResumeRequest {
        target: SessionId::from_u64(msg.session_id),
        token: msg.token,
        last_received: msg.last_received_seq,
        attempt: msg.attempt,
        request_id,
    };
    let supported = cx
        .inspect_session(socket, |s| s.supports_resume())
        .unwrap_or(false);
    if !supported {
        // A TLS connection's state does not move with a socket handover.
        return reject(
            cx,
            enc,
            socket,
            request_id,
            "resume is supported on binary and WebSocket connections without TLS only",
        );
    }
    let owner = req.target.shard();
    if owner == cx.id {
        return resume_here(cx, enc, socket, req);
    }
    if owner >= cx.shards {
        return reject_told(
            cx,
            enc,
            socket,
            request_id,
            "unknown session (no such shard)",
            UNKNOWN_OR_WRONG_TOKEN,
            NEW_SESSION,
        );
    }
    if let Err(ShardMsg::Resume(req)) = cx.hand_over(socket, owner, ShardMsg::Resume(req)) {
        reject(
            cx,
            enc,
            socket,
            req.request_id,
            "cannot reach the session's shard",
        );
    }
}

/// Resumes `req.target` (a session of this shard) on the socket of `socket`.
pub fn resume_here(
    cx: &ShardCx<ShardMsg>,
    enc: &mut Encoder,
    socket: SessionId,
    req: ResumeRequest,
) {
    let Some(next_token) = cx.new_token() else {
        return reject(
            cx,
            enc,
            socket,
            req.request_id,
            "server cannot make a token now",
        );
    };
    let now = cx.now();
    let rid = req.request_id;
    let result = cx.rebind(socket, req.target, |s, sock| {
        s.resume_from(
            sock,
            now,
            &req.token,
            req.last_received,
            req.attempt,
            next_token,
            |r, out| {
                let answer = pb::Resumed {
                    resume_token: next_token.to_vec(),
                    last_received_seq: r.received,
                    server_seq: r.sent,
                    resync: r.resync,
                };
                let body_len = answer.encoded_len();
                frame::encode_header_into(out, opcode::RESUMED, 0, rid, body_len);
                answer.encode_raw(out);
            },
        )
    });
    match result {
        Ok(r) => tracing::info!(
            session = %req.target,
            peer = %lattice_runtime::telemetry::log::or_none(cx.session_peer(socket)),
            replayed = r.replayed,
            resync = r.resync,
            client_sent = r.received,
            server_sent = r.sent,
            "session resumed on a new socket"
        ),
        // The session is left as it was: it still resumes over its own transport.
        Err(
            e @ lattice_runtime::shard::RebindError::Resume(lattice_wire::ResumeError::Transport {
                ..
            }),
        ) => {
            let why = e.to_string();
            reject_told(
                cx,
                enc,
                socket,
                rid,
                &why,
                &why,
                "resume it over the transport it was opened on",
            )
        }
        Err(e) => {
            let why = e.to_string();
            let told = told(&e).unwrap_or(&why);
            reject_told(cx, enc, socket, rid, &why, told, NEW_SESSION)
        }
    }
}

/// What the client is told of a refusal. Whether a session id is live, resumable or closing is
/// not told to a client that does not hold its token: those refusals read alike (the log at
/// debug level keeps the difference).
fn told(e: &lattice_runtime::shard::RebindError) -> Option<&'static str> {
    use lattice_runtime::shard::RebindError;
    use lattice_wire::ResumeError;
    match e {
        RebindError::UnknownSession
        | RebindError::Resume(
            ResumeError::Closed | ResumeError::NotResumable | ResumeError::BadToken,
        ) => Some(UNKNOWN_OR_WRONG_TOKEN),
        _ => None,
    }
}

/// What a refused client should do instead, unless said otherwise.
const NEW_SESSION: &str = "start a new session with Hello";

/// The one refusal a client without the session's token gets.
const UNKNOWN_OR_WRONG_TOKEN: &str = "unknown or closed session, or wrong token";

/// Answers `Error{RESUME_REJECTED}` on the socket and closes it.
fn reject(cx: &ShardCx<ShardMsg>, enc: &mut Encoder, socket: SessionId, rid: u32, why: &str) {
    reject_told(cx, enc, socket, rid, why, why, NEW_SESSION);
}

/// Counts and logs the refusal (`why`), answers it (`told`, then `instead`) and closes the socket.
fn reject_told(
    cx: &ShardCx<ShardMsg>,
    enc: &mut Encoder,
    socket: SessionId,
    rid: u32,
    why: &str,
    told: &str,
    instead: &str,
) {
    ShardMetrics::add(&cx.cm().resume_rejected_total, 1);
    // Debug level: a stream of bad tokens must not flood the log (the counter shows it).
    tracing::debug!(%socket, reason = why, "resume rejected");
    let e = pb::Error {
        code: error_code::RESUME_REJECTED,
        message: format!("resume rejected: {told}; {instead}"),
        opcode: u32::from(opcode::RESUME),
    };
    enc.send(cx, socket, rid, &e);
    cx.close(socket, CloseReason::App(format!("resume rejected: {why}")));
}

#[cfg(test)]
mod tests {
    use lattice_proto::opcode;

    #[test]
    fn the_wire_crate_knows_the_same_opcodes() {
        assert_eq!(lattice_wire::HELLO_OPCODE, opcode::HELLO);
        assert_eq!(lattice_wire::RESUME_OPCODE, opcode::RESUME);
        assert_eq!(lattice_wire::RESUMED_OPCODE, opcode::RESUMED);
        assert_eq!(lattice_wire::ACK_OPCODE, opcode::ACK);
        assert_eq!(lattice_wire::TOKEN_LEN, 16);
    }
}

//! Lattice wire: the sans-IO protocol code.
//!
//! - [`frame`]: the frame codec (12-byte header, body), every limit a parameter, every bad input a
//!   typed [`FrameError`];
//! - [`compress`]: zlib bodies with a hard inflate cap;
//! - [`SessionId`] and [`CloseReason`];
//! - [`http`]: HTTP/1.1 requests and responses, keep-alive, pipelining, limits;
//! - [`ws`]: WebSocket (RFC 6455): handshake, frames, masking, one connection's state;
//! - [`stack`]: a listener's protocol stack and session type, and the layers (binary, HTTP,
//!   WebSocket) between a connection's bytes and a session's events;
//! - [`tls`] (feature `tls`): TLS 1.3/1.2 on rustls, the byte-transport layer under the others;
//! - [`session`]: one session's state machine (its layers, outbound queue and its bound, idle
//!   deadline, handshake state, sequencing, replay buffer, bindings, detach and resume), driven
//!   with bytes and times;
//! - [`rate`]: GCRA rate limits (8 bytes of state per limited quantity).
//!
//! What this crate never does: touch a socket, read a clock, spawn a thread, or depend on a runtime
//! (`cargo tree -p lattice-wire` lists no monoio, tokio, rusqlite or mysql_async). Fuzz targets, the
//! load harness and the proto tests link it alone.
#![warn(missing_docs)]

pub mod compress;
pub mod frame;
pub mod http;
pub mod rate;
pub mod session;
mod session_id;
pub mod stack;
mod time;
#[cfg(feature = "tls")]
pub mod tls;
pub mod ws;

pub use frame::{Decoder, Frame, FrameBuf, FrameError, FrameHeader};
pub use rate::{Limited, RateLimit, RatePolicy, SessionRates};
pub use session::{
    expand_seq, Binding, Handshake, Input, ResumeError, ResumeLimits, Resumption, SendError, Sent,
    Session, SessionLimits, SocketEnd, SocketLayer, ACK_OPCODE, HELLO_OPCODE, RESUMED_OPCODE,
    RESUME_OPCODE, TOKEN_LEN,
};
pub use session_id::{CloseReason, SessionId};
pub use stack::{Event, RpcReply, SessionType, StackConfig, StackKind, Transport, WsSettings};
pub use time::MonoTime;

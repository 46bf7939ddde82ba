//! Lattice wire: the sans-IO protocol code.
//!
//! - [`frame`]: the frame codec (12-byte header, body), every limit a parameter, every bad input a
//!   typed [`FrameError`];
//! - [`compress`]: zlib bodies with a hard inflate cap;
//! - [`SessionId`] and [`CloseReason`];
//! - [`session`]: one session's state machine (decoder, outbound queue and its bound, idle
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
pub mod rate;
pub mod session;
mod session_id;
mod time;

pub use frame::{Decoder, Frame, FrameBuf, FrameError, FrameHeader};
pub use rate::{Limited, RateLimit, RatePolicy, SessionRates};
pub use session::{
    expand_seq, Binding, Handshake, Input, ResumeError, ResumeLimits, Resumption, SendError, Sent,
    Session, SessionLimits, SocketEnd, ACK_OPCODE, HELLO_OPCODE, RESUMED_OPCODE, RESUME_OPCODE,
    TOKEN_LEN,
};
pub use session_id::{CloseReason, SessionId};
pub use time::MonoTime;

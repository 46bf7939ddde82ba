//! Lattice wire: the sans-IO protocol code.
//!
//! - [`frame`]: the frame codec (12-byte header, body), every limit a parameter, every bad input a
//!   typed [`FrameError`];
//! - [`compress`]: zlib bodies with a hard inflate cap;
//! - [`SessionId`] and [`CloseReason`];
//! - [`session`]: one session's state machine (decoder, outbound queue and its bound, idle
//!   deadline, handshake state), driven with bytes and times;
//! - [`tls`] (feature `tls`): TLS 1.3/1.2 on rustls as a byte-transport layer of the session.
//!
//! What this crate never does: touch a socket, read a clock, spawn a thread, or depend on a runtime
//! (`cargo tree -p lattice-wire` lists no monoio, tokio, rusqlite or mysql_async). Fuzz targets, the
//! load harness and the proto tests link it alone.
#![warn(missing_docs)]

pub mod compress;
pub mod frame;
pub mod session;
mod session_id;
mod time;
#[cfg(feature = "tls")]
pub mod tls;

pub use frame::{Decoder, Frame, FrameBuf, FrameError, FrameHeader};
pub use session::{Handshake, SendError, Session, SessionLimits, HELLO_OPCODE};
pub use session_id::{CloseReason, SessionId};
pub use time::MonoTime;

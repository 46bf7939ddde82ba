//! WebSocket (RFC 6455), sans-IO: the opening handshake ([`handshake`]), frame headers and
//! masking ([`frame`]), and one connection's state after the handshake ([`conn`]).
//!
//! Lattice's use (docs/PROTOCOL.md, "WebSocket"): `GET /ws`, subprotocol `lattice.v1`, each
//! binary message carries exactly one frame, text messages are refused with close code 1003.
//! permessage-deflate is declined: frames already carry zlib bodies above a threshold, and a
//! deflate context per connection (≈ 256 KiB with context takeover) would break the idle memory
//! budget while compressing already compressed bodies.
//!
//! What it never does: read a socket or a clock (ping intervals are the session's deadlines), or
//! keep a buffer while idle.

pub mod conn;
pub mod frame;
pub mod handshake;

pub use conn::{Payload, WsConn, WsEvent};
pub use frame::{close_code, WsError};
pub use handshake::{accept_key, check_upgrade, Accepted, SUBPROTOCOL};

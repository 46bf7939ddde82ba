//! HTTP/1.1, sans-IO: request heads parsed with limits ([`request`]), responses encoded
//! ([`response`]), and one server connection's state — keep-alive, pipelining, `Content-Length`
//! bodies, the head deadline ([`conn`]); and the client side: requests encoded, responses parsed
//! with limits, chunked bodies included ([`client`]).
//!
//! What it never does: read a socket or a clock, route a request, or accept a chunked body (every
//! `Transfer-Encoding` is refused with 411). Routes belong to the application (`lattice-server`
//! on the shards, the admin listener's own thread); the WebSocket upgrade is `crate::ws`.

pub mod client;
pub mod conn;
pub mod request;
pub mod response;

pub use conn::{HttpConn, Next};
pub use request::{parse_head, with_head, Head, HeadView, HttpError, HttpLimits, RawHead, Request};
pub use response::{reason, Response};

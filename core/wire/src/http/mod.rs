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

/// A decimal number as HTTP writes one (`Content-Length`, a numeric path segment): ASCII digits
/// only, at least one. `str::parse` would also take a leading `+`, which HTTP does not allow.
pub fn parse_digits<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod digits_tests {
    use super::parse_digits;

    #[test]
    fn only_ascii_digits_parse() {
        assert_eq!(parse_digits::<u64>("0"), Some(0));
        assert_eq!(parse_digits::<u64>("012"), Some(12));
        assert_eq!(parse_digits::<u64>("18446744073709551615"), Some(u64::MAX));
        for bad in [
            "",
            "+2",
            "-2",
            " 2",
            "2 ",
            "0x10",
            "1_000",
            "18446744073709551616",
            "٣",
        ] {
            assert_eq!(parse_digits::<u64>(bad), None, "{bad:?}");
        }
    }
}

//! HTTP/1.1 request heads: parsing with limits, and every bad input mapped to its status code.
//!
//! `httparse` does the tokenising (no allocation, no I/O); it has no size limits and no body
//! framing, so both are here: the head is capped at [`HttpLimits::max_head`] bytes and
//! [`HttpLimits::max_headers`] fields, the body is framed by `Content-Length` only (at most
//! [`HttpLimits::max_body`]), and any `Transfer-Encoding` is refused.

use std::time::Duration;

use thiserror::Error;

/// Most header fields a request head may carry, whatever the configuration says (the parser's
/// field array lives on the stack).
pub const MAX_HEADERS_CAP: usize = 64;

/// Limits of one HTTP connection. Cheap to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Largest request head (request line and header fields, up to the blank line), in bytes.
    pub max_head: usize,
    /// Most header fields in one head (at most [`MAX_HEADERS_CAP`]).
    pub max_headers: usize,
    /// Largest request body (`Content-Length`).
    pub max_body: usize,
    /// A request head must be complete this long after its first byte (or after the connection
    /// opened); else `408` and the connection closes.
    pub head_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_head: 8192,
            max_headers: 32,
            max_body: 1 << 20,
            head_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a request was refused. Each maps to one status code ([`HttpError::status`]); the
/// connection is closed after the response, because the stream position is no longer known.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HttpError {
    /// The head passed `max_head` bytes (431).
    #[error("request head larger than {0} bytes")]
    HeadTooLarge(usize),
    /// More than `max_headers` header fields (431).
    #[error("more than {0} header fields")]
    TooManyHeaders(usize),
    /// Not an HTTP/1.x request head (400), with what was wrong.
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// `Content-Length` missing a number, or given twice with different values (400).
    #[error("bad Content-Length")]
    BadContentLength,
    /// The body is larger than `max_body` (413).
    #[error("request body of {} bytes is larger than {max}", if *len == u64::MAX { "2^64 or more".to_string() } else { len.to_string() })]
    BodyTooLarge {
        /// `Content-Length` as sent (`u64::MAX` for 2^64 − 1 or more).
        len: u64,
        /// The limit.
        max: usize,
    },
    /// A `Transfer-Encoding` (chunked or other) was sent (411: send `Content-Length`).
    #[error("Transfer-Encoding is not accepted; send the body with Content-Length")]
    TransferEncoding,
    /// The head was not complete within `head_timeout` (408).
    #[error("request head not complete within {0:?}")]
    HeadTimeout(Duration),
}

impl HttpError {
    /// The status code the server answers with.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::HeadTooLarge(_) | HttpError::TooManyHeaders(_) => 431,
            HttpError::Malformed(_) | HttpError::BadContentLength => 400,
            HttpError::BodyTooLarge { .. } => 413,
            HttpError::TransferEncoding => 411,
            HttpError::HeadTimeout(_) => 408,
        }
    }
}

/// One request: its head, decoded, and its body. Owned: HTTP is not the hot path, and a request
/// outlives the read that completed it (the application may answer it later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, … as sent.
    pub method: String,
    /// The path, without the query (not percent-decoded).
    pub path: String,
    /// The query after `?`, empty when none.
    pub query: String,
    /// The minor version: 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub minor_version: u8,
    /// Header fields in order, names lower-cased, values trimmed.
    pub headers: Vec<(String, String)>,
    /// The body (`Content-Length` bytes; empty when none).
    pub body: Vec<u8>,
}

impl Request {
    /// The first header field named `name` (give it lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// True when header `name` lists `token` (comma-separated, case-insensitive), as
    /// `Connection: keep-alive, Upgrade` lists `upgrade`.
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        HeadView::header_has_token(self, name, token)
    }

    /// The value of query parameter `name` (not percent-decoded).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .split('&')
            .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }

    /// True when the connection stays open after the response: HTTP/1.1 unless
    /// `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`.
    pub fn keep_alive(&self) -> bool {
        if self.minor_version == 0 {
            self.header_has_token("connection", "keep-alive")
        } else {
            !self.header_has_token("connection", "close")
        }
    }
}

/// A complete head found at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The request, with an empty body.
    pub request: Request,
    /// Bytes of the head, blank line included.
    pub head_len: usize,
    /// Bytes of body that follow (`Content-Length`, 0 when absent).
    pub body_len: usize,
}

/// The parts of a request head a check needs, from an owned [`Request`] or borrowed from the
/// bytes ([`RawHead`]).
pub trait HeadView {
    /// The method.
    fn method(&self) -> &str;
    /// The path, without the query.
    fn path(&self) -> &str;
    /// 1 for HTTP/1.1, 0 for HTTP/1.0.
    fn minor_version(&self) -> u8;
    /// The first header field named `name` (lower-case), trimmed.
    fn header(&self, name: &str) -> Option<&str>;
    /// Calls `f` on the value of each header field named `name` (lower-case), in order, until it
    /// returns true; true when it did.
    fn any_value(&self, name: &str, f: &mut dyn FnMut(&str) -> bool) -> bool;
    /// True when header `name` lists `token` (comma-separated, case-insensitive).
    fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.any_value(name, &mut |v| {
            v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token))
        })
    }
    /// True when header `name` lists `token` exactly (comma-separated, case-sensitive: a
    /// WebSocket subprotocol, which a browser compares byte for byte with what it offered).
    fn header_lists_exactly(&self, name: &str, token: &str) -> bool {
        self.any_value(name, &mut |v| v.split(',').any(|t| t.trim() == token))
    }
    /// How many header fields are named `name` (lower-case).
    fn header_count(&self, name: &str) -> usize {
        let mut n = 0;
        self.any_value(name, &mut |_| {
            n += 1;
            false
        });
        n
    }
}

impl HeadView for Request {
    fn method(&self) -> &str {
        &self.method
    }
    fn path(&self) -> &str {
        &self.path
    }
    fn minor_version(&self) -> u8 {
        self.minor_version
    }
    fn header(&self, name: &str) -> Option<&str> {
        Request::header(self, name)
    }
    fn any_value(&self, name: &str, f: &mut dyn FnMut(&str) -> bool) -> bool {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .any(|(_, v)| f(v))
    }
}

/// A request head borrowed from the bytes it was parsed from: no allocation. Header values were
/// checked to be UTF-8.
#[derive(Debug)]
pub struct RawHead<'b> {
    method: &'b str,
    path: &'b str,
    query: &'b str,
    minor_version: u8,
    headers: &'b [httparse::Header<'b>],
}

impl RawHead<'_> {
    /// The owned request (body empty).
    pub fn to_request(&self) -> Request {
        Request {
            method: self.method.to_string(),
            path: self.path.to_string(),
            query: self.query.to_string(),
            minor_version: self.minor_version,
            headers: self
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        std::str::from_utf8(h.value)
                            .unwrap_or_default()
                            .trim()
                            .to_string(),
                    )
                })
                .collect(),
            body: Vec::new(),
        }
    }
}

impl HeadView for RawHead<'_> {
    fn method(&self) -> &str {
        self.method
    }
    fn path(&self) -> &str {
        self.path
    }
    fn minor_version(&self) -> u8 {
        self.minor_version
    }
    fn header(&self, name: &str) -> Option<&str> {
        // Values were checked to be UTF-8 when the head was parsed.
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| std::str::from_utf8(h.value).unwrap_or_default().trim())
    }
    fn any_value(&self, name: &str, f: &mut dyn FnMut(&str) -> bool) -> bool {
        // Values were checked to be UTF-8 when the head was parsed.
        self.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .any(|h| f(std::str::from_utf8(h.value).unwrap_or_default()))
    }
}

/// Parses the request head at the start of `buf`. `Ok(None)`: not complete yet (and not over the
/// limits so far). Bytes after the head are not looked at.
///
/// Cost: one pass of `httparse` over the head, then one allocation per header field kept.
pub fn parse_head(buf: &[u8], limits: &HttpLimits) -> Result<Option<Head>, HttpError> {
    Ok(
        with_head(buf, limits, |raw| raw.to_request())?.map(|(request, head_len, body_len)| Head {
            request,
            head_len,
            body_len,
        }),
    )
}

/// Parses the request head at the start of `buf` and calls `f` with it, borrowed (no
/// allocation). Returns `f`'s result with the head's length and the body's
/// (`Content-Length`); `Ok(None)` when the head is not complete yet. The same checks and errors
/// as [`parse_head`].
pub fn with_head<R>(
    buf: &[u8],
    limits: &HttpLimits,
    f: impl FnOnce(&RawHead<'_>) -> R,
) -> Result<Option<(R, usize, usize)>, HttpError> {
    let max_headers = limits.max_headers.clamp(1, MAX_HEADERS_CAP);
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS_CAP];
    let mut req = httparse::Request::new(&mut fields[..max_headers]);
    let window = &buf[..buf.len().min(limits.max_head)];
    let head_len = match req.parse(window) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() >= limits.max_head {
                Err(HttpError::HeadTooLarge(limits.max_head))
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyHeaders(max_headers)),
        // A request line that does not even start with a letter is something else (a frame
        // header, a TLS handshake): say where it belongs.
        Err(httparse::Error::Token) if window.first().is_some_and(|b| !b.is_ascii_alphabetic()) => {
            return Err(HttpError::Malformed(NOT_HTTP))
        }
        Err(e) => return Err(HttpError::Malformed(parse_error_text(e))),
    };
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HttpError::Malformed("request line"));
    };
    if !target.starts_with('/') {
        return Err(HttpError::Malformed(
            "request target must be an absolute path",
        ));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut content_length: Option<u64> = None;
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value)
            .map_err(|_| HttpError::Malformed("header value is not UTF-8"))?
            .trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            // Digits past 64 bits are a length all the same: too large (413), not malformed.
            let digits = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
            let n: u64 = match super::parse_digits(value) {
                Some(n) => n,
                None if digits => u64::MAX,
                None => return Err(HttpError::BadContentLength),
            };
            if content_length.is_some_and(|c| c != n) {
                return Err(HttpError::BadContentLength);
            }
            content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpError::TransferEncoding);
        }
    }
    let body_len = content_length.unwrap_or(0);
    if body_len > limits.max_body as u64 {
        return Err(HttpError::BodyTooLarge {
            len: body_len,
            max: limits.max_body,
        });
    }
    let raw = RawHead {
        method,
        path,
        query,
        minor_version: minor,
        headers: req.headers,
    };
    Ok(Some((f(&raw), head_len, body_len as usize)))
}

/// The reason for bytes that are not an HTTP request at all.
pub const NOT_HTTP: &str = "not an HTTP request: Lattice frames go to the binary listener (net.listen), or one per binary message over the WebSocket path; TLS goes to tls.http_listen";

fn parse_error_text(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token in the request line",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "not HTTP/1.0 or HTTP/1.1",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> HttpLimits {
        HttpLimits {
            max_head: 256,
            max_headers: 4,
            max_body: 100,
            head_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn parses_a_head_and_its_fields() {
        let buf = b"POST /rpc/Ping?x=1&y HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nConnection: keep-alive, Upgrade\r\n\r\nabcNEXT";
        let h = parse_head(buf, &limits()).unwrap().unwrap();
        assert_eq!(h.request.method, "POST");
        assert_eq!(h.request.path, "/rpc/Ping");
        assert_eq!(h.request.query_param("x"), Some("1"));
        assert_eq!(h.request.query_param("y"), Some(""));
        assert_eq!(h.request.header("host"), Some("a"));
        assert!(h.request.header_has_token("connection", "upgrade"));
        assert!(h.request.keep_alive());
        assert_eq!(h.body_len, 3);
        assert_eq!(&buf[h.head_len..h.head_len + 3], b"abc");
    }

    #[test]
    fn bytes_that_are_no_request_line_say_where_they_belong() {
        // A Lattice frame (length, opcode, flags, request id) and a TLS ClientHello's first bytes.
        let frame = [30u8, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0x0a, 0x0b];
        let tls = [0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03];
        for bytes in [&frame[..], &tls[..]] {
            let e = parse_head(bytes, &limits()).unwrap_err();
            assert_eq!(e, HttpError::Malformed(NOT_HTTP));
            assert_eq!(e.status(), 400);
        }
        // A request line that is only wrong keeps the parser's reason.
        assert_eq!(
            parse_head(b"GE(T / HTTP/1.1\r\n\r\n", &limits()),
            Err(HttpError::Malformed("invalid token in the request line"))
        );
    }

    #[test]
    fn partial_heads_wait_until_the_limit() {
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nHo", &limits()), Ok(None));
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(256, b'a');
        assert_eq!(
            parse_head(&big, &limits()),
            Err(HttpError::HeadTooLarge(256))
        );
        assert_eq!(HttpError::HeadTooLarge(1).status(), 431);
    }

    #[test]
    fn every_bad_head_has_its_status() {
        let cases: &[(&[u8], u16)] = &[
            (b"GARBAGE\r\n\r\n", 400),
            (b"GET / HTTP/2.0\r\n\r\n", 400),
            (b"GET http://x/ HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nno colon\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                400,
            ),
            (b"POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n", 413),
            // Digits past 64 bits: a length too large, not a malformed one.
            (
                b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551616\r\n\r\n",
                413,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                413,
            ),
            (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                411,
            ),
            (
                b"GET / HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\nd: 4\r\ne: 5\r\n\r\n",
                431,
            ),
            (b"GET / HTTP/1.1\r\nX: \xff\r\n\r\n", 400),
        ];
        for (buf, status) in cases {
            let e = parse_head(buf, &limits()).expect_err(&String::from_utf8_lossy(buf));
            assert_eq!(
                e.status(),
                *status,
                "{e} for {:?}",
                String::from_utf8_lossy(buf)
            );
        }
        assert_eq!(HttpError::HeadTimeout(Duration::ZERO).status(), 408);
        let huge = b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n";
        assert_eq!(
            parse_head(huge, &limits()).unwrap_err().to_string(),
            "request body of 2^64 or more bytes is larger than 100"
        );
    }

    #[test]
    fn keep_alive_rules() {
        let h = |s: &[u8]| parse_head(s, &limits()).unwrap().unwrap().request;
        assert!(!h(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive());
        assert!(!h(b"GET / HTTP/1.0\r\n\r\n").keep_alive());
        assert!(h(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive());
    }
}

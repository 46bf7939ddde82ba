//! HTTP/1.1 from the client side, sans-IO: a request encoder and a response parser with limits,
//! for the few places where a node talks HTTP to another service (the etcd JSON gateway).
//!
//! The parser takes bytes as they arrive ([`ResponseParser::feed`]) and yields one complete
//! response ([`ResponseParser::poll`]): the status, the header fields and the whole body, framed
//! by `Content-Length`, by `Transfer-Encoding: chunked` (extensions and trailers skipped), or by
//! the end of the stream ([`ResponseParser::finish`]). Every size is bounded by
//! [`ClientLimits`]; anything malformed, oversized or cut short is a [`ClientError`], never a
//! panic. It never reads a socket or a clock: the caller owns the connection and its timeouts.

use std::fmt::Write as _;

use thiserror::Error;

/// Bounds of one response. Cheap to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    /// Largest response head (status line and header fields), in bytes.
    pub max_head: usize,
    /// Most header fields (at most [`super::request::MAX_HEADERS_CAP`]).
    pub max_headers: usize,
    /// Largest decoded body, in bytes (chunk framing not counted).
    pub max_body: usize,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            max_head: 8192,
            max_headers: 32,
            max_body: 4 << 20,
        }
    }
}

/// Why a response could not be read. After any of them the connection's position in the stream
/// is unknown: close it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ClientError {
    /// The head passed `max_head` bytes.
    #[error("response head larger than {0} bytes")]
    HeadTooLarge(usize),
    /// More header fields than `max_headers`.
    #[error("more than {0} header fields in the response")]
    TooManyHeaders(usize),
    /// Not an HTTP/1.x response.
    #[error("malformed response: {0}")]
    Malformed(&'static str),
    /// The body is larger than `max_body`.
    #[error("response body larger than {0} bytes")]
    BodyTooLarge(usize),
    /// The stream ended before the response was complete.
    #[error("connection closed in the middle of the response ({0})")]
    Truncated(&'static str),
}

/// One complete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientResponse {
    /// Status code.
    pub status: u16,
    /// Header fields as sent (names in their original case).
    pub headers: Vec<(String, String)>,
    /// The decoded body.
    pub body: Vec<u8>,
    /// Whether the server keeps the connection open after this response (HTTP/1.1 without
    /// `Connection: close`, and a body not framed by the end of the stream).
    pub keep_alive: bool,
}

impl ClientResponse {
    /// The first header field named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Appends a request to `out`: `method path HTTP/1.1`, `Host`, and, with a body,
/// `Content-Type` and `Content-Length`. Cost: one formatted head and one copy of the body.
pub fn encode_request(
    method: &str,
    host: &str,
    path: &str,
    body: Option<(&str, &[u8])>,
    out: &mut Vec<u8>,
) {
    let mut head = String::with_capacity(96);
    let _ = write!(head, "{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    if let Some((ctype, b)) = body {
        let _ = write!(
            head,
            "Content-Type: {ctype}\r\nContent-Length: {}\r\n",
            b.len()
        );
    }
    head.push_str("\r\n");
    out.extend_from_slice(head.as_bytes());
    if let Some((_, b)) = body {
        out.extend_from_slice(b);
    }
}

/// A part of a response read as a stream ([`ResponseParser::poll_stream`]): for a body that
/// arrives over a long time (etcd's watch: one JSON message per chunk, never ending).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamItem {
    /// The head: status and header fields.
    Head {
        /// Status code.
        status: u16,
        /// Header fields as sent.
        headers: Vec<(String, String)>,
    },
    /// Body bytes decoded since the last item (chunk framing removed), at most `max_body`.
    Data(Vec<u8>),
    /// The body is complete; the next bytes are the next response.
    End,
}

#[derive(Debug)]
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

#[derive(Debug)]
enum State {
    Head,
    Body {
        status: u16,
        headers: Vec<(String, String)>,
        keep_alive: bool,
        framing: Framing,
        body: Vec<u8>,
        // Chunked: bytes left in the current chunk's data (then its CRLF), or `None` between
        // chunks (a size line is next).
        chunk_left: Option<usize>,
        in_trailers: bool,
    },
}

/// Reads one response at a time from a byte stream (see the module docs).
#[derive(Debug)]
pub struct ResponseParser {
    limits: ClientLimits,
    buf: Vec<u8>,
    state: State,
    head_request: bool,
    end_pending: bool,
}

impl ResponseParser {
    /// A parser for responses within `limits`.
    pub fn new(limits: ClientLimits) -> ResponseParser {
        ResponseParser {
            limits,
            buf: Vec::new(),
            state: State::Head,
            head_request: false,
            end_pending: false,
        }
    }

    /// Tells the parser the next response answers a `HEAD` request (no body whatever the head
    /// says).
    pub fn expect_head_response(&mut self) {
        self.head_request = true;
    }

    /// Appends received bytes.
    pub fn feed(&mut self, input: &[u8]) {
        self.buf.extend_from_slice(input);
    }

    /// Bytes received and not yet consumed by a complete response.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete response, `Ok(None)` when more bytes are needed. Interim `1xx`
    /// responses are skipped.
    pub fn poll(&mut self) -> Result<Option<ClientResponse>, ClientError> {
        loop {
            match &mut self.state {
                State::Head => {
                    let Some(head) = self.parse_head()? else {
                        return Ok(None);
                    };
                    if head.is_none() {
                        // A 1xx: look for the real response.
                        continue;
                    }
                }
                State::Body { .. } => return self.parse_body(),
            }
        }
    }

    /// The next part of a response read as a stream: its head, then body bytes as they are
    /// decoded, then its end; `Ok(None)` when more bytes are needed. Limits apply as in
    /// [`ResponseParser::poll`], except that `max_body` bounds each [`StreamItem::Data`] rather
    /// than the whole body. Do not mix with [`ResponseParser::poll`] within one response.
    pub fn poll_stream(&mut self) -> Result<Option<StreamItem>, ClientError> {
        if self.end_pending {
            self.end_pending = false;
            return Ok(Some(StreamItem::End));
        }
        loop {
            match &mut self.state {
                State::Head => {
                    let Some(head) = self.parse_head()? else {
                        return Ok(None);
                    };
                    if head.is_none() {
                        continue;
                    }
                    if let State::Body {
                        status, headers, ..
                    } = &self.state
                    {
                        return Ok(Some(StreamItem::Head {
                            status: *status,
                            headers: headers.clone(),
                        }));
                    }
                }
                State::Body { .. } => {
                    return match self.parse_body()? {
                        Some(done) if done.body.is_empty() => Ok(Some(StreamItem::End)),
                        Some(done) => {
                            self.end_pending = true;
                            Ok(Some(StreamItem::Data(done.body)))
                        }
                        None => match &mut self.state {
                            State::Body { body, .. } if !body.is_empty() => {
                                Ok(Some(StreamItem::Data(std::mem::take(body))))
                            }
                            _ => Ok(None),
                        },
                    };
                }
            }
        }
    }

    /// The stream ended: the response framed by the end of the stream, or an error when one was
    /// in progress; `Ok(None)` when nothing was pending.
    pub fn finish(&mut self) -> Result<Option<ClientResponse>, ClientError> {
        match std::mem::replace(&mut self.state, State::Head) {
            State::Head if self.buf.is_empty() => Ok(None),
            State::Head => Err(ClientError::Truncated("in the head")),
            State::Body {
                status,
                headers,
                framing: Framing::UntilClose,
                mut body,
                ..
            } => {
                append_bounded(&mut body, &mut self.buf, self.limits.max_body)?;
                Ok(Some(ClientResponse {
                    status,
                    headers,
                    body,
                    keep_alive: false,
                }))
            }
            State::Body { .. } => Err(ClientError::Truncated("in the body")),
        }
    }

    /// Parses a head. `Ok(None)`: incomplete; `Ok(Some(None))`: a 1xx was consumed;
    /// `Ok(Some(Some(())))`: the state is now `Body`.
    #[allow(clippy::option_option)]
    fn parse_head(&mut self) -> Result<Option<Option<()>>, ClientError> {
        let max = self.limits.max_headers.min(super::request::MAX_HEADERS_CAP);
        let mut fields = [httparse::EMPTY_HEADER; super::request::MAX_HEADERS_CAP];
        let mut resp = httparse::Response::new(&mut fields[..max]);
        let n = match resp.parse(&self.buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                if self.buf.len() > self.limits.max_head {
                    return Err(ClientError::HeadTooLarge(self.limits.max_head));
                }
                return Ok(None);
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(ClientError::TooManyHeaders(max));
            }
            Err(_) => return Err(ClientError::Malformed("bad status line or header field")),
        };
        if n > self.limits.max_head {
            return Err(ClientError::HeadTooLarge(self.limits.max_head));
        }
        let status = resp.code.ok_or(ClientError::Malformed("no status code"))?;
        let http11 = resp.version == Some(1);
        let mut headers = Vec::with_capacity(resp.headers.len());
        let mut length: Option<usize> = None;
        let mut chunked = false;
        let mut close = !http11;
        for h in resp.headers.iter() {
            let value = std::str::from_utf8(h.value)
                .map_err(|_| ClientError::Malformed("header value is not UTF-8"))?
                .trim()
                .to_string();
            if h.name.eq_ignore_ascii_case("content-length") {
                let v: usize = super::parse_digits(&value)
                    .ok_or(ClientError::Malformed("bad Content-Length"))?;
                if length.is_some_and(|l| l != v) {
                    return Err(ClientError::Malformed("conflicting Content-Length"));
                }
                length = Some(v);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                let last = value.rsplit(',').next().unwrap_or("").trim();
                if !last.eq_ignore_ascii_case("chunked") {
                    return Err(ClientError::Malformed("unsupported Transfer-Encoding"));
                }
                chunked = true;
            } else if h.name.eq_ignore_ascii_case("connection") {
                for t in value.split(',') {
                    let t = t.trim();
                    if t.eq_ignore_ascii_case("close") {
                        close = true;
                    } else if t.eq_ignore_ascii_case("keep-alive") {
                        close = false;
                    }
                }
            }
            headers.push((h.name.to_string(), value));
        }
        self.buf.drain(..n);
        if (100..200).contains(&status) && status != 101 {
            return Ok(Some(None));
        }
        let bodiless = self.head_request || status == 204 || status == 304 || status == 101;
        self.head_request = false;
        let framing = if bodiless {
            Framing::Length(0)
        } else if chunked {
            Framing::Chunked
        } else if let Some(l) = length {
            if l > self.limits.max_body {
                return Err(ClientError::BodyTooLarge(self.limits.max_body));
            }
            Framing::Length(l)
        } else {
            Framing::UntilClose
        };
        let keep_alive = !close && !matches!(framing, Framing::UntilClose);
        self.state = State::Body {
            status,
            headers,
            keep_alive,
            framing,
            body: Vec::new(),
            chunk_left: None,
            in_trailers: false,
        };
        Ok(Some(Some(())))
    }

    fn parse_body(&mut self) -> Result<Option<ClientResponse>, ClientError> {
        let max_body = self.limits.max_body;
        let State::Body {
            framing,
            body,
            chunk_left,
            in_trailers,
            ..
        } = &mut self.state
        else {
            return Ok(None);
        };
        match framing {
            Framing::UntilClose => {
                append_bounded(body, &mut self.buf, max_body)?;
                return Ok(None);
            }
            Framing::Length(l) => {
                if self.buf.len() < *l {
                    return Ok(None);
                }
                body.extend(self.buf.drain(..*l));
            }
            Framing::Chunked => loop {
                if *in_trailers {
                    // Trailer fields until an empty line; skipped.
                    let Some(end) = find_crlf(&self.buf) else {
                        if self.buf.len() > self.limits.max_head {
                            return Err(ClientError::HeadTooLarge(self.limits.max_head));
                        }
                        return Ok(None);
                    };
                    self.buf.drain(..end + 2);
                    if end == 0 {
                        break;
                    }
                    continue;
                }
                match chunk_left {
                    None => {
                        let Some(end) = find_crlf(&self.buf) else {
                            if self.buf.len() > 1024 {
                                return Err(ClientError::Malformed("chunk size line too long"));
                            }
                            return Ok(None);
                        };
                        let line = std::str::from_utf8(&self.buf[..end])
                            .map_err(|_| ClientError::Malformed("bad chunk size"))?;
                        let hex = line.split(';').next().unwrap_or("").trim();
                        if hex.is_empty() || hex.len() > 16 {
                            return Err(ClientError::Malformed("bad chunk size"));
                        }
                        let size = usize::from_str_radix(hex, 16)
                            .map_err(|_| ClientError::Malformed("bad chunk size"))?;
                        self.buf.drain(..end + 2);
                        if size == 0 {
                            *in_trailers = true;
                            continue;
                        }
                        if body.len().saturating_add(size) > max_body {
                            return Err(ClientError::BodyTooLarge(max_body));
                        }
                        *chunk_left = Some(size);
                    }
                    Some(left) => {
                        if self.buf.len() < *left + 2 {
                            return Ok(None);
                        }
                        if &self.buf[*left..*left + 2] != b"\r\n" {
                            return Err(ClientError::Malformed("chunk not followed by CRLF"));
                        }
                        body.extend_from_slice(&self.buf[..*left]);
                        self.buf.drain(..*left + 2);
                        *chunk_left = None;
                    }
                }
            },
        }
        let State::Body {
            status,
            headers,
            keep_alive,
            body,
            ..
        } = std::mem::replace(&mut self.state, State::Head)
        else {
            return Ok(None);
        };
        Ok(Some(ClientResponse {
            status,
            headers,
            body,
            keep_alive,
        }))
    }
}

/// Moves all of `more` to the end of a body framed by the end of the stream, unless the body
/// would pass `max_body` (then nothing moves).
fn append_bounded(
    body: &mut Vec<u8>,
    more: &mut Vec<u8>,
    max_body: usize,
) -> Result<(), ClientError> {
    if body.len() + more.len() > max_body {
        return Err(ClientError::BodyTooLarge(max_body));
    }
    body.append(more);
    Ok(())
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> Result<Option<ClientResponse>, ClientError> {
        let mut p = ResponseParser::new(ClientLimits::default());
        p.feed(input);
        p.poll()
    }

    #[test]
    fn content_length_body_and_keep_alive() {
        let r = parse_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"{}");
        assert!(r.keep_alive);
        assert_eq!(r.header("content-type"), Some("application/json"));
    }

    #[test]
    fn chunked_body_fed_byte_by_byte_with_extensions_and_trailers() {
        let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nWiki\r\n5\r\npedia\r\n0\r\nX-T: 1\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        let mut p = ResponseParser::new(ClientLimits::default());
        let mut got = Vec::new();
        for b in wire {
            p.feed(&[*b]);
            while let Some(r) = p.poll().unwrap() {
                got.push(r);
            }
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].body, b"Wikipedia");
        assert!(got[0].keep_alive);
        assert_eq!(got[1].status, 204);
        assert!(got[1].body.is_empty());
        assert_eq!(p.buffered(), 0);
    }

    #[test]
    fn body_until_close_and_truncation() {
        let mut p = ResponseParser::new(ClientLimits::default());
        p.feed(b"HTTP/1.0 200 OK\r\n\r\nhello");
        assert_eq!(p.poll().unwrap(), None);
        let r = p.finish().unwrap().unwrap();
        assert_eq!(r.body, b"hello");
        assert!(!r.keep_alive);

        let mut p = ResponseParser::new(ClientLimits::default());
        p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhel");
        assert_eq!(p.poll().unwrap(), None);
        assert_eq!(
            p.finish().unwrap_err(),
            ClientError::Truncated("in the body")
        );

        let mut p = ResponseParser::new(ClientLimits::default());
        p.feed(b"HTTP/1.1 200 O");
        assert_eq!(p.poll().unwrap(), None);
        assert_eq!(
            p.finish().unwrap_err(),
            ClientError::Truncated("in the head")
        );
        let mut p = ResponseParser::new(ClientLimits::default());
        assert_eq!(p.finish().unwrap(), None);
    }

    #[test]
    fn garbage_and_oversize_are_errors() {
        assert!(matches!(
            parse_all(b"SSH-2.0-OpenSSH_9.2\r\n\r\n"),
            Err(ClientError::Malformed(_))
        ));
        assert!(matches!(
            parse_all(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"),
            Err(ClientError::Malformed(_))
        ));
        assert!(matches!(
            parse_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(ClientError::Malformed(_))
        ));
        assert!(matches!(
            parse_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Err(ClientError::Malformed(_))
        ));
        assert!(matches!(
            parse_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
            Err(ClientError::Malformed("bad chunk size"))
        ));
        assert!(matches!(
            parse_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX\r\n"),
            Err(ClientError::Malformed(_))
        ));
        let limits = ClientLimits {
            max_head: 64,
            max_headers: 4,
            max_body: 8,
        };
        let mut p = ResponseParser::new(limits);
        p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n");
        assert_eq!(p.poll().unwrap_err(), ClientError::BodyTooLarge(8));
        let mut p = ResponseParser::new(limits);
        p.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n5\r\n");
        assert_eq!(p.poll().unwrap_err(), ClientError::BodyTooLarge(8));
        // A body framed by the end of the stream: bounded as it arrives, and at the end.
        let mut p = ResponseParser::new(limits);
        p.feed(b"HTTP/1.1 200 OK\r\n\r\n123456789");
        assert_eq!(p.poll().unwrap_err(), ClientError::BodyTooLarge(8));
        let mut p = ResponseParser::new(limits);
        p.feed(b"HTTP/1.1 200 OK\r\n\r\n12345");
        assert_eq!(p.poll().unwrap(), None);
        p.feed(b"6789");
        assert_eq!(p.finish().unwrap_err(), ClientError::BodyTooLarge(8));
        let mut p = ResponseParser::new(limits);
        p.feed(b"HTTP/1.1 200 OK\r\n\r\n12345");
        assert_eq!(p.poll().unwrap(), None);
        p.feed(b"678");
        assert_eq!(p.finish().unwrap().unwrap().body, b"12345678");
        let mut p = ResponseParser::new(limits);
        p.feed(&[b'x'; 100]);
        assert!(p.poll().is_err());
        let mut p = ResponseParser::new(limits);
        p.feed(b"HTTP/1.1 200 OK\r\na: 1\r\nb: 1\r\nc: 1\r\nd: 1\r\ne: 1\r\n\r\n");
        assert_eq!(p.poll().unwrap_err(), ClientError::TooManyHeaders(4));
    }

    #[test]
    fn a_streamed_chunked_body_comes_out_chunk_by_chunk_within_the_bound() {
        let limits = ClientLimits {
            max_body: 16,
            ..ClientLimits::default()
        };
        let mut p = ResponseParser::new(limits);
        assert_eq!(p.poll_stream().unwrap(), None);
        p.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(matches!(
            p.poll_stream().unwrap(),
            Some(StreamItem::Head { status: 200, .. })
        ));
        assert_eq!(p.poll_stream().unwrap(), None);
        p.feed(b"8\r\n{\"a\":1");
        assert_eq!(p.poll_stream().unwrap(), None, "a chunk comes out whole");
        p.feed(b"}\n\r\n8\r\n{\"b\":2}\n\r\n");
        // Both chunks decoded by now: one item, no framing.
        assert_eq!(
            p.poll_stream().unwrap(),
            Some(StreamItem::Data(b"{\"a\":1}\n{\"b\":2}\n".to_vec()))
        );
        assert_eq!(p.poll_stream().unwrap(), None);
        // A chunk larger than the bound is an error, not a buffer that grows.
        p.feed(b"11\r\n");
        assert_eq!(p.poll_stream().unwrap_err(), ClientError::BodyTooLarge(16));

        let mut p = ResponseParser::new(ClientLimits::default());
        p.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n");
        assert!(matches!(
            p.poll_stream().unwrap(),
            Some(StreamItem::Head { .. })
        ));
        assert_eq!(
            p.poll_stream().unwrap(),
            Some(StreamItem::Data(b"ok".to_vec()))
        );
        assert_eq!(p.poll_stream().unwrap(), Some(StreamItem::End));
        assert_eq!(p.poll_stream().unwrap(), None);
    }

    #[test]
    fn interim_responses_are_skipped_and_close_is_honoured() {
        let r = parse_all(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 500 Internal\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx",
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.status, 500);
        assert!(!r.keep_alive);
    }

    #[test]
    fn encoded_request_round_trips_through_the_server_parser() {
        let mut out = Vec::new();
        encode_request(
            "POST",
            "127.0.0.1:2379",
            "/v3/kv/range",
            Some(("application/json", b"{\"key\":\"YQ==\"}")),
            &mut out,
        );
        let head = super::super::parse_head(&out, &super::super::HttpLimits::default())
            .unwrap()
            .unwrap();
        let req = head.request;
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, "/v3/kv/range");
        assert_eq!(req.header("content-length"), Some("14"));
        assert_eq!(&out[out.len() - 14..], b"{\"key\":\"YQ==\"}");
    }
}

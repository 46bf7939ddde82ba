//! One HTTP/1.1 server connection, sans-IO: bytes in, requests out, responses in, bytes out.
//!
//! Keep-alive and pipelining: requests are handed out one at a time, in order; the next one is
//! parsed only once the current one is answered ([`HttpConn::respond`]), so responses leave in
//! request order. While a request waits for its response the connection wants no input
//! ([`HttpConn::wants_input`]): the runtime stops reading and TCP pushes back, which bounds what a
//! pipelining client can make the server hold to one read's worth of bytes past the current
//! request.
//!
//! Memory: the connection keeps the bytes of the request being received (head ≤ `max_head`, body
//! ≤ `max_body`) and any bytes pipelined behind it; the buffer is released whenever it drains.

use crate::time::MonoTime;

use super::request::{parse_head, HttpError, HttpLimits, Request};
use super::response::Response;

/// Where the connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a head; `since` is when its deadline started (the first byte, or the open).
    Head { since: Option<MonoTime> },
    /// A request was handed out; waiting for its response. `keep_alive` of that request;
    /// `head`: it was a `HEAD` (its response goes without the body).
    Responding { keep_alive: bool, head: bool },
    /// A response said `Connection: close` or an error was answered: nothing more is read.
    Done,
}

/// What [`HttpConn::next_request`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Nothing complete yet (or a request is still waiting for its response).
    Wait,
    /// A complete request; answer it with [`HttpConn::respond`].
    Request(Request),
    /// The input broke the protocol: the error response was appended to `out`; close once it is
    /// written.
    Failed(HttpError),
}

/// One HTTP/1.1 connection's state. See the module documentation.
#[derive(Debug)]
pub struct HttpConn {
    limits: HttpLimits,
    buf: Vec<u8>,
    state: State,
    /// `buf` holds bytes that [`HttpConn::next_request`] has not looked at since the last
    /// response (requests pipelined behind it).
    unlooked: bool,
}

impl HttpConn {
    /// A connection opened at `now`: its first head must be complete by `now + head_timeout`.
    pub fn new(limits: HttpLimits, now: MonoTime) -> HttpConn {
        HttpConn {
            limits,
            buf: Vec::new(),
            state: State::Head { since: Some(now) },
            unlooked: false,
        }
    }

    /// The limits.
    pub fn limits(&self) -> &HttpLimits {
        &self.limits
    }

    /// Takes bytes the peer sent at `now` (all of them; see [`HttpConn::wants_input`] for the
    /// bound).
    pub fn feed(&mut self, now: MonoTime, input: &[u8]) {
        if input.is_empty() || self.state == State::Done {
            return;
        }
        if let State::Head { since: None } = self.state {
            self.state = State::Head { since: Some(now) };
        }
        self.buf.extend_from_slice(input);
        self.unlooked = true;
    }

    /// False while a request waits for its response, or after the last response.
    pub fn wants_input(&self) -> bool {
        matches!(self.state, State::Head { .. })
    }

    /// True while a request handed out waits for its response.
    pub fn waiting_response(&self) -> bool {
        matches!(self.state, State::Responding { .. })
    }

    /// Bytes held (a partial request, or requests pipelined behind the current one).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// True when bytes are held that [`HttpConn::next_request`] has not looked at since the last
    /// response (pipelined requests), so the runtime should call it without new input.
    pub fn has_pending_input(&self) -> bool {
        self.unlooked && matches!(self.state, State::Head { .. }) && !self.buf.is_empty()
    }

    /// The next complete request, if any. On bad input the error response is appended to `out`
    /// and the connection is done.
    ///
    /// Cost: one head parse per call while a head is incomplete (a slow sender re-parses the
    /// prefix; the head is at most `max_head` bytes).
    pub fn next_request(&mut self, out: &mut Vec<u8>) -> Next {
        self.unlooked = false;
        if !matches!(self.state, State::Head { .. }) || self.buf.is_empty() {
            return Next::Wait;
        }
        let head = match parse_head(&self.buf, &self.limits) {
            Ok(Some(h)) => h,
            Ok(None) => return Next::Wait,
            Err(e) => return self.fail(e, out),
        };
        let total = head.head_len + head.body_len;
        if self.buf.len() < total {
            // The head is complete: its deadline no longer applies; the body is bounded by
            // max_body and the session's idle timeout.
            self.state = State::Head { since: None };
            return Next::Wait;
        }
        let mut request = head.request;
        request.body = self.buf[head.head_len..total].to_vec();
        self.buf.drain(..total);
        if self.buf.is_empty() {
            self.buf = Vec::new();
        }
        self.state = State::Responding {
            keep_alive: request.keep_alive(),
            head: request.method == "HEAD",
        };
        Next::Request(request)
    }

    /// Appends the response to the current request to `out`. Returns true when the connection
    /// stays open (keep-alive), false when it must close once `out` is written. A response with
    /// no request waiting (a bug in the caller) is refused and returns false.
    pub fn respond(&mut self, resp: &Response, out: &mut Vec<u8>) -> bool {
        let State::Responding { keep_alive, head } = self.state else {
            debug_assert!(false, "respond without a request");
            return false;
        };
        resp.encode_for(!keep_alive, head, out);
        self.unlooked = keep_alive && !self.buf.is_empty();
        self.state = if keep_alive {
            State::Head { since: None }
        } else {
            self.buf = Vec::new();
            State::Done
        };
        keep_alive
    }

    /// Answers the current request with `resp` and `Connection: close`, whatever the request
    /// asked: the connection ends after it (a refused WebSocket upgrade).
    pub fn respond_and_close(&mut self, resp: &Response, out: &mut Vec<u8>) {
        let head = matches!(self.state, State::Responding { head: true, .. });
        debug_assert!(matches!(self.state, State::Responding { .. }));
        resp.encode_for(true, head, out);
        self.unlooked = false;
        self.buf = Vec::new();
        self.state = State::Done;
    }

    /// Takes the connection out of HTTP (a WebSocket upgrade was answered): returns the bytes the
    /// peer sent after the upgrade request.
    pub fn take_rest(&mut self) -> Vec<u8> {
        self.state = State::Done;
        std::mem::take(&mut self.buf)
    }

    /// When the current head must be complete, if a head is being read.
    pub fn poll_timeout(&self) -> Option<MonoTime> {
        match self.state {
            State::Head { since: Some(t) } => Some(t.saturating_add(self.limits.head_timeout)),
            _ => None,
        }
    }

    /// Fires the head deadline: past it, `408` is appended to `out` and the connection is done
    /// (returns the error).
    pub fn handle_timeout(&mut self, now: MonoTime, out: &mut Vec<u8>) -> Option<HttpError> {
        match self.poll_timeout() {
            Some(d) if now >= d => {
                match self.fail(HttpError::HeadTimeout(self.limits.head_timeout), out) {
                    Next::Failed(e) => Some(e),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    fn fail(&mut self, e: HttpError, out: &mut Vec<u8>) -> Next {
        Response::text(e.status(), format!("{e}\n")).encode(true, out);
        self.state = State::Done;
        self.buf = Vec::new();
        Next::Failed(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const S: u64 = 1_000_000_000;

    fn conn() -> HttpConn {
        HttpConn::new(
            HttpLimits {
                max_head: 512,
                max_headers: 8,
                max_body: 64,
                head_timeout: Duration::from_secs(5),
            },
            MonoTime(0),
        )
    }

    fn req(c: &mut HttpConn) -> Request {
        match c.next_request(&mut Vec::new()) {
            Next::Request(r) => r,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    #[test]
    fn pipelined_requests_come_one_at_a_time_in_order() {
        let mut c = conn();
        c.feed(
            MonoTime(1),
            b"GET /a HTTP/1.1\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 2\r\n\r\nhiGET /c HTTP/1.1\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(req(&mut c).path, "/a");
        assert!(!c.wants_input());
        assert_eq!(
            c.next_request(&mut Vec::new()),
            Next::Wait,
            "waits for the response"
        );
        let mut out = Vec::new();
        assert!(c.respond(&Response::text(200, "a"), &mut out));
        assert!(c.has_pending_input());
        let b = req(&mut c);
        assert_eq!((b.path.as_str(), &b.body[..]), ("/b", &b"hi"[..]));
        assert!(c.respond(&Response::text(200, "b"), &mut out));
        assert_eq!(req(&mut c).path, "/c");
        assert!(
            !c.respond(&Response::text(200, "c"), &mut out),
            "Connection: close"
        );
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 3);
        assert!(text.ends_with("Connection: close\r\n\r\nc"));
        assert!(!c.wants_input());
    }

    #[test]
    fn bodies_split_across_reads_are_assembled() {
        let mut c = conn();
        c.feed(
            MonoTime(1),
            b"POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nab",
        );
        assert_eq!(c.next_request(&mut Vec::new()), Next::Wait);
        assert_eq!(
            c.poll_timeout(),
            None,
            "the head is complete: no head deadline"
        );
        c.feed(MonoTime(2), b"cde");
        assert_eq!(req(&mut c).body, b"abcde");
        assert_eq!(c.buffered(), 0);
    }

    #[test]
    fn slow_heads_time_out_with_408() {
        let mut c = conn();
        assert_eq!(c.poll_timeout(), Some(MonoTime(5 * S)), "from the open");
        c.feed(MonoTime(S), b"GET / HT");
        assert_eq!(c.next_request(&mut Vec::new()), Next::Wait);
        let mut out = Vec::new();
        assert_eq!(c.handle_timeout(MonoTime(5 * S - 1), &mut out), None);
        assert!(matches!(
            c.handle_timeout(MonoTime(5 * S), &mut out),
            Some(HttpError::HeadTimeout(_))
        ));
        assert!(out.starts_with(b"HTTP/1.1 408 Request Timeout\r\n"));
        assert!(!c.wants_input());

        // After a keep-alive response the deadline starts again at the next byte.
        let mut c = conn();
        c.feed(MonoTime(1), b"GET / HTTP/1.1\r\n\r\n");
        req(&mut c);
        c.respond(&Response::text(200, ""), &mut Vec::new());
        assert_eq!(c.poll_timeout(), None);
        c.feed(MonoTime(7 * S), b"G");
        assert_eq!(c.poll_timeout(), Some(MonoTime(12 * S)));
    }

    #[test]
    fn bad_input_answers_its_status_and_stops() {
        let mut c = conn();
        c.feed(
            MonoTime(1),
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        );
        let mut out = Vec::new();
        assert_eq!(
            c.next_request(&mut out),
            Next::Failed(HttpError::TransferEncoding)
        );
        assert!(out.starts_with(b"HTTP/1.1 411 Length Required\r\n"));
        c.feed(MonoTime(2), b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(
            c.next_request(&mut out),
            Next::Wait,
            "done: nothing more is read"
        );
        assert_eq!(c.buffered(), 0);
    }
}

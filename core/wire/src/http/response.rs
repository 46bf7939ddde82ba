//! HTTP/1.1 responses: a value the application builds, and its encoding.

use std::fmt::Write as _;

/// A response. The encoder adds `Content-Length` and, when the connection closes after it,
/// `Connection: close`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header fields besides `Content-Length` and `Connection` (e.g. `Content-Type`).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// A response with `status`, a `Content-Type` and a body.
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: body.into(),
        }
    }

    /// `text/plain; charset=utf-8` with `status`.
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response::new(status, "text/plain; charset=utf-8", body.into())
    }

    /// Adds a header field.
    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Appends the encoded response to `out`; `close` adds `Connection: close` (or `, close` to a
    /// `Connection` field the response has). `204` and `304`
    /// carry no body and no `Content-Length` (RFC 9110 §8.6: in a 304 it would have to be the
    /// length of the 200's body); a body given to them is not sent.
    ///
    /// Cost: one formatted head (≈ 100 bytes plus the headers) and one copy of the body.
    pub fn encode(&self, close: bool, out: &mut Vec<u8>) {
        self.encode_for(close, false, out)
    }

    /// [`Response::encode`], for a `HEAD` request when `head`: the same head (its
    /// `Content-Length` that of the body a `GET` gets), without the body (RFC 9110 §9.3.2).
    pub fn encode_for(&self, close: bool, head_request: bool, out: &mut Vec<u8>) {
        let mut head = String::with_capacity(128);
        let bodiless = matches!(self.status, 204 | 304);
        let _ = write!(head, "HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        if !bodiless {
            let _ = write!(head, "Content-Length: {}\r\n", self.body.len());
        }
        let mut close = close;
        for (k, v) in &self.headers {
            if close && k.eq_ignore_ascii_case("connection") {
                // One Connection field naming both (`Upgrade, close` on a 426), not two.
                let _ = write!(head, "{k}: {v}, close\r\n");
                close = false;
            } else {
                let _ = write!(head, "{k}: {v}\r\n");
            }
        }
        if close {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        let body: &[u8] = if bodiless || head_request {
            &[]
        } else {
            &self.body
        };
        out.reserve(head.len() + body.len());
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(body);
    }
}

/// The reason phrase of a status code (RFC 9110 names; "Status" for codes it does not list).
pub fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_head_and_body() {
        let r = Response::text(404, "not found\n").with_header("X-A", "1");
        let mut out = Vec::new();
        r.encode(true, &mut out);
        let s = String::from_utf8(out.clone()).unwrap();
        assert_eq!(
            s,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\nContent-Type: text/plain; charset=utf-8\r\nX-A: 1\r\nConnection: close\r\n\r\nnot found\n"
        );
    }

    #[test]
    fn a_closing_response_with_its_own_connection_field_has_one() {
        let r = Response::text(426, "x\n").with_header("Connection", "Upgrade");
        let mut out = Vec::new();
        r.encode(true, &mut out);
        let s = String::from_utf8(out).unwrap();
        assert_eq!(s.matches("Connection:").count(), 1, "{s}");
        assert!(s.contains("\r\nConnection: Upgrade, close\r\n"), "{s}");
        let mut out = Vec::new();
        r.encode(false, &mut out);
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("\r\nConnection: Upgrade\r\n"));
    }

    #[test]
    fn not_modified_and_no_content_have_no_length_or_body() {
        for status in [204, 304] {
            let r = Response {
                status,
                headers: vec![("ETag".into(), "\"a\"".into())],
                body: b"ignored".to_vec(),
            };
            let mut out = Vec::new();
            r.encode(false, &mut out);
            let s = String::from_utf8(out).unwrap();
            assert_eq!(
                s,
                format!(
                    "HTTP/1.1 {status} {}\r\nETag: \"a\"\r\n\r\n",
                    reason(status)
                )
            );
        }
    }
}

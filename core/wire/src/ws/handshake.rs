//! The opening handshake (RFC 6455 section 4.2): checking an upgrade request and the `101`
//! answer.

use base64::Engine as _;

use crate::http::{HeadView, Response};

/// The subprotocol Lattice speaks: one frame per binary message.
pub const SUBPROTOCOL: &str = "lattice.v1";

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (28 base64 characters; no allocation).
pub fn accept_key(key: &str) -> [u8; 28] {
    let mut h = sha1_smol::Sha1::new();
    h.update(key.as_bytes());
    h.update(GUID.as_bytes());
    let mut out = [0u8; 28];
    let n = base64::engine::general_purpose::STANDARD
        .encode_slice(h.digest().bytes(), &mut out)
        .unwrap_or(0);
    debug_assert_eq!(n, 28);
    out
}

/// An accepted upgrade: the `101` response to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// `Sec-WebSocket-Accept`.
    pub accept: [u8; 28],
    /// The subprotocol chosen (`lattice.v1` when the client offered it).
    pub protocol: Option<&'static str>,
}

impl Accepted {
    /// Appends the `101 Switching Protocols` response. permessage-deflate is never accepted, so
    /// no `Sec-WebSocket-Extensions` header is sent whatever the client offered.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ");
        out.extend_from_slice(&self.accept);
        if let Some(p) = self.protocol {
            out.extend_from_slice(b"\r\nSec-WebSocket-Protocol: ");
            out.extend_from_slice(p.as_bytes());
        }
        out.extend_from_slice(b"\r\n\r\n");
    }
}

/// Checks an upgrade request. `origins`: the allowed `Origin` values (empty = any; a request
/// without `Origin`, from a non-browser client, is always allowed). On refusal, the response to
/// send (then close):
/// - `405` not `GET`; `426` (with `Sec-WebSocket-Version: 13`) no `Upgrade: websocket` or another
///   version; `400` no `Connection: Upgrade`, HTTP/1.0, a missing, malformed or repeated key;
///   `403` an `Origin` not in the list, or (with a list) a repeated `Origin`.
pub fn check_upgrade(req: &impl HeadView, origins: &[String]) -> Result<Accepted, Response> {
    if req.method() != "GET" {
        return Err(
            Response::text(405, "the WebSocket endpoint takes GET\n").with_header("Allow", "GET")
        );
    }
    let upgrade_required = |why: &str| {
        Response::text(426, format!("{why}\n"))
            .with_header("Upgrade", "websocket")
            .with_header("Connection", "Upgrade")
            .with_header("Sec-WebSocket-Version", "13")
    };
    if !req.header_has_token("upgrade", "websocket") {
        return Err(upgrade_required(
            "this endpoint speaks WebSocket: send Upgrade: websocket",
        ));
    }
    if req.header("sec-websocket-version") != Some("13") {
        return Err(upgrade_required("WebSocket version 13 only"));
    }
    if req.minor_version() < 1 {
        return Err(Response::text(400, "WebSocket needs HTTP/1.1\n"));
    }
    if !req.header_has_token("connection", "upgrade") {
        return Err(Response::text(400, "missing Connection: Upgrade\n"));
    }
    let key = req.header("sec-websocket-key").unwrap_or_default();
    let mut decoded = [0u8; 18];
    let n = base64::engine::general_purpose::STANDARD.decode_slice(key, &mut decoded);
    // RFC 6455 4.2.1: the key field appears once.
    if !matches!(n, Ok(16)) || req.header_count("sec-websocket-key") != 1 {
        return Err(Response::text(
            400,
            "missing, malformed or repeated Sec-WebSocket-Key\n",
        ));
    }
    if let Some(origin) = req.header("origin") {
        // RFC 6454 7.3: one Origin field. With a list, a repeated one is refused, whatever the
        // first says.
        if !origins.is_empty() && req.header_count("origin") != 1 {
            return Err(Response::text(403, "repeated Origin\n"));
        }
        if !origins.is_empty() && !origins.iter().any(|o| o.eq_ignore_ascii_case(origin)) {
            return Err(Response::text(
                403,
                format!("origin {origin} is not allowed\n"),
            ));
        }
    }
    let protocol = req
        .header_lists_exactly("sec-websocket-protocol", SUBPROTOCOL)
        .then_some(SUBPROTOCOL);
    Ok(Accepted {
        accept: accept_key(key),
        protocol,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{parse_head, HttpLimits};

    fn req(extra: &str) -> crate::http::Request {
        let text = format!("GET /ws HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
        parse_head(text.as_bytes(), &HttpLimits::default())
            .unwrap()
            .unwrap()
            .request
    }

    const GOOD: &str = "Upgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

    #[test]
    fn rfc_example_key() {
        assert_eq!(
            &accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn accepts_and_picks_the_subprotocol() {
        let a = check_upgrade(&req(GOOD), &[]).unwrap();
        assert_eq!(a.protocol, None);
        let a = check_upgrade(
            &req(&format!("{GOOD}Sec-WebSocket-Protocol: x, lattice.v1\r\n")),
            &[],
        )
        .unwrap();
        assert_eq!(a.protocol, Some(SUBPROTOCOL));
        let mut out = Vec::new();
        a.encode(&mut out);
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(s.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(s.contains("Sec-WebSocket-Protocol: lattice.v1\r\n"));
        assert!(!s.contains("Extensions"), "deflate is declined");
        // Matched byte for byte, owned or borrowed from the read: a browser fails a connection
        // whose server selects a value it did not offer, `lattice.v1` for `LATTICE.V1` included.
        for (offer, picked) in [
            ("lattice.v1", Some(SUBPROTOCOL)),
            ("LATTICE.V1", None),
            ("Lattice.v1, x", None),
        ] {
            let extra = format!("{GOOD}Sec-WebSocket-Protocol: {offer}\r\n");
            assert_eq!(
                check_upgrade(&req(&extra), &[]).unwrap().protocol,
                picked,
                "{offer}"
            );
            let text = format!("GET /ws HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
            let borrowed = crate::http::with_head(text.as_bytes(), &HttpLimits::default(), |raw| {
                check_upgrade(raw, &[]).unwrap().protocol
            });
            assert_eq!(borrowed.unwrap().unwrap().0, picked, "{offer} (borrowed)");
        }
    }

    #[test]
    fn refusals_have_their_status() {
        let status = |extra: &str, origins: &[String]| {
            check_upgrade(&req(extra), origins).unwrap_err().status
        };
        assert_eq!(status("", &[]), 426);
        assert_eq!(status(&GOOD.replace("13", "8"), &[]), 426);
        assert_eq!(
            status(&GOOD.replace("keep-alive, Upgrade", "keep-alive"), &[]),
            400
        );
        assert_eq!(
            status(&GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "short"), &[]),
            400
        );
        assert_eq!(
            status(
                &format!("{GOOD}Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"),
                &[]
            ),
            400,
            "a repeated key, even the same value"
        );
        let allowed = vec!["https://game.example".to_string()];
        assert_eq!(
            status(&format!("{GOOD}Origin: https://evil.example\r\n"), &allowed),
            403
        );
        assert!(check_upgrade(
            &req(&format!("{GOOD}Origin: https://game.example\r\n")),
            &allowed
        )
        .is_ok());
        assert_eq!(
            status(
                &format!("{GOOD}Origin: https://game.example\r\nOrigin: https://evil.example\r\n"),
                &allowed
            ),
            403,
            "a repeated Origin, the allowed one first"
        );
        assert!(
            check_upgrade(&req(&format!("{GOOD}Origin: a\r\nOrigin: b\r\n")), &[]).is_ok(),
            "without a list Origin is not looked at"
        );
        assert!(
            check_upgrade(&req(GOOD), &allowed).is_ok(),
            "no Origin: not a browser"
        );
        let mut post = req(GOOD);
        post.method = "POST".into();
        let text = format!("POST /ws HTTP/1.1\r\n{GOOD}\r\n");
        let borrowed = crate::http::with_head(text.as_bytes(), &HttpLimits::default(), |raw| {
            check_upgrade(raw, &[]).unwrap_err().status
        });
        assert_eq!(
            borrowed.unwrap().unwrap().0,
            405,
            "the borrowed head gives the same answer"
        );
        assert_eq!(check_upgrade(&post, &[]).unwrap_err().status, 405);
    }
}

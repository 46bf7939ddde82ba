//! A WebSocket client side for the harness: the upgrade request, masked binary messages out (one
//! frame each), and server messages unwrapped back into the frame stream. Server frames are
//! checked as far as the harness needs (final, unmasked, binary); anything else is an error.

/// The upgrade request for `path` on `host`.
pub fn upgrade_request(host: &str, path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: lattice.v1\r\n\r\n"
    )
    .into_bytes()
}

/// Checks the response head at the start of `buf`: `Ok(Some(n))` with the head's length when it
/// is a `101`, `Ok(None)` when incomplete.
pub fn upgrade_response(buf: &[u8]) -> Result<Option<usize>, String> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > 8192 {
            Err("upgrade response head too long".into())
        } else {
            Ok(None)
        };
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    if !head.starts_with("HTTP/1.1 101 ") {
        return Err(format!(
            "upgrade refused: {}",
            head.lines().next().unwrap_or_default()
        ));
    }
    Ok(Some(end + 4))
}

/// Appends each frame of `frames` (whole frames back to back) as one masked binary message.
pub fn wrap(frames: &[u8], mask: [u8; 4], out: &mut Vec<u8>) -> Result<(), String> {
    let mut at = 0;
    while at < frames.len() {
        let h =
            crate::wire::whole_frame(&frames[at..], usize::MAX)?.ok_or("wrap: incomplete frame")?;
        let f = &frames[at..at + h.len];
        out.push(0x82);
        let n = f.len();
        if n < 126 {
            out.push(0x80 | n as u8);
        } else if n <= 0xffff {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        out.extend(f.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        at += h.len;
    }
    Ok(())
}

/// Moves every complete server message at the start of `ws` into `frames` (their payloads,
/// which are frames), leaving an incomplete one in `ws`. Pings and pongs are dropped (the
/// harness keeps the connection busy, which keeps it alive); a close or a text message is an
/// error. Returns the number of bytes consumed.
pub fn unwrap(ws: &[u8], frames: &mut Vec<u8>) -> Result<usize, String> {
    let mut at = 0;
    loop {
        let b = &ws[at..];
        if b.len() < 2 {
            return Ok(at);
        }
        if b[1] & 0x80 != 0 {
            return Err("server frame is masked".into());
        }
        let (len, hl) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => {
                let mut a = [0u8; 8];
                a.copy_from_slice(&b[2..10]);
                (u64::from_be_bytes(a) as usize, 10)
            }
            126 | 127 => return Ok(at),
            n => (n as usize, 2),
        };
        if b.len() < hl + len {
            return Ok(at);
        }
        match b[0] {
            0x82 => frames.extend_from_slice(&b[hl..hl + len]),
            0x89 | 0x8A => {}
            0x88 => {
                let code = (len >= 2).then(|| u16::from_be_bytes([b[hl], b[hl + 1]]));
                return Err(format!(
                    "server closed the websocket (code {code:?}: {})",
                    String::from_utf8_lossy(b.get(hl + 2..hl + len).unwrap_or_default())
                ));
            }
            x => return Err(format!("unexpected websocket frame byte {x:#04x}")),
        }
        at += hl + len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::put_frame;

    #[test]
    fn wrap_then_server_style_unwrap() {
        let mut frames = Vec::new();
        put_frame(&mut frames, 4, 0, 1, b"a");
        put_frame(&mut frames, 4, 0, 2, &[7; 300]);
        let mut out = Vec::new();
        wrap(&frames, [1, 2, 3, 4], &mut out).unwrap();
        assert_eq!(out[0], 0x82);
        assert_eq!(out[1], 0x80 | 13);
        // What a server would send back: the same frames, unmasked.
        let mut server = vec![0x82, 13];
        server.extend_from_slice(&frames[..13]);
        server.extend_from_slice(&[0x89, 0, 0x82, 126]);
        server.extend_from_slice(&312u16.to_be_bytes());
        server.extend_from_slice(&frames[13..]);
        let mut got = Vec::new();
        assert_eq!(
            unwrap(&server[..20], &mut got).unwrap(),
            17,
            "the frame and the ping"
        );
        let mut got = Vec::new();
        assert_eq!(unwrap(&server, &mut got).unwrap(), server.len());
        assert_eq!(got, frames);
        assert!(unwrap(&[0x88, 2, 3, 0xE8], &mut got)
            .unwrap_err()
            .contains("closed"));
        assert_eq!(
            upgrade_response(b"HTTP/1.1 101 Switching Protocols\r\n\r\nxx").unwrap(),
            Some(36)
        );
        assert!(upgrade_response(b"HTTP/1.1 403 Forbidden\r\n\r\n").is_err());
    }
}

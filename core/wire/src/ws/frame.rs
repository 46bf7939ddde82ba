//! RFC 6455 frame headers: parsing (client → server, masked), encoding (server → client,
//! unmasked), masking, and the errors with their close codes.

use thiserror::Error;

/// Continuation frame opcode.
pub const OP_CONTINUATION: u8 = 0x0;
/// Text frame opcode.
pub const OP_TEXT: u8 = 0x1;
/// Binary frame opcode.
pub const OP_BINARY: u8 = 0x2;
/// Close frame opcode.
pub const OP_CLOSE: u8 = 0x8;
/// Ping frame opcode.
pub const OP_PING: u8 = 0x9;
/// Pong frame opcode.
pub const OP_PONG: u8 = 0xA;

/// Longest header: 2 bytes, an 8-byte extended length, a 4-byte mask.
pub const MAX_HEADER_LEN: usize = 14;
/// Longest control frame payload.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Close codes the server sends (RFC 6455 section 7.4.1).
pub mod close_code {
    /// The session ended normally (the client's close, answered).
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down, or the peer was idle too long.
    pub const GOING_AWAY: u16 = 1001;
    /// A WebSocket protocol error (framing, masking, control frame rules).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text message on the Lattice endpoint (frames travel in binary messages only).
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// Invalid UTF-8 in a text message or a close reason, or a binary message that is not
    /// exactly one valid Lattice frame.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// The server closed the session for an application reason (a refused handshake, a send
    /// buffer overflow).
    pub const POLICY: u16 = 1008;
    /// A message larger than `net.max_frame`.
    pub const TOO_BIG: u16 = 1009;
    /// The server failed (a panic while serving the session).
    pub const INTERNAL: u16 = 1011;
}

/// Why the peer's WebSocket stream cannot be read any further; each has its close code.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WsError {
    /// RSV1–3 set (no extension was negotiated).
    #[error("reserved bits set")]
    ReservedBits,
    /// Opcode 3–7 or 11–15.
    #[error("unknown opcode {0:#x}")]
    UnknownOpcode(u8),
    /// A client frame without a mask.
    #[error("client frame not masked")]
    Unmasked,
    /// A control frame fragmented or longer than 125 bytes.
    #[error("bad control frame")]
    BadControl,
    /// A continuation frame with no message started, or a new message inside a fragmented one.
    #[error("unexpected {0} frame")]
    BadFragment(&'static str),
    /// A 64-bit length with the top bit set.
    #[error("bad payload length")]
    BadLength,
    /// A message (or a frame of it) larger than the limit.
    #[error("message of {len} bytes is larger than {max}")]
    TooBig {
        /// The length reached or announced.
        len: u64,
        /// The limit (`net.max_frame`).
        max: usize,
    },
    /// A text message on an endpoint that carries binary frames only.
    #[error("text messages are not accepted: send each frame as one binary message")]
    Text,
    /// Invalid UTF-8 in a text message or a close reason.
    #[error("invalid UTF-8 in a {0}")]
    Utf8(&'static str),
    /// A close frame with a 1-byte payload or a code that may not be sent.
    #[error("bad close frame: {0}")]
    BadClose(String),
    /// A binary message that is not exactly one valid Lattice frame.
    #[error("binary message is not one Lattice frame: {0}")]
    NotOneFrame(String),
}

impl WsError {
    /// The close code the server sends for this error.
    pub fn close_code(&self) -> u16 {
        match self {
            WsError::TooBig { .. } => close_code::TOO_BIG,
            WsError::Text => close_code::UNSUPPORTED_DATA,
            WsError::Utf8(_) | WsError::NotOneFrame(_) => close_code::INVALID_PAYLOAD,
            _ => close_code::PROTOCOL_ERROR,
        }
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Final fragment of a message.
    pub fin: bool,
    /// `OP_*`.
    pub opcode: u8,
    /// The masking key (clients always mask).
    pub mask: [u8; 4],
    /// Payload length.
    pub len: u64,
    /// Header length in bytes (2 to 14).
    pub header_len: usize,
}

impl Header {
    /// True for close, ping and pong.
    pub fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }
}

/// Parses a client frame header at the start of `buf`: `Ok(None)` when `buf` is shorter than the
/// header. Checks what the header alone can tell: reserved bits, opcode, mask, control frame
/// rules, the length's top bit.
pub fn parse_header(buf: &[u8]) -> Result<Option<Header>, WsError> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(WsError::ReservedBits);
    }
    let opcode = b0 & 0x0f;
    if !matches!(
        opcode,
        OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
    ) {
        return Err(WsError::UnknownOpcode(opcode));
    }
    if b1 & 0x80 == 0 {
        return Err(WsError::Unmasked);
    }
    let fin = b0 & 0x80 != 0;
    let (len, at) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                let len = u64::from_be_bytes(a);
                if len >> 63 != 0 {
                    return Err(WsError::BadLength);
                }
                (len, 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    let Some(m) = buf.get(at..at + 4) else {
        return Ok(None);
    };
    let h = Header {
        fin,
        opcode,
        mask: [m[0], m[1], m[2], m[3]],
        len,
        header_len: at + 4,
    };
    if h.is_control() && (!fin || len > MAX_CONTROL_PAYLOAD as u64) {
        return Err(WsError::BadControl);
    }
    Ok(Some(h))
}

/// Appends a server frame header (final, unmasked) for a payload of `len` bytes.
pub fn encode_header(out: &mut Vec<u8>, opcode: u8, len: usize) {
    out.push(0x80 | opcode);
    if len < 126 {
        out.push(len as u8);
    } else if len <= 0xffff {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// Length of the header [`encode_header`] writes for `len` payload bytes.
pub fn header_len(len: usize) -> usize {
    if len < 126 {
        2
    } else if len <= 0xffff {
        4
    } else {
        10
    }
}

/// Appends a whole server frame.
pub fn encode_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    encode_header(out, opcode, payload.len());
    out.extend_from_slice(payload);
}

/// Appends a close frame with `code` and `reason`, the reason cut to fit 123 bytes at a
/// character boundary.
pub fn encode_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    encode_header(out, OP_CLOSE, 2 + end);
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&reason.as_bytes()[..end]);
}

/// XORs `buf` with `mask`, starting at byte `offset` of the mask cycle. Returns the offset for
/// the bytes that follow.
///
/// Cost: 8 bytes per step.
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4], offset: usize) -> usize {
    let mut m = mask;
    m.rotate_left(offset % 4);
    let word = u32::from_ne_bytes(m);
    let wide = u64::from(word) | (u64::from(word) << 32);
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut a = [0u8; 8];
        a.copy_from_slice(c);
        c.copy_from_slice(&(u64::from_ne_bytes(a) ^ wide).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= m[i % 4];
    }
    (offset + buf.len()) % 4
}

/// True for a close code a peer may send (RFC 6455 7.4: 1000–1003, 1007–1011, 3000–4999).
pub fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(opcode: u8, fin: bool, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut v = vec![(if fin { 0x80 } else { 0 }) | opcode];
        let n = payload.len();
        if n < 126 {
            v.push(0x80 | n as u8);
        } else if n <= 0xffff {
            v.push(0x80 | 126);
            v.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            v.push(0x80 | 127);
            v.extend_from_slice(&(n as u64).to_be_bytes());
        }
        v.extend_from_slice(&mask);
        let mut p = payload.to_vec();
        apply_mask(&mut p, mask, 0);
        v.extend_from_slice(&p);
        v
    }

    #[test]
    fn headers_of_each_length_form() {
        for n in [0usize, 125, 126, 65535, 65536] {
            let f = masked(OP_BINARY, true, &vec![1; n], [1, 2, 3, 4]);
            let h = parse_header(&f).unwrap().unwrap();
            assert_eq!((h.len, h.opcode, h.fin), (n as u64, OP_BINARY, true));
            assert_eq!(h.header_len + n, f.len());
            assert_eq!(parse_header(&f[..h.header_len - 1]), Ok(None));
            let mut out = Vec::new();
            encode_header(&mut out, OP_BINARY, n);
            assert_eq!(out.len(), header_len(n));
        }
    }

    #[test]
    fn header_errors() {
        assert_eq!(
            parse_header(&[0xC2, 0x80, 0, 0, 0, 0]),
            Err(WsError::ReservedBits)
        );
        assert_eq!(
            parse_header(&[0x83, 0x80, 0, 0, 0, 0]),
            Err(WsError::UnknownOpcode(3))
        );
        assert_eq!(parse_header(&[0x82, 0x00]), Err(WsError::Unmasked));
        assert_eq!(
            parse_header(&[0x09, 0x80, 0, 0, 0, 0]),
            Err(WsError::BadControl)
        );
        assert_eq!(
            parse_header(&[0x89, 0xFE, 0, 126, 0, 0, 0, 0]),
            Err(WsError::BadControl)
        );
        let mut big = vec![0x82, 0xFF];
        big.extend_from_slice(&(1u64 << 63).to_be_bytes());
        big.extend_from_slice(&[0; 4]);
        assert_eq!(parse_header(&big), Err(WsError::BadLength));
        assert_eq!(WsError::Text.close_code(), 1003);
        assert_eq!(WsError::Utf8("text message").close_code(), 1007);
    }

    #[test]
    fn masking_is_its_own_inverse_at_any_offset() {
        let data: Vec<u8> = (0..=255).collect();
        for split in [0usize, 1, 3, 7, 8, 9, 100] {
            let mut a = data.clone();
            let off = apply_mask(&mut a[..split], [9, 8, 7, 6], 0);
            apply_mask(&mut a[split..], [9, 8, 7, 6], off);
            let mut b = data.clone();
            for (i, x) in b.iter_mut().enumerate() {
                *x ^= [9, 8, 7, 6][i % 4];
            }
            assert_eq!(a, b, "split {split}");
        }
    }

    #[test]
    fn close_frames_cut_reasons_at_char_boundaries() {
        let mut out = Vec::new();
        encode_close(&mut out, 1000, &"é".repeat(100));
        assert_eq!(out[1] as usize, out.len() - 2);
        assert!(out.len() - 2 <= MAX_CONTROL_PAYLOAD);
        assert!(std::str::from_utf8(&out[4..]).is_ok());
        assert!(valid_close_code(1000) && valid_close_code(4999));
        assert!(!valid_close_code(1005) && !valid_close_code(1015) && !valid_close_code(2000));
    }
}

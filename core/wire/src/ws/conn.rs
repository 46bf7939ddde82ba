//! One WebSocket server connection after the handshake, sans-IO: masked client frames in,
//! messages out; control frames answered in place.
//!
//! Input is unmasked **in place** in the caller's buffer (the shard's read buffer): a message that
//! arrives whole in one read is handed out borrowed from it, with no copy and nothing kept. Only a
//! message split across reads or fragmented into several frames is assembled in the connection's
//! own buffer, which leaves with the message (so an idle connection holds no buffer). A partial
//! frame header (at most 13 bytes) is kept inline.
//!
//! Rules enforced (each a [`WsError`] with its close code): reserved bits, unknown opcodes,
//! unmasked frames, fragmented or long control frames, continuation without a message and a new
//! message inside a fragmented one, message size, text messages where they are refused, UTF-8 of
//! text messages (checked as bytes arrive, so a bad sequence fails at once, not at the message's
//! end) and of close reasons, close frame payloads and codes.

use super::frame::{
    apply_mask, encode_close, encode_frame, encode_header, parse_header, valid_close_code, Header,
    WsError, MAX_HEADER_LEN, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT,
};

/// A message's bytes: borrowed from the caller's input (unmasked in place) or assembled.
#[derive(Debug, PartialEq, Eq)]
pub enum Payload<'a> {
    /// Wholly inside the input passed to [`WsConn::next`].
    Borrowed(&'a [u8]),
    /// Assembled across reads or fragments; the bytes now belong to the caller.
    Owned(Vec<u8>),
}

impl Payload<'_> {
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Payload::Borrowed(b) => b,
            Payload::Owned(v) => v,
        }
    }
}

/// What [`WsConn::next`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum WsEvent<'a> {
    /// A complete binary message.
    Binary(Payload<'a>),
    /// A complete text message (valid UTF-8).
    Text(Payload<'a>),
    /// The peer sent a close frame (its code, if any); the answer is already in `out`. Nothing
    /// more is read.
    Closed(Option<u16>),
}

#[derive(Debug, Clone, Copy)]
struct Cur {
    opcode: u8,
    fin: bool,
    mask: [u8; 4],
    mask_off: u8,
    remaining: u64,
}

/// One connection's WebSocket state. See the module documentation.
///
/// Memory at rest: about 100 bytes, no buffer.
#[derive(Debug)]
pub struct WsConn {
    max_message: u32,
    text_allowed: bool,
    hdr: [u8; MAX_HEADER_LEN],
    hdr_len: u8,
    cur: Option<Cur>,
    /// Opcode of the message being assembled (`OP_TEXT` / `OP_BINARY`), 0 when none.
    msg_op: u8,
    msg: Vec<u8>,
    /// Prefix of `msg` known to be valid UTF-8 (text messages).
    utf8_valid: u32,
    ctrl: Vec<u8>,
    close_sent: bool,
    close_received: bool,
}

impl WsConn {
    /// A connection accepting messages up to `max_message` bytes; text messages are refused with
    /// [`WsError::Text`] unless `text_allowed`.
    pub fn new(max_message: u32, text_allowed: bool) -> WsConn {
        WsConn {
            max_message,
            text_allowed,
            hdr: [0; MAX_HEADER_LEN],
            hdr_len: 0,
            cur: None,
            msg_op: 0,
            msg: Vec::new(),
            utf8_valid: 0,
            ctrl: Vec::new(),
            close_sent: false,
            close_received: false,
        }
    }

    /// Bytes held for an incomplete header, frame or message.
    pub fn buffered(&self) -> usize {
        self.hdr_len as usize + self.msg.len() + self.ctrl.len()
    }

    /// True once a close frame was sent.
    pub fn close_sent(&self) -> bool {
        self.close_sent
    }

    /// True once the peer's close frame arrived.
    pub fn close_received(&self) -> bool {
        self.close_received
    }

    /// Appends a close frame to `out` unless one was sent already. Returns true if it did.
    pub fn send_close(&mut self, out: &mut Vec<u8>, code: u16, reason: &str) -> bool {
        if self.close_sent {
            return false;
        }
        self.close_sent = true;
        encode_close(out, code, reason);
        true
    }

    /// Appends a ping (unless closing). Returns true if it did.
    pub fn send_ping(&mut self, out: &mut Vec<u8>) -> bool {
        if self.close_sent {
            return false;
        }
        encode_frame(out, OP_PING, b"");
        true
    }

    /// Appends the header of a binary message of `len` bytes; the caller appends the payload.
    pub fn binary_header(out: &mut Vec<u8>, len: usize) {
        encode_header(out, OP_BINARY, len);
    }

    /// Takes the next message from `input` (bytes the peer sent, unmasked in place), advancing
    /// `input` past what it used. Call until `Ok(None)`: `input` is then empty and a partial frame
    /// or message is kept. Pongs for pings and the answer to a close go to `out`.
    ///
    /// On error nothing more should be fed: the caller sends a close frame with
    /// [`WsError::close_code`] and closes.
    pub fn next<'a>(
        &mut self,
        input: &mut &'a mut [u8],
        out: &mut Vec<u8>,
    ) -> Result<Option<WsEvent<'a>>, WsError> {
        loop {
            if self.close_received {
                *input = &mut [];
                return Ok(None);
            }
            if let Some(mut cur) = self.cur {
                if cur.remaining > 0 {
                    if input.is_empty() {
                        return Ok(None);
                    }
                    let take = cur.remaining.min(input.len() as u64) as usize;
                    let (chunk, rest) = std::mem::take(input).split_at_mut(take);
                    *input = rest;
                    cur.mask_off = apply_mask(chunk, cur.mask, cur.mask_off as usize) as u8;
                    cur.remaining -= take as u64;
                    if cur.opcode & 0x8 != 0 {
                        self.ctrl.extend_from_slice(chunk);
                    } else {
                        self.msg.extend_from_slice(chunk);
                        if self.msg_op == OP_TEXT {
                            self.check_utf8(false)?;
                        }
                    }
                    self.cur = Some(cur);
                    if cur.remaining > 0 {
                        continue;
                    }
                }
                self.cur = None;
                if let Some(ev) = self.finish(cur, out)? {
                    return Ok(Some(ev));
                }
                continue;
            }
            let Some(h) = self.header(input)? else {
                return Ok(None);
            };
            self.check_rules(&h)?;
            let whole = input.len() >= h.header_len + h.len as usize;
            if whole && (h.is_control() || (h.fin && h.opcode != OP_CONTINUATION)) {
                // The whole frame is in the input: unmask in place, no copy.
                let (frame, rest) =
                    std::mem::take(input).split_at_mut(h.header_len + h.len as usize);
                *input = rest;
                let payload = &mut frame[h.header_len..];
                apply_mask(payload, h.mask, 0);
                let payload: &'a [u8] = payload;
                if h.is_control() {
                    if let Some(ev) = self.control(h.opcode, payload, out)? {
                        return Ok(Some(ev));
                    }
                    continue;
                }
                if h.opcode == OP_TEXT {
                    if std::str::from_utf8(payload).is_err() {
                        return Err(WsError::Utf8("text message"));
                    }
                    return Ok(Some(WsEvent::Text(Payload::Borrowed(payload))));
                }
                return Ok(Some(WsEvent::Binary(Payload::Borrowed(payload))));
            }
            // Consume the header; the payload follows in this or later reads.
            let (_, rest) = std::mem::take(input).split_at_mut(h.header_len);
            *input = rest;
            if !h.is_control() && h.opcode != OP_CONTINUATION {
                self.msg_op = h.opcode;
                self.utf8_valid = 0;
            }
            self.cur = Some(Cur {
                opcode: h.opcode,
                fin: h.fin,
                mask: h.mask,
                mask_off: 0,
                remaining: h.len,
            });
        }
    }

    /// The next header: from the bytes kept plus `input` (consuming what it takes), or from the
    /// start of `input` (not consumed). `None`: incomplete, the bytes are kept.
    fn header(&mut self, input: &mut &mut [u8]) -> Result<Option<Header>, WsError> {
        if self.hdr_len > 0 {
            let have = self.hdr_len as usize;
            let add = (MAX_HEADER_LEN - have).min(input.len());
            self.hdr[have..have + add].copy_from_slice(&input[..add]);
            return match parse_header(&self.hdr[..have + add])? {
                None => {
                    // 14 bytes always hold a header, so an incomplete one used all of `input`.
                    debug_assert_eq!(add, input.len());
                    self.hdr_len = (have + add) as u8;
                    *input = &mut [];
                    Ok(None)
                }
                Some(h) => {
                    let used = h.header_len - have;
                    let (_, rest) = std::mem::take(input).split_at_mut(used);
                    // The header is consumed here; the caller sees the payload at the start.
                    *input = rest;
                    self.hdr_len = 0;
                    Ok(Some(Header { header_len: 0, ..h }))
                }
            };
        }
        match parse_header(input)? {
            Some(h) => Ok(Some(h)),
            None => {
                let n = input.len();
                debug_assert!(n < MAX_HEADER_LEN);
                self.hdr[..n].copy_from_slice(input);
                self.hdr_len = n as u8;
                *input = &mut [];
                Ok(None)
            }
        }
    }

    fn check_rules(&self, h: &Header) -> Result<(), WsError> {
        if h.is_control() {
            return Ok(());
        }
        match (h.opcode, self.msg_op) {
            (OP_CONTINUATION, 0) => return Err(WsError::BadFragment("continuation")),
            (OP_TEXT | OP_BINARY, op) if op != 0 => {
                return Err(WsError::BadFragment("new message inside a fragmented"))
            }
            _ => {}
        }
        if (h.opcode == OP_TEXT) && !self.text_allowed {
            return Err(WsError::Text);
        }
        let total = self.msg.len() as u64 + h.len;
        if total > u64::from(self.max_message) {
            return Err(WsError::TooBig {
                len: total,
                max: self.max_message as usize,
            });
        }
        Ok(())
    }

    fn finish(&mut self, cur: Cur, out: &mut Vec<u8>) -> Result<Option<WsEvent<'static>>, WsError> {
        if cur.opcode & 0x8 != 0 {
            let payload = std::mem::take(&mut self.ctrl);
            return self.control(cur.opcode, &payload, out);
        }
        if !cur.fin {
            return Ok(None);
        }
        let op = std::mem::replace(&mut self.msg_op, 0);
        if op == OP_TEXT {
            self.check_utf8(true)?;
        }
        let msg = std::mem::take(&mut self.msg);
        Ok(Some(if op == OP_TEXT {
            WsEvent::Text(Payload::Owned(msg))
        } else {
            WsEvent::Binary(Payload::Owned(msg))
        }))
    }

    fn control(
        &mut self,
        opcode: u8,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Option<WsEvent<'static>>, WsError> {
        match opcode {
            OP_PING => {
                if !self.close_sent {
                    encode_frame(out, OP_PONG, payload);
                }
                Ok(None)
            }
            OP_PONG => Ok(None),
            _ => {
                debug_assert_eq!(opcode, OP_CLOSE);
                let code = match payload {
                    [] => None,
                    [_] => return Err(WsError::BadClose("1-byte payload".into())),
                    [a, b, reason @ ..] => {
                        let code = u16::from_be_bytes([*a, *b]);
                        if !valid_close_code(code) {
                            return Err(WsError::BadClose(format!("code {code}")));
                        }
                        if std::str::from_utf8(reason).is_err() {
                            return Err(WsError::Utf8("close reason"));
                        }
                        Some(code)
                    }
                };
                self.close_received = true;
                if !self.close_sent {
                    self.close_sent = true;
                    match code {
                        Some(c) => encode_close(out, c, ""),
                        None => encode_frame(out, OP_CLOSE, b""),
                    }
                }
                Ok(Some(WsEvent::Closed(code)))
            }
        }
    }

    fn check_utf8(&mut self, fin: bool) -> Result<(), WsError> {
        // Messages are at most `max_message` (a u32) bytes, so these fit.
        match std::str::from_utf8(&self.msg[self.utf8_valid as usize..]) {
            Ok(_) => self.utf8_valid = self.msg.len() as u32,
            Err(e) if e.error_len().is_none() && !fin => self.utf8_valid += e.valid_up_to() as u32,
            Err(_) => return Err(WsError::Utf8("text message")),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
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

    /// Feeds `bytes` in chunks of `chunk`, collecting (kind, payload) of every event.
    fn run(
        c: &mut WsConn,
        bytes: &[u8],
        chunk: usize,
        out: &mut Vec<u8>,
    ) -> Result<Vec<(char, Vec<u8>)>, WsError> {
        let mut got = Vec::new();
        for piece in bytes.chunks(chunk.max(1)) {
            let mut owned = piece.to_vec();
            let mut input: &mut [u8] = &mut owned;
            while let Some(ev) = c.next(&mut input, out)? {
                got.push(match ev {
                    WsEvent::Binary(p) => ('b', p.as_slice().to_vec()),
                    WsEvent::Text(p) => ('t', p.as_slice().to_vec()),
                    WsEvent::Closed(code) => (
                        'c',
                        code.map(|c| c.to_be_bytes().to_vec()).unwrap_or_default(),
                    ),
                });
            }
            assert!(input.is_empty());
        }
        Ok(got)
    }

    #[test]
    fn whole_messages_are_borrowed_and_unmasked() {
        let mut c = WsConn::new(1 << 20, false);
        let mut bytes = frame(OP_BINARY, true, b"hello");
        bytes.extend(frame(OP_BINARY, true, &[7u8; 300]));
        let mut input: &mut [u8] = &mut bytes;
        match c.next(&mut input, &mut Vec::new()).unwrap() {
            Some(WsEvent::Binary(Payload::Borrowed(p))) => assert_eq!(p, b"hello"),
            other => panic!("{other:?}"),
        }
        match c.next(&mut input, &mut Vec::new()).unwrap() {
            Some(WsEvent::Binary(Payload::Borrowed(p))) => assert_eq!(p, &[7u8; 300][..]),
            other => panic!("{other:?}"),
        }
        assert_eq!(c.next(&mut input, &mut Vec::new()), Ok(None));
        assert_eq!(c.buffered(), 0);
    }

    #[test]
    fn split_anywhere_and_fragmented_with_control_frames_between() {
        let mut bytes = frame(OP_BINARY, false, b"ab");
        bytes.extend(frame(OP_PING, true, b"p"));
        bytes.extend(frame(OP_CONTINUATION, false, b""));
        bytes.extend(frame(OP_CONTINUATION, true, &[9u8; 200]));
        bytes.extend(frame(OP_TEXT, true, "héllo".as_bytes()));
        bytes.extend(frame(OP_BINARY, true, b""));
        let mut want_msg = b"ab".to_vec();
        want_msg.extend([9u8; 200]);
        for chunk in [1, 2, 3, 7, 13, 64, 1000] {
            let mut c = WsConn::new(1 << 20, true);
            let mut out = Vec::new();
            let got = run(&mut c, &bytes, chunk, &mut out).unwrap();
            assert_eq!(
                got,
                vec![
                    ('b', want_msg.clone()),
                    ('t', "héllo".as_bytes().to_vec()),
                    ('b', vec![])
                ],
                "chunk {chunk}"
            );
            assert_eq!(out, [0x8A, 1, b'p'], "pong with the ping's payload");
            assert_eq!(c.buffered(), 0);
        }
    }

    #[test]
    fn close_is_answered_with_the_same_code_and_ends_input() {
        let mut c = WsConn::new(100, false);
        let mut bytes = frame(OP_CLOSE, true, &[0x03, 0xE8, b'b', b'y', b'e']);
        bytes.extend(frame(OP_BINARY, true, b"late"));
        let mut out = Vec::new();
        let got = run(&mut c, &bytes, 1000, &mut out).unwrap();
        assert_eq!(got, vec![('c', vec![0x03, 0xE8])]);
        assert_eq!(out, [0x88, 2, 0x03, 0xE8]);
        assert!(c.close_received() && c.close_sent());
        assert!(!c.send_close(&mut out, 1000, ""), "one close only");
        let mut c = WsConn::new(100, false);
        let mut out = Vec::new();
        assert_eq!(
            run(&mut c, &frame(OP_CLOSE, true, b""), 1, &mut out).unwrap(),
            vec![('c', vec![])]
        );
        assert_eq!(out, [0x88, 0]);
    }

    #[test]
    fn each_violation_is_its_error() {
        let cases: Vec<(Vec<u8>, WsError)> = vec![
            (
                frame(OP_CONTINUATION, true, b"x"),
                WsError::BadFragment("continuation"),
            ),
            (
                [frame(OP_BINARY, false, b"x"), frame(OP_BINARY, true, b"y")].concat(),
                WsError::BadFragment("new message inside a fragmented"),
            ),
            (frame(OP_TEXT, true, b"hi"), WsError::Text),
            (
                frame(OP_BINARY, true, &[0; 101]),
                WsError::TooBig { len: 101, max: 100 },
            ),
            (
                [
                    frame(OP_BINARY, false, &[0; 60]),
                    frame(OP_CONTINUATION, true, &[0; 60]),
                ]
                .concat(),
                WsError::TooBig { len: 120, max: 100 },
            ),
            (
                frame(OP_CLOSE, true, &[3]),
                WsError::BadClose("1-byte payload".into()),
            ),
            (
                frame(OP_CLOSE, true, &[0x03, 0xED]),
                WsError::BadClose("code 1005".into()),
            ),
            (
                frame(OP_CLOSE, true, &[0x03, 0xE8, 0xff]),
                WsError::Utf8("close reason"),
            ),
        ];
        for (bytes, want) in cases {
            for chunk in [1, 1000] {
                let mut c = WsConn::new(100, false);
                assert_eq!(
                    run(&mut c, &bytes, chunk, &mut Vec::new()),
                    Err(want.clone()),
                    "chunk {chunk}"
                );
            }
        }
    }

    #[test]
    fn invalid_utf8_fails_as_soon_as_it_arrives() {
        // A valid first fragment, then a fragment whose first bytes are invalid: the error comes
        // with those bytes, before the message's final frame.
        let mut c = WsConn::new(1000, true);
        let mut bytes = frame(OP_TEXT, false, "κόσμε".as_bytes());
        bytes.extend(frame(
            OP_CONTINUATION,
            false,
            &[
                0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xf4, 0x90, 0x80,
                0x80,
            ],
        ));
        assert_eq!(
            run(&mut c, &bytes, 1000, &mut Vec::new()),
            Err(WsError::Utf8("text message"))
        );
        // A sequence cut between fragments is fine.
        let mut c = WsConn::new(1000, true);
        let e = "é".as_bytes();
        let mut bytes = frame(OP_TEXT, false, &e[..1]);
        bytes.extend(frame(OP_CONTINUATION, true, &e[1..]));
        assert_eq!(
            run(&mut c, &bytes, 3, &mut Vec::new()).unwrap(),
            vec![('t', e.to_vec())]
        );
        // Cut at the end of the message: invalid.
        let mut c = WsConn::new(1000, true);
        assert_eq!(
            run(&mut c, &frame(OP_TEXT, true, &e[..1]), 1, &mut Vec::new()),
            Err(WsError::Utf8("text message"))
        );
    }
}

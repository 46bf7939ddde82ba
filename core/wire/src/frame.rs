//! Sans-IO frame codec: bytes in, frames out; frames in, bytes out. No socket, no clock.
//!
//! Layout (little-endian, see `docs/PROTOCOL.md`): `u32 length` (whole frame, header included),
//! `u16 opcode`, `u16 flags`, `u32 request_id`; when the `SEQ` flag is set, `u32 seq` and `u32 ack`
//! follow (the 8-byte sequence extension of sessions that can resume); then the body.

use thiserror::Error;

/// Size of the fixed frame header in bytes.
pub const HEADER_LEN: usize = 12;

/// Size of the sequence extension (`u32 seq`, `u32 ack`) that follows the header when
/// [`FLAG_SEQ`] is set.
pub const EXT_LEN: usize = 8;

/// Frame flag: the body is a zlib stream.
pub const FLAG_COMPRESSED: u16 = 0x0001;
/// Frame flag: the 8-byte sequence extension (`u32 seq`, `u32 ack`) follows the header; the body
/// starts after it. Set on every frame of a session that negotiated resume (docs/PROTOCOL.md,
/// "Resume").
pub const FLAG_SEQ: u16 = 0x0002;
/// Every flag bit this version understands; any other bit set is a protocol error.
pub const KNOWN_FLAGS: u16 = FLAG_COMPRESSED | FLAG_SEQ;

/// The fixed part of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Whole frame length, header included.
    pub length: u32,
    /// Message kind.
    pub opcode: u16,
    /// Flag bits (`FLAG_*`).
    pub flags: u16,
    /// Correlates a reply with its request; 0 for pushes.
    pub request_id: u32,
    /// The sender's sequence number of this frame (0 without [`FLAG_SEQ`]).
    pub seq: u32,
    /// The sender's cumulative acknowledgement: the `seq` of the last frame it received from its
    /// peer (0 without [`FLAG_SEQ`]).
    pub ack: u32,
}

impl FrameHeader {
    /// A header without the sequence extension.
    pub fn new(length: u32, opcode: u16, flags: u16, request_id: u32) -> FrameHeader {
        FrameHeader {
            length,
            opcode,
            flags,
            request_id,
            seq: 0,
            ack: 0,
        }
    }

    /// Bytes before the body: 12, or 20 with the sequence extension.
    #[inline]
    pub fn header_len(&self) -> usize {
        header_len(self.flags)
    }

    /// Body length in bytes.
    #[inline]
    pub fn body_len(&self) -> usize {
        self.length as usize - self.header_len()
    }

    /// True if the sequence extension is present.
    #[inline]
    pub fn sequenced(&self) -> bool {
        self.flags & FLAG_SEQ != 0
    }

    /// True if the body is zlib-compressed.
    #[inline]
    pub fn compressed(&self) -> bool {
        self.flags & FLAG_COMPRESSED != 0
    }
}

/// A complete frame borrowed from the decoder's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The header.
    pub header: FrameHeader,
    /// The body (possibly compressed, see [`FrameHeader::compressed`]).
    pub body: &'a [u8],
}

/// Why a byte stream cannot be decoded any further. Each closes the session that sent it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// The length field is below the header size or above the configured maximum.
    #[error("frame length {length} out of range ({min}..={max}){}", not_a_header(.length))]
    LengthOutOfRange {
        /// Length field as received.
        length: u32,
        /// Smallest legal length (the header size).
        min: u32,
        /// Configured maximum frame size.
        max: u32,
    },
    /// A flag bit this version does not know was set.
    #[error("reserved flag bits {0:#06x} set")]
    ReservedFlags(u16),
    /// Opcode 0 is never valid.
    #[error("opcode 0 is invalid")]
    ZeroOpcode,
    /// The first bytes of a connection are a TLS record carrying a ClientHello (`16 03 0x` then
    /// handshake type 1) whose length, read as a frame length, is in range (a ClientHello
    /// shorter than 256 bytes): refused at once instead of waiting for that many bytes.
    #[error("the first bytes are a TLS ClientHello, not a Lattice frame header (TLS goes to tls.listen)")]
    TlsClientHello,
    /// The peer closed the stream in the middle of a frame whose length field had arrived.
    #[error("truncated frame at close ({have} of {need} bytes)")]
    Truncated {
        /// Bytes of the partial frame received.
        have: usize,
        /// The frame's length (its `length` field).
        need: usize,
    },
    /// The peer closed the stream inside the length field of a frame (1 to 3 bytes of it): the
    /// frame needed at least a header.
    #[error("truncated frame at close ({have} of at least {HEADER_LEN} bytes)")]
    TruncatedLength {
        /// Bytes of the partial frame received.
        have: usize,
    },
}

/// Bytes before the body of a frame with these flags: 12, or 20 when [`FLAG_SEQ`] is set.
#[inline]
pub fn header_len(flags: u16) -> usize {
    if flags & FLAG_SEQ != 0 {
        HEADER_LEN + EXT_LEN
    } else {
        HEADER_LEN
    }
}

/// Parses a header (and its sequence extension, when flagged) from the start of `buf`, validating
/// it against `max_frame`. Returns `Ok(None)` when `buf` is shorter than the header it announces
/// (12 bytes, or 20 with [`FLAG_SEQ`]).
///
/// A frame whose length is too short for its own extension is a `LengthOutOfRange` with `min` 20.
///
/// Cost: one combined test for a valid header (once per frame received); which error a bad
/// header gets is worked out out of line ([`header_error`]).
#[inline]
pub fn parse_header(buf: &[u8], max_frame: u32) -> Result<Option<FrameHeader>, FrameError> {
    let Some(h) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let length = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let opcode = u16::from_le_bytes([h[4], h[5]]);
    let flags = u16::from_le_bytes([h[6], h[7]]);
    let request_id = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    let sequenced = flags & FLAG_SEQ != 0;
    // With unknown flags this minimum may be wrong, but such a header fails anyway.
    let min = if sequenced {
        HEADER_LEN + EXT_LEN
    } else {
        HEADER_LEN
    };
    if flags & !KNOWN_FLAGS != 0 || opcode == 0 || (length as usize) < min || length > max_frame {
        return Err(header_error(length, opcode, flags, max_frame));
    }
    let (seq, ack) = if sequenced {
        let Some(e) = buf.get(HEADER_LEN..HEADER_LEN + EXT_LEN) else {
            return Ok(None);
        };
        (
            u32::from_le_bytes([e[0], e[1], e[2], e[3]]),
            u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
        )
    } else {
        (0, 0)
    };
    Ok(Some(FrameHeader {
        length,
        opcode,
        flags,
        request_id,
        seq,
        ack,
    }))
}

/// A header cut short (fewer than 12 bytes, or 20 with the extension) whose length is already
/// out of range: `LengthOutOfRange` as [`parse_header`] would give once the header is whole, so a
/// short bad input closes at once instead of waiting for bytes that cannot make it valid. The
/// minimum counts the extension only once the flags are known and valid.
#[cold]
fn partial_header_error(bytes: &[u8], max_frame: u32) -> Option<FrameError> {
    let length = u32::from_le_bytes(*bytes.first_chunk::<4>()?);
    let flags = bytes.get(6..8).map(|f| u16::from_le_bytes([f[0], f[1]]));
    let min = min_length(flags);
    ((length as usize) < min || length > max_frame).then_some(FrameError::LengthOutOfRange {
        length,
        min: min as u32,
        max: max_frame,
    })
}

/// The smallest legal length for a header with these flags (`None`: not received yet): the
/// extension counts only when the flags are known and valid and announce it.
fn min_length(flags: Option<u16>) -> usize {
    match flags {
        Some(f) if f & !KNOWN_FLAGS == 0 => header_len(f),
        _ => HEADER_LEN,
    }
}

/// True when `bytes`, the first a connection sent, are a TLS record with a ClientHello: content
/// type 22, major version 3, a minor version 0–4, and handshake type 1 after the 5-byte record
/// header. Read as a frame header that is an opcode of 256 or more, never the `Hello` or `Resume`
/// a connection must start with, so no valid first frame looks like this.
pub fn starts_tls_client_hello(bytes: &[u8]) -> bool {
    matches!(bytes, [0x16, 0x03, 0..=4, _, _, 0x01, ..])
}

/// Which error a header that failed [`parse_header`]'s test gets, in the documented order: the
/// length first (as before the extension existed; its minimum counts the extension when the
/// flags are valid and announce it), then reserved flags, then opcode 0.
/// What a length field that is really the start of something else looks like, for the close
/// reason: text (an HTTP request line, JSON) or a TLS handshake sent where frames are expected.
fn not_a_header(length: &u32) -> &'static str {
    let b = length.to_le_bytes();
    if b[0] == 0x16 && b[1] == 0x03 {
        " (these bytes start a TLS handshake, not a Lattice frame header)"
    } else if b.iter().all(|c| c.is_ascii_graphic() || *c == b' ')
        && (b[0].is_ascii_uppercase() || b[0] == b'{' || b[0] == b'[')
    {
        " (these bytes are text, e.g. HTTP or JSON, not a Lattice frame header)"
    } else {
        ""
    }
}

#[cold]
fn header_error(length: u32, opcode: u16, flags: u16, max_frame: u32) -> FrameError {
    let min = min_length(Some(flags));
    if (length as usize) < min || length > max_frame {
        return FrameError::LengthOutOfRange {
            length,
            min: min as u32,
            max: max_frame,
        };
    }
    if flags & !KNOWN_FLAGS != 0 {
        return FrameError::ReservedFlags(flags & !KNOWN_FLAGS);
    }
    debug_assert_eq!(opcode, 0, "a header that passed every other test");
    FrameError::ZeroOpcode
}

/// Appends one encoded frame to `out`. `body` is written as given (compress it first if the
/// `FLAG_COMPRESSED` bit is set). Panics in debug builds if the frame would exceed `u32::MAX`.
pub fn encode_into(out: &mut Vec<u8>, opcode: u16, flags: u16, request_id: u32, body: &[u8]) {
    encode_header_into(out, opcode, flags, request_id, body.len());
    out.extend_from_slice(body);
}

/// Appends a frame header for a body of `body_len` bytes that the caller appends next (so a body
/// can be encoded straight into `out`). Reserves room for the whole frame first, so the body's
/// encoding does not grow `out` again.
///
/// Inlined (once per frame sent, from the crates that encode replies): the header is built in a
/// 12-byte array and appended in one copy, one capacity check instead of four.
#[inline]
pub fn encode_header_into(
    out: &mut Vec<u8>,
    opcode: u16,
    flags: u16,
    request_id: u32,
    body_len: usize,
) {
    let length = HEADER_LEN + body_len;
    debug_assert!(length <= u32::MAX as usize);
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&(length as u32).to_le_bytes());
    h[4..6].copy_from_slice(&opcode.to_le_bytes());
    h[6..8].copy_from_slice(&flags.to_le_bytes());
    h[8..12].copy_from_slice(&request_id.to_le_bytes());
    out.reserve(length);
    out.extend_from_slice(&h);
}

/// Appends one frame with the sequence extension ([`FLAG_SEQ`] is added to `flags`).
pub fn encode_seq_into(
    out: &mut Vec<u8>,
    opcode: u16,
    flags: u16,
    request_id: u32,
    seq: u32,
    ack: u32,
    body: &[u8],
) {
    let length = HEADER_LEN + EXT_LEN + body.len();
    debug_assert!(length <= u32::MAX as usize);
    out.reserve(length);
    out.extend_from_slice(&(length as u32).to_le_bytes());
    out.extend_from_slice(&opcode.to_le_bytes());
    out.extend_from_slice(&(flags | FLAG_SEQ).to_le_bytes());
    out.extend_from_slice(&request_id.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&ack.to_le_bytes());
    out.extend_from_slice(body);
}

/// Encodes one frame into a new buffer.
pub fn encode(opcode: u16, flags: u16, request_id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    encode_into(&mut out, opcode, flags, request_id, body);
    out
}

/// A frame handed out by [`Decoder::next`].
#[derive(Debug)]
pub enum FrameBuf<'a> {
    /// Wholly inside the caller's input.
    Borrowed(Frame<'a>),
    /// Assembled across calls; the bytes (header included) now belong to the caller.
    Assembled {
        /// The parsed header.
        header: FrameHeader,
        /// The whole frame, header included.
        bytes: Vec<u8>,
    },
}

// Inlined: these run once per frame received, mostly from other crates (the runtime's read loop).
impl FrameBuf<'_> {
    /// The frame's header (without building the [`Frame`]).
    #[inline]
    pub fn header(&self) -> &FrameHeader {
        match self {
            FrameBuf::Borrowed(f) => &f.header,
            FrameBuf::Assembled { header, .. } => header,
        }
    }

    /// The frame.
    #[inline]
    pub fn frame(&self) -> Frame<'_> {
        match self {
            FrameBuf::Borrowed(f) => *f,
            FrameBuf::Assembled { header, bytes } => Frame {
                header: *header,
                body: &bytes[header.header_len()..],
            },
        }
    }
}

/// Incremental decoder for one session.
///
/// Holds bytes only while a frame is incomplete, so an idle session costs an empty `Vec`. Complete
/// frames are handed out borrowed straight from the caller's input when possible (no copy).
#[derive(Debug)]
pub struct Decoder {
    pending: Vec<u8>,
    max_frame: u32,
    /// Set once a [`FrameError`] was returned; the decoder repeats it for any further input.
    failed: Option<FrameError>,
}

impl Decoder {
    /// A decoder that accepts frames up to `max_frame` bytes (header included).
    pub fn new(max_frame: u32) -> Self {
        Decoder {
            pending: Vec::new(),
            max_frame,
            failed: None,
        }
    }

    /// The largest frame accepted.
    #[inline]
    pub fn max_frame(&self) -> u32 {
        self.max_frame
    }

    /// Bytes buffered for an incomplete frame.
    #[inline]
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// True when the decoder holds no bytes and has not failed: [`Decoder::next`] on an empty
    /// input would return `Ok(None)` and change nothing.
    #[inline]
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty() && self.failed.is_none()
    }

    /// Takes the next complete frame from `input` (after any bytes kept from earlier calls),
    /// advancing `input` past it. When `input` holds no complete frame, its bytes are kept (at most
    /// one frame, so at most `max_frame` bytes) and `Ok(None)` is returned with `input` empty.
    ///
    /// A frame wholly inside `input` is returned borrowed from it (no copy); one that was started in
    /// an earlier call is returned with its bytes moved out of the decoder (no copy either). The
    /// result never borrows the decoder, so the caller may act on the frame while it owns the
    /// decoder's owner again.
    ///
    /// On error the decoder is dead: every later call returns the same error. The caller closes
    /// the session.
    pub fn next<'a>(&mut self, input: &mut &'a [u8]) -> Result<Option<FrameBuf<'a>>, FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if !self.pending.is_empty() {
            self.top_up(input, HEADER_LEN);
            if self.pending.len() >= HEADER_LEN {
                // The flags say whether the sequence extension follows.
                let flags = u16::from_le_bytes([self.pending[6], self.pending[7]]);
                self.top_up(input, header_len(flags));
            }
            let header = match parse_header(&self.pending, self.max_frame) {
                Ok(Some(h)) => h,
                Ok(None) => {
                    debug_assert!(input.is_empty());
                    if let Some(e) = partial_header_error(&self.pending, self.max_frame) {
                        return self.fail(e);
                    }
                    return Ok(None);
                }
                Err(e) => return self.fail(e),
            };
            let need = header.length as usize - self.pending.len();
            let take = need.min(input.len());
            self.pending.extend_from_slice(&input[..take]);
            *input = &input[take..];
            if self.pending.len() < header.length as usize {
                return Ok(None);
            }
            let bytes = std::mem::take(&mut self.pending);
            return Ok(Some(FrameBuf::Assembled { header, bytes }));
        }
        match parse_header(input, self.max_frame) {
            Ok(Some(header)) if input.len() >= header.length as usize => {
                let len = header.length as usize;
                let frame = Frame {
                    header,
                    body: &input[header.header_len()..len],
                };
                *input = &input[len..];
                return Ok(Some(FrameBuf::Borrowed(frame)));
            }
            // Incomplete: keep it. Memory grows with the bytes received, never with the length the
            // peer claims (a 12-byte header must not reserve a megabyte).
            Ok(Some(_)) => {}
            Ok(None) => {
                if let Some(e) = partial_header_error(input, self.max_frame) {
                    return self.fail(e);
                }
            }
            Err(e) => return self.fail(e),
        }
        self.pending.extend_from_slice(input);
        *input = &[];
        debug_assert!(self.pending.len() <= self.max_frame.max(HEADER_LEN as u32) as usize);
        Ok(None)
    }

    /// Decodes every complete frame in `input`, calling `on_frame` for each in order, and keeps a
    /// trailing partial frame for the next call. `on_frame` returns `false` to stop early (the rest
    /// of `input` is discarded: the caller is closing the session). Returns the number of frames
    /// delivered. Errors as [`Decoder::next`]; the frames before a bad one have been delivered.
    pub fn feed(
        &mut self,
        mut input: &[u8],
        mut on_frame: impl FnMut(Frame<'_>) -> bool,
    ) -> Result<usize, FrameError> {
        let mut delivered = 0;
        while let Some(f) = self.next(&mut input)? {
            delivered += 1;
            if !on_frame(f.frame()) {
                break;
            }
        }
        Ok(delivered)
    }

    /// Call when the peer closed the stream: reports a partial frame left behind, if any.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let have = self.pending.len();
        // The length field was checked when its four bytes arrived: it is the frame's size,
        // whether the rest of the header came or not.
        match self.pending.first_chunk::<4>() {
            Some(length) => Err(FrameError::Truncated {
                have,
                need: u32::from_le_bytes(*length) as usize,
            }),
            None => Err(FrameError::TruncatedLength { have }),
        }
    }

    /// Moves bytes from `input` into `pending` until it holds `n` (or `input` is empty).
    fn top_up(&mut self, input: &mut &[u8], n: usize) {
        if self.pending.len() < n {
            let take = (n - self.pending.len()).min(input.len());
            self.pending.extend_from_slice(&input[..take]);
            *input = &input[take..];
        }
    }

    fn fail<T>(&mut self, e: FrameError) -> Result<T, FrameError> {
        self.failed = Some(e.clone());
        self.pending = Vec::new();
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Owned = (FrameHeader, Vec<u8>);

    fn collect(dec: &mut Decoder, input: &[u8], out: &mut Vec<Owned>) -> Result<usize, FrameError> {
        dec.feed(input, |f| {
            out.push((f.header, f.body.to_vec()));
            true
        })
    }

    /// `is_idle` says exactly when `next` on an empty input is a no-op returning `Ok(None)`
    /// (the read path skips that call on its strength).
    #[test]
    fn idle_means_an_empty_input_gives_nothing() {
        let mut dec = Decoder::new(64);
        assert!(dec.is_idle());
        assert!(matches!(dec.next(&mut &[][..]), Ok(None)));
        let frame = encode(4, 0, 1, b"abc");
        assert!(matches!(dec.next(&mut &frame[..5]), Ok(None)));
        assert!(!dec.is_idle(), "holds a partial frame");
        let mut rest = &frame[5..];
        assert!(matches!(
            dec.next(&mut rest),
            Ok(Some(FrameBuf::Assembled { .. }))
        ));
        assert!(dec.is_idle());
        let mut bad = encode(4, 0, 1, b"");
        bad[0] = 3;
        assert!(dec.next(&mut &bad[..]).is_err());
        assert!(!dec.is_idle(), "failed");
        assert!(
            dec.next(&mut &[][..]).is_err(),
            "a failed decoder repeats its error"
        );
    }

    #[test]
    fn documented_example_bytes() {
        let bytes = encode(4, 0, 7, &[0x0a, 0x02, b'h', b'i']);
        assert_eq!(
            bytes,
            [0x10, 0, 0, 0, 4, 0, 0, 0, 7, 0, 0, 0, 0x0a, 0x02, b'h', b'i']
        );
    }

    #[test]
    fn decodes_back_to_back_frames() {
        let mut bytes = encode(4, 0, 1, b"abc");
        encode_into(&mut bytes, 5, FLAG_COMPRESSED, 2, b"");
        let mut dec = Decoder::new(1024);
        let mut out = Vec::new();
        assert_eq!(collect(&mut dec, &bytes, &mut out), Ok(2));
        assert_eq!(out[0].0.opcode, 4);
        assert_eq!(out[0].1, b"abc");
        assert_eq!(out[1].0.request_id, 2);
        assert!(out[1].0.compressed());
        assert_eq!(dec.pending_len(), 0);
        assert_eq!(dec.finish(), Ok(()));
    }

    #[test]
    fn a_length_out_of_range_fails_once_its_four_bytes_arrive() {
        // Shorter than a header, in one read or byte by byte: JSON, an HTTP request line, a
        // too-large and a too-small length.
        for bad in [&b"{\"a\":1}"[..], b"GET /", &[0xff; 4], &[5, 0, 0, 0]] {
            let mut dec = Decoder::new(1024);
            assert!(collect(&mut dec, bad, &mut Vec::new()).is_err(), "{bad:?}");
            let mut dec = Decoder::new(1024);
            let mut res = Ok(0);
            for (i, b) in bad.iter().enumerate() {
                res = collect(&mut dec, std::slice::from_ref(b), &mut Vec::new());
                if i < 3 {
                    assert_eq!(res, Ok(0), "{bad:?}: undecided before 4 bytes");
                }
            }
            assert!(
                matches!(
                    res,
                    Err(FrameError::LengthOutOfRange {
                        min: 12,
                        max: 1024,
                        ..
                    })
                ),
                "{bad:?}: {res:?}"
            );
        }
        // A length of 12..20 waits for the flags: valid unless they announce the extension.
        let mut dec = Decoder::new(1024);
        assert_eq!(collect(&mut dec, &[16, 0, 0, 0, 4], &mut Vec::new()), Ok(0));
        assert_eq!(
            collect(
                &mut dec,
                &[0, FLAG_SEQ as u8, (FLAG_SEQ >> 8) as u8],
                &mut Vec::new()
            ),
            Err(FrameError::LengthOutOfRange {
                length: 16,
                min: 20,
                max: 1024
            })
        );
        // A valid header cut short stays undecided.
        let frame = encode(4, 0, 1, b"abc");
        let mut dec = Decoder::new(1024);
        assert_eq!(collect(&mut dec, &frame[..7], &mut Vec::new()), Ok(0));
        assert_eq!(collect(&mut dec, &frame[7..], &mut Vec::new()), Ok(1));
    }

    #[test]
    fn oversize_frame_is_rejected_before_buffering() {
        let mut dec = Decoder::new(64);
        let bytes = encode(4, 0, 1, &[0u8; 100]);
        let err = collect(&mut dec, &bytes[..HEADER_LEN], &mut Vec::new()).unwrap_err();
        assert_eq!(
            err,
            FrameError::LengthOutOfRange {
                length: 112,
                min: 12,
                max: 64
            }
        );
        assert_eq!(dec.pending_len(), 0, "nothing is kept for a refused frame");
        assert!(
            collect(&mut dec, b"more", &mut Vec::new()).is_err(),
            "dead after error"
        );
    }

    #[test]
    fn a_length_that_is_text_or_tls_says_so() {
        let reason = |first: &[u8]| {
            let mut bytes = first.to_vec();
            bytes.resize(HEADER_LEN, 0);
            collect(&mut Decoder::new(1 << 20), &bytes, &mut Vec::new())
                .unwrap_err()
                .to_string()
        };
        let http = reason(b"GET /ws HTTP/1.1");
        assert!(
            http.starts_with(
                "frame length 542393671 out of range (12..=1048576) (these bytes are text"
            ),
            "{http}"
        );
        assert!(reason(b"{\"op\":1}").contains("text, e.g. HTTP or JSON"));
        assert!(reason(&[0x16, 0x03, 0x01, 0x02, 0x00]).contains("TLS handshake"));
        // A short ClientHello (length in range as a frame length) and a frame that is not one.
        assert!(starts_tls_client_hello(&[
            0x16, 0x03, 0x01, 0x00, 0x6c, 0x01, 0x00
        ]));
        assert!(!starts_tls_client_hello(&encode(1, 0, 1, b"v")));
        assert!(!starts_tls_client_hello(&[0x16, 0x03, 0x01, 0x00, 0x6c]));
        assert_eq!(
            reason(&[0xff, 0xff, 0xff, 0x7f, 4, 0]),
            "frame length 2147483647 out of range (12..=1048576)"
        );
    }

    #[test]
    fn undersize_length_reserved_flags_and_zero_opcode() {
        let mut short = encode(4, 0, 1, b"");
        short[0] = 5;
        assert!(matches!(
            collect(&mut Decoder::new(1024), &short, &mut Vec::new()),
            Err(FrameError::LengthOutOfRange { length: 5, .. })
        ));
        let flags = encode(4, 0x8001, 1, b"");
        assert_eq!(
            collect(&mut Decoder::new(1024), &flags, &mut Vec::new()),
            Err(FrameError::ReservedFlags(0x8000))
        );
        // SEQ announces 8 more header bytes: a 12..19-byte frame with it is too short.
        let no_room = encode(4, FLAG_SEQ, 1, b"1234567");
        assert_eq!(
            collect(&mut Decoder::new(1024), &no_room, &mut Vec::new()),
            Err(FrameError::LengthOutOfRange {
                length: 19,
                min: 20,
                max: 1024
            })
        );
        let zero = encode(0, 0, 1, b"");
        assert_eq!(
            collect(&mut Decoder::new(1024), &zero, &mut Vec::new()),
            Err(FrameError::ZeroOpcode)
        );
    }

    #[test]
    fn sequence_extension_round_trips_split_inside_the_extension() {
        let mut bytes = Vec::new();
        encode_seq_into(&mut bytes, 5, 0, 9, 0xfffffffe, 3, b"pong");
        assert_eq!(bytes.len(), 24);
        assert_eq!(&bytes[6..8], &FLAG_SEQ.to_le_bytes());
        for split in 1..bytes.len() {
            let mut dec = Decoder::new(1024);
            let mut out = Vec::new();
            collect(&mut dec, &bytes[..split], &mut out).unwrap();
            assert!(out.is_empty());
            collect(&mut dec, &bytes[split..], &mut out).unwrap();
            assert_eq!(out.len(), 1, "split at {split}");
            let (h, body) = &out[0];
            assert_eq!((h.seq, h.ack, h.request_id), (0xfffffffe, 3, 9));
            assert!(h.sequenced());
            assert_eq!(body, b"pong");
            assert_eq!(h.body_len(), 4);
        }
        let mut dec = Decoder::new(1024);
        collect(&mut dec, &bytes[..15], &mut Vec::new()).unwrap();
        assert_eq!(
            dec.finish(),
            Err(FrameError::Truncated { have: 15, need: 24 }),
            "a cut inside the extension names the frame's length"
        );
    }

    #[test]
    fn frames_before_a_bad_one_are_delivered() {
        let mut bytes = encode(4, 0, 1, b"ok");
        bytes.extend_from_slice(&[0xff; 16]);
        let mut out = Vec::new();
        let err = collect(&mut Decoder::new(1024), &bytes, &mut out);
        assert!(err.is_err());
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn truncated_then_closed_is_reported() {
        let bytes = encode(4, 0, 1, b"hello");
        // Inside the length field: the frame's size is not known yet.
        let mut dec = Decoder::new(1024);
        collect(&mut dec, &bytes[..3], &mut Vec::new()).unwrap();
        let e = dec.finish().unwrap_err();
        assert_eq!(e, FrameError::TruncatedLength { have: 3 });
        assert_eq!(
            e.to_string(),
            "truncated frame at close (3 of at least 12 bytes)"
        );
        // The length arrived, the rest of the header did not: the frame's length is named, not
        // the header's.
        let mut dec = Decoder::new(1024);
        collect(&mut dec, &bytes[..5], &mut Vec::new()).unwrap();
        let e = dec.finish().unwrap_err();
        assert_eq!(e, FrameError::Truncated { have: 5, need: 17 });
        assert_eq!(e.to_string(), "truncated frame at close (5 of 17 bytes)");
        collect(&mut dec, &bytes[5..14], &mut Vec::new()).unwrap();
        assert_eq!(
            dec.finish(),
            Err(FrameError::Truncated { have: 14, need: 17 })
        );
    }

    #[test]
    fn stop_early_discards_rest() {
        let mut bytes = encode(4, 0, 1, b"a");
        encode_into(&mut bytes, 4, 0, 2, b"b");
        let mut dec = Decoder::new(1024);
        let mut n = 0;
        assert_eq!(
            dec.feed(&bytes, |_| {
                n += 1;
                false
            }),
            Ok(1)
        );
        assert_eq!(n, 1);
    }

    /// `parse_header` as it was written before its fast test (the reference for its errors).
    fn parse_header_reference(
        buf: &[u8],
        max_frame: u32,
    ) -> Result<Option<FrameHeader>, FrameError> {
        let Some(h) = buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let length = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let opcode = u16::from_le_bytes([h[4], h[5]]);
        let flags = u16::from_le_bytes([h[6], h[7]]);
        let request_id = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
        let min = if flags & !KNOWN_FLAGS == 0 {
            header_len(flags)
        } else {
            HEADER_LEN
        };
        if (length as usize) < min || length > max_frame {
            return Err(FrameError::LengthOutOfRange {
                length,
                min: min as u32,
                max: max_frame,
            });
        }
        if flags & !KNOWN_FLAGS != 0 {
            return Err(FrameError::ReservedFlags(flags & !KNOWN_FLAGS));
        }
        if opcode == 0 {
            return Err(FrameError::ZeroOpcode);
        }
        let (seq, ack) = if flags & FLAG_SEQ != 0 {
            let Some(e) = buf.get(HEADER_LEN..HEADER_LEN + EXT_LEN) else {
                return Ok(None);
            };
            (
                u32::from_le_bytes([e[0], e[1], e[2], e[3]]),
                u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
            )
        } else {
            (0, 0)
        };
        Ok(Some(FrameHeader {
            length,
            opcode,
            flags,
            request_id,
            seq,
            ack,
        }))
    }

    /// Header bytes that hit every branch: lengths around 12, 20 and the maximum, every flag
    /// combination that matters, opcode 0 or not, and buffers cut anywhere.
    fn header_bytes() -> impl Strategy<Value = (Vec<u8>, u32)> {
        (
            prop_oneof![0u32..24, 60u32..70, any::<u32>()],
            prop_oneof![Just(0u16), 1u16..4, any::<u16>()],
            prop_oneof![
                Just(0u16),
                Just(FLAG_SEQ),
                Just(FLAG_COMPRESSED | FLAG_SEQ),
                0u16..8,
                any::<u16>()
            ],
            any::<u32>(),
            proptest::collection::vec(any::<u8>(), 0..10),
            0usize..=30,
            prop_oneof![Just(64u32), 12u32..80, any::<u32>()],
        )
            .prop_map(|(length, opcode, flags, rid, ext, cut, max)| {
                let mut b = Vec::new();
                b.extend_from_slice(&length.to_le_bytes());
                b.extend_from_slice(&opcode.to_le_bytes());
                b.extend_from_slice(&flags.to_le_bytes());
                b.extend_from_slice(&rid.to_le_bytes());
                b.extend_from_slice(&ext);
                b.truncate(cut);
                (b, max)
            })
    }

    fn frames_strategy() -> impl Strategy<Value = Vec<(u16, u16, u32, Vec<u8>)>> {
        proptest::collection::vec(
            (
                1u16..,
                prop_oneof![
                    Just(0u16),
                    Just(FLAG_COMPRESSED),
                    Just(FLAG_SEQ),
                    Just(FLAG_SEQ | FLAG_COMPRESSED)
                ],
                any::<u32>(),
                proptest::collection::vec(any::<u8>(), 0..80),
            ),
            0..12,
        )
    }

    proptest! {
        /// The fast header test gives what the reference gives, errors included, for any bytes.
        #[test]
        fn parse_header_matches_the_reference((bytes, max) in header_bytes()) {
            prop_assert_eq!(parse_header(&bytes, max), parse_header_reference(&bytes, max));
        }
    }

    proptest! {
        /// Splitting the stream at every position (two chunks) and at random chunk sizes yields
        /// exactly the frames that were encoded.
        #[test]
        fn split_anywhere_yields_same_frames(frames in frames_strategy(), chunk in 1usize..40) {
            let mut bytes = Vec::new();
            for (op, fl, id, body) in &frames {
                if *fl & FLAG_SEQ != 0 {
                    encode_seq_into(&mut bytes, *op, *fl, *id, *id ^ 0x5555, id.wrapping_mul(7), body);
                } else {
                    encode_into(&mut bytes, *op, *fl, *id, body);
                }
            }
            let expected: Vec<Owned> = frames.iter().map(|(op, fl, id, body)| {
                let mut h = FrameHeader::new((header_len(*fl) + body.len()) as u32, *op, *fl, *id);
                if *fl & FLAG_SEQ != 0 {
                    (h.seq, h.ack) = (*id ^ 0x5555, id.wrapping_mul(7));
                }
                (h, body.clone())
            }).collect();
            for split in 0..=bytes.len() {
                let mut dec = Decoder::new(1 << 20);
                let mut out = Vec::new();
                collect(&mut dec, &bytes[..split], &mut out).unwrap();
                collect(&mut dec, &bytes[split..], &mut out).unwrap();
                prop_assert_eq!(&out, &expected);
                prop_assert_eq!(dec.finish(), Ok(()));
            }
            let mut dec = Decoder::new(1 << 20);
            let mut out = Vec::new();
            for piece in bytes.chunks(chunk) {
                collect(&mut dec, piece, &mut out).unwrap();
            }
            prop_assert_eq!(&out, &expected);
        }

        /// Garbage never panics and never makes the decoder hold more than one max frame.
        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..400), chunk in 1usize..50) {
            let mut dec = Decoder::new(256);
            for piece in data.chunks(chunk) {
                if dec.feed(piece, |_| true).is_err() { break; }
                prop_assert!(dec.pending_len() <= 256);
            }
        }
    }
}

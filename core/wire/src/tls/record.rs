//! TLS record boundaries, watched from outside rustls: the 5-byte header of each record
//! (`type`, `version`, `u16 length`) is read as the bytes go by, so the session can name what is
//! wrong in terms an operator understands before rustls buries it in an alert: plain text or
//! binary frames sent to the TLS port, a record longer than TLS allows, a record cut short when the
//! peer closed.
//!
//! Cost: a few comparisons per record; nothing is copied or kept but the header being read.

/// Largest record body TLS allows on the wire: 2^14 plaintext bytes plus 2048 bytes of expansion
/// (TLS 1.2, RFC 5246 §6.2.3; TLS 1.3 allows only 256, and rustls checks that itself).
pub const MAX_RECORD_BODY: usize = (1 << 14) + 2048;

/// The record header length.
pub const RECORD_HEADER_LEN: usize = 5;

/// Content type of handshake records: a TLS connection must begin with one.
const HANDSHAKE: u8 = 22;

/// Why the byte stream cannot be TLS.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The first record is not a handshake record: the peer does not speak TLS here (a plain
    /// HTTP request or binary frames sent to the TLS port start this way).
    #[error(
        "not a TLS handshake (first bytes {0:02x?}); plain text or frames sent to the TLS port?"
    )]
    NotTls([u8; 3]),
    /// A record header claims more than [`MAX_RECORD_BODY`] bytes.
    #[error("record of {0} bytes exceeds the TLS limit of {MAX_RECORD_BODY}")]
    Oversize(usize),
}

/// Follows record boundaries across arbitrarily split input.
#[derive(Debug, Default, Clone)]
pub struct RecordTracker {
    /// Header bytes of the record being started.
    header: [u8; RECORD_HEADER_LEN],
    /// How many of `header` are filled (0 between records).
    have_header: u8,
    /// Body bytes still to come for the current record.
    body_left: usize,
    /// Body length of the current record (for the truncation report).
    body_len: usize,
    /// Records whose header was read.
    records: u64,
}

impl RecordTracker {
    /// Walks `input`, the next bytes of the stream. Fails at the first header that cannot be
    /// TLS; the caller closes the session (the tracker is then meaningless).
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), RecordError> {
        while !input.is_empty() {
            if self.body_left > 0 {
                let take = self.body_left.min(input.len());
                self.body_left -= take;
                input = &input[take..];
                continue;
            }
            let want = RECORD_HEADER_LEN - self.have_header as usize;
            let take = want.min(input.len());
            let at = self.have_header as usize;
            self.header[at..at + take].copy_from_slice(&input[..take]);
            self.have_header += take as u8;
            input = &input[take..];
            if self.records == 0 && self.have_header as usize >= 1 && self.header[0] != HANDSHAKE {
                return Err(self.not_tls());
            }
            if (self.have_header as usize) < RECORD_HEADER_LEN {
                continue;
            }
            // A ClientHello record says version 3.x (SSL 3.0 to TLS 1.2 record versions).
            if self.records == 0 && self.header[1] != 3 {
                return Err(self.not_tls());
            }
            let len = u16::from_be_bytes([self.header[3], self.header[4]]) as usize;
            if len > MAX_RECORD_BODY {
                return Err(RecordError::Oversize(len));
            }
            self.records += 1;
            self.have_header = 0;
            self.body_len = len;
            self.body_left = len;
        }
        Ok(())
    }

    /// The record cut short when the stream ended here, as `(have, need)` bytes (header
    /// included), or `None` at a record boundary.
    pub fn partial(&self) -> Option<(usize, usize)> {
        if self.have_header > 0 {
            let have = self.have_header as usize;
            let need = if have == RECORD_HEADER_LEN {
                RECORD_HEADER_LEN + self.body_len
            } else {
                RECORD_HEADER_LEN
            };
            Some((have, need))
        } else if self.body_left > 0 {
            let need = RECORD_HEADER_LEN + self.body_len;
            Some((need - self.body_left, need))
        } else {
            None
        }
    }

    /// Records whose header has been read so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    fn not_tls(&self) -> RecordError {
        let mut first = [0u8; 3];
        let n = (self.have_header as usize).min(3);
        first[..n].copy_from_slice(&self.header[..n]);
        RecordError::NotTls(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ty: u8, body: usize) -> Vec<u8> {
        let mut r = vec![ty, 3, 3];
        r.extend_from_slice(&(body as u16).to_be_bytes());
        r.extend(std::iter::repeat_n(0xAA, body));
        r
    }

    #[test]
    fn follows_records_split_anywhere() {
        let mut stream = record(22, 40);
        stream.extend(record(23, 0));
        stream.extend(record(23, 300));
        for split in 0..=stream.len() {
            let mut t = RecordTracker::default();
            t.feed(&stream[..split]).unwrap();
            t.feed(&stream[split..]).unwrap();
            assert_eq!(t.records(), 3);
            assert_eq!(t.partial(), None, "split at {split}");
        }
        let mut t = RecordTracker::default();
        for b in &stream {
            t.feed(std::slice::from_ref(b)).unwrap();
        }
        assert_eq!(t.records(), 3);
    }

    #[test]
    fn plain_text_and_frames_are_not_tls() {
        let mut t = RecordTracker::default();
        let e = t.feed(b"GET / HTTP/1.1\r\n").unwrap_err();
        assert_eq!(e, RecordError::NotTls([b'G', b'E', b'T']));
        assert!(e.to_string().contains("not a TLS handshake"), "{e}");
        // A Lattice frame (length 16, little-endian) is refused at its first byte.
        let mut t = RecordTracker::default();
        assert!(matches!(
            t.feed(&[0x10]),
            Err(RecordError::NotTls([0x10, 0, 0]))
        ));
        // A handshake type byte with a version that is not 3.x.
        let mut t = RecordTracker::default();
        assert!(matches!(
            t.feed(&[22, 9, 1, 0, 5]),
            Err(RecordError::NotTls(_))
        ));
        // Later records may have any type (rustls judges them).
        let mut t = RecordTracker::default();
        t.feed(&record(22, 4)).unwrap();
        t.feed(&record(21, 2)).unwrap();
    }

    #[test]
    fn oversize_record_is_refused_at_its_header() {
        let mut t = RecordTracker::default();
        t.feed(&record(22, 10)).unwrap();
        let e = t.feed(&[23, 3, 3, 0xff, 0xff]).unwrap_err();
        assert_eq!(e, RecordError::Oversize(0xffff));
        let mut t = RecordTracker::default();
        t.feed(&record(22, MAX_RECORD_BODY)).unwrap();
    }

    #[test]
    fn partial_record_reports_have_and_need() {
        let r = record(22, 100);
        let mut t = RecordTracker::default();
        t.feed(&r[..3]).unwrap();
        assert_eq!(t.partial(), Some((3, 5)));
        t.feed(&r[3..5]).unwrap();
        assert_eq!(t.partial(), Some((5, 105)));
        t.feed(&r[5..60]).unwrap();
        assert_eq!(t.partial(), Some((60, 105)));
        t.feed(&r[60..]).unwrap();
        assert_eq!(t.partial(), None);
    }
}

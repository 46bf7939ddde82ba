//! The buffer [`crate::decode`] hands prost: a frame body, lent rather than copied.
//!
//! prost decodes a `bytes` field held as `Vec<u8>` in two steps: it takes the field's bytes as a
//! `bytes::Bytes` (`Buf::copy_to_bytes`), then copies them into the `Vec` and drops the `Bytes`.
//! For a `&[u8]` the first step allocates and copies too (prost issue #571), so every such field
//! cost two allocations, two copies and a free: 465 of the 575 instructions of decoding an echo
//! `Ping` (bench/README.md, "Hot path"). Here the intermediate `Bytes` borrows the body instead,
//! which leaves one allocation and one copy (the `Vec` the message owns).

use prost::bytes::{Buf, Bytes};

/// A frame body being decoded.
pub(crate) struct BodyBuf<'a> {
    rest: &'a [u8],
}

impl<'a> BodyBuf<'a> {
    pub(crate) fn new(body: &'a [u8]) -> BodyBuf<'a> {
        BodyBuf { rest: body }
    }
}

impl Buf for BodyBuf<'_> {
    fn remaining(&self) -> usize {
        self.rest.len()
    }

    fn chunk(&self) -> &[u8] {
        self.rest
    }

    fn advance(&mut self, n: usize) {
        // Panics past the end, as `Buf::advance` documents (prost checks lengths first).
        self.rest = &self.rest[n..];
    }

    fn copy_to_bytes(&mut self, len: usize) -> Bytes {
        // Panics past the end, as `Buf::copy_to_bytes` documents (prost checks lengths first).
        let (head, tail) = self.rest.split_at(len);
        self.rest = tail;
        // SAFETY: the `Bytes` must not outlive the body it borrows. prost calls `copy_to_bytes`
        // in exactly two places (prost 0.14 `encoding.rs`): `bytes::merge`, which hands it to the
        // field's `replace_with` — for a `Vec<u8>` field that copies the bytes out and drops the
        // `Bytes` before `merge` returns — and `Bytes`'s own `replace_with`, which would keep it.
        // No message has a `Bytes` field: build.rs fails the build if one appears. So every
        // `Bytes` made here is dropped inside the `decode` call that lent the body.
        Bytes::from_static(unsafe { std::mem::transmute::<&[u8], &'static [u8]>(head) })
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use crate::{decode, pb, AnyMessage, LatticeMessage};

    /// Decoding through the lent body gives what prost gives from a slice, for a `bytes` field
    /// at every length around the varint boundaries, and the message owns its bytes after the
    /// body is gone.
    #[test]
    fn bytes_fields_decode_like_prost_and_own_their_bytes() {
        for len in [0usize, 1, 2, 127, 128, 300, 16_384, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut body = pb::Ping {
                payload: payload.clone(),
            }
            .encode_to_vec();
            let AnyMessage::Ping(p) = decode(pb::Ping::OPCODE, &body).expect("valid") else {
                panic!("not a Ping");
            };
            body.iter_mut().for_each(|b| *b = 0xff);
            drop(body);
            assert_eq!(p.payload, payload, "len {len}");
        }
    }

    /// A `bytes` field that appears twice keeps the last (protobuf's rule), and a truncated or
    /// overlong length is an error, not a panic.
    #[test]
    fn repeated_and_truncated_bytes_fields() {
        let mut body = pb::Ping {
            payload: b"first".to_vec(),
        }
        .encode_to_vec();
        body.extend(
            pb::Ping {
                payload: b"second!".to_vec(),
            }
            .encode_to_vec(),
        );
        let AnyMessage::Ping(p) = decode(pb::Ping::OPCODE, &body).expect("valid") else {
            panic!("not a Ping");
        };
        assert_eq!(p.payload, b"second!");
        for cut in 1..body.len() {
            let _ = decode(pb::Ping::OPCODE, &body[..cut]);
        }
        // Field 1, length-delimited, length 100 with 3 bytes present.
        assert!(decode(pb::Ping::OPCODE, &[0x0a, 100, 1, 2, 3]).is_err());
        // A length varint that never ends.
        assert!(decode(pb::Ping::OPCODE, &[0x0a, 0xff, 0xff, 0xff]).is_err());
    }
}

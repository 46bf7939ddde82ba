//! A shortcut of [`crate::decode`] for messages whose only field is one `bytes` field (`Ping`,
//! `Pong`, `TokenLogin`): when the body is exactly that field once — its one-byte key, a length
//! varint of at most five bytes and that many bytes — the message is built with one allocation of
//! the exact size and one copy, without prost's field loop.
//!
//! Why: prost merges a `bytes` field held as `Vec<u8>` by growing the empty `Vec` through the
//! out-of-line `reserve` path (`do_reserve_and_handle`, `finish_grow`) and runs its generic key and
//! length decoding around it: ≈ 335 instructions per echo `Ping` at 8 × 8 (bench/README.md,
//! "Hot path"), most of it not the allocation and the copy.
//!
//! Every body this accepts decodes with prost to the same message (prost reads the same key and
//! length, and accepts any varint of up to ten bytes); every other body (empty, a field twice,
//! unknown fields, a longer varint, a truncated or overlong length) returns `None` and goes to
//! prost, which decides and reports errors as before. `decode_tests` checks the agreement.

/// The field's bytes when `body` is exactly `key` (the field's one-byte protobuf key: field number
/// × 8 + 2, for field numbers 1–15), a length varint of at most five bytes, and that many bytes.
/// `None` otherwise. Cost: a few comparisons; no allocation.
#[inline]
pub(crate) fn single_bytes_field(body: &[u8], key: u8) -> Option<&[u8]> {
    let (&k, rest) = body.split_first()?;
    if k != key {
        return None;
    }
    let mut len: u64 = 0;
    for (i, &b) in rest.iter().enumerate().take(5) {
        len |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            let data = &rest[i + 1..];
            return (data.len() as u64 == len).then_some(data);
        }
    }
    None
}

#[cfg(test)]
mod decode_tests {
    use prost::Message;

    use super::single_bytes_field;
    use crate::{decode, pb, AnyMessage, LatticeMessage};

    /// prost's own decoding of a `Ping` body, without the shortcut.
    fn prost_ping(body: &[u8]) -> Option<pb::Ping> {
        pb::Ping::decode(body).ok()
    }

    fn ours(body: &[u8]) -> Option<pb::Ping> {
        match decode(pb::Ping::OPCODE, body) {
            Ok(AnyMessage::Ping(p)) => Some(p),
            Ok(other) => panic!("decoded as {other:?}"),
            Err(_) => None,
        }
    }

    /// The shortcut takes the canonical encoding at every length around the varint boundaries
    /// and gives what prost gives.
    #[test]
    fn canonical_bodies_take_the_shortcut_and_agree_with_prost() {
        for len in [1usize, 2, 127, 128, 129, 300, 16_383, 16_384, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 13 + 1) as u8).collect();
            let body = pb::Ping {
                payload: payload.clone(),
            }
            .encode_to_vec();
            assert_eq!(
                single_bytes_field(&body, 0x0a),
                Some(&payload[..]),
                "len {len}"
            );
            assert_eq!(ours(&body), prost_ping(&body), "len {len}");
            assert_eq!(ours(&body).map(|p| p.payload), Some(payload));
        }
    }

    /// Bodies the shortcut leaves to prost: empty, another key, a field twice, an unknown field
    /// after it, a truncated or overlong length, a varint longer than five bytes — and every
    /// prefix of them. Whatever prost makes of them (a message or an error), `decode` makes too.
    #[test]
    fn other_bodies_go_to_prost_with_the_same_result() {
        let mut twice = pb::Ping {
            payload: b"first".to_vec(),
        }
        .encode_to_vec();
        twice.extend(
            pb::Ping {
                payload: b"second!".to_vec(),
            }
            .encode_to_vec(),
        );
        let mut unknown_after = pb::Ping {
            payload: b"abc".to_vec(),
        }
        .encode_to_vec();
        unknown_after.extend([0x10, 0x01]); // field 2, varint 1
        let cases: Vec<Vec<u8>> = vec![
            vec![],
            vec![0x0a, 0x00],             // empty payload, written out
            vec![0x12, 0x01, 0x61],       // field 2 (unknown): skipped by prost
            vec![0x0b, 0x01, 0x61],       // field 1 with wire type 3
            vec![0x0a, 0x03, 0x61],       // length 3, one byte present
            vec![0x0a, 0x01, 0x61, 0x62], // one byte too many
            vec![0x0a, 0x81, 0x00, 0x61], // overlong varint for 1
            vec![0x0a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00], // six-byte varint for 0
            vec![
                0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
            ],
            twice,
            unknown_after,
        ];
        for body in &cases {
            for cut in 0..=body.len() {
                let b = &body[..cut];
                assert_eq!(ours(b), prost_ping(b), "body {b:02x?}");
            }
        }
        // Those the shortcut must not take (prost decides them).
        assert_eq!(single_bytes_field(&[], 0x0a), None);
        assert_eq!(single_bytes_field(&[0x0a, 0x03, 0x61], 0x0a), None);
        assert_eq!(single_bytes_field(&[0x0a, 0x01, 0x61, 0x62], 0x0a), None);
        assert_eq!(single_bytes_field(&[0x12, 0x01, 0x61], 0x0a), None);
        assert_eq!(
            single_bytes_field(&[0x0a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00], 0x0a),
            None
        );
        // An overlong but short varint is the same length to prost: taken, same result.
        assert_eq!(
            single_bytes_field(&[0x0a, 0x81, 0x00, 0x61], 0x0a),
            Some(&[0x61][..])
        );
    }

    /// Random bodies (a fixed-seed generator): `decode` always agrees with prost.
    #[test]
    fn random_bodies_agree_with_prost() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let n = (next() % 12) as usize;
            let mut body: Vec<u8> = (0..n).map(|_| next() as u8).collect();
            if next() % 2 == 0 && !body.is_empty() {
                body[0] = 0x0a;
            }
            assert_eq!(ours(&body), prost_ping(&body), "body {body:02x?}");
        }
    }
}

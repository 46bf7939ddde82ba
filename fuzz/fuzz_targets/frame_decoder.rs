//! Fuzzes the sans-IO frame decoder and the compressed-body codec.
//!
//! The first input byte picks a chunk size, the rest is the byte stream: fed in chunks, the decoder
//! must never panic, never hold more than one maximum frame, and must deliver exactly the frames a
//! one-shot decode of the same bytes delivers (up to the first error). Every frame body is also
//! inflated as a zlib stream (most are not: the error paths) under a small cap, which must hold;
//! and compressed then inflated, which must give the body back.
#![no_main]

use std::cell::RefCell;

use lattice_wire::compress::{BodyCompressor, CompressConfig};
use lattice_wire::frame::{Decoder, FrameHeader};
use libfuzzer_sys::fuzz_target;

const MAX: u32 = 4096;
/// Small, so bodies that inflate past it (bombs) are within the fuzzer's reach.
const MAX_INFLATED: usize = 2048;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);

    let mut whole = Vec::new();
    let whole_res = Decoder::new(MAX).feed(stream, |f| {
        whole.push((f.header, f.body.to_vec()));
        true
    });

    let mut dec = Decoder::new(MAX);
    let mut pieces = Vec::new();
    let mut piece_res = Ok(0);
    for part in stream.chunks(chunk) {
        piece_res = dec.feed(part, |f| {
            pieces.push((f.header, f.body.to_vec()));
            true
        });
        assert!(dec.pending_len() < MAX as usize);
        if piece_res.is_err() {
            break;
        }
    }
    assert_eq!(whole, pieces);
    assert_eq!(whole_res.is_err(), piece_res.is_err());

    // One codec for the whole run, as a shard keeps one: its zlib state is reused (and reset) across
    // bodies, and building it per input would cost more than the decoding under test.
    CODEC.with_borrow_mut(|codec| check_bodies(codec, &whole));
});

thread_local! {
    static CODEC: RefCell<BodyCompressor> = RefCell::new(BodyCompressor::new(CompressConfig {
        threshold: 0,
        max_inflated: MAX_INFLATED,
        level: 1,
    }));
}

fn check_bodies(codec: &mut BodyCompressor, frames: &[(FrameHeader, Vec<u8>)]) {
    // One output buffer for every body, as a shard reuses its own: the documented bound is on
    // its allocation, which an error leaves in place.
    let mut out = Vec::new();
    for (_, body) in frames {
        out.clear();
        if codec.inflate(body, &mut out).is_ok() {
            assert!(out.len() <= MAX_INFLATED, "inflated past the cap");
        } else {
            assert!(
                out.is_empty(),
                "a failed inflate leaves its output as it was"
            );
        }
        assert!(
            out.capacity() <= MAX_INFLATED + 1,
            "inflate allocated past the cap"
        );

        let mut packed = Vec::new();
        if codec.compress(body, &mut packed) {
            assert!(packed.len() < body.len(), "compressed but not smaller");
            let mut back = Vec::new();
            match codec.inflate(&packed, &mut back) {
                Ok(()) => assert_eq!(&back, body, "round trip changed the body"),
                // Only a body above the cap may be refused on the way back.
                Err(e) => assert!(body.len() > MAX_INFLATED, "round trip failed: {e}"),
            }
        } else {
            assert!(packed.is_empty());
        }
    }
}

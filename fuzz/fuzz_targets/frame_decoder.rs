//! Fuzzes the sans-IO frame decoder and the opcode-dispatched body decoder.
//!
//! The first input byte picks a chunk size, the rest is the byte stream: fed in chunks, the decoder
//! must never panic, never hold more than one maximum frame, and must deliver exactly the frames a
//! one-shot decode of the same bytes delivers (up to the first error).
#![no_main]

use lattice_wire::frame::Decoder;
use libfuzzer_sys::fuzz_target;

const MAX: u32 = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, stream)) = data.split_first() else { return };
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
            // Body decoding by opcode must not panic either.
            let _ = lattice_proto::decode(f.header.opcode, f.body);
            pieces.push((f.header, f.body.to_vec()));
            true
        });
        assert!(dec.pending_len() <= MAX as usize);
        if piece_res.is_err() {
            break;
        }
    }
    assert_eq!(whole, pieces);
    assert_eq!(whole_res.is_err(), piece_res.is_err());
});

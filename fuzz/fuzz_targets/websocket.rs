//! Fuzzes the WebSocket connection state machine (`lattice_wire::ws::WsConn`) with arbitrary
//! bytes, often shaped into masked frames so that deep states are reached, split into arbitrary
//! chunks.
//!
//! Checked besides "no panic": feeding the same bytes in one piece or in chunks gives the same
//! messages, the same control answers and the same error; text messages are valid UTF-8; no
//! message passes the size limit; bytes held stay below the limit plus one header; after a close
//! nothing more is read.
#![no_main]

use lattice_wire::ws::frame::apply_mask;
use lattice_wire::ws::{WsConn, WsError, WsEvent};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});

#[derive(Debug, PartialEq)]
enum Ev {
    Binary(Vec<u8>),
    Text(Vec<u8>),
    Closed(Option<u16>),
}

fn feed(max: usize, text: bool, chunks: &[&[u8]]) -> (Vec<Ev>, Vec<u8>, Option<WsError>) {
    let mut c = WsConn::new(max as u32, text);
    let mut evs = Vec::new();
    let mut out = Vec::new();
    for chunk in chunks {
        let mut owned = chunk.to_vec();
        let mut input: &mut [u8] = &mut owned;
        loop {
            match c.next(&mut input, &mut out) {
                Ok(Some(ev)) => evs.push(match ev {
                    WsEvent::Binary(p) => Ev::Binary(p.as_slice().to_vec()),
                    WsEvent::Text(p) => {
                        assert!(std::str::from_utf8(p.as_slice()).is_ok());
                        Ev::Text(p.as_slice().to_vec())
                    }
                    WsEvent::Closed(code) => Ev::Closed(code),
                }),
                Ok(None) => {
                    assert!(input.is_empty());
                    break;
                }
                Err(e) => return (evs, out, Some(e)),
            }
            assert!(c.buffered() <= max + 14, "holding {}", c.buffered());
        }
        if c.close_received() {
            let mut more = [0x81u8, 0x80, 0, 0, 0, 0];
            let mut input: &mut [u8] = &mut more;
            assert_eq!(c.next(&mut input, &mut out), Ok(None), "input after close");
        }
    }
    for e in &evs {
        if let Ev::Binary(b) | Ev::Text(b) = e {
            assert!(b.len() <= max);
        }
    }
    (evs, out, None)
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let max = u.int_in_range(0..=300usize)?;
    let text = u.arbitrary()?;
    let mut bytes = Vec::new();
    while !u.is_empty() && bytes.len() < 4096 {
        if u.ratio(1, 4)? {
            let n = u.int_in_range(0..=20usize)?;
            bytes.extend_from_slice(u.bytes(n.min(u.len()))?);
            continue;
        }
        // A well-formed masked frame header with arbitrary bits, then its payload.
        let b0: u8 = u.arbitrary()?;
        let b0 = if u.ratio(3, 4)? { b0 & 0x8f } else { b0 };
        let n = u.int_in_range(0..=400usize)?.min(u.len());
        let payload = u.bytes(n)?;
        bytes.push(b0);
        let mask_bit = if u.ratio(15, 16)? { 0x80 } else { 0 };
        if n < 126 {
            bytes.push(mask_bit | n as u8);
        } else {
            bytes.push(mask_bit | 126);
            bytes.extend_from_slice(&(n as u16).to_be_bytes());
        }
        let mask: [u8; 4] = u.arbitrary()?;
        if mask_bit != 0 {
            bytes.extend_from_slice(&mask);
        }
        let mut p = payload.to_vec();
        apply_mask(&mut p, mask, 0);
        bytes.extend_from_slice(&p);
    }
    let mut chunks = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let n = (u.int_in_range(1..=64usize).unwrap_or(64)).min(bytes.len() - at);
        chunks.push(&bytes[at..at + n]);
        at += n;
    }
    let whole = feed(max, text, &[&bytes]);
    let split = feed(max, text, &chunks);
    assert_eq!(whole, split);
    Ok(())
}

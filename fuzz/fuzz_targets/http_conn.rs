//! Fuzzes the HTTP/1.1 connection state machine (`lattice_wire::http::HttpConn`): arbitrary
//! bytes in arbitrary chunks at arbitrary times, each request answered (keep-alive or not), the
//! head deadline fired now and then.
//!
//! Checked besides "no panic": the bytes held never pass one request's bound plus one chunk
//! (head ≤ max_head, body ≤ max_body); a failure answers exactly once with the error's status and
//! ends the connection; requests come out only while none waits for its response; a request's
//! body has the length its head announced; the same bytes fed in one piece give the same
//! requests (up to the first failure).
#![no_main]

use std::time::Duration;

use lattice_wire::http::{HttpConn, HttpLimits, Next, Request, Response};
use lattice_wire::MonoTime;
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});

fn limits(u: &mut Unstructured<'_>) -> Result<HttpLimits> {
    Ok(HttpLimits {
        max_head: u.int_in_range(16..=512)?,
        max_headers: u.int_in_range(1..=16)?,
        max_body: u.int_in_range(0..=256)?,
        head_timeout: Duration::from_nanos(u.int_in_range(0..=1000)?),
    })
}

/// Requests and the failure (if any) of feeding `chunks`, answering each request at once.
fn drive(l: HttpLimits, chunks: &[&[u8]]) -> (Vec<Request>, Option<u16>) {
    let mut c = HttpConn::new(l, MonoTime(0));
    let mut reqs = Vec::new();
    let mut out = Vec::new();
    for chunk in chunks {
        c.feed(MonoTime(1), chunk);
        loop {
            match c.next_request(&mut out) {
                Next::Wait => break,
                Next::Failed(e) => return (reqs, Some(e.status())),
                Next::Request(r) => {
                    let keep = c.respond(&Response::text(200, ""), &mut out);
                    reqs.push(r);
                    if !keep {
                        return (reqs, None);
                    }
                }
            }
        }
    }
    (reqs, None)
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let l = limits(u)?;
    let mut c = HttpConn::new(l, MonoTime(0));
    let mut now = MonoTime(0);
    let mut fed: Vec<Vec<u8>> = Vec::new();
    let mut out = Vec::new();
    let mut waiting = false;
    let mut done = false;
    let mut max_chunk = 0usize;
    while !u.is_empty() {
        match u.int_in_range(0..=3u8)? {
            0 | 1 => {
                now = MonoTime(now.0 + u.int_in_range(0..=100u64)?);
                let n = u.int_in_range(0..=300usize)?;
                let bytes = u.bytes(n.min(u.len()))?;
                max_chunk = max_chunk.max(bytes.len());
                if c.wants_input() {
                    c.feed(now, bytes);
                    fed.push(bytes.to_vec());
                }
                let before = out.len();
                match c.next_request(&mut out) {
                    Next::Wait => assert_eq!(out.len(), before),
                    Next::Request(r) => {
                        assert!(!waiting && !done, "a request while one waits");
                        waiting = true;
                        let cl = r
                            .header("content-length")
                            .map_or(0, |v| v.parse::<usize>().unwrap());
                        assert_eq!(r.body.len(), cl);
                        assert!(r.body.len() <= l.max_body);
                        assert!(!c.wants_input());
                    }
                    Next::Failed(e) => {
                        assert!(!done);
                        done = true;
                        let text = String::from_utf8(out[before..].to_vec()).unwrap();
                        assert!(
                            text.starts_with(&format!("HTTP/1.1 {} ", e.status())),
                            "{text}"
                        );
                        assert!(text.contains("Connection: close\r\n"));
                        assert!(!c.wants_input());
                    }
                }
            }
            2 if waiting => {
                waiting = false;
                let keep = c.respond(&Response::text(204, ""), &mut out);
                if !keep {
                    done = true;
                }
            }
            _ => {
                now = MonoTime(now.0 + u.int_in_range(0..=2000u64)?);
                let before = out.len();
                let deadline = c.poll_timeout();
                if let Some(e) = c.handle_timeout(now, &mut out) {
                    assert!(deadline.is_some_and(|d| now >= d));
                    assert_eq!(e.status(), 408);
                    assert!(out[before..].starts_with(b"HTTP/1.1 408 "));
                    done = true;
                }
            }
        }
        assert!(
            c.buffered() <= l.max_head + l.max_body + max_chunk,
            "holding {} bytes",
            c.buffered()
        );
        if done {
            assert!(!c.wants_input());
        }
    }
    // Chunking does not change what is parsed (answering every request at once).
    let pieces: Vec<&[u8]> = fed.iter().map(|v| v.as_slice()).collect();
    let whole: Vec<u8> = fed.concat();
    let (a, fa) = drive(l, &pieces);
    let (b, fb) = drive(l, &[&whole]);
    assert_eq!(a, b);
    assert_eq!(fa, fb);
    Ok(())
}

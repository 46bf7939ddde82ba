//! Reads at the edges of the read buffer, on both drivers: input that arrives after a short read
//! (one that did not fill the buffer) still wakes the session, an end of stream that came with the
//! last bytes is still seen, and reads that fill the buffer keep reading. They guard any change to
//! how the connection task reads after a short read (bench/README.md "Hot path": forgetting the
//! read readiness after a short read was measured and not adopted).

mod common;

use std::io::Write;

use common::*;
use lattice_proto::{pb, AnyMessage};

const DRIVERS: [&str; 2] = ["uring", "epoll"];

fn start(driver: &str, extra: &[&str]) -> Lattice {
    let mut args = vec!["--runtime.driver", driver];
    args.extend_from_slice(extra);
    let l = Lattice::start(&args);
    // The driver asked for is the one that runs, on both shards. A shard sets its gauge when it
    // starts, which may come after the listener accepts: look again (bounded) until both have.
    let on = |m: &str| {
        (0..2)
            .filter(|s| {
                m.contains(&format!(
                    "lattice_shard_driver{{shard=\"{s}\",driver=\"{driver}\"}} 1"
                ))
            })
            .count()
    };
    let mut metrics = l.metrics();
    for _ in 0..200 {
        if on(&metrics) == 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        metrics = l.metrics();
    }
    assert_eq!(
        on(&metrics),
        2,
        "driver {driver} not in use on both shards:\n{metrics}"
    );
    l
}

fn ping(rid: u32, payload: Vec<u8>) -> Vec<u8> {
    encode(rid, &pb::Ping { payload })
}

fn expect_pong(c: &mut Client, rid: u32, payload: &[u8]) {
    let f = c.recv();
    assert_eq!(f.request_id, rid);
    match f.decode() {
        AnyMessage::Pong(p) => assert_eq!(p.payload, payload),
        other => panic!("expected Pong, got {other:?}"),
    }
}

#[test]
fn input_after_a_short_read_wakes_the_session() {
    for driver in DRIVERS {
        let l = start(driver, &[]);
        let mut c = l.connect();
        // Each step is a short read on the server: half a frame, then the rest after the
        // server has read (and forgotten the readiness of) the first half, many times over.
        for rid in 1..=50u32 {
            let frame = ping(rid, vec![rid as u8; 40]);
            let (a, b) = frame.split_at(frame.len() / 2);
            c.s.write_all(a).unwrap();
            c.s.flush().unwrap();
            // A round trip on another session gives the server time to read the half on its
            // own (no sleep; if it has not, it reads the whole frame at once, which also works).
            let mut other = l.connect();
            other.send(1, &pb::Ping { payload: vec![9] });
            other.recv();
            c.s.write_all(b).unwrap();
            expect_pong(&mut c, rid, &[rid as u8; 40]);
        }
    }
}

#[test]
fn end_of_stream_with_the_last_bytes_is_seen() {
    for driver in DRIVERS {
        let l = start(driver, &[]);
        let mut c = l.connect();
        // The frame and the FIN usually arrive together: one short read returns the frame,
        // and the end of stream must still be seen after the readiness was forgotten.
        c.s.write_all(&ping(7, b"last".to_vec())).unwrap();
        c.s.shutdown(std::net::Shutdown::Write).unwrap();
        expect_pong(&mut c, 7, b"last");
        assert!(
            c.closed_by_server(),
            "{driver}: the server did not see the end of stream"
        );
    }
}

#[test]
fn reads_that_fill_the_buffer_keep_reading() {
    for driver in DRIVERS {
        // A 4 KiB read buffer and 200 pipelined frames of 112 bytes in one write: several full
        // reads (the readiness stays) and a short one at the end.
        let l = start(driver, &["--net.read_buffer", "4096"]);
        let mut c = l.connect();
        let mut burst = Vec::new();
        for rid in 1..=200u32 {
            burst.extend(ping(rid, vec![(rid % 251) as u8; 100]));
        }
        assert!(burst.len() > 4 * 4096);
        c.s.write_all(&burst).unwrap();
        for rid in 1..=200u32 {
            expect_pong(&mut c, rid, &[(rid % 251) as u8; 100]);
        }
    }
}

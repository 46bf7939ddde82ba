//! Bad input: every kind has a defined outcome, never panics a shard, never affects other sessions.

mod common;

use std::io::{Read, Write};

use common::*;
use lattice_proto::{error_code, pb, AnyMessage};

fn ping_ok(c: &mut Client, rid: u32) {
    c.send(
        rid,
        &pb::Ping {
            payload: b"still here".to_vec(),
        },
    );
    let f = c.recv();
    assert_eq!(f.request_id, rid);
    assert!(matches!(f.decode(), AnyMessage::Pong(_)));
}

#[test]
fn unknown_opcode_is_skipped_with_an_error_and_counted() {
    let l = Lattice::start(&[]);
    let mut c = l.connect();
    c.send_raw(&raw(999, 0, 5, b"whatever"));
    let f = c.recv();
    assert_eq!(f.request_id, 5);
    let e = expect_error(&f, error_code::UNKNOWN_OPCODE);
    assert_eq!(e.opcode, 999);
    ping_ok(&mut c, 6);
    assert_eq!(l.metric_total("lattice_unknown_opcode_total"), 1);
}

#[test]
fn undecodable_body_is_bad_request_and_session_survives() {
    let l = Lattice::start(&[]);
    let mut c = l.connect();
    c.send_raw(&raw(4, 0, 9, &[0x0a, 0x05, 1]));
    expect_error(&c.recv(), error_code::BAD_REQUEST);
    ping_ok(&mut c, 10);
    assert_eq!(l.metric_total("lattice_bad_request_total"), 1);
}

/// A server-to-client message is `NOT_ALLOWED` "not a request message" whatever its body: a body
/// that does not decode as that message is not a `BAD_REQUEST` (a `Say` sent under `Said`'s
/// opcode was told how `Said.from` misdecodes).
#[test]
fn a_server_to_client_message_is_not_a_request_whatever_its_body() {
    let l = Lattice::start(&[]);
    let mut c = l.connect();
    let say = prost::Message::encode_to_vec(&pb::Say {
        room: "r".into(),
        text: "x".into(),
    });
    for (rid, op, body) in [
        (3, lattice_proto::opcode::SAID, &say[..]),
        (4, lattice_proto::opcode::SAID, &[][..]),
        (5, lattice_proto::opcode::PONG, &[0x0a, 9, b'a'][..]),
        (6, lattice_proto::opcode::WELCOME, &[0xff][..]),
    ] {
        c.send_raw(&raw(op, 0, rid, body));
        let f = c.recv();
        assert_eq!(f.request_id, rid);
        let e = expect_error(&f, error_code::NOT_ALLOWED);
        assert_eq!(e.message, "not a request message", "opcode {op}");
    }
    ping_ok(&mut c, 10);
    assert_eq!(l.metric_total("lattice_bad_request_total"), 0);
}

#[test]
fn server_internal_opcode_is_rejected_and_counted() {
    let l = Lattice::start(&[]);
    let mut c = l.connect();
    c.send_raw(&raw(lattice_proto::opcode::RELAY, 0, 3, b""));
    expect_error(&c.recv(), error_code::NOT_ALLOWED);
    ping_ok(&mut c, 4);
    assert_eq!(l.metric_total("lattice_rejected_internal_total"), 1);
}

#[test]
fn hello_must_come_first_and_incompatible_major_is_refused() {
    let l = Lattice::start(&[]);
    let mut c = Client::connect_raw(l.port);
    c.send(1, &pb::Ping { payload: vec![] });
    expect_error(&c.recv(), error_code::NOT_ALLOWED);
    assert!(c.closed_by_server());

    let mut c = Client::connect_raw(l.port);
    c.send(
        1,
        &pb::Hello {
            client_version: "99.0.0-release".into(),
            ..Default::default()
        },
    );
    let e = expect_error(&c.recv(), error_code::VERSION_MISMATCH);
    assert!(e.message.contains("99.0.0"), "{}", e.message);
    assert!(c.closed_by_server());

    let mut c = Client::connect_raw(l.port);
    c.send(
        1,
        &pb::Hello {
            client_version: "one.two".into(),
            ..Default::default()
        },
    );
    expect_error(&c.recv(), error_code::VERSION_MISMATCH);
    assert!(c.closed_by_server());
    l.wait_log("is not supported: server speaks");
}

/// Before an accepted Hello, any other frame — unknown opcode, server-internal opcode, an
/// undecodable Hello — is answered with an error and closes the session.
#[test]
fn anything_but_an_acceptable_hello_first_closes_the_session() {
    let l = Lattice::start(&[]);
    for (bytes, code) in [
        (raw(999, 0, 5, b""), error_code::NOT_ALLOWED),
        (raw(1000, 0, 5, b""), error_code::NOT_ALLOWED),
        (raw(1, 0, 5, &[0x0a, 100, 1]), error_code::BAD_REQUEST),
    ] {
        let mut c = Client::connect_raw(l.port);
        c.send_raw(&bytes);
        let f = c.recv();
        assert_eq!(f.request_id, 5);
        expect_error(&f, code);
        assert!(
            c.closed_by_server(),
            "opcode {} left the session open",
            f.opcode
        );
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while l.metric_total("lattice_not_hello_total") < 3 {
        assert!(std::time::Instant::now() < deadline, "{}", l.metrics());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // A second Hello on a greeted session is answered with Welcome and the same session id.
    let mut c = l.connect();
    c.send(
        7,
        &pb::Hello {
            client_version: lattice_proto::version::PROTOCOL.to_string(),
            ..Default::default()
        },
    );
    let f = c.recv();
    assert_eq!(f.request_id, 7);
    match f.decode() {
        AnyMessage::Welcome(w) => assert_eq!(w.session_id, c.session_id),
        other => panic!("expected Welcome, got {other:?}"),
    }
    ping_ok(&mut c, 8);
    // A later Hello is checked like the first: one that does not decode is refused and closes
    // the greeted session too.
    c.send_raw(&raw(1, 0, 9, &[0x0a, 100, 1]));
    let f = c.recv();
    assert_eq!(f.request_id, 9);
    assert_eq!(expect_error(&f, error_code::BAD_REQUEST).opcode, 1);
    assert!(
        c.closed_by_server(),
        "a refused later Hello left the session open"
    );
    // A Resume first frame whose body does not decode: BAD_REQUEST, then close.
    let mut c = Client::connect_raw(l.port);
    c.send_raw(&raw(lattice_proto::opcode::RESUME, 0, 4, &[0x0a, 100, 1]));
    let f = c.recv();
    assert_eq!(f.request_id, 4);
    assert_eq!(
        expect_error(&f, error_code::BAD_REQUEST).opcode,
        lattice_proto::opcode::RESUME as u32
    );
    assert!(c.closed_by_server());
}

/// A session the server closes while its client is still writing (here: a rate limit with
/// policy `close`): the server half-closes and drains, so the client reads every answer, then a
/// clean end of stream, and none of its writes fails on a reset meanwhile.
#[test]
fn a_client_still_writing_when_closed_reads_every_answer_then_a_clean_end() {
    let l = Lattice::start(&[
        "--limits.session_msgs_per_s",
        "1",
        "--limits.session_msgs_burst",
        "3",
        "--limits.session_msgs_policy",
        "close",
        "--limits.session_close_after",
        "3",
    ]);
    let mut c = l.connect();
    let mut w = c.s.try_clone().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let writer = std::thread::spawn(move || {
        let ping = pb::Ping {
            payload: vec![7; 64],
        };
        let mut body = Vec::new();
        prost::Message::encode(&ping, &mut body).unwrap();
        let mut rid = 100u32;
        while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
            rid += 1;
            if let Err(e) = w.write_all(&raw(lattice_proto::opcode::PING, 0, rid, &body)) {
                return Some(e);
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        None
    });
    let mut answers = Vec::new();
    let mut buf = Vec::new();
    let mut tmp = [0u8; 65536];
    let end = loop {
        while let Some(f) = take_frame(&mut buf) {
            answers.push(f.decode());
        }
        match c.s.read(&mut tmp) {
            Ok(0) => break Ok(()),
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e) => break Err(e),
        }
    };
    // The writer ran on after the end of stream reached us: the server still read its input.
    std::thread::sleep(std::time::Duration::from_millis(50));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let write_error = writer.join().unwrap();
    assert!(end.is_ok(), "read ended with {end:?} after {answers:?}");
    assert!(write_error.is_none(), "a write failed: {write_error:?}");
    let refused = answers
        .iter()
        .filter(|a| matches!(a, AnyMessage::Error(e) if e.code == error_code::RATE_LIMITED))
        .count();
    assert_eq!(refused, 3, "{answers:?}");
    assert!(
        matches!(answers.last(), Some(AnyMessage::Error(_))),
        "the last refusal is the last frame: {answers:?}"
    );
    assert!(matches!(answers[0], AnyMessage::Pong(_)), "{answers:?}");
}

/// One reply larger than net.send_buffer_limit still fits an empty queue: a client that reads
/// gets it and stays connected.
#[test]
fn one_reply_above_the_send_buffer_limit_is_delivered() {
    let l = Lattice::start(&["--net.send_buffer_limit", "4096"]);
    let mut c = l.connect();
    let payload = common::noise(100_000, 0x9e37_79b9_7f4a_7c15);
    c.send(
        3,
        &pb::Ping {
            payload: payload.clone(),
        },
    );
    let f = c.recv();
    assert_eq!(
        (f.opcode, f.request_id, f.flags),
        (5, 3, 0),
        "incompressible: sent plain"
    );
    match f.decode() {
        AnyMessage::Pong(p) => assert_eq!(p.payload, payload),
        other => panic!("expected Pong, got {other:?}"),
    }
    ping_ok(&mut c, 4);
    assert_eq!(
        l.metric_total("lattice_sessions_closed_send_overflow_total"),
        0
    );
}

/// A malformed stream closes that session only, with its reason logged and counted.
fn closes_only_the_offender(bad: &[u8], reason: &str) {
    let l = Lattice::start(&["--net.max_frame", "4096"]);
    let mut good = l.connect();
    let mut bad_c = l.connect();
    bad_c.send_raw(bad);
    assert!(
        bad_c.closed_by_server(),
        "server must close a session that sent {reason}"
    );
    l.wait_log(reason);
    ping_ok(&mut good, 1);
    assert_eq!(l.metric_total("lattice_sessions_closed_protocol_total"), 1);
}

#[test]
fn oversize_frame_closes_the_session() {
    let mut f = raw(4, 0, 1, b"");
    f[0..4].copy_from_slice(&5000u32.to_le_bytes());
    closes_only_the_offender(&f, "frame length 5000 out of range");
}

#[test]
fn undersize_length_closes_the_session() {
    closes_only_the_offender(
        &[3, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0],
        "frame length 3 out of range",
    );
}

#[test]
fn reserved_flags_close_the_session() {
    closes_only_the_offender(&raw(4, 0x0100, 1, b""), "reserved flag bits");
}

#[test]
fn garbage_closes_the_session() {
    closes_only_the_offender(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n", "out of range");
}

#[test]
fn truncated_then_closed_is_logged() {
    let l = Lattice::start(&[]);
    let mut c = l.connect();
    let f = encode(
        2,
        &pb::Ping {
            payload: vec![7; 100],
        },
    );
    c.s.write_all(&f[..50]).unwrap();
    c.s.shutdown(std::net::Shutdown::Both).unwrap();
    l.wait_log("truncated frame at close (50 of 114 bytes)");
    // A cut inside the header, after the length field: the frame's length is named (16), not the
    // header's size.
    let ping = encode(
        3,
        &pb::Ping {
            payload: b"hi".to_vec(),
        },
    );
    assert_eq!(ping.len(), 16);
    let mut c = l.connect();
    c.s.write_all(&ping[..7]).unwrap();
    c.s.shutdown(std::net::Shutdown::Both).unwrap();
    l.wait_log("truncated frame at close (7 of 16 bytes)");
    // A cut inside the length field: only the least a frame takes is known.
    let mut c = l.connect();
    c.s.write_all(&ping[..2]).unwrap();
    c.s.shutdown(std::net::Shutdown::Both).unwrap();
    l.wait_log("truncated frame at close (2 of at least 12 bytes)");
    assert_eq!(l.metric_total("lattice_sessions_closed_protocol_total"), 3);
}

#[test]
fn split_frames_byte_by_byte_are_reassembled() {
    let l = Lattice::start(&[]);
    let mut c = l.connect();
    let mut bytes = encode(
        40,
        &pb::Ping {
            payload: b"abc".to_vec(),
        },
    );
    bytes.extend(encode(
        41,
        &pb::Ping {
            payload: b"def".to_vec(),
        },
    ));
    for b in bytes {
        c.s.write_all(&[b]).unwrap();
    }
    assert_eq!(c.recv().request_id, 40);
    assert_eq!(c.recv().request_id, 41);
}

#[test]
fn compressed_request_round_trips_and_bomb_closes() {
    use flate2::write::ZlibEncoder;
    let l = Lattice::start(&[
        "--compress.threshold",
        "64",
        "--compress.max_inflated",
        "65536",
    ]);
    let mut c = l.connect();
    let payload = vec![b'x'; 5000];
    let body = prost::Message::encode_to_vec(&pb::Ping {
        payload: payload.clone(),
    });
    let mut z = ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&body).unwrap();
    let zbody = z.finish().unwrap();
    c.send_raw(&raw(4, 1, 8, &zbody));
    let f = c.recv();
    assert_eq!(f.flags, 1, "reply above the threshold is compressed");
    let mut inflated = Vec::new();
    std::io::copy(
        &mut flate2::read::ZlibDecoder::new(&f.body[..]),
        &mut inflated,
    )
    .unwrap();
    let pong: pb::Pong = prost::Message::decode(&inflated[..]).unwrap();
    assert_eq!(pong.payload, payload);

    // 10 MB of zeros inflating past the 64 KiB cap.
    let mut z = ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(&vec![0u8; 10 << 20]).unwrap();
    let bomb = z.finish().unwrap();
    assert!(bomb.len() < 64 << 10);
    let mut b = l.connect();
    b.send_raw(&raw(4, 1, 9, &bomb));
    assert!(b.closed_by_server());
    l.wait_log("inflates beyond the cap");
    ping_ok(&mut c, 11);
}

#[test]
fn slow_reader_is_closed_for_send_buffer_overflow() {
    let l = Lattice::start(&["--net.send_buffer_limit", "65536"]);
    let mut c = l.connect();
    // Never read; the kernel buffers fill, then the session's buffer passes its limit.
    // Incompressible payload, so the Pongs stay large (bodies above compress.threshold are zlib'd).
    let payload = common::noise(60_000, 0x2545_f491_4f6c_dd1d);
    let big = encode(1, &pb::Ping { payload });
    // The close lingers (the server reads and drops what is still sent, for up to
    // session.close_linger_ms) and is logged once the socket is gone.
    for _ in 0..2000 {
        if c.s.write_all(&big).is_err() || l.logs().contains("send buffer overflow") {
            break;
        }
    }
    l.wait_log("reason=send buffer overflow");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while l.metric_total("lattice_sessions_closed_send_overflow_total") != 1 {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mut other = l.connect();
    ping_ok(&mut other, 2);
}

/// Reads `s` to its end: the bytes, and how the stream ended (`Ok` for a clean end of stream).
fn read_until_end(s: &mut std::net::TcpStream) -> (Vec<u8>, std::io::Result<()>) {
    let mut all = Vec::new();
    let mut tmp = [0u8; 65536];
    loop {
        match s.read(&mut tmp) {
            Ok(0) => return (all, Ok(())),
            Ok(n) => all.extend_from_slice(&tmp[..n]),
            Err(e) => return (all, Err(e)),
        }
    }
}

/// A client that writes many large requests in one go and reads nothing (a small receive
/// buffer): the server closes its session for `send buffer overflow` while requests are still
/// unread in its socket. That close lingers like every other: the client, reading afterwards,
/// gets the replies already written to the socket (the ones still queued are not written), then
/// a clean end of stream, not a reset that would destroy them. `frame` wraps one Lattice frame
/// for the transport; `unwrap` takes the Lattice frames back out of what the client read.
fn an_overflow_close_lingers(
    mut s: std::net::TcpStream,
    l: &Lattice,
    frame: fn(Vec<u8>) -> Vec<u8>,
    unwrap: fn(Vec<u8>) -> Vec<u8>,
) {
    socket2::SockRef::from(&s)
        .set_recv_buffer_size(65536)
        .unwrap();
    // Incompressible: the Pongs stay as large as the Pings. 200 of 60 KB pass what the kernel
    // buffers and the 64 KiB queue hold between them.
    let payload = common::noise(60_000, 0x9e37_79b9_7f4a_7c15);
    let requests: Vec<u8> = (0..200u32)
        .flat_map(|i| {
            frame(encode(
                2 + i,
                &pb::Ping {
                    payload: payload.clone(),
                },
            ))
        })
        .collect();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || w.write_all(&requests));
    l.wait_log("reason=send buffer overflow");
    // The server reads and drops the rest of the requests while it lingers.
    let written = writer.join().unwrap();
    // Read now with a normal buffer (4 KiB windows would make it crawl).
    socket2::SockRef::from(&s)
        .set_recv_buffer_size(1 << 20)
        .unwrap();
    let (bytes, end) = read_until_end(&mut s);
    assert!(
        end.is_ok(),
        "read {} bytes, then {end:?} instead of a clean end of stream",
        bytes.len()
    );
    assert!(written.is_ok(), "a write failed on a reset: {written:?}");
    let mut frames = unwrap(bytes);
    let mut rids = Vec::new();
    while let Some(f) = take_frame(&mut frames) {
        if f.opcode == lattice_proto::opcode::PONG {
            rids.push(f.request_id);
        }
    }
    assert!(
        !rids.is_empty(),
        "no reply arrived before the end of stream"
    );
    let expected: Vec<u32> = (2..2 + rids.len() as u32).collect();
    assert_eq!(rids, expected, "the replies written, in order");
    assert_eq!(
        l.metric_total("lattice_sessions_closed_send_overflow_total"),
        1
    );
}

#[test]
fn a_send_buffer_overflow_close_lingers_over_tcp() {
    let l = Lattice::start(&["--net.send_buffer_limit", "65536"]);
    let c = l.connect();
    an_overflow_close_lingers(c.s, &l, |f| f, |b| b);
}

#[test]
fn a_send_buffer_overflow_close_lingers_over_websocket() {
    let l = Lattice::start(&["--net.send_buffer_limit", "65536"]);
    let c = WsClient::connect(l.http);
    // Client frames are masked (with a zero mask: the payload goes as it is); server frames are
    // not, and carry one Lattice frame each.
    let frame = |payload: Vec<u8>| {
        let mut v = vec![0x82, 0x80 | 127];
        v.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        v.extend_from_slice(&[0; 4]);
        v.extend(payload);
        v
    };
    let unwrap = |bytes: Vec<u8>| {
        let mut frames = Vec::new();
        let mut at = 0;
        while at + 2 <= bytes.len() {
            let (len, head) = match bytes[at + 1] & 0x7f {
                126 if at + 4 <= bytes.len() => (
                    u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]) as usize,
                    4,
                ),
                127 if at + 10 <= bytes.len() => (
                    u64::from_be_bytes(bytes[at + 2..at + 10].try_into().unwrap()) as usize,
                    10,
                ),
                126 | 127 => break,
                n => (n as usize, 2),
            };
            if at + head + len > bytes.len() {
                break;
            }
            if bytes[at] & 0x0f == 2 {
                frames.extend_from_slice(&bytes[at + head..at + head + len]);
            }
            at += head + len;
        }
        frames
    };
    an_overflow_close_lingers(c.s, &l, frame, unwrap);
}

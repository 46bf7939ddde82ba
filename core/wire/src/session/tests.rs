use super::*;
use crate::frame::{encode, encode_into, encode_seq_into, parse_header, HEADER_LEN};
use crate::rate::{RateLimit, RatePolicy};

const MS: u64 = 1_000_000;

fn limits() -> SessionLimits {
    SessionLimits::basic(1024, 100, Some(Duration::from_millis(50)))
}

fn session() -> Session {
    Session::new(SessionId::new(0, 1, 0), limits(), MonoTime(0))
}

/// Feeds `bytes` on binding `b` and collects (opcode, request id, body) of every frame for the
/// application.
fn drain_on(
    s: &mut Session,
    b: Binding,
    now: u64,
    bytes: &[u8],
) -> Result<Vec<(u16, u32, Vec<u8>)>, CloseReason> {
    let mut input = bytes;
    let mut out = Vec::new();
    while let Some(i) = s.receive(b, MonoTime(now), &mut input)? {
        if let Input::Frame(f) = i {
            let f = f.frame();
            out.push((f.header.opcode, f.header.request_id, f.body.to_vec()));
        }
    }
    assert!(input.is_empty());
    Ok(out)
}

fn drain(s: &mut Session, now: u64, bytes: &[u8]) -> Result<Vec<(u16, u32, Vec<u8>)>, CloseReason> {
    let b = s.binding();
    drain_on(s, b, now, bytes)
}

/// Everything the socket of `b` would write, as (opcode, flags, request id, seq, ack) per frame.
fn written(s: &mut Session, b: Binding) -> Vec<(u16, u16, u32, u32, u32)> {
    let mut bytes = Vec::new();
    loop {
        let t = s.transmit(b).to_vec();
        if t.is_empty() {
            break;
        }
        s.transmitted(b, t.len());
        bytes.extend_from_slice(&t);
    }
    let mut frames = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let h = parse_header(&bytes[at..], 1 << 20).unwrap().unwrap();
        frames.push((h.opcode, h.flags, h.request_id, h.seq, h.ack));
        at += h.length as usize;
    }
    frames
}

#[test]
fn frames_in_split_across_reads_arrive_once_in_order() {
    let mut s = session();
    let mut bytes = encode(HELLO_OPCODE, 0, 1, b"v");
    encode_into(&mut bytes, 4, 0, 2, b"ping");
    encode_into(&mut bytes, 4, 0, 3, b"");
    let mut got = Vec::new();
    for chunk in bytes.chunks(5) {
        got.extend(drain(&mut s, 1, chunk).unwrap());
    }
    let ids: Vec<u32> = got.iter().map(|f| f.1).collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(got[1].2, b"ping");
    let b = s.binding();
    assert_eq!(
        s.peer_closed(b, MonoTime(2)),
        SocketEnd::Closed(CloseReason::PeerClosed)
    );
}

#[test]
fn bad_framing_closes_with_the_frame_error() {
    let mut s = session();
    let mut bad = encode(4, 0, 1, b"");
    bad[0] = 3;
    let err = drain(&mut s, 1, &bad).unwrap_err();
    assert!(
        matches!(err, CloseReason::Protocol(ref m) if m.contains("out of range")),
        "{err}"
    );
    assert_eq!(s.close_reason(), Some(&err));
    assert!(
        drain(&mut s, 2, &encode(4, 0, 2, b"")).unwrap().is_empty(),
        "closing: input ignored"
    );
}

#[test]
fn a_short_tls_client_hello_is_refused_at_once_not_waited_on() {
    // `openssl s_client -tls1_2 -cipher AES128-SHA -no_ticket`: a 108-byte record whose first
    // four bytes read as a frame length of 66 326, in range.
    let mut hello = vec![
        0x16, 0x03, 0x01, 0x00, 0x67, 0x01, 0x00, 0x00, 0x63, 0x03, 0x03,
    ];
    hello.resize(108, 0);
    let mut s = session();
    let err = drain(&mut s, 1, &hello).unwrap_err();
    assert!(
        matches!(err, CloseReason::Protocol(ref m) if m.contains("TLS ClientHello")),
        "{err}"
    );
    // After a Hello the same bytes are read as a frame header like any other (here over this
    // session's 1 024-byte maximum).
    let mut s = session();
    assert_eq!(
        drain(&mut s, 1, &encode(HELLO_OPCODE, 0, 1, b"v"))
            .unwrap()
            .len(),
        1
    );
    s.hello_accepted(MonoTime(1));
    let err = drain(&mut s, 2, &hello).unwrap_err();
    assert!(
        matches!(err, CloseReason::Protocol(ref m) if m.starts_with("frame length 66326")),
        "{err}"
    );
}

#[test]
fn truncated_frame_at_peer_close_is_a_protocol_error() {
    let mut s = session();
    drain(&mut s, 1, &encode(4, 0, 1, b"hello")[..7]).unwrap();
    let b = s.binding();
    assert!(matches!(
        s.peer_closed(b, MonoTime(2)),
        SocketEnd::Closed(CloseReason::Protocol(m)) if m.contains("truncated")
    ));
}

#[test]
fn one_frame_always_fits_an_empty_queue_then_the_limit_holds() {
    let mut s = session();
    let big = encode(5, 0, 0, &[7u8; 300]); // above send_buffer_limit (100)
    s.send(&big).expect("an empty queue takes any one frame");
    assert_eq!(s.unsent(), 312);
    assert_eq!(s.send(&encode(5, 0, 0, b"x")), Err(SendError::Overflow));
    assert_eq!(s.close_reason(), Some(&CloseReason::SendBufferOverflow));
    assert_eq!(s.send(&encode(5, 0, 0, b"y")), Err(SendError::Closing));
}

#[test]
fn a_frame_accepted_alone_is_not_closed_later_by_a_timer_or_a_read() {
    // Found by the `session` fuzz target: a frame bigger than both the send limit and max_frame
    // went into the empty queue; the next timer (before the idle deadline) or a read that queued
    // nothing closed the session with SendBufferOverflow.
    let mut s = session();
    let big = encode(5, 0, 0, &[7u8; 5000]);
    s.send(&big).expect("an empty queue takes any one frame");
    s.handle_timeout(MonoTime(1));
    assert_eq!(s.close_reason(), None);
    drain(&mut s, 2, &encode(4, 0, 1, b"ping")).unwrap();
    assert_eq!(s.close_reason(), None);
    assert_eq!(s.unsent(), big.len());
}

#[test]
fn transmit_and_transmitted_drain_the_queue_and_release_big_buffers() {
    let mut s = session();
    let b = s.binding();
    s.send(&[1; 60]).unwrap();
    s.send(&[2; 40]).unwrap();
    assert_eq!(s.transmit(b).len(), 100);
    s.transmitted(b, 70);
    assert_eq!(s.transmit(b), &[2; 30][..]);
    s.transmitted(b, 30);
    assert_eq!(s.unsent(), 0);
    let mut s = Session::new(
        SessionId::new(0, 2, 0),
        SessionLimits {
            send_buffer_limit: 1 << 20,
            ..limits()
        },
        MonoTime(0),
    );
    s.send(&vec![0; 10_000]).unwrap();
    s.transmitted(b, 10_000);
    assert_eq!(s.out.capacity(), 0, "a drained large buffer is released");
}

#[test]
fn send_with_writes_in_place() {
    let mut s = session();
    s.send_with(HEADER_LEN + 2, |out| encode_into(out, 5, 0, 9, b"ok"))
        .unwrap();
    assert_eq!(s.transmit(s.binding()), &encode(5, 0, 9, b"ok")[..]);
}

#[test]
fn idle_deadline_moves_with_input_and_fires_once_due() {
    let mut s = session();
    assert_eq!(s.poll_timeout(), Some(MonoTime(50 * MS)));
    drain(&mut s, 30 * MS, &encode(4, 0, 1, b"")).unwrap();
    assert_eq!(s.poll_timeout(), Some(MonoTime(80 * MS)));
    s.handle_timeout(MonoTime(50 * MS)); // the old deadline: early now
    assert!(!s.is_closing());
    s.handle_timeout(MonoTime(80 * MS));
    assert_eq!(s.close_reason(), Some(&CloseReason::IdleTimeout));
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn a_session_without_hello_closes_at_the_hello_deadline_whatever_it_sends() {
    let l = SessionLimits {
        hello_timeout: Some(Duration::from_millis(30)),
        ..limits()
    };
    let mut s = Session::new(SessionId::new(0, 1, 0), l, MonoTime(0));
    assert_eq!(
        s.poll_timeout(),
        Some(MonoTime(30 * MS)),
        "before the idle deadline"
    );
    // A header trickled a byte at a time moves neither deadline.
    let frame = encode(4, 0, 1, b"");
    for (i, t) in [10u64, 20, 25].iter().enumerate() {
        drain(&mut s, t * MS, &frame[i..i + 1]).unwrap();
    }
    assert_eq!(s.poll_timeout(), Some(MonoTime(30 * MS)));
    s.handle_timeout(MonoTime(29 * MS));
    assert!(!s.is_closing());
    s.handle_timeout(MonoTime(30 * MS));
    match s.close_reason() {
        Some(CloseReason::Protocol(m)) => assert!(m.contains("no Hello within 30 ms"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Once the Hello is accepted (at 25 ms), the idle deadline counts from it and moves with input.
    let mut s = Session::new(SessionId::new(0, 1, 0), l, MonoTime(0));
    s.hello_accepted(MonoTime(25 * MS));
    assert_eq!(s.poll_timeout(), Some(MonoTime(75 * MS)));
    drain(&mut s, 60 * MS, &frame).unwrap();
    assert_eq!(s.poll_timeout(), Some(MonoTime(110 * MS)));
    s.handle_timeout(MonoTime(100 * MS));
    assert!(!s.is_closing());
    // Without a Hello deadline, input before the Hello moves the idle deadline as before.
    let mut s = session();
    drain(&mut s, 40 * MS, &frame[..3]).unwrap();
    assert_eq!(s.poll_timeout(), Some(MonoTime(90 * MS)));
}

#[test]
fn handle_timeout_fires_exactly_at_the_polled_deadline() {
    // The two edges where measuring `now - last_seen` disagreed with `poll_timeout`: the first
    // found by the `session` fuzz target, the second (saturation) by review of the same line.
    let zero = SessionLimits {
        idle_timeout: Some(Duration::ZERO),
        ..limits()
    };
    let mut s = Session::new(SessionId::new(0, 1, 0), zero, MonoTime(944));
    assert_eq!(s.poll_timeout(), Some(MonoTime(944)));
    s.handle_timeout(MonoTime(0)); // before the deadline (a caller's clock behind ours)
    assert!(
        !s.is_closing(),
        "closed before the deadline poll_timeout gave"
    );
    s.handle_timeout(MonoTime(944));
    assert_eq!(s.close_reason(), Some(&CloseReason::IdleTimeout));

    let mut s = Session::new(SessionId::new(0, 1, 0), limits(), MonoTime(u64::MAX - 1));
    assert_eq!(s.poll_timeout(), Some(MonoTime(u64::MAX)), "saturated");
    s.handle_timeout(MonoTime(u64::MAX));
    assert_eq!(
        s.close_reason(),
        Some(&CloseReason::IdleTimeout),
        "a deadline reported due must fire"
    );
}

#[test]
fn no_idle_timeout_means_no_deadline() {
    let s = Session::new(
        SessionId::new(0, 1, 0),
        SessionLimits {
            idle_timeout: None,
            ..limits()
        },
        MonoTime(0),
    );
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn first_close_reason_wins_and_handshake_moves_once() {
    let mut s = session();
    assert_eq!(s.handshake(), Handshake::AwaitingHello);
    s.hello_accepted(MonoTime(0));
    assert!(s.is_ready());
    s.close(CloseReason::Shutdown);
    s.close(CloseReason::IdleTimeout);
    assert_eq!(s.close_reason(), Some(&CloseReason::Shutdown));
}

// ---- resume ----

const TOKEN: [u8; TOKEN_LEN] = [7; TOKEN_LEN];

/// A fresh attempt number for every call (the peer raises it at every resume).
fn next_attempt() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(1);
    N.fetch_add(1, Ordering::Relaxed)
}

fn resumable() -> Session {
    let mut s = Session::new(
        SessionId::new(0, 1, 0),
        SessionLimits {
            send_buffer_limit: 10_000,
            ..limits()
        },
        MonoTime(0),
    );
    s.hello_accepted(MonoTime(0));
    s.send(&encode(2, 0, 1, b"welcome")).unwrap();
    s.enable_resume(TOKEN);
    s
}

fn reply(s: &mut Session, rid: u32) {
    s.send(&encode(5, 0, rid, b"pong")).unwrap();
}

#[test]
fn sequenced_frames_carry_seq_and_the_piggybacked_ack() {
    let mut s = resumable();
    let b = s.binding();
    let mut req = Vec::new();
    encode_seq_into(&mut req, 4, 0, 10, 1, 0, b"");
    encode_seq_into(&mut req, 4, 0, 11, 2, 0, b"");
    assert_eq!(drain(&mut s, MS, &req).unwrap().len(), 2);
    reply(&mut s, 10);
    reply(&mut s, 11);
    let out = written(&mut s, b);
    assert_eq!(out[0], (2, 0, 1, 0, 0), "Welcome goes out plain");
    assert_eq!(out[1], (5, FLAG_SEQ, 10, 1, 2));
    assert_eq!(out[2], (5, FLAG_SEQ, 11, 2, 2));
    assert_eq!(s.seqs(), Some((2, 0, 2)));
    assert_eq!(s.replay_held().0, 2, "kept until acknowledged");
    let mut ack = Vec::new();
    encode_seq_into(&mut ack, ACK_OPCODE, 0, 0, 0, 2, b"");
    let mut input = &ack[..];
    assert!(matches!(
        s.receive(b, MonoTime(2 * MS), &mut input),
        Ok(Some(Input::Ack(None)))
    ));
    assert_eq!(s.replay_held(), (0, 0));
}

#[test]
fn an_ack_frame_leaves_when_nothing_carries_the_acknowledgement() {
    let mut s = resumable();
    let b = s.binding();
    written(&mut s, b);
    let mut req = Vec::new();
    encode_seq_into(&mut req, 4, 0, 10, 1, 0, b"");
    drain(&mut s, 10 * MS, &req).unwrap();
    assert_eq!(
        s.poll_timeout(),
        Some(MonoTime(10 * MS + 200 * MS).min(MonoTime(60 * MS)))
    );
    let s2 = SessionLimits {
        idle_timeout: Some(Duration::from_secs(10)),
        ..s.limits()
    };
    s.limits = s2.into();
    assert_eq!(s.poll_timeout(), Some(MonoTime(210 * MS)));
    s.handle_timeout(MonoTime(210 * MS));
    assert_eq!(written(&mut s, b), [(ACK_OPCODE, FLAG_SEQ, 0, 0, 1)]);
    assert_eq!(s.poll_timeout(), Some(MonoTime(10 * MS + 10_000 * MS)));
}

#[test]
fn duplicates_are_dropped_and_gaps_or_plain_frames_close() {
    let mut s = resumable();
    let mut req = Vec::new();
    encode_seq_into(&mut req, 4, 0, 10, 1, 0, b"");
    encode_seq_into(&mut req, 4, 0, 10, 1, 0, b"");
    let b = s.binding();
    let mut input = &req[..];
    assert!(matches!(
        s.receive(b, MonoTime(1), &mut input),
        Ok(Some(Input::Frame(_)))
    ));
    assert!(
        matches!(s.receive(b, MonoTime(1), &mut input), Ok(Some(Input::Duplicate(h, None))) if h.request_id == 10)
    );
    let mut gap = Vec::new();
    encode_seq_into(&mut gap, 4, 0, 12, 3, 0, b"");
    assert!(
        matches!(drain(&mut s, 2, &gap), Err(CloseReason::Protocol(m)) if m.contains("sequence gap"))
    );

    let mut s = resumable();
    assert!(
        matches!(drain(&mut s, 2, &encode(4, 0, 1, b"")), Err(CloseReason::Protocol(m)) if m.contains("without SEQ"))
    );
    let mut s = resumable();
    let mut bad_ack = Vec::new();
    encode_seq_into(&mut bad_ack, 4, 0, 1, 1, 5, b"");
    assert!(
        matches!(drain(&mut s, 2, &bad_ack), Err(CloseReason::Protocol(m)) if m.contains("never sent"))
    );
    let mut s = session();
    let mut seq = Vec::new();
    encode_seq_into(&mut seq, 4, 0, 1, 1, 0, b"");
    assert!(
        matches!(drain(&mut s, 2, &seq), Err(CloseReason::Protocol(m)) if m.contains("without resume"))
    );
}

#[test]
fn a_lost_socket_detaches_and_a_resume_replays_what_the_peer_lacks() {
    let mut s = resumable();
    let b0 = s.binding();
    for rid in 1..=4 {
        reply(&mut s, rid);
    }
    // The peer got Welcome and frames 1 and 2; 3 and 4 are cut.
    let t = s.transmit(b0).len();
    s.transmitted(b0, t - 2 * 24 - 5);
    assert_eq!(s.peer_closed(b0, MonoTime(5 * MS)), SocketEnd::Detached);
    assert!(!s.is_attached());
    assert_eq!(
        s.poll_timeout(),
        Some(MonoTime(5 * MS + 30_000 * MS)),
        "the resume window"
    );
    // Meanwhile the application goes on.
    reply(&mut s, 5);
    // The stale socket's late calls change nothing.
    assert!(drain_on(&mut s, b0, 6 * MS, &encode(4, 0, 1, b""))
        .unwrap()
        .is_empty());
    assert!(s.transmit(b0).is_empty());
    assert_eq!(s.peer_closed(b0, MonoTime(6 * MS)), SocketEnd::Stale);

    assert_eq!(
        s.resume(
            MonoTime(7 * MS),
            &[0; 16],
            2,
            next_attempt(),
            [8; 16],
            |_, _| {}
        ),
        Err(ResumeError::BadToken)
    );
    assert_eq!(
        s.resume(
            MonoTime(7 * MS),
            &TOKEN,
            9,
            next_attempt(),
            [8; 16],
            |_, _| {}
        ),
        Err(ResumeError::BadSeq)
    );
    let r = s
        .resume(
            MonoTime(7 * MS),
            &TOKEN,
            2,
            next_attempt(),
            [8; 16],
            |r, out| encode_into(out, RESUMED_OPCODE, 0, 0, &[r.resync as u8]),
        )
        .unwrap();
    assert_eq!((r.resync, r.received, r.sent, r.replayed), (false, 0, 5, 3));
    assert_eq!(s.token(), Some(&[8; 16]), "rotated");
    let out = written(&mut s, r.binding);
    let seqs: Vec<u32> = out.iter().map(|f| f.3).collect();
    assert_eq!(out[0].0, RESUMED_OPCODE);
    assert_eq!(out[0].1, 0, "Resumed goes out plain");
    assert_eq!(&seqs[1..], [3, 4, 5]);
    // The Resumed may be lost with the new socket: the token just used works once more...
    let again = s
        .resume(
            MonoTime(8 * MS),
            &TOKEN,
            2,
            next_attempt(),
            [9; 16],
            |_, _| {},
        )
        .unwrap();
    assert_eq!(again.replayed, 3);
    // ...until the peer sends a frame on the socket of the resume.
    let mut ack = Vec::new();
    encode_seq_into(&mut ack, ACK_OPCODE, 0, 0, 0, 5, b"");
    drain_on(&mut s, again.binding, 9 * MS, &ack).unwrap();
    assert_eq!(
        s.resume(
            MonoTime(10 * MS),
            &TOKEN,
            5,
            next_attempt(),
            [10; 16],
            |_, _| {}
        ),
        Err(ResumeError::BadToken),
        "the old token is spent"
    );
    assert_eq!(
        s.resume(
            MonoTime(10 * MS),
            &[8; 16],
            5,
            next_attempt(),
            [10; 16],
            |_, _| {}
        ),
        Err(ResumeError::BadToken),
        "so is the one of the lost Resumed"
    );
    assert!(s
        .resume(
            MonoTime(10 * MS),
            &[9; 16],
            5,
            next_attempt(),
            [10; 16],
            |_, _| {}
        )
        .is_ok());
}

#[test]
fn a_newer_socket_fences_the_old_one_while_attached() {
    let mut s = resumable();
    let old = s.binding();
    reply(&mut s, 1);
    let r = s
        .resume(MonoTime(MS), &TOKEN, 0, next_attempt(), [2; 16], |_, _| {})
        .unwrap();
    assert_ne!(r.binding, old);
    assert!(
        s.transmit(old).is_empty(),
        "the old socket writes nothing more"
    );
    s.transmitted(old, 5); // a late completion: ignored
    assert_eq!(s.peer_closed(old, MonoTime(2 * MS)), SocketEnd::Stale);
    assert!(s.is_attached());
    assert_eq!(
        written(&mut s, r.binding).len(),
        1,
        "frame 1 replayed on the new socket"
    );
}

#[test]
fn evicted_gap_means_resync_and_the_window_closes_with_the_reason() {
    let build = || {
        let mut s = resumable();
        std::sync::Arc::make_mut(&mut s.limits).resume.max_frames = 3;
        let b = s.binding();
        written(&mut s, b);
        assert_eq!(
            s.socket_failed(b, MonoTime(MS), "reset".into()),
            SocketEnd::Detached
        );
        let mut evicted = 0;
        for rid in 1..=5 {
            evicted += s.send(&encode(5, 0, rid, b"x")).unwrap().evicted;
        }
        assert_eq!(evicted, 2, "frames 1 and 2 evicted while detached");
        assert_eq!(s.replay_held().0, 3);
        s
    };
    let mut s = build();
    let mut t = build();
    let r = t
        .resume(
            MonoTime(2 * MS),
            &TOKEN,
            2,
            next_attempt(),
            [1; 16],
            |_, _| {},
        )
        .unwrap();
    assert!(!r.resync, "the peer had 1 and 2: nothing it lacks is gone");
    let r = s
        .resume(
            MonoTime(2 * MS),
            &TOKEN,
            0,
            next_attempt(),
            [1; 16],
            |_, _| {},
        )
        .unwrap();
    assert!(r.resync);
    assert_eq!((r.sent, r.replayed), (5, 0));
    let out = written(&mut s, r.binding);
    assert!(out.is_empty(), "nothing replayed after a resync");
    reply(&mut s, 6);
    assert_eq!(written(&mut s, r.binding)[0].3, 6, "numbering goes on");

    let b = s.binding();
    assert_eq!(s.peer_closed(b, MonoTime(10 * MS)), SocketEnd::Detached);
    s.handle_timeout(MonoTime(10 * MS + 29_999 * MS));
    assert!(!s.is_closing());
    s.handle_timeout(MonoTime(10 * MS + 30_000 * MS));
    assert_eq!(
        s.close_reason(),
        Some(&CloseReason::ResumeExpired("peer closed".into()))
    );
    assert_eq!(
        s.resume(
            MonoTime(41_000 * MS),
            &[1; 16],
            6,
            next_attempt(),
            [0; 16],
            |_, _| {}
        ),
        Err(ResumeError::Closed)
    );
}

/// A session closed while detached (an account logged in elsewhere: `Kicked`, then the close)
/// keeps the frames it was sent for one resume, which delivers them and then closes it with the
/// close's reason; without a resume the window's end closes it with that reason too.
#[test]
fn a_close_while_detached_is_delivered_by_the_resume_then_ends_the_session() {
    let kicked = || {
        let mut s = resumable();
        let b = s.binding();
        written(&mut s, b);
        assert_eq!(s.peer_closed(b, MonoTime(MS)), SocketEnd::Detached);
        s.send(&encode(68, 0, 0, b"kicked")).unwrap();
        s.close_keeping_replay(CloseReason::App("account logged in elsewhere".into()));
        assert!(!s.is_closing(), "kept for a resume");
        s
    };
    let kick_reason = || Some(CloseReason::App("account logged in elsewhere".into()));
    // The peer got nothing sequenced before the cut.
    let resume = |s: &mut Session| {
        s.resume(
            MonoTime(2 * MS),
            &TOKEN,
            0,
            next_attempt(),
            [3; 16],
            |_, out| encode_into(out, RESUMED_OPCODE, 0, 0, b""),
        )
        .unwrap()
    };
    let mut s = kicked();
    let r = resume(&mut s);
    assert!(!r.resync);
    assert!(!s.is_closing(), "not before the replay is written");
    assert!(
        s.send(&encode(5, 0, 9, b"late")).is_err(),
        "nothing new after the close"
    );
    let out = written(&mut s, r.binding);
    assert_eq!(
        out.iter().map(|f| f.0).collect::<Vec<_>>(),
        [RESUMED_OPCODE, 68],
        "Resumed, then the Kicked"
    );
    assert_eq!(s.close_reason().cloned(), kick_reason());

    // The resume's socket is lost before the replay is written: still closing, on the next
    // resume or at the window's end.
    let mut s = kicked();
    let r = resume(&mut s);
    assert_eq!(
        s.peer_closed(r.binding, MonoTime(3 * MS)),
        SocketEnd::Detached
    );
    s.handle_timeout(MonoTime(3 * MS + 30_000 * MS));
    assert_eq!(s.close_reason().cloned(), kick_reason());

    let mut s = kicked();
    s.handle_timeout(MonoTime(MS + 30_000 * MS));
    assert_eq!(
        s.close_reason().cloned(),
        kick_reason(),
        "the window's end keeps the close's reason"
    );
}

#[test]
fn idle_resumable_session_detaches_instead_of_closing() {
    let mut s = resumable();
    s.handle_timeout(MonoTime(50 * MS));
    assert!(!s.is_closing());
    assert_eq!(
        s.detached().map(|d| d.1.clone()),
        Some(CloseReason::IdleTimeout)
    );
    s.handle_timeout(MonoTime(50 * MS + 30_000 * MS));
    assert_eq!(
        s.close_reason(),
        Some(&CloseReason::ResumeExpired("idle timeout".into()))
    );
}

#[test]
fn replayed_bytes_do_not_count_against_the_send_limit() {
    let mut s = resumable();
    std::sync::Arc::make_mut(&mut s.limits).send_buffer_limit = 60;
    let b = s.binding();
    written(&mut s, b);
    for rid in 1..=2 {
        reply(&mut s, rid);
        written(&mut s, b);
    }
    let r = s
        .resume(MonoTime(MS), &TOKEN, 0, next_attempt(), [1; 16], |_, _| {})
        .unwrap();
    assert_eq!(s.unsent(), 48, "two frames to replay");
    reply(&mut s, 3);
    assert!(
        !s.is_closing(),
        "48 replayed + 24 new is under the limit for new bytes"
    );
    reply(&mut s, 4);
    // Past the bound a resumable session is not closed: the frame is kept for a replay and the
    // socket is to end, detaching the session.
    assert!(!s.send_overflowed());
    s.send(&encode(5, 0, 5, b"pong"))
        .expect("kept for a replay");
    assert!(s.send_overflowed());
    assert!(!s.is_closing());
    let held = s.replay_held().0;
    assert_eq!(
        s.socket_overflowed(r.binding, MonoTime(2 * MS)),
        SocketEnd::Detached
    );
    assert_eq!(
        s.detached().map(|d| d.1.clone()),
        Some(CloseReason::SendBufferOverflow)
    );
    assert!(!s.send_overflowed());
    assert_eq!(
        s.replay_held().0,
        held,
        "every frame is kept for the resume"
    );
}

#[test]
fn rate_limited_frames_are_reported_and_the_close_policy_closes() {
    let mut s = session();
    s.set_rates(SessionRates {
        msgs: RateLimit::per_second(10, 2),
        msgs_policy: RatePolicy::Close,
        bytes: None,
        bytes_policy: RatePolicy::Error,
        close_after: 2,
    });
    let mut bytes = Vec::new();
    for rid in 1..=5 {
        encode_into(&mut bytes, 4, 0, rid, b"");
    }
    let b = s.binding();
    let mut input = &bytes[..];
    let mut seen = Vec::new();
    while let Ok(Some(i)) = s.receive(b, MonoTime(MS), &mut input) {
        seen.push(match i {
            Input::Frame(f) => format!("frame {}", f.frame().header.request_id),
            Input::RateLimited(h, which, close) => {
                if close {
                    // The caller answers, then closes.
                    s.close(CloseReason::RateLimited);
                }
                format!("limited {} {which:?} {close}", h.request_id)
            }
            other => format!("{other:?}"),
        });
    }
    assert_eq!(
        seen,
        [
            "frame 1",
            "frame 2",
            "limited 3 Messages false",
            "limited 4 Messages true"
        ]
    );
    assert_eq!(s.close_reason(), Some(&CloseReason::RateLimited));
}

#[test]
fn acks_over_a_limit_are_reported_but_never_close_the_session() {
    let mut s = resumable();
    s.set_rates(SessionRates {
        msgs: RateLimit::per_second(10, 2),
        msgs_policy: RatePolicy::Close,
        bytes: None,
        bytes_policy: RatePolicy::Error,
        close_after: 2,
    });
    let b = s.binding();
    let mut bytes = Vec::new();
    for _ in 0..6 {
        encode_seq_into(&mut bytes, ACK_OPCODE, 0, 0, 0, 0, b"");
    }
    let mut input = &bytes[..];
    let mut seen = Vec::new();
    while let Ok(Some(i)) = s.receive(b, MonoTime(MS), &mut input) {
        seen.push(format!("{i:?}"));
    }
    assert_eq!(
        seen,
        [
            "Ack(None)",
            "Ack(None)",
            "Ack(Some(Messages))",
            "Ack(Some(Messages))",
            "Ack(Some(Messages))",
            "Ack(Some(Messages))"
        ]
    );
    assert!(!s.is_closing());
    // A request over the limit still counts from zero toward close_after: the first is answered.
    let mut req = Vec::new();
    encode_seq_into(&mut req, 4, 0, 7, 1, 0, b"");
    let mut input = &req[..];
    assert!(matches!(
        s.receive(b, MonoTime(MS), &mut input),
        Ok(Some(Input::RateLimited(_, Limited::Messages, false)))
    ));
}

#[test]
fn sequence_numbers_expand_across_the_32_bit_wrap() {
    assert_eq!(expand_seq(5, 3), 5);
    assert_eq!(expand_seq(2, 3), 2);
    assert_eq!(expand_seq(0, 0), 0);
    assert_eq!(expand_seq(u32::MAX, 0), 0, "before 0 clamps to 0");
    let near = (1u64 << 32) + 3;
    assert_eq!(expand_seq(1, near), (1 << 32) + 1);
    assert_eq!(expand_seq(u32::MAX, near), (1 << 32) - 1);
    assert_eq!(expand_seq(10, near), (1 << 32) + 10);
}

#[test]
fn tokens_compare_whole() {
    assert!(tokens_equal(&TOKEN, &TOKEN));
    assert!(!tokens_equal(&TOKEN[..15], &TOKEN));
    let mut t = TOKEN;
    t[15] ^= 1;
    assert!(!tokens_equal(&t, &TOKEN));
}

#[test]
fn a_late_older_attempt_cannot_take_the_session_back() {
    let mut s = resumable();
    let zero = s
        .resume(MonoTime(MS), &TOKEN, 0, 0, [1; 16], |_, _| {})
        .unwrap_err();
    assert_eq!(
        zero.to_string(),
        "attempt 0 is not above the last accepted (0): attempts start at 1"
    );
    let b = s
        .resume(MonoTime(MS), &TOKEN, 0, 5, [1; 16], |_, _| {})
        .unwrap();
    // Attempt 4 (sent before 5, on a socket the client gave up) arrives late, with the same
    // token the fallback still accepts: refused.
    assert_eq!(
        s.resume(MonoTime(2 * MS), &TOKEN, 0, 4, [2; 16], |_, _| {}),
        Err(ResumeError::StaleAttempt { got: 4, last: 5 })
    );
    assert!(
        s.is_current(b.binding),
        "the newer socket keeps the session"
    );
    assert!(s
        .resume(MonoTime(3 * MS), &TOKEN, 0, 6, [3; 16], |_, _| {})
        .is_ok());
}

/// The runtime reads through `receive_event` (the layers' path): a sequenced frame's body starts
/// after its extension whether the frame arrives whole in one read (borrowed) or split across
/// reads (assembled), and its `seq` and `ack` are applied.
#[test]
fn receive_event_hands_out_sequenced_bodies_without_the_extension() {
    let mut s = resumable();
    let b = s.binding();
    written(&mut s, b);
    let mut req = Vec::new();
    encode_seq_into(&mut req, 4, 0, 10, 1, 0, b"whole");
    encode_seq_into(&mut req, 4, 0, 11, 2, 0, b"split-body");
    let first_len = HEADER_LEN + EXT_LEN + 5;
    let mut got = Vec::new();
    for chunk in [&req[..first_len + 7], &req[first_len + 7..]] {
        let mut bytes = chunk.to_vec();
        let mut input = &mut bytes[..];
        while let Some(item) = s.receive_event(b, MonoTime(MS), &mut input).unwrap() {
            let Input::Frame(f) = item else {
                panic!("a frame: {item:?}");
            };
            let f = f.frame();
            assert!(f.header.sequenced());
            got.push((f.header.request_id, f.header.seq, f.body.to_vec()));
        }
    }
    assert_eq!(
        got,
        [(10, 1, b"whole".to_vec()), (11, 2, b"split-body".to_vec())]
    );
    assert_eq!(s.seqs(), Some((0, 0, 2)));
}

/// Reads through the layers' path check the queue bound too (for answers layers queue by
/// themselves); a replay larger than that bound must not close the resumed session there.
#[test]
fn a_replay_over_the_send_limit_survives_the_read_path_check() {
    let mut s = resumable();
    std::sync::Arc::make_mut(&mut s.limits).max_frame = 24;
    std::sync::Arc::make_mut(&mut s.limits).send_buffer_limit = 30;
    let b = s.binding();
    written(&mut s, b);
    for rid in 1..=3 {
        reply(&mut s, rid);
        written(&mut s, b);
    }
    let r = s
        .resume(MonoTime(MS), &TOKEN, 0, next_attempt(), [1; 16], |_, _| {})
        .unwrap();
    assert_eq!(
        s.unsent(),
        72,
        "three frames to replay, over the bound of 38"
    );
    let mut frame = Vec::new();
    encode_seq_into(&mut frame, 4, 0, 9, 1, 0, b"x");
    let mut part = frame[..5].to_vec();
    let mut input = &mut part[..];
    assert!(matches!(
        s.receive_event(r.binding, MonoTime(MS), &mut input),
        Ok(None)
    ));
    assert!(!s.is_closing(), "{:?}", s.close_reason());
}

/// Everything a read hands out, as comparable values.
fn item_key(i: &Input<'_>) -> String {
    match i {
        Input::Frame(f) => {
            let f = f.frame();
            format!("frame {:?} {:?}", f.header, f.body)
        }
        other => format!("{other:?}"),
    }
}

/// A binary session's frames take a shortcut in `receive_event` (no layer step): for every way
/// the bytes are cut into reads, it must hand out what `receive` does, in the same order, and
/// end the same way (a framing error, a `SEQ` frame on a session without resume, a rate limit),
/// using up the input and keeping the idle deadline in step.
#[test]
fn binary_receive_event_matches_receive_for_every_read_split() {
    let mut ok = encode(HELLO_OPCODE, 0, 1, b"v");
    encode_into(&mut ok, 4, 0, 2, b"ping");
    encode_into(&mut ok, 4, 0, 3, b"");
    encode_into(&mut ok, 9, 0, 4, &[7; 40]);
    let mut bad_len = ok.clone();
    let mut short = encode(4, 0, 5, b"");
    short[0] = 3;
    bad_len.extend_from_slice(&short);
    bad_len.extend_from_slice(&encode(4, 0, 6, b"after"));
    let mut seq_on_plain = ok.clone();
    encode_seq_into(&mut seq_on_plain, 4, 0, 5, 1, 0, b"seq");
    let mut zero_op = ok.clone();
    encode_into(&mut zero_op, 0, 0, 5, b"");
    let rated = || {
        let mut s = session();
        s.set_rates(SessionRates {
            msgs: RateLimit::per_second(1, 2),
            msgs_policy: RatePolicy::Error,
            ..SessionRates::UNLIMITED
        });
        s
    };
    for (name, stream, make) in [
        ("valid", &ok, session as fn() -> Session),
        ("bad length", &bad_len, session),
        ("SEQ without resume", &seq_on_plain, session),
        ("opcode 0", &zero_op, session),
        ("rate limited", &ok, rated),
    ] {
        for cut in 1..=stream.len() {
            let (mut a, mut e) = (make(), make());
            let (ba, be) = (a.binding(), e.binding());
            let (mut got_a, mut got_e) = (Vec::new(), Vec::new());
            let (mut end_a, mut end_e) = (None, None);
            for (i, chunk) in stream.chunks(cut).enumerate() {
                let now = MonoTime(i as u64 * MS);
                let mut input = chunk;
                loop {
                    match a.receive(ba, now, &mut input) {
                        Ok(Some(item)) => got_a.push(item_key(&item)),
                        Ok(None) => break,
                        Err(r) => {
                            end_a.get_or_insert(r);
                            break;
                        }
                    }
                }
                let mut bytes = chunk.to_vec();
                let mut input = &mut bytes[..];
                loop {
                    match e.receive_event(be, now, &mut input) {
                        Ok(Some(item)) => got_e.push(item_key(&item)),
                        Ok(None) => break,
                        Err(r) => {
                            end_e.get_or_insert(r);
                            break;
                        }
                    }
                }
                assert!(input.is_empty(), "{name}, reads of {cut}: input used up");
            }
            assert_eq!(got_a, got_e, "{name}, reads of {cut}");
            assert_eq!(end_a, end_e, "{name}, reads of {cut}");
            assert_eq!(a.close_reason(), e.close_reason(), "{name}, reads of {cut}");
            assert_eq!(a.poll_timeout(), e.poll_timeout(), "{name}, reads of {cut}");
            assert_eq!(
                a.buffered_input(),
                e.buffered_input(),
                "{name}, reads of {cut}"
            );
            assert_eq!(a.unsent(), e.unsent(), "{name}, reads of {cut}");
        }
    }
    // The cases above do end the way they are named.
    let mut s = session();
    assert!(drain(&mut s, 1, &seq_on_plain)
        .is_err_and(|r| matches!(r, CloseReason::Protocol(ref m) if m.contains("SEQ flag"))));
    let mut s = session();
    assert!(drain(&mut s, 1, &zero_op)
        .is_err_and(|r| matches!(r, CloseReason::Protocol(ref m) if m.contains("opcode 0"))));
    let mut s = rated();
    let mut input = &ok[..];
    let mut limited = 0;
    while let Some(i) = s.receive(s.binding(), MonoTime(0), &mut input).unwrap() {
        limited += usize::from(matches!(i, Input::RateLimited(..)));
    }
    assert_eq!(
        limited, 2,
        "a burst of 2 passes, the other 2 frames are limited"
    );
}

/// The send bound at its edge on a binary session without resume (the send path's shortcut):
/// queued bytes plus the new frame may reach `send_buffer_limit` (100 here), not pass it; what
/// the socket took no longer counts.
#[test]
fn the_send_bound_holds_to_the_byte() {
    let mut s = session();
    let b = s.binding();
    s.send(&encode(5, 0, 1, &[1; 38])).unwrap(); // 50 bytes
    s.send(&encode(5, 0, 2, &[2; 38])).unwrap(); // 100: exactly the bound
    assert_eq!(s.unsent(), 100);
    s.transmitted(b, 1);
    s.send(&encode(5, 0, 3, &[]))
        .expect_err("99 + 12 passes the bound");
    assert_eq!(s.close_reason(), Some(&CloseReason::SendBufferOverflow));

    let mut s = session();
    let b = s.binding();
    s.send(&encode(5, 0, 1, &[1; 38])).unwrap();
    s.send(&encode(5, 0, 2, &[2; 38])).unwrap();
    s.transmitted(b, 12);
    s.send(&encode(5, 0, 3, &[]))
        .expect("88 + 12 reaches the bound");
    assert_eq!(s.unsent(), 100);
    assert_eq!(s.close_reason(), None);
}

/// Sessions share one copy of their limits; a live change of the rate limits keeps them
/// shared when given as one shared copy, and a change of any other limit is refused.
#[test]
fn limits_are_shared_and_a_rate_change_keeps_them_shared() {
    let shared = Arc::new(limits());
    let mut a = Session::new(SessionId::new(0, 1, 0), Arc::clone(&shared), MonoTime(0));
    let mut b = Session::new(SessionId::new(0, 2, 0), Arc::clone(&shared), MonoTime(0));
    assert_eq!(Arc::strong_count(&shared), 3, "one copy for both sessions");

    let rates = SessionRates {
        msgs: RateLimit::per_second(10, 2),
        ..SessionRates::UNLIMITED
    };
    // Alone, a rate change gives the session its own copy with the new rates.
    a.set_rates(rates);
    assert_eq!(Arc::strong_count(&shared), 2);
    assert_eq!(a.limits().rates, rates);
    assert_eq!(b.limits().rates, SessionRates::UNLIMITED);

    // Given as one shared copy, both take it.
    let mut l = limits();
    l.rates = rates;
    let reloaded = Arc::new(l);
    assert!(a.set_shared_limits(&reloaded));
    assert!(b.set_shared_limits(&reloaded));
    assert_eq!(Arc::strong_count(&reloaded), 3);
    assert_eq!(b.limits().rates, rates);

    // Another frame bound is not a rate change: refused, nothing changes.
    let mut other = l;
    other.max_frame = 2048;
    assert!(!b.set_shared_limits(&Arc::new(other)));
    assert_eq!(b.limits().max_frame, 1024);
    assert_eq!(Arc::strong_count(&reloaded), 3);
}

/// An idle session's bytes are most of what a connection costs: what only resumable sessions use
/// (the replay marks, the handshake prefix, the detached state) stays behind pointers. The bound
/// fails when a field makes every session larger; raise it only with the idle-memory figure of
/// bench/README.md measured again.
#[test]
fn session_state_stays_small() {
    let (session, out) = (
        std::mem::size_of::<Session>(),
        std::mem::size_of::<super::out::OutQueue>(),
    );
    eprintln!("size_of Session {session} B, OutQueue {out} B");
    assert!(out <= 72, "OutQueue is {out} B");
    // 232 with the `tls` feature (one more pointer), as the server builds it.
    assert!(session <= 232, "Session is {session} B");
}

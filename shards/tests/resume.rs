//! Resume over TCP against a real `lattice` process: sockets cut mid-stream, resumed on whichever
//! shard the new socket lands on (same shard: rebind; other shard: socket handover), nothing lost
//! and nothing handled twice; stale sockets fenced; expiry, bad tokens and evicted gaps.

mod common;

use common::seq::{Resumption, SeqClient};
use common::*;
use lattice_proto::{pb, AnyMessage};

/// Joins `room` with a plain client and a resumable one.
fn room_pair(l: &Lattice, room: &str) -> (Client, SeqClient) {
    let mut plain = l.connect();
    plain.send(1, &pb::JoinRoom { room: room.into() });
    assert!(matches!(plain.recv().decode(), AnyMessage::Joined(_)));
    let mut r = SeqClient::connect(l.port);
    r.send(2, &pb::JoinRoom { room: room.into() });
    let got = r.recv().unwrap().decode();
    assert!(matches!(got, AnyMessage::Joined(_)), "{got:?}");
    (plain, r)
}

#[test]
fn cut_mid_stream_and_resume_loses_nothing_on_either_shard() {
    let l = Lattice::start(&[]);
    let (mut speaker, mut listener) = room_pair(&l, "lobby");
    let mut next = 0u32;
    // Twelve cuts: with two shards and round-robin accepting, the new sockets land on both the
    // session's shard and the other one.
    for round in 0..12 {
        for _ in 0..25 {
            speaker.send(
                100 + next,
                &pb::Say {
                    room: "lobby".into(),
                    text: format!("line {next}"),
                },
            );
            next += 1;
        }
        // Read a few, then cut while the rest are in flight or queued.
        for _ in 0..(round % 5) {
            listener.recv().expect("frame before the cut");
        }
        listener.cut();
        let r = listener.resumed();
        assert!(!r.resync, "nothing was evicted");
        assert_eq!(r.resume_token.len(), 16);
        // Everything the speaker said so far reaches the listener, once, in order.
        let have = listener.said_texts().len() as u32;
        for _ in have..next {
            listener.recv().expect("replayed or live frame");
        }
        // Drain the speaker's own copies.
        for _ in 0..25 {
            assert!(matches!(speaker.recv().decode(), AnyMessage::Said(_)));
        }
    }
    let texts: Vec<String> = listener.said_texts();
    let want: Vec<String> = (0..next).map(|i| format!("line {i}")).collect();
    assert_eq!(texts, want, "every line exactly once, in order");
    assert_eq!(
        l.wait_metric_total("lattice_sessions_resumed_total", 12),
        12
    );
    assert!(
        l.metric_total("lattice_handovers_sent_total") > 0,
        "some resumes crossed shards"
    );
    assert!(
        l.metric_total("lattice_handovers_sent_total") < 12,
        "some resumes stayed on the session's shard"
    );
    assert_eq!(l.metric_total("lattice_resume_rejected_total"), 0);
    // A socket handed to the session's shard is not accepted a second time there.
    assert_eq!(
        l.metric_total("lattice_connections_accepted_total"),
        l.metric_total("lattice_listener_accepted_total"),
        "shards count each connection the listener accepted once"
    );
    l.wait_log("session resumed on a new socket");
}

#[test]
fn a_resent_request_is_handled_once_and_its_reply_replayed() {
    let l = Lattice::start(&[]);
    let (mut speaker, mut c) = room_pair(&l, "once");
    // The Say leaves, the socket is cut before the reply is read.
    c.send(
        9,
        &pb::Say {
            room: "once".into(),
            text: "exactly once".into(),
        },
    );
    assert_eq!(speaker.recv().said_text(), "exactly once");
    c.cut();
    // The client does not know whether the server got it: it resends unless Resumed says so.
    let sent = c.last_sent;
    let r = c.resumed();
    assert_eq!(r.last_received_seq, sent, "the server got the Say");
    // Resend it anyway, as a client that lost track would: the server drops the duplicate.
    let frame = common::seq::seq_frame(
        lattice_proto::opcode::SAY,
        9,
        sent,
        c.last_recv,
        &prost::Message::encode_to_vec(&pb::Say {
            room: "once".into(),
            text: "exactly once".into(),
        }),
    );
    std::io::Write::write_all(&mut c.c.s, &frame).unwrap();
    let reply = c.recv().expect("the reply, replayed");
    assert_eq!(reply.request_id, 9);
    assert_eq!(reply.said_text(), "exactly once");
    l.wait_metric_total("lattice_duplicates_dropped_total", 1);
    // The room heard it once: a ping round trip proves nothing else is on the way.
    speaker.send(50, &pb::Ping { payload: vec![] });
    let f = speaker.recv();
    assert!(
        matches!(f.decode(), AnyMessage::Pong(_)),
        "no second Said: {f:?}"
    );
    // A request that never reached the server is resent by the client and handled once.
    c.cut();
    c.send(
        10,
        &pb::Ping {
            payload: b"after cut".to_vec(),
        },
    );
    let r = c.resumed();
    assert_eq!(
        r.last_received_seq,
        c.last_sent - 1,
        "the Ping never arrived"
    );
    let pong = c.recv().unwrap();
    assert_eq!(pong.request_id, 10);
    assert!(matches!(pong.decode(), AnyMessage::Pong(p) if p.payload == b"after cut"));
}

#[test]
fn the_newest_socket_wins_and_the_old_one_is_closed() {
    let l = Lattice::start(&[]);
    let mut c = SeqClient::connect(l.port);
    c.send(1, &pb::Ping { payload: vec![] });
    c.recv().unwrap();
    // Keep the old socket open (no cut) and resume from a second one: a duplicate reconnect.
    let mut old = c.c.duplicate();
    let r = c.resumed();
    assert!(!r.resync);
    assert!(
        old.closed_by_server(),
        "the fenced socket is closed by the server"
    );
    c.send(
        2,
        &pb::Ping {
            payload: b"new".to_vec(),
        },
    );
    let f = c.recv().unwrap();
    assert!(matches!(f.decode(), AnyMessage::Pong(p) if p.payload == b"new"));
    l.wait_metric_total("lattice_stale_sockets_total", 1);
    // A resume spends its token once the client sends on the new socket (until then the token
    // still works: the Resumed carrying the next one may have been lost).
    let token = c.token.clone();
    c.resumed();
    let mut lost = c.c.duplicate();
    assert!(
        matches!(c.resume_with(token.clone()), Resumption::Resumed(_)),
        "Resumed lost: retry with the same token"
    );
    assert!(lost.closed_by_server());
    c.send(3, &pb::Ping { payload: vec![] });
    c.recv().unwrap();
    match c.resume_with(token) {
        Resumption::Rejected(e) => assert!(e.message.contains("or wrong token"), "{e:?}"),
        Resumption::Resumed(_) => panic!("a spent token must not resume"),
    }
}

#[test]
fn a_lost_socket_waits_for_the_resume_window_then_closes_with_its_reason() {
    let l = Lattice::start(&["--session.resume_window_ms", "300"]);
    let mut c = SeqClient::connect(l.port);
    c.cut();
    l.wait_log("session detached; resumable");
    let logs = l.wait_log("resume window expired (socket lost: peer closed)");
    assert!(logs.contains("session closed"), "{logs}");
    assert!(
        matches!(c.resume(), Resumption::Rejected(_)),
        "the session is gone"
    );
    assert_eq!(
        l.wait_metric_total("lattice_sessions_closed_resume_expired_total", 1),
        1
    );
    assert_eq!(l.metric_total("lattice_sessions_detached"), 0);
}

#[test]
fn idle_socket_detaches_and_a_quick_reconnect_beats_the_window() {
    let l = Lattice::start(&[
        "--net.idle_timeout_ms",
        "200",
        "--session.resume_window_ms",
        "20000",
    ]);
    let mut c = SeqClient::connect(l.port);
    c.send(1, &pb::Ping { payload: vec![] });
    c.recv().unwrap();
    // Silence past the idle timeout: the server drops the socket but keeps the session.
    assert!(c.c.closed_by_server());
    l.wait_log("reason=idle timeout");
    assert_eq!(l.wait_metric_total("lattice_sessions_detached", 1), 1);
    let r = c.resumed();
    assert!(!r.resync);
    c.send(
        2,
        &pb::Ping {
            payload: b"back".to_vec(),
        },
    );
    assert!(matches!(c.recv().unwrap().decode(), AnyMessage::Pong(p) if p.payload == b"back"));
    assert_eq!(l.metric_total("lattice_sessions_detached"), 0);
}

#[test]
fn bad_tokens_and_unknown_sessions_are_rejected_and_the_socket_closed() {
    let l = Lattice::start(&[]);
    let mut c = SeqClient::connect(l.port);
    let good = c.token.clone();
    // A wrong token, an unknown id and (below) a live session that is not resumable read alike:
    // a client without the token does not learn whether an id is live.
    const HIDDEN: &str = "resume rejected: unknown or closed session, or wrong token; start a new session with Hello";
    match c.resume_with(vec![0; 16]) {
        Resumption::Rejected(e) => assert_eq!(e.message, HIDDEN),
        other => panic!("{other:?}"),
    }
    assert!(c.c.closed_by_server());
    c.session_id ^= 1 << 40;
    match c.resume_with(good.clone()) {
        Resumption::Rejected(e) => assert_eq!(e.message, HIDDEN),
        other => panic!("{other:?}"),
    }
    c.session_id ^= 1 << 40;
    c.last_recv = 1000;
    match c.resume_with(good.clone()) {
        Resumption::Rejected(e) => assert!(e.message.contains("ahead"), "{e:?}"),
        other => panic!("{other:?}"),
    }
    c.last_recv = 0;
    // The session survived all of that.
    assert!(matches!(c.resume_with(good), Resumption::Resumed(_)));
    assert!(l.wait_metric_total("lattice_resume_rejected_total", 3) >= 3);
    // A plain session cannot be resumed; Resume after a handshake is refused in place.
    let plain = l.connect();
    let mut p = SeqClient {
        session_id: plain.session_id,
        ..SeqClient::connect(l.port)
    };
    match p.resume_with(vec![1; 16]) {
        Resumption::Rejected(e) => assert_eq!(e.message, HIDDEN),
        other => panic!("{other:?}"),
    }
    let mut greeted = l.connect();
    greeted.send(
        3,
        &pb::Resume {
            session_id: plain.session_id,
            token: vec![],
            last_received_seq: 0,
            attempt: 1,
        },
    );
    expect_error(&greeted.recv(), lattice_proto::error_code::NOT_ALLOWED);
}

/// A resumable client that stops reading is not closed when its queue passes
/// `net.send_buffer_limit`: its socket ends and the session detaches, so it resumes and gets
/// every line once, in order (it was closed for good, and its `Resume` refused as unknown).
#[test]
fn a_resumable_client_that_does_not_read_detaches_instead_of_closing() {
    let l = Lattice::start(&[
        "--net.send_buffer_limit",
        "16384",
        "--session.replay_max_frames",
        "100000",
        "--session.replay_max_bytes",
        "67108864",
        // Plain frames the test reads as they are.
        "--compress.threshold",
        "1048576",
    ]);
    let (mut speaker, mut listener) = room_pair(&l, "flood");
    let text = "x".repeat(4000);
    let mut said = 0u32;
    // The kernel's socket buffers fill first: say lines until the listener's queue passed the
    // bound (bounded: 64 MB of lines).
    while l.metric_total("lattice_send_overflow_detached_total") == 0 {
        assert!(said < 16_000, "no overflow after {said} lines");
        for _ in 0..100 {
            speaker.send(
                1000 + said,
                &pb::Say {
                    room: "flood".into(),
                    text: format!("{said} {text}"),
                },
            );
            assert!(matches!(speaker.recv().decode(), AnyMessage::Said(_)));
            said += 1;
        }
    }
    assert_eq!(
        l.metric_total("lattice_sessions_closed_send_overflow_total"),
        0
    );
    l.wait_log("reason=send buffer overflow");
    // Whatever the cut socket still delivers, then the resume replays the rest.
    while listener.recv().is_some() {}
    let r = listener.resumed();
    assert!(!r.resync, "nothing was evicted");
    let have = listener.said_texts().len() as u32;
    for _ in have..said {
        listener.recv().expect("replayed frame");
    }
    let lines: Vec<u32> = listener
        .said_texts()
        .iter()
        .map(|t| t.split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(
        lines,
        (0..said).collect::<Vec<_>>(),
        "every line once, in order"
    );
}

#[test]
fn an_evicted_gap_tells_the_client_to_resynchronise() {
    let l = Lattice::start(&["--session.replay_max_frames", "4"]);
    let (mut speaker, mut c) = room_pair(&l, "busy");
    c.cut();
    l.wait_log("session detached; resumable");
    for i in 0..20 {
        speaker.send(
            10 + i,
            &pb::Say {
                room: "busy".into(),
                text: format!("{i}"),
            },
        );
        speaker.recv();
    }
    let r = c.resumed();
    assert!(r.resync, "16 of the 20 lines were evicted");
    assert_eq!(
        r.server_seq, c.last_recv,
        "the client starts after the server's last frame"
    );
    assert!(l.wait_metric_total("lattice_replay_evicted_total", 16) >= 16);
    assert_eq!(l.wait_metric_total("lattice_resyncs_total", 1), 1);
    // The stream goes on from there.
    speaker.send(
        99,
        &pb::Say {
            room: "busy".into(),
            text: "after".into(),
        },
    );
    assert_eq!(c.recv().unwrap().said_text(), "after");
}

#[test]
fn old_clients_without_resume_work_as_before() {
    let l = Lattice::start(&[]);
    let mut c = l.connect();
    c.send(
        5,
        &pb::Ping {
            payload: b"x".to_vec(),
        },
    );
    let f = c.recv();
    assert_eq!(
        (f.flags, f.seq),
        (0, 0),
        "no extension for a session that did not ask"
    );
    // A sequenced frame on such a session is a protocol error.
    c.send_raw(&common::seq::seq_frame(4, 6, 1, 0, &[]));
    assert!(c.closed_by_server());
    l.wait_log("SEQ flag on a session without resume");
    // A Resume with the flag: the flag is the mistake, not the session's kind.
    let mut c = Client::connect_raw(l.port);
    c.send_raw(&common::seq::seq_frame(
        lattice_proto::opcode::RESUME,
        7,
        1,
        0,
        &[],
    ));
    assert!(c.closed_by_server());
    l.wait_log("SEQ flag on a Resume (opcode 30): Hello and Resume are sent without it");
}

#[test]
fn shutdown_closes_detached_sessions_too() {
    let mut l = Lattice::start(&[]);
    let mut c = SeqClient::connect(l.port);
    c.send(1, &pb::Ping { payload: vec![] });
    c.recv().unwrap();
    c.cut();
    l.wait_log("session detached; resumable");
    assert_eq!(l.terminate(), 0, "{}", l.logs());
    let logs = l.logs();
    assert!(logs.contains("reason=server shutdown"), "{logs}");
    assert_eq!(logs.matches("shutdown: shard stopped").count(), 2, "{logs}");
}

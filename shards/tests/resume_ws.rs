//! Resume over WebSocket against a real `lattice` process: a WebSocket cut mid-stream (or closed
//! with a close frame, as a browser does) and resumed by a `Resume` as the first message of a new
//! WebSocket connection, on whichever shard that connection lands (same shard: rebind; other
//! shard: the socket and its WebSocket layer are handed over), nothing lost and nothing handled
//! twice.

mod common;

use common::seq_ws::WsSeqClient;
use common::*;
use lattice_proto::{pb, AnyMessage};

/// A plain TCP speaker and a resumable WebSocket listener in `room`.
fn room_pair(l: &Lattice, room: &str) -> (Client, WsSeqClient) {
    let mut plain = l.connect();
    plain.send(1, &pb::JoinRoom { room: room.into() });
    assert!(matches!(plain.recv().decode(), AnyMessage::Joined(_)));
    let mut r = WsSeqClient::connect(l.http);
    r.send(2, &pb::JoinRoom { room: room.into() });
    let got = r.recv().unwrap().decode();
    assert!(matches!(got, AnyMessage::Joined(_)), "{got:?}");
    (plain, r)
}

#[test]
fn websocket_cut_mid_stream_resumes_with_nothing_lost_on_either_shard() {
    let l = Lattice::start(&[]);
    let (mut speaker, mut listener) = room_pair(&l, "lobby");
    let mut next = 0u32;
    // Twelve cuts: the new WebSocket connections are accepted round-robin on both shards, so
    // some land on the session's shard and some on the other (handover with the layer).
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
        for _ in 0..(round % 5) {
            listener.recv().expect("frame before the cut");
        }
        if round % 3 == 2 {
            // As a browser closes its socket: a close frame, not a cut.
            listener.close_frame();
        }
        listener.cut();
        let r = listener.resumed();
        assert!(!r.resync, "nothing was evicted");
        assert_eq!(r.resume_token.len(), 16);
        let have = listener.said_texts().len() as u32;
        for _ in have..next {
            listener.recv().expect("replayed or live frame");
        }
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
    let handed = l.metric_total("lattice_handovers_sent_total");
    assert!(handed > 0, "some resumes crossed shards");
    assert!(handed < 12, "some resumes stayed on the session's shard");
    assert_eq!(l.metric_total("lattice_resume_rejected_total"), 0);
    // The session is alive and sequenced on its last WebSocket.
    listener.send(
        900,
        &pb::Ping {
            payload: b"after".to_vec(),
        },
    );
    let f = listener.recv().expect("pong");
    assert!(matches!(f.decode(), AnyMessage::Pong(p) if p.payload == b"after"));
}

#[test]
fn a_resent_request_over_websocket_is_handled_once() {
    let l = Lattice::start(&[]);
    let mut c = WsSeqClient::connect(l.http);
    let ping = c.send(
        10,
        &pb::Ping {
            payload: b"once".to_vec(),
        },
    );
    let f = c.recv().expect("pong");
    assert!(matches!(f.decode(), AnyMessage::Pong(p) if p.payload == b"once"));
    c.cut();
    // Twice: one resume lands on the session's shard, the other on the other shard.
    for round in 0..2u8 {
        let r = c.resumed();
        assert_eq!(
            r.last_received_seq, c.last_sent,
            "the server has every request"
        );
        // Resend the request the server already handled: dropped, never answered twice.
        c.send_raw(&ping);
        c.send(
            11 + u32::from(round),
            &pb::Ping {
                payload: vec![round],
            },
        );
        let f = c.recv().expect("pong");
        assert!(
            matches!(f.decode(), AnyMessage::Pong(ref p) if p.payload == [round]),
            "the next answer is the new request's: {f:?}"
        );
        c.cut();
    }
    assert!(l.wait_metric_total("lattice_duplicates_dropped_total", 2) >= 2);
    let pongs_once = c
        .received
        .iter()
        .filter(|(_, f)| matches!(f.decode(), AnyMessage::Pong(ref p) if p.payload == b"once"))
        .count();
    assert_eq!(pongs_once, 1, "the request was handled once");
    assert_eq!(l.metric_total("lattice_handovers_sent_total"), 1);
}

#[test]
fn a_websocket_close_frame_detaches_a_sequenced_session() {
    let l = Lattice::start(&[]);
    let mut c = WsSeqClient::connect(l.http);
    c.close_frame();
    // The socket ends (no close answer is promised), the session waits for a Resume.
    assert!(c.recv().is_none(), "the server ends the socket");
    l.wait_log("session detached; resumable");
    let r = c.resumed();
    assert!(!r.resync);
    c.send(3, &pb::Ping { payload: vec![3] });
    assert!(matches!(c.recv().unwrap().decode(), AnyMessage::Pong(p) if p.payload == [3]));
}

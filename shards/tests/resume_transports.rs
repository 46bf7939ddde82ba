//! Resume between transports, against a real `lattice` process (docs/PROTOCOL.md, "Resume",
//! Transports): a session resumes only over the transport it was opened on (binary TCP or
//! WebSocket), so a `Resume` from the other one is answered `RESUME_REJECTED` and the socket
//! closed, leaving the session untouched; over TLS, `Hello{resume: true}` gets a `Welcome` without
//! a token and the session stays unsequenced, and a `Resume` is refused.

mod common;

use common::seq::{Resumption, SeqClient};
use common::seq_ws::WsSeqClient;
use common::tls::{client_config, gen_cert, TempDir, TlsClient, TlsLattice, Versions};
use common::*;
use lattice_proto::{error_code, opcode, pb, AnyMessage};

const FLAG_SEQ: u16 = 2;

fn hello_resume() -> pb::Hello {
    pb::Hello {
        client_version: lattice_proto::version::PROTOCOL.to_string(),
        resume: true,
    }
}

/// A binary session over TCP that is resumable, detached by a cut socket.
fn detached_session(l: &Lattice) -> SeqClient {
    let mut s = SeqClient::connect(l.port);
    assert_eq!(s.token.len(), 16, "TCP grants resume");
    s.send(2, &pb::Ping { payload: vec![1] });
    assert!(matches!(s.recv().unwrap().decode(), AnyMessage::Pong(_)));
    s.cut();
    l.wait_log("session detached; resumable");
    s
}

fn resume_msg(s: &SeqClient) -> pb::Resume {
    pb::Resume {
        session_id: s.session_id,
        token: s.token.clone(),
        last_received_seq: s.last_recv,
        attempt: 1,
    }
}

fn expect_rejected(f: &RawFrame, why: &str) {
    assert_eq!(f.flags & FLAG_SEQ, 0);
    match f.decode() {
        AnyMessage::Error(e) => {
            assert_eq!(e.code, error_code::RESUME_REJECTED, "{e:?}");
            assert_eq!(e.opcode, u32::from(opcode::RESUME));
            assert!(e.message.contains(why), "{}", e.message);
        }
        other => panic!("expected RESUME_REJECTED, got {other:?}"),
    }
}

#[test]
fn resume_does_not_cross_between_tcp_and_websocket() {
    let l = Lattice::start(&[]);
    // A TCP session's Resume over WebSocket: refused, the socket closed (twice, so that one
    // lands on each shard: the refusal comes from the session's shard either way).
    let mut s = detached_session(&l);
    for _ in 0..2 {
        let mut ws = WsClient::open(l.http, "/ws", "").expect("upgrade");
        ws.send(7, &resume_msg(&s));
        expect_rejected(
            &ws.recv(),
            "a binary session cannot be resumed over a WebSocket connection; resume it over the transport it was opened on",
        );
        match ws.next() {
            None | Some(WsMsg::Close(..)) => {}
            Some(other) => panic!("expected the socket to close, got {other:?}"),
        }
    }
    // The session it named was not touched: it resumes over TCP with its token and attempt 1.
    match s.resume() {
        Resumption::Resumed(r) => assert!(!r.resync),
        Resumption::Rejected(e) => panic!("resume over TCP after the refusal: {e:?}"),
    }
    s.send(3, &pb::Ping { payload: vec![3] });
    assert!(matches!(s.recv().unwrap().decode(), AnyMessage::Pong(p) if p.payload == [3]));

    // A WebSocket session's Resume over TCP: refused the same way; it still resumes over
    // WebSocket.
    let mut w = WsSeqClient::connect(l.http);
    w.send(2, &pb::Ping { payload: vec![1] });
    assert!(matches!(w.recv().unwrap().decode(), AnyMessage::Pong(_)));
    w.cut();
    l.wait_log("session detached; resumable");
    for _ in 0..2 {
        let mut c = Client::connect_raw(l.port);
        c.send(
            7,
            &pb::Resume {
                session_id: w.session_id,
                token: w.token.clone(),
                last_received_seq: w.last_recv,
                attempt: 1,
            },
        );
        expect_rejected(
            &c.recv(),
            "a WebSocket session cannot be resumed over a binary connection; resume it over the transport it was opened on",
        );
        assert!(
            c.try_recv().is_none(),
            "the socket closes after the refusal"
        );
    }
    // Without its token a client does not learn the session's transport either.
    let mut c = Client::connect_raw(l.port);
    c.send(
        7,
        &pb::Resume {
            session_id: w.session_id,
            token: vec![0; 16],
            last_received_seq: w.last_recv,
            attempt: 1,
        },
    );
    expect_rejected(
        &c.recv(),
        "resume rejected: unknown or closed session, or wrong token; start a new session with Hello",
    );
    let r = w.resumed();
    assert!(!r.resync);
    w.send(3, &pb::Ping { payload: vec![4] });
    assert!(matches!(w.recv().unwrap().decode(), AnyMessage::Pong(p) if p.payload == [4]));
    assert!(l.metric_total("lattice_resume_rejected_total") >= 4);
}

#[test]
fn tls_grants_no_resume_and_refuses_a_resume() {
    let dir = TempDir::new("resume-tls");
    let (cert, key) = gen_cert(&dir.0);
    let t = TlsLattice::start(&cert, &key, &[]);
    let cfg = client_config(&cert, Versions::Tls13);

    let mut c = TlsClient::handshake(t.tls_port, cfg.clone()).expect("TLS handshake");
    c.send(1, &hello_resume());
    match c.recv().decode() {
        AnyMessage::Welcome(w) => assert!(w.resume_token.is_empty(), "{w:?}"),
        other => panic!("expected Welcome, got {other:?}"),
    }
    c.send(
        2,
        &pb::Ping {
            payload: b"tls".to_vec(),
        },
    );
    let f = c.recv();
    assert_eq!(f.flags & FLAG_SEQ, 0, "an unsequenced session");
    assert!(matches!(f.decode(), AnyMessage::Pong(p) if p.payload == b"tls"));

    let mut s = detached_session(&t.l);
    let mut c = TlsClient::handshake(t.tls_port, cfg).expect("TLS handshake");
    c.send(7, &resume_msg(&s));
    expect_rejected(
        &c.recv(),
        "resume is supported on binary and WebSocket connections without TLS only",
    );
    assert!(
        c.try_recv().is_none(),
        "the socket closes after the refusal"
    );
    match s.resume() {
        Resumption::Resumed(r) => assert!(!r.resync),
        Resumption::Rejected(e) => panic!("resume over TCP after the refusal: {e:?}"),
    }
}

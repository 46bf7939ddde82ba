//! Resume of a WebSocket session, sans-IO: frames (and `Ack`s) queued behind their binary
//! message headers and replayed as they are through the new socket's WebSocket layer, control
//! frames never replayed, a client close frame detaching the session, and resumes between
//! transports refused with nothing changed.
use super::layer_tests::{drain, feed, http_session, ws_frame, UPGRADE};
use super::*;
use crate::frame::encode;

const MS: u64 = 1_000_000;
const TOKEN: [u8; TOKEN_LEN] = [7; TOKEN_LEN];

/// An upgraded WebSocket session, its 101 written.
fn ws_session() -> Session {
    let mut s = http_session(false);
    assert!(feed(&mut s, 1, UPGRADE).unwrap().is_empty());
    assert_eq!(s.transport(), Transport::WebSocket);
    drain(&mut s);
    s
}

/// Splits server output into WebSocket messages: (opcode, payload). Server frames are final,
/// unmasked and short here.
fn messages(mut out: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut v = Vec::new();
    while !out.is_empty() {
        assert_eq!(out[0] & 0x80, 0x80, "final");
        let len = out[1] as usize;
        assert!(len < 126, "short messages in this test");
        v.push((out[0] & 0x0f, out[2..2 + len].to_vec()));
        out = &out[2 + len..];
    }
    v
}

/// (opcode, seq) of a Lattice frame carried in a binary message.
fn frame_seq(p: &[u8]) -> (u16, u32) {
    assert_eq!(
        u32::from_le_bytes(p[0..4].try_into().unwrap()) as usize,
        p.len()
    );
    let op = u16::from_le_bytes([p[4], p[5]]);
    let flags = u16::from_le_bytes([p[6], p[7]]);
    let seq = if flags & FLAG_SEQ != 0 {
        u32::from_le_bytes(p[12..16].try_into().unwrap())
    } else {
        0
    };
    (op, seq)
}

/// Everything queued (the `Resumed` prefix comes out in a transmit of its own).
fn drain_all(s: &mut Session) -> Vec<u8> {
    let mut all = Vec::new();
    loop {
        let out = drain(s);
        if out.is_empty() {
            return all;
        }
        all.extend(out);
    }
}

fn resume_answer(_: &Resumption, out: &mut Vec<u8>) {
    out.extend_from_slice(&encode(RESUMED_OPCODE, 0, 7, b"R"));
}

#[test]
fn a_websocket_session_resumes_on_a_new_websocket_with_its_frames_framed() {
    let mut s = ws_session();
    assert!(s.supports_resume());
    s.enable_resume(TOKEN);
    s.send(&encode(5, 0, 1, b"a")).unwrap();
    // A ping falls due between two frames: a control frame, never part of the replay.
    s.handle_timeout(MonoTime(40 * MS));
    s.send(&encode(5, 0, 2, b"b")).unwrap();
    let sent = messages(&drain(&mut s));
    let kinds: Vec<(u8, u16, u32)> = sent
        .iter()
        .map(|(op, p)| {
            if *op == 2 {
                let (o, q) = frame_seq(p);
                (*op, o, q)
            } else {
                (*op, 0, 0)
            }
        })
        .collect();
    assert_eq!(kinds, [(2, 5, 1), (9, 0, 0), (2, 5, 2)]);

    // The browser closes its socket: a close frame. The socket ends, the session detaches.
    let b = s.binding();
    assert!(feed(&mut s, 50 * MS, &ws_frame(8, &1000u16.to_be_bytes()))
        .unwrap()
        .is_empty());
    assert!(s.peer_ended(), "the runtime ends the socket");
    assert!(!s.is_closing(), "not the end of the session");
    assert_eq!(s.peer_closed(b, MonoTime(50 * MS)), SocketEnd::Detached);
    assert!(!s.peer_ended());
    // Queued while detached: framed for WebSocket all the same.
    s.send(&encode(5, 0, 3, b"c")).unwrap();

    // A new WebSocket connection (its own upgrade) presents the Resume.
    let mut socket = ws_session();
    let r = s
        .resume_from(
            &mut socket,
            MonoTime(60 * MS),
            &TOKEN,
            1,
            1,
            [8; 16],
            resume_answer,
        )
        .unwrap();
    assert_eq!((r.resync, r.replayed), (false, 2));
    assert_eq!(socket.transport(), Transport::Binary, "the layer moved");
    assert_eq!(s.transport(), Transport::WebSocket);
    let replay: Vec<(u8, (u16, u32))> = messages(&drain_all(&mut s))
        .into_iter()
        .map(|(op, p)| (op, frame_seq(&p)))
        .collect();
    assert_eq!(
        replay,
        [(2, (RESUMED_OPCODE, 0)), (2, (5, 2)), (2, (5, 3))],
        "Resumed, then the frames the peer lacks, one binary message each; no ping"
    );
    // The new socket's layer reads the next messages (sequenced now).
    let mut f = encode(4, 0, 9, b"");
    add_extension_for_test(&mut f, 1, 3);
    assert_eq!(
        feed(&mut s, 61 * MS, &ws_frame(2, &f)).unwrap(),
        ["frame 4 9 []"]
    );
}

fn add_extension_for_test(f: &mut Vec<u8>, seq: u32, ack: u32) {
    add_extension(f, 0, seq, ack);
}

#[test]
fn an_ack_frame_goes_out_in_a_binary_message() {
    let mut s = ws_session();
    s.enable_resume(TOKEN);
    let mut f = encode(4, 0, 9, b"");
    add_extension_for_test(&mut f, 1, 0);
    assert_eq!(
        feed(&mut s, MS, &ws_frame(2, &f)).unwrap(),
        ["frame 4 9 []"]
    );
    s.handle_timeout(MonoTime(MS + 200 * MS));
    let mut out = messages(&drain(&mut s));
    out.retain(|(op, _)| *op != 9); // pings of the 30 ms interval
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].0, 2);
    assert_eq!(frame_seq(&out[0].1), (ACK_OPCODE, 0));
}

#[test]
fn resume_between_transports_is_refused_and_changes_nothing() {
    // A WebSocket session, detached.
    let mut s = ws_session();
    s.enable_resume(TOKEN);
    s.send(&encode(5, 0, 1, b"a")).unwrap();
    let b = s.binding();
    assert_eq!(s.peer_closed(b, MonoTime(MS)), SocketEnd::Detached);
    // A binary socket presents its Resume: refused, its decoder left in place.
    let mut tcp = Session::new(SessionId::new(1, 2, 0), s.limits(), MonoTime(MS));
    assert_eq!(
        s.resume_from(
            &mut tcp,
            MonoTime(2 * MS),
            &TOKEN,
            0,
            1,
            [8; 16],
            resume_answer
        ),
        Err(ResumeError::Transport {
            session: "WebSocket",
            socket: "binary"
        })
    );
    assert!(!s.is_attached());
    // Refused before the checks: the token and attempt 1 still work over WebSocket.
    let mut ws = ws_session();
    s.resume_from(
        &mut ws,
        MonoTime(3 * MS),
        &TOKEN,
        0,
        1,
        [8; 16],
        resume_answer,
    )
    .unwrap();

    // A binary session, detached; a WebSocket presents the Resume: refused, the WebSocket layer
    // stays with its socket (the refusal goes out through it).
    let mut t = Session::new(SessionId::new(0, 3, 0), s.limits(), MonoTime(0));
    t.enable_resume(TOKEN);
    let b = t.binding();
    assert_eq!(t.peer_closed(b, MonoTime(MS)), SocketEnd::Detached);
    let mut ws = ws_session();
    assert_eq!(
        t.resume_from(
            &mut ws,
            MonoTime(2 * MS),
            &TOKEN,
            0,
            1,
            [8; 16],
            resume_answer
        ),
        Err(ResumeError::Transport {
            session: "binary",
            socket: "WebSocket"
        })
    );
    assert_eq!(ws.transport(), Transport::WebSocket);
    // The plain form is for binary sockets; it refuses a WebSocket session.
    let mut u = ws_session();
    u.enable_resume(TOKEN);
    let b = u.binding();
    u.peer_closed(b, MonoTime(MS));
    assert!(matches!(
        u.resume(MonoTime(2 * MS), &TOKEN, 0, 1, [8; 16], resume_answer),
        Err(ResumeError::Transport { .. })
    ));
}

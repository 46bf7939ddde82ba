//! The session over the HTTP and WebSocket layers: upgrade, frames in binary messages,
//! close handshakes, pings, RPC replies, deadlines.
use super::*;
use crate::frame::encode;
use crate::http::HttpLimits;
use crate::stack::{StackKind, WsSettings};
use crate::ws::frame::apply_mask;

const MS: u64 = 1_000_000;

pub(super) fn http_session(echo: bool) -> Session {
    let cfg = Arc::new(StackConfig {
        kind: StackKind::Http,
        session_type: SessionType::Client,
        http: HttpLimits {
            head_timeout: Duration::from_millis(100),
            ..HttpLimits::default()
        },
        ws: WsSettings {
            echo_path: if echo { "/echo".into() } else { String::new() },
            ping_interval: Some(Duration::from_millis(30)),
            ..WsSettings::default()
        },
    });
    Session::new_on(
        SessionId::new(0, 1, 0),
        SessionLimits::basic(1024, 4096, Some(Duration::from_millis(1000))),
        &cfg,
        MonoTime(0),
    )
}

pub(super) fn ws_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [1, 2, 3, 4];
    let mut v = vec![0x80 | opcode];
    if payload.len() < 126 {
        v.push(0x80 | payload.len() as u8);
    } else {
        v.push(0x80 | 126);
        v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    v.extend_from_slice(&mask);
    let mut p = payload.to_vec();
    apply_mask(&mut p, mask, 0);
    v.extend(p);
    v
}

pub(super) const UPGRADE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: lattice.v1\r\n\r\n";

/// Events of one read, frames and requests as owned values.
pub(super) fn feed(s: &mut Session, now: u64, bytes: &[u8]) -> Result<Vec<String>, CloseReason> {
    let mut owned = bytes.to_vec();
    let mut input: &mut [u8] = &mut owned;
    let mut got = Vec::new();
    while let Some(ev) = s.receive_event(s.binding(), MonoTime(now), &mut input)? {
        got.push(match ev {
            Input::Frame(f) => {
                let f = f.frame();
                format!(
                    "frame {} {} {:?}",
                    f.header.opcode, f.header.request_id, f.body
                )
            }
            Input::Request(r) => format!("{} {}", r.method, r.path),
            other => panic!("no rate limit or sequencing here: {other:?}"),
        });
    }
    Ok(got)
}

pub(super) fn drain(s: &mut Session) -> Vec<u8> {
    let out = s.transmit(s.binding()).to_vec();
    s.transmitted(s.binding(), out.len());
    out
}

#[test]
fn upgrade_then_frames_in_binary_messages_both_ways() {
    let mut s = http_session(false);
    assert_eq!(s.transport(), Transport::Http);
    let mut bytes = UPGRADE.to_vec();
    // A frame right behind the upgrade request, in the same read.
    bytes.extend(ws_frame(2, &encode(1, 0, 7, b"v")));
    let got = feed(&mut s, 1, &bytes).unwrap();
    assert_eq!(got, ["frame 1 7 [118]"]);
    assert_eq!(s.transport(), Transport::WebSocket);
    let hs = String::from_utf8(drain(&mut s)).unwrap();
    assert!(
        hs.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{hs}"
    );
    assert!(hs.contains("Sec-WebSocket-Protocol: lattice.v1\r\n"));
    let got = feed(
        &mut s,
        2,
        &[
            ws_frame(2, &encode(4, 0, 8, b"ping")),
            ws_frame(2, &encode(4, 0, 9, b"")),
        ]
        .concat(),
    )
    .unwrap();
    assert_eq!(got, ["frame 4 8 [112, 105, 110, 103]", "frame 4 9 []"]);
    s.send(&encode(5, 0, 8, b"pong")).unwrap();
    let out = drain(&mut s);
    assert_eq!(out[..2], [0x82, 16], "one binary message per frame");
    assert_eq!(&out[2..], &encode(5, 0, 8, b"pong")[..]);
    assert_eq!(s.buffered_input(), 0);
}

#[test]
fn bad_messages_close_with_their_codes() {
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (ws_frame(1, b"text"), 1003),
        (ws_frame(2, b"abc"), 1007),
        (
            ws_frame(2, &[encode(4, 0, 1, b""), encode(4, 0, 2, b"")].concat()),
            1007,
        ),
        (ws_frame(2, &vec![0; 1025]), 1009),
        (vec![0x82, 0x01, b'x'], 1002),
    ];
    for (bytes, code) in cases {
        let mut s = http_session(false);
        feed(&mut s, 1, UPGRADE).unwrap();
        drain(&mut s);
        let e = feed(&mut s, 2, &bytes).unwrap_err();
        assert!(matches!(e, CloseReason::Protocol(_)), "{e:?}");
        let out = drain(&mut s);
        assert_eq!(out[0], 0x88, "a close frame");
        assert_eq!(u16::from_be_bytes([out[2], out[3]]), code, "{e}");
        assert!(s.is_closing());
    }
}

#[test]
fn close_handshake_lingers_until_written() {
    let mut s = http_session(false);
    feed(&mut s, 1, UPGRADE).unwrap();
    drain(&mut s);
    assert!(feed(&mut s, 2, &ws_frame(8, &1000u16.to_be_bytes()))
        .unwrap()
        .is_empty());
    assert!(!s.is_closing(), "not before the answer is written");
    assert_eq!(s.transmit(s.binding()), [0x88, 2, 0x03, 0xE8]);
    s.transmitted(s.binding(), 4);
    assert_eq!(s.close_reason(), Some(&CloseReason::PeerClosed));
    // A server close sends its code.
    let mut s = http_session(false);
    feed(&mut s, 1, UPGRADE).unwrap();
    drain(&mut s);
    s.close(CloseReason::Shutdown);
    assert_eq!(&drain(&mut s)[..4], [0x88, 17, 0x03, 0xE9]);
}

#[test]
fn pings_on_the_interval_and_pongs_to_pings() {
    let mut s = http_session(false);
    feed(&mut s, 0, UPGRADE).unwrap();
    drain(&mut s);
    assert_eq!(s.poll_timeout(), Some(MonoTime(30 * MS)));
    s.handle_timeout(MonoTime(30 * MS));
    assert_eq!(drain(&mut s), [0x89, 0]);
    assert_eq!(s.poll_timeout(), Some(MonoTime(60 * MS)));
    feed(&mut s, 40 * MS, &ws_frame(9, b"hi")).unwrap();
    assert_eq!(drain(&mut s), [0x8A, 2, b'h', b'i']);
    // The idle deadline still rules: no input for idle_timeout closes with Going Away.
    s.handle_timeout(MonoTime(1040 * MS));
    assert_eq!(s.close_reason(), Some(&CloseReason::IdleTimeout));
    assert_eq!(&drain(&mut s)[..4], [0x88, 14, 0x03, 0xE9]);
}

#[test]
fn echo_path_echoes_text_and_binary() {
    let mut s = http_session(true);
    feed(
        &mut s,
        1,
        &String::from_utf8(UPGRADE.to_vec())
            .unwrap()
            .replace("/ws", "/echo")
            .into_bytes(),
    )
    .unwrap();
    assert_eq!(s.transport(), Transport::WebSocketEcho);
    drain(&mut s);
    assert!(feed(
        &mut s,
        2,
        &[ws_frame(1, "héllo".as_bytes()), ws_frame(2, b"\x00\x01")].concat()
    )
    .unwrap()
    .is_empty());
    let mut want = vec![0x81, 6];
    want.extend("héllo".as_bytes());
    want.extend([0x82, 2, 0, 1]);
    assert_eq!(drain(&mut s), want);
    assert_eq!(s.send(&encode(5, 0, 0, b"")), Err(SendError::NoChannel));
}

#[test]
fn http_requests_responses_and_rpc_replies() {
    let mut s = http_session(false);
    let got = feed(&mut s, 1, b"GET /healthz HTTP/1.1\r\n\r\nPOST /rpc/Ping HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    assert_eq!(got, ["GET /healthz"]);
    assert!(!s.wants_input());
    assert_eq!(
        s.send(&encode(5, 0, 3, b"")),
        Err(SendError::NoChannel),
        "no reply awaited"
    );
    s.respond(&Response::text(200, "ok\n")).unwrap();
    assert_eq!(
        s.respond(&Response::text(200, "twice")),
        Err(SendError::NoChannel)
    );
    // The pipelined request waits until the response before it is written: nothing is read
    // or parsed meanwhile, so pipelined responses never pile up past the send bound.
    assert!(!s.has_pending_input() && !s.wants_input());
    assert!(feed(&mut s, 2, &[]).unwrap().is_empty());
    assert!(String::from_utf8(drain(&mut s))
        .unwrap()
        .ends_with("\r\n\r\nok\n"));
    assert!(s.has_pending_input() && s.wants_input());
    let got = feed(&mut s, 2, &[]).unwrap();
    assert_eq!(got, ["POST /rpc/Ping"]);
    assert!(s.expect_reply(77, 1, MonoTime(500 * MS)));
    assert!(!s.expect_reply(78, 1, MonoTime(500 * MS)), "one at a time");
    assert_eq!(
        s.send(&encode(13, 0, 0, b"push")),
        Err(SendError::NoChannel)
    );
    s.send(&encode(5, 0, 77, b"p")).unwrap();
    assert!(s.has_rpc_reply());
    let reply = s.take_rpc_reply().unwrap();
    assert_eq!((reply.request_id, reply.tag), (77, 1));
    assert_eq!(reply.frame, encode(5, 0, 77, b"p"));
    s.respond(&Response::text(200, "pong")).unwrap();
    assert!(!s.is_closing(), "Connection: close waits for the write");
    let out = String::from_utf8(drain(&mut s)).unwrap();
    assert!(out.ends_with("Connection: close\r\n\r\npong"), "{out}");
    assert_eq!(s.close_reason(), Some(&CloseReason::PeerClosed));
}

#[test]
fn rpc_without_a_reply_gets_504_and_slow_heads_408() {
    let mut s = http_session(false);
    feed(
        &mut s,
        1,
        b"POST /rpc/Ping HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    )
    .unwrap();
    s.expect_reply(1, 0, MonoTime(50 * MS));
    assert_eq!(s.poll_timeout(), Some(MonoTime(50 * MS)));
    s.handle_timeout(MonoTime(50 * MS));
    assert!(String::from_utf8(drain(&mut s))
        .unwrap()
        .starts_with("HTTP/1.1 504 "));
    assert!(!s.is_closing(), "keep-alive goes on");

    let mut s = http_session(false);
    feed(&mut s, 10 * MS, b"GET / HT").unwrap();
    assert_eq!(
        s.poll_timeout(),
        Some(MonoTime(100 * MS)),
        "head deadline from the open"
    );
    s.handle_timeout(MonoTime(100 * MS));
    assert!(String::from_utf8(drain(&mut s))
        .unwrap()
        .starts_with("HTTP/1.1 408 "));
    assert!(
        matches!(s.close_reason(), Some(CloseReason::Protocol(m)) if m.contains("not complete"))
    );
}

#[test]
fn refused_upgrades_answer_and_close() {
    let mut s = http_session(false);
    feed(&mut s, 1, b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let out = String::from_utf8(drain(&mut s)).unwrap();
    assert!(
        out.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
        "{out}"
    );
    assert!(matches!(s.close_reason(), Some(CloseReason::Protocol(m)) if m.contains("426")));
    let mut s = http_session(false);
    let e = feed(&mut s, 1, b"BAD\r\n\r\n").unwrap_err();
    assert!(matches!(e, CloseReason::Protocol(m) if m.contains("http: malformed")));
    assert!(drain(&mut s).starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
}

//! Accounts through the gateway: `POST /rpc/{Message}` (account errors mapped to HTTP statuses,
//! the HTTP connection as the session) and WebSocket sessions (password and token logins, an older
//! WebSocket session kicked with a `Kicked` frame and a close frame by a newer TCP login).

mod acct;
mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use acct::*;
use common::*;
use lattice_proto::{error_code as ec, pb, AnyMessage};

/// `POST /rpc/{name}` with a JSON body on `s` (kept open); returns (status, head, JSON body).
fn rpc(s: &mut TcpStream, name: &str, body: &str) -> (u16, String, serde_json::Value) {
    let req = format!(
        "POST /rpc/{name} HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let (status, head, body) = read_response(s).expect("a response");
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{status} {head}: body is not JSON ({e})"));
    (status, head, v)
}

fn http_conn(l: &Lattice) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", l.http)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// The next frame on `ws` answering `rid`, skipping pushes (request id 0, e.g. `IconManifest`).
fn ws_answer(ws: &mut WsClient, rid: u32) -> AnyMessage {
    loop {
        let f = ws.recv();
        if f.request_id == rid {
            return f.decode();
        }
        assert_eq!(
            f.request_id,
            0,
            "an answer to another request: {:?}",
            f.decode()
        );
    }
}

#[test]
fn accounts_over_rpc_map_their_errors_to_statuses() {
    let l = Lattice::start(&[]);
    let mut h = http_conn(&l);
    let (st, head, v) = rpc(
        &mut h,
        "Register",
        r#"{"account":"Rpc_1","password":"correct horse","nickname":"Rip"}"#,
    );
    assert_eq!(st, 200, "{head} {v}");
    assert!(head.contains("X-Lattice-Message: RegisterOk"), "{head}");
    // 64-bit integers are JSON strings in the protobuf JSON mapping.
    let id: u64 = v["userId"].as_str().unwrap().parse().unwrap();
    assert!(id > 0);
    for (name, body, status, code) in [
        (
            "Register",
            r#"{"account":"rpc_1","password":"another one","nickname":"R"}"#,
            409,
            ec::ACCOUNT_EXISTS,
        ),
        (
            "Register",
            r#"{"account":"r","password":"correct horse","nickname":"R"}"#,
            400,
            ec::ACCOUNT_TOO_SHORT,
        ),
        (
            "Login",
            r#"{"account":"rpc_1","password":"wrong horse"}"#,
            401,
            ec::WRONG_CREDENTIALS,
        ),
        (
            "ChangeNickname",
            r#"{"nickname":"Ripley"}"#,
            401,
            ec::NOT_LOGGED_IN,
        ),
        (
            "TokenLogin",
            r#"{"sessionToken":"bm90IGEgdG9rZW4="}"#,
            401,
            ec::TOKEN_INVALID,
        ),
    ] {
        let (st, head, v) = rpc(&mut h, name, body);
        assert_eq!(
            (st, v["code"].as_u64()),
            (status, Some(code as u64)),
            "{name} {body}: {head} {v}"
        );
        assert!(head.contains("X-Lattice-Message: Error"), "{head}");
    }
    // The keep-alive HTTP connection is the session: a login over /rpc holds for its later
    // requests, and a fresh connection is logged out.
    let (st, _, v) = rpc(
        &mut h,
        "Login",
        r#"{"account":"RPC_1","password":"correct horse"}"#,
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["userId"].as_str().unwrap(), id.to_string());
    assert!(
        v["sessionToken"].as_str().is_some_and(|t| !t.is_empty()),
        "{v}"
    );
    let (st, _, v) = rpc(&mut h, "ChangeNickname", r#"{"nickname":"Ripley"}"#);
    assert_eq!((st, v["nickname"].as_str()), (200, Some("Ripley")), "{v}");
    let (st, _, v) = rpc(&mut http_conn(&l), "ChangeNickname", r#"{"nickname":"X"}"#);
    assert_eq!(
        (st, v["code"].as_u64()),
        (401, Some(ec::NOT_LOGGED_IN as u64))
    );
    // The IP lock-out counts failures over /rpc like any others and answers 429 (on a logged-out
    // connection: the logged-in one answers ALREADY_LOGGED_IN, 409).
    let (st, _, _) = rpc(
        &mut h,
        "Login",
        r#"{"account":"rpc_1","password":"correct horse"}"#,
    );
    assert_eq!(st, 409);
    let mut out = http_conn(&l);
    let mut last = 0;
    for i in 0..12 {
        let (st, _, _) = rpc(
            &mut out,
            "Login",
            &format!(r#"{{"account":"nobody{i}","password":"wrong horse"}}"#),
        );
        last = st;
    }
    assert_eq!(last, 429, "the address is locked after 10 failures");
}

#[test]
fn a_websocket_session_logs_in_and_a_tcp_login_kicks_it() {
    let l = Lattice::start(&[]);
    let mut ws = WsClient::connect(l.http);
    ws.send(2, &register("Web_1", "correct horse", "Webby"));
    assert!(matches!(ws_answer(&mut ws, 2), AnyMessage::RegisterOk(_)));
    ws.send(3, &login("web_1", "correct horse"));
    let token = match ws_answer(&mut ws, 3) {
        AnyMessage::LoginOk(ok) => ok.session_token,
        other => panic!("{other:?}"),
    };
    // The same account by token over TCP: the WebSocket session is told why, then closed.
    let mut tcp = l.connect();
    match ask(
        &mut tcp,
        4,
        &pb::TokenLogin {
            session_token: token,
        },
    ) {
        AnyMessage::LoginOk(ok) => assert_eq!(ok.profile.unwrap().nickname, "Webby"),
        other => panic!("{other:?}"),
    }
    loop {
        let f = ws.recv();
        assert_eq!(f.request_id, 0);
        match f.decode() {
            AnyMessage::Kicked(k) => {
                assert_eq!(k.code, ec::LOGGED_IN_ELSEWHERE);
                break;
            }
            AnyMessage::ProfileChanged(_) | AnyMessage::IconManifest(_) => continue,
            other => panic!("expected Kicked, got {other:?}"),
        }
    }
    let (code, _reason) = ws.expect_close();
    assert!(code.is_some(), "a close frame with a code");
}

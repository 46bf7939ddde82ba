//! Whole-process tests of the gateway transports: the HTTP listener's routes and bad-input
//! statuses, `POST /rpc`, WebSocket sessions next to TCP ones, close codes, pings, origins,
//! session types on extra listeners, and surviving `accept` failing with EMFILE.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use lattice_proto::{error_code, pb, AnyMessage};
use prost::Message;

#[test]
fn http_routes_keep_alive_and_pipelining() {
    let l = Lattice::start(&[]);
    let (status, head, body) = http_exchange(l.http, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((status, &body[..]), (200, &b"ok\n"[..]), "{head}");
    let (status, head, body) = http_exchange(l.http, b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(status, 200);
    assert!(head.contains("Content-Type: text/html"), "{head}");
    assert!(String::from_utf8(body).unwrap().contains("/lattice.js"));
    let (status, _, body) = http_exchange(l.http, b"GET /lattice.js HTTP/1.1\r\n\r\n");
    assert_eq!(status, 200);
    assert!(body.starts_with(b"\"use strict\";var Lattice=("));
    assert_eq!(http_exchange(l.http, b"GET /nope HTTP/1.1\r\n\r\n").0, 404);
    let (status, head, _) = http_exchange(l.http, b"DELETE /healthz HTTP/1.1\r\n\r\n");
    assert_eq!(status, 405);
    assert!(head.contains("Allow: GET, HEAD"), "{head}");
    // HEAD is answered as GET without the body, on both listeners (the client listener keeps the
    // connection: a GET pipelined behind the HEAD is read right after its head; the admin
    // listener serves one request per connection).
    let exchange = |port: u16, request: &[u8]| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request).unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap();
        String::from_utf8(all).unwrap()
    };
    let length = |r: &str| {
        r.lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .map(str::to_string)
    };
    let text = exchange(
        l.http,
        b"HEAD /healthz HTTP/1.1\r\n\r\nGET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n",
    );
    let responses: Vec<&str> = text.split("HTTP/1.1 ").skip(1).collect();
    assert_eq!(responses.len(), 2, "{text}");
    assert!(responses[0].starts_with("200 OK\r\n"), "{text}");
    assert!(
        responses[0].ends_with("\r\n\r\n"),
        "no body after the head: {text}"
    );
    assert_eq!(length(responses[0]), length(responses[1]), "{text}");
    assert!(responses[1].ends_with("ok\n"), "{text}");
    let head = exchange(l.admin, b"HEAD /healthz HTTP/1.1\r\n\r\n");
    let get = exchange(l.admin, b"GET /healthz HTTP/1.1\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "no body after the head: {head}");
    assert_eq!(length(&head), length(&get), "{head}{get}");
    assert!(get.len() > head.len(), "{get}");

    // Three pipelined requests in one write: three responses, in order, on one connection.
    let mut s = TcpStream::connect(("127.0.0.1", l.http)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\n\r\nGET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let statuses: Vec<u16> = (0..3)
        .map(|_| read_response_buffered(&mut s, &mut buf).unwrap().0)
        .collect();
    assert_eq!(statuses, [200, 404, 200]);
    assert!(
        read_response_buffered(&mut s, &mut buf).is_none(),
        "closed after Connection: close"
    );
    assert!(l.metric_total("lattice_http_requests_total") >= 8);

    // Pipelined responses that together pass net.send_buffer_limit (here 128 KiB; the bundle is
    // about 90 KB): each is written before the next request is read, so all of them arrive.
    let l = Lattice::start(&["--net.send_buffer_limit", "131072"]);
    let mut s = TcpStream::connect(("127.0.0.1", l.http)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reqs = b"GET /lattice.js HTTP/1.1\r\n\r\n".repeat(4);
    reqs.extend_from_slice(b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n");
    s.write_all(&reqs).unwrap();
    let mut buf = Vec::new();
    for i in 0..4 {
        let (status, _, body) = read_response_buffered(&mut s, &mut buf).expect("a response");
        assert_eq!(status, 200, "response {i}");
        assert!(body.len() > 65536, "response {i}: {} bytes", body.len());
    }
    assert_eq!(read_response_buffered(&mut s, &mut buf).unwrap().0, 200);
    assert_eq!(
        l.metric_total("lattice_sessions_closed_send_overflow_total"),
        0
    );
}

#[test]
fn bad_http_input_gets_its_status_and_the_server_goes_on() {
    let l = Lattice::start(&["--http.head_timeout_ms", "300", "--net.max_frame", "4096"]);
    let big_head = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
    let too_many: String = (0..40).map(|i| format!("X-{i}: 1\r\n")).collect();
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (b"GARBAGE\r\n\r\n".to_vec(), 400),
        (big_head.into_bytes(), 431),
        (
            format!("GET / HTTP/1.1\r\n{too_many}\r\n").into_bytes(),
            431,
        ),
        (
            b"POST /rpc/Ping HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            411,
        ),
        (
            b"POST /rpc/Ping HTTP/1.1\r\nContent-Length: 5000\r\n\r\n".to_vec(),
            413,
        ),
        (
            b"POST /rpc/Ping HTTP/1.1\r\nContent-Length: x\r\n\r\n".to_vec(),
            400,
        ),
        (b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec(), 408),
    ];
    for (req, status) in cases {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", l.http)).unwrap();
        // Far below the 60 s idle timeout: the connection must close after the answer itself.
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        s.write_all(&req).unwrap();
        let (got, head, _) = read_response(&mut s).expect("a response");
        assert_eq!(got, status, "{head}");
        assert!(head.contains("Connection: close"), "{head}");
        let mut rest = [0u8; 64];
        assert_eq!(
            s.read(&mut rest).map_err(|e| e.kind()),
            Ok(0),
            "after {status} the server closes the connection"
        );
    }
    assert_eq!(l.metric_total("lattice_http_bad_requests_total"), 7);
    // A client that goes on sending through the lingering close of its refusal is one bad
    // request, not two (a deadline during the linger counted it again).
    let mut s = std::net::TcpStream::connect(("127.0.0.1", l.http)).unwrap();
    s.write_all(b"BAD\r\n\r\n").unwrap();
    let until = std::time::Instant::now() + std::time::Duration::from_millis(2500);
    while std::time::Instant::now() < until && s.write_all(b"x").is_ok() {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    drop(s);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(l.metric_total("lattice_http_bad_requests_total"), 8);
    assert_eq!(
        http_exchange(l.http, b"GET /healthz HTTP/1.1\r\n\r\n").0,
        200
    );
}

#[test]
fn rpc_runs_the_frame_handlers_with_json_or_protobuf() {
    let l = Lattice::start(&[]);
    let json = |name: &str, body: &str| {
        http_exchange(
            l.http,
            format!(
                "POST /rpc/{name} HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
    };
    let (status, head, body) = json("Ping", r#"{"payload":"aGk="}"#);
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("X-Lattice-Message: Pong"), "{head}");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["payload"], "aGk=");

    let ping = pb::Ping {
        payload: b"bin".to_vec(),
    }
    .encode_to_vec();
    let mut req = format!(
        "POST /rpc/Ping HTTP/1.1\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
        ping.len()
    )
    .into_bytes();
    req.extend(&ping);
    let (status, head, body) = http_exchange(l.http, &req);
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("Content-Type: application/x-protobuf"));
    assert_eq!(pb::Pong::decode(&body[..]).unwrap().payload, b"bin");

    // An Error reply maps to its status, with the Error message as the body.
    let (status, head, body) = json("Say", r#"{"room":"lobby","text":"hi"}"#);
    assert_eq!(status, 409, "{head}");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["code"], error_code::NOT_MEMBER);
    assert!(head.contains("X-Lattice-Message: Error"));

    assert_eq!(json("NoSuchMessage", "{}").0, 404);
    assert_eq!(json("Relay", "{}").0, 403, "server-internal");
    assert_eq!(json("Hello", "{}").0, 400);
    assert_eq!(json("Resume", "{}").0, 400);
    assert_eq!(json("Pong", "{}").0, 403, "server-to-client");
    // Whatever its body: the direction is checked before the body is decoded.
    let (status, _, body) = json("Said", r#"{"room":"h","from":"zz"}"#);
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["message"], "not a request message");
    assert_eq!(json("Ping", r#"{"payload":5"#).0, 400);
    assert_eq!(json("Ping", r#"{"nofield":1}"#).0, 400);
    let (status, _, _) = http_exchange(
        l.http,
        b"POST /rpc/Ping HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(status, 415);
    // Two Content-Type fields are refused, as two Content-Length fields are (the first one won).
    let (status, _, body) = http_exchange(
        l.http,
        b"POST /rpc/Ping HTTP/1.1\r\nContent-Type: application/json\r\nContent-Type: application/x-protobuf\r\nContent-Length: 2\r\n\r\n{}",
    );
    assert_eq!(status, 400);
    assert_eq!(body, b"Content-Type given more than once\n");
    // Pipelined requests, each answered by a handler: every one gets its answer, in order.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", l.http)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut pipelined = Vec::new();
    for p in ["MQ==", "Mg==", "Mw=="] {
        let body = format!(r#"{{"payload":"{p}"}}"#);
        pipelined.extend_from_slice(
            format!(
                "POST /rpc/Ping HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    }
    s.write_all(&pipelined).unwrap();
    let mut buf = Vec::new();
    for p in ["MQ==", "Mg==", "Mw=="] {
        let (status, head, body) =
            read_response_buffered(&mut s, &mut buf).expect("an answer to each pipelined request");
        assert_eq!(status, 200, "{head}");
        assert_eq!(
            String::from_utf8_lossy(&body).trim_end(),
            format!(r#"{{"payload":"{p}"}}"#)
        );
    }
    // Content-Length is ASCII digits only.
    let (status, _, _) = http_exchange(
        l.http,
        b"POST /rpc/Ping HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: +2\r\n\r\n{}",
    );
    assert_eq!(status, 400, "a signed Content-Length");
}

#[test]
fn websocket_sessions_chat_with_tcp_sessions() {
    let l = Lattice::start(&[]);
    let mut ws = WsClient::connect(l.http);
    ws.send(
        7,
        &pb::Ping {
            payload: b"over ws".to_vec(),
        },
    );
    let f = ws.recv();
    assert_eq!(f.request_id, 7);
    assert_eq!(
        f.decode(),
        AnyMessage::Pong(pb::Pong {
            payload: b"over ws".to_vec()
        })
    );
    // A frame split over several WebSocket frames (fragmentation) and several writes.
    let frame = encode(
        8,
        &pb::Ping {
            payload: vec![b'x'; 3000],
        },
    );
    let mut tcp = l.connect();
    let room = pb::JoinRoom {
        room: "mixed".into(),
    };
    ws.send(9, &room);
    assert!(matches!(ws.recv().decode(), AnyMessage::Joined(_)));
    tcp.send(9, &room);
    assert!(matches!(tcp.recv().decode(), AnyMessage::Joined(_)));
    tcp.send(
        10,
        &pb::Say {
            room: "mixed".into(),
            text: "from tcp".into(),
        },
    );
    assert!(matches!(tcp.recv().decode(), AnyMessage::Said(_)));
    match ws.recv().decode() {
        AnyMessage::Said(s) => assert_eq!((s.text.as_str(), s.from), ("from tcp", tcp.session_id)),
        other => panic!("{other:?}"),
    }
    // Fragmented: first part binary non-final, the rest continuation frames.
    let (a, rest) = frame.split_at(100);
    let (b, c) = rest.split_at(2000);
    let mask = [1u8, 2, 3, 4];
    for (op, fin, part) in [(2u8, false, a), (0, false, b), (0, true, c)] {
        let mut v = vec![if fin { 0x80 } else { 0 } | op, 0x80 | 126];
        v.extend_from_slice(&(part.len() as u16).to_be_bytes());
        v.extend_from_slice(&mask);
        v.extend(part.iter().enumerate().map(|(i, x)| x ^ mask[i % 4]));
        ws.s.write_all(&v).unwrap();
    }
    let pong = ws.recv();
    assert_eq!(pong.request_id, 8);
    assert!(l.metric_total("lattice_ws_upgrades_total") >= 1);
    // The close handshake: our close is answered with the same code, then TCP closes.
    ws.send_frame(8, &1000u16.to_be_bytes());
    assert_eq!(ws.expect_close().0, Some(1000));
    assert!(ws.next().is_none());
}

#[test]
fn websocket_bad_input_closes_with_its_code() {
    let l = Lattice::start(&["--net.max_frame", "4096"]);
    type Send = Box<dyn Fn(&mut WsClient)>;
    let cases: Vec<(Send, u16)> = vec![
        (Box::new(|c| c.send_frame(1, b"text")), 1003),
        (Box::new(|c| c.send_frame(2, b"not a frame")), 1007),
        (Box::new(|c| c.send_frame(2, &vec![0; 5000])), 1009),
        (
            Box::new(|c| c.s.write_all(&[0x82, 0x02, 1, 2]).unwrap()),
            1002,
        ), // unmasked
        (Box::new(|c| c.send_frame(8, &[0x03])), 1002), // 1-byte close
    ];
    for (send, code) in cases {
        let mut c = WsClient::connect(l.http);
        send(&mut c);
        let (got, reason) = c.expect_close();
        assert_eq!(got, Some(code), "{reason}");
        assert!(c.next().is_none(), "TCP closes after the close frame");
    }
    // The server goes on.
    let mut c = WsClient::connect(l.http);
    c.send(1, &pb::Ping::default());
    assert_eq!(c.recv().request_id, 1);
    // A refused handshake (first frame not Hello) closes with 1008 after the Error frame.
    let mut c = WsClient::open(l.http, "/ws", "").unwrap();
    c.send(3, &pb::Ping::default());
    expect_error(&c.recv(), error_code::NOT_ALLOWED);
    assert_eq!(c.expect_close().0, Some(1008));
}

#[test]
fn websocket_handshake_refusals_pings_and_origins() {
    let l = Lattice::start(&[
        "--http.ws_origins",
        r#"["https://game.example"]"#,
        "--http.ws_ping_interval_ms",
        "100",
    ]);
    let e = WsClient::open(l.http, "/ws", "Origin: https://evil.example\r\n")
        .err()
        .unwrap();
    assert_eq!(e.0, 403);
    assert!(WsClient::open(l.http, "/ws", "Origin: https://game.example\r\n").is_ok());
    let (status, head, _) = http_exchange(l.http, b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 426);
    assert!(head.contains("Sec-WebSocket-Version: 13"), "{head}");
    // One Connection field that names both the upgrade and the close.
    assert_eq!(head.matches("Connection:").count(), 1, "{head}");
    assert!(head.contains("Connection: Upgrade, close"), "{head}");
    // Server pings on the interval while idle; the client's pongs keep it open.
    let mut c = WsClient::connect(l.http);
    c.s.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while c.pings < 2 {
        assert!(std::time::Instant::now() < deadline, "no pings");
        let mut tmp = [0u8; 64];
        match c.s.read(&mut tmp) {
            Ok(0) => panic!("closed"),
            Ok(n) => {
                // Pings only: [0x89, 0].
                for chunk in tmp[..n].chunks(2) {
                    assert_eq!(chunk, [0x89, 0]);
                    c.pings += 1;
                    c.send_frame(10, b"");
                }
            }
            Err(_) => {}
        }
    }
}

#[test]
fn echo_path_echoes_for_the_conformance_suite() {
    let l = Lattice::start(&["--http.ws_echo_path", "/echo"]);
    let mut c = WsClient::open(l.http, "/echo", "").unwrap();
    c.send_frame(1, "héllo".as_bytes());
    assert_eq!(c.next(), Some(WsMsg::Text("héllo".into())));
    c.send_frame(2, &[0, 1, 2]);
    assert_eq!(c.next(), Some(WsMsg::Binary(vec![0, 1, 2])));
    c.send_frame(1, &[0xff]);
    assert_eq!(c.expect_close().0, Some(1007));
}

#[test]
fn session_types_decide_internal_opcodes() {
    let internal = free_port();
    let extra =
        format!(r#"[{{ addr = "127.0.0.1:{internal}", stack = "binary", session = "internal" }}]"#);
    let l = Lattice::start(&["--listeners.extra", &extra]);
    let relay = pb::Relay {
        session_id: 1,
        opcode: 4,
        body: vec![],
    };
    // A client session is refused server-internal opcodes.
    let mut c = l.connect();
    c.send(5, &relay);
    expect_error(&c.recv(), error_code::NOT_ALLOWED);
    assert_eq!(l.metric_total("lattice_rejected_internal_total"), 1);
    // An internal session is not: the gate lets it through to the service host, which has no
    // handler for Relay yet ("not a request message").
    let mut i = Client::connect(internal);
    i.send(6, &relay);
    let f = i.recv();
    assert_eq!(f.request_id, 6);
    let e = expect_error(&f, error_code::NOT_ALLOWED);
    assert_eq!(e.message, "not a request message");
    assert_eq!(l.metric_total("lattice_rejected_internal_total"), 1);
    let m = l.metrics();
    assert!(
        m.contains("lattice_listener_accepted_total{listener=\"extra0\""),
        "{m}"
    );
}

/// With the open-files limit low, the listener runs out of descriptors: accept fails (EMFILE),
/// existing sessions keep being served, the failures are counted, and accepting resumes when
/// sessions close.
#[test]
fn accept_survives_running_out_of_descriptors() {
    let l = Lattice::start_in(Some(96), &["--runtime.shards", "1"]);
    let mut clients = Vec::new();
    // Fill the table until a connection's Hello is not answered: the server could not accept it.
    let stuck = loop {
        assert!(clients.len() < 200, "never ran out of descriptors");
        let mut c = Client::connect_raw(l.port);
        c.s.set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        c.send(
            1,
            &pb::Hello {
                client_version: lattice_proto::version::PROTOCOL.to_string(),
                resume: false,
            },
        );
        let mut b = [0u8; 1];
        match c.s.peek(&mut b) {
            Ok(n) if n > 0 => {
                c.recv();
                c.s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                clients.push(c);
            }
            _ => break c,
        }
    };
    l.wait_log("accept failed");
    // Existing sessions are served.
    for c in clients.iter_mut().take(5) {
        c.send(2, &pb::Ping::default());
        assert_eq!(c.recv().request_id, 2);
    }
    // Free descriptors: the waiting connection is accepted and answered.
    clients.truncate(clients.len() - 10);
    let mut stuck = stuck;
    stuck
        .s
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert!(matches!(stuck.recv().decode(), AnyMessage::Welcome(_)));
    assert!(l.metric_total("lattice_listener_accept_errors_resources_total") > 0);
}

/// A WebSocket that never says `Hello` is closed `net.hello_timeout_ms` after its upgrade however
/// it answers the server's pings; so is a TCP connection that trickles a header.
#[test]
fn a_connection_without_hello_is_closed_at_the_hello_deadline() {
    let l = Lattice::start(&[
        "--net.hello_timeout_ms",
        "600",
        "--http.ws_ping_interval_ms",
        "100",
    ]);
    let mut c = WsClient::open(l.http, "/ws", "").unwrap();
    let (code, reason) = c.expect_close();
    assert_eq!(code, Some(1002), "{reason}");
    assert!(c.pings >= 2, "pongs answered pings meanwhile: {}", c.pings);
    let mut s = TcpStream::connect(("127.0.0.1", l.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = std::time::Instant::now();
    // A frame header, a byte every 150 ms: more often than the idle timeout, never a frame.
    for b in [16u8, 0, 0, 0, 4, 0, 0, 0] {
        std::thread::sleep(Duration::from_millis(150));
        if s.write_all(&[b]).is_err() {
            break;
        }
    }
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty(), "closed without a frame: {rest:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    l.wait_log("no Hello within 600 ms");
    drop(s);
    l.wait_metric_total("lattice_sessions_closed_protocol_total", 2);
}

/// A WebSocket upgrade must be the first request of its connection: what the connection did as
/// HTTP (an `/rpc` login, a reply that came after its `504`) must not end up in the WebSocket
/// session.
#[test]
fn an_upgrade_after_another_request_on_the_connection_is_refused() {
    let l = Lattice::start(&[]);
    let mut s = TcpStream::connect(("127.0.0.1", l.http)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
          Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(!text.contains(" 101 "), "{text}");
    assert!(text.contains("HTTP/1.1 400"), "{text}");
    assert!(
        text.contains("a WebSocket upgrade must be the first request of its connection"),
        "{text}"
    );
    // The connection ends after the 400, and the 400 says so.
    let refusal = &text[text.find("HTTP/1.1 400").unwrap()..];
    assert!(refusal.contains("\r\nConnection: close\r\n"), "{refusal}");
    // The first request of a connection still upgrades.
    let mut c = WsClient::connect(l.http);
    c.send(1, &pb::Ping::default());
    assert_eq!(c.recv().request_id, 1);
}

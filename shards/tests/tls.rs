//! The binary stack over TLS, against a rustls client: TLS 1.3 and 1.2, Hello and Ping round
//! trips, many key updates both ways; bad input (garbage, a record cut short, a stalled
//! handshake, an oversize record) closing only the offender with its reason logged and counted;
//! certificate reload (SIGHUP, admin route) keeping live sessions; bad certificate files as config
//! errors.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::tls::*;
use common::*;
use lattice_proto::{pb, AnyMessage};

fn metric(l: &Lattice, name: &str) -> u64 {
    l.metric_total(name)
}

/// A metric without labels.
fn metric_single(l: &Lattice, name: &str) -> u64 {
    let text = l.metrics();
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
}

/// Waits (bounded) until `f` holds, pinging nothing; panics with `what` and the logs.
fn wait_until(l: &Lattice, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(
            Instant::now() < deadline,
            "{what}: never happened\n{}",
            l.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn tls13_and_tls12_round_trips_with_many_key_updates_both_ways() {
    let dir = TempDir::new("versions");
    let (cert, key) = gen_cert(&dir.0);
    let mut t = TlsLattice::start(&cert, &key, &["--tls.key_update_interval_s", "1"]);
    let l = &t.l;

    // TLS 1.3: the client rotates its keys every 5 pings; the server rotates on its interval.
    let mut c = TlsClient::connect(t.tls_port, client_config(&cert, Versions::Tls13));
    let mut rid = 10;
    for _ in 0..60 {
        c.s.conn.refresh_traffic_keys().unwrap();
        for _ in 0..5 {
            c.ping(rid);
            rid += 1;
        }
    }
    assert!(metric(l, "lattice_tls_peer_key_update_requests_total") >= 60);
    // Server-side updates arrive on idle time too; keep pinging until a few went through.
    let before = metric(l, "lattice_tls_key_updates_total");
    wait_until(l, "three interval key updates", || {
        c.ping(rid);
        rid += 1;
        metric(l, "lattice_tls_key_updates_total") >= before + 3
    });
    c.ping(rid);
    assert_eq!(metric(l, "lattice_tls_handshakes_tls13_total"), 1);
    // The ticket from that session resumes a second one (a ticket from a session that ended
    // works the same: tickets are stateless).
    let cfg13 = client_config(&cert, Versions::Tls13);
    TlsClient::connect(t.tls_port, cfg13.clone()).ping(1);
    let mut again = TlsClient::connect(t.tls_port, cfg13);
    assert_eq!(
        again.s.conn.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed)
    );
    again.ping(2);
    drop(again);

    // TLS 1.2: no key updates, the same frames.
    let mut c12 = TlsClient::connect(t.tls_port, client_config(&cert, Versions::Tls12));
    assert_eq!(
        c12.s.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    for i in 0..300 {
        c12.ping(1000 + i);
    }
    assert_eq!(metric(l, "lattice_tls_handshakes_tls12_total"), 1);
    assert_ne!(c12.session_id, c.session_id);
    wait_until(l, "the two closed sessions counted", || {
        metric(l, "lattice_tls_sessions_open") == 2
    });
    assert_eq!(metric(l, "lattice_tls_errors_total"), 0);
    assert_eq!(metric(l, "lattice_tls_handshake_failures_total"), 0);

    // SIGTERM: both sessions end with the server's close_notify, and the process exits 0.
    assert_eq!(t.l.terminate(), 0, "{}", t.l.logs());
    for cl in [&mut c, &mut c12] {
        assert!(cl.try_recv().is_none());
        let st = cl.s.conn.process_new_packets().unwrap();
        assert!(st.peer_has_closed(), "no close_notify from the server");
    }
}

use lattice_wire::tls::rustls;

/// Every bad input closes its own session with a clear reason, logged and counted, while a TLS
/// session and a plain TCP session opened before keep working.
#[test]
fn bad_tls_input_closes_only_the_offender_with_its_reason() {
    let dir = TempDir::new("bad");
    let (cert, key) = gen_cert(&dir.0);
    let t = TlsLattice::start(&cert, &key, &["--tls.handshake_timeout_ms", "300"]);
    let l = &t.l;
    let cfg = client_config(&cert, Versions::Tls13);
    let mut good_tls = TlsClient::connect(t.tls_port, cfg.clone());
    let mut good_tcp = l.connect();
    let mut rid = 100;
    let mut check_good = |rid: &mut u32| {
        good_tls.ping(*rid);
        good_tcp.send(
            *rid,
            &lattice_proto::pb::Ping {
                payload: vec![1, 2, 3],
            },
        );
        assert_eq!(good_tcp.recv().request_id, *rid);
        *rid += 1;
    };
    let raw_tls = || {
        let s = TcpStream::connect(("127.0.0.1", t.tls_port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    };
    let client_hello = || {
        let mut c = rustls::ClientConnection::new(
            cfg.clone(),
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        let mut hello = Vec::new();
        c.write_tls(&mut hello).unwrap();
        hello
    };
    let closed = |mut s: TcpStream| {
        use std::io::Read;
        let mut b = [0u8; 4096];
        loop {
            match s.read(&mut b) {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // an alert
            }
        }
    };

    // Plain text instead of a ClientHello.
    let mut s = raw_tls();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    closed(s);
    l.wait_log("not a TLS handshake (first bytes [47, 45, 54])");
    check_good(&mut rid);
    assert_eq!(metric(l, "lattice_tls_handshake_failures_total"), 1);

    // A ClientHello record cut short, then the peer leaves.
    let hello = client_hello();
    let mut s = raw_tls();
    s.write_all(&hello[..hello.len() / 2]).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    closed(s);
    l.wait_log(&format!(
        "truncated record at close ({} of {} bytes)",
        hello.len() / 2,
        hello.len()
    ));
    check_good(&mut rid);
    assert_eq!(metric(l, "lattice_tls_handshake_failures_total"), 2);

    // A client that stalls in the middle of the handshake.
    let mut s = raw_tls();
    s.write_all(&hello[..10]).unwrap();
    closed(s);
    l.wait_log("tls: handshake not complete after 300 ms");
    check_good(&mut rid);
    assert_eq!(metric(l, "lattice_tls_handshake_timeouts_total"), 1);

    // An oversize record after a complete handshake and Hello.
    let mut c = TlsClient::connect(t.tls_port, cfg.clone());
    c.s.sock.write_all(&[23, 3, 3, 0xff, 0xff]).unwrap();
    assert!(c.try_recv().is_none(), "the server closes the session");
    l.wait_log("record of 65535 bytes exceeds the TLS limit of 18432");
    check_good(&mut rid);
    assert_eq!(metric(l, "lattice_tls_errors_total"), 1);

    // A record that fails authentication (a flipped bit) gets rustls' reason.
    let mut c = TlsClient::connect(t.tls_port, cfg.clone());
    let mut rec = Vec::new();
    c.s.conn
        .writer()
        .write_all(&encode(9, &lattice_proto::pb::Ping { payload: vec![] }))
        .unwrap();
    c.s.conn.write_tls(&mut rec).unwrap();
    let last = rec.len() - 1;
    rec[last] ^= 0x80;
    c.s.sock.write_all(&rec).unwrap();
    assert!(c.try_recv().is_none());
    l.wait_log("tls: cannot decrypt peer's message");
    check_good(&mut rid);
    assert_eq!(metric(l, "lattice_tls_errors_total"), 2);

    assert_eq!(metric(l, "lattice_sessions_closed_protocol_total"), 5);
}

/// SIGHUP and `POST /admin/tls/reload` swap the certificate for new handshakes; a session opened
/// before goes on; a bad file is refused and the old certificate stays.
#[test]
fn certificate_reload_keeps_live_sessions() {
    let a = TempDir::new("cert-a");
    let b = TempDir::new("cert-b");
    let live = TempDir::new("cert-live");
    let (cert_a, key_a) = gen_cert(&a.0);
    let (cert_b, key_b) = gen_cert(&b.0);
    let (cert, key) = (live.0.join("cert.pem"), live.0.join("key.pem"));
    std::fs::copy(&cert_a, &cert).unwrap();
    std::fs::copy(&key_a, &key).unwrap();
    let t = TlsLattice::start(&cert, &key, &[]);
    let l = &t.l;
    let trust_a = client_config(&cert_a, Versions::Tls13);
    let trust_b = client_config(&cert_b, Versions::Tls13);
    let mut old = TlsClient::connect(t.tls_port, trust_a.clone());
    old.ping(1);
    assert!(TlsClient::handshake(t.tls_port, client_config(&cert_b, Versions::Tls13)).is_err());

    // SIGHUP with B in place.
    std::fs::copy(&cert_b, &cert).unwrap();
    std::fs::copy(&key_b, &key).unwrap();
    unsafe_free_kill(l.child.id(), "HUP");
    l.wait_log("tls: certificate reloaded");
    old.ping(2);
    TlsClient::connect(t.tls_port, trust_b.clone()).ping(3);
    // A fresh client (no ticket to resume with) checks the certificate: A is no longer served.
    let e = TlsClient::handshake(t.tls_port, client_config(&cert_a, Versions::Tls13))
        .err()
        .expect("the old certificate is no longer served");
    assert!(e.contains("certificate"), "{e}");

    // A bad key file: refused, B still served, counted.
    std::fs::write(&key, "not a key").unwrap();
    let (status, body) = admin_post(l, "/admin/tls/reload");
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("tls.key"), "{body}");
    TlsClient::connect(t.tls_port, trust_b.clone()).ping(4);
    assert_eq!(
        metric_single(l, "lattice_tls_cert_reload_failures_total"),
        1
    );

    // Back to A through the admin route.
    std::fs::copy(&cert_a, &cert).unwrap();
    std::fs::copy(&key_a, &key).unwrap();
    let (status, body) = admin_post(l, "/admin/tls/reload");
    assert_eq!(
        (status, body.trim()),
        (200, "{\"generation\":3,\"certificates\":1}")
    );
    TlsClient::connect(t.tls_port, trust_a).ping(5);
    old.ping(6);
    assert_eq!(metric_single(l, "lattice_tls_cert_reloads_total"), 2);
    assert_eq!(metric_single(l, "lattice_tls_cert_generation"), 3);
}

/// `POST path` on the admin listener with the bearer token (every `/admin/` route needs it).
fn admin_post(l: &Lattice, path: &str) -> (u16, String) {
    l.admin_raw("POST", path, Some(&l.token()), "")
}

#[test]
fn bad_certificate_files_are_config_errors_naming_the_key() {
    let a = TempDir::new("cfg-a");
    let b = TempDir::new("cfg-b");
    let (cert_a, _key_a) = gen_cert(&a.0);
    let (_cert_b, key_b) = gen_cert(&b.0);
    let garbage = a.0.join("garbage.pem");
    std::fs::write(&garbage, "hello").unwrap();
    let (ca, kb, g) = (
        cert_a.display().to_string(),
        key_b.display().to_string(),
        garbage.display().to_string(),
    );
    for (args, key, words) in [
        (
            vec!["--tls.cert", "/nonexistent/c.pem", "--tls.key", kb.as_str()],
            "`tls.cert`",
            "cannot read",
        ),
        (
            vec!["--tls.cert", ca.as_str(), "--tls.key", "/nonexistent/k.pem"],
            "`tls.key`",
            "cannot read",
        ),
        (
            vec!["--tls.cert", g.as_str(), "--tls.key", kb.as_str()],
            "`tls.cert`",
            "no PEM",
        ),
        (
            vec!["--tls.cert", ca.as_str(), "--tls.key", g.as_str()],
            "`tls.key`",
            "no PEM",
        ),
        // A key that is not the certificate's.
        (
            vec!["--tls.cert", ca.as_str(), "--tls.key", kb.as_str()],
            "`tls.key`",
            "certificate and key",
        ),
        (
            vec!["--tls.cert", ca.as_str()],
            "`tls.key`",
            "give the private key",
        ),
    ] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lattice"));
        cmd.arg("run")
            .args(["--net.listen", "127.0.0.1:0", "--admin.listen", ""])
            .args(["--tls.listen", "127.0.0.1:0"])
            .args(&args)
            .env("LATTICE_STORAGE__DATA_DIR", a.0.join("data"));
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains(key) && err.contains(words), "{args:?}: {err}");
    }
}

#[test]
fn reload_without_tls_is_refused() {
    let l = Lattice::start(&[]);
    let (status, body) = admin_post(&l, "/admin/tls/reload");
    assert_eq!(status, 409, "{body}");
    unsafe_free_kill(l.child.id(), "HUP");
    l.wait_log("tls: nothing to reload");
    l.connect();
}

/// Reads one HTTP response head (up to the blank line) from `s`, byte by byte, so frames after it
/// stay unread.
fn read_head(s: &mut impl std::io::Read) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "closed inside a response head");
        head.push(b[0]);
    }
    String::from_utf8(head).unwrap()
}

#[test]
fn https_and_wss_serve_the_http_stack_over_tls() {
    use std::io::Read;
    let d = TempDir::new("cert-https");
    let (cert, key) = gen_cert(&d.0);
    let t = TlsLattice::start(&cert, &key, &[]);
    let trust = client_config(&cert, Versions::Tls13);

    // HTTPS: a route of the HTTP stack, answered inside TLS.
    let mut c = TlsClient::handshake(t.https_port, trust.clone()).expect("TLS handshake");
    c.s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let head = read_head(&mut c.s);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut body = [0u8; 3];
    c.s.read_exact(&mut body).unwrap();
    assert_eq!(&body, b"ok\n");

    // WSS: upgrade inside TLS, then Hello → Welcome and Ping → Pong as binary messages.
    let mut c = TlsClient::handshake(t.https_port, trust.clone()).expect("TLS handshake");
    c.s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .unwrap();
    let head = read_head(&mut c.s);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
        "{head}"
    );
    let ws_send = |s: &mut dyn Write, payload: &[u8]| {
        assert!(payload.len() < 126);
        let mask = [0x12u8, 0x34, 0x56, 0x78];
        let mut v = vec![0x82, 0x80 | payload.len() as u8];
        v.extend_from_slice(&mask);
        v.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        s.write_all(&v).unwrap();
        s.flush().unwrap();
    };
    let ws_recv = |s: &mut dyn std::io::Read| -> Vec<u8> {
        let mut h = [0u8; 2];
        s.read_exact(&mut h).unwrap();
        assert_eq!(h[0], 0x82, "a final binary frame from the server");
        let len = match h[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                s.read_exact(&mut l).unwrap();
                u16::from_be_bytes(l) as usize
            }
            n => n as usize,
        };
        let mut p = vec![0u8; len];
        s.read_exact(&mut p).unwrap();
        p
    };
    ws_send(
        &mut c.s,
        &encode(
            1,
            &pb::Hello {
                client_version: lattice_proto::version::PROTOCOL.to_string(),
                resume: false,
            },
        ),
    );
    let mut buf = ws_recv(&mut c.s);
    match take_frame(&mut buf).expect("a frame").decode() {
        AnyMessage::Welcome(w) => assert!(w.session_id != 0),
        other => panic!("expected Welcome, got {other:?}"),
    }
    ws_send(
        &mut c.s,
        &encode(
            2,
            &pb::Ping {
                payload: b"over wss".to_vec(),
            },
        ),
    );
    let mut buf = ws_recv(&mut c.s);
    let f = take_frame(&mut buf).expect("a frame");
    assert_eq!(f.request_id, 2);
    match f.decode() {
        AnyMessage::Pong(p) => assert_eq!(p.payload, b"over wss"),
        other => panic!("expected Pong, got {other:?}"),
    }
}

//! The TLS layer inside the session, driven in memory against a rustls client with a fake clock:
//! handshakes on both versions, frames both ways, interval key updates flushed with no application
//! data, the peer's key updates answered, and every bad-input path with its close reason.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use super::*;
use crate::frame::encode;
use crate::{CloseReason, MonoTime, SendError, Session, SessionId, SessionLimits};

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000 * MS;

struct Pki {
    server: Arc<rustls::ServerConfig>,
    cert: CertificateDer<'static>,
}

fn pki() -> Pki {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_pem = ck.cert.pem();
    let key_pem = ck.signing_key.serialize_pem();
    let opts = ServerOptions {
        alpn: vec![],
        ticketer: None,
    };
    let server = Arc::new(server_config(cert_pem.as_bytes(), key_pem.as_bytes(), &opts).unwrap());
    Pki {
        server,
        cert: ck.cert.der().clone(),
    }
}

fn client(pki: &Pki, version: TlsVersion) -> ClientConnection {
    let mut roots = RootCertStore::empty();
    roots.add(pki.cert.clone()).unwrap();
    let v: &[&rustls::SupportedProtocolVersion] = match version {
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
        TlsVersion::Tls12 => &[&rustls::version::TLS12],
    };
    let cfg =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(v)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    ClientConnection::new(Arc::new(cfg), ServerName::try_from("localhost").unwrap()).unwrap()
}

fn limits() -> SessionLimits {
    SessionLimits::basic(1 << 16, 1 << 16, Some(Duration::from_secs(600)))
}

fn settings() -> TlsSettings {
    TlsSettings {
        key_update_interval: Some(Duration::from_secs(1)),
        handshake_timeout: Some(Duration::from_secs(5)),
    }
}

fn session(pki: &Pki, s: TlsSettings) -> Session {
    let now = MonoTime(0);
    Session::new(SessionId::new(0, 1, 0), limits(), now)
        .with_tls(TlsLayer::new(pki.server.clone(), s, now).unwrap())
}

/// A client and a server session joined in memory.
struct Pair {
    c: ClientConnection,
    s: Session,
    now: u64,
    /// Frames the server decoded: (opcode, request id, body).
    frames: Vec<(u16, u32, Vec<u8>)>,
    /// Plaintext the client received.
    got: Vec<u8>,
    plain: Vec<u8>,
}

impl Pair {
    fn new(version: TlsVersion, s: TlsSettings) -> Pair {
        let pki = pki();
        let mut p = Pair {
            c: client(&pki, version),
            s: session(&pki, s),
            now: 0,
            frames: Vec::new(),
            got: Vec::new(),
            plain: Vec::new(),
        };
        p.pump();
        assert!(!p.c.is_handshaking(), "handshake did not complete");
        assert!(!p.s.tls().unwrap().is_handshaking());
        p
    }

    /// Client ciphertext to the server, split into `chunk`-byte reads. Returns the read result.
    fn client_to_server(&mut self, chunk: usize) -> Result<TlsRead, CloseReason> {
        let mut wire = Vec::new();
        while self.c.wants_write() {
            self.c.write_tls(&mut wire).unwrap();
        }
        self.deliver(&wire, chunk)
    }

    fn deliver(&mut self, wire: &[u8], chunk: usize) -> Result<TlsRead, CloseReason> {
        let mut last = TlsRead::default();
        for piece in wire.chunks(chunk.max(1)) {
            self.plain.clear();
            last = self
                .s
                .receive_tls(MonoTime(self.now), piece, &mut self.plain)?;
            let mut input = &self.plain[..];
            while let Some(item) =
                self.s
                    .receive(self.s.binding(), MonoTime(self.now), &mut input)?
            {
                let crate::Input::Frame(f) = item else {
                    panic!("a frame: {item:?}");
                };
                let f = f.frame();
                self.frames
                    .push((f.header.opcode, f.header.request_id, f.body.to_vec()));
            }
        }
        Ok(last)
    }

    /// Server ciphertext to the client. Returns how many bytes went.
    fn server_to_client(&mut self) -> usize {
        let wire = self.s.transmit(self.s.binding()).to_vec();
        self.s.transmitted(self.s.binding(), wire.len());
        let mut rd = &wire[..];
        while !rd.is_empty() {
            self.c.read_tls(&mut rd).unwrap();
            self.c
                .process_new_packets()
                .expect("client accepts what the server sent");
        }
        let mut buf = [0u8; 4096];
        loop {
            match self.c.reader().read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self.got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("client read: {e}"),
            }
        }
        wire.len()
    }

    fn pump(&mut self) {
        for _ in 0..10 {
            let a = self.c.wants_write();
            self.client_to_server(1 << 20).unwrap();
            let b = self.server_to_client();
            if !a && b == 0 {
                return;
            }
        }
    }

    /// The client sends a Ping-like frame; the server echoes it; the client gets it back.
    fn round_trip(&mut self, rid: u32, chunk: usize) {
        let frame = encode(4, 0, rid, format!("ping {rid}").as_bytes());
        self.c.writer().write_all(&frame).unwrap();
        self.client_to_server(chunk).unwrap();
        let (op, id, body) = self
            .frames
            .last()
            .cloned()
            .expect("server decoded the frame");
        assert_eq!((op, id), (4, rid));
        self.s.send(&encode(5, 0, id, &body)).unwrap();
        self.got.clear();
        self.server_to_client();
        assert_eq!(
            self.got,
            encode(5, 0, rid, format!("ping {rid}").as_bytes())
        );
    }
}

#[test]
fn handshake_and_frames_both_ways_on_tls13_and_tls12() {
    for v in [TlsVersion::Tls13, TlsVersion::Tls12] {
        let mut p = Pair::new(v, settings());
        let ev = p.s.take_tls_events();
        assert_eq!(ev.handshake_done, Some(v));
        assert_eq!(p.s.tls().unwrap().version(), Some(v));
        assert_eq!(p.s.tls().unwrap().server_name(), Some("localhost"));
        for (i, chunk) in [1usize, 3, 7, 64, 1 << 20].into_iter().enumerate() {
            p.round_trip(i as u32 + 1, chunk);
        }
        assert!(p.s.take_tls_events().is_empty());
    }
}

#[test]
fn interval_key_updates_go_out_on_an_idle_session_and_the_client_follows() {
    let mut p = Pair::new(TlsVersion::Tls13, settings());
    let start = p.now;
    assert_eq!(
        p.s.poll_timeout(),
        Some(MonoTime(start + SEC)),
        "the key update is the next deadline, before the idle one"
    );
    for i in 0..200u32 {
        let due = p.s.poll_timeout().unwrap();
        p.now = due.0;
        p.s.handle_timeout(due);
        assert!(!p.s.is_closing());
        assert!(
            p.s.unsent() > 0,
            "a KeyUpdate record is queued with no application data"
        );
        assert_eq!(p.s.take_tls_events().key_updates, 1);
        assert_eq!(p.s.poll_timeout(), Some(MonoTime(due.0 + SEC)));
        p.server_to_client();
        // The client answers the request with its own KeyUpdate; the server takes it.
        p.client_to_server(1 << 20).unwrap();
        p.round_trip(i, 5);
    }
}

/// A client that sends nothing is asked for one key update, not one per interval: rustls (the
/// server's and many clients') ends the connection past 32 `KeyUpdate`s in a row without
/// application data between them, and a silent client's answers were exactly that (an idle
/// session was closed "TooManyKeyUpdateRequests" after 33 intervals).
#[test]
fn a_silent_client_is_asked_for_one_key_update_until_it_sends_data() {
    let mut p = Pair::new(TlsVersion::Tls13, settings());
    p.s.take_tls_events();
    for _ in 0..40 {
        let due = p.s.poll_timeout().unwrap();
        p.now = due.0;
        p.s.handle_timeout(due);
        assert!(!p.s.is_closing());
        p.server_to_client();
        p.client_to_server(1 << 20).unwrap();
        assert!(!p.s.is_closing());
    }
    let ev = p.s.take_tls_events();
    assert_eq!((ev.key_updates, ev.key_updates_skipped), (1, 39));
    // Data from the client: the next interval sends one again.
    p.round_trip(1, 5);
    let due = p.s.poll_timeout().unwrap();
    p.s.handle_timeout(due);
    assert_eq!(p.s.take_tls_events().key_updates, 1);
}

#[test]
fn a_key_update_still_unsent_is_not_stacked() {
    let mut p = Pair::new(TlsVersion::Tls13, settings());
    p.s.take_tls_events();
    let due = p.s.poll_timeout().unwrap();
    p.s.handle_timeout(due);
    let queued = p.s.unsent();
    let next = p.s.poll_timeout().unwrap();
    p.s.handle_timeout(next);
    let ev = p.s.take_tls_events();
    assert_eq!((ev.key_updates, ev.key_updates_skipped), (1, 1));
    assert_eq!(p.s.unsent(), queued, "nothing more was queued");
    p.server_to_client();
    p.client_to_server(1 << 20).unwrap();
    p.round_trip(1, 5);
    let next = p.s.poll_timeout().unwrap();
    p.s.handle_timeout(next);
    assert_eq!(
        p.s.take_tls_events().key_updates,
        1,
        "sent again once written"
    );
}

#[test]
fn the_peers_key_update_request_is_answered_at_once() {
    let mut p = Pair::new(TlsVersion::Tls13, settings());
    p.s.take_tls_events();
    for i in 0..50 {
        p.c.refresh_traffic_keys().unwrap();
        p.client_to_server(3).unwrap();
        assert!(
            p.s.unsent() > 0,
            "the answer is queued without any application write"
        );
        assert_eq!(p.s.take_tls_events().peer_key_update_requests, 1);
        p.server_to_client();
        p.round_trip(i, 1 << 20);
    }
}

#[test]
fn tls12_has_no_key_update_deadline() {
    let mut p = Pair::new(TlsVersion::Tls12, settings());
    assert_eq!(
        p.s.poll_timeout(),
        Some(MonoTime(p.now + 600 * SEC)),
        "only the idle deadline"
    );
    p.round_trip(1, 10);
}

#[test]
fn handshake_deadline_closes_a_stalled_handshake() {
    let pki = pki();
    let mut s = session(&pki, settings());
    let mut c = client(&pki, TlsVersion::Tls13);
    let mut hello = Vec::new();
    c.write_tls(&mut hello).unwrap();
    let mut plain = Vec::new();
    s.receive_tls(MonoTime(MS), &hello[..20], &mut plain)
        .unwrap();
    assert_eq!(s.poll_timeout(), Some(MonoTime(5 * SEC)));
    s.handle_timeout(MonoTime(5 * SEC - 1));
    assert!(!s.is_closing());
    s.handle_timeout(MonoTime(5 * SEC));
    let reason = s.close_reason().unwrap().to_string();
    assert!(
        reason.contains("tls: handshake not complete after 5000 ms"),
        "{reason}"
    );
    assert!(s.take_tls_events().handshake_timed_out);
}

#[test]
fn garbage_instead_of_a_client_hello_is_refused() {
    let pki = pki();
    let mut s = session(&pki, settings());
    let mut plain = Vec::new();
    let e = s
        .receive_tls(
            MonoTime(1),
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            &mut plain,
        )
        .unwrap_err();
    assert!(e.to_string().contains("not a TLS handshake"), "{e}");
    assert_eq!(s.close_reason(), Some(&e));
    assert!(s.take_tls_events().handshake_failed);
    assert!(plain.is_empty());

    // A handshake record whose body is not a ClientHello: rustls refuses it and says why.
    let mut s = session(&pki, settings());
    let e = s
        .receive_tls(MonoTime(1), &[22, 3, 1, 0, 4, 0xff, 0, 0, 0], &mut plain)
        .unwrap_err();
    assert!(e.to_string().starts_with("protocol error: tls: "), "{e}");
    assert!(s.take_tls_events().handshake_failed);
    assert!(
        !s.transmit(s.binding()).is_empty(),
        "rustls' alert is queued for the peer"
    );
}

#[test]
fn oversize_and_corrupt_records_after_the_handshake_close_with_their_reason() {
    let mut p = Pair::new(TlsVersion::Tls13, settings());
    p.s.take_tls_events();
    let e = p.deliver(&[23, 3, 3, 0xff, 0xff, 0], 1 << 20).unwrap_err();
    assert!(
        e.to_string().contains("record of 65535 bytes exceeds"),
        "{e}"
    );
    assert_eq!(p.s.take_tls_events().errors, 1);

    let mut p = Pair::new(TlsVersion::Tls13, settings());
    p.s.take_tls_events();
    p.c.writer().write_all(&encode(4, 0, 1, b"x")).unwrap();
    let mut wire = Vec::new();
    p.c.write_tls(&mut wire).unwrap();
    let last = wire.len() - 1;
    wire[last] ^= 1; // the AEAD tag no longer matches
    let e = p.deliver(&wire, 1 << 20).unwrap_err();
    assert!(e.to_string().starts_with("protocol error: tls: "), "{e}");
    assert!(
        p.frames.is_empty(),
        "nothing of a forged record is delivered"
    );
    assert_eq!(p.s.take_tls_events().errors, 1);
    assert!(
        !p.s.transmit(p.s.binding()).is_empty(),
        "the alert goes to the peer"
    );
}

#[test]
fn a_record_cut_short_at_close_is_reported() {
    let mut p = Pair::new(TlsVersion::Tls13, settings());
    p.c.writer().write_all(&encode(4, 0, 1, b"hello")).unwrap();
    let mut wire = Vec::new();
    p.c.write_tls(&mut wire).unwrap();
    p.deliver(&wire[..wire.len() - 3], 1 << 20).unwrap();
    let r = p.s.peer_closed_reason();
    assert!(r.to_string().contains("truncated record at close"), "{r}");
    // A clean close at a record boundary is a clean close.
    let mut p = Pair::new(TlsVersion::Tls13, settings());
    p.round_trip(1, 100);
    assert_eq!(p.s.peer_closed_reason(), CloseReason::PeerClosed);
}

#[test]
fn close_notify_both_ways_and_frames_before_it_arrive() {
    let mut p = Pair::new(TlsVersion::Tls13, settings());
    p.c.writer().write_all(&encode(4, 0, 9, b"last")).unwrap();
    p.c.send_close_notify();
    let r = p.client_to_server(1 << 20).unwrap();
    assert!(r.peer_closed);
    assert_eq!(
        p.frames.last().map(|f| f.1),
        Some(9),
        "the frame before close_notify"
    );

    let mut p = Pair::new(TlsVersion::Tls13, settings());
    p.s.send(&encode(3, 0, 4, b"bye")).unwrap();
    p.s.close(CloseReason::App("test".into()));
    assert_eq!(p.s.send(b"more"), Err(SendError::Closing));
    p.server_to_client();
    assert_eq!(
        p.got,
        encode(3, 0, 4, b"bye"),
        "the queued frame, then close_notify"
    );
    let st = p.c.process_new_packets().unwrap();
    assert!(st.peer_has_closed());
}

#[test]
fn the_send_bound_counts_ciphertext_not_yet_written() {
    let pki = pki();
    let now = MonoTime(0);
    let mut s = Session::new(
        SessionId::new(0, 1, 0),
        SessionLimits {
            send_buffer_limit: 100,
            ..limits()
        },
        now,
    )
    .with_tls(TlsLayer::new(pki.server.clone(), settings(), now).unwrap());
    let mut c = client(&pki, TlsVersion::Tls13);
    let mut plain = Vec::new();
    for _ in 0..5 {
        let mut w = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut w).unwrap();
        }
        s.receive_tls(now, &w, &mut plain).unwrap();
        let out = s.transmit(s.binding()).to_vec();
        s.transmitted(s.binding(), out.len());
        let mut rd = &out[..];
        while !rd.is_empty() {
            c.read_tls(&mut rd).unwrap();
            c.process_new_packets().unwrap();
        }
    }
    assert!(!c.is_handshaking());
    s.send(&[7; 60]).unwrap();
    let sealed = s.transmit(s.binding()).len();
    assert!(sealed > 60, "sealed into a record with its overhead");
    assert_eq!(s.unsent(), sealed, "ciphertext waiting counts");
    assert_eq!(s.send(&[8; 50]), Err(SendError::Overflow));
}

#[test]
fn garbage_never_panics_and_the_session_stays_bounded() {
    // A deterministic little fuzz: arbitrary bytes after a valid start, split anywhere.
    let pki = pki();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..200 {
        let mut s = session(&pki, settings());
        let mut c = client(&pki, TlsVersion::Tls13);
        let mut wire = Vec::new();
        c.write_tls(&mut wire).unwrap();
        let cut = (next() as usize) % (wire.len() + 1);
        wire.truncate(cut);
        for _ in 0..(next() % 64) {
            wire.push(next() as u8);
        }
        let mut plain = Vec::new();
        let mut rest = &wire[..];
        while !rest.is_empty() {
            let n = 1 + (next() as usize) % rest.len();
            let _ = s.receive_tls(MonoTime(1), &rest[..n], &mut plain);
            rest = &rest[n..];
        }
        assert!(
            plain.is_empty(),
            "no plaintext before a completed handshake"
        );
        let _ = s.peer_closed_reason();
        assert!(s.is_closing());
    }
}

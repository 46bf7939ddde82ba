//! Fuzzes the session with TLS on (`lattice_wire::tls::TlsLayer` under the frame codec), driven
//! the way the runtime drives it, against arbitrary bytes as TLS records:
//!
//! - mode 0: arbitrary bytes instead of a ClientHello, split into arbitrary reads, with timeouts
//!   and a peer close interleaved;
//! - mode 1: a real handshake with an in-memory rustls client first, then an arbitrary mix of the
//!   client's encrypted frames (split anywhere), raw arbitrary records (a forged header and body,
//!   or bytes spliced into a real record), client key updates, timer firings (interval key
//!   updates), server frames to the client, and a peer close.
//!
//! Checked besides "no panic":
//! - no plaintext comes out before the handshake completes;
//! - while only the client's real records are delivered, the frames the session decodes are
//!   exactly those a one-shot decode of the client's plaintext gives, and everything the server
//!   sends (frames, key updates) is accepted by the client;
//! - a refused input closes the session with a `tls:` protocol reason, and nothing is decoded
//!   after it;
//! - the outbound queue stays within the send bound plus TLS overhead.
#![no_main]

use std::io::Write;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use lattice_wire::frame::encode;
use lattice_wire::tls::rustls::pki_types::ServerName;
use lattice_wire::tls::rustls::{self, ClientConfig, ClientConnection, RootCertStore};
use lattice_wire::tls::{server_config, ServerOptions, TlsLayer, TlsSettings};
use lattice_wire::{CloseReason, Decoder, MonoTime, Session, SessionId, SessionLimits};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

struct Pki {
    server: Arc<rustls::ServerConfig>,
    client: Arc<ClientConfig>,
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let opts = ServerOptions {
            alpn: vec![],
            ticketer: None,
        };
        let server = Arc::new(
            server_config(
                ck.cert.pem().as_bytes(),
                ck.signing_key.serialize_pem().as_bytes(),
                &opts,
            )
            .unwrap(),
        );
        let mut roots = RootCertStore::empty();
        roots.add(ck.cert.der().clone()).unwrap();
        let client = Arc::new(
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        );
        Pki { server, client }
    })
}

const LIMITS: SessionLimits = SessionLimits::basic(4096, 8192, Some(Duration::from_secs(60)));

const SEC: u64 = 1_000_000_000;

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});

fn new_session(now: MonoTime) -> Session {
    let settings = TlsSettings {
        key_update_interval: Some(Duration::from_secs(1)),
        handshake_timeout: Some(Duration::from_secs(5)),
    };
    Session::new(SessionId::new(0, 1, 0), LIMITS, now)
        .with_tls(TlsLayer::new(pki().server.clone(), settings, now).unwrap())
}

/// Feeds `bytes` in arbitrary reads; returns the frames decoded, or the close reason.
fn feed(
    u: &mut Unstructured<'_>,
    s: &mut Session,
    now: MonoTime,
    bytes: &[u8],
    frames: &mut Vec<Vec<u8>>,
) -> Result<std::result::Result<bool, CloseReason>> {
    let mut rest = bytes;
    let mut plain = Vec::new();
    let mut peer_closed = false;
    while !rest.is_empty() {
        let n = u.int_in_range(1..=rest.len())?;
        plain.clear();
        let handshaking = s.tls().unwrap().is_handshaking();
        let r = s.receive_tls(now, &rest[..n], &mut plain);
        rest = &rest[n..];
        if handshaking && s.tls().unwrap().is_handshaking() {
            assert!(plain.is_empty(), "plaintext before the handshake completed");
        }
        match r {
            Ok(read) => peer_closed |= read.peer_closed,
            Err(reason) => {
                assert!(
                    matches!(&reason, CloseReason::Protocol(m) if m.starts_with("tls: ")),
                    "{reason:?}"
                );
                assert_eq!(s.close_reason(), Some(&reason));
                return Ok(Err(reason));
            }
        }
        let mut input = &plain[..];
        loop {
            match s.receive(s.binding(), now, &mut input) {
                Ok(Some(lattice_wire::Input::Frame(f))) => {
                    let f = f.frame();
                    frames.push(encode(
                        f.header.opcode,
                        f.header.flags,
                        f.header.request_id,
                        f.body,
                    ));
                }
                Ok(Some(other)) => panic!("no rate limit or resume here: {other:?}"),
                Ok(None) => break,
                Err(reason) => return Ok(Err(reason)),
            }
        }
    }
    Ok(Ok(peer_closed))
}

/// Moves everything the server queued to the client. Returns false if the client refused it.
fn to_client(s: &mut Session, c: &mut ClientConnection) -> bool {
    let out = s.transmit(s.binding()).to_vec();
    s.transmitted(s.binding(), out.len());
    let mut rd = &out[..];
    while !rd.is_empty() {
        if c.read_tls(&mut rd).is_err() || c.process_new_packets().is_err() {
            return false;
        }
    }
    true
}

fn client_bytes(c: &mut ClientConnection) -> Vec<u8> {
    let mut w = Vec::new();
    while c.wants_write() {
        c.write_tls(&mut w).unwrap();
    }
    w
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let mut now = MonoTime(u.int_in_range(0..=SEC)?);
    let mut s = new_session(now);
    let mut frames = Vec::new();
    if u.int_in_range(0..=1u8)? == 0 {
        // Arbitrary bytes instead of a ClientHello.
        while !u.is_empty() && !s.is_closing() {
            match u.int_in_range(0..=3u8)? {
                0 | 1 => {
                    let len = u.int_in_range(0..=600usize)?;
                    let bytes = u.bytes(len.min(u.len()))?.to_vec();
                    let _ = feed(u, &mut s, now, &bytes, &mut frames)?;
                }
                2 => {
                    now = MonoTime(now.0.saturating_add(u.int_in_range(0..=6 * SEC)?));
                    s.handle_timeout(now);
                }
                _ => {
                    s.peer_closed(s.binding(), now);
                }
            }
        }
        assert!(frames.is_empty(), "frames without a handshake");
        return Ok(());
    }

    // A real handshake first.
    let mut c = ClientConnection::new(
        pki().client.clone(),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    for _ in 0..10 {
        let b = client_bytes(&mut c);
        if let Ok(Err(_)) = feed(u, &mut s, now, &b, &mut frames) {
            return Ok(());
        }
        assert!(
            to_client(&mut s, &mut c),
            "the client refused the handshake"
        );
        if !c.is_handshaking() && !c.wants_write() {
            break;
        }
    }
    assert!(!s.tls().unwrap().is_handshaking());

    let mut sent_plain = Vec::new(); // the client's plaintext, in order
    let mut clean = true; // only the client's real records were delivered
    while !u.is_empty() && !s.is_closing() {
        match u.int_in_range(0..=6u8)? {
            // The client sends frames (arbitrary plaintext: the frame codec judges it).
            0 | 1 => {
                let len = u.int_in_range(0..=300usize)?;
                let mut bytes = u.bytes(len.min(u.len()))?.to_vec();
                if u.arbitrary()? {
                    bytes = encode(4, 0, u.arbitrary()?, &bytes);
                }
                c.writer().write_all(&bytes).unwrap();
                sent_plain.extend_from_slice(&bytes);
                let wire = client_bytes(&mut c);
                if let Err(_) = feed(u, &mut s, now, &wire, &mut frames)? {
                    break;
                }
            }
            // Raw bytes: a forged record, or a real one with bytes changed.
            2 => {
                clean = false;
                let mut wire = if u.arbitrary()? {
                    let len = u.int_in_range(0..=300usize)?;
                    let mut r = vec![u.arbitrary()?, 3, 3];
                    r.extend_from_slice(&(len as u16).to_be_bytes());
                    r.extend_from_slice(u.bytes(len.min(u.len()))?);
                    r
                } else {
                    c.writer().write_all(b"x").unwrap();
                    client_bytes(&mut c)
                };
                if !wire.is_empty() {
                    let at = u.int_in_range(0..=wire.len() - 1)?;
                    wire[at] ^= u.int_in_range(1..=255u8)?;
                }
                if let Err(_) = feed(u, &mut s, now, &wire, &mut frames)? {
                    break;
                }
            }
            // The client rotates its keys (TLS 1.3).
            3 => {
                let _ = c.refresh_traffic_keys();
                let wire = client_bytes(&mut c);
                if let Err(_) = feed(u, &mut s, now, &wire, &mut frames)? {
                    break;
                }
            }
            // Time passes; the server's deadline fires (an interval key update).
            4 => {
                now = MonoTime(now.0.saturating_add(u.int_in_range(0..=2 * SEC)?));
                if let Some(d) = s.poll_timeout() {
                    if u.arbitrary()? {
                        now = now.max(d);
                    }
                }
                s.handle_timeout(now);
            }
            // The server sends a frame; the client takes whatever is queued.
            5 => {
                let len = u.int_in_range(0..=200usize)?;
                let body = u.bytes(len.min(u.len()))?.to_vec();
                let _ = s.send(&encode(5, 0, 1, &body));
                assert!(
                    s.unsent() <= LIMITS.send_buffer_limit + 2 * 1024,
                    "queue past its bound: {}",
                    s.unsent()
                );
                let ok = to_client(&mut s, &mut c);
                // (A session that refused something sent an alert, which the client rejects.)
                assert!(
                    ok || !clean || s.is_closing(),
                    "the client refused what the server sent"
                );
            }
            _ => {
                s.peer_closed(s.binding(), now);
            }
        }
    }
    if clean {
        // Frames decoded piecewise through TLS = a one-shot decode of the client's plaintext
        // (up to where the frame codec stopped).
        let mut whole = Vec::new();
        let _ = Decoder::new(LIMITS.max_frame).feed(&sent_plain, |f| {
            whole.push(encode(
                f.header.opcode,
                f.header.flags,
                f.header.request_id,
                f.body,
            ));
            true
        });
        assert!(frames.len() <= whole.len());
        assert_eq!(frames[..], whole[..frames.len()]);
        if !s.is_closing() {
            assert_eq!(frames, whole, "frames lost in TLS");
        }
    }
    Ok(())
}

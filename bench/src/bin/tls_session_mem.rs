//! Live heap bytes of an idle session, with and without TLS, counted by the allocator (exact and
//! repeatable, unlike RSS): N sessions each do their handshake with an in-memory rustls client,
//! exchange one frame each way, and go idle; the clients are dropped; what stays allocated is
//! divided by N. Prints the live allocations by size too, so the big items show.
//!
//! Usage: `tls_session_mem [--sessions N] [--version 1.3|1.2] [--suite NAME]` (default 2000, 1.3,
//! the client's preference; `--suite CHACHA` offers only suites whose name contains it).

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lattice_bench::wire::parse_flags;
use lattice_wire::frame::encode;
use lattice_wire::tls::rustls::pki_types::ServerName;
use lattice_wire::tls::rustls::{self, ClientConfig, ClientConnection, RootCertStore};
use lattice_wire::tls::{server_config, ServerOptions, TlsLayer, TlsSettings};
use lattice_wire::{MonoTime, Session, SessionId, SessionLimits};

/// Live bytes and allocations, and live allocations per size bucket (powers of two).
struct Counting;
static BYTES: AtomicI64 = AtomicI64::new(0);
static COUNT: AtomicI64 = AtomicI64::new(0);
static BUCKETS: [AtomicI64; 24] = [const { AtomicI64::new(0) }; 24];

fn bucket(size: usize) -> usize {
    (usize::BITS - size.max(1).leading_zeros()) as usize % 24
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        BYTES.fetch_add(l.size() as i64, Ordering::Relaxed);
        COUNT.fetch_add(1, Ordering::Relaxed);
        BUCKETS[bucket(l.size())].fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        BYTES.fetch_sub(l.size() as i64, Ordering::Relaxed);
        COUNT.fetch_sub(1, Ordering::Relaxed);
        BUCKETS[bucket(l.size())].fetch_sub(1, Ordering::Relaxed);
        // SAFETY: `p` came from `alloc` with this layout.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

struct Snapshot {
    bytes: i64,
    count: i64,
    buckets: [i64; 24],
}

fn snapshot() -> Snapshot {
    Snapshot {
        bytes: BYTES.load(Ordering::Relaxed),
        count: COUNT.load(Ordering::Relaxed),
        buckets: std::array::from_fn(|i| BUCKETS[i].load(Ordering::Relaxed)),
    }
}

fn limits() -> SessionLimits {
    SessionLimits::basic(1 << 20, 1 << 18, Some(Duration::from_secs(60)))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut n = 2000usize;
    let mut v13 = true;
    let mut suite = String::from("any");
    for (k, v) in parse_flags(&args).unwrap_or_else(|e| {
        eprintln!("tls_session_mem: {e}");
        std::process::exit(2)
    }) {
        match k.as_str() {
            "sessions" => n = v.parse().expect("--sessions N"),
            "version" => v13 = v != "1.2",
            "suite" => suite = v,
            _ => {
                eprintln!("tls_session_mem: unknown option --{k}");
                std::process::exit(2)
            }
        }
    }
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
    let versions: &[&rustls::SupportedProtocolVersion] = if v13 {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS12]
    };
    let mut provider = rustls::crypto::ring::default_provider();
    if suite != "any" {
        provider
            .cipher_suites
            .retain(|s| format!("{:?}", s.suite()).contains(suite.as_str()));
        assert!(
            !provider.cipher_suites.is_empty(),
            "no suite matches {suite}"
        );
    }
    let client_cfg = Arc::new(
        ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let settings = TlsSettings {
        key_update_interval: Some(Duration::from_secs(3600)),
        handshake_timeout: Some(Duration::from_secs(10)),
    };

    println!(
        "size_of: Session {} B, TlsLayer {} B (boxed in the session)",
        std::mem::size_of::<Session>(),
        std::mem::size_of::<TlsLayer>()
    );
    for tls in [false, true] {
        let before = snapshot();
        let mut sessions = Vec::with_capacity(n);
        let mut plain = Vec::new();
        for i in 0..n {
            let now = MonoTime(0);
            let id = SessionId::new(0, i as u32, 0);
            let mut s = Session::new(id, limits(), now);
            if !tls {
                // One frame in, one out, as a Hello/Welcome.
                let hello = encode(1, 0, 1, b"\x0a\x0b1.0.0-alpha");
                let mut input = &hello[..];
                while let Ok(Some(_)) = s.receive(s.binding(), now, &mut input) {}
                s.send(&encode(2, 0, 1, &[0; 30])).unwrap();
                let k = s.transmit(s.binding()).len();
                s.transmitted(s.binding(), k);
                sessions.push(s);
                continue;
            }
            s = s.with_tls(TlsLayer::new(server.clone(), settings, now).unwrap());
            let mut c = ClientConnection::new(
                client_cfg.clone(),
                ServerName::try_from("localhost").unwrap(),
            )
            .unwrap();
            let mut sent_hello = false;
            for _ in 0..10 {
                let mut wire = Vec::new();
                while c.wants_write() {
                    c.write_tls(&mut wire).unwrap();
                }
                plain.clear();
                s.receive_tls(now, &wire, &mut plain).unwrap();
                let mut input = &plain[..];
                while let Ok(Some(_)) = s.receive(s.binding(), now, &mut input) {}
                if !plain.is_empty() {
                    s.send(&encode(2, 0, 1, &[0; 30])).unwrap();
                }
                let out = s.transmit(s.binding()).to_vec();
                s.transmitted(s.binding(), out.len());
                let mut rd = &out[..];
                while !rd.is_empty() {
                    c.read_tls(&mut rd).unwrap();
                    c.process_new_packets().unwrap();
                }
                if !c.is_handshaking() && !sent_hello {
                    c.writer()
                        .write_all(&encode(1, 0, 1, b"\x0a\x0b1.0.0-alpha"))
                        .unwrap();
                    sent_hello = true;
                } else if sent_hello && !c.wants_write() {
                    break;
                }
            }
            assert!(!s.tls().unwrap().is_handshaking());
            sessions.push(s);
        }
        if let Some(t) = sessions.last().and_then(|s| s.tls()) {
            println!("    last session: {t:?}");
        }
        drop(plain);
        plain = Vec::new();
        let after = snapshot();
        let per = (after.bytes - before.bytes) as f64 / n as f64;
        let allocs = (after.count - before.count) as f64 / n as f64;
        println!(
            "{} ({} sessions{}): {per:.0} live heap bytes per idle session, {allocs:.1} allocations",
            if tls { "TLS" } else { "plain" },
            n,
            if tls { if v13 { ", TLS 1.3" } else { ", TLS 1.2" } } else { "" },
        );
        for (i, (a, b)) in after.buckets.iter().zip(before.buckets.iter()).enumerate() {
            let live = (a - b) as f64 / n as f64;
            if live >= 0.05 {
                let hi = 1usize << i;
                println!(
                    "    size {:>5}..{:<5}: {live:.2} per session",
                    hi / 2,
                    hi - 1
                );
            }
        }
        drop(sessions);
        drop(plain);
    }
}

//! `GET /debug/pprof/profile` under load: a flame graph SVG of the running server with samples
//! from the shard threads; `/metrics` answers meanwhile; one profile at a time; bad input 400.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use lattice_proto::pb;

/// The admin bearer token the tests start the server with (`/debug/` is behind it).
const TOKEN: &str = "profile-test-token";

fn get(port: u16, path: &str) -> (u16, String, String) {
    get_as(port, path, &format!("Authorization: Bearer {TOKEN}\r\n"))
}

fn get_as(port: u16, path: &str, auth: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n").as_bytes())
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_string(), body.to_string())
}

#[test]
fn profile_under_load_is_a_flame_graph_of_the_shards() {
    let l = Lattice::start(&["--echo.fault_spin_us", "50", "--admin.token", TOKEN]);
    let stop = Arc::new(AtomicBool::new(false));
    // Load: 4 clients ping in a loop (each Ping spins 50 µs in its handler) until told to stop.
    let load: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            let mut c = l.connect();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) && n < 2_000_000 {
                    c.send(1, &pb::Ping { payload: vec![7] });
                    c.recv();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let admin = l.admin;
    let profile = std::thread::spawn(move || get(admin, "/debug/pprof/profile?seconds=3"));
    // The profiler reads every module's unwind tables before sampling: wait until it samples
    // (over 10 s for this binary on a loaded 2-core machine).
    l.wait_log_for("CPU profile started", Duration::from_secs(90));
    // During the profile: metrics still answer, and a second profile is refused.
    let (st, _, m) = get(l.admin, "/metrics");
    assert_eq!(st, 200);
    assert!(m.contains("lattice_requests_total"));
    let (st, _, body) = get(l.admin, "/debug/pprof/profile?seconds=1");
    assert_eq!(st, 409, "{body}");
    assert!(body.contains("already running"), "{body}");
    let (st, head, svg) = profile.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let pings: u64 = load.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(pings > 0);
    assert_eq!(st, 200, "{svg}");
    assert!(head.contains("Content-Type: image/svg+xml"), "{head}");
    let samples: u64 = head
        .lines()
        .find_map(|h| h.strip_prefix("X-Lattice-Samples: "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(samples > 0, "no samples under load");
    assert!(svg.starts_with("<?xml") && svg.trim_end().ends_with("</svg>"));
    assert!(
        svg.contains("<title>lattice-shard-"),
        "no shard thread in the graph"
    );
    // The handler's spin shows up under the echo component's ping handler.
    assert!(svg.contains("ping"), "the echo handler is not in the graph");
    assert!(svg.contains(&format!("all ({samples} samples, 100.00%)")));
}

#[test]
fn bad_profile_requests_get_400() {
    let l = Lattice::start(&["--profile.max_seconds", "5", "--admin.token", TOKEN]);
    // Behind the admin bearer token: refused without it or with another one.
    for auth in ["", "Authorization: Bearer wrong\r\n"] {
        let (st, _, body) = get_as(l.admin, "/debug/pprof/profile?seconds=1", auth);
        assert_eq!(st, 401, "{auth:?}: {body}");
    }
    for q in ["?seconds=0", "?seconds=6", "?seconds=two"] {
        let (st, _, body) = get(l.admin, &format!("/debug/pprof/profile{q}"));
        assert_eq!(st, 400, "{q}: {body}");
        assert!(body.contains("profile.max_seconds"));
    }
    let (st, _, body) = get(l.admin, "/debug/pprof/nope");
    assert_eq!(st, 404);
    assert_eq!(body, "{\"error\":\"not found\"}\n", "errors are JSON");
}

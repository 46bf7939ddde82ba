//! Close-reason log levels on the gateway's layers, whole-process: storms of malformed HTTP
//! requests and of non-TLS bytes on the TLS listener write a few WARN lines per reason and then
//! summaries (each layer its own reason, so one storm does not hide another); TLS handshakes that
//! time out are INFO, like any client that times out.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::tls::{gen_cert, TempDir, TlsLattice};

const STORM: u64 = 60;
const TIMEOUTS: u64 = 10;

/// WARN "session closed" lines (not summaries) whose text contains `needle`.
fn warned(logs: &str, needle: &str) -> u64 {
    logs.lines()
        .filter(|x| {
            x.contains(" WARN ")
                && x.contains("session closed")
                && !x.contains("suppressed=")
                && x.contains(needle)
        })
        .count() as u64
}

/// Sum of `suppressed=N` over the summary lines of `reason`.
fn suppressed(logs: &str, reason: &str) -> u64 {
    logs.lines()
        .filter(|x| x.contains("suppressed=") && x.contains(reason))
        .filter_map(|x| {
            x.split("suppressed=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

fn summaries(logs: &str, reason: &str) -> u64 {
    logs.lines()
        .filter(|x| x.contains("suppressed=") && x.contains(reason))
        .count() as u64
}

/// Reads until the server closes (bounded by the socket timeout).
fn drain(s: &mut TcpStream) {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut b = [0u8; 1024];
    while matches!(s.read(&mut b), Ok(n) if n > 0) {}
}

#[test]
fn gateway_violations_are_rate_limited_per_layer_and_handshake_timeouts_are_info() {
    let dir = TempDir::new("close-logs");
    let (cert, key) = gen_cert(&dir.0);
    let t = TlsLattice::start(
        &cert,
        &key,
        &[
            "--log.warn_burst",
            "3",
            "--log.warn_window_ms",
            "500",
            "--tls.handshake_timeout_ms",
            "300",
        ],
    );
    let l = &t.l;
    // Malformed HTTP request heads: each answered 400 and closed.
    for _ in 0..STORM {
        let mut s = TcpStream::connect(("127.0.0.1", l.http)).unwrap();
        s.write_all(b"GARBAGE\r\n\r\n").unwrap();
        drain(&mut s);
    }
    // Plain HTTP on the TLS listener: not a TLS record.
    for _ in 0..STORM {
        let mut s = TcpStream::connect(("127.0.0.1", t.tls_port)).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        drain(&mut s);
    }
    // Clients that connect to the TLS listener and never start the handshake.
    let idle: Vec<TcpStream> = (0..TIMEOUTS)
        .map(|_| TcpStream::connect(("127.0.0.1", t.tls_port)).unwrap())
        .collect();
    for mut s in idle {
        drain(&mut s);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while l.metric_total("lattice_sessions_closed_protocol_total") < 2 * STORM + TIMEOUTS {
        assert!(Instant::now() < deadline, "{}", l.metrics());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Every violation is either logged or counted in a summary once its window ends.
    let reasons = [("http_error", "http: "), ("tls_error", "tls: ")];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let logs = l.logs();
        let done = reasons.iter().all(|(reason, text)| {
            warned(&logs, text) + suppressed(&logs, &format!("reason=\"{reason}\"")) == STORM
        });
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "violations not all accounted for:\n{logs}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let logs = l.logs();
    for (reason, text) in reasons {
        let logged = warned(&logs, text);
        let sums = summaries(&logs, &format!("reason=\"{reason}\""));
        assert!(
            logged >= 1 && suppressed(&logs, &format!("reason=\"{reason}\"")) >= STORM / 2,
            "{reason}: logged {logged}:\n{logs}"
        );
        assert!(
            logged + sums < STORM / 2,
            "{reason}: {logged} + {sums} lines for {STORM} violations"
        );
    }
    // Handshake timeouts: INFO, one per session, never WARN.
    let timeouts: Vec<&str> = logs
        .lines()
        .filter(|x| x.contains("handshake not complete"))
        .collect();
    assert_eq!(timeouts.len() as u64, TIMEOUTS, "{logs}");
    assert!(timeouts.iter().all(|x| x.contains(" INFO ")), "{logs}");
    // No WARN line other than the ones counted above.
    let warns = logs.lines().filter(|x| x.contains(" WARN ")).count() as u64;
    let counted: u64 = reasons
        .iter()
        .map(|(r, text)| warned(&logs, text) + summaries(&logs, &format!("reason=\"{r}\"")))
        .sum();
    assert_eq!(warns, counted, "{logs}");
}

/// A stop before the window ends still writes the summary: the warnings suppressed in it were in
/// no log line at all (100 closes, 20 logged, the other 80 only in a counter).
#[test]
fn a_stop_writes_the_summary_of_a_window_that_has_not_ended() {
    let mut l = common::Lattice::start(&[
        "--log.warn_burst",
        "2",
        "--log.warn_window_ms",
        "3600000",
        "--runtime.shards",
        "1",
    ]);
    for _ in 0..STORM {
        let mut s = TcpStream::connect(("127.0.0.1", l.http)).unwrap();
        s.write_all(b"GARBAGE\r\n\r\n").unwrap();
        drain(&mut s);
    }
    l.wait_metric_total("lattice_sessions_closed_protocol_total", STORM);
    assert_eq!(l.terminate(), 0, "{}", l.logs());
    let logs = l.logs();
    assert_eq!(warned(&logs, "http: "), 2, "{logs}");
    assert_eq!(
        suppressed(&logs, "reason=\"http_error\""),
        STORM - 2,
        "{logs}"
    );
}

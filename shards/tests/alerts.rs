//! Alerts against a local Feishu webhook stub (tests/feishu_stub.py, Python's own HMAC): signed
//! and well-formed, raised for a handler-panic burst (once: deduplicated), a stalled shard and its
//! recovery, a storage outage (MariaDB stopped mid-run) and a crash of the previous run; a wrong
//! secret is refused by the stub and counted as failed; an HTTPS webhook is verified against
//! `alerts.ca_file` (and refused without it). (The dump-file alert is covered by the
//! watcher's unit tests: no service writes rows in this build, so nothing can be dumped.)

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use lattice_proto::pb;

struct Stub {
    child: Child,
    port: u16,
    out: PathBuf,
}

impl Stub {
    fn start(secret: &str, name: &str) -> Stub {
        Stub::start_with(secret, name, &[])
    }

    /// `tls`: `[cert.pem, key.pem]` to serve HTTPS.
    fn start_with(secret: &str, name: &str, tls: &[&Path]) -> Stub {
        let out = std::env::temp_dir().join(format!(
            "lattice-feishu-{name}-{}.jsonl",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&out);
        let mut child = Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/feishu_stub.py"))
            .arg(secret)
            .arg(&out)
            .args(tls)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 not found: install Debian's python3");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("stub prints its port");
        Stub { child, port, out }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/open-apis/bot/v2/hook/test", self.port)
    }

    fn records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Waits (bounded) for a record whose text contains `needle`.
    fn wait_for(&self, needle: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(r) = self
                .records()
                .into_iter()
                .find(|r| r["text"].as_str().is_some_and(|t| t.contains(needle)))
            {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "no alert containing {needle:?}: {:?}",
                self.records()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.out);
    }
}

fn single(l: &Lattice, name: &str) -> u64 {
    let m = l.metrics();
    m.lines()
        .find_map(|x| x.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} missing"))
        .parse()
        .unwrap()
}

fn wait_metric(l: &Lattice, name: &str, at_least: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while single(l, name) < at_least {
        assert!(
            Instant::now() < deadline,
            "{name} stayed below {at_least}:\n{}",
            l.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A server that alerts to `url` on `panics_per_minute` handler panics (checked every 50 ms), whose
/// echo component panics on the payload `boom`; `extra` adds options.
fn panicking_server(url: &str, panics_per_minute: &str, extra: &[&str]) -> Lattice {
    let mut args = vec![
        "--alerts.webhook",
        url,
        "--alerts.panics_per_minute",
        panics_per_minute,
        "--alerts.check_interval_ms",
        "50",
        "--echo.fault_panic_payload",
        "boom",
    ];
    args.extend_from_slice(extra);
    Lattice::start(&args)
}

/// Sends `n` pings that make the echo handler panic, each answered (with an error) before the next.
fn panic_handlers(l: &Lattice, n: u32) {
    let mut c = l.connect();
    for i in 0..n {
        c.send(
            i + 1,
            &pb::Ping {
                payload: b"boom".to_vec(),
            },
        );
        c.recv();
    }
}

#[test]
fn a_panic_burst_raises_one_signed_alert() {
    let stub = Stub::start("s3cret", "panic");
    let url = stub.url();
    let l = panicking_server(&url, "3", &["--alerts.secret", "s3cret"]);
    panic_handlers(&l, 5);
    let r = stub.wait_for("handler panics in the last minute");
    assert_eq!(r["sign_ok"], true, "{r}");
    assert_eq!(r["shape_ok"], true, "{r}");
    assert!(r["text"].as_str().unwrap().starts_with("[lattice "));
    assert_eq!(r["path"], "/open-apis/bot/v2/hook/test");
    // Later checks that see no new panic raise nothing (the burst is still in the minute: each
    // check was counted as a repeat); new panics within alerts.dedup_ms are deduplicated, not
    // sent again.
    // (A check between the burst's panics may have raised it once more: let those pass first.)
    std::thread::sleep(Duration::from_millis(500));
    let folded = single(&l, "lattice_alerts_deduplicated_total");
    std::thread::sleep(Duration::from_millis(500)); // ten more checks at 50 ms
    assert_eq!(
        single(&l, "lattice_alerts_deduplicated_total"),
        folded,
        "no new panic, nothing raised"
    );
    panic_handlers(&l, 1);
    wait_metric(&l, "lattice_alerts_deduplicated_total", folded + 1);
    let panics = stub
        .records()
        .iter()
        .filter(|r| r["text"].as_str().unwrap_or("").contains("handler panics"))
        .count();
    assert_eq!(panics, 1);
    assert_eq!(single(&l, "lattice_alerts_sent_total"), 1);
}

#[test]
fn a_stalled_shard_alerts_and_recovers() {
    let stub = Stub::start("k", "stall");
    let url = stub.url();
    let l = Lattice::start(&[
        "--alerts.webhook",
        &url,
        "--alerts.secret",
        "k",
        "--alerts.stall_ms",
        "1500",
        "--alerts.check_interval_ms",
        "50",
        "--echo.fault_spin_us",
        "4000000",
    ]);
    let mut c = l.connect();
    // The handler spins 4 s: its shard makes no pass meanwhile.
    c.send(1, &pb::Ping { payload: vec![1] });
    let stalled = stub.wait_for("made no progress");
    assert_eq!(stalled["sign_ok"], true);
    c.recv();
    stub.wait_for("makes progress again");
}

#[test]
fn a_wrong_secret_is_refused_and_counted() {
    let stub = Stub::start("right", "secret");
    let url = stub.url();
    let l = panicking_server(
        &url,
        "1",
        &["--alerts.secret", "wrong", "--alerts.retries", "0"],
    );
    panic_handlers(&l, 1);
    wait_metric(&l, "lattice_alerts_failed_total", 1);
    assert_eq!(single(&l, "lattice_alerts_sent_total"), 0);
    let r = stub.wait_for("handler panics");
    assert_eq!(r["sign_ok"], false);
    assert!(l.logs().contains("19021"), "the refusal is logged");
}

#[test]
fn a_crash_is_reported_by_the_next_start() {
    let stub = Stub::start("k", "crash");
    let data = std::env::temp_dir().join(format!("lattice-alert-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    // The crash's core file lands in its working directory: a throwaway one.
    let cwd = data.with_extension("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    let url = stub.url();
    let common = [
        "--alerts.webhook".to_string(),
        url.clone(),
        "--alerts.secret".into(),
        "k".into(),
        "--storage.data_dir".into(),
        data.display().to_string(),
        "--admin.listen".into(),
        String::new(),
        // The HTTP listener's default port would clash between tests running in parallel.
        "--listeners.http".into(),
        String::new(),
    ];
    let mut crashed = Command::new(env!("CARGO_BIN_EXE_lattice"))
        .arg("run")
        .args(["--net.listen", &format!("127.0.0.1:{}", free_port())])
        .args(&common)
        .current_dir(&cwd)
        .env("LATTICE_FAULT", "abrt")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let st = crashed.wait().unwrap();
    assert!(!st.success());
    std::fs::remove_dir_all(&cwd).unwrap();
    assert!(
        data.join("lattice.running").exists(),
        "the crash left the run marker"
    );
    // The crashed pid now belongs to a live process (pids are reused; in a container the server
    // often has the same pid at every start): the next start reports the crash all the same.
    let reused = std::process::id();
    std::fs::write(data.join("lattice.running"), reused.to_string()).unwrap();
    let mut again = Command::new(env!("CARGO_BIN_EXE_lattice"))
        .arg("run")
        .args(["--net.listen", &format!("127.0.0.1:{}", free_port())])
        .args(&common)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let r = stub.wait_for("ended without a clean shutdown");
    assert_eq!(r["sign_ok"], true);
    assert!(r["text"]
        .as_str()
        .unwrap()
        .contains(&format!("pid {reused}")));
    unsafe_free_kill(again.id(), "TERM");
    assert!(again.wait().unwrap().success());
    assert!(
        !data.join("lattice.running").exists(),
        "a clean stop removes the marker"
    );
    std::fs::remove_dir_all(&data).unwrap();
}

/// Runs `deploy/ci/mariadb.sh CMD alerts` (an instance of its own, so stopping it disturbs no other
/// test); returns its stdout.
fn mariadb(cmd: &str) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/ci/mariadb.sh");
    let out = Command::new("bash")
        .arg(&script)
        .args([cmd, "alerts"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "`deploy/ci/mariadb.sh {cmd} alerts` failed (it installs mariadb-server from Debian's packages if missing):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_storage_outage_is_alerted() {
    mariadb("start");
    let url = mariadb("url");
    let stub = Stub::start("k", "storage");
    let hook = stub.url();
    let l = Lattice::start(&[
        "--storage.backend",
        "mysql",
        "--storage.url",
        &url,
        "--storage.ping_interval_ms",
        "200",
        "--storage.flush_interval_ms",
        "60000",
        "--alerts.webhook",
        &hook,
        "--alerts.secret",
        "k",
        "--alerts.check_interval_ms",
        "100",
    ]);
    mariadb("stop");
    let r = stub.wait_for("storage failing");
    assert_eq!(r["sign_ok"], true);
    drop(l);
}

/// A self-signed end-entity certificate for 127.0.0.1 (openssl CLI), in `dir`: (cert, key).
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        // An end-entity certificate: webpki refuses a CA certificate as the server's own.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl not found: install Debian's openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

#[test]
fn an_https_webhook_is_verified_against_the_ca_file() {
    let dir = std::env::temp_dir().join(format!("lattice-alert-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = self_signed(&dir);
    let stub = Stub::start_with("k", "tls", &[&cert, &key]);
    let url = format!("https://127.0.0.1:{}/open-apis/bot/v2/hook/tls", stub.port);
    let l = panicking_server(
        &url,
        "1",
        &[
            "--alerts.secret",
            "k",
            "--alerts.ca_file",
            cert.to_str().unwrap(),
        ],
    );
    panic_handlers(&l, 1);
    let r = stub.wait_for("handler panics");
    assert_eq!(r["sign_ok"], true);
    assert_eq!(r["path"], "/open-apis/bot/v2/hook/tls");
    wait_metric(&l, "lattice_alerts_sent_total", 1);
    drop(l);

    // The same server with the system's CAs only: its certificate is refused, nothing is sent.
    let l = panicking_server(&url, "1", &["--alerts.retries", "0"]);
    panic_handlers(&l, 1);
    wait_metric(&l, "lattice_alerts_failed_total", 1);
    assert!(l.logs().contains("webhook TLS"), "{}", l.logs());
    std::fs::remove_dir_all(&dir).unwrap();
}

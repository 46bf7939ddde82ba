//! Operations, whole-process: crashes with each fatal signal leave their last log line on disk and
//! die of that signal with a core dump; the log file rotates; a storm of resets and of protocol
//! violations writes no WARN line per session; `lattice tool ps|version`.

mod common;

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lattice-ops-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `lattice run` on free ports in `dir` (cwd, data, log file), with `env` and `extra` overrides.
fn spawn(dir: &Path, env: &[(&str, &str)], extra: &[&str]) -> std::process::Child {
    let mut args: Vec<String> = vec![
        "run".into(),
        "--net.listen".into(),
        format!("127.0.0.1:{}", free_port()),
        "--admin.listen".into(),
        format!("127.0.0.1:{}", free_port()),
        // The HTTP listener's default port would clash between tests running in parallel.
        "--listeners.http".into(),
        String::new(),
        "--runtime.shards".into(),
        "2".into(),
        "--storage.data_dir".into(),
        dir.join("data").display().to_string(),
        "--log.file".into(),
        dir.join("lattice.log").display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut c = Command::new(env!("CARGO_BIN_EXE_lattice"));
    c.args(&args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

/// An unlabelled sample's value.
fn single(l: &Lattice, name: &str) -> u64 {
    let m = l.metrics();
    m.lines()
        .find_map(|x| x.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} missing:\n{m}"))
        .parse()
        .unwrap()
}

fn wait_exit(child: &mut std::process::Child, secs: u64) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit within {secs} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// True when the kernel writes cores as plain files relative to the crashing process's cwd.
fn core_pattern_is_plain_file() -> Option<String> {
    let p = std::fs::read_to_string("/proc/sys/kernel/core_pattern").ok()?;
    let p = p.trim().to_string();
    (!p.starts_with('|') && !p.contains('/')).then_some(p)
}

#[test]
fn each_fatal_signal_flushes_the_log_and_dumps_core() {
    let pattern_before = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    for (fault, sig, name) in [
        ("segv", libc::SIGSEGV, "SIGSEGV"),
        ("bus", libc::SIGBUS, "SIGBUS"),
        ("abrt", libc::SIGABRT, "SIGABRT"),
        ("fpe", libc::SIGFPE, "SIGFPE"),
        ("ill", libc::SIGILL, "SIGILL"),
    ] {
        let dir = tmp(&format!("crash-{fault}"));
        let mut child = spawn(&dir, &[("LATTICE_FAULT", fault)], &[]);
        let st = wait_exit(&mut child, 30);
        assert_eq!(st.signal(), Some(sig), "{fault}: died of {st:?}");
        let log = std::fs::read_to_string(dir.join("lattice.log")).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        let last = lines.last().copied().unwrap_or_default();
        assert!(
            last.contains(&format!("fatal signal {name} ({sig})")),
            "{fault}: last line is {last:?}\n{log}"
        );
        // The documented shape: `unix=SECONDS.MMM FATAL lattice: fatal signal …`.
        let (stamp, rest) = last.split_once(' ').unwrap_or_default();
        let (secs, ms) = stamp
            .strip_prefix("unix=")
            .and_then(|t| t.split_once('.'))
            .unwrap_or_else(|| panic!("{fault}: {last:?}"));
        assert!(
            secs.bytes().all(|b| b.is_ascii_digit())
                && ms.len() == 3
                && ms.bytes().all(|b| b.is_ascii_digit()),
            "{fault}: {last:?}"
        );
        assert!(
            rest.starts_with("FATAL lattice: fatal signal ")
                && rest.ends_with("; log flushed; dumping core"),
            "{fault}: {last:?}"
        );
        let inj = lines
            .iter()
            .position(|l| l.contains("fault injection: crashing on purpose"))
            .unwrap_or_else(|| panic!("{fault}: the line logged just before the crash is missing (not flushed):\n{log}"));
        assert!(inj < lines.len() - 1);
        assert!(log.contains("core dumps enabled for this process"), "{log}");
        // The process raised its own RLIMIT_CORE: a core is written whatever the parent's limit.
        assert!(st.core_dumped(), "{fault}: no core dump ({st:?})");
        if let Some(p) = core_pattern_is_plain_file() {
            let cores: Vec<_> = std::fs::read_dir(&dir)
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("core"))
                .collect();
            assert!(
                !cores.is_empty(),
                "{fault}: core_pattern {p:?} but no core file in {dir:?}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap(),
        pattern_before,
        "core_pattern must never change"
    );
}

#[test]
fn an_unknown_fault_is_logged_with_every_known_one_and_ignored() {
    let dir = tmp("fault-bogus");
    let mut child = spawn(&dir, &[("LATTICE_FAULT", "bogus")], &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let line = loop {
        let log = std::fs::read_to_string(dir.join("lattice.log")).unwrap_or_default();
        if let Some(l) = log.lines().find(|l| l.contains("unknown fault")) {
            break l.to_string();
        }
        assert!(Instant::now() < deadline, "no unknown-fault line:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        line.contains(r#"known=["segv", "bus", "abrt", "fpe", "ill", "panic"]"#),
        "{line}"
    );
    assert!(child.try_wait().unwrap().is_none(), "the server goes on");
    child.kill().unwrap();
    child.wait().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_uncaught_panic_logs_and_exits_101() {
    let dir = tmp("panic");
    let mut child = spawn(&dir, &[("LATTICE_FAULT", "panic")], &[]);
    let st = wait_exit(&mut child, 30);
    assert_eq!(st.code(), Some(101), "{st:?}");
    let log = std::fs::read_to_string(dir.join("lattice.log")).unwrap();
    assert!(
        log.contains("fault injection: LATTICE_FAULT=panic"),
        "panic line not flushed:\n{log}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn log_file_rotates_by_size_and_keeps_the_newest() {
    let dir = tmp("rotate");
    let l = Lattice::start(&[
        "--log.file",
        dir.join("l.log").to_str().unwrap(),
        "--log.rotate_bytes",
        "2000",
        "--log.keep",
        "3",
        "--log.level",
        "debug",
    ]);
    // Each session logs a few debug lines: plenty for several 2 kB files.
    for _ in 0..40 {
        let mut c = l.connect();
        c.send(1, &lattice_proto::pb::Ping { payload: vec![1] });
        drop(c);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while single(&l, "lattice_log_rotations_total") < 4 {
        assert!(Instant::now() < deadline, "no rotation:\n{}", l.metrics());
        std::thread::sleep(Duration::from_millis(50));
    }
    let rotated: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("l.log."))
        .collect();
    assert_eq!(rotated.len(), 3, "keep = 3: {rotated:?}");
    for f in &rotated {
        let len = std::fs::metadata(dir.join(f)).unwrap().len();
        assert!(len <= 2000 + 4096, "{f}: {len} bytes");
    }
    assert_eq!(single(&l, "lattice_log_lines_dropped_total"), 0);
    drop(l);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// 2,000 connections reset by the client (SO_LINGER 0) log no WARN; 200 protocol violations log
/// at most `warn_burst` WARN lines per shard plus summaries.
#[test]
fn reset_storms_are_not_warnings_and_violations_are_rate_limited() {
    let l = Lattice::start(&["--log.warn_burst", "3", "--log.warn_window_ms", "500"]);
    let mut c = l.connect();
    c.send(1, &lattice_proto::pb::Ping { payload: vec![1] });
    c.recv();
    for _ in 0..2000 {
        // A session that finished its handshake, then an RST instead of a FIN.
        let c = l.connect();
        set_linger_zero(&c.s);
        drop(c);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while l.metric_total("lattice_connections_accepted_total") < 2001
        || l.metric_total("lattice_sessions_open") > 1
    {
        assert!(
            Instant::now() < deadline,
            "sessions did not close:\n{}",
            l.metrics()
                .lines()
                .filter(
                    |x| x.starts_with("lattice_connections") || x.starts_with("lattice_sessions")
                )
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let closed = l.metric_total("lattice_sessions_closed_io_total")
        + l.metric_total("lattice_sessions_closed_peer_total");
    assert_eq!(closed, 2000, "{}", l.metrics());
    let warns = |logs: &str| logs.lines().filter(|x| x.contains(" WARN ")).count();
    assert_eq!(
        warns(&l.logs()),
        0,
        "resets are not warnings:\n{}",
        l.logs()
    );

    // 200 sessions each send a frame with a bad length: a protocol violation.
    for _ in 0..200 {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", l.port)).unwrap();
        s.write_all(&[3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap();
        let mut b = [0u8; 64];
        let _ = std::io::Read::read(&mut s, &mut b);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while l.metric_total("lattice_sessions_closed_protocol_total") < 200 {
        assert!(Instant::now() < deadline, "{}", l.metrics());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Each window that ends writes one summary per shard and reason (even on an idle shard): wait
    // until every violation is accounted for, either logged or counted in a summary.
    let count = |logs: &str| -> (u64, u64) {
        let logged = logs
            .lines()
            .filter(|x| {
                x.contains(" WARN ") && x.contains("session closed") && !x.contains("suppressed")
            })
            .count() as u64;
        let suppressed = logs
            .lines()
            .filter(|x| x.contains("suppressed="))
            .filter_map(|x| {
                x.split("suppressed=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum();
        (logged, suppressed)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let (logged, suppressed) = loop {
        let (logged, suppressed) = count(&l.logs());
        if logged + suppressed == 200 {
            break (logged, suppressed);
        }
        assert!(
            Instant::now() < deadline,
            "logged {logged} + suppressed {suppressed} != 200:\n{}",
            l.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // Burst 3 per shard per 500 ms window: a storm of 200 writes a few lines, not 200.
    assert!(
        logged >= 1 && suppressed >= 100,
        "logged {logged}, suppressed {suppressed}"
    );
    let summaries = l
        .logs()
        .lines()
        .filter(|x| x.contains("suppressed="))
        .count() as u64;
    assert!(
        logged + summaries < 60,
        "{logged} + {summaries} lines for 200 violations"
    );
    assert_eq!(
        warns(&l.logs()) as u64,
        logged + summaries,
        "no other WARN line"
    );
}

/// SO_LINGER {on, 0}: close() sends RST instead of FIN.
fn set_linger_zero(s: &std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a live socket with a correctly sized linger struct.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0);
}

#[test]
fn tool_ps_lists_a_running_server_with_its_ports() {
    let l = Lattice::start(&[]);
    let out = Command::new(env!("CARGO_BIN_EXE_lattice"))
        .args(["tool", "ps"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let row = text
        .lines()
        .find(|r| r.split_whitespace().next() == Some(&l.child.id().to_string()))
        .unwrap_or_else(|| panic!("pid {} not listed:\n{text}", l.child.id()));
    assert!(row.contains(" all "), "{row}");
    let ports = row.split_whitespace().nth(2).unwrap();
    let ports: Vec<u16> = ports.split(',').map(|p| p.parse().unwrap()).collect();
    assert!(
        ports.contains(&l.port) && ports.contains(&l.http) && ports.contains(&l.admin),
        "{row}"
    );
    assert!(row.contains("MiB"), "{row}");
}

#[test]
fn tool_version_converts_both_ways_and_refuses_garbage() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_lattice"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["tool", "version"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(&lattice_proto::version::PROTOCOL.to_string()));
    let out = run(&["tool", "version", "2.3.4-release"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("0x000200030103"), "{text}");
    assert!(text.contains("no (major differs)"), "{text}");
    let out = run(&["tool", "version", "0x000200030103"]);
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .contains("2.3.4-release"));
    let out = run(&["tool", "version", "9.9"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8(out.stderr).unwrap().lines().count(), 1);
}

#[test]
fn every_subcommand_has_help_and_completions_cover_them() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_lattice"))
            .args(args)
            .output()
            .unwrap()
    };
    for sub in [
        vec!["run"],
        vec!["config"],
        vec!["tool"],
        vec!["tool", "migrate"],
        vec!["tool", "ps"],
        vec!["tool", "version"],
        vec!["completions"],
    ] {
        let mut a = sub.clone();
        a.push("--help");
        let out = run(&a);
        assert!(out.status.success(), "{a:?}");
        assert!(String::from_utf8(out.stdout)
            .unwrap()
            .contains("Usage: lattice"));
    }
    let out = run(&["completions", "bash"]);
    let script = String::from_utf8(out.stdout).unwrap();
    for word in ["ps", "version", "migrate", "completions", "config"] {
        assert!(script.contains(word), "bash completion lacks {word}");
    }
    // A reader that stops early (`lattice completions bash | head`) ends the output quietly.
    let mut child = Command::new(env!("CARGO_BIN_EXE_lattice"))
        .args(["completions", "bash"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let h = String::from_utf8(run(&["run", "--help"]).stdout).unwrap();
    assert!(
        h.contains("--log.file") && h.contains("--log.rotate_bytes"),
        "{h}"
    );
}

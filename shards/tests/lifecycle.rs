//! Process-level behaviour: configuration errors, help, metrics format, panics, busy queues,
//! log redaction and graceful shutdown.

mod common;

use std::process::Command;

use common::*;
use lattice_proto::{error_code, pb, AnyMessage};

fn lattice(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lattice"))
        .args(args)
        .output()
        .unwrap()
}

/// `lattice run` on data directory `data`, a free binary port and no other listener, with `extra`,
/// to its end (for servers expected to refuse to start).
fn run_on(data: &str, extra: &[&str]) -> std::process::Output {
    let port = format!("127.0.0.1:{}", free_port());
    let mut args = vec![
        "run",
        "--net.listen",
        &port,
        "--listeners.http",
        "",
        "--admin.listen",
        "",
        "--tls.listen",
        "",
        "--tls.http_listen",
        "",
        "--storage.data_dir",
        data,
    ];
    args.extend_from_slice(extra);
    lattice(&args)
}

#[test]
fn bad_config_is_one_line_naming_the_key_and_exit_2() {
    for (args, key) in [
        (vec!["run", "--net.max_frame", "lots"], "net.max_frame"),
        (vec!["run", "--net.nope", "1"], "net.nope"),
        (vec!["run", "--runtime.driver", "kqueue"], "runtime.driver"),
        (vec!["run", "--log.level", "[[["], "log.level"),
        (vec!["run", "--alerts.stall_ms", "1000"], "alerts.stall_ms"),
        (
            vec![
                "run",
                "--storage.backend",
                "mysql",
                "--storage.url",
                "http://x:y@h:1",
            ],
            "storage.url",
        ),
        (vec!["run", "--alerts.webhook", "ftp://x"], "alerts.webhook"),
        (
            vec!["run", "--lua.dir", "/nonexistent-lattice-dir"],
            "lua.dir",
        ),
        // `lattice config` checks what `run` checks.
        (vec!["config", "--log.level", "nonsense==="], "log.level"),
        (
            vec!["config", "--logic.queue_limit", "-1"],
            "logic.queue_limit",
        ),
        (vec!["config", "--echo.route", "foo"], "echo.route"),
        (
            vec!["config", "--calendar.time_zone", "Mars/Base"],
            "calendar.time_zone",
        ),
        (
            vec!["config", "--profile.max_seconds", "-1"],
            "profile.max_seconds",
        ),
        (
            vec!["config", "--alerts.stall_ms", "1000"],
            "alerts.stall_ms",
        ),
        (
            vec!["config", "--http.ws_echo_path", "/ws"],
            "http.ws_echo_path",
        ),
        (vec!["config", "--http.ws_path", "/healthz"], "http.ws_path"),
        (
            vec!["config", "--session.resume_window_ms", "0"],
            "session.resume_window_ms",
        ),
        (
            vec!["config", "--session.replay_max_bytes", "0"],
            "`session.replay_max_bytes`: must be at least 1 (from --session.replay_max_bytes)",
        ),
        (
            vec!["config", "--account.max_online_per_shard", "0"],
            "account.max_online_per_shard",
        ),
        (
            vec!["config", "--http.ws_echo_path", "/rpc/Ping"],
            "http.ws_echo_path",
        ),
        // --defaults ignores every source: naming one with it is refused.
        (
            vec!["config", "--defaults", "--net.max_frame", "5"],
            "--defaults",
        ),
        (
            vec!["config", "--defaults", "--config", "/nonexistent"],
            "--defaults",
        ),
        (
            vec!["run", "--bogus-option"],
            "unknown option --bogus-option",
        ),
    ] {
        let out = lattice(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains(key), "{err}");
    }
    // The data directory's admin token file is read by `config` as `run` reads it (an empty one
    // passed `config` and stopped `run` with exit 2).
    let data = std::env::temp_dir().join(format!("lattice-cfg-token-{}", std::process::id()));
    std::fs::create_dir_all(&data).unwrap();
    let token = data.join("admin.token");
    {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&token)
            .unwrap();
    }
    let out = lattice(&["config", "--storage.data_dir", data.to_str().unwrap()]);
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("admin.token") && err.contains("empty"),
        "{err}"
    );
    std::fs::write(&token, "0123456789abcdef0123456789abcdef\n").unwrap();
    let out = lattice(&["config", "--storage.data_dir", data.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&data);
    let out = Command::new(env!("CARGO_BIN_EXE_lattice"))
        .args(["run"])
        .env("LATTICE_NET__MAX_CONNECTIONS", "-5")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("net.max_connections"));
    let dir = std::env::temp_dir().join(format!("lattice-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[net]\nlisten = 7\n").unwrap();
    let out = lattice(&["run", "--config", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`net.listen`"));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn help_documents_every_option() {
    let out = lattice(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for key in [
        "--net.max_frame",
        "--runtime.driver",
        "--echo.route",
        "--shutdown.drain_timeout_ms",
        "--config",
    ] {
        assert!(text.contains(key), "--help lacks {key}");
    }
    assert_eq!(lattice(&["frobnicate"]).status.code(), Some(2));
}

#[test]
fn metrics_pass_promtool() {
    let l = Lattice::start(&[]);
    let mut c = l.connect();
    c.send(1, &pb::Ping { payload: vec![1] });
    c.recv();
    let text = l.metrics();
    assert!(text.contains("lattice_frames_in_total{shard=\"0\"}"));
    // The Ping went through the echo handler: counted, with a latency histogram.
    assert_eq!(
        per_shard(&text, "lattice_requests_total")
            .iter()
            .sum::<u64>(),
        1,
        "{text}"
    );
    assert!(text.contains("lattice_handler_seconds_bucket{shard="));
    assert!(text.contains(",msg=\"Ping\",le=\"+Inf\"} "));
    assert!(text.contains("lattice_log_lines_dropped_total 0\n"));
    assert!(text.contains("lattice_shard_driver{shard=\"1\""));
    promtool_accepts(&text);
}

#[test]
fn the_chosen_driver_is_logged_per_shard() {
    let l = Lattice::start(&[]);
    let logs = l.wait_log("shard started");
    // Each shard sets its gauge as it starts: the first "shard started" line can come before
    // the other shard's gauge is set, so wait for both, then check there is no third.
    l.wait_metric_total("lattice_shard_driver", 2);
    let m = l.metrics();
    let on: u64 = per_shard(&m, "lattice_shard_driver").iter().sum();
    assert_eq!(on, 2, "each shard reports exactly one driver:\n{m}");
    if let Ok(want) = std::env::var("LATTICE_RUNTIME__DRIVER") {
        if want != "auto" {
            assert!(logs.contains(&format!("driver=\"{want}\"")), "{logs}");
        }
    }
}

#[test]
fn panicking_handler_answers_internal_and_shard_goes_on() {
    let l = Lattice::start(&[
        "--echo.fault_panic_payload",
        "boom",
        "--echo.route",
        "remote",
    ]);
    let mut c = l.connect();
    c.send(
        5,
        &pb::Ping {
            payload: b"boom".to_vec(),
        },
    );
    let f = c.recv();
    assert_eq!(f.request_id, 5);
    expect_error(&f, error_code::INTERNAL);
    c.send(
        6,
        &pb::Ping {
            payload: b"fine".to_vec(),
        },
    );
    assert!(matches!(c.recv().decode(), AnyMessage::Pong(_)));
    let logs = l.wait_log("handler panicked");
    assert!(logs.contains("fault injection"), "panic message is logged");
    assert!(logs.contains("opcode=4"), "opcode is logged");
    assert_eq!(l.metric_total("lattice_handler_panics_total"), 1);
}

#[test]
fn full_service_queue_answers_busy_and_counts_drops() {
    let l = Lattice::start(&[
        "--echo.route",
        "remote",
        "--logic.queue_limit",
        "4",
        "--logic.batch",
        "1",
        "--echo.fault_spin_us",
        "2000",
    ]);
    let mut c = l.connect();
    let n = 200u32;
    let mut burst = Vec::new();
    for i in 0..n {
        burst.extend(encode(i + 1, &pb::Ping { payload: vec![] }));
    }
    c.send_raw(&burst);
    let (mut pongs, mut busy) = (0, 0);
    for _ in 0..n {
        match c.recv().decode() {
            AnyMessage::Pong(_) => pongs += 1,
            AnyMessage::Error(e) if e.code == error_code::BUSY => busy += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(pongs + busy, n, "every request is answered once");
    assert!(busy > 0, "a 4-deep queue with a slow handler must overflow");
    assert!(pongs >= 4);
    assert_eq!(l.metric_total("lattice_dropped_busy_total"), busy as u64);
}

#[test]
fn login_password_never_reaches_the_log() {
    let l = Lattice::start(&["--log.level", "trace"]);
    let mut c = l.connect();
    let secret = "hunter2-very-secret";
    c.send(
        3,
        &pb::Login {
            account: "alice".into(),
            password: secret.into(),
        },
    );
    c.recv();
    c.send(
        4,
        &pb::Ping {
            payload: b"visible-payload".to_vec(),
        },
    );
    c.recv();
    l.wait_log("msg=\"Login\"");
    // The log writer is asynchronous: the Ping's line can land after the Login's.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let logs = loop {
        let logs = l.logs();
        if logs.contains("visible-payload") || logs.contains("118, 105") {
            break logs;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ordinary bodies are logged at trace:\n{logs}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(!logs.contains(secret), "the password leaked into the log");
}

#[test]
fn sigterm_flushes_in_flight_replies_then_exits_0() {
    // 100 requests at 2 ms each on the other shard: ~200 ms of work in flight when SIGTERM lands.
    let mut l = Lattice::start(&["--echo.route", "remote", "--echo.fault_spin_us", "2000"]);
    let mut c = l.connect();
    let mut burst = Vec::new();
    for i in 0..100u32 {
        burst.extend(encode(
            i + 1,
            &pb::Ping {
                payload: vec![9; 16],
            },
        ));
    }
    c.send_raw(&burst);
    // Wait until the server has read all of them (Hello + 100), then ask it to stop.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while l.metric_total("lattice_frames_in_total") < 101 {
        assert!(
            std::time::Instant::now() < deadline,
            "server did not read the burst"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    unsafe_free_kill(l.child.id(), "TERM");
    let mut ids = Vec::new();
    while let Some(f) = c.try_recv() {
        assert!(matches!(f.decode(), AnyMessage::Pong(_)));
        ids.push(f.request_id);
    }
    assert_eq!(
        ids,
        (1..=100).collect::<Vec<_>>(),
        "every request read before SIGTERM is answered, in order"
    );
    let code = l.terminate();
    assert_eq!(code, 0, "{}", l.logs());
    let logs = l.logs();
    assert!(logs.contains("shutdown requested by signal"), "{logs}");
    assert!(logs.contains("reason=server shutdown"), "{logs}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", l.port)).is_err(),
        "listener closed"
    );
}

/// Waits until `log` holds `line`, then sends SIGTERM and waits for the exit (a panic with the log
/// when either takes more than a minute: a hang, not a timing).
fn term_after(
    child: &mut std::process::Child,
    log: &std::path::Path,
    line: &str,
) -> std::process::ExitStatus {
    let logs = || std::fs::read_to_string(log).unwrap_or_default();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !logs().contains(line) {
        assert!(std::time::Instant::now() < deadline, "{}", logs());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    unsafe_free_kill(child.id(), "TERM");
    exit_within_a_minute(child, log, "still running a minute after SIGTERM")
}

#[test]
fn sigterm_during_start_up_is_logged_and_exits_0() {
    let data = std::env::temp_dir().join(format!("lattice-test-startstop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    // A long reservation: the restart waits about 20 s before it leases its id and serves.
    let center = [
        "--center.reserve_ms",
        "20000",
        "--center.lease_ttl_ms",
        "40000",
        "--center.clock_wait_max_ms",
        "60000",
    ];
    let mut first = Lattice::start_with_data(data.clone(), "startstop", &center);
    unsafe_free_kill(first.child.id(), "KILL");
    let _ = first.child.wait();
    let log =
        std::env::temp_dir().join(format!("lattice-test-startstop-{}.log", std::process::id()));
    let listen = format!("127.0.0.1:{}", free_port());
    let data_dir = data.display().to_string();
    let mut args = vec![
        "run",
        "--net.listen",
        &listen,
        "--admin.listen",
        "",
        "--listeners.http",
        "",
        "--tls.listen",
        "",
        "--tls.http_listen",
        "",
        "--storage.data_dir",
        &data_dir,
        "--center.node",
        "startstop",
    ];
    args.extend_from_slice(&center);
    let mut second = spawn_logged(&args, &log);
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    // "icons loaded" is the last line before the machine-id lease.
    let status = term_after(&mut second, &log, "icons loaded");
    let text = logs();
    assert_eq!(status.code(), Some(0), "{status}: {text}");
    assert!(
        text.contains("shutdown requested during start-up"),
        "{text}"
    );
    assert!(!text.contains("machine id leased"), "{text}");
    assert!(text.contains("stopped code=0"), "{text}");
    drop(first);
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_dir_all(&data);
}

/// Requests still being worked on when SIGTERM lands (password hashing on the worker pool, then
/// the journal) are answered before the sessions close: the drain waits for them.
/// A SIGTERM while the start retries a database that does not answer ends the retries: the
/// stop the operator asked for, logged as such, exit 0 (it waited out every retry, then exited 1).
#[test]
fn sigterm_while_storage_retries_its_connection_exits_0() {
    let data = std::env::temp_dir().join(format!("lattice-test-openstop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let log =
        std::env::temp_dir().join(format!("lattice-test-openstop-{}.log", std::process::id()));
    let url = format!(
        "mysql://lattice:lattice@127.0.0.1:{}/nothing_listens",
        free_port()
    );
    let listen = format!("127.0.0.1:{}", free_port());
    let data_dir = data.display().to_string();
    let mut child = spawn_logged(
        &[
            "run",
            "--net.listen",
            &listen,
            "--admin.listen",
            "",
            "--listeners.http",
            "",
            "--storage.data_dir",
            &data_dir,
            "--storage.backend",
            "mysql",
            "--storage.url",
            &url,
            // Without the stop, hours of retries.
            "--storage.retry_max",
            "10000",
        ],
        &log,
    );
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    let status = term_after(&mut child, &log, "storage connect failed; retrying");
    let text = logs();
    assert_eq!(status.code(), Some(0), "{status}: {text}");
    assert!(
        text.contains("shutdown requested during start-up"),
        "{text}"
    );
    assert!(text.contains("stop requested; no more retries"), "{text}");
    assert!(text.contains("stopped code=0"), "{text}");
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn sigterm_answers_requests_still_being_worked_on() {
    let mut l = Lattice::start(&["--account.hash_workers", "1"]);
    let mut c = l.connect();
    let mut burst = Vec::new();
    for i in 0..8u32 {
        burst.extend(encode(
            i + 1,
            &pb::Register {
                account: format!("drainer{i}"),
                password: "password1".into(),
                nickname: format!("Drainer{i}"),
            },
        ));
    }
    c.send_raw(&burst);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while l.metric_total("lattice_frames_in_total") < 9 {
        assert!(
            std::time::Instant::now() < deadline,
            "server did not read the burst"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    unsafe_free_kill(l.child.id(), "TERM");
    let mut ids = Vec::new();
    while let Some(f) = c.try_recv() {
        assert!(
            matches!(f.decode(), AnyMessage::RegisterOk(_)),
            "{:?}",
            f.decode()
        );
        ids.push(f.request_id);
    }
    ids.sort_unstable();
    assert_eq!(ids, (1..=8).collect::<Vec<_>>(), "every Register answered");
    assert_eq!(l.terminate(), 0, "{}", l.logs());
    // The release line gives the last timestamp as a plain number (not `Some(…)`).
    let logs = l.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("center: machine id released"))
        .unwrap_or_else(|| panic!("{logs}"));
    let ts = line
        .split("last_ts_ms=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(ts.parse::<u64>().is_ok_and(|t| t > 0), "{line}");
}

/// A listen address already in use is exit 1 with a line naming its key, and an ERROR log line.
#[test]
fn a_listen_address_in_use_names_its_key_and_exits_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().to_string();
    let free = || format!("127.0.0.1:{}", free_port());
    for key in ["net.listen", "listeners.http", "admin.listen"] {
        let data = std::env::temp_dir().join(format!(
            "lattice-inuse-{}-{}",
            std::process::id(),
            key.replace('.', "-")
        ));
        let _ = std::fs::remove_dir_all(&data);
        let (net, http, admin) = match key {
            "net.listen" => (busy.clone(), free(), String::new()),
            "listeners.http" => (free(), busy.clone(), String::new()),
            _ => (free(), free(), busy.clone()),
        };
        let out = lattice(&[
            "run",
            "--net.listen",
            &net,
            "--listeners.http",
            &http,
            "--admin.listen",
            &admin,
            "--storage.data_dir",
            data.to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{key}: {err}");
        assert!(
            err.contains(&format!("lattice: cannot listen on {key} {busy}")),
            "{key}: {err}"
        );
        // The log says it too (the console here; a log file in production).
        assert!(
            err.lines().any(|l| l.contains("ERROR")
                && l.contains("cannot start")
                && l.contains(&format!("cannot listen on {key} {busy}"))),
            "{key}: {err}"
        );
        let _ = std::fs::remove_dir_all(&data);
    }
}

/// One server per data directory: a second `lattice run` on it, and a `db-restore` into it, are
/// refused while the first runs, naming it; both work once it stopped.
#[test]
fn a_data_directory_in_use_refuses_a_second_server_and_a_restore() {
    let mut l = Lattice::start(&[]);
    let d = l.data.to_str().unwrap().to_string();
    let second = run_on(&d, &[]);
    assert_eq!(second.status.code(), Some(1));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("is in use by another lattice process"),
        "{err}"
    );
    assert!(err.contains(&format!("pid {}", l.child.id())), "{err}");
    // A real backup, then a restore while the server runs: refused, nothing restored.
    let backup = lattice(&["tool", "db-backup", "--storage.data_dir", &d]);
    assert!(backup.status.success(), "{backup:?}");
    let file = String::from_utf8_lossy(&backup.stdout).trim().to_string();
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "a backup holds every password hash");
    }
    let restore = lattice(&["tool", "db-restore", &file, "--storage.data_dir", &d]);
    assert_eq!(restore.status.code(), Some(1), "{restore:?}");
    let err = String::from_utf8_lossy(&restore.stderr);
    assert!(err.contains("stop the server first"), "{err}");
    assert_eq!(l.terminate(), 0);
    let restore = lattice(&["tool", "db-restore", &file, "--storage.data_dir", &d]);
    assert!(restore.status.success(), "{restore:?}");
}

/// The journal directory and the SQLite file can lie outside the data directory
/// (`storage.journal_dir`, `storage.url`): a second server with its own data directory that names
/// the first one's journal directory is refused, naming it, the holder and the key; one that names
/// its SQLite file shares it (as nodes share a MariaDB), and a restore into that file from another
/// data directory is refused while a server uses it.
#[test]
fn a_journal_directory_in_use_refuses_a_second_server_and_a_used_sqlite_file_a_restore() {
    let mut l = Lattice::start(&[]);
    let entry = |suffix: &str| {
        std::fs::read_dir(&l.data)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().ends_with(suffix))
            .unwrap_or_else(|| panic!("no *{suffix} in {}", l.data.display()))
            .display()
            .to_string()
    };
    let (journal, sqlite) = (entry(".journal"), entry(".sqlite3"));
    let own = std::env::temp_dir().join(format!("lattice-test-jlock-{}", std::process::id()));
    let out = run_on(
        &own.display().to_string(),
        &["--storage.journal_dir", &journal],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the journal directory"), "{err}");
    assert!(err.contains("storage.journal_dir"), "{err}");
    assert!(err.contains(&format!("pid {}", l.child.id())), "{err}");
    let backup = lattice(&[
        "tool",
        "db-backup",
        "--storage.data_dir",
        &l.data.display().to_string(),
    ]);
    assert!(backup.status.success(), "{backup:?}");
    let file = String::from_utf8_lossy(&backup.stdout).trim().to_string();
    let own_dir = own.display().to_string();
    let restore = lattice(&[
        "tool",
        "db-restore",
        &file,
        "--storage.data_dir",
        &own_dir,
        "--storage.url",
        &sqlite,
    ]);
    assert_eq!(restore.status.code(), Some(1), "{restore:?}");
    let err = String::from_utf8_lossy(&restore.stderr);
    assert!(err.contains("the SQLite database"), "{err}");
    assert!(err.contains("stop the server first"), "{err}");
    assert_eq!(l.terminate(), 0);
    let _ = std::fs::remove_dir_all(&own);
}

/// A second server on the first one's SQLite file under the first one's node name watches the
/// lease of that name, sees it renewed and refuses to start (it took the first one's machine id,
/// which then issued no more ids until it restarted); the first goes on issuing ids.
#[test]
fn a_second_server_under_a_running_servers_name_refuses_to_start() {
    let l = Lattice::start(&[]);
    let sqlite = std::fs::read_dir(&l.data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".sqlite3"))
        .expect("the SQLite file")
        .display()
        .to_string();
    let node = format!("test-{}-{}", std::process::id(), l.port);
    let own = std::env::temp_dir().join(format!("lattice-test-samename-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&own);
    let log = own.with_extension("log");
    let (listen, own_dir) = (
        format!("127.0.0.1:{}", free_port()),
        own.display().to_string(),
    );
    let mut second = spawn_logged(
        &[
            "run",
            "--net.listen",
            &listen,
            "--admin.listen",
            "",
            "--listeners.http",
            "",
            "--storage.data_dir",
            &own_dir,
            "--storage.url",
            &sqlite,
            "--center.node",
            &node,
        ],
        &log,
    );
    let status = exit_within_a_minute(&mut second, &log, "the second server started");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(text.contains("held by a running process named"), "{text}");
    assert!(text.contains("center.node"), "{text}");
    // The first still holds its id: a registration gets a user id.
    let mut c = l.connect();
    c.send(
        1,
        &pb::Register {
            account: "samename1".into(),
            password: "password1".into(),
            nickname: "n".into(),
        },
    );
    let got: AnyMessage = c.recv().decode();
    assert!(matches!(got, AnyMessage::RegisterOk(_)), "{got:?}");
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_dir_all(&own);
}

#[test]
fn json_log_format_writes_one_object_per_line() {
    let l = Lattice::start(&["--log.format", "json"]);
    let c = l.connect();
    drop(c.s.shutdown(std::net::Shutdown::Both));
    let logs = l.wait_log("session closed");
    let mut closed = 0;
    for line in logs.lines().filter(|x| !x.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if v["fields"]["message"] == "session closed" {
            assert_eq!(v["fields"]["reason"], "peer closed");
            closed += 1;
        }
    }
    assert_eq!(closed, 1);
}

#[test]
fn idle_sessions_time_out_and_busy_ones_survive() {
    let l = Lattice::start(&["--net.idle_timeout_ms", "400"]);
    let mut idle = l.connect();
    let mut busy = l.connect();
    let start = std::time::Instant::now();
    let mut rid = 10;
    // The busy session pings every 100 ms for 1.2 s (three timeouts' worth).
    while start.elapsed() < std::time::Duration::from_millis(1200) {
        busy.send(rid, &pb::Ping { payload: vec![] });
        assert!(matches!(busy.recv().decode(), AnyMessage::Pong(_)));
        rid += 1;
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(idle.closed_by_server(), "idle session must be closed");
    l.wait_log("reason=idle timeout");
    assert_eq!(l.metric_total("lattice_sessions_closed_idle_total"), 1);
    busy.send(rid, &pb::Ping { payload: vec![] });
    assert!(matches!(busy.recv().decode(), AnyMessage::Pong(_)));
}

/// Connections the acceptor handed to a shard that was busy when SIGTERM came (still in the
/// shard's accept ring when it began to drain) become sessions that close with the others: an
/// end of stream, not a reset, and a `server shutdown` line each. They were dropped unlogged and
/// reset (their unread Hello made the kernel answer the close with RST).
#[test]
fn connections_waiting_for_a_busy_shard_at_sigterm_close_with_the_others() {
    use std::io::{Read, Write};
    // One shard, each Ping holds it 100 ms: 30 Pings keep it busy for about 3 s.
    let mut l = Lattice::start(&["--runtime.shards", "1", "--echo.fault_spin_us", "100000"]);
    let mut busy = l.connect();
    let mut burst = Vec::new();
    for i in 0..30u32 {
        burst.extend(encode(
            i + 1,
            &pb::Ping {
                payload: vec![1; 8],
            },
        ));
    }
    busy.send_raw(&burst);
    l.wait_metric_total("lattice_frames_in_total", 2);
    let hello = encode(
        1,
        &pb::Hello {
            client_version: lattice_proto::version::PROTOCOL.to_string(),
            ..Default::default()
        },
    );
    let mut waiting: Vec<std::net::TcpStream> = (0..7)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", l.port)).unwrap();
            s.write_all(&hello).unwrap();
            s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
                .unwrap();
            s
        })
        .collect();
    // 1 + 7 accepted by the listener (the shard, spinning, has taken only the first).
    l.wait_metric_total("lattice_listener_accepted_total", 8);
    unsafe_free_kill(l.child.id(), "TERM");
    for (i, s) in waiting.iter_mut().enumerate() {
        // Whatever was answered before the drain (if the shard got to it), then an end of stream.
        let mut all = Vec::new();
        match s.read_to_end(&mut all) {
            Ok(_) => {}
            Err(e) => panic!("connection {i}: {e} (want an end of stream)\n{}", l.logs()),
        }
    }
    assert_eq!(l.terminate(), 0, "{}", l.logs());
    let logs = l.logs();
    let closes = logs.matches("reason=server shutdown").count();
    assert_eq!(closes, 8, "one close line per connection:\n{logs}");
}

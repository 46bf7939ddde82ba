//! Lua scripts in a running server: a script answers a request by message name; a runaway loop and
//! a memory hog answer INTERNAL and the shard goes on; `POST /lua/reload` swaps scripts (a broken
//! one changes nothing); `check_args` can refuse to start.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;

use common::*;
use lattice_proto::{error_code, pb, AnyMessage};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lattice-lua-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const SCRIPT: &str = r#"
lattice.on("Login", function(req, session)
  return "LoginOk", { user_id = 1000 + #req.account }
end)
lattice.on("Say", function(req)
  while true do end
end)
lattice.on("JoinRoom", function(req)
  local t = {}
  for i = 1, 1e9 do t[i] = string.rep("x", 100) .. i end
end)
"#;

/// The admin bearer token the tests start the server with (`/lua/` is behind it).
const TOKEN: &str = "lua-test-token";

fn post(port: u16, path: &str) -> (u16, String) {
    post_as(port, path, &format!("Authorization: Bearer {TOKEN}\r\n"))
}

fn post_as(port: u16, path: &str, auth: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(format!("POST {path} HTTP/1.1\r\n{auth}Content-Length: 0\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split(' ').nth(1).unwrap().parse().unwrap();
    (status, out.split_once("\r\n\r\n").unwrap().1.to_string())
}

fn login(c: &mut Client, rid: u32) -> AnyMessage {
    c.send(
        rid,
        &pb::Login {
            account: "alice".into(),
            password: "pw".into(),
        },
    );
    c.recv().decode()
}

#[test]
fn scripts_answer_survive_runaways_and_reload() {
    let d = dir("run");
    std::fs::write(d.join("10-game.lua"), SCRIPT).unwrap();
    let l = Lattice::start(&[
        "--lua.dir",
        d.to_str().unwrap(),
        "--lua.instruction_budget",
        "2000000",
        "--lua.memory_limit",
        "4194304",
        "--admin.token",
        TOKEN,
    ]);
    let mut c = l.connect();
    assert_eq!(
        login(&mut c, 1),
        AnyMessage::LoginOk(pb::LoginOk {
            user_id: 1005,
            ..Default::default()
        })
    );
    // A runaway loop: an error frame, the session and the shard go on.
    c.send(
        2,
        &pb::Say {
            room: String::new(),
            text: "hi".into(),
        },
    );
    let f = c.recv();
    assert_eq!(f.request_id, 2);
    expect_error(&f, error_code::INTERNAL);
    // A memory hog: the same.
    c.send(3, &pb::JoinRoom { room: "r".into() });
    expect_error(&c.recv(), error_code::INTERNAL);
    assert_eq!(
        login(&mut c, 4),
        AnyMessage::LoginOk(pb::LoginOk {
            user_id: 1005,
            ..Default::default()
        })
    );
    assert_eq!(l.metric_total("lattice_lua_errors_total"), 2);
    assert!(l.logs().contains(sandbox_budget()), "{}", l.logs());

    // Reload with a new script.
    std::fs::write(
        d.join("10-game.lua"),
        r#"lattice.on("Login", function(req) return "LoginOk", { user_id = 7 } end)"#,
    )
    .unwrap();
    // Behind the admin bearer token: refused without it, nothing reloaded.
    let (st, body) = post_as(l.admin, "/lua/reload", "");
    assert_eq!(st, 401, "{body}");
    assert_eq!(l.metric_total("lattice_lua_reloads_total"), 0);
    let (st, body) = post(l.admin, "/lua/reload");
    assert_eq!(st, 200, "{body}");
    assert!(
        body.contains("\"generation\":2") && body.contains("Login"),
        "{body}"
    );
    assert_eq!(
        login(&mut c, 5),
        AnyMessage::LoginOk(pb::LoginOk {
            user_id: 7,
            ..Default::default()
        })
    );
    // Say is no longer scripted: back to the chat component.
    assert_eq!(l.metric_total("lattice_lua_reloads_total"), 1);

    // Scripts whose check_args refuses the running server: 422, nothing changes (they would
    // have stopped the next start with exit code 2).
    std::fs::write(
        d.join("15-args.lua"),
        r#"function check_args(args, config) return false, "not on this server" end"#,
    )
    .unwrap();
    let (st, body) = post(l.admin, "/lua/reload");
    assert_eq!(st, 422, "{body}");
    assert!(body.contains("not on this server"), "{body}");
    std::fs::remove_file(d.join("15-args.lua")).unwrap();
    // A broken script: 422, nothing changes.
    std::fs::write(d.join("20-broken.lua"), "this is not lua (").unwrap();
    let (st, body) = post(l.admin, "/lua/reload");
    assert_eq!(st, 422, "{body}");
    assert!(body.contains("20-broken.lua"), "{body}");
    assert_eq!(
        login(&mut c, 6),
        AnyMessage::LoginOk(pb::LoginOk {
            user_id: 7,
            ..Default::default()
        })
    );
    drop(l);
    std::fs::remove_dir_all(&d).unwrap();
}

/// A script that catches the budget error (`pcall`, a coroutine) still fails its call, and a
/// top-level loop of caught errors fails the reload check instead of running on.
#[test]
fn a_caught_budget_error_still_fails_the_call() {
    let d = dir("caught");
    std::fs::write(
        d.join("10-game.lua"),
        r#"
lattice.on("Login", function(req)
  for i = 1, 500000 do pcall(function() while true do end end) end
  return "LoginOk", { user_id = 1 }
end)
lattice.on("Say", function(req)
  while true do coroutine.resume(coroutine.create(function() while true do end end)) end
end)
lattice.on("Ping", function(req) return "Pong", { payload = req.payload } end)
"#,
    )
    .unwrap();
    let l = Lattice::start(&[
        "--lua.dir",
        d.to_str().unwrap(),
        "--lua.instruction_budget",
        "2000000",
        "--admin.token",
        TOKEN,
    ]);
    let mut c = l.connect();
    c.send(
        1,
        &pb::Login {
            account: "a".into(),
            password: "b".into(),
        },
    );
    let f = c.recv();
    assert_eq!(f.request_id, 1);
    expect_error(&f, error_code::INTERNAL);
    c.send(
        2,
        &pb::Say {
            room: String::new(),
            text: "hi".into(),
        },
    );
    let f = c.recv();
    assert_eq!(f.request_id, 2);
    expect_error(&f, error_code::INTERNAL);
    assert_eq!(l.metric_total("lattice_lua_errors_total"), 2);
    c.send(3, &pb::Ping { payload: vec![9] });
    assert_eq!(
        c.recv().decode(),
        AnyMessage::Pong(pb::Pong { payload: vec![9] })
    );

    std::fs::write(
        d.join("20-top.lua"),
        "for i = 1, 100000 do pcall(function() while true do end end) end",
    )
    .unwrap();
    let (st, body) = post(l.admin, "/lua/reload");
    assert_eq!(st, 422, "{body}");
    assert!(
        body.contains("20-top.lua") && body.contains(sandbox_budget()),
        "{body}"
    );
    drop(l);
    std::fs::remove_dir_all(&d).unwrap();
}

/// A handler that returns nothing: a request with a request id is answered INTERNAL "script
/// returned no reply" (counted); one with request id 0 gets nothing.
#[test]
fn no_reply_to_a_request_id_is_an_error() {
    let d = dir("noreply");
    std::fs::write(
        d.join("10-game.lua"),
        r#"lattice.on("Ping", function(req)
             if #req.payload == 0 then return end
             return "Pong", { payload = req.payload }
           end)"#,
    )
    .unwrap();
    let l = Lattice::start(&["--lua.dir", d.to_str().unwrap()]);
    let mut c = l.connect();
    c.send(0, &pb::Ping { payload: vec![] });
    c.send(7, &pb::Ping { payload: vec![1] });
    // Nothing for request id 0: the next frame is the answer to 7.
    let f = c.recv();
    assert_eq!(f.request_id, 7);
    assert_eq!(f.decode(), AnyMessage::Pong(pb::Pong { payload: vec![1] }));
    assert_eq!(l.metric_total("lattice_lua_errors_total"), 0);
    c.send(8, &pb::Ping { payload: vec![] });
    let f = c.recv();
    assert_eq!(f.request_id, 8);
    let e = expect_error(&f, error_code::INTERNAL);
    assert_eq!(e.message, "script returned no reply");
    assert_eq!(l.metric_total("lattice_lua_errors_total"), 1);
    assert!(
        l.logs().contains("script returned no reply"),
        "{}",
        l.logs()
    );
    drop(l);
    std::fs::remove_dir_all(&d).unwrap();
}

/// A script reply over `net.max_frame` answers the waiting request `INTERNAL` "reply too large"
/// (it was logged and never answered); a handler for a server-to-client message is never called:
/// the client gets `NOT_ALLOWED` "not a request message" as without the script.
#[test]
fn a_reply_too_large_is_answered_and_a_server_message_stays_refused() {
    let d = dir("toolarge");
    std::fs::write(
        d.join("10-game.lua"),
        r#"lattice.on("Ping", function(req)
             local p, x = {}, 12345
             for i = 1, 4000 do x = (x * 1103515245 + 12345) % 2147483648; p[i] = (x // 65536) % 256 end
             return "Pong", { payload = p }
           end)
           lattice.on("Pong", function(req) return "Pong", {} end)"#,
    )
    .unwrap();
    let l = Lattice::start(&["--lua.dir", d.to_str().unwrap(), "--net.max_frame", "2048"]);
    let mut c = l.connect();
    c.send(7, &pb::Ping { payload: vec![] });
    let f = c.recv();
    assert_eq!(f.request_id, 7);
    let e = expect_error(&f, error_code::INTERNAL);
    assert_eq!(e.message, "reply too large");
    assert_eq!(l.metric_total("lattice_reply_too_large_total"), 1);
    // Request id 0 gets the error under id 0, as a component's reply too large does.
    c.send(0, &pb::Ping { payload: vec![] });
    let f = c.recv();
    assert_eq!(f.request_id, 0);
    let e = expect_error(&f, error_code::INTERNAL);
    assert_eq!(e.message, "reply too large");
    assert_eq!(l.metric_total("lattice_reply_too_large_total"), 2);
    c.send(8, &pb::Pong { payload: vec![] });
    let f = c.recv();
    assert_eq!(f.request_id, 8);
    let e = expect_error(&f, error_code::NOT_ALLOWED);
    assert_eq!(e.message, "not a request message");
    drop(l);
    std::fs::remove_dir_all(&d).unwrap();
}

fn sandbox_budget() -> &'static str {
    "instruction budget exceeded"
}

#[test]
fn check_args_can_refuse_to_start_and_bad_scripts_are_config_errors() {
    let d = dir("args");
    std::fs::write(
        d.join("args.lua"),
        r#"function check_args(args, config)
             if config.net.max_frame < 65536 then
               return false, "this game needs net.max_frame >= 65536"
             end
             return true
           end"#,
    )
    .unwrap();
    let run = |extra: &[&str]| {
        let mut a = vec![
            "run".to_string(),
            "--lua.dir".into(),
            d.display().to_string(),
            "--net.listen".into(),
            format!("127.0.0.1:{}", free_port()),
            "--admin.listen".into(),
            String::new(),
            // The HTTP listener's default port would clash between tests running in parallel.
            "--listeners.http".into(),
            String::new(),
            "--storage.data_dir".into(),
            d.join("data").display().to_string(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        Command::new(env!("CARGO_BIN_EXE_lattice"))
            .args(&a)
            .output()
            .unwrap()
    };
    // `lattice config` runs the same checks (it printed such a configuration and exited 0, and
    // the service then refused to start with exit code 2).
    let config = |extra: &[&str]| {
        let mut a = vec![
            "config".to_string(),
            "--lua.dir".into(),
            d.display().to_string(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        Command::new(env!("CARGO_BIN_EXE_lattice"))
            .args(&a)
            .output()
            .unwrap()
    };
    assert_eq!(config(&[]).status.code(), Some(0));
    for out in [
        run(&["--net.max_frame", "4096"]),
        config(&["--net.max_frame", "4096"]),
    ] {
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("this game needs net.max_frame >= 65536"),
            "{err}"
        );
        assert!(out.stdout.is_empty());
    }
    std::fs::write(
        d.join("bad.lua"),
        "lattice.on('NoSuchMessage', function() end)",
    )
    .unwrap();
    for out in [run(&[]), config(&[])] {
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("NoSuchMessage"), "{err}");
        // One line, naming the script and its line (the traceback went to stderr too; `run`
        // also logs its start there).
        let ours: Vec<&str> = err.lines().filter(|l| !l.contains(" INFO ")).collect();
        assert_eq!(ours.len(), 1, "{err}");
        assert!(ours[0].contains("bad.lua:1"), "{err}");
    }
    // A script that loads as shard 0 but not as shard 1 stops the start too (it ran shard 1
    // without scripts, each shard answering its own way).
    std::fs::remove_file(d.join("bad.lua")).unwrap();
    std::fs::write(
        d.join("shard.lua"),
        "if lattice.shard == 1 then error('not on shard 1') end",
    )
    .unwrap();
    // `config` first: without the check `run` would start and serve (see `exits_within`).
    let out = config(&["--runtime.shards", "2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        exits_within(&d, &["--runtime.shards", "2"]),
        "lattice run started"
    );
    assert!(
        err.contains("loaded as shard 1") && err.contains("not on shard 1"),
        "{err}"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

/// Whether `lattice run` with the scripts of `d` and `extra` exits with code 2 (a panic when it is
/// still running a minute later, i.e. it started).
fn exits_within(d: &std::path::Path, extra: &[&str]) -> bool {
    let (dir, data) = (
        d.display().to_string(),
        d.join("data-exits").display().to_string(),
    );
    let listen = format!("127.0.0.1:{}", free_port());
    let mut args = vec![
        "run",
        "--lua.dir",
        &dir,
        "--net.listen",
        &listen,
        "--admin.listen",
        "",
        "--listeners.http",
        "",
        "--storage.data_dir",
        &data,
    ];
    args.extend_from_slice(extra);
    let log = d.join("exits.log");
    let mut c = spawn_logged(&args, &log);
    exit_within_a_minute(&mut c, &log, "lattice run started").code() == Some(2)
}

/// A handler that never returns (a backtracking pattern, which no budget interrupts) holds its
/// shard: SIGTERM then waits `shutdown.stop_timeout_ms`, logs the shard, still flushes storage
/// and exits 1 instead of hanging until a SIGKILL.
#[test]
fn a_shard_stuck_in_a_handler_does_not_hold_the_shutdown() {
    let d = dir("stuck");
    std::fs::write(
        d.join("10-game.lua"),
        r#"lattice.on("Ping", function(req)
             string.find(string.rep("a", 3000), "a-a-a-a-b")
             return "Pong", { payload = req.payload }
           end)"#,
    )
    .unwrap();
    let mut l = Lattice::start(&[
        "--lua.dir",
        d.to_str().unwrap(),
        "--runtime.shards",
        "1",
        "--shutdown.stop_timeout_ms",
        "1500",
        "--shutdown.drain_timeout_ms",
        "300",
    ]);
    let mut c = l.connect();
    c.send(1, &pb::Ping { payload: vec![1] });
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(l.terminate(), 1, "{}", l.logs());
    let logs = l.logs();
    assert!(
        logs.contains("shards did not stop within 1500 ms") && logs.contains("shards=0"),
        "{logs}"
    );
    assert!(logs.contains("storage flushed and closed"), "{logs}");
    drop(l);
    std::fs::remove_dir_all(&d).unwrap();
}

/// A script's `error()` carrying the client's text stays on one log line (its line breaks were
/// written raw: a nickname forged an INFO line), and an `Error` a script returns without an
/// opcode names the request's (it carried 0).
#[test]
fn script_errors_stay_on_one_log_line_and_errors_name_the_request() {
    let d = dir("errors");
    std::fs::write(
        d.join("10-errors.lua"),
        r#"
lattice.on("ChangeNickname", function(req)
  error("bad nickname: " .. req.nickname)
end)
lattice.on("Ping", function(req)
  return "Error", { code = 7, message = "not your turn" }
end)
"#,
    )
    .unwrap();
    let l = Lattice::start(&["--lua.dir", d.to_str().unwrap()]);
    let mut c = l.connect();
    c.send(
        2,
        &pb::ChangeNickname {
            nickname: "x\n2026-12-02T00:00:00.000000Z  INFO forged line".into(),
        },
    );
    let e = expect_error(&c.recv(), error_code::INTERNAL);
    assert_eq!(e.message, "script error");
    let logs = l.wait_log("lua: script failed");
    let line = logs
        .lines()
        .find(|l| l.contains("lua: script failed"))
        .unwrap();
    assert!(line.contains("bad nickname: x\\u{a}2026-12-02"), "{line}");
    assert!(
        !logs.lines().any(|l| l.starts_with("2026-12-02T00:00:00")),
        "{logs}"
    );
    // The traceback stays on the same line.
    assert!(
        !logs.lines().any(|l| l.starts_with("stack traceback")),
        "{logs}"
    );
    c.send(3, &pb::Ping { payload: vec![] });
    let f = c.recv();
    assert_eq!(f.request_id, 3);
    let e = expect_error(&f, 7);
    assert_eq!(e.message, "not your turn");
    assert_eq!(e.opcode, u32::from(lattice_proto::opcode::PING));
}

/// Script failures a warning window still held back at the stop are summarised (they were in no
/// log line: the summary waited for the next failure).
#[test]
fn script_failures_held_back_at_the_stop_are_summarised() {
    let d = dir("held");
    std::fs::write(
        d.join("10-fail.lua"),
        "lattice.on(\"Ping\", function() error(\"no\") end)\n",
    )
    .unwrap();
    let mut l = Lattice::start(&[
        "--lua.dir",
        d.to_str().unwrap(),
        "--runtime.shards",
        "1",
        "--log.warn_burst",
        "1",
        "--log.warn_window_ms",
        "3600000",
    ]);
    let mut c = l.connect();
    for i in 0..5u32 {
        c.send(i + 1, &pb::Ping { payload: vec![] });
        expect_error(&c.recv(), error_code::INTERNAL);
    }
    assert_eq!(l.terminate(), 0, "{}", l.logs());
    let logs = l.logs();
    assert_eq!(logs.matches("lua: script failed").count(), 1, "{logs}");
    assert!(
        logs.lines()
            .any(|x| x.contains("reason=\"lua_script_failed\"") && x.contains("suppressed=4")),
        "{logs}"
    );
}

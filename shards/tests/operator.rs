//! Operator control against a real `lattice` process: the admin API behind its bearer token,
//! session listing, mass close, IP rules (from config and live; peers 127.0.0.2, 127.0.0.3, ::1),
//! rate limits, live reload, and the `lattice admin` CLI.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::operator::tcp_from;
use common::*;
use lattice_proto::{error_code, pb, AnyMessage};
use serde_json::{json, Value};

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ping(c: &mut Client, rid: u32) -> AnyMessage {
    c.send(rid, &pb::Ping { payload: vec![] });
    c.recv().decode()
}

#[test]
fn every_admin_route_is_behind_the_bearer_token() {
    let l = Lattice::start(&[]);
    let token_file = l.data.join("admin.token");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the generated token file is private");
    let logs = l.wait_log("admin token: generated (mode 0600)");
    assert!(
        logs.contains(&token_file.display().to_string()),
        "its path is logged"
    );
    let token = l.token();
    assert_eq!(token.len(), 64);
    for (method, path) in [
        ("GET", "/admin/sessions"),
        ("POST", "/admin/close"),
        ("GET", "/admin/ip-rules"),
        ("PUT", "/admin/ip-rules"),
        ("POST", "/admin/reload"),
        ("GET", "/admin/no-such-route"),
        ("DELETE", "/admin/sessions"),
    ] {
        let (status, body) = l.admin_raw(method, path, None, "");
        assert_eq!(status, 401, "{method} {path} without a token: {body}");
        let (status, _) = l.admin_raw(method, path, Some("wrong"), "");
        assert_eq!(status, 401, "{method} {path} with a wrong token");
        let mut almost = token.clone();
        almost.replace_range(63.., if token.ends_with('0') { "1" } else { "0" });
        assert_eq!(
            l.admin_raw(method, path, Some(&almost), "").0,
            401,
            "one character off"
        );
    }
    assert_eq!(
        l.admin_raw("GET", "/admin/sessions", Some(&token), "").0,
        200
    );
    assert_eq!(
        l.admin_raw("GET", "/admin/no-such-route", Some(&token), "")
            .0,
        404
    );
    assert_eq!(
        l.admin_raw("GET", "/metrics", None, "").0,
        200,
        "/metrics stays open"
    );
    drop(l);

    // A configured token is used as is; the file is neither needed nor written.
    let l = Lattice::start(&["--admin.token", "s3cr3t-token"]);
    assert_eq!(
        l.admin_raw("GET", "/admin/ip-rules", Some("s3cr3t-token"), "")
            .0,
        200
    );
    assert_eq!(
        l.admin_raw("GET", "/admin/ip-rules", Some("s3cr3t-toke"), "")
            .0,
        401
    );
    assert!(!l.data.join("admin.token").exists());
    l.wait_log("admin token: from admin.token");
}

#[test]
fn sessions_are_counted_per_shard_and_listed_with_filters() {
    let l = Lattice::start(&[]);
    let clients: Vec<Client> = (0..4).map(|_| l.connect()).collect();
    let mut resumable = common::seq::SeqClient::connect(l.port);
    resumable.cut();
    l.wait_log("session detached; resumable");
    let v = l.admin_ok("GET", "/admin/sessions", "");
    assert_eq!(v["open"], 5);
    assert_eq!(v["detached"], 1);
    assert_eq!(v["shards"].as_array().unwrap().len(), 2);
    assert!(v["errors"].as_array().unwrap().is_empty());
    let per_shard: Vec<u64> = v["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["open"].as_u64().unwrap())
        .collect();
    assert_eq!(per_shard.iter().sum::<u64>(), 5);
    let listed: Vec<&Value> = v["shards"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["sessions"].as_array().unwrap())
        .collect();
    let ids: Vec<String> = listed
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    for c in &clients {
        assert!(
            ids.contains(&c.session_id.to_string()),
            "{} listed",
            c.session_id
        );
    }
    let d = l.admin_ok("GET", "/admin/sessions?state=detached", "");
    assert_eq!(d["matched"], 1);
    let s = d["shards"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["sessions"].as_array().unwrap().clone())
        .next()
        .unwrap();
    assert_eq!(s["id"], resumable.session_id.to_string());
    assert_eq!(s["resumable"], true);
    assert_eq!(s["detached_reason"], "peer closed");
    assert_eq!(
        l.admin_ok("GET", "/admin/sessions?shard=1", "")["shards"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        l.admin_ok("GET", "/admin/sessions?peer=127.0.0.0%2F8", "")["matched"],
        5
    );
    assert_eq!(
        l.admin_ok("GET", "/admin/sessions?peer=10.0.0.0%2F8", "")["matched"],
        0
    );
    let one = l.admin_ok("GET", "/admin/sessions?limit=1", "");
    for s in one["shards"].as_array().unwrap() {
        assert!(s["sessions"].as_array().unwrap().len() <= 1);
    }
    assert_eq!(one["matched"], 5, "counts cover every session");
    for bad in [
        "shard=9",
        "peer=10.0.0.1%2F8",
        "state=sleepy",
        "limit=99999999",
        "peer=%zz",
        "limt=5",
        "bogus=1",
    ] {
        let (status, v) = l.admin("GET", &format!("/admin/sessions?{bad}"), "");
        assert_eq!(status, 400, "{bad}: {v}");
        assert!(v["error"].is_string());
    }
}

#[test]
fn close_by_ids_by_shard_by_cidr_and_all() {
    let l = Lattice::start(&[]);
    let mut cs: Vec<Client> = (0..8).map(|_| l.connect()).collect();
    let shard_of = |c: &Client| (c.session_id >> 56) as usize;
    // By ids.
    let ids = json!({ "sessions": [cs[0].session_id.to_string(), cs[1].session_id], "reason": "cheating" });
    let v = l.admin_ok("POST", "/admin/close", &ids.to_string());
    assert_eq!(v["closed"], 2);
    assert!(cs[0].closed_by_server() && cs[1].closed_by_server());
    l.wait_log("closed by operator: cheating");
    assert!(
        matches!(ping(&mut cs[2], 1), AnyMessage::Pong(_)),
        "others untouched"
    );
    // By shard.
    let v = l.admin_ok(
        "POST",
        "/admin/close",
        r#"{"shard": 1, "reason": "drain shard 1"}"#,
    );
    let on_one = cs[2..].iter().filter(|c| shard_of(c) == 1).count();
    assert_eq!(v["closed"], on_one as u64);
    l.wait_log("scope=shard 1");
    // Unknown fields, an empty id list and a field twice are refused, not ignored.
    for bad in [
        r#"{"shard": 1, "bogus": 1}"#,
        r#"{"sessions": []}"#,
        r#"{"shard": 0, "reason": "x", "reason": "y"}"#,
    ] {
        let (status, v) = l.admin("POST", "/admin/close", bad);
        assert_eq!(status, 400, "{bad}: {v}");
    }
    let (_, v) = l.admin("POST", "/admin/close", r#"{"all": false, "all": true}"#);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("duplicate key \"all\""),
        "{v}"
    );
    // Two Authorization headers, the right token first: refused.
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", l.admin)).unwrap();
        write!(
            s,
            "GET /admin/ip-rules HTTP/1.1\r\nAuthorization: Bearer {}\r\nAuthorization: Bearer nope\r\n\r\n",
            l.token()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 401"), "{out}");
    }
    // A reason is logged: no control characters (a line break would forge a log line).
    let (status, _) = l.admin(
        "POST",
        "/admin/close",
        r#"{"shard": 1, "reason": "x\n2026-12-01T00:00:00Z INFO forged"}"#,
    );
    assert_eq!(status, 400);
    for c in cs[2..].iter_mut() {
        if shard_of(c) == 1 {
            assert!(c.closed_by_server());
        } else {
            assert!(matches!(ping(c, 2), AnyMessage::Pong(_)));
        }
    }
    // By CIDR, then all (nothing left).
    let v = l.admin_ok("POST", "/admin/close", r#"{"cidr": ["127.0.0.0/8"]}"#);
    assert_eq!(v["closed"], (6 - on_one) as u64);
    let logs = l.wait_log("in 127.0.0.0/8)");
    assert!(logs.contains("closing session on operator request"));
    let _late = l.connect();
    assert_eq!(
        l.admin_ok("POST", "/admin/close", r#"{"all": true}"#)["closed"],
        1
    );
    wait_until("the admin closes counted", || {
        l.metric_total("lattice_sessions_closed_admin_total") == 9
    });
    for bad in [
        r#"{}"#,
        r#"{"all": true, "shard": 0}"#,
        r#"{"all": false}"#,
        r#"{"shard": 7}"#,
        r#"{"sessions": ["x"]}"#,
        r#"{"cidr": ["10.0.0.1/8"]}"#,
        r#"{"all": true, "reason": 5}"#,
        "not json",
    ] {
        let (status, v) = l.admin("POST", "/admin/close", bad);
        assert_eq!(status, 400, "{bad}: {v}");
    }
}

#[test]
fn ip_rules_from_config_and_live_with_v4_and_v6_peers() {
    let l = Lattice::start(&[
        "--net.listen",
        &format!("[::]:{}", free_port_v6()),
        "--access.deny",
        r#"["127.0.0.3"]"#,
    ]);
    let port = listen_port(&l);
    let mut two = Client::raw_from("127.0.0.2", port);
    assert!(two.hello(), "127.0.0.2 is admitted");
    let mut three = Client::raw_from("127.0.0.3", port);
    assert!(!three.hello(), "127.0.0.3 is denied by [access]");
    let mut six = Client::raw_from("::1", port);
    assert!(six.hello(), "::1 is admitted");
    wait_until("the refusal counted", || {
        l.metric("lattice_connections_denied_total") == 1
    });
    assert_eq!(
        l.admin_ok("GET", "/admin/ip-rules", "")["deny"],
        json!(["127.0.0.3/32"])
    );

    // Live: deny ::1 and close what matches; 127.0.0.3 is allowed again (the list is replaced).
    let v = l.admin_ok(
        "PUT",
        "/admin/ip-rules",
        r#"{"deny": ["::1"], "close_matching": true}"#,
    );
    assert_eq!(v["closed"], 1);
    assert_eq!(v["rules"]["deny"], json!(["::1/128"]));
    assert!(six.closed_by_server(), "the ::1 session was closed");
    l.wait_log("ip rule: ::1/128 is denied");
    assert!(matches!(ping(&mut two, 3), AnyMessage::Pong(_)));
    assert!(
        !Client::raw_from("::1", port).hello(),
        "new ::1 connections are refused"
    );
    assert!(Client::raw_from("127.0.0.3", port).hello());

    // Allow-only: only 127.0.0.2 gets in; without close_matching the others' sessions stay.
    let mut three = Client::raw_from("127.0.0.3", port);
    assert!(three.hello());
    l.admin_ok(
        "PUT",
        "/admin/ip-rules",
        r#"{"allow": ["127.0.0.2"], "allow_only": true}"#,
    );
    assert!(Client::raw_from("127.0.0.2", port).hello());
    assert!(!Client::raw_from("127.0.0.3", port).hello());
    assert!(!Client::raw_from("::1", port).hello());
    assert!(
        matches!(ping(&mut three, 4), AnyMessage::Pong(_)),
        "existing sessions stay"
    );

    // A bad block is refused and nothing changes.
    let (status, v) = l.admin("PUT", "/admin/ip-rules", r#"{"deny": ["127.0.0.3/33"]}"#);
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains("127.0.0.3/33"), "{v}");
    let (status, _) = l.admin("PUT", "/admin/ip-rules", r#"{"deny": "127.0.0.3"}"#);
    assert_eq!(status, 400);
    let (status, _) = l.admin("PUT", "/admin/ip-rules", r#"{"denny": []}"#);
    assert_eq!(status, 400, "unknown fields are refused");
    for not_an_object in ["", "  ", "[1]", "null", "\"hello\""] {
        let (status, _) = l.admin("PUT", "/admin/ip-rules", not_an_object);
        assert_eq!(status, 400, "{not_an_object:?} must not clear the rules");
    }
    assert_eq!(l.admin_ok("GET", "/admin/ip-rules", "")["allow_only"], true);
}

#[test]
fn bad_access_config_is_refused_at_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_lattice"))
        .args(["config", "--access.allow", r#"["banana"]"#])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("`access.allow`") && e.contains("banana"), "{e}");
}

#[test]
fn session_rate_limits_answer_rate_limited_or_close_and_count() {
    // Policy error: the excess is answered, the session stays.
    // Rates of one unit per second: no refill can happen between a burst's frames.
    let l = Lattice::start(&[
        "--limits.session_msgs_per_s",
        "1",
        "--limits.session_msgs_burst",
        "5",
    ]);
    let mut c = l.connect();
    let mut burst = Vec::new();
    for rid in 10..30 {
        burst.extend(encode(rid, &pb::Ping { payload: vec![] }));
    }
    c.send_raw(&burst);
    let (mut pongs, mut limited) = (0, 0);
    for rid in 10..30 {
        let f = c.recv();
        assert_eq!(f.request_id, rid, "answers keep request order");
        match f.decode() {
            AnyMessage::Pong(_) => pongs += 1,
            AnyMessage::Error(e) => {
                assert_eq!(e.code, error_code::RATE_LIMITED, "{e:?}");
                assert_eq!(e.opcode, 4);
                limited += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    // The Hello took one unit of the burst.
    assert_eq!((pongs, limited), (4, 16));
    wait_until("the hits counted", || {
        l.metric_total("lattice_rate_limited_msgs_total") == 16
    });
    std::thread::sleep(Duration::from_millis(1100));
    assert!(
        matches!(ping(&mut c, 40), AnyMessage::Pong(_)),
        "the bucket refills"
    );
    drop(l);

    // Policy close: the third violation closes the session.
    let l = Lattice::start(&[
        "--limits.session_msgs_per_s",
        "1",
        "--limits.session_msgs_burst",
        "3",
        "--limits.session_msgs_policy",
        "close",
        "--limits.session_close_after",
        "3",
    ]);
    let mut c = l.connect();
    c.send_raw(&burst);
    let mut answers = Vec::new();
    while let Some(f) = c.try_recv() {
        answers.push(f.decode());
    }
    assert_eq!(
        answers.len(),
        5,
        "2 Pongs, 3 refusals, then closed: {answers:?}"
    );
    assert!(answers[2..]
        .iter()
        .all(|a| matches!(a, AnyMessage::Error(e) if e.code == error_code::RATE_LIMITED)));
    l.wait_log("reason=rate limited");
    wait_until("the close counted", || {
        l.metric_total("lattice_sessions_closed_rate_limited_total") == 1
    });
    drop(l);

    // Bytes per second: a big frame empties the bucket.
    let l = Lattice::start(&[
        "--net.max_frame",
        "4096",
        "--limits.session_bytes_per_s",
        "1000",
        "--limits.session_bytes_burst",
        "4096",
    ]);
    let mut c = l.connect();
    c.send(
        1,
        &pb::Ping {
            payload: vec![0; 3000],
        },
    );
    assert_eq!(
        c.recv().opcode,
        lattice_proto::opcode::PONG,
        "(compressed) Pong"
    );
    c.send(
        2,
        &pb::Ping {
            payload: vec![0; 3000],
        },
    );
    let e = expect_error(&c.recv(), error_code::RATE_LIMITED);
    assert!(e.message.contains("bytes per second"), "{e:?}");
    wait_until("the hit counted", || {
        l.metric_total("lattice_rate_limited_bytes_total") == 1
    });
}

#[test]
fn new_connections_per_address_are_limited() {
    // A linger long enough that no refused connection below is let go before the last arrives.
    let l = Lattice::start(&[
        "--limits.ip_conns_per_s",
        "1",
        "--limits.ip_conns_burst",
        "3",
        "--session.close_linger_ms",
        "60000",
    ]);
    for _ in 0..3 {
        let mut c = Client::raw_from("127.0.0.2", l.port);
        assert!(c.hello());
    }
    // The fourth gets one Error{RATE_LIMITED} frame, then the server closes it.
    let mut c = Client::raw_from("127.0.0.2", l.port);
    let f = c.try_recv().expect("a refusal frame");
    let e = expect_error(&f, error_code::RATE_LIMITED);
    assert!(e.message.contains("ip_conns_per_s"), "{e:?}");
    assert!(c.closed_by_server());
    drop(c); // (its lingering close ends: the linger queue below starts empty)
             // Another address has its own bucket.
    assert!(Client::raw_from("127.0.0.3", l.port).hello());
    wait_until("the refusal counted", || {
        l.metric("lattice_connections_ip_limited_total") == 1
    });
    // A refused client that already sent its Hello (as every client does at once) still gets the
    // frame and a clean end of stream: the server reads and drops what it sent before closing,
    // so no reset can destroy the answer.
    for _ in 0..3 {
        let mut s = tcp_from("127.0.0.2", l.port).unwrap();
        s.write_all(&encode(
            1,
            &pb::Hello {
                client_version: lattice_proto::version::PROTOCOL.to_string(),
                ..Default::default()
            },
        ))
        .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let mut got = Vec::new();
        let mut tmp = [0u8; 4096];
        let end = loop {
            match s.read(&mut tmp) {
                Ok(0) => break Ok(()),
                Ok(n) => got.extend_from_slice(&tmp[..n]),
                Err(e) => break Err(e),
            }
        };
        assert!(end.is_ok(), "reset instead of a clean close: {end:?}");
        let f = take_frame(&mut got).expect("the refusal frame");
        expect_error(&f, error_code::RATE_LIMITED);
    }
    assert!(l.metric("lattice_ip_table_entries") >= 2);
    // At most 256 refused connections linger per listener; past that they close at once, counted.
    assert_eq!(l.metric("lattice_connections_linger_full_total"), 0);
    let held: Vec<_> = (0..300)
        .filter_map(|_| tcp_from("127.0.0.4", l.port).ok())
        .collect();
    assert_eq!(held.len(), 300);
    wait_until("the full linger queue counted", || {
        l.metric("lattice_connections_linger_full_total") >= 41
    });
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(
        l.metric("lattice_connections_linger_full_total"),
        41,
        "3 admitted (the burst), 256 of the 297 refused linger (the one being drained included)"
    );
    drop(held);
    drop(l);

    // Policy close: no frame at all.
    let l = Lattice::start(&[
        "--limits.ip_conns_per_s",
        "1",
        "--limits.ip_conns_burst",
        "1",
        "--limits.ip_policy",
        "close",
    ]);
    assert!(Client::raw_from("127.0.0.2", l.port).hello());
    let mut c = Client::raw_from("127.0.0.2", l.port);
    assert!(c.try_recv().is_none(), "closed without a frame");
}

#[test]
fn unknown_or_repeated_query_parameters_and_invisible_reason_characters_are_400() {
    let l = Lattice::start(&[]);
    for (method, path) in [
        ("GET", "/admin/sessions?shard=0&shard=1"),
        ("GET", "/admin/sessions?limt=5"),
        ("POST", "/admin/reload?foo=1"),
        ("POST", "/admin/reload?close_matching=1&close_matching=0"),
        ("GET", "/debug/pprof/profile?foo=1"),
        ("GET", "/debug/pprof/profile?seconds=1&seconds=2"),
        ("GET", "/admin/ip-rules?x=1"),
        ("GET", "/admin/cluster?x"),
        ("POST", "/lua/reload?x=1"),
    ] {
        let (status, v) = l.admin(method, path, "");
        assert_eq!(status, 400, "{method} {path}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains("query parameter"),
            "{v}"
        );
    }
    assert_eq!(l.admin("GET", "/admin/sessions?state=", "").0, 400);
    let shards = l.admin_ok("GET", "/admin/sessions", "")["shards"]
        .as_array()
        .map_or(0, Vec::len);
    let (status, v) = l.admin("GET", &format!("/admin/sessions?shard={shards}"), "");
    assert_eq!(status, 400);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with(&format!("shard must be 0..={}", shards - 1)),
        "{v}"
    );
    assert_eq!(l.admin("GET", "/admin/nosuch?x=1", "").0, 404);
    assert_eq!(
        l.admin("GET", "/admin/sessions?shard=0&state=all", "").0,
        200
    );
    // JSON escapes: the body carries the characters themselves once parsed.
    // Format characters (a bidirectional mark, a tag character) and fillers shown as nothing.
    for reason in [
        r"a\u2028b",
        r"a\u2029",
        r"\u200b",
        r"a\u202eb",
        r"\ufeffa",
        r"a\u061cb",
        r"a\udb40\udc41b",
        r"a\u3164b",
        r"a\ufe0f",
    ] {
        let body = format!(r#"{{"all": true, "reason": "{reason}"}}"#);
        let (status, v) = l.admin("POST", "/admin/close", &body);
        assert_eq!(status, 400, "{body}: {v}");
    }
    assert_eq!(
        l.admin_ok(
            "POST",
            "/admin/close",
            r#"{"all": true, "reason": "maintenance, é ✓"}"#
        )["closed"],
        0
    );
}

#[test]
fn a_large_ip_rules_change_is_logged_as_counts_and_a_few_blocks() {
    let l = Lattice::start(&[]);
    let deny: Vec<String> = (0..2000)
        .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
        .collect();
    let v = l.admin_ok(
        "PUT",
        "/admin/ip-rules",
        &json!({ "deny": deny }).to_string(),
    );
    assert_eq!(v["rules"]["deny"].as_array().unwrap().len(), 2000);
    let logs = l.wait_log("admin: IP rules replaced");
    let line = logs
        .lines()
        .find(|x| x.contains("admin: IP rules replaced"))
        .unwrap();
    assert!(line.len() < 1000, "{} bytes: {line}", line.len());
    assert!(
        line.contains("deny_count=2000")
            && line.contains("10.0.0.0/24, 10.0.1.0/24")
            && line.contains("1992 more"),
        "{line}"
    );
    // A close by many ids is logged the same way.
    let ids: Vec<String> = (0..5000).map(|i| i.to_string()).collect();
    l.admin_ok(
        "POST",
        "/admin/close",
        &json!({ "sessions": ids }).to_string(),
    );
    let logs = l.wait_log("admin: close sessions");
    let line = logs
        .lines()
        .find(|x| x.contains("admin: close sessions"))
        .unwrap();
    assert!(line.len() < 1000, "{} bytes: {line}", line.len());
    assert!(line.contains("4992 more"), "{line}");
}

#[test]
fn reload_applies_limits_and_access_live_and_names_what_needs_a_restart() {
    let dir = std::env::temp_dir().join(format!("lattice-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("lattice.toml");
    std::fs::write(&file, "[limits]\nsession_msgs_per_s = 0\n").unwrap();
    let l = Lattice::start(&["--config", file.to_str().unwrap()]);
    let mut c = l.connect();
    let v = l.admin_ok("POST", "/admin/reload", "");
    assert_eq!(v["applied"], json!([]), "nothing changed");
    std::fs::write(
        &file,
        "[limits]\nsession_msgs_per_s = 2\nsession_msgs_burst = 2\n[access]\ndeny = [\"127.0.0.3\"]\n[net]\nmax_frame = 65536\n",
    )
    .unwrap();
    let v = l.admin_ok("POST", "/admin/reload", "");
    assert_eq!(
        v["applied"],
        json!([
            "access.deny",
            "limits.session_msgs_burst",
            "limits.session_msgs_per_s"
        ])
    );
    assert_eq!(v["restart_required"], json!(["net.max_frame"]));
    // The existing session now runs with the new limit. The reload reaches each shard over the
    // control lane after the answer, so a burst sent at once may still meet the old limit: send
    // bursts (bounded) until one is limited, then check that burst.
    let mut limited = 0;
    for round in 0..50u32 {
        let mut burst = Vec::new();
        for rid in 1..=6 {
            burst.extend(encode(round * 10 + rid, &pb::Ping { payload: vec![] }));
        }
        c.send_raw(&burst);
        limited = (1..=6)
            .filter(|_| matches!(c.recv().decode(), AnyMessage::Error(e) if e.code == error_code::RATE_LIMITED))
            .count();
        if limited > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        limited >= 4,
        "{limited} of 6 refused at 2/s with a burst of 2"
    );
    assert!(
        !Client::raw_from("127.0.0.3", l.port).hello(),
        "the reloaded deny list applies"
    );
    l.wait_log("admin: reload left keys that need a restart");
    // A file that does not load changes nothing.
    std::fs::write(&file, "[limits]\nsession_msgs_per_s = \"lots\"\n").unwrap();
    let (status, v) = l.admin("POST", "/admin/reload", "");
    assert_eq!(status, 400);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("limits.session_msgs_per_s"),
        "{v}"
    );
    assert!(
        !Client::raw_from("127.0.0.3", l.port).hello(),
        "still denied"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_admin_cli_calls_the_api() {
    let l = Lattice::start(&[]);
    let c = l.connect();
    let token_file = l.data.join("admin.token");
    let addr = format!("127.0.0.1:{}", l.admin);
    let admin = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lattice"));
        cmd.args([
            "admin",
            "--addr",
            &addr,
            "--token-file",
            token_file.to_str().unwrap(),
        ]);
        cmd.args(args);
        cmd.output().unwrap()
    };
    let out = admin(&["sessions"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["open"], 1);
    let out = admin(&["ip-rules", "set", "--deny", "10.0.0.0/8", "--deny", "::1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = admin(&["ip-rules", "get"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["deny"], json!(["10.0.0.0/8", "::1/128"]));
    let out = admin(&[
        "close",
        "--session",
        &c.session_id.to_string(),
        "--reason",
        "from the CLI",
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["closed"], 1);
    l.wait_log("closed by operator: from the CLI");
    let out = admin(&["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A wrong token: exit 1 and the 401 on stderr.
    let out = Command::new(env!("CARGO_BIN_EXE_lattice"))
        .args(["admin", "--addr", &addr, "--token", "nope", "sessions"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HTTP 401"));
    // Bad usage: exit 2.
    let out = admin(&["close"]);
    assert_eq!(out.status.code(), Some(2));
    // An address that is not HOST:PORT is bad usage too: exit 2, naming --addr.
    let out = Command::new(env!("CARGO_BIN_EXE_lattice"))
        .args(["admin", "--addr", "nonsense", "--token", "x", "sessions"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--addr"));
    // A token no request could carry (CR LF would start a header line of its own, a space
    // splits it) is bad usage, refused before anything is sent.
    for bad in ["abc\r\nX-Injected: yes", "a b", ""] {
        let out = Command::new(env!("CARGO_BIN_EXE_lattice"))
            .args(["admin", "--addr", &addr, "--token", bad, "sessions"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--token must be visible ASCII"),
            "{bad:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A port free on the IPv6 loopback too.
fn free_port_v6() -> u16 {
    std::net::TcpListener::bind("[::]:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The binary client port the server really listens on (from its log).
fn listen_port(l: &Lattice) -> u16 {
    const LINE: &str = "listening listener=binary addr=";
    let logs = l.wait_log(LINE);
    let at = logs.find(LINE).unwrap() + LINE.len();
    let addr: String = logs[at..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    let port = addr.rsplit(':').next().unwrap().parse().unwrap();
    // Reachable from both families.
    assert!(tcp_from("::1", port).is_ok());
    port
}

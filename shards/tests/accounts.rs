//! Accounts over the binary protocol against a running server: registration, password and token
//! logins, the newest login kicking the older session, profile changes, password changes revoking
//! tokens, the limits' error codes, lock-outs per account and per address, the hash pool's BUSY,
//! and secrets never reaching the log.

mod acct;
mod common;

use acct::*;
use common::*;
use lattice_proto::{error_code as ec, pb, AnyMessage};

#[test]
fn register_login_profile_token_login_kick_and_logout() {
    let l = Lattice::start(&[]);
    let mut a = l.connect();
    let id = match ask(&mut a, 1, &register("Ann_1", "correct horse", "Ann")) {
        AnyMessage::RegisterOk(r) => r.user_id,
        other => panic!("{other:?}"),
    };
    assert!(id > 0 && id < 1 << 63);
    // Names are unique case-insensitively.
    assert_eq!(
        code(&ask(&mut a, 2, &register("ann_1", "another one", "B"))),
        ec::ACCOUNT_EXISTS
    );
    // Wrong password and unknown account answer the same code.
    assert_eq!(
        code(&ask(&mut a, 3, &login("ann_1", "wrong horse"))),
        ec::WRONG_CREDENTIALS
    );
    assert_eq!(
        code(&ask(&mut a, 4, &login("nobody", "wrong horse"))),
        ec::WRONG_CREDENTIALS
    );
    // Logged-out requests are refused.
    let nick = pb::ChangeNickname {
        nickname: "Annie".into(),
    };
    assert_eq!(code(&ask(&mut a, 5, &nick)), ec::NOT_LOGGED_IN);
    let ok = match ask(&mut a, 6, &login("ANN_1", "correct horse")) {
        AnyMessage::LoginOk(ok) => ok,
        other => panic!("{other:?}"),
    };
    assert_eq!(ok.user_id, id);
    assert_eq!(ok.session_token.len(), 65);
    let p = ok.profile.clone().unwrap();
    assert_eq!((p.nickname.as_str(), p.login_streak), ("Ann", 1));
    assert!(p.last_login_ms >= p.created_ms && p.created_ms > 0);
    assert_eq!(
        code(&ask(&mut a, 7, &login("ann_1", "correct horse"))),
        ec::ALREADY_LOGGED_IN
    );
    match ask(&mut a, 8, &nick) {
        AnyMessage::NicknameChanged(n) => assert_eq!(n.nickname, "Annie"),
        other => panic!("{other:?}"),
    }
    // A reconnect with the token: no password, the profile as changed, a fresh token; the older
    // session is told why and closed.
    let mut b = l.connect();
    let ok2 = match ask(
        &mut b,
        1,
        &pb::TokenLogin {
            session_token: ok.session_token.clone(),
        },
    ) {
        AnyMessage::LoginOk(ok) => ok,
        other => panic!("{other:?}"),
    };
    assert_eq!(ok2.user_id, id);
    assert_eq!(ok2.profile.unwrap().nickname, "Annie");
    assert_ne!(ok2.session_token, ok.session_token);
    let kicked = a.recv();
    assert_eq!(kicked.request_id, 0);
    match kicked.decode() {
        AnyMessage::Kicked(k) => assert_eq!(k.code, ec::LOGGED_IN_ELSEWHERE),
        other => panic!("expected Kicked, got {other:?}"),
    }
    assert!(a.closed_by_server());
    // Logout keeps the session open and logged out.
    assert!(matches!(
        ask(&mut b, 2, &pb::Logout {}),
        AnyMessage::LoggedOut(_)
    ));
    assert_eq!(code(&ask(&mut b, 3, &nick)), ec::NOT_LOGGED_IN);
    assert_eq!(code(&ask(&mut b, 4, &pb::Logout {})), ec::NOT_LOGGED_IN);
    assert!(matches!(
        ask(&mut b, 5, &login("ann_1", "correct horse")),
        AnyMessage::LoginOk(_)
    ));
    for (name, want) in [
        ("lattice_account_registrations_total", 1),
        ("lattice_account_logins_total", 2),
        ("lattice_account_token_logins_total", 1),
        ("lattice_account_kicked_total", 1),
        ("lattice_account_login_failures_total", 2),
        ("lattice_account_nickname_changes_total", 1),
    ] {
        assert_eq!(l.metric_total(name), want, "{name}");
    }
    assert!(l.metric_total("lattice_ids_issued_total") >= 1);
}

/// A `Login` pipelined behind the `Register` of its account waits for that registration instead
/// of failing (and counting towards the lock-outs).
#[test]
fn a_login_pipelined_behind_its_register_waits_for_it() {
    let l = Lattice::start(&[]);
    for i in 0..4 {
        let mut c = l.connect();
        let name = format!("pipelined{i}");
        let mut burst = encode(10, &register(&name, "password1", "Pip"));
        burst.extend(encode(11, &login(&name, "password1")));
        c.send_raw(&burst);
        let mut got = std::collections::HashMap::new();
        for _ in 0..2 {
            let f = c.recv();
            got.insert(f.request_id, f.decode());
        }
        assert!(matches!(got[&10], AnyMessage::RegisterOk(_)), "{got:?}");
        assert!(matches!(got[&11], AnyMessage::LoginOk(_)), "{got:?}");
    }
    assert_eq!(l.metric_total("lattice_account_login_failures_total"), 0);
    // Past account.max_deferred_logins waiting logins of one name, the rest are answered BUSY
    // (counted, not failures).
    let l = Lattice::start(&["--account.max_deferred_logins", "1"]);
    let mut c = l.connect();
    let mut burst = encode(10, &register("pipelinedx", "password1", "Pip"));
    for rid in 11..14 {
        burst.extend(encode(rid, &login("pipelinedx", "password1")));
    }
    c.send_raw(&burst);
    let mut got = std::collections::HashMap::new();
    for _ in 0..4 {
        let f = c.recv();
        got.insert(f.request_id, f.decode());
    }
    assert!(matches!(got[&10], AnyMessage::RegisterOk(_)), "{got:?}");
    assert!(matches!(got[&11], AnyMessage::LoginOk(_)), "{got:?}");
    for rid in [12, 13] {
        match &got[&rid] {
            AnyMessage::Error(e) => {
                assert_eq!(e.code, ec::BUSY);
                assert_eq!(e.message, "account being registered, retry later");
            }
            other => panic!("{rid}: {other:?}"),
        }
    }
    assert_eq!(l.metric_total("lattice_account_deferred_busy_total"), 2);
    assert_eq!(l.metric_total("lattice_account_login_failures_total"), 0);
}

#[test]
fn every_limit_has_its_own_error_code() {
    let l = Lattice::start(&[]);
    let mut c = l.connect();
    let long = "x".repeat(129);
    let cases: Vec<(pb::Register, u32)> = vec![
        (register("ab", "password1", "n"), ec::ACCOUNT_TOO_SHORT),
        (
            register(&"a".repeat(33), "password1", "n"),
            ec::ACCOUNT_TOO_LONG,
        ),
        (
            register("bad name", "password1", "n"),
            ec::ACCOUNT_BAD_CHARS,
        ),
        (register("-lead", "password1", "n"), ec::ACCOUNT_BAD_CHARS),
        (register("good1", "short", "n"), ec::PASSWORD_TOO_SHORT),
        (register("good1", &long, "n"), ec::PASSWORD_TOO_LONG),
        (
            register("good1", "pass\u{1}word", "n"),
            ec::PASSWORD_BAD_CHARS,
        ),
        (register("good1", "password1", ""), ec::NICKNAME_TOO_SHORT),
        (
            register("good1", "password1", &"名".repeat(25)),
            ec::NICKNAME_TOO_LONG,
        ),
        (
            register("good1", "password1", " lead"),
            ec::NICKNAME_BAD_CHARS,
        ),
        (
            register("good1", "password1", "zero\u{200b}width"),
            ec::NICKNAME_BAD_CHARS,
        ),
        // The emoji joiner and selector between letters hide text like any other.
        (
            register("good1", "password1", "adm\u{200d}in"),
            ec::NICKNAME_BAD_CHARS,
        ),
        (
            register("good1", "password1", "Ann\u{FE0F}"),
            ec::NICKNAME_BAD_CHARS,
        ),
    ];
    for (i, (msg, want)) in cases.iter().enumerate() {
        assert_eq!(code(&ask(&mut c, 10 + i as u32, msg)), *want, "{i}");
    }
    assert_eq!(
        l.metric_total("lattice_account_limit_violations_total"),
        cases.len() as u64
    );
    // Emoji as a phone's keyboard sends them: a heart with its selector, a ZWJ sequence.
    let got = ask(
        &mut c,
        40,
        &register(
            "emoji1",
            "password1",
            "Ann\u{2764}\u{FE0F}\u{1F469}\u{200D}\u{1F4BB}",
        ),
    );
    assert!(matches!(got, AnyMessage::RegisterOk(_)), "{got:?}");
    // Configurable: a stricter server refuses what the default accepts.
    let strict = Lattice::start(&[
        "--account.password_min_len",
        "12",
        "--account.nickname_spaces",
        "false",
    ]);
    let mut s = strict.connect();
    assert_eq!(
        code(&ask(&mut s, 1, &register("good1", "elevenchars", "n"))),
        ec::PASSWORD_TOO_SHORT
    );
    assert_eq!(
        code(&ask(&mut s, 2, &register("good1", "twelve chars", "A B"))),
        ec::NICKNAME_BAD_CHARS
    );
}

#[test]
fn a_password_change_revokes_older_tokens() {
    let l = Lattice::start(&[]);
    let mut c = l.connect();
    let first = register_and_login(&mut c, "bob", "first password", "Bob");
    let change = |old: &str, new: &str| pb::ChangePassword {
        old_password: old.into(),
        new_password: new.into(),
    };
    assert_eq!(
        code(&ask(&mut c, 1, &change("not it at all", "second password"))),
        ec::WRONG_CREDENTIALS
    );
    assert_eq!(
        code(&ask(&mut c, 2, &change("first password", "short"))),
        ec::PASSWORD_TOO_SHORT
    );
    let second = match ask(&mut c, 3, &change("first password", "second password")) {
        AnyMessage::PasswordChanged(p) => p,
        other => panic!("{other:?}"),
    };
    let mut d = l.connect();
    assert_eq!(
        code(&ask(
            &mut d,
            1,
            &pb::TokenLogin {
                session_token: first.session_token.clone()
            }
        )),
        ec::TOKEN_REVOKED
    );
    assert_eq!(
        code(&ask(&mut d, 2, &login("bob", "first password"))),
        ec::WRONG_CREDENTIALS
    );
    assert!(matches!(
        ask(
            &mut d,
            3,
            &pb::TokenLogin {
                session_token: second.session_token.clone()
            }
        ),
        AnyMessage::LoginOk(_)
    ));
    // A forged or truncated token.
    let mut e = l.connect();
    let mut forged = second.session_token.clone();
    forged[2] ^= 1;
    assert_eq!(
        code(&ask(
            &mut e,
            1,
            &pb::TokenLogin {
                session_token: forged
            }
        )),
        ec::TOKEN_INVALID
    );
    assert_eq!(
        code(&ask(
            &mut e,
            2,
            &pb::TokenLogin {
                session_token: vec![1, 2, 3]
            }
        )),
        ec::TOKEN_INVALID
    );
    assert!(matches!(
        ask(&mut e, 3, &login("bob", "second password")),
        AnyMessage::LoginOk(_)
    ));
    assert_eq!(l.metric_total("lattice_account_password_changes_total"), 1);
}

#[test]
fn tokens_expire() {
    let l = Lattice::start(&["--account.token_ttl_ms", "1"]);
    let mut c = l.connect();
    let ok = register_and_login(&mut c, "carol", "carols password", "Carol");
    std::thread::sleep(std::time::Duration::from_millis(5));
    let mut d = l.connect();
    assert_eq!(
        code(&ask(
            &mut d,
            1,
            &pb::TokenLogin {
                session_token: ok.session_token
            }
        )),
        ec::TOKEN_EXPIRED
    );
}

#[test]
fn lock_outs_per_account_and_per_address() {
    let l = Lattice::start(&[
        "--account.account_lock_failures",
        "3",
        "--account.ip_lock_failures",
        "5",
    ]);
    let mut setup = connect_from(l.port, 9);
    for name in ["dave", "erin"] {
        assert!(matches!(
            ask(&mut setup, 1, &register(name, "right password", "x")),
            AnyMessage::RegisterOk(_)
        ));
    }
    // Account: 3 failures (from two addresses) lock it, even for the right password.
    let mut a = connect_from(l.port, 2);
    let mut b = connect_from(l.port, 3);
    assert_eq!(
        code(&ask(&mut a, 1, &login("dave", "wrong password"))),
        ec::WRONG_CREDENTIALS
    );
    assert_eq!(
        code(&ask(&mut b, 1, &login("dave", "wrong password"))),
        ec::WRONG_CREDENTIALS
    );
    assert_eq!(
        code(&ask(&mut a, 2, &login("dave", "wrong password"))),
        ec::WRONG_CREDENTIALS
    );
    assert_eq!(
        code(&ask(&mut b, 2, &login("dave", "right password"))),
        ec::ACCOUNT_LOCKED
    );
    assert_eq!(l.metric_total("lattice_account_account_locks_total"), 1);
    // A name no account has locks the same way (a lock must not tell whether it exists).
    let mut g = connect_from(l.port, 6);
    for rid in 1..4 {
        assert_eq!(
            code(&ask(&mut g, rid, &login("ghost", "any password"))),
            ec::WRONG_CREDENTIALS
        );
    }
    assert_eq!(
        code(&ask(&mut b, 3, &login("ghost", "any password"))),
        ec::ACCOUNT_LOCKED
    );
    assert_eq!(l.metric_total("lattice_account_account_locks_total"), 2);
    // Address: 5 failures from 127.0.0.4 over several accounts lock that address only.
    let mut x = connect_from(l.port, 4);
    for (i, name) in ["nobody1", "nobody2", "erin", "nobody3", "nobody4"]
        .iter()
        .enumerate()
    {
        assert_eq!(
            code(&ask(&mut x, 10 + i as u32, &login(name, "wrong password"))),
            ec::WRONG_CREDENTIALS
        );
    }
    assert_eq!(
        code(&ask(&mut x, 20, &login("erin", "right password"))),
        ec::IP_LOCKED
    );
    let mut y = connect_from(l.port, 5);
    assert!(matches!(
        ask(&mut y, 1, &login("erin", "right password")),
        AnyMessage::LoginOk(_)
    ));
    assert_eq!(l.metric_total("lattice_account_ip_locks_total"), 1);
    assert_eq!(l.metric_total("lattice_account_locked_refusals_total"), 3);
}

#[test]
fn pipelined_logins_learn_no_more_than_the_failures_that_lock() {
    // One hash worker, so the checks come back in order: the 3rd failure locks the name, and
    // every login checked after it answers ACCOUNT_LOCKED, the right password's included.
    // henry stays logged in on `setup`, so his account stays resident and every login of the
    // burst goes straight to the hash pool: an evicted account is loaded from storage first,
    // and those loads may finish out of order, letting the right password be checked before
    // the 3rd failure (a race of the test, not of the lock).
    let l = Lattice::start(&[
        "--account.account_lock_failures",
        "3",
        "--account.hash_workers",
        "1",
    ]);
    let mut setup = connect_from(l.port, 9);
    register_and_login(&mut setup, "henry", "right password", "x");
    let mut c = connect_from(l.port, 2);
    let mut burst = Vec::new();
    for rid in 1..=8u32 {
        let pw = if rid == 7 {
            "right password"
        } else {
            "wrong password"
        };
        burst.extend(encode(rid, &login("henry", pw)));
    }
    c.send_raw(&burst);
    let mut answers = std::collections::BTreeMap::new();
    while answers.len() < 8 {
        let f = c.recv();
        let rid = f.request_id;
        answers.insert(rid, code(&f.decode()));
    }
    let wrong = answers
        .values()
        .filter(|&&c| c == ec::WRONG_CREDENTIALS)
        .count();
    let locked = answers
        .values()
        .filter(|&&c| c == ec::ACCOUNT_LOCKED)
        .count();
    assert_eq!((wrong, locked), (3, 5), "{answers:?}");
    assert_eq!(answers[&7], ec::ACCOUNT_LOCKED, "{answers:?}");
    assert_eq!(l.metric_total("lattice_account_locked_refusals_total"), 5);
    // The setup login only.
    assert_eq!(l.metric_total("lattice_account_logins_total"), 1);
}

#[test]
fn a_full_hash_pool_answers_busy_and_counts_it() {
    // One worker, a queue of one, and an expensive hash: a burst of registrations overflows it.
    let l = Lattice::start(&[
        "--account.hash_workers",
        "1",
        "--account.hash_queue",
        "1",
        "--account.hash_memory_kib",
        "65536",
        "--account.hash_passes",
        "4",
    ]);
    let mut c = l.connect();
    let n = 12u32;
    let mut burst = Vec::new();
    for i in 0..n {
        burst.extend(encode(
            100 + i,
            &register(&format!("user{i}"), "some password", "u"),
        ));
    }
    c.send_raw(&burst);
    let (mut ok, mut busy) = (0, 0);
    while ok + busy < n {
        let f = c.recv();
        match f.decode() {
            AnyMessage::RegisterOk(_) => ok += 1,
            AnyMessage::Error(e) if e.code == ec::BUSY => busy += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(busy > 0, "12 instant jobs into 1 worker + 1 queue slot");
    assert!(ok >= 1);
    assert_eq!(
        l.metric_total("lattice_account_hash_busy_total"),
        busy as u64
    );
    assert_eq!(
        l.metric_total("lattice_account_registrations_total"),
        ok as u64
    );
}

#[test]
fn passwords_and_tokens_never_reach_the_log() {
    let l = Lattice::start(&["--log.level", "trace"]);
    let mut c = l.connect();
    let (pw1, pw2) = ("first-secret-pw", "second-secret-pw");
    let ok = register_and_login(&mut c, "frank", pw1, "Frank");
    ask(
        &mut c,
        1,
        &pb::ChangePassword {
            old_password: pw1.into(),
            new_password: pw2.into(),
        },
    );
    let mut d = l.connect();
    ask(
        &mut d,
        1,
        &pb::TokenLogin {
            session_token: ok.session_token.clone(),
        },
    );
    ask(
        &mut d,
        2,
        &pb::Ping {
            payload: b"visible-payload".to_vec(),
        },
    );
    let logs = l.wait_log("msg=\"TokenLogin\"");
    assert!(logs.contains("msg=\"Register\"") && logs.contains("msg=\"LoginOk\""));
    for secret in [pw1, pw2] {
        assert!(!logs.contains(secret), "{secret} leaked into the log");
    }
    // The token as Debug bytes ("[1, …]") or any 8-byte run of it in decimal.
    let t = &ok.session_token;
    let run = format!("{}, {}, {}, {}", t[30], t[31], t[32], t[33]);
    assert!(!logs.contains(&format!("{t:?}")), "token leaked");
    assert!(!logs.contains(&run), "token bytes leaked");
}

/// A client that quits during its login (the `Login` sent, the socket closed before the answer)
/// leaves no account online: the close may pass the login on its way to the account's shard,
/// and the account stayed online, its slot taken and its next login "kicking" the dead session.
#[test]
fn a_login_whose_session_closed_on_the_way_leaves_nothing_online() {
    let l = Lattice::start(&[]);
    let mut c = l.connect();
    for i in 0..6u32 {
        let name = format!("quitter{i}");
        assert!(matches!(
            ask(&mut c, 10 + i, &register(&name, "password1", "Q")),
            AnyMessage::RegisterOk(_)
        ));
    }
    drop(c);
    for i in 0..6u32 {
        let mut q = l.connect();
        q.send(1, &login(&format!("quitter{i}"), "password1"));
        drop(q);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while l.metric_total("lattice_account_online") != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} accounts online with no session open",
            l.metric_total("lattice_account_online")
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mut c = l.connect();
    assert!(matches!(
        ask(&mut c, 1, &login("quitter0", "password1")),
        AnyMessage::LoginOk(_)
    ));
    assert_eq!(l.metric_total("lattice_account_kicked_total"), 0);
}

/// Two logins of two accounts pipelined on one session: the first that completes holds the
/// session, the other is refused `ALREADY_LOGGED_IN` (both were accepted, and the session acted
/// as either account). One shard, so both accounts have the same owner shard.
#[test]
fn a_second_account_pipelined_on_a_logged_in_session_is_refused() {
    let l = Lattice::start(&["--runtime.shards", "1"]);
    let mut c = l.connect();
    for (i, n) in ["pipa", "pipb"].iter().enumerate() {
        assert!(matches!(
            ask(&mut c, 10 + i as u32, &register(n, "password1", "P")),
            AnyMessage::RegisterOk(_)
        ));
    }
    let mut burst = encode(20, &login("pipa", "password1"));
    burst.extend(encode(21, &login("pipb", "password1")));
    c.send_raw(&burst);
    let mut got = std::collections::HashMap::new();
    for _ in 0..2 {
        let f = c.recv();
        got.insert(f.request_id, f.decode());
    }
    let oks = got
        .values()
        .filter(|m| matches!(m, AnyMessage::LoginOk(_)))
        .count();
    assert_eq!(oks, 1, "{got:?}");
    assert!(
        got.values()
            .any(|m| matches!(m, AnyMessage::Error(e) if e.code == ec::ALREADY_LOGGED_IN)),
        "{got:?}"
    );
    assert_eq!(l.metric_total("lattice_account_online"), 1);
}

/// The files that hold password hashes are the owner's only: the SQLite database and its WAL, and
/// the journal's segments (the server creates them 0600 whatever the umask; backups are 0600 too).
#[test]
fn the_files_that_hold_password_hashes_are_created_0600() {
    use std::os::unix::fs::PermissionsExt;
    let mut l = Lattice::start(&[]);
    let mut c = l.connect();
    register_and_login(&mut c, "ivy", "ivys password", "Ivy");
    drop(c);
    assert_eq!(l.terminate(), 0);
    let mut checked = Vec::new();
    let mut dirs = vec![l.data.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if p.is_dir() {
                dirs.push(p);
            } else if name.contains(".sqlite3") && !name.ends_with(".lock")
                || name.starts_with("seg-")
            {
                let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{}", p.display());
                checked.push(name);
            }
        }
    }
    assert!(
        checked.iter().any(|n| n.ends_with(".sqlite3"))
            && checked.iter().any(|n| n.starts_with("seg-")),
        "the database and a journal segment: {checked:?}"
    );
}

/// A resumable session whose socket is lost, then whose account logs in elsewhere, keeps its
/// `Kicked` for the resume: the resume delivers it, then the session ends with the kick's reason
/// (it was closed at once, and its resume rejected as "unknown or closed session": a client
/// could not tell a kick from an expiry and logged in again, kicking the other device).
#[test]
fn a_session_kicked_while_detached_gets_its_kicked_by_the_resume_then_ends() {
    use common::seq::{Resumption, SeqClient};
    let l = Lattice::start(&[]);
    let mut setup = l.connect();
    assert!(matches!(
        ask(&mut setup, 1, &register("kim", "kims password", "Kim")),
        AnyMessage::RegisterOk(_)
    ));
    let mut a = SeqClient::connect(l.port);
    a.send(2, &login("kim", "kims password"));
    loop {
        let f = a.recv().expect("open");
        if f.request_id == 2 {
            assert!(matches!(f.decode(), AnyMessage::LoginOk(_)), "{f:?}");
            break;
        }
    }
    a.cut();
    l.wait_log("session detached; resumable");
    let mut b = l.connect();
    assert!(matches!(
        ask(&mut b, 3, &login("kim", "kims password")),
        AnyMessage::LoginOk(_)
    ));
    l.wait_log("logged in elsewhere; closing the older session");
    match a.resume() {
        Resumption::Resumed(r) => assert!(!r.resync, "{r:?}"),
        Resumption::Rejected(e) => panic!("the kicked session must resume once: {e:?}"),
    }
    let mut kicked = false;
    while let Some(f) = a.recv() {
        if let AnyMessage::Kicked(k) = f.decode() {
            assert_eq!(k.code, ec::LOGGED_IN_ELSEWHERE);
            kicked = true;
        }
    }
    assert!(kicked, "the Kicked is replayed before the session ends");
    let logs = l.wait_log("reason=closed by server: account logged in elsewhere");
    assert!(logs.contains("session closed"), "{logs}");
    // The other device is still logged in.
    assert!(matches!(
        ask(&mut b, 4, &pb::Ping { payload: vec![] }),
        AnyMessage::Pong(_)
    ));
}

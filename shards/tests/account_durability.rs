//! Durability of player data at the level of the server: register / change-nickname traffic over
//! the binary protocol, `kill -9` of the server at random points (at least 20 times), restart, and
//! a check that every acknowledged change is there — on SQLite and on MariaDB. And a MariaDB outage
//! longer than the retry budget: nothing acknowledged is lost, the dump file is replayed at the
//! next start.
//!
//! The model: an account whose `RegisterOk` arrived must exist; a nickname whose `NicknameChanged`
//! arrived must be the stored one, or one sent after it (sent but unanswered changes may or may not
//! have been journaled). After each restart every known account logs in again (with its token, so
//! tokens surviving restarts is checked too) and its stored nickname is compared with the model.
//! At the end the server stops cleanly and the database itself is read.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use lattice_proto::{pb, AnyMessage, LatticeMessage};
use lattice_storage::direct::Direct;
use lattice_storage::{BackendKind, StorageConfig, Value};

const ROUNDS: usize = 20;
const CLIENTS: usize = 3;

/// Nickname changes acknowledged over the whole run (reported at the end).
static ACKED_CHANGES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A client that reports a broken connection instead of panicking (the server dies under it).
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn open(port: u16) -> std::io::Result<Conn> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        s.set_nodelay(true)?;
        let mut c = Conn { s, buf: Vec::new() };
        c.send(
            1,
            &pb::Hello {
                client_version: lattice_proto::version::PROTOCOL.to_string(),
                ..Default::default()
            },
        )?;
        // Welcome, then the icon manifest.
        c.reply_to(1)?;
        Ok(c)
    }

    fn send<T: LatticeMessage>(&mut self, rid: u32, m: &T) -> std::io::Result<()> {
        self.s.write_all(&encode(rid, m))
    }

    /// The answer to `rid` (pushes are skipped).
    fn reply_to(&mut self, rid: u32) -> std::io::Result<AnyMessage> {
        loop {
            if self.buf.len() >= 12 {
                let len = u32::from_le_bytes(self.buf[0..4].try_into().unwrap()) as usize;
                if self.buf.len() >= len {
                    let op = u16::from_le_bytes(self.buf[4..6].try_into().unwrap());
                    let r = u32::from_le_bytes(self.buf[8..12].try_into().unwrap());
                    let m = lattice_proto::decode(op, &self.buf[12..len]).map_err(|e| {
                        std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
                    })?;
                    self.buf.drain(..len);
                    if r == rid {
                        return Ok(m);
                    }
                    continue;
                }
            }
            let mut tmp = [0u8; 8192];
            match self.s.read(&mut tmp)? {
                0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                n => self.buf.extend_from_slice(&tmp[..n]),
            }
        }
    }

    fn ask<T: LatticeMessage>(&mut self, rid: u32, m: &T) -> std::io::Result<AnyMessage> {
        self.send(rid, m)?;
        self.reply_to(rid)
    }
}

#[derive(Debug, Clone, Default)]
struct Acct {
    password: String,
    /// `RegisterOk` arrived.
    acked: bool,
    token: Option<Vec<u8>>,
    /// The last nickname acknowledged (or read back after a restart).
    nick: String,
    /// Nicknames sent after it, not answered.
    sent_after: Vec<String>,
}

type Model = Arc<Mutex<HashMap<String, Acct>>>;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed() -> u64 {
    let s = std::env::var("LATTICE_TEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("seed {s} (rerun with LATTICE_TEST_SEED={s})");
    s
}

/// One client's traffic until the server dies under it: a new account now and then, logins, and
/// nickname changes, every answer recorded in the model.
fn traffic(port: u16, model: Model, round: usize, client: usize, stop: Arc<AtomicBool>) {
    let Ok(mut c) = Conn::open(port) else { return };
    let mut rid = 10u32;
    let mut k = 0u64;
    // Accounts this client drives: new ones, plus the ones of its share of the model.
    let mut mine: Vec<String> = model
        .lock()
        .unwrap()
        .iter()
        .filter(|(n, a)| a.acked && n.bytes().map(usize::from).sum::<usize>() % CLIENTS == client)
        .map(|(n, _)| n.clone())
        .collect();
    while !stop.load(Ordering::Relaxed) {
        k += 1;
        if mine.is_empty() || k % 4 == 1 {
            let name = format!("r{round}c{client}n{k}");
            let pw = format!("pw-{name}-secret");
            model.lock().unwrap().insert(
                name.clone(),
                Acct {
                    password: pw.clone(),
                    nick: format!("nick-{name}"),
                    ..Acct::default()
                },
            );
            rid += 1;
            let reg = pb::Register {
                account: name.clone(),
                password: pw,
                nickname: format!("nick-{name}"),
            };
            match c.ask(rid, &reg) {
                Ok(AnyMessage::RegisterOk(_)) => {
                    model.lock().unwrap().get_mut(&name).unwrap().acked = true;
                    mine.push(name);
                }
                Ok(AnyMessage::Error(_)) => {} // BUSY / ids unavailable: not acknowledged
                Ok(other) => panic!("register answered {other:?}"),
                Err(_) => return,
            }
            continue;
        }
        let name = mine[(k as usize) % mine.len()].clone();
        // Log in (the session holds one account at a time).
        let (pw, token) = {
            let m = model.lock().unwrap();
            (m[&name].password.clone(), m[&name].token.clone())
        };
        rid += 1;
        let r = match token {
            Some(t) => c.ask(rid, &pb::TokenLogin { session_token: t }),
            None => c.ask(
                rid,
                &pb::Login {
                    account: name.clone(),
                    password: pw,
                },
            ),
        };
        match r {
            Ok(AnyMessage::LoginOk(ok)) => {
                model.lock().unwrap().get_mut(&name).unwrap().token = Some(ok.session_token);
            }
            Ok(AnyMessage::Error(_)) => continue,
            Ok(other) => panic!("login answered {other:?}"),
            Err(_) => return,
        }
        for j in 0..5 {
            let nick = format!("n{round}-{client}-{k}-{j}");
            model
                .lock()
                .unwrap()
                .get_mut(&name)
                .unwrap()
                .sent_after
                .push(nick.clone());
            rid += 1;
            match c.ask(
                rid,
                &pb::ChangeNickname {
                    nickname: nick.clone(),
                },
            ) {
                Ok(AnyMessage::NicknameChanged(n)) => {
                    assert_eq!(n.nickname, nick);
                    ACKED_CHANGES.fetch_add(1, Ordering::Relaxed);
                    let mut m = model.lock().unwrap();
                    let a = m.get_mut(&name).unwrap();
                    a.nick = nick;
                    a.sent_after.clear();
                }
                Ok(AnyMessage::Error(_)) => {}
                Ok(other) => panic!("change answered {other:?}"),
                Err(_) => return,
            }
        }
        rid += 1;
        match c.ask(rid, &pb::Logout {}) {
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

/// After a restart: every acknowledged account logs in and its nickname is allowed by the model;
/// the stored nickname becomes the new acknowledged one.
fn verify_after_restart(port: u16, model: &Model) {
    let names: Vec<String> = model.lock().unwrap().keys().cloned().collect();
    let mut c = Conn::open(port).expect("connect after restart");
    let mut rid = 1000u32;
    for name in names {
        let a = model.lock().unwrap()[&name].clone();
        rid += 1;
        let r = match &a.token {
            Some(t) => c.ask(
                rid,
                &pb::TokenLogin {
                    session_token: t.clone(),
                },
            ),
            None => c.ask(
                rid,
                &pb::Login {
                    account: name.clone(),
                    password: a.password.clone(),
                },
            ),
        }
        .expect("server answers after restart");
        let ok = match r {
            AnyMessage::LoginOk(ok) => ok,
            AnyMessage::Error(e)
                if !a.acked && e.code == lattice_proto::error_code::WRONG_CREDENTIALS =>
            {
                // Registered without an answer and not journaled: it does not exist. Forget it.
                model.lock().unwrap().remove(&name);
                continue;
            }
            other => panic!(
                "account {name} (acked {}) after restart: {other:?}",
                a.acked
            ),
        };
        let stored = ok.profile.expect("profile").nickname;
        assert!(
            stored == a.nick || a.sent_after.contains(&stored),
            "account {name}: stored nickname {stored:?}, acknowledged {:?}, sent after {:?}",
            a.nick,
            a.sent_after
        );
        let mut m = model.lock().unwrap();
        let e = m.get_mut(&name).unwrap();
        e.acked = true;
        e.nick = stored;
        e.sent_after.clear();
        e.token = Some(ok.session_token);
        drop(m);
        rid += 1;
        assert!(matches!(
            c.ask(rid, &pb::Logout {}).unwrap(),
            AnyMessage::LoggedOut(_)
        ));
    }
}

/// Reads account names and nicknames straight from the database.
fn stored_rows(cfg: &StorageConfig) -> HashMap<String, String> {
    let db = Direct::open(cfg).expect("open the database");
    let rows = db
        .query(
            "SELECT n.name, p.nickname FROM account_name n JOIN profile p ON p.user_id = n.user_id",
            Vec::new(),
        )
        .expect("query");
    rows.into_iter()
        .map(|r| match (&r[0], &r[1]) {
            (Value::Text(a), Value::Text(b)) => (a.clone(), b.clone()),
            other => panic!("row {other:?}"),
        })
        .collect()
}

fn run_kills(name: &str, storage_args: &[&str], cfg: StorageConfig) {
    let data = std::env::temp_dir().join(format!("lattice-dur-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let node = format!("dur-{name}-{}", std::process::id());
    let mut args: Vec<&str> = vec![
        "--center.reserve_ms",
        "300",
        "--center.renew_interval_ms",
        "100",
        "--storage.flush_interval_ms",
        "100",
    ];
    args.extend_from_slice(storage_args);
    let mut rng = Rng(seed());
    let model: Model = Arc::new(Mutex::new(HashMap::new()));
    let mut kills = 0;
    for round in 0..ROUNDS {
        let mut l = Lattice::start_with_data(data.clone(), &node, &args);
        verify_after_restart(l.port, &model);
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (m, s, port) = (model.clone(), stop.clone(), l.port);
                std::thread::spawn(move || traffic(port, m, round, c, s))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(150 + rng.below(500)));
        l.child.kill().expect("kill -9");
        l.child.wait().unwrap();
        kills += 1;
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().expect("client thread");
        }
    }
    assert!(kills >= 20);
    // A last start checks everything through the protocol, then a clean stop; the database itself
    // must hold every acknowledged account with an allowed nickname.
    let mut l = Lattice::start_with_data(data.clone(), &node, &args);
    verify_after_restart(l.port, &model);
    assert_eq!(l.terminate(), 0, "{}", l.logs());
    let stored = stored_rows(&cfg);
    let m = model.lock().unwrap();
    let acked = m.values().filter(|a| a.acked).count();
    assert!(
        acked >= 20,
        "too little traffic to mean anything: {acked} accounts"
    );
    for (n, a) in m.iter().filter(|(_, a)| a.acked) {
        assert_eq!(stored.get(n), Some(&a.nick), "account {n} in the database");
    }
    eprintln!(
        "{name}: {kills} kills, {acked} acknowledged accounts, {} acknowledged nickname changes, {} accounts stored",
        ACKED_CHANGES.load(Ordering::Relaxed),
        stored.len()
    );
    let _ = std::fs::remove_dir_all(&data);
}

/// An unlabelled metric (`name value`).
fn plain_metric(l: &Lattice, name: &str) -> u64 {
    l.metrics()
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

fn mysql_url() -> String {
    std::env::var("LATTICE_TEST_MYSQL_URL").expect(
        "LATTICE_TEST_MYSQL_URL is not set: run `eval \"$(deploy/ci/mariadb.sh start)\"` (deploy/test.sh does)",
    )
}

/// The storage config the server runs with, for reading its database afterwards.
fn mysql_cfg(url: &str, database: &str) -> StorageConfig {
    StorageConfig {
        backend: BackendKind::Mysql,
        url: Some(url.to_string()),
        database: Some(database.to_string()),
        data_dir: std::env::temp_dir(),
        ..StorageConfig::default()
    }
}

fn drop_database(cfg: &StorageConfig) {
    if let Ok(db) = Direct::open(cfg) {
        let _ = db.exec_script(&[format!("DROP DATABASE IF EXISTS `{}`", db.database())]);
    }
}

#[test]
fn kill9_at_random_points_loses_nothing_acknowledged_sqlite() {
    let data = std::env::temp_dir().join(format!("lattice-dur-sqlite-{}", std::process::id()));
    let cfg = StorageConfig {
        data_dir: data.clone(),
        database: Some("dur".into()),
        ..StorageConfig::default()
    };
    run_kills("sqlite", &["--storage.database", "dur"], cfg);
}

#[test]
fn kill9_at_random_points_loses_nothing_acknowledged_mariadb() {
    let url = mysql_url();
    let db = format!("lt_acct_dur_{}", std::process::id());
    let cfg = mysql_cfg(&url, &db);
    drop_database(&cfg);
    run_kills(
        "mariadb",
        &[
            "--storage.backend",
            "mysql",
            "--storage.url",
            &url,
            "--storage.database",
            &db,
        ],
        cfg.clone(),
    );
    drop_database(&cfg);
}

// ---- MariaDB outage past the retry budget ----

const FAULT: &str = "acctfault";

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/ci/mariadb.sh")
}

/// `mariadb.sh CMD acctfault`: its own instance, so stopping it disturbs no other test.
fn ctl(cmd: &str) -> String {
    let out = Command::new("bash")
        .arg(script())
        .args([cmd, FAULT])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script().display()));
    assert!(
        out.status.success(),
        "`deploy/ci/mariadb.sh {cmd} {FAULT}` failed (it installs mariadb-server from Debian's packages if missing):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn mariadb_outage_past_the_retry_budget_loses_nothing_acknowledged() {
    ctl("start");
    let url = ctl("url");
    let db = format!("lt_acct_outage_{}", std::process::id());
    let cfg = mysql_cfg(&url, &db);
    drop_database(&cfg);
    let data = std::env::temp_dir().join(format!("lattice-outage-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let node = format!("outage-{}", std::process::id());
    let args = [
        "--storage.backend",
        "mysql",
        "--storage.url",
        &url,
        "--storage.database",
        &db,
        "--storage.flush_interval_ms",
        "50",
        "--storage.retry_max",
        "2",
        "--storage.retry_backoff_ms",
        "20",
        "--storage.retry_backoff_max_ms",
        "50",
        "--storage.op_timeout_ms",
        "1500",
    ];
    let mut l = Lattice::start_with_data(data.clone(), &node, &args);
    // Accounts registered and logged in while the database is up; their sessions stay open, so
    // their owner shards hold them while the database is away.
    let mut model: HashMap<String, String> = HashMap::new();
    let mut tokens: HashMap<String, Vec<u8>> = HashMap::new();
    let mut sessions = Vec::new();
    for i in 0..5 {
        let name = format!("out{i}");
        let mut s = Conn::open(l.port).unwrap();
        let r = s
            .ask(
                1,
                &pb::Register {
                    account: name.clone(),
                    password: "outage password".into(),
                    nickname: "before".into(),
                },
            )
            .unwrap();
        assert!(matches!(r, AnyMessage::RegisterOk(_)), "{r:?}");
        let r = s
            .ask(
                2,
                &pb::Login {
                    account: name.clone(),
                    password: "outage password".into(),
                },
            )
            .unwrap();
        let AnyMessage::LoginOk(ok) = r else {
            panic!("{r:?}")
        };
        tokens.insert(name.clone(), ok.session_token);
        model.insert(name.clone(), "before".into());
        sessions.push((name, s));
    }
    // The database goes away for longer than the retry budget; changes go on being acknowledged
    // (journaled), and the flushes that cannot reach the database go to the dump file.
    ctl("stop");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut round = 0u32;
    while plain_metric(&l, "lattice_storage_dumps_total") == 0 || round < 3 {
        assert!(
            Instant::now() < deadline,
            "nothing was dumped: {}",
            l.logs()
        );
        round += 1;
        for (name, s) in sessions.iter_mut() {
            let next = format!("during-{round}");
            match s
                .ask(
                    10 + round,
                    &pb::ChangeNickname {
                        nickname: next.clone(),
                    },
                )
                .unwrap()
            {
                AnyMessage::NicknameChanged(_) => {
                    model.insert(name.clone(), next);
                }
                other => panic!("change during the outage: {other:?}"),
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Stop while the database is still away: what could not be written is in the dump file.
    let code = l.terminate();
    eprintln!("server stopped during the outage with exit code {code}");
    drop(sessions);
    ctl("start");
    let dump = data.join(format!("{db}.dump.jsonl"));
    assert!(
        std::fs::read_to_string(&dump).is_ok_and(|t| !t.trim().is_empty()),
        "no dump file at {}",
        dump.display()
    );
    // The next start replays the dump; every acknowledged nickname is back.
    let mut l = Lattice::start_with_data(data.clone(), &node, &args);
    let logs = l.wait_log("storage open");
    assert!(
        plain_metric(&l, "lattice_storage_replays_total") > 0,
        "{logs}"
    );
    let stored = stored_rows(&cfg);
    for (name, nick) in &model {
        assert_eq!(stored.get(name), Some(nick), "{name}");
    }
    let mut s = Conn::open(l.port).unwrap();
    for (name, nick) in &model {
        let r = s
            .ask(
                4,
                &pb::TokenLogin {
                    session_token: tokens[name].clone(),
                },
            )
            .unwrap();
        let AnyMessage::LoginOk(ok) = r else {
            panic!("{r:?}")
        };
        assert_eq!(&ok.profile.unwrap().nickname, nick);
        assert!(matches!(
            s.ask(5, &pb::Logout {}).unwrap(),
            AnyMessage::LoggedOut(_)
        ));
    }
    assert_eq!(l.terminate(), 0);
    drop_database(&cfg);
    ctl("stop");
    let _ = std::fs::remove_dir_all(&data);
}

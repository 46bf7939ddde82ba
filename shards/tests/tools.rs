//! `lattice tool …` against real databases: db-backup and its restore (SQLite and MariaDB),
//! machine-id show/request/release and the server taking the leases, a clock behind the last id
//! timestamp refusing to start, gen-password, and icons import served over the frame protocol.

mod acct;
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use acct::*;
use common::*;
use lattice_proto::{error_code as ec, pb, AnyMessage};
use lattice_storage::direct::Direct;
use lattice_storage::{BackendKind, StorageConfig, Value};
use sha2::{Digest, Sha256};

fn tool(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lattice"))
        .arg("tool")
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run lattice tool")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "tool failed ({}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lattice-tools-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn mysql_url() -> String {
    std::env::var("LATTICE_TEST_MYSQL_URL").expect(
        "LATTICE_TEST_MYSQL_URL is not set: run `eval \"$(deploy/ci/mariadb.sh start)\"` (deploy/test.sh does)",
    )
}

/// Waits until the storage engine has written `rows` rows (the flush interval is short here).
fn wait_flushed(l: &Lattice, rows: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let m = l.metrics();
        let n = m
            .lines()
            .find_map(|x| x.strip_prefix("lattice_storage_flushed_rows_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0) as u64;
        if n >= rows {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "not flushed: {m}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Backup while the server runs, a later change, restore with the server stopped: the account is
/// back as it was at the backup.
fn backup_and_restore(name: &str, storage: &[&str]) {
    let data = temp(name);
    let out = data.join("backups");
    let node = format!("bk-{name}-{}", std::process::id());
    let mut args = vec!["--storage.flush_interval_ms", "50"];
    args.extend_from_slice(storage);
    let mut l = Lattice::start_with_data(data.clone(), &node, &args);
    let mut c = l.connect();
    let ok1 = register_and_login(&mut c, "backup_me", "backup password", "AtBackup");
    wait_flushed(&l, 3);
    let mut targs = vec![
        "db-backup",
        "--out",
        out.to_str().unwrap(),
        "--storage.data_dir",
        data.to_str().unwrap(),
    ];
    targs.extend_from_slice(storage);
    let path = ok(&tool(&targs)).trim().to_string();
    let file = Path::new(&path);
    let fname = file.file_name().unwrap().to_str().unwrap().to_string();
    let db = storage
        .iter()
        .position(|a| *a == "--storage.database")
        .map_or("logic0".to_string(), |i| storage[i + 1].to_string());
    // `<database>-<YYYYmmdd-HHMMSS>`.
    let stamp = fname.strip_prefix(&format!("{db}-")).expect(&fname);
    assert_eq!(stamp.len(), 15, "{fname}");
    assert!(stamp.chars().enumerate().all(|(i, ch)| if i == 8 {
        ch == '-'
    } else {
        ch.is_ascii_digit()
    }));
    assert!(std::fs::metadata(file).unwrap().len() > 0);
    // A change after the backup.
    assert!(matches!(
        ask(
            &mut c,
            1,
            &pb::ChangeNickname {
                nickname: "AfterBackup".into()
            }
        ),
        AnyMessage::NicknameChanged(_)
    ));
    if name == "mariadb" {
        // Another data directory naming the same database (a second node): refused while this
        // server is connected to it, and nothing restored.
        let other = temp("mariadb-other");
        let mut oargs = vec![
            "db-restore",
            &path,
            "--storage.data_dir",
            other.to_str().unwrap(),
        ];
        oargs.extend_from_slice(storage);
        let o = tool(&oargs);
        assert_eq!(o.status.code(), Some(1), "{o:?}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("stop every server that uses it first"),
            "{o:?}"
        );
        let _ = std::fs::remove_dir_all(&other);
    }
    drop(c);
    assert_eq!(l.terminate(), 0);
    // Restore (server stopped) and start again: the nickname of the backup.
    let mut rargs = vec![
        "db-restore",
        &path,
        "--storage.data_dir",
        data.to_str().unwrap(),
    ];
    rargs.extend_from_slice(storage);
    ok(&tool(&rargs));
    let mut l = Lattice::start_with_data(data.clone(), &node, &args);
    let mut c = l.connect();
    let r = ask(
        &mut c,
        1,
        &pb::TokenLogin {
            session_token: ok1.session_token,
        },
    );
    let AnyMessage::LoginOk(back) = r else {
        panic!("{r:?}")
    };
    assert_eq!(back.profile.unwrap().nickname, "AtBackup");
    assert_eq!(l.terminate(), 0);
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn db_backup_restores_on_sqlite() {
    backup_and_restore("sqlite", &[]);
}

#[test]
fn db_backup_restores_on_mariadb() {
    let url = mysql_url();
    let db = format!("lt_backup_{}", std::process::id());
    backup_and_restore(
        "mariadb",
        &[
            "--storage.backend",
            "mysql",
            "--storage.url",
            &url,
            "--storage.database",
            &db,
        ],
    );
    let cfg = StorageConfig {
        backend: BackendKind::Mysql,
        url: Some(url),
        database: Some(db),
        data_dir: std::env::temp_dir(),
        ..StorageConfig::default()
    };
    let d = Direct::open(&cfg).unwrap();
    d.exec_script(&[format!("DROP DATABASE `{}`", d.database())])
        .unwrap();
}

#[test]
fn db_backup_of_a_missing_database_fails_clearly() {
    let data = temp("nobackup");
    let o = tool(&["db-backup", "--storage.data_dir", data.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nothing to back up"));
    let o = tool(&[
        "db-restore",
        "/no/such/file",
        "--storage.data_dir",
        data.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not a file"));
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn machine_ids_request_show_release_and_the_server_takes_them() {
    let data = temp("mid");
    let d = data.to_str().unwrap();
    // Showing a data directory that does not exist says so and creates nothing.
    let _ = std::fs::remove_dir_all(&data);
    let o = tool(&["machine-id", "show", "--storage.data_dir", d]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no SQLite database"),
        "{o:?}"
    );
    assert!(!data.exists(), "show created the data directory");
    let a = ok(&tool(&[
        "machine-id",
        "request",
        "--node",
        "node-a",
        "--storage.data_dir",
        d,
    ]));
    let b = ok(&tool(&[
        "machine-id",
        "request",
        "--node",
        "node-b",
        "--storage.data_dir",
        d,
    ]));
    assert_eq!((a.trim(), b.trim()), ("0", "1"));
    let show = ok(&tool(&["machine-id", "show", "--storage.data_dir", d]));
    assert!(show.contains("node-a") && show.contains("node-b"), "{show}");
    assert_eq!(show.matches("held").count(), 2, "{show}");
    // A live lease is not released without --force.
    let o = tool(&[
        "machine-id",
        "release",
        "--id",
        "1",
        "--storage.data_dir",
        d,
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--force"));
    ok(&tool(&[
        "machine-id",
        "release",
        "--id",
        "1",
        "--force",
        "--storage.data_dir",
        d,
    ]));
    let show = ok(&tool(&["machine-id", "show", "--storage.data_dir", d]));
    assert_eq!(show.matches("held").count(), 1, "{show}");
    // node-a's server takes back the id requested for it; another node gets the freed one.
    let mut la = Lattice::start_with_data(data.clone(), "node-a", &[]);
    la.wait_log("machine_id=0");
    // Another node has its own data directory (one server per directory) and shares the
    // database, as nodes share one MariaDB.
    let shared = data.join("logic0.sqlite3");
    let mut lc = Lattice::start_with_data(
        data.join("node-c"),
        "node-c",
        &["--storage.url", shared.to_str().unwrap()],
    );
    lc.wait_log("machine_id=1");
    // --force is for a holder that is gone: node-a's server runs on this data directory, and
    // freeing its id under it would stop its ids for good.
    let o = tool(&[
        "machine-id",
        "release",
        "--id",
        "0",
        "--force",
        "--storage.data_dir",
        d,
        "--center.node",
        "node-a",
    ]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("whose server is running"),
        "{o:?}"
    );
    assert_eq!(lc.terminate(), 0);
    assert_eq!(la.terminate(), 0);
    // Both released at the clean stop.
    let show = ok(&tool(&["machine-id", "show", "--storage.data_dir", d]));
    assert_eq!(show.matches("free").count(), 2, "{show}");
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn a_clock_behind_the_last_id_timestamp_refuses_to_start() {
    let data = temp("clock");
    let d = data.to_str().unwrap();
    ok(&tool(&[
        "machine-id",
        "request",
        "--node",
        "n",
        "--id",
        "3",
        "--storage.data_dir",
        d,
    ]));
    // The id's last timestamp one hour ahead of this clock (as after a clock stepped back).
    let cfg = StorageConfig {
        data_dir: data.clone(),
        ..StorageConfig::default()
    };
    let db = Direct::open(&cfg).unwrap();
    let ahead = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        + 3_600_000;
    db.exec(
        "UPDATE lattice_machine_lease SET last_ts_ms = ? WHERE machine_id = 3",
        vec![Value::Int(ahead)],
    )
    .unwrap();
    drop(db);
    let o = Command::new(env!("CARGO_BIN_EXE_lattice"))
        .args([
            "run",
            "--net.listen",
            "127.0.0.1:0",
            "--admin.listen",
            "",
            "--storage.data_dir",
            d,
            "--center.node",
            "n",
            "--center.clock_wait_max_ms",
            "200",
        ])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("ms behind the last id timestamp of machine id 3"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn gen_password_prints_random_passwords() {
    let out = ok(&tool(&["gen-password", "--length", "24", "--count", "3"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3);
    assert!(lines.iter().all(|l| l.len() == 24));
    assert_ne!(lines[0], lines[1]);
    assert_eq!(
        tool(&["gen-password", "--length", "4"]).status.code(),
        Some(2)
    );
}

fn icons_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../proto/icons")
}

#[test]
fn icons_import_then_manifest_after_welcome_and_fetch() {
    let data = temp("icons");
    let d = data.to_str().unwrap();
    let dir = icons_dir();
    let out = ok(&tool(&[
        "icons",
        "import",
        "--dir",
        dir.to_str().unwrap(),
        "--storage.data_dir",
        d,
    ]));
    assert!(out.contains("imported 4 icons"), "{out}");
    // A bad folder writes nothing and names the file.
    let bad = data.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("icons.txt"), "1 coin x\n9 ghost y\n").unwrap();
    std::fs::copy(dir.join("coin.png"), bad.join("coin.png")).unwrap();
    std::fs::write(bad.join("ghost.png"), b"not a png at all, really not").unwrap();
    let o = tool(&[
        "icons",
        "import",
        "--dir",
        bad.to_str().unwrap(),
        "--storage.data_dir",
        d,
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("ghost.png"));

    let mut l = Lattice::start_with_data(data.clone(), "icons", &["--icons.push_manifest", "true"]);
    let mut c = Client::connect_with_manifest(l.port);
    let m = c.icons.clone().expect("manifest after Welcome");
    assert_eq!(m.icons.len(), 4, "the bad import changed nothing");
    for i in &m.icons {
        let png = std::fs::read(dir.join(format!("{}.png", i.name))).unwrap();
        assert_eq!(i.hash, Sha256::digest(&png).to_vec(), "{}", i.name);
        assert_eq!(i.size as usize, png.len());
        match ask(&mut c, 10 + i.id, &pb::GetIcon { id: i.id }) {
            AnyMessage::IconData(d) => {
                assert_eq!(d.png, png);
                assert_eq!(d.hash, i.hash);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        code(&ask(&mut c, 99, &pb::GetIcon { id: 999 })),
        ec::ICON_NOT_FOUND
    );
    // The same icons over HTTP: bytes with the hash as ETag, then 304 (no body) for a client that
    // has them, on one keep-alive connection.
    let mut h = std::net::TcpStream::connect(("127.0.0.1", l.http)).unwrap();
    h.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut get = |path: &str, extra: &str| {
        use std::io::Write;
        h.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n").as_bytes())
            .unwrap();
        read_response(&mut h).expect("a response")
    };
    for i in &m.icons {
        let png = std::fs::read(dir.join(format!("{}.png", i.name))).unwrap();
        let (st, head, body) = get(&format!("/icons/{}", i.id), "");
        assert_eq!((st, body == png), (200, true), "{head}");
        assert!(head.contains("Content-Type: image/png"), "{head}");
        let hex: String = i.hash.iter().map(|b| format!("{b:02x}")).collect();
        let etag = format!("\"{hex}\"");
        assert!(head.contains(&format!("ETag: {etag}")), "{head}");
        let (st, head, body) = get(
            &format!("/icons/{}", i.id),
            &format!("If-None-Match: \"stale\", {etag}\r\n"),
        );
        assert_eq!((st, body.len()), (304, 0), "{head}");
        assert!(!head.contains("Content-Length"), "{head}");
        let (st, _, body) = get(&format!("/icons/{}", i.id), "If-None-Match: \"stale\"\r\n");
        assert_eq!(
            (st, body == png),
            (200, true),
            "a changed icon is sent again"
        );
    }
    assert_eq!(get("/icons/999", "").0, 404);
    assert_eq!(get("/icons/coin", "").0, 404);
    assert_eq!(get("/icons/-1", "").0, 404);
    let first = m.icons[0].id;
    assert_eq!(get(&format!("/icons/+{first}"), "").0, 404, "digits only");
    assert_eq!(get(&format!("/icons/0{first}"), "").0, 200, "leading zeros");
    assert_eq!(l.terminate(), 0);
    let _ = std::fs::remove_dir_all(&data);
}

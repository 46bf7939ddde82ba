//! The server with its storage engine: embedded default, real MariaDB, a database that is not there,
//! and the operator's `tool migrate --print`.

mod common;

use std::process::Command;

use common::*;

fn mysql_url() -> String {
    std::env::var("LATTICE_TEST_MYSQL_URL").expect(
        "LATTICE_TEST_MYSQL_URL is not set: run `eval \"$(deploy/ci/mariadb.sh start)\"` (deploy/test.sh does)",
    )
}

#[test]
fn embedded_store_is_the_default_and_exports_metrics() {
    let mut l = Lattice::start(&[]);
    let logs = l.wait_log("storage open");
    assert!(logs.contains("backend=\"sqlite\""), "{logs}");
    let m = l.metrics();
    assert!(
        m.contains("lattice_storage_statements_total{kind=\"insert\"}"),
        "{m}"
    );
    assert_eq!(l.terminate(), 0);
    assert!(l.logs().contains("storage flushed and closed"));
}

#[test]
fn runs_on_mariadb() {
    let url = mysql_url();
    let mut l = Lattice::start(&[
        "--storage.backend",
        "mysql",
        "--storage.url",
        &url,
        "--storage.database",
        "lattice_test",
    ]);
    let logs = l.wait_log("storage open");
    assert!(logs.contains("backend=\"mysql\""), "{logs}");
    let mut c = l.connect();
    c.send(1, &lattice_proto::pb::Ping { payload: vec![1] });
    c.recv();
    assert_eq!(l.terminate(), 0, "{}", l.logs());
    assert!(l.logs().contains("storage flushed and closed"));
}

#[test]
fn unreachable_database_fails_start_with_a_clear_error() {
    let port = free_port();
    let data = std::env::temp_dir().join(format!("lattice-unreach-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_lattice"))
        .args([
            "run",
            "--net.listen",
            "127.0.0.1:0",
            "--admin.listen",
            "",
            "--storage.backend",
            "mysql",
            "--storage.url",
            &format!("mysql://u:p@127.0.0.1:{port}"),
            "--storage.retry_max",
            "1",
            "--storage.retry_backoff_ms",
            "10",
            "--storage.op_timeout_ms",
            "2000",
            "--storage.data_dir",
            data.to_str().unwrap(),
        ])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&data);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lattice: storage:"), "{err}");
}

#[test]
fn mysql_without_url_is_a_config_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_lattice"))
        .args(["run", "--storage.backend", "mysql"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("storage"));
}

#[test]
fn migrate_print_emits_the_schema_sql() {
    let out = Command::new(env!("CARGO_BIN_EXE_lattice"))
        .args([
            "tool",
            "migrate",
            "--print",
            "--storage.backend",
            "mysql",
            "--storage.url",
            "mysql://a:b@h:1",
            "--storage.machine_id",
            "7",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let sql = String::from_utf8(out.stdout).unwrap();
    assert!(
        sql.contains("CREATE DATABASE IF NOT EXISTS `logic7`"),
        "{sql}"
    );
    assert!(sql.contains("lattice_schema_migrations"));
    let bad = Command::new(env!("CARGO_BIN_EXE_lattice"))
        .args(["tool", "migrate"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

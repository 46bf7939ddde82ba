//! The deploy scripts, run into a scratch root: `deploy/install.sh` installs the binary, config,
//! unit and docs, keeps an operator's changed config, refuses a bad one without installing
//! anything; `deploy/init-env.sh` writes the sysctl and limits for 100 k connections; the unit
//! passes `systemd-analyze verify`; `deploy/schema/apply.sh` applies the schema to MariaDB.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lattice-deploy-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn install(root: &Path, config: &Path) -> std::process::Output {
    Command::new("bash")
        .arg(repo().join("deploy/install.sh"))
        .args(["--root", root.to_str().unwrap()])
        .args(["--binary", env!("CARGO_BIN_EXE_lattice")])
        .args(["--config", config.to_str().unwrap()])
        .output()
        .unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn install_into_a_scratch_root() {
    let root = scratch("install");
    let prod = repo().join("deploy/lattice.prod.toml");
    let out = install(&root, &prod);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = root.join("usr/local/bin/lattice");
    assert_eq!(mode(&bin), 0o755);
    assert_eq!(mode(&root.join("etc/lattice/lattice.toml")), 0o640);
    assert_eq!(mode(&root.join("var/lib/lattice")), 0o750);
    assert_eq!(mode(&root.join("var/log/lattice")), 0o750);
    assert!(root
        .join("usr/local/share/doc/lattice/OPERATIONS.md")
        .exists());
    assert!(root
        .join("usr/local/share/doc/lattice/schema/apply.sh")
        .exists());
    // The installed binary runs and accepts the installed config.
    let v = Command::new(&bin).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("lattice "));
    let c = Command::new(&bin)
        .args(["config", "--config"])
        .arg(root.join("etc/lattice/lattice.toml"))
        .output()
        .unwrap();
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
    let merged = String::from_utf8(c.stdout).unwrap();
    assert!(
        merged.contains("file = \"/var/log/lattice/lattice.log\""),
        "{merged}"
    );
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/lattice.service")).unwrap();
    for line in [
        "ExecStart=/usr/local/bin/lattice run --config /etc/lattice/lattice.toml",
        "Restart=on-failure",
        "RestartPreventExitStatus=2",
        "LimitNOFILE=1048576",
        "LimitCORE=infinity",
        "KillSignal=SIGTERM",
        "User=lattice",
    ] {
        assert!(unit.lines().any(|l| l == line), "unit lacks {line}");
    }

    // A second install with another config keeps the operator's file and writes .new beside it.
    let other = root.join("other.toml");
    std::fs::write(&other, "[net]\nlisten = \"0.0.0.0:7200\"\n").unwrap();
    let out = install(&root, &other);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("kept the existing"));
    assert_eq!(
        std::fs::read_to_string(root.join("etc/lattice/lattice.toml")).unwrap(),
        std::fs::read_to_string(&prod).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/lattice/lattice.toml.new")).unwrap(),
        std::fs::read_to_string(&other).unwrap()
    );
    std::fs::remove_dir_all(&root).unwrap();
}

/// An existing configuration the install keeps is checked with the new binary too: one it refuses
/// (the restarted service would exit 2) installs nothing.
#[test]
fn a_kept_config_the_new_binary_refuses_installs_nothing() {
    let root = scratch("keptbad");
    let r = root.join("r");
    std::fs::create_dir_all(r.join("etc/lattice")).unwrap();
    let kept = r.join("etc/lattice/lattice.toml");
    std::fs::write(&kept, "[net]\nmax_frame = 11\n").unwrap();
    let out = install(&r, &repo().join("deploy/lattice.prod.toml"));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("net.max_frame") && err.contains("is invalid for the new binary"),
        "{err}"
    );
    assert!(
        !r.join("usr/local/bin/lattice").exists(),
        "nothing installed"
    );
    assert_eq!(
        std::fs::read_to_string(&kept).unwrap(),
        "[net]\nmax_frame = 11\n"
    );
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_bad_config_installs_nothing() {
    let root = scratch("bad");
    let bad = root.join("bad.toml");
    std::fs::write(&bad, "[net]\nmax_frame = \"lots\"\n").unwrap();
    let out = install(&root.join("r"), &bad);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("net.max_frame") && err.contains("nothing installed"),
        "{err}"
    );
    assert!(!root.join("r").exists(), "nothing may be created");
    assert_eq!(
        err.lines().last().map(str::trim_end),
        Some(
            format!(
                "install.sh: configuration {} is invalid; nothing installed",
                bad.display()
            )
            .as_str()
        ),
        "the message is not followed by the exit code: {err}"
    );
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn bad_usage_is_one_message_and_exit_2() {
    for (args, want) in [
        (
            &["--bogus"][..],
            "install.sh: unknown argument --bogus (see --help)",
        ),
        (
            &["--root"],
            "install.sh: --root needs a directory (see --help)",
        ),
        (
            &["--binary"],
            "install.sh: --binary needs a path (see --help)",
        ),
        (
            &["--config", ""],
            "install.sh: --config needs a file (see --help)",
        ),
    ] {
        let out = Command::new("bash")
            .arg(repo().join("deploy/install.sh"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!("{want}\n"),
            "{args:?}"
        );
    }
}

#[test]
fn init_env_writes_limits_for_100k_connections() {
    let root = scratch("init");
    for _ in 0..2 {
        // Idempotent: twice gives the same files.
        let out = Command::new("bash")
            .arg(repo().join("deploy/init-env.sh"))
            .args(["--root", root.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let sysctl = std::fs::read_to_string(root.join("etc/sysctl.d/60-lattice.conf")).unwrap();
    let value = |key: &str| -> String {
        sysctl
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("{key} missing"))
            .to_string()
    };
    let num = |key: &str| value(key).parse::<u64>().unwrap();
    assert!(num("fs.file-max") >= 200_000);
    assert!(
        num("fs.nr_open") >= 1_048_576,
        "nr_open must allow LimitNOFILE"
    );
    assert!(num("net.core.somaxconn") >= 4096);
    assert!(num("net.ipv4.tcp_max_syn_backlog") >= 4096);
    let range: Vec<u64> = value("net.ipv4.ip_local_port_range")
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(range[1] - range[0] > 60_000);
    let limits =
        std::fs::read_to_string(root.join("etc/security/limits.d/60-lattice.conf")).unwrap();
    assert!(limits.contains("lattice hard nofile 1048576"));
    let unit = std::fs::read_to_string(repo().join("deploy/lattice.service")).unwrap();
    assert!(unit.contains("LimitNOFILE=1048576"));
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn the_unit_passes_systemd_analyze() {
    let root = scratch("unit");
    let unit_dir = root.join("etc/systemd/system");
    std::fs::create_dir_all(&unit_dir).unwrap();
    std::fs::copy(
        repo().join("deploy/lattice.service"),
        unit_dir.join("lattice.service"),
    )
    .unwrap();
    // The scratch root borrows the host's system units (sysinit.target, network-online.target…)
    // that the unit's default and named dependencies need.
    std::fs::create_dir_all(root.join("usr/lib")).unwrap();
    std::os::unix::fs::symlink("/usr/lib/systemd", root.join("usr/lib/systemd")).unwrap();
    let bin = root.join("usr/local/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_lattice"), bin.join("lattice")).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg(unit_dir.join("lattice.service"))
        .output()
        .expect("systemd-analyze not found: install Debian's `systemd` package (deploy/ci/ops.sh does this)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !err.contains("lattice.service:"),
        "systemd-analyze verify: {err}"
    );
    std::fs::remove_dir_all(&root).unwrap();
}

/// `deploy/schema/apply.sh` against the test MariaDB: prints the SQL, applies it (the migrations
/// table exists afterwards), and refuses a single-node (SQLite) config.
#[test]
fn schema_apply_script_creates_the_tables_on_mariadb() {
    let url = std::env::var("LATTICE_TEST_MYSQL_URL").expect(
        "LATTICE_TEST_MYSQL_URL is not set: run `eval \"$(deploy/ci/mariadb.sh start)\"` (deploy/test.sh does)",
    );
    // mysql://user:pass@host:port[/db] → server URL and parts for the client.
    let server = match url.rfind('/') {
        Some(i) if i > "mysql://".len() => url[..i].to_string(),
        _ => url.clone(),
    };
    let rest = server.trim_start_matches("mysql://");
    let (cred, hostport) = rest.split_once('@').unwrap();
    let (user, pass) = cred.split_once(':').unwrap();
    let (host, port) = hostport.split_once(':').unwrap();
    let db = format!("lattice_ops_apply_{}", std::process::id());
    let root = scratch("schema");
    let cfg = root.join("cluster.toml");
    std::fs::write(
        &cfg,
        format!("[storage]\nbackend = \"mysql\"\nurl = \"{server}\"\ndatabase = \"{db}\"\n"),
    )
    .unwrap();
    let apply = |args: &[&str], cfg: &Path| {
        Command::new("bash")
            .arg(repo().join("deploy/schema/apply.sh"))
            .arg("--config")
            .arg(cfg)
            .args(args)
            .env("LATTICE_BIN", env!("CARGO_BIN_EXE_lattice"))
            .output()
            .unwrap()
    };
    let out = apply(&["--print"], &cfg);
    assert!(out.status.success());
    let sql = String::from_utf8(out.stdout).unwrap();
    assert!(
        sql.contains("CREATE TABLE IF NOT EXISTS") && sql.contains(&db),
        "{sql}"
    );
    // Twice: the statements are idempotent.
    for _ in 0..2 {
        let out = apply(&[], &cfg);
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let client = ["mariadb", "mysql"]
        .into_iter()
        .find(|c| Command::new(c).arg("--version").output().is_ok())
        .expect("no mariadb/mysql client: apt-get install mariadb-client");
    let q = |sql: &str| {
        Command::new(client)
            .args([
                "--protocol=TCP",
                "-h",
                host,
                "-P",
                port,
                "-u",
                user,
                "-N",
                "-e",
                sql,
            ])
            .env("MYSQL_PWD", pass)
            .output()
            .unwrap()
    };
    let tables = q(&format!("SHOW TABLES IN `{db}`"));
    assert!(
        String::from_utf8_lossy(&tables.stdout).contains("lattice_schema_migrations"),
        "{}",
        String::from_utf8_lossy(&tables.stderr)
    );
    q(&format!("DROP DATABASE `{db}`"));
    let sqlite = root.join("single.toml");
    std::fs::write(&sqlite, "[storage]\nbackend = \"sqlite\"\n").unwrap();
    let out = apply(&[], &sqlite);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a mysql:// URL"));
    std::fs::remove_dir_all(&root).unwrap();
}

//! `lattice tool ps`: the lattice processes running on this machine, found by scanning
//! `/proc/*/exe`, with pid, role, listening ports, uptime and resident memory.
//!
//! A process is a lattice process when its executable's file name is `lattice` (a binary replaced
//! on disk shows as `lattice (deleted)` and still counts). Its role is its subcommand, and for
//! `run` the node's roles ([`run_roles`]: `all`, or e.g. `gate`, `logic+center`). Ports
//! are its listening TCP sockets, matched by inode between `/proc/PID/fd` and `/proc/net/tcp{,6}`.
//! Processes that vanish or cannot be read while scanning are skipped (another user's process
//! without root shows no ports).

use std::collections::HashSet;
use std::fs;
use std::path::Path;

/// One lattice process.
#[derive(Debug, Clone, PartialEq)]
pub struct Proc {
    /// Process id.
    pub pid: u32,
    /// For `lattice run` its roles (`all`, `gate`, `logic+center`, …), else the subcommand
    /// (`tool`, `config`, …).
    pub role: String,
    /// Listening TCP ports, ascending.
    pub ports: Vec<u16>,
    /// Seconds since the process started.
    pub uptime_s: u64,
    /// Resident set size, KiB.
    pub rss_kib: u64,
    /// The command line.
    pub cmdline: String,
}

/// The roles of a `lattice run` command line: `--cluster.roles` (also `--cluster.roles=…`), else
/// `roles` under `[cluster]` of its `--config` file (relative to the process's working directory
/// `cwd`), else every role. Every role reads `all`; others are joined with `+` (`gate`,
/// `logic+center`). A value that does not parse reads `?`. (Roles set through the environment
/// are not seen.)
pub fn run_roles(args: &[String], cwd: &Path) -> String {
    let flag = |name: &str| {
        args.iter().enumerate().find_map(|(i, a)| {
            a.strip_prefix(&format!("{name}="))
                .map(str::to_string)
                .or_else(|| (a == name).then(|| args.get(i + 1).cloned()).flatten())
        })
    };
    let roles: Option<Vec<String>> = match flag("--cluster.roles") {
        Some(v) => toml::from_str::<toml::Table>(&format!("r = {v}"))
            .ok()
            .and_then(|t| t.get("r").cloned())
            .and_then(|r| r.try_into::<Vec<String>>().ok())
            .or(Some(vec!["?".into()])),
        None => flag("--config").and_then(|f| {
            let text = fs::read_to_string(cwd.join(f)).ok()?;
            let t: toml::Table = toml::from_str(&text).ok()?;
            t.get("cluster")?
                .get("roles")?
                .clone()
                .try_into::<Vec<String>>()
                .ok()
        }),
    };
    let Some(mut roles) = roles else {
        return "all".into();
    };
    roles.sort();
    roles.dedup();
    if roles.len() == 3
        && ["center", "gate", "logic"]
            .iter()
            .all(|r| roles.iter().any(|x| x == r))
    {
        return "all".into();
    }
    roles.join("+")
}

/// Scans `/proc` (rooted at `proc_root`, for tests) for lattice processes.
pub fn scan(proc_root: &Path) -> Vec<Proc> {
    let listening = listening_inodes(proc_root);
    let boot_ticks = uptime_ticks(proc_root);
    let mut out = Vec::new();
    let Ok(dir) = fs::read_dir(proc_root) else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let base = e.path();
        let Ok(exe) = fs::read_link(base.join("exe")) else {
            continue;
        };
        let name = exe
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.trim_end_matches(" (deleted)") != "lattice" {
            continue;
        }
        let args: Vec<String> = fs::read(base.join("cmdline"))
            .unwrap_or_default()
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let role = match args.get(1).map(String::as_str) {
            Some("run") => run_roles(&args, &fs::read_link(base.join("cwd")).unwrap_or_default()),
            Some(sub) => sub.to_string(),
            None => "-".to_string(),
        };
        let mut ports: Vec<u16> = socket_inodes(&base)
            .iter()
            .filter_map(|i| listening.iter().find(|(inode, _)| inode == i).map(|p| p.1))
            .collect();
        ports.sort_unstable();
        ports.dedup();
        let start = start_ticks(&base);
        let uptime_s = match (boot_ticks, start) {
            (Some(now), Some(s)) => now.saturating_sub(s) / clk_tck(),
            _ => 0,
        };
        out.push(Proc {
            pid,
            role,
            ports,
            uptime_s,
            rss_kib: rss_kib(&base).unwrap_or(0),
            cmdline: args.join(" "),
        });
    }
    out.sort_by_key(|p| p.pid);
    out
}

fn clk_tck() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// Seconds since boot, in clock ticks.
fn uptime_ticks(root: &Path) -> Option<u64> {
    let s = fs::read_to_string(root.join("uptime")).ok()?;
    let secs: f64 = s.split_whitespace().next()?.parse().ok()?;
    Some((secs * clk_tck() as f64) as u64)
}

/// Field 22 of `/proc/PID/stat` (start time in ticks since boot). The command name (field 2) may
/// hold spaces and parentheses, so fields are counted after its last `)`.
fn start_ticks(base: &Path) -> Option<u64> {
    let s = fs::read_to_string(base.join("stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn rss_kib(base: &Path) -> Option<u64> {
    let s = fs::read_to_string(base.join("status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn socket_inodes(base: &Path) -> HashSet<u64> {
    let mut out = HashSet::new();
    let Ok(fds) = fs::read_dir(base.join("fd")) else {
        return out;
    };
    for fd in fds.flatten() {
        if let Ok(t) = fs::read_link(fd.path()) {
            let t = t.to_string_lossy();
            if let Some(i) = t
                .strip_prefix("socket:[")
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|i| i.parse().ok())
            {
                out.insert(i);
            }
        }
    }
    out
}

/// `(inode, port)` of every listening TCP socket (state 0A) in `/proc/net/tcp` and `tcp6`.
fn listening_inodes(root: &Path) -> Vec<(u64, u16)> {
    let mut out = Vec::new();
    for f in ["net/tcp", "net/tcp6"] {
        let Ok(text) = fs::read_to_string(root.join(f)) else {
            continue;
        };
        out.extend(text.lines().skip(1).filter_map(parse_tcp_line));
    }
    out
}

/// One row of `/proc/net/tcp`: `sl local rem st tx:rx tr:when retr uid timeout inode …`.
fn parse_tcp_line(line: &str) -> Option<(u64, u16)> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.get(3)? != &"0A" {
        return None;
    }
    let port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
    let inode = f.get(9)?.parse().ok()?;
    Some((inode, port))
}

/// The table `lattice tool ps` prints.
pub fn render(procs: &[Proc]) -> String {
    let ports: Vec<String> = procs
        .iter()
        .map(|p| {
            if p.ports.is_empty() {
                "-".to_string()
            } else {
                p.ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            }
        })
        .collect();
    // The role and ports columns are as wide as their longest entry (`center+logic`, many ports):
    // the columns after them stay aligned.
    let w = ports.iter().map(String::len).max().unwrap_or(0).max(20);
    let r = procs
        .iter()
        .map(|p| p.role.chars().count())
        .max()
        .unwrap_or(0)
        .max(6);
    let mut s = format!(
        "{:>8}  {:<r$}  {:<w$}  {:>10}  {:>10}  COMMAND\n",
        "PID", "ROLE", "PORTS", "UPTIME", "RSS"
    );
    for (p, ports) in procs.iter().zip(&ports) {
        s.push_str(&format!(
            "{:>8}  {:<r$}  {:<w$}  {:>10}  {:>10}  {}\n",
            p.pid,
            p.role,
            ports,
            uptime(p.uptime_s),
            format!("{:.1} MiB", p.rss_kib as f64 / 1024.0),
            p.cmdline
        ));
    }
    if procs.is_empty() {
        s.push_str("(no lattice process running)\n");
    }
    s
}

fn uptime(s: u64) -> String {
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listening_rows_only() {
        let listen = "   0: 0100007F:1BAC 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0";
        assert_eq!(parse_tcp_line(listen), Some((12345, 0x1BAC)));
        let est = listen.replace(" 0A ", " 01 ");
        assert_eq!(parse_tcp_line(&est), None);
        assert_eq!(parse_tcp_line("garbage"), None);
    }

    #[test]
    fn run_roles_come_from_the_flag_then_the_config_file() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cwd = std::env::temp_dir();
        assert_eq!(run_roles(&args(&["lattice", "run"]), &cwd), "all");
        assert_eq!(
            run_roles(
                &args(&["lattice", "run", "--cluster.roles", r#"["gate"]"#]),
                &cwd
            ),
            "gate"
        );
        assert_eq!(
            run_roles(
                &args(&["lattice", "run", r#"--cluster.roles=["logic","center"]"#]),
                &cwd
            ),
            "center+logic"
        );
        assert_eq!(
            run_roles(
                &args(&[
                    "lattice",
                    "run",
                    "--cluster.roles",
                    r#"["gate","logic","center"]"#
                ]),
                &cwd
            ),
            "all"
        );
        assert_eq!(
            run_roles(
                &args(&["lattice", "run", "--cluster.roles", "nonsense"]),
                &cwd
            ),
            "?"
        );
        let dir = cwd.join(format!("lattice-ps-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("n.toml"), "[cluster]\nroles = [\"logic\"]\n").unwrap();
        assert_eq!(
            run_roles(&args(&["lattice", "run", "--config", "n.toml"]), &dir),
            "logic"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn renders_a_row_and_an_empty_table() {
        let t = render(&[Proc {
            pid: 42,
            role: "all".into(),
            ports: vec![7100, 7101],
            uptime_s: 3725,
            rss_kib: 14336,
            cmdline: "lattice run".into(),
        }]);
        assert!(t.contains("42  all     7100,7101"), "{t}");
        assert!(t.contains("1h02m"), "{t}");
        assert!(t.contains("14.0 MiB"), "{t}");
        assert!(render(&[]).contains("no lattice process"));
        // Many ports or a long role widen the column for every row: PORTS and UPTIME start at
        // one place in all lines.
        let row = |pid, role: &str, ports: Vec<u16>| Proc {
            pid,
            role: role.into(),
            ports,
            uptime_s: 5,
            rss_kib: 1024,
            cmdline: "lattice run".into(),
        };
        let t = render(&[
            row(1, "all", vec![7100]),
            row(2, "all", vec![17100, 17101, 17102, 17103, 17104]),
            row(3, "center+logic", vec![7350, 7351]),
        ]);
        let ports_at: Vec<usize> = t
            .lines()
            .zip(["PORTS", "7100", "17100", "7350"])
            .map(|(l, first)| l.find(first).unwrap())
            .collect();
        assert!(ports_at.windows(2).all(|w| w[0] == w[1]), "{t}");
        let at: Vec<usize> = t
            .lines()
            .map(|l| match l.find("UPTIME") {
                Some(i) => i + "UPTIME".len(),
                None => l.find("5s").unwrap() + "5s".len(),
            })
            .collect();
        assert!(at.windows(2).all(|w| w[0] == w[1]), "{t}");
    }
}

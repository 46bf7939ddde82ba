//! `lattice admin …`: calls the admin API of a running server over HTTP/1.1 and prints its JSON
//! answer.
//!
//! The address and the token come from the same configuration the server reads (`admin.listen`,
//! `admin.token`, else the data directory's `admin.token` file), unless `--addr`, `--token` or
//! `--token-file` say otherwise. Exit code 0 on a 2xx answer, 1 otherwise (the answer is printed
//! on stderr), 2 on bad usage or configuration.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::admin::auth;
use crate::config::Config;

/// Longest answer read (a session listing of every shard at the maximum limit fits).
const MAX_ANSWER: usize = 64 << 20;

/// `lattice admin` options.
#[derive(Args, Debug)]
pub struct AdminArgs {
    /// Admin listener address (default: admin.listen of the configuration).
    #[arg(long, value_name = "HOST:PORT")]
    pub addr: Option<String>,
    /// Bearer token (default: admin.token, else the data directory's admin.token file).
    #[arg(long, conflicts_with = "token_file")]
    pub token: Option<String>,
    /// File holding the bearer token.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Configuration file the server runs with (for the defaults above).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Seconds to wait for the answer (1 to 3600).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
    /// What to do.
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// `lattice admin` subcommands.
#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// List sessions: counts per shard and the matching sessions (GET /admin/sessions).
    Sessions {
        /// Only this shard.
        #[arg(long)]
        shard: Option<usize>,
        /// Only sessions whose peer is in this CIDR block.
        #[arg(long, value_name = "CIDR")]
        peer: Option<String>,
        /// Only detached sessions (waiting for a resume).
        #[arg(long, conflicts_with = "attached")]
        detached: bool,
        /// Only sessions with a socket.
        #[arg(long)]
        attached: bool,
        /// Sessions listed per shard.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Close sessions (POST /admin/close): exactly one of --all, --shard, --session, --cidr.
    Close {
        /// Every session.
        #[arg(long, conflicts_with_all = ["shard", "session", "cidr"])]
        all: bool,
        /// Every session of this shard.
        #[arg(long, conflicts_with_all = ["session", "cidr"])]
        shard: Option<usize>,
        /// These sessions (ids as printed by `sessions`), repeatable.
        #[arg(long, value_name = "ID", conflicts_with = "cidr")]
        session: Vec<u64>,
        /// Sessions whose peer is in these blocks, repeatable.
        #[arg(long, value_name = "CIDR")]
        cidr: Vec<String>,
        /// Logged with each close.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Show or replace the IP rules (GET / PUT /admin/ip-rules).
    #[command(subcommand)]
    IpRules(IpRulesCommand),
    /// Reload the configuration; apply what can change live (POST /admin/reload).
    Reload {
        /// Also close the sessions that reloaded IP rules refuse.
        #[arg(long)]
        close_matching: bool,
    },
}

/// `lattice admin ip-rules …`.
#[derive(Subcommand, Debug)]
pub enum IpRulesCommand {
    /// Print the rules in force.
    Get,
    /// Replace the rules (the lists given are the whole new lists).
    Set {
        /// Always admitted, repeatable.
        #[arg(long, value_name = "CIDR")]
        allow: Vec<String>,
        /// Refused, repeatable.
        #[arg(long, value_name = "CIDR")]
        deny: Vec<String>,
        /// Refuse every address outside --allow.
        #[arg(long)]
        allow_only: bool,
        /// Also close the existing sessions the new rules refuse.
        #[arg(long)]
        close_matching: bool,
        /// Remove every rule (needed to set no rule at all, so that a bare `set` wipes nothing).
        #[arg(long, conflicts_with_all = ["allow", "deny", "allow_only"])]
        clear: bool,
    },
}

/// One request to make.
#[derive(Debug, PartialEq)]
pub struct Call {
    /// HTTP method.
    pub method: &'static str,
    /// Path and query.
    pub target: String,
    /// JSON body, if any.
    pub body: Option<Value>,
}

/// The request a command makes.
pub fn call(cmd: &AdminCommand) -> Result<Call, String> {
    Ok(match cmd {
        AdminCommand::Sessions {
            shard,
            peer,
            detached,
            attached,
            limit,
        } => {
            let mut q = vec![format!("limit={limit}")];
            if let Some(s) = shard {
                q.push(format!("shard={s}"));
            }
            if let Some(p) = peer {
                // Percent-encoded whole: anything but unreserved characters (a space, `&`, `=`)
                // must not leak into the query.
                let enc: String = p
                    .bytes()
                    .map(|b| {
                        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
                            (b as char).to_string()
                        } else {
                            format!("%{b:02X}")
                        }
                    })
                    .collect();
                q.push(format!("peer={enc}"));
            }
            if *detached {
                q.push("state=detached".into());
            } else if *attached {
                q.push("state=attached".into());
            }
            Call {
                method: "GET",
                target: format!("/admin/sessions?{}", q.join("&")),
                body: None,
            }
        }
        AdminCommand::Close {
            all,
            shard,
            session,
            cidr,
            reason,
        } => {
            let mut b = if *all {
                json!({ "all": true })
            } else if let Some(s) = shard {
                json!({ "shard": s })
            } else if !session.is_empty() {
                json!({ "sessions": session.iter().map(u64::to_string).collect::<Vec<_>>() })
            } else if !cidr.is_empty() {
                json!({ "cidr": cidr })
            } else {
                return Err(
                    "close needs one of --all, --shard N, --session ID, --cidr CIDR".into(),
                );
            };
            if let Some(r) = reason {
                b["reason"] = json!(r);
            }
            Call {
                method: "POST",
                target: "/admin/close".into(),
                body: Some(b),
            }
        }
        AdminCommand::IpRules(IpRulesCommand::Get) => Call {
            method: "GET",
            target: "/admin/ip-rules".into(),
            body: None,
        },
        AdminCommand::IpRules(IpRulesCommand::Set {
            allow,
            deny,
            allow_only,
            clear,
            ..
        }) if allow.is_empty() && deny.is_empty() && !allow_only && !clear => {
            return Err(
                "ip-rules set replaces every rule: give --allow, --deny or --allow-only, or --clear to remove them all"
                    .into(),
            )
        }
        AdminCommand::IpRules(IpRulesCommand::Set {
            allow,
            deny,
            allow_only,
            close_matching,
            ..
        }) => Call {
            method: "PUT",
            target: "/admin/ip-rules".into(),
            body: Some(json!({
                "allow": allow, "deny": deny, "allow_only": allow_only, "close_matching": close_matching,
            })),
        },
        AdminCommand::Reload { close_matching } => Call {
            method: "POST",
            target: if *close_matching {
                "/admin/reload?close_matching=1".into()
            } else {
                "/admin/reload".into()
            },
            body: None,
        },
    })
}

/// Runs `lattice admin`; returns the exit code.
pub fn run(args: &AdminArgs) -> i32 {
    let needs_config = args.addr.is_none() || (args.token.is_none() && args.token_file.is_none());
    let cfg = if needs_config {
        let env: Vec<(String, String)> = std::env::vars().collect();
        match Config::load(args.config.as_deref(), env, vec![]) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("lattice admin: {e}");
                return 2;
            }
        }
    } else {
        None
    };
    let addr = match (&args.addr, &cfg) {
        (Some(a), _) => a.clone(),
        (None, Some(c)) if !c.admin.listen.is_empty() => c.admin.listen.clone(),
        _ => {
            eprintln!(
                "lattice admin: admin.listen is empty (the admin listener is off); give --addr"
            );
            return 2;
        }
    };
    if addr
        .to_socket_addrs()
        .map(|mut a| a.next())
        .ok()
        .flatten()
        .is_none()
    {
        eprintln!(
            "lattice admin: --addr {addr:?}: not HOST:PORT of the admin listener (e.g. 127.0.0.1:7101, [::1]:7101, localhost:7101)"
        );
        return 2;
    }
    let token = match (&args.token, &args.token_file, &cfg) {
        // Checked like admin.token: a space or a control character (CR LF would start another
        // header line) could never match, so it is a usage error here, not a 401 there.
        (Some(t), _, _) if !auth::usable_token(t) => Err(
            "--token must be visible ASCII (! to ~) with no spaces or control characters"
                .to_string(),
        ),
        (Some(t), _, _) => Ok(t.clone()),
        (None, Some(f), _) => auth::read_token(f).map_err(|e| e.to_string()),
        (None, None, Some(c)) if !c.admin.token.is_empty() => Ok(c.admin.token.clone()),
        (None, None, Some(c)) => {
            auth::read_token(&auth::token_path(&c.storage.data_dir)).map_err(|e| e.to_string())
        }
        (None, None, None) => Err("no token".to_string()),
    };
    let token = match token {
        Ok(t) => t,
        Err(e) => {
            if args.token.is_some() {
                eprintln!("lattice admin: {e}");
            } else {
                eprintln!("lattice admin: {e} (give --token or --token-file)");
            }
            return 2;
        }
    };
    let c = match call(&args.command) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lattice admin: {e}");
            return 2;
        }
    };
    match request(&addr, &token, &c, Duration::from_secs(args.timeout)) {
        Ok((status, body)) if (200..300).contains(&status) => {
            print!("{body}");
            0
        }
        Ok((status, body)) => {
            eprintln!("lattice admin: HTTP {status}: {}", body.trim_end());
            1
        }
        Err(e) => {
            eprintln!("lattice admin: {addr}: {e}");
            1
        }
    }
}

/// Makes one request and returns the status and body.
pub fn request(
    addr: &str,
    token: &str,
    c: &Call,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let sock = addr
        .to_socket_addrs()
        .map_err(|e| format!("bad address: {e}"))?
        .next()
        .ok_or("address resolves to nothing")?;
    let mut s =
        TcpStream::connect_timeout(&sock, timeout).map_err(|e| format!("cannot connect: {e}"))?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let body = c.body.as_ref().map(Value::to_string).unwrap_or_default();
    let head = format!(
        "{} {} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        c.method,
        c.target,
        body.len()
    );
    s.write_all(head.as_bytes())
        .and_then(|_| s.write_all(body.as_bytes()))
        .map_err(|e| format!("cannot send: {e}"))?;
    // --timeout bounds the whole answer, not each read: a server that sends a byte now and then
    // must not hold the command past it.
    let deadline = Instant::now() + timeout;
    let timed_out = || format!("no answer within {} s (--timeout)", timeout.as_secs_f64());
    let mut answer = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        s.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&chunk[..n]);
                if answer.len() > MAX_ANSWER {
                    return Err(format!("answer larger than {MAX_ANSWER} bytes"));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(timed_out());
            }
            Err(e) => return Err(format!("cannot read the answer: {e}")),
        }
    }
    parse_answer(&answer)
}

/// The status and body of a whole HTTP answer (read to the end of the stream). A body shorter
/// than its `Content-Length` is an error: the connection broke in the middle of the answer.
fn parse_answer(answer: &[u8]) -> Result<(u16, String), String> {
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("malformed HTTP answer")?;
    let head = String::from_utf8_lossy(&answer[..split]);
    let mut body = &answer[split + 4..];
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("malformed HTTP status line")?;
    let length = head.lines().skip(1).find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>())
    });
    match length {
        Some(Ok(n)) if body.len() < n => {
            return Err(format!(
                "answer cut short: {} of {n} body bytes came before the connection closed",
                body.len()
            ))
        }
        Some(Ok(n)) => body = &body[..n],
        Some(Err(_)) => return Err("malformed Content-Length in the answer".into()),
        None => {}
    }
    Ok((status, String::from_utf8_lossy(body).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves one connection on a loopback port with `answer`, `gap` apart per byte if given.
    fn fake_server(answer: &'static [u8], gap: Option<Duration>) -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut head = [0u8; 4096];
            let _ = s.read(&mut head);
            match gap {
                None => {
                    let _ = s.write_all(answer);
                }
                Some(g) => {
                    for b in answer {
                        if s.write_all(&[*b]).is_err() {
                            return;
                        }
                        std::thread::sleep(g);
                    }
                }
            }
        });
        addr
    }

    fn sessions() -> Call {
        call(&AdminCommand::Sessions {
            shard: None,
            peer: None,
            detached: false,
            attached: false,
            limit: 5,
        })
        .unwrap()
    }

    #[test]
    fn an_answer_cut_short_is_an_error() {
        let addr = fake_server(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"a\":",
            None,
        );
        let e = request(&addr, "t", &sessions(), Duration::from_secs(10)).unwrap_err();
        assert!(e.contains("cut short: 5 of 100"), "{e}");
        let addr = fake_server(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}", None);
        let (status, body) = request(&addr, "t", &sessions(), Duration::from_secs(10)).unwrap();
        assert_eq!((status, body.as_str()), (200, "{}"));
    }

    #[test]
    fn the_timeout_bounds_the_whole_answer() {
        // 45 bytes, one every 200 ms: 9 s in all, against a 1 s bound (each read is quicker).
        let addr = fake_server(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}          ",
            Some(Duration::from_millis(200)),
        );
        let e = request(&addr, "t", &sessions(), Duration::from_secs(1)).unwrap_err();
        assert!(e.contains("no answer within 1 s"), "{e}");
    }

    #[test]
    fn commands_make_their_requests() {
        let c = call(&AdminCommand::Sessions {
            shard: Some(1),
            peer: Some("10.0.0.0/8".into()),
            detached: true,
            attached: false,
            limit: 5,
        })
        .unwrap();
        assert_eq!(
            c.target,
            "/admin/sessions?limit=5&shard=1&peer=10.0.0.0%2F8&state=detached"
        );
        let c = call(&AdminCommand::Close {
            all: false,
            shard: None,
            session: vec![1, 72057594037927943],
            cidr: vec![],
            reason: Some("maintenance".into()),
        })
        .unwrap();
        assert_eq!(c.method, "POST");
        assert_eq!(
            c.body.unwrap(),
            json!({"sessions": ["1", "72057594037927943"], "reason": "maintenance"})
        );
        assert!(call(&AdminCommand::Close {
            all: false,
            shard: None,
            session: vec![],
            cidr: vec![],
            reason: None
        })
        .is_err());
        let c = call(&AdminCommand::Reload {
            close_matching: true,
        })
        .unwrap();
        assert_eq!(c.target, "/admin/reload?close_matching=1");
        // A bare `ip-rules set` would wipe every rule: refused; --clear says so on purpose.
        let set = |deny: Vec<String>, clear: bool| {
            call(&AdminCommand::IpRules(IpRulesCommand::Set {
                allow: vec![],
                deny,
                allow_only: false,
                close_matching: false,
                clear,
            }))
        };
        assert!(set(vec![], false).unwrap_err().contains("--clear"));
        assert_eq!(
            set(vec![], true).unwrap().body.unwrap(),
            json!({"allow": [], "deny": [], "allow_only": false, "close_matching": false})
        );
        assert_eq!(
            set(vec!["10.0.0.0/8".into()], false).unwrap().body.unwrap()["deny"],
            json!(["10.0.0.0/8"])
        );
    }
}

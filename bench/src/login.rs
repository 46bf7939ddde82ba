//! `lattice-load --scenario login`: the account paths side by side, each for `--duration` seconds
//! on `--connections` connections (one request in flight each):
//!
//! 1. **register**: `Register` of a new account per request (one Argon2id hash each);
//! 2. **login**: `Login` with a password (one hash each) then `Logout`, over the accounts of phase 1;
//! 3. **reconnect**: a new TCP connection, `Hello`, and `TokenLogin` with the token of the last
//!    login of that account (an HMAC and the account's rows, no hash), then the connection closes —
//!    what a reconnect storm after a restart costs.
//!
//! 4. **connect** (the baseline of `reconnect`, measured in the same run): a new TCP connection,
//!    `Hello` and one `Ping`, then the connection closes — a reconnect without any account work.
//!
//! Each phase reports operations per second and latency percentiles; `BUSY` answers (the hash
//! pool's bound) are counted apart from errors, since they are the server protecting itself.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use lattice_proto::{error_code, pb, AnyMessage, LatticeMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::wire::{put_frame, whole_frame};

/// Settings of the scenario.
#[derive(Debug, Clone)]
pub struct LoginOpts {
    /// Server address.
    pub addr: SocketAddr,
    /// Concurrent connections (one request in flight each).
    pub connections: usize,
    /// Length of each phase.
    pub duration: Duration,
    /// Source addresses 127.0.0.1..=127.0.0.K.
    pub sources: u8,
    /// Password of every account.
    pub password: String,
}

/// Result of one phase.
#[derive(Debug, Default)]
pub struct Phase {
    /// Name.
    pub name: &'static str,
    /// Operations completed.
    pub ok: u64,
    /// `BUSY` answers.
    pub busy: u64,
    /// Other errors.
    pub errors: u64,
    /// First error seen.
    pub first_error: Option<String>,
    /// Seconds measured.
    pub secs: f64,
    /// Latency, ns.
    pub hist: Option<Histogram<u64>>,
}

impl Phase {
    fn new(name: &'static str) -> Phase {
        Phase {
            name,
            hist: Some(Histogram::new_with_bounds(1, 120_000_000_000, 3).expect("bounds")),
            ..Phase::default()
        }
    }

    fn error(&mut self, e: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e);
        }
    }

    /// Operations per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.secs.max(1e-9)
    }

    /// Latency quantile in µs.
    pub fn q_us(&self, q: f64) -> f64 {
        self.hist
            .as_ref()
            .map_or(0.0, |h| h.value_at_quantile(q) as f64 / 1e3)
    }

    /// The JSON form.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "ops": self.ok, "per_s": self.rate(), "busy": self.busy, "errors": self.errors,
            "first_error": self.first_error, "secs": self.secs,
            "latency_us": {"p50": self.q_us(0.5), "p90": self.q_us(0.9), "p99": self.q_us(0.99),
                           "max": self.hist.as_ref().map_or(0.0, |h| h.max() as f64 / 1e3)},
        })
    }
}

/// A minimal client: one request at a time.
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
    tmp: Vec<u8>,
    rid: u32,
}

impl Conn {
    async fn open(o: &LoginOpts, i: usize) -> Result<Conn, String> {
        let s = crate::transport::connect(o.addr, i, o.sources).await?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        let mut c = Conn {
            s,
            buf: Vec::new(),
            tmp: vec![0; 64 * 1024],
            rid: 1,
        };
        let w = c
            .ask(&pb::Hello {
                client_version: lattice_proto::version::PROTOCOL.to_string(),
                resume: false,
            })
            .await?;
        match w {
            AnyMessage::Welcome(_) => Ok(c),
            other => Err(format!("handshake: {other:?}")),
        }
    }

    /// Sends `m` and returns the answer to it (pushes are skipped).
    async fn ask<T: LatticeMessage>(&mut self, m: &T) -> Result<AnyMessage, String> {
        self.rid = self.rid.wrapping_add(1).max(1);
        let rid = self.rid;
        let mut out = Vec::new();
        put_frame(&mut out, T::OPCODE, 0, rid, &m.encode_to_vec());
        self.s.write_all(&out).await.map_err(|e| e.to_string())?;
        loop {
            while let Some(h) = whole_frame(&self.buf, 1 << 20)? {
                let m = lattice_proto::decode(h.opcode, &self.buf[12..h.len])
                    .map_err(|e| e.to_string());
                self.buf.drain(..h.len);
                if h.rid == rid {
                    return m;
                }
            }
            let n = self
                .s
                .read(&mut self.tmp)
                .await
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("server closed the connection".into());
            }
            self.buf.extend_from_slice(&self.tmp[..n]);
        }
    }
}

/// One registered account of the run.
#[derive(Clone)]
struct Account {
    name: String,
    token: Option<Vec<u8>>,
}

type Accounts = Rc<RefCell<Vec<Account>>>;

fn record(p: &Rc<RefCell<Phase>>, r: Result<AnyMessage, String>, t0: Instant, ok: bool) -> bool {
    let mut p = p.borrow_mut();
    match r {
        Ok(AnyMessage::Error(e)) if e.code == error_code::BUSY => {
            p.busy += 1;
            false
        }
        Ok(AnyMessage::Error(e)) => {
            p.error(format!("error {}: {}", e.code, e.message));
            false
        }
        Ok(_) if ok => {
            p.ok += 1;
            let _ = p
                .hist
                .as_mut()
                .expect("hist")
                .record(t0.elapsed().as_nanos().max(1) as u64);
            true
        }
        Ok(other) => {
            p.error(format!("unexpected answer {other:?}"));
            false
        }
        Err(e) => {
            p.error(e);
            false
        }
    }
}

async fn register_worker(
    o: LoginOpts,
    i: usize,
    until: Instant,
    p: Rc<RefCell<Phase>>,
    acc: Accounts,
) {
    let mut c = match Conn::open(&o, i).await {
        Ok(c) => c,
        Err(e) => return p.borrow_mut().error(e),
    };
    let run = std::process::id();
    let mut k = 0u64;
    while Instant::now() < until {
        k += 1;
        let name = format!("l{run}c{i}n{k}");
        let t0 = Instant::now();
        let r = c
            .ask(&pb::Register {
                account: name.clone(),
                password: o.password.clone(),
                nickname: format!("n{k}"),
            })
            .await;
        let ok = matches!(r, Ok(AnyMessage::RegisterOk(_)));
        if record(&p, r, t0, ok) {
            acc.borrow_mut().push(Account { name, token: None });
        }
    }
}

async fn login_worker(
    o: LoginOpts,
    i: usize,
    until: Instant,
    p: Rc<RefCell<Phase>>,
    acc: Accounts,
) {
    let mut c = match Conn::open(&o, i).await {
        Ok(c) => c,
        Err(e) => return p.borrow_mut().error(e),
    };
    let n = acc.borrow().len();
    // Each worker takes the accounts i, i + C, i + 2C, … so no two log the same one in.
    let mut j = i;
    while Instant::now() < until && n > 0 {
        let name = acc.borrow()[j % n].name.clone();
        j += o.connections;
        let t0 = Instant::now();
        let r = c
            .ask(&pb::Login {
                account: name,
                password: o.password.clone(),
            })
            .await;
        let token = match &r {
            Ok(AnyMessage::LoginOk(ok)) => Some(ok.session_token.clone()),
            _ => None,
        };
        if record(&p, r, t0, token.is_some()) {
            acc.borrow_mut()[(j - o.connections) % n].token = token;
            if let Err(e) = c.ask(&pb::Logout {}).await {
                return p.borrow_mut().error(e);
            }
        }
    }
}

async fn reconnect_worker(
    o: LoginOpts,
    i: usize,
    until: Instant,
    p: Rc<RefCell<Phase>>,
    acc: Accounts,
) {
    let with_token: Vec<usize> = acc
        .borrow()
        .iter()
        .enumerate()
        .filter(|(k, a)| a.token.is_some() && k % o.connections == i)
        .map(|(k, _)| k)
        .collect();
    if with_token.is_empty() {
        return;
    }
    let mut j = 0;
    while Instant::now() < until {
        let k = with_token[j % with_token.len()];
        j += 1;
        let token = acc.borrow()[k].token.clone().expect("filtered");
        let t0 = Instant::now();
        let r = match Conn::open(&o, i + j).await {
            Ok(mut c) => {
                c.ask(&pb::TokenLogin {
                    session_token: token,
                })
                .await
            }
            Err(e) => Err(e),
        };
        let fresh = match &r {
            Ok(AnyMessage::LoginOk(ok)) => Some(ok.session_token.clone()),
            _ => None,
        };
        if record(&p, r, t0, fresh.is_some()) {
            acc.borrow_mut()[k].token = fresh;
        }
    }
}

async fn connect_worker(o: LoginOpts, i: usize, until: Instant, p: Rc<RefCell<Phase>>) {
    let mut j = 0;
    while Instant::now() < until {
        j += 1;
        let t0 = Instant::now();
        let r = match Conn::open(&o, i + j).await {
            Ok(mut c) => {
                c.ask(&pb::Ping {
                    payload: vec![1; 16],
                })
                .await
            }
            Err(e) => Err(e),
        };
        let ok = matches!(r, Ok(AnyMessage::Pong(_)));
        record(&p, r, t0, ok);
    }
}

/// The phases, in order.
pub const PHASES: [&str; 4] = ["register", "login", "reconnect", "connect"];

/// Runs the phases; returns them in order.
pub async fn run(o: &LoginOpts, quiet: bool) -> Vec<Phase> {
    let acc: Accounts = Rc::new(RefCell::new(Vec::new()));
    let mut out = Vec::new();
    for name in PHASES {
        let p = Rc::new(RefCell::new(Phase::new(name)));
        let t0 = Instant::now();
        let until = t0 + o.duration;
        let mut tasks = Vec::new();
        for i in 0..o.connections {
            let (o2, p2, a2) = (o.clone(), p.clone(), acc.clone());
            tasks.push(tokio::task::spawn_local(async move {
                match name {
                    "register" => register_worker(o2, i, until, p2, a2).await,
                    "login" => login_worker(o2, i, until, p2, a2).await,
                    "reconnect" => reconnect_worker(o2, i, until, p2, a2).await,
                    _ => connect_worker(o2, i, until, p2).await,
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        p.borrow_mut().secs = t0.elapsed().as_secs_f64();
        let phase = Rc::try_unwrap(p)
            .map(RefCell::into_inner)
            .unwrap_or_default();
        if !quiet {
            eprintln!(
                "{:<9} {:>9.1}/s  p50 {:>9.1}µs  p99 {:>9.1}µs  ok {}  busy {}  errors {}",
                phase.name,
                phase.rate(),
                phase.q_us(0.5),
                phase.q_us(0.99),
                phase.ok,
                phase.busy,
                phase.errors
            );
        }
        out.push(phase);
    }
    out
}

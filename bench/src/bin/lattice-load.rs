//! `lattice-load`: a load generator for Lattice (and anything speaking its frame format).
//!
//! N connections spread over several 127.0.0.x source addresses, D requests in flight per connection
//! (closed loop) or a fixed total rate (open loop, latency measured from each request's intended send
//! time so a stalled server cannot hide its queueing: no coordinated omission). Latency goes into an
//! HdrHistogram; a progress line prints every second; a JSON report is written on request; the exit
//! code is non-zero when errors exceed `--max-errors`.
//!
//! `--transport ws` speaks WebSocket (`GET /ws` on the HTTP listener, one frame per masked binary
//! message) instead of frames over TCP; `tls` and `wss` do the same inside TLS (rustls on ring). `--scenario storm` opens every connection at once and
//! reports connect-time percentiles (TCP connect, upgrade, Hello/Welcome), failures, and the
//! kernel's listen-queue overflows during the storm (`/proc/net/netstat`, `ListenOverflows`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use lattice_bench::transport::{TlsClient, TlsVersions, Transport};
use lattice_bench::wire::{parse_flags, put_frame, whole_frame};
use lattice_proto::{opcode, pb, AnyMessage};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HELP: &str = "lattice-load — load generator for Lattice

USAGE: lattice-load [--option value ...]

  --addr HOST:PORT      server address: an IP address or a host name, and a port
                        (default 127.0.0.1:7100; IPv6 as [::1]:7100)
  --connections N       connections, 1..=1000000 (default 50)
  --depth D             requests in flight per connection, closed loop, 1..=65536 (default 16);
                        D replies must fit the server's net.send_buffer_limit (256 KiB) at once
                        or it closes the connection
  --rate R              total requests/s for open loop; 0 = closed loop (default 0)
  --payload BYTES       payload size, at most 16777216 (default 100); the server closes a
                        connection whose frame passes its net.max_frame (1 MiB)
  --duration SECS       measured duration, above 0 (default 10)
  --warmup SECS         unmeasured warm-up before it (default 1)
  --scenario S          echo | chat | idle | storm | login (default echo); login runs four
                        phases of --duration each over TCP: registrations, password logins, token
                        reconnects, and plain reconnects (connect + Hello + Ping, the baseline)
  --transport T         tcp | ws | tls | wss (default tcp): frames over TCP, over WebSocket (--addr
                        is the HTTP listener, 7102), over TLS (7104), over WebSocket over TLS (7103)
  --path P              WebSocket path (default /ws)
  --tls-ca FILE         tls, wss: trust this PEM certificate (e.g. from `lattice tool gen-cert`)
  --tls-name NAME       tls, wss: the server name to verify and send as SNI (default localhost)
  --tls-version V       tls, wss: 1.3 | 1.2 | any (default any: 1.3 is negotiated)
  --rooms N             chat rooms, at least 1 (default connections/10, at least 1)
  --sources K           to a 127.x address: spread connections over source addresses
                        127.0.0.1..127.0.0.K, 1..=254 (default 4)
  --max-errors N        exit 1 when errors exceed N (default 0)
  --report FILE         write a JSON report (exit 1 when it cannot be written)
  --quiet               no progress line
  --help                this text
";

#[derive(Clone)]
struct Opts {
    addr: SocketAddr,
    connections: usize,
    depth: usize,
    rate: f64,
    payload: usize,
    duration: Duration,
    warmup: Duration,
    scenario: Scenario,
    rooms: usize,
    sources: u8,
    ws: bool,
    path: String,
    /// `--transport tls|wss`: the TLS client; `None` = plain TCP.
    tls: Option<TlsClient>,
    max_errors: u64,
    report: Option<String>,
    quiet: bool,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Scenario {
    Echo,
    Chat,
    Idle,
    Storm,
    Login,
}

fn parse_opts() -> Result<Opts, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut o = Opts {
        addr: "127.0.0.1:7100".parse().unwrap(),
        connections: 50,
        depth: 16,
        rate: 0.0,
        payload: 100,
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(1),
        scenario: Scenario::Echo,
        rooms: 0,
        sources: 4,
        ws: false,
        path: "/ws".into(),
        tls: None,
        max_errors: 0,
        report: None,
        quiet: false,
    };
    let num = |k: &str, v: &str| -> Result<f64, String> {
        v.parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && *x >= 0.0)
            .ok_or_else(|| format!("--{k}: expected a non-negative number, got {v:?}"))
    };
    let int = |k: &str, v: &str, lo: u64, hi: u64| -> Result<u64, String> {
        v.parse::<u64>()
            .ok()
            .filter(|x| (lo..=hi).contains(x))
            .ok_or_else(|| format!("--{k}: expected a whole number {lo}..={hi}, got {v:?}"))
    };
    let mut rooms_given = false;
    let (mut tls_ca, mut tls_name, mut tls_version) =
        (None, "localhost".to_string(), TlsVersions::Any);
    let mut transport = String::from("tcp");
    for (k, v) in parse_flags(&args)? {
        match k.as_str() {
            "help" => {
                print!("{HELP}");
                std::process::exit(0);
            }
            "addr" => {
                o.addr = v
                    .to_socket_addrs()
                    .map_err(|e| format!("--addr {v}: {e} (expected HOST:PORT)"))?
                    .next()
                    .ok_or_else(|| format!("--addr {v}: the name has no address"))?
            }
            "connections" => o.connections = int(&k, &v, 1, 1_000_000)? as usize,
            "depth" => o.depth = int(&k, &v, 1, 65_536)? as usize,
            "rate" => o.rate = num(&k, &v)?,
            "payload" => o.payload = int(&k, &v, 0, 16 << 20)? as usize,
            "duration" => {
                let secs = num(&k, &v)?;
                if secs == 0.0 {
                    return Err("--duration must be above 0".into());
                }
                o.duration = Duration::from_secs_f64(secs)
            }
            "warmup" => o.warmup = Duration::from_secs_f64(num(&k, &v)?),
            "scenario" => {
                o.scenario = match v.as_str() {
                    "echo" => Scenario::Echo,
                    "chat" => Scenario::Chat,
                    "idle" => Scenario::Idle,
                    "storm" => Scenario::Storm,
                    "login" => Scenario::Login,
                    _ => {
                        return Err(format!(
                            "--scenario: echo, chat, idle, storm or login, got {v:?}"
                        ))
                    }
                }
            }
            "transport" => transport = v,
            "tls-ca" => tls_ca = Some(std::path::PathBuf::from(v)),
            "tls-name" => tls_name = v,
            "tls-version" => {
                tls_version = match v.as_str() {
                    "1.3" => TlsVersions::Tls13,
                    "1.2" => TlsVersions::Tls12,
                    "any" => TlsVersions::Any,
                    _ => return Err(format!("--tls-version: 1.3, 1.2 or any, got {v:?}")),
                }
            }
            "path" => o.path = v,
            "rooms" => {
                o.rooms = int(&k, &v, 1, 1_000_000)? as usize;
                rooms_given = true;
            }
            "sources" => o.sources = int(&k, &v, 1, 254)? as u8,
            "max-errors" => o.max_errors = int(&k, &v, 0, u64::MAX)?,
            "report" => o.report = Some(v),
            "quiet" => o.quiet = true,
            _ => return Err(format!("unknown option --{k} (see --help)")),
        }
    }
    let tls = match transport.as_str() {
        "tcp" => false,
        "ws" => {
            o.ws = true;
            false
        }
        "tls" => true,
        "wss" => {
            o.ws = true;
            true
        }
        _ => {
            return Err(format!(
                "--transport: tcp, ws, tls or wss, got {transport:?}"
            ))
        }
    };
    if tls {
        let ca = tls_ca
            .ok_or("--transport tls and wss need --tls-ca FILE (the server's certificate)")?;
        o.tls = Some(TlsClient::new(&ca, &tls_name, tls_version)?);
    }
    if o.scenario == Scenario::Login && transport != "tcp" {
        return Err(format!(
            "--scenario login runs over TCP only, got --transport {transport}"
        ));
    }
    if !rooms_given {
        o.rooms = (o.connections / 10).max(1);
    }
    Ok(o)
}

#[derive(Default)]
struct Stats {
    hist: Option<Histogram<u64>>,
    window: Option<Histogram<u64>>,
    sent: u64,
    responses: u64,
    measured: u64,
    errors: u64,
    deliveries: u64,
    connected: u64,
    first_error: Option<String>,
    /// Storm: nanoseconds from connect start to Welcome, per connection.
    connect: Option<Histogram<u64>>,
}

impl Stats {
    fn error(&mut self, e: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e);
        }
    }
}

type Shared = Rc<RefCell<Stats>>;

struct Clock {
    start: Instant,
    measure_from: Instant,
    stop_at: Instant,
}

fn main() {
    let o = match parse_opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("lattice-load: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let local = tokio::task::LocalSet::new();
    let code = local.block_on(&rt, run(o));
    std::process::exit(code);
}

/// `--scenario login`: three phases side by side (see `lattice_bench::login`).
async fn run_login(o: &Opts) -> i32 {
    let lo = lattice_bench::login::LoginOpts {
        addr: o.addr,
        connections: o.connections,
        duration: o.duration,
        sources: o.sources,
        password: "load-test password".into(),
    };
    let phases = lattice_bench::login::run(&lo, o.quiet).await;
    let errors: u64 = phases.iter().map(|p| p.errors).sum();
    let mut json = serde_json::json!({
        "scenario": "login", "addr": o.addr.to_string(), "connections": o.connections,
        "duration_s": o.duration.as_secs_f64(), "errors": errors,
    });
    println!(
        "login conns={}: phase, ops/s, p50 µs, p99 µs, busy, errors",
        o.connections
    );
    for p in &phases {
        json[p.name] = p.json();
        println!(
            "  {:<9} {:>10.1} {:>10.1} {:>10.1} {:>6} {:>6}",
            p.name,
            p.rate(),
            p.q_us(0.5),
            p.q_us(0.99),
            p.busy,
            p.errors
        );
        if let Some(e) = &p.first_error {
            eprintln!("{}: first error: {e}", p.name);
        }
    }
    let report_ok = write_report(o, &json);
    exit_code(o, errors, report_ok)
}

async fn run(o: Opts) -> i32 {
    if o.scenario == Scenario::Login {
        return run_login(&o).await;
    }
    let stats: Shared = Rc::new(RefCell::new(Stats {
        hist: Some(Histogram::new_with_bounds(1, 60_000_000_000, 3).unwrap()),
        window: Some(Histogram::new_with_bounds(1, 60_000_000_000, 3).unwrap()),
        connect: Some(Histogram::new_with_bounds(1, 600_000_000_000, 3).unwrap()),
        ..Default::default()
    }));
    let overflows_before = listen_overflows();
    let now = Instant::now();
    let clock = Rc::new(Clock {
        start: now,
        measure_from: now + o.warmup,
        stop_at: now + o.warmup + o.duration,
    });
    let mut tasks = Vec::new();
    for i in 0..o.connections {
        let (o2, st, ck) = (o.clone(), stats.clone(), clock.clone());
        tasks.push(tokio::task::spawn_local(async move {
            if let Err(e) = connection(i, &o2, &st, &ck).await {
                st.borrow_mut().error(format!("connection {i}: {e}"));
            }
        }));
    }
    // Progress, once a second.
    let progress = {
        let (st, ck, quiet, n) = (stats.clone(), clock.clone(), o.quiet, o.connections);
        tokio::task::spawn_local(async move {
            let mut last = 0u64;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let mut guard = st.borrow_mut();
                let s = &mut *guard;
                let done = s.responses - last;
                last = s.responses;
                let w = s.window.as_mut().unwrap();
                let line = format!(
                    "[{:>5.1}s] {:>9} rt/s  p50 {:>8}  p99 {:>8}  max {:>8}  errors {}  connected {}/{}",
                    ck.start.elapsed().as_secs_f64(),
                    done,
                    fmt_ns(w.value_at_quantile(0.5)),
                    fmt_ns(w.value_at_quantile(0.99)),
                    fmt_ns(w.max()),
                    s.errors,
                    s.connected,
                    n
                );
                w.reset();
                drop(guard);
                if !quiet {
                    eprintln!("{line}");
                }
            }
        })
    };
    for t in tasks {
        let _ = t.await;
    }
    progress.abort();
    let overflows = match (overflows_before, listen_overflows()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let code = report(&o, &stats.borrow(), &clock, overflows);
    code
}

/// `TcpExt: ListenOverflows` of `/proc/net/netstat` (connections the kernel dropped because a
/// listen queue was full), machine-wide; None where it cannot be read.
fn listen_overflows() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = text.lines();
    while let Some(names) = lines.next() {
        let values = lines.next()?;
        if !names.starts_with("TcpExt:") {
            continue;
        }
        let i = names
            .split_whitespace()
            .position(|n| n == "ListenOverflows")?;
        return values.split_whitespace().nth(i)?.parse().ok();
    }
    None
}

fn fmt_ns(ns: u64) -> String {
    if ns >= 10_000_000 {
        format!("{:.1}ms", ns as f64 / 1e6)
    } else {
        format!("{:.1}µs", ns as f64 / 1e3)
    }
}

async fn connection(i: usize, o: &Opts, st: &Shared, ck: &Clock) -> Result<(), String> {
    let t_connect = Instant::now();
    let s = lattice_bench::transport::connect(o.addr, i, o.sources).await?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    match &o.tls {
        None => session(s, i, o, st, ck, t_connect).await,
        Some(tls) => session(tls.connect(s).await?, i, o, st, ck, t_connect).await,
    }
}

/// One connection's life once its byte stream is up: the WebSocket upgrade (ws, wss), Hello (and
/// JoinRoom), then the scenario.
async fn session<S: Transport>(
    mut s: S,
    i: usize,
    o: &Opts,
    st: &Shared,
    ck: &Clock,
    t_connect: Instant,
) -> Result<(), String> {
    // Connections that only connect and wait keep small buffers (10,000+ of them at once).
    let quiet = matches!(o.scenario, Scenario::Storm | Scenario::Idle);
    let mut buf = Vec::with_capacity(if quiet { 256 } else { 64 * 1024 });
    let mut tmp = vec![0u8; if quiet { 1024 } else { 64 * 1024 }];
    // WebSocket: raw bytes from the socket go to `wsbuf`, the frames they carry to `buf`.
    let mut wsbuf = Vec::new();
    let mask = [(i as u8) | 1, 0x5a, (i >> 8) as u8, 0xa5];
    if o.ws {
        let host = o.addr.to_string();
        s.write_all(&lattice_bench::ws::upgrade_request(&host, &o.path))
            .await
            .map_err(|e| format!("upgrade: {e}"))?;
        s.flush().await.map_err(|e| format!("upgrade: {e}"))?;
        loop {
            let n = s
                .read(&mut tmp)
                .await
                .map_err(|e| format!("upgrade: {e}"))?;
            if n == 0 {
                return Err("closed during the upgrade".into());
            }
            wsbuf.extend_from_slice(&tmp[..n]);
            if let Some(head) = lattice_bench::ws::upgrade_response(&wsbuf)? {
                wsbuf.drain(..head);
                break;
            }
        }
    }
    let ws = o.ws;
    // Frames as written on the wire: as they are (tcp) or one masked binary message each (ws).
    let framed = move |frames: &[u8], out: &mut Vec<u8>| -> Result<(), String> {
        if ws {
            lattice_bench::ws::wrap(frames, mask, out)
        } else {
            out.extend_from_slice(frames);
            Ok(())
        }
    };
    // Bytes read go into `buf` as frames.
    let take_in =
        move |bytes: &[u8], wsbuf: &mut Vec<u8>, buf: &mut Vec<u8>| -> Result<(), String> {
            if ws {
                wsbuf.extend_from_slice(bytes);
                let used = lattice_bench::ws::unwrap(wsbuf, buf)?;
                wsbuf.drain(..used);
            } else {
                buf.extend_from_slice(bytes);
            }
            Ok(())
        };
    // Hello / Welcome.
    let mut out = Vec::new();
    let hello = pb::Hello {
        client_version: lattice_proto::version::PROTOCOL.to_string(),
        ..Default::default()
    };
    put_frame(&mut out, opcode::HELLO, 0, 1, &hello.encode_to_vec());
    if o.scenario == Scenario::Chat {
        let j = pb::JoinRoom {
            room: format!("room-{}", i % o.rooms),
        };
        put_frame(&mut out, opcode::JOIN_ROOM, 0, 2, &j.encode_to_vec());
    }
    let mut wire_out = Vec::new();
    framed(&out, &mut wire_out)?;
    s.write_all(&wire_out).await.map_err(|e| e.to_string())?;
    s.flush().await.map_err(|e| e.to_string())?;
    // Bytes that followed the 101 in the same read.
    if !wsbuf.is_empty() {
        take_in(&[], &mut wsbuf, &mut buf)?;
    }
    let want = if o.scenario == Scenario::Chat { 2 } else { 1 };
    let mut got = 0;
    while got < want {
        while let Some(h) = whole_frame(&buf, 1 << 20)? {
            if h.opcode == opcode::ERROR {
                return Err(format!(
                    "handshake error: {:?}",
                    lattice_proto::decode(h.opcode, &buf[12..h.len])
                ));
            }
            if h.opcode == opcode::WELCOME || h.opcode == opcode::JOINED {
                got += 1;
            }
            buf.drain(..h.len);
        }
        if got >= want {
            break;
        }
        let n = s.read(&mut tmp).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed during handshake".into());
        }
        take_in(&tmp[..n], &mut wsbuf, &mut buf)?;
        while let Some(h) = whole_frame(&buf, 1 << 20)? {
            if h.opcode == opcode::ERROR {
                return Err(format!(
                    "handshake error: {:?}",
                    lattice_proto::decode(h.opcode, &buf[12..h.len])
                ));
            }
            if h.opcode == opcode::WELCOME || h.opcode == opcode::JOINED {
                got += 1;
            }
            buf.drain(..h.len);
        }
    }
    {
        let mut st = st.borrow_mut();
        st.connected += 1;
        let ns = t_connect.elapsed().as_nanos().max(1) as u64;
        let _ = st.connect.as_mut().unwrap().record(ns);
    }
    if quiet {
        tokio::time::sleep_until(ck.stop_at.into()).await;
        return Ok(());
    }
    let payload: Vec<u8> = (0..o.payload).map(|k| b'a' + (k % 26) as u8).collect();
    let body = match o.scenario {
        Scenario::Chat => pb::Say {
            room: format!("room-{}", i % o.rooms),
            text: String::from_utf8(payload).unwrap(),
        }
        .encode_to_vec(),
        _ => pb::Ping { payload }.encode_to_vec(),
    };
    let op = if o.scenario == Scenario::Chat {
        opcode::SAY
    } else {
        opcode::PING
    };
    let (mut rd, mut wr) = s.halves();
    let pending: Rc<RefCell<HashMap<u32, Instant>>> = Rc::new(RefCell::new(HashMap::new()));
    let per_conn_rate = o.rate / o.connections as f64;
    let writer_done = Rc::new(std::cell::Cell::new(o.rate <= 0.0));
    let closed_loop = o.rate <= 0.0;
    let mut next_rid: u32 = 100;
    let mut frame_out = Vec::new();
    // Closed loop: prime D requests; replies trigger the next ones (in the reader below).
    // Open loop: a writer task sends on schedule.
    let (writer, mut wr_slot) = if closed_loop {
        for _ in 0..o.depth {
            pending.borrow_mut().insert(next_rid, Instant::now());
            put_frame(&mut frame_out, op, 0, next_rid, &body);
            next_rid += 1;
        }
        st.borrow_mut().sent += o.depth as u64;
        let mut w = Vec::new();
        framed(&frame_out, &mut w)?;
        wr.write_all(&w).await.map_err(|e| e.to_string())?;
        wr.flush().await.map_err(|e| e.to_string())?;
        (None, Some(wr))
    } else {
        let (pending, st, body) = (pending.clone(), st.clone(), body.clone());
        let done = writer_done.clone();
        let stop_at = ck.stop_at;
        let interval = Duration::from_secs_f64(1.0 / per_conn_rate.max(1e-9));
        // Stagger connections across one interval.
        let mut next = Instant::now() + interval.mul_f64(i as f64 / o.connections as f64);
        let task = Some(tokio::task::spawn_local(async move {
            let mut rid = 100u32;
            let mut out = Vec::new();
            let mut wire = Vec::new();
            while next < stop_at {
                tokio::time::sleep_until(next.into()).await;
                let now = Instant::now();
                out.clear();
                let mut n = 0;
                while next <= now && next < stop_at {
                    if pending.borrow().len() >= 100_000 {
                        st.borrow_mut()
                            .error("more than 100000 requests outstanding".into());
                        done.set(true);
                        return wr;
                    }
                    pending.borrow_mut().insert(rid, next);
                    put_frame(&mut out, op, 0, rid, &body);
                    rid = rid.wrapping_add(1).max(100);
                    next += interval;
                    n += 1;
                }
                st.borrow_mut().sent += n;
                wire.clear();
                if let Err(e) = framed(&out, &mut wire) {
                    st.borrow_mut().error(e);
                    done.set(true);
                    return wr;
                }
                if wr.write_all(&wire).await.is_err() || wr.flush().await.is_err() {
                    st.borrow_mut().error("write failed".into());
                    done.set(true);
                    return wr;
                }
            }
            done.set(true);
            wr
        }));
        (task, None)
    };
    let drain_deadline = ck.stop_at + Duration::from_secs(3);
    loop {
        let waiting = !pending.borrow().is_empty();
        let now = Instant::now();
        if now >= ck.stop_at && ((!waiting && writer_done.get()) || now >= drain_deadline) {
            break;
        }
        let timeout_at = if now < ck.stop_at {
            ck.stop_at
        } else {
            (now + Duration::from_millis(10)).min(drain_deadline)
        };
        let n = match tokio::time::timeout_at(timeout_at.into(), rd.read(&mut tmp)).await {
            Err(_) => continue,
            Ok(Ok(0)) => return Err("server closed the connection".into()),
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(format!("read: {e}")),
        };
        take_in(&tmp[..n], &mut wsbuf, &mut buf)?;
        frame_out.clear();
        let now = Instant::now();
        let off = {
            let mut s = st.borrow_mut();
            let mut off = 0;
            while let Some(h) = whole_frame(&buf[off..], 1 << 20)? {
                let frame_body = &buf[off + 12..off + h.len];
                off += h.len;
                if h.rid == 0 {
                    // The icon manifest pushed once after Welcome is not a chat delivery.
                    if h.opcode != opcode::ICON_MANIFEST {
                        s.deliveries += 1;
                    }
                    continue;
                }
                if h.opcode == opcode::ERROR {
                    let e = match lattice_proto::decode(h.opcode, frame_body) {
                        Ok(AnyMessage::Error(e)) => format!("error {}: {}", e.code, e.message),
                        _ => "undecodable error frame".into(),
                    };
                    pending.borrow_mut().remove(&h.rid);
                    s.error(e);
                    continue;
                }
                let Some(t0) = pending.borrow_mut().remove(&h.rid) else {
                    s.error(format!("response to unknown request id {}", h.rid));
                    continue;
                };
                s.responses += 1;
                if t0 >= ck.measure_from && t0 < ck.stop_at {
                    let ns = now.saturating_duration_since(t0).as_nanos().max(1) as u64;
                    let _ = s.hist.as_mut().unwrap().record(ns);
                    s.measured += 1;
                }
                let _ = s
                    .window
                    .as_mut()
                    .unwrap()
                    .record(now.saturating_duration_since(t0).as_nanos().max(1) as u64);
                if closed_loop && now < ck.stop_at {
                    pending.borrow_mut().insert(next_rid, now);
                    put_frame(&mut frame_out, op, 0, next_rid, &body);
                    next_rid = next_rid.wrapping_add(1).max(100);
                    s.sent += 1;
                }
            }
            off
        };
        buf.drain(..off);
        if let (true, Some(w)) = (!frame_out.is_empty(), wr_slot.as_mut()) {
            let mut wire = Vec::with_capacity(frame_out.len() + 16 * 8);
            framed(&frame_out, &mut wire)?;
            w.write_all(&wire)
                .await
                .map_err(|e| format!("write: {e}"))?;
            w.flush().await.map_err(|e| format!("write: {e}"))?;
        }
    }
    if let Some(w) = writer {
        let _ = w.await;
    }
    let left = pending.borrow().len() as u64;
    if left > 0 {
        let mut s = st.borrow_mut();
        s.errors += left;
        if s.first_error.is_none() {
            s.first_error = Some(format!("{left} requests unanswered"));
        }
    }
    Ok(())
}

fn report(o: &Opts, s: &Stats, ck: &Clock, overflows: Option<u64>) -> i32 {
    if o.scenario == Scenario::Storm {
        return report_storm(o, s, ck, overflows);
    }
    let h = s.hist.as_ref().unwrap();
    // The time round trips were measured in: --duration, or less when every connection ended
    // before it (a server that stopped).
    let secs = Instant::now()
        .min(ck.stop_at)
        .saturating_duration_since(ck.measure_from)
        .as_secs_f64()
        .max(1e-9);
    let q = |x: f64| h.value_at_quantile(x) as f64 / 1e3;
    let json = serde_json::json!({
        "scenario": format!("{:?}", o.scenario).to_lowercase(),
        "transport": transport_name(o),
        "addr": o.addr.to_string(),
        "connections": o.connections,
        "connected": s.connected,
        "depth": o.depth,
        "rate": o.rate,
        "payload": o.payload,
        "duration_s": o.duration.as_secs_f64(),
        "measured_s": secs,
        "sent": s.sent,
        "responses": s.responses,
        "measured": s.measured,
        "deliveries": s.deliveries,
        "errors": s.errors,
        "first_error": s.first_error,
        "rt_per_s": s.measured as f64 / secs,
        "latency_us": {
            "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "p999": q(0.999),
            "max": h.max() as f64 / 1e3, "mean": h.mean() / 1e3,
        },
        "wall_s": ck.start.elapsed().as_secs_f64(),
    });
    let report_ok = write_report(o, &json);
    println!(
        "{} conns={} depth={} rate={} payload={}B: {:.0} rt/s, p50 {:.1}µs p90 {:.1}µs p99 {:.1}µs p99.9 {:.1}µs max {:.1}µs, errors {}, deliveries {}",
        json["scenario"].as_str().unwrap(),
        s.connected,
        o.depth,
        o.rate,
        o.payload,
        s.measured as f64 / secs,
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        h.max() as f64 / 1e3,
        s.errors,
        s.deliveries
    );
    if let Some(e) = &s.first_error {
        eprintln!("first error: {e}");
    }
    if secs + 0.001 < o.duration.as_secs_f64() {
        eprintln!(
            "lattice-load: every connection ended {:.1} s into the {:.1} s measured: rt/s is over the {:.1} s measured",
            secs,
            o.duration.as_secs_f64(),
            secs
        );
    }
    if s.measured == 0 && o.scenario != Scenario::Idle {
        eprintln!("lattice-load: no round trip was measured");
        return 1;
    }
    exit_code(o, s.errors, report_ok)
}

/// Writes the JSON report when `--report` asks for one; false (said on stderr) when it cannot.
fn write_report(o: &Opts, json: &serde_json::Value) -> bool {
    let Some(path) = &o.report else {
        return true;
    };
    match std::fs::write(path, serde_json::to_string_pretty(json).unwrap()) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("lattice-load: cannot write report {path}: {e}");
            false
        }
    }
}

/// 1 when errors passed `--max-errors` or the report could not be written, else 0.
fn exit_code(o: &Opts, errors: u64, report_ok: bool) -> i32 {
    if errors > o.max_errors {
        eprintln!(
            "lattice-load: {errors} errors > --max-errors {}",
            o.max_errors
        );
        1
    } else if !report_ok {
        1
    } else {
        0
    }
}

/// Storm: every connection opened at once; connect-time percentiles, failures, overflows.
fn report_storm(o: &Opts, s: &Stats, ck: &Clock, overflows: Option<u64>) -> i32 {
    let h = s.connect.as_ref().unwrap();
    let q = |x: f64| h.value_at_quantile(x) as f64 / 1e3;
    let failures = o.connections as u64 - s.connected;
    let json = serde_json::json!({
        "scenario": "storm",
        "transport": transport_name(o),
        "addr": o.addr.to_string(),
        "connections": o.connections,
        "connected": s.connected,
        "failures": failures,
        "errors": s.errors,
        "first_error": s.first_error,
        "listen_overflows": overflows,
        "connect_us": {
            "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "p999": q(0.999),
            "max": h.max() as f64 / 1e3,
        },
        "wall_s": ck.start.elapsed().as_secs_f64(),
    });
    let report_ok = write_report(o, &json);
    println!(
        "storm {} connections over {}: connected {}, failures {}, listen overflows {}, connect p50 {:.0}µs p90 {:.0}µs p99 {:.0}µs max {:.0}µs",
        o.connections,
        if o.ws { "ws" } else { "tcp" },
        s.connected,
        failures,
        overflows.map_or("unknown".to_string(), |v| v.to_string()),
        q(0.5),
        q(0.9),
        q(0.99),
        h.max() as f64 / 1e3
    );
    if let Some(e) = &s.first_error {
        eprintln!("first error: {e}");
    }
    exit_code(o, s.errors, report_ok)
}

/// `tcp`, `ws`, `tls` or `wss`, as given to `--transport`.
fn transport_name(o: &Opts) -> &'static str {
    match (o.ws, o.tls.is_some()) {
        (false, false) => "tcp",
        (true, false) => "ws",
        (false, true) => "tls",
        (true, true) => "wss",
    }
}

//! Test helpers: start a real `lattice` process on free ports and talk to it with a blocking client.
#![allow(dead_code)]

pub mod cluster;
pub mod etcd;
pub mod operator;
pub mod seq;
pub mod seq_ws;

pub mod tls;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lattice_proto::{pb, AnyMessage, LatticeMessage};

/// `len` bytes of xorshift noise from `seed` (not 0): incompressible, so payloads made of it stay
/// their size through `[compress]`.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A loopback port that was free a moment ago and that this test process has not handed out
/// before. Taken below the kernel's ephemeral range (`net.ipv4.ip_local_port_range`), at random:
/// a port from `bind(:0)` lies inside that range, where any outgoing connection of a parallel
/// test (links, etcd, clients) may take it as its source port before the server binds it
/// ("Address already in use", seen in CI).
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (from, span) = if low > 2048 + 1024 {
        let from = low.saturating_sub(12_000).max(1024);
        (from, low - from)
    } else {
        (40_000, 20_000)
    };
    // xorshift seeded from the process id and the clock: parallel test processes pick apart.
    let mut x = (u64::from(std::process::id()) << 32)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
        | 1;
    for _ in 0..10_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = (from + (x % u64::from(span)) as u32) as u16;
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!("no free loopback port below the ephemeral range after 10,000 tries");
}

/// How many times [`Lattice::start_at`] starts a server whose port was taken under it.
const START_ATTEMPTS: u32 = 3;
/// What the server's log says when a listener's address is taken (`EADDRINUSE`).
const PORT_TAKEN: &str = "Address already in use";

pub struct Lattice {
    pub child: Child,
    pub port: u16,
    /// The HTTP + WebSocket listener (`listeners.http`).
    pub http: u16,
    pub admin: u16,
    pub log: PathBuf,
    pub data: PathBuf,
    /// Leave the data directory on drop (restart tests reuse it).
    pub keep_data: bool,
}

impl Lattice {
    /// Starts `lattice run` with 2 shards on loopback plus `extra` overrides; waits until it accepts.
    pub fn start(extra: &[&str]) -> Lattice {
        Lattice::start_in(None, extra)
    }

    /// As [`Lattice::start`], with the open-files limit of the process set to `nofile` (through
    /// the shell's `ulimit -n`, in the child only).
    pub fn start_in(nofile: Option<u32>, extra: &[&str]) -> Lattice {
        let port = free_port();
        let data =
            std::env::temp_dir().join(format!("lattice-test-data-{}-{port}", std::process::id()));
        Lattice::start_at(nofile, port, data, false, &[], extra)
    }

    /// As [`Lattice::start`], with environment variables `env` set for the server (fault hooks).
    pub fn start_env(env: &[(&str, &str)], extra: &[&str]) -> Lattice {
        let port = free_port();
        let data =
            std::env::temp_dir().join(format!("lattice-test-data-{}-{port}", std::process::id()));
        Lattice::start_at(None, port, data, false, env, extra)
    }

    /// Starts on `data` (kept on drop), with the node name `node`, so a restart finds its journal,
    /// database and machine id again.
    pub fn start_with_data(data: PathBuf, node: &str, extra: &[&str]) -> Lattice {
        let mut args = vec!["--center.node", node];
        args.extend_from_slice(extra);
        Lattice::start_at(None, free_port(), data, true, &[], &args)
    }

    /// Starts the server; if it exits because a port it was given was taken after [`free_port`]
    /// checked it (another test process bound it in between: a start can spend a second opening
    /// storage and waiting on its machine-id lease before it binds), tries again on new ports, at
    /// most [`START_ATTEMPTS`] times in all. Any other early exit fails the test at once.
    fn start_at(
        nofile: Option<u32>,
        port: u16,
        data: PathBuf,
        keep_data: bool,
        env: &[(&str, &str)],
        extra: &[&str],
    ) -> Lattice {
        let mut port = port;
        for attempt in 1..=START_ATTEMPTS {
            match Lattice::try_start(nofile, port, data.clone(), keep_data, env, extra) {
                Ok(l) => return l,
                Err(logs) if attempt < START_ATTEMPTS && logs.contains(PORT_TAKEN) => {
                    eprintln!(
                        "start attempt {attempt}: a port was taken between free_port() and the \
                         server's bind; starting again on new ports"
                    );
                    port = free_port();
                }
                Err(logs) => panic!("lattice exited early: {logs}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// One start: `Err(log)` if the process exits before its admin port answers.
    fn try_start(
        nofile: Option<u32>,
        port: u16,
        data: PathBuf,
        keep_data: bool,
        env: &[(&str, &str)],
        extra: &[&str],
    ) -> Result<Lattice, String> {
        let http = free_port();
        let admin = free_port();
        let log =
            std::env::temp_dir().join(format!("lattice-test-{}-{}.log", std::process::id(), port));
        let mut args: Vec<String> = vec![
            "run".into(),
            "--net.listen".into(),
            format!("127.0.0.1:{port}"),
            "--admin.listen".into(),
            format!("127.0.0.1:{admin}"),
            "--listeners.http".into(),
            format!("127.0.0.1:{http}"),
            "--runtime.shards".into(),
            "2".into(),
            "--shutdown.drain_timeout_ms".into(),
            "3000".into(),
            "--storage.data_dir".into(),
            data.display().to_string(),
        ];
        if !extra.contains(&"--icons.push_manifest") {
            // Tests count the frames that follow Welcome (sequence numbers, replays): the icon
            // manifest push is on only where a test asks for it.
            args.push("--icons.push_manifest".into());
            args.push("false".into());
        }
        if !extra.contains(&"--center.node") {
            // Tests sharing one MariaDB database must not take each other's machine-id lease.
            args.push("--center.node".into());
            args.push(format!("test-{}-{port}", std::process::id()));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut cmd = match nofile {
            None => Command::new(env!("CARGO_BIN_EXE_lattice")),
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(env!("CARGO_BIN_EXE_lattice"));
                c
            }
        };
        let child = cmd
            .args(&args)
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn lattice");
        let mut l = Lattice {
            child,
            port,
            http,
            admin,
            log,
            data,
            keep_data,
        };
        // Generous: on a loaded machine (CI beside other work) opening SQLite and its journal with
        // fsync has taken over 20 s.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // The client listener is bound before the admin listener starts, so probing the admin
            // port does not open (and count) a client connection.
            if TcpStream::connect(("127.0.0.1", admin)).is_ok() {
                break;
            }
            if let Ok(Some(status)) = l.child.try_wait() {
                // The data directory stays for the next attempt (or for the test that owns it).
                l.keep_data = true;
                return Err(format!("{status}: {}", l.logs()));
            }
            assert!(
                Instant::now() < deadline,
                "lattice did not start: {}",
                l.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(l)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded: 10 s) until the log contains `needle`.
    pub fn wait_log(&self, needle: &str) -> String {
        self.wait_log_for(needle, Duration::from_secs(10))
    }

    /// Waits at most `bound` until the log contains `needle`.
    pub fn wait_log_for(&self, needle: &str, bound: Duration) -> String {
        let deadline = Instant::now() + bound;
        loop {
            let l = self.logs();
            if l.contains(needle) {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "log never contained {needle:?}:\n{l}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn metrics(&self) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.admin)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out.split_once("\r\n\r\n").unwrap().1.to_string()
    }

    /// Sum of a metric over shards.
    pub fn metric_total(&self, name: &str) -> u64 {
        per_shard(&self.metrics(), name).iter().sum()
    }

    /// Waits (up to 10 s) until the sum of a metric over shards reaches `at_least`; returns it.
    pub fn wait_metric_total(&self, name: &str, at_least: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.metric_total(name);
            if v >= at_least {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{name} stayed at {v} (< {at_least})\n{}",
                self.metrics()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.port)
    }

    /// Sends SIGTERM and waits (bounded) for the exit code.
    pub fn terminate(&mut self) -> i32 {
        unsafe_free_kill(self.child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "lattice did not stop: {}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `kill -SIG pid` through the kill(1) command (keeps tests free of unsafe).
pub fn unsafe_free_kill(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(st.success());
    if sig == "STOP" {
        // The stop reaches each thread on its way back to user space, after `kill` returned: on a
        // loaded machine a thread can still handle what arrives meanwhile. Wait until every
        // thread is stopped.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let all_stopped = std::fs::read_dir(format!("/proc/{pid}/task"))
                .map(|d| {
                    d.flatten().all(|t| {
                        std::fs::read_to_string(t.path().join("stat")).is_ok_and(|st| {
                            st.rsplit_once(") ")
                                .is_some_and(|(_, rest)| rest.starts_with('T'))
                        })
                    })
                })
                .unwrap_or(false);
            if all_stopped {
                break;
            }
            assert!(Instant::now() < deadline, "process {pid} did not stop");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Lattice {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
        if !self.keep_data {
            let _ = std::fs::remove_dir_all(&self.data);
        }
    }
}

pub fn per_shard(metrics: &str, name: &str) -> Vec<u64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
pub struct RawFrame {
    pub opcode: u16,
    pub flags: u16,
    pub request_id: u32,
    /// The sequence extension's fields (0 without the SEQ flag).
    pub seq: u32,
    pub ack: u32,
    pub body: Vec<u8>,
}

impl RawFrame {
    /// The text of a `Said` frame (panics on any other message).
    pub fn said_text(&self) -> String {
        match self.decode() {
            AnyMessage::Said(s) => s.text,
            other => panic!("expected Said, got {other:?}"),
        }
    }

    pub fn decode(&self) -> AnyMessage {
        assert_eq!(self.flags & 1, 0, "compressed frame: inflate first");
        lattice_proto::decode(self.opcode, &self.body).expect("server sent a valid body")
    }
}

pub fn encode<T: LatticeMessage>(rid: u32, msg: &T) -> Vec<u8> {
    raw(T::OPCODE, 0, rid, &prost::Message::encode_to_vec(msg))
}

pub fn raw(opcode: u16, flags: u16, rid: u32, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&((12 + body.len()) as u32).to_le_bytes());
    v.extend_from_slice(&opcode.to_le_bytes());
    v.extend_from_slice(&flags.to_le_bytes());
    v.extend_from_slice(&rid.to_le_bytes());
    v.extend_from_slice(body);
    v
}

pub struct Client {
    pub s: TcpStream,
    buf: Vec<u8>,
    pub session_id: u64,
    /// The icon manifest pushed after Welcome.
    pub icons: Option<pb::IconManifest>,
}

impl Client {
    /// Connects without saying Hello.
    pub fn connect_raw(port: u16) -> Client {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        Client {
            s,
            buf: Vec::new(),
            session_id: 0,
            icons: None,
        }
    }

    /// A second handle on the same socket (a dup: the socket stays open while either lives).
    pub fn duplicate(&self) -> Client {
        Client {
            s: self.s.try_clone().unwrap(),
            buf: Vec::new(),
            session_id: self.session_id,
            icons: None,
        }
    }

    /// Connects and completes the Hello/Welcome handshake.
    pub fn connect(port: u16) -> Client {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        Client::handshake(s)
    }

    /// Completes the Hello/Welcome handshake on a connected stream.
    pub fn handshake(s: TcpStream) -> Client {
        let mut c = Client {
            s,
            buf: Vec::new(),
            session_id: 0,
            icons: None,
        };
        c.send(
            1,
            &pb::Hello {
                client_version: lattice_proto::version::PROTOCOL.to_string(),
                ..Default::default()
            },
        );
        match c.recv().decode() {
            AnyMessage::Welcome(w) => c.session_id = w.session_id,
            other => panic!("expected Welcome, got {other:?}"),
        }
        c
    }

    /// As [`Client::connect`] on a server started with `--icons.push_manifest true`: also reads
    /// the icon manifest that follows the first Welcome into `icons`.
    pub fn connect_with_manifest(port: u16) -> Client {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        let mut c = Client::handshake(s);
        match c.recv().decode() {
            AnyMessage::IconManifest(m) => c.icons = Some(m),
            other => panic!("expected IconManifest after Welcome, got {other:?}"),
        }
        c
    }

    pub fn send<T: LatticeMessage>(&mut self, rid: u32, msg: &T) {
        self.s.write_all(&encode(rid, msg)).unwrap();
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).unwrap();
    }

    /// Next frame; panics on timeout or close.
    pub fn recv(&mut self) -> RawFrame {
        self.try_recv()
            .expect("connection closed before a frame arrived")
    }

    /// Next frame, or None when the server closed the connection (then this client closes its
    /// side too, as PROTOCOL.md asks: the server's lingering close ends at once).
    pub fn try_recv(&mut self) -> Option<RawFrame> {
        loop {
            if let Some(f) = take_frame(&mut self.buf) {
                return Some(f);
            }
            let mut tmp = [0u8; 65536];
            match self.s.read(&mut tmp) {
                Ok(0) => {
                    let _ = self.s.shutdown(std::net::Shutdown::Write);
                    return None;
                }
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read failed: {e}"),
            }
        }
    }

    /// True when the server closes the connection (reads until EOF, bounded by the read timeout).
    pub fn closed_by_server(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.try_recv().is_none() {
                return true;
            }
        }
        false
    }
}

/// Takes the first frame out of `buf` when it is complete.
pub fn take_frame(buf: &mut Vec<u8>) -> Option<RawFrame> {
    if buf.len() < 12 {
        return None;
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().unwrap()) as usize;
    if buf.len() < len {
        return None;
    }
    let flags = u16::from_le_bytes(buf[6..8].try_into().unwrap());
    // The SEQ flag (0x0002) puts `u32 seq, u32 ack` before the body.
    let (seq, ack, body_at) = if flags & 2 != 0 {
        (
            u32::from_le_bytes(buf[12..16].try_into().unwrap()),
            u32::from_le_bytes(buf[16..20].try_into().unwrap()),
            20,
        )
    } else {
        (0, 0, 12)
    };
    let f = RawFrame {
        opcode: u16::from_le_bytes(buf[4..6].try_into().unwrap()),
        flags,
        request_id: u32::from_le_bytes(buf[8..12].try_into().unwrap()),
        seq,
        ack,
        body: buf[body_at..len].to_vec(),
    };
    buf.drain(..len);
    Some(f)
}

pub fn expect_error(f: &RawFrame, code: u32) -> pb::Error {
    match f.decode() {
        AnyMessage::Error(e) => {
            assert_eq!(e.code, code, "unexpected error {e:?}");
            e
        }
        other => panic!("expected Error {code}, got {other:?}"),
    }
}

/// One HTTP/1.1 exchange on a new connection: sends `request` as is, returns (status, head,
/// body) of the response, read until the server closes or `Content-Length` is complete.
pub fn http_exchange(port: u16, request: &[u8]) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    read_response(&mut s).expect("a response")
}

/// Reads one HTTP response from `s` (which must not send more behind it).
pub fn read_response(s: &mut TcpStream) -> Option<(u16, String, Vec<u8>)> {
    let mut buf = Vec::new();
    let r = read_response_buffered(s, &mut buf);
    assert!(buf.is_empty(), "unexpected bytes after the response");
    r
}

/// Reads the next HTTP response from `s`, keeping bytes of later ones in `buf`.
pub fn read_response_buffered(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Option<(u16, String, Vec<u8>)> {
    let mut tmp = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = s.read(&mut tmp).ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&tmp[..n]);
            }
            let body = buf[end + 4..end + 4 + len].to_vec();
            buf.drain(..end + 4 + len);
            return Some((status, head, body));
        }
        let n = s.read(&mut tmp).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

/// A minimal WebSocket client (masked frames, one frame per binary message), for tests.
pub struct WsClient {
    pub s: TcpStream,
    buf: Vec<u8>,
    pub session_id: u64,
    /// The server's pings seen (answered automatically).
    pub pings: usize,
}

/// One message or control frame from the server.
#[derive(Debug, Clone, PartialEq)]
pub enum WsMsg {
    Binary(Vec<u8>),
    Text(String),
    Close(Option<u16>, String),
}

impl WsClient {
    /// Opens a WebSocket on `path` with extra request header lines; returns the client or the
    /// refusal's (status, body).
    pub fn open(port: u16, path: &str, headers: &str) -> Result<WsClient, (u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: lattice.v1\r\n{headers}\r\n"
        );
        s.write_all(req.as_bytes()).unwrap();
        // Read the head byte by byte: frames may follow it.
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(s.read(&mut b).unwrap(), 1, "closed during the handshake");
            head.push(b[0]);
        }
        let head = String::from_utf8(head).unwrap();
        let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
        if status != 101 {
            let mut rest = String::new();
            let _ = s.read_to_string(&mut rest);
            return Err((status, format!("{head}{rest}")));
        }
        assert!(
            head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
            "{head}"
        );
        assert!(
            head.contains("Sec-WebSocket-Protocol: lattice.v1\r\n"),
            "{head}"
        );
        Ok(WsClient {
            s,
            buf: Vec::new(),
            session_id: 0,
            pings: 0,
        })
    }

    /// Opens `/ws` and says Hello.
    pub fn connect(port: u16) -> WsClient {
        let mut c = WsClient::open(port, "/ws", "").expect("upgrade");
        c.send(
            1,
            &pb::Hello {
                client_version: lattice_proto::version::PROTOCOL.to_string(),
                resume: false,
            },
        );
        match c.recv().decode() {
            AnyMessage::Welcome(w) => c.session_id = w.session_id,
            other => panic!("expected Welcome, got {other:?}"),
        }
        c
    }

    /// Sends a frame (masked, with `opcode`, final).
    pub fn send_frame(&mut self, opcode: u8, payload: &[u8]) {
        self.try_send_frame(opcode, payload).unwrap();
    }

    /// [`WsClient::send_frame`], returning the write's error (a cut socket).
    pub fn try_send_frame(&mut self, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut v = vec![0x80 | opcode];
        let n = payload.len();
        if n < 126 {
            v.push(0x80 | n as u8);
        } else if n <= 0xffff {
            v.push(0x80 | 126);
            v.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            v.push(0x80 | 127);
            v.extend_from_slice(&(n as u64).to_be_bytes());
        }
        v.extend_from_slice(&mask);
        v.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.s.write_all(&v)
    }

    pub fn send<T: LatticeMessage>(&mut self, rid: u32, msg: &T) {
        self.send_frame(2, &encode(rid, msg));
    }

    /// The next message (pings are answered and skipped); None when the server closed.
    pub fn next(&mut self) -> Option<WsMsg> {
        loop {
            if self.buf.len() >= 2 {
                let (b0, b1) = (self.buf[0], self.buf[1]);
                assert_eq!(b1 & 0x80, 0, "server frames are not masked");
                let (len, at) = match b1 & 0x7f {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    127 if self.buf.len() >= 10 => (
                        u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize,
                        10,
                    ),
                    126 | 127 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                if at > 0 && self.buf.len() >= at + len {
                    assert_eq!(b0 & 0x80, 0x80, "server frames are final");
                    let payload: Vec<u8> = self.buf[at..at + len].to_vec();
                    self.buf.drain(..at + len);
                    match b0 & 0x0f {
                        1 => return Some(WsMsg::Text(String::from_utf8(payload).unwrap())),
                        2 => return Some(WsMsg::Binary(payload)),
                        8 => {
                            let code = (payload.len() >= 2)
                                .then(|| u16::from_be_bytes([payload[0], payload[1]]));
                            let reason =
                                String::from_utf8_lossy(payload.get(2..).unwrap_or_default())
                                    .to_string();
                            return Some(WsMsg::Close(code, reason));
                        }
                        9 => {
                            self.pings += 1;
                            self.send_frame(10, &payload);
                            continue;
                        }
                        10 => continue,
                        op => panic!("unexpected opcode {op}"),
                    }
                }
            }
            let mut tmp = [0u8; 65536];
            match self.s.read(&mut tmp) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read failed: {e}"),
            }
        }
    }

    /// The next Lattice frame (one binary message).
    pub fn recv(&mut self) -> RawFrame {
        match self.next() {
            Some(WsMsg::Binary(b)) => {
                let len = u32::from_le_bytes(b[0..4].try_into().unwrap()) as usize;
                assert_eq!(len, b.len(), "one frame per binary message");
                let mut buf = b;
                take_frame(&mut buf).expect("a whole frame")
            }
            other => panic!("expected a binary message, got {other:?}"),
        }
    }

    /// Reads until the server's close frame; returns its code and reason (the TCP close
    /// follows).
    pub fn expect_close(&mut self) -> (Option<u16>, String) {
        loop {
            match self.next() {
                Some(WsMsg::Close(code, reason)) => return (code, reason),
                Some(_) => continue,
                None => panic!("connection closed without a close frame"),
            }
        }
    }
}

/// `promtool check metrics` accepts `text` (fails saying what to install when promtool is missing).
pub fn promtool_accepts(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect(
            "promtool not found: install Debian's `prometheus` package (deploy/test.sh does this)",
        );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A SIGTERM while a restart waits for the clock to pass its machine id's last reservation (the
/// server before it was killed, so that reservation is still ahead) stops the start: logged, exit 0.
/// `lattice run ARGS` with its log in `log` (stderr, no colours).
pub fn spawn_logged(args: &[&str], log: &std::path::Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_lattice"))
        .args(args)
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Waits for `child` to exit; past a minute (a hang, not a timing) kills it and panics with `what`
/// and the log.
pub fn exit_within_a_minute(
    child: &mut std::process::Child,
    log: &std::path::Path,
    what: &str,
) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "{what}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

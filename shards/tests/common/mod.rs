//! Test helpers: start a real `lattice` process on free ports and talk to it with a blocking client.
#![allow(dead_code)]

pub mod operator;
pub mod seq;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lattice_proto::{pb, AnyMessage, LatticeMessage};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Lattice {
    pub child: Child,
    pub port: u16,
    pub admin: u16,
    pub log: PathBuf,
    pub data: PathBuf,
}

impl Lattice {
    /// Starts `lattice run` with 2 shards on loopback plus `extra` overrides; waits until it accepts.
    pub fn start(extra: &[&str]) -> Lattice {
        let port = free_port();
        let admin = free_port();
        let log =
            std::env::temp_dir().join(format!("lattice-test-{}-{}.log", std::process::id(), port));
        let data =
            std::env::temp_dir().join(format!("lattice-test-data-{}-{port}", std::process::id()));
        let mut args: Vec<String> = vec![
            "run".into(),
            "--net.listen".into(),
            format!("127.0.0.1:{port}"),
            "--admin.listen".into(),
            format!("127.0.0.1:{admin}"),
            "--runtime.shards".into(),
            "2".into(),
            "--shutdown.drain_timeout_ms".into(),
            "3000".into(),
            "--storage.data_dir".into(),
            data.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Command::new(env!("CARGO_BIN_EXE_lattice"))
            .args(&args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn lattice");
        let mut l = Lattice {
            child,
            port,
            admin,
            log,
            data,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // The client listener is bound before the admin listener starts, so probing the admin
            // port does not open (and count) a client connection.
            if TcpStream::connect(("127.0.0.1", admin)).is_ok() {
                break;
            }
            if let Ok(Some(status)) = l.child.try_wait() {
                panic!("lattice exited early with {status}: {}", l.logs());
            }
            assert!(
                Instant::now() < deadline,
                "lattice did not start: {}",
                l.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        l
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) until the log contains `needle`.
    pub fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
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
}

impl Drop for Lattice {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
        let _ = std::fs::remove_dir_all(&self.data);
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
        }
    }

    /// A second handle on the same socket (a dup: the socket stays open while either lives).
    pub fn duplicate(&self) -> Client {
        Client {
            s: self.s.try_clone().unwrap(),
            buf: Vec::new(),
            session_id: self.session_id,
        }
    }

    /// Connects and completes the Hello/Welcome handshake.
    pub fn connect(port: u16) -> Client {
        let mut c = Client::connect_raw(port);
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

    /// Next frame, or None when the server closed the connection.
    pub fn try_recv(&mut self) -> Option<RawFrame> {
        loop {
            if self.buf.len() >= 12 {
                let len = u32::from_le_bytes(self.buf[0..4].try_into().unwrap()) as usize;
                if self.buf.len() >= len {
                    let flags = u16::from_le_bytes(self.buf[6..8].try_into().unwrap());
                    // The SEQ flag (0x0002) puts `u32 seq, u32 ack` before the body.
                    let (seq, ack, body_at) = if flags & 2 != 0 {
                        (
                            u32::from_le_bytes(self.buf[12..16].try_into().unwrap()),
                            u32::from_le_bytes(self.buf[16..20].try_into().unwrap()),
                            20,
                        )
                    } else {
                        (0, 0, 12)
                    };
                    let f = RawFrame {
                        opcode: u16::from_le_bytes(self.buf[4..6].try_into().unwrap()),
                        flags,
                        request_id: u32::from_le_bytes(self.buf[8..12].try_into().unwrap()),
                        seq,
                        ack,
                        body: self.buf[body_at..len].to_vec(),
                    };
                    self.buf.drain(..len);
                    return Some(f);
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

pub fn expect_error(f: &RawFrame, code: u32) -> pb::Error {
    match f.decode() {
        AnyMessage::Error(e) => {
            assert_eq!(e.code, code, "unexpected error {e:?}");
            e
        }
        other => panic!("expected Error {code}, got {other:?}"),
    }
}

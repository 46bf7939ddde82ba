//! Operator-side helpers: the admin API over HTTP with the bearer token, and client connections
//! from chosen source addresses (127.0.0.2, 127.0.0.3, ::1).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

use super::{Client, Lattice};

impl Lattice {
    /// A metric summed over its samples, labelled (per shard) or not.
    pub fn metric(&self, name: &str) -> u64 {
        self.metrics()
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    }

    /// The bearer token the server generated into its data directory.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.data.join("admin.token"))
            .expect("the server wrote its admin token")
            .trim()
            .to_string()
    }

    /// `method path` on the admin listener with `token` (None: no Authorization header).
    pub fn admin_raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (u16, String) {
        let mut s = TcpStream::connect(("127.0.0.1", self.admin)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, body.to_string())
    }

    /// An authorised admin call; returns the status and the JSON answer.
    pub fn admin(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        let (status, text) = self.admin_raw(method, path, Some(&self.token()), body);
        let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status} {text}: {e}"));
        (status, v)
    }

    /// An authorised admin call that must answer 200.
    pub fn admin_ok(&self, method: &str, path: &str, body: &str) -> Value {
        let (status, v) = self.admin(method, path, body);
        assert_eq!(status, 200, "{method} {path}: {v}");
        v
    }
}

/// A TCP connection to `port` on loopback from source address `from` (v4 or v6).
pub fn tcp_from(from: &str, port: u16) -> std::io::Result<TcpStream> {
    let ip: IpAddr = from.parse().unwrap();
    let (domain, dst) = match ip {
        IpAddr::V4(_) => (
            socket2::Domain::IPV4,
            SocketAddr::from(([127, 0, 0, 1], port)),
        ),
        IpAddr::V6(_) => (socket2::Domain::IPV6, SocketAddr::new(ip, port)),
    };
    let s = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
    s.bind(&SocketAddr::new(ip, 0).into())?;
    s.connect_timeout(&dst.into(), Duration::from_secs(5))?;
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_nodelay(true)?;
    Ok(s)
}

impl Client {
    /// A raw client (no Hello yet) from source address `from`.
    pub fn raw_from(from: &str, port: u16) -> Client {
        Client {
            s: tcp_from(from, port).unwrap(),
            buf: Vec::new(),
            session_id: 0,
            icons: None,
        }
    }

    /// Says Hello; returns true when Welcome came, false when the server closed the connection.
    pub fn hello(&mut self) -> bool {
        let hello = lattice_proto::pb::Hello {
            client_version: lattice_proto::version::PROTOCOL.to_string(),
            ..Default::default()
        };
        // A refused connection may already be closed: the write can fail.
        if self.s.write_all(&super::encode(1, &hello)).is_err() {
            return false;
        }
        match self.try_recv() {
            Some(f) => match f.decode() {
                lattice_proto::AnyMessage::Welcome(w) => {
                    self.session_id = w.session_id;
                    true
                }
                other => panic!("expected Welcome, got {other:?}"),
            },
            None => false,
        }
    }
}

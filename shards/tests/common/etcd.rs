//! A throwaway etcd for tests (Debian `etcd-server` 3.4, installed by deploy/ci/etcd.sh): free
//! client and peer ports, a temporary data dir; a missing etcd fails the test saying what to
//! install.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::free_port;

/// A throwaway etcd: free client and peer ports, a data dir under the temp dir.
pub struct Etcd {
    child: Option<Child>,
    /// The address etcd listens on (client and peer ports).
    host: String,
    client: u16,
    peer: u16,
    dir: PathBuf,
}

impl Etcd {
    /// Starts etcd on 127.0.0.1.
    pub fn start() -> Etcd {
        Etcd::start_on("127.0.0.1")
    }

    /// Starts etcd listening on `host` (an address of this network namespace).
    pub fn start_on(host: &str) -> Etcd {
        let found = Command::new("etcd")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        assert!(
            matches!(found, Ok(s) if s.success()),
            "etcd is required for these tests: run deploy/ci/etcd.sh (Debian: apt-get install etcd-server)"
        );
        let client = free_port();
        let peer = free_port();
        let dir =
            std::env::temp_dir().join(format!("lattice-etcd-test-{}-{client}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut e = Etcd {
            child: None,
            host: host.to_string(),
            client,
            peer,
            dir,
        };
        e.run();
        e
    }

    pub fn url(&self) -> String {
        format!("http://{}:{}", self.host, self.client)
    }

    pub fn endpoints_arg(&self) -> String {
        format!("[\"{}\"]", self.url())
    }

    /// Starts etcd on the same ports and data dir; waits (bounded) until it answers.
    pub fn run(&mut self) {
        let log = std::fs::File::create(self.dir.join("etcd.log")).unwrap();
        let child = Command::new("etcd")
            .args([
                "--name",
                "t",
                "--data-dir",
                &self.dir.join("data").display().to_string(),
                "--listen-client-urls",
                &self.url(),
                "--advertise-client-urls",
                &self.url(),
                "--listen-peer-urls",
                &format!("http://{}:{}", self.host, self.peer),
                "--initial-advertise-peer-urls",
                &format!("http://{}:{}", self.host, self.peer),
                "--initial-cluster",
                &format!("t=http://{}:{}", self.host, self.peer),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.call("/v3/kv/range", r#"{"key":"eA=="}"#).is_none() {
            assert!(
                Instant::now() < deadline,
                "etcd did not start: {}",
                std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops etcd (SIGKILL: an outage, not a goodbye) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A JSON gateway call; `None` when etcd does not answer 200.
    pub fn call(&self, path: &str, body: &str) -> Option<Value> {
        let mut s = TcpStream::connect((self.host.as_str(), self.client)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let (head, body) = out.split_once("\r\n\r\n")?;
        if !head.starts_with("HTTP/1.1 200") {
            return None;
        }
        serde_json::from_str(body).ok()
    }

    /// Every key under `prefix`.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        use base64::Engine as _;
        let b = base64::engine::general_purpose::STANDARD;
        let mut end = prefix.as_bytes().to_vec();
        *end.last_mut().unwrap() += 1;
        let body = format!(
            r#"{{"key":"{}","range_end":"{}","keys_only":true}}"#,
            b.encode(prefix),
            b.encode(&end)
        );
        let v = self.call("/v3/kv/range", &body).expect("etcd answers");
        v["kvs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|kv| {
                        String::from_utf8(b.decode(kv["key"].as_str().unwrap()).unwrap()).unwrap()
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

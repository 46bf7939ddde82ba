//! A TLS client from outside the project: OpenSSL's `s_client`, driven through its stdin. With
//! `-msg` it logs every TLS message (to `-msgfile`), and its `k`/`K` commands send a KeyUpdate
//! (`K` asks for ours in return). The test checks that the server's interval key update reaches
//! an idle client, that the client's own key updates (both kinds) are taken and answered
//! mid-stream, and that Hello/Ping frames — raw bytes on s_client's stdin, Pong frames found in its
//! stdout — keep flowing across all of them.

mod common;

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::tls::*;
use common::*;
use lattice_proto::pb;

/// s_client's -msg lines for a TLS 1.3 KeyUpdate: received (`<<<`) or sent (`>>>`), with the
/// hex of the message (`18 00 00 01 0X`, X = 1 when an answer is requested).
const KU_IN_REQ: &str = "<<< TLS 1.3, Handshake [length 0005], KeyUpdate\n    18 00 00 01 01";
const KU_IN_NOREQ: &str = "<<< TLS 1.3, Handshake [length 0005], KeyUpdate\n    18 00 00 01 00";
const KU_OUT_REQ: &str = ">>> TLS 1.3, Handshake [length 0005], KeyUpdate\n    18 00 00 01 01";
const KU_OUT_NOREQ: &str = ">>> TLS 1.3, Handshake [length 0005], KeyUpdate\n    18 00 00 01 00";

struct SClient {
    child: Child,
    stdin: ChildStdin,
    out: Arc<Mutex<Vec<u8>>>,
    msgfile: std::path::PathBuf,
}

impl SClient {
    fn start(port: u16, ca: &std::path::Path, msgfile: std::path::PathBuf) -> SClient {
        let spawned = Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
            .args([
                "-servername",
                "localhost",
                "-tls1_3",
                "-verify_return_error",
            ])
            .arg("-CAfile")
            .arg(ca)
            .arg("-msg")
            .arg("-msgfile")
            .arg(&msgfile)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        let mut child = spawned.expect(
            "`openssl` not found: install Debian's `openssl` package (deploy/ci/tls.sh does this)",
        );
        let stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        SClient {
            child,
            stdin,
            out,
            msgfile,
        }
    }

    fn msgs(&self) -> String {
        std::fs::read_to_string(&self.msgfile).unwrap_or_default()
    }

    fn count(&self, needle: &str) -> usize {
        self.msgs().matches(needle).count()
    }

    /// Waits (bounded) until `f` holds.
    fn wait(&self, what: &str, mut f: impl FnMut(&SClient) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !f(self) {
            assert!(
                Instant::now() < deadline,
                "{what}: never happened\n--- s_client -msg:\n{}",
                self.msgs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Writes raw bytes to s_client's stdin (they go to the server as application data).
    fn write(&mut self, bytes: &[u8]) {
        self.stdin.write_all(bytes).unwrap();
        self.stdin.flush().unwrap();
    }

    /// A command letter on a line of its own. The caller waits for its effect before writing
    /// anything else, so s_client reads the line alone.
    fn command(&mut self, c: &str) {
        self.write(format!("{c}\n").as_bytes());
    }

    /// Sends a Ping and waits for its Pong in s_client's output (which also carries its own
    /// text: the frame is found by its exact bytes).
    fn ping(&mut self, rid: u32) {
        let payload = format!("p{rid}").into_bytes();
        let ping = encode(
            rid,
            &pb::Ping {
                payload: payload.clone(),
            },
        );
        // s_client treats a line starting with a command letter as a command: keep the first
        // byte (the frame length) away from them.
        assert!(
            !b"QRkKc".contains(&ping[0]),
            "frame starts with a command letter"
        );
        let pong = encode(rid, &pb::Pong { payload });
        let seen = find(&self.out.lock().unwrap(), &pong);
        self.write(&ping);
        let deadline = Instant::now() + Duration::from_secs(30);
        while find(&self.out.lock().unwrap(), &pong) == seen {
            assert!(
                Instant::now() < deadline,
                "no Pong for ping {rid}\n--- s_client -msg:\n{}",
                self.msgs()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for SClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How many times `needle` occurs in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

#[test]
fn openssl_s_client_sees_interval_key_updates_and_makes_its_own_while_pings_flow() {
    let dir = TempDir::new("openssl");
    let (cert, key) = gen_cert(&dir.0);
    // No idle or handshake deadline: the key-update deadline, set by the connection task when the
    // handshake completes, is then the only timer, and it fires only if setting it woke the
    // parked shard loop.
    let t = TlsLattice::start(
        &cert,
        &key,
        &[
            "--tls.key_update_interval_s",
            "1",
            "--tls.handshake_timeout_ms",
            "0",
            "--net.idle_timeout_ms",
            "0",
        ],
    );
    let l = &t.l;
    let mut c = SClient::start(t.tls_port, &cert, dir.0.join("msg.txt"));

    // Hello → Welcome (found by its header: opcode 2, flags 0, request id 1).
    let hello = encode(
        1,
        &pb::Hello {
            client_version: lattice_proto::version::PROTOCOL.to_string(),
            resume: false,
        },
    );
    c.write(&hello);
    let deadline = Instant::now() + Duration::from_secs(30);
    while find(&c.out.lock().unwrap(), &[2, 0, 0, 0, 1, 0, 0, 0]) == 0 {
        assert!(Instant::now() < deadline, "no Welcome\n{}", c.msgs());
        std::thread::sleep(Duration::from_millis(10));
    }

    // The client sends nothing: the server's interval key update (asking for ours) still comes.
    c.wait("the server's interval KeyUpdate on an idle session", |c| {
        c.count(KU_IN_REQ) >= 1
    });
    c.ping(10);
    c.ping(11);

    // `k`: the client updates its sending keys; the server must decrypt what follows.
    let sent = c.count(KU_OUT_NOREQ);
    c.command("k");
    c.wait("s_client's KeyUpdate (k)", |c| c.count(KU_OUT_NOREQ) > sent);
    c.ping(12);

    // `K`: the client asks for the server's update too; the server answers with no application
    // data of its own to carry it.
    let answers = c.count(KU_IN_NOREQ);
    c.command("K");
    c.wait("s_client's KeyUpdate (K)", |c| c.count(KU_OUT_REQ) >= 1);
    c.wait("the server's answer to K", |c| {
        c.count(KU_IN_NOREQ) > answers
    });
    c.ping(13);

    // More interval updates while Pings go on.
    let seen = c.count(KU_IN_REQ);
    let mut rid = 14;
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.count(KU_IN_REQ) < seen + 2 {
        assert!(
            Instant::now() < deadline,
            "no more key updates\n{}",
            c.msgs()
        );
        c.ping(rid);
        rid += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    c.ping(rid);
    assert!(l.metric_total("lattice_tls_key_updates_total") >= 3);
    assert!(l.metric_total("lattice_tls_peer_key_update_requests_total") >= 1);
    assert_eq!(l.metric_total("lattice_tls_errors_total"), 0);
    assert_eq!(l.metric_total("lattice_sessions_closed_protocol_total"), 0);
}

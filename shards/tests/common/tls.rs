//! TLS test helpers: development certificates from `lattice tool gen-cert`, a `lattice` with its
//! TLS listener on, and a blocking rustls client speaking frames.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use lattice_proto::{pb, AnyMessage, LatticeMessage};
use lattice_wire::tls::rustls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::{encode, free_port, take_frame, Lattice, RawFrame};

/// A fresh directory under the temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!(
            "lattice-tls-{tag}-{}-{}",
            std::process::id(),
            free_port()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `lattice tool gen-cert --out DIR --force`; returns (cert, key) paths.
pub fn gen_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let out = Command::new(env!("CARGO_BIN_EXE_lattice"))
        .args(["tool", "gen-cert", "--force", "--out"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gen-cert failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// A `lattice` with its TLS listener on, using `cert`/`key`.
pub struct TlsLattice {
    pub l: Lattice,
    /// The binary frame protocol over TLS (`tls.listen`).
    pub tls_port: u16,
    /// HTTPS and WSS (`tls.http_listen`).
    pub https_port: u16,
}

impl TlsLattice {
    pub fn start(cert: &Path, key: &Path, extra: &[&str]) -> TlsLattice {
        let tls_port = free_port();
        let https_port = free_port();
        let listen = format!("127.0.0.1:{tls_port}");
        let https = format!("127.0.0.1:{https_port}");
        let (c, k) = (cert.display().to_string(), key.display().to_string());
        let mut args: Vec<&str> = vec![
            "--tls.listen",
            &listen,
            "--tls.http_listen",
            &https,
            "--tls.cert",
            &c,
            "--tls.key",
            &k,
        ];
        args.extend_from_slice(extra);
        TlsLattice {
            l: Lattice::start(&args),
            tls_port,
            https_port,
        }
    }
}

/// Which TLS versions a client offers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Versions {
    Tls13,
    Tls12,
}

/// A client configuration trusting exactly the certificate in `ca` (PEM).
pub fn client_config(ca: &Path, v: Versions) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let versions: &[&rustls::SupportedProtocolVersion] = match v {
        Versions::Tls13 => &[&rustls::version::TLS13],
        Versions::Tls12 => &[&rustls::version::TLS12],
    };
    Arc::new(
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A blocking TLS client speaking frames.
pub struct TlsClient {
    pub s: StreamOwned<ClientConnection, TcpStream>,
    buf: Vec<u8>,
    pub session_id: u64,
}

impl TlsClient {
    /// Connects and completes the TLS handshake (not the Hello). Fails with the TLS error (an
    /// untrusted certificate, say).
    pub fn handshake(port: u16, cfg: Arc<ClientConfig>) -> Result<TlsClient, String> {
        let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        tcp.set_nodelay(true).unwrap();
        let conn = ClientConnection::new(cfg, ServerName::try_from("localhost").unwrap())
            .map_err(|e| e.to_string())?;
        let mut s = StreamOwned::new(conn, tcp);
        while s.conn.is_handshaking() {
            s.conn.complete_io(&mut s.sock).map_err(|e| e.to_string())?;
        }
        Ok(TlsClient {
            s,
            buf: Vec::new(),
            session_id: 0,
        })
    }

    /// Handshake, then Hello/Welcome.
    pub fn connect(port: u16, cfg: Arc<ClientConfig>) -> TlsClient {
        let mut c = TlsClient::handshake(port, cfg).expect("TLS handshake");
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

    pub fn send<T: LatticeMessage>(&mut self, rid: u32, msg: &T) {
        self.s.write_all(&encode(rid, msg)).unwrap();
        self.s.flush().unwrap();
    }

    /// Next frame; panics on close or timeout.
    pub fn recv(&mut self) -> RawFrame {
        self.try_recv()
            .expect("connection closed before a frame arrived")
    }

    /// Next frame, or None once the server closed.
    pub fn try_recv(&mut self) -> Option<RawFrame> {
        loop {
            if let Some(f) = take_frame(&mut self.buf) {
                return Some(f);
            }
            let mut tmp = [0u8; 16384];
            match self.s.read(&mut tmp) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionReset
                            | std::io::ErrorKind::UnexpectedEof
                            | std::io::ErrorKind::ConnectionAborted
                            // rustls: the server ended the session with an alert.
                            | std::io::ErrorKind::InvalidData
                    ) =>
                {
                    return None
                }
                Err(e) => panic!("read failed: {e}"),
            }
        }
    }

    /// Ping with `rid` and a payload naming it; checks the Pong.
    pub fn ping(&mut self, rid: u32) {
        let payload = format!("ping {rid}").into_bytes();
        self.send(
            rid,
            &pb::Ping {
                payload: payload.clone(),
            },
        );
        let f = self.recv();
        assert_eq!(f.request_id, rid);
        match f.decode() {
            AnyMessage::Pong(p) => assert_eq!(p.payload, payload),
            other => panic!("expected Pong, got {other:?}"),
        }
    }
}

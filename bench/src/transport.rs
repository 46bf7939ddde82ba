//! The harness's transports: plain TCP, or TLS (rustls on ring, as the server) over TCP. A
//! connection is a [`Transport`]: something that reads and writes and splits into halves.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A connected byte stream that splits into a read half and a write half.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + 'static {
    /// Read half.
    type R: AsyncRead + Unpin + 'static;
    /// Write half.
    type W: AsyncWrite + Unpin + 'static;
    /// Splits the stream.
    fn halves(self) -> (Self::R, Self::W);
}

impl Transport for TcpStream {
    type R = OwnedReadHalf;
    type W = OwnedWriteHalf;
    fn halves(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        self.into_split()
    }
}

impl Transport for TlsStream<TcpStream> {
    type R = ReadHalf<Self>;
    type W = WriteHalf<Self>;
    fn halves(self) -> (Self::R, Self::W) {
        tokio::io::split(self)
    }
}

/// Which TLS versions the client offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersions {
    /// 1.3 and 1.2 (1.3 is negotiated with Lattice).
    Any,
    /// 1.3 only.
    Tls13,
    /// 1.2 only.
    Tls12,
}

/// The client side of `--transport tls`: trusts exactly the certificates in `ca` (PEM) and
/// verifies the server as `name`.
#[derive(Clone)]
pub struct TlsClient {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl TlsClient {
    /// A client trusting `ca`, checking the server's name `name`, offering `versions`.
    pub fn new(ca: &Path, name: &str, versions: TlsVersions) -> Result<TlsClient, String> {
        let mut roots = RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(ca)
            .map_err(|e| format!("--tls-ca {}: {e:?}", ca.display()))?;
        for c in certs {
            let c = c.map_err(|e| format!("--tls-ca {}: {e:?}", ca.display()))?;
            roots
                .add(c)
                .map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
        }
        let v: &[&rustls::SupportedProtocolVersion] = match versions {
            TlsVersions::Any => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersions::Tls13 => &[&rustls::version::TLS13],
            TlsVersions::Tls12 => &[&rustls::version::TLS12],
        };
        let cfg =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(v)
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
        let name = ServerName::try_from(name.to_string())
            .map_err(|e| format!("--tls-name {name}: {e}"))?;
        Ok(TlsClient {
            connector: TlsConnector::from(Arc::new(cfg)),
            name,
        })
    }

    /// Runs the TLS handshake over `tcp`.
    pub async fn connect(&self, tcp: TcpStream) -> Result<TlsStream<TcpStream>, String> {
        self.connector
            .connect(self.name.clone(), tcp)
            .await
            .map_err(|e| format!("tls handshake: {e}"))
    }
}

/// Connects connection `i` to `addr`. To an IPv4 loopback address the connections are spread over
/// the source addresses 127.0.0.1..127.0.0.`sources` (one source address runs out of ports past
/// about 28,000 connections); to any other address the kernel picks the source.
pub async fn connect(
    addr: std::net::SocketAddr,
    i: usize,
    sources: u8,
) -> Result<tokio::net::TcpStream, String> {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(|e| e.to_string())?;
    if let IpAddr::V4(ip) = addr.ip() {
        if ip.is_loopback() {
            let src = IpAddr::V4(Ipv4Addr::new(
                127,
                0,
                0,
                1 + (i % sources.max(1) as usize) as u8,
            ));
            sock.bind(SocketAddr::new(src, 0))
                .map_err(|e| format!("bind {src}: {e}"))?;
        }
    }
    sock.connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))
}

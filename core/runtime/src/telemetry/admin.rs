//! The admin HTTP listener: `GET /metrics` (Prometheus text) and `GET /healthz`.
//!
//! Runs on its own thread with blocking sockets: it is off the request path, serves one short
//! request per connection, and bounds what it reads (request head ≤ 8 KiB, 2 s timeouts).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::metrics::Metrics;

const MAX_HEAD: usize = 8192;

/// A running admin listener; [`AdminServer::stop`] ends its thread.
pub struct AdminServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// Binds `addr` and serves `metrics` on a new thread. Fails if the address cannot be bound.
    pub fn start(addr: &str, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("lattice-admin".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop2.load(Ordering::SeqCst) {
                        break;
                    }
                    match conn {
                        Ok(s) => {
                            if let Err(e) = serve(s, &metrics) {
                                tracing::debug!(error = %e, "admin request failed");
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "admin accept failed"),
                    }
                }
            })?;
        Ok(AdminServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the listener thread and waits for it.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Unblock accept() with a throwaway connection.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(mut s: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_HEAD {
            return respond(
                &mut s,
                "431 Request Header Fields Too Large",
                "text/plain",
                b"",
            );
        }
    }
    let (status, ctype, body) = route(&head, metrics);
    respond(&mut s, status, ctype, body.as_bytes())
}

/// Sans-IO routing of a request head to (status, content type, body).
pub fn route(head: &[u8], metrics: &Metrics) -> (&'static str, &'static str, String) {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    match (method, path) {
        (b"GET", b"/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        (b"GET", b"/healthz") => ("200 OK", "text/plain", "ok\n".into()),
        (b"GET", _) => ("404 Not Found", "text/plain", "not found\n".into()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "method not allowed\n".into(),
        ),
    }
}

fn respond(s: &mut TcpStream, status: &str, ctype: &str, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_metrics_health_and_errors() {
        let m = Metrics::new(1);
        let (st, _, body) = route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &m);
        assert_eq!(st, "200 OK");
        assert!(body.contains("lattice_frames_in_total"));
        assert_eq!(route(b"GET /healthz HTTP/1.1\r\n\r\n", &m).0, "200 OK");
        assert_eq!(route(b"GET /nope HTTP/1.1\r\n\r\n", &m).0, "404 Not Found");
        assert_eq!(
            route(b"POST /metrics HTTP/1.1\r\n\r\n", &m).0,
            "405 Method Not Allowed"
        );
        assert_eq!(route(b"", &m).0, "405 Method Not Allowed");
    }

    #[test]
    fn serves_over_a_socket() {
        let m = Arc::new(Metrics::new(1));
        let srv = AdminServer::start("127.0.0.1:0", m).unwrap();
        let mut c = TcpStream::connect(srv.local_addr()).unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").unwrap();
        let mut resp = String::new();
        c.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 200 OK"));
        assert!(resp.ends_with("ok\n"));
        srv.stop();
    }
}

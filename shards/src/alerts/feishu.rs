//! Feishu (Lark) custom-bot webhook: the signature, the JSON body, and one POST.
//!
//! Signature (the custom bot's "signature verification" setting): the string
//! `"{timestamp}\n{secret}"` is the HMAC-SHA256 *key*, the message is empty, and the MAC is
//! base64-encoded; `timestamp` is Unix seconds, as a string, and must be within an hour of the
//! bot's clock. The body is `{"timestamp", "sign", "msg_type": "text", "content": {"text"}}`
//! (without `timestamp`/`sign` when no secret is set). Success is HTTP 200 with `"code": 0`
//! (older deployments answer `"StatusCode": 0`).
//!
//! Transport: HTTP/1.1 over TCP with timeouts, through TLS (rustls, `ring`) for `https://` URLs,
//! verified against the PEM bundle `alerts.ca_file` (the system's CA bundle by default).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The signature of a request sent at `timestamp` (Unix seconds) with `secret`.
pub fn sign(timestamp: u64, secret: &str) -> String {
    let key = format!("{timestamp}\n{secret}");
    let mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes())
        .expect("HMAC-SHA256 takes a key of any length");
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The JSON body of a text message.
pub fn body(text: &str, timestamp: u64, secret: &str) -> String {
    let mut v = serde_json::json!({
        "msg_type": "text",
        "content": { "text": text },
    });
    if !secret.is_empty() {
        v["timestamp"] = serde_json::Value::String(timestamp.to_string());
        v["sign"] = serde_json::Value::String(sign(timestamp, secret));
    }
    v.to_string()
}

/// A parsed `http(s)://host[:port]/path` webhook URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// `https`.
    pub tls: bool,
    /// Host name or address.
    pub host: String,
    /// Port (80 or 443 when absent).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

/// Why a webhook URL or a send failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The URL is not `http(s)://host[:port]/path`.
    #[error("alerts.webhook {0:?}: expected http(s)://host[:port]/path")]
    Url(String),
    /// The CA bundle could not be read, or holds no certificate.
    #[error("alerts.ca_file {0}")]
    Ca(String),
    /// TLS failed (handshake, certificate, host name).
    #[error("webhook TLS: {0}")]
    Tls(String),
    /// Connecting, writing or reading failed.
    #[error("webhook I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The answer was not HTTP 200 with code 0.
    #[error("webhook refused the message: {0}")]
    Refused(String),
}

/// Parses `http(s)://host[:port]/path`.
pub fn parse_url(url: &str) -> Result<Url, SendError> {
    let bad = || SendError::Url(url.to_string());
    let (tls, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
        (Some(r), _) => (true, r),
        (None, Some(r)) => (false, r),
        _ => return Err(bad()),
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad())?),
        None => (hostport, if tls { 443 } else { 80 }),
    };
    if host.is_empty() || path.contains(char::is_whitespace) {
        return Err(bad());
    }
    Ok(Url {
        tls,
        host: host.to_string(),
        port,
        path: path.to_string(),
    })
}

/// Largest answer read from the webhook.
const MAX_ANSWER: usize = 64 * 1024;

/// The TLS client configuration: the certificates of the PEM bundle at `ca_file` as roots.
pub fn tls_config(ca_file: &str) -> Result<Arc<rustls::ClientConfig>, SendError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_file)
        .map_err(|e| SendError::Ca(format!("{ca_file}: {e}")))?;
    for c in certs {
        let c = c.map_err(|e| SendError::Ca(format!("{ca_file}: {e}")))?;
        // A bundle may hold certificates this verifier cannot use; the rest still count.
        let _ = roots.add(c);
    }
    if roots.is_empty() {
        return Err(SendError::Ca(format!("{ca_file}: no usable certificate")));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SendError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// Reads `r` to its end into `out` (at most `MAX_ANSWER` bytes kept) before `deadline`, setting
/// each read's timeout to what is left with `set_timeout`.
fn read_within<R: Read>(
    r: &mut R,
    set_timeout: impl Fn(&R, Duration) -> std::io::Result<()>,
    deadline: Instant,
    out: &mut Vec<u8>,
) -> std::io::Result<()> {
    let mut buf = [0u8; 4096];
    let late = || {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no whole answer within alerts.timeout_ms",
        )
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(late());
        }
        set_timeout(r, left)?;
        let n = match r.read(&mut buf) {
            Ok(n) => n,
            // The read waited out what was left (Linux reports it as `WouldBlock`).
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(late())
            }
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(());
        }
        out.extend_from_slice(&buf[..n.min(MAX_ANSWER - out.len())]);
        if out.len() >= MAX_ANSWER {
            return Ok(());
        }
    }
}

/// POSTs `json` to `url`, waiting at most `timeout` per step (connect, write) and for the whole
/// answer (a server that trickles it cannot hold the sender longer); `tls` is required for an
/// `https://` URL.
pub fn post(
    url: &Url,
    tls: Option<&Arc<rustls::ClientConfig>>,
    json: &str,
    timeout: Duration,
) -> Result<(), SendError> {
    let addr = (url.host.as_str(), url.port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| SendError::Refused(format!("{} does not resolve", url.host)))?;
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let answer_by = |from: Instant| from + timeout;
    let req = format!(
        "POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: lattice-alerts\r\n\r\n{json}",
        url.path,
        url.host,
        url.port,
        json.len()
    );
    let mut answer = Vec::new();
    if url.tls {
        let cfg = tls.ok_or_else(|| SendError::Tls("no TLS configuration".into()))?;
        let name = rustls::pki_types::ServerName::try_from(url.host.clone())
            .map_err(|e| SendError::Tls(format!("{}: {e}", url.host)))?;
        let conn = rustls::ClientConnection::new(cfg.clone(), name)
            .map_err(|e| SendError::Tls(e.to_string()))?;
        let mut t = rustls::StreamOwned::new(conn, s);
        t.write_all(req.as_bytes()).map_err(tls_io)?;
        let by = answer_by(Instant::now());
        // A server that closes without close_notify after the body is common: keep what came.
        match read_within(
            &mut t,
            |t, d| t.sock.set_read_timeout(Some(d)),
            by,
            &mut answer,
        ) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !answer.is_empty() => {}
            Err(e) => return Err(tls_io(e)),
        }
    } else {
        s.write_all(req.as_bytes())?;
        let by = answer_by(Instant::now());
        read_within(&mut s, |s, d| s.set_read_timeout(Some(d)), by, &mut answer)?;
    }
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).unwrap_or("");
    if status != "200" {
        return Err(SendError::Refused(format!(
            "HTTP {status}: {}",
            body.chars().take(200).collect::<String>()
        )));
    }
    let v: serde_json::Value = serde_json::from_str(body.trim())
        .map_err(|_| SendError::Refused(format!("answer is not JSON: {body:.200}")))?;
    let code = v
        .get("code")
        .or_else(|| v.get("StatusCode"))
        .and_then(|c| c.as_i64());
    match code {
        Some(0) => Ok(()),
        _ => Err(SendError::Refused(
            v.to_string().chars().take(300).collect(),
        )),
    }
}

/// A TLS error surfaces as an I/O error wrapping rustls' error: name it as TLS.
fn tls_io(e: std::io::Error) -> SendError {
    if e.get_ref().is_some_and(|i| i.is::<rustls::Error>()) {
        SendError::Tls(e.to_string())
    } else {
        SendError::Io(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_an_independent_implementation() {
        // Python: base64(hmac.new(b"1599360473\ntest-secret", b"", sha256).digest())
        assert_eq!(
            sign(1599360473, "test-secret"),
            "wSds2BzzFIIGf/WrhUO+NI1q/9j+FRJd3JNHKAq0NZY="
        );
    }

    #[test]
    fn body_carries_timestamp_and_sign_only_with_a_secret() {
        let v: serde_json::Value = serde_json::from_str(&body("hi \"x\"", 5, "s")).unwrap();
        assert_eq!(v["msg_type"], "text");
        assert_eq!(v["content"]["text"], "hi \"x\"");
        assert_eq!(v["timestamp"], "5");
        assert_eq!(v["sign"], sign(5, "s"));
        let v: serde_json::Value = serde_json::from_str(&body("hi", 5, "")).unwrap();
        assert!(v.get("sign").is_none() && v.get("timestamp").is_none());
    }

    #[test]
    fn a_trickled_answer_is_given_up_at_the_deadline() {
        let ln = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = ln.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut c, _) = ln.accept().unwrap();
            for _ in 0..60 {
                if c.write_all(b"x").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let mut s = TcpStream::connect(addr).unwrap();
        let mut out = Vec::new();
        let by = Instant::now() + Duration::from_millis(300);
        let e = read_within(&mut s, |s, d| s.set_read_timeout(Some(d)), by, &mut out).unwrap_err();
        // The answer (60 bytes, 50 ms apart) was not over: the deadline ended the read.
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
        assert!(out.len() < 60);
        drop(s);
        server.join().unwrap();
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://127.0.0.1:9000/open-apis/bot/v2/hook/abc").unwrap(),
            Url {
                tls: false,
                host: "127.0.0.1".into(),
                port: 9000,
                path: "/open-apis/bot/v2/hook/abc".into()
            }
        );
        assert_eq!(parse_url("http://relay").unwrap().port, 80);
        let u = parse_url("https://open.feishu.cn/open-apis/bot/v2/hook/x").unwrap();
        assert!(u.tls && u.port == 443 && u.host == "open.feishu.cn");
        assert!(matches!(
            tls_config("/nonexistent.pem"),
            Err(SendError::Ca(_))
        ));
        for bad in ["https://", "ftp://a", "http://:80/", "http://h:x/"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}

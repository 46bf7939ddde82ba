//! Listeners: the `[listeners]` and `[http]` configuration, the list of sockets to bind (address,
//! protocol stack, session type), binding with a configured backlog, and per-listener counters.
//!
//! The shards serve every listener here; the admin listener (`admin.listen`, session type
//! `admin`) runs on its own thread (`telemetry::admin`) so that it answers when shards are
//! saturated.

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lattice_wire::http::HttpLimits;
use lattice_wire::{SessionType, StackConfig, StackKind, WsSettings};

use super::NetConfig;
use crate::telemetry::prom::{Kind, Writer};

/// `[listeners]` section: the client listeners besides `net.listen` (binary frames over TCP).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenersConfig {
    /// HTTP/1.1 + WebSocket listener for clients; empty = off.
    pub http: String,
    /// More listeners.
    pub extra: Vec<ExtraListener>,
    /// Listen backlog (kernel accept queue) of every listener.
    pub backlog: u32,
}

/// One entry of `listeners.extra`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraListener {
    /// `host:port`.
    pub addr: String,
    /// Protocol stack.
    pub stack: StackKind,
    /// Session type.
    pub session: SessionType,
    /// Serves its sessions over TLS (needs `tls.cert` and `tls.key`).
    #[serde(default)]
    pub tls: bool,
}

/// `[http]` section: HTTP and WebSocket settings of every `http` listener.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Largest request head in bytes.
    pub max_head: usize,
    /// Most header fields in a request head.
    pub max_headers: usize,
    /// A request head must be complete this many ms after its first byte (or the connection's
    /// open).
    pub head_timeout_ms: u64,
    /// `POST /rpc/...`: ms to wait for the handler's reply before answering 504.
    pub rpc_timeout_ms: u64,
    /// The path that upgrades to a Lattice WebSocket.
    pub ws_path: String,
    /// A WebSocket path that echoes every message (the conformance suite's); empty = off.
    pub ws_echo_path: String,
    /// Allowed `Origin` values for WebSocket upgrades; empty = any.
    pub ws_origins: Vec<String>,
    /// The server pings each WebSocket this often, in ms; 0 = never.
    pub ws_ping_interval_ms: u64,
}

/// One listener the shards serve.
#[derive(Debug, Clone)]
pub struct ListenerSpec {
    /// Name in logs and metrics (`binary`, `http`, `extra0`, …).
    pub name: String,
    /// `host:port` to bind.
    pub addr: String,
    /// What its sessions speak and are.
    pub stack: Arc<StackConfig>,
    /// Its sessions run over TLS (the certificate of `[tls]`).
    pub tls: bool,
}

impl ListenerSpec {
    /// The configuration key its address comes from, for messages about it.
    pub fn config_key(&self) -> String {
        match self.name.as_str() {
            "binary" => "net.listen".into(),
            "http" => "listeners.http".into(),
            "tls" => "tls.listen".into(),
            "https" => "tls.http_listen".into(),
            other => match other.strip_prefix("extra") {
                Some(i) => format!("listeners.extra[{i}]"),
                None => other.into(),
            },
        }
    }
}

/// A configuration problem: the key and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// `section.key`.
    pub key: String,
    /// What is wrong.
    pub problem: String,
}

/// The listeners the shards serve: `net.listen` (binary, client), `listeners.http` (http,
/// client), with TLS configured `tls.listen` (binary over TLS) and `tls.http_listen` (HTTPS and
/// WSS), then `listeners.extra`. Empty addresses are skipped. Fails on a combination the session
/// type does not allow, a TLS listener without a certificate, or an HTTP setting out of range.
pub fn listener_specs(
    net: &NetConfig,
    listeners: &ListenersConfig,
    http: &HttpConfig,
    tls: &crate::net::tls::TlsConfig,
) -> Result<Vec<ListenerSpec>, SpecError> {
    let err = |key: &str, problem: String| SpecError {
        key: key.into(),
        problem,
    };
    if http.max_headers == 0 || http.max_headers > lattice_wire::http::request::MAX_HEADERS_CAP {
        return Err(err(
            "http.max_headers",
            format!(
                "must be 1..={}",
                lattice_wire::http::request::MAX_HEADERS_CAP
            ),
        ));
    }
    if http.rpc_timeout_ms == 0 {
        return Err(err(
            "http.rpc_timeout_ms",
            "must be at least 1 (every /rpc whose reply is not immediate would be a 504)".into(),
        ));
    }
    if http.max_head < 64 {
        return Err(err("http.max_head", "must be at least 64 bytes".into()));
    }
    if !http.ws_path.starts_with('/') {
        return Err(err("http.ws_path", "must start with /".into()));
    }
    if !http.ws_echo_path.is_empty() && !http.ws_echo_path.starts_with('/') {
        return Err(err(
            "http.ws_echo_path",
            "must be empty or start with /".into(),
        ));
    }
    if listeners.backlog == 0 {
        return Err(err("listeners.backlog", "must be at least 1".into()));
    }
    let http_stack = |session_type| StackConfig {
        kind: StackKind::Http,
        session_type,
        http: HttpLimits {
            max_head: http.max_head,
            max_headers: http.max_headers,
            max_body: net.max_frame as usize,
            head_timeout: Duration::from_millis(http.head_timeout_ms),
        },
        ws: WsSettings {
            path: http.ws_path.clone(),
            echo_path: http.ws_echo_path.clone(),
            origins: http.ws_origins.clone(),
            ping_interval: (http.ws_ping_interval_ms > 0)
                .then(|| Duration::from_millis(http.ws_ping_interval_ms)),
        },
    };
    // A bad address is a configuration error naming its key, before anything starts.
    let addr = |key: &str, a: &str| check_listen_addr(a).map_err(|problem| err(key, problem));
    let mut out = Vec::new();
    if !net.listen.is_empty() {
        addr("net.listen", &net.listen)?;
        out.push(ListenerSpec {
            name: "binary".into(),
            addr: net.listen.clone(),
            stack: Arc::new(StackConfig::binary(SessionType::Client)),
            tls: false,
        });
    }
    if !listeners.http.is_empty() {
        addr("listeners.http", &listeners.http)?;
        out.push(ListenerSpec {
            name: "http".into(),
            addr: listeners.http.clone(),
            stack: Arc::new(http_stack(SessionType::Client)),
            tls: false,
        });
    }
    if tls.enabled() {
        if !tls.listen.is_empty() {
            addr("tls.listen", &tls.listen)?;
            out.push(ListenerSpec {
                name: "tls".into(),
                addr: tls.listen.clone(),
                stack: Arc::new(StackConfig::binary(SessionType::Client)),
                tls: true,
            });
        }
        if !tls.http_listen.is_empty() {
            addr("tls.http_listen", &tls.http_listen)?;
            out.push(ListenerSpec {
                name: "https".into(),
                addr: tls.http_listen.clone(),
                stack: Arc::new(http_stack(SessionType::Client)),
                tls: true,
            });
        }
    }
    for (i, x) in listeners.extra.iter().enumerate() {
        let key = format!("listeners.extra[{i}]");
        if x.session == SessionType::Admin {
            return Err(err(
                &key,
                "session \"admin\" is the admin listener: set admin.listen".into(),
            ));
        }
        if !x.session.allows(x.stack) {
            return Err(err(
                &key,
                format!(
                    "session \"{}\" cannot use stack {:?}",
                    x.session.as_str(),
                    x.stack
                ),
            ));
        }
        if x.tls && x.session == SessionType::Internal {
            return Err(err(
                &key,
                "session \"internal\" cannot use tls = true: node links connect over plain TCP (docs/CLUSTER.md)".into(),
            ));
        }
        if x.tls && !tls.enabled() {
            return Err(err(&key, "tls = true needs tls.cert and tls.key".into()));
        }
        if x.addr.is_empty() {
            return Err(err(&key, "addr is empty".into()));
        }
        addr(&key, &x.addr)?;
        let stack = match x.stack {
            StackKind::Binary => StackConfig::binary(x.session),
            StackKind::Http => http_stack(x.session),
        };
        out.push(ListenerSpec {
            name: format!("extra{i}"),
            addr: x.addr.clone(),
            stack: Arc::new(stack),
            tls: x.tls,
        });
    }
    if let Some((a, b)) = same_socket(&out) {
        return Err(err(
            &out[b].config_key(),
            format!(
                "{} is also {} ({}): two listeners cannot bind one port",
                out[b].addr,
                out[a].config_key(),
                out[a].addr
            ),
        ));
    }
    Ok(out)
}

/// The first two listeners (indexes) that would bind the same socket ([`binds_same`]).
fn same_socket(specs: &[ListenerSpec]) -> Option<(usize, usize)> {
    (1..specs.len()).find_map(|b| {
        (0..b)
            .find(|&a| binds_same(&specs[a].addr, &specs[b].addr))
            .map(|a| (a, b))
    })
}

/// True when listening on `a` and on `b` would collide: the same port (not 0) on the same
/// address, or where one is the unspecified address of its family (`0.0.0.0` takes every IPv4
/// address; `[::]` every address, IPv4 included).
pub fn binds_same(a: &str, b: &str) -> bool {
    let one = |x: &str| x.to_socket_addrs().ok().and_then(|mut it| it.next());
    let (Some(a), Some(b)) = (one(a), one(b)) else {
        return false;
    };
    let covers =
        |u: SocketAddr, o: SocketAddr| u.ip().is_unspecified() && (u.is_ipv6() || o.is_ipv4());
    a.port() != 0 && a.port() == b.port() && (a.ip() == b.ip() || covers(a, b) || covers(b, a))
}

/// A listen address must be `HOST:PORT` that resolves (an IP address, or a name such as
/// `localhost`), so that a bad one is a configuration error before anything starts, not a bind
/// failure after storage and the shards came up.
pub fn check_listen_addr(addr: &str) -> Result<(), String> {
    match addr.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(format!("{addr:?} resolves to no address")),
        Err(e) => Err(format!(
            "{addr:?} is not HOST:PORT (e.g. 127.0.0.1:7100, [::]:7100; port 1..=65535 or 0): {e}"
        )),
    }
}

/// Binds `addr` with a listen backlog of `backlog` (std's `bind` uses 128; the kernel caps it at
/// `net.core.somaxconn`). `SO_REUSEADDR` is set, as std does.
pub fn bind(addr: &str, backlog: u32) -> std::io::Result<TcpListener> {
    let sa: SocketAddr = addr.to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "address resolves to nothing",
        )
    })?;
    let s = socket2::Socket::new(
        socket2::Domain::for_address(sa),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    s.set_reuse_address(true)?;
    s.bind(&sa.into())?;
    s.listen(backlog.min(i32::MAX as u32) as i32)?;
    Ok(s.into())
}

/// Counters of one listener (its acceptor thread writes them).
#[derive(Debug, Default)]
pub struct ListenerMetrics {
    /// Connections accepted and handed to a shard.
    pub accepted_total: AtomicU64,
    /// `accept` failures for lack of file descriptors or memory (EMFILE, ENFILE, ENOBUFS,
    /// ENOMEM): the acceptor backs off and retries; existing sessions are not affected.
    pub accept_errors_resources_total: AtomicU64,
    /// Other `accept` failures.
    pub accept_errors_other_total: AtomicU64,
}

/// Renders every listener's counters, labelled `listener` and `addr`.
pub fn render_listeners(list: &[(String, SocketAddr, Arc<ListenerMetrics>)], w: &mut Writer<'_>) {
    type Field = fn(&ListenerMetrics) -> &AtomicU64;
    let fields: [(&str, &str, Field); 3] = [
        (
            "lattice_listener_accepted_total",
            "Connections accepted by each listener.",
            |m| &m.accepted_total,
        ),
        (
            "lattice_listener_accept_errors_resources_total",
            "accept() failures for lack of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM); the listener backs off and accepts again when they free up.",
            |m| &m.accept_errors_resources_total,
        ),
        (
            "lattice_listener_accept_errors_other_total",
            "Other accept() failures.",
            |m| &m.accept_errors_other_total,
        ),
    ];
    for (name, help, f) in fields {
        w.family(name, Kind::Counter, help);
        for (l, addr, m) in list {
            let addr = addr.to_string();
            w.sample(
                name,
                &[("listener", l), ("addr", &addr)],
                f(m).load(Ordering::Relaxed),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::tls::TlsConfig;

    fn net() -> NetConfig {
        NetConfig::for_tests()
    }

    fn http() -> HttpConfig {
        HttpConfig {
            max_head: 8192,
            max_headers: 32,
            head_timeout_ms: 10_000,
            rpc_timeout_ms: 10_000,
            ws_path: "/ws".into(),
            ws_echo_path: String::new(),
            ws_origins: vec![],
            ws_ping_interval_ms: 15_000,
        }
    }

    fn extra(stack: StackKind, session: SessionType, tls: bool) -> ListenersConfig {
        ListenersConfig {
            http: "127.0.0.1:0".into(),
            extra: vec![ExtraListener {
                addr: "127.0.0.1:0".into(),
                stack,
                session,
                tls,
            }],
            backlog: 4096,
        }
    }

    fn no_tls() -> TlsConfig {
        TlsConfig {
            listen: "127.0.0.1:0".into(),
            http_listen: "127.0.0.1:0".into(),
            cert: String::new(),
            key: String::new(),
            key_update_interval_s: 0,
            handshake_timeout_ms: 0,
        }
    }

    fn with_tls() -> TlsConfig {
        TlsConfig {
            cert: "cert.pem".into(),
            key: "key.pem".into(),
            ..no_tls()
        }
    }

    #[test]
    fn specs_list_every_listener_and_refuse_bad_combinations() {
        let l = extra(StackKind::Binary, SessionType::Internal, false);
        let specs = listener_specs(&net(), &l, &http(), &no_tls()).unwrap();
        let names: Vec<_> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["binary", "http", "extra0"]);
        assert!(specs.iter().all(|s| !s.tls));
        assert_eq!(specs[2].stack.session_type, SessionType::Internal);
        // With a certificate: binary over TLS and HTTPS/WSS too, and an extra listener may ask TLS.
        let l = extra(StackKind::Binary, SessionType::Client, true);
        let specs = listener_specs(&net(), &l, &http(), &with_tls()).unwrap();
        let named: Vec<_> = specs.iter().map(|s| (s.name.as_str(), s.tls)).collect();
        assert_eq!(
            named,
            [
                ("binary", false),
                ("http", false),
                ("tls", true),
                ("https", true),
                ("extra0", true)
            ]
        );
        assert_eq!(specs[3].stack.kind, StackKind::Http);
        assert_eq!(specs[1].stack.kind, StackKind::Http);
        assert_eq!(
            specs[1].stack.http.max_body, 4096,
            "body bound is net.max_frame"
        );
        assert_eq!(specs[2].stack.kind, StackKind::Binary);
        for (l, needle) in [
            (
                extra(StackKind::Http, SessionType::Internal, false),
                "cannot use stack",
            ),
            (
                extra(StackKind::Http, SessionType::Admin, false),
                "admin.listen",
            ),
            (
                extra(StackKind::Binary, SessionType::Client, true),
                "needs tls.cert and tls.key",
            ),
        ] {
            let e = listener_specs(&net(), &l, &http(), &no_tls()).unwrap_err();
            assert_eq!(e.key, "listeners.extra[0]");
            assert!(e.problem.contains(needle), "{e:?}");
        }
        // Node links do not speak TLS: an internal listener cannot ask for it, certificate or not.
        let l = extra(StackKind::Binary, SessionType::Internal, true);
        let e = listener_specs(&net(), &l, &http(), &with_tls()).unwrap_err();
        assert_eq!(e.key, "listeners.extra[0]");
        assert!(
            e.problem.contains("node links connect over plain TCP"),
            "{e:?}"
        );
        let mut h = http();
        h.max_headers = 0;
        assert_eq!(
            listener_specs(
                &net(),
                &extra(StackKind::Binary, SessionType::Client, false),
                &h,
                &no_tls()
            )
            .unwrap_err()
            .key,
            "http.max_headers"
        );
    }

    #[test]
    fn binds_with_the_backlog() {
        let l = bind("127.0.0.1:0", 4096).unwrap();
        let addr = l.local_addr().unwrap();
        let _c = std::net::TcpStream::connect(addr).unwrap();
        assert!(l.accept().is_ok());
    }
}

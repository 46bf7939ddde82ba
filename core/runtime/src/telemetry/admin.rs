//! The admin HTTP listener: a small blocking HTTP/1.1 server on its own thread, with routes the
//! server registers (`GET /metrics`, `GET /healthz`, the admin API, the console, …).
//!
//! It runs off the shards on purpose: it must answer when every shard is saturated, and it talks to
//! shards only through their control lanes and shared counters. It serves one request per
//! connection, each connection on a thread of its own, at most [`MAX_CONNS`] at once (the next is
//! answered 503 and closed; an answered connection waiting for its client to close counts among at
//! most [`MAX_CONNS`] lingering ones instead), and bounds what it reads: request head ≤ 8 KiB, body ≤ [`MAX_BODY`],
//! the whole request within [`READ_WITHIN`] (else 408), 2 s write timeout. Detached routes
//! ([`Routes::add_detached`], handlers that take seconds) run at most [`MAX_DETACHED`] at once. Requests are parsed and responses encoded by the same
//! sans-IO HTTP/1.1 code as the shards' HTTP listeners (`lattice_wire::http`), so a bad request
//! gets the same status codes here as there.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lattice_wire::http::{HttpConn, HttpLimits, Next, Response as WireResponse};
use lattice_wire::MonoTime;

/// Largest request head accepted.
pub const MAX_HEAD: usize = 8192;
/// Largest request body accepted (`Content-Length`).
pub const MAX_BODY: usize = 1 << 20;

/// One request, parsed.
#[derive(Debug)]
pub struct Request {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query string after `?` (empty when none).
    pub query: String,
    /// Header names (lower-case) and values.
    pub headers: Vec<(String, String)>,
    /// The body (`Content-Length` bytes).
    pub body: Vec<u8>,
    /// The peer.
    pub peer: SocketAddr,
}

impl Request {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first query parameter not among `allowed`, or named twice, as the 400 answer's text:
    /// a misspelt parameter (`limt=5`) or a repeated one (`shard=0&shard=1`, of which one would be
    /// used) is an error, not a default or a guess.
    pub fn check_query(&self, allowed: &[&str]) -> Result<(), String> {
        let names: Vec<&str> = self
            .query
            .split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| kv.split_once('=').map_or(kv, |(k, _)| k))
            .collect();
        for (i, k) in names.iter().enumerate() {
            if !allowed.contains(k) {
                let known = if allowed.is_empty() {
                    "this route takes none".to_string()
                } else {
                    allowed.join(", ")
                };
                return Err(format!("unknown query parameter {k:?} ({known})"));
            }
            if names[..i].contains(k) {
                return Err(format!("query parameter {k:?} given more than once"));
            }
        }
        Ok(())
    }

    /// The value of query parameter `name` (not percent-decoded).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .split('&')
            .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }
}

/// A response.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: String,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// A response with `status`, a content type and a body.
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            content_type: content_type.to_string(),
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// `text/plain` with `status`.
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response::new(status, "text/plain; charset=utf-8", body.into())
    }

    /// `application/json` with `status`.
    pub fn json(status: u16, body: impl Into<String>) -> Response {
        Response::new(status, "application/json", body.into())
    }

    /// An error answer: `{"error": why}` (JSON) with `status`, the shape of every error the
    /// admin listener's routes give.
    pub fn error(status: u16, why: &str) -> Response {
        let mut body = String::with_capacity(why.len() + 14);
        body.push_str("{\"error\":\"");
        for c in why.chars() {
            match c {
                '"' => body.push_str("\\\""),
                '\\' => body.push_str("\\\\"),
                '\n' => body.push_str("\\n"),
                '\r' => body.push_str("\\r"),
                '\t' => body.push_str("\\t"),
                c if (c as u32) < 0x20 => body.push_str(&format!("\\u{:04x}", c as u32)),
                c => body.push(c),
            }
        }
        body.push_str("\"}\n");
        Response::json(status, body)
    }
}

/// A route's handler. Runs on the admin thread: it may block briefly (e.g. wait for shards to
/// answer a control command, bounded), never for long.
pub type Handler = Box<dyn Fn(&Request) -> Response + Send + Sync>;

/// A check run before every route under a path prefix: `Some(response)` answers the request
/// instead of the route (e.g. 401 without the bearer token).
pub type Guard = Box<dyn Fn(&Request) -> Option<Response> + Send + Sync>;

/// The routes the admin listener serves, matched in order, and the guards in front of them.
#[derive(Default)]
pub struct Routes {
    routes: Vec<(&'static str, Match, Handler)>,
    /// Indexes of routes served on their own thread ([`Routes::add_detached`]).
    detached: Vec<usize>,
    guards: Vec<(&'static str, Guard)>,
}

/// Requests of detached routes served at once; more are answered 503.
pub const MAX_DETACHED: usize = 2;

/// Connections served at once (one thread each); the next is answered 503 and closed, so slow or
/// stalled clients cannot keep `/healthz` and `/metrics` from answering.
pub const MAX_CONNS: usize = 16;

/// A request must arrive whole within this from its connection's accept; else 408.
pub const READ_WITHIN: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy)]
enum Match {
    Exact(&'static str),
    Prefix(&'static str),
}

impl Routes {
    /// Serves `method path` (exact path) with `handler`.
    pub fn add(&mut self, method: &'static str, path: &'static str, handler: Handler) -> &mut Self {
        self.routes.push((method, Match::Exact(path), handler));
        self
    }

    /// Serves `method path` (exact path) with `handler` on a thread of its own, for handlers that
    /// take seconds (a CPU profile): the listener keeps answering other requests meanwhile. At most
    /// [`MAX_DETACHED`] such requests run at once; the next gets 503.
    pub fn add_detached(
        &mut self,
        method: &'static str,
        path: &'static str,
        handler: Handler,
    ) -> &mut Self {
        self.detached.push(self.routes.len());
        self.add(method, path, handler)
    }

    /// True when `req` goes to a detached route.
    fn is_detached(&self, req: &Request) -> bool {
        self.detached.iter().any(|&i| {
            let (method, m, _) = &self.routes[i];
            serves(method, &req.method) && matches!(m, Match::Exact(p) if req.path == *p)
        })
    }

    /// Serves `method` on every path starting with `prefix` with `handler`.
    pub fn add_prefix(
        &mut self,
        method: &'static str,
        prefix: &'static str,
        handler: Handler,
    ) -> &mut Self {
        self.routes.push((method, Match::Prefix(prefix), handler));
        self
    }

    /// Puts `guard` in front of every request whose path starts with `prefix`, whatever route (or
    /// none) serves it: routes added before or after are all behind it, so a route cannot forget
    /// it. Guards run in the order added; the first answer wins.
    pub fn guard_prefix(&mut self, prefix: &'static str, guard: Guard) -> &mut Self {
        self.guards.push((prefix, guard));
        self
    }

    /// The response to `req`: a guard's answer, else its route's, 405 when the path exists for
    /// another method, 404 else. A `GET` route serves `HEAD` too (the connection sends the
    /// response without its body).
    pub fn respond(&self, req: &Request) -> Response {
        for (prefix, guard) in &self.guards {
            if req.path.starts_with(prefix) {
                if let Some(r) = guard(req) {
                    return r;
                }
            }
        }
        let mut allowed: Vec<&str> = Vec::new();
        for (method, m, h) in &self.routes {
            let hit = match m {
                Match::Exact(p) => req.path == *p,
                Match::Prefix(p) => req.path.starts_with(p),
            };
            if hit {
                if serves(method, &req.method) {
                    return h(req);
                }
                if !allowed.contains(method) {
                    allowed.push(method);
                    if *method == "GET" {
                        allowed.push("HEAD");
                    }
                }
            }
        }
        if !allowed.is_empty() {
            let mut r = Response::error(405, "method not allowed");
            r.headers.push(("Allow".into(), allowed.join(", ")));
            r
        } else {
            Response::error(404, "not found")
        }
    }
}

/// A running admin listener; [`AdminServer::stop`] ends its thread.
pub struct AdminServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// Binds `addr` and serves `routes` on a new thread. Fails if the address cannot be bound.
    pub fn start(addr: &str, routes: Routes) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let routes = Arc::new(routes);
        let places = Places::default();
        let thread = std::thread::Builder::new()
            .name("lattice-admin".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop2.load(Ordering::SeqCst) {
                        break;
                    }
                    match conn {
                        Ok(s) => {
                            let Some(place) = Place::take(&places.conns, MAX_CONNS) else {
                                refuse_busy(s);
                                continue;
                            };
                            let (routes, places) = (routes.clone(), places.clone());
                            // A failed spawn drops the closure, and the place with it.
                            let spawned = std::thread::Builder::new()
                                .name("lattice-admin-conn".into())
                                .spawn(move || {
                                    if let Err(e) = serve(s, &routes, &places, place) {
                                        tracing::debug!(error = %e, "admin request failed");
                                    }
                                });
                            if let Err(e) = spawned {
                                tracing::warn!(error = %e, "admin: cannot spawn a connection thread");
                            }
                        }
                        // A profiling signal (SIGPROF) interrupted accept: not an error.
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "admin accept failed");
                            // EMFILE and friends: back off instead of spinning.
                            std::thread::sleep(Duration::from_millis(10));
                        }
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

/// The limits the admin listener reads requests with.
fn limits() -> HttpLimits {
    HttpLimits {
        max_head: MAX_HEAD,
        max_headers: 64,
        max_body: MAX_BODY,
        head_timeout: Duration::from_secs(2),
    }
}

/// `read` that retries when a signal (SIGPROF while profiling) interrupts it.
fn read_retrying(s: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match s.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// One taken place of a bounded count, given back when dropped: also when a handler panics and
/// unwinds its thread, which would otherwise keep the place taken for the rest of the process.
struct Place(Arc<AtomicUsize>);

impl Place {
    /// A place of `count` when fewer than `max` are taken.
    fn take(count: &Arc<AtomicUsize>, max: usize) -> Option<Place> {
        if count.fetch_add(1, Ordering::SeqCst) >= max {
            count.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Place(count.clone()))
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The listener's bounded counts.
#[derive(Clone, Default)]
struct Places {
    /// Connections read or served ([`MAX_CONNS`]).
    conns: Arc<AtomicUsize>,
    /// Answered connections waiting for their client to close ([`MAX_CONNS`] too).
    lingering: Arc<AtomicUsize>,
    /// Detached requests at work ([`MAX_DETACHED`]).
    detached: Arc<AtomicUsize>,
}

/// `routes.respond(req)`, a panic answered 500 (the panic hook has logged it) instead of a
/// connection closed with no answer.
fn respond_caught(routes: &Routes, req: &Request) -> Response {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| routes.respond(req)))
        .unwrap_or_else(|_| Response::error(500, "internal error: the handler panicked"))
}

fn serve(
    mut s: TcpStream,
    routes: &Arc<Routes>,
    places: &Places,
    place: Place,
) -> std::io::Result<()> {
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    let peer = s.peer_addr()?;
    // The whole request within READ_WITHIN: each read waits at most for what is left of it.
    let deadline = Instant::now() + READ_WITHIN;
    let mut conn = HttpConn::new(limits(), MonoTime(0));
    let mut chunk = [0u8; 4096];
    let mut out = Vec::new();
    let req = loop {
        match conn.next_request(&mut out) {
            Next::Request(r) => break r,
            Next::Failed(_) => {
                s.write_all(&out)?;
                return linger(s, places, Some(place));
            }
            Next::Wait => {}
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let late = || {
            Response::error(
                408,
                &format!("request not complete within {} ms", READ_WITHIN.as_millis()),
            )
        };
        if left.is_zero() {
            return respond(s, Vec::new(), late(), places, Some(place), false);
        }
        s.set_read_timeout(Some(left))?;
        let n = match read_retrying(&mut s, &mut chunk) {
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return respond(s, Vec::new(), late(), places, Some(place), false);
            }
            r => r?,
        };
        if n == 0 {
            return Ok(());
        }
        conn.feed(MonoTime(0), &chunk[..n]);
    };
    // A HEAD request is served by GET routes; its response goes without the body.
    let head = req.method == "HEAD";
    let req = Request {
        method: req.method,
        path: req.path,
        query: req.query,
        headers: req.headers,
        body: req.body,
        peer,
    };
    if routes.is_detached(&req) {
        let Some(slot) = Place::take(&places.detached, MAX_DETACHED) else {
            REFUSED_TOTAL.fetch_add(1, Ordering::Relaxed);
            let busy = Response::error(503, "busy: try again later");
            return respond(s, out, busy, places, Some(place), head);
        };
        // The connection's place is given back when this thread returns: the detached request
        // is bounded by its own count.
        let (routes, places) = (routes.clone(), places.clone());
        let spawned = std::thread::Builder::new()
            .name("lattice-admin-req".into())
            .spawn(move || {
                // The handler may take its time: the write timeout starts after it. The slot
                // bounds handlers at work; it is free once the answer exists, so a client that
                // sends its next request as soon as it read this answer does not find it taken
                // while this thread still writes and lingers (both bounded by their timeouts).
                let r = respond_caught(&routes, &req);
                drop(slot);
                if let Err(e) = respond(s, out, r, &places, None, head) {
                    tracing::debug!(error = %e, "admin response failed");
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "admin: cannot spawn a request thread");
        }
        return Ok(());
    }
    let r = respond_caught(routes, &req);
    respond(s, out, r, places, Some(place), head)
}

/// Answers a connection over [`MAX_CONNS`] with 503 without blocking the accept thread (a fresh
/// socket's send buffer takes the short answer at once), then closes it.
/// Admin requests answered 503 at the listener's bounds (`MAX_CONNS`, `MAX_DETACHED`), process-wide
/// (`lattice_admin_refused_total`).
pub(crate) static REFUSED_TOTAL: AtomicU64 = AtomicU64::new(0);

fn refuse_busy(mut s: TcpStream) {
    REFUSED_TOTAL.fetch_add(1, Ordering::Relaxed);
    let _ = s.set_nonblocking(true);
    let mut out = Vec::new();
    let r = Response::error(
        503,
        "busy: too many admin connections at once, try again later",
    );
    let mut wire = WireResponse::new(r.status, &r.content_type, r.body);
    wire.headers.extend(r.headers);
    wire.encode(true, &mut out);
    let _ = s.write_all(&out);
    let _ = s.shutdown(std::net::Shutdown::Write);
}

/// Encodes `r` into `out` (empty or holding nothing yet) and writes it, then lingers.
fn respond(
    mut s: TcpStream,
    mut out: Vec<u8>,
    r: Response,
    places: &Places,
    place: Option<Place>,
    head: bool,
) -> std::io::Result<()> {
    let mut wire = WireResponse::new(r.status, &r.content_type, r.body);
    wire.headers.extend(r.headers);
    // One request per connection.
    wire.encode_for(true, head, &mut out);
    s.write_all(&out)?;
    linger(s, places, place)
}

/// Closing a socket with unread input makes the kernel send a reset, which can destroy the
/// response at the peer before it is read. So: stop writing, then read and drop what the peer
/// still sends until it closes (bounded: 64 KiB, and a 2 s socket timeout).
///
/// An answered connection gives back its place (`place`) before it lingers, taking one of at
/// most [`MAX_CONNS`] lingering places instead: a client that got its answer (an idle one its
/// 408) and keeps its socket open does not keep the next requests out. When every lingering place
/// is taken, it keeps its connection place while it lingers.
fn linger(mut s: TcpStream, places: &Places, place: Option<Place>) -> std::io::Result<()> {
    let _place = match Place::take(&places.lingering, MAX_CONNS) {
        Some(lingering) => {
            drop(place);
            Some(lingering)
        }
        None => place,
    };
    s.shutdown(std::net::Shutdown::Write)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut sink = [0u8; 4096];
    for _ in 0..16 {
        match read_retrying(&mut s, &mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    Ok(())
}

/// True when a route for `route` serves a request with method `request`: its own method, and
/// `HEAD` for a `GET` route (RFC 9110 §9.3.2).
fn serves(route: &str, request: &str) -> bool {
    route == request || (route == "GET" && request == "HEAD")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        "127.0.0.1:1".parse().unwrap()
    }

    fn routes() -> Routes {
        let mut r = Routes::default();
        r.add("GET", "/healthz", Box::new(|_| Response::text(200, "ok\n")))
            .add(
                "POST",
                "/echo",
                Box::new(|req| Response::new(200, "application/octet-stream", req.body.clone())),
            )
            .add_prefix(
                "GET",
                "/q/",
                Box::new(|req| {
                    Response::text(200, req.query_param("x").unwrap_or("-").to_string())
                }),
            );
        r
    }

    fn req(method: &str, target: &str) -> Request {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        Request {
            method: method.into(),
            path: path.into(),
            query: query.into(),
            headers: vec![],
            body: vec![],
            peer: peer(),
        }
    }

    #[test]
    fn routes_by_method_and_path() {
        let r = routes();
        assert_eq!(r.respond(&req("GET", "/healthz")).status, 200);
        let refused = r.respond(&req("POST", "/healthz"));
        assert_eq!(refused.status, 405);
        assert_eq!(
            refused.headers,
            vec![("Allow".to_string(), "GET, HEAD".to_string())]
        );
        // HEAD is served by the GET route (the connection leaves the body out).
        assert_eq!(r.respond(&req("HEAD", "/healthz")).status, 200);
        assert_eq!(r.respond(&req("GET", "/nope")).status, 404);
        let not_allowed = r.respond(&req("POST", "/healthz"));
        assert_eq!(not_allowed.content_type, "application/json");
        assert_eq!(not_allowed.body, b"{\"error\":\"method not allowed\"}\n");
        assert_eq!(
            Response::error(409, "a \"quoted\" \\ line\nnext\u{1}").body,
            b"{\"error\":\"a \\\"quoted\\\" \\\\ line\\nnext\\u0001\"}\n"
        );
        assert_eq!(r.respond(&req("GET", "/q/a?x=5&y")).body, b"5");
        assert_eq!(req("GET", "/q?x=1&y=").check_query(&["x", "y"]), Ok(()));
        for bad in ["/q?z=1", "/q?x=1&x=2", "/q?y&y", "/q?x=1&X=1"] {
            assert!(req("GET", bad).check_query(&["x", "y"]).is_err(), "{bad}");
        }
        assert!(req("GET", "/q?a").check_query(&[]).is_err());
    }

    /// Sends `bytes`, returns the whole response.
    fn exchange(srv: &AdminServer, bytes: &[u8]) -> String {
        let mut c = TcpStream::connect(srv.local_addr()).unwrap();
        c.write_all(bytes).unwrap();
        let mut resp = String::new();
        c.read_to_string(&mut resp).unwrap();
        resp
    }

    #[test]
    fn guards_answer_before_any_route_under_their_prefix() {
        let mut r = routes();
        r.add(
            "GET",
            "/q/secret",
            Box::new(|_| Response::text(200, "secret")),
        );
        r.guard_prefix(
            "/q/",
            Box::new(|req| (req.header("x-key") != Some("k")).then(|| Response::text(401, "no"))),
        );
        assert_eq!(r.respond(&req("GET", "/q/secret")).status, 401);
        assert_eq!(
            r.respond(&req("GET", "/q/unknown")).status,
            401,
            "before the 404"
        );
        assert_eq!(
            r.respond(&req("POST", "/q/secret")).status,
            401,
            "before the 405"
        );
        assert_eq!(
            r.respond(&req("GET", "/healthz")).status,
            200,
            "other paths are open"
        );
        let mut ok = req("GET", "/q/secret");
        ok.headers.push(("x-key".into(), "k".into()));
        assert_eq!(
            r.respond(&ok).body,
            b"-",
            "the first matching route still serves it"
        );
    }

    #[test]
    fn bad_requests_have_their_status() {
        let srv = AdminServer::start("127.0.0.1:0", routes()).unwrap();
        for (bytes, status) in [
            (&b"GARBAGE\r\n\r\n"[..], "400"),
            (b"GET / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", "413"),
            (
                b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                "411",
            ),
            (b"GET / HTTP/1.1\r\nno colon\r\n\r\n", "400"),
        ] {
            let resp = exchange(&srv, bytes);
            assert!(resp.starts_with(&format!("HTTP/1.1 {status} ")), "{resp}");
        }
        srv.stop();
    }

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes())
            .unwrap();
        let mut resp = String::new();
        c.read_to_string(&mut resp).unwrap();
        resp
    }

    #[test]
    fn stalled_connections_do_not_hold_up_the_others_and_get_408() {
        let srv = AdminServer::start("127.0.0.1:0", routes()).unwrap();
        let addr = srv.local_addr();
        // Ten clients that send half a head and stop.
        let stalled: Vec<TcpStream> = (0..10)
            .map(|_| {
                let mut c = TcpStream::connect(addr).unwrap();
                c.write_all(b"GET /healthz HTTP/1.1\r\nX: y").unwrap();
                c
            })
            .collect();
        // Served while they stall (one connection at a time would wait 2 s for each).
        assert!(get(addr, "/healthz").ends_with("ok\n"));
        for mut c in stalled {
            c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut resp = String::new();
            c.read_to_string(&mut resp).unwrap();
            assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
        }
        srv.stop();
        // Past MAX_CONNS open connections, the next is answered 503 at once. (A fresh listener:
        // the stalled connections above may still hold slots while they linger.)
        let srv = AdminServer::start("127.0.0.1:0", routes()).unwrap();
        let addr = srv.local_addr();
        let held: Vec<TcpStream> = (0..MAX_CONNS)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        // Each held socket takes its slot once accepted (in the accept thread's order, which may
        // lag the clients' connects): the next request finds them all taken.
        let mut r = String::new();
        let refused = REFUSED_TOTAL.load(Ordering::Relaxed);
        for _ in 0..50 {
            r = get(addr, "/healthz");
            if r.starts_with("HTTP/1.1 503") {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        assert!(
            REFUSED_TOTAL.load(Ordering::Relaxed) > refused,
            "503 counted"
        );
        drop(held);
        srv.stop();
    }

    #[test]
    fn a_detached_route_does_not_hold_up_the_others_and_is_bounded() {
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = std::sync::Mutex::new(release_rx);
        let entered = Arc::new(AtomicUsize::new(0));
        let entered2 = entered.clone();
        let mut r = routes();
        r.add_detached(
            "GET",
            "/slow",
            Box::new(move |_| {
                entered2.fetch_add(1, Ordering::SeqCst);
                let _ = release_rx.lock().unwrap().recv();
                Response::text(200, "slow done\n")
            }),
        );
        let srv = AdminServer::start("127.0.0.1:0", r).unwrap();
        let addr = srv.local_addr();
        let slow: Vec<_> = (0..MAX_DETACHED)
            .map(|_| std::thread::spawn(move || get(addr, "/slow")))
            .collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while entered.load(Ordering::SeqCst) < MAX_DETACHED {
            assert!(
                std::time::Instant::now() < deadline,
                "slow requests never started"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        // Both slots are taken: the next one is refused, and counted.
        let refused = REFUSED_TOTAL.load(Ordering::Relaxed);
        assert!(get(addr, "/slow").starts_with("HTTP/1.1 503"));
        assert!(REFUSED_TOTAL.load(Ordering::Relaxed) > refused);
        // Meanwhile the listener answers.
        assert!(get(addr, "/healthz").starts_with("HTTP/1.1 200"));
        for _ in 0..MAX_DETACHED {
            release_tx.send(()).unwrap();
        }
        for t in slow {
            assert!(t.join().unwrap().ends_with("slow done\n"));
        }
        srv.stop();
    }

    #[test]
    fn answered_connections_that_stay_open_do_not_hold_the_places() {
        let srv = AdminServer::start("127.0.0.1:0", routes()).unwrap();
        let addr = srv.local_addr();
        // MAX_CONNS clients that send nothing, read their 408 to the server's end of writing,
        // and keep their sockets open.
        let idle: Vec<TcpStream> = (0..MAX_CONNS)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        for c in &idle {
            let mut resp = String::new();
            (&*c).read_to_string(&mut resp).unwrap();
            assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
        }
        assert!(get(addr, "/healthz").starts_with("HTTP/1.1 200"));
        drop(idle);
        srv.stop();
    }

    #[test]
    fn a_panicking_handler_is_answered_500_and_gives_its_places_back() {
        let mut r = routes();
        r.add("GET", "/boom", Box::new(|_| panic!("boom")));
        r.add_detached("GET", "/slow-boom", Box::new(|_| panic!("boom")));
        let srv = AdminServer::start("127.0.0.1:0", r).unwrap();
        let addr = srv.local_addr();
        for _ in 0..MAX_DETACHED + 1 {
            assert!(get(addr, "/slow-boom").starts_with("HTTP/1.1 500"));
        }
        for _ in 0..MAX_CONNS + 1 {
            assert!(get(addr, "/boom").starts_with("HTTP/1.1 500"));
        }
        assert!(get(addr, "/healthz").starts_with("HTTP/1.1 200"));
        srv.stop();
    }

    #[test]
    fn serves_over_a_socket_with_a_body() {
        let srv = AdminServer::start("127.0.0.1:0", routes()).unwrap();
        let mut c = TcpStream::connect(srv.local_addr()).unwrap();
        c.write_all(b"POST /echo HTTP/1.1\r\nContent-Length: 5\r\n\r\nhel")
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        c.write_all(b"lo").unwrap();
        let mut resp = String::new();
        c.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 200 OK"), "{resp}");
        assert!(resp.ends_with("\r\n\r\nhello"), "{resp}");
        let mut c = TcpStream::connect(srv.local_addr()).unwrap();
        c.write_all(&[b'a'; MAX_HEAD + 10]).unwrap();
        let mut resp = String::new();
        c.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
        srv.stop();
    }
}

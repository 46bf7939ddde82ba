//! A blocking etcd v3 client over its JSON gateway (`POST /v3/...`, keys and values base64),
//! spoken with `std::net` sockets and the sans-IO HTTP/1.1 client codec of lattice-wire.
//!
//! Only the calls membership and machine-id leases need: lease grant / keep-alive / revoke,
//! range, put and txn. Every request has a connect, read and write timeout
//! (`etcd.request_timeout_ms`) and a response size bound (`etcd.max_response_bytes`); a request
//! that fails on one endpoint is tried once on each other endpoint, then fails with
//! [`EtcdError`] (bounded: one attempt per configured endpoint). Every attempt and every failure
//! is counted in [`EtcdStats`]. Runs on the caller's thread (the discovery thread or the center's
//! renewal thread), never on a shard.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use lattice_wire::http::client::{encode_request, ClientLimits, ResponseParser};
use serde_json::{json, Value};

use super::{EtcdError, EtcdStats};

/// One key-value pair as a range returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// Revision of the key's creation.
    pub create_revision: i64,
    /// Revision of its last change.
    pub mod_revision: i64,
    /// The lease it is bound to (0: none).
    pub lease: i64,
}

/// A txn comparison.
#[derive(Debug, Clone)]
pub enum Cmp<'a> {
    /// The key does not exist (`create_revision == 0`).
    Missing(&'a [u8]),
    /// The key's value equals.
    ValueIs(&'a [u8], &'a [u8]),
    /// The key's last change is this revision.
    ModRevision(&'a [u8], i64),
}

/// A txn operation.
#[derive(Debug, Clone)]
pub enum Op<'a> {
    /// Put `value` at `key`, bound to `lease` (0: none).
    Put(&'a [u8], &'a [u8], i64),
    /// Read `key`.
    Get(&'a [u8]),
    /// Delete `key`.
    Delete(&'a [u8]),
}

/// What a txn returned: whether the comparisons held, and the pairs read by `Get` operations of
/// the branch that ran.
#[derive(Debug, Clone, Default)]
pub struct TxnResult {
    /// The comparisons held (the success branch ran).
    pub succeeded: bool,
    /// The store's revision after the txn.
    pub revision: i64,
    /// Pairs read by the branch's `Get`s, in order.
    pub kvs: Vec<Kv>,
}

/// An endpoint: `host:port` of an `http://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port`, also sent as `Host`.
    pub authority: String,
}

impl Endpoint {
    /// Parses `http://host:port` (a trailing `/` allowed). Anything else (https, a path, no
    /// port) is refused with the reason.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let rest = url.trim().strip_prefix("http://").ok_or_else(|| {
            format!("{url:?}: must start with http:// (TLS to etcd is not supported)")
        })?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains('/') || authority.contains('@') {
            return Err(format!("{url:?}: expected http://host:port with no path"));
        }
        let port = authority
            .rsplit_once(':')
            .map(|(_, p)| p)
            .ok_or_else(|| format!("{url:?}: missing :port"))?;
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("{url:?}: bad port {port:?}"));
        }
        Ok(Endpoint {
            authority: authority.to_string(),
        })
    }
}

/// The client: endpoints, bounds and counters. Not shared between threads (each user owns one);
/// the counters are.
pub struct Client {
    endpoints: Vec<Endpoint>,
    timeout: Duration,
    limits: ClientLimits,
    stats: Arc<EtcdStats>,
    /// Index of the endpoint that answered last (tried first next time).
    current: usize,
    /// The connection of the last answer, kept open for the next request (HTTP keep-alive):
    /// the endpoint's index and the socket.
    idle: Option<(usize, TcpStream)>,
}

pub(crate) fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

pub(crate) fn unb64(v: &Value) -> Result<Vec<u8>, EtcdError> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|_| EtcdError::Protocol("a key or value is not base64".into())),
        _ => Err(EtcdError::Protocol(
            "a key or value is not a base64 string".into(),
        )),
    }
}

/// etcd's JSON gateway writes 64-bit integers as strings; absent means 0.
pub(crate) fn int(v: &Value) -> Result<i64, EtcdError> {
    match v {
        Value::Null => Ok(0),
        Value::String(s) => s
            .parse()
            .map_err(|_| EtcdError::Protocol(format!("not an integer: {s:?}"))),
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| EtcdError::Protocol(format!("not an integer: {n}"))),
        _ => Err(EtcdError::Protocol("not an integer".into())),
    }
}

pub(crate) fn kvs(v: &Value) -> Result<Vec<Kv>, EtcdError> {
    let Some(list) = v.get("kvs") else {
        return Ok(Vec::new());
    };
    let list = list
        .as_array()
        .ok_or_else(|| EtcdError::Protocol("kvs is not a list".into()))?;
    list.iter()
        .map(|kv| {
            Ok(Kv {
                key: unb64(&kv["key"])?,
                value: unb64(&kv["value"])?,
                create_revision: int(&kv["create_revision"])?,
                mod_revision: int(&kv["mod_revision"])?,
                lease: int(&kv["lease"])?,
            })
        })
        .collect()
}

/// The end of the range of every key starting with `prefix` (etcd's `range_end` convention).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (or empty): every key from `prefix` on.
    vec![0]
}

impl Client {
    /// A client of `endpoints` (at least one) with a per-request `timeout` and responses of at
    /// most `max_response` bytes.
    pub fn new(
        endpoints: Vec<Endpoint>,
        timeout: Duration,
        max_response: usize,
        stats: Arc<EtcdStats>,
    ) -> Client {
        Client {
            endpoints,
            timeout,
            limits: ClientLimits {
                max_head: 16 * 1024,
                max_headers: 32,
                max_body: max_response,
            },
            stats,
            current: 0,
            idle: None,
        }
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<EtcdStats> {
        &self.stats
    }

    /// Posts `body` to `path` on the current endpoint, then on each other one in turn; the first
    /// 200 answer's JSON wins. A 4xx answer is not retried elsewhere (the request is wrong, not
    /// the endpoint).
    pub fn call(&mut self, path: &str, body: &Value) -> Result<Value, EtcdError> {
        let bytes = serde_json::to_vec(body).map_err(|e| EtcdError::Protocol(e.to_string()))?;
        self.on_endpoints(|c, idx| c.once(idx, path, &bytes))
    }

    /// Runs `attempt` on the current endpoint, then once on each other until one succeeds, which
    /// becomes the current endpoint. Every attempt is counted in the stats, every failure too. A
    /// 4xx answer stops the round (the request itself is wrong: another member would say the
    /// same); the last failure is returned.
    fn on_endpoints<T>(
        &mut self,
        mut attempt: impl FnMut(&mut Self, usize) -> Result<T, EtcdError>,
    ) -> Result<T, EtcdError> {
        let n = self.endpoints.len();
        let mut last = EtcdError::Unreachable("no endpoint configured".into());
        for i in 0..n {
            let idx = (self.current + i) % n;
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            match attempt(self, idx) {
                Ok(v) => {
                    self.current = idx;
                    return Ok(v);
                }
                Err(e) => {
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    let fatal = matches!(e, EtcdError::Rejected { status, .. } if (400..500).contains(&status));
                    last = e;
                    if fatal {
                        break;
                    }
                }
            }
        }
        Err(last)
    }

    /// Connects to endpoint `idx` (bounded by the timeout).
    fn connect(&self, idx: usize, path: &str) -> Result<TcpStream, EtcdError> {
        let ep = &self.endpoints[idx];
        let unreachable = |what: &str, e: &dyn std::fmt::Display| {
            EtcdError::Unreachable(format!("{} {path}: {what}: {e}", ep.authority))
        };
        let addr = ep
            .authority
            .to_socket_addrs()
            .map_err(|e| unreachable("resolve", &e))?
            .next()
            .ok_or_else(|| unreachable("resolve", &"no address"))?;
        let s = TcpStream::connect_timeout(&addr, self.timeout)
            .map_err(|e| unreachable("connect", &e))?;
        let _ = s.set_nodelay(true);
        s.set_write_timeout(Some(self.timeout))
            .map_err(|e| unreachable("socket", &e))?;
        Ok(s)
    }

    /// Writes the request on `s` (bounded by the write timeout).
    fn write(&self, idx: usize, s: &mut TcpStream, path: &str, body: &[u8]) -> std::io::Result<()> {
        let mut out = Vec::with_capacity(128 + body.len());
        encode_request(
            "POST",
            &self.endpoints[idx].authority,
            path,
            Some(("application/json", body)),
            &mut out,
        );
        s.write_all(&out)
    }

    /// Connects to endpoint `idx` and writes the request; the caller reads the answer.
    fn send(&self, idx: usize, path: &str, body: &[u8]) -> Result<TcpStream, EtcdError> {
        let mut s = self.connect(idx, path)?;
        self.write(idx, &mut s, path, body).map_err(|e| {
            EtcdError::Unreachable(format!(
                "{} {path}: write: {e}",
                self.endpoints[idx].authority
            ))
        })?;
        Ok(s)
    }

    /// Opens a streaming call (`/v3/watch`): the request is sent on the first endpoint that
    /// takes it (current first, one attempt each, counted); returns the connection, the endpoint
    /// and a parser with this client's limits (`max_response_bytes` then bounds each piece).
    pub fn open_stream(
        &mut self,
        path: &str,
        body: &Value,
    ) -> Result<(TcpStream, String, ResponseParser), EtcdError> {
        let bytes = serde_json::to_vec(body).map_err(|e| EtcdError::Protocol(e.to_string()))?;
        // `send` fails only as `Unreachable` (connect, write): every endpoint gets its try.
        self.on_endpoints(|c, idx| {
            let s = c.send(idx, path, &bytes)?;
            Ok((
                s,
                c.endpoints[idx].authority.clone(),
                ResponseParser::new(c.limits),
            ))
        })
    }

    /// The per-request timeout (`etcd.request_timeout_ms`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The response size bound (`etcd.max_response_bytes`).
    pub fn max_response(&self) -> usize {
        self.limits.max_body
    }

    /// One request on endpoint `idx`: on the connection kept from the last answer when it is
    /// to this endpoint, else on a new one. A kept connection that turns out closed while idle
    /// (the write fails, or it ends before any byte of the answer) is replaced by a new one once,
    /// so a request may take up to twice the timeout.
    fn once(&mut self, idx: usize, path: &str, body: &[u8]) -> Result<Value, EtcdError> {
        if let Some((kept, s)) = self.idle.take() {
            if kept == idx {
                match self.exchange(idx, s, path, body) {
                    Ok(v) => return Ok(v),
                    Err((_, true)) => {}
                    Err((e, false)) => return Err(e),
                }
            }
        }
        let s = self.connect(idx, path)?;
        self.exchange(idx, s, path, body).map_err(|(e, _)| e)
    }

    /// Writes the request on `s` and reads the whole answer within the timeout; keeps `s` for
    /// the next request when the answer allows it. The error's flag: nothing of the answer was
    /// received (a kept connection that had died).
    fn exchange(
        &mut self,
        idx: usize,
        mut s: TcpStream,
        path: &str,
        body: &[u8],
    ) -> Result<Value, (EtcdError, bool)> {
        let authority = self.endpoints[idx].authority.clone();
        let ep = &authority;
        let unreachable = |what: &str, e: &dyn std::fmt::Display| {
            EtcdError::Unreachable(format!("{ep} {path}: {what}: {e}"))
        };
        let deadline = Instant::now() + self.timeout;
        if let Err(e) = self.write(idx, &mut s, path, body) {
            return Err((unreachable("write", &e), true));
        }
        let mut parser = ResponseParser::new(self.limits);
        let mut buf = [0u8; 8192];
        let mut got_any = false;
        // The whole answer must come within the timeout, however slowly it trickles in.
        let resp = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let timed_out = || {
                unreachable(
                    "read",
                    &format!("timed out after {} ms", self.timeout.as_millis()),
                )
            };
            if left.is_zero() {
                return Err((timed_out(), false));
            }
            if let Err(e) = s.set_read_timeout(Some(left)) {
                return Err((unreachable("socket", &e), false));
            }
            let n = match s.read(&mut buf) {
                Ok(n) => n,
                // Interrupted by a signal: read again (the deadline still bounds it).
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err((timed_out(), false))
                }
                Err(e) => return Err((unreachable("read", &e), !got_any)),
            };
            if n == 0 {
                match parser.finish() {
                    Ok(Some(r)) => break r,
                    Ok(None) => {
                        return Err((
                            unreachable("read", &"connection closed before a response"),
                            true,
                        ))
                    }
                    Err(e) => return Err((EtcdError::Protocol(format!("{ep}: {e}")), false)),
                }
            }
            got_any = true;
            parser.feed(&buf[..n]);
            match parser.poll() {
                Ok(Some(r)) => break r,
                Ok(None) => {}
                Err(e) => return Err((EtcdError::Protocol(format!("{ep}: {e}")), false)),
            }
        };
        if resp.keep_alive && parser.buffered() == 0 {
            self.idle = Some((idx, s));
        }
        Self::decode(ep, path, &resp).map_err(|e| (e, false))
    }

    /// The JSON of a complete answer, or why not.
    fn decode(
        ep: &str,
        path: &str,
        resp: &lattice_wire::http::client::ClientResponse,
    ) -> Result<Value, EtcdError> {
        let v: Value = serde_json::from_slice(&resp.body).map_err(|e| {
            EtcdError::Protocol(format!(
                "{ep} {path}: answer (status {}) is not JSON: {e}",
                resp.status
            ))
        })?;
        if resp.status != 200 {
            let message = v["message"]
                .as_str()
                .or(v["error"].as_str())
                .unwrap_or("")
                .to_string();
            return Err(EtcdError::Rejected {
                status: resp.status,
                message,
            });
        }
        // A streaming call (keep-alive) wraps its one message in `result`, or reports `error`.
        if let Some(err) = v.get("error") {
            return Err(EtcdError::Rejected {
                status: 200,
                message: err["message"]
                    .as_str()
                    .unwrap_or("stream error")
                    .to_string(),
            });
        }
        if !v.is_object() {
            return Err(EtcdError::Protocol(format!(
                "{ep} {path}: answer is not a JSON object"
            )));
        }
        Ok(v.get("result").cloned().unwrap_or(v))
    }

    /// Grants a lease of `ttl_s` seconds; returns its id and the TTL etcd granted (it may raise a
    /// TTL below its minimum).
    pub fn grant(&mut self, ttl_s: i64) -> Result<(i64, i64), EtcdError> {
        let v = self.call("/v3/lease/grant", &json!({ "TTL": ttl_s.to_string() }))?;
        if let Some(e) = v["error"].as_str().filter(|e| !e.is_empty()) {
            return Err(EtcdError::Rejected {
                status: 200,
                message: e.to_string(),
            });
        }
        let id = int(&v["ID"])?;
        if id == 0 {
            return Err(EtcdError::Protocol("lease grant returned no ID".into()));
        }
        Ok((id, int(&v["TTL"])?))
    }

    /// Refreshes lease `id`; returns its TTL in seconds, 0 when the lease no longer exists
    /// (expired or revoked).
    pub fn keepalive(&mut self, id: i64) -> Result<i64, EtcdError> {
        let v = self.call("/v3/lease/keepalive", &json!({ "ID": id.to_string() }))?;
        Ok(int(&v["TTL"])?.max(0))
    }

    /// Revokes lease `id` (its keys are deleted at once). A lease already gone is not an error.
    pub fn revoke(&mut self, id: i64) -> Result<(), EtcdError> {
        match self.call("/v3/lease/revoke", &json!({ "ID": id.to_string() })) {
            Ok(_) => Ok(()),
            Err(EtcdError::Rejected { message, .. }) if message.contains("not found") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Seconds lease `id` has left; 0 when it no longer exists.
    pub fn time_to_live(&mut self, id: i64) -> Result<i64, EtcdError> {
        let v = self.call("/v3/lease/timetolive", &json!({ "ID": id.to_string() }))?;
        Ok(int(&v["TTL"])?.max(0))
    }

    /// The pairs with keys starting with `prefix`, in key order, at most `limit` (0: no limit).
    pub fn range_prefix(&mut self, prefix: &[u8], limit: usize) -> Result<Vec<Kv>, EtcdError> {
        Ok(self.range_prefix_at(prefix, limit)?.0)
    }

    /// [`Client::range_prefix`] and the store's revision it was read at.
    pub fn range_prefix_at(
        &mut self,
        prefix: &[u8],
        limit: usize,
    ) -> Result<(Vec<Kv>, i64), EtcdError> {
        let v = self.call(
            "/v3/kv/range",
            &json!({
                "key": b64(prefix),
                "range_end": b64(&prefix_end(prefix)),
                "limit": limit.to_string(),
            }),
        )?;
        Ok((kvs(&v)?, int(&v["header"]["revision"])?))
    }

    /// The pair at `key`, if any.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Kv>, EtcdError> {
        let v = self.call("/v3/kv/range", &json!({ "key": b64(key) }))?;
        Ok(kvs(&v)?.into_iter().next())
    }

    /// A transaction: when every comparison holds, `success` runs, else `failure`.
    pub fn txn(
        &mut self,
        compare: &[Cmp<'_>],
        success: &[Op<'_>],
        failure: &[Op<'_>],
    ) -> Result<TxnResult, EtcdError> {
        let cmp: Vec<Value> = compare
            .iter()
            .map(|c| match c {
                Cmp::Missing(k) => json!({
                    "key": b64(k), "target": "CREATE", "result": "EQUAL", "create_revision": "0"
                }),
                Cmp::ValueIs(k, v) => json!({
                    "key": b64(k), "target": "VALUE", "result": "EQUAL", "value": b64(v)
                }),
                Cmp::ModRevision(k, r) => json!({
                    "key": b64(k), "target": "MOD", "result": "EQUAL", "mod_revision": r.to_string()
                }),
            })
            .collect();
        let ops = |ops: &[Op<'_>]| -> Vec<Value> {
            ops.iter()
                .map(|o| match o {
                    Op::Put(k, v, lease) => json!({ "request_put": {
                        "key": b64(k), "value": b64(v), "lease": lease.to_string()
                    }}),
                    Op::Get(k) => json!({ "request_range": { "key": b64(k) } }),
                    Op::Delete(k) => json!({ "request_delete_range": { "key": b64(k) } }),
                })
                .collect()
        };
        let v = self.call(
            "/v3/kv/txn",
            &json!({ "compare": cmp, "success": ops(success), "failure": ops(failure) }),
        )?;
        let succeeded = v["succeeded"].as_bool().unwrap_or(false);
        let mut out = TxnResult {
            succeeded,
            revision: int(&v["header"]["revision"])?,
            kvs: Vec::new(),
        };
        if let Some(rs) = v["responses"].as_array() {
            for r in rs {
                if let Some(range) = r.get("response_range") {
                    out.kvs.extend(kvs(range)?);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake gateway: each accepted connection answers `per_conn` requests with `{}` (kept
    /// alive), then closes. Returns the port and the count of accepted connections.
    fn keepalive_server(per_conn: usize) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::BufRead;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let acc = accepted.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { return };
                acc.fetch_add(1, Ordering::SeqCst);
                let mut r = std::io::BufReader::new(s.try_clone().unwrap());
                let mut w = s;
                for _ in 0..per_conn {
                    // Head, then the Content-Length body.
                    let mut len = 0usize;
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap();
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0u8; len];
                    r.read_exact(&mut body).unwrap();
                    w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                        .unwrap();
                }
                // Closed while the client keeps it idle.
            }
        });
        (port, accepted)
    }

    #[test]
    fn connections_are_kept_and_a_dead_kept_one_is_replaced_once() {
        let (port, accepted) = keepalive_server(2);
        let mut c = Client::new(
            vec![Endpoint::parse(&format!("http://127.0.0.1:{port}")).unwrap()],
            Duration::from_millis(500),
            4096,
            Arc::new(EtcdStats::default()),
        );
        for _ in 0..2 {
            c.call("/v3/kv/range", &json!({})).unwrap();
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "two requests, one connection"
        );
        // The server closed it after two: the third finds it dead and goes on a new one.
        std::thread::sleep(Duration::from_millis(50));
        c.call("/v3/kv/range", &json!({})).unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(c.stats().failures.load(Ordering::Relaxed), 0);
    }

    /// A dead endpoint is tried, counted and passed over; the one that answered becomes the
    /// first tried; a streaming call goes the same way; a 4xx answer is not retried elsewhere.
    #[test]
    fn calls_fail_over_to_the_endpoint_that_answers_and_stay_there() {
        // A port nothing listens on: bound, then closed.
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let (port, accepted) = keepalive_server(100);
        // A client of the endpoints on `first`, then `second` (loopback, plain HTTP).
        let client = |first: u16, second: u16| {
            Client::new(
                [first, second]
                    .iter()
                    .map(|p| Endpoint::parse(&format!("http://127.0.0.1:{p}")).unwrap())
                    .collect(),
                Duration::from_millis(500),
                4096,
                Arc::new(EtcdStats::default()),
            )
        };
        let mut c = client(dead, port);
        c.call("/v3/kv/range", &json!({})).unwrap();
        let count = |c: &Client| {
            (
                c.stats().requests.load(Ordering::Relaxed),
                c.stats().failures.load(Ordering::Relaxed),
            )
        };
        assert_eq!(
            count(&c),
            (2, 1),
            "the dead endpoint first, then the live one"
        );
        c.call("/v3/kv/range", &json!({})).unwrap();
        assert_eq!(count(&c), (3, 1), "the live endpoint is now tried first");
        let (_s, authority, _) = c.open_stream("/v3/watch", &json!({})).unwrap();
        assert_eq!(authority, format!("127.0.0.1:{port}"));
        assert_eq!(count(&c), (4, 1));
        assert!(accepted.load(Ordering::SeqCst) >= 1);

        // A 4xx answer stops the round: the other endpoint is not asked.
        let rejecting = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let rport = rejecting.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for s in rejecting.incoming() {
                let Ok(mut s) = s else { return };
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let body = br#"{"error":"bad","message":"bad request","code":3}"#;
                let _ = write!(
                    s,
                    "HTTP/1.1 400 Bad Request\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(body);
            }
        });
        let mut c = client(rport, port);
        let e = c.call("/v3/kv/range", &json!({})).unwrap_err();
        assert!(
            matches!(e, EtcdError::Rejected { status: 400, .. }),
            "{e:?}"
        );
        assert_eq!(count(&c), (1, 1), "not retried on the other endpoint");
    }

    #[test]
    fn endpoints_parse_or_say_why() {
        assert_eq!(
            Endpoint::parse("http://127.0.0.1:2379/").unwrap().authority,
            "127.0.0.1:2379"
        );
        assert_eq!(
            Endpoint::parse("http://etcd-1:2379").unwrap().authority,
            "etcd-1:2379"
        );
        for bad in [
            "https://a:1",
            "127.0.0.1:2379",
            "http://a",
            "http://a:0",
            "http://a:x",
            "http://a:1/v3",
            "http://",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prefix_ends_follow_etcd() {
        assert_eq!(prefix_end(b"lattice/nodes/"), b"lattice/nodes0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }

    #[test]
    fn gateway_integers_and_kvs_decode() {
        let v: Value = serde_json::from_str(
            r#"{"kvs":[{"key":"YQ==","create_revision":"2","mod_revision":"3","value":"Yg==","lease":"7"}]}"#,
        )
        .unwrap();
        let k = kvs(&v).unwrap();
        assert_eq!(k[0].key, b"a");
        assert_eq!(k[0].value, b"b");
        assert_eq!(
            (k[0].create_revision, k[0].mod_revision, k[0].lease),
            (2, 3, 7)
        );
        let bad: Value = serde_json::from_str(r#"{"kvs":[{"key":"!!"}]}"#).unwrap();
        assert!(kvs(&bad).is_err());
        let bad: Value = serde_json::from_str(r#"{"kvs":{}}"#).unwrap();
        assert!(kvs(&bad).is_err());
        assert!(int(&json!("x")).is_err());
        assert_eq!(int(&Value::Null).unwrap(), 0);
    }
}

//! A watch on a key prefix over etcd's JSON gateway: `POST /v3/watch` answers with a chunked body
//! that never ends, one JSON message per line (`{"result": {...}}`). The discovery thread reads
//! it between its keep-alives with a short read timeout, so one thread serves both.
//!
//! Bounded: each decoded piece and each line is at most `etcd.max_response_bytes`; a longer line,
//! garbage, an `error` message, a cancelled watch (etcd compacted past our revision) or the end of
//! the stream is an [`EtcdError`], after which the caller reads the whole prefix again and opens a
//! new watch.

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use lattice_wire::http::client::{ResponseParser, StreamItem};
use serde_json::{json, Value};

use super::client::{b64, int, prefix_end, unb64, Client, Kv};
use super::EtcdError;

/// One change of a watched key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Created or updated.
    Put(Kv),
    /// Deleted (or its lease expired), at `mod_revision`.
    Delete {
        /// The key.
        key: Vec<u8>,
        /// Revision of the deletion.
        mod_revision: i64,
    },
}

/// An open watch.
pub struct Watch {
    s: TcpStream,
    authority: String,
    parser: ResponseParser,
    lines: Vec<u8>,
    max_line: usize,
    head_seen: bool,
    created: bool,
    /// The creation must be confirmed by then (`etcd.request_timeout_ms` after the request).
    confirm_by: Instant,
}

impl Watch {
    /// Opens a watch on every key under `prefix` from `start_revision` on, on the client's
    /// current endpoint (then the others). Returns once the request is sent; the creation is
    /// confirmed by the first message ([`Watch::poll`]), which must come within the client's
    /// request timeout.
    pub fn open(c: &mut Client, prefix: &[u8], start_revision: i64) -> Result<Watch, EtcdError> {
        let body = json!({ "create_request": {
            "key": b64(prefix),
            "range_end": b64(&prefix_end(prefix)),
            "start_revision": start_revision.to_string(),
        }});
        let (s, authority, parser) = c.open_stream("/v3/watch", &body)?;
        Ok(Watch {
            s,
            authority,
            parser,
            lines: Vec::new(),
            max_line: c.max_response(),
            head_seen: false,
            created: false,
            confirm_by: Instant::now() + c.timeout(),
        })
    }

    /// Waits up to `wait` for bytes and returns the changes they complete (possibly none), in
    /// revision order, with the highest header revision seen (0 when none). An error ends the
    /// watch.
    pub fn poll(&mut self, wait: Duration) -> Result<(Vec<Change>, i64), EtcdError> {
        let authority = self.authority.clone();
        let bad = |what: String| EtcdError::Protocol(format!("{authority} watch: {what}"));
        self.s
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
            .map_err(|e| EtcdError::Unreachable(format!("{} watch: {e}", self.authority)))?;
        let mut buf = [0u8; 8192];
        match self.s.read(&mut buf) {
            Ok(0) => {
                return Err(EtcdError::Unreachable(format!(
                    "{} watch: connection closed",
                    self.authority
                )))
            }
            Ok(n) => self.parser.feed(&buf[..n]),
            // A signal (SIGSTOP/SIGCONT, a profiler's SIGPROF) interrupting the wait is not the
            // watch ending: poll again next time.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                return Err(EtcdError::Unreachable(format!(
                    "{} watch: {e}",
                    self.authority
                )))
            }
        }
        let mut changes = Vec::new();
        let mut revision = 0;
        while let Some(item) = self.parser.poll_stream().map_err(|e| bad(e.to_string()))? {
            match item {
                StreamItem::Head { status, .. } => {
                    if status != 200 {
                        return Err(EtcdError::Rejected {
                            status,
                            message: "watch refused".into(),
                        });
                    }
                    self.head_seen = true;
                }
                StreamItem::Data(d) => {
                    if !self.head_seen {
                        return Err(bad("body before head".into()));
                    }
                    self.lines.extend_from_slice(&d);
                }
                StreamItem::End => return Err(bad("the stream ended".into())),
            }
        }
        while let Some(end) = self.lines.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.lines.drain(..=end).collect();
            let line = &line[..line.len() - 1];
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let v: Value = serde_json::from_slice(line)
                .map_err(|e| bad(format!("a message is not JSON: {e}")))?;
            revision = revision.max(self.message(&v, &mut changes)?);
        }
        if self.lines.len() > self.max_line {
            return Err(bad(format!(
                "a message is longer than {} bytes",
                self.max_line
            )));
        }
        if !self.created && Instant::now() >= self.confirm_by {
            return Err(EtcdError::Unreachable(format!(
                "{} watch: creation not confirmed in time",
                self.authority
            )));
        }
        Ok((changes, revision))
    }

    /// Applies one message; returns its header revision.
    fn message(&mut self, v: &Value, changes: &mut Vec<Change>) -> Result<i64, EtcdError> {
        if let Some(e) = v.get("error") {
            return Err(EtcdError::Rejected {
                status: 200,
                message: e["message"].as_str().unwrap_or("watch error").to_string(),
            });
        }
        let r = v
            .get("result")
            .ok_or_else(|| EtcdError::Protocol("watch message without result".into()))?;
        if r["canceled"].as_bool() == Some(true) {
            return Err(EtcdError::Rejected {
                status: 200,
                message: format!(
                    "watch cancelled (compacted at revision {}): {}",
                    int(&r["compact_revision"]).unwrap_or(0),
                    r["cancel_reason"].as_str().unwrap_or("")
                ),
            });
        }
        if r["created"].as_bool() == Some(true) {
            self.created = true;
        }
        if !self.created {
            return Err(EtcdError::Protocol(
                "watch events before its creation was confirmed".into(),
            ));
        }
        if let Some(events) = r.get("events") {
            let events = events
                .as_array()
                .ok_or_else(|| EtcdError::Protocol("watch events is not a list".into()))?;
            for ev in events {
                let kv = &ev["kv"];
                let key = unb64(&kv["key"])?;
                let mod_revision = int(&kv["mod_revision"])?;
                match ev["type"].as_str() {
                    None | Some("PUT") => changes.push(Change::Put(Kv {
                        key,
                        value: unb64(&kv["value"])?,
                        create_revision: int(&kv["create_revision"])?,
                        mod_revision,
                        lease: int(&kv["lease"])?,
                    })),
                    Some("DELETE") => changes.push(Change::Delete { key, mod_revision }),
                    Some(other) => {
                        return Err(EtcdError::Protocol(format!(
                            "unknown watch event type {other:?}"
                        )))
                    }
                }
            }
        }
        int(&r["header"]["revision"])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::etcd::{EtcdConfig, EtcdStats};
    use std::io::Write;
    use std::net::TcpListener;
    use std::sync::Arc;

    /// A fake gateway that answers the watch request with `parts`, written one by one.
    fn serve(parts: Vec<Vec<u8>>) -> (Client, std::thread::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            for p in parts {
                s.write_all(&p).unwrap();
                s.flush().unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
            // Keep the connection open a little: a watch that ends must say why, not see EOF.
            std::thread::sleep(Duration::from_millis(600));
        });
        let cfg = EtcdConfig {
            endpoints: vec![format!("http://127.0.0.1:{port}")],
            max_response_bytes: 4096,
            request_timeout_ms: 300,
            ..EtcdConfig::default()
        };
        (cfg.client(Arc::new(EtcdStats::default())).unwrap(), t)
    }

    fn chunk(body: &str) -> Vec<u8> {
        format!("{:x}\r\n{body}\r\n", body.len()).into_bytes()
    }

    const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";

    /// Polls until `n` changes arrived or an error; bounded.
    fn drain(w: &mut Watch, n: usize) -> Result<Vec<Change>, EtcdError> {
        let mut all = Vec::new();
        for _ in 0..200 {
            let (c, _) = w.poll(Duration::from_millis(10))?;
            all.extend(c);
            if all.len() >= n {
                return Ok(all);
            }
        }
        Ok(all)
    }

    #[test]
    fn messages_split_across_chunks_give_puts_and_deletes_in_order() {
        let created = r#"{"result":{"header":{"revision":"5"},"created":true}}"#;
        let ev = r#"{"result":{"header":{"revision":"7"},"events":[{"kv":{"key":"YQ==","value":"Yg==","create_revision":"6","mod_revision":"6"}},{"type":"DELETE","kv":{"key":"YQ==","mod_revision":"7"}}]}}"#;
        let (a, b) = ev.split_at(40);
        let (mut c, t) = serve(vec![
            HEAD.to_vec(),
            chunk(&format!("{created}\n")),
            chunk(a),
            chunk(&format!("{b}\n")),
        ]);
        let mut w = Watch::open(&mut c, b"a", 6).unwrap();
        let got = drain(&mut w, 2).unwrap();
        assert_eq!(got.len(), 2);
        assert!(matches!(&got[0], Change::Put(kv) if kv.key == b"a" && kv.value == b"b"));
        assert_eq!(
            got[1],
            Change::Delete {
                key: b"a".to_vec(),
                mod_revision: 7
            }
        );
        t.join().unwrap();
        // Then the server closes: the watch ends with an error.
        assert!(drain(&mut w, 1).is_err());
    }

    #[test]
    fn garbage_cancels_oversize_and_events_before_creation_end_the_watch() {
        let cases: Vec<(Vec<Vec<u8>>, &str)> = vec![
            (vec![HEAD.to_vec(), chunk("not json\n")], "not JSON"),
            (
                vec![
                    HEAD.to_vec(),
                    chunk(
                        r#"{"result":{"header":{"revision":"9"},"canceled":true,"compact_revision":"8"}}"#,
                    ),
                    chunk("\n"),
                ],
                "compacted at revision 8",
            ),
            (
                vec![
                    HEAD.to_vec(),
                    chunk(r#"{"result":{"header":{"revision":"9"},"events":[]}}"#),
                    chunk("\n"),
                ],
                "before its creation",
            ),
            (
                vec![
                    HEAD.to_vec(),
                    chunk(&"x".repeat(3000)),
                    chunk(&"x".repeat(3000)),
                ],
                // A line over the bound, or two chunks decoded in one read over it.
                "than 4096",
            ),
            (
                vec![b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}".to_vec()],
                "status 404",
            ),
            (vec![b"SSH-2.0-x\r\n\r\n".to_vec()], "malformed"),
            // Says nothing (and keeps the connection): the creation is never confirmed.
            (vec![HEAD.to_vec()], "not confirmed in time"),
        ];
        for (parts, want) in cases {
            let (mut c, t) = serve(parts);
            let mut w = Watch::open(&mut c, b"a", 1).unwrap();
            let e = drain(&mut w, 1).unwrap_err();
            assert!(e.to_string().contains(want), "{want}: {e}");
            t.join().unwrap();
        }
    }
}

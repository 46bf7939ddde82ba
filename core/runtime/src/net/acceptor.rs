//! The acceptors: one thread per listener that accepts connections, checks each against the IP
//! rules and the per-address connection rate, and hands it to a shard (`net.balance`) through a
//! bounded SPSC ring per (listener, shard). The shard owns the socket from then on; the ring it
//! came from tells the shard the listener's protocol stack.
//!
//! The rules and limits are read through [`Switch`] caches (one atomic load per connection while
//! nothing changes); the per-address table is each acceptor thread's own (so the limit
//! `limits.ip_conns_per_s` applies per listener).
//!
//! `accept` failing for lack of descriptors (EMFILE, ENFILE) or memory is survived: counted,
//! logged at most once a second, retried after a short backoff while the shards go on serving
//! existing sessions; connections wait in the kernel's listen queue meanwhile. Refusals at
//! `net.max_connections` are counted and their warnings rate-limited (a summary tells how many
//! were not logged, at the next refusal after the window).

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lattice_wire::MonoTime;

use super::access::{AccessRules, Verdict};
use super::continuity::{LimitsConfig, PolicyName};
use super::ip_limit::IpLimiter;
use super::listener::ListenerMetrics;
use super::switch::{Cached, Switch};
use super::{Balance, NetConfig};
use crate::mesh::ring::Producer;
use crate::mesh::ShardSignal;
use crate::server::RefusalFrames;
use crate::telemetry::continuity::AcceptMetrics;
use crate::telemetry::metrics::{Metrics, ShardMetrics};
use crate::telemetry::warn_limit::{self, WarnLimiter};

/// What the acceptor checks connections against and reports to.
pub(crate) struct Gates {
    pub signals: Arc<Vec<ShardSignal>>,
    pub metrics: Arc<Metrics>,
    pub accept_metrics: Arc<AcceptMetrics>,
    pub access: Arc<Switch<AccessRules>>,
    pub limits: Arc<Switch<LimitsConfig>>,
    pub refusals: RefusalFrames,
    /// `session.close_linger_ms`: how long an answered refusal waits for the client to close.
    pub linger: Duration,
}

/// Refused connections waiting for their lingering close, per listener (beyond it a refused
/// connection is closed at once).
const LINGER_QUEUE: usize = 256;

/// The lingering close of connections refused with a frame, on a helper thread of the listener
/// (started at the first such refusal): the write side is shut (the frame, then a FIN), then
/// whatever the client still sends is read and dropped until it closes its side or the linger
/// bound passes, and only then is the socket closed. Closing at once with the client's `Hello`
/// unread would send a reset, which can destroy the frame before the client reads it.
struct Linger {
    name: String,
    bound: Duration,
    tx: Option<SyncSender<(TcpStream, Instant)>>,
    metrics: Arc<AcceptMetrics>,
}

impl Linger {
    fn hand(&mut self, stream: TcpStream) {
        let _ = stream.shutdown(Shutdown::Write);
        if self.tx.is_none() {
            // The thread holds the one it drains: the channel holds the rest of the bound.
            let (tx, rx) = sync_channel::<(TcpStream, Instant)>(LINGER_QUEUE - 1);
            let spawned = std::thread::Builder::new()
                .name(format!("lattice-linger-{}", self.name))
                .spawn(move || {
                    for (s, deadline) in rx {
                        drain_until(s, deadline);
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(listener = %self.name, error = %e, "cannot start the refusal linger thread; refused connections close at once");
                return;
            }
            self.tx = Some(tx);
        }
        if let Some(tx) = &self.tx {
            match tx.try_send((stream, Instant::now() + self.bound)) {
                Ok(()) => {}
                // Full: closed at once (a flood of refusals must not hold descriptors).
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    self.metrics
                        .linger_full_total
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Reads and drops until the peer closes, an error, or `deadline`; then the socket closes.
fn drain_until(mut s: TcpStream, deadline: Instant) {
    if s.set_nonblocking(false).is_err() {
        return;
    }
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// The acceptor's admission state: cached rules and limits, the per-address table, its clock.
struct Admission {
    access: Cached<AccessRules>,
    limits: Cached<LimitsConfig>,
    table: IpLimiter,
    origin: Instant,
    metrics: Arc<AcceptMetrics>,
    refusals: RefusalFrames,
    /// The listener speaks binary frames without TLS (a refusal may be answered with a frame).
    binary: bool,
    linger: Linger,
}

impl Admission {
    fn new(g: &Gates, binary: bool, name: &str) -> Admission {
        let limits = g.limits.current();
        Admission {
            access: g.access.cache(),
            limits: g.limits.cache(),
            table: IpLimiter::new(limits.ip_limit(), limits.ip_table_size),
            origin: Instant::now(),
            metrics: g.accept_metrics.clone(),
            refusals: g.refusals.clone(),
            binary,
            linger: Linger {
                name: name.to_owned(),
                bound: g.linger,
                tx: None,
                metrics: g.accept_metrics.clone(),
            },
        }
    }

    /// The connection when one from `ip` may go on; otherwise `None`: it was answered (then it
    /// lingers, see [`Linger`]) or closed, and counted.
    fn admit(&mut self, ip: IpAddr, stream: TcpStream) -> Option<TcpStream> {
        let (rules, _) = self.access.get();
        let verdict = if rules.is_open() {
            Verdict::Admitted
        } else {
            rules.check(ip)
        };
        if let Some(why) = verdict.reason() {
            self.metrics.denied_total.fetch_add(1, Ordering::Relaxed);
            // Debug level: a refused address must not be able to flood the log.
            tracing::debug!(%ip, reason = %why, "connection refused");
            return None;
        }
        let (limits, changed) = self.limits.get();
        let policy = limits.ip_policy;
        if changed {
            self.table
                .reconfigure(limits.ip_limit(), limits.ip_table_size);
        }
        if matches!(verdict, Verdict::Allowed(_)) {
            return Some(stream);
        }
        let now = MonoTime(self.origin.elapsed().as_nanos() as u64);
        let check = self.table.allow(ip, now);
        let m = &self.metrics;
        m.ip_table_evicted_total
            .fetch_add(check.evicted as u64, Ordering::Relaxed);
        m.ip_table_entries
            .store(self.table.len() as u64, Ordering::Relaxed);
        if check.allowed {
            return Some(stream);
        }
        m.ip_limited_total.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%ip, "connection refused: limits.ip_conns_per_s");
        if policy == PolicyName::Error && self.binary && !self.refusals.rate_limited.is_empty() {
            // Best effort on a fresh socket: its send buffer takes a small frame at once.
            let mut stream = stream;
            let _ = stream.set_nonblocking(true);
            if stream.write(&self.refusals.rate_limited).is_ok() {
                self.linger.hand(stream);
            }
        }
        None
    }
}

/// Picks the shard for the next connection.
pub fn pick(balance: Balance, next: &AtomicUsize, open: &[usize]) -> usize {
    match balance {
        Balance::RoundRobin => next.fetch_add(1, Ordering::Relaxed) % open.len(),
        Balance::LeastConns => open
            .iter()
            .enumerate()
            .min_by_key(|(_, n)| **n)
            .map_or(0, |(i, _)| i),
    }
}

/// What one acceptor thread needs.
pub(crate) struct AcceptorParts {
    /// The listener's name (logs).
    pub name: String,
    /// The bound listening socket.
    pub listener: TcpListener,
    /// One ring per shard.
    pub rings: Vec<Producer<TcpStream>>,
    /// The shards' signals and metrics, the IP rules and limits.
    pub gates: Gates,
    /// True when the listener speaks binary frames without TLS: only there is a refused
    /// connection answered with an `Error{RATE_LIMITED}` frame.
    pub binary: bool,
    /// This listener's counters.
    pub counters: Arc<ListenerMetrics>,
    /// `[net]`.
    pub net: NetConfig,
    /// Set to stop; the thread then ends at the next connection (see [`crate::Server::shutdown`]).
    pub stop: Arc<AtomicBool>,
}

/// Backoff after an `accept` failure. Descriptors free up when sessions close; the kernel keeps
/// new connections in the listen queue meanwhile (up to the backlog).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// True for failures that mean "out of descriptors or memory" (retry later), not a bad socket.
fn out_of_resources(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Starts one listener's acceptor thread. It stops when `stop` is set and one more connection
/// arrives.
pub(crate) fn spawn(p: AcceptorParts) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("lattice-accept-{}", p.name))
        .spawn(move || {
            let AcceptorParts {
                name,
                listener,
                rings,
                gates,
                binary,
                counters,
                net,
                stop,
            } = p;
            let signals = gates.signals.clone();
            let metrics = gates.metrics.clone();
            let mut admission = Admission::new(&gates, binary, &name);
            let next = AtomicUsize::new(0);
            let mut open = vec![0usize; rings.len()];
            // Failures are logged at most once per second (with how many were not logged).
            let mut last_log: Option<Instant> = None;
            // Refusals at net.max_connections come in floods: warnings rate-limited like the
            // shards' protocol violations (log.warn_burst per log.warn_window_ms, then a summary).
            let mut warns = WarnLimiter::from_defaults();
            let born = Instant::now();
            let mut unlogged = 0u64;
            loop {
                let accepted = listener.accept();
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        let c = if out_of_resources(&e) {
                            &counters.accept_errors_resources_total
                        } else {
                            &counters.accept_errors_other_total
                        };
                        c.fetch_add(1, Ordering::Relaxed);
                        if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                            tracing::warn!(listener = %name, error = %e, unlogged, "accept failed; backing off (existing sessions are served)");
                            last_log = Some(Instant::now());
                            unlogged = 0;
                        } else {
                            unlogged += 1;
                        }
                        std::thread::sleep(ACCEPT_BACKOFF);
                        continue;
                    }
                };
                let Some(stream) = admission.admit(peer.ip(), stream) else {
                    continue;
                };
                for (i, s) in signals.iter().enumerate() {
                    open[i] = s.open_sessions.load(Ordering::Relaxed);
                }
                let total: usize = open.iter().sum();
                let shard = pick(net.balance, &next, &open);
                if total >= net.max_connections {
                    ShardMetrics::add(&metrics.shards[shard].connections_rejected_total, 1);
                    let now_ms = born.elapsed().as_millis() as u64;
                    let (verdict, summary) = warns.check("max_connections", now_ms);
                    if let Some(s) = summary {
                        tracing::warn!(listener = %name, reason = s.reason, suppressed = s.suppressed, window_ms = s.window_ms, "connection refused: further warnings of this reason suppressed in the last window");
                    }
                    if verdict == warn_limit::Verdict::Log {
                        tracing::warn!(listener = %name, %peer, limit = net.max_connections, "connection refused: net.max_connections reached");
                    }
                    continue;
                }
                if let Err(e) = stream
                    .set_nonblocking(true)
                    .and_then(|_| stream.set_nodelay(net.nodelay))
                {
                    tracing::warn!(listener = %name, %peer, error = %e, "cannot set up accepted socket");
                    continue;
                }
                counters.accepted_total.fetch_add(1, Ordering::Relaxed);
                signals[shard].open_sessions.fetch_add(1, Ordering::Relaxed);
                let mut s = stream;
                // The ring is bounded: a shard that does not take sockets stalls accepting (the
                // kernel backlog then holds new connections), it never loses one.
                loop {
                    match rings[shard].push(s) {
                        Ok(()) => break,
                        Err(back) => {
                            s = back;
                            ShardMetrics::add(&metrics.shards[shard].mesh_ring_full_total, 1);
                            signals[shard].wake();
                            if stop.load(Ordering::SeqCst) {
                                return;
                            }
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                }
                signals[shard].wake();
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_cycles_and_least_conns_picks_min() {
        let next = AtomicUsize::new(0);
        let picks: Vec<_> = (0..4)
            .map(|_| pick(Balance::RoundRobin, &next, &[0, 0]))
            .collect();
        assert_eq!(picks, [0, 1, 0, 1]);
        assert_eq!(pick(Balance::LeastConns, &next, &[5, 2, 9]), 1);
    }
}

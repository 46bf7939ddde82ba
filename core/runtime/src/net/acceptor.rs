//! The acceptor: one thread that accepts client connections, checks each against the IP rules and
//! the per-address connection rate, and hands it to a shard (`net.balance`) through a bounded SPSC
//! ring per shard. The shard owns the socket from then on.
//!
//! The rules and limits are read through [`Switch`] caches (one atomic load per connection while
//! nothing changes); the per-address table is this thread's own.

use std::io::Write;
use std::net::{IpAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lattice_wire::MonoTime;

use super::access::{AccessRules, Verdict};
use super::continuity::{LimitsConfig, PolicyName};
use super::ip_limit::IpLimiter;
use super::switch::{Cached, Switch};
use super::{Balance, NetConfig};
use crate::mesh::ring::Producer;
use crate::mesh::ShardSignal;
use crate::server::RefusalFrames;
use crate::telemetry::continuity::AcceptMetrics;
use crate::telemetry::metrics::{Metrics, ShardMetrics};

/// What the acceptor checks connections against and reports to.
pub(crate) struct Gates {
    pub signals: Arc<Vec<ShardSignal>>,
    pub metrics: Arc<Metrics>,
    pub accept_metrics: Arc<AcceptMetrics>,
    pub access: Arc<Switch<AccessRules>>,
    pub limits: Arc<Switch<LimitsConfig>>,
    pub refusals: RefusalFrames,
}

/// The acceptor's admission state: cached rules and limits, the per-address table, its clock.
struct Admission {
    access: Cached<AccessRules>,
    limits: Cached<LimitsConfig>,
    table: IpLimiter,
    origin: Instant,
    metrics: Arc<AcceptMetrics>,
    refusals: RefusalFrames,
}

impl Admission {
    fn new(g: &Gates) -> Admission {
        let limits = g.limits.current();
        Admission {
            access: g.access.cache(),
            limits: g.limits.cache(),
            table: IpLimiter::new(limits.ip_limit(), limits.ip_table_size),
            origin: Instant::now(),
            metrics: g.accept_metrics.clone(),
            refusals: g.refusals.clone(),
        }
    }

    /// True when a connection from `ip` may go on; otherwise it was answered (or not) and counted,
    /// and the caller drops it.
    fn admit(&mut self, ip: IpAddr, stream: &mut TcpStream) -> bool {
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
            return false;
        }
        let (limits, changed) = self.limits.get();
        let policy = limits.ip_policy;
        if changed {
            self.table
                .reconfigure(limits.ip_limit(), limits.ip_table_size);
        }
        if matches!(verdict, Verdict::Allowed(_)) {
            return true;
        }
        let now = MonoTime(self.origin.elapsed().as_nanos() as u64);
        let check = self.table.allow(ip, now);
        let m = &self.metrics;
        m.ip_table_evicted_total
            .fetch_add(check.evicted as u64, Ordering::Relaxed);
        m.ip_table_entries
            .store(self.table.len() as u64, Ordering::Relaxed);
        if check.allowed {
            return true;
        }
        m.ip_limited_total.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%ip, "connection refused: limits.ip_conns_per_s");
        if policy == PolicyName::Error && !self.refusals.rate_limited.is_empty() {
            // Best effort on a fresh socket: its send buffer takes a small frame at once.
            let _ = stream.set_nonblocking(true);
            let _ = stream.write(&self.refusals.rate_limited);
        }
        false
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

/// Starts the acceptor thread. It stops when `stop` is set and one more connection arrives.
pub(crate) fn spawn(
    listener: TcpListener,
    rings: Vec<Producer<TcpStream>>,
    gates: Gates,
    net: NetConfig,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("lattice-acceptor".into())
        .spawn(move || {
            let signals = gates.signals.clone();
            let metrics = gates.metrics.clone();
            let mut admission = Admission::new(&gates);
            let next = AtomicUsize::new(0);
            let mut open = vec![0usize; rings.len()];
            loop {
                let accepted = listener.accept();
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let (mut stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off briefly instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                if !admission.admit(peer.ip(), &mut stream) {
                    continue;
                }
                for (i, s) in signals.iter().enumerate() {
                    open[i] = s.open_sessions.load(Ordering::Relaxed);
                }
                let total: usize = open.iter().sum();
                let shard = pick(net.balance, &next, &open);
                if total >= net.max_connections {
                    ShardMetrics::add(&metrics.shards[shard].connections_rejected_total, 1);
                    tracing::warn!(%peer, limit = net.max_connections, "connection refused: net.max_connections reached");
                    continue;
                }
                if let Err(e) = stream
                    .set_nonblocking(true)
                    .and_then(|_| stream.set_nodelay(net.nodelay))
                {
                    tracing::warn!(%peer, error = %e, "cannot set up accepted socket");
                    continue;
                }
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

//! The acceptors: one thread per listener that accepts connections and hands each socket to a
//! shard (`net.balance`), through a bounded SPSC ring per (listener, shard). The shard owns the
//! socket from then on; the ring it came from tells the shard the listener's protocol stack.
//!
//! `accept` failing for lack of descriptors (EMFILE, ENFILE) or memory is survived: counted,
//! logged at most once a second, retried after a short backoff while the shards go on serving
//! existing sessions; connections wait in the kernel's listen queue meanwhile. Refusals at
//! `net.max_connections` are counted and their warnings rate-limited (a summary tells how many
//! were not logged, at the next refusal after the window).

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::listener::ListenerMetrics;
use super::{Balance, NetConfig};
use crate::mesh::ring::Producer;
use crate::mesh::ShardSignal;
use crate::telemetry::metrics::{Metrics, ShardMetrics};
use crate::telemetry::warn_limit::{Verdict, WarnLimiter};

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
    /// Every shard's signal (open counts, wake-ups).
    pub signals: Arc<Vec<ShardSignal>>,
    /// Shard metrics (refusals, full rings).
    pub metrics: Arc<Metrics>,
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
                signals,
                metrics,
                counters,
                net,
                stop,
            } = p;
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
                    if verdict == Verdict::Log {
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

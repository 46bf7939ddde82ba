//! The acceptor: one thread that accepts client connections and hands each socket to a shard
//! (`net.balance`), through a bounded SPSC ring per shard. The shard owns the socket from then on.

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::{Balance, NetConfig};
use crate::mesh::ring::Producer;
use crate::mesh::ShardSignal;
use crate::telemetry::metrics::{Metrics, ShardMetrics};

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

/// Starts the acceptor thread (`name`). It stops when `stop` is set and one more connection
/// arrives.
pub(crate) fn spawn(
    name: &str,
    listener: TcpListener,
    rings: Vec<Producer<TcpStream>>,
    signals: Arc<Vec<ShardSignal>>,
    metrics: Arc<Metrics>,
    net: NetConfig,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let next = AtomicUsize::new(0);
            let mut open = vec![0usize; rings.len()];
            loop {
                let accepted = listener.accept();
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off briefly instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        std::thread::sleep(Duration::from_millis(10));
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

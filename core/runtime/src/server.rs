//! [`Server`]: starts the shards (one pinned OS thread each, each running one monoio executor), joins
//! them with the mesh, binds the listeners and starts one acceptor per listener, and stops them all
//! on request.

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::control::ControlHandle;
use crate::driver::{self, DriverChoice};
use lattice_wire::{SessionType, StackConfig};

use crate::mesh::{ring, Control, ShardSignal};
use crate::net::continuity::ContinuityConfig;
use crate::net::listener::{self, ListenerMetrics, ListenerSpec};
use crate::net::switch::Switch;
use crate::net::tls::{ShardTls, TlsMetrics, TlsServing};
use crate::net::{acceptor, NetConfig};
use crate::shard::{self, AcceptIn, CxSettings, ShardApp};
use crate::telemetry::continuity::{AcceptMetrics, ContinuityMetrics};
use crate::telemetry::metrics::Metrics;

/// `[runtime]` section.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Number of shards; 0 means one per available core.
    pub shards: usize,
    /// I/O driver.
    pub driver: DriverChoice,
    /// Pin shard `i` to core `i mod cores`.
    pub pin: bool,
    /// Capacity of each shard-to-shard ring (messages).
    pub ring_capacity: usize,
    /// Messages taken from one incoming ring per loop pass before moving on; also the most
    /// replies for another shard's sessions sent as one mesh message (`shard/batch.rs`).
    pub mesh_batch: usize,
    /// io_uring submission queue entries.
    pub uring_entries: u32,
    /// Control commands a shard's control lane holds.
    pub control_capacity: usize,
    /// Timers one shard's wheel holds; inserts beyond it fail and are counted.
    pub timer_max_timers: u32,
    /// Timers fired per loop pass; the rest fire in the next pass (counted).
    pub timer_max_fire_per_pass: u32,
    /// Messages one shard keeps waiting for one full destination ring before refusing client
    /// requests to it (`BUSY`); never-drop messages pass it and are counted.
    pub mesh_backlog_limit: usize,
    /// Queued application work items one shard runs per loop pass.
    pub queued_budget: usize,
}

impl RuntimeConfig {
    /// The shard count after resolving 0 to the number of cores.
    pub fn shard_count(&self) -> usize {
        if self.shards == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            self.shards
        }
        .min(lattice_wire::SessionId::MAX_SHARD + 1)
    }
}

/// `[shutdown]` section.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// How long shards wait for in-flight replies to flush before closing sessions anyway.
    pub drain_timeout_ms: u64,
    /// How long the process waits for every shard to stop once asked (a shard stuck in a
    /// handler never does); past it the process goes on without that shard (storage is still
    /// flushed) and exits 1. 0 waits for ever.
    pub stop_timeout_ms: u64,
}

/// A running set of shards.
pub struct Server {
    addrs: Vec<(String, SocketAddr)>,
    signals: Arc<Vec<ShardSignal>>,
    control: ControlHandle,
    metrics: Arc<Metrics>,
    stop_accept: Arc<AtomicBool>,
    acceptors: Vec<JoinHandle<()>>,
    shards: Vec<JoinHandle<Result<(), String>>>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listen address could not be bound.
    #[error("cannot listen on {key} {addr}: {source}")]
    Listen {
        /// The configuration key that names the address (`net.listen`, `listeners.http`, …).
        key: String,
        /// The listener's address.
        addr: String,
        /// OS error.
        source: std::io::Error,
    },
    /// A thread could not be spawned.
    #[error("cannot spawn thread: {0}")]
    Spawn(std::io::Error),
    /// The `[access]` rules do not parse.
    #[error("config key `access`: {0}")]
    Access(#[from] crate::net::access::CidrError),
}

/// What the acceptor sends a connection refused by the per-address rate limit under the `error`
/// policy: an encoded `Error{RATE_LIMITED}` frame (the runtime knows no message encoding, so the
/// server gives it). Empty: close without a word.
#[derive(Debug, Clone, Default)]
pub struct RefusalFrames {
    /// The frame for a rate-limited connection.
    pub rate_limited: Vec<u8>,
}

/// The session continuity and operator settings of a server (see [`Server::start_listeners`]).
#[derive(Debug, Clone, Default)]
pub struct OperatorSettings {
    /// `[session]`, `[limits]`, `[access]`.
    pub continuity: ContinuityConfig,
    /// What connections refused at accept get.
    pub refusals: RefusalFrames,
}

impl Server {
    /// Binds `net.listen` (binary frames, client sessions, backlog 4096) and starts the shards;
    /// see [`Server::start_listeners`].
    pub fn start<A, F>(
        rt: &RuntimeConfig,
        net: &NetConfig,
        shutdown: &ShutdownConfig,
        factory: F,
    ) -> Result<Server, StartError>
    where
        A: ShardApp,
        F: Fn(usize) -> A + Send + Sync + 'static,
    {
        let spec = ListenerSpec {
            name: "binary".into(),
            addr: net.listen.clone(),
            stack: Arc::new(StackConfig::binary(SessionType::Client)),
            tls: false,
        };
        Server::start_listeners(
            rt,
            net,
            &[spec],
            4096,
            None,
            shutdown,
            &OperatorSettings::default(),
            factory,
        )
    }

    /// Binds every listener of `listeners` with a listen backlog of `backlog`, starts the shards
    /// (each building its app with `factory(shard_id)` on its own thread) and one acceptor thread
    /// per listener. Listeners with `tls` serve their sessions over TLS with `tls`'s certificate
    /// (counted in `lattice_tls_*`). Fails when an address cannot be bound, or when a listener
    /// wants TLS and `tls` is `None` (nothing is left running), or when the IP rules of `ops`
    /// do not parse. `ops` gives the session continuity and operator settings: resume
    /// (`[session]`), rate limits (`[limits]`), IP rules (`[access]`), and the frame refused
    /// connections get.
    #[allow(clippy::too_many_arguments)]
    pub fn start_listeners<A, F>(
        rt: &RuntimeConfig,
        net: &NetConfig,
        listeners: &[ListenerSpec],
        backlog: u32,
        tls: Option<TlsServing>,
        shutdown: &ShutdownConfig,
        ops: &OperatorSettings,
        factory: F,
    ) -> Result<Server, StartError>
    where
        A: ShardApp,
        F: Fn(usize) -> A + Send + Sync + 'static,
    {
        let n = rt.shard_count();
        let cont = &ops.continuity;
        let rules = cont.rules()?;
        if let Some(spec) = listeners.iter().find(|l| l.tls && tls.is_none()) {
            return Err(StartError::Listen {
                key: spec.config_key(),
                addr: spec.addr.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "the listener wants TLS but no certificate is configured",
                ),
            });
        }
        let mut bound = Vec::with_capacity(listeners.len());
        for spec in listeners {
            let l = listener::bind(&spec.addr, backlog).map_err(|source| StartError::Listen {
                key: spec.config_key(),
                addr: spec.addr.clone(),
                source,
            })?;
            let addr = l.local_addr().map_err(|source| StartError::Listen {
                key: spec.config_key(),
                addr: spec.addr.clone(),
                source,
            })?;
            bound.push((spec, l, addr));
        }
        let metrics = Arc::new(Metrics::new(n));
        let continuity_metrics: Arc<Vec<ContinuityMetrics>> =
            Arc::new((0..n).map(|_| ContinuityMetrics::default()).collect());
        let accept_metrics = Arc::new(AcceptMetrics::default());
        {
            let (c, a) = (continuity_metrics.clone(), accept_metrics.clone());
            metrics.add_renderer(move |w| {
                ContinuityMetrics::render(&c, w);
                a.render(w);
            });
        }
        let tls_metrics: Arc<Vec<TlsMetrics>> =
            Arc::new((0..n).map(|_| TlsMetrics::default()).collect());
        if let Some(t) = &tls {
            let (m, source) = (tls_metrics.clone(), t.source.clone());
            metrics.add_renderer(move |w| crate::net::tls::render(&m, &source, w));
        }
        let signals: Arc<Vec<ShardSignal>> = Arc::new(
            (0..n)
                .map(|_| ShardSignal::new(rt.control_capacity))
                .collect(),
        );
        let control = ControlHandle {
            signals: signals.clone(),
            access: Arc::new(Switch::new(rules)),
            limits: Arc::new(Switch::new(cont.limits.clone())),
        };
        let quiet: Arc<Vec<AtomicBool>> =
            Arc::new((0..n).map(|_| AtomicBool::new(false)).collect());

        // rings[src][dst]
        let mut producers: Vec<Vec<Option<ring::Producer<_>>>> =
            (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
        let mut consumers: Vec<Vec<Option<ring::Consumer<_>>>> =
            (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
        for (src, row) in producers.iter_mut().enumerate() {
            for (dst, slot) in row.iter_mut().enumerate() {
                if src != dst {
                    let (p, c) = ring::ring(rt.ring_capacity);
                    *slot = Some(p);
                    consumers[dst][src] = Some(c);
                }
            }
        }
        // accept_producers[listener][shard]; accept_consumers[shard][listener].
        let mut accept_producers: Vec<Vec<ring::Producer<TcpStream>>> =
            (0..bound.len()).map(|_| Vec::with_capacity(n)).collect();
        let mut accept_consumers: Vec<Vec<AcceptIn>> =
            (0..n).map(|_| Vec::with_capacity(bound.len())).collect();
        for (li, (spec, _, _)) in bound.iter().enumerate() {
            for consumers in accept_consumers.iter_mut() {
                let (p, c) = ring::ring::<TcpStream>(1024);
                accept_producers[li].push(p);
                consumers.push(AcceptIn {
                    stack: spec.stack.clone(),
                    ring: c,
                    tls: spec.tls,
                });
            }
        }

        let factory = Arc::new(factory);
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let mut shards = Vec::with_capacity(n);
        for (id, ((outs, ins), accept_in)) in producers
            .into_iter()
            .zip(consumers)
            .zip(accept_consumers)
            .enumerate()
        {
            let parts = shard::ShardParts {
                id,
                shards: n,
                outs,
                ins,
                accept_in,
                tls: tls
                    .as_ref()
                    .map(|t| ShardTls::new(id, t.source.clone(), t.settings, tls_metrics.clone())),
                signals: signals.clone(),
                quiet: quiet.clone(),
                metrics: metrics.clone(),
                settings: CxSettings {
                    net: net.clone(),
                    continuity: cont.clone(),
                    continuity_metrics: continuity_metrics.clone(),
                    backlog_limit: rt.mesh_backlog_limit.max(1),
                    wheel: crate::time::WheelConfig {
                        max_timers: rt.timer_max_timers.max(1),
                        max_fire_per_pass: rt.timer_max_fire_per_pass.max(1),
                        ..Default::default()
                    },
                },
                mesh_batch: rt.mesh_batch.max(1),
                queued_budget: rt.queued_budget.max(1),
                drain_timeout: Duration::from_millis(shutdown.drain_timeout_ms),
            };
            let factory = factory.clone();
            let core = if rt.pin && !cores.is_empty() {
                Some(cores[id % cores.len()])
            } else {
                None
            };
            let (choice, entries) = (rt.driver, rt.uring_entries);
            let handle = std::thread::Builder::new()
                .name(format!("lattice-shard-{id}"))
                .spawn(move || {
                    if let Some(c) = core {
                        if !core_affinity::set_for_current(c) {
                            tracing::warn!(shard = id, core = c.id, "could not pin shard to core");
                        }
                    }
                    let metrics = parts.metrics.clone();
                    let result = driver::run_on(choice, entries, move |kind| {
                        metrics.drivers[id].store(kind.code(), Ordering::Relaxed);
                        tracing::info!(shard = id, driver = kind.name(), "shard started");
                        shard::run(parts, move || factory(id))
                    });
                    match result {
                        Ok((_, fallback)) => {
                            if let Some(why) = fallback {
                                tracing::warn!(shard = id, "{why}");
                            }
                            // The thread's last act (after `on_stopped` and the runtime's
                            // teardown), so `join_within`'s "waiting for shards" names a shard
                            // only before its line, not after.
                            tracing::info!(shard = id, "shutdown: shard stopped");
                            Ok(())
                        }
                        Err(e) => {
                            tracing::error!(shard = id, error = %e, "shard runtime failed to start");
                            Err(format!("shard {id}: cannot start runtime: {e}"))
                        }
                    }
                })
                .map_err(StartError::Spawn)?;
            shards.push(handle);
        }

        let stop_accept = Arc::new(AtomicBool::new(false));
        let mut acceptors = Vec::with_capacity(bound.len());
        let mut addrs = Vec::with_capacity(bound.len());
        let mut counters = Vec::with_capacity(bound.len());
        for ((spec, l, addr), rings) in bound.into_iter().zip(accept_producers) {
            let c = Arc::new(ListenerMetrics::default());
            counters.push((spec.name.clone(), addr, c.clone()));
            let binary = !spec.tls && spec.stack.kind == lattice_wire::StackKind::Binary;
            let spawned = acceptor::spawn(acceptor::AcceptorParts {
                name: spec.name.clone(),
                listener: l,
                rings,
                gates: acceptor::Gates {
                    signals: signals.clone(),
                    metrics: metrics.clone(),
                    accept_metrics: accept_metrics.clone(),
                    access: control.access.clone(),
                    limits: control.limits.clone(),
                    refusals: ops.refusals.clone(),
                    linger: Duration::from_millis(ops.continuity.session.close_linger_ms),
                },
                binary,
                counters: c,
                net: net.clone(),
                stop: stop_accept.clone(),
            });
            match spawned {
                Ok(h) => acceptors.push(h),
                Err(e) => {
                    let mut partial = Server {
                        addrs,
                        signals,
                        control,
                        metrics,
                        stop_accept,
                        acceptors,
                        shards,
                    };
                    partial.shutdown();
                    return Err(StartError::Spawn(e));
                }
            }
            tracing::info!(listener = %spec.name, %addr, stack = ?spec.stack.kind, session = spec.stack.session_type.as_str(), tls = spec.tls, backlog, "listening");
            addrs.push((spec.name.clone(), addr));
        }
        metrics.add_renderer(move |w| listener::render_listeners(&counters, w));
        tracing::info!(shards = n, listeners = addrs.len(), "started");
        Ok(Server {
            addrs,
            signals,
            control,
            metrics,
            stop_accept,
            acceptors,
            shards,
        })
    }

    /// The first listener's bound address (`net.listen` for [`Server::start`]).
    pub fn local_addr(&self) -> SocketAddr {
        self.addrs
            .first()
            .map(|a| a.1)
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Every listener's name and bound address, in the order given.
    pub fn local_addrs(&self) -> &[(String, SocketAddr)] {
        &self.addrs
    }

    /// The bound address of the listener named `name`.
    pub fn addr_of(&self, name: &str) -> Option<SocketAddr> {
        self.addrs.iter().find(|a| a.0 == name).map(|a| a.1)
    }

    /// All shards' metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The handle operators (the admin API) use on the shards' control lanes and on the settings
    /// the acceptor reads.
    pub fn control(&self) -> ControlHandle {
        self.control.clone()
    }

    /// Stops accepting and asks every shard to drain and stop. Returns at once; see [`Server::join`].
    pub fn shutdown(&mut self) {
        if !self.stop_accept.swap(true, Ordering::SeqCst) {
            // Unblock each acceptor's accept() with a throwaway connection.
            for (_, addr) in &self.addrs {
                let mut wake = *addr;
                if wake.ip().is_unspecified() {
                    wake.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                let _ = TcpStream::connect_timeout(&wake, Duration::from_millis(500));
            }
            for a in std::mem::take(&mut self.acceptors) {
                let _ = a.join();
            }
        }
        for (i, s) in self.signals.iter().enumerate() {
            if let Err(e) = s.push_control(Control::Shutdown) {
                tracing::error!(shard = i, error = %e, "could not deliver shutdown");
            }
        }
    }

    /// Waits for every shard to stop. Fails if a shard could not start or panicked.
    pub fn join(self) -> Result<(), String> {
        self.join_within(None)
    }

    /// [`Server::join`], waiting at most `bound` for the shards to finish: every 5 s it logs the
    /// shards still running, and past `bound` it returns an error naming them and leaves their
    /// threads behind (a shard stuck in a handler cannot be stopped from outside).
    pub fn join_within(mut self, bound: Option<Duration>) -> Result<(), String> {
        let start = std::time::Instant::now();
        let mut logged = start;
        loop {
            let running: Vec<usize> = (0..self.shards.len())
                .filter(|&i| !self.shards[i].is_finished())
                .collect();
            if running.is_empty() {
                break;
            }
            let waited = start.elapsed();
            if bound.is_some_and(|b| waited >= b) {
                let ms = bound.map_or(0, |b| b.as_millis());
                tracing::error!(
                    shards = %crate::telemetry::log::list(&running),
                    "shutdown: shards did not stop within {ms} ms (shutdown.stop_timeout_ms; stuck in a handler?); going on without them"
                );
                let mut errors = vec![format!(
                    "shards {running:?} did not stop within {ms} ms (shutdown.stop_timeout_ms)"
                )];
                // The stuck handles are dropped (their threads left behind); the others have
                // finished and keep their shard numbers.
                let finished = std::mem::take(&mut self.shards)
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| !running.contains(i));
                errors.extend(join_finished(finished));
                return Err(errors.join("; "));
            }
            if logged.elapsed() >= Duration::from_secs(5) {
                logged = std::time::Instant::now();
                tracing::warn!(
                    shards = %crate::telemetry::log::list(&running),
                    waited_s = waited.as_secs(),
                    "shutdown: waiting for shards to stop"
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let errors = join_finished(std::mem::take(&mut self.shards).into_iter().enumerate());
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// A handle another thread (the alert watcher) uses to tell a stuck shard from an idle one.
    pub fn watch(&self) -> ShardWatch {
        ShardWatch {
            shards: self.signals.len(),
            metrics: self.metrics.clone(),
        }
    }

    /// True when any shard thread has finished (e.g. its runtime failed to start).
    pub fn any_shard_finished(&self) -> bool {
        self.shards.iter().any(|h| h.is_finished())
    }
}

/// Joins shard threads given with their shard numbers; returns the errors of those that failed
/// or panicked.
fn join_finished(
    handles: impl Iterator<Item = (usize, JoinHandle<Result<(), String>>)>,
) -> Vec<String> {
    let mut errors = Vec::new();
    for (i, h) in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(e),
            Err(_) => errors.push(format!("shard {i} panicked")),
        }
    }
    errors
}

/// Progress of every shard, readable from any thread. Even an idle shard makes a loop pass at
/// least every 500 ms (`shard::IDLE_PASS_MAX`), so a pass count that stops moving for longer means
/// the shard is stuck in a callback (a handler running inline in a connection task included).
#[derive(Clone)]
pub struct ShardWatch {
    shards: usize,
    metrics: Arc<Metrics>,
}

impl ShardWatch {
    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// Loop passes shard `i` has completed (`lattice_loop_passes_total`).
    pub fn passes(&self, i: usize) -> u64 {
        self.metrics.shards[i]
            .loop_passes_total
            .load(Ordering::Relaxed)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !self.shards.is_empty() {
            self.shutdown();
            for h in std::mem::take(&mut self.shards) {
                let _ = h.join();
            }
        }
    }
}

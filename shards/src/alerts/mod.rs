//! Alerts to a Feishu (Lark) custom-bot webhook, sent off the shards.
//!
//! Two threads: `lattice-alerts-watch` checks every `alerts.check_interval_ms` the counters the
//! shards and the storage engine publish ([`watch`]: handler-panic rate, stalled shards, storage
//! outage, dump file written); `lattice-alerts` sends. Between them, and for any code that calls
//! [`raise`], one bounded queue (`alerts.queue`; a full queue drops the alert and counts it). The
//! sender deduplicates and rate-limits ([`limit`]), signs ([`feishu`]) and posts (HTTPS through
//! rustls, or HTTP) with a timeout and bounded retries. A crash cannot send from its signal handler: the next start finds the
//! run marker the crashed process left in `storage.data_dir` and sends "previous run crashed".

pub mod feishu;
pub mod limit;
pub mod watch;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lattice_runtime::telemetry::prom::{Kind, Writer};
use lattice_runtime::ShardWatch;
use lattice_storage::StorageHandle;

use crate::metrics::AppMetrics;
use watch::{Alert, Observation, StorageObs, Thresholds, Watch};

/// `[alerts]` section.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Webhook URL; empty = alerts off.
    pub webhook: String,
    /// The bot's signing secret; empty = unsigned.
    pub secret: String,
    /// PEM bundle of the CAs trusted for an `https://` webhook.
    pub ca_file: String,
    /// Alerts waiting to be sent.
    pub queue: usize,
    /// The same alert key is sent at most once per this many ms.
    pub dedup_ms: u64,
    /// Alerts sent per rolling minute.
    pub per_minute: usize,
    /// Timeout of each step of one POST, ms.
    pub timeout_ms: u64,
    /// Retries of a failed POST (1 s apart).
    pub retries: u32,
    /// How often the watcher looks at the counters, ms.
    pub check_interval_ms: u64,
    /// Handler panics per rolling minute that raise an alert (0 = off).
    pub panics_per_minute: u64,
    /// A shard making no loop pass for this long raises an alert, ms (0 = off, else ≥ 1500: an
    /// idle shard passes every 500 ms).
    pub stall_ms: u64,
}

/// Counters of the alert path.
#[derive(Debug, Default)]
pub struct AlertStats {
    /// Alerts the webhook accepted.
    pub sent: AtomicU64,
    /// Alerts given up after the retries.
    pub failed: AtomicU64,
    /// Alerts dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Repeats folded by deduplication.
    pub deduplicated: AtomicU64,
    /// Alerts over the per-minute limit.
    pub rate_limited: AtomicU64,
}

/// The process's alert counters.
pub fn stats() -> &'static AlertStats {
    static S: OnceLock<AlertStats> = OnceLock::new();
    S.get_or_init(AlertStats::default)
}

static QUEUE: OnceLock<SyncSender<Alert>> = OnceLock::new();

/// Queues an alert from any thread without waiting. Returns false when alerts are off or the
/// queue is full (counted in `lattice_alerts_dropped_total`).
pub fn raise(key: &str, text: &str) -> bool {
    let Some(q) = QUEUE.get() else { return false };
    match q.try_send(Alert {
        key: key.to_string(),
        text: text.to_string(),
    }) {
        Ok(()) => true,
        Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
            stats().dropped.fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}

/// Appends the alert counters to `/metrics`.
pub fn render(w: &mut Writer<'_>) {
    let s = stats();
    for (name, help, v) in [
        (
            "lattice_alerts_sent_total",
            "Alerts the webhook accepted.",
            &s.sent,
        ),
        (
            "lattice_alerts_failed_total",
            "Alerts given up after alerts.retries failed posts.",
            &s.failed,
        ),
        (
            "lattice_alerts_dropped_total",
            "Alerts dropped because the alert queue (alerts.queue) was full.",
            &s.dropped,
        ),
        (
            "lattice_alerts_deduplicated_total",
            "Repeats of an alert within alerts.dedup_ms (folded into the next one sent).",
            &s.deduplicated,
        ),
        (
            "lattice_alerts_rate_limited_total",
            "Alerts over alerts.per_minute (not sent).",
            &s.rate_limited,
        ),
    ] {
        w.single(name, Kind::Counter, help, v.load(Ordering::Relaxed));
    }
}

/// What the watcher reads.
pub struct Sources {
    /// Shard progress.
    pub shards: ShardWatch,
    /// Application counters (handler panics).
    pub app: Arc<Vec<AppMetrics>>,
    /// The storage engine, if any.
    pub storage: Option<StorageHandle>,
}

/// The running alert threads.
pub struct Alerts {
    stop: Arc<AtomicBool>,
    watcher: Option<JoinHandle<()>>,
    sender: Option<JoinHandle<()>>,
}

/// Name of the run marker in the data directory.
pub const RUN_MARKER: &str = "lattice.running";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Starts the alert threads when `alerts.webhook` is set (`Ok(None)` when off). Checks the run
/// marker in `data_dir` first: a marker left by an earlier run raises the crash alert. Call with
/// the data directory's lock held (`datadir::lock`): that is what says the earlier run ended.
/// Fails on a webhook URL it cannot use.
pub fn start(
    cfg: &AlertsConfig,
    sources: Sources,
    data_dir: &Path,
) -> Result<Option<Alerts>, feishu::SendError> {
    let marker = data_dir.join(RUN_MARKER);
    let previous = std::fs::read_to_string(&marker).ok();
    // The marker is kept whether or not alerts are on: it is how the next start knows.
    let _ = std::fs::create_dir_all(data_dir);
    if let Err(e) = std::fs::write(&marker, std::process::id().to_string()) {
        tracing::warn!(path = %marker.display(), error = %e, "cannot write the run marker; a crash will not be reported at the next start");
    }
    if cfg.webhook.is_empty() {
        return Ok(None);
    }
    let url = feishu::parse_url(&cfg.webhook)?;
    let tls = if url.tls {
        Some(feishu::tls_config(&cfg.ca_file)?)
    } else {
        None
    };
    let (tx, rx) = sync_channel(cfg.queue.max(1));
    let _ = QUEUE.set(tx.clone());
    // The caller holds the data directory's lock, so the run that left the marker has ended,
    // whatever now runs under its pid (pids are reused: in a container the server often gets
    // the same pid at every start, and a liveness check missed every crash there).
    if let Some(pid) = previous {
        let pid = pid.trim();
        raise(
            "previous_crash",
            &format!(
                "the previous lattice run (pid {pid}) ended without a clean shutdown: crash or kill; its log's last line and a core file in the working directory say why"
            ),
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let cfg = cfg.clone();
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("lattice-alerts".into())
            .spawn(move || send_loop(rx, url, tls, cfg, stop))
            .map_err(feishu::SendError::Io)?
    };
    let watcher = {
        let stop = stop.clone();
        let t = Thresholds {
            panics_per_minute: cfg.panics_per_minute,
            stall_ms: cfg.stall_ms,
        };
        let every = Duration::from_millis(cfg.check_interval_ms.max(10));
        std::thread::Builder::new()
            .name("lattice-alerts-watch".into())
            .spawn(move || watch_loop(sources, t, every, tx, stop))
            .map_err(feishu::SendError::Io)?
    };
    tracing::info!(webhook = %cfg.webhook, signed = !cfg.secret.is_empty(), "alerts on");
    Ok(Some(Alerts {
        stop,
        watcher: Some(watcher),
        sender: Some(sender),
    }))
}

/// Removes the run marker: the run ended cleanly. Call at the end of a clean shutdown.
pub fn clean_exit(data_dir: &Path) {
    let _ = std::fs::remove_file(data_dir.join(RUN_MARKER));
}

impl Alerts {
    /// Stops the watcher, lets the sender try what is queued for at most 5 s, and joins both.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(w) = self.watcher.take() {
            let _ = w.join();
        }
        if let Some(s) = self.sender.take() {
            let _ = s.join();
        }
    }
}

fn observe(s: &Sources) -> Observation {
    let n = s.shards.shards();
    Observation {
        handler_panics: s
            .app
            .iter()
            .map(|m| m.handler_panics_total.load(Ordering::Relaxed))
            .sum(),
        passes: (0..n).map(|i| s.shards.passes(i)).collect(),
        storage: s.storage.as_ref().map(|h| {
            let m = h.metrics();
            StorageObs {
                ping_failures: m.ping_failures,
                statement_errors: m.kinds.iter().map(|k| k.errors).sum(),
                dumps: m.dumps,
                dump_pending: m.dump_pending,
            }
        }),
    }
}

fn watch_loop(
    sources: Sources,
    t: Thresholds,
    every: Duration,
    tx: SyncSender<Alert>,
    stop: Arc<AtomicBool>,
) {
    let mut w = Watch::new(t);
    let start = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let now = start.elapsed().as_millis() as u64;
        for a in w.observe(now, &observe(&sources)) {
            if tx.try_send(a).is_err() {
                stats().dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        std::thread::sleep(every);
    }
}

/// How long the sender keeps trying after stop (a POST under way at its end still gets its
/// `alerts.timeout_ms`).
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The pause between two tries of one alert.
const RETRY_GAP: Duration = Duration::from_secs(1);

fn send_loop(
    rx: Receiver<Alert>,
    url: feishu::Url,
    tls: Option<Arc<rustls::ClientConfig>>,
    cfg: AlertsConfig,
    stop: Arc<AtomicBool>,
) {
    let mut limiter = limit::Limiter::new(cfg.dedup_ms, cfg.per_minute);
    let host = hostname();
    let timeout = Duration::from_millis(cfg.timeout_ms.max(1));
    let mut stop_deadline: Option<Instant> = None;
    loop {
        if stop.load(Ordering::SeqCst) && stop_deadline.is_none() {
            stop_deadline = Some(Instant::now() + STOP_GRACE);
        }
        let alert = match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(a) => a,
            Err(RecvTimeoutError::Timeout) if stop_deadline.is_some() => return,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let st = stats();
        let folded = match limiter.decide(&alert.key, now_ms()) {
            limit::Decision::Send { folded } => folded,
            limit::Decision::Duplicate => {
                st.deduplicated.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            limit::Decision::RateLimited => {
                st.rate_limited.fetch_add(1, Ordering::Relaxed);
                // Logged, so an alert that is not sent still leaves a trace: repeats were folded
                // above, and the queue (`alerts.queue`) bounds what arrives.
                tracing::warn!(key = %alert.key, text = %alert.text, "alert not sent: over alerts.per_minute");
                continue;
            }
        };
        let mut text = format!("[lattice {host}] {}", alert.text);
        if folded > 0 {
            text.push_str(&format!(" ({folded} repeats since the last alert)"));
        }
        let mut ok = false;
        for attempt in 0..=cfg.retries {
            // The stop bounds an alert whose retries are under way too (they went on for every
            // retry of it, and then of the next queued one, past the stop's own budget).
            if stop.load(Ordering::SeqCst) && stop_deadline.is_none() {
                stop_deadline = Some(Instant::now() + STOP_GRACE);
            }
            if stop_deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            let ts = now_ms() / 1000;
            match feishu::post(
                &url,
                tls.as_ref(),
                &feishu::body(&text, ts, &cfg.secret),
                timeout,
            ) {
                Ok(()) => {
                    ok = true;
                    break;
                }
                Err(e) => {
                    tracing::warn!(key = %alert.key, attempt, error = %e, "alert not delivered");
                    if attempt < cfg.retries {
                        std::thread::sleep(RETRY_GAP);
                    }
                }
            }
        }
        if ok {
            st.sent.fetch_add(1, Ordering::Relaxed);
            tracing::info!(key = %alert.key, "alert sent");
        } else {
            st.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

//! The center role (in-process by default): it leases this node's machine id before any service
//! starts, keeps the lease renewed, and tells the shards how far they may stamp ids.
//!
//! - [`ids`]: the snowflake id layout and the per-shard generator ([`ids::IdGen`]);
//! - [`lease`]: where leases are kept ([`lease::LeaseStore`]; the storage database on one node).
//!
//! At start ([`Center::start`]): take a lease (the id this node held, or the lowest free one, or a
//! fixed one), refuse to start when the clock is behind the id's persisted last timestamp (after
//! waiting up to `center.clock_wait_max_ms`), confirm a first reservation, then renew from a
//! thread every `center.renew_interval_ms`. Each renewal extends the lease to now +
//! `center.lease_ttl_ms` and records now + `center.reserve_ms` as the highest timestamp ids may
//! carry; only after the database confirmed it do shards see the new ceiling. A renewal that fails
//! leaves the ceiling where it was, so shards stop issuing ids at most `reserve_ms` later; a lease
//! found taken by another process stops them at once (and for good). At stop every shard has
//! reported its last id, so the lease is released with the exact last timestamp.
//!
//! Knows nothing of SQL (the storage crate's `lease` module writes the rows) or of shards beyond
//! the shared [`ids::IdLease`].

pub mod ids;
pub mod lease;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lattice_runtime::telemetry::prom::{Kind, Writer};
use lattice_storage::lease::{Acquire, LeaseError, LeaseRow};

use ids::{IdLease, MAX_MACHINE};
use lease::LeaseStore;

/// `[center]` section.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CenterConfig {
    /// Node name that owns the lease; empty = the host name.
    pub node: String,
    /// Fixed machine id, or -1 for automatic.
    pub machine_id: i64,
    /// Lease duration, ms.
    pub lease_ttl_ms: u64,
    /// Renewal period, ms.
    pub renew_interval_ms: u64,
    /// How far ahead of the clock ids may be stamped under the last renewal, ms.
    pub reserve_ms: u64,
    /// How long to wait at start for the clock to pass the persisted last timestamp, ms.
    pub clock_wait_max_ms: u64,
}

impl CenterConfig {
    /// Checks the bounds; the error names the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.machine_id < -1 || self.machine_id > i64::from(MAX_MACHINE) {
            return Err((
                "center.machine_id",
                format!("must be -1 or 0..={MAX_MACHINE}"),
            ));
        }
        if self.renew_interval_ms == 0 {
            return Err(("center.renew_interval_ms", "must be at least 1".into()));
        }
        if self.reserve_ms <= self.renew_interval_ms {
            return Err((
                "center.reserve_ms",
                "must be larger than center.renew_interval_ms (or ids stop between renewals)"
                    .into(),
            ));
        }
        if self.lease_ttl_ms <= self.reserve_ms {
            return Err((
                "center.lease_ttl_ms",
                "must be larger than center.reserve_ms (ids must stop before the lease can pass to another node)".into(),
            ));
        }
        Ok(())
    }

    /// The node name: the configured one, else the host name.
    pub fn node_name(&self) -> String {
        if !self.node.trim().is_empty() {
            return self.node.trim().to_string();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into())
    }
}

/// Why the center could not start.
#[derive(Debug, thiserror::Error)]
pub enum CenterError {
    /// The lease could not be taken.
    #[error("machine-id lease: {0}")]
    Lease(#[from] LeaseError),
    /// The clock is behind the persisted last id timestamp.
    #[error("clock is {behind_ms} ms behind the last id timestamp of machine id {machine_id} ({last_ts_ms} Unix ms); waited {waited_ms} ms; fix the clock (ids could repeat) or raise center.clock_wait_max_ms")]
    ClockBehind {
        /// The machine id.
        machine_id: u32,
        /// Its persisted last timestamp.
        last_ts_ms: u64,
        /// How far behind the clock still was.
        behind_ms: u64,
        /// How long we waited.
        waited_ms: u64,
    },
    /// A stop was asked for (SIGTERM/SIGINT) while waiting for the clock (the lease was
    /// released) or for the holder of this name's lease to show itself.
    #[error("stopped while waiting")]
    Stopped,
    /// A running process under this node's name holds a machine-id lease (it renewed it while
    /// this one watched): two running nodes must not share a name.
    #[error("machine id {machine_id} is held by a running process named {owner:?} (it renewed its lease while this start waited): two running servers must not share a node name; give this one its own center.node (or cluster.node_id)")]
    NameInUse {
        /// The machine id it holds.
        machine_id: u32,
        /// The shared name.
        owner: String,
    },
    /// The renewal thread could not be started.
    #[error("cannot start the lease renewal thread: {0}")]
    Thread(std::io::Error),
}

/// Counters of the center (rendered on `/metrics`).
#[derive(Debug, Default)]
pub struct CenterStats {
    renewals: AtomicU64,
    renew_failures: AtomicU64,
    lost: AtomicU64,
    machine_id: AtomicU64,
}

impl CenterStats {
    /// Appends the center's families.
    pub fn render(&self, lease: &IdLease, w: &mut Writer<'_>) {
        w.single(
            "lattice_center_lease_renewals_total",
            Kind::Counter,
            "Machine-id lease renewals confirmed by the lease store.",
            self.renewals.load(Ordering::Relaxed),
        );
        w.single(
            "lattice_center_lease_renew_failures_total",
            Kind::Counter,
            "Machine-id lease renewals that failed (ids stop once center.reserve_ms passes without one).",
            self.renew_failures.load(Ordering::Relaxed),
        );
        w.single(
            "lattice_center_lease_lost",
            Kind::Gauge,
            "1 once the machine-id lease was found taken by another process (no more ids).",
            self.lost.load(Ordering::Relaxed),
        );
        w.single(
            "lattice_center_machine_id",
            Kind::Gauge,
            "The leased machine id.",
            self.machine_id.load(Ordering::Relaxed),
        );
        w.single(
            "lattice_center_id_ceiling_timestamp_seconds",
            Kind::Gauge,
            "Highest id timestamp confirmed in the lease store, Unix time (0 when lost).",
            lease.ceiling_ms() as f64 / 1000.0,
        );
    }
}

lattice_runtime::shard_counters! {
    /// Unique ids of one shard ([`ids::IdGen`]).
    pub struct IdMetrics("lattice_ids") {
        issued_total: Counter, "Unique ids issued by this shard.";
        borrowed_total: Counter, "Ids stamped with a borrowed (future) millisecond because the sequence of the current one ran out.";
        refused_total: Counter, "Id requests refused because the machine-id lease was unconfirmed (center.reserve_ms passed without a renewal, or the lease was lost).";
    }
}

fn all_id_metrics() -> &'static [IdMetrics] {
    static ALL: std::sync::OnceLock<Vec<IdMetrics>> = std::sync::OnceLock::new();
    ALL.get_or_init(|| (0..=ids::MAX_SHARD).map(|_| IdMetrics::default()).collect())
}

/// The id counters of `shard` (one static set for every shard an id can name).
pub fn id_metrics(shard: usize) -> &'static IdMetrics {
    let all = all_id_metrics();
    &all[shard.min(all.len() - 1)]
}

/// Renders the id counters of the first `shards` shards.
pub fn render_id_metrics(shards: usize, w: &mut Writer<'_>) {
    let all = all_id_metrics();
    IdMetrics::render(&all[..shards.min(all.len())], w);
}

/// Wall-clock now in Unix ms.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A random instance token (16 hex digits) naming this process in the lease row.
fn instance_token() -> String {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        // No OS randomness: the pid and the time still tell two processes apart.
        b = (u64::from(std::process::id()) << 32 ^ now_ms()).to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The running center: the lease shared with the shards and the renewal thread.
pub struct Center {
    lease: Arc<IdLease>,
    row: LeaseRow,
    stats: Arc<CenterStats>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Box<dyn LeaseStore>>>,
    instance: String,
}

impl Center {
    /// This process's instance token (in its lease row or key; etcd membership uses it too).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Takes the lease from `store`, checks the clock against the id's last timestamp, confirms a
    /// first reservation and starts renewing. Blocks for at most the store's timeouts plus
    /// `clock_wait_max_ms`. `now` reads the wall clock in Unix ms (tests pass a fake one).
    pub fn start(
        cfg: &CenterConfig,
        store: Box<dyn LeaseStore>,
        shards: usize,
        now: fn() -> u64,
    ) -> Result<Center, CenterError> {
        Center::start_unless(cfg, store, shards, now, &AtomicBool::new(false))
    }

    /// [`Center::start`], except that the wait for the clock ends with [`CenterError::Stopped`]
    /// (and the lease released) once `stop` is set: a SIGTERM during that wait stops the start.
    pub fn start_unless(
        cfg: &CenterConfig,
        mut store: Box<dyn LeaseStore>,
        shards: usize,
        now: fn() -> u64,
        stop: &AtomicBool,
    ) -> Result<Center, CenterError> {
        let owner = cfg.node_name();
        let instance = instance_token();
        // A lease of this name that has not expired: its holder crashed moments ago (the
        // restart takes it back), or it is a running server under the same name, on another
        // data directory sharing this database, which would lose its id to us. A running holder
        // renews every `renew_interval_ms`: watch for three of them.
        let held = store.live_under(&owner, now())?;
        if !held.is_empty() {
            let wait = cfg
                .renew_interval_ms
                .saturating_mul(3)
                .min(cfg.lease_ttl_ms);
            tracing::info!(
                machine_id = held[0].0,
                node = %owner,
                wait_ms = wait,
                "center: this node's name still holds an unexpired machine-id lease (a crash moments ago, or another running server under the same name); waiting to see whether its holder renews it"
            );
            let started = std::time::Instant::now();
            while started.elapsed() < Duration::from_millis(wait) {
                if stop.load(Ordering::SeqCst) {
                    return Err(CenterError::Stopped);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let now_held = store.live_under(&owner, now())?;
            if let Some(&(machine_id, _)) = now_held
                .iter()
                .find(|(id, exp)| held.iter().any(|(b, bexp)| b == id && exp > bexp))
            {
                return Err(CenterError::NameInUse { machine_id, owner });
            }
        }
        let row = store.acquire(&Acquire {
            machine_id: u32::try_from(cfg.machine_id).ok(),
            max_id: MAX_MACHINE,
            owner: &owner,
            instance: &instance,
            now_ms: now(),
            ttl_ms: cfg.lease_ttl_ms,
        })?;
        let id = row.machine_id;
        // The clock must be past every timestamp issued under this id before (Leaf's lesson: a
        // clock stepped back after a restart repeats ids). Short gaps (a restart right after a
        // crash, inside the last reservation) are waited out.
        // The wait is measured on the monotonic clock: the wall clock is the suspect here.
        let started = std::time::Instant::now();
        let mut t = now();
        while t <= row.last_ts_ms {
            if stop.load(Ordering::SeqCst) {
                let _ = store.release(id, &instance, None);
                return Err(CenterError::Stopped);
            }
            let waited = started.elapsed().as_millis() as u64;
            if waited >= cfg.clock_wait_max_ms {
                let _ = store.release(id, &instance, None);
                return Err(CenterError::ClockBehind {
                    machine_id: id,
                    last_ts_ms: row.last_ts_ms,
                    behind_ms: row.last_ts_ms - t,
                    waited_ms: waited,
                });
            }
            let left = (row.last_ts_ms - t + 1).min(cfg.clock_wait_max_ms - waited);
            std::thread::sleep(Duration::from_millis(left.clamp(1, 50)));
            t = now();
        }
        let lease = Arc::new(IdLease::new(id, shards));
        let stats = Arc::new(CenterStats::default());
        stats.machine_id.store(u64::from(id), Ordering::Relaxed);
        let reserve = t + cfg.reserve_ms;
        let first = store.renew(id, &instance, t + cfg.lease_ttl_ms, reserve)?;
        lease.confirm(reserve);
        stats.renewals.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            machine_id = id,
            node = %owner,
            instance = %instance,
            last_ts_ms = row.last_ts_ms,
            "center: machine id leased"
        );
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (lease, stats, stop, cfg, instance) = (
                lease.clone(),
                stats.clone(),
                stop.clone(),
                cfg.clone(),
                instance.clone(),
            );
            std::thread::Builder::new()
                .name("lattice-center".into())
                .spawn(move || renew_loop(store, &cfg, id, &instance, &lease, &stats, &stop, now))
                .map_err(CenterError::Thread)?
        };
        Ok(Center {
            lease,
            row: LeaseRow {
                last_ts_ms: row.last_ts_ms,
                ..first
            },
            stats,
            stop,
            thread: Some(thread),
            instance,
        })
    }

    /// The lease the shards' generators read.
    pub fn lease(&self) -> Arc<IdLease> {
        self.lease.clone()
    }

    /// The machine id.
    pub fn machine_id(&self) -> u32 {
        self.row.machine_id
    }

    /// The last id timestamp persisted before this start: every shard's first id is above it.
    pub fn floor_ms(&self) -> u64 {
        self.row.last_ts_ms
    }

    /// The center's counters, for `/metrics`.
    pub fn stats(&self) -> Arc<CenterStats> {
        self.stats.clone()
    }

    /// Stops renewing and releases the lease, recording the largest timestamp the shards issued
    /// when every shard reported it (else the reservation stays recorded). Call after the shards
    /// stopped.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        let Some(t) = self.thread.take() else { return };
        let Ok(mut store) = t.join() else {
            tracing::error!("center: renewal thread panicked; lease left to expire");
            return;
        };
        let issued = self.lease.issued_high_water();
        match store.release(self.row.machine_id, &self.instance, issued) {
            Ok(true) => tracing::info!(
                machine_id = self.row.machine_id,
                last_ts_ms = %lattice_runtime::telemetry::log::or_none(issued),
                "center: machine id released"
            ),
            Ok(false) => tracing::warn!(
                machine_id = self.row.machine_id,
                "center: lease was no longer ours at release"
            ),
            Err(e) => tracing::warn!(
                machine_id = self.row.machine_id,
                error = %e,
                "center: lease release failed; it expires after center.lease_ttl_ms"
            ),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn renew_loop(
    mut store: Box<dyn LeaseStore>,
    cfg: &CenterConfig,
    id: u32,
    instance: &str,
    lease: &IdLease,
    stats: &CenterStats,
    stop: &AtomicBool,
    now: fn() -> u64,
) -> Box<dyn LeaseStore> {
    let period = Duration::from_millis(cfg.renew_interval_ms);
    let mut failing = false;
    let mut lost = false;
    while !stop.load(Ordering::Acquire) {
        // Sleep in short steps so a stop is seen quickly.
        let until = std::time::Instant::now() + period;
        while std::time::Instant::now() < until && !stop.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(20).min(period));
        }
        if stop.load(Ordering::Acquire) || lost {
            continue;
        }
        let t = now();
        let reserve = t + cfg.reserve_ms;
        match store.renew(id, instance, t + cfg.lease_ttl_ms, reserve) {
            Ok(_) => {
                lease.confirm(reserve);
                stats.renewals.fetch_add(1, Ordering::Relaxed);
                if failing {
                    tracing::info!(machine_id = id, "center: lease renewed again");
                    failing = false;
                }
            }
            Err(LeaseError::Lost { owner, .. }) => {
                lease.revoke();
                lost = true;
                stats.lost.store(1, Ordering::Relaxed);
                let holder = if owner.is_empty() {
                    "nobody (the lease is gone, e.g. the lease store lost its data)"
                } else {
                    owner.as_str()
                };
                tracing::error!(machine_id = id, now_held_by = %holder, "center: machine-id lease lost; no more ids are issued on this node");
            }
            Err(e) => {
                stats.renew_failures.fetch_add(1, Ordering::Relaxed);
                if !failing {
                    tracing::warn!(machine_id = id, error = %e, "center: lease renewal failed; ids stop once the last reservation passes");
                    failing = true;
                }
            }
        }
    }
    store
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    /// An in-memory lease store with the same rules as the database one.
    #[derive(Clone, Default)]
    struct Mem(Arc<Mutex<Mem0>>);
    #[derive(Default)]
    struct Mem0 {
        rows: BTreeMap<u32, LeaseRow>,
        fail_renew: bool,
    }

    impl LeaseStore for Mem {
        fn acquire(&mut self, a: &Acquire<'_>) -> Result<LeaseRow, LeaseError> {
            let mut m = self.0.lock().unwrap();
            let id = a.machine_id.unwrap_or(0);
            let r = m.rows.entry(id).or_insert(LeaseRow {
                machine_id: id,
                owner: String::new(),
                instance: String::new(),
                expires_ms: 0,
                last_ts_ms: 0,
            });
            if !(r.is_free(a.now_ms) || r.owner == a.owner) {
                return Err(LeaseError::Held {
                    id,
                    owner: r.owner.clone(),
                    expires_ms: r.expires_ms,
                });
            }
            r.owner = a.owner.into();
            r.instance = a.instance.into();
            r.expires_ms = a.now_ms + a.ttl_ms;
            Ok(r.clone())
        }
        fn renew(
            &mut self,
            id: u32,
            instance: &str,
            expires_ms: u64,
            reserve_ms: u64,
        ) -> Result<LeaseRow, LeaseError> {
            let mut m = self.0.lock().unwrap();
            if m.fail_renew {
                return Err(LeaseError::Storage(lattice_storage::StorageError::Closed));
            }
            let r = m.rows.get_mut(&id).unwrap();
            if r.instance != instance {
                return Err(LeaseError::Lost {
                    id,
                    owner: r.owner.clone(),
                });
            }
            r.expires_ms = expires_ms;
            r.last_ts_ms = r.last_ts_ms.max(reserve_ms);
            Ok(r.clone())
        }
        fn release(
            &mut self,
            id: u32,
            instance: &str,
            issued: Option<u64>,
        ) -> Result<bool, LeaseError> {
            let mut m = self.0.lock().unwrap();
            let r = m.rows.get_mut(&id).unwrap();
            if r.instance != instance {
                return Ok(false);
            }
            r.owner.clear();
            r.instance.clear();
            r.expires_ms = 0;
            if let Some(ms) = issued {
                r.last_ts_ms = ms;
            }
            Ok(true)
        }
    }

    fn cfg() -> CenterConfig {
        CenterConfig {
            node: "n1".into(),
            machine_id: 3,
            lease_ttl_ms: 10_000,
            renew_interval_ms: 20,
            reserve_ms: 200,
            clock_wait_max_ms: 300,
        }
    }

    static FAKE_NOW: AtomicU64 = AtomicU64::new(0);
    fn fake_now() -> u64 {
        FAKE_NOW.load(Ordering::SeqCst)
    }

    #[test]
    fn config_bounds_name_the_key() {
        let mut c = cfg();
        c.reserve_ms = 10;
        assert_eq!(c.validate().unwrap_err().0, "center.reserve_ms");
        let mut c = cfg();
        c.lease_ttl_ms = 100;
        assert_eq!(c.validate().unwrap_err().0, "center.lease_ttl_ms");
        let mut c = cfg();
        c.machine_id = 128;
        assert_eq!(c.validate().unwrap_err().0, "center.machine_id");
        assert!(cfg().validate().is_ok());
    }

    #[test]
    fn start_confirms_renews_and_releases_with_the_exact_high_water() {
        let store = Mem::default();
        let c = Center::start(&cfg(), Box::new(store.clone()), 2, now_ms).unwrap();
        assert_eq!(c.machine_id(), 3);
        let first = c.lease().ceiling_ms();
        assert!(first > now_ms(), "a reservation ahead of the clock");
        std::thread::sleep(Duration::from_millis(120));
        assert!(c.lease().ceiling_ms() > first, "renewals raise the ceiling");
        c.lease().report(0, 1234);
        c.lease().report(1, 999);
        c.stop();
        let m = store.0.lock().unwrap();
        assert_eq!(m.rows[&3].last_ts_ms, 1234);
        assert!(m.rows[&3].owner.is_empty());
    }

    #[test]
    fn a_clock_behind_the_last_timestamp_refuses_to_start() {
        let store = Mem::default();
        store.0.lock().unwrap().rows.insert(
            3,
            LeaseRow {
                machine_id: 3,
                owner: String::new(),
                instance: String::new(),
                expires_ms: 0,
                last_ts_ms: 1_000_000,
            },
        );
        // The clock reads 10 s before the persisted timestamp and does not move.
        FAKE_NOW.store(990_000, Ordering::SeqCst);
        let e = Center::start(&cfg(), Box::new(store.clone()), 1, fake_now)
            .err()
            .expect("must refuse");
        assert!(
            matches!(
                e,
                CenterError::ClockBehind {
                    behind_ms: 10_000,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("clock is 10000 ms behind"), "{e}");
        // A clock past it starts, and every id is above the old timestamp.
        FAKE_NOW.store(1_000_001, Ordering::SeqCst);
        let c = Center::start(&cfg(), Box::new(store), 1, fake_now).unwrap();
        assert_eq!(c.floor_ms(), 1_000_000);
        let mut g = ids::IdGen::new(c.lease(), 0, c.floor_ms());
        let id = g.next(1_000_000).unwrap();
        assert!(id.unix_ms() > 1_000_000);
        c.stop();
    }

    #[test]
    fn failing_renewals_stop_ids_after_the_reservation_and_a_lost_lease_at_once() {
        let store = Mem::default();
        let c = Center::start(&cfg(), Box::new(store.clone()), 1, now_ms).unwrap();
        let mut g = ids::IdGen::new(c.lease(), 0, c.floor_ms());
        assert!(g.next(now_ms()).is_ok());
        store.0.lock().unwrap().fail_renew = true;
        std::thread::sleep(Duration::from_millis(100));
        let ceiling = c.lease().ceiling_ms();
        // Past the last confirmed reservation: refused.
        assert!(g.next(ceiling + 1).is_err());
        assert!(c.stats.renew_failures.load(Ordering::Relaxed) > 0);
        // Another process takes the id: the next renewal finds it lost and revokes.
        {
            let mut m = store.0.lock().unwrap();
            m.fail_renew = false;
            m.rows.get_mut(&3).unwrap().instance = "someone-else".into();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while c.lease().ceiling_ms() != 0 {
            assert!(std::time::Instant::now() < deadline, "lease never revoked");
            std::thread::sleep(Duration::from_millis(10));
        }
        // Nothing past the old reservation, and a generator that asks now gets nothing at all.
        assert!(g.next(ceiling + 1).is_err());
        let mut fresh = ids::IdGen::new(c.lease(), 0, c.floor_ms());
        assert!(fresh.next(now_ms()).is_err());
        assert_eq!(c.stats.lost.load(Ordering::Relaxed), 1);
        c.stop();
    }
}

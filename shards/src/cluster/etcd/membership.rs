//! The discovery thread: this node's registration in etcd and the live set read back from it.
//!
//! At [`start`] (blocking, bounded by the request timeouts and one lease TTL): grant a lease of
//! `etcd.lease_ttl_ms`, create `<prefix>/nodes/<node_id>` bound to it (a txn that creates the key
//! only if it is missing, so two live processes never share a name), read the live set once and
//! open a watch on it. Then, on the thread `lattice-etcd`:
//! - every TTL/3: a keep-alive. A keep-alive answered "no such lease" (it expired while etcd or
//!   this node was unreachable, or someone revoked it) means the key is gone: grant a new lease
//!   and register again at once — a node never stays missing after an outage. Keep-alives that
//!   fail for longer than the TTL mark the node unregistered (`lattice_etcd_registered` 0) until
//!   one succeeds or a new registration does;
//! - the watch on `<prefix>/nodes/` ([`super::watch`]), read between keep-alives with a 20 ms
//!   read timeout: each change is applied to the view and published with [`Members::set`] as it
//!   arrives. When the watch fails (etcd gone, compacted, garbage), the whole prefix is read again
//!   (at most `etcd.max_nodes` keys) and a new watch opened from the revision read, retried every
//!   third of the TTL while etcd is unreachable. The last view is kept meanwhile (counted): during
//!   an etcd outage routing keeps the nodes it knew rather than dropping everyone;
//! - every `etcd.resync_interval_ms`: the whole prefix read again and the watch opened anew from
//!   there (a watch whose connection died silently cannot leave the view stale for longer);
//! - a view (at or after this node's registration revision) without this node's key while it
//!   believes itself registered (an operator deleted it) registers again.
//!
//! [`EtcdHandle::stop`] revokes the lease, so a cleanly stopped node leaves every view at once; a
//! killed one leaves when its lease expires.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use std::collections::BTreeMap;

use super::client::{Client, Cmp, Op};
use super::watch::{Change, Watch};
use super::{node_key, now_ms, ttl_secs, EtcdConfig, EtcdError, EtcdStats};
use crate::cluster::members::{Members, NodeInfo, Role};

/// The running registration and discovery thread.
pub struct EtcdHandle {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<EtcdStats>,
    members: Arc<Members>,
    me: NodeInfo,
}

impl EtcdHandle {
    /// Counters (`lattice_etcd_*`).
    pub fn stats(&self) -> Arc<EtcdStats> {
        self.stats.clone()
    }

    /// The live-node view this handle writes.
    pub fn members(&self) -> Arc<Members> {
        self.members.clone()
    }

    /// This node as registered.
    pub fn me(&self) -> &NodeInfo {
        &self.me
    }

    /// Stops the thread and revokes the lease: the node leaves every view at once. Blocks for at
    /// most one request timeout.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("etcd: discovery thread panicked; the lease expires after its TTL");
            }
        }
    }
}

impl Drop for EtcdHandle {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// What a registration needs.
struct Registrar {
    key: String,
    value: Vec<u8>,
    instance: String,
    ttl_s: i64,
}

fn instance_token() -> String {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        b = (u64::from(std::process::id()) << 32 ^ now_ms()).to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Registrar {
    /// Grants a lease and creates the key under it; returns the lease id, its granted TTL and
    /// the revision of the write.
    fn register(&self, c: &mut Client) -> Result<(i64, i64, i64), EtcdError> {
        let (lease, ttl) = c.grant(self.ttl_s)?;
        let key = self.key.as_bytes();
        let r = match c.txn(
            &[Cmp::Missing(key)],
            &[Op::Put(key, &self.value, lease)],
            &[Op::Get(key)],
        ) {
            Ok(r) => r,
            Err(e) => {
                let _ = c.revoke(lease);
                return Err(e);
            }
        };
        if r.succeeded {
            return Ok((lease, ttl, r.revision));
        }
        let Some(kv) = r.kvs.into_iter().next() else {
            // Deleted between the compare and the read: try again next round.
            let _ = c.revoke(lease);
            return Err(EtcdError::Protocol(
                "node key vanished during registration".into(),
            ));
        };
        let theirs: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
        if theirs["instance"].as_str() == Some(self.instance.as_str()) {
            // Our own earlier registration still stands (its lease outlived our view of it):
            // move it to the new lease.
            let moved = c.txn(
                &[Cmp::ModRevision(key, kv.mod_revision)],
                &[Op::Put(key, &self.value, lease)],
                &[],
            );
            if let Ok(m) = &moved {
                if m.succeeded {
                    if kv.lease != 0 {
                        let _ = c.revoke(kv.lease);
                    }
                    return Ok((lease, ttl, m.revision));
                }
            }
            let _ = c.revoke(lease);
            return Err(moved.err().unwrap_or_else(|| {
                EtcdError::Protocol("node key changed during registration".into())
            }));
        }
        let _ = c.revoke(lease);
        Err(EtcdError::NodeIdTaken {
            node_id: reg_node_id(self).to_string(),
            started_unix_ms: theirs["started_unix_ms"].as_u64().unwrap_or(0),
        })
    }
}

/// The live set as this node knows it: node keys to nodes, and the store revision it reflects.
struct View {
    nodes: BTreeMap<Vec<u8>, NodeInfo>,
    revision: i64,
    /// The read hit `etcd.max_nodes`: some nodes may be missing.
    full: bool,
}

impl View {
    fn publish(&self, members: &Members, stats: &EtcdStats) {
        stats
            .members
            .store(self.nodes.len() as u64, Ordering::Relaxed);
        stats
            .view_full
            .store(u64::from(self.full), Ordering::Relaxed);
        members.set(self.nodes.values().cloned().collect());
    }

    /// Applies watched changes newer than the view; returns whether the set changed.
    fn apply(&mut self, changes: Vec<Change>, revision: i64, max: usize) -> bool {
        let mut changed = false;
        for ch in changes {
            match ch {
                Change::Put(kv) if kv.mod_revision > self.revision => match parse_node(&kv.value) {
                    Some(n) if self.nodes.len() < max || self.nodes.contains_key(&kv.key) => {
                        self.nodes.insert(kv.key, n);
                        changed = true;
                    }
                    Some(_) => {
                        self.full = true;
                        tracing::warn!(
                            max,
                            "etcd: more live nodes than etcd.max_nodes; one left out"
                        );
                    }
                    None => {
                        bad_entry(&kv.key);
                        changed |= self.nodes.remove(&kv.key).is_some();
                    }
                },
                Change::Delete { key, mod_revision } if mod_revision > self.revision => {
                    changed |= self.nodes.remove(&key).is_some();
                }
                _ => {}
            }
        }
        self.revision = self.revision.max(revision);
        changed
    }
}

/// Reads the live set: every well-formed node under `<prefix>/nodes/`. Entries that do not parse
/// are skipped (logged): one bad key must not hide the others.
/// Logs a node entry that is not a node: at `WARN` the first time for its key (up to 1,024 keys
/// remembered), at `DEBUG` at every later read, so a stray key does not fill the log.
fn bad_entry(key: &[u8]) {
    static SEEN: std::sync::Mutex<Option<std::collections::HashSet<Vec<u8>>>> =
        std::sync::Mutex::new(None);
    let first = {
        let mut g = SEEN.lock().unwrap_or_else(|p| p.into_inner());
        let set = g.get_or_insert_with(Default::default);
        set.len() < 1024 && set.insert(key.to_vec())
    };
    let key = String::from_utf8_lossy(key);
    if first {
        tracing::warn!(%key, "etcd: a node entry is not valid JSON of a node; skipped (logged once)");
    } else {
        tracing::debug!(%key, "etcd: a node entry is not valid JSON of a node; skipped");
    }
}

fn read_view(c: &mut Client, prefix: &str, max: usize) -> Result<View, EtcdError> {
    let (kvs, revision) = c.range_prefix_at(nodes_prefix(prefix).as_bytes(), max)?;
    let full = kvs.len() >= max;
    if full {
        tracing::warn!(
            max,
            "etcd: the live set has at least etcd.max_nodes entries; nodes beyond them are not seen (raise etcd.max_nodes)"
        );
    }
    let mut nodes = BTreeMap::new();
    for kv in kvs {
        match parse_node(&kv.value) {
            Some(n) => {
                nodes.insert(kv.key, n);
            }
            None => bad_entry(&kv.key),
        }
    }
    Ok(View {
        nodes,
        revision,
        full,
    })
}

fn nodes_prefix(prefix: &str) -> String {
    format!("{prefix}/nodes/")
}

/// Parses a node's value; `None` when it is not `{node_id, roles, internal_addr}`.
pub fn parse_node(value: &[u8]) -> Option<NodeInfo> {
    let v: Value = serde_json::from_slice(value).ok()?;
    let node_id = v["node_id"].as_str().filter(|s| !s.is_empty())?.to_string();
    let roles = v["roles"]
        .as_array()?
        .iter()
        .filter_map(|r| r.as_str().and_then(Role::parse))
        .collect();
    Some(NodeInfo {
        node_id,
        roles,
        internal_addr: v["internal_addr"].as_str().unwrap_or_default().to_string(),
    })
}

/// The JSON value a node registers.
pub fn node_value(me: &NodeInfo, started_unix_ms: u64, instance: &str) -> Vec<u8> {
    let roles: Vec<&str> = me.roles.iter().map(|r| r.as_str()).collect();
    serde_json::to_vec(&json!({
        "node_id": me.node_id,
        "roles": roles,
        "internal_addr": me.internal_addr,
        "started_unix_ms": started_unix_ms,
        "instance": instance,
    }))
    .unwrap_or_default()
}

/// The one line logged when a start finds its name registered: a restart right after a crash
/// (or `kill -9`) waits here for the old process's lease to expire, silent otherwise.
fn log_name_wait(node_id: &str, key: &str, most_ms: u64) {
    tracing::info!(
        node_id,
        key,
        wait_ms_at_most = most_ms,
        "etcd: this node_id is still registered, by a process that just died (its lease expires within etcd.lease_ttl_ms) or by another live one; waiting for the registration to go, refusing to start if it is still there after wait_ms_at_most"
    );
}

/// Waits until no live process is registered as `node_id` (a process of that name that just
/// crashed frees it within one lease TTL), for at most `etcd.lease_ttl_ms` + 1 s; then
/// [`EtcdError::NodeIdTaken`]. Called before the center leases a machine id, so a second process
/// started under a running node's name is refused before it can take over that node's id (a
/// restart after a crash may: the id passes back to the node of the same name).
pub fn wait_name_free(
    cfg: &EtcdConfig,
    node_id: &str,
    stats: Arc<EtcdStats>,
) -> Result<(), EtcdError> {
    let mut c = cfg.client(stats)?;
    let key = node_key(&cfg.prefix, node_id);
    let most_ms = cfg.lease_ttl_ms + 1000;
    let give_up = Instant::now() + Duration::from_millis(most_ms);
    let mut logged = false;
    loop {
        let Some(kv) = c.get(key.as_bytes())? else {
            return Ok(());
        };
        if !logged {
            logged = true;
            log_name_wait(node_id, &key, most_ms);
        }
        if Instant::now() >= give_up {
            let theirs: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
            return Err(EtcdError::NodeIdTaken {
                node_id: node_id.to_string(),
                started_unix_ms: theirs["started_unix_ms"].as_u64().unwrap_or(0),
            });
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Registers `me` in etcd, reads the live set into `members` and starts the discovery thread
/// (see the module docs). Fails when etcd cannot be reached, answers nonsense, or another live
/// process holds `me.node_id` for longer than one lease TTL (a restart right after a crash waits
/// for the old registration to expire).
pub fn start(
    cfg: &EtcdConfig,
    me: NodeInfo,
    members: Arc<Members>,
) -> Result<EtcdHandle, EtcdError> {
    let stats = Arc::new(EtcdStats::default());
    start_with(cfg, me, members, stats)
}

/// [`start`] with counters of the caller's.
pub fn start_with(
    cfg: &EtcdConfig,
    me: NodeInfo,
    members: Arc<Members>,
    stats: Arc<EtcdStats>,
) -> Result<EtcdHandle, EtcdError> {
    start_as(cfg, me, members, stats, instance_token())
}

/// [`start_with`] registering under `instance`, the process's token (the server passes its
/// center's, so a process's `nodes/` and `machine-ids/` keys carry the same one).
pub fn start_as(
    cfg: &EtcdConfig,
    me: NodeInfo,
    members: Arc<Members>,
    stats: Arc<EtcdStats>,
    instance: String,
) -> Result<EtcdHandle, EtcdError> {
    if let Err((key, problem)) = cfg.validate() {
        return Err(EtcdError::Config(format!("{key}: {problem}")));
    }
    if me.node_id.is_empty() || me.node_id.contains('/') {
        return Err(EtcdError::Config(format!(
            "node_id {:?} must be non-empty and contain no /",
            me.node_id
        )));
    }
    let mut c = cfg.client(stats.clone())?;
    let reg = Registrar {
        key: node_key(&cfg.prefix, &me.node_id),
        value: node_value(&me, now_ms(), &instance),
        instance,
        ttl_s: ttl_secs(cfg.lease_ttl_ms),
    };
    // A name still held by a process that just died frees itself within one TTL: wait that long
    // (bounded), then refuse.
    let most_ms = cfg.lease_ttl_ms + 1000;
    let give_up = Instant::now() + Duration::from_millis(most_ms);
    let mut logged = false;
    let (lease, ttl, reg_rev) = loop {
        match reg.register(&mut c) {
            Ok(l) => break l,
            Err(EtcdError::NodeIdTaken { .. }) if Instant::now() < give_up => {
                if !logged {
                    logged = true;
                    log_name_wait(&me.node_id, &reg.key, most_ms);
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(e) => return Err(e),
        }
    };
    stats.registrations.fetch_add(1, Ordering::Relaxed);
    stats.registered.store(1, Ordering::Relaxed);
    tracing::info!(node_id = %me.node_id, lease, ttl_s = ttl, key = %reg.key, "etcd: registered");
    let view = match read_view(&mut c, &cfg.prefix, cfg.max_nodes) {
        Ok(v) => {
            v.publish(&members, &stats);
            Some(v)
        }
        Err(e) => {
            stats.view_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "etcd: cannot read the live set; retrying");
            None
        }
    };
    let watch = view.as_ref().and_then(|v| {
        Watch::open(&mut c, nodes_prefix(&cfg.prefix).as_bytes(), v.revision + 1)
            .map_err(|e| {
                stats.view_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "etcd: cannot watch the live set; retrying");
            })
            .ok()
    });
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let (stop, members, cfg, stats) =
            (stop.clone(), members.clone(), cfg.clone(), stats.clone());
        let st = LoopState {
            lease: Some(Lease {
                id: lease,
                ttl: Duration::from_secs(u64::try_from(ttl.max(1)).unwrap_or(1)),
                last_ok: Instant::now(),
                revision: reg_rev,
            }),
            view,
            watch,
        };
        std::thread::Builder::new()
            .name("lattice-etcd".into())
            .spawn(move || run(c, &reg, &cfg, &members, &stats, &stop, st))
            .map_err(EtcdError::Thread)?
    };
    Ok(EtcdHandle {
        stop,
        thread: Some(thread),
        stats,
        members,
        me,
    })
}

struct Lease {
    id: i64,
    ttl: Duration,
    last_ok: Instant,
    /// Revision of the registration's write: a view at or past it must contain the node.
    revision: i64,
}

struct LoopState {
    lease: Option<Lease>,
    view: Option<View>,
    watch: Option<Watch>,
}

fn run(
    mut c: Client,
    reg: &Registrar,
    cfg: &EtcdConfig,
    members: &Members,
    stats: &EtcdStats,
    stop: &AtomicBool,
    mut st: LoopState,
) {
    let resync = Duration::from_millis(cfg.resync_interval_ms);
    let cfg_ttl = Duration::from_millis(cfg.lease_ttl_ms);
    let retry = keepalive_every(cfg_ttl);
    let tick = Duration::from_millis(20);
    let prefix = nodes_prefix(&cfg.prefix);
    let my_key = reg.key.as_bytes().to_vec();
    let mut next_ka =
        Instant::now() + keepalive_every(st.lease.as_ref().map_or(cfg_ttl, |l| l.ttl));
    let mut next_resync = Instant::now() + resync;
    let mut next_watch_try = Instant::now();
    let mut next_register = Instant::now();
    let mut failing_ka = false;
    let mut failing_reg = false;
    let mut failing_view = false;
    while !stop.load(Ordering::Acquire) {
        let now = Instant::now();
        if st.lease.is_none() && now >= next_register {
            match reg.register(&mut c) {
                Ok((id, ttl, revision)) => {
                    let ttl = Duration::from_secs(u64::try_from(ttl.max(1)).unwrap_or(1));
                    st.lease = Some(Lease {
                        id,
                        ttl,
                        last_ok: Instant::now(),
                        revision,
                    });
                    stats.registrations.fetch_add(1, Ordering::Relaxed);
                    stats.registered.store(1, Ordering::Relaxed);
                    next_ka = Instant::now() + keepalive_every(ttl);
                    failing_reg = false;
                    tracing::info!(lease = id, key = %reg.key, "etcd: registered again under a new lease");
                }
                Err(e) => {
                    next_register = Instant::now() + retry;
                    if !failing_reg {
                        tracing::warn!(error = %e, "etcd: registration failed; retrying every third of the TTL");
                        failing_reg = true;
                    }
                }
            }
        }
        if let Some(l) = &mut st.lease {
            if now >= next_ka {
                next_ka = now + keepalive_every(l.ttl);
                match c.keepalive(l.id) {
                    Ok(ttl) if ttl > 0 => {
                        l.last_ok = Instant::now();
                        stats.registered.store(1, Ordering::Relaxed);
                        if failing_ka {
                            tracing::info!(lease = l.id, "etcd: keep-alive confirmed again");
                            failing_ka = false;
                        }
                    }
                    Ok(_) => {
                        // Expired (an outage longer than the TTL) or revoked: the key is gone.
                        tracing::warn!(
                            lease = l.id,
                            "etcd: membership lease lost; registering again"
                        );
                        stats.lease_lost.fetch_add(1, Ordering::Relaxed);
                        stats.registered.store(0, Ordering::Relaxed);
                        st.lease = None;
                        next_register = Instant::now();
                        failing_ka = false;
                        continue;
                    }
                    Err(e) => {
                        if !failing_ka {
                            tracing::warn!(error = %e, "etcd: keep-alive failed");
                            failing_ka = true;
                        }
                        if l.last_ok.elapsed() > l.ttl {
                            stats.registered.store(0, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
        // A whole read when due, or when the watch is down and a retry is due.
        if now >= next_resync || (st.watch.is_none() && now >= next_watch_try) {
            next_resync = now + resync;
            match read_view(&mut c, &cfg.prefix, cfg.max_nodes) {
                Ok(v) => {
                    v.publish(members, stats);
                    // A new watch from the revision read, also when one is open: a watch whose
                    // connection died silently (no reset from a partitioned peer) lives at most
                    // one resync interval.
                    st.watch = None;
                    match Watch::open(&mut c, prefix.as_bytes(), v.revision + 1) {
                        Ok(w) => st.watch = Some(w),
                        Err(e) => {
                            stats.view_failures.fetch_add(1, Ordering::Relaxed);
                            next_watch_try = Instant::now() + retry;
                            tracing::debug!(error = %e, "etcd: cannot watch the live set");
                        }
                    }
                    st.view = Some(v);
                    if failing_view {
                        tracing::info!("etcd: live set read again");
                        failing_view = false;
                    }
                }
                Err(e) => {
                    stats.view_failures.fetch_add(1, Ordering::Relaxed);
                    next_watch_try = Instant::now() + retry;
                    next_resync = Instant::now() + retry;
                    if !failing_view {
                        tracing::warn!(error = %e, "etcd: cannot read the live set; keeping the last view");
                        failing_view = true;
                    }
                }
            }
        }
        match (&mut st.watch, &mut st.view) {
            (Some(w), Some(v)) => match w.poll(tick) {
                Ok((changes, revision)) => {
                    if v.apply(changes, revision, cfg.max_nodes) {
                        v.publish(members, stats);
                    }
                }
                Err(e) => {
                    // Read everything again and watch from there (at once, then every retry).
                    stats.view_failures.fetch_add(1, Ordering::Relaxed);
                    st.watch = None;
                    next_watch_try = Instant::now();
                    if !failing_view {
                        tracing::warn!(error = %e, "etcd: the watch on the live set ended; reading it again");
                    }
                }
            },
            _ => std::thread::sleep(tick),
        }
        // Registered, and a view that should show it does not: the key was deleted.
        if let (Some(l), Some(v)) = (&st.lease, &st.view) {
            if !v.full && v.revision >= l.revision && !v.nodes.contains_key(&my_key) {
                tracing::warn!(
                    "etcd: this node's key is missing from the live set; registering again"
                );
                stats.lease_lost.fetch_add(1, Ordering::Relaxed);
                stats.registered.store(0, Ordering::Relaxed);
                let _ = c.revoke(l.id);
                st.lease = None;
                next_register = Instant::now();
            }
        }
    }
    stats.registered.store(0, Ordering::Relaxed);
    if let Some(l) = st.lease.take() {
        match c.revoke(l.id) {
            Ok(()) => {
                tracing::info!(key = %reg.key, "etcd: lease revoked; this node left the cluster")
            }
            Err(e) => {
                tracing::warn!(error = %e, "etcd: lease revoke failed; the node leaves when its lease expires")
            }
        }
    }
}

fn reg_node_id(reg: &Registrar) -> &str {
    reg.key.rsplit('/').next().unwrap_or_default()
}

fn keepalive_every(ttl: Duration) -> Duration {
    (ttl / 3).max(Duration::from_millis(100))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &[u8], rev: i64) -> super::super::client::Kv {
        super::super::client::Kv {
            key: key.as_bytes().to_vec(),
            value: value.to_vec(),
            create_revision: rev,
            mod_revision: rev,
            lease: 0,
        }
    }

    #[test]
    fn watched_changes_apply_once_in_order_and_within_the_bound() {
        let n = |id: &str| NodeInfo {
            node_id: id.into(),
            roles: vec![Role::Logic],
            internal_addr: String::new(),
        };
        let mut v = View {
            nodes: BTreeMap::new(),
            revision: 10,
            full: false,
        };
        // Older than the view (already in it, or since replaced): ignored.
        assert!(!v.apply(
            vec![Change::Put(kv("p/a", &node_value(&n("a"), 0, "i"), 9))],
            10,
            2
        ));
        assert!(v.nodes.is_empty());
        assert!(v.apply(
            vec![
                Change::Put(kv("p/a", &node_value(&n("a"), 0, "i"), 11)),
                Change::Put(kv("p/b", &node_value(&n("b"), 0, "i"), 12)),
                // Over etcd.max_nodes (2): left out and flagged.
                Change::Put(kv("p/c", &node_value(&n("c"), 0, "i"), 13)),
            ],
            13,
            2
        ));
        assert_eq!(v.nodes.len(), 2);
        assert!(v.full);
        assert_eq!(v.revision, 13);
        // A node rewritten with garbage leaves the view; a delete removes.
        assert!(v.apply(
            vec![
                Change::Put(kv("p/a", b"garbage", 14)),
                Change::Delete {
                    key: b"p/b".to_vec(),
                    mod_revision: 15
                },
            ],
            15,
            2
        ));
        assert!(v.nodes.is_empty());
        // A delete older than the view is ignored.
        v.nodes.insert(b"p/d".to_vec(), n("d"));
        assert!(!v.apply(
            vec![Change::Delete {
                key: b"p/d".to_vec(),
                mod_revision: 15
            }],
            15,
            2
        ));
        assert_eq!(v.nodes.len(), 1);
    }

    #[test]
    fn node_values_round_trip_and_bad_ones_are_refused() {
        let me = NodeInfo {
            node_id: "n1".into(),
            roles: vec![Role::Gate, Role::Center],
            internal_addr: "10.0.0.1:7200".into(),
        };
        let v = node_value(&me, 42, "abcd");
        assert_eq!(parse_node(&v), Some(me));
        assert_eq!(parse_node(b"not json"), None);
        assert_eq!(parse_node(br#"{"roles":[]}"#), None);
        assert_eq!(parse_node(br#"{"node_id":"x","roles":"gate"}"#), None);
        let n = parse_node(br#"{"node_id":"x","roles":["gate","wizard"]}"#).unwrap();
        assert_eq!(n.roles, vec![Role::Gate]);
        assert_eq!(n.internal_addr, "");
    }
}

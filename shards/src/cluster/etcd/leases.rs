//! Machine-id leases in etcd: the [`LeaseStore`] the center uses when `[etcd]` is configured.
//!
//! Same rules as the storage table (`lattice_storage::lease`), kept with etcd's primitives:
//! - `<prefix>/machine-ids/<id>` → `{owner, instance}`, bound to an etcd lease of
//!   `center.lease_ttl_ms` (rounded up to whole seconds): the key exists exactly while the holder
//!   is alive, so "free" is "missing". Taking an id is a txn that creates the key only if it is
//!   missing (`create_revision == 0`); a node restarted under the same name after a crash may
//!   take over its own stale key (a txn on the key's `mod_revision`), as with the table.
//! - `<prefix>/machine-id-last/<id>` → `{owner, last_ts_ms}`, no lease, never deleted: the
//!   highest timestamp ids under the id may carry. Each renewal raises it to the new reservation
//!   before the center lets shards use that reservation; a clean release lowers it to the exact
//!   last timestamp issued. A restarted node reads it and never stamps an id at or below it.
//!
//! A renewal is a keep-alive of the etcd lease, then a txn that writes the reservation only while
//! the id's key still carries our instance; a key that is no longer ours is [`LeaseError::Lost`]
//! (ids stop for good). A keep-alive that finds the lease expired (an outage longer than the TTL)
//! takes the id again under a new lease only when nobody held it meanwhile (the key is missing
//! and the id's last timestamp is still the one we wrote), else it is lost; etcd unreachable is
//! [`LeaseError::Backend`] (ids stop when the last reservation passes, before the TTL can let
//! another node take the id, because `center.reserve_ms < center.lease_ttl_ms`).

use std::sync::Arc;

use lattice_storage::lease::{Acquire, LeaseError, LeaseRow};
use serde_json::{json, Value};

use super::client::{Client, Cmp, Op};
use super::{ttl_secs, EtcdConfig, EtcdError, EtcdStats};
use crate::center::lease::LeaseStore;

impl From<EtcdError> for LeaseError {
    fn from(e: EtcdError) -> Self {
        LeaseError::Backend(e.to_string())
    }
}

/// The id this process holds.
struct Held {
    id: u32,
    lease: i64,
    value: Vec<u8>,
    owner: String,
    last_ts_ms: u64,
    ttl_ms: u64,
}

/// Machine-id leases in etcd (see the module docs).
pub struct EtcdLeases {
    c: Client,
    prefix: String,
    held: Option<Held>,
}

fn last_of(v: &[u8]) -> (String, u64) {
    let v: Value = serde_json::from_slice(v).unwrap_or(Value::Null);
    (
        v["owner"].as_str().unwrap_or_default().to_string(),
        v["last_ts_ms"].as_u64().unwrap_or(0),
    )
}

impl EtcdLeases {
    /// A store over the `[etcd]` endpoints, counting its requests in `stats`.
    pub fn open(cfg: &EtcdConfig, stats: Arc<EtcdStats>) -> Result<EtcdLeases, LeaseError> {
        Ok(EtcdLeases {
            c: cfg.client(stats)?,
            prefix: cfg.prefix.clone(),
            held: None,
        })
    }

    fn key(&self, id: u32) -> String {
        format!("{}/machine-ids/{id}", self.prefix)
    }

    fn last_key(&self, id: u32) -> String {
        format!("{}/machine-id-last/{id}", self.prefix)
    }

    fn last_value(owner: &str, last_ts_ms: u64) -> Vec<u8> {
        serde_json::to_vec(&json!({ "owner": owner, "last_ts_ms": last_ts_ms })).unwrap_or_default()
    }

    /// Tries to take `id` under `lease`; `Ok(None)` when another node holds it.
    fn try_take(
        &mut self,
        id: u32,
        lease: i64,
        value: &[u8],
        owner: &str,
    ) -> Result<Option<(String, u64)>, LeaseError> {
        let key = self.key(id);
        let last_key = self.last_key(id);
        let r = self.c.txn(
            &[Cmp::Missing(key.as_bytes())],
            &[
                Op::Put(key.as_bytes(), value, lease),
                Op::Get(last_key.as_bytes()),
            ],
            &[Op::Get(key.as_bytes()), Op::Get(last_key.as_bytes())],
        )?;
        if r.succeeded {
            let last = r
                .kvs
                .first()
                .map(|kv| last_of(&kv.value))
                .unwrap_or_default();
            return Ok(Some(last));
        }
        let Some(cur) = r.kvs.iter().find(|kv| kv.key == key.as_bytes()) else {
            return Ok(None);
        };
        let holder: Value = serde_json::from_slice(&cur.value).unwrap_or(Value::Null);
        if holder["owner"].as_str() != Some(owner) {
            return Ok(None);
        }
        // Our own name under another instance: a restart after a crash takes its id back.
        let t = self.c.txn(
            &[Cmp::ModRevision(key.as_bytes(), cur.mod_revision)],
            &[
                Op::Put(key.as_bytes(), value, lease),
                Op::Get(last_key.as_bytes()),
            ],
            &[],
        )?;
        if !t.succeeded {
            return Ok(None);
        }
        tracing::warn!(
            machine_id = id,
            old_instance = holder["instance"].as_str().unwrap_or_default(),
            "center: took back this node's machine id from a previous process of the same name"
        );
        if cur.lease != 0 {
            let _ = self.c.revoke(cur.lease);
        }
        Ok(Some(
            t.kvs
                .first()
                .map(|kv| last_of(&kv.value))
                .unwrap_or_default(),
        ))
    }

    fn holder_of(&mut self, id: u32) -> String {
        self.holder_and_expiry(id).0
    }

    /// The holder of `id` and when its lease expires (Unix ms, from the lease's remaining TTL;
    /// 0 when unknown).
    fn holder_and_expiry(&mut self, id: u32) -> (String, u64) {
        let key = self.key(id);
        match self.c.get(key.as_bytes()) {
            Ok(Some(kv)) => {
                let v: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
                let owner = v["owner"].as_str().unwrap_or_default().to_string();
                let expires = match self.c.time_to_live(kv.lease) {
                    Ok(s) if s > 0 => super::now_ms() + u64::try_from(s).unwrap_or(0) * 1000,
                    _ => 0,
                };
                (owner, expires)
            }
            _ => (String::new(), 0),
        }
    }
}

impl LeaseStore for EtcdLeases {
    fn acquire(&mut self, a: &Acquire<'_>) -> Result<LeaseRow, LeaseError> {
        if let Some(id) = a.machine_id {
            if id > a.max_id {
                return Err(LeaseError::OutOfRange { id, max: a.max_id });
            }
        }
        let value = serde_json::to_vec(&json!({ "owner": a.owner, "instance": a.instance }))
            .unwrap_or_default();
        let candidates: Vec<u32> = match a.machine_id {
            Some(id) => vec![id],
            None => {
                // The id this node held before first, then the lowest ids nobody holds.
                let lasts = self
                    .c
                    .range_prefix(format!("{}/machine-id-last/", self.prefix).as_bytes(), 0)?;
                let held = self
                    .c
                    .range_prefix(format!("{}/machine-ids/", self.prefix).as_bytes(), 0)?;
                let id_of = |k: &[u8]| -> Option<u32> {
                    std::str::from_utf8(k)
                        .ok()?
                        .rsplit('/')
                        .next()?
                        .parse()
                        .ok()
                };
                let held: std::collections::BTreeSet<u32> =
                    held.iter().filter_map(|kv| id_of(&kv.key)).collect();
                let mine = lasts
                    .iter()
                    .filter(|kv| last_of(&kv.value).0 == a.owner)
                    .filter_map(|kv| id_of(&kv.key))
                    .filter(|id| *id <= a.max_id);
                let free = (0..=a.max_id).filter(|id| !held.contains(id));
                let mut c: Vec<u32> = mine.chain(free).collect();
                let mut seen = std::collections::BTreeSet::new();
                c.retain(|id| seen.insert(*id));
                c
            }
        };
        // Granted once the candidates are known (a failed read leaves no lease behind).
        let (lease, _ttl) = self.c.grant(ttl_secs(a.ttl_ms))?;
        // Bounded: at most every id once; a lost race moves on to the next.
        for id in candidates {
            match self.try_take(id, lease, &value, a.owner) {
                Ok(Some((_, last_ts_ms))) => {
                    self.held = Some(Held {
                        id,
                        lease,
                        value,
                        owner: a.owner.to_string(),
                        last_ts_ms,
                        ttl_ms: a.ttl_ms,
                    });
                    return Ok(LeaseRow {
                        machine_id: id,
                        owner: a.owner.to_string(),
                        instance: a.instance.to_string(),
                        expires_ms: a.now_ms.saturating_add(a.ttl_ms),
                        last_ts_ms,
                    });
                }
                Ok(None) => {}
                Err(e) => {
                    let _ = self.c.revoke(lease);
                    return Err(e);
                }
            }
        }
        let _ = self.c.revoke(lease);
        match a.machine_id {
            Some(id) => {
                let (owner, expires_ms) = self.holder_and_expiry(id);
                Err(LeaseError::Held {
                    id,
                    owner,
                    expires_ms,
                })
            }
            None => Err(LeaseError::NoneFree { max: a.max_id }),
        }
    }

    fn renew(
        &mut self,
        machine_id: u32,
        instance: &str,
        expires_ms: u64,
        reserve_ms: u64,
    ) -> Result<LeaseRow, LeaseError> {
        let Some(h) = self.held.as_ref().filter(|h| h.id == machine_id) else {
            return Err(LeaseError::Lost {
                id: machine_id,
                owner: String::new(),
            });
        };
        let (lease, value, owner) = (h.lease, h.value.clone(), h.owner.clone());
        let (prev_last, ttl_ms) = (h.last_ts_ms, h.ttl_ms);
        let last = prev_last.max(reserve_ms);
        let key = self.key(machine_id);
        let last_key = self.last_key(machine_id);
        let last_value = Self::last_value(&owner, last);
        if self.c.keepalive(lease)? > 0 {
            let r = self.c.txn(
                &[Cmp::ValueIs(key.as_bytes(), &value)],
                &[Op::Put(last_key.as_bytes(), &last_value, 0)],
                &[Op::Get(key.as_bytes())],
            )?;
            if r.succeeded {
                if let Some(h) = &mut self.held {
                    h.last_ts_ms = last;
                }
                return Ok(LeaseRow {
                    machine_id,
                    owner,
                    instance: instance.to_string(),
                    expires_ms,
                    last_ts_ms: last,
                });
            }
            if let Some(kv) = r.kvs.first() {
                // Someone else's key now: lost.
                let now = serde_json::from_slice::<Value>(&kv.value).unwrap_or(Value::Null)
                    ["owner"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                return Err(LeaseError::Lost {
                    id: machine_id,
                    owner: now,
                });
            }
            // The key vanished between the keep-alive and the txn (the lease ended just then):
            // as below.
        }
        // The etcd lease expired (an outage longer than the TTL) or was revoked, and took the key
        // with it. As with the table, where a row still carrying our instance renews however
        // late: take the id again, but only if nobody held it meanwhile — the id's last timestamp
        // must still be the one we wrote (another holder would have moved it), so no id stamped
        // by someone else can collide with ours.
        let (new_lease, _) = self.c.grant(ttl_secs(ttl_ms))?;
        let prev_value = Self::last_value(&owner, prev_last);
        let r = self.c.txn(
            &[
                Cmp::Missing(key.as_bytes()),
                Cmp::ValueIs(last_key.as_bytes(), &prev_value),
            ],
            &[
                Op::Put(key.as_bytes(), &value, new_lease),
                Op::Put(last_key.as_bytes(), &last_value, 0),
            ],
            &[],
        );
        match r {
            Ok(r) if r.succeeded => {
                tracing::warn!(
                    machine_id,
                    "center: the machine-id lease had ended in etcd and nobody took the id; leased it again"
                );
                if let Some(h) = &mut self.held {
                    h.lease = new_lease;
                    h.last_ts_ms = last;
                }
                Ok(LeaseRow {
                    machine_id,
                    owner,
                    instance: instance.to_string(),
                    expires_ms,
                    last_ts_ms: last,
                })
            }
            other => {
                let _ = self.c.revoke(new_lease);
                other?;
                let owner = self.holder_of(machine_id);
                Err(LeaseError::Lost {
                    id: machine_id,
                    owner,
                })
            }
        }
    }

    fn release(
        &mut self,
        machine_id: u32,
        _instance: &str,
        issued_ms: Option<u64>,
    ) -> Result<bool, LeaseError> {
        let Some(h) = self.held.take().filter(|h| h.id == machine_id) else {
            return Ok(false);
        };
        let key = self.key(machine_id);
        let last_key = self.last_key(machine_id);
        // The exact last timestamp when every shard reported it; else the reservation stays.
        let last_value = Self::last_value(&h.owner, issued_ms.unwrap_or(h.last_ts_ms));
        let r = self.c.txn(
            &[Cmp::ValueIs(key.as_bytes(), &h.value)],
            &[
                Op::Put(last_key.as_bytes(), &last_value, 0),
                Op::Delete(key.as_bytes()),
            ],
            &[],
        );
        let _ = self.c.revoke(h.lease);
        Ok(r?.succeeded)
    }
}

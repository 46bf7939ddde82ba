//! Machine-id leases in the database: table `lattice_machine_lease`, one row per machine id, with
//! its owner (a node name), the owning process's instance token, the lease expiry and the largest
//! id timestamp that may have been issued under that id (`last_ts_ms`).
//!
//! Every change is a conditional `UPDATE` followed by a read-back, so two nodes racing for one id
//! cannot both believe they hold it (the row decides). Owns the table's SQL; knows nothing of ids,
//! shards or clocks: callers pass the times. Runs on a [`Direct`] connection (blocking).

use super::backend::Dialect;
use super::direct::Direct;
use super::{StorageError, Value};

/// The lease table.
pub const TABLE: &str = "lattice_machine_lease";

/// One lease row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRow {
    /// The machine id.
    pub machine_id: u32,
    /// Node name of the holder; empty = free.
    pub owner: String,
    /// Token of the holding process (a new one per start); empty = free.
    pub instance: String,
    /// Lease expiry, Unix ms (0 = free).
    pub expires_ms: u64,
    /// Upper bound of every id timestamp issued under this machine id, Unix ms. A holder whose
    /// clock is behind it must not issue ids.
    pub last_ts_ms: u64,
}

impl LeaseRow {
    /// True when nobody holds the id at `now_ms` (never taken, released, or expired).
    pub fn is_free(&self, now_ms: u64) -> bool {
        self.owner.is_empty() || self.expires_ms <= now_ms
    }
}

/// Why a lease operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The database call failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Every machine id up to the limit is held by a live lease of another node.
    #[error("no free machine id in 0..={max} (all held by other nodes)")]
    NoneFree {
        /// The largest id considered.
        max: u32,
    },
    /// The id asked for is held by another node's unexpired lease.
    #[error("machine id {id} is held by node {owner:?} until {expires_ms} (Unix ms)")]
    Held {
        /// The id.
        id: u32,
        /// Its holder.
        owner: String,
        /// Its expiry.
        expires_ms: u64,
    },
    /// The lease is no longer ours: another process took it after it expired, or it was released.
    #[error("lease on machine id {id} was lost (now held by {owner:?})")]
    Lost {
        /// The id.
        id: u32,
        /// Who holds it now (empty = nobody).
        owner: String,
    },
    /// A lease store other than the database (etcd) could not be reached or answered nonsense.
    #[error("lease store: {0}")]
    Backend(String),
    /// The id is out of range.
    #[error("machine id {id} is outside 0..={max}")]
    OutOfRange {
        /// The id asked for.
        id: u32,
        /// The largest valid id.
        max: u32,
    },
}

/// What a node asks for.
#[derive(Clone, Debug)]
pub struct Acquire<'a> {
    /// A fixed id, or `None` for the id this node held before, else the lowest free one.
    pub machine_id: Option<u32>,
    /// Largest valid machine id.
    pub max_id: u32,
    /// Node name.
    pub owner: &'a str,
    /// This process's token.
    pub instance: &'a str,
    /// Now, Unix ms.
    pub now_ms: u64,
    /// Lease duration.
    pub ttl_ms: u64,
}

/// The table's DDL (`CREATE TABLE IF NOT EXISTS`, portable).
pub fn ddl() -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {TABLE} (machine_id INT NOT NULL PRIMARY KEY, \
         owner VARCHAR(128) NOT NULL, instance VARCHAR(64) NOT NULL, \
         expires_ms BIGINT NOT NULL, last_ts_ms BIGINT NOT NULL)"
    )
}

fn as_u64(v: Option<&Value>) -> u64 {
    match v {
        Some(Value::Int(i)) => u64::try_from(*i).unwrap_or(0),
        Some(Value::UInt(u)) => *u,
        Some(Value::Text(t)) => t.parse().unwrap_or(0),
        _ => 0,
    }
}

fn as_text(v: Option<&Value>) -> String {
    match v {
        Some(Value::Text(t)) => t.clone(),
        Some(Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
        _ => String::new(),
    }
}

fn row(r: &[Value]) -> LeaseRow {
    LeaseRow {
        machine_id: u32::try_from(as_u64(r.first())).unwrap_or(u32::MAX),
        owner: as_text(r.get(1)),
        instance: as_text(r.get(2)),
        expires_ms: as_u64(r.get(3)),
        last_ts_ms: as_u64(r.get(4)),
    }
}

fn int(v: u64) -> Value {
    Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
}

/// Creates the table if it is missing (idempotent).
pub fn ensure_table(db: &Direct) -> Result<(), StorageError> {
    db.exec_script(&[ddl()])
}

/// Every lease row, by machine id.
pub fn list(db: &Direct) -> Result<Vec<LeaseRow>, StorageError> {
    ensure_table(db)?;
    let rows = db.query(
        &format!(
            "SELECT machine_id, owner, instance, expires_ms, last_ts_ms FROM {TABLE} ORDER BY machine_id"
        ),
        Vec::new(),
    )?;
    Ok(rows.iter().map(|r| row(r)).collect())
}

/// One row, if the id was ever used.
pub fn get(db: &Direct, id: u32) -> Result<Option<LeaseRow>, StorageError> {
    let rows = db.query(
        &format!(
            "SELECT machine_id, owner, instance, expires_ms, last_ts_ms FROM {TABLE} WHERE machine_id = ?"
        ),
        vec![Value::Int(i64::from(id))],
    )?;
    Ok(rows.first().map(|r| row(r)))
}

/// Takes a lease. With a fixed id: that id if it is free or already this node's. Without: the id
/// this node held before if it can take it again, else the lowest free id. Taking an id that this
/// node name holds under another instance (a restart after a crash) is allowed and logged by the
/// caller. Returns the row as stored (its `last_ts_ms` is what the caller must not go below).
pub fn acquire(db: &Direct, a: &Acquire<'_>) -> Result<LeaseRow, LeaseError> {
    ensure_table(db)?;
    if let Some(id) = a.machine_id {
        if id > a.max_id {
            return Err(LeaseError::OutOfRange { id, max: a.max_id });
        }
        return try_take(db, id, a)?.ok_or_else(|| held(db, id));
    }
    let rows = list(db)?;
    let mine = rows
        .iter()
        .filter(|r| r.owner == a.owner && r.machine_id <= a.max_id)
        .map(|r| r.machine_id);
    let free = rows
        .iter()
        .filter(|r| r.is_free(a.now_ms) && r.machine_id <= a.max_id)
        .map(|r| r.machine_id);
    let used: std::collections::BTreeSet<u32> = rows.iter().map(|r| r.machine_id).collect();
    let unused = (0..=a.max_id).filter(|i| !used.contains(i)).take(1);
    let candidates: Vec<u32> = mine.chain(free).chain(unused).collect();
    // Bounded: at most every row once plus one never-used id; a lost race moves on to the next.
    for id in candidates {
        if let Some(r) = try_take(db, id, a)? {
            return Ok(r);
        }
    }
    Err(LeaseError::NoneFree { max: a.max_id })
}

fn held(db: &Direct, id: u32) -> LeaseError {
    match get(db, id) {
        Ok(Some(r)) => LeaseError::Held {
            id,
            owner: r.owner,
            expires_ms: r.expires_ms,
        },
        Ok(None) => LeaseError::Lost {
            id,
            owner: String::new(),
        },
        Err(e) => LeaseError::Storage(e),
    }
}

/// Inserts the row if missing, then the conditional update; `Some(row)` when it is ours now.
fn try_take(db: &Direct, id: u32, a: &Acquire<'_>) -> Result<Option<LeaseRow>, StorageError> {
    let insert = match db.dialect() {
        Dialect::Mysql => "INSERT IGNORE INTO",
        Dialect::Sqlite => "INSERT OR IGNORE INTO",
    };
    db.exec(
        &format!(
            "{insert} {TABLE} (machine_id, owner, instance, expires_ms, last_ts_ms) VALUES (?, '', '', 0, 0)"
        ),
        vec![Value::Int(i64::from(id))],
    )?;
    db.exec(
        &format!(
            "UPDATE {TABLE} SET owner = ?, instance = ?, expires_ms = ? \
             WHERE machine_id = ? AND (owner = ? OR owner = '' OR expires_ms <= ?)"
        ),
        vec![
            Value::Text(a.owner.to_string()),
            Value::Text(a.instance.to_string()),
            int(a.now_ms.saturating_add(a.ttl_ms)),
            Value::Int(i64::from(id)),
            Value::Text(a.owner.to_string()),
            int(a.now_ms),
        ],
    )?;
    Ok(get(db, id)?.filter(|r| r.instance == a.instance))
}

/// Extends our lease to `expires_ms` and raises `last_ts_ms` to `reserve_ms` (never lowers it).
/// Fails with [`LeaseError::Lost`] when the row no longer carries our instance token.
pub fn renew(
    db: &Direct,
    id: u32,
    instance: &str,
    expires_ms: u64,
    reserve_ms: u64,
) -> Result<LeaseRow, LeaseError> {
    db.exec(
        &format!(
            "UPDATE {TABLE} SET expires_ms = ?, \
             last_ts_ms = CASE WHEN last_ts_ms < ? THEN ? ELSE last_ts_ms END \
             WHERE machine_id = ? AND instance = ?"
        ),
        vec![
            int(expires_ms),
            int(reserve_ms),
            int(reserve_ms),
            Value::Int(i64::from(id)),
            Value::Text(instance.to_string()),
        ],
    )?;
    match get(db, id)? {
        Some(r) if r.instance == instance => Ok(r),
        other => Err(LeaseError::Lost {
            id,
            owner: other.map(|r| r.owner).unwrap_or_default(),
        }),
    }
}

/// Gives our lease up, recording `last_ts_ms` (the largest timestamp actually issued; the stored
/// value is kept when it is larger). A lease that is no longer ours is left alone (`Ok(false)`).
pub fn release(
    db: &Direct,
    id: u32,
    instance: &str,
    last_ts_ms: u64,
) -> Result<bool, StorageError> {
    let n = db.exec(
        &format!(
            "UPDATE {TABLE} SET owner = '', instance = '', expires_ms = 0, \
             last_ts_ms = CASE WHEN last_ts_ms < ? THEN ? ELSE last_ts_ms END \
             WHERE machine_id = ? AND instance = ?"
        ),
        vec![
            int(last_ts_ms),
            int(last_ts_ms),
            Value::Int(i64::from(id)),
            Value::Text(instance.to_string()),
        ],
    )?;
    Ok(n > 0)
}

/// Gives our lease up after a clean stop, recording `issued_ms` as the id's last timestamp even
/// when the stored reservation is larger: the caller guarantees no id above `issued_ms` was issued
/// (every shard reported its last id), so the next holder need not wait for the reservation.
pub fn release_at(
    db: &Direct,
    id: u32,
    instance: &str,
    issued_ms: u64,
) -> Result<bool, StorageError> {
    let n = db.exec(
        &format!(
            "UPDATE {TABLE} SET owner = '', instance = '', expires_ms = 0, last_ts_ms = ? \
             WHERE machine_id = ? AND instance = ?"
        ),
        vec![
            int(issued_ms),
            Value::Int(i64::from(id)),
            Value::Text(instance.to_string()),
        ],
    )?;
    Ok(n > 0)
}

/// Operator release: frees `id` whoever holds it (keeps `last_ts_ms`). Refuses an unexpired lease
/// unless `force`. Returns the row as it was, `None` when the id was never used.
pub fn force_release(
    db: &Direct,
    id: u32,
    now_ms: u64,
    force: bool,
) -> Result<Option<LeaseRow>, LeaseError> {
    ensure_table(db)?;
    let Some(before) = get(db, id)? else {
        return Ok(None);
    };
    if !before.is_free(now_ms) && !force {
        return Err(LeaseError::Held {
            id,
            owner: before.owner,
            expires_ms: before.expires_ms,
        });
    }
    db.exec(
        &format!(
            "UPDATE {TABLE} SET owner = '', instance = '', expires_ms = 0 WHERE machine_id = ?"
        ),
        vec![Value::Int(i64::from(id))],
    )?;
    Ok(Some(before))
}

//! Where machine-id leases are kept, behind a small trait: the storage database on a single node
//! ([`StorageLeases`], table `lattice_machine_lease`); a cluster will implement the same trait over
//! etcd leases.

use lattice_storage::direct::Direct;
use lattice_storage::lease::{self, Acquire, LeaseError, LeaseRow};
use lattice_storage::StorageConfig;

/// A place that grants, renews and releases machine-id leases. Every call may block (it talks to
/// a database or a cluster); the center calls it from its own thread, never from a shard.
pub trait LeaseStore: Send {
    /// Takes a lease (see [`lattice_storage::lease::acquire`] for the rules).
    fn acquire(&mut self, req: &Acquire<'_>) -> Result<LeaseRow, LeaseError>;
    /// Extends our lease to `expires_ms` and records `reserve_ms` as the highest timestamp ids may
    /// carry. [`LeaseError::Lost`] when the lease is no longer ours.
    fn renew(
        &mut self,
        machine_id: u32,
        instance: &str,
        expires_ms: u64,
        reserve_ms: u64,
    ) -> Result<LeaseRow, LeaseError>;
    /// Gives our lease up. `issued_ms`: the largest timestamp actually issued, recorded as the
    /// id's last timestamp when known; `None` keeps the recorded reservation.
    fn release(
        &mut self,
        machine_id: u32,
        instance: &str,
        issued_ms: Option<u64>,
    ) -> Result<bool, LeaseError>;
    /// The leases held under node name `owner` that have not expired at `now_ms`, as (machine
    /// id, expiry): a process of this name that crashed moments ago, or one still running. A
    /// store that cannot tell (or whose membership already refuses a live name, as etcd's does)
    /// answers none.
    fn live_under(&mut self, _owner: &str, _now_ms: u64) -> Result<Vec<(u32, u64)>, LeaseError> {
        Ok(Vec::new())
    }
}

/// Leases in the storage database, over a [`Direct`] connection of their own (the write-behind
/// engine's batches and retries never delay a renewal).
pub struct StorageLeases {
    db: Direct,
}

impl StorageLeases {
    /// Connects to the configured database and creates the lease table if it is missing.
    pub fn open(cfg: &StorageConfig) -> Result<StorageLeases, LeaseError> {
        let db = Direct::open(cfg)?;
        lease::ensure_table(&db)?;
        Ok(StorageLeases { db })
    }

    /// The connection (for tools).
    pub fn db(&self) -> &Direct {
        &self.db
    }
}

impl LeaseStore for StorageLeases {
    fn acquire(&mut self, req: &Acquire<'_>) -> Result<LeaseRow, LeaseError> {
        lease::acquire(&self.db, req)
    }

    fn renew(
        &mut self,
        machine_id: u32,
        instance: &str,
        expires_ms: u64,
        reserve_ms: u64,
    ) -> Result<LeaseRow, LeaseError> {
        lease::renew(&self.db, machine_id, instance, expires_ms, reserve_ms)
    }

    fn release(
        &mut self,
        machine_id: u32,
        instance: &str,
        issued_ms: Option<u64>,
    ) -> Result<bool, LeaseError> {
        match issued_ms {
            Some(ms) => Ok(lease::release_at(&self.db, machine_id, instance, ms)?),
            None => Ok(lease::release(&self.db, machine_id, instance, 0)?),
        }
    }

    fn live_under(&mut self, owner: &str, now_ms: u64) -> Result<Vec<(u32, u64)>, LeaseError> {
        Ok(lease::list(&self.db)?
            .into_iter()
            .filter(|r| r.owner == owner && !r.is_free(now_ms))
            .map(|r| (r.machine_id, r.expires_ms))
            .collect())
    }
}

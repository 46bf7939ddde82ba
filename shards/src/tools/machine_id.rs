//! `lattice tool machine-id show|request|release`: the lease rows of `lattice_machine_lease`.

use lattice_storage::direct::Direct;
use lattice_storage::lease::{self, Acquire};

use crate::center::ids::MAX_MACHINE;
use crate::center::now_ms;
use crate::config::Config;

fn open(cfg: &Config) -> Result<Direct, String> {
    not_in_etcd(cfg)?;
    Direct::open(&cfg.storage).map_err(|e| format!("storage: {e}"))
}

fn not_in_etcd(cfg: &Config) -> Result<(), String> {
    // With [etcd] the table is not where the ids are: refuse rather than show or change a table
    // nobody reads.
    let etcd: crate::cluster::etcd::EtcdConfig =
        lattice_runtime::config::typed_section(&cfg.table, "etcd").map_err(|e| e.to_string())?;
    if etcd.enabled() {
        return Err(format!(
            "machine ids are leased in etcd here (etcd.endpoints is set), not in the storage table this tool edits; read them with: etcdctl get --prefix {}/machine-ids/ (docs/CLUSTER.md)",
            etcd.prefix
        ));
    }
    Ok(())
}

/// Prints every lease row.
pub fn show(cfg: &Config) -> Result<(), String> {
    not_in_etcd(cfg)?;
    // Showing creates nothing: no SQLite database yet means no lease was ever taken here.
    if cfg.storage.backend == lattice_storage::config::BackendKind::Sqlite
        && !cfg.storage.sqlite_path().is_file()
    {
        return Err(format!(
            "no SQLite database at {} (no machine id was leased here yet: the server creates it at its first start)",
            cfg.storage.sqlite_path().display()
        ));
    }
    let db = open(cfg)?;
    let rows = lease::list(&db).map_err(|e| format!("machine-id show: {e}"))?;
    let now = now_ms();
    println!("machine_id  state    owner                 expires_in_ms  last_ts_ms");
    for r in rows {
        let state = if r.owner.is_empty() {
            "free"
        } else if r.expires_ms <= now {
            "expired"
        } else {
            "held"
        };
        let left = r.expires_ms.saturating_sub(now);
        println!(
            "{:>10}  {:<7}  {:<20}  {:>13}  {}",
            r.machine_id,
            state,
            if r.owner.is_empty() { "-" } else { &r.owner },
            left,
            r.last_ts_ms
        );
    }
    Ok(())
}

/// Takes a lease for `node` and prints the id.
pub fn request(
    cfg: &Config,
    node: Option<String>,
    id: Option<u32>,
    ttl_ms: Option<u64>,
) -> Result<(), String> {
    let db = open(cfg)?;
    let owner = node.unwrap_or_else(|| cfg.node_name());
    // The tool's instance token: the node, started later under this name, takes the lease over.
    let instance = format!("tool-{}", std::process::id());
    let row = lease::acquire(
        &db,
        &Acquire {
            machine_id: id,
            max_id: MAX_MACHINE,
            owner: &owner,
            instance: &instance,
            now_ms: now_ms(),
            ttl_ms: ttl_ms.unwrap_or(cfg.center.lease_ttl_ms),
        },
    )
    .map_err(|e| format!("machine-id request: {e}"))?;
    println!("{}", row.machine_id);
    eprintln!(
        "machine id {} leased to node {owner:?} until {} (Unix ms)",
        row.machine_id, row.expires_ms
    );
    Ok(())
}

/// Frees a machine id.
pub fn release(cfg: &Config, id: u32, force: bool) -> Result<(), String> {
    let db = open(cfg)?;
    if force {
        // --force is for a holder that is gone. A server of this node whose data directory is
        // locked is running: freeing its id under it stops its ids for good.
        let row = lease::get(&db, id).map_err(|e| format!("machine-id release: {e}"))?;
        let dir = std::path::Path::new(&cfg.storage.data_dir);
        if let Some(row) = row.filter(|r| !r.owner.is_empty() && r.owner == cfg.node_name()) {
            if dir.is_dir() {
                if let Err(held) = crate::datadir::lock(dir) {
                    return Err(format!(
                        "machine id {id} is held by node {:?}, whose server is running ({held}): --force is for a holder that is gone; stop that server (it releases the id as it stops)",
                        row.owner
                    ));
                }
            }
        }
    }
    match lease::force_release(&db, id, now_ms(), force) {
        Ok(Some(before)) => {
            eprintln!(
                "machine id {id} released (was held by {:?}; last id timestamp {} kept)",
                before.owner, before.last_ts_ms
            );
            Ok(())
        }
        Ok(None) => Err(format!("machine id {id} was never leased")),
        Err(e) => Err(format!(
            "machine-id release: {e} (use --force if its holder is gone)"
        )),
    }
}

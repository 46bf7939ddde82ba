//! `lattice tool db-backup` and `lattice tool db-restore` (the work is `lattice_storage::backup`).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::config::Config;

/// Writes a backup into `out` (default `storage.data_dir`) and prints its path.
pub fn backup(cfg: &Config, out: Option<PathBuf>) -> Result<(), String> {
    let dir = out.unwrap_or_else(|| cfg.storage.data_dir.clone());
    let path = lattice_storage::backup::backup(&cfg.storage, &dir, SystemTime::now())
        .map_err(|e| format!("db-backup: {e}"))?;
    println!("{}", path.display());
    Ok(())
}

/// Restores `file` into the configured database.
pub fn restore(cfg: &Config, file: &Path) -> Result<(), String> {
    // A running server holds the data directory's lock: restoring under it breaks it.
    let _lock = crate::datadir::lock(&cfg.storage.data_dir)
        .map_err(|e| format!("db-restore: stop the server first: {e}"))?;
    // A server may use this SQLite file from another data directory (`storage.url`).
    let _db_lock = if cfg.storage.backend == lattice_storage::BackendKind::Sqlite {
        Some(
            crate::datadir::lock_sqlite(&cfg.storage.sqlite_path(), false)
                .map_err(|e| format!("db-restore: stop the server first: {e}"))?,
        )
    } else {
        None
    };
    lattice_storage::backup::restore(&cfg.storage, file).map_err(|e| format!("db-restore: {e}"))?;
    eprintln!(
        "restored {} into database {}",
        file.display(),
        cfg.storage.database_name()
    );
    Ok(())
}

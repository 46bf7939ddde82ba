//! The data directory's lock: one `lattice run` per data directory, and no `db-restore` under a
//! running server. `<data_dir>/lattice.lock` holds an exclusive `flock` for the process's life
//! (the kernel drops it when the process ends, however it ends) and the holder's pid, for the
//! message the next one gets. The journal directory and the SQLite file can be set apart from the
//! data directory (`storage.journal_dir`, `storage.url`), so they carry locks of their own:
//! `<journal_dir>/journal.lock` (one server per journal) and `<sqlite file>.lock`, which servers
//! hold shared (nodes may share one SQLite file as they share one MariaDB: each writes its own
//! rows through its own journal) and `db-restore` exclusive (no restore under any of them).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The lock file's name in the data directory.
pub const LOCK_FILE: &str = "lattice.lock";

/// The lock file's name in the journal directory.
pub const JOURNAL_LOCK_FILE: &str = "journal.lock";

/// A held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Takes the lock of `data_dir` (creating the directory), or says which process holds it.
pub fn lock(data_dir: &Path) -> Result<DirLock, String> {
    lock_dir(
        data_dir,
        LOCK_FILE,
        "the data directory",
        "storage.data_dir",
    )
}

/// Takes the lock of the journal directory `dir` (creating it), or says which process holds it.
pub fn lock_journal(dir: &Path) -> Result<DirLock, String> {
    lock_dir(
        dir,
        JOURNAL_LOCK_FILE,
        "the journal directory",
        "storage.journal_dir",
    )
}

/// Creates `dir` and takes the exclusive lock of `dir/file`: `what` names the directory in
/// messages, `key` the setting that gives a process one of its own.
fn lock_dir(dir: &Path, file: &str, what: &str, key: &str) -> Result<DirLock, String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create {what} {} ({key}): {e}", dir.display()))?;
    let what = format!("{what} {}", dir.display());
    lock_file(&dir.join(file), &what, key, false)
}

/// Takes the lock of the SQLite database `file` (`<file>.lock` beside it: a lock on the database
/// file itself would be dropped with SQLite's own locks when this process closed it): `shared` for
/// a server using it (never refused by another server), exclusive for a restore (refused while a
/// server uses it, saying which).
pub fn lock_sqlite(file: &Path, shared: bool) -> Result<DirLock, String> {
    let mut name = file.as_os_str().to_owned();
    name.push(".lock");
    let what = format!("the SQLite database {}", file.display());
    lock_file(&PathBuf::from(name), &what, "storage.url", shared)
}

/// Takes a `flock` of `path` (creating the file), or says why not: `what` names the thing it
/// guards, `key` the setting that gives this process one of its own. An exclusive lock writes
/// this process's pid in the file, for the message the next one gets; a shared one (several
/// holders) is refused only while someone holds it exclusively.
fn lock_file(path: &Path, what: &str, key: &str, shared: bool) -> Result<DirLock, String> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mode = if shared { libc::LOCK_SH } else { libc::LOCK_EX };
    // SAFETY: flock on a descriptor this function owns; no memory is passed.
    let r = unsafe { libc::flock(f.as_raw_fd(), mode | libc::LOCK_NB) };
    if r != 0 {
        if shared {
            return Err(format!(
                "{what} is being restored (a process holds {} exclusively)",
                path.display()
            ));
        }
        let mut pid = String::new();
        let _ = f.read_to_string(&mut pid);
        let pid = pid.trim();
        return Err(format!(
            "{what} is in use by another lattice process{} (it holds {}); stop it, or give this one its own {key}",
            if pid.is_empty() { String::new() } else { format!(" (pid {pid})") },
            path.display()
        ));
    }
    if !shared {
        let _ = f.set_len(0);
        let _ = f.seek(SeekFrom::Start(0));
        let _ = writeln!(f, "{}", std::process::id());
    }
    Ok(DirLock {
        _file: f,
        path: path.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_of_one_directory_is_refused_until_the_first_is_dropped() {
        let dir = std::env::temp_dir().join(format!("lattice-dirlock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = lock(&dir).unwrap();
        // flock locks belong to the open file description: a second open conflicts even in the
        // same process.
        let e = lock(&dir).unwrap_err();
        assert!(e.contains("in use by another lattice process"), "{e}");
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        drop(first);
        assert!(lock(&dir).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_journal_directory_and_the_sqlite_file_are_locked_on_their_own() {
        let dir = std::env::temp_dir().join(format!("lattice-jlock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let j = lock_journal(&dir.join("j")).unwrap();
        let e = lock_journal(&dir.join("j")).unwrap_err();
        assert!(e.contains("journal directory"), "{e}");
        assert!(e.contains("storage.journal_dir"), "{e}");
        let db = dir.join("x.sqlite3");
        // Servers share an SQLite file; a restore is refused while any uses it, and a server
        // while a restore runs.
        let s1 = lock_sqlite(&db, true).unwrap();
        let s2 = lock_sqlite(&db, true).unwrap();
        let e = lock_sqlite(&db, false).unwrap_err();
        assert!(e.contains("storage.url"), "{e}");
        drop((s1, s2));
        let l = lock_sqlite(&db, false).unwrap();
        let e = lock_sqlite(&db, true).unwrap_err();
        assert!(e.contains("being restored"), "{e}");
        // A journal directory that is the data directory: two lock files, no conflict.
        let _d = lock(&dir.join("j")).unwrap();
        drop((j, l));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

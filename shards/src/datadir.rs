//! The data directory's lock: one `lattice run` per data directory, and no `db-restore` under a
//! running server. `<data_dir>/lattice.lock` holds an exclusive `flock` for the process's life
//! (the kernel drops it when the process ends, however it ends) and the holder's pid, for the
//! message the next one gets.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The lock file's name in the data directory.
pub const LOCK_FILE: &str = "lattice.lock";

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
    std::fs::create_dir_all(data_dir).map_err(|e| {
        format!(
            "cannot create the data directory {}: {e}",
            data_dir.display()
        )
    })?;
    let path = data_dir.join(LOCK_FILE);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    // SAFETY: flock on a descriptor this function owns; no memory is passed.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r != 0 {
        let mut pid = String::new();
        let _ = f.read_to_string(&mut pid);
        let pid = pid.trim();
        return Err(format!(
            "the data directory {} is in use by another lattice process{} (it holds {}); stop it, or give this one its own storage.data_dir",
            data_dir.display(),
            if pid.is_empty() { String::new() } else { format!(" (pid {pid})") },
            path.display()
        ));
    }
    let _ = f.set_len(0);
    let _ = f.seek(SeekFrom::Start(0));
    let _ = writeln!(f, "{}", std::process::id());
    Ok(DirLock { _file: f, path })
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
}

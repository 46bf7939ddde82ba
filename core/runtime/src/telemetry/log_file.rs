//! A log file that rotates by day and by size, keeping a bounded number of old files.
//!
//! The live file is always `path`. Rotation renames it to `path.YYYY-MM-DD.N` (the UTC day its
//! first line was written, N counting from 1 within that day) and opens a fresh `path`; the oldest
//! rotated files beyond `keep` are deleted. Only the log writer thread touches it, so nothing here
//! is shared or locked.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;

/// When a [`RotatingFile`] rotates and what it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate before a write that would take the file past this many bytes (0 = never by size).
    pub max_bytes: u64,
    /// Rotate when the UTC day changes.
    pub daily: bool,
    /// Rotated files kept (the oldest beyond this are deleted).
    pub keep: usize,
}

/// A rotating append-only log file. Errors are returned, never panicked on: the writer counts
/// them and goes on writing to the console.
pub struct RotatingFile {
    path: PathBuf,
    rotation: Rotation,
    file: File,
    size: u64,
    day: NaiveDate,
}

/// Opens `path` for appending, creating it mode 0640 (whatever the umask allows less of): log
/// lines carry client addresses and account names, which other users of the host need not read.
/// A file that exists keeps its mode.
fn create(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

impl RotatingFile {
    /// Opens (appends to) `path`, creating its directory. `today` is the current UTC day.
    pub fn open(path: &Path, rotation: Rotation, today: NaiveDate) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = create(path)?;
        let meta = file.metadata()?;
        // A file left by an earlier run keeps the day it was last written.
        let day = meta
            .modified()
            .ok()
            .map(|t| chrono::DateTime::<chrono::Utc>::from(t).date_naive())
            .unwrap_or(today);
        Ok(RotatingFile {
            path: path.to_path_buf(),
            rotation,
            file,
            size: meta.len(),
            day,
        })
    }

    /// The live file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The live file's descriptor (for the crash path, which writes with `write(2)`).
    pub fn raw_fd(&self) -> i32 {
        self.file.as_raw_fd()
    }

    /// Appends `bytes` (whole lines), rotating first when the day changed, and between lines
    /// whenever the next line would pass the size limit (a single line longer than the limit
    /// gets a file of its own). Returns how many times it rotated.
    ///
    /// A rotation that fails (the directory became read-only, say) does not lose the lines: they
    /// go on into the live file, past its bound, and the error is returned after them (the next
    /// write tries the rotation again). A write that fails (a full disk) cuts the file back to
    /// its last whole line, so the lines written after the disk has room again start on a line
    /// of their own (a torn record joined the next one, which broke JSON lines).
    pub fn write(&mut self, bytes: &[u8], today: NaiveDate) -> std::io::Result<u32> {
        let mut rotated = 0;
        let mut failed: Option<std::io::Error> = None;
        if self.rotation.daily && today != self.day && self.size > 0 {
            match self.rotate(today) {
                Ok(()) => rotated += 1,
                Err(e) => failed = Some(e),
            }
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            let cut = if self.rotation.max_bytes == 0 || failed.is_some() {
                rest.len()
            } else {
                // The whole lines that still fit.
                let room = self.rotation.max_bytes.saturating_sub(self.size) as usize;
                let mut cut = 0;
                for (i, b) in rest.iter().enumerate().take(room) {
                    if *b == b'\n' {
                        cut = i + 1;
                    }
                }
                if rest.len() <= room {
                    cut = rest.len();
                }
                if cut == 0 && self.size > 0 {
                    match self.rotate(today) {
                        Ok(()) => rotated += 1,
                        Err(e) => failed = Some(e),
                    }
                    continue;
                }
                if cut == 0 {
                    // A line longer than the limit, in an empty file: written whole.
                    rest.iter()
                        .position(|b| *b == b'\n')
                        .map_or(rest.len(), |i| i + 1)
                } else {
                    cut
                }
            };
            if let Err(e) = self.file.write_all(&rest[..cut]) {
                let _ = self.file.set_len(self.size);
                return Err(e);
            }
            if self.size == 0 {
                self.day = today;
            }
            self.size += cut as u64;
            rest = &rest[cut..];
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(rotated),
        }
    }

    fn rotate(&mut self, today: NaiveDate) -> std::io::Result<()> {
        let day = self.day.format("%Y-%m-%d").to_string();
        // After the newest of that day, never into a gap left by pruning (order = age).
        let n = self
            .rotated()?
            .iter()
            .filter(|r| r.0 == self.day)
            .map(|r| r.1)
            .max()
            .unwrap_or(0)
            + 1;
        let target = self.suffixed(&format!("{day}.{n}"));
        std::fs::rename(&self.path, &target)?;
        self.file = create(&self.path)?;
        self.size = 0;
        self.day = today;
        self.prune()
    }

    fn suffixed(&self, suffix: &str) -> PathBuf {
        let mut s = self.path.clone().into_os_string();
        s.push(".");
        s.push(suffix);
        PathBuf::from(s)
    }

    /// The rotated files, oldest first: `(day, n, path)`.
    pub fn rotated(&self) -> std::io::Result<Vec<(NaiveDate, u32, PathBuf)>> {
        let dir = match self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(d) => d.to_path_buf(),
            None => PathBuf::from("."),
        };
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let prefix = format!("{name}.");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            let f = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = f.strip_prefix(&prefix) else {
                continue;
            };
            let Some((d, n)) = rest.rsplit_once('.') else {
                continue;
            };
            if let (Ok(d), Ok(n)) = (NaiveDate::parse_from_str(d, "%Y-%m-%d"), n.parse::<u32>()) {
                out.push((d, n, e.path()));
            }
        }
        out.sort();
        Ok(out)
    }

    fn prune(&self) -> std::io::Result<()> {
        let files = self.rotated()?;
        let extra = files.len().saturating_sub(self.rotation.keep);
        for (_, _, p) in files.into_iter().take(extra) {
            std::fs::remove_file(p)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, d).unwrap()
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lattice-logfile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn rotates_by_size_and_keeps_the_newest() {
        let d = dir("size");
        let path = d.join("sub/lattice.log");
        let rot = Rotation {
            max_bytes: 10,
            daily: false,
            keep: 2,
        };
        let mut f = RotatingFile::open(&path, rot, day(1)).unwrap();
        let mut rotations = 0;
        for i in 0..5 {
            rotations += f.write(format!("line {i}\n").as_bytes(), day(1)).unwrap();
        }
        // 7 bytes a line, 10 allowed: every line after the first rotates.
        assert_eq!(rotations, 4);
        let kept = f.rotated().unwrap();
        assert_eq!(
            kept.iter().map(|k| k.1).collect::<Vec<_>>(),
            vec![3, 4],
            "the two newest"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "line 4\n");
        assert_eq!(std::fs::read_to_string(&kept[1].2).unwrap(), "line 3\n");
        // Created (and re-created after each rotation) without read access for others.
        use std::os::unix::fs::PermissionsExt;
        for p in [&path, &kept[0].2, &kept[1].2] {
            let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode & 0o007, 0, "{}: {mode:o}", p.display());
        }
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_rotation_that_fails_loses_no_line() {
        let d = dir("rotfail");
        std::fs::create_dir_all(&d).unwrap();
        // A name of 250 bytes is a file; with the rotation's suffix (`.2026-11-01.1`) it passes
        // NAME_MAX (255), so the rename fails, as in a directory that became read-only (which
        // does not stop root, who runs CI).
        let path = d.join("l".repeat(250));
        let rot = Rotation {
            max_bytes: 10,
            daily: false,
            keep: 5,
        };
        let mut f = RotatingFile::open(&path, rot, day(1)).unwrap();
        f.write(b"line 0\n", day(1)).unwrap();
        assert!(f.write(b"line 1\nline 2\n", day(1)).is_err());
        assert!(f.write(b"line 3\n", day(1)).is_err(), "tried again");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "line 0\nline 1\nline 2\nline 3\n",
            "the lines go on into the live file"
        );
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_batch_of_lines_is_split_at_the_size_limit() {
        let d = dir("batch");
        let path = d.join("lattice.log");
        let rot = Rotation {
            max_bytes: 15,
            daily: false,
            keep: 10,
        };
        let mut f = RotatingFile::open(&path, rot, day(1)).unwrap();
        // One write of five 7-byte lines: two fit per file.
        let batch: String = (0..5).map(|i| format!("line {i}\n")).collect();
        assert_eq!(
            f.write(batch.as_bytes(), day(1)).unwrap(),
            2,
            "two rotations in one write"
        );
        let kept = f.rotated().unwrap();
        let files: Vec<String> = kept
            .iter()
            .map(|k| std::fs::read_to_string(&k.2).unwrap())
            .chain(std::iter::once(std::fs::read_to_string(&path).unwrap()))
            .collect();
        assert_eq!(
            files,
            vec!["line 0\nline 1\n", "line 2\nline 3\n", "line 4\n"]
        );
        // A line longer than the limit gets a file of its own, whole.
        let long = format!("{}\n", "x".repeat(40));
        f.write(long.as_bytes(), day(1)).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), long);
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn rotates_when_the_day_changes_and_names_the_old_day() {
        let d = dir("day");
        let path = d.join("lattice.log");
        let rot = Rotation {
            max_bytes: 0,
            daily: true,
            keep: 5,
        };
        let mut f = RotatingFile::open(&path, rot, day(1)).unwrap();
        f.day = day(1);
        assert_eq!(f.write(b"a\n", day(1)).unwrap(), 0);
        assert_eq!(f.write(b"b\n", day(1)).unwrap(), 0);
        assert_eq!(f.write(b"c\n", day(2)).unwrap(), 1);
        assert_eq!(f.write(b"d\n", day(2)).unwrap(), 0);
        let kept = f.rotated().unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].0, day(1));
        assert!(kept[0].2.ends_with("lattice.log.2026-11-01.1"));
        assert_eq!(std::fs::read_to_string(&kept[0].2).unwrap(), "a\nb\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "c\nd\n");
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn an_unwritable_path_is_an_error() {
        let rot = Rotation {
            max_bytes: 0,
            daily: false,
            keep: 1,
        };
        assert!(RotatingFile::open(Path::new("/proc/nope/lattice.log"), rot, day(1)).is_err());
    }
}

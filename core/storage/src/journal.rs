//! Append-only journal of dirty marks, in segment files.
//!
//! A record is `len: u32 LE | crc32(payload): u32 LE | payload`. Payload kinds: a *mark* (`1`, seq, op,
//! table, key values, column values) and a *checkpoint* (`2`, seq): every mark with a seq at or below
//! the checkpoint is written to the database or the dump file. On open, the segments are read in order;
//! a torn tail (short or bad-CRC record at the end of the last segment, left by a crash mid-write) is
//! cut off — such a record was never acknowledged. Marks above the highest checkpoint are returned for
//! replay. New records always go to a fresh segment; a closed segment is deleted once its highest seq
//! is confirmed.
//!
//! Cost: one `write(2)` per group of marks (the journal thread batches), plus `fdatasync` per the
//! [`FsyncPolicy`].
//!
//! Owns the on-disk format, segments, recovery and fsync. Knows nothing of threads, tickets, the dirty
//! map or the database.

use super::config::FsyncPolicy;
use super::value::take;
use super::{Op, Value};
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Mode of a new segment: it holds rows (password hashes among them), readable by the owner only.
const PRIVATE: u32 = 0o600;

/// Largest payload of one record; a bigger mark is refused before it is queued.
pub const MAX_RECORD: usize = 16 << 20;
const HEADER: usize = 8;
const KIND_MARK: u8 = 1;
const KIND_CHECKPOINT: u8 = 2;

/// A mark read back from the journal.
#[derive(Clone, Debug, PartialEq)]
pub struct JournalEntry {
    /// Sequence number (strictly increasing across the journal's life).
    pub seq: u64,
    /// What the mark does.
    pub op: Op,
    /// Table name.
    pub table: String,
    /// Key values.
    pub key: Vec<Value>,
    /// Column values (empty for deletes).
    pub values: Vec<Value>,
}

/// What [`Journal::open`] found.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Marks not covered by a checkpoint, in seq order.
    pub entries: Vec<JournalEntry>,
    /// Highest checkpoint found.
    pub confirmed: u64,
    /// Highest seq found (marks or checkpoints).
    pub last_seq: u64,
    /// Bytes cut from torn or corrupt segment tails.
    pub truncated_bytes: u64,
    /// Segments read.
    pub segments: usize,
    /// Seqs that were handed out, not confirmed and are in no segment (inclusive ranges): a
    /// segment holding unconfirmed marks is gone (deleted or moved by hand). See [`missing`].
    pub missing: Vec<(u64, u64)>,
}

/// The unconfirmed seqs no segment holds, from the segments found (in name order: each one's
/// first seq from its name, and its highest mark) and the highest checkpoint. A segment is named
/// after the seq that follows the last one handed out when it was started, and the journal
/// deletes only its oldest segments, once every mark in them is confirmed. So whatever lies
/// before the oldest segment left is confirmed, and consecutive segments leave no seq between
/// them, unless a segment with unconfirmed marks was taken away.
pub fn missing(segments: &[(u64, u64)], confirmed: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    // The first seq not accounted for by the segments before; seqs up to `confirmed` need none.
    let mut next: Option<u64> = None;
    for &(first, max_seq) in segments {
        let from = next.unwrap_or(1).max(confirmed + 1);
        if first > from {
            out.push((from, first - 1));
        }
        next = Some(next.unwrap_or(0).max(first).max(max_seq + 1));
    }
    out
}

struct Segment {
    path: PathBuf,
    max_seq: u64,
    bytes: u64,
}

/// The journal writer. Owned by the journal thread.
pub struct Journal {
    dir: PathBuf,
    closed: VecDeque<Segment>,
    current: Segment,
    file: File,
    policy: FsyncPolicy,
    interval: Duration,
    segment_limit: u64,
    last_sync: Instant,
    unsynced: bool,
    confirmed: u64,
    last_seq: u64,
    buf: Vec<u8>,
    /// Test hook: the next write puts half its bytes down and fails, as on a full disk.
    #[cfg(test)]
    fail_next_write: bool,
}

/// Encodes one mark record (header included) onto `out`; returns the record's size.
pub fn encode_mark(
    out: &mut Vec<u8>,
    seq: u64,
    op: Op,
    table: &str,
    key: &[Value],
    values: &[Value],
) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER]);
    out.push(KIND_MARK);
    out.extend_from_slice(&seq.to_le_bytes());
    out.push(op.code());
    out.extend_from_slice(&(table.len() as u16).to_le_bytes());
    out.extend_from_slice(table.as_bytes());
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    for v in key {
        v.encode(out);
    }
    out.extend_from_slice(&(values.len() as u16).to_le_bytes());
    for v in values {
        v.encode(out);
    }
    seal(out, start)
}

/// Upper bound of a mark's payload size, checked before queueing.
pub fn mark_size(table: &str, key: &[Value], values: &[Value]) -> usize {
    HEADER
        + 1
        + 8
        + 1
        + 2
        + table.len()
        + 4
        + key
            .iter()
            .chain(values)
            .map(Value::encoded_len)
            .sum::<usize>()
}

fn encode_checkpoint(out: &mut Vec<u8>, seq: u64) {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER]);
    out.push(KIND_CHECKPOINT);
    out.extend_from_slice(&seq.to_le_bytes());
    seal(out, start);
}

fn seal(out: &mut [u8], start: usize) -> usize {
    let payload_len = out.len() - start - HEADER;
    let crc = crc32fast::hash(&out[start + HEADER..]);
    out[start..start + 4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    out.len() - start
}

enum Record {
    Mark(JournalEntry),
    Checkpoint(u64),
}

fn decode_payload(p: &[u8]) -> Option<Record> {
    let mut pos = 1;
    match *p.first()? {
        KIND_CHECKPOINT => Some(Record::Checkpoint(u64::from_le_bytes(take::<8>(
            p, &mut pos,
        )?))),
        KIND_MARK => {
            let seq = u64::from_le_bytes(take::<8>(p, &mut pos)?);
            let op = Op::from_code(take::<1>(p, &mut pos)?[0])?;
            let tl = u16::from_le_bytes(take::<2>(p, &mut pos)?) as usize;
            let table = std::str::from_utf8(p.get(pos..pos + tl)?).ok()?.to_owned();
            pos += tl;
            let nk = u16::from_le_bytes(take::<2>(p, &mut pos)?) as usize;
            let key = (0..nk)
                .map(|_| Value::decode(p, &mut pos))
                .collect::<Option<Vec<_>>>()?;
            let nv = u16::from_le_bytes(take::<2>(p, &mut pos)?) as usize;
            let values = (0..nv)
                .map(|_| Value::decode(p, &mut pos))
                .collect::<Option<Vec<_>>>()?;
            (pos == p.len()).then_some(Record::Mark(JournalEntry {
                seq,
                op,
                table,
                key,
                values,
            }))
        }
        _ => None,
    }
}

/// Parses records from a segment's bytes; returns them and the length of the valid prefix.
fn parse(buf: &[u8]) -> (Vec<Record>, usize) {
    let mut out = Vec::new();
    let mut pos = 0;
    while buf.len() - pos >= HEADER {
        let len = u32::from_le_bytes(buf[pos..pos + 4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(buf[pos + 4..pos + 8].try_into().unwrap_or_default());
        if len > MAX_RECORD || buf.len() - pos - HEADER < len {
            break;
        }
        let payload = &buf[pos + HEADER..pos + HEADER + len];
        if crc32fast::hash(payload) != crc {
            break;
        }
        match decode_payload(payload) {
            Some(r) => out.push(r),
            None => break,
        }
        pos += HEADER + len;
    }
    (out, pos)
}

fn segment_name(first_seq: u64) -> String {
    format!("seg-{first_seq:020}.wal")
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Journal {
    /// Opens (creating if needed) the journal in `dir`, recovers unconfirmed marks, and starts a new
    /// segment. Fails on I/O errors; corrupt tails are cut off and reported in [`Recovery`].
    pub fn open(
        dir: &Path,
        policy: FsyncPolicy,
        interval: Duration,
        segment_limit: u64,
    ) -> io::Result<(Journal, Recovery)> {
        fs::create_dir_all(dir)?;
        let mut names: Vec<(u64, PathBuf)> = Vec::new();
        for e in fs::read_dir(dir)? {
            let e = e?;
            let name = e.file_name();
            let Some(n) = name.to_str() else { continue };
            if let Some(num) = n.strip_prefix("seg-").and_then(|r| r.strip_suffix(".wal")) {
                if let Ok(first) = num.parse::<u64>() {
                    names.push((first, e.path()));
                }
            }
        }
        names.sort();
        let mut rec = Recovery::default();
        let mut marks = Vec::new();
        let mut closed = VecDeque::new();
        let mut spans = Vec::new();
        let count = names.len();
        for (i, (first, path)) in names.into_iter().enumerate() {
            let mut buf = Vec::new();
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut buf))
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            let (records, valid) = parse(&buf);
            if valid == 0 && !buf.is_empty() {
                // Bytes but not one valid record: a segment torn at its first record, or a stray
                // file named like one. Nothing to keep, and its name is no evidence of seqs
                // handed out (see `missing`): removed.
                rec.truncated_bytes += buf.len() as u64;
                tracing::warn!(
                    segment = %path.display(),
                    cut = buf.len(),
                    "journal: removing a segment file that holds no valid record"
                );
                fs::remove_file(&path)?;
                continue;
            }
            if valid < buf.len() {
                rec.truncated_bytes += (buf.len() - valid) as u64;
                tracing::warn!(
                    segment = %path.display(),
                    cut = buf.len() - valid,
                    last = i + 1 == count,
                    "journal: cutting torn or corrupt tail"
                );
                OpenOptions::new()
                    .write(true)
                    .open(&path)?
                    .set_len(valid as u64)?;
            }
            let mut max_seq = 0;
            for r in records {
                match r {
                    Record::Checkpoint(s) => rec.confirmed = rec.confirmed.max(s),
                    Record::Mark(m) => {
                        max_seq = max_seq.max(m.seq);
                        marks.push(m);
                    }
                }
            }
            rec.last_seq = rec.last_seq.max(max_seq);
            rec.segments += 1;
            spans.push((first, max_seq));
            closed.push_back(Segment {
                path,
                max_seq,
                bytes: valid as u64,
            });
        }
        rec.last_seq = rec.last_seq.max(rec.confirmed);
        rec.missing = missing(&spans, rec.confirmed);
        for (from, to) in &rec.missing {
            tracing::error!(
                dir = %dir.display(),
                from,
                to,
                "journal: marks {from}..={to} were never confirmed and no segment holds them: a segment was deleted or moved by hand, and the writes it held since the last flush are lost unless it is put back (stop the server, restore seg-*.wal from a backup into the journal directory, start again)"
            );
        }
        marks.retain(|m| m.seq > rec.confirmed);
        marks.sort_by_key(|m| m.seq);
        rec.entries = marks;

        let path = dir.join(segment_name(rec.last_seq + 1));
        // A crash right after the previous open may have left this very file (empty or with a
        // checkpoint only): keep using it.
        closed.retain(|s| s.path != path);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(PRIVATE)
            .open(&path)?;
        let bytes = file.metadata()?.len();
        sync_dir(dir)?;
        let mut j = Journal {
            dir: dir.to_owned(),
            closed,
            current: Segment {
                path,
                max_seq: 0,
                bytes,
            },
            file,
            policy,
            interval,
            segment_limit,
            last_sync: Instant::now(),
            unsynced: false,
            confirmed: rec.confirmed,
            last_seq: rec.last_seq,
            buf: Vec::new(),
            #[cfg(test)]
            fail_next_write: false,
        };
        let mut cp = Vec::new();
        encode_checkpoint(&mut cp, j.confirmed);
        j.write_raw(&cp)?;
        j.sync()?;
        Ok((j, rec))
    }

    /// Highest seq handed out so far.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Highest confirmed seq.
    pub fn confirmed(&self) -> u64 {
        self.confirmed
    }

    /// Bytes in live segment files.
    pub fn bytes(&self) -> u64 {
        self.current.bytes + self.closed.iter().map(|s| s.bytes).sum::<u64>()
    }

    /// Live segment files.
    pub fn segments(&self) -> usize {
        self.closed.len() + 1
    }

    /// Scratch buffer for encoding a group of records; hand it back through [`Journal::append`].
    pub fn take_buf(&mut self) -> Vec<u8> {
        let mut b = std::mem::take(&mut self.buf);
        b.clear();
        b
    }

    /// Writes a group of already encoded mark records whose highest seq is `max_seq`, then syncs if
    /// the policy is [`FsyncPolicy::Always`]. When this returns `Ok`, the marks survive `kill -9`.
    /// When the write or that sync fails, the segment is cut back to its length before the write
    /// (a torn record would hide every later one), so the next append goes to the same segment;
    /// only if the cut fails does the journal move on to a new segment.
    pub fn append(&mut self, buf: Vec<u8>, max_seq: u64) -> io::Result<()> {
        let good = self.current.bytes;
        let mut r = self.write_raw(&buf);
        if r.is_ok() && self.policy == FsyncPolicy::Always {
            r = self.sync();
        }
        self.buf = buf;
        if let Err(e) = r {
            // Seqs up to `max_seq` are never reused, whatever happens next.
            self.last_seq = self.last_seq.max(max_seq);
            self.current.bytes = good;
            self.unsynced = true;
            if let Err(cut) = self.file.set_len(good) {
                if let Err(new) = self.rotate() {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("{e}; cutting the segment back failed ({cut}) and so did starting a new one ({new})"),
                    ));
                }
            }
            return Err(e);
        }
        self.current.max_seq = self.current.max_seq.max(max_seq);
        self.last_seq = self.last_seq.max(max_seq);
        if self.current.bytes >= self.segment_limit {
            self.rotate()?;
        }
        Ok(())
    }

    fn write_raw(&mut self, b: &[u8]) -> io::Result<()> {
        #[cfg(test)]
        if std::mem::take(&mut self.fail_next_write) {
            self.file.write_all(&b[..b.len() / 2])?;
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "test: disk full",
            ));
        }
        self.file.write_all(b)?;
        self.current.bytes += b.len() as u64;
        self.unsynced = true;
        Ok(())
    }

    /// `fdatasync` if anything is unsynced.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.unsynced {
            self.file.sync_data()?;
            self.unsynced = false;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Syncs under [`FsyncPolicy::Interval`] once the interval has passed; returns when the next sync
    /// is due (for the caller's wait).
    pub fn tick(&mut self) -> io::Result<Duration> {
        if self.policy != FsyncPolicy::Interval {
            return Ok(Duration::from_millis(100));
        }
        let since = self.last_sync.elapsed();
        if since >= self.interval {
            self.sync()?;
            return Ok(self.interval);
        }
        Ok(self.interval - since)
    }

    /// Records that every mark up to `seq` is persisted, deletes closed segments that hold nothing
    /// newer, and starts a new segment when everything is confirmed and the current one is not small.
    pub fn checkpoint(&mut self, seq: u64) -> io::Result<()> {
        if seq <= self.confirmed {
            return Ok(());
        }
        self.confirmed = seq;
        let mut b = Vec::new();
        encode_checkpoint(&mut b, seq);
        self.write_raw(&b)?;
        if self.policy == FsyncPolicy::Always {
            self.sync()?;
        }
        if seq >= self.last_seq && self.current.bytes >= self.segment_limit.min(1 << 20) {
            self.rotate()?;
        }
        while let Some(s) = self.closed.front() {
            if s.max_seq > self.confirmed {
                break;
            }
            let path = s.path.clone();
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            self.closed.pop_front();
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.sync()?;
        let path = self.dir.join(segment_name(self.last_seq + 1));
        if path == self.current.path {
            return Ok(());
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(PRIVATE)
            .open(&path)?;
        let old = std::mem::replace(
            &mut self.current,
            Segment {
                path,
                max_seq: 0,
                bytes: 0,
            },
        );
        self.file = file;
        self.closed.push_back(old);
        let mut b = Vec::new();
        encode_checkpoint(&mut b, self.confirmed);
        self.write_raw(&b)?;
        self.sync()?;
        sync_dir(&self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lattice-journal-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn put(j: &mut Journal, seq: u64, k: i64) {
        let mut b = j.take_buf();
        encode_mark(
            &mut b,
            seq,
            Op::Insert,
            "t",
            &[Value::Int(k)],
            &[Value::Text("v".into())],
        );
        j.append(b, seq).expect("append");
    }

    #[test]
    fn recovers_unconfirmed_and_cuts_torn_tail() {
        let d = tmp("recover");
        let (mut j, rec) =
            Journal::open(&d, FsyncPolicy::Os, Duration::ZERO, 1 << 20).expect("open");
        assert!(rec.entries.is_empty());
        for s in 1..=5 {
            put(&mut j, s, s as i64);
        }
        j.checkpoint(2).expect("checkpoint");
        let path = j.current.path.clone();
        drop(j);
        // A torn record at the end: a header promising more bytes than exist.
        let mut f = OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open seg");
        f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 1])
            .expect("write garbage");
        drop(f);
        let (mut j, rec) =
            Journal::open(&d, FsyncPolicy::Os, Duration::ZERO, 1 << 20).expect("reopen");
        assert_eq!(
            rec.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        assert_eq!(rec.entries[0].key, vec![Value::Int(3)]);
        assert_eq!(rec.confirmed, 2);
        assert_eq!(rec.last_seq, 5);
        assert_eq!(rec.truncated_bytes, 9);
        put(&mut j, 6, 6);
        j.checkpoint(6).expect("checkpoint all");
        drop(j);
        let (_j, rec) =
            Journal::open(&d, FsyncPolicy::Os, Duration::ZERO, 1 << 20).expect("reopen 2");
        assert!(rec.entries.is_empty());
        assert!(rec.missing.is_empty(), "{:?}", rec.missing);
        assert_eq!(rec.last_seq, 6);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_failed_append_is_cut_back_and_makes_no_new_segment() {
        let d = tmp("failed");
        let (mut j, _) = Journal::open(&d, FsyncPolicy::Os, Duration::ZERO, 1 << 20).expect("open");
        put(&mut j, 1, 1);
        for s in 2..=100 {
            j.fail_next_write = true;
            let mut b = j.take_buf();
            encode_mark(&mut b, s, Op::Insert, "t", &[Value::Int(0)], &[]);
            assert!(j.append(b, s).is_err());
        }
        put(&mut j, 101, 101);
        assert_eq!(j.segments(), 1, "refused appends make no segments");
        drop(j);
        let (_j, rec) =
            Journal::open(&d, FsyncPolicy::Os, Duration::ZERO, 1 << 20).expect("reopen");
        let seqs: Vec<u64> = rec.entries.iter().map(|e| e.seq).collect();
        assert_eq!(
            seqs,
            vec![1, 101],
            "the marks after the failures are readable"
        );
        assert_eq!(rec.truncated_bytes, 0, "no torn bytes left behind");
        fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn rotates_and_deletes_confirmed_segments() {
        let d = tmp("rotate");
        let (mut j, _) =
            Journal::open(&d, FsyncPolicy::Always, Duration::ZERO, 4096).expect("open");
        for s in 1..=400 {
            put(&mut j, s, s as i64);
        }
        assert!(j.segments() > 3, "segments: {}", j.segments());
        j.checkpoint(200).expect("cp");
        let after_half = j.segments();
        j.checkpoint(400).expect("cp");
        assert!(j.segments() < after_half);
        assert!(j.segments() <= 2);
        drop(j);
        let (_j, rec) = Journal::open(&d, FsyncPolicy::Os, Duration::ZERO, 4096).expect("reopen");
        assert!(rec.entries.is_empty());
        assert_eq!(rec.last_seq, 400);
        assert!(rec.missing.is_empty(), "{:?}", rec.missing);
        let _ = fs::remove_dir_all(&d);
    }

    /// The first seq of each segment file, oldest first.
    fn firsts(d: &Path) -> Vec<u64> {
        let mut v: Vec<u64> = fs::read_dir(d)
            .expect("read dir")
            .filter_map(|e| {
                let n = e.ok()?.file_name().into_string().ok()?;
                n.strip_prefix("seg-")?.strip_suffix(".wal")?.parse().ok()
            })
            .collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn a_segment_taken_away_with_unconfirmed_marks_is_reported() {
        let d = tmp("missing");
        let open = || Journal::open(&d, FsyncPolicy::Os, Duration::ZERO, 4096).expect("open");
        let (mut j, _) = open();
        for s in 1..=400 {
            put(&mut j, s, s as i64);
        }
        j.checkpoint(100).expect("cp");
        drop(j);
        // Segments the journal deleted itself (confirmed) and restarts leave no gap.
        let (j, rec) = open();
        assert!(rec.missing.is_empty(), "{:?}", rec.missing);
        assert_eq!(rec.entries.len(), 300);
        drop(j);
        let segs = firsts(&d);
        assert!(segs.len() >= 4, "{segs:?}");
        assert!(segs[0] <= 101, "the oldest left holds mark 101: {segs:?}");
        // A segment in the middle, all of its marks unconfirmed, deleted by hand.
        fs::remove_file(d.join(segment_name(segs[2]))).expect("rm");
        let (j, rec) = open();
        assert_eq!(rec.missing, vec![(segs[2], segs[3] - 1)]);
        drop(j);
        // The oldest too: the marks from 101 on up to the next segment are gone as well.
        fs::remove_file(d.join(segment_name(segs[0]))).expect("rm");
        let (_j, rec) = open();
        assert_eq!(
            rec.missing,
            vec![(101, segs[1] - 1), (segs[2], segs[3] - 1)]
        );
        fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn a_stray_file_named_like_a_later_segment_reports_nothing_missing() {
        let d = tmp("stray");
        let open = || Journal::open(&d, FsyncPolicy::Os, Duration::ZERO, 1 << 20).expect("open");
        let (mut j, _) = open();
        for s in 1..=20 {
            put(&mut j, s, s as i64);
        }
        drop(j);
        // Bytes that hold no record, under the name of a segment far ahead.
        fs::write(d.join(segment_name(9000)), [0x5au8; 300]).expect("write");
        let (j, rec) = open();
        assert!(rec.missing.is_empty(), "{:?}", rec.missing);
        assert_eq!(rec.entries.len(), 20);
        assert_eq!(rec.truncated_bytes, 300);
        assert!(!d.join(segment_name(9000)).exists(), "removed");
        drop(j);
        // And the next start has nothing to say either.
        let (_j, rec) = open();
        assert!(rec.missing.is_empty(), "{:?}", rec.missing);
        assert_eq!(rec.entries.len(), 20);
        fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn missing_ranges() {
        // (first seq from the name, highest mark; 0 for none)
        assert!(missing(&[], 0).is_empty());
        assert!(missing(&[(1, 10), (11, 20), (21, 0)], 0).is_empty());
        // What lies before the oldest segment is fine when confirmed, lost when not.
        assert!(missing(&[(51, 60), (61, 0)], 50).is_empty());
        assert!(missing(&[(51, 60), (61, 0)], 70).is_empty());
        assert_eq!(missing(&[(51, 60), (61, 0)], 40), vec![(41, 50)]);
        // A hole between two segments, partly confirmed.
        assert_eq!(missing(&[(1, 10), (31, 40)], 0), vec![(11, 30)]);
        assert_eq!(missing(&[(1, 10), (31, 40)], 20), vec![(21, 30)]);
        assert!(missing(&[(1, 10), (31, 40)], 30).is_empty());
        // A segment without marks (a restart with nothing written) covers nothing.
        assert!(missing(&[(11, 0), (11, 15)], 10).is_empty());
    }

    #[test]
    fn an_unreadable_segment_is_named() {
        let d = tmp("dirseg");
        fs::create_dir_all(d.join(segment_name(7))).expect("mkdir");
        let Err(e) = Journal::open(&d, FsyncPolicy::Os, Duration::ZERO, 1 << 20) else {
            panic!("a directory named like a segment opened");
        };
        assert!(e.to_string().contains(&segment_name(7)), "{e}");
        fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = 0x1234_5678_u64;
        for _ in 0..2000 {
            let n = (rng % 64) as usize;
            let mut b = Vec::with_capacity(n);
            for _ in 0..n {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                b.push(rng as u8);
            }
            let (_, valid) = parse(&b);
            assert!(valid <= b.len());
            let _ = decode_payload(&b);
        }
    }
}

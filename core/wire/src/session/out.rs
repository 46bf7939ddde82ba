//! The outbound queue of a session, which is also its replay buffer once resume is on.
//!
//! Bytes are kept from the oldest frame the peer may still need to the newest queued. Positions
//! are absolute stream offsets (`u64`, never reused), so a socket's write cursor and the frame
//! marks survive compaction. Without resume a frame is dropped as soon as it is written (as a
//! plain send queue); with resume a sequenced frame stays until the peer acknowledges it or the
//! replay bounds evict it (only frames already written are evicted; unsent bytes are bounded by
//! the session's send limit instead).

use std::collections::VecDeque;

/// One frame in the queue: where it ends and its sequence number (0 = unsequenced: never
/// replayed on purpose, dropped once written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    end: u64,
    seq: u64,
}

/// The frame boundaries a queue keeps with resume on.
#[derive(Debug, Default)]
struct Marks {
    /// Frame boundaries, oldest first.
    marks: VecDeque<Mark>,
    /// Sequenced frames among `marks`.
    seq_frames: usize,
}

/// A handshake answer (`Resumed`) written before the queue on a new socket.
#[derive(Debug)]
struct Prefix {
    bytes: Vec<u8>,
    written: usize,
}

/// Bytes waiting for the socket or for an acknowledgement. See the module documentation.
///
/// What only resumable sessions use (the marks, the prefix) is boxed, so the queue of every
/// other session is 72 bytes instead of 128 (a plain session checks one pointer where it checked
/// a flag).
#[derive(Debug, Default)]
pub(crate) struct OutQueue {
    /// Bytes from absolute offset `phys` on; `bytes[start - phys..]` is live.
    bytes: Vec<u8>,
    phys: u64,
    /// First live byte (absolute).
    start: u64,
    /// Next byte to write to the socket (absolute), `start <= written <= end`.
    written: u64,
    /// Present once [`OutQueue::track`] was called (resume on); never removed.
    tracked: Option<Box<Marks>>,
    /// Present from [`OutQueue::rebind`] until the prefix is written or dropped.
    prefix: Option<Box<Prefix>>,
    /// Release the buffer (whatever its size) the next time it drains.
    release_when_drained: bool,
}

impl OutQueue {
    /// Kept when drained; larger buffers are released so idle sessions stay small.
    const KEEP: usize = 4096;

    #[inline]
    fn end(&self) -> u64 {
        self.phys + self.bytes.len() as u64
    }

    /// Bytes queued and not yet written (prefix included).
    #[inline]
    pub(crate) fn unsent(&self) -> usize {
        self.prefix
            .as_ref()
            .map_or(0, |p| p.bytes.len() - p.written)
            + (self.end() - self.written) as usize
    }

    /// Unsent bytes of frames queued at or after absolute offset `from` (the send limit's
    /// measure: bytes replayed to a new socket are bounded by the replay limits instead).
    #[inline]
    pub(crate) fn unsent_since(&self, from: u64) -> usize {
        (self.end() - self.written.max(from)) as usize
    }

    /// Bytes kept (written or not), without the prefix.
    pub(crate) fn retained_bytes(&self) -> usize {
        (self.end() - self.start) as usize
    }

    /// Sequenced frames kept.
    pub(crate) fn retained_frames(&self) -> usize {
        self.tracked.as_ref().map_or(0, |t| t.seq_frames)
    }

    /// Sequence number of the oldest sequenced frame kept.
    pub(crate) fn oldest_seq(&self) -> Option<u64> {
        let t = self.tracked.as_ref()?;
        t.marks.iter().find(|m| m.seq != 0).map(|m| m.seq)
    }

    /// The absolute offset where the next frame will start.
    pub(crate) fn tail(&self) -> u64 {
        self.end()
    }

    /// Starts keeping frame marks: bytes already queued become one unsequenced frame.
    pub(crate) fn track(&mut self) {
        if self.tracked.is_some() {
            return;
        }
        let mut t = Box::<Marks>::default();
        if self.end() > self.start {
            t.marks.push_back(Mark {
                end: self.end(),
                seq: 0,
            });
        }
        self.tracked = Some(t);
    }

    /// Appends one frame written by `write`, with sequence number `seq` (0 for unsequenced).
    /// Nothing is marked when `write` wrote nothing. Returns the absolute offset where it starts.
    // Inlined: once per frame sent, and the closure it takes is built for the call.
    #[inline]
    pub(crate) fn push_with(&mut self, seq: u64, write: impl FnOnce(&mut Vec<u8>)) -> u64 {
        let at = self.end();
        let before = self.bytes.len();
        write(&mut self.bytes);
        let end = self.end();
        if let Some(t) = &mut self.tracked {
            if self.bytes.len() > before {
                t.marks.push_back(Mark { end, seq });
                if seq != 0 {
                    t.seq_frames += 1;
                }
            }
        }
        at
    }

    /// The byte buffer, for a transport layer to append what it answers by itself (an HTTP
    /// response, a WebSocket pong or close frame). Such bytes are not frames: on a tracked queue
    /// the caller marks them with [`OutQueue::seal_raw`] right after.
    pub(crate) fn raw(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    /// Marks bytes a layer appended through [`OutQueue::raw`] since the last frame (a WebSocket
    /// pong, ping or close frame) as one unsequenced frame, so a tracked queue never counts them
    /// as part of the next sequenced frame: they are dropped once written and never replayed.
    pub(crate) fn seal_raw(&mut self) {
        let end = self.end();
        let Some(t) = &mut self.tracked else {
            return;
        };
        let last = t.marks.back().map_or(self.start, |m| m.end);
        if end > last {
            t.marks.push_back(Mark { end, seq: 0 });
        }
    }

    /// Releases the buffer, whatever its size, the next time it drains.
    pub(crate) fn release_when_drained(&mut self) {
        self.release_when_drained = true;
    }

    /// Index in `bytes` of absolute offset `at`.
    #[inline]
    fn index(&self, at: u64) -> usize {
        (at - self.phys) as usize
    }

    /// Bytes waiting for the socket: the prefix first, then the queue from the write cursor.
    // Inlined into `Session::transmit`, which the runtime inlines.
    #[inline]
    pub(crate) fn transmit(&self) -> &[u8] {
        if let Some(p) = &self.prefix {
            return &p.bytes[p.written..];
        }
        &self.bytes[self.index(self.written)..]
    }

    /// The socket took `n` bytes of [`OutQueue::transmit`].
    pub(crate) fn transmitted(&mut self, n: usize) {
        if self.tracked.is_none() && self.prefix.is_none() {
            // A plain send queue (no resume): drop what is written, release a drained buffer
            // (what `trim(0)` does on it, without the call).
            assert!(
                self.written + n as u64 <= self.end(),
                "consumed more than queued"
            );
            self.written += n as u64;
            if self.written == self.end() {
                self.clear_bytes();
            }
            return;
        }
        let mut n = n;
        if let Some(p) = &mut self.prefix {
            let k = n.min(p.bytes.len() - p.written);
            p.written += k;
            n -= k;
            if p.written == p.bytes.len() {
                self.prefix = None;
            }
            debug_assert_eq!(n, 0, "transmit hands out the prefix alone");
        }
        assert!(
            self.written + n as u64 <= self.end(),
            "consumed more than queued"
        );
        self.written += n as u64;
        self.trim(0);
    }

    /// Everything queued counts as written (no socket: the frames wait for a resume in the
    /// replay buffer). The prefix is dropped.
    pub(crate) fn write_off(&mut self) {
        self.written = self.end();
        self.prefix = None;
        self.trim(0);
    }

    /// Sets the handshake answer written before the queue on a new socket, and rewinds the write
    /// cursor to the oldest frame kept (the replay). Unsequenced frames (a `Welcome`, `Ack`s) were
    /// meant for the old socket and are dropped; only sequenced frames are replayed.
    pub(crate) fn rebind(&mut self, prefix: Vec<u8>) {
        self.prefix = (!prefix.is_empty()).then(|| {
            Box::new(Prefix {
                bytes: prefix,
                written: 0,
            })
        });
        let retained = self.retained_bytes();
        if let Some(t) = self
            .tracked
            .as_mut()
            .filter(|t| t.marks.iter().any(|m| m.seq == 0))
        {
            // Rebuild without them: once per resume, O(bytes kept).
            let mut kept = Vec::with_capacity(retained);
            let mut marks = VecDeque::with_capacity(t.marks.len());
            let mut from = self.start;
            for m in &t.marks {
                if m.seq != 0 {
                    let (a, b) = ((from - self.phys) as usize, (m.end - self.phys) as usize);
                    kept.extend_from_slice(&self.bytes[a..b]);
                    marks.push_back(Mark {
                        end: self.start + kept.len() as u64,
                        seq: m.seq,
                    });
                }
                from = m.end;
            }
            self.bytes = kept;
            self.phys = self.start;
            t.marks = marks;
        }
        self.written = self.start;
    }

    /// Drops the frames up to and including sequence number `acked` (and the unsequenced frames
    /// before the first kept one, once written). Frames are dropped even when unwritten: an
    /// acknowledged frame reached the peer on an earlier socket.
    pub(crate) fn trim(&mut self, acked: u64) {
        let Some(t) = &mut self.tracked else {
            if self.written == self.end() {
                self.clear_bytes();
            }
            return;
        };
        while let Some(m) = t.marks.front() {
            let done = if m.seq == 0 {
                m.end <= self.written
            } else {
                m.seq <= acked
            };
            if !done {
                break;
            }
            if m.seq != 0 {
                t.seq_frames -= 1;
            }
            self.start = m.end;
            t.marks.pop_front();
        }
        self.written = self.written.max(self.start);
        self.compact();
    }

    /// Drops written frames from the front until at most `max_frames` sequenced frames and
    /// `max_bytes` bytes are kept (never an unwritten frame). Returns (sequenced frames dropped,
    /// the highest sequence number dropped).
    pub(crate) fn evict(&mut self, max_frames: usize, max_bytes: usize) -> (usize, u64) {
        let (mut dropped, mut through) = (0, 0);
        let end = self.end();
        if let Some(t) = &mut self.tracked {
            while t.seq_frames > max_frames || (end - self.start) as usize > max_bytes {
                let Some(m) = t.marks.front() else { break };
                if m.end > self.written {
                    break;
                }
                if m.seq != 0 {
                    t.seq_frames -= 1;
                    dropped += 1;
                    through = m.seq;
                }
                self.start = m.end;
                t.marks.pop_front();
            }
        }
        self.compact();
        (dropped, through)
    }

    /// Drops every frame kept (a resynchronised resume: the peer starts over from the next frame).
    pub(crate) fn drop_all(&mut self) {
        if let Some(t) = &mut self.tracked {
            t.marks.clear();
            t.seq_frames = 0;
        }
        self.start = self.end();
        self.written = self.start;
        self.compact();
    }

    /// Releases bytes before `start`: all of them when nothing is live, else when the dead part is
    /// at least half the buffer (amortised O(1) per byte).
    fn compact(&mut self) {
        let dead = (self.start - self.phys) as usize;
        if dead == 0 {
            return;
        }
        if dead == self.bytes.len() {
            self.clear_bytes();
        } else if dead >= self.bytes.len() / 2 {
            self.bytes.drain(..dead);
            self.phys = self.start;
        }
    }

    fn clear_bytes(&mut self) {
        self.phys = self.end();
        self.start = self.phys;
        self.written = self.phys;
        if self.bytes.capacity() > Self::KEEP || self.release_when_drained {
            self.release_when_drained = false;
            self.bytes = Vec::new();
        } else {
            self.bytes.clear();
        }
    }

    /// Capacity of the byte buffer (tests check that drained buffers are released).
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.bytes.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(q: &mut OutQueue, seq: u64, b: &[u8]) {
        q.push_with(seq, |v| v.extend_from_slice(b));
    }

    #[test]
    fn plain_queue_drops_what_is_written() {
        let mut q = OutQueue::default();
        push(&mut q, 0, b"abc");
        push(&mut q, 0, b"de");
        q.transmitted(2);
        assert_eq!(q.transmit(), b"cde");
        q.transmitted(3);
        assert_eq!(q.unsent(), 0);
        assert_eq!(q.retained_bytes(), 0);
    }

    #[test]
    fn tracked_queue_keeps_sequenced_frames_until_acked_and_replays() {
        let mut q = OutQueue::default();
        push(&mut q, 0, b"W"); // Welcome, before tracking
        q.track();
        push(&mut q, 1, b"one");
        push(&mut q, 2, b"two");
        push(&mut q, 0, b"a"); // an ack frame
        push(&mut q, 3, b"three");
        q.transmitted(q.transmit().len());
        assert_eq!(q.retained_frames(), 3);
        assert_eq!(q.oldest_seq(), Some(1));
        assert_eq!(q.retained_bytes(), 12, "the written Welcome is gone");
        q.trim(1);
        assert_eq!(q.oldest_seq(), Some(2));
        q.rebind(b"R".to_vec());
        let mut replay = Vec::new();
        while !q.transmit().is_empty() {
            let t = q.transmit().to_vec();
            replay.extend_from_slice(&t);
            q.transmitted(t.len());
        }
        assert_eq!(replay, b"Rtwothree", "the ack frame was for the old socket");
        q.trim(3);
        assert_eq!(q.retained_bytes(), 0);
        assert_eq!(q.retained_frames(), 0);
    }

    #[test]
    fn eviction_takes_only_written_frames_oldest_first() {
        let mut q = OutQueue::default();
        q.track();
        for s in 1..=5 {
            push(&mut q, s, &[s as u8; 10]);
        }
        q.transmitted(30);
        assert_eq!(q.evict(1, 1000), (3, 3), "three written frames dropped");
        assert_eq!(q.oldest_seq(), Some(4));
        assert_eq!(q.evict(0, 0), (0, 0), "unwritten frames are never evicted");
        q.write_off();
        assert_eq!(q.unsent(), 0);
        assert_eq!(q.evict(0, 0), (2, 5));
        assert_eq!(q.retained_bytes(), 0);
    }

    #[test]
    fn compaction_keeps_offsets_and_releases_big_buffers() {
        let mut q = OutQueue::default();
        q.track();
        for s in 1..=100u64 {
            push(&mut q, s, &[s as u8; 100]);
            q.transmitted(100);
            q.trim(s.saturating_sub(2));
            assert!(q.retained_bytes() <= 300);
        }
        assert!(
            q.bytes.len() <= 600,
            "dead bytes are released: {}",
            q.bytes.len()
        );
        q.rebind(Vec::new());
        assert_eq!(q.transmit()[0], 99, "the oldest kept frame is 99");
        q.transmitted(q.transmit().len());
        q.trim(100);
        assert_eq!(q.retained_bytes(), 0);
        push(&mut q, 101, &[0; 10_000]);
        q.transmitted(10_000);
        q.trim(101);
        assert_eq!(q.capacity(), 0, "a drained large buffer is released");
    }
}

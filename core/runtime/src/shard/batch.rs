//! Replies for the sessions of another shard, gathered during one loop pass and sent as one mesh
//! message ([`super::cx::Envelope::DeliverBatch`]) instead of one message, one buffer and one
//! wake-up check each.
//!
//! Layout: for each frame, the session id (8 bytes), the frame's length (4 bytes, both
//! little-endian), then the frame. A batch holds at most `runtime.mesh_batch` frames (the
//! sender flushes it then), each at most the server's largest frame.

use lattice_wire::SessionId;

/// Bytes before each frame: the session id and the length.
pub(crate) const HEADER: usize = 12;

/// The most a new batch reserves from the last one's size: one batch of large replies must not
/// make every later batch to that shard allocate that much for one small reply.
const RESERVE_MAX: usize = 16 * 1024;

/// Frames for sessions of one shard, in the order they were written.
#[derive(Default)]
pub(crate) struct FrameBatch {
    bytes: Vec<u8>,
    frames: usize,
    /// Bytes of the last batch sent: what the next one reserves first, so a pass that batches
    /// one reply allocates one reply's size and a busy pass (about 20 replies of 120 bytes at
    /// 8 × 8) grows its buffer about once. Reserved up to [`RESERVE_MAX`].
    last: usize,
}

impl FrameBatch {
    /// Appends a frame of `len` bytes for `session`, written by `write` (which appends to the
    /// vector it gets). Returns the frames now held. The length recorded is the one written, so
    /// a writer that wrote another length cannot desynchronise the batch. `len` must fit a `u32`
    /// (the caller checks). Cost: the frame's bytes and 12 more; a reallocation when it grows.
    pub(crate) fn push_with(
        &mut self,
        session: SessionId,
        len: usize,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> usize {
        if self.bytes.capacity() == 0 {
            self.bytes
                .reserve(self.last.min(RESERVE_MAX).max(HEADER + len));
        }
        let head = self.bytes.len();
        self.bytes
            .extend_from_slice(&session.as_u64().to_le_bytes());
        self.bytes.extend_from_slice(&[0; 4]);
        write(&mut self.bytes);
        let written = self.bytes.len() - head - HEADER;
        debug_assert_eq!(written, len, "deliver_with wrote a different length");
        let written = u32::try_from(written).unwrap_or_else(|_| {
            // Cannot happen for a length the caller checked; never leave a torn entry.
            self.bytes.truncate(head);
            0
        });
        if self.bytes.len() > head {
            self.bytes[head + 8..head + HEADER].copy_from_slice(&written.to_le_bytes());
            self.frames += 1;
        }
        self.frames
    }

    /// True when no frame waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.frames == 0
    }

    /// Takes the gathered bytes (`None` when no frame waits), leaving the batch empty.
    pub(crate) fn take(&mut self) -> Option<Vec<u8>> {
        if self.frames == 0 {
            return None;
        }
        self.frames = 0;
        self.last = self.bytes.len();
        Some(std::mem::take(&mut self.bytes))
    }
}

/// The frames of a batch, in order, as (session, frame). Stops at a truncated entry (the
/// sender writes whole entries, so this is a bug: logged, and the rest is dropped).
pub(crate) fn frames(mut bytes: &[u8]) -> impl Iterator<Item = (SessionId, &[u8])> {
    std::iter::from_fn(move || {
        let (id, rest) = bytes.split_first_chunk::<8>()?;
        let parsed = rest.split_first_chunk::<4>().and_then(|(len, rest)| {
            let len = u32::from_le_bytes(*len) as usize;
            Some((rest.get(..len)?, &rest[len..]))
        });
        let Some((frame, rest)) = parsed else {
            tracing::error!(left = bytes.len(), "truncated delivery batch; rest dropped");
            bytes = &[];
            return None;
        };
        bytes = rest;
        Some((SessionId::from_u64(u64::from_le_bytes(*id)), frame))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_out_in_order_with_their_sessions() {
        let mut b = FrameBatch::default();
        assert!(b.take().is_none(), "an empty batch sends nothing");
        let (s1, s2) = (SessionId::new(1, 7, 2), SessionId::new(1, 9, 1));
        assert_eq!(b.push_with(s1, 3, |v| v.extend_from_slice(b"abc")), 1);
        assert_eq!(b.push_with(s2, 0, |_| {}), 2);
        assert_eq!(b.push_with(s1, 2, |v| v.extend_from_slice(b"de")), 3);
        let bytes = b.take().expect("three frames");
        assert_eq!(bytes.len(), 3 * HEADER + 5);
        let got: Vec<_> = frames(&bytes).collect();
        assert_eq!(
            got,
            [(s1, &b"abc"[..]), (s2, &b""[..]), (s1, &b"de"[..])],
            "order, sessions and bytes kept"
        );
        assert!(b.take().is_none(), "taking empties the batch");
        assert_eq!(b.push_with(s2, 1, |v| v.push(b'x')), 1, "counts restart");
    }

    #[test]
    fn a_batch_of_large_frames_does_not_make_the_next_reserve_as_much() {
        let mut b = FrameBatch::default();
        let s = SessionId::new(1, 1, 1);
        let big = 100 * 1024;
        b.push_with(s, big, |v| v.resize(v.len() + big, 7));
        assert_eq!(b.take().unwrap().len(), HEADER + big);
        b.push_with(s, 1, |v| v.push(1));
        let next = b.take().unwrap();
        assert_eq!(next.len(), HEADER + 1);
        assert!(
            next.capacity() <= RESERVE_MAX + HEADER,
            "reserved {} after a {big}-byte batch",
            next.capacity()
        );
        // A small batch's size is what the next one reserves.
        b.push_with(s, 1, |v| v.push(2));
        assert!(
            b.bytes.capacity() < 2 * (HEADER + 1),
            "{}",
            b.bytes.capacity()
        );
    }

    #[test]
    fn a_truncated_batch_stops_without_reading_past_it() {
        let mut b = FrameBatch::default();
        let s = SessionId::new(0, 1, 1);
        b.push_with(s, 4, |v| v.extend_from_slice(b"wxyz"));
        b.push_with(s, 4, |v| v.extend_from_slice(b"full"));
        let bytes = b.take().unwrap();
        // Cut inside the second frame, then inside the first entry's header.
        let cut = &bytes[..bytes.len() - 1];
        assert_eq!(frames(cut).collect::<Vec<_>>(), [(s, &b"wxyz"[..])]);
        assert_eq!(frames(&bytes[..10]).count(), 0);
        assert_eq!(frames(&[]).count(), 0);
    }
}

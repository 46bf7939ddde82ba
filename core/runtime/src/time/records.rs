//! The timer wheel's slot lists: queues of slab indices ("records") in 64-byte blocks.
//!
//! Every slot of the wheel is a FIFO queue of records; a record is the slab index of one timer.
//! A record's *address* (`block << 4 | position`) is what the timer's slab entry points back at
//! (`Entry::link`). That back-pointer is the whole liveness test: a cancelled or rescheduled timer
//! is not looked up in its slot at all, its old record simply stops being pointed at, and it is
//! dropped when the slot is consumed (fired, cascaded) or compacted. The test is exact: an
//! address is not reused while a record sits at it, so no counter wrap can make a dead record
//! look live.
//!
//! Blocks come from chunks that are allocated once and never moved; freed blocks are reused LIFO.
//! Appending touches only the tail block (one cache line per slot, hot), so an insert never
//! reads another timer's entry.
//!
//! Knows nothing of levels, ticks or the slab: the wheel passes the liveness test in.

/// "No block", and the record value of a slot emptied by compaction.
pub(crate) const NIL: u32 = u32::MAX;

/// Records per block; word 15 links to the next block.
const PER_BLOCK: u32 = 15;
const NEXT_WORD: usize = 15;
const POS_BITS: u32 = 4;
const CHUNK_SHIFT: u32 = 8;
/// Blocks per chunk (16 KiB).
const CHUNK_BLOCKS: usize = 1 << CHUNK_SHIFT;
const CHUNK_MASK: u32 = (CHUNK_BLOCKS as u32) - 1;
/// Addresses are `u32`: at most `2^28` blocks.
const MAX_BLOCKS: u32 = 1 << (32 - POS_BITS);
/// Blocks beyond which new records (insert, reschedule) are refused. The gap to `MAX_BLOCKS`
/// covers what moves between slots can need on top (at most one partly filled block at each end
/// of each of the wheel's 385 lists), so a move never fails.
pub(crate) const MAX_BLOCKS_FOR_NEW: u32 = MAX_BLOCKS - 4096;

#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct Block {
    words: [u32; 16],
}

const EMPTY_BLOCK: Block = Block { words: [NIL; 16] };

/// One slot's queue. `head`/`tail` are block numbers (`NIL` when empty); positions count records
/// within the block.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RecordList {
    head: u32,
    head_pos: u32,
    tail: u32,
    tail_pos: u32,
}

impl RecordList {
    pub(crate) const EMPTY: RecordList = RecordList {
        head: NIL,
        head_pos: 0,
        tail: NIL,
        tail_pos: 0,
    };

    /// Whether the list holds no block. A list with blocks may still hold only dead or emptied
    /// records until it is consumed or compacted.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.head == NIL
    }
}

/// A position in a list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cursor {
    block: u32,
    pos: u32,
}

impl Cursor {
    #[inline]
    fn addr(self) -> u32 {
        (self.block << POS_BITS) | self.pos
    }
}

/// Room for the records of one block.
pub(crate) type Run = [u32; PER_BLOCK as usize];

/// Where an in-place compaction of one list stands: records before `write` are compacted, those
/// from `read` on are not looked at yet, those in between are `NIL`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Compaction {
    read: Cursor,
    write: Cursor,
}

/// What a [`RecordPool::compact`] call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Compacted {
    /// Steps used (at most the budget).
    pub(crate) steps: u32,
    /// Dead records dropped.
    pub(crate) dropped: u32,
    /// Whether the tail was reached: the list is compacted and truncated.
    pub(crate) done: bool,
}

/// The blocks of all slot lists of one wheel.
#[derive(Debug)]
pub(crate) struct RecordPool {
    chunks: Vec<Box<[Block; CHUNK_BLOCKS]>>,
    free: u32,
    in_use: u32,
    high_water: u32,
}

impl RecordPool {
    pub(crate) fn new() -> Self {
        Self {
            chunks: Vec::new(),
            free: NIL,
            in_use: 0,
            high_water: 0,
        }
    }

    /// Blocks holding records now.
    #[cfg(test)]
    pub(crate) fn blocks_in_use(&self) -> u32 {
        self.in_use
    }

    /// Whether a new record (insert, reschedule) may be added: false once `MAX_BLOCKS_FOR_NEW`
    /// blocks are in use (2^31 records, far beyond any `max_timers` that fits in memory).
    #[inline]
    pub(crate) fn has_room_for_new(&self) -> bool {
        self.in_use < MAX_BLOCKS_FOR_NEW
    }

    /// Bytes held by the chunks and the chunk table.
    pub(crate) fn allocated_bytes(&self) -> usize {
        self.chunks.len() * CHUNK_BLOCKS * std::mem::size_of::<Block>()
            + self.chunks.capacity() * std::mem::size_of::<Box<[Block; CHUNK_BLOCKS]>>()
    }

    #[inline]
    fn block(&self, b: u32) -> &Block {
        &self.chunks[(b >> CHUNK_SHIFT) as usize][(b & CHUNK_MASK) as usize]
    }

    #[inline]
    fn block_mut(&mut self, b: u32) -> &mut Block {
        &mut self.chunks[(b >> CHUNK_SHIFT) as usize][(b & CHUNK_MASK) as usize]
    }

    #[inline]
    fn alloc_block(&mut self) -> Option<u32> {
        let b = if self.free != NIL {
            let b = self.free;
            self.free = self.block(b).words[NEXT_WORD];
            b
        } else {
            if self.high_water >= MAX_BLOCKS {
                return None;
            }
            if self.high_water as usize >= self.chunks.len() * CHUNK_BLOCKS {
                self.chunks.push(Box::new([EMPTY_BLOCK; CHUNK_BLOCKS]));
            }
            self.high_water += 1;
            self.high_water - 1
        };
        self.block_mut(b).words[NEXT_WORD] = NIL;
        self.in_use += 1;
        Some(b)
    }

    #[inline]
    fn free_block(&mut self, b: u32) {
        let head = self.free;
        self.block_mut(b).words[NEXT_WORD] = head;
        self.free = b;
        self.in_use -= 1;
    }

    /// Appends `rec` to `list` and returns its address; `None` only when no block can be had
    /// (`MAX_BLOCKS` in use). Cost: one store into the tail block, plus a block from the free
    /// list every 15 records.
    #[inline]
    pub(crate) fn push(&mut self, list: &mut RecordList, rec: u32) -> Option<u32> {
        if list.tail == NIL {
            let b = self.alloc_block()?;
            *list = RecordList {
                head: b,
                head_pos: 0,
                tail: b,
                tail_pos: 0,
            };
        } else if list.tail_pos == PER_BLOCK {
            let b = self.alloc_block()?;
            let tail = list.tail;
            self.block_mut(tail).words[NEXT_WORD] = b;
            list.tail = b;
            list.tail_pos = 0;
        }
        let at = Cursor {
            block: list.tail,
            pos: list.tail_pos,
        };
        self.block_mut(at.block).words[at.pos as usize] = rec;
        list.tail_pos += 1;
        Some(at.addr())
    }

    /// The record at the head of `list` and its address, without taking it; frees used-up head
    /// blocks on the way and leaves the list `EMPTY` when nothing is left.
    #[inline(always)]
    pub(crate) fn front(&mut self, list: &mut RecordList) -> Option<(u32, u32)> {
        if list.head != NIL {
            let end = if list.head == list.tail {
                list.tail_pos
            } else {
                PER_BLOCK
            };
            if list.head_pos < end {
                let at = Cursor {
                    block: list.head,
                    pos: list.head_pos,
                };
                return Some((self.block(at.block).words[at.pos as usize], at.addr()));
            }
        }
        self.front_slow(list)
    }

    /// [`Self::front`] when the head block is used up (or the list empty).
    #[inline(never)]
    fn front_slow(&mut self, list: &mut RecordList) -> Option<(u32, u32)> {
        loop {
            if list.head == NIL {
                return None;
            }
            if list.head == list.tail && list.head_pos == list.tail_pos {
                self.free_block(list.head);
                *list = RecordList::EMPTY;
                return None;
            }
            if list.head_pos == PER_BLOCK {
                let next = self.block(list.head).words[NEXT_WORD];
                self.free_block(list.head);
                list.head = next;
                list.head_pos = 0;
                continue;
            }
            let at = Cursor {
                block: list.head,
                pos: list.head_pos,
            };
            return Some((self.block(at.block).words[at.pos as usize], at.addr()));
        }
    }

    /// Copies the records from the head of `list` to the end of its head block into `out` and
    /// returns how many and the address of the first (the others follow it). Nothing is taken:
    /// [`Self::consume`] takes what the caller used. Lets a consumer handle up to 15 records per
    /// call instead of one.
    #[inline]
    pub(crate) fn head_run(&mut self, list: &mut RecordList, out: &mut Run) -> (usize, u32) {
        if self.front(list).is_none() {
            return (0, 0);
        }
        let end = if list.head == list.tail {
            list.tail_pos
        } else {
            PER_BLOCK
        };
        let (from, to) = (list.head_pos as usize, end as usize);
        out[..to - from].copy_from_slice(&self.block(list.head).words[from..to]);
        let first = Cursor {
            block: list.head,
            pos: list.head_pos,
        };
        (to - from, first.addr())
    }

    /// Takes `n` records of the run [`Self::head_run`] returned.
    #[inline]
    pub(crate) fn consume(&mut self, list: &mut RecordList, n: usize) {
        debug_assert!(list.head != NIL && list.head_pos as usize + n <= PER_BLOCK as usize);
        list.head_pos += n as u32;
    }

    /// Takes the record [`Self::front`] returned.
    #[inline]
    pub(crate) fn pop_front(&mut self, list: &mut RecordList) {
        debug_assert!(list.head != NIL && list.head_pos < PER_BLOCK);
        list.head_pos += 1;
    }

    /// Starts compacting `list` at its head; `None` when the list is empty.
    pub(crate) fn start_compaction(&mut self, list: &mut RecordList) -> Option<Compaction> {
        self.front(list)?;
        let at = Cursor {
            block: list.head,
            pos: list.head_pos,
        };
        Some(Compaction {
            read: at,
            write: at,
        })
    }

    /// Runs an in-place, order-keeping compaction of `list` for at most `budget` steps (a step
    /// looks at one position or crosses a block boundary).
    ///
    /// `relocate(rec, from, to)` says whether the record `rec` at address `from` is live and, if
    /// it is, points the timer's entry at its new address `to` (which may equal `from`). Dead
    /// records are dropped. Appends to `list` between calls are fine; consuming it is not (drop
    /// the compaction first: the records it passed are `NIL`, which consumers skip).
    pub(crate) fn compact(
        &mut self,
        list: &mut RecordList,
        c: &mut Compaction,
        budget: u32,
        mut relocate: impl FnMut(u32, u32, u32) -> bool,
    ) -> Compacted {
        let mut out = Compacted::default();
        while out.steps < budget {
            out.steps += 1;
            if c.read.block == list.tail && c.read.pos == list.tail_pos {
                self.truncate(list, c.write);
                out.done = true;
                return out;
            }
            if c.read.pos == PER_BLOCK {
                c.read = Cursor {
                    block: self.block(c.read.block).words[NEXT_WORD],
                    pos: 0,
                };
                continue;
            }
            let from = c.read;
            let rec = std::mem::replace(
                &mut self.block_mut(from.block).words[from.pos as usize],
                NIL,
            );
            c.read.pos += 1;
            if rec == NIL {
                continue;
            }
            if c.write.pos == PER_BLOCK {
                // `write` trails `read`, so the next block exists.
                c.write = Cursor {
                    block: self.block(c.write.block).words[NEXT_WORD],
                    pos: 0,
                };
            }
            let to = c.write;
            if !relocate(rec, from.addr(), to.addr()) {
                out.dropped += 1;
                continue;
            }
            self.block_mut(to.block).words[to.pos as usize] = rec;
            c.write.pos += 1;
        }
        out
    }

    /// Every position of `list` from head to tail: (record, address). For test audits.
    #[cfg(test)]
    pub(crate) fn records(&self, list: &RecordList) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        if list.head == NIL {
            return out;
        }
        let mut c = Cursor {
            block: list.head,
            pos: list.head_pos,
        };
        while !(c.block == list.tail && c.pos == list.tail_pos) {
            if c.pos == PER_BLOCK {
                c = Cursor {
                    block: self.block(c.block).words[NEXT_WORD],
                    pos: 0,
                };
                continue;
            }
            out.push((self.block(c.block).words[c.pos as usize], c.addr()));
            c.pos += 1;
        }
        out
    }

    /// Makes `end` the list's tail and frees every block after it.
    fn truncate(&mut self, list: &mut RecordList, end: Cursor) {
        let mut b = self.block(end.block).words[NEXT_WORD];
        self.block_mut(end.block).words[NEXT_WORD] = NIL;
        while b != NIL {
            let next = self.block(b).words[NEXT_WORD];
            self.free_block(b);
            b = next;
        }
        list.tail = end.block;
        list.tail_pos = end.pos;
        // Normalise: an all-dead list becomes EMPTY.
        let _ = self.front(list);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(pool: &mut RecordPool, list: &mut RecordList) -> Vec<u32> {
        let mut out = Vec::new();
        while let Some((rec, _)) = pool.front(list) {
            pool.pop_front(list);
            if rec != NIL {
                out.push(rec);
            }
        }
        out
    }

    #[test]
    fn fifo_across_blocks_and_blocks_come_back() {
        let mut pool = RecordPool::new();
        let mut list = RecordList::EMPTY;
        let addrs: Vec<u32> = (0..100)
            .map(|i| pool.push(&mut list, i).expect("block"))
            .collect();
        let mut unique = addrs.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 100, "addresses are distinct");
        assert_eq!(pool.blocks_in_use(), 7, "100 records in blocks of 15");
        assert_eq!(drain(&mut pool, &mut list), (0..100).collect::<Vec<_>>());
        assert!(list.is_empty());
        assert_eq!(pool.blocks_in_use(), 0, "every block freed");
    }

    #[test]
    fn head_runs_cover_the_list_in_order() {
        let mut pool = RecordPool::new();
        let mut list = RecordList::EMPTY;
        let addrs: Vec<u32> = (0..50)
            .map(|i| pool.push(&mut list, i).expect("block"))
            .collect();
        pool.front(&mut list);
        pool.pop_front(&mut list);
        let mut run: Run = [0; PER_BLOCK as usize];
        let mut seen = Vec::new();
        loop {
            let (n, first) = pool.head_run(&mut list, &mut run);
            if n == 0 {
                break;
            }
            // Take at most 4 per call, to cross runs mid-block too.
            let take = n.min(4);
            for (k, rec) in run[..take].iter().enumerate() {
                assert_eq!(addrs[*rec as usize], first + k as u32);
                seen.push(*rec);
            }
            pool.consume(&mut list, take);
        }
        assert_eq!(seen, (1..50).collect::<Vec<_>>());
        assert!(list.is_empty());
        assert_eq!(pool.blocks_in_use(), 0);
    }

    #[test]
    fn front_reports_the_address_push_gave() {
        let mut pool = RecordPool::new();
        let mut list = RecordList::EMPTY;
        for i in 0..40 {
            let a = pool.push(&mut list, i).expect("block");
            if i == 0 {
                assert_eq!(pool.front(&mut list), Some((0, a)));
            }
        }
        for i in 0..40 {
            let (rec, _) = pool.front(&mut list).expect("record");
            assert_eq!(rec, i);
            pool.pop_front(&mut list);
        }
        assert_eq!(pool.front(&mut list), None);
    }

    /// Compaction keeps live records in order, drops dead ones, hands out the new addresses,
    /// tolerates appends between steps, and frees the blocks it empties.
    #[test]
    fn compaction_keeps_order_and_frees_blocks() {
        let mut pool = RecordPool::new();
        let mut list = RecordList::EMPTY;
        // rec -> current address; even records are live.
        let mut addr_of = std::collections::HashMap::new();
        for i in 0..200u32 {
            addr_of.insert(i, pool.push(&mut list, i).expect("block"));
        }
        // Take a few from the front first, so compaction starts mid-block.
        for _ in 0..3 {
            pool.front(&mut list);
            pool.pop_front(&mut list);
        }
        let before = pool.blocks_in_use();
        let mut c = pool.start_compaction(&mut list).expect("non-empty");
        let mut calls = 0;
        let mut dropped = 0;
        loop {
            if calls == 10 {
                for i in 200..210u32 {
                    addr_of.insert(i, pool.push(&mut list, i).expect("block"));
                }
            }
            let out = pool.compact(&mut list, &mut c, 5, |rec, from, to| {
                assert_eq!(addr_of[&rec], from, "record found where it was put");
                if rec % 2 == 0 {
                    addr_of.insert(rec, to);
                    true
                } else {
                    false
                }
            });
            assert!(out.steps <= 5);
            dropped += out.dropped;
            calls += 1;
            if out.done {
                break;
            }
            assert!(calls < 10_000);
        }
        assert_eq!(dropped, 104, "odd records of 3..210");
        assert!(pool.blocks_in_use() < before, "freed half the blocks");
        // Addresses handed out are where the records are now.
        let mut check = list;
        let mut seen = Vec::new();
        while let Some((rec, a)) = pool.front(&mut check) {
            assert_eq!(addr_of[&rec], a);
            seen.push(rec);
            pool.pop_front(&mut check);
        }
        let want: Vec<u32> = (3..210).filter(|r| r % 2 == 0).collect();
        assert_eq!(seen, want);
        assert_eq!(pool.blocks_in_use(), 0);
    }

    #[test]
    fn all_dead_list_compacts_to_empty() {
        let mut pool = RecordPool::new();
        let mut list = RecordList::EMPTY;
        for i in 0..31 {
            pool.push(&mut list, i).expect("block");
        }
        let mut c = pool.start_compaction(&mut list).expect("non-empty");
        while !pool.compact(&mut list, &mut c, 1, |_, _, _| false).done {}
        assert!(list.is_empty());
        assert_eq!(pool.blocks_in_use(), 0);
    }

    #[test]
    fn abandoned_compaction_leaves_a_consumable_list() {
        let mut pool = RecordPool::new();
        let mut list = RecordList::EMPTY;
        for i in 0..40 {
            pool.push(&mut list, i).expect("block");
        }
        let mut c = pool.start_compaction(&mut list).expect("non-empty");
        let out = pool.compact(&mut list, &mut c, 20, |rec, _, _| rec % 3 == 0);
        assert!(!out.done);
        // Dropped mid-way: the consumer sees the kept records, NILs (skipped), then the rest.
        let got = drain(&mut pool, &mut list);
        let mut want: Vec<u32> = (0..19).filter(|r| r % 3 == 0).collect();
        want.extend(19..40);
        assert_eq!(got, want);
        assert_eq!(pool.blocks_in_use(), 0);
    }
}

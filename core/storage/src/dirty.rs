//! The coalescing dirty map: the newest state of each dirty `(table, key)` since the last flush.
//!
//! Owns the map and the coalescing rule. Not thread-safe by itself (the storage threads share it
//! under a lock). Knows nothing of the journal, SQL or the database.

use super::{Op, TableId, Value};
use std::collections::HashMap;

/// The pending write for one key.
#[derive(Clone, Debug, PartialEq)]
pub struct DirtyEntry {
    /// Op to apply (after coalescing).
    pub op: Op,
    /// Column values (empty for deletes).
    pub values: Vec<Value>,
    /// Seq of the newest mark folded into this entry.
    pub seq: u64,
}

/// A dirty row by reference, as handed to the statement builders.
#[derive(Clone, Copy, Debug)]
pub struct RowRef<'a> {
    /// Table.
    pub table: TableId,
    /// Key values.
    pub key: &'a [Value],
    /// Coalesced write.
    pub entry: &'a DirtyEntry,
}

/// Per-table hash maps of dirty rows. Not thread-safe by itself: the write-behind layer guards it.
#[derive(Debug, Default)]
pub struct DirtyMap {
    tables: Vec<HashMap<Vec<Value>, DirtyEntry>>,
    len: usize,
    max_seq: u64,
}

/// Folds `new` into the pending op `old`: the newest op wins, except that an update of a row
/// inserted in the same window stays an insert.
pub fn coalesce(old: Op, new: Op) -> Op {
    match (old, new) {
        (Op::Insert, Op::Update) => Op::Insert,
        (_, n) => n,
    }
}

impl DirtyMap {
    /// A map for `tables` tables.
    pub fn new(tables: usize) -> DirtyMap {
        DirtyMap {
            tables: (0..tables).map(|_| HashMap::new()).collect(),
            len: 0,
            max_seq: 0,
        }
    }

    /// Records a mark; returns `true` when it was folded into an existing entry (coalesced).
    /// `table` must be below the table count given to [`DirtyMap::new`] (checked by the caller).
    pub fn mark(
        &mut self,
        table: TableId,
        key: Vec<Value>,
        op: Op,
        values: Vec<Value>,
        seq: u64,
    ) -> bool {
        self.max_seq = self.max_seq.max(seq);
        let Some(m) = self.tables.get_mut(table.index()) else {
            return false;
        };
        match m.get_mut(&key) {
            Some(e) => {
                e.op = coalesce(e.op, op);
                e.values = values;
                e.seq = seq;
                true
            }
            None => {
                m.insert(key, DirtyEntry { op, values, seq });
                self.len += 1;
                false
            }
        }
    }

    /// Distinct dirty rows.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is dirty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Highest seq ever marked (also after [`DirtyMap::take_map`]).
    pub fn max_seq(&self) -> u64 {
        self.max_seq
    }

    /// The pending write of one key, if dirty.
    pub fn get(&self, table: TableId, key: &[Value]) -> Option<&DirtyEntry> {
        self.tables.get(table.index())?.get(key)
    }

    /// Moves every dirty row into a new map (the flush snapshot) and leaves this one empty; the
    /// returned seq is the highest one the snapshot covers (marks enter in seq order).
    pub fn take_map(&mut self) -> (DirtyMap, u64) {
        let n = self.tables.len();
        let max = self.max_seq;
        let mut snap = std::mem::replace(self, DirtyMap::new(n));
        self.max_seq = max;
        snap.max_seq = max;
        (snap, max)
    }

    /// Iterates the rows by reference.
    pub fn rows(&self) -> impl Iterator<Item = RowRef<'_>> {
        self.tables.iter().enumerate().flat_map(|(i, m)| {
            m.iter().map(move |(k, e)| RowRef {
                table: TableId(i as u16),
                key: k,
                entry: e,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalescing_rules() {
        use Op::*;
        assert_eq!(coalesce(Insert, Update), Insert);
        assert_eq!(coalesce(Insert, Delete), Delete);
        assert_eq!(coalesce(Update, Update), Update);
        assert_eq!(coalesce(Update, Delete), Delete);
        assert_eq!(coalesce(Delete, Insert), Insert);
        assert_eq!(coalesce(Delete, Update), Update);
    }

    #[test]
    fn many_updates_one_entry() {
        let mut m = DirtyMap::new(2);
        let t = TableId(1);
        assert!(!m.mark(t, vec![Value::Int(1)], Op::Insert, vec![Value::Int(0)], 1));
        for s in 2..100 {
            assert!(m.mark(
                t,
                vec![Value::Int(1)],
                Op::Update,
                vec![Value::Int(s as i64)],
                s
            ));
        }
        assert!(!m.mark(TableId(0), vec![Value::Int(1)], Op::Delete, vec![], 100));
        assert_eq!(m.len(), 2);
        let e = m.get(t, &[Value::Int(1)]).expect("dirty");
        assert_eq!((e.op, e.seq), (Op::Insert, 99));
        let (snap, max) = m.take_map();
        assert_eq!(max, 100);
        assert_eq!(snap.rows().count(), 2);
        assert_eq!(m.max_seq(), 100);
        assert!(m.is_empty());
        assert!(m.get(t, &[Value::Int(1)]).is_none());
    }
}

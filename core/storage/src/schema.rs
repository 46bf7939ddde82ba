//! What services register and mark: table shapes ([`TableSpec`]), their ids ([`TableId`]), the
//! [`Schema`] a storage opens with, and the [`Op`] a mark applies to a row.
//!
//! Owns names and shapes only. Knows nothing of how rows are journaled, coalesced or written.

use super::ident::check_ident;
use super::migrate::Migration;
use super::StorageError;
use std::fmt;

/// What a mark does to a row. Insert and update carry the full row (every non-key column).
///
/// Coalescing between two flushes: the newest op wins, except that an `Update` after an `Insert` stays an
/// `Insert` (with the new values), so a row created and then changed is still created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Create the row, or overwrite it if it exists (an upsert: replaying it is harmless).
    Insert,
    /// Overwrite the non-key columns of an existing row (`UPDATE ... WHERE key`); no row, no effect.
    Update,
    /// Remove the row if it exists.
    Delete,
}

impl Op {
    pub(crate) fn code(self) -> u8 {
        match self {
            Op::Insert => 1,
            Op::Update => 2,
            Op::Delete => 3,
        }
    }

    pub(crate) fn from_code(c: u8) -> Option<Op> {
        match c {
            1 => Some(Op::Insert),
            2 => Some(Op::Update),
            3 => Some(Op::Delete),
            _ => None,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
        })
    }
}

/// Index of a registered table, returned by
/// [`StorageHandle::table`](super::StorageHandle::table). Cheap to copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableId(pub(crate) u16);

impl TableId {
    /// Position of the table in the [`Schema`] it was registered with.
    pub fn index(self) -> usize {
        self.0 as usize
    }

    /// Id of the first registered table (for building statements by hand in tests and tools).
    pub fn first() -> TableId {
        TableId(0)
    }
}

/// Shape of a table the write-behind layer writes: its name, key columns and the other columns, in the
/// order marks give their values. The table itself is created by a [`Migration`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSpec {
    pub(crate) name: String,
    pub(crate) key: Vec<String>,
    pub(crate) columns: Vec<String>,
}

impl TableSpec {
    /// Describes a table. Names must be `[A-Za-z0-9_]{1,64}` (they are spliced into SQL); at least one
    /// key column is required. Fails with [`StorageError::Schema`] otherwise.
    pub fn new(name: &str, key: &[&str], columns: &[&str]) -> Result<TableSpec, StorageError> {
        check_ident(name)?;
        if key.is_empty() {
            return Err(StorageError::Schema(format!("table {name}: no key column")));
        }
        for c in key.iter().chain(columns) {
            check_ident(c)?;
        }
        let mut all: Vec<&str> = key.iter().chain(columns).copied().collect();
        all.sort_unstable();
        if all.windows(2).any(|w| w[0] == w[1]) {
            return Err(StorageError::Schema(format!(
                "table {name}: duplicate column"
            )));
        }
        Ok(TableSpec {
            name: name.to_owned(),
            key: key.iter().map(|s| (*s).to_owned()).collect(),
            columns: columns.iter().map(|s| (*s).to_owned()).collect(),
        })
    }

    /// Table name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Key column names.
    pub fn key(&self) -> &[String] {
        &self.key
    }

    /// Non-key column names, in mark order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }
}

/// Tables and migrations a [`Storage`](super::Storage) is opened with.
#[derive(Clone, Debug, Default)]
pub struct Schema {
    pub(crate) tables: Vec<TableSpec>,
    pub(crate) migrations: Vec<Migration>,
}

impl Schema {
    /// An empty schema.
    pub fn new() -> Schema {
        Schema::default()
    }

    /// Adds a table; fails with [`StorageError::Schema`] on a duplicate name or past 65,535 tables.
    pub fn table(mut self, spec: TableSpec) -> Result<Schema, StorageError> {
        if self.tables.iter().any(|t| t.name == spec.name) {
            return Err(StorageError::Schema(format!(
                "table {} registered twice",
                spec.name
            )));
        }
        if self.tables.len() >= u16::MAX as usize {
            return Err(StorageError::Schema("too many tables".into()));
        }
        self.tables.push(spec);
        Ok(self)
    }

    /// Adds a migration (applied in version order when `auto_migrate` is on).
    pub fn migration(mut self, m: Migration) -> Schema {
        self.migrations.push(m);
        self
    }

    /// The registered migrations.
    pub fn migrations(&self) -> &[Migration] {
        &self.migrations
    }

    /// The registered tables.
    pub fn tables(&self) -> &[TableSpec] {
        &self.tables
    }
}

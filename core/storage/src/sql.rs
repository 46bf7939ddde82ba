//! SQL text for each backend dialect: batched upserts and deletes, single-row updates and selects.
//!
//! Identifiers are checked to be `[A-Za-z0-9_]` when the [`TableSpec`] is built, so they are spliced in
//! quoted; values always travel as bound parameters.
//!
//! Owns statement text and batching (pure functions). Knows nothing of connections, execution or
//! retries.

// Defined with the backend contract (a backend reports its dialect); also named here, where the
// statement text depends on it.
pub use super::backend::Dialect;
use super::dirty::RowRef;
use super::metrics::StmtKind;
use super::{Op, TableId, TableSpec, Value};

/// One statement, executed once per parameter set.
#[derive(Clone, Debug, PartialEq)]
pub struct Stmt {
    /// SQL with `?` placeholders.
    pub sql: String,
    /// One or more parameter sets (more than one: the same statement per row, e.g. updates).
    pub params: Vec<Vec<Value>>,
    /// Kind for the metrics.
    pub kind: StmtKind,
    /// Rows the statement writes.
    pub rows: usize,
}

/// Rows of one table with one op, written together.
#[derive(Clone, Debug)]
pub struct Batch<'a> {
    /// Table.
    pub table: TableId,
    /// Op of every row.
    pub op: Op,
    /// The rows.
    pub rows: Vec<RowRef<'a>>,
}

fn q(d: Dialect, ident: &str) -> String {
    match d {
        Dialect::Mysql => format!("`{ident}`"),
        Dialect::Sqlite => format!("\"{ident}\""),
    }
}

fn placeholders(n: usize) -> String {
    let mut s = String::with_capacity(n * 2 + 2);
    s.push('(');
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        s.push('?');
    }
    s.push(')');
    s
}

/// Parameter bytes above which a batch is closed, well under MariaDB's default
/// `max_allowed_packet` (16 MiB); a single larger row still gets its own statement.
pub const MAX_STMT_BYTES: usize = 4 << 20;

/// Largest rows per statement that keeps the placeholders under both servers' limits (MySQL 65,535,
/// SQLite 32,766).
pub fn max_rows(spec: &TableSpec, wanted: usize) -> usize {
    let per_row = (spec.key.len() + spec.columns.len()).max(1);
    wanted.clamp(1, (32_000 / per_row).max(1))
}

/// Groups a snapshot into batches per (table, op) of at most `batch_rows` rows (capped by
/// [`max_rows`]). Deletes come after inserts and updates of the same table; updates go one row per
/// statement.
pub fn plan<'a>(
    tables: &[TableSpec],
    rows: impl Iterator<Item = RowRef<'a>>,
    batch_rows: usize,
) -> Vec<Batch<'a>> {
    let mut rows: Vec<RowRef<'a>> = rows.collect();
    rows.sort_by_key(|r| (r.table, r.entry.op as u8));
    let mut out: Vec<Batch<'a>> = Vec::new();
    let mut bytes = 0usize;
    for r in rows {
        let limit = match tables.get(r.table.index()) {
            Some(spec) => max_rows(spec, batch_rows),
            None => 1,
        };
        let size: usize = r
            .key
            .iter()
            .chain(&r.entry.values)
            .map(Value::encoded_len)
            .sum();
        match out.last_mut() {
            Some(b)
                if b.table == r.table
                    && b.op == r.entry.op
                    && b.rows.len() < limit
                    && bytes + size <= MAX_STMT_BYTES =>
            {
                bytes += size;
                b.rows.push(r)
            }
            _ => {
                bytes = size;
                out.push(Batch {
                    table: r.table,
                    op: r.entry.op,
                    rows: vec![r],
                })
            }
        }
    }
    out
}

/// The statement for a batch.
pub fn batch_stmt(d: Dialect, spec: &TableSpec, b: &Batch<'_>) -> Stmt {
    match b.op {
        Op::Insert => upsert(d, spec, &b.rows),
        Op::Update => update(d, spec, &b.rows),
        Op::Delete => delete(d, spec, &b.rows),
    }
}

/// Multi-row insert-or-overwrite.
pub fn upsert(d: Dialect, spec: &TableSpec, rows: &[RowRef<'_>]) -> Stmt {
    let cols: Vec<String> = spec
        .key
        .iter()
        .chain(&spec.columns)
        .map(|c| q(d, c))
        .collect();
    let mut sql = format!(
        "INSERT INTO {} ({}) VALUES ",
        q(d, &spec.name),
        cols.join(",")
    );
    let ph = placeholders(cols.len());
    let mut params = Vec::with_capacity(rows.len() * cols.len());
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(&ph);
        params.extend(r.key.iter().cloned());
        params.extend(r.entry.values.iter().cloned());
    }
    match d {
        Dialect::Mysql => {
            sql.push_str(" ON DUPLICATE KEY UPDATE ");
            let set: Vec<String> = if spec.columns.is_empty() {
                vec![format!("{0}={0}", q(d, &spec.key[0]))]
            } else {
                spec.columns
                    .iter()
                    .map(|c| format!("{0}=VALUES({0})", q(d, c)))
                    .collect()
            };
            sql.push_str(&set.join(","));
        }
        Dialect::Sqlite => {
            let keys: Vec<String> = spec.key.iter().map(|c| q(d, c)).collect();
            sql.push_str(&format!(" ON CONFLICT({}) DO ", keys.join(",")));
            if spec.columns.is_empty() {
                sql.push_str("NOTHING");
            } else {
                let set: Vec<String> = spec
                    .columns
                    .iter()
                    .map(|c| format!("{0}=excluded.{0}", q(d, c)))
                    .collect();
                sql.push_str("UPDATE SET ");
                sql.push_str(&set.join(","));
            }
        }
    }
    Stmt {
        sql,
        params: vec![params],
        kind: StmtKind::Insert,
        rows: rows.len(),
    }
}

fn key_where(d: Dialect, spec: &TableSpec) -> String {
    let w: Vec<String> = spec.key.iter().map(|c| format!("{}=?", q(d, c))).collect();
    w.join(" AND ")
}

/// `UPDATE ... WHERE key`, one parameter set per row. A table without non-key columns has nothing to
/// update: the statement then has no parameter sets.
pub fn update(d: Dialect, spec: &TableSpec, rows: &[RowRef<'_>]) -> Stmt {
    let set: Vec<String> = spec
        .columns
        .iter()
        .map(|c| format!("{}=?", q(d, c)))
        .collect();
    let sql = format!(
        "UPDATE {} SET {} WHERE {}",
        q(d, &spec.name),
        set.join(","),
        key_where(d, spec)
    );
    let params = if spec.columns.is_empty() {
        Vec::new()
    } else {
        rows.iter()
            .map(|r| r.entry.values.iter().chain(r.key).cloned().collect())
            .collect()
    };
    Stmt {
        sql,
        params,
        kind: StmtKind::Update,
        rows: rows.len(),
    }
}

/// Multi-row delete by key (`IN (...)`, row values for composite keys).
pub fn delete(d: Dialect, spec: &TableSpec, rows: &[RowRef<'_>]) -> Stmt {
    let keys: Vec<String> = spec.key.iter().map(|c| q(d, c)).collect();
    let (lhs, ph) = if keys.len() == 1 {
        (keys[0].clone(), "?".to_owned())
    } else {
        (format!("({})", keys.join(",")), placeholders(keys.len()))
    };
    let list: Vec<&str> = rows.iter().map(|_| ph.as_str()).collect();
    let sql = format!(
        "DELETE FROM {} WHERE {} IN ({})",
        q(d, &spec.name),
        lhs,
        list.join(",")
    );
    let params = rows.iter().flat_map(|r| r.key.iter().cloned()).collect();
    Stmt {
        sql,
        params: vec![params],
        kind: StmtKind::Delete,
        rows: rows.len(),
    }
}

/// `SELECT columns FROM t WHERE key`.
pub fn select_one(d: Dialect, spec: &TableSpec, key: &[Value]) -> Stmt {
    let cols: Vec<String> = if spec.columns.is_empty() {
        vec![q(d, &spec.key[0])]
    } else {
        spec.columns.iter().map(|c| q(d, c)).collect()
    };
    let sql = format!(
        "SELECT {} FROM {} WHERE {}",
        cols.join(","),
        q(d, &spec.name),
        key_where(d, spec)
    );
    Stmt {
        sql,
        params: vec![key.to_vec()],
        kind: StmtKind::Select,
        rows: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::super::dirty::DirtyEntry;
    use super::*;

    fn entry(k: i64, op: Op) -> (Vec<Value>, DirtyEntry) {
        (
            vec![Value::Int(k)],
            DirtyEntry {
                op,
                values: vec![Value::Int(k * 10), Value::Null],
                seq: k as u64,
            },
        )
    }

    fn refs(rows: &[(Vec<Value>, DirtyEntry)]) -> Vec<RowRef<'_>> {
        rows.iter()
            .map(|(k, e)| RowRef {
                table: TableId(0),
                key: k,
                entry: e,
            })
            .collect()
    }

    #[test]
    fn statements() {
        let spec = TableSpec::new("kv", &["id"], &["val", "note"]).expect("spec");
        let owned = [entry(1, Op::Insert), entry(2, Op::Insert)];
        let rows = refs(&owned);
        let s = upsert(Dialect::Mysql, &spec, &rows);
        assert_eq!(
            s.sql,
            "INSERT INTO `kv` (`id`,`val`,`note`) VALUES (?,?,?),(?,?,?) ON DUPLICATE KEY UPDATE `val`=VALUES(`val`),`note`=VALUES(`note`)"
        );
        assert_eq!(s.params[0].len(), 6);
        let s = upsert(Dialect::Sqlite, &spec, &rows);
        assert!(s.sql.ends_with("ON CONFLICT(\"id\") DO UPDATE SET \"val\"=excluded.\"val\",\"note\"=excluded.\"note\""), "{}", s.sql);
        let s = delete(Dialect::Mysql, &spec, &rows);
        assert_eq!(s.sql, "DELETE FROM `kv` WHERE `id` IN (?,?)");
        let spec2 = TableSpec::new("pair", &["a", "b"], &[]).expect("spec");
        let key = vec![Value::Int(1), Value::Int(2)];
        let e = DirtyEntry {
            op: Op::Delete,
            values: vec![],
            seq: 1,
        };
        let r = RowRef {
            table: TableId(0),
            key: &key,
            entry: &e,
        };
        let s = delete(Dialect::Sqlite, &spec2, &[r, r]);
        assert_eq!(
            s.sql,
            "DELETE FROM \"pair\" WHERE (\"a\",\"b\") IN ((?,?),(?,?))"
        );
        let s = update(Dialect::Mysql, &spec, &rows);
        assert_eq!(s.sql, "UPDATE `kv` SET `val`=?,`note`=? WHERE `id`=?");
        assert_eq!(
            s.params,
            vec![
                vec![Value::Int(10), Value::Null, Value::Int(1)],
                vec![Value::Int(20), Value::Null, Value::Int(2)],
            ]
        );
    }

    #[test]
    fn plan_groups_and_caps() {
        let spec = TableSpec::new("kv", &["id"], &["val", "note"]).expect("spec");
        let mut owned: Vec<(Vec<Value>, DirtyEntry)> =
            (0..25).map(|k| entry(k, Op::Insert)).collect();
        owned.extend((100..103).map(|k| entry(k, Op::Delete)));
        owned.push(entry(200, Op::Update));
        let b = plan(std::slice::from_ref(&spec), refs(&owned).into_iter(), 10);
        let shape: Vec<(Op, usize)> = b.iter().map(|b| (b.op, b.rows.len())).collect();
        assert_eq!(
            shape,
            vec![
                (Op::Insert, 10),
                (Op::Insert, 10),
                (Op::Insert, 5),
                (Op::Update, 1),
                (Op::Delete, 3)
            ]
        );
        assert_eq!(max_rows(&spec, 1_000_000), 32_000 / 3);
        // Byte cap: 3 MiB rows go one per statement.
        let big: Vec<(Vec<Value>, DirtyEntry)> = (0..3)
            .map(|k| {
                (
                    vec![Value::Int(k)],
                    DirtyEntry {
                        op: Op::Insert,
                        values: vec![Value::Bytes(vec![0; 3 << 20]), Value::Null],
                        seq: 1,
                    },
                )
            })
            .collect();
        let b = plan(std::slice::from_ref(&spec), refs(&big).into_iter(), 500);
        assert_eq!(
            b.iter().map(|b| b.rows.len()).collect::<Vec<_>>(),
            vec![1, 1, 1]
        );
    }
}

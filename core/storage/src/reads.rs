//! The read path: `load` and `query` requests travel through a bounded queue to the flusher thread,
//! where each runs as a local task (at most `pool_max` at once). A load answers from the dirty map,
//! then from the snapshot the flusher is writing, and only then with a `SELECT`, so a read never sees
//! older data than a write acknowledged before it. A row with an acknowledged write the database
//! refused (a SQL-class dump record) is not read from the database at all.
//!
//! Owns the read queue and the read tasks. Knows nothing of the journal, the dump file's format or
//! how the flusher writes.

use super::backend::{Backend, DbError, ErrorClass};
use super::connect::AnyBackend;
use super::dirty::DirtyMap;
use super::dump::row_id;
use super::metrics::StmtKind;
use super::shared::{lock, Shared};
use super::sql;
use super::ticket::{AckGuard, LoadTicket, QueryTicket, Slot};
use super::{Op, StorageError, TableId, Value};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc::error::TrySendError;

/// The snapshot the flusher has taken from the dirty map and not yet persisted (`None` between
/// flushes). Lives on the flusher thread only.
pub(crate) type InFlight = Rc<RefCell<Option<Rc<DirtyMap>>>>;

/// Rows (`dump::row_id`) with a SQL-class record in the dump file, and the newest such record's
/// seq. The flusher keeps it; a load of such a row fails, because the database holds an older
/// state than the acknowledged one in the record, and a write built from that older state would
/// reach the database and drop the record (a newer write supersedes it). Lives on the flusher
/// thread only.
pub(crate) type SqlDumped = Rc<RefCell<HashMap<String, u64>>>;

pub(crate) enum ReadReq {
    Load {
        table: TableId,
        key: Vec<Value>,
        ack: AckGuard<Option<Vec<Value>>>,
    },
    Query {
        sql: String,
        params: Vec<Value>,
        ack: AckGuard<Vec<Vec<Value>>>,
    },
}

impl ReadReq {
    /// Drops a request that was never queued without completing its ticket: the caller gets the
    /// error instead.
    fn disarm(self) {
        match self {
            ReadReq::Load { ack, .. } => ack.disarm(),
            ReadReq::Query { ack, .. } => ack.disarm(),
        }
    }
}

/// The sending side of the read queue, held by every handle.
#[derive(Clone)]
pub(crate) struct ReadQueue(tokio::sync::mpsc::Sender<ReadReq>);

/// A read queue of `capacity` requests: the handles' side and the flusher's side.
pub(crate) fn queue(capacity: usize) -> (ReadQueue, tokio::sync::mpsc::Receiver<ReadReq>) {
    let (tx, rx) = tokio::sync::mpsc::channel(capacity);
    (ReadQueue(tx), rx)
}

impl ReadQueue {
    /// Queues a load of a validated key.
    pub(crate) fn load(
        &self,
        shared: &Shared,
        table: TableId,
        key: Vec<Value>,
    ) -> Result<LoadTicket, StorageError> {
        let slot = Slot::new();
        self.send(
            shared,
            ReadReq::Load {
                table,
                key,
                ack: AckGuard::new(slot.clone()),
            },
        )?;
        Ok(LoadTicket(slot))
    }

    /// Queues a diagnostic query.
    pub(crate) fn query(
        &self,
        shared: &Shared,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<QueryTicket, StorageError> {
        let slot = Slot::new();
        self.send(
            shared,
            ReadReq::Query {
                sql: sql.to_owned(),
                params,
                ack: AckGuard::new(slot.clone()),
            },
        )?;
        Ok(QueryTicket(slot))
    }

    fn send(&self, shared: &Shared, r: ReadReq) -> Result<(), StorageError> {
        match self.0.try_send(r) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(r)) => {
                shared.metrics.backpressure.fetch_add(1, Ordering::Relaxed);
                r.disarm();
                Err(StorageError::Backpressure(shared.config.read_queue))
            }
            Err(TrySendError::Closed(r)) => {
                r.disarm();
                Err(StorageError::Closed)
            }
        }
    }
}

/// Serves read requests until every handle is gone or the runtime stops. Runs on the flusher
/// thread's `LocalSet`, sharing its connection.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    backend: Rc<AnyBackend>,
    in_flight: InFlight,
    sql_dumped: SqlDumped,
    mut rx: tokio::sync::mpsc::Receiver<ReadReq>,
) {
    // At most `pool_max` reads run at once; the rest wait in the bounded queue.
    let permits = Arc::new(tokio::sync::Semaphore::new(shared.config.pool_max));
    while let Some(req) = rx.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (shared, backend, in_flight, sql_dumped) = (
            shared.clone(),
            backend.clone(),
            in_flight.clone(),
            sql_dumped.clone(),
        );
        tokio::task::spawn_local(async move {
            let _permit = permit;
            match req {
                ReadReq::Load { table, key, ack } => {
                    let hit = {
                        let d = lock(&shared.dirty);
                        d.get(table, &key).cloned()
                    }
                    .or_else(|| {
                        in_flight
                            .borrow()
                            .as_ref()
                            .and_then(|m| m.get(table, &key).cloned())
                    });
                    if let Some(e) = hit {
                        shared.metrics.dirty_reads.fetch_add(1, Ordering::Relaxed);
                        ack.done(Ok((e.op != Op::Delete).then_some(e.values)));
                        return;
                    }
                    if shared.dump_network_pending.load(Ordering::Acquire) > 0 {
                        // The database may hold an older row than a dumped record: refuse
                        // rather than answer stale data. Replay empties this within a flush
                        // interval of the database coming back.
                        ack.done(Err(StorageError::Db(DbError::network(
                            "writes dumped during a database outage are not replayed yet; retry later",
                        ))));
                        return;
                    }
                    let spec = &shared.tables[table.index()];
                    if sql_dumped.borrow().contains_key(&row_id(&spec.name, &key)) {
                        // The acknowledged state of this row is in the dump file, not in the
                        // database: refuse until it is replayed (at a start, once the database
                        // takes it) or an operator removes it.
                        ack.done(Err(StorageError::Db(DbError {
                            class: ErrorClass::Sql,
                            code: None,
                            message: format!(
                                "a write of this {} row failed with a SQL error and waits in the dump file; it cannot be read until that record is replayed or removed",
                                spec.name
                            ),
                        })));
                        return;
                    }
                    let st = sql::select_one(backend.dialect(), spec, &key);
                    let t0 = Instant::now();
                    let r = backend.query_row(&st.sql, &key).await;
                    shared.metrics.statement(
                        StmtKind::Select,
                        u64::from(matches!(r, Ok(Some(_)))),
                        t0.elapsed(),
                        r.is_ok(),
                    );
                    ack.done(r.map_err(StorageError::from).map(|row| {
                        row.map(|v| {
                            if spec.columns.is_empty() {
                                Vec::new()
                            } else {
                                v
                            }
                        })
                    }));
                }
                ReadReq::Query { sql, params, ack } => {
                    let t0 = Instant::now();
                    let r = backend.query_all(&sql, &params).await;
                    let rows = r.as_ref().map_or(0, |v| v.len() as u64);
                    shared
                        .metrics
                        .statement(StmtKind::of_sql(&sql), rows, t0.elapsed(), r.is_ok());
                    ack.done(r.map_err(StorageError::from));
                }
            }
        });
    }
}

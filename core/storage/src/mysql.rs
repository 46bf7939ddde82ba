//! MySQL / MariaDB backend over `mysql_async`: a connection pool, prepared statements (cached per
//! connection by the driver), a time limit on every call, and error classification by server code.
//!
//! Implements `backend::Backend`; knows nothing of the write-behind layer above it.

use super::backend::{Backend, DbError, Dialect, ErrorClass};
use super::config::StorageConfig;
use super::Value;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts};
use std::future::Future;
use std::time::Duration;

/// Server error codes that mean "try again" rather than "this statement is wrong": too many
/// connections, shutdown in progress, lock wait timeout, deadlock, network read/write errors (not
/// 1153, packet too large: that is the statement's fault),
/// connection killed, read-only (failover), server gone away / lost (client-side codes).
const RETRYABLE: &[u16] = &[
    1040, 1053, 1077, 1152, 1154, 1155, 1156, 1157, 1158, 1159, 1160, 1161, 1205, 1213, 1290, 1927,
    2002, 2003, 2006, 2013,
];

/// Pool of connections to one database.
pub struct MysqlBackend {
    pool: Pool,
    timeout: Duration,
}

/// Sorts a driver error into retry / dump / config.
pub fn classify(e: mysql_async::Error) -> DbError {
    use mysql_async::{DriverError as D, Error as E};
    match e {
        E::Server(s) => DbError {
            class: if RETRYABLE.contains(&s.code) {
                ErrorClass::Network
            } else {
                ErrorClass::Sql
            },
            code: Some(i64::from(s.code)),
            message: format!("{} (SQLSTATE {})", s.message, s.state),
        },
        E::Io(e) => DbError::network(e.to_string()),
        E::Driver(d) => {
            let network = matches!(
                d,
                D::ConnectionClosed
                    | D::PoolDisconnected
                    | D::PacketOutOfOrder
                    | D::UnexpectedPacket { .. }
                    | D::BadCompressedPacketHeader
            );
            DbError {
                class: if network {
                    ErrorClass::Network
                } else {
                    ErrorClass::Sql
                },
                code: None,
                message: d.to_string(),
            }
        }
        E::Url(u) => DbError::config(u.to_string()),
        E::Other(o) => DbError::network(o.to_string()),
    }
}

fn to_my(v: &Value) -> mysql_async::Value {
    use mysql_async::Value as M;
    match v {
        Value::Null => M::NULL,
        Value::Int(i) => M::Int(*i),
        Value::UInt(u) => M::UInt(*u),
        Value::Float(f) => M::Double(*f),
        Value::Text(s) => M::Bytes(s.as_bytes().to_vec()),
        Value::Bytes(b) => M::Bytes(b.clone()),
    }
}

fn from_my(v: mysql_async::Value) -> Value {
    use mysql_async::Value as M;
    match v {
        M::NULL => Value::Null,
        M::Int(i) => Value::Int(i),
        M::UInt(u) => Value::UInt(u),
        M::Float(f) => Value::Float(f64::from(f)),
        M::Double(f) => Value::Float(f),
        M::Bytes(b) => match String::from_utf8(b) {
            Ok(s) => Value::Text(s),
            Err(e) => Value::Bytes(e.into_bytes()),
        },
        M::Date(y, mo, d, h, mi, s, us) => Value::Text(format!(
            "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}"
        )),
        M::Time(neg, d, h, mi, s, us) => Value::Text(format!(
            "{}{}:{mi:02}:{s:02}.{us:06}",
            if neg { "-" } else { "" },
            u64::from(d) * 24 + u64::from(h)
        )),
    }
}

fn params(p: &[Value]) -> mysql_async::Params {
    if p.is_empty() {
        mysql_async::Params::Empty
    } else {
        mysql_async::Params::Positional(p.iter().map(to_my).collect())
    }
}

impl MysqlBackend {
    /// Connects to `config.url`, database [`StorageConfig::database_name`]. With `auto_migrate`, the
    /// database is created first if missing. Fails with a [`DbError`] (network class when the server
    /// is unreachable).
    pub async fn connect(config: &StorageConfig) -> Result<MysqlBackend, DbError> {
        let url = config
            .url
            .as_deref()
            .ok_or_else(|| DbError::config("mysql backend needs url"))?;
        let opts =
            Opts::from_url(url).map_err(|e| DbError::config(format!("bad mysql url: {e}")))?;
        let db = config.database_name();
        let timeout = Duration::from_millis(config.op_timeout_ms);
        if config.auto_migrate {
            let builder = OptsBuilder::from_opts(opts.clone()).db_name(None::<String>);
            let fut = async {
                let mut c = Conn::new(builder).await.map_err(classify)?;
                c.query_drop(format!(
                    "CREATE DATABASE IF NOT EXISTS `{db}` CHARACTER SET utf8mb4"
                ))
                .await
                .map_err(classify)?;
                c.disconnect().await.map_err(classify)
            };
            with_timeout(timeout, fut).await?;
        }
        let constraints = PoolConstraints::new(config.pool_min, config.pool_max)
            .ok_or_else(|| DbError::config("pool_min must be <= pool_max"))?;
        let pool_opts = PoolOpts::default()
            .with_constraints(constraints)
            .with_inactive_connection_ttl(Duration::from_secs(60));
        let builder = OptsBuilder::from_opts(opts)
            .db_name(Some(db))
            .pool_opts(pool_opts)
            .stmt_cache_size(256)
            .prefer_socket(false);
        let b = MysqlBackend {
            pool: Pool::new(builder),
            timeout,
        };
        b.ping().await?;
        Ok(b)
    }

    async fn conn(&self) -> Result<Conn, DbError> {
        with_timeout(self.timeout, async {
            self.pool.get_conn().await.map_err(classify)
        })
        .await
    }
}

async fn with_timeout<T>(
    t: Duration,
    f: impl Future<Output = Result<T, DbError>>,
) -> Result<T, DbError> {
    match tokio::time::timeout(t, f).await {
        Ok(r) => r,
        Err(_) => Err(DbError::network(format!("timed out after {t:?}"))),
    }
}

impl Backend for MysqlBackend {
    fn dialect(&self) -> Dialect {
        Dialect::Mysql
    }

    async fn exec(&self, sql: &str, params_sets: &[Vec<Value>]) -> Result<u64, DbError> {
        if params_sets.is_empty() {
            return Ok(0);
        }
        let mut c = self.conn().await?;
        with_timeout(self.timeout, async {
            let mut affected = 0;
            for p in params_sets {
                c.exec_drop(sql, params(p)).await.map_err(classify)?;
                affected += c.affected_rows();
            }
            Ok(affected)
        })
        .await
    }

    async fn exec_script(&self, statements: &[String]) -> Result<(), DbError> {
        let mut c = self.conn().await?;
        with_timeout(self.timeout, async {
            for s in statements {
                c.query_drop(s.as_str()).await.map_err(classify)?;
            }
            Ok(())
        })
        .await
    }

    async fn query_row(&self, sql: &str, p: &[Value]) -> Result<Option<Vec<Value>>, DbError> {
        let mut c = self.conn().await?;
        with_timeout(self.timeout, async {
            let row: Option<mysql_async::Row> =
                c.exec_first(sql, params(p)).await.map_err(classify)?;
            Ok(row.map(|r| r.unwrap().into_iter().map(from_my).collect()))
        })
        .await
    }

    async fn query_all(&self, sql: &str, p: &[Value]) -> Result<Vec<Vec<Value>>, DbError> {
        let mut c = self.conn().await?;
        with_timeout(self.timeout, async {
            let rows: Vec<mysql_async::Row> = c.exec(sql, params(p)).await.map_err(classify)?;
            Ok(rows
                .into_iter()
                .map(|r| r.unwrap().into_iter().map(from_my).collect())
                .collect())
        })
        .await
    }

    async fn ping(&self) -> Result<(), DbError> {
        let mut c = self.conn().await?;
        with_timeout(self.timeout, async { c.ping().await.map_err(classify) }).await
    }

    async fn flush_begin(&self) -> Result<(), DbError> {
        Ok(())
    }

    async fn flush_end(&self) -> Result<(), DbError> {
        Ok(())
    }

    async fn close(self) {
        let _ = tokio::time::timeout(self.timeout, self.pool.disconnect()).await;
    }
}

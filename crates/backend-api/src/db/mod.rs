//! Persistence through `sqlx`'s `Any` driver: SQLite as the embedded default,
//! PostgreSQL for the cluster, one set of portable statements and migrations
//! (`migrations/*.sql`, see [`migrate`]).
//!
//! One file per repository: [`pipelines`], [`files`], [`executions`] (records
//! and steps) and [`liveness`] (heartbeats, reaping and requeueing). All of
//! them are methods on [`Db`], so callers hold one handle.
//!
//! Portable means: TEXT, BIGINT and DOUBLE PRECISION columns only (booleans are
//! 0/1, JSON is TEXT, times are [`Timestamp`]s stored as RFC 3339 text plus
//! epoch milliseconds where we compare or sort), `$N` placeholders in
//! increasing order, and `ON CONFLICT DO NOTHING`, which both databases
//! understand. Statuses are bound from their enums, never spelled in SQL.
//!
//! NULL parameters: with the `Any` driver a cached PostgreSQL statement keeps
//! the parameter types of its first call, so a NULL number there breaks a
//! later real one ("incorrect binary data format"). Statements that bind a
//! number that may be NULL are therefore not cached (`persistent(false)`).

use std::time::Duration;

use serde::{Serialize, de::DeserializeOwned};
use sqlx::{AnyPool, any::AnyPoolOptions};

pub mod executions;
pub mod files;
pub mod liveness;
pub mod migrate;
pub mod pipelines;
mod timestamp;

#[cfg(test)]
mod tests;

pub use executions::{ExecutionCursor, ExecutionFilter};
pub use files::FileRecord;
pub use migrate::MigrationError;
pub use timestamp::Timestamp;

/// Owner of executions waiting in Kafka (queue mode): no replica heartbeats
/// them, and the reaper leaves them to the queue.
pub const QUEUE_OWNER: &str = "queue";

/// Between attempts at the first connection.
const CONNECT_BACKOFF: imageflow_retry::Backoff =
    imageflow_retry::Backoff::new(Duration::from_millis(250), 2.0, Duration::from_secs(2));

/// The database handle. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    kind: DbKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

fn from_json<T: DeserializeOwned>(text: &str, what: &str) -> Result<T, sqlx::Error> {
    serde_json::from_str(text).map_err(|e| sqlx::Error::Decode(format!("{what}: {e}").into()))
}

/// `$first, $first+1, ...`: placeholders for an `IN (...)` list of `count` values.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Db {
    /// Connects (creating the SQLite file and its directory when missing) and
    /// runs the migrations. Retries the first connection for `patience`, so a
    /// database that starts alongside the backend is waited for.
    ///
    /// `sqlite::memory:` gives a private database that lives as long as the
    /// handle (one connection: each `Any` connection would open its own).
    pub async fn connect(url: &str, patience: Duration) -> Result<Self, sqlx::Error> {
        sqlx::any::install_default_drivers();
        let mut in_memory = false;
        let (kind, url) = if let Some(rest) = url.strip_prefix("sqlite:") {
            let path = rest.trim_start_matches("//");
            let file = path.split('?').next().unwrap_or(path);
            in_memory = file == ":memory:";
            if !in_memory
                && let Some(dir) = std::path::Path::new(file).parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir).map_err(sqlx::Error::Io)?;
            }
            let url = if in_memory {
                // `sqlite://:memory:` would not parse as a URL.
                format!("sqlite:{path}")
            } else if path.contains("mode=") {
                format!("sqlite://{path}")
            } else if path.contains('?') {
                format!("sqlite://{path}&mode=rwc")
            } else {
                format!("sqlite://{path}?mode=rwc")
            };
            (DbKind::Sqlite, url)
        } else {
            (DbKind::Postgres, url.to_string())
        };
        let mut options = AnyPoolOptions::new()
            .acquire_timeout(Duration::from_secs(5))
            .max_connections(match kind {
                DbKind::Sqlite if in_memory => 1,
                DbKind::Sqlite => 4,
                DbKind::Postgres => 10,
            });
        if in_memory {
            // The database goes with its connection: never let it close.
            options = options
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        if kind == DbKind::Sqlite {
            options = options.after_connect(|conn, _| {
                Box::pin(async move {
                    use sqlx::Executor;
                    // WAL lets readers go on while the engine writes; the busy
                    // timeout turns writer contention into a short wait.
                    conn.execute("PRAGMA journal_mode=WAL").await?;
                    conn.execute("PRAGMA busy_timeout=5000").await?;
                    conn.execute("PRAGMA synchronous=NORMAL").await?;
                    Ok(())
                })
            });
        }
        // A database starting alongside the backend is waited for; whatever
        // it answers meanwhile (refused, starting up) is worth another try.
        let pool = imageflow_retry::retry(
            "connect to the database",
            CONNECT_BACKOFF,
            imageflow_retry::Limit::Budget(patience),
            |_| true,
            || options.clone().connect(&url),
        )
        .await?;
        migrate::run(&pool, kind).await?;
        Ok(Self { pool, kind })
    }

    pub fn kind(&self) -> DbKind {
        self.kind
    }

    /// Readiness: one round trip.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

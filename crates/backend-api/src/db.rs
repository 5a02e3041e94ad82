//! Persistence through `sqlx`'s `Any` driver: SQLite as the embedded default,
//! PostgreSQL for the cluster, one set of portable statements and migrations.
//!
//! Portable means: TEXT, BIGINT and DOUBLE PRECISION columns only (booleans are
//! 0/1, JSON is TEXT, times are RFC 3339 text plus epoch milliseconds where we
//! compare or sort), `$N` placeholders in increasing order, and
//! `ON CONFLICT DO NOTHING`, which both databases understand.
//!
//! NULL parameters: with the `Any` driver a cached PostgreSQL statement keeps
//! the parameter types of its first call, so a NULL number there breaks a
//! later real one ("incorrect binary data format"). Statements that bind a
//! number that may be NULL are therefore not cached (`persistent(false)`).

use std::time::Duration;

use serde::{Serialize, de::DeserializeOwned};
use sqlx::{
    AnyPool, Row,
    any::{AnyPoolOptions, AnyRow},
};

use crate::model::{
    ExecutionRecord, ExecutionStatus, PipelineDefinition, StepRecord, StepStatus, StoredPipeline,
};

/// The schema, in order. Never edit a released entry: append a new one.
const MIGRATIONS: &[(i64, &[&str])] = &[
    (
        1,
        &[
            "CREATE TABLE IF NOT EXISTS pipelines (
            pipeline_id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            revision BIGINT NOT NULL,
            definition TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            created_ms BIGINT NOT NULL,
            deleted BIGINT NOT NULL DEFAULT 0)",
            "CREATE TABLE IF NOT EXISTS pipeline_revisions (
            pipeline_id TEXT NOT NULL,
            revision BIGINT NOT NULL,
            definition TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (pipeline_id, revision))",
            "CREATE TABLE IF NOT EXISTS files (
            file_id TEXT PRIMARY KEY,
            bucket TEXT NOT NULL,
            object_key TEXT NOT NULL,
            content_type TEXT NOT NULL,
            size_bytes BIGINT NOT NULL,
            width BIGINT NOT NULL,
            height BIGINT NOT NULL,
            filename TEXT,
            execution_id TEXT,
            created_at TEXT NOT NULL,
            created_ms BIGINT NOT NULL)",
            "CREATE INDEX IF NOT EXISTS files_created ON files (created_ms)",
            "CREATE TABLE IF NOT EXISTS executions (
            execution_id TEXT PRIMARY KEY,
            pipeline_id TEXT,
            pipeline_revision BIGINT,
            definition TEXT NOT NULL,
            inputs TEXT NOT NULL,
            parameters TEXT NOT NULL,
            status TEXT NOT NULL,
            trace_id TEXT,
            error TEXT,
            owner TEXT,
            heartbeat_ms BIGINT NOT NULL,
            created_at TEXT NOT NULL,
            created_ms BIGINT NOT NULL,
            started_at TEXT,
            finished_at TEXT,
            execution_time_ms DOUBLE PRECISION)",
            "CREATE INDEX IF NOT EXISTS executions_created ON executions (created_ms)",
            "CREATE INDEX IF NOT EXISTS executions_live ON executions (status, heartbeat_ms)",
            "CREATE TABLE IF NOT EXISTS step_runs (
            execution_id TEXT NOT NULL,
            step_id TEXT NOT NULL,
            position BIGINT NOT NULL,
            component TEXT NOT NULL,
            level BIGINT NOT NULL,
            status TEXT NOT NULL,
            attempts BIGINT NOT NULL,
            started_at TEXT,
            finished_at TEXT,
            processing_time_ms DOUBLE PRECISION,
            service_time_ms DOUBLE PRECISION,
            error TEXT,
            used_fallback BIGINT NOT NULL,
            output TEXT,
            detections TEXT,
            PRIMARY KEY (execution_id, step_id))",
        ],
    ),
    (
        2,
        // Queue mode: how often an execution went back to the queue because the
        // replica running it died, so a run that kills replicas stops somewhere.
        &["ALTER TABLE executions ADD COLUMN requeues BIGINT NOT NULL DEFAULT 0"],
    ),
];

/// Owner of executions waiting in Kafka (queue mode): no replica heartbeats
/// them, and the reaper leaves them to the queue.
pub const QUEUE_OWNER: &str = "queue";

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

/// A file as stored in the `files` table.
#[derive(Clone, Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct FileRecord {
    pub file_id: String,
    pub bucket: String,
    pub object_key: String,
    pub content_type: String,
    pub size_bytes: i64,
    pub width: i64,
    pub height: i64,
    pub filename: Option<String>,
    /// Set for images written by an execution's steps.
    pub execution_id: Option<String>,
    pub created_at: String,
}

/// Filters of the execution list; `before` is the cursor from the previous page.
#[derive(Clone, Debug, Default)]
pub struct ExecutionFilter {
    pub status: Option<ExecutionStatus>,
    pub pipeline_id: Option<String>,
    pub limit: i64,
    pub before: Option<(i64, String)>,
}

/// Current time as RFC 3339 text and epoch milliseconds.
pub fn now() -> (String, i64) {
    let t = time::OffsetDateTime::now_utc();
    let text = t
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let ms = (t.unix_timestamp_nanos() / 1_000_000) as i64;
    (text, ms)
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

fn from_json<T: DeserializeOwned>(text: &str, what: &str) -> Result<T, sqlx::Error> {
    serde_json::from_str(text).map_err(|e| sqlx::Error::Decode(format!("{what}: {e}").into()))
}

impl Db {
    /// Connects (creating the SQLite file and its directory when missing) and
    /// runs the migrations. Retries the first connection for `patience`, so a
    /// database that starts alongside the backend is waited for.
    pub async fn connect(url: &str, patience: Duration) -> Result<Self, sqlx::Error> {
        sqlx::any::install_default_drivers();
        let (kind, url) = if let Some(rest) = url.strip_prefix("sqlite:") {
            let path = rest.trim_start_matches("//");
            let file = path.split('?').next().unwrap_or(path);
            if file != ":memory:"
                && let Some(dir) = std::path::Path::new(file).parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir).map_err(sqlx::Error::Io)?;
            }
            let url = if path.contains("mode=") {
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
            .max_connections(if kind == DbKind::Sqlite { 4 } else { 10 });
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
        let started = std::time::Instant::now();
        let pool = loop {
            match options.clone().connect(&url).await {
                Ok(pool) => break pool,
                Err(err) if started.elapsed() < patience => {
                    tracing::warn!(error = %err, "database not reachable yet; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(err) => return Err(err),
            }
        };
        let db = Self { pool, kind };
        db.migrate().await?;
        Ok(db)
    }

    pub fn kind(&self) -> DbKind {
        self.kind
    }

    async fn migrate(&self) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        if self.kind == DbKind::Postgres {
            // Replicas starting together take turns.
            sqlx::query("SELECT pg_advisory_xact_lock(4242001)")
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at TEXT NOT NULL)",
        )
        .execute(&mut *tx)
        .await?;
        let applied: Vec<i64> = sqlx::query("SELECT version FROM schema_migrations")
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.try_get::<i64, _>(0))
            .collect::<Result<_, _>>()?;
        for (version, statements) in MIGRATIONS {
            if applied.contains(version) {
                continue;
            }
            for statement in *statements {
                sqlx::query(statement).execute(&mut *tx).await?;
            }
            sqlx::query(
                "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(*version)
            .bind(now().0)
            .execute(&mut *tx)
            .await?;
            tracing::info!(version, "database migration applied");
        }
        tx.commit().await
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

    // ---- pipelines -------------------------------------------------------

    pub async fn insert_pipeline(
        &self,
        definition: &PipelineDefinition,
    ) -> Result<Option<StoredPipeline>, sqlx::Error> {
        let id = definition.pipeline_id.clone().unwrap_or_default();
        let (at, ms) = now();
        let body = json(definition);
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO pipelines (pipeline_id, name, revision, definition, created_at, updated_at, created_ms, deleted)
             VALUES ($1, $2, 1, $3, $4, $5, $6, 0) ON CONFLICT DO NOTHING",
        )
        .bind(&id)
        .bind(&definition.pipeline_name)
        .bind(&body)
        .bind(&at)
        .bind(&at)
        .bind(ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Ok(None);
        }
        sqlx::query(
            "INSERT INTO pipeline_revisions (pipeline_id, revision, definition, created_at) VALUES ($1, 1, $2, $3)",
        )
        .bind(&id)
        .bind(&body)
        .bind(&at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(StoredPipeline {
            definition: definition.clone(),
            revision: 1,
            created_at: at.clone(),
            updated_at: at,
        }))
    }

    /// Stores a new revision; `None` when the pipeline does not exist.
    pub async fn update_pipeline(
        &self,
        id: &str,
        definition: &PipelineDefinition,
    ) -> Result<Option<StoredPipeline>, sqlx::Error> {
        let (at, _) = now();
        let body = json(definition);
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "UPDATE pipelines SET revision = revision + 1, name = $1, definition = $2, updated_at = $3
             WHERE pipeline_id = $4 AND deleted = 0 RETURNING revision, created_at",
        )
        .bind(&definition.pipeline_name)
        .bind(&body)
        .bind(&at)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let revision: i64 = row.try_get("revision")?;
        let created_at: String = row.try_get("created_at")?;
        sqlx::query(
            "INSERT INTO pipeline_revisions (pipeline_id, revision, definition, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(revision)
        .bind(&body)
        .bind(&at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(StoredPipeline {
            definition: definition.clone(),
            revision,
            created_at,
            updated_at: at,
        }))
    }

    /// The latest revision, or `revision` when given.
    pub async fn get_pipeline(
        &self,
        id: &str,
        revision: Option<i64>,
    ) -> Result<Option<StoredPipeline>, sqlx::Error> {
        let Some(row) = sqlx::query(
            "SELECT revision, definition, created_at, updated_at FROM pipelines WHERE pipeline_id = $1 AND deleted = 0",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let mut stored = StoredPipeline {
            definition: from_json(&row.try_get::<String, _>("definition")?, "pipeline")?,
            revision: row.try_get("revision")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        };
        if let Some(wanted) = revision.filter(|r| *r != stored.revision) {
            let Some(old) = sqlx::query(
                "SELECT definition, created_at FROM pipeline_revisions WHERE pipeline_id = $1 AND revision = $2",
            )
            .bind(id)
            .bind(wanted)
            .fetch_optional(&self.pool)
            .await?
            else {
                return Ok(None);
            };
            stored.definition = from_json(&old.try_get::<String, _>("definition")?, "pipeline")?;
            stored.revision = wanted;
            stored.updated_at = old.try_get("created_at")?;
        }
        Ok(Some(stored))
    }

    pub async fn list_pipelines(&self, limit: i64) -> Result<Vec<StoredPipeline>, sqlx::Error> {
        sqlx::query(
            "SELECT revision, definition, created_at, updated_at FROM pipelines WHERE deleted = 0
             ORDER BY created_ms DESC, pipeline_id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| {
            Ok(StoredPipeline {
                definition: from_json(&row.try_get::<String, _>("definition")?, "pipeline")?,
                revision: row.try_get("revision")?,
                created_at: row.try_get("created_at")?,
                updated_at: row.try_get("updated_at")?,
            })
        })
        .collect()
    }

    /// Soft delete: executions keep their copy of the definition.
    pub async fn delete_pipeline(&self, id: &str) -> Result<bool, sqlx::Error> {
        let (at, _) = now();
        Ok(sqlx::query(
            "UPDATE pipelines SET deleted = 1, updated_at = $1 WHERE pipeline_id = $2 AND deleted = 0",
        )
        .bind(at)
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected()
            > 0)
    }

    // ---- files -----------------------------------------------------------

    pub async fn insert_file(&self, file: &FileRecord) -> Result<(), sqlx::Error> {
        let (_, ms) = now();
        sqlx::query(
            "INSERT INTO files (file_id, bucket, object_key, content_type, size_bytes, width, height, filename, execution_id, created_at, created_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&file.file_id)
        .bind(&file.bucket)
        .bind(&file.object_key)
        .bind(&file.content_type)
        .bind(file.size_bytes)
        .bind(file.width)
        .bind(file.height)
        .bind(&file.filename)
        .bind(&file.execution_id)
        .bind(&file.created_at)
        .bind(ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn get_file(&self, id: &str) -> Result<Option<FileRecord>, sqlx::Error> {
        sqlx::query("SELECT * FROM files WHERE file_id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|row| file_from_row(&row))
            .transpose()
    }

    pub async fn list_files(&self, limit: i64) -> Result<Vec<FileRecord>, sqlx::Error> {
        sqlx::query("SELECT * FROM files ORDER BY created_ms DESC, file_id LIMIT $1")
            .bind(limit)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(file_from_row)
            .collect()
    }

    pub async fn delete_file(&self, id: &str) -> Result<bool, sqlx::Error> {
        Ok(sqlx::query("DELETE FROM files WHERE file_id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected()
            > 0)
    }

    // ---- executions --------------------------------------------------------

    /// Records a new execution and its pending steps in one transaction.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_execution(
        &self,
        record: &ExecutionRecord,
        definition: &PipelineDefinition,
        parameters: &serde_json::Value,
        owner: &str,
    ) -> Result<(), sqlx::Error> {
        let (_, ms) = now();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO executions (execution_id, pipeline_id, pipeline_revision, definition, inputs, parameters, status, trace_id, error, owner, heartbeat_ms, created_at, created_ms, started_at, finished_at, execution_time_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, $9, $10, $11, $12, NULL, NULL, NULL)",
        )
        // Uncached: see the module note on NULL parameters.
        .persistent(false)
        .bind(&record.execution_id)
        .bind(&record.pipeline_id)
        .bind(record.pipeline_revision)
        .bind(json(definition))
        .bind(json(&record.inputs))
        .bind(json(parameters))
        .bind(record.status.as_str())
        .bind(&record.trace_id)
        .bind(owner)
        .bind(ms)
        .bind(&record.created_at)
        .bind(ms)
        .execute(&mut *tx)
        .await?;
        for (position, step) in record.steps.iter().enumerate() {
            insert_step(&mut tx, &record.execution_id, position as i64, step).await?;
        }
        tx.commit().await
    }

    /// pending → running for this owner. `false` when another replica took it
    /// or it was cancelled meanwhile.
    pub async fn start_execution(
        &self,
        id: &str,
        owner: &str,
        started_at: &str,
    ) -> Result<bool, sqlx::Error> {
        let (_, ms) = now();
        Ok(sqlx::query(
            "UPDATE executions SET status = 'running', owner = $1, heartbeat_ms = $2, started_at = $3
             WHERE execution_id = $4 AND status = 'pending'",
        )
        .bind(owner)
        .bind(ms)
        .bind(started_at)
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }

    /// Records the end of an execution unless it already ended (a cancel or a
    /// reaper got there first); returns whether this call set it.
    pub async fn finish_execution(
        &self,
        id: &str,
        status: ExecutionStatus,
        error: Option<&str>,
        finished_at: &str,
        execution_time_ms: Option<f64>,
    ) -> Result<bool, sqlx::Error> {
        Ok(sqlx::query(
            "UPDATE executions SET status = $1, error = $2, finished_at = $3, execution_time_ms = $4
             WHERE execution_id = $5 AND status IN ('pending', 'running')",
        )
        // Uncached: see the module note on NULL parameters.
        .persistent(false)
        .bind(status.as_str())
        .bind(error)
        .bind(finished_at)
        .bind(execution_time_ms)
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }

    pub async fn save_step(
        &self,
        execution_id: &str,
        step: &StepRecord,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE step_runs SET status = $1, attempts = $2, started_at = $3, finished_at = $4,
             processing_time_ms = $5, service_time_ms = $6, error = $7, used_fallback = $8, output = $9, detections = $10
             WHERE execution_id = $11 AND step_id = $12",
        )
        // Uncached: see the module note on NULL parameters.
        .persistent(false)
        .bind(step.status.as_str())
        .bind(i64::from(step.attempts))
        .bind(&step.started_at)
        .bind(&step.finished_at)
        .bind(step.processing_time_ms)
        .bind(step.service_time_ms)
        .bind(&step.error)
        .bind(i64::from(step.used_fallback))
        .bind(step.output.as_ref().map(json))
        .bind((!step.detections.is_empty()).then(|| json(&step.detections)))
        .bind(execution_id)
        .bind(&step.step_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Steps not finished when their execution ended become `cancelled`.
    pub async fn close_open_steps(&self, execution_id: &str) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE step_runs SET status = 'cancelled'
             WHERE execution_id = $1 AND status IN ('pending', 'running', 'retrying')",
        )
        .bind(execution_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks this replica's live executions alive.
    pub async fn heartbeat(&self, owner: &str) -> Result<u64, sqlx::Error> {
        let (_, ms) = now();
        Ok(sqlx::query(
            "UPDATE executions SET heartbeat_ms = $1 WHERE owner = $2 AND status IN ('pending', 'running')",
        )
        .bind(ms)
        .bind(owner)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Fails executions whose replica stopped marking them alive (it died or
    /// was restarted): none is left running forever. Returns their ids.
    pub async fn reap_stale(&self, stale_after: Duration) -> Result<Vec<String>, sqlx::Error> {
        let (at, ms) = now();
        let cutoff = ms - stale_after.as_millis() as i64;
        let ids: Vec<String> = sqlx::query(
            "UPDATE executions SET status = 'failed', finished_at = $1,
             error = 'interrupted: the backend replica running it stopped before it finished; start it again'
             WHERE (status = 'running' OR (status = 'pending' AND owner <> 'queue'))
             AND heartbeat_ms < $2 RETURNING execution_id",
        )
        .bind(&at)
        .bind(cutoff)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<Result<_, _>>()?;
        for id in &ids {
            self.close_open_steps(id).await?;
        }
        Ok(ids)
    }

    /// Queue mode: executions whose replica died while running them go back
    /// to the queue (pending, unowned, steps reset) while they have requeues
    /// left; the caller produces them to Kafka again. Returns their ids.
    pub async fn requeue_stale(
        &self,
        stale_after: Duration,
        max_requeues: i64,
    ) -> Result<Vec<String>, sqlx::Error> {
        let (_, ms) = now();
        let cutoff = ms - stale_after.as_millis() as i64;
        let ids: Vec<String> = sqlx::query(
            "UPDATE executions SET status = 'pending', owner = 'queue', heartbeat_ms = $1,
             started_at = NULL, requeues = requeues + 1
             WHERE status = 'running' AND heartbeat_ms < $2 AND requeues < $3 RETURNING execution_id",
        )
        .bind(ms)
        .bind(cutoff)
        .bind(max_requeues)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<Result<_, _>>()?;
        for id in &ids {
            sqlx::query(
                "UPDATE step_runs SET status = 'pending', attempts = 0, started_at = NULL, finished_at = NULL,
                 processing_time_ms = NULL, service_time_ms = NULL, error = NULL, used_fallback = 0, output = NULL, detections = NULL
                 WHERE execution_id = $1",
            )
            .bind(id)
            .execute(&self.pool)
            .await?;
        }
        Ok(ids)
    }

    /// Queue mode: executions waiting in the queue for longer than `older_than`
    /// (oldest first): their message sits on a partition nobody consumes
    /// (its replica died and the group has not moved it yet), so any replica
    /// with room may adopt them. The claim stays atomic (pending → running).
    pub async fn stale_queued(
        &self,
        older_than: Duration,
        limit: i64,
    ) -> Result<Vec<String>, sqlx::Error> {
        let (_, ms) = now();
        let cutoff = ms - older_than.as_millis() as i64;
        sqlx::query(
            "SELECT execution_id FROM executions WHERE status = 'pending' AND owner = 'queue'
             AND heartbeat_ms < $1 ORDER BY created_ms LIMIT $2",
        )
        .bind(cutoff)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect()
    }

    /// Who holds an execution and when it last heartbeat (queue mode, to tell
    /// a duplicate delivery from a dead replica's work).
    pub async fn execution_owner(
        &self,
        id: &str,
    ) -> Result<Option<(ExecutionStatus, String, i64)>, sqlx::Error> {
        let Some(row) = sqlx::query(
            "SELECT status, owner, heartbeat_ms FROM executions WHERE execution_id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let status: String = row.try_get(0)?;
        let owner: Option<String> = row.try_get(1)?;
        let heartbeat: i64 = row.try_get(2)?;
        Ok(ExecutionStatus::parse(&status).map(|s| (s, owner.unwrap_or_default(), heartbeat)))
    }

    pub async fn execution_status(&self, id: &str) -> Result<Option<ExecutionStatus>, sqlx::Error> {
        Ok(
            sqlx::query("SELECT status FROM executions WHERE execution_id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .and_then(|r| r.try_get::<String, _>(0).ok())
                .and_then(|s| ExecutionStatus::parse(&s)),
        )
    }

    /// The stored definition and parameters of an execution (to run it).
    pub async fn execution_input(
        &self,
        id: &str,
    ) -> Result<Option<(PipelineDefinition, serde_json::Value)>, sqlx::Error> {
        let Some(row) =
            sqlx::query("SELECT definition, parameters FROM executions WHERE execution_id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
        else {
            return Ok(None);
        };
        Ok(Some((
            from_json(&row.try_get::<String, _>("definition")?, "definition")?,
            from_json(&row.try_get::<String, _>("parameters")?, "parameters")?,
        )))
    }

    pub async fn get_execution(&self, id: &str) -> Result<Option<ExecutionRecord>, sqlx::Error> {
        let Some(row) = sqlx::query("SELECT * FROM executions WHERE execution_id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let mut record = execution_from_row(&row)?;
        record.steps = self.steps_of(id).await?;
        Ok(Some(record))
    }

    async fn steps_of(&self, execution_id: &str) -> Result<Vec<StepRecord>, sqlx::Error> {
        sqlx::query("SELECT * FROM step_runs WHERE execution_id = $1 ORDER BY position")
            .bind(execution_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(step_from_row)
            .collect()
    }

    /// Newest first; each entry carries its steps. The second value is the
    /// cursor of the next page, when there is one.
    pub async fn list_executions(
        &self,
        filter: &ExecutionFilter,
    ) -> Result<(Vec<ExecutionRecord>, Option<(i64, String)>), sqlx::Error> {
        let (before_ms, before_id) = filter.before.clone().unwrap_or((i64::MAX, String::new()));
        let rows = sqlx::query(
            "SELECT * FROM executions
             WHERE ($1 = '' OR status = $1) AND ($2 = '' OR pipeline_id = $2)
               AND (created_ms < $3 OR (created_ms = $3 AND execution_id > $4 AND $4 <> ''))
             ORDER BY created_ms DESC, execution_id LIMIT $5",
        )
        .bind(filter.status.map(|s| s.as_str()).unwrap_or(""))
        .bind(filter.pipeline_id.clone().unwrap_or_default())
        .bind(before_ms)
        .bind(before_id)
        .bind(filter.limit + 1)
        .fetch_all(&self.pool)
        .await?;
        let mut records = Vec::with_capacity(rows.len());
        let mut cursors = Vec::with_capacity(rows.len());
        for row in &rows {
            cursors.push((
                row.try_get::<i64, _>("created_ms")?,
                row.try_get::<String, _>("execution_id")?,
            ));
            records.push(execution_from_row(row)?);
        }
        let next = if records.len() as i64 > filter.limit {
            records.truncate(filter.limit as usize);
            cursors.get(filter.limit as usize - 1).cloned()
        } else {
            None
        };
        for record in &mut records {
            record.steps = self.steps_of(&record.execution_id).await?;
        }
        Ok((records, next))
    }
}

async fn insert_step(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    execution_id: &str,
    position: i64,
    step: &StepRecord,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO step_runs (execution_id, step_id, position, component, level, status, attempts, used_fallback)
         VALUES ($1, $2, $3, $4, $5, $6, 0, 0)",
    )
    .bind(execution_id)
    .bind(&step.step_id)
    .bind(position)
    .bind(&step.component_name)
    .bind(i64::from(step.level))
    .bind(step.status.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn file_from_row(row: &AnyRow) -> Result<FileRecord, sqlx::Error> {
    Ok(FileRecord {
        file_id: row.try_get("file_id")?,
        bucket: row.try_get("bucket")?,
        object_key: row.try_get("object_key")?,
        content_type: row.try_get("content_type")?,
        size_bytes: row.try_get("size_bytes")?,
        width: row.try_get("width")?,
        height: row.try_get("height")?,
        filename: row.try_get("filename")?,
        execution_id: row.try_get("execution_id")?,
        created_at: row.try_get("created_at")?,
    })
}

fn execution_from_row(row: &AnyRow) -> Result<ExecutionRecord, sqlx::Error> {
    let status: String = row.try_get("status")?;
    Ok(ExecutionRecord {
        execution_id: row.try_get("execution_id")?,
        pipeline_id: row.try_get("pipeline_id")?,
        pipeline_revision: row.try_get("pipeline_revision")?,
        status: ExecutionStatus::parse(&status)
            .ok_or_else(|| sqlx::Error::Decode(format!("execution status {status:?}").into()))?,
        trace_id: row.try_get("trace_id")?,
        inputs: from_json(&row.try_get::<String, _>("inputs")?, "inputs")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        execution_time_ms: row.try_get("execution_time_ms")?,
        error: row.try_get("error")?,
        steps: Vec::new(),
    })
}

fn step_from_row(row: &AnyRow) -> Result<StepRecord, sqlx::Error> {
    let status: String = row.try_get("status")?;
    let output: Option<String> = row.try_get("output")?;
    let detections: Option<String> = row.try_get("detections")?;
    Ok(StepRecord {
        step_id: row.try_get("step_id")?,
        component_name: row.try_get("component")?,
        status: StepStatus::parse(&status)
            .ok_or_else(|| sqlx::Error::Decode(format!("step status {status:?}").into()))?,
        level: row.try_get::<i64, _>("level")? as i32,
        attempts: row.try_get::<i64, _>("attempts")? as i32,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        processing_time_ms: row.try_get("processing_time_ms")?,
        service_time_ms: row.try_get("service_time_ms")?,
        error: row.try_get("error")?,
        used_fallback: row.try_get::<i64, _>("used_fallback")? != 0,
        output: output
            .as_deref()
            .map(|t| from_json(t, "output"))
            .transpose()?,
        detections: detections
            .as_deref()
            .map(|t| from_json(t, "detections"))
            .transpose()?
            .unwrap_or_default(),
    })
}

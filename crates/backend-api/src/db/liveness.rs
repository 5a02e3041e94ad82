//! Liveness of executions across replicas: the replica running an execution
//! heartbeats it; one whose heartbeat stops is failed (direct mode) or goes
//! back to the queue (queue mode).

use std::time::Duration;

use sqlx::Row;

use super::{
    Db, QUEUE_OWNER, Timestamp,
    executions::{LIVE, close_open_steps_of},
    placeholders,
};
use crate::model::{ExecutionStatus, StepStatus};

/// The error of an execution whose replica stopped heartbeating it.
const INTERRUPTED: &str =
    "interrupted: the backend replica running it stopped before it finished; start it again";

impl Db {
    /// Marks this replica's live executions alive; returns how many.
    pub async fn heartbeat(&self, owner: &str) -> Result<u64, sqlx::Error> {
        Ok(sqlx::query(
            "UPDATE executions SET heartbeat_ms = $1 WHERE owner = $2 AND status IN ($3, $4)",
        )
        .bind(Timestamp::now().unix_millis())
        .bind(owner)
        .bind(LIVE[0].as_str())
        .bind(LIVE[1].as_str())
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Fails executions whose replica stopped marking them alive for longer
    /// than `stale_after` (it died or was restarted), and cancels their open
    /// steps: none is left running forever. Executions waiting in the queue
    /// are left to it. Returns their ids.
    pub async fn reap_stale(&self, stale_after: Duration) -> Result<Vec<String>, sqlx::Error> {
        let now = Timestamp::now();
        let mut tx = self.pool.begin().await?;
        let ids: Vec<String> = sqlx::query(
            "UPDATE executions SET status = $1, finished_at = $2, error = $3
             WHERE (status = $4 OR (status = $5 AND owner <> $6)) AND heartbeat_ms < $7
             RETURNING execution_id",
        )
        .bind(ExecutionStatus::Failed.as_str())
        .bind(now.to_rfc3339())
        .bind(INTERRUPTED)
        .bind(ExecutionStatus::Running.as_str())
        .bind(ExecutionStatus::Pending.as_str())
        .bind(QUEUE_OWNER)
        .bind(now.minus(stale_after).unix_millis())
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<Result<_, _>>()?;
        close_open_steps_of(&mut tx, &ids).await?;
        tx.commit().await?;
        Ok(ids)
    }

    /// Queue mode: executions whose replica died while running them go back
    /// to the queue (pending, owned by the queue, steps reset) while they
    /// have fewer than `max_requeues` requeues; the caller produces them to
    /// Kafka again. Returns their ids.
    pub async fn requeue_stale(
        &self,
        stale_after: Duration,
        max_requeues: i64,
    ) -> Result<Vec<String>, sqlx::Error> {
        let now = Timestamp::now();
        let mut tx = self.pool.begin().await?;
        let ids: Vec<String> = sqlx::query(
            "UPDATE executions SET status = $1, owner = $2, heartbeat_ms = $3,
             started_at = NULL, requeues = requeues + 1
             WHERE status = $4 AND heartbeat_ms < $5 AND requeues < $6 RETURNING execution_id",
        )
        .bind(ExecutionStatus::Pending.as_str())
        .bind(QUEUE_OWNER)
        .bind(now.unix_millis())
        .bind(ExecutionStatus::Running.as_str())
        .bind(now.minus(stale_after).unix_millis())
        .bind(max_requeues)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<Result<_, _>>()?;
        if !ids.is_empty() {
            let sql = format!(
                "UPDATE step_runs SET status = $1, attempts = 0, started_at = NULL, finished_at = NULL,
                 processing_time_ms = NULL, service_time_ms = NULL, error = NULL, used_fallback = 0,
                 output = NULL, detections = NULL
                 WHERE execution_id IN ({})",
                placeholders(2, ids.len())
            );
            let mut query = sqlx::query(&sql).bind(StepStatus::Pending.as_str());
            for id in &ids {
                query = query.bind(id);
            }
            query.execute(&mut *tx).await?;
            let sql = format!(
                "UPDATE execution_inputs SET status = $1, started_at = NULL, finished_at = NULL,
                 execution_time_ms = NULL, error = NULL, output = NULL, copied_to = NULL
                 WHERE execution_id IN ({})",
                placeholders(2, ids.len())
            );
            let mut query = sqlx::query(&sql).bind(ExecutionStatus::Pending.as_str());
            for id in &ids {
                query = query.bind(id);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
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
        sqlx::query(
            "SELECT execution_id FROM executions WHERE status = $1 AND owner = $2
             AND heartbeat_ms < $3 ORDER BY created_ms LIMIT $4",
        )
        .bind(ExecutionStatus::Pending.as_str())
        .bind(QUEUE_OWNER)
        .bind(Timestamp::now().minus(older_than).unix_millis())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect()
    }
}

//! Stored pipelines: the latest definition in `pipelines`, every revision in
//! `pipeline_revisions`, soft deletion so executions keep their history.

use sqlx::{Any, Row, Transaction, any::AnyRow};

use super::{Db, Timestamp, from_json, json};
use crate::model::{PipelineDefinition, StoredPipeline};

impl Db {
    /// Stores revision 1; `None` when a pipeline with that id exists (a
    /// deleted one included: ids are never reused).
    pub async fn insert_pipeline(
        &self,
        definition: &PipelineDefinition,
    ) -> Result<Option<StoredPipeline>, sqlx::Error> {
        let id = definition.pipeline_id.clone().unwrap_or_default();
        let now = Timestamp::now();
        let at = now.to_rfc3339();
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
        .bind(now.unix_millis())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Ok(None);
        }
        let stored = StoredPipeline {
            definition: definition.clone(),
            revision: 1,
            created_at: at.clone(),
            updated_at: at,
        };
        commit_revision(tx, &id, &body, stored).await.map(Some)
    }

    /// Stores a new revision; `None` when the pipeline does not exist.
    pub async fn update_pipeline(
        &self,
        id: &str,
        definition: &PipelineDefinition,
    ) -> Result<Option<StoredPipeline>, sqlx::Error> {
        let at = Timestamp::now().to_rfc3339();
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
        let stored = StoredPipeline {
            definition: definition.clone(),
            revision,
            created_at,
            updated_at: at,
        };
        commit_revision(tx, id, &body, stored).await.map(Some)
    }

    /// The latest revision, or `revision` when given (its `updated_at` is
    /// when that revision was stored).
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
        let mut stored = pipeline_from_row(&row)?;
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

    /// Newest first.
    pub async fn list_pipelines(&self, limit: i64) -> Result<Vec<StoredPipeline>, sqlx::Error> {
        sqlx::query(
            "SELECT revision, definition, created_at, updated_at FROM pipelines WHERE deleted = 0
             ORDER BY created_ms DESC, pipeline_id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(pipeline_from_row)
        .collect()
    }

    /// Soft delete: executions keep their copy of the definition.
    pub async fn delete_pipeline(&self, id: &str) -> Result<bool, sqlx::Error> {
        Ok(sqlx::query(
            "UPDATE pipelines SET deleted = 1, updated_at = $1 WHERE pipeline_id = $2 AND deleted = 0",
        )
        .bind(Timestamp::now().to_rfc3339())
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected()
            > 0)
    }
}

fn pipeline_from_row(row: &AnyRow) -> Result<StoredPipeline, sqlx::Error> {
    Ok(StoredPipeline {
        definition: from_json(&row.try_get::<String, _>("definition")?, "pipeline")?,
        revision: row.try_get("revision")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// Keeps `stored` as a revision of `id` and commits the transaction that
/// wrote the pipeline's row, so the two never disagree.
async fn commit_revision(
    mut tx: Transaction<'_, Any>,
    id: &str,
    body: &str,
    stored: StoredPipeline,
) -> Result<StoredPipeline, sqlx::Error> {
    sqlx::query(
        "INSERT INTO pipeline_revisions (pipeline_id, revision, definition, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(id)
    .bind(stored.revision)
    .bind(body)
    .bind(&stored.updated_at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(stored)
}

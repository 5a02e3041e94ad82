//! Files: uploaded images and the images steps wrote, by id.

use serde::Serialize;
use sqlx::{Row, any::AnyRow};

use super::{Db, Timestamp};

/// A file as stored in the `files` table.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
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
    /// RFC 3339, as [`Timestamp::to_rfc3339`] writes it.
    pub created_at: String,
}

impl Db {
    /// Stores `file`; listing orders by the time of this call.
    pub async fn insert_file(&self, file: &FileRecord) -> Result<(), sqlx::Error> {
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
        .bind(Timestamp::now().unix_millis())
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

    /// Newest first.
    pub async fn list_files(&self, limit: i64) -> Result<Vec<FileRecord>, sqlx::Error> {
        sqlx::query("SELECT * FROM files ORDER BY created_ms DESC, file_id LIMIT $1")
            .bind(limit)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(file_from_row)
            .collect()
    }

    /// `false` when there was no such file.
    pub async fn delete_file(&self, id: &str) -> Result<bool, sqlx::Error> {
        Ok(sqlx::query("DELETE FROM files WHERE file_id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected()
            > 0)
    }
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

//! Round trips through SQLite (in memory, or a temporary file where a
//! database must outlive one handle), one file per repository.

use std::time::Duration;

use serde_json::json;

use super::{Db, FileRecord, Timestamp};
use crate::model::{
    ExecutionRecord, ExecutionStatus, InputResult, PipelineDefinition, StepRecord, StepStatus,
};

mod executions;
mod files;
mod liveness;
mod migrations;
mod pipelines;

async fn memory_db() -> Db {
    Db::connect("sqlite::memory:", Duration::ZERO)
        .await
        .unwrap()
}

fn definition(id: &str, name: &str) -> PipelineDefinition {
    serde_json::from_value(json!({
        "pipelineId": id,
        "pipelineName": name,
        "steps": [{"stepId": "resize", "componentName": "resize", "parameters": {"width": 64}}],
    }))
    .unwrap()
}

fn file(id: &str) -> FileRecord {
    FileRecord {
        file_id: id.to_string(),
        bucket: "images".into(),
        object_key: format!("uploads/{id}.png"),
        content_type: "image/png".into(),
        size_bytes: 1234,
        width: 640,
        height: 480,
        filename: Some(format!("{id}.png")),
        execution_id: None,
        created_at: Timestamp::now().to_rfc3339(),
    }
}

fn step(id: &str, level: i32) -> StepRecord {
    serde_json::from_value(json!({
        "stepId": id,
        "componentName": "resize",
        "status": StepStatus::Pending,
        "level": level,
        "attempts": 0,
        "started_at": null,
        "finished_at": null,
        "processing_time_ms": null,
        "service_time_ms": null,
        "error": null,
        "output": null,
    }))
    .unwrap()
}

fn execution(id: &str, pipeline_id: Option<&str>, steps: &[&str]) -> ExecutionRecord {
    ExecutionRecord {
        execution_id: id.to_string(),
        pipeline_id: pipeline_id.map(str::to_string),
        pipeline_revision: pipeline_id.map(|_| 1),
        status: ExecutionStatus::Pending,
        trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
        inputs: vec!["file-1".into()],
        created_at: Timestamp::now().to_rfc3339(),
        started_at: None,
        finished_at: None,
        execution_time_ms: None,
        error: None,
        steps: steps
            .iter()
            .zip(0..)
            .map(|(s, level)| step(s, level))
            .collect(),
        input_results: vec![InputResult::pending(
            0,
            "file-1".into(),
            "imageflow".into(),
            "uploads/file-1.png".into(),
        )],
    }
}

/// Stores a pending execution with `steps`, owned by `owner`.
async fn create(db: &Db, id: &str, owner: &str, steps: &[&str]) -> ExecutionRecord {
    let record = execution(id, None, steps);
    db.create_execution(
        &record,
        &definition("p", "inline"),
        &json!({"width": 64}),
        owner,
    )
    .await
    .unwrap();
    record
}

/// Moves one column of an execution to a chosen value, to place it in time.
async fn set_ms(db: &Db, id: &str, column: &str, ms: i64) {
    sqlx::query(&format!(
        "UPDATE executions SET {column} = $1 WHERE execution_id = $2"
    ))
    .bind(ms)
    .bind(id)
    .execute(&db.pool)
    .await
    .unwrap();
}

async fn status_of(db: &Db, id: &str) -> ExecutionStatus {
    db.execution_status(id).await.unwrap().unwrap()
}

fn step_statuses(record: &ExecutionRecord) -> Vec<StepStatus> {
    record.steps.iter().map(|s| s.status).collect()
}

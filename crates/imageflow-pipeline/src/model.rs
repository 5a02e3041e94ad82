//! The JSON shapes of the REST API (`/v1`). Pipeline definitions keep the
//! original system's camelCase names; execution records keep its snake_case
//! ones, so existing clients read both unchanged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// Ids the API takes from clients (pipelines, executions, steps): 1 to
/// `max_len` ASCII letters, digits, '-', '_' or '.', so they are safe in
/// object keys, URLs and logs as they are.
pub fn is_valid_id(id: &str, max_len: usize) -> bool {
    !id.is_empty()
        && id.len() <= max_len
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A pipeline: a DAG of steps.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineDefinition {
    /// Generated when absent on create.
    #[serde(default)]
    pub pipeline_id: Option<String>,
    pub pipeline_name: String,
    /// The author's version label (e.g. "1.0.0").
    #[serde(default = "default_version")]
    pub version: String,
    #[serde(default)]
    pub metadata: PipelineMetadata,
    pub steps: Vec<StepDefinition>,
    /// Kept with the pipeline as given. Two keys are read: `inputPath` (what
    /// an execution that names no `inputs` runs on: `s3://bucket/key`, or
    /// `s3://bucket/prefix/` for every image under the prefix, or a key or
    /// `prefix/` in the default bucket) and `outputPath` (a prefix, in the same
    /// forms, that each input's final images are copied to, besides
    /// `executions/{execution_id}/`). `executionId` must be a string and is
    /// not interpreted.
    #[serde(default)]
    pub global_parameters: BTreeMap<String, Value>,
    /// Deadline of an execution of this pipeline (queueing excluded); at most the
    /// server's EXECUTION_TIMEOUT_SECONDS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<f64>,
}

fn default_version() -> String {
    "1.0.0".into()
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineMetadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// One step of a pipeline.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepDefinition {
    pub step_id: String,
    /// `resize`, `ai_detection` or `filter` (see `GET /v1/components`).
    pub component_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component_version: Option<String>,
    /// Steps whose output this one takes. With several, the image comes from the
    /// first one listed that produced an image; detections from every
    /// `ai_detection` dependency are kept on the execution record.
    #[serde(default)]
    pub dependencies: Vec<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub parameters: BTreeMap<String, Value>,
    /// Informational (scheduling happens in the services' own deployments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub resources: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<RetryPolicy>,
    /// Deadline of one attempt of this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<f64>,
    /// When the step still fails after its retries (and fallback), mark it
    /// `skipped` and hand its input to its dependents instead of failing the
    /// execution.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub continue_on_failure: bool,
    /// Run this instead when the step fails after its retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<FallbackDefinition>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Retries after the first attempt (0-10). Only retryable failures are retried
    /// (service unavailable, overloaded, attempt deadline).
    #[serde(default)]
    pub max_retries: u32,
    /// Growth of the wait between attempts (1-10): 200 ms x factor^(attempt-1), with jitter.
    #[serde(default = "default_backoff")]
    pub backoff_factor: f64,
}

fn default_backoff() -> f64 {
    2.0
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FallbackDefinition {
    pub component_name: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub parameters: BTreeMap<String, Value>,
}

/// A stored pipeline: the definition plus what the server keeps about it.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoredPipeline {
    #[serde(flatten)]
    pub definition: PipelineDefinition,
    /// Server-kept revision, 1 on create, +1 on every PUT.
    pub revision: i64,
    pub created_at: String,
    pub updated_at: String,
}

wire_enum! {
    /// Where an execution is: pending, running, then one of the last four.
    /// `partially_failed`: some of its inputs completed and some failed.
    pub enum ExecutionStatus ("execution status") {
        Pending = "pending",
        Running = "running",
        Completed = "completed",
        Failed = "failed",
        Cancelled = "cancelled",
        PartiallyFailed = "partially_failed",
    }
}

impl ExecutionStatus {
    /// `FromStr` without the reason, for callers that supply their own.
    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Failed | Self::Cancelled | Self::PartiallyFailed
        )
    }
}

wire_enum! {
    /// Where one step of an execution is: `retrying` between attempts,
    /// `skipped` when it failed with `continueOnFailure`.
    pub enum StepStatus ("step status") {
        Pending = "pending",
        Running = "running",
        Retrying = "retrying",
        Completed = "completed",
        Failed = "failed",
        Skipped = "skipped",
        Cancelled = "cancelled",
    }
}

impl StepStatus {
    /// `FromStr` without the reason, for callers that supply their own.
    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }
}

/// An image a step wrote, registered as a file so it can be downloaded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StepOutput {
    pub file_id: String,
    pub bucket: String,
    pub object_key: String,
    #[serde(default)]
    pub content_type: String,
    #[serde(default)]
    pub size_bytes: i64,
    #[serde(default)]
    pub width: i32,
    #[serde(default)]
    pub height: i32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BoundingBox {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Detection {
    pub class_name: String,
    pub class_id: i32,
    pub confidence: f32,
    pub bbox: BoundingBox,
}

/// One step of one execution, for one of its inputs.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct StepRecord {
    #[serde(rename = "stepId")]
    pub step_id: String,
    /// The input (0-based, in `inputs` order) this run of the step worked on.
    #[serde(default)]
    pub input_index: u32,
    #[serde(rename = "componentName")]
    pub component_name: String,
    pub status: StepStatus,
    /// 0-based level of the DAG (steps of one level may run at once).
    pub level: i32,
    pub attempts: i32,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Wall time of the step, retries included.
    pub processing_time_ms: Option<f64>,
    /// The service's own processing time of the successful attempt.
    pub service_time_ms: Option<f64>,
    pub error: Option<String>,
    /// Set when the fallback component produced the result.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub used_fallback: bool,
    pub output: Option<StepOutput>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub detections: Vec<Detection>,
}

/// One execution with its steps.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ExecutionRecord {
    pub execution_id: String,
    #[serde(rename = "pipelineId")]
    pub pipeline_id: Option<String>,
    pub pipeline_revision: Option<i64>,
    pub status: ExecutionStatus,
    pub trace_id: Option<String>,
    pub inputs: Vec<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub execution_time_ms: Option<f64>,
    pub error: Option<String>,
    /// Every step of every input, by input then plan order.
    pub steps: Vec<StepRecord>,
    /// Each input's own run through the pipeline: where it is, how it ended
    /// and its final image.
    #[serde(default)]
    pub input_results: Vec<InputResult>,
}

/// One input of an execution, run through the whole pipeline as its own unit
/// of work.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct InputResult {
    /// 0-based position in the execution's `inputs`.
    pub index: u32,
    /// As the request named it: a file_id or `s3://bucket/key`.
    pub input: String,
    pub bucket: String,
    pub object_key: String,
    /// pending, running, completed, failed or cancelled.
    pub status: ExecutionStatus,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub execution_time_ms: Option<f64>,
    pub error: Option<String>,
    /// The input's final image (the last one the pipeline wrote).
    pub output: Option<StepOutput>,
    /// Where the final images were copied (`bucket/key`), when the pipeline
    /// has an `outputPath`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copied_to: Vec<String>,
}

impl InputResult {
    /// An input that has not run yet.
    pub fn pending(index: u32, input: String, bucket: String, object_key: String) -> Self {
        Self {
            index,
            input,
            bucket,
            object_key,
            status: ExecutionStatus::Pending,
            started_at: None,
            finished_at: None,
            execution_time_ms: None,
            error: None,
            output: None,
            copied_to: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The database binds `as_str` and reads back with `parse`; the API and
    /// the UI see the serde names: all three are today's lowercase words.
    #[test]
    fn status_names_round_trip() {
        assert_eq!(
            ExecutionStatus::NAMES,
            [
                "pending",
                "running",
                "completed",
                "failed",
                "cancelled",
                "partially_failed"
            ]
        );
        assert_eq!(
            StepStatus::NAMES,
            [
                "pending",
                "running",
                "retrying",
                "completed",
                "failed",
                "skipped",
                "cancelled"
            ]
        );
        for status in ExecutionStatus::ALL {
            let json = serde_json::to_value(status).unwrap();
            assert_eq!(json, json!(status.as_str()));
            assert_eq!(
                serde_json::from_value::<ExecutionStatus>(json).unwrap(),
                *status
            );
            assert_eq!(ExecutionStatus::parse(status.as_str()), Some(*status));
            assert_eq!(status.as_str().parse::<ExecutionStatus>(), Ok(*status));
        }
        for status in StepStatus::ALL {
            let json = serde_json::to_value(status).unwrap();
            assert_eq!(json, json!(status.as_str()));
            assert_eq!(serde_json::from_value::<StepStatus>(json).unwrap(), *status);
            assert_eq!(StepStatus::parse(status.as_str()), Some(*status));
            assert_eq!(status.to_string(), status.as_str());
        }
    }

    #[test]
    fn unknown_statuses_are_refused() {
        assert_eq!(StepStatus::parse("done"), None);
        assert_eq!(ExecutionStatus::parse("Completed"), None);
        assert_eq!(
            "done".parse::<StepStatus>().unwrap_err().to_string(),
            "unknown step status \"done\"; allowed: pending, running, retrying, completed, failed, skipped, cancelled"
        );
        assert_eq!(
            "done".parse::<ExecutionStatus>().unwrap_err().to_string(),
            "unknown execution status \"done\"; allowed: pending, running, completed, failed, cancelled, partially_failed"
        );
    }
}

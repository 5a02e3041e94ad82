//! The engine against a scripted fake of the services and a real SQLite
//! database: [`order`] is the DAG's scheduling and an execution's lifecycle
//! (levels, parallel branches, deadlines, cancel, admission, shutdown),
//! [`policy`] one step's policy (retry and backoff, fallback, skip,
//! attempt deadlines, backpressure), [`inputs`] several inputs in one
//! execution.

mod inputs;
mod order;
mod policy;

use crate::model::{ExecutionRecord, StepStatus};
use crate::testing::resize;
use serde_json::json;

pub(super) fn step_status(record: &ExecutionRecord, id: &str) -> StepStatus {
    record
        .steps
        .iter()
        .find(|s| s.step_id == id)
        .unwrap_or_else(|| panic!("no step {id}"))
        .status
}

pub(super) fn retrying(id: &str, width: u32, retries: u32) -> serde_json::Value {
    let mut step = resize(id, width, &[]);
    step["retryPolicy"] = json!({"maxRetries": retries, "backoffFactor": 1.0});
    step
}

pub(super) fn with_fallback(mut step: serde_json::Value) -> serde_json::Value {
    step["fallback"] = json!({"componentName": "filter", "parameters": {"filter_type": "sharpen"}});
    step
}

//! Progress events. The payload is the `pipeline-progress` message
//! (`imageflow_events::ProgressMessage`) plus a few optional fields, so the
//! same value goes to the live stream of this process and, when Kafka is
//! configured, to the topic.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use utoipa::ToSchema;

/// One step or execution transition.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ProgressEvent {
    pub execution_id: String,
    /// Absent for execution-level and input-level events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_id: Option<String>,
    /// The input (0-based) a step event or an input-level event is about;
    /// absent for execution-level events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_index: Option<u32>,
    /// pending, running, retrying, completed, failed, skipped, cancelled,
    /// partially_failed (executions only).
    pub status: String,
    pub message: String,
    pub timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<i32>,
    /// Execution time for execution-level endings; step time for steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processing_time_ms: Option<f64>,
    /// `bucket/key` of the final image, on the end of an execution or an
    /// input (an execution with several inputs: the folder of their outputs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_path: Option<String>,
}

impl ProgressEvent {
    pub fn execution(execution_id: &str, status: &str, message: impl Into<String>) -> Self {
        Self {
            execution_id: execution_id.to_string(),
            step_id: None,
            input_index: None,
            status: status.to_string(),
            message: message.into(),
            timestamp: crate::db::Timestamp::now().to_rfc3339(),
            attempt: None,
            processing_time_ms: None,
            output_path: None,
        }
    }

    pub fn step(
        execution_id: &str,
        step_id: &str,
        status: &str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            step_id: Some(step_id.to_string()),
            ..Self::execution(execution_id, status, message)
        }
    }

    /// The end (or start) of one input's run in a several-input execution.
    pub fn input(
        execution_id: &str,
        input_index: u32,
        status: &str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            input_index: Some(input_index),
            ..Self::execution(execution_id, status, message)
        }
    }

    /// Whether this event ends its execution's stream.
    pub fn is_final(&self) -> bool {
        self.step_id.is_none()
            && self.input_index.is_none()
            && crate::model::ExecutionStatus::parse(&self.status).is_some_and(|s| s.is_terminal())
    }
}

/// Where events of this process also go (Kafka); must not block.
pub type Forward = Arc<dyn Fn(&ProgressEvent) + Send + Sync>;

/// Fan-out of events to every live stream in this process. A slow subscriber
/// loses its oldest events (and is told so), never slows the engine.
#[derive(Clone)]
pub struct EventHub {
    sender: broadcast::Sender<Arc<ProgressEvent>>,
    forward: Option<Forward>,
}

impl std::fmt::Debug for EventHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHub")
            .field("subscribers", &self.sender.receiver_count())
            .field("forwarded", &self.forward.is_some())
            .finish()
    }
}

impl Default for EventHub {
    fn default() -> Self {
        Self::new()
    }
}

impl EventHub {
    pub fn new() -> Self {
        Self {
            sender: broadcast::channel(4096).0,
            forward: None,
        }
    }

    /// A hub that also hands every event of this process to `forward`.
    pub fn with_forward(forward: Forward) -> Self {
        Self {
            forward: Some(forward),
            ..Self::new()
        }
    }

    /// An event of this process: to the live streams and, when set, onwards.
    pub fn publish(&self, event: ProgressEvent) {
        if let Some(forward) = &self.forward {
            forward(&event);
        }
        self.deliver(event);
    }

    /// An event from elsewhere (another replica, a service): to the live
    /// streams only.
    pub fn deliver(&self, event: ProgressEvent) {
        tracing::debug!(
            execution_id = %event.execution_id,
            step_id = event.step_id.as_deref().unwrap_or(""),
            status = %event.status,
            "progress"
        );
        // No subscriber is normal (nobody watching).
        let _ = self.sender.send(Arc::new(event));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<ProgressEvent>> {
        self.sender.subscribe()
    }
}

//! The policy of one step: attempts with jittered exponential backoff, then
//! the fallback, then skip (continue on failure) or fail; each attempt under
//! its own deadline, and a busy service's backpressure waited out. Every
//! transition is saved and published.

use std::time::{Duration, Instant};

use imageflow_proto::v1::ImageData;
use imageflow_retry::Backoff;

use super::{CallRequest, Engine, run::retry_db};
use crate::{
    clients::{CallError, CallResult},
    dag::PlannedStep,
    db::{FileRecord, Timestamp},
    events::ProgressEvent,
    model::{StepOutput, StepRecord, StepStatus},
    registry::{AI_DETECTION, StepCall},
};

/// First wait between attempts; attempt n waits base x factor^(n-1), jittered.
const BASE_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// An attempt's deadline when neither the step nor the server sets one: image
/// work takes milliseconds to seconds, inference on a CPU can take longer.
const SERVICE_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
const INFERENCE_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);

/// What a finished step hands to its dependents.
pub(super) enum StepEnd {
    Done { image: ImageData },
    Failed(String),
}

/// Runs the steps of one input of one execution.
pub(super) struct StepRunner {
    engine: Engine,
    execution_id: String,
    input_index: u32,
    /// Whether the execution has several inputs: then the services are told
    /// the input, and keep its outputs in a folder of their own.
    several: bool,
}

impl StepRunner {
    pub(super) fn new(
        engine: Engine,
        execution_id: String,
        input_index: u32,
        several: bool,
    ) -> Self {
        Self {
            engine,
            execution_id,
            input_index,
            several,
        }
    }

    async fn save(&self, record: &StepRecord) {
        let db = &self.engine.inner.db;
        let saved = retry_db("record step progress in the database", || {
            db.save_step(&self.execution_id, record)
        })
        .await;
        if let Err(err) = saved {
            tracing::warn!(error = %err, step_id = %record.step_id, "cannot record step progress");
        }
    }

    fn publish(&self, record: &StepRecord, message: impl Into<String>) {
        let mut event = ProgressEvent::step(
            &self.execution_id,
            &record.step_id,
            record.status.as_str(),
            message,
        );
        event.attempt = Some(record.attempts);
        event.input_index = Some(self.input_index);
        event.processing_time_ms = record.processing_time_ms;
        self.engine.inner.events.publish(event);
    }

    fn attempt_timeout(&self, step: &PlannedStep, call: &StepCall) -> Duration {
        if let Some(t) = step.definition.timeout_seconds {
            return Duration::from_secs_f64(t);
        }
        if let Some(t) = self.engine.inner.settings.step_timeout {
            return t;
        }
        if call.component() == AI_DETECTION {
            INFERENCE_ATTEMPT_TIMEOUT
        } else {
            SERVICE_ATTEMPT_TIMEOUT
        }
    }

    /// Runs one step: attempts with backoff, then the fallback, then
    /// skip-or-fail. Leaves `record` in its final state (saved and published).
    pub(super) async fn run_step(
        &self,
        step: &PlannedStep,
        input: &ImageData,
        record: &mut StepRecord,
    ) -> StepEnd {
        let started = Instant::now();
        record.started_at = Some(Timestamp::now().to_rfc3339());
        let mut outcome = self.attempts(step, &step.call, input, record).await;
        if let (Err(err), Some(fallback)) = (&outcome, &step.fallback) {
            tracing::warn!(error = %err, fallback = fallback.component(), "step failed; running its fallback");
            self.publish(
                record,
                format!("failed ({err}); running fallback {}", fallback.component()),
            );
            outcome = self.attempts(step, fallback, input, record).await;
            record.used_fallback = outcome.is_ok();
        }

        record.finished_at = Some(Timestamp::now().to_rfc3339());
        let elapsed = started.elapsed();
        record.processing_time_ms = Some(elapsed.as_secs_f64() * 1000.0);
        let (end, message) = match outcome {
            Ok(result) => {
                record.status = StepStatus::Completed;
                record.error = None;
                record.service_time_ms = Some(result.service_time.as_secs_f64() * 1000.0);
                record.detections = result.detections;
                let image = match result.output {
                    Some(image) => {
                        record.output = self.register_output(&image).await;
                        image
                    }
                    // Detection without drawing: the input image goes on.
                    None => input.clone(),
                };
                let message = format!("completed in {:.1} ms", elapsed.as_secs_f64() * 1000.0);
                (StepEnd::Done { image }, message)
            }
            Err(reason) if step.definition.continue_on_failure => {
                record.status = StepStatus::Skipped;
                let message = format!("skipped after failure: {reason}");
                record.error = Some(reason);
                let image = input.clone();
                (StepEnd::Done { image }, message)
            }
            Err(reason) => {
                imageflow_telemetry::spans::record_error(&tracing::Span::current(), &reason);
                record.status = StepStatus::Failed;
                record.error = Some(reason.clone());
                (StepEnd::Failed(reason.clone()), reason)
            }
        };
        let component = step.definition.component_name.as_str();
        self.engine
            .inner
            .metrics
            .step_finished(component, record.status.as_str(), elapsed);
        self.save(record).await;
        self.publish(record, message);
        end
    }

    /// The first attempt plus up to `maxRetries` retries of retryable failures.
    async fn attempts(
        &self,
        step: &PlannedStep,
        call: &StepCall,
        input: &ImageData,
        record: &mut StepRecord,
    ) -> Result<CallResult, String> {
        let policy = step.definition.retry_policy.as_ref();
        let max_retries = policy.map_or(0, |p| p.max_retries);
        let backoff = Backoff::new(
            BASE_BACKOFF,
            policy.map_or(2.0, |p| p.backoff_factor),
            MAX_BACKOFF,
        );
        let timeout = self.attempt_timeout(step, call);
        let mut retry = 0;
        loop {
            record.attempts += 1;
            record.status = StepStatus::Running;
            self.save(record).await;
            self.publish(
                record,
                format!("attempt {} on {}", record.attempts, call.component()),
            );
            let err = match self.call_through_backpressure(call, input, timeout).await {
                Ok(result) => return Ok(result),
                Err(err) => err,
            };
            let text = err.describe(call.component());
            self.engine
                .inner
                .metrics
                .call_failed(call.component(), err.status.code());
            if !err.is_retryable() || retry >= max_retries {
                let note = if err.is_retryable() && max_retries > 0 {
                    format!(" (after {} attempts)", retry + 1)
                } else {
                    String::new()
                };
                return Err(format!("{text}{note}"));
            }
            retry += 1;
            let wait = retry_wait(&backoff, retry, &err);
            record.status = StepStatus::Retrying;
            record.error = Some(text.clone());
            self.save(record).await;
            self.publish(
                record,
                format!(
                    "{text}; retry {retry}/{max_retries} in {} ms",
                    wait.as_millis()
                ),
            );
            tracing::info!(error = %text, retry, wait_ms = wait.as_millis() as u64, "retrying step");
            tokio::time::sleep(wait).await;
        }
    }

    /// One call, waiting out the service's backpressure: a RESOURCE_EXHAUSTED
    /// with a `retry-after-ms` hint means the service refused before doing any
    /// work and said when to come back, so waiting is queueing, not a failed
    /// attempt. It spends the attempt's time budget, not `maxRetries` (a
    /// pipeline without a retry policy would otherwise fail at the first
    /// refusal of a busy service). Past the budget the refusal is returned
    /// and the retry policy decides.
    async fn call_through_backpressure(
        &self,
        call: &StepCall,
        input: &ImageData,
        timeout: Duration,
    ) -> Result<CallResult, CallError> {
        let started = Instant::now();
        let mut refusals = 0u32;
        loop {
            let left = timeout.saturating_sub(started.elapsed());
            let err = match self.call_once(call, input, left).await {
                Ok(result) => {
                    if refusals > 0 {
                        tracing::info!(
                            refusals,
                            waited_ms = started.elapsed().as_millis() as u64,
                            "service admitted the call after backpressure"
                        );
                    }
                    return Ok(result);
                }
                Err(err) => err,
            };
            let Some(hint) = err
                .retry_after
                .filter(|_| err.status.code() == tonic::Code::ResourceExhausted)
            else {
                return Err(err);
            };
            let wait = imageflow_retry::spread(hint.min(MAX_BACKOFF));
            if started.elapsed() + wait >= timeout {
                return Err(err);
            }
            refusals += 1;
            self.engine
                .inner
                .metrics
                .call_failed(call.component(), err.status.code());
            tracing::debug!(
                refusals,
                wait_ms = wait.as_millis() as u64,
                "service over its concurrency limit; waiting"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// One call within `left`: the engine enforces the attempt deadline
    /// itself, whatever the caller does with the timeout it is given.
    async fn call_once(
        &self,
        call: &StepCall,
        input: &ImageData,
        left: Duration,
    ) -> Result<CallResult, CallError> {
        let attempt = self.engine.inner.caller.call(CallRequest {
            call,
            input,
            execution_id: &self.execution_id,
            input_index: self.several.then_some(self.input_index),
            timeout: left,
        });
        match tokio::time::timeout(left, attempt).await {
            Ok(result) => result,
            Err(_) => Err(CallError::from(tonic::Status::deadline_exceeded(format!(
                "no answer within the attempt deadline of {:.1} s",
                left.as_secs_f64()
            )))),
        }
    }

    /// Registers a service's output object as a downloadable file.
    async fn register_output(&self, image: &ImageData) -> Option<StepOutput> {
        let bucket = if image.bucket.is_empty() {
            self.engine.inner.default_bucket.clone()
        } else {
            image.bucket.clone()
        };
        let file = FileRecord {
            file_id: uuid::Uuid::new_v4().to_string(),
            bucket,
            object_key: image.object_key.clone(),
            content_type: image.content_type.clone(),
            size_bytes: image.size_bytes,
            width: i64::from(image.width),
            height: i64::from(image.height),
            filename: image.object_key.rsplit('/').next().map(str::to_string),
            execution_id: Some(self.execution_id.clone()),
            created_at: Timestamp::now().to_rfc3339(),
        };
        if let Err(err) = self.engine.inner.db.insert_file(&file).await {
            tracing::warn!(error = %err, "cannot register a step output as a file");
        }
        Some(StepOutput {
            file_id: file.file_id,
            bucket: file.bucket,
            object_key: file.object_key,
            content_type: file.content_type,
            size_bytes: file.size_bytes,
            width: image.width,
            height: image.height,
        })
    }
}

/// The wait before retry `retry`: the policy's jittered backoff, never
/// shorter than the service's own retry hint.
pub(super) fn retry_wait(backoff: &Backoff, retry: u32, err: &CallError) -> Duration {
    let wait = backoff.delay(retry);
    match err.retry_after {
        Some(hint) => wait.max(hint.min(MAX_BACKOFF)),
        None => wait,
    }
}

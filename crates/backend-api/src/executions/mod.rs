//! The execution use-case, whoever asks: accept a request (check it, record
//! it, run it here or hand it to the queue), fail an execution with a reason,
//! and the queue message of a recorded execution. The HTTP handlers and the
//! Kafka consumer only map their inputs and outputs onto it.

pub mod inputs;
#[cfg(test)]
mod tests;

use std::{collections::BTreeMap, future::Future, pin::Pin, sync::Arc, time::Duration};

use imageflow_events::ExecutionRequest;
use imageflow_proto::v1::ImageData;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::{broadcast, oneshot};
use utoipa::ToSchema;

pub use inputs::{Buckets, MAX_INPUTS, Resolved};

use crate::{
    dag::{self, Plan, PlanError},
    db::{Db, QUEUE_OWNER, Timestamp},
    engine::{Engine, OutputTarget, Submission, SubmitError, UnitInput, initial_records},
    events::ProgressEvent,
    model::{ExecutionRecord, ExecutionStatus, InputResult, PipelineDefinition},
};

/// Start an execution of a stored pipeline (`pipelineId`) or of an inline one
/// (`pipeline`) on one or more images.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct CreateExecution {
    #[serde(rename = "pipelineId", default)]
    pub pipeline_id: Option<String>,
    /// A past revision of the stored pipeline; the latest when absent.
    #[serde(rename = "pipelineRevision", default)]
    pub pipeline_revision: Option<i64>,
    #[serde(default)]
    pub pipeline: Option<PipelineDefinition>,
    /// What to run on, at most 100: file_ids from `POST /v1/files`, object
    /// references `s3://bucket/key`, or `s3://bucket/prefix/` for every image
    /// under a prefix. Each input runs through the whole pipeline as its own
    /// unit of work. Empty (or absent) when the pipeline's
    /// `globalParameters.inputPath` names the input.
    #[serde(default)]
    pub inputs: Vec<String>,
    /// Per-step parameter overrides: `{"<stepId>": {"width": 320}}`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub parameters: BTreeMap<String, Value>,
    /// Client-chosen id, making the request idempotent: repeating it returns
    /// the existing execution instead of starting another.
    #[serde(default)]
    pub execution_id: Option<String>,
}

/// Why an execution was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// The request itself is wrong; the message says how.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A pipeline or input file it names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The object store could not be asked about the inputs.
    #[error("the object store is unavailable: {0}")]
    Storage(String),
    /// No room in this replica, or it is shutting down.
    #[error(transparent)]
    Busy(#[from] SubmitError),
    /// Queue mode: the broker did not take the execution (it is recorded failed).
    #[error("the execution queue (Kafka) is unavailable: {0}")]
    QueueDown(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Where executions go to run when they do not run in the replica that
/// accepted them (queue mode: Kafka's `pipeline-executions`).
pub trait ExecutionQueue: Send + Sync + std::fmt::Debug + 'static {
    /// Resolves once the queue holds the request (a lost request must be an
    /// error, not a drop).
    fn enqueue<'a>(
        &'a self,
        request: &'a ExecutionRequest,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;
}

/// The outcome of an accepted request.
#[derive(Debug)]
pub enum Admission {
    /// The request named an execution id that exists: that execution.
    Existing(Box<ExecutionRecord>),
    Started(Started),
}

/// An execution that was recorded and is running or queued.
#[derive(Debug)]
pub struct Started {
    pub execution_id: String,
    /// The pipeline's own deadline, if it has one.
    pub timeout: Option<Duration>,
    /// How many deadlines the whole may take: its inputs run a few at a time.
    rounds: u32,
    /// Subscribed before the run started (when the caller wants to wait), so
    /// its end cannot be missed.
    events: Option<broadcast::Receiver<Arc<ProgressEvent>>>,
}

/// The execution use-case. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Executions {
    db: Db,
    engine: Engine,
    /// Queue mode only.
    queue: Option<Arc<dyn ExecutionQueue>>,
}

impl Executions {
    pub fn new(db: Db, engine: Engine, queue: Option<Arc<dyn ExecutionQueue>>) -> Self {
        Self { db, engine, queue }
    }

    /// Checks a pipeline's `inputPath`/`outputPath` (for pipelines being saved).
    pub fn check_paths(&self, definition: &PipelineDefinition) -> Result<(), String> {
        inputs::check_paths(definition, self.engine.buckets())
    }

    /// Checks, records and starts (or queues) an execution. With `wait`, the
    /// returned [`Started`] can be waited on with [`Executions::wait_for_end`].
    pub async fn accept(
        &self,
        request: CreateExecution,
        wait: bool,
        actor: &str,
    ) -> Result<Admission, AcceptError> {
        if let Some(id) = &request.execution_id {
            if !crate::valid_id(id) {
                return Err(AcceptError::Invalid(
                    "execution_id must be 1-128 characters of letters, digits, '-', '_' or '.'"
                        .into(),
                ));
            }
            if let Some(existing) = self.db.get_execution(id).await? {
                return Ok(Admission::Existing(Box::new(existing)));
            }
        }
        let (definition, pipeline_id, revision) = self.definition_of(&request).await?;
        let plan = dag::plan(&definition, &request.parameters)?;
        let buckets = self.engine.buckets();
        inputs::check_paths(&definition, buckets).map_err(AcceptError::Invalid)?;
        let output_target =
            inputs::output_target(&definition, buckets).map_err(AcceptError::Invalid)?;
        self.engine.check_capacity()?;
        let resolved = inputs::resolve(
            &self.db,
            self.engine.store(),
            buckets,
            &request.inputs,
            &definition,
        )
        .await?;

        let execution_id = request
            .execution_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let record = pending_record(
            &execution_id,
            pipeline_id.clone(),
            revision,
            &resolved,
            &plan,
        );
        let parameters = serde_json::to_value(&request.parameters).unwrap_or(Value::Null);
        let owner = match self.queue {
            Some(_) => QUEUE_OWNER,
            None => self.engine.owner(),
        };
        self.db
            .create_execution(&record, &definition, &parameters, owner)
            .await?;
        let events = wait.then(|| self.engine.events().subscribe());
        let timeout = definition.timeout_seconds.map(Duration::from_secs_f64);
        if let Some(queue) = &self.queue {
            let message = request_message(
                &execution_id,
                pipeline_id,
                &definition,
                parameters,
                &resolved,
            );
            if let Err(err) = queue.enqueue(&message).await {
                fail(
                    &self.db,
                    &execution_id,
                    &format!("could not be queued: {err}"),
                )
                .await?;
                return Err(AcceptError::QueueDown(err));
            }
            tracing::info!(actor, execution_id = %execution_id, "execution queued");
        } else {
            let parent = imageflow_telemetry::propagation::context_of(&tracing::Span::current());
            let run = submission(
                &execution_id,
                plan,
                &resolved,
                output_target,
                timeout,
                record.pipeline_id.clone(),
            );
            self.engine.submit(Submission { parent, ..run })?;
            tracing::info!(actor, execution_id = %execution_id, inputs = resolved.len(), pipeline_id = record.pipeline_id.as_deref().unwrap_or("inline"), "execution accepted");
        }
        let parallel = self.engine.max_parallel_inputs().max(1);
        let rounds = u32::try_from(resolved.len().div_ceil(parallel)).unwrap_or(u32::MAX);
        Ok(Admission::Started(Started {
            execution_id,
            timeout,
            rounds,
            events,
        }))
    }

    /// The definition a request runs: the stored pipeline (at a revision) or
    /// the inline one, never both.
    async fn definition_of(
        &self,
        request: &CreateExecution,
    ) -> Result<(PipelineDefinition, Option<String>, Option<i64>), AcceptError> {
        match (&request.pipeline_id, &request.pipeline) {
            (Some(_), Some(_)) => Err(AcceptError::Invalid(
                "give either pipelineId (a stored pipeline) or pipeline (inline), not both".into(),
            )),
            (None, None) => Err(AcceptError::Invalid(
                "give pipelineId (a stored pipeline) or pipeline (an inline definition)".into(),
            )),
            (Some(id), None) => {
                let stored = self
                    .db
                    .get_pipeline(id, request.pipeline_revision)
                    .await?
                    .ok_or_else(|| AcceptError::NotFound(format!("no pipeline with id {id:?}")))?;
                Ok((stored.definition, Some(id.clone()), Some(stored.revision)))
            }
            (None, Some(inline)) => Ok((inline.clone(), None, None)),
        }
    }

    /// Waits for the end of an execution accepted with `wait` (at most its
    /// deadline, per round of inputs run at once, plus a minute of queueing)
    /// and returns it as recorded; it may still be running when the wait ran
    /// out.
    pub async fn wait_for_end(
        &self,
        started: Started,
    ) -> Result<Option<ExecutionRecord>, sqlx::Error> {
        let Started {
            execution_id,
            timeout,
            rounds,
            events,
        } = started;
        if let Some(mut events) = events {
            let limit = timeout.unwrap_or(Duration::from_secs(300)) * rounds.max(1)
                + Duration::from_secs(60);
            let _ = tokio::time::timeout(limit, async {
                loop {
                    match events.recv().await {
                        Ok(event) if event.execution_id == execution_id && event.is_final() => {
                            break;
                        }
                        Ok(_) => {}
                        // Events were dropped, maybe the final one: ask the database.
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            let status = self.db.execution_status(&execution_id).await;
                            if matches!(status, Ok(Some(s)) if s.is_terminal()) {
                                break;
                            }
                        }
                        Err(broadcast::error::RecvError::Closed) => break,
                    }
                }
            })
            .await;
        }
        self.db.get_execution(&execution_id).await
    }
}

/// The record of an execution just accepted: pending, every input and
/// every step of each pending, in the trace of the request that is accepting
/// it (the run joins that trace, so the record leads to it).
pub(crate) fn pending_record(
    execution_id: &str,
    pipeline_id: Option<String>,
    pipeline_revision: Option<i64>,
    inputs: &[Resolved],
    plan: &Plan,
) -> ExecutionRecord {
    let positions = (0..inputs.len()).map(|i| u32::try_from(i).unwrap_or(u32::MAX));
    ExecutionRecord {
        execution_id: execution_id.to_string(),
        pipeline_id,
        pipeline_revision,
        status: ExecutionStatus::Pending,
        trace_id: imageflow_telemetry::propagation::current_trace_id(),
        inputs: inputs.iter().map(|i| i.source.clone()).collect(),
        created_at: Timestamp::now().to_rfc3339(),
        started_at: None,
        finished_at: None,
        execution_time_ms: None,
        error: None,
        steps: positions
            .clone()
            .flat_map(|index| initial_records(plan, index))
            .collect(),
        input_results: positions
            .zip(inputs)
            .map(|(index, input)| {
                InputResult::pending(
                    index,
                    input.source.clone(),
                    input.bucket.clone(),
                    input.object_key.clone(),
                )
            })
            .collect(),
    }
}

/// Ends an execution as failed with a reason a person can act on; `false`
/// when it had already ended.
pub async fn fail(db: &Db, id: &str, reason: &str) -> Result<bool, sqlx::Error> {
    tracing::warn!(execution_id = %id, reason, "execution failed");
    db.finish_execution(
        id,
        ExecutionStatus::Failed,
        Some(reason),
        Timestamp::now(),
        None,
    )
    .await
}

/// The `pipeline-executions` message of an execution. `input_data` keeps
/// the first input's `bucket`/`object_key` as single-input consumers read
/// them, and lists every input under `inputs`.
pub fn request_message(
    execution_id: &str,
    pipeline_id: Option<String>,
    definition: &PipelineDefinition,
    parameters: Value,
    inputs: &[Resolved],
) -> ExecutionRequest {
    let first = inputs.first();
    ExecutionRequest {
        execution_id: execution_id.to_string(),
        pipeline_config: serde_json::to_value(definition).unwrap_or(Value::Null),
        input_data: serde_json::json!({
            "file_ids": inputs.iter().map(|i| i.source.as_str()).collect::<Vec<_>>(),
            "bucket": first.map(|i| i.bucket.as_str()),
            "object_key": first.map(|i| i.object_key.as_str()),
            "inputs": inputs.iter().map(|i| serde_json::json!({
                "source": i.source,
                "bucket": i.bucket,
                "object_key": i.object_key,
            })).collect::<Vec<_>>(),
        }),
        parameters,
        pipeline_id,
    }
}

/// A recorded execution as the engine runs it.
fn submission(
    execution_id: &str,
    plan: Plan,
    inputs: &[Resolved],
    output_target: Option<OutputTarget>,
    timeout: Option<Duration>,
    pipeline_id: Option<String>,
) -> Submission {
    Submission {
        execution_id: execution_id.to_string(),
        plan,
        inputs: inputs
            .iter()
            .map(|input| UnitInput {
                source: input.source.clone(),
                image: ImageData {
                    bucket: input.bucket.clone(),
                    object_key: input.object_key.clone(),
                    ..Default::default()
                },
            })
            .collect(),
        output_target,
        timeout,
        pipeline_id,
        parent: Default::default(),
        claimed: None,
    }
}

/// A recorded execution, read back from the database.
struct Stored {
    record: ExecutionRecord,
    definition: PipelineDefinition,
    parameters: Value,
    inputs: Vec<Resolved>,
}

async fn stored(db: &Db, id: &str) -> Result<Stored, String> {
    let database = |e: sqlx::Error| format!("database: {e}");
    let record = db
        .get_execution(id)
        .await
        .map_err(database)?
        .ok_or("the execution disappeared")?;
    let (definition, parameters) = db
        .execution_input(id)
        .await
        .map_err(database)?
        .ok_or("the execution disappeared")?;
    let mut inputs: Vec<Resolved> = record
        .input_results
        .iter()
        .map(|i| Resolved {
            source: i.input.clone(),
            bucket: i.bucket.clone(),
            object_key: i.object_key.clone(),
        })
        .collect();
    if inputs.is_empty() {
        // Recorded before executions kept their inputs: one uploaded file.
        let input_id = record.inputs.first().ok_or("the execution has no input")?;
        let file = db
            .get_file(input_id)
            .await
            .map_err(database)?
            .ok_or_else(|| format!("input file {input_id} no longer exists"))?;
        inputs.push(Resolved {
            source: input_id.clone(),
            bucket: file.bucket,
            object_key: file.object_key,
        });
    }
    Ok(Stored {
        record,
        definition,
        parameters,
        inputs,
    })
}

/// A recorded execution ready to run in this replica, and the receiver told
/// whether the replica claimed it (see [`Submission::claimed`]).
pub async fn stored_submission(
    db: &Db,
    buckets: &Buckets,
    id: &str,
    parent: imageflow_telemetry::propagation::Context,
) -> Result<(Submission, oneshot::Receiver<bool>), String> {
    let Stored {
        record,
        definition,
        parameters,
        inputs,
    } = stored(db, id).await?;
    claimable(
        id,
        &definition,
        parameters,
        &inputs,
        record.pipeline_id,
        buckets,
        parent,
    )
}

/// A recorded execution's parts (wherever they were read from) as a run this
/// replica may claim, and the receiver told whether it did.
fn claimable(
    id: &str,
    definition: &PipelineDefinition,
    parameters: Value,
    inputs: &[Resolved],
    pipeline_id: Option<String>,
    buckets: &Buckets,
    parent: imageflow_telemetry::propagation::Context,
) -> Result<(Submission, oneshot::Receiver<bool>), String> {
    let overrides: dag::Overrides = serde_json::from_value(parameters).unwrap_or_default();
    let plan = dag::plan(definition, &overrides).map_err(|e| e.to_string())?;
    let output_target = inputs::output_target(definition, buckets)?;
    let timeout = definition.timeout_seconds.map(Duration::from_secs_f64);
    let (tx, rx) = oneshot::channel();
    let run = submission(id, plan, inputs, output_target, timeout, pipeline_id);
    Ok((
        Submission {
            parent,
            claimed: Some(tx),
            ..run
        },
        rx,
    ))
}

/// A queued execution as its message describes it: the queue's contract
/// (`pipeline_config`, `input_data`, `parameters`; DESIGN.md §5) carries the
/// definition, the overrides and the resolved inputs the accepting replica
/// recorded, so the consumer needs no reads of its own. The database still
/// decides: the run starts only if the claim (pending → running) succeeds, so a
/// message delivered twice, or for a cancelled or unknown execution, runs
/// nothing. `Ok(None)` when the message lacks a part (written by an older
/// producer, or with no inputs): the caller reads the record instead
/// ([`stored_submission`]). An input outside the allowed buckets is an error.
pub fn queued_submission(
    request: &ExecutionRequest,
    buckets: &Buckets,
    parent: imageflow_telemetry::propagation::Context,
) -> Result<Option<(Submission, oneshot::Receiver<bool>)>, String> {
    let Ok(definition) =
        serde_json::from_value::<PipelineDefinition>(request.pipeline_config.clone())
    else {
        return Ok(None);
    };
    let Some(inputs) = message_inputs(&request.input_data) else {
        return Ok(None);
    };
    for (i, input) in inputs.iter().enumerate() {
        buckets.check(&input.bucket, &format!("input_data.inputs[{i}].bucket"))?;
    }
    claimable(
        &request.execution_id,
        &definition,
        request.parameters.clone(),
        &inputs,
        request.pipeline_id.clone(),
        buckets,
        parent,
    )
    .map(Some)
}

/// The resolved inputs of a queue message ([`request_message`]'s
/// `input_data.inputs`); `None` when absent, empty or not of that shape.
fn message_inputs(input_data: &Value) -> Option<Vec<Resolved>> {
    let inputs: Vec<Resolved> = serde_json::from_value(input_data.get("inputs")?.clone()).ok()?;
    (!inputs.is_empty() && inputs.len() <= MAX_INPUTS).then_some(inputs)
}

/// Hands a recorded execution to the queue again (its replica died); if that
/// fails, fails the execution with the reason rather than leaving it waiting
/// for a message that never comes.
pub async fn requeue(queue: &dyn ExecutionQueue, db: &Db, id: &str) {
    let sent = match stored(db, id).await {
        Ok(s) => {
            let message = request_message(
                id,
                s.record.pipeline_id.clone(),
                &s.definition,
                s.parameters,
                &s.inputs,
            );
            queue.enqueue(&message).await
        }
        Err(reason) => Err(reason),
    };
    if let Err(reason) = sent {
        let reason = format!("interrupted, and it could not be queued again: {reason}");
        if let Err(err) = fail(db, id, &reason).await {
            tracing::error!(execution_id = %id, error = %err, "cannot record the failed requeue");
        }
    }
}

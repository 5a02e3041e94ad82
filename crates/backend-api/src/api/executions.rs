//! Executions: start (queued, or `?wait=true` for the one-round-trip path),
//! read, list, cancel, and watch live as Server-Sent Events.

use std::{collections::BTreeMap, convert::Infallible, time::Duration};

use axum::{
    Extension, Json,
    extract::{Path, Query, State, rejection::JsonRejection},
    http::{StatusCode, header},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures::Stream;
use imageflow_proto::v1::ImageData;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use utoipa::{IntoParams, ToSchema};

use super::{Actor, AppState, pipelines::valid_id};
use crate::{
    dag,
    db::{ExecutionFilter, now},
    engine::{Submission, SubmitError, initial_records},
    error::{ApiError, ApiResult, ErrorBody},
    events::ProgressEvent,
    model::{ExecutionRecord, ExecutionStatus, PipelineDefinition},
};

/// Start an execution of a stored pipeline (`pipelineId`) or of an inline one
/// (`pipeline`) on one uploaded image.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateExecution {
    #[serde(rename = "pipelineId", default)]
    pub pipeline_id: Option<String>,
    /// A past revision of the stored pipeline; the latest when absent.
    #[serde(rename = "pipelineRevision", default)]
    pub pipeline_revision: Option<i64>,
    #[serde(default)]
    pub pipeline: Option<PipelineDefinition>,
    /// file_ids from `POST /v1/files`. One image per execution: start one
    /// execution per image to process several (they run in parallel).
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

#[derive(Debug, Deserialize, IntoParams)]
pub struct CreateQuery {
    /// Wait for the end and answer with the finished execution (the
    /// low-latency path); at most the execution's deadline.
    #[serde(default)]
    pub wait: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    pub execution_id: String,
    pub status: ExecutionStatus,
    /// Where to read it and watch it.
    pub links: Links,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Links {
    #[serde(rename = "self")]
    pub this: String,
    pub events: String,
    pub cancel: String,
}

fn links(id: &str) -> Links {
    Links {
        this: format!("/v1/executions/{id}"),
        events: format!("/v1/executions/{id}/events"),
        cancel: format!("/v1/executions/{id}/cancel"),
    }
}

/// Start an execution.
#[utoipa::path(post, path = "/v1/executions", tag = "executions",
    params(CreateQuery),
    request_body = CreateExecution,
    responses(
        (status = 202, description = "accepted; runs in the background", body = Accepted),
        (status = 200, description = "with ?wait=true: the finished execution (completed, failed or cancelled)", body = ExecutionRecord),
        (status = 400, body = ErrorBody), (status = 404, description = "unknown pipeline or input file", body = ErrorBody),
        (status = 503, description = "queue full or shutting down; see Retry-After", body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Query(query): Query<CreateQuery>,
    body: Result<Json<CreateExecution>, JsonRejection>,
) -> ApiResult<Response> {
    let Json(request) = body?;
    if let Some(id) = &request.execution_id {
        if !valid_id(id) {
            return Err(ApiError::bad_request(
                "execution_id must be 1-128 characters of letters, digits, '-', '_' or '.'",
            ));
        }
        if let Some(existing) = state.db.get_execution(id).await? {
            return Ok((StatusCode::OK, Json(existing)).into_response());
        }
    }
    let (definition, pipeline_id, revision) = match (&request.pipeline_id, request.pipeline) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "give either pipelineId (a stored pipeline) or pipeline (inline), not both",
            ));
        }
        (None, None) => {
            return Err(ApiError::bad_request(
                "give pipelineId (a stored pipeline) or pipeline (an inline definition)",
            ));
        }
        (Some(id), None) => {
            let stored = state
                .db
                .get_pipeline(id, request.pipeline_revision)
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("no pipeline with id {id:?}")))?;
            (stored.definition, Some(id.clone()), Some(stored.revision))
        }
        (None, Some(inline)) => (inline, None, None),
    };
    let plan = dag::plan(&definition, &request.parameters)?;
    let [input_id] = request.inputs.as_slice() else {
        return Err(ApiError::bad_request(format!(
            "inputs must hold exactly one file_id (got {}); start one execution per image",
            request.inputs.len()
        )));
    };
    let file = state
        .db
        .get_file(input_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no file with id {input_id:?} (inputs)")))?;
    state.engine.check_capacity().map_err(submit_error)?;

    let execution_id = request
        .execution_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let record = ExecutionRecord {
        execution_id: execution_id.clone(),
        pipeline_id,
        pipeline_revision: revision,
        status: ExecutionStatus::Pending,
        // The request's trace; the run joins it, so the record leads to it.
        trace_id: imageflow_telemetry::propagation::current_trace_id(),
        inputs: request.inputs.clone(),
        created_at: now().0,
        started_at: None,
        finished_at: None,
        execution_time_ms: None,
        error: None,
        steps: initial_records(&plan),
    };
    let parameters = serde_json::to_value(&request.parameters).unwrap_or(Value::Null);
    let queued = match (&state.kafka, state.execution_mode) {
        (Some(link), crate::queue::ExecutionMode::Queue) => Some(link),
        _ => None,
    };
    let owner = match queued {
        Some(_) => crate::db::QUEUE_OWNER,
        None => state.engine.owner(),
    };
    state
        .db
        .create_execution(&record, &definition, &parameters, owner)
        .await?;
    // Subscribed before the run starts, so the end cannot be missed.
    let mut events = query.wait.then(|| state.engine.events().subscribe());
    let timeout = definition.timeout_seconds.map(Duration::from_secs_f64);
    if let Some(link) = queued {
        let message = imageflow_events::ExecutionRequest {
            execution_id: execution_id.clone(),
            pipeline_config: serde_json::to_value(&definition).unwrap_or(Value::Null),
            input_data: serde_json::json!({
                "file_ids": request.inputs,
                "bucket": file.bucket,
                "object_key": file.object_key,
            }),
            parameters,
        };
        if let Err(err) = link.enqueue(&message).await {
            let reason = format!("could not be queued: {err}");
            let (at, _) = now();
            state
                .db
                .finish_execution(
                    &execution_id,
                    ExecutionStatus::Failed,
                    Some(&reason),
                    &at,
                    None,
                )
                .await?;
            return Err(ApiError::Unavailable {
                message: format!("the execution queue (Kafka) is unavailable: {err}"),
                retry_after_secs: 5,
            });
        }
        tracing::info!(actor = %actor.0, execution_id = %execution_id, "execution queued");
    } else {
        state
            .engine
            .submit(Submission {
                execution_id: execution_id.clone(),
                plan,
                input: ImageData {
                    bucket: file.bucket,
                    object_key: file.object_key,
                    ..Default::default()
                },
                timeout,
                pipeline_id: record.pipeline_id.clone(),
                parent: imageflow_telemetry::propagation::context_of(&tracing::Span::current()),
                claimed: None,
            })
            .map_err(submit_error)?;
        tracing::info!(actor = %actor.0, execution_id = %execution_id, pipeline_id = record.pipeline_id.as_deref().unwrap_or("inline"), "execution accepted");
    }

    if let Some(events) = events.as_mut() {
        // Bounded by the execution deadline plus the queue; the engine always
        // ends an execution, so this only guards against a lost event.
        let limit = timeout.unwrap_or(Duration::from_secs(300)) + Duration::from_secs(60);
        let _ = tokio::time::timeout(limit, async {
            loop {
                match events.recv().await {
                    Ok(event) if event.execution_id == execution_id && event.is_final() => break,
                    Ok(_) => {}
                    // Events were dropped, maybe the final one: ask the database.
                    Err(RecvError::Lagged(_)) => {
                        if matches!(state.db.execution_status(&execution_id).await, Ok(Some(s)) if s.is_terminal())
                        {
                            break;
                        }
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        })
        .await;
        let finished = state
            .db
            .get_execution(&execution_id)
            .await?
            .ok_or_else(|| ApiError::Internal("execution vanished".into()))?;
        let code = if finished.status.is_terminal() {
            StatusCode::OK
        } else {
            StatusCode::ACCEPTED
        };
        return Ok((code, Json(finished)).into_response());
    }
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/v1/executions/{execution_id}"))],
        Json(Accepted {
            links: links(&execution_id),
            execution_id,
            status: ExecutionStatus::Pending,
        }),
    )
        .into_response())
}

fn submit_error(err: SubmitError) -> ApiError {
    ApiError::Unavailable {
        message: err.to_string(),
        retry_after_secs: 1,
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    /// 1-200, default 20.
    pub limit: Option<i64>,
    /// pending, running, completed, failed or cancelled.
    pub status: Option<String>,
    #[serde(rename = "pipelineId")]
    pub pipeline_id: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExecutionList {
    pub executions: Vec<ExecutionRecord>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// List executions, newest first.
#[utoipa::path(get, path = "/v1/executions", tag = "executions", params(ListQuery),
    responses((status = 200, body = ExecutionList), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<ExecutionList>> {
    let limit = query.limit.unwrap_or(20);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::bad_request("limit must be 1-200"));
    }
    let status = match query.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(ExecutionStatus::parse(s).ok_or_else(|| {
            ApiError::bad_request(
                "status must be one of pending, running, completed, failed, cancelled",
            )
        })?),
    };
    let before = match query.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(
            c.split_once('.')
                .and_then(|(ms, id)| Some((ms.parse::<i64>().ok()?, id.to_string())))
                .filter(|(_, id)| valid_id(id))
                .ok_or_else(|| ApiError::bad_request("cursor is not a next_cursor value"))?,
        ),
    };
    let (executions, next) = state
        .db
        .list_executions(&ExecutionFilter {
            status,
            pipeline_id: query.pipeline_id,
            limit,
            before,
        })
        .await?;
    Ok(Json(ExecutionList {
        executions,
        next_cursor: next.map(|(ms, id)| format!("{ms}.{id}")),
    }))
}

async fn find(state: &AppState, id: &str) -> ApiResult<ExecutionRecord> {
    state
        .db
        .get_execution(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no execution with id {id:?}")))
}

/// An execution with its steps.
#[utoipa::path(get, path = "/v1/executions/{execution_id}", tag = "executions",
    params(("execution_id" = String, Path)),
    responses((status = 200, body = ExecutionRecord), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ExecutionRecord>> {
    Ok(Json(find(&state, &id).await?))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Cancelled {
    pub execution_id: String,
    pub status: ExecutionStatus,
}

/// Cancel a pending or running execution; work in flight stops.
#[utoipa::path(post, path = "/v1/executions/{execution_id}/cancel", tag = "executions",
    params(("execution_id" = String, Path)),
    responses((status = 200, body = Cancelled), (status = 404, body = ErrorBody),
        (status = 409, description = "already finished", body = ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> ApiResult<Json<Cancelled>> {
    let record = find(&state, &id).await?;
    if state.engine.cancel(&id).await? {
        tracing::info!(actor = %actor.0, execution_id = %id, "execution cancelled");
        Ok(Json(Cancelled {
            execution_id: id,
            status: ExecutionStatus::Cancelled,
        }))
    } else {
        let status = state
            .db
            .execution_status(&id)
            .await?
            .unwrap_or(record.status);
        Err(ApiError::Conflict(format!(
            "execution {id:?} already ended ({})",
            status.as_str()
        )))
    }
}

/// Live progress as Server-Sent Events: first a `snapshot` event (the whole
/// execution), then one `progress` event per transition; the stream ends
/// after the execution's final event.
#[utoipa::path(get, path = "/v1/executions/{execution_id}/events", tag = "executions",
    params(("execution_id" = String, Path)),
    responses((status = 200, description = "text/event-stream of `snapshot` (ExecutionRecord) and `progress` (ProgressEvent) events", content_type = "text/event-stream", body = ProgressEvent),
        (status = 404, body = ErrorBody)))]
pub async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    // Subscribed before the snapshot is read, so no transition falls between.
    let receiver = state.engine.events().subscribe();
    let snapshot = find(&state, &id).await?;
    let stream = event_stream(state, id, snapshot, receiver);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

fn snapshot_event(record: &ExecutionRecord) -> Event {
    Event::default()
        .event("snapshot")
        .json_data(record)
        .unwrap_or_else(|_| Event::default().event("snapshot"))
}

/// The event stream, as an unfold over the broadcast receiver.
fn event_stream(
    state: AppState,
    id: String,
    snapshot: ExecutionRecord,
    receiver: tokio::sync::broadcast::Receiver<std::sync::Arc<ProgressEvent>>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    enum Phase {
        Snapshot(Box<ExecutionRecord>),
        Live,
        Done,
    }
    futures::stream::unfold(
        (Phase::Snapshot(Box::new(snapshot)), receiver, state, id),
        |(phase, mut receiver, state, id)| async move {
            match phase {
                Phase::Done => None,
                Phase::Snapshot(record) => {
                    let next = if record.status.is_terminal() {
                        Phase::Done
                    } else {
                        Phase::Live
                    };
                    Some((Ok(snapshot_event(&record)), (next, receiver, state, id)))
                }
                Phase::Live => loop {
                    match receiver.recv().await {
                        Ok(event) if event.execution_id == id => {
                            let next = if event.is_final() {
                                Phase::Done
                            } else {
                                Phase::Live
                            };
                            let sse = Event::default()
                                .event("progress")
                                .json_data(&*event)
                                .unwrap_or_else(|_| Event::default().event("progress"));
                            return Some((Ok(sse), (next, receiver, state, id)));
                        }
                        Ok(_) => {}
                        Err(RecvError::Lagged(_)) => {
                            // Too slow to keep up: send the current state instead.
                            if let Ok(Some(record)) = state.db.get_execution(&id).await {
                                let next = if record.status.is_terminal() {
                                    Phase::Done
                                } else {
                                    Phase::Live
                                };
                                return Some((
                                    Ok(snapshot_event(&record)),
                                    (next, receiver, state, id),
                                ));
                            }
                        }
                        Err(RecvError::Closed) => return None,
                    }
                },
            }
        },
    )
}

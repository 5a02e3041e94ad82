//! Executions: start (queued, or `?wait=true` for the one-round-trip path),
//! read, list, cancel, and watch live as Server-Sent Events.

use std::{convert::Infallible, time::Duration};

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
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use utoipa::{IntoParams, ToSchema};

use super::{Actor, AppState};
pub use crate::executions::CreateExecution;
use crate::{
    db::{ExecutionCursor, ExecutionFilter},
    error::{ApiError, ApiResult, ErrorBody},
    events::ProgressEvent,
    executions::{AcceptError, Admission},
    model::{ExecutionRecord, ExecutionStatus},
};

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
    let started = match state
        .executions
        .accept(request, query.wait, &actor.0)
        .await?
    {
        Admission::Existing(record) => return Ok((StatusCode::OK, Json(record)).into_response()),
        Admission::Started(started) => started,
    };
    let execution_id = started.execution_id.clone();
    if query.wait {
        let finished = state
            .executions
            .wait_for_end(started)
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

impl From<AcceptError> for ApiError {
    fn from(err: AcceptError) -> Self {
        match err {
            AcceptError::Invalid(message) => ApiError::bad_request(message),
            AcceptError::Plan(err) => err.into(),
            AcceptError::NotFound(message) => ApiError::NotFound(message),
            err @ AcceptError::Storage(_) => ApiError::Unavailable {
                message: err.to_string(),
                retry_after_secs: 5,
            },
            AcceptError::Busy(err) => ApiError::Unavailable {
                message: err.to_string(),
                retry_after_secs: 1,
            },
            err @ AcceptError::QueueDown(_) => ApiError::Unavailable {
                message: err.to_string(),
                retry_after_secs: 5,
            },
            AcceptError::Database(err) => err.into(),
        }
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
            ExecutionCursor::parse(c)
                .filter(|c| crate::valid_id(&c.execution_id))
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
        next_cursor: next.map(|c| c.to_string()),
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

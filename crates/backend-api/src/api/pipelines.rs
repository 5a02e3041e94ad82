//! Pipelines: create, read (latest or a given revision), update (a new
//! revision), delete, list. Every write is validated as a DAG first.

use axum::{
    Extension, Json,
    extract::{Path, Query, State, rejection::JsonRejection},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{Actor, AppState};
use crate::{
    dag::{self, Overrides, PlanError},
    error::{ApiError, ApiResult, ErrorBody},
    model::{PipelineDefinition, StoredPipeline},
};

#[derive(Debug, Deserialize, IntoParams)]
pub struct RevisionQuery {
    /// A past revision; the latest when absent.
    pub revision: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    /// 1-500, default 100.
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PipelineList {
    pub pipelines: Vec<StoredPipeline>,
}

impl From<PlanError> for ApiError {
    fn from(err: PlanError) -> Self {
        ApiError::BadRequest {
            message: err.message,
            step_id: err.step_id,
        }
    }
}

/// Create a pipeline (`pipelineId` generated when absent).
#[utoipa::path(post, path = "/v1/pipelines", tag = "pipelines",
    request_body = PipelineDefinition,
    responses((status = 201, body = StoredPipeline),
        (status = 400, description = "invalid DAG or parameters; `step_id` names the step", body = ErrorBody),
        (status = 409, description = "pipelineId already exists", body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    body: Result<Json<PipelineDefinition>, JsonRejection>,
) -> ApiResult<Response> {
    let Json(mut definition) = body?;
    match &definition.pipeline_id {
        Some(id) if !crate::valid_id(id) => {
            return Err(ApiError::bad_request(
                "pipelineId must be 1-128 characters of letters, digits, '-', '_' or '.'",
            ));
        }
        Some(_) => {}
        None => definition.pipeline_id = Some(uuid::Uuid::new_v4().to_string()),
    }
    dag::plan(&definition, &Overrides::new())?;
    state
        .executions
        .check_paths(&definition)
        .map_err(ApiError::bad_request)?;
    let id = definition.pipeline_id.clone().unwrap_or_default();
    let Some(stored) = state.db.insert_pipeline(&definition).await? else {
        return Err(ApiError::Conflict(format!(
            "a pipeline with id {id:?} already exists; PUT /v1/pipelines/{id} to change it"
        )));
    };
    tracing::info!(actor = %actor.0, pipeline_id = %id, "pipeline created");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/v1/pipelines/{id}"))],
        Json(stored),
    )
        .into_response())
}

/// List pipelines, newest first.
#[utoipa::path(get, path = "/v1/pipelines", tag = "pipelines", params(ListQuery),
    responses((status = 200, body = PipelineList)))]
pub async fn list(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<PipelineList>> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("limit must be 1-500"));
    }
    Ok(Json(PipelineList {
        pipelines: state.db.list_pipelines(limit).await?,
    }))
}

/// A pipeline (latest revision, or `?revision=N`).
#[utoipa::path(get, path = "/v1/pipelines/{pipeline_id}", tag = "pipelines",
    params(("pipeline_id" = String, Path), RevisionQuery),
    responses((status = 200, body = StoredPipeline), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<RevisionQuery>,
) -> ApiResult<Json<StoredPipeline>> {
    state
        .db
        .get_pipeline(&id, query.revision)
        .await?
        .map(Json)
        .ok_or_else(|| match query.revision {
            Some(r) => ApiError::NotFound(format!("pipeline {id:?} has no revision {r}")),
            None => ApiError::NotFound(format!("no pipeline with id {id:?}")),
        })
}

/// Replace a pipeline's definition (stored as a new revision).
#[utoipa::path(put, path = "/v1/pipelines/{pipeline_id}", tag = "pipelines",
    params(("pipeline_id" = String, Path)),
    request_body = PipelineDefinition,
    responses((status = 200, body = StoredPipeline), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    body: Result<Json<PipelineDefinition>, JsonRejection>,
) -> ApiResult<Json<StoredPipeline>> {
    let Json(mut definition) = body?;
    match &definition.pipeline_id {
        Some(other) if *other != id => {
            return Err(ApiError::bad_request(format!(
                "pipelineId {other:?} in the body does not match {id:?} in the path"
            )));
        }
        _ => definition.pipeline_id = Some(id.clone()),
    }
    dag::plan(&definition, &Overrides::new())?;
    state
        .executions
        .check_paths(&definition)
        .map_err(ApiError::bad_request)?;
    let stored = state
        .db
        .update_pipeline(&id, &definition)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no pipeline with id {id:?}")))?;
    tracing::info!(actor = %actor.0, pipeline_id = %id, revision = stored.revision, "pipeline updated");
    Ok(Json(stored))
}

/// Delete a pipeline (its executions keep their copy of the definition).
#[utoipa::path(delete, path = "/v1/pipelines/{pipeline_id}", tag = "pipelines",
    params(("pipeline_id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    if state.db.delete_pipeline(&id).await? {
        tracing::info!(actor = %actor.0, pipeline_id = %id, "pipeline deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no pipeline with id {id:?}")))
    }
}

//! The REST API: routes, shared state, and the layers every
//! request passes (metrics, bearer-token auth on `/v1`, body limits).

pub mod executions;
pub mod files;
pub mod pipelines;
pub mod system;
pub mod ui;

use std::{sync::Arc, time::Instant};

use tracing::Instrument;

use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request, State},
    http::header,
    middleware::{self, Next},
    response::Response,
    routing::{get, post},
};
use imageflow_storage::Store;

use crate::{
    clients::Services, config::ApiToken, db::Db, engine::Engine, error::ApiError, metrics::Metrics,
};

/// What every handler can reach. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    pub db: Db,
    pub store: Store,
    pub engine: Engine,
    /// Accepting executions (the use-case behind `POST /v1/executions`).
    pub executions: crate::executions::Executions,
    pub services: Services,
    pub metrics: Metrics,
    pub tokens: Arc<Vec<ApiToken>>,
    pub max_upload_bytes: usize,
    pub ui: Arc<ui::UiSettings>,
    /// Kafka, when `KAFKA_BROKERS` is set.
    pub kafka: Option<crate::queue::KafkaLink>,
    pub execution_mode: crate::queue::ExecutionMode,
}

/// The acting user of a request (the token's name, or `anonymous` when the API
/// is open), for the logs of every change.
#[derive(Clone, Debug)]
pub struct Actor(pub String);

pub fn router(state: AppState, max_request_bytes: usize) -> Router {
    let upload_limit = state.max_upload_bytes;
    let v1 = Router::new()
        .route("/components", get(system::list_components))
        .route(
            "/files",
            post(files::upload)
                .layer(DefaultBodyLimit::max(upload_limit))
                .get(files::list),
        )
        .route(
            "/files/{file_id}",
            get(files::metadata).delete(files::delete),
        )
        .route("/files/{file_id}/download", get(files::download))
        .route("/pipelines", post(pipelines::create).get(pipelines::list))
        .route(
            "/pipelines/{pipeline_id}",
            get(pipelines::get)
                .put(pipelines::update)
                .delete(pipelines::delete),
        )
        .route(
            "/executions",
            post(executions::create).get(executions::list),
        )
        .route("/executions/{execution_id}", get(executions::get))
        .route(
            "/executions/{execution_id}/cancel",
            post(executions::cancel),
        )
        .route("/executions/{execution_id}/events", get(executions::events))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .nest("/v1", v1)
        .route("/healthz", get(system::healthz))
        .route("/readyz", get(system::readyz))
        .route("/metrics", get(system::metrics))
        .route("/openapi.json", get(system::openapi))
        .merge(ui::router(state.ui.clone()))
        .layer(DefaultBodyLimit::max(max_request_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// One metric sample and, for failures, one log line per request.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let span = imageflow_telemetry::spans::http_server(&method, &route, request.headers());
    let response = next.run(request).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let code = response.status().as_u16();
    imageflow_telemetry::spans::record_http_status(&span, code);
    let _entered = span.enter();
    state
        .metrics
        .http_request(method.as_str(), &route, code, elapsed);
    if code >= 500 {
        tracing::warn!(http.method = %method, http.route = %route, http.status_code = code, duration_ms = elapsed.as_secs_f64() * 1000.0, "request failed");
    } else {
        tracing::debug!(http.method = %method, http.route = %route, http.status_code = code, duration_ms = elapsed.as_secs_f64() * 1000.0, "request");
    }
    response
}

/// Bearer-token check for `/v1` (open when no token is configured).
async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if state.tokens.is_empty() {
        request.extensions_mut().insert(Actor("anonymous".into()));
        return Ok(next.run(request).await);
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some(presented) = presented else {
        return Err(ApiError::Unauthorized(
            "missing 'Authorization: Bearer <token>' header".into(),
        ));
    };
    // Every token is compared in full, so timing tells nothing about which
    // prefix matched.
    let mut actor = None;
    for token in state.tokens.iter() {
        if constant_time_eq(token.token.as_bytes(), presented.as_bytes()) {
            actor = Some(token.name.clone());
        }
    }
    match actor {
        Some(name) => {
            request.extensions_mut().insert(Actor(name));
            Ok(next.run(request).await)
        }
        None => Err(ApiError::Unauthorized(
            "the bearer token is not valid".into(),
        )),
    }
}

/// Only a length mismatch returns early (`subtle` does not hide lengths); tokens of
/// the right length are compared in full.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret-token", b"secret-token"));
        assert!(!constant_time_eq(b"secret-token", b"secret-tokeN"));
        assert!(!constant_time_eq(b"secret-token", b"secret-token-longer"));
        assert!(!constant_time_eq(b"secret", b""));
    }
}

//! Component registry, health, readiness, metrics and the OpenAPI document.

use std::time::Duration;

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use utoipa::{OpenApi, ToSchema};

use super::AppState;
use crate::{clients::ServiceChannel, registry};

#[derive(Debug, Serialize, ToSchema)]
pub struct ComponentList {
    pub components: Vec<registry::Component>,
}

/// The components a step can use, with their parameters and defaults.
#[utoipa::path(get, path = "/v1/components", tag = "components",
    responses((status = 200, body = ComponentList)))]
pub async fn list_components() -> Json<ComponentList> {
    Json(ComponentList {
        components: registry::components(),
    })
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "system", responses((status = 200)))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    pub ready: bool,
    pub checks: Vec<Check>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

async fn service_check(service: &ServiceChannel, grpc_name: &str) -> Check {
    let name = format!("service:{}", service.name);
    let result = async {
        let channel = tonic::transport::Endpoint::from_shared(
            service.configured().first().cloned().unwrap_or_default(),
        )
        .map_err(|e| e.to_string())?
        .connect_timeout(CHECK_TIMEOUT)
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", service.configured().join(", ")))?;
        let status = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: grpc_name.to_string(),
            })
            .await
            .map_err(|s| format!("health check failed: {}", s.message()))?
            .into_inner()
            .status;
        if status == ServingStatus::Serving as i32 {
            Ok(())
        } else {
            Err(format!("{grpc_name} is not SERVING (status {status})"))
        }
    };
    match tokio::time::timeout(CHECK_TIMEOUT, result).await {
        Ok(Ok(())) => Check {
            name,
            ok: true,
            error: None,
        },
        Ok(Err(e)) => Check {
            name,
            ok: false,
            error: Some(e),
        },
        Err(_) => Check {
            name,
            ok: false,
            error: Some("health check timed out".into()),
        },
    }
}

/// Readiness: the database, the object store and every service answer.
#[utoipa::path(get, path = "/readyz", tag = "system",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let db = async {
        let r = tokio::time::timeout(CHECK_TIMEOUT, state.db.ping()).await;
        let error = match r {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("timed out".into()),
        };
        Check {
            name: "database".into(),
            ok: error.is_none(),
            error,
        }
    };
    let store = async {
        let r = tokio::time::timeout(CHECK_TIMEOUT, Box::pin(state.store.check_ready())).await;
        let error = match r {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("timed out".into()),
        };
        Check {
            name: "storage".into(),
            ok: error.is_none(),
            error,
        }
    };
    let s = &state.services;
    let (db, store, resize, filter, detect) = tokio::join!(
        db,
        store,
        service_check(&s.resize, "imageflow.v1.ResizeService"),
        service_check(&s.filter, "imageflow.v1.FilterService"),
        service_check(&s.detect, "imageflow.v1.AIDetectionService"),
    );
    let checks = vec![db, store, resize, filter, detect];
    let ready = checks.iter().all(|c| c.ok);
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(Readiness { ready, checks })).into_response()
}

/// Prometheus metrics: OpenMetrics (with trace-id exemplars on the latency
/// histograms) when the scraper asks for it, else Prometheus text.
#[utoipa::path(get, path = "/metrics", tag = "system",
    responses((status = 200, content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = imageflow_telemetry::metrics::Format::negotiate(accept);
    (
        [(header::CONTENT_TYPE, format.content_type())],
        state.metrics.exposition(format),
    )
        .into_response()
}

#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "ImageFlowCanvas API", description = "Pipelines of image steps run by calling resident gRPC services directly."),
    paths(
        list_components, healthz, readyz, metrics,
        super::files::upload, super::files::list, super::files::metadata, super::files::download, super::files::delete,
        super::pipelines::create, super::pipelines::list, super::pipelines::get, super::pipelines::update, super::pipelines::delete,
        super::executions::create, super::executions::list, super::executions::get, super::executions::cancel, super::executions::events,
    ),
    components(schemas(crate::error::ErrorBody, crate::events::ProgressEvent)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI 3.1 document, generated from the handlers and types.
pub async fn openapi() -> Response {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    Json(doc).into_response()
}

//! The Prometheus endpoint of a service: `GET /metrics` on its own port
//! (`METRICS_LISTEN_ADDR`), so scraping never competes with gRPC traffic for
//! the admission limit.

use std::net::SocketAddr;

use axum::{Router, http::header, response::IntoResponse, routing::get};
use tokio::task::JoinHandle;

use crate::ServeError;

async fn metrics() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        imageflow_telemetry::metrics::render_global(),
    )
}

/// Binds `addr` (failing start-up when it cannot) and serves in the background.
pub async fn spawn(addr: SocketAddr) -> Result<JoinHandle<()>, ServeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::MetricsListener { addr, source })?;
    let bound = listener.local_addr().unwrap_or(addr);
    tracing::info!(addr = %bound, "metrics listening on /metrics");
    let app = Router::new().route("/metrics", get(metrics));
    Ok(tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::warn!(error = %err, "metrics listener stopped");
        }
    }))
}

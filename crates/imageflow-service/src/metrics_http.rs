//! The Prometheus endpoint of a service: `GET /metrics` on its own port
//! (`METRICS_LISTEN_ADDR`), so scraping never competes with gRPC traffic for
//! the admission limit. Prometheus asks for OpenMetrics and gets the latency
//! histograms' exemplars (trace ids); anything else gets Prometheus text.

use std::net::SocketAddr;

use axum::{
    Router,
    http::{HeaderMap, header},
    response::IntoResponse,
    routing::get,
};
use imageflow_telemetry::metrics::{Format, global_exposition};
use tokio::task::JoinHandle;

use crate::ServeError;

async fn metrics(headers: HeaderMap) -> impl IntoResponse {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    (
        [(header::CONTENT_TYPE, format.content_type())],
        global_exposition(format),
    )
}

fn router() -> Router {
    Router::new().route("/metrics", get(metrics))
}

/// Binds `addr` (failing start-up when it cannot) and serves in the background.
pub async fn spawn(addr: SocketAddr) -> Result<JoinHandle<()>, ServeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::MetricsListener { addr, source })?;
    let bound = listener.local_addr().unwrap_or(addr);
    tracing::info!(addr = %bound, "metrics listening on /metrics");
    let app = router();
    Ok(tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::warn!(error = %err, "metrics listener stopped");
        }
    }))
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, http::Request};
    use tower::ServiceExt;

    use super::*;

    async fn scrape(accept: Option<&str>) -> (String, String) {
        let mut request = Request::get("/metrics");
        if let Some(accept) = accept {
            request = request.header(header::ACCEPT, accept);
        }
        let response = router()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let content_type = response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_string();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (content_type, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn prometheus_gets_openmetrics_and_curl_gets_text() {
        let (content_type, body) = scrape(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        ))
        .await;
        assert_eq!(
            content_type,
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
        assert!(body.ends_with("# EOF\n"), "{body}");

        let (content_type, body) = scrape(None).await;
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
        assert!(body.contains("process_start_time_seconds "), "{body}");
        assert!(!body.contains("# EOF"));
    }
}

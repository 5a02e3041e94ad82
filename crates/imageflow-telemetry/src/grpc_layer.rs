//! The tower layer every gRPC server wears: a server span joined to the
//! caller's trace, and the standard gRPC server metrics
//! (`grpc_server_handled_total`, `grpc_server_handling_seconds`, in flight).

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use tracing::Instrument;

use crate::{metrics::Registry, spans};

const HANDLED: &str = "grpc_server_handled_total";
const HANDLED_HELP: &str = "gRPC calls completed on the server, by service, method and code";
const HANDLING: &str = "grpc_server_handling_seconds";
const HANDLING_HELP: &str = "time to the response headers of gRPC calls on the server";
const INFLIGHT: &str = "imageflow_inflight_requests";
const INFLIGHT_HELP: &str = "gRPC calls being served";

/// `tonic::transport::Server::builder().layer(GrpcServerLayer)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcServerLayer;

impl<S> tower::Layer<S> for GrpcServerLayer {
    type Service = GrpcServerService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcServerService { inner }
    }
}

#[derive(Clone, Debug)]
pub struct GrpcServerService<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, B, R> tower::Service<http::Request<B>> for GrpcServerService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The clone that was made ready is the one to call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let path = request.uri().path().to_string();
        let span = spans::grpc_server(&path, request.headers());
        let (service, method) = spans::grpc_path(&path);
        let (service, method) = (service.to_string(), method.to_string());
        // Health checks and reflection are probes, not traffic: no span
        // export noise, but they are still counted.
        let traced = !service.starts_with("grpc.");
        Box::pin(async move {
            let started = Instant::now();
            let metrics = Registry::global();
            let labels = [
                ("grpc_service", service.as_str()),
                ("grpc_method", method.as_str()),
            ];
            metrics.add_gauge(INFLIGHT, INFLIGHT_HELP, &labels[..1], 1.0);
            let result = if traced {
                inner.call(request).instrument(span.clone()).await
            } else {
                inner.call(request).await
            };
            metrics.add_gauge(INFLIGHT, INFLIGHT_HELP, &labels[..1], -1.0);
            let (code, message) = match &result {
                Ok(response) => status_of(response.headers()),
                Err(_) => (13, "transport error".to_string()),
            };
            if traced {
                spans::record_grpc_status(&span, code, &message, true);
            }
            let code_label = spans::code_name(code);
            metrics.inc(
                HANDLED,
                HANDLED_HELP,
                &[labels[0], labels[1], ("grpc_code", code_label)],
            );
            metrics.observe(HANDLING, HANDLING_HELP, &labels, started.elapsed());
            result
        })
    }
}

/// The status a response's headers carry; tonic answers errors of unary calls
/// "trailers-only" (`grpc-status` in the headers). A stream's final status
/// travels in trailers after this point and counts as OK here.
fn status_of(headers: &http::HeaderMap) -> (i32, String) {
    let code = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let message = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .map(percent_decode)
        .unwrap_or_default();
    (code, message)
}

/// `grpc-message` is percent-encoded.
fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailers_only_errors_are_read_from_headers() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(status_of(&headers), (0, String::new()));
        headers.insert("grpc-status", "3".parse().unwrap());
        headers.insert(
            "grpc-message",
            "width%20must%20be%20%3E%200".parse().unwrap(),
        );
        assert_eq!(status_of(&headers), (3, "width must be > 0".to_string()));
    }

    #[test]
    fn broken_percent_escapes_stay_as_they_are() {
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("a%zzb"), "a%zzb");
        assert_eq!(percent_decode("%4"), "%4");
    }
}

//! Spans named and attributed as the design (section 6) and the OpenTelemetry
//! semantic conventions ask, so Jaeger shows `POST /v1/executions`,
//! `imageflow.v1.ResizeService/Resize` and friends with the usual attributes.

use opentelemetry::trace::Status;
use tracing::{Span, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::propagation;

/// The server span of one HTTP request, child of the caller's `traceparent`.
pub fn http_server(method: &http::Method, route: &str, headers: &http::HeaderMap) -> Span {
    let span = tracing::info_span!(
        "http.server",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = Empty,
        execution_id = Empty,
    );
    propagation::set_remote_parent(&span, propagation::extract_http(headers));
    span
}

/// Records the response status; 5xx marks the span as failed (4xx is the
/// caller's mistake, not ours, per the HTTP server conventions).
pub fn record_http_status(span: &Span, status: u16) {
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.set_status(Status::error(format!("HTTP {status}")));
    }
}

/// Splits `/package.Service/Method`.
pub fn grpc_path(path: &str) -> (&str, &str) {
    let trimmed = path.trim_start_matches('/');
    trimmed.split_once('/').unwrap_or((trimmed, ""))
}

/// The server span of one gRPC call, child of the caller's `traceparent`.
pub fn grpc_server(path: &str, headers: &http::HeaderMap) -> Span {
    let (service, method) = grpc_path(path);
    let span = tracing::info_span!(
        "grpc.server",
        otel.name = %format!("{service}/{method}"),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
        rpc.grpc.status_code = Empty,
        execution_id = Empty,
    );
    propagation::set_remote_parent(&span, propagation::extract_http(headers));
    span
}

/// The client span of one gRPC call made by this process.
pub fn grpc_client(service: &str, method: &str, peer: Option<&str>) -> Span {
    tracing::info_span!(
        "grpc.client",
        otel.name = %format!("{service}/{method}"),
        otel.kind = "client",
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
        server.address = peer,
        rpc.grpc.status_code = Empty,
    )
}

/// Records a gRPC status on a client or server span; every code but OK is an
/// error on the client, and the server-side error codes of the conventions
/// (UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE,
/// DATA_LOSS) are errors on the server.
pub fn record_grpc_status(span: &Span, code: i32, message: &str, server: bool) {
    span.record("rpc.grpc.status_code", code);
    let server_error = matches!(code, 2 | 4 | 12 | 13 | 14 | 15);
    if code != 0 && (!server || server_error) {
        span.set_status(Status::error(format!("{}: {message}", code_name(code))));
    }
}

/// The inference span of one batch, child of the first request's span; the
/// other requests in the batch are linked, so each trace shows the shared run.
pub fn inference(model: &str, backend: &str, batch: usize, requests: &[Span]) -> Span {
    let parent = requests.first().cloned().unwrap_or_else(Span::none);
    let span = tracing::info_span!(
        parent: &parent,
        "inference",
        otel.name = %format!("inference {model}"),
        otel.kind = "internal",
        ai.model.name = %model,
        ai.inference.backend = backend,
        ai.inference.batch_size = batch as u64,
    );
    for other in requests.iter().skip(1) {
        let cx = other.context();
        let other_span = opentelemetry::trace::TraceContextExt::span(&cx);
        span.add_link(other_span.span_context().clone());
    }
    span
}

/// Marks `span` as failed with `message`.
pub fn record_error(span: &Span, message: impl std::fmt::Display) {
    span.set_status(Status::error(
        crate::mask::mask(&message.to_string()).into_owned(),
    ));
}

/// The canonical name of a gRPC status code.
pub fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_paths_split_into_service_and_method() {
        assert_eq!(
            grpc_path("/imageflow.v1.ResizeService/Resize"),
            ("imageflow.v1.ResizeService", "Resize")
        );
        assert_eq!(grpc_path("/odd"), ("odd", ""));
    }
}

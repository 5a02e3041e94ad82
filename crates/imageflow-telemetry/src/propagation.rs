//! W3C trace context (`traceparent`, `tracestate`) in one place: HTTP
//! headers, gRPC metadata and Kafka message headers all go through here, so
//! every hop joins the same trace.
//!
//! The W3C propagator is used directly, not through the global registry: the
//! format is the contract, and library code works the same in tests that
//! never call [`crate::init`].

pub use opentelemetry::Context;
use opentelemetry::{
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::TraceContextExt,
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

fn propagator() -> TraceContextPropagator {
    TraceContextPropagator::new()
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The caller's context from HTTP headers (gRPC metadata travels as HTTP/2
/// headers, so servers of both kinds use this).
pub fn extract_http(headers: &http::HeaderMap) -> Context {
    propagator().extract(&HeaderExtractor(headers))
}

/// Writes `span`'s context into HTTP headers.
pub fn inject_http(span: &tracing::Span, headers: &mut http::HeaderMap) {
    propagator().inject_context(&span.context(), &mut HeaderInjector(headers));
}

/// Writes the current span's context into outgoing gRPC metadata.
pub fn inject_grpc(metadata: &mut tonic::metadata::MetadataMap) {
    struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);
    impl Injector for MetadataInjector<'_> {
        fn set(&mut self, key: &str, value: String) {
            if let (Ok(key), Ok(value)) = (
                tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
                value.parse(),
            ) {
                self.0.insert(key, value);
            }
        }
    }
    propagator().inject_context(
        &tracing::Span::current().context(),
        &mut MetadataInjector(metadata),
    );
}

/// A gRPC client interceptor that carries the current trace to the server:
/// `FooClient::with_interceptor(channel, imageflow_telemetry::propagation::grpc_interceptor)`.
#[allow(clippy::result_large_err)] // the signature tonic's Interceptor asks for
pub fn grpc_interceptor(
    mut request: tonic::Request<()>,
) -> Result<tonic::Request<()>, tonic::Status> {
    inject_grpc(request.metadata_mut());
    Ok(request)
}

/// `span`'s context as message headers (Kafka): `traceparent` and, when set,
/// `tracestate`.
pub fn headers_for(span: &tracing::Span) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    struct VecInjector<'a>(&'a mut Vec<(String, String)>);
    impl Injector for VecInjector<'_> {
        fn set(&mut self, key: &str, value: String) {
            self.0.push((key.to_string(), value));
        }
    }
    propagator().inject_context(&span.context(), &mut VecInjector(&mut out));
    out
}

/// The context carried by message headers (Kafka), as `(name, bytes)` pairs.
pub fn context_from_headers<'a>(headers: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Context {
    struct PairExtractor<'a>(Vec<(&'a str, &'a str)>);
    impl Extractor for PairExtractor<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| *v)
        }
        fn keys(&self) -> Vec<&str> {
            self.0.iter().map(|(k, _)| *k).collect()
        }
    }
    let pairs = headers
        .into_iter()
        .filter_map(|(k, v)| std::str::from_utf8(v).ok().map(|v| (k, v)))
        .collect();
    propagator().extract(&PairExtractor(pairs))
}

/// Makes `span` a child of the remote parent in `cx` (no-op when `cx` holds
/// no valid span context, so a request without `traceparent` starts a trace).
pub fn set_remote_parent(span: &tracing::Span, cx: Context) {
    if cx.span().span_context().is_valid() {
        // Fails only when the span was already started, which callers avoid
        // by calling this right after creating it.
        let _ = span.set_parent(cx);
    }
}

/// `span`'s context, to parent work that outlives it (a background run).
pub fn context_of(span: &tracing::Span) -> Context {
    span.context()
}

/// The trace id of `span` as 32 lowercase hex digits, when telemetry is on.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let span_ref = cx.span();
    let sc = span_ref.span_context();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// The trace id of the current span.
pub fn current_trace_id() -> Option<String> {
    trace_id(&tracing::Span::current())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_round_trips_through_http_and_message_headers() {
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", PARENT.parse().unwrap());
        let cx = extract_http(&headers);
        let sc = cx.span().span_context().clone();
        assert!(sc.is_valid());
        assert!(sc.is_remote());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );

        let from_kafka = context_from_headers([("traceparent", PARENT.as_bytes())]);
        assert_eq!(
            from_kafka.span().span_context().trace_id(),
            sc.trace_id(),
            "message headers carry the same context"
        );
    }

    #[test]
    fn garbage_starts_a_new_trace_instead_of_failing() {
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", "00-not-a-trace-01".parse().unwrap());
        assert!(!extract_http(&headers).span().span_context().is_valid());
        assert!(
            !context_from_headers([("traceparent", &[0xff, 0xfe][..])])
                .span()
                .span_context()
                .is_valid()
        );
    }

    #[test]
    fn without_a_telemetry_layer_there_is_no_trace_id() {
        let span = tracing::info_span!("x");
        assert_eq!(trace_id(&span), None);
        assert!(headers_for(&span).is_empty());
    }
}

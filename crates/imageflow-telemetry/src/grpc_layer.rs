//! The tower layer every gRPC server wears: a server span joined to the
//! caller's trace, and the standard gRPC server metrics
//! (`grpc_server_handled_total`, `grpc_server_handling_seconds`, in flight).

use std::{
    future::Future,
    pin::Pin,
    sync::LazyLock,
    task::{Context, Poll},
    time::Instant,
};

use tracing::Instrument;

use crate::{
    metrics::{CounterVec, GaugeVec, HistogramVec, Registry},
    spans,
};

const HANDLED: &str = "grpc_server_handled_total";
const HANDLED_HELP: &str = "gRPC calls completed on the server, by service, method and code";
const HANDLING: &str = "grpc_server_handling_seconds";
const HANDLING_HELP: &str = "time to the response headers of gRPC calls on the server";
const INFLIGHT: &str = "imageflow_inflight_requests";
const INFLIGHT_HELP: &str = "gRPC calls being served";

#[derive(Debug)]
struct ServerMetrics {
    handled: CounterVec,
    handling: HistogramVec,
    inflight: GaugeVec,
}

static METRICS: LazyLock<ServerMetrics> = LazyLock::new(|| {
    let registry = Registry::global();
    ServerMetrics {
        handled: registry.counter_vec(
            HANDLED,
            HANDLED_HELP,
            &["grpc_service", "grpc_method", "grpc_code"],
        ),
        handling: registry.histogram_vec(HANDLING, HANDLING_HELP, &["grpc_service", "grpc_method"]),
        inflight: registry.gauge_vec(INFLIGHT, INFLIGHT_HELP, &["grpc_service"]),
    }
});

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
        // Shares the request's bytes: the labels below borrow from it
        // instead of each call copying them.
        let uri = request.uri().clone();
        let span = spans::grpc_server(uri.path(), request.headers());
        Box::pin(async move {
            let started = Instant::now();
            let (service, method) = spans::grpc_path(uri.path());
            // Health checks and reflection are probes, not traffic: no span
            // export noise, but they are still counted.
            let traced = !service.starts_with("grpc.");
            let metrics = &*METRICS;
            // Dropped with this future too, so a call the client cancels
            // (its stream reset, the connection gone) leaves the gauge.
            let inflight = metrics.inflight.track(&[service]);
            let result = if traced {
                inner.call(request).instrument(span.clone()).await
            } else {
                inner.call(request).await
            };
            drop(inflight);
            let (code, message) = match &result {
                Ok(response) => status_of(response.headers()),
                Err(_) => (13, "transport error".to_string()),
            };
            if traced {
                spans::record_grpc_status(&span, code, &message, true);
            }
            metrics
                .handled
                .inc(&[service, method, spans::code_name(code)]);
            let elapsed = started.elapsed();
            let observe = || metrics.handling.observe(&[service, method], elapsed);
            if traced {
                // In the call's span, so its trace is the bucket's exemplar.
                span.in_scope(observe);
            } else {
                observe();
            }
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
    use std::{convert::Infallible, task::Waker};

    use tower::{Layer as _, Service as _};

    use super::*;

    fn request(path: &str) -> http::Request<()> {
        http::Request::builder().uri(path).body(()).unwrap()
    }

    #[test]
    fn a_cancelled_call_leaves_the_inflight_gauge() {
        // Each test uses a service name of its own: the registry is global.
        let service = "test.CancelledService";
        let hangs = tower::service_fn(|_: http::Request<()>| {
            std::future::pending::<Result<http::Response<()>, Infallible>>()
        });
        let mut layered = GrpcServerLayer.layer(hangs);
        let mut call = layered.call(request(&format!("/{service}/Hang")));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(call.as_mut().poll(&mut cx).is_pending());
        assert_eq!(METRICS.inflight.get(&[service]), 1);
        // What hyper does when the client resets the stream mid-call.
        drop(call);
        assert_eq!(METRICS.inflight.get(&[service]), 0);
    }

    #[test]
    fn a_finished_call_is_counted_under_its_code() {
        let service = "test.FinishedService";
        let fails = tower::service_fn(|_: http::Request<()>| async {
            let mut response = http::Response::new(());
            response
                .headers_mut()
                .insert("grpc-status", http::HeaderValue::from_static("5"));
            Ok::<_, Infallible>(response)
        });
        let mut layered = GrpcServerLayer.layer(fails);
        let mut call = layered.call(request(&format!("/{service}/Get")));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(call.as_mut().poll(&mut cx).is_ready());
        assert_eq!(METRICS.inflight.get(&[service]), 0);
        assert_eq!(METRICS.handled.get(&[service, "Get", "NOT_FOUND"]), 1);
        let text = Registry::global().render();
        assert!(
            text.contains(&format!(
                "grpc_server_handling_seconds_count{{grpc_service=\"{service}\",grpc_method=\"Get\"}} 1\n"
            )),
            "{text}"
        );
    }

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

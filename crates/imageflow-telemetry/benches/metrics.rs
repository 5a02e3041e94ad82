//! What one request costs the metrics: the gRPC server layer around a call
//! that does nothing, the observations a service makes per request besides
//! the layer (processing time, two storage operations), and the backend's
//! per-HTTP-request pair. Same source before and after a change of the
//! registry, so the figures compare.
//!
//! `cargo bench -p imageflow-telemetry --bench metrics -- --warm-up-time 1 --measurement-time 3`

#![allow(clippy::unwrap_used)]

use std::{
    convert::Infallible,
    future::Future,
    hint::black_box,
    pin::pin,
    task::{Context, Poll, Waker},
    time::Duration,
};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use imageflow_telemetry::{GrpcServerLayer, metrics::Registry};
use tower::{Layer, Service};

/// Polls a future that never waits (the inner service answers at once).
fn ready<F: Future>(future: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(future).poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the benchmarked call waited"),
    }
}

fn grpc_layer(c: &mut Criterion) {
    let inner = tower::service_fn(|_: http::Request<()>| async {
        Ok::<_, Infallible>(http::Response::new(()))
    });
    let mut service = GrpcServerLayer.layer(inner);
    let request = || {
        http::Request::builder()
            .uri("/imageflow.v1.ResizeService/ResizeImage")
            .body(())
            .unwrap()
    };
    c.bench_function("grpc_layer: one unary call (no-op handler)", |b| {
        b.iter_batched(
            request,
            |r| ready(service.call(r)).unwrap(),
            BatchSize::SmallInput,
        )
    });
}

fn service_observations(c: &mut Criterion) {
    let global = Registry::global();
    c.bench_function(
        "service: processing + storage get + storage put observations",
        |b| {
            b.iter(|| {
                global.observe(
                    "imageflow_processing_duration_seconds",
                    "time to process one image",
                    &[("operation", black_box("ResizeImage")), ("status", "OK")],
                    Duration::from_millis(12),
                );
                for operation in ["get", "put"] {
                    let labels = [
                        ("operation", black_box(operation)),
                        ("backend", "fs"),
                        ("status", "ok"),
                    ];
                    global.inc(
                        "imageflow_storage_operations_total",
                        "object storage operations",
                        &labels,
                    );
                    global.observe(
                        "imageflow_storage_operation_duration_seconds",
                        "object storage operation latency",
                        &labels[..2],
                        Duration::from_millis(2),
                    );
                }
            })
        },
    );
}

fn backend_observations(c: &mut Criterion) {
    let registry = Registry::new();
    c.bench_function("backend: http request counter + latency", |b| {
        b.iter(|| {
            let code = black_box(200u16).to_string();
            let (method, route) = (black_box("POST"), black_box("/v1/executions"));
            registry.inc(
                "http_requests_total",
                "HTTP requests",
                &[("code", &code), ("method", method), ("route", route)],
            );
            registry.observe(
                "http_request_duration_seconds",
                "HTTP request latency",
                &[("method", method), ("route", route)],
                Duration::from_millis(30),
            );
        })
    });
}

/// The same observations through the handles the services and the backend
/// hold since the registry moved to `prometheus-client` (no lookup by name,
/// no label string formatted or copied).
fn handle_observations(c: &mut Criterion) {
    let global = Registry::global();
    let processing = global.histogram_vec(
        "imageflow_processing_duration_seconds",
        "time to process one image",
        &["operation", "status"],
    );
    let operations = global.counter_vec(
        "imageflow_storage_operations_total",
        "object storage operations",
        &["operation", "backend", "status"],
    );
    let latency = global.histogram_vec(
        "imageflow_storage_operation_duration_seconds",
        "object storage operation latency",
        &["operation", "backend"],
    );
    c.bench_function(
        "service (handles): processing + storage get + storage put observations",
        |b| {
            b.iter(|| {
                processing.observe(&[black_box("ResizeImage"), "OK"], Duration::from_millis(12));
                for operation in ["get", "put"] {
                    let operation = black_box(operation);
                    operations.inc(&[operation, "fs", "ok"]);
                    latency.observe(&[operation, "fs"], Duration::from_millis(2));
                }
            })
        },
    );
    let registry = Registry::new();
    let requests = registry.counter_vec(
        "http_requests_total",
        "HTTP requests",
        &["code", "method", "route"],
    );
    let durations = registry.histogram_vec(
        "http_request_duration_seconds",
        "HTTP request latency",
        &["method", "route"],
    );
    c.bench_function("backend (handles): http request counter + latency", |b| {
        b.iter(|| {
            let status = http::StatusCode::from_u16(black_box(200)).ok();
            let code = status.as_ref().map_or("000", http::StatusCode::as_str);
            let (method, route) = (black_box("POST"), black_box("/v1/executions"));
            requests.inc(&[code, method, route]);
            durations.observe(&[method, route], Duration::from_millis(30));
        })
    });
    let inflight = global.gauge_vec("imageflow_inflight_requests", "calls", &["grpc_service"]);
    c.bench_function("in-flight guard: track + drop", |b| {
        b.iter(|| drop(inflight.track(&[black_box("imageflow.v1.ResizeService")])))
    });
}

criterion_group!(
    benches,
    grpc_layer,
    service_observations,
    backend_observations,
    handle_observations
);
criterion_main!(benches);

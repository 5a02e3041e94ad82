//! Serving one service: health, reflection, the service's own routes on a
//! pre-bound listener, readiness that follows the store, and a graceful
//! shutdown in the order Kubernetes needs (NOT_SERVING, drain with a bound).

use std::{future::Future, pin::Pin, time::Duration};

use imageflow_storage::Store;
use tokio::net::TcpListener;
use tonic::{service::Routes, transport::server::TcpIncoming};

use crate::{Admission, BlockingDoor, ServiceConfig, ServiceRuntime, health::Health};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("storage: {0}")]
    Storage(#[from] imageflow_storage::StorageError),
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// A service's own dependency could not be set up at start (a model file,
    /// a runtime library); the message names the setting to fix.
    #[error("{0}")]
    Startup(String),
    #[error("GRPC_HEALTH_LISTEN_ADDR: cannot bind {addr}: {source}")]
    HealthListener {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("METRICS_LISTEN_ADDR: cannot bind {addr}: {source}")]
    MetricsListener {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// A service ready to be given its routes: the runtime its handlers share and
/// the health service to mount next to them.
pub struct Prepared {
    pub runtime: ServiceRuntime,
    health_routes: Routes,
    /// More conditions for SERVING besides the store (a model loaded, an
    /// inference server ready); each resolves once its dependency is.
    readiness: Vec<Readiness>,
}

type Readiness = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("runtime", &self.runtime)
            .field("readiness_conditions", &self.readiness.len())
            .finish_non_exhaustive()
    }
}

impl Prepared {
    /// Adds a condition for SERVING: health flips only once the store answers
    /// and every such future has resolved (it should retry and log on its own).
    pub fn require_ready(&mut self, ready: impl Future<Output = ()> + Send + 'static) {
        self.readiness.push(Box::pin(ready));
    }
}

/// Connects the store (no network call yet: readiness is checked in the
/// background) and builds the shared runtime. `services` are the gRPC names
/// whose health is reported.
pub async fn prepare(
    config: &ServiceConfig,
    services: Vec<&'static str>,
) -> Result<Prepared, ServeError> {
    let store = Store::connect(&config.storage, config.store_options.clone()).await?;
    let events = match &config.kafka {
        Some(settings) => Some(crate::ServiceEvents {
            publisher: imageflow_events::Publisher::new(settings, config.defaults.service_name)
                .map_err(|e| ServeError::Startup(format!("KAFKA_BROKERS: {e}")))?,
            source: imageflow_telemetry::service_name()
                .unwrap_or(config.defaults.service_name)
                .to_string(),
        }),
        None => None,
    };
    let (reporter, health_server) = tonic_health::server::health_reporter();
    let health = Health::new(reporter, services).await;
    let runtime = ServiceRuntime {
        store,
        admission: Admission::new(config.max_concurrent_requests),
        door: BlockingDoor::new(config.cpu_workers),
        limits: config.limits,
        request_timeout: config.request_timeout,
        health,
        events,
    };
    Ok(Prepared {
        runtime,
        health_routes: Routes::new(health_server),
        readiness: Vec::new(),
    })
}

/// Serves until `shutdown` resolves, then drains for at most the configured
/// grace period.
pub async fn serve(
    config: &ServiceConfig,
    prepared: Prepared,
    service_routes: impl FnOnce(Routes) -> Routes,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let Prepared {
        runtime,
        health_routes,
        readiness,
    } = prepared;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(imageflow_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    // Probes get health alone, before reflection and the service are added.
    let health_only = health_routes.clone();
    let routes = service_routes(health_routes.add_service(reflection));

    let readiness = tokio::spawn(become_ready(runtime.clone(), readiness));

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let health = runtime.health.clone();
    let grace = config.shutdown_grace;
    let (drain_started_tx, drain_started_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutdown requested: NOT_SERVING, draining in-flight requests");
        health.set_serving(false).await;
        let _ = drain_started_tx.send(());
        let _ = stop_tx.send(());
    });

    tracing::info!(
        addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        max_concurrent_requests = runtime.admission.limit(),
        storage = runtime.store.backend_name(),
        tls = match &config.tls {
            None => "off",
            Some(tls) if tls.mutual() => "mutual",
            Some(_) => "server-only",
        },
        "gRPC server listening"
    );
    let metrics_server = match config.metrics_listen_addr {
        Some(addr) => Some(crate::metrics_http::spawn(addr).await?),
        None => None,
    };
    let health_server = match config.health_listen_addr {
        Some(addr) => Some(spawn_health_listener(addr, health_only).await?),
        None => None,
    };
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &config.tls {
        builder = builder.tls_config(tls.config())?;
    }
    let server = builder
        .layer(imageflow_telemetry::GrpcServerLayer)
        .tcp_nodelay(true)
        .initial_stream_window_size(imageflow_proto::transport::STREAM_WINDOW_BYTES)
        .initial_connection_window_size(imageflow_proto::transport::CONNECTION_WINDOW_BYTES)
        .max_frame_size(imageflow_proto::transport::MAX_FRAME_BYTES)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_routes(routes)
        // The builder's tcp_nodelay only reaches sockets tonic binds itself; on a
        // pre-bound listener it must be set here, or every response waits for
        // the caller's delayed ACK (~40 ms per call).
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            async {
                let _ = stop_rx.await;
            },
        );

    let result = tokio::select! {
        result = server => result.map_err(ServeError::from),
        () = async {
            let _ = drain_started_rx.await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(grace_seconds = grace.as_secs_f64(), in_flight = runtime.admission.in_flight(), "drain did not finish within the grace period; closing");
            Ok(())
        }
    };
    readiness.abort();
    if let Some(metrics_server) = metrics_server {
        metrics_server.abort();
    }
    // Last to go, so probes see NOT_SERVING for the whole drain.
    if let Some(health_server) = health_server {
        health_server.abort();
    }
    result
}

/// Serves `grpc.health.v1` alone, in plaintext, on `addr`: Kubernetes gRPC
/// probes cannot present a client certificate (nor speak TLS at all), and
/// health status is no secret. Nothing else is reachable on this port.
async fn spawn_health_listener(
    addr: std::net::SocketAddr,
    health: Routes,
) -> Result<tokio::task::JoinHandle<()>, ServeError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::HealthListener { addr, source })?;
    let bound = listener.local_addr().unwrap_or(addr);
    tracing::info!(addr = %bound, "plaintext health listener (grpc.health.v1 only)");
    Ok(tokio::spawn(async move {
        let served = tonic::transport::Server::builder()
            .add_routes(health)
            .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true)))
            .await;
        if let Err(err) = served {
            tracing::warn!(error = %err, "health listener stopped");
        }
    }))
}

/// Flips health to SERVING once the store answers and the service's own
/// conditions hold; retries the store with a capped backoff and says why it is
/// still waiting.
async fn become_ready(runtime: ServiceRuntime, conditions: Vec<Readiness>) {
    futures::future::join(store_ready(&runtime), futures::future::join_all(conditions)).await;
    runtime.health.set_serving(true).await;
    tracing::info!(
        storage = runtime.store.backend_name(),
        "storage reachable and dependencies ready: SERVING"
    );
}

async fn store_ready(runtime: &ServiceRuntime) {
    let checked = imageflow_retry::retry(
        "storage readiness check (NOT_SERVING)",
        READINESS_BACKOFF,
        imageflow_retry::Limit::FOREVER,
        |_| true,
        || runtime.store.check_ready(),
    )
    .await;
    match checked {
        Ok(()) => tracing::info!(storage = runtime.store.backend_name(), "storage reachable"),
        Err(err) => tracing::error!(error = %err, "gave up waiting for storage"),
    }
}

/// Waits between readiness checks of a dependency: 100 ms doubling to 5 s, jittered so
/// the replicas of a rollout do not all knock at once.
pub const READINESS_BACKOFF: imageflow_retry::Backoff =
    imageflow_retry::Backoff::new(Duration::from_millis(100), 2.0, Duration::from_secs(5));

/// Resolves on SIGTERM (Kubernetes) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

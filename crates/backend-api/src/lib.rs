//! `backend-api`: the REST API and the pipeline engine that calls the resident
//! gRPC services directly (no workflow engine in between).
//!
//! * [`api`]: routes and handlers, OpenAPI at `/openapi.json`;
//! * [`dag`] and [`registry`]: pipeline validation and planning;
//! * [`executions`]: accepting an execution, from HTTP or the queue;
//! * [`engine`] and [`clients`]: running executions over balanced gRPC channels;
//! * [`liveness`]: replica heartbeats, recovery of dead replicas' executions;
//! * [`db`]: SQLite (embedded default) or PostgreSQL, one schema;
//! * [`queue`]: Kafka (progress topics, queue mode);
//! * [`events`] and [`metrics`]: live progress and Prometheus metrics.

pub mod api;
pub mod clients;
pub mod config;
pub mod db;
pub mod engine;
pub mod error;
pub mod events;
pub mod executions;
pub mod liveness;
pub mod metrics;
pub mod queue;
#[cfg(test)]
mod testing;

use std::{future::Future, sync::Arc, time::Duration};

use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto::Builder, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use imageflow_storage::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{BackendConfig, ConfigError};
// Pipeline definitions and their validation live in their own crate (no I/O, fuzzed);
// re-exported so `backend_api::model` and `crate::dag` paths stay as they were.
pub use imageflow_pipeline::{dag, model, registry};

/// Pipeline and execution ids a client chooses: 1-128 characters (see
/// [`model::is_valid_id`]).
pub(crate) fn valid_id(id: &str) -> bool {
    model::is_valid_id(id, 128)
}

/// Why the backend could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("storage: {0}")]
    Storage(#[from] imageflow_storage::StorageError),
    #[error("HTTP server: {0}")]
    Io(#[from] std::io::Error),
    #[error("Kafka: {0}")]
    Kafka(imageflow_events::EventsError),
}

/// Everything a running backend holds.
#[derive(Debug)]
pub struct Backend {
    pub state: api::AppState,
    liveness: liveness::Liveness,
    max_request_bytes: usize,
    http_header_read_timeout: Duration,
    queue_adopt_after: Duration,
}

impl Backend {
    /// Connects the database (running migrations) and the store, and starts
    /// resolving the services.
    pub async fn start(config: &BackendConfig) -> Result<Self, RunError> {
        let db = db::Db::connect(&config.database_url, Duration::from_secs(30)).await?;
        let store = Store::connect(&config.storage, config.store_options.clone()).await?;
        if let Err(err) = Box::pin(store.check_ready()).await {
            // Not fatal: /readyz reports it and uploads fail with 503 until it is back.
            tracing::warn!(error = %err, "object storage not ready yet");
        }
        let services = clients::Services::new(
            &config.resize_endpoints,
            &config.filter_endpoints,
            &config.detection_endpoints,
            config.grpc_tls.clone(),
        );
        let metrics = metrics::Metrics::new();
        let owner = engine::replica_id();
        let kafka = match &config.kafka {
            Some(settings) => {
                Some(queue::KafkaLink::new(settings, &owner).map_err(RunError::Kafka)?)
            }
            None => None,
        };
        let hub = match &kafka {
            Some(link) => events::EventHub::with_forward(link.forward()),
            None => events::EventHub::new(),
        };
        let engine = engine::Engine::new(
            engine::EngineParts {
                db: db.clone(),
                caller: Arc::new(services.clone()),
                default_bucket: store.default_bucket().as_str().to_string(),
                store: store.clone(),
                buckets: executions::Buckets::new(
                    store.default_bucket().as_str(),
                    &config.allowed_buckets,
                ),
                events: hub,
                metrics: metrics.clone(),
                owner,
            },
            engine::EngineSettings {
                max_parallel: config.max_parallel_executions,
                max_parallel_inputs: config.max_parallel_inputs,
                max_queued: config.max_queued_executions,
                execution_timeout: config.execution_timeout,
                step_timeout: config.step_timeout,
            },
        );
        // Queue mode: executions go through Kafka, and back to it when their
        // replica dies.
        let queue: Option<Arc<dyn executions::ExecutionQueue>> =
            match (&kafka, config.execution_mode) {
                (Some(link), queue::ExecutionMode::Queue) => Some(Arc::new(link.clone())),
                _ => None,
            };
        let liveness = liveness::Liveness::new(
            engine.clone(),
            db.clone(),
            liveness::LivenessSettings {
                heartbeat: config.heartbeat,
                stale_after: config.stale_after,
            },
            queue.clone(),
        );
        let executions = executions::Executions::new(db.clone(), engine.clone(), queue);
        if config.api_tokens.is_empty() {
            tracing::warn!(
                "IMAGEFLOW_API_TOKENS is unset: the API is open to anyone who can reach it (fine for local runs only)"
            );
        }
        Ok(Self {
            state: api::AppState {
                db,
                store,
                engine,
                executions,
                services,
                metrics,
                tokens: Arc::new(config.api_tokens.clone()),
                max_upload_bytes: config.max_upload_bytes,
                ui: Arc::new(config.ui.clone()),
                kafka,
                execution_mode: config.execution_mode,
            },
            liveness,
            max_request_bytes: config.max_request_bytes,
            http_header_read_timeout: config.http_header_read_timeout,
            queue_adopt_after: config.queue_adopt_after,
        })
    }

    pub fn router(&self) -> axum::Router {
        api::router(self.state.clone(), self.max_request_bytes)
    }

    /// Serves on `listener` until `shutdown`, then stops taking requests,
    /// lets running executions finish for `grace` and fails the rest.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
        grace: Duration,
    ) -> Result<(), RunError> {
        let stop = CancellationToken::new();
        let maintenance = tokio::spawn({
            let liveness = self.liveness.clone();
            let stop = stop.clone();
            async move { liveness.maintain(stop).await }
        });
        tracing::info!(
            addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            database = ?self.state.db.kind(),
            storage = self.state.store.backend_name(),
            replica = self.state.engine.owner(),
            "HTTP server listening"
        );
        // Stops taking queued executions as soon as shutdown is asked.
        let intake = CancellationToken::new();
        if let Some(link) = &self.state.kafka {
            link.ensure_topics_in_background(stop.clone());
            link.spawn_progress_consumer(self.state.engine.events().clone(), stop.clone());
            if self.state.execution_mode == queue::ExecutionMode::Queue {
                link.spawn_execution_consumer(
                    self.state.engine.clone(),
                    self.state.db.clone(),
                    intake.clone(),
                );
                self.liveness
                    .spawn_adopter(self.queue_adopt_after, intake.clone());
            }
        }
        let engine = self.state.engine.clone();
        let router = self.router();
        // Without TCP_NODELAY a response written in two parts waits for the
        // client's delayed ACK (~40 ms): most of a pipeline's budget.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let result = serve_http(listener, router, self.http_header_read_timeout, {
            let intake = intake.clone();
            async move {
                shutdown.await;
                intake.cancel();
                tracing::info!("shutdown requested: draining");
            }
        })
        .await;
        intake.cancel();
        engine.shutdown(grace).await;
        if let Some(link) = &self.state.kafka {
            // The last events (the endings of drained executions) go out.
            let _ = link.publisher().flush(Duration::from_secs(5)).await;
        }
        stop.cancel();
        let _ = maintenance.await;
        self.state.db.close().await;
        result.map_err(RunError::from)
    }
}

/// What `axum::serve(..).with_graceful_shutdown(..)` does, plus hyper's HTTP/1
/// header-read timeout, which needs a timer that `axum::serve` does not give
/// hyper (so it had none: a client sending its headers byte by byte, or never
/// finishing them, held its connection forever). The timeout covers reading a
/// request's head only (and so an idle keep-alive connection waiting for its
/// next request), never a response: SSE streams and `?wait=true` run as long
/// as they need. On `shutdown` it stops accepting, asks every connection to
/// close once its in-flight requests are answered, and returns when all have.
async fn serve_http<L>(
    mut listener: L,
    router: axum::Router,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
{
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    // As axum::serve: the CONNECT protocol (HTTP/2 WebSockets).
    builder.http2().enable_connect_protocol();
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // Accept errors (e.g. too many open files) are retried inside
        // axum's Listener impl, as under axum::serve.
        let io = tokio::select! {
            (io, _addr) = listener.accept() => io,
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                // Timeouts, resets and malformed requests: the client's doing.
                tracing::debug!(error = %err, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Starts and serves; what `main` and the tests call.
pub async fn run(
    config: BackendConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    Backend::start(&config)
        .await?
        .serve(listener, shutdown, config.shutdown_grace)
        .await
}

//! `imageflow.v1.AIDetectionService`: object detection with YOLOv8/YOLO11-layout
//! ONNX models, by bytes or by object reference.
//!
//! A request goes: admission → model lookup (NOT_FOUND before any I/O) →
//! input → decode + letterbox (blocking door) → [`batcher`] (ONNX Runtime in
//! process, or a Triton server) → decode + class-wise NMS, optional drawing and
//! encoding (blocking door) → response, plus the annotated image and the
//! detections JSON in storage for object input. The pure steps live in
//! `imageflow_imaging` (letterbox, NMS, drawing).

pub mod batcher;
pub mod catalog;
pub mod config;
pub mod detect;
pub mod memory;
pub mod onnx;
pub mod triton;

use std::{collections::HashMap, future::Future, sync::Arc, time::Duration};

use imageflow_proto::v1::{
    DetectionRequest, DetectionResponse, HealthCheckRequest, HealthCheckResponse,
    ai_detection_service_server::{AiDetectionService, AiDetectionServiceServer},
};
use imageflow_service::{
    ServeError, ServiceConfig, ServiceDefaults, ServiceRuntime, io, request::ResponseStream,
};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status, Streaming, server::NamedService};

use crate::{
    batcher::{BatchPolicy, Batcher, Engine},
    catalog::{Catalog, ModelSpec},
    config::{Backend, DetectConfig},
    onnx::OnnxModel,
    triton::TritonClient,
};

pub use config::DetectConfig as Config;

pub const DEFAULTS: ServiceDefaults = ServiceDefaults {
    binary: "ai-detect-svc",
    service_name: "imageflow-ai-detect",
    max_concurrent_requests: 20,
    request_timeout: Duration::from_secs(60),
};

pub const SUMMARY: &str = "Detects objects in JPEG, PNG and WebP images over gRPC \
(imageflow.v1.AIDetectionService) with YOLOv8/YOLO11 ONNX models, in process (ONNX Runtime) \
or on a Triton server.";

/// A model ready to take requests.
#[derive(Debug)]
pub struct LoadedModel {
    pub spec: Arc<ModelSpec>,
    pub batcher: Batcher,
    /// `onnx/CPUExecutionProvider`, `triton`, ...
    pub backend: String,
}

/// Every model of the process, by name, and which one is the default.
#[derive(Debug)]
pub struct Models {
    pub catalog: Catalog,
    pub loaded: HashMap<String, LoadedModel>,
}

impl Models {
    pub fn resolve(&self, requested: &str) -> Option<&LoadedModel> {
        let spec = self.catalog.resolve(requested)?;
        self.loaded.get(&spec.name)
    }
}

/// Reads `MODEL_DIR` and loads every model: into ONNX Runtime (through the
/// blocking door, with one warm-up inference each) or as a Triton client.
/// Returns the models and, for Triton, a future that resolves once the server
/// serves all of them (health waits for it).
pub async fn load_models(
    detect: &DetectConfig,
    service: &ServiceConfig,
    runtime: &ServiceRuntime,
) -> Result<
    (
        Arc<Models>,
        Option<impl Future<Output = ()> + Send + 'static>,
    ),
    String,
> {
    let catalog = Catalog::load(&detect.model_dir, detect.default_model.as_deref())
        .map_err(|e| e.to_string())?;
    let policy = BatchPolicy {
        window: detect.batch_window,
        max_batch: detect.max_batch,
        idle_release: detect.idle_release,
    };
    let mut loaded = HashMap::new();
    let mut waits = Vec::new();
    for spec in catalog.models() {
        let spec = Arc::new(spec.clone());
        let (engine, backend) = match &detect.backend {
            Backend::Onnx => {
                let (load_spec, config) = (spec.clone(), detect.clone());
                let deadline = std::time::Instant::now() + Duration::from_secs(600);
                let model = runtime
                    .door
                    .run(deadline, move || OnnxModel::load(&load_spec, &config))
                    .await
                    .map_err(|e| e.to_string())??;
                let model = Arc::new(model);
                // The first runs allocate and tune; pay for them now, on the
                // thread that will run the model's batches.
                let (name, h, w) = (spec.name.clone(), spec.input_height, spec.input_width);
                model
                    .on_thread(move |model| model.warm_up(&name, h, w))
                    .await??;
                let backend = format!("onnx/{}", model.provider);
                tracing::info!(model = %spec.name, path = %spec.path.display(), classes = spec.class_names.len(), %backend, "model loaded");
                (Engine::Onnx(model), backend)
            }
            Backend::Triton { url } => {
                let client = TritonClient::new(url, service.max_message_bytes)?;
                let (wait_client, wait_spec) = (client.clone(), spec.clone());
                waits.push(async move { wait_client.wait_ready(&wait_spec).await });
                (Engine::Triton(client), "triton".to_string())
            }
        };
        let batcher = Batcher::spawn(spec.clone(), engine, runtime.door.clone(), policy);
        loaded.insert(
            spec.name.clone(),
            LoadedModel {
                spec,
                batcher,
                backend,
            },
        );
    }
    let ready = (!waits.is_empty()).then_some(async move {
        futures::future::join_all(waits).await;
    });
    Ok((Arc::new(Models { catalog, loaded }), ready))
}

/// Serves the detection service on `listener` until `shutdown` resolves.
pub async fn run(
    config: ServiceConfig,
    detect: DetectConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let name = <AiDetectionServiceServer<Detector> as NamedService>::NAME;
    let mut prepared = imageflow_service::prepare(&config, vec![name]).await?;
    let (models, ready) = load_models(&detect, &config, &prepared.runtime)
        .await
        .map_err(ServeError::Startup)?;
    if let Some(ready) = ready {
        prepared.require_ready(ready);
    }
    tracing::info!(
        models = ?models.catalog.names(),
        default = models.catalog.default_model(),
        "models ready"
    );
    let detector = Detector {
        runtime: prepared.runtime.clone(),
        models,
    };
    let max_message = config.max_message_bytes;
    imageflow_service::serve(
        &config,
        prepared,
        |routes| {
            routes.add_service(
                AiDetectionServiceServer::new(detector)
                    .max_decoding_message_size(max_message)
                    .max_encoding_message_size(max_message),
            )
        },
        listener,
        shutdown,
    )
    .await
}

/// The gRPC handlers.
#[derive(Clone, Debug)]
pub struct Detector {
    runtime: ServiceRuntime,
    models: Arc<Models>,
}

impl Detector {
    pub fn new(runtime: ServiceRuntime, models: Arc<Models>) -> Self {
        Self { runtime, models }
    }
}

#[tonic::async_trait]
impl AiDetectionService for Detector {
    async fn detect_objects(
        &self,
        request: Request<DetectionRequest>,
    ) -> Result<Response<DetectionResponse>, Status> {
        let (runtime, models) = (self.runtime.clone(), self.models.clone());
        self.runtime
            .unary(
                "DetectObjects",
                request,
                |r| r.execution_id.clone(),
                |req, deadline| detect::detect_one(runtime, models, req, deadline),
            )
            .await
    }

    type DetectObjectsStreamStream = ResponseStream<DetectionResponse>;

    async fn detect_objects_stream(
        &self,
        request: Request<Streaming<DetectionRequest>>,
    ) -> Result<Response<Self::DetectObjectsStreamStream>, Status> {
        let (runtime, models) = (self.runtime.clone(), self.models.clone());
        Ok(Response::new(self.runtime.stream(
            "DetectObjectsStream",
            request,
            move |req, deadline| detect::detect_one(runtime.clone(), models.clone(), req, deadline),
            |err, started| DetectionResponse {
                result: Some(io::failed(err, started)),
                detections: Vec::new(),
                metadata: None,
            },
        )))
    }

    async fn health(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        Ok(Response::new(
            self.runtime.health.check(&request.get_ref().service),
        ))
    }
}

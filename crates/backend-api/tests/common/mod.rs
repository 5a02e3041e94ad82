//! The stack under test: real resize-svc and filter-svc on loopback gRPC, the
//! backend on a loopback HTTP port, a real database (SQLite in a temp dir, or
//! a fresh PostgreSQL database when `IMAGEFLOW_TEST_POSTGRES_URL` is set) and
//! a filesystem store shared by all of them.

#![allow(dead_code, clippy::unwrap_used)]

use std::{collections::HashMap, path::Path, time::Duration};

use backend_api::{BackendConfig, RunError};
use imageflow_service::{ServeError, ServiceConfig};
use imageflow_testkit::{RunningService, fixture, spawn_service, wait_serving};
use serde_json::{Value, json};

pub struct Services {
    pub resize: RunningService<ServeError>,
    pub filter: RunningService<ServeError>,
}

pub fn storage_env(root: &Path) -> HashMap<String, String> {
    HashMap::from([(
        "STORAGE_URL".to_string(),
        format!("file://{}", root.display()),
    )])
}

pub async fn start_services(root: &Path) -> Services {
    let env = storage_env(root);
    let resize_config = ServiceConfig::from_env(&env, resize_svc::DEFAULTS).unwrap();
    let filter_config = ServiceConfig::from_env(&env, filter_svc::DEFAULTS).unwrap();
    let resize = spawn_service(move |l, s| resize_svc::run(resize_config, l, s)).await;
    let filter = spawn_service(move |l, s| filter_svc::run(filter_config, l, s)).await;
    wait_serving(
        resize.channel().await,
        "imageflow.v1.ResizeService",
        Duration::from_secs(20),
    )
    .await;
    wait_serving(
        filter.channel().await,
        "imageflow.v1.FilterService",
        Duration::from_secs(20),
    )
    .await;
    Services { resize, filter }
}

/// A database URL for one test: a new SQLite file, or a new PostgreSQL
/// database on the server named by `IMAGEFLOW_TEST_POSTGRES_URL`.
pub async fn database_url(dir: &Path, postgres: bool) -> String {
    if !postgres {
        return format!("sqlite://{}/imageflow.db", dir.display());
    }
    let admin = std::env::var("IMAGEFLOW_TEST_POSTGRES_URL").expect(
        "IMAGEFLOW_TEST_POSTGRES_URL is unset: run the suite through scripts/test.sh, which starts PostgreSQL",
    );
    sqlx::any::install_default_drivers();
    let name = format!("imageflow_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at IMAGEFLOW_TEST_POSTGRES_URL: {e}"));
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    format!("{base}/{name}")
}

pub struct Backend {
    service: Option<RunningService<RunError>>,
    /// Set when the backend runs on its own runtime, so it can be crashed.
    runtime: Option<tokio::runtime::Runtime>,
    pub url: String,
    pub http: reqwest::Client,
}

impl Backend {
    /// Graceful stop (as on SIGTERM).
    pub async fn stop(mut self) {
        if let Some(service) = self.service.take() {
            service.stop().await.unwrap();
        }
    }

    /// Kills it as a crash would: every task of its runtime is dropped where
    /// it stands, nothing gets to clean up.
    pub fn crash(mut self) {
        self.runtime
            .take()
            .expect("crash() needs start_crashable_backend")
            .shutdown_background();
    }

    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub async fn upload(&self, name: &str) -> Value {
        let response = self
            .http
            .post(self.at("/v1/files"))
            .header("content-type", "image/jpeg")
            .body(fixture(name))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        response.json().await.unwrap()
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(self.at(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn post_multipart(&self, path: &str, form: reqwest::multipart::Form) -> (u16, Value) {
        let response = self
            .http
            .post(self.at(path))
            .multipart(form)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The bytes of an uploaded or produced file.
    pub async fn download(&self, file_id: &str) -> bytes::Bytes {
        self.http
            .get(self.at(&format!("/v1/files/{file_id}/download")))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(self.at(path)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Polls an execution until it is no longer pending or running.
    pub async fn wait_terminal(&self, id: &str, within: Duration) -> Value {
        let started = std::time::Instant::now();
        loop {
            let (_, record) = self.get(&format!("/v1/executions/{id}")).await;
            let status = record["status"].as_str().unwrap_or_default().to_string();
            if !matches!(status.as_str(), "pending" | "running") {
                return record;
            }
            assert!(
                started.elapsed() < within,
                "execution {id} still {status} after {within:?}: {record}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub fn backend_env(
    root: &Path,
    database_url: &str,
    services: &Services,
    extra: &[(&str, &str)],
) -> HashMap<String, String> {
    let mut env = storage_env(root);
    env.insert("DATABASE_URL".into(), database_url.into());
    env.insert("RESIZE_GRPC_ENDPOINT".into(), services.resize.url());
    env.insert("FILTER_GRPC_ENDPOINT".into(), services.filter.url());
    // No detection service in these tests unless one is given.
    env.insert(
        "AI_DETECTION_GRPC_ENDPOINT".into(),
        format!("http://{}", imageflow_testkit::closed_port()),
    );
    for (k, v) in extra {
        env.insert((*k).into(), (*v).into());
    }
    env
}

pub async fn start_backend(env: HashMap<String, String>) -> Backend {
    // JSON log lines on stdout when IMAGEFLOW_TEST_LOGS is set (debugging a failure).
    if std::env::var_os("IMAGEFLOW_TEST_LOGS").is_some() {
        let _ = imageflow_telemetry::init("backend-api-test", "test");
    }
    let config = BackendConfig::from_env(&env).expect("test backend config");
    let service = spawn_service(move |l, s| backend_api::run(config, l, s)).await;
    let url = service.url();
    connect(Some(service), None, url).await
}

/// A backend on a runtime of its own (see [`Backend::crash`]).
pub async fn start_crashable_backend(env: HashMap<String, String>) -> Backend {
    let config = BackendConfig::from_env(&env).expect("test backend config");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    runtime.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        backend_api::run(config, listener, std::future::pending()).await
    });
    connect(None, Some(runtime), url).await
}

async fn connect(
    service: Option<RunningService<RunError>>,
    runtime: Option<tokio::runtime::Runtime>,
    url: String,
) -> Backend {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    // Ready when it answers /healthz.
    let started = std::time::Instant::now();
    while http.get(format!("{url}/healthz")).send().await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "backend did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Backend {
        service,
        runtime,
        url,
        http,
    }
}

/// resize → (gaussian ‖ sharpen), the two filters in parallel on level 1.
pub fn diamond_pipeline(id: &str) -> Value {
    json!({
        "pipelineId": id,
        "pipelineName": "resize then two filters",
        "steps": [
            {"stepId": "resize", "componentName": "resize",
             "parameters": {"width": 800, "height": 600, "maintain_aspect_ratio": true}},
            {"stepId": "soften", "componentName": "filter", "dependencies": ["resize"],
             "parameters": {"filter_type": "gaussian", "intensity": 1.5}},
            {"stepId": "sharpen", "componentName": "filter", "dependencies": ["resize"],
             "parameters": {"filter_type": "sharpen", "intensity": 1.0}},
        ]
    })
}

/// ai-detect-svc with the YOLO11n model and ONNX Runtime that
/// `scripts/setup.sh` installs under `./models`; waits until it is SERVING.
pub async fn start_detection(root: &Path) -> RunningService<ServeError> {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
    let lib = models.join("lib/libonnxruntime.so");
    for needed in [models.join("yolo11n.onnx"), lib.clone()] {
        assert!(
            needed.exists(),
            "{} is missing: run scripts/setup.sh (it installs the model and ONNX Runtime from PyPI)",
            needed.display()
        );
    }
    let mut env = storage_env(root);
    env.insert("MODEL_DIR".into(), models.display().to_string());
    env.insert("ORT_DYLIB_PATH".into(), lib.display().to_string());
    let config = ServiceConfig::from_env(&env, ai_detect_svc::DEFAULTS).unwrap();
    let detect = ai_detect_svc::Config::from_env(&env).unwrap();
    let service = spawn_service(move |l, s| ai_detect_svc::run(config, detect, l, s)).await;
    wait_serving(
        service.channel().await,
        "imageflow.v1.AIDetectionService",
        Duration::from_secs(60),
    )
    .await;
    service
}

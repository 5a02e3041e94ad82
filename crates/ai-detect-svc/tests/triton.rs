//! The Triton backend (`INFERENCE_BACKEND=triton`) against a real KServe v2
//! gRPC server: MLServer from PyPI (installed by `scripts/setup.sh`) running a
//! small onnxruntime runtime (`tests/mlserver/onnx_runtime.py`) on the same
//! YOLO11n file. Its answers must match the in-process ONNX Runtime backend.

#![allow(clippy::unwrap_used)] // shared test bodies are not #[test] functions themselves

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::*;
use imageflow_testkit::{closed_port, fixture};

/// An `mlserver start` process on loopback ports, stopped on drop.
struct MlServer {
    child: Child,
    grpc_url: String,
    _dir: tempfile::TempDir,
}

impl Drop for MlServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn venv() -> PathBuf {
    let cache = std::env::var("IMAGEFLOW_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/imageflow")
        });
    cache.join("venv")
}

impl MlServer {
    fn start(model: &Path) -> Self {
        let mlserver = venv().join("bin/mlserver");
        assert!(
            mlserver.exists(),
            "{} is missing: run scripts/setup.sh (it installs mlserver 1.7.1 from PyPI)",
            mlserver.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let (grpc, http, metrics) = (closed_port(), closed_port(), closed_port());
        // One 1x3x640x640 FP32 tensor is 4.9 MB, over MLServer's 4 MB default.
        let settings = serde_json::json!({
            "host": "127.0.0.1",
            "grpc_port": grpc.port(),
            "http_port": http.port(),
            "metrics_port": metrics.port(),
            "grpc_max_message_length": 256 << 20,
            "parallel_workers": 0,
        });
        std::fs::write(dir.path().join("settings.json"), settings.to_string()).unwrap();
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mlserver/onnx_runtime.py"),
            dir.path().join("onnx_runtime.py"),
        )
        .unwrap();
        let model_dir = dir.path().join("yolo11n");
        std::fs::create_dir(&model_dir).unwrap();
        let model_settings = serde_json::json!({
            "name": "yolo11n",
            "implementation": "onnx_runtime.OnnxYolo",
            "parameters": {"uri": model.display().to_string()},
            "inputs": [{"name": "images", "datatype": "FP32", "shape": [-1, 3, 640, 640]}],
            "outputs": [{"name": "output0", "datatype": "FP32", "shape": [-1, 84, 8400]}],
        });
        std::fs::write(
            model_dir.join("model-settings.json"),
            model_settings.to_string(),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("mlserver.log")).unwrap();
        let child = Command::new(&mlserver)
            .arg("start")
            .arg(dir.path())
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", mlserver.display()));
        Self {
            child,
            grpc_url: format!("http://{grpc}"),
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("mlserver.log")).unwrap_or_default()
    }
}

#[tokio::test]
async fn triton_backend_on_mlserver_matches_onnx_runtime() {
    let onnx_dir = tempfile::tempdir().unwrap();
    let onnx_env = fs_env(onnx_dir.path());
    let model = PathBuf::from(&onnx_env["MODEL_DIR"]).join("yolo11n.onnx");
    let mut server = MlServer::start(&model);

    let dir = tempfile::tempdir().unwrap();
    let mut env = fs_env(dir.path());
    env.insert("INFERENCE_BACKEND".into(), "triton".into());
    env.insert("TRITON_URL".into(), server.grpc_url.clone());
    env.insert("BATCH_WINDOW_MS".into(), "300".into());
    let triton = spawn_unready(&env).await;
    let channel = triton.channel().await;
    // SERVING only once MLServer has the model (it takes a few seconds to start).
    let ready = tokio::time::timeout(
        Duration::from_secs(120),
        imageflow_testkit::wait_serving(channel.clone(), SERVICE, Duration::from_secs(120)),
    )
    .await;
    if ready.is_err() || server.child.try_wait().unwrap().is_some() {
        panic!("MLServer did not come up; its log:\n{}", server.log());
    }
    let mut via_triton = client(channel);
    let (local, mut via_onnx) = start(&onnx_env).await;

    for photo in &PHOTOS {
        let remote = via_triton
            .detect_objects(bytes_request(fixture(photo.file), false))
            .await
            .unwrap_or_else(|s| panic!("{}: {s:?}\n{}", photo.file, server.log()))
            .into_inner();
        assert_finds(photo, &remote);
        assert_eq!(
            remote.result.as_ref().unwrap().metadata["backend"],
            "triton"
        );
        let here = via_onnx
            .detect_objects(bytes_request(fixture(photo.file), false))
            .await
            .unwrap()
            .into_inner();
        assert_same_detections(&here, &remote, photo.file);
    }

    // Concurrent requests go to the server as one batch and still agree.
    let reference = via_onnx
        .detect_objects(bytes_request(fixture("coffee.jpg"), false))
        .await
        .unwrap()
        .into_inner();
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let mut client = via_triton.clone();
            tokio::spawn(async move {
                client
                    .detect_objects(bytes_request(fixture("coffee.jpg"), false))
                    .await
                    .map(|r| r.into_inner())
            })
        })
        .collect();
    let mut largest = 0;
    for call in calls {
        let response = call.await.unwrap().expect("detect via triton");
        assert_same_detections(&reference, &response, "triton batch");
        let batch: usize = response.result.as_ref().unwrap().metadata["batch_size"]
            .parse()
            .unwrap();
        largest = largest.max(batch);
    }
    assert!(
        largest >= 2,
        "concurrent requests never shared a Triton batch"
    );

    // The server going away makes requests UNAVAILABLE, not INTERNAL.
    let _ = server.child.kill();
    let _ = server.child.wait();
    let status = via_triton
        .detect_objects(bytes_request(fixture("coffee.jpg"), false))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");

    triton.stop().await.unwrap();
    local.stop().await.unwrap();
}

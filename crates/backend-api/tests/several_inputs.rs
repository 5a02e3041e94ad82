//! Several inputs per execution through the REST API, against the real
//! resize service, a real database and real files: uploaded files and object
//! references together, a pipeline's inputPath prefix run without inputs, its
//! outputPath copies, a partial failure, and the refusals.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::*;
use imageflow_imaging::{Limits, decode};
use imageflow_testkit::fixture;
use serde_json::{Value, json};

/// The second bucket the backend is allowed to use (ALLOWED_BUCKETS).
const DROP: &str = "camera-drop";

/// Writes `bytes` as object `key` of `bucket` in the file-system store.
fn put_object(root: &Path, bucket: &str, key: &str, bytes: &[u8]) {
    let path = root.join(bucket).join(key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn resize_to(width: u32) -> Value {
    json!({"pipelineName": "thumbs", "steps": [
        {"stepId": "thumb", "componentName": "resize",
         "parameters": {"width": width, "height": 0, "maintain_aspect_ratio": true}}
    ]})
}

async fn several_inputs(postgres: bool) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let services = start_services(root).await;
    let db = database_url(root, postgres).await;
    std::fs::create_dir_all(root.join(DROP)).unwrap();
    let backend = start_backend(backend_env(
        root,
        &db,
        &services,
        &[("ALLOWED_BUCKETS", DROP), ("MAX_PARALLEL_INPUTS", "3")],
    ))
    .await;

    // Five images: three uploaded, two already in the store. Two of them
    // share a file name, in different folders.
    let mut inputs = Vec::new();
    for name in ["chelsea.jpg", "coffee.jpg", "astronaut.jpg"] {
        inputs.push(backend.upload(name).await["file_id"].clone());
    }
    put_object(root, DROP, "north/cam.jpg", &fixture("chelsea.jpg"));
    put_object(root, DROP, "south/cam.jpg", &fixture("coffee.jpg"));
    inputs.push(json!("s3://camera-drop/north/cam.jpg"));
    inputs.push(json!("s3://camera-drop/south/cam.jpg"));

    let (code, record) = backend
        .post(
            "/v1/executions?wait=true",
            json!({"pipeline": resize_to(64), "inputs": inputs}),
        )
        .await;
    assert_eq!(code, 200, "{record}");
    assert_eq!(record["status"], "completed", "{record}");
    let id = record["execution_id"].as_str().unwrap();
    let results = record["input_results"].as_array().unwrap();
    assert_eq!(results.len(), 5);
    assert_eq!(record["steps"].as_array().unwrap().len(), 5);
    for (n, result) in results.iter().enumerate() {
        assert_eq!(result["index"], n, "{result}");
        assert_eq!(result["input"], inputs[n]);
        assert_eq!(result["status"], "completed", "{result}");
        let output = &result["output"];
        assert_eq!(
            output["object_key"]
                .as_str()
                .unwrap()
                .rsplit_once('/')
                .unwrap()
                .0,
            format!("executions/{id}/input-{n}"),
            "each input's outputs in a folder of its own"
        );
        assert_eq!(output["width"], 64);
        let bytes = backend.download(output["file_id"].as_str().unwrap()).await;
        assert_eq!(
            decode(&bytes, &Limits::default()).unwrap().original_width,
            64
        );
    }
    // Same file name, different folders: two different outputs.
    assert_ne!(
        results[3]["output"]["object_key"],
        results[4]["output"]["object_key"]
    );

    // A pipeline whose inputPath is a prefix runs without inputs; its
    // outputPath gets a copy of each final image.
    for name in ["a.jpg", "b.jpg", "c.jpg"] {
        put_object(
            root,
            DROP,
            &format!("incoming/{name}"),
            &fixture("chelsea.jpg"),
        );
    }
    put_object(root, DROP, "incoming/README.txt", b"not an image");
    let mut watched = resize_to(32);
    watched["pipelineId"] = json!("watched");
    watched["globalParameters"] = json!({
        "inputPath": "s3://camera-drop/incoming/",
        "outputPath": "s3://camera-drop/thumbnails/"
    });
    let (code, stored) = backend.post("/v1/pipelines", watched).await;
    assert_eq!(code, 201, "{stored}");
    let (code, record) = backend
        .post("/v1/executions?wait=true", json!({"pipelineId": "watched"}))
        .await;
    assert_eq!(code, 200, "{record}");
    assert_eq!(record["status"], "completed", "{record}");
    let id = record["execution_id"].as_str().unwrap();
    assert_eq!(
        record["inputs"],
        json!([
            "s3://camera-drop/incoming/a.jpg",
            "s3://camera-drop/incoming/b.jpg",
            "s3://camera-drop/incoming/c.jpg"
        ])
    );
    for (n, result) in record["input_results"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let copied = result["copied_to"][0].as_str().unwrap();
        let expected = format!("camera-drop/thumbnails/{id}/input-{n}/");
        assert!(copied.starts_with(&expected), "{copied}");
        let bytes = std::fs::read(root.join(copied)).unwrap();
        assert_eq!(
            decode(&bytes, &Limits::default()).unwrap().original_width,
            32
        );
    }

    // One corrupt image among good ones: the others complete, the execution
    // says which failed and why.
    put_object(root, DROP, "mixed/good.jpg", &fixture("coffee.jpg"));
    let mut truncated = fixture("coffee.jpg");
    truncated.truncate(truncated.len() / 3);
    put_object(root, DROP, "mixed/truncated.jpg", &truncated);
    let (code, record) = backend
        .post(
            "/v1/executions?wait=true",
            json!({"pipeline": resize_to(32), "inputs": ["s3://camera-drop/mixed/"]}),
        )
        .await;
    assert_eq!(code, 200, "{record}");
    assert_eq!(record["status"], "partially_failed", "{record}");
    let error = record["error"].as_str().unwrap();
    assert!(
        error.starts_with(
            "1 of 2 inputs failed: input 1 (s3://camera-drop/mixed/truncated.jpg): step \"thumb\" failed"
        ),
        "{error}"
    );
    assert_eq!(record["input_results"][0]["status"], "completed");
    assert_eq!(record["input_results"][1]["status"], "failed");

    // Refusals, before anything runs.
    let refused = |inputs: Value, pipeline: Value| {
        backend.post(
            "/v1/executions",
            json!({"pipeline": pipeline, "inputs": inputs}),
        )
    };
    let (code, body) = refused(json!(["s3://payroll/2026.jpg"]), resize_to(32)).await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("bucket \"payroll\" is not one this backend may use"),
        "{body}"
    );
    let (code, body) = refused(json!(["s3://camera-drop/nope.jpg"]), resize_to(32)).await;
    assert_eq!(code, 404, "{body}");
    let (code, body) = refused(json!([]), resize_to(32)).await;
    assert_eq!(code, 400, "{body}");
    let mut outside = resize_to(32);
    outside["globalParameters"] = json!({"outputPath": "s3://payroll/"});
    let (code, body) = backend.post("/v1/pipelines", outside).await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("globalParameters.outputPath"),
        "{body}"
    );

    let metrics = backend
        .http
        .get(backend.at("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("imageflow_execution_inputs_total{status=\"completed\"} 9"),
        "{metrics}"
    );
    assert!(
        metrics.contains("imageflow_execution_inputs_total{status=\"failed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pipeline_executions_total{status=\"partially_failed\"} 1"),
        "{metrics}"
    );
    backend.stop().await;
}

#[tokio::test]
async fn several_inputs_run_as_one_execution_on_sqlite() {
    several_inputs(false).await;
}

#[tokio::test]
async fn several_inputs_run_as_one_execution_on_postgres() {
    several_inputs(true).await;
}

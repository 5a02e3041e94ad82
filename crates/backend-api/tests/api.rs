//! The REST API against real services, a real database and real files.

#![allow(clippy::unwrap_used)] // shared test bodies are not #[test] functions themselves

mod common;

use std::time::Duration;

use common::*;
use imageflow_imaging::{Limits, decode};
use imageflow_testkit::{BlackHole, closed_port, fixture};
use serde_json::{Value, json};

async fn full_pipeline_run(postgres: bool) {
    let dir = tempfile::tempdir().unwrap();
    let services = start_services(dir.path()).await;
    let db = database_url(dir.path(), postgres).await;
    let backend = start_backend(backend_env(dir.path(), &db, &services, &[])).await;

    let file = backend.upload("photo-1920x1080.jpg").await;
    assert_eq!(file["width"], 1920);
    assert_eq!(file["height"], 1080);
    assert_eq!(file["content_type"], "image/jpeg");

    let (code, stored) = backend
        .post("/v1/pipelines", diamond_pipeline("diamond"))
        .await;
    assert_eq!(code, 201, "{stored}");
    assert_eq!(stored["revision"], 1);

    let (code, record) = backend
        .post(
            "/v1/executions?wait=true",
            json!({"pipelineId": "diamond", "inputs": [file["file_id"]]}),
        )
        .await;
    assert_eq!(code, 200, "{record}");
    assert_eq!(record["status"], "completed", "{record}");
    assert!(record["execution_time_ms"].as_f64().unwrap() > 0.0);
    let steps = record["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3);
    for step in steps {
        assert_eq!(step["status"], "completed", "{step}");
        assert_eq!(step["attempts"], 1);
        assert!(step["service_time_ms"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(steps[0]["level"], 0);
    assert_eq!(steps[1]["level"], 1);
    assert_eq!(steps[2]["level"], 1);

    // The resize output is 800x450; each filter worked on it, not on the original.
    for step in steps {
        let output = &step["output"];
        assert!(
            output["object_key"].as_str().unwrap().starts_with(&format!(
                "executions/{}/",
                record["execution_id"].as_str().unwrap()
            )),
            "{output}"
        );
        let bytes = backend.download(output["file_id"].as_str().unwrap()).await;
        let image = decode(&bytes, &Limits::default()).unwrap();
        assert_eq!((image.original_width, image.original_height), (800, 450));
    }
    // The two filters differ: one blurred, one sharpened.
    assert_ne!(
        steps[1]["output"]["object_key"],
        steps[2]["output"]["object_key"]
    );

    // Listed newest first, with the same record.
    let (_, list) = backend.get("/v1/executions?limit=5").await;
    assert_eq!(
        list["executions"][0]["execution_id"],
        record["execution_id"]
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
        metrics.contains("pipeline_executions_total{status=\"completed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "imageflow_step_executions_total{step_type=\"filter\",status=\"completed\"} 2"
        )
    );
    // A scraper that asks for OpenMetrics (Prometheus does, for exemplars)
    // gets it, the process-wide series included before the one `# EOF`.
    let open = backend
        .http
        .get(backend.at("/metrics"))
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    assert!(
        open.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let open = open.text().await.unwrap();
    assert!(open.ends_with("# EOF\n") && open.matches("# EOF").count() == 1);
    assert!(
        open.contains("pipeline_executions_total{status=\"completed\"} 1"),
        "{open}"
    );
    assert!(
        open.contains("imageflow_storage_operations_total"),
        "{open}"
    );
    backend.stop().await;
}

#[tokio::test]
async fn a_pipeline_runs_end_to_end_on_sqlite() {
    full_pipeline_run(false).await;
}

#[tokio::test]
async fn a_pipeline_runs_end_to_end_on_postgres() {
    full_pipeline_run(true).await;
}

#[tokio::test]
async fn bad_requests_get_clear_4xx_answers() {
    let dir = tempfile::tempdir().unwrap();
    let services = start_services(dir.path()).await;
    let db = database_url(dir.path(), false).await;
    let backend = start_backend(backend_env(
        dir.path(),
        &db,
        &services,
        &[
            ("MAX_UPLOAD_BYTES", "100000"),
            ("MAX_REQUEST_BYTES", "65536"),
        ],
    ))
    .await;

    // Pipelines: cycle, unknown component, unknown dependency, bad parameter.
    let step = |id: &str, component: &str, deps: &[&str]| json!({"stepId": id, "componentName": component, "dependencies": deps});
    for (steps, step_id, needle) in [
        (
            json!([step("a", "resize", &["b"]), step("b", "filter", &["a"])]),
            Some("a"),
            "cycle",
        ),
        (
            json!([step("x", "sepia", &[])]),
            Some("x"),
            "unknown component",
        ),
        (
            json!([step("x", "resize", &["ghost"])]),
            Some("x"),
            "unknown step",
        ),
        (
            json!([{"stepId": "x", "componentName": "filter", "parameters": {"intensity": "strong"}}]),
            Some("x"),
            "must be a number",
        ),
        (json!([]), None, "at least one step"),
    ] {
        let (code, body) = backend
            .post(
                "/v1/pipelines",
                json!({"pipelineName": "bad", "steps": steps}),
            )
            .await;
        assert_eq!(code, 400, "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(needle),
            "{body}"
        );
        assert_eq!(body["error"]["step_id"].as_str(), step_id, "{body}");
    }
    // The original system's path keys are not used; a wrong type is refused.
    let (code, body) = backend
        .post(
            "/v1/pipelines",
            json!({"pipelineName": "bad", "steps": [step("x", "resize", &[])],
                   "globalParameters": {"outputPath": 42}}),
        )
        .await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("globalParameters.outputPath must be a string"),
        "{body}"
    );

    // Malformed JSON and a missing content type.
    let response = backend
        .http
        .post(backend.at("/v1/pipelines"))
        .header("content-type", "application/json")
        .body("{\"pipelineName\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("malformed JSON")
    );
    let response = backend
        .http
        .post(backend.at("/v1/executions"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);

    // Uploads: too large, not an image, truncated.
    let response = backend
        .http
        .post(backend.at("/v1/files"))
        .body(fixture("photo-1920x1080.jpg"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("MAX_UPLOAD_BYTES"),
        "{body}"
    );
    // The same limit holds for a multipart upload.
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(fixture("photo-1920x1080.jpg")).file_name("big.jpg"),
    );
    let (code, body) = backend.post_multipart("/v1/files", form).await;
    assert_eq!(code, 413);
    assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
    // A JSON body over MAX_REQUEST_BYTES (the upload limit is only for uploads).
    let (code, body) = backend
        .post(
            "/v1/pipelines",
            json!({"pipelineName": "x".repeat(70_000), "steps": [step("a", "resize", &[])]}),
        )
        .await;
    assert_eq!(code, 413, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
    let response = backend
        .http
        .post(backend.at("/v1/files"))
        .header("content-type", "image/png")
        .body("definitely not an image")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    let jpeg = fixture("chelsea.jpg");
    let response = backend
        .http
        .post(backend.at("/v1/files"))
        .body(jpeg[..200].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400, "{}", response.text().await.unwrap());

    // Unknown ids.
    for path in [
        "/v1/files/nope",
        "/v1/files/nope/download",
        "/v1/pipelines/nope",
        "/v1/executions/nope",
    ] {
        let (code, body) = backend.get(path).await;
        assert_eq!(code, 404, "{path}: {body}");
        assert_eq!(body["error"]["code"], "not_found");
    }
    let file = backend.upload("chelsea.jpg").await;
    let (code, body) = backend
        .post(
            "/v1/executions",
            json!({"pipelineId": "nope", "inputs": [file["file_id"]]}),
        )
        .await;
    assert_eq!(code, 404, "{body}");
    let (code, body) = backend
        .post(
            "/v1/executions",
            json!({"pipeline": diamond_pipeline("inline"), "inputs": ["missing-file"]}),
        )
        .await;
    assert_eq!(code, 404, "{body}");
    let (code, _) = backend
        .post(
            "/v1/executions",
            json!({"pipeline": diamond_pipeline("inline"), "inputs": []}),
        )
        .await;
    assert_eq!(code, 400);
    let (code, body) = backend
        .post(
            "/v1/executions",
            json!({"pipeline": diamond_pipeline("inline"), "inputs": [file["file_id"]],
                   "parameters": {"ghost-step": {"width": 1}}}),
        )
        .await;
    assert_eq!(code, 400, "{body}");
    let (code, _) = backend.get("/v1/executions?status=exploded").await;
    assert_eq!(code, 400);
    backend.stop().await;
}

#[tokio::test]
async fn failures_are_retried_then_reported_or_skipped_or_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let services = start_services(dir.path()).await;
    let db = database_url(dir.path(), false).await;
    let dead = format!("http://{}", closed_port());
    let backend = start_backend(backend_env(
        dir.path(),
        &db,
        &services,
        &[("FILTER_GRPC_ENDPOINT", dead.as_str())],
    ))
    .await;
    let file = backend.upload("chelsea.jpg").await;
    let run = |steps: Value| json!({"pipeline": {"pipelineName": "t", "steps": steps}, "inputs": [file["file_id"]]});

    // The filter service is down: three attempts, then a failure naming the step.
    let (code, record) = backend
        .post(
            "/v1/executions?wait=true",
            run(json!([
                {"stepId": "small", "componentName": "resize", "parameters": {"width": 100, "height": 0}},
                {"stepId": "blur", "componentName": "filter", "dependencies": ["small"],
                 "retryPolicy": {"maxRetries": 2, "backoffFactor": 1.5}},
            ])),
        )
        .await;
    assert_eq!(code, 200, "{record}");
    assert_eq!(record["status"], "failed");
    let error = record["error"].as_str().unwrap();
    assert!(
        error.contains("\"blur\"") && error.contains("UNAVAILABLE"),
        "{error}"
    );
    assert_eq!(record["steps"][0]["status"], "completed");
    assert_eq!(record["steps"][1]["status"], "failed");
    assert_eq!(record["steps"][1]["attempts"], 3);

    // Same failure, but the step may be skipped: its input flows on.
    let (_, record) = backend
        .post(
            "/v1/executions?wait=true",
            run(json!([
                {"stepId": "small", "componentName": "resize", "parameters": {"width": 100, "height": 0}},
                {"stepId": "blur", "componentName": "filter", "dependencies": ["small"], "continueOnFailure": true},
                {"stepId": "again", "componentName": "resize", "dependencies": ["blur"], "parameters": {"width": 50, "height": 0}},
            ])),
        )
        .await;
    assert_eq!(record["status"], "completed", "{record}");
    assert_eq!(record["steps"][1]["status"], "skipped");
    assert_eq!(record["steps"][2]["output"]["width"], 50);

    // A fallback component replaces the failed one.
    let (_, record) = backend
        .post(
            "/v1/executions?wait=true",
            run(json!([
                {"stepId": "blur", "componentName": "filter",
                 "fallback": {"componentName": "resize", "parameters": {"width": 64, "height": 0}}},
            ])),
        )
        .await;
    assert_eq!(record["status"], "completed", "{record}");
    assert_eq!(record["steps"][0]["used_fallback"], true);
    assert_eq!(record["steps"][0]["output"]["width"], 64);

    // A request only the service can refuse (an output over its pixel limit)
    // is INVALID_ARGUMENT, which is not worth retrying.
    let (_, record) = backend
        .post(
            "/v1/executions?wait=true",
            run(json!([
                {"stepId": "resize", "componentName": "resize",
                 "retryPolicy": {"maxRetries": 3}, "parameters": {"width": 16384, "height": 16384, "maintain_aspect_ratio": false}},
            ])),
        )
        .await;
    assert_eq!(record["status"], "failed", "{record}");
    assert_eq!(record["steps"][0]["attempts"], 1, "{record}");
    assert!(
        record["error"]
            .as_str()
            .unwrap()
            .contains("INVALID_ARGUMENT"),
        "{record}"
    );
    backend.stop().await;
}

#[tokio::test]
async fn cancel_and_deadline_stop_work_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let services = start_services(dir.path()).await;
    let db = database_url(dir.path(), false).await;
    let hole = BlackHole::start().await;
    let backend = start_backend(backend_env(
        dir.path(),
        &db,
        &services,
        &[("FILTER_GRPC_ENDPOINT", hole.url().as_str())],
    ))
    .await;
    let file = backend.upload("chelsea.jpg").await;
    let hanging = json!({"pipeline": {"pipelineName": "hangs", "steps": [
        {"stepId": "stuck", "componentName": "filter", "timeoutSeconds": 120}
    ]}, "inputs": [file["file_id"]]});

    let (code, accepted) = backend.post("/v1/executions", hanging.clone()).await;
    assert_eq!(code, 202, "{accepted}");
    let id = accepted["execution_id"].as_str().unwrap().to_string();
    // Wait until the step is in flight, then cancel.
    let started = std::time::Instant::now();
    loop {
        let (_, record) = backend.get(&format!("/v1/executions/{id}")).await;
        if record["steps"][0]["status"] == "running" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{record}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (code, body) = backend
        .post(&format!("/v1/executions/{id}/cancel"), json!({}))
        .await;
    assert_eq!(code, 200, "{body}");
    let record = backend.wait_terminal(&id, Duration::from_secs(5)).await;
    assert_eq!(record["status"], "cancelled");
    assert_eq!(record["steps"][0]["status"], "cancelled");
    let (code, _) = backend
        .post(&format!("/v1/executions/{id}/cancel"), json!({}))
        .await;
    assert_eq!(code, 409, "a finished execution cannot be cancelled again");

    // The pipeline's own deadline ends it as failed, naming the step.
    let mut short = hanging.clone();
    short["pipeline"]["timeoutSeconds"] = json!(1);
    let (_, record) = backend.post("/v1/executions?wait=true", short).await;
    assert_eq!(record["status"], "failed", "{record}");
    let error = record["error"].as_str().unwrap();
    assert!(
        error.contains("deadline") && error.contains("stuck"),
        "{error}"
    );
    backend.stop().await;
}

#[tokio::test]
async fn executions_beyond_the_parallel_limit_wait_in_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let services = start_services(dir.path()).await;
    let db = database_url(dir.path(), false).await;
    let hole = BlackHole::start().await;
    let backend = start_backend(backend_env(
        dir.path(),
        &db,
        &services,
        &[
            ("FILTER_GRPC_ENDPOINT", hole.url().as_str()),
            ("MAX_PARALLEL_EXECUTIONS", "1"),
        ],
    ))
    .await;
    let file = backend.upload("chelsea.jpg").await;
    let body = json!({"pipeline": {"pipelineName": "hangs", "steps": [
        {"stepId": "stuck", "componentName": "filter"}]}, "inputs": [file["file_id"]]});
    let (_, first) = backend.post("/v1/executions", body.clone()).await;
    let (_, second) = backend.post("/v1/executions", body).await;
    let first = first["execution_id"].as_str().unwrap();
    let second = second["execution_id"].as_str().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, a) = backend.get(&format!("/v1/executions/{first}")).await;
    let (_, b) = backend.get(&format!("/v1/executions/{second}")).await;
    assert_eq!(a["status"], "running");
    assert_eq!(b["status"], "pending", "queued, not refused");
    // Cancelling the first lets the second run.
    backend
        .post(&format!("/v1/executions/{first}/cancel"), json!({}))
        .await;
    let started = std::time::Instant::now();
    loop {
        let (_, b) = backend.get(&format!("/v1/executions/{second}")).await;
        if b["status"] == "running" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{b}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, pending) = backend.get("/v1/executions?status=running").await;
    assert_eq!(pending["executions"].as_array().unwrap().len(), 1);
    backend
        .post(&format!("/v1/executions/{second}/cancel"), json!({}))
        .await;
    backend.stop().await;
}

#[tokio::test]
async fn a_crashed_backend_leaves_no_execution_running() {
    let dir = tempfile::tempdir().unwrap();
    let services = start_services(dir.path()).await;
    let db = database_url(dir.path(), false).await;
    let hole = BlackHole::start().await;
    let extra = [
        ("FILTER_GRPC_ENDPOINT", hole.url()),
        ("HEARTBEAT_SECONDS", "1".to_string()),
        ("STALE_EXECUTION_SECONDS", "2".to_string()),
    ];
    let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let env = backend_env(dir.path(), &db, &services, &extra);
    let first = start_crashable_backend(env.clone()).await;
    let file = first.upload("chelsea.jpg").await;
    let (_, accepted) = first
        .post(
            "/v1/executions",
            json!({"pipeline": diamond_pipeline("x"), "inputs": [file["file_id"]],
                   "execution_id": "survives-crash"}),
        )
        .await;
    assert_eq!(accepted["execution_id"], "survives-crash");
    // A completed execution in the same database must be untouched.
    let (_, done) = first
        .post(
            "/v1/executions?wait=true",
            json!({"pipeline": {"pipelineName": "ok", "steps": [
                {"stepId": "r", "componentName": "resize"}]}, "inputs": [file["file_id"]]}),
        )
        .await;
    assert_eq!(done["status"], "completed");
    let hanging = json!({"pipeline": {"pipelineName": "hangs", "steps": [
        {"stepId": "stuck", "componentName": "filter", "timeoutSeconds": 300}]},
        "inputs": [file["file_id"]], "execution_id": "in-flight"});
    first.post("/v1/executions", hanging).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    first.crash();

    let second = start_backend(env).await;
    let record = second
        .wait_terminal("in-flight", Duration::from_secs(15))
        .await;
    assert_eq!(record["status"], "failed");
    assert!(
        record["error"].as_str().unwrap().contains("interrupted"),
        "{record}"
    );
    assert_eq!(record["steps"][0]["status"], "cancelled");
    let (_, done_again) = second
        .get(&format!(
            "/v1/executions/{}",
            done["execution_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(done_again["status"], "completed");
    assert_eq!(done_again["steps"], done["steps"]);
    // Idempotent create: the same execution_id returns the existing record.
    let (code, again) = second
        .post(
            "/v1/executions",
            json!({"pipeline": diamond_pipeline("x"), "inputs": [file["file_id"]],
                   "execution_id": "in-flight"}),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(again["status"], "failed");
    second.stop().await;
}

#[tokio::test]
async fn progress_streams_as_server_sent_events() {
    let dir = tempfile::tempdir().unwrap();
    let services = start_services(dir.path()).await;
    let db = database_url(dir.path(), false).await;
    let backend = start_backend(backend_env(dir.path(), &db, &services, &[])).await;
    let file = backend.upload("photo-1920x1080.jpg").await;
    backend.post("/v1/pipelines", diamond_pipeline("sse")).await;
    let (_, accepted) = backend
        .post(
            "/v1/executions",
            json!({"pipelineId": "sse", "inputs": [file["file_id"]]}),
        )
        .await;
    let id = accepted["execution_id"].as_str().unwrap();
    let response = backend
        .http
        .get(backend.at(&format!("/v1/executions/{id}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    // The stream ends by itself after the final event.
    let text = tokio::time::timeout(Duration::from_secs(30), response.text())
        .await
        .expect("stream ended")
        .unwrap();
    let events: Vec<(String, Value)> = text
        .split("\n\n")
        .filter_map(|block| {
            let mut name = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = Some(v.trim().to_string());
                }
                if let Some(v) = line.strip_prefix("data:") {
                    data = serde_json::from_str::<Value>(v.trim()).ok();
                }
            }
            Some((name?, data?))
        })
        .collect();
    assert_eq!(events[0].0, "snapshot", "{text}");
    let last = &events.last().unwrap().1;
    if events.len() > 1 {
        assert_eq!(last["status"], "completed", "{text}");
        assert!(last.get("step_id").is_none());
        for step in ["resize", "soften", "sharpen"] {
            assert!(
                events
                    .iter()
                    .any(|(_, e)| e["step_id"] == step && e["status"] == "completed"),
                "no completed event for {step}: {text}"
            );
        }
    } else {
        // Finished before the stream opened: the snapshot says so.
        assert_eq!(last["status"], "completed", "{text}");
    }
    backend.stop().await;
}

#[tokio::test]
async fn tokens_guard_the_api_but_not_the_probes() {
    let dir = tempfile::tempdir().unwrap();
    let services = start_services(dir.path()).await;
    let db = database_url(dir.path(), false).await;
    let backend = start_backend(backend_env(
        dir.path(),
        &db,
        &services,
        &[("IMAGEFLOW_API_TOKENS", "ci:test-token-loopback-only-123")],
    ))
    .await;
    let (code, body) = backend.get("/v1/components").await;
    assert_eq!(code, 401, "{body}");
    let response = backend
        .http
        .get(backend.at("/v1/components"))
        .bearer_auth("wrong-token-of-some-length")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = backend
        .http
        .get(backend.at("/v1/components"))
        .bearer_auth("test-token-loopback-only-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let components: Value = response.json().await.unwrap();
    let names: Vec<&str> = components["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["resize", "ai_detection", "filter"]);
    assert_eq!(backend.get("/healthz").await.0, 200);
    let (code, openapi) = backend.get("/openapi.json").await;
    assert_eq!(code, 200);
    assert!(openapi["paths"]["/v1/executions"]["post"].is_object());
    // Detection is not running in this test: readiness says so and names it.
    let (code, ready) = backend.get("/readyz").await;
    assert_eq!(code, 503);
    let failing: Vec<&str> = ready["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(failing, ["service:ai_detection"], "{ready}");
    backend.stop().await;
}

#[tokio::test]
async fn pipelines_are_versioned_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let services = start_services(dir.path()).await;
    let db = database_url(dir.path(), false).await;
    let backend = start_backend(backend_env(dir.path(), &db, &services, &[])).await;
    let (code, _) = backend.post("/v1/pipelines", diamond_pipeline("p1")).await;
    assert_eq!(code, 201);
    let (code, _) = backend.post("/v1/pipelines", diamond_pipeline("p1")).await;
    assert_eq!(code, 409);
    let mut changed = diamond_pipeline("p1");
    changed["steps"][0]["parameters"]["width"] = json!(320);
    let response = backend
        .http
        .put(backend.at("/v1/pipelines/p1"))
        .json(&changed)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (_, latest) = backend.get("/v1/pipelines/p1").await;
    assert_eq!(latest["revision"], 2);
    assert_eq!(latest["steps"][0]["parameters"]["width"], 320);
    let (_, first) = backend.get("/v1/pipelines/p1?revision=1").await;
    assert_eq!(first["steps"][0]["parameters"]["width"], 800);
    let response = backend
        .http
        .delete(backend.at("/v1/pipelines/p1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(backend.get("/v1/pipelines/p1").await.0, 404);
    backend.stop().await;
}

/// A filter service that answers UNAVAILABLE to its first `failures` calls and
/// then forwards to the real filter-svc: a service that recovers.
#[derive(Clone)]
struct Flaky {
    left: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    real:
        imageflow_proto::v1::filter_service_client::FilterServiceClient<tonic::transport::Channel>,
}

#[tonic::async_trait]
impl imageflow_proto::v1::filter_service_server::FilterService for Flaky {
    async fn apply_filter(
        &self,
        request: tonic::Request<imageflow_proto::v1::FilterRequest>,
    ) -> Result<tonic::Response<imageflow_proto::v1::FilterResponse>, tonic::Status> {
        use std::sync::atomic::Ordering;
        if self
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(tonic::Status::unavailable("warming up"));
        }
        self.real.clone().apply_filter(request.into_inner()).await
    }

    type ApplyFilterStreamStream = std::pin::Pin<
        Box<
            dyn futures::Stream<Item = Result<imageflow_proto::v1::FilterResponse, tonic::Status>>
                + Send,
        >,
    >;

    async fn apply_filter_stream(
        &self,
        _: tonic::Request<tonic::Streaming<imageflow_proto::v1::FilterRequest>>,
    ) -> Result<tonic::Response<Self::ApplyFilterStreamStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("not used by the backend"))
    }

    async fn health(
        &self,
        _: tonic::Request<imageflow_proto::v1::HealthCheckRequest>,
    ) -> Result<tonic::Response<imageflow_proto::v1::HealthCheckResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not used by the backend"))
    }
}

#[tokio::test]
async fn a_service_that_fails_twice_then_recovers_is_retried_to_success() {
    let dir = tempfile::tempdir().unwrap();
    let services = start_services(dir.path()).await;
    let left = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(2));
    let flaky = Flaky {
        left: left.clone(),
        real: imageflow_proto::v1::filter_service_client::FilterServiceClient::new(
            services.filter.channel().await,
        ),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let flaky_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                imageflow_proto::v1::filter_service_server::FilterServiceServer::new(flaky),
            )
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let db = database_url(dir.path(), false).await;
    let backend = start_backend(backend_env(
        dir.path(),
        &db,
        &services,
        &[("FILTER_GRPC_ENDPOINT", flaky_url.as_str())],
    ))
    .await;
    let file = backend.upload("chelsea.jpg").await;
    let (_, record) = backend
        .post(
            "/v1/executions?wait=true",
            json!({"pipeline": {"pipelineName": "flaky", "steps": [
                {"stepId": "blur", "componentName": "filter", "parameters": {"filter_type": "blur"},
                 "retryPolicy": {"maxRetries": 3, "backoffFactor": 1.0}}]},
                   "inputs": [file["file_id"]]}),
        )
        .await;
    assert_eq!(record["status"], "completed", "{record}");
    assert_eq!(record["steps"][0]["attempts"], 3, "{record}");
    assert_eq!(left.load(std::sync::atomic::Ordering::SeqCst), 0);
    backend.stop().await;
}

#[tokio::test]
async fn multipart_uploads_and_list_pagination() {
    let dir = tempfile::tempdir().unwrap();
    let services = start_services(dir.path()).await;
    let db = database_url(dir.path(), false).await;
    let backend = start_backend(backend_env(dir.path(), &db, &services, &[])).await;
    let form = reqwest::multipart::Form::new()
        .text("note", "ignored")
        .part(
            "file",
            reqwest::multipart::Part::bytes(fixture("horse.png")).file_name("../../horse.png"),
        );
    let (code, file) = backend.post_multipart("/v1/files", form).await;
    assert_eq!(code, 201);
    assert_eq!(file["content_type"], "image/png");
    assert_eq!(file["filename"], "horse.png", "path parts are dropped");
    let form = reqwest::multipart::Form::new().text("other", "x");
    let (code, _) = backend.post_multipart("/v1/files", form).await;
    assert_eq!(code, 400);

    // Five executions, read back three pages of two, newest first, no repeats.
    let mut started = Vec::new();
    for _ in 0..5 {
        let (_, record) = backend
            .post(
                "/v1/executions?wait=true",
                json!({"pipeline": {"pipelineName": "p", "steps": [
                    {"stepId": "r", "componentName": "resize", "parameters": {"width": 32, "height": 0}}]},
                       "inputs": [file["file_id"]]}),
            )
            .await;
        started.push(record["execution_id"].as_str().unwrap().to_string());
    }
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let (code, page) = backend
            .get(&format!(
                "/v1/executions?limit=2&status=completed&cursor={cursor}"
            ))
            .await;
        assert_eq!(code, 200, "{page}");
        for e in page["executions"].as_array().unwrap() {
            seen.push(e["execution_id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => break,
        }
    }
    started.reverse();
    assert_eq!(seen.len(), 5);
    let mut sorted_seen = seen.clone();
    sorted_seen.sort();
    let mut sorted_started = started.clone();
    sorted_started.sort();
    assert_eq!(sorted_seen, sorted_started, "every execution exactly once");
    backend.stop().await;
}

#[tokio::test]
async fn resize_detect_filter_finds_the_cat_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let services = start_services(dir.path()).await;
    let detection = start_detection(dir.path()).await;
    let db = database_url(dir.path(), false).await;
    let detect_url = detection.url();
    let backend = start_backend(backend_env(
        dir.path(),
        &db,
        &services,
        &[("AI_DETECTION_GRPC_ENDPOINT", detect_url.as_str())],
    ))
    .await;
    // Every dependency is up now: ready.
    let (code, ready) = backend.get("/readyz").await;
    assert_eq!(code, 200, "{ready}");

    let file = backend.upload("chelsea.jpg").await;
    let (code, record) = backend
        .post(
            "/v1/executions?wait=true",
            json!({"pipeline": {"pipelineName": "resize, detect, sharpen", "steps": [
                {"stepId": "resize", "componentName": "resize",
                 "parameters": {"width": 400, "height": 400}},
                {"stepId": "detect", "componentName": "ai_detection", "dependencies": ["resize"],
                 "parameters": {"draw_boxes": true}},
                {"stepId": "sharpen", "componentName": "filter", "dependencies": ["detect"],
                 "parameters": {"filter_type": "sharpen"}}]},
                   "inputs": [file["file_id"]]}),
        )
        .await;
    assert_eq!(code, 200, "{record}");
    assert_eq!(record["status"], "completed", "{record}");
    let steps = record["steps"].as_array().unwrap();
    // chelsea is 451x300: the resize output is 400x266, and the boxes are in its pixels.
    assert_eq!(steps[0]["output"]["width"], 400);
    let detections = steps[1]["detections"].as_array().unwrap();
    let cat = detections
        .iter()
        .find(|d| d["class_name"] == "cat")
        .unwrap_or_else(|| panic!("no cat in {detections:?}"));
    let b = &cat["bbox"];
    let (x1, y1, x2, y2) = (
        b["x1"].as_f64().unwrap(),
        b["y1"].as_f64().unwrap(),
        b["x2"].as_f64().unwrap(),
        b["y2"].as_f64().unwrap(),
    );
    assert!(
        0.0 <= x1 && x1 < x2 && x2 <= 400.0 && 0.0 <= y1 && y1 < y2 && y2 <= 267.0,
        "{b}"
    );
    assert!(
        (x2 - x1) * (y2 - y1) > 0.2 * 400.0 * 266.0,
        "the cat fills the photo: {b}"
    );
    // The annotated image went on to the filter, which wrote its own output.
    assert_ne!(steps[1]["output"], Value::Null);
    let last = &steps[2]["output"];
    assert!(
        last["object_key"].as_str().unwrap().contains("detect"),
        "{last}"
    );
    let bytes = backend.download(last["file_id"].as_str().unwrap()).await;
    let image = decode(&bytes, &Limits::default()).unwrap();
    assert_eq!((image.original_width, image.original_height), (400, 266));
    backend.stop().await;
}

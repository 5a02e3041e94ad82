//! One trace from HTTP to every service: the four binaries run as separate
//! processes exporting OTLP to a receiver in this test, and a pipeline
//! resize → ai_detection → filter must arrive as ONE connected trace with the
//! design's span names, attributes and resource; its logs (on stdout and as
//! OTLP log records) and execution record carry the same trace id, and no log
//! anywhere holds the API token; `/metrics` of each binary counts the run,
//! and a service's OpenMetrics exposition links its latency to the trace.

#![allow(clippy::unwrap_used)]

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    time::Duration,
};

use imageflow_testkit::{ChildProcess, OtlpReceiver, ReceivedSpan, fixture, free_addr};
use serde_json::{Value, json};

/// A bearer token that only opens this test's loopback backend; no log line
/// of any process may contain it.
const TEST_TOKEN: &str = "e2e-loopback-only-token-4f1c9a";

const SERVICES: [&str; 4] = [
    "imageflow-backend-api",
    "imageflow-resize",
    "imageflow-ai-detect",
    "imageflow-filter",
];

struct Stack {
    processes: Vec<ChildProcess>,
    api: String,
    metrics: HashMap<&'static str, String>,
}

fn telemetry_env(receiver: &OtlpReceiver, sampler_arg: &str) -> HashMap<String, String> {
    HashMap::from([
        ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), receiver.endpoint()),
        (
            "OTEL_TRACES_SAMPLER".into(),
            "parentbased_traceidratio".into(),
        ),
        ("OTEL_TRACES_SAMPLER_ARG".into(), sampler_arg.into()),
        (
            "OTEL_RESOURCE_ATTRIBUTES".into(),
            "deployment.environment=e2e,cloud.region=test-region-1".into(),
        ),
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()),
        ("OTEL_BLRP_SCHEDULE_DELAY".into(), "200".into()),
        ("OTEL_METRIC_EXPORT_INTERVAL".into(), "500".into()),
        ("RUST_LOG".into(), "info".into()),
    ])
}

async fn start_stack(receiver: &OtlpReceiver, dir: &Path) -> Stack {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
    let ort = models.join("lib/libonnxruntime.so");
    assert!(
        ort.exists() && models.join("yolo11n.onnx").exists(),
        "the model and ONNX Runtime are missing under {}: run scripts/setup.sh",
        models.display()
    );
    let storage = format!("file://{}", dir.join("data").display());
    let mut processes = Vec::new();
    let mut endpoints = HashMap::new();
    let mut metrics = HashMap::new();
    for (binary, endpoint_var) in [
        ("resize-svc", "RESIZE_GRPC_ENDPOINT"),
        ("filter-svc", "FILTER_GRPC_ENDPOINT"),
        ("ai-detect-svc", "AI_DETECTION_GRPC_ENDPOINT"),
    ] {
        let grpc = free_addr();
        let metrics_addr = free_addr();
        // Services sample nothing on their own: every span they export is
        // there because the backend's sampled decision travelled to them.
        let mut env = telemetry_env(receiver, "0");
        env.insert("GRPC_LISTEN_ADDR".into(), grpc.to_string());
        env.insert("METRICS_LISTEN_ADDR".into(), metrics_addr.to_string());
        env.insert("STORAGE_URL".into(), storage.clone());
        env.insert("MODEL_DIR".into(), models.display().to_string());
        env.insert("ORT_DYLIB_PATH".into(), ort.display().to_string());
        env.insert("CPU_WORKERS".into(), "2".into());
        processes.push(ChildProcess::spawn(binary, &env, dir));
        endpoints.insert(endpoint_var, format!("http://{grpc}"));
        metrics.insert(binary, format!("http://{metrics_addr}/metrics"));
    }
    let http = free_addr();
    let mut env = telemetry_env(receiver, "1.0");
    env.insert("HTTP_LISTEN_ADDR".into(), http.to_string());
    env.insert("IMAGEFLOW_API_TOKENS".into(), format!("e2e:{TEST_TOKEN}"));
    env.insert("STORAGE_URL".into(), storage);
    env.insert(
        "DATABASE_URL".into(),
        format!("sqlite://{}?mode=rwc", dir.join("imageflow.db").display()),
    );
    for (k, v) in endpoints {
        env.insert(k.into(), v);
    }
    processes.push(ChildProcess::spawn("backend-api", &env, dir));
    let api = format!("http://{http}");
    metrics.insert("backend-api", format!("{api}/metrics"));
    Stack {
        processes,
        api,
        metrics,
    }
}

async fn wait_ready(stack: &mut Stack, http: &reqwest::Client) {
    for _ in 0..600 {
        for p in &mut stack.processes {
            p.assert_running();
        }
        let ready = http
            .get(format!("{}/readyz", stack.api))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the backend did not become ready in 60 s");
}

fn by_id(spans: &[ReceivedSpan]) -> HashMap<&str, &ReceivedSpan> {
    spans.iter().map(|s| (s.span_id.as_str(), s)).collect()
}

/// The chain of span names from `span` up to the root.
fn ancestry<'a>(span: &'a ReceivedSpan, index: &HashMap<&str, &'a ReceivedSpan>) -> Vec<String> {
    let mut chain = vec![format!("{}:{}", span.service, span.name)];
    let mut current = span;
    while let Some(parent) = index.get(current.parent_span_id.as_str()) {
        chain.push(format!("{}:{}", parent.service, parent.name));
        current = parent;
    }
    chain
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_from_http_through_every_service() {
    let receiver = OtlpReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut stack = start_stack(&receiver, dir.path()).await;
    let http = reqwest::Client::new();
    wait_ready(&mut stack, &http).await;

    let upload: Value = http
        .post(format!("{}/v1/files", stack.api))
        .bearer_auth(TEST_TOKEN)
        .header("content-type", "image/jpeg")
        .body(fixture("astronaut.jpg"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let file_id = upload["file_id"].clone();
    let pipeline = |detect_model: &str| {
        json!({
            "pipeline": {"pipelineName": "trace-check", "steps": [
                {"stepId": "resize", "componentName": "resize", "parameters": {"width": 640, "height": 0}},
                {"stepId": "detect", "componentName": "ai_detection", "dependencies": ["resize"],
                 "parameters": {"model_name": detect_model, "draw_boxes": true}},
                {"stepId": "sharpen", "componentName": "filter", "dependencies": ["detect"],
                 "parameters": {"filter_type": "sharpen", "intensity": 1.0}},
            ]},
            "inputs": [file_id],
        })
    };
    let run = |body: Value| {
        let http = http.clone();
        let url = format!("{}/v1/executions?wait=true", stack.api);
        async move {
            let response = http
                .post(url)
                .bearer_auth(TEST_TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    let ok = run(pipeline("yolo11n")).await;
    assert_eq!(ok["status"], "completed", "{ok}");
    let failed = run(pipeline("no-such-model")).await;
    assert_eq!(failed["status"], "failed", "{failed}");

    let ok_trace = ok["trace_id"]
        .as_str()
        .expect("the record has a trace id")
        .to_string();
    let failed_trace = failed["trace_id"].as_str().unwrap().to_string();
    assert_eq!(ok_trace.len(), 32);
    assert_ne!(ok_trace, failed_trace, "each request starts its own trace");

    // Every service's spans, in the one trace of each run.
    // Exporters batch per process, so wait until both traces are whole: every
    // service present, one root, every other span's parent arrived.
    let complete = |spans: &[ReceivedSpan], trace_id: &str| {
        let trace: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
        let ids: HashSet<&str> = trace.iter().map(|s| s.span_id.as_str()).collect();
        let roots = trace
            .iter()
            .filter(|s| !ids.contains(s.parent_span_id.as_str()))
            .count();
        roots == 1
            && trace.iter().any(|s| s.name == "POST /v1/executions")
            && trace.iter().any(|s| s.name == "pipeline.execute")
    };
    let spans = receiver
        .wait_for_spans(Duration::from_secs(30), |spans| {
            let services: HashSet<&str> = spans
                .iter()
                .filter(|s| s.trace_id == ok_trace)
                .map(|s| s.service.as_str())
                .collect();
            SERVICES.iter().all(|s| services.contains(s))
                && complete(spans, &ok_trace)
                && complete(spans, &failed_trace)
                && spans.iter().any(|s| {
                    s.trace_id == failed_trace && s.name == "step.execute" && s.status_code == 2
                })
        })
        .await;
    let trace: Vec<ReceivedSpan> = spans
        .iter()
        .filter(|s| s.trace_id == ok_trace)
        .cloned()
        .collect();
    let index = by_id(&trace);

    // Exactly one root: the HTTP request.
    let roots: Vec<&ReceivedSpan> = trace
        .iter()
        .filter(|s| !index.contains_key(s.parent_span_id.as_str()))
        .collect();
    assert_eq!(roots.len(), 1, "one root, got {roots:#?}");
    assert_eq!(roots[0].name, "POST /v1/executions");
    assert_eq!(roots[0].service, "imageflow-backend-api");
    assert_eq!(roots[0].kind, 2, "server span");
    assert_eq!(roots[0].attr("http.response.status_code"), Some("200"));

    // HTTP → pipeline.execute → step.execute → gRPC client → gRPC server → storage.
    let resize_storage = trace
        .iter()
        .find(|s| s.service == "imageflow-resize" && s.name == "storage.get")
        .expect("resize reads its input from storage");
    assert_eq!(
        ancestry(resize_storage, &index),
        [
            "imageflow-resize:storage.get",
            "imageflow-resize:imageflow.v1.ResizeService/ResizeImage",
            "imageflow-backend-api:imageflow.v1.ResizeService/ResizeImage",
            "imageflow-backend-api:step.execute",
            "imageflow-backend-api:pipeline.execute",
            "imageflow-backend-api:POST /v1/executions",
        ]
    );
    // ... and → inference in the detection service.
    let inference = trace
        .iter()
        .find(|s| s.service == "imageflow-ai-detect" && s.name == "inference yolo11n")
        .expect("an inference span");
    assert_eq!(
        &ancestry(inference, &index)[..4],
        [
            "imageflow-ai-detect:inference yolo11n",
            "imageflow-ai-detect:imageflow.v1.AIDetectionService/DetectObjects",
            "imageflow-backend-api:imageflow.v1.AIDetectionService/DetectObjects",
            "imageflow-backend-api:step.execute",
        ]
    );
    assert_eq!(inference.attr("ai.inference.backend"), Some("onnxruntime"));

    // Semantic-convention attributes on both sides of each call.
    for s in trace
        .iter()
        .filter(|s| s.name == "imageflow.v1.FilterService/ApplyFilter")
    {
        assert_eq!(s.attr("rpc.system"), Some("grpc"));
        assert_eq!(s.attr("rpc.service"), Some("imageflow.v1.FilterService"));
        assert_eq!(s.attr("rpc.method"), Some("ApplyFilter"));
        assert_eq!(s.attr("rpc.grpc.status_code"), Some("0"));
    }
    let steps: Vec<&ReceivedSpan> = trace.iter().filter(|s| s.name == "step.execute").collect();
    let step_types: HashSet<&str> = steps.iter().filter_map(|s| s.attr("step.type")).collect();
    assert_eq!(
        step_types,
        HashSet::from(["resize", "ai_detection", "filter"])
    );
    let pipeline_span = trace.iter().find(|s| s.name == "pipeline.execute").unwrap();
    assert_eq!(
        pipeline_span.attr("execution.id"),
        ok["execution_id"].as_str()
    );
    assert_eq!(pipeline_span.attr("pipeline.id"), Some("inline"));

    // Required resource attributes, on every service's spans.
    for service in SERVICES {
        let span = trace.iter().find(|s| s.service == service).unwrap();
        for (k, v) in [
            ("service.namespace", "imageflow"),
            ("deployment.environment", "e2e"),
            ("cloud.region", "test-region-1"),
        ] {
            assert_eq!(
                span.resource.get(k).map(String::as_str),
                Some(v),
                "{service} {k}"
            );
        }
        assert!(span.resource.contains_key("service.version"), "{service}");
    }

    // The failing run: the step, its client call and the pipeline are errors,
    // and the service's refusal is recorded with its code.
    let failed_spans: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.trace_id == failed_trace)
        .collect();
    let failed_step = failed_spans
        .iter()
        .find(|s| s.name == "step.execute" && s.attr("step.type") == Some("ai_detection"))
        .unwrap();
    assert_eq!(failed_step.status_code, 2, "{failed_step:?}");
    assert!(
        failed_step.status_message.contains("no-such-model"),
        "{failed_step:?}"
    );
    let failed_client = failed_spans
        .iter()
        .find(|s| {
            s.service == "imageflow-backend-api"
                && s.name == "imageflow.v1.AIDetectionService/DetectObjects"
        })
        .unwrap();
    assert_eq!(failed_client.status_code, 2);
    assert_ne!(failed_client.attr("rpc.grpc.status_code"), Some("0"));
    let failed_pipeline = failed_spans
        .iter()
        .find(|s| s.name == "pipeline.execute")
        .unwrap();
    assert_eq!(failed_pipeline.status_code, 2);

    // No process logged the API token, whatever it did with the requests.
    for p in &stack.processes {
        assert!(
            !p.output().contains(TEST_TOKEN),
            "{} logged the API token",
            p.name
        );
    }

    // Logs of the run carry the same trace id, in every process that served it.
    for p in &stack.processes {
        let lines: Vec<Value> = p
            .output()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        assert!(
            lines
                .iter()
                .any(|l| l["trace_id"] == ok_trace.as_str() && l["span_id"].is_string()),
            "{} logged nothing with trace_id {ok_trace}:\n{}",
            p.name,
            p.output()
        );
        let service_line = lines
            .iter()
            .find(|l| l["trace_id"] == ok_trace.as_str())
            .unwrap();
        assert!(SERVICES.contains(&service_line["service"].as_str().unwrap()));
    }

    // The same logs over OTLP: every process sent records of the run with its
    // trace id, ids of a span, the span's execution id and the resource.
    let execution_id = ok["execution_id"].as_str().unwrap();
    let logs = receiver
        .wait_for_logs(Duration::from_secs(30), |logs| {
            SERVICES.iter().all(|service| {
                logs.iter()
                    .any(|l| l.service == *service && l.trace_id == ok_trace)
            })
        })
        .await;
    for service in SERVICES {
        let records: Vec<_> = logs
            .iter()
            .filter(|l| l.service == service && l.trace_id == ok_trace)
            .collect();
        assert!(
            records.iter().all(|l| l.span_id.len() == 16),
            "{service}: {records:#?}"
        );
        assert!(
            records
                .iter()
                .any(|l| l.attr("execution_id") == Some(execution_id)),
            "{service}: no record of the run names execution {execution_id}: {records:#?}"
        );
        let resource = &records[0].resource;
        assert_eq!(
            resource.get("deployment.environment").map(String::as_str),
            Some("e2e"),
            "{service}"
        );
        assert!(resource.contains_key("service.version"), "{service}");
        assert!(resource.contains_key("imageflow.version"), "{service}");
    }
    assert!(
        logs.iter().all(|l| !l.severity_text.is_empty()),
        "every record has a level"
    );
    // The span ids of the records are spans of the trace.
    let span_ids: HashSet<&str> = trace.iter().map(|s| s.span_id.as_str()).collect();
    assert!(
        logs.iter()
            .filter(|l| l.trace_id == ok_trace)
            .any(|l| span_ids.contains(l.span_id.as_str())),
        "no record of trace {ok_trace} names one of its spans"
    );
    let leaked: Vec<_> = logs.iter().filter(|l| l.contains(TEST_TOKEN)).collect();
    assert!(
        leaked.is_empty(),
        "the API token went out over OTLP: {leaked:#?}"
    );

    // Prometheus text of each binary counts the two runs under the names the
    // design's queries use.
    let scrape = |name: &'static str| {
        let http = http.clone();
        let url = stack.metrics[name].clone();
        async move { http.get(url).send().await.unwrap().text().await.unwrap() }
    };
    let backend = scrape("backend-api").await;
    for expected in [
        "pipeline_executions_total{status=\"completed\"} 1",
        "pipeline_executions_total{status=\"failed\"} 1",
        "imageflow_pipeline_execution_duration_seconds_count{status=\"completed\"} 1",
        "imageflow_step_executions_total{step_type=\"ai_detection\",status=\"failed\"} 1",
        "imageflow_step_executions_total{step_type=\"filter\",status=\"completed\"} 1",
        "http_requests_total{code=\"200\",method=\"POST\",route=\"/v1/executions\"} 2",
        "http_request_duration_seconds_bucket{method=\"POST\",route=\"/v1/executions\",le=\"+Inf\"} 2",
        "imageflow_storage_operations_total{operation=\"put\",backend=\"fs\",status=\"ok\"} 1",
        "process_resident_memory_bytes ",
    ] {
        assert!(
            backend.contains(expected),
            "backend /metrics lacks {expected:?}:\n{backend}"
        );
    }
    let resize = scrape("resize-svc").await;
    for expected in [
        "grpc_server_handled_total{grpc_service=\"imageflow.v1.ResizeService\",grpc_method=\"ResizeImage\",grpc_code=\"OK\"} 2",
        "grpc_server_handling_seconds_count{grpc_service=\"imageflow.v1.ResizeService\",grpc_method=\"ResizeImage\"} 2",
        "imageflow_processing_duration_seconds_count{operation=\"ResizeImage\",status=\"OK\"} 2",
        "imageflow_storage_operations_total{operation=\"get\",backend=\"fs\",status=\"ok\"} 2",
        "process_cpu_seconds_total ",
    ] {
        assert!(
            resize.contains(expected),
            "resize /metrics lacks {expected:?}:\n{resize}"
        );
    }
    let detect = scrape("ai-detect-svc").await;
    for expected in [
        "ai_model_inference_duration_seconds_count{model=\"yolo11n\",backend=\"onnxruntime\"} 1",
        "grpc_server_handled_total{grpc_service=\"imageflow.v1.AIDetectionService\",grpc_method=\"DetectObjects\",grpc_code=\"OK\"} 1",
    ] {
        assert!(
            detect.contains(expected),
            "ai-detect /metrics lacks {expected:?}:\n{detect}"
        );
    }
    assert!(
        detect.contains("grpc_method=\"DetectObjects\",grpc_code=\""),
        "{detect}"
    );
    // What Prometheus asks for: OpenMetrics, whose latency buckets name a
    // trace of the runs as their exemplar.
    let response = http
        .get(stack.metrics["resize-svc"].clone())
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let openmetrics = response.text().await.unwrap();
    assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
    let exemplars: Vec<&str> = openmetrics
        .lines()
        .filter(|l| l.starts_with("imageflow_processing_duration_seconds_bucket{"))
        .filter_map(|l| l.split_once(" # {trace_id=\"").map(|(_, rest)| &rest[..32]))
        .collect();
    assert!(
        !exemplars.is_empty()
            && exemplars
                .iter()
                .all(|t| *t == ok_trace || *t == failed_trace),
        "resize's exemplars {exemplars:?} are not the runs' traces:\n{openmetrics}"
    );

    let filter = scrape("filter-svc").await;
    assert!(
        filter.contains("grpc_server_handled_total{grpc_service=\"imageflow.v1.FilterService\",grpc_method=\"ApplyFilter\",grpc_code=\"OK\"} 1"),
        "{filter}"
    );

    // The same metrics reach the collector over OTLP, from every service.
    let metrics = receiver
        .wait_for_metrics(Duration::from_secs(20), |m| {
            m.iter()
                .any(|m| m.service == "imageflow-backend-api" && m.name == "pipeline_executions")
                && m.iter()
                    .any(|m| m.service == "imageflow-resize" && m.name == "grpc_server_handled")
                && m.iter().any(|m| {
                    m.service == "imageflow-ai-detect"
                        && m.name == "ai_model_inference_duration_seconds"
                })
                && m.iter().any(|m| {
                    m.service == "imageflow-filter" && m.name == "process_resident_memory_bytes"
                })
        })
        .await;
    assert!(metrics.iter().any(|m| {
        m.name == "pipeline_executions"
            && m.points
                .iter()
                .any(|p| p.get("status").map(String::as_str) == Some("failed"))
    }));

    // A clean stop flushes and exits 0: the last log line of each process
    // still reaches the collector.
    for p in &mut stack.processes {
        assert!(
            p.terminate(Duration::from_secs(20)),
            "{} did not stop on SIGTERM",
            p.name
        );
    }
    let all_logs = receiver
        .wait_for_logs(Duration::from_secs(10), |logs| {
            SERVICES.iter().all(|service| {
                logs.iter()
                    .any(|l| l.service == *service && l.body == "stopped")
            })
        })
        .await;
    assert!(
        !all_logs.iter().any(|l| l.contains(TEST_TOKEN)),
        "the API token went out over OTLP"
    );
}

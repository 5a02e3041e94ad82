//! Kafka with the real binaries and a real broker (`tansu` on loopback):
//! progress and completion events of a run, read back by our consumer and by
//! PyPI `confluent-kafka`; two backend replicas sharing one queue, one of
//! them killed mid-run; a broker that stops while a direct-mode run goes on.

#![allow(clippy::unwrap_used)]

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use imageflow_events::{CompletionMessage, Consumer, KafkaSettings, ProgressMessage, topics};
use imageflow_testkit::{ChildProcess, KafkaBroker, fixture, free_addr};
use serde_json::{Value, json};

struct Api {
    url: String,
    http: reqwest::Client,
}

impl Api {
    async fn wait_ready(&self, process: &mut ChildProcess) {
        for _ in 0..600 {
            process.assert_running();
            if self
                .http
                // /readyz also wants ai-detect, which these tests do not run.
                .get(format!("{}/healthz", self.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "{} did not become ready:\n{}",
            process.name,
            process.output()
        );
    }

    async fn upload(&self, name: &str) -> Value {
        let response = self
            .http
            .post(format!("{}/v1/files", self.url))
            .header("content-type", "image/jpeg")
            .body(fixture(name))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        response.json().await.unwrap()
    }

    async fn execute(&self, body: &Value, wait: bool) -> (u16, Value) {
        let response = self
            .http
            .post(format!(
                "{}/v1/executions{}",
                self.url,
                if wait { "?wait=true" } else { "" }
            ))
            .json(body)
            .send()
            .await
            .unwrap();
        let code = response.status().as_u16();
        (code, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

fn pipeline(file_id: &Value) -> Value {
    json!({
        "pipeline": {"pipelineName": "kafka", "steps": [
            {"stepId": "resize", "componentName": "resize", "parameters": {"width": 320, "height": 0, "maintain_aspect_ratio": true}},
            {"stepId": "sharpen", "componentName": "filter", "dependencies": ["resize"],
             "parameters": {"filter_type": "sharpen", "intensity": 1.0}},
        ]},
        "inputs": [file_id],
    })
}

/// Long enough (a few filters on a full HD photo) that a replica killed
/// after the first completions is in the middle of its own executions.
fn heavy_pipeline(file_id: &Value) -> Value {
    json!({
        "pipeline": {"pipelineName": "kafka-heavy", "steps": [
            {"stepId": "blur", "componentName": "filter", "parameters": {"filter_type": "gaussian", "intensity": 4.0}},
            {"stepId": "sharpen", "componentName": "filter", "dependencies": ["blur"], "parameters": {"filter_type": "sharpen", "intensity": 1.0}},
            {"stepId": "again", "componentName": "filter", "dependencies": ["sharpen"], "parameters": {"filter_type": "gaussian", "intensity": 2.0}},
            {"stepId": "small", "componentName": "resize", "dependencies": ["again"], "parameters": {"width": 640, "height": 0, "maintain_aspect_ratio": true}},
        ]},
        "inputs": [file_id],
    })
}

fn services(dir: &Path, kafka: Option<&str>) -> (Vec<ChildProcess>, HashMap<String, String>) {
    let storage = format!("file://{}", dir.join("data").display());
    let mut processes = Vec::new();
    let mut endpoints = HashMap::from([("STORAGE_URL".to_string(), storage.clone())]);
    for (binary, var) in [
        ("resize-svc", "RESIZE_GRPC_ENDPOINT"),
        ("filter-svc", "FILTER_GRPC_ENDPOINT"),
    ] {
        let addr = free_addr();
        let mut env = HashMap::from([
            ("GRPC_LISTEN_ADDR".to_string(), addr.to_string()),
            ("STORAGE_URL".to_string(), storage.clone()),
        ]);
        if let Some(brokers) = kafka {
            env.insert("KAFKA_BROKERS".into(), brokers.into());
        }
        processes.push(ChildProcess::spawn(binary, &env, dir));
        endpoints.insert(var.into(), format!("http://{addr}"));
    }
    (processes, endpoints)
}

fn backend(
    dir: &Path,
    name: &str,
    base: &HashMap<String, String>,
    extra: &[(&str, &str)],
) -> (ChildProcess, Api) {
    let addr = free_addr();
    let mut env = base.clone();
    env.insert("HTTP_LISTEN_ADDR".into(), addr.to_string());
    for (k, v) in extra {
        env.insert((*k).into(), (*v).into());
    }
    let log_dir = dir.join(name);
    std::fs::create_dir_all(&log_dir).unwrap();
    (
        ChildProcess::spawn("backend-api", &env, &log_dir),
        Api {
            url: format!("http://{addr}"),
            http: reqwest::Client::new(),
        },
    )
}

/// Everything on `topic` until `done` holds, read by a fresh consumer group.
async fn drain(
    settings: &KafkaSettings,
    topic: &str,
    within: Duration,
    done: impl Fn(&[imageflow_events::Received]) -> bool,
) -> Vec<imageflow_events::Received> {
    let consumer = Consumer::new(
        settings,
        &format!("test-{}", uuid::Uuid::new_v4()),
        &[topic],
    )
    .unwrap();
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while !done(&got) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{topic}: only {} messages within {within:?}",
            got.len()
        );
        if let Ok(Ok(m)) =
            tokio::time::timeout(left.min(Duration::from_secs(1)), consumer.recv()).await
        {
            got.push(m);
        }
    }
    got
}

async fn postgres_url() -> String {
    let admin = std::env::var("IMAGEFLOW_TEST_POSTGRES_URL").expect(
        "IMAGEFLOW_TEST_POSTGRES_URL is unset: run the suite through scripts/test.sh, which starts PostgreSQL",
    );
    sqlx::any::install_default_drivers();
    let name = format!("imageflow_e2e_{}", uuid::Uuid::new_v4().simple());
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

const READER: &str = r#"
import json, sys, time
from confluent_kafka import Consumer
brokers, topic, key = sys.argv[1], sys.argv[2], sys.argv[3]
c = Consumer({"bootstrap.servers": brokers, "group.id": "python-e2e", "auto.offset.reset": "earliest", "enable.auto.commit": False})
c.subscribe([topic])
deadline = time.time() + 30
try:
    while time.time() < deadline:
        m = c.poll(0.5)
        if m is None or m.error() or m.key().decode() != key:
            continue
        print(json.dumps({"value": json.loads(m.value()), "headers": {k: v.decode() for k, v in (m.headers() or [])}}))
        sys.exit(0)
    sys.exit("no message for the key within 30 s")
finally:
    c.close()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_and_completion_of_a_real_run_reach_kafka() {
    let broker = KafkaBroker::start().unwrap();
    let settings = KafkaSettings::plaintext(broker.brokers());
    topics::ensure_topics(&settings, topics::ALL).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_services, mut env) = services(dir.path(), Some(&broker.brokers()));
    env.insert(
        "DATABASE_URL".into(),
        format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("db.sqlite").display()
        ),
    );
    env.insert("KAFKA_BROKERS".into(), broker.brokers());
    let (mut process, api) = backend(dir.path(), "backend", &env, &[]);
    api.wait_ready(&mut process).await;

    let file = api.upload("chelsea.jpg").await;
    let (code, record) = api.execute(&pipeline(&file["file_id"]), true).await;
    assert_eq!(code, 200, "{record}");
    assert_eq!(record["status"], "completed", "{record}");
    let id = record["execution_id"].as_str().unwrap().to_string();

    // The backend's progress for this execution, in order, ending with its
    // completion; the services' own reports arrive on the same topic.
    let progress = drain(
        &settings,
        topics::PROGRESS,
        Duration::from_secs(30),
        |got| {
            let ours: Vec<ProgressMessage> = got
                .iter()
                .filter_map(|m| m.json().ok())
                .filter(|p: &ProgressMessage| p.execution_id == id)
                .collect();
            ours.iter()
                .any(|p| p.step_id.is_none() && p.status == "completed")
                && ours
                    .iter()
                    .filter(|p| p.source != "imageflow-backend-api")
                    .count()
                    >= 2
        },
    )
    .await;
    let ours: Vec<(ProgressMessage, &imageflow_events::Received)> = progress
        .iter()
        .filter_map(|m| m.json::<ProgressMessage>().ok().map(|p| (p, m)))
        .filter(|(p, _)| p.execution_id == id)
        .collect();
    for (_, m) in &ours {
        assert_eq!(m.key.as_deref(), Some(id.as_str()), "keyed by execution id");
    }
    let backend_events: Vec<String> = ours
        .iter()
        .filter(|(p, _)| p.source == "imageflow-backend-api")
        .map(|(p, _)| format!("{}:{}", p.step_id.as_deref().unwrap_or("-"), p.status))
        .collect();
    let position = |needle: &str| {
        backend_events
            .iter()
            .position(|e| e == needle)
            .unwrap_or_else(|| panic!("{needle} in {backend_events:?}"))
    };
    assert!(
        position("-:running") < position("resize:completed"),
        "{backend_events:?}"
    );
    assert!(
        position("resize:completed") < position("sharpen:running"),
        "{backend_events:?}"
    );
    assert!(
        position("sharpen:completed") < position("-:completed"),
        "{backend_events:?}"
    );
    assert_eq!(
        backend_events.last().map(String::as_str),
        Some("-:completed")
    );
    let service_events: HashSet<String> = ours
        .iter()
        .filter(|(p, _)| p.source != "imageflow-backend-api")
        .map(|(p, _)| format!("{} {}", p.source, p.step_id.clone().unwrap_or_default()))
        .collect();
    assert!(
        service_events.contains("imageflow-resize imageflow-resize:ResizeImage"),
        "{service_events:?}"
    );
    assert!(
        service_events.contains("imageflow-filter imageflow-filter:ApplyFilter"),
        "{service_events:?}"
    );

    // The completion event, read by a second, independent client.
    let home = std::env::var_os("HOME").unwrap();
    let python = Path::new(&home).join(".cache/imageflow/venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/setup.sh",
        python.display()
    );
    let out = Command::new(python)
        .args(["-c", READER, &broker.brokers(), topics::COMPLETED, &id])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["value"]["version"], 1);
    assert_eq!(got["value"]["status"], "completed");
    assert_eq!(got["value"]["execution_id"], id.as_str());
    let output_path = got["value"]["output_path"].as_str().unwrap();
    assert!(
        output_path.ends_with(".jpg") && output_path.contains(&id),
        "{got}"
    );
    assert!(
        got["value"]["execution_time_ms"].as_f64().unwrap() > 0.0,
        "{got}"
    );
    let traceparent = got["headers"]["traceparent"].as_str().unwrap();
    assert!(
        traceparent.contains(record["trace_id"].as_str().unwrap()),
        "the completion event carries the execution's trace: {traceparent} vs {record}"
    );
    let metrics = api.metrics().await;
    assert!(
        metrics.contains("imageflow_events_published_total{topic=\"pipeline-completed\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_executions_spread_over_replicas_and_survive_one_dying() {
    let broker = KafkaBroker::start().unwrap();
    let settings = KafkaSettings::plaintext(broker.brokers());
    topics::ensure_topics(&settings, topics::ALL).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_services, mut env) = services(dir.path(), None);
    env.insert("DATABASE_URL".into(), postgres_url().await);
    env.insert("KAFKA_BROKERS".into(), broker.brokers());
    let queue = [
        ("EXECUTION_MODE", "queue"),
        ("MAX_PARALLEL_EXECUTIONS", "2"),
        ("HEARTBEAT_SECONDS", "1"),
        ("STALE_EXECUTION_SECONDS", "3"),
        ("QUEUE_ADOPT_SECONDS", "5"),
    ];
    let (mut a, api_a) = backend(dir.path(), "a", &env, &queue);
    api_a.wait_ready(&mut a).await;
    let (mut b, api_b) = backend(dir.path(), "b", &env, &queue);
    api_b.wait_ready(&mut b).await;

    // The group shares the partitions between both replicas before work comes
    // (a rebalance takes a few heartbeats).
    let assigned = |p: &ChildProcess| {
        p.output()
            .lines()
            .rfind(|l| l.contains("Kafka partitions assigned") && l.contains("pipeline-executions"))
            .map(|l| l.matches("pipeline-executions[").count())
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let (Some(x), Some(y)) = (assigned(&a), assigned(&b))
            && x + y == 6
            && x > 0
            && y > 0
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the two replicas did not share pipeline-executions within 60 s: A {:?}, B {:?}",
            assigned(&a),
            assigned(&b)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let file = api_a.upload("photo-1920x1080.jpg").await;

    // A's synchronous path waits on its live stream: executions B runs reach
    // it through pipeline-progress.
    let light = api_a.upload("chelsea.jpg").await;
    let light_pipeline = pipeline(&light["file_id"]);
    let waits = (0..12).map(|_| api_a.execute(&light_pipeline, true));
    let mut waited = Vec::new();
    for (code, record) in futures::future::join_all(waits).await {
        assert_eq!(code, 200, "{record}");
        assert_eq!(record["status"], "completed", "{record}");
        waited.push(record["execution_id"].as_str().unwrap().to_string());
    }
    let seen = drain(
        &settings,
        topics::COMPLETED,
        Duration::from_secs(30),
        |got| {
            got.iter()
                .filter_map(|m| m.json::<CompletionMessage>().ok())
                .filter(|c| waited.contains(&c.execution_id))
                .count()
                == 12
        },
    )
    .await;
    let b_ran = seen
        .iter()
        .filter(|m| {
            m.json::<CompletionMessage>()
                .is_ok_and(|c| waited.contains(&c.execution_id))
        })
        .filter(|m| {
            m.header("imageflow-origin").is_some_and(|o| {
                b.output()
                    .contains(&format!("\"replica\":\"{}\"", String::from_utf8_lossy(o)))
            })
        })
        .count();
    let origins: Vec<String> = seen
        .iter()
        .filter_map(|m| m.header("imageflow-origin"))
        .map(|o| String::from_utf8_lossy(o).into_owned())
        .collect();
    assert!(
        b_ran >= 1,
        "of 12 executions waited on at A, B ran some (their end reached A over Kafka); origins {origins:?}\nB: {}",
        b.output()
            .lines()
            .find(|l| l.contains("HTTP server listening"))
            .unwrap_or_default()
    );

    let mut ids = Vec::new();
    for _ in 0..20 {
        let (code, record) = api_a
            .execute(&heavy_pipeline(&file["file_id"]), false)
            .await;
        assert_eq!(code, 202, "{record}");
        ids.push(record["execution_id"].as_str().unwrap().to_string());
    }

    // Both replicas take work; then one dies in the middle of the run.
    let completions = drain(
        &settings,
        topics::COMPLETED,
        Duration::from_secs(90),
        |got| {
            let origins: HashSet<&[u8]> = got
                .iter()
                .filter_map(|m| m.header("imageflow-origin"))
                .collect();
            if got.len() == 20 && origins.len() < 2 {
                panic!(
                    "all 20 ran on one replica\nA:\n{}\nB:\n{}",
                    a.output()
                        .lines()
                        .filter(|l| l.contains("assigned")
                            || l.contains("revoked")
                            || l.contains("group"))
                        .collect::<Vec<_>>()
                        .join("\n"),
                    b.output()
                        .lines()
                        .filter(|l| l.contains("assigned")
                            || l.contains("revoked")
                            || l.contains("group")
                            || l.contains("Kafka"))
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
            origins.len() == 2 && got.len() >= 4
        },
    )
    .await;
    assert!(completions.len() < 20, "the kill must land mid-run");
    a.kill();

    // Every execution ends completed, each once.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut terminal = 0;
        for id in &ids {
            let record = api_b.get(&format!("/v1/executions/{id}")).await;
            if matches!(
                record["status"].as_str(),
                Some("completed" | "failed" | "cancelled")
            ) {
                assert_eq!(record["status"], "completed", "{record}");
                terminal += 1;
            }
        }
        if terminal == ids.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{terminal} of 20 ended within 120 s\nB:\n{}",
            b.output()
                .lines()
                .filter(|l| l.contains("assigned")
                    || l.contains("revoked")
                    || l.contains("requeued")
                    || l.contains("rror")
                    || l.contains("skipped"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let all = drain(
        &settings,
        topics::COMPLETED,
        Duration::from_secs(30),
        |got| {
            let ids: HashSet<String> = got
                .iter()
                .filter_map(|m| m.json::<CompletionMessage>().ok())
                .map(|c| c.execution_id)
                .collect();
            ids.len() == 20
        },
    )
    .await;
    let mut per_id: HashMap<String, usize> = HashMap::new();
    let mut origins = HashSet::new();
    for m in &all {
        let c: CompletionMessage = m.json().unwrap();
        assert_eq!(c.status, "completed");
        *per_id.entry(c.execution_id).or_default() += 1;
        origins.insert(String::from_utf8_lossy(m.header("imageflow-origin").unwrap()).into_owned());
    }
    assert_eq!(per_id.len(), 20);
    assert!(
        per_id.values().all(|&n| n == 1),
        "each execution completes exactly once: {per_id:?}"
    );
    assert_eq!(origins.len(), 2, "spread over both replicas: {origins:?}");
    // What A was running when it died went back to the queue and B ran it.
    let requeued = b
        .output()
        .matches("requeued: the replica running it stopped")
        .count();
    assert!(
        requeued >= 1,
        "A died mid-run, so some of its executions were requeued:\n{}",
        b.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_broker_never_stops_a_direct_run_and_the_loss_is_counted() {
    let mut broker = KafkaBroker::start().unwrap();
    let settings = KafkaSettings::plaintext(broker.brokers());
    topics::ensure_topics(&settings, topics::ALL).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_services, mut env) = services(dir.path(), None);
    env.insert(
        "DATABASE_URL".into(),
        format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("db.sqlite").display()
        ),
    );
    env.insert("KAFKA_BROKERS".into(), broker.brokers());
    env.insert("KAFKA_DELIVERY_TIMEOUT_MS".into(), "1500".into());
    let (mut process, api) = backend(dir.path(), "backend", &env, &[]);
    api.wait_ready(&mut process).await;
    let file = api.upload("chelsea.jpg").await;

    broker.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    process.assert_running();
    let started = Instant::now();
    let (code, record) = api.execute(&pipeline(&file["file_id"]), true).await;
    assert_eq!(code, 200);
    assert_eq!(record["status"], "completed", "{record}");
    eprintln!("run with the broker down took {:?}", started.elapsed());

    let dropped = |text: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("imageflow_events_dropped_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut lost = 0.0;
    while Instant::now() < deadline {
        lost = dropped(&api.metrics().await);
        if lost >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        lost >= 1.0,
        "the undelivered events are counted:\n{}",
        api.metrics().await
    );
    assert!(
        process.output().contains("Kafka events dropped"),
        "the loss is logged:\n{}",
        process.output()
    );

    // Back: publishing resumes on its own. Events handed over while the
    // producer notices the restarted broker (it forgot our producer id) may
    // still be dropped and counted; later executions' events arrive.
    broker.restart().unwrap();
    topics::ensure_topics(&settings, topics::ALL).await.unwrap();
    let consumer = Consumer::new(&settings, "test-resume", &[topics::COMPLETED]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut ours = HashSet::new();
    'resumed: loop {
        assert!(
            Instant::now() < deadline,
            "no completion event reached the restarted broker within 60 s"
        );
        process.assert_running();
        let (_, record) = api.execute(&pipeline(&file["file_id"]), true).await;
        ours.insert(record["execution_id"].as_str().unwrap().to_string());
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            if let Ok(Ok(m)) =
                tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await
                && m.json::<CompletionMessage>()
                    .is_ok_and(|c| ours.contains(&c.execution_id))
            {
                break 'resumed;
            }
        }
    }
    eprintln!("publishing resumed after {} executions", ours.len());
}

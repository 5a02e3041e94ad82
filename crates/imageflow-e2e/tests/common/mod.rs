//! Helpers of the Kafka end-to-end tests (each test binary uses a part).

#![allow(dead_code, clippy::unwrap_used)]

use std::{
    collections::HashMap,
    path::Path,
    time::{Duration, Instant},
};

use imageflow_events::{Consumer, KafkaSettings};
use imageflow_testkit::{ChildProcess, fixture, free_addr};
use serde_json::{Value, json};

/// One test at a time: each starts a broker, services and backends, which is
/// as much as two cores carry without starving heartbeats.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub struct Api {
    pub url: String,
    pub http: reqwest::Client,
}

impl Api {
    pub async fn wait_ready(&self, process: &mut ChildProcess) {
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

    pub async fn upload(&self, name: &str) -> Value {
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

    pub async fn execute(&self, body: &Value, wait: bool) -> (u16, Value) {
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

    pub async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn metrics(&self) -> String {
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

pub fn pipeline(file_id: &Value) -> Value {
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
pub fn heavy_pipeline(file_id: &Value) -> Value {
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

pub fn services(dir: &Path, kafka: Option<&str>) -> (Vec<ChildProcess>, HashMap<String, String>) {
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

pub fn backend(
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
pub async fn drain(
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

/// Everything on `topic`, read by a fresh group until nothing more comes for `idle`.
pub async fn read_all(
    settings: &KafkaSettings,
    topic: &str,
    idle: Duration,
) -> Vec<imageflow_events::Received> {
    let consumer = Consumer::new(
        settings,
        &format!("test-{}", uuid::Uuid::new_v4()),
        &[topic],
    )
    .unwrap();
    let mut got = Vec::new();
    // The first message may take a rebalance to come.
    let mut wait = Duration::from_secs(15);
    while let Ok(Ok(m)) = tokio::time::timeout(wait, consumer.recv()).await {
        got.push(m);
        wait = idle;
    }
    got
}

pub async fn postgres_url() -> String {
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

pub const READER: &str = r#"
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

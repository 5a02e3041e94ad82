//! A second, independent client reads what the publisher wrote: PyPI
//! `confluent-kafka` (from the project's venv) sees the completion event with
//! its version, key and trace headers. Catches anything only our own consumer
//! would forgive.

#![allow(clippy::unwrap_used)]

mod common;

use std::{path::PathBuf, process::Command};

use common::otel;
use imageflow_events::{CompletionMessage, KafkaSettings, Publisher, topics};
use imageflow_telemetry::propagation;
use imageflow_testkit::KafkaBroker;
use serde_json::{Value, json};
use tracing::Instrument as _;

/// Reads one message of a topic as a fresh consumer group and prints it as
/// one JSON line; exits non-zero when nothing comes within 30 s.
const READER: &str = r#"
import json, sys, time
from confluent_kafka import Consumer
brokers, topic = sys.argv[1], sys.argv[2]
c = Consumer({"bootstrap.servers": brokers, "group.id": "python-reader",
              "auto.offset.reset": "earliest", "enable.auto.commit": False})
c.subscribe([topic])
deadline = time.time() + 30
try:
    while time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            print("poll error:", m.error(), file=sys.stderr)
            continue
        print(json.dumps({
            "topic": m.topic(),
            "key": m.key().decode(),
            "value": json.loads(m.value()),
            "headers": {k: v.decode() for k, v in (m.headers() or [])},
        }))
        sys.exit(0)
    sys.exit("no message within 30 s")
finally:
    c.close()
"#;

fn venv_python() -> PathBuf {
    let home = std::env::var_os("HOME").expect("HOME");
    let python = PathBuf::from(home).join(".cache/imageflow/venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/setup.sh (it installs confluent-kafka)",
        python.display()
    );
    python
}

#[tokio::test]
async fn confluent_kafka_reads_the_completion_event_with_its_headers() {
    let python = venv_python();
    otel();
    let broker = KafkaBroker::start().expect("tansu broker (run scripts/setup.sh)");
    let settings = KafkaSettings::plaintext(broker.brokers());
    topics::ensure_topics(&settings, &[topics::COMPLETED])
        .await
        .unwrap();
    let publisher = Publisher::new(&settings, "imageflow-backend-api").unwrap();
    let parent = tracing::info_span!("pipeline.execute");
    let trace_id = propagation::trace_id(&parent).unwrap();
    let completion = CompletionMessage {
        execution_id: "exec-py".into(),
        status: "completed".into(),
        execution_time_ms: Some(1234.5),
        output_path: Some("exec-py/final.png".into()),
        processing_time_ms: Some(1200.0),
    };
    publisher
        .send(
            topics::COMPLETED,
            "exec-py",
            &completion,
            vec![("x-imageflow-origin".into(), "rust-publisher".into())],
        )
        .instrument(parent)
        .await
        .unwrap();

    let brokers = broker.brokers();
    // Blocking is fine here: nothing else in this test needs the runtime, and
    // the script bounds itself (30 s).
    let output = Command::new(python)
        .args(["-c", READER, &brokers, topics::COMPLETED])
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "python failed: {stderr}\n{stdout}");
    let got: Value = serde_json::from_str(stdout.trim()).unwrap();

    assert_eq!(got["topic"], json!(topics::COMPLETED));
    assert_eq!(got["key"], json!("exec-py"));
    assert_eq!(
        got["value"],
        json!({
            "version": 1,
            "execution_id": "exec-py",
            "status": "completed",
            "execution_time_ms": 1234.5,
            "output_path": "exec-py/final.png",
            "processing_time_ms": 1200.0,
        })
    );
    let traceparent = got["headers"]["traceparent"].as_str().unwrap();
    assert!(
        traceparent.starts_with("00-") && traceparent.contains(&trace_id),
        "{traceparent} vs {trace_id}"
    );
    assert_eq!(
        got["headers"]["x-imageflow-origin"],
        json!("rust-publisher")
    );
}

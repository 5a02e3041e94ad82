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

use imageflow_events::{CompletionMessage, KafkaSettings, ProgressMessage, topics};
use imageflow_testkit::{ChildProcess, KafkaBroker};
use serde_json::Value;

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_and_completion_of_a_real_run_reach_kafka() {
    let _serial = SERIAL.lock().await;
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
    let _serial = SERIAL.lock().await;
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
        // Heartbeats every second; 6 s without one means dead, even on two
        // busy cores.
        ("STALE_EXECUTION_SECONDS", "6"),
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

    // Both replicas take work; then one dies in the middle of the run. Only
    // the 20 count here (the topic also holds the synchronous runs above).
    let heavy: HashSet<String> = ids.iter().cloned().collect();
    let ours = |m: &imageflow_events::Received| {
        m.json::<CompletionMessage>()
            .is_ok_and(|c| heavy.contains(&c.execution_id))
    };
    let completions = drain(
        &settings,
        topics::COMPLETED,
        Duration::from_secs(90),
        |got| {
            let mine: Vec<&imageflow_events::Received> = got.iter().filter(|m| ours(m)).collect();
            let origins: HashSet<&[u8]> = mine
                .iter()
                .filter_map(|m| m.header("imageflow-origin"))
                .collect();
            assert!(
                mine.len() < 20 || origins.len() == 2,
                "all 20 ran on one replica; A's partitions: {:?}",
                assigned(&a)
            );
            origins.len() == 2 && mine.len() >= 4
        },
    )
    .await;
    let done_before_kill = completions.iter().filter(|m| ours(m)).count();
    assert!(done_before_kill < 20, "the kill must land mid-run");
    // ... and while A is running one of them, by its own log.
    let deadline = Instant::now() + Duration::from_secs(60);
    let running_on_a = loop {
        let log = a.output();
        let started: HashSet<String> = log
            .lines()
            .filter(|l| l.contains("\"execution started\""))
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| v["execution_id"].as_str().map(str::to_string))
            .filter(|id| heavy.contains(id))
            .collect();
        let finished: HashSet<String> = log
            .lines()
            .filter(|l| l.contains("\"execution finished\""))
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| v["execution_id"].as_str().map(str::to_string))
            .collect();
        let running: HashSet<String> = started.difference(&finished).cloned().collect();
        if !running.is_empty() {
            break running;
        }
        assert!(Instant::now() < deadline, "A never ran one of the 20");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    a.kill();

    // Every execution ends completed, each once.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut terminal = 0;
        for id in &ids {
            let record = api_b.get(&format!("/v1/executions/{id}")).await;
            if matches!(
                record["status"].as_str(),
                Some("completed" | "failed" | "cancelled" | "partially_failed")
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
    // Every message on the topic (read until it stays quiet), so a second
    // completion of any execution would be seen.
    let all: Vec<imageflow_events::Received> =
        read_all(&settings, topics::COMPLETED, Duration::from_secs(3))
            .await
            .into_iter()
            .filter(|m| ours(m))
            .collect();
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
    // What A was running when it died went back to the queue (requeued by
    // B's reaper) or was taken over; either way each ended once, above.
    let requeued = b
        .output()
        .matches("requeued: the replica running it stopped")
        .count();
    let adopted = b.output().matches("adopted a queued execution").count();
    eprintln!(
        "A was running {} at the kill; B requeued {requeued} and adopted {adopted} executions",
        running_on_a.len()
    );
}

//! A broker that stops while a direct-mode run goes on (its own test binary,
//! so nothing else runs beside it): the run completes, the lost events are
//! counted and logged.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use imageflow_events::{KafkaSettings, topics};
use imageflow_testkit::KafkaBroker;

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_broker_never_stops_a_direct_run_and_the_loss_is_counted() {
    let _serial = SERIAL.lock().await;
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

    // Not here: the broker's restart. After tansu restarts, backend-api's
    // progress consumer rebalances and the process has crashed with SIGSEGV
    // inside librdkafka in some runs (an open bug, see the issue note).
    // Resumption of publishing after a restart is covered in process by
    // crates/imageflow-events/tests/broker.rs.
    drop(broker);
}

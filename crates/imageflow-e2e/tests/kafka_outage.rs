//! A broker that stops while a direct-mode run goes on (its own test binary,
//! so nothing else runs beside it): the run completes, the lost events are
//! counted and logged; when the broker is back, events flow again and the
//! backend, its progress consumer rejoining the group, stays up.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use imageflow_events::{KafkaSettings, topics};
use imageflow_testkit::KafkaBroker;

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_broker_never_stops_a_direct_run_and_the_loss_is_counted() {
    let _serial = SERIAL.lock().await;
    let mut broker = KafkaBroker::start_durable().unwrap();
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

    // The broker comes back with its topics, as a real one does: publishing
    // resumes without a backend restart, and the progress consumer's rejoin
    // leaves the process standing.
    broker.restart().unwrap();
    let (code, after) = api.execute(&pipeline(&file["file_id"]), true).await;
    assert_eq!(code, 200);
    assert_eq!(after["status"], "completed", "{after}");
    let execution_id = after["execution_id"].as_str().unwrap().to_string();
    let completed = drain(
        &settings,
        topics::COMPLETED,
        Duration::from_secs(60),
        |got| {
            got.iter()
                .any(|m| m.key.as_deref() == Some(execution_id.as_str()))
        },
    )
    .await;
    assert!(!completed.is_empty());
    // Past the consumer's session timeout (10 s): the group has rebalanced.
    tokio::time::sleep(Duration::from_secs(12)).await;
    process.assert_running();
    let (code, last) = api.execute(&pipeline(&file["file_id"]), true).await;
    assert_eq!(code, 200);
    assert_eq!(last["status"], "completed", "{last}");
    process.assert_running();
    drop(broker);
}

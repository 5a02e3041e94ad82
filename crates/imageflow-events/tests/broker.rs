//! The events crate against a real Kafka-compatible broker (tansu on
//! loopback, one per test so stopping one does not disturb the others).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{JOIN, counter, eventually, otel, recv_skipping_errors, recv_within};
use imageflow_events::{
    CompletionMessage, Consumer, DROPPED_METRIC, EventsError, ExecutionRequest, KafkaSettings,
    PUBLISHED_METRIC, ProgressMessage, Publisher, StartFrom, topics,
};
use imageflow_telemetry::propagation;
use imageflow_testkit::KafkaBroker;
use serde_json::{Value, json};
use tracing::Instrument as _;

fn broker() -> KafkaBroker {
    KafkaBroker::start().expect("tansu broker (run scripts/setup.sh)")
}

#[tokio::test]
async fn round_trip_carries_key_headers_trace_context_and_version() {
    otel();
    let broker = broker();
    let settings = KafkaSettings::plaintext(broker.brokers());
    topics::ensure_topics(&settings, topics::ALL).await.unwrap();
    // Every replica runs this at start: existing topics are fine.
    topics::ensure_topics(&settings, topics::ALL).await.unwrap();

    let publisher = Publisher::new(&settings, "imageflow-test").unwrap();
    let parent = tracing::info_span!("pipeline.execute");
    let parent_trace = propagation::trace_id(&parent).expect("test spans have trace ids");

    let mut progress = ProgressMessage::new(
        "exec-1",
        Some("resize-1".into()),
        "running",
        "resizing to 800x600",
        publisher.source(),
    );
    progress.attempt = Some(1);
    let completion = CompletionMessage {
        execution_id: "exec-1".into(),
        status: "completed".into(),
        execution_time_ms: Some(42.0),
        output_path: Some("exec-1/out.png".into()),
        processing_time_ms: Some(40.5),
    };
    async {
        // One through `send` (awaited), one through `publish` (background).
        publisher
            .send(
                topics::PROGRESS,
                "exec-1",
                &progress,
                vec![("x-imageflow-origin".into(), "round-trip-test".into())],
            )
            .await
            .unwrap();
        publisher.publish(topics::COMPLETED, "exec-1", &completion, vec![]);
    }
    .instrument(parent.clone())
    .await;
    publisher.flush(Duration::from_secs(10)).await.unwrap();

    let consumer = Consumer::new(
        &settings,
        "round-trip",
        &[topics::PROGRESS, topics::COMPLETED],
    )
    .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let message = recv_within(&consumer, JOIN).await;
        consumer.commit(&message).unwrap();
        seen.push(message);
    }
    seen.sort_by(|a, b| a.topic.cmp(&b.topic));
    let (got_completion, got_progress) = (&seen[0], &seen[1]);

    assert_eq!(got_progress.topic, topics::PROGRESS);
    assert_eq!(got_progress.key.as_deref(), Some("exec-1"));
    let raw: Value = serde_json::from_slice(&got_progress.payload).unwrap();
    assert_eq!(raw["version"], json!(1), "{raw}");
    assert_eq!(raw["source"], json!("imageflow-test"));
    assert_eq!(got_progress.json::<ProgressMessage>().unwrap(), progress);
    assert_eq!(
        got_progress.header("x-imageflow-origin"),
        Some(&b"round-trip-test"[..]),
        "the caller's header is kept"
    );
    let traceparent = String::from_utf8(
        got_progress
            .header("traceparent")
            .unwrap_or_else(|| panic!("no traceparent in {:?}", got_progress.headers))
            .to_vec(),
    )
    .unwrap();
    assert!(
        traceparent.contains(&parent_trace),
        "{traceparent} carries the producer's trace {parent_trace}"
    );

    assert_eq!(got_completion.key.as_deref(), Some("exec-1"));
    assert_eq!(
        got_completion.json::<CompletionMessage>().unwrap(),
        completion
    );
    // The consumer's span joins the producer's trace.
    for message in &seen {
        let span = message.span();
        assert_eq!(
            propagation::trace_id(&span).as_deref(),
            Some(parent_trace.as_str())
        );
    }
    assert!(counter(PUBLISHED_METRIC, &[("topic", topics::PROGRESS)]) >= 1.0);
}

#[tokio::test]
async fn an_uncommitted_message_is_delivered_again_and_a_committed_one_is_not() {
    otel();
    let broker = broker();
    let settings = KafkaSettings::plaintext(broker.brokers());
    topics::ensure_topics(&settings, &[topics::EXECUTIONS])
        .await
        .unwrap();
    let publisher = Publisher::new(&settings, "imageflow-test").unwrap();
    let request = ExecutionRequest {
        execution_id: "exec-alo".into(),
        pipeline_config: json!({"steps": [{"id": "r", "type": "resize"}]}),
        input_data: json!({"input_path": "in.jpg"}),
        parameters: json!({}),
        pipeline_id: None,
    };
    publisher
        .send(topics::EXECUTIONS, "exec-alo", &request, vec![])
        .await
        .unwrap();

    // A member that dies while processing: received, never committed.
    let first = Consumer::new(&settings, "backend", &[topics::EXECUTIONS]).unwrap();
    let taken = recv_within(&first, JOIN).await;
    assert_eq!(taken.json::<ExecutionRequest>().unwrap(), request);
    drop(first);

    // The next member of the group gets it again, finishes and commits.
    let second = Consumer::new(&settings, "backend", &[topics::EXECUTIONS]).unwrap();
    let again = recv_within(&second, JOIN).await;
    assert_eq!(
        (again.partition, again.offset),
        (taken.partition, taken.offset)
    );
    assert_eq!(again.json::<ExecutionRequest>().unwrap(), request);
    second.commit(&again).unwrap();
    drop(second);

    // A third member starts after the committed offset: the next message
    // it sees is a new one, not the old one again.
    let marker = ExecutionRequest {
        execution_id: "exec-after".into(),
        ..request.clone()
    };
    // Same key, so the same partition as the first.
    publisher
        .send(topics::EXECUTIONS, "exec-alo", &marker, vec![])
        .await
        .unwrap();
    let third = Consumer::new(&settings, "backend", &[topics::EXECUTIONS]).unwrap();
    let next = recv_within(&third, JOIN).await;
    assert_eq!(
        next.json::<ExecutionRequest>().unwrap().execution_id,
        "exec-after"
    );
    assert!(next.offset > taken.offset);

    // Another group reads from its own start (earliest), independently.
    let audit = Consumer::with_start(
        &settings,
        "audit",
        &[topics::EXECUTIONS],
        StartFrom::Earliest,
    )
    .unwrap();
    let first_seen = recv_within(&audit, JOIN).await;
    assert_eq!(first_seen.offset, taken.offset);
}

#[tokio::test]
async fn events_of_one_execution_arrive_in_order() {
    otel();
    let broker = broker();
    let settings = KafkaSettings::plaintext(broker.brokers());
    topics::ensure_topics(&settings, &[topics::PROGRESS])
        .await
        .unwrap();
    let publisher = Publisher::new(&settings, "imageflow-test").unwrap();
    // Two executions interleaved: each one's events keep their order.
    for i in 0..50 {
        for execution in ["exec-a", "exec-b"] {
            let mut event =
                ProgressMessage::new(execution, Some(format!("step-{i}")), "running", "", "test");
            event.attempt = Some(i);
            publisher.publish(topics::PROGRESS, execution, &event, vec![]);
        }
    }
    publisher.flush(Duration::from_secs(10)).await.unwrap();

    let consumer = Consumer::new(&settings, "ordering", &[topics::PROGRESS]).unwrap();
    let mut next = std::collections::HashMap::from([("exec-a", 0), ("exec-b", 0)]);
    for _ in 0..100 {
        let message = recv_within(&consumer, JOIN).await;
        let event: ProgressMessage = message.json().unwrap();
        assert_eq!(message.key.as_deref(), Some(event.execution_id.as_str()));
        let expected = next.get_mut(event.execution_id.as_str()).unwrap();
        assert_eq!(event.attempt, Some(*expected), "{event:?}");
        *expected += 1;
    }
    assert_eq!(next["exec-a"], 50);
    assert_eq!(next["exec-b"], 50);
}

#[tokio::test]
async fn an_awaited_send_does_not_wait_behind_lingering_events() {
    otel();
    let broker = broker();
    // Events linger far longer than this test may take: only a send that
    // goes out on its own can be acknowledged while one is held back.
    let settings = KafkaSettings {
        linger: Duration::from_secs(600),
        // librdkafka wants the delivery timeout longer than the linger.
        delivery_timeout: Duration::from_secs(900),
        fetch_wait: Duration::from_millis(1),
        ..KafkaSettings::plaintext(broker.brokers())
    };
    topics::ensure_topics(&settings, &[topics::PROGRESS, topics::EXECUTIONS])
        .await
        .unwrap();
    let publisher = Publisher::new(&settings, "imageflow-test").unwrap();
    let event = ProgressMessage::new("exec-linger", None, "running", "", "test");
    publisher.publish(topics::PROGRESS, "exec-linger", &event, vec![]);
    let request = ExecutionRequest {
        execution_id: "exec-now".into(),
        pipeline_config: json!({"steps": [{"id": "r", "type": "resize"}]}),
        input_data: json!({}),
        parameters: json!({}),
        pipeline_id: None,
    };
    tokio::time::timeout(
        JOIN,
        publisher.send(topics::EXECUTIONS, "exec-now", &request, vec![]),
    )
    .await
    .expect("an awaited send is acknowledged while events linger")
    .unwrap();
    // The event is still held back, and counted as in flight. The send's own
    // delivery report may be counted down just after its future resolved: let it.
    for _ in 0..100 {
        if publisher.in_flight() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(publisher.in_flight(), 1);

    // A consumer with the shortest fetch wait still gets the request.
    let consumer = Consumer::new(&settings, "linger", &[topics::EXECUTIONS]).unwrap();
    let received = recv_within(&consumer, JOIN).await;
    assert_eq!(received.json::<ExecutionRequest>().unwrap(), request);
}

/// A topic only this test uses, so its counters are its own even though the
/// metric registry is shared by the tests of this binary.
const OUTAGE_TOPIC: &str = "outage-progress";

#[tokio::test]
async fn a_dead_broker_costs_counted_drops_never_a_blocked_caller_and_publishing_resumes() {
    otel();
    // Restarted below: a store on disk keeps the topics, as a real broker does.
    let mut broker = KafkaBroker::start_durable().expect("tansu starts");
    let mut settings = KafkaSettings::plaintext(broker.brokers());
    settings.delivery_timeout = Duration::from_millis(1500);
    topics::ensure_topics(&settings, &[OUTAGE_TOPIC])
        .await
        .unwrap();
    let publisher = Publisher::new(&settings, "imageflow-test").unwrap();
    let event = ProgressMessage::new("exec-outage", None, "running", "", "test");
    publisher
        .send(OUTAGE_TOPIC, "exec-outage", &event, vec![])
        .await
        .unwrap();

    broker.stop();
    let dropped = || {
        counter(
            DROPPED_METRIC,
            &[("topic", OUTAGE_TOPIC), ("reason", "timeout")],
        )
    };
    let before = dropped();
    let started = Instant::now();
    for _ in 0..20 {
        publisher.publish(OUTAGE_TOPIC, "exec-outage", &event, vec![]);
    }
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "publish returned after {:?}",
        started.elapsed()
    );
    // Counted once the delivery timeout has passed, not before.
    assert_eq!(dropped(), before);
    eventually(Duration::from_secs(15), "20 drops counted", || {
        dropped() >= before + 20.0
    })
    .await;

    // `send` reports the loss instead, naming the broker, within its bound.
    let started = Instant::now();
    let err = publisher
        .send(OUTAGE_TOPIC, "exec-outage", &event, vec![])
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < settings.delivery_timeout + Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, EventsError::Delivery { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&broker.brokers()) && text.contains(OUTAGE_TOPIC),
        "{text}"
    );

    // The broker comes back with its topics, and the same publisher delivers
    // again without being touched.
    broker.restart().unwrap();
    let published = || counter(PUBLISHED_METRIC, &[("topic", OUTAGE_TOPIC)]);
    let published_before = published();
    let resumed =
        ProgressMessage::new("exec-outage", None, "completed", "after the outage", "test");
    let deadline = Instant::now() + Duration::from_secs(30);
    // The first events after the restart may still meet the producer
    // reconnecting; keep publishing until one is acknowledged.
    while published() <= published_before {
        assert!(
            Instant::now() < deadline,
            "nothing delivered after the restart:\n{}",
            broker.output()
        );
        publisher.publish(OUTAGE_TOPIC, "exec-outage", &resumed, vec![]);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The topic still holds what was delivered before the outage; the
    // message published after it follows.
    let consumer = Consumer::new(&settings, "after-outage", &[OUTAGE_TOPIC]).unwrap();
    let mut seen = Vec::new();
    loop {
        let message = recv_skipping_errors(&consumer, JOIN).await;
        let text = message.json::<ProgressMessage>().unwrap().message;
        if text == "after the outage" {
            break;
        }
        seen.push(text);
        assert!(seen.len() < 100, "not found after the outage: {seen:?}");
    }
    publisher
        .send(OUTAGE_TOPIC, "exec-outage", &resumed, vec![])
        .await
        .expect("send works again too");
}

#[tokio::test]
async fn an_event_over_the_size_limit_is_dropped_and_counted_at_once() {
    otel();
    let broker = broker();
    let mut settings = KafkaSettings::plaintext(broker.brokers());
    settings.message_max_bytes = 10_000;
    let publisher = Publisher::new(&settings, "imageflow-test").unwrap();
    let topic = "size-limit";
    let too_big = CompletionMessage {
        execution_id: "exec-big".into(),
        status: "x".repeat(20_000),
        execution_time_ms: None,
        output_path: None,
        processing_time_ms: None,
    };
    let dropped = || counter(DROPPED_METRIC, &[("topic", topic), ("reason", "too_large")]);
    let before = dropped();
    publisher.publish(topic, "exec-big", &too_big, vec![]);
    assert_eq!(dropped(), before + 1.0);
    let err = publisher
        .send(topic, "exec-big", &too_big, vec![])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("too large"), "{err}");
}

#[tokio::test]
async fn ensure_topics_against_no_broker_fails_in_time_naming_the_brokers() {
    otel();
    let addr = imageflow_testkit::closed_port();
    let settings = KafkaSettings::plaintext(addr.to_string());
    let started = Instant::now();
    let err = topics::ensure_topics_within(&settings, topics::ALL, Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

#[tokio::test]
async fn a_consumer_leaves_in_bounded_time_when_the_broker_is_gone() {
    otel();
    let mut broker = KafkaBroker::start_durable().expect("tansu starts");
    let settings = KafkaSettings::plaintext(broker.brokers());
    topics::ensure_topics(&settings, &[topics::PROGRESS])
        .await
        .unwrap();
    let publisher = Publisher::new(&settings, "imageflow-test").unwrap();
    let event = ProgressMessage::new("exec-leave", None, "running", "", "test");
    publisher
        .send(topics::PROGRESS, "exec-leave", &event, vec![])
        .await
        .unwrap();
    let consumer = Consumer::new(&settings, "leaving", &[topics::PROGRESS]).unwrap();
    let message = recv_within(&consumer, JOIN).await;
    consumer.commit(&message).unwrap();

    // A replica shutting down while Kafka is away must not hang on the way
    // out (dropping closes the group membership).
    broker.stop();
    let started = Instant::now();
    consumer.close().await;
    drop(publisher);
    let bound = imageflow_events::CLOSE_TIMEOUT + Duration::from_secs(2);
    assert!(
        started.elapsed() < bound,
        "closing took {:?}",
        started.elapsed()
    );

    // Dropping is bounded the same way.
    broker.restart().unwrap();
    // Another group: the first consumer may still be trying to leave
    // "leaving" in the background, now against the restarted broker.
    let consumer = Consumer::new(&settings, "leaving-again", &[topics::PROGRESS]).unwrap();
    let publisher = Publisher::new(&settings, "imageflow-test").unwrap();
    publisher
        .send(topics::PROGRESS, "exec-leave", &event, vec![])
        .await
        .unwrap();
    recv_within(&consumer, JOIN).await;
    broker.stop();
    let started = Instant::now();
    drop(consumer);
    assert!(
        started.elapsed() < bound,
        "dropping took {:?}",
        started.elapsed()
    );
}

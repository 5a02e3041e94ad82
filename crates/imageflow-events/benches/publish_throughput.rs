//! Events per second the [`Publisher`] sustains against tansu on loopback,
//! and the latency of an awaited `send`. Prints the figures; asserts only
//! that nothing was dropped (a number measured while losing events would be
//! meaningless).
//!
//! `cargo bench -p imageflow-events --bench publish_throughput [-- EVENTS]`

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use imageflow_events::{
    DROPPED_METRIC, KafkaSettings, PUBLISHED_METRIC, ProgressMessage, Publisher, topics,
};
use imageflow_telemetry::metrics::{Registry, Value};
use imageflow_testkit::KafkaBroker;

fn counter_total(name: &str) -> f64 {
    Registry::global()
        .snapshot()
        .into_iter()
        .filter(|f| f.name == name)
        .flat_map(|f| f.series.into_values())
        .map(|v| match v {
            Value::Number(n) => n,
            Value::Histogram(h) => h.count as f64,
        })
        .sum()
}

fn main() {
    let events: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200_000);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let broker = KafkaBroker::start().expect("tansu broker (run scripts/setup.sh)");
        let mut settings = KafkaSettings::plaintext(broker.brokers());
        settings.delivery_timeout = Duration::from_secs(60);
        topics::ensure_topics(&settings, &[topics::PROGRESS]).await.unwrap();
        let publisher = Publisher::new(&settings, "imageflow-bench").unwrap();

        // Warm-up: metadata, connections, producer id.
        let warm = ProgressMessage::new("warm-up", None, "running", "", "bench");
        publisher.send(topics::PROGRESS, "warm-up", &warm, vec![]).await.unwrap();

        // A realistic progress event (~250 bytes of JSON), 64 executions so
        // all partitions are used, as a busy backend would.
        let keys: Vec<String> = (0..64).map(|i| format!("exec-{i:04}")).collect();
        let template = ProgressMessage::new(
            "exec-0000",
            Some("resize-1".into()),
            "running",
            "resizing 1920x1080 to 800x600",
            "imageflow-backend-api",
        );
        let started = Instant::now();
        let mut i = 0;
        while i < events {
            // publish drops on a full queue; pace at the queue bound so the
            // figure is the delivered rate, not the enqueue rate.
            if publisher.in_flight() >= 90_000 {
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
            let key = &keys[i % keys.len()];
            let mut event = template.clone();
            event.execution_id.clone_from(key);
            event.attempt = Some(i as u32);
            publisher.publish(topics::PROGRESS, key, &event, vec![]);
            i += 1;
        }
        let enqueued = started.elapsed();
        publisher.flush(Duration::from_secs(120)).await.unwrap();
        let delivered = started.elapsed();
        assert_eq!(counter_total(DROPPED_METRIC), 0.0, "events were dropped during the run");
        // Every event acknowledged by the broker (plus the warm-up one).
        assert_eq!(counter_total(PUBLISHED_METRIC), events as f64 + 1.0);
        println!(
            "publish: {events} events enqueued in {:.2?} ({:.0}/s), all acknowledged in {:.2?}: {:.0} events/s sustained",
            enqueued,
            events as f64 / enqueued.as_secs_f64(),
            delivered,
            events as f64 / delivered.as_secs_f64()
        );

        // Awaited sends, one at a time: the round trip a queue-mode
        // submission pays.
        let mut latencies = Vec::new();
        for n in 0..500 {
            let started = Instant::now();
            publisher.send(topics::PROGRESS, &keys[n % keys.len()], &template, vec![]).await.unwrap();
            latencies.push(started.elapsed());
        }
        latencies.sort();
        println!(
            "send (acks=all, one at a time): p50 {:.2?}, p99 {:.2?}",
            latencies[latencies.len() / 2],
            latencies[latencies.len() * 99 / 100]
        );
    });
}

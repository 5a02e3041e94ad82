//! The engine's scheduling and step policy against a scripted fake of the
//! services and a real SQLite database: order and levels, retry and backoff,
//! fallback, skip, deadlines, cancel, backpressure, admission and shutdown.

use std::time::Duration;

use serde_json::json;
use tonic::Status;

use super::{SubmitError, step::retry_wait};
use crate::{
    clients::CallError,
    model::{ExecutionStatus, StepStatus},
    testing::{Harness, Reply, pipeline, resize, settings, wait_final, with_hint},
};
use imageflow_retry::Backoff;

fn step_status(record: &crate::model::ExecutionRecord, id: &str) -> StepStatus {
    record
        .steps
        .iter()
        .find(|s| s.step_id == id)
        .unwrap_or_else(|| panic!("no step {id}"))
        .status
}

#[tokio::test]
async fn a_chain_runs_in_order_and_hands_each_step_the_previous_image() {
    let h = Harness::new().await;
    let p = pipeline(json!([
        resize("a", 10, &[]),
        resize("b", 20, &["a"]),
        resize("c", 30, &["b"])
    ]));
    let record = h.run("chain", &p).await;
    assert_eq!(record.status, ExecutionStatus::Completed, "{record:?}");
    let calls = h.fake.calls();
    let keys: Vec<&str> = calls.iter().map(|c| c.key.as_str()).collect();
    assert_eq!(keys, ["resize:10", "resize:20", "resize:30"]);
    assert_eq!(calls[0].input, h.input.object_key);
    assert_eq!(calls[1].input, "resize:10/out");
    assert_eq!(calls[2].input, "resize:20/out");
    for pair in calls.windows(2) {
        assert!(pair[1].started >= pair[0].ended.unwrap());
    }
    assert!(
        record
            .steps
            .iter()
            .all(|s| s.status == StepStatus::Completed)
    );
    assert_eq!(
        record.steps.iter().map(|s| s.level).collect::<Vec<_>>(),
        [0, 1, 2]
    );
}

#[tokio::test]
async fn a_diamond_runs_its_middle_level_in_parallel_and_joins_after_both() {
    let h = Harness::new().await;
    h.fake
        .script("resize:20", [Reply::Ok(Duration::from_millis(150))]);
    h.fake
        .script("resize:30", [Reply::Ok(Duration::from_millis(150))]);
    let p = pipeline(json!([
        resize("a", 10, &[]),
        resize("b", 20, &["a"]),
        resize("c", 30, &["a"]),
        resize("d", 40, &["b", "c"])
    ]));
    let record = h.run("diamond", &p).await;
    assert_eq!(record.status, ExecutionStatus::Completed, "{record:?}");
    let (b, c, d) = (
        &h.fake.calls_of("resize:20")[0],
        &h.fake.calls_of("resize:30")[0],
        &h.fake.calls_of("resize:40")[0],
    );
    // Both middle steps were in flight at once.
    assert!(c.started < b.ended.unwrap() && b.started < c.ended.unwrap());
    assert!(d.started >= b.ended.unwrap() && d.started >= c.ended.unwrap());
    // The join takes the image of its first listed dependency.
    assert_eq!(d.input, "resize:20/out");
    assert_eq!(record.steps[3].level, 2);
}

#[tokio::test]
async fn a_fast_branch_does_not_wait_for_a_slow_sibling() {
    let h = Harness::new().await;
    h.fake
        .script("resize:10", [Reply::Ok(Duration::from_millis(300))]);
    let p = pipeline(json!([
        resize("slow", 10, &[]),
        resize("fast", 20, &[]),
        resize("after-fast", 30, &["fast"])
    ]));
    let record = h.run("branches", &p).await;
    assert_eq!(record.status, ExecutionStatus::Completed);
    let slow = &h.fake.calls_of("resize:10")[0];
    let next = &h.fake.calls_of("resize:30")[0];
    assert!(next.started < slow.ended.unwrap());
}

#[tokio::test]
async fn the_last_image_written_is_the_executions_output() {
    let h = Harness::new().await;
    let p = pipeline(json!([resize("a", 10, &[]), resize("b", 20, &["a"])]));
    let submission = h.record("output", &p, h.engine.owner()).await;
    let mut events = h.engine.events().subscribe();
    h.engine.submit(submission).unwrap();
    let events = wait_final(&mut events, "output").await;
    let end = events.last().unwrap();
    assert_eq!(end.status, "completed");
    assert_eq!(end.output_path.as_deref(), Some("imageflow/resize:20/out"));
    // Each output is registered as a file in the default bucket.
    let record = h.execution("output").await;
    let output = record.steps[1].output.clone().unwrap();
    let file = h.db.get_file(&output.file_id).await.unwrap().unwrap();
    assert_eq!(file.bucket, "imageflow");
    assert_eq!(file.execution_id.as_deref(), Some("output"));
}

#[tokio::test]
async fn a_step_publishes_running_then_completed_between_the_executions_events() {
    let h = Harness::new().await;
    let p = pipeline(json!([resize("a", 10, &[])]));
    let submission = h.record("events", &p, h.engine.owner()).await;
    let mut events = h.engine.events().subscribe();
    h.engine.submit(submission).unwrap();
    let seen: Vec<(Option<String>, String)> = wait_final(&mut events, "events")
        .await
        .into_iter()
        .map(|e| (e.step_id, e.status))
        .collect();
    let a = Some("a".to_string());
    assert_eq!(
        seen,
        [
            (None, "running".into()),
            (a.clone(), "running".into()),
            (a, "completed".into()),
            (None, "completed".into()),
        ]
    );
}

fn retrying(id: &str, width: u32, retries: u32) -> serde_json::Value {
    let mut step = resize(id, width, &[]);
    step["retryPolicy"] = json!({"maxRetries": retries, "backoffFactor": 1.0});
    step
}

#[tokio::test]
async fn retryable_failures_are_retried_after_a_backoff_until_success() {
    let h = Harness::new().await;
    let down = || Reply::Fail(Duration::ZERO, Status::unavailable("restarting"));
    h.fake.script("resize:10", [down(), down()]);
    let record = h
        .run("retry", &pipeline(json!([retrying("a", 10, 2)])))
        .await;
    assert_eq!(record.status, ExecutionStatus::Completed, "{record:?}");
    assert_eq!(record.steps[0].attempts, 3);
    let calls = h.fake.calls_of("resize:10");
    assert_eq!(calls.len(), 3);
    // At least half of the 200 ms base (equal jitter) between attempts.
    for pair in calls.windows(2) {
        assert!(pair[1].started - pair[0].ended.unwrap() >= Duration::from_millis(100));
    }
}

#[tokio::test]
async fn a_step_fails_once_its_retries_are_spent() {
    let h = Harness::new().await;
    let down = || Reply::Fail(Duration::ZERO, Status::unavailable("down"));
    h.fake.script("resize:10", [down(), down(), down()]);
    let record = h
        .run("spent", &pipeline(json!([retrying("a", 10, 2)])))
        .await;
    assert_eq!(record.status, ExecutionStatus::Failed);
    let error = record.error.unwrap();
    assert!(error.contains("step \"a\" failed"), "{error}");
    assert!(error.contains("(after 3 attempts)"), "{error}");
    assert!(error.contains("UNAVAILABLE"), "{error}");
    assert_eq!(record.steps[0].status, StepStatus::Failed);
}

#[tokio::test]
async fn a_permanent_failure_is_not_retried() {
    let h = Harness::new().await;
    h.fake.script(
        "resize:10",
        [Reply::Fail(
            Duration::ZERO,
            Status::invalid_argument("corrupt image"),
        )],
    );
    let record = h.run("bad", &pipeline(json!([retrying("a", 10, 3)]))).await;
    assert_eq!(record.status, ExecutionStatus::Failed);
    assert_eq!(h.fake.calls().len(), 1);
    let error = record.steps[0].error.clone().unwrap();
    assert!(
        error.contains("resize: INVALID_ARGUMENT: corrupt image"),
        "{error}"
    );
}

#[test]
fn a_retry_waits_the_backoff_and_never_less_than_the_services_hint() {
    let backoff = Backoff::new(Duration::from_millis(200), 2.0, Duration::from_secs(10));
    let plain = CallError::from(Status::unavailable("down"));
    for retry in 1..=4 {
        let ceiling = Duration::from_millis(200 * 2u64.pow(retry - 1));
        let wait = retry_wait(&backoff, retry, &plain);
        assert!(wait >= ceiling / 2 && wait <= ceiling, "{retry}: {wait:?}");
    }
    let hinted = CallError::from(with_hint(Status::unavailable("busy"), 1500));
    assert!(retry_wait(&backoff, 1, &hinted) >= Duration::from_millis(1500));
    // A hint past the cap does not stall a step for longer than the cap.
    let huge = CallError::from(with_hint(Status::unavailable("busy"), 3_600_000));
    assert!(retry_wait(&backoff, 1, &huge) <= Duration::from_secs(10));
}

fn with_fallback(mut step: serde_json::Value) -> serde_json::Value {
    step["fallback"] = json!({"componentName": "filter", "parameters": {"filter_type": "sharpen"}});
    step
}

#[tokio::test]
async fn the_fallback_runs_when_the_step_fails_and_is_recorded() {
    let h = Harness::new().await;
    h.fake.script(
        "resize:10",
        [Reply::Fail(
            Duration::ZERO,
            Status::internal("model crashed"),
        )],
    );
    let p = pipeline(json!([
        with_fallback(resize("a", 10, &[])),
        resize("b", 20, &["a"])
    ]));
    let record = h.run("fallback", &p).await;
    assert_eq!(record.status, ExecutionStatus::Completed, "{record:?}");
    assert!(record.steps[0].used_fallback);
    let calls = h.fake.calls();
    assert!(calls[1].key.starts_with("filter:"), "{calls:?}");
    // The dependent takes the fallback's image.
    assert_eq!(
        h.fake.calls_of("resize:20")[0].input,
        format!("{}/out", calls[1].key)
    );
}

#[tokio::test]
async fn a_failing_fallback_fails_the_step() {
    let h = Harness::new().await;
    h.fake.script(
        "resize:10",
        [Reply::Fail(Duration::ZERO, Status::internal("crashed"))],
    );
    let p = pipeline(json!([with_fallback(resize("a", 10, &[]))]));
    let fallback_key = {
        let plan = crate::dag::plan(&p, &Default::default()).unwrap();
        crate::testing::key(plan.steps[0].fallback.as_ref().unwrap())
    };
    h.fake.script(
        &fallback_key,
        [Reply::Fail(
            Duration::ZERO,
            Status::internal("also crashed"),
        )],
    );
    let record = h.run("fallback-fails", &p).await;
    assert_eq!(record.status, ExecutionStatus::Failed);
    assert!(!record.steps[0].used_fallback);
    assert!(record.error.unwrap().contains("also crashed"));
}

#[tokio::test]
async fn continue_on_failure_skips_the_step_and_passes_its_input_on() {
    let h = Harness::new().await;
    h.fake.script(
        "resize:20",
        [Reply::Fail(
            Duration::ZERO,
            Status::invalid_argument("too small"),
        )],
    );
    let mut optional = resize("b", 20, &["a"]);
    optional["continueOnFailure"] = json!(true);
    let p = pipeline(json!([
        resize("a", 10, &[]),
        optional,
        resize("c", 30, &["b"])
    ]));
    let record = h.run("skip", &p).await;
    assert_eq!(record.status, ExecutionStatus::Completed, "{record:?}");
    assert_eq!(step_status(&record, "b"), StepStatus::Skipped);
    assert!(
        record.steps[1]
            .error
            .as_deref()
            .unwrap()
            .contains("too small")
    );
    assert_eq!(h.fake.calls_of("resize:30")[0].input, "resize:10/out");
}

#[tokio::test]
async fn a_failed_step_stops_the_run_and_closes_the_steps_that_never_ran() {
    let h = Harness::new().await;
    h.fake.script(
        "resize:10",
        [Reply::Fail(
            Duration::ZERO,
            Status::invalid_argument("corrupt"),
        )],
    );
    let p = pipeline(json!([resize("a", 10, &[]), resize("b", 20, &["a"])]));
    let record = h.run("stops", &p).await;
    assert_eq!(record.status, ExecutionStatus::Failed);
    assert!(h.fake.calls_of("resize:20").is_empty());
    assert_eq!(step_status(&record, "b"), StepStatus::Cancelled);
}

#[tokio::test]
async fn detection_without_drawing_hands_its_input_to_the_next_step() {
    let h = Harness::new().await;
    h.fake.script("detect", [Reply::NoImage]);
    let p = pipeline(json!([
        {"stepId": "d", "componentName": "ai_detection", "parameters": {}},
        resize("r", 20, &["d"])
    ]));
    let record = h.run("detect", &p).await;
    assert_eq!(record.status, ExecutionStatus::Completed, "{record:?}");
    assert!(record.steps[0].output.is_none());
    assert_eq!(h.fake.calls_of("resize:20")[0].input, h.input.object_key);
}

#[tokio::test]
async fn an_attempt_past_its_deadline_is_dropped_and_retried() {
    let h = Harness::new().await;
    h.fake.script("resize:10", [Reply::Hang, Reply::Hang]);
    let mut step = retrying("a", 10, 1);
    step["timeoutSeconds"] = json!(0.2);
    let record = h.run("attempt-deadline", &pipeline(json!([step]))).await;
    assert_eq!(record.status, ExecutionStatus::Failed);
    let calls = h.fake.calls();
    assert_eq!(calls.len(), 2);
    assert!(calls.iter().all(|c| c.dropped));
    let error = record.error.unwrap();
    assert!(error.contains("DEADLINE_EXCEEDED"), "{error}");
    assert!(error.contains("0.2 s"), "{error}");
}

#[tokio::test]
async fn the_server_step_timeout_applies_when_the_step_sets_none() {
    let h = Harness::with(
        super::EngineSettings {
            step_timeout: Some(Duration::from_millis(200)),
            ..settings()
        },
        "replica-a",
    )
    .await;
    h.fake.script("resize:10", [Reply::Hang]);
    let record = h
        .run("server-timeout", &pipeline(json!([resize("a", 10, &[])])))
        .await;
    assert_eq!(record.status, ExecutionStatus::Failed);
    assert!(record.error.unwrap().contains("0.2 s"));
}

#[tokio::test]
async fn the_execution_deadline_fails_the_run_naming_the_running_step() {
    let h = Harness::with(
        super::EngineSettings {
            execution_timeout: Duration::from_millis(300),
            ..settings()
        },
        "replica-a",
    )
    .await;
    h.fake.script("resize:20", [Reply::Hang]);
    let p = pipeline(json!([resize("a", 10, &[]), resize("slow", 20, &["a"])]));
    let record = h.run("deadline", &p).await;
    assert_eq!(record.status, ExecutionStatus::Failed);
    let error = record.error.clone().unwrap();
    assert!(error.contains("execution deadline"), "{error}");
    assert!(error.contains("step(s) slow"), "{error}");
    assert!(h.fake.calls_of("resize:20")[0].dropped);
    assert_eq!(step_status(&record, "a"), StepStatus::Completed);
    assert_eq!(step_status(&record, "slow"), StepStatus::Cancelled);
}

#[tokio::test]
async fn a_pipelines_own_deadline_is_capped_by_the_servers() {
    let h = Harness::with(
        super::EngineSettings {
            execution_timeout: Duration::from_millis(200),
            ..settings()
        },
        "replica-a",
    )
    .await;
    h.fake.script("resize:10", [Reply::Hang]);
    let mut p = pipeline(json!([resize("a", 10, &[])]));
    p.timeout_seconds = Some(3600.0);
    let record = h.run("capped", &p).await;
    assert_eq!(record.status, ExecutionStatus::Failed);
    assert!(record.error.unwrap().contains("execution deadline of 0 s"));
}

#[tokio::test]
async fn cancel_stops_the_call_in_flight_and_records_the_cancel() {
    let h = Harness::new().await;
    h.fake.script("resize:10", [Reply::Hang]);
    let p = pipeline(json!([resize("a", 10, &[]), resize("b", 20, &["a"])]));
    let submission = h.record("cancel", &p, h.engine.owner()).await;
    let mut events = h.engine.events().subscribe();
    h.engine.submit(submission).unwrap();
    h.until_calls(1).await;
    assert!(h.engine.cancel("cancel").await.unwrap());
    let events = wait_final(&mut events, "cancel").await;
    assert_eq!(events.last().unwrap().status, "cancelled");
    tokio::time::timeout(Duration::from_secs(5), async {
        while h.engine.live() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    assert!(h.fake.calls()[0].dropped);
    let record = h.execution("cancel").await;
    assert_eq!(record.status, ExecutionStatus::Cancelled);
    assert!(
        record
            .steps
            .iter()
            .all(|s| s.status == StepStatus::Cancelled)
    );
    // A second cancel finds it ended.
    assert!(!h.engine.cancel("cancel").await.unwrap());
}

#[tokio::test]
async fn backpressure_is_waited_out_without_spending_retries() {
    let h = Harness::new().await;
    let busy = || {
        Reply::Fail(
            Duration::ZERO,
            with_hint(Status::resource_exhausted("at its concurrency limit"), 20),
        )
    };
    h.fake.script("resize:10", [busy(), busy()]);
    // No retry policy: a refusal with a hint is queueing, not a failure.
    let record = h
        .run("busy", &pipeline(json!([resize("a", 10, &[])])))
        .await;
    assert_eq!(record.status, ExecutionStatus::Completed, "{record:?}");
    assert_eq!(record.steps[0].attempts, 1);
    assert_eq!(h.fake.calls().len(), 3);
}

#[tokio::test]
async fn backpressure_past_the_attempt_deadline_fails_with_the_refusal() {
    let h = Harness::new().await;
    let busy = || {
        Reply::Fail(
            Duration::ZERO,
            with_hint(Status::resource_exhausted("at its concurrency limit"), 100),
        )
    };
    h.fake
        .script("resize:10", std::iter::repeat_with(busy).take(50));
    let mut step = resize("a", 10, &[]);
    step["timeoutSeconds"] = json!(0.3);
    let record = h.run("busy-long", &pipeline(json!([step]))).await;
    assert_eq!(record.status, ExecutionStatus::Failed);
    assert!(record.error.unwrap().contains("RESOURCE_EXHAUSTED"));
    assert!(h.fake.calls().len() < 50);
}

#[tokio::test]
async fn executions_beyond_the_slots_wait_pending_and_the_queue_is_bounded() {
    let h = Harness::with(
        super::EngineSettings {
            max_parallel: 1,
            max_queued: 1,
            ..settings()
        },
        "replica-a",
    )
    .await;
    h.fake.script("resize:10", [Reply::Hang]);
    let p = pipeline(json!([resize("a", 10, &[])]));
    let first = h.record("first", &p, h.engine.owner()).await;
    h.engine.submit(first).unwrap();
    h.until_calls(1).await;
    let second = h.record("second", &p, h.engine.owner()).await;
    h.engine.submit(second).unwrap();
    let third = h.record("third", &p, h.engine.owner()).await;
    assert!(matches!(
        h.engine.submit(third),
        Err(SubmitError::QueueFull(1))
    ));
    assert_eq!(h.execution("second").await.status, ExecutionStatus::Pending);
    // The slot frees: the waiting one runs.
    let mut events = h.engine.events().subscribe();
    h.engine.cancel("first").await.unwrap();
    wait_final(&mut events, "second").await;
    assert_eq!(
        h.execution("second").await.status,
        ExecutionStatus::Completed
    );
}

#[tokio::test]
async fn an_execution_cancelled_before_its_slot_is_never_run() {
    let h = Harness::new().await;
    let p = pipeline(json!([resize("a", 10, &[])]));
    let mut submission = h.record("gone", &p, h.engine.owner()).await;
    h.db.finish_execution(
        "gone",
        ExecutionStatus::Cancelled,
        Some("cancelled by request"),
        crate::db::Timestamp::now(),
        None,
    )
    .await
    .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    submission.claimed = Some(tx);
    h.engine.submit(submission).unwrap();
    assert!(!rx.await.unwrap(), "claimed an execution that had ended");
    assert!(h.fake.calls().is_empty());
}

#[tokio::test]
async fn shutdown_fails_what_outlives_the_grace_period_and_refuses_new_work() {
    let h = Harness::new().await;
    h.fake.script("resize:10", [Reply::Hang]);
    let p = pipeline(json!([resize("a", 10, &[])]));
    let submission = h.record("stuck", &p, h.engine.owner()).await;
    h.engine.submit(submission).unwrap();
    h.until_calls(1).await;
    h.engine.shutdown(Duration::from_millis(100)).await;
    let record = h.execution("stuck").await;
    assert_eq!(record.status, ExecutionStatus::Failed);
    assert!(record.error.unwrap().contains("shut down"));
    assert!(matches!(
        h.engine.check_capacity(),
        Err(SubmitError::ShuttingDown)
    ));
}

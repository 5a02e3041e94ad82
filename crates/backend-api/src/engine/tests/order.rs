//! Scheduling and lifecycle: order and levels, parallel branches, the
//! execution deadline, cancel, admission and shutdown.

use std::time::Duration;

use serde_json::json;
use tonic::Status;

use super::step_status;
use crate::{
    engine::{EngineSettings, SubmitError},
    model::{ExecutionStatus, StepStatus},
    testing::{Harness, Reply, pipeline, resize, settings, wait_final},
};

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
async fn the_execution_deadline_fails_the_run_naming_the_running_step() {
    let h = Harness::with(
        EngineSettings {
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
        EngineSettings {
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
    h.until_idle().await;
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
async fn executions_beyond_the_slots_wait_pending_and_the_queue_is_bounded() {
    let h = Harness::with(
        EngineSettings {
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

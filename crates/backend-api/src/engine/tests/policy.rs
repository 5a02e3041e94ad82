//! One step's policy: retry and backoff, fallback, skip, attempt deadlines
//! and backpressure.

use std::time::Duration;

use serde_json::json;
use tonic::Status;

use super::{retrying, step_status, with_fallback};
use crate::{
    clients::CallError,
    engine::{EngineSettings, step::retry_wait},
    model::{ExecutionStatus, StepStatus},
    testing::{Harness, Reply, pipeline, resize, settings, with_hint},
};
use imageflow_retry::Backoff;

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
        EngineSettings {
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

use std::time::Duration;

use super::{create, memory_db, set_ms, status_of, step_statuses};
use crate::{
    db::{Db, QUEUE_OWNER, Timestamp},
    model::{ExecutionStatus, StepStatus},
};

const MINUTE: Duration = Duration::from_secs(60);

/// Epoch ms `ago` before now.
fn ago(ago: Duration) -> i64 {
    Timestamp::now().minus(ago).unix_millis()
}

async fn heartbeat_of(db: &Db, id: &str) -> i64 {
    db.execution_owner(id).await.unwrap().unwrap().2
}

/// A running execution of `owner` last heartbeat `since` ago, with one
/// finished and one running step.
async fn running(db: &Db, id: &str, owner: &str, since: Duration) {
    let mut record = create(db, id, "submitter", &["done", "busy"]).await;
    assert!(
        db.start_execution(id, owner, Timestamp::now())
            .await
            .unwrap()
    );
    record.steps[0].status = StepStatus::Completed;
    record.steps[0].attempts = 1;
    record.steps[1].status = StepStatus::Running;
    record.steps[1].error = Some("attempt 1 failed".into());
    for step in &record.steps {
        db.save_step(id, step).await.unwrap();
    }
    set_ms(db, id, "heartbeat_ms", ago(since)).await;
}

#[tokio::test]
async fn a_heartbeat_touches_only_the_owners_live_executions() {
    let db = memory_db().await;
    running(&db, "mine", "a", MINUTE).await;
    create(&db, "mine-pending", "a", &[]).await;
    set_ms(&db, "mine-pending", "heartbeat_ms", 0).await;
    running(&db, "mine-done", "a", MINUTE).await;
    db.finish_execution(
        "mine-done",
        ExecutionStatus::Completed,
        None,
        Timestamp::now(),
        None,
    )
    .await
    .unwrap();
    running(&db, "theirs", "b", MINUTE).await;

    let before = Timestamp::now().unix_millis();
    assert_eq!(db.heartbeat("a").await.unwrap(), 2);
    assert!(heartbeat_of(&db, "mine").await >= before);
    assert!(heartbeat_of(&db, "mine-pending").await >= before);
    assert!(heartbeat_of(&db, "mine-done").await < before);
    assert!(heartbeat_of(&db, "theirs").await < before);
    assert_eq!(db.heartbeat("nobody").await.unwrap(), 0);
}

#[tokio::test]
async fn the_reaper_fails_only_what_stopped_beating_past_the_cutoff() {
    let db = memory_db().await;
    running(&db, "dead", "a", 3 * MINUTE).await;
    running(&db, "slow", "a", MINUTE).await;
    create(&db, "dead-pending", "a", &["s"]).await;
    set_ms(&db, "dead-pending", "heartbeat_ms", ago(3 * MINUTE)).await;
    create(&db, "queued", QUEUE_OWNER, &["s"]).await;
    set_ms(&db, "queued", "heartbeat_ms", ago(3 * MINUTE)).await;
    running(&db, "ended", "a", 3 * MINUTE).await;
    db.finish_execution(
        "ended",
        ExecutionStatus::Completed,
        None,
        Timestamp::now(),
        None,
    )
    .await
    .unwrap();

    let mut reaped = db.reap_stale(2 * MINUTE).await.unwrap();
    reaped.sort();
    assert_eq!(reaped, ["dead", "dead-pending"]);
    let dead = db.get_execution("dead").await.unwrap().unwrap();
    assert_eq!(dead.status, ExecutionStatus::Failed);
    assert!(dead.error.as_deref().unwrap().starts_with("interrupted"));
    assert!(dead.finished_at.is_some());
    assert_eq!(
        step_statuses(&dead),
        [StepStatus::Completed, StepStatus::Cancelled]
    );
    let pending = db.get_execution("dead-pending").await.unwrap().unwrap();
    assert_eq!(step_statuses(&pending), [StepStatus::Cancelled]);

    assert_eq!(status_of(&db, "slow").await, ExecutionStatus::Running);
    assert_eq!(status_of(&db, "queued").await, ExecutionStatus::Pending);
    assert_eq!(status_of(&db, "ended").await, ExecutionStatus::Completed);
    let queued = db.get_execution("queued").await.unwrap().unwrap();
    assert_eq!(step_statuses(&queued), [StepStatus::Pending]);
    assert!(db.reap_stale(2 * MINUTE).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_dead_replicas_run_goes_back_to_the_queue_a_bounded_number_of_times() {
    let db = memory_db().await;
    running(&db, "dead", "a", 3 * MINUTE).await;
    running(&db, "slow", "a", MINUTE).await;

    assert_eq!(db.requeue_stale(2 * MINUTE, 2).await.unwrap(), ["dead"]);
    let requeued = db.get_execution("dead").await.unwrap().unwrap();
    assert_eq!(requeued.status, ExecutionStatus::Pending);
    assert_eq!(requeued.started_at, None);
    for step in &requeued.steps {
        assert_eq!(step.status, StepStatus::Pending);
        assert_eq!((step.attempts, step.error.as_deref()), (0, None));
    }
    let (_, owner, heartbeat) = db.execution_owner("dead").await.unwrap().unwrap();
    assert_eq!(owner, QUEUE_OWNER);
    assert!(heartbeat >= ago(MINUTE));
    assert_eq!(status_of(&db, "slow").await, ExecutionStatus::Running);

    // Taken again, dies again: the second requeue is the last one.
    assert!(
        db.start_execution("dead", "b", Timestamp::now())
            .await
            .unwrap()
    );
    set_ms(&db, "dead", "heartbeat_ms", ago(3 * MINUTE)).await;
    assert_eq!(db.requeue_stale(2 * MINUTE, 2).await.unwrap(), ["dead"]);
    assert!(
        db.start_execution("dead", "c", Timestamp::now())
            .await
            .unwrap()
    );
    set_ms(&db, "dead", "heartbeat_ms", ago(3 * MINUTE)).await;
    assert!(db.requeue_stale(2 * MINUTE, 2).await.unwrap().is_empty());
    assert_eq!(status_of(&db, "dead").await, ExecutionStatus::Running);
    // ...and the reaper ends it.
    assert_eq!(db.reap_stale(2 * MINUTE).await.unwrap(), ["dead"]);
}

#[tokio::test]
async fn stale_queued_executions_are_found_oldest_first() {
    let db = memory_db().await;
    for (id, created) in [("q-new", 30), ("q-old", 10), ("q-mid", 20), ("q-fresh", 5)] {
        create(&db, id, QUEUE_OWNER, &[]).await;
        set_ms(&db, id, "created_ms", created).await;
        let waited = if id == "q-fresh" {
            Duration::from_secs(1)
        } else {
            MINUTE
        };
        set_ms(&db, id, "heartbeat_ms", ago(waited)).await;
    }
    create(&db, "direct", "a", &[]).await;
    set_ms(&db, "direct", "heartbeat_ms", ago(MINUTE)).await;
    create(&db, "claimed", QUEUE_OWNER, &[]).await;
    set_ms(&db, "claimed", "heartbeat_ms", ago(MINUTE)).await;
    db.finish_execution(
        "claimed",
        ExecutionStatus::Cancelled,
        None,
        Timestamp::now(),
        None,
    )
    .await
    .unwrap();

    let after = Duration::from_secs(30);
    assert_eq!(
        db.stale_queued(after, 10).await.unwrap(),
        ["q-old", "q-mid", "q-new"]
    );
    assert_eq!(db.stale_queued(after, 2).await.unwrap(), ["q-old", "q-mid"]);
    assert!(db.stale_queued(2 * MINUTE, 10).await.unwrap().is_empty());
}

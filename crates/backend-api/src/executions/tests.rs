//! The execution use-case: admission checks, idempotency, direct and queue
//! mode, failing with a reason, and the queue message.

use std::{collections::BTreeMap, sync::Arc};

use serde_json::json;

use super::{
    AcceptError, Admission, CreateExecution, Executions, fail, requeue, stored_submission,
};
use crate::{
    db::QUEUE_OWNER,
    model::ExecutionStatus,
    testing::{FakeQueue, Harness, pipeline, resize},
};

fn inline(h: &Harness) -> CreateExecution {
    CreateExecution {
        pipeline: Some(pipeline(json!([resize("a", 10, &[])]))),
        inputs: vec![h.input.file_id.clone()],
        ..Default::default()
    }
}

fn direct(h: &Harness) -> Executions {
    Executions::new(h.db.clone(), h.engine.clone(), None)
}

fn started(admission: Admission) -> super::Started {
    match admission {
        Admission::Started(started) => started,
        Admission::Existing(record) => panic!("expected a new execution, got {record:?}"),
    }
}

#[tokio::test]
async fn an_accepted_execution_runs_here_and_can_be_waited_for() {
    let h = Harness::new().await;
    let executions = direct(&h);
    let admission = executions.accept(inline(&h), true, "tester").await.unwrap();
    let record = executions
        .wait_for_end(started(admission))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.status, ExecutionStatus::Completed, "{record:?}");
    assert_eq!(record.inputs, std::slice::from_ref(&h.input.file_id));
    assert_eq!(h.fake.calls()[0].input, h.input.object_key);
}

#[tokio::test]
async fn a_repeated_execution_id_returns_the_existing_execution() {
    let h = Harness::new().await;
    let executions = direct(&h);
    let request = || CreateExecution {
        execution_id: Some("client-chosen-1".into()),
        ..inline(&h)
    };
    let first = started(executions.accept(request(), true, "t").await.unwrap());
    assert_eq!(first.execution_id, "client-chosen-1");
    executions.wait_for_end(first).await.unwrap();
    match executions.accept(request(), false, "t").await.unwrap() {
        Admission::Existing(record) => assert_eq!(record.execution_id, "client-chosen-1"),
        Admission::Started(s) => panic!("started a second execution {s:?}"),
    }
    assert_eq!(h.fake.calls().len(), 1);
}

#[tokio::test]
async fn a_request_must_name_exactly_one_pipeline_and_one_input() {
    let h = Harness::new().await;
    let executions = direct(&h);
    let invalid = |result: Result<Admission, AcceptError>| match result {
        Err(AcceptError::Invalid(message)) => message,
        other => panic!("expected Invalid, got {other:?}"),
    };
    let both = CreateExecution {
        pipeline_id: Some("p".into()),
        ..inline(&h)
    };
    assert!(invalid(executions.accept(both, false, "t").await).contains("not both"));
    let neither = CreateExecution {
        pipeline: None,
        ..inline(&h)
    };
    assert!(invalid(executions.accept(neither, false, "t").await).contains("give pipelineId"));
    let two = CreateExecution {
        inputs: vec![h.input.file_id.clone(), h.input.file_id.clone()],
        ..inline(&h)
    };
    assert!(invalid(executions.accept(two, false, "t").await).contains("got 2"));
    let bad_id = CreateExecution {
        execution_id: Some("has spaces".into()),
        ..inline(&h)
    };
    assert!(invalid(executions.accept(bad_id, false, "t").await).contains("execution_id"));
    assert!(h.fake.calls().is_empty());
}

#[tokio::test]
async fn unknown_pipelines_and_files_are_not_found_and_bad_plans_are_refused() {
    let h = Harness::new().await;
    let executions = direct(&h);
    let stored = CreateExecution {
        pipeline_id: Some("nope".into()),
        pipeline: None,
        ..inline(&h)
    };
    let err = executions.accept(stored, false, "t").await.unwrap_err();
    assert!(
        matches!(&err, AcceptError::NotFound(m) if m.contains("\"nope\"")),
        "{err:?}"
    );
    let missing_file = CreateExecution {
        inputs: vec!["no-such-file".into()],
        ..inline(&h)
    };
    let err = executions
        .accept(missing_file, false, "t")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AcceptError::NotFound(m) if m.contains("no-such-file")),
        "{err:?}"
    );
    let cyclic = CreateExecution {
        pipeline: Some(pipeline(json!([
            resize("a", 10, &["b"]),
            resize("b", 20, &["a"])
        ]))),
        ..inline(&h)
    };
    let err = executions.accept(cyclic, false, "t").await.unwrap_err();
    assert!(matches!(err, AcceptError::Plan(_)), "{err:?}");
}

#[tokio::test]
async fn a_stored_pipeline_runs_at_the_requested_revision() {
    let h = Harness::new().await;
    let mut definition = pipeline(json!([resize("a", 10, &[])]));
    definition.pipeline_id = Some("stored".into());
    h.db.insert_pipeline(&definition).await.unwrap().unwrap();
    definition.steps = pipeline(json!([resize("a", 99, &[])])).steps;
    h.db.update_pipeline("stored", &definition).await.unwrap();
    let executions = direct(&h);
    let request = CreateExecution {
        pipeline_id: Some("stored".into()),
        pipeline_revision: Some(1),
        pipeline: None,
        ..inline(&h)
    };
    let run = started(executions.accept(request, true, "t").await.unwrap());
    let record = executions.wait_for_end(run).await.unwrap().unwrap();
    assert_eq!(record.pipeline_revision, Some(1));
    assert_eq!(h.fake.calls()[0].key, "resize:10");
}

#[tokio::test]
async fn queue_mode_records_the_execution_for_the_queue_and_sends_one_message() {
    let h = Harness::new().await;
    let queue = Arc::new(FakeQueue::default());
    let executions = Executions::new(h.db.clone(), h.engine.clone(), Some(queue.clone()));
    let mut request = inline(&h);
    request.parameters = BTreeMap::from([("a".to_string(), json!({"width": 12}))]);
    let run = started(executions.accept(request, false, "t").await.unwrap());
    let sent = queue.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    let message = &sent[0];
    assert_eq!(message.execution_id, run.execution_id);
    assert_eq!(message.input_data["bucket"], json!(h.input.bucket));
    assert_eq!(message.input_data["object_key"], json!(h.input.object_key));
    assert_eq!(message.input_data["file_ids"], json!([h.input.file_id]));
    assert_eq!(message.parameters, json!({"a": {"width": 12}}));
    let (status, owner, _) =
        h.db.execution_owner(&run.execution_id)
            .await
            .unwrap()
            .unwrap();
    assert_eq!(
        (status, owner.as_str()),
        (ExecutionStatus::Pending, QUEUE_OWNER)
    );
    // Nothing ran here: whichever replica takes the message runs it.
    assert!(h.fake.calls().is_empty());
}

#[tokio::test]
async fn a_queue_that_refuses_fails_the_execution_with_the_reason() {
    let h = Harness::new().await;
    let queue = Arc::new(FakeQueue {
        down: true,
        ..Default::default()
    });
    let executions = Executions::new(h.db.clone(), h.engine.clone(), Some(queue));
    let request = CreateExecution {
        execution_id: Some("unqueued".into()),
        ..inline(&h)
    };
    let err = executions.accept(request, false, "t").await.unwrap_err();
    assert!(matches!(&err, AcceptError::QueueDown(m) if m.contains("brokers are down")));
    let record = h.execution("unqueued").await;
    assert_eq!(record.status, ExecutionStatus::Failed);
    assert!(record.error.unwrap().contains("could not be queued"));
}

#[tokio::test]
async fn the_submission_read_back_from_the_database_is_the_one_accepted() {
    let h = Harness::new().await;
    let queue = Arc::new(FakeQueue::default());
    let executions = Executions::new(h.db.clone(), h.engine.clone(), Some(queue));
    let mut request = inline(&h);
    request.pipeline = Some(pipeline(json!([
        resize("a", 10, &[]),
        resize("b", 20, &["a"])
    ])));
    request.parameters = BTreeMap::from([("b".to_string(), json!({"width": 21}))]);
    let run = started(executions.accept(request, false, "t").await.unwrap());
    let (submission, _claimed) = stored_submission(&h.db, &run.execution_id, Default::default())
        .await
        .unwrap();
    assert_eq!(submission.input.object_key, h.input.object_key);
    assert_eq!(submission.plan.steps.len(), 2);
    // The stored overrides apply again.
    assert_eq!(
        crate::testing::key(&submission.plan.steps[1].call),
        "resize:21"
    );
    assert!(submission.claimed.is_some());
}

#[tokio::test]
async fn fail_ends_an_open_execution_once() {
    let h = Harness::new().await;
    let p = pipeline(json!([resize("a", 10, &[])]));
    h.record("to-fail", &p, "replica-b").await;
    assert!(fail(&h.db, "to-fail", "input file vanished").await.unwrap());
    assert!(!fail(&h.db, "to-fail", "again").await.unwrap());
    let record = h.execution("to-fail").await;
    assert_eq!(record.status, ExecutionStatus::Failed);
    assert_eq!(record.error.as_deref(), Some("input file vanished"));
}

#[tokio::test]
async fn requeue_sends_the_stored_execution_or_fails_it_with_the_reason() {
    let h = Harness::new().await;
    let p = pipeline(json!([resize("a", 10, &[])]));
    h.record("again", &p, QUEUE_OWNER).await;
    let queue = FakeQueue::default();
    requeue(&queue, &h.db, "again").await;
    let sent = queue.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].input_data["object_key"], json!(h.input.object_key));
    assert_eq!(sent[0].pipeline_config["steps"][0]["stepId"], json!("a"));

    let down = FakeQueue {
        down: true,
        ..Default::default()
    };
    requeue(&down, &h.db, "again").await;
    let record = h.execution("again").await;
    assert_eq!(record.status, ExecutionStatus::Failed);
    assert!(
        record
            .error
            .unwrap()
            .contains("could not be queued again: all brokers are down")
    );
}

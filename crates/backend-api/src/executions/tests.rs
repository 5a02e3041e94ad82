//! The execution use-case: admission checks, idempotency, direct and queue
//! mode, failing with a reason, and the queue message.

use std::{collections::BTreeMap, sync::Arc};

use serde_json::json;

use super::{
    AcceptError, Admission, CreateExecution, Executions, fail, queued_submission, requeue,
    stored_submission,
};
use crate::{
    db::QUEUE_OWNER,
    engine::Submission,
    model::{ExecutionStatus, PipelineDefinition},
    testing::{BUCKET, FakeQueue, Harness, OTHER_BUCKET, pipeline, resize},
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

/// Queue mode, on a queue that keeps what it is sent.
fn queued(h: &Harness) -> (Executions, Arc<FakeQueue>) {
    let queue = Arc::new(FakeQueue::default());
    let executions = Executions::new(h.db.clone(), h.engine.clone(), Some(queue.clone()));
    (executions, queue)
}

/// The run a queue consumer reads back from the database for `id`.
async fn read_back(h: &Harness, id: &str) -> Submission {
    let (submission, _claimed) =
        stored_submission(&h.db, h.engine.buckets(), id, Default::default())
            .await
            .unwrap();
    submission
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
async fn a_request_must_name_one_pipeline_and_some_inputs() {
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
    let none = CreateExecution {
        inputs: Vec::new(),
        ..inline(&h)
    };
    assert!(
        invalid(executions.accept(none, false, "t").await)
            .contains("inputs is empty and the pipeline has no globalParameters.inputPath")
    );
    let too_many = CreateExecution {
        inputs: vec![h.input.file_id.clone(); super::MAX_INPUTS + 1],
        ..inline(&h)
    };
    assert!(
        invalid(executions.accept(too_many, false, "t").await)
            .contains("101 inputs; an execution takes at most 100")
    );
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
    let (executions, queue) = queued(&h);
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
    let (executions, _queue) = queued(&h);
    let mut request = inline(&h);
    request.pipeline = Some(pipeline(json!([
        resize("a", 10, &[]),
        resize("b", 20, &["a"])
    ])));
    request.parameters = BTreeMap::from([("b".to_string(), json!({"width": 21}))]);
    let run = started(executions.accept(request, false, "t").await.unwrap());
    let submission = read_back(&h, &run.execution_id).await;
    assert_eq!(submission.inputs.len(), 1);
    assert_eq!(submission.inputs[0].image.object_key, h.input.object_key);
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

fn with_globals(globals: serde_json::Value) -> PipelineDefinition {
    let mut p = pipeline(json!([resize("a", 10, &[])]));
    p.global_parameters = serde_json::from_value(globals).unwrap();
    p
}

#[tokio::test]
async fn several_inputs_of_every_kind_run_as_one_execution() {
    let h = Harness::new().await;
    h.put(OTHER_BUCKET, "drop/cat.jpg").await;
    h.put(OTHER_BUCKET, "batch/1.jpg").await;
    h.put(OTHER_BUCKET, "batch/2.PNG").await;
    h.put(OTHER_BUCKET, "batch/manifest.json").await;
    let executions = direct(&h);
    let request = CreateExecution {
        inputs: vec![
            h.input.file_id.clone(),
            format!("s3://{OTHER_BUCKET}/drop/cat.jpg"),
            format!("s3://{OTHER_BUCKET}/batch/"),
        ],
        ..inline(&h)
    };
    let run = started(executions.accept(request, true, "t").await.unwrap());
    let record = executions.wait_for_end(run).await.unwrap().unwrap();
    assert_eq!(record.status, ExecutionStatus::Completed, "{record:?}");
    // The prefix became one input per image under it, the manifest skipped.
    assert_eq!(
        record.inputs,
        vec![
            h.input.file_id.clone(),
            format!("s3://{OTHER_BUCKET}/drop/cat.jpg"),
            format!("s3://{OTHER_BUCKET}/batch/1.jpg"),
            format!("s3://{OTHER_BUCKET}/batch/2.PNG"),
        ]
    );
    let mut inputs: Vec<String> = h.fake.calls().iter().map(|c| c.input.clone()).collect();
    inputs.sort();
    assert_eq!(
        inputs,
        [
            "batch/1.jpg",
            "batch/2.PNG",
            "drop/cat.jpg",
            "uploads/input-1.png"
        ]
    );
    assert_eq!(record.input_results.len(), 4);
    assert!(
        record
            .input_results
            .iter()
            .all(|i| i.status == ExecutionStatus::Completed && i.output.is_some())
    );
}

#[tokio::test]
async fn references_outside_the_allowed_buckets_or_missing_are_refused_before_anything_runs() {
    let h = Harness::new().await;
    let executions = direct(&h);
    let accept = |inputs: Vec<&str>| {
        let request = CreateExecution {
            inputs: inputs.into_iter().map(String::from).collect(),
            ..inline(&h)
        };
        executions.accept(request, false, "t")
    };
    match accept(vec!["s3://payroll/salaries.jpg"]).await {
        Err(AcceptError::Invalid(m)) => {
            assert!(
                m.starts_with("inputs[0]: bucket \"payroll\" is not one this backend may use"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
    match accept(vec![&h.input.file_id, "s3://camera-drop/none.jpg"]).await {
        Err(AcceptError::NotFound(m)) => {
            assert_eq!(m, "inputs[1]: no object s3://camera-drop/none.jpg")
        }
        other => panic!("{other:?}"),
    }
    match accept(vec!["s3://camera-drop/empty/"]).await {
        Err(AcceptError::NotFound(m)) => assert!(m.contains("no images under"), "{m}"),
        other => panic!("{other:?}"),
    }
    match accept(vec!["uploads/input-1.png"]).await {
        Err(AcceptError::Invalid(m)) => assert!(m.contains("neither a file_id"), "{m}"),
        other => panic!("{other:?}"),
    }
    let outside_output = CreateExecution {
        pipeline: Some(with_globals(json!({"outputPath": "s3://payroll/out/"}))),
        ..inline(&h)
    };
    match executions.accept(outside_output, false, "t").await {
        Err(AcceptError::Invalid(m)) => {
            assert!(m.starts_with("globalParameters.outputPath"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    assert!(h.fake.calls().is_empty());
    let all = crate::db::ExecutionFilter {
        limit: 10,
        ..Default::default()
    };
    assert!(h.db.list_executions(&all).await.unwrap().0.is_empty());
}

#[tokio::test]
async fn the_pipelines_input_path_is_used_when_the_execution_names_no_inputs() {
    let h = Harness::new().await;
    for key in [
        "watch/a.jpg",
        "watch/b.jpg",
        "watch/c.jpg",
        "elsewhere/d.jpg",
    ] {
        h.put(BUCKET, key).await;
    }
    let executions = direct(&h);
    let request = CreateExecution {
        pipeline: Some(with_globals(json!({"inputPath": "watch/"}))),
        inputs: Vec::new(),
        ..Default::default()
    };
    let run = started(executions.accept(request, true, "t").await.unwrap());
    let record = executions.wait_for_end(run).await.unwrap().unwrap();
    assert_eq!(record.status, ExecutionStatus::Completed, "{record:?}");
    assert_eq!(
        record.inputs,
        [
            "s3://imageflow/watch/a.jpg",
            "s3://imageflow/watch/b.jpg",
            "s3://imageflow/watch/c.jpg"
        ]
    );
    // Named inputs win over the pipeline's path.
    let named = CreateExecution {
        pipeline: Some(with_globals(json!({"inputPath": "watch/"}))),
        ..inline(&h)
    };
    let run = started(executions.accept(named, true, "t").await.unwrap());
    let record = executions.wait_for_end(run).await.unwrap().unwrap();
    assert_eq!(record.inputs, std::slice::from_ref(&h.input.file_id));
}

#[tokio::test]
async fn queue_messages_list_every_input_and_the_stored_submission_runs_them_all() {
    let h = Harness::new().await;
    h.put(OTHER_BUCKET, "drop/cat.jpg").await;
    let (executions, queue) = queued(&h);
    let request = CreateExecution {
        inputs: vec![
            h.input.file_id.clone(),
            format!("s3://{OTHER_BUCKET}/drop/cat.jpg"),
        ],
        pipeline: Some(with_globals(
            json!({"outputPath": "s3://camera-drop/results/"}),
        )),
        ..Default::default()
    };
    let run = started(executions.accept(request, false, "t").await.unwrap());
    let message = queue.sent.lock().unwrap()[0].clone();
    // Single-input consumers still find the first input where they did.
    assert_eq!(message.input_data["object_key"], json!(h.input.object_key));
    assert_eq!(
        message.input_data["inputs"][1],
        json!({"source": "s3://camera-drop/drop/cat.jpg", "bucket": OTHER_BUCKET, "object_key": "drop/cat.jpg"})
    );
    let submission = read_back(&h, &run.execution_id).await;
    let keys: Vec<&str> = submission
        .inputs
        .iter()
        .map(|i| i.image.object_key.as_str())
        .collect();
    assert_eq!(keys, [h.input.object_key.as_str(), "drop/cat.jpg"]);
    let target = submission.output_target.expect("outputPath");
    assert_eq!(
        (target.bucket.as_str(), target.prefix.as_str()),
        (OTHER_BUCKET, "results/")
    );
}

#[tokio::test]
async fn the_submission_built_from_the_queue_message_is_the_one_read_back() {
    let h = Harness::new().await;
    h.put(OTHER_BUCKET, "drop/cat.jpg").await;
    let (executions, queue) = queued(&h);
    let mut definition = with_globals(json!({"outputPath": "s3://camera-drop/results/"}));
    definition.timeout_seconds = Some(7.5);
    let request = CreateExecution {
        inputs: vec![
            h.input.file_id.clone(),
            format!("s3://{OTHER_BUCKET}/drop/cat.jpg"),
        ],
        pipeline: Some(definition),
        parameters: BTreeMap::from([("a".to_string(), json!({"width": 21}))]),
        ..Default::default()
    };
    let run = started(executions.accept(request, false, "t").await.unwrap());
    let message = queue.sent.lock().unwrap()[0].clone();
    let (from_message, claimed) =
        queued_submission(&message, h.engine.buckets(), Default::default())
            .unwrap()
            .expect("the message carries the whole run");
    let from_db = read_back(&h, &run.execution_id).await;
    assert_eq!(from_message.execution_id, from_db.execution_id);
    // Plans and inputs have no PartialEq; their Debug form shows every field.
    assert_eq!(
        format!("{:?}", from_message.plan),
        format!("{:?}", from_db.plan)
    );
    assert_eq!(
        format!("{:?}", from_message.inputs),
        format!("{:?}", from_db.inputs)
    );
    assert_eq!(from_message.inputs.len(), 2);
    assert_eq!(from_message.output_target, from_db.output_target);
    assert_eq!(from_message.timeout, from_db.timeout);
    assert_eq!(
        from_message.timeout,
        Some(std::time::Duration::from_secs_f64(7.5))
    );
    assert_eq!(from_message.pipeline_id, from_db.pipeline_id);
    assert!(from_message.claimed.is_some());
    drop(claimed);
}

#[tokio::test]
async fn a_stored_pipelines_id_travels_with_its_queue_message() {
    let h = Harness::new().await;
    let (executions, queue) = queued(&h);
    let mut definition = pipeline(json!([resize("a", 10, &[])]));
    definition.pipeline_id = Some("stored".into());
    h.db.insert_pipeline(&definition).await.unwrap().unwrap();
    let request = CreateExecution {
        pipeline_id: Some("stored".into()),
        pipeline: None,
        ..inline(&h)
    };
    started(executions.accept(request, false, "t").await.unwrap());
    let message = queue.sent.lock().unwrap()[0].clone();
    assert_eq!(message.pipeline_id.as_deref(), Some("stored"));
    let (submission, _) = queued_submission(&message, h.engine.buckets(), Default::default())
        .unwrap()
        .unwrap();
    assert_eq!(submission.pipeline_id.as_deref(), Some("stored"));
}

#[tokio::test]
async fn a_message_without_its_inputs_is_read_back_and_a_foreign_bucket_is_refused() {
    let h = Harness::new().await;
    let (executions, queue) = queued(&h);
    started(executions.accept(inline(&h), false, "t").await.unwrap());
    let message = queue.sent.lock().unwrap()[0].clone();

    // An older producer's message: no `inputs` list, so the caller reads the record.
    let mut older = message.clone();
    older.input_data = json!({"bucket": BUCKET, "object_key": h.input.object_key});
    assert!(
        queued_submission(&older, h.engine.buckets(), Default::default())
            .unwrap()
            .is_none()
    );
    let mut unreadable = message.clone();
    unreadable.pipeline_config = json!("not a pipeline");
    assert!(
        queued_submission(&unreadable, h.engine.buckets(), Default::default())
            .unwrap()
            .is_none()
    );

    // A message naming a bucket this backend may not read is not run.
    let mut foreign = message;
    foreign.input_data["inputs"][0]["bucket"] = json!("someone-elses-bucket");
    let err = queued_submission(&foreign, h.engine.buckets(), Default::default())
        .map(|run| run.map(|(submission, _)| submission.execution_id))
        .expect_err("refused");
    assert!(err.contains("someone-elses-bucket"), "{err}");
}

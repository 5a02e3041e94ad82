//! Several inputs in one execution: each runs the whole DAG on its own, a
//! few at a time, one failing does not stop the others, and the ending says
//! which failed and why.

use std::time::Duration;

use imageflow_storage::{BucketName, ObjectKey};
use serde_json::json;
use tonic::Status;

use crate::{
    engine::{EngineSettings, OutputTarget},
    executions::Resolved,
    model::{ExecutionStatus, StepStatus},
    testing::{BUCKET, Harness, OTHER_BUCKET, Reply, pipeline, resize, settings, wait_final},
};

/// `n` images in the other bucket, as inputs.
async fn images(h: &Harness, n: usize) -> Vec<Resolved> {
    let mut inputs = Vec::new();
    for i in 0..n {
        let key = format!("drop/{i}.jpg");
        h.put(OTHER_BUCKET, &key).await;
        inputs.push(Resolved {
            source: format!("s3://{OTHER_BUCKET}/{key}"),
            bucket: OTHER_BUCKET.into(),
            object_key: key,
        });
    }
    inputs
}

#[tokio::test]
async fn each_input_runs_the_whole_dag_and_is_recorded_on_its_own() {
    let h = Harness::new().await;
    let p = pipeline(json!([resize("a", 10, &[]), resize("b", 20, &["a"])]));
    let inputs = images(&h, 3).await;
    let submission = h
        .record_inputs("three", &p, h.engine.owner(), &inputs, None)
        .await;
    let mut events = h.engine.events().subscribe();
    h.engine.submit(submission).unwrap();
    let seen = wait_final(&mut events, "three").await;
    let record = h.execution("three").await;
    assert_eq!(record.status, ExecutionStatus::Completed, "{record:?}");
    assert_eq!(record.error, None);

    // Six step runs: two per input, each chained within its own input.
    assert_eq!(record.steps.len(), 6);
    for (index, input) in inputs.iter().enumerate() {
        let n = index as u32;
        let a = h
            .fake
            .calls()
            .into_iter()
            .find(|c| c.input == input.object_key)
            .unwrap();
        assert_eq!((a.key.as_str(), a.input_index), ("resize:10", Some(n)));
        // The second step takes this input's first output, not another's.
        let b = h
            .fake
            .calls_of("resize:20")
            .into_iter()
            .find(|c| c.input_index == Some(n))
            .unwrap();
        assert_eq!(b.input, format!("input-{n}/resize:10/out"));
        let steps: Vec<_> = record.steps.iter().filter(|s| s.input_index == n).collect();
        assert_eq!(steps.len(), 2);
        assert!(steps.iter().all(|s| s.status == StepStatus::Completed));
        let result = &record.input_results[index];
        assert_eq!(result.index, n);
        assert_eq!(result.input, input.source);
        assert_eq!(result.status, ExecutionStatus::Completed);
        assert_eq!(
            result.output.as_ref().unwrap().object_key,
            format!("input-{n}/resize:20/out")
        );
        assert!(result.execution_time_ms.is_some() && result.finished_at.is_some());
    }

    // Step events and each input's start and end carry the input; only the
    // execution's own ending is final.
    for n in 0..3u32 {
        let of_input: Vec<_> = seen.iter().filter(|e| e.input_index == Some(n)).collect();
        assert!(
            of_input
                .iter()
                .any(|e| e.step_id.as_deref() == Some("b") && e.status == "completed")
        );
        let ends: Vec<_> = of_input.iter().filter(|e| e.step_id.is_none()).collect();
        assert_eq!(
            ends.iter().map(|e| e.status.as_str()).collect::<Vec<_>>(),
            ["running", "completed"]
        );
        assert_eq!(
            ends[1].output_path.as_deref(),
            Some(format!("imageflow/input-{n}/resize:20/out").as_str())
        );
    }
    let last = seen.last().unwrap();
    assert!(last.is_final() && last.input_index.is_none());
    assert_eq!(
        last.output_path.as_deref(),
        Some("imageflow/executions/three/")
    );
    assert_eq!(seen.iter().filter(|e| e.is_final()).count(), 1);
}

#[tokio::test]
async fn a_single_input_keeps_its_old_shape() {
    let h = Harness::new().await;
    let record = h.run("one", &pipeline(json!([resize("a", 10, &[])]))).await;
    assert_eq!(record.status, ExecutionStatus::Completed);
    // The services are not told an input: outputs stay directly under
    // executions/{id}/ as before.
    assert_eq!(h.fake.calls()[0].input_index, None);
    assert_eq!(record.input_results.len(), 1);
    assert_eq!(record.input_results[0].input, h.input.file_id);
    assert_eq!(record.steps[0].input_index, 0);
}

#[tokio::test]
async fn some_inputs_failing_make_the_execution_partially_failed_naming_them() {
    let h = Harness::new().await;
    let inputs = images(&h, 3).await;
    h.fake.script(
        "resize:10@drop/1.jpg",
        [Reply::Fail(
            Duration::ZERO,
            Status::invalid_argument("corrupt JPEG: truncated"),
        )],
    );
    let p = pipeline(json!([resize("a", 10, &[]), resize("b", 20, &["a"])]));
    let submission = h
        .record_inputs("partial", &p, h.engine.owner(), &inputs, None)
        .await;
    let mut events = h.engine.events().subscribe();
    h.engine.submit(submission).unwrap();
    wait_final(&mut events, "partial").await;
    let record = h.execution("partial").await;
    assert_eq!(
        record.status,
        ExecutionStatus::PartiallyFailed,
        "{record:?}"
    );
    let error = record.error.unwrap();
    assert!(
        error.starts_with(
            "1 of 3 inputs failed: input 1 (s3://camera-drop/drop/1.jpg): step \"a\" failed"
        ),
        "{error}"
    );
    assert!(error.contains("corrupt JPEG: truncated"), "{error}");
    let statuses: Vec<_> = record.input_results.iter().map(|i| i.status).collect();
    assert_eq!(
        statuses,
        [
            ExecutionStatus::Completed,
            ExecutionStatus::Failed,
            ExecutionStatus::Completed
        ]
    );
    // The failed input's later step never ran and is closed, not left pending.
    let b1 = record
        .steps
        .iter()
        .find(|s| s.input_index == 1 && s.step_id == "b")
        .unwrap();
    assert_eq!(b1.status, StepStatus::Cancelled);
    assert_eq!(h.fake.calls_of("resize:20").len(), 2);
}

#[tokio::test]
async fn every_input_failing_fails_the_execution() {
    let h = Harness::new().await;
    let inputs = images(&h, 2).await;
    h.fake.script(
        "resize:10",
        [
            Reply::Fail(Duration::ZERO, Status::invalid_argument("not an image")),
            Reply::Fail(Duration::ZERO, Status::invalid_argument("not an image")),
        ],
    );
    let p = pipeline(json!([resize("a", 10, &[])]));
    let submission = h
        .record_inputs("none-ok", &p, h.engine.owner(), &inputs, None)
        .await;
    let mut events = h.engine.events().subscribe();
    h.engine.submit(submission).unwrap();
    wait_final(&mut events, "none-ok").await;
    let record = h.execution("none-ok").await;
    assert_eq!(record.status, ExecutionStatus::Failed);
    assert!(
        record
            .error
            .unwrap()
            .starts_with("all 2 inputs failed: input 0")
    );
}

#[tokio::test]
async fn inputs_run_at_most_max_parallel_inputs_at_once() {
    let h = Harness::with(
        EngineSettings {
            max_parallel_inputs: 2,
            ..settings()
        },
        "replica-a",
    )
    .await;
    let inputs = images(&h, 5).await;
    for i in 0..5 {
        h.fake.script(
            &format!("resize:10@drop/{i}.jpg"),
            [Reply::Ok(Duration::from_millis(60))],
        );
    }
    let p = pipeline(json!([resize("a", 10, &[])]));
    let submission = h
        .record_inputs("bounded", &p, h.engine.owner(), &inputs, None)
        .await;
    let mut events = h.engine.events().subscribe();
    h.engine.submit(submission).unwrap();
    wait_final(&mut events, "bounded").await;
    let calls = h.fake.calls();
    assert_eq!(calls.len(), 5);
    // At every call's start, count the calls in flight.
    let most = calls
        .iter()
        .map(|c| {
            calls
                .iter()
                .filter(|o| o.started <= c.started && o.ended.unwrap() > c.started)
                .count()
        })
        .max()
        .unwrap();
    assert_eq!(most, 2, "{calls:?}");
    assert_eq!(
        h.execution("bounded").await.status,
        ExecutionStatus::Completed
    );
}

#[tokio::test]
async fn final_images_are_copied_to_the_output_path() {
    let h = Harness::new().await;
    let inputs = images(&h, 2).await;
    // A branch: two sinks, both final.
    let p = pipeline(json!([
        resize("a", 10, &[]),
        resize("b", 20, &["a"]),
        resize("c", 30, &["a"])
    ]));
    let target = OutputTarget {
        bucket: BucketName::parse(OTHER_BUCKET).unwrap(),
        prefix: "results/".into(),
    };
    let submission = h
        .record_inputs("copied", &p, h.engine.owner(), &inputs, Some(target))
        .await;
    let mut events = h.engine.events().subscribe();
    h.engine.submit(submission).unwrap();
    wait_final(&mut events, "copied").await;
    let record = h.execution("copied").await;
    assert_eq!(record.status, ExecutionStatus::Completed, "{record:?}");
    for n in 0..2 {
        let copied = &record.input_results[n].copied_to;
        assert_eq!(
            copied,
            &[
                format!("camera-drop/results/copied/input-{n}/resize:20/out"),
                format!("camera-drop/results/copied/input-{n}/resize:30/out"),
            ]
        );
        // The copy has the bytes the service wrote, not just a name.
        let object = h
            .store
            .get(
                &BucketName::parse(OTHER_BUCKET).unwrap(),
                &ObjectKey::parse(&format!("results/copied/input-{n}/resize:30/out")).unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(
            object.data,
            format!("output of resize:30 on input-{n}/resize:10/out").as_bytes()
        );
    }
    let _ = BUCKET;
}

#[tokio::test]
async fn a_copy_that_fails_fails_its_input_with_the_reason() {
    let h = Harness::new().await;
    let inputs = images(&h, 2).await;
    let target = OutputTarget {
        bucket: BucketName::parse("not-created").unwrap(),
        prefix: "out/".into(),
    };
    let p = pipeline(json!([resize("a", 10, &[])]));
    let submission = h
        .record_inputs("copy-fails", &p, h.engine.owner(), &inputs, Some(target))
        .await;
    let mut events = h.engine.events().subscribe();
    h.engine.submit(submission).unwrap();
    wait_final(&mut events, "copy-fails").await;
    let record = h.execution("copy-fails").await;
    assert_eq!(record.status, ExecutionStatus::Failed);
    let reason = record.input_results[0].error.as_deref().unwrap();
    assert!(
        reason.starts_with(
            "could not copy imageflow/input-0/resize:10/out to outputPath s3://not-created/out/"
        ),
        "{reason}"
    );
}

#[tokio::test]
async fn a_cancel_stops_every_input() {
    let h = Harness::new().await;
    let inputs = images(&h, 3).await;
    h.fake
        .script("resize:10", [Reply::Hang, Reply::Hang, Reply::Hang]);
    let p = pipeline(json!([resize("a", 10, &[])]));
    let submission = h
        .record_inputs("stopped", &p, h.engine.owner(), &inputs, None)
        .await;
    h.engine.submit(submission).unwrap();
    h.until_calls(3).await;
    assert!(h.engine.cancel("stopped").await.unwrap());
    h.until_idle().await;
    let record = h.execution("stopped").await;
    assert_eq!(record.status, ExecutionStatus::Cancelled);
    assert!(
        record
            .input_results
            .iter()
            .all(|i| i.status == ExecutionStatus::Cancelled)
    );
    assert!(
        record
            .steps
            .iter()
            .all(|s| s.status == StepStatus::Cancelled)
    );
    assert!(h.fake.calls().iter().all(|c| c.dropped));
}

use serde_json::{json, to_value};

use super::{create, definition, execution, memory_db, set_ms, status_of, step_statuses};
use crate::{
    db::{Db, ExecutionCursor, ExecutionFilter, Timestamp},
    model::{BoundingBox, Detection, ExecutionStatus, StepOutput, StepStatus},
};

#[tokio::test]
async fn an_execution_comes_back_with_its_steps_in_plan_order() {
    let db = memory_db().await;
    let record = execution("e1", Some("p1"), &["resize", "detect", "blur"]);
    let parameters = json!({"threshold": 0.5});
    db.create_execution(
        &record,
        &definition("p1", "stored"),
        &parameters,
        "replica-a",
    )
    .await
    .unwrap();

    let got = db.get_execution("e1").await.unwrap().unwrap();
    assert_eq!(to_value(&got).unwrap(), to_value(&record).unwrap());
    let (stored, stored_parameters) = db.execution_input("e1").await.unwrap().unwrap();
    assert_eq!(
        to_value(stored).unwrap(),
        to_value(definition("p1", "stored")).unwrap()
    );
    assert_eq!(stored_parameters, parameters);
    let (status, owner, _) = db.execution_owner("e1").await.unwrap().unwrap();
    assert_eq!(
        (status, owner.as_str()),
        (ExecutionStatus::Pending, "replica-a")
    );

    // Inline pipelines have no id nor revision (NULL numbers), and no steps.
    let inline = execution("e2", None, &[]);
    db.create_execution(&inline, &definition("x", "inline"), &json!({}), "replica-a")
        .await
        .unwrap();
    let got = db.get_execution("e2").await.unwrap().unwrap();
    assert_eq!(to_value(&got).unwrap(), to_value(&inline).unwrap());

    assert!(db.get_execution("missing").await.unwrap().is_none());
    assert!(db.execution_status("missing").await.unwrap().is_none());
    assert!(db.execution_owner("missing").await.unwrap().is_none());
    assert!(db.execution_input("missing").await.unwrap().is_none());
}

#[tokio::test]
async fn only_a_pending_execution_starts() {
    let db = memory_db().await;
    create(&db, "e1", "replica-a", &["s"]).await;
    let at = Timestamp::from_unix_millis(1_700_000_000_000);
    assert!(db.start_execution("e1", "replica-b", at).await.unwrap());
    // A second claim (another replica, a duplicate delivery) loses.
    assert!(
        !db.start_execution("e1", "replica-c", Timestamp::now())
            .await
            .unwrap()
    );
    let (status, owner, heartbeat) = db.execution_owner("e1").await.unwrap().unwrap();
    assert_eq!(
        (status, owner.as_str(), heartbeat),
        (ExecutionStatus::Running, "replica-b", at.unix_millis())
    );
    let record = db.get_execution("e1").await.unwrap().unwrap();
    assert_eq!(record.started_at, Some(at.to_rfc3339()));

    create(&db, "e2", "replica-a", &[]).await;
    db.finish_execution(
        "e2",
        ExecutionStatus::Cancelled,
        None,
        Timestamp::now(),
        None,
    )
    .await
    .unwrap();
    assert!(
        !db.start_execution("e2", "replica-a", Timestamp::now())
            .await
            .unwrap()
    );
    assert!(
        !db.start_execution("missing", "replica-a", Timestamp::now())
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn an_execution_finishes_once_from_pending_or_running() {
    let db = memory_db().await;
    create(&db, "running", "r", &[]).await;
    db.start_execution("running", "r", Timestamp::now())
        .await
        .unwrap();
    let at = Timestamp::from_unix_millis(1_700_000_123_456);
    assert!(
        db.finish_execution("running", ExecutionStatus::Completed, None, at, Some(12.5))
            .await
            .unwrap()
    );
    // The first end stands: a late cancel or failure does not overwrite it.
    assert!(
        !db.finish_execution(
            "running",
            ExecutionStatus::Failed,
            Some("late"),
            Timestamp::now(),
            None
        )
        .await
        .unwrap()
    );
    let record = db.get_execution("running").await.unwrap().unwrap();
    assert_eq!(record.status, ExecutionStatus::Completed);
    assert_eq!(record.finished_at, Some(at.to_rfc3339()));
    assert_eq!(record.execution_time_ms, Some(12.5));
    assert_eq!(record.error, None);

    create(&db, "pending", "r", &[]).await;
    assert!(
        db.finish_execution(
            "pending",
            ExecutionStatus::Failed,
            Some("could not be queued"),
            at,
            None
        )
        .await
        .unwrap()
    );
    let record = db.get_execution("pending").await.unwrap().unwrap();
    assert_eq!(record.status, ExecutionStatus::Failed);
    assert_eq!(record.error.as_deref(), Some("could not be queued"));
    assert_eq!(record.execution_time_ms, None);
}

#[tokio::test]
async fn a_saved_step_reads_back_whole() {
    let db = memory_db().await;
    let mut record = create(&db, "e1", "r", &["resize", "detect"]).await;
    let step = &mut record.steps[1];
    step.status = StepStatus::Completed;
    step.attempts = 3;
    step.started_at = Some(Timestamp::from_unix_millis(1_000).to_rfc3339());
    step.finished_at = Some(Timestamp::from_unix_millis(2_000).to_rfc3339());
    step.processing_time_ms = Some(1000.25);
    step.service_time_ms = Some(800.5);
    step.error = Some("first attempt timed out".into());
    step.used_fallback = true;
    step.output = Some(StepOutput {
        file_id: "f1".into(),
        bucket: "images".into(),
        object_key: "executions/e1/detect.png".into(),
        content_type: "image/png".into(),
        size_bytes: 99,
        width: 32,
        height: 16,
    });
    step.detections = vec![Detection {
        class_name: "cat".into(),
        class_id: 15,
        confidence: 0.75,
        bbox: BoundingBox {
            x1: 1.0,
            y1: 2.0,
            x2: 3.0,
            y2: 4.0,
        },
    }];
    db.save_step("e1", step).await.unwrap();
    let got = db.get_execution("e1").await.unwrap().unwrap();
    assert_eq!(to_value(&got).unwrap(), to_value(&record).unwrap());
}

#[tokio::test]
async fn closing_cancels_only_the_steps_still_open() {
    let db = memory_db().await;
    let mut record = create(&db, "e1", "r", &["a", "b", "c", "d", "e"]).await;
    let ended = [
        StepStatus::Completed,
        StepStatus::Running,
        StepStatus::Retrying,
        StepStatus::Skipped,
    ];
    for (step, status) in record.steps.iter_mut().zip(ended) {
        step.status = status;
        db.save_step("e1", step).await.unwrap();
    }
    create(&db, "other", "r", &["a"]).await;
    db.close_open_steps("e1").await.unwrap();
    let got = db.get_execution("e1").await.unwrap().unwrap();
    assert_eq!(
        step_statuses(&got),
        [
            StepStatus::Completed,
            StepStatus::Cancelled,
            StepStatus::Cancelled,
            StepStatus::Skipped,
            StepStatus::Cancelled,
        ]
    );
    let other = db.get_execution("other").await.unwrap().unwrap();
    assert_eq!(step_statuses(&other), [StepStatus::Pending]);
}

/// Seven executions, three of them created in the same millisecond.
async fn seven(db: &Db) -> Vec<String> {
    let created = [
        ("a", 5),
        ("b", 9),
        ("c", 7),
        ("d", 7),
        ("e", 7),
        ("f", 1),
        ("g", 3),
    ];
    for (id, ms) in created {
        create(db, id, "r", &["s1", "s2"]).await;
        set_ms(db, id, "created_ms", ms).await;
    }
    // Newest first, ties by id.
    ["b", "c", "d", "e", "a", "g", "f"]
        .map(String::from)
        .to_vec()
}

async fn all_pages(db: &Db, mut filter: ExecutionFilter) -> (Vec<String>, usize) {
    let (mut ids, mut pages) = (Vec::new(), 0);
    loop {
        let (page, next) = db.list_executions(&filter).await.unwrap();
        pages += 1;
        assert!(page.len() <= usize::try_from(filter.limit).unwrap());
        for record in &page {
            assert_eq!(record.steps.len(), 2, "steps come with each entry");
            ids.push(record.execution_id.clone());
        }
        match next {
            Some(cursor) => {
                assert_eq!(cursor.execution_id, page.last().unwrap().execution_id);
                filter.before = Some(cursor);
            }
            None => return (ids, pages),
        }
    }
}

#[tokio::test]
async fn pages_follow_the_cursor_through_ties() {
    let db = memory_db().await;
    let expected = seven(&db).await;
    for limit in [1, 2, 3, 7, 50] {
        let filter = ExecutionFilter {
            limit,
            ..ExecutionFilter::default()
        };
        let (ids, pages) = all_pages(&db, filter).await;
        assert_eq!(ids, expected, "limit {limit}");
        assert_eq!(
            pages,
            expected
                .len()
                .div_ceil(usize::try_from(limit).unwrap())
                .max(1)
        );
    }
    let (page, next) = db
        .list_executions(&ExecutionFilter {
            limit: 0,
            ..ExecutionFilter::default()
        })
        .await
        .unwrap();
    assert!(page.is_empty() && next.is_none());
}

#[tokio::test]
async fn the_list_filters_by_status_and_pipeline() {
    let db = memory_db().await;
    seven(&db).await;
    for id in ["c", "g"] {
        db.finish_execution(id, ExecutionStatus::Failed, None, Timestamp::now(), None)
            .await
            .unwrap();
    }
    sqlx::query("UPDATE executions SET pipeline_id = $1 WHERE execution_id IN ($2, $3, $4)")
        .bind("p1")
        .bind("a")
        .bind("c")
        .bind("d")
        .execute(&db.pool)
        .await
        .unwrap();
    let ids = |status, pipeline: Option<&str>, limit| {
        let filter = ExecutionFilter {
            status,
            pipeline_id: pipeline.map(str::to_string),
            limit,
            before: None,
        };
        let db = db.clone();
        async move { all_pages(&db, filter).await.0 }
    };
    assert_eq!(
        ids(Some(ExecutionStatus::Failed), None, 1).await,
        ["c", "g"]
    );
    assert_eq!(ids(None, Some("p1"), 2).await, ["c", "d", "a"]);
    assert_eq!(
        ids(Some(ExecutionStatus::Pending), Some("p1"), 5).await,
        ["d", "a"]
    );
    assert!(
        ids(Some(ExecutionStatus::Running), None, 5)
            .await
            .is_empty()
    );
}

#[test]
fn a_cursor_reads_back_what_it_wrote() {
    let cursor = ExecutionCursor {
        created: Timestamp::from_unix_millis(1_700_000_000_000),
        execution_id: "run.2024-01".into(),
    };
    let text = cursor.to_string();
    assert_eq!(text, "1700000000000.run.2024-01");
    assert_eq!(ExecutionCursor::parse(&text), Some(cursor));
    assert_eq!(ExecutionCursor::parse("soon.e1"), None);
    assert_eq!(ExecutionCursor::parse("123"), None);
}

#[tokio::test]
async fn a_memory_database_is_one_database() {
    // Every statement of a handle sees the same data, transactions included.
    let db = memory_db().await;
    create(&db, "e1", "r", &["s"]).await;
    assert_eq!(status_of(&db, "e1").await, ExecutionStatus::Pending);
    let other = memory_db().await;
    assert!(other.get_execution("e1").await.unwrap().is_none());
}

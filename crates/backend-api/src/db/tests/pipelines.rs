use serde_json::to_value;

use super::{definition, memory_db};

async fn place_in_time(db: &super::Db, id: &str, ms: i64) {
    sqlx::query("UPDATE pipelines SET created_ms = $1 WHERE pipeline_id = $2")
        .bind(ms)
        .bind(id)
        .execute(&db.pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_pipeline_is_stored_once_per_id() {
    let db = memory_db().await;
    let stored = db
        .insert_pipeline(&definition("p1", "first"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.revision, 1);
    assert_eq!(stored.created_at, stored.updated_at);

    let got = db.get_pipeline("p1", None).await.unwrap().unwrap();
    assert_eq!(got.revision, 1);
    assert_eq!(got.created_at, stored.created_at);
    assert_eq!(
        to_value(&got.definition).unwrap(),
        to_value(definition("p1", "first")).unwrap()
    );

    assert!(
        db.insert_pipeline(&definition("p1", "again"))
            .await
            .unwrap()
            .is_none()
    );
    let got = db.get_pipeline("p1", None).await.unwrap().unwrap();
    assert_eq!(got.definition.pipeline_name, "first");
    assert!(db.get_pipeline("nope", None).await.unwrap().is_none());
}

#[tokio::test]
async fn updates_keep_every_revision() {
    let db = memory_db().await;
    let first = db
        .insert_pipeline(&definition("p1", "v1"))
        .await
        .unwrap()
        .unwrap();
    let second = db
        .update_pipeline("p1", &definition("p1", "v2"))
        .await
        .unwrap()
        .unwrap();
    let third = db
        .update_pipeline("p1", &definition("p1", "v3"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((second.revision, third.revision), (2, 3));
    assert_eq!(third.created_at, first.created_at);

    let latest = db.get_pipeline("p1", None).await.unwrap().unwrap();
    assert_eq!(
        (latest.revision, latest.definition.pipeline_name.as_str()),
        (3, "v3")
    );
    let old = db.get_pipeline("p1", Some(1)).await.unwrap().unwrap();
    assert_eq!(
        (old.revision, old.definition.pipeline_name.as_str()),
        (1, "v1")
    );
    assert_eq!(old.updated_at, first.updated_at);
    let middle = db.get_pipeline("p1", Some(2)).await.unwrap().unwrap();
    assert_eq!(middle.definition.pipeline_name, "v2");
    assert!(db.get_pipeline("p1", Some(4)).await.unwrap().is_none());

    assert!(
        db.update_pipeline("nope", &definition("nope", "x"))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn the_list_is_newest_first_and_limited() {
    let db = memory_db().await;
    for (id, ms) in [("a", 3_000), ("b", 1_000), ("c", 2_000), ("d", 2_000)] {
        db.insert_pipeline(&definition(id, id))
            .await
            .unwrap()
            .unwrap();
        place_in_time(&db, id, ms).await;
    }
    let ids = |list: Vec<crate::model::StoredPipeline>| {
        list.into_iter()
            .map(|p| p.definition.pipeline_id.unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(db.list_pipelines(10).await.unwrap()),
        ["a", "c", "d", "b"]
    );
    assert_eq!(ids(db.list_pipelines(2).await.unwrap()), ["a", "c"]);
}

#[tokio::test]
async fn deleting_hides_a_pipeline_for_good() {
    let db = memory_db().await;
    db.insert_pipeline(&definition("p1", "v1"))
        .await
        .unwrap()
        .unwrap();
    db.insert_pipeline(&definition("p2", "v1"))
        .await
        .unwrap()
        .unwrap();
    assert!(db.delete_pipeline("p1").await.unwrap());
    assert!(!db.delete_pipeline("p1").await.unwrap());
    assert!(!db.delete_pipeline("nope").await.unwrap());

    assert!(db.get_pipeline("p1", None).await.unwrap().is_none());
    assert!(db.get_pipeline("p1", Some(1)).await.unwrap().is_none());
    assert!(
        db.update_pipeline("p1", &definition("p1", "v2"))
            .await
            .unwrap()
            .is_none()
    );
    // Ids are not reused: executions that name it keep meaning the old one.
    assert!(
        db.insert_pipeline(&definition("p1", "new"))
            .await
            .unwrap()
            .is_none()
    );
    let listed = db.list_pipelines(10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].definition.pipeline_id.as_deref(), Some("p2"));
}

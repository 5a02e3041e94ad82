use super::{file, memory_db};

#[tokio::test]
async fn files_round_trip_list_newest_first_and_delete() {
    let db = memory_db().await;
    let mut output = file("out");
    output.execution_id = Some("e1".into());
    output.filename = None;
    let records = [(file("a"), 1_000), (output, 3_000), (file("b"), 2_000)];
    for (record, ms) in &records {
        db.insert_file(record).await.unwrap();
        sqlx::query("UPDATE files SET created_ms = $1 WHERE file_id = $2")
            .bind(ms)
            .bind(&record.file_id)
            .execute(&db.pool)
            .await
            .unwrap();
    }
    for (record, _) in &records {
        assert_eq!(
            db.get_file(&record.file_id).await.unwrap().as_ref(),
            Some(record)
        );
    }
    assert!(db.get_file("missing").await.unwrap().is_none());

    let ids: Vec<String> = db
        .list_files(10)
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.file_id)
        .collect();
    assert_eq!(ids, ["out", "b", "a"]);
    assert_eq!(db.list_files(1).await.unwrap().len(), 1);

    assert!(db.delete_file("b").await.unwrap());
    assert!(!db.delete_file("b").await.unwrap());
    assert!(db.get_file("b").await.unwrap().is_none());
    assert_eq!(db.list_files(10).await.unwrap().len(), 2);
}

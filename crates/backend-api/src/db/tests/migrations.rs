use std::{path::Path, time::Duration};

use sqlx::{AnyPool, Row};

use super::status_of;
use crate::{
    db::{
        Db, ExecutionFilter, MigrationError,
        migrate::{MIGRATOR, file_name},
    },
    model::{ExecutionStatus, StepStatus},
};

/// The hand-rolled migrations as the code before `sqlx::migrate!` ran them
/// (copied from it verbatim): the databases in the field look like this.
const LEGACY_MIGRATIONS: &[(i64, &[&str])] = &[
    (
        1,
        &[
            "CREATE TABLE IF NOT EXISTS pipelines (
            pipeline_id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            revision BIGINT NOT NULL,
            definition TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            created_ms BIGINT NOT NULL,
            deleted BIGINT NOT NULL DEFAULT 0)",
            "CREATE TABLE IF NOT EXISTS pipeline_revisions (
            pipeline_id TEXT NOT NULL,
            revision BIGINT NOT NULL,
            definition TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (pipeline_id, revision))",
            "CREATE TABLE IF NOT EXISTS files (
            file_id TEXT PRIMARY KEY,
            bucket TEXT NOT NULL,
            object_key TEXT NOT NULL,
            content_type TEXT NOT NULL,
            size_bytes BIGINT NOT NULL,
            width BIGINT NOT NULL,
            height BIGINT NOT NULL,
            filename TEXT,
            execution_id TEXT,
            created_at TEXT NOT NULL,
            created_ms BIGINT NOT NULL)",
            "CREATE INDEX IF NOT EXISTS files_created ON files (created_ms)",
            "CREATE TABLE IF NOT EXISTS executions (
            execution_id TEXT PRIMARY KEY,
            pipeline_id TEXT,
            pipeline_revision BIGINT,
            definition TEXT NOT NULL,
            inputs TEXT NOT NULL,
            parameters TEXT NOT NULL,
            status TEXT NOT NULL,
            trace_id TEXT,
            error TEXT,
            owner TEXT,
            heartbeat_ms BIGINT NOT NULL,
            created_at TEXT NOT NULL,
            created_ms BIGINT NOT NULL,
            started_at TEXT,
            finished_at TEXT,
            execution_time_ms DOUBLE PRECISION)",
            "CREATE INDEX IF NOT EXISTS executions_created ON executions (created_ms)",
            "CREATE INDEX IF NOT EXISTS executions_live ON executions (status, heartbeat_ms)",
            "CREATE TABLE IF NOT EXISTS step_runs (
            execution_id TEXT NOT NULL,
            step_id TEXT NOT NULL,
            position BIGINT NOT NULL,
            component TEXT NOT NULL,
            level BIGINT NOT NULL,
            status TEXT NOT NULL,
            attempts BIGINT NOT NULL,
            started_at TEXT,
            finished_at TEXT,
            processing_time_ms DOUBLE PRECISION,
            service_time_ms DOUBLE PRECISION,
            error TEXT,
            used_fallback BIGINT NOT NULL,
            output TEXT,
            detections TEXT,
            PRIMARY KEY (execution_id, step_id))",
        ],
    ),
    (
        2,
        &["ALTER TABLE executions ADD COLUMN requeues BIGINT NOT NULL DEFAULT 0"],
    ),
];

/// Rows as the old code wrote them: a pipeline at revision 2, a file, and a
/// running execution with a completed and a running step.
const LEGACY_ROWS: &[&str] = &[
    r#"INSERT INTO pipelines VALUES ('p1', 'resize', 2, '{"pipelineId":"p1","pipelineName":"resize","version":"1.0.0","metadata":{},"steps":[{"stepId":"r","componentName":"resize","dependencies":[],"parameters":{"width":64}}],"globalParameters":{}}', '2024-05-01T10:00:00.5Z', '2024-05-02T10:00:00Z', 1714557600500, 0)"#,
    r#"INSERT INTO pipeline_revisions VALUES ('p1', 1, '{"pipelineId":"p1","pipelineName":"first","version":"1.0.0","metadata":{},"steps":[{"stepId":"r","componentName":"resize","dependencies":[],"parameters":{"width":32}}],"globalParameters":{}}', '2024-05-01T10:00:00.5Z')"#,
    r#"INSERT INTO pipeline_revisions VALUES ('p1', 2, '{"pipelineId":"p1","pipelineName":"resize","version":"1.0.0","metadata":{},"steps":[{"stepId":"r","componentName":"resize","dependencies":[],"parameters":{"width":64}}],"globalParameters":{}}', '2024-05-02T10:00:00Z')"#,
    "INSERT INTO files VALUES ('f1', 'images', 'uploads/f1.png', 'image/png', 2048, 64, 48, 'cat.png', NULL, '2024-05-01T10:00:01.123456789Z', 1714557601123)",
    r#"INSERT INTO executions (execution_id, pipeline_id, pipeline_revision, definition, inputs, parameters, status, trace_id, error, owner, heartbeat_ms, created_at, created_ms, started_at, finished_at, execution_time_ms) VALUES ('e1', 'p1', 2, '{"pipelineId":"p1","pipelineName":"resize","steps":[{"stepId":"r","componentName":"resize"}]}', '["f1"]', '{"width":64}', 'running', 'abc', NULL, 'old-replica', 1000, '2024-05-03T10:00:00Z', 1714730400000, '2024-05-03T10:00:00.1Z', NULL, NULL)"#,
    "INSERT INTO step_runs VALUES ('e1', 'r', 0, 'resize', 0, 'completed', 1, 'x', 'y', 12.5, 10.0, NULL, 0, NULL, NULL)",
    "INSERT INTO step_runs VALUES ('e1', 'b', 1, 'filter', 1, 'running', 2, 'x', NULL, NULL, NULL, 'retrying', 1, NULL, NULL)",
];

fn url(dir: &Path) -> String {
    format!("sqlite://{}/imageflow.db", dir.display())
}

async fn raw(dir: &Path) -> AnyPool {
    sqlx::any::install_default_drivers();
    AnyPool::connect(&format!("{}?mode=rwc", url(dir)))
        .await
        .unwrap()
}

/// Creates the schema as the old `Db::connect` did, up to `upto`.
async fn legacy_schema(pool: &AnyPool, upto: i64) {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at TEXT NOT NULL)")
        .execute(&mut *tx)
        .await
        .unwrap();
    for (version, statements) in LEGACY_MIGRATIONS.iter().filter(|(v, _)| *v <= upto) {
        for statement in *statements {
            sqlx::query(statement).execute(&mut *tx).await.unwrap();
        }
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(*version)
            .bind("2024-05-01T09:00:00Z")
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
}

async fn run(pool: &AnyPool, statement: &str) {
    sqlx::query(statement).execute(pool).await.unwrap();
}

/// `(version, success, checksum)` of every recorded migration.
async fn recorded(pool: &AnyPool) -> Vec<(i64, i64, Vec<u8>)> {
    // The `Any` driver does not decode SQLite's BOOLEAN: read it as a number.
    sqlx::query(
        "SELECT version, CASE WHEN success THEN 1 ELSE 0 END, checksum FROM _sqlx_migrations ORDER BY version",
    )
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

async fn adopted_with_data(upto: i64) {
    let dir = tempfile::tempdir().unwrap();
    let pool = raw(dir.path()).await;
    legacy_schema(&pool, upto).await;
    for row in LEGACY_ROWS {
        run(&pool, row).await;
    }

    // Twice: the second start finds the adoption recorded.
    for _ in 0..2 {
        let db = Db::connect(&url(dir.path()), Duration::ZERO).await.unwrap();
        let pipeline = db.get_pipeline("p1", None).await.unwrap().unwrap();
        assert_eq!(
            (
                pipeline.revision,
                pipeline.definition.pipeline_name.as_str()
            ),
            (2, "resize")
        );
        let first = db.get_pipeline("p1", Some(1)).await.unwrap().unwrap();
        assert_eq!(first.definition.pipeline_name, "first");
        let file = db.get_file("f1").await.unwrap().unwrap();
        assert_eq!(
            (file.filename.as_deref(), file.width),
            (Some("cat.png"), 64)
        );
        let execution = db.get_execution("e1").await.unwrap().unwrap();
        assert_eq!(execution.status, ExecutionStatus::Running);
        assert_eq!(execution.inputs, ["f1"]);
        let steps: Vec<_> = execution
            .steps
            .iter()
            .map(|s| (s.step_id.as_str(), s.status, s.attempts))
            .collect();
        assert_eq!(
            steps,
            [
                ("r", StepStatus::Completed, 1),
                ("b", StepStatus::Running, 2)
            ]
        );
        assert!(execution.steps[1].used_fallback);
        let (listed, _) = db
            .list_executions(&ExecutionFilter {
                limit: 10,
                ..ExecutionFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(listed.len(), 1);
        db.close().await;
    }
    // The baseline recorded as adopted, the later ones run on the old data
    // (the steps above read back through the rebuilt step table).
    let every: Vec<_> = MIGRATOR
        .iter()
        .map(|m| (m.version, 1, m.checksum.to_vec()))
        .collect();
    assert_eq!(recorded(&pool).await, every);

    // The adopted schema works as a new one: requeueing needs `requeues`.
    let db = Db::connect(&url(dir.path()), Duration::ZERO).await.unwrap();
    assert_eq!(
        db.requeue_stale(Duration::from_secs(1), 3).await.unwrap(),
        ["e1"]
    );
    assert_eq!(status_of(&db, "e1").await, ExecutionStatus::Pending);
}

#[tokio::test]
async fn a_database_of_the_hand_rolled_migrations_is_adopted_with_its_data() {
    adopted_with_data(2).await;
}

#[tokio::test]
async fn one_made_before_queue_mode_gets_its_requeue_count() {
    adopted_with_data(1).await;
}

#[tokio::test]
async fn a_new_database_records_every_migration() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&url(dir.path()), Duration::ZERO).await.unwrap();
    db.ping().await.unwrap();
    let pool = raw(dir.path()).await;
    let expected: Vec<_> = MIGRATOR
        .iter()
        .map(|m| (m.version, 1, m.checksum.to_vec()))
        .collect();
    assert_eq!(recorded(&pool).await, expected);
    let legacy: i64 =
        sqlx::query("SELECT COUNT(*) FROM sqlite_master WHERE name = 'schema_migrations'")
            .fetch_one(&pool)
            .await
            .unwrap()
            .get(0);
    assert_eq!(legacy, 0);
}

/// Connects to a database after `tamper` changed it, expecting a refusal.
async fn refused_after(tamper: &str, legacy: bool) -> MigrationError {
    let dir = tempfile::tempdir().unwrap();
    let pool = raw(dir.path()).await;
    if legacy {
        legacy_schema(&pool, 2).await;
    } else {
        Db::connect(&url(dir.path()), Duration::ZERO)
            .await
            .unwrap()
            .close()
            .await;
    }
    run(&pool, tamper).await;
    match Db::connect(&url(dir.path()), Duration::ZERO).await {
        Ok(_) => panic!("connected despite {tamper:?}"),
        Err(sqlx::Error::Configuration(err)) => *err.downcast::<MigrationError>().unwrap(),
        Err(other) => panic!("unexpected error {other}"),
    }
}

#[tokio::test]
async fn an_edited_migration_is_refused_by_name() {
    let err = refused_after(
        "UPDATE _sqlx_migrations SET checksum = X'00' WHERE version = 1",
        false,
    )
    .await;
    assert!(
        matches!(&err, MigrationError::Edited(name) if name == "0001_initial_schema.sql"),
        "{err}"
    );
    assert!(err.to_string().contains("0001_initial_schema.sql"));
}

#[tokio::test]
async fn a_half_applied_migration_is_refused_by_name() {
    let err = refused_after(
        "UPDATE _sqlx_migrations SET success = FALSE WHERE version = 1",
        false,
    )
    .await;
    assert!(
        matches!(&err, MigrationError::HalfApplied(name) if name == "0001_initial_schema.sql"),
        "{err}"
    );
}

#[tokio::test]
async fn a_migration_unknown_to_this_build_is_refused_by_number() {
    let err = refused_after(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (9999, 'from the future', TRUE, X'00', 0)",
        false,
    )
    .await;
    assert!(
        matches!(&err, MigrationError::Unknown(name) if name == "9999"),
        "{err}"
    );
    let err = refused_after("INSERT INTO schema_migrations VALUES (3, 'then')", true).await;
    assert!(
        matches!(err, MigrationError::UnknownLegacyVersion(3)),
        "{err}"
    );
}

#[test]
fn every_migration_is_named_after_its_file() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let names: Vec<String> = MIGRATOR.iter().map(file_name).collect();
    assert_eq!(
        names.first().map(String::as_str),
        Some("0001_initial_schema.sql")
    );
    for name in &names {
        assert!(dir.join(name).is_file(), "{name} is not in migrations/");
    }
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), names.len());
}

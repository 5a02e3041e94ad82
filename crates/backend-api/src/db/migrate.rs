//! The schema: `migrations/NNNN_name.sql`, embedded in the binary and applied
//! by sqlx's migrator, which records each one with its checksum in
//! `_sqlx_migrations`. A migration that was edited after it was applied, left
//! half-applied, or is unknown to this build stops the start-up with an error
//! that names its file.
//!
//! Databases made before this (by hand-rolled migrations recorded in a
//! `schema_migrations` table) hold exactly what `0001` creates; they are
//! adopted by recording `0001` as applied, without running it.

use sqlx::{
    Any, AnyPool, Row, Transaction,
    migrate::{Migrate, MigrateError, Migration, Migrator},
};

use super::DbKind;

/// Every migration of this build, in version order.
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// The table in which the hand-rolled migrations recorded their versions.
const LEGACY_TABLE: &str = "schema_migrations";

/// Versions the hand-rolled migrations could have recorded; together they
/// made what the first migration of [`MIGRATOR`] creates.
const LEGACY_VERSIONS: std::ops::RangeInclusive<i64> = 1..=2;

/// Why the schema of a database and the migrations of this build disagree.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error(
        "migration {0} is half-applied (recorded as unsuccessful in _sqlx_migrations): repair the schema by hand, then delete that row"
    )]
    HalfApplied(String),
    #[error(
        "migration {0} was edited after it was applied to this database (its checksum differs): restore the released file and put the change in a new migration"
    )]
    Edited(String),
    #[error(
        "migration {0} is recorded as applied but this build does not have it: a newer release migrated this database"
    )]
    Unknown(String),
    #[error("migration {name} failed: {source}")]
    Failed { name: String, source: sqlx::Error },
    #[error(
        "the old schema_migrations table records version {0}, which no release of the hand-rolled migrations wrote"
    )]
    UnknownLegacyVersion(i64),
}

impl From<MigrationError> for sqlx::Error {
    /// A schema that does not match the build is a deployment problem, not a
    /// query that went wrong: it travels as a configuration error.
    fn from(err: MigrationError) -> Self {
        sqlx::Error::Configuration(Box::new(err))
    }
}

/// The file a migration came from, e.g. `0001_initial_schema.sql`.
pub fn file_name(migration: &Migration) -> String {
    format!(
        "{:04}_{}.sql",
        migration.version,
        migration.description.replace(' ', "_")
    )
}

fn name_of(version: i64) -> String {
    MIGRATOR
        .iter()
        .find(|m| m.version == version)
        .map_or_else(|| format!("{version:04}"), file_name)
}

/// Names the migration in sqlx's errors that concern one.
fn explain(err: MigrateError) -> sqlx::Error {
    match err {
        MigrateError::Dirty(v) => MigrationError::HalfApplied(name_of(v)).into(),
        MigrateError::VersionMismatch(v) => MigrationError::Edited(name_of(v)).into(),
        MigrateError::VersionMissing(v) => MigrationError::Unknown(name_of(v)).into(),
        MigrateError::ExecuteMigration(source, v) => MigrationError::Failed {
            name: name_of(v),
            source,
        }
        .into(),
        other => sqlx::Error::Migrate(Box::new(other)),
    }
}

/// Brings the schema up to date: adopts a hand-rolled one, then applies
/// what is missing (sqlx locks PostgreSQL while it does, so replicas that
/// start together take turns).
pub(super) async fn run(pool: &AnyPool, kind: DbKind) -> Result<(), sqlx::Error> {
    adopt_legacy(pool, kind).await?;
    MIGRATOR.run(pool).await.map_err(explain)?;
    if let Some(last) = MIGRATOR.iter().last() {
        tracing::info!(migration = %file_name(last), "database schema up to date");
    }
    Ok(())
}

async fn adopt_legacy(pool: &AnyPool, kind: DbKind) -> Result<(), sqlx::Error> {
    let Some(baseline) = MIGRATOR.iter().next() else {
        return Ok(());
    };
    let mut tx = pool.begin().await?;
    if kind == DbKind::Postgres {
        // The key the hand-rolled migrations locked with: an old replica
        // still starting up and a new one take turns too.
        sqlx::query("SELECT pg_advisory_xact_lock(4242001)")
            .execute(&mut *tx)
            .await?;
    }
    if !table_exists(&mut tx, kind, LEGACY_TABLE).await? {
        return tx.commit().await;
    }
    let versions: Vec<i64> = sqlx::query("SELECT version FROM schema_migrations ORDER BY version")
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| r.try_get::<i64, _>(0))
        .collect::<Result<_, _>>()?;
    if let Some(v) = versions.iter().find(|v| !LEGACY_VERSIONS.contains(v)) {
        return Err(MigrationError::UnknownLegacyVersion(*v).into());
    }
    if versions.is_empty() {
        // The hand-rolled migrations wrote their first version in the
        // transaction that made the tables: there is nothing to adopt.
        return tx.commit().await;
    }
    tx.ensure_migrations_table()
        .await
        .map_err(|e| sqlx::Error::Migrate(Box::new(e)))?;
    let recorded: i64 = sqlx::query("SELECT COUNT(*) FROM _sqlx_migrations WHERE version = $1")
        .bind(baseline.version)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
    if recorded > 0 {
        return tx.commit().await;
    }
    if !versions.contains(&2) {
        // Made before queue mode: add what version 2 added, as it would have.
        sqlx::query("ALTER TABLE executions ADD COLUMN requeues BIGINT NOT NULL DEFAULT 0")
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES ($1, $2, TRUE, $3, 0)",
    )
    .bind(baseline.version)
    .bind(&*baseline.description)
    .bind(&*baseline.checksum)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(
        migration = %file_name(baseline),
        legacy_versions = ?versions,
        "adopted a schema made by the hand-rolled migrations"
    );
    Ok(())
}

async fn table_exists(
    tx: &mut Transaction<'_, Any>,
    kind: DbKind,
    table: &str,
) -> Result<bool, sqlx::Error> {
    let sql = match kind {
        DbKind::Sqlite => "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = $1",
        DbKind::Postgres => {
            "SELECT COUNT(*) FROM information_schema.tables
             WHERE table_schema = current_schema() AND table_name = $1"
        }
    };
    let count: i64 = sqlx::query(sql)
        .bind(table)
        .fetch_one(&mut **tx)
        .await?
        .try_get(0)?;
    Ok(count > 0)
}

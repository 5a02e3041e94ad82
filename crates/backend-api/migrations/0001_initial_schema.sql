-- The schema the hand-rolled migrations (versions 1 and 2 of the old
-- `schema_migrations` table) created; a database made by them is recorded as
-- having this migration applied instead of running it (see src/db/migrate.rs).
-- Released migrations are never edited: a change goes into a new file.
--
-- Portable to SQLite and PostgreSQL: TEXT, BIGINT and DOUBLE PRECISION only
-- (booleans are 0/1, JSON is TEXT, times are RFC 3339 text plus epoch
-- milliseconds where rows are compared or sorted).

CREATE TABLE pipelines (
    pipeline_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    revision BIGINT NOT NULL,
    definition TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    deleted BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE pipeline_revisions (
    pipeline_id TEXT NOT NULL,
    revision BIGINT NOT NULL,
    definition TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (pipeline_id, revision)
);

CREATE TABLE files (
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
    created_ms BIGINT NOT NULL
);

CREATE INDEX files_created ON files (created_ms);

CREATE TABLE executions (
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
    execution_time_ms DOUBLE PRECISION,
    -- Queue mode: how often the execution went back to the queue because the
    -- replica running it died, so a run that kills replicas stops somewhere.
    requeues BIGINT NOT NULL DEFAULT 0
);

CREATE INDEX executions_created ON executions (created_ms);

CREATE INDEX executions_live ON executions (status, heartbeat_ms);

CREATE TABLE step_runs (
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
    PRIMARY KEY (execution_id, step_id)
);

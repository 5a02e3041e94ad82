-- Several inputs per execution: each input runs the whole pipeline as its own
-- unit of work, so a step has one row per input (input_index joins the key)
-- and each input has a row with its own status, error and final image.
-- Existing executions had one input: their steps become input 0's.
--
-- SQLite cannot change a primary key in place, so step_runs is rebuilt.

CREATE TABLE step_runs_by_input (
    execution_id TEXT NOT NULL,
    input_index BIGINT NOT NULL,
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
    PRIMARY KEY (execution_id, input_index, step_id)
);

INSERT INTO step_runs_by_input (execution_id, input_index, step_id, position, component, level,
    status, attempts, started_at, finished_at, processing_time_ms, service_time_ms, error,
    used_fallback, output, detections)
SELECT execution_id, 0, step_id, position, component, level, status, attempts, started_at,
    finished_at, processing_time_ms, service_time_ms, error, used_fallback, output, detections
FROM step_runs;

DROP TABLE step_runs;

ALTER TABLE step_runs_by_input RENAME TO step_runs;

-- One row per input. source is the input as the request named it (a file_id
-- or s3://bucket/key); bucket and object_key are what it resolved to, so a
-- requeued execution runs on the same objects. output is the final image
-- (JSON), copied_to where outputPath copies went (JSON array).
CREATE TABLE execution_inputs (
    execution_id TEXT NOT NULL,
    position BIGINT NOT NULL,
    source TEXT NOT NULL,
    bucket TEXT NOT NULL,
    object_key TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    execution_time_ms DOUBLE PRECISION,
    error TEXT,
    output TEXT,
    copied_to TEXT,
    PRIMARY KEY (execution_id, position)
);

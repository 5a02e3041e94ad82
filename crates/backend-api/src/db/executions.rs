//! Executions and their steps: created pending, claimed (pending → running)
//! by one replica, finished once; steps saved as they progress.

use std::fmt;

use sqlx::{AnyConnection, Row, any::AnyRow};

use super::{Db, Timestamp, from_json, json, placeholders};
use crate::model::{
    ExecutionRecord, ExecutionStatus, InputResult, PipelineDefinition, StepRecord, StepStatus,
};

/// Statuses of an execution that has not ended.
pub(super) const LIVE: [ExecutionStatus; 2] = [ExecutionStatus::Pending, ExecutionStatus::Running];

/// Statuses of an input that has not ended.
const OPEN_INPUTS: [ExecutionStatus; 2] = LIVE;

/// Statuses of a step that has not ended.
const OPEN_STEPS: [StepStatus; 3] = [
    StepStatus::Pending,
    StepStatus::Running,
    StepStatus::Retrying,
];

/// Where a page of the execution list ends: the next page starts after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecutionCursor {
    pub created: Timestamp,
    pub execution_id: String,
}

impl ExecutionCursor {
    /// Reads what [`Display`](fmt::Display) wrote (`<created ms>.<execution id>`).
    pub fn parse(text: &str) -> Option<Self> {
        let (ms, id) = text.split_once('.')?;
        Some(Self {
            created: Timestamp::from_unix_millis(ms.parse().ok()?),
            execution_id: id.to_string(),
        })
    }
}

impl fmt::Display for ExecutionCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.created.unix_millis(), self.execution_id)
    }
}

/// Filters of the execution list; `before` is the cursor from the previous page.
#[derive(Clone, Debug, Default)]
pub struct ExecutionFilter {
    pub status: Option<ExecutionStatus>,
    pub pipeline_id: Option<String>,
    pub limit: i64,
    pub before: Option<ExecutionCursor>,
}

/// The columns a record is read from (`definition` and `parameters` are
/// only needed to run it: see [`Db::execution_input`]).
const EXECUTION_COLUMNS: &str = "execution_id, pipeline_id, pipeline_revision, status, trace_id, inputs, \
     created_at, created_ms, started_at, finished_at, execution_time_ms, error";

/// An execution (`e`) joined with its steps (`s`, prefixed `step_`, NULL
/// when it has none), so records and steps come in one round trip.
const RECORD_WITH_STEPS: &str = "e.execution_id, e.pipeline_id, e.pipeline_revision, e.status, e.trace_id, e.inputs, \
     e.created_at, e.created_ms, e.started_at, e.finished_at, e.execution_time_ms, e.error, \
     s.step_id AS step_id, s.input_index AS step_input_index, s.component AS step_component, s.level AS step_level, s.status AS step_status, \
     s.attempts AS step_attempts, s.started_at AS step_started_at, s.finished_at AS step_finished_at, \
     s.processing_time_ms AS step_processing_time_ms, s.service_time_ms AS step_service_time_ms, \
     s.error AS step_error, s.used_fallback AS step_used_fallback, s.output AS step_output, \
     s.detections AS step_detections";

/// The columns an [`InputResult`] is read from.
const INPUT_COLUMNS: &str = "execution_id, position, source, bucket, object_key, status, \
     started_at, finished_at, execution_time_ms, error, output, copied_to";

impl Db {
    /// Records a new execution, its inputs and their pending steps in one
    /// transaction.
    pub async fn create_execution(
        &self,
        record: &ExecutionRecord,
        definition: &PipelineDefinition,
        parameters: &serde_json::Value,
        owner: &str,
    ) -> Result<(), sqlx::Error> {
        let now = Timestamp::now().unix_millis();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO executions (execution_id, pipeline_id, pipeline_revision, definition, inputs, parameters, status, trace_id, error, owner, heartbeat_ms, created_at, created_ms, started_at, finished_at, execution_time_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, $9, $10, $11, $12, NULL, NULL, NULL)",
        )
        // Uncached: see the module note on NULL parameters.
        .persistent(false)
        .bind(&record.execution_id)
        .bind(&record.pipeline_id)
        .bind(record.pipeline_revision)
        .bind(json(definition))
        .bind(json(&record.inputs))
        .bind(json(parameters))
        .bind(record.status.as_str())
        .bind(&record.trace_id)
        .bind(owner)
        .bind(now)
        .bind(&record.created_at)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        for input in &record.input_results {
            sqlx::query(
                "INSERT INTO execution_inputs (execution_id, position, source, bucket, object_key, status)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&record.execution_id)
            .bind(i64::from(input.index))
            .bind(&input.input)
            .bind(&input.bucket)
            .bind(&input.object_key)
            .bind(input.status.as_str())
            .execute(&mut *tx)
            .await?;
        }
        let mut position = 0i64;
        let mut last_input = None;
        for step in &record.steps {
            // Positions count the plan order within each input.
            if last_input != Some(step.input_index) {
                last_input = Some(step.input_index);
                position = 0;
            }
            sqlx::query(
                "INSERT INTO step_runs (execution_id, input_index, step_id, position, component, level, status, attempts, used_fallback)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 0, 0)",
            )
            .bind(&record.execution_id)
            .bind(i64::from(step.input_index))
            .bind(&step.step_id)
            .bind(position)
            .bind(&step.component_name)
            .bind(i64::from(step.level))
            .bind(step.status.as_str())
            .execute(&mut *tx)
            .await?;
            position += 1;
        }
        tx.commit().await
    }

    /// pending → running for this owner. `false` when another replica took it
    /// or it was cancelled meanwhile.
    pub async fn start_execution(
        &self,
        id: &str,
        owner: &str,
        started_at: Timestamp,
    ) -> Result<bool, sqlx::Error> {
        Ok(sqlx::query(
            "UPDATE executions SET status = $1, owner = $2, heartbeat_ms = $3, started_at = $4
             WHERE execution_id = $5 AND status = $6",
        )
        .bind(ExecutionStatus::Running.as_str())
        .bind(owner)
        .bind(started_at.unix_millis())
        .bind(started_at.to_rfc3339())
        .bind(id)
        .bind(ExecutionStatus::Pending.as_str())
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }

    /// Records the end of an execution unless it already ended (a cancel or a
    /// reaper got there first); returns whether this call set it.
    pub async fn finish_execution(
        &self,
        id: &str,
        status: ExecutionStatus,
        error: Option<&str>,
        finished_at: Timestamp,
        execution_time_ms: Option<f64>,
    ) -> Result<bool, sqlx::Error> {
        Ok(sqlx::query(
            "UPDATE executions SET status = $1, error = $2, finished_at = $3, execution_time_ms = $4
             WHERE execution_id = $5 AND status IN ($6, $7)",
        )
        // Uncached: see the module note on NULL parameters.
        .persistent(false)
        .bind(status.as_str())
        .bind(error)
        .bind(finished_at.to_rfc3339())
        .bind(execution_time_ms)
        .bind(id)
        .bind(LIVE[0].as_str())
        .bind(LIVE[1].as_str())
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }

    /// Writes a step's progress (matched by execution, input and step id).
    pub async fn save_step(
        &self,
        execution_id: &str,
        step: &StepRecord,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE step_runs SET status = $1, attempts = $2, started_at = $3, finished_at = $4,
             processing_time_ms = $5, service_time_ms = $6, error = $7, used_fallback = $8, output = $9, detections = $10
             WHERE execution_id = $11 AND input_index = $12 AND step_id = $13",
        )
        // Uncached: see the module note on NULL parameters.
        .persistent(false)
        .bind(step.status.as_str())
        .bind(i64::from(step.attempts))
        .bind(&step.started_at)
        .bind(&step.finished_at)
        .bind(step.processing_time_ms)
        .bind(step.service_time_ms)
        .bind(&step.error)
        .bind(i64::from(step.used_fallback))
        .bind(step.output.as_ref().map(json))
        .bind((!step.detections.is_empty()).then(|| json(&step.detections)))
        .bind(execution_id)
        .bind(i64::from(step.input_index))
        .bind(&step.step_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Steps and inputs not finished when their execution ended become
    /// `cancelled`.
    pub async fn close_open_steps(&self, execution_id: &str) -> Result<(), sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        close_open_steps_of(&mut conn, &[execution_id.to_string()]).await
    }

    /// The steps of one input not finished when its run ended become `cancelled`.
    pub async fn close_open_input_steps(
        &self,
        execution_id: &str,
        input_index: u32,
    ) -> Result<(), sqlx::Error> {
        let mut query = sqlx::query(
            "UPDATE step_runs SET status = $1 WHERE status IN ($2, $3, $4)
             AND execution_id = $5 AND input_index = $6",
        )
        .bind(StepStatus::Cancelled.as_str());
        for status in OPEN_STEPS {
            query = query.bind(status.as_str());
        }
        query
            .bind(execution_id)
            .bind(i64::from(input_index))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// An input's run starts (again, after a requeue): running, nothing of a
    /// previous run left.
    pub async fn start_input(
        &self,
        execution_id: &str,
        input_index: u32,
        started_at: Timestamp,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE execution_inputs SET status = $1, started_at = $2, finished_at = NULL,
             execution_time_ms = NULL, error = NULL, output = NULL, copied_to = NULL
             WHERE execution_id = $3 AND position = $4",
        )
        .bind(ExecutionStatus::Running.as_str())
        .bind(started_at.to_rfc3339())
        .bind(execution_id)
        .bind(i64::from(input_index))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records how an input's run ended, unless it already ended (its
    /// execution was cancelled or reaped meanwhile).
    pub async fn finish_input(
        &self,
        execution_id: &str,
        input: &InputResult,
    ) -> Result<bool, sqlx::Error> {
        Ok(sqlx::query(
            "UPDATE execution_inputs SET status = $1, finished_at = $2, execution_time_ms = $3,
             error = $4, output = $5, copied_to = $6
             WHERE execution_id = $7 AND position = $8 AND status IN ($9, $10)",
        )
        // Uncached: see the module note on NULL parameters.
        .persistent(false)
        .bind(input.status.as_str())
        .bind(&input.finished_at)
        .bind(input.execution_time_ms)
        .bind(&input.error)
        .bind(input.output.as_ref().map(json))
        .bind((!input.copied_to.is_empty()).then(|| json(&input.copied_to)))
        .bind(execution_id)
        .bind(i64::from(input.index))
        .bind(OPEN_INPUTS[0].as_str())
        .bind(OPEN_INPUTS[1].as_str())
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }

    /// The inputs of an execution, in order.
    pub async fn execution_inputs(&self, id: &str) -> Result<Vec<InputResult>, sqlx::Error> {
        let mut inputs = self.inputs_of(&[id.to_string()]).await?;
        Ok(inputs.pop().map(|(_, i)| i).unwrap_or_default())
    }

    /// The inputs of `ids`, grouped by execution in the order of `ids`'s
    /// first appearance in the table (callers match them by id).
    async fn inputs_of(
        &self,
        ids: &[String],
    ) -> Result<Vec<(String, Vec<InputResult>)>, sqlx::Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {INPUT_COLUMNS} FROM execution_inputs WHERE execution_id IN ({})
             ORDER BY execution_id, position",
            placeholders(1, ids.len())
        );
        let mut query = sqlx::query(&sql);
        for id in ids {
            query = query.bind(id);
        }
        let mut grouped: Vec<(String, Vec<InputResult>)> = Vec::new();
        for row in query.fetch_all(&self.pool).await? {
            let id: String = row.try_get("execution_id")?;
            let input = input_from_row(&row)?;
            match grouped.last_mut() {
                Some((last, inputs)) if *last == id => inputs.push(input),
                _ => grouped.push((id, vec![input])),
            }
        }
        Ok(grouped)
    }

    /// Fills in each record's `input_results` (one more round trip for a
    /// whole page).
    async fn attach_inputs(&self, records: &mut [ExecutionRecord]) -> Result<(), sqlx::Error> {
        let ids: Vec<String> = records.iter().map(|r| r.execution_id.clone()).collect();
        for (id, inputs) in self.inputs_of(&ids).await? {
            if let Some(record) = records.iter_mut().find(|r| r.execution_id == id) {
                record.input_results = inputs;
            }
        }
        Ok(())
    }

    /// Who holds an execution and when it last heartbeat, in epoch ms (queue
    /// mode, to tell a duplicate delivery from a dead replica's work).
    pub async fn execution_owner(
        &self,
        id: &str,
    ) -> Result<Option<(ExecutionStatus, String, i64)>, sqlx::Error> {
        let Some(row) = sqlx::query(
            "SELECT status, owner, heartbeat_ms FROM executions WHERE execution_id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let status = execution_status(&row.try_get::<String, _>(0)?)?;
        let owner: Option<String> = row.try_get(1)?;
        let heartbeat: i64 = row.try_get(2)?;
        Ok(Some((status, owner.unwrap_or_default(), heartbeat)))
    }

    pub async fn execution_status(&self, id: &str) -> Result<Option<ExecutionStatus>, sqlx::Error> {
        sqlx::query("SELECT status FROM executions WHERE execution_id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|row| execution_status(&row.try_get::<String, _>(0)?))
            .transpose()
    }

    /// The stored definition and parameters of an execution (to run it).
    pub async fn execution_input(
        &self,
        id: &str,
    ) -> Result<Option<(PipelineDefinition, serde_json::Value)>, sqlx::Error> {
        let Some(row) =
            sqlx::query("SELECT definition, parameters FROM executions WHERE execution_id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
        else {
            return Ok(None);
        };
        Ok(Some((
            from_json(&row.try_get::<String, _>("definition")?, "definition")?,
            from_json(&row.try_get::<String, _>("parameters")?, "parameters")?,
        )))
    }

    /// An execution with its inputs and steps (by input, then plan order).
    pub async fn get_execution(&self, id: &str) -> Result<Option<ExecutionRecord>, sqlx::Error> {
        let rows = sqlx::query(&format!(
            "SELECT {RECORD_WITH_STEPS} FROM executions e
             LEFT JOIN step_runs s ON s.execution_id = e.execution_id
             WHERE e.execution_id = $1 ORDER BY s.input_index, s.position"
        ))
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let Some((record, _)) = records_from_rows(&rows)?.pop() else {
            return Ok(None);
        };
        let mut records = [record];
        self.attach_inputs(&mut records).await?;
        let [record] = records;
        Ok(Some(record))
    }

    /// Newest first (ties by id); each entry carries its steps, all in one
    /// query. The second value is the cursor of the next page, when there is one.
    pub async fn list_executions(
        &self,
        filter: &ExecutionFilter,
    ) -> Result<(Vec<ExecutionRecord>, Option<ExecutionCursor>), sqlx::Error> {
        let Ok(limit) = usize::try_from(filter.limit) else {
            return Ok((Vec::new(), None));
        };
        if limit == 0 {
            return Ok((Vec::new(), None));
        }
        let (before_ms, before_id) = filter.before.as_ref().map_or((i64::MAX, ""), |c| {
            (c.created.unix_millis(), c.execution_id.as_str())
        });
        // The page is chosen inside (one row more than asked, to tell whether
        // another page follows); its steps are joined outside.
        let rows = sqlx::query(&format!(
            "SELECT {RECORD_WITH_STEPS} FROM (
                SELECT {EXECUTION_COLUMNS} FROM executions
                WHERE ($1 = '' OR status = $1) AND ($2 = '' OR pipeline_id = $2)
                  AND (created_ms < $3 OR (created_ms = $3 AND execution_id > $4 AND $4 <> ''))
                ORDER BY created_ms DESC, execution_id LIMIT $5
             ) e
             LEFT JOIN step_runs s ON s.execution_id = e.execution_id
             ORDER BY e.created_ms DESC, e.execution_id, s.input_index, s.position"
        ))
        .bind(filter.status.map_or("", |s| s.as_str()))
        .bind(filter.pipeline_id.as_deref().unwrap_or_default())
        .bind(before_ms)
        .bind(before_id)
        .bind(filter.limit.saturating_add(1))
        .fetch_all(&self.pool)
        .await?;
        let mut page = records_from_rows(&rows)?;
        let next = if page.len() > limit {
            page.truncate(limit);
            page.last().map(|(record, created)| ExecutionCursor {
                created: *created,
                execution_id: record.execution_id.clone(),
            })
        } else {
            None
        };
        let mut records: Vec<ExecutionRecord> =
            page.into_iter().map(|(record, _)| record).collect();
        self.attach_inputs(&mut records).await?;
        Ok((records, next))
    }
}

/// Cancels the open steps and inputs of `ids` (on a pooled connection or
/// inside a transaction).
pub(super) async fn close_open_steps_of(
    executor: &mut AnyConnection,
    ids: &[String],
) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "UPDATE step_runs SET status = $1 WHERE status IN ($2, $3, $4) AND execution_id IN ({})",
        placeholders(5, ids.len())
    );
    let mut query = sqlx::query(&sql).bind(StepStatus::Cancelled.as_str());
    for status in OPEN_STEPS {
        query = query.bind(status.as_str());
    }
    for id in ids {
        query = query.bind(id);
    }
    query.execute(&mut *executor).await?;
    let sql = format!(
        "UPDATE execution_inputs SET status = $1 WHERE status IN ($2, $3) AND execution_id IN ({})",
        placeholders(4, ids.len())
    );
    let mut query = sqlx::query(&sql).bind(ExecutionStatus::Cancelled.as_str());
    for status in OPEN_INPUTS {
        query = query.bind(status.as_str());
    }
    for id in ids {
        query = query.bind(id);
    }
    query.execute(&mut *executor).await?;
    Ok(())
}

fn execution_status(text: &str) -> Result<ExecutionStatus, sqlx::Error> {
    ExecutionStatus::parse(text)
        .ok_or_else(|| sqlx::Error::Decode(format!("execution status {text:?}").into()))
}

/// Folds joined rows (ordered by execution, then step) into records, each
/// with the creation time it is ordered by.
fn records_from_rows(rows: &[AnyRow]) -> Result<Vec<(ExecutionRecord, Timestamp)>, sqlx::Error> {
    let mut records: Vec<(ExecutionRecord, Timestamp)> = Vec::new();
    for row in rows {
        let id: String = row.try_get("execution_id")?;
        if records.last().is_none_or(|(r, _)| r.execution_id != id) {
            let created = Timestamp::from_unix_millis(row.try_get("created_ms")?);
            records.push((execution_from_row(row)?, created));
        }
        if let Some(step) = step_from_row(row)?
            && let Some((record, _)) = records.last_mut()
        {
            record.steps.push(step);
        }
    }
    Ok(records)
}

fn execution_from_row(row: &AnyRow) -> Result<ExecutionRecord, sqlx::Error> {
    Ok(ExecutionRecord {
        execution_id: row.try_get("execution_id")?,
        pipeline_id: row.try_get("pipeline_id")?,
        pipeline_revision: row.try_get("pipeline_revision")?,
        status: execution_status(&row.try_get::<String, _>("status")?)?,
        trace_id: row.try_get("trace_id")?,
        inputs: from_json(&row.try_get::<String, _>("inputs")?, "inputs")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        execution_time_ms: row.try_get("execution_time_ms")?,
        error: row.try_get("error")?,
        steps: Vec::new(),
        input_results: Vec::new(),
    })
}

fn input_from_row(row: &AnyRow) -> Result<InputResult, sqlx::Error> {
    let position: i64 = row.try_get("position")?;
    let output: Option<String> = row.try_get("output")?;
    let copied_to: Option<String> = row.try_get("copied_to")?;
    Ok(InputResult {
        index: u32::try_from(position)
            .map_err(|e| sqlx::Error::Decode(format!("input position: {e}").into()))?,
        input: row.try_get("source")?,
        bucket: row.try_get("bucket")?,
        object_key: row.try_get("object_key")?,
        status: execution_status(&row.try_get::<String, _>("status")?)?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        execution_time_ms: row.try_get("execution_time_ms")?,
        error: row.try_get("error")?,
        output: output
            .as_deref()
            .map(|t| from_json(t, "input output"))
            .transpose()?,
        copied_to: copied_to
            .as_deref()
            .map(|t| from_json(t, "copied_to"))
            .transpose()?
            .unwrap_or_default(),
    })
}

/// The `step_` columns of a joined row; `None` when the execution has no steps.
fn step_from_row(row: &AnyRow) -> Result<Option<StepRecord>, sqlx::Error> {
    let Some(step_id) = row.try_get::<Option<String>, _>("step_id")? else {
        return Ok(None);
    };
    let status: String = row.try_get("step_status")?;
    let output: Option<String> = row.try_get("step_output")?;
    let detections: Option<String> = row.try_get("step_detections")?;
    let narrow = |column: &str| -> Result<i32, sqlx::Error> {
        let wide: i64 = row.try_get(column)?;
        i32::try_from(wide).map_err(|e| sqlx::Error::Decode(format!("{column}: {e}").into()))
    };
    let input_index: i64 = row.try_get("step_input_index")?;
    Ok(Some(StepRecord {
        step_id,
        input_index: u32::try_from(input_index)
            .map_err(|e| sqlx::Error::Decode(format!("step input index: {e}").into()))?,
        component_name: row.try_get("step_component")?,
        status: StepStatus::parse(&status)
            .ok_or_else(|| sqlx::Error::Decode(format!("step status {status:?}").into()))?,
        level: narrow("step_level")?,
        attempts: narrow("step_attempts")?,
        started_at: row.try_get("step_started_at")?,
        finished_at: row.try_get("step_finished_at")?,
        processing_time_ms: row.try_get("step_processing_time_ms")?,
        service_time_ms: row.try_get("step_service_time_ms")?,
        error: row.try_get("step_error")?,
        used_fallback: row.try_get::<i64, _>("step_used_fallback")? != 0,
        output: output
            .as_deref()
            .map(|t| from_json(t, "output"))
            .transpose()?,
        detections: detections
            .as_deref()
            .map(|t| from_json(t, "detections"))
            .transpose()?
            .unwrap_or_default(),
    }))
}

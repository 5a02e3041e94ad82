//! Scheduling of one input's run through the execution's DAG: a step starts
//! as soon as all its dependencies are done, and the first step that fails
//! for good ends the run.

use std::sync::Arc;

use futures::{StreamExt, stream::FuturesUnordered};
use imageflow_proto::v1::ImageData;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{
    Engine, Submission,
    run::Ending,
    step::{StepEnd, StepRunner},
};
use crate::{
    dag::{Plan, PlannedStep},
    model::{StepOutput, StepRecord, StepStatus},
};

/// The state of one input's run through the DAG.
pub(super) struct DagRun<'a> {
    engine: &'a Engine,
    id: String,
    plan: &'a Plan,
    input: &'a ImageData,
    input_index: u32,
    /// Whether the execution has several inputs (the services then keep
    /// each input's outputs in a folder of its own).
    several: bool,
    records: Vec<StepRecord>,
    images: Vec<Option<ImageData>>,
}

impl<'a> DagRun<'a> {
    pub(super) fn new(engine: &'a Engine, submission: &'a Submission, input_index: u32) -> Self {
        Self {
            engine,
            id: submission.execution_id.clone(),
            plan: &submission.plan,
            input: &submission.inputs[input_index as usize].image,
            input_index,
            several: submission.inputs.len() > 1,
            records: initial_records(&submission.plan, input_index),
            images: vec![None; submission.plan.steps.len()],
        }
    }

    /// The steps in flight, for a deadline's message.
    pub(super) fn running_names(&self) -> String {
        let names: Vec<&str> = self
            .records
            .iter()
            .filter(|r| matches!(r.status, StepStatus::Running | StepStatus::Retrying))
            .map(|r| r.step_id.as_str())
            .collect();
        if names.is_empty() {
            "no step".into()
        } else {
            format!("step(s) {}", names.join(", "))
        }
    }

    /// The last image the run wrote (the sink's, in plan order).
    pub(super) fn final_output(&self) -> Option<StepOutput> {
        self.records.iter().rev().find_map(|r| r.output.clone())
    }

    /// The images the run ends with: what each sink step (one no other step
    /// depends on) handed on, when it is not the input itself.
    pub(super) fn final_images(&self) -> Vec<ImageData> {
        let mut depended_on = vec![false; self.plan.steps.len()];
        for step in &self.plan.steps {
            for &d in &step.dependencies {
                depended_on[d] = true;
            }
        }
        let mut images: Vec<ImageData> = Vec::new();
        for (i, image) in self.images.iter().enumerate() {
            if let Some(image) = image
                && !depended_on[i]
                && image.object_key != self.input.object_key
                && !images
                    .iter()
                    .any(|seen| seen.object_key == image.object_key)
            {
                images.push(image.clone());
            }
        }
        images
    }

    /// Steps left pending or running by a failure, deadline or cancel are
    /// closed as cancelled, so no record claims work that is not happening.
    pub(super) async fn close_open_steps(&self) {
        let db = &self.engine.inner.db;
        if let Err(err) = db.close_open_input_steps(&self.id, self.input_index).await {
            tracing::warn!(error = %err, "cannot close the input's open steps");
        }
    }

    /// Starts every step whose dependencies are done, until all are done or
    /// one fails for good.
    pub(super) async fn drive(&mut self, token: &CancellationToken) -> Result<(), Ending> {
        let n = self.plan.steps.len();
        let mut waiting: Vec<usize> = self
            .plan
            .steps
            .iter()
            .map(|s| s.dependencies.len())
            .collect();
        let mut dependents = vec![Vec::new(); n];
        for (i, step) in self.plan.steps.iter().enumerate() {
            for &d in &step.dependencies {
                dependents[d].push(i);
            }
        }
        let runner = Arc::new(StepRunner::new(
            self.engine.clone(),
            self.id.clone(),
            self.input_index,
            self.several,
        ));
        let mut in_flight = FuturesUnordered::new();
        for i in (0..n).filter(|&i| waiting[i] == 0) {
            in_flight.push(self.start(i, &runner));
        }
        let mut done = 0;
        while let Some((i, record, end)) = in_flight.next().await {
            if token.is_cancelled() {
                return Err(Ending::Cancelled);
            }
            self.records[i] = record;
            match end {
                StepEnd::Failed(reason) => {
                    return Err(Ending::Failed(format!(
                        "step {:?} failed: {reason}",
                        self.plan.steps[i].definition.step_id
                    )));
                }
                StepEnd::Done { image } => {
                    self.images[i] = Some(image);
                    done += 1;
                    for &j in &dependents[i] {
                        waiting[j] -= 1;
                        if waiting[j] == 0 {
                            in_flight.push(self.start(j, &runner));
                        }
                    }
                }
            }
        }
        if done == n {
            Ok(())
        } else {
            Err(Ending::Failed(
                "internal: some steps never became ready".into(),
            ))
        }
    }

    /// The image a step works on: the execution input for a root step, else
    /// the image of its first listed dependency.
    fn start(
        &mut self,
        i: usize,
        runner: &Arc<StepRunner>,
    ) -> impl std::future::Future<Output = (usize, StepRecord, StepEnd)> + Send + 'static {
        let step = self.plan.steps[i].clone();
        let input = step
            .dependencies
            .first()
            .and_then(|&d| self.images[d].clone())
            .unwrap_or_else(|| self.input.clone());
        self.records[i].status = StepStatus::Running;
        let mut record = self.records[i].clone();
        let runner = runner.clone();
        let span = tracing::info_span!(
            "step.execute",
            step.id = %step.definition.step_id,
            step.r#type = %step.definition.component_name,
            input.index = self.input_index,
        );
        async move {
            let end = runner.run_step(&step, &input, &mut record).await;
            (i, record, end)
        }
        .instrument(span)
    }
}

fn pending_record(step: &PlannedStep, input_index: u32) -> StepRecord {
    StepRecord {
        step_id: step.definition.step_id.clone(),
        input_index,
        component_name: step.definition.component_name.clone(),
        status: StepStatus::Pending,
        level: step.level as i32,
        attempts: 0,
        started_at: None,
        finished_at: None,
        processing_time_ms: None,
        service_time_ms: None,
        error: None,
        used_fallback: false,
        output: None,
        detections: Vec::new(),
    }
}

/// Initial step records of a plan for one input (all pending).
pub fn initial_records(plan: &Plan, input_index: u32) -> Vec<StepRecord> {
    plan.steps
        .iter()
        .map(|step| pending_record(step, input_index))
        .collect()
}

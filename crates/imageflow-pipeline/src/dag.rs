//! Pipeline validation and planning: every problem is reported with the step
//! at fault, and a valid pipeline becomes a [`Plan`] whose steps know their
//! dependencies (as indices) and their level in the DAG.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use crate::{
    model::{PipelineDefinition, StepDefinition},
    registry::{self, StepCall},
};

/// Most steps one pipeline may have.
pub const MAX_STEPS: usize = 64;
const MAX_RETRIES: u32 = 10;

/// Why a pipeline was refused, naming the step when one is at fault.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct PlanError {
    pub step_id: Option<String>,
    pub message: String,
}

impl PlanError {
    fn step(step_id: &str, message: impl Into<String>) -> Self {
        Self {
            step_id: Some(step_id.to_string()),
            message: format!("step {step_id:?}: {}", message.into()),
        }
    }

    fn pipeline(message: impl Into<String>) -> Self {
        Self {
            step_id: None,
            message: message.into(),
        }
    }
}

/// The original system's path keys: `inputPath` and `outputPath` are read
/// by the backend (which also checks their buckets), `executionId` is kept
/// as given. A value of the wrong type is refused instead of being silently
/// carried along.
const GLOBAL_STRING_KEYS: [&str; 3] = ["inputPath", "outputPath", "executionId"];

fn check_global_parameters(globals: &BTreeMap<String, Value>) -> Result<(), PlanError> {
    for key in GLOBAL_STRING_KEYS {
        let kind = match globals.get(key) {
            None | Some(Value::String(_) | Value::Null) => continue,
            Some(Value::Bool(_)) => "a boolean",
            Some(Value::Number(_)) => "a number",
            Some(Value::Array(_)) => "an array",
            Some(Value::Object(_)) => "an object",
        };
        return Err(PlanError::pipeline(format!(
            "globalParameters.{key} must be a string (got {kind}): s3://bucket/key, \
             s3://bucket/prefix/, or a key or prefix/ in the default bucket"
        )));
    }
    Ok(())
}

/// A step ready to run.
#[derive(Clone, Debug)]
pub struct PlannedStep {
    pub definition: StepDefinition,
    pub call: StepCall,
    pub fallback: Option<StepCall>,
    /// Indices into [`Plan::steps`], in the order the definition lists them.
    pub dependencies: Vec<usize>,
    pub level: usize,
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub steps: Vec<PlannedStep>,
    pub levels: usize,
}

/// Execution-time overrides: `{"<stepId>": {"param": value}}`. Unknown step ids are an error.
pub type Overrides = BTreeMap<String, Value>;

/// Validates the pipeline (ids, components, parameters, retry policies,
/// dependencies, cycles) and computes levels. `overrides` replace step
/// parameters for one execution.
pub fn plan(pipeline: &PipelineDefinition, overrides: &Overrides) -> Result<Plan, PlanError> {
    if pipeline.pipeline_name.trim().is_empty() {
        return Err(PlanError::pipeline("pipelineName must not be empty"));
    }
    if pipeline.steps.is_empty() {
        return Err(PlanError::pipeline("a pipeline needs at least one step"));
    }
    if pipeline.steps.len() > MAX_STEPS {
        return Err(PlanError::pipeline(format!(
            "a pipeline has at most {MAX_STEPS} steps, this one has {}",
            pipeline.steps.len()
        )));
    }
    if let Some(t) = pipeline.timeout_seconds
        && !(t.is_finite() && t > 0.0)
    {
        return Err(PlanError::pipeline(
            "timeoutSeconds must be a positive number",
        ));
    }

    check_global_parameters(&pipeline.global_parameters)?;

    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, step) in pipeline.steps.iter().enumerate() {
        let id = step.step_id.as_str();
        if !crate::model::is_valid_id(id, 64) {
            return Err(PlanError {
                step_id: Some(id.to_string()),
                message: format!(
                    "stepId {id:?} must be 1-64 characters of letters, digits, '-', '_' or '.'"
                ),
            });
        }
        if index.insert(id, i).is_some() {
            return Err(PlanError::step(id, "duplicate stepId"));
        }
    }
    for key in overrides.keys() {
        if !index.contains_key(key.as_str()) {
            return Err(PlanError::pipeline(format!(
                "parameters name step {key:?}, which is not in the pipeline"
            )));
        }
    }

    let mut steps = Vec::with_capacity(pipeline.steps.len());
    for step in &pipeline.steps {
        let id = step.step_id.as_str();
        let mut parameters = step.parameters.clone();
        if let Some(extra) = overrides.get(id) {
            let Value::Object(extra) = extra else {
                return Err(PlanError::step(
                    id,
                    "execution parameters for a step must be an object of parameter values",
                ));
            };
            parameters.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        let call = registry::resolve(&step.component_name, &parameters)
            .map_err(|e| PlanError::step(id, e.to_string()))?;
        let fallback = match &step.fallback {
            None => None,
            Some(f) => Some(
                registry::resolve(&f.component_name, &f.parameters)
                    .map_err(|e| PlanError::step(id, format!("fallback: {e}")))?,
            ),
        };
        if let Some(policy) = &step.retry_policy {
            if policy.max_retries > MAX_RETRIES {
                return Err(PlanError::step(
                    id,
                    format!("retryPolicy.maxRetries must be 0-{MAX_RETRIES}"),
                ));
            }
            if !(1.0..=10.0).contains(&policy.backoff_factor) {
                return Err(PlanError::step(
                    id,
                    "retryPolicy.backoffFactor must be 1-10",
                ));
            }
        }
        if let Some(t) = step.timeout_seconds
            && !(t.is_finite() && t > 0.0 && t <= 3600.0)
        {
            return Err(PlanError::step(
                id,
                "timeoutSeconds must be between 0 and 3600",
            ));
        }
        let mut dependencies = Vec::with_capacity(step.dependencies.len());
        for dep in &step.dependencies {
            if dep == id {
                return Err(PlanError::step(id, "depends on itself"));
            }
            let Some(&d) = index.get(dep.as_str()) else {
                return Err(PlanError::step(
                    id,
                    format!("depends on unknown step {dep:?}"),
                ));
            };
            if dependencies.contains(&d) {
                return Err(PlanError::step(
                    id,
                    format!("lists dependency {dep:?} twice"),
                ));
            }
            dependencies.push(d);
        }
        steps.push(PlannedStep {
            definition: step.clone(),
            call,
            fallback,
            dependencies,
            level: 0,
        });
    }

    let order = topological_order(&steps).map_err(|cycle| {
        let names: Vec<&str> = cycle
            .iter()
            .map(|&i| steps[i].definition.step_id.as_str())
            .collect();
        PlanError {
            step_id: names.first().map(|s| s.to_string()),
            message: format!("cycle in dependencies: {}", names.join(" -> ")),
        }
    })?;
    let mut levels = 0;
    for i in order {
        let level = steps[i]
            .dependencies
            .iter()
            .map(|&d| steps[d].level + 1)
            .max()
            .unwrap_or(0);
        steps[i].level = level;
        levels = levels.max(level + 1);
    }
    Ok(Plan { steps, levels })
}

/// Kahn's algorithm; on a cycle, returns the steps of one cycle in order
/// (first step repeated at the end) so the message shows the loop.
fn topological_order(steps: &[PlannedStep]) -> Result<Vec<usize>, Vec<usize>> {
    let n = steps.len();
    let mut indegree = vec![0usize; n];
    let mut dependents = vec![Vec::new(); n];
    for (i, step) in steps.iter().enumerate() {
        indegree[i] = step.dependencies.len();
        for &d in &step.dependencies {
            dependents[d].push(i);
        }
    }
    let mut ready: Vec<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop() {
        order.push(i);
        for &j in &dependents[i] {
            indegree[j] -= 1;
            if indegree[j] == 0 {
                ready.push(j);
            }
        }
    }
    if order.len() == n {
        return Ok(order);
    }
    // Every step left has a dependency left: walk dependencies until one repeats.
    let start = (0..n).find(|&i| indegree[i] > 0).unwrap_or(0);
    let mut seen = vec![usize::MAX; n];
    let mut path = Vec::new();
    let mut at = start;
    while seen[at] == usize::MAX {
        seen[at] = path.len();
        path.push(at);
        at = steps[at]
            .dependencies
            .iter()
            .copied()
            .find(|&d| indegree[d] > 0)
            .unwrap_or(at);
    }
    let mut cycle = path.split_off(seen[at]);
    cycle.reverse(); // dependencies point backwards; show the flow direction
    // Start at the step defined first, so the message does not depend on the walk.
    if let Some(first) = cycle
        .iter()
        .enumerate()
        .min_by_key(|(_, i)| **i)
        .map(|(p, _)| p)
    {
        cycle.rotate_left(first);
    }
    cycle.push(cycle[0]);
    Err(cycle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pipeline(steps: Value) -> PipelineDefinition {
        serde_json::from_value(json!({"pipelineName": "t", "steps": steps})).unwrap()
    }

    fn step(id: &str, component: &str, deps: &[&str]) -> Value {
        json!({"stepId": id, "componentName": component, "dependencies": deps})
    }

    #[test]
    fn levels_group_independent_steps() {
        let p = pipeline(json!([
            step("resize", "resize", &[]),
            step("detect", "ai_detection", &["resize"]),
            step("blur", "filter", &["resize"]),
            step("final", "filter", &["detect", "blur"]),
        ]));
        let plan = plan(&p, &Overrides::new()).unwrap();
        let levels: Vec<usize> = plan.steps.iter().map(|s| s.level).collect();
        assert_eq!(levels, vec![0, 1, 1, 2]);
        assert_eq!(plan.levels, 3);
        assert_eq!(plan.steps[3].dependencies, vec![1, 2]);
    }

    #[test]
    fn global_path_keys_must_be_strings_and_other_keys_pass() {
        let with = |globals: Value| -> PipelineDefinition {
            serde_json::from_value(json!({
                "pipelineName": "t",
                "steps": [step("a", "resize", &[])],
                "globalParameters": globals,
            }))
            .unwrap()
        };
        let accepted = with(json!({
            "inputPath": "uploads/in.jpg",
            "outputPath": null,
            "executionId": "e-1",
            "anything": 5
        }));
        assert!(plan(&accepted, &Overrides::new()).is_ok());
        for (key, value, kind) in [
            ("inputPath", json!(3), "a number"),
            ("outputPath", json!({"bucket": "b"}), "an object"),
            ("executionId", json!(true), "a boolean"),
        ] {
            let err = plan(&with(json!({ key: value })), &Overrides::new()).unwrap_err();
            assert_eq!(err.step_id, None);
            assert!(
                err.message.starts_with(&format!(
                    "globalParameters.{key} must be a string (got {kind})"
                )),
                "{err}"
            );
            assert!(err.message.contains("s3://bucket/prefix/"), "{err}");
        }
    }

    #[test]
    fn problems_name_the_step() {
        let cases = [
            (json!([step("a", "sepia", &[])]), "a", "unknown component"),
            (
                json!([step("a", "resize", &["x"])]),
                "a",
                "unknown step \"x\"",
            ),
            (json!([step("a", "resize", &["a"])]), "a", "itself"),
            (
                json!([step("a", "resize", &[]), step("a", "filter", &[])]),
                "a",
                "duplicate",
            ),
            (
                json!([
                    step("a", "resize", &["c"]),
                    step("b", "filter", &["a"]),
                    step("c", "filter", &["b"])
                ]),
                "",
                "cycle",
            ),
            (
                json!([{"stepId": "a", "componentName": "resize", "parameters": {"width": "wide"}}]),
                "a",
                "integer",
            ),
            (
                json!([{"stepId": "a", "componentName": "resize", "retryPolicy": {"maxRetries": 99}}]),
                "a",
                "maxRetries",
            ),
        ];
        for (steps, at, needle) in cases {
            let err = plan(&pipeline(steps.clone()), &Overrides::new()).unwrap_err();
            assert!(err.message.contains(needle), "{steps}: {err}");
            if !at.is_empty() {
                assert_eq!(err.step_id.as_deref(), Some(at), "{steps}");
            }
        }
    }

    #[test]
    fn a_cycle_is_shown_as_a_loop() {
        let p = pipeline(json!([
            step("entry", "resize", &[]),
            step("a", "resize", &["entry", "c"]),
            step("b", "filter", &["a"]),
            step("c", "filter", &["b"]),
        ]));
        let err = plan(&p, &Overrides::new()).unwrap_err();
        let text = err.message.trim_start_matches("cycle in dependencies: ");
        let names: Vec<&str> = text.split(" -> ").collect();
        assert_eq!(names.len(), 4, "{err}");
        assert_eq!(names.first(), names.last());
        assert!(!names.contains(&"entry"), "{err}");
    }

    #[test]
    fn overrides_replace_parameters_and_must_name_real_steps() {
        let p = pipeline(json!([step("r", "resize", &[])]));
        let overrides: Overrides =
            serde_json::from_value(json!({"r": {"width": 320, "height": 0}})).unwrap();
        let plan = plan(&p, &overrides).unwrap();
        assert!(matches!(
            plan.steps[0].call,
            StepCall::Resize {
                width: 320,
                height: 0,
                ..
            }
        ));
        let bad: Overrides = serde_json::from_value(json!({"nope": {}})).unwrap();
        assert!(super::plan(&p, &bad).is_err());
    }
}

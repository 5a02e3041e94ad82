//! Arbitrary step graphs (duplicate ids, unknown or self dependencies, cycles of any
//! length, unknown components, too many steps) checked against a reference judgement
//! written independently here: `plan` accepts exactly the valid graphs, and what it
//! accepts is levelled consistently.
#![no_main]

use std::collections::{BTreeMap, HashMap, HashSet};

use arbitrary::Arbitrary;
use imageflow_pipeline::{
    dag::{MAX_STEPS, Overrides, plan},
    model::{PipelineDefinition, StepDefinition},
};
use libfuzzer_sys::fuzz_target;

const COMPONENTS: [&str; 4] = ["resize", "filter", "ai_detection", "no_such_component"];

#[derive(Arbitrary, Debug)]
struct Step {
    /// Ids come from a small space so duplicates happen.
    id: u8,
    component: u8,
    /// Dependencies name ids from a slightly larger space, so some are unknown.
    dependencies: Vec<u8>,
}

fn step_id(n: u8) -> String {
    format!("s{}", n % 96)
}

#[derive(Debug, PartialEq)]
enum Reference {
    Valid,
    /// Refused for a reason other than a cycle (ids, components, dependency names).
    Invalid,
    /// Well-formed except that the graph has a cycle (a self-dependency included).
    Cycle,
}

/// The reference: valid when ids are unique, components known, every dependency names
/// a step once, and the graph has no cycle (Kahn's algorithm empties it).
fn reference(steps: &[Step]) -> Reference {
    if steps.is_empty() || steps.len() > MAX_STEPS {
        return Reference::Invalid;
    }
    let ids: Vec<String> = steps.iter().map(|s| step_id(s.id)).collect();
    if ids.iter().collect::<HashSet<_>>().len() != ids.len() {
        return Reference::Invalid;
    }
    if steps
        .iter()
        .any(|s| usize::from(s.component) % COMPONENTS.len() == 3)
    {
        return Reference::Invalid;
    }
    let index: HashMap<&str, usize> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let mut indegree = vec![0usize; steps.len()];
    let mut dependents = vec![Vec::new(); steps.len()];
    for (i, s) in steps.iter().enumerate() {
        let names: HashSet<String> = s.dependencies.iter().map(|d| step_id(*d)).collect();
        if names.len() != s.dependencies.len() {
            return Reference::Invalid;
        }
        for d in &s.dependencies {
            let Some(&j) = index.get(step_id(*d).as_str()) else {
                return Reference::Invalid;
            };
            indegree[i] += 1;
            dependents[j].push(i);
        }
    }
    let mut ready: Vec<usize> = (0..steps.len()).filter(|&i| indegree[i] == 0).collect();
    let mut seen = 0;
    while let Some(i) = ready.pop() {
        seen += 1;
        for &k in &dependents[i] {
            indegree[k] -= 1;
            if indegree[k] == 0 {
                ready.push(k);
            }
        }
    }
    if seen == steps.len() {
        Reference::Valid
    } else {
        Reference::Cycle
    }
}

fuzz_target!(|steps: Vec<Step>| {
    let definition = PipelineDefinition {
        pipeline_id: None,
        pipeline_name: "fuzz".into(),
        version: "1".into(),
        metadata: Default::default(),
        steps: steps
            .iter()
            .map(|s| StepDefinition {
                step_id: step_id(s.id),
                component_name: COMPONENTS[usize::from(s.component) % COMPONENTS.len()].into(),
                component_version: None,
                dependencies: s.dependencies.iter().map(|d| step_id(*d)).collect(),
                parameters: BTreeMap::new(),
                resources: None,
                retry_policy: None,
                timeout_seconds: None,
                continue_on_failure: false,
                fallback: None,
            })
            .collect(),
        global_parameters: BTreeMap::new(),
        timeout_seconds: None,
    };
    let verdict = plan(&definition, &Overrides::new());
    match (reference(&steps), verdict) {
        (Reference::Valid, Ok(p)) => {
            for step in &p.steps {
                for &d in &step.dependencies {
                    assert!(p.steps[d].level < step.level);
                }
            }
        }
        (Reference::Invalid, Err(_)) => {}
        (Reference::Cycle, Err(e)) => assert!(
            e.message.contains("cycle in dependencies") || e.message.contains("depends on itself"),
            "a cyclic graph refused for another reason: {e}"
        ),
        (expected, got) => panic!("reference says {expected:?}, plan says {got:?}"),
    }
});

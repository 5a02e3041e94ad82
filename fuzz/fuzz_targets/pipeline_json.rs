//! Any bytes as a pipeline definition (the body of `POST /v1/pipelines`), then
//! validation and planning: never a panic; a plan that is accepted is a real DAG;
//! and the verdict survives a round trip through the JSON the API stores.
#![no_main]

use imageflow_pipeline::{
    dag::{Overrides, plan},
    model::PipelineDefinition,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(definition) = serde_json::from_slice::<PipelineDefinition>(data) else {
        return;
    };
    let verdict = plan(&definition, &Overrides::new());
    if let Ok(p) = &verdict {
        assert_eq!(p.steps.len(), definition.steps.len());
        for step in &p.steps {
            assert!(step.level < p.levels);
            for &d in &step.dependencies {
                assert!(
                    p.steps[d].level < step.level,
                    "a dependency runs at or after its dependent"
                );
            }
        }
    }
    // What the API stores is this definition serialised; reading it back must give the
    // same verdict, or a stored pipeline could become unrunnable.
    let stored = serde_json::to_vec(&definition).expect("a parsed definition serialises");
    let reread: PipelineDefinition = serde_json::from_slice(&stored).expect("stored JSON parses");
    let again = plan(&reread, &Overrides::new());
    assert_eq!(verdict.as_ref().err(), again.as_ref().err());
});

//! What the unit tests of the engine, the executions and liveness share: a
//! SQLite database and a file-system object store in a temporary folder, a
//! scripted fake of the services and an engine wired to them. No process,
//! no network.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use imageflow_proto::v1::ImageData;
use imageflow_storage::{BucketName, ObjectKey, StorageConfig, Store, StoreOptions};
use tokio::sync::broadcast;

use crate::{
    clients::{CallError, CallResult},
    dag,
    db::{Db, FileRecord, Timestamp},
    engine::{
        CallFuture, CallRequest, Engine, EngineParts, EngineSettings, OutputTarget, StepCaller,
        Submission, UnitInput,
    },
    events::{EventHub, ProgressEvent},
    executions::{Buckets, Resolved},
    metrics::Metrics,
    model::{ExecutionRecord, PipelineDefinition},
    registry::StepCall,
};

/// What the fake answers to one call.
#[derive(Debug, Clone)]
pub enum Reply {
    /// An output image after the delay.
    Ok(Duration),
    /// No output image (detection without drawing).
    NoImage,
    /// The status after the delay.
    Fail(Duration, tonic::Status),
    /// Never answers.
    Hang,
}

/// The test store's default bucket, and the other bucket executions may use.
pub const BUCKET: &str = "imageflow";
pub const OTHER_BUCKET: &str = "camera-drop";

/// One call the fake received.
#[derive(Debug, Clone)]
pub struct Call {
    pub key: String,
    /// object_key of the input image.
    pub input: String,
    /// What the engine said the input of a several-input execution was.
    pub input_index: Option<u32>,
    pub started: Instant,
    /// When it answered; `None` while running or when it was dropped.
    pub ended: Option<Instant>,
    /// The caller dropped it before it answered (a cancel or a deadline).
    pub dropped: bool,
}

/// The services, scripted per call key (see [`key`]); a key without a script
/// answers `Ok` at once. Outputs are named `{key}/out` (`input-{n}/{key}/out`
/// for input n of a several-input execution) and, as the real services do,
/// written to the store.
#[derive(Debug, Default)]
pub struct FakeServices {
    script: Mutex<HashMap<String, VecDeque<Reply>>>,
    calls: Mutex<Vec<Call>>,
    store: Mutex<Option<Store>>,
}

/// `resize:<width>` for a resize (tests tell steps apart by width),
/// `filter:<type>`, or `detect`.
pub fn key(call: &StepCall) -> String {
    match call {
        StepCall::Resize { width, .. } => format!("resize:{width}"),
        StepCall::Filter { filter_type, .. } => format!("filter:{filter_type}"),
        StepCall::Detect { .. } => "detect".into(),
    }
}

impl FakeServices {
    pub fn script(&self, key: &str, replies: impl IntoIterator<Item = Reply>) {
        self.script
            .lock()
            .unwrap()
            .entry(key.to_string())
            .or_default()
            .extend(replies);
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    pub fn calls_of(&self, key: &str) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.key == key).collect()
    }

    /// The next reply for `key` on the image `input`: a script for
    /// `key@input` (one input of several) comes first, then one for `key`.
    fn next(&self, key: &str, input: &str) -> Reply {
        let mut script = self.script.lock().unwrap();
        script
            .get_mut(&format!("{key}@{input}"))
            .and_then(VecDeque::pop_front)
            .or_else(|| script.get_mut(key).and_then(VecDeque::pop_front))
            .unwrap_or(Reply::Ok(Duration::ZERO))
    }
}

/// Marks its call dropped unless the call answered first.
struct DropWatch<'a> {
    fake: &'a FakeServices,
    index: usize,
    answered: bool,
}

impl Drop for DropWatch<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.fake.calls.lock().unwrap()[self.index].dropped = true;
        }
    }
}

impl StepCaller for FakeServices {
    fn call<'a>(&'a self, request: CallRequest<'a>) -> CallFuture<'a> {
        Box::pin(async move {
            let (key, input) = (key(request.call), request.input);
            let index = {
                let mut calls = self.calls.lock().unwrap();
                calls.push(Call {
                    key: key.clone(),
                    input: input.object_key.clone(),
                    input_index: request.input_index,
                    started: Instant::now(),
                    ended: None,
                    dropped: false,
                });
                calls.len() - 1
            };
            let mut watch = DropWatch {
                fake: self,
                index,
                answered: false,
            };
            let result = match self.next(&key, &input.object_key) {
                Reply::Ok(delay) => {
                    tokio::time::sleep(delay).await;
                    let object_key = match request.input_index {
                        Some(n) => format!("input-{n}/{key}/out"),
                        None => format!("{key}/out"),
                    };
                    let store = self.store.lock().unwrap().clone();
                    if let Some(store) = store {
                        store
                            .put(
                                &BucketName::parse(BUCKET).unwrap(),
                                &ObjectKey::parse(&object_key).unwrap(),
                                Bytes::from(format!("output of {key} on {}", input.object_key)),
                                "image/png",
                            )
                            .await
                            .unwrap();
                    }
                    Ok(CallResult {
                        output: Some(ImageData {
                            bucket: String::new(),
                            object_key,
                            content_type: "image/png".into(),
                            size_bytes: 10,
                            width: 4,
                            height: 3,
                            ..Default::default()
                        }),
                        service_time: Duration::from_millis(1),
                        ..Default::default()
                    })
                }
                Reply::NoImage => Ok(CallResult::default()),
                Reply::Fail(delay, status) => {
                    tokio::time::sleep(delay).await;
                    Err(CallError::from(status))
                }
                Reply::Hang => std::future::pending().await,
            };
            watch.answered = true;
            self.calls.lock().unwrap()[index].ended = Some(Instant::now());
            result
        })
    }
}

/// A status with the services' `retry-after-ms` hint.
pub fn with_hint(mut status: tonic::Status, ms: u64) -> tonic::Status {
    status
        .metadata_mut()
        .insert("retry-after-ms", ms.to_string().parse().unwrap());
    status
}

/// An engine on a fresh database and a fake of the services.
pub struct Harness {
    pub db: Db,
    pub engine: Engine,
    pub fake: Arc<FakeServices>,
    pub store: Store,
    pub input: FileRecord,
    _dir: tempfile::TempDir,
}

pub fn settings() -> EngineSettings {
    EngineSettings {
        max_parallel: 4,
        max_parallel_inputs: 4,
        max_queued: 16,
        execution_timeout: Duration::from_secs(30),
        step_timeout: None,
    }
}

impl Harness {
    pub async fn new() -> Self {
        Self::with(settings(), "replica-a").await
    }

    pub async fn with(settings: EngineSettings, owner: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/backend.db", dir.path().display());
        let db = Db::connect(&url, Duration::from_secs(5)).await.unwrap();
        let store = Store::connect(
            &StorageConfig::Fs {
                root: dir.path().join("objects"),
                default_bucket: BucketName::parse(BUCKET).unwrap(),
            },
            StoreOptions::default(),
        )
        .await
        .unwrap();
        for bucket in [BUCKET, OTHER_BUCKET] {
            store
                .ensure_bucket(&BucketName::parse(bucket).unwrap())
                .await
                .unwrap();
        }
        let fake = Arc::new(FakeServices::default());
        *fake.store.lock().unwrap() = Some(store.clone());
        let engine = Engine::new(
            EngineParts {
                db: db.clone(),
                caller: fake.clone(),
                default_bucket: BUCKET.into(),
                store: store.clone(),
                buckets: Buckets::new(BUCKET, &[OTHER_BUCKET.to_string()]),
                events: EventHub::new(),
                metrics: Metrics::new(),
                owner: owner.into(),
            },
            settings,
        );
        let input = FileRecord {
            file_id: "input-1".into(),
            bucket: "imageflow".into(),
            object_key: "uploads/input-1.png".into(),
            content_type: "image/png".into(),
            size_bytes: 100,
            width: 8,
            height: 6,
            filename: Some("input.png".into()),
            execution_id: None,
            created_at: Timestamp::now().to_rfc3339(),
        };
        db.insert_file(&input).await.unwrap();
        let harness = Self {
            db,
            engine,
            fake,
            store,
            input,
            _dir: dir,
        };
        harness.put(BUCKET, "uploads/input-1.png").await;
        harness
    }

    /// Writes a small object.
    pub async fn put(&self, bucket: &str, key: &str) {
        self.store
            .put(
                &BucketName::parse(bucket).unwrap(),
                &ObjectKey::parse(key).unwrap(),
                Bytes::from_static(b"not really an image"),
                "image/png",
            )
            .await
            .unwrap();
    }

    /// The uploaded input file, as an execution input.
    pub fn uploaded(&self) -> Resolved {
        Resolved {
            source: self.input.file_id.clone(),
            bucket: self.input.bucket.clone(),
            object_key: self.input.object_key.clone(),
        }
    }

    /// Records a pending execution of `pipeline` on the uploaded input, owned
    /// by `owner`, and returns what the engine runs.
    pub async fn record(&self, id: &str, pipeline: &PipelineDefinition, owner: &str) -> Submission {
        self.record_inputs(id, pipeline, owner, &[self.uploaded()], None)
            .await
    }

    /// Records a pending execution of `pipeline` on `inputs`.
    pub async fn record_inputs(
        &self,
        id: &str,
        pipeline: &PipelineDefinition,
        owner: &str,
        inputs: &[Resolved],
        output_target: Option<OutputTarget>,
    ) -> Submission {
        let plan = dag::plan(pipeline, &Default::default()).unwrap();
        let record = crate::executions::pending_record(id, None, None, inputs, &plan);
        self.db
            .create_execution(&record, pipeline, &serde_json::json!({}), owner)
            .await
            .unwrap();
        Submission {
            execution_id: id.into(),
            plan,
            inputs: inputs
                .iter()
                .map(|i| UnitInput {
                    source: i.source.clone(),
                    image: ImageData {
                        bucket: i.bucket.clone(),
                        object_key: i.object_key.clone(),
                        ..Default::default()
                    },
                })
                .collect(),
            output_target,
            timeout: pipeline.timeout_seconds.map(Duration::from_secs_f64),
            pipeline_id: None,
            parent: Default::default(),
            claimed: None,
        }
    }

    /// Records and runs `pipeline`, then waits for its end.
    pub async fn run(&self, id: &str, pipeline: &PipelineDefinition) -> ExecutionRecord {
        let submission = self.record(id, pipeline, self.engine.owner()).await;
        let mut events = self.engine.events().subscribe();
        self.engine.submit(submission).unwrap();
        wait_final(&mut events, id).await;
        self.execution(id).await
    }

    pub async fn execution(&self, id: &str) -> ExecutionRecord {
        self.db.get_execution(id).await.unwrap().unwrap()
    }

    /// Waits until no execution runs or waits in the engine.
    pub async fn until_idle(&self) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while self.engine.live() > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the engine's runs never ended");
    }

    /// Waits until the fake has received `n` calls in all.
    pub async fn until_calls(&self, n: usize) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while self.fake.calls().len() < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the engine never made the expected calls");
    }
}

/// Events up to and including the execution's final one.
pub async fn wait_final(
    events: &mut broadcast::Receiver<Arc<ProgressEvent>>,
    id: &str,
) -> Vec<ProgressEvent> {
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let event = events.recv().await.expect("event hub closed");
            if event.execution_id == id {
                seen.push((*event).clone());
                if event.is_final() {
                    return;
                }
            }
        }
    })
    .await
    .expect("the execution never ended");
    seen
}

/// A pipeline from its JSON steps, e.g.
/// `json!([{"stepId": "a", "componentName": "resize", "parameters": {"width": 10}}])`.
pub fn pipeline(steps: serde_json::Value) -> PipelineDefinition {
    serde_json::from_value(serde_json::json!({"pipelineName": "test", "steps": steps})).unwrap()
}

/// A resize step told apart by its width (the fake's key is `resize:<width>`).
pub fn resize(id: &str, width: u32, deps: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "stepId": id,
        "componentName": "resize",
        "dependencies": deps,
        "parameters": {"width": width, "height": 0}
    })
}

/// A queue that keeps what it is given, or refuses everything.
#[derive(Debug, Default)]
pub struct FakeQueue {
    pub sent: Mutex<Vec<imageflow_events::ExecutionRequest>>,
    pub down: bool,
}

impl crate::executions::ExecutionQueue for FakeQueue {
    fn enqueue<'a>(
        &'a self,
        request: &'a imageflow_events::ExecutionRequest,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            if self.down {
                return Err("all brokers are down".into());
            }
            self.sent.lock().unwrap().push(request.clone());
            Ok(())
        })
    }
}

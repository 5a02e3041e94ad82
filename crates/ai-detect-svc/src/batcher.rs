//! Dynamic batching: requests for one model that arrive close together run as
//! one inference (the model's batch axis is dynamic).
//!
//! One loop per model takes the first waiting request, then everything already
//! queued, and, while other requests are still being decoded (so more input is
//! on its way), waits up to the batch window for them; then it runs the batch
//! and answers each request with its slice of the output. A lone request never
//! waits: with nothing else in flight it runs at once. Requests that queue up
//! while an inference runs share the next one.

use std::{
    ops::{Deref, Range},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use imageflow_service::{BlockingDoor, ServiceError};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::{
    catalog::ModelSpec,
    memory,
    onnx::{OnnxModel, RawOutput},
    triton::TritonClient,
};

/// Where a model's batches run.
#[derive(Clone, Debug)]
pub enum Engine {
    Onnx(Arc<OnnxModel>),
    Triton(TritonClient),
}

/// One image's share of a batch.
#[derive(Debug)]
pub struct Inference {
    /// `[4 + classes, anchors]` for this image.
    pub output: ImageOutput,
    pub anchors: usize,
    /// Time of the whole batch's inference.
    pub inference: Duration,
    /// From queueing to the start of the batch.
    pub queued: Duration,
    pub batch_size: usize,
}

/// One image's rows of a batch's output, read in place (the batch's requests
/// share it; it goes when the last of them is done).
#[derive(Clone, Debug)]
pub struct ImageOutput {
    batch: Arc<RawOutput>,
    range: Range<usize>,
}

impl Deref for ImageOutput {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        &self.batch.data()[self.range.clone()]
    }
}

struct Job {
    input: Vec<f32>,
    deadline: Instant,
    enqueued: Instant,
    reply: oneshot::Sender<Result<Inference, ServiceError>>,
    /// The request's span: the batch's inference span joins its trace.
    span: tracing::Span,
}

/// The batching front of one model. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Batcher {
    jobs: mpsc::UnboundedSender<Job>,
    /// Requests decoding their image for this model right now.
    incoming: Arc<AtomicUsize>,
}

/// Held while a request prepares its input, so the batch loop knows more is
/// coming; released on drop (also when the request fails or is cancelled).
#[derive(Debug)]
pub struct Incoming(Arc<AtomicUsize>);

impl Drop for Incoming {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Clone, Copy, Debug)]
pub struct BatchPolicy {
    pub window: Duration,
    pub max_batch: usize,
    /// After this long without a request the model hands memory back
    /// ([`release_idle`]); `None`: never.
    pub idle_release: Option<Duration>,
}

impl Batcher {
    /// Starts the batch loop of one model; it ends when the last clone of the
    /// returned batcher is dropped.
    pub fn spawn(
        spec: Arc<ModelSpec>,
        engine: Engine,
        door: BlockingDoor,
        policy: BatchPolicy,
    ) -> Self {
        let (jobs, queue) = mpsc::unbounded_channel();
        let incoming = Arc::new(AtomicUsize::new(0));
        tokio::spawn(batch_loop(
            queue,
            incoming.clone(),
            spec,
            engine,
            door,
            policy,
        ));
        Self { jobs, incoming }
    }

    /// Announces a request that will call [`Batcher::infer`] soon.
    pub fn incoming(&self) -> Incoming {
        self.incoming.fetch_add(1, Ordering::SeqCst);
        Incoming(self.incoming.clone())
    }

    /// Queues one image's input tensor and waits for its output.
    pub async fn infer(
        &self,
        input: Vec<f32>,
        deadline: Instant,
        announced: Incoming,
    ) -> Result<Inference, ServiceError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            input,
            deadline,
            enqueued: Instant::now(),
            reply,
            span: tracing::Span::current(),
        };
        let sent = self.jobs.send(job);
        drop(announced);
        sent.map_err(|_| {
            ServiceError::Unavailable("the model's batch loop has stopped (shutting down)".into())
        })?;
        answer
            .await
            .map_err(|_| ServiceError::Internal("the batch loop dropped a request".into()))?
    }
}

async fn batch_loop(
    mut queue: mpsc::UnboundedReceiver<Job>,
    incoming: Arc<AtomicUsize>,
    spec: Arc<ModelSpec>,
    engine: Engine,
    door: BlockingDoor,
    policy: BatchPolicy,
) {
    // Whether memory went back since the last batch: once per quiet spell.
    let mut released = true;
    loop {
        let first = match policy.idle_release.filter(|_| !released) {
            None => queue.recv().await,
            Some(idle) => match tokio::time::timeout(idle, queue.recv()).await {
                Ok(job) => job,
                Err(_) => {
                    release_idle(&engine, &spec, &door).await;
                    released = true;
                    continue;
                }
            },
        };
        let Some(first) = first else { break };
        released = false;
        let mut jobs = vec![first];
        while jobs.len() < policy.max_batch {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        // Wait for requests still decoding, up to the window; a lone request
        // (nothing incoming) runs at once.
        let until = tokio::time::Instant::now() + policy.window;
        while jobs.len() < policy.max_batch && incoming.load(Ordering::SeqCst) > 0 {
            let now = tokio::time::Instant::now();
            if now >= until {
                break;
            }
            let step = (until - now).min(Duration::from_micros(250));
            if let Ok(Some(job)) = tokio::time::timeout(step, queue.recv()).await {
                jobs.push(job);
            }
        }
        let now = Instant::now();
        jobs.retain(|job| !job.reply.is_closed());
        let (live, late): (Vec<Job>, Vec<Job>) =
            jobs.into_iter().partition(|job| job.deadline > now);
        for job in late {
            let _ = job.reply.send(Err(ServiceError::DeadlineExceeded(
                job.deadline - job.enqueued,
            )));
        }
        if !live.is_empty() {
            run_batch(live, &spec, &engine).await;
        }
    }
}

async fn run_batch(jobs: Vec<Job>, spec: &Arc<ModelSpec>, engine: &Engine) {
    let started = Instant::now();
    let batch = jobs.len();
    let deadline = jobs.iter().map(|j| j.deadline).max().unwrap_or(started);
    let mut replies = Vec::with_capacity(batch);
    // The batch size the engine runs these images at (on CUDA, padded to a
    // fixed shape).
    let shape = match engine {
        Engine::Onnx(model) => model.batch_shape(batch),
        Engine::Triton(_) => batch,
    };
    let mut input = Vec::with_capacity(if shape == 1 {
        0
    } else {
        shape * spec.image_len()
    });
    let requests: Vec<tracing::Span> = jobs.iter().map(|j| j.span.clone()).collect();
    let backend = match engine {
        Engine::Onnx(_) => "onnxruntime",
        Engine::Triton(_) => "triton",
    };
    let span = imageflow_telemetry::spans::inference(&spec.name, backend, batch, &requests);
    drop(requests);
    for job in jobs {
        replies.push((job.reply, started.saturating_duration_since(job.enqueued)));
        if shape == 1 {
            input = job.input;
        } else {
            input.extend_from_slice(&job.input);
        }
    }
    input.resize(shape * spec.image_len(), 0.0);
    let result = infer(engine, spec, input, shape, deadline)
        .instrument(span.clone())
        .await;
    match &result {
        Ok((_, inference)) => {
            imageflow_telemetry::global_metric!(
                histogram_vec,
                "ai_model_inference_duration_seconds",
                "model inference time of one batch, by model and backend",
                &["model", "backend"],
            )
            .observe(&[spec.name.as_str(), backend], *inference);
        }
        Err(err) => imageflow_telemetry::spans::record_error(&span, err),
    }
    let outcome = result.and_then(|(raw, inference)| {
        let anchors = check_shape(&raw, spec, shape)?;
        Ok((Arc::new(raw), anchors, inference))
    });
    match outcome {
        Ok((raw, anchors, inference)) => {
            let per_image = raw.data().len() / shape;
            for (i, (reply, queued)) in replies.into_iter().enumerate() {
                let output = ImageOutput {
                    batch: raw.clone(),
                    range: i * per_image..(i + 1) * per_image,
                };
                let _ = reply.send(Ok(Inference {
                    output,
                    anchors,
                    inference,
                    queued,
                    batch_size: batch,
                }));
            }
        }
        Err(err) => {
            tracing::warn!(model = %spec.name, batch, error = %err, "batch failed");
            for (reply, _) in replies {
                let _ = reply.send(Err(copy_error(&err)));
            }
        }
    }
}

/// How long an idle release waits for a blocking worker before giving up (the
/// pool is busy: the service is not idle after all).
const IDLE_RELEASE_WAIT: Duration = Duration::from_secs(5);

/// After a quiet spell, hands back what the last burst grew: ONNX Runtime keeps
/// its activation arena at the largest batch's size (hundreds of MB after
/// batches of eight) until a run asks it to shrink ([`OnnxModel::settle`]), and
/// glibc keeps freed pages until trimmed. Paid once per quiet spell.
async fn release_idle(engine: &Engine, spec: &ModelSpec, door: &BlockingDoor) {
    let (name, h, w) = (spec.name.clone(), spec.input_height, spec.input_width);
    let released = match engine {
        Engine::Onnx(model) => model
            .on_thread(move |model| {
                if let Err(error) = model.settle(h, w) {
                    tracing::warn!(model = %name, %error, "idle: the arena-shrinking run failed");
                }
            })
            .await
            .is_ok(),
        Engine::Triton(_) => door
            .run(Instant::now() + IDLE_RELEASE_WAIT, memory::release_freed)
            .await
            .is_ok(),
    };
    if released {
        imageflow_telemetry::global_metric!(
            counter_vec,
            "ai_model_idle_releases_total",
            "times a model, idle for IDLE_RELEASE_SECS, handed back the memory its last burst grew",
            &["model"],
        )
        .inc(&[spec.name.as_str()]);
        tracing::debug!(model = %spec.name, "idle: memory handed back");
    }
}

async fn infer(
    engine: &Engine,
    spec: &Arc<ModelSpec>,
    input: Vec<f32>,
    batch: usize,
    deadline: Instant,
) -> Result<(RawOutput, Duration), ServiceError> {
    match engine {
        Engine::Onnx(model) => {
            let (h, w) = (spec.input_height, spec.input_width);
            model
                .on_thread(move |model| {
                    let started = Instant::now();
                    model
                        .run(&input, batch, h, w)
                        .map(|raw| (raw, started.elapsed()))
                })
                .await
                .map_err(ServiceError::Internal)?
                .map_err(ServiceError::Internal)
        }
        Engine::Triton(client) => {
            let started = Instant::now();
            let timeout = deadline.saturating_duration_since(started);
            let raw = client
                .infer(spec, &input, batch, timeout)
                .await
                .map_err(|e| ServiceError::Unavailable(e.to_string()))?;
            Ok((raw, started.elapsed()))
        }
    }
}

/// The output must be `[batch, 4 + classes, anchors]`; returns `anchors`.
fn check_shape(raw: &RawOutput, spec: &ModelSpec, batch: usize) -> Result<usize, ServiceError> {
    let rows = 4 + spec.class_names.len();
    match raw.shape.as_slice() {
        [n, r, anchors]
            if *n == batch as i64
                && *r == rows as i64
                && *anchors > 0
                && raw.data().len() == batch * rows * *anchors as usize =>
        {
            Ok(*anchors as usize)
        }
        other => Err(ServiceError::Internal(format!(
            "model {} answered shape {other:?} with {} values; expected [{batch}, {rows}, anchors] (a YOLOv8/YOLO11 detection head with {} classes)",
            spec.name,
            raw.data().len(),
            spec.class_names.len()
        ))),
    }
}

/// `ServiceError` is not `Clone`; every request of a failed batch gets the
/// same kind of error.
fn copy_error(err: &ServiceError) -> ServiceError {
    match err {
        ServiceError::InvalidArgument(m) => ServiceError::InvalidArgument(m.clone()),
        ServiceError::NotFound(m) => ServiceError::NotFound(m.clone()),
        ServiceError::PermissionDenied(m) => ServiceError::PermissionDenied(m.clone()),
        ServiceError::ResourceExhausted { limit, retry_after } => ServiceError::ResourceExhausted {
            limit: *limit,
            retry_after: *retry_after,
        },
        ServiceError::Unavailable(m) => ServiceError::Unavailable(m.clone()),
        ServiceError::DeadlineExceeded(d) => ServiceError::DeadlineExceeded(*d),
        ServiceError::Cancelled(m) => ServiceError::Cancelled(m.clone()),
        ServiceError::Internal(m) => ServiceError::Internal(m.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(classes: usize) -> ModelSpec {
        ModelSpec {
            name: "m".into(),
            path: "m.onnx".into(),
            version: "1".into(),
            class_names: (0..classes).map(|i| format!("c{i}")).collect(),
            input_name: "images".into(),
            output_name: "output0".into(),
            input_width: 4,
            input_height: 4,
        }
    }

    #[test]
    fn output_shape_is_checked() {
        let raw = RawOutput::new(vec![0.0; 2 * 6 * 3], vec![2, 6, 3]);
        assert_eq!(check_shape(&raw, &spec(2), 2).unwrap(), 3);
        assert!(check_shape(&raw, &spec(3), 2).is_err());
        assert!(check_shape(&raw, &spec(2), 1).is_err());
        let short = RawOutput::new(vec![0.0; 5], vec![2, 6, 3]);
        assert!(check_shape(&short, &spec(2), 2).is_err());
    }
}

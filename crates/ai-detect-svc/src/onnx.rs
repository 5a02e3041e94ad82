//! In-process inference with ONNX Runtime through `ort`, loading the shared
//! library at run time (`load-dynamic`) from `ORT_DYLIB_PATH`.
//!
//! ONNX Runtime allows one environment per process, so it is created once and
//! shared by every model (and every service instance in a test process).

use std::{
    panic::AssertUnwindSafe,
    path::Path,
    sync::{Arc, Mutex, OnceLock, mpsc},
    time::Instant,
};

use ort::{
    environment::Environment,
    logging::LogLevel,
    session::{RunOptions, Session, builder::GraphOptimizationLevel},
    value::{DynValue, TensorRef},
};

use crate::{
    catalog::ModelSpec,
    config::{DetectConfig, ExecutionProvider},
};

static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();

/// Loads the library (once per process) and creates the environment.
fn environment(dylib: &Path) -> Result<&'static Environment, String> {
    ENVIRONMENT
        .get_or_init(|| {
            if !dylib.exists() {
                return Err(format!(
                    "ORT_DYLIB_PATH: {} does not exist (run scripts/setup.sh, which installs the ONNX Runtime library from the PyPI onnxruntime wheel)",
                    dylib.display()
                ));
            }
            let builder = ort::init_from(dylib).map_err(|e| format!("ORT_DYLIB_PATH: {e}"))?;
            let env = builder
                .with_name("ai-detect-svc")
                .build()
                .map_err(|e| format!("ONNX Runtime environment: {e}"))?;
            // ONNX Runtime narrates every graph rewrite at info level.
            env.set_log_level(LogLevel::Warning);
            Ok(env)
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// One loaded model. `Session::run` takes `&mut self` (ONNX Runtime's EP
/// allocators are not thread-safe); the batcher runs one batch at a time per
/// model anyway, so the lock is never contended.
#[derive(Debug)]
pub struct OnnxModel {
    session: Mutex<Session>,
    input_name: String,
    output_name: String,
    /// The provider in use: `CPUExecutionProvider` or `CUDAExecutionProvider`.
    pub provider: &'static str,
    /// The model's own thread ([`OnnxModel::on_thread`]).
    thread: mpsc::Sender<Job>,
}

type Job = Box<dyn FnOnce() + Send>;

/// What one inference returns: the output tensor and its shape.
pub struct RawOutput {
    data: OutputData,
    pub shape: Vec<i64>,
}

enum OutputData {
    Owned(Vec<f32>),
    /// ONNX Runtime's own output tensor, read in place: copying it cost
    /// 45 ms per batch of 32 (a fresh 90 MB allocation faulted in page by page).
    Ort(DynValue),
}

impl RawOutput {
    pub fn new(data: Vec<f32>, shape: Vec<i64>) -> Self {
        Self {
            data: OutputData::Owned(data),
            shape,
        }
    }

    pub fn data(&self) -> &[f32] {
        match &self.data {
            OutputData::Owned(data) => data,
            // Checked to be f32 when it was made.
            OutputData::Ort(value) => value
                .try_extract_tensor::<f32>()
                .map_or(&[], |(_, data)| data),
        }
    }
}

impl std::fmt::Debug for RawOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawOutput")
            .field("shape", &self.shape)
            .field("values", &self.data().len())
            .finish()
    }
}

impl OnnxModel {
    /// Loads `spec` (blocking: call it through the blocking door or at start).
    pub fn load(spec: &ModelSpec, config: &DetectConfig) -> Result<Self, String> {
        let env = environment(&config.ort_dylib_path)?;
        let fail = |e: ort::Error| format!("model {}: {e}", spec.path.display());
        let (session, provider) = match config.execution_provider {
            ExecutionProvider::Cpu => (
                cpu_session(env, spec, config).map_err(fail)?,
                "CPUExecutionProvider",
            ),
            ExecutionProvider::Cuda => match cuda_session(env, spec, config) {
                Ok(session) => (session, "CUDAExecutionProvider"),
                Err(reason) => {
                    tracing::warn!(model = %spec.name, %reason, "CUDA execution provider unavailable; falling back to the CPU");
                    (
                        cpu_session(env, spec, config).map_err(fail)?,
                        "CPUExecutionProvider",
                    )
                }
            },
        };
        let input_name = session
            .inputs()
            .first()
            .map(|i| i.name().to_string())
            .ok_or_else(|| format!("model {}: no input", spec.name))?;
        let output_name = session
            .outputs()
            .first()
            .map(|o| o.name().to_string())
            .ok_or_else(|| format!("model {}: no output", spec.name))?;
        let (thread, jobs) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name(format!("infer-{}", spec.name))
            .spawn(move || {
                for job in jobs {
                    // A panic poisons the session's lock, so the next run
                    // reports it; the thread stays for the ones after.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                }
            })
            .map_err(|e| format!("model {}: inference thread: {e}", spec.name))?;
        Ok(Self {
            session: Mutex::new(session),
            input_name,
            output_name,
            provider,
            thread,
        })
    }

    /// Runs `work` on this model's own thread and waits for it. Every
    /// inference of a model runs on that one thread: ONNX Runtime's CUDA
    /// provider sets up its cuBLAS and cuDNN state once per calling thread, and
    /// a shared pool would hand each batch to whichever thread is free (on an
    /// H200, batches through the blocking pool took 1.6 s instead of 12 ms).
    pub async fn on_thread<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&OnnxModel) -> T + Send + 'static,
    ) -> Result<T, String> {
        let (done, result) = tokio::sync::oneshot::channel();
        let model = self.clone();
        self.thread
            .send(Box::new(move || {
                let _ = done.send(work(&model));
            }))
            .map_err(|_| "the model's inference thread has stopped".to_string())?;
        result
            .await
            .map_err(|_| "the inference panicked".to_string())
    }

    /// Readies the model before it serves. On the CPU that is [`Self::settle`].
    /// The CUDA provider also picks its convolution algorithms per input
    /// shape on the first run of each, so every batch size up to `max_batch`
    /// runs once here, not in a request's time.
    pub fn warm_up(
        &self,
        name: &str,
        height: u32,
        width: u32,
        max_batch: usize,
    ) -> Result<(), String> {
        let started = Instant::now();
        let batches = if self.provider == "CUDAExecutionProvider" {
            max_batch.max(1)
        } else {
            1
        };
        if batches > 1 {
            let zeros = vec![0.0; batches * 3 * height as usize * width as usize];
            for batch in 2..=batches {
                let len = batch * 3 * height as usize * width as usize;
                self.run(&zeros[..len], batch, height, width)?;
            }
        }
        self.settle(height, width)?;
        tracing::info!(model = %name, provider = self.provider, batch_sizes = batches, elapsed_ms = started.elapsed().as_secs_f64() * 1000.0, "model warmed up");
        Ok(())
    }

    /// Runs a `[batch, 3, height, width]` input (blocking).
    pub fn run(
        &self,
        input: &[f32],
        batch: usize,
        height: u32,
        width: u32,
    ) -> Result<RawOutput, String> {
        self.run_with(input, batch, height, width, None)
    }

    /// One inference on zeros that hands the activation arena back when it ends
    /// (ONNX Runtime's arena shrinkage). At start it is the warm-up: everything
    /// the first run sets up (kernels chosen, weights prepacked) stays, and an idle
    /// service holds the model, not a 640x640 image's intermediate tensors. After
    /// a quiet spell it returns what the last burst's batches grew. Then glibc's
    /// heap is trimmed, or the freed arena would stay resident there. The next
    /// request grows the arena again.
    pub fn settle(&self, height: u32, width: u32) -> Result<(), String> {
        let zeros = vec![0.0; 3 * height as usize * width as usize];
        let mut options = RunOptions::new().map_err(|e| format!("run options: {e}"))?;
        options
            .set("memory.enable_memory_arena_shrinkage", self.arena_device())
            .map_err(|e| format!("run options: {e}"))?;
        let ran = self
            .run_with(&zeros, 1, height, width, Some(&options))
            .map(|_| ());
        drop(zeros);
        crate::memory::release_freed();
        ran
    }

    /// The arena shrinkage setting's name for this model's device.
    fn arena_device(&self) -> &'static str {
        if self.provider == "CUDAExecutionProvider" {
            "cpu:0;gpu:0"
        } else {
            "cpu:0"
        }
    }

    fn run_with(
        &self,
        input: &[f32],
        batch: usize,
        height: u32,
        width: u32,
        options: Option<&RunOptions>,
    ) -> Result<RawOutput, String> {
        let shape = vec![batch as i64, 3, i64::from(height), i64::from(width)];
        let tensor =
            TensorRef::from_array_view((shape, input)).map_err(|e| format!("input tensor: {e}"))?;
        let mut session = self
            .session
            .lock()
            .map_err(|_| "a previous inference panicked".to_string())?;
        let inputs = ort::inputs![self.input_name.as_str() => tensor];
        let mut outputs = match options {
            Some(options) => session.run_with_options(inputs, options),
            None => session.run(inputs),
        }
        .map_err(|e| format!("inference: {e}"))?;
        let output = outputs
            .remove(&self.output_name)
            .ok_or_else(|| format!("output {} missing", self.output_name))?;
        let (shape, _) = output
            .try_extract_tensor::<f32>()
            .map_err(|e| format!("output {}: {e}", self.output_name))?;
        Ok(RawOutput {
            shape: shape.iter().copied().collect(),
            data: OutputData::Ort(output),
        })
    }
}

fn cpu_session(env: &Environment, spec: &ModelSpec, config: &DetectConfig) -> ort::Result<Session> {
    Session::builder(env)?
        .with_log_level(LogLevel::Warning)?
        .with_optimization_level(GraphOptimizationLevel::All)?
        .with_intra_threads(config.intra_op_threads)?
        .commit_from_file(&spec.path)
}

#[cfg(feature = "cuda")]
fn cuda_session(
    env: &Environment,
    spec: &ModelSpec,
    config: &DetectConfig,
) -> Result<Session, String> {
    use ort::ep::ExecutionProvider as _;
    if !ort::ep::CUDA::is_available().unwrap_or(false) {
        return Err("this ONNX Runtime library has no CUDA execution provider (use the onnxruntime-gpu wheel's library)".into());
    }
    let build = || -> ort::Result<Session> {
        Session::builder(env)?
            .with_log_level(LogLevel::Warning)?
            .with_optimization_level(GraphOptimizationLevel::All)?
            .with_intra_threads(config.intra_op_threads)?
            .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])?
            .commit_from_file(&spec.path)
    };
    build().map_err(|e| e.to_string())
}

#[cfg(not(feature = "cuda"))]
fn cuda_session(_: &Environment, _: &ModelSpec, _: &DetectConfig) -> Result<Session, String> {
    Err("this binary was built without the `cuda` feature (cargo build --features cuda)".into())
}

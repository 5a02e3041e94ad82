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
/// model anyway, so the locks are never contended.
#[derive(Debug)]
pub struct OnnxModel {
    /// On the CPU, one session for every batch size. On CUDA, one session per
    /// batch shape ([`batch_shapes`]), each only ever run at its shape: ONNX
    /// Runtime's CUDA convolutions (cuDNN 9's frontend) keep the plan of the
    /// last input shape only and build a new one, with its algorithm search,
    /// whenever the shape changes. Batches of changing sizes on one session
    /// took 1.4 s each on an H200 instead of 8 ms.
    sessions: Vec<Shaped>,
    input_name: String,
    output_name: String,
    /// The provider in use: `CPUExecutionProvider` or `CUDAExecutionProvider`.
    pub provider: &'static str,
    /// The devices whose arenas [`Self::settle`] shrinks (ONNX Runtime's
    /// `memory.enable_memory_arena_shrinkage` list); `None` when the session
    /// has no arena (`CPU_MEMORY_ARENA=false`), which ONNX Runtime refuses to
    /// shrink.
    arenas: Option<&'static str>,
    /// The model's own thread ([`OnnxModel::on_thread`]).
    thread: mpsc::Sender<Job>,
}

type Job = Box<dyn FnOnce() + Send>;

#[derive(Debug)]
struct Shaped {
    /// The batch size this session runs; `None`: any.
    batch: Option<usize>,
    session: Mutex<Session>,
}

/// The batch shapes a CUDA model is run at: powers of two up to `max_batch`,
/// and `max_batch` itself. A batch runs at the smallest shape that holds it,
/// padded with zeros: at most twice the images' work, on a GPU that has it
/// to spare, against a new cuDNN plan for every new size.
pub fn batch_shapes(max_batch: usize) -> Vec<usize> {
    let max_batch = max_batch.max(1);
    let mut shapes: Vec<usize> = std::iter::successors(Some(1usize), |n| n.checked_mul(2))
        .take_while(|&n| n < max_batch)
        .collect();
    shapes.push(max_batch);
    shapes
}

/// What one inference returns: the output tensor and its shape.
pub struct RawOutput {
    data: OutputData,
    pub shape: Vec<i64>,
    /// How many values belong to the images asked about (fewer than the
    /// tensor holds when the batch was padded).
    len: usize,
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
            len: data.len(),
            data: OutputData::Owned(data),
            shape,
        }
    }

    pub fn data(&self) -> &[f32] {
        let all = match &self.data {
            OutputData::Owned(data) => data,
            // Checked to be f32 when it was made.
            OutputData::Ort(value) => value
                .try_extract_tensor::<f32>()
                .map_or(&[][..], |(_, data)| data),
        };
        &all[..self.len.min(all.len())]
    }

    /// Keeps the first `images` of a padded batch.
    fn first(mut self, images: usize) -> Self {
        if let Some(&rows) = self.shape.first()
            && rows > 0
            && (images as i64) < rows
        {
            self.len = self.len / rows as usize * images;
            self.shape[0] = images as i64;
        }
        self
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
        let cpu_arenas = config.cpu_memory_arena.then_some("cpu:0");
        let (sessions, provider, arenas) = match config.execution_provider {
            ExecutionProvider::Cpu => (
                vec![Shaped::any(cpu_session(env, spec, config).map_err(fail)?)],
                "CPUExecutionProvider",
                cpu_arenas,
            ),
            ExecutionProvider::Cuda => match cuda_sessions(env, spec, config) {
                // The CUDA sessions keep ONNX Runtime's default arenas.
                Ok(sessions) => (sessions, "CUDAExecutionProvider", Some("cpu:0;gpu:0")),
                Err(reason) => {
                    tracing::warn!(model = %spec.name, %reason, "CUDA execution provider unavailable; falling back to the CPU");
                    (
                        vec![Shaped::any(cpu_session(env, spec, config).map_err(fail)?)],
                        "CPUExecutionProvider",
                        cpu_arenas,
                    )
                }
            },
        };
        let session = sessions[0]
            .session
            .lock()
            .map_err(|_| "a session lock was poisoned while loading".to_string())?;
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
        drop(session);
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
            sessions,
            input_name,
            output_name,
            provider,
            arenas,
            thread,
        })
    }

    /// Runs `work` on this model's own thread and waits for it. Every
    /// inference of a model runs on that one thread: ONNX Runtime's CUDA
    /// provider keeps its cuBLAS and cuDNN state per calling thread (on an H200,
    /// a batch of 8 on a thread new to the session took 16.4 ms against 11.6 ms
    /// on the same one), and a shared pool would hand each batch to whichever
    /// thread is free, between the requests' JPEG decodes.
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

    /// Readies the model before it serves: [`Self::settle`], whose run is the
    /// first of every session (on CUDA, one per batch shape, each building its
    /// convolution plans), so no request pays for it.
    pub fn warm_up(&self, name: &str, height: u32, width: u32) -> Result<(), String> {
        let started = Instant::now();
        self.settle(height, width)?;
        let shapes: Vec<usize> = self.sessions.iter().filter_map(|s| s.batch).collect();
        tracing::info!(model = %name, provider = self.provider, batch_shapes = ?shapes, elapsed_ms = started.elapsed().as_secs_f64() * 1000.0, "model warmed up");
        Ok(())
    }

    /// The batch size `images` images run at: the same on the CPU, the
    /// smallest batch shape that holds them on CUDA. The caller pads its input
    /// to it with zeros; [`Self::run`] pads otherwise.
    pub fn batch_shape(&self, images: usize) -> usize {
        self.shaped(images).batch.unwrap_or(images)
    }

    fn shaped(&self, images: usize) -> &Shaped {
        self.sessions
            .iter()
            .find(|s| s.batch.is_none_or(|b| b >= images))
            .unwrap_or_else(|| &self.sessions[self.sessions.len() - 1])
    }

    /// Runs a `[batch, 3, height, width]` input (blocking) and returns the
    /// output of those `batch` images.
    pub fn run(
        &self,
        input: &[f32],
        batch: usize,
        height: u32,
        width: u32,
    ) -> Result<RawOutput, String> {
        let shaped = self.shaped(batch);
        let shape = shaped.batch.unwrap_or(batch);
        if shape < batch {
            return Err(format!(
                "a batch of {batch} is more than the largest this model was loaded for ({shape}; MAX_BATCH_SIZE)"
            ));
        }
        let padded;
        let input = if shape == batch {
            input
        } else {
            let mut zeros_after = input.to_vec();
            zeros_after.resize(input.len() / batch.max(1) * shape, 0.0);
            padded = zeros_after;
            &padded
        };
        self.run_on(shaped, input, shape, height, width, None)
            .map(|raw| raw.first(batch))
    }

    /// One inference on zeros per session that hands the activation arenas
    /// back when it ends (ONNX Runtime's arena shrinkage, where there is an
    /// arena). At start it is the warm-up: everything the first run sets up
    /// (kernels chosen, weights prepacked, cuDNN plans built) stays, and an
    /// idle service holds the model, not a 640x640 image's intermediate
    /// tensors. After a quiet spell it returns what the last burst's batches
    /// grew. Then glibc's heap is trimmed, or the freed activations would
    /// stay resident there. The next request grows them again.
    pub fn settle(&self, height: u32, width: u32) -> Result<(), String> {
        let options = self
            .arenas
            .map(|devices| {
                let mut options = RunOptions::new()?;
                options.set("memory.enable_memory_arena_shrinkage", devices)?;
                Ok::<_, ort::Error>(options)
            })
            .transpose()
            .map_err(|e| format!("run options: {e}"))?;
        let image = 3 * height as usize * width as usize;
        let largest = self.sessions.iter().map(|s| s.batch.unwrap_or(1)).max();
        // One buffer of zeros for every shape, freed before the heap is trimmed.
        let zeros = vec![0.0; largest.unwrap_or(1) * image];
        let mut ran = Ok(());
        for shaped in &self.sessions {
            // Each session at its own shape: another would rebuild its plans.
            let batch = shaped.batch.unwrap_or(1);
            ran = ran.and(
                self.run_on(
                    shaped,
                    &zeros[..batch * image],
                    batch,
                    height,
                    width,
                    options.as_ref(),
                )
                .map(|_| ()),
            );
        }
        drop(zeros);
        crate::memory::release_freed();
        ran
    }

    /// One `session.run` of `shaped`'s session on `input`, at `batch`.
    fn run_on(
        &self,
        shaped: &Shaped,
        input: &[f32],
        batch: usize,
        height: u32,
        width: u32,
        options: Option<&RunOptions>,
    ) -> Result<RawOutput, String> {
        let shape = vec![batch as i64, 3, i64::from(height), i64::from(width)];
        let tensor =
            TensorRef::from_array_view((shape, input)).map_err(|e| format!("input tensor: {e}"))?;
        let mut session = shaped
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
        let (shape, data) = output
            .try_extract_tensor::<f32>()
            .map_err(|e| format!("output {}: {e}", self.output_name))?;
        Ok(RawOutput {
            shape: shape.iter().copied().collect(),
            len: data.len(),
            data: OutputData::Ort(output),
        })
    }
}

impl Shaped {
    fn any(session: Session) -> Self {
        Self {
            batch: None,
            session: Mutex::new(session),
        }
    }
}

/// ONNX Runtime's intra-op threads spin between the parallel sections of a run, which
/// keeps a run fast, and by default also for a while after the run returns: on the
/// 2-core VM a worker burnt the other core for at least 4 ms after each inference,
/// the time the next request's decode runs (with its second half on an image helper
/// thread) and other services on the node want that core. This stops the spinning
/// when a run returns; a run takes as long as before (YOLO11n, the PyPI wheel's
/// library, `bench/README.md`).
const FORCE_SPINNING_STOP: (&str, &str) = ("session.force_spinning_stop", "1");

fn cpu_session(env: &Environment, spec: &ModelSpec, config: &DetectConfig) -> ort::Result<Session> {
    let cpu = ort::ep::CPU::default().with_arena_allocator(config.cpu_memory_arena);
    Session::builder(env)?
        .with_log_level(LogLevel::Warning)?
        .with_optimization_level(GraphOptimizationLevel::All)?
        .with_intra_threads(config.intra_op_threads)?
        .with_config_entry(FORCE_SPINNING_STOP.0, FORCE_SPINNING_STOP.1)?
        .with_execution_providers([cpu.build()])?
        .commit_from_file(&spec.path)
}

/// One session per batch shape ([`batch_shapes`]).
#[cfg(feature = "cuda")]
fn cuda_sessions(
    env: &Environment,
    spec: &ModelSpec,
    config: &DetectConfig,
) -> Result<Vec<Shaped>, String> {
    use ort::ep::ExecutionProvider as _;
    if !ort::ep::CUDA::is_available().unwrap_or(false) {
        return Err("this ONNX Runtime library has no CUDA execution provider (use the onnxruntime-gpu wheel's library)".into());
    }
    let build = || -> ort::Result<Session> {
        Session::builder(env)?
            .with_log_level(LogLevel::Warning)?
            .with_optimization_level(GraphOptimizationLevel::All)?
            .with_intra_threads(config.intra_op_threads)?
            .with_config_entry(FORCE_SPINNING_STOP.0, FORCE_SPINNING_STOP.1)?
            .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])?
            .commit_from_file(&spec.path)
    };
    batch_shapes(config.max_batch)
        .into_iter()
        .map(|batch| {
            Ok(Shaped {
                batch: Some(batch),
                session: Mutex::new(build().map_err(|e| e.to_string())?),
            })
        })
        .collect()
}

#[cfg(not(feature = "cuda"))]
fn cuda_sessions(_: &Environment, _: &ModelSpec, _: &DetectConfig) -> Result<Vec<Shaped>, String> {
    Err("this binary was built without the `cuda` feature (cargo build --features cuda)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_shapes_are_powers_of_two_up_to_the_largest_batch() {
        assert_eq!(batch_shapes(1), [1]);
        assert_eq!(batch_shapes(8), [1, 2, 4, 8]);
        assert_eq!(batch_shapes(12), [1, 2, 4, 8, 12]);
        assert_eq!(batch_shapes(32), [1, 2, 4, 8, 16, 32]);
        assert_eq!(batch_shapes(0), [1]);
    }

    #[test]
    fn a_padded_batch_keeps_the_images_asked_about() {
        let raw = RawOutput::new((0..4 * 6).map(|v| v as f32).collect(), vec![4, 2, 3]).first(3);
        assert_eq!(raw.shape, [3, 2, 3]);
        assert_eq!(
            raw.data(),
            &(0..3 * 6).map(|v| v as f32).collect::<Vec<_>>()[..]
        );
        let whole = RawOutput::new(vec![0.0; 12], vec![2, 2, 3]).first(2);
        assert_eq!((&whole.shape[..], whole.data().len()), (&[2, 2, 3][..], 12));
    }
}

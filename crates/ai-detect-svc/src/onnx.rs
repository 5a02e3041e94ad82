//! In-process inference with ONNX Runtime through `ort`, loading the shared
//! library at run time (`load-dynamic`) from `ORT_DYLIB_PATH`.
//!
//! ONNX Runtime allows one environment per process, so it is created once and
//! shared by every model (and every service instance in a test process).

use std::{
    path::Path,
    sync::{Mutex, OnceLock},
};

use ort::{
    environment::Environment,
    logging::LogLevel,
    session::{Session, builder::GraphOptimizationLevel},
    value::TensorRef,
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
}

/// What one inference returns: the output tensor and its shape.
#[derive(Debug)]
pub struct RawOutput {
    pub data: Vec<f32>,
    pub shape: Vec<i64>,
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
        Ok(Self {
            session: Mutex::new(session),
            input_name,
            output_name,
            provider,
        })
    }

    /// Runs a `[batch, 3, height, width]` input (blocking).
    pub fn run(
        &self,
        input: &[f32],
        batch: usize,
        height: u32,
        width: u32,
    ) -> Result<RawOutput, String> {
        let shape = vec![batch as i64, 3, i64::from(height), i64::from(width)];
        let tensor =
            TensorRef::from_array_view((shape, input)).map_err(|e| format!("input tensor: {e}"))?;
        let mut session = self
            .session
            .lock()
            .map_err(|_| "a previous inference panicked".to_string())?;
        let outputs = session
            .run(ort::inputs![self.input_name.as_str() => tensor])
            .map_err(|e| format!("inference: {e}"))?;
        let output = outputs
            .get(&self.output_name)
            .ok_or_else(|| format!("output {} missing", self.output_name))?;
        let (shape, data) = output
            .try_extract_tensor::<f32>()
            .map_err(|e| format!("output {}: {e}", self.output_name))?;
        Ok(RawOutput {
            data: data.to_vec(),
            shape: shape.iter().copied().collect(),
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

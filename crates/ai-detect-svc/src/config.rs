//! The detection service's own settings (listed by `ai-detect-svc --help`), read from an env
//! map like the shared ones; a bad value names its variable.

use std::{collections::HashMap, path::PathBuf, time::Duration};

use imageflow_config::{ConfigError, Env, Setting, Unit};

/// Where models come from when `MODEL_DIR` is unset: `./models`, filled by
/// `scripts/setup.sh` (gitignored; the default model's weights are AGPL-3.0).
pub const DEFAULT_MODEL_DIR: &str = "models";

/// Where the ONNX Runtime library comes from when `ORT_DYLIB_PATH` is unset
/// (copied there from the PyPI `onnxruntime` wheel by `scripts/setup.sh`).
pub const DEFAULT_ORT_DYLIB: &str = "models/lib/libonnxruntime.so";

const MODEL_DIR: Setting = Setting::new(
    "MODEL_DIR",
    DEFAULT_MODEL_DIR,
    "directory of YOLOv8/YOLO11-layout .onnx models, relative to the working directory; each is served under its file stem",
);
const ORT_DYLIB_PATH: Setting = Setting::new(
    "ORT_DYLIB_PATH",
    DEFAULT_ORT_DYLIB,
    "ONNX Runtime shared library (1.31 or newer; from the PyPI onnxruntime wheel)",
);
const INFERENCE_BACKEND: Setting = Setting::new(
    "INFERENCE_BACKEND",
    "onnx",
    "onnx (in process) or triton (a KServe v2 gRPC server at TRITON_URL)",
);
const EXECUTION_PROVIDER: Setting = Setting::new(
    "EXECUTION_PROVIDER",
    "cpu",
    "cpu or cuda (needs a build with --features cuda and the onnxruntime-gpu library; falls back to cpu with a warning)",
);
const BATCH_WINDOW_MS: Setting = Setting::new(
    "BATCH_WINDOW_MS",
    "2",
    "how long a request waits for others to share its batch (0: no waiting; requests that queue up during an inference still share the next one)",
);
const MAX_BATCH_SIZE: Setting = Setting::new("MAX_BATCH_SIZE", "8", "most images in one inference");
const IDLE_RELEASE_SECS: Setting = Setting::new(
    "IDLE_RELEASE_SECS",
    "30",
    "after this long without a request, a model hands back the memory its last burst grew (0: never)",
);

const CPU_MEMORY_ARENA: Setting = Setting::new(
    "CPU_MEMORY_ARENA",
    "false",
    "true keeps ONNX Runtime's CPU memory arena: about 10% less CPU per batch of 8 (no page faults for its activations), but 8 MB more resident when idle and the largest batch's working set held until IDLE_RELEASE_SECS",
);

/// Where inference runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// In process, through ONNX Runtime (`ort`).
    Onnx,
    /// On a Triton (KServe v2 gRPC) server at this URL.
    Triton { url: String },
}

/// ONNX Runtime execution provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutionProvider {
    Cpu,
    /// CUDA when the binary has the `cuda` feature and a GPU answers; CPU
    /// otherwise, with a warning.
    Cuda,
}

/// The detection settings of one process.
#[derive(Clone, Debug)]
pub struct DetectConfig {
    pub model_dir: PathBuf,
    pub ort_dylib_path: PathBuf,
    pub backend: Backend,
    /// The model `yolo` (and an empty `model_name`) means; default: `yolo11n`
    /// when present, else the first model by name.
    pub default_model: Option<String>,
    pub execution_provider: ExecutionProvider,
    /// ONNX Runtime intra-op threads per model.
    pub intra_op_threads: usize,
    /// How long the first request of a batch waits for company.
    pub batch_window: Duration,
    /// Most images run as one batch.
    pub max_batch: usize,
    /// How long a model idles before handing memory back; `None`: never.
    pub idle_release: Option<Duration>,
    /// ONNX Runtime's CPU arena. Off by default: with it, an idle service
    /// held 68 MB instead of 60, and 590–630 MB instead of 220–240 after a
    /// burst (the arena keeps the largest batch's working set until the idle
    /// release; glibc unmaps a block over 32 MB when it is freed). The arena
    /// saves the page faults of those large blocks: about 10% of the CPU of
    /// a batch of 8, none at batch 1. CUDA sessions keep their arenas; this
    /// is for the CPU's, including a CUDA model's fallback.
    pub cpu_memory_arena: bool,
}

/// The detection settings, listed in `--help` after the shared ones.
pub const SETTINGS: &[Setting] = &[
    MODEL_DIR,
    Setting::described(
        "DEFAULT_MODEL",
        "yolo11n if present, else the first model",
        "the model an empty model_name or \"yolo\" selects",
    ),
    ORT_DYLIB_PATH,
    INFERENCE_BACKEND,
    Setting::described(
        "TRITON_URL",
        "none; required with INFERENCE_BACKEND=triton",
        "Triton/KServe v2 gRPC endpoint, e.g. http://triton:8001",
    ),
    EXECUTION_PROVIDER,
    Setting::described(
        "INTRA_OP_THREADS",
        "number of CPUs",
        "ONNX Runtime threads inside one inference",
    ),
    BATCH_WINDOW_MS,
    MAX_BATCH_SIZE,
    IDLE_RELEASE_SECS,
    CPU_MEMORY_ARENA,
];

impl DetectConfig {
    pub fn from_env(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let env = Env::new(vars);
        let backend = match env.text(&INFERENCE_BACKEND).unwrap_or_default() {
            b if b.eq_ignore_ascii_case("onnx") => Backend::Onnx,
            b if b.eq_ignore_ascii_case("triton") => {
                match env.url("TRITON_URL", &["http", "https"])? {
                    Some(url) => Backend::Triton {
                        url: url.to_string(),
                    },
                    None => {
                        return Err(ConfigError::invalid(
                            "TRITON_URL",
                            "is required with INFERENCE_BACKEND=triton",
                        ));
                    }
                }
            }
            other => {
                return Err(ConfigError::bad_value(
                    INFERENCE_BACKEND.name,
                    other,
                    "a backend: use onnx or triton",
                ));
            }
        };
        let execution_provider = match env.text(&EXECUTION_PROVIDER).unwrap_or_default() {
            p if p.eq_ignore_ascii_case("cpu") => ExecutionProvider::Cpu,
            p if p.eq_ignore_ascii_case("cuda") => ExecutionProvider::Cuda,
            other => {
                return Err(ConfigError::bad_value(
                    EXECUTION_PROVIDER.name,
                    other,
                    "a provider: use cpu or cuda",
                ));
            }
        };
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Self {
            model_dir: env.text(&MODEL_DIR).unwrap_or_default().into(),
            ort_dylib_path: env.text(&ORT_DYLIB_PATH).unwrap_or_default().into(),
            backend,
            default_model: env.get("DEFAULT_MODEL").map(str::to_string),
            execution_provider,
            intra_op_threads: env.number_or("INTRA_OP_THREADS", cpus, 1..=256)?,
            batch_window: env.duration::<f64>(&BATCH_WINDOW_MS, Unit::Millis, 0.0..=1000.0)?,
            max_batch: env.number(&MAX_BATCH_SIZE, 1..=64)?,
            idle_release: Some(env.duration::<f64>(
                &IDLE_RELEASE_SECS,
                Unit::Seconds,
                0.0..=86_400.0,
            )?)
            .filter(|d| !d.is_zero()),
            cpu_memory_arena: env.flag(CPU_MEMORY_ARENA.name, false)?,
        })
    }

    /// Whether models run on the CPU through glibc's allocator (no ONNX
    /// Runtime arena): then `main` puts every thread on glibc's main heap
    /// ([`crate::memory::one_heap`]). Not on CUDA, whose many decoding threads
    /// were measured with their own arenas.
    pub fn cpu_without_arena(&self) -> bool {
        self.backend == Backend::Onnx
            && self.execution_provider == ExecutionProvider::Cpu
            && !self.cpu_memory_arena
    }

    /// The settings block of `--help`.
    pub fn help() -> String {
        format!(
            "Detection settings (environment variables):\n{}",
            imageflow_config::help_lines(SETTINGS, &[])
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use imageflow_config::vars as env;

    #[test]
    fn defaults_find_setup_sh_output_from_the_repo_root() {
        let config = DetectConfig::from_env(&env(&[])).unwrap();
        assert_eq!(config.model_dir, PathBuf::from("models"));
        assert_eq!(
            config.ort_dylib_path,
            PathBuf::from("models/lib/libonnxruntime.so")
        );
        assert_eq!(config.backend, Backend::Onnx);
        assert_eq!(config.execution_provider, ExecutionProvider::Cpu);
        assert_eq!(config.batch_window, Duration::from_millis(2));
        assert_eq!(config.max_batch, 8);
        assert_eq!(config.idle_release, Some(Duration::from_secs(30)));
        assert!(!config.cpu_memory_arena);
        assert!(config.cpu_without_arena());
    }

    #[test]
    fn the_cpu_arena_is_a_flag_that_names_itself_when_wrong() {
        let on = DetectConfig::from_env(&env(&[("CPU_MEMORY_ARENA", "on")])).unwrap();
        assert!(on.cpu_memory_arena);
        assert!(!on.cpu_without_arena());
        let cuda = DetectConfig::from_env(&env(&[("EXECUTION_PROVIDER", "cuda")])).unwrap();
        assert!(!cuda.cpu_without_arena());
        let err = DetectConfig::from_env(&env(&[("CPU_MEMORY_ARENA", "maybe")])).unwrap_err();
        assert!(err.to_string().contains("CPU_MEMORY_ARENA"), "{err}");
    }

    #[test]
    fn idle_release_can_be_turned_off_or_bounded() {
        let never = DetectConfig::from_env(&env(&[("IDLE_RELEASE_SECS", "0")])).unwrap();
        assert_eq!(never.idle_release, None);
        let quick = DetectConfig::from_env(&env(&[("IDLE_RELEASE_SECS", "0.5")])).unwrap();
        assert_eq!(quick.idle_release, Some(Duration::from_millis(500)));
        let err = DetectConfig::from_env(&env(&[("IDLE_RELEASE_SECS", "-1")])).unwrap_err();
        assert!(err.to_string().contains("IDLE_RELEASE_SECS"), "{err}");
    }

    #[test]
    fn triton_needs_a_url() {
        let config = DetectConfig::from_env(&env(&[
            ("INFERENCE_BACKEND", "triton"),
            ("TRITON_URL", "http://127.0.0.1:8001"),
        ]))
        .unwrap();
        assert_eq!(
            config.backend,
            Backend::Triton {
                url: "http://127.0.0.1:8001".into()
            }
        );
        let err = DetectConfig::from_env(&env(&[("INFERENCE_BACKEND", "triton")])).unwrap_err();
        assert_eq!(err.variable, "TRITON_URL");
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        for (name, value) in [
            ("INFERENCE_BACKEND", "tensorflow"),
            ("EXECUTION_PROVIDER", "tpu"),
            ("INTRA_OP_THREADS", "0"),
            ("BATCH_WINDOW_MS", "-1"),
            ("MAX_BATCH_SIZE", "1000"),
        ] {
            let err = DetectConfig::from_env(&env(&[(name, value)])).unwrap_err();
            assert_eq!(err.variable, name, "{err}");
        }
        let help = DetectConfig::help();
        for s in SETTINGS {
            assert!(help.contains(s.name));
        }
    }
}

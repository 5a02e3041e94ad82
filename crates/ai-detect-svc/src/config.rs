//! The detection service's own settings (DESIGN section 8), read from an env
//! map like the shared ones; a bad value names its variable.

use std::{collections::HashMap, path::PathBuf, time::Duration};

use imageflow_service::{
    ConfigError,
    config::{Setting, parse},
};

/// Where models come from when `MODEL_DIR` is unset: `./models`, filled by
/// `scripts/setup.sh` (gitignored; the default model's weights are AGPL-3.0).
pub const DEFAULT_MODEL_DIR: &str = "models";

/// Where the ONNX Runtime library comes from when `ORT_DYLIB_PATH` is unset
/// (copied there from the PyPI `onnxruntime` wheel by `scripts/setup.sh`).
pub const DEFAULT_ORT_DYLIB: &str = "models/lib/libonnxruntime.so";

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
}

pub const SETTINGS: &[Setting] = &[
    Setting {
        name: "MODEL_DIR",
        default: "./models",
        help: "directory of YOLOv8/YOLO11-layout .onnx models; each is served under its file stem",
    },
    Setting {
        name: "DEFAULT_MODEL",
        default: "yolo11n if present, else the first model",
        help: "the model an empty model_name or \"yolo\" selects",
    },
    Setting {
        name: "ORT_DYLIB_PATH",
        default: "./models/lib/libonnxruntime.so",
        help: "ONNX Runtime shared library (1.31 or newer; from the PyPI onnxruntime wheel)",
    },
    Setting {
        name: "INFERENCE_BACKEND",
        default: "onnx",
        help: "onnx (in process) or triton (a KServe v2 gRPC server at TRITON_URL)",
    },
    Setting {
        name: "TRITON_URL",
        default: "none; required with INFERENCE_BACKEND=triton",
        help: "Triton/KServe v2 gRPC endpoint, e.g. http://triton:8001",
    },
    Setting {
        name: "EXECUTION_PROVIDER",
        default: "cpu",
        help: "cpu or cuda (needs a build with --features cuda and the onnxruntime-gpu library; falls back to cpu with a warning)",
    },
    Setting {
        name: "INTRA_OP_THREADS",
        default: "number of CPUs",
        help: "ONNX Runtime threads inside one inference",
    },
    Setting {
        name: "BATCH_WINDOW_MS",
        default: "2",
        help: "how long a request waits for others to share its batch (0: no waiting; requests that queue up during an inference still share the next one)",
    },
    Setting {
        name: "MAX_BATCH_SIZE",
        default: "8",
        help: "most images in one inference",
    },
];

impl DetectConfig {
    pub fn from_env(env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let get = |name: &str| env.get(name).map(|s| s.trim()).filter(|s| !s.is_empty());
        let backend = match get("INFERENCE_BACKEND")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("onnx") => Backend::Onnx,
            Some("triton") => match get("TRITON_URL") {
                Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                    Backend::Triton {
                        url: url.to_string(),
                    }
                }
                Some(url) => {
                    return Err(error(
                        "TRITON_URL",
                        format!("{url:?} is not an http:// or https:// URL"),
                    ));
                }
                None => {
                    return Err(error(
                        "TRITON_URL",
                        "is required with INFERENCE_BACKEND=triton".into(),
                    ));
                }
            },
            Some(other) => {
                return Err(error(
                    "INFERENCE_BACKEND",
                    format!("{other:?} is not a backend: use onnx or triton"),
                ));
            }
        };
        let execution_provider = match get("EXECUTION_PROVIDER")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("cpu") => ExecutionProvider::Cpu,
            Some("cuda") => ExecutionProvider::Cuda,
            Some(other) => {
                return Err(error(
                    "EXECUTION_PROVIDER",
                    format!("{other:?} is not a provider: use cpu or cuda"),
                ));
            }
        };
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Self {
            model_dir: get("MODEL_DIR").map_or_else(|| DEFAULT_MODEL_DIR.into(), PathBuf::from),
            ort_dylib_path: get("ORT_DYLIB_PATH")
                .map_or_else(|| DEFAULT_ORT_DYLIB.into(), PathBuf::from),
            backend,
            default_model: get("DEFAULT_MODEL").map(str::to_string),
            execution_provider,
            intra_op_threads: parse(env, "INTRA_OP_THREADS", cpus, |n| (1..=256).contains(n))?,
            batch_window: Duration::from_secs_f64(
                parse(env, "BATCH_WINDOW_MS", 2.0, |ms: &f64| {
                    ms.is_finite() && (0.0..=1000.0).contains(ms)
                })? / 1000.0,
            ),
            max_batch: parse(env, "MAX_BATCH_SIZE", 8, |n| (1..=64).contains(n))?,
        })
    }

    /// The settings block of `--help`.
    pub fn help() -> String {
        let mut text = String::from("Detection settings (environment variables):\n");
        for s in SETTINGS {
            text.push_str(&format!(
                "  {}\n      {} (default: {})\n",
                s.name, s.help, s.default
            ));
        }
        text
    }
}

fn error(variable: &str, message: String) -> ConfigError {
    ConfigError {
        variable: variable.into(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

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

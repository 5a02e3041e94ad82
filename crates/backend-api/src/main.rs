//! `backend-api`: settings from the environment (`backend-api --help`).

use std::process::ExitCode;

use backend_api::BackendConfig;
use imageflow_service::cli::{Binary, run_binary};

fn main() -> ExitCode {
    let version = env!("CARGO_PKG_VERSION");
    let binary = Binary {
        name: "backend-api",
        service_name: "imageflow-backend-api",
        version,
        help: backend_api::config::help(version),
    };
    run_binary(&binary, BackendConfig::from_env, |config, listener| {
        backend_api::run(config, listener, imageflow_service::shutdown_signal())
    })
}

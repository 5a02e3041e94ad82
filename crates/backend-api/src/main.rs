//! `backend-api`: settings from the environment (`backend-api --help`).

use std::process::ExitCode;

use backend_api::{BackendConfig, config::SETTINGS};

#[allow(clippy::print_stdout)] // --help and --version answer on stdout
fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None => {}
        Some("--version" | "-V") => {
            println!("backend-api {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Some("--help" | "-h") => {
            println!(
                "backend-api {}\nREST API and pipeline engine of ImageFlowCanvas.\n\nSettings (environment variables):",
                env!("CARGO_PKG_VERSION")
            );
            for s in SETTINGS {
                println!(
                    "  {:<28} {}\n  {:<28} default: {}",
                    s.name, s.help, "", s.default
                );
            }
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!(
                "backend-api: unknown argument {other:?}; settings come from the environment (see --help)"
            );
            return ExitCode::from(2);
        }
    }
    let env = std::env::vars().collect();
    let config = match BackendConfig::from_env(&env) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("backend-api: configuration error: {err}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("backend-api: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let guard =
            match imageflow_telemetry::init("imageflow-backend-api", env!("CARGO_PKG_VERSION")) {
                Ok(guard) => guard,
                Err(err) => {
                    eprintln!("backend-api: configuration error: {err}");
                    return ExitCode::from(2);
                }
            };
        let listener = match tokio::net::TcpListener::bind(config.http_listen_addr).await {
            Ok(listener) => listener,
            Err(err) => {
                eprintln!(
                    "backend-api: cannot listen on {} (HTTP_LISTEN_ADDR): {err}",
                    config.http_listen_addr
                );
                guard.shutdown().await;
                return ExitCode::FAILURE;
            }
        };
        let code =
            match backend_api::run(config, listener, imageflow_service::shutdown_signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    tracing::error!(error = %err, "backend-api stopped");
                    eprintln!("backend-api: {err}");
                    ExitCode::FAILURE
                }
            };
        guard.shutdown().await;
        code
    })
}

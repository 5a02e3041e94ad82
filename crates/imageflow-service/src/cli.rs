//! `--version` and `--help` for the service binaries, and the one-line fatal
//! error a misconfigured binary prints instead of a panic trace.

use std::{future::Future, process::ExitCode};

use tokio::net::TcpListener;

use crate::{
    ServeError,
    config::{ServiceConfig, ServiceDefaults},
};

/// The whole `main` of a service binary: arguments, config (a bad value is one
/// line on stderr and exit status 2), telemetry, bind, serve, flush.
#[allow(clippy::print_stdout)] // --help and --version answer on stdout
pub fn main<F, Fut>(defaults: ServiceDefaults, summary: &str, run: F) -> ExitCode
where
    F: FnOnce(ServiceConfig, TcpListener) -> Fut,
    Fut: Future<Output = Result<(), ServeError>>,
{
    match parse_args(std::env::args(), &defaults, summary) {
        Action::Run => {}
        Action::Print(text) => {
            println!("{text}");
            return ExitCode::SUCCESS;
        }
        Action::Usage(text) => {
            eprintln!("{text}");
            return ExitCode::from(2);
        }
    }
    let env = std::env::vars().collect();
    let config = match ServiceConfig::from_env(&env, defaults) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{}: configuration error: {err}", defaults.binary);
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Blocking work is already bounded by the door; this only caps the pool.
        .max_blocking_threads(config.cpu_workers + 8)
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("{}: cannot start the async runtime: {err}", defaults.binary);
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let guard =
            match imageflow_telemetry::init(defaults.service_name, env!("CARGO_PKG_VERSION")) {
                Ok(guard) => guard,
                Err(err) => {
                    eprintln!("{}: configuration error: {err}", defaults.binary);
                    return ExitCode::from(2);
                }
            };
        let listener = match TcpListener::bind(config.grpc_listen_addr).await {
            Ok(listener) => listener,
            Err(err) => {
                tracing::error!(addr = %config.grpc_listen_addr, error = %err, "cannot bind");
                eprintln!(
                    "{}: GRPC_LISTEN_ADDR: cannot bind {}: {err}",
                    defaults.binary, config.grpc_listen_addr
                );
                guard.shutdown().await;
                return ExitCode::FAILURE;
            }
        };
        let result = run(config, listener).await;
        let code = match &result {
            Ok(()) => {
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }
            Err(err) => {
                tracing::error!(error = %err, "server failed");
                eprintln!("{}: {err}", defaults.binary);
                ExitCode::FAILURE
            }
        };
        guard.shutdown().await;
        code
    })
}

/// What `main` should do after looking at its arguments.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Run,
    /// Print this and exit successfully.
    Print(String),
    /// Print this to stderr and exit with status 2.
    Usage(String),
}

pub fn parse_args(
    args: impl IntoIterator<Item = String>,
    defaults: &ServiceDefaults,
    summary: &str,
) -> Action {
    let args: Vec<String> = args.into_iter().skip(1).collect();
    match args.first().map(String::as_str) {
        None => Action::Run,
        Some("--version" | "-V") => {
            Action::Print(format!("{} {}", defaults.binary, env!("CARGO_PKG_VERSION")))
        }
        Some("--help" | "-h") => Action::Print(ServiceConfig::help(defaults, summary)),
        Some(other) => Action::Usage(format!(
            "{}: unexpected argument {other:?}; settings come from environment variables, see --help",
            defaults.binary
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const DEFAULTS: ServiceDefaults = ServiceDefaults {
        binary: "filter-svc",
        service_name: "imageflow-filter",
        max_concurrent_requests: 50,
        request_timeout: Duration::from_secs(30),
    };

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn version_help_and_strays() {
        assert_eq!(parse_args(args(&["bin"]), &DEFAULTS, ""), Action::Run);
        assert_eq!(
            parse_args(args(&["bin", "--version"]), &DEFAULTS, ""),
            Action::Print(format!("filter-svc {}", env!("CARGO_PKG_VERSION")))
        );
        match parse_args(args(&["bin", "--help"]), &DEFAULTS, "Filters images.") {
            Action::Print(text) => assert!(text.contains("GRPC_LISTEN_ADDR")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_args(args(&["bin", "--port=1"]), &DEFAULTS, ""),
            Action::Usage(_)
        ));
    }
}

//! The whole `main` of every imageflow binary (the gRPC services and
//! backend-api): `--version`, `--help`, settings (a bad value is one line on
//! stderr instead of a panic trace), telemetry, bind, serve, flush.

use std::{collections::HashMap, fmt::Display, future::Future, net::SocketAddr, process::ExitCode};

use imageflow_config::{ConfigError, DefaultOverrides, Setting, help_lines};
use tokio::net::TcpListener;

use crate::{
    ServeError,
    config::{ServiceConfig, ServiceDefaults},
};

/// What a binary is, for `--version`, `--help` and its telemetry.
#[derive(Debug)]
pub struct Binary {
    /// Binary name, as in `backend-api --version`.
    pub name: &'static str,
    /// OpenTelemetry `service.name`.
    pub service_name: &'static str,
    pub version: &'static str,
    /// The whole `--help` text (see [`help_text`]).
    pub help: String,
}

/// What `main` needs from a binary's validated settings.
pub trait Startup {
    /// The variable naming the address bound, for the error when binding fails.
    const LISTEN_VARIABLE: &'static str;
    fn listen_addr(&self) -> SocketAddr;
    /// Cap on the runtime's blocking threads; `None` keeps tokio's default.
    fn max_blocking_threads(&self) -> Option<usize> {
        None
    }
}

impl Startup for ServiceConfig {
    const LISTEN_VARIABLE: &'static str = "GRPC_LISTEN_ADDR";
    fn listen_addr(&self) -> SocketAddr {
        self.grpc_listen_addr
    }
    fn max_blocking_threads(&self) -> Option<usize> {
        // Blocking work is already bounded by the door; this only caps the pool.
        Some(self.cpu_workers + 8)
    }
}

/// The `main` of a gRPC service binary.
pub fn main<F, Fut>(defaults: ServiceDefaults, summary: &str, serve: F) -> ExitCode
where
    F: FnOnce(ServiceConfig, TcpListener) -> Fut,
    Fut: Future<Output = Result<(), ServeError>>,
{
    main_with(defaults, summary, &[], serve)
}

/// [`main`] for a service with settings of its own (`extra`, listed in `--help`).
pub fn main_with<F, Fut>(
    defaults: ServiceDefaults,
    summary: &str,
    extra: &[Setting],
    serve: F,
) -> ExitCode
where
    F: FnOnce(ServiceConfig, TcpListener) -> Fut,
    Fut: Future<Output = Result<(), ServeError>>,
{
    let binary = Binary {
        name: defaults.binary,
        service_name: defaults.service_name,
        version: env!("CARGO_PKG_VERSION"),
        help: ServiceConfig::help_with(&defaults, summary, extra),
    };
    run_binary(&binary, |env| ServiceConfig::from_env(env, defaults), serve)
}

/// The `main` of any binary: arguments, settings from the process environment
/// through `load` (a bad value: one line on stderr, exit status 2), telemetry,
/// bind the listen address, `serve`, flush telemetry.
#[allow(clippy::print_stdout)] // --help and --version answer on stdout
pub fn run_binary<C, E, L, F, Fut>(binary: &Binary, load: L, serve: F) -> ExitCode
where
    C: Startup,
    E: Display,
    L: FnOnce(&HashMap<String, String>) -> Result<C, ConfigError>,
    F: FnOnce(C, TcpListener) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let name = binary.name;
    match parse_args(std::env::args(), binary) {
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
    let config = match load(&env) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{name}: configuration error: {err}");
            return ExitCode::from(2);
        }
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(threads) = config.max_blocking_threads() {
        builder.max_blocking_threads(threads);
    }
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("{name}: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let guard = match imageflow_telemetry::init(binary.service_name, binary.version) {
            Ok(guard) => guard,
            Err(err) => {
                eprintln!("{name}: configuration error: {err}");
                return ExitCode::from(2);
            }
        };
        let addr = config.listen_addr();
        let listener = match TcpListener::bind(addr).await {
            Ok(listener) => listener,
            Err(err) => {
                tracing::error!(%addr, error = %err, "cannot bind");
                eprintln!("{name}: {}: cannot bind {addr}: {err}", C::LISTEN_VARIABLE);
                guard.shutdown().await;
                return ExitCode::FAILURE;
            }
        };
        let code = match serve(config, listener).await {
            Ok(()) => {
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }
            Err(err) => {
                tracing::error!(error = %err, "server failed");
                eprintln!("{name}: {err}");
                ExitCode::FAILURE
            }
        };
        guard.shutdown().await;
        code
    })
}

/// `--help`: the binary, its summary, then each block of settings with its
/// defaults (a block's pairs override printed defaults known only at run time).
pub fn help_text(
    binary: &str,
    version: &str,
    summary: &str,
    blocks: &[(&[Setting], &DefaultOverrides<'_>)],
) -> String {
    let mut text = format!(
        "{binary} {version}\n{summary}\n\nUsage: {binary} [--help | --version]\n\nSettings (environment variables):\n"
    );
    for (settings, overrides) in blocks {
        text.push_str(&help_lines(settings, overrides));
    }
    text
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

/// `resize-svc 0.1.0 (0123456789ab)`: the release and the source revision,
/// the `service.version` its telemetry reports.
fn version_line(binary: &Binary) -> String {
    let revision = imageflow_telemetry::REVISION;
    if revision == binary.version {
        format!("{} {}", binary.name, binary.version)
    } else {
        format!("{} {} ({revision})", binary.name, binary.version)
    }
}

pub fn parse_args(args: impl IntoIterator<Item = String>, binary: &Binary) -> Action {
    let args: Vec<String> = args.into_iter().skip(1).collect();
    match args.first().map(String::as_str) {
        None => Action::Run,
        Some("--version" | "-V") => Action::Print(version_line(binary)),
        Some("--help" | "-h") => Action::Print(binary.help.clone()),
        Some(other) => Action::Usage(format!(
            "{}: unexpected argument {other:?}; settings come from environment variables, see --help",
            binary.name
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
        let binary = Binary {
            name: DEFAULTS.binary,
            service_name: DEFAULTS.service_name,
            version: "1.2.3",
            help: ServiceConfig::help(&DEFAULTS, "Filters images."),
        };
        assert_eq!(parse_args(args(&["bin"]), &binary), Action::Run);
        assert_eq!(
            parse_args(args(&["bin", "--version"]), &binary),
            Action::Print(format!(
                "filter-svc 1.2.3 ({})",
                imageflow_telemetry::REVISION
            ))
        );
        match parse_args(args(&["bin", "--help"]), &binary) {
            Action::Print(text) => {
                assert!(text.starts_with("filter-svc "), "{text}");
                assert!(text.contains("Filters images."));
                assert!(text.contains("GRPC_LISTEN_ADDR"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_args(args(&["bin", "--port=1"]), &binary),
            Action::Usage(_)
        ));
    }

    #[test]
    fn extra_settings_join_the_help() {
        const EXTRA: Setting = Setting::new("MODEL_DIR", "./models", "where models are");
        let text = ServiceConfig::help_with(&DEFAULTS, "Detects.", &[EXTRA]);
        assert!(text.contains("  MODEL_DIR\n      where models are (default: ./models)\n"));
    }
}

//! `resize-svc`: settings from the environment (`resize-svc --help`).

use std::process::ExitCode;

fn main() -> ExitCode {
    imageflow_service::cli::main(
        resize_svc::DEFAULTS,
        resize_svc::SUMMARY,
        |config, listener| resize_svc::run(config, listener, imageflow_service::shutdown_signal()),
    )
}

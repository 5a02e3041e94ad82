//! `filter-svc`: settings from the environment (`filter-svc --help`).

use std::process::ExitCode;

fn main() -> ExitCode {
    imageflow_service::cli::main(
        filter_svc::DEFAULTS,
        filter_svc::SUMMARY,
        |config, listener| filter_svc::run(config, listener, imageflow_service::shutdown_signal()),
    )
}

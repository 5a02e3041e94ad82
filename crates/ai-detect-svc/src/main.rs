//! `ai-detect-svc`: settings from the environment (`ai-detect-svc --help`).

use std::process::ExitCode;

fn main() -> ExitCode {
    let env = std::env::vars().collect();
    // Read before the shared settings so a bad detection setting is also one line.
    let detect = ai_detect_svc::Config::from_env(&env);
    if detect.as_ref().is_ok_and(|d| d.cpu_without_arena()) {
        // Still the only thread: see memory::one_heap.
        ai_detect_svc::memory::one_heap();
    }
    imageflow_service::cli::main_with(
        ai_detect_svc::DEFAULTS,
        ai_detect_svc::SUMMARY,
        ai_detect_svc::config::SETTINGS,
        |config, listener| async move {
            let detect = detect.map_err(|e| {
                imageflow_service::ServeError::Startup(format!("configuration error: {e}"))
            })?;
            ai_detect_svc::run(
                config,
                detect,
                listener,
                imageflow_service::shutdown_signal(),
            )
            .await
        },
    )
}

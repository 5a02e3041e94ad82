//! `imageflowctl`: talk to the ImageFlowCanvas services from a shell.
//!
//! `imageflowctl process in.jpg -o out.jpg --resize 800x600 --filter gaussian:2`
//! sends the image through resize-svc and then each filter in order, by bytes,
//! and prints one line per hop with the time the service reported.
//! `imageflowctl run photo.jpg` uploads it to backend-api and runs resize →
//! ai_detection → sharpen (or `--pipeline file.json`), printing each step.
//! `imageflowctl bench resize --endpoint ... --input photo.jpg` measures a service.
//! `imageflowctl traces report` and `traces execution ID` read a Jaeger query
//! API; `imageflowctl slo` reads Prometheus: the SRE views of the design.

#![allow(clippy::print_stdout)] // a command line prints its results

mod bench;
mod bench_pipeline;
mod otlp_sink;
mod process;
mod run;
mod slo;
mod traces;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "imageflowctl", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Upload an image to the backend and run a pipeline on it (synchronous path).
    Run(run::RunArgs),
    /// Resize and filter one image through the running services.
    Process(process::ProcessArgs),
    /// Measure a running resize-svc or filter-svc: p50/p95/p99 and requests/s.
    Bench(bench::BenchArgs),
    /// Measure pipelines through backend-api's synchronous path, with the
    /// orchestration overhead separated from the services' own time.
    BenchPipeline(bench_pipeline::BenchPipelineArgs),
    /// Traces from a Jaeger query API: the bottleneck report, one execution's trace.
    Traces(traces::TracesArgs),
    /// SLO report from Prometheus: availability, p95 latency, pipeline error
    /// rate, error-budget burn.
    Slo(slo::SloArgs),
    /// A minimal OTLP/gRPC receiver that counts what arrives per service.
    OtlpSink(otlp_sink::OtlpSinkArgs),
    /// Ask a service's standard gRPC health endpoint; exit 0 only when SERVING.
    Health {
        /// e.g. http://127.0.0.1:9090
        endpoint: String,
        /// Service name to ask about ("" = the whole server).
        #[arg(long, default_value = "")]
        service: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(args).await,
        Command::Process(args) => process::run(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::BenchPipeline(args) => bench_pipeline::run(args).await,
        Command::Health { endpoint, service } => health(&endpoint, &service).await,
        Command::Traces(args) => traces::run(args).await,
        Command::OtlpSink(args) => otlp_sink::run(args).await,
        Command::Slo(args) => {
            let fail_on_breach = args.fail_on_breach;
            match slo::run(args).await {
                Ok(false) if fail_on_breach => return ExitCode::from(3),
                other => other.map(|_| ()),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("imageflowctl: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn health(endpoint: &str, service: &str) -> anyhow::Result<()> {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let channel = process::connect(endpoint).await?;
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await?
        .into_inner()
        .status();
    eprintln!("{endpoint} {service:?}: {status:?}");
    anyhow::ensure!(status == ServingStatus::Serving, "not serving");
    Ok(())
}

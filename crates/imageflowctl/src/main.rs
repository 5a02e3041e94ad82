//! `imageflowctl`: talk to the ImageFlowCanvas services from a shell.
//!
//! `imageflowctl process in.jpg -o out.jpg --resize 800x600 --filter gaussian:2`
//! sends the image through resize-svc and then each filter in order, by bytes,
//! and prints one line per hop with the time the service reported.
//! `imageflowctl run photo.jpg` uploads it to backend-api and runs resize →
//! ai_detection → sharpen (or `--pipeline file.json`), printing each step.
//! `imageflowctl bench resize --endpoint ... --input photo.jpg` measures a service,
//! `bench-pipeline` the backend's synchronous path, `load` the backend under
//! N clients for M seconds (with an audit of every execution); `scripts/bench.sh`
//! drives them all.
//! `imageflowctl traces report` and `traces execution ID` read a Jaeger query
//! API; `imageflowctl slo` reads Prometheus: the SRE views of the design.

#![allow(clippy::print_stdout)] // a command line prints its results

mod bench;
mod bench_inputs;
mod bench_pipeline;
mod load;
mod otlp_sink;
mod process;
mod procstat;
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
    /// Measure a running resize-svc, filter-svc or ai-detect-svc: p50/p95/p99,
    /// requests/s, and with --watch CPU per request and peak RSS.
    Bench(bench::BenchArgs),
    /// Measure pipelines through backend-api's synchronous path, with the
    /// orchestration overhead separated from the services' own time.
    BenchPipeline(bench_pipeline::BenchPipelineArgs),
    /// One execution of N images against N single executions, same concurrency.
    BenchInputs(bench_inputs::BenchInputsArgs),
    /// N clients for M seconds on backend-api's synchronous path, then check
    /// that every accepted execution exists and ended; RSS sampled each second.
    Load(load::LoadArgs),
    /// Write the detection input tensor ai-detect-svc builds for an image
    /// (decode, letterbox to 640x640, planar RGB f32 little-endian), so a
    /// bare ONNX Runtime run can be fed exactly the same values.
    Tensor {
        /// The image.
        input: std::path::PathBuf,
        /// Where to write the 3x640x640 f32 values.
        #[arg(short, long)]
        output: std::path::PathBuf,
    },
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
        Command::BenchInputs(args) => bench_inputs::run(args).await,
        Command::Load(args) => load::run(args).await,
        Command::Tensor { input, output } => tensor(&input, &output),
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

fn tensor(input: &std::path::Path, output: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    use imageflow_imaging::{Limits, letterbox_encoded};
    const SIDE: u32 = 640;
    let data = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    // As ai-detect-svc makes it for a request that draws no boxes.
    let made = letterbox_encoded(&data, &Limits::default(), SIDE, SIDE)?;
    let bytes: Vec<u8> = made.tensor.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(output, bytes).with_context(|| format!("writing {}", output.display()))
}

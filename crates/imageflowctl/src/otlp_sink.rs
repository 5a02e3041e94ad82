//! `imageflowctl otlp-sink`: a minimal OTLP/gRPC endpoint that accepts traces
//! and metrics and prints what arrives per service. For checking that a
//! binary's exporter works without a collector, and for the telemetry
//! overhead benchmark (export cost measured against a real receiver).

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use clap::Args;
use opentelemetry_proto::tonic::collector::{
    metrics::v1::{
        ExportMetricsServiceRequest, ExportMetricsServiceResponse,
        metrics_service_server::{MetricsService, MetricsServiceServer},
    },
    trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
};

#[derive(Debug, Args)]
pub struct OtlpSinkArgs {
    /// Address to listen on (the OTLP/gRPC port is 4317).
    #[arg(long, default_value = "127.0.0.1:4317")]
    pub listen: SocketAddr,
    /// Print one line per export request.
    #[arg(long)]
    pub verbose: bool,
}

#[derive(Debug, Default)]
struct Counts {
    spans: BTreeMap<String, u64>,
    metric_points: BTreeMap<String, u64>,
}

#[derive(Clone, Debug)]
struct Sink {
    counts: Arc<Mutex<Counts>>,
    verbose: bool,
}

fn service_of(resource: Option<&opentelemetry_proto::tonic::resource::v1::Resource>) -> String {
    resource
        .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s)) => {
                Some(s.clone())
            }
            _ => None,
        })
        .unwrap_or_else(|| "?".into())
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        for rs in request.into_inner().resource_spans {
            let service = service_of(rs.resource.as_ref());
            let n: u64 = rs.scope_spans.iter().map(|s| s.spans.len() as u64).sum();
            if self.verbose {
                eprintln!("traces  {service}: {n} spans");
            }
            *counts.spans.entry(service).or_default() += n;
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        for rm in request.into_inner().resource_metrics {
            let service = service_of(rm.resource.as_ref());
            let n: u64 = rm
                .scope_metrics
                .iter()
                .map(|s| s.metrics.len() as u64)
                .sum();
            if self.verbose {
                eprintln!("metrics {service}: {n} metrics");
            }
            *counts.metric_points.entry(service).or_default() += n;
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

pub async fn run(args: OtlpSinkArgs) -> anyhow::Result<()> {
    let sink = Sink {
        counts: Arc::default(),
        verbose: args.verbose,
    };
    eprintln!(
        "otlp-sink listening on {} (Ctrl-C prints totals)",
        args.listen
    );
    tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(sink.clone()))
        .add_service(MetricsServiceServer::new(sink.clone()))
        .serve_with_shutdown(args.listen, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    let counts = sink.counts.lock().unwrap_or_else(|p| p.into_inner());
    for (service, n) in &counts.spans {
        println!("spans {service} {n}");
    }
    for (service, n) in &counts.metric_points {
        println!("metrics {service} {n}");
    }
    Ok(())
}

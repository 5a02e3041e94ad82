//! The life of one request, the same for every RPC: admission, a deadline,
//! one structured log line with the outcome, and a status a caller can act on.
//! Streams reuse it per item, so a bad image in a batch fails only that item.

use std::{
    future::Future,
    pin::Pin,
    time::{Duration, Instant},
};

use futures::{Stream, StreamExt};
use tonic::{Request, Status, Streaming, metadata::MetadataMap};
use tracing::Instrument;

use crate::{
    ServiceRuntime,
    error::{ServiceError, code_name},
};

/// A response stream as the generated servers want it.
pub type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// How many items of one stream are worked on at once; answers keep the order
/// of the requests.
const STREAM_PIPELINE_DEPTH: usize = 4;

/// Reads the caller's `grpc-timeout` (e.g. `250m`, `5S`).
pub fn grpc_timeout(metadata: &MetadataMap) -> Option<Duration> {
    let raw = metadata.get("grpc-timeout")?.to_str().ok()?;
    if raw.len() < 2 {
        return None;
    }
    let (digits, unit) = raw.split_at(raw.len() - 1);
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value.saturating_mul(3600)),
        "M" => Duration::from_secs(value.saturating_mul(60)),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

impl ServiceRuntime {
    /// The budget of a request: the caller's deadline when shorter than ours.
    pub fn budget(&self, metadata: &MetadataMap) -> Duration {
        grpc_timeout(metadata).map_or(self.request_timeout, |t| t.min(self.request_timeout))
    }

    /// Runs one unary request: refused at once when over the concurrency limit,
    /// cut at its deadline, logged once with its outcome.
    pub async fn unary<Req, Resp, F, Fut>(
        &self,
        rpc: &'static str,
        request: Request<Req>,
        execution_id: impl Fn(&Req) -> String,
        handler: F,
    ) -> Result<tonic::Response<Resp>, Status>
    where
        F: FnOnce(Req, Instant) -> Fut,
        Fut: Future<Output = Result<Resp, ServiceError>>,
    {
        let budget = self.budget(request.metadata());
        let message = request.into_inner();
        // The server span (from the telemetry layer) declared the field; log
        // lines and the trace both get it.
        let span = tracing::Span::current();
        let execution = execution_id(&message);
        span.record("execution_id", execution.as_str());
        async move {
            let started = Instant::now();
            let outcome = match self.admission.try_admit() {
                Err(err) => Err(err),
                Ok(_permit) => {
                    let deadline = started + budget;
                    match tokio::time::timeout(budget, handler(message, deadline)).await {
                        Ok(result) => result,
                        Err(_) => Err(ServiceError::DeadlineExceeded(budget)),
                    }
                }
            };
            log_outcome(rpc, started, outcome.as_ref().err());
            self.report(rpc, &execution, started, outcome.as_ref().err());
            outcome.map(tonic::Response::new).map_err(Status::from)
        }
        .instrument(span)
        .await
    }

    /// Runs a bidirectional stream: each item waits for admission (the stream's
    /// flow control pushes back on the sender), gets its own deadline, and a
    /// failed item becomes a FAILED response built by `failed` while the stream
    /// goes on. A transport error on the inbound side ends the stream.
    pub fn stream<Req, Resp, F, Fut>(
        &self,
        rpc: &'static str,
        request: Request<Streaming<Req>>,
        handler: F,
        failed: fn(&ServiceError, Instant) -> Resp,
    ) -> ResponseStream<Resp>
    where
        Req: Send + 'static,
        Resp: Send + 'static,
        F: Fn(Req, Instant) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, ServiceError>> + Send + 'static,
    {
        let budget = self.budget(request.metadata());
        let runtime = self.clone();
        let inbound = request.into_inner();
        // Items are served while the body streams, after the server span's
        // future returned; each item span names it as parent explicitly.
        let parent = tracing::Span::current();
        let responses = inbound
            .map(move |item| {
                let runtime = runtime.clone();
                let handler = handler.clone();
                let item_span = tracing::info_span!(parent: &parent, "grpc.stream_item", rpc);
                async move {
                    let message = item?;
                    let started = Instant::now();
                    let outcome = async {
                        let _permit = runtime.admission.admit().await?;
                        let deadline = Instant::now() + budget;
                        tokio::time::timeout(budget, handler(message, deadline))
                            .await
                            .map_err(|_| ServiceError::DeadlineExceeded(budget))?
                    }
                    .instrument(item_span.clone())
                    .await;
                    if let Err(err) = &outcome {
                        imageflow_telemetry::spans::record_error(&item_span, err);
                    }
                    // In the item's span: its line and its latency exemplar
                    // carry the item's trace.
                    item_span.in_scope(|| log_outcome(rpc, started, outcome.as_ref().err()));
                    Ok(outcome.unwrap_or_else(|err| failed(&err, started)))
                }
            })
            .buffered(STREAM_PIPELINE_DEPTH);
        Box::pin(responses)
    }
}

impl ServiceRuntime {
    /// The call's progress to Kafka (when configured): fire-and-forget, the
    /// publisher counts what it cannot deliver.
    fn report(
        &self,
        rpc: &str,
        execution_id: &str,
        started: Instant,
        error: Option<&ServiceError>,
    ) {
        let Some(events) = &self.events else {
            return;
        };
        if execution_id.is_empty() {
            return;
        }
        let mut message = imageflow_events::ProgressMessage::new(
            execution_id,
            // Identifies the unit of work; never mistaken for an execution's
            // own (step-less) ending.
            Some(format!("{}:{rpc}", events.source)),
            if error.is_some() {
                "failed"
            } else {
                "completed"
            },
            match error {
                None => format!("{rpc} OK"),
                Some(err) => format!("{rpc} {}: {err}", code_name(err.code())),
            },
            events.source.clone(),
        );
        message.processing_time_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
        events.publisher.publish(
            imageflow_events::topics::PROGRESS,
            execution_id,
            &message,
            Vec::new(),
        );
    }
}

fn log_outcome(rpc: &'static str, started: Instant, error: Option<&ServiceError>) {
    let elapsed = started.elapsed();
    imageflow_telemetry::global_metric!(
        histogram_vec,
        "imageflow_processing_duration_seconds",
        "time to process one image (one unary call or one stream item), by operation and outcome",
        &["operation", "status"],
    )
    .observe(&[rpc, error.map_or("OK", |e| code_name(e.code()))], elapsed);
    let duration_ms = elapsed.as_secs_f64() * 1000.0;
    match error {
        None => tracing::info!(rpc, code = "OK", duration_ms, "request completed"),
        Some(err @ ServiceError::Internal(_)) => {
            tracing::error!(rpc, code = code_name(err.code()), duration_ms, error = %err, "request failed")
        }
        Some(err) => {
            tracing::warn!(rpc, code = code_name(err.code()), duration_ms, error = %err, "request failed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        let mut metadata = MetadataMap::new();
        for (raw, expected) in [
            ("250m", Duration::from_millis(250)),
            ("5S", Duration::from_secs(5)),
            ("2M", Duration::from_secs(120)),
            ("1H", Duration::from_secs(3600)),
            ("100u", Duration::from_micros(100)),
            ("7n", Duration::from_nanos(7)),
        ] {
            metadata.insert("grpc-timeout", raw.parse().unwrap());
            assert_eq!(grpc_timeout(&metadata), Some(expected), "{raw}");
        }
        for bad in ["", "m", "12x", "abcS"] {
            metadata.insert("grpc-timeout", bad.parse().unwrap());
            assert_eq!(grpc_timeout(&metadata), None, "{bad}");
        }
    }
}

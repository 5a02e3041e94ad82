//! Persistent, balanced gRPC channels to the services and the one call per
//! component. Each configured endpoint's host name is re-resolved every few
//! seconds, so a Kubernetes headless service spreads calls over every pod and
//! follows scale-ups; a pod that goes away leaves the set on the next round.
//! With `GRPC_TLS_CA` set every connection is TLS (mutual with a client
//! certificate), checked against the host name the endpoint was configured
//! with, not the pod address it resolved to.

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};
use tracing::Instrument;

use imageflow_proto::v1::{
    self, DetectionRequest, FilterRequest, ImageData, ProcessingStatus, ResizeRequest,
    ai_detection_service_client::AiDetectionServiceClient, detection_request, filter_request,
    filter_service_client::FilterServiceClient, resize_request,
    resize_service_client::ResizeServiceClient,
};
use imageflow_service::tls::ClientTls;
use tokio::sync::mpsc::Sender;
use tonic::{
    Code, Status,
    transport::{Channel, Endpoint, channel::Change},
};

use crate::{
    model::{BoundingBox, Detection},
    registry::StepCall,
};

const RESOLVE_EVERY: Duration = Duration::from_secs(5);
/// Largest message the backend accepts from a service (an annotated image).
const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// A balanced channel to one service, with the number of endpoints behind it.
#[derive(Clone, Debug)]
pub struct ServiceChannel {
    pub name: &'static str,
    channel: Channel,
    live: Arc<AtomicUsize>,
    configured: Arc<Vec<String>>,
}

impl ServiceChannel {
    /// Starts resolving `urls` (http://host:port) in the background; with
    /// `tls`, every connection is TLS.
    pub fn new(name: &'static str, urls: &[String], tls: Option<Arc<ClientTls>>) -> Self {
        let (channel, changes) = Channel::balance_channel::<SocketAddr>(64);
        let live = Arc::new(AtomicUsize::new(0));
        let targets: Vec<(String, u16)> = urls
            .iter()
            .filter_map(|u| {
                let uri: http::Uri = u.parse().ok()?;
                let host = uri.host()?.trim_matches(['[', ']']).to_string();
                Some((host, uri.port_u16().unwrap_or(80)))
            })
            .collect();
        tokio::spawn(resolve_loop(name, targets, tls, changes, live.clone()));
        Self {
            name,
            channel,
            live,
            configured: Arc::new(urls.to_vec()),
        }
    }

    /// Endpoints resolved right now.
    pub fn endpoints(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    pub fn configured(&self) -> &[String] {
        &self.configured
    }

    fn ready_channel(&self) -> Result<Channel, Status> {
        if self.endpoints() == 0 {
            return Err(Status::unavailable(format!(
                "no address resolved yet for {} ({})",
                self.name,
                self.configured.join(", ")
            )));
        }
        Ok(self.channel.clone())
    }
}

/// The endpoint of one resolved address of `host`.
fn endpoint(name: &str, addr: SocketAddr, host: &str, tls: Option<&ClientTls>) -> Option<Endpoint> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let endpoint = imageflow_proto::transport::tuned(
        Endpoint::from_shared(format!("{scheme}://{addr}")).ok()?,
    )
    .connect_timeout(Duration::from_secs(2))
    .tcp_nodelay(true)
    .http2_keep_alive_interval(Duration::from_secs(30))
    .keep_alive_timeout(Duration::from_secs(10))
    .keep_alive_while_idle(true);
    match tls {
        None => Some(endpoint),
        // The same config was built once at start-up, so this only fails on
        // a host that is no valid server name; say so rather than drop it quietly.
        Some(tls) => match endpoint.tls_config(tls.config(host)) {
            Ok(endpoint) => Some(endpoint),
            Err(err) => {
                tracing::error!(service = name, host, error = %err, "cannot set up TLS for this endpoint; set GRPC_TLS_SERVER_NAME");
                None
            }
        },
    }
}

async fn resolve_loop(
    name: &'static str,
    targets: Vec<(String, u16)>,
    tls: Option<Arc<ClientTls>>,
    changes: Sender<Change<SocketAddr, Endpoint>>,
    live: Arc<AtomicUsize>,
) {
    let mut current: HashSet<SocketAddr> = HashSet::new();
    let mut warned = false;
    loop {
        let mut resolved = HashSet::new();
        // Which configured host each address came from: its certificate is
        // checked against that name.
        let mut hosts: std::collections::HashMap<SocketAddr, &str> =
            std::collections::HashMap::new();
        for (host, port) in &targets {
            match tokio::net::lookup_host((host.as_str(), *port)).await {
                Ok(addrs) => {
                    for addr in addrs {
                        resolved.insert(addr);
                        hosts.entry(addr).or_insert(host.as_str());
                    }
                }
                Err(err) => {
                    if !warned {
                        tracing::warn!(service = name, host, error = %err, "cannot resolve service endpoint; retrying");
                    }
                }
            }
        }
        // A failed lookup keeps the last good set rather than dropping every endpoint.
        if !resolved.is_empty() {
            for gone in current.difference(&resolved) {
                if changes.send(Change::Remove(*gone)).await.is_err() {
                    return;
                }
            }
            for new in resolved.difference(&current) {
                let host = hosts.get(new).copied().unwrap_or_default();
                if let Some(e) = endpoint(name, *new, host, tls.as_deref())
                    && changes.send(Change::Insert(*new, e)).await.is_err()
                {
                    return;
                }
            }
            if resolved != current {
                tracing::info!(
                    service = name,
                    endpoints = resolved.len(),
                    "service endpoints updated"
                );
            }
            current = resolved;
            warned = false;
        } else {
            warned = true;
        }
        live.store(current.len(), Ordering::Relaxed);
        tokio::time::sleep(RESOLVE_EVERY).await;
    }
}

/// The three services.
#[derive(Clone, Debug)]
pub struct Services {
    pub resize: ServiceChannel,
    pub filter: ServiceChannel,
    pub detect: ServiceChannel,
}

impl Services {
    pub fn new(
        resize: &[String],
        filter: &[String],
        detect: &[String],
        tls: Option<ClientTls>,
    ) -> Self {
        let tls = tls.map(Arc::new);
        Self {
            resize: ServiceChannel::new("resize", resize, tls.clone()),
            filter: ServiceChannel::new("filter", filter, tls.clone()),
            detect: ServiceChannel::new("ai_detection", detect, tls),
        }
    }

    pub fn all(&self) -> [&ServiceChannel; 3] {
        [&self.resize, &self.filter, &self.detect]
    }
}

/// What one successful call produced.
#[derive(Debug, Default)]
pub struct CallResult {
    /// The image the service wrote; `None` when it wrote none (detection
    /// without drawing).
    pub output: Option<ImageData>,
    pub detections: Vec<Detection>,
    /// The service's own processing time.
    pub service_time: Duration,
    pub message: String,
}

/// A failed call: the gRPC status plus the server's retry hint.
#[derive(Debug)]
pub struct CallError {
    pub status: Status,
    pub retry_after: Option<Duration>,
}

impl CallError {
    /// Failures worth another attempt: the service was down, overloaded or slow.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.status.code(),
            Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded | Code::Aborted
        )
    }

    pub fn describe(&self, service: &str) -> String {
        let code = imageflow_service::error::code_name(self.status.code());
        format!("{service}: {code}: {}", self.status.message())
    }
}

impl From<Status> for CallError {
    fn from(status: Status) -> Self {
        let status = connection_failure(status);
        let retry_after = status
            .metadata()
            .get("retry-after-ms")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis);
        Self {
            status,
            retry_after,
        }
    }
}

/// A call that failed below gRPC (the connection or its TLS handshake) comes
/// back from tonic as "transport error", often with code UNKNOWN, and the
/// reason only in its source chain (e.g. "received fatal alert:
/// CertificateRequired"). It is the service being unreachable to us:
/// UNAVAILABLE (so retried, and counted as such) with the reason in the text.
fn connection_failure(status: Status) -> Status {
    use std::error::Error as _;
    let Some(source) = status.source() else {
        return status;
    };
    if source.downcast_ref::<tonic::transport::Error>().is_none() {
        return status;
    }
    let mut text = status.message().to_string();
    let mut cause: Option<&dyn std::error::Error> = Some(source);
    while let Some(err) = cause {
        let part = err.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = err.source();
    }
    if text.contains("fatal alert") || text.contains("invalid peer certificate") {
        text.push_str(
            " (TLS handshake refused: check GRPC_TLS_CA and GRPC_TLS_CLIENT_CERT/GRPC_TLS_CLIENT_KEY here against the service's certificate and its GRPC_TLS_CLIENT_CA)",
        );
    }
    Status::unavailable(text)
}

/// Calls the service of `call` on the object `input`, within `timeout`.
pub async fn call(
    services: &Services,
    call: &StepCall,
    input: &ImageData,
    execution_id: &str,
    input_index: Option<u32>,
    timeout: Duration,
) -> Result<CallResult, CallError> {
    let (service, method) = match call {
        StepCall::Resize { .. } => ("imageflow.v1.ResizeService", "ResizeImage"),
        StepCall::Filter { .. } => ("imageflow.v1.FilterService", "ApplyFilter"),
        StepCall::Detect { .. } => ("imageflow.v1.AIDetectionService", "DetectObjects"),
    };
    let span = imageflow_telemetry::spans::grpc_client(service, method, None);
    let result = call_traced(services, call, input, execution_id, input_index, timeout)
        .instrument(span.clone())
        .await;
    match &result {
        Ok(_) => imageflow_telemetry::spans::record_grpc_status(&span, 0, "", false),
        Err(err) => imageflow_telemetry::spans::record_grpc_status(
            &span,
            err.status.code() as i32,
            err.status.message(),
            false,
        ),
    }
    result
}

/// One unary call with the deadline set and the trace carried (the current
/// span is the client span).
async fn unary<Req, Resp, F, Fut>(message: Req, timeout: Duration, send: F) -> Result<Resp, Status>
where
    F: FnOnce(tonic::Request<Req>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    imageflow_telemetry::propagation::inject_grpc(request.metadata_mut());
    Ok(send(request).await?.into_inner())
}

async fn call_traced(
    services: &Services,
    call: &StepCall,
    input: &ImageData,
    execution_id: &str,
    input_index: Option<u32>,
    timeout: Duration,
) -> Result<CallResult, CallError> {
    let image = Some(ImageData {
        bucket: input.bucket.clone(),
        object_key: input.object_key.clone(),
        ..Default::default()
    });
    let started = Instant::now();
    let result = match call {
        StepCall::Resize {
            width,
            height,
            maintain_aspect_ratio,
            quality,
        } => {
            let mut client = ResizeServiceClient::new(services.resize.ready_channel()?)
                .max_decoding_message_size(MAX_MESSAGE_BYTES);
            let message = ResizeRequest {
                input: image.map(resize_request::Input::InputImage),
                target_width: *width,
                target_height: *height,
                maintain_aspect_ratio: *maintain_aspect_ratio,
                quality: v1::ResizeQuality::from(*quality) as i32,
                execution_id: execution_id.to_string(),
                input_index,
            };
            let response = unary(message, timeout, |r| client.resize_image(r)).await?;
            (response.result, Vec::new())
        }
        StepCall::Filter {
            filter_type,
            intensity,
        } => {
            let mut client = FilterServiceClient::new(services.filter.ready_channel()?)
                .max_decoding_message_size(MAX_MESSAGE_BYTES);
            let mut parameters = std::collections::HashMap::new();
            if *intensity == 0.0 {
                // proto3 cannot tell 0 from unset; the service reads a real 0 here.
                parameters.insert("intensity".to_string(), "0".to_string());
            }
            let message = FilterRequest {
                input: image.map(filter_request::Input::InputImage),
                filter_type: v1::FilterType::from(*filter_type) as i32,
                intensity: *intensity,
                parameters,
                execution_id: execution_id.to_string(),
                input_index,
            };
            let response = unary(message, timeout, |r| client.apply_filter(r)).await?;
            (response.result, Vec::new())
        }
        StepCall::Detect {
            model_name,
            confidence_threshold,
            nms_threshold,
            draw_boxes,
        } => {
            let mut client = AiDetectionServiceClient::new(services.detect.ready_channel()?)
                .max_decoding_message_size(MAX_MESSAGE_BYTES);
            let message = DetectionRequest {
                input: image.map(detection_request::Input::InputImage),
                model_name: model_name.clone(),
                confidence_threshold: *confidence_threshold,
                nms_threshold: *nms_threshold,
                draw_boxes: *draw_boxes,
                execution_id: execution_id.to_string(),
                resize_metadata_ref: None,
                input_index,
            };
            let response = unary(message, timeout, |r| client.detect_objects(r)).await?;
            let detections = response
                .detections
                .into_iter()
                .map(|d| {
                    let b = d.bbox.unwrap_or_default();
                    Detection {
                        class_name: d.class_name,
                        class_id: d.class_id,
                        confidence: d.confidence,
                        bbox: BoundingBox {
                            x1: b.x1,
                            y1: b.y1,
                            x2: b.x2,
                            y2: b.y2,
                        },
                    }
                })
                .collect();
            (response.result, detections)
        }
    };
    let (result, detections) = result;
    let Some(result) = result else {
        return Err(Status::internal("the service answered without a result").into());
    };
    if result.status != ProcessingStatus::Completed as i32 {
        return Err(Status::internal(format!(
            "the service answered status {} without an error: {}",
            result.status, result.message
        ))
        .into());
    }
    let service_time =
        if result.processing_time_seconds.is_finite() && result.processing_time_seconds >= 0.0 {
            Duration::from_secs_f64(result.processing_time_seconds)
        } else {
            started.elapsed()
        };
    Ok(CallResult {
        output: result.output_image,
        detections,
        service_time,
        message: result.message,
    })
}

//! `imageflow.v1.FilterService`: blur, gaussian, sharpen, brightness, contrast,
//! saturation and grayscale on JPEG/PNG/WebP images, by bytes or by object.
//!
//! Request fields:
//! * `filter_type` is required (UNSPECIFIED is an error, not a silent no-op);
//! * `intensity` 0 means "the filter's default" (proto3 cannot tell unset from
//!   0); to ask for a real 0 (e.g. brightness 0 = black) send
//!   `parameters["intensity"] = "0"`;
//! * `parameters` accepts `intensity`, `output_format` (JPEG, PNG, WEBP;
//!   default: the input's) and `jpeg_quality` (1-100, default 90). Any other
//!   key is refused so a typo is not silently ignored.

use std::{collections::HashMap, future::Future, time::Duration, time::Instant};

use imageflow_imaging::{FilterKind, FilterSpec, ImageFormat, filter_encoded};
use imageflow_proto::v1::{
    FilterMetadata, FilterRequest, FilterResponse, FilterType, HealthCheckRequest,
    HealthCheckResponse, filter_request,
    filter_service_server::{FilterService, FilterServiceServer},
};
use imageflow_service::{
    ServeError, ServiceConfig, ServiceDefaults, ServiceError, ServiceRuntime,
    io::{self, Input, Origin, Output},
    request::ResponseStream,
};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status, Streaming, server::NamedService};

pub const DEFAULTS: ServiceDefaults = ServiceDefaults {
    binary: "filter-svc",
    service_name: "imageflow-filter",
    max_concurrent_requests: 50,
    request_timeout: Duration::from_secs(30),
};

pub const SUMMARY: &str =
    "Applies filters to JPEG, PNG and WebP images over gRPC (imageflow.v1.FilterService).";

const DEFAULT_JPEG_QUALITY: u8 = 90;
const ACCEPTED_PARAMETERS: &str = "intensity, output_format, jpeg_quality";

/// Serves the filter service on `listener` until `shutdown` resolves.
pub async fn run(
    config: ServiceConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let name = <FilterServiceServer<Filterer> as NamedService>::NAME;
    let prepared = imageflow_service::prepare(&config, vec![name]).await?;
    let filterer = Filterer {
        runtime: prepared.runtime.clone(),
    };
    let max_message = config.max_message_bytes;
    imageflow_service::serve(
        &config,
        prepared,
        |routes| {
            routes.add_service(
                FilterServiceServer::new(filterer)
                    .max_decoding_message_size(max_message)
                    .max_encoding_message_size(max_message),
            )
        },
        listener,
        shutdown,
    )
    .await
}

/// The gRPC handlers.
#[derive(Clone, Debug)]
pub struct Filterer {
    runtime: ServiceRuntime,
}

impl Filterer {
    pub fn new(runtime: ServiceRuntime) -> Self {
        Self { runtime }
    }
}

#[tonic::async_trait]
impl FilterService for Filterer {
    async fn apply_filter(
        &self,
        request: Request<FilterRequest>,
    ) -> Result<Response<FilterResponse>, Status> {
        let runtime = self.runtime.clone();
        self.runtime
            .unary(
                "ApplyFilter",
                request,
                |r| r.execution_id.clone(),
                |req, deadline| filter_one(runtime, req, deadline),
            )
            .await
    }

    type ApplyFilterStreamStream = ResponseStream<FilterResponse>;

    async fn apply_filter_stream(
        &self,
        request: Request<Streaming<FilterRequest>>,
    ) -> Result<Response<Self::ApplyFilterStreamStream>, Status> {
        let runtime = self.runtime.clone();
        Ok(Response::new(self.runtime.stream(
            "ApplyFilterStream",
            request,
            move |req, deadline| filter_one(runtime.clone(), req, deadline),
            |err, started| FilterResponse {
                result: Some(io::failed(err, started)),
                metadata: None,
            },
        )))
    }

    async fn health(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        Ok(Response::new(
            self.runtime.health.check(&request.get_ref().service),
        ))
    }
}

/// A request's filter, validated before any byte is read.
#[derive(Debug, Clone, Copy)]
struct FilterPlan {
    spec: FilterSpec,
    wire_type: FilterType,
    output_format: Option<ImageFormat>,
    jpeg_quality: u8,
}

fn filter_kind(wire: FilterType) -> Option<FilterKind> {
    Some(match wire {
        FilterType::Unspecified => return None,
        FilterType::Blur => FilterKind::Blur,
        FilterType::Sharpen => FilterKind::Sharpen,
        FilterType::Brightness => FilterKind::Brightness,
        FilterType::Contrast => FilterKind::Contrast,
        FilterType::Saturation => FilterKind::Saturation,
        FilterType::Gaussian => FilterKind::Gaussian,
        FilterType::Grayscale => FilterKind::Grayscale,
    })
}

fn plan(req: &FilterRequest) -> Result<FilterPlan, ServiceError> {
    const KNOWN: &str = "BLUR, SHARPEN, BRIGHTNESS, CONTRAST, SATURATION, GAUSSIAN, GRAYSCALE";
    let wire_type = FilterType::try_from(req.filter_type).map_err(|_| {
        ServiceError::InvalidArgument(format!(
            "filter_type {} is not a known filter; use one of {KNOWN}",
            req.filter_type
        ))
    })?;
    let kind = filter_kind(wire_type).ok_or_else(|| {
        ServiceError::InvalidArgument(format!("filter_type is required: one of {KNOWN}"))
    })?;
    if let Some(key) = req
        .parameters
        .keys()
        .find(|k| !ACCEPTED_PARAMETERS.split(", ").any(|a| a == k.as_str()))
    {
        return Err(ServiceError::InvalidArgument(format!(
            "unknown parameter {key:?}; accepted: {ACCEPTED_PARAMETERS}"
        )));
    }
    let intensity = match req.parameters.get("intensity") {
        Some(raw) => raw.trim().parse::<f32>().map_err(|_| {
            ServiceError::InvalidArgument(format!("parameters.intensity {raw:?} is not a number"))
        })?,
        None if req.intensity == 0.0 => kind.default_intensity(),
        None => req.intensity,
    };
    let output_format = match req.parameters.get("output_format") {
        None => None,
        Some(raw) => Some(ImageFormat::from_name(raw).ok_or_else(|| {
            ServiceError::InvalidArgument(format!(
                "parameters.output_format {raw:?} is not supported; use JPEG, PNG or WEBP"
            ))
        })?),
    };
    let jpeg_quality = match req.parameters.get("jpeg_quality") {
        None => DEFAULT_JPEG_QUALITY,
        Some(raw) => raw
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|q| (1..=100).contains(q))
            .ok_or_else(|| {
                ServiceError::InvalidArgument(format!(
                    "parameters.jpeg_quality {raw:?} must be an integer from 1 to 100"
                ))
            })?,
    };
    let spec = FilterSpec { kind, intensity };
    // Range checks live with the filters; run them now so a bad intensity is
    // refused before the image is fetched.
    let (low, high) = kind.intensity_range();
    if !intensity.is_finite() || intensity < low || intensity > high {
        return Err(ServiceError::InvalidArgument(format!(
            "intensity {intensity} is out of range for {}: allowed {low} to {high}",
            kind.name()
        )));
    }
    Ok(FilterPlan {
        spec,
        wire_type,
        output_format,
        jpeg_quality,
    })
}

async fn filter_one(
    runtime: ServiceRuntime,
    req: FilterRequest,
    deadline: Instant,
) -> Result<FilterResponse, ServiceError> {
    let started = Instant::now();
    let plan = plan(&req)?;
    let execution_id = io::execution_id_or_new(&req.execution_id)?;
    let input = req.input.map(|input| match input {
        filter_request::Input::InputImage(image) => Input::Object(image),
        filter_request::Input::InputBytes(image) => Input::Bytes(image),
    });
    let loaded = io::load_input(&runtime.store, input).await?;

    let limits = runtime.limits;
    let data = loaded.data;
    let encoded = runtime
        .door
        .run(deadline, move || {
            filter_encoded(
                &data,
                &limits,
                &plan.spec,
                plan.output_format,
                Some(plan.jpeg_quality),
            )
        })
        .await??;

    let mut applied = HashMap::from([
        ("intensity".to_string(), plan.spec.intensity.to_string()),
        (
            "output_format".to_string(),
            encoded.format.name().to_string(),
        ),
    ]);
    if encoded.format == ImageFormat::Jpeg {
        applied.insert("jpeg_quality".into(), plan.jpeg_quality.to_string());
    }
    let metadata = FilterMetadata {
        filter_type: plan.wire_type as i32,
        intensity: plan.spec.intensity,
        applied_parameters: applied,
    };
    let summary = format!(
        "applied {} (intensity {}) to {}x{} {}",
        plan.spec.kind.name(),
        plan.spec.intensity,
        encoded.width,
        encoded.height,
        encoded.format.name()
    );
    let mut extra = HashMap::from([("execution_id".to_string(), execution_id.clone())]);
    let output = match loaded.origin {
        Origin::Bytes => Output::Bytes(encoded.data),
        Origin::Object { bucket, key } => {
            let operation = format!("{}_{}", plan.spec.kind.name(), plan.spec.intensity);
            let out_key = io::output_key(
                &execution_id,
                req.input_index,
                &key,
                &operation,
                encoded.format,
            )?;
            extra.insert("source_object".into(), key.as_str().to_string());
            Output::Object(io::store_output(&runtime.store, &bucket, &out_key, encoded).await?)
        }
    };
    Ok(FilterResponse {
        result: Some(io::completed(summary, output, started, extra)),
        metadata: Some(metadata),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(filter_type: FilterType, intensity: f32, params: &[(&str, &str)]) -> FilterRequest {
        FilterRequest {
            filter_type: filter_type as i32,
            intensity,
            parameters: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn zero_intensity_means_the_filters_default_unless_spelled_out() {
        let p = plan(&request(FilterType::Gaussian, 0.0, &[])).unwrap();
        assert_eq!(p.spec.intensity, FilterKind::Gaussian.default_intensity());
        let p = plan(&request(FilterType::Brightness, 0.0, &[("intensity", "0")])).unwrap();
        assert_eq!(p.spec.intensity, 0.0);
        let p = plan(&request(FilterType::Brightness, 1.5, &[])).unwrap();
        assert_eq!(p.spec.intensity, 1.5);
    }

    #[test]
    fn every_wire_filter_maps_to_an_imaging_filter() {
        for wire in [
            FilterType::Blur,
            FilterType::Sharpen,
            FilterType::Brightness,
            FilterType::Contrast,
            FilterType::Saturation,
            FilterType::Gaussian,
            FilterType::Grayscale,
        ] {
            assert!(filter_kind(wire).is_some(), "{wire:?}");
        }
    }

    #[test]
    fn bad_requests_are_refused_with_a_reason() {
        let cases = [
            (
                request(FilterType::Unspecified, 1.0, &[]),
                "filter_type is required",
            ),
            (
                FilterRequest {
                    filter_type: 99,
                    ..Default::default()
                },
                "not a known filter",
            ),
            (request(FilterType::Gaussian, -3.0, &[]), "out of range"),
            (request(FilterType::Gaussian, f32::NAN, &[]), "out of range"),
            (
                request(FilterType::Blur, 1.0, &[("radius", "3")]),
                "unknown parameter",
            ),
            (
                request(FilterType::Blur, 1.0, &[("output_format", "GIF")]),
                "not supported",
            ),
            (
                request(FilterType::Blur, 1.0, &[("jpeg_quality", "101")]),
                "1 to 100",
            ),
            (
                request(FilterType::Blur, 1.0, &[("intensity", "lots")]),
                "not a number",
            ),
        ];
        for (req, expected) in cases {
            let err = plan(&req).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument);
            assert!(
                err.to_string().contains(expected),
                "{err} (wanted {expected})"
            );
        }
    }
}

//! `imageflow.v1.ResizeService`: resizes JPEG/PNG/WebP images, by bytes or by
//! object reference. The pixel work is `imageflow_imaging::resize_encoded`
//! (DCT-scaled JPEG decode for large reductions, then `fast_image_resize`).

use std::{collections::HashMap, future::Future, time::Duration, time::Instant};

use imageflow_imaging::{ResizeQuality, ResizeSpec, resize_encoded};
use imageflow_proto::v1::{
    HealthCheckRequest, HealthCheckResponse, ResizeMetadata, ResizeQuality as WireQuality,
    ResizeRequest, ResizeResponse, resize_request,
    resize_service_server::{ResizeService, ResizeServiceServer},
};
use imageflow_service::{
    ServeError, ServiceConfig, ServiceDefaults, ServiceError, ServiceRuntime,
    io::{self, Input, Origin, Output},
    request::ResponseStream,
};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status, Streaming, server::NamedService};

pub const DEFAULTS: ServiceDefaults = ServiceDefaults {
    binary: "resize-svc",
    service_name: "imageflow-resize",
    max_concurrent_requests: 50,
    request_timeout: Duration::from_secs(30),
};

pub const SUMMARY: &str =
    "Resizes JPEG, PNG and WebP images over gRPC (imageflow.v1.ResizeService).";

/// Serves the resize service on `listener` until `shutdown` resolves.
pub async fn run(
    config: ServiceConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let name = <ResizeServiceServer<Resizer> as NamedService>::NAME;
    let prepared = imageflow_service::prepare(&config, vec![name]).await?;
    let resizer = Resizer {
        runtime: prepared.runtime.clone(),
    };
    let max_message = config.max_message_bytes;
    imageflow_service::serve(
        &config,
        prepared,
        |routes| {
            routes.add_service(
                ResizeServiceServer::new(resizer)
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
pub struct Resizer {
    runtime: ServiceRuntime,
}

impl Resizer {
    pub fn new(runtime: ServiceRuntime) -> Self {
        Self { runtime }
    }
}

#[tonic::async_trait]
impl ResizeService for Resizer {
    async fn resize_image(
        &self,
        request: Request<ResizeRequest>,
    ) -> Result<Response<ResizeResponse>, Status> {
        let runtime = self.runtime.clone();
        self.runtime
            .unary(
                "ResizeImage",
                request,
                |r| r.execution_id.clone(),
                |req, deadline| resize_one(runtime, req, deadline),
            )
            .await
    }

    type ResizeImageStreamStream = ResponseStream<ResizeResponse>;

    async fn resize_image_stream(
        &self,
        request: Request<Streaming<ResizeRequest>>,
    ) -> Result<Response<Self::ResizeImageStreamStream>, Status> {
        let runtime = self.runtime.clone();
        Ok(Response::new(self.runtime.stream(
            "ResizeImageStream",
            request,
            move |req, deadline| resize_one(runtime.clone(), req, deadline),
            |err, started| ResizeResponse {
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

/// Checks the parameters before any byte is read, so a bad request costs nothing.
fn resize_spec(req: &ResizeRequest) -> Result<(ResizeSpec, WireQuality), ServiceError> {
    let side = |name: &str, value: i32| {
        u32::try_from(value).map_err(|_| {
            ServiceError::InvalidArgument(format!("{name} must not be negative (got {value})"))
        })
    };
    let width = side("target_width", req.target_width)?;
    let height = side("target_height", req.target_height)?;
    if width == 0 && height == 0 {
        return Err(ServiceError::InvalidArgument(
            "target_width and target_height are both 0: give at least one".into(),
        ));
    }
    let wire_quality = match WireQuality::try_from(req.quality) {
        Ok(WireQuality::Unspecified) => WireQuality::Good,
        Ok(q) => q,
        Err(_) => {
            return Err(ServiceError::InvalidArgument(format!(
                "quality {} is not a ResizeQuality (FAST=1, GOOD=2, BEST=3)",
                req.quality
            )));
        }
    };
    let quality = match wire_quality {
        WireQuality::Fast => ResizeQuality::Fast,
        WireQuality::Best => ResizeQuality::Best,
        WireQuality::Good | WireQuality::Unspecified => ResizeQuality::Good,
    };
    Ok((
        ResizeSpec {
            width,
            height,
            keep_aspect: req.maintain_aspect_ratio,
            quality,
            output_format: None,
        },
        wire_quality,
    ))
}

async fn resize_one(
    runtime: ServiceRuntime,
    req: ResizeRequest,
    deadline: Instant,
) -> Result<ResizeResponse, ServiceError> {
    let started = Instant::now();
    let (spec, quality_used) = resize_spec(&req)?;
    let execution_id = io::execution_id_or_new(&req.execution_id)?;
    let input = req.input.map(|input| match input {
        resize_request::Input::InputImage(image) => Input::Object(image),
        resize_request::Input::InputBytes(image) => Input::Bytes(image),
    });
    let loaded = io::load_input(&runtime.store, input).await?;

    let limits = runtime.limits;
    let data = loaded.data;
    let encoded = runtime
        .door
        .run(deadline, move || resize_encoded(&data, &limits, &spec))
        .await??;

    let metadata = ResizeMetadata {
        original_width: io::to_i32(encoded.original_width),
        original_height: io::to_i32(encoded.original_height),
        output_width: io::to_i32(encoded.width),
        output_height: io::to_i32(encoded.height),
        scale_factor_x: f64::from(encoded.width) / f64::from(encoded.original_width.max(1)),
        scale_factor_y: f64::from(encoded.height) / f64::from(encoded.original_height.max(1)),
        quality_used: quality_used as i32,
    };
    let summary = format!(
        "resized {}x{} to {}x{} ({})",
        encoded.original_width,
        encoded.original_height,
        encoded.width,
        encoded.height,
        encoded.format.name()
    );
    let mut extra = HashMap::from([
        ("execution_id".to_string(), execution_id.clone()),
        (
            "output_format".to_string(),
            encoded.format.name().to_string(),
        ),
    ]);
    let output = match loaded.origin {
        Origin::Bytes => Output::Bytes(encoded.data),
        Origin::Object { bucket, key } => {
            let operation = format!("resize_{}x{}", encoded.width, encoded.height);
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
    Ok(ResizeResponse {
        result: Some(io::completed(summary, output, started, extra)),
        metadata: Some(metadata),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(width: i32, height: i32, quality: i32) -> ResizeRequest {
        ResizeRequest {
            target_width: width,
            target_height: height,
            quality,
            maintain_aspect_ratio: true,
            ..Default::default()
        }
    }

    #[test]
    fn parameters_are_checked_before_any_io() {
        assert!(resize_spec(&request(800, 600, 0)).is_ok());
        assert!(resize_spec(&request(800, 0, 1)).is_ok());
        for bad in [request(-1, 600, 0), request(0, 0, 0), request(800, 600, 9)] {
            let err = resize_spec(&bad).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
        }
    }

    #[test]
    fn unspecified_quality_means_good_and_is_reported_as_used() {
        let (spec, used) = resize_spec(&request(10, 10, 0)).unwrap();
        assert_eq!(spec.quality, ResizeQuality::Good);
        assert_eq!(used, WireQuality::Good);
        let (spec, used) = resize_spec(&request(10, 10, 3)).unwrap();
        assert_eq!(spec.quality, ResizeQuality::Best);
        assert_eq!(used, WireQuality::Best);
    }
}

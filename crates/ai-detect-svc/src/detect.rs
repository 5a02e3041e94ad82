//! One detection request, from parameters to response.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use imageflow_imaging::{
    Annotation, BoxDetection, EncodeOptions, Encoded, Image, ImageFormat, ImagingError, Letterbox,
    Limits, decode, decode_yolo, draw_detections, encode, letterbox_encoded, letterbox_into,
    non_max_suppression,
};
use imageflow_proto::v1::{
    BoundingBox, Detection, DetectionMetadata, DetectionRequest, DetectionResponse,
    detection_request,
};
use imageflow_service::{
    ServiceError, ServiceRuntime,
    io::{self, Input, Origin, Output},
};
use imageflow_storage::ObjectKey;
use serde::Serialize;

use crate::{Models, catalog::ModelSpec};

/// Defaults from the design (proto3 cannot tell an unset float from 0).
pub const DEFAULT_CONFIDENCE: f32 = 0.5;
pub const DEFAULT_NMS: f32 = 0.4;
/// At most this many boxes per image (as Ultralytics' `max_det`).
pub const MAX_DETECTIONS: usize = 300;

/// The thresholds a request asked for, defaults applied, checked.
pub fn thresholds(req: &DetectionRequest) -> Result<(f32, f32), ServiceError> {
    let pick = |name: &str, value: f32, default: f32| {
        if value == 0.0 {
            Ok(default)
        } else if value.is_finite() && value > 0.0 && value <= 1.0 {
            Ok(value)
        } else {
            Err(ServiceError::InvalidArgument(format!(
                "{name} must be in (0, 1], or 0 for the default {default} (got {value})"
            )))
        }
    };
    Ok((
        pick(
            "confidence_threshold",
            req.confidence_threshold,
            DEFAULT_CONFIDENCE,
        )?,
        pick("nms_threshold", req.nms_threshold, DEFAULT_NMS)?,
    ))
}

/// The model input of one image and what is needed to read its output.
struct Prepared {
    tensor: Vec<f32>,
    letterbox: Letterbox,
    format: ImageFormat,
    /// The full-size picture, kept only when boxes are to be drawn.
    picture: Option<Image>,
    elapsed: Duration,
}

/// Decode and letterbox. With nothing to draw, straight into the tensor at a reduced
/// JPEG scale (streamed for photos: resampled on a second core as it decodes); to draw,
/// the full picture is kept.
fn prepare(
    data: &[u8],
    limits: &Limits,
    spec: &ModelSpec,
    keep_picture: bool,
) -> Result<Prepared, ImagingError> {
    let started = Instant::now();
    if !keep_picture {
        let made = letterbox_encoded(data, limits, spec.input_width, spec.input_height)?;
        return Ok(Prepared {
            tensor: made.tensor,
            letterbox: made.letterbox,
            format: made.format,
            picture: None,
            elapsed: started.elapsed(),
        });
    }
    let mut tensor = vec![0.0; spec.image_len()];
    let decoded = decode(data, limits)?;
    let letterbox = letterbox_into(
        &decoded.image,
        decoded.original_width,
        decoded.original_height,
        spec.input_width,
        spec.input_height,
        &mut tensor,
    )?;
    Ok(Prepared {
        tensor,
        letterbox,
        format: decoded.format,
        picture: Some(decoded.image),
        elapsed: started.elapsed(),
    })
}

/// What the blocking post-processing hands back.
struct Finished {
    boxes: Vec<BoxDetection>,
    nms: Duration,
    annotated: Option<Encoded>,
    elapsed: Duration,
}

#[allow(clippy::too_many_arguments)]
fn finish(
    output: &[f32],
    anchors: usize,
    spec: &ModelSpec,
    confidence: f32,
    nms_threshold: f32,
    letterbox: &Letterbox,
    picture: Option<Image>,
    format: ImageFormat,
) -> Result<Finished, ServiceError> {
    let started = Instant::now();
    let candidates = decode_yolo(
        output,
        spec.class_names.len(),
        anchors,
        confidence,
        letterbox,
    )
    .map_err(|e| ServiceError::Internal(format!("model {}: {e}", spec.name)))?;
    let boxes = non_max_suppression(candidates, nms_threshold, MAX_DETECTIONS);
    let nms = started.elapsed();
    let annotated = match picture {
        None => None,
        Some(mut image) => {
            let annotations: Vec<Annotation> = boxes
                .iter()
                .map(|b| Annotation {
                    x1: b.x1,
                    y1: b.y1,
                    x2: b.x2,
                    y2: b.y2,
                    label: format!("{} {:.2}", spec.class_name(b.class_id), b.confidence),
                    colour_index: b.class_id,
                })
                .collect();
            draw_detections(&mut image, &annotations);
            let data = encode(&image, &EncodeOptions::new(format))?;
            Some(Encoded {
                data,
                format,
                width: image.width(),
                height: image.height(),
                original_width: letterbox.source_width,
                original_height: letterbox.source_height,
            })
        }
    };
    Ok(Finished {
        boxes,
        nms,
        annotated,
        elapsed: started.elapsed(),
    })
}

/// The detections JSON stored next to the output object (the same shape as
/// the backend's execution API returns for a detection step).
#[derive(Serialize)]
struct DetectionsDocument<'a> {
    model_name: &'a str,
    model_version: &'a str,
    source: SourceRef<'a>,
    image: ImageSize,
    confidence_threshold: f32,
    nms_threshold: f32,
    detections: Vec<JsonDetection<'a>>,
}

#[derive(Serialize)]
struct SourceRef<'a> {
    bucket: &'a str,
    object_key: &'a str,
}

#[derive(Serialize)]
struct ImageSize {
    width: u32,
    height: u32,
}

#[derive(Serialize)]
struct JsonDetection<'a> {
    class_name: &'a str,
    class_id: i32,
    confidence: f32,
    bbox: JsonBox,
}

#[derive(Serialize)]
struct JsonBox {
    x1: f32,
    y1: f32,
    x2: f32,
    y2: f32,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Serves one request (unary or one item of a stream).
pub async fn detect_one(
    runtime: ServiceRuntime,
    models: Arc<Models>,
    req: DetectionRequest,
    deadline: Instant,
) -> Result<DetectionResponse, ServiceError> {
    let started = Instant::now();
    let (confidence, nms_threshold) = thresholds(&req)?;
    let model = models.resolve(&req.model_name).ok_or_else(|| {
        ServiceError::NotFound(format!(
            "model {:?} is not loaded; available: {} (\"yolo\" or empty = {})",
            req.model_name,
            models.catalog.names().join(", "),
            models.catalog.default_model()
        ))
    })?;
    let execution_id = io::execution_id_or_new(&req.execution_id)?;
    let spec = model.spec.clone();
    let announced = model.batcher.incoming();
    let input = req.input.map(|input| match input {
        detection_request::Input::InputImage(image) => Input::Object(image),
        detection_request::Input::InputBytes(image) => Input::Bytes(image),
    });
    let loaded = io::load_input(&runtime.store, input).await?;

    let (limits, draw, data, pre_spec) =
        (runtime.limits, req.draw_boxes, loaded.data, spec.clone());
    let prepared = runtime
        .door
        .run(deadline, move || prepare(&data, &limits, &pre_spec, draw))
        .await??;
    let Prepared {
        tensor,
        letterbox,
        format,
        picture,
        elapsed: pre_time,
    } = prepared;

    let inference = model.batcher.infer(tensor, deadline, announced).await?;

    let post_spec = spec.clone();
    let finished = runtime
        .door
        .run(deadline, move || {
            finish(
                &inference.output,
                inference.anchors,
                &post_spec,
                confidence,
                nms_threshold,
                &letterbox,
                picture,
                format,
            )
            .map(|f| (f, inference))
        })
        .await??;
    let (finished, inference) = finished;

    let detections: Vec<Detection> = finished
        .boxes
        .iter()
        .map(|b| Detection {
            class_name: spec.class_name(b.class_id),
            confidence: b.confidence,
            bbox: Some(BoundingBox {
                x1: b.x1,
                y1: b.y1,
                x2: b.x2,
                y2: b.y2,
            }),
            class_id: i32::try_from(b.class_id).unwrap_or(i32::MAX),
        })
        .collect();

    let mut extra = HashMap::from([
        ("execution_id".to_string(), execution_id.clone()),
        ("backend".to_string(), model.backend.clone()),
        ("preprocess_ms".to_string(), format!("{:.3}", ms(pre_time))),
        (
            "queue_ms".to_string(),
            format!("{:.3}", ms(inference.queued)),
        ),
        (
            "inference_ms".to_string(),
            format!("{:.3}", ms(inference.inference)),
        ),
        (
            "postprocess_ms".to_string(),
            format!("{:.3}", ms(finished.elapsed)),
        ),
        ("batch_size".to_string(), inference.batch_size.to_string()),
        (
            "image_width".to_string(),
            letterbox.source_width.to_string(),
        ),
        (
            "image_height".to_string(),
            letterbox.source_height.to_string(),
        ),
    ]);
    let output = match loaded.origin {
        Origin::Bytes => finished
            .annotated
            .map_or(Output::None, |encoded| Output::Bytes(encoded.data)),
        Origin::Object { bucket, key } => {
            let image_key = io::output_key(&execution_id, req.input_index, &key, "detect", format)?;
            let json_key = ObjectKey::parse(&format!(
                "{}.json",
                image_key
                    .as_str()
                    .rsplit_once('.')
                    .map_or(image_key.as_str(), |(stem, _)| stem)
            ))?;
            let document = DetectionsDocument {
                model_name: &spec.name,
                model_version: &spec.version,
                source: SourceRef {
                    bucket: bucket.as_str(),
                    object_key: key.as_str(),
                },
                image: ImageSize {
                    width: letterbox.source_width,
                    height: letterbox.source_height,
                },
                confidence_threshold: confidence,
                nms_threshold,
                detections: finished
                    .boxes
                    .iter()
                    .zip(&detections)
                    .map(|(b, d)| JsonDetection {
                        class_name: &d.class_name,
                        class_id: d.class_id,
                        confidence: b.confidence,
                        bbox: JsonBox {
                            x1: b.x1,
                            y1: b.y1,
                            x2: b.x2,
                            y2: b.y2,
                        },
                    })
                    .collect(),
            };
            let json = serde_json::to_vec_pretty(&document)
                .map_err(|e| ServiceError::Internal(format!("detections JSON: {e}")))?;
            Box::pin(
                runtime
                    .store
                    .put(&bucket, &json_key, Bytes::from(json), "application/json"),
            )
            .await?;
            extra.insert("detections_object".into(), json_key.as_str().to_string());
            extra.insert("source_object".into(), key.as_str().to_string());
            match finished.annotated {
                Some(encoded) => Output::Object(
                    io::store_output(&runtime.store, &bucket, &image_key, encoded).await?,
                ),
                None => Output::None,
            }
        }
    };
    let summary = format!(
        "{} object(s) found by {} in {}x{} ({})",
        detections.len(),
        spec.name,
        letterbox.source_width,
        letterbox.source_height,
        format.name()
    );
    let metadata = DetectionMetadata {
        model_name: spec.name.clone(),
        model_version: spec.version.clone(),
        confidence_threshold: confidence,
        nms_threshold,
        total_detections: i32::try_from(detections.len()).unwrap_or(i32::MAX),
        inference_time_ms: ms(inference.inference),
        nms_time_ms: ms(finished.nms),
    };
    Ok(DetectionResponse {
        result: Some(io::completed(summary, output, started, extra)),
        detections,
        metadata: Some(metadata),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(confidence: f32, nms: f32) -> DetectionRequest {
        DetectionRequest {
            confidence_threshold: confidence,
            nms_threshold: nms,
            ..Default::default()
        }
    }

    #[test]
    fn zero_thresholds_mean_the_design_defaults() {
        assert_eq!(thresholds(&request(0.0, 0.0)).unwrap(), (0.5, 0.4));
        assert_eq!(thresholds(&request(0.25, 0.7)).unwrap(), (0.25, 0.7));
        assert_eq!(thresholds(&request(1.0, 1.0)).unwrap(), (1.0, 1.0));
        for (c, n) in [(-0.1, 0.0), (1.5, 0.0), (0.0, f32::NAN), (0.0, 2.0)] {
            let err = thresholds(&request(c, n)).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{c} {n}");
        }
    }
}

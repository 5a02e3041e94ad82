//! Shared by the integration tests: the real model and ONNX Runtime library
//! that `scripts/setup.sh` installs (a missing one fails the test with that
//! advice, never skips it), services on loopback, the photos and what is in
//! them.

#![allow(dead_code)] // each test crate uses a part
#![allow(clippy::unwrap_used)]

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::Duration,
};

use ai_detect_svc::config::DetectConfig;
use imageflow_proto::v1::{
    DetectionRequest, DetectionResponse, ImageBytes, ImageData,
    ai_detection_service_client::AiDetectionServiceClient, detection_request::Input,
};
use imageflow_service::{ServeError, ServiceConfig};
use imageflow_testkit::{RunningService, spawn_service, wait_serving};
use tonic::transport::Channel;

pub const SERVICE: &str = "imageflow.v1.AIDetectionService";

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `MODEL_DIR` and `ORT_DYLIB_PATH` as `scripts/setup.sh` leaves them.
pub fn model_env() -> HashMap<String, String> {
    let models = repo_root().join("models");
    let model = models.join("yolo11n.onnx");
    let lib = models.join("lib/libonnxruntime.so");
    for needed in [&model, &lib] {
        assert!(
            needed.exists(),
            "{} is missing: run scripts/setup.sh (it installs the YOLO11n model and the ONNX Runtime library from PyPI)",
            needed.display()
        );
    }
    HashMap::from([
        ("MODEL_DIR".to_string(), models.display().to_string()),
        ("ORT_DYLIB_PATH".to_string(), lib.display().to_string()),
    ])
}

pub fn fs_env(dir: &Path) -> HashMap<String, String> {
    let mut env = model_env();
    env.insert("STORAGE_URL".into(), format!("file://{}", dir.display()));
    env
}

pub fn configs(env: &HashMap<String, String>) -> (ServiceConfig, DetectConfig) {
    (
        ServiceConfig::from_env(env, ai_detect_svc::DEFAULTS).expect("service config"),
        DetectConfig::from_env(env).expect("detect config"),
    )
}

pub type Client = AiDetectionServiceClient<Channel>;

/// Starts the service and waits for SERVING (the model loaded, the store ready).
pub async fn start(env: &HashMap<String, String>) -> (RunningService<ServeError>, Client) {
    let service = spawn_unready(env).await;
    let channel = service.channel().await;
    wait_serving(channel.clone(), SERVICE, Duration::from_secs(60)).await;
    (service, client(channel))
}

/// Starts the service without waiting for SERVING.
pub async fn spawn_unready(env: &HashMap<String, String>) -> RunningService<ServeError> {
    let (config, detect) = configs(env);
    spawn_service(move |listener, shutdown| ai_detect_svc::run(config, detect, listener, shutdown))
        .await
}

pub fn client(channel: Channel) -> Client {
    AiDetectionServiceClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

pub fn bytes_request(data: Vec<u8>, draw_boxes: bool) -> DetectionRequest {
    DetectionRequest {
        input: Some(Input::InputBytes(ImageBytes {
            data,
            ..Default::default()
        })),
        draw_boxes,
        execution_id: "exec-test".into(),
        ..Default::default()
    }
}

pub fn object_request(
    bucket: &str,
    key: &str,
    execution_id: &str,
    draw_boxes: bool,
) -> DetectionRequest {
    DetectionRequest {
        input: Some(Input::InputImage(ImageData {
            bucket: bucket.into(),
            object_key: key.into(),
            ..Default::default()
        })),
        draw_boxes,
        execution_id: execution_id.into(),
        ..Default::default()
    }
}

/// A photo and the object a person sees in it, boxed by hand from looking at
/// the photo (the astronaut without her helmet, the cup with its handle).
#[derive(Clone, Copy, Debug)]
pub struct Photo {
    pub file: &'static str,
    pub width: u32,
    pub height: u32,
    pub class_name: &'static str,
    /// x1, y1, x2, y2 of the object in the photo's pixels.
    pub object: [f32; 4],
}

pub const PHOTOS: [Photo; 3] = [
    Photo {
        file: "astronaut.jpg",
        width: 512,
        height: 512,
        class_name: "person",
        object: [15.0, 15.0, 365.0, 512.0],
    },
    Photo {
        file: "chelsea.jpg",
        width: 451,
        height: 300,
        class_name: "cat",
        object: [0.0, 0.0, 400.0, 300.0],
    },
    Photo {
        file: "coffee.jpg",
        width: 600,
        height: 400,
        class_name: "cup",
        object: [170.0, 15.0, 415.0, 310.0],
    },
];

pub fn iou(a: [f32; 4], b: [f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let area = |r: [f32; 4]| (r[2] - r[0]) * (r[3] - r[1]);
    let inter = w * h;
    inter / (area(a) + area(b) - inter)
}

/// The response found the photo's object: a detection of its class, inside
/// the image, overlapping the hand-drawn box.
pub fn assert_finds(photo: &Photo, response: &DetectionResponse) {
    let summary: Vec<String> = response
        .detections
        .iter()
        .map(|d| {
            let b = d.bbox.unwrap_or_default();
            format!(
                "{} {:.2} [{:.0} {:.0} {:.0} {:.0}]",
                d.class_name, d.confidence, b.x1, b.y1, b.x2, b.y2
            )
        })
        .collect();
    let best = response
        .detections
        .iter()
        .filter(|d| d.class_name == photo.class_name)
        .max_by(|a, b| a.confidence.total_cmp(&b.confidence))
        .unwrap_or_else(|| panic!("{}: no {} among {summary:?}", photo.file, photo.class_name));
    assert!(best.confidence >= 0.5, "{}: {summary:?}", photo.file);
    let b = best.bbox.expect("a box");
    let (w, h) = (photo.width as f32, photo.height as f32);
    assert!(
        0.0 <= b.x1 && b.x1 < b.x2 && b.x2 <= w && 0.0 <= b.y1 && b.y1 < b.y2 && b.y2 <= h,
        "{}: box {b:?} is not inside {w}x{h}",
        photo.file
    );
    let overlap = iou([b.x1, b.y1, b.x2, b.y2], photo.object);
    assert!(
        overlap >= 0.5,
        "{}: box {b:?} overlaps the {} at {:?} only by IoU {overlap:.2} ({summary:?})",
        photo.file,
        photo.class_name,
        photo.object
    );
}

/// Classes and boxes, rounded, for comparing two answers.
pub fn fingerprint(response: &DetectionResponse) -> Vec<(String, i32, [i32; 4])> {
    response
        .detections
        .iter()
        .map(|d| {
            let b = d.bbox.unwrap_or_default();
            (
                d.class_name.clone(),
                (d.confidence * 100.0).round() as i32,
                [b.x1, b.y1, b.x2, b.y2].map(|v| v.round() as i32),
            )
        })
        .collect()
}

/// Two answers agree when they have the same classes in the same order and
/// boxes and confidences within a small tolerance (batches and backends may
/// differ in the last bits of floating point).
pub fn assert_same_detections(a: &DetectionResponse, b: &DetectionResponse, what: &str) {
    let (fa, fb) = (fingerprint(a), fingerprint(b));
    assert_eq!(fa.len(), fb.len(), "{what}: {fa:?} vs {fb:?}");
    for (x, y) in fa.iter().zip(&fb) {
        assert_eq!(x.0, y.0, "{what}: {fa:?} vs {fb:?}");
        assert!((x.1 - y.1).abs() <= 1, "{what}: {fa:?} vs {fb:?}");
        for i in 0..4 {
            assert!((x.2[i] - y.2[i]).abs() <= 2, "{what}: {fa:?} vs {fb:?}");
        }
    }
}

/// A valid PNG header declaring `width` x `height` RGB (a decompression bomb
/// when large), with a tiny IDAT and IEND.
pub fn png_bomb(width: u32, height: u32) -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(
        &mut png,
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    chunk(&mut png, b"IEND", &[]);
    png
}

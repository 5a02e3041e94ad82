//! ai-detect-svc over real gRPC on loopback, with the real YOLO11n model in
//! ONNX Runtime, real photos, and the filesystem store or a real S3 server
//! (`s3s-fs`).

#![allow(clippy::unwrap_used)] // shared test bodies are not #[test] functions themselves

mod common;

use std::{collections::HashMap, time::Duration};

use common::*;
use imageflow_imaging::{Limits, decode, probe};
use imageflow_proto::v1::{DetectionRequest, ProcessingStatus};
use imageflow_service::error::RETRY_AFTER_MS;
use imageflow_storage::{BucketName, ObjectKey, Store, StoreOptions};
use imageflow_testkit::{
    BlackHole, S3Server, assert_bad_object_key, assert_message_too_large, fixture,
};
use tonic::Code;

#[tokio::test]
async fn finds_the_person_the_cat_and_the_cup() {
    let dir = tempfile::tempdir().unwrap();
    let (service, mut client) = start(&fs_env(dir.path())).await;
    for photo in &PHOTOS {
        let response = client
            .detect_objects(bytes_request(fixture(photo.file), false))
            .await
            .unwrap_or_else(|s| panic!("{}: {s:?}", photo.file))
            .into_inner();
        assert_finds(photo, &response);
        let result = response.result.as_ref().unwrap();
        assert_eq!(result.status, ProcessingStatus::Completed as i32);
        assert!(
            result.output_data.is_empty(),
            "nothing drawn, nothing returned"
        );
        let metadata = response.metadata.as_ref().unwrap();
        assert_eq!(metadata.model_name, "yolo11n");
        assert_eq!(
            (metadata.confidence_threshold, metadata.nms_threshold),
            (0.5, 0.4)
        );
        assert_eq!(
            metadata.total_detections as usize,
            response.detections.len()
        );
        assert!(metadata.inference_time_ms > 0.0 && metadata.nms_time_ms > 0.0);
        assert!(response.detections.iter().all(|d| d.confidence >= 0.5));
        assert_eq!(result.metadata["backend"], "onnx/CPUExecutionProvider");
    }

    // A lower threshold finds at least as much; "yolo" names the same model.
    let photo = &PHOTOS[2];
    let mut request = bytes_request(fixture(photo.file), false);
    request.model_name = "yolo".into();
    request.confidence_threshold = 0.1;
    let low = client.detect_objects(request).await.unwrap().into_inner();
    let default = client
        .detect_objects(bytes_request(fixture(photo.file), false))
        .await
        .unwrap()
        .into_inner();
    assert!(low.detections.len() >= default.detections.len());
    assert!(low.detections.iter().all(|d| d.confidence >= 0.1));
    service.stop().await.unwrap();
}

/// `ai_model_idle_releases_total` for yolo11n, from the process's registry.
fn idle_releases() -> u64 {
    imageflow_telemetry::metrics::render_global()
        .lines()
        .find_map(|line| line.strip_prefix("ai_model_idle_releases_total{model=\"yolo11n\"} "))
        .map_or(0, |n| n.trim().parse().unwrap())
}

#[tokio::test]
async fn an_idle_model_hands_memory_back_and_detects_the_same_after() {
    // Without ONNX Runtime's CPU arena (the default) and with it: the idle
    // release asks only an arena to shrink.
    for arena in ["false", "true"] {
        let dir = tempfile::tempdir().unwrap();
        let mut env = fs_env(dir.path());
        env.insert("IDLE_RELEASE_SECS".into(), "0.3".into());
        env.insert("CPU_MEMORY_ARENA".into(), arena.into());
        let (service, mut client) = start(&env).await;
        let photo = &PHOTOS[2];
        let released = idle_releases();
        let before = client
            .detect_objects(bytes_request(fixture(photo.file), false))
            .await
            .unwrap()
            .into_inner();
        assert_finds(photo, &before);
        // The release runs once per quiet spell: one inference on zeros (with
        // arena shrinkage where there is an arena), then malloc_trim.
        let mut waited = Duration::ZERO;
        while idle_releases() == released {
            assert!(
                waited < Duration::from_secs(30),
                "no idle release 30 s after the last request (CPU_MEMORY_ARENA={arena})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            waited += Duration::from_millis(100);
        }
        let after = client
            .detect_objects(bytes_request(fixture(photo.file), false))
            .await
            .unwrap()
            .into_inner();
        assert_finds(photo, &after);
        assert_eq!(before.detections.len(), after.detections.len());
        service.stop().await.unwrap();
    }
}

#[tokio::test]
async fn draw_boxes_returns_the_annotated_photo() {
    let dir = tempfile::tempdir().unwrap();
    let (service, mut client) = start(&fs_env(dir.path())).await;
    let original = fixture("chelsea.jpg");
    let response = client
        .detect_objects(bytes_request(original.clone(), true))
        .await
        .unwrap()
        .into_inner();
    assert_finds(&PHOTOS[1], &response);
    let annotated = &response.result.as_ref().unwrap().output_data;
    let info = probe(annotated, &Limits::default()).unwrap();
    assert_eq!((info.width, info.height), (451, 300));
    // The box outline is drawn where the cat's box is: its left edge changed colour.
    let before = decode(&original, &Limits::default()).unwrap().image;
    let after = decode(annotated, &Limits::default()).unwrap().image;
    let b = response.detections[0].bbox.unwrap();
    let (x, y) = (b.x1.round() as u32 + 1, ((b.y1 + b.y2) / 2.0) as u32);
    let at = |img: &imageflow_imaging::Image| {
        let i = ((y * img.width() + x) * 3) as usize;
        img.pixels()[i..i + 3].to_vec()
    };
    let diff: i32 = at(&before)
        .iter()
        .zip(at(&after))
        .map(|(a, b)| (i32::from(*a) - i32::from(b)).abs())
        .sum();
    assert!(
        diff > 60,
        "no box edge at ({x}, {y}): {:?} vs {:?}",
        at(&before),
        at(&after)
    );
    service.stop().await.unwrap();
}

/// Object input against both stores: the annotated image and the detections
/// JSON land next to each other under the execution, with the same answers
/// as by bytes.
async fn object_mode(env: HashMap<String, String>, bucket: &str) {
    let (config, _) = configs(&env);
    let store = Store::connect(&config.storage, StoreOptions::default())
        .await
        .unwrap();
    let bucket_name = BucketName::parse(bucket).unwrap();
    store.ensure_bucket(&bucket_name).await.unwrap();
    for photo in &PHOTOS {
        let key = ObjectKey::parse(&format!("uploads/{}", photo.file)).unwrap();
        store
            .put(&bucket_name, &key, fixture(photo.file).into(), "image/jpeg")
            .await
            .unwrap();
    }
    let (service, mut client) = start(&env).await;
    for photo in &PHOTOS {
        let by_bytes = client
            .detect_objects(bytes_request(fixture(photo.file), false))
            .await
            .unwrap()
            .into_inner();
        let key = format!("uploads/{}", photo.file);
        let response = client
            .detect_objects(object_request(bucket, &key, "exec-9", true))
            .await
            .unwrap_or_else(|s| panic!("{}: {s:?}", photo.file))
            .into_inner();
        assert_finds(photo, &response);
        assert_same_detections(&by_bytes, &response, photo.file);
        let result = response.result.as_ref().unwrap();
        let stem = photo.file.trim_end_matches(".jpg");
        let output = result.output_image.as_ref().expect("output_image");
        assert_eq!(output.bucket, bucket);
        assert_eq!(
            output.object_key,
            format!("executions/exec-9/{stem}_detect.jpg")
        );
        assert_eq!(
            (output.width as u32, output.height as u32),
            (photo.width, photo.height)
        );
        let stored = store
            .get(&bucket_name, &ObjectKey::parse(&output.object_key).unwrap())
            .await
            .unwrap();
        assert_eq!(stored.data.len() as i64, output.size_bytes);

        let json_key = format!("executions/exec-9/{stem}_detect.json");
        assert_eq!(result.metadata["detections_object"], json_key);
        let json = store
            .get(&bucket_name, &ObjectKey::parse(&json_key).unwrap())
            .await
            .unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&json.data).unwrap();
        assert_eq!(doc["model_name"], "yolo11n");
        assert_eq!(doc["source"]["object_key"], key.as_str());
        let listed = doc["detections"].as_array().unwrap();
        assert_eq!(listed.len(), response.detections.len());
        for (j, d) in listed.iter().zip(&response.detections) {
            assert_eq!(j["class_name"], d.class_name.as_str());
            assert_eq!(j["class_id"], d.class_id);
            let x1 = j["bbox"]["x1"].as_f64().unwrap();
            assert!((x1 - f64::from(d.bbox.unwrap().x1)).abs() < 1e-3);
        }
    }
    // Without drawing, only the JSON is written and no image is returned.
    let response = client
        .detect_objects(object_request(
            bucket,
            "uploads/coffee.jpg",
            "exec-10",
            false,
        ))
        .await
        .unwrap()
        .into_inner();
    let result = response.result.unwrap();
    assert!(result.output_image.is_none());
    let json_key = ObjectKey::parse("executions/exec-10/coffee_detect.json").unwrap();
    assert!(store.get(&bucket_name, &json_key).await.is_ok());

    // A missing object is NOT_FOUND.
    let status = client
        .detect_objects(object_request(
            bucket,
            "uploads/missing.jpg",
            "exec-9",
            false,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    service.stop().await.unwrap();
}

#[tokio::test]
async fn object_input_on_the_filesystem_store() {
    let dir = tempfile::tempdir().unwrap();
    object_mode(fs_env(dir.path()), "imageflow-files").await;
}

#[tokio::test]
async fn object_input_on_a_real_s3_server() {
    let s3 = S3Server::start().expect("s3s-fs (run scripts/setup.sh)");
    let mut env = model_env();
    env.extend(s3.storage_env("detect-test"));
    object_mode(env, "detect-test").await;
}

#[tokio::test]
async fn a_stream_answers_in_order_like_unary_calls_and_survives_a_bad_item() {
    let dir = tempfile::tempdir().unwrap();
    let (service, mut client) = start(&fs_env(dir.path())).await;
    let mut requests: Vec<DetectionRequest> = PHOTOS
        .iter()
        .map(|p| bytes_request(fixture(p.file), false))
        .collect();
    requests.insert(1, bytes_request(b"not an image".to_vec(), false));
    let mut responses = client
        .detect_objects_stream(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut answers = Vec::new();
    while let Some(response) = responses.message().await.unwrap() {
        answers.push(response);
    }
    assert_eq!(answers.len(), 4);
    let failed = answers.remove(1);
    let result = failed.result.unwrap();
    assert_eq!(result.status, ProcessingStatus::Failed as i32);
    assert_eq!(result.metadata["grpc_code"], "INVALID_ARGUMENT");
    for (photo, streamed) in PHOTOS.iter().zip(&answers) {
        assert_finds(photo, streamed);
        let unary = client
            .detect_objects(bytes_request(fixture(photo.file), false))
            .await
            .unwrap()
            .into_inner();
        assert_same_detections(&unary, streamed, photo.file);
    }
    service.stop().await.unwrap();
}

#[tokio::test]
async fn concurrent_requests_share_batches_and_get_the_same_answers() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = fs_env(dir.path());
    // A generous window so the test does not depend on timing.
    env.insert("BATCH_WINDOW_MS".into(), "300".into());
    let (service, client) = start(&env).await;
    let mut solo = client.clone();
    let reference = solo
        .detect_objects(bytes_request(fixture("astronaut.jpg"), false))
        .await
        .unwrap()
        .into_inner();
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move {
                client
                    .detect_objects(bytes_request(fixture("astronaut.jpg"), false))
                    .await
                    .map(|r| r.into_inner())
            })
        })
        .collect();
    let mut largest = 0;
    for call in calls {
        let response = call.await.unwrap().expect("detect");
        assert_same_detections(&reference, &response, "batched");
        let batch: usize = response.result.as_ref().unwrap().metadata["batch_size"]
            .parse()
            .unwrap();
        largest = largest.max(batch);
    }
    assert!(largest >= 2, "six concurrent requests never shared a batch");
    service.stop().await.unwrap();
}

#[tokio::test]
async fn bad_images_and_parameters_are_invalid_argument() {
    let dir = tempfile::tempdir().unwrap();
    let (service, mut client) = start(&fs_env(dir.path())).await;
    let jpeg = fixture("coffee.jpg");
    let mut cases: Vec<(DetectionRequest, &str)> = vec![
        (
            bytes_request(b"definitely not an image".to_vec(), false),
            "unsupported",
        ),
        (bytes_request(jpeg[..jpeg.len() / 2].to_vec(), false), ""),
        (bytes_request(Vec::new(), false), "empty"),
        (bytes_request(png_bomb(60000, 60000), false), "60000"),
        (DetectionRequest::default(), "no input"),
    ];
    let mut bad_threshold = bytes_request(jpeg.clone(), false);
    bad_threshold.confidence_threshold = 1.5;
    cases.push((bad_threshold, "confidence_threshold"));
    let mut bad_nms = bytes_request(jpeg.clone(), false);
    bad_nms.nms_threshold = -0.2;
    cases.push((bad_nms, "nms_threshold"));
    let mut bad_execution = bytes_request(jpeg.clone(), false);
    bad_execution.execution_id = "../escape".into();
    cases.push((bad_execution, "execution_id"));
    for (request, expected) in cases {
        let status = client.detect_objects(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().to_lowercase().contains(expected),
            "{:?} does not mention {expected:?}",
            status.message()
        );
    }
    service.stop().await.unwrap();
}

#[tokio::test]
async fn an_unknown_model_is_not_found_and_names_the_loaded_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (service, mut client) = start(&fs_env(dir.path())).await;
    let mut request = bytes_request(fixture("coffee.jpg"), false);
    request.model_name = "yolov5x".into();
    let status = client.detect_objects(request).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(status.message().contains("yolo11n"), "{status:?}");
    service.stop().await.unwrap();
}

#[tokio::test]
async fn over_the_concurrency_limit_is_resource_exhausted() {
    // Storage that never answers holds the first request in flight.
    let hole = BlackHole::start().await;
    let mut env = model_env();
    env.extend([
        ("STORAGE_URL".to_string(), "s3://stuck".to_string()),
        ("S3_ENDPOINT".to_string(), hole.url()),
        (
            "AWS_ACCESS_KEY_ID".to_string(),
            "test-loopback-only".to_string(),
        ),
        (
            "AWS_SECRET_ACCESS_KEY".to_string(),
            "test-loopback-only".to_string(),
        ),
        ("MAX_CONCURRENT_REQUESTS".to_string(), "1".to_string()),
    ]);
    let service = spawn_unready(&env).await;
    let mut client = client(service.channel().await);
    let hold = |client: &Client| {
        let mut client = client.clone();
        tokio::spawn(async move {
            client
                .detect_objects(object_request("stuck", "a.jpg", "exec-1", false))
                .await
        })
    };
    // Let the stuck request take the only slot before anything else asks.
    let mut stuck = hold(&client);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = loop {
        if stuck.is_finished() {
            // It lost the race for the slot; try again.
            stuck = hold(&client);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        match client
            .detect_objects(bytes_request(fixture("coffee.jpg"), false))
            .await
        {
            Err(status) if status.code() == Code::ResourceExhausted => break status,
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    assert!(status.metadata().get(RETRY_AFTER_MS).is_some());
    assert!(status.message().contains("limit of 1"), "{status:?}");
    stuck.abort();
    service.stop().await.unwrap();
}

#[tokio::test]
async fn health_waits_for_the_model_server() {
    // With a Triton backend that is not there, the store is ready but the
    // model is not: health must stay NOT_SERVING and requests fail UNAVAILABLE.
    let dir = tempfile::tempdir().unwrap();
    let mut env = fs_env(dir.path());
    env.insert("INFERENCE_BACKEND".into(), "triton".into());
    env.insert(
        "TRITON_URL".into(),
        format!("http://{}", imageflow_testkit::closed_port()),
    );
    let service = spawn_unready(&env).await;
    let channel = service.channel().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: SERVICE.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::NotServing as i32
    );
    let mut client = client(channel);
    let custom = client
        .health(imageflow_proto::v1::HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        custom.status,
        imageflow_proto::v1::health_check_response::ServingStatus::NotServing as i32
    );
    let status = client
        .detect_objects(bytes_request(fixture("coffee.jpg"), false))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    service.stop().await.unwrap();
}

#[tokio::test]
async fn a_missing_model_dir_stops_the_service_with_advice() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = fs_env(dir.path());
    env.insert(
        "MODEL_DIR".into(),
        dir.path().join("nothing").display().to_string(),
    );
    let service = spawn_unready(&env).await;
    let err = service.join().await.unwrap_err();
    assert!(err.to_string().contains("MODEL_DIR"), "{err}");
    assert!(err.to_string().contains("scripts/setup.sh"), "{err}");
}

#[tokio::test]
async fn reflection_lists_the_service() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let dir = tempfile::tempdir().unwrap();
    let (service, _) = start(&fs_env(dir.path())).await;
    let mut reflection = ServerReflectionClient::new(service.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.message().await.unwrap().unwrap().message_response
    else {
        panic!("unexpected reflection answer");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&SERVICE.to_string()), "{names:?}");
    service.stop().await.unwrap();
}

#[tokio::test]
async fn asking_for_cuda_without_it_falls_back_to_the_cpu() {
    // The test library is the CPU wheel's (and this machine has no GPU): with or
    // without the `cuda` feature the service must start on the CPU and work.
    let dir = tempfile::tempdir().unwrap();
    let mut env = fs_env(dir.path());
    env.insert("EXECUTION_PROVIDER".into(), "cuda".into());
    let (service, mut client) = start(&env).await;
    let response = client
        .detect_objects(bytes_request(fixture("coffee.jpg"), false))
        .await
        .unwrap()
        .into_inner();
    assert_finds(&PHOTOS[2], &response);
    assert_eq!(
        response.result.unwrap().metadata["backend"],
        "onnx/CPUExecutionProvider"
    );
    service.stop().await.unwrap();
}

#[tokio::test]
async fn object_keys_are_checked_and_oversized_messages_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = fs_env(dir.path());
    env.insert("GRPC_MAX_MESSAGE_BYTES".into(), "65536".into());
    let (service, mut client) = start(&env).await;
    let too_long = "k".repeat(1025);
    for (bad, why) in [
        ("a/../../etc/passwd", "'..'"),
        ("/etc/passwd", "'/'"),
        ("", "empty"),
        ("in/tab\there.jpg", "control characters"),
        (too_long.as_str(), "limit is 1024"),
    ] {
        let status = client
            .detect_objects(object_request("imageflow-files", bad, "exec-keys", false))
            .await
            .unwrap_err();
        assert_bad_object_key(&status, bad, why);
    }

    // Over GRPC_MAX_MESSAGE_BYTES (coffee.jpg is 72 KB): refused by the codec.
    let status = client
        .detect_objects(bytes_request(fixture("coffee.jpg"), false))
        .await
        .unwrap_err();
    assert_message_too_large(&status);
    service.stop().await.unwrap();
}

//! resize-svc over real gRPC on loopback, against the filesystem store and a
//! real S3 server (`s3s-fs`).

#![allow(clippy::unwrap_used)] // shared test bodies are not #[test] functions themselves

use std::{collections::HashMap, time::Duration};

use imageflow_imaging::{ImageFormat, Limits, decode, probe};
use imageflow_proto::v1::{
    ImageBytes, ImageData, ProcessingStatus, ResizeQuality, ResizeRequest, resize_request::Input,
    resize_service_client::ResizeServiceClient,
};
use imageflow_service::{ServiceConfig, error::RETRY_AFTER_MS};
use imageflow_storage::{BucketName, ObjectKey, Store, StoreOptions};
use imageflow_testkit::{
    BlackHole, RunningService, S3Server, assert_bad_object_key, assert_message_too_large, fixture,
    spawn_service, wait_serving,
};
use tonic::{Code, transport::Channel};

const SERVICE: &str = "imageflow.v1.ResizeService";

fn config(env: HashMap<String, String>) -> ServiceConfig {
    ServiceConfig::from_env(&env, resize_svc::DEFAULTS).expect("test config")
}

fn fs_env(dir: &std::path::Path) -> HashMap<String, String> {
    HashMap::from([(
        "STORAGE_URL".to_string(),
        format!("file://{}", dir.display()),
    )])
}

async fn start(
    config: ServiceConfig,
) -> (
    RunningService<imageflow_service::ServeError>,
    ResizeServiceClient<Channel>,
) {
    let service =
        spawn_service(move |listener, shutdown| resize_svc::run(config, listener, shutdown)).await;
    let channel = service.channel().await;
    wait_serving(channel.clone(), SERVICE, Duration::from_secs(20)).await;
    (service, ResizeServiceClient::new(channel))
}

fn bytes_request(data: Vec<u8>, width: i32, height: i32, keep_aspect: bool) -> ResizeRequest {
    ResizeRequest {
        input: Some(Input::InputBytes(ImageBytes {
            data,
            ..Default::default()
        })),
        target_width: width,
        target_height: height,
        maintain_aspect_ratio: keep_aspect,
        quality: ResizeQuality::Good as i32,
        execution_id: "exec-test".into(),
        input_index: None,
    }
}

fn object_request(bucket: &str, key: &str, execution_id: &str) -> ResizeRequest {
    ResizeRequest {
        input: Some(Input::InputImage(ImageData {
            bucket: bucket.into(),
            object_key: key.into(),
            ..Default::default()
        })),
        target_width: 800,
        target_height: 600,
        maintain_aspect_ratio: true,
        quality: ResizeQuality::Fast as i32,
        execution_id: execution_id.into(),
        input_index: None,
    }
}

#[tokio::test]
async fn resizes_bytes_keeping_aspect_and_reports_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let (service, mut client) = start(config(fs_env(dir.path()))).await;

    let response = client
        .resize_image(bytes_request(
            fixture("photo-1920x1080.jpg"),
            800,
            600,
            true,
        ))
        .await
        .expect("resize")
        .into_inner();
    let result = response.result.unwrap();
    assert_eq!(result.status, ProcessingStatus::Completed as i32);
    assert!(result.output_image.is_none());
    let info = probe(&result.output_data, &Limits::default()).unwrap();
    assert_eq!(
        (info.format, info.width, info.height),
        (ImageFormat::Jpeg, 800, 450)
    );
    let metadata = response.metadata.unwrap();
    assert_eq!(
        (metadata.original_width, metadata.original_height),
        (1920, 1080)
    );
    assert_eq!((metadata.output_width, metadata.output_height), (800, 450));
    assert!((metadata.scale_factor_x - 800.0 / 1920.0).abs() < 1e-9);
    assert_eq!(metadata.quality_used, ResizeQuality::Good as i32);
    assert!(result.processing_time_seconds > 0.0);

    // Exact size when the aspect ratio is not kept; PNG stays PNG.
    let response = client
        .resize_image(bytes_request(fixture("chelsea.png"), 300, 100, false))
        .await
        .unwrap()
        .into_inner();
    let data = response.result.unwrap().output_data;
    let decoded = decode(&data, &Limits::default()).unwrap();
    assert_eq!(decoded.format, ImageFormat::Png);
    assert_eq!((decoded.image.width(), decoded.image.height()), (300, 100));

    service.stop().await.unwrap();
}

/// The same object-mode scenario against both storage backends.
async fn object_mode_roundtrip(env: HashMap<String, String>, bucket: &str) {
    let config = config(env);
    let store = Store::connect(&config.storage, StoreOptions::default())
        .await
        .unwrap();
    let bucket_name = BucketName::parse(bucket).unwrap();
    store.ensure_bucket(&bucket_name).await.unwrap();
    let key = ObjectKey::parse("uploads/photo.jpg").unwrap();
    store
        .put(
            &bucket_name,
            &key,
            fixture("photo-1920x1080.jpg").into(),
            "image/jpeg",
        )
        .await
        .unwrap();

    let (service, mut client) = start(config).await;
    let response = client
        .resize_image(object_request(bucket, "uploads/photo.jpg", "exec-7"))
        .await
        .expect("resize by object")
        .into_inner();
    let result = response.result.unwrap();
    assert!(
        result.output_data.is_empty(),
        "object mode returns a reference"
    );
    let output = result.output_image.unwrap();
    assert_eq!(output.bucket, bucket);
    assert_eq!(
        output.object_key,
        "executions/exec-7/photo_resize_800x450.jpg"
    );
    assert_eq!((output.width, output.height), (800, 450));
    assert_eq!(output.content_type, "image/jpeg");

    let stored = store
        .get(&bucket_name, &ObjectKey::parse(&output.object_key).unwrap())
        .await
        .unwrap();
    assert_eq!(stored.data.len() as i64, output.size_bytes);
    let info = probe(&stored.data, &Limits::default()).unwrap();
    assert_eq!((info.width, info.height), (800, 450));

    // A missing object is NOT_FOUND, naming what was asked for.
    let status = client
        .resize_image(object_request(bucket, "uploads/missing.jpg", "exec-7"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(status.message().contains("missing.jpg"), "{status:?}");

    // Keys that try to escape, or that S3 would refuse, are refused before
    // storage is touched, naming the field and the rule.
    let too_long = format!("uploads/{}", "k".repeat(1020));
    for (bad, why) in [
        ("../etc/passwd", "'..'"),
        ("uploads/../../etc/passwd", "'..'"),
        ("/abs/key", "'/'"),
        ("a//b", "empty segments"),
        ("", "empty"),
        ("uploads/a\0b.jpg", "control characters"),
        ("uploads/new\nline.jpg", "control characters"),
        (too_long.as_str(), "limit is 1024"),
    ] {
        let status = client
            .resize_image(object_request(bucket, bad, "exec-7"))
            .await
            .unwrap_err();
        assert_bad_object_key(&status, bad, why);
        // Bounded: a hostile key does not come back whole.
        assert!(status.message().len() < 300, "{status:?}");
    }
    let status = client
        .resize_image(object_request(
            "Not_A_Bucket",
            "uploads/photo.jpg",
            "exec-7",
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with("input_image.bucket: "),
        "{status:?}"
    );
    service.stop().await.unwrap();
}

#[tokio::test]
async fn object_mode_on_the_filesystem_store() {
    let dir = tempfile::tempdir().unwrap();
    object_mode_roundtrip(fs_env(dir.path()), "imageflow-files").await;
}

#[tokio::test]
async fn object_mode_on_a_real_s3_server() {
    let s3 = S3Server::start().expect("s3s-fs");
    object_mode_roundtrip(s3.storage_env("resize-test"), "resize-test").await;
}

#[tokio::test]
async fn bad_input_gets_invalid_argument_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (service, mut client) = start(config(fs_env(dir.path()))).await;
    let jpeg = fixture("photo-1920x1080.jpg");
    let cases: Vec<(ResizeRequest, &str)> = vec![
        (
            ResizeRequest {
                target_width: 10,
                target_height: 10,
                ..Default::default()
            },
            "no input",
        ),
        (bytes_request(Vec::new(), 10, 10, true), "empty"),
        (
            bytes_request(b"definitely not an image".to_vec(), 10, 10, true),
            "",
        ),
        (
            bytes_request(jpeg[..jpeg.len() / 2].to_vec(), 10, 10, true),
            "",
        ),
        (bytes_request(jpeg.clone(), 0, 0, true), "both 0"),
        (bytes_request(jpeg.clone(), -5, 10, true), "negative"),
        (
            bytes_request(jpeg.clone(), 100_000, 100_000, false),
            "limit",
        ),
        (
            ResizeRequest {
                quality: 42,
                ..bytes_request(jpeg.clone(), 10, 10, true)
            },
            "ResizeQuality",
        ),
        (
            ResizeRequest {
                execution_id: "../escape".into(),
                ..bytes_request(jpeg.clone(), 10, 10, true)
            },
            "execution_id",
        ),
    ];
    for (request, expected) in cases {
        let status = client.resize_image(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains(expected),
            "{:?} does not mention {expected:?}",
            status.message()
        );
    }
    service.stop().await.unwrap();
}

#[tokio::test]
async fn a_stream_answers_in_order_and_survives_a_bad_item() {
    let dir = tempfile::tempdir().unwrap();
    let (service, mut client) = start(config(fs_env(dir.path()))).await;
    let photo = fixture("photo-1920x1080.jpg");
    let requests = vec![
        bytes_request(photo.clone(), 400, 400, true),
        bytes_request(b"corrupt".to_vec(), 400, 400, true),
        bytes_request(photo.clone(), 100, 50, false),
        bytes_request(fixture("chelsea.png"), 64, 64, true),
    ];
    let mut responses = client
        .resize_image_stream(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut sizes = Vec::new();
    while let Some(response) = responses.message().await.unwrap() {
        let result = response.result.unwrap();
        if result.status == ProcessingStatus::Failed as i32 {
            assert_eq!(result.metadata["grpc_code"], "INVALID_ARGUMENT");
            sizes.push(None);
        } else {
            let m = response.metadata.unwrap();
            sizes.push(Some((m.output_width, m.output_height)));
        }
    }
    assert_eq!(
        sizes,
        // chelsea.png is 451x300: keep-aspect fits it inside 64x64 as 64x43.
        vec![Some((400, 225)), None, Some((100, 50)), Some((64, 43))]
    );
    service.stop().await.unwrap();
}

#[tokio::test]
async fn over_the_concurrency_limit_is_resource_exhausted_with_retry_after() {
    // Storage that never answers keeps the first request in flight for as long
    // as the test needs, without timing games.
    let hole = BlackHole::start().await;
    let mut env = HashMap::from([
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
    env.insert("REQUEST_TIMEOUT_SECONDS".into(), "30".into());
    let config = config(env);
    // Storage never becomes ready here, so do not wait for SERVING.
    let service =
        spawn_service(move |listener, shutdown| resize_svc::run(config, listener, shutdown)).await;
    let mut client = ResizeServiceClient::new(service.channel().await);

    let hold = |client: &ResizeServiceClient<Channel>| {
        let mut client = client.clone();
        tokio::spawn(async move {
            client
                .resize_image(object_request("stuck", "a.jpg", "exec-1"))
                .await
        })
    };
    // Let the stuck request take the only slot before anything else asks; if
    // it lost the race for it (it was refused), send it again.
    let mut stuck = hold(&client);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = loop {
        if stuck.is_finished() {
            stuck = hold(&client);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let status = client
            .resize_image(bytes_request(fixture("chelsea.png"), 10, 10, true))
            .await;
        match status {
            Err(status) if status.code() == Code::ResourceExhausted => break status,
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    let retry_after: u64 = status
        .metadata()
        .get(RETRY_AFTER_MS)
        .expect("retry-after-ms metadata")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after > 0);
    assert!(status.message().contains("limit of 1"), "{status:?}");
    stuck.abort();
    service.stop().await.unwrap();
}

#[tokio::test]
async fn a_request_past_its_deadline_is_deadline_exceeded() {
    let hole = BlackHole::start().await;
    let env = HashMap::from([
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
        ("REQUEST_TIMEOUT_SECONDS".to_string(), "0.3".to_string()),
    ]);
    let config = config(env);
    let service =
        spawn_service(move |listener, shutdown| resize_svc::run(config, listener, shutdown)).await;
    let mut client = ResizeServiceClient::new(service.channel().await);
    let status = client
        .resize_image(object_request("stuck", "a.jpg", "exec-1"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    service.stop().await.unwrap();
}

#[tokio::test]
async fn storage_down_is_unavailable_after_bounded_retries() {
    let closed = imageflow_testkit::closed_port();
    let env = HashMap::from([
        ("STORAGE_URL".to_string(), "s3://down".to_string()),
        ("S3_ENDPOINT".to_string(), format!("http://{closed}")),
        (
            "AWS_ACCESS_KEY_ID".to_string(),
            "test-loopback-only".to_string(),
        ),
        (
            "AWS_SECRET_ACCESS_KEY".to_string(),
            "test-loopback-only".to_string(),
        ),
    ]);
    let config = config(env);
    let service =
        spawn_service(move |listener, shutdown| resize_svc::run(config, listener, shutdown)).await;
    let channel = service.channel().await;
    let mut client = ResizeServiceClient::new(channel.clone());
    let status = client
        .resize_image(object_request("down", "a.jpg", "exec-1"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    // Health says so too, on both health services.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let standard = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        standard.status,
        tonic_health::pb::health_check_response::ServingStatus::NotServing as i32
    );
    let custom = client
        .health(imageflow_proto::v1::HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        custom.status,
        imageflow_proto::v1::health_check_response::ServingStatus::NotServing as i32
    );
    // Bytes input does not need storage and still works.
    let response = client
        .resize_image(bytes_request(fixture("chelsea.png"), 32, 32, true))
        .await
        .unwrap();
    assert_eq!(
        response.into_inner().result.unwrap().status,
        ProcessingStatus::Completed as i32
    );
    service.stop().await.unwrap();
}

#[tokio::test]
async fn oversized_messages_are_refused_by_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = fs_env(dir.path());
    env.insert("GRPC_MAX_MESSAGE_BYTES".into(), "65536".into());
    let (service, mut client) = start(config(env)).await;
    let status = client
        .resize_image(bytes_request(vec![0u8; 200_000], 10, 10, true))
        .await
        .unwrap_err();
    assert_message_too_large(&status);

    // A small request whose answer is over the limit: the server refuses to
    // send it rather than the client choking on it.
    let small = fixture("horse.png");
    assert!(small.len() < 65536);
    let status = client
        .resize_image(bytes_request(small, 1500, 1500, false))
        .await
        .unwrap_err();
    assert_message_too_large(&status);
    service.stop().await.unwrap();
}

#[tokio::test]
async fn reflection_and_health_describe_the_service() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let dir = tempfile::tempdir().unwrap();
    let (service, mut client) = start(config(fs_env(dir.path()))).await;

    let custom = client
        .health(imageflow_proto::v1::HealthCheckRequest {
            service: SERVICE.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        custom.status,
        imageflow_proto::v1::health_check_response::ServingStatus::Serving as i32
    );

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
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&SERVICE.to_string()), "{names:?}");
    assert!(
        names.contains(&"grpc.health.v1.Health".to_string()),
        "{names:?}"
    );
    service.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_flips_health_and_finishes_in_flight_work() {
    let dir = tempfile::tempdir().unwrap();
    let (mut service, mut client) = start(config(fs_env(dir.path()))).await;
    // An open stream is work in flight that the test fully controls.
    let (send, receive) = tokio::sync::mpsc::channel(4);
    send.send(bytes_request(fixture("chelsea.png"), 64, 64, true))
        .await
        .unwrap();
    let mut responses = client
        .resize_image_stream(tokio_stream::wrappers::ReceiverStream::new(receive))
        .await
        .unwrap()
        .into_inner();
    assert!(responses.message().await.unwrap().is_some());

    let mut health = tonic_health::pb::health_client::HealthClient::new(service.channel().await);
    service.begin_stop();
    let not_serving = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;
    // The drain has begun once health says NOT_SERVING (new connections may
    // already be refused, which also proves it).
    for _ in 0..200 {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .map(|r| r.into_inner().status)
            .map_err(|s| s.code());
        if status != Ok(tonic_health::pb::health_check_response::ServingStatus::Serving as i32) {
            assert!(status.is_err() || status == Ok(not_serving), "{status:?}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The stream opened before the stop is still served to its end.
    send.send(bytes_request(
        fixture("photo-1920x1080.jpg"),
        100,
        100,
        true,
    ))
    .await
    .unwrap();
    let response = responses
        .message()
        .await
        .unwrap()
        .expect("in-flight item answered");
    assert_eq!(
        response.result.unwrap().status,
        ProcessingStatus::Completed as i32
    );
    drop(send);
    assert!(responses.message().await.unwrap().is_none());
    service.join().await.expect("clean stop");
}

//! filter-svc over real gRPC on loopback, against the filesystem store and a
//! real S3 server (`s3s-fs`).

#![allow(clippy::unwrap_used)] // shared test helpers are not #[test] functions themselves

use std::{collections::HashMap, time::Duration};

use imageflow_imaging::{ImageFormat, Limits, decode};
use imageflow_proto::v1::{
    FilterRequest, FilterType, ImageBytes, ImageData, ProcessingStatus, filter_request::Input,
    filter_service_client::FilterServiceClient,
};
use imageflow_service::ServiceConfig;
use imageflow_storage::{BucketName, ObjectKey, Store, StoreOptions};
use imageflow_testkit::{
    RunningService, S3Server, assert_bad_object_key, assert_message_too_large, fixture,
    spawn_service, wait_serving,
};
use tonic::{Code, transport::Channel};

const SERVICE: &str = "imageflow.v1.FilterService";

async fn start(
    env: HashMap<String, String>,
) -> (
    RunningService<imageflow_service::ServeError>,
    FilterServiceClient<Channel>,
) {
    let config = ServiceConfig::from_env(&env, filter_svc::DEFAULTS).expect("test config");
    let service =
        spawn_service(move |listener, shutdown| filter_svc::run(config, listener, shutdown)).await;
    let channel = service.channel().await;
    wait_serving(channel.clone(), SERVICE, Duration::from_secs(20)).await;
    (service, FilterServiceClient::new(channel))
}

fn fs_env(dir: &std::path::Path) -> HashMap<String, String> {
    HashMap::from([(
        "STORAGE_URL".to_string(),
        format!("file://{}", dir.display()),
    )])
}

fn bytes_request(data: Vec<u8>, filter: FilterType, intensity: f32) -> FilterRequest {
    FilterRequest {
        input: Some(Input::InputBytes(ImageBytes {
            data,
            ..Default::default()
        })),
        filter_type: filter as i32,
        intensity,
        parameters: HashMap::new(),
        execution_id: "exec-filter".into(),
        input_index: None,
    }
}

fn mean(data: &[u8]) -> f64 {
    let decoded = decode(data, &Limits::default()).unwrap();
    let pixels = decoded.image.pixels();
    pixels.iter().map(|&p| f64::from(p)).sum::<f64>() / pixels.len() as f64
}

#[tokio::test]
async fn every_filter_runs_over_grpc_and_keeps_the_size() {
    let dir = tempfile::tempdir().unwrap();
    let (service, mut client) = start(fs_env(dir.path())).await;
    let photo = fixture("chelsea.png");
    for (filter, intensity) in [
        (FilterType::Blur, 3.0),
        (FilterType::Gaussian, 2.0),
        (FilterType::Sharpen, 1.0),
        (FilterType::Brightness, 1.3),
        (FilterType::Contrast, 1.5),
        (FilterType::Saturation, 0.5),
        (FilterType::Grayscale, 1.0),
    ] {
        let response = client
            .apply_filter(bytes_request(photo.clone(), filter, intensity))
            .await
            .unwrap_or_else(|s| panic!("{filter:?}: {s:?}"))
            .into_inner();
        let result = response.result.unwrap();
        assert_eq!(result.status, ProcessingStatus::Completed as i32);
        let decoded = decode(&result.output_data, &Limits::default()).unwrap();
        assert_eq!(
            decoded.format,
            ImageFormat::Png,
            "{filter:?}: PNG stays PNG"
        );
        assert_eq!((decoded.image.width(), decoded.image.height()), (451, 300));
        let metadata = response.metadata.unwrap();
        assert_eq!(metadata.filter_type, filter as i32);
        assert_eq!(metadata.intensity, intensity);
        assert_eq!(metadata.applied_parameters["output_format"], "PNG");
    }
    service.stop().await.unwrap();
}

#[tokio::test]
async fn brightness_changes_the_mean_as_asked() {
    let dir = tempfile::tempdir().unwrap();
    let (service, mut client) = start(fs_env(dir.path())).await;
    let photo = fixture("chelsea.png");
    let original = mean(&photo);
    let run = |intensity: f32| {
        let request = bytes_request(photo.clone(), FilterType::Brightness, intensity);
        let mut client = client.clone();
        async move {
            let out = client.apply_filter(request).await.unwrap().into_inner();
            mean(&out.result.unwrap().output_data)
        }
    };
    let brighter = run(1.4).await;
    let darker = run(0.6).await;
    assert!(brighter > original + 10.0, "{brighter} vs {original}");
    assert!(darker < original - 10.0, "{darker} vs {original}");
    // A real zero is asked for explicitly and gives black.
    let mut request = bytes_request(photo.clone(), FilterType::Brightness, 0.0);
    request.parameters.insert("intensity".into(), "0".into());
    let out = client.apply_filter(request).await.unwrap().into_inner();
    assert_eq!(mean(&out.result.unwrap().output_data), 0.0);
    service.stop().await.unwrap();
}

#[tokio::test]
async fn output_format_can_be_changed() {
    let dir = tempfile::tempdir().unwrap();
    let (service, mut client) = start(fs_env(dir.path())).await;
    let mut request = bytes_request(fixture("chelsea.png"), FilterType::Gaussian, 1.0);
    request
        .parameters
        .insert("output_format".into(), "jpeg".into());
    request
        .parameters
        .insert("jpeg_quality".into(), "80".into());
    let response = client.apply_filter(request).await.unwrap().into_inner();
    let decoded = decode(&response.result.unwrap().output_data, &Limits::default()).unwrap();
    assert_eq!(decoded.format, ImageFormat::Jpeg);
    assert_eq!(
        response.metadata.unwrap().applied_parameters["jpeg_quality"],
        "80"
    );
    service.stop().await.unwrap();
}

#[tokio::test]
async fn filters_objects_on_a_real_s3_server() {
    let s3 = S3Server::start().expect("s3s-fs");
    let env = s3.storage_env("filter-test");
    let config = ServiceConfig::from_env(&env, filter_svc::DEFAULTS).unwrap();
    let store = Store::connect(&config.storage, StoreOptions::default())
        .await
        .unwrap();
    let bucket = BucketName::parse("filter-test").unwrap();
    store.ensure_bucket(&bucket).await.unwrap();
    store
        .put(
            &bucket,
            &ObjectKey::parse("in/photo.jpg").unwrap(),
            fixture("photo-1920x1080.jpg").into(),
            "image/jpeg",
        )
        .await
        .unwrap();
    let (service, mut client) = start(env).await;
    let request = FilterRequest {
        input: Some(Input::InputImage(ImageData {
            bucket: "filter-test".into(),
            object_key: "in/photo.jpg".into(),
            ..Default::default()
        })),
        filter_type: FilterType::Gaussian as i32,
        intensity: 2.0,
        parameters: HashMap::new(),
        execution_id: "exec-9".into(),
        input_index: None,
    };
    let response = client.apply_filter(request).await.unwrap().into_inner();
    let output = response.result.unwrap().output_image.unwrap();
    assert_eq!(output.object_key, "executions/exec-9/photo_gaussian_2.jpg");
    assert_eq!((output.width, output.height), (1920, 1080));
    let stored = store
        .get(&bucket, &ObjectKey::parse(&output.object_key).unwrap())
        .await
        .unwrap();
    assert_eq!(stored.meta.content_type.as_deref(), Some("image/jpeg"));
    assert_eq!(stored.data.len() as i64, output.size_bytes);
    service.stop().await.unwrap();
}

#[tokio::test]
async fn bad_requests_are_invalid_argument() {
    let dir = tempfile::tempdir().unwrap();
    let (service, mut client) = start(fs_env(dir.path())).await;
    let photo = fixture("chelsea.png");
    let cases = [
        (
            bytes_request(photo.clone(), FilterType::Unspecified, 1.0),
            "filter_type is required",
        ),
        (
            bytes_request(photo.clone(), FilterType::Gaussian, 1000.0),
            "out of range",
        ),
        (
            bytes_request(photo.clone(), FilterType::Blur, -1.0),
            "out of range",
        ),
        (
            FilterRequest {
                filter_type: 77,
                ..bytes_request(photo.clone(), FilterType::Blur, 1.0)
            },
            "not a known filter",
        ),
        (
            bytes_request(photo[..200].to_vec(), FilterType::Blur, 1.0),
            "",
        ),
    ];
    for (request, expected) in cases {
        let status = client.apply_filter(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(expected), "{status:?}");
    }
    service.stop().await.unwrap();
}

#[tokio::test]
async fn a_stream_of_filters_answers_each_item() {
    let dir = tempfile::tempdir().unwrap();
    let (service, mut client) = start(fs_env(dir.path())).await;
    let photo = fixture("chelsea.png");
    let requests = vec![
        bytes_request(photo.clone(), FilterType::Grayscale, 1.0),
        bytes_request(photo.clone(), FilterType::Gaussian, 500.0),
        bytes_request(photo.clone(), FilterType::Contrast, 1.2),
    ];
    let mut responses = client
        .apply_filter_stream(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut statuses = Vec::new();
    while let Some(response) = responses.message().await.unwrap() {
        statuses.push(response.result.unwrap().status);
    }
    let (ok, failed) = (
        ProcessingStatus::Completed as i32,
        ProcessingStatus::Failed as i32,
    );
    assert_eq!(statuses, vec![ok, failed, ok]);
    service.stop().await.unwrap();
}

#[tokio::test]
async fn object_keys_are_checked_and_oversized_messages_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = fs_env(dir.path());
    env.insert("GRPC_MAX_MESSAGE_BYTES".into(), "65536".into());
    let (service, mut client) = start(env).await;
    let object = |key: &str| FilterRequest {
        input: Some(Input::InputImage(ImageData {
            bucket: "imageflow-files".into(),
            object_key: key.into(),
            ..Default::default()
        })),
        filter_type: FilterType::Blur as i32,
        intensity: 1.0,
        parameters: HashMap::new(),
        execution_id: "exec-keys".into(),
        input_index: None,
    };
    let too_long = "k".repeat(1025);
    for (bad, why) in [
        ("../../etc/passwd", "'..'"),
        ("/etc/passwd", "'/'"),
        ("", "empty"),
        ("in/\u{1b}[31mred.jpg", "control characters"),
        (too_long.as_str(), "limit is 1024"),
    ] {
        let status = client.apply_filter(object(bad)).await.unwrap_err();
        assert_bad_object_key(&status, bad, why);
    }

    // Over GRPC_MAX_MESSAGE_BYTES: refused by the codec, before any handler.
    let status = client
        .apply_filter(bytes_request(fixture("chelsea.png"), FilterType::Blur, 1.0))
        .await
        .unwrap_err();
    assert_message_too_large(&status);
    service.stop().await.unwrap();
}

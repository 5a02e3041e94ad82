//! Mutual TLS between backend-api and the services: real resize-svc and
//! filter-svc serving TLS with client certificates required, certificates
//! minted per test by `rcgen` (imageflow-testkit's `TestPki`).

#![allow(clippy::unwrap_used)]

mod common;

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use common::*;
use imageflow_proto::v1::{
    ImageBytes, ResizeRequest, resize_request::Input, resize_service_client::ResizeServiceClient,
};
use imageflow_service::{ServeError, ServiceConfig};
use imageflow_testkit::{RunningService, TestPki, fixture, free_addr, spawn_service, wait_serving};
use serde_json::{Value, json};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

struct TlsServices {
    services: Services,
    /// The plaintext health-only listeners (resize, filter).
    health: [SocketAddr; 2],
}

/// resize-svc and filter-svc with `pki`'s certificate, requiring callers to
/// present one signed by `pki`'s CA; SERVING is read on the plaintext health
/// port, as a Kubernetes probe would.
async fn start_tls_services(root: &std::path::Path, pki: &TestPki) -> TlsServices {
    let mut health = Vec::new();
    let mut running: Vec<RunningService<ServeError>> = Vec::new();
    for (defaults, name) in [
        (resize_svc::DEFAULTS, "imageflow.v1.ResizeService"),
        (filter_svc::DEFAULTS, "imageflow.v1.FilterService"),
    ] {
        let health_addr = free_addr();
        let mut env = storage_env(root);
        env.extend(pki.service_env());
        env.insert("GRPC_HEALTH_LISTEN_ADDR".into(), health_addr.to_string());
        let config = ServiceConfig::from_env(&env, defaults).unwrap();
        assert!(config.tls.as_ref().unwrap().mutual());
        let service = if defaults.binary == "resize-svc" {
            spawn_service(move |l, s| resize_svc::run(config, l, s)).await
        } else {
            spawn_service(move |l, s| filter_svc::run(config, l, s)).await
        };
        let channel = plaintext_channel(health_addr).await;
        wait_serving(channel, name, Duration::from_secs(20)).await;
        health.push(health_addr);
        running.push(service);
    }
    let filter = running.pop().unwrap();
    let resize = running.pop().unwrap();
    TlsServices {
        services: Services { resize, filter },
        health: [health[0], health[1]],
    }
}

/// The health listener may need a moment to bind after the service task starts.
async fn plaintext_channel(addr: SocketAddr) -> Channel {
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).unwrap();
    for _ in 0..500 {
        if let Ok(channel) = endpoint.connect().await {
            return channel;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("health listener {addr} never accepted a connection");
}

fn tls_backend_env(
    root: &std::path::Path,
    db: &str,
    services: &Services,
    tls: HashMap<String, String>,
) -> HashMap<String, String> {
    // https:// endpoints, as an operator would write them with TLS on.
    let resize = format!("https://{}", services.resize.addr);
    let filter = format!("https://{}", services.filter.addr);
    let mut env = backend_env(
        root,
        db,
        services,
        &[
            ("RESIZE_GRPC_ENDPOINT", resize.as_str()),
            ("FILTER_GRPC_ENDPOINT", filter.as_str()),
        ],
    );
    env.extend(tls);
    env
}

fn resize_then_filter(file_id: &Value) -> Value {
    json!({
        "pipeline": {
            "pipelineName": "over mutual TLS",
            "steps": [
                {"stepId": "small", "componentName": "resize",
                 "parameters": {"width": 200, "height": 0}},
                {"stepId": "soft", "componentName": "filter", "dependencies": ["small"],
                 "parameters": {"filter_type": "gaussian", "intensity": 1.0}},
            ]
        },
        "inputs": [file_id],
    })
}

/// A direct client with whatever TLS settings a case needs.
async fn resize_over(
    addr: SocketAddr,
    ca: &std::path::Path,
    identity: Option<(&std::path::Path, &std::path::Path)>,
) -> Result<(), tonic::Status> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(cert).unwrap(),
            std::fs::read(key).unwrap(),
        ));
    }
    let endpoint = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap();
    // A refused handshake may already fail the connect; either way is a refusal.
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("connect: {e:?}")))?;
    ResizeServiceClient::new(channel)
        .resize_image(ResizeRequest {
            input: Some(Input::InputBytes(ImageBytes {
                data: fixture("chelsea.png"),
                ..Default::default()
            })),
            target_width: 32,
            target_height: 32,
            maintain_aspect_ratio: true,
            ..Default::default()
        })
        .await
        .map(|_| ())
}

#[tokio::test]
async fn the_backend_with_its_client_certificate_runs_a_pipeline_over_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("imageflow");
    let tls = start_tls_services(dir.path(), &pki).await;
    let db = database_url(dir.path(), false).await;
    let backend = start_backend(tls_backend_env(
        dir.path(),
        &db,
        &tls.services,
        pki.backend_env(),
    ))
    .await;
    let file = backend.upload("photo-1920x1080.jpg").await;
    let (code, record) = backend
        .post(
            "/v1/executions?wait=true",
            resize_then_filter(&file["file_id"]),
        )
        .await;
    assert_eq!(code, 200, "{record}");
    assert_eq!(record["status"], "completed", "{record}");
    for step in record["steps"].as_array().unwrap() {
        assert_eq!(step["status"], "completed", "{step}");
        assert_eq!(step["attempts"], 1, "{step}");
    }
    assert_eq!(record["steps"][1]["output"]["width"], 200, "{record}");

    // The same certificate works for a direct client too, and the health
    // port answers in plaintext while the service port refuses plaintext.
    resize_over(
        tls.services.resize.addr,
        &pki.path("ca.pem"),
        Some((&pki.path("client.pem"), &pki.path("client-key.pem"))),
    )
    .await
    .unwrap();
    let plaintext = Endpoint::from_shared(format!("http://{}", tls.services.resize.addr))
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = plaintext {
        let refused = ResizeServiceClient::new(channel)
            .resize_image(ResizeRequest::default())
            .await
            .unwrap_err();
        assert_ne!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    }
    let mut health =
        tonic_health::pb::health_client::HealthClient::new(plaintext_channel(tls.health[0]).await);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    // ... and serves nothing but health: the plaintext port is no way around TLS.
    let bypass = ResizeServiceClient::new(plaintext_channel(tls.health[0]).await)
        .resize_image(ResizeRequest::default())
        .await
        .unwrap_err();
    assert_eq!(bypass.code(), tonic::Code::Unimplemented, "{bypass:?}");
    backend.stop().await;
    tls.services.resize.stop().await.unwrap();
    tls.services.filter.stop().await.unwrap();
}

#[tokio::test]
async fn callers_without_the_right_certificates_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("imageflow");
    let other = TestPki::new("someone-else");
    let tls = start_tls_services(dir.path(), &pki).await;
    let addr = tls.services.resize.addr;

    // Direct clients: no certificate, a certificate of another CA, trusting
    // another CA. Each is refused; none is served.
    let cases = [
        (
            "no client certificate",
            pki.path("ca.pem"),
            None,
            "CertificateRequired",
        ),
        (
            "client certificate from another CA",
            pki.path("ca.pem"),
            Some((other.path("client.pem"), other.path("client-key.pem"))),
            "UnknownCA",
        ),
        (
            "expecting another CA",
            other.path("ca.pem"),
            Some((pki.path("client.pem"), pki.path("client-key.pem"))),
            "UnknownIssuer",
        ),
    ];
    for (case, ca, identity, needle) in &cases {
        let identity = identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
        let status = resize_over(addr, ca, identity).await.unwrap_err();
        // tonic reports a refused handshake as a transport error (UNKNOWN or
        // UNAVAILABLE) with rustls' reason in its source chain.
        assert!(
            matches!(
                status.code(),
                tonic::Code::Unknown | tonic::Code::Unavailable
            ),
            "{case}: {status:?}"
        );
        let reason = format!("{status:?}");
        assert!(
            reason.contains(needle),
            "{case}: {reason} does not mention {needle:?}"
        );
    }

    // The backend in each of those setups: the step fails with a message that
    // says what is wrong, after its attempts, instead of hanging.
    let no_cert = HashMap::from([(
        "GRPC_TLS_CA".to_string(),
        pki.path("ca.pem").display().to_string(),
    )]);
    let setups = [
        ("no client certificate", no_cert, "CertificateRequired"),
        (
            "client certificate from another CA",
            {
                let mut env = other.backend_env();
                env.insert(
                    "GRPC_TLS_CA".into(),
                    pki.path("ca.pem").display().to_string(),
                );
                env
            },
            "UnknownCA",
        ),
        (
            "expecting another CA",
            {
                let mut env = pki.backend_env();
                env.insert(
                    "GRPC_TLS_CA".into(),
                    other.path("ca.pem").display().to_string(),
                );
                env
            },
            "UnknownIssuer",
        ),
    ];
    for (i, (case, env, needle)) in setups.into_iter().enumerate() {
        let case_dir = dir.path().join(format!("backend-{i}"));
        std::fs::create_dir_all(&case_dir).unwrap();
        let db = database_url(&case_dir, false).await;
        let backend = start_backend(tls_backend_env(dir.path(), &db, &tls.services, env)).await;
        let file = backend.upload("chelsea.jpg").await;
        let mut request = resize_then_filter(&file["file_id"]);
        request["pipeline"]["steps"][0]["retryPolicy"] = json!({"maxRetries": 1});
        let (code, record) = backend.post("/v1/executions?wait=true", request).await;
        assert_eq!(code, 200, "{case}: {record}");
        assert_eq!(record["status"], "failed", "{case}: {record}");
        let step = &record["steps"][0];
        assert_eq!(step["status"], "failed", "{case}: {step}");
        assert_eq!(step["attempts"], 2, "{case}: {step}");
        let error = step["error"].as_str().unwrap();
        assert!(error.contains("UNAVAILABLE"), "{case}: {error}");
        assert!(error.contains("GRPC_TLS_CA"), "{case}: {error}");
        assert!(
            error.contains(needle),
            "{case}: {error:?} does not mention {needle:?}"
        );
        backend.stop().await;
    }
    tls.services.resize.stop().await.unwrap();
    tls.services.filter.stop().await.unwrap();
}

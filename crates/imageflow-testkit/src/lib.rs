//! Test harness shared by the integration tests: real peers on loopback, never
//! mocks of them.
//!
//! * [`S3Server`]: a real `s3s-fs` process (or the one `scripts/test.sh`
//!   started, named by `IMAGEFLOW_TEST_S3_ENDPOINT`);
//! * [`spawn_service`]: a service on a pre-bound `127.0.0.1:0` listener (no port
//!   races) with a shutdown handle;
//! * [`BlackHole`]: a TCP peer that accepts and never answers, to make a
//!   dependency hang on purpose;
//! * [`fixture`]: the real photos under `crates/imageflow-imaging/tests/fixtures`;
//! * [`KafkaBroker`]: a real `tansu` broker on loopback (stop/restart on the same port);
//! * [`OtlpReceiver`]: an OTLP/gRPC collector stand-in that keeps what it gets;
//! * [`ChildProcess`]: the workspace's binaries as real processes;
//! * [`TestPki`]: a throwaway CA with server and client certificates as PEM
//!   files, for the mutual-TLS tests.

#![allow(clippy::unwrap_used)]

mod kafka;
mod otlp;
mod pki;
mod process;
mod refusals;
mod s3;

use std::{
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    pin::Pin,
};

use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

pub use kafka::KafkaBroker;
pub use otlp::{OtlpReceiver, ReceivedLog, ReceivedMetric, ReceivedSpan};
pub use pki::TestPki;
pub use process::{ChildProcess, free_addr, workspace_binary};
pub use refusals::{assert_bad_object_key, assert_message_too_large};
pub use s3::S3Server;

/// Bytes of a fixture photo, e.g. `fixture("photo-1920x1080.jpg")`.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = fixtures_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../imageflow-imaging/tests/fixtures")
}

/// The future a service is given to know when to stop.
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A service running inside the test process.
#[derive(Debug)]
pub struct RunningService<E> {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<Result<(), E>>,
}

impl<E: Send + 'static> RunningService<E> {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(self.url())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// Asks the service to stop, as SIGTERM would, and waits for it.
    pub async fn stop(mut self) -> Result<(), E> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.handle.await.expect("service task panicked")
    }

    /// Sends the stop signal without waiting (to watch the drain).
    pub fn begin_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    pub async fn join(self) -> Result<(), E> {
        self.handle.await.expect("service task panicked")
    }
}

/// Binds `127.0.0.1:0` and runs `run(listener, shutdown)` in a task.
pub async fn spawn_service<F, Fut, E>(run: F) -> RunningService<E>
where
    F: FnOnce(TcpListener, Shutdown) -> Fut,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown: Shutdown = Box::pin(async move {
        let _ = stopped.await;
    });
    let handle = tokio::spawn(run(listener, shutdown));
    RunningService {
        addr,
        stop: Some(stop),
        handle,
    }
}

/// A TCP peer that accepts connections and never says a word.
#[derive(Debug)]
pub struct BlackHole {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl BlackHole {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        Self { addr, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A loopback port with nothing listening (bound, then released). It comes from
/// `free_addr`, so no child of the same test is given it to listen on.
pub fn closed_port() -> SocketAddr {
    free_addr()
}

/// Polls the standard health service until `service` is SERVING; panics with
/// the last status after `within`.
pub async fn wait_serving(
    channel: tonic::transport::Channel,
    service: &str,
    within: std::time::Duration,
) {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let mut client = HealthClient::new(channel);
    let started = std::time::Instant::now();
    loop {
        let status = client
            .check(HealthCheckRequest {
                service: service.to_string(),
            })
            .await
            .map(|r| r.into_inner().status)
            .map_err(|s| s.code());
        if status == Ok(tonic_health::pb::health_check_response::ServingStatus::Serving as i32) {
            return;
        }
        assert!(
            started.elapsed() < within,
            "{service:?} not SERVING after {within:?}: {status:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

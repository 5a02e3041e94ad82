//! Health that means something: NOT_SERVING until the store answers, SERVING
//! while it does, NOT_SERVING again as soon as shutdown begins. The same state
//! drives the standard `grpc.health.v1` service (Kubernetes probes) and the
//! contract's own `Health` RPC.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use imageflow_proto::v1::{HealthCheckResponse, health_check_response::ServingStatus};
use tonic_health::server::HealthReporter;

#[derive(Clone, Debug)]
pub struct Health {
    serving: Arc<AtomicBool>,
    reporter: HealthReporter,
    /// Fully qualified gRPC names, e.g. `imageflow.v1.ResizeService`.
    services: Arc<Vec<&'static str>>,
}

impl Health {
    /// Starts NOT_SERVING for the server ("") and every named service.
    pub async fn new(reporter: HealthReporter, services: Vec<&'static str>) -> Self {
        let health = Self {
            serving: Arc::new(AtomicBool::new(false)),
            reporter,
            services: Arc::new(services),
        };
        health.set_serving(false).await;
        health
    }

    pub async fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Ordering::SeqCst);
        let status = if serving {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        self.reporter.set_service_status("", status).await;
        for name in self.services.iter() {
            self.reporter.set_service_status(*name, status).await;
        }
    }

    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::SeqCst)
    }

    /// Answer of the contract's `Health` RPC: "" or a known service gets the
    /// server's state, anything else SERVICE_UNKNOWN.
    pub fn check(&self, service: &str) -> HealthCheckResponse {
        let known = service.is_empty()
            || self
                .services
                .iter()
                .any(|name| *name == service || name.rsplit('.').next() == Some(service));
        let status = match (known, self.is_serving()) {
            (false, _) => ServingStatus::ServiceUnknown,
            (true, true) => ServingStatus::Serving,
            (true, false) => ServingStatus::NotServing,
        };
        HealthCheckResponse {
            status: status as i32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn starts_not_serving_and_follows_set_serving() {
        let (reporter, _server) = tonic_health::server::health_reporter();
        let health = Health::new(reporter, vec!["imageflow.v1.ResizeService"]).await;
        let status = |s: &str| health.check(s).status;
        assert_eq!(status(""), ServingStatus::NotServing as i32);
        health.set_serving(true).await;
        assert_eq!(status(""), ServingStatus::Serving as i32);
        assert_eq!(
            status("imageflow.v1.ResizeService"),
            ServingStatus::Serving as i32
        );
        assert_eq!(status("ResizeService"), ServingStatus::Serving as i32);
        assert_eq!(status("nope"), ServingStatus::ServiceUnknown as i32);
    }
}

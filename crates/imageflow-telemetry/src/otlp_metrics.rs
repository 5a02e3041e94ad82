//! Sends the registries to an OTLP/gRPC collector every interval, as
//! cumulative sums, gauges and explicit-bucket histograms: the same numbers
//! `/metrics` shows, so a Prometheus scrape and the collector's Prometheus
//! exporter agree.
//!
//! Counters are sent without their `_total` suffix (OTel naming); the
//! collector's Prometheus exporter adds it back for monotonic sums, so the
//! PromQL names stay the same either way.
//!
//! This maps [`Registry::snapshot`](crate::metrics::Registry::snapshot) onto
//! the generated OTLP types and client of `opentelemetry-proto`: neither
//! `prometheus-client` nor `opentelemetry-otlp` exports another registry's
//! numbers (the latter only sends what the OpenTelemetry SDK's own
//! instruments aggregated, and its data types cannot be built outside it).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::{
    collector::metrics::v1::{
        ExportMetricsServiceRequest, metrics_service_client::MetricsServiceClient,
    },
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
    metrics::v1::{
        AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
        ResourceMetrics, ScopeMetrics, Sum, metric::Data, number_data_point,
    },
    resource::v1::Resource,
};
use tokio::sync::watch;

use crate::metrics::{self, Family, Kind, LATENCY_BUCKETS, Value};

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

/// One export request for `families` under `resource`.
pub fn request(
    resource: &[(String, String)],
    families: &[Family],
    now: SystemTime,
) -> ExportMetricsServiceRequest {
    let start = nanos(metrics::process_start());
    let now = nanos(now);
    let metrics = families
        .iter()
        .filter(|f| !f.series.is_empty())
        .map(|f| to_metric(f, start, now))
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: resource.iter().map(|(k, v)| kv(k, v)).collect(),
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "imageflow".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn to_metric(family: &Family, start: u64, now: u64) -> Metric {
    let cumulative = AggregationTemporality::Cumulative as i32;
    let attrs = |labels: &metrics::Labels| labels.iter().map(|(k, v)| kv(k, v)).collect();
    let numbers = || {
        family
            .series
            .iter()
            .filter_map(|(labels, value)| match value {
                Value::Number(v) => Some(NumberDataPoint {
                    attributes: attrs(labels),
                    start_time_unix_nano: start,
                    time_unix_nano: now,
                    value: Some(number_data_point::Value::AsDouble(*v)),
                    ..Default::default()
                }),
                Value::Histogram(_) => None,
            })
            .collect()
    };
    let (name, data) = match family.kind {
        Kind::Counter => (
            family.name.strip_suffix("_total").unwrap_or(family.name),
            Data::Sum(Sum {
                data_points: numbers(),
                aggregation_temporality: cumulative,
                is_monotonic: true,
            }),
        ),
        Kind::Gauge => (
            family.name,
            Data::Gauge(Gauge {
                data_points: numbers(),
            }),
        ),
        Kind::Histogram => (
            family.name,
            Data::Histogram(Histogram {
                data_points: family
                    .series
                    .iter()
                    .filter_map(|(labels, value)| match value {
                        Value::Histogram(h) => Some(HistogramDataPoint {
                            attributes: attrs(labels),
                            start_time_unix_nano: start,
                            time_unix_nano: now,
                            count: h.count,
                            sum: Some(h.sum),
                            bucket_counts: per_bucket(&h.buckets, h.count),
                            explicit_bounds: LATENCY_BUCKETS.to_vec(),
                            ..Default::default()
                        }),
                        Value::Number(_) => None,
                    })
                    .collect(),
                aggregation_temporality: cumulative,
            }),
        ),
    };
    Metric {
        name: name.to_string(),
        description: family.help.to_string(),
        data: Some(data),
        ..Default::default()
    }
}

/// Prometheus buckets are cumulative; OTLP wants the count of each bucket,
/// with one more for +Inf.
fn per_bucket(cumulative: &[u64], total: u64) -> Vec<u64> {
    let mut out = Vec::with_capacity(cumulative.len() + 1);
    let mut previous = 0;
    for &c in cumulative {
        out.push(c.saturating_sub(previous));
        previous = c;
    }
    out.push(total.saturating_sub(previous));
    out
}

/// Exports every `interval` until `stop` flips, then once more. Failures are
/// logged once per outage and the next interval tries again: metrics are
/// cumulative, so nothing is lost but resolution.
pub(crate) async fn run(
    endpoint: String,
    resource: Vec<(String, String)>,
    interval: Duration,
    timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let channel = match tonic::transport::Endpoint::from_shared(endpoint.clone()) {
        Ok(e) => e.timeout(timeout).connect_timeout(timeout).connect_lazy(),
        Err(err) => {
            tracing::warn!(endpoint, error = %err, "OTLP metrics: bad endpoint; metrics are not exported");
            return;
        }
    };
    let mut client = MetricsServiceClient::new(channel);
    let mut failing = false;
    loop {
        let stopping = tokio::select! {
            () = tokio::time::sleep(interval) => false,
            _ = stop.changed() => true,
        };
        let request = request(&resource, &metrics::exported_snapshot(), SystemTime::now());
        match client.export(request).await {
            Ok(_) if failing => {
                failing = false;
                tracing::info!(endpoint, "OTLP metrics export recovered");
            }
            Ok(_) => {}
            Err(status) if !failing => {
                failing = true;
                tracing::warn!(endpoint, code = ?status.code(), error = %status.message(), "OTLP metrics export failed; retrying every interval");
            }
            Err(_) => {}
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::metrics::Registry;

    #[test]
    fn histograms_become_per_bucket_counts_and_counters_lose_total() {
        let r = Registry::new();
        r.inc("http_requests_total", "requests", &[("code", "200")]);
        r.observe("latency_seconds", "latency", &[], Duration::from_millis(3));
        r.observe("latency_seconds", "latency", &[], Duration::from_secs(100));
        let req = request(
            &[("service.name".into(), "imageflow-test".into())],
            &r.snapshot(),
            SystemTime::now(),
        );
        let rm = &req.resource_metrics[0];
        assert_eq!(
            rm.resource.as_ref().unwrap().attributes[0].key,
            "service.name"
        );
        let metrics: BTreeMap<&str, &Metric> = rm.scope_metrics[0]
            .metrics
            .iter()
            .map(|m| (m.name.as_str(), m))
            .collect();
        match &metrics["http_requests"].data {
            Some(Data::Sum(sum)) => {
                assert!(sum.is_monotonic);
                assert_eq!(
                    sum.data_points[0].value,
                    Some(number_data_point::Value::AsDouble(1.0))
                );
            }
            other => panic!("{other:?}"),
        }
        match &metrics["latency_seconds"].data {
            Some(Data::Histogram(h)) => {
                let p = &h.data_points[0];
                assert_eq!(p.count, 2);
                assert_eq!(p.bucket_counts.len(), LATENCY_BUCKETS.len() + 1);
                assert_eq!(p.bucket_counts.iter().sum::<u64>(), 2);
                assert_eq!(p.bucket_counts[2], 1, "3 ms falls in (2.5 ms, 5 ms]");
                assert_eq!(
                    *p.bucket_counts.last().unwrap(),
                    1,
                    "100 s is past the last bound"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}

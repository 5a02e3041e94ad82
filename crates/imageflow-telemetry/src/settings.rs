//! The standard `OTEL_*` variables, read once at start. A value that cannot be
//! used stops the binary with a message naming the variable, as every other
//! setting does.

use std::{collections::HashMap, time::Duration};

use crate::InitError;

/// Head sampling, as `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` name it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SamplerSetting {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedRatio(f64),
}

/// The design's default: follow the caller's decision, sample 10% of new traces.
pub const DEFAULT_SAMPLER: SamplerSetting = SamplerSetting::ParentBasedRatio(0.1);

#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub service_name: String,
    /// OTLP/gRPC collector (`http://host:4317`); `None` exports nothing.
    pub endpoint: Option<String>,
    /// Push metrics over OTLP too (`OTEL_METRICS_EXPORTER`, `otlp` or `none`).
    /// `/metrics` is served either way; `none` leaves Prometheus' scrape as
    /// the only path, so a collector does not receive the same series twice.
    pub push_metrics: bool,
    pub sampler: SamplerSetting,
    /// Resource attributes in the order they apply (later wins).
    pub resource: Vec<(String, String)>,
    pub metric_interval: Duration,
    pub export_timeout: Duration,
}

fn non_empty<'a>(env: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    env.get(name).map(|s| s.trim()).filter(|s| !s.is_empty())
}

fn millis(env: &HashMap<String, String>, name: &str, default: u64) -> Result<Duration, InitError> {
    match non_empty(env, name) {
        None => Ok(Duration::from_millis(default)),
        Some(raw) => match raw.parse::<u64>() {
            Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
            _ => Err(InitError(format!(
                "{name}: expected a positive number of milliseconds, got {raw:?}"
            ))),
        },
    }
}

impl Settings {
    pub fn from_env(
        env: &HashMap<String, String>,
        default_service: &str,
        version: &str,
    ) -> Result<Self, InitError> {
        let service_name = non_empty(env, "OTEL_SERVICE_NAME")
            .unwrap_or(default_service)
            .to_string();
        let disabled = matches!(non_empty(env, "OTEL_SDK_DISABLED"), Some(v) if v.eq_ignore_ascii_case("true"));
        let endpoint = non_empty(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|| non_empty(env, "OTEL_EXPORTER_OTLP_ENDPOINT"))
            .map(|raw| {
                // Only plain gRPC is built in: in-cluster collectors listen on
                // 4317 without TLS, and a silent downgrade would be worse.
                if raw.starts_with("http://") {
                    Ok(raw.trim_end_matches('/').to_string())
                } else {
                    Err(InitError(format!(
                        "OTEL_EXPORTER_OTLP_ENDPOINT: expected http://host:port of an OTLP/gRPC collector, got {raw:?}"
                    )))
                }
            })
            .transpose()?
            .filter(|_| !disabled);
        if let Some(protocol) = non_empty(env, "OTEL_EXPORTER_OTLP_PROTOCOL")
            && protocol != "grpc"
        {
            return Err(InitError(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL: only \"grpc\" is supported, got {protocol:?}"
            )));
        }
        let push_metrics = match non_empty(env, "OTEL_METRICS_EXPORTER") {
            None => true,
            Some(v) if v.eq_ignore_ascii_case("otlp") => true,
            Some(v) if v.eq_ignore_ascii_case("none") => false,
            Some(other) => {
                return Err(InitError(format!(
                    "OTEL_METRICS_EXPORTER: expected \"otlp\" or \"none\" (/metrics is served either way), got {other:?}"
                )));
            }
        };
        let sampler = sampler(env)?;
        let mut resource = vec![
            ("service.namespace".to_string(), "imageflow".to_string()),
            ("deployment.environment".to_string(), "local".to_string()),
            ("cloud.region".to_string(), "local".to_string()),
        ];
        if let Some(host) = non_empty(env, "HOSTNAME") {
            resource.push(("service.instance.id".into(), host.to_string()));
        }
        if let Some(raw) = non_empty(env, "OTEL_RESOURCE_ATTRIBUTES") {
            for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let Some((k, v)) = pair.split_once('=') else {
                    return Err(InitError(format!(
                        "OTEL_RESOURCE_ATTRIBUTES: expected key=value pairs separated by commas, got {pair:?}"
                    )));
                };
                resource.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        // The name and version are what this binary is; OTEL_SERVICE_NAME is
        // the documented override, not a stray resource attribute.
        resource.retain(|(k, _)| k != "service.name" && k != "service.version");
        resource.push(("service.name".into(), service_name.clone()));
        resource.push(("service.version".into(), version.to_string()));
        Ok(Self {
            service_name,
            endpoint,
            push_metrics,
            sampler,
            resource,
            metric_interval: millis(env, "OTEL_METRIC_EXPORT_INTERVAL", 60_000)?,
            export_timeout: millis(env, "OTEL_EXPORTER_OTLP_TIMEOUT", 10_000)?,
        })
    }

    /// The resource attributes with duplicates resolved (the last one wins).
    pub fn resource_attributes(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for (k, v) in &self.resource {
            match out.iter_mut().find(|(key, _)| key == k) {
                Some(slot) => slot.1.clone_from(v),
                None => out.push((k.clone(), v.clone())),
            }
        }
        out
    }
}

fn sampler(env: &HashMap<String, String>) -> Result<SamplerSetting, InitError> {
    let ratio = || -> Result<f64, InitError> {
        match non_empty(env, "OTEL_TRACES_SAMPLER_ARG") {
            None => Ok(0.1),
            Some(raw) => match raw.parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                _ => Err(InitError(format!(
                    "OTEL_TRACES_SAMPLER_ARG: expected a ratio between 0 and 1, got {raw:?}"
                ))),
            },
        }
    };
    Ok(match non_empty(env, "OTEL_TRACES_SAMPLER") {
        None => SamplerSetting::ParentBasedRatio(ratio()?),
        Some("always_on") => SamplerSetting::AlwaysOn,
        Some("always_off") => SamplerSetting::AlwaysOff,
        Some("traceidratio") => SamplerSetting::Ratio(ratio()?),
        Some("parentbased_always_on") => SamplerSetting::ParentBasedAlwaysOn,
        Some("parentbased_always_off") => SamplerSetting::ParentBasedAlwaysOff,
        Some("parentbased_traceidratio") => SamplerSetting::ParentBasedRatio(ratio()?),
        Some(other) => {
            return Err(InitError(format!(
                "OTEL_TRACES_SAMPLER: expected one of always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio; got {other:?}"
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_export_nothing_and_sample_ten_percent() {
        let s = Settings::from_env(&env(&[]), "imageflow-resize", "1.2.3").unwrap();
        assert_eq!(s.endpoint, None);
        assert_eq!(s.sampler, DEFAULT_SAMPLER);
        let attrs = s.resource_attributes();
        for (k, v) in [
            ("service.name", "imageflow-resize"),
            ("service.version", "1.2.3"),
            ("service.namespace", "imageflow"),
            ("deployment.environment", "local"),
            ("cloud.region", "local"),
        ] {
            assert!(attrs.contains(&(k.into(), v.into())), "{k} in {attrs:?}");
        }
    }

    #[test]
    fn standard_variables_override() {
        let s = Settings::from_env(
            &env(&[
                ("OTEL_SERVICE_NAME", "resize-canary"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317/"),
                ("OTEL_TRACES_SAMPLER", "always_on"),
                (
                    "OTEL_RESOURCE_ATTRIBUTES",
                    "deployment.environment=prod, cloud.region=ap-northeast-1,service.name=ignored",
                ),
            ]),
            "imageflow-resize",
            "1.2.3",
        )
        .unwrap();
        assert_eq!(s.endpoint.as_deref(), Some("http://collector:4317"));
        assert_eq!(s.sampler, SamplerSetting::AlwaysOn);
        let attrs = s.resource_attributes();
        assert!(attrs.contains(&("deployment.environment".into(), "prod".into())));
        assert!(attrs.contains(&("cloud.region".into(), "ap-northeast-1".into())));
        assert!(attrs.contains(&("service.name".into(), "resize-canary".into())));
        assert_eq!(attrs.iter().filter(|(k, _)| k == "service.name").count(), 1);
    }

    #[test]
    fn metrics_push_follows_otel_metrics_exporter() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317");
        let push = |value: Option<&str>| {
            let mut pairs = vec![endpoint];
            pairs.extend(value.map(|v| ("OTEL_METRICS_EXPORTER", v)));
            Settings::from_env(&env(&pairs), "svc", "1")
                .unwrap()
                .push_metrics
        };
        assert!(push(None));
        assert!(push(Some("otlp")));
        assert!(!push(Some("none")));
        assert!(!push(Some("NONE")));
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (pairs, variable) in [
            (
                vec![("OTEL_TRACES_SAMPLER", "sometimes")],
                "OTEL_TRACES_SAMPLER",
            ),
            (
                vec![
                    ("OTEL_TRACES_SAMPLER", "traceidratio"),
                    ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
                ],
                "OTEL_TRACES_SAMPLER_ARG",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            (
                vec![("OTEL_RESOURCE_ATTRIBUTES", "region")],
                "OTEL_RESOURCE_ATTRIBUTES",
            ),
            (
                vec![("OTEL_METRIC_EXPORT_INTERVAL", "0")],
                "OTEL_METRIC_EXPORT_INTERVAL",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")],
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ),
            (
                vec![("OTEL_METRICS_EXPORTER", "prometheus")],
                "OTEL_METRICS_EXPORTER",
            ),
        ] {
            let err = Settings::from_env(&env(&pairs), "svc", "0").unwrap_err();
            assert!(err.to_string().starts_with(variable), "{err}");
        }
    }

    #[test]
    fn sdk_disabled_turns_export_off() {
        let s = Settings::from_env(
            &env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
                ("OTEL_SDK_DISABLED", "true"),
            ]),
            "svc",
            "0",
        )
        .unwrap();
        assert_eq!(s.endpoint, None);
    }
}

//! The standard `OTEL_*` variables, read once at start. A value that cannot be
//! used stops the binary with a message naming the variable, as every other
//! setting does.

use std::{collections::HashMap, time::Duration};

use imageflow_config::{ConfigError, Env, Setting, Unit};

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
    /// Export log records over OTLP too (`OTEL_LOGS_EXPORTER`, `otlp` or
    /// `none`). The JSON lines on stdout are written either way; `none`
    /// leaves them (through a collector's `filelog` receiver) the only path.
    pub push_logs: bool,
    pub sampler: SamplerSetting,
    /// Resource attributes in the order they apply (later wins).
    pub resource: Vec<(String, String)>,
    pub metric_interval: Duration,
    pub export_timeout: Duration,
}

impl From<ConfigError> for InitError {
    fn from(err: ConfigError) -> Self {
        Self(err.to_string())
    }
}

/// Resource attributes every process starts with; `OTEL_RESOURCE_ATTRIBUTES`
/// adds to them and overrides them.
const DEFAULT_RESOURCE: &str =
    "service.namespace=imageflow,deployment.environment=local,cloud.region=local";

const SAMPLER: Setting = Setting::new(
    "OTEL_TRACES_SAMPLER",
    "parentbased_traceidratio",
    "head sampling: always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio (the caller's decision is followed)",
);
const SAMPLER_ARG: Setting = Setting::new(
    "OTEL_TRACES_SAMPLER_ARG",
    "0.1",
    "the ratio of new traces the *traceidratio samplers keep, 0 to 1",
);
const METRIC_EXPORT_INTERVAL: Setting = Setting::new(
    "OTEL_METRIC_EXPORT_INTERVAL",
    "60000",
    "milliseconds between two OTLP metric pushes",
);
const EXPORT_TIMEOUT: Setting = Setting::new(
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "10000",
    "milliseconds one OTLP export may take",
);

impl Settings {
    /// What `RUST_LOG` is when unset.
    pub const DEFAULT_LOG_FILTER: &'static str = "info";

    /// The variables telemetry reads, for the binaries' `--help`.
    pub const SETTINGS: &'static [Setting] = &[
        Setting::new(
            "RUST_LOG",
            Self::DEFAULT_LOG_FILTER,
            "log filter; logs are JSON lines on stdout and, with an OTLP endpoint, OTLP log records",
        ),
        Setting::described(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "unset (nothing exported)",
            "http://host:port of the OTLP/gRPC collector for traces, metrics and logs",
        ),
        Setting::described(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "overrides OTEL_EXPORTER_OTLP_ENDPOINT (metrics and logs go to the same collector)",
        ),
        Setting::new(
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "grpc",
            "only grpc is built in",
        ),
        Setting::new(
            "OTEL_METRICS_EXPORTER",
            "otlp",
            "otlp or none (none: Prometheus' scrape of /metrics is the only path)",
        ),
        Setting::new(
            "OTEL_LOGS_EXPORTER",
            "otlp",
            "otlp or none (none: the JSON lines on stdout are the only path)",
        ),
        Setting::new("OTEL_SDK_DISABLED", "false", "true exports nothing"),
        SAMPLER,
        SAMPLER_ARG,
        Setting::described(
            "OTEL_SERVICE_NAME",
            "the binary's own (imageflow-...)",
            "service.name on every span and metric",
        ),
        Setting::described(
            "OTEL_RESOURCE_ATTRIBUTES",
            DEFAULT_RESOURCE,
            "key=value pairs, comma-separated, added to the defaults (a key given again wins), e.g. deployment.id=<release> as a deploy marker; HOSTNAME becomes service.instance.id; service.name, service.version and imageflow.version are the binary's own",
        ),
        METRIC_EXPORT_INTERVAL,
        EXPORT_TIMEOUT,
    ];

    /// `version` is the crate's, `revision` the source revision the binary
    /// was built from ([`crate::REVISION`]): `service.version` is the
    /// revision, so two deployments of one release number are told apart;
    /// `imageflow.version` keeps the release.
    pub fn from_env(
        vars: &HashMap<String, String>,
        default_service: &str,
        version: &str,
        revision: &str,
    ) -> Result<Self, InitError> {
        let env = Env::new(vars);
        let service_name = env
            .get("OTEL_SERVICE_NAME")
            .unwrap_or(default_service)
            .to_string();
        let disabled =
            matches!(env.get("OTEL_SDK_DISABLED"), Some(v) if v.eq_ignore_ascii_case("true"));
        // Only plain gRPC is built in: in-cluster collectors listen on 4317
        // without TLS, and a silent downgrade would be worse.
        let endpoint = match env.url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &["http"])? {
            Some(url) => Some(url),
            None => env.url("OTEL_EXPORTER_OTLP_ENDPOINT", &["http"])?,
        }
        .map(str::to_string)
        .filter(|_| !disabled);
        if let Some(protocol) = env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            && protocol != "grpc"
        {
            return Err(InitError(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL: only \"grpc\" is supported, got {protocol:?}"
            )));
        }
        let push_metrics = exporter(
            env,
            "OTEL_METRICS_EXPORTER",
            "/metrics is served either way",
        )?;
        let push_logs = exporter(
            env,
            "OTEL_LOGS_EXPORTER",
            "JSON lines go to stdout either way",
        )?;
        let sampler = sampler(env)?;
        let mut resource = pairs("OTEL_RESOURCE_ATTRIBUTES", DEFAULT_RESOURCE)?;
        if let Some(host) = env.get("HOSTNAME") {
            resource.push(("service.instance.id".into(), host.to_string()));
        }
        if let Some(raw) = env.get("OTEL_RESOURCE_ATTRIBUTES") {
            resource.extend(pairs("OTEL_RESOURCE_ATTRIBUTES", raw)?);
        }
        // The name and version are what this binary is; OTEL_SERVICE_NAME is
        // the documented override, not a stray resource attribute.
        resource.retain(|(k, _)| !OWN_ATTRIBUTES.contains(&k.as_str()));
        resource.push(("service.name".into(), service_name.clone()));
        resource.push(("service.version".into(), revision.to_string()));
        resource.push(("imageflow.version".into(), version.to_string()));
        Ok(Self {
            service_name,
            endpoint,
            push_metrics,
            push_logs,
            sampler,
            resource,
            metric_interval: env.duration::<u64>(&METRIC_EXPORT_INTERVAL, Unit::Millis, 1..)?,
            export_timeout: env.duration::<u64>(&EXPORT_TIMEOUT, Unit::Millis, 1..)?,
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

/// Resource attributes only the binary sets.
const OWN_ATTRIBUTES: &[&str] = &["service.name", "service.version", "imageflow.version"];

/// `OTEL_METRICS_EXPORTER` / `OTEL_LOGS_EXPORTER`: `otlp` (the default) or
/// `none`; the other exporters of the specification are not built in.
fn exporter(env: Env<'_>, variable: &str, anyway: &str) -> Result<bool, InitError> {
    match env.get(variable) {
        None => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("otlp") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("none") => Ok(false),
        Some(other) => Err(InitError(format!(
            "{variable}: expected \"otlp\" or \"none\" ({anyway}), got {other:?}"
        ))),
    }
}

/// `key=value,key=value` from `variable`.
fn pairs(variable: &str, raw: &str) -> Result<Vec<(String, String)>, ConfigError> {
    imageflow_config::split_list(raw)
        .into_iter()
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => Ok((k.trim().to_string(), v.trim().to_string())),
            None => Err(ConfigError::bad_value(
                variable,
                pair,
                "key=value (pairs separated by commas)",
            )),
        })
        .collect()
}

fn sampler(env: Env<'_>) -> Result<SamplerSetting, InitError> {
    let ratio = || env.number::<f64>(&SAMPLER_ARG, 0.0..=1.0);
    Ok(match env.text(&SAMPLER).unwrap_or_default() {
        "always_on" => SamplerSetting::AlwaysOn,
        "always_off" => SamplerSetting::AlwaysOff,
        "traceidratio" => SamplerSetting::Ratio(ratio()?),
        "parentbased_always_on" => SamplerSetting::ParentBasedAlwaysOn,
        "parentbased_always_off" => SamplerSetting::ParentBasedAlwaysOff,
        "parentbased_traceidratio" => SamplerSetting::ParentBasedRatio(ratio()?),
        other => {
            return Err(InitError(format!(
                "OTEL_TRACES_SAMPLER: expected one of always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio; got {other:?}"
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use imageflow_config::vars as env;

    #[test]
    fn defaults_export_nothing_and_sample_ten_percent() {
        let s = Settings::from_env(&env(&[]), "imageflow-resize", "1.2.3", "0123456789ab").unwrap();
        assert_eq!(s.endpoint, None);
        assert_eq!(s.sampler, DEFAULT_SAMPLER);
        let attrs = s.resource_attributes();
        for (k, v) in [
            ("service.name", "imageflow-resize"),
            ("service.version", "0123456789ab"),
            ("imageflow.version", "1.2.3"),
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
                    "deployment.environment=prod, cloud.region=ap-northeast-1,service.name=ignored,service.version=ignored,imageflow.version=ignored,deployment.id=rel-42",
                ),
            ]),
            "imageflow-resize",
            "1.2.3",
            "0123456789ab",
        )
        .unwrap();
        assert_eq!(s.endpoint.as_deref(), Some("http://collector:4317"));
        assert_eq!(s.sampler, SamplerSetting::AlwaysOn);
        let attrs = s.resource_attributes();
        assert!(attrs.contains(&("deployment.environment".into(), "prod".into())));
        assert!(attrs.contains(&("cloud.region".into(), "ap-northeast-1".into())));
        assert!(attrs.contains(&("service.name".into(), "resize-canary".into())));
        assert!(attrs.contains(&("deployment.id".into(), "rel-42".into())));
        assert!(attrs.contains(&("service.version".into(), "0123456789ab".into())));
        assert!(attrs.contains(&("imageflow.version".into(), "1.2.3".into())));
        for own in OWN_ATTRIBUTES {
            assert_eq!(attrs.iter().filter(|(k, _)| k == own).count(), 1, "{own}");
        }
    }

    #[test]
    fn metrics_and_logs_push_follow_their_exporter_variables() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317");
        let settings = |variable: &'static str, value: Option<&'static str>| {
            let mut pairs = vec![endpoint];
            pairs.extend(value.map(|v| (variable, v)));
            Settings::from_env(&env(&pairs), "svc", "1", "r").unwrap()
        };
        for (variable, pushes) in [
            (
                "OTEL_METRICS_EXPORTER",
                (|s: Settings| s.push_metrics) as fn(Settings) -> bool,
            ),
            ("OTEL_LOGS_EXPORTER", |s: Settings| s.push_logs),
        ] {
            assert!(pushes(settings(variable, None)), "{variable} unset");
            assert!(pushes(settings(variable, Some("otlp"))), "{variable}");
            assert!(!pushes(settings(variable, Some("none"))), "{variable}");
            assert!(!pushes(settings(variable, Some("NONE"))), "{variable}");
        }
        let logs_off = settings("OTEL_LOGS_EXPORTER", Some("none"));
        assert!(logs_off.push_metrics, "one variable per signal");
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
            (
                vec![("OTEL_LOGS_EXPORTER", "console")],
                "OTEL_LOGS_EXPORTER",
            ),
        ] {
            let err = Settings::from_env(&env(&pairs), "svc", "0", "r").unwrap_err();
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
            "r",
        )
        .unwrap();
        assert_eq!(s.endpoint, None);
    }

    #[test]
    fn every_variable_read_is_documented() {
        let documented: Vec<&str> = Settings::SETTINGS.iter().map(|s| s.name).collect();
        for name in [
            "RUST_LOG",
            "OTEL_SERVICE_NAME",
            "OTEL_SDK_DISABLED",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "OTEL_METRICS_EXPORTER",
            "OTEL_LOGS_EXPORTER",
            "OTEL_TRACES_SAMPLER",
            "OTEL_TRACES_SAMPLER_ARG",
            "OTEL_RESOURCE_ATTRIBUTES",
            "OTEL_METRIC_EXPORT_INTERVAL",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        ] {
            assert!(documented.contains(&name), "{name} missing from SETTINGS");
        }
    }
}

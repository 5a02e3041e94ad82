//! A small metric registry that renders Prometheus text (for `/metrics`) and
//! hands snapshots to the OTLP exporter, so both paths show the same numbers
//! under the names the design's PromQL and alert rules use.
//!
//! [`Registry::global`] holds what a process measures about itself (gRPC
//! server calls, storage operations, inference, process RSS/CPU); a component
//! that must be counted apart in tests (the backend) keeps its own registry
//! and renders both.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{Arc, LazyLock, Mutex, Weak},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// Latency buckets in seconds, 1 ms to 60 s: gRPC calls take milliseconds,
/// pipelines up to a minute.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Label pairs in a fixed order (the order they were given).
pub type Labels = Vec<(&'static str, String)>;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistogramValue {
    /// Cumulative counts per bucket of [`LATENCY_BUCKETS`] (not including +Inf).
    pub buckets: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl HistogramValue {
    fn observe(&mut self, v: f64) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; LATENCY_BUCKETS.len()];
        }
        for (slot, bound) in self.buckets.iter_mut().zip(LATENCY_BUCKETS) {
            if v <= *bound {
                *slot += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Number(f64),
    Histogram(HistogramValue),
}

#[derive(Clone, Debug)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    pub series: BTreeMap<Labels, Value>,
}

#[derive(Debug, Default)]
struct State {
    families: BTreeMap<&'static str, Family>,
}

/// Shared, cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    state: Arc<Mutex<State>>,
}

static GLOBAL: LazyLock<Registry> = LazyLock::new(Registry::new);
static EXPORTED: LazyLock<Mutex<Vec<Weak<Mutex<State>>>>> = LazyLock::new(Default::default);

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_string())).collect()
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// The process-wide registry.
    pub fn global() -> &'static Registry {
        &GLOBAL
    }

    /// Adds this registry to what the OTLP exporter sends (besides the global one).
    pub fn export_over_otlp(&self) {
        if let Ok(mut list) = EXPORTED.lock() {
            list.retain(|w| w.strong_count() > 0);
            list.push(Arc::downgrade(&self.state));
        }
    }

    fn with(
        &self,
        name: &'static str,
        kind: Kind,
        help: &'static str,
        f: impl FnOnce(&mut Family),
    ) {
        // A poisoned lock only means another thread panicked mid-update;
        // the numbers are still the best we have.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let family = state.families.entry(name).or_insert_with(|| Family {
            name,
            kind,
            help,
            series: BTreeMap::new(),
        });
        f(family);
    }

    /// Declares a family so it is rendered (with its HELP and TYPE) before
    /// anything was recorded; alert rules then see 0 instead of no data.
    pub fn describe(&self, name: &'static str, kind: Kind, help: &'static str) {
        self.with(name, kind, help, |_| {});
    }

    pub fn inc(&self, name: &'static str, help: &'static str, pairs: &[(&'static str, &str)]) {
        self.add(name, help, pairs, 1.0);
    }

    pub fn add(
        &self,
        name: &'static str,
        help: &'static str,
        pairs: &[(&'static str, &str)],
        by: f64,
    ) {
        self.with(name, Kind::Counter, help, |f| {
            if let Value::Number(v) = f.series.entry(labels(pairs)).or_insert(Value::Number(0.0)) {
                *v += by;
            }
        });
    }

    pub fn set_gauge(
        &self,
        name: &'static str,
        help: &'static str,
        pairs: &[(&'static str, &str)],
        value: f64,
    ) {
        self.with(name, Kind::Gauge, help, |f| {
            f.series.insert(labels(pairs), Value::Number(value));
        });
    }

    pub fn add_gauge(
        &self,
        name: &'static str,
        help: &'static str,
        pairs: &[(&'static str, &str)],
        delta: f64,
    ) {
        self.with(name, Kind::Gauge, help, |f| {
            if let Value::Number(v) = f.series.entry(labels(pairs)).or_insert(Value::Number(0.0)) {
                *v += delta;
            }
        });
    }

    pub fn observe(
        &self,
        name: &'static str,
        help: &'static str,
        pairs: &[(&'static str, &str)],
        elapsed: Duration,
    ) {
        self.with(name, Kind::Histogram, help, |f| {
            if let Value::Histogram(h) = f
                .series
                .entry(labels(pairs))
                .or_insert_with(|| Value::Histogram(HistogramValue::default()))
            {
                h.observe(elapsed.as_secs_f64());
            }
        });
    }

    /// A copy of every family, for the exporter and for tests.
    pub fn snapshot(&self) -> Vec<Family> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.families.values().cloned().collect()
    }

    /// Prometheus text exposition (0.0.4) of this registry.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for family in self.snapshot() {
            render_family(&mut out, &family);
        }
        out
    }
}

/// Everything exported over OTLP: the global registry, the registries that
/// asked to be, and the process gauges.
pub(crate) fn exported_snapshot() -> Vec<Family> {
    let mut families = Registry::global().snapshot();
    let list: Vec<Arc<Mutex<State>>> = EXPORTED
        .lock()
        .map(|l| l.iter().filter_map(Weak::upgrade).collect())
        .unwrap_or_default();
    for state in list {
        families.extend(Registry { state }.snapshot());
    }
    families.extend(process_families());
    families
}

/// The global registry plus process metrics, as a service's `/metrics` serves them.
pub fn render_global() -> String {
    let mut out = Registry::global().render();
    for family in process_families() {
        render_family(&mut out, &family);
    }
    out
}

fn render_family(out: &mut String, family: &Family) {
    let name = family.name;
    let _ = writeln!(
        out,
        "# HELP {name} {}\n# TYPE {name} {}",
        family.help,
        family.kind.as_str()
    );
    for (labels, value) in &family.series {
        match value {
            Value::Number(v) => {
                let _ = writeln!(out, "{name}{} {v}", fmt_labels(labels, None));
            }
            Value::Histogram(h) => {
                for (count, bound) in h.buckets.iter().zip(LATENCY_BUCKETS) {
                    let _ = writeln!(
                        out,
                        "{name}_bucket{} {count}",
                        fmt_labels(labels, Some(&bound.to_string()))
                    );
                }
                let _ = writeln!(
                    out,
                    "{name}_bucket{} {}",
                    fmt_labels(labels, Some("+Inf")),
                    h.count
                );
                let _ = writeln!(out, "{name}_sum{} {}", fmt_labels(labels, None), h.sum);
                let _ = writeln!(out, "{name}_count{} {}", fmt_labels(labels, None), h.count);
            }
        }
    }
}

fn fmt_labels(labels: &Labels, le: Option<&str>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// When the process started, in seconds since the epoch (the OTLP start time
/// of every cumulative series).
pub(crate) fn process_start() -> SystemTime {
    static START: LazyLock<SystemTime> =
        LazyLock::new(|| process_start_from_proc().unwrap_or_else(SystemTime::now));
    *START
}

fn process_families() -> Vec<Family> {
    let mut families = Vec::new();
    let gauge = |name, kind, help, v: f64| Family {
        name,
        kind,
        help,
        series: BTreeMap::from([(Vec::new(), Value::Number(v))]),
    };
    if let Some(rss) = resident_bytes() {
        families.push(gauge(
            "process_resident_memory_bytes",
            Kind::Gauge,
            "resident memory size in bytes",
            rss as f64,
        ));
    }
    if let Some(cpu) = cpu_seconds() {
        families.push(gauge(
            "process_cpu_seconds_total",
            Kind::Counter,
            "user and system CPU time spent in seconds",
            cpu,
        ));
    }
    let start = process_start()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    families.push(gauge(
        "process_start_time_seconds",
        Kind::Gauge,
        "start time of the process since the Unix epoch in seconds",
        start,
    ));
    families
}

fn resident_bytes() -> Option<u64> {
    // statm: size resident shared ... in pages; pages are 4 KiB on the
    // platforms we ship (x86_64, aarch64 Linux).
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Fields of /proc/self/stat after the command name (which may hold spaces).
fn stat_fields() -> Option<Vec<String>> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Clock ticks per second for /proc times; 100 on every Linux we run on.
const TICKS: f64 = 100.0;

fn cpu_seconds() -> Option<f64> {
    let f = stat_fields()?;
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS)
}

fn process_start_from_proc() -> Option<SystemTime> {
    let f = stat_fields()?;
    let start_ticks: f64 = f.get(19)?.parse().ok()?;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let age = (uptime - start_ticks / TICKS).max(0.0);
    SystemTime::now().checked_sub(Duration::from_secs_f64(age))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_histograms() {
        let r = Registry::new();
        r.describe("jobs_total", Kind::Counter, "jobs");
        r.inc(
            "http_requests_total",
            "requests",
            &[("code", "200"), ("route", "/v1/x")],
        );
        r.inc(
            "http_requests_total",
            "requests",
            &[("code", "200"), ("route", "/v1/x")],
        );
        r.add_gauge("inflight", "in flight", &[], 2.0);
        r.add_gauge("inflight", "in flight", &[], -1.0);
        r.observe(
            "latency_seconds",
            "latency",
            &[("op", "get")],
            Duration::from_millis(20),
        );
        let text = r.render();
        assert!(text.contains("# TYPE jobs_total counter\n"), "{text}");
        assert!(text.contains("http_requests_total{code=\"200\",route=\"/v1/x\"} 2\n"));
        assert!(text.contains("inflight 1\n"));
        assert!(text.contains("latency_seconds_bucket{op=\"get\",le=\"0.01\"} 0\n"));
        assert!(text.contains("latency_seconds_bucket{op=\"get\",le=\"0.025\"} 1\n"));
        assert!(text.contains("latency_seconds_bucket{op=\"get\",le=\"+Inf\"} 1\n"));
        assert!(text.contains("latency_seconds_count{op=\"get\"} 1\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        let r = Registry::new();
        r.inc("x_total", "x", &[("path", "a\"b\\c\nd")]);
        assert!(r.render().contains(r#"x_total{path="a\"b\\c\nd"} 1"#));
    }

    #[test]
    fn process_metrics_are_real() {
        let text = render_global();
        let rss: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .expect("rss line")
            .parse()
            .unwrap();
        assert!(
            rss > 1_000_000.0,
            "a test process holds more than 1 MB: {rss}"
        );
        assert!(text.contains("process_cpu_seconds_total "));
        let start = process_start()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(
            start <= now && now - start < 24 * 3600,
            "start {start} now {now}"
        );
    }
}

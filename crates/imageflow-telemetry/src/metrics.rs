//! Metric registries whose cells are `prometheus-client` counters, gauges and
//! histograms with exemplars (below), rendered by `prometheus-client`'s
//! encoders for `/metrics` (Prometheus text 0.0.4, or OpenMetrics 1.0 with the
//! exemplars when the scraper asks for it: [`Format`]) and snapshotted for
//! the OTLP push, so both paths show the same numbers under the names the
//! design's PromQL and alert rules use.
//!
//! A histogram observed inside a sampled span keeps that trace's id as the
//! exemplar of the bucket the value fell in, so a latency panel leads to a
//! trace of a slow request.
//!
//! [`Registry::global`] holds what a process measures about itself (gRPC
//! server calls, storage operations, inference, process RSS/CPU); a component
//! that must be counted apart in tests (the backend) keeps its own registry
//! and renders both.
//!
//! Hot paths hold a [`CounterVec`], [`GaugeVec`] or [`HistogramVec`] and pass
//! label values as `&str`: finding a series takes a read lock of its own
//! family and compares the borrowed values, so an observation neither
//! serialises with other families nor allocates. Only the first observation
//! of a label set copies its values. The name-keyed methods
//! ([`Registry::inc`], [`Registry::observe`], ...) reach the same families
//! through one more read-locked lookup by name.
//!
//! `prometheus-client`'s own `Family` is not used as the map: it finds a
//! series by an owned label set, which would allocate the label strings on
//! every observation.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    hash::{BuildHasher, BuildHasherDefault, Hasher},
    sync::{
        Arc, LazyLock, Mutex, PoisonError, RwLock, Weak,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use foldhash::fast::RandomState;
use opentelemetry::trace::TraceContextExt;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, prometheus_text, text},
    metrics::{
        MetricType,
        counter::{ConstCounter, Counter as CounterCell},
        exemplar::HistogramWithExemplars,
        gauge::{ConstGauge, Gauge as GaugeCell},
    },
    registry::Registry as Encoder,
};

/// Latency buckets in seconds, 1 ms to 60 s: gRPC calls take milliseconds,
/// pipelines up to a minute.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The `Content-Type` of what [`Registry::render`] and [`render_global`] return.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The `Content-Type` of OpenMetrics 1.0 text; Prometheus reads exemplars
/// only from a response that says it.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The two text expositions `/metrics` serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text 0.0.4, for `curl` and scrapers that ask for nothing
    /// else; it has no syntax for exemplars.
    Prometheus,
    /// OpenMetrics 1.0 text with the histograms' exemplars; Prometheus asks
    /// for it first.
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` header prefers: OpenMetrics when it names
    /// `application/openmetrics-text` with a higher quality than the text
    /// format (or the same, earlier), as client_golang negotiates. Media
    /// types not served here (Prometheus' protobuf) do not count; without a
    /// header, or with nothing served here in it, the text format.
    pub fn negotiate(accept: Option<&str>) -> Self {
        let mut best: Option<(f32, Self)> = None;
        for range in accept.unwrap_or_default().split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default().to_ascii_lowercase();
            let format = match media.as_str() {
                "application/openmetrics-text" => Self::OpenMetrics,
                "text/plain" | "text/*" | "*/*" => Self::Prometheus,
                _ => continue,
            };
            let quality = parts
                .filter_map(|p| p.strip_prefix("q="))
                .find_map(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            if quality > 0.0 && best.is_none_or(|(q, _)| quality > q) {
                best = Some((quality, format));
            }
        }
        best.map_or(Self::Prometheus, |(_, format)| format)
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Prometheus => CONTENT_TYPE,
            Self::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Label pairs in a fixed order (the order they were given).
pub type Labels = Vec<(&'static str, String)>;

/// A histogram as [`Registry::snapshot`] reports it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistogramValue {
    /// Cumulative counts per bucket of [`LATENCY_BUCKETS`] (not including +Inf).
    pub buckets: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Number(f64),
    Histogram(HistogramValue),
}

/// One family as [`Registry::snapshot`] reports it.
#[derive(Clone, Debug)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    pub series: BTreeMap<Labels, Value>,
}

type Counter = CounterCell<u64, AtomicU64>;
type Gauge = GaugeCell<i64, AtomicI64>;

const BUCKETS: usize = LATENCY_BUCKETS.len();

/// An exemplar's labels: the trace id, as Grafana's exemplar links expect it.
type TraceLabel = [(&'static str, String); 1];

/// The series of a histogram, counted twice over: `prometheus-client`'s
/// histogram with exemplars is what `/metrics` renders (its exemplars can be
/// made by no one else: the type has no public constructor), and one atomic
/// per bucket (the last one past 60 s) plus the sum feed the OTLP snapshot,
/// as `prometheus-client` offers no read access to its buckets. Both are
/// cumulative from the same observations, so they differ at most by the
/// observations in flight between the two updates. The second count costs
/// its two uncontended locks, about 20 ns an observation in
/// `benches/metrics.rs`, little beside a request of milliseconds.
#[derive(Debug)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS + 1],
    sum_bits: AtomicU64,
    exposition: HistogramWithExemplars<TraceLabel>,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_bits: AtomicU64::new(0.0f64.to_bits()),
            exposition: HistogramWithExemplars::new(LATENCY_BUCKETS.iter().copied()),
        }
    }
}

/// The current span's trace id when the trace is sampled: an exemplar must
/// lead to a trace the trace store has.
fn sampled_trace_id() -> Option<String> {
    opentelemetry::Context::map_current(|cx| {
        let span = cx.span();
        let context = span.span_context();
        (context.is_valid() && context.is_sampled()).then(|| context.trace_id().to_string())
    })
}

impl Histogram {
    /// Counts `seconds`; inside a sampled span, the trace becomes the
    /// exemplar of its bucket.
    pub fn observe(&self, seconds: f64) {
        let slot = LATENCY_BUCKETS.partition_point(|bound| *bound < seconds);
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        // Err only when the closure returns None, which it never does.
        let _ = self
            .sum_bits
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + seconds).to_bits())
            });
        let exemplar = sampled_trace_id().map(|id| [("trace_id", id)]);
        // The time of the observation: Prometheus keeps an exemplar once per
        // timestamp, so one seen again by the next scrape is not a new one.
        let at = exemplar.is_some().then(SystemTime::now);
        self.exposition.observe(seconds, exemplar, at);
    }

    /// Per-bucket counts (not cumulative), the last one past every bound.
    fn counts(&self) -> [u64; BUCKETS + 1] {
        std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed))
    }

    fn sum(&self) -> f64 {
        f64::from_bits(self.sum_bits.load(Ordering::Relaxed))
    }

    fn value(&self) -> HistogramValue {
        let counts = self.counts();
        let mut running = 0;
        let buckets = counts[..BUCKETS]
            .iter()
            .map(|c| {
                running += c;
                running
            })
            .collect();
        HistogramValue {
            buckets,
            sum: self.sum(),
            count: counts.iter().sum(),
        }
    }
}

impl EncodeMetric for Histogram {
    fn encode(&self, encoder: MetricEncoder) -> fmt::Result {
        // The Prometheus text encoder leaves the exemplars out.
        self.exposition.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// What a series holds, by kind.
trait Cell: EncodeMetric + Default + fmt::Debug + Send + Sync + 'static {
    const KIND: Kind;
    fn value(&self) -> Value;
}

impl Cell for Counter {
    const KIND: Kind = Kind::Counter;
    fn value(&self) -> Value {
        Value::Number(self.get() as f64)
    }
}

impl Cell for Gauge {
    const KIND: Kind = Kind::Gauge;
    fn value(&self) -> Value {
        Value::Number(self.get() as f64)
    }
}

impl Cell for Histogram {
    const KIND: Kind = Kind::Histogram;
    fn value(&self) -> Value {
        Value::Histogram(Histogram::value(self))
    }
}

/// The map of series is keyed by a hash the family computed already.
#[derive(Debug, Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[derive(Debug)]
struct Series<C> {
    labels: Box<[(&'static str, Box<str>)]>,
    cell: C,
}

impl<C> Series<C> {
    fn matches<'a>(&self, mut pairs: impl Iterator<Item = (&'static str, &'a str)>) -> bool {
        self.labels
            .iter()
            .all(|(k, v)| pairs.next().is_some_and(|(pk, pv)| pk == *k && pv == &**v))
            && pairs.next().is_none()
    }
}

type SeriesMap<C> = HashMap<u64, Vec<Series<C>>, BuildHasherDefault<Prehashed>>;

/// One family: its series behind a lock of its own.
#[derive(Debug)]
struct Core<C> {
    name: &'static str,
    help: &'static str,
    hasher: RandomState,
    series: RwLock<SeriesMap<C>>,
}

impl<C: Cell> Core<C> {
    fn new(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            hasher: RandomState::default(),
            series: RwLock::new(SeriesMap::default()),
        }
    }

    /// Runs `f` on the series of `pairs`, creating it on first use.
    fn with<'a, R>(
        &self,
        pairs: impl Iterator<Item = (&'static str, &'a str)> + Clone,
        f: impl FnOnce(&C) -> R,
    ) -> R {
        // Values only: the names rarely differ between the series of one
        // family, and `matches` compares them anyway.
        let mut hasher = self.hasher.build_hasher();
        for (_, v) in pairs.clone() {
            hasher.write(v.as_bytes());
            hasher.write_u8(0xff);
        }
        let hash = hasher.finish();
        {
            // A poisoned lock only means another thread panicked mid-update;
            // the numbers are still the best we have.
            let map = self.series.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(series) = map
                .get(&hash)
                .and_then(|bucket| bucket.iter().find(|s| s.matches(pairs.clone())))
            {
                return f(&series.cell);
            }
        }
        let mut map = self.series.write().unwrap_or_else(PoisonError::into_inner);
        let bucket = map.entry(hash).or_default();
        let index = match bucket.iter().position(|s| s.matches(pairs.clone())) {
            Some(index) => index,
            None => {
                bucket.push(Series {
                    labels: pairs.map(|(k, v)| (k, Box::from(v))).collect(),
                    cell: C::default(),
                });
                bucket.len() - 1
            }
        };
        f(&bucket[index].cell)
    }

    fn snapshot(&self) -> Family {
        let map = self.series.read().unwrap_or_else(PoisonError::into_inner);
        Family {
            name: self.name,
            kind: C::KIND,
            help: self.help,
            series: map
                .values()
                .flatten()
                .map(|s| {
                    let labels = s.labels.iter().map(|(k, v)| (*k, v.to_string())).collect();
                    (labels, s.cell.value())
                })
                .collect(),
        }
    }

    fn encode(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        // The encoder adds `_total` to counters itself; a counter named
        // without it (none is) would be renamed, so it goes out untyped.
        let (name, metric_type) = match C::KIND {
            Kind::Counter => match self.name.strip_suffix("_total") {
                Some(base) => (base, MetricType::Counter),
                None => (self.name, MetricType::Unknown),
            },
            Kind::Gauge => (self.name, MetricType::Gauge),
            Kind::Histogram => (self.name, MetricType::Histogram),
        };
        let map = self.series.read().unwrap_or_else(PoisonError::into_inner);
        let mut series: Vec<&Series<C>> = map.values().flatten().collect();
        series.sort_unstable_by(|a, b| a.labels.cmp(&b.labels));
        let mut metric = encoder.encode_descriptor(name, self.help, None, metric_type)?;
        for s in series {
            let labels = &s.labels[..];
            s.cell.encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// A handle on the process-wide registry, made on first use and kept in a
/// static at the call site, so a hot path neither looks a family up nor takes
/// a lock: `global_metric!(histogram_vec, "name", "help", &["label"])`.
#[macro_export]
macro_rules! global_metric {
    (counter_vec, $($args:expr),+ $(,)?) => {
        $crate::global_metric!(@ $crate::metrics::CounterVec, counter_vec, $($args),+)
    };
    (gauge_vec, $($args:expr),+ $(,)?) => {
        $crate::global_metric!(@ $crate::metrics::GaugeVec, gauge_vec, $($args),+)
    };
    (histogram_vec, $($args:expr),+ $(,)?) => {
        $crate::global_metric!(@ $crate::metrics::HistogramVec, histogram_vec, $($args),+)
    };
    (@ $ty:ty, $method:ident, $($args:expr),+) => {{
        static METRIC: std::sync::LazyLock<$ty> =
            std::sync::LazyLock::new(|| $crate::metrics::Registry::global().$method($($args),+));
        &*METRIC
    }};
}

/// A counter family with fixed label names; cheap to clone.
#[derive(Clone, Debug)]
pub struct CounterVec {
    core: Arc<Core<Counter>>,
    labels: &'static [&'static str],
}

impl CounterVec {
    /// Adds one to the series of `values` (in the order of the label names).
    pub fn inc(&self, values: &[&str]) {
        self.inc_by(values, 1);
    }

    pub fn inc_by(&self, values: &[&str], by: u64) {
        let pairs = self.labels.iter().copied().zip(values.iter().copied());
        self.core.with(pairs, |c| c.inc_by(by));
    }

    /// The count of `values`' series (created at 0 if it did not exist).
    pub fn get(&self, values: &[&str]) -> u64 {
        let pairs = self.labels.iter().copied().zip(values.iter().copied());
        self.core.with(pairs, Counter::get)
    }
}

/// A gauge family with fixed label names; cheap to clone.
#[derive(Clone, Debug)]
pub struct GaugeVec {
    core: Arc<Core<Gauge>>,
    labels: &'static [&'static str],
}

impl GaugeVec {
    pub fn set(&self, values: &[&str], value: i64) {
        let pairs = self.labels.iter().copied().zip(values.iter().copied());
        self.core.with(pairs, |g| g.set(value));
    }

    pub fn add(&self, values: &[&str], delta: i64) {
        let pairs = self.labels.iter().copied().zip(values.iter().copied());
        self.core.with(pairs, |g| g.inc_by(delta));
    }

    /// The value of `values`' series (created at 0 if it did not exist).
    pub fn get(&self, values: &[&str]) -> i64 {
        let pairs = self.labels.iter().copied().zip(values.iter().copied());
        self.core.with(pairs, Gauge::get)
    }

    /// Adds one now and takes it back when the guard drops, however the
    /// work it covers ends (completed, failed, or its future dropped).
    pub fn track(&self, values: &[&str]) -> InflightGuard {
        let pairs = self.labels.iter().copied().zip(values.iter().copied());
        let gauge = self.core.with(pairs, |g| {
            g.inc();
            g.clone()
        });
        InflightGuard { gauge }
    }
}

/// From [`GaugeVec::track`].
#[derive(Debug)]
#[must_use = "the gauge goes back down when the guard drops"]
pub struct InflightGuard {
    gauge: Gauge,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// A histogram family over [`LATENCY_BUCKETS`] with fixed label names;
/// cheap to clone.
#[derive(Clone, Debug)]
pub struct HistogramVec {
    core: Arc<Core<Histogram>>,
    labels: &'static [&'static str],
}

impl HistogramVec {
    pub fn observe(&self, values: &[&str], elapsed: Duration) {
        let pairs = self.labels.iter().copied().zip(values.iter().copied());
        self.core.with(pairs, |h| h.observe(elapsed.as_secs_f64()));
    }
}

#[derive(Clone, Debug)]
enum AnyFamily {
    Counter(Arc<Core<Counter>>),
    Gauge(Arc<Core<Gauge>>),
    Histogram(Arc<Core<Histogram>>),
}

impl AnyFamily {
    fn new(name: &'static str, kind: Kind, help: &'static str) -> Self {
        match kind {
            Kind::Counter => Self::Counter(Arc::new(Core::new(name, help))),
            Kind::Gauge => Self::Gauge(Arc::new(Core::new(name, help))),
            Kind::Histogram => Self::Histogram(Arc::new(Core::new(name, help))),
        }
    }

    fn snapshot(&self) -> Family {
        match self {
            Self::Counter(c) => c.snapshot(),
            Self::Gauge(g) => g.snapshot(),
            Self::Histogram(h) => h.snapshot(),
        }
    }

    fn encode(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        match self {
            Self::Counter(c) => c.encode(encoder),
            Self::Gauge(g) => g.encode(encoder),
            Self::Histogram(h) => h.encode(encoder),
        }
    }
}

#[derive(Debug, Default)]
struct Families {
    by_name: RwLock<BTreeMap<&'static str, AnyFamily>>,
}

impl Collector for Families {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let families = self.by_name.read().unwrap_or_else(PoisonError::into_inner);
        families.values().try_for_each(|f| f.encode(&mut encoder))
    }
}

/// Shared, cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    families: Arc<Families>,
}

static GLOBAL: LazyLock<Registry> = LazyLock::new(Registry::new);
static EXPORTED: LazyLock<Mutex<Vec<Weak<Families>>>> = LazyLock::new(Default::default);

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
        let mut list = EXPORTED.lock().unwrap_or_else(PoisonError::into_inner);
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(&self.families));
    }

    /// Runs `f` on family `name`, declaring it as `kind` on first use.
    fn with<R>(
        &self,
        name: &'static str,
        kind: Kind,
        help: &'static str,
        f: impl FnOnce(&AnyFamily) -> R,
    ) -> R {
        {
            let families = self
                .families
                .by_name
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(family) = families.get(name) {
                return f(family);
            }
        }
        let mut families = self
            .families
            .by_name
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        f(families
            .entry(name)
            .or_insert_with(|| AnyFamily::new(name, kind, help)))
    }

    /// Declares a family so it is rendered (with its HELP and TYPE) before
    /// anything was recorded; alert rules then see 0 instead of no data.
    pub fn describe(&self, name: &'static str, kind: Kind, help: &'static str) {
        self.with(name, kind, help, |_| {});
    }

    /// The counter family `name`. A name already taken by another kind of
    /// metric is a programming error: it is logged, and the handle returned
    /// counts into a family that is not rendered.
    pub fn counter_vec(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> CounterVec {
        let core = self.with(name, Kind::Counter, help, |f| match f {
            AnyFamily::Counter(core) => Some(core.clone()),
            _ => None,
        });
        CounterVec {
            core: core.unwrap_or_else(|| detached(name, help, Kind::Counter)),
            labels,
        }
    }

    /// The gauge family `name`; see [`Registry::counter_vec`] for a name
    /// taken by another kind.
    pub fn gauge_vec(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> GaugeVec {
        let core = self.with(name, Kind::Gauge, help, |f| match f {
            AnyFamily::Gauge(core) => Some(core.clone()),
            _ => None,
        });
        GaugeVec {
            core: core.unwrap_or_else(|| detached(name, help, Kind::Gauge)),
            labels,
        }
    }

    /// The histogram family `name` over [`LATENCY_BUCKETS`]; see
    /// [`Registry::counter_vec`] for a name taken by another kind.
    pub fn histogram_vec(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> HistogramVec {
        let core = self.with(name, Kind::Histogram, help, |f| match f {
            AnyFamily::Histogram(core) => Some(core.clone()),
            _ => None,
        });
        HistogramVec {
            core: core.unwrap_or_else(|| detached(name, help, Kind::Histogram)),
            labels,
        }
    }

    pub fn inc(&self, name: &'static str, help: &'static str, pairs: &[(&'static str, &str)]) {
        self.add(name, help, pairs, 1);
    }

    /// Adds `by` to a counter; 0 creates the series, so that Prometheus'
    /// `increase()` sees its first real increment.
    pub fn add(
        &self,
        name: &'static str,
        help: &'static str,
        pairs: &[(&'static str, &str)],
        by: u64,
    ) {
        self.with(name, Kind::Counter, help, |f| {
            if let AnyFamily::Counter(core) = f {
                core.with(pairs.iter().copied(), |c| c.inc_by(by));
            }
        });
    }

    pub fn set_gauge(
        &self,
        name: &'static str,
        help: &'static str,
        pairs: &[(&'static str, &str)],
        value: i64,
    ) {
        self.with(name, Kind::Gauge, help, |f| {
            if let AnyFamily::Gauge(core) = f {
                core.with(pairs.iter().copied(), |g| g.set(value));
            }
        });
    }

    pub fn add_gauge(
        &self,
        name: &'static str,
        help: &'static str,
        pairs: &[(&'static str, &str)],
        delta: i64,
    ) {
        self.with(name, Kind::Gauge, help, |f| {
            if let AnyFamily::Gauge(core) = f {
                core.with(pairs.iter().copied(), |g| g.inc_by(delta));
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
            if let AnyFamily::Histogram(core) = f {
                core.with(pairs.iter().copied(), |h| h.observe(elapsed.as_secs_f64()));
            }
        });
    }

    /// A copy of every family, for the exporter and for tests.
    pub fn snapshot(&self) -> Vec<Family> {
        self.families
            .by_name
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(AnyFamily::snapshot)
            .collect()
    }

    /// Prometheus text exposition (0.0.4) of this registry.
    pub fn render(&self) -> String {
        let mut encoder = Encoder::default();
        encoder.register_collector(Box::new(self.families.clone()));
        encode(&encoder, Format::Prometheus)
    }

    /// What a `/metrics` serving this registry answers: its series, then the
    /// process-wide ones (storage operations, process RSS and CPU), in one
    /// exposition (OpenMetrics allows one `# EOF`, at the end).
    pub fn exposition(&self, format: Format) -> String {
        let mut encoder = Encoder::default();
        if !Arc::ptr_eq(&self.families, &Registry::global().families) {
            encoder.register_collector(Box::new(self.families.clone()));
        }
        register_global(&mut encoder);
        encode(&encoder, format)
    }
}

fn detached<C: Cell>(name: &'static str, help: &'static str, kind: Kind) -> Arc<Core<C>> {
    tracing::error!(
        metric = name,
        ?kind,
        "metric name already used by another kind of metric; this one is not exported"
    );
    Arc::new(Core::new(name, help))
}

fn encode(encoder: &Encoder, format: Format) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail, nor can the encoders above.
    let _ = match format {
        Format::Prometheus => prometheus_text::encode(&mut out, encoder),
        Format::OpenMetrics => text::encode(&mut out, encoder),
    };
    out
}

/// Everything exported over OTLP: the global registry, the registries that
/// asked to be, and the process gauges.
pub(crate) fn exported_snapshot() -> Vec<Family> {
    let mut families = Registry::global().snapshot();
    let list: Vec<Arc<Families>> = EXPORTED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    for registry in list {
        families.extend(Registry { families: registry }.snapshot());
    }
    families.extend(process_families());
    families
}

/// The global registry plus process metrics, as a service's `/metrics` serves
/// them, in Prometheus text.
pub fn render_global() -> String {
    global_exposition(Format::Prometheus)
}

/// The global registry plus process metrics in `format`.
pub fn global_exposition(format: Format) -> String {
    let mut encoder = Encoder::default();
    register_global(&mut encoder);
    encode(&encoder, format)
}

fn register_global(encoder: &mut Encoder) {
    encoder.register_collector(Box::new(Registry::global().families.clone()));
    encoder.register_collector(Box::new(ProcessCollector));
}

/// When the process started (the OTLP start time of every cumulative series).
pub(crate) fn process_start() -> SystemTime {
    static START: LazyLock<SystemTime> =
        LazyLock::new(|| process_start_from_proc().unwrap_or_else(SystemTime::now));
    *START
}

const RSS: &str = "process_resident_memory_bytes";
const RSS_HELP: &str = "resident memory size in bytes";
const CPU: &str = "process_cpu_seconds_total";
const CPU_HELP: &str = "user and system CPU time spent in seconds";
const START: &str = "process_start_time_seconds";
const START_HELP: &str = "start time of the process since the Unix epoch in seconds";

fn start_seconds() -> f64 {
    process_start()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// The process metrics, read from /proc on each scrape.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        if let Some(rss) = resident_bytes() {
            let gauge = ConstGauge::new(i64::try_from(rss).unwrap_or(i64::MAX));
            gauge.encode(encoder.encode_descriptor(RSS, RSS_HELP, None, MetricType::Gauge)?)?;
        }
        if let Some(cpu) = cpu_seconds() {
            let name = CPU.strip_suffix("_total").unwrap_or(CPU);
            let counter = ConstCounter::new(cpu);
            counter.encode(encoder.encode_descriptor(
                name,
                CPU_HELP,
                None,
                MetricType::Counter,
            )?)?;
        }
        let start = ConstGauge::new(start_seconds());
        start.encode(encoder.encode_descriptor(START, START_HELP, None, MetricType::Gauge)?)
    }
}

fn process_families() -> Vec<Family> {
    let number = |name, kind, help, v: f64| Family {
        name,
        kind,
        help,
        series: BTreeMap::from([(Vec::new(), Value::Number(v))]),
    };
    let mut families = Vec::new();
    if let Some(rss) = resident_bytes() {
        families.push(number(RSS, Kind::Gauge, RSS_HELP, rss as f64));
    }
    if let Some(cpu) = cpu_seconds() {
        families.push(number(CPU, Kind::Counter, CPU_HELP, cpu));
    }
    families.push(number(START, Kind::Gauge, START_HELP, start_seconds()));
    families
}

fn resident_bytes() -> Option<u64> {
    // statm: size resident shared ... in pages of the kernel's page size,
    // 4 KiB on x86_64 but 16 or 64 KiB on some aarch64 kernels.
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let page = u64::try_from(rustix::param::page_size()).ok()?;
    Some(pages * page)
}

/// Fields of /proc/self/stat after the command name (which may hold spaces).
fn stat_fields() -> Option<Vec<String>> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Clock ticks per second, the unit of the times in /proc/self/stat.
fn ticks() -> f64 {
    rustix::param::clock_ticks_per_second() as f64
}

fn cpu_seconds() -> Option<f64> {
    let f = stat_fields()?;
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks())
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
    let age = (uptime - start_ticks / ticks()).max(0.0);
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
        r.add_gauge("inflight", "in flight", &[], 2);
        r.add_gauge("inflight", "in flight", &[], -1);
        r.observe(
            "latency_seconds",
            "latency",
            &[("op", "get")],
            Duration::from_millis(20),
        );
        let text = r.render();
        assert!(
            text.contains("# HELP jobs_total jobs\n# TYPE jobs_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("http_requests_total{code=\"200\",route=\"/v1/x\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("inflight 1\n"), "{text}");
        assert!(text.contains("latency_seconds_bucket{op=\"get\",le=\"0.01\"} 0\n"));
        assert!(text.contains("latency_seconds_bucket{op=\"get\",le=\"0.025\"} 1\n"));
        assert!(text.contains("latency_seconds_bucket{op=\"get\",le=\"1\"} 1\n"));
        assert!(text.contains("latency_seconds_bucket{op=\"get\",le=\"+Inf\"} 1\n"));
        assert!(text.contains("latency_seconds_count{op=\"get\"} 1\n"));
    }

    /// Observes `seconds` into a fresh registry inside a span of a trace
    /// that `sampler` decides on; the span's trace id and the registry.
    fn observed_in_a_span(
        sampler: opentelemetry_sdk::trace::Sampler,
        seconds: u64,
    ) -> (String, Registry) {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::layer::SubscriberExt;
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_sampler(sampler)
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let r = Registry::new();
        let h = r.histogram_vec("latency_seconds", "latency", &["route"]);
        let mut trace_id = None;
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request");
            trace_id = crate::propagation::trace_id(&span);
            span.in_scope(|| h.observe(&["/x"], Duration::from_millis(seconds)));
            // Outside any span: counted, no exemplar.
            h.observe(&["/x"], Duration::from_secs(120));
        });
        (trace_id.expect("the span has a trace id"), r)
    }

    #[test]
    fn a_sampled_span_becomes_the_exemplar_of_its_bucket_in_openmetrics() {
        let (trace_id, r) = observed_in_a_span(opentelemetry_sdk::trace::Sampler::AlwaysOn, 20);
        let text = r.exposition(Format::OpenMetrics);
        let line = text
            .lines()
            // The OpenMetrics encoder writes `le` first.
            .find(|l| l.starts_with("latency_seconds_bucket{le=\"0.025\",route=\"/x\"}"))
            .unwrap_or_else(|| panic!("{text}"));
        let exemplar = format!(" 1 # {{trace_id=\"{trace_id}\"}} 0.02 ");
        assert!(line.contains(&exemplar), "{line}");
        let at: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        assert!((now.as_secs_f64() - at).abs() < 60.0, "timestamp {at}");
        assert_eq!(
            text.matches(" # {").count(),
            1,
            "the +Inf observation was outside any span: {text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");

        // The same numbers in Prometheus text, which has no exemplars.
        let plain = r.render();
        assert!(
            plain.contains("latency_seconds_bucket{route=\"/x\",le=\"0.025\"} 1\n"),
            "{plain}"
        );
        assert!(plain.contains("latency_seconds_count{route=\"/x\"} 2\n"));
        assert!(!plain.contains(&trace_id) && !plain.contains("# EOF"));
        // ... and in the OTLP snapshot.
        let no_labels_but_route: Labels = vec![("route", "/x".into())];
        let Value::Histogram(v) = &r.snapshot()[0].series[&no_labels_but_route] else {
            panic!("not a histogram")
        };
        assert_eq!(v.count, 2);
    }

    #[test]
    fn an_unsampled_trace_leaves_no_exemplar() {
        let (_, r) = observed_in_a_span(opentelemetry_sdk::trace::Sampler::AlwaysOff, 20);
        let text = r.exposition(Format::OpenMetrics);
        assert!(!text.contains(" # {"), "{text}");
        assert!(
            text.contains("latency_seconds_count{route=\"/x\"} 2\n"),
            "{text}"
        );
    }

    #[test]
    fn openmetrics_names_counters_once_and_ends_once() {
        let r = Registry::new();
        r.inc("jobs_total", "jobs", &[("status", "ok")]);
        r.set_gauge("busy", "busy", &[], 3);
        let text = r.exposition(Format::OpenMetrics);
        assert!(
            text.contains("# TYPE jobs counter\njobs_total{status=\"ok\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE busy gauge\nbusy 3\n"), "{text}");
        assert!(text.contains("process_start_time_seconds "), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1, "{text}");
        assert!(text.ends_with("# EOF\n"));
        let global = Registry::global().exposition(Format::OpenMetrics);
        assert_eq!(
            global.matches("# TYPE process_start_time_seconds ").count(),
            1,
            "the global registry is not rendered twice"
        );
    }

    #[test]
    fn the_accept_header_chooses_the_format() {
        use Format::{OpenMetrics, Prometheus};
        for (accept, format) in [
            (None, Prometheus),
            (Some(""), Prometheus),
            (Some("*/*"), Prometheus),
            (Some("text/plain;version=0.0.4"), Prometheus),
            (Some("application/json"), Prometheus),
            // Prometheus 2
            (
                Some(
                    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
                ),
                OpenMetrics,
            ),
            // Prometheus 3 with the protobuf format first, which is not served here
            (
                Some(
                    "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.6,application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,text/plain;version=0.0.4;q=0.2,*/*;q=0.1",
                ),
                OpenMetrics,
            ),
            (
                Some("text/plain;q=0.9, application/openmetrics-text;q=0.5"),
                Prometheus,
            ),
            (Some("application/openmetrics-text;q=0"), Prometheus),
            (Some("Application/OpenMetrics-Text"), OpenMetrics),
        ] {
            assert_eq!(Format::negotiate(accept), format, "{accept:?}");
        }
        assert_eq!(
            OpenMetrics.content_type(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
    }

    #[test]
    fn labels_keep_the_order_they_were_given_in() {
        let r = Registry::new();
        let steps = r.counter_vec("steps_total", "steps", &["step_type", "status"]);
        steps.inc(&["resize", "completed"]);
        r.inc(
            "steps_total",
            "steps",
            &[("step_type", "resize"), ("status", "completed")],
        );
        assert_eq!(steps.get(&["resize", "completed"]), 2);
        assert!(
            r.render()
                .contains("steps_total{step_type=\"resize\",status=\"completed\"} 2\n")
        );
    }

    #[test]
    fn series_are_told_apart_by_names_and_values() {
        let r = Registry::new();
        let c = r.counter_vec("c_total", "c", &["a", "b"]);
        c.inc(&["x", "y"]);
        c.inc(&["xy", ""]);
        c.inc(&["x", "y"]);
        r.inc("c_total", "c", &[("b", "x"), ("a", "y")]);
        r.inc("c_total", "c", &[("a", "x")]);
        assert_eq!(c.get(&["x", "y"]), 2);
        assert_eq!(c.get(&["xy", ""]), 1);
        let series = &r.snapshot()[0].series;
        assert_eq!(series.len(), 4, "{series:?}");
    }

    #[test]
    fn label_values_are_escaped() {
        let r = Registry::new();
        r.inc("x_total", "x", &[("path", "a\"b\\c\nd")]);
        assert!(r.render().contains(r#"x_total{path="a\"b\\c\nd"} 1"#));
    }

    #[test]
    fn a_name_of_another_kind_does_not_disturb_the_family() {
        let r = Registry::new();
        r.inc("taken_total", "taken", &[]);
        r.observe("taken_total", "taken", &[], Duration::from_secs(1));
        r.histogram_vec("taken_total", "taken", &[])
            .observe(&[], Duration::from_secs(1));
        assert!(r.render().contains("taken_total 1\n"));
        assert_eq!(r.snapshot()[0].kind, Kind::Counter);
    }

    #[test]
    fn histogram_snapshots_are_cumulative_and_count_overflow() {
        let r = Registry::new();
        let h = r.histogram_vec("h_seconds", "h", &[]);
        for ms in [3, 4, 40, 100_000] {
            h.observe(&[], Duration::from_millis(ms));
        }
        let no_labels: Labels = Vec::new();
        let Value::Histogram(v) = &r.snapshot()[0].series[&no_labels] else {
            panic!("not a histogram")
        };
        assert_eq!(v.count, 4);
        assert_eq!(v.buckets.len(), LATENCY_BUCKETS.len());
        assert_eq!(v.buckets[1], 0, "nothing at or under 2.5 ms");
        assert_eq!(v.buckets[2], 2, "3 and 4 ms under 5 ms");
        assert_eq!(*v.buckets.last().unwrap(), 3, "100 s is past 60 s");
        assert!((v.sum - 100.047).abs() < 1e-9, "{}", v.sum);
    }

    #[test]
    fn a_tracked_gauge_goes_back_down_when_the_guard_drops() {
        let r = Registry::new();
        let g = r.gauge_vec("busy", "busy", &["service"]);
        let first = g.track(&["a"]);
        let second = g.track(&["a"]);
        assert_eq!(g.get(&["a"]), 2);
        drop(first);
        assert_eq!(g.get(&["a"]), 1);
        drop(second);
        assert_eq!(g.get(&["a"]), 0);
    }

    #[test]
    fn concurrent_observations_are_all_counted() {
        let r = Registry::new();
        let c = r.counter_vec("n_total", "n", &["worker"]);
        let h = r.histogram_vec("d_seconds", "d", &["worker"]);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for i in 0..1000 {
                        let worker = if i % 2 == 0 { "even" } else { "odd" };
                        c.inc(&[worker]);
                        h.observe(&[worker], Duration::from_millis(1));
                    }
                });
            }
        });
        assert_eq!(c.get(&["even"]) + c.get(&["odd"]), 4000);
        let text = r.render();
        assert!(
            text.contains("d_seconds_count{worker=\"even\"} 2000\n"),
            "{text}"
        );
        assert!(text.contains("d_seconds_bucket{worker=\"odd\",le=\"0.001\"} 2000\n"));
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
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let vm_rss_kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse().ok())
            .expect("VmRSS in /proc/self/status");
        // The two are read a moment apart; the page size, if wrong, would
        // be off by a factor of 4 or 16.
        let ratio = rss / (vm_rss_kib * 1024.0);
        assert!(
            (0.5..2.0).contains(&ratio),
            "statm says {rss} B, status says {vm_rss_kib} KiB"
        );
        assert!(text.contains("# TYPE process_cpu_seconds_total counter\n"));
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

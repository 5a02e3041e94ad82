//! Kafka settings, read from an env map so tests need not touch the process
//! environment. Each variable is declared once in [`SETTINGS`], which also
//! feeds `--help`; the security variables come from the `kafka-credentials`
//! secret in the cluster.

use std::{collections::HashMap, fmt, str::FromStr, time::Duration};

pub use imageflow_config::{ConfigError, Setting};
use imageflow_config::{Env, Unit};
use rdkafka::ClientConfig;

const BROKERS: Setting = Setting::described(
    "KAFKA_BROKERS",
    "unset (no Kafka; events stay in-process)",
    "bootstrap brokers, a comma-separated list of host:port",
);
const SECURITY_PROTOCOL: Setting = Setting::new(
    "KAFKA_SECURITY_PROTOCOL",
    "plaintext",
    "plaintext, ssl, sasl_plaintext or sasl_ssl",
);
// SCRAM-SHA-512 is what Strimzi and the chart's bundled Kafka use.
const SASL_MECHANISM: Setting = Setting::new(
    "KAFKA_SASL_MECHANISM",
    "SCRAM-SHA-512",
    "SCRAM-SHA-256, SCRAM-SHA-512 or PLAIN (with sasl_* protocols)",
);
const TOPIC_PARTITIONS: Setting = Setting::new(
    "KAFKA_TOPIC_PARTITIONS",
    "6",
    "partitions of topics created at start (existing topics are left as they are)",
);
const REPLICATION_FACTOR: Setting = Setting::new(
    "KAFKA_REPLICATION_FACTOR",
    "1",
    "replicas of topics created at start (the chart sets 3)",
);
const MESSAGE_MAX_BYTES: Setting = Setting::new(
    "KAFKA_MESSAGE_MAX_BYTES",
    "1048576",
    "largest message produced; a larger event is dropped and counted",
);
const DELIVERY_TIMEOUT_MS: Setting = Setting::new(
    "KAFKA_DELIVERY_TIMEOUT_MS",
    "10000",
    "how long an event may wait for the broker before it is dropped and counted",
);
// A fetch waits at the broker at most this long for new messages. Kafka
// answers a waiting fetch as soon as a message arrives, so there it only sets
// how often an idle consumer asks; tansu (the tests' and benches' broker)
// holds every fetch this long, so there a queued execution waits up to one
// wait (idle consumer) or two (busy: it arrives behind a fetch that already
// found data) before a replica sees it; an idle consumer then sends about
// 1000 / this fetches a second.
const FETCH_WAIT_MAX_MS: Setting = Setting::new(
    "KAFKA_FETCH_WAIT_MAX_MS",
    "2",
    "longest a consumer's fetch waits at the broker for new messages (fetch.wait.max.ms); \
     bounds how late a replica sees a queued execution on brokers that hold fetches",
);
// The live view of other replicas' progress reads every event of every
// replica to show a few: a longer wait there means fewer, fuller fetches. On
// Kafka it costs no latency (a waiting fetch is answered when data comes);
// on tansu, each fetch that finds new data lists every batch stored in the
// partition, so fewer fetches of this busy topic save broker CPU.
const PROGRESS_FETCH_WAIT_MS: Setting = Setting::new(
    "KAFKA_PROGRESS_FETCH_WAIT_MS",
    "100",
    "fetch.wait.max.ms of the consumer that brings other replicas' progress into this \
     replica's live streams",
);
// Only `Publisher::publish` (progress, completions) lingers; the awaited
// queue-mode submission goes out at once on a producer of its own. A broker
// writes each batch of each partition on its own, so a few ms of gathering
// turn a busy backend's stream of one-event batches into a few full ones.
const LINGER_MS: Setting = Setting::new(
    "KAFKA_LINGER_MS",
    "10",
    "how long progress and completion events wait to be batched before they are sent \
     (linger.ms); queue-mode submissions never wait",
);

/// Every variable this crate reads.
pub const SETTINGS: &[Setting] = &[
    BROKERS,
    SECURITY_PROTOCOL,
    SASL_MECHANISM,
    Setting::described(
        "KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD",
        "unset",
        "SASL credentials; required with sasl_* protocols (the password is never logged)",
    ),
    Setting::described(
        "KAFKA_SSL_CA_LOCATION",
        "system trust store",
        "PEM file of the CA that signed the brokers' certificates (ssl, sasl_ssl)",
    ),
    Setting::described(
        "KAFKA_CLIENT_ID",
        "the service name",
        "client.id the brokers see in their logs and quotas",
    ),
    TOPIC_PARTITIONS,
    REPLICATION_FACTOR,
    MESSAGE_MAX_BYTES,
    DELIVERY_TIMEOUT_MS,
    FETCH_WAIT_MAX_MS,
    PROGRESS_FETCH_WAIT_MS,
    LINGER_MS,
];

/// How the clients talk to the brokers (`security.protocol`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    /// The librdkafka spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }

    pub fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }

    pub fn uses_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }
}

impl FromStr for SecurityProtocol {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        // Kafka's own tools write these in upper case; accept both.
        match s.to_ascii_lowercase().as_str() {
            "plaintext" => Ok(Self::Plaintext),
            "ssl" => Ok(Self::Ssl),
            "sasl_plaintext" => Ok(Self::SaslPlaintext),
            "sasl_ssl" => Ok(Self::SaslSsl),
            _ => Err(()),
        }
    }
}

/// `sasl.mechanism`. GSSAPI (Kerberos) is not built in: the design asks for
/// SCRAM, and Kerberos would drag in libsasl2 at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaslMechanism {
    ScramSha256,
    ScramSha512,
    Plain,
}

impl SaslMechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
            Self::Plain => "PLAIN",
        }
    }
}

impl FromStr for SaslMechanism {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s.to_ascii_uppercase().as_str() {
            "SCRAM-SHA-256" => Ok(Self::ScramSha256),
            "SCRAM-SHA-512" => Ok(Self::ScramSha512),
            "PLAIN" => Ok(Self::Plain),
            _ => Err(()),
        }
    }
}

/// SASL credentials. The password is kept out of `Debug`, so settings can be
/// logged whole.
#[derive(Clone, PartialEq, Eq)]
pub struct SaslCredentials {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: String,
}

impl fmt::Debug for SaslCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaslCredentials")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Validated Kafka settings of one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaSettings {
    /// Bootstrap brokers as given (`host:port,host:port`), also used in error
    /// messages so they say which cluster did not answer.
    pub brokers: String,
    pub security_protocol: SecurityProtocol,
    /// Present exactly when the protocol is `sasl_*`.
    pub sasl: Option<SaslCredentials>,
    pub ssl_ca_location: Option<String>,
    pub client_id: Option<String>,
    pub topic_partitions: i32,
    pub replication_factor: i32,
    pub message_max_bytes: usize,
    /// Upper bound on one event's wait for the broker (`message.timeout.ms`).
    pub delivery_timeout: Duration,
    /// Longest wait of a consumer's fetch at the broker (`fetch.wait.max.ms`).
    pub fetch_wait: Duration,
    /// The same for the consumer of other replicas' progress (a live view).
    pub progress_fetch_wait: Duration,
    /// How long `publish` gathers events into a batch (`linger.ms`).
    pub linger: Duration,
}

/// Checks one `host:port` of the broker list; librdkafka would otherwise
/// only complain in its logs, long after start-up.
fn valid_broker(entry: &str) -> bool {
    let Some((host, port)) = entry.rsplit_once(':') else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    !host.is_empty()
        && !host.contains('/')
        && !host.contains(char::is_whitespace)
        && port.parse::<u16>().is_ok_and(|p| p > 0)
}

impl KafkaSettings {
    /// `Ok(None)` when `KAFKA_BROKERS` is unset or blank: the process runs
    /// without Kafka. Otherwise every variable is checked and the first bad
    /// or inconsistent one is the error.
    pub fn from_env(vars: &HashMap<String, String>) -> Result<Option<Self>, ConfigError> {
        let env = Env::new(vars);
        let Some(raw_brokers) = env.get(BROKERS.name) else {
            return Ok(None);
        };
        let entries = imageflow_config::split_list(raw_brokers);
        if let Some(bad) = entries.iter().find(|e| !valid_broker(e)) {
            return Err(ConfigError::invalid(
                BROKERS.name,
                format!("{bad:?} is not host:port (expected e.g. kafka-0:9092,kafka-1:9092)"),
            ));
        }
        let brokers = entries.join(",");

        let security_protocol: SecurityProtocol = env.value(
            &SECURITY_PROTOCOL,
            "one of plaintext, ssl, sasl_plaintext, sasl_ssl",
        )?;
        let mechanism_expected = "one of SCRAM-SHA-256, SCRAM-SHA-512, PLAIN";
        let mechanism: Option<SaslMechanism> =
            env.parse(SASL_MECHANISM.name, mechanism_expected, |_| true)?;
        let username = env.get("KAFKA_SASL_USERNAME");
        // Not trimmed: a password may legitimately end in a space.
        let password = env.get_untrimmed("KAFKA_SASL_PASSWORD");
        let sasl = if security_protocol.uses_sasl() {
            let username = username.ok_or_else(|| {
                ConfigError::invalid(
                    "KAFKA_SASL_USERNAME",
                    format!(
                        "required when KAFKA_SECURITY_PROTOCOL is {}",
                        security_protocol.as_str()
                    ),
                )
            })?;
            let password = password.ok_or_else(|| {
                ConfigError::invalid(
                    "KAFKA_SASL_PASSWORD",
                    format!(
                        "required when KAFKA_SECURITY_PROTOCOL is {}",
                        security_protocol.as_str()
                    ),
                )
            })?;
            let mechanism = match mechanism {
                Some(mechanism) => mechanism,
                None => SASL_MECHANISM.parsed_default(mechanism_expected)?,
            };
            Some(SaslCredentials {
                mechanism,
                username: username.to_string(),
                password: password.to_string(),
            })
        } else {
            // Credentials without a SASL protocol would be silently unused:
            // most likely the protocol was forgotten, so say so.
            if let Some(variable) = [
                ("KAFKA_SASL_USERNAME", username.is_some()),
                ("KAFKA_SASL_PASSWORD", password.is_some()),
                ("KAFKA_SASL_MECHANISM", mechanism.is_some()),
            ]
            .iter()
            .find_map(|(name, set)| set.then_some(*name))
            {
                return Err(ConfigError::invalid(
                    variable,
                    format!(
                        "set, but KAFKA_SECURITY_PROTOCOL is {} (use sasl_plaintext or sasl_ssl)",
                        security_protocol.as_str()
                    ),
                ));
            }
            None
        };

        let ssl_ca_location = env.get("KAFKA_SSL_CA_LOCATION").map(str::to_string);
        if ssl_ca_location.is_some() && !security_protocol.uses_tls() {
            return Err(ConfigError::invalid(
                "KAFKA_SSL_CA_LOCATION",
                format!(
                    "set, but KAFKA_SECURITY_PROTOCOL is {} (use ssl or sasl_ssl)",
                    security_protocol.as_str()
                ),
            ));
        }

        let delivery_timeout =
            env.duration::<u64>(&DELIVERY_TIMEOUT_MS, Unit::Millis, 1..=3_600_000)?;
        // librdkafka's own bounds for linger.ms; it also refuses a linger
        // that is not shorter than the delivery timeout.
        let linger = env.duration::<u64>(&LINGER_MS, Unit::Millis, 0..=900_000)?;
        if linger >= delivery_timeout {
            return Err(ConfigError::invalid(
                LINGER_MS.name,
                format!(
                    "{} ms is not shorter than KAFKA_DELIVERY_TIMEOUT_MS ({} ms)",
                    linger.as_millis(),
                    delivery_timeout.as_millis()
                ),
            ));
        }

        Ok(Some(Self {
            brokers,
            security_protocol,
            sasl,
            ssl_ca_location,
            client_id: env.get("KAFKA_CLIENT_ID").map(str::to_string),
            topic_partitions: env.number(&TOPIC_PARTITIONS, 1..=10_000)?,
            replication_factor: env.number(&REPLICATION_FACTOR, 1..=32)?,
            // librdkafka's own bounds for message.max.bytes.
            message_max_bytes: env.number(&MESSAGE_MAX_BYTES, 1000..=1_000_000_000)?,
            delivery_timeout,
            // 0 would make tansu answer at once, empty: a busy loop.
            fetch_wait: env.duration::<u64>(&FETCH_WAIT_MAX_MS, Unit::Millis, 1..=300_000)?,
            progress_fetch_wait: env.duration::<u64>(
                &PROGRESS_FETCH_WAIT_MS,
                Unit::Millis,
                1..=300_000,
            )?,
            linger,
        }))
    }

    /// Settings for a plaintext broker list with every default (tests, tools).
    pub fn plaintext(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            security_protocol: SecurityProtocol::Plaintext,
            sasl: None,
            ssl_ca_location: None,
            client_id: None,
            topic_partitions: 6,
            replication_factor: 1,
            message_max_bytes: 1 << 20,
            delivery_timeout: Duration::from_secs(10),
            fetch_wait: Duration::from_millis(2),
            progress_fetch_wait: Duration::from_millis(100),
            linger: Duration::from_millis(10),
        }
    }

    /// The librdkafka properties every client (producer, consumer, admin)
    /// shares: brokers, client id and security. The password is in here, so
    /// this list is for building clients, never for logging.
    pub fn client_properties(&self, default_client_id: &str) -> Vec<(&'static str, String)> {
        let mut props = vec![
            ("bootstrap.servers", self.brokers.clone()),
            (
                "client.id",
                self.client_id
                    .clone()
                    .unwrap_or_else(|| default_client_id.to_string()),
            ),
            ("security.protocol", self.security_protocol.as_str().into()),
        ];
        if let Some(sasl) = &self.sasl {
            props.push(("sasl.mechanism", sasl.mechanism.as_str().into()));
            props.push(("sasl.username", sasl.username.clone()));
            props.push(("sasl.password", sasl.password.clone()));
        }
        if let Some(ca) = &self.ssl_ca_location {
            props.push(("ssl.ca.location", ca.clone()));
        }
        props
    }

    /// A librdkafka configuration holding [`Self::client_properties`].
    pub(crate) fn client_config(&self, default_client_id: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        for (key, value) in self.client_properties(default_client_id) {
            config.set(key, value);
        }
        config
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    use imageflow_config::vars as env;

    fn prop<'a>(props: &'a [(&'static str, String)], key: &str) -> Option<&'a str> {
        props
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn no_brokers_means_no_kafka() {
        assert_eq!(KafkaSettings::from_env(&env(&[])).unwrap(), None);
        assert_eq!(
            KafkaSettings::from_env(&env(&[("KAFKA_BROKERS", "  ")])).unwrap(),
            None
        );
        // The other variables are not even looked at without brokers.
        assert_eq!(
            KafkaSettings::from_env(&env(&[("KAFKA_TOPIC_PARTITIONS", "zero")])).unwrap(),
            None
        );
    }

    #[test]
    fn defaults_apply_when_only_brokers_are_set() {
        let s = KafkaSettings::from_env(&env(&[("KAFKA_BROKERS", " kafka-0:9092, kafka-1:9092 ")]))
            .unwrap()
            .unwrap();
        assert_eq!(s.brokers, "kafka-0:9092,kafka-1:9092");
        assert_eq!(s.security_protocol, SecurityProtocol::Plaintext);
        assert_eq!(s.sasl, None);
        assert_eq!(s.topic_partitions, 6);
        assert_eq!(s.replication_factor, 1);
        assert_eq!(s.message_max_bytes, 1 << 20);
        assert_eq!(s.delivery_timeout, Duration::from_secs(10));
        assert_eq!(s.fetch_wait, Duration::from_millis(2));
        assert_eq!(s.progress_fetch_wait, Duration::from_millis(100));
        assert_eq!(s.linger, Duration::from_millis(10));
        assert_eq!(s, KafkaSettings::plaintext("kafka-0:9092,kafka-1:9092"));

        let props = s.client_properties("imageflow-backend-api");
        assert_eq!(
            prop(&props, "bootstrap.servers"),
            Some("kafka-0:9092,kafka-1:9092")
        );
        assert_eq!(prop(&props, "client.id"), Some("imageflow-backend-api"));
        assert_eq!(prop(&props, "security.protocol"), Some("plaintext"));
        assert_eq!(prop(&props, "sasl.mechanism"), None);
    }

    #[test]
    fn sasl_scram_over_tls_maps_to_librdkafka_properties() {
        let s = KafkaSettings::from_env(&env(&[
            ("KAFKA_BROKERS", "kafka.example:9093"),
            ("KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
            ("KAFKA_SASL_MECHANISM", "scram-sha-256"),
            ("KAFKA_SASL_USERNAME", "imageflow"),
            ("KAFKA_SASL_PASSWORD", "s3cret pass "),
            ("KAFKA_SSL_CA_LOCATION", "/etc/kafka/ca.crt"),
            ("KAFKA_CLIENT_ID", "backend-7"),
            ("KAFKA_TOPIC_PARTITIONS", "12"),
            ("KAFKA_REPLICATION_FACTOR", "3"),
            ("KAFKA_MESSAGE_MAX_BYTES", "2097152"),
            ("KAFKA_DELIVERY_TIMEOUT_MS", "2500"),
            ("KAFKA_FETCH_WAIT_MAX_MS", "25"),
            ("KAFKA_PROGRESS_FETCH_WAIT_MS", "250"),
            ("KAFKA_LINGER_MS", "5"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(s.topic_partitions, 12);
        assert_eq!(s.replication_factor, 3);
        assert_eq!(s.message_max_bytes, 2 << 20);
        assert_eq!(s.delivery_timeout, Duration::from_millis(2500));
        assert_eq!(s.fetch_wait, Duration::from_millis(25));
        assert_eq!(s.progress_fetch_wait, Duration::from_millis(250));
        assert_eq!(s.linger, Duration::from_millis(5));
        let props = s.client_properties("ignored");
        assert_eq!(prop(&props, "security.protocol"), Some("sasl_ssl"));
        assert_eq!(prop(&props, "sasl.mechanism"), Some("SCRAM-SHA-256"));
        assert_eq!(prop(&props, "sasl.username"), Some("imageflow"));
        assert_eq!(prop(&props, "sasl.password"), Some("s3cret pass "));
        assert_eq!(prop(&props, "ssl.ca.location"), Some("/etc/kafka/ca.crt"));
        assert_eq!(prop(&props, "client.id"), Some("backend-7"));
    }

    #[test]
    fn sasl_defaults_to_scram_sha_512_and_tls_alone_needs_no_credentials() {
        let s = KafkaSettings::from_env(&env(&[
            ("KAFKA_BROKERS", "k:9092"),
            ("KAFKA_SECURITY_PROTOCOL", "sasl_plaintext"),
            ("KAFKA_SASL_USERNAME", "u"),
            ("KAFKA_SASL_PASSWORD", "p"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(s.sasl.unwrap().mechanism, SaslMechanism::ScramSha512);

        let tls = KafkaSettings::from_env(&env(&[
            ("KAFKA_BROKERS", "k:9093"),
            ("KAFKA_SECURITY_PROTOCOL", "ssl"),
        ]))
        .unwrap()
        .unwrap();
        let props = tls.client_properties("x");
        assert_eq!(prop(&props, "security.protocol"), Some("ssl"));
        assert_eq!(prop(&props, "ssl.ca.location"), None, "system trust store");
    }

    #[test]
    fn the_password_never_shows_in_debug_output() {
        let s = KafkaSettings::from_env(&env(&[
            ("KAFKA_BROKERS", "k:9092"),
            ("KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
            ("KAFKA_SASL_USERNAME", "imageflow"),
            ("KAFKA_SASL_PASSWORD", "hunter2-very-secret"),
        ]))
        .unwrap()
        .unwrap();
        let debug = format!("{s:?} {s:#?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("imageflow"), "the username is fine to show");
        assert!(debug.contains("<redacted>"));
    }

    #[test]
    fn bad_or_inconsistent_values_name_their_variable() {
        let base = [("KAFKA_BROKERS", "k:9092")];
        for (extra, variable) in [
            (vec![("KAFKA_BROKERS", "k")], "KAFKA_BROKERS"),
            (vec![("KAFKA_BROKERS", "k:0")], "KAFKA_BROKERS"),
            (
                vec![("KAFKA_BROKERS", "k:9092,http://x:1")],
                "KAFKA_BROKERS",
            ),
            (
                vec![("KAFKA_SECURITY_PROTOCOL", "tls")],
                "KAFKA_SECURITY_PROTOCOL",
            ),
            (
                vec![("KAFKA_SECURITY_PROTOCOL", "sasl_ssl")],
                "KAFKA_SASL_USERNAME",
            ),
            (
                vec![
                    ("KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
                    ("KAFKA_SASL_USERNAME", "u"),
                ],
                "KAFKA_SASL_PASSWORD",
            ),
            (
                vec![
                    ("KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
                    ("KAFKA_SASL_MECHANISM", "GSSAPI"),
                    ("KAFKA_SASL_USERNAME", "u"),
                    ("KAFKA_SASL_PASSWORD", "p"),
                ],
                "KAFKA_SASL_MECHANISM",
            ),
            (vec![("KAFKA_SASL_USERNAME", "u")], "KAFKA_SASL_USERNAME"),
            (
                vec![("KAFKA_SSL_CA_LOCATION", "/ca.pem")],
                "KAFKA_SSL_CA_LOCATION",
            ),
            (
                vec![("KAFKA_TOPIC_PARTITIONS", "0")],
                "KAFKA_TOPIC_PARTITIONS",
            ),
            (
                vec![("KAFKA_REPLICATION_FACTOR", "three")],
                "KAFKA_REPLICATION_FACTOR",
            ),
            (
                vec![("KAFKA_MESSAGE_MAX_BYTES", "10")],
                "KAFKA_MESSAGE_MAX_BYTES",
            ),
            (
                vec![("KAFKA_DELIVERY_TIMEOUT_MS", "0")],
                "KAFKA_DELIVERY_TIMEOUT_MS",
            ),
            (
                vec![("KAFKA_FETCH_WAIT_MAX_MS", "0")],
                "KAFKA_FETCH_WAIT_MAX_MS",
            ),
            (
                vec![("KAFKA_PROGRESS_FETCH_WAIT_MS", "0")],
                "KAFKA_PROGRESS_FETCH_WAIT_MS",
            ),
            (vec![("KAFKA_LINGER_MS", "-1")], "KAFKA_LINGER_MS"),
        ] {
            let mut map = env(&base);
            map.extend(env(&extra));
            let err = KafkaSettings::from_env(&map).unwrap_err();
            assert_eq!(err.variable, variable, "{extra:?}: {err}");
            assert!(err.to_string().starts_with(variable), "{err}");
        }
    }

    #[test]
    fn every_variable_read_is_documented() {
        let documented: String = SETTINGS
            .iter()
            .map(|s| s.name)
            .collect::<Vec<_>>()
            .join(" ");
        for name in [
            "KAFKA_BROKERS",
            "KAFKA_SECURITY_PROTOCOL",
            "KAFKA_SASL_MECHANISM",
            "KAFKA_SASL_USERNAME",
            "KAFKA_SASL_PASSWORD",
            "KAFKA_SSL_CA_LOCATION",
            "KAFKA_CLIENT_ID",
            "KAFKA_TOPIC_PARTITIONS",
            "KAFKA_REPLICATION_FACTOR",
            "KAFKA_MESSAGE_MAX_BYTES",
            "KAFKA_DELIVERY_TIMEOUT_MS",
            "KAFKA_FETCH_WAIT_MAX_MS",
            "KAFKA_PROGRESS_FETCH_WAIT_MS",
            "KAFKA_LINGER_MS",
        ] {
            assert!(documented.contains(name), "{name} missing from SETTINGS");
        }
    }
}

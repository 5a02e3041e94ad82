//! Storage configuration read from an environment map. The variables, their
//! defaults and what they accept are declared once in [`StorageConfig::SETTINGS`],
//! which the binaries print in `--help`. An empty variable counts as unset (Helm
//! templates often render missing values as `""`).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use imageflow_config::{ConfigError, Env, Setting};

use crate::names::BucketName;

/// Bucket used when `STORAGE_URL` names none (the filesystem backend).
pub const DEFAULT_BUCKET: &str = "imageflow-files";
/// Root of the filesystem backend when `STORAGE_URL` is unset.
pub const DEFAULT_FS_ROOT: &str = "./data";
/// Region used when `AWS_REGION` is unset.
pub const DEFAULT_REGION: &str = "us-east-1";
/// Default `max_object_bytes`: 64 MiB.
pub const DEFAULT_MAX_OBJECT_BYTES: u64 = 64 * 1024 * 1024;

const STORAGE_URL: Setting = Setting::new(
    "STORAGE_URL",
    "file://./data",
    "file:///abs/dir, file://./rel/dir (relative to the working directory; bucket imageflow-files) or s3://bucket",
);
const REGION: Setting = Setting::new("AWS_REGION", DEFAULT_REGION, "S3 signing region");
const FORCE_PATH_STYLE: Setting = Setting::new(
    "S3_FORCE_PATH_STYLE",
    "true",
    "path-style addressing (endpoint/bucket/key), which MinIO needs",
);
const MAX_OBJECT_BYTES: Setting = Setting::new(
    "STORAGE_MAX_OBJECT_BYTES",
    "64MiB",
    "largest object read from or written to storage: bytes, or a number with KiB, MiB or GiB",
);

/// Which backend to use and how to reach it.
///
/// `Debug` is written by hand so the secret access key never reaches a log.
#[derive(Clone)]
pub enum StorageConfig {
    /// Objects are files under `root/<bucket>/<key>`.
    Fs {
        /// Root directory (absolute after [`StorageConfig::from_env`]).
        root: PathBuf,
        /// Bucket used when a caller does not name one.
        default_bucket: BucketName,
    },
    /// S3 or an S3-compatible server (MinIO).
    S3 {
        /// Bucket used when a caller does not name one.
        default_bucket: BucketName,
        /// Endpoint URL (`http://minio:9000`); `None` for AWS itself.
        endpoint: Option<String>,
        /// Signing region.
        region: String,
        /// Static access key id; with `secret_access_key`, replaces the default AWS chain.
        access_key_id: Option<String>,
        /// Static secret access key. Never printed.
        secret_access_key: Option<String>,
        /// Path-style addressing (`endpoint/bucket/key`), which MinIO needs.
        force_path_style: bool,
    },
}

impl fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fs {
                root,
                default_bucket,
            } => f
                .debug_struct("Fs")
                .field("root", root)
                .field("default_bucket", default_bucket)
                .finish(),
            Self::S3 {
                default_bucket,
                endpoint,
                region,
                access_key_id,
                secret_access_key,
                force_path_style,
            } => f
                .debug_struct("S3")
                .field("default_bucket", default_bucket)
                .field("endpoint", endpoint)
                .field("region", region)
                .field("access_key_id", access_key_id)
                .field(
                    "secret_access_key",
                    &secret_access_key.as_ref().map(|_| "<redacted>"),
                )
                .field("force_path_style", force_path_style)
                .finish(),
        }
    }
}

impl StorageConfig {
    /// Every variable the storage crate reads, for the binaries' `--help`.
    pub const SETTINGS: &'static [Setting] = &[
        STORAGE_URL,
        Setting::described(
            "S3_ENDPOINT (or AWS_ENDPOINT_URL)",
            "AWS",
            "http(s)://host:port of MinIO or another S3-compatible server",
        ),
        Setting::described(
            "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY",
            "the default AWS credential chain",
            "static S3 credentials, both or neither",
        ),
        REGION,
        FORCE_PATH_STYLE,
        MAX_OBJECT_BYTES,
    ];

    /// Reads the configuration from an environment map (see the module docs for the
    /// variables). Also validates `STORAGE_MAX_OBJECT_BYTES`, which lives in
    /// [`StoreOptions::from_env`], so a bad value stops start-up whichever is read first.
    pub fn from_env(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        StoreOptions::from_env(vars)?;
        let env = Env::new(vars);
        let url = env.text(&STORAGE_URL).unwrap_or_default();
        if let Some(path) = url.strip_prefix("file://") {
            return Ok(Self::Fs {
                root: parse_fs_root(path)?,
                default_bucket: default_bucket(),
            });
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            return Self::s3_from_env(env, rest);
        }
        Err(ConfigError::invalid(
            "STORAGE_URL",
            format!(
                "unsupported value {url:?}; accepted: file:///absolute/dir, file://./relative/dir \
                 or s3://bucket"
            ),
        ))
    }

    fn s3_from_env(env: Env<'_>, rest: &str) -> Result<Self, ConfigError> {
        let bucket = rest.strip_suffix('/').unwrap_or(rest);
        if bucket.contains('/') {
            return Err(ConfigError::invalid(
                "STORAGE_URL",
                format!("s3://{rest} has a path; accepted: s3://bucket (no key prefix)"),
            ));
        }
        let default_bucket = BucketName::parse(bucket).map_err(|e| {
            ConfigError::invalid(
                "STORAGE_URL",
                format!("s3://BUCKET needs a valid bucket: {e}"),
            )
        })?;

        let endpoint = match (env.get("S3_ENDPOINT"), env.get("AWS_ENDPOINT_URL")) {
            (Some(e), _) => Some(parse_endpoint("S3_ENDPOINT", e)?),
            (None, Some(e)) => Some(parse_endpoint("AWS_ENDPOINT_URL", e)?),
            (None, None) => None,
        };
        let access_key_id = env.get("AWS_ACCESS_KEY_ID").map(str::to_owned);
        let secret_access_key = env.get("AWS_SECRET_ACCESS_KEY").map(str::to_owned);
        match (&access_key_id, &secret_access_key) {
            (Some(_), None) => {
                return Err(ConfigError::invalid(
                    "AWS_SECRET_ACCESS_KEY",
                    "unset while AWS_ACCESS_KEY_ID is set; set both or neither \
                     (neither = default AWS credential chain)",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::invalid(
                    "AWS_ACCESS_KEY_ID",
                    "unset while AWS_SECRET_ACCESS_KEY is set; set both or neither \
                     (neither = default AWS credential chain)",
                ));
            }
            _ => {}
        }
        let region = env.text(&REGION).unwrap_or_default();
        if region
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/')
        {
            return Err(ConfigError::invalid(
                REGION.name,
                format!("{region:?} is not a region name; accepted: e.g. us-east-1"),
            ));
        }
        let force_path_style = env.flag(
            FORCE_PATH_STYLE.name,
            FORCE_PATH_STYLE.parsed_default("a boolean")?,
        )?;
        Ok(Self::S3 {
            default_bucket,
            endpoint,
            region: region.to_owned(),
            access_key_id,
            secret_access_key,
            force_path_style,
        })
    }

    /// The bucket used when a caller names none.
    pub fn default_bucket(&self) -> &BucketName {
        match self {
            Self::Fs { default_bucket, .. } | Self::S3 { default_bucket, .. } => default_bucket,
        }
    }
}

/// Limits and retry policy of a [`crate::Store`].
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Largest object `put` accepts and `get` reads (default 64 MiB).
    pub max_object_bytes: u64,
    /// Attempts per operation, the first included, for transient failures (default 4;
    /// 0 counts as 1).
    pub max_attempts: u32,
    /// First backoff step; retry `n` waits a random time between half and all of
    /// `min(base_backoff * 2^(n-1), 5 s)` (equal jitter). Default 50 ms.
    pub base_backoff: Duration,
    /// Time limit of one attempt of one operation, body transfer included (default 10 s).
    pub op_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_object_bytes: DEFAULT_MAX_OBJECT_BYTES,
            max_attempts: 4,
            base_backoff: Duration::from_millis(50),
            op_timeout: Duration::from_secs(10),
        }
    }
}

impl StoreOptions {
    /// Defaults, with `max_object_bytes` from `STORAGE_MAX_OBJECT_BYTES` when set
    /// (a byte count, or a number with a `KiB`, `MiB` or `GiB` suffix).
    pub fn from_env(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let v = Env::new(vars).text(&MAX_OBJECT_BYTES).unwrap_or_default();
        let max_object_bytes = parse_size(v).ok_or_else(|| {
            ConfigError::invalid(
                MAX_OBJECT_BYTES.name,
                format!(
                    "{v:?} is not a size; accepted: a positive byte count such as 67108864, \
                     or a number with a KiB, MiB or GiB suffix such as 64MiB"
                ),
            )
        })?;
        Ok(Self {
            max_object_bytes,
            ..Self::default()
        })
    }
}

/// Reads both halves of the storage configuration from one environment map.
pub fn from_env(
    env: &HashMap<String, String>,
) -> Result<(StorageConfig, StoreOptions), ConfigError> {
    Ok((StorageConfig::from_env(env)?, StoreOptions::from_env(env)?))
}

fn default_bucket() -> BucketName {
    // A compile-time constant that satisfies the bucket rules (checked by a unit test).
    BucketName::parse(DEFAULT_BUCKET).unwrap_or_else(|_| unreachable!("valid constant"))
}

fn parse_fs_root(path: &str) -> Result<PathBuf, ConfigError> {
    let accepted = "accepted: file:///absolute/dir or file://./relative/dir";
    if path.starts_with('/') {
        return Ok(PathBuf::from(path));
    }
    if path == "." || path == ".." || path.starts_with("./") || path.starts_with("../") {
        let cwd = std::env::current_dir().map_err(|e| {
            ConfigError::invalid(
                "STORAGE_URL",
                format!("cannot resolve relative path {path:?}: working directory unknown: {e}"),
            )
        })?;
        return Ok(resolve_relative(&cwd, path));
    }
    Err(ConfigError::invalid(
        "STORAGE_URL",
        format!("file://{path} is neither absolute nor ./relative; {accepted}"),
    ))
}

/// `base` joined with `rel`, dropping `.` components (`..` is kept: the lexical parent of
/// a symlinked directory is not necessarily its real parent).
fn resolve_relative(base: &Path, rel: &str) -> PathBuf {
    let mut out = base.to_path_buf();
    for part in rel.split('/') {
        if !(part.is_empty() || part == ".") {
            out.push(part);
        }
    }
    out
}

fn parse_endpoint(variable: &'static str, value: &str) -> Result<String, ConfigError> {
    let rest = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') => {
            Ok(value.trim_end_matches('/').to_owned())
        }
        _ => Err(ConfigError::invalid(
            variable,
            format!("{value:?} is not an endpoint URL; accepted: http://host:port or https://host"),
        )),
    }
}

fn parse_size(v: &str) -> Option<u64> {
    let (digits, multiplier) = [("KiB", 1u64 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30)]
        .iter()
        .find_map(|(suffix, m)| v.strip_suffix(suffix).map(|d| (d.trim_end(), *m)))
        .unwrap_or((v, 1));
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .filter(|n| *n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    use imageflow_config::vars as env;

    fn err_var(pairs: &[(&str, &str)]) -> (String, String) {
        match StorageConfig::from_env(&env(pairs)) {
            Err(e) => (e.variable.clone(), e.to_string()),
            Ok(c) => panic!("{pairs:?}: expected an error, got {c:?}"),
        }
    }

    #[test]
    fn defaults_to_fs_under_data() {
        let cfg = StorageConfig::from_env(&env(&[])).unwrap();
        let cwd = std::env::current_dir().unwrap();
        match cfg {
            StorageConfig::Fs {
                root,
                default_bucket,
            } => {
                assert_eq!(root, cwd.join("data"));
                assert_eq!(default_bucket.as_str(), DEFAULT_BUCKET);
            }
            other => panic!("{other:?}"),
        }
        let options = StoreOptions::from_env(&env(&[])).unwrap();
        assert_eq!(options.max_object_bytes, 64 * 1024 * 1024);
        assert_eq!(options.max_attempts, 4);
        assert_eq!(options.base_backoff, Duration::from_millis(50));
        assert_eq!(options.op_timeout, Duration::from_secs(10));
    }

    #[test]
    fn empty_values_count_as_unset() {
        let cfg = StorageConfig::from_env(&env(&[
            ("STORAGE_URL", ""),
            ("STORAGE_MAX_OBJECT_BYTES", " "),
        ]))
        .unwrap();
        assert!(matches!(cfg, StorageConfig::Fs { .. }));
    }

    #[test]
    fn fs_absolute_and_relative_paths() {
        let cfg =
            StorageConfig::from_env(&env(&[("STORAGE_URL", "file:///var/lib/imageflow")])).unwrap();
        let StorageConfig::Fs { root, .. } = cfg else {
            panic!("expected fs")
        };
        assert_eq!(root, PathBuf::from("/var/lib/imageflow"));

        let cwd = std::env::current_dir().unwrap();
        for (url, expected) in [
            ("file://./rel", cwd.join("rel")),
            ("file://./rel/sub/", cwd.join("rel").join("sub")),
            ("file://./a/./b", cwd.join("a").join("b")),
            ("file://.", cwd.clone()),
            ("file://../up", cwd.join("..").join("up")),
        ] {
            let StorageConfig::Fs { root, .. } =
                StorageConfig::from_env(&env(&[("STORAGE_URL", url)])).unwrap()
            else {
                panic!("expected fs for {url}")
            };
            assert_eq!(root, expected, "{url}");
            assert!(root.is_absolute());
        }
    }

    #[test]
    fn s3_with_endpoint_and_credentials() {
        let cfg = StorageConfig::from_env(&env(&[
            ("STORAGE_URL", "s3://imageflow-files"),
            ("S3_ENDPOINT", "http://minio.imageflow.svc:9000/"),
            ("AWS_ACCESS_KEY_ID", "test-access-key"),
            ("AWS_SECRET_ACCESS_KEY", "test-secret-do-not-print"),
            ("AWS_REGION", "eu-west-1"),
        ]))
        .unwrap();
        let debug = format!("{cfg:?}");
        assert!(!debug.contains("test-secret-do-not-print"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
        let StorageConfig::S3 {
            default_bucket,
            endpoint,
            region,
            access_key_id,
            secret_access_key,
            force_path_style,
        } = cfg
        else {
            panic!("expected s3")
        };
        assert_eq!(default_bucket.as_str(), "imageflow-files");
        assert_eq!(endpoint.as_deref(), Some("http://minio.imageflow.svc:9000"));
        assert_eq!(region, "eu-west-1");
        assert_eq!(access_key_id.as_deref(), Some("test-access-key"));
        assert_eq!(
            secret_access_key.as_deref(),
            Some("test-secret-do-not-print")
        );
        assert!(force_path_style);
    }

    #[test]
    fn s3_defaults_and_alternatives() {
        let cfg = StorageConfig::from_env(&env(&[
            ("STORAGE_URL", "s3://bucket-one/"),
            ("AWS_ENDPOINT_URL", "https://s3.example.com"),
            ("S3_FORCE_PATH_STYLE", "false"),
        ]))
        .unwrap();
        let StorageConfig::S3 {
            default_bucket,
            endpoint,
            region,
            access_key_id,
            secret_access_key,
            force_path_style,
        } = cfg
        else {
            panic!("expected s3")
        };
        assert_eq!(default_bucket.as_str(), "bucket-one");
        assert_eq!(endpoint.as_deref(), Some("https://s3.example.com"));
        assert_eq!(region, DEFAULT_REGION);
        assert!(access_key_id.is_none() && secret_access_key.is_none());
        assert!(!force_path_style);

        // S3_ENDPOINT wins over AWS_ENDPOINT_URL.
        let StorageConfig::S3 { endpoint, .. } = StorageConfig::from_env(&env(&[
            ("STORAGE_URL", "s3://bucket-one"),
            ("S3_ENDPOINT", "http://a:9000"),
            ("AWS_ENDPOINT_URL", "http://b:9000"),
        ]))
        .unwrap() else {
            panic!("expected s3")
        };
        assert_eq!(endpoint.as_deref(), Some("http://a:9000"));
    }

    #[test]
    fn bad_values_name_their_variable() {
        // (environment, variable named in the error, hint the message must contain)
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: &[Case] = &[
            (
                &[("STORAGE_URL", "ftp://host/x")],
                "STORAGE_URL",
                "accepted",
            ),
            (
                &[("STORAGE_URL", "/plain/path")],
                "STORAGE_URL",
                "s3://bucket",
            ),
            (
                &[("STORAGE_URL", "file://relative")],
                "STORAGE_URL",
                "file:///",
            ),
            (&[("STORAGE_URL", "s3://")], "STORAGE_URL", "bucket"),
            (
                &[("STORAGE_URL", "s3://Bad_Bucket")],
                "STORAGE_URL",
                "bucket",
            ),
            (
                &[("STORAGE_URL", "s3://b1b/prefix")],
                "STORAGE_URL",
                "no key prefix",
            ),
            (
                &[("STORAGE_URL", "s3://b1b"), ("S3_ENDPOINT", "minio:9000")],
                "S3_ENDPOINT",
                "http://",
            ),
            (
                &[("STORAGE_URL", "s3://b1b"), ("AWS_ENDPOINT_URL", "http://")],
                "AWS_ENDPOINT_URL",
                "http://",
            ),
            (
                &[
                    ("STORAGE_URL", "s3://b1b"),
                    ("S3_FORCE_PATH_STYLE", "maybe"),
                ],
                "S3_FORCE_PATH_STYLE",
                "true/false",
            ),
            (
                &[("STORAGE_URL", "s3://b1b"), ("AWS_ACCESS_KEY_ID", "x")],
                "AWS_SECRET_ACCESS_KEY",
                "both or neither",
            ),
            (
                &[("STORAGE_URL", "s3://b1b"), ("AWS_SECRET_ACCESS_KEY", "x")],
                "AWS_ACCESS_KEY_ID",
                "both or neither",
            ),
            (
                &[("STORAGE_URL", "s3://b1b"), ("AWS_REGION", "us east")],
                "AWS_REGION",
                "region",
            ),
            (
                &[("STORAGE_MAX_OBJECT_BYTES", "lots")],
                "STORAGE_MAX_OBJECT_BYTES",
                "64MiB",
            ),
            (
                &[("STORAGE_MAX_OBJECT_BYTES", "0")],
                "STORAGE_MAX_OBJECT_BYTES",
                "positive",
            ),
            (
                &[("STORAGE_MAX_OBJECT_BYTES", "-5")],
                "STORAGE_MAX_OBJECT_BYTES",
                "accepted",
            ),
            (
                &[("STORAGE_MAX_OBJECT_BYTES", "99999999999999999999")],
                "STORAGE_MAX_OBJECT_BYTES",
                "accepted",
            ),
            (
                &[("STORAGE_MAX_OBJECT_BYTES", "64MB")],
                "STORAGE_MAX_OBJECT_BYTES",
                "MiB",
            ),
        ];
        for (pairs, variable, hint) in cases {
            let (got, message) = err_var(pairs);
            assert_eq!(got, *variable, "{pairs:?}: {message}");
            assert!(
                message.starts_with(&format!("{variable}: ")),
                "{pairs:?}: {message}"
            );
            assert!(
                message.contains(hint),
                "{pairs:?}: {message:?} lacks {hint:?}"
            );
        }
    }

    #[test]
    fn max_object_bytes_sizes() {
        for (value, expected) in [
            ("1", 1u64),
            ("67108864", 64 << 20),
            ("512KiB", 512 << 10),
            ("64MiB", 64 << 20),
            ("64 MiB", 64 << 20),
            ("2GiB", 2 << 30),
        ] {
            let options =
                StoreOptions::from_env(&env(&[("STORAGE_MAX_OBJECT_BYTES", value)])).unwrap();
            assert_eq!(options.max_object_bytes, expected, "{value}");
        }
        let (config, options) = from_env(&env(&[("STORAGE_MAX_OBJECT_BYTES", "1MiB")])).unwrap();
        assert!(matches!(config, StorageConfig::Fs { .. }));
        assert_eq!(options.max_object_bytes, 1 << 20);
    }

    #[test]
    fn declared_defaults_match_the_constants() {
        assert_eq!(
            parse_size(MAX_OBJECT_BYTES.default_value().unwrap()),
            Some(DEFAULT_MAX_OBJECT_BYTES)
        );
        assert_eq!(
            STORAGE_URL.default_value(),
            Some(format!("file://{DEFAULT_FS_ROOT}").as_str())
        );
        assert_eq!(REGION.default_value(), Some(DEFAULT_REGION));
    }

    #[test]
    fn default_bucket_constant_is_valid() {
        assert!(BucketName::parse(DEFAULT_BUCKET).is_ok());
        assert_eq!(default_bucket().as_str(), DEFAULT_BUCKET);
    }
}

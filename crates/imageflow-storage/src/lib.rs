//! Object storage for ImageFlowCanvas: S3 / MinIO through `aws-sdk-s3`, and a local
//! filesystem backend as the embedded default.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use imageflow_storage::{ObjectKey, Store, StorageConfig, StoreOptions};
//! let env: std::collections::HashMap<String, String> = std::env::vars().collect();
//! let (config, options) = imageflow_storage::from_env(&env)?;
//! let store = Store::connect(&config, options).await?;
//! store.check_ready().await?; // creates the default bucket when missing
//! let key = ObjectKey::parse("executions/42/output.png")?;
//! store.put(store.default_bucket(), &key, bytes::Bytes::from_static(b"..."), "image/png").await?;
//! let object = store.get(store.default_bucket(), &key).await?;
//! # drop(object); Ok(()) }
//! ```
//!
//! Both backends behave the same way for callers: the same errors for the same situations
//! (a missing object or bucket is [`StorageError::NotFound`], transient trouble that
//! outlasts the bounded retries is [`StorageError::Unavailable`]), and the same size limit
//! ([`StoreOptions::max_object_bytes`]) for put and get. Buckets are created only by
//! [`Store::ensure_bucket`] / [`Store::check_ready`]; a put into a missing bucket fails.

mod config;
mod error;
mod fs;
mod names;
mod retry;
mod s3;

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use tracing::Instrument;

pub use config::{
    DEFAULT_BUCKET, DEFAULT_FS_ROOT, DEFAULT_MAX_OBJECT_BYTES, DEFAULT_REGION, StorageConfig,
    StoreOptions, from_env,
};
pub use error::{ConfigError, StorageError};
pub use names::{BucketName, MAX_KEY_BYTES, ObjectKey};

use fs::FsBackend;
use s3::{S3Backend, S3Settings};

/// Size and content type of a stored object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Size in bytes.
    pub size: u64,
    /// Content type given at put (S3 may report its default when none was given).
    pub content_type: Option<String>,
}

/// An object read whole into memory (bounded by `max_object_bytes`).
#[derive(Clone, Debug)]
pub struct Object {
    /// The bytes.
    pub data: Bytes,
    /// Size and content type.
    pub meta: ObjectMeta,
}

/// Handle to the object store. Cheap to clone (an `Arc` inside); share one per process.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    default_bucket: BucketName,
    options: StoreOptions,
}

enum Backend {
    Fs(FsBackend),
    S3(S3Backend),
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Written by hand: never prints credentials.
        let mut d = f.debug_struct("Store");
        d.field("backend", &self.backend_name());
        match &self.inner.backend {
            Backend::Fs(fs) => d.field("root", &fs.root()),
            Backend::S3(s3) => d.field("endpoint", &s3.endpoint()),
        };
        d.field("default_bucket", &self.inner.default_bucket)
            .field("options", &self.inner.options)
            .finish()
    }
}

impl Store {
    /// Builds the store. Does no I/O (an unreachable server or unwritable directory shows
    /// up in [`Store::check_ready`] or the first operation), so a service can start,
    /// report NOT_SERVING and turn SERVING once `check_ready` succeeds.
    pub async fn connect(
        config: &StorageConfig,
        options: StoreOptions,
    ) -> Result<Self, StorageError> {
        let backend = match config {
            StorageConfig::Fs { root, .. } => {
                let root = if root.is_absolute() {
                    root.clone()
                } else {
                    std::env::current_dir()
                        .map_err(|e| {
                            StorageError::Other(format!(
                                "cannot resolve relative storage root {}: {e}",
                                root.display()
                            ))
                        })?
                        .join(root)
                };
                Backend::Fs(FsBackend::new(root, options.max_object_bytes))
            }
            StorageConfig::S3 {
                endpoint,
                region,
                access_key_id,
                secret_access_key,
                force_path_style,
                ..
            } => {
                let settings = S3Settings {
                    endpoint: endpoint.as_deref(),
                    region,
                    access_key_id: access_key_id.as_deref(),
                    secret_access_key: secret_access_key.as_deref(),
                    force_path_style: *force_path_style,
                };
                Backend::S3(S3Backend::connect(settings, &options).await)
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                backend,
                default_bucket: config.default_bucket().clone(),
                options,
            }),
        })
    }

    /// The bucket used when a caller names none (from `STORAGE_URL`, else `imageflow-files`).
    pub fn default_bucket(&self) -> &BucketName {
        &self.inner.default_bucket
    }

    /// `"fs"` or `"s3"`.
    pub fn backend_name(&self) -> &'static str {
        match self.inner.backend {
            Backend::Fs(_) => "fs",
            Backend::S3(_) => "s3",
        }
    }

    /// The options the store was built with.
    pub fn options(&self) -> &StoreOptions {
        &self.inner.options
    }

    fn span(
        &self,
        operation: &'static str,
        bucket: &BucketName,
        key: Option<&str>,
    ) -> tracing::Span {
        tracing::info_span!(
            "storage",
            otel.name = %format!("storage.{operation}"),
            otel.kind = "client",
            storage.backend = self.backend_name(),
            storage.operation = operation,
            storage.bucket = bucket.as_str(),
            storage.key = key,
            storage.size = tracing::field::Empty,
            error = tracing::field::Empty,
        )
    }

    /// Runs `fut` inside a storage span, recording a failure on it.
    async fn traced<T>(
        &self,
        operation: &'static str,
        bucket: &BucketName,
        key: Option<&str>,
        fut: impl Future<Output = Result<T, StorageError>>,
    ) -> Result<T, StorageError> {
        let span = self.span(operation, bucket, key);
        let started = std::time::Instant::now();
        let result = fut.instrument(span.clone()).await;
        if let Err(e) = &result {
            span.record("error", tracing::field::display(e));
            // A missing object is an answer, not a failure of the store.
            if !matches!(e, StorageError::NotFound { .. }) {
                imageflow_telemetry::spans::record_error(&span, e);
            }
            span.in_scope(|| tracing::debug!(error = %e, "storage {operation} failed"));
        }
        let status = match &result {
            Ok(_) => "ok",
            Err(StorageError::NotFound { .. }) => "not_found",
            Err(_) => "error",
        };
        let labels = [operation, self.backend_name(), status];
        imageflow_telemetry::global_metric!(
            counter_vec,
            "imageflow_storage_operations_total",
            "object storage operations by operation, backend and outcome",
            &["operation", "backend", "status"],
        )
        .inc(&labels);
        imageflow_telemetry::global_metric!(
            histogram_vec,
            "imageflow_storage_operation_duration_seconds",
            "object storage operation latency, retries included",
            &["operation", "backend"],
        )
        .observe(&labels[..2], started.elapsed());
        result
    }

    /// Reads a whole object. [`StorageError::TooLarge`] when it is over `max_object_bytes`
    /// (decided from its size before the body is read), [`StorageError::NotFound`] when it
    /// or its bucket is missing.
    pub async fn get(&self, bucket: &BucketName, key: &ObjectKey) -> Result<Object, StorageError> {
        self.traced("get", bucket, Some(key.as_str()), async {
            let object = match &self.inner.backend {
                Backend::Fs(fs) => fs.get(bucket, key).await,
                Backend::S3(s3) => s3.get(bucket, key).await,
            }?;
            tracing::Span::current().record("storage.size", object.meta.size);
            Ok(object)
        })
        .await
    }

    /// Size and content type of an object, without its bytes.
    pub async fn head(
        &self,
        bucket: &BucketName,
        key: &ObjectKey,
    ) -> Result<ObjectMeta, StorageError> {
        self.traced("head", bucket, Some(key.as_str()), async {
            match &self.inner.backend {
                Backend::Fs(fs) => fs.head(bucket, key).await,
                Backend::S3(s3) => s3.head(bucket, key).await,
            }
        })
        .await
    }

    /// Stores `data` under `key`, replacing any previous object. Refuses data over
    /// `max_object_bytes` before sending anything. An empty `content_type` stores none.
    /// The bucket must exist ([`StorageError::NotFound`] with an empty key otherwise).
    pub async fn put(
        &self,
        bucket: &BucketName,
        key: &ObjectKey,
        data: Bytes,
        content_type: &str,
    ) -> Result<ObjectMeta, StorageError> {
        self.traced("put", bucket, Some(key.as_str()), async {
            let size = data.len() as u64;
            tracing::Span::current().record("storage.size", size);
            let limit = self.inner.options.max_object_bytes;
            if size > limit {
                return Err(StorageError::TooLarge { size, limit });
            }
            let content_type = validate_content_type(content_type)?;
            match &self.inner.backend {
                Backend::Fs(fs) => fs.put(bucket, key, &data, content_type).await,
                Backend::S3(s3) => s3.put(bucket, key, &data, content_type).await,
            }
        })
        .await
    }

    /// Deletes an object. Idempotent: deleting a missing object succeeds. A missing bucket
    /// is [`StorageError::NotFound`].
    pub async fn delete(&self, bucket: &BucketName, key: &ObjectKey) -> Result<(), StorageError> {
        self.traced("delete", bucket, Some(key.as_str()), async {
            match &self.inner.backend {
                Backend::Fs(fs) => fs.delete(bucket, key).await,
                Backend::S3(s3) => s3.delete(bucket, key).await,
            }
        })
        .await
    }

    /// Keys in `bucket` that start with `prefix` (plain string prefix, `""` for all), sorted.
    pub async fn list(
        &self,
        bucket: &BucketName,
        prefix: &str,
    ) -> Result<Vec<String>, StorageError> {
        Ok(self.list_first(bucket, prefix, usize::MAX).await?.0)
    }

    /// Like [`Store::list`], but stops reading once more than `max` keys were
    /// seen, so a prefix over a huge bucket costs one or two pages, not all
    /// of them. The flag says whether there were more than `max`; when it is
    /// set the keys are an arbitrary `max` of them.
    pub async fn list_first(
        &self,
        bucket: &BucketName,
        prefix: &str,
        max: usize,
    ) -> Result<(Vec<String>, bool), StorageError> {
        self.traced("list", bucket, None, async {
            let mut keys = match &self.inner.backend {
                Backend::Fs(fs) => fs.list(bucket, prefix, max).await,
                Backend::S3(s3) => s3.list(bucket, prefix, max).await,
            }?;
            let more = keys.len() > max;
            keys.truncate(max);
            Ok((keys, more))
        })
        .await
    }

    /// Creates the bucket when missing (fs: a directory; s3: CreateBucket, where "already
    /// owned by you" counts as success). Safe to call concurrently and repeatedly.
    pub async fn ensure_bucket(&self, bucket: &BucketName) -> Result<(), StorageError> {
        self.traced("ensure_bucket", bucket, None, async {
            match &self.inner.backend {
                Backend::Fs(fs) => fs.ensure_bucket(bucket).await,
                Backend::S3(s3) => s3.ensure_bucket(bucket).await,
            }
        })
        .await
    }

    /// Readiness: the default bucket exists or could be created. Gate gRPC health
    /// (NOT_SERVING until this returns `Ok`) and `/readyz` on it.
    pub async fn check_ready(&self) -> Result<(), StorageError> {
        self.ensure_bucket(self.default_bucket()).await
    }
}

/// `None` for an empty content type; an error for one that cannot be an HTTP header value.
fn validate_content_type(content_type: &str) -> Result<Option<&str>, StorageError> {
    let content_type = content_type.trim();
    if content_type.is_empty() {
        return Ok(None);
    }
    if content_type.len() > 255 || !content_type.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(StorageError::Other(format!(
            "invalid content type {:?}: expected printable ASCII such as image/png, at most \
             255 bytes",
            content_type.chars().take(64).collect::<String>()
        )));
    }
    Ok(Some(content_type))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_are_validated() {
        assert_eq!(
            validate_content_type("image/png").unwrap(),
            Some("image/png")
        );
        assert_eq!(
            validate_content_type(" image/png ").unwrap(),
            Some("image/png")
        );
        assert_eq!(validate_content_type("").unwrap(), None);
        assert!(validate_content_type("image/png\r\nx-evil: 1").is_err());
        assert!(validate_content_type(&"a".repeat(300)).is_err());
    }

    #[tokio::test]
    async fn debug_never_shows_secrets() {
        let config = StorageConfig::S3 {
            default_bucket: BucketName::parse("bkt").unwrap(),
            endpoint: Some("http://127.0.0.1:1".into()),
            region: "us-east-1".into(),
            access_key_id: Some("test-access-key".into()),
            secret_access_key: Some("test-secret-must-not-leak".into()),
            force_path_style: true,
        };
        let store = Store::connect(&config, StoreOptions::default())
            .await
            .unwrap();
        let shown = format!("{store:?} {config:?}");
        assert!(!shown.contains("test-secret-must-not-leak"), "{shown}");
        assert_eq!(store.backend_name(), "s3");
    }
}

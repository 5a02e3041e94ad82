//! S3 / MinIO backend over `aws-sdk-s3`.
//!
//! The SDK is configured to make exactly one attempt per call (its own retries off), with a
//! connect timeout, per-attempt and per-operation timeouts and stalled-stream protection;
//! our [`RetryPolicy`] retries transient failures (dispatch/connect errors, timeouts, 5xx,
//! throttling) with exponential backoff and equal jitter. Every attempt, body download
//! included, is also bounded by `op_timeout`.
//!
//! Request checksums are computed only when an operation requires them (and responses
//! validated likewise): the SDK's newer "when supported" default sends aws-chunked CRC
//! trailers that several S3-compatible servers do not accept.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use bytes::{Bytes, BytesMut};

use crate::config::{DEFAULT_REGION, StoreOptions};
use crate::error::StorageError;
use crate::names::{BucketName, ObjectKey};
use crate::retry::{Failure, RetryPolicy};
use crate::{Object, ObjectMeta};

/// Longest TCP/TLS connect allowed, whatever `op_timeout` is.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A transfer that moves no bytes for this long is cut (stalled-stream protection).
const STALL_GRACE: Duration = Duration::from_secs(5);
/// Label of the static credentials (shows up in SDK debug output instead of the keys).
const STATIC_PROVIDER: &str = "imageflow-static-credentials";

/// What the S3 backend needs from [`crate::StorageConfig::S3`].
pub(crate) struct S3Settings<'a> {
    pub endpoint: Option<&'a str>,
    pub region: &'a str,
    pub access_key_id: Option<&'a str>,
    pub secret_access_key: Option<&'a str>,
    pub force_path_style: bool,
}

/// No `Debug`: the client holds the credentials provider.
pub(crate) struct S3Backend {
    client: Client,
    endpoint: Option<String>,
    region: String,
    max_object_bytes: u64,
    op_timeout: Duration,
    retry: RetryPolicy,
    /// Buckets seen to exist. `put` checks a bucket once (HeadBucket) before its first
    /// write: some S3-compatible servers create a missing bucket on PutObject, and callers
    /// are promised `NotFound` instead. Forgotten on any `NoSuchBucket`.
    known_buckets: Mutex<HashSet<String>>,
}

impl S3Backend {
    /// Builds the client. Makes no network call: an unreachable server shows up in the
    /// first operation (or in `check_ready`), not here.
    pub(crate) async fn connect(settings: S3Settings<'_>, options: &StoreOptions) -> Self {
        let op_timeout = options.op_timeout;
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(op_timeout.min(MAX_CONNECT_TIMEOUT))
            .operation_attempt_timeout(op_timeout)
            .operation_timeout(op_timeout)
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(settings.region.to_owned()))
            .retry_config(RetryConfig::standard().with_max_attempts(1))
            .timeout_config(timeouts)
            .stalled_stream_protection(
                StalledStreamProtectionConfig::enabled()
                    .grace_period(STALL_GRACE)
                    .build(),
            )
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let (Some(id), Some(secret)) = (settings.access_key_id, settings.secret_access_key) {
            loader = loader.credentials_provider(Credentials::new(
                id,
                secret,
                None,
                None,
                STATIC_PROVIDER,
            ));
        }
        if let Some(endpoint) = settings.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        let sdk_config = loader.load().await;
        let s3_config = aws_sdk_s3::config::Builder::from(&sdk_config)
            .force_path_style(settings.force_path_style)
            .build();
        Self {
            client: Client::from_conf(s3_config),
            endpoint: settings.endpoint.map(str::to_owned),
            region: settings.region.to_owned(),
            max_object_bytes: options.max_object_bytes,
            op_timeout,
            retry: RetryPolicy {
                max_attempts: options.max_attempts,
                base_backoff: options.base_backoff,
            },
            known_buckets: Mutex::new(HashSet::new()),
        }
    }

    pub(crate) fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }

    fn known_buckets(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.known_buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn remember_bucket(&self, bucket: &BucketName) {
        self.known_buckets().insert(bucket.as_str().to_owned());
    }

    /// Forgets a bucket the server just called missing; passes the result through.
    fn note<T>(
        &self,
        bucket: &BucketName,
        result: Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        if let Err(StorageError::NotFound { key, .. }) = &result
            && key.is_empty()
        {
            self.known_buckets().remove(bucket.as_str());
        }
        result
    }

    /// Bounds one whole attempt (request and body) by `op_timeout`.
    async fn attempt<T>(
        &self,
        fut: impl Future<Output = Result<T, Failure>>,
    ) -> Result<T, Failure> {
        match tokio::time::timeout(self.op_timeout, fut).await {
            Ok(result) => result,
            Err(_) => Err(Failure::Transient(format!(
                "attempt timed out after {} ms",
                self.op_timeout.as_millis()
            ))),
        }
    }

    pub(crate) async fn get(
        &self,
        bucket: &BucketName,
        key: &ObjectKey,
    ) -> Result<Object, StorageError> {
        let limit = self.max_object_bytes;
        self.retry
            .run("get", || {
                self.attempt(async {
                    let output = self
                        .client
                        .get_object()
                        .bucket(bucket.as_str())
                        .key(key.as_str())
                        .send()
                        .boxed()
                        .await
                        .map_err(|e| classify(e, bucket, Some(key)))?;
                    let announced = output.content_length().and_then(|n| u64::try_from(n).ok());
                    if let Some(size) = announced.filter(|size| *size > limit) {
                        // Dropping the output drops the body unread.
                        return Err(StorageError::TooLarge { size, limit }.into());
                    }
                    let content_type = output.content_type().map(str::to_owned);
                    let mut body = output.body;
                    let capacity = announced.unwrap_or(0).min(limit);
                    let mut data = BytesMut::with_capacity(usize::try_from(capacity).unwrap_or(0));
                    while let Some(chunk) = body.try_next().await.map_err(|e| {
                        Failure::Transient(format!("reading the body: {}", causes(&e)))
                    })? {
                        let size = (data.len() + chunk.len()) as u64;
                        if size > limit {
                            return Err(StorageError::TooLarge { size, limit }.into());
                        }
                        data.extend_from_slice(&chunk);
                    }
                    let data = data.freeze();
                    Ok(Object {
                        meta: ObjectMeta {
                            size: data.len() as u64,
                            content_type,
                        },
                        data,
                    })
                })
            })
            .await
    }

    pub(crate) async fn head(
        &self,
        bucket: &BucketName,
        key: &ObjectKey,
    ) -> Result<ObjectMeta, StorageError> {
        self.retry
            .run("head", || {
                self.attempt(async {
                    let output = self
                        .client
                        .head_object()
                        .bucket(bucket.as_str())
                        .key(key.as_str())
                        .send()
                        .boxed()
                        .await
                        .map_err(|e| classify(e, bucket, Some(key)))?;
                    Ok(ObjectMeta {
                        size: output
                            .content_length()
                            .and_then(|n| u64::try_from(n).ok())
                            .unwrap_or(0),
                        content_type: output.content_type().map(str::to_owned),
                    })
                })
            })
            .await
    }

    pub(crate) async fn put(
        &self,
        bucket: &BucketName,
        key: &ObjectKey,
        data: &Bytes,
        content_type: Option<&str>,
    ) -> Result<ObjectMeta, StorageError> {
        let size = data.len() as u64;
        let length = i64::try_from(size).map_err(|_| StorageError::TooLarge {
            size,
            limit: self.max_object_bytes,
        })?;
        let known = self.known_buckets().contains(bucket.as_str());
        if !known && !self.bucket_exists(bucket, "put").await? {
            return Err(StorageError::bucket_not_found(bucket));
        }
        let result = self
            .retry
            .run("put", || {
                self.attempt(async {
                    self.client
                        .put_object()
                        .bucket(bucket.as_str())
                        .key(key.as_str())
                        .content_length(length)
                        .set_content_type(content_type.map(str::to_owned))
                        .body(ByteStream::from(data.clone()))
                        .send()
                        .boxed()
                        .await
                        .map_err(|e| classify(e, bucket, Some(key)))?;
                    Ok(())
                })
            })
            .await;
        self.note(bucket, result)?;
        Ok(ObjectMeta {
            size,
            content_type: content_type.map(str::to_owned),
        })
    }

    pub(crate) async fn delete(
        &self,
        bucket: &BucketName,
        key: &ObjectKey,
    ) -> Result<(), StorageError> {
        let result = self
            .retry
            .run("delete", || {
                self.attempt(async {
                    self.client
                        .delete_object()
                        .bucket(bucket.as_str())
                        .key(key.as_str())
                        .send()
                        .boxed()
                        .await
                        .map_err(|e| classify(e, bucket, Some(key)))?;
                    Ok(())
                })
            })
            .await;
        match result {
            // S3 answers 204 for a missing key; some servers answer NoSuchKey. Either way
            // the object is gone, which is what delete promises. A missing bucket stays an
            // error (key empty), as on the filesystem backend.
            Err(StorageError::NotFound { key: k, .. }) if !k.is_empty() => Ok(()),
            other => other,
        }
    }

    /// Sorted keys under `prefix`; stops after the page that takes it past
    /// `max` (the caller truncates).
    pub(crate) async fn list(
        &self,
        bucket: &BucketName,
        prefix: &str,
        max: usize,
    ) -> Result<Vec<String>, StorageError> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .retry
                .run("list", || {
                    self.attempt(async {
                        self.client
                            .list_objects_v2()
                            .bucket(bucket.as_str())
                            .set_prefix(Some(prefix.to_owned()).filter(|p| !p.is_empty()))
                            .set_continuation_token(token.clone())
                            .send()
                            .boxed()
                            .await
                            .map_err(|e| classify(e, bucket, None))
                    })
                })
                .await?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key())
                    .map(str::to_owned),
            );
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) && keys.len() <= max => {
                    token = Some(next.to_owned());
                }
                _ => break,
            }
        }
        keys.sort_unstable();
        Ok(keys)
    }

    /// HeadBucket; retry exhaustion is reported under `operation` (the caller's operation).
    async fn bucket_exists(
        &self,
        bucket: &BucketName,
        operation: &'static str,
    ) -> Result<bool, StorageError> {
        let result = self
            .retry
            .run(operation, || {
                self.attempt(async {
                    self.client
                        .head_bucket()
                        .bucket(bucket.as_str())
                        .send()
                        .boxed()
                        .await
                        .map_err(|e| classify(e, bucket, None))?;
                    Ok(())
                })
            })
            .await;
        match result {
            Ok(()) => {
                self.remember_bucket(bucket);
                Ok(true)
            }
            Err(StorageError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn ensure_bucket(&self, bucket: &BucketName) -> Result<(), StorageError> {
        if self.bucket_exists(bucket, "ensure_bucket").await? {
            return Ok(());
        }
        let configuration = (self.region != DEFAULT_REGION).then(|| {
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(self.region.as_str()))
                .build()
        });
        let outcome = self
            .retry
            .run("ensure_bucket", || {
                self.attempt(async {
                    match self
                        .client
                        .create_bucket()
                        .bucket(bucket.as_str())
                        .set_create_bucket_configuration(configuration.clone())
                        .send()
                        .boxed()
                        .await
                    {
                        Ok(_) => Ok(Created::Now),
                        Err(e) => match e.code() {
                            // Created earlier, or concurrently by another replica.
                            Some("BucketAlreadyOwnedByYou") => Ok(Created::AlreadyOwned),
                            // Some servers answer this for a bucket we own too.
                            Some("BucketAlreadyExists") => Ok(Created::ExistsCheckOwner),
                            _ => Err(classify(e, bucket, None)),
                        },
                    }
                })
            })
            .await?;
        match outcome {
            Created::Now | Created::AlreadyOwned => {
                self.remember_bucket(bucket);
                Ok(())
            }
            Created::ExistsCheckOwner if self.bucket_exists(bucket, "ensure_bucket").await? => {
                Ok(())
            }
            Created::ExistsCheckOwner => Err(StorageError::AccessDenied(format!(
                "bucket {:?} exists but belongs to another account",
                bucket.as_str()
            ))),
        }
    }
}

enum Created {
    Now,
    AlreadyOwned,
    ExistsCheckOwner,
}

/// `Box::pin` as a method: SDK request futures are ~20 KB; keeping them on the heap keeps
/// every future that awaits one small (clippy `large_futures`).
trait BoxedFuture: Future + Sized {
    fn boxed(self) -> std::pin::Pin<Box<Self>> {
        Box::pin(self)
    }
}

impl<F: Future> BoxedFuture for F {}

/// Sorts an SDK error into retry-worthy or not, and into our error kinds.
fn classify<E>(
    err: SdkError<E, HttpResponse>,
    bucket: &BucketName,
    key: Option<&ObjectKey>,
) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &err {
        SdkError::ServiceError(context) => classify_service(
            context.raw().status().as_u16(),
            context.err().code(),
            context.err().message(),
            bucket,
            key,
        ),
        SdkError::DispatchFailure(failure) if failure.is_user() => {
            Failure::Permanent(StorageError::Other(causes(&err)))
        }
        // Connect refused/reset, DNS, TLS handshake, timeouts, truncated responses.
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Failure::Transient(causes(&err))
        }
        _ => Failure::Permanent(StorageError::Other(causes(&err))),
    }
}

/// An error and its causes as one line of their messages, e.g. "dispatch failure:
/// io error: client error (Connect): tcp connect error: Connection refused (os error
/// 111)". The SDK's `DisplayErrorContext` appends the whole `Debug` tree as well:
/// internal text that ends up in execution records and in front of users.
fn causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        // Wrappers often repeat their source's message; keep each once.
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

fn classify_service(
    status: u16,
    code: Option<&str>,
    message: Option<&str>,
    bucket: &BucketName,
    key: Option<&ObjectKey>,
) -> Failure {
    let describe = || {
        let mut s = format!("{} (HTTP {status})", code.unwrap_or("no error code"));
        if let Some(m) = message.filter(|m| !m.is_empty()) {
            s.push_str(": ");
            s.push_str(m);
        }
        s
    };
    let not_found = || match key {
        Some(key) => StorageError::object_not_found(bucket, key),
        None => StorageError::bucket_not_found(bucket),
    };
    match code {
        Some("NoSuchBucket") => Failure::Permanent(StorageError::bucket_not_found(bucket)),
        Some("NoSuchKey" | "NotFound") => Failure::Permanent(not_found()),
        Some(
            "AccessDenied"
            | "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "AllAccessDisabled"
            | "AccountProblem"
            | "InvalidToken"
            | "ExpiredToken"
            | "InvalidSecurity",
        ) => Failure::Permanent(StorageError::AccessDenied(describe())),
        Some(
            "SlowDown"
            | "Throttling"
            | "ThrottlingException"
            | "ThrottledException"
            | "RequestThrottled"
            | "RequestLimitExceeded"
            | "TooManyRequests"
            | "TooManyRequestsException"
            | "ProvisionedThroughputExceededException"
            | "BandwidthLimitExceeded"
            | "ServiceUnavailable"
            | "InternalError"
            | "RequestTimeout"
            | "RequestTimeoutException"
            | "XMinioServerNotInitialized",
        ) => Failure::Transient(describe()),
        Some("NotImplemented") => Failure::Permanent(StorageError::Other(describe())),
        _ => match status {
            404 => Failure::Permanent(not_found()),
            401 | 403 => Failure::Permanent(StorageError::AccessDenied(describe())),
            429 | 500..=599 => Failure::Transient(describe()),
            _ => Failure::Permanent(StorageError::Other(describe())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket() -> BucketName {
        BucketName::parse("bkt").unwrap()
    }

    fn key() -> ObjectKey {
        ObjectKey::parse("k/1.png").unwrap()
    }

    fn kind(f: &Failure) -> String {
        match f {
            Failure::Transient(m) => format!("transient: {m}"),
            Failure::Permanent(e) => format!("permanent: {e:?}"),
        }
    }

    #[test]
    fn a_refused_connection_reads_as_its_causes_without_the_debug_tree() {
        let refused =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let err = SdkError::<aws_sdk_s3::operation::get_object::GetObjectError, HttpResponse>::dispatch_failure(
            aws_sdk_s3::error::ConnectorError::io(Box::new(refused)),
        );
        let Failure::Transient(message) = classify(err, &bucket(), Some(&key())) else {
            panic!("a refused connection is worth another attempt");
        };
        assert!(message.contains("Connection refused"), "{message}");
        for internal in ["DispatchFailure", "ConnectorError", "{", "kind:"] {
            assert!(
                !message.contains(internal),
                "{internal:?} leaks into {message:?}"
            );
        }
    }

    #[test]
    fn service_errors_are_classified() {
        let b = bucket();
        let k = key();
        let cases: &[(u16, Option<&str>, Option<&ObjectKey>, &str)] = &[
            (
                404,
                Some("NoSuchKey"),
                Some(&k),
                r#"NotFound { bucket: "bkt", key: "k/1.png" }"#,
            ),
            (
                404,
                Some("NoSuchBucket"),
                Some(&k),
                r#"NotFound { bucket: "bkt", key: "" }"#,
            ),
            (
                404,
                None,
                Some(&k),
                r#"NotFound { bucket: "bkt", key: "k/1.png" }"#,
            ),
            (404, None, None, r#"NotFound { bucket: "bkt", key: "" }"#),
            (
                404,
                Some("NotFound"),
                Some(&k),
                r#"NotFound { bucket: "bkt", key: "k/1.png" }"#,
            ),
            (403, Some("AccessDenied"), Some(&k), "AccessDenied"),
            (403, Some("SignatureDoesNotMatch"), Some(&k), "AccessDenied"),
            (403, Some("InvalidAccessKeyId"), Some(&k), "AccessDenied"),
            (403, None, Some(&k), "AccessDenied"),
            (503, Some("SlowDown"), Some(&k), "transient"),
            (500, Some("InternalError"), Some(&k), "transient"),
            (502, None, Some(&k), "transient"),
            (429, None, Some(&k), "transient"),
            (400, Some("RequestTimeout"), Some(&k), "transient"),
            (400, Some("Throttling"), Some(&k), "transient"),
            (501, Some("NotImplemented"), Some(&k), "permanent: Other"),
            (400, Some("InvalidArgument"), Some(&k), "permanent: Other"),
            (301, Some("PermanentRedirect"), Some(&k), "permanent: Other"),
        ];
        for (status, code, key, expected) in cases {
            let got = kind(&classify_service(*status, *code, Some("msg"), &b, *key));
            assert!(got.contains(expected), "{status} {code:?}: {got}");
        }
    }
}

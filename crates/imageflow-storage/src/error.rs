//! Errors of the object store and of its configuration.

/// What went wrong with a storage operation.
///
/// Messages never contain credentials. `Unavailable` is the only retryable kind: the store
/// has already retried it `attempts` times with backoff, so a caller should report the
/// dependency as down (gRPC `UNAVAILABLE`) rather than retry in a tight loop.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The object key failed validation (see [`crate::ObjectKey`]).
    #[error("invalid object key {0}")]
    InvalidKey(String),
    /// The bucket name failed validation (see [`crate::BucketName`]).
    #[error("invalid bucket name {0}")]
    InvalidBucket(String),
    /// The object does not exist, or its bucket does not (then `key` is empty).
    #[error("{}", not_found_message(bucket, key))]
    NotFound {
        /// Bucket that was asked for.
        bucket: String,
        /// Key that was asked for; empty when the bucket itself is missing.
        key: String,
    },
    /// The object is larger than the configured `max_object_bytes`.
    #[error("object of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size of the object (for `get`: at least this many bytes).
        size: u64,
        /// The configured limit.
        limit: u64,
    },
    /// The credentials were refused or lack permission.
    #[error("access denied: {0}")]
    AccessDenied(String),
    /// A transient failure (connection refused, timeout, 5xx, throttling) that persisted
    /// through every attempt of the bounded retry loop.
    #[error("storage unavailable: {operation} failed after {attempts} attempt(s): {message}")]
    Unavailable {
        /// Operation name (`get`, `put`, `head`, `delete`, `list`, `ensure_bucket`).
        operation: &'static str,
        /// Attempts made, the last one included.
        attempts: u32,
        /// The last failure.
        message: String,
    },
    /// Anything else: a permanent failure that retrying will not fix.
    #[error("storage error: {0}")]
    Other(String),
}

fn not_found_message(bucket: &str, key: &str) -> String {
    if key.is_empty() {
        format!("bucket {bucket:?} not found")
    } else {
        format!("object {key:?} not found in bucket {bucket:?}")
    }
}

impl StorageError {
    /// Whether trying again later may succeed (only [`StorageError::Unavailable`]).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    /// Whether the object or its bucket does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    pub(crate) fn bucket_not_found(bucket: &crate::BucketName) -> Self {
        Self::NotFound {
            bucket: bucket.as_str().to_owned(),
            key: String::new(),
        }
    }

    pub(crate) fn object_not_found(bucket: &crate::BucketName, key: &crate::ObjectKey) -> Self {
        Self::NotFound {
            bucket: bucket.as_str().to_owned(),
            key: key.as_str().to_owned(),
        }
    }
}

/// A configuration value that cannot be used: the one shape every binary's
/// settings share.
pub use imageflow_config::ConfigError;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_messages() {
        let e = StorageError::NotFound {
            bucket: "b1".into(),
            key: "k/1".into(),
        };
        assert_eq!(e.to_string(), r#"object "k/1" not found in bucket "b1""#);
        let e = StorageError::NotFound {
            bucket: "b1".into(),
            key: String::new(),
        };
        assert_eq!(e.to_string(), r#"bucket "b1" not found"#);
        let e = ConfigError::invalid("STORAGE_URL", "bad");
        assert_eq!(e.to_string(), "STORAGE_URL: bad");
        assert_eq!(e.variable(), "STORAGE_URL");
    }

    #[test]
    fn only_unavailable_is_retryable() {
        let unavailable = StorageError::Unavailable {
            operation: "get",
            attempts: 3,
            message: "connection refused".into(),
        };
        assert!(unavailable.is_retryable());
        for e in [
            StorageError::InvalidKey("x".into()),
            StorageError::InvalidBucket("x".into()),
            StorageError::NotFound {
                bucket: "b".into(),
                key: "k".into(),
            },
            StorageError::TooLarge { size: 2, limit: 1 },
            StorageError::AccessDenied("x".into()),
            StorageError::Other("x".into()),
        ] {
            assert!(!e.is_retryable(), "{e}");
        }
    }
}

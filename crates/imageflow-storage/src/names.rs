//! Validated bucket names and object keys.
//!
//! Both types can only be built through `parse`, so every value that reaches a backend is
//! already known to be safe: a key can never climb out of its bucket directory on the
//! filesystem backend, and a bucket name is always one S3 and MinIO accept.

use std::fmt;
use std::str::FromStr;

use crate::error::StorageError;

/// Longest object key S3 accepts, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// A validated object key.
///
/// Rules: non-empty, at most 1024 bytes, no leading `/`, no empty segments (`a//b`, `a/`),
/// no `.` or `..` segments, no backslashes and no control characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// Validates `s` as an object key.
    pub fn parse(s: &str) -> Result<Self, StorageError> {
        let invalid = |why: &str| StorageError::InvalidKey(format!("{}: {why}", quoted(s)));
        if s.is_empty() {
            return Err(invalid("must not be empty"));
        }
        if s.len() > MAX_KEY_BYTES {
            return Err(invalid(&format!(
                "is {} bytes long, the limit is {MAX_KEY_BYTES}",
                s.len()
            )));
        }
        if s.starts_with('/') {
            return Err(invalid("must not start with '/'"));
        }
        if s.contains('\\') {
            return Err(invalid("must not contain a backslash"));
        }
        if s.chars().any(char::is_control) {
            return Err(invalid("must not contain control characters"));
        }
        for segment in s.split('/') {
            match segment {
                "" => return Err(invalid("must not contain empty segments ('a//b' or 'a/')")),
                "." | ".." => return Err(invalid("must not contain '.' or '..' segments")),
                _ => {}
            }
        }
        Ok(Self(s.to_owned()))
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `/`-separated segments of the key (never empty, never `.` or `..`).
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The key as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ObjectKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for ObjectKey {
    type Err = StorageError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<&str> for ObjectKey {
    type Error = StorageError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl TryFrom<String> for ObjectKey {
    type Error = StorageError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

/// A validated S3 bucket name.
///
/// Rules (the S3 general-purpose bucket rules): 3 to 63 characters of lowercase letters,
/// digits, `-` and `.`; starts and ends with a letter or digit; no `..`; not shaped like an
/// IPv4 address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BucketName(String);

impl BucketName {
    /// Validates `s` as a bucket name.
    pub fn parse(s: &str) -> Result<Self, StorageError> {
        let invalid = |why: &str| StorageError::InvalidBucket(format!("{}: {why}", quoted(s)));
        if !(3..=63).contains(&s.len()) {
            return Err(invalid("must be 3 to 63 characters long"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        {
            return Err(invalid(
                "may contain only lowercase letters, digits, '-' and '.'",
            ));
        }
        let alnum = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !alnum(s.bytes().next()) || !alnum(s.bytes().last()) {
            return Err(invalid("must start and end with a letter or digit"));
        }
        if s.contains("..") {
            return Err(invalid("must not contain '..'"));
        }
        if s.parse::<std::net::Ipv4Addr>().is_ok() {
            return Err(invalid("must not be formatted as an IP address"));
        }
        Ok(Self(s.to_owned()))
    }

    /// The bucket name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BucketName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for BucketName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for BucketName {
    type Err = StorageError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<&str> for BucketName {
    type Error = StorageError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl TryFrom<String> for BucketName {
    type Error = StorageError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

/// Quotes a user-supplied name for an error message: escapes control characters and
/// shortens very long input so a hostile key cannot flood a log line.
fn quoted(s: &str) -> String {
    const SHOWN: usize = 80;
    let mut shown: String = s.chars().take(SHOWN).collect();
    if shown.len() < s.len() {
        shown.push_str("...");
    }
    format!("{shown:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_keys() {
        let long = "k".repeat(MAX_KEY_BYTES);
        for key in [
            "a",
            "photo.jpg",
            "executions/123/out.png",
            "a/b/c/d/e.f",
            ".hidden",
            "dir/.hidden/..x/x..",
            "spaces are fine.png",
            "ユニコード/写真.jpg",
            "a-b_c~d(e)f!g'h*i@j=k+l,m;n:o$p&q",
            long.as_str(),
        ] {
            let parsed = ObjectKey::parse(key).unwrap_or_else(|e| panic!("{key:?}: {e}"));
            assert_eq!(parsed.as_str(), key);
            assert_eq!(parsed.to_string(), key);
        }
    }

    #[test]
    fn rejects_invalid_keys() {
        let too_long = "k".repeat(MAX_KEY_BYTES + 1);
        for (key, why) in [
            ("", "empty"),
            ("/abs", "'/'"),
            ("a//b", "empty segments"),
            ("a/", "empty segments"),
            ("a/./b", "'.' or '..'"),
            (".", "'.' or '..'"),
            ("..", "'.' or '..'"),
            ("../escape", "'.' or '..'"),
            ("a/../../escape", "'.' or '..'"),
            ("a/..", "'.' or '..'"),
            ("a\\b", "backslash"),
            ("..\\escape", "backslash"),
            ("a\nb", "control"),
            ("a\0b", "control"),
            ("tab\there", "control"),
            ("del\u{7f}", "control"),
            ("c1\u{85}", "control"),
            (too_long.as_str(), "limit is 1024"),
        ] {
            match ObjectKey::parse(key) {
                Err(StorageError::InvalidKey(msg)) => {
                    assert!(msg.contains(why), "{key:?}: message {msg:?} lacks {why:?}")
                }
                other => panic!("{key:?}: expected InvalidKey, got {other:?}"),
            }
        }
    }

    #[test]
    fn key_error_message_is_bounded_and_escaped() {
        let hostile = format!("{}\n", "x".repeat(5000));
        let Err(StorageError::InvalidKey(msg)) = ObjectKey::parse(&hostile) else {
            panic!("expected InvalidKey");
        };
        assert!(msg.len() < 300, "{msg}");
        assert!(!msg.contains('\n'));
    }

    #[test]
    fn accepts_valid_buckets() {
        for name in [
            "abc",
            "imageflow-files",
            "my.bucket.name",
            "0bucket9",
            "a-b-c",
            &"b".repeat(63),
        ] {
            let parsed = BucketName::parse(name).unwrap_or_else(|e| panic!("{name:?}: {e}"));
            assert_eq!(parsed.as_str(), name);
            assert_eq!(parsed.to_string(), name);
        }
    }

    #[test]
    fn rejects_invalid_buckets() {
        let too_long = "b".repeat(64);
        for (name, why) in [
            ("", "3 to 63"),
            ("ab", "3 to 63"),
            (too_long.as_str(), "3 to 63"),
            ("Upper", "lowercase"),
            ("under_score", "lowercase"),
            ("slash/name", "lowercase"),
            ("space name", "lowercase"),
            ("-start", "start and end"),
            ("end-", "start and end"),
            (".dot", "start and end"),
            ("dot.", "start and end"),
            ("a..b", "'..'"),
            ("192.168.1.1", "IP address"),
            ("..", "3 to 63"),
            ("../etc", "lowercase"),
        ] {
            match BucketName::parse(name) {
                Err(StorageError::InvalidBucket(msg)) => {
                    assert!(msg.contains(why), "{name:?}: message {msg:?} lacks {why:?}")
                }
                other => panic!("{name:?}: expected InvalidBucket, got {other:?}"),
            }
        }
    }

    #[test]
    fn from_str_and_try_from_agree_with_parse() {
        assert_eq!(
            "a/b".parse::<ObjectKey>().ok(),
            ObjectKey::parse("a/b").ok()
        );
        assert!(ObjectKey::try_from(String::from("a//b")).is_err());
        assert_eq!(
            BucketName::try_from("abc").ok(),
            BucketName::parse("abc").ok()
        );
        assert!("AB".parse::<BucketName>().is_err());
    }
}

//! PII masking at the source: log lines leave the process without e-mail
//! addresses, credentials or full public IP addresses, whatever a caller put
//! in a message or a field.
//!
//! * `alice@example.com` → `a***@example.com` (the domain helps debugging);
//! * `Bearer abc…`, `token=…`, `password: …`, `X-Amz-Signature=…` → `[REDACTED]`;
//! * public IPv4 `203.0.113.57` → `203.0.113.0` (private, loopback and
//!   unspecified addresses are infrastructure, not people, and stay).
//!
//! Fields whose *name* says they hold a secret are redacted whole.

use std::{borrow::Cow, net::Ipv4Addr, sync::LazyLock};

use regex::{Captures, Regex};

pub const REDACTED: &str = "[REDACTED]";

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)\b")
        .unwrap_or_else(|e| unreachable!("static regex: {e}"))
});

static BEARER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
        .unwrap_or_else(|e| unreachable!("static regex: {e}"))
});

static KEY_VALUE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)\b((?:api[_-]?key|access[_-]?key(?:[_-]?id)?|secret(?:[_-]?(?:access[_-]?)?key)?|password|passwd|token|x-amz-signature|x-amz-credential|authorization)["']?\s*[=:]\s*["']?)(?:(?:bearer|basic)\s+)?[^\s"'&,;}]+"#,
    )
    .unwrap_or_else(|e| unreachable!("static regex: {e}"))
});

static IPV4: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\b")
        .unwrap_or_else(|e| unreachable!("static regex: {e}"))
});

/// True for field names that carry secrets by definition.
pub fn is_secret_field(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "authorization",
        "api_key",
        "apikey",
        "credential",
    ]
    .iter()
    .any(|needle| name.contains(needle))
}

/// Masks PII in `text`; borrows when there is nothing to mask (the common case).
pub fn mask(text: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(text);
    if out.contains('@') {
        out = replace(out, &EMAIL, |c: &Captures| {
            format!("{}***@{}", &c[1], &c[2])
        });
    }
    // Key-value first: `Authorization: Bearer x` is one secret, not two.
    out = replace(out, &KEY_VALUE, |c: &Captures| {
        format!("{}{REDACTED}", &c[1])
    });
    out = replace(out, &BEARER, |c: &Captures| format!("{} {REDACTED}", &c[1]));
    if out.contains('.') {
        out = replace(out, &IPV4, |c: &Captures| {
            let octets: Option<Vec<u8>> = (1..=4).map(|i| c[i].parse::<u8>().ok()).collect();
            match octets {
                Some(o) if is_public(Ipv4Addr::new(o[0], o[1], o[2], o[3])) => {
                    format!("{}.{}.{}.0", o[0], o[1], o[2])
                }
                _ => c[0].to_string(),
            }
        });
    }
    out
}

fn replace<'a>(
    text: Cow<'a, str>,
    re: &Regex,
    with: impl FnMut(&Captures) -> String,
) -> Cow<'a, str> {
    if !re.is_match(&text) {
        return text;
    }
    Cow::Owned(re.replace_all(&text, with).into_owned())
}

fn is_public(ip: Ipv4Addr) -> bool {
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_link_local()
        || ip.is_broadcast()
        // CGNAT, also used for cluster pod ranges
        || (ip.octets()[0] == 100 && (ip.octets()[1] & 0xc0) == 64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_keep_their_domain() {
        assert_eq!(
            mask("upload by alice.smith@example.co.jp failed"),
            "upload by a***@example.co.jp failed"
        );
    }

    #[test]
    fn credentials_are_redacted() {
        assert_eq!(
            mask("Authorization: Bearer eyJhbGciOi.J9.abc"),
            "Authorization: [REDACTED]"
        );
        assert_eq!(mask("got bearer s3cr3t-token"), "got bearer [REDACTED]");
        assert_eq!(
            mask("url ?X-Amz-Signature=deadbeef&x=1 token=abc password: hunter2"),
            "url ?X-Amz-Signature=[REDACTED]&x=1 token=[REDACTED] password: [REDACTED]"
        );
        assert_eq!(
            mask(r#"{"secret_access_key":"wJalrXUtnFEMI"}"#),
            r#"{"secret_access_key":"[REDACTED]"}"#
        );
    }

    #[test]
    fn public_addresses_are_reduced_infrastructure_ones_stay() {
        assert_eq!(
            mask("client 203.0.113.57 refused"),
            "client 203.0.113.0 refused"
        );
        assert_eq!(
            mask("listening on 127.0.0.1:9090"),
            "listening on 127.0.0.1:9090"
        );
        assert_eq!(
            mask("pod 10.42.0.17 and 0.0.0.0:80"),
            "pod 10.42.0.17 and 0.0.0.0:80"
        );
    }

    #[test]
    fn ordinary_text_is_borrowed_untouched() {
        let text = "resized 1920x1080 to 800x450 in 8.5 ms (executions/42/out.jpg)";
        assert!(matches!(mask(text), Cow::Borrowed(_)));
        assert!(matches!(mask("ok"), Cow::Borrowed(_)));
    }

    #[test]
    fn secret_field_names() {
        assert!(is_secret_field("api_token"));
        assert!(is_secret_field("AWS_SECRET_ACCESS_KEY"));
        assert!(!is_secret_field("execution_id"));
    }
}

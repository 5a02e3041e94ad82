//! The refusals every service's tests check the same way.

use tonic::{Code, Status};

/// A request refused for its object key before any storage is touched:
/// INVALID_ARGUMENT naming the field and the rule (`rule` is a part of the
/// message, e.g. `"'..'"` or `"limit is 1024"`).
pub fn assert_bad_object_key(status: &Status, key: &str, rule: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{key:?}: {status:?}");
    assert!(
        status.message().starts_with("input_image.object_key: ") && status.message().contains(rule),
        "{key:?}: {status:?}"
    );
}

/// A message over `GRPC_MAX_MESSAGE_BYTES`. tonic 0.14 refuses it in its
/// codec, before any handler runs, with OUT_OF_RANGE (grpc-go says
/// RESOURCE_EXHAUSTED).
pub fn assert_message_too_large(status: &Status) {
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("too large"), "{status:?}");
}

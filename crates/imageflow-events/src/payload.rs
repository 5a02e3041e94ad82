//! The messages on the topics of [`crate::topics`] as versioned JSON.
//!
//! Every message carries `"version": 1` next to its fields. The version is
//! added by [`encode`] (the publisher uses it), so no caller can forget it, and
//! checked by [`decode`] before the fields are read: a message from a newer
//! producer is refused with a clear error instead of being half-understood.
//! Unknown fields are ignored, so adding an optional field does not need a new
//! version; removing or changing the meaning of one does.

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::EventsError;

/// The payload version this build writes and the only one it reads.
pub const VERSION: u32 = 1;

/// A pipeline run handed to whichever backend replica is assigned its
/// partition (topic `pipeline-executions`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecutionRequest {
    pub execution_id: String,
    pub pipeline_config: Value,
    #[serde(default)]
    pub input_data: Value,
    #[serde(default)]
    pub parameters: Value,
    /// The stored pipeline run, when it is one (absent for an inline pipeline and
    /// from older producers): names the execution's trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_id: Option<String>,
}

/// One step transition or service-side progress note (topic `pipeline-progress`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProgressMessage {
    pub execution_id: String,
    /// `None` for events about the execution as a whole or one of its inputs.
    #[serde(default)]
    pub step_id: Option<String>,
    /// Which input (0-based) of the execution a step or input event is about;
    /// absent on execution-level events and from older producers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_index: Option<u32>,
    pub status: String,
    #[serde(default)]
    pub message: String,
    /// RFC 3339, UTC.
    pub timestamp: String,
    #[serde(default)]
    pub attempt: Option<u32>,
    #[serde(default)]
    pub processing_time_ms: Option<f64>,
    /// Who reported it, e.g. `imageflow-backend-api`, `imageflow-resize`.
    #[serde(default)]
    pub source: String,
}

impl ProgressMessage {
    /// A progress event stamped now; the optional fields start empty.
    pub fn new(
        execution_id: impl Into<String>,
        step_id: Option<String>,
        status: impl Into<String>,
        message: impl Into<String>,
        source: impl Into<String>,
    ) -> Self {
        Self {
            execution_id: execution_id.into(),
            step_id,
            input_index: None,
            status: status.into(),
            message: message.into(),
            timestamp: now_rfc3339(),
            attempt: None,
            processing_time_ms: None,
            source: source.into(),
        }
    }
}

/// The end of one execution (topic `pipeline-completed`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompletionMessage {
    pub execution_id: String,
    pub status: String,
    #[serde(default)]
    pub execution_time_ms: Option<f64>,
    #[serde(default)]
    pub output_path: Option<String>,
    #[serde(default)]
    pub processing_time_ms: Option<f64>,
}

/// Now as RFC 3339 in UTC with milliseconds, e.g. `2025-01-31T12:00:00.120Z`:
/// always the same width, so the strings sort like the times they name
/// (the well-known formatter trims trailing zeros of the fraction).
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.millisecond()
    )
}

#[derive(Serialize)]
struct Versioned<'a, T: ?Sized> {
    version: u32,
    #[serde(flatten)]
    body: &'a T,
}

#[derive(Deserialize)]
struct VersionOnly {
    version: Option<Value>,
}

/// `payload` as JSON with `"version": 1` first. `payload` must serialize as
/// a JSON object (a struct or a map).
pub fn encode<T: Serialize + ?Sized>(payload: &T) -> Result<Vec<u8>, EventsError> {
    serde_json::to_vec(&Versioned {
        version: VERSION,
        body: payload,
    })
    .map_err(|e| EventsError::Encode(e.to_string()))
}

/// Reads a message written by [`encode`] (by this or another client): the
/// version must be [`VERSION`]; fields this build does not know are ignored.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, EventsError> {
    let head: VersionOnly = serde_json::from_slice(bytes)
        .map_err(|e| EventsError::Decode(format!("not a JSON object: {e}")))?;
    match head.version {
        Some(Value::Number(n)) if n.as_u64() == Some(u64::from(VERSION)) => {}
        Some(found) => {
            return Err(EventsError::UnsupportedVersion {
                found: found.to_string(),
                supported: VERSION,
            });
        }
        None => {
            return Err(EventsError::UnsupportedVersion {
                found: "none (no \"version\" field)".into(),
                supported: VERSION,
            });
        }
    }
    serde_json::from_slice(bytes).map_err(|e| EventsError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    #[test]
    fn every_message_carries_version_1_first() {
        let bytes = encode(&CompletionMessage {
            execution_id: "e-1".into(),
            status: "completed".into(),
            execution_time_ms: Some(12.5),
            output_path: Some("s3://imageflow-files/out.png".into()),
            processing_time_ms: None,
        })
        .unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.starts_with(r#"{"version":1,"execution_id":"e-1""#),
            "{text}"
        );
        let value: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value["processing_time_ms"], Value::Null);
        let back: CompletionMessage = decode(&bytes).unwrap();
        assert_eq!(
            back.output_path.as_deref(),
            Some("s3://imageflow-files/out.png")
        );
    }

    #[test]
    fn the_design_field_names_round_trip() {
        let request = ExecutionRequest {
            execution_id: "e-2".into(),
            pipeline_config: json!({"steps": [{"id": "r", "type": "resize"}]}),
            input_data: json!({"input_path": "in.jpg"}),
            parameters: json!({}),
            pipeline_id: None,
        };
        let value: Value = serde_json::from_slice(&encode(&request).unwrap()).unwrap();
        for field in [
            "execution_id",
            "pipeline_config",
            "input_data",
            "parameters",
        ] {
            assert!(value.get(field).is_some(), "{field}");
        }
        assert_eq!(
            decode::<ExecutionRequest>(&encode(&request).unwrap()).unwrap(),
            request
        );

        let mut progress = ProgressMessage::new(
            "e-2",
            Some("r".into()),
            "running",
            "resizing",
            "imageflow-resize",
        );
        progress.attempt = Some(2);
        let value: Value = serde_json::from_slice(&encode(&progress).unwrap()).unwrap();
        for field in [
            "execution_id",
            "step_id",
            "status",
            "message",
            "timestamp",
            "attempt",
            "source",
        ] {
            assert!(value.get(field).is_some(), "{field}");
        }
        assert_eq!(
            decode::<ProgressMessage>(&encode(&progress).unwrap()).unwrap(),
            progress
        );
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        let ts = now_rfc3339();
        // YYYY-MM-DDTHH:MM:SS.mmmZ
        let shape: String = ts
            .chars()
            .map(|c| if c.is_ascii_digit() { 'd' } else { c })
            .collect();
        assert_eq!(shape, "dddd-dd-ddTdd:dd:dd.dddZ", "{ts}");
    }

    #[test]
    fn unknown_fields_are_ignored_and_missing_optionals_default() {
        let bytes = br#"{"version":1,"execution_id":"e","status":"failed","added_in_a_later_release":[1,2]}"#;
        let msg: CompletionMessage = decode(bytes).unwrap();
        assert_eq!(msg.status, "failed");
        assert_eq!(msg.output_path, None);
    }

    #[test]
    fn other_versions_are_refused_with_a_clear_error() {
        for (bytes, found) in [
            (
                &br#"{"version":2,"execution_id":"e","status":"x"}"#[..],
                "2",
            ),
            (
                br#"{"version":"1","execution_id":"e","status":"x"}"#,
                "\"1\"",
            ),
            (br#"{"execution_id":"e","status":"x"}"#, "none"),
        ] {
            let err = decode::<CompletionMessage>(bytes).unwrap_err();
            let text = err.to_string();
            assert!(
                matches!(err, EventsError::UnsupportedVersion { .. }),
                "{text}"
            );
            assert!(
                text.contains(found) && text.contains("supports version 1"),
                "{text}"
            );
        }
        assert!(matches!(
            decode::<CompletionMessage>(b"not json").unwrap_err(),
            EventsError::Decode(_)
        ));
    }

    #[test]
    fn a_payload_that_is_not_an_object_cannot_be_encoded() {
        assert!(matches!(
            encode(&"just a string").unwrap_err(),
            EventsError::Encode(_)
        ));
    }
}

//! The two input modes of every service (the `input` oneof of each request in
//! `proto/imageflow/v1/*.proto`): an image by object
//! reference (read from the store, output written back under the execution's
//! prefix) or by bytes (output returned inline).

use std::time::{Instant, SystemTime};

use bytes::Bytes;
use imageflow_imaging::{Encoded, ImageFormat, sniff_format};
use imageflow_proto::v1::{ImageBytes, ImageData, ProcessingResult, ProcessingStatus};
use imageflow_storage::{BucketName, ObjectKey, Store};

use crate::error::ServiceError;

/// A request's input, whichever `oneof` variant it came in.
#[derive(Debug)]
pub enum Input {
    Object(ImageData),
    Bytes(ImageBytes),
}

/// Where an input came from, which decides where its output goes.
#[derive(Clone, Debug)]
pub enum Origin {
    Bytes,
    Object { bucket: BucketName, key: ObjectKey },
}

#[derive(Debug)]
pub struct LoadedInput {
    pub data: Bytes,
    pub origin: Origin,
}

/// Reads the input of a request. `None` (no `oneof` set) is the caller's error.
pub async fn load_input(store: &Store, input: Option<Input>) -> Result<LoadedInput, ServiceError> {
    match input {
        None => Err(ServiceError::InvalidArgument(
            "no input: set input_image (an object in storage) or input_bytes (the image itself)"
                .into(),
        )),
        Some(Input::Bytes(image)) => {
            if image.data.is_empty() {
                return Err(ServiceError::InvalidArgument(
                    "input_bytes.data is empty".into(),
                ));
            }
            check_declared_format(&image.format, &image.data)?;
            Ok(LoadedInput {
                data: image.data.into(),
                origin: Origin::Bytes,
            })
        }
        Some(Input::Object(image)) => {
            let bucket = if image.bucket.is_empty() {
                store.default_bucket().clone()
            } else {
                BucketName::parse(&image.bucket)
                    .map_err(|e| field_error("input_image.bucket", e))?
            };
            // Keys come from callers: checked here, once, for every service
            // (no '..', no leading '/', no control characters, at most 1024 bytes).
            let key = ObjectKey::parse(&image.object_key)
                .map_err(|e| field_error("input_image.object_key", e))?;
            // Boxed: the S3 client's futures are deep enough to overflow the
            // compiler's layout queries (and large stacks) when nested inline.
            let object = Box::pin(store.get(&bucket, &key)).await?;
            Ok(LoadedInput {
                data: object.data,
                origin: Origin::Object { bucket, key },
            })
        }
    }
}

/// A name the caller sent that storage refuses, with the field it came in.
fn field_error(field: &str, err: imageflow_storage::StorageError) -> ServiceError {
    ServiceError::InvalidArgument(format!("{field}: {err}"))
}

/// A declared format that contradicts the bytes is refused rather than guessed
/// around: the caller has a bug worth hearing about.
fn check_declared_format(declared: &str, data: &[u8]) -> Result<(), ServiceError> {
    if declared.trim().is_empty() {
        return Ok(());
    }
    let Some(declared_format) = ImageFormat::from_name(declared) else {
        return Err(ServiceError::InvalidArgument(format!(
            "input_bytes.format {declared:?} is not supported; use JPEG, PNG or WEBP (or leave it empty)"
        )));
    };
    match sniff_format(data) {
        Some(actual) if actual != declared_format => Err(ServiceError::InvalidArgument(format!(
            "input_bytes.format says {} but the data is {}",
            declared_format.name(),
            actual.name()
        ))),
        _ => Ok(()),
    }
}

/// Accepts the caller's execution id when it is a safe single key segment, or
/// makes one up (`adhoc-<uuid>`) for requests outside any pipeline.
pub fn execution_id_or_new(execution_id: &str) -> Result<String, ServiceError> {
    if execution_id.is_empty() {
        return Ok(format!("adhoc-{}", uuid::Uuid::new_v4()));
    }
    let valid = execution_id.len() <= 128
        && execution_id != "."
        && execution_id != ".."
        && execution_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(execution_id.to_string())
    } else {
        Err(ServiceError::InvalidArgument(format!(
            "execution_id {execution_id:?} must be 1-128 characters of letters, digits, '-', '_' or '.'"
        )))
    }
}

/// `executions/{execution_id}/{source stem}_{operation}.{ext}`, or
/// `executions/{execution_id}/input-{n}/...` for input `n` of a several-input
/// execution (two inputs may share a file name). The operation tag carries
/// the parameters, so two steps of one execution never overwrite each other
/// and a retried request writes the same object again.
pub fn output_key(
    execution_id: &str,
    input_index: Option<u32>,
    source: &ObjectKey,
    operation: &str,
    format: ImageFormat,
) -> Result<ObjectKey, ServiceError> {
    let file = source.as_str().rsplit('/').next().unwrap_or("image");
    let stem = match file.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem,
        _ => file,
    };
    let folder = match input_index {
        Some(n) => format!("executions/{execution_id}/input-{n}"),
        None => format!("executions/{execution_id}"),
    };
    let key = format!("{folder}/{stem}_{operation}.{}", format.extension());
    Ok(ObjectKey::parse(&key)?)
}

/// Writes an encoded output next to its execution and describes it.
pub async fn store_output(
    store: &Store,
    bucket: &BucketName,
    key: &ObjectKey,
    encoded: Encoded,
) -> Result<ImageData, ServiceError> {
    let size = encoded.data.len() as i64;
    let meta = Box::pin(store.put(
        bucket,
        key,
        Bytes::from(encoded.data),
        encoded.format.mime(),
    ))
    .await?;
    Ok(ImageData {
        bucket: bucket.as_str().to_string(),
        object_key: key.as_str().to_string(),
        content_type: encoded.format.mime().to_string(),
        size_bytes: i64::try_from(meta.size).unwrap_or(size),
        width: to_i32(encoded.width),
        height: to_i32(encoded.height),
        created_at: Some(SystemTime::now().into()),
    })
}

/// Where the output of one request went.
#[derive(Debug)]
pub enum Output {
    Object(ImageData),
    Bytes(Vec<u8>),
    /// Nothing to return but the metadata (detection without drawing).
    None,
}

/// A COMPLETED result with the timing of the whole request.
pub fn completed(
    message: impl Into<String>,
    output: Output,
    started: Instant,
    metadata: std::collections::HashMap<String, String>,
) -> ProcessingResult {
    let (output_image, output_data) = match output {
        Output::Object(image) => (Some(image), Vec::new()),
        Output::Bytes(data) => (None, data),
        Output::None => (None, Vec::new()),
    };
    ProcessingResult {
        status: ProcessingStatus::Completed as i32,
        message: message.into(),
        output_image,
        metadata,
        processed_at: Some(SystemTime::now().into()),
        processing_time_seconds: started.elapsed().as_secs_f64(),
        output_data,
    }
}

/// A FAILED result, used for one failed item of a stream: the stream goes on.
pub fn failed(err: &ServiceError, started: Instant) -> ProcessingResult {
    ProcessingResult {
        status: ProcessingStatus::Failed as i32,
        message: err.public_message(),
        output_image: None,
        metadata: [(
            "grpc_code".to_string(),
            crate::error::code_name(err.code()).to_string(),
        )]
        .into_iter()
        .collect(),
        processed_at: Some(SystemTime::now().into()),
        processing_time_seconds: started.elapsed().as_secs_f64(),
        output_data: Vec::new(),
    }
}

/// Image sides are at most a few tens of thousands of pixels (the limits say so).
pub fn to_i32(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execution_ids_are_single_safe_segments() {
        assert_eq!(execution_id_or_new("exec-42_a.b").unwrap(), "exec-42_a.b");
        assert!(execution_id_or_new("").unwrap().starts_with("adhoc-"));
        for bad in ["..", ".", "a/b", "a b", "x\n", &"e".repeat(129)] {
            assert!(execution_id_or_new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn output_keys_live_under_the_execution() {
        let source = ObjectKey::parse("uploads/2026/cat.photo.jpg").unwrap();
        let key = output_key("exec-1", None, &source, "resize_800x450", ImageFormat::Png).unwrap();
        assert_eq!(
            key.as_str(),
            "executions/exec-1/cat.photo_resize_800x450.png"
        );
        let source = ObjectKey::parse("noext").unwrap();
        let key = output_key("e", None, &source, "gaussian_1", ImageFormat::Jpeg).unwrap();
        assert_eq!(key.as_str(), "executions/e/noext_gaussian_1.jpg");
        let key = output_key("e", Some(3), &source, "detect", ImageFormat::Png).unwrap();
        assert_eq!(key.as_str(), "executions/e/input-3/noext_detect.png");
    }

    #[test]
    fn a_declared_format_must_match_the_bytes() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
        assert!(check_declared_format("", png).is_ok());
        assert!(check_declared_format("png", png).is_ok());
        let err = check_declared_format("JPEG", png).unwrap_err();
        assert!(
            err.to_string().contains("says JPEG but the data is PNG"),
            "{err}"
        );
        assert!(check_declared_format("TIFF", png).is_err());
    }

    #[test]
    fn failed_results_name_the_grpc_code() {
        let result = failed(&ServiceError::InvalidArgument("bad".into()), Instant::now());
        assert_eq!(result.status, ProcessingStatus::Failed as i32);
        assert_eq!(result.metadata["grpc_code"], "INVALID_ARGUMENT");
    }
}

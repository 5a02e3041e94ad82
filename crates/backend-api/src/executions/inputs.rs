//! What an execution runs on and where its results are copied: the request's
//! `inputs` (uploaded file ids or object references) or, when it names none,
//! the pipeline's `globalParameters.inputPath`; and `outputPath`. Every
//! location is checked against the buckets this backend may use, so an API
//! caller cannot make it read or write any bucket its credentials reach.

use futures::{StreamExt, TryStreamExt};
use imageflow_storage::{BucketName, ObjectKey, Store};

use super::AcceptError;
use crate::{db::Db, engine::OutputTarget, model::PipelineDefinition};

/// Most inputs one execution takes (explicit, or found under a prefix).
pub const MAX_INPUTS: usize = 100;

/// Most keys read when expanding a prefix, so a prefix over a huge bucket
/// is refused quickly instead of listed for minutes.
const MAX_LISTED_KEYS: usize = 10_000;

/// File names taken as images when a prefix is expanded (anything else under
/// it, e.g. a manifest, is skipped rather than failed).
const IMAGE_EXTENSIONS: [&str; 8] = ["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif"];

/// Object existence checks in flight at once while accepting.
const HEAD_CONCURRENCY: usize = 8;

/// The buckets executions may read inputs from and copy outputs to: the
/// default bucket plus `ALLOWED_BUCKETS`.
#[derive(Clone, Debug)]
pub struct Buckets {
    default: String,
    allowed: Vec<String>,
}

impl Buckets {
    pub fn new(default: &str, extra: &[String]) -> Self {
        let mut allowed = vec![default.to_string()];
        allowed.extend(extra.iter().filter(|b| *b != default).cloned());
        Self {
            default: default.to_string(),
            allowed,
        }
    }

    /// Whether executions may read from or write to `bucket`; the error names `field`.
    pub(crate) fn check(&self, bucket: &str, field: &str) -> Result<BucketName, String> {
        let name = BucketName::parse(bucket).map_err(|e| format!("{field}: {e}"))?;
        if self.allowed.iter().any(|b| b == bucket) {
            Ok(name)
        } else {
            Err(format!(
                "{field}: bucket {bucket:?} is not one this backend may use; allowed: {} \
                 (the default bucket plus ALLOWED_BUCKETS)",
                self.allowed.join(", ")
            ))
        }
    }
}

/// A place in the store an execution names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// An uploaded file, by its file_id.
    File(String),
    Object {
        bucket: BucketName,
        key: ObjectKey,
    },
    /// Every object whose key starts with `prefix` (empty or ending in `/`).
    Prefix {
        bucket: BucketName,
        prefix: String,
    },
}

/// Reads `s3://bucket/key`, `s3://bucket/prefix/`, or (when `bare_keys`) a
/// key or `prefix/` in the default bucket; without `bare_keys` anything else
/// must be a file_id.
pub fn parse_location(
    text: &str,
    field: &str,
    bare_keys: bool,
    buckets: &Buckets,
) -> Result<Location, String> {
    let (bucket, rest) = match text.strip_prefix("s3://") {
        Some(url) => url.split_once('/').unwrap_or((url, "")),
        None if bare_keys => (buckets.default.as_str(), text),
        None if crate::valid_id(text) => return Ok(Location::File(text.to_string())),
        None => {
            return Err(format!(
                "{field}: {text:?} is neither a file_id (from POST /v1/files) nor an object \
                 reference (s3://bucket/key, or s3://bucket/prefix/ for every image under it)"
            ));
        }
    };
    let bucket = buckets.check(bucket, field)?;
    if rest.is_empty() || rest.ends_with('/') {
        if !rest.is_empty() {
            ObjectKey::parse(rest.trim_end_matches('/'))
                .map_err(|e| format!("{field}: prefix {rest:?}: {e}"))?;
        }
        return Ok(Location::Prefix {
            bucket,
            prefix: rest.to_string(),
        });
    }
    let key = ObjectKey::parse(rest).map_err(|e| format!("{field}: {e}"))?;
    Ok(Location::Object { bucket, key })
}

/// `outputPath` as a target: always a prefix (`results` means `results/`).
pub fn output_target(
    definition: &PipelineDefinition,
    buckets: &Buckets,
) -> Result<Option<OutputTarget>, String> {
    let Some(path) = global_path(definition, "outputPath") else {
        return Ok(None);
    };
    let field = "globalParameters.outputPath";
    let as_prefix =
        if path.ends_with('/') || path.strip_prefix("s3://").is_some_and(|u| !u.contains('/')) {
            path.to_string()
        } else {
            format!("{path}/")
        };
    match parse_location(&as_prefix, field, true, buckets)? {
        Location::Prefix { bucket, prefix } => Ok(Some(OutputTarget { bucket, prefix })),
        // A prefix is all parse_location makes of a path ending in '/'.
        other => Err(format!("{field}: {other:?} is not a prefix")),
    }
}

/// Checks a definition's `inputPath` and `outputPath` (syntax and buckets),
/// for pipelines as they are saved and executions as they are accepted.
pub fn check_paths(definition: &PipelineDefinition, buckets: &Buckets) -> Result<(), String> {
    if let Some(path) = global_path(definition, "inputPath") {
        parse_location(path, "globalParameters.inputPath", true, buckets)?;
    }
    output_target(definition, buckets).map(|_| ())
}

fn global_path<'a>(definition: &'a PipelineDefinition, key: &str) -> Option<&'a str> {
    definition
        .global_parameters
        .get(key)
        .and_then(|v| v.as_str())
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// One input, resolved to its object (also as a queue message lists it).
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct Resolved {
    /// As named: a file_id or `s3://bucket/key`.
    pub source: String,
    pub bucket: String,
    pub object_key: String,
}

/// The objects an execution runs on: its `inputs`, or its pipeline's
/// `inputPath` when it names none. Every one exists (a missing one is a 404
/// naming it), at most [`MAX_INPUTS`].
pub async fn resolve(
    db: &Db,
    store: &Store,
    buckets: &Buckets,
    inputs: &[String],
    definition: &PipelineDefinition,
) -> Result<Vec<Resolved>, AcceptError> {
    let named: Vec<(String, String)> = if inputs.is_empty() {
        let Some(path) = global_path(definition, "inputPath") else {
            return Err(AcceptError::Invalid(
                "inputs is empty and the pipeline has no globalParameters.inputPath: name at \
                 least one file_id or s3://bucket/key"
                    .into(),
            ));
        };
        vec![("globalParameters.inputPath".into(), path.to_string())]
    } else {
        if inputs.len() > MAX_INPUTS {
            return Err(too_many(inputs.len(), "inputs"));
        }
        inputs
            .iter()
            .enumerate()
            .map(|(i, text)| (format!("inputs[{i}]"), text.clone()))
            .collect()
    };
    let mut resolved = Vec::new();
    let mut objects = Vec::new();
    for (field, text) in &named {
        let bare = field.starts_with("globalParameters");
        match parse_location(text, field, bare, buckets).map_err(AcceptError::Invalid)? {
            Location::File(id) => {
                let file = db.get_file(&id).await?.ok_or_else(|| {
                    AcceptError::NotFound(format!("{field}: no file with id {id:?}"))
                })?;
                resolved.push(Some(Resolved {
                    source: id,
                    bucket: file.bucket,
                    object_key: file.object_key,
                }));
            }
            Location::Object { bucket, key } => {
                objects.push((resolved.len(), field.clone(), bucket, key));
                resolved.push(None);
            }
            Location::Prefix { bucket, prefix } => {
                for key in images_under(store, &bucket, &prefix, field).await? {
                    resolved.push(Some(object(&bucket, &key)));
                }
            }
        }
        if resolved.len() > MAX_INPUTS {
            return Err(too_many(resolved.len(), field));
        }
    }
    // Named objects must exist: checked up front, a few at a time, so a typo
    // is a 404 now rather than a failed step later.
    let found: Vec<(usize, Resolved)> = futures::stream::iter(objects)
        .map(|(slot, field, bucket, key)| async move {
            match store.head(&bucket, &key).await {
                Ok(_) => Ok((slot, object(&bucket, key.as_str()))),
                Err(e) if e.is_not_found() => Err(AcceptError::NotFound(format!(
                    "{field}: no object s3://{}/{}",
                    bucket.as_str(),
                    key.as_str()
                ))),
                Err(e) => Err(AcceptError::Storage(format!("{field}: {e}"))),
            }
        })
        .buffer_unordered(HEAD_CONCURRENCY)
        .try_collect()
        .await?;
    for (slot, input) in found {
        resolved[slot] = Some(input);
    }
    Ok(resolved.into_iter().flatten().collect())
}

fn object(bucket: &BucketName, key: &str) -> Resolved {
    Resolved {
        source: format!("s3://{}/{key}", bucket.as_str()),
        bucket: bucket.as_str().to_string(),
        object_key: key.to_string(),
    }
}

fn too_many(count: usize, field: &str) -> AcceptError {
    AcceptError::Invalid(format!(
        "{field}: {count} inputs; an execution takes at most {MAX_INPUTS}: start several \
         executions or name a narrower prefix"
    ))
}

/// The image keys under a prefix, sorted; none is a 404.
async fn images_under(
    store: &Store,
    bucket: &BucketName,
    prefix: &str,
    field: &str,
) -> Result<Vec<String>, AcceptError> {
    let (keys, more) = store
        .list_first(bucket, prefix, MAX_LISTED_KEYS)
        .await
        .map_err(|e| {
            if e.is_not_found() {
                AcceptError::NotFound(format!("{field}: no bucket {:?}", bucket.as_str()))
            } else {
                AcceptError::Storage(format!("{field}: {e}"))
            }
        })?;
    if more {
        return Err(AcceptError::Invalid(format!(
            "{field}: more than {MAX_LISTED_KEYS} objects under s3://{}/{prefix}; name a \
             narrower prefix",
            bucket.as_str()
        )));
    }
    let images: Vec<String> = keys.into_iter().filter(|k| is_image_name(k)).collect();
    if images.is_empty() {
        return Err(AcceptError::NotFound(format!(
            "{field}: no images under s3://{}/{prefix} (looked for {})",
            bucket.as_str(),
            IMAGE_EXTENSIONS.join(", ")
        )));
    }
    Ok(images)
}

fn is_image_name(key: &str) -> bool {
    key.rsplit_once('.').is_some_and(|(stem, ext)| {
        !stem.ends_with('/') && IMAGE_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buckets() -> Buckets {
        Buckets::new("imageflow", &["camera-drop".to_string()])
    }

    fn bucket(name: &str) -> BucketName {
        BucketName::parse(name).unwrap()
    }

    #[test]
    fn locations_are_files_objects_or_prefixes() {
        let b = buckets();
        assert_eq!(
            parse_location("3f2a-1", "inputs[0]", false, &b),
            Ok(Location::File("3f2a-1".into()))
        );
        assert_eq!(
            parse_location("s3://camera-drop/2026/a.jpg", "inputs[0]", false, &b),
            Ok(Location::Object {
                bucket: bucket("camera-drop"),
                key: ObjectKey::parse("2026/a.jpg").unwrap()
            })
        );
        assert_eq!(
            parse_location("s3://camera-drop/2026/", "x", false, &b),
            Ok(Location::Prefix {
                bucket: bucket("camera-drop"),
                prefix: "2026/".into()
            })
        );
        assert_eq!(
            parse_location("s3://camera-drop", "x", false, &b),
            Ok(Location::Prefix {
                bucket: bucket("camera-drop"),
                prefix: String::new()
            })
        );
        // Bare keys are the default bucket's, for the pipeline's paths only.
        assert_eq!(
            parse_location("uploads/in.jpg", "globalParameters.inputPath", true, &b),
            Ok(Location::Object {
                bucket: bucket("imageflow"),
                key: ObjectKey::parse("uploads/in.jpg").unwrap()
            })
        );
        let err = parse_location("uploads/in.jpg", "inputs[1]", false, &b).unwrap_err();
        assert!(
            err.starts_with("inputs[1]: \"uploads/in.jpg\" is neither a file_id"),
            "{err}"
        );
    }

    #[test]
    fn buckets_outside_the_allowed_ones_are_refused() {
        let err = parse_location("s3://payroll/x.jpg", "inputs[0]", false, &buckets()).unwrap_err();
        assert!(
            err.contains("bucket \"payroll\" is not one this backend may use"),
            "{err}"
        );
        assert!(err.contains("allowed: imageflow, camera-drop"), "{err}");
        let err = parse_location("s3://Bad_Bucket/x.jpg", "inputs[0]", false, &buckets());
        assert!(err.is_err());
        let err = parse_location(
            "s3://imageflow/../etc/passwd",
            "inputs[0]",
            false,
            &buckets(),
        );
        assert!(err.is_err(), "a key with .. segments must be refused");
    }

    #[test]
    fn output_paths_are_prefixes() {
        let b = buckets();
        let with = |path: &str| {
            let definition: PipelineDefinition = serde_json::from_value(serde_json::json!({
                "pipelineName": "p", "steps": [],
                "globalParameters": {"outputPath": path}
            }))
            .unwrap();
            output_target(&definition, &b)
        };
        let target = |bucket_name: &str, prefix: &str| {
            Ok(Some(OutputTarget {
                bucket: bucket(bucket_name),
                prefix: prefix.into(),
            }))
        };
        assert_eq!(with("results"), target("imageflow", "results/"));
        assert_eq!(with("s3://camera-drop/out/"), target("camera-drop", "out/"));
        assert_eq!(with("s3://camera-drop"), target("camera-drop", ""));
        assert!(
            with("s3://elsewhere/out/")
                .unwrap_err()
                .contains("not one this backend may use")
        );
    }

    #[test]
    fn only_image_names_are_taken_from_a_prefix() {
        assert!(is_image_name("drop/a.JPG"));
        assert!(is_image_name("drop/b.webp"));
        assert!(!is_image_name("drop/manifest.json"));
        assert!(!is_image_name("drop/noext"));
        assert!(!is_image_name("drop/.jpg/"));
    }
}

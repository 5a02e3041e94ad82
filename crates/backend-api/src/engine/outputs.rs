//! A pipeline's `outputPath`: each input's final images are copied under a
//! prefix another system may watch, besides staying under
//! `executions/{execution_id}/`.

use imageflow_proto::v1::ImageData;
use imageflow_storage::{BucketName, ObjectKey, Store};

/// Where final images are copied: `bucket` and a key prefix (empty or
/// ending in `/`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputTarget {
    pub bucket: BucketName,
    pub prefix: String,
}

impl OutputTarget {
    /// The copy's key: the image's path below `executions/` (so it keeps its
    /// execution and input folders and never collides with another's), or
    /// `{execution_id}/{its whole key}` for an image from elsewhere.
    pub fn key_for(&self, execution_id: &str, source_key: &str) -> String {
        let relative = match source_key.strip_prefix("executions/") {
            Some(rest) => rest.to_string(),
            None => format!("{execution_id}/{source_key}"),
        };
        format!("{}{relative}", self.prefix)
    }

    /// Copies `images` (each `bucket`/`object_key`, the bucket empty for
    /// `default_bucket`) and returns where they went as `bucket/key`. The
    /// first failure is the error, naming the image; the store retries
    /// transient failures itself.
    pub async fn copy(
        &self,
        store: &Store,
        default_bucket: &str,
        execution_id: &str,
        images: &[ImageData],
    ) -> Result<Vec<String>, String> {
        let mut copied = Vec::with_capacity(images.len());
        for image in images {
            let bucket = if image.bucket.is_empty() {
                default_bucket
            } else {
                &image.bucket
            };
            let describe = |e: &dyn std::fmt::Display| {
                format!(
                    "could not copy {bucket}/{} to outputPath s3://{}/{}: {e}",
                    image.object_key,
                    self.bucket.as_str(),
                    self.prefix
                )
            };
            let from_bucket = BucketName::parse(bucket).map_err(|e| describe(&e))?;
            let from_key = ObjectKey::parse(&image.object_key).map_err(|e| describe(&e))?;
            let to_key = ObjectKey::parse(&self.key_for(execution_id, &image.object_key))
                .map_err(|e| describe(&e))?;
            let object = store
                .get(&from_bucket, &from_key)
                .await
                .map_err(|e| describe(&e))?;
            store
                .put(
                    &self.bucket,
                    &to_key,
                    object.data,
                    object.meta.content_type.as_deref().unwrap_or_default(),
                )
                .await
                .map_err(|e| describe(&e))?;
            copied.push(format!("{}/{}", self.bucket.as_str(), to_key.as_str()));
        }
        Ok(copied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_keep_their_path_below_executions() {
        let target = OutputTarget {
            bucket: BucketName::parse("watched").unwrap(),
            prefix: "results/".into(),
        };
        assert_eq!(
            target.key_for("e1", "executions/e1/input-2/cat_resize_100x80.jpg"),
            "results/e1/input-2/cat_resize_100x80.jpg"
        );
        assert_eq!(
            target.key_for("e1", "uploads/2026/cat.jpg"),
            "results/e1/uploads/2026/cat.jpg"
        );
        let root = OutputTarget {
            prefix: String::new(),
            ..target
        };
        assert_eq!(
            root.key_for("e1", "executions/e1/cat_detect.png"),
            "e1/cat_detect.png"
        );
    }
}

//! Local-filesystem backend: the embedded default for local runs.
//!
//! Layout under `root`:
//!
//! ```text
//! root/<bucket>/<key>                   object bytes, exactly as put (open them with any viewer)
//! root/.imageflow-meta/<bucket>/<key>   content type of the object (one line), the "sidecar"
//! ```
//!
//! `.imageflow-meta` can never be a bucket (bucket names start with a letter or digit), so
//! the two trees never collide. The data file is authoritative: an object exists when its
//! data file does. When the sidecar is missing (a file copied in by hand) the content type
//! is guessed from the key's extension.
//!
//! Writes go to a temporary file (`.imageflow-tmp-<uuid>`) in the target directory, are
//! flushed with `fsync`, then renamed over the target, so a reader never sees a partial
//! object and a crash leaves at most a stray temporary file (never listed). The sidecar
//! is written the same way just after the data file (so, for a moment, or after a crash
//! between the two renames, an overwritten object may show its previous content type).
//!
//! Limitation compared to S3: a key cannot be both an object and a prefix of other keys
//! (`a` and `a/b`), because `a` would have to be a file and a directory at once; such a put
//! fails with [`StorageError::Other`] naming the conflict. Deleting an object removes the
//! directories it leaves empty, so the conflict lasts only while the other key exists.

use std::io;
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::StorageError;
use crate::names::{BucketName, ObjectKey};
use crate::{Object, ObjectMeta};

/// Directory (under root) holding the content-type sidecars.
pub(crate) const META_DIR: &str = ".imageflow-meta";
/// Name prefix of in-flight temporary files; keys whose segments start with it are refused.
pub(crate) const TMP_PREFIX: &str = ".imageflow-tmp-";

#[derive(Debug)]
pub(crate) struct FsBackend {
    root: PathBuf,
    max_object_bytes: u64,
}

impl FsBackend {
    pub(crate) fn new(root: PathBuf, max_object_bytes: u64) -> Self {
        Self {
            root,
            max_object_bytes,
        }
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    fn bucket_dir(&self, bucket: &BucketName) -> PathBuf {
        self.root.join(bucket.as_str())
    }

    fn meta_bucket_dir(&self, bucket: &BucketName) -> PathBuf {
        self.root.join(META_DIR).join(bucket.as_str())
    }

    /// `base/<segments of key>`, checked once more (defence in depth) to stay below `base`.
    fn key_path(base: &Path, key: &ObjectKey) -> Result<PathBuf, StorageError> {
        let mut path = base.to_path_buf();
        let mut segments = 0usize;
        for segment in key.segments() {
            if segment.starts_with(TMP_PREFIX) {
                return Err(StorageError::InvalidKey(format!(
                    "{:?}: segments starting with {TMP_PREFIX:?} are reserved by the \
                     filesystem backend",
                    key.as_str()
                )));
            }
            path.push(segment);
            segments += 1;
        }
        let escapes = match path.strip_prefix(base) {
            Ok(rel) => {
                rel.components().count() != segments
                    || !rel.components().all(|c| matches!(c, Component::Normal(_)))
            }
            Err(_) => true,
        };
        if escapes {
            return Err(StorageError::InvalidKey(format!(
                "{:?} does not map to a path inside the bucket directory",
                key.as_str()
            )));
        }
        Ok(path)
    }

    fn paths(
        &self,
        bucket: &BucketName,
        key: &ObjectKey,
    ) -> Result<(PathBuf, PathBuf), StorageError> {
        Ok((
            Self::key_path(&self.bucket_dir(bucket), key)?,
            Self::key_path(&self.meta_bucket_dir(bucket), key)?,
        ))
    }

    async fn require_bucket(&self, bucket: &BucketName) -> Result<(), StorageError> {
        let dir = self.bucket_dir(bucket);
        match tokio::fs::metadata(&dir).await {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(StorageError::Other(format!(
                "bucket path {} exists but is not a directory",
                dir.display()
            ))),
            Err(e) if is_missing(&e) => Err(StorageError::bucket_not_found(bucket)),
            Err(e) => Err(io_error("stat bucket", &dir, e)),
        }
    }

    /// NotFound for the object, or for its bucket when that is what is missing.
    async fn not_found(&self, bucket: &BucketName, key: &ObjectKey) -> StorageError {
        match self.require_bucket(bucket).await {
            Ok(()) => StorageError::object_not_found(bucket, key),
            Err(e) => e,
        }
    }

    async fn content_type(meta_path: &Path, key: &ObjectKey) -> Option<String> {
        match tokio::fs::read_to_string(meta_path).await {
            Ok(s) => Some(s.trim().to_owned()).filter(|s| !s.is_empty()),
            Err(_) => guess_content_type(key.as_str()).map(str::to_owned),
        }
    }

    pub(crate) async fn head(
        &self,
        bucket: &BucketName,
        key: &ObjectKey,
    ) -> Result<ObjectMeta, StorageError> {
        let (data_path, meta_path) = self.paths(bucket, key)?;
        let metadata = match tokio::fs::metadata(&data_path).await {
            Ok(m) if m.is_file() => m,
            Ok(_) => return Err(self.not_found(bucket, key).await),
            Err(e) if is_missing(&e) => return Err(self.not_found(bucket, key).await),
            Err(e) => return Err(io_error("stat", &data_path, e)),
        };
        Ok(ObjectMeta {
            size: metadata.len(),
            content_type: Self::content_type(&meta_path, key).await,
        })
    }

    pub(crate) async fn get(
        &self,
        bucket: &BucketName,
        key: &ObjectKey,
    ) -> Result<Object, StorageError> {
        let (data_path, meta_path) = self.paths(bucket, key)?;
        let mut file = match tokio::fs::File::open(&data_path).await {
            Ok(f) => f,
            Err(e) if is_missing(&e) => return Err(self.not_found(bucket, key).await),
            Err(e) => return Err(io_error("open", &data_path, e)),
        };
        // Size from the open handle: the file read below is the one measured here even if
        // a concurrent put renames a new file over the path.
        let metadata = file
            .metadata()
            .await
            .map_err(|e| io_error("stat", &data_path, e))?;
        if !metadata.is_file() {
            return Err(self.not_found(bucket, key).await);
        }
        let limit = self.max_object_bytes;
        if metadata.len() > limit {
            return Err(StorageError::TooLarge {
                size: metadata.len(),
                limit,
            });
        }
        let capacity = usize::try_from(metadata.len()).unwrap_or(0);
        let mut data = Vec::with_capacity(capacity);
        (&mut file)
            .take(limit.saturating_add(1))
            .read_to_end(&mut data)
            .await
            .map_err(|e| io_error("read", &data_path, e))?;
        let size = data.len() as u64;
        if size > limit {
            return Err(StorageError::TooLarge { size, limit });
        }
        Ok(Object {
            data: Bytes::from(data),
            meta: ObjectMeta {
                size,
                content_type: Self::content_type(&meta_path, key).await,
            },
        })
    }

    pub(crate) async fn put(
        &self,
        bucket: &BucketName,
        key: &ObjectKey,
        data: &Bytes,
        content_type: Option<&str>,
    ) -> Result<ObjectMeta, StorageError> {
        let (data_path, meta_path) = self.paths(bucket, key)?;
        self.require_bucket(bucket).await?;
        // Data first: a conflict or failure here leaves no orphan sidecar behind.
        write_atomic(&data_path, data)
            .await
            .map_err(|e| put_error(&data_path, key, e))?;
        match content_type {
            Some(ct) => write_atomic(&meta_path, ct.as_bytes()).await,
            None => remove_if_present(&meta_path).await,
        }
        .map_err(|e| put_error(&meta_path, key, e))?;
        Ok(ObjectMeta {
            size: data.len() as u64,
            content_type: content_type.map(str::to_owned),
        })
    }

    pub(crate) async fn delete(
        &self,
        bucket: &BucketName,
        key: &ObjectKey,
    ) -> Result<(), StorageError> {
        let (data_path, meta_path) = self.paths(bucket, key)?;
        self.require_bucket(bucket).await?;
        match tokio::fs::metadata(&data_path).await {
            // A directory is a prefix of other keys, not an object: nothing to delete.
            Ok(m) if m.is_dir() => return Ok(()),
            _ => {}
        }
        remove_if_present(&data_path)
            .await
            .map_err(|e| io_error("remove", &data_path, e))?;
        remove_if_present(&meta_path)
            .await
            .map_err(|e| io_error("remove", &meta_path, e))?;
        remove_empty_parents(&data_path, &self.bucket_dir(bucket)).await;
        remove_empty_parents(&meta_path, &self.meta_bucket_dir(bucket)).await;
        Ok(())
    }

    /// Sorted keys under `prefix`; stops walking once it has more than
    /// `max` (the caller truncates).
    pub(crate) async fn list(
        &self,
        bucket: &BucketName,
        prefix: &str,
        max: usize,
    ) -> Result<Vec<String>, StorageError> {
        self.require_bucket(bucket).await?;
        let bucket_dir = self.bucket_dir(bucket);
        let mut keys = Vec::new();
        // (directory, its key prefix ending in '/' or empty for the bucket itself)
        let mut pending = vec![(bucket_dir, String::new())];
        while let Some((dir, dir_key)) = pending.pop() {
            if keys.len() > max {
                break;
            }
            let mut entries = match tokio::fs::read_dir(&dir).await {
                Ok(entries) => entries,
                // Removed by a concurrent delete since we saw it.
                Err(e) if is_missing(&e) => continue,
                Err(e) => return Err(io_error("list", &dir, e)),
            };
            while let Some(entry) = entries
                .next_entry()
                .await
                .map_err(|e| io_error("list", &dir, e))?
            {
                let Ok(name) = entry.file_name().into_string() else {
                    continue; // not UTF-8: cannot be a key put through this API
                };
                if name.starts_with(TMP_PREFIX) {
                    continue;
                }
                let Ok(file_type) = entry.file_type().await else {
                    continue;
                };
                let key = format!("{dir_key}{name}");
                if file_type.is_dir() {
                    let sub = format!("{key}/");
                    if sub.starts_with(prefix) || prefix.starts_with(&sub) {
                        pending.push((entry.path(), sub));
                    }
                } else if file_type.is_file()
                    && key.starts_with(prefix)
                    && ObjectKey::parse(&key).is_ok()
                {
                    keys.push(key);
                }
            }
        }
        keys.sort_unstable();
        Ok(keys)
    }

    pub(crate) async fn ensure_bucket(&self, bucket: &BucketName) -> Result<(), StorageError> {
        let dir = self.bucket_dir(bucket);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| io_error("create bucket directory", &dir, e))?;
        self.require_bucket(bucket).await
    }
}

/// Writes `bytes` to `path` atomically: temporary file in the same directory, fsync,
/// rename over `path`, fsync of the directory (best effort).
async fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("object path has no parent directory"))?;
    // A concurrent delete may remove a directory we just created (it prunes empty
    // directories); creating it again and retrying a couple of times settles that race.
    let mut tries = 0;
    let (tmp, mut file) = loop {
        tries += 1;
        tokio::fs::create_dir_all(dir).await?;
        let tmp = dir.join(format!("{TMP_PREFIX}{}", uuid::Uuid::new_v4().simple()));
        match tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .await
        {
            Ok(file) => break (TempFile(Some(tmp)), file),
            Err(e) if e.kind() == io::ErrorKind::NotFound && tries < 3 => continue,
            Err(e) => return Err(e),
        }
    };
    file.write_all(bytes).await?;
    file.sync_all().await?;
    drop(file);
    tokio::fs::rename(tmp.path(), path).await?;
    tmp.disarm();
    if let Ok(d) = tokio::fs::File::open(dir).await {
        let _ = d.sync_all().await;
    }
    Ok(())
}

/// Removes the temporary file when a write fails or its future is dropped midway.
struct TempFile(Option<PathBuf>);

impl TempFile {
    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            // One unlink, only on the failure path; not worth a blocking-pool hop.
            let _ = std::fs::remove_file(path);
        }
    }
}

async fn remove_if_present(path: &Path) -> io::Result<()> {
    match tokio::fs::remove_file(path).await {
        Err(e) if !is_missing(&e) => Err(e),
        _ => Ok(()),
    }
}

/// Removes the now-empty directories between `path` and `stop` (exclusive), bottom up.
async fn remove_empty_parents(path: &Path, stop: &Path) {
    let mut dir = path.parent();
    while let Some(d) = dir {
        if d == stop || !d.starts_with(stop) {
            break;
        }
        // Fails (and stops) at the first directory that is not empty.
        if tokio::fs::remove_dir(d).await.is_err() {
            break;
        }
        dir = d.parent();
    }
}

/// File missing, or a path component is a file (ENOTDIR): either way, no such object.
fn is_missing(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

fn put_error(path: &Path, key: &ObjectKey, e: io::Error) -> StorageError {
    match e.kind() {
        io::ErrorKind::NotADirectory
        | io::ErrorKind::AlreadyExists
        | io::ErrorKind::IsADirectory
        | io::ErrorKind::DirectoryNotEmpty => StorageError::Other(format!(
            "key {:?} conflicts with an existing key on the filesystem backend (a key cannot \
             be both an object and a prefix of other keys): {e}",
            key.as_str()
        )),
        _ => io_error("write", path, e),
    }
}

fn io_error(what: &str, path: &Path, e: io::Error) -> StorageError {
    match e.kind() {
        io::ErrorKind::PermissionDenied => {
            StorageError::AccessDenied(format!("{what} {}: {e}", path.display()))
        }
        io::ErrorKind::InvalidFilename => {
            StorageError::InvalidKey(format!("{what} {}: {e}", path.display()))
        }
        _ => StorageError::Other(format!("{what} {}: {e}", path.display())),
    }
}

/// Content type from a key's extension, for objects without a sidecar.
pub(crate) fn guess_content_type(key: &str) -> Option<&'static str> {
    let name = key.rsplit('/').next().unwrap_or(key);
    let (_, ext) = name.rsplit_once('.')?;
    Some(match ext.to_ascii_lowercase().as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "bmp" => "image/bmp",
        "tif" | "tiff" => "image/tiff",
        "avif" => "image/avif",
        "json" => "application/json",
        "txt" => "text/plain",
        "onnx" => "application/octet-stream",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> ObjectKey {
        ObjectKey::parse(s).unwrap()
    }

    #[test]
    fn key_paths_stay_below_base() {
        let base = Path::new("/srv/data/bucket");
        assert_eq!(
            FsBackend::key_path(base, &key("a/b/c.png")).unwrap(),
            PathBuf::from("/srv/data/bucket/a/b/c.png")
        );
        // Names that look odd but are plain file names on unix.
        assert_eq!(
            FsBackend::key_path(base, &key("..x/x../.hidden")).unwrap(),
            PathBuf::from("/srv/data/bucket/..x/x../.hidden")
        );
        assert!(matches!(
            FsBackend::key_path(base, &key("a/.imageflow-tmp-123")),
            Err(StorageError::InvalidKey(_))
        ));
    }

    #[test]
    fn guesses_content_types() {
        assert_eq!(guess_content_type("a/b.JPG"), Some("image/jpeg"));
        assert_eq!(guess_content_type("x.png"), Some("image/png"));
        assert_eq!(guess_content_type("x.webp"), Some("image/webp"));
        assert_eq!(guess_content_type("dir.png/noext"), None);
        assert_eq!(guess_content_type("x.unknown"), None);
    }

    #[tokio::test]
    async fn put_leaves_no_temporary_files_and_sidecar_is_separate() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FsBackend::new(dir.path().to_path_buf(), 1024);
        let bucket = BucketName::parse("bkt").unwrap();
        fs.ensure_bucket(&bucket).await.unwrap();
        fs.put(
            &bucket,
            &key("a/b.bin"),
            &Bytes::from_static(b"xyz"),
            Some("application/x-test"),
        )
        .await
        .unwrap();
        let data_dir = dir.path().join("bkt/a");
        let names: Vec<_> = std::fs::read_dir(&data_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["b.bin".to_owned()]);
        assert_eq!(std::fs::read(data_dir.join("b.bin")).unwrap(), b"xyz");
        assert_eq!(
            std::fs::read_to_string(dir.path().join(META_DIR).join("bkt/a/b.bin")).unwrap(),
            "application/x-test"
        );
        // Delete prunes the empty directories of both trees.
        fs.delete(&bucket, &key("a/b.bin")).await.unwrap();
        assert!(!data_dir.exists());
        assert!(!dir.path().join(META_DIR).join("bkt/a").exists());
        assert!(dir.path().join("bkt").is_dir());
    }

    #[tokio::test]
    async fn stray_temp_files_are_not_listed_and_missing_sidecar_guesses() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FsBackend::new(dir.path().to_path_buf(), 1024);
        let bucket = BucketName::parse("bkt").unwrap();
        fs.ensure_bucket(&bucket).await.unwrap();
        std::fs::write(dir.path().join("bkt/.imageflow-tmp-dead"), b"partial").unwrap();
        std::fs::write(dir.path().join("bkt/copied.png"), b"png").unwrap();
        assert_eq!(
            fs.list(&bucket, "", usize::MAX).await.unwrap(),
            vec!["copied.png"]
        );
        let meta = fs.head(&bucket, &key("copied.png")).await.unwrap();
        assert_eq!(meta.size, 3);
        assert_eq!(meta.content_type.as_deref(), Some("image/png"));
    }

    #[tokio::test]
    async fn object_and_prefix_conflict_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FsBackend::new(dir.path().to_path_buf(), 1024);
        let bucket = BucketName::parse("bkt").unwrap();
        fs.ensure_bucket(&bucket).await.unwrap();
        fs.put(&bucket, &key("a"), &Bytes::from_static(b"1"), None)
            .await
            .unwrap();
        let err = fs
            .put(&bucket, &key("a/b"), &Bytes::from_static(b"2"), None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("conflicts"), "{err}");
        // A directory is not an object.
        fs.delete(&bucket, &key("a")).await.unwrap();
        fs.put(&bucket, &key("a/b"), &Bytes::from_static(b"2"), None)
            .await
            .unwrap();
        assert!(fs.get(&bucket, &key("a")).await.unwrap_err().is_not_found());
        let err = fs
            .put(&bucket, &key("a"), &Bytes::from_static(b"1"), None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("conflicts"), "{err}");
        // ...and deleting "a" (a directory) deletes nothing.
        fs.delete(&bucket, &key("a")).await.unwrap();
        assert_eq!(fs.list(&bucket, "", usize::MAX).await.unwrap(), vec!["a/b"]);
    }
}

//! The same behaviour tests against both backends, each on a real store:
//! the filesystem backend in a temporary directory, and the S3 backend against a real
//! `s3s-fs` server started here on loopback (or the server named by
//! `IMAGEFLOW_TEST_S3_ENDPOINT`, see `scripts/s3-test-server.sh`).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use imageflow_storage::{BucketName, ObjectKey, StorageConfig, StorageError, Store, StoreOptions};

/// Credentials of the throwaway loopback server. Test-only, never valid anywhere else.
const TEST_ACCESS_KEY: &str = "test-access-key-loopback-only";
const TEST_SECRET_KEY: &str = "test-secret-key-loopback-only";

// ---------------------------------------------------------------------------------------
// The s3s-fs server
// ---------------------------------------------------------------------------------------

/// A running S3 server: started by this test (killed on drop) or external.
struct S3Server {
    endpoint: String,
    access_key: String,
    secret_key: String,
    child: Option<Child>,
    _root: Option<tempfile::TempDir>,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `S3S_FS_BIN`, else `$HOME/.cache/imageflow/tools/bin/s3s-fs`, else `s3s-fs` on PATH.
fn s3s_fs_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("S3S_FS_BIN").filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "S3S_FS_BIN={} is not a file; run scripts/setup.sh to install s3s-fs",
            bin.display()
        );
        return bin;
    }
    if let Some(home) = std::env::var_os("HOME") {
        let cached = PathBuf::from(home).join(".cache/imageflow/tools/bin/s3s-fs");
        if cached.is_file() {
            return cached;
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("s3s-fs");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "s3s-fs (the real S3 server these tests run against) was not found: looked at \
         $S3S_FS_BIN, $HOME/.cache/imageflow/tools/bin/s3s-fs and PATH. Run scripts/setup.sh \
         to install it (or set S3S_FS_BIN, or IMAGEFLOW_TEST_S3_ENDPOINT for a running server)."
    );
}

/// Serialises server start-up within this test binary: a port picked by `free_port` stays
/// free until the server holding this lock has bound it.
static START_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

fn wait_until_accepting(addr: SocketAddr, child: &mut Child, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            // Someone else's server may hold the port (a process outside this test binary
            // picked it too); ours would then exit on its failed bind. Give it a moment.
            std::thread::sleep(Duration::from_millis(100));
            if let Some(status) = child.try_wait()? {
                bail!("s3s-fs exited with {status} (port taken by another process?)");
            }
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("s3s-fs exited early with {status}");
        }
        if Instant::now() > deadline {
            bail!("s3s-fs did not accept connections on {addr} within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

impl S3Server {
    fn start() -> Self {
        if let Some(endpoint) = std::env::var("IMAGEFLOW_TEST_S3_ENDPOINT")
            .ok()
            .filter(|e| !e.is_empty())
        {
            let var = |name: &str, default: &str| {
                std::env::var(name)
                    .ok()
                    .filter(|v| !v.is_empty())
                    .unwrap_or_else(|| default.to_owned())
            };
            return Self {
                endpoint,
                access_key: var("IMAGEFLOW_TEST_S3_ACCESS_KEY", TEST_ACCESS_KEY),
                secret_key: var("IMAGEFLOW_TEST_S3_SECRET_KEY", TEST_SECRET_KEY),
                child: None,
                _root: None,
            };
        }
        let bin = s3s_fs_binary();
        let _serialised = START_LOCK
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut failures = Vec::new();
        for _ in 0..5 {
            let root = tempfile::tempdir().expect("temp dir for s3s-fs");
            let data = root.path().join("data");
            std::fs::create_dir(&data).expect("create s3s-fs data dir");
            let log_path = root.path().join("s3s-fs.log");
            let log = std::fs::File::create(&log_path).expect("create s3s-fs log");
            let port = free_port();
            let mut child = Command::new(&bin)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args([
                    "--access-key",
                    TEST_ACCESS_KEY,
                    "--secret-key",
                    TEST_SECRET_KEY,
                ])
                .arg(&data)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone log handle"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            match wait_until_accepting(addr, &mut child, Duration::from_secs(10)) {
                Ok(()) => {
                    return Self {
                        endpoint: format!("http://{addr}"),
                        access_key: TEST_ACCESS_KEY.to_owned(),
                        secret_key: TEST_SECRET_KEY.to_owned(),
                        child: Some(child),
                        _root: Some(root),
                    };
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    failures.push(format!("port {port}: {e}; log: {}", log.trim()));
                }
            }
        }
        panic!(
            "could not start s3s-fs ({}):\n{}",
            bin.display(),
            failures.join("\n")
        );
    }

    fn config(&self, default_bucket: BucketName) -> StorageConfig {
        StorageConfig::S3 {
            default_bucket,
            endpoint: Some(self.endpoint.clone()),
            region: "us-east-1".to_owned(),
            access_key_id: Some(self.access_key.clone()),
            secret_access_key: Some(self.secret_key.clone()),
            force_path_style: true,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The harness: one backend, one fresh bucket
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Kind {
    Fs,
    S3,
}

/// A bucket name no other test (or earlier run against an external server) uses.
fn unique_bucket(tag: &str) -> BucketName {
    let id = uuid::Uuid::new_v4().simple().to_string();
    BucketName::parse(&format!("it-{tag}-{}", &id[..12])).expect("valid bucket name")
}

fn key(s: &str) -> ObjectKey {
    ObjectKey::parse(s).expect("valid key")
}

fn fast_options() -> StoreOptions {
    StoreOptions {
        max_attempts: 3,
        base_backoff: Duration::from_millis(5),
        op_timeout: Duration::from_secs(10),
        ..StoreOptions::default()
    }
}

struct Harness {
    store: Store,
    /// A bucket created for this test.
    bucket: BucketName,
    /// The store's default bucket, not created yet.
    default_bucket: BucketName,
    config: StorageConfig,
    _fs_root: Option<tempfile::TempDir>,
    _server: Option<S3Server>,
}

impl Harness {
    async fn start(kind: Kind, options: StoreOptions) -> Result<Self> {
        let default_bucket = unique_bucket("default");
        let (config, fs_root, server) = match kind {
            Kind::Fs => {
                let root = tempfile::tempdir()?;
                let config = StorageConfig::Fs {
                    root: root.path().join("store"),
                    default_bucket: default_bucket.clone(),
                };
                (config, Some(root), None)
            }
            Kind::S3 => {
                let server = S3Server::start();
                (server.config(default_bucket.clone()), None, Some(server))
            }
        };
        let store = Store::connect(&config, options).await?;
        let bucket = unique_bucket("data");
        store.ensure_bucket(&bucket).await?;
        Ok(Self {
            store,
            bucket,
            default_bucket,
            config,
            _fs_root: fs_root,
            _server: server,
        })
    }

    /// Another store over the same backing storage, with other options.
    async fn store_with(&self, options: StoreOptions) -> Result<Store> {
        Ok(Store::connect(&self.config, options).await?)
    }
}

fn expect_not_found<T: std::fmt::Debug>(
    result: Result<T, StorageError>,
    bucket: &BucketName,
    what: &str,
) -> Result<String> {
    match result {
        Err(StorageError::NotFound { bucket: b, key }) => {
            ensure!(b == bucket.as_str(), "{what}: NotFound names bucket {b:?}");
            Ok(key)
        }
        other => bail!("{what}: expected NotFound, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// The test bodies, shared by both backends
// ---------------------------------------------------------------------------------------

async fn roundtrip_with_content_type(kind: Kind) -> Result<()> {
    let h = Harness::start(kind, fast_options()).await?;
    let k = key("executions/42/cat.png");
    let data = Bytes::from_static(b"\x89PNG\r\n\x1a\nnot really a png");
    let meta = h
        .store
        .put(&h.bucket, &k, data.clone(), "image/png")
        .await?;
    assert_eq!(meta.size, data.len() as u64);
    assert_eq!(meta.content_type.as_deref(), Some("image/png"));

    let object = h.store.get(&h.bucket, &k).await?;
    assert_eq!(object.data, data);
    assert_eq!(object.meta.size, data.len() as u64);
    assert_eq!(object.meta.content_type.as_deref(), Some("image/png"));

    let head = h.store.head(&h.bucket, &k).await?;
    assert_eq!(head.size, data.len() as u64);
    assert_eq!(head.content_type.as_deref(), Some("image/png"));
    Ok(())
}

async fn binary_data_integrity_1mib(kind: Kind) -> Result<()> {
    let h = Harness::start(kind, fast_options()).await?;
    let mut data = vec![0u8; 1024 * 1024];
    rand::fill(&mut data[..]);
    // Make sure every byte value is present, NUL and 0xFF included.
    for (i, b) in data.iter_mut().take(256).enumerate() {
        *b = u8::try_from(i)?;
    }
    let data = Bytes::from(data);
    let k = key("blobs/random.bin");
    h.store
        .put(&h.bucket, &k, data.clone(), "application/octet-stream")
        .await?;
    let object = h.store.get(&h.bucket, &k).await?;
    assert_eq!(object.data.len(), data.len());
    assert!(
        object.data == data,
        "1 MiB of random bytes came back different"
    );
    assert_eq!(h.store.head(&h.bucket, &k).await?.size, 1024 * 1024);
    Ok(())
}

async fn empty_object_and_unusual_keys(kind: Kind) -> Result<()> {
    let h = Harness::start(kind, fast_options()).await?;
    let empty = key("empty");
    h.store
        .put(&h.bucket, &empty, Bytes::new(), "text/plain")
        .await?;
    let object = h.store.get(&h.bucket, &empty).await?;
    assert!(object.data.is_empty());
    assert_eq!(object.meta.size, 0);

    let odd = [
        "dir with spaces/file name.png",
        "ユニコード/写真.jpg",
        "symbols/a+b=c&d;e,f@g$h!.png",
        "..dots../x..y/.hidden",
    ];
    for (i, k) in odd.iter().enumerate() {
        h.store
            .put(
                &h.bucket,
                &key(k),
                Bytes::from(vec![u8::try_from(i)?; 10]),
                "image/png",
            )
            .await?;
    }
    for (i, k) in odd.iter().enumerate() {
        let object = h.store.get(&h.bucket, &key(k)).await?;
        assert_eq!(object.data, Bytes::from(vec![u8::try_from(i)?; 10]), "{k}");
    }
    let mut expected: Vec<String> = odd.iter().map(|k| (*k).to_owned()).collect();
    expected.push("empty".to_owned());
    expected.sort();
    assert_eq!(h.store.list(&h.bucket, "").await?, expected);
    Ok(())
}

async fn overwrite_replaces_data_and_content_type(kind: Kind) -> Result<()> {
    let h = Harness::start(kind, fast_options()).await?;
    let k = key("out/result");
    h.store
        .put(
            &h.bucket,
            &k,
            Bytes::from_static(b"first version, longer"),
            "text/plain",
        )
        .await?;
    h.store
        .put(&h.bucket, &k, Bytes::from_static(b"second"), "image/jpeg")
        .await?;
    let object = h.store.get(&h.bucket, &k).await?;
    assert_eq!(object.data, Bytes::from_static(b"second"));
    assert_eq!(object.meta.content_type.as_deref(), Some("image/jpeg"));
    assert_eq!(h.store.head(&h.bucket, &k).await?.size, 6);
    assert_eq!(
        h.store.list(&h.bucket, "").await?,
        vec!["out/result".to_owned()]
    );
    Ok(())
}

async fn list_by_prefix(kind: Kind) -> Result<()> {
    let h = Harness::start(kind, fast_options()).await?;
    for k in [
        "exec/2/a.png",
        "exec/1/b.png",
        "exec/1/a.png",
        "exec/10/x.png",
        "other.png",
        "exec-log.txt",
    ] {
        h.store
            .put(&h.bucket, &key(k), Bytes::from_static(b"x"), "image/png")
            .await?;
    }
    assert_eq!(
        h.store.list(&h.bucket, "exec/1/").await?,
        vec!["exec/1/a.png", "exec/1/b.png"]
    );
    assert_eq!(
        h.store.list(&h.bucket, "exec/1").await?,
        vec!["exec/1/a.png", "exec/1/b.png", "exec/10/x.png"]
    );
    assert_eq!(
        h.store.list(&h.bucket, "exec").await?,
        vec![
            "exec-log.txt",
            "exec/1/a.png",
            "exec/1/b.png",
            "exec/10/x.png",
            "exec/2/a.png"
        ]
    );
    assert_eq!(h.store.list(&h.bucket, "").await?.len(), 6);
    assert_eq!(
        h.store.list(&h.bucket, "exec/2/a.png").await?,
        vec!["exec/2/a.png"]
    );
    assert!(h.store.list(&h.bucket, "nothing/").await?.is_empty());
    // A bounded listing says when there was more than it returns.
    assert_eq!(
        h.store.list_first(&h.bucket, "exec/1/", 2).await?,
        (
            vec!["exec/1/a.png".to_string(), "exec/1/b.png".to_string()],
            false
        )
    );
    let (some, more) = h.store.list_first(&h.bucket, "exec", 3).await?;
    assert!(more, "5 keys under exec, 3 asked");
    assert_eq!(some.len(), 3);
    // A freshly created bucket lists empty.
    let fresh = unique_bucket("fresh");
    h.store.ensure_bucket(&fresh).await?;
    assert!(h.store.list(&fresh, "").await?.is_empty());
    Ok(())
}

async fn delete_is_idempotent(kind: Kind) -> Result<()> {
    let h = Harness::start(kind, fast_options()).await?;
    let k = key("tmp/delete-me.png");
    h.store
        .put(&h.bucket, &k, Bytes::from_static(b"bye"), "image/png")
        .await?;
    let keep = key("tmp/keep.png");
    h.store
        .put(&h.bucket, &keep, Bytes::from_static(b"stay"), "image/png")
        .await?;
    h.store.delete(&h.bucket, &k).await?;
    expect_not_found(
        h.store.get(&h.bucket, &k).await,
        &h.bucket,
        "get after delete",
    )?;
    h.store.delete(&h.bucket, &k).await?;
    h.store.delete(&h.bucket, &key("never/existed")).await?;
    assert_eq!(h.store.list(&h.bucket, "").await?, vec!["tmp/keep.png"]);
    assert_eq!(
        h.store.get(&h.bucket, &keep).await?.data,
        Bytes::from_static(b"stay")
    );
    Ok(())
}

async fn missing_object_is_not_found(kind: Kind) -> Result<()> {
    let h = Harness::start(kind, fast_options()).await?;
    let k = key("no/such/object.png");
    let got = expect_not_found(h.store.get(&h.bucket, &k).await, &h.bucket, "get")?;
    assert_eq!(got, k.as_str());
    let got = expect_not_found(h.store.head(&h.bucket, &k).await, &h.bucket, "head")?;
    assert_eq!(got, k.as_str());
    // A prefix of existing keys is not an object either (the fs backend keeps it as a
    // directory). Checked on fs only: s3s-fs answers 500 InternalError for this GET where
    // S3 and MinIO answer NoSuchKey.
    if matches!(kind, Kind::Fs) {
        h.store
            .put(
                &h.bucket,
                &key("no/such/other.png"),
                Bytes::from_static(b"x"),
                "image/png",
            )
            .await?;
        expect_not_found(
            h.store.get(&h.bucket, &key("no/such")).await,
            &h.bucket,
            "prefix",
        )?;
        expect_not_found(
            h.store.head(&h.bucket, &key("no/such")).await,
            &h.bucket,
            "prefix",
        )?;
    }
    let err = h.store.get(&h.bucket, &k).await.expect_err("missing");
    assert!(err.is_not_found() && !err.is_retryable());
    assert!(err.to_string().contains("no/such/object.png"), "{err}");
    Ok(())
}

async fn missing_bucket_is_not_found(kind: Kind) -> Result<()> {
    let h = Harness::start(kind, fast_options()).await?;
    let missing = unique_bucket("missing");
    let k = key("a/b.png");
    let put_key = expect_not_found(
        h.store
            .put(&missing, &k, Bytes::from_static(b"x"), "image/png")
            .await,
        &missing,
        "put",
    )?;
    assert_eq!(
        put_key, "",
        "put into a missing bucket names the bucket, not the key"
    );
    let err = h
        .store
        .put(&missing, &k, Bytes::from_static(b"x"), "image/png")
        .await
        .expect_err("missing bucket");
    assert!(err.to_string().contains(missing.as_str()), "{err}");
    expect_not_found(h.store.get(&missing, &k).await, &missing, "get")?;
    expect_not_found(h.store.head(&missing, &k).await, &missing, "head")?;
    expect_not_found(h.store.list(&missing, "").await, &missing, "list")?;
    expect_not_found(h.store.delete(&missing, &k).await, &missing, "delete")?;
    Ok(())
}

async fn ensure_bucket_twice_and_check_ready(kind: Kind) -> Result<()> {
    let h = Harness::start(kind, fast_options()).await?;
    let b = unique_bucket("twice");
    h.store.ensure_bucket(&b).await?;
    h.store.ensure_bucket(&b).await?;
    h.store
        .put(&b, &key("k"), Bytes::from_static(b"v"), "text/plain")
        .await?;
    // Ensuring an existing bucket leaves its objects alone.
    h.store.ensure_bucket(&b).await?;
    assert_eq!(h.store.list(&b, "").await?, vec!["k"]);

    // check_ready creates the default bucket, then keeps succeeding.
    assert_eq!(h.store.default_bucket(), &h.default_bucket);
    expect_not_found(
        h.store.list(h.store.default_bucket(), "").await,
        &h.default_bucket,
        "default bucket before check_ready",
    )?;
    h.store.check_ready().await?;
    h.store.check_ready().await?;
    assert!(h.store.list(h.store.default_bucket(), "").await?.is_empty());
    h.store
        .put(
            h.store.default_bucket(),
            &key("ready"),
            Bytes::from_static(b"1"),
            "text/plain",
        )
        .await?;
    Ok(())
}

async fn concurrent_ensure_bucket(kind: Kind) -> Result<()> {
    let h = Harness::start(kind, fast_options()).await?;
    let b = unique_bucket("race");
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = h.store.clone();
            let b = b.clone();
            tokio::spawn(async move { store.ensure_bucket(&b).await })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    assert!(h.store.list(&b, "").await?.is_empty());
    Ok(())
}

async fn concurrent_puts_never_mix(kind: Kind) -> Result<()> {
    let h = Harness::start(kind, fast_options()).await?;
    let k = key("contended/object.bin");
    let payloads: Vec<Bytes> = (0u8..8).map(|i| Bytes::from(vec![i; 64 * 1024])).collect();
    let tasks: Vec<_> = payloads
        .iter()
        .cloned()
        .map(|data| {
            let store = h.store.clone();
            let (b, k) = (h.bucket.clone(), k.clone());
            tokio::spawn(async move { store.put(&b, &k, data, "application/octet-stream").await })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let object = h.store.get(&h.bucket, &k).await?;
    assert!(
        payloads.contains(&object.data),
        "the object is not exactly one of the payloads written"
    );
    assert_eq!(
        h.store.list(&h.bucket, "contended/").await?,
        vec![k.as_str()]
    );
    Ok(())
}

async fn too_large_put_is_refused(kind: Kind) -> Result<()> {
    let options = StoreOptions {
        max_object_bytes: 1024,
        ..fast_options()
    };
    let h = Harness::start(kind, options).await?;
    let k = key("big.bin");
    match h
        .store
        .put(
            &h.bucket,
            &k,
            Bytes::from(vec![7u8; 1025]),
            "application/octet-stream",
        )
        .await
    {
        Err(StorageError::TooLarge { size, limit }) => {
            assert_eq!((size, limit), (1025, 1024));
        }
        other => bail!("expected TooLarge, got {other:?}"),
    }
    expect_not_found(
        h.store.get(&h.bucket, &k).await,
        &h.bucket,
        "refused object",
    )?;
    // Exactly at the limit is fine.
    h.store
        .put(
            &h.bucket,
            &k,
            Bytes::from(vec![7u8; 1024]),
            "application/octet-stream",
        )
        .await?;
    assert_eq!(h.store.get(&h.bucket, &k).await?.data.len(), 1024);
    Ok(())
}

async fn too_large_get_is_refused(kind: Kind) -> Result<()> {
    let h = Harness::start(kind, fast_options()).await?;
    let k = key("stored-big.bin");
    h.store
        .put(
            &h.bucket,
            &k,
            Bytes::from(vec![1u8; 4096]),
            "application/octet-stream",
        )
        .await?;
    let small = h
        .store_with(StoreOptions {
            max_object_bytes: 1000,
            ..fast_options()
        })
        .await?;
    match small.get(&h.bucket, &k).await {
        Err(StorageError::TooLarge { size, limit }) => {
            assert_eq!((size, limit), (4096, 1000));
        }
        other => bail!("expected TooLarge, got {other:?}"),
    }
    // head still reports it; a small object still reads.
    assert_eq!(small.head(&h.bucket, &k).await?.size, 4096);
    let tiny = key("tiny");
    small
        .put(&h.bucket, &tiny, Bytes::from_static(b"ok"), "text/plain")
        .await?;
    assert_eq!(
        small.get(&h.bucket, &tiny).await?.data,
        Bytes::from_static(b"ok")
    );
    Ok(())
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod fs_backend {
            $(
                #[tokio::test]
                async fn $name() -> anyhow::Result<()> {
                    super::$name(super::Kind::Fs).await
                }
            )*
        }
        mod s3_backend {
            $(
                #[tokio::test]
                async fn $name() -> anyhow::Result<()> {
                    super::$name(super::Kind::S3).await
                }
            )*
        }
    };
}

on_both_backends!(
    roundtrip_with_content_type,
    binary_data_integrity_1mib,
    empty_object_and_unusual_keys,
    overwrite_replaces_data_and_content_type,
    list_by_prefix,
    delete_is_idempotent,
    missing_object_is_not_found,
    missing_bucket_is_not_found,
    ensure_bucket_twice_and_check_ready,
    concurrent_ensure_bucket,
    concurrent_puts_never_mix,
    too_large_put_is_refused,
    too_large_get_is_refused,
);

// ---------------------------------------------------------------------------------------
// S3-only: failure handling against real network conditions
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn s3_closed_port_is_unavailable_after_bounded_retries() -> Result<()> {
    // A port bound (so no other test's server can take it) but not listening: every
    // connection attempt is refused.
    let closed = tokio::net::TcpSocket::new_v4()?;
    closed.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let port = closed.local_addr()?.port();
    let config = StorageConfig::S3 {
        default_bucket: BucketName::parse("imageflow-files")?,
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        region: "us-east-1".to_owned(),
        access_key_id: Some(TEST_ACCESS_KEY.to_owned()),
        secret_access_key: Some(TEST_SECRET_KEY.to_owned()),
        force_path_style: true,
    };
    let options = StoreOptions {
        max_attempts: 3,
        base_backoff: Duration::from_millis(1),
        op_timeout: Duration::from_secs(2),
        ..StoreOptions::default()
    };
    let store = Store::connect(&config, options).await?;
    let bucket = store.default_bucket().clone();
    let k = key("x.png");

    let results = [
        ("get", store.get(&bucket, &k).await.map(|_| ())),
        ("head", store.head(&bucket, &k).await.map(|_| ())),
        (
            "put",
            store
                .put(&bucket, &k, Bytes::from_static(b"x"), "image/png")
                .await
                .map(|_| ()),
        ),
        ("delete", store.delete(&bucket, &k).await),
        ("list", store.list(&bucket, "").await.map(|_| ())),
        ("ensure_bucket", store.check_ready().await),
    ];
    for (expected_operation, result) in results {
        match result {
            Err(e @ StorageError::Unavailable { .. }) => {
                assert!(e.is_retryable());
                let StorageError::Unavailable {
                    operation,
                    attempts,
                    message,
                } = e
                else {
                    unreachable!()
                };
                assert_eq!(operation, expected_operation);
                assert_eq!(attempts, 3, "{operation}: {message}");
                assert!(!message.contains(TEST_SECRET_KEY));
            }
            other => bail!("{expected_operation}: expected Unavailable, got {other:?}"),
        }
    }
    drop(closed);
    Ok(())
}

#[tokio::test]
async fn s3_wrong_credentials_are_access_denied_without_retries() -> Result<()> {
    let server = S3Server::start();
    let mut config = server.config(BucketName::parse("imageflow-files")?);
    if let StorageConfig::S3 {
        secret_access_key, ..
    } = &mut config
    {
        *secret_access_key = Some("test-wrong-secret-loopback-only".to_owned());
    }
    let store = Store::connect(&config, fast_options()).await?;
    match store.check_ready().await {
        Err(StorageError::AccessDenied(message)) => {
            assert!(!message.contains("test-wrong-secret"), "{message}");
        }
        other => bail!("expected AccessDenied, got {other:?}"),
    }
    match store.get(store.default_bucket(), &key("x")).await {
        Err(StorageError::AccessDenied(_)) => {}
        other => bail!("expected AccessDenied, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn fs_store_stays_inside_its_root() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("root");
    let config = StorageConfig::Fs {
        root: root.clone(),
        default_bucket: BucketName::parse("imageflow-files")?,
    };
    let store = Store::connect(&config, fast_options()).await?;
    store.check_ready().await?;
    assert!(root.join("imageflow-files").is_dir());
    store
        .put(
            store.default_bucket(),
            &key("x/y/z.png"),
            Bytes::from_static(b"png"),
            "image/png",
        )
        .await?;
    // The object is a plain file at root/bucket/key; nothing appears outside root.
    assert_eq!(
        std::fs::read(root.join("imageflow-files/x/y/z.png"))?,
        b"png"
    );
    let outside: Vec<_> = std::fs::read_dir(dir.path())?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .context("read temp dir")?;
    assert_eq!(outside, vec![std::ffi::OsString::from("root")]);
    // Keys that could climb out are unrepresentable.
    for bad in ["../x", "a/../../x", "/etc/passwd", "a\\..\\x"] {
        assert!(
            matches!(ObjectKey::parse(bad), Err(StorageError::InvalidKey(_))),
            "{bad}"
        );
    }
    assert!(matches!(
        BucketName::parse(".."),
        Err(StorageError::InvalidBucket(_))
    ));
    Ok(())
}

#[tokio::test]
async fn s3_unresponsive_server_times_out_and_is_unavailable() -> Result<()> {
    // Accepts TCP connections (the kernel completes the handshake) but never answers.
    let silent = TcpListener::bind("127.0.0.1:0")?;
    let config = StorageConfig::S3 {
        default_bucket: BucketName::parse("imageflow-files")?,
        endpoint: Some(format!("http://{}", silent.local_addr()?)),
        region: "us-east-1".to_owned(),
        access_key_id: Some(TEST_ACCESS_KEY.to_owned()),
        secret_access_key: Some(TEST_SECRET_KEY.to_owned()),
        force_path_style: true,
    };
    let options = StoreOptions {
        max_attempts: 2,
        base_backoff: Duration::from_millis(1),
        op_timeout: Duration::from_millis(300),
        ..StoreOptions::default()
    };
    let store = Store::connect(&config, options).await?;
    match store.get(store.default_bucket(), &key("x.png")).await {
        Err(StorageError::Unavailable {
            operation,
            attempts,
            message,
        }) => {
            assert_eq!(operation, "get");
            assert_eq!(attempts, 2, "{message}");
            assert!(
                message.contains("timeout") || message.contains("timed out"),
                "{message}"
            );
        }
        other => bail!("expected Unavailable, got {other:?}"),
    }
    drop(silent);
    Ok(())
}

//! A real S3 server for tests: `s3s-fs` on loopback.

use std::{
    collections::HashMap,
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

/// Credentials that only open the loopback test server.
pub const TEST_ACCESS_KEY: &str = "test-access-key-loopback-only";
pub const TEST_SECRET_KEY: &str = "test-secret-key-loopback-only";

#[derive(Debug)]
pub struct S3Server {
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    child: Option<Child>,
    _root: Option<tempfile::TempDir>,
    /// What a private server needs to start again on the same port and
    /// directory (`restart`).
    relaunch: Option<(PathBuf, SocketAddr, PathBuf)>,
}

impl S3Server {
    /// Uses the server named by `IMAGEFLOW_TEST_S3_ENDPOINT` when set (the test
    /// script starts one), otherwise starts a private `s3s-fs`. Fails (never
    /// skips) when neither is possible: run `scripts/setup.sh`.
    pub fn start() -> anyhow::Result<Self> {
        if let Ok(endpoint) = std::env::var("IMAGEFLOW_TEST_S3_ENDPOINT") {
            return Ok(Self {
                endpoint,
                access_key: std::env::var("IMAGEFLOW_TEST_S3_ACCESS_KEY")
                    .unwrap_or_else(|_| TEST_ACCESS_KEY.into()),
                secret_key: std::env::var("IMAGEFLOW_TEST_S3_SECRET_KEY")
                    .unwrap_or_else(|_| TEST_SECRET_KEY.into()),
                child: None,
                _root: None,
                relaunch: None,
            });
        }
        Self::start_private()
    }

    /// Always starts a private `s3s-fs` (never the shared one), so the test
    /// may stop and restart it.
    pub fn start_private() -> anyhow::Result<Self> {
        let binary = find_binary()?;
        let mut last_error = None;
        for _ in 0..5 {
            let root = tempfile::tempdir()?;
            let addr = crate::closed_port();
            let child = launch(&binary, addr, root.path())?;
            let mut server = Self {
                endpoint: format!("http://{addr}"),
                access_key: TEST_ACCESS_KEY.into(),
                secret_key: TEST_SECRET_KEY.into(),
                child: Some(child),
                relaunch: Some((binary.clone(), addr, root.path().to_path_buf())),
                _root: Some(root),
            };
            match server.wait_until_accepting(addr) {
                Ok(()) => return Ok(server),
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("s3s-fs did not start")))
    }

    /// Kills a private server (its objects stay on disk for `restart`).
    pub fn stop(&mut self) {
        assert!(
            self.relaunch.is_some(),
            "only a private server can be stopped"
        );
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a stopped private server again on the same port and directory.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        let (binary, addr, root) = self
            .relaunch
            .clone()
            .context("only a private server can be restarted")?;
        self.stop();
        self.child = Some(launch(&binary, addr, &root)?);
        self.wait_until_accepting(addr)
    }

    fn wait_until_accepting(&mut self, addr: SocketAddr) -> anyhow::Result<()> {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("s3s-fs exited early with {status}");
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        bail!("s3s-fs did not accept connections on {addr} within 10 s")
    }

    /// The service environment that points storage at this server.
    pub fn storage_env(&self, bucket: &str) -> HashMap<String, String> {
        HashMap::from([
            ("STORAGE_URL".into(), format!("s3://{bucket}")),
            ("S3_ENDPOINT".into(), self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID".into(), self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret_key.clone()),
            ("AWS_REGION".into(), "us-east-1".into()),
        ])
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn launch(binary: &Path, addr: SocketAddr, root: &Path) -> anyhow::Result<Child> {
    Command::new(binary)
        .args(["--host", "127.0.0.1", "--port", &addr.port().to_string()])
        .args([
            "--access-key",
            TEST_ACCESS_KEY,
            "--secret-key",
            TEST_SECRET_KEY,
        ])
        .arg(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))
}

fn find_binary() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("S3S_FS_BIN") {
        return Ok(PathBuf::from(path));
    }
    if let Some(home) = std::env::var_os("HOME") {
        let cached = PathBuf::from(home).join(".cache/imageflow/tools/bin/s3s-fs");
        if cached.is_file() {
            return Ok(cached);
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("s3s-fs");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    bail!("s3s-fs not found (S3S_FS_BIN, ~/.cache/imageflow/tools/bin, PATH): run scripts/setup.sh")
}

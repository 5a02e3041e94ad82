//! A real Kafka-compatible broker for tests: `tansu` on loopback, with memory
//! storage or (for restarts) a SQLite file that keeps topics, offsets and
//! groups as a real cluster does. It does not create topics on first use;
//! tests create them (the events crate's `ensure_topics`).

use std::{
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

/// How long a fresh broker may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug)]
pub struct KafkaBroker {
    addr: SocketAddr,
    binary: PathBuf,
    child: Option<Child>,
    log: tempfile::NamedTempFile,
    /// Where the SQLite store lives; `None` for memory storage.
    durable: Option<tempfile::TempDir>,
}

impl KafkaBroker {
    /// Starts tansu on a free loopback port and waits until it accepts
    /// connections. Fails (never skips) when the binary is missing.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(false)
    }

    /// [`KafkaBroker::start`] with a store on disk, so that a
    /// [`KafkaBroker::restart`] keeps topics (and their ids), committed
    /// offsets and producer state, as a real broker's restart does.
    ///
    /// Use it for restart tests: with memory storage the restarted broker has
    /// no topics, and tansu answers a fetch of an unknown topic with a
    /// leader hint and a zero topic id, which makes librdkafka 2.12 crash
    /// (SIGSEGV in `rd_kafka_metadata_update_op`, a NULL topic name).
    pub fn start_durable() -> anyhow::Result<Self> {
        Self::start_with(true)
    }

    fn start_with(durable: bool) -> anyhow::Result<Self> {
        let binary = find_binary()?;
        let mut last_error = None;
        // A port picked free can be taken by someone else before tansu binds
        // it; try a few.
        for _ in 0..5 {
            let mut broker = Self {
                addr: crate::closed_port(),
                binary: binary.clone(),
                child: None,
                log: tempfile::NamedTempFile::new()?,
                durable: if durable {
                    Some(tempfile::tempdir()?)
                } else {
                    None
                },
            };
            match broker.spawn() {
                Ok(()) => return Ok(broker),
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("tansu did not start")))
    }

    /// `host:port` for `bootstrap.servers` / `KAFKA_BROKERS`.
    pub fn brokers(&self) -> String {
        self.addr.to_string()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Kills the broker (as a crash would); clients see connections refused.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again on the same port. Memory storage starts empty
    /// (topics must be created again); a durable one keeps what it had.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let started = Instant::now();
        // The old socket may linger for a moment after the kill.
        loop {
            match self.spawn() {
                Ok(()) => return Ok(()),
                Err(err) if started.elapsed() > START_TIMEOUT => return Err(err),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// Everything the broker printed so far (for assertion messages).
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let url = format!("tcp://{}", self.addr);
        let out = self.log.reopen()?;
        let err = out.try_clone()?;
        let mut command = Command::new(&self.binary);
        // tansu reads OTEL_EXPORTER_OTLP_ENDPOINT, CLUSTER_ID and more from
        // the environment; a test's own variables must not reach it.
        command.env_clear();
        for keep in ["PATH", "HOME"] {
            if let Some(value) = std::env::var_os(keep) {
                command.env(keep, value);
            }
        }
        // tansu resolves a sqlite:// path against its working directory.
        let storage = match &self.durable {
            Some(dir) => {
                command.current_dir(dir.path());
                "sqlite://tansu.db"
            }
            None => "memory://tansu/",
        };
        let child = command
            .args(["broker", "--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", storage])
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.child = Some(child);
        if let Err(err) = self.wait_until_accepting() {
            self.stop();
            return Err(err);
        }
        Ok(())
    }

    fn wait_until_accepting(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        while started.elapsed() < START_TIMEOUT {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("tansu exited early with {status}:\n{}", self.output());
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(100)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        bail!(
            "tansu did not accept connections on {} within {START_TIMEOUT:?}:\n{}",
            self.addr,
            self.output()
        )
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `$TANSU_BIN`, else the copy `scripts/setup.sh` builds into the cache.
fn find_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("TANSU_BIN") {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
        bail!(
            "TANSU_BIN={} is not a file: run scripts/setup.sh",
            path.display()
        );
    }
    if let Some(home) = std::env::var_os("HOME") {
        let cached = PathBuf::from(home).join(".cache/imageflow/tools/bin/tansu");
        if cached.is_file() {
            return Ok(cached);
        }
    }
    bail!("tansu not found (TANSU_BIN, ~/.cache/imageflow/tools/bin/tansu): run scripts/setup.sh")
}

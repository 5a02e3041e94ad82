//! The workspace's own binaries as child processes, for tests that need
//! several services with their own telemetry (one global tracer per process).

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// Path of a workspace binary built next to the test executable
/// (`target/<profile>/<name>`). `cargo test --workspace` builds every binary
/// before running tests; a lone `cargo test -p x` may not, hence the message.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/test-binary → target/<profile>/<name>
    let dir = exe.parent().and_then(|p| p.parent()).unwrap();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (cargo build --workspace, or run the whole suite with cargo test --workspace)",
        path.display()
    );
    path
}

/// A free port on 127.0.0.1 (bound then released; the child binds it next).
///
/// The kernel may hand a released port out again, so a test that asks for seven
/// ports before starting its children could give two of them the same one; a port
/// is therefore never returned twice in one test process.
pub fn free_addr() -> SocketAddr {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        if !handed_out.contains(&addr.port()) {
            handed_out.push(addr.port());
            return addr;
        }
    }
}

/// A child process whose stdout and stderr go to a log file; killed on drop.
#[derive(Debug)]
pub struct ChildProcess {
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl ChildProcess {
    /// Starts `binary` (a workspace binary name) with exactly `env` added to a
    /// clean environment (PATH and HOME kept), logging into `log_dir`.
    pub fn spawn(binary: &str, env: &HashMap<String, String>, log_dir: &std::path::Path) -> Self {
        let log = log_dir.join(format!("{binary}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let mut command = Command::new(workspace_binary(binary));
        command.env_clear();
        for keep in ["PATH", "HOME"] {
            if let Ok(v) = std::env::var(keep) {
                command.env(keep, v);
            }
        }
        command
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let child = command.spawn().unwrap();
        Self {
            name: binary.to_string(),
            child,
            log,
        }
    }

    /// Everything the process printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with the process's output when it has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited ({status}):\n{}", self.name, self.output());
        }
    }

    /// SIGKILL: the process dies without cleaning up (a crashed pod).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits up to `grace` for a clean exit (telemetry flushed),
    /// then SIGKILL. Returns whether it exited on its own.
    pub fn terminate(&mut self, grace: Duration) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_addr_never_hands_out_a_port_twice() {
        // 500 picks from the ~28k ephemeral ports: without the record, a repeat is
        // all but certain (the birthday bound), which is how two children collided.
        let ports: Vec<u16> = (0..500).map(|_| free_addr().port()).collect();
        let distinct: std::collections::HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
    }
}

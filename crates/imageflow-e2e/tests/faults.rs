//! Fault tests over the real binaries (issue 9): a service killed mid-pipeline
//! and restarted, the S3 server stopped and restarted, PostgreSQL restarted
//! under running executions, the backend SIGKILLed under 20 executions, and
//! a service over its concurrency limit. Each waits for states with a bound
//! that fails the test with the record it saw, and asserts terminal states
//! and reasons, never how long things took (the figures are printed for
//! docs/reliability.md).

#![allow(clippy::unwrap_used)]

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use imageflow_testkit::{ChildProcess, S3Server, free_addr};
use serde_json::{Value, json};

mod common;
use common::*;

/// A service binary on a fixed address, so it can be started again there.
struct Service {
    binary: &'static str,
    env: HashMap<String, String>,
    dir: PathBuf,
    process: ChildProcess,
    starts: usize,
}

impl Service {
    fn start(binary: &'static str, dir: &Path, base: &HashMap<String, String>) -> Self {
        let mut env = base.clone();
        env.insert("GRPC_LISTEN_ADDR".into(), free_addr().to_string());
        let dir = dir.join(binary);
        let process = Self::spawn(binary, &env, &dir, 0);
        Self {
            binary,
            env,
            dir,
            process,
            starts: 1,
        }
    }

    /// Each start logs into its own folder (a log file is truncated on spawn).
    fn spawn(binary: &str, env: &HashMap<String, String>, dir: &Path, n: usize) -> ChildProcess {
        let log_dir = dir.join(n.to_string());
        std::fs::create_dir_all(&log_dir).unwrap();
        ChildProcess::spawn(binary, env, &log_dir)
    }

    fn url(&self) -> String {
        format!("http://{}", self.env["GRPC_LISTEN_ADDR"])
    }

    fn restart(&mut self) {
        self.process.kill();
        self.process = Self::spawn(self.binary, &self.env, &self.dir, self.starts);
        self.starts += 1;
    }
}

/// Backend settings shared by the tests: the two services, `storage`, the
/// database, and a fast heartbeat so a dead replica's runs are reaped soon.
fn backend_env(
    storage: &HashMap<String, String>,
    resize: &Service,
    filter: &Service,
    database: &str,
) -> HashMap<String, String> {
    let mut env = storage.clone();
    env.insert("RESIZE_GRPC_ENDPOINT".into(), resize.url());
    env.insert("FILTER_GRPC_ENDPOINT".into(), filter.url());
    env.insert("DATABASE_URL".into(), database.into());
    env.insert("HEARTBEAT_SECONDS".into(), "1".into());
    env.insert("STALE_EXECUTION_SECONDS".into(), "3".into());
    env
}

fn sqlite(dir: &Path) -> String {
    format!("sqlite://{}?mode=rwc", dir.join("db.sqlite").display())
}

fn file_storage(dir: &Path) -> HashMap<String, String> {
    HashMap::from([(
        "STORAGE_URL".to_string(),
        format!("file://{}", dir.join("data").display()),
    )])
}

/// resize then sharpen; the filter step retries `retries` times.
fn two_steps(file_id: &Value, retries: u32) -> Value {
    json!({
        "pipeline": {"pipelineName": "faults", "steps": [
            {"stepId": "resize", "componentName": "resize", "parameters": {"width": 320, "height": 0, "maintain_aspect_ratio": true}},
            {"stepId": "sharpen", "componentName": "filter", "dependencies": ["resize"],
             "parameters": {"filter_type": "sharpen", "intensity": 1.0},
             "retryPolicy": {"maxRetries": retries, "backoffFactor": 2.0}},
        ]},
        "inputs": [file_id],
    })
}

fn is_terminal(status: &Value) -> bool {
    matches!(
        status.as_str(),
        Some("completed" | "failed" | "cancelled" | "partially_failed")
    )
}

/// Polls the record until it is terminal; fails with the last one seen.
async fn wait_terminal(api: &Api, id: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let record = api.get(&format!("/v1/executions/{id}")).await;
        if is_terminal(&record["status"]) {
            return record;
        }
        assert!(
            Instant::now() < deadline,
            "execution {id} not terminal within {within:?}: {record}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn start(api: &Api, body: &Value) -> String {
    let (code, accepted) = api.execute(body, false).await;
    assert_eq!(code, 202, "{accepted}");
    accepted["execution_id"].as_str().unwrap().to_string()
}

/// Runs `body` synchronously until one run completes (a restarted peer may
/// take a reconnect to be used); returns the tries it took and the time.
async fn until_completed(api: &Api, body: &Value, tries: usize) -> (usize, Duration) {
    let started = Instant::now();
    let mut last = Value::Null;
    for n in 1..=tries {
        let (_, record) = api.execute(body, true).await;
        if record["status"] == "completed" {
            return (n, started.elapsed());
        }
        last = record;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("no run completed in {tries} tries; the last: {last}");
}

fn step<'a>(record: &'a Value, id: &str) -> &'a Value {
    record["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stepId"] == id)
        .unwrap_or_else(|| panic!("no step {id} in {record}"))
}

/// The sum of a Prometheus counter over its label sets.
fn counter(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter(|l| l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_service_fails_its_step_with_the_reason_and_is_used_again_once_restarted() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let storage = file_storage(dir.path());
    let resize = Service::start("resize-svc", dir.path(), &storage);
    let mut filter = Service::start("filter-svc", dir.path(), &storage);
    let env = backend_env(&storage, &resize, &filter, &sqlite(dir.path()));
    let (mut backend, api) = backend(dir.path(), "backend", &env, &[]);
    api.wait_ready(&mut backend).await;
    let file = api.upload("chelsea.jpg").await;
    // A healthy run first, so the backend holds a live connection the kill breaks.
    let (_, record) = api.execute(&two_steps(&file["file_id"], 2), true).await;
    assert_eq!(record["status"], "completed", "{record}");

    filter.process.kill();
    let started = Instant::now();
    let (_, record) = api.execute(&two_steps(&file["file_id"], 2), true).await;
    let took = started.elapsed();
    let id = record["execution_id"].as_str().unwrap();
    // The stored record, not only the synchronous answer.
    let record = wait_terminal(&api, id, Duration::from_secs(30)).await;
    assert_eq!(record["status"], "failed", "{record}");
    assert_eq!(step(&record, "resize")["status"], "completed", "{record}");
    let sharpen = step(&record, "sharpen");
    assert_eq!(sharpen["status"], "failed", "{record}");
    assert_eq!(
        sharpen["attempts"], 3,
        "first attempt + maxRetries 2: {record}"
    );
    let step_error = sharpen["error"].as_str().unwrap().to_lowercase();
    assert!(
        step_error.contains("filter") && step_error.contains("unavailable"),
        "the step says which service and why: {record}"
    );
    let error = record["error"].as_str().unwrap();
    assert!(
        error.contains("sharpen") && error.to_lowercase().contains("unavailable"),
        "the execution names the failed step and the cause: {record}"
    );
    eprintln!(
        "FIGURE service killed: step failed after {} attempts in {took:?}: {error}",
        sharpen["attempts"]
    );

    // Same address, same backend: the channel reconnects on its own.
    filter.restart();
    let (tries, took) = until_completed(&api, &two_steps(&file["file_id"], 2), 20).await;
    eprintln!("FIGURE service restarted: run {tries} completed, {took:?} after the restart");
    backend.assert_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_s3_server_fails_runs_with_a_reason_and_a_restarted_one_serves_again() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    // Private: the shared server of scripts/test.sh must not be stopped.
    let mut s3 = S3Server::start_private().unwrap();
    let storage = s3.storage_env("imageflow-faults");
    let resize = Service::start("resize-svc", dir.path(), &storage);
    let filter = Service::start("filter-svc", dir.path(), &storage);
    let env = backend_env(&storage, &resize, &filter, &sqlite(dir.path()));
    let (mut backend, api) = backend(dir.path(), "backend", &env, &[]);
    api.wait_ready(&mut backend).await;
    let file = api.upload("chelsea.jpg").await;
    let (_, record) = api.execute(&two_steps(&file["file_id"], 1), true).await;
    assert_eq!(record["status"], "completed", "{record}");

    s3.stop();
    let started = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(start(&api, &two_steps(&file["file_id"], 1)).await);
    }
    for id in &ids {
        let record = wait_terminal(&api, id, Duration::from_secs(60)).await;
        assert_eq!(record["status"], "failed", "S3 stayed down: {record}");
        let error = record["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("resize"),
            "the first step, which reads the input, fails and says so: {record}"
        );
        assert!(
            !error.contains("DispatchFailure") && !error.contains("ConnectorError"),
            "the reason is the storage's message, not the SDK's internal Debug text: {error}"
        );
        eprintln!(
            "FIGURE S3 down: {id} failed after {:?}: {error}",
            started.elapsed()
        );
    }
    let list = api.get("/v1/executions?limit=50").await;
    for e in list["executions"].as_array().unwrap() {
        assert!(is_terminal(&e["status"]), "none left running: {e}");
    }

    s3.restart().unwrap();
    let (tries, took) = until_completed(&api, &two_steps(&file["file_id"], 1), 20).await;
    eprintln!("FIGURE S3 restarted: run {tries} completed, {took:?} after the restart");
    backend.assert_running();
}

/// A PostgreSQL cluster of its own (initdb + pg_ctl in a temp dir, on a free
/// port), so restarting it touches no one else's server.
struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    /// Root cannot run PostgreSQL: the commands then run as `postgres`.
    as_postgres: bool,
    _dir: tempfile::TempDir,
}

impl Postgres {
    fn bin_dir() -> PathBuf {
        if let Ok(dir) = std::env::var("PG_BIN") {
            return PathBuf::from(dir);
        }
        let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL is not installed (/usr/lib/postgresql): run scripts/postgres-test-server.sh")
            .filter_map(|e| Some(e.ok()?.path().join("bin")))
            .filter(|p| p.join("pg_ctl").is_file())
            .collect();
        found.sort_by_key(|p| {
            p.parent()
                .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
        });
        found
            .pop()
            .expect("no /usr/lib/postgresql/*/bin/pg_ctl: run scripts/postgres-test-server.sh")
    }

    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let as_postgres = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        if as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "chown of the cluster dir to postgres");
        }
        let pg = Self {
            bin: Self::bin_dir(),
            data: dir.path().join("data"),
            port: free_addr().port(),
            as_postgres,
            _dir: dir,
        };
        pg.run(
            "initdb",
            &["-A", "trust", "-U", "postgres", "--no-sync", "-D"],
            true,
        );
        pg.pg_ctl("start");
        pg
    }

    fn run(&self, tool: &str, args: &[&str], data_last: bool) -> String {
        let tool = self.bin.join(tool);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(tool);
            c
        } else {
            Command::new(tool)
        };
        command.args(args);
        if data_last {
            command.arg(&self.data);
        }
        let out = command.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{args:?}: {text}");
        text
    }

    fn pg_ctl(&self, action: &str) {
        let socket_dir = self.data.parent().unwrap().display().to_string();
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {socket_dir} -c fsync=off",
            self.port
        );
        let log = self.data.parent().unwrap().join("postgres.log");
        let log = log.display().to_string();
        let mut args = vec![action, "-w", "-t", "30", "-l", &log, "-o", &options];
        if action == "stop" {
            // fast: active connections are cut, as in a crash or failover.
            args = vec![action, "-w", "-t", "30", "-m", "fast"];
        }
        args.push("-D");
        self.run("pg_ctl", &args, true);
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"));
            c
        } else {
            Command::new(self.bin.join("pg_ctl"))
        };
        let _ = command
            .args(["stop", "-w", "-m", "immediate", "-D"])
            .arg(&self.data)
            .output();
    }
}

/// What backend-api logs when a write waits out a database outage.
/// What the backend logs for each write that waits out the outage
/// (`imageflow_retry::retry` with the engine's `retry_db`).
const DB_WAIT: &str = "in the database failed; retrying";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_under_running_executions_leaves_none_running_and_the_backend_goes_on() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    let storage = file_storage(dir.path());
    let resize = Service::start("resize-svc", dir.path(), &storage);
    let filter = Service::start("filter-svc", dir.path(), &storage);
    let env = backend_env(&storage, &resize, &filter, &pg.url());
    let (mut backend, api) = backend(dir.path(), "backend", &env, &[]);
    api.wait_ready(&mut backend).await;
    let file = api.upload("photo-1920x1080.jpg").await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(start(&api, &heavy_pipeline(&file["file_id"])).await);
    }
    // Restart while at least one of them is in the middle of its steps.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let record = api.get(&format!("/v1/executions/{}", ids[0])).await;
        if record["status"] == "running" || is_terminal(&record["status"]) {
            break;
        }
        assert!(Instant::now() < deadline, "never started: {record}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    pg.pg_ctl("stop");
    let stopped = Instant::now();
    // Readiness tells the outage (a load balancer stops sending here).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let response = api
            .http
            .get(format!("{}/readyz", api.url))
            .send()
            .await
            .unwrap();
        let code = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        let db_down = body.to_string().contains("database") && code == 503;
        let db_check = body["checks"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["name"] == "database").cloned());
        if db_down && db_check.as_ref().is_some_and(|c| c["ok"] == false) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz does not report the database down: {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Down until a step transition has met the outage, so the writes'
    // retries are what this test exercises, not a lucky gap between them.
    // A write first waits out the pool's 5 s acquire timeout, and steps of
    // the heavy pipeline take seconds: this can take a while.
    let deadline = Instant::now() + Duration::from_secs(45);
    let met = |log: &str| log.contains(DB_WAIT) || log.contains("cannot record");
    while !met(&backend.output()) {
        assert!(
            Instant::now() < deadline,
            "no step transition met the outage:\n{}",
            backend.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pg.pg_ctl("start");
    eprintln!("FIGURE database down for {:?}", stopped.elapsed());

    let mut outcomes = HashMap::<String, usize>::new();
    for id in &ids {
        let record = wait_terminal(&api, id, Duration::from_secs(60)).await;
        let status = record["status"].as_str().unwrap().to_string();
        assert!(
            status == "completed" || !record["error"].as_str().unwrap_or_default().is_empty(),
            "a failed execution says why: {record}"
        );
        if status == "completed" {
            // Every transition made during the outage reached the record.
            for s in record["steps"].as_array().unwrap() {
                assert_eq!(s["status"], "completed", "{record}");
            }
        } else {
            eprintln!(
                "FIGURE database restart: {id} {status}: {}",
                record["error"]
            );
        }
        *outcomes.entry(status).or_default() += 1;
    }
    eprintln!(
        "FIGURE database restart: {outcomes:?} (all terminal {:?} after the stop)",
        stopped.elapsed()
    );
    let (tries, took) = until_completed(&api, &heavy_pipeline(&file["file_id"]), 20).await;
    eprintln!("FIGURE database restarted: run {tries} completed, {took:?} later");
    let log = backend.output();
    let waited = log.lines().filter(|l| l.contains(DB_WAIT)).count();
    // A write that gave up is a transition lost from the record.
    let lost: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("cannot record") && !l.contains(DB_WAIT))
        .collect();
    assert!(lost.is_empty(), "writes lost to the outage: {lost:#?}");
    eprintln!("FIGURE database restart: {waited} write attempts waited out the outage, none lost");
    backend.assert_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_under_20_executions_leaves_each_completed_or_failed_with_a_reason() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let storage = file_storage(dir.path());
    let resize = Service::start("resize-svc", dir.path(), &storage);
    let filter = Service::start("filter-svc", dir.path(), &storage);
    let env = backend_env(&storage, &resize, &filter, &sqlite(dir.path()));
    let (mut first, api) = backend(dir.path(), "first", &env, &[]);
    api.wait_ready(&mut first).await;
    let file = api.upload("photo-1920x1080.jpg").await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(start(&api, &heavy_pipeline(&file["file_id"])).await);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = api.get("/v1/executions?limit=50").await;
        let running = list["executions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["status"] == "running")
            .count();
        if running > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "none running: {list}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill();
    let killed = Instant::now();

    let (mut second, api) = backend(dir.path(), "second", &env, &[]);
    api.wait_ready(&mut second).await;
    let mut outcomes = HashMap::<String, usize>::new();
    let mut reasons = HashMap::<String, usize>::new();
    for id in &ids {
        let record = wait_terminal(&api, id, Duration::from_secs(60)).await;
        let status = record["status"].as_str().unwrap().to_string();
        assert!(
            status == "completed" || status == "failed",
            "completed or failed: {record}"
        );
        if status == "failed" {
            let error = record["error"].as_str().unwrap_or_default().to_string();
            assert!(
                error.contains("backend"),
                "the reason names the backend's restart: {record}"
            );
            for s in record["steps"].as_array().unwrap() {
                assert!(
                    !matches!(s["status"].as_str(), Some("running" | "retrying")),
                    "no step left open: {record}"
                );
            }
            *reasons.entry(error).or_default() += 1;
        }
        *outcomes.entry(status).or_default() += 1;
    }
    eprintln!(
        "FIGURE backend killed: {outcomes:?}, all terminal {:?} after the kill; reasons {reasons:?}",
        killed.elapsed()
    );
    let (_, record) = api.execute(&two_steps(&file["file_id"], 0), true).await;
    assert_eq!(record["status"], "completed", "{record}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_over_its_concurrency_limit_pushes_back_and_every_execution_completes() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let storage = file_storage(dir.path());
    let resize = Service::start("resize-svc", dir.path(), &storage);
    let metrics: SocketAddr = free_addr();
    let mut limited = storage.clone();
    limited.insert("MAX_CONCURRENT_REQUESTS".into(), "1".into());
    limited.insert("METRICS_LISTEN_ADDR".into(), metrics.to_string());
    let filter = Service::start("filter-svc", dir.path(), &limited);
    let env = backend_env(&storage, &resize, &filter, &sqlite(dir.path()));
    let (mut backend, api) = backend(dir.path(), "backend", &env, &[]);
    api.wait_ready(&mut backend).await;
    // Small: the calls are short, yet 8 arriving at once still overlap.
    let file = api.upload("chelsea.jpg").await;

    // No retry policy: a refusal must not count as a failed attempt.
    let body = json!({
        "pipeline": {"pipelineName": "backpressure", "steps": [
            {"stepId": "blur", "componentName": "filter", "parameters": {"filter_type": "gaussian", "intensity": 4.0}},
            {"stepId": "sharpen", "componentName": "filter", "dependencies": ["blur"], "parameters": {"filter_type": "sharpen", "intensity": 1.0}},
        ]},
        "inputs": [file["file_id"]],
    });
    let started = Instant::now();
    let runs = futures::future::join_all((0..8).map(|_| api.execute(&body, true))).await;
    let took = started.elapsed();
    for (code, record) in &runs {
        assert_eq!(*code, 200, "{record}");
        assert_eq!(record["status"], "completed", "{record}");
        for s in record["steps"].as_array().unwrap() {
            assert_eq!(s["attempts"], 1, "waiting is not a retry: {record}");
        }
    }
    let service_metrics = api
        .http
        .get(format!("http://{metrics}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let rejected = counter(
        &service_metrics,
        "imageflow_concurrency_rejections_total",
        "",
    );
    assert!(
        rejected >= 1.0,
        "the service refused calls over its limit of 1:\n{service_metrics}"
    );
    let waited = counter(
        &api.metrics().await,
        "imageflow_grpc_client_errors_total",
        "ResourceExhausted",
    );
    assert!(waited >= 1.0, "the backend saw the refusals");
    eprintln!(
        "FIGURE backpressure: 8 executions x 2 filter steps, limit 1: {rejected} refusals at the service, {waited} seen by the backend, all completed in {took:?}"
    );
}

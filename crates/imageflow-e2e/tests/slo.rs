//! `imageflowctl slo` against a real Prometheus (Debian's `prometheus`) that
//! scrapes the backend's `/metrics` while pipelines run: the report's numbers
//! are the ones the run produced.

#![allow(clippy::unwrap_used)]

use std::{collections::HashMap, path::Path, process::Command, time::Duration};

use imageflow_testkit::{ChildProcess, fixture, free_addr, workspace_binary};
use serde_json::{Value, json};

const PROMETHEUS: &str = "/usr/bin/prometheus";

fn start_prometheus(dir: &Path, target: &str) -> (std::process::Child, String) {
    assert!(
        Path::new(PROMETHEUS).exists(),
        "{PROMETHEUS} is missing: run scripts/setup.sh (it installs Debian's prometheus)"
    );
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: backend-api\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let listen = free_addr();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let child = Command::new(PROMETHEUS)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={listen}"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    (child, format!("http://{listen}"))
}

async fn query(http: &reqwest::Client, prometheus: &str, q: &str) -> Option<f64> {
    let body: Value = http
        .get(format!("{prometheus}/api/v1/query"))
        .query(&[("query", q)])
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    body.pointer("/data/result/0/value/1")?
        .as_str()?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slo_report_from_a_real_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let storage = format!("file://{}", dir.path().join("data").display());
    let grpc = free_addr();
    let resize = ChildProcess::spawn(
        "resize-svc",
        &HashMap::from([
            ("GRPC_LISTEN_ADDR".into(), grpc.to_string()),
            ("STORAGE_URL".into(), storage.clone()),
        ]),
        dir.path(),
    );
    let http_addr = free_addr();
    let mut backend = ChildProcess::spawn(
        "backend-api",
        &HashMap::from([
            ("HTTP_LISTEN_ADDR".into(), http_addr.to_string()),
            ("STORAGE_URL".into(), storage),
            (
                "DATABASE_URL".into(),
                format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("db.sqlite").display()
                ),
            ),
            ("RESIZE_GRPC_ENDPOINT".into(), format!("http://{grpc}")),
        ]),
        dir.path(),
    );
    let api = format!("http://{http_addr}");
    let http = reqwest::Client::new();
    for _ in 0..300 {
        backend.assert_running();
        if http
            .get(format!("{api}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let file: Value = http
        .post(format!("{api}/v1/files"))
        .header("content-type", "image/jpeg")
        .body(fixture("chelsea.jpg"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run = |width: u32, height: u32| {
        let http = http.clone();
        let url = format!("{api}/v1/executions?wait=true");
        let body = json!({
            "pipeline": {"pipelineName": "slo", "steps": [
                {"stepId": "r", "componentName": "resize",
                 "parameters": {"width": width, "height": height, "maintain_aspect_ratio": false}}]},
            "inputs": [file["file_id"]],
        });
        async move {
            let response = http.post(url).json(&body).send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()["status"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    // One run before the first scrape: Prometheus' increase() only counts
    // what happens after a series' first sample, as in any long-lived system.
    assert_eq!(run(32, 24).await, "completed");

    let (mut prometheus, prom_url) = start_prometheus(dir.path(), &http_addr.to_string());
    let mut scraped = false;
    for _ in 0..300 {
        if query(&http, &prom_url, "sum(pipeline_executions_total)").await == Some(1.0) {
            scraped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        scraped,
        "prometheus never scraped the backend; see {}",
        dir.path().join("prometheus.log").display()
    );

    // Three executions complete; one is refused by the service (an output
    // over its pixel limit), so a quarter of them fail.
    for (width, height, expected) in [
        (64, 48, "completed"),
        (128, 96, "completed"),
        (200, 150, "completed"),
        (16384, 16384, "failed"),
    ] {
        assert_eq!(run(width, height).await, expected);
    }
    // Until Prometheus has scraped the final counts.
    let mut counted = false;
    for _ in 0..300 {
        if query(&http, &prom_url, "sum(pipeline_executions_total)").await == Some(5.0) {
            counted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(counted, "prometheus did not see the five executions");

    let out = Command::new(workspace_binary("imageflowctl"))
        .args(["slo", "--prometheus", &prom_url, "--window", "5m", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["availability"], 1.0, "no 5xx in the run: {report}");
    assert_eq!(report["error_budget_burn"], 0.0, "{report}");
    let error_rate = report["pipeline_error_rate"].as_f64().unwrap();
    // One of the four measured runs failed (one more completed before the
    // first scrape); increase() extrapolates over the window, so the ratio is
    // near a quarter, not exactly it.
    assert!(
        (0.15..=0.30).contains(&error_rate),
        "about 1 in 4 executions failed: {report}"
    );
    let executions = report["executions"].as_f64().unwrap();
    assert!((4.0..=6.0).contains(&executions), "{report}");
    let p95 = report["p95_latency_seconds"].as_f64().unwrap();
    assert!(p95 > 0.0 && p95 < 60.0, "{report}");
    let breaches: Vec<&str> = report["breaches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap())
        .collect();
    assert_eq!(breaches.len(), 1, "{report}");
    assert!(breaches[0].starts_with("pipeline error rate "), "{report}");

    // The table and --fail-on-breach for scripts and CI gates.
    let table = Command::new(workspace_binary("imageflowctl"))
        .args([
            "slo",
            "--prometheus",
            &prom_url,
            "--window",
            "5m",
            "--fail-on-breach",
        ])
        .output()
        .unwrap();
    assert_eq!(table.status.code(), Some(3));
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("API availability") && text.contains("100.000%"),
        "{text}"
    );
    assert!(text.contains("BREACH: pipeline error rate "), "{text}");

    let _ = prometheus.kill();
    let _ = prometheus.wait();
    drop(resize);
}

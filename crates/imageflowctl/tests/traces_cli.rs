//! `imageflowctl traces` against a Jaeger query API answering the canned
//! response (the documented Jaeger JSON), checking both what it asks and what
//! it prints.

#![allow(clippy::unwrap_used)]

use std::{
    io::{BufRead, BufReader, Write},
    net::TcpListener,
    process::Command,
    sync::{Arc, Mutex},
};

/// Answers every request with `body`, remembering the request lines.
fn canned_jaeger(body: &'static str) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            log.lock().unwrap().push(line.trim().to_string());
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap() == 0 || header == "\r\n" {
                    break;
                }
            }
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(answer.as_bytes()).unwrap();
        }
    });
    (url, seen)
}

fn imageflowctl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_imageflowctl"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn bottleneck_report_from_jaeger() {
    let (url, seen) = canned_jaeger(include_str!("fixtures/jaeger-traces.json"));
    let (ok, out, err) = imageflowctl(&[
        "traces",
        "--jaeger",
        &url,
        "report",
        "--service",
        "imageflow-backend-api",
        "--lookback",
        "1h",
        "--top",
        "3",
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("service imageflow-backend-api, last 1h: 2 traces, 1 with errors (50.0%), average 110.0 ms"),
        "{out}"
    );
    let first_op = out.lines().nth(2).unwrap();
    assert!(
        first_op.contains("imageflow-backend-api POST /v1/executions"),
        "{out}"
    );
    let request = seen.lock().unwrap()[0].clone();
    assert!(
        request.starts_with("GET /api/traces?service=imageflow-backend-api&start="),
        "{request}"
    );
    assert!(request.contains("&limit=1000"), "{request}");
}

#[test]
fn one_execution_by_its_id() {
    let (url, seen) = canned_jaeger(include_str!("fixtures/jaeger-traces.json"));
    let (ok, out, err) = imageflowctl(&["traces", "--jaeger", &url, "execution", "exec-1"]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("trace 4bf92f3577b34da6a3ce929d0e0e4736\n"),
        "{out}"
    );
    assert!(
        out.contains("POST /v1/executions [imageflow-backend-api]"),
        "{out}"
    );
    let request = seen.lock().unwrap()[0].clone();
    assert!(
        request.contains("tags=%7B%22execution.id%22%3A%22exec-1%22%7D"),
        "the lookup asks Jaeger for the execution.id tag: {request}"
    );
}

#[test]
fn an_empty_answer_says_why() {
    let (url, _) =
        canned_jaeger(r#"{"data": [], "total": 0, "limit": 0, "offset": 0, "errors": null}"#);
    let (ok, _, err) = imageflowctl(&["traces", "--jaeger", &url, "execution", "nope"]);
    assert!(!ok);
    assert!(err.contains("no trace with execution.id=nope"), "{err}");
}

#[test]
fn an_unreachable_jaeger_is_a_clear_error() {
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (ok, _, err) = imageflowctl(&[
        "traces",
        "--jaeger",
        &format!("http://{closed}"),
        "services",
    ]);
    assert!(!ok);
    assert!(err.contains("cannot reach Jaeger"), "{err}");
}

//! The HTTP server's header-read timeout (HTTP_HEADER_READ_TIMEOUT_SECONDS):
//! a client that never finishes its request head is disconnected, while other
//! clients are served as usual.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Reads until the server closes the connection (EOF or reset); what it sent.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return received,
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let services = start_services(dir.path()).await;
    let db = database_url(dir.path(), false).await;
    let backend = start_backend(backend_env(
        dir.path(),
        &db,
        &services,
        &[("HTTP_HEADER_READ_TIMEOUT_SECONDS", "1")],
    ))
    .await;
    let addr = backend.url.trim_start_matches("http://").to_string();

    // A request head without its final blank line, then silence.
    let mut slow = TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();

    // Meanwhile another connection is served.
    let (status, _) = backend.get("/healthz").await;
    assert_eq!(status, 200);

    // A bound that fails the test (the server kept the connection), not a
    // performance assertion: the timeout is 1 s.
    let received = tokio::time::timeout(Duration::from_secs(10), read_until_closed(&mut slow))
        .await
        .expect("the server kept a connection whose headers never ended");
    let text = String::from_utf8_lossy(&received);
    assert!(
        received.is_empty() || text.starts_with("HTTP/1.1 408"),
        "unexpected answer to an unfinished request head: {text:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed before the timeout: {:?}",
        started.elapsed()
    );

    // Headers sent slowly, a byte every 200 ms (slowloris): cut off as well,
    // the timeout covers the whole head, not the gap between bytes.
    let mut dribble = TcpStream::connect(&addr).await.unwrap();
    let head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let sent = tokio::time::timeout(Duration::from_secs(10), async {
        for byte in head {
            if dribble.write_all(&[*byte]).await.is_err() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        true
    })
    .await
    .expect("dribbling the head took too long");
    let received = tokio::time::timeout(Duration::from_secs(10), read_until_closed(&mut dribble))
        .await
        .expect("the server kept a connection dribbling its headers");
    let text = String::from_utf8_lossy(&received);
    assert!(
        !text.starts_with("HTTP/1.1 200"),
        "a head sent over {} s was answered (sent in full: {sent})",
        head.len() / 5
    );

    // A complete request on a fresh connection still works, and its response
    // is not bound by the header timeout: a full request/response over raw TCP.
    let mut normal = TcpStream::connect(&addr).await.unwrap();
    normal
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let received = tokio::time::timeout(Duration::from_secs(10), read_until_closed(&mut normal))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");

    backend.stop().await;
}

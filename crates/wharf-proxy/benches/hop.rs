//! The proxy hop: latency of requests with a 1 KiB answer sent straight to a backend
//! and through the proxy, one after another over keep-alive connections, in the same
//! run; the difference is what the hop adds.
//!
//! Run with `cargo bench -p wharf-proxy --bench hop` (WHARF_BENCH_RUNS: requests per
//! side, default 20000).
#![allow(clippy::print_stdout)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use wharf_proxy::{Route, serve_http};

async fn backend() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(common::serve_kib(listener));
    addr
}

async fn measure(url: &str, runs: usize) -> Vec<Duration> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let uri: hyper::Uri = url.parse().unwrap();
    let mut took = Vec::with_capacity(runs);
    for i in 0..runs + 500 {
        let begun = Instant::now();
        let request = Request::get(uri.clone()).body(Empty::new()).unwrap();
        let response = client.request(request).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), 1024);
        // The first requests warm the pools up.
        if i >= 500 {
            took.push(begun.elapsed());
        }
    }
    took.sort();
    took
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runs: usize = std::env::var("WHARF_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20_000);
    let addr = backend().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxied = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(serve_http(
        listener,
        Arc::new(Route::new(&[addr])),
        CancellationToken::new(),
        "bench".into(),
    ));
    let direct = measure(&format!("http://{addr}/"), runs).await;
    let through = measure(&proxied, runs).await;
    println!("{runs} sequential requests per side, 1 KiB answers, keep-alive");
    println!("| path | p50 | p99 |");
    println!("|---|---|---|");
    for (name, d) in [("direct", &direct), ("through the proxy", &through)] {
        println!("| {name} | {:?} | {:?} |", pct(d, 0.5), pct(d, 0.99));
    }
    println!(
        "| added by the hop | {:?} | {:?} |",
        pct(&through, 0.5).saturating_sub(pct(&direct, 0.5)),
        pct(&through, 0.99).saturating_sub(pct(&direct, 0.99))
    );
}

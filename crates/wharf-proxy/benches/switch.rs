//! The switch: how long after a new instance joins its service's route (what an agent
//! does on the instance's first passing check) the first request reaches it, under
//! steady load from 4 keep-alive clients. 200 rounds; median and p99.
//!
//! Run with `cargo bench -p wharf-proxy --bench switch` (WHARF_BENCH_ROUNDS, default
//! 200).
#![allow(clippy::print_stdout)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use wharf_proxy::{Route, serve_http};

/// A new instance: tells when its first request arrives.
async fn newcomer(first: Arc<Notify>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let first = first.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| {
                    first.notify_one();
                    async move {
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                            vec![b'x'; 1024],
                        ))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize = std::env::var("WHARF_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(200);
    let old = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(common::serve_kib(listener));
        addr
    };
    let route = Arc::new(Route::new(&[old]));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url: hyper::Uri = format!("http://{}/", listener.local_addr().unwrap())
        .parse()
        .unwrap();
    tokio::spawn(serve_http(
        listener,
        route.clone(),
        CancellationToken::new(),
        "web".into(),
    ));
    let running = Arc::new(AtomicBool::new(true));
    for _ in 0..4 {
        let (url, running) = (url.clone(), running.clone());
        tokio::spawn(async move {
            let mut connector = HttpConnector::new();
            connector.set_nodelay(true);
            let client: Client<_, Empty<Bytes>> =
                Client::builder(TokioExecutor::new()).build(connector);
            while running.load(Ordering::Relaxed) {
                let request = Request::get(url.clone()).body(Empty::new()).unwrap();
                if let Ok(r) = client.request(request).await {
                    let _ = r.into_body().collect().await;
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut took = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let first = Arc::new(Notify::new());
        let new = newcomer(first.clone()).await;
        let begun = Instant::now();
        route.set(&[old, new]);
        first.notified().await;
        took.push(begun.elapsed());
        route.set(&[old]);
        while route.outstanding_on(new, &route.snapshot()) > 0 {
            tokio::task::yield_now().await;
        }
    }
    running.store(false, Ordering::Relaxed);
    took.sort();
    println!(
        "switch (a new instance's first request after it joins the route, 4 clients, {rounds} rounds): p50 {:?}, p99 {:?}, max {:?}",
        pct(&took, 0.5),
        pct(&took, 0.99),
        took[took.len() - 1]
    );
}

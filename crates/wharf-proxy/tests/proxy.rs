//! The proxy with real sockets: backends are small HTTP servers on loopback.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use wharf_proxy::{Route, serve_http, serve_tcp};

/// A backend answering its name; stopped by its token (its connections close).
async fn backend(name: &'static str) -> (SocketAddr, CancellationToken) {
    answering(name, hyper::StatusCode::OK).await
}

/// A backend answering its name with `status`.
async fn answering(
    name: &'static str,
    status: hyper::StatusCode,
) -> (SocketAddr, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = tokio::select! {
                a = listener.accept() => a.unwrap(),
                _ = token.cancelled() => return,
            };
            let token = token.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async move {
                    let mut response = Response::new(Full::new(Bytes::from(name)));
                    *response.status_mut() = status;
                    Ok::<_, std::convert::Infallible>(response)
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = token.cancelled() => {}
                }
            });
        }
    });
    (addr, stop)
}

async fn proxy(route: Arc<Route>) -> (String, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    tokio::spawn(serve_http(listener, route, stop.clone(), "web".into()));
    (url, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_spread_over_the_backends() {
    let (a, _sa) = backend("a").await;
    let (b, _sb) = backend("b").await;
    let (url, _stop) = proxy(Arc::new(Route::new(&[a, b]))).await;
    let client = reqwest::Client::new();
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..200 {
        let body = client.get(&url).send().await.unwrap().text().await.unwrap();
        *seen.entry(body).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.values().all(|n| *n > 40), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_traffic_to_new_backends_under_load_fails_no_request() {
    let (a, stop_a) = backend("old").await;
    let (b, stop_b) = backend("old").await;
    let route = Arc::new(Route::new(&[a, b]));
    let (url, _stop) = proxy(route.clone()).await;
    let running = Arc::new(AtomicBool::new(true));
    let (sent, failed, new) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (url, running, sent, failed, new) = (
            url.clone(),
            running.clone(),
            sent.clone(),
            failed.clone(),
            new.clone(),
        );
        clients.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            while running.load(Ordering::Relaxed) {
                sent.fetch_add(1, Ordering::Relaxed);
                match client.get(&url).send().await {
                    Ok(r) if r.status().is_success() => {
                        if r.text().await.unwrap_or_default() == "new" {
                            new.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let wait_for = |n: usize| {
        let sent = sent.clone();
        async move {
            let begun = Instant::now();
            while sent.load(Ordering::Relaxed) < n && begun.elapsed() < Duration::from_secs(10) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    wait_for(300).await;
    // The switch: new backends in, old ones drained, then stopped.
    let (c, _sc) = backend("new").await;
    let (d, _sd) = backend("new").await;
    let retired = route.snapshot();
    route.set(&[c, d]);
    let begun = Instant::now();
    while [a, b]
        .iter()
        .any(|addr| route.outstanding_on(*addr, &retired) > 0)
    {
        assert!(
            begun.elapsed() < Duration::from_secs(5),
            "the old backends drain"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    stop_a.cancel();
    stop_b.cancel();
    let after = sent.load(Ordering::Relaxed);
    wait_for(after + 300).await;
    running.store(false, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "of {} requests",
        sent.load(Ordering::Relaxed)
    );
    assert!(
        new.load(Ordering::Relaxed) >= 250,
        "traffic moved to the new backends"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_healthy_instance_the_answer_says_so() {
    let route = Route::default().with_pause(Duration::from_millis(200));
    let (url, _stop) = proxy(Arc::new(route)).await;
    let answer = reqwest::get(&url).await.unwrap();
    assert_eq!(answer.status(), 503);
    let text = answer.text().await.unwrap();
    assert!(text.contains("no healthy instance of `web`"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waits_for_a_backend_while_the_service_has_none() {
    let route = Arc::new(Route::default());
    let (url, _stop) = proxy(route.clone()).await;
    let request = tokio::spawn(async move { reqwest::get(&url).await.unwrap() });
    // The replacement becomes healthy a moment later.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!request.is_finished(), "it waits rather than being refused");
    let (b, _sb) = backend("new").await;
    route.set(&[b]);
    let answer = request.await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.unwrap(), "new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_refused_by_one_backend_is_sent_to_another() {
    // A port nothing listens on.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (live, _s) = backend("live").await;
    let (url, _stop) = proxy(Arc::new(Route::new(&[dead, live]))).await;
    let client = reqwest::Client::new();
    for _ in 0..50 {
        let answer = client.get(&url).send().await.unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.text().await.unwrap(), "live");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_reach_a_backend_byte_for_byte() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = echo.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(serve_tcp(
        listener,
        Arc::new(Route::new(&[echo_addr])),
        stop.clone(),
    ));
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    client.write_all(b"PING redis\r\n").await.unwrap();
    let mut got = [0u8; 12];
    client.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"PING redis\r\n");
    stop.cancel();
}

/// A backend that switches every request to `protocol`, then echoes what it gets.
async fn echo_upgrading_backend() -> SocketAddr {
    upgrading_backend("echo").await
}

async fn upgrading_backend(protocol: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |mut req: hyper::Request<hyper::body::Incoming>| async move {
                        let upgraded = hyper::upgrade::on(&mut req);
                        tokio::spawn(async move {
                            if let Ok(io) = upgraded.await {
                                let mut io = TokioIo::new(io);
                                let (mut r, mut w) = tokio::io::split(&mut io);
                                let _ = tokio::io::copy(&mut r, &mut w).await;
                            }
                        });
                        let response = Response::builder()
                            .status(101)
                            .header("connection", "upgrade")
                            .header("upgrade", protocol)
                            .body(Full::new(Bytes::new()))
                            .unwrap();
                        Ok::<_, std::convert::Infallible>(response)
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_connection_like_a_websocket_is_joined_through() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = echo_upgrading_backend().await;
    let route = Arc::new(Route::new(&[backend]));
    let (url, _stop) = proxy(route.clone()).await;
    let mut tcp = tokio::net::TcpStream::connect(url.trim_start_matches("http://"))
        .await
        .unwrap();
    tcp.write_all(
        b"GET /socket HTTP/1.1\r\nHost: web\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    tcp.write_all(b"hello over the socket").await.unwrap();
    let mut echoed = [0u8; 21];
    tcp.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"hello over the socket");
    // The open socket counts against its backend (so a drain waits for it).
    assert_eq!(route.outstanding_on(backend, &[]), 1);
    drop(tcp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_of_an_instance_leaving_the_rotation_gets_a_close_frame() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = upgrading_backend("websocket").await;
    let route = Arc::new(Route::new(&[backend]));
    let (url, _stop) = proxy(route.clone()).await;
    let mut tcp = tokio::net::TcpStream::connect(url.trim_start_matches("http://"))
        .await
        .unwrap();
    tcp.write_all(
        b"GET /socket HTTP/1.1\r\nHost: web\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    // A masked text frame "hello", echoed back by the instance as it came.
    let frame = [
        0x81,
        0x85,
        1,
        2,
        3,
        4,
        b'h' ^ 1,
        b'e' ^ 2,
        b'l' ^ 3,
        b'l' ^ 4,
        b'o' ^ 1,
    ];
    tcp.write_all(&frame).await.unwrap();
    let mut echoed = [0u8; 11];
    tcp.read_exact(&mut echoed).await.unwrap();
    assert_eq!(echoed, frame);
    // The instance leaves the rotation (its drain begins): the client is told.
    let retired = route.snapshot();
    route.set::<SocketAddr>(&[]);
    assert_eq!(
        route.outstanding_on(backend, &retired),
        1,
        "the socket holds the drain"
    );
    let mut close = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut close))
        .await
        .expect("a close frame comes at once")
        .unwrap();
    assert_eq!(close, [0x88, 0x02, 0x03, 0xE9], "close, 1001 going away");
    // Once answered, the connection ends and no longer holds the drain.
    tcp.write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE9])
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest)).await;
    let drained = async {
        while route.outstanding_on(backend, &retired) > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    assert!(
        tokio::time::timeout(Duration::from_secs(5), drained)
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_answering_a_run_of_5xx_is_ejected_for_a_while() {
    let (good, _sg) = backend("good").await;
    let (bad, _sb) = answering("bad", hyper::StatusCode::INTERNAL_SERVER_ERROR).await;
    let (url, _stop) = proxy(Arc::new(Route::new(&[good, bad]))).await;
    let client = reqwest::Client::new();
    let mut errors = 0;
    for _ in 0..200 {
        if client
            .get(&url)
            .send()
            .await
            .unwrap()
            .status()
            .is_server_error()
        {
            errors += 1;
        }
    }
    // Without ejection about half would fail; with it, the run that ejects it (and, on
    // a slow machine, one more run once the first ejection of 2 s is over).
    assert!(
        (5..=10).contains(&errors),
        "five 5xx in a row eject the backend: {errors} of 200 failed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_backend_costs_no_request_and_a_lone_one_is_never_ejected() {
    let (good, _sg) = backend("good").await;
    let (dead, stop_dead) = backend("dead").await;
    stop_dead.cancel();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (url, _stop) = proxy(Arc::new(Route::new(&[good, dead]))).await;
    let client = reqwest::Client::new();
    for _ in 0..50 {
        let r = client.get(&url).send().await.unwrap();
        assert_eq!(r.text().await.unwrap(), "good");
    }
    // A service with one backend keeps trying it, ejected or not.
    let (url, _stop) = proxy(Arc::new(Route::new(&[dead]))).await;
    for _ in 0..3 {
        let r = client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), hyper::StatusCode::BAD_GATEWAY);
    }
}

/// Two agents' mesh credentials, from one certificate authority: hosts 1 and 2.
fn mesh_pair() -> (wharf_pki::MeshTls, wharf_pki::MeshTls, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let ca = wharf_pki::Authority::load_or_create(dir.path()).unwrap();
    let host = |id| {
        let key = wharf_pki::new_agent_key("agent").unwrap();
        let cert = ca.sign_agent(&key.csr_pem, id, id as u64).unwrap();
        wharf_pki::mesh_tls(&cert, &key.key_pem, ca.cert_pem()).unwrap()
    };
    (host(1), host(2), dir)
}

/// Host 2's agent: a mesh listener admitting host 1 to `ports`.
async fn mesh_agent(
    tls: &wharf_pki::MeshTls,
    ports: Vec<u16>,
) -> (
    SocketAddr,
    Arc<wharf_proxy::mesh::MeshInbound>,
    CancellationToken,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let via = listener.local_addr().unwrap();
    let inbound = wharf_proxy::mesh::MeshInbound::new(Box::new(move |cert, port| {
        wharf_pki::agent_identity(cert).is_some_and(|id| id.host_id == 1) && ports.contains(&port)
    }));
    let stop = CancellationToken::new();
    tokio::spawn(wharf_proxy::mesh::serve_mesh(
        listener,
        tls.server.clone(),
        inbound.clone(),
        stop.clone(),
    ));
    (via, inbound, stop)
}

fn on_host_2(
    via: SocketAddr,
    port: u16,
    dialer: &Arc<wharf_proxy::mesh::MeshDialer>,
) -> wharf_proxy::Target {
    wharf_proxy::Target::Mesh(wharf_proxy::MeshTarget {
        host: "host-2".into(),
        via,
        port,
        dialer: dialer.clone(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_on_another_host_is_reached_through_its_agent() {
    let (one, two, _dir) = mesh_pair();
    let (instance, _si) = backend("remote").await;
    let (via, inbound, _sm) = mesh_agent(&two, vec![instance.port()]).await;
    let dialer = Arc::new(wharf_proxy::mesh::MeshDialer::new(one.client.clone()));
    let route = Arc::new(Route::new(&[on_host_2(via, instance.port(), &dialer)]));
    let (url, _stop) = proxy(route.clone()).await;
    let client = reqwest::Client::new();
    for _ in 0..20 {
        let r = client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "remote");
    }
    assert_eq!(
        inbound.tunnels_to(instance.port()),
        1,
        "one kept connection carried them all"
    );
    // Leaving the route closes the kept connection: the other agent sees it go.
    route.set::<SocketAddr>(&[]);
    let closed = async {
        while inbound.tunnels_to(instance.port()) > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), closed)
        .await
        .expect("the tunnel closes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_the_other_agent_does_not_admit_is_refused_and_another_instance_answers() {
    let (one, two, _dir) = mesh_pair();
    let (instance, _si) = backend("not yours").await;
    let (local, _sl) = backend("local").await;
    let (via, _inbound, _sm) = mesh_agent(&two, vec![]).await;
    let dialer = Arc::new(wharf_proxy::mesh::MeshDialer::new(one.client.clone()));
    let route = Arc::new(Route::new(&[
        on_host_2(via, instance.port(), &dialer),
        wharf_proxy::Target::Local(local),
    ]));
    let (url, _stop) = proxy(route).await;
    let client = reqwest::Client::new();
    for _ in 0..20 {
        let r = client.post(&url).body("x").send().await.unwrap();
        assert_eq!(r.text().await.unwrap(), "local", "nothing sent was lost");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_of_another_name_or_without_a_certificate_is_not_trusted() {
    let (one, two, dir) = mesh_pair();
    let (instance, _si) = backend("remote").await;
    let (via, _inbound, _sm) = mesh_agent(&two, vec![instance.port()]).await;
    // Host 1 meant host 3: host 2's certificate does not name it.
    let dialer = Arc::new(wharf_proxy::mesh::MeshDialer::new(one.client.clone()));
    let mut wrong = on_host_2(via, instance.port(), &dialer);
    if let wharf_proxy::Target::Mesh(m) = &mut wrong {
        m.host = "host-3".into();
    }
    assert!(wrong.connect().await.is_err());
    // A caller that trusts the CA but has no certificate of its own is refused.
    let ca = wharf_pki::Authority::load_or_create(dir.path()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap())
        .unwrap();
    let anonymous = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let anonymous = Arc::new(wharf_proxy::mesh::MeshDialer::new(Arc::new(anonymous)));
    assert!(
        on_host_2(via, instance.port(), &anonymous)
            .connect()
            .await
            .is_err()
    );
    assert!(
        on_host_2(via, instance.port(), &dialer)
            .connect()
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_speaking_http_1_0_does_not_cost_clients_their_kept_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Python's http.server answers every request in HTTP/1.0 and closes.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let instance = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = tcp.read(&mut buf).await;
                let _ = tcp
                    .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
            });
        }
    });
    let (url, _stop) = proxy(Arc::new(Route::new(&[instance]))).await;
    let mut client = tokio::net::TcpStream::connect(url.trim_start_matches("http://"))
        .await
        .unwrap();
    for _ in 0..2 {
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        while !answer.ends_with(b"ok") {
            let mut buf = [0u8; 1024];
            let n = client.read(&mut buf).await.unwrap();
            assert!(n > 0, "the connection stays open");
            answer.extend_from_slice(&buf[..n]);
        }
        assert!(
            answer.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_hangs_is_cut_at_the_response_timeout_while_others_answer() {
    // Takes connections and requests, never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hanging = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    let (good, _sg) = backend("good").await;
    let route = Arc::new(Route::new(&[hanging]));
    route.set_response_timeout(Duration::from_millis(300));
    let (url, _stop) = proxy(route).await;
    let (good_url, _stop_good) = proxy(Arc::new(Route::new(&[good]))).await;
    let client = reqwest::Client::new();
    let begun = Instant::now();
    let stuck = tokio::spawn({
        let (client, url) = (client.clone(), url.clone());
        async move { client.get(&url).send().await.unwrap() }
    });
    // Meanwhile the agent's other addresses answer at once.
    for _ in 0..10 {
        let r = client.get(&good_url).send().await.unwrap();
        assert_eq!(r.text().await.unwrap(), "good");
    }
    let r = stuck.await.unwrap();
    assert_eq!(r.status(), hyper::StatusCode::GATEWAY_TIMEOUT);
    assert!(begun.elapsed() >= Duration::from_millis(300));
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("did not answer within 300ms")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_is_served_by_http1_instances() {
    let (a, _sa) = backend("a").await;
    let (url, _stop) = proxy(Arc::new(Route::new(&[a]))).await;
    let tcp = tokio::net::TcpStream::connect(url.trim_start_matches("http://"))
        .await
        .unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    // Several requests at once on the one connection.
    let mut answers = Vec::new();
    for _ in 0..10 {
        let request = hyper::Request::get(format!("{url}/x"))
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        answers.push(sender.send_request(request));
    }
    for answer in answers {
        let response = answer.await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), hyper::Version::HTTP_2);
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(&body[..], b"a");
    }
}

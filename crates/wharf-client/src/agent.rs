//! The agent's client: joining with a token, then mutual TLS with the pinned CA.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use wharf_api::ApiError;
use wharf_api::agent::{AgentReport, Assignments, JoinRequest, JoinResponse};
use wharf_pki::CONTROLLER_NAME;

use crate::ClientError;

/// A join token: `wharf1.<id>.<secret>.<sha256 of the controller's CA certificate>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub id: String,
    pub secret: String,
    pub ca_fingerprint: String,
}

impl std::str::FromStr for JoinToken {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.trim().split('.').collect();
        match parts.as_slice() {
            ["wharf1", id, secret, fp] if !id.is_empty() && !secret.is_empty() && fp.len() == 64 => {
                Ok(Self { id: id.to_string(), secret: secret.to_string(), ca_fingerprint: fp.to_string() })
            }
            _ => Err("not a wharf join token (expected `wharf1.<id>.<secret>.<ca-sha256>`, as `wharf token create` prints)".into()),
        }
    }
}

/// How long a runtime configuration read may take (a long poll waits up to 300 s).
const RUNTIME_WAIT: Duration = Duration::from_secs(330);
/// How long a runtime configuration read follows the controllers before it fails.
pub const RUNTIME_FAILOVER: Duration = Duration::from_secs(20);

/// The controller's answer to a runtime configuration read.
#[derive(Debug, Clone)]
pub struct RuntimeAnswer {
    pub status: u16,
    /// `x-wharf-revision`.
    pub revision: Option<String>,
    /// `x-wharf-config-token`: a renewed token, when the controller gave one.
    pub fresh_token: Option<String>,
    pub body: Vec<u8>,
}

/// Credentials a host got by joining.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub key_pem: String,
    pub cert_pem: String,
    pub ca_pem: String,
}

/// Where the controller's agent listener is: `https://HOST:PORT`.
pub async fn resolve(url: &str) -> Result<(SocketAddr, String), ClientError> {
    let bad = || {
        ClientError::Protocol(format!(
            "`{url}` is not a controller address like https://10.0.0.1:7443"
        ))
    };
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(bad)?
        .trim_end_matches('/');
    let addr = tokio::net::lookup_host(rest)
        .await
        .map_err(|e| ClientError::Unreachable {
            url: url.into(),
            reason: e.to_string(),
        })?
        .next()
        .ok_or_else(bad)?;
    Ok((addr, format!("https://{CONTROLLER_NAME}:{}", addr.port())))
}

async fn api_error(response: reqwest::Response) -> ClientError {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    match serde_json::from_str::<ApiError>(&text) {
        Ok(e) => ClientError::Api {
            status,
            error: e.error,
            hint: e.hint,
        },
        Err(_) => ClientError::Api {
            status,
            error: text,
            hint: None,
        },
    }
}

/// Joins the controller at `url` with `token`: checks the controller's CA against the
/// token's pin, then trades a signing request for a client certificate.
pub async fn join(
    list: &str,
    token: &JoinToken,
    name: &str,
    labels: BTreeMap<String, String>,
    capacity: wharf_api::agent::Capacity,
) -> Result<(JoinResponse, Credentials), ClientError> {
    // Of several controllers only the leader listens for agents: the first that answers.
    let mut last = None;
    for url in controller_urls(list) {
        match join_one(url, token, name, labels.clone(), capacity.clone()).await {
            Err(e @ ClientError::Unreachable { .. }) => last = Some(e),
            done => return done,
        }
    }
    Err(last
        .unwrap_or_else(|| ClientError::Protocol(format!("`{list}` names no controller address"))))
}

async fn join_one(
    url: &str,
    token: &JoinToken,
    name: &str,
    labels: BTreeMap<String, String>,
    capacity: wharf_api::agent::Capacity,
) -> Result<(JoinResponse, Credentials), ClientError> {
    let (addr, base) = resolve(url).await?;
    let unreachable = |e: reqwest::Error| ClientError::Unreachable {
        url: url.into(),
        reason: e.to_string(),
    };
    // The CA is fetched without verification, then checked against the pin: nothing
    // secret is sent before the controller is known to be the right one.
    let (ca_pem, fingerprint) = unverified_ca(addr, &format!("{base}/v1/join/ca"), url).await?;
    if fingerprint != token.ca_fingerprint {
        return Err(ClientError::Protocol(format!(
            "the controller at {url} presents CA {fingerprint}, not the one the token names; refusing to join"
        )));
    }
    let key = wharf_pki::new_agent_key(name).map_err(|e| ClientError::Protocol(e.to_string()))?;
    let pinned = pinned_builder(&ca_pem, addr)?
        .build()
        .map_err(unreachable)?;
    let request = JoinRequest {
        token_id: token.id.clone(),
        secret: token.secret.clone(),
        name: name.into(),
        labels,
        capacity,
        csr: key.csr_pem,
    };
    let response = pinned
        .post(format!("{base}/v1/join"))
        .json(&request)
        .send()
        .await
        .map_err(unreachable)?;
    if !response.status().is_success() {
        return Err(api_error(response).await);
    }
    let joined: JoinResponse = response
        .json()
        .await
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    let credentials = Credentials {
        key_pem: key.key_pem,
        cert_pem: joined.cert.clone(),
        ca_pem: joined.ca.clone(),
    };
    Ok((joined, credentials))
}

/// The CA a controller presents at `ca_url`, fetched without verifying it, and its
/// fingerprint: to be checked against a pin before anything is sent.
pub(crate) async fn unverified_ca(
    addr: SocketAddr,
    ca_url: &str,
    url: &str,
) -> Result<(String, String), ClientError> {
    let unreachable = |e: reqwest::Error| ClientError::Unreachable {
        url: url.into(),
        reason: e.to_string(),
    };
    let probe = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .resolve(CONTROLLER_NAME, addr)
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(unreachable)?;
    let pem = probe
        .get(ca_url)
        .send()
        .await
        .map_err(unreachable)?
        .text()
        .await
        .map_err(unreachable)?;
    let fingerprint =
        wharf_pki::fingerprint_pem(&pem).map_err(|e| ClientError::Protocol(e.to_string()))?;
    Ok((pem, fingerprint))
}

pub(crate) fn pinned_builder(
    ca_pem: &str,
    addr: SocketAddr,
) -> Result<reqwest::ClientBuilder, ClientError> {
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes())
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    // Every request says which wharf sends it, so a controller refuses an agent it
    // does not work with before anything else.
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        wharf_api::agent::VERSION_HEADER,
        reqwest::header::HeaderValue::from_static(env!("CARGO_PKG_VERSION")),
    );
    Ok(reqwest::Client::builder()
        .default_headers(headers)
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .resolve(CONTROLLER_NAME, addr)
        .connect_timeout(Duration::from_secs(5)))
}

/// One controller an agent may reach.
struct Endpoint {
    base: String,
    url: String,
    http: reqwest::Client,
}

/// A joined agent's connection to its controller: to whichever of the controllers it
/// was given answers (they share one database; only the leader listens for agents), the
/// next one tried whenever the one in use cannot be reached.
#[derive(Clone)]
pub struct AgentClient {
    endpoints: std::sync::Arc<Vec<Endpoint>>,
    current: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// The addresses in a `--controller` list (comma-separated).
pub fn controller_urls(list: &str) -> Vec<&str> {
    list.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

impl AgentClient {
    /// A client of the controllers in `list` (one address, or several comma-separated).
    pub async fn connect(list: &str, credentials: &Credentials) -> Result<Self, ClientError> {
        let mut endpoints = Vec::new();
        for url in controller_urls(list) {
            let (addr, base) = resolve(url).await?;
            let identity = reqwest::Identity::from_pem(
                format!("{}\n{}", credentials.cert_pem, credentials.key_pem).as_bytes(),
            )
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
            let http = pinned_builder(&credentials.ca_pem, addr)?
                .identity(identity)
                .build()
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
            endpoints.push(Endpoint {
                base,
                url: url.into(),
                http,
            });
        }
        if endpoints.is_empty() {
            return Err(ClientError::Protocol(format!(
                "`{list}` names no controller address like https://10.0.0.1:7443"
            )));
        }
        Ok(Self {
            endpoints: std::sync::Arc::new(endpoints),
            current: Default::default(),
        })
    }

    fn endpoint(&self) -> &Endpoint {
        let n = self.current.load(std::sync::atomic::Ordering::Relaxed);
        &self.endpoints[n % self.endpoints.len()]
    }

    /// A request to the controller in use.
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let endpoint = self.endpoint();
        endpoint
            .http
            .request(method, format!("{}{path}", endpoint.base))
    }

    /// The controller in use could not be reached: the next one is tried from now on.
    fn unreachable(&self, e: reqwest::Error) -> ClientError {
        let url = self.endpoint().url.clone();
        if self.endpoints.len() > 1 {
            self.current
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        ClientError::Unreachable {
            url,
            reason: e.to_string(),
        }
    }

    /// Blocks until the assignments differ from `index` (or the controller's wait ends).
    pub async fn assignments(&self, index: u64) -> Result<Assignments, ClientError> {
        let response = self
            .request(reqwest::Method::GET, "/v1/agent/assignments")
            .query(&[("index", index)])
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if !response.status().is_success() {
            return Err(api_error(response).await);
        }
        response
            .json()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// An instance's runtime configuration read (`/v1/runtime/config` with `query` and
    /// its token), passed to the controller in use over this agent's mutual TLS. A
    /// controller that cannot be reached (a failover) is followed by the next for up to
    /// [`RUNTIME_FAILOVER`], so a watching instance sees an answer, not an error.
    pub async fn runtime_config(
        &self,
        query: &str,
        authorization: Option<&str>,
    ) -> Result<RuntimeAnswer, ClientError> {
        let begun = std::time::Instant::now();
        loop {
            let mut request = self
                .request(
                    reqwest::Method::GET,
                    &format!("/v1/agent/runtime/config?{query}"),
                )
                .timeout(RUNTIME_WAIT);
            if let Some(value) = authorization {
                request = request.header(reqwest::header::AUTHORIZATION, value);
            }
            match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let header = |name: &str| {
                        response
                            .headers()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned)
                    };
                    let (revision, fresh_token) =
                        (header("x-wharf-revision"), header("x-wharf-config-token"));
                    let body = response
                        .bytes()
                        .await
                        .map_err(|e| ClientError::Protocol(e.to_string()))?;
                    return Ok(RuntimeAnswer {
                        status,
                        revision,
                        fresh_token,
                        body: body.to_vec(),
                    });
                }
                Err(e) => {
                    let error = self.unreachable(e);
                    if begun.elapsed() >= RUNTIME_FAILOVER {
                        return Err(error);
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }

    /// Answers a task the controller gave (an exec's output, a purge's count).
    pub async fn send_answer(
        &self,
        id: u64,
        answer: &wharf_api::agent::HostAnswer,
    ) -> Result<(), ClientError> {
        let response = self
            .request(reqwest::Method::POST, &format!("/v1/agent/answers/{id}"))
            .json(answer)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if !response.status().is_success() {
            return Err(api_error(response).await);
        }
        Ok(())
    }

    /// Answers a log request with the tail of an instance's log.
    pub async fn send_log(&self, id: u64, text: String) -> Result<(), ClientError> {
        let response = self
            .request(reqwest::Method::POST, &format!("/v1/agent/logs/{id}"))
            .body(text)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if !response.status().is_success() {
            return Err(api_error(response).await);
        }
        Ok(())
    }

    pub async fn report(&self, report: &AgentReport) -> Result<(), ClientError> {
        let response = self
            .request(reqwest::Method::POST, "/v1/agent/report")
            .json(report)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if !response.status().is_success() {
            return Err(api_error(response).await);
        }
        Ok(())
    }

    /// Downloads an artifact into `partial`, resuming from what it already holds, and
    /// returns the whole. Retries a few times, each time from where the last stopped.
    pub async fn artifact(
        &self,
        digest_hex: &str,
        partial: &std::path::Path,
    ) -> Result<Vec<u8>, ClientError> {
        let mut last = None;
        for attempt in 0..5u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            match self.download(digest_hex, partial).await {
                Ok(bytes) => return Ok(bytes),
                Err(e @ ClientError::Api { .. }) => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    async fn download(
        &self,
        digest_hex: &str,
        partial: &std::path::Path,
    ) -> Result<Vec<u8>, ClientError> {
        use futures_util::StreamExt;
        use tokio::io::AsyncWriteExt;
        let io = |e: std::io::Error| {
            ClientError::Protocol(format!("cannot write `{}`: {e}", partial.display()))
        };
        let have = tokio::fs::metadata(partial)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        let mut request = self.request(
            reqwest::Method::GET,
            &format!("/v1/agent/artifacts/{digest_hex}"),
        );
        if have > 0 {
            request = request.header(reqwest::header::RANGE, format!("bytes={have}-"));
        }
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        let status = response.status();
        if !status.is_success() {
            // A stale partial file longer than the artifact: start over.
            if status == reqwest::StatusCode::RANGE_NOT_SATISFIABLE {
                let _ = tokio::fs::remove_file(partial).await;
            }
            return Err(api_error(response).await);
        }
        // Anything but 206 is the whole artifact: what was kept is dropped.
        let resume = status == reqwest::StatusCode::PARTIAL_CONTENT;
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(resume)
            .write(true)
            .truncate(!resume)
            .open(partial)
            .await
            .map_err(io)?;
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            file.write_all(&chunk.map_err(|e| self.unreachable(e))?)
                .await
                .map_err(io)?;
        }
        file.flush().await.map_err(io)?;
        tokio::fs::read(partial).await.map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_and_garbage_is_refused() {
        let fp = "a".repeat(64);
        let token: JoinToken = format!("wharf1.abc.s3cret.{fp}").parse().unwrap();
        assert_eq!(
            token,
            JoinToken {
                id: "abc".into(),
                secret: "s3cret".into(),
                ca_fingerprint: fp
            }
        );
        assert!("wharf1.abc.s3cret".parse::<JoinToken>().is_err());
        assert!("hello".parse::<JoinToken>().is_err());
    }
}

//! Several controllers on one PostgreSQL, one leading.
//!
//! A controller starts as a follower: it answers every API call with the leader's
//! address (`421 Misdirected Request` and a `wharf-leader` header; `503` while nobody
//! leads) and campaigns for the lease, at once when a change of leader is announced
//! and twice a second otherwise. Once it holds the lease it serves as the controller
//! ([`crate::serve`]): it marks the deposed leader's unfinished deploys interrupted and
//! resolves them, and agents, which try each controller they were given, reach it.
//!
//! The leader renews the lease every second; it lasts [`LEASE_TTL`] by the database's
//! clock. A leader that cannot renew in time, or finds its lease taken, exits at once
//! (as Kubernetes' controller-manager does): its writes are fenced anyway, and a
//! supervisor brings it back as a follower. A leader that is stopped resigns, and a
//! follower takes over without waiting for the lease to run out.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio_util::sync::CancellationToken;
use wharf_store::{LeaseState, PgStore, Store, StoreError};

use crate::{Held, Mode, SharedKeyring, StartError, listen};

/// How long a lease lasts without renewal, by the database's clock.
pub const LEASE_TTL: Duration = Duration::from_secs(3);
/// How often the leader renews it.
const RENEW_EVERY: Duration = Duration::from_secs(1);
/// How often a follower asks for it when no change was announced.
const CAMPAIGN_EVERY: Duration = Duration::from_millis(500);

/// The header naming the leader's API address on a follower's answer.
pub const LEADER_HEADER: &str = "wharf-leader";

/// Runs one of the controllers sharing the database at `url` until `shutdown`.
pub(crate) async fn run(
    state_dir: &Path,
    held: Held,
    url: String,
    advertise: Option<String>,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    let store = Arc::new(blocking(move || PgStore::connect(&url)).await?);
    let advertise = advertise.unwrap_or_else(|| default_advertise(held.listen));
    let holder = format!(
        "{}-{}",
        std::process::id(),
        crate::random_hex(6).unwrap_or_default()
    );
    let mut changes = store.leader_changes()?;
    tracing::info!(
        "following the controllers on {}; campaigning to lead as {advertise}",
        store.location()
    );

    // Followers answer on the API address; the agent address opens once this leads.
    let s = store.clone();
    let seen = Seen::from(blocking(move || s.lease()).await);
    let leader = Arc::new(RwLock::new(seen));
    let follower_stop = CancellationToken::new();
    let listener = crate::bind_remembered(state_dir, held.listen, "api-port").await?;
    let tls = {
        let s = store.clone();
        let (dir, listen, keys) = (
            state_dir.to_owned(),
            held.listen,
            held.master_key_file.clone(),
        );
        tokio::task::spawn_blocking(move || follower_tls(&dir, listen, keys, &*s))
            .await
            .map_err(|e| StartError::Pki(e.to_string()))??
    };
    let follower = tokio::spawn(follow(listener, tls, leader.clone(), follower_stop.clone()));
    let epoch = loop {
        let (s, h, a) = (store.clone(), holder.clone(), advertise.clone());
        let seen = match blocking(move || s.campaign(&h, &a, LEASE_TTL)).await {
            Ok(Some(epoch)) => break epoch,
            Ok(None) => {
                let s = store.clone();
                Seen::from(blocking(move || s.lease()).await)
            }
            Err(e) => {
                tracing::warn!("cannot campaign for the lease: {e}");
                Seen::Unreachable(e.to_string())
            }
        };
        *leader.write().unwrap_or_else(|p| p.into_inner()) = seen;
        tokio::select! {
            _ = changes.changed() => {}
            _ = tokio::time::sleep(CAMPAIGN_EVERY) => {}
            _ = shutdown.cancelled() => {
                follower_stop.cancel();
                let _ = follower.await;
                return Ok(());
            }
        }
    };
    follower_stop.cancel();
    let _ = follower.await;
    tracing::info!(epoch, "leading the controllers on {}", store.location());
    tokio::spawn(keep_lease(store.clone(), holder.clone(), epoch));

    let served = crate::serve(
        state_dir,
        held,
        Mode::Production,
        store.clone() as Arc<dyn Store>,
        shutdown,
    )
    .await;
    // Stopped on purpose (or failed to start): a follower takes over at once.
    let s = store.clone();
    if let Err(e) = blocking(move || s.resign(&holder, epoch)).await {
        tracing::warn!(
            "could not give the lease up ({e}); it runs out within {}s",
            LEASE_TTL.as_secs()
        );
    }
    served
}

/// Renews the lease every second; exits the process the moment it is not sure to hold
/// it, before anything acts on a leadership it may have lost.
async fn keep_lease(store: Arc<PgStore>, holder: String, epoch: i64) {
    let mut renewed_at = Instant::now();
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        let (s, h) = (store.clone(), holder.clone());
        let asked = Instant::now();
        match blocking(move || s.renew(&h, epoch, LEASE_TTL)).await {
            Ok(true) => renewed_at = asked,
            Ok(false) => step_down(
                &store,
                &format!("another controller took the lease over (this one held epoch {epoch})"),
            ),
            Err(e) if renewed_at.elapsed() + RENEW_EVERY >= LEASE_TTL => step_down(
                &store,
                &format!(
                    "the lease could not be renewed for {}s ({e})",
                    renewed_at.elapsed().as_secs()
                ),
            ),
            Err(e) => tracing::warn!("cannot renew the lease yet: {e}"),
        }
    }
}

/// Stops leading at once: no write goes out under the lease from here on.
fn step_down(store: &PgStore, why: &str) -> ! {
    store.give_up_fence();
    tracing::error!(
        "no longer the leader: {why}; exiting so that nothing acts on it (a supervisor restarts this controller as a follower)"
    );
    std::process::exit(1);
}

/// What a follower last learnt of the lease.
#[derive(Debug, Clone)]
enum Seen {
    Lease(LeaseState),
    /// The database did not answer: this controller cannot tell who leads.
    Unreachable(String),
}

impl From<Result<LeaseState, StoreError>> for Seen {
    fn from(read: Result<LeaseState, StoreError>) -> Self {
        match read {
            Ok(lease) => Self::Lease(lease),
            Err(e) => Self::Unreachable(e.to_string()),
        }
    }
}

/// Answers every API call with where the leader is, until `stop`.
async fn follow(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    leader: Arc<RwLock<Seen>>,
    stop: CancellationToken,
) {
    let app = axum::Router::new().fallback(move || {
        let seen = leader.read().unwrap_or_else(|p| p.into_inner()).clone();
        async move { misdirected(seen) }
    });
    let bounds = listen::Bounds {
        max_connections: 1024,
        handshake: Duration::from_secs(10),
        idle: Duration::from_secs(10),
    };
    let tag: listen::Tagger<()> = Arc::new(|_, _| ());
    listen::serve(
        listener,
        listen::Security::LoopbackPlain(tls),
        app,
        bounds,
        stop,
        "API (follower)",
        tag,
    )
    .await;
}

/// A follower's answer: the leader's address, that an election is under way, or that
/// this controller cannot reach the database (and so cannot know who leads).
fn misdirected(seen: Seen) -> Response {
    let lease = match seen {
        Seen::Lease(lease) => Some(lease),
        Seen::Unreachable(why) => {
            let body = wharf_api::ApiError {
                error: format!("this controller cannot reach the database ({why}), so it cannot tell who leads"),
                hint: Some(
                    "send requests to another controller (`--controller URL,URL,...` tries each); this one follows again once the database answers".into(),
                ),
            };
            return unavailable(body);
        }
    };
    match lease.filter(LeaseState::held) {
        Some(lease) => {
            let body = wharf_api::ApiError {
                error: format!(
                    "this controller follows; the leader is at {}",
                    lease.address
                ),
                hint: Some(
                    "send requests to the leader: the CLI and agents find it when given every controller (`--controller URL,URL,...`)".into(),
                ),
            };
            let mut response = (StatusCode::MISDIRECTED_REQUEST, axum::Json(body)).into_response();
            if let Ok(value) = HeaderValue::from_str(&lease.address) {
                response.headers_mut().insert(LEADER_HEADER, value);
            }
            response
        }
        None => unavailable(wharf_api::ApiError {
            error: "no controller leads right now: an election is under way".into(),
            hint: Some("retry in a few seconds".into()),
        }),
    }
}

fn unavailable(body: wharf_api::ApiError) -> Response {
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert("retry-after", HeaderValue::from_static("1"));
    response
}

fn default_advertise(listen: SocketAddr) -> String {
    let scheme = if listen.ip().is_loopback() {
        "http"
    } else {
        "https"
    };
    format!("{scheme}://{listen}")
}

/// Names of the certificate authority's files kept in the database.
const CA_CERT: &str = "pki/ca.pem";
const CA_KEY: &str = "pki/ca.key.sealed";
/// What the CA key is sealed for, so a ciphertext moved elsewhere does not open.
const CA_KEY_CONTEXT: &str = "wharf controller\0certificate authority key";

/// Makes the certificate authority in `dir` the one every controller of `store` uses:
/// the database's (its key sealed with the master keyring, which stays outside the
/// database), or, on the first start, this controller's, kept there for the others.
/// Agents keep their certificates across a failover because of it.
pub(crate) fn share_authority(
    store: &dyn Store,
    keyring: &SharedKeyring,
    dir: &Path,
) -> Result<(), StartError> {
    if open_shared_authority(store, keyring, dir)? {
        return Ok(());
    }
    let pki = |e: &dyn std::fmt::Display| StartError::Pki(e.to_string());
    let authority = wharf_pki::Authority::load_or_create(dir).map_err(|e| pki(&e))?;
    let key = std::fs::read(dir.join("ca.key")).map_err(|e| pki(&e))?;
    let sealed = keyring
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .seal(&key, CA_KEY_CONTEXT);
    let sealed = serde_json::to_vec(&SealedFile::from(sealed)).map_err(|e| pki(&e))?;
    // The key first: a controller reading both finds either neither or both.
    store.put_shared_file(CA_KEY, &sealed)?;
    store.put_shared_file(CA_CERT, authority.cert_pem().as_bytes())?;
    Ok(())
}

/// Writes the certificate authority kept in the database into `dir`, its key opened
/// with the master keyring; false when the database keeps none yet.
fn open_shared_authority(
    store: &dyn Store,
    keyring: &SharedKeyring,
    dir: &Path,
) -> Result<bool, StartError> {
    let pki = |e: &dyn std::fmt::Display| StartError::Pki(e.to_string());
    let (Some(cert), Some(sealed)) = (store.shared_file(CA_CERT)?, store.shared_file(CA_KEY)?)
    else {
        return Ok(false);
    };
    let sealed: SealedFile = serde_json::from_slice(&sealed).map_err(|e| pki(&e))?;
    let key = keyring
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .open(&sealed.into(), CA_KEY_CONTEXT)
        .map_err(|e| {
            StartError::Pki(format!(
                "cannot open the certificate authority's key kept in the database ({e}): give this controller the same master keyring as the others (`--master-key-file`)"
            ))
        })?;
    let key = String::from_utf8(key).map_err(|e| pki(&e))?;
    let cert = String::from_utf8(cert).map_err(|e| pki(&e))?;
    std::fs::create_dir_all(dir).map_err(|e| pki(&e))?;
    wharf_pki::write_private(&dir.join("ca.key"), &key).map_err(|e| pki(&e))?;
    std::fs::write(dir.join("ca.pem"), cert).map_err(|e| pki(&e))?;
    Ok(true)
}

/// The TLS a follower listening beyond loopback answers with: a certificate of the
/// controllers' shared authority, which clients pin (`WHARF_CA`) as they do the
/// leader's. None on loopback, and before any controller led (no authority yet: the
/// follower then answers loopback callers only).
fn follower_tls(
    state_dir: &Path,
    listen: SocketAddr,
    master_key_file: Option<std::path::PathBuf>,
    store: &dyn Store,
) -> Result<Option<tokio_rustls::TlsAcceptor>, StartError> {
    if listen.ip().is_loopback() {
        return Ok(None);
    }
    let keyring = crate::open_keyring(state_dir, master_key_file)?;
    let keyring: SharedKeyring = Arc::new(RwLock::new(keyring));
    let dir = state_dir.join("pki");
    if !open_shared_authority(store, &keyring, &dir)? {
        tracing::warn!(
            "no controller has led yet, so there is no certificate authority: this follower answers loopback callers only until it leads"
        );
        return Ok(None);
    }
    let pki = |e: &dyn std::fmt::Display| StartError::Pki(e.to_string());
    let authority = wharf_pki::Authority::load_or_create(&dir).map_err(|e| pki(&e))?;
    let config = authority.api_server_config().map_err(|e| pki(&e))?;
    Ok(Some(tokio_rustls::TlsAcceptor::from(config)))
}

/// A sealed value as kept in the database.
#[derive(serde::Serialize, serde::Deserialize)]
struct SealedFile {
    key_id: String,
    nonce: Vec<u8>,
    ciphertext: Vec<u8>,
}

impl From<wharf_secrets::Sealed> for SealedFile {
    fn from(s: wharf_secrets::Sealed) -> Self {
        Self {
            key_id: s.key_id,
            nonce: s.nonce,
            ciphertext: s.ciphertext,
        }
    }
}

impl From<SealedFile> for wharf_secrets::Sealed {
    fn from(s: SealedFile) -> Self {
        Self {
            key_id: s.key_id,
            nonce: s.nonce,
            ciphertext: s.ciphertext,
        }
    }
}

/// Runs a store call off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| {
        Err(StoreError::Unavailable(format!(
            "the store call failed: {e}"
        )))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_names_the_leader_or_says_an_election_is_under_way() {
        let lease = |expires_in_ms| LeaseState {
            holder: "7-ab".into(),
            address: "http://127.0.0.1:7000".into(),
            epoch: 3,
            expires_in_ms,
        };
        let held = misdirected(Seen::Lease(lease(2000)));
        assert_eq!(held.status(), StatusCode::MISDIRECTED_REQUEST);
        assert_eq!(held.headers()[LEADER_HEADER], "http://127.0.0.1:7000");
        let expired = misdirected(Seen::Lease(lease(-5)));
        assert_eq!(expired.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(expired.headers().get(LEADER_HEADER).is_none());
    }

    #[tokio::test]
    async fn a_follower_cut_off_from_the_database_says_so_and_names_no_leader() {
        let answer = misdirected(Seen::Unreachable("no answer within 10s".into()));
        assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(answer.headers().get(LEADER_HEADER).is_none());
        let body = axum::body::to_bytes(answer.into_body(), 4096)
            .await
            .unwrap();
        let error: wharf_api::ApiError = serde_json::from_slice(&body).unwrap();
        assert!(
            error
                .error
                .contains("cannot reach the database (no answer within 10s)"),
            "{}",
            error.error
        );
    }
}

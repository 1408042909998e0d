//! The PostgreSQL implementation of [`Store`], for several controllers sharing one
//! database with one leader among them (`lease`).
//!
//! tokio-postgres with deadpool-postgres rather than sqlx: the protocol client and a
//! pool and nothing else (no macros checking queries against a live database at build
//! time, no second runtime abstraction), statements prepared once per connection, and
//! arrays for batched writes (`UNNEST`), which is where placements per second come from.
//!
//! The [`Store`] trait is synchronous (SQLite's calls are short and local), so the store
//! runs its own small runtime: a call sends its job there and waits for the answer, as a
//! SQLite call waits for its file. Nothing calls the store from that runtime.

mod group_commit;
mod lease;
mod rows;
mod schema;
mod store_impl;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use deadpool_postgres::Transaction;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

pub use lease::LeaseState;

use crate::{Result, StoreError};

/// How long a call waits for a connection or an answer before the database counts as
/// unreachable: a controller cut off from it fails requests instead of hanging them.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections the pool keeps at most.
const POOL_SIZE: usize = 8;

type Job<'t, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 't>>;

/// The PostgreSQL store.
pub struct PgStore {
    runtime: Option<tokio::runtime::Runtime>,
    pool: Pool,
    /// The lease epoch every write is fenced by (0: no lease held, so writes are refused).
    fence: Arc<AtomicI64>,
    /// Counts this controller's committed writes ([`crate::Store::changes`]).
    changes: tokio::sync::watch::Sender<u64>,
    /// Where writes wait for the group-committing writer.
    writes: tokio::sync::mpsc::UnboundedSender<group_commit::Queued>,
    /// Where the database is, without credentials, for messages.
    location: String,
    /// How to connect, for the connection that listens for a change of leader.
    config: tokio_postgres::Config,
    /// TLS to the database, when its address asks for it (`sslmode=require`).
    tls: Option<MakeRustlsConnect>,
}

impl PgStore {
    /// Connects to `url` (`postgres://USER@HOST[:PORT]/DB`) and brings the schema up to
    /// date. The password comes from `PGPASSWORD`, never the URL: a URL is an argument,
    /// and arguments show in every process listing.
    pub fn connect(url: &str) -> Result<Self> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
            StoreError::Unavailable(format!(
                "`{}` is not a PostgreSQL address ({e}); write postgres://USER@HOST[:PORT]/DATABASE",
                redact(url)
            ))
        })?;
        if config.get_password().is_some() {
            return Err(StoreError::Unavailable(
                "the database address holds a password, which would show in the process list; \
                 remove it and set PGPASSWORD in the controller's environment instead"
                    .into(),
            ));
        }
        if let Ok(password) = std::env::var("PGPASSWORD") {
            config.password(password);
        }
        config.application_name("wharf");
        // Notices (say, "already exists, skipping") are not the controller's news.
        config.options("-c client_min_messages=warning");
        config.connect_timeout(CALL_TIMEOUT);
        let location = location(&config);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("wharf-postgres")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Unavailable(format!("cannot start its runtime: {e}")))?;
        let tls = match config.get_ssl_mode() {
            SslMode::Require => Some(client_tls()?),
            _ => None,
        };
        let recycling = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &tls {
            Some(tls) => Manager::from_config(config.clone(), tls.clone(), recycling),
            None => Manager::from_config(config.clone(), NoTls, recycling),
        };
        let pool = {
            // The pool's timers run on the store's runtime.
            let _entered = runtime.enter();
            Pool::builder(manager)
                .max_size(POOL_SIZE)
                .runtime(Runtime::Tokio1)
                .wait_timeout(Some(CALL_TIMEOUT))
                .create_timeout(Some(CALL_TIMEOUT))
                .recycle_timeout(Some(CALL_TIMEOUT))
                .build()
                .map_err(|e| StoreError::Unavailable(e.to_string()))?
        };
        let fence = Arc::new(AtomicI64::new(0));
        let changes = tokio::sync::watch::Sender::new(0);
        let (writes, queue) = tokio::sync::mpsc::unbounded_channel();
        runtime.spawn(group_commit::run(
            pool.clone(),
            fence.clone(),
            queue,
            changes.clone(),
        ));
        let store = Self {
            runtime: Some(runtime),
            pool,
            fence,
            changes,
            writes,
            location,
            config,
            tls,
        };
        store.migrate()?;
        Ok(store)
    }

    /// Where the database is (`HOST:PORT/DB`), for messages.
    pub fn location(&self) -> &str {
        &self.location
    }

    fn migrate(&self) -> Result<()> {
        self.call(|mut client| async move {
            let tx = client.transaction().await?;
            // One controller migrates at a time; the others then find it done.
            tx.execute("SELECT pg_advisory_xact_lock(7242001)", &[])
                .await?;
            tx.batch_execute("CREATE TABLE IF NOT EXISTS wharf_schema (version BIGINT NOT NULL)")
                .await?;
            let applied: i64 = tx
                .query_opt("SELECT version FROM wharf_schema", &[])
                .await?
                .map(|r| r.try_get(0))
                .transpose()?
                .unwrap_or(0);
            let known = schema::MIGRATIONS.len() as i64;
            if applied > known {
                return Err(StoreError::Corrupt(format!(
                    "database schema version {applied} is newer than this wharf knows ({known}); upgrade wharf"
                )));
            }
            for sql in schema::MIGRATIONS.iter().skip(applied as usize) {
                tx.batch_execute(sql).await?;
            }
            tx.execute("DELETE FROM wharf_schema", &[]).await?;
            tx.execute("INSERT INTO wharf_schema (version) VALUES ($1)", &[&known])
                .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Runs `job` with a pooled connection on the store's runtime and waits for it.
    fn call<T, F, Fut>(&self, job: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(deadpool_postgres::Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let Some(runtime) = &self.runtime else {
            return Err(StoreError::Unavailable("the store is closed".into()));
        };
        let pool = self.pool.clone();
        let (answer, answered) = std::sync::mpsc::sync_channel(1);
        runtime.spawn(async move {
            let work = async {
                let client = pool
                    .get()
                    .await
                    .map_err(|e| StoreError::Unavailable(with_causes(&e)))?;
                job(client).await
            };
            let out = match tokio::time::timeout(CALL_TIMEOUT, work).await {
                Ok(out) => out,
                Err(_) => Err(StoreError::Unavailable(format!(
                    "no answer within {}s",
                    CALL_TIMEOUT.as_secs()
                ))),
            };
            let _ = answer.send(out);
        });
        wait(|| answered.recv())
            .map_err(|_| StoreError::Unavailable("the database task stopped".into()))?
    }

    /// Runs `job` inside a transaction fenced by this controller's lease epoch: the
    /// lease row is locked first, so a write either commits while the lease is ours or
    /// is refused ([`StoreError::Fenced`]), and writes commit one at a time as in SQLite
    /// (several to a transaction when they queue: `group_commit`).
    fn write<T, F>(&self, job: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'t> FnOnce(&'t Transaction<'t>) -> Job<'t, T> + Send + 'static,
    {
        let (answer, answered) = std::sync::mpsc::sync_channel(1);
        let refuse = answer.clone();
        let queued = group_commit::Queued {
            run: Box::new(move |tx| {
                Box::pin(async move {
                    let out = job(tx).await;
                    Box::new(group_commit::Answer { out, to: answer })
                        as Box<dyn group_commit::Outcome>
                })
            }),
            refuse: Box::new(move |why| {
                let _ = refuse.send(Err(why));
            }),
        };
        if self.writes.send(queued).is_err() {
            return Err(StoreError::Unavailable("the store is closed".into()));
        }
        wait(|| answered.recv())
            .map_err(|_| StoreError::Unavailable("the database did not answer".into()))?
    }

    /// Runs a read with a pooled connection.
    fn read<T, F>(&self, job: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c deadpool_postgres::Object) -> Job<'c, T> + Send + 'static,
    {
        self.call(move |client| async move { job(&client).await })
    }
}

/// Waits for the database's answer. On a controller's worker thread the wait is
/// announced (`block_in_place`), so the thread's other tasks move on meanwhile: a round
/// trip to the database is milliseconds, not SQLite's microseconds.
fn wait<T>(answer: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(answer)
        }
        _ => answer(),
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Dropped from async code too, where a runtime may not block to shut down.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The TLS client for `sslmode=require`: the database's certificate must chain to the
/// CA in the PEM file `PGSSLROOTCERT` names (libpq's variable; `~/.postgresql/root.crt`
/// without it) and name the host it is reached by, as libpq's `verify-full` checks.
fn client_tls() -> Result<MakeRustlsConnect> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let path = std::env::var_os("PGSSLROOTCERT")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|home| std::path::Path::new(&home).join(".postgresql/root.crt"))
        })
        .ok_or_else(|| {
            StoreError::Unavailable(
                "sslmode=require needs the CA of the database's certificate: set PGSSLROOTCERT to its PEM file".into(),
            )
        })?;
    let unreadable = |e: &dyn std::fmt::Display| {
        StoreError::Unavailable(format!(
            "cannot read the database's CA `{}` (PGSSLROOTCERT): {e}",
            path.display()
        ))
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&path).map_err(|e| unreadable(&e))? {
        roots
            .add(cert.map_err(|e| unreadable(&e))?)
            .map_err(|e| unreadable(&e))?;
    }
    if roots.is_empty() {
        return Err(unreadable(&"it holds no certificate"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Unavailable(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// A connection of its own (not pooled), with its messages (notifications) as a stream.
async fn connect_alone(
    config: &tokio_postgres::Config,
    tls: Option<&MakeRustlsConnect>,
) -> std::result::Result<(tokio_postgres::Client, Messages), tokio_postgres::Error> {
    fn messages<S, T>(mut connection: tokio_postgres::Connection<S, T>) -> Messages
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        Box::pin(futures_util::stream::poll_fn(move |cx| {
            connection.poll_message(cx)
        }))
    }
    Ok(match tls {
        Some(tls) => {
            let (client, connection) = config.connect(tls.clone()).await?;
            (client, messages(connection))
        }
        None => {
            let (client, connection) = config.connect(NoTls).await?;
            (client, messages(connection))
        }
    })
}

/// What a connection of its own receives besides answers.
type Messages = Pin<
    Box<
        dyn futures_util::Stream<
                Item = std::result::Result<tokio_postgres::AsyncMessage, tokio_postgres::Error>,
            > + Send,
    >,
>;

/// `HOST:PORT/DB` of a connection's settings.
fn location(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or("");
    format!("{host}:{port}/{db}")
}

/// A database address with any password replaced, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// An error with the causes its message leaves out ("error performing TLS handshake:
/// invalid peer certificate: UnknownIssuer"), each said once.
pub(super) fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let said = c.to_string();
        if !text.contains(&said) {
            text = format!("{text}: {said}");
        }
        cause = c.source();
    }
    text
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        if e.is_closed() || e.as_db_error().is_none() && e.code().is_none() {
            StoreError::Unavailable(with_causes(&e))
        } else {
            StoreError::Postgres(
                e.as_db_error()
                    .map_or_else(|| e.to_string(), |d| d.to_string()),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_never_shows_in_messages() {
        assert_eq!(
            redact("postgres://ann:hunter2@db:5432/wharf"),
            "postgres://ann:***@db:5432/wharf"
        );
        assert_eq!(redact("postgres://ann@db/wharf"), "postgres://ann@db/wharf");
    }

    #[test]
    fn a_password_in_the_address_is_refused_before_connecting() {
        let Err(e) = PgStore::connect("postgres://ann:hunter2@127.0.0.1:1/wharf") else {
            panic!("accepted a password in the address");
        };
        let text = e.to_string();
        assert!(text.contains("PGPASSWORD"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}

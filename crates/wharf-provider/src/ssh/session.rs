//! One SSH session to a machine (russh: pure Rust, so a host needs no `ssh` binary and
//! every connection's host key is checked by wharf itself, not by a config it cannot
//! see): connected directly or through a jump host, the host key checked against the
//! definition, then the user's and wharf's known_hosts, and commands run on exec
//! channels with their standard input sent on the channel.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::ChannelMsg;
use russh::client;
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};

use super::SshError;

/// How to log in to one machine.
#[derive(Debug, Clone)]
pub struct Login {
    /// The machine's name in wharf, for messages.
    pub name: String,
    pub address: String,
    pub port: u16,
    pub user: String,
    /// `TYPE BASE64` from the definition.
    pub host_key: Option<String>,
}

/// What every login of a bootstrap shares.
#[derive(Debug, Clone)]
pub struct Trust {
    pub identity_file: PathBuf,
    /// Read in order; a key found in one is trusted.
    pub known_hosts: Vec<PathBuf>,
    /// Where a key trusted on first use is recorded (with `accept_new`).
    pub learn_into: PathBuf,
    pub accept_new: bool,
}

/// How long a connection and its handshake may take.
const CONNECT_LIMIT: Duration = Duration::from_secs(10);

/// What a command printed and how it ended.
#[derive(Debug, Default)]
pub struct Ran {
    pub code: Option<u32>,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// Its error output's last lines, or a note that it printed none.
    pub fn why(&self) -> String {
        let text = self.stderr.trim();
        let text = if text.is_empty() {
            self.stdout.trim()
        } else {
            text
        };
        let last: Vec<&str> = text.lines().rev().take(3).collect();
        match last.is_empty() {
            true => format!("exit status {:?}", self.code),
            false => last.into_iter().rev().collect::<Vec<_>>().join("; "),
        }
    }
}

pub struct Session {
    handle: client::Handle<Checker>,
    /// The jump host's session, kept open while this one runs through it.
    _jump: Option<client::Handle<Checker>>,
    /// The address this side of the connection has, as the machine sees it (direct
    /// connections only): where it can reach this machine back.
    pub local_ip: Option<std::net::IpAddr>,
}

/// What the host key check found, kept for the error when it refused.
#[derive(Debug, Clone)]
enum Verdict {
    Mismatch {
        expected: String,
        offered: String,
    },
    Unknown {
        offered: String,
        line: String,
    },
    Changed {
        offered: String,
        line: usize,
        file: PathBuf,
    },
}

struct Checker {
    login: Login,
    trust: Trust,
    verdict: Arc<Mutex<Option<Verdict>>>,
}

impl client::Handler for Checker {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        offered: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = offered else {
            return Ok(false);
        };
        let verdict = check_key(&self.login, &self.trust, key);
        let trusted = verdict.is_none();
        *self.verdict.lock().unwrap_or_else(|p| p.into_inner()) = verdict;
        Ok(trusted)
    }
}

fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// `None`: trusted. The definition's key decides when given; else known_hosts; else
/// the key is learned if that was allowed.
fn check_key(login: &Login, trust: &Trust, key: &PublicKey) -> Option<Verdict> {
    let offered = fingerprint(key);
    if let Some(text) = &login.host_key {
        return match PublicKey::from_openssh(text.trim()) {
            Ok(expected) if expected.key_data() == key.key_data() => None,
            Ok(expected) => Some(Verdict::Mismatch {
                expected: fingerprint(&expected),
                offered,
            }),
            Err(_) => Some(Verdict::Mismatch {
                expected: format!("`{text}` (not a key)"),
                offered,
            }),
        };
    }
    for file in trust.known_hosts.iter().filter(|f| f.exists()) {
        match russh::keys::check_known_hosts_path(&login.address, login.port, key, file) {
            Ok(true) => return None,
            Ok(false) => {}
            Err(russh::keys::Error::KeyChanged { line }) => {
                return Some(Verdict::Changed {
                    offered,
                    line,
                    file: file.clone(),
                });
            }
            Err(_) => {}
        }
    }
    if trust.accept_new
        && russh::keys::known_hosts::learn_known_hosts_path(
            &login.address,
            login.port,
            key,
            &trust.learn_into,
        )
        .is_ok()
    {
        return None;
    }
    Some(Verdict::Unknown {
        offered,
        line: key.to_openssh().unwrap_or_default(),
    })
}

impl Session {
    /// Logs in to `login`, through `jump` when given.
    pub async fn open(
        login: &Login,
        jump: Option<&Login>,
        trust: &Trust,
    ) -> Result<Self, SshError> {
        let key = russh::keys::load_secret_key(&trust.identity_file, None).map_err(|e| {
            SshError::Key(format!(
                "cannot read {}: {e}",
                trust.identity_file.display()
            ))
        })?;
        let key = Arc::new(key);
        let config = Arc::new(client::Config {
            inactivity_timeout: Some(Duration::from_secs(120)),
            ..Default::default()
        });
        let (jump, local_ip) = match jump {
            Some(via) => {
                let stream = tokio::time::timeout(
                    CONNECT_LIMIT,
                    tokio::net::TcpStream::connect((via.address.as_str(), via.port)),
                )
                .await
                .map_err(|_| unreachable(via, "no answer within 10s".into()))?
                .map_err(|e| unreachable(via, e.to_string()))?;
                let handle = handshake(via, trust, &config, &key, stream).await?;
                (Some(handle), None)
            }
            None => (None, None),
        };
        let handle = match &jump {
            Some(bastion) => {
                let channel = bastion
                    .channel_open_direct_tcpip(
                        login.address.clone(),
                        login.port.into(),
                        "127.0.0.1",
                        0,
                    )
                    .await
                    .map_err(|e| {
                        unreachable(login, format!("the jump host cannot reach it: {e}"))
                    })?;
                handshake(login, trust, &config, &key, channel.into_stream()).await?
            }
            None => {
                let stream = tokio::time::timeout(
                    CONNECT_LIMIT,
                    tokio::net::TcpStream::connect((login.address.as_str(), login.port)),
                )
                .await
                .map_err(|_| unreachable(login, "no answer within 10s".into()))?
                .map_err(|e| unreachable(login, e.to_string()))?;
                let local = stream.local_addr().ok().map(|a| a.ip());
                let handle = handshake(login, trust, &config, &key, stream).await?;
                return Ok(Self {
                    handle,
                    _jump: None,
                    local_ip: local.or(local_ip),
                });
            }
        };
        Ok(Self {
            handle,
            _jump: jump,
            local_ip,
        })
    }

    /// Runs `command` (a shell command line), sending `input` on its standard input.
    pub async fn run(&self, command: &str, input: &[u8]) -> Result<Ran, SshError> {
        let lost = |e: russh::Error| SshError::Session(e.to_string());
        let channel = self.handle.channel_open_session().await.map_err(lost)?;
        channel.exec(true, command).await.map_err(lost)?;
        // Read while writing: a command that fails before it read all its input (a
        // full disk, a read-only folder) stops taking it, and only its exit says so.
        let (mut read, write) = channel.split();
        let writing = async {
            if !input.is_empty() {
                write.data(input).await?;
            }
            write.eof().await
        };
        let reading = collect(&mut read);
        tokio::pin!(writing, reading);
        tokio::select! {
            // An input the machine stopped taking: its exit status says why.
            _ = &mut writing => {}
            ran = &mut reading => return Ok(ran),
        }
        Ok(reading.await)
    }

    pub async fn close(self) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }
}

/// What a command printed and how it ended, read until its channel closes.
async fn collect(read: &mut russh::ChannelReadHalf) -> Ran {
    let mut ran = Ran::default();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    while let Some(message) = read.wait().await {
        match message {
            ChannelMsg::Data { data } => out.extend_from_slice(&data),
            ChannelMsg::ExtendedData { data, .. } => err.extend_from_slice(&data),
            ChannelMsg::ExitStatus { exit_status } => ran.code = Some(exit_status),
            ChannelMsg::ExitSignal { signal_name, .. } => {
                err.extend_from_slice(format!("killed by {signal_name:?}").as_bytes());
            }
            _ => {}
        }
    }
    ran.stdout = String::from_utf8_lossy(&out).into_owned();
    ran.stderr = String::from_utf8_lossy(&err).into_owned();
    ran
}

fn unreachable(login: &Login, why: String) -> SshError {
    SshError::Unreachable(format!("{}:{}: {why}", login.address, login.port))
}

async fn handshake<S>(
    login: &Login,
    trust: &Trust,
    config: &Arc<client::Config>,
    key: &Arc<russh::keys::PrivateKey>,
    stream: S,
) -> Result<client::Handle<Checker>, SshError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let verdict = Arc::new(Mutex::new(None));
    let checker = Checker {
        login: login.clone(),
        trust: trust.clone(),
        verdict: verdict.clone(),
    };
    let connected = tokio::time::timeout(
        CONNECT_LIMIT,
        client::connect_stream(config.clone(), stream, checker),
    )
    .await
    .map_err(|_| unreachable(login, "the SSH handshake took longer than 10s".into()))?;
    let mut handle = match connected {
        Ok(handle) => handle,
        Err(e) => {
            let found = verdict.lock().unwrap_or_else(|p| p.into_inner()).clone();
            return Err(match found {
                Some(v) => host_key_error(login, v),
                None => unreachable(login, e.to_string()),
            });
        }
    };
    let hash = handle
        .best_supported_rsa_hash()
        .await
        .ok()
        .flatten()
        .flatten();
    let auth = handle
        .authenticate_publickey(
            login.user.clone(),
            PrivateKeyWithHashAlg::new(key.clone(), hash),
        )
        .await
        .map_err(|e| SshError::Session(e.to_string()))?;
    if !auth.success() {
        return Err(SshError::LoginRefused(format!(
            "{}@{}:{} refused the key {}",
            login.user,
            login.address,
            login.port,
            trust.identity_file.display()
        )));
    }
    Ok(handle)
}

fn host_key_error(login: &Login, verdict: Verdict) -> SshError {
    let at = format!("{}:{}", login.address, login.port);
    SshError::HostKey(match verdict {
        Verdict::Mismatch { expected, offered } => format!(
            "the host key of {at} is not the one the definition names: expected {expected}, offered {offered}; nothing was sent to it"
        ),
        Verdict::Changed {
            offered,
            line,
            file,
        } => format!(
            "the host key of {at} changed: {} line {line} holds another, offered {offered}; nothing was sent to it",
            file.display()
        ),
        Verdict::Unknown { offered, line } => format!(
            "the host key of {at} is unknown (offered {offered}): add `host_key: \"{line}\"` to its host after checking it on the machine (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`), or pass --accept-new-host-key to trust it on first use"
        ),
    })
}

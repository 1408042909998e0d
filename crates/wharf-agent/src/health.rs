//! Health probes: an HTTP GET answered 2xx, a TCP connect, or a command exiting 0.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wharf_core::model::Probe;

/// Longest a single probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs one probe; the error says what failed, in words for the user.
pub async fn probe(
    probe: &Probe,
    port: Option<u16>,
    workdir: &Path,
    env: &BTreeMap<String, String>,
) -> Result<(), String> {
    match tokio::time::timeout(PROBE_TIMEOUT, run(probe, port, workdir, env)).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "{} did not answer within {}s",
            describe(probe, port),
            PROBE_TIMEOUT.as_secs()
        )),
    }
}

/// The probe in words: `GET http://127.0.0.1:8080/health`.
pub fn describe(probe: &Probe, port: Option<u16>) -> String {
    let port = port.map(|p| p.to_string()).unwrap_or_else(|| "?".into());
    match probe {
        Probe::Http { path } => format!("GET http://127.0.0.1:{port}{path}"),
        Probe::Tcp => format!("TCP connect to 127.0.0.1:{port}"),
        Probe::Command { argv } => format!("health command `{}`", argv.join(" ")),
    }
}

async fn run(
    probe: &Probe,
    port: Option<u16>,
    workdir: &Path,
    env: &BTreeMap<String, String>,
) -> Result<(), String> {
    let connect = || async {
        let port = port.ok_or("the service has no port")?;
        TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("{}: {e}", describe(probe, Some(port))))
    };
    match probe {
        Probe::Tcp => connect().await.map(|_| ()),
        Probe::Http { path } => {
            let mut stream = connect().await?;
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: wharf-health\r\nConnection: close\r\n\r\n"
            );
            stream
                .write_all(request.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            let mut head = [0u8; 64];
            let mut read = 0;
            while read < 12 {
                let n = stream
                    .read(&mut head[read..])
                    .await
                    .map_err(|e| e.to_string())?;
                if n == 0 {
                    break;
                }
                read += n;
            }
            let line = String::from_utf8_lossy(&head[..read]);
            let status = line
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse::<u16>().ok());
            match status {
                Some(code) if (200..300).contains(&code) => Ok(()),
                Some(code) => Err(format!("{} answered {code}", describe(probe, port))),
                None => Err(format!("{} gave no HTTP answer", describe(probe, port))),
            }
        }
        Probe::Command { argv } => {
            let Some((program, args)) = argv.split_first() else {
                return Err("the health check command is empty".into());
            };
            let status = tokio::process::Command::new(program)
                .args(args)
                .current_dir(workdir)
                .envs(env)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .status()
                .await
                .map_err(|e| format!("cannot run {}: {e}", describe(probe, port)))?;
            if status.success() {
                Ok(())
            } else {
                Err(format!("{} failed ({status})", describe(probe, port)))
            }
        }
    }
}

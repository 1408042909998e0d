//! Work a joined host's agent does when its controller asks, beside running its plans:
//! `wharf exec` in one of its instances, `wharf down --purge` of its data.

use std::sync::Arc;
use std::time::Duration;

use wharf_api::agent::{HostAnswer, HostWork};

use crate::Agent;

/// The longest an exec may run, whatever the controller asks.
const EXEC_LIMIT_MAX: Duration = Duration::from_secs(600);

/// Does `work`; what went wrong is an answer too.
pub async fn run(agent: &Arc<Agent>, work: HostWork) -> HostAnswer {
    match work {
        HostWork::Exec {
            key,
            argv,
            limit_secs,
        } => {
            let limit = Duration::from_secs(limit_secs).min(EXEC_LIMIT_MAX);
            match agent.exec(&key, &argv, limit).await {
                Ok(output) => HostAnswer::Exec {
                    code: output.code,
                    stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
                    stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
                },
                Err(error) => HostAnswer::Failed { error },
            }
        }
        HostWork::Purge { env, service } => {
            // Data folders can be large: removing them is blocking work.
            let folders = {
                let (agent, env, service) = (agent.clone(), env.clone(), service.clone());
                tokio::task::spawn_blocking(move || agent.purge_data(&env, service.as_deref()))
                    .await
            };
            let folders = match folders {
                Ok(Ok(removed)) => removed.len(),
                Ok(Err(error)) => return HostAnswer::Failed { error },
                Err(e) => {
                    return HostAnswer::Failed {
                        error: e.to_string(),
                    };
                }
            };
            match agent.purge_volumes(&env, service.as_deref()).await {
                Ok(volumes) => HostAnswer::Purged { folders, volumes },
                Err(error) => HostAnswer::Failed { error },
            }
        }
        HostWork::FollowLog {
            key,
            lines,
            since,
            offset,
        } => {
            let path = agent.log_path(&key);
            let read = tokio::task::spawn_blocking(move || match offset {
                // Where it ends first, so what follows overlaps the tail rather than
                // leaves a gap.
                None => {
                    let end = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                    (crate::logs::tail_from(&path, lines, since), end)
                }
                Some(mut offset) => (crate::logs::read_appended(&path, &mut offset), offset),
            })
            .await;
            match read {
                Ok((text, offset)) => HostAnswer::Log { text, offset },
                Err(e) => HostAnswer::Failed {
                    error: e.to_string(),
                },
            }
        }
        HostWork::Unknown => HostAnswer::Failed {
            error: format!(
                "this agent ({}) does not know the task; upgrade it (`wharf host upgrade`)",
                env!("CARGO_PKG_VERSION")
            ),
        },
    }
}

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;

use wharf_core::model::DriverKind;

use wharf_agent::connected::{self, ConnectError, ConnectOptions};

use crate::cli::{AgentArgs, Global};
use crate::commands::server::{cancel_on_signal, init_logging};
use crate::failure::Failure;

pub async fn agent(global: &Global, mut args: AgentArgs) -> anyhow::Result<ExitCode> {
    if args.supervise
        && let Some(pid_file) = &args.pid_file
    {
        init_logging();
        return super::supervise::run("agent", pid_file, super::supervise::Restart::Always).await;
    }
    if args.token_stdin {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        let token = line.trim();
        if token.is_empty() {
            return Err(Failure::input("`--token-stdin` read no token").into());
        }
        args.join_token = Some(token.to_owned());
    }
    let controller = global.controller.clone().ok_or_else(|| {
        Failure::input("which controller? pass `--controller https://HOST:PORT`")
            .hint("`wharf token create` prints the address")
    })?;
    init_logging();
    let mut labels = BTreeMap::new();
    for pair in args.labels.iter().filter(|l| !l.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| Failure::input(format!("label `{pair}` is not `key=value`")))?;
        labels.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    let name = match args.name {
        Some(name) => name,
        None => nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .map_err(|e| {
                Failure::input(format!("cannot read the hostname ({e}); pass `--name`"))
            })?,
    };
    let state_dir = args
        .state_dir
        .or_else(|| {
            std::env::var_os("WHARF_HOME")
                .filter(|h| !h.is_empty())
                .map(Into::into)
        })
        .unwrap_or_else(|| "/var/lib/wharf-agent".into());
    let state_dir = std::path::absolute(&state_dir)?;
    let driver = |id: &str| {
        let process: Arc<dyn wharf_driver::Driver> =
            Arc::new(super::process_driver(&format!("{id}:")));
        let mut drivers = vec![(DriverKind::Process, process)];
        // Containers too, when this host has a Docker engine.
        if let Ok(docker) = wharf_driver_docker::DockerDriver::connect(format!("{id}:")) {
            drivers.push((
                DriverKind::Docker,
                Arc::new(docker) as Arc<dyn wharf_driver::Driver>,
            ));
        }
        drivers
    };
    let options = ConnectOptions {
        state_dir,
        controller,
        join_token: args.join_token,
        name,
        labels,
        mesh_listen: args.mesh_listen,
        listener_holder: std::env::current_exe().ok(),
    };
    let ran = if args.join_only {
        connected::join_only(&options).await
    } else {
        connected::run(options, driver, cancel_on_signal()).await
    };
    ran.map_err(|e| match e {
        ConnectError::NotJoined | ConnectError::BadToken(_) | ConnectError::Mesh(..) => {
            Failure::input(e.to_string())
        }
        ConnectError::Refused(_) => Failure::operation(e.to_string())
            .hint("issue a new token with `wharf token create` and join again"),
        other => Failure::operation(other.to_string()),
    })?;
    Ok(ExitCode::SUCCESS)
}

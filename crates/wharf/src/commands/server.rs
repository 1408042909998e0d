use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::cli::{Global, ServerArgs};
use crate::failure::Failure;
use crate::project;

pub async fn server(
    global: &Global,
    printer: &crate::printer::Printer,
    args: ServerArgs,
) -> anyhow::Result<ExitCode> {
    if let Some(crate::cli::ServerCommand::Stop) = args.command {
        match crate::connect::stop_local(global).await? {
            Some(pid) => printer.info(&format!(
                "stopped the local controller (pid {pid}); instances keep running"
            )),
            None => printer.info("no local controller runs for this project"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    // Production: a controller only, authenticated, on an address given on purpose.
    if !args.dev && args.listen.is_none() {
        return Err(Failure::input(
            "a production controller needs `--listen ADDRESS:PORT` (it always requires API tokens and runs nothing itself)",
        )
        .hint("`wharf server --dev` runs the laptop's controller with its own agent")
        .into());
    }
    init_logging();
    raise_open_file_limit();
    let state_dir = match args.state_dir {
        Some(dir) => dir,
        None => project::state_dir(global)?,
    };
    let state_dir = std::path::absolute(&state_dir)?;
    if args.supervise {
        return super::supervise::run(
            "controller",
            &state_dir.join(crate::connect::SUPERVISOR_FILE),
            super::supervise::Restart::WhenItDies,
        )
        .await;
    }
    let shutdown = cancel_on_signal();
    let options = wharf_server::Options {
        listen: args
            .listen
            .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
        agent_listen: args.agent_listen,
        auth: args.auth,
        master_key_file: args.master_key_file,
        listener_holder: std::env::current_exe().ok(),
        store: args.store,
        advertise: args.advertise,
    };
    let mode = if args.dev {
        wharf_server::Mode::Dev(Box::new(local_drivers))
    } else {
        wharf_server::Mode::Production
    };
    wharf_server::run(&state_dir, options, mode, shutdown)
        .await
        .map_err(|e| match e {
            wharf_server::StartError::NotLoopback(_) => Failure::input(e.to_string()),
            wharf_server::StartError::AlreadyRunning(_) => {
                Failure::operation(e.to_string()).hint("`wharf status` talks to it")
            }
            other => Failure::operation(other.to_string()),
        })?;
    Ok(ExitCode::SUCCESS)
}

/// The drivers of the laptop's own agent: processes, and containers when this machine
/// has a Docker engine (checked when one is used).
fn local_drivers(
    prefix: &str,
) -> Vec<(
    wharf_core::model::DriverKind,
    std::sync::Arc<dyn wharf_driver::Driver>,
)> {
    use wharf_core::model::DriverKind;
    let mut drivers: Vec<(DriverKind, std::sync::Arc<dyn wharf_driver::Driver>)> = vec![(
        DriverKind::Process,
        std::sync::Arc::new(super::process_driver(prefix)),
    )];
    if let Ok(docker) = wharf_driver_docker::DockerDriver::connect(prefix.to_owned()) {
        drivers.push((DriverKind::Docker, std::sync::Arc::new(docker)));
    }
    drivers
}

/// A controller holds a connection per agent and watcher: the soft open-file limit is
/// raised to the hard one.
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// Logs of long-running processes go to stderr; WHARF_LOG sets the filter.
pub fn init_logging() {
    crate::memory::tune_allocator();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WHARF_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

/// A token cancelled on SIGTERM or SIGINT.
pub fn cancel_on_signal() -> CancellationToken {
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal as on};
        let (Ok(mut term), Ok(mut int)) =
            (on(SignalKind::terminate()), on(SignalKind::interrupt()))
        else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        signal.cancel();
    });
    shutdown
}

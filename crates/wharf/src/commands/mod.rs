//! One module per command.

mod access;
mod agent;
mod artifacts;
mod build;
mod config;
mod definition;
mod deploy;
mod dev;
mod env;
mod env_ssh;
mod events;
mod exec;
mod history;
mod hosts;
mod init;
mod logs;
mod pipeline;
mod rollback;
mod rollout;
mod secret;
mod server;
mod status;
mod stop;
mod supervise;
mod ui;
mod validate;
mod version;

use std::process::ExitCode;

use crate::cli::{Cli, Command};
use crate::printer::Printer;

pub async fn run(cli: Cli, printer: &Printer) -> anyhow::Result<ExitCode> {
    let global = &cli.global;
    match cli.command {
        Command::LogWriter { .. } => Err(crate::failure::Failure::input(
            "`wharf log-writer` is started by the process driver, not by hand",
        )
        .into()),
        Command::ListenerHolder { .. } => Err(crate::failure::Failure::input(
            "`wharf listener-holder` is started by the agent, not by hand",
        )
        .into()),
        Command::Init { force } => init::init(global, printer, force),
        Command::Validate => validate::validate(global, printer),
        Command::Version => version::version(global, printer).await,
        Command::Completions { shell } => {
            let mut command = <crate::cli::Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "wharf", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema => validate::schema(printer),
        Command::Apply { message } => definition::apply(global, printer, message).await,
        Command::Definition(command) => definition::definition(global, printer, command).await,
        Command::Build(args) => build::build(global, printer, &args.service, &args.version).await,
        Command::Artifacts { service } => {
            artifacts::list(global, printer, service.as_deref()).await
        }
        Command::Deploy(args) => deploy::deploy(global, printer, args).await,
        Command::Dev(args) => dev::dev(global, printer, args).await,
        Command::Status { env, check } => {
            status::status(global, printer, env.as_deref(), check).await
        }
        Command::Top {
            env,
            iterations,
            every,
        } => status::top(global, printer, env.as_deref(), iterations, every).await,
        Command::History { service, env } => {
            history::history(global, printer, &service, &env).await
        }
        Command::Rollback { service, env, to } => {
            rollback::rollback(global, printer, &service, &env, to).await
        }
        Command::Logs {
            service,
            env,
            follow,
            instance,
            lines,
            since,
        } => {
            let view = logs::View {
                follow,
                instance,
                lines,
                since,
            };
            logs::logs(global, printer, &service, &env, view).await
        }
        Command::Restart { service, env } => {
            rollback::restart(global, printer, &service, &env).await
        }
        Command::Scale {
            service,
            env,
            count,
        } => rollback::scale(global, printer, &service, &env, count).await,
        Command::Exec {
            service,
            env,
            instance,
            command,
        } => exec::exec(global, printer, &service, &env, instance, command).await,
        Command::Stop { service, env } => {
            stop::stop(global, printer, &env, Some(service), false).await
        }
        Command::Down { env, purge, yes } => {
            if purge && !yes {
                stop::confirm_purge(&env)?;
            }
            stop::stop(global, printer, &env, None, purge).await
        }
        Command::Server(args) => server::server(global, printer, args).await,
        Command::Agent(args) => agent::agent(global, args).await,
        Command::Token(command) => hosts::token(global, printer, command).await,
        Command::Hosts { env } => hosts::list(global, printer, env.as_deref()).await,
        Command::Host(command) => hosts::act(global, printer, command).await,
        Command::Rollout(command) => rollout::rollout(global, printer, command).await,
        Command::Env(command) => env::env(global, printer, command).await,
        Command::Config(command) => config::config(global, printer, command).await,
        Command::Secret(command) => secret::secret(global, printer, command).await,
        Command::Promote {
            service,
            from,
            to,
            force,
        } => pipeline::promote(global, printer, &service, &from, &to, force).await,
        Command::Approve { deployment } => pipeline::approve(global, printer, deployment).await,
        Command::Reject { deployment } => pipeline::reject(global, printer, deployment).await,
        Command::Deployments {
            action: Some(crate::cli::DeploymentsAction::Show { deployment }),
            ..
        } => pipeline::show_deployment(global, printer, deployment).await,
        Command::Deployments {
            action: Some(crate::cli::DeploymentsAction::Cancel { deployment }),
            ..
        } => pipeline::cancel(global, printer, deployment).await,
        Command::Deployments { action: None, .. } => pipeline::deployments(global, printer).await,
        Command::Audit { limit } => access::audit(global, printer, limit).await,
        Command::Ui { open } => ui::ui(global, printer, open).await,
    }
}

/// The process driver, with this binary as its instances' log writer (`wharf
/// log-writer`), so logs rotate by size as they are written.
pub fn process_driver(tag_prefix: &str) -> wharf_driver_process::ProcessDriver {
    let driver = wharf_driver_process::ProcessDriver::new(tag_prefix.to_owned());
    match std::env::current_exe() {
        Ok(exe) => driver.with_log_writer(exe),
        Err(_) => driver,
    }
}

/// Who is acting, for history: the OS user.
pub fn current_user() -> String {
    if let Some(user) = std::env::var("USER").ok().filter(|u| !u.is_empty()) {
        return user;
    }
    let uid = nix::unistd::getuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(user)) => user.name,
        _ => format!("uid {uid}"),
    }
}

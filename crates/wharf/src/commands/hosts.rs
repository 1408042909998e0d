use std::process::ExitCode;

use wharf_api::TokenRequest;

use crate::cli::{Global, HostCommand, TokenCommand};
use crate::commands::current_user;
use crate::failure::Failure;
use crate::printer::Printer;
use crate::table;

pub async fn token(
    global: &Global,
    printer: &Printer,
    command: TokenCommand,
) -> anyhow::Result<ExitCode> {
    let (env, ttl, uses) = match command {
        TokenCommand::Create { env, ttl, uses } => (env, ttl, uses),
        TokenCommand::Issue { name, scopes } => {
            return crate::commands::access::issue(global, printer, name, scopes).await;
        }
        TokenCommand::List => return crate::commands::access::list(global, printer).await,
        TokenCommand::Revoke { id } => {
            return crate::commands::access::revoke(global, printer, &id).await;
        }
    };
    let client = crate::connect::controller(global, printer).await?;
    let request = TokenRequest {
        env,
        ttl_secs: ttl.as_secs().max(1),
        uses,
        user: current_user(),
    };
    let created = client.create_token(&request).await.map_err(Failure::from)?;
    if printer.json() {
        printer.json_data(&created);
    } else {
        printer.data(&created.token);
        printer.info(&format!(
            "a host of `{}` joins with (valid until {}, {} use(s)):\n  WHARF_JOIN_TOKEN=<the token> wharf agent --controller {} --name HOST",
            created.env,
            table::time(created.expires_at),
            created.uses,
            created.agent_url
        ));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn list(
    global: &Global,
    printer: &Printer,
    env: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let client = crate::connect::controller(global, printer).await?;
    let hosts = client.hosts(env).await.map_err(Failure::from)?;
    if printer.json() {
        printer.json_data(&hosts);
        return Ok(ExitCode::SUCCESS);
    }
    if hosts.is_empty() {
        printer.info("no host has joined; `wharf token create --env ENV` issues a join token");
        return Ok(ExitCode::SUCCESS);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let rows: Vec<Vec<String>> = hosts
        .iter()
        .map(|h| {
            let labels: Vec<String> = h
                .host
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            vec![
                h.host.name.clone(),
                h.host.env.clone(),
                h.host.state.as_str().to_owned(),
                h.host.address.clone(),
                if labels.is_empty() {
                    "-".into()
                } else {
                    labels.join(",")
                },
                format!(
                    "{} cpu, {}",
                    h.host.capacity.cpu_millis as f64 / 1000.0,
                    table::size(h.host.capacity.memory_bytes)
                ),
                h.instances.to_string(),
                format!("{} ago", table::age(now - h.host.last_seen)),
            ]
        })
        .collect();
    printer.data(&table::render(
        &[
            "HOST",
            "ENV",
            "STATE",
            "ADDRESS",
            "LABELS",
            "CAPACITY",
            "INSTANCES",
            "LAST SEEN",
        ],
        &rows,
    ));
    Ok(ExitCode::SUCCESS)
}

pub async fn act(
    global: &Global,
    printer: &Printer,
    command: HostCommand,
) -> anyhow::Result<ExitCode> {
    let (action, args) = match command {
        HostCommand::Drain(a) => ("drain", a),
        HostCommand::Undrain(a) => ("undrain", a),
        HostCommand::Revoke(a) => ("revoke", a),
        HostCommand::Stop(a) => {
            return crate::commands::env::inject(global, printer, "stop", a).await;
        }
        HostCommand::Start(a) => {
            return crate::commands::env::inject(global, printer, "start", a).await;
        }
        HostCommand::Kill(a) => {
            return crate::commands::env::inject(global, printer, "kill", a).await;
        }
        HostCommand::Partition(a) => {
            return crate::commands::env::inject(global, printer, "partition", a).await;
        }
        HostCommand::Heal(a) => {
            return crate::commands::env::inject(global, printer, "heal", a).await;
        }
        HostCommand::Upgrade(a) => {
            return crate::commands::env_ssh::upgrade(global, printer, a).await;
        }
        HostCommand::Add(a) => {
            return crate::commands::env_ssh::add(global, printer, a).await;
        }
        HostCommand::Remove(a) => {
            return crate::commands::env_ssh::remove(global, printer, a).await;
        }
    };
    let client = crate::connect::controller(global, printer).await?;
    let view = client
        .host_action(&args.host, action, args.env.as_deref())
        .await
        .map_err(Failure::from)?;
    if printer.json() {
        printer.json_data(&view);
    }
    printer.info(&format!(
        "host `{}` of `{}` is now {}",
        view.host.name,
        view.host.env,
        view.host.state.as_str()
    ));
    Ok(ExitCode::SUCCESS)
}

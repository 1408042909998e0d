//! `wharf secret`: values read from standard input or a prompt, never from argv.

use std::io::{IsTerminal, Read};
use std::process::ExitCode;

use crate::cli::{Global, SecretCommand};
use crate::commands::current_user;
use crate::failure::Failure;
use crate::printer::{Printer, Tone};
use crate::table;

pub async fn secret(
    global: &Global,
    printer: &Printer,
    command: SecretCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        SecretCommand::Set { target, key } => {
            crate::commands::config::check_target(global, &target)?;
            let value = read_value(&key)?;
            let client = crate::connect::controller(global, printer).await?;
            client
                .set_secret(&target.service, &target.env, &key, value, &current_user())
                .await
                .map_err(Failure::from)?;
            printer.info(&format!(
                "{} secret {key} of {} in {}; the next deploy gives it to its instances",
                printer.paint("stored", Tone::Good),
                target.service,
                target.env
            ));
        }
        SecretCommand::Unset { target, key } => {
            let client = crate::connect::controller(global, printer).await?;
            client
                .unset_secret(&target.service, &target.env, &key)
                .await
                .map_err(Failure::from)?;
            printer.info(&format!(
                "removed secret {key} of {} in {}",
                target.service, target.env
            ));
        }
        SecretCommand::List(target) => {
            let client = crate::connect::controller(global, printer).await?;
            let secrets = client
                .secrets(&target.service, &target.env)
                .await
                .map_err(Failure::from)?;
            if printer.json() {
                printer.json_data(&secrets);
            } else if secrets.is_empty() {
                printer.info(&format!(
                    "`{}` has no secrets in `{}`",
                    target.service, target.env
                ));
            } else {
                let rows: Vec<Vec<String>> = secrets
                    .iter()
                    .map(|s| {
                        vec![
                            s.key.clone(),
                            s.version.to_string(),
                            table::time(s.updated_at),
                            s.updated_by.clone(),
                        ]
                    })
                    .collect();
                printer.data(&table::render(&["KEY", "VERSION", "UPDATED", "BY"], &rows));
            }
        }
        SecretCommand::RotateKey => {
            let client = crate::connect::controller(global, printer).await?;
            let rotated = client.rotate_key().await.map_err(Failure::from)?;
            if printer.json() {
                printer.json_data(&rotated);
            }
            printer.info(&format!(
                "{} master key {}: {} secret(s) sealed again; running instances keep running, but the configuration tokens made with the old key stop working: instances that read WHARF_CONFIG_URL get new ones when they restart (a deploy, or `wharf config set`, rolls them)",
                printer.paint("rotated to", Tone::Good),
                rotated.key_id,
                rotated.resealed
            ));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The secret's value: standard input when it is piped, else a prompt without echo.
/// One trailing newline is dropped (what `echo` and editors add).
fn read_value(key: &str) -> anyhow::Result<Vec<u8>> {
    let mut value = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(format!("value of {key}: "))
            .map_err(|e| Failure::input(format!("cannot read the value: {e}")))?
            .into_bytes()
    } else {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf).map_err(|e| {
            Failure::input(format!("cannot read the value from standard input: {e}"))
        })?;
        buf
    };
    if value.ends_with(b"\n") {
        value.pop();
        if value.ends_with(b"\r") {
            value.pop();
        }
    }
    if value.is_empty() {
        return Err(Failure::input(format!("no value given for secret `{key}`"))
            .hint(format!(
                "pipe it in: `printf %s \"$VALUE\" | wharf secret set SERVICE --env ENV {key}`"
            ))
            .into());
    }
    Ok(value)
}

//! `hosts: { provider: ssh, ... }`: the machines an environment's agents are installed
//! on over SSH, checked where the definition is.

use crate::definition::{Checker, key};
use crate::model::{SshEndpoint, SshHosts, SshMachine};
use crate::raw::RawHosts;
use crate::yaml::PathSegment;

/// The keys that mean something only to `provider: ssh`, as they are set in `raw`.
pub(crate) fn ssh_keys_set(raw: &RawHosts) -> Vec<&'static str> {
    [
        ("user", raw.user.is_some()),
        ("identity_file", raw.identity_file.is_some()),
        ("hosts", raw.hosts.is_some()),
        ("jump", raw.jump.is_some()),
        ("controller", raw.controller.is_some()),
    ]
    .into_iter()
    .filter(|(_, set)| *set)
    .map(|(k, _)| k)
    .collect()
}

/// The machines of `provider: ssh`; every problem reported at its place.
pub(crate) fn check(checker: &mut Checker<'_>, raw: &RawHosts, at: &[PathSegment]) -> SshHosts {
    let place = |rest: &[PathSegment]| {
        let mut path = at.to_vec();
        path.extend_from_slice(rest);
        path
    };
    for set in ["names", "count", "prefix"]
        .into_iter()
        .filter(|k| match *k {
            "names" => raw.names.is_some(),
            "count" => raw.count.is_some(),
            _ => raw.prefix.is_some(),
        })
    {
        checker.report(
            &place(&[key(set)]),
            format!("`{set}` does not apply to `provider: ssh`: its hosts are the machines listed"),
            Some("name each machine in `hosts: [{ name, address }]`".into()),
        );
    }
    let user = raw.user.clone().unwrap_or_else(|| "root".into());
    let mut machines: Vec<SshMachine> = Vec::new();
    let listed = raw.hosts.as_deref().unwrap_or_default();
    if listed.is_empty() {
        checker.report(
            &place(&[key("hosts")]),
            "`provider: ssh` lists no machine".into(),
            Some("add `hosts: [{ name: web-1, address: 10.0.0.5, host_key: \"ssh-ed25519 AAAA...\" }]`".into()),
        );
    }
    for (i, host) in listed.iter().enumerate() {
        let here = place(&[key("hosts"), PathSegment::Index(i)]);
        crate::definition::check_name(checker, &host.name, "host", &here);
        if let Some(first) = machines.iter().find(|m| m.name == host.name) {
            checker.report(
                &here,
                format!("host `{}` is listed twice", first.name),
                Some("give each machine a name of its own".into()),
            );
        }
        if host.address.trim().is_empty() || host.address.contains(char::is_whitespace) {
            checker.report(
                &[here.clone(), vec![key("address")]].concat(),
                format!(
                    "host `{}` has no usable address `{}`",
                    host.name, host.address
                ),
                Some("an IP address or a DNS name, without a port (`port:` takes that)".into()),
            );
        }
        if let Some(problem) = host.host_key.as_deref().and_then(host_key_problem) {
            checker.report(
                &[here.clone(), vec![key("host_key")]].concat(),
                problem,
                Some(HOST_KEY_HINT.into()),
            );
        }
        machines.push(SshMachine {
            name: host.name.clone(),
            endpoint: SshEndpoint {
                address: host.address.trim().to_owned(),
                port: host.port.unwrap_or(22),
                user: host.user.clone().unwrap_or_else(|| user.clone()),
                host_key: host.host_key.clone(),
            },
        });
    }
    let jump = raw.jump.as_ref().map(|j| {
        if let Some(problem) = j.host_key.as_deref().and_then(host_key_problem) {
            checker.report(
                &place(&[key("jump"), key("host_key")]),
                problem,
                Some(HOST_KEY_HINT.into()),
            );
        }
        SshEndpoint {
            address: j.address.trim().to_owned(),
            port: j.port.unwrap_or(22),
            user: j.user.clone().unwrap_or_else(|| user.clone()),
            host_key: j.host_key.clone(),
        }
    });
    if let Some(url) = &raw.controller
        && !url.starts_with("https://")
    {
        checker.report(
            &place(&[key("controller")]),
            format!("`controller: {url}` is not an https:// address"),
            Some("the controller's agent port, as `https://10.0.0.1:7443`".into()),
        );
    }
    if jump.is_some() && raw.controller.is_none() {
        checker.report(
            &place(&[key("jump")]),
            "behind a jump host, the hosts cannot be told where the controller is from the connection".into(),
            Some("add `controller: https://ADDRESS:PORT`, the controller's agent port as the hosts reach it".into()),
        );
    }
    SshHosts {
        identity_file: raw
            .identity_file
            .clone()
            .unwrap_or_else(|| "~/.ssh/id_ed25519".into()),
        user,
        machines,
        jump,
        controller: raw.controller.clone(),
    }
}

/// Where `wharf host add --ssh USER@ADDRESS[:PORT]` logs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    pub user: Option<String>,
    pub address: String,
    pub port: u16,
}

/// Reads `[USER@]ADDRESS[:PORT]`; an IPv6 address with a port is written `[ADDR]:PORT`.
pub fn parse_target(text: &str) -> Result<SshTarget, String> {
    let text = text.trim();
    let (user, rest) = match text.rsplit_once('@') {
        Some((user, rest)) if !user.is_empty() => (Some(user.to_owned()), rest),
        Some(_) => return Err(format!("`{text}` names no user before `@`")),
        None => (None, text),
    };
    let (address, port) = if let Some(inner) = rest.strip_prefix('[') {
        let (address, after) = inner
            .split_once(']')
            .ok_or_else(|| format!("`{rest}` opens `[` and never closes it"))?;
        match after.strip_prefix(':') {
            Some(port) => (address, Some(port)),
            None if after.is_empty() => (address, None),
            None => return Err(format!("`{after}` after `]` is not `:PORT`")),
        }
    } else if rest.matches(':').count() == 1 {
        let (address, port) = rest.split_once(':').unwrap_or((rest, ""));
        (address, Some(port))
    } else {
        (rest, None)
    };
    if address.is_empty() || address.contains(char::is_whitespace) || address.contains('/') {
        return Err(format!("`{text}` has no usable address"));
    }
    let port = match port {
        None => 22,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("`{p}` is not a port (1-65535)"))?,
    };
    Ok(SshTarget {
        user,
        address: address.to_owned(),
        port,
    })
}

/// Why `wharf host add` cannot add a machine to an environment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddHostError {
    #[error("there is no environment `{0}`")]
    NoEnvironment(String),
    #[error("`{0}` does not use `provider: ssh`")]
    NotSsh(String),
    #[error("`{0}` is not a valid host name")]
    BadName(String),
    #[error("`{env}` already has a host `{name}`")]
    NameTaken { name: String, env: String },
    #[error("host `{name}` of `{env}` already is {address}:{port}")]
    AddressTaken {
        name: String,
        env: String,
        address: String,
        port: u16,
    },
    #[error("{0}")]
    BadHostKey(String),
}

impl AddHostError {
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::NotSsh(_) => Some(
                "`wharf host add` adds machines reached over SSH; set `hosts: { provider: ssh }`"
                    .into(),
            ),
            Self::BadName(_) => Some(crate::definition::NAME_HINT.into()),
            Self::NameTaken { name, .. } => Some(format!(
                "choose another name, or `wharf host remove {name}` first"
            )),
            Self::AddressTaken { .. } => Some("one machine is one host".into()),
            Self::BadHostKey(_) => Some(HOST_KEY_HINT.into()),
            Self::NoEnvironment(_) => None,
        }
    }
}

/// Adds `machine` to the SSH machines of `env`, as `wharf host add` records it.
pub fn add_machine(
    def: &mut crate::model::Definition,
    env: &str,
    machine: SshMachine,
) -> Result<(), AddHostError> {
    let hosts = def
        .environments
        .get_mut(env)
        .ok_or_else(|| AddHostError::NoEnvironment(env.to_owned()))?
        .hosts
        .as_mut()
        .filter(|h| h.ssh.is_some())
        .ok_or_else(|| AddHostError::NotSsh(env.to_owned()))?;
    let Some(ssh) = hosts.ssh.as_mut() else {
        return Err(AddHostError::NotSsh(env.to_owned()));
    };
    if !crate::definition::valid_name(&machine.name) {
        return Err(AddHostError::BadName(machine.name));
    }
    if let Some(problem) = machine
        .endpoint
        .host_key
        .as_deref()
        .and_then(host_key_problem)
    {
        return Err(AddHostError::BadHostKey(problem));
    }
    if ssh.machines.iter().any(|m| m.name == machine.name) {
        return Err(AddHostError::NameTaken {
            name: machine.name,
            env: env.to_owned(),
        });
    }
    if let Some(same) = ssh.machines.iter().find(|m| {
        m.endpoint.address == machine.endpoint.address && m.endpoint.port == machine.endpoint.port
    }) {
        return Err(AddHostError::AddressTaken {
            name: same.name.clone(),
            env: env.to_owned(),
            address: same.endpoint.address.clone(),
            port: same.endpoint.port,
        });
    }
    hosts.names.push(machine.name.clone());
    ssh.machines.push(machine);
    Ok(())
}

/// Takes the machine `name` out of the SSH machines of `env`; whether it was there.
pub fn remove_machine(def: &mut crate::model::Definition, env: &str, name: &str) -> bool {
    let Some(hosts) = def.environments.get_mut(env).and_then(|e| e.hosts.as_mut()) else {
        return false;
    };
    let Some(ssh) = hosts.ssh.as_mut() else {
        return false;
    };
    let before = ssh.machines.len();
    ssh.machines.retain(|m| m.name != name);
    hosts.names.retain(|n| n != name);
    ssh.machines.len() != before
}

const HOST_KEY_HINT: &str = "the line of the host's /etc/ssh/ssh_host_ed25519_key.pub: `ssh-ed25519 AAAA...` (`ssh-keyscan HOST` prints it)";

/// What is wrong with a host key as written, if anything (the SSH client checks the
/// key itself; this catches what is plainly not one).
pub fn host_key_problem(text: &str) -> Option<String> {
    let mut fields = text.split_whitespace();
    let (Some(kind), Some(body)) = (fields.next(), fields.next()) else {
        return Some(format!(
            "`{text}` is not a host key: it needs its type and its key"
        ));
    };
    let known = kind.starts_with("ssh-") || kind.starts_with("ecdsa-sha2-");
    let base64 = body
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
        && body.len() >= 16;
    match (known, base64) {
        (false, _) => Some(format!("`{kind}` is not an SSH key type")),
        (_, false) => Some(format!("the key of `{kind}` is not base64")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{SshTarget, host_key_problem, parse_target};

    #[test]
    fn targets_read_user_address_and_port() {
        let target = |user: Option<&str>, address: &str, port| SshTarget {
            user: user.map(str::to_owned),
            address: address.to_owned(),
            port,
        };
        for (text, expected) in [
            ("deploy@10.0.0.5", target(Some("deploy"), "10.0.0.5", 22)),
            (
                "deploy@10.0.0.5:2222",
                target(Some("deploy"), "10.0.0.5", 2222),
            ),
            ("web.example", target(None, "web.example", 22)),
            ("ops@[fd00::5]:2200", target(Some("ops"), "fd00::5", 2200)),
            ("fd00::5", target(None, "fd00::5", 22)),
        ] {
            assert_eq!(parse_target(text).as_ref(), Ok(&expected), "{text}");
        }
        for bad in [
            "@10.0.0.5",
            "deploy@",
            "a@b:0",
            "a@b:99999",
            "a@b:x",
            "a@[fd00::5",
            "a@b c",
        ] {
            assert!(parse_target(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn host_keys_need_a_type_and_a_base64_body() {
        assert_eq!(
            host_key_problem("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFake host"),
            None
        );
        assert!(host_key_problem("AAAAC3NzaC1lZDI1NTE5").is_some());
        assert!(host_key_problem("rsa AAAAC3NzaC1lZDI1NTE5AAAA").is_some());
        assert!(host_key_problem("ssh-ed25519 not*base64*at*all!!").is_some());
    }
}

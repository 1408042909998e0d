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
        machines,
        jump,
        controller: raw.controller.clone(),
    }
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
    use super::host_key_problem;

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

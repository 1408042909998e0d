//! From a deploy spec to concrete instance plans: ports assigned, templates rendered.

use std::collections::BTreeMap;
use std::net::TcpListener;

use wharf_agent::InstancePlan;
use wharf_core::config::{config_digest, render_instance};
use wharf_core::model::PortSpec;
use wharf_core::spec::DeploySpec;
use wharf_core::template::{PeerAddress, TemplateContext};
use wharf_driver::InstanceKey;
use wharf_store::Store;

use crate::error::ServerError;

/// The instance plans of a deploy and the digest of their rendered configuration.
pub struct Rendered {
    pub plans: Vec<InstancePlan>,
    pub config_digest: String,
}

/// What the controller adds to the definition's configuration of a deploy.
#[derive(Default)]
pub struct Extras {
    /// `wharf config set` overrides; they beat every layer of the definition.
    pub overrides: BTreeMap<String, String>,
    /// Secret values with their versions; never rendered as templates.
    pub secrets: Vec<(String, String, i64)>,
    /// The configuration URL and the instance's read-only token for it.
    pub runtime: Option<(String, String)>,
}

/// The variables naming where an instance reads its configuration at runtime.
pub const CONFIG_URL_VAR: &str = wharf_api::agent::CONFIG_URL_VAR;
pub const CONFIG_TOKEN_VAR: &str = wharf_api::agent::CONFIG_TOKEN_VAR;

/// Renders every slot of `spec` at `version` / `digest`.
pub fn render(
    store: &dyn Store,
    spec: &DeploySpec,
    version: &str,
    digest: &str,
    deployment_id: i64,
    extras: &Extras,
) -> Result<Rendered, ServerError> {
    let mut peers = BTreeMap::new();
    for (name, port) in &spec.peers {
        // A peer with a port is reached at its stable address, which balances over its
        // healthy instances.
        let port = match port {
            Some(_) => Some(address_port(
                store,
                &spec.env,
                name,
                spec.peer_address_ports.get(name).copied(),
            )?),
            None => None,
        };
        let host = wharf_core::template::HOST_PLACEHOLDER;
        let address = PeerAddress {
            host: host.into(),
            port,
            url: port.map(|p| format!("http://{host}:{p}")),
        };
        peers.insert(name.clone(), address);
    }
    let address = match &spec.port {
        Some(_) => Some(address_port(
            store,
            &spec.env,
            &spec.service,
            spec.address_port,
        )?),
        None => None,
    };
    let mut plans = Vec::with_capacity(spec.slots.len());
    for (rank, slot) in spec.slots.iter().enumerate() {
        let port = match &spec.port {
            Some(p) => Some(instance_port(
                store,
                &spec.env,
                &spec.service,
                &slot.node,
                p,
                slot.instance,
            )?),
            None => None,
        };
        // Other ports are kept per slot under a pseudo-node of their own (`node@name`: no
        // node name holds `@`).
        let mut ports = BTreeMap::new();
        let mut published = Vec::new();
        for extra in &spec.ports {
            let kind = match extra.fixed {
                Some(base) => PortSpec::Fixed(base),
                None => PortSpec::Named(extra.name.clone()),
            };
            let node = format!("{}@{}", slot.node, extra.name);
            let number =
                instance_port(store, &spec.env, &spec.service, &node, &kind, slot.instance)?;
            ports.insert(extra.name.clone(), number);
            published.push(wharf_api::agent::PublishedPort {
                name: extra.name.clone(),
                host: number,
                container: extra.container,
            });
        }
        let context = TemplateContext {
            ports: ports.clone(),
            port,
            env: spec.env.clone(),
            version: version.to_owned(),
            instance: slot.instance,
            service: spec.service.clone(),
            node: slot.node.clone(),
            services: peers.clone(),
            data_dir: wharf_core::template::DATA_DIR_PLACEHOLDER,
        };
        // `run` and a health command are templates too (`--port {{ port }}`).
        let in_context = |what: String, text: &str| {
            wharf_core::template::render(text, &context).map_err(|e| {
                let err = ServerError::bad_request(format!(
                    "{what} of `{}` in `{}`: {e}",
                    spec.service, spec.env
                ));
                match e.hint() {
                    Some(h) => err.hint(h),
                    None => err,
                }
            })
        };
        let argv = spec
            .run
            .iter()
            .enumerate()
            .map(|(i, arg)| in_context(format!("`run` argument {}", i + 1), arg))
            .collect::<Result<Vec<String>, ServerError>>()?;
        let working_dir = spec
            .working_dir
            .as_ref()
            .map(|dir| in_context("`working_dir`".to_owned(), dir))
            .transpose()?;
        let mut health = spec.health.clone();
        if let Some(wharf_core::model::HealthCheck {
            probe: wharf_core::model::Probe::Command { argv },
            ..
        }) = &mut health
        {
            for (i, arg) in argv.iter_mut().enumerate() {
                *arg = in_context(format!("health command argument {}", i + 1), arg)?;
            }
        }
        let layered = wharf_core::config::layer(&slot.config, &extras.overrides);
        let mut env = render_instance(&layered, &context).map_err(|(key, e)| {
            let err = ServerError::bad_request(format!(
                "config `{key}` of `{}` in `{}`: {e}",
                spec.service, spec.env
            ));
            match e.hint() {
                Some(h) => err.hint(h),
                None => err,
            }
        })?;
        // Files see the configuration, never the secrets (added below).
        let mut files = BTreeMap::new();
        for (path, text) in &spec.files {
            let rendered =
                wharf_core::template::render_file(text, &context, &env).map_err(|e| {
                    let err = ServerError::bad_request(format!(
                        "file `{path}` of `{}` in `{}`: {e}",
                        spec.service, spec.env
                    ));
                    match e.hint() {
                        Some(h) => err.hint(h),
                        None => err,
                    }
                })?;
            files.insert(path.clone(), rendered);
        }
        // Secrets count into the digest by version, so the digest reveals nothing of them.
        let mut hidden = BTreeMap::new();
        let mut secret_keys = Vec::new();
        for (key, value, version) in &extras.secrets {
            env.insert(key.clone(), value.clone());
            hidden.insert(format!("\0secret:{key}"), version.to_string());
            secret_keys.push(key.clone());
        }
        if let Some((url, token)) = &extras.runtime {
            env.insert(
                CONFIG_URL_VAR.into(),
                format!("{url}?instance={}", slot.instance),
            );
            env.insert(CONFIG_TOKEN_VAR.into(), token.clone());
            secret_keys.push(CONFIG_TOKEN_VAR.into());
        }
        let visible: BTreeMap<String, String> = env
            .iter()
            // Where the controller listens is not part of what the instance runs.
            .filter(|(k, _)| !secret_keys.contains(k) && k.as_str() != CONFIG_URL_VAR)
            .map(|(k, v)| (k.clone(), v.clone()))
            .chain(hidden)
            .collect();
        plans.push(InstancePlan {
            key: InstanceKey {
                env: spec.env.clone(),
                service: spec.service.clone(),
                node: slot.node.clone(),
                instance: slot.instance,
            },
            version: version.to_owned(),
            digest: digest.to_owned(),
            // The command is part of what an instance runs: changing it alone must
            // replace the instance too, so it counts into the digest.
            config_digest: config_digest([
                &visible,
                &[("\0run".to_owned(), argv.join("\0"))]
                    .into_iter()
                    .chain(
                        files
                            .iter()
                            .map(|(p, t)| (format!("\0file:{p}"), t.clone())),
                    )
                    .collect(),
            ]),
            deployment_id,
            argv,
            env,
            port,
            health,
            stop_timeout: spec.stop_timeout,
            stop_signal: spec.stop_signal.clone(),
            data_slot: Some(rank as u32),
            resources: spec.resources,
            logs: spec.logs,
            address,
            tcp: spec.tcp,
            drain_timeout: spec.rollout.drain_timeout,
            pause_timeout: spec.rollout.pause_timeout,
            response_timeout: spec.response_timeout,
            driver: slot.driver.unwrap_or(spec.driver),
            image: spec.image,
            image_ref: spec.image_ref.clone(),
            reload: None,
            secret_keys,
            files,
            container_port: spec.container_port,
            entrypoint: spec.entrypoint.clone(),
            working_dir,
            user: spec.user.clone(),
            ports: published,
            volumes: spec.volumes.clone(),
        });
    }
    // Secrets left out as `InstancePlan::redacted` leaves them, without copying plans.
    let config_digest = config_digest(plans.iter().map(|p| {
        p.env
            .iter()
            .filter(move |(k, _)| !p.secret_keys.contains(k))
    }));
    Ok(Rendered {
        plans,
        config_digest,
    })
}

/// The node name under which a service's address port is kept (no node can be named
/// so: node names start with a letter or digit).
pub(crate) const ADDRESS_NODE: &str = "@address";

/// The port of a service's stable address: the fixed one, or one assigned once per
/// service and environment and kept.
pub fn address_port(
    store: &dyn Store,
    env: &str,
    service: &str,
    fixed: Option<u16>,
) -> Result<u16, ServerError> {
    kept_port(store, (env, service), ADDRESS_NODE, "address", fixed)
}

/// The port of a rollout's preview address: the fixed one, or one assigned once per
/// service and environment and kept.
pub fn preview_port(
    store: &dyn Store,
    env: &str,
    service: &str,
    fixed: Option<u16>,
) -> Result<u16, ServerError> {
    kept_port(store, (env, service), "@preview", "preview", fixed)
}

/// `fixed`, or a port assigned once to the service under the pseudo-node `node`.
fn kept_port(
    store: &dyn Store,
    (env, service): (&str, &str),
    node: &str,
    name: &str,
    fixed: Option<u16>,
) -> Result<u16, ServerError> {
    match fixed {
        Some(port) => Ok(port),
        None => instance_port(store, env, service, node, &PortSpec::Named(name.into()), 0),
    }
}

/// The port of an instance: fixed ports count up from their base; named ports are
/// assigned once per slot and kept, so a service keeps its address across versions.
fn instance_port(
    store: &dyn Store,
    env: &str,
    service: &str,
    node: &str,
    spec: &PortSpec,
    instance: u32,
) -> Result<u16, ServerError> {
    match spec {
        PortSpec::Fixed(base) => base.checked_add(instance as u16).ok_or_else(|| {
            ServerError::bad_request(format!("port {base} + instance {instance} is beyond 65535"))
        }),
        PortSpec::Named(_) => {
            if let Some(port) = store.assigned_port(env, service, node, instance)? {
                return Ok(port);
            }
            for _ in 0..32 {
                let port = TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .map_err(|e| ServerError::internal(format!("cannot find a free port: {e}")))?
                    .port();
                if !store.port_taken(port)? {
                    store.assign_port(env, service, node, instance, port)?;
                    return Ok(port);
                }
            }
            Err(ServerError::internal("cannot find a free port"))
        }
    }
}

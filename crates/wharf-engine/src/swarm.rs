//! Docker's Swarm mode: each wharf service is a Swarm service of the environment's
//! replicas, rolled start-first by Swarm itself, rolled back by Swarm when a new replica
//! fails, its secrets Swarm secrets.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bollard::Docker;
use bollard::models::{
    EndpointPortConfig, EndpointPortConfigPublishModeEnum, EndpointSpec, HealthConfig, SecretSpec,
    ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, ServiceSpecRollbackConfig,
    ServiceSpecRollbackConfigOrderEnum, ServiceSpecUpdateConfig,
    ServiceSpecUpdateConfigFailureActionEnum, ServiceSpecUpdateConfigOrderEnum,
    ServiceUpdateStatusStateEnum, TaskSpec, TaskSpecContainerSpec, TaskSpecContainerSpecFile,
    TaskSpecContainerSpecSecrets, TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum,
};
use bollard::query_parameters::{
    EventsOptionsBuilder, InspectServiceOptions, ListSecretsOptionsBuilder,
    ListTasksOptionsBuilder, UpdateServiceOptionsBuilder,
};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use wharf_core::model::Probe;

use crate::{
    EngineError, EngineService, LABEL_DEPLOYMENT, LABEL_ENV, LABEL_SERVICE, LABEL_VERSION, Outcome,
    Replica, engine_name,
};

/// The Swarm secret holding one secret's value: named by a digest of the value, since
/// Swarm secrets cannot change (a new value is a new secret, rolled out like a new
/// version).
pub fn secret_name(env: &str, service: &str, key: &str, value: &str) -> String {
    let digest = Sha256::digest(format!("{env}\0{service}\0{key}\0{value}"));
    let mut name = format!("wharf-{env}-{service}-{}", key.to_ascii_lowercase());
    // Swarm names are at most 64 characters.
    name.truncate(64 - 13);
    format!("{name}-{}", &hex::encode(digest)[..12])
}

fn labels(s: &EngineService) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_SERVICE.to_owned(), s.service.clone()),
        (LABEL_ENV.to_owned(), s.env.clone()),
        (LABEL_VERSION.to_owned(), s.version.clone()),
        (LABEL_DEPLOYMENT.to_owned(), s.deployment_id.to_string()),
    ])
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// The health check Swarm runs inside each replica: a command as given; an HTTP check
/// through the image's `wget` (busybox and most base images have it); a TCP check as
/// the image's `nc -z`.
pub fn health_config(s: &EngineService) -> Option<HealthConfig> {
    let check = s.health.as_ref()?;
    let port = s.port.map(|p| p.target).unwrap_or(80);
    let test = match &check.probe {
        Probe::Command { argv } => [vec!["CMD".to_owned()], argv.clone()].concat(),
        Probe::Http { path } => vec![
            "CMD".into(),
            "wget".into(),
            "-q".into(),
            "-O".into(),
            "/dev/null".into(),
            format!("http://127.0.0.1:{port}{path}"),
        ],
        Probe::Tcp => vec![
            "CMD".into(),
            "nc".into(),
            "-z".into(),
            "127.0.0.1".into(),
            port.to_string(),
        ],
    };
    Some(HealthConfig {
        test: Some(test),
        interval: Some(nanos(check.interval)),
        timeout: Some(nanos(check.interval.max(Duration::from_secs(1)))),
        retries: Some(i64::from(check.unhealthy_after.max(1))),
        start_period: Some(nanos(check.timeout)),
        start_interval: Some(nanos(check.interval)),
    })
}

/// The Swarm service for `s`, its secrets given as `(key, swarm id, swarm name)`.
pub fn service_spec(s: &EngineService, secrets: &[(String, String, String)]) -> ServiceSpec {
    let env: Vec<String> = s.config.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let container = TaskSpecContainerSpec {
        image: Some(s.image.clone()),
        labels: Some(labels(s)),
        command: s.entrypoint.clone(),
        args: (!s.args.is_empty()).then(|| s.args.clone()),
        env: Some(env),
        stop_signal: s.stop_signal.clone(),
        stop_grace_period: Some(nanos(s.stop_grace)),
        health_check: health_config(s),
        secrets: Some(
            secrets
                .iter()
                .map(|(key, id, name)| TaskSpecContainerSpecSecrets {
                    file: Some(TaskSpecContainerSpecFile {
                        name: Some(key.clone()),
                        uid: Some("0".into()),
                        gid: Some("0".into()),
                        mode: Some(0o444),
                    }),
                    secret_id: Some(id.clone()),
                    secret_name: Some(name.clone()),
                })
                .collect(),
        ),
        ..Default::default()
    };
    ServiceSpec {
        name: Some(engine_name(&s.env, &s.service)),
        labels: Some(labels(s)),
        task_template: Some(TaskSpec {
            container_spec: Some(container),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::ANY),
                ..Default::default()
            }),
            ..Default::default()
        }),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated {
                replicas: Some(i64::try_from(s.replicas).unwrap_or(i64::MAX)),
            }),
            ..Default::default()
        }),
        update_config: Some(ServiceSpecUpdateConfig {
            parallelism: Some(i64::from(s.parallelism.max(1))),
            failure_action: Some(ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK),
            monitor: Some(nanos(s.monitor)),
            max_failure_ratio: Some(0.0),
            order: Some(ServiceSpecUpdateConfigOrderEnum::START_FIRST),
            ..Default::default()
        }),
        rollback_config: Some(ServiceSpecRollbackConfig {
            parallelism: Some(0),
            order: Some(ServiceSpecRollbackConfigOrderEnum::START_FIRST),
            ..Default::default()
        }),
        // Through the routing mesh: every node of the swarm answers on the port.
        endpoint_spec: s.port.and_then(|p| Some((p.target, p.published?))).map(
            |(target, published)| EndpointSpec {
                ports: Some(vec![EndpointPortConfig {
                    target_port: Some(i64::from(target)),
                    published_port: Some(i64::from(published)),
                    publish_mode: Some(EndpointPortConfigPublishModeEnum::INGRESS),
                    ..Default::default()
                }]),
                ..Default::default()
            },
        ),
        ..Default::default()
    }
}

/// The swarm the local Docker engine manages.
pub struct Swarm {
    docker: Docker,
}

impl Swarm {
    /// Connects to the Docker engine (`DOCKER_HOST` or the local socket) and checks it
    /// manages a swarm.
    pub async fn connect() -> Result<Self, EngineError> {
        let docker = Docker::connect_with_local_defaults()?;
        let info = docker.info().await?;
        let swarm = info.swarm.unwrap_or_default();
        if swarm.control_available != Some(true) {
            let state = swarm
                .local_node_state
                .map(|s| s.to_string())
                .unwrap_or_else(|| "no swarm".into());
            return Err(EngineError::NotASwarm(format!(
                "its swarm state is `{state}`"
            )));
        }
        Ok(Self { docker })
    }

    /// Makes the Swarm secrets `s` needs; `(key, id, name)` of each.
    async fn secrets(
        &self,
        s: &EngineService,
    ) -> Result<Vec<(String, String, String)>, EngineError> {
        let mut refs = Vec::new();
        for (key, value) in &s.secrets {
            let name = secret_name(&s.env, &s.service, key, value);
            let filters = HashMap::from([("name", vec![name.as_str()])]);
            let found = self
                .docker
                .list_secrets(Some(
                    ListSecretsOptionsBuilder::default()
                        .filters(&filters)
                        .build(),
                ))
                .await?
                .into_iter()
                .find(|secret| {
                    secret.spec.as_ref().and_then(|s| s.name.as_deref()) == Some(name.as_str())
                })
                .and_then(|secret| secret.id);
            let id = match found {
                Some(id) => id,
                None => {
                    let mut labels = labels(s);
                    labels.remove(LABEL_VERSION);
                    labels.remove(LABEL_DEPLOYMENT);
                    self.docker
                        .create_secret(SecretSpec {
                            name: Some(name.clone()),
                            labels: Some(labels),
                            data: Some(base64::engine::general_purpose::STANDARD.encode(value)),
                            ..Default::default()
                        })
                        .await?
                        .id
                }
            };
            refs.push((key.clone(), id, name));
        }
        Ok(refs)
    }

    /// Creates or updates the service of `s` and follows Swarm's rollout until it
    /// converges, rolls back or stops, or `timeout` passes.
    pub async fn apply(
        &self,
        s: &EngineService,
        timeout: Duration,
    ) -> Result<Outcome, EngineError> {
        let name = engine_name(&s.env, &s.service);
        let secrets = self.secrets(s).await?;
        let spec = service_spec(s, &secrets);
        // The engine's events wake the loop below; its checks do not depend on them.
        let filters = HashMap::from([("type", vec!["service", "container"])]);
        let mut events = self
            .docker
            .events(Some(
                EventsOptionsBuilder::default().filters(&filters).build(),
            ))
            .fuse();
        let before = self.inspect(&name).await?;
        let previous_update = before
            .as_ref()
            .and_then(|b| b.update_status.as_ref())
            .and_then(|u| u.started_at.clone());
        match &before {
            None => {
                self.docker.create_service(spec, None).await?;
            }
            Some(current) => {
                let version = current
                    .version
                    .as_ref()
                    .and_then(|v| v.index)
                    .unwrap_or_default();
                let options = UpdateServiceOptionsBuilder::default()
                    .version(i32::try_from(version).unwrap_or(i32::MAX))
                    .build();
                self.docker
                    .update_service(&name, spec, options, None)
                    .await?;
            }
        }
        let began = Instant::now();
        loop {
            if let Some(outcome) = self.settled(s, &name, previous_update.as_ref()).await? {
                return Ok(outcome);
            }
            let left = timeout.saturating_sub(began.elapsed());
            if left.is_zero() {
                return Err(EngineError::Timeout {
                    service: name,
                    waited: timeout,
                });
            }
            // Woken by the engine's events; a second at most in case one was dropped,
            // and a second each once the stream has ended.
            let tick = left.min(Duration::from_secs(1));
            match tokio::time::timeout(tick, events.next()).await {
                Ok(Some(Ok(_))) | Err(_) => {}
                Ok(Some(Err(_)) | None) => tokio::time::sleep(tick).await,
            }
        }
    }

    async fn inspect(&self, name: &str) -> Result<Option<bollard::models::Service>, EngineError> {
        match self
            .docker
            .inspect_service(name, None::<InspectServiceOptions>)
            .await
        {
            Ok(service) => Ok(Some(service)),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Where the rollout of `s` stands: None while it goes on.
    async fn settled(
        &self,
        s: &EngineService,
        name: &str,
        previous_update: Option<&bollard::models::BollardDate>,
    ) -> Result<Option<Outcome>, EngineError> {
        let Some(service) = self.inspect(name).await? else {
            return Ok(Some(Outcome::Failed(format!(
                "the service `{name}` disappeared"
            ))));
        };
        let update = service
            .update_status
            .as_ref()
            .filter(|u| u.started_at.as_ref() != previous_update);
        if let Some(update) = update {
            let message = update.message.clone().unwrap_or_default();
            match update.state {
                Some(ServiceUpdateStatusStateEnum::COMPLETED) => {}
                Some(ServiceUpdateStatusStateEnum::ROLLBACK_COMPLETED) => {
                    return Ok(Some(Outcome::RolledBack(self.why(name, message).await)));
                }
                Some(
                    ServiceUpdateStatusStateEnum::PAUSED
                    | ServiceUpdateStatusStateEnum::ROLLBACK_PAUSED,
                ) => return Ok(Some(Outcome::Failed(self.why(name, message).await))),
                _ => return Ok(None),
            }
        }
        // Created, or an update not begun yet (Swarm clears the status until its
        // updater starts) or finished: done once exactly its replicas of this deployment run
        // and no replica of another still does (Swarm calls an update complete while
        // the old ones are still stopping). Each deploy labels its replicas with its
        // id, so a replica of the same version from before never counts.
        let ours = s.deployment_id.to_string();
        let tasks = self.tasks(name, false).await?;
        let running = tasks.iter().filter(|r| r.state == "running");
        let (mine, others) = running.partition::<Vec<_>, _>(|r| r.deployment == ours);
        Ok((mine.len() as u64 == s.replicas && others.is_empty()).then_some(Outcome::Converged))
    }

    /// Swarm's message, with the last failed replica's error.
    async fn why(&self, name: &str, message: String) -> String {
        let failed = self
            .tasks(name, false)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t.state != "running" && !t.message.is_empty())
            .map(|t| format!("{} ({})", t.message, t.state))
            .next();
        match failed {
            Some(task) => format!("{message}; a replica: {task}"),
            None => message,
        }
    }

    /// The replicas Swarm wants running of a service.
    pub async fn replicas(&self, env: &str, service: &str) -> Result<Vec<Replica>, EngineError> {
        self.tasks(&engine_name(env, service), true).await
    }

    async fn tasks(&self, name: &str, wanted_only: bool) -> Result<Vec<Replica>, EngineError> {
        let mut filters = HashMap::from([("service", vec![name])]);
        if wanted_only {
            filters.insert("desired-state", vec!["running"]);
        }
        let tasks = match self
            .docker
            .list_tasks(Some(
                ListTasksOptionsBuilder::default().filters(&filters).build(),
            ))
            .await
        {
            Ok(tasks) => tasks,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let mut replicas: Vec<Replica> = tasks
            .into_iter()
            .map(|t| {
                let status = t.status.unwrap_or_default();
                let labels = t
                    .spec
                    .and_then(|s| s.container_spec)
                    .and_then(|c| c.labels)
                    .unwrap_or_default();
                let label = |name: &str| labels.get(name).cloned().unwrap_or_default();
                let (version, deployment) = (label(LABEL_VERSION), label(LABEL_DEPLOYMENT));
                Replica {
                    id: t.id.unwrap_or_default(),
                    slot: t.slot.and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                    version,
                    deployment,
                    state: status.state.map(|s| s.to_string()).unwrap_or_default(),
                    message: status.err.or(status.message).unwrap_or_default(),
                    container: status.container_status.and_then(|c| c.container_id),
                }
            })
            .collect();
        replicas.sort_by(|a, b| (a.slot, &a.id).cmp(&(b.slot, &b.id)));
        Ok(replicas)
    }

    /// Removes the service and its secrets; false when there was no service.
    pub async fn remove(&self, env: &str, service: &str) -> Result<bool, EngineError> {
        let name = engine_name(env, service);
        let existed = match self.docker.delete_service(&name).await {
            Ok(()) => true,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => false,
            Err(e) => return Err(e.into()),
        };
        let label = [
            format!("{LABEL_ENV}={env}"),
            format!("{LABEL_SERVICE}={service}"),
        ];
        let filters = HashMap::from([("label", label.iter().map(String::as_str).collect())]);
        let secrets = self
            .docker
            .list_secrets(Some(
                ListSecretsOptionsBuilder::default()
                    .filters(&filters)
                    .build(),
            ))
            .await?;
        for secret in secrets {
            let Some(id) = secret.id else { continue };
            // Still held by the service's last replicas for a moment after its removal.
            let began = Instant::now();
            while let Err(e) = self.docker.delete_secret(&id).await {
                if began.elapsed() > Duration::from_secs(30) {
                    return Err(e.into());
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        Ok(existed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use wharf_core::model::HealthCheck;

    fn service() -> EngineService {
        EngineService {
            env: "uat".into(),
            service: "catalog".into(),
            version: "v2".into(),
            deployment_id: 7,
            image: "sha256:abc".into(),
            replicas: 3,
            args: vec!["serve".into()],
            entrypoint: None,
            config: BTreeMap::from([("LOG_LEVEL".into(), "debug".into())]),
            secrets: BTreeMap::from([("DB_PASSWORD".into(), "hunter2".into())]),
            port: Some(crate::ServicePort {
                target: 8080,
                published: Some(18080),
            }),
            health: Some(HealthCheck {
                probe: Probe::Http {
                    path: "/health".into(),
                },
                timeout: Duration::from_secs(30),
                interval: Duration::from_secs(2),
                fall: 2,
                rise: 2,
                unhealthy_after: 3,
            }),
            parallelism: 2,
            monitor: Duration::from_secs(5),
            stop_grace: Duration::from_secs(10),
            stop_signal: None,
        }
    }

    fn secrets() -> Vec<(String, String, String)> {
        vec![(
            "DB_PASSWORD".into(),
            "id1".into(),
            "wharf-uat-catalog-db_password-x".into(),
        )]
    }

    #[test]
    fn a_service_rolls_start_first_and_rolls_back_on_failure() {
        let spec = service_spec(&service(), &secrets());
        let update = spec.update_config.unwrap();
        assert_eq!(
            update.order,
            Some(ServiceSpecUpdateConfigOrderEnum::START_FIRST)
        );
        assert_eq!(
            update.failure_action,
            Some(ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK)
        );
        assert_eq!(update.parallelism, Some(2));
        assert_eq!(update.monitor, Some(5_000_000_000));
        assert_eq!(spec.mode.unwrap().replicated.unwrap().replicas, Some(3));
        assert_eq!(spec.name.as_deref(), Some("wharf-uat-catalog"));
    }

    #[test]
    fn secrets_are_files_never_in_the_spec() {
        let spec = service_spec(&service(), &secrets());
        let text = format!("{spec:?}");
        assert!(!text.contains("hunter2"), "{text}");
        let container = spec.task_template.unwrap().container_spec.unwrap();
        assert_eq!(container.env, Some(vec!["LOG_LEVEL=debug".to_owned()]));
        let secret = &container.secrets.unwrap()[0];
        assert_eq!(secret.secret_id.as_deref(), Some("id1"));
        assert_eq!(
            secret.file.as_ref().unwrap().name.as_deref(),
            Some("DB_PASSWORD")
        );
    }

    #[test]
    fn labels_name_service_environment_and_version() {
        let spec = service_spec(&service(), &[]);
        let labels = spec.labels.unwrap();
        assert_eq!(labels[LABEL_SERVICE], "catalog");
        assert_eq!(labels[LABEL_ENV], "uat");
        assert_eq!(labels[LABEL_VERSION], "v2");
    }

    #[test]
    fn an_http_check_runs_inside_the_replica_on_its_own_port() {
        let test = health_config(&service()).unwrap().test.unwrap();
        assert_eq!(test.last().unwrap(), "http://127.0.0.1:8080/health");
        assert_eq!(test[0], "CMD");
    }

    #[test]
    fn the_port_is_published_through_the_routing_mesh() {
        let ports = service_spec(&service(), &[])
            .endpoint_spec
            .unwrap()
            .ports
            .unwrap();
        assert_eq!(ports[0].published_port, Some(18080));
        assert_eq!(ports[0].target_port, Some(8080));
        assert_eq!(
            ports[0].publish_mode,
            Some(EndpointPortConfigPublishModeEnum::INGRESS)
        );
    }

    #[test]
    fn a_new_secret_value_is_a_new_secret_name_within_swarm_limits() {
        let a = secret_name("uat", "catalog", "DB_PASSWORD", "one");
        let b = secret_name("uat", "catalog", "DB_PASSWORD", "two");
        assert_ne!(a, b);
        let long = secret_name(&"e".repeat(40), &"s".repeat(40), "K", "v");
        assert!(long.len() <= 64, "{long}");
    }
}

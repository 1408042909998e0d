//! wharf's durable state. The controller talks to a [`Store`]; [`SqliteStore`] keeps it in
//! one SQLite file in WAL mode, so a crash at any point leaves the last committed state.

mod migrations;
pub mod postgres;
mod records;
mod sqlite;
#[cfg(test)]
mod suite;

pub use postgres::{LeaseState, PgStore};
pub use records::*;
pub use sqlite::SqliteStore;

/// Why the store refused or failed an operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "version `{version}` of `{service}` already exists with digest {existing}; a version name never points at two different contents"
    )]
    VersionConflict {
        service: String,
        version: String,
        existing: String,
    },
    #[error(
        "`{service}` in `{env}` is being deployed by {holder} (deployment #{id}, started {started})"
    )]
    Locked {
        service: String,
        env: String,
        holder: String,
        id: i64,
        started: String,
    },
    #[error("join token refused: {0}")]
    TokenRefused(String),
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("database error: {0}")]
    Postgres(String),
    /// The database could not be reached or did not answer in time.
    #[error("the database is unreachable: {0}")]
    Unavailable(String),
    /// A write by a controller whose leader lease was taken over (or never held): it
    /// changed nothing.
    #[error(
        "this controller no longer leads (its lease epoch {epoch} is not the database's), so it wrote nothing; the leader takes writes"
    )]
    Fenced { epoch: i64 },
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    /// A state change lost a race: the deployment had already moved on.
    #[error("deployment #{id} is {state}, so it cannot become {wanted}")]
    Transition {
        id: i64,
        /// Its state as found (`rejected`, `in_progress`, ...).
        state: String,
        wanted: String,
    },
    #[error("there is no deployment #{0}")]
    NoDeployment(i64),
    /// A held configuration revision that a newer one replaced meanwhile: approving it
    /// would ship values the controller no longer reports as current.
    #[error(
        "deployment #{id} would ship configuration revision {revision}, but revision {newest} was made since"
    )]
    Superseded { id: i64, revision: i64, newest: i64 },
}

/// An instance slot, borrowed: environment, service, node, instance.
pub type InstanceKeyRef<'a> = (&'a str, &'a str, &'a str, u32);

/// Whether registering an artifact added it or found it already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    AlreadyPresent,
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The controller's persistence. Every method is one transaction.
pub trait Store: Send + Sync {
    /// A counter that moves after every committed write, for whoever shows the state
    /// live (the dashboard's event stream): it learns that something changed, and reads
    /// what. `None` for a store that cannot tell.
    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
    /// Whether several controllers share this store, one leading: then the files they
    /// must see alike (the certificate authority, artifact archives) live in it too
    /// ([`Store::shared_file`]). SQLite is one controller's, whose files are its folder's.
    fn shares_files(&self) -> bool {
        false
    }
    /// A file kept for every controller sharing this store, by name.
    fn shared_file(&self, _name: &str) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }
    /// Keeps a file for every controller sharing this store; a name already kept keeps
    /// its first contents (names are content digests, or written once, as the CA is).
    fn put_shared_file(&self, _name: &str, _data: &[u8]) -> Result<()> {
        Ok(())
    }

    /// Registers an artifact; refuses a known version with a different digest.
    fn put_artifact(&self, artifact: &ArtifactRecord) -> Result<PutOutcome>;
    fn artifact(&self, service: &str, version: &str) -> Result<Option<ArtifactRecord>>;
    fn artifacts(&self, service: Option<&str>) -> Result<Vec<ArtifactRecord>>;

    /// Records a new deployment, refusing it while another of the same service and
    /// environment is in progress (the deploy lock lives in the database).
    fn begin_deployment(&self, deployment: &NewDeployment) -> Result<i64>;
    /// Moves a deployment to `state` if [`DeploymentState::may_become`] allows it from
    /// the state it is in, as one compare-and-set; otherwise [`StoreError::Transition`]
    /// and nothing changes.
    fn finish_deployment(
        &self,
        id: i64,
        state: DeploymentState,
        message: &str,
        at: i64,
    ) -> Result<()>;
    fn deployment(&self, id: i64) -> Result<Option<DeploymentRecord>>;
    /// Deployments of a service in an environment, newest first.
    fn history(&self, service: &str, env: &str) -> Result<Vec<DeploymentRecord>>;
    /// The same without each deployment's spec (`null`), which is most of a row: what
    /// listings and status reports need, read at a fraction of the cost.
    fn history_brief(&self, service: &str, env: &str) -> Result<Vec<DeploymentRecord>>;
    /// Marks every in-progress deployment interrupted (at controller start); returns them.
    fn interrupt_unfinished(&self, message: &str, at: i64) -> Result<Vec<DeploymentRecord>>;
    /// Interrupted deployments not yet resolved (rolled back or resumed), oldest first.
    fn unresolved_interruptions(&self) -> Result<Vec<DeploymentRecord>>;
    /// Records how an interrupted deployment was resolved: by deployment `by` (or by
    /// none, 0), with `message` saying what happened.
    fn resolve_interruption(&self, id: i64, by: i64, message: &str) -> Result<()>;
    /// Replaces the spec of an in-progress deployment: a held deployment approved later
    /// numbers its instances against what runs then.
    fn set_deployment_spec(&self, id: i64, spec: &SpecJson) -> Result<()>;

    fn put_instance(&self, instance: &InstanceRecord) -> Result<()>;
    /// Writes many instance rows in one transaction.
    fn put_instances(&self, instances: &[InstanceRecord]) -> Result<()>;
    /// Writes instance rows that joined hosts reported, in one transaction, skipping
    /// those whose slot is no longer assigned: a report written late never brings back
    /// the row of an instance stopped meanwhile.
    fn put_observed_instances(&self, instances: &[InstanceRecord]) -> Result<()>;
    fn remove_instance(&self, env: &str, service: &str, node: &str, instance: u32) -> Result<()>;
    /// Removes many instance rows in one transaction.
    fn remove_instances(&self, slots: &[InstanceKeyRef<'_>]) -> Result<()>;
    /// Instances, optionally of one environment and service.
    fn instances(&self, env: Option<&str>, service: Option<&str>) -> Result<Vec<InstanceRecord>>;

    /// The port an instance slot keeps across deploys, if one was assigned.
    /// Ports belong to a slot (node and instance): an instance that moves to another
    /// host gets a port there, and keeps it across versions while it stays.
    fn assigned_port(
        &self,
        env: &str,
        service: &str,
        node: &str,
        instance: u32,
    ) -> Result<Option<u16>>;
    fn assign_port(
        &self,
        env: &str,
        service: &str,
        node: &str,
        instance: u32,
        port: u16,
    ) -> Result<()>;
    /// Whether a port is assigned to some slot already.
    fn port_taken(&self, port: u16) -> Result<bool>;

    /// Records a join token; only the hash of its secret is kept.
    fn create_join_token(&self, token: &JoinTokenRecord, secret_hash: &str) -> Result<()>;
    /// Spends one use of a token, refusing unknown, wrong, used-up or expired ones.
    /// Returns the environment it joins.
    fn redeem_join_token(&self, id: &str, secret_hash: &str, now: i64) -> Result<String>;
    fn join_tokens(&self) -> Result<Vec<JoinTokenRecord>>;
    /// Adds a host, or re-admits one of the same name in the same environment; either
    /// way a new certificate serial, so the host's older certificates stop working.
    fn register_host(&self, host: &NewHost) -> Result<HostRecord>;
    fn host(&self, id: i64) -> Result<Option<HostRecord>>;
    fn hosts(&self, env: Option<&str>) -> Result<Vec<HostRecord>>;
    /// Records hosts' latest heartbeats, in one transaction.
    fn touch_hosts(&self, heard: &[Heartbeat]) -> Result<()>;
    fn set_host_state(&self, id: i64, state: HostState) -> Result<()>;
    /// Forgets a host and what was assigned to it.
    fn remove_host(&self, id: i64) -> Result<()>;

    /// Records what a host should run for an instance slot (the plan as JSON).
    fn put_assignment(
        &self,
        host_id: i64,
        env: &str,
        service: &str,
        node: &str,
        instance: u32,
        plan: &serde_json::Value,
    ) -> Result<()>;
    fn remove_assignment(&self, env: &str, service: &str, node: &str, instance: u32) -> Result<()>;
    /// Removes many assignments in one transaction.
    fn remove_assignments(&self, slots: &[InstanceKeyRef<'_>]) -> Result<()>;
    /// Records many assignments, each with the id of its host and its plan as JSON
    /// text, in one transaction.
    fn put_assignments(&self, plans: &[(i64, InstanceKeyRef<'_>, String)]) -> Result<()>;
    /// Plans assigned to a host.
    fn assignments(&self, host_id: i64) -> Result<Vec<serde_json::Value>>;

    /// Moves a deployment held for approval to in progress, taking the deploy lock; a
    /// deployment no longer held (rejected or expired meanwhile) is a
    /// [`StoreError::Transition`].
    fn approve_deployment(&self, id: i64, approver: &str, at: i64) -> Result<()>;
    /// Deployments waiting for approval, oldest first.
    fn pending_deployments(&self) -> Result<Vec<DeploymentRecord>>;
    /// Whether `digest` of `service` ever deployed successfully in `env`.
    fn ran_successfully(&self, service: &str, env: &str, digest: &str) -> Result<bool>;

    /// Adds a configuration revision holding `values`; returns it.
    fn put_config_revision(
        &self,
        service: &str,
        env: &str,
        values: &std::collections::BTreeMap<String, String>,
        user: &str,
        at: i64,
        message: &str,
    ) -> Result<ConfigRevision>;
    /// Adds a revision that stays `held` (invisible to [`Store::config_revision`] with
    /// `None`) until the deployment rolling it is approved; rejected with it.
    fn hold_config_revision(
        &self,
        service: &str,
        env: &str,
        values: &std::collections::BTreeMap<String, String>,
        user: &str,
        at: i64,
        message: &str,
    ) -> Result<ConfigRevision>;
    /// A revision, or the newest active one when `revision` is None.
    fn config_revision(
        &self,
        service: &str,
        env: &str,
        revision: Option<i64>,
    ) -> Result<Option<ConfigRevision>>;
    /// Every revision, newest first.
    fn config_revisions(&self, service: &str, env: &str) -> Result<Vec<ConfigRevision>>;

    /// Adds or replaces a secret.
    fn put_secret(&self, secret: &SecretRecord) -> Result<()>;
    /// Removes a secret; false when there was none.
    fn remove_secret(&self, service: &str, env: &str, key: &str) -> Result<bool>;
    /// Secrets of one service and environment, or every secret.
    fn secrets(&self, scope: Option<(&str, &str)>) -> Result<Vec<SecretRecord>>;
    /// Replaces the ciphertext of many secrets in one transaction (key rotation).
    fn reencrypt_secrets(&self, secrets: &[SecretRecord]) -> Result<()>;

    /// Records an API token; only the hash of its secret is kept.
    fn create_api_token(&self, token: &ApiTokenRecord, secret_hash: &str) -> Result<()>;
    /// A token and its secret hash, by id.
    fn api_token(&self, id: &str) -> Result<Option<(ApiTokenRecord, String)>>;
    fn api_tokens(&self) -> Result<Vec<ApiTokenRecord>>;
    /// Revokes a token; false when there is no such live token.
    fn revoke_api_token(&self, id: &str, at: i64) -> Result<bool>;

    /// Stores the next revision of the definition (its `revision` is ignored); returns it.
    fn put_definition(&self, definition: &DefinitionRecord) -> Result<DefinitionRecord>;
    /// The number of the revision in force (the newest active one), without its text:
    /// cheap enough to ask on every request.
    fn definition_in_force(&self) -> Result<Option<i64>>;
    /// A revision of the definition, or the newest active one when `revision` is None.
    fn definition(&self, revision: Option<i64>) -> Result<Option<DefinitionRecord>>;
    /// Every revision, newest first.
    fn definitions(&self) -> Result<Vec<DefinitionRecord>>;
    /// Stores the next revision held, and the deployment that holds it for approval
    /// (its `config_revision` is set to the revision), in one transaction.
    fn hold_definition(
        &self,
        definition: &DefinitionRecord,
        approval: &NewDeployment,
    ) -> Result<(DefinitionRecord, i64)>;

    /// Stores a rollout's phase and progress (its pending command is left as it is).
    fn put_rollout(&self, rollout: &RolloutRecord) -> Result<()>;
    /// The newest rollout of a service in an environment.
    fn rollout(&self, env: &str, service: &str) -> Result<Option<RolloutRecord>>;
    /// Every rollout still in one of `phases`.
    fn rollouts_in(&self, phases: &[&str]) -> Result<Vec<RolloutRecord>>;
    /// Gives rollout `deployment_id` a command, if it is still in one of `phases`;
    /// whether it was.
    fn command_rollout(
        &self,
        deployment_id: i64,
        phases: &[&str],
        command: &str,
        by: &str,
    ) -> Result<bool>;
    /// Takes (and clears) the pending command of a rollout.
    fn take_rollout_command(&self, deployment_id: i64) -> Result<Option<(String, String)>>;
    /// Appends to the audit log.
    fn audit(&self, at: i64, actor: &str, action: &str, target: &str, outcome: &str) -> Result<()>;
    /// The newest `limit` audit entries, newest first.
    fn audit_log(&self, limit: usize) -> Result<Vec<AuditRecord>>;
}

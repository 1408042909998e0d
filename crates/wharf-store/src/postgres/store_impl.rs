//! [`Store`] over PostgreSQL: the same rules as SQLite's, one transaction per method, and
//! every write fenced by the leader's lease ([`PgStore::write`]).

use std::collections::BTreeMap;

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::PgStore;
use super::rows::{self, *};
use crate::*;

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

async fn query<C: GenericClient>(c: &C, sql: &str, params: Params<'_>) -> Result<Vec<Row>> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.query(&statement, params).await?)
}

async fn query_opt<C: GenericClient>(c: &C, sql: &str, params: Params<'_>) -> Result<Option<Row>> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.query_opt(&statement, params).await?)
}

async fn execute<C: GenericClient>(c: &C, sql: &str, params: Params<'_>) -> Result<u64> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.execute(&statement, params).await?)
}

/// The state of a deployment, read inside the transaction that changes it.
async fn current_state<C: GenericClient>(tx: &C, id: i64) -> Result<DeploymentState> {
    let row = query_opt(tx, "SELECT state FROM deployments WHERE id = $1", &[&id])
        .await?
        .ok_or(StoreError::NoDeployment(id))?;
    let state: String = row.try_get(0)?;
    DeploymentState::parse(&state)
        .ok_or_else(|| StoreError::Corrupt(format!("deployment #{id} has state `{state}`")))
}

/// The deployment holding the deploy lock of a service in an environment, if any.
async fn lock_holder<C: GenericClient>(
    tx: &C,
    service: &str,
    env: &str,
) -> Result<Option<(i64, String, i64)>> {
    let row = query_opt(
        tx,
        r#"SELECT id, "user", started_at FROM deployments WHERE service = $1 AND env = $2 AND state = 'in_progress'"#,
        &[&service, &env],
    )
    .await?;
    row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .transpose()
}

fn locked(
    service: &str,
    env: &str,
    (id, holder, started): (i64, String, i64),
    now: i64,
) -> StoreError {
    let ago = (now - started).max(0) / 1000;
    StoreError::Locked {
        service: service.to_owned(),
        env: env.to_owned(),
        holder,
        id,
        started: format!("{ago}s ago"),
    }
}

/// A held configuration revision follows its deployment.
async fn settle_held_config<C: GenericClient>(tx: &C, deployment: i64, to: &str) -> Result<()> {
    execute(
        tx,
        "UPDATE config_revisions SET state = $2
         WHERE state = 'held' AND (service, env, revision) =
             (SELECT service, env, config_revision FROM deployments WHERE id = $1 AND kind = 'config')",
        &[&deployment, &to],
    )
    .await?;
    Ok(())
}

/// A held definition revision follows the deployment that holds it.
async fn settle_held_definition<C: GenericClient>(tx: &C, deployment: i64, to: &str) -> Result<()> {
    execute(
        tx,
        "UPDATE definitions SET state = $2
         WHERE state = 'held' AND revision =
             (SELECT config_revision FROM deployments WHERE id = $1 AND kind = 'definition')",
        &[&deployment, &to],
    )
    .await?;
    Ok(())
}

/// Refuses to approve a configuration roll whose held revision is no longer the newest.
async fn refuse_superseded_config<C: GenericClient>(tx: &C, deployment: i64) -> Result<()> {
    let found = query_opt(
        tx,
        "SELECT d.config_revision, COALESCE((SELECT MAX(r.revision) FROM config_revisions r
             WHERE r.service = d.service AND r.env = d.env), 0)
         FROM deployments d WHERE d.id = $1 AND d.kind = 'config'",
        &[&deployment],
    )
    .await?;
    if let Some(row) = found {
        let (revision, newest): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        if newest > revision {
            return Err(StoreError::Superseded {
                id: deployment,
                revision,
                newest,
            });
        }
    }
    Ok(())
}

/// Adds the next definition revision in `state`; returns it.
async fn insert_definition<C: GenericClient>(
    tx: &C,
    d: &DefinitionRecord,
    state: &str,
) -> Result<DefinitionRecord> {
    let revision: i64 = query_opt(
        tx,
        "SELECT COALESCE(MAX(revision), 0) + 1 FROM definitions",
        &[],
    )
    .await?
    .map(|r| r.try_get(0))
    .transpose()?
    .unwrap_or(1);
    let text = |e: serde_json::Error| StoreError::Corrupt(e.to_string());
    let files = serde_json::to_string(&d.files).map_err(text)?;
    let scale = serde_json::to_string(&d.scale).map_err(text)?;
    let ssh_hosts = serde_json::to_string(&d.ssh_hosts).map_err(text)?;
    execute(
        tx,
        r#"INSERT INTO definitions (revision, digest, path, source, "user", at, message, state, files, scale, ssh_hosts)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"#,
        &[
            &revision, &d.digest, &d.path, &d.source, &d.user, &d.at, &d.message, &state, &files,
            &scale, &ssh_hosts,
        ],
    )
    .await?;
    Ok(DefinitionRecord {
        revision,
        state: state.to_owned(),
        ..d.clone()
    })
}

/// Compares secrets without leaking, through timing, how much of them matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A deployment whose rollout has its new set serving is not interrupted by a restart.
const NOT_ROLLING_OUT: &str =
    "id NOT IN (SELECT deployment_id FROM rollouts WHERE phase IN ('paused', 'promoted'))";

impl PgStore {
    fn history_of(
        &self,
        columns: &'static str,
        service: &str,
        env: &str,
    ) -> Result<Vec<DeploymentRecord>> {
        let (service, env) = (service.to_owned(), env.to_owned());
        self.read(move |c| {
            Box::pin(async move {
                let sql = format!(
                    "SELECT {columns} FROM deployments WHERE service = $1 AND env = $2 ORDER BY id DESC"
                );
                rows::all(query(c, &sql, &[&service, &env]).await?, rows::deployment)
            })
        })
    }

    fn add_config_revision(
        &self,
        service: &str,
        env: &str,
        values: &BTreeMap<String, String>,
        (user, at, message): (&str, i64, &str),
        state: &'static str,
    ) -> Result<ConfigRevision> {
        let record = ConfigRevision {
            service: service.to_owned(),
            env: env.to_owned(),
            revision: 0,
            values: values.clone(),
            user: user.to_owned(),
            at,
            message: message.to_owned(),
            state: state.to_owned(),
        };
        let vals = serde_json::to_string(values).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.write(move |tx| {
            Box::pin(async move {
                let c = &record;
                let revision: i64 = query_opt(
                    tx,
                    "SELECT COALESCE(MAX(revision), 0) + 1 FROM config_revisions WHERE service = $1 AND env = $2",
                    &[&c.service, &c.env],
                )
                .await?
                .map(|r| r.try_get(0))
                .transpose()?
                .unwrap_or(1);
                execute(
                    tx,
                    r#"INSERT INTO config_revisions (service, env, revision, vals, "user", at, message, state)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"#,
                    &[&c.service, &c.env, &revision, &vals, &c.user, &c.at, &c.message, &c.state],
                )
                .await?;
                Ok(ConfigRevision { revision, ..record })
            })
        })
    }
}

impl PgStore {
    /// Writes instance rows in one statement; with `only_assigned`, only those whose
    /// slot has an assignment.
    fn put_instance_rows(&self, instances: &[InstanceRecord], only_assigned: bool) -> Result<()> {
        if instances.is_empty() {
            return Ok(());
        }
        // One statement over arrays, whatever the count: one round trip.
        let mut c = InstanceColumns::default();
        for i in instances {
            c.push(i);
        }
        self.write(move |tx| {
            Box::pin(async move {
                let guard = if only_assigned {
                    "WHERE EXISTS (SELECT 1 FROM assignments a WHERE a.env = u.env AND a.service = u.service
                         AND a.node = u.node AND a.instance = u.instance)"
                } else {
                    ""
                };
                let sql = format!(
                    "INSERT INTO instances ({INSTANCE_COLUMNS})
                     SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[],
                         $7::text[], $8::bigint[], $9::bigint[], $10::bigint[], $11::text[], $12::text[],
                         $13::bigint[], $14::bigint[], $15::bigint[], $16::bigint[]) AS u({INSTANCE_COLUMNS})
                     {guard}
                     ON CONFLICT (env, service, node, instance) DO UPDATE SET
                         version = EXCLUDED.version, digest = EXCLUDED.digest,
                         config_digest = EXCLUDED.config_digest, deployment_id = EXCLUDED.deployment_id,
                         pid = EXCLUDED.pid, port = EXCLUDED.port, state = EXCLUDED.state,
                         health = EXCLUDED.health, restarts = EXCLUDED.restarts,
                         started_at = EXCLUDED.started_at, cpu_millis = EXCLUDED.cpu_millis,
                         memory_bytes = EXCLUDED.memory_bytes"
                );
                execute(
                    tx,
                    &sql,
                    &[
                        &c.env, &c.service, &c.node, &c.instance, &c.version, &c.digest,
                        &c.config_digest, &c.deployment_id, &c.pid, &c.port, &c.state, &c.health,
                        &c.restarts, &c.started_at, &c.cpu_millis, &c.memory_bytes,
                    ],
                )
                .await?;
                Ok(())
            })
        })
    }

    /// Deletes the rows of `slots` from `table` (a table keyed by slot) in one statement
    /// over arrays.
    fn delete_slots(&self, table: &'static str, slots: &[InstanceKeyRef<'_>]) -> Result<()> {
        if slots.is_empty() {
            return Ok(());
        }
        let (mut env, mut service, mut node, mut instance) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (e, s, n, i) in slots {
            env.push(e.to_string());
            service.push(s.to_string());
            node.push(n.to_string());
            instance.push(i64::from(*i));
        }
        let sql = format!(
            "DELETE FROM {table} t USING UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[]) AS u(e, s, n, i)
             WHERE t.env = u.e AND t.service = u.s AND t.node = u.n AND t.instance = u.i"
        );
        self.write(move |tx| {
            Box::pin(async move {
                execute(tx, &sql, &[&env, &service, &node, &instance]).await?;
                Ok(())
            })
        })
    }
}

impl Store for PgStore {
    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.changes.subscribe())
    }

    fn shares_files(&self) -> bool {
        true
    }

    fn shared_file(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let name = name.to_owned();
        self.read(move |c| {
            Box::pin(async move {
                let row = query_opt(c, "SELECT data FROM blobs WHERE name = $1", &[&name]).await?;
                Ok(row.map(|r| r.try_get(0)).transpose()?)
            })
        })
    }

    fn put_shared_file(&self, name: &str, data: &[u8]) -> Result<()> {
        let (name, data) = (name.to_owned(), data.to_vec());
        self.write(move |tx| {
            Box::pin(async move {
                execute(
                    tx,
                    "INSERT INTO blobs (name, data) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                    &[&name, &data],
                )
                .await?;
                Ok(())
            })
        })
    }

    fn put_artifact(&self, a: &ArtifactRecord) -> Result<PutOutcome> {
        let a = a.clone();
        self.write(move |tx| {
            Box::pin(async move {
                let existing = query_opt(
                    tx,
                    "SELECT digest FROM artifacts WHERE service = $1 AND version = $2",
                    &[&a.service, &a.version],
                )
                .await?;
                match existing {
                    Some(row) => {
                        let digest: String = row.try_get(0)?;
                        if digest == a.digest {
                            Ok(PutOutcome::AlreadyPresent)
                        } else {
                            Err(StoreError::VersionConflict {
                                service: a.service.clone(),
                                version: a.version.clone(),
                                existing: digest,
                            })
                        }
                    }
                    None => {
                        let size = i64::try_from(a.size).unwrap_or(i64::MAX);
                        execute(
                            tx,
                            "INSERT INTO artifacts (service, version, digest, size, created_at) VALUES ($1, $2, $3, $4, $5)",
                            &[&a.service, &a.version, &a.digest, &size, &a.created_at],
                        )
                        .await?;
                        Ok(PutOutcome::Created)
                    }
                }
            })
        })
    }

    fn artifact(&self, service: &str, version: &str) -> Result<Option<ArtifactRecord>> {
        let (service, version) = (service.to_owned(), version.to_owned());
        self.read(move |c| {
            Box::pin(async move {
                query_opt(
                    c,
                    "SELECT service, version, digest, size, created_at FROM artifacts WHERE service = $1 AND version = $2",
                    &[&service, &version],
                )
                .await?
                .as_ref()
                .map(rows::artifact)
                .transpose()
            })
        })
    }

    fn artifacts(&self, service: Option<&str>) -> Result<Vec<ArtifactRecord>> {
        let service = service.map(str::to_owned);
        self.read(move |c| {
            Box::pin(async move {
                let found = query(
                    c,
                    "SELECT service, version, digest, size, created_at FROM artifacts
                     WHERE $1::text IS NULL OR service = $1 ORDER BY service, created_at, version",
                    &[&service],
                )
                .await?;
                rows::all(found, rows::artifact)
            })
        })
    }

    fn begin_deployment(&self, d: &NewDeployment) -> Result<i64> {
        let d = d.clone();
        self.write(move |tx| {
            Box::pin(async move {
                if !d.pending_approval
                    && let Some(holder) = lock_holder(tx, &d.service, &d.env).await?
                {
                    return Err(locked(&d.service, &d.env, holder, d.started_at));
                }
                let state = if d.pending_approval {
                    DeploymentState::PendingApproval
                } else {
                    DeploymentState::InProgress
                };
                let spec = d.spec.text().to_owned();
                let row = query_opt(
                    tx,
                    r#"INSERT INTO deployments (service, env, kind, version, digest, config_digest, spec, "user", started_at, state, config_revision, forced)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id"#,
                    &[
                        &d.service, &d.env, &d.kind.as_str(), &d.version, &d.digest,
                        &d.config_digest, &spec, &d.user, &d.started_at, &state.as_str(),
                        &d.config_revision, &d.forced,
                    ],
                )
                .await?
                .ok_or_else(|| StoreError::Corrupt("an insert returned no id".into()))?;
                Ok(row.try_get(0)?)
            })
        })
    }

    fn finish_deployment(
        &self,
        id: i64,
        state: DeploymentState,
        message: &str,
        at: i64,
    ) -> Result<()> {
        let message = message.to_owned();
        self.write(move |tx| {
            Box::pin(async move {
                let current = current_state(tx, id).await?;
                if !current.may_become(state) {
                    return Err(StoreError::Transition {
                        id,
                        state: current.as_str().to_owned(),
                        wanted: state.as_str().to_owned(),
                    });
                }
                execute(
                    tx,
                    "UPDATE deployments SET state = $2, message = $3, finished_at = $4 WHERE id = $1 AND state = $5",
                    &[&id, &state.as_str(), &message, &at, &current.as_str()],
                )
                .await?;
                if matches!(state, DeploymentState::Rejected | DeploymentState::Expired) {
                    settle_held_config(tx, id, "rejected").await?;
                    settle_held_definition(tx, id, "rejected").await?;
                }
                Ok(())
            })
        })
    }

    fn deployment(&self, id: i64) -> Result<Option<DeploymentRecord>> {
        self.read(move |c| {
            Box::pin(async move {
                let sql = format!("SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE id = $1");
                query_opt(c, &sql, &[&id])
                    .await?
                    .as_ref()
                    .map(rows::deployment)
                    .transpose()
            })
        })
    }

    fn history(&self, service: &str, env: &str) -> Result<Vec<DeploymentRecord>> {
        self.history_of(DEPLOYMENT_COLUMNS, service, env)
    }

    fn history_brief(&self, service: &str, env: &str) -> Result<Vec<DeploymentRecord>> {
        self.history_of(DEPLOYMENT_BRIEF_COLUMNS, service, env)
    }

    fn interrupt_unfinished(&self, message: &str, at: i64) -> Result<Vec<DeploymentRecord>> {
        let message = message.to_owned();
        self.write(move |tx| {
            Box::pin(async move {
                let sql = format!(
                    "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE state = 'in_progress' AND {NOT_ROLLING_OUT} ORDER BY id"
                );
                let found = rows::all(query(tx, &sql, &[]).await?, rows::deployment)?;
                let sql = format!(
                    "UPDATE deployments SET state = 'interrupted', message = $1, finished_at = $2
                     WHERE state = 'in_progress' AND {NOT_ROLLING_OUT}"
                );
                execute(tx, &sql, &[&message, &at]).await?;
                Ok(found)
            })
        })
    }

    fn unresolved_interruptions(&self) -> Result<Vec<DeploymentRecord>> {
        self.read(move |c| {
            Box::pin(async move {
                let sql = format!(
                    "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE state = 'interrupted' AND resolved_by IS NULL ORDER BY id"
                );
                rows::all(query(c, &sql, &[]).await?, rows::deployment)
            })
        })
    }

    fn resolve_interruption(&self, id: i64, by: i64, message: &str) -> Result<()> {
        let message = message.to_owned();
        self.write(move |tx| {
            Box::pin(async move {
                let changed = execute(
                    tx,
                    "UPDATE deployments SET resolved_by = $2, message = $3 WHERE id = $1 AND state = 'interrupted'",
                    &[&id, &by, &message],
                )
                .await?;
                if changed == 0 {
                    return Err(StoreError::NoDeployment(id));
                }
                Ok(())
            })
        })
    }

    fn set_deployment_spec(&self, id: i64, spec: &SpecJson) -> Result<()> {
        let spec = spec.text().to_owned();
        self.write(move |tx| {
            Box::pin(async move {
                let changed = execute(
                    tx,
                    "UPDATE deployments SET spec = $2 WHERE id = $1 AND state = 'in_progress'",
                    &[&id, &spec],
                )
                .await?;
                if changed == 0 {
                    return Err(StoreError::NoDeployment(id));
                }
                Ok(())
            })
        })
    }

    fn put_instance(&self, instance: &InstanceRecord) -> Result<()> {
        self.put_instances(std::slice::from_ref(instance))
    }

    fn put_instances(&self, instances: &[InstanceRecord]) -> Result<()> {
        self.put_instance_rows(instances, false)
    }

    fn put_observed_instances(&self, instances: &[InstanceRecord]) -> Result<()> {
        self.put_instance_rows(instances, true)
    }

    fn remove_instances(&self, slots: &[InstanceKeyRef<'_>]) -> Result<()> {
        self.delete_slots("instances", slots)
    }

    fn remove_instance(&self, env: &str, service: &str, node: &str, instance: u32) -> Result<()> {
        let (env, service, node, instance) = (
            env.to_owned(),
            service.to_owned(),
            node.to_owned(),
            i64::from(instance),
        );
        self.write(move |tx| {
            Box::pin(async move {
                execute(
                    tx,
                    "DELETE FROM instances WHERE env = $1 AND service = $2 AND node = $3 AND instance = $4",
                    &[&env, &service, &node, &instance],
                )
                .await?;
                Ok(())
            })
        })
    }

    fn instances(&self, env: Option<&str>, service: Option<&str>) -> Result<Vec<InstanceRecord>> {
        let (env, service) = (env.map(str::to_owned), service.map(str::to_owned));
        self.read(move |c| {
            Box::pin(async move {
                let sql = format!(
                    "SELECT {INSTANCE_COLUMNS} FROM instances
                     WHERE ($1::text IS NULL OR env = $1) AND ($2::text IS NULL OR service = $2)
                     ORDER BY env, service, instance, node"
                );
                rows::all(query(c, &sql, &[&env, &service]).await?, rows::instance)
            })
        })
    }

    fn assigned_port(
        &self,
        env: &str,
        service: &str,
        node: &str,
        instance: u32,
    ) -> Result<Option<u16>> {
        let (env, service, node, instance) = (
            env.to_owned(),
            service.to_owned(),
            node.to_owned(),
            i64::from(instance),
        );
        self.read(move |c| {
            Box::pin(async move {
                let row = query_opt(
                    c,
                    "SELECT port FROM slot_ports WHERE env = $1 AND service = $2 AND node = $3 AND instance = $4",
                    &[&env, &service, &node, &instance],
                )
                .await?;
                row.map(|r| {
                    let port: i64 = r.try_get(0)?;
                    u16::try_from(port).map_err(|_| StoreError::Corrupt(format!("port {port}")))
                })
                .transpose()
            })
        })
    }

    fn assign_port(
        &self,
        env: &str,
        service: &str,
        node: &str,
        instance: u32,
        port: u16,
    ) -> Result<()> {
        let (env, service, node, instance, port) = (
            env.to_owned(),
            service.to_owned(),
            node.to_owned(),
            i64::from(instance),
            i64::from(port),
        );
        self.write(move |tx| {
            Box::pin(async move {
                execute(
                    tx,
                    "INSERT INTO slot_ports (env, service, node, instance, port) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (env, service, node, instance) DO UPDATE SET port = EXCLUDED.port",
                    &[&env, &service, &node, &instance, &port],
                )
                .await?;
                Ok(())
            })
        })
    }

    fn port_taken(&self, port: u16) -> Result<bool> {
        let port = i64::from(port);
        self.read(move |c| {
            Box::pin(async move {
                Ok(
                    query_opt(c, "SELECT 1 FROM slot_ports WHERE port = $1", &[&port])
                        .await?
                        .is_some(),
                )
            })
        })
    }

    fn create_join_token(&self, t: &JoinTokenRecord, secret_hash: &str) -> Result<()> {
        let (t, hash) = (t.clone(), secret_hash.to_owned());
        self.write(move |tx| {
            Box::pin(async move {
                execute(
                    tx,
                    "INSERT INTO join_tokens (id, env, secret_hash, expires_at, uses_left, created_at, created_by)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    &[&t.id, &t.env, &hash, &t.expires_at, &i64::from(t.uses_left), &t.created_at, &t.created_by],
                )
                .await?;
                Ok(())
            })
        })
    }

    fn redeem_join_token(&self, id: &str, secret_hash: &str, now: i64) -> Result<String> {
        let (id, given) = (id.to_owned(), secret_hash.to_owned());
        self.write(move |tx| {
            Box::pin(async move {
                let row = query_opt(
                    tx,
                    "SELECT env, secret_hash, expires_at, uses_left FROM join_tokens WHERE id = $1 FOR UPDATE",
                    &[&id],
                )
                .await?;
                // One message for unknown and wrong tokens: a caller learns nothing from it.
                let refused = |why: &str| Err(StoreError::TokenRefused(why.to_owned()));
                let Some(row) = row else {
                    return refused("unknown or wrong token");
                };
                let (env, hash, expires_at, uses_left): (String, String, i64, i64) =
                    (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?);
                if !constant_time_eq(hash.as_bytes(), given.as_bytes()) {
                    return refused("unknown or wrong token");
                }
                if expires_at <= now {
                    return refused("the token has expired");
                }
                if uses_left <= 0 {
                    return refused("the token has been used");
                }
                execute(tx, "UPDATE join_tokens SET uses_left = uses_left - 1 WHERE id = $1", &[&id]).await?;
                Ok(env)
            })
        })
    }

    fn join_tokens(&self) -> Result<Vec<JoinTokenRecord>> {
        self.read(move |c| {
            Box::pin(async move {
                let found = query(
                    c,
                    "SELECT id, env, expires_at, uses_left, created_at, created_by FROM join_tokens ORDER BY created_at",
                    &[],
                )
                .await?;
                rows::all(found, rows::join_token)
            })
        })
    }

    fn register_host(&self, h: &NewHost) -> Result<HostRecord> {
        let labels =
            serde_json::to_string(&h.labels).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let capacity =
            serde_json::to_string(&h.capacity).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let h = h.clone();
        self.write(move |tx| {
            Box::pin(async move {
                let serial: i64 = query_opt(tx, "SELECT COALESCE(MAX(cert_serial), 0) + 1 FROM hosts", &[])
                    .await?
                    .map(|r| r.try_get(0))
                    .transpose()?
                    .unwrap_or(1);
                let sql = format!(
                    "INSERT INTO hosts (name, env, labels, capacity, address, state, joined_at, last_seen, cert_serial)
                     VALUES ($1, $2, $3, $4, $5, 'ready', $6, $6, $7)
                     ON CONFLICT (env, name) DO UPDATE SET labels = $3, capacity = $4, address = $5, state = 'ready',
                         joined_at = $6, last_seen = $6, cert_serial = $7
                     RETURNING {HOST_COLUMNS}"
                );
                let row = query_opt(tx, &sql, &[&h.name, &h.env, &labels, &capacity, &h.address, &h.at, &serial])
                    .await?
                    .ok_or_else(|| StoreError::Corrupt("an insert returned no host".into()))?;
                rows::host(&row)
            })
        })
    }

    fn host(&self, id: i64) -> Result<Option<HostRecord>> {
        self.read(move |c| {
            Box::pin(async move {
                let sql = format!("SELECT {HOST_COLUMNS} FROM hosts WHERE id = $1");
                query_opt(c, &sql, &[&id])
                    .await?
                    .as_ref()
                    .map(rows::host)
                    .transpose()
            })
        })
    }

    fn hosts(&self, env: Option<&str>) -> Result<Vec<HostRecord>> {
        let env = env.map(str::to_owned);
        self.read(move |c| {
            Box::pin(async move {
                let sql = format!(
                    "SELECT {HOST_COLUMNS} FROM hosts WHERE $1::text IS NULL OR env = $1 ORDER BY env, name"
                );
                rows::all(query(c, &sql, &[&env]).await?, rows::host)
            })
        })
    }

    fn touch_hosts(&self, heard: &[Heartbeat]) -> Result<()> {
        if heard.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = heard.iter().map(|h| h.host_id).collect();
        let at: Vec<i64> = heard.iter().map(|h| h.at).collect();
        let address: Vec<String> = heard.iter().map(|h| h.address.clone()).collect();
        self.write(move |tx| {
            Box::pin(async move {
                execute(
                    tx,
                    "UPDATE hosts SET last_seen = u.at, address = u.address
                     FROM UNNEST($1::bigint[], $2::bigint[], $3::text[]) AS u(id, at, address)
                     WHERE hosts.id = u.id",
                    &[&ids, &at, &address],
                )
                .await?;
                Ok(())
            })
        })
    }

    fn set_host_state(&self, id: i64, state: HostState) -> Result<()> {
        self.write(move |tx| {
            Box::pin(async move {
                execute(
                    tx,
                    "UPDATE hosts SET state = $2 WHERE id = $1",
                    &[&id, &state.as_str()],
                )
                .await?;
                Ok(())
            })
        })
    }

    fn remove_host(&self, id: i64) -> Result<()> {
        self.write(move |tx| {
            Box::pin(async move {
                execute(tx, "DELETE FROM assignments WHERE host_id = $1", &[&id]).await?;
                execute(tx, "DELETE FROM hosts WHERE id = $1", &[&id]).await?;
                Ok(())
            })
        })
    }

    fn put_assignment(
        &self,
        host_id: i64,
        env: &str,
        service: &str,
        node: &str,
        instance: u32,
        plan: &serde_json::Value,
    ) -> Result<()> {
        self.put_assignments(&[(host_id, (env, service, node, instance), plan.to_string())])
    }

    fn remove_assignments(&self, slots: &[InstanceKeyRef<'_>]) -> Result<()> {
        self.delete_slots("assignments", slots)
    }

    fn remove_assignment(&self, env: &str, service: &str, node: &str, instance: u32) -> Result<()> {
        let (env, service, node, instance) = (
            env.to_owned(),
            service.to_owned(),
            node.to_owned(),
            i64::from(instance),
        );
        self.write(move |tx| {
            Box::pin(async move {
                execute(
                    tx,
                    "DELETE FROM assignments WHERE env = $1 AND service = $2 AND node = $3 AND instance = $4",
                    &[&env, &service, &node, &instance],
                )
                .await?;
                Ok(())
            })
        })
    }

    fn put_assignments(&self, plans: &[(i64, InstanceKeyRef<'_>, String)]) -> Result<()> {
        if plans.is_empty() {
            return Ok(());
        }
        let (mut host_id, mut env, mut service, mut node, mut instance, mut plan) = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        for (h, (e, s, n, i), p) in plans {
            host_id.push(*h);
            env.push(e.to_string());
            service.push(s.to_string());
            node.push(n.to_string());
            instance.push(i64::from(*i));
            plan.push(p.clone());
        }
        self.write(move |tx| {
            Box::pin(async move {
                execute(
                    tx,
                    "INSERT INTO assignments (env, service, node, instance, host_id, plan)
                     SELECT e, s, n, i, h, p FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::text[]) AS u(e, s, n, i, h, p)
                     ON CONFLICT (env, service, node, instance) DO UPDATE SET host_id = EXCLUDED.host_id, plan = EXCLUDED.plan",
                    &[&env, &service, &node, &instance, &host_id, &plan],
                )
                .await?;
                Ok(())
            })
        })
    }

    fn assignments(&self, host_id: i64) -> Result<Vec<serde_json::Value>> {
        self.read(move |c| {
            Box::pin(async move {
                let found = query(
                    c,
                    "SELECT plan FROM assignments WHERE host_id = $1 ORDER BY env, service, instance",
                    &[&host_id],
                )
                .await?;
                found
                    .iter()
                    .map(|r| {
                        let text: String = r.try_get(0)?;
                        serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(e.to_string()))
                    })
                    .collect()
            })
        })
    }

    fn approve_deployment(&self, id: i64, approver: &str, at: i64) -> Result<()> {
        let approver = approver.to_owned();
        self.write(move |tx| {
            Box::pin(async move {
                let row = query_opt(
                    tx,
                    "SELECT service, env FROM deployments WHERE id = $1",
                    &[&id],
                )
                .await?
                .ok_or(StoreError::NoDeployment(id))?;
                let (service, env): (String, String) = (row.try_get(0)?, row.try_get(1)?);
                let current = current_state(tx, id).await?;
                if !current.may_become(DeploymentState::InProgress) {
                    return Err(StoreError::Transition {
                        id,
                        state: current.as_str().to_owned(),
                        wanted: DeploymentState::InProgress.as_str().to_owned(),
                    });
                }
                if let Some(holder) = lock_holder(tx, &service, &env).await? {
                    return Err(locked(&service, &env, holder, at));
                }
                execute(
                    tx,
                    "UPDATE deployments SET state = 'in_progress', approved_by = $2, started_at = $3
                     WHERE id = $1 AND state = 'pending_approval'",
                    &[&id, &approver, &at],
                )
                .await?;
                refuse_superseded_config(tx, id).await?;
                settle_held_config(tx, id, "active").await?;
                settle_held_definition(tx, id, "active").await?;
                Ok(())
            })
        })
    }

    fn pending_deployments(&self) -> Result<Vec<DeploymentRecord>> {
        self.read(move |c| {
            Box::pin(async move {
                let sql = format!(
                    "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE state = 'pending_approval' ORDER BY id"
                );
                rows::all(query(c, &sql, &[]).await?, rows::deployment)
            })
        })
    }

    fn ran_successfully(&self, service: &str, env: &str, digest: &str) -> Result<bool> {
        let (service, env, digest) = (service.to_owned(), env.to_owned(), digest.to_owned());
        self.read(move |c| {
            Box::pin(async move {
                Ok(query_opt(
                    c,
                    "SELECT 1 FROM deployments WHERE service = $1 AND env = $2 AND digest = $3
                         AND state = 'succeeded' AND kind != 'stop' LIMIT 1",
                    &[&service, &env, &digest],
                )
                .await?
                .is_some())
            })
        })
    }

    fn put_config_revision(
        &self,
        service: &str,
        env: &str,
        values: &BTreeMap<String, String>,
        user: &str,
        at: i64,
        message: &str,
    ) -> Result<ConfigRevision> {
        self.add_config_revision(service, env, values, (user, at, message), "active")
    }

    fn hold_config_revision(
        &self,
        service: &str,
        env: &str,
        values: &BTreeMap<String, String>,
        user: &str,
        at: i64,
        message: &str,
    ) -> Result<ConfigRevision> {
        self.add_config_revision(service, env, values, (user, at, message), "held")
    }

    fn config_revision(
        &self,
        service: &str,
        env: &str,
        revision: Option<i64>,
    ) -> Result<Option<ConfigRevision>> {
        let (service, env) = (service.to_owned(), env.to_owned());
        self.read(move |c| {
            Box::pin(async move {
                let sql = format!(
                    "SELECT {CONFIG_COLUMNS} FROM config_revisions
                     WHERE service = $1 AND env = $2 AND (revision = $3 OR ($3::bigint IS NULL AND state = 'active'))
                     ORDER BY revision DESC LIMIT 1"
                );
                query_opt(c, &sql, &[&service, &env, &revision])
                    .await?
                    .as_ref()
                    .map(rows::config_revision)
                    .transpose()
            })
        })
    }

    fn config_revisions(&self, service: &str, env: &str) -> Result<Vec<ConfigRevision>> {
        let (service, env) = (service.to_owned(), env.to_owned());
        self.read(move |c| {
            Box::pin(async move {
                let sql = format!(
                    "SELECT {CONFIG_COLUMNS} FROM config_revisions WHERE service = $1 AND env = $2 ORDER BY revision DESC"
                );
                rows::all(query(c, &sql, &[&service, &env]).await?, rows::config_revision)
            })
        })
    }

    fn put_secret(&self, s: &SecretRecord) -> Result<()> {
        let s = s.clone();
        self.write(move |tx| {
            Box::pin(async move {
                execute(
                    tx,
                    "INSERT INTO secrets (service, env, key, key_id, nonce, ciphertext, version, updated_at, updated_by)
                     VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $8)
                     ON CONFLICT (service, env, key) DO UPDATE SET key_id = EXCLUDED.key_id,
                         nonce = EXCLUDED.nonce, ciphertext = EXCLUDED.ciphertext, version = secrets.version + 1,
                         updated_at = EXCLUDED.updated_at, updated_by = EXCLUDED.updated_by",
                    &[&s.service, &s.env, &s.key, &s.key_id, &s.nonce, &s.ciphertext, &s.updated_at, &s.updated_by],
                )
                .await?;
                Ok(())
            })
        })
    }

    fn remove_secret(&self, service: &str, env: &str, key: &str) -> Result<bool> {
        let (service, env, key) = (service.to_owned(), env.to_owned(), key.to_owned());
        self.write(move |tx| {
            Box::pin(async move {
                Ok(execute(
                    tx,
                    "DELETE FROM secrets WHERE service = $1 AND env = $2 AND key = $3",
                    &[&service, &env, &key],
                )
                .await?
                    > 0)
            })
        })
    }

    fn secrets(&self, scope: Option<(&str, &str)>) -> Result<Vec<SecretRecord>> {
        let (service, env) = scope.map(|(s, e)| (s.to_owned(), e.to_owned())).unzip();
        self.read(move |c| {
            Box::pin(async move {
                let sql = format!(
                    "SELECT {SECRET_COLUMNS} FROM secrets WHERE ($1::text IS NULL OR (service = $1 AND env = $2::text))
                     ORDER BY service, env, key"
                );
                rows::all(query(c, &sql, &[&service, &env]).await?, rows::secret)
            })
        })
    }

    fn reencrypt_secrets(&self, secrets: &[SecretRecord]) -> Result<()> {
        let secrets = secrets.to_vec();
        self.write(move |tx| {
            Box::pin(async move {
                for s in &secrets {
                    execute(
                        tx,
                        "UPDATE secrets SET key_id = $4, nonce = $5, ciphertext = $6
                         WHERE service = $1 AND env = $2 AND key = $3",
                        &[
                            &s.service,
                            &s.env,
                            &s.key,
                            &s.key_id,
                            &s.nonce,
                            &s.ciphertext,
                        ],
                    )
                    .await?;
                }
                Ok(())
            })
        })
    }

    fn create_api_token(&self, t: &ApiTokenRecord, secret_hash: &str) -> Result<()> {
        let (t, hash) = (t.clone(), secret_hash.to_owned());
        self.write(move |tx| {
            Box::pin(async move {
                execute(
                    tx,
                    "INSERT INTO api_tokens (id, name, secret_hash, scopes, created_at, created_by)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                    &[
                        &t.id,
                        &t.name,
                        &hash,
                        &t.scopes.join(","),
                        &t.created_at,
                        &t.created_by,
                    ],
                )
                .await?;
                Ok(())
            })
        })
    }

    fn api_token(&self, id: &str) -> Result<Option<(ApiTokenRecord, String)>> {
        let id = id.to_owned();
        self.read(move |c| {
            Box::pin(async move {
                let sql = format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = $1");
                query_opt(c, &sql, &[&id])
                    .await?
                    .as_ref()
                    .map(rows::api_token)
                    .transpose()
            })
        })
    }

    fn api_tokens(&self) -> Result<Vec<ApiTokenRecord>> {
        self.read(move |c| {
            Box::pin(async move {
                let sql = format!("SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at, id");
                let found = query(c, &sql, &[]).await?;
                found
                    .iter()
                    .map(|r| rows::api_token(r).map(|(t, _)| t))
                    .collect()
            })
        })
    }

    fn revoke_api_token(&self, id: &str, at: i64) -> Result<bool> {
        let id = id.to_owned();
        self.write(move |tx| {
            Box::pin(async move {
                Ok(execute(
                    tx,
                    "UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
                    &[&id, &at],
                )
                .await?
                    > 0)
            })
        })
    }

    fn put_definition(&self, d: &DefinitionRecord) -> Result<DefinitionRecord> {
        let d = d.clone();
        self.write(move |tx| Box::pin(async move { insert_definition(tx, &d, "active").await }))
    }

    fn definition_in_force(&self) -> Result<Option<i64>> {
        self.read(move |c| {
            Box::pin(async move {
                let row = query_opt(
                    c,
                    "SELECT MAX(revision) FROM definitions WHERE state = 'active'",
                    &[],
                )
                .await?;
                Ok(row
                    .map(|r| r.try_get::<_, Option<i64>>(0))
                    .transpose()?
                    .flatten())
            })
        })
    }

    fn definition(&self, revision: Option<i64>) -> Result<Option<DefinitionRecord>> {
        self.read(move |c| {
            Box::pin(async move {
                let sql = format!(
                    "SELECT {DEFINITION_COLUMNS} FROM definitions
                     WHERE revision = $1 OR ($1::bigint IS NULL AND state = 'active')
                     ORDER BY revision DESC LIMIT 1"
                );
                query_opt(c, &sql, &[&revision])
                    .await?
                    .as_ref()
                    .map(rows::definition)
                    .transpose()
            })
        })
    }

    fn definitions(&self) -> Result<Vec<DefinitionRecord>> {
        self.read(move |c| {
            Box::pin(async move {
                let sql =
                    format!("SELECT {DEFINITION_COLUMNS} FROM definitions ORDER BY revision DESC");
                rows::all(query(c, &sql, &[]).await?, rows::definition)
            })
        })
    }

    fn hold_definition(
        &self,
        d: &DefinitionRecord,
        approval: &NewDeployment,
    ) -> Result<(DefinitionRecord, i64)> {
        let (d, a) = (d.clone(), approval.clone());
        self.write(move |tx| {
            Box::pin(async move {
                let record = insert_definition(tx, &d, "held").await?;
                let revision = record.revision;
                let (version, spec) = (format!("r{revision}"), a.spec.text().to_owned());
                let row = query_opt(
                    tx,
                    r#"INSERT INTO deployments (service, env, kind, version, digest, config_digest, spec, "user", started_at, state, config_revision, forced)
                     VALUES ($1, $2, 'definition', $3, $4, '', $5, $6, $7, 'pending_approval', $8, FALSE) RETURNING id"#,
                    &[&a.service, &a.env, &version, &d.digest, &spec, &a.user, &a.started_at, &revision],
                )
                .await?
                .ok_or_else(|| StoreError::Corrupt("an insert returned no id".into()))?;
                Ok((record, row.try_get(0)?))
            })
        })
    }

    fn put_rollout(&self, r: &RolloutRecord) -> Result<()> {
        let (r, progress) = (r.clone(), r.progress.to_string());
        self.write(move |tx| {
            Box::pin(async move {
                execute(
                    tx,
                    "INSERT INTO rollouts (deployment_id, service, env, phase, progress, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (deployment_id) DO UPDATE SET phase = $4, progress = $5, updated_at = $6",
                    &[&r.deployment_id, &r.service, &r.env, &r.phase, &progress, &r.updated_at],
                )
                .await?;
                Ok(())
            })
        })
    }

    fn rollout(&self, env: &str, service: &str) -> Result<Option<RolloutRecord>> {
        let (env, service) = (env.to_owned(), service.to_owned());
        self.read(move |c| {
            Box::pin(async move {
                let sql = format!(
                    "SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE env = $1 AND service = $2 ORDER BY deployment_id DESC LIMIT 1"
                );
                query_opt(c, &sql, &[&env, &service]).await?.as_ref().map(rows::rollout).transpose()
            })
        })
    }

    fn rollouts_in(&self, phases: &[&str]) -> Result<Vec<RolloutRecord>> {
        let phases: Vec<String> = phases.iter().map(|p| p.to_string()).collect();
        self.read(move |c| {
            Box::pin(async move {
                let sql = format!(
                    "SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE phase = ANY($1) ORDER BY deployment_id"
                );
                rows::all(query(c, &sql, &[&phases]).await?, rows::rollout)
            })
        })
    }

    fn command_rollout(
        &self,
        deployment_id: i64,
        phases: &[&str],
        command: &str,
        by: &str,
    ) -> Result<bool> {
        let phases: Vec<String> = phases.iter().map(|p| p.to_string()).collect();
        let (command, by) = (command.to_owned(), by.to_owned());
        self.write(move |tx| {
            Box::pin(async move {
                let phase = query_opt(
                    tx,
                    "SELECT phase FROM rollouts WHERE deployment_id = $1",
                    &[&deployment_id],
                )
                .await?
                .map(|r| r.try_get::<_, String>(0))
                .transpose()?;
                if !phase.is_some_and(|p| phases.contains(&p)) {
                    return Ok(false);
                }
                // An abort waiting to be carried out is never replaced by another command.
                execute(
                    tx,
                    "UPDATE rollouts SET command = $2, command_by = $3
                     WHERE deployment_id = $1 AND (command IS NULL OR command NOT LIKE '%abort%')",
                    &[&deployment_id, &command, &by],
                )
                .await?;
                Ok(true)
            })
        })
    }

    fn take_rollout_command(&self, deployment_id: i64) -> Result<Option<(String, String)>> {
        self.write(move |tx| {
            Box::pin(async move {
                let pending = query_opt(
                    tx,
                    "SELECT command, command_by FROM rollouts WHERE deployment_id = $1",
                    &[&deployment_id],
                )
                .await?;
                let Some(row) = pending else { return Ok(None) };
                let (command, by): (Option<String>, Option<String>) = (row.try_get(0)?, row.try_get(1)?);
                let Some(command) = command else { return Ok(None) };
                execute(
                    tx,
                    "UPDATE rollouts SET command = NULL, command_by = NULL WHERE deployment_id = $1",
                    &[&deployment_id],
                )
                .await?;
                Ok(Some((command, by.unwrap_or_default())))
            })
        })
    }

    fn audit(&self, at: i64, actor: &str, action: &str, target: &str, outcome: &str) -> Result<()> {
        let (actor, action, target, outcome) = (
            actor.to_owned(),
            action.to_owned(),
            target.to_owned(),
            outcome.to_owned(),
        );
        self.write(move |tx| {
            Box::pin(async move {
                execute(
                    tx,
                    "INSERT INTO audit (at, actor, action, target, outcome) VALUES ($1, $2, $3, $4, $5)",
                    &[&at, &actor, &action, &target, &outcome],
                )
                .await?;
                Ok(())
            })
        })
    }

    fn audit_log(&self, limit: usize) -> Result<Vec<AuditRecord>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |c| {
            Box::pin(async move {
                let found = query(
                    c,
                    "SELECT id, at, actor, action, target, outcome FROM audit ORDER BY id DESC LIMIT $1",
                    &[&limit],
                )
                .await?;
                rows::all(found, rows::audit)
            })
        })
    }
}

/// Instance rows as columns, for one `UNNEST` insert.
#[derive(Default)]
struct InstanceColumns {
    env: Vec<String>,
    service: Vec<String>,
    node: Vec<String>,
    instance: Vec<i64>,
    version: Vec<String>,
    digest: Vec<String>,
    config_digest: Vec<String>,
    deployment_id: Vec<i64>,
    pid: Vec<Option<i64>>,
    port: Vec<Option<i64>>,
    state: Vec<String>,
    health: Vec<String>,
    restarts: Vec<i64>,
    started_at: Vec<i64>,
    cpu_millis: Vec<Option<i64>>,
    memory_bytes: Vec<Option<i64>>,
}

impl InstanceColumns {
    fn push(&mut self, i: &InstanceRecord) {
        let wide = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.env.push(i.env.clone());
        self.service.push(i.service.clone());
        self.node.push(i.node.clone());
        self.instance.push(i64::from(i.instance));
        self.version.push(i.version.clone());
        self.digest.push(i.digest.clone());
        self.config_digest.push(i.config_digest.clone());
        self.deployment_id.push(i.deployment_id);
        self.pid.push(i.pid.map(i64::from));
        self.port.push(i.port.map(i64::from));
        self.state.push(i.state.as_str().to_owned());
        self.health.push(i.health.as_str().to_owned());
        self.restarts.push(i64::from(i.restarts));
        self.started_at.push(i.started_at);
        self.cpu_millis.push(i.cpu_millis.map(wide));
        self.memory_bytes.push(i.memory_bytes.map(wide));
    }
}

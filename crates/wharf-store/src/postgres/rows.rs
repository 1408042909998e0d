//! Rows read back into records. Every column is read with `try_get`, and text that must
//! parse (states, JSON) turns into [`StoreError::Corrupt`] naming it, never a panic.

use tokio_postgres::Row;

use crate::*;

pub const DEPLOYMENT_COLUMNS: &str = r#"id, service, env, kind, version, digest, config_digest, spec, "user", started_at, finished_at, state, message, config_revision, forced, approved_by, resolved_by"#;

/// [`DEPLOYMENT_COLUMNS`] with the spec left out (read as `null`).
pub const DEPLOYMENT_BRIEF_COLUMNS: &str = r#"id, service, env, kind, version, digest, config_digest, 'null' AS spec, "user", started_at, finished_at, state, message, config_revision, forced, approved_by, resolved_by"#;

pub const INSTANCE_COLUMNS: &str = "env, service, node, instance, version, digest, config_digest, deployment_id, pid, port, state, health, restarts, started_at, cpu_millis, memory_bytes";

pub const HOST_COLUMNS: &str =
    "id, name, env, labels, capacity, address, state, joined_at, last_seen, cert_serial";

pub const SECRET_COLUMNS: &str =
    "service, env, key, key_id, nonce, ciphertext, version, updated_at, updated_by";

pub const ROLLOUT_COLUMNS: &str =
    "deployment_id, service, env, phase, progress, command, command_by, updated_at";

pub const CONFIG_COLUMNS: &str = r#"service, env, revision, vals, "user", at, message, state"#;

pub const DEFINITION_COLUMNS: &str =
    r#"revision, digest, path, source, "user", at, message, state, files, scale, ssh_hosts"#;

pub const TOKEN_COLUMNS: &str = "id, name, secret_hash, scopes, created_at, created_by, revoked_at";

fn corrupt(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {detail}"))
}

fn json<T: serde::de::DeserializeOwned>(r: &Row, i: usize, what: &str) -> Result<T> {
    let text: String = r.try_get(i)?;
    serde_json::from_str(&text).map_err(|e| corrupt(what, e))
}

/// A stored count or number that must fit its record's type.
fn narrow<T: TryFrom<i64>>(value: i64, what: &str) -> Result<T> {
    T::try_from(value).map_err(|_| corrupt(what, format!("{value} is out of range")))
}

fn narrow_opt<T: TryFrom<i64>>(value: Option<i64>, what: &str) -> Result<Option<T>> {
    value.map(|v| narrow(v, what)).transpose()
}

pub fn artifact(r: &Row) -> Result<ArtifactRecord> {
    Ok(ArtifactRecord {
        service: r.try_get(0)?,
        version: r.try_get(1)?,
        digest: r.try_get(2)?,
        size: narrow(r.try_get(3)?, "artifact size")?,
        created_at: r.try_get(4)?,
    })
}

pub fn deployment(r: &Row) -> Result<DeploymentRecord> {
    let kind: String = r.try_get(3)?;
    let state: String = r.try_get(11)?;
    Ok(DeploymentRecord {
        id: r.try_get(0)?,
        service: r.try_get(1)?,
        env: r.try_get(2)?,
        kind: DeploymentKind::parse(&kind).ok_or_else(|| corrupt("deployment kind", &kind))?,
        version: r.try_get(4)?,
        digest: r.try_get(5)?,
        config_digest: r.try_get(6)?,
        spec: {
            let text: String = r.try_get(7)?;
            SpecJson::from_text(text).map_err(|e| corrupt("deploy spec", e))?
        },
        user: r.try_get(8)?,
        started_at: r.try_get(9)?,
        finished_at: r.try_get(10)?,
        state: DeploymentState::parse(&state).ok_or_else(|| corrupt("deployment state", &state))?,
        message: r.try_get(12)?,
        config_revision: r.try_get(13)?,
        forced: r.try_get(14)?,
        approved_by: r.try_get(15)?,
        resolved_by: r.try_get(16)?,
    })
}

pub fn instance(r: &Row) -> Result<InstanceRecord> {
    let state: String = r.try_get(10)?;
    let health: String = r.try_get(11)?;
    Ok(InstanceRecord {
        env: r.try_get(0)?,
        service: r.try_get(1)?,
        node: r.try_get(2)?,
        instance: narrow(r.try_get(3)?, "instance number")?,
        version: r.try_get(4)?,
        digest: r.try_get(5)?,
        config_digest: r.try_get(6)?,
        deployment_id: r.try_get(7)?,
        pid: narrow_opt(r.try_get(8)?, "pid")?,
        port: narrow_opt(r.try_get(9)?, "port")?,
        state: InstanceState::parse(&state).ok_or_else(|| corrupt("instance state", &state))?,
        health: Health::parse(&health).ok_or_else(|| corrupt("health", &health))?,
        restarts: narrow(r.try_get(12)?, "restarts")?,
        started_at: r.try_get(13)?,
        cpu_millis: narrow_opt(r.try_get(14)?, "cpu")?,
        memory_bytes: narrow_opt(r.try_get(15)?, "memory")?,
    })
}

pub fn host(r: &Row) -> Result<HostRecord> {
    let state: String = r.try_get(6)?;
    Ok(HostRecord {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        env: r.try_get(2)?,
        labels: json(r, 3, "host labels")?,
        capacity: json(r, 4, "host capacity")?,
        address: r.try_get(5)?,
        state: HostState::parse(&state).ok_or_else(|| corrupt("host state", &state))?,
        joined_at: r.try_get(7)?,
        last_seen: r.try_get(8)?,
        cert_serial: narrow(r.try_get(9)?, "certificate serial")?,
    })
}

pub fn join_token(r: &Row) -> Result<JoinTokenRecord> {
    Ok(JoinTokenRecord {
        id: r.try_get(0)?,
        env: r.try_get(1)?,
        expires_at: r.try_get(2)?,
        uses_left: narrow(r.try_get(3)?, "uses left")?,
        created_at: r.try_get(4)?,
        created_by: r.try_get(5)?,
    })
}

pub fn config_revision(r: &Row) -> Result<ConfigRevision> {
    Ok(ConfigRevision {
        service: r.try_get(0)?,
        env: r.try_get(1)?,
        revision: r.try_get(2)?,
        values: json(r, 3, "configuration values")?,
        user: r.try_get(4)?,
        at: r.try_get(5)?,
        message: r.try_get(6)?,
        state: r.try_get(7)?,
    })
}

pub fn secret(r: &Row) -> Result<SecretRecord> {
    Ok(SecretRecord {
        service: r.try_get(0)?,
        env: r.try_get(1)?,
        key: r.try_get(2)?,
        key_id: r.try_get(3)?,
        nonce: r.try_get(4)?,
        ciphertext: r.try_get(5)?,
        version: r.try_get(6)?,
        updated_at: r.try_get(7)?,
        updated_by: r.try_get(8)?,
    })
}

/// An API token and the hash of its secret.
pub fn api_token(r: &Row) -> Result<(ApiTokenRecord, String)> {
    let scopes: String = r.try_get(3)?;
    Ok((
        ApiTokenRecord {
            id: r.try_get(0)?,
            name: r.try_get(1)?,
            scopes: scopes
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            created_at: r.try_get(4)?,
            created_by: r.try_get(5)?,
            revoked_at: r.try_get(6)?,
        },
        r.try_get(2)?,
    ))
}

pub fn definition(r: &Row) -> Result<DefinitionRecord> {
    Ok(DefinitionRecord {
        revision: r.try_get(0)?,
        digest: r.try_get(1)?,
        path: r.try_get(2)?,
        source: r.try_get(3)?,
        user: r.try_get(4)?,
        at: r.try_get(5)?,
        message: r.try_get(6)?,
        state: r.try_get(7)?,
        files: json(r, 8, "definition files")?,
        scale: json(r, 9, "definition scale")?,
        ssh_hosts: json(r, 10, "definition SSH hosts")?,
    })
}

pub fn rollout(r: &Row) -> Result<RolloutRecord> {
    Ok(RolloutRecord {
        deployment_id: r.try_get(0)?,
        service: r.try_get(1)?,
        env: r.try_get(2)?,
        phase: r.try_get(3)?,
        progress: json(r, 4, "rollout progress")?,
        command: r.try_get(5)?,
        command_by: r.try_get(6)?,
        updated_at: r.try_get(7)?,
    })
}

pub fn audit(r: &Row) -> Result<AuditRecord> {
    Ok(AuditRecord {
        id: r.try_get(0)?,
        at: r.try_get(1)?,
        actor: r.try_get(2)?,
        action: r.try_get(3)?,
        target: r.try_get(4)?,
        outcome: r.try_get(5)?,
    })
}

/// Every row through `convert`.
pub fn all<T>(rows: Vec<Row>, convert: fn(&Row) -> Result<T>) -> Result<Vec<T>> {
    rows.iter().map(convert).collect()
}

//! Store rows into the API's types. The API answers with these, never with rows: what
//! stays internal (a deployment's full spec, hashes, ciphertexts) cannot leak by a field
//! added to the store.

use wharf_api as api;
use wharf_store as store;

pub fn artifact(r: store::ArtifactRecord) -> api::ArtifactRecord {
    api::ArtifactRecord {
        service: r.service,
        version: r.version,
        digest: r.digest,
        size: r.size,
        created_at: r.created_at,
    }
}

pub fn deployment(r: store::DeploymentRecord) -> api::DeploymentRecord {
    api::DeploymentRecord {
        id: r.id,
        service: r.service,
        env: r.env,
        kind: r.kind,
        version: r.version,
        digest: r.digest,
        config_digest: r.config_digest,
        user: r.user,
        started_at: r.started_at,
        finished_at: r.finished_at,
        state: r.state,
        message: r.message,
        config_revision: r.config_revision,
        forced: r.forced,
        approved_by: r.approved_by,
        resolved_by: r.resolved_by,
    }
}

pub fn instance(r: store::InstanceRecord) -> api::InstanceRecord {
    api::InstanceRecord {
        env: r.env,
        service: r.service,
        node: r.node,
        instance: r.instance,
        version: r.version,
        digest: r.digest,
        config_digest: r.config_digest,
        deployment_id: r.deployment_id,
        pid: r.pid,
        port: r.port,
        state: r.state,
        health: r.health,
        restarts: r.restarts,
        started_at: r.started_at,
        cpu_millis: r.cpu_millis,
        memory_bytes: r.memory_bytes,
    }
}

pub fn capacity(c: store::Capacity) -> api::Capacity {
    api::Capacity {
        cpu_millis: c.cpu_millis,
        memory_bytes: c.memory_bytes,
    }
}

/// What an agent reports of its host, as the store keeps it.
pub fn capacity_row(c: api::Capacity) -> store::Capacity {
    store::Capacity {
        cpu_millis: c.cpu_millis,
        memory_bytes: c.memory_bytes,
    }
}

pub fn host(r: store::HostRecord) -> api::HostRecord {
    api::HostRecord {
        id: r.id,
        name: r.name,
        env: r.env,
        labels: r.labels,
        capacity: capacity(r.capacity),
        address: r.address,
        state: r.state,
        joined_at: r.joined_at,
        last_seen: r.last_seen,
        cert_serial: r.cert_serial,
    }
}

pub fn config_revision(r: store::ConfigRevision) -> api::ConfigRevision {
    api::ConfigRevision {
        service: r.service,
        env: r.env,
        revision: r.revision,
        values: r.values,
        user: r.user,
        at: r.at,
        message: r.message,
        state: r.state,
    }
}

pub fn api_token(r: store::ApiTokenRecord) -> api::ApiTokenRecord {
    api::ApiTokenRecord {
        id: r.id,
        name: r.name,
        scopes: r.scopes,
        created_at: r.created_at,
        created_by: r.created_by,
        revoked_at: r.revoked_at,
    }
}

pub fn audit(r: store::AuditRecord) -> api::AuditRecord {
    api::AuditRecord {
        id: r.id,
        at: r.at,
        actor: r.actor,
        action: r.action,
        target: r.target,
        outcome: r.outcome,
    }
}

/// Converts every row of a list.
pub fn all<R, W>(rows: Vec<R>, one: fn(R) -> W) -> Vec<W> {
    rows.into_iter().map(one).collect()
}

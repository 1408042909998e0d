use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use crate::migrations::MIGRATIONS;
use crate::*;

/// The SQLite implementation of [`Store`].
pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// Counts committed writes (SQLite's commit hook): [`Store::changes`].
    changes: tokio::sync::watch::Sender<u64>,
}

impl SqliteStore {
    /// Adds the next configuration revision in `state`, in one transaction.
    fn add_config_revision(
        &self,
        service: &str,
        env: &str,
        values: &std::collections::BTreeMap<String, String>,
        (user, at, message): (&str, i64, &str),
        state: &str,
    ) -> Result<ConfigRevision> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let revision: i64 = tx.query_row(
            "SELECT COALESCE(MAX(revision), 0) + 1 FROM config_revisions WHERE service = ?1 AND env = ?2",
            params![service, env],
            |r| r.get(0),
        )?;
        let vals = serde_json::to_string(values).expect("maps serialize");
        tx.execute(
            "INSERT INTO config_revisions (service, env, revision, vals, user, at, message, state)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![service, env, revision, vals, user, at, message, state],
        )?;
        tx.commit()?;
        Ok(ConfigRevision {
            service: service.to_owned(),
            env: env.to_owned(),
            revision,
            values: values.clone(),
            user: user.to_owned(),
            at,
            message: message.to_owned(),
            state: state.to_owned(),
        })
    }

    /// Opens (or creates) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    /// An in-memory store, for tests.
    pub fn in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Self> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // Statements are parsed once and kept: a status report runs hundreds of reads.
        conn.set_prepared_statement_cache_capacity(64);
        let applied: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if applied > MIGRATIONS.len() {
            return Err(StoreError::Corrupt(format!(
                "database schema version {applied} is newer than this wharf knows ({}); upgrade wharf",
                MIGRATIONS.len()
            )));
        }
        for (n, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", n + 1)?;
            tx.commit()?;
        }
        let changes = tokio::sync::watch::Sender::new(0u64);
        let feed = changes.clone();
        // Called on every committed write transaction, never for a read.
        conn.commit_hook(Some(move || {
            feed.send_modify(|n| *n = n.wrapping_add(1));
            false
        }));
        Ok(Self {
            conn: Mutex::new(conn),
            changes,
        })
    }

    /// A service's deployments in an environment, newest first, as `columns` read them.
    fn history_of(&self, columns: &str, service: &str, env: &str) -> Result<Vec<DeploymentRecord>> {
        let conn = self.conn();
        let sql = format!(
            "SELECT {columns} FROM deployments WHERE service = ?1 AND env = ?2 ORDER BY id DESC"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![service, env], deployment_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half-done transaction behind
        // (SQLite rolls it back), so a poisoned lock is safe to reuse.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn artifact_row(r: &Row<'_>) -> rusqlite::Result<ArtifactRecord> {
    Ok(ArtifactRecord {
        service: r.get(0)?,
        version: r.get(1)?,
        digest: r.get(2)?,
        size: r.get::<_, i64>(3)? as u64,
        created_at: r.get(4)?,
    })
}

const DEPLOYMENT_COLUMNS: &str = "id, service, env, kind, version, digest, config_digest, spec, user, started_at, finished_at, state, message, config_revision, forced, approved_by, resolved_by";

/// [`DEPLOYMENT_COLUMNS`] with the spec left out (read as `null`).
const DEPLOYMENT_BRIEF_COLUMNS: &str = "id, service, env, kind, version, digest, config_digest, 'null' AS spec, user, started_at, finished_at, state, message, config_revision, forced, approved_by, resolved_by";

fn deployment_row(r: &Row<'_>) -> rusqlite::Result<DeploymentRecord> {
    let text = |i: usize| -> rusqlite::Result<String> { r.get(i) };
    let bad = |i: usize, what: &str| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, what.into())
    };
    Ok(DeploymentRecord {
        id: r.get(0)?,
        service: text(1)?,
        env: text(2)?,
        kind: DeploymentKind::parse(&text(3)?).ok_or_else(|| bad(3, "deployment kind"))?,
        version: text(4)?,
        digest: text(5)?,
        config_digest: text(6)?,
        spec: SpecJson::from_text(text(7)?).map_err(|_| bad(7, "deploy spec"))?,
        user: text(8)?,
        started_at: r.get(9)?,
        finished_at: r.get(10)?,
        state: DeploymentState::parse(&text(11)?).ok_or_else(|| bad(11, "deployment state"))?,
        message: text(12)?,
        config_revision: r.get(13)?,
        forced: r.get(14)?,
        approved_by: r.get(15)?,
        resolved_by: r.get(16)?,
    })
}

const INSTANCE_COLUMNS: &str = "env, service, node, instance, version, digest, config_digest, deployment_id, pid, port, state, health, restarts, started_at, cpu_millis, memory_bytes";

fn instance_row(r: &Row<'_>) -> rusqlite::Result<InstanceRecord> {
    let bad = |i: usize, what: &str| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, what.into())
    };
    Ok(InstanceRecord {
        env: r.get(0)?,
        service: r.get(1)?,
        node: r.get(2)?,
        instance: r.get(3)?,
        version: r.get(4)?,
        digest: r.get(5)?,
        config_digest: r.get(6)?,
        deployment_id: r.get(7)?,
        pid: r.get(8)?,
        port: r.get(9)?,
        state: InstanceState::parse(&r.get::<_, String>(10)?)
            .ok_or_else(|| bad(10, "instance state"))?,
        health: Health::parse(&r.get::<_, String>(11)?).ok_or_else(|| bad(11, "health"))?,
        restarts: r.get(12)?,
        started_at: r.get(13)?,
        cpu_millis: r.get::<_, Option<i64>>(14)?.map(|v| v as u64),
        memory_bytes: r.get::<_, Option<i64>>(15)?.map(|v| v as u64),
    })
}

impl SqliteStore {
    /// Writes instance rows in one transaction; with `only_assigned`, only those whose
    /// slot has an assignment.
    fn put_instance_rows(&self, rows: &[InstanceRecord], only_assigned: bool) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let guard = if only_assigned {
                " WHERE EXISTS (SELECT 1 FROM assignments WHERE env = ?1 AND service = ?2 AND node = ?3 AND instance = ?4)"
            } else {
                ""
            };
            let sql = format!(
                "INSERT OR REPLACE INTO instances ({INSTANCE_COLUMNS}) SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16{guard}"
            );
            let mut stmt = tx.prepare_cached(&sql)?;
            for i in rows {
                stmt.execute(params![
                    i.env,
                    i.service,
                    i.node,
                    i.instance,
                    i.version,
                    i.digest,
                    i.config_digest,
                    i.deployment_id,
                    i.pid,
                    i.port,
                    i.state.as_str(),
                    i.health.as_str(),
                    i.restarts,
                    i.started_at,
                    i.cpu_millis.map(|v| v as i64),
                    i.memory_bytes.map(|v| v as i64)
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Deletes the rows of `slots` from `table` (a table keyed by slot) in one
    /// transaction.
    fn delete_slots(&self, table: &str, slots: &[InstanceKeyRef<'_>]) -> Result<()> {
        if slots.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut stmt = tx.prepare_cached(&format!(
                "DELETE FROM {table} WHERE env = ?1 AND service = ?2 AND node = ?3 AND instance = ?4"
            ))?;
            for (env, service, node, instance) in slots {
                stmt.execute(params![env, service, node, instance])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

impl Store for SqliteStore {
    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.changes.subscribe())
    }

    fn put_artifact(&self, a: &ArtifactRecord) -> Result<PutOutcome> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let existing: Option<String> = tx
            .query_row(
                "SELECT digest FROM artifacts WHERE service = ?1 AND version = ?2",
                params![a.service, a.version],
                |r| r.get(0),
            )
            .optional()?;
        let outcome = match existing {
            Some(digest) if digest == a.digest => PutOutcome::AlreadyPresent,
            Some(existing) => {
                return Err(StoreError::VersionConflict {
                    service: a.service.clone(),
                    version: a.version.clone(),
                    existing,
                });
            }
            None => {
                tx.execute(
                    "INSERT INTO artifacts (service, version, digest, size, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![a.service, a.version, a.digest, a.size as i64, a.created_at],
                )?;
                PutOutcome::Created
            }
        };
        tx.commit()?;
        Ok(outcome)
    }

    fn artifact(&self, service: &str, version: &str) -> Result<Option<ArtifactRecord>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT service, version, digest, size, created_at FROM artifacts WHERE service = ?1 AND version = ?2",
                params![service, version],
                artifact_row,
            )
            .optional()?)
    }

    fn artifacts(&self, service: Option<&str>) -> Result<Vec<ArtifactRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT service, version, digest, size, created_at FROM artifacts
             WHERE ?1 IS NULL OR service = ?1 ORDER BY service, created_at, version",
        )?;
        let rows = stmt.query_map(params![service], artifact_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn begin_deployment(&self, d: &NewDeployment) -> Result<i64> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let holder = if d.pending_approval {
            None
        } else {
            tx.query_row(
                "SELECT id, user, started_at FROM deployments WHERE service = ?1 AND env = ?2 AND state = 'in_progress'",
                params![d.service, d.env],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)),
            )
            .optional()?
        };
        if let Some((id, holder, started)) = holder {
            let ago = (d.started_at - started).max(0) / 1000;
            return Err(StoreError::Locked {
                service: d.service.clone(),
                env: d.env.clone(),
                holder,
                id,
                started: format!("{ago}s ago"),
            });
        }
        let state = if d.pending_approval {
            DeploymentState::PendingApproval
        } else {
            DeploymentState::InProgress
        };
        tx.execute(
            "INSERT INTO deployments (service, env, kind, version, digest, config_digest, spec, user, started_at, state, config_revision, forced)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![d.service, d.env, d.kind.as_str(), d.version, d.digest, d.config_digest, d.spec.text(), d.user, d.started_at, state.as_str(), d.config_revision, d.forced],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(id)
    }

    fn finish_deployment(
        &self,
        id: i64,
        state: DeploymentState,
        message: &str,
        at: i64,
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current = current_state(&tx, id)?;
        if !current.may_become(state) {
            return Err(StoreError::Transition {
                id,
                state: current.as_str().to_owned(),
                wanted: state.as_str().to_owned(),
            });
        }
        tx.execute(
            "UPDATE deployments SET state = ?2, message = ?3, finished_at = ?4 WHERE id = ?1 AND state = ?5",
            params![id, state.as_str(), message, at, current.as_str()],
        )?;
        if matches!(state, DeploymentState::Rejected | DeploymentState::Expired) {
            settle_held_config(&tx, id, "rejected")?;
            settle_held_definition(&tx, id, "rejected")?;
        }
        tx.commit()?;
        Ok(())
    }

    fn deployment(&self, id: i64) -> Result<Option<DeploymentRecord>> {
        let sql = format!("SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE id = ?1");
        Ok(self
            .conn()
            .query_row(&sql, params![id], deployment_row)
            .optional()?)
    }

    fn history(&self, service: &str, env: &str) -> Result<Vec<DeploymentRecord>> {
        self.history_of(DEPLOYMENT_COLUMNS, service, env)
    }

    fn history_brief(&self, service: &str, env: &str) -> Result<Vec<DeploymentRecord>> {
        self.history_of(DEPLOYMENT_BRIEF_COLUMNS, service, env)
    }

    fn interrupt_unfinished(&self, message: &str, at: i64) -> Result<Vec<DeploymentRecord>> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let sql = format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE state = 'in_progress' AND {NOT_ROLLING_OUT}"
        );
        let unfinished: Vec<DeploymentRecord> = {
            let mut stmt = tx.prepare_cached(&sql)?;
            let rows = stmt.query_map([], deployment_row)?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        tx.execute(
            &format!("UPDATE deployments SET state = 'interrupted', message = ?1, finished_at = ?2 WHERE state = 'in_progress' AND {NOT_ROLLING_OUT}"),
            params![message, at],
        )?;
        tx.commit()?;
        Ok(unfinished)
    }

    fn unresolved_interruptions(&self) -> Result<Vec<DeploymentRecord>> {
        let conn = self.conn();
        let sql = format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE state = 'interrupted' AND resolved_by IS NULL ORDER BY id"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([], deployment_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn resolve_interruption(&self, id: i64, by: i64, message: &str) -> Result<()> {
        let changed = self.conn().execute(
            "UPDATE deployments SET resolved_by = ?2, message = ?3 WHERE id = ?1 AND state = 'interrupted'",
            params![id, by, message],
        )?;
        if changed == 0 {
            return Err(StoreError::NoDeployment(id));
        }
        Ok(())
    }

    fn set_deployment_spec(&self, id: i64, spec: &SpecJson) -> Result<()> {
        let changed = self.conn().execute(
            "UPDATE deployments SET spec = ?2 WHERE id = ?1 AND state = 'in_progress'",
            params![id, spec.text()],
        )?;
        if changed == 0 {
            return Err(StoreError::NoDeployment(id));
        }
        Ok(())
    }

    fn put_instances(&self, rows: &[InstanceRecord]) -> Result<()> {
        self.put_instance_rows(rows, false)
    }

    fn put_observed_instances(&self, rows: &[InstanceRecord]) -> Result<()> {
        self.put_instance_rows(rows, true)
    }

    fn put_instance(&self, instance: &InstanceRecord) -> Result<()> {
        self.put_instances(std::slice::from_ref(instance))
    }

    fn remove_instance(&self, env: &str, service: &str, node: &str, instance: u32) -> Result<()> {
        self.conn().execute(
            "DELETE FROM instances WHERE env = ?1 AND service = ?2 AND node = ?3 AND instance = ?4",
            params![env, service, node, instance],
        )?;
        Ok(())
    }

    fn remove_instances(&self, slots: &[InstanceKeyRef<'_>]) -> Result<()> {
        self.delete_slots("instances", slots)
    }

    fn instances(&self, env: Option<&str>, service: Option<&str>) -> Result<Vec<InstanceRecord>> {
        let conn = self.conn();
        let sql = format!(
            "SELECT {INSTANCE_COLUMNS} FROM instances WHERE (?1 IS NULL OR env = ?1) AND (?2 IS NULL OR service = ?2)
             ORDER BY env, service, instance, node"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![env, service], instance_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn assigned_port(
        &self,
        env: &str,
        service: &str,
        node: &str,
        instance: u32,
    ) -> Result<Option<u16>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT port FROM slot_ports WHERE env = ?1 AND service = ?2 AND node = ?3 AND instance = ?4",
                params![env, service, node, instance],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn assign_port(
        &self,
        env: &str,
        service: &str,
        node: &str,
        instance: u32,
        port: u16,
    ) -> Result<()> {
        self.conn().execute(
            "INSERT OR REPLACE INTO slot_ports (env, service, node, instance, port) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![env, service, node, instance, port],
        )?;
        Ok(())
    }

    fn port_taken(&self, port: u16) -> Result<bool> {
        let taken: Option<i64> = self
            .conn()
            .query_row(
                "SELECT 1 FROM slot_ports WHERE port = ?1",
                params![port],
                |r| r.get(0),
            )
            .optional()?;
        Ok(taken.is_some())
    }

    fn create_join_token(&self, t: &JoinTokenRecord, secret_hash: &str) -> Result<()> {
        self.conn().execute(
            "INSERT INTO join_tokens (id, env, secret_hash, expires_at, uses_left, created_at, created_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![t.id, t.env, secret_hash, t.expires_at, t.uses_left, t.created_at, t.created_by],
        )?;
        Ok(())
    }

    fn redeem_join_token(&self, id: &str, secret_hash: &str, now: i64) -> Result<String> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let row: Option<(String, String, i64, u32)> = tx
            .query_row(
                "SELECT env, secret_hash, expires_at, uses_left FROM join_tokens WHERE id = ?1",
                params![id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        // One message for unknown and wrong tokens: a caller learns nothing from it.
        let refused = |why: &str| Err(StoreError::TokenRefused(why.to_owned()));
        let Some((env, hash, expires_at, uses_left)) = row else {
            return refused("unknown or wrong token");
        };
        if !constant_time_eq(hash.as_bytes(), secret_hash.as_bytes()) {
            return refused("unknown or wrong token");
        }
        if expires_at <= now {
            return refused("the token has expired");
        }
        if uses_left == 0 {
            return refused("the token has been used");
        }
        tx.execute(
            "UPDATE join_tokens SET uses_left = uses_left - 1 WHERE id = ?1",
            params![id],
        )?;
        tx.commit()?;
        Ok(env)
    }

    fn join_tokens(&self) -> Result<Vec<JoinTokenRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT id, env, expires_at, uses_left, created_at, created_by FROM join_tokens ORDER BY created_at")?;
        let rows = stmt.query_map([], |r| {
            Ok(JoinTokenRecord {
                id: r.get(0)?,
                env: r.get(1)?,
                expires_at: r.get(2)?,
                uses_left: r.get(3)?,
                created_at: r.get(4)?,
                created_by: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn register_host(&self, h: &NewHost) -> Result<HostRecord> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let labels = serde_json::to_string(&h.labels).expect("labels serialize");
        let capacity = serde_json::to_string(&h.capacity).expect("capacity serializes");
        let serial: i64 = tx.query_row(
            "SELECT COALESCE(MAX(cert_serial), 0) + 1 FROM hosts",
            [],
            |r| r.get(0),
        )?;
        tx.execute(
            "INSERT INTO hosts (name, env, labels, capacity, address, state, joined_at, last_seen, cert_serial)
             VALUES (?1, ?2, ?3, ?4, ?5, 'ready', ?6, ?6, ?7)
             ON CONFLICT (env, name) DO UPDATE SET labels = ?3, capacity = ?4, address = ?5, state = 'ready',
                 joined_at = ?6, last_seen = ?6, cert_serial = ?7",
            params![h.name, h.env, labels, capacity, h.address, h.at, serial],
        )?;
        let sql = format!("SELECT {HOST_COLUMNS} FROM hosts WHERE env = ?1 AND name = ?2");
        let host = tx.query_row(&sql, params![h.env, h.name], host_row)?;
        tx.commit()?;
        Ok(host)
    }

    fn host(&self, id: i64) -> Result<Option<HostRecord>> {
        let sql = format!("SELECT {HOST_COLUMNS} FROM hosts WHERE id = ?1");
        Ok(self
            .conn()
            .query_row(&sql, params![id], host_row)
            .optional()?)
    }

    fn hosts(&self, env: Option<&str>) -> Result<Vec<HostRecord>> {
        let conn = self.conn();
        let sql = format!(
            "SELECT {HOST_COLUMNS} FROM hosts WHERE ?1 IS NULL OR env = ?1 ORDER BY env, name"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![env], host_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn touch_hosts(&self, heard: &[Heartbeat]) -> Result<()> {
        if heard.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut stmt =
                tx.prepare_cached("UPDATE hosts SET last_seen = ?2, address = ?3 WHERE id = ?1")?;
            for h in heard {
                stmt.execute(params![h.host_id, h.at, h.address])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn set_host_state(&self, id: i64, state: HostState) -> Result<()> {
        self.conn().execute(
            "UPDATE hosts SET state = ?2 WHERE id = ?1",
            params![id, state.as_str()],
        )?;
        Ok(())
    }

    fn remove_host(&self, id: i64) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute("DELETE FROM assignments WHERE host_id = ?1", params![id])?;
        tx.execute("DELETE FROM hosts WHERE id = ?1", params![id])?;
        tx.commit()?;
        Ok(())
    }

    fn put_assignments(&self, plans: &[(i64, InstanceKeyRef<'_>, String)]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut stmt = tx.prepare_cached("INSERT OR REPLACE INTO assignments (env, service, node, instance, host_id, plan) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
            for (host_id, (env, service, node, instance), plan) in plans {
                stmt.execute(params![env, service, node, instance, host_id, plan])?;
            }
        }
        tx.commit()?;
        Ok(())
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
        self.conn().execute(
            "INSERT OR REPLACE INTO assignments (env, service, node, instance, host_id, plan) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![env, service, node, instance, host_id, plan.to_string()],
        )?;
        Ok(())
    }

    fn remove_assignment(&self, env: &str, service: &str, node: &str, instance: u32) -> Result<()> {
        self.conn().execute(
            "DELETE FROM assignments WHERE env = ?1 AND service = ?2 AND node = ?3 AND instance = ?4",
            params![env, service, node, instance],
        )?;
        Ok(())
    }

    fn remove_assignments(&self, slots: &[InstanceKeyRef<'_>]) -> Result<()> {
        self.delete_slots("assignments", slots)
    }

    fn approve_deployment(&self, id: i64, approver: &str, at: i64) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (service, env): (String, String) = tx
            .query_row(
                "SELECT service, env FROM deployments WHERE id = ?1",
                params![id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
            .ok_or(StoreError::NoDeployment(id))?;
        let current = current_state(&tx, id)?;
        if !current.may_become(DeploymentState::InProgress) {
            return Err(StoreError::Transition {
                id,
                state: current.as_str().to_owned(),
                wanted: DeploymentState::InProgress.as_str().to_owned(),
            });
        }
        let holder = tx
            .query_row(
                "SELECT id, user, started_at FROM deployments WHERE service = ?1 AND env = ?2 AND state = 'in_progress'",
                params![service, env],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)),
            )
            .optional()?;
        if let Some((holder_id, holder, started)) = holder {
            return Err(StoreError::Locked {
                service,
                env,
                holder,
                id: holder_id,
                started: format!("{}s ago", (at - started).max(0) / 1000),
            });
        }
        tx.execute(
            "UPDATE deployments SET state = 'in_progress', approved_by = ?2, started_at = ?3
             WHERE id = ?1 AND state = 'pending_approval'",
            params![id, approver, at],
        )?;
        refuse_superseded_config(&tx, id)?;
        settle_held_config(&tx, id, "active")?;
        settle_held_definition(&tx, id, "active")?;
        tx.commit()?;
        Ok(())
    }

    fn pending_deployments(&self) -> Result<Vec<DeploymentRecord>> {
        let conn = self.conn();
        let sql = format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE state = 'pending_approval' ORDER BY id"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([], deployment_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn ran_successfully(&self, service: &str, env: &str, digest: &str) -> Result<bool> {
        Ok(self.conn().query_row(
            "SELECT EXISTS (SELECT 1 FROM deployments WHERE service = ?1 AND env = ?2 AND digest = ?3
                 AND state = 'succeeded' AND kind != 'stop')",
            params![service, env, digest],
            |r| r.get(0),
        )?)
    }

    fn put_config_revision(
        &self,
        service: &str,
        env: &str,
        values: &std::collections::BTreeMap<String, String>,
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
        values: &std::collections::BTreeMap<String, String>,
        user: &str,
        at: i64,
        message: &str,
    ) -> Result<ConfigRevision> {
        self.add_config_revision(service, env, values, (user, at, message), "held")
    }

    fn put_definition(&self, d: &DefinitionRecord) -> Result<DefinitionRecord> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let record = insert_definition(&tx, d, "active")?;
        tx.commit()?;
        Ok(record)
    }

    fn definition_in_force(&self) -> Result<Option<i64>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT MAX(revision) FROM definitions WHERE state = 'active'",
                [],
                |r| r.get(0),
            )
            .optional()?
            .flatten())
    }

    fn hold_definition(
        &self,
        d: &DefinitionRecord,
        approval: &NewDeployment,
    ) -> Result<(DefinitionRecord, i64)> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let record = insert_definition(&tx, d, "held")?;
        let revision = record.revision;
        let a = approval;
        tx.execute(
            "INSERT INTO deployments (service, env, kind, version, digest, config_digest, spec, user, started_at, state, config_revision, forced)
             VALUES (?1, ?2, 'definition', ?3, ?4, '', ?5, ?6, ?7, 'pending_approval', ?8, 0)",
            params![a.service, a.env, format!("r{revision}"), d.digest, a.spec.text(), a.user, a.started_at, revision],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok((record, id))
    }

    fn definition(&self, revision: Option<i64>) -> Result<Option<DefinitionRecord>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT revision, digest, path, source, user, at, message, state, files, scale, ssh_hosts FROM definitions
                 WHERE revision = ?1 OR (?1 IS NULL AND state = 'active')
                 ORDER BY revision DESC LIMIT 1",
                params![revision],
                definition_row,
            )
            .optional()?)
    }

    fn definitions(&self) -> Result<Vec<DefinitionRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT revision, digest, path, source, user, at, message, state, files, scale, ssh_hosts FROM definitions
             ORDER BY revision DESC",
        )?;
        let rows = stmt.query_map([], definition_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn config_revision(
        &self,
        service: &str,
        env: &str,
        revision: Option<i64>,
    ) -> Result<Option<ConfigRevision>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT service, env, revision, vals, user, at, message, state FROM config_revisions
                 WHERE service = ?1 AND env = ?2
                   AND (revision = ?3 OR (?3 IS NULL AND state = 'active'))
                 ORDER BY revision DESC LIMIT 1",
                params![service, env, revision],
                config_revision_row,
            )
            .optional()?)
    }

    fn config_revisions(&self, service: &str, env: &str) -> Result<Vec<ConfigRevision>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT service, env, revision, vals, user, at, message, state FROM config_revisions
             WHERE service = ?1 AND env = ?2 ORDER BY revision DESC",
        )?;
        let rows = stmt.query_map(params![service, env], config_revision_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn put_secret(&self, s: &SecretRecord) -> Result<()> {
        self.conn().execute(
            "INSERT INTO secrets (service, env, key, key_id, nonce, ciphertext, version, updated_at, updated_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7, ?8)
             ON CONFLICT (service, env, key) DO UPDATE SET key_id = excluded.key_id,
                 nonce = excluded.nonce, ciphertext = excluded.ciphertext, version = version + 1,
                 updated_at = excluded.updated_at, updated_by = excluded.updated_by",
            params![s.service, s.env, s.key, s.key_id, s.nonce, s.ciphertext, s.updated_at, s.updated_by],
        )?;
        Ok(())
    }

    fn remove_secret(&self, service: &str, env: &str, key: &str) -> Result<bool> {
        Ok(self.conn().execute(
            "DELETE FROM secrets WHERE service = ?1 AND env = ?2 AND key = ?3",
            params![service, env, key],
        )? > 0)
    }

    fn secrets(&self, scope: Option<(&str, &str)>) -> Result<Vec<SecretRecord>> {
        let conn = self.conn();
        let sql = format!(
            "SELECT {SECRET_COLUMNS} FROM secrets WHERE (?1 IS NULL OR (service = ?1 AND env = ?2))
             ORDER BY service, env, key"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let (service, env) = scope.unzip();
        let rows = stmt.query_map(params![service, env], secret_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn reencrypt_secrets(&self, secrets: &[SecretRecord]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for s in secrets {
            tx.execute(
                "UPDATE secrets SET key_id = ?4, nonce = ?5, ciphertext = ?6
                 WHERE service = ?1 AND env = ?2 AND key = ?3",
                params![s.service, s.env, s.key, s.key_id, s.nonce, s.ciphertext],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn create_api_token(&self, t: &ApiTokenRecord, secret_hash: &str) -> Result<()> {
        self.conn().execute(
            "INSERT INTO api_tokens (id, name, secret_hash, scopes, created_at, created_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                t.id,
                t.name,
                secret_hash,
                t.scopes.join(","),
                t.created_at,
                t.created_by
            ],
        )?;
        Ok(())
    }

    fn api_token(&self, id: &str) -> Result<Option<(ApiTokenRecord, String)>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT id, name, secret_hash, scopes, created_at, created_by, revoked_at
                 FROM api_tokens WHERE id = ?1",
                params![id],
                api_token_row,
            )
            .optional()?)
    }

    fn api_tokens(&self) -> Result<Vec<ApiTokenRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, name, secret_hash, scopes, created_at, created_by, revoked_at
             FROM api_tokens ORDER BY created_at, id",
        )?;
        let rows = stmt.query_map([], api_token_row)?;
        Ok(rows
            .map(|r| r.map(|(t, _)| t))
            .collect::<rusqlite::Result<_>>()?)
    }

    fn revoke_api_token(&self, id: &str, at: i64) -> Result<bool> {
        Ok(self.conn().execute(
            "UPDATE api_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            params![id, at],
        )? > 0)
    }

    fn audit(&self, at: i64, actor: &str, action: &str, target: &str, outcome: &str) -> Result<()> {
        self.conn().execute(
            "INSERT INTO audit (at, actor, action, target, outcome) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![at, actor, action, target, outcome],
        )?;
        Ok(())
    }

    fn audit_log(&self, limit: usize) -> Result<Vec<AuditRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, at, actor, action, target, outcome FROM audit ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map(params![limit as i64], |r| {
            Ok(AuditRecord {
                id: r.get(0)?,
                at: r.get(1)?,
                actor: r.get(2)?,
                action: r.get(3)?,
                target: r.get(4)?,
                outcome: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn put_rollout(&self, r: &RolloutRecord) -> Result<()> {
        self.conn().execute(
            "INSERT INTO rollouts (deployment_id, service, env, phase, progress, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (deployment_id) DO UPDATE SET phase = ?4, progress = ?5, updated_at = ?6",
            params![
                r.deployment_id,
                r.service,
                r.env,
                r.phase,
                r.progress.to_string(),
                r.updated_at
            ],
        )?;
        Ok(())
    }

    fn rollout(&self, env: &str, service: &str) -> Result<Option<RolloutRecord>> {
        let conn = self.conn();
        let sql = format!(
            "SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE env = ?1 AND service = ?2 ORDER BY deployment_id DESC LIMIT 1"
        );
        let found = conn
            .query_row(&sql, params![env, service], rollout_row)
            .optional()?;
        found.transpose()
    }

    fn rollouts_in(&self, phases: &[&str]) -> Result<Vec<RolloutRecord>> {
        let conn = self.conn();
        let sql = format!("SELECT {ROLLOUT_COLUMNS} FROM rollouts ORDER BY deployment_id");
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows: Vec<Result<RolloutRecord>> = stmt
            .query_map([], rollout_row)?
            .collect::<rusqlite::Result<_>>()?;
        let mut all = Vec::new();
        for row in rows {
            let row = row?;
            if phases.contains(&row.phase.as_str()) {
                all.push(row);
            }
        }
        Ok(all)
    }

    fn command_rollout(
        &self,
        deployment_id: i64,
        phases: &[&str],
        command: &str,
        by: &str,
    ) -> Result<bool> {
        let conn = self.conn();
        let phase: Option<String> = conn
            .query_row(
                "SELECT phase FROM rollouts WHERE deployment_id = ?1",
                params![deployment_id],
                |r| r.get(0),
            )
            .optional()?;
        if !phase.is_some_and(|p| phases.contains(&p.as_str())) {
            return Ok(false);
        }
        // An abort waiting to be carried out is never replaced by another command.
        conn.execute(
            "UPDATE rollouts SET command = ?2, command_by = ?3 WHERE deployment_id = ?1 AND (command IS NULL OR command NOT LIKE '%abort%')",
            params![deployment_id, command, by],
        )?;
        Ok(true)
    }

    fn take_rollout_command(&self, deployment_id: i64) -> Result<Option<(String, String)>> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let pending: Option<(Option<String>, Option<String>)> = tx
            .query_row(
                "SELECT command, command_by FROM rollouts WHERE deployment_id = ?1",
                params![deployment_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if matches!(pending, Some((Some(_), _))) {
            tx.execute(
                "UPDATE rollouts SET command = NULL, command_by = NULL WHERE deployment_id = ?1",
                params![deployment_id],
            )?;
        }
        tx.commit()?;
        Ok(match pending {
            Some((Some(command), by)) => Some((command, by.unwrap_or_default())),
            _ => None,
        })
    }

    fn assignments(&self, host_id: i64) -> Result<Vec<serde_json::Value>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT plan FROM assignments WHERE host_id = ?1 ORDER BY env, service, instance",
        )?;
        let rows = stmt.query_map(params![host_id], |r| r.get::<_, String>(0))?;
        let texts: Vec<String> = rows.collect::<rusqlite::Result<_>>()?;
        texts
            .iter()
            .map(|t| serde_json::from_str(t).map_err(|e| StoreError::Corrupt(e.to_string())))
            .collect()
    }
}

/// A deployment whose rollout has its new set serving is not interrupted by a restart:
/// the rollout goes on from its stored progress.
const NOT_ROLLING_OUT: &str =
    "id NOT IN (SELECT deployment_id FROM rollouts WHERE phase IN ('paused', 'promoted'))";

const ROLLOUT_COLUMNS: &str =
    "deployment_id, service, env, phase, progress, command, command_by, updated_at";

/// A rollout row; its progress must be JSON (the outer error is SQLite's).
fn rollout_row(r: &Row<'_>) -> rusqlite::Result<Result<RolloutRecord>> {
    let progress: String = r.get(4)?;
    let record = |progress| RolloutRecord {
        deployment_id: r.get(0).unwrap_or_default(),
        service: r.get(1).unwrap_or_default(),
        env: r.get(2).unwrap_or_default(),
        phase: r.get(3).unwrap_or_default(),
        progress,
        command: r.get(5).unwrap_or_default(),
        command_by: r.get(6).unwrap_or_default(),
        updated_at: r.get(7).unwrap_or_default(),
    };
    Ok(serde_json::from_str(&progress)
        .map(record)
        .map_err(|e| StoreError::Corrupt(e.to_string())))
}

const HOST_COLUMNS: &str =
    "id, name, env, labels, capacity, address, state, joined_at, last_seen, cert_serial";

fn config_revision_row(r: &Row<'_>) -> rusqlite::Result<ConfigRevision> {
    let vals: String = r.get(3)?;
    Ok(ConfigRevision {
        service: r.get(0)?,
        env: r.get(1)?,
        revision: r.get(2)?,
        values: serde_json::from_str(&vals).map_err(|_| {
            rusqlite::Error::FromSqlConversionFailure(
                3,
                rusqlite::types::Type::Text,
                "config values".into(),
            )
        })?,
        user: r.get(4)?,
        at: r.get(5)?,
        message: r.get(6)?,
        state: r.get(7)?,
    })
}

const SECRET_COLUMNS: &str =
    "service, env, key, key_id, nonce, ciphertext, version, updated_at, updated_by";

fn secret_row(r: &Row<'_>) -> rusqlite::Result<SecretRecord> {
    Ok(SecretRecord {
        service: r.get(0)?,
        env: r.get(1)?,
        key: r.get(2)?,
        key_id: r.get(3)?,
        nonce: r.get(4)?,
        ciphertext: r.get(5)?,
        version: r.get(6)?,
        updated_at: r.get(7)?,
        updated_by: r.get(8)?,
    })
}

fn api_token_row(r: &Row<'_>) -> rusqlite::Result<(ApiTokenRecord, String)> {
    let scopes: String = r.get(3)?;
    Ok((
        ApiTokenRecord {
            id: r.get(0)?,
            name: r.get(1)?,
            scopes: scopes
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            created_at: r.get(4)?,
            created_by: r.get(5)?,
            revoked_at: r.get(6)?,
        },
        r.get(2)?,
    ))
}

fn host_row(r: &Row<'_>) -> rusqlite::Result<HostRecord> {
    let bad = |i: usize, what: &str| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, what.into())
    };
    Ok(HostRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        env: r.get(2)?,
        labels: serde_json::from_str(&r.get::<_, String>(3)?).map_err(|_| bad(3, "labels"))?,
        capacity: serde_json::from_str(&r.get::<_, String>(4)?).map_err(|_| bad(4, "capacity"))?,
        address: r.get(5)?,
        state: HostState::parse(&r.get::<_, String>(6)?).ok_or_else(|| bad(6, "host state"))?,
        joined_at: r.get(7)?,
        last_seen: r.get(8)?,
        cert_serial: r.get::<_, i64>(9)? as u64,
    })
}

/// Compares secrets without leaking, through timing, how much of them matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Adds the next definition revision in `state` inside `tx`; returns it.
fn insert_definition(
    tx: &rusqlite::Transaction<'_>,
    d: &DefinitionRecord,
    state: &str,
) -> Result<DefinitionRecord> {
    let revision: i64 = tx.query_row(
        "SELECT COALESCE(MAX(revision), 0) + 1 FROM definitions",
        [],
        |r| r.get(0),
    )?;
    tx.execute(
        "INSERT INTO definitions (revision, digest, path, source, user, at, message, state, files, scale, ssh_hosts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            revision,
            d.digest,
            d.path,
            d.source,
            d.user,
            d.at,
            d.message,
            state,
            serde_json::to_string(&d.files).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            serde_json::to_string(&d.scale).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            serde_json::to_string(&d.ssh_hosts)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?
        ],
    )?;
    Ok(DefinitionRecord {
        revision,
        state: state.to_owned(),
        ..d.clone()
    })
}

fn definition_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DefinitionRecord> {
    Ok(DefinitionRecord {
        revision: r.get(0)?,
        digest: r.get(1)?,
        path: r.get(2)?,
        source: r.get(3)?,
        user: r.get(4)?,
        at: r.get(5)?,
        message: r.get(6)?,
        state: r.get(7)?,
        files: json_column(r, 8)?,
        scale: json_column(r, 9)?,
        ssh_hosts: json_column(r, 10)?,
    })
}

/// A column holding JSON, read as `T`.
fn json_column<T: serde::de::DeserializeOwned>(
    r: &rusqlite::Row<'_>,
    index: usize,
) -> rusqlite::Result<T> {
    let text: String = r.get(index)?;
    serde_json::from_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// A held configuration revision follows its deployment: active once approved,
/// rejected (never shipped) once it is rejected or expires.
fn settle_held_config(tx: &rusqlite::Transaction<'_>, deployment: i64, to: &str) -> Result<()> {
    tx.execute(
        "UPDATE config_revisions SET state = ?2
         WHERE state = 'held' AND (service, env, revision) =
             (SELECT service, env, config_revision FROM deployments WHERE id = ?1 AND kind = 'config')",
        params![deployment, to],
    )?;
    Ok(())
}

/// Refuses to approve a configuration roll whose held revision is no longer the newest.
fn refuse_superseded_config(tx: &rusqlite::Transaction<'_>, deployment: i64) -> Result<()> {
    let found: Option<(i64, i64)> = tx
        .query_row(
            "SELECT d.config_revision, (SELECT MAX(r.revision) FROM config_revisions r
                 WHERE r.service = d.service AND r.env = d.env)
             FROM deployments d WHERE d.id = ?1 AND d.kind = 'config'",
            params![deployment],
            |r| Ok((r.get(0)?, r.get::<_, Option<i64>>(1)?.unwrap_or(0))),
        )
        .optional()?;
    match found {
        Some((revision, newest)) if newest > revision => Err(StoreError::Superseded {
            id: deployment,
            revision,
            newest,
        }),
        _ => Ok(()),
    }
}

/// A held definition revision follows the deployment that holds it.
fn settle_held_definition(tx: &rusqlite::Transaction<'_>, deployment: i64, to: &str) -> Result<()> {
    tx.execute(
        "UPDATE definitions SET state = ?2
         WHERE state = 'held' AND revision =
             (SELECT config_revision FROM deployments WHERE id = ?1 AND kind = 'definition')",
        params![deployment, to],
    )?;
    Ok(())
}

/// The state of a deployment, read inside the transaction that changes it.
fn current_state(tx: &rusqlite::Transaction<'_>, id: i64) -> Result<DeploymentState> {
    let state: String = tx
        .query_row(
            "SELECT state FROM deployments WHERE id = ?1",
            params![id],
            |r| r.get(0),
        )
        .optional()?
        .ok_or(StoreError::NoDeployment(id))?;
    DeploymentState::parse(&state)
        .ok_or_else(|| StoreError::Corrupt(format!("deployment #{id} has state `{state}`")))
}

//! Schema migrations, applied in order; `PRAGMA user_version` records how many ran.

pub const MIGRATIONS: &[&str] = &[
    // 1: the foundation.
    "CREATE TABLE artifacts (
        service TEXT NOT NULL,
        version TEXT NOT NULL,
        digest TEXT NOT NULL,
        size INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (service, version)
    );
    CREATE TABLE deployments (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        service TEXT NOT NULL,
        env TEXT NOT NULL,
        kind TEXT NOT NULL,
        version TEXT NOT NULL,
        digest TEXT NOT NULL,
        config_digest TEXT NOT NULL,
        spec TEXT NOT NULL,
        user TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        finished_at INTEGER,
        state TEXT NOT NULL,
        message TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX deployments_by_service ON deployments (service, env, id);
    -- At most one deployment in progress per service and environment: the deploy lock.
    CREATE UNIQUE INDEX one_deploy_at_a_time ON deployments (service, env) WHERE state = 'in_progress';
    CREATE TABLE instances (
        env TEXT NOT NULL,
        service TEXT NOT NULL,
        node TEXT NOT NULL,
        instance INTEGER NOT NULL,
        version TEXT NOT NULL,
        digest TEXT NOT NULL,
        config_digest TEXT NOT NULL,
        deployment_id INTEGER NOT NULL,
        pid INTEGER,
        port INTEGER,
        state TEXT NOT NULL,
        health TEXT NOT NULL,
        restarts INTEGER NOT NULL,
        started_at INTEGER NOT NULL,
        PRIMARY KEY (env, service, node, instance)
    );
    CREATE TABLE ports (
        env TEXT NOT NULL,
        service TEXT NOT NULL,
        instance INTEGER NOT NULL,
        port INTEGER NOT NULL UNIQUE,
        PRIMARY KEY (env, service, instance)
    );",
    // 2: hosts of a fleet, the tokens they join with, and what each should run.
    "CREATE TABLE hosts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        env TEXT NOT NULL,
        labels TEXT NOT NULL,
        capacity TEXT NOT NULL,
        address TEXT NOT NULL,
        state TEXT NOT NULL,
        joined_at INTEGER NOT NULL,
        last_seen INTEGER NOT NULL,
        cert_serial INTEGER NOT NULL,
        UNIQUE (env, name)
    );
    CREATE TABLE join_tokens (
        id TEXT PRIMARY KEY,
        env TEXT NOT NULL,
        secret_hash TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        uses_left INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        created_by TEXT NOT NULL
    );
    CREATE TABLE assignments (
        env TEXT NOT NULL,
        service TEXT NOT NULL,
        node TEXT NOT NULL,
        instance INTEGER NOT NULL,
        host_id INTEGER NOT NULL,
        plan TEXT NOT NULL,
        PRIMARY KEY (env, service, node, instance)
    );
    CREATE INDEX assignments_by_host ON assignments (host_id);",
    // 3: ports belong to a slot on a node, so a moved instance gets a port on its new host.
    "CREATE TABLE slot_ports (
        env TEXT NOT NULL,
        service TEXT NOT NULL,
        node TEXT NOT NULL,
        instance INTEGER NOT NULL,
        port INTEGER NOT NULL UNIQUE,
        PRIMARY KEY (env, service, node, instance)
    );
    INSERT INTO slot_ports (env, service, node, instance, port) SELECT env, service, '', instance, port FROM ports;
    DROP TABLE ports;",
    // 4: per-instance resource use.
    "ALTER TABLE instances ADD COLUMN cpu_millis INTEGER;
    ALTER TABLE instances ADD COLUMN memory_bytes INTEGER;",
    // 5: configuration revisions, encrypted secrets, API tokens, the audit log, and what
    // each deployment ran with (configuration revision, forced past the pipeline).
    "CREATE TABLE config_revisions (
        service TEXT NOT NULL,
        env TEXT NOT NULL,
        revision INTEGER NOT NULL,
        vals TEXT NOT NULL,
        user TEXT NOT NULL,
        at INTEGER NOT NULL,
        message TEXT NOT NULL,
        PRIMARY KEY (service, env, revision)
    );
    CREATE TABLE secrets (
        service TEXT NOT NULL,
        env TEXT NOT NULL,
        key TEXT NOT NULL,
        key_id TEXT NOT NULL,
        nonce BLOB NOT NULL,
        ciphertext BLOB NOT NULL,
        version INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        updated_by TEXT NOT NULL,
        PRIMARY KEY (service, env, key)
    );
    CREATE TABLE api_tokens (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        secret_hash TEXT NOT NULL,
        scopes TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        created_by TEXT NOT NULL,
        revoked_at INTEGER
    );
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at INTEGER NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        outcome TEXT NOT NULL
    );
    ALTER TABLE deployments ADD COLUMN config_revision INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE deployments ADD COLUMN forced INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE deployments ADD COLUMN approved_by TEXT;",
    // 6: the definition lives in the controller, one numbered revision per change.
    "CREATE TABLE definitions (
        revision INTEGER PRIMARY KEY,
        digest TEXT NOT NULL,
        path TEXT NOT NULL,
        source TEXT NOT NULL,
        user TEXT NOT NULL,
        at INTEGER NOT NULL,
        message TEXT NOT NULL
    );",
    // 7: a configuration revision made in an environment with approvals is held (seen
    // by nobody) until its deployment is approved, and never ships once rejected.
    "ALTER TABLE config_revisions ADD COLUMN state TEXT NOT NULL DEFAULT 'active';",
    // 8: a definition revision that changes an approval environment's policy is held
    // until approved (and rejected with its deployment).
    "ALTER TABLE definitions ADD COLUMN state TEXT NOT NULL DEFAULT 'active';",
    // 9: an interrupted deployment is resolved at start (rolled back or resumed by the
    // deployment named here). Those interrupted before this existed count as resolved
    // (0): the periodic reconcile brings their services back to what runs.
    "ALTER TABLE deployments ADD COLUMN resolved_by INTEGER;
    UPDATE deployments SET resolved_by = 0 WHERE state = 'interrupted';",
    // 10: blue-green and canary rollouts: their progress (the controller's JSON), and a
    // command someone gave that the rollout has not carried out yet.
    "CREATE TABLE rollouts (
        deployment_id INTEGER PRIMARY KEY,
        service TEXT NOT NULL,
        env TEXT NOT NULL,
        phase TEXT NOT NULL,
        progress TEXT NOT NULL,
        command TEXT,
        command_by TEXT,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX rollouts_by_service ON rollouts (env, service, deployment_id);",
    // 11: the files a definition revision refers to (env files, file templates), as a
    // JSON object of path -> text, submitted with it.
    "ALTER TABLE definitions ADD COLUMN files TEXT NOT NULL DEFAULT '{}';",
    // 12: instance counts `wharf scale` set on a revision, as a JSON object of
    // "ENV/SERVICE" -> count, applied over its text.
    "ALTER TABLE definitions ADD COLUMN scale TEXT NOT NULL DEFAULT '{}';",
    // 13: machines `wharf host add` put in an SSH environment, as a JSON object of
    // ENV -> [machine], added to its text.
    "ALTER TABLE definitions ADD COLUMN ssh_hosts TEXT NOT NULL DEFAULT '{}';",
];

//! PostgreSQL's schema migrations, applied in order under an advisory lock (so
//! controllers starting together apply each once); `wharf_schema` records how many ran.
//!
//! Migration 1 is SQLite's thirteen folded into one, plus the leader lease. Text sorts
//! byte-wise (`COLLATE "C"`), as in SQLite, whatever the database's locale. Integers are
//! `BIGINT` throughout: the rows' numbers are read back as `i64`.

pub const MIGRATIONS: &[&str] = &[
    // 1: everything SQLite's migrations 1-13 made, and the lease one controller leads by.
    r#"CREATE TABLE artifacts (
        service TEXT COLLATE "C" NOT NULL,
        version TEXT COLLATE "C" NOT NULL,
        digest TEXT NOT NULL,
        size BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (service, version)
    );
    CREATE TABLE deployments (
        id BIGSERIAL PRIMARY KEY,
        service TEXT COLLATE "C" NOT NULL,
        env TEXT COLLATE "C" NOT NULL,
        kind TEXT NOT NULL,
        version TEXT NOT NULL,
        digest TEXT NOT NULL,
        config_digest TEXT NOT NULL,
        spec TEXT NOT NULL,
        "user" TEXT NOT NULL,
        started_at BIGINT NOT NULL,
        finished_at BIGINT,
        state TEXT NOT NULL,
        message TEXT NOT NULL DEFAULT '',
        config_revision BIGINT NOT NULL DEFAULT 0,
        forced BOOLEAN NOT NULL DEFAULT FALSE,
        approved_by TEXT,
        resolved_by BIGINT
    );
    CREATE INDEX deployments_by_service ON deployments (service, env, id);
    -- At most one deployment in progress per service and environment: the deploy lock.
    CREATE UNIQUE INDEX one_deploy_at_a_time ON deployments (service, env) WHERE state = 'in_progress';
    CREATE TABLE instances (
        env TEXT COLLATE "C" NOT NULL,
        service TEXT COLLATE "C" NOT NULL,
        node TEXT COLLATE "C" NOT NULL,
        instance BIGINT NOT NULL,
        version TEXT NOT NULL,
        digest TEXT NOT NULL,
        config_digest TEXT NOT NULL,
        deployment_id BIGINT NOT NULL,
        pid BIGINT,
        port BIGINT,
        state TEXT NOT NULL,
        health TEXT NOT NULL,
        restarts BIGINT NOT NULL,
        started_at BIGINT NOT NULL,
        cpu_millis BIGINT,
        memory_bytes BIGINT,
        PRIMARY KEY (env, service, node, instance)
    );
    CREATE TABLE slot_ports (
        env TEXT COLLATE "C" NOT NULL,
        service TEXT COLLATE "C" NOT NULL,
        node TEXT COLLATE "C" NOT NULL,
        instance BIGINT NOT NULL,
        port BIGINT NOT NULL UNIQUE,
        PRIMARY KEY (env, service, node, instance)
    );
    CREATE TABLE hosts (
        id BIGSERIAL PRIMARY KEY,
        name TEXT COLLATE "C" NOT NULL,
        env TEXT COLLATE "C" NOT NULL,
        labels TEXT NOT NULL,
        capacity TEXT NOT NULL,
        address TEXT NOT NULL,
        state TEXT NOT NULL,
        joined_at BIGINT NOT NULL,
        last_seen BIGINT NOT NULL,
        cert_serial BIGINT NOT NULL,
        UNIQUE (env, name)
    );
    CREATE TABLE join_tokens (
        id TEXT COLLATE "C" PRIMARY KEY,
        env TEXT NOT NULL,
        secret_hash TEXT NOT NULL,
        expires_at BIGINT NOT NULL,
        uses_left BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        created_by TEXT NOT NULL
    );
    CREATE TABLE assignments (
        env TEXT COLLATE "C" NOT NULL,
        service TEXT COLLATE "C" NOT NULL,
        node TEXT COLLATE "C" NOT NULL,
        instance BIGINT NOT NULL,
        host_id BIGINT NOT NULL,
        plan TEXT NOT NULL,
        PRIMARY KEY (env, service, node, instance)
    );
    CREATE INDEX assignments_by_host ON assignments (host_id);
    CREATE TABLE config_revisions (
        service TEXT COLLATE "C" NOT NULL,
        env TEXT COLLATE "C" NOT NULL,
        revision BIGINT NOT NULL,
        vals TEXT NOT NULL,
        "user" TEXT NOT NULL,
        at BIGINT NOT NULL,
        message TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'active',
        PRIMARY KEY (service, env, revision)
    );
    CREATE TABLE secrets (
        service TEXT COLLATE "C" NOT NULL,
        env TEXT COLLATE "C" NOT NULL,
        key TEXT COLLATE "C" NOT NULL,
        key_id TEXT NOT NULL,
        nonce BYTEA NOT NULL,
        ciphertext BYTEA NOT NULL,
        version BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        updated_by TEXT NOT NULL,
        PRIMARY KEY (service, env, key)
    );
    CREATE TABLE api_tokens (
        id TEXT COLLATE "C" PRIMARY KEY,
        name TEXT NOT NULL,
        secret_hash TEXT NOT NULL,
        scopes TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        created_by TEXT NOT NULL,
        revoked_at BIGINT
    );
    CREATE TABLE audit (
        id BIGSERIAL PRIMARY KEY,
        at BIGINT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        outcome TEXT NOT NULL
    );
    CREATE TABLE definitions (
        revision BIGINT PRIMARY KEY,
        digest TEXT NOT NULL,
        path TEXT NOT NULL,
        source TEXT NOT NULL,
        "user" TEXT NOT NULL,
        at BIGINT NOT NULL,
        message TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'active',
        files TEXT NOT NULL DEFAULT '{}',
        scale TEXT NOT NULL DEFAULT '{}',
        ssh_hosts TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE rollouts (
        deployment_id BIGINT PRIMARY KEY,
        service TEXT COLLATE "C" NOT NULL,
        env TEXT COLLATE "C" NOT NULL,
        phase TEXT NOT NULL,
        progress TEXT NOT NULL,
        command TEXT,
        command_by TEXT,
        updated_at BIGINT NOT NULL
    );
    CREATE INDEX rollouts_by_service ON rollouts (env, service, deployment_id);
    -- The one leader among the controllers sharing this database. Its expiry is judged
    -- by the database's clock, never a controller's; every write the leader makes checks
    -- its epoch in the same transaction (the fence), so a deposed leader writes nothing.
    CREATE TABLE leader_lease (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        holder TEXT NOT NULL,
        address TEXT NOT NULL,
        epoch BIGINT NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL
    );
    INSERT INTO leader_lease (id, holder, address, epoch, expires_at) VALUES (1, '', '', 0, '-infinity');
    -- Files controllers share (the certificate authority's key and certificate, sealed
    -- with the master keyring where secret) and artifact archives, by name.
    CREATE TABLE blobs (
        name TEXT COLLATE "C" PRIMARY KEY,
        data BYTEA NOT NULL
    );"#,
];

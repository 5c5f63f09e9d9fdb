//! SQLite schema migrations: versioned by `PRAGMA user_version`, append-only.
//! Never edit a released migration; add a new one.

use rusqlite::Connection;

use crate::error::{Error, Result};

/// Migrations in order; migration `i` moves the schema to version `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[
    // v1: memories, their vectors and the keyword index.
    r#"
    CREATE TABLE memories (
        rowid        INTEGER PRIMARY KEY,
        id           TEXT NOT NULL UNIQUE,
        user_id      TEXT,
        agent_id     TEXT,
        session_id   TEXT,
        kind         TEXT NOT NULL,
        content      TEXT NOT NULL,
        role         TEXT,
        name         TEXT,
        metadata     TEXT NOT NULL DEFAULT '{}',
        event_time   INTEGER,
        recorded_at  INTEGER NOT NULL,
        updated_at   INTEGER NOT NULL,
        request_id   TEXT,
        source_id    TEXT,
        chunk_index  INTEGER,
        chunk_count  INTEGER,
        content_hash TEXT NOT NULL,
        embedding_model TEXT,
        -- previous message in the same exact scope (keyword context chain)
        prev_rowid   INTEGER
    );
    CREATE INDEX memories_user ON memories(user_id) WHERE user_id IS NOT NULL;
    CREATE INDEX memories_agent ON memories(agent_id) WHERE agent_id IS NOT NULL;
    CREATE INDEX memories_session ON memories(session_id) WHERE session_id IS NOT NULL;
    CREATE INDEX memories_prev ON memories(prev_rowid) WHERE prev_rowid IS NOT NULL;
    CREATE TABLE memory_vectors (
        rowid  INTEGER PRIMARY KEY,
        model  TEXT NOT NULL,
        vector BLOB NOT NULL
    );
    CREATE VIRTUAL TABLE memory_fts USING fts5(
        body, speaker, context,
        tokenize = 'porter unicode61 remove_diacritics 2'
    );
    "#,
    // v2: whole texts of chunked inputs, and store-level settings.
    r#"
    CREATE TABLE sources (
        id         TEXT PRIMARY KEY,
        user_id    TEXT,
        agent_id   TEXT,
        session_id TEXT,
        content    TEXT NOT NULL
    );
    CREATE TABLE store_meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    "#,
    // v3: finding the last message of an exact scope (the keyword context
    // chain) without scanning the table.
    r#"
    CREATE INDEX memories_chain ON memories(user_id, agent_id, session_id, rowid)
        WHERE kind = 'message';
    "#,
    // v4: the memory lifecycle. Validity in time (versions and
    // invalidation), status (soft delete, archive), exact-duplicate keys,
    // derivation links, and the per-memory event log.
    r#"
    ALTER TABLE memories ADD COLUMN valid_from INTEGER;
    ALTER TABLE memories ADD COLUMN valid_to INTEGER;
    ALTER TABLE memories ADD COLUMN version_of TEXT;
    ALTER TABLE memories ADD COLUMN status TEXT NOT NULL DEFAULT 'active';
    ALTER TABLE memories ADD COLUMN derived_from TEXT;
    ALTER TABLE memories ADD COLUMN dedup_key TEXT;
    CREATE UNIQUE INDEX memories_dedup ON memories(dedup_key) WHERE dedup_key IS NOT NULL;
    CREATE INDEX memories_versions ON memories(version_of) WHERE version_of IS NOT NULL;
    -- Earlier versions never join a conversation chain.
    DROP INDEX memories_chain;
    CREATE INDEX memories_chain ON memories(user_id, agent_id, session_id, rowid)
        WHERE kind = 'message' AND version_of IS NULL;
    CREATE TABLE memory_events (
        seq        INTEGER PRIMARY KEY,
        memory_id  TEXT NOT NULL,
        at         INTEGER NOT NULL,
        kind       TEXT NOT NULL,
        origin     TEXT NOT NULL,
        reason     TEXT,
        request_id TEXT,
        detail     TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX memory_events_memory ON memory_events(memory_id);
    "#,
    // v5: the durable job queue (see jobs.rs).
    r#"
    CREATE TABLE jobs (
        id          INTEGER PRIMARY KEY,
        kind        TEXT NOT NULL,
        user_id     TEXT,
        agent_id    TEXT,
        session_id  TEXT,
        payload     TEXT NOT NULL,
        state       TEXT NOT NULL DEFAULT 'pending',
        attempts    INTEGER NOT NULL DEFAULT 0,
        run_after   INTEGER NOT NULL,
        lease_until INTEGER,
        step        INTEGER NOT NULL DEFAULT 0,
        plan        TEXT,
        last_error  TEXT,
        cost        TEXT NOT NULL DEFAULT '{}',
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL
    );
    CREATE INDEX jobs_ready ON jobs(state, run_after) WHERE state IN ('pending', 'running');
    "#,
    // v6: forgetting and admission. Expiry and client feedback per memory,
    // and the record of writes that were not admitted.
    r#"
    ALTER TABLE memories ADD COLUMN expires_at INTEGER;
    ALTER TABLE memories ADD COLUMN used_count INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE memories ADD COLUMN helpful_count INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE memories ADD COLUMN wrong_count INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE memories ADD COLUMN reinforced_at INTEGER;
    CREATE INDEX memories_expiry ON memories(expires_at)
        WHERE expires_at IS NOT NULL AND status = 'active';
    CREATE INDEX memories_feedback ON memories(id)
        WHERE used_count + helpful_count + wrong_count > 0;
    CREATE TABLE rejections (
        seq        INTEGER PRIMARY KEY,
        user_id    TEXT,
        agent_id   TEXT,
        session_id TEXT,
        at         INTEGER NOT NULL,
        request_id TEXT,
        kind       TEXT NOT NULL,
        content    TEXT NOT NULL,
        role       TEXT,
        name       TEXT,
        event_time INTEGER,
        admission  TEXT NOT NULL
    );
    CREATE INDEX rejections_user ON rejections(user_id, seq);
    "#,
    // v7: the hash-chained audit log (see audit.rs); its head (last seq and
    // hash) is kept in store_meta under `audit_head`.
    r#"
    CREATE TABLE audit_log (
        seq       INTEGER PRIMARY KEY,
        at        INTEGER NOT NULL,
        actor     TEXT NOT NULL,
        action    TEXT NOT NULL,
        target    TEXT NOT NULL,
        detail    TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash      TEXT NOT NULL
    );
    "#,
    // v8: why a memory was quarantined (JSON list of detector families).
    r#"
    ALTER TABLE memories ADD COLUMN flags TEXT;
    "#,
    // v9: who wrote each memory (provenance.written_by), filled for older
    // rows from the audit log's `add` entries; and read grants (sharing).
    r#"
    ALTER TABLE memories ADD COLUMN written_by TEXT;
    UPDATE memories SET written_by =
        (SELECT a.actor FROM audit_log a WHERE a.target = memories.id AND a.action = 'add'
         ORDER BY a.seq LIMIT 1);
    CREATE TABLE grants (
        id            TEXT PRIMARY KEY,
        memory_id     TEXT,
        user_id       TEXT,
        agent_id      TEXT,
        session_id    TEXT,
        grantee_user  TEXT,
        grantee_agent TEXT,
        created_at    INTEGER NOT NULL,
        created_by    TEXT NOT NULL,
        expires_at    INTEGER,
        revoked_at    INTEGER
    );
    CREATE INDEX grants_user_grantee ON grants(grantee_user) WHERE grantee_user IS NOT NULL;
    CREATE INDEX grants_agent_grantee ON grants(grantee_agent) WHERE grantee_agent IS NOT NULL;
    CREATE INDEX grants_memory ON grants(memory_id) WHERE memory_id IS NOT NULL;
    "#,
    // v10: idempotent requests (`Idempotency-Key`): `committed_at` is written
    // in the transaction of the request's first write, the answer after it.
    r#"
    CREATE TABLE requests (
        key          TEXT PRIMARY KEY,
        fingerprint  TEXT NOT NULL,
        committed_at INTEGER,
        status       INTEGER,
        answer       BLOB,
        answered_at  INTEGER,
        created_at   INTEGER NOT NULL
    );
    CREATE INDEX requests_created ON requests(created_at);
    "#,
    // v11: which attempt at an idempotent request committed, so a second
    // attempt running at the same time (another server on the same store)
    // cannot commit it again.
    r#"
    ALTER TABLE requests ADD COLUMN attempt TEXT;
    "#,
    // v12: store statistics (memories by kind, vectors by model) read small
    // indexes instead of scanning the tables (the vectors' is all blobs).
    r#"
    CREATE INDEX memories_kind ON memories(kind);
    CREATE INDEX memory_vectors_model ON memory_vectors(model);
    "#,
];

/// The schema version this code writes.
pub(crate) const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// Brings the database up to [`SCHEMA_VERSION`], each migration in its own
/// transaction. Refuses a database written by a newer version.
pub(crate) fn migrate(conn: &mut Connection) -> Result<()> {
    migrate_to(conn, SCHEMA_VERSION)
}

/// Applies migrations up to `target` (tests use this to build old files).
pub(crate) fn migrate_to(conn: &mut Connection, target: usize) -> Result<()> {
    let current: usize =
        conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))? as usize;
    if current > SCHEMA_VERSION {
        return Err(Error::new(
            crate::ErrorKind::Conflict,
            format!("database schema v{current} is newer than this hippo (v{SCHEMA_VERSION}); upgrade hippo"),
        ));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().take(target).skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "applied schema migration");
    }
    Ok(())
}

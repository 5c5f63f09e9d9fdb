//! The Postgres schema: versioned, append-only migrations (never edit a
//! released one), applied under an advisory lock so replicas starting
//! together migrate once.
//!
//! Every table has a `tenant` column and a row-level security policy that
//! shows and admits only rows of the tenant named by the transaction's
//! `hippo.tenant` setting (`FORCE`d, so the owning role is bound too): a
//! second wall behind the server's own binding of keys to tenants.
//!
//! Times are milliseconds since the epoch (`bigint`), as in the SQLite
//! store, so a memory reads back identically from both. The keyword columns
//! (`kw_*`) hold FTS5's terms of the keyword document separated by spaces
//! (see `hippo::store::document`), indexed by ParadeDB's BM25 with a
//! whitespace tokenizer: both stores index the same terms.

use postgres::Client;

use crate::pg_error;
use hippo::{Error, ErrorKind, Result};

/// Tables that carry a tenant and its row-level security policy.
pub(crate) const TENANT_TABLES: &[&str] = &[
    "memories",
    "memory_events",
    "sources",
    "jobs",
    "rejections",
    "audit_log",
    "grants",
    "requests",
    "store_meta",
    "keyword_totals",
    "keyword_terms",
];

/// Migrations in order; migration `i` moves the schema to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
    CREATE EXTENSION IF NOT EXISTS vector;
    CREATE EXTENSION IF NOT EXISTS pg_search;
    CREATE TABLE memories (
        tenant        text NOT NULL,
        seq           bigint GENERATED ALWAYS AS IDENTITY,
        id            uuid NOT NULL,
        user_id       text,
        agent_id      text,
        session_id    text,
        -- the exact scope as one value (conversation order lives within it)
        scope_key     text NOT NULL,
        kind          text NOT NULL,
        content       text NOT NULL,
        role          text,
        name          text,
        metadata      jsonb NOT NULL DEFAULT '{}',
        event_time    bigint,
        recorded_at   bigint NOT NULL,
        updated_at    bigint NOT NULL,
        request_id    uuid,
        source_id     uuid,
        chunk_index   integer,
        chunk_count   integer,
        content_hash  text NOT NULL,
        embedding_model text,
        -- the vector and the model it is of (searchable by that model's index)
        embedding     vector,
        vector_model  text,
        valid_from    bigint,
        valid_to      bigint,
        version_of    uuid,
        status        text NOT NULL DEFAULT 'active',
        derived_from  uuid[],
        dedup_key     text,
        expires_at    bigint,
        used_count    integer NOT NULL DEFAULT 0,
        helpful_count integer NOT NULL DEFAULT 0,
        wrong_count   integer NOT NULL DEFAULT 0,
        reinforced_at bigint,
        flags         jsonb,
        written_by    text,
        kw_body       text NOT NULL DEFAULT '',
        kw_speaker    text NOT NULL DEFAULT '',
        kw_context    text NOT NULL DEFAULT '',
        -- tokens in all keyword columns (FTS5's document length for BM25)
        kw_len        integer GENERATED ALWAYS AS (
            coalesce(cardinality(string_to_array(nullif(kw_body, ''), ' ')), 0)
            + coalesce(cardinality(string_to_array(nullif(kw_speaker, ''), ' ')), 0)
            + coalesce(cardinality(string_to_array(nullif(kw_context, ''), ' ')), 0)) STORED,
        PRIMARY KEY (tenant, id),
        UNIQUE (seq)
    );
    CREATE INDEX memories_order ON memories (tenant, seq);
    CREATE INDEX memories_user ON memories (tenant, user_id, seq);
    CREATE INDEX memories_agent ON memories (tenant, agent_id, seq) WHERE agent_id IS NOT NULL;
    CREATE INDEX memories_session ON memories (tenant, session_id, seq) WHERE session_id IS NOT NULL;
    CREATE INDEX memories_chain ON memories (tenant, scope_key, seq)
        WHERE kind = 'message' AND version_of IS NULL;
    CREATE UNIQUE INDEX memories_dedup ON memories (tenant, dedup_key) WHERE dedup_key IS NOT NULL;
    CREATE INDEX memories_versions ON memories (tenant, version_of) WHERE version_of IS NOT NULL;
    CREATE INDEX memories_source ON memories (tenant, source_id) WHERE source_id IS NOT NULL;
    CREATE INDEX memories_expiry ON memories (tenant, expires_at)
        WHERE expires_at IS NOT NULL AND status = 'active';
    CREATE INDEX memories_derived ON memories USING gin (derived_from) WHERE derived_from IS NOT NULL;
    CREATE INDEX memories_feedback ON memories (tenant, id)
        WHERE used_count + helpful_count + wrong_count > 0;
    -- Scope, kind, status and validity are indexed too, so the filters of a
    -- search run inside the BM25 index instead of on every matching row.
    CREATE INDEX memories_keywords ON memories USING bm25 (
        seq,
        (kw_body::pdb.whitespace),
        (kw_speaker::pdb.whitespace),
        (kw_context::pdb.whitespace),
        (tenant::pdb.literal),
        (user_id::pdb.literal),
        (agent_id::pdb.literal),
        (session_id::pdb.literal),
        (kind::pdb.literal),
        (status::pdb.literal),
        valid_from,
        valid_to,
        event_time,
        expires_at
    ) WITH (key_field = 'seq');

    -- Per tenant: keyword documents and their tokens (BM25's N and mean
    -- length), and the documents holding each term (its document frequency),
    -- kept by a trigger in the transaction of every change: FTS5's BM25 is
    -- computed from these, so scores are the SQLite store's.
    CREATE TABLE keyword_totals (
        tenant text PRIMARY KEY,
        docs   bigint NOT NULL DEFAULT 0,
        tokens bigint NOT NULL DEFAULT 0
    );
    CREATE TABLE keyword_terms (
        tenant text NOT NULL,
        term   text NOT NULL,
        docs   bigint NOT NULL,
        PRIMARY KEY (tenant, term)
    );
    CREATE FUNCTION hippo_keyword_terms(body text, speaker text, context text) RETURNS text[]
    LANGUAGE sql IMMUTABLE AS $fn$
        SELECT coalesce(array_agg(DISTINCT t), '{}')
        FROM unnest(string_to_array(body || ' ' || speaker || ' ' || context, ' ')) t WHERE t <> ''
    $fn$;
    CREATE FUNCTION hippo_keyword_stats() RETURNS trigger LANGUAGE plpgsql AS $fn$
    DECLARE
        old_terms text[] := '{}';
        new_terms text[] := '{}';
    BEGIN
        IF TG_OP IN ('UPDATE', 'DELETE') THEN
            UPDATE keyword_totals SET docs = docs - 1, tokens = tokens - OLD.kw_len
            WHERE tenant = OLD.tenant;
            old_terms := hippo_keyword_terms(OLD.kw_body, OLD.kw_speaker, OLD.kw_context);
        END IF;
        IF TG_OP IN ('INSERT', 'UPDATE') THEN
            INSERT INTO keyword_totals (tenant, docs, tokens) VALUES (NEW.tenant, 1, NEW.kw_len)
            ON CONFLICT (tenant) DO UPDATE
                SET docs = keyword_totals.docs + 1, tokens = keyword_totals.tokens + excluded.tokens;
            new_terms := hippo_keyword_terms(NEW.kw_body, NEW.kw_speaker, NEW.kw_context);
        END IF;
        IF TG_OP = 'DELETE' OR cardinality(old_terms) > 0 THEN
            UPDATE keyword_terms SET docs = docs - 1
            WHERE tenant = OLD.tenant AND term = ANY (old_terms) AND NOT (term = ANY (new_terms));
        END IF;
        IF cardinality(new_terms) > 0 THEN
            INSERT INTO keyword_terms (tenant, term, docs)
            SELECT NEW.tenant, t, 1 FROM unnest(new_terms) t WHERE NOT (t = ANY (old_terms))
            ON CONFLICT (tenant, term) DO UPDATE SET docs = keyword_terms.docs + 1;
        END IF;
        RETURN NULL;
    END
    $fn$;
    CREATE TRIGGER memories_keyword_stats
        AFTER INSERT OR DELETE OR UPDATE OF kw_body, kw_speaker, kw_context ON memories
        FOR EACH ROW EXECUTE FUNCTION hippo_keyword_stats();

    CREATE TABLE memory_events (
        tenant     text NOT NULL,
        seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        memory_id  uuid NOT NULL,
        at         bigint NOT NULL,
        kind       text NOT NULL,
        origin     text NOT NULL,
        reason     text,
        request_id uuid,
        detail     text NOT NULL DEFAULT '{}'
    );
    CREATE INDEX memory_events_memory ON memory_events (tenant, memory_id, seq);

    CREATE TABLE sources (
        tenant     text NOT NULL,
        id         uuid NOT NULL,
        user_id    text,
        agent_id   text,
        session_id text,
        content    text NOT NULL,
        PRIMARY KEY (tenant, id)
    );

    CREATE TABLE jobs (
        tenant      text NOT NULL,
        id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        kind        text NOT NULL,
        user_id     text,
        agent_id    text,
        session_id  text,
        payload     text NOT NULL,
        state       text NOT NULL DEFAULT 'pending',
        attempts    integer NOT NULL DEFAULT 0,
        run_after   bigint NOT NULL,
        lease_until bigint,
        step        integer NOT NULL DEFAULT 0,
        plan        text,
        last_error  text,
        cost        text NOT NULL DEFAULT '{}',
        created_at  bigint NOT NULL,
        updated_at  bigint NOT NULL
    );
    CREATE INDEX jobs_ready ON jobs (tenant, id) WHERE state IN ('pending', 'running');

    CREATE TABLE rejections (
        tenant     text NOT NULL,
        seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        user_id    text,
        agent_id   text,
        session_id text,
        at         bigint NOT NULL,
        request_id uuid,
        kind       text NOT NULL,
        content    text NOT NULL,
        role       text,
        name       text,
        event_time bigint,
        admission  text NOT NULL
    );
    CREATE INDEX rejections_order ON rejections (tenant, seq);

    CREATE TABLE audit_log (
        tenant    text NOT NULL,
        seq       bigint NOT NULL,
        at        bigint NOT NULL,
        actor     text NOT NULL,
        action    text NOT NULL,
        target    text NOT NULL,
        detail    text NOT NULL,
        prev_hash text NOT NULL,
        hash      text NOT NULL,
        PRIMARY KEY (tenant, seq)
    );

    CREATE TABLE grants (
        tenant        text NOT NULL,
        id            uuid NOT NULL,
        memory_id     uuid,
        user_id       text,
        agent_id      text,
        session_id    text,
        grantee_user  text,
        grantee_agent text,
        created_at    bigint NOT NULL,
        created_by    text NOT NULL,
        expires_at    bigint,
        revoked_at    bigint,
        PRIMARY KEY (tenant, id)
    );

    CREATE TABLE requests (
        tenant       text NOT NULL,
        key          text NOT NULL,
        fingerprint  text NOT NULL,
        committed_at bigint,
        status       integer,
        answer       bytea,
        answered_at  bigint,
        created_at   bigint NOT NULL,
        PRIMARY KEY (tenant, key)
    );
    CREATE INDEX requests_created ON requests (tenant, created_at);

    CREATE TABLE store_meta (
        tenant text NOT NULL,
        key    text NOT NULL,
        value  text NOT NULL,
        PRIMARY KEY (tenant, key)
    );
    "#,
    // 2: the control plane (tenants, API keys), shared by every replica.
    // Not tenant rows: a key is read before its tenant is known. Its audit
    // chain lives in `audit_log` under the reserved tenant `*control`.
    r#"
    CREATE TABLE control_tenants (
        id         text PRIMARY KEY,
        created_at bigint NOT NULL
    );
    CREATE TABLE control_keys (
        id          text PRIMARY KEY,
        tenant      text NOT NULL,
        access      text NOT NULL,
        name        text,
        secret_hash text NOT NULL,
        created_at  bigint NOT NULL,
        expires_at  bigint,
        revoked_at  bigint,
        user_id     text,
        agent_id    text
    );
    CREATE INDEX control_keys_tenant ON control_keys (tenant);
    CREATE TABLE control_meta (
        key   text PRIMARY KEY,
        value text NOT NULL
    );
    "#,
    // 3: which attempt at an idempotent request committed, so a second
    // attempt running at the same time on another replica cannot commit it
    // again.
    r#"
    ALTER TABLE requests ADD COLUMN attempt text;
    "#,
    // 4: the BM25 index merges its segments down toward one. pg_search's
    // default target (one per CPU, at least four) caps background merges at
    // a fraction of the index's size, so an index written a row at a time
    // kept every 1,000-row segment it was written in, and each query paid
    // ~1 ms per segment (20 ms at 20k rows, growing with the table).
    r#"
    ALTER INDEX memories_keywords SET (target_segment_count = 1, mutable_segment_rows = 100);
    "#,
    // 5: a bulk copy inserts a page of rows with the keyword-statistics
    // trigger off for inserts (`hippo.defer_keyword_stats`, transaction-local)
    // and counts them in one statement after (`COUNT_KEYWORD_STATS`). The
    // trigger is split so only the insert one has that condition.
    r#"
    DROP TRIGGER memories_keyword_stats ON memories;
    CREATE TRIGGER memories_keyword_stats_insert
        AFTER INSERT ON memories FOR EACH ROW
        WHEN (current_setting('hippo.defer_keyword_stats', true) IS DISTINCT FROM 'on')
        EXECUTE FUNCTION hippo_keyword_stats();
    CREATE TRIGGER memories_keyword_stats
        AFTER DELETE OR UPDATE OF kw_body, kw_speaker, kw_context ON memories
        FOR EACH ROW EXECUTE FUNCTION hippo_keyword_stats();
    "#,
    // 6: vectors stay in their row (pgvector's default storage moves them
    // to TOAST once a row passes 2 kB, which a 384-dimension vector alone
    // nearly is): an exact search of a small scope reads each vector with
    // its row instead of through the TOAST index and a second page. Rows
    // written before keep their out-of-line vectors until rewritten.
    r#"
    ALTER TABLE memories ALTER COLUMN embedding SET STORAGE MAIN;
    "#,
];

/// The schema version this code writes.
pub(crate) const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Key of the advisory lock held while migrating.
const MIGRATION_LOCK: i64 = 0x6869_7070_6f00_0001;

/// Brings the database up to [`SCHEMA_VERSION`], each migration in its own
/// transaction, with the row-level security policies. Refuses a database
/// written by a newer version.
pub(crate) fn migrate(client: &mut Client) -> Result<()> {
    let mut tx = client.transaction().map_err(pg_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(pg_error)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS hippo_schema (version integer NOT NULL)")
        .map_err(pg_error)?;
    let current: i32 = tx
        .query_opt("SELECT version FROM hippo_schema", &[])
        .map_err(pg_error)?
        .map_or(0, |r| r.get(0));
    if current > SCHEMA_VERSION {
        return Err(Error::new(
            ErrorKind::Conflict,
            format!("database schema v{current} is newer than this hippo (v{SCHEMA_VERSION}); upgrade hippo"),
        ));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.batch_execute(sql).map_err(pg_error)?;
        tracing::info!(version = i + 1, "applied Postgres schema migration");
    }
    if current < SCHEMA_VERSION {
        for table in TENANT_TABLES {
            tx.batch_execute(&format!(
                "ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
                 ALTER TABLE {table} FORCE ROW LEVEL SECURITY;
                 DROP POLICY IF EXISTS tenant_rows ON {table};
                 CREATE POLICY tenant_rows ON {table}
                     USING (tenant = current_setting('hippo.tenant', true))
                     WITH CHECK (tenant = current_setting('hippo.tenant', true));"
            ))
            .map_err(pg_error)?;
        }
        tx.execute("DELETE FROM hippo_schema", &[])
            .map_err(pg_error)?;
        tx.execute(
            "INSERT INTO hippo_schema (version) VALUES ($1)",
            &[&SCHEMA_VERSION],
        )
        .map_err(pg_error)?;
    }
    tx.commit().map_err(pg_error)?;
    Ok(())
}

/// The partial HNSW index (cosine) of one embedding model's vectors: one
/// per model, since an index needs a fixed dimension.
pub(crate) fn ensure_vector_index(client: &mut Client, model: &str, dim: usize) -> Result<()> {
    let name = vector_index_name(model);
    let model_literal = model.replace('\'', "''");
    let mut tx = client.transaction().map_err(pg_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(pg_error)?;
    // Building over existing rows (after a bulk load) keeps the graph in
    // memory while it fits: pgvector's build slows many times once the
    // graph outgrows maintenance_work_mem (~2.5 kB a 384-d vector). It
    // takes minutes at a million rows: no statement timeout.
    tx.batch_execute(&format!(
        "SET LOCAL maintenance_work_mem = '{VECTOR_BUILD_MEMORY}';
         SET LOCAL statement_timeout = 0;
         CREATE INDEX IF NOT EXISTS {name} ON memories
         USING hnsw ((embedding::vector({dim})) vector_cosine_ops)
         WITH (m = 16, ef_construction = 64)
         WHERE vector_model = '{model_literal}'"
    ))
    .map_err(pg_error)?;
    tx.commit().map_err(pg_error)?;
    Ok(())
}

/// maintenance_work_mem of a vector index build: a million 384-d vectors.
const VECTOR_BUILD_MEMORY: &str = "3GB";

/// Drops the vector index of `model` if it has never held a vector (still
/// its empty size: a metapage and an entry page), for a bulk load to build
/// it after. Row-level security hides other tenants' rows, so emptiness is
/// read from the index's size, which no tenant's rows can hide; a size over
/// that (even after deletes) keeps the index. Returns whether it dropped.
pub(crate) fn drop_empty_vector_index(client: &mut Client, model: &str) -> Result<bool> {
    let name = vector_index_name(model);
    let mut tx = client.transaction().map_err(pg_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(pg_error)?;
    let empty: Option<bool> = tx
        .query_one(
            "SELECT pg_relation_size(to_regclass($1)) <= 2 * current_setting('block_size')::bigint",
            &[&name],
        )
        .map_err(pg_error)?
        .get(0);
    if empty != Some(true) {
        return Ok(false);
    }
    tx.batch_execute(&format!("DROP INDEX {name}"))
        .map_err(pg_error)?;
    tx.commit().map_err(pg_error)?;
    Ok(true)
}

/// Segments of the keyword index above which the maintenance pass rebuilds
/// it. Measured at 100k rows: 27 segments 10.5 ms a query, 20 segments
/// 6 ms, one 0.9 ms; a rebuild took 1.2 s (about 12 µs a row).
pub(crate) const MAX_KEYWORD_SEGMENTS: i64 = 12;

/// Key of the session advisory lock held while rebuilding the keyword index.
const KEYWORD_REBUILD_LOCK: i64 = 0x6869_7070_6f00_0002;

/// Rebuilds the BM25 index when it has more than `above` segments, without
/// blocking writes (`REINDEX … CONCURRENTLY`). pg_search merges segments
/// only up to a fraction of the index's size, so an index written a few
/// rows at a time keeps many, and each costs every query. One process
/// rebuilds at a time; another finding the lock taken skips. True when it
/// rebuilt.
pub(crate) fn rebuild_keyword_index(client: &mut Client, above: i64) -> Result<bool> {
    let segments: i64 = client
        .query_one(
            "SELECT count(*) FROM paradedb.index_info('memories_keywords')",
            &[],
        )
        .map_err(pg_error)?
        .get(0);
    if segments <= above {
        return Ok(false);
    }
    let locked: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&KEYWORD_REBUILD_LOCK])
        .map_err(pg_error)?
        .get(0);
    if !locked {
        return Ok(false);
    }
    // The rebuild takes ~12 µs a row: past the statement timeout at a few
    // million rows. A failed concurrent rebuild leaves an invalid copy
    // (`_ccnew`) behind; it is dropped so the next attempt starts clean.
    // (One statement a call: a query string of several runs as one
    // transaction, where a concurrent rebuild cannot run.)
    let rebuilt = client
        .batch_execute("SET statement_timeout = 0")
        .and_then(|()| client.batch_execute("REINDEX INDEX CONCURRENTLY memories_keywords"));
    let cleanup = client
        .batch_execute("RESET statement_timeout")
        .and_then(|()| client.batch_execute("DROP INDEX IF EXISTS memories_keywords_ccnew"));
    let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&KEYWORD_REBUILD_LOCK]);
    rebuilt.map_err(pg_error)?;
    cleanup.map_err(pg_error)?;
    unlocked.map_err(pg_error)?;
    Ok(true)
}

/// A stable index name for a model (its hash: model names hold any characters).
fn vector_index_name(model: &str) -> String {
    use std::hash::{Hash, Hasher};
    // FNV-1a: stable across builds, unlike std's default hasher.
    struct Fnv(u64);
    impl Hasher for Fnv {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, bytes: &[u8]) {
            for b in bytes {
                self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    model.hash(&mut h);
    format!("memories_vectors_{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    #[test]
    fn vector_index_names_are_stable_and_distinct() {
        let a = super::vector_index_name("all-MiniLM-L6-v2");
        assert_eq!(a, super::vector_index_name("all-MiniLM-L6-v2"));
        assert_ne!(a, super::vector_index_name("other"));
        assert!(a.len() < 63);
    }
}

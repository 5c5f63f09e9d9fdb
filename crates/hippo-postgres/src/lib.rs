//! Hippo's PostgreSQL store: many tenants and many `hippo serve` replicas on
//! one database.
//!
//! - [`PgDatabase`]: the connection pool (with a statement timeout) and the
//!   schema, shared by every tenant's store in a process.
//! - [`PostgresStore`]: one tenant's view, implementing [`hippo::Store`].
//!
//! Channels run in Postgres: vectors with pgvector (a partial HNSW index per
//! embedding model, cosine, iterative index scans so a small scope inside a
//! large table still gets its top k), keywords with ParadeDB's BM25 index
//! (`pg_search`) over the same FTS5 terms the SQLite store indexes.
//!
//! Keyword scores are FTS5's, not tantivy's: ParadeDB's own BM25 weighs a
//! term by its frequency across every tenant and scores columns apart, and
//! on LoCoMo dev its top 10 found 0.493 of the evidence turns where FTS5's
//! found 0.593 (a speaker's name, in most rows of a conversation, weighs
//! nothing in FTS5 and much in tantivy). So the index only picks a pool of
//! candidates (three times the limit, ranked with FTS5's term weights), and
//! the pool is rescored with FTS5's formula (`hippo::store::keywords::bm25`)
//! from the tenant's document count, mean length and term document counts
//! (`keyword_totals`, `keyword_terms`, kept by a trigger). The channels then
//! agree: top-10 overlap 0.986, evidence 0.593 on both
//! (`tests/keyword_agreement.rs`).
//!
//! Invariants:
//! - every statement runs in a transaction whose `hippo.tenant` setting is
//!   the store's tenant, and row-level security shows and admits only that
//!   tenant's rows (a second wall behind the server's binding);
//! - writes of one tenant are serialized by a transaction-scoped advisory
//!   lock on the tenant (as SQLite serializes writes to one file), so the
//!   audit chain and conversation order stay linear across replicas; reads
//!   never wait for it, and tenants never wait for each other;
//! - a write is one transaction: a memory's row, keyword terms and vector
//!   are all present or all absent, and committed before it is acknowledged;
//! - jobs are claimed with `FOR UPDATE SKIP LOCKED` and a lease, so each
//!   is run by one worker at a time whatever the number of replicas.

mod conn;
mod control;
mod rows;
mod schema;
mod store;
mod transfer;

use std::sync::Arc;
use std::time::Duration;

use postgres::error::SqlState;

use hippo::store::document::Tokenizer;
use hippo::{Error, ErrorKind, Result};

pub use control::{KeyRecord, PgControl, CONTROL_TENANT};
pub use store::PostgresStore;

/// Connection settings of a [`PgDatabase`].
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// `postgres://user[:password]@host[:port]/database[?…]`.
    pub url: String,
    /// Most connections this process holds.
    pub pool_size: u32,
    /// Longest a statement may run before Postgres cancels it (and the
    /// operation fails as unavailable, changing nothing).
    pub statement_timeout: Duration,
    /// Longest to wait for a free connection.
    pub connect_timeout: Duration,
    /// Scopes (a user, agent or session) of at most this many memories are
    /// searched by reading their rows instead of through the table's BM25
    /// and HNSW indexes, which at a million rows cost several times more for
    /// a scope of a thousand (the vector channel only where its cost model
    /// says so; see `store.rs`). 0 searches every scope through the indexes.
    pub exact_scope_rows: usize,
}

impl PgOptions {
    /// Defaults for `url`: 16 connections, 30 s statement timeout, 10 s
    /// to get a connection, scopes of up to 2,000 memories searched exactly.
    pub fn new(url: impl Into<String>) -> Self {
        PgOptions {
            url: url.into(),
            pool_size: 16,
            statement_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            exact_scope_rows: 2000,
        }
    }
}

/// A Postgres database holding Hippo's tables: the pool and the tokenizer
/// every tenant's [`PostgresStore`] in this process shares.
pub struct PgDatabase {
    pool: r2d2::Pool<conn::Manager>,
    tokenizer: Tokenizer,
    /// Models (with dimension) whose vector index this process has made
    /// sure of: once each, not once per tenant opened.
    indexed: std::sync::Mutex<std::collections::HashSet<(String, usize)>>,
    /// [`PgOptions::exact_scope_rows`].
    exact_scope_rows: i64,
}

impl std::fmt::Debug for PgDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgDatabase").finish_non_exhaustive()
    }
}

/// Whether `s` names a Postgres store (a `postgres://` or `postgresql://` URL).
pub fn is_postgres_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

impl PgDatabase {
    /// Connects, and creates or migrates the schema.
    pub fn connect(options: &PgOptions) -> Result<Arc<Self>> {
        let mut config: postgres::Config = options
            .url
            .parse()
            .map_err(|e| Error::invalid(format!("invalid Postgres URL: {e}")))?;
        // No parallel workers: starting them costs more than the short
        // statements of a memory server gain. Prepared statements keep one
        // generic plan from their first run (planning costs as much as the
        // run); the BM25 queries plan each time (see `conn::Tx::query_planned`).
        config.options(&format!(
            "-c statement_timeout={} -c max_parallel_workers_per_gather=0 -c plan_cache_mode=force_generic_plan",
            options.statement_timeout.as_millis()
        ));
        config.application_name("hippo");
        config.connect_timeout(options.connect_timeout);
        let manager = conn::Manager { config };
        let pool = r2d2::Pool::builder()
            .max_size(options.pool_size.max(1))
            .min_idle(Some(1))
            .connection_timeout(options.connect_timeout)
            .build(manager)
            .map_err(|e| Error::unavailable(format!("cannot connect to Postgres: {e}"), e))?;
        let db = PgDatabase {
            pool,
            tokenizer: Tokenizer::new(4)?,
            indexed: Default::default(),
            exact_scope_rows: options.exact_scope_rows.min(1 << 40) as i64,
        };
        schema::migrate(&mut db.connection()?.client)?;
        Ok(Arc::new(db))
    }

    /// A pooled connection.
    fn connection(&self) -> Result<r2d2::PooledConnection<conn::Manager>> {
        self.pool
            .get()
            .map_err(|e| Error::unavailable(format!("no Postgres connection: {e}"), e))
    }

    /// The store of `tenant`, searching vectors of `model` (of `dimension`).
    pub fn store(
        self: &Arc<Self>,
        tenant: &str,
        model: &str,
        dimension: usize,
    ) -> Result<PostgresStore> {
        if tenant.is_empty() {
            return Err(Error::invalid("a tenant name is required"));
        }
        if dimension == 0 || dimension > 16_000 {
            return Err(Error::invalid("vector dimension must be 1..=16000"));
        }
        self.ensure_indexed(model, dimension)?;
        Ok(PostgresStore::new(self.clone(), tenant, model, dimension))
    }

    /// Creates the vector index of `model` if this process has not yet.
    fn ensure_indexed(&self, model: &str, dimension: usize) -> Result<()> {
        let key = (model.to_owned(), dimension);
        let mut indexed = self.indexed.lock().unwrap_or_else(|e| e.into_inner());
        if !indexed.contains(&key) {
            schema::ensure_vector_index(&mut self.connection()?.client, model, dimension)?;
            indexed.insert(key);
        }
        Ok(())
    }
}

impl PgDatabase {
    /// Runs a bulk load `f` (`hippo migrate`, `hippo scale load`), then
    /// rebuilds the keyword index in one segment. When the vector index of
    /// `model` has never held a vector (so no search can be slowed by its
    /// absence), it is dropped for the load and built once after it, whether
    /// `f` succeeds or fails: an HNSW insert costs ~2 ms a row here, a build
    /// ~0.2 ms. A load killed before the build leaves nothing wrong: the
    /// next process to open a store creates the missing index.
    pub fn bulk_load<T, E: From<Error>>(
        &self,
        model: &str,
        dimension: usize,
        f: impl FnOnce() -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        self.ensure_indexed(model, dimension)?;
        let dropped = schema::drop_empty_vector_index(&mut self.connection()?.client, model)?;
        let loaded = f();
        let mut conn = self.connection()?;
        if dropped {
            schema::ensure_vector_index(&mut conn.client, model, dimension)?;
        }
        // The load's keyword segments merged into one (see `optimize_indexes`).
        schema::rebuild_keyword_index(&mut conn.client, 1)?;
        loaded
    }

    /// Bytes on disk of Hippo's tables with their indexes and TOAST, every
    /// tenant together (row-level security does not split files).
    pub fn disk_bytes(&self) -> Result<u64> {
        let mut conn = self.connection()?;
        let mut total: i64 = 0;
        for table in schema::TENANT_TABLES {
            let row = conn
                .client
                .query_one(
                    "SELECT pg_total_relation_size($1::text::regclass)",
                    &[table],
                )
                .map_err(pg_error)?;
            total += row.get::<_, i64>(0);
        }
        Ok(total as u64)
    }
}

/// Attempts of a transaction that failed to serialize or deadlocked.
const TX_ATTEMPTS: usize = 4;

impl PgDatabase {
    /// Runs `f` in a transaction bound to `tenant` (its `hippo.tenant`
    /// setting, which row-level security reads); a `write` first takes the
    /// tenant's write lock. Retried when it fails to serialize.
    pub(crate) fn run<T>(
        &self,
        tenant: &str,
        write: bool,
        mut f: impl FnMut(&mut conn::Tx<'_>) -> store::TxResult<T>,
    ) -> Result<T> {
        let mut conn = self.connection()?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = (|| -> store::TxResult<T> {
                let mut tx = conn.transaction()?;
                bind_tenant(&mut tx, tenant, write)?;
                let out = f(&mut tx)?;
                tx.commit()?;
                Ok(out)
            })();
            match result {
                Ok(v) => return Ok(v),
                Err(store::Fail::Pg(e)) if retryable(&e) && attempt < TX_ATTEMPTS => {
                    tracing::debug!(error = %e, attempt, "retrying a Postgres transaction");
                }
                Err(store::Fail::Pg(e)) => return Err(pg_error(e)),
                Err(store::Fail::Engine(e)) => return Err(e),
            }
        }
    }
}

/// Binds the rest of transaction `tx` to `tenant`: sets `hippo.tenant`
/// (read by row-level security) and, for a write, takes the tenant's write
/// lock.
pub(crate) fn bind_tenant(
    tx: &mut conn::Tx<'_>,
    tenant: &str,
    write: bool,
) -> std::result::Result<(), postgres::Error> {
    tx.execute("SELECT set_config('hippo.tenant', $1, true)", &[&tenant])?;
    if write {
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 7411))",
            &[&tenant],
        )?;
    }
    Ok(())
}

/// A Postgres error as the engine's: constraint and serialization failures
/// are conflicts, lost connections and timeouts are "unavailable" (retrying
/// may help), anything else is a bug.
pub(crate) fn pg_error(e: postgres::Error) -> Error {
    let Some(db) = e.as_db_error() else {
        // No SQL state: the connection failed or closed, or (a bug) a value
        // did not convert.
        let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
        if e.is_closed() || io {
            return Error::unavailable(format!("Postgres unavailable: {e}"), e);
        }
        tracing::error!(error = ?e, "Postgres client error");
        return Error::new(ErrorKind::Internal, format!("Postgres client: {e:?}"));
    };
    let code = db.code().clone();
    let message = db.message().to_owned();
    if code == SqlState::UNIQUE_VIOLATION {
        return Error::new(ErrorKind::Conflict, "already exists");
    }
    match &code.code()[..2] {
        // Serialization failure, deadlock; connection; resources; operator
        // intervention (statement timeout, shutdown).
        "40" | "08" | "53" | "57" => {
            Error::unavailable(format!("Postgres unavailable: {message}"), e)
        }
        _ => {
            tracing::error!(error = %message, code = code.code(), "Postgres statement failed");
            Error::new(ErrorKind::Internal, format!("Postgres: {message}"))
        }
    }
}

/// Whether `e` is worth running the transaction again for.
pub(crate) fn retryable(e: &postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

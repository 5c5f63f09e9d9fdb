//! The storage boundary. A [`Store`] keeps memories durably and answers
//! per-channel candidate queries (keyword, vector) with raw scores; ranking
//! and fusion live above it (in `retrieve`), so a query ranks the same on
//! every store. [`SqliteStore`] is the default; the Postgres store (crate
//! `hippo-postgres`) follows the same contract, checked by the `conformance`
//! suite (feature `conformance`). The keyword document both index is built
//! by [`document`].
//!
//! Invariants every store keeps:
//! - a write is atomic: a memory's row, keyword entry and vector are all
//!   present or all absent, and an acknowledged write survives a crash;
//! - candidate queries never return a memory outside the query's scope or
//!   failing its filter;
//! - the keyword document of a message includes the text of its neighbours
//!   (previous and next message in the same exact scope), and stays correct
//!   when neighbours are updated or deleted.

mod chain;
pub mod document;
mod fts;
pub mod keywords;
mod schema;
pub mod slots;
pub mod sqlite;
pub mod transfer;
pub mod vectors;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

pub use sqlite::{SqliteStore, SqliteStoreOptions};

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::Result;
use crate::jobs::{Job, JobCounts, JobStep, JobUpdate, NewJob};
use crate::model::{Filter, Memory, MemoryEvent, MemoryId, MemoryKind, Scope, Usage};
use crate::policy::Rejection;

/// A memory to insert, with its vector (of the store's active model) if any.
#[derive(Debug, Clone)]
pub struct NewMemory {
    /// The complete memory (id and timestamps already assigned).
    pub memory: Memory,
    /// Its unit vector, if the memory is to be vector-searchable.
    pub vector: Option<Vec<f32>>,
}

/// The whole text of an input that was split into chunks.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Source {
    /// Id referenced by the chunks' `provenance.source_id`.
    pub id: MemoryId,
    /// Owner (the same as its chunks').
    #[serde(flatten)]
    pub scope: Scope,
    /// Full text.
    pub content: String,
}

/// One atomic write.
#[derive(Debug, Clone, Default)]
pub struct InsertBatch {
    /// Memories in write order (message neighbours follow this order). A
    /// memory whose `dedup_key` is already taken is not stored: the store
    /// reports it as a duplicate and logs a `merged` event on the memory
    /// holding the key.
    pub memories: Vec<NewMemory>,
    /// Sources referenced by chunks in `memories`.
    pub sources: Vec<Source>,
    /// Jobs to enqueue with the write (e.g. extraction from these
    /// messages): durable exactly when the write is.
    pub jobs: Vec<NewJob>,
    /// When the write is a step of a job (see [`JobStep`]).
    pub job_step: Option<JobStep>,
    /// Log entries to write with it (e.g. near duplicates merged into
    /// stored memories).
    pub events: Vec<MemoryEvent>,
    /// Writes that were not admitted, recorded with it.
    pub rejections: Vec<Rejection>,
}

/// What an insert did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InsertOutcome {
    /// `(position in the batch, id of the memory holding its dedup key)` for
    /// each memory that was not stored because it duplicates one.
    pub duplicates: Vec<(usize, MemoryId)>,
}

/// One atomic change of a stored memory.
#[derive(Debug, Clone)]
pub struct Update {
    /// The memory's new state (all fields but `id`, `scope` and
    /// `recorded_at` may change).
    pub memory: Memory,
    /// Its new vector; `None` keeps the stored one.
    pub vector: Option<Vec<f32>>,
    /// The state it replaces, kept as an earlier version: a new row (its own
    /// id, `version_of` = the memory's id, `valid_to` set) that gets the
    /// stored vector. `None` for changes that keep no version (status,
    /// maintenance).
    pub previous: Option<Memory>,
    /// Log entries for the change.
    pub events: Vec<MemoryEvent>,
    /// When the change is a step of a job (see [`JobStep`]).
    pub job_step: Option<JobStep>,
    /// Jobs to enqueue with the change (e.g. rebuilding digests that quote
    /// it): durable exactly when the change is.
    pub jobs: Vec<NewJob>,
    /// The stored state this change was computed from. When set, the store
    /// applies the change only if the memory is still in that state (same
    /// `updated_at`, content, status, validity, expiry and feedback counts)
    /// and otherwise fails with [`crate::Error::concurrent_change`], changing
    /// nothing: another process changed it in between (replicas sharing a
    /// store; the CLI beside a server). The caller reads again and retries.
    pub expected: Option<Box<Memory>>,
}

/// Whether `stored` is still the state `expected` (see [`Update::expected`]).
pub fn unchanged_since(expected: &Memory, stored: &Memory) -> bool {
    expected.updated_at == stored.updated_at
        && expected.content_hash == stored.content_hash
        && expected.status == stored.status
        && expected.valid_from == stored.valid_from
        && expected.valid_to == stored.valid_to
        && expected.expires_at == stored.expires_at
        && expected.usage == stored.usage
}

impl Update {
    /// A change that keeps no earlier version and logs nothing: for
    /// maintenance such as re-embedding.
    pub fn in_place(memory: Memory, vector: Option<Vec<f32>>) -> Self {
        Update {
            memory,
            vector,
            previous: None,
            events: Vec::new(),
            job_step: None,
            jobs: Vec::new(),
            expected: None,
        }
    }

    /// [`Update::in_place`] applied only if the memory is still in state
    /// `read` (see [`Update::expected`]).
    pub fn in_place_of(read: &Memory, memory: Memory, vector: Option<Vec<f32>>) -> Self {
        Update {
            expected: Some(Box::new(read.clone())),
            ..Update::in_place(memory, vector)
        }
    }
}

/// The SQL conditions of a filter's kinds, event times, statuses, expiry and
/// validity (on alias `m`, times in milliseconds), each with at most one `?`
/// and its value: every SQL store binds them in its own placeholder style,
/// so all select the same memories. Metadata conditions are the stores' own
/// (their JSON functions differ).
pub fn filter_conditions(filter: &Filter) -> Vec<(String, Option<i64>)> {
    use crate::model::Status;
    let ms = |t: DateTime<Utc>| Some(t.timestamp_millis());
    let mut out: Vec<(String, Option<i64>)> = Vec::new();
    if !filter.kinds.is_empty() {
        let list: Vec<String> = filter
            .kinds
            .iter()
            .map(|k| format!("'{}'", k.as_str()))
            .collect();
        out.push((format!("m.kind IN ({})", list.join(",")), None));
    }
    if let Some(t) = filter.event_time_from {
        out.push(("m.event_time >= ?".into(), ms(t)));
    }
    if let Some(t) = filter.event_time_to {
        out.push(("m.event_time < ?".into(), ms(t)));
    }
    let statuses: Vec<String> = Status::ALL
        .into_iter()
        .filter(|s| filter.accepts_status(*s))
        .map(|s| format!("'{}'", s.as_str()))
        .collect();
    let statuses = format!("m.status IN ({})", statuses.join(","));
    match filter.now {
        // An active memory whose expiry passed counts as archived from
        // that instant (see `Filter::accepts_expiry`).
        Some(now)
            if filter.as_of.is_none()
                && filter.accepts_status(Status::Archived)
                && !filter.accepts_status(Status::Active) =>
        {
            out.push((
                format!(
                    "({statuses} OR (m.status = 'active' AND m.expires_at IS NOT NULL AND m.expires_at <= ?))"
                ),
                ms(now),
            ));
        }
        _ => out.push((statuses, None)),
    }
    if filter.all_versions {
    } else if let Some(t) = filter.as_of {
        out.push((
            "coalesce(m.valid_from, m.event_time, m.recorded_at) <= ?".into(),
            ms(t),
        ));
        out.push(("(m.valid_to IS NULL OR m.valid_to > ?)".into(), ms(t)));
    } else if let Some(now) = filter.now {
        out.push(("(m.valid_to IS NULL OR m.valid_to > ?)".into(), ms(now)));
        // A version scheduled for later does not hold yet.
        out.push((
            "(m.valid_from IS NULL OR m.valid_from <= ?)".into(),
            ms(now),
        ));
        if !filter.accepts_status(Status::Archived) {
            out.push(("(m.expires_at IS NULL OR m.expires_at > ?)".into(), ms(now)));
        }
    } else {
        out.push(("m.valid_to IS NULL".into(), None));
    }
    out
}

/// A keyword (BM25) candidate query.
#[derive(Debug, Clone, Copy)]
pub struct KeywordQuery<'a> {
    /// Scope the candidates must be in.
    pub scope: &'a Scope,
    /// Further conditions.
    pub filter: &'a Filter,
    /// Query terms from [`crate::text::query_terms`]; any may match.
    pub terms: &'a [String],
    /// Most candidates to return.
    pub limit: usize,
}

/// A vector (cosine) candidate query.
#[derive(Debug, Clone, Copy)]
pub struct VectorQuery<'a> {
    /// Scope the candidates must be in.
    pub scope: &'a Scope,
    /// Further conditions.
    pub filter: &'a Filter,
    /// Unit query vector of the store's active model.
    pub vector: &'a [f32],
    /// Most candidates to return.
    pub limit: usize,
}

/// A candidate with its raw channel score (BM25, higher is better; or cosine).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// The memory.
    pub id: MemoryId,
    /// Raw score of the channel that produced it.
    pub score: f32,
    /// When it happened: event time, else record time (for the recency prior,
    /// so ranking needs no row fetch).
    pub time: DateTime<Utc>,
    /// When Hippo learnt it (for strength, which fades from then).
    pub recorded_at: DateTime<Utc>,
    /// Its kind (for per-kind ranking policy).
    pub kind: MemoryKind,
}

/// What a store knows of an idempotent request (see [`Store::request`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// The request's fingerprint (see [`crate::audit::RequestMark`]).
    pub fingerprint: String,
    /// A write of it committed.
    pub committed: bool,
    /// The attempt whose write committed (see
    /// [`crate::audit::RequestMark::attempt`]); `None` in records written
    /// before attempts were recorded.
    pub attempt: Option<String>,
    /// The answer it got (HTTP status and body), once recorded.
    pub answer: Option<(u16, Vec<u8>)>,
}

/// Which grants to list (conditions combine with AND).
#[derive(Debug, Clone, Copy, Default)]
pub struct GrantQuery<'a> {
    /// Only this grant.
    pub id: Option<uuid::Uuid>,
    /// Only grants whose grantee is this reader's user or agent.
    pub to: Option<&'a Scope>,
    /// Only grants of what lies in this owner scope.
    pub of: Option<&'a Scope>,
    /// Revoked grants too.
    pub include_revoked: bool,
    /// Most grants to return.
    pub limit: usize,
}

/// Listing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Oldest write first.
    #[default]
    Ascending,
    /// Newest write first.
    Descending,
}

/// A page request for listing memories.
#[derive(Debug, Clone)]
pub struct ListQuery<'a> {
    /// Only this scope; `None` lists everything (export, admin).
    pub scope: Option<&'a Scope>,
    /// Further conditions.
    pub filter: &'a Filter,
    /// Opaque cursor from a previous page.
    pub cursor: Option<&'a str>,
    /// Page size.
    pub limit: usize,
    /// Order.
    pub order: Order,
}

/// Which jobs [`Store::jobs`] lists.
#[derive(Debug, Clone, Copy, Default)]
pub struct JobQuery<'a> {
    /// Only jobs in this state.
    pub state: Option<crate::jobs::JobState>,
    /// Only jobs of this scope (its fields that are set).
    pub scope: Option<&'a Scope>,
    /// Only jobs with a smaller id (the next page).
    pub before: Option<i64>,
    /// Most jobs.
    pub limit: usize,
}

/// One scope (a user, agent and session triple, any of them absent) that
/// holds memories, as [`Store::scopes`] counts them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeSummary {
    /// The triple.
    pub scope: Scope,
    /// How many of its memories match the filter.
    pub memories: u64,
    /// When the first of them was recorded.
    pub first_recorded: DateTime<Utc>,
    /// When the last of them was recorded.
    pub last_recorded: DateTime<Utc>,
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct Page {
    /// The memories.
    pub memories: Vec<Memory>,
    /// Cursor for the next page, if there may be one.
    pub next_cursor: Option<String>,
}

/// Counts describing a store.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StoreStats {
    /// Memories in total.
    pub memories: u64,
    /// Memories per kind.
    pub by_kind: BTreeMap<String, u64>,
    /// Vectors per embedding model.
    pub vectors_by_model: BTreeMap<String, u64>,
    /// Entries in the keyword index (equals `memories` in a consistent store).
    pub keyword_entries: u64,
    /// Distinct users.
    pub users: u64,
    /// Bytes on disk (database plus write-ahead log), when known.
    pub disk_bytes: Option<u64>,
}

/// Durable memory storage with per-channel candidate search.
///
/// Batch methods are the primitive; there are no silent per-item round trips.
pub trait Store: Send + Sync {
    /// The embedding model whose vectors this store searches.
    fn active_model(&self) -> &str;
    /// Atomically inserts a batch, skipping duplicates (see
    /// [`InsertBatch::memories`]). Fails with `Conflict` (and writes
    /// nothing) if any id already exists.
    fn insert(&self, batch: InsertBatch) -> Result<InsertOutcome>;
    /// The memories with these ids that exist, in the order given.
    fn get_many(&self, ids: &[MemoryId]) -> Result<Vec<Memory>>;
    /// For each dedup key, the memory holding it, if any.
    fn find_keys(&self, keys: &[String]) -> Result<Vec<Option<MemoryId>>>;
    /// A page of memories.
    fn list(&self, query: &ListQuery<'_>) -> Result<Page>;
    /// The scopes inside `within` (all when `None`) holding memories that
    /// match `filter`, each with its count, the most recently recorded
    /// first (ties by scope); at most `limit` of them.
    fn scopes(
        &self,
        within: Option<&Scope>,
        filter: &Filter,
        limit: usize,
    ) -> Result<Vec<ScopeSummary>>;
    /// Atomically changes a memory (keeping its previous state as a version
    /// when asked) and logs the events. Fails with `NotFound` if it does not
    /// exist and with `Conflict` if its new dedup key is another memory's.
    fn update(&self, update: Update) -> Result<()>;
    /// A memory's earlier versions and itself, oldest first, and its event
    /// log in order. Empty when it does not exist.
    fn history(&self, id: MemoryId) -> Result<(Vec<Memory>, Vec<MemoryEvent>)>;
    /// Deletes these memories for good (with their earlier versions, events,
    /// keyword entries and vectors; a chunk with the rest of its input and
    /// the stored whole text; finished jobs that worked on them), leaving
    /// no copy in the store's files; returns how many existed.
    fn delete(&self, ids: &[MemoryId]) -> Result<u64>;
    /// Deletes every memory and source in `scope`; returns how many memories.
    fn delete_scope(&self, scope: &Scope) -> Result<u64>;
    /// The memories (current or earlier versions) whose `derived_from`
    /// names any of `ids`.
    fn derived_from_any(&self, ids: &[MemoryId]) -> Result<Vec<MemoryId>>;
    /// Checks the store's files and indexes (integrity of the database, the
    /// keyword index, every memory with its keyword entry and vector where
    /// it should have one); returns the problems found, none when sound.
    fn check(&self) -> Result<Vec<String>>;
    /// Stores a new read grant, with its audit entry.
    fn put_grant(&self, grant: &crate::sharing::Grant) -> Result<()>;
    /// Marks grant `id` revoked at `at` (with its audit entry) and returns
    /// it; `None` if there is no such grant. Revoking twice keeps the first
    /// time.
    fn revoke_grant(
        &self,
        id: uuid::Uuid,
        at: DateTime<Utc>,
    ) -> Result<Option<crate::sharing::Grant>>;
    /// Grants matching the query, oldest first.
    fn grants(&self, query: &GrantQuery<'_>) -> Result<Vec<crate::sharing::Grant>>;
    /// Audit entries after `after` (a `seq`), oldest first, at most `limit`.
    fn audit(&self, after: i64, limit: usize) -> Result<Vec<crate::audit::AuditEntry>>;
    /// Checks the audit log's hash chain and head (see [`crate::audit`]).
    fn verify_audit(&self) -> Result<crate::audit::AuditCheck>;

    /// A page of `table`'s records after cursor `after` (0: from the
    /// start), at most `limit`, for copying to another store (see
    /// [`transfer`]).
    fn export(
        &self,
        table: transfer::Table,
        after: i64,
        limit: usize,
    ) -> Result<transfer::ExportPage>;

    /// Writes records copied from another store as they are — no audit
    /// entries (the chain comes as [`transfer::Record::Audit`]), no dedup
    /// merging — and, in the same transaction, `progress`: how far the copy
    /// from that source got (see [`Store::import_progress`]).
    fn import(&self, records: Vec<transfer::Record>, progress: &transfer::Progress) -> Result<()>;

    /// The source cursor the imports of `table` from store `source` (its
    /// [`Store::store_id`]) reached (0 when none), so an interrupted copy
    /// resumes after it.
    fn import_progress(&self, source: &str, table: transfer::Table) -> Result<i64>;

    /// This store's identity: a random id given when it was first asked
    /// for, and kept (copies tell their sources apart by it).
    fn store_id(&self) -> Result<String>;
    /// Rewrites the store without the free space erased content left and
    /// empties its logs, so erased data is in no file any more.
    fn compact(&self) -> Result<()>;
    /// Whether anything was erased since the last [`Store::compact`].
    fn erased_since_compaction(&self) -> Result<bool>;
    /// Brings in-process indexes up to date with what other processes
    /// committed (the CLI writing the file a server serves). Search calls it
    /// once before it reads candidates, so all its channels see the same,
    /// current store. Stores without in-process indexes need not do anything.
    fn catch_up(&self) -> Result<()> {
        Ok(())
    }
    /// Rebuilds a search index that many small writes have fragmented
    /// enough to slow queries; run by the maintenance pass, cheap when there
    /// is nothing to do. True when it rebuilt one. Stores whose indexes
    /// keep themselves compact need not do anything.
    fn optimize_indexes(&self) -> Result<bool> {
        Ok(false)
    }
    /// Claims the periodic maintenance pass of this store until
    /// `now + lease`: true when the caller should run it, false when another
    /// process sharing the store claimed it and its lease has not lapsed.
    /// A store no other server shares always grants it.
    fn claim_maintenance(&self, now: DateTime<Utc>, lease: chrono::Duration) -> Result<bool> {
        let _ = (now, lease);
        Ok(true)
    }
    /// Keyword candidates, best first.
    fn keyword_candidates(&self, query: &KeywordQuery<'_>) -> Result<Vec<Candidate>>;
    /// Vector candidates within scope and filter, best first: the exact top k
    /// (SQLite), or an approximate one whose recall is measured (Postgres,
    /// HNSW).
    fn vector_candidates(&self, query: &VectorQuery<'_>) -> Result<Vec<Candidate>>;
    /// Cosine of `vector` with each listed memory that has a vector of the active model.
    fn vector_scores(&self, ids: &[MemoryId], vector: &[f32]) -> Result<Vec<Candidate>>;
    /// The active model's vector of each listed memory, if it has one.
    fn vectors(&self, ids: &[MemoryId]) -> Result<Vec<Option<Vec<f32>>>>;
    /// Memories without a vector of the active model (for re-embedding), up to `limit`.
    fn missing_vectors(&self, limit: usize) -> Result<Vec<Memory>>;
    /// The source (whole text) of chunked inputs.
    fn source(&self, id: MemoryId) -> Result<Option<Source>>;
    /// For each listed memory, the ids of its conversation window: up to
    /// `before` earlier and `after` later messages of the same exact scope
    /// around it, oldest first, the memory itself included. A memory that is
    /// not a message is its own window; an unknown id gets an empty one.
    /// Search calls it for every candidate: one lookup for all of them, in
    /// memory where the store can.
    fn windows(&self, ids: &[MemoryId], before: usize, after: usize) -> Result<Vec<Vec<MemoryId>>>;
    /// Counts.
    fn stats(&self) -> Result<StoreStats>;
    /// Claims the oldest job that is ready at `now` (pending with
    /// `run_after` reached, or running with its lease lapsed) until
    /// `now + lease`, counting an attempt.
    fn claim_job(&self, now: DateTime<Utc>, lease: chrono::Duration) -> Result<Option<Job>>;
    /// Changes a job (its state, plan, error, retry time, cost).
    fn update_job(&self, id: i64, update: JobUpdate, now: DateTime<Utc>) -> Result<()>;
    /// A job by id.
    fn job(&self, id: i64) -> Result<Option<Job>>;
    /// Jobs per state.
    fn job_counts(&self) -> Result<JobCounts>;
    /// Jobs newest first: of a state, inside a scope, before an id, at most
    /// `limit`.
    fn jobs(&self, query: &JobQuery<'_>) -> Result<Vec<Job>>;
    /// Deletes finished (`done`) jobs last changed before `before`; returns
    /// how many. Failed jobs stay for inspection.
    fn prune_jobs(&self, before: DateTime<Utc>) -> Result<u64>;
    /// What is known of the idempotent request `key`: whether a write of it
    /// committed (recorded in that write's transaction, see
    /// [`crate::audit::in_request`]) and the answer it got, if recorded.
    fn request(&self, key: &str) -> Result<Option<RequestRecord>>;
    /// Records the answer (HTTP status and body) to idempotent request
    /// `mark`, so a retry gets it again.
    fn record_answer(
        &self,
        mark: &crate::audit::RequestMark,
        status: u16,
        answer: &[u8],
    ) -> Result<()>;
    /// Forgets idempotent requests first seen before `before`; returns how
    /// many.
    fn prune_requests(&self, before: DateTime<Utc>) -> Result<u64>;
    /// The feedback of each listed memory (default when none or unknown).
    /// Search calls it for every candidate: one lookup for all of them, in
    /// memory where the store can.
    fn usage(&self, ids: &[MemoryId]) -> Result<Vec<Usage>>;
    /// Active memories that expired at or before `now`, soonest first, up
    /// to `limit`.
    fn expired(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Memory>>;
    /// Recorded rejections in `scope` (all when `None`) after `after_seq`,
    /// oldest first, up to `limit`.
    fn rejections(
        &self,
        scope: Option<&Scope>,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<Rejection>>;
}

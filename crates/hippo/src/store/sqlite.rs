//! The default store: one SQLite file (WAL) holding memories, vectors and an
//! FTS5 keyword index, plus two in-memory derived indexes rebuilt from the
//! file at open and updated inside every write transaction: the exact vector
//! index (`vectors.rs`) and the keyword mirror of FTS5 (`keywords.rs`).
//!
//! Durability: WAL with `synchronous=FULL` — a write is acknowledged only
//! after its commit record is fsynced, so acknowledged writes survive both
//! `kill -9` and power loss (given a disk that honours fsync). With
//! `synchronous=NORMAL` (option `fast_commits`) they survive `kill -9` but the
//! last commits may be lost on power loss.
//!
//! Concurrency: one writer connection behind a mutex (SQLite allows one
//! writer) and a small pool of read-only connections; readers never block
//! the writer under WAL.

mod transfer;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Mutex, MutexGuard, RwLock};

use chrono::{DateTime, Utc};
use rusqlite::types::Value as SqlValue;
use rusqlite::{
    params, params_from_iter, Connection, OpenFlags, OptionalExtension, Row, Transaction,
};
use serde_json::Value;

use super::fts;
use super::keywords::{KeywordDoc, KeywordIndex};
use super::schema;
use super::slots::SlotFields;
use super::vectors::VectorIndex;
use super::{
    Candidate, GrantQuery, InsertBatch, InsertOutcome, JobQuery, KeywordQuery, ListQuery, Order,
    Page, ScopeSummary, Source, Store, StoreStats, Update, VectorQuery,
};
use crate::audit::entries;
use crate::error::{Error, ErrorKind, Result};
use crate::jobs::{Job, JobCounts, JobState, JobStep, JobUpdate, NewJob};
use crate::model::{
    Actor, EventKind, Filter, Memory, MemoryEvent, MemoryId, MemoryKind, Provenance, Scope, Status,
    Usage,
};
use crate::policy::Rejection;
use crate::sharing::{Grant, Grantee};
use crate::text::{keyword_body, KEYWORD_FORMAT};

/// Options for opening a [`SqliteStore`].
#[derive(Debug, Clone)]
pub struct SqliteStoreOptions {
    /// Database file (created if absent).
    pub path: PathBuf,
    /// Embedding model whose vectors are searched.
    pub active_model: String,
    /// That model's vector length.
    pub dimension: usize,
    /// Read-only connections in the pool.
    pub readers: usize,
    /// `synchronous=NORMAL` instead of `FULL` (see the module docs).
    pub fast_commits: bool,
}

impl SqliteStoreOptions {
    /// Options for `path` with defaults for the rest.
    pub fn new(
        path: impl Into<PathBuf>,
        active_model: impl Into<String>,
        dimension: usize,
    ) -> Self {
        SqliteStoreOptions {
            path: path.into(),
            active_model: active_model.into(),
            dimension,
            readers: 4,
            fast_commits: false,
        }
    }
}

/// SQLite-backed [`Store`].
pub struct SqliteStore {
    path: PathBuf,
    model: String,
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    // parking_lot: reads take the lock recursively (see `vectors_read`).
    vectors: parking_lot::RwLock<VectorIndex>,
    keywords: parking_lot::RwLock<KeywordIndex>,
    /// Feedback of the memories that have any (few): ranking reads it for
    /// every candidate.
    usage: RwLock<HashMap<MemoryId, Usage>>,
    /// In-memory connections that tokenize queries with FTS5 (one per reader).
    tokenizers: Vec<Mutex<Connection>>,
    /// The writer connection's `PRAGMA data_version` when the in-memory
    /// indexes were last loaded: it changes when another connection (another
    /// process, such as the CLI while a server runs) commits to the file.
    loaded_version: std::sync::atomic::AtomicI64,
}

/// What the derived indexes need of a memory row.
struct RowFields {
    id: MemoryId,
    scope: Scope,
    kind: MemoryKind,
    event_time: Option<i64>,
    time: i64,
    recorded: i64,
    status: Status,
    valid_from: i64,
    valid_to: Option<i64>,
    scheduled_from: Option<i64>,
}

impl RowFields {
    fn slot(&self, rowid: i64) -> SlotFields<'_> {
        SlotFields {
            rowid,
            id: self.id,
            scope: &self.scope,
            kind: self.kind,
            event_time: self.event_time,
            time: self.time,
            recorded: self.recorded,
            status: self.status,
            valid_from: self.valid_from,
            valid_to: self.valid_to,
            scheduled_from: self.scheduled_from,
        }
    }
}

/// The new state of touched keyword documents (`None`: deleted), computed
/// inside a write transaction and applied to the mirror after commit.
/// With each document goes its row's `prev_rowid` (the message chain).
type KeywordChanges = Vec<(i64, Option<(RowFields, Option<i64>, KeywordDoc)>)>;

/// What a delete transaction removed: how many of the listed memories, every
/// row (with versions), and the keyword changes to publish.
type Deleted = (u64, Vec<(MemoryId, i64)>, KeywordChanges);

/// The newest message of an exact scope (served by index `memories_chain`).
const LAST_MESSAGE_SQL: &str =
    "SELECT rowid FROM memories WHERE kind = 'message' AND version_of IS NULL
     AND user_id IS ?1 AND agent_id IS ?2 AND session_id IS ?3 ORDER BY rowid DESC LIMIT 1";

/// The columns [`row_fields`] reads; the next column index is [`FIELD_COUNT`].
const FIELD_COLUMNS: &str =
    "m.rowid, m.id, m.user_id, m.agent_id, m.session_id, m.kind, m.event_time, \
     m.recorded_at, m.status, m.valid_from, m.valid_to";
const FIELD_COUNT: usize = 11;

fn candidate(h: super::slots::Hit) -> Candidate {
    Candidate {
        id: h.id,
        score: h.score,
        time: DateTime::from_timestamp_millis(h.time).unwrap_or_default(),
        recorded_at: DateTime::from_timestamp_millis(h.recorded).unwrap_or_default(),
        kind: h.kind,
    }
}

fn row_fields(r: &Row<'_>) -> rusqlite::Result<(i64, RowFields)> {
    let time: i64 = r.get::<_, Option<i64>>(6)?.unwrap_or(r.get(7)?);
    Ok((
        r.get(0)?,
        RowFields {
            id: parse_uuid(&r.get::<_, String>(1)?)?,
            scope: Scope {
                user_id: r.get(2)?,
                agent_id: r.get(3)?,
                session_id: r.get(4)?,
            },
            kind: MemoryKind::parse(&r.get::<_, String>(5)?).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    5,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })?,
            event_time: r.get(6)?,
            time,
            recorded: r.get(7)?,
            status: parse_status(r, 8)?,
            valid_from: r.get::<_, Option<i64>>(9)?.unwrap_or(time),
            valid_to: r.get(10)?,
            scheduled_from: r.get(9)?,
        },
    ))
}

fn parse_status(r: &Row<'_>, i: usize) -> rusqlite::Result<Status> {
    Status::parse(&r.get::<_, String>(i)?).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn parse_ids(s: Option<String>) -> rusqlite::Result<Vec<MemoryId>> {
    match s {
        None => Ok(Vec::new()),
        Some(s) => serde_json::from_str(&s).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
        }),
    }
}

fn flags_json(flags: &[String]) -> Option<String> {
    (!flags.is_empty()).then(|| serde_json::to_string(flags).unwrap_or_default())
}

fn ids_json(ids: &[MemoryId]) -> Option<String> {
    (!ids.is_empty()).then(|| serde_json::to_string(ids).unwrap_or_default())
}

/// The columns [`row_to_memory`] reads; the next column index is [`MEMORY_COUNT`].
const MEMORY_COLUMNS: &str = "m.id, m.user_id, m.agent_id, m.session_id, m.kind, m.content, m.role, m.name, \
     m.metadata, m.event_time, m.recorded_at, m.updated_at, m.request_id, m.source_id, m.chunk_index, \
     m.chunk_count, m.content_hash, m.embedding_model, m.valid_from, m.valid_to, m.version_of, m.status, \
     m.derived_from, m.dedup_key, m.expires_at, m.used_count, m.helpful_count, m.wrong_count, \
     m.reinforced_at, m.flags, m.written_by";
const MEMORY_COUNT: usize = 31;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a connection leaves it usable: SQLite rolls back
    // the open transaction when the Transaction guard drops.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(v: i64) -> rusqlite::Result<DateTime<Utc>> {
    DateTime::from_timestamp_millis(v).ok_or(rusqlite::Error::IntegralValueOutOfRange(0, v))
}

fn parse_uuid(s: &str) -> rusqlite::Result<MemoryId> {
    MemoryId::parse_str(s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn row_to_memory(r: &Row<'_>) -> rusqlite::Result<Memory> {
    let conv = |i: usize, e: crate::Error| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    };
    let metadata: String = r.get(8)?;
    let metadata = match serde_json::from_str::<Value>(&metadata) {
        Ok(Value::Object(m)) => m,
        _ => {
            return Err(conv(
                8,
                Error::invalid("stored metadata is not a JSON object"),
            ))
        }
    };
    let kind: String = r.get(4)?;
    Ok(Memory {
        id: parse_uuid(&r.get::<_, String>(0)?)?,
        scope: Scope {
            user_id: r.get(1)?,
            agent_id: r.get(2)?,
            session_id: r.get(3)?,
        },
        kind: MemoryKind::parse(&kind).map_err(|e| conv(4, e))?,
        content: r.get(5)?,
        actor: Actor {
            role: r.get(6)?,
            name: r.get(7)?,
        },
        metadata,
        event_time: r.get::<_, Option<i64>>(9)?.map(from_ms).transpose()?,
        recorded_at: from_ms(r.get(10)?)?,
        updated_at: from_ms(r.get(11)?)?,
        provenance: Provenance {
            request_id: r
                .get::<_, Option<String>>(12)?
                .as_deref()
                .map(parse_uuid)
                .transpose()?,
            source_id: r
                .get::<_, Option<String>>(13)?
                .as_deref()
                .map(parse_uuid)
                .transpose()?,
            chunk_index: r.get(14)?,
            chunk_count: r.get(15)?,
            derived_from: parse_ids(r.get(22)?)?,
            written_by: r.get(30)?,
        },
        content_hash: r.get(16)?,
        embedding_model: r.get(17)?,
        valid_from: r.get::<_, Option<i64>>(18)?.map(from_ms).transpose()?,
        valid_to: r.get::<_, Option<i64>>(19)?.map(from_ms).transpose()?,
        version_of: r
            .get::<_, Option<String>>(20)?
            .as_deref()
            .map(parse_uuid)
            .transpose()?,
        status: parse_status(r, 21)?,
        dedup_key: r.get(23)?,
        expires_at: r.get::<_, Option<i64>>(24)?.map(from_ms).transpose()?,
        usage: Usage {
            used: r.get(25)?,
            helpful: r.get(26)?,
            wrong: r.get(27)?,
            reinforced_at: r.get::<_, Option<i64>>(28)?.map(from_ms).transpose()?,
        },
        flags: r
            .get::<_, Option<String>>(29)?
            .and_then(|f| serde_json::from_str(&f).ok())
            .unwrap_or_default(),
    })
}

fn event_row(r: &Row<'_>) -> rusqlite::Result<MemoryEvent> {
    let conv = |i: usize, e: crate::Error| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    };
    Ok(MemoryEvent {
        memory_id: parse_uuid(&r.get::<_, String>(0)?)?,
        at: from_ms(r.get(1)?)?,
        kind: EventKind::parse(&r.get::<_, String>(2)?).map_err(|e| conv(2, e))?,
        origin: r.get(3)?,
        reason: r.get(4)?,
        request_id: r
            .get::<_, Option<String>>(5)?
            .as_deref()
            .map(parse_uuid)
            .transpose()?,
        detail: match serde_json::from_str::<Value>(&r.get::<_, String>(6)?) {
            Ok(Value::Object(m)) => m,
            _ => {
                return Err(conv(
                    6,
                    Error::invalid("stored event detail is not an object"),
                ))
            }
        },
    })
}

/// Records step `s` of a job inside the write's transaction; fails (so the
/// write rolls back) if that step was applied before.
fn apply_step(tx: &Transaction<'_>, s: Option<JobStep>) -> Result<()> {
    let Some(s) = s else { return Ok(()) };
    let n = tx
        .prepare_cached("UPDATE jobs SET step = ?2 WHERE id = ?1 AND step = ?2 - 1")?
        .execute(params![s.job, s.step])?;
    if n == 0 {
        return Err(Error::new(
            ErrorKind::Conflict,
            format!("step {} of job {} was applied already", s.step, s.job),
        ));
    }
    Ok(())
}

fn enqueue(tx: &Transaction<'_>, jobs: &[NewJob]) -> Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO jobs (kind, user_id, agent_id, session_id, payload, run_after, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?6)",
    )?;
    for j in jobs {
        stmt.execute(params![
            j.kind,
            j.scope.user_id,
            j.scope.agent_id,
            j.scope.session_id,
            Value::Object(j.payload.clone()).to_string(),
            ms(j.at),
        ])?;
    }
    Ok(())
}

const JOB_COLUMNS: &str =
    "id, kind, user_id, agent_id, session_id, payload, state, attempts, run_after, \
     lease_until, step, plan, last_error, cost, created_at, updated_at";

fn job_row(r: &Row<'_>) -> rusqlite::Result<Job> {
    let conv = |i: usize, e: crate::Error| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    };
    let object = |i: usize| -> rusqlite::Result<serde_json::Map<String, Value>> {
        match serde_json::from_str::<Value>(&r.get::<_, String>(i)?) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(conv(i, Error::invalid("stored job field is not an object"))),
        }
    };
    Ok(Job {
        id: r.get(0)?,
        kind: r.get(1)?,
        scope: Scope {
            user_id: r.get(2)?,
            agent_id: r.get(3)?,
            session_id: r.get(4)?,
        },
        payload: object(5)?,
        state: JobState::parse(&r.get::<_, String>(6)?).map_err(|e| conv(6, e))?,
        attempts: r.get(7)?,
        run_after: from_ms(r.get(8)?)?,
        lease_until: r.get::<_, Option<i64>>(9)?.map(from_ms).transpose()?,
        step: r.get(10)?,
        plan: r
            .get::<_, Option<String>>(11)?
            .map(|p| serde_json::from_str(&p).map_err(|e| conv(11, Error::invalid(e.to_string()))))
            .transpose()?,
        last_error: r.get(12)?,
        cost: object(13)?,
        created_at: from_ms(r.get(14)?)?,
        updated_at: from_ms(r.get(15)?)?,
    })
}

/// Appends entries to the store's audit log in `tx`.
/// `PRAGMA data_version` of `conn` (see [`SqliteStore::reload_if_changed`]).
fn data_version(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("PRAGMA data_version", [], |r| r.get(0))?)
}

fn append_audit(tx: &Transaction<'_>, items: Vec<entries::Item>) -> Result<()> {
    // Every write transaction that changes something is audited, so this is
    // where an idempotent request's commit is recorded, atomically with it.
    if !items.is_empty() {
        if let Some(mark) = crate::audit::current_request() {
            // Writes are serialized (IMMEDIATE), so this check is exact.
            let committed: Option<Option<String>> = tx
                .prepare_cached(
                    "SELECT attempt FROM requests WHERE key = ?1 AND committed_at IS NOT NULL",
                )?
                .query_row([&mark.key], |r| r.get(0))
                .optional()?;
            if committed.is_some_and(|by| by.as_deref() != Some(mark.attempt.as_str())) {
                return Err(Error::request_committed_elsewhere());
            }
            let now = Utc::now().timestamp_millis();
            tx.prepare_cached(
                "INSERT INTO requests (key, fingerprint, committed_at, created_at, attempt) VALUES (?1, ?2, ?3, ?3, ?4)
                 ON CONFLICT(key) DO UPDATE SET committed_at = COALESCE(committed_at, excluded.committed_at),
                     attempt = COALESCE(attempt, excluded.attempt)",
            )?
            .execute(params![mark.key, mark.fingerprint, now, mark.attempt])?;
        }
    }
    Ok(crate::audit::sql::append(tx, "store_meta", items)?)
}

fn select_grants(conn: &Connection, q: &GrantQuery<'_>) -> Result<Vec<Grant>> {
    let mut c = Conditions::default();
    if let Some(id) = q.id {
        c.push("m.id = ?", id.to_string());
    }
    if let Some(of) = q.of {
        c.scope(of);
    }
    if let Some(to) = q.to {
        // The reader is the grantee through its user or its agent.
        match (&to.user_id, &to.agent_id) {
            (Some(u), Some(a)) => {
                let n = c.params.len();
                c.sql.push(format!(
                    "(m.grantee_user = ?{} OR m.grantee_agent = ?{})",
                    n + 1,
                    n + 2
                ));
                c.params.push(u.clone().into());
                c.params.push(a.clone().into());
            }
            (Some(u), None) => c.push("m.grantee_user = ?", u.clone()),
            (None, Some(a)) => c.push("m.grantee_agent = ?", a.clone()),
            (None, None) => return Ok(Vec::new()),
        }
    }
    if !q.include_revoked {
        c.sql.push("m.revoked_at IS NULL".into());
    }
    let sql = format!(
        "SELECT {GRANT_COLUMNS} FROM grants m WHERE {} ORDER BY m.created_at, m.id LIMIT {}",
        c.where_clause(),
        q.limit
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(c.params.iter()), grant_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

const GRANT_COLUMNS: &str = "m.id, m.memory_id, m.user_id, m.agent_id, m.session_id, m.grantee_user, \
                             m.grantee_agent, m.created_at, m.created_by, m.expires_at, m.revoked_at";

fn grant_row(r: &Row<'_>) -> rusqlite::Result<Grant> {
    Ok(Grant {
        id: parse_uuid(&r.get::<_, String>(0)?)?,
        memory_id: r
            .get::<_, Option<String>>(1)?
            .as_deref()
            .map(parse_uuid)
            .transpose()?,
        scope: Scope {
            user_id: r.get(2)?,
            agent_id: r.get(3)?,
            session_id: r.get(4)?,
        },
        grantee: Grantee {
            user_id: r.get(5)?,
            agent_id: r.get(6)?,
        },
        created_at: from_ms(r.get(7)?)?,
        created_by: r.get(8)?,
        expires_at: r.get::<_, Option<i64>>(9)?.map(from_ms).transpose()?,
        revoked_at: r.get::<_, Option<i64>>(10)?.map(from_ms).transpose()?,
    })
}

fn insert_grant(tx: &Transaction<'_>, g: &Grant) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO grants (id, memory_id, user_id, agent_id, session_id, grantee_user, grantee_agent,
         created_at, created_by, expires_at, revoked_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        g.id.to_string(),
        g.memory_id.map(|u| u.to_string()),
        g.scope.user_id,
        g.scope.agent_id,
        g.scope.session_id,
        g.grantee.user_id,
        g.grantee.agent_id,
        ms(g.created_at),
        g.created_by,
        g.expires_at.map(ms),
        g.revoked_at.map(ms),
    ])?;
    Ok(())
}

fn insert_rejections(tx: &Transaction<'_>, rejections: &[Rejection]) -> Result<()> {
    for r in rejections {
        tx.prepare_cached(
            "INSERT INTO rejections (user_id, agent_id, session_id, at, request_id, kind, content, role, name,
             event_time, admission) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?
        .execute(params![
            r.scope.user_id,
            r.scope.agent_id,
            r.scope.session_id,
            ms(r.at),
            r.request_id.map(|u| u.to_string()),
            r.kind.as_str(),
            r.content,
            r.actor.role,
            r.actor.name,
            r.event_time.map(ms),
            serde_json::to_string(&r.admission).unwrap_or_default(),
        ])?;
    }
    Ok(())
}

fn rejection_row(r: &Row<'_>) -> rusqlite::Result<Rejection> {
    let conv = |i: usize, e: Box<dyn std::error::Error + Send + Sync>| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e)
    };
    Ok(Rejection {
        seq: r.get(0)?,
        scope: Scope {
            user_id: r.get(1)?,
            agent_id: r.get(2)?,
            session_id: r.get(3)?,
        },
        at: from_ms(r.get(4)?)?,
        request_id: r
            .get::<_, Option<String>>(5)?
            .as_deref()
            .map(parse_uuid)
            .transpose()?,
        kind: MemoryKind::parse(&r.get::<_, String>(6)?).map_err(|e| conv(6, Box::new(e)))?,
        content: r.get(7)?,
        actor: Actor {
            role: r.get(8)?,
            name: r.get(9)?,
        },
        event_time: r.get::<_, Option<i64>>(10)?.map(from_ms).transpose()?,
        admission: serde_json::from_str(&r.get::<_, String>(11)?)
            .map_err(|e| conv(11, Box::new(e)))?,
    })
}

fn insert_events(tx: &Transaction<'_>, events: &[MemoryEvent]) -> Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO memory_events (memory_id, at, kind, origin, reason, request_id, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for e in events {
        stmt.execute(params![
            e.memory_id.to_string(),
            ms(e.at),
            e.kind.as_str(),
            e.origin,
            e.reason,
            e.request_id.map(|u| u.to_string()),
            Value::Object(e.detail.clone()).to_string(),
        ])?;
    }
    Ok(())
}

/// SQL conditions (joined with AND, on alias `m`) and their parameters.
#[derive(Default)]
struct Conditions {
    sql: Vec<String>,
    params: Vec<SqlValue>,
}

impl Conditions {
    fn push(&mut self, sql: &str, value: impl Into<SqlValue>) {
        self.sql
            .push(sql.replace('?', &format!("?{}", self.params.len() + 1)));
        self.params.push(value.into());
    }

    fn scope(&mut self, scope: &Scope) {
        for (col, v) in [
            ("user_id", &scope.user_id),
            ("agent_id", &scope.agent_id),
            ("session_id", &scope.session_id),
        ] {
            if let Some(v) = v {
                self.push(&format!("m.{col} = ?"), v.clone());
            }
        }
    }

    fn filter(&mut self, filter: &Filter) {
        for (sql, value) in super::filter_conditions(filter) {
            match value {
                Some(v) => self.push(&sql, v),
                None => self.sql.push(sql),
            }
        }
        for (key, value) in &filter.metadata {
            // Keys are bound as parameters inside a quoted JSON path.
            let path_param = format!("$.\"{}\"", key.replace('\\', "\\\\").replace('"', "\\\""));
            let n = self.params.len() + 1;
            self.params.push(SqlValue::Text(path_param));
            match value {
                Value::Null => self
                    .sql
                    .push(format!("json_type(m.metadata, ?{n}) = 'null'")),
                Value::Bool(b) => self
                    .sql
                    .push(format!("json_type(m.metadata, ?{n}) = '{b}'")),
                Value::Number(num) => {
                    let v = num
                        .as_i64()
                        .map(SqlValue::Integer)
                        .unwrap_or_else(|| SqlValue::Real(num.as_f64().unwrap_or(0.0)));
                    self.params.push(v);
                    self.sql.push(format!(
                        "(json_type(m.metadata, ?{n}) IN ('integer','real') AND json_extract(m.metadata, ?{n}) = ?{})",
                        n + 1
                    ));
                }
                Value::String(s) => {
                    self.params.push(SqlValue::Text(s.clone()));
                    self.sql.push(format!(
                        "(json_type(m.metadata, ?{n}) = 'text' AND json_extract(m.metadata, ?{n}) = ?{})",
                        n + 1
                    ));
                }
                // Rejected by Filter::validate; never matches if it gets here.
                Value::Array(_) | Value::Object(_) => self.sql.push("0".into()),
            }
        }
    }

    fn where_clause(&self) -> String {
        if self.sql.is_empty() {
            "1".into()
        } else {
            self.sql.join(" AND ")
        }
    }
}

fn vector_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn blob_vector(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Turns FTS5's secure-delete on or off (its own transaction: FTS5 reads
/// its configuration when a transaction starts).
fn fts_secure_delete(conn: &Connection, on: bool) -> Result<()> {
    conn.execute(
        "INSERT INTO memory_fts(memory_fts, rank) VALUES('secure-delete', ?1)",
        [i64::from(on)],
    )?;
    Ok(())
}

/// Marks that something was erased since the last compaction (maintenance
/// compacts then).
fn mark_erased(tx: &Transaction<'_>) -> Result<()> {
    tx.execute(
        "INSERT INTO store_meta (key, value) VALUES ('erased_since_compact', '1')
         ON CONFLICT(key) DO UPDATE SET value = '1'",
        [],
    )?;
    Ok(())
}

/// Copies the write-ahead log into the database and truncates it, so
/// erased content leaves the log file. Best effort: a reader in the middle
/// of a read can hold it up (the next erase or compaction retries).
fn checkpoint(conn: &Connection) {
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
        tracing::warn!(error = %e, "checkpoint after erase");
    }
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) the database and loads the
    /// vectors of the active model into memory.
    pub fn open(options: SqliteStoreOptions) -> Result<Self> {
        if options.dimension == 0 {
            return Err(Error::invalid("vector dimension must be positive"));
        }
        let mut writer = Connection::open(&options.path).map_err(|e| {
            Error::unavailable(
                format!("cannot open database {}", options.path.display()),
                e,
            )
        })?;
        writer.busy_timeout(std::time::Duration::from_secs(10))?;
        writer.pragma_update(None, "journal_mode", "WAL")?;
        writer.pragma_update(
            None,
            "synchronous",
            if options.fast_commits {
                "NORMAL"
            } else {
                "FULL"
            },
        )?;
        writer.pragma_update(None, "foreign_keys", true)?;
        // Deleted content is overwritten, not left in free pages: erasure
        // must leave nothing in the file (see `compact` for the log).
        writer.pragma_update(None, "secure_delete", true)?;
        schema::migrate(&mut writer)?;
        fts::install_tokenizer(&writer)?;
        // FTS5 keeps a deleted row's tokens in its index segments until they
        // merge, unless told to remove them at once (SQLite >= 3.44). That
        // costs every write (each add rewrites its neighbours' context
        // entries), so it is on only while erasing (`erasing`); `compact`
        // merges away what ordinary writes left.
        fts_secure_delete(&writer, false)?;
        Self::upgrade_keyword_format(&mut writer)?;
        let mut readers = Vec::new();
        let mut tokenizers = Vec::new();
        for _ in 0..options.readers.max(1) {
            let r = Connection::open_with_flags(
                &options.path,
                OpenFlags::SQLITE_OPEN_READ_ONLY
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX
                    | OpenFlags::SQLITE_OPEN_URI,
            )?;
            r.busy_timeout(std::time::Duration::from_secs(10))?;
            readers.push(Mutex::new(r));
            let t = Connection::open_in_memory()?;
            fts::install_tokenizer(&t)?;
            tokenizers.push(Mutex::new(t));
        }
        let loaded_version = data_version(&writer)?;
        let vectors = Self::load_vectors(&writer, &options.active_model, options.dimension)?;
        let keywords = Self::load_keywords(&writer)?;
        let usage = Self::load_usage(&writer)?;
        tracing::info!(path = %options.path.display(), vectors = vectors.len(), keywords = keywords.len(), "opened store");
        Ok(SqliteStore {
            path: options.path,
            model: options.active_model,
            writer: Mutex::new(writer),
            readers,
            next_reader: AtomicUsize::new(0),
            vectors: parking_lot::RwLock::new(vectors),
            keywords: parking_lot::RwLock::new(keywords),
            usage: RwLock::new(usage),
            tokenizers,
            loaded_version: std::sync::atomic::AtomicI64::new(loaded_version),
        })
    }

    /// The writer connection, with the in-memory indexes caught up with
    /// what other processes committed (see [`SqliteStore::reload_if_changed`]).
    fn writer(&self) -> Result<MutexGuard<'_, Connection>> {
        let conn = lock(&self.writer);
        self.reload_if_changed(&conn)?;
        Ok(conn)
    }

    /// Before a read of the in-memory indexes outside search (which calls
    /// [`Store::catch_up`] first): catches them up unless this process is
    /// writing right now. Never blocks, because these reads may run on
    /// rayon threads a write is waiting for.
    fn catch_up_if_idle(&self) -> Result<()> {
        match self.writer.try_lock() {
            Ok(conn) => self.reload_if_changed(&conn),
            Err(std::sync::TryLockError::Poisoned(e)) => self.reload_if_changed(&e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => Ok(()),
        }
    }

    /// Reloads the in-memory indexes when another connection committed to
    /// the file since they were loaded (`conn` is the writer, locked). A
    /// reload costs what opening the store costs; it happens only when
    /// something else writes the file (the CLI beside a server), never for
    /// this store's own writes.
    fn reload_if_changed(&self, conn: &Connection) -> Result<()> {
        use std::sync::atomic::Ordering;
        let now = data_version(conn)?;
        if now == self.loaded_version.load(Ordering::Acquire) {
            return Ok(());
        }
        let dim = self.vectors_read().dim();
        let vectors = Self::load_vectors(conn, &self.model, dim)?;
        let keywords = Self::load_keywords(conn)?;
        let usage = Self::load_usage(conn)?;
        *self.vectors_write() = vectors;
        *self.keywords.write() = keywords;
        *self.usage.write().unwrap_or_else(|e| e.into_inner()) = usage;
        self.loaded_version.store(now, Ordering::Release);
        tracing::info!(path = %self.path.display(), "another process wrote the store: indexes reloaded");
        Ok(())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn load_usage(conn: &Connection) -> Result<HashMap<MemoryId, Usage>> {
        let mut stmt = conn.prepare(
            "SELECT id, used_count, helpful_count, wrong_count, reinforced_at FROM memories
             WHERE used_count + helpful_count + wrong_count > 0",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                parse_uuid(&r.get::<_, String>(0)?)?,
                Usage {
                    used: r.get(1)?,
                    helpful: r.get(2)?,
                    wrong: r.get(3)?,
                    reinforced_at: r.get::<_, Option<i64>>(4)?.map(from_ms).transpose()?,
                },
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Makes a committed change of feedback visible to ranking.
    fn publish_usage(&self, id: MemoryId, usage: Usage) {
        let mut map = self.usage.write().unwrap_or_else(|e| e.into_inner());
        if usage.is_unused() {
            map.remove(&id);
        } else {
            map.insert(id, usage);
        }
    }

    fn load_vectors(conn: &Connection, model: &str, dim: usize) -> Result<VectorIndex> {
        let n: i64 = conn.query_row(
            "SELECT count(*) FROM memory_vectors WHERE model = ?1",
            [model],
            |r| r.get(0),
        )?;
        let mut index = VectorIndex::with_capacity(dim, n as usize);
        let mut stmt = conn.prepare(&format!(
            "SELECT {FIELD_COLUMNS}, v.vector FROM memory_vectors v JOIN memories m ON m.rowid = v.rowid
             WHERE v.model = ?1 ORDER BY v.rowid"
        ))?;
        let mut rows = stmt.query([model])?;
        while let Some(r) = rows.next()? {
            let blob: Vec<u8> = r.get(FIELD_COUNT)?;
            if blob.len() != dim * 4 {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "stored vectors of {model} have {} dimensions, expected {dim}",
                        blob.len() / 4
                    ),
                ));
            }
            let (rowid, f) = row_fields(r)?;
            index.upsert(f.slot(rowid), &blob_vector(&blob));
        }
        Ok(index)
    }

    /// Rewrites keyword bodies written under an older [`KEYWORD_FORMAT`]
    /// (one transaction; the mirror is loaded afterwards).
    fn upgrade_keyword_format(conn: &mut Connection) -> Result<()> {
        let stored: u32 = conn
            .query_row(
                "SELECT value FROM store_meta WHERE key = 'keyword_format'",
                [],
                |r| r.get::<_, String>(0),
            )
            .optional()?
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        if stored >= KEYWORD_FORMAT {
            return Ok(());
        }
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut n = 0usize;
        {
            let mut rows =
                tx.prepare("SELECT rowid, content, event_time, recorded_at FROM memories")?;
            let mut update = tx.prepare("UPDATE memory_fts SET body = ?1 WHERE rowid = ?2")?;
            let mut it = rows.query([])?;
            while let Some(r) = it.next()? {
                let when = from_ms(r.get::<_, Option<i64>>(2)?.unwrap_or(r.get(3)?))?;
                update.execute(params![
                    keyword_body(&r.get::<_, String>(1)?, when),
                    r.get::<_, i64>(0)?
                ])?;
                n += 1;
            }
        }
        tx.execute(
            "INSERT OR REPLACE INTO store_meta (key, value) VALUES ('keyword_format', ?1)",
            [KEYWORD_FORMAT.to_string()],
        )?;
        tx.commit()?;
        if n > 0 {
            tracing::info!(
                documents = n,
                format = KEYWORD_FORMAT,
                "re-indexed keyword documents"
            );
        }
        Ok(())
    }

    fn load_keywords(conn: &Connection) -> Result<KeywordIndex> {
        let mut bulk = KeywordIndex::bulk();
        let mut stmt = conn.prepare(&format!(
            "SELECT {FIELD_COLUMNS}, m.prev_rowid FROM memories m JOIN memory_fts f ON f.rowid = m.rowid ORDER BY m.rowid"
        ))?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let (rowid, f) = row_fields(r)?;
            bulk.doc(f.slot(rowid), r.get(FIELD_COUNT)?);
        }
        fts::for_each_instance(conn, |term, rowid, col| {
            bulk.instance(term, rowid, col)
                .map_err(|e| Error::new(ErrorKind::Internal, format!("keyword index load: {e}")))
        })?;
        Ok(bulk.finish())
    }

    /// Reads the new state of touched keyword documents, inside the write
    /// transaction (so a failure here aborts the write).
    fn keyword_changes(tx: &Transaction<'_>, touched: &BTreeSet<i64>) -> Result<KeywordChanges> {
        let rowids: Vec<i64> = touched.iter().copied().collect();
        let mut docs = fts::docs_of(tx, &rowids)?;
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT {FIELD_COLUMNS}, m.prev_rowid FROM memories m WHERE m.rowid = ?1"
        ))?;
        let mut out = Vec::with_capacity(rowids.len());
        for r in rowids {
            let fields = stmt
                .query_row([r], |row| Ok((row_fields(row)?.1, row.get(FIELD_COUNT)?)))
                .optional()?;
            out.push((
                r,
                fields.map(|(f, prev)| (f, prev, docs.remove(&r).unwrap_or_default())),
            ));
        }
        Ok(out)
    }

    /// Applies committed keyword changes to the mirror (writer lock held).
    fn apply_keywords(&self, changes: KeywordChanges) {
        let mut index = self.keywords.write();
        for (rowid, change) in changes {
            match change {
                Some((f, prev, doc)) => index.upsert(f.slot(rowid), prev, &doc),
                None => index.remove(rowid),
            }
        }
    }

    /// FTS5 tokens of a keyword query.
    fn query_tokens(&self, terms: &[String]) -> Result<Vec<String>> {
        let conn = self
            .tokenizers
            .iter()
            .find_map(|t| t.try_lock().ok())
            .unwrap_or_else(|| lock(&self.tokenizers[0]));
        fts::tokens(&conn, &terms.join(" "))
    }

    fn reader(&self) -> MutexGuard<'_, Connection> {
        for r in &self.readers {
            if let Ok(g) = r.try_lock() {
                return g;
            }
        }
        let i = self.next_reader.fetch_add(1, AtomicOrdering::Relaxed) % self.readers.len();
        lock(&self.readers[i])
    }

    /// A read lock taken even while a writer waits: a search scans vectors in
    /// parallel (rayon) while holding it, and a rayon thread waiting for that
    /// scan may steal another search's job that reads again. A
    /// writer-preferring lock would block that second read behind the
    /// waiting writer, which waits for the first — a deadlock seen under
    /// concurrent searches and erasures (`hippo soak`).
    fn vectors_read(&self) -> parking_lot::RwLockReadGuard<'_, VectorIndex> {
        self.vectors.read_recursive()
    }

    fn vectors_write(&self) -> parking_lot::RwLockWriteGuard<'_, VectorIndex> {
        self.vectors.write()
    }

    /// Read recursively for the same reason as [`Self::vectors_read`].
    fn keywords_read(&self) -> parking_lot::RwLockReadGuard<'_, KeywordIndex> {
        self.keywords.read_recursive()
    }

    /// The transaction of [`Store::delete`]: returns the deleted rows and the
    /// keyword changes to publish.
    fn delete_tx(conn: &mut Connection, ids: &[MemoryId]) -> Result<Deleted> {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // A chunk goes with its whole input: the other chunks and the
        // stored whole text.
        let mut ids = ids.to_vec();
        let mut sources: BTreeSet<String> = BTreeSet::new();
        for id in ids.clone() {
            let source: Option<Option<String>> = tx
                .prepare_cached("SELECT source_id FROM memories WHERE id = ?1")?
                .query_row([id.to_string()], |r| r.get(0))
                .optional()?;
            if let Some(Some(s)) = source {
                sources.insert(s);
            }
        }
        for s in &sources {
            let mut stmt = tx.prepare_cached(
                "SELECT id FROM memories WHERE source_id = ?1 AND version_of IS NULL",
            )?;
            for id in stmt.query_map([s], |r| parse_uuid(&r.get::<_, String>(0)?))? {
                let id = id?;
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            tx.prepare_cached("DELETE FROM sources WHERE id = ?1")?
                .execute([s])?;
        }
        let ids = &ids[..];
        let mut rowids = Self::rowids_of(&tx, ids)?;
        let n = rowids.len() as u64;
        // Finished jobs that worked on them (their plans quote what was
        // extracted) go too; pending ones find them gone when they run.
        for id in ids {
            tx.prepare_cached(
                "DELETE FROM jobs WHERE state IN ('done', 'failed') AND payload LIKE ?1",
            )?
            .execute([format!("%{id}%")])?;
        }
        // Earlier versions and the event log go with the memory.
        for id in ids {
            let mut stmt =
                tx.prepare_cached("SELECT id, rowid FROM memories WHERE version_of = ?1")?;
            let versions = stmt.query_map([id.to_string()], |r| {
                Ok((parse_uuid(&r.get::<_, String>(0)?)?, r.get::<_, i64>(1)?))
            })?;
            for v in versions {
                rowids.push(v?);
            }
            tx.prepare_cached("DELETE FROM memory_events WHERE memory_id = ?1")?
                .execute([id.to_string()])?;
            tx.prepare_cached("DELETE FROM grants WHERE memory_id = ?1")?
                .execute([id.to_string()])?;
        }
        let mut touched = BTreeSet::new();
        for (_, r) in &rowids {
            Self::delete_one(&tx, *r, &mut touched)?;
        }
        let keywords = Self::keyword_changes(&tx, &touched)?;
        append_audit(
            &tx,
            rowids.iter().map(|(id, _)| entries::erased(*id)).collect(),
        )?;
        mark_erased(&tx)?;
        tx.commit()?;
        Ok((n, rowids, keywords))
    }

    /// The transaction of [`Store::delete_scope`]: returns the deleted rows
    /// and ids.
    fn delete_scope_tx(conn: &mut Connection, scope: &Scope) -> Result<(Vec<i64>, Vec<MemoryId>)> {
        let mut c = Conditions::default();
        c.scope(scope);
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let (rowids, ids): (Vec<i64>, Vec<MemoryId>) = {
            let mut stmt = tx.prepare(&format!(
                "SELECT m.rowid, m.id FROM memories m WHERE {}",
                c.where_clause()
            ))?;
            let rows = stmt.query_map(params_from_iter(c.params.iter()), |r| {
                Ok((r.get::<_, i64>(0)?, parse_uuid(&r.get::<_, String>(1)?)?))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
                .into_iter()
                .unzip()
        };
        // Message chains live within one exact scope, and a scope filter takes
        // whole exact scopes, so no surviving memory links to a deleted one.
        // Versions share their memory's scope, so they go too.
        tx.execute(
            &format!(
                "DELETE FROM memory_events WHERE memory_id IN (SELECT m.id FROM memories m WHERE {})",
                c.where_clause()
            ),
            params_from_iter(c.params.iter()),
        )?;
        for r in &rowids {
            tx.prepare_cached("DELETE FROM memory_fts WHERE rowid = ?1")?
                .execute([r])?;
            tx.prepare_cached("DELETE FROM memory_vectors WHERE rowid = ?1")?
                .execute([r])?;
            tx.prepare_cached("DELETE FROM memories WHERE rowid = ?1")?
                .execute([r])?;
        }
        let src_where = c.where_clause().replace("m.", "");
        tx.execute(
            &format!("DELETE FROM sources WHERE {src_where}"),
            params_from_iter(c.params.iter()),
        )?;
        append_audit(&tx, vec![entries::scope_erased(scope, rowids.len() as u64)])?;
        // Grants of what it held go with it; so do grants to the user or
        // agent when the scope is exactly that principal.
        match (&scope.user_id, &scope.agent_id, &scope.session_id) {
            (Some(u), None, None) => {
                tx.execute("DELETE FROM grants WHERE grantee_user = ?1", [u])?;
            }
            (None, Some(a), None) => {
                tx.execute("DELETE FROM grants WHERE grantee_agent = ?1", [a])?;
            }
            _ => {}
        }
        // Work on the scope's data, what it was refused and what it shared
        // go with it.
        for table in ["jobs", "rejections", "grants"] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE {src_where}"),
                params_from_iter(c.params.iter()),
            )?;
        }
        mark_erased(&tx)?;
        tx.commit()?;
        Ok((rowids, ids))
    }

    fn rowids_of(conn: &Connection, ids: &[MemoryId]) -> Result<Vec<(MemoryId, i64)>> {
        let mut stmt = conn.prepare_cached("SELECT rowid FROM memories WHERE id = ?1")?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(r) = stmt
                .query_row([id.to_string()], |r| r.get::<_, i64>(0))
                .optional()?
            {
                out.push((*id, r));
            }
        }
        Ok(out)
    }

    /// The "name: content" line of a message, for its neighbours' context.
    fn line_of(tx: &Transaction<'_>, rowid: i64) -> Result<Option<String>> {
        Ok(tx
            .prepare_cached("SELECT name, content FROM memories WHERE rowid = ?1")?
            .query_row([rowid], |r| {
                Ok(super::document::line(
                    r.get::<_, Option<String>>(0)?.as_deref(),
                    &r.get::<_, String>(1)?,
                ))
            })
            .optional()?)
    }

    /// Recomputes the keyword context (previous + next message) of `rowid`.
    fn refresh_context(
        tx: &Transaction<'_>,
        rowid: i64,
        touched: &mut BTreeSet<i64>,
    ) -> Result<()> {
        touched.insert(rowid);
        let prev: Option<i64> = tx
            .prepare_cached("SELECT prev_rowid FROM memories WHERE rowid = ?1")?
            .query_row([rowid], |r| r.get(0))
            .optional()?
            .flatten();
        let next: Option<i64> = tx
            .prepare_cached("SELECT rowid FROM memories WHERE prev_rowid = ?1 LIMIT 1")?
            .query_row([rowid], |r| r.get(0))
            .optional()?;
        let mut lines = Vec::new();
        for n in [prev, next].into_iter().flatten() {
            lines.extend(Self::line_of(tx, n)?);
        }
        let context = super::document::context(lines.iter().map(String::as_str));
        tx.prepare_cached("UPDATE memory_fts SET context = ?1 WHERE rowid = ?2")?
            .execute(params![context, rowid])?;
        Ok(())
    }

    /// Inserts the batch; returns each memory's rowid (`None`: a duplicate,
    /// not stored) and the duplicates.
    fn insert_tx(
        tx: &Transaction<'_>,
        batch: &InsertBatch,
        model: &str,
        touched: &mut BTreeSet<i64>,
    ) -> Result<(Vec<Option<i64>>, InsertOutcome)> {
        for s in &batch.sources {
            tx.prepare_cached("INSERT OR IGNORE INTO sources (id, user_id, agent_id, session_id, content) VALUES (?1, ?2, ?3, ?4, ?5)")?
                .execute(params![s.id.to_string(), s.scope.user_id, s.scope.agent_id, s.scope.session_id, s.content])?;
        }
        let mut rowids = Vec::with_capacity(batch.memories.len());
        let mut outcome = InsertOutcome::default();
        for (i, nm) in batch.memories.iter().enumerate() {
            let m = &nm.memory;
            if let Some(existing) = Self::duplicate_of(tx, m)? {
                outcome.duplicates.push((i, existing));
                rowids.push(None);
                continue;
            }
            // Earlier versions never join a conversation chain.
            let prev: Option<i64> = if m.kind == MemoryKind::Message && m.version_of.is_none() {
                tx.prepare_cached(LAST_MESSAGE_SQL)?
                    .query_row(
                        params![m.scope.user_id, m.scope.agent_id, m.scope.session_id],
                        |r| r.get(0),
                    )
                    .optional()?
            } else {
                None
            };
            let inserted = tx
                .prepare_cached(
                    "INSERT INTO memories (id, user_id, agent_id, session_id, kind, content, role, name, metadata,
                     event_time, recorded_at, updated_at, request_id, source_id, chunk_index, chunk_count,
                     content_hash, embedding_model, prev_rowid, valid_from, valid_to, version_of, status,
                     derived_from, dedup_key, expires_at, used_count, helpful_count, wrong_count, reinforced_at,
                     flags, written_by)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19,
                     ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32)",
                )?
                .execute(params![
                    m.id.to_string(),
                    m.scope.user_id,
                    m.scope.agent_id,
                    m.scope.session_id,
                    m.kind.as_str(),
                    m.content,
                    m.actor.role,
                    m.actor.name,
                    Value::Object(m.metadata.clone()).to_string(),
                    m.event_time.map(ms),
                    ms(m.recorded_at),
                    ms(m.updated_at),
                    m.provenance.request_id.map(|u| u.to_string()),
                    m.provenance.source_id.map(|u| u.to_string()),
                    m.provenance.chunk_index,
                    m.provenance.chunk_count,
                    m.content_hash,
                    nm.vector.as_ref().map(|_| model),
                    prev,
                    m.valid_from.map(ms),
                    m.valid_to.map(ms),
                    m.version_of.map(|u| u.to_string()),
                    m.status.as_str(),
                    ids_json(&m.provenance.derived_from),
                    m.dedup_key,
                    m.expires_at.map(ms),
                    m.usage.used,
                    m.usage.helpful,
                    m.usage.wrong,
                    m.usage.reinforced_at.map(ms),
                    flags_json(&m.flags),
                    m.provenance
                        .written_by
                        .clone()
                        .unwrap_or_else(crate::audit::current_actor),
                ]);
            match inserted {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    return Err(Error::new(
                        ErrorKind::Conflict,
                        format!("memory {} already exists", m.id),
                    ));
                }
                other => other?,
            };
            let rowid = tx.last_insert_rowid();
            tx.prepare_cached(
                "INSERT INTO memory_fts (rowid, body, speaker, context) VALUES (?1, ?2, ?3, '')",
            )?
            .execute(params![
                rowid,
                super::document::body(m),
                super::document::speaker(m)
            ])?;
            if let Some(v) = &nm.vector {
                tx.prepare_cached(
                    "INSERT INTO memory_vectors (rowid, model, vector) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![rowid, model, vector_blob(v)])?;
            }
            Self::refresh_context(tx, rowid, touched)?;
            if let Some(p) = prev {
                Self::refresh_context(tx, p, touched)?;
            }
            rowids.push(Some(rowid));
        }
        Ok((rowids, outcome))
    }

    /// The memory already holding `m`'s dedup key, if any; logs that `m`
    /// was merged into it (with `m`'s provenance).
    fn duplicate_of(tx: &Transaction<'_>, m: &Memory) -> Result<Option<MemoryId>> {
        let Some(key) = &m.dedup_key else {
            return Ok(None);
        };
        let existing: Option<String> = tx
            .prepare_cached("SELECT id FROM memories WHERE dedup_key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()?;
        let Some(existing) = existing else {
            return Ok(None);
        };
        let existing = parse_uuid(&existing)?;
        let mut detail = serde_json::Map::new();
        detail.insert("duplicate".into(), serde_json::json!(m.id));
        if let Ok(Value::Object(p)) = serde_json::to_value(&m.provenance) {
            detail.insert("provenance".into(), Value::Object(p));
        }
        insert_events(
            tx,
            &[MemoryEvent {
                memory_id: existing,
                at: m.recorded_at,
                kind: EventKind::Merged,
                origin: "dedup".into(),
                reason: Some("exact duplicate".into()),
                request_id: m.provenance.request_id,
                detail,
            }],
        )?;
        Ok(Some(existing))
    }

    /// Removes one memory, re-linking its neighbours; returns false if absent.
    fn delete_one(tx: &Transaction<'_>, rowid: i64, touched: &mut BTreeSet<i64>) -> Result<bool> {
        let prev: Option<Option<i64>> = tx
            .prepare_cached("SELECT prev_rowid FROM memories WHERE rowid = ?1")?
            .query_row([rowid], |r| r.get(0))
            .optional()?;
        let Some(prev) = prev else { return Ok(false) };
        touched.insert(rowid);
        let next: Option<i64> = tx
            .prepare_cached("SELECT rowid FROM memories WHERE prev_rowid = ?1 LIMIT 1")?
            .query_row([rowid], |r| r.get(0))
            .optional()?;
        tx.prepare_cached("DELETE FROM memory_fts WHERE rowid = ?1")?
            .execute([rowid])?;
        tx.prepare_cached("DELETE FROM memory_vectors WHERE rowid = ?1")?
            .execute([rowid])?;
        tx.prepare_cached("DELETE FROM memories WHERE rowid = ?1")?
            .execute([rowid])?;
        if let Some(n) = next {
            tx.prepare_cached("UPDATE memories SET prev_rowid = ?1 WHERE rowid = ?2")?
                .execute(params![prev, n])?;
            Self::refresh_context(tx, n, touched)?;
        }
        if let Some(p) = prev {
            Self::refresh_context(tx, p, touched)?;
        }
        Ok(true)
    }

    /// Writes `batch` in one transaction, audited (an insert) or not (a
    /// copy from another store, whose audit chain comes with it, and which
    /// is refused rather than merged when a memory's dedup key is taken),
    /// with `more` written in the same transaction.
    fn write_batch(
        &self,
        batch: InsertBatch,
        audited: bool,
        more: impl FnOnce(&Transaction<'_>) -> Result<()>,
    ) -> Result<InsertOutcome> {
        if batch.memories.is_empty()
            && batch.sources.is_empty()
            && batch.jobs.is_empty()
            && batch.job_step.is_none()
            && batch.events.is_empty()
            && batch.rejections.is_empty()
            && audited
        {
            return Ok(InsertOutcome::default());
        }
        let dim = self.vectors_read().dim();
        if batch
            .memories
            .iter()
            .any(|m| m.vector.as_ref().is_some_and(|v| v.len() != dim))
        {
            return Err(Error::invalid(format!(
                "vectors must have {dim} dimensions"
            )));
        }
        let mut conn = self.writer()?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut touched = BTreeSet::new();
        apply_step(&tx, batch.job_step)?;
        let (rowids, outcome) = Self::insert_tx(&tx, &batch, &self.model, &mut touched)?;
        if let (false, Some((i, _))) = (audited, outcome.duplicates.first()) {
            // A copy never merges (the source held each key once): refused,
            // and the transaction rolls back with nothing written.
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("record {i} of the page duplicates a stored memory's key"),
            ));
        }
        enqueue(&tx, &batch.jobs)?;
        insert_events(&tx, &batch.events)?;
        insert_rejections(&tx, &batch.rejections)?;
        if audited {
            let mut audit: Vec<entries::Item> = batch
                .memories
                .iter()
                .zip(&rowids)
                .filter(|(_, r)| r.is_some())
                .map(|(nm, _)| entries::added(&nm.memory))
                .collect();
            audit.extend(entries::events(&batch.events));
            audit.extend(batch.rejections.iter().map(entries::rejected));
            append_audit(&tx, audit)?;
        }
        more(&tx)?;
        let keywords = Self::keyword_changes(&tx, &touched)?;
        tx.commit()?;
        // Publish to the derived indexes while still holding the writer lock,
        // so they apply writes in commit order.
        let mut index = self.vectors_write();
        for (nm, rowid) in batch.memories.iter().zip(&rowids) {
            if let (Some(v), Some(rowid)) = (&nm.vector, *rowid) {
                let m = &nm.memory;
                index.upsert(SlotFields::of(rowid, m), v);
            }
        }
        drop(index);
        self.apply_keywords(keywords);
        for (nm, rowid) in batch.memories.iter().zip(&rowids) {
            if rowid.is_some() && !nm.memory.usage.is_unused() {
                self.publish_usage(nm.memory.id, nm.memory.usage);
            }
        }
        Ok(outcome)
    }

    /// Keyword candidates straight from FTS5's `bm25()`: the reference the
    /// in-memory mirror is tested against.
    #[cfg(test)]
    fn fts5_keyword_candidates(&self, q: &KeywordQuery<'_>) -> Result<Vec<Candidate>> {
        let tokens = self.query_tokens(q.terms)?;
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        let expr: Vec<String> = tokens
            .iter()
            .map(|t| format!("\"{}\"", t.replace('"', "\"\"")))
            .collect();
        let mut c = Conditions::default();
        c.push("memory_fts MATCH ?", expr.join(" OR "));
        c.scope(q.scope);
        c.filter(q.filter);
        let weights = super::keywords::COLUMN_WEIGHTS
            .map(|w| w.to_string())
            .join(", ");
        let sql = format!(
            "SELECT m.id, bm25(memory_fts, {weights}) AS s FROM memory_fts
             JOIN memories m ON m.rowid = memory_fts.rowid WHERE {} ORDER BY s, m.rowid LIMIT {}",
            c.where_clause(),
            q.limit
        );
        let conn = self.reader();
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(params_from_iter(c.params.iter()), |r| {
            // FTS5's bm25() is negative (smaller is better); flip it.
            Ok(Candidate {
                id: parse_uuid(&r.get::<_, String>(0)?)?,
                score: -(r.get::<_, f64>(1)? as f32),
                time: DateTime::default(),
                recorded_at: DateTime::default(),
                kind: MemoryKind::default(),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The rowids passing the metadata part of a filter (`None`: no such part).
    fn allowed_for(&self, scope: &Scope, filter: &Filter) -> Result<Option<HashSet<i64>>> {
        if filter.metadata.is_empty() {
            Ok(None)
        } else {
            self.allowed_rowids(scope, filter).map(Some)
        }
    }

    fn allowed_rowids(&self, scope: &Scope, filter: &Filter) -> Result<HashSet<i64>> {
        let mut c = Conditions::default();
        c.scope(scope);
        c.filter(filter);
        let conn = self.reader();
        let mut stmt = conn.prepare(&format!(
            "SELECT m.rowid FROM memories m WHERE {}",
            c.where_clause()
        ))?;
        let rows = stmt.query_map(params_from_iter(c.params.iter()), |r| r.get::<_, i64>(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

fn parse_cursor(cursor: &str) -> Result<i64> {
    cursor
        .strip_prefix('r')
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::invalid("invalid cursor"))
}

impl Store for SqliteStore {
    fn active_model(&self) -> &str {
        &self.model
    }

    fn insert(&self, batch: InsertBatch) -> Result<InsertOutcome> {
        self.write_batch(batch, true, |_| Ok(()))
    }

    fn find_keys(&self, keys: &[String]) -> Result<Vec<Option<MemoryId>>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached("SELECT id FROM memories WHERE dedup_key = ?1")?;
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            let id: Option<String> = stmt.query_row([k], |r| r.get(0)).optional()?;
            out.push(id.as_deref().map(parse_uuid).transpose()?);
        }
        Ok(out)
    }

    fn history(&self, id: MemoryId) -> Result<(Vec<Memory>, Vec<MemoryEvent>)> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {MEMORY_COLUMNS} FROM memories m WHERE m.id = ?1 OR m.version_of = ?1
             ORDER BY coalesce(m.valid_from, m.event_time, m.recorded_at), m.rowid"
        ))?;
        let mut versions: Vec<Memory> = stmt
            .query_map([id.to_string()], row_to_memory)?
            .collect::<rusqlite::Result<_>>()?;
        if versions.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        // The current version last, whatever its validity says.
        if let Some(pos) = versions.iter().position(|m| m.id == id) {
            let current = versions.remove(pos);
            versions.push(current);
        }
        let mut stmt = conn.prepare_cached(
            "SELECT memory_id, at, kind, origin, reason, request_id, detail FROM memory_events
             WHERE memory_id = ?1 ORDER BY seq",
        )?;
        let events = stmt
            .query_map([id.to_string()], event_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok((versions, events))
    }

    fn get_many(&self, ids: &[MemoryId]) -> Result<Vec<Memory>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {MEMORY_COLUMNS} FROM memories m WHERE m.id = ?1"
        ))?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(m) = stmt.query_row([id.to_string()], row_to_memory).optional()? {
                out.push(m);
            }
        }
        Ok(out)
    }

    fn list(&self, q: &ListQuery<'_>) -> Result<Page> {
        let mut c = Conditions::default();
        if let Some(scope) = q.scope {
            c.scope(scope);
        }
        c.filter(q.filter);
        let (cmp, dir) = match q.order {
            Order::Ascending => (">", "ASC"),
            Order::Descending => ("<", "DESC"),
        };
        if let Some(cursor) = q.cursor {
            c.push(&format!("m.rowid {cmp} ?"), parse_cursor(cursor)?);
        }
        let limit = q.limit.clamp(1, 10_000);
        let sql = format!(
            "SELECT {MEMORY_COLUMNS}, m.rowid FROM memories m WHERE {} ORDER BY m.rowid {dir} LIMIT {}",
            c.where_clause(),
            limit + 1
        );
        let conn = self.reader();
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(params_from_iter(c.params.iter()), |r| {
            Ok((row_to_memory(r)?, r.get::<_, i64>(MEMORY_COUNT)?))
        })?;
        let mut memories = Vec::new();
        let mut last = None;
        let mut more = false;
        for row in rows {
            let (m, rowid) = row?;
            if memories.len() == limit {
                more = true;
                break;
            }
            memories.push(m);
            last = Some(rowid);
        }
        Ok(Page {
            memories,
            next_cursor: if more {
                last.map(|r| format!("r{r}"))
            } else {
                None
            },
        })
    }

    fn scopes(
        &self,
        within: Option<&Scope>,
        filter: &Filter,
        limit: usize,
    ) -> Result<Vec<ScopeSummary>> {
        let mut c = Conditions::default();
        if let Some(scope) = within {
            c.scope(scope);
        }
        c.filter(filter);
        let sql = format!(
            "SELECT m.user_id, m.agent_id, m.session_id, COUNT(*), MIN(m.recorded_at), MAX(m.recorded_at) \
             FROM memories m WHERE {} GROUP BY m.user_id, m.agent_id, m.session_id \
             ORDER BY MAX(m.recorded_at) DESC, m.user_id NULLS FIRST, m.agent_id NULLS FIRST, \
             m.session_id NULLS FIRST LIMIT {}",
            c.where_clause(),
            limit.max(1)
        );
        let conn = self.reader();
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(params_from_iter(c.params.iter()), |r| {
            Ok(ScopeSummary {
                scope: Scope {
                    user_id: r.get(0)?,
                    agent_id: r.get(1)?,
                    session_id: r.get(2)?,
                },
                memories: r.get::<_, i64>(3)? as u64,
                first_recorded: from_ms(r.get(4)?)?,
                last_recorded: from_ms(r.get(5)?)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn update(&self, u: Update) -> Result<()> {
        let Update {
            memory: m,
            vector,
            previous,
            events,
            job_step,
            jobs,
            expected,
        } = u;
        let dim = self.vectors_read().dim();
        if vector.as_ref().is_some_and(|v| v.len() != dim) {
            return Err(Error::invalid(format!(
                "vectors must have {dim} dimensions"
            )));
        }
        if previous
            .as_ref()
            .is_some_and(|p| p.version_of != Some(m.id))
        {
            return Err(Error::invalid("a previous version must name its memory"));
        }
        let mut conn = self.writer()?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let found: Option<(i64, Option<i64>)> = tx
            .prepare_cached("SELECT rowid, prev_rowid FROM memories WHERE id = ?1")?
            .query_row([m.id.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((rowid, prev)) = found else {
            return Err(Error::not_found(format!("memory {} not found", m.id)));
        };
        if let Some(expected) = &expected {
            let stored = tx
                .prepare_cached(&format!(
                    "SELECT {MEMORY_COLUMNS} FROM memories m WHERE m.rowid = ?1"
                ))?
                .query_row([rowid], row_to_memory)?;
            if !super::unchanged_since(expected, &stored) {
                return Err(Error::concurrent_change());
            }
        }
        apply_step(&tx, job_step)?;
        let mut touched = BTreeSet::from([rowid]);
        // The earlier version first: a row of its own with the stored vector.
        let mut version_rowid = None;
        if let Some(p) = &previous {
            let batch = InsertBatch {
                memories: vec![super::NewMemory {
                    memory: p.clone(),
                    vector: None,
                }],
                sources: Vec::new(),
                ..Default::default()
            };
            let (rowids, _) = Self::insert_tx(&tx, &batch, &self.model, &mut touched)?;
            let r = rowids.into_iter().flatten().next().ok_or_else(|| {
                Error::new(
                    ErrorKind::Internal,
                    "an earlier version was taken for a duplicate",
                )
            })?;
            tx.prepare_cached(
                "INSERT INTO memory_vectors (rowid, model, vector)
                 SELECT ?1, model, vector FROM memory_vectors WHERE rowid = ?2",
            )?
            .execute(params![r, rowid])?;
            tx.prepare_cached("UPDATE memories SET embedding_model = (SELECT embedding_model FROM memories WHERE rowid = ?2) WHERE rowid = ?1")?
                .execute(params![r, rowid])?;
            version_rowid = Some(r);
        }
        let updated = tx
            .prepare_cached(
                "UPDATE memories SET kind = ?1, content = ?2, role = ?3, name = ?4, metadata = ?5, event_time = ?6,
                 updated_at = ?7, content_hash = ?8, embedding_model = ?9, request_id = ?10, derived_from = ?11,
                 valid_from = ?12, valid_to = ?13, status = ?14, dedup_key = ?15, expires_at = ?16,
                 used_count = ?17, helpful_count = ?18, wrong_count = ?19, reinforced_at = ?20, flags = ?22,
                 written_by = COALESCE(?23, written_by)
                 WHERE rowid = ?21",
            )?
            .execute(params![
                m.kind.as_str(),
                m.content,
                m.actor.role,
                m.actor.name,
                Value::Object(m.metadata.clone()).to_string(),
                m.event_time.map(ms),
                ms(m.updated_at),
                m.content_hash,
                if vector.is_some() { Some(self.model.as_str()) } else { m.embedding_model.as_deref() },
                m.provenance.request_id.map(|u| u.to_string()),
                ids_json(&m.provenance.derived_from),
                m.valid_from.map(ms),
                m.valid_to.map(ms),
                m.status.as_str(),
                m.dedup_key,
                m.expires_at.map(ms),
                m.usage.used,
                m.usage.helpful,
                m.usage.wrong,
                m.usage.reinforced_at.map(ms),
                rowid,
                flags_json(&m.flags),
                m.provenance.written_by,
            ]);
        match updated {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    "another memory already holds this content (an exact duplicate)",
                ));
            }
            other => other?,
        };
        tx.prepare_cached("UPDATE memory_fts SET body = ?1, speaker = ?2 WHERE rowid = ?3")?
            .execute(params![
                super::document::body(&m),
                super::document::speaker(&m),
                rowid
            ])?;
        if let Some(v) = &vector {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO memory_vectors (rowid, model, vector) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![rowid, self.model, vector_blob(v)])?;
        }
        let next: Option<i64> = tx
            .prepare_cached("SELECT rowid FROM memories WHERE prev_rowid = ?1 LIMIT 1")?
            .query_row([rowid], |r| r.get(0))
            .optional()?;
        for n in [prev, next].into_iter().flatten() {
            Self::refresh_context(&tx, n, &mut touched)?;
        }
        insert_events(&tx, &events)?;
        let audit = if events.is_empty() {
            vec![entries::updated(m.id)]
        } else {
            entries::events(&events)
        };
        append_audit(&tx, audit)?;
        enqueue(&tx, &jobs)?;
        // The vectors' slot fields (kind, time, status, validity) may have
        // changed too.
        let mut stored_vectors = Vec::new();
        for r in [Some(rowid), version_rowid].into_iter().flatten() {
            let blob: Option<Vec<u8>> = tx
                .prepare_cached(
                    "SELECT vector FROM memory_vectors WHERE rowid = ?1 AND model = ?2",
                )?
                .query_row(params![r, self.model], |row| row.get(0))
                .optional()?;
            if let Some(b) = blob {
                stored_vectors.push((r, b));
            }
        }
        let keywords = Self::keyword_changes(&tx, &touched)?;
        tx.commit()?;
        let mut index = self.vectors_write();
        for (r, blob) in stored_vectors {
            let fields = if r == rowid {
                &m
            } else {
                previous.as_ref().unwrap_or(&m)
            };
            index.upsert(SlotFields::of(r, fields), &blob_vector(&blob));
        }
        drop(index);
        self.apply_keywords(keywords);
        self.publish_usage(m.id, m.usage);
        Ok(())
    }

    fn delete(&self, ids: &[MemoryId]) -> Result<u64> {
        let mut conn = self.writer()?;
        fts_secure_delete(&conn, true)?;
        let result = Self::delete_tx(&mut conn, ids);
        fts_secure_delete(&conn, false)?;
        let (n, rowids, keywords) = result?;
        // Old page images of what was erased stay in the write-ahead log
        // until a checkpoint copies the log back and truncates it.
        checkpoint(&conn);
        drop(conn);
        let mut index = self.vectors_write();
        for (_, r) in &rowids {
            index.remove(*r);
        }
        drop(index);
        self.apply_keywords(keywords);
        let mut usage = self.usage.write().unwrap_or_else(|e| e.into_inner());
        for (id, _) in &rowids {
            usage.remove(id);
        }
        Ok(n)
    }

    fn delete_scope(&self, scope: &Scope) -> Result<u64> {
        scope.validate()?;
        let mut conn = self.writer()?;
        fts_secure_delete(&conn, true)?;
        let result = Self::delete_scope_tx(&mut conn, scope);
        fts_secure_delete(&conn, false)?;
        let (rowids, ids) = result?;
        checkpoint(&conn);
        drop(conn);
        let mut index = self.vectors_write();
        for r in &rowids {
            index.remove(*r);
        }
        drop(index);
        // Whole exact scopes go, so no surviving keyword document changes.
        self.apply_keywords(rowids.iter().map(|&r| (r, None)).collect());
        let mut usage = self.usage.write().unwrap_or_else(|e| e.into_inner());
        for id in &ids {
            usage.remove(id);
        }
        Ok(rowids.len() as u64)
    }

    fn derived_from_any(&self, ids: &[MemoryId]) -> Result<Vec<MemoryId>> {
        let wanted: HashSet<MemoryId> = ids.iter().copied().collect();
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT id, derived_from FROM memories WHERE derived_from IS NOT NULL",
        )?;
        let mut out = BTreeSet::new();
        for row in stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
        })? {
            let (id, from) = row?;
            if parse_ids(from)?.iter().any(|d| wanted.contains(d)) {
                out.insert(parse_uuid(&id)?);
            }
        }
        Ok(out.into_iter().collect())
    }

    fn check(&self) -> Result<Vec<String>> {
        // The writer: FTS5 takes its integrity check as an INSERT.
        let conn = self.writer()?;
        let mut problems: Vec<String> = Vec::new();
        let mut stmt = conn.prepare("PRAGMA integrity_check")?;
        for row in stmt.query_map([], |r| r.get::<_, String>(0))? {
            let line = row?;
            if line != "ok" {
                problems.push(format!("database: {line}"));
            }
        }
        // FTS5 compares its index with the rows it was built from.
        if let Err(e) = conn.execute(
            "INSERT INTO memory_fts(memory_fts) VALUES('integrity-check')",
            [],
        ) {
            problems.push(format!("keyword index: {e}"));
        }
        let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0));
        let missing_keywords = count(
            "SELECT count(*) FROM memories m WHERE NOT EXISTS (SELECT 1 FROM memory_fts f WHERE f.rowid = m.rowid)",
        )?;
        if missing_keywords > 0 {
            problems.push(format!(
                "{missing_keywords} memories without a keyword entry"
            ));
        }
        let stray_keywords = count(
            "SELECT count(*) FROM memory_fts f WHERE NOT EXISTS (SELECT 1 FROM memories m WHERE m.rowid = f.rowid)",
        )?;
        if stray_keywords > 0 {
            problems.push(format!("{stray_keywords} keyword entries without a memory"));
        }
        let missing_vectors = count(
            "SELECT count(*) FROM memories m WHERE m.embedding_model IS NOT NULL
             AND NOT EXISTS (SELECT 1 FROM memory_vectors v WHERE v.rowid = m.rowid)",
        )?;
        if missing_vectors > 0 {
            problems.push(format!("{missing_vectors} memories without their vector"));
        }
        let stray_vectors = count(
            "SELECT count(*) FROM memory_vectors v WHERE NOT EXISTS (SELECT 1 FROM memories m WHERE m.rowid = v.rowid)",
        )?;
        if stray_vectors > 0 {
            problems.push(format!("{stray_vectors} vectors without a memory"));
        }
        let audit = crate::audit::sql::check(&conn, "store_meta")?;
        if !audit.ok {
            problems.push("audit log: the hash chain does not verify".into());
        }
        Ok(problems)
    }

    fn put_grant(&self, g: &Grant) -> Result<()> {
        let mut conn = self.writer()?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        insert_grant(&tx, g)?;
        append_audit(&tx, vec![entries::grant("grant", g)])?;
        tx.commit()?;
        Ok(())
    }

    fn revoke_grant(&self, id: uuid::Uuid, at: DateTime<Utc>) -> Result<Option<Grant>> {
        let mut conn = self.writer()?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let changed = tx.execute(
            "UPDATE grants SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            params![id.to_string(), ms(at)],
        )?;
        let grant = select_grants(
            &tx,
            &GrantQuery {
                id: Some(id),
                include_revoked: true,
                limit: 1,
                ..Default::default()
            },
        )?
        .pop();
        if let (1, Some(g)) = (changed, &grant) {
            append_audit(&tx, vec![entries::grant("revoke_grant", g)])?;
        }
        tx.commit()?;
        Ok(grant)
    }

    fn grants(&self, query: &GrantQuery<'_>) -> Result<Vec<Grant>> {
        select_grants(&self.reader(), query)
    }

    fn audit(&self, after: i64, limit: usize) -> Result<Vec<crate::audit::AuditEntry>> {
        Ok(crate::audit::sql::entries(&self.reader(), after, limit)?)
    }

    fn export(
        &self,
        table: super::transfer::Table,
        after: i64,
        limit: usize,
    ) -> Result<super::transfer::ExportPage> {
        self.export_page(table, after, limit)
    }

    fn import(
        &self,
        records: Vec<super::transfer::Record>,
        progress: &super::transfer::Progress,
    ) -> Result<()> {
        self.import_records(records, progress)
    }

    fn import_progress(&self, source: &str, table: super::transfer::Table) -> Result<i64> {
        Ok(self
            .meta(&table.progress_key(source))?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    fn store_id(&self) -> Result<String> {
        self.store_identity()
    }

    fn verify_audit(&self) -> Result<crate::audit::AuditCheck> {
        Ok(crate::audit::sql::check(&self.reader(), "store_meta")?)
    }

    fn compact(&self) -> Result<()> {
        let conn = self.writer()?;
        // Rebuilding the keyword index from its rows drops every token of
        // deleted rows that ordinary writes (secure-delete off) left in its
        // segments; merging them ('optimize') is not enough.
        conn.execute_batch(
            "INSERT INTO memory_fts(memory_fts) VALUES('rebuild');
             DELETE FROM store_meta WHERE key = 'erased_since_compact';
             VACUUM",
        )?;
        checkpoint(&conn);
        Ok(())
    }

    fn erased_since_compaction(&self) -> Result<bool> {
        let conn = self.reader();
        let found = conn
            .prepare_cached("SELECT 1 FROM store_meta WHERE key = 'erased_since_compact'")?
            .query_row([], |_| Ok(()))
            .optional()?;
        Ok(found.is_some())
    }

    fn catch_up(&self) -> Result<()> {
        // Waits for a write of this process in flight (a short transaction):
        // the writer connection is the only one whose `data_version` tells
        // other processes' commits from this one's.
        self.writer().map(drop)
    }

    fn keyword_candidates(&self, q: &KeywordQuery<'_>) -> Result<Vec<Candidate>> {
        self.catch_up_if_idle()?;
        if q.terms.is_empty() || q.limit == 0 {
            return Ok(Vec::new());
        }
        let tokens = self.query_tokens(q.terms)?;
        // Metadata conditions are resolved in SQL first, so top-k stays exact.
        let allowed = self.allowed_for(q.scope, q.filter)?;
        // Recursive: see `vectors_read`.
        let hits =
            self.keywords_read()
                .search(q.scope, q.filter, allowed.as_ref(), &tokens, q.limit);
        Ok(hits.into_iter().map(candidate).collect())
    }

    fn vector_candidates(&self, q: &VectorQuery<'_>) -> Result<Vec<Candidate>> {
        self.catch_up_if_idle()?;
        let allowed = self.allowed_for(q.scope, q.filter)?;
        let hits = self.vectors.read_recursive().search(
            q.scope,
            q.filter,
            allowed.as_ref(),
            q.vector,
            q.limit,
        );
        Ok(hits.into_iter().map(candidate).collect())
    }

    fn vectors(&self, ids: &[MemoryId]) -> Result<Vec<Option<Vec<f32>>>> {
        Ok(self.vectors_read().vectors(ids))
    }

    fn vector_scores(&self, ids: &[MemoryId], vector: &[f32]) -> Result<Vec<Candidate>> {
        Ok(self
            .vectors_read()
            .scores(ids, vector)
            .into_iter()
            .map(candidate)
            .collect())
    }

    fn windows(&self, ids: &[MemoryId], before: usize, after: usize) -> Result<Vec<Vec<MemoryId>>> {
        self.catch_up_if_idle()?;
        // Recursive for the same reason as `vectors_read`.
        let index = self.keywords_read();
        Ok(index.windows(ids, before, after))
    }

    fn missing_vectors(&self, limit: usize) -> Result<Vec<Memory>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {MEMORY_COLUMNS} FROM memories m WHERE NOT EXISTS
             (SELECT 1 FROM memory_vectors v WHERE v.rowid = m.rowid AND v.model = ?1) ORDER BY m.rowid LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![self.model, limit as i64], row_to_memory)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn source(&self, id: MemoryId) -> Result<Option<Source>> {
        let conn = self.reader();
        let source = conn
            .prepare_cached(
                "SELECT user_id, agent_id, session_id, content FROM sources WHERE id = ?1",
            )?
            .query_row([id.to_string()], |r| {
                Ok(Source {
                    id,
                    scope: Scope {
                        user_id: r.get(0)?,
                        agent_id: r.get(1)?,
                        session_id: r.get(2)?,
                    },
                    content: r.get(3)?,
                })
            })
            .optional()?;
        Ok(source)
    }

    fn claim_job(&self, now: DateTime<Utc>, lease: chrono::Duration) -> Result<Option<Job>> {
        let conn = self.writer()?;
        let job = conn
            .prepare_cached(&format!(
                "UPDATE jobs SET state = 'running', lease_until = ?2, attempts = attempts + 1, updated_at = ?1
                 WHERE id = (SELECT id FROM jobs WHERE (state = 'pending' AND run_after <= ?1)
                             OR (state = 'running' AND lease_until <= ?1) ORDER BY id LIMIT 1)
                 RETURNING {JOB_COLUMNS}"
            ))?
            .query_row(params![ms(now), ms(now + lease)], job_row)
            .optional()?;
        Ok(job)
    }

    fn prune_jobs(&self, before: DateTime<Utc>) -> Result<u64> {
        let conn = self.writer()?;
        let n = conn
            .prepare_cached("DELETE FROM jobs WHERE state = 'done' AND updated_at < ?1")?
            .execute([ms(before)])?;
        Ok(n as u64)
    }

    fn request(&self, key: &str) -> Result<Option<super::RequestRecord>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT fingerprint, committed_at, status, answer, attempt FROM requests WHERE key = ?1",
        )?;
        let record = stmt
            .query_row([key], |r| {
                let status: Option<i64> = r.get(2)?;
                let answer: Option<Vec<u8>> = r.get(3)?;
                Ok(super::RequestRecord {
                    fingerprint: r.get(0)?,
                    committed: r.get::<_, Option<i64>>(1)?.is_some(),
                    attempt: r.get(4)?,
                    answer: status.zip(answer).map(|(s, a)| (s as u16, a)),
                })
            })
            .optional()?;
        Ok(record)
    }

    fn record_answer(
        &self,
        mark: &crate::audit::RequestMark,
        status: u16,
        answer: &[u8],
    ) -> Result<()> {
        let now = Utc::now().timestamp_millis();
        self.writer()?
            .prepare_cached(
                "INSERT INTO requests (key, fingerprint, status, answer, answered_at, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5)
                 ON CONFLICT(key) DO UPDATE SET status = excluded.status, answer = excluded.answer,
                     answered_at = excluded.answered_at
                 WHERE requests.attempt IS NULL OR requests.attempt = ?6",
            )?
            .execute(params![
                mark.key,
                mark.fingerprint,
                status,
                answer,
                now,
                mark.attempt
            ])?;
        Ok(())
    }

    fn prune_requests(&self, before: DateTime<Utc>) -> Result<u64> {
        let n = self
            .writer()?
            .prepare_cached("DELETE FROM requests WHERE created_at < ?1")?
            .execute([ms(before)])?;
        Ok(n as u64)
    }

    fn usage(&self, ids: &[MemoryId]) -> Result<Vec<Usage>> {
        let map = self.usage.read().unwrap_or_else(|e| e.into_inner());
        Ok(ids
            .iter()
            .map(|id| map.get(id).copied().unwrap_or_default())
            .collect())
    }

    fn expired(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Memory>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {MEMORY_COLUMNS} FROM memories m
             WHERE m.expires_at IS NOT NULL AND m.status = 'active' AND m.expires_at <= ?1
             ORDER BY m.expires_at LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![ms(now), limit as i64], row_to_memory)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn rejections(
        &self,
        scope: Option<&Scope>,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<Rejection>> {
        let mut c = Conditions::default();
        if let Some(scope) = scope {
            c.scope(scope);
        }
        c.push("m.seq > ?", after_seq);
        let sql = format!(
            "SELECT m.seq, m.user_id, m.agent_id, m.session_id, m.at, m.request_id, m.kind, m.content,
             m.role, m.name, m.event_time, m.admission FROM rejections m WHERE {} ORDER BY m.seq LIMIT {}",
            c.where_clause(),
            limit
        );
        let conn = self.reader();
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(params_from_iter(c.params.iter()), rejection_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn update_job(&self, id: i64, u: JobUpdate, now: DateTime<Utc>) -> Result<()> {
        let conn = self.writer()?;
        let n = conn
            .prepare_cached(
                "UPDATE jobs SET state = coalesce(?2, state), plan = coalesce(plan, ?3),
                 last_error = coalesce(?4, last_error), run_after = coalesce(?5, run_after),
                 cost = coalesce(?6, cost), updated_at = ?7,
                 lease_until = CASE WHEN coalesce(?2, state) = 'running' THEN lease_until END,
                 payload = coalesce(?8, payload)
                 WHERE id = ?1",
            )?
            .execute(params![
                id,
                u.state.map(JobState::as_str),
                u.plan.map(|p| p.to_string()),
                u.error,
                u.run_after.map(ms),
                u.cost.map(|c| Value::Object(c).to_string()),
                ms(now),
                u.payload.map(|p| Value::Object(p).to_string()),
            ])?;
        if n == 0 {
            return Err(Error::not_found(format!("job {id} not found")));
        }
        Ok(())
    }

    fn job(&self, id: i64) -> Result<Option<Job>> {
        let conn = self.reader();
        let job = conn
            .prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))?
            .query_row([id], job_row)
            .optional()?;
        Ok(job)
    }

    fn jobs(&self, q: &JobQuery<'_>) -> Result<Vec<Job>> {
        let mut c = Conditions::default();
        if let Some(scope) = q.scope {
            c.scope(scope);
        }
        if let Some(state) = q.state {
            c.push("m.state = ?", state.as_str().to_owned());
        }
        if let Some(before) = q.before {
            c.push("m.id < ?", before);
        }
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs m WHERE {} ORDER BY m.id DESC LIMIT {}",
            c.where_clause(),
            q.limit.max(1)
        );
        let conn = self.reader();
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(params_from_iter(c.params.iter()), job_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn job_counts(&self) -> Result<JobCounts> {
        let conn = self.reader();
        let mut counts = JobCounts::default();
        let mut stmt = conn.prepare_cached("SELECT state, count(*) FROM jobs GROUP BY state")?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
            let (state, n) = row?;
            let n = n as u64;
            match JobState::parse(&state)? {
                JobState::Pending => counts.pending = n,
                JobState::Running => counts.running = n,
                JobState::Done => counts.done = n,
                JobState::Failed => counts.failed = n,
            }
        }
        Ok(counts)
    }

    fn stats(&self) -> Result<StoreStats> {
        let conn = self.reader();
        let mut stats = StoreStats::default();
        let mut stmt = conn.prepare("SELECT kind, count(*) FROM memories GROUP BY kind")?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
            let (k, n) = row?;
            stats.memories += n as u64;
            stats.by_kind.insert(k, n as u64);
        }
        let mut stmt = conn.prepare("SELECT model, count(*) FROM memory_vectors GROUP BY model")?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
            let (k, n) = row?;
            stats.vectors_by_model.insert(k, n as u64);
        }
        stats.keyword_entries = conn.query_row("SELECT count(*) FROM memory_fts", [], |r| {
            r.get::<_, i64>(0)
        })? as u64;
        stats.users = conn.query_row(
            "SELECT count(DISTINCT user_id) FROM memories WHERE user_id IS NOT NULL",
            [],
            |r| r.get::<_, i64>(0),
        )? as u64;
        let wal = PathBuf::from(format!("{}-wal", self.path.display()));
        stats.disk_bytes = std::fs::metadata(&self.path)
            .ok()
            .map(|m| m.len() + std::fs::metadata(&wal).map(|w| w.len()).unwrap_or(0));
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewMemory;

    #[test]
    fn old_schema_files_are_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let mut conn = Connection::open(&path).unwrap();
            schema::migrate_to(&mut conn, 1).unwrap();
            conn.execute(
                "INSERT INTO memories (id, user_id, kind, content, metadata, recorded_at, updated_at, content_hash)
                 VALUES ('0190a000-0000-7000-8000-000000000001', 'u', 'message', 'hello', '{}', 0, 0, 'h')",
                [],
            )
            .unwrap();
        }
        let store = SqliteStore::open(SqliteStoreOptions::new(&path, "m", 4)).unwrap();
        let page = store
            .list(&ListQuery {
                scope: None,
                filter: &Filter::default(),
                cursor: None,
                limit: 10,
                order: Order::Ascending,
            })
            .unwrap();
        assert_eq!(page.memories.len(), 1);
        assert_eq!(page.memories[0].content, "hello");
        assert!(
            store.source(MemoryId::nil()).unwrap().is_none(),
            "v2 table exists"
        );
        let v: i64 = lock(&store.writer)
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v as usize, schema::SCHEMA_VERSION);
    }

    /// Another process's commit reaches search even while this process's
    /// writer is busy (a write or a reload on another thread): `catch_up`
    /// waits for it instead of letting one channel read stale indexes.
    #[test]
    fn search_catches_up_with_other_processes_even_while_writing() {
        use crate::store::conformance::{insert, memory};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared.db");
        let server = SqliteStore::open(SqliteStoreOptions::new(&path, "m", 4)).unwrap();
        let cli = SqliteStore::open(SqliteStoreOptions::new(&path, "m", 4)).unwrap();
        let m = memory(Scope::user("u"), "written by the CLI", None);
        insert(&cli, vec![(m.clone(), Some(vec![1.0, 0.0, 0.0, 0.0]))]);
        let held = std::sync::Barrier::new(2);
        std::thread::scope(|t| {
            t.spawn(|| {
                let _busy = lock(&server.writer);
                held.wait();
                std::thread::sleep(std::time::Duration::from_millis(200));
            });
            held.wait();
            server.catch_up().unwrap();
        });
        // Candidates read while a write is in flight (they never wait).
        let _writing = lock(&server.writer);
        let found = server
            .vector_candidates(&VectorQuery {
                scope: &Scope::user("u"),
                filter: &Filter::default(),
                vector: &[1.0, 0.0, 0.0, 0.0],
                limit: 5,
            })
            .unwrap();
        assert_eq!(found.iter().map(|c| c.id).collect::<Vec<_>>(), [m.id]);
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 999)
            .unwrap();
        let err = SqliteStore::open(SqliteStoreOptions::new(&path, "m", 4))
            .err()
            .unwrap();
        assert_eq!(err.kind(), ErrorKind::Conflict);
    }
    fn message(scope: &Scope, content: &str, name: &str) -> NewMemory {
        let now = chrono::Utc::now();
        NewMemory {
            memory: Memory {
                id: MemoryId::now_v7(),
                scope: scope.clone(),
                kind: MemoryKind::Message,
                content: content.into(),
                actor: Actor {
                    role: Some("user".into()),
                    name: Some(name.into()),
                },
                metadata: Default::default(),
                event_time: None,
                recorded_at: now,
                updated_at: now,
                provenance: Provenance::default(),
                content_hash: crate::model::content_hash(content),
                embedding_model: None,
                valid_from: None,
                valid_to: None,
                version_of: None,
                status: Default::default(),
                dedup_key: None,
                expires_at: None,
                usage: Default::default(),
                flags: Vec::new(),
            },
            vector: None,
        }
    }

    fn assert_mirror_matches_fts5(store: &SqliteStore, scope: &Scope, query: &str) {
        let terms = crate::text::query_terms(query);
        let q = KeywordQuery {
            scope,
            filter: &Filter::default(),
            terms: &terms,
            limit: 7,
        };
        let got = store.keyword_candidates(&q).unwrap();
        let want = store.fts5_keyword_candidates(&q).unwrap();
        assert_eq!(got.len(), want.len(), "{query}: {got:?} vs {want:?}");
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g.score - w.score).abs() <= 1e-4 * w.score.abs().max(1.0),
                "{query}: {got:?} vs {want:?}"
            );
        }
    }

    /// The in-memory chain gives every memory the neighbours `prev_rowid` says.
    fn assert_chain_matches_sql(store: &SqliteStore, ids: &[MemoryId]) {
        let conn = store.reader();
        let id_at = |sql: &str, id: &MemoryId| -> Option<MemoryId> {
            conn.query_row(sql, [id.to_string()], |r| r.get::<_, String>(0))
                .optional()
                .unwrap()
                .map(|s| s.parse().unwrap())
        };
        for id in ids {
            let exists = !store.get_many(&[*id]).unwrap().is_empty();
            let mut want = Vec::new();
            if exists {
                want.extend(id_at("SELECT p.id FROM memories m JOIN memories p ON p.rowid = m.prev_rowid WHERE m.id = ?1", id));
                want.push(*id);
                want.extend(id_at("SELECT n.id FROM memories m JOIN memories n ON n.prev_rowid = m.rowid WHERE m.id = ?1", id));
            }
            assert_eq!(store.windows(&[*id], 1, 1).unwrap()[0], want);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(12))]
        /// The in-memory keyword index ranks exactly as FTS5's bm25() after
        /// inserts, updates and deletes, and again after reopening; its
        /// message chain stays equal to the stored one.
        #[test]
        fn keyword_mirror_equals_fts5(
            texts in proptest::collection::vec(proptest::collection::vec(0usize..30, 1..10), 5..60),
            edits in proptest::collection::vec((0usize..60, 0usize..3), 0..12),
            queries in proptest::collection::vec(proptest::collection::vec(0usize..32, 1..4), 1..6),
        ) {
            const WORDS: [&str; 32] = [
                "running", "runs", "ran", "hiking", "hikes", "mountain", "mountains", "café", "cafe",
                "painting", "paints", "dog", "dogs", "猫が好き", "東京", "北京大学", "guitar", "concert",
                "lake", "lakes", "camping", "camp", "book", "books", "sister", "brother", "dinner",
                "recipe", "garden", "gardening", "zzz", "qqq",
            ];
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("kw.db");
            let store = SqliteStore::open(SqliteStoreOptions::new(&path, "m", 4)).unwrap();
            let scopes = [Scope::user("a"), Scope::user("b"), Scope { user_id: Some("a".into()), agent_id: None, session_id: Some("s".into()) }];
            let mut ids = Vec::new();
            for (i, t) in texts.iter().enumerate() {
                let text: Vec<&str> = t.iter().map(|&w| WORDS[w]).collect();
                let m = message(&scopes[i % 3], &text.join(" "), WORDS[(i * 7) % 32]);
                ids.push(m.memory.id);
                store.insert(InsertBatch { memories: vec![m], ..Default::default() }).unwrap();
            }
            for (i, op) in edits {
                let Some(&id) = ids.get(i) else { continue };
                match op {
                    0 => { store.delete(&[id]).unwrap(); }
                    _ => {
                        if let Some(mut m) = store.get_many(&[id]).unwrap().pop() {
                            m.content = format!("{} {}", WORDS[i % 32], WORDS[(i + op) % 32]);
                            store.update(Update::in_place(m, None)).unwrap();
                        }
                    }
                }
            }
            let queries: Vec<String> = queries
                .iter()
                .map(|q| q.iter().map(|&w| WORDS[w]).collect::<Vec<_>>().join(" "))
                .collect();
            for scope in &scopes {
                for q in &queries {
                    assert_mirror_matches_fts5(&store, scope, q);
                }
            }
            assert_chain_matches_sql(&store, &ids);
            drop(store);
            let store = SqliteStore::open(SqliteStoreOptions::new(&path, "m", 4)).unwrap();
            for q in &queries {
                assert_mirror_matches_fts5(&store, &scopes[0], q);
            }
            assert_chain_matches_sql(&store, &ids);
        }
    }

    #[test]
    fn last_message_lookup_uses_its_index() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            SqliteStore::open(SqliteStoreOptions::new(dir.path().join("p.db"), "m", 4)).unwrap();
        let conn = lock(&store.writer);
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {LAST_MESSAGE_SQL}"))
            .unwrap()
            .query_map(params!["u", None::<String>, "s"], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(
            plan.iter().any(|p| p.contains("memories_chain")),
            "{plan:?}"
        );
    }

    #[test]
    fn keyword_tokenizer_is_the_schema_tokenizer() {
        assert!(schema::MIGRATIONS[0].contains(&format!("tokenize = '{}'", fts::TOKENIZE)));
    }

    /// Idempotent requests: an answer is kept until pruned (maintenance
    /// prunes after `KEEP_REQUESTS_HOURS`), and a key seen with no answer
    /// is unknown.
    #[test]
    fn idempotent_answers_are_kept_until_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            SqliteStore::open(SqliteStoreOptions::new(dir.path().join("r.db"), "m", 4)).unwrap();
        let mark = crate::audit::RequestMark {
            key: "k".into(),
            fingerprint: "f".into(),
            attempt: "a1".into(),
        };
        assert_eq!(store.request("k").unwrap(), None);
        store.record_answer(&mark, 200, b"{}").unwrap();
        let kept = store.request("k").unwrap().unwrap();
        assert_eq!(
            (kept.committed, kept.answer),
            (false, Some((200, b"{}".to_vec())))
        );
        let earlier = Utc::now() - chrono::Duration::hours(crate::forgetting::KEEP_REQUESTS_HOURS);
        assert_eq!(store.prune_requests(earlier).unwrap(), 0);
        let later = Utc::now() + chrono::Duration::seconds(1);
        assert_eq!(store.prune_requests(later).unwrap(), 1);
        assert_eq!(store.request("k").unwrap(), None);
    }

    #[test]
    fn index_reads_do_not_queue_behind_a_waiting_writer() {
        use std::sync::mpsc;
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(
            SqliteStore::open(SqliteStoreOptions::new(dir.path().join("l.db"), "m", 4)).unwrap(),
        );
        type Probe = fn(&SqliteStore, &mpsc::Sender<()>);
        let probes: [(&str, Probe, Probe); 2] = [
            (
                "vectors",
                |s, tx| {
                    let _first = s.vectors_read();
                    std::thread::sleep(Duration::from_millis(200)); // the writer queues
                    let _second = s.vectors_read();
                    tx.send(()).unwrap();
                },
                |s, _| drop(s.vectors_write()),
            ),
            (
                "keywords",
                |s, tx| {
                    let _first = s.keywords_read();
                    std::thread::sleep(Duration::from_millis(200));
                    let _second = s.keywords_read();
                    tx.send(()).unwrap();
                },
                |s, _| drop(s.keywords.write()),
            ),
        ];
        for (name, reader, writer) in probes {
            let (tx, rx) = mpsc::channel();
            let (s1, s2, tx2) = (store.clone(), store.clone(), tx.clone());
            let r = std::thread::spawn(move || reader(&s1, &tx));
            std::thread::sleep(Duration::from_millis(50)); // the first read is held
            let w = std::thread::spawn(move || writer(&s2, &tx2));
            assert!(
                rx.recv_timeout(Duration::from_secs(10)).is_ok(),
                "{name}: a second read queued behind a waiting writer (deadlock)"
            );
            r.join().unwrap();
            w.join().unwrap();
        }
    }
}

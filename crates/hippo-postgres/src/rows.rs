//! Between Postgres rows and the engine's types: column lists, row readers,
//! and the SQL conditions of scopes and filters.

use chrono::{DateTime, Utc};
use postgres::types::ToSql;
use postgres::Row;
use serde_json::{Map, Value};

use hippo::jobs::{Job, JobState};
use hippo::model::{Actor, EventKind, Filter, MemoryEvent, Provenance, Status, Usage};
use hippo::sharing::{Grant, Grantee};
use hippo::{Error, Memory, MemoryKind, Rejection, Result, Scope};

/// Milliseconds since the epoch (the stores' time format).
pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_ms(v: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_millis(v)
        .ok_or_else(|| Error::invalid(format!("stored time {v} is out of range")))
}

fn opt_ms(v: Option<i64>) -> Result<Option<DateTime<Utc>>> {
    v.map(from_ms).transpose()
}

/// The exact scope as one value: conversation order lives within it.
pub(crate) fn scope_key(scope: &Scope) -> String {
    serde_json::json!([scope.user_id, scope.agent_id, scope.session_id]).to_string()
}

fn object(v: Value, what: &str) -> Result<Map<String, Value>> {
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(Error::invalid(format!(
            "stored {what} is not a JSON object"
        ))),
    }
}

fn object_text(s: &str, what: &str) -> Result<Map<String, Value>> {
    object(
        serde_json::from_str(s)
            .map_err(|_| Error::invalid(format!("stored {what} is not JSON")))?,
        what,
    )
}

/// The columns [`memory`] reads, on alias `m`.
pub(crate) const MEMORY_COLUMNS: &str = "m.id, m.user_id, m.agent_id, m.session_id, m.kind, m.content, m.role, \
     m.name, m.metadata, m.event_time, m.recorded_at, m.updated_at, m.request_id, m.source_id, m.chunk_index, \
     m.chunk_count, m.content_hash, m.embedding_model, m.valid_from, m.valid_to, m.version_of, m.status, \
     m.derived_from, m.dedup_key, m.expires_at, m.used_count, m.helpful_count, m.wrong_count, \
     m.reinforced_at, m.flags, m.written_by";

/// The number of columns in [`MEMORY_COLUMNS`].
pub(crate) const MEMORY_COUNT: usize = 31;

pub(crate) fn memory(r: &Row) -> Result<Memory> {
    let derived: Option<Vec<uuid::Uuid>> = r.get(22);
    let flags: Option<Value> = r.get(29);
    Ok(Memory {
        id: r.get(0),
        scope: Scope {
            user_id: r.get(1),
            agent_id: r.get(2),
            session_id: r.get(3),
        },
        kind: MemoryKind::parse(r.get(4))?,
        content: r.get(5),
        actor: Actor {
            role: r.get(6),
            name: r.get(7),
        },
        metadata: object(r.get(8), "metadata")?,
        event_time: opt_ms(r.get(9))?,
        recorded_at: from_ms(r.get(10))?,
        updated_at: from_ms(r.get(11))?,
        provenance: Provenance {
            request_id: r.get(12),
            source_id: r.get(13),
            chunk_index: r.get::<_, Option<i32>>(14).map(|v| v as u32),
            chunk_count: r.get::<_, Option<i32>>(15).map(|v| v as u32),
            derived_from: derived.unwrap_or_default(),
            written_by: r.get(30),
        },
        content_hash: r.get(16),
        embedding_model: r.get(17),
        valid_from: opt_ms(r.get(18))?,
        valid_to: opt_ms(r.get(19))?,
        version_of: r.get(20),
        status: Status::parse(r.get(21))?,
        dedup_key: r.get(23),
        expires_at: opt_ms(r.get(24))?,
        usage: Usage {
            used: r.get::<_, i32>(25) as u32,
            helpful: r.get::<_, i32>(26) as u32,
            wrong: r.get::<_, i32>(27) as u32,
            reinforced_at: opt_ms(r.get(28))?,
        },
        flags: flags
            .and_then(|f| serde_json::from_value(f).ok())
            .unwrap_or_default(),
    })
}

/// The columns [`event`] reads.
pub(crate) const EVENT_COLUMNS: &str = "memory_id, at, kind, origin, reason, request_id, detail";

pub(crate) fn event(r: &Row) -> Result<MemoryEvent> {
    Ok(MemoryEvent {
        memory_id: r.get(0),
        at: from_ms(r.get(1))?,
        kind: EventKind::parse(r.get(2))?,
        origin: r.get(3),
        reason: r.get(4),
        request_id: r.get(5),
        detail: object_text(r.get(6), "event detail")?,
    })
}

/// The columns [`job`] reads.
pub(crate) const JOB_COLUMNS: &str =
    "id, kind, user_id, agent_id, session_id, payload, state, attempts, \
     run_after, lease_until, step, plan, last_error, cost, created_at, updated_at";

pub(crate) fn job(r: &Row) -> Result<Job> {
    let plan: Option<String> = r.get(11);
    Ok(Job {
        id: r.get(0),
        kind: r.get(1),
        scope: Scope {
            user_id: r.get(2),
            agent_id: r.get(3),
            session_id: r.get(4),
        },
        payload: object_text(r.get(5), "job payload")?,
        state: JobState::parse(r.get(6))?,
        attempts: r.get::<_, i32>(7) as u32,
        run_after: from_ms(r.get(8))?,
        lease_until: opt_ms(r.get(9))?,
        step: r.get::<_, i32>(10) as u32,
        plan: plan
            .map(|p| serde_json::from_str(&p).map_err(|e| Error::invalid(e.to_string())))
            .transpose()?,
        last_error: r.get(12),
        cost: object_text(r.get(13), "job cost")?,
        created_at: from_ms(r.get(14))?,
        updated_at: from_ms(r.get(15))?,
    })
}

/// The columns [`grant`] reads, on alias `m`.
pub(crate) const GRANT_COLUMNS: &str = "m.id, m.memory_id, m.user_id, m.agent_id, m.session_id, \
     m.grantee_user, m.grantee_agent, m.created_at, m.created_by, m.expires_at, m.revoked_at";

pub(crate) fn grant(r: &Row) -> Result<Grant> {
    Ok(Grant {
        id: r.get(0),
        memory_id: r.get(1),
        scope: Scope {
            user_id: r.get(2),
            agent_id: r.get(3),
            session_id: r.get(4),
        },
        grantee: Grantee {
            user_id: r.get(5),
            agent_id: r.get(6),
        },
        created_at: from_ms(r.get(7))?,
        created_by: r.get(8),
        expires_at: opt_ms(r.get(9))?,
        revoked_at: opt_ms(r.get(10))?,
    })
}

/// The columns [`rejection`] reads, on alias `m`.
pub(crate) const REJECTION_COLUMNS: &str = "m.seq, m.user_id, m.agent_id, m.session_id, m.at, \
     m.request_id, m.kind, m.content, m.role, m.name, m.event_time, m.admission";

pub(crate) fn rejection(r: &Row) -> Result<Rejection> {
    Ok(Rejection {
        seq: r.get(0),
        scope: Scope {
            user_id: r.get(1),
            agent_id: r.get(2),
            session_id: r.get(3),
        },
        at: from_ms(r.get(4))?,
        request_id: r.get(5),
        kind: MemoryKind::parse(r.get(6))?,
        content: r.get(7),
        actor: Actor {
            role: r.get(8),
            name: r.get(9),
        },
        event_time: opt_ms(r.get(10))?,
        admission: serde_json::from_str(r.get(11))
            .map_err(|e| Error::invalid(format!("stored admission: {e}")))?,
    })
}

/// A query parameter.
pub(crate) type Param = Box<dyn ToSql + Sync + Send>;

/// SQL conditions (joined with AND, on alias `m`) and their parameters,
/// numbered after `offset` parameters the caller binds first.
pub(crate) struct Conditions {
    pub sql: Vec<String>,
    pub params: Vec<Param>,
    offset: usize,
}

impl Conditions {
    /// Conditions after `offset` parameters of the caller's own.
    pub fn after(offset: usize) -> Self {
        Conditions {
            sql: Vec::new(),
            params: Vec::new(),
            offset,
        }
    }

    /// Adds `sql` with each `?` bound to `value`.
    pub fn push(&mut self, sql: &str, value: impl ToSql + Sync + Send + 'static) {
        let n = self.offset + self.params.len() + 1;
        self.sql.push(sql.replace('?', &format!("${n}")));
        self.params.push(Box::new(value));
    }

    pub fn scope(&mut self, scope: &Scope) {
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

    /// The conditions of `filter` (see `hippo::store::filter_conditions`),
    /// with metadata compared as `jsonb`.
    pub fn filter(&mut self, filter: &Filter) {
        for (sql, value) in hippo::store::filter_conditions(filter) {
            match value {
                Some(v) => self.push(&sql, v),
                None => self.sql.push(sql),
            }
        }
        for (key, value) in &filter.metadata {
            match value {
                // Present and null.
                Value::Null => self.push("jsonb_typeof(m.metadata -> ?) = 'null'", key.clone()),
                // jsonb compares numbers by value (1 = 1.0), strings and
                // booleans exactly, as the SQLite store does.
                Value::Bool(_) | Value::Number(_) | Value::String(_) => {
                    let n = self.offset + self.params.len() + 1;
                    self.sql.push(format!("(m.metadata -> ${n}) = ${}", n + 1));
                    self.params.push(Box::new(key.clone()));
                    self.params.push(Box::new(value.clone()));
                }
                // Rejected by Filter::validate; never matches if it gets here.
                Value::Array(_) | Value::Object(_) => self.sql.push("false".into()),
            }
        }
    }

    /// Removes the conditions `moved` picks and returns them; their
    /// parameters stay (numbered as before, bound with the rest).
    pub fn split_off(&mut self, moved: impl Fn(&str) -> bool) -> Vec<String> {
        let (out, kept) = std::mem::take(&mut self.sql)
            .into_iter()
            .partition(|sql| moved(sql));
        self.sql = kept;
        out
    }

    pub fn where_clause(&self) -> String {
        if self.sql.is_empty() {
            "true".into()
        } else {
            self.sql.join(" AND ")
        }
    }

    /// The parameters, for `query`.
    pub fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

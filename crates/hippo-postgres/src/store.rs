//! One tenant's [`Store`] on Postgres.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::conn::Tx;
use chrono::{DateTime, Utc};
use pgvector::Vector;
use postgres::types::ToSql;
use serde_json::{Map, Value};

use hippo::audit::{entries, AuditCheck, AuditEntry, RequestMark};
use hippo::jobs::{Job, JobCounts, JobState, JobStep, JobUpdate, NewJob};
use hippo::model::{EventKind, MemoryEvent, MemoryId, Usage};
use hippo::sharing::Grant;
use hippo::store::{document, keywords};
use hippo::store::{
    Candidate, GrantQuery, InsertBatch, InsertOutcome, JobQuery, KeywordQuery, ListQuery, Order,
    Page, RequestRecord, ScopeSummary, StoreStats, Update, VectorQuery,
};
use hippo::{Error, ErrorKind, Memory, MemoryKind, Rejection, Result, Scope, Source, Store};

use crate::rows::{self, from_ms, ms, scope_key, Conditions, MEMORY_COLUMNS, MEMORY_COUNT};
use crate::{pg_error, PgDatabase};

/// Why a transaction failed: Postgres (maybe worth a retry) or the engine.
pub(crate) enum Fail {
    Pg(postgres::Error),
    Engine(Error),
}

impl From<postgres::Error> for Fail {
    fn from(e: postgres::Error) -> Self {
        Fail::Pg(e)
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        Fail::Engine(e)
    }
}

pub(crate) type TxResult<T> = std::result::Result<T, Fail>;

/// One tenant's memories in a shared Postgres database.
pub struct PostgresStore {
    db: Arc<PgDatabase>,
    tenant: String,
    pub(crate) model: String,
    dim: usize,
    /// `vector(dim)`, the cast the HNSW index is built on.
    vector_type: String,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("tenant", &self.tenant)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

/// A stored audit entry as `hippo::audit::verify` reads it: seq, at, actor,
/// action, target, detail, previous hash, hash.
type AuditRow = (i64, i64, String, String, String, String, String, String);

/// The row of a memory's place in its conversation: sequence number, exact
/// scope and whether it is in the conversation (a current message).
struct Place {
    seq: i64,
    scope_key: String,
    in_chain: bool,
}

const CHAIN: &str = "kind = 'message' AND version_of IS NULL";

/// Adds the keyword statistics of this tenant's rows with ids `$1`, inserted
/// while `hippo.defer_keyword_stats` was on, as the row trigger
/// (`hippo_keyword_stats`) would have: a document and its tokens each, and a
/// document for each distinct term.
const COUNT_KEYWORD_STATS: &str = "
    WITH added AS (
        SELECT kw_len, hippo_keyword_terms(kw_body, kw_speaker, kw_context) AS terms
        FROM memories WHERE tenant = current_setting('hippo.tenant') AND id = ANY($1)
    ), totals AS (
        INSERT INTO keyword_totals (tenant, docs, tokens)
        SELECT current_setting('hippo.tenant'), count(*), sum(kw_len) FROM added
        HAVING count(*) > 0
        ON CONFLICT (tenant) DO UPDATE
            SET docs = keyword_totals.docs + excluded.docs,
                tokens = keyword_totals.tokens + excluded.tokens
    )
    INSERT INTO keyword_terms (tenant, term, docs)
    SELECT current_setting('hippo.tenant'), t, count(*) FROM added, unnest(terms) t GROUP BY t
    ON CONFLICT (tenant, term) DO UPDATE SET docs = keyword_terms.docs + excluded.docs";

/// Graph visits HNSW's iterative scan makes at most (pgvector's
/// `hnsw.max_scan_tuples`, default 20,000).
const HNSW_MAX_VISITS: f64 = 20_000.0;

/// What one exactly scored row costs against one HNSW visit. Measured at
/// a million rows, a scope of 1,000, 50 candidates: the iterative scan
/// 7.7–8.7 ms for its 20,000 visits; the exact scan 1.3 ms with the
/// scope's pages in shared buffers, 3.4 ms with its vectors in TOAST
/// (before migration 6), 8 ms when every page must be read first (then no
/// worse than the scan, and the keyword channel reads the same pages).
const EXACT_ROW_VISITS: f64 = 8.0;

/// Whether scoring a scope of `scope` rows exactly (at most
/// [`PgOptions::exact_scope_rows`](crate::PgOptions::exact_scope_rows)) costs less than an
/// iterative HNSW scan over a table of `table` rows for `limit` results:
/// the scan visits about `limit × table / scope` rows to find `limit` of
/// the scope's (at most [`HNSW_MAX_VISITS`]).
fn exact_vectors_cheaper(scope: i64, table: f64, limit: usize) -> bool {
    let visits = (limit as f64 * table / scope.max(1) as f64).min(HNSW_MAX_VISITS);
    (scope as f64) * EXACT_ROW_VISITS < visits
}

/// Whether `scope` names a user, agent or session (a part of the tenant).
fn narrowed(scope: &Scope) -> bool {
    scope.user_id.is_some() || scope.agent_id.is_some() || scope.session_id.is_some()
}

/// The number of this tenant's memories in `scope`, counted up to one past
/// `cap`: an upper bound of what a search of the scope reads. Only the
/// scope's columns, so the count comes from a scope index alone (its
/// entries, not the rows' pages, once vacuum has marked them visible).
fn scope_rows_up_to(tx: &mut Tx<'_>, scope: &Scope, cap: i64) -> TxResult<i64> {
    let mut c = Conditions::after(0);
    c.sql
        .push("m.tenant = current_setting('hippo.tenant')".into());
    c.scope(scope);
    let sql = format!(
        "SELECT count(*) FROM (SELECT 1 FROM memories m WHERE {} LIMIT {}) s",
        c.where_clause(),
        cap + 1
    );
    Ok(tx.query_one(&sql, &c.refs())?.get(0))
}

fn p(v: &(dyn ToSql + Sync)) -> &(dyn ToSql + Sync) {
    v
}

impl PostgresStore {
    pub(crate) fn new(db: Arc<PgDatabase>, tenant: &str, model: &str, dim: usize) -> Self {
        PostgresStore {
            db,
            tenant: tenant.to_owned(),
            model: model.to_owned(),
            dim,
            vector_type: format!("vector({dim})"),
        }
    }

    /// The tenant whose rows this store sees.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// Runs `f` in a transaction bound to this tenant; a `write` first takes
    /// the tenant's write lock.
    fn run<T>(&self, write: bool, f: impl FnMut(&mut Tx<'_>) -> TxResult<T>) -> Result<T> {
        self.db.run(&self.tenant, write, f)
    }

    pub(crate) fn read<T>(&self, f: impl FnMut(&mut Tx<'_>) -> TxResult<T>) -> Result<T> {
        self.run(false, f)
    }

    pub(crate) fn write<T>(&self, f: impl FnMut(&mut Tx<'_>) -> TxResult<T>) -> Result<T> {
        self.run(true, f)
    }

    pub(crate) fn check_dim(&self, v: &[f32]) -> Result<()> {
        if v.len() != self.dim {
            return Err(Error::invalid(format!(
                "vectors must have {} dimensions",
                self.dim
            )));
        }
        Ok(())
    }

    fn terms(&self, text: &str) -> Result<String> {
        Ok(self.db.tokenizer.terms(text)?.join(" "))
    }

    fn place(tx: &mut Tx<'_>, id: MemoryId) -> TxResult<Option<Place>> {
        Ok(tx
            .query_opt(
                &format!(
                    "SELECT seq, scope_key, ({CHAIN}) FROM memories WHERE tenant = current_setting('hippo.tenant') AND id = $1"
                ),
                &[&id],
            )?
            .map(|r| Place {
                seq: r.get(0),
                scope_key: r.get(1),
                in_chain: r.get(2),
            }))
    }

    /// The neighbour of `seq` in conversation `key` (before or after it).
    fn neighbour(
        tx: &mut Tx<'_>,
        key: &str,
        seq: i64,
        before: bool,
    ) -> TxResult<Option<(i64, String)>> {
        let sql = if before {
            format!("SELECT seq, name, content FROM memories WHERE tenant = current_setting('hippo.tenant') AND scope_key = $1 AND {CHAIN} AND seq < $2 ORDER BY seq DESC LIMIT 1")
        } else {
            format!("SELECT seq, name, content FROM memories WHERE tenant = current_setting('hippo.tenant') AND scope_key = $1 AND {CHAIN} AND seq > $2 ORDER BY seq LIMIT 1")
        };
        Ok(tx.query_opt(&sql, &[&key, &seq])?.map(|r| {
            (
                r.get::<_, i64>(0),
                document::line(r.get::<_, Option<&str>>(1), r.get::<_, &str>(2)),
            )
        }))
    }

    /// Inserts memories copied from another store, in their order, each
    /// message's keyword context computed here from its neighbours in the
    /// page (and the conversation's last stored message) instead of read
    /// back row by row: one statement per memory instead of about ten. The
    /// stored last message of each conversation then gets its new next
    /// neighbour. The result is what inserting them one by one gives.
    pub(crate) fn insert_copied(
        &self,
        tx: &mut Tx<'_>,
        memories: &[&hippo::store::NewMemory],
    ) -> TxResult<()> {
        let in_chain = |m: &Memory| m.kind == MemoryKind::Message && m.version_of.is_none();
        let keys: Vec<String> = memories
            .iter()
            .map(|nm| scope_key(&nm.memory.scope))
            .collect();
        let chain_keys: Vec<&String> = memories
            .iter()
            .zip(&keys)
            .filter(|(nm, _)| in_chain(&nm.memory))
            .map(|(_, k)| k)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        // The last stored message of each conversation the page continues.
        let mut stored_last: HashMap<String, (i64, String)> = HashMap::new();
        if !chain_keys.is_empty() {
            let rows = tx.query(
                &format!(
                    "SELECT DISTINCT ON (scope_key) scope_key, seq, name, content FROM memories
                     WHERE tenant = current_setting('hippo.tenant') AND scope_key = ANY($1) AND {CHAIN}
                     ORDER BY scope_key, seq DESC"
                ),
                &[&chain_keys],
            )?;
            for r in rows {
                stored_last.insert(
                    r.get(0),
                    (
                        r.get(1),
                        document::line(r.get::<_, Option<&str>>(2), r.get::<_, &str>(3)),
                    ),
                );
            }
        }
        // Each message's previous and next line within the page.
        let lines: Vec<Option<String>> = memories
            .iter()
            .map(|nm| {
                in_chain(&nm.memory)
                    .then(|| document::line(nm.memory.actor.name.as_deref(), &nm.memory.content))
            })
            .collect();
        let mut next_of: Vec<Option<usize>> = vec![None; memories.len()];
        let mut prev_of: Vec<Option<usize>> = vec![None; memories.len()];
        let mut last_at: HashMap<&str, usize> = HashMap::new();
        for (i, line) in lines.iter().enumerate() {
            if line.is_none() {
                continue;
            }
            if let Some(p) = last_at.insert(keys[i].as_str(), i) {
                prev_of[i] = Some(p);
                next_of[p] = Some(i);
            }
        }
        let empty = self.terms(&document::context(std::iter::empty::<&str>()))?;
        // BM25's statistics for the page's rows are counted in one statement
        // after them: the row trigger's per-term upserts halved load speed.
        tx.batch_execute("SET LOCAL hippo.defer_keyword_stats = 'on'")?;
        for (i, nm) in memories.iter().enumerate() {
            let context = if lines[i].is_some() {
                let prev = match prev_of[i] {
                    Some(p) => lines[p].as_deref(),
                    None => stored_last.get(&keys[i]).map(|(_, l)| l.as_str()),
                };
                let next = next_of[i].and_then(|n| lines[n].as_deref());
                self.terms(&document::context(prev.into_iter().chain(next)))?
            } else {
                empty.clone()
            };
            self.insert_row_with(tx, &nm.memory, nm.vector.as_deref(), Some(&context))?;
        }
        tx.batch_execute("SET LOCAL hippo.defer_keyword_stats = 'off'")?;
        let ids: Vec<uuid::Uuid> = memories.iter().map(|nm| nm.memory.id).collect();
        tx.execute(COUNT_KEYWORD_STATS, &[&ids])?;
        for (key, (seq, _)) in &stored_last {
            if last_at.contains_key(key.as_str()) {
                self.refresh_context(tx, *seq)?;
            }
        }
        Ok(())
    }

    /// Recomputes the keyword context (previous + next message) of the
    /// memory at `seq`.
    fn refresh_context(&self, tx: &mut Tx<'_>, seq: i64) -> TxResult<()> {
        let Some(r) = tx.query_opt(
            &format!("SELECT scope_key, ({CHAIN}) FROM memories WHERE seq = $1"),
            &[&seq],
        )?
        else {
            return Ok(());
        };
        let (key, in_chain): (String, bool) = (r.get(0), r.get(1));
        let mut lines = Vec::new();
        if in_chain {
            for before in [true, false] {
                if let Some((_, line)) = Self::neighbour(tx, &key, seq, before)? {
                    lines.push(line);
                }
            }
        }
        let context = self.terms(&document::context(lines.iter().map(String::as_str)))?;
        tx.execute(
            "UPDATE memories SET kw_context = $1 WHERE seq = $2 AND kw_context IS DISTINCT FROM $1",
            &[&context, &seq],
        )?;
        Ok(())
    }

    /// Refreshes the context of the messages around `seq` in conversation `key`.
    fn refresh_around(&self, tx: &mut Tx<'_>, key: &str, seq: i64) -> TxResult<()> {
        for before in [true, false] {
            if let Some((n, _)) = Self::neighbour(tx, key, seq, before)? {
                self.refresh_context(tx, n)?;
            }
        }
        Ok(())
    }

    /// The memory already holding `m`'s dedup key, if any; logs that `m`
    /// was merged into it.
    pub(crate) fn duplicate_of(tx: &mut Tx<'_>, m: &Memory) -> TxResult<Option<MemoryId>> {
        let Some(key) = &m.dedup_key else {
            return Ok(None);
        };
        let Some(existing) = tx
            .query_opt(
                "SELECT id FROM memories WHERE tenant = current_setting('hippo.tenant') AND dedup_key = $1",
                &[key],
            )?
            .map(|r| r.get::<_, MemoryId>(0))
        else {
            return Ok(None);
        };
        let mut detail = Map::new();
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

    /// Inserts one memory row (not a duplicate) and refreshes the keyword
    /// context of it and its previous message; returns its sequence number.
    pub(crate) fn insert_row(
        &self,
        tx: &mut Tx<'_>,
        m: &Memory,
        vector: Option<&[f32]>,
    ) -> TxResult<i64> {
        self.insert_row_with(tx, m, vector, None)
    }

    /// [`Self::insert_row`]; with `context` (its keyword context's terms,
    /// computed by the caller) the row is written with it and no neighbour
    /// is refreshed.
    pub(crate) fn insert_row_with(
        &self,
        tx: &mut Tx<'_>,
        m: &Memory,
        vector: Option<&[f32]>,
        context: Option<&str>,
    ) -> TxResult<i64> {
        let key = scope_key(&m.scope);
        let body = self.terms(&document::body(m))?;
        let speaker = self.terms(&document::speaker(m).unwrap_or_default())?;
        let metadata = Value::Object(m.metadata.clone());
        let flags = (!m.flags.is_empty()).then(|| serde_json::json!(m.flags));
        let derived =
            (!m.provenance.derived_from.is_empty()).then(|| m.provenance.derived_from.clone());
        let written_by = m
            .provenance
            .written_by
            .clone()
            .unwrap_or_else(hippo::audit::current_actor);
        let embedding = vector.map(|v| Vector::from(v.to_vec()));
        let model = vector.map(|_| self.model.as_str());
        let chunk_index = m.provenance.chunk_index.map(|v| v as i32);
        let chunk_count = m.provenance.chunk_count.map(|v| v as i32);
        let (used, helpful, wrong) = (
            m.usage.used as i32,
            m.usage.helpful as i32,
            m.usage.wrong as i32,
        );
        let row = tx.query_opt(
            "INSERT INTO memories (tenant, id, user_id, agent_id, session_id, scope_key, kind, content, role, name,
             metadata, event_time, recorded_at, updated_at, request_id, source_id, chunk_index, chunk_count,
             content_hash, embedding_model, embedding, valid_from, valid_to, version_of, status, derived_from,
             dedup_key, expires_at, used_count, helpful_count, wrong_count, reinforced_at, flags, written_by,
             kw_body, kw_speaker, kw_context, vector_model)
             VALUES (current_setting('hippo.tenant'), $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
             $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34, $35,
             $36, $19)
             ON CONFLICT (tenant, id) DO NOTHING
             RETURNING seq",
            &[
                p(&m.id),
                p(&m.scope.user_id),
                p(&m.scope.agent_id),
                p(&m.scope.session_id),
                p(&key),
                p(&m.kind.as_str()),
                p(&m.content),
                p(&m.actor.role),
                p(&m.actor.name),
                p(&metadata),
                p(&m.event_time.map(ms)),
                p(&ms(m.recorded_at)),
                p(&ms(m.updated_at)),
                p(&m.provenance.request_id),
                p(&m.provenance.source_id),
                p(&chunk_index),
                p(&chunk_count),
                p(&m.content_hash),
                p(&model),
                p(&embedding),
                p(&m.valid_from.map(ms)),
                p(&m.valid_to.map(ms)),
                p(&m.version_of),
                p(&m.status.as_str()),
                p(&derived),
                p(&m.dedup_key),
                p(&m.expires_at.map(ms)),
                p(&used),
                p(&helpful),
                p(&wrong),
                p(&m.usage.reinforced_at.map(ms)),
                p(&flags),
                p(&written_by),
                p(&body),
                p(&speaker),
                p(&context.unwrap_or("")),
            ],
        );
        // ON CONFLICT DO NOTHING returns no row: the id exists.
        let Some(row) = row? else {
            return Err(Fail::Engine(Error::new(
                ErrorKind::Conflict,
                format!("memory {} already exists", m.id),
            )));
        };
        let seq: i64 = row.get(0);
        if context.is_some() {
            return Ok(seq);
        }
        self.refresh_context(tx, seq)?;
        if m.kind == MemoryKind::Message && m.version_of.is_none() {
            if let Some((prev, _)) = Self::neighbour(tx, &key, seq, true)? {
                self.refresh_context(tx, prev)?;
            }
        }
        Ok(seq)
    }

    pub(crate) fn append_audit(tx: &mut Tx<'_>, items: Vec<entries::Item>) -> TxResult<()> {
        if items.is_empty() {
            return Ok(());
        }
        // Every write that changes something is audited, so this is where an
        // idempotent request's commit is recorded, atomically with it.
        if let Some(mark) = hippo::audit::current_request() {
            // The tenant's writes are serialized (its write lock), so this
            // check is exact across replicas.
            let committed = tx.query_opt(
                "SELECT attempt FROM requests WHERE tenant = current_setting('hippo.tenant')
                 AND key = $1 AND committed_at IS NOT NULL",
                &[&mark.key],
            )?;
            if committed.is_some_and(|r| {
                r.get::<_, Option<String>>(0).as_deref() != Some(mark.attempt.as_str())
            }) {
                return Err(Fail::Engine(Error::request_committed_elsewhere()));
            }
            let now = Utc::now().timestamp_millis();
            tx.execute(
                "INSERT INTO requests (tenant, key, fingerprint, committed_at, created_at, attempt)
                 VALUES (current_setting('hippo.tenant'), $1, $2, $3, $3, $4)
                 ON CONFLICT (tenant, key) DO UPDATE SET committed_at = COALESCE(requests.committed_at, excluded.committed_at),
                     attempt = COALESCE(requests.attempt, excluded.attempt)",
                &[&mark.key, &mark.fingerprint, &now, &mark.attempt],
            )?;
        }
        let head: Option<String> = tx
            .query_opt(
                "SELECT value FROM store_meta WHERE tenant = current_setting('hippo.tenant') AND key = 'audit_head'",
                &[],
            )?
            .map(|r| r.get(0));
        let (mut seq, mut prev) = head
            .as_deref()
            .and_then(|h| {
                let (s, h) = h.split_once(':')?;
                Some((s.parse::<i64>().ok()?, h.to_owned()))
            })
            .unwrap_or((0, String::new()));
        let actor = hippo::audit::current_actor();
        let at = Utc::now().timestamp_millis();
        for (action, target, detail) in items {
            seq += 1;
            let detail = Value::Object(detail).to_string();
            let hash = hippo::audit::entry_hash(&prev, seq, at, &actor, &action, &target, &detail);
            tx.execute(
                "INSERT INTO audit_log (tenant, seq, at, actor, action, target, detail, prev_hash, hash)
                 VALUES (current_setting('hippo.tenant'), $1, $2, $3, $4, $5, $6, $7, $8)",
                &[&seq, &at, &actor, &action, &target, &detail, &prev, &hash],
            )?;
            prev = hash;
        }
        set_meta(tx, "audit_head", &format!("{seq}:{prev}"))?;
        Ok(())
    }

    pub(crate) fn audit_rows(
        tx: &mut Tx<'_>,
        after: i64,
        limit: Option<usize>,
    ) -> TxResult<Vec<AuditRow>> {
        let limit = limit.map_or(i64::MAX, |l| l as i64);
        Ok(tx
            .query(
                "SELECT seq, at, actor, action, target, detail, prev_hash, hash FROM audit_log
                 WHERE tenant = current_setting('hippo.tenant') AND seq > $1 ORDER BY seq LIMIT $2",
                &[&after, &limit],
            )?
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    r.get(1),
                    r.get(2),
                    r.get(3),
                    r.get(4),
                    r.get(5),
                    r.get(6),
                    r.get(7),
                )
            })
            .collect())
    }

    pub(crate) fn verify(tx: &mut Tx<'_>) -> TxResult<AuditCheck> {
        let head: Option<(i64, String)> = get_meta(tx, "audit_head")?.and_then(|h| {
            let (s, h) = h.split_once(':')?;
            Some((s.parse().ok()?, h.to_owned()))
        });
        let rows = Self::audit_rows(tx, 0, None)?;
        Ok(hippo::audit::verify(rows, head))
    }

    fn candidates(rows: Vec<postgres::Row>) -> Result<Vec<Candidate>> {
        rows.iter()
            .map(|r| {
                Ok(Candidate {
                    id: r.get(0),
                    score: r.get::<_, f64>(1) as f32,
                    time: from_ms(r.get(2))?,
                    recorded_at: from_ms(r.get(3))?,
                    kind: MemoryKind::parse(r.get(4))?,
                })
            })
            .collect()
    }

    fn select_grants(tx: &mut Tx<'_>, q: &GrantQuery<'_>) -> TxResult<Vec<Grant>> {
        let mut c = Conditions::after(0);
        c.sql
            .push("m.tenant = current_setting('hippo.tenant')".into());
        if let Some(id) = q.id {
            c.push("m.id = ?", id);
        }
        if let Some(of) = q.of {
            c.scope(of);
        }
        if let Some(to) = q.to {
            // The reader is the grantee through its user or its agent.
            match (&to.user_id, &to.agent_id) {
                (Some(u), Some(a)) => {
                    c.push("(m.grantee_user = ?", u.clone());
                    let last = c.sql.pop().unwrap_or_default();
                    let n = c.params.len() + 1;
                    c.sql.push(format!("{last} OR m.grantee_agent = ${n})"));
                    c.params.push(Box::new(a.clone()));
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
            "SELECT {} FROM grants m WHERE {} ORDER BY m.created_at, m.id LIMIT {}",
            rows::GRANT_COLUMNS,
            c.where_clause(),
            q.limit
        );
        let rows = tx.query(&sql, &c.refs())?;
        Ok(rows.iter().map(rows::grant).collect::<Result<Vec<_>>>()?)
    }

    /// The keyword pool from the BM25 index: the first rows of the index's
    /// ranking (weighted by this tenant's term weights) that pass every
    /// condition, more than asked, for the exact scoring.
    fn indexed_keyword_rows(
        &self,
        tx: &mut Tx<'_>,
        q: &KeywordQuery<'_>,
        tokens: &[String],
        idf: &[f64],
        picked: &[usize],
    ) -> TxResult<Vec<postgres::Row>> {
        let [wb, ws, wc] = keywords::COLUMN_WEIGHTS;
        let clauses: Vec<String> = picked
            .iter()
            .enumerate()
            .flat_map(|(k, &i)| {
                let (t, w) = (k + 2, idf[i].max(1e-3));
                [
                    format!("m.kw_body ||| ${t}::text::pdb.boost({:.6})", w * wb),
                    format!("m.kw_speaker ||| ${t}::text::pdb.boost({:.6})", w * ws),
                    format!("m.kw_context ||| ${t}::text::pdb.boost({:.6})", w * wc),
                ]
            })
            .collect();
        let mut c = Conditions::after(1 + picked.len());
        c.scope(q.scope);
        c.filter(q.filter);
        // Scope, kind and status go into the index's query. The rest
        // (validity and expiry times, metadata) is checked on the pool's
        // rows: ParadeDB turns `x IS NULL OR x > t` into a union with an
        // all-documents query, which costs every document in the index
        // (~15 ms a query at a million rows).
        let row_sql = c.split_off(|sql| {
            !(sql.starts_with("m.user_id =")
                || sql.starts_with("m.agent_id =")
                || sql.starts_with("m.session_id =")
                || sql.starts_with("m.kind IN (")
                || sql.starts_with("m.status IN ("))
        });
        let index_sql = c.where_clause();
        let admitted = if row_sql.is_empty() {
            "true".to_owned()
        } else {
            row_sql.join(" AND ")
        };
        let mut all: Vec<&(dyn ToSql + Sync)> = vec![&self.tenant];
        all.extend(picked.iter().map(|&i| &tokens[i] as &(dyn ToSql + Sync)));
        all.extend(c.refs());
        // A pool larger than asked, rescored exactly below: the first
        // `pool` admitted rows in the index's order, read in growing
        // batches while the rows fail the row conditions.
        let pool = (q.limit * 3).max(50);
        let mut fetch = pool;
        Ok(loop {
            let sql = format!(
                "SELECT m.id, m.kw_body, m.kw_speaker, m.kw_context, m.kw_len,
                        coalesce(m.event_time, m.recorded_at), m.recorded_at, m.kind, m.seq,
                        coalesce({admitted}, false)
                 FROM memories m
                 WHERE ({}) AND m.tenant = $1 AND {index_sql}
                 ORDER BY pdb.score(m.seq) DESC, m.seq LIMIT {fetch}",
                clauses.join(" OR ")
            );
            let rows = tx.query_planned(&sql, &all)?;
            let fetched = rows.len();
            let rows: Vec<_> = rows.into_iter().filter(|r| r.get::<_, bool>(9)).collect();
            if rows.len() >= pool || fetched < fetch {
                break rows.into_iter().take(pool).collect::<Vec<_>>();
            }
            fetch *= 4;
        })
    }

    /// Every row of a small scope (at most
    /// [`PgOptions::exact_scope_rows`](crate::PgOptions::exact_scope_rows)) that holds
    /// one of the picked terms, for the exact scoring; `None` for a larger
    /// scope. Reading a thousand rows' keyword columns costs ~1 ms, where
    /// the BM25 index, shared by the whole table, costs ~1 ms per term and
    /// column at a million rows plus 2–5 ms planning.
    fn scope_keyword_rows(
        &self,
        tx: &mut Tx<'_>,
        q: &KeywordQuery<'_>,
        tokens: &[String],
        picked: &[usize],
    ) -> TxResult<Option<Vec<postgres::Row>>> {
        let cap = self.db.exact_scope_rows;
        if cap == 0 || !narrowed(q.scope) {
            return Ok(None);
        }
        if scope_rows_up_to(tx, q.scope, cap)? > cap {
            return Ok(None);
        }
        let mut c = Conditions::after(0);
        c.sql
            .push("m.tenant = current_setting('hippo.tenant')".into());
        c.scope(q.scope);
        c.filter(q.filter);
        let conditions = c.where_clause();
        let rows = tx.query(
            &format!(
                "SELECT m.id, m.kw_body, m.kw_speaker, m.kw_context, m.kw_len,
                        coalesce(m.event_time, m.recorded_at), m.recorded_at, m.kind, m.seq
                 FROM memories m WHERE {conditions}"
            ),
            &c.refs(),
        )?;
        let holds = |r: &postgres::Row| {
            [1, 2, 3].into_iter().any(|col| {
                r.get::<_, &str>(col)
                    .split(' ')
                    .any(|w| picked.iter().any(|&i| tokens[i] == w))
            })
        };
        Ok(Some(rows.into_iter().filter(holds).collect()))
    }

    /// Deletes the memories at these places, keeping conversations linked;
    /// returns how many rows went.
    fn delete_rows(&self, tx: &mut Tx<'_>, places: &[Place]) -> TxResult<u64> {
        let seqs: Vec<i64> = places.iter().map(|p| p.seq).collect();
        let n = tx.execute("DELETE FROM memories WHERE seq = ANY($1)", &[&seqs])?;
        for place in places.iter().filter(|p| p.in_chain) {
            self.refresh_around(tx, &place.scope_key, place.seq)?;
        }
        Ok(n)
    }
}

/// A stored audit row as an entry.
pub(crate) fn audit_entry(row: AuditRow) -> Result<AuditEntry> {
    let (seq, at, actor, action, target, detail, prev_hash, hash) = row;
    Ok(AuditEntry {
        seq,
        at: from_ms(at)?,
        actor,
        action,
        target,
        detail: serde_json::from_str(&detail).unwrap_or_default(),
        prev_hash,
        hash,
    })
}

pub(crate) fn get_meta(tx: &mut Tx<'_>, key: &str) -> TxResult<Option<String>> {
    Ok(tx
        .query_opt(
            "SELECT value FROM store_meta WHERE tenant = current_setting('hippo.tenant') AND key = $1",
            &[&key],
        )?
        .map(|r| r.get(0)))
}

pub(crate) fn set_meta(tx: &mut Tx<'_>, key: &str, value: &str) -> TxResult<()> {
    tx.execute(
        "INSERT INTO store_meta (tenant, key, value) VALUES (current_setting('hippo.tenant'), $1, $2)
         ON CONFLICT (tenant, key) DO UPDATE SET value = excluded.value",
        &[&key, &value],
    )?;
    Ok(())
}

/// Records step `s` of a job inside the write's transaction; fails (so the
/// write rolls back) if that step was applied before.
fn apply_step(tx: &mut Tx<'_>, s: Option<JobStep>) -> TxResult<()> {
    let Some(s) = s else { return Ok(()) };
    let step = s.step as i32;
    let n = tx.execute(
        "UPDATE jobs SET step = $2 WHERE tenant = current_setting('hippo.tenant') AND id = $1 AND step = $2 - 1",
        &[&s.job, &step],
    )?;
    if n == 0 {
        return Err(Fail::Engine(Error::new(
            ErrorKind::Conflict,
            format!("step {} of job {} was applied already", s.step, s.job),
        )));
    }
    Ok(())
}

fn enqueue(tx: &mut Tx<'_>, jobs: &[NewJob]) -> TxResult<()> {
    for j in jobs {
        tx.execute(
            "INSERT INTO jobs (tenant, kind, user_id, agent_id, session_id, payload, run_after, created_at, updated_at)
             VALUES (current_setting('hippo.tenant'), $1, $2, $3, $4, $5, $6, $6, $6)",
            &[
                &j.kind,
                &j.scope.user_id,
                &j.scope.agent_id,
                &j.scope.session_id,
                &Value::Object(j.payload.clone()).to_string(),
                &ms(j.at),
            ],
        )?;
    }
    Ok(())
}

pub(crate) fn insert_grant(tx: &mut Tx<'_>, g: &Grant) -> TxResult<()> {
    tx.execute(
        "INSERT INTO grants (tenant, id, memory_id, user_id, agent_id, session_id, grantee_user,
         grantee_agent, created_at, created_by, expires_at, revoked_at)
         VALUES (current_setting('hippo.tenant'), $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        &[
            &g.id,
            &g.memory_id,
            &g.scope.user_id,
            &g.scope.agent_id,
            &g.scope.session_id,
            &g.grantee.user_id,
            &g.grantee.agent_id,
            &ms(g.created_at),
            &g.created_by,
            &g.expires_at.map(ms),
            &g.revoked_at.map(ms),
        ],
    )?;
    Ok(())
}

pub(crate) fn insert_events(tx: &mut Tx<'_>, events: &[MemoryEvent]) -> TxResult<()> {
    for e in events {
        tx.execute(
            "INSERT INTO memory_events (tenant, memory_id, at, kind, origin, reason, request_id, detail)
             VALUES (current_setting('hippo.tenant'), $1, $2, $3, $4, $5, $6, $7)",
            &[
                &e.memory_id,
                &ms(e.at),
                &e.kind.as_str(),
                &e.origin,
                &e.reason,
                &e.request_id,
                &Value::Object(e.detail.clone()).to_string(),
            ],
        )?;
    }
    Ok(())
}

pub(crate) fn insert_rejections(tx: &mut Tx<'_>, rejections: &[Rejection]) -> TxResult<()> {
    for r in rejections {
        tx.execute(
            "INSERT INTO rejections (tenant, user_id, agent_id, session_id, at, request_id, kind, content, role,
             name, event_time, admission)
             VALUES (current_setting('hippo.tenant'), $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            &[
                &r.scope.user_id,
                &r.scope.agent_id,
                &r.scope.session_id,
                &ms(r.at),
                &r.request_id,
                &r.kind.as_str(),
                &r.content,
                &r.actor.role,
                &r.actor.name,
                &r.event_time.map(ms),
                &serde_json::to_string(&r.admission).unwrap_or_default(),
            ],
        )?;
    }
    Ok(())
}

fn mark_erased(tx: &mut Tx<'_>) -> TxResult<()> {
    set_meta(tx, "erased_since_compact", "1")
}

fn parse_cursor(cursor: &str) -> Result<i64> {
    cursor
        .strip_prefix('r')
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| Error::invalid("invalid cursor"))
}

impl Store for PostgresStore {
    fn active_model(&self) -> &str {
        &self.model
    }

    fn insert(&self, batch: InsertBatch) -> Result<InsertOutcome> {
        if batch.memories.is_empty()
            && batch.sources.is_empty()
            && batch.jobs.is_empty()
            && batch.job_step.is_none()
            && batch.events.is_empty()
            && batch.rejections.is_empty()
        {
            return Ok(InsertOutcome::default());
        }
        for nm in &batch.memories {
            if let Some(v) = &nm.vector {
                self.check_dim(v)?;
            }
        }
        self.write(|tx| {
            apply_step(tx, batch.job_step)?;
            for s in &batch.sources {
                tx.execute(
                    "INSERT INTO sources (tenant, id, user_id, agent_id, session_id, content)
                     VALUES (current_setting('hippo.tenant'), $1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                    &[&s.id, &s.scope.user_id, &s.scope.agent_id, &s.scope.session_id, &s.content],
                )?;
            }
            let mut outcome = InsertOutcome::default();
            let mut audit: Vec<entries::Item> = Vec::new();
            for (i, nm) in batch.memories.iter().enumerate() {
                let m = &nm.memory;
                if let Some(existing) = Self::duplicate_of(tx, m)? {
                    outcome.duplicates.push((i, existing));
                    continue;
                }
                self.insert_row(tx, m, nm.vector.as_deref())?;
                audit.push(entries::added(m));
            }
            enqueue(tx, &batch.jobs)?;
            insert_events(tx, &batch.events)?;
            insert_rejections(tx, &batch.rejections)?;
            audit.extend(entries::events(&batch.events));
            audit.extend(batch.rejections.iter().map(entries::rejected));
            Self::append_audit(tx, audit)?;
            Ok(outcome)
        })
    }

    fn get_many(&self, ids: &[MemoryId]) -> Result<Vec<Memory>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let found = self.read(|tx| {
            let rows = tx.query(
                &format!("SELECT {MEMORY_COLUMNS} FROM memories m WHERE m.tenant = current_setting('hippo.tenant') AND m.id = ANY($1)"),
                &[&ids],
            )?;
            Ok(rows.iter().map(rows::memory).collect::<Result<Vec<_>>>()?)
        })?;
        let mut by_id: HashMap<MemoryId, Memory> = found.into_iter().map(|m| (m.id, m)).collect();
        Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
    }

    fn find_keys(&self, keys: &[String]) -> Result<Vec<Option<MemoryId>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let found: HashMap<String, MemoryId> = self.read(|tx| {
            Ok(tx
                .query(
                    "SELECT dedup_key, id FROM memories WHERE tenant = current_setting('hippo.tenant') AND dedup_key = ANY($1)",
                    &[&keys],
                )?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect())
        })?;
        Ok(keys.iter().map(|k| found.get(k).copied()).collect())
    }

    fn list(&self, q: &ListQuery<'_>) -> Result<Page> {
        let mut c = Conditions::after(0);
        c.sql
            .push("m.tenant = current_setting('hippo.tenant')".into());
        if let Some(scope) = q.scope {
            c.scope(scope);
        }
        c.filter(q.filter);
        let (cmp, dir) = match q.order {
            Order::Ascending => (">", "ASC"),
            Order::Descending => ("<", "DESC"),
        };
        if let Some(cursor) = q.cursor {
            c.push(&format!("m.seq {cmp} ?"), parse_cursor(cursor)?);
        }
        let limit = q.limit.clamp(1, 10_000);
        let sql = format!(
            "SELECT {MEMORY_COLUMNS}, m.seq FROM memories m WHERE {} ORDER BY m.seq {dir} LIMIT {}",
            c.where_clause(),
            limit + 1
        );
        let rows = self.read(|tx| Ok(tx.query(&sql, &c.refs())?))?;
        let mut memories = Vec::new();
        let mut last = None;
        let mut more = false;
        for r in &rows {
            if memories.len() == limit {
                more = true;
                break;
            }
            memories.push(rows::memory(r)?);
            last = Some(r.get::<_, i64>(MEMORY_COUNT));
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
        filter: &hippo::Filter,
        limit: usize,
    ) -> Result<Vec<ScopeSummary>> {
        let mut c = Conditions::after(0);
        c.sql
            .push("m.tenant = current_setting('hippo.tenant')".into());
        if let Some(scope) = within {
            c.scope(scope);
        }
        c.filter(filter);
        let sql = format!(
            "SELECT m.user_id, m.agent_id, m.session_id, COUNT(*), MIN(m.recorded_at), MAX(m.recorded_at) \
             FROM memories m WHERE {} GROUP BY m.user_id, m.agent_id, m.session_id \
             ORDER BY MAX(m.recorded_at) DESC, m.user_id COLLATE \"C\" NULLS FIRST, m.agent_id COLLATE \"C\" NULLS FIRST, \
             m.session_id COLLATE \"C\" NULLS FIRST LIMIT {}",
            c.where_clause(),
            limit.max(1)
        );
        let rows = self.read(|tx| Ok(tx.query(&sql, &c.refs())?))?;
        rows.iter()
            .map(|r| {
                Ok(ScopeSummary {
                    scope: Scope {
                        user_id: r.get(0),
                        agent_id: r.get(1),
                        session_id: r.get(2),
                    },
                    memories: r.get::<_, i64>(3) as u64,
                    first_recorded: from_ms(r.get(4))?,
                    last_recorded: from_ms(r.get(5))?,
                })
            })
            .collect()
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
        if let Some(v) = &vector {
            self.check_dim(v)?;
        }
        if previous
            .as_ref()
            .is_some_and(|p| p.version_of != Some(m.id))
        {
            return Err(Error::invalid("a previous version must name its memory"));
        }
        self.write(|tx| {
            let Some(place) = Self::place(tx, m.id)? else {
                return Err(Error::not_found(format!("memory {} not found", m.id)).into());
            };
            if let Some(expected) = &expected {
                let stored = tx.query_one(
                    &format!("SELECT {MEMORY_COLUMNS} FROM memories m WHERE m.seq = $1"),
                    &[&place.seq],
                )?;
                if !hippo::store::unchanged_since(expected, &rows::memory(&stored)?) {
                    return Err(Error::concurrent_change().into());
                }
            }
            apply_step(tx, job_step)?;
            // The earlier version first: a row of its own with the stored vector.
            if let Some(prev) = &previous {
                if Self::duplicate_of(tx, prev)?.is_some() {
                    return Err(Error::new(
                        ErrorKind::Internal,
                        "an earlier version was taken for a duplicate",
                    )
                    .into());
                }
                let version = self.insert_row(tx, prev, None)?;
                tx.execute(
                    "UPDATE memories SET (embedding, vector_model, embedding_model) =
                     (SELECT embedding, vector_model, embedding_model FROM memories WHERE seq = $2) WHERE seq = $1",
                    &[&version, &place.seq],
                )?;
            }
            let body = self.terms(&document::body(&m))?;
            let speaker = self.terms(&document::speaker(&m).unwrap_or_default())?;
            let model = if vector.is_some() {
                Some(self.model.as_str())
            } else {
                m.embedding_model.as_deref()
            };
            let embedding = vector.as_ref().map(|v| Vector::from(v.clone()));
            let derived = (!m.provenance.derived_from.is_empty()).then(|| m.provenance.derived_from.clone());
            let flags = (!m.flags.is_empty()).then(|| serde_json::json!(m.flags));
            let metadata = Value::Object(m.metadata.clone());
            let (used, helpful, wrong) = (
                m.usage.used as i32,
                m.usage.helpful as i32,
                m.usage.wrong as i32,
            );
            let updated = tx.execute(
                "UPDATE memories SET kind = $1, content = $2, role = $3, name = $4, metadata = $5, event_time = $6,
                 updated_at = $7, content_hash = $8, embedding_model = $9, request_id = $10, derived_from = $11,
                 valid_from = $12, valid_to = $13, status = $14, dedup_key = $15, expires_at = $16,
                 used_count = $17, helpful_count = $18, wrong_count = $19, reinforced_at = $20, flags = $22,
                 written_by = COALESCE($23, written_by), kw_body = $24, kw_speaker = $25,
                 embedding = COALESCE($26, embedding), vector_model = COALESCE($27, vector_model)
                 WHERE seq = $21",
                &[
                    p(&m.kind.as_str()),
                    p(&m.content),
                    p(&m.actor.role),
                    p(&m.actor.name),
                    p(&metadata),
                    p(&m.event_time.map(ms)),
                    p(&ms(m.updated_at)),
                    p(&m.content_hash),
                    p(&model),
                    p(&m.provenance.request_id),
                    p(&derived),
                    p(&m.valid_from.map(ms)),
                    p(&m.valid_to.map(ms)),
                    p(&m.status.as_str()),
                    p(&m.dedup_key),
                    p(&m.expires_at.map(ms)),
                    p(&used),
                    p(&helpful),
                    p(&wrong),
                    p(&m.usage.reinforced_at.map(ms)),
                    p(&place.seq),
                    p(&flags),
                    p(&m.provenance.written_by),
                    p(&body),
                    p(&speaker),
                    p(&embedding),
                    p(&vector.as_ref().map(|_| self.model.as_str())),
                ],
            );
            match updated {
                Err(e) if e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION) => {
                    return Err(Error::new(
                        ErrorKind::Conflict,
                        "another memory already holds this content (an exact duplicate)",
                    )
                    .into())
                }
                other => other?,
            };
            // Its neighbours quote it in their context; its own context may
            // change when it joins or leaves the conversation.
            self.refresh_context(tx, place.seq)?;
            self.refresh_around(tx, &place.scope_key, place.seq)?;
            insert_events(tx, &events)?;
            let audit = if events.is_empty() {
                vec![entries::updated(m.id)]
            } else {
                entries::events(&events)
            };
            Self::append_audit(tx, audit)?;
            enqueue(tx, &jobs)?;
            Ok(())
        })
    }

    fn history(&self, id: MemoryId) -> Result<(Vec<Memory>, Vec<MemoryEvent>)> {
        self.read(|tx| {
            let rows = tx.query(
                &format!(
                    "SELECT {MEMORY_COLUMNS} FROM memories m WHERE m.tenant = current_setting('hippo.tenant')
                     AND (m.id = $1 OR m.version_of = $1)
                     ORDER BY coalesce(m.valid_from, m.event_time, m.recorded_at), m.seq"
                ),
                &[&id],
            )?;
            let mut versions = rows.iter().map(rows::memory).collect::<Result<Vec<_>>>()?;
            if versions.is_empty() {
                return Ok((Vec::new(), Vec::new()));
            }
            // The current version last, whatever its validity says.
            if let Some(pos) = versions.iter().position(|m| m.id == id) {
                let current = versions.remove(pos);
                versions.push(current);
            }
            let events = tx
                .query(
                    &format!(
                        "SELECT {} FROM memory_events WHERE tenant = current_setting('hippo.tenant')
                         AND memory_id = $1 ORDER BY seq",
                        rows::EVENT_COLUMNS
                    ),
                    &[&id],
                )?
                .iter()
                .map(rows::event)
                .collect::<Result<Vec<_>>>()?;
            Ok((versions, events))
        })
    }

    fn delete(&self, ids: &[MemoryId]) -> Result<u64> {
        self.write(|tx| {
            // A chunk goes with its whole input: the other chunks and the
            // stored whole text.
            let mut ids: Vec<MemoryId> = ids.to_vec();
            let sources: BTreeSet<uuid::Uuid> = tx
                .query(
                    "SELECT source_id FROM memories WHERE tenant = current_setting('hippo.tenant')
                     AND id = ANY($1) AND source_id IS NOT NULL",
                    &[&ids],
                )?
                .iter()
                .map(|r| r.get(0))
                .collect();
            for s in &sources {
                for r in tx.query(
                    "SELECT id FROM memories WHERE tenant = current_setting('hippo.tenant')
                     AND source_id = $1 AND version_of IS NULL",
                    &[s],
                )? {
                    let id: MemoryId = r.get(0);
                    if !ids.contains(&id) {
                        ids.push(id);
                    }
                }
                tx.execute(
                    "DELETE FROM sources WHERE tenant = current_setting('hippo.tenant') AND id = $1",
                    &[s],
                )?;
            }
            let mut places = Vec::new();
            let mut erased = Vec::new();
            for id in &ids {
                if let Some(place) = Self::place(tx, *id)? {
                    places.push(place);
                    erased.push(*id);
                }
            }
            let n = erased.len() as u64;
            for id in &ids {
                // Finished jobs that worked on them (their plans quote what
                // was extracted) go too; pending ones find them gone.
                tx.execute(
                    "DELETE FROM jobs WHERE tenant = current_setting('hippo.tenant')
                     AND state IN ('done', 'failed') AND payload LIKE $1",
                    &[&format!("%{id}%")],
                )?;
                // Earlier versions and the event log go with the memory.
                for r in tx.query(
                    &format!(
                        "SELECT seq, scope_key, ({CHAIN}), id FROM memories
                         WHERE tenant = current_setting('hippo.tenant') AND version_of = $1"
                    ),
                    &[id],
                )? {
                    places.push(Place {
                        seq: r.get(0),
                        scope_key: r.get(1),
                        in_chain: r.get(2),
                    });
                    erased.push(r.get(3));
                }
                tx.execute(
                    "DELETE FROM memory_events WHERE tenant = current_setting('hippo.tenant') AND memory_id = $1",
                    &[id],
                )?;
                tx.execute(
                    "DELETE FROM grants WHERE tenant = current_setting('hippo.tenant') AND memory_id = $1",
                    &[id],
                )?;
            }
            self.delete_rows(tx, &places)?;
            Self::append_audit(
                tx,
                erased.iter().map(|id| entries::erased(*id)).collect(),
            )?;
            mark_erased(tx)?;
            Ok(n)
        })
    }

    fn delete_scope(&self, scope: &Scope) -> Result<u64> {
        scope.validate()?;
        self.write(|tx| {
            let mut c = Conditions::after(0);
            c.sql.push("m.tenant = current_setting('hippo.tenant')".into());
            c.scope(scope);
            let w = c.where_clause();
            let params = c.refs();
            // Conversations live within one exact scope, and a scope filter
            // takes whole exact scopes, so no surviving memory quotes a
            // deleted one. Versions share their memory's scope.
            tx.execute(
                &format!(
                    "DELETE FROM memory_events e WHERE e.tenant = current_setting('hippo.tenant')
                     AND e.memory_id IN (SELECT m.id FROM memories m WHERE {w})"
                ),
                &params,
            )?;
            let n = tx.execute(&format!("DELETE FROM memories m WHERE {w}"), &params)?;
            for table in ["sources", "jobs", "rejections", "grants"] {
                tx.execute(&format!("DELETE FROM {table} m WHERE {w}"), &params)?;
            }
            // Grants to the user or agent go when the scope is exactly that
            // principal.
            match (&scope.user_id, &scope.agent_id, &scope.session_id) {
                (Some(u), None, None) => {
                    tx.execute(
                        "DELETE FROM grants WHERE tenant = current_setting('hippo.tenant') AND grantee_user = $1",
                        &[u],
                    )?;
                }
                (None, Some(a), None) => {
                    tx.execute(
                        "DELETE FROM grants WHERE tenant = current_setting('hippo.tenant') AND grantee_agent = $1",
                        &[a],
                    )?;
                }
                _ => {}
            }
            Self::append_audit(
                tx,
                vec![entries::scope_erased(scope, n)],
            )?;
            mark_erased(tx)?;
            Ok(n)
        })
    }

    fn derived_from_any(&self, ids: &[MemoryId]) -> Result<Vec<MemoryId>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.read(|tx| {
            Ok(tx
                .query(
                    "SELECT id FROM memories WHERE tenant = current_setting('hippo.tenant')
                     AND derived_from && $1 ORDER BY id",
                    &[&ids],
                )?
                .iter()
                .map(|r| r.get(0))
                .collect())
        })
    }

    fn check(&self) -> Result<Vec<String>> {
        self.read(|tx| {
            let mut problems = Vec::new();
            let missing: i64 = tx
                .query_one(
                    "SELECT count(*) FROM memories WHERE tenant = current_setting('hippo.tenant')
                     AND vector_model IS NOT NULL AND embedding IS NULL",
                    &[],
                )?
                .get(0);
            if missing > 0 {
                problems.push(format!("{missing} memories without their vector"));
            }
            let misshapen: i64 = tx
                .query_one(
                    "SELECT count(*) FROM memories WHERE tenant = current_setting('hippo.tenant')
                     AND embedding IS NOT NULL AND vector_model = $1 AND vector_dims(embedding) <> $2",
                    &[&self.model, &(self.dim as i32)],
                )?
                .get(0);
            if misshapen > 0 {
                problems.push(format!("{misshapen} vectors of the wrong dimension"));
            }
            if !Self::verify(tx)?.ok {
                problems.push("audit log: the hash chain does not verify".into());
            }
            Ok(problems)
        })
    }

    fn put_grant(&self, g: &Grant) -> Result<()> {
        self.write(|tx| {
            insert_grant(tx, g)?;
            Self::append_audit(tx, vec![entries::grant("grant", g)])?;
            Ok(())
        })
    }

    fn revoke_grant(&self, id: uuid::Uuid, at: DateTime<Utc>) -> Result<Option<Grant>> {
        self.write(|tx| {
            let changed = tx.execute(
                "UPDATE grants SET revoked_at = $2 WHERE tenant = current_setting('hippo.tenant')
                 AND id = $1 AND revoked_at IS NULL",
                &[&id, &ms(at)],
            )?;
            let grant = Self::select_grants(
                tx,
                &GrantQuery {
                    id: Some(id),
                    include_revoked: true,
                    limit: 1,
                    ..Default::default()
                },
            )?
            .pop();
            if let (1, Some(g)) = (changed, &grant) {
                Self::append_audit(tx, vec![entries::grant("revoke_grant", g)])?;
            }
            Ok(grant)
        })
    }

    fn grants(&self, query: &GrantQuery<'_>) -> Result<Vec<Grant>> {
        self.read(|tx| Self::select_grants(tx, query))
    }

    fn audit(&self, after: i64, limit: usize) -> Result<Vec<AuditEntry>> {
        self.read(|tx| {
            Self::audit_rows(tx, after, Some(limit))?
                .into_iter()
                .map(audit_entry)
                .collect::<Result<Vec<_>>>()
                .map_err(Fail::Engine)
        })
    }

    fn export(
        &self,
        table: hippo::store::transfer::Table,
        after: i64,
        limit: usize,
    ) -> Result<hippo::store::transfer::ExportPage> {
        self.export_page(table, after, limit)
    }

    fn import(
        &self,
        records: Vec<hippo::store::transfer::Record>,
        progress: &hippo::store::transfer::Progress,
    ) -> Result<()> {
        self.import_records(records, progress)
    }

    fn import_progress(&self, source: &str, table: hippo::store::transfer::Table) -> Result<i64> {
        self.read(|tx| {
            Ok(get_meta(tx, &table.progress_key(source))?
                .and_then(|v| v.parse().ok())
                .unwrap_or(0))
        })
    }

    fn store_id(&self) -> Result<String> {
        use hippo::store::transfer::STORE_ID_KEY;
        if let Some(id) = self.read(|tx| get_meta(tx, STORE_ID_KEY))? {
            return Ok(id);
        }
        self.write(|tx| {
            if let Some(id) = get_meta(tx, STORE_ID_KEY)? {
                return Ok(id);
            }
            let id = uuid::Uuid::new_v4().to_string();
            set_meta(tx, STORE_ID_KEY, &id)?;
            Ok(id)
        })
    }

    fn verify_audit(&self) -> Result<AuditCheck> {
        self.read(Self::verify)
    }

    fn compact(&self) -> Result<()> {
        // VACUUM removes dead rows (what erasure deleted) from the tables
        // and their indexes; it cannot run inside a transaction. The tables
        // hold every tenant's rows, so this compacts for all of them.
        let mut conn = self.db.connection()?;
        for table in crate::schema::TENANT_TABLES {
            conn.client
                .batch_execute(&format!("VACUUM {table}"))
                .map_err(pg_error)?;
        }
        // The BM25 index only marks erased documents deleted; their terms
        // stay in its segments until those merge. A rebuild writes it anew.
        crate::schema::rebuild_keyword_index(&mut conn.client, 0)?;
        drop(conn);
        self.write(|tx| {
            tx.execute(
                "DELETE FROM store_meta WHERE tenant = current_setting('hippo.tenant') AND key = 'erased_since_compact'",
                &[],
            )?;
            Ok(())
        })
    }

    fn optimize_indexes(&self) -> Result<bool> {
        crate::schema::rebuild_keyword_index(
            &mut self.db.connection()?.client,
            crate::schema::MAX_KEYWORD_SEGMENTS,
        )
    }

    fn erased_since_compaction(&self) -> Result<bool> {
        self.read(|tx| Ok(get_meta(tx, "erased_since_compact")?.is_some()))
    }

    fn claim_maintenance(&self, now: DateTime<Utc>, lease: chrono::Duration) -> Result<bool> {
        // One replica per lease: the row's update is atomic, and a replica
        // that died holds it only until the lease lapses.
        let (now, until) = (ms(now), ms(now + lease).to_string());
        self.read(|tx| {
            Ok(tx
                .query_opt(
                    "INSERT INTO store_meta (tenant, key, value)
                     VALUES (current_setting('hippo.tenant'), 'maintenance_until', $1)
                     ON CONFLICT (tenant, key) DO UPDATE SET value = excluded.value
                     WHERE store_meta.value::bigint <= $2
                     RETURNING 1",
                    &[&until, &now],
                )?
                .is_some())
        })
    }

    fn keyword_candidates(&self, q: &KeywordQuery<'_>) -> Result<Vec<Candidate>> {
        if q.terms.is_empty() || q.limit == 0 {
            return Ok(Vec::new());
        }
        let tokens = self.db.tokenizer.query_tokens(q.terms)?;
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        // Parameters: $1 the tenant (as a value, not the setting, so the BM25
        // index applies it; row-level security still checks the setting),
        // then the tokens, then the filter's.
        self.read(|tx| {
            // BM25 as FTS5 computes it (the SQLite store's scores): this
            // tenant's document count and mean length, each term's document
            // frequency (counted by the BM25 index).
            let Some(totals) = tx.query_opt(
                "SELECT docs, tokens FROM keyword_totals WHERE tenant = current_setting('hippo.tenant')",
                &[],
            )?
            else {
                return Ok(Vec::new());
            };
            let (n, total): (i64, i64) = (totals.get(0), totals.get(1));
            if n <= 0 || total <= 0 {
                return Ok(Vec::new());
            }
            let (n, avgdl) = (n as f64, total as f64 / n as f64);
            let df: HashMap<String, i64> = tx
                .query(
                    "SELECT term, docs FROM keyword_terms
                     WHERE tenant = current_setting('hippo.tenant') AND term = ANY($1)",
                    &[&tokens],
                )?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let idf: Vec<f64> = tokens
                .iter()
                .map(|t| match df.get(t) {
                    Some(&d) if d > 0 => keywords::idf(n, d as f64),
                    _ => 0.0,
                })
                .collect();
            // Candidates from the index, ranked with these weights: terms in
            // over half the documents weigh nothing in FTS5's BM25, so they
            // only pick candidates when nothing else matches.
            let informative: Vec<usize> = (0..tokens.len()).filter(|&i| idf[i] > 1e-3).collect();
            let picked: Vec<usize> = if informative.is_empty() {
                (0..tokens.len()).filter(|&i| idf[i] > 0.0).collect()
            } else {
                informative
            };
            if picked.is_empty() {
                return Ok(Vec::new());
            }
            let rows = match self.scope_keyword_rows(tx, q, &tokens, &picked)? {
                Some(rows) => rows,
                None => self.indexed_keyword_rows(tx, q, &tokens, &idf, &picked)?,
            };
            let mut scored: Vec<(f64, i64, Candidate)> = Vec::with_capacity(rows.len());
            for r in &rows {
                let columns: [&str; 3] = [r.get(1), r.get(2), r.get(3)];
                let len = f64::from(r.get::<_, i32>(4));
                let mut score = 0.0;
                for (i, token) in tokens.iter().enumerate() {
                    if idf[i] == 0.0 {
                        continue;
                    }
                    let tfw: f64 = columns
                        .iter()
                        .zip(keywords::COLUMN_WEIGHTS)
                        .map(|(col, w)| w * col.split(' ').filter(|x| x == token).count() as f64)
                        .sum();
                    if tfw > 0.0 {
                        score += keywords::bm25(idf[i], tfw, len, avgdl);
                    }
                }
                if score > 0.0 {
                    scored.push((
                        score,
                        r.get(8),
                        Candidate {
                            id: r.get(0),
                            score: score as f32,
                            time: from_ms(r.get(5))?,
                            recorded_at: from_ms(r.get(6))?,
                            kind: MemoryKind::parse(r.get(7))?,
                        },
                    ));
                }
            }
            scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            scored.truncate(q.limit);
            Ok(scored.into_iter().map(|(_, _, c)| c).collect())
        })
    }

    fn vector_candidates(&self, q: &VectorQuery<'_>) -> Result<Vec<Candidate>> {
        self.check_dim(q.vector)?;
        if q.limit == 0 {
            return Ok(Vec::new());
        }
        let vector = Vector::from(q.vector.to_vec());
        let mut c = Conditions::after(2);
        c.sql
            .push("m.tenant = current_setting('hippo.tenant')".into());
        c.scope(q.scope);
        c.filter(q.filter);
        let conditions = format!(
            "m.vector_model = $2 AND m.embedding IS NOT NULL AND {}",
            c.where_clause()
        );
        let t = &self.vector_type;
        let rows = self.read(|tx| {
            let mut params: Vec<&(dyn ToSql + Sync)> = vec![&vector, &self.model];
            params.extend(c.refs());
            // A small scope inside a large table is searched exactly: the
            // graph would visit many rows of other scopes for each of its
            // own (see `exact_vectors_cheaper`).
            let cap = self.db.exact_scope_rows;
            let small = cap > 0 && narrowed(q.scope) && {
                let scope = scope_rows_up_to(tx, q.scope, cap)?;
                // The planner's estimate of the table's rows (all tenants:
                // the graph holds them all) is close enough here.
                let table: f32 = tx
                    .query_one(
                        "SELECT reltuples FROM pg_class WHERE oid = 'memories'::regclass",
                        &[],
                    )?
                    .get(0);
                scope <= cap && exact_vectors_cheaper(scope, f64::from(table), q.limit)
            };
            if small {
                // `OFFSET 0` keeps the ordering out of the scan, so the
                // planner cannot hand it to the vector index.
                return Ok(tx.query(
                    &format!(
                        "SELECT id, s, t, recorded_at, kind FROM (
                             SELECT m.id, 1 - (m.embedding::{t} <=> $1::{t}) AS s,
                                    coalesce(m.event_time, m.recorded_at) AS t, m.recorded_at,
                                    m.kind, m.seq
                             FROM memories m WHERE {conditions} OFFSET 0) x
                         ORDER BY s DESC, seq LIMIT {}",
                        q.limit
                    ),
                    &params,
                )?);
            }
            // Iterative scans keep walking the graph until `limit` rows pass
            // the filter; ef_search bounds the candidate list per step.
            let ef = (q.limit * 4).clamp(40, 1000);
            tx.batch_execute(&format!(
                "SET LOCAL hnsw.iterative_scan = strict_order; SET LOCAL hnsw.ef_search = {ef}"
            ))?;
            Ok(tx.query(
                &format!(
                    "SELECT m.id, 1 - (m.embedding::{t} <=> $1::{t}) AS s,
                            coalesce(m.event_time, m.recorded_at), m.recorded_at, m.kind
                     FROM memories m WHERE {conditions}
                     ORDER BY m.embedding::{t} <=> $1::{t}, m.seq LIMIT {}",
                    q.limit
                ),
                &params,
            )?)
        })?;
        Self::candidates(rows)
    }

    fn vector_scores(&self, ids: &[MemoryId], vector: &[f32]) -> Result<Vec<Candidate>> {
        self.check_dim(vector)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let v = Vector::from(vector.to_vec());
        let t = &self.vector_type;
        let rows = self.read(|tx| {
            Ok(tx.query(
                &format!(
                    "SELECT m.id, 1 - (m.embedding::{t} <=> $1::{t}), coalesce(m.event_time, m.recorded_at),
                            m.recorded_at, m.kind
                     FROM memories m WHERE m.tenant = current_setting('hippo.tenant') AND m.id = ANY($2)
                     AND m.vector_model = $3 AND m.embedding IS NOT NULL"
                ),
                &[&v, &ids, &self.model],
            )?)
        })?;
        let mut found: HashMap<MemoryId, Candidate> = Self::candidates(rows)?
            .into_iter()
            .map(|c| (c.id, c))
            .collect();
        Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
    }

    fn vectors(&self, ids: &[MemoryId]) -> Result<Vec<Option<Vec<f32>>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let found: HashMap<MemoryId, Vec<f32>> = self.read(|tx| {
            Ok(tx
                .query(
                    "SELECT id, embedding FROM memories WHERE tenant = current_setting('hippo.tenant')
                     AND id = ANY($1) AND vector_model = $2 AND embedding IS NOT NULL",
                    &[&ids, &self.model],
                )?
                .iter()
                .map(|r| (r.get(0), r.get::<_, Vector>(1).to_vec()))
                .collect())
        })?;
        Ok(ids.iter().map(|id| found.get(id).cloned()).collect())
    }

    fn missing_vectors(&self, limit: usize) -> Result<Vec<Memory>> {
        self.read(|tx| {
            let rows = tx.query(
                &format!(
                    "SELECT {MEMORY_COLUMNS} FROM memories m WHERE m.tenant = current_setting('hippo.tenant')
                     AND (m.embedding IS NULL OR m.vector_model IS DISTINCT FROM $1) ORDER BY m.seq LIMIT $2"
                ),
                &[&self.model, &(limit as i64)],
            )?;
            Ok(rows.iter().map(rows::memory).collect::<Result<Vec<_>>>()?)
        })
    }

    fn source(&self, id: MemoryId) -> Result<Option<Source>> {
        self.read(|tx| {
            Ok(tx
                .query_opt(
                    "SELECT user_id, agent_id, session_id, content FROM sources
                     WHERE tenant = current_setting('hippo.tenant') AND id = $1",
                    &[&id],
                )?
                .map(|r| Source {
                    id,
                    scope: Scope {
                        user_id: r.get(0),
                        agent_id: r.get(1),
                        session_id: r.get(2),
                    },
                    content: r.get(3),
                }))
        })
    }

    fn windows(&self, ids: &[MemoryId], before: usize, after: usize) -> Result<Vec<Vec<MemoryId>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let (b, a) = (before as i64, after as i64);
        // One round trip: each memory with up to `before` earlier and
        // `after` later messages of its conversation.
        let rows = self.read(|tx| {
            Ok(tx.query(
                &format!(
                    "SELECT c.id, c.seq, w.id, w.seq FROM memories c
                     LEFT JOIN LATERAL (
                         (SELECT x.id, x.seq FROM memories x WHERE ({chain}) AND x.tenant = c.tenant
                          AND x.scope_key = c.scope_key AND x.seq < c.seq ORDER BY x.seq DESC LIMIT $2)
                         UNION ALL
                         (SELECT x.id, x.seq FROM memories x WHERE ({chain}) AND x.tenant = c.tenant
                          AND x.scope_key = c.scope_key AND x.seq > c.seq ORDER BY x.seq LIMIT $3)
                     ) w ON c.kind = 'message' AND c.version_of IS NULL
                     WHERE c.tenant = current_setting('hippo.tenant') AND c.id = ANY($1)",
                    chain = "x.kind = 'message' AND x.version_of IS NULL"
                ),
                &[&ids, &b, &a],
            )?)
        })?;
        // Each memory's own place, and its neighbours by place.
        let mut around: HashMap<MemoryId, Vec<(i64, MemoryId)>> = HashMap::new();
        for r in &rows {
            let entry = around.entry(r.get(0)).or_default();
            if entry.is_empty() {
                entry.push((r.get(1), r.get(0)));
            }
            if let (Some(id), Some(seq)) =
                (r.get::<_, Option<MemoryId>>(2), r.get::<_, Option<i64>>(3))
            {
                entry.push((seq, id));
            }
        }
        Ok(ids
            .iter()
            .map(|id| {
                let mut w = around.get(id).cloned().unwrap_or_default();
                w.sort_unstable();
                w.into_iter().map(|(_, id)| id).collect()
            })
            .collect())
    }

    fn stats(&self) -> Result<StoreStats> {
        self.read(|tx| {
            let mut stats = StoreStats::default();
            for r in tx.query(
                "SELECT kind, count(*) FROM memories WHERE tenant = current_setting('hippo.tenant') GROUP BY kind",
                &[],
            )? {
                let n = r.get::<_, i64>(1) as u64;
                stats.memories += n;
                stats.by_kind.insert(r.get(0), n);
            }
            for r in tx.query(
                "SELECT vector_model, count(*) FROM memories WHERE tenant = current_setting('hippo.tenant')
                 AND embedding IS NOT NULL GROUP BY vector_model",
                &[],
            )? {
                stats
                    .vectors_by_model
                    .insert(r.get::<_, Option<String>>(0).unwrap_or_default(), r.get::<_, i64>(1) as u64);
            }
            stats.keyword_entries = stats.memories;
            stats.users = tx
                .query_one(
                    "SELECT count(DISTINCT user_id) FROM memories WHERE tenant = current_setting('hippo.tenant')",
                    &[],
                )?
                .get::<_, i64>(0) as u64;
            // The tables hold every tenant's rows: no per-tenant file size.
            stats.disk_bytes = None;
            Ok(stats)
        })
    }

    fn claim_job(&self, now: DateTime<Utc>, lease: chrono::Duration) -> Result<Option<Job>> {
        let (now, until) = (ms(now), ms(now + lease));
        self.read(|tx| {
            let row = tx.query_opt(
                &format!(
                    "UPDATE jobs SET state = 'running', lease_until = $2, attempts = attempts + 1, updated_at = $1
                     WHERE id = (SELECT id FROM jobs WHERE tenant = current_setting('hippo.tenant')
                                 AND state IN ('pending', 'running')
                                 AND ((state = 'pending' AND run_after <= $1) OR (state = 'running' AND lease_until <= $1))
                                 ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
                     RETURNING {}",
                    rows::JOB_COLUMNS
                ),
                &[&now, &until],
            )?;
            Ok(row.as_ref().map(rows::job).transpose()?)
        })
    }

    fn update_job(&self, id: i64, u: JobUpdate, now: DateTime<Utc>) -> Result<()> {
        let state = u.state.map(JobState::as_str);
        let plan = u.plan.map(|p| p.to_string());
        let run_after = u.run_after.map(ms);
        let cost = u.cost.map(|c| Value::Object(c).to_string());
        let payload = u.payload.map(|p| Value::Object(p).to_string());
        let n = self.read(|tx| {
            Ok(tx.execute(
                "UPDATE jobs SET state = coalesce($2, state), plan = coalesce(plan, $3),
                 last_error = coalesce($4, last_error), run_after = coalesce($5, run_after),
                 cost = coalesce($6, cost), updated_at = $7,
                 lease_until = CASE WHEN coalesce($2, state) = 'running' THEN lease_until END,
                 payload = coalesce($8, payload)
                 WHERE tenant = current_setting('hippo.tenant') AND id = $1",
                &[
                    &id,
                    &state,
                    &plan,
                    &u.error,
                    &run_after,
                    &cost,
                    &ms(now),
                    &payload,
                ],
            )?)
        })?;
        if n == 0 {
            return Err(Error::not_found(format!("job {id} not found")));
        }
        Ok(())
    }

    fn job(&self, id: i64) -> Result<Option<Job>> {
        self.read(|tx| {
            let row = tx.query_opt(
                &format!(
                    "SELECT {} FROM jobs WHERE tenant = current_setting('hippo.tenant') AND id = $1",
                    rows::JOB_COLUMNS
                ),
                &[&id],
            )?;
            Ok(row.as_ref().map(rows::job).transpose()?)
        })
    }

    fn jobs(&self, q: &JobQuery<'_>) -> Result<Vec<Job>> {
        let mut c = Conditions::after(0);
        c.sql
            .push("m.tenant = current_setting('hippo.tenant')".into());
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
            "SELECT {} FROM jobs m WHERE {} ORDER BY m.id DESC LIMIT {}",
            rows::JOB_COLUMNS,
            c.where_clause(),
            q.limit.max(1)
        );
        let found = self.read(|tx| Ok(tx.query(&sql, &c.refs())?))?;
        found.iter().map(rows::job).collect()
    }

    fn job_counts(&self) -> Result<JobCounts> {
        self.read(|tx| {
            let mut counts = JobCounts::default();
            for r in tx.query(
                "SELECT state, count(*) FROM jobs WHERE tenant = current_setting('hippo.tenant') GROUP BY state",
                &[],
            )? {
                let n = r.get::<_, i64>(1) as u64;
                match JobState::parse(r.get(0))? {
                    JobState::Pending => counts.pending = n,
                    JobState::Running => counts.running = n,
                    JobState::Done => counts.done = n,
                    JobState::Failed => counts.failed = n,
                }
            }
            Ok(counts)
        })
    }

    fn prune_jobs(&self, before: DateTime<Utc>) -> Result<u64> {
        self.read(|tx| {
            Ok(tx.execute(
                "DELETE FROM jobs WHERE tenant = current_setting('hippo.tenant') AND state = 'done' AND updated_at < $1",
                &[&ms(before)],
            )?)
        })
    }

    fn request(&self, key: &str) -> Result<Option<RequestRecord>> {
        self.read(|tx| {
            Ok(tx
                .query_opt(
                    "SELECT fingerprint, committed_at, status, answer, attempt FROM requests
                     WHERE tenant = current_setting('hippo.tenant') AND key = $1",
                    &[&key],
                )?
                .map(|r| {
                    let status: Option<i32> = r.get(2);
                    let answer: Option<Vec<u8>> = r.get(3);
                    RequestRecord {
                        fingerprint: r.get(0),
                        committed: r.get::<_, Option<i64>>(1).is_some(),
                        attempt: r.get(4),
                        answer: status.zip(answer).map(|(s, a)| (s as u16, a)),
                    }
                }))
        })
    }

    fn record_answer(&self, mark: &RequestMark, status: u16, answer: &[u8]) -> Result<()> {
        let now = Utc::now().timestamp_millis();
        let status = i32::from(status);
        self.read(|tx| {
            tx.execute(
                "INSERT INTO requests (tenant, key, fingerprint, status, answer, answered_at, created_at)
                 VALUES (current_setting('hippo.tenant'), $1, $2, $3, $4, $5, $5)
                 ON CONFLICT (tenant, key) DO UPDATE SET status = excluded.status, answer = excluded.answer,
                     answered_at = excluded.answered_at
                 WHERE requests.attempt IS NULL OR requests.attempt = $6",
                &[&mark.key, &mark.fingerprint, &status, &answer, &now, &mark.attempt],
            )?;
            Ok(())
        })
    }

    fn prune_requests(&self, before: DateTime<Utc>) -> Result<u64> {
        self.read(|tx| {
            Ok(tx.execute(
                "DELETE FROM requests WHERE tenant = current_setting('hippo.tenant') AND created_at < $1",
                &[&ms(before)],
            )?)
        })
    }

    fn usage(&self, ids: &[MemoryId]) -> Result<Vec<Usage>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let found: HashMap<MemoryId, Usage> = self.read(|tx| {
            tx.query(
                "SELECT id, used_count, helpful_count, wrong_count, reinforced_at FROM memories
                 WHERE tenant = current_setting('hippo.tenant') AND id = ANY($1)
                 AND (used_count + helpful_count + wrong_count > 0 OR reinforced_at IS NOT NULL)",
                &[&ids],
            )?
            .iter()
            .map(|r| {
                Ok((
                    r.get(0),
                    Usage {
                        used: r.get::<_, i32>(1) as u32,
                        helpful: r.get::<_, i32>(2) as u32,
                        wrong: r.get::<_, i32>(3) as u32,
                        reinforced_at: r.get::<_, Option<i64>>(4).map(from_ms).transpose()?,
                    },
                ))
            })
            .collect::<Result<HashMap<_, _>>>()
            .map_err(Fail::Engine)
        })?;
        Ok(ids
            .iter()
            .map(|id| found.get(id).copied().unwrap_or_default())
            .collect())
    }

    fn expired(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Memory>> {
        self.read(|tx| {
            let rows = tx.query(
                &format!(
                    "SELECT {MEMORY_COLUMNS} FROM memories m WHERE m.tenant = current_setting('hippo.tenant')
                     AND m.expires_at IS NOT NULL AND m.status = 'active' AND m.expires_at <= $1
                     ORDER BY m.expires_at LIMIT $2"
                ),
                &[&ms(now), &(limit as i64)],
            )?;
            Ok(rows.iter().map(rows::memory).collect::<Result<Vec<_>>>()?)
        })
    }

    fn rejections(
        &self,
        scope: Option<&Scope>,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<Rejection>> {
        let mut c = Conditions::after(0);
        c.sql
            .push("m.tenant = current_setting('hippo.tenant')".into());
        if let Some(scope) = scope {
            c.scope(scope);
        }
        c.push("m.seq > ?", after_seq);
        let sql = format!(
            "SELECT {} FROM rejections m WHERE {} ORDER BY m.seq LIMIT {}",
            rows::REJECTION_COLUMNS,
            c.where_clause(),
            limit
        );
        self.read(|tx| {
            let rows = tx.query(&sql, &c.refs())?;
            Ok(rows
                .iter()
                .map(rows::rejection)
                .collect::<Result<Vec<_>>>()?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::exact_vectors_cheaper;

    #[test]
    fn small_scopes_of_large_tables_are_scored_exactly() {
        // Measured: a scope of 1,000 in a million rows (the scale benchmark).
        assert!(exact_vectors_cheaper(1_000, 1e6, 50));
        assert!(exact_vectors_cheaper(2_000, 1e6, 50));
        // A conversation of 600 turns in a table of 6,000: the graph finds
        // its rows in a few hundred visits.
        assert!(!exact_vectors_cheaper(600, 6_000.0, 50));
        // A tenth of the table: the graph finds them every tenth visit.
        assert!(!exact_vectors_cheaper(1_000, 1e4, 50));
        // An empty scope or an unanalysed table (the estimate is -1).
        assert!(exact_vectors_cheaper(0, 1e6, 50));
        assert!(!exact_vectors_cheaper(10, -1.0, 50));
    }
}

//! The audit log: every write to a store (add, change, delete, erase,
//! rejection) appends an entry in the same transaction, naming who did it,
//! what, and to which memory — ids and kinds only, never content, so the
//! log survives erasure without keeping what was erased.
//!
//! Entries are hash-chained: each entry's hash is SHA-256 over its
//! length-prefixed fields and the previous entry's hash, and the store keeps
//! the last entry's number and hash (`seq:hash`, `audit_head`) apart from
//! the log, so changing, removing or inserting any single entry (the last
//! one included) is detected by [`verify`].
//!
//! Who did it is ambient, like a tracing span, rather than a parameter on
//! every engine method: the server runs each request's engine call inside
//! [`as_actor`] with the API key's id; jobs run as `job:<id>`; anything else
//! is `local`. The store stamps each inserted row and new version with the
//! same actor (`Provenance::written_by`). A request's `Idempotency-Key`
//! rides along the same way (`RequestMark`): the store records that the
//! request committed inside the transaction where the entry is appended.

use std::cell::RefCell;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

thread_local! {
    static ACTOR: RefCell<Option<String>> = const { RefCell::new(None) };
    static REQUEST: RefCell<Option<RequestMark>> = const { RefCell::new(None) };
}

/// An idempotent request (a client's `Idempotency-Key`): every store write
/// made while it is ambient ([`in_request`]) records, in its own
/// transaction, that the request committed — so whether a request that got
/// no answer (a crash, a dropped connection) changed anything is known
/// exactly, and a retry never writes twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestMark {
    /// The key, as the server scopes it (hashed with the caller's identity).
    pub key: String,
    /// A hash of the request (method, path, body), so a key reused for
    /// another request is told apart.
    pub fingerprint: String,
    /// This attempt at the request (unique per attempt): a write is refused
    /// when another attempt with the same key committed first — two
    /// servers sharing a store may run the same retried request at once.
    pub attempt: String,
}

/// Runs `f` with store writes marked as made by request `mark`.
pub fn in_request<T>(mark: Option<RequestMark>, f: impl FnOnce() -> T) -> T {
    with_ambient(&REQUEST, mark, f)
}

/// The idempotent request being served, if any (see [`in_request`]).
pub fn current_request() -> Option<RequestMark> {
    REQUEST.with(|r| r.borrow().clone())
}

/// Runs `f` with writes attributed to `actor`.
pub fn as_actor<T>(actor: &str, f: impl FnOnce() -> T) -> T {
    with_ambient(&ACTOR, Some(actor.to_owned()), f)
}

/// Runs `f` with `slot` set to `value`, restoring what it held before even
/// if `f` panics.
fn with_ambient<V: 'static, T>(
    slot: &'static std::thread::LocalKey<RefCell<Option<V>>>,
    value: Option<V>,
    f: impl FnOnce() -> T,
) -> T {
    struct Restore<V: 'static> {
        slot: &'static std::thread::LocalKey<RefCell<Option<V>>>,
        before: Option<V>,
    }
    impl<V: 'static> Drop for Restore<V> {
        fn drop(&mut self) {
            let before = self.before.take();
            self.slot.with(|s| *s.borrow_mut() = before);
        }
    }
    let before = slot.with(|s| s.replace(value));
    let _restore = Restore { slot, before };
    f()
}

/// Who writes now (see [`as_actor`]); `local` by default.
pub fn current_actor() -> String {
    ACTOR.with(|a| a.borrow().clone().unwrap_or_else(|| "local".to_owned()))
}

/// One entry of the log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    /// Position, from 1, without gaps.
    pub seq: i64,
    /// When it was written.
    pub at: DateTime<Utc>,
    /// Who (an API key id, `job:<id>`, `local`).
    pub actor: String,
    /// What: `add`, an event kind (`revised`, `deleted`, ...), `update`,
    /// `erase`, `erase_scope`, `reject`.
    pub action: String,
    /// The memory id (or scope) concerned.
    pub target: String,
    /// Non-content facts (kind, scope, origin, request id).
    pub detail: Map<String, Value>,
    /// The previous entry's hash (empty for the first).
    pub prev_hash: String,
    /// This entry's hash.
    pub hash: String,
}

/// The hash of an entry with these fields.
pub fn entry_hash(
    prev_hash: &str,
    seq: i64,
    at_ms: i64,
    actor: &str,
    action: &str,
    target: &str,
    detail: &str,
) -> String {
    let mut h = Sha256::new();
    for part in [
        prev_hash,
        &seq.to_string(),
        &at_ms.to_string(),
        actor,
        action,
        target,
        detail,
    ] {
        // Length-prefixed, so no two field splits hash alike.
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditCheck {
    /// Entries read.
    pub entries: u64,
    /// True when the chain is intact.
    pub ok: bool,
    /// The first entry found wrong (or where one is missing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_bad: Option<i64>,
    /// What is wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// Checks a log (in `seq` order, as stored: `(seq, at_ms, actor, action,
/// target, detail_json, prev_hash, hash)`) against the head kept apart
/// (`(seq, hash)` of the last entry, `None` when the log is empty).
pub fn verify(
    rows: impl IntoIterator<Item = (i64, i64, String, String, String, String, String, String)>,
    head: Option<(i64, String)>,
) -> AuditCheck {
    let mut prev = String::new();
    let mut expected = 1i64;
    let mut n = 0u64;
    let bad = |seq: i64, n: u64, what: String| AuditCheck {
        entries: n,
        ok: false,
        first_bad: Some(seq),
        problem: Some(what),
    };
    for (seq, at, actor, action, target, detail, prev_hash, hash) in rows {
        n += 1;
        if seq != expected {
            return bad(expected, n, format!("entry {expected} is missing"));
        }
        if prev_hash != prev {
            return bad(
                seq,
                n,
                format!("entry {seq} does not follow entry {}", seq - 1),
            );
        }
        if entry_hash(&prev_hash, seq, at, &actor, &action, &target, &detail) != hash {
            return bad(seq, n, format!("entry {seq} was changed"));
        }
        prev = hash;
        expected += 1;
    }
    let last = (expected > 1).then(|| (expected - 1, prev.clone()));
    if last != head {
        let at = head.as_ref().map_or(expected, |(s, _)| *s);
        return bad(
            at,
            n,
            "the log's last entry does not match the recorded head (entries removed at the end?)"
                .into(),
        );
    }
    AuditCheck {
        entries: n,
        ok: true,
        first_bad: None,
        problem: None,
    }
}

/// The entries a store's writes append, `(action, target, detail)`: the
/// same on every store, so a log reads the same whichever store wrote it.
pub mod entries {
    use serde_json::{json, Map, Value};

    use crate::model::{Memory, MemoryEvent, MemoryId, Scope};
    use crate::policy::Rejection;
    use crate::sharing::Grant;

    /// One entry to append: action, target, detail.
    pub type Item = (String, String, Map<String, Value>);

    /// Scope fields of a detail.
    fn scope(scope: &Scope) -> Map<String, Value> {
        let mut d = Map::new();
        for (k, v) in [
            ("user_id", &scope.user_id),
            ("agent_id", &scope.agent_id),
            ("session_id", &scope.session_id),
        ] {
            if let Some(v) = v {
                d.insert(k.into(), Value::String(v.clone()));
            }
        }
        d
    }

    /// A memory stored: its scope, kind, quarantine flags and request.
    pub fn added(m: &Memory) -> Item {
        let mut d = scope(&m.scope);
        d.insert("kind".into(), Value::String(m.kind.as_str().into()));
        if !m.flags.is_empty() {
            d.insert("quarantined".into(), json!(m.flags));
        }
        if let Some(r) = m.provenance.request_id {
            d.insert("request_id".into(), Value::String(r.to_string()));
        }
        ("add".to_owned(), m.id.to_string(), d)
    }

    /// A write not admitted: its scope and kind (no content).
    pub fn rejected(r: &Rejection) -> Item {
        let mut d = scope(&r.scope);
        d.insert("kind".into(), Value::String(r.kind.as_str().into()));
        ("reject".to_owned(), String::new(), d)
    }

    /// Logged events: their kind, memory and origin.
    pub fn events(events: &[MemoryEvent]) -> Vec<Item> {
        events
            .iter()
            .map(|e| {
                let mut d = Map::new();
                d.insert("origin".into(), Value::String(e.origin.clone()));
                if let Some(r) = e.request_id {
                    d.insert("request_id".into(), Value::String(r.to_string()));
                }
                (e.kind.as_str().to_owned(), e.memory_id.to_string(), d)
            })
            .collect()
    }

    /// A change that logged no event.
    pub fn updated(id: MemoryId) -> Item {
        ("update".to_owned(), id.to_string(), Map::new())
    }

    /// A memory (or an earlier version of one) erased for good.
    pub fn erased(id: MemoryId) -> Item {
        ("erase".to_owned(), id.to_string(), Map::new())
    }

    /// A whole scope erased, with how many memories it held.
    pub fn scope_erased(s: &Scope, memories: u64) -> Item {
        let mut d = scope(s);
        d.insert("memories".into(), Value::from(memories));
        ("erase_scope".to_owned(), String::new(), d)
    }

    /// A grant given (`grant`) or revoked (`revoke_grant`): what, to whom,
    /// until when (ids, no content).
    pub fn grant(action: &str, g: &Grant) -> Item {
        let mut d = Map::new();
        if let Some(m) = g.memory_id {
            d.insert("memory_id".into(), Value::String(m.to_string()));
        }
        d.insert("scope".into(), Value::Object(scope(&g.scope)));
        if let Ok(v) = serde_json::to_value(&g.grantee) {
            d.insert("grantee".into(), v);
        }
        if let Some(e) = g.expires_at {
            d.insert("expires_at".into(), Value::String(e.to_rfc3339()));
        }
        (action.to_owned(), g.id.to_string(), d)
    }
}

/// The SQL of a log kept in an `audit_log` table, its head under key
/// `audit_head` in a `key`/`value` table (`store_meta` in stores,
/// `control_meta` in the control database). Shared by both.
pub mod sql {
    use rusqlite::{params, Connection, OptionalExtension};
    use serde_json::{Map, Value};

    use super::{entry_hash, verify, AuditCheck, AuditEntry};

    fn head(conn: &Connection, meta: &str) -> rusqlite::Result<Option<(i64, String)>> {
        let h: Option<String> = conn
            .prepare_cached(&format!(
                "SELECT value FROM {meta} WHERE key = 'audit_head'"
            ))?
            .query_row([], |r| r.get(0))
            .optional()?;
        Ok(h.as_deref().and_then(|h| {
            let (s, h) = h.split_once(':')?;
            Some((s.parse().ok()?, h.to_owned()))
        }))
    }

    /// Appends `(action, target, detail)` entries by the current actor,
    /// chained to the head, on `conn` (inside the caller's transaction).
    pub fn append(
        conn: &Connection,
        meta: &str,
        items: Vec<(String, String, Map<String, Value>)>,
    ) -> rusqlite::Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let (mut seq, mut prev) = head(conn, meta)?.unwrap_or((0, String::new()));
        let actor = super::current_actor();
        let at = chrono::Utc::now().timestamp_millis();
        for (action, target, detail) in items {
            seq += 1;
            let detail = Value::Object(detail).to_string();
            let hash = entry_hash(&prev, seq, at, &actor, &action, &target, &detail);
            conn.prepare_cached(
                "INSERT INTO audit_log (seq, at, actor, action, target, detail, prev_hash, hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![seq, at, actor, action, target, detail, prev, hash])?;
            prev = hash;
        }
        conn.prepare_cached(&format!(
            "INSERT INTO {meta} (key, value) VALUES ('audit_head', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value"
        ))?
        .execute([format!("{seq}:{prev}")])?;
        Ok(())
    }

    /// Writes entries copied from another log as they are (seq, time,
    /// actor, hashes) after this log's head, which must be the copy's
    /// previous entry; the head moves to the last one. Refuses entries that
    /// do not continue the chain, so a copy cannot splice two logs.
    pub fn import(
        conn: &Connection,
        meta: &str,
        entries: &[AuditEntry],
    ) -> crate::error::Result<()> {
        let Some(last) = entries.last() else {
            return Ok(());
        };
        let (mut seq, mut prev) = head(conn, meta)?.unwrap_or((0, String::new()));
        for e in entries {
            if e.seq != seq + 1 || e.prev_hash != prev {
                return Err(crate::Error::invalid(format!(
                    "audit entry {} does not continue the chain at {seq}",
                    e.seq
                )));
            }
            conn.prepare_cached(
                "INSERT INTO audit_log (seq, at, actor, action, target, detail, prev_hash, hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                e.seq,
                e.at.timestamp_millis(),
                e.actor,
                e.action,
                e.target,
                Value::Object(e.detail.clone()).to_string(),
                e.prev_hash,
                e.hash
            ])?;
            seq = e.seq;
            prev = e.hash.clone();
        }
        conn.prepare_cached(&format!(
            "INSERT INTO {meta} (key, value) VALUES ('audit_head', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value"
        ))?
        .execute([format!("{}:{}", last.seq, last.hash)])?;
        Ok(())
    }

    /// Entries after `after`, oldest first, at most `limit`.
    pub fn entries(
        conn: &Connection,
        after: i64,
        limit: usize,
    ) -> rusqlite::Result<Vec<AuditEntry>> {
        let mut stmt = conn.prepare_cached(
            "SELECT seq, at, actor, action, target, detail, prev_hash, hash FROM audit_log
             WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![after, limit as i64], |r| {
            let at: i64 = r.get(1)?;
            let detail: String = r.get(5)?;
            Ok(AuditEntry {
                seq: r.get(0)?,
                at: chrono::DateTime::from_timestamp_millis(at)
                    .ok_or(rusqlite::Error::IntegralValueOutOfRange(1, at))?,
                actor: r.get(2)?,
                action: r.get(3)?,
                target: r.get(4)?,
                detail: serde_json::from_str(&detail).unwrap_or_default(),
                prev_hash: r.get(6)?,
                hash: r.get(7)?,
            })
        })?;
        rows.collect()
    }

    /// Checks the whole log against its head.
    pub fn check(conn: &Connection, meta: &str) -> rusqlite::Result<AuditCheck> {
        let head = head(conn, meta)?;
        let mut stmt = conn.prepare(
            "SELECT seq, at, actor, action, target, detail, prev_hash, hash FROM audit_log ORDER BY seq",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(verify(rows, head))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Row = (i64, i64, String, String, String, String, String, String);

    fn chain(n: i64) -> Vec<Row> {
        let mut prev = String::new();
        (1..=n)
            .map(|seq| {
                let (actor, action, target, detail) = ("k1", "add", format!("m{seq}"), "{}");
                let hash = entry_hash(&prev, seq, 1000 + seq, actor, action, &target, detail);
                let row = (
                    seq,
                    1000 + seq,
                    actor.to_owned(),
                    action.to_owned(),
                    target,
                    detail.to_owned(),
                    prev.clone(),
                    hash.clone(),
                );
                prev = hash;
                row
            })
            .collect()
    }

    fn head(rows: &[Row]) -> Option<(i64, String)> {
        rows.last().map(|r| (r.0, r.7.clone()))
    }

    #[test]
    fn an_intact_chain_verifies() {
        let rows = chain(5);
        let h = head(&rows);
        assert!(verify(rows, h).ok);
        assert!(verify(Vec::<Row>::new(), None).ok);
    }

    #[test]
    fn any_single_change_or_removal_is_detected() {
        let rows = chain(6);
        let h = head(&rows);
        for i in 0..rows.len() {
            let mut changed = rows.clone();
            changed[i].3 = "erase".into();
            let c = verify(changed, h.clone());
            assert!(
                !c.ok && c.first_bad == Some(i as i64 + 1),
                "change {i}: {c:?}"
            );
            let mut removed = rows.clone();
            removed.remove(i);
            assert!(!verify(removed, h.clone()).ok, "removal {i}");
        }
        // Everything removed, head kept: detected.
        assert!(!verify(Vec::<Row>::new(), h).ok);
    }

    #[test]
    fn actors_are_scoped_to_the_call() {
        assert_eq!(current_actor(), "local");
        let inner = as_actor("key1", || {
            as_actor("job:7", current_actor) + "," + &current_actor()
        });
        assert_eq!(inner, "job:7,key1");
        assert_eq!(current_actor(), "local");
    }
}

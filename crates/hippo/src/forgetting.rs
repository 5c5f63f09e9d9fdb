//! Forgetting and reinforcement on the engine: client feedback, expiry, and
//! the maintenance pass that archives what expired or faded (see
//! [`crate::policy`] for the scores). Nothing is lost: an archived memory
//! keeps its history, is searchable on request and can be restored, and
//! every archive is logged with the numbers that caused it.
//!
//! Strength decays per kind (messages, documents, profiles and summaries do
//! not decay; facts and procedures do). Feedback (`used`, `helpful`, `wrong`)
//! is kept on the row (`used_count`, ...) and logged as `feedback` events;
//! ranking reads it for every candidate from a small in-memory map in the
//! store (`Store::usage`, holding only memories with feedback). Expiry hides
//! a memory from the instant it passes, before maintenance archives it.
//!
//! The maintenance pass (`Hippo::maintain`: a server thread every hour,
//! `POST /v1/maintenance`, `hippo maintain`) archives expired memories and
//! those whose strength fell below their kind's `archive_below`, prunes
//! finished jobs after a week and idempotency records after a day, and
//! compacts the store whenever something was erased since the last
//! compaction (so erased tokens left in index segments go too).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::engine::Hippo;
use crate::error::{Error, Result};
use crate::model::{
    millis, EventKind, Filter, Memory, MemoryId, MemoryKind, Scope, Signal, Status,
};
use crate::policy::{strength_of, Strength};
use crate::store::{ListQuery, Order, Update};

/// Memories examined per store call in a maintenance pass.
const PAGE: usize = 500;

/// How long finished jobs are kept (their plan and cost stay readable).
const KEEP_DONE_JOBS_DAYS: i64 = 7;

/// How long an idempotent request's answer is kept for retries.
pub const KEEP_REQUESTS_HOURS: i64 = 24;

/// What a maintenance pass did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MaintenanceReport {
    /// Memories archived because they expired.
    pub expired: Vec<MemoryId>,
    /// Memories archived because their strength fell below their kind's
    /// threshold.
    pub faded: Vec<MemoryId>,
    /// Memories whose strength was checked.
    pub checked: usize,
    /// Finished jobs older than a week that were deleted.
    pub pruned_jobs: u64,
    /// Whether the store was compacted because something was erased since
    /// the last compaction (see [`Hippo::compact`]).
    pub compacted: bool,
    /// Whether a search index was rebuilt because writes had fragmented it
    /// (see [`crate::store::Store::optimize_indexes`]).
    pub optimized_indexes: bool,
}

/// Attempts of a feedback report that keeps racing other changes.
const FEEDBACK_ATTEMPTS: usize = 8;

impl Hippo {
    /// Records client feedback on a memory: `used` and `helpful` reinforce
    /// it (its strength restarts from now and decays more slowly), `wrong`
    /// halves its strength. Logged as a `feedback` event; returns the
    /// memory as changed.
    pub fn feedback(
        &self,
        id: MemoryId,
        scope: Option<&Scope>,
        signal: Signal,
        note: Option<String>,
    ) -> Result<Memory> {
        // Reports add up: one that raced another report (or any change) is
        // counted again from what is stored now.
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.feedback_once(id, scope, signal, note.clone()) {
                Err(e) if e.is_concurrent_change() && attempts < FEEDBACK_ATTEMPTS => {}
                other => return other,
            }
        }
    }

    fn feedback_once(
        &self,
        id: MemoryId,
        scope: Option<&Scope>,
        signal: Signal,
        note: Option<String>,
    ) -> Result<Memory> {
        let mut m = self.changeable(id, scope)?;
        let read = m.clone();
        if m.status == Status::Deleted {
            return Err(Error::new(
                crate::ErrorKind::Conflict,
                format!("memory {id} is deleted; restore it first"),
            ));
        }
        let now = millis(self.now());
        let before = strength_of(self.policies(), &m, now);
        match signal {
            Signal::Used => m.usage.used = m.usage.used.saturating_add(1),
            Signal::Helpful => m.usage.helpful = m.usage.helpful.saturating_add(1),
            Signal::Wrong => m.usage.wrong = m.usage.wrong.saturating_add(1),
        }
        if signal != Signal::Wrong {
            m.usage.reinforced_at = Some(now);
        }
        let after = strength_of(self.policies(), &m, now);
        let mut event = self.event(&m, EventKind::Feedback, "api", note);
        event.detail = detail([
            ("signal", json!(signal.as_str())),
            ("strength_before", json!(round4(before.value))),
            ("strength_after", json!(round4(after.value))),
        ]);
        self.store().update(Update {
            events: vec![event],
            expected: Some(Box::new(read)),
            ..Update::in_place(m.clone(), None)
        })?;
        Ok(m)
    }

    /// Sets (or with `None` clears) when a memory expires. From that instant
    /// search and listings skip it; the next maintenance pass archives it.
    pub fn set_expiry(
        &self,
        id: MemoryId,
        scope: Option<&Scope>,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<Memory> {
        let mut m = self.changeable(id, scope)?;
        let read = m.clone();
        let expires_at = expires_at.map(millis);
        if m.expires_at == expires_at {
            return Ok(m);
        }
        m.expires_at = expires_at;
        m.updated_at = millis(self.now());
        let mut event = self.event(&m, EventKind::Expiry, "api", None);
        if let Some(t) = expires_at {
            event.detail = detail([("expires_at", json!(t))]);
        }
        self.store().update(Update {
            events: vec![event],
            expected: Some(Box::new(read)),
            ..Update::in_place(m.clone(), None)
        })?;
        Ok(m)
    }

    /// Archives a memory (a client's decision): it leaves default search
    /// and listings, keeps its history, and [`Hippo::restore`] brings it
    /// back.
    pub fn archive(
        &self,
        id: MemoryId,
        scope: Option<&Scope>,
        reason: Option<String>,
    ) -> Result<Memory> {
        let m = self.changeable(id, scope)?;
        self.archive_read(m, "api", reason, Map::new())
    }

    /// Archives `m` (as just read) unless it is not active (a deleted
    /// memory stays deleted).
    fn archive_read(
        &self,
        m: Memory,
        origin: &str,
        reason: Option<String>,
        detail: Map<String, Value>,
    ) -> Result<Memory> {
        if m.status != Status::Active {
            return Ok(m);
        }
        self.change_status(
            m,
            Status::Archived,
            EventKind::Archived,
            origin,
            reason,
            detail,
        )
    }

    /// A memory's strength now (see [`crate::policy::strength`]).
    pub fn strength(&self, m: &Memory) -> Strength {
        strength_of(self.policies(), m, self.now())
    }

    /// One maintenance pass: archives active memories that expired, then
    /// current memories of kinds with an `archive_below` threshold whose
    /// strength fell below it. Each archive is logged with its numbers. When
    /// something was erased since the last compaction, compacts the store.
    /// Safe to run at any time and from several processes (each archive is
    /// its own transaction and archiving twice changes nothing).
    pub fn maintain(&self) -> Result<MaintenanceReport> {
        let mut report = MaintenanceReport::default();
        let now = millis(self.now());
        report.pruned_jobs = self
            .store()
            .prune_jobs(now - chrono::Duration::days(KEEP_DONE_JOBS_DAYS))?;
        // Idempotency keys are honoured for a day (as common payment APIs do).
        self.store()
            .prune_requests(now - chrono::Duration::hours(KEEP_REQUESTS_HOURS))?;
        if self.store().erased_since_compaction()? {
            self.store().compact()?;
            report.compacted = true;
        }
        report.optimized_indexes = self.store().optimize_indexes()?;
        loop {
            let due = self.store().expired(now, PAGE)?;
            if due.is_empty() {
                break;
            }
            let n = due.len();
            for m in due {
                let expires_at = m.expires_at.map(|t| json!(t)).unwrap_or(Value::Null);
                let id = m.id;
                self.archive_read(
                    m,
                    "maintenance",
                    Some("expired".into()),
                    detail([("expires_at", expires_at)]),
                )?;
                report.expired.push(id);
            }
            if n < PAGE {
                break;
            }
        }
        let fading: Vec<MemoryKind> = MemoryKind::ALL
            .into_iter()
            .filter(|k| self.policies().of(*k).archive_below.is_some())
            .collect();
        if fading.is_empty() {
            return Ok(report);
        }
        let filter = Filter {
            kinds: fading,
            now: Some(now),
            ..Filter::default()
        };
        let mut cursor: Option<String> = None;
        loop {
            let page = self.store().list(&ListQuery {
                scope: None,
                filter: &filter,
                cursor: cursor.as_deref(),
                limit: PAGE,
                order: Order::Ascending,
            })?;
            for m in page.memories {
                report.checked += 1;
                let policy = self.policies().of(m.kind);
                let Some(threshold) = policy.archive_below else {
                    continue;
                };
                let s = strength_of(self.policies(), &m, now);
                if s.value >= threshold {
                    continue;
                }
                let (id, usage) = (m.id, m.usage);
                self.archive_read(
                    m,
                    "maintenance",
                    Some("faded".into()),
                    detail([
                        ("strength", json!(round4(s.value))),
                        ("threshold", json!(round4(threshold))),
                        ("age_days", json!(round4(s.age_days))),
                        ("stability_days", json!(s.stability_days.map(round4))),
                        ("used", json!(usage.used)),
                        ("helpful", json!(usage.helpful)),
                        ("wrong", json!(usage.wrong)),
                    ]),
                )?;
                report.faded.push(id);
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        Ok(report)
    }
}

/// `x` to four decimals, so logged numbers read as computed (0.05, not
/// 0.05000000074505806).
fn round4(x: f32) -> f64 {
    (f64::from(x) * 1e4).round() / 1e4
}

fn detail<const N: usize>(pairs: [(&str, Value); N]) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

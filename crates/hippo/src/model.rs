//! The data model: what a memory is, who it belongs to and where it came from.
//!
//! Invariants: every memory has exactly one [`Scope`] with at least one of
//! user/agent/session set; its `id` is a UUIDv7 (time-ordered) assigned by the
//! engine; `content_hash` is the SHA-256 of `content`; times have millisecond
//! precision; `recorded_at` is set once when stored and never changes.
//!
//! Versions: a memory's id always shows its latest version; a change keeps the
//! state it replaces as a row of its own (new id, `version_of` = the memory's
//! id, its old provenance, `valid_to` = when the change took effect). Versions
//! never join a conversation chain and cannot be changed. Status is separate
//! from validity: `active` (retrieved), `archived`, `deleted` (soft,
//! restorable), `quarantined`; reads take a set of statuses (default active).
//! Every revision, invalidation, status change and merge is a `MemoryEvent`
//! (origin `api`, `llm`, `dedup`, `maintenance`; reason; request id), written in
//! the change's transaction.
//!
//! Which time each rule uses (on purpose: a rule that used the event time to
//! mean "how long have we known this" made imported histories fade on
//! arrival):
//!
//! - `recorded_at` (and `usage.reinforced_at`): when Hippo learnt it, or was
//!   last told it was used or helpful. Drives strength, so forgetting
//!   (`policy::strength_of`) and maintenance's "faded" archive.
//! - `event_time`: when what it describes happened (client-given). Drives the
//!   recency prior (relative to the newest candidate, never to now, so old
//!   conversations are not penalised), date tokens, the `event_time_from/to`
//!   filters, and the order and dates of digest and profile lines.
//! - `valid_from` / `valid_to`: when it holds in the world. Default reads take
//!   what holds now (`valid_to` unset or later, no explicit `valid_from` after
//!   now); `as_of` T takes `valid_since() <= T < valid_to` (`valid_since` falls
//!   back to the event time, then the record time); `all_versions` ignores it.
//! - `expires_at`: absolute end of usefulness; hidden and read as `archived`
//!   from that instant (`Filter::accepts_expiry`), before maintenance archives.
//!
//! Admission scores no time at all.
//!
//! Exact duplicates (`dedup_key`): SHA-256 over scope, kind, speaker, text,
//! event time, metadata, chunk position and what else tells a memory apart
//! (its occurrence within one write, so a conversation that says "ok" twice
//! keeps both; a chunk's whole source). Messages without an event time get no
//! key: live chat repeats itself for real.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::{Error, Result};

/// Stable, time-ordered identifier of a memory (UUIDv7).
pub type MemoryId = Uuid;

/// Maximum length of a scope identifier, in bytes.
pub const MAX_SCOPE_ID_LEN: usize = 256;

/// Who a memory belongs to. At least one field must be set on write; on read a
/// scope matches every memory whose set fields are all equal (so `user_id=u`
/// matches all of u's memories, whatever agent or session wrote them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Scope {
    /// The end user the memory is about or belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The agent that owns or wrote the memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The conversation/session (Mem0 calls it `run_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

impl Scope {
    /// A scope for one user.
    pub fn user(user_id: impl Into<String>) -> Self {
        Scope {
            user_id: Some(user_id.into()),
            ..Default::default()
        }
    }

    /// Checks that at least one field is set and that all set fields are
    /// non-empty, of bounded length and free of control characters.
    pub fn validate(&self) -> Result<()> {
        let fields = [
            ("user_id", &self.user_id),
            ("agent_id", &self.agent_id),
            ("session_id", &self.session_id),
        ];
        if fields.iter().all(|(_, v)| v.is_none()) {
            return Err(Error::invalid(
                "at least one of user_id, agent_id or session_id is required",
            ));
        }
        for (name, value) in fields {
            if let Some(v) = value {
                if v.is_empty() || v.len() > MAX_SCOPE_ID_LEN || v.chars().any(char::is_control) {
                    return Err(Error::invalid(format!(
                        "{name} must be 1..={MAX_SCOPE_ID_LEN} bytes without control characters"
                    )));
                }
            }
        }
        Ok(())
    }

    /// True when `self`, used as a filter, matches a memory stored under `stored`.
    pub fn matches(&self, stored: &Scope) -> bool {
        fn field(filter: &Option<String>, value: &Option<String>) -> bool {
            filter.is_none() || filter == value
        }
        field(&self.user_id, &stored.user_id)
            && field(&self.agent_id, &stored.agent_id)
            && field(&self.session_id, &stored.session_id)
    }
}

/// What sort of memory this is. Later kinds (facts, summaries, profiles,
/// procedures) are written by the lifecycle features.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum MemoryKind {
    /// One conversation turn, verbatim.
    #[default]
    Message,
    /// A short document stored whole.
    Document,
    /// One chunk of a longer document or message; `provenance.source_id` names the whole.
    Chunk,
    /// A semantic fact.
    Fact,
    /// A summary of several memories.
    Summary,
    /// A profile/core description of a user or agent.
    Profile,
    /// A procedure: how to do something, lessons learned.
    Procedure,
}

impl MemoryKind {
    /// All kinds, in declaration order.
    pub const ALL: [MemoryKind; 7] = [
        MemoryKind::Message,
        MemoryKind::Document,
        MemoryKind::Chunk,
        MemoryKind::Fact,
        MemoryKind::Summary,
        MemoryKind::Profile,
        MemoryKind::Procedure,
    ];

    /// The stable lower-case name used in storage and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            MemoryKind::Message => "message",
            MemoryKind::Document => "document",
            MemoryKind::Chunk => "chunk",
            MemoryKind::Fact => "fact",
            MemoryKind::Summary => "summary",
            MemoryKind::Profile => "profile",
            MemoryKind::Procedure => "procedure",
        }
    }

    /// Parses a name produced by [`MemoryKind::as_str`].
    pub fn parse(s: &str) -> Result<Self> {
        MemoryKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| Error::invalid(format!("unknown memory kind {s:?}")))
    }
}

/// Who said or wrote the content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// `user`, `assistant`, `system`, `tool`, ... (free text, lower-case by convention).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The speaker's name, when known. It is searchable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Where a memory came from. Immutable once written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// The write request (one per API call / batch) that created it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<Uuid>,
    /// For chunks: the id of the whole input (see the `sources` store table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_id: Option<Uuid>,
    /// For chunks: position within the source, from 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_index: Option<u32>,
    /// For chunks: how many chunks the source was split into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_count: Option<u32>,
    /// For derived memories (facts, summaries, digests): the memories they
    /// were derived from, e.g. the conversation turns a fact was extracted from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub derived_from: Vec<MemoryId>,
    /// Who wrote this version: `key:<id>` (an API key), `job:<id>` (a
    /// background job, e.g. LLM extraction), `maintenance` or `local` (the
    /// embedding program or CLI). Set by the store from the writer in force
    /// (see [`crate::audit::as_actor`]); `None` on memories written before
    /// schema v9.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written_by: Option<String>,
}

/// Whether a memory takes part in retrieval. Validity in time (superseded,
/// invalidated) is separate: see [`Memory::valid_to`].
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Retrieved normally.
    #[default]
    Active,
    /// Moved out of the way by forgetting or expiry; kept, searchable on
    /// request, restorable.
    Archived,
    /// Deleted by a client (soft): hidden everywhere except history and
    /// listings that ask for it; restorable until erased.
    Deleted,
    /// Written, but it looks like instructions to an agent (see
    /// [`crate::injection`] and [`Memory::flags`]): out of retrieval until a
    /// person approves it.
    Quarantined,
}

impl Status {
    /// All statuses, in declaration order.
    pub const ALL: [Status; 4] = [
        Status::Active,
        Status::Archived,
        Status::Deleted,
        Status::Quarantined,
    ];

    /// The stable lower-case name used in storage and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Archived => "archived",
            Status::Deleted => "deleted",
            Status::Quarantined => "quarantined",
        }
    }

    /// A distinct bit per status, for status sets.
    pub fn bit(self) -> u8 {
        1 << (self as u8)
    }

    /// Parses a name produced by [`Status::as_str`].
    pub fn parse(s: &str) -> Result<Self> {
        Status::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| Error::invalid(format!("unknown status {s:?}")))
    }
}

/// One stored memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    /// Stable, time-ordered id.
    pub id: MemoryId,
    /// Owner.
    #[serde(flatten)]
    pub scope: Scope,
    /// What sort of memory.
    pub kind: MemoryKind,
    /// The text.
    pub content: String,
    /// Who said it.
    #[serde(default)]
    pub actor: Actor,
    /// Free-form JSON object supplied by the client.
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// When the remembered thing happened (client-supplied), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<DateTime<Utc>>,
    /// When the memory was stored.
    pub recorded_at: DateTime<Utc>,
    /// When the memory was last changed (equals `recorded_at` until updated).
    pub updated_at: DateTime<Utc>,
    /// Where it came from.
    #[serde(default)]
    pub provenance: Provenance,
    /// SHA-256 of `content`, lower-case hex.
    pub content_hash: String,
    /// The embedding model whose vector indexes this memory, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_model: Option<String>,
    /// Since when it holds. `None`: since its event time, else its record
    /// time (see [`Memory::valid_since`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<DateTime<Utc>>,
    /// Until when it held: set when it was superseded by a newer version or
    /// invalidated. `None`: still holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_to: Option<DateTime<Utc>>,
    /// On an earlier version: the id of the memory it is a version of (that
    /// id always shows the latest version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_of: Option<MemoryId>,
    /// Whether it takes part in retrieval.
    #[serde(default)]
    pub status: Status,
    /// Exact-duplicate key: a later write with the same key is merged into
    /// this memory instead of stored (see [`dedup_key`]). `None`: never
    /// merged (earlier versions, messages without an event time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup_key: Option<String>,
    /// When it expires: maintenance archives it then, and search skips it
    /// from that instant. `None`: no expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// Feedback from clients that drives its strength (see
    /// [`crate::policy::strength`]).
    #[serde(default, skip_serializing_if = "Usage::is_unused")]
    pub usage: Usage,
    /// Why it was quarantined: the detector's rule families (see
    /// [`crate::injection`]); kept after approval as a record.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
}

/// What clients reported about a memory after it was retrieved (the
/// `feedback` endpoint): counts per signal and the last reinforcement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Times it was reported used (put in an agent's context and acted on).
    #[serde(default)]
    pub used: u32,
    /// Times it was reported helpful.
    #[serde(default)]
    pub helpful: u32,
    /// Times it was reported wrong or misleading.
    #[serde(default)]
    pub wrong: u32,
    /// The last `used` or `helpful` report (or restore); strength decays
    /// from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reinforced_at: Option<DateTime<Utc>>,
}

impl Usage {
    /// No feedback yet.
    pub fn is_unused(&self) -> bool {
        *self == Usage::default()
    }
}

/// A feedback signal about a retrieved memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// It was put to use: reinforces it.
    Used,
    /// It helped: reinforces it twice as much as `used`.
    Helpful,
    /// It was wrong or misleading: halves its strength each time.
    Wrong,
}

impl Signal {
    /// All signals.
    pub const ALL: [Signal; 3] = [Signal::Used, Signal::Helpful, Signal::Wrong];

    /// The stable lower-case name used in APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Used => "used",
            Signal::Helpful => "helpful",
            Signal::Wrong => "wrong",
        }
    }

    /// Parses a name produced by [`Signal::as_str`].
    pub fn parse(s: &str) -> Result<Self> {
        Signal::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "unknown feedback signal {s:?} (used, helpful, wrong)"
                ))
            })
    }
}

impl Memory {
    /// Quarantined, or flagged by the injection detector and never approved
    /// (restoring it returns it to quarantine): its text is for the people
    /// who judge it, not for agents.
    pub fn held_back(&self) -> bool {
        self.status == Status::Quarantined
            || (!self.flags.is_empty() && !self.flags.iter().any(|f| f == crate::engine::APPROVED))
    }

    /// Since when it holds: `valid_from`, else the event time, else the
    /// record time.
    pub fn valid_since(&self) -> DateTime<Utc> {
        self.valid_from
            .or(self.event_time)
            .unwrap_or(self.recorded_at)
    }
}

/// What happened to a memory, in its event log (see [`MemoryEvent`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Its content or fields changed; the previous version was kept
    /// (`detail.previous_version`).
    Revised,
    /// It stopped holding (`valid_to` set) without a successor.
    Invalidated,
    /// Soft-deleted.
    Deleted,
    /// Archived.
    Archived,
    /// Back to active after a delete or archive.
    Restored,
    /// A write that duplicated it was merged into it (`detail` has the
    /// duplicate's provenance).
    Merged,
    /// A client reported it used, helpful or wrong (`detail.signal`).
    Feedback,
    /// Its expiry time changed (`detail.expires_at`, absent when cleared).
    Expiry,
    /// Its note (see [`crate::notes`]) changed in the light of a linked new
    /// memory (`detail.before`, `detail.after`, `detail.linked`).
    Evolved,
    /// A person let it out of quarantine (`detail.flags`: why it was held).
    Approved,
}

impl EventKind {
    /// All kinds, in declaration order.
    pub const ALL: [EventKind; 10] = [
        EventKind::Revised,
        EventKind::Invalidated,
        EventKind::Deleted,
        EventKind::Archived,
        EventKind::Restored,
        EventKind::Merged,
        EventKind::Feedback,
        EventKind::Expiry,
        EventKind::Evolved,
        EventKind::Approved,
    ];

    /// The stable lower-case name used in storage and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Revised => "revised",
            EventKind::Invalidated => "invalidated",
            EventKind::Deleted => "deleted",
            EventKind::Archived => "archived",
            EventKind::Restored => "restored",
            EventKind::Merged => "merged",
            EventKind::Feedback => "feedback",
            EventKind::Expiry => "expiry",
            EventKind::Evolved => "evolved",
            EventKind::Approved => "approved",
        }
    }

    /// Parses a name produced by [`EventKind::as_str`].
    pub fn parse(s: &str) -> Result<Self> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| Error::invalid(format!("unknown event kind {s:?}")))
    }
}

/// One entry in a memory's event log: what changed, when, by whom and why.
/// Written in the same transaction as the change; never modified.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryEvent {
    /// The memory (the id that always shows the latest version).
    pub memory_id: MemoryId,
    /// When.
    pub at: DateTime<Utc>,
    /// What.
    pub kind: EventKind,
    /// Who decided: `api` (a client), `llm` (an extraction decision),
    /// `dedup`, `maintenance`.
    pub origin: String,
    /// Why, in words, when known (e.g. the LLM's stated reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The write request that made the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<Uuid>,
    /// Specifics (e.g. `previous_version`, a merged duplicate's provenance).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub detail: Map<String, Value>,
}

/// The exact-duplicate key of a memory: SHA-256 over its scope, kind,
/// speaker, content, event time, metadata and chunk position, and `extra`:
/// what else tells it apart (the engine passes how many identical memories
/// came before it in the same write, so a conversation that repeats a line
/// keeps both, and for a chunk the hash of its whole source). `None` for a message without an event
/// time: live chat repeats itself ("ok", "thanks") and those repeats are
/// real; a message with an event time (an import, a replayed log) is the
/// same observation when everything else matches too.
pub fn dedup_key(m: &Memory, extra: &str) -> Option<String> {
    if m.kind == MemoryKind::Message && m.event_time.is_none() {
        return None;
    }
    let canonical = serde_json::json!([
        m.scope.user_id,
        m.scope.agent_id,
        m.scope.session_id,
        m.kind.as_str(),
        m.actor.role,
        m.actor.name,
        m.content,
        m.event_time.map(|t| t.timestamp_millis()),
        Value::Object(m.metadata.clone()),
        m.provenance.chunk_index,
        extra,
    ]);
    Some(content_hash(&canonical.to_string()))
}

/// `t` truncated to whole milliseconds, the precision stores keep.
pub fn millis(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

/// SHA-256 of `content` as lower-case hex.
pub fn content_hash(content: &str) -> String {
    let digest = Sha256::digest(content.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Filters applied to search and list, in addition to the scope.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Filter {
    /// Only these kinds (empty: all kinds).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<MemoryKind>,
    /// Metadata keys that must equal these JSON values (scalars only).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
    /// Only memories whose `event_time` is at or after this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time_from: Option<DateTime<Utc>>,
    /// Only memories whose `event_time` is before this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time_to: Option<DateTime<Utc>>,
    /// Only memories that held at this instant ("what did we know then"):
    /// valid since at or before it and not ended by it. Without it (and
    /// without `all_versions`), only memories that hold now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_of: Option<DateTime<Utc>>,
    /// Ignore validity: superseded and invalidated versions too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all_versions: bool,
    /// Only memories with one of these statuses (empty: active only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statuses: Vec<Status>,
    /// The instant "holds now" is judged at when neither `as_of` nor
    /// `all_versions` is set. The engine sets it from its clock; `None`
    /// counts every memory whose validity has not been ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub now: Option<DateTime<Utc>>,
}

impl Filter {
    /// False for a memory that expired by `now` (it counts as archived from
    /// that instant, before maintenance archives it) unless archived
    /// memories are asked for or the query is not about now.
    pub fn accepts_expiry(&self, expires_at: Option<DateTime<Utc>>) -> bool {
        match (self.now, expires_at) {
            (Some(now), Some(e)) if e <= now => self.accepts_status(Status::Archived),
            _ => true,
        }
    }

    /// Rejects metadata filters on non-scalar values and empty time ranges.
    pub fn validate(&self) -> Result<()> {
        for (k, v) in &self.metadata {
            if k.is_empty() || k.len() > 256 {
                return Err(Error::invalid("metadata filter keys must be 1..=256 bytes"));
            }
            if v.is_array() || v.is_object() {
                return Err(Error::invalid(format!(
                    "metadata filter {k:?} must be a string, number, boolean or null"
                )));
            }
        }
        if let (Some(from), Some(to)) = (self.event_time_from, self.event_time_to) {
            if from >= to {
                return Err(Error::invalid(
                    "event_time_from must be before event_time_to",
                ));
            }
        }
        if self.as_of.is_some() && self.all_versions {
            return Err(Error::invalid("as_of and all_versions cannot be combined"));
        }
        Ok(())
    }

    /// True when nothing is filtered beyond the defaults (active memories
    /// that hold now).
    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
            && self.metadata.is_empty()
            && self.event_time_from.is_none()
            && self.event_time_to.is_none()
            && self.as_of.is_none()
            && !self.all_versions
            && self.status_mask() == Status::Active.bit()
    }

    /// The accepted statuses as a bit set (see [`Status::bit`]).
    pub fn status_mask(&self) -> u8 {
        if self.statuses.is_empty() {
            Status::Active.bit()
        } else {
            self.statuses.iter().fold(0, |m, s| m | s.bit())
        }
    }

    /// True when a memory with status `s` passes.
    pub fn accepts_status(&self, s: Status) -> bool {
        self.status_mask() & s.bit() != 0
    }

    /// True when validity bounds `[valid_from, valid_to)` (epoch ms;
    /// `valid_to` `i64::MAX` when open) pass the validity conditions.
    /// `scheduled_from` is the memory's explicit `valid_from` (`i64::MIN`
    /// without one): a version scheduled to hold from a later instant does
    /// not hold now. (`valid_from`, which falls back to the event time,
    /// decides `as_of` reads only: a memory dated in the future by its
    /// event time still holds now.)
    pub fn accepts_validity(&self, valid_from: i64, valid_to: i64, scheduled_from: i64) -> bool {
        if self.all_versions {
            true
        } else if let Some(t) = self.as_of {
            let t = t.timestamp_millis();
            valid_from <= t && t < valid_to
        } else {
            match self.now {
                Some(now) => {
                    let now = now.timestamp_millis();
                    valid_to > now && scheduled_from <= now
                }
                None => valid_to == i64::MAX,
            }
        }
    }

    /// True when a memory with these fields holds at the instant this
    /// filter judges "now" by (or `as_of`): the check the stores make,
    /// for a memory already read.
    pub fn accepts_memory_validity(&self, m: &Memory) -> bool {
        self.accepts_validity(
            m.valid_since().timestamp_millis(),
            m.valid_to.map_or(i64::MAX, |t| t.timestamp_millis()),
            m.valid_from.map_or(i64::MIN, |t| t.timestamp_millis()),
        )
    }

    /// True when the in-memory fields (kind and event time) accept a memory.
    /// Metadata conditions are not checked here.
    pub fn accepts_kind_and_time(&self, kind: MemoryKind, event_time_ms: Option<i64>) -> bool {
        if !self.kinds.is_empty() && !self.kinds.contains(&kind) {
            return false;
        }
        if self.event_time_from.is_some() || self.event_time_to.is_some() {
            let Some(t) = event_time_ms else { return false };
            if self
                .event_time_from
                .is_some_and(|f| t < f.timestamp_millis())
            {
                return false;
            }
            if self
                .event_time_to
                .is_some_and(|e| t >= e.timestamp_millis())
            {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_requires_one_field() {
        assert!(Scope::default().validate().is_err());
        assert!(Scope::user("u").validate().is_ok());
        assert!(Scope::user("").validate().is_err());
        assert!(Scope::user("a\nb").validate().is_err());
    }

    #[test]
    fn scope_matching_is_by_set_fields() {
        let stored = Scope {
            user_id: Some("u".into()),
            agent_id: Some("a".into()),
            session_id: None,
        };
        assert!(Scope::user("u").matches(&stored));
        assert!(!Scope::user("v").matches(&stored));
        let s = Scope {
            session_id: Some("s".into()),
            ..Scope::user("u")
        };
        assert!(!s.matches(&stored));
    }

    #[test]
    fn kind_names_round_trip() {
        for k in MemoryKind::ALL {
            assert_eq!(MemoryKind::parse(k.as_str()).unwrap(), k);
            assert_eq!(
                serde_json::to_value(k).unwrap(),
                Value::String(k.as_str().into())
            );
        }
        assert!(MemoryKind::parse("nope").is_err());
    }

    #[test]
    fn content_hash_is_sha256_hex() {
        assert_eq!(
            content_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}

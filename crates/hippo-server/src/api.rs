//! The REST API's JSON shapes (v1) and their OpenAPI schemas. Kept apart from
//! the library types so the wire format is stable and documented.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use hippo::{
    AddItem, Content, Filter, Memory, MemoryEvent, MemoryKind, Message, Order, Scope, SearchHit,
    Status,
};

/// A conversation message to remember.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageBody {
    /// `user`, `assistant`, `system`, `tool`, ...
    pub role: String,
    /// Speaker name (searchable).
    #[serde(default)]
    pub name: Option<String>,
    /// The text.
    pub content: String,
}

/// One item to remember: either `messages` or `text`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddItemBody {
    /// Owner: at least one of user_id, agent_id, session_id.
    #[serde(default)]
    pub user_id: Option<String>,
    /// Owning agent.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// Session (conversation); `run_id` is accepted as an alias.
    #[serde(default, alias = "run_id")]
    pub session_id: Option<String>,
    /// Conversation turns; each becomes a memory.
    #[serde(default)]
    pub messages: Option<Vec<MessageBody>>,
    /// A document or note.
    #[serde(default)]
    pub text: Option<String>,
    /// JSON object copied onto every memory of the item.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: Option<Map<String, Value>>,
    /// When it happened (RFC 3339).
    #[serde(default)]
    pub event_time: Option<DateTime<Utc>>,
    /// Ask for LLM extraction; without an LLM the item is stored verbatim.
    #[serde(default)]
    pub infer: Option<bool>,
    /// Memory kind override (`message`, `document`, `fact`, ...).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub kind: Option<MemoryKind>,
    /// How sure the writer is, 0..=1 (default 1); an admission factor.
    #[serde(default)]
    pub confidence: Option<f32>,
    /// Store even if admission would refuse it or it nearly duplicates a
    /// stored memory (exact duplicates still merge).
    #[serde(default)]
    pub force: Option<bool>,
    /// When it expires (RFC 3339): from then on search skips it and
    /// maintenance archives it.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Expires this many seconds after now (instead of `expires_at`).
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

impl AddItemBody {
    /// Converts to the library's item; fails on a missing or double payload.
    pub fn into_item(self, now: DateTime<Utc>) -> Result<AddItem, String> {
        let expires_at = match (self.expires_at, self.ttl_seconds) {
            (Some(_), Some(_)) => {
                return Err("give either expires_at or ttl_seconds, not both".into())
            }
            (Some(t), None) => Some(t),
            (None, Some(secs)) => {
                let secs = i64::try_from(secs)
                    .ok()
                    .filter(|s| *s <= 100 * 366 * 86_400)
                    .ok_or("ttl_seconds must be at most 100 years")?;
                Some(now + chrono::Duration::seconds(secs))
            }
            (None, None) => None,
        };
        let content = match (self.messages, self.text) {
            (Some(ms), None) => Content::Messages(
                ms.into_iter()
                    .map(|m| Message {
                        role: m.role,
                        name: m.name,
                        content: m.content,
                    })
                    .collect(),
            ),
            (None, Some(t)) => Content::Text(t),
            (Some(_), Some(_)) => return Err("give either messages or text, not both".into()),
            (None, None) => return Err("messages or text is required".into()),
        };
        Ok(AddItem {
            scope: Scope {
                user_id: self.user_id,
                agent_id: self.agent_id,
                session_id: self.session_id,
            },
            content,
            metadata: self.metadata.unwrap_or_default(),
            event_time: self.event_time,
            kind: self.kind,
            infer: self.infer.unwrap_or(false),
            id: None,
            recorded_at: None,
            confidence: self.confidence,
            force: self.force.unwrap_or(false),
            expires_at,
        })
    }
}

/// A batch of items, stored atomically.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    /// The items (at most 1000).
    pub items: Vec<AddItemBody>,
}

/// Where a memory came from.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProvenanceView {
    /// The write request that created it.
    pub request_id: Option<Uuid>,
    /// For chunks: the whole input's id.
    pub source_id: Option<Uuid>,
    /// For chunks: position in the source.
    pub chunk_index: Option<u32>,
    /// For chunks: number of chunks of the source.
    pub chunk_count: Option<u32>,
    /// For derived memories (facts, summaries): the memories they came from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub derived_from: Vec<Uuid>,
    /// Who wrote this version: `key:<id>` (the API key), `job:<id>` (a
    /// background job such as LLM extraction), `maintenance` or `local`.
    /// Absent on memories written before provenance was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written_by: Option<String>,
}

/// A stored memory.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MemoryView {
    /// Stable id (UUIDv7).
    pub id: Uuid,
    /// The text.
    pub memory: String,
    /// `message`, `document`, `chunk`, `fact`, `summary`, `profile` or `procedure`.
    pub kind: String,
    /// Owner user.
    pub user_id: Option<String>,
    /// Owner agent.
    pub agent_id: Option<String>,
    /// Session.
    pub session_id: Option<String>,
    /// Speaker role.
    pub role: Option<String>,
    /// Speaker name.
    pub name: Option<String>,
    /// Client metadata.
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    /// When it happened.
    pub event_time: Option<DateTime<Utc>>,
    /// When it was stored.
    pub recorded_at: DateTime<Utc>,
    /// When it was last changed.
    pub updated_at: DateTime<Utc>,
    /// Where it came from.
    pub provenance: ProvenanceView,
    /// SHA-256 of the text.
    pub content_hash: String,
    /// Model of its vector.
    pub embedding_model: Option<String>,
    /// Since when it holds (its event time or record time unless set).
    pub valid_from: DateTime<Utc>,
    /// Until when it held; absent while it still holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_to: Option<DateTime<Utc>>,
    /// On an earlier version: the memory it is a version of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_of: Option<Uuid>,
    /// `active`, `archived`, `deleted` or `quarantined` (it looked like
    /// instructions to an agent: out of search until approved).
    pub status: String,
    /// Why it was quarantined (detector families; `approved` once a person
    /// let it in); absent when never flagged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
    /// Where it came from: `user_stated`, `assistant`, `tool`, `document`,
    /// `llm_extraction`, `consolidation` or `unattributed`.
    #[serde(default)]
    pub source: String,
    /// How far that source is trusted (0..=1; config `[trust]`).
    #[serde(default)]
    pub trust: f32,
    /// When it expires; absent: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// Client feedback so far; absent when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageView>,
    /// Its strength now and what it comes from (by-id reads and feedback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strength: Option<StrengthView>,
}

/// Feedback counts of a memory.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UsageView {
    /// Reported used.
    pub used: u32,
    /// Reported helpful.
    pub helpful: u32,
    /// Reported wrong.
    pub wrong: u32,
    /// Last `used`/`helpful` report or restore from the archive.
    pub reinforced_at: Option<DateTime<Utc>>,
}

/// A memory's strength: `retention × 0.5^wrong`, where retention halves
/// every `stability_days` since Hippo learnt it or it was last reinforced.
/// Maintenance archives a memory whose strength falls below `archive_below`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StrengthView {
    /// Between 0 and 1.
    pub value: f32,
    /// The decay part, between 0 and 1 (1 for kinds that do not decay).
    pub retention: f32,
    /// Days since it was learnt or last reinforced.
    pub age_days: f32,
    /// Its kind's half-life times `1 + used + 2 × helpful`; absent for kinds
    /// that do not decay.
    pub stability_days: Option<f32>,
    /// Its kind's archive threshold; absent when it is never archived for
    /// weakness.
    pub archive_below: Option<f32>,
}

impl MemoryView {
    /// The view with its strength, as `hippo` judges it now.
    pub fn with_strength(m: Memory, hippo: &hippo::Hippo) -> Self {
        let s = hippo.strength(&m);
        let archive_below = hippo.policies().of(m.kind).archive_below;
        let trust = hippo.trust_of(&m).1;
        let mut v = MemoryView::from(m);
        v.trust = trust;
        v.strength = Some(StrengthView {
            value: s.value,
            retention: s.retention,
            age_days: s.age_days,
            stability_days: s.stability_days,
            archive_below,
        });
        v
    }
}

impl From<Memory> for MemoryView {
    fn from(m: Memory) -> Self {
        let valid_from = m.valid_since();
        MemoryView {
            valid_from,
            valid_to: m.valid_to,
            version_of: m.version_of,
            status: m.status.as_str().to_owned(),
            source: hippo::trust::SourceKind::of(&m).as_str().to_owned(),
            trust: hippo::trust::Trust::default().of(hippo::trust::SourceKind::of(&m)),
            flags: m.flags,
            expires_at: m.expires_at,
            usage: (!m.usage.is_unused()).then_some(UsageView {
                used: m.usage.used,
                helpful: m.usage.helpful,
                wrong: m.usage.wrong,
                reinforced_at: m.usage.reinforced_at,
            }),
            strength: None,
            id: m.id,
            memory: m.content,
            kind: m.kind.as_str().to_owned(),
            user_id: m.scope.user_id,
            agent_id: m.scope.agent_id,
            session_id: m.scope.session_id,
            role: m.actor.role,
            name: m.actor.name,
            metadata: m.metadata,
            event_time: m.event_time,
            recorded_at: m.recorded_at,
            updated_at: m.updated_at,
            provenance: ProvenanceView {
                request_id: m.provenance.request_id,
                source_id: m.provenance.source_id,
                chunk_index: m.provenance.chunk_index,
                chunk_count: m.provenance.chunk_count,
                derived_from: m.provenance.derived_from,
                written_by: m.provenance.written_by,
            },
            content_hash: m.content_hash,
            embedding_model: m.embedding_model,
        }
    }
}

/// Result of an add.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AddResponse {
    /// The memories created, in input order.
    pub results: Vec<MemoryView>,
    /// Inputs not stored because an identical memory exists (same scope,
    /// kind, speaker, text, event time and metadata) or, for kinds that
    /// merge near duplicates (facts, procedures), a nearly identical one;
    /// in input order.
    #[serde(default)]
    pub duplicates: Vec<DuplicateView>,
    /// Inputs not admitted, with the factors of the decision; each is kept
    /// in the rejection record (`GET /v1/rejections`).
    #[serde(default)]
    pub rejected: Vec<RejectedView>,
}

/// An input merged into a stored memory.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DuplicateView {
    /// The input's text.
    pub memory: String,
    /// The stored memory it duplicates (its history logs the merge).
    pub existing_id: Uuid,
    /// For a near duplicate, the cosine of the two; absent for an exact one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub similarity: Option<f32>,
}

/// The factors of an admission decision, each between 0 and 1:
/// `score = utility × (0.5 + 0.5 × novelty) × confidence`, admitted when
/// `score >= threshold`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AdmissionView {
    /// The product.
    pub score: f32,
    /// The kind's prior times the information content.
    pub utility: f32,
    /// 1 minus the best cosine with a current memory of the same kind.
    pub novelty: f32,
    /// As the writer gave it.
    pub confidence: f32,
    /// The kind's threshold.
    pub threshold: f32,
}

impl From<hippo::Admission> for AdmissionView {
    fn from(a: hippo::Admission) -> Self {
        AdmissionView {
            score: a.score,
            utility: a.utility,
            novelty: a.novelty,
            confidence: a.confidence,
            threshold: a.threshold,
        }
    }
}

/// An input that was not admitted.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RejectedView {
    /// The input's text.
    pub memory: String,
    /// Its kind.
    pub kind: String,
    /// Why.
    pub admission: AdmissionView,
}

/// A recorded rejection.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RejectionView {
    /// Position in the record; pass as `after` for the next page.
    pub seq: i64,
    /// Owner user.
    pub user_id: Option<String>,
    /// Owner agent.
    pub agent_id: Option<String>,
    /// Session.
    pub session_id: Option<String>,
    /// When it was refused.
    pub at: DateTime<Utc>,
    /// The write request.
    pub request_id: Option<Uuid>,
    /// The kind it would have had.
    pub kind: String,
    /// Its text.
    pub memory: String,
    /// Speaker role.
    pub role: Option<String>,
    /// Speaker name.
    pub name: Option<String>,
    /// When it happened.
    pub event_time: Option<DateTime<Utc>>,
    /// Why.
    pub admission: AdmissionView,
}

impl From<hippo::Rejection> for RejectionView {
    fn from(r: hippo::Rejection) -> Self {
        RejectionView {
            seq: r.seq,
            user_id: r.scope.user_id,
            agent_id: r.scope.agent_id,
            session_id: r.scope.session_id,
            at: r.at,
            request_id: r.request_id,
            kind: r.kind.as_str().to_owned(),
            memory: r.content,
            role: r.actor.role,
            name: r.actor.name,
            event_time: r.event_time,
            admission: r.admission.into(),
        }
    }
}

/// A page of rejections.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RejectionsResponse {
    /// Oldest first.
    pub results: Vec<RejectionView>,
}

/// Feedback on a retrieved memory.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedbackBody {
    /// `used` (put to use: reinforces it), `helpful` (reinforces it twice as
    /// much) or `wrong` (halves its strength).
    #[schema(value_type = String)]
    pub signal: hippo::Signal,
    /// A note for its history.
    #[serde(default)]
    pub note: Option<String>,
}

/// Archives a memory.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ArchiveBody {
    /// Why, for its history.
    #[serde(default)]
    pub reason: Option<String>,
}

/// What a maintenance pass did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MaintenanceView {
    /// Memories archived because they expired.
    pub expired: Vec<Uuid>,
    /// Memories archived because their strength fell below their kind's
    /// threshold.
    pub faded: Vec<Uuid>,
    /// Memories whose strength was checked.
    pub checked: usize,
    /// Finished background jobs older than a week that were deleted.
    pub pruned_jobs: u64,
    /// Whether the store was compacted (something was erased since the
    /// last compaction: afterwards no file holds erased data).
    pub compacted: bool,
}

impl From<hippo::MaintenanceReport> for MaintenanceView {
    fn from(r: hippo::MaintenanceReport) -> Self {
        MaintenanceView {
            expired: r.expired,
            faded: r.faded,
            checked: r.checked,
            pruned_jobs: r.pruned_jobs,
            compacted: r.compacted,
        }
    }
}

/// What to roll back.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackBody {
    /// The API key id (the part after `hk_`) whose writes are erased.
    pub key_id: String,
}

/// What a rollback erased.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RollbackView {
    /// Memories erased (each with what was derived from it).
    pub erased: u64,
}

/// Filters for search.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FiltersBody {
    /// Only these kinds.
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>)]
    pub kind: Option<Vec<MemoryKind>>,
    /// Metadata keys that must equal these scalar values.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// Only memories with event_time at or after this.
    #[serde(default)]
    pub event_time_from: Option<DateTime<Utc>>,
    /// Only memories with event_time before this.
    #[serde(default)]
    pub event_time_to: Option<DateTime<Utc>>,
    /// Only memories with these statuses (`active`, the default;
    /// `archived`; `deleted`).
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>)]
    pub status: Option<Vec<Status>>,
}

impl From<FiltersBody> for Filter {
    fn from(f: FiltersBody) -> Self {
        Filter {
            kinds: f.kind.unwrap_or_default(),
            metadata: f.metadata.unwrap_or_default(),
            event_time_from: f.event_time_from,
            event_time_to: f.event_time_to,
            statuses: f.status.unwrap_or_default(),
            ..Default::default()
        }
    }
}

/// Scope and paging parameters of list and erase.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Scope user.
    pub user_id: Option<String>,
    /// Scope agent.
    pub agent_id: Option<String>,
    /// Scope session (`run_id` accepted).
    #[serde(alias = "run_id")]
    pub session_id: Option<String>,
    /// Cursor from the previous page.
    pub cursor: Option<String>,
    /// Page size (1..=1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// `asc` (oldest first, default) or `desc`.
    #[param(pattern = "^(asc|desc)$")]
    pub order: Option<String>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only these statuses, comma-separated: `active` (default),
    /// `archived`, `deleted`.
    pub status: Option<String>,
    /// Only what held at this instant (RFC 3339). Default: what holds now.
    pub as_of: Option<DateTime<Utc>>,
    /// Every version, current or not.
    pub all_versions: Option<bool>,
    /// Only memories whose event time is at or after this instant (RFC 3339).
    pub event_time_from: Option<DateTime<Utc>>,
    /// Only memories whose event time is before this instant (RFC 3339).
    pub event_time_to: Option<DateTime<Utc>>,
    /// Only memories whose metadata has these scalar values: a JSON object,
    /// e.g. `{"topic":"travel"}`.
    pub metadata: Option<String>,
}

/// Parses a `metadata` query parameter: a JSON object of scalar values.
pub fn metadata_param(raw: Option<&str>) -> Result<Map<String, Value>, hippo::Error> {
    match raw {
        None => Ok(Map::new()),
        Some(raw) => match serde_json::from_str::<Value>(raw) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(hippo::Error::invalid(format!(
                "metadata must be a JSON object such as {{\"topic\":\"travel\"}}, not {raw:?}"
            ))),
        },
    }
}

/// Parses the `kind` (one) and `status` (comma-separated) query parameters.
fn kinds_and_statuses(
    kind: Option<&str>,
    status: Option<&str>,
) -> Result<(Vec<MemoryKind>, Vec<Status>), hippo::Error> {
    let kinds = kind
        .map(MemoryKind::parse)
        .transpose()?
        .into_iter()
        .collect();
    let statuses = status
        .map(|s| s.split(',').map(|x| Status::parse(x.trim())).collect())
        .transpose()?
        .unwrap_or_default();
    Ok((kinds, statuses))
}

/// Parameters of `GET /v1/scopes`: which scopes to count, and which of
/// their memories.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ScopesParams {
    /// Only scopes of this user.
    pub user_id: Option<String>,
    /// Only scopes of this agent.
    pub agent_id: Option<String>,
    /// Only this session (`run_id` accepted).
    #[serde(alias = "run_id")]
    pub session_id: Option<String>,
    /// Count only memories of this kind.
    pub kind: Option<String>,
    /// Count only memories with these statuses, comma-separated (default
    /// `active`).
    pub status: Option<String>,
    /// Most scopes to return (1..=10000, default 1000).
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<usize>,
}

impl ScopesParams {
    /// The filter and limit these parameters ask for.
    pub fn counting(&self) -> Result<(Filter, usize), hippo::Error> {
        let (kinds, statuses) = kinds_and_statuses(self.kind.as_deref(), self.status.as_deref())?;
        let filter = Filter {
            kinds,
            statuses,
            ..Default::default()
        };
        filter.validate()?;
        Ok((filter, self.limit.unwrap_or(1000)))
    }
}

/// One scope and how many memories it holds.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScopeView {
    /// The scope's user, if any.
    pub user_id: Option<String>,
    /// The scope's agent, if any.
    pub agent_id: Option<String>,
    /// The scope's session, if any.
    pub session_id: Option<String>,
    /// How many of its memories match.
    pub memories: u64,
    /// When the first of them was recorded.
    pub first_recorded: DateTime<Utc>,
    /// When the last of them was recorded.
    pub last_recorded: DateTime<Utc>,
}

impl From<hippo::store::ScopeSummary> for ScopeView {
    fn from(s: hippo::store::ScopeSummary) -> Self {
        ScopeView {
            user_id: s.scope.user_id,
            agent_id: s.scope.agent_id,
            session_id: s.scope.session_id,
            memories: s.memories,
            first_recorded: s.first_recorded,
            last_recorded: s.last_recorded,
        }
    }
}

/// The scopes of a tenant that hold memories.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScopesResponse {
    /// The scopes, the most recently written first.
    pub scopes: Vec<ScopeView>,
    /// True when there are more than `limit`.
    pub truncated: bool,
}

impl ListParams {
    /// The filter, order and page size these parameters ask for (the
    /// `kind`/`status` syntax: one kind; statuses comma-separated).
    pub fn listing(&self) -> Result<(Filter, Order, usize), hippo::Error> {
        let order = match self.order.as_deref() {
            None | Some("asc") => Order::Ascending,
            Some("desc") => Order::Descending,
            Some(o) => {
                return Err(hippo::Error::invalid(format!(
                    "order must be asc or desc, not {o:?}"
                )))
            }
        };
        let limit = self.limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(hippo::Error::invalid("limit must be 1..=1000"));
        }
        let (kinds, statuses) = kinds_and_statuses(self.kind.as_deref(), self.status.as_deref())?;
        let filter = Filter {
            kinds,
            statuses,
            metadata: metadata_param(self.metadata.as_deref())?,
            event_time_from: self.event_time_from,
            event_time_to: self.event_time_to,
            as_of: self.as_of,
            all_versions: self.all_versions.unwrap_or(false),
            ..Default::default()
        };
        filter.validate()?;
        Ok((filter, order, limit))
    }
}

/// A search.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchBody {
    /// Scope: at least one of user_id, agent_id, session_id.
    #[serde(default)]
    pub user_id: Option<String>,
    /// Scope agent.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// Scope session; `run_id` is accepted as an alias.
    #[serde(default, alias = "run_id")]
    pub session_id: Option<String>,
    /// Natural-language query.
    pub query: String,
    /// Results wanted (1..=100, default 10).
    #[serde(default)]
    pub top_k: Option<usize>,
    /// Extra conditions.
    #[serde(default)]
    pub filters: Option<FiltersBody>,
    /// Messages of the same conversation to return on each side of a hit
    /// (0..=5). With context, a result's `memory` is a conversation excerpt
    /// and `sources` lists its messages. Default: the server's (normally 1
    /// before and 2 after).
    #[serde(default)]
    pub context_turns: Option<usize>,
    /// Messages before each hit (0..=5); overrides `context_turns`.
    #[serde(default)]
    pub context_before: Option<usize>,
    /// Messages after each hit (0..=5); overrides `context_turns`.
    #[serde(default)]
    pub context_after: Option<usize>,
    /// Variety among results, 0..=1 (default 0: relevance alone): maximal
    /// marginal relevance over the candidates' vectors; 0.3 is a usual setting.
    #[serde(default)]
    pub diversity: Option<f32>,
    /// Most tokens (about 4 characters each) all results may cost together,
    /// hits included (1..=100000; the best result is returned regardless).
    /// Default: every hit is returned, and context is added while the
    /// results stay within 140 tokens per requested result.
    #[serde(default)]
    pub budget_tokens: Option<usize>,
    /// What held at this instant (RFC 3339): memories valid then, including
    /// versions superseded since and facts invalidated since. Default: what
    /// holds now.
    #[serde(default)]
    pub as_of: Option<DateTime<Utc>>,
    /// Ignore validity: every version, current or not.
    #[serde(default)]
    pub all_versions: Option<bool>,
    /// When the question is asked (RFC 3339): time expressions in the query
    /// ("last week", "two months ago", "yesterday") resolve against its day
    /// (UTC). Default: now.
    #[serde(default)]
    pub reference_time: Option<DateTime<Utc>>,
    /// `json` (default) or `prompt`: also render the results as one block
    /// for an LLM prompt (`prompt` in the response), quoted as data.
    pub format: Option<String>,
    /// Include memories other users and agents share with this user or
    /// agent through grants in force (default true); such results carry
    /// `shared_via`.
    #[serde(default)]
    pub include_shared: Option<bool>,
    /// Leave out results whose `relevance` is below this (0..=1, default
    /// 0: keep all). 0.03 drops nearly every result of a question nothing
    /// stored is about and keeps most that hold the answer.
    #[serde(default)]
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub min_relevance: Option<f32>,
}

impl SearchBody {
    /// The context asked for, on top of the server's `default`.
    pub fn context(&self, default: hippo::Context) -> hippo::Context {
        let base = self.context_turns.map_or(default, hippo::Context::around);
        hippo::Context {
            before: self.context_before.unwrap_or(base.before),
            after: self.context_after.unwrap_or(base.after),
        }
    }
}

/// One stored message inside a result's conversation excerpt.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SourceView {
    /// Memory id.
    pub id: Uuid,
    /// Its text.
    pub memory: String,
    /// Speaker role.
    pub role: Option<String>,
    /// Speaker name.
    pub name: Option<String>,
    /// Its metadata.
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    /// When it happened.
    pub event_time: Option<DateTime<Utc>>,
    /// True for the messages that matched the query (an excerpt may hold
    /// several); the others are context.
    pub hit: bool,
}

/// Per-channel evidence of a result.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScoresView {
    /// Raw BM25 score, when the keyword channel matched.
    pub keyword: Option<f32>,
    /// Cosine similarity to the query.
    pub vector: Option<f32>,
    /// Normalised keyword score between 0 and 1.
    pub keyword_norm: f32,
    /// Normalised vector score between 0 and 1.
    pub vector_norm: f32,
    /// Recency prior between 0 and 1.
    pub recency: f32,
    /// Best fused score among the message's conversation neighbours.
    pub neighbour: f32,
    /// The memory's strength (1 unless it faded or was reported wrong).
    pub strength: f32,
    /// Its reinforcement by `used`/`helpful` feedback, 0..=1.
    pub reinforcement: f32,
    /// Its kind's retrieval weight.
    pub kind_weight: f32,
    /// Its rank among the keyword channel's candidates (1: best), when it
    /// matched a query word.
    pub keyword_rank: Option<u32>,
    /// Its rank by cosine among all candidates with a vector (1: closest).
    pub vector_rank: Option<u32>,
    /// What its conversation neighbours added to its score.
    pub neighbour_lift: f32,
}

/// A search result: the memory that matched (its id, metadata, ...), its
/// scores, and in `memory` the text to give a model: the memory itself, or
/// with context its conversation excerpt (whose messages are in `sources`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SearchResultView {
    /// The memory.
    #[serde(flatten)]
    pub memory: MemoryView,
    /// Ranking score (higher is better): orders this query's results,
    /// means nothing across queries, and may be negative.
    pub score: f32,
    /// How likely this result holds what the query asks for, 0..=1, from
    /// its own evidence only (its cosine to the query), so it is comparable
    /// across queries: a calibrated probability (fitted on conversation
    /// data; see `hippo::relevance`).
    pub relevance: f32,
    /// Per-channel scores.
    pub scores: ScoresView,
    /// The messages of the excerpt, oldest first (present with context).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<SourceView>>,
    /// When the memory is another user's or agent's, shared with the
    /// searcher: the grant that shares it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_via: Option<Uuid>,
    /// Tokens it takes of the budget (its messages and header).
    pub tokens: usize,
}

impl From<SearchHit> for SearchResultView {
    fn from(h: SearchHit) -> Self {
        let text = h.text();
        let matched = h.matched;
        let sources = (h.window.len() > 1).then(|| {
            h.window
                .into_iter()
                .map(|m| SourceView {
                    id: m.id,
                    hit: matched.contains(&m.id),
                    memory: m.content,
                    role: m.actor.role,
                    name: m.actor.name,
                    metadata: m.metadata,
                    event_time: m.event_time,
                })
                .collect()
        });
        let mut memory: MemoryView = h.memory.into();
        memory.memory = text;
        SearchResultView {
            sources,
            shared_via: h.shared_via,
            memory,
            score: h.score,
            relevance: h.relevance,
            scores: ScoresView {
                keyword: h.scores.keyword,
                vector: h.scores.vector,
                keyword_norm: h.scores.keyword_norm,
                vector_norm: h.scores.vector_norm,
                recency: h.scores.recency,
                neighbour: h.scores.neighbour,
                strength: h.scores.strength,
                reinforcement: h.scores.reinforcement,
                kind_weight: h.scores.kind_weight,
                keyword_rank: h.scores.keyword_rank,
                vector_rank: h.scores.vector_rank,
                neighbour_lift: h.scores.neighbour_lift,
            },
            tokens: h.tokens,
        }
    }
}

/// Where a search's time went, in milliseconds: the keyword channel runs
/// while the query is embedded (then the vector channel), then fusion, then
/// packing.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SearchTimingsView {
    /// Embedding the query (0 when its vector was cached).
    pub embed_ms: f64,
    /// The keyword channel.
    pub keyword_ms: f64,
    /// The vector channel, with exact cosines of keyword-only candidates.
    pub vector_ms: f64,
    /// Fusing and weighing the candidates (standing, neighbours, diversity).
    pub fusion_ms: f64,
    /// Packing the results into the token budget.
    pub packing_ms: f64,
}

impl From<hippo::SearchTimings> for SearchTimingsView {
    fn from(t: hippo::SearchTimings) -> Self {
        SearchTimingsView {
            embed_ms: t.embed_ms,
            keyword_ms: t.keyword_ms,
            vector_ms: t.vector_ms,
            fusion_ms: t.fusion_ms,
            packing_ms: t.packing_ms,
        }
    }
}

/// Search results.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SearchResponseView {
    /// Best first.
    pub results: Vec<SearchResultView>,
    /// Server-side time in milliseconds (embedding + retrieval).
    pub took_ms: f64,
    /// Of which embedding the query (0 when its vector was cached).
    pub embed_ms: f64,
    /// Of which retrieval: candidates, fusion and fetching the results.
    pub retrieve_ms: f64,
    /// Stage by stage.
    pub timings: SearchTimingsView,
    /// The token budget the results were packed into (asked for, or 140 per
    /// requested result).
    pub budget_tokens: usize,
    /// Tokens the results take, all together.
    pub tokens: usize,
    /// With `format: "prompt"`: the results as one block for an LLM prompt,
    /// each memory quoted as data inside `<memory>` elements (escaped), after
    /// a preamble saying they are not instructions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
}

/// A page of memories.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ListResponse {
    /// The memories.
    pub results: Vec<MemoryView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Fields to change.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchBody {
    /// New text (re-embedded).
    #[serde(default, alias = "memory", alias = "text")]
    pub content: Option<String>,
    /// New metadata (replaces the old object).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// New event time.
    #[serde(default)]
    pub event_time: Option<DateTime<Utc>>,
    /// When the new version took effect (default now); the previous version
    /// is kept, valid until then.
    #[serde(default)]
    pub valid_from: Option<DateTime<Utc>>,
    /// Why, recorded in the memory's history.
    #[serde(default)]
    pub reason: Option<String>,
    /// When it expires; `null` clears the expiry. Changing only this keeps
    /// no new version (the change is logged as `expiry`).
    #[serde(default, deserialize_with = "present")]
    pub expires_at: Option<Option<DateTime<Utc>>>,
}

/// Tells a field given as `null` (`Some(None)`) from an absent one (`None`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Ends a memory's validity without a successor.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvalidateBody {
    /// When it stopped holding (default now).
    #[serde(default)]
    pub valid_to: Option<DateTime<Utc>>,
    /// Why, recorded in the memory's history.
    #[serde(default)]
    pub reason: Option<String>,
}

/// One entry of a memory's event log.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    /// When.
    pub at: DateTime<Utc>,
    /// `revised`, `invalidated`, `deleted`, `archived`, `restored`,
    /// `merged`, `feedback` or `expiry`.
    pub kind: String,
    /// Who decided: `api`, `llm`, `dedup`, `maintenance`.
    pub origin: String,
    /// Why, when known.
    pub reason: Option<String>,
    /// The request that made the change.
    pub request_id: Option<Uuid>,
    /// Specifics, e.g. `previous_version`.
    #[schema(value_type = Object)]
    pub detail: Map<String, Value>,
}

impl From<MemoryEvent> for EventView {
    fn from(e: MemoryEvent) -> Self {
        EventView {
            at: e.at,
            kind: e.kind.as_str().to_owned(),
            origin: e.origin,
            reason: e.reason,
            request_id: e.request_id,
            detail: e.detail,
        }
    }
}

/// A memory's versions and event log.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HistoryView {
    /// The memory (its id always shows the latest version).
    pub memory_id: Uuid,
    /// Earlier versions oldest first (each with its own id, `version_of`,
    /// validity and provenance), then the current one.
    pub versions: Vec<MemoryView>,
    /// Every change, in order.
    pub events: Vec<EventView>,
}

impl From<hippo::engine::History> for HistoryView {
    fn from(h: hippo::engine::History) -> Self {
        HistoryView {
            memory_id: h.memory_id,
            versions: h.versions.into_iter().map(Into::into).collect(),
            events: h.events.into_iter().map(Into::into).collect(),
        }
    }
}

/// Who may read what is shared: exactly one of the two.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GranteeBody {
    /// A user of the same tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// An agent of the same tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
}

/// The scope shared by a scope grant: the memories whose scope has these
/// values (at least one given).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScopeBody {
    /// User.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// Session (`run_id` accepted).
    #[serde(default, alias = "run_id", skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

/// Share one memory (all its versions) or a scope, read only.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    /// The memory to share...
    #[serde(default)]
    pub memory_id: Option<Uuid>,
    /// ...or the scope to share: everything in it, now and later (exactly
    /// one of the two).
    #[serde(default)]
    pub scope: Option<ScopeBody>,
    /// Who may read it.
    pub grantee: GranteeBody,
    /// When the grant stops working (RFC 3339, in the future); none: until
    /// revoked.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

/// A read grant.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GrantView {
    /// Grant id.
    pub id: Uuid,
    /// The memory shared (memory grants).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_id: Option<Uuid>,
    /// The scope shared (scope grants), or the shared memory's owner scope.
    pub scope: ScopeBody,
    /// Who may read.
    pub grantee: GranteeBody,
    /// When given.
    pub created_at: DateTime<Utc>,
    /// Who gave it (`key:<id>`, `local`).
    pub created_by: String,
    /// When it stops working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// When revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<hippo::sharing::Grant> for GrantView {
    fn from(g: hippo::sharing::Grant) -> Self {
        GrantView {
            id: g.id,
            memory_id: g.memory_id,
            scope: ScopeBody {
                user_id: g.scope.user_id,
                agent_id: g.scope.agent_id,
                session_id: g.scope.session_id,
            },
            grantee: GranteeBody {
                user_id: g.grantee.user_id,
                agent_id: g.grantee.agent_id,
            },
            created_at: g.created_at,
            created_by: g.created_by,
            expires_at: g.expires_at,
            revoked_at: g.revoked_at,
        }
    }
}

/// Grants.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GrantsResponse {
    /// Oldest first.
    pub results: Vec<GrantView>,
}

/// Result of a scope erase.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeletedResponse {
    /// Memories deleted.
    pub deleted: u64,
}

/// An error.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Error code and message.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable code: `invalid_input`, `not_found`, `conflict`, `payload_too_large`, `unavailable`, `internal`.
    pub code: String,
    /// Human-readable message.
    pub message: String,
}

/// What the request's key may do (`GET /v1/whoami`), so that a client such
/// as the inspector offers only the actions it allows.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WhoAmI {
    /// `read`, `write` or `admin` (`admin` when the server runs without keys).
    pub access: String,
    /// The key's id (`local` when the server runs without keys).
    pub key: String,
    /// The tenant the key opens.
    pub tenant: String,
    /// The user the key is bound to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The agent the key is bound to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
}

/// Health.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
    /// Embedding model in use.
    pub model: String,
    /// Server version.
    pub version: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: serde_json::Value) -> SearchBody {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn context_turns_sets_both_sides_and_before_after_override_it() {
        let server = hippo::Context {
            before: 1,
            after: 2,
        };
        let ctx = |v| body(v).context(server);
        assert_eq!(ctx(serde_json::json!({"query": "q"})), server);
        assert_eq!(
            ctx(serde_json::json!({"query": "q", "context_turns": 0})),
            hippo::Context::NONE
        );
        assert_eq!(
            ctx(serde_json::json!({"query": "q", "context_turns": 3, "context_after": 1})),
            hippo::Context {
                before: 3,
                after: 1
            }
        );
        assert_eq!(
            ctx(serde_json::json!({"query": "q", "context_before": 0})),
            hippo::Context {
                before: 0,
                after: 2
            }
        );
    }
}

/// Background jobs per state.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobCountsView {
    /// Waiting.
    pub pending: u64,
    /// Running.
    pub running: u64,
    /// Finished.
    pub done: u64,
    /// Given up (see `GET /v1/jobs/{id}` for the error).
    pub failed: u64,
    /// The chat model jobs use; absent when none is configured.
    pub llm: Option<String>,
    /// The latest jobs (of `state` and the scope asked for), newest first.
    pub jobs: Vec<JobView>,
    /// Pass as `before` for the next page; absent on the last.
    pub next_before: Option<i64>,
}

/// Which jobs `GET /v1/jobs` lists beside the counts.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct JobsParams {
    /// Only jobs of this user.
    pub user_id: Option<String>,
    /// Only jobs of this agent.
    pub agent_id: Option<String>,
    /// Only jobs of this session (`run_id` accepted).
    #[serde(alias = "run_id")]
    pub session_id: Option<String>,
    /// Only jobs in this state: `pending`, `running`, `done`, `failed`.
    pub state: Option<String>,
    /// Jobs with a smaller id (the next page).
    pub before: Option<i64>,
    /// Most jobs listed (0..=200, default 20; 0 lists none).
    #[param(minimum = 0, maximum = 200)]
    pub limit: Option<usize>,
}

/// One background job.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    /// Id.
    pub id: i64,
    /// `extract`, `consolidate`, …
    pub kind: String,
    /// The scope it works on: user.
    pub user_id: Option<String>,
    /// Agent.
    pub agent_id: Option<String>,
    /// Session.
    pub session_id: Option<String>,
    /// `pending`, `running`, `done` or `failed`.
    pub state: String,
    /// Runs started.
    pub attempts: u32,
    /// Decisions applied so far.
    pub step: u32,
    /// The decided operations (`add`, `update`, `delete`, `noop`, each with
    /// its text, target and reason), once decided.
    #[schema(value_type = Option<Object>)]
    pub plan: Option<Value>,
    /// The last failure.
    pub last_error: Option<String>,
    /// LLM calls and tokens spent.
    #[schema(value_type = Object)]
    pub cost: Map<String, Value>,
    /// When enqueued.
    pub created_at: DateTime<Utc>,
    /// When last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<hippo::jobs::Job> for JobView {
    fn from(j: hippo::jobs::Job) -> Self {
        JobView {
            id: j.id,
            kind: j.kind,
            user_id: j.scope.user_id,
            agent_id: j.scope.agent_id,
            session_id: j.scope.session_id,
            state: j.state.as_str().to_owned(),
            attempts: j.attempts,
            step: j.step,
            plan: j.plan,
            last_error: j.last_error,
            cost: j.cost,
            created_at: j.created_at,
            updated_at: j.updated_at,
        }
    }
}

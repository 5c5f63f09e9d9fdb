//! [`Hippo`], the engine: validates writes, splits long inputs into chunks,
//! embeds, stores atomically; searches by fusing the store's channels. REST,
//! CLI and bindings are thin adapters over this type.
//!
//! Invariants: a rejected request changes nothing (validation happens before
//! any write, and a batch is one transaction); the embedder's model is the
//! store's active model (checked at `build()`); the results of a scoped read
//! are always re-checked against the scope.
//!
//! Write path. Exact duplicates (`model::dedup_key`) are looked up before
//! embedding, so they are never embedded; the store re-checks the key inside
//! the write transaction and logs a `merged` event. Then admission
//! (`Hippo::admit`, after embedding): near duplicates of kinds with
//! `merge_above` (cosine with the owner's current memories of the kind and
//! with earlier items of the same write, plus `text::same_particulars`: equal
//! numbers, polarity and proper nouns, because embeddings barely tell "31"
//! from "32") are merged with a `merged` event; the rest get an admission score
//! (`policy`) and, below their kind's threshold, go to the `rejections` table,
//! in the add's transaction, instead of `memories`. `force` skips both.
//! Extracted facts (`add_derived`) merge near duplicates too. A write the
//! injection detector flags is stored `Quarantined` (see `crate::injection`)
//! until `Hippo::approve`.
//!
//! Read path. Search first calls `Store::catch_up`, once, so that both
//! channels see the same indexes when another process (the CLI beside a
//! server) committed to the file; then the keyword and vector channels run
//! side by side (`rayon::join`), `crate::retrieve` fuses their candidates,
//! and `Hippo::results` packs them (see `crate::pack`); rows are read from
//! SQLite only for what may be shown. `Hippo::diversify` (maximal marginal
//! relevance over the head of the ranking, with the candidates' vectors) is
//! off by default (`diversity` 0) because it cost recall on long histories.
//!
//! Erasure (`Hippo::erase`, `Hippo::delete_scope`) takes the derived closure
//! with a memory (`Store::derived_from_any` over `provenance.derived_from`,
//! repeated until nothing new), a chunk with its whole input (the other chunks
//! and the `sources` row), finished jobs whose payload names it, and the
//! grants of it (for a user or agent, also to it); digests that go are queued
//! for rebuilding (`Touched::rebuild`) and done consolidation jobs drop their
//! payload (it names entities). How the file itself keeps nothing is the
//! store's part (`SqliteStore`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::chunk::{chunk_text, ChunkPolicy};
use crate::clock::{Clock, SystemClock};
use crate::embed::Embedder;
use crate::error::{Error, ErrorKind, Result};
use crate::model::{
    content_hash, dedup_key, millis, Actor, EventKind, Filter, Memory, MemoryEvent, MemoryId,
    MemoryKind, Provenance, Scope, Status,
};
use crate::pack::Packer;
use crate::policy::Policies;
use crate::retrieve::{apply_standing, fuse, support, ChannelScores, FusionWeights, Standing};
use crate::sharing::{Reader, Visible};
use crate::store::{
    InsertBatch, KeywordQuery, ListQuery, NewMemory, Order, Page, Source, Store, StoreStats,
    Update, VectorQuery,
};
use crate::text::query_terms;

/// Limits enforced on every request.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Most items in one add.
    pub max_batch_items: usize,
    /// Most bytes of content in one item.
    pub max_content_bytes: usize,
    /// Most bytes of serialised metadata in one item.
    pub max_metadata_bytes: usize,
    /// Largest `top_k`.
    pub max_top_k: usize,
    /// Longest query, in bytes.
    pub max_query_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_batch_items: 1000,
            max_content_bytes: 1 << 20,
            max_metadata_bytes: 16 << 10,
            max_top_k: 100,
            max_query_bytes: 4096,
        }
    }
}

/// One conversation message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// `user`, `assistant`, `system`, `tool`, ...
    pub role: String,
    /// Speaker name, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The text.
    pub content: String,
}

/// What an add item carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// Conversation turns; each becomes one memory (or several chunks if long).
    Messages(Vec<Message>),
    /// A document or note; one memory (or chunks if long).
    Text(String),
}

/// One item to remember.
#[derive(Debug, Clone, PartialEq)]
pub struct AddItem {
    /// Owner; at least one field set.
    pub scope: Scope,
    /// What to store.
    pub content: Content,
    /// Client metadata (a JSON object), copied to every memory of the item.
    pub metadata: Map<String, Value>,
    /// When it happened.
    pub event_time: Option<DateTime<Utc>>,
    /// Kind override (defaults: `message` for messages, `document` for text).
    pub kind: Option<MemoryKind>,
    /// Ask for LLM extraction. Without an LLM configured the item is stored verbatim.
    pub infer: bool,
    /// Keep this id (import); only valid when the item yields one memory.
    pub id: Option<MemoryId>,
    /// Keep this record time (import).
    pub recorded_at: Option<DateTime<Utc>>,
    /// How sure the writer is, 0..=1 (default 1): an admission factor.
    pub confidence: Option<f32>,
    /// Store it even if admission would refuse it or it nearly duplicates a
    /// stored memory (exact duplicates still merge).
    pub force: bool,
    /// When it expires (see [`Memory::expires_at`]).
    pub expires_at: Option<DateTime<Utc>>,
}

impl AddItem {
    /// A verbatim text item for `scope`.
    pub fn text(scope: Scope, text: impl Into<String>) -> Self {
        AddItem {
            scope,
            content: Content::Text(text.into()),
            metadata: Map::new(),
            event_time: None,
            kind: None,
            infer: false,
            id: None,
            recorded_at: None,
            confidence: None,
            force: false,
            expires_at: None,
        }
    }

    /// A single-message item for `scope`.
    pub fn message(
        scope: Scope,
        role: &str,
        name: Option<&str>,
        content: impl Into<String>,
    ) -> Self {
        let m = Message {
            role: role.into(),
            name: name.map(Into::into),
            content: content.into(),
        };
        AddItem {
            content: Content::Messages(vec![m]),
            ..AddItem::text(scope, "")
        }
    }
}

/// A search.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchRequest {
    /// Where to search; at least one field set.
    pub scope: Scope,
    /// Natural-language query.
    pub query: String,
    /// How many results.
    pub top_k: usize,
    /// Extra conditions (they select the hits, not their context).
    pub filter: Filter,
    /// Messages of the same conversation returned around each hit.
    pub context: Context,
    /// Trade relevance for variety among the results (maximal marginal
    /// relevance over the candidates' vectors): 0 ranks by relevance alone.
    pub diversity: f32,
    /// Most tokens (about four characters each) all results may cost
    /// together, hits and context; the best hit is returned regardless.
    /// `None`: [`DEFAULT_TOKENS_PER_RESULT`] per requested result.
    pub budget_tokens: Option<usize>,
    /// Include what other users and agents share with the scope's user or
    /// agent through grants in force (see [`crate::sharing`]).
    pub shared: bool,
    /// Leave out hits whose [`SearchHit::relevance`] is below this (0..=1;
    /// 0 keeps everything; see [`crate::relevance::RECOMMENDED_MIN_RELEVANCE`]).
    pub min_relevance: f32,
    /// When the question is asked: time expressions in the query ("last
    /// week", "two months ago", "yesterday") resolve against this instant's
    /// day (UTC). `None`: now, by the engine's clock.
    pub reference_time: Option<DateTime<Utc>>,
}

/// How many messages of the same conversation come with each hit (the
/// conversation is the hit's exact scope, in write order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    /// Messages before the hit.
    pub before: usize,
    /// Messages after the hit.
    pub after: usize,
}

impl Context {
    /// The hit alone; nearby hits are not merged either.
    pub const NONE: Context = Context {
        before: 0,
        after: 0,
    };

    /// `n` messages on each side.
    pub fn around(n: usize) -> Self {
        Context {
            before: n,
            after: n,
        }
    }

    /// True for [`Context::NONE`].
    pub fn is_none(&self) -> bool {
        self.before == 0 && self.after == 0
    }
}

/// The default context: the message before a hit (often the question it
/// answers) and the two after it (the reply, and the reply to that). Context
/// is added only while the budget lasts, replies first (see
/// [`crate::pack::Packer::add_context`]). On LoCoMo dev at the default
/// budget, frac@10 was 0.860 with 1 before and 1 or 2 after (the second
/// message after a hit seldom fits 140 tokens per result; it does with larger
/// budgets), 0.863 with 0 before and 2 after, 0.767 without context. One
/// before is kept so that a hit that answers a question comes with it.
impl Default for Context {
    fn default() -> Self {
        Context {
            before: 1,
            after: 2,
        }
    }
}

/// Budget per requested result when no budget is given: about 560
/// characters, a hit with a few short messages around it.
pub const DEFAULT_TOKENS_PER_RESULT: usize = 140;

/// The largest [`SearchRequest::budget_tokens`].
pub const MAX_BUDGET_TOKENS: usize = 100_000;

/// The default of [`SearchRequest::diversity`]: off. At 0.3 (the usual MMR
/// setting) recall rose on short histories but fell on long ones, where the
/// "different" candidates MMR promotes are mostly other conversations.
pub const DEFAULT_DIVERSITY: f32 = 0.0;

/// The most messages of context on either side of a hit.
pub const MAX_CONTEXT_TURNS: usize = 5;

impl SearchRequest {
    /// A search for `query` in `scope` returning 10 results with the
    /// default context and budget.
    pub fn new(scope: Scope, query: impl Into<String>) -> Self {
        SearchRequest {
            scope,
            query: query.into(),
            top_k: 10,
            filter: Filter::default(),
            context: Context::default(),
            diversity: DEFAULT_DIVERSITY,
            budget_tokens: None,
            shared: true,
            min_relevance: 0.0,
            reference_time: None,
        }
    }
}

/// One search result: a hit, or a conversation excerpt around one or more
/// hits (see [`crate::pack`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchHit {
    /// The best hit.
    pub memory: Memory,
    /// Its fused score (higher is better): it ranks this query's results
    /// against each other and means nothing across queries.
    pub score: f32,
    /// How likely it is to hold what the query asks for, 0..=1, from its
    /// own evidence only, comparable across queries (see [`crate::relevance`]).
    pub relevance: f32,
    /// Why: its per-channel scores.
    pub scores: ChannelScores,
    /// The excerpt's messages, oldest first, hits included; no message
    /// appears in two results. Empty when the result is the hit alone.
    pub window: Vec<Memory>,
    /// Ids of the hits in this result, best first (`memory` is the first).
    pub matched: Vec<MemoryId>,
    /// When the memory is not the reader's own: the grant that shares it.
    pub shared_via: Option<Uuid>,
    /// What it costs of the token budget: its messages and its header.
    pub tokens: usize,
}

impl SearchHit {
    /// The messages this result shows: its excerpt, or the memory alone.
    pub fn messages(&self) -> &[Memory] {
        if self.window.is_empty() {
            std::slice::from_ref(&self.memory)
        } else {
            &self.window
        }
    }

    /// The text to hand a model: the memory, or its conversation excerpt
    /// (one `name: text` line per message, after the date of the first).
    pub fn text(&self) -> String {
        if self.window.len() <= 1 {
            return self.memory.content.clone();
        }
        let mut out = String::new();
        if let Some(t) = self.window[0].event_time {
            out.push_str(&format!("[{}]\n", t.format("%Y-%m-%d")));
        }
        for (i, m) in self.window.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            if let Some(who) = speaker(m) {
                out.push_str(who);
                out.push_str(": ");
            }
            out.push_str(&m.content);
        }
        out
    }
}

/// Search results and timings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchResponse {
    /// Best first.
    pub hits: Vec<SearchHit>,
    /// Milliseconds spent embedding the query (0 when cached); the keyword
    /// channel runs meanwhile.
    pub embed_ms: f64,
    /// Milliseconds spent retrieving and ranking, besides the embedding.
    pub retrieve_ms: f64,
    /// Where the time went, stage by stage.
    pub timings: SearchTimings,
    /// The token budget the results were packed into.
    pub budget_tokens: usize,
}

/// Where a search's time went, in milliseconds. The keyword channel runs
/// while the query is embedded, so the stages overlap: `keyword_ms` and
/// `embed_ms + vector_ms` run side by side, then fusion, then packing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct SearchTimings {
    /// Embedding the query (0 when its vector was cached).
    pub embed_ms: f64,
    /// The keyword channel (BM25 candidates).
    pub keyword_ms: f64,
    /// The vector channel after the embedding, with exact cosines for the
    /// keyword channel's candidates.
    pub vector_ms: f64,
    /// Fusion: normalising and weighing the channels, the memories'
    /// standing, neighbour support, diversity.
    pub fusion_ms: f64,
    /// Packing results into the budget, rows and context included.
    pub packing_ms: f64,
}

/// A change to a memory. Applying it keeps the memory's id (which always
/// shows the latest version) and keeps the state it replaces as an earlier
/// version, valid until the change took effect.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemoryPatch {
    /// New content (re-embedded and re-indexed).
    pub content: Option<String>,
    /// New metadata (replaces the old object).
    pub metadata: Option<Map<String, Value>>,
    /// New event time.
    pub event_time: Option<DateTime<Utc>>,
    /// When the new version took effect ("we moved in June"); default now.
    /// The previous version is valid until then.
    pub valid_from: Option<DateTime<Utc>>,
    /// Why, for the event log.
    pub reason: Option<String>,
}

/// What an add did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AddOutcome {
    /// The memories stored, in input order.
    pub stored: Vec<Memory>,
    /// Memories not stored because an identical one exists (see
    /// [`crate::model::dedup_key`]) or a nearly identical one of a kind
    /// that merges near duplicates (see [`crate::policy::KindPolicy`]), in
    /// input order.
    pub duplicates: Vec<Duplicate>,
    /// Memories not admitted, in input order; each is in the rejection
    /// record ([`Hippo::rejections`]).
    pub rejected: Vec<Rejected>,
}

/// A write that duplicated a stored memory and was merged into it (its
/// provenance is logged on that memory as a `merged` event).
#[derive(Debug, Clone, PartialEq)]
pub struct Duplicate {
    /// The memory the write would have created.
    pub memory: Memory,
    /// The stored memory it duplicates.
    pub existing: MemoryId,
    /// For a near duplicate, the cosine of the two; `None` for an exact one.
    pub similarity: Option<f32>,
}

/// A write that was not admitted, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// The memory the write would have created.
    pub memory: Memory,
    /// The admission factors.
    pub admission: crate::policy::Admission,
}

/// A memory's versions and event log (see [`Hippo::history`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct History {
    /// The memory's id (the one that always shows the latest version).
    pub memory_id: MemoryId,
    /// Earlier versions oldest first, then the current one.
    pub versions: Vec<Memory>,
    /// Every change, in order.
    pub events: Vec<MemoryEvent>,
}

/// Builds a [`Hippo`].
#[derive(Default)]
pub struct HippoBuilder {
    store: Option<Arc<dyn Store>>,
    embedder: Option<Arc<dyn Embedder>>,
    clock: Option<Arc<dyn Clock>>,
    weights: FusionWeights,
    limits: Limits,
    llm: Option<Arc<dyn crate::llm::ChatModel>>,
    policies: Policies,
    no_consolidation: bool,
    consolidation_delay: chrono::Duration,
    no_injection_check: bool,
    trust: crate::trust::Trust,
    retrieval: RetrievalOptions,
}

/// Retrieval techniques that can be switched off, for ablations (`hippo
/// bench` measures each with and without); the defaults are what the
/// README's numbers were measured with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrievalOptions {
    /// A long text chunked for embedding is one result: once one of its
    /// chunks is taken, its other chunks are not offered as results of
    /// their own (they can still be shown as context). Ten results then hold
    /// ten texts, not five chunks of one.
    pub one_result_per_text: bool,
}

impl Default for RetrievalOptions {
    fn default() -> Self {
        RetrievalOptions {
            one_result_per_text: true,
        }
    }
}

/// The injection check of writes: phrasing rules, and the semantic detector
/// when the embedder is the model it was measured for.
struct InjectionCheck {
    semantic: Option<crate::injection::SemanticDetector>,
}

impl InjectionCheck {
    /// The detector families `text` (embedded as `vector`) is flagged for.
    fn judge(&self, text: &str, vector: Option<&[f32]>) -> Vec<String> {
        let flags = match (&self.semantic, vector) {
            (Some(s), Some(v)) => s.judge(text, v),
            _ => crate::injection::scan(text),
        };
        flags.into_iter().map(String::from).collect()
    }
}

impl HippoBuilder {
    /// Whether writes queue consolidation jobs (session digests, entity
    /// timelines; see [`crate::consolidate`]). Default: on.
    pub fn consolidation(mut self, on: bool) -> Self {
        self.no_consolidation = !on;
        self
    }
    /// Trust levels by source (default: [`crate::trust::Trust::default`]).
    pub fn trust(mut self, trust: crate::trust::Trust) -> Self {
        self.trust = trust;
        self
    }
    /// Whether writes that look like instructions to an agent are
    /// quarantined (see [`crate::injection`]). Default: on.
    pub fn injection_check(mut self, on: bool) -> Self {
        self.no_injection_check = !on;
        self
    }
    /// How long a consolidation job waits before it runs (default: none).
    /// With an LLM writing summaries, a delay lets a burst of writes to
    /// one session share one summary instead of paying a call per write:
    /// a job that finds its digest already up to date asks nothing.
    pub fn consolidation_delay(mut self, delay: std::time::Duration) -> Self {
        self.consolidation_delay = chrono::Duration::from_std(delay).unwrap_or_default();
        self
    }
    /// Per-kind policies for admission, ranking and forgetting (default:
    /// [`Policies::default`]).
    pub fn policies(mut self, policies: Policies) -> Self {
        self.policies = policies;
        self
    }
    /// A chat model for extraction and update decisions (optional). With
    /// one, items added with `infer` get a background extraction job.
    pub fn llm(mut self, llm: Arc<dyn crate::llm::ChatModel>) -> Self {
        self.llm = Some(llm);
        self
    }
    /// The store (required).
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }
    /// The embedder (required); its model must be the store's active model.
    pub fn embedder(mut self, embedder: Arc<dyn Embedder>) -> Self {
        self.embedder = Some(embedder);
        self
    }
    /// The clock (default: system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }
    /// Fusion weights.
    pub fn weights(mut self, weights: FusionWeights) -> Self {
        self.weights = weights;
        self
    }
    /// Request limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
    /// Retrieval techniques in use (all by default).
    pub fn retrieval(mut self, retrieval: RetrievalOptions) -> Self {
        self.retrieval = retrieval;
        self
    }
    /// Checks that the parts fit together and builds the engine.
    pub fn build(self) -> Result<Hippo> {
        let store = self
            .store
            .ok_or_else(|| Error::invalid("a store is required"))?;
        let embedder = self
            .embedder
            .ok_or_else(|| Error::invalid("an embedder is required"))?;
        if store.active_model() != embedder.model_id() {
            return Err(Error::invalid(format!(
                "store searches vectors of {:?} but the embedder is {:?}",
                store.active_model(),
                embedder.model_id()
            )));
        }
        self.policies.validate()?;
        self.trust.validate()?;
        let injection = if self.no_injection_check {
            None
        } else {
            Some(InjectionCheck {
                semantic: crate::injection::SemanticDetector::for_embedder(embedder.as_ref())?,
            })
        };
        Ok(Hippo {
            store,
            embedder,
            clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
            weights: self.weights,
            limits: self.limits,
            llm: self.llm,
            policies: self.policies,
            consolidation: !self.no_consolidation,
            consolidation_delay: self.consolidation_delay,
            llm_meter: Default::default(),
            injection,
            trust: self.trust,
            retrieval: self.retrieval,
            query_cache: Mutex::new(HashMap::new()),
        })
    }
}

/// Who a message's line in a result is attributed to: its name, else its role.
/// Makes `m`'s status the truth at `now`: an active memory whose expiry
/// passed is archived from that instant (maintenance records it later), so
/// every read reports it so.
pub(crate) fn status_at(m: &mut Memory, now: DateTime<Utc>) {
    if m.status == Status::Active && m.expires_at.is_some_and(|e| e <= now) {
        m.status = Status::Archived;
    }
}

fn speaker(m: &Memory) -> Option<&str> {
    m.actor.name.as_deref().or(m.actor.role.as_deref())
}

/// Tokens a message costs in a result: its "name: content" line.
fn line_tokens(m: &Memory) -> usize {
    crate::text::approx_tokens(&m.content)
        + speaker(m).map_or(0, |n| crate::text::approx_tokens(n) + 1)
}

/// Most cached query vectors before the cache is cleared.
const QUERY_CACHE_CAP: usize = 4096;

/// The memory engine.
pub struct Hippo {
    store: Arc<dyn Store>,
    embedder: Arc<dyn Embedder>,
    clock: Arc<dyn Clock>,
    weights: FusionWeights,
    limits: Limits,
    llm: Option<Arc<dyn crate::llm::ChatModel>>,
    policies: Policies,
    consolidation: bool,
    consolidation_delay: chrono::Duration,
    llm_meter: crate::llm::LlmMeter,
    /// Flags writes that look like instructions to an agent (`None`: off).
    injection: Option<InjectionCheck>,
    trust: crate::trust::Trust,
    retrieval: RetrievalOptions,
    query_cache: Mutex<HashMap<String, Arc<Vec<f32>>>>,
}

/// The flag an approved memory keeps next to the detector's (see
/// [`Hippo::approve`]).
pub const APPROVED: &str = "approved";

/// A memory derived from others, to store (see [`Hippo::add_derived`]).
pub(crate) struct Derived<'a> {
    /// Its id, when chosen in advance (so a job re-run writes the same one).
    pub id: Option<MemoryId>,
    pub scope: &'a Scope,
    pub kind: MemoryKind,
    pub content: &'a str,
    pub metadata: Map<String, Value>,
    pub derived_from: Vec<MemoryId>,
    pub event_time: Option<DateTime<Utc>>,
}

/// A memory being prepared, before embedding.
struct Draft {
    memory: Memory,
    embed_text: String,
    /// Position of the item it came from, when that item asked for
    /// extraction.
    infer_item: Option<usize>,
    /// What tells it apart beyond its fields (see [`dedup_key`]).
    key_extra: String,
    /// The writer's confidence, 0..=1.
    confidence: f32,
    /// Skip admission and near-duplicate merging.
    force: bool,
}

/// What becomes of a draft in an add.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fate {
    /// Stored (unless the store finds it an exact duplicate after all).
    Store,
    /// An exact duplicate of a stored memory, found before embedding.
    Known,
    /// Merged into a nearly identical memory.
    Near(MemoryId, f32),
    /// Not admitted.
    Refused(crate::policy::Admission),
}

/// Whose a memory in `scope` is: its user or agent across sessions (the
/// scope itself when it names only a session).
pub(crate) fn owner_of(scope: &Scope) -> Scope {
    if scope.user_id.is_some() || scope.agent_id.is_some() {
        Scope {
            session_id: None,
            ..scope.clone()
        }
    } else {
        scope.clone()
    }
}

/// `f()` and how long it took, in milliseconds.
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed().as_secs_f64() * 1e3)
}

fn embed_text_of(name: Option<&str>, content: &str) -> String {
    match name {
        Some(n) if !n.is_empty() => format!("{n}: {content}"),
        _ => content.to_owned(),
    }
}

impl Hippo {
    /// Starts building an engine.
    pub fn builder() -> HippoBuilder {
        HippoBuilder::default()
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The embedder.
    pub fn embedder(&self) -> &Arc<dyn Embedder> {
        &self.embedder
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The chat model, when one is configured.
    pub fn llm(&self) -> Option<&Arc<dyn crate::llm::ChatModel>> {
        self.llm.as_ref()
    }

    /// Where `m` came from and how far that source is trusted.
    pub fn trust_of(&self, m: &Memory) -> (crate::trust::SourceKind, f32) {
        let s = crate::trust::SourceKind::of(m);
        (s, self.trust.of(s))
    }

    /// Calls and tokens spent on the LLM since this engine was built, per
    /// operation.
    pub fn llm_usage(&self) -> Vec<(&'static str, crate::llm::LlmTotals)> {
        self.llm_meter.totals()
    }

    pub(crate) fn llm_meter(&self) -> &crate::llm::LlmMeter {
        &self.llm_meter
    }

    /// The consolidation job for a change to `ms`, when consolidation is on
    /// and the change touches a digest.
    pub(crate) fn consolidation_jobs(&self, ms: &[&Memory]) -> Vec<crate::jobs::NewJob> {
        if !self.consolidation {
            return Vec::new();
        }
        crate::consolidate::Touched::by(ms)
            .job(millis(self.clock.now()) + self.consolidation_delay)
            .into_iter()
            .collect()
    }

    /// Whether writes queue consolidation jobs.
    pub fn consolidates(&self) -> bool {
        self.consolidation
    }

    /// The per-kind policies.
    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    /// Now, by this engine's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Memory `m` (as read) as it stands now: when its latest state is a
    /// change scheduled for later (an explicit `valid_from` after now), the
    /// version of it that holds now, if any; with its status now
    /// ([`status_at`]).
    pub(crate) fn as_it_holds_now(&self, m: Memory) -> Result<Memory> {
        let now = self.now();
        let mut m = if m.version_of.is_none() && m.valid_from.is_some_and(|f| f > now) {
            let (versions, _) = self.store.history(m.id)?;
            versions
                .into_iter()
                .rev()
                .find(|v| {
                    v.id != m.id && v.valid_since() <= now && v.valid_to.is_none_or(|t| t > now)
                })
                .unwrap_or(m)
        } else {
            m
        };
        status_at(&mut m, now);
        Ok(m)
    }

    fn validate_item(&self, item: &AddItem) -> Result<()> {
        item.scope.validate()?;
        let meta_len = Value::Object(item.metadata.clone()).to_string().len();
        if meta_len > self.limits.max_metadata_bytes {
            return Err(Error::too_large(format!(
                "metadata exceeds {} bytes",
                self.limits.max_metadata_bytes
            )));
        }
        let check = |text: &str| -> Result<()> {
            if text.trim().is_empty() {
                return Err(Error::invalid("content must not be empty"));
            }
            if text.len() > self.limits.max_content_bytes {
                return Err(Error::too_large(format!(
                    "content exceeds {} bytes",
                    self.limits.max_content_bytes
                )));
            }
            Ok(())
        };
        if item.confidence.is_some_and(|c| !(0.0..=1.0).contains(&c)) {
            return Err(Error::invalid("confidence must be between 0 and 1"));
        }
        match &item.content {
            Content::Text(t) => check(t)?,
            Content::Messages(ms) => {
                if ms.is_empty() {
                    return Err(Error::invalid("messages must not be empty"));
                }
                for m in ms {
                    check(&m.content)?;
                    if m.role.is_empty() || m.role.len() > 64 {
                        return Err(Error::invalid("message role must be 1..=64 bytes"));
                    }
                    if m.name.as_ref().is_some_and(|n| n.len() > 256) {
                        return Err(Error::invalid("message name must be at most 256 bytes"));
                    }
                }
            }
        }
        Ok(())
    }

    /// Turns items into drafts (one per memory) and sources of chunked inputs.
    fn draft(&self, items: Vec<AddItem>, request_id: Uuid) -> Result<(Vec<Draft>, Vec<Source>)> {
        let now = millis(self.clock.now());
        let policy = ChunkPolicy::for_window(self.embedder.max_tokens());
        let mut drafts = Vec::new();
        let mut sources = Vec::new();
        for (item_index, item) in items.into_iter().enumerate() {
            let infer_item = item.infer.then_some(item_index);
            let (default_kind, parts): (MemoryKind, Vec<(Actor, String)>) = match item.content {
                Content::Text(t) => (MemoryKind::Document, vec![(Actor::default(), t)]),
                Content::Messages(ms) => (
                    MemoryKind::Message,
                    ms.into_iter()
                        .map(|m| {
                            (
                                Actor {
                                    role: Some(m.role),
                                    name: m.name,
                                },
                                m.content,
                            )
                        })
                        .collect(),
                ),
            };
            let kind = item.kind.unwrap_or(default_kind);
            let confidence = item.confidence.unwrap_or(1.0);
            let mut produced = 0;
            for (actor, content) in parts {
                let chunks = chunk_text(&content, policy, |s| self.embedder.count_tokens(s));
                let (source_id, count, key_extra) = if chunks.len() > 1 {
                    let sid = MemoryId::now_v7();
                    let whole = content_hash(&content);
                    sources.push(Source {
                        id: sid,
                        scope: item.scope.clone(),
                        content: content.clone(),
                    });
                    (Some(sid), Some(chunks.len() as u32), whole)
                } else {
                    (None, None, String::new())
                };
                for (i, chunk) in chunks.into_iter().enumerate() {
                    produced += 1;
                    let embed_text = embed_text_of(actor.name.as_deref(), &chunk);
                    drafts.push(Draft {
                        memory: Memory {
                            id: MemoryId::now_v7(),
                            scope: item.scope.clone(),
                            kind: if source_id.is_some() {
                                MemoryKind::Chunk
                            } else {
                                kind
                            },
                            content_hash: content_hash(&chunk),
                            content: chunk,
                            actor: actor.clone(),
                            metadata: item.metadata.clone(),
                            event_time: item.event_time.map(millis),
                            recorded_at: item.recorded_at.map(millis).unwrap_or(now),
                            updated_at: item.recorded_at.map(millis).unwrap_or(now),
                            provenance: Provenance {
                                request_id: Some(request_id),
                                source_id,
                                chunk_index: source_id.map(|_| i as u32),
                                chunk_count: count,
                                derived_from: Vec::new(),
                                written_by: Some(crate::audit::current_actor()),
                            },
                            embedding_model: Some(self.embedder.model_id().to_owned()),
                            valid_from: None,
                            valid_to: None,
                            version_of: None,
                            status: Status::Active,
                            dedup_key: None,
                            expires_at: item.expires_at.map(millis),
                            usage: Default::default(),
                            flags: Vec::new(),
                        },
                        embed_text,
                        infer_item,
                        key_extra: key_extra.clone(),
                        confidence,
                        force: item.force,
                    });
                }
            }
            if let Some(id) = item.id {
                if produced != 1 {
                    return Err(Error::invalid(
                        "an item with an explicit id must yield exactly one memory",
                    ));
                }
                if let Some(last) = drafts.last_mut() {
                    last.memory.id = id;
                }
            }
        }
        // Identical memories in one write are told apart by their
        // occurrence, so a conversation that repeats a line keeps both.
        let mut seen: HashMap<String, usize> = HashMap::new();
        for d in &mut drafts {
            let Some(key) = dedup_key(&d.memory, &d.key_extra) else {
                continue;
            };
            let n = seen.entry(key.clone()).or_insert(0);
            d.memory.dedup_key = if *n == 0 {
                Some(key)
            } else {
                dedup_key(&d.memory, &format!("{}#{n}", d.key_extra))
            };
            *n += 1;
        }
        Ok((drafts, sources))
    }

    /// Stores items verbatim, atomically: every memory is durable, keyword-
    /// and vector-searchable when this returns; on error nothing is stored.
    /// Returns the memories stored; exact duplicates of stored memories are
    /// merged into them instead (see [`Hippo::add_reporting`]).
    pub fn add(&self, items: Vec<AddItem>) -> Result<Vec<Memory>> {
        Ok(self.add_reporting(items)?.stored)
    }

    /// [`Hippo::add`], reporting the duplicates too. Duplicates are found
    /// before embedding, so re-importing a conversation costs no model time.
    pub fn add_reporting(&self, items: Vec<AddItem>) -> Result<AddOutcome> {
        if items.is_empty() {
            return Err(Error::invalid("no items to add"));
        }
        if items.len() > self.limits.max_batch_items {
            return Err(Error::invalid(format!(
                "at most {} items per request",
                self.limits.max_batch_items
            )));
        }
        for (i, item) in items.iter().enumerate() {
            self.validate_item(item)
                .map_err(|e| Error::new(e.kind(), format!("item {i}: {}", e.message())))?;
        }
        let request_id = Uuid::now_v7();
        let (mut drafts, sources) = self.draft(items, request_id)?;
        // Known duplicates are not embedded; the store decides for good
        // inside its write transaction (and logs the merge).
        let keys: Vec<String> = drafts
            .iter()
            .filter_map(|d| d.memory.dedup_key.clone())
            .collect();
        let known: std::collections::HashSet<String> = keys
            .iter()
            .zip(self.store.find_keys(&keys)?)
            .filter(|(_, found)| found.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        let is_known = |d: &Draft| {
            d.memory
                .dedup_key
                .as_ref()
                .is_some_and(|k| known.contains(k))
        };
        let texts: Vec<&str> = drafts
            .iter()
            .filter(|d| !is_known(d))
            .map(|d| d.embed_text.as_str())
            .collect();
        let mut vectors = if texts.is_empty() {
            Vec::new()
        } else {
            self.embedder.embed_batch(&texts)?
        }
        .into_iter();
        if vectors.len() != texts.len() {
            return Err(Error::new(
                ErrorKind::Internal,
                "embedder returned a wrong number of vectors",
            ));
        }
        let now = millis(self.clock.now());
        let mut fates = Vec::with_capacity(drafts.len());
        let mut fresh_vectors: Vec<Option<Vec<f32>>> = Vec::with_capacity(drafts.len());
        for (i, d) in drafts.iter().enumerate() {
            if is_known(d) {
                fates.push(Fate::Known);
                fresh_vectors.push(None);
                continue;
            }
            let v = vectors.next();
            let fate = match (&v, d.force) {
                (Some(v), false) => {
                    // Earlier drafts of this write that will be stored count
                    // as stored memories for near duplicates (only kinds
                    // that merge them look).
                    let merges = self.policies.of(d.memory.kind).merge_above.is_some();
                    let earlier: Vec<(&Memory, &[f32])> = drafts[..i]
                        .iter()
                        .zip(&fates)
                        .zip(&fresh_vectors)
                        .filter(|((_, f), _)| merges && **f == Fate::Store)
                        .filter_map(|((e, _), ev)| Some((&e.memory, ev.as_deref()?)))
                        .collect();
                    self.admit(d, v, &earlier)?
                }
                _ => Fate::Store,
            };
            fates.push(fate);
            fresh_vectors.push(v);
        }
        // What looks like instructions to an agent is stored but held out
        // of retrieval until approved.
        if let Some(check) = &self.injection {
            for ((d, fate), v) in drafts.iter_mut().zip(&fates).zip(&fresh_vectors) {
                if *fate == Fate::Store {
                    let flags = check.judge(&d.memory.content, v.as_deref());
                    if !flags.is_empty() {
                        d.memory.status = Status::Quarantined;
                        d.memory.flags = flags;
                    }
                }
            }
        }
        // Items that ask for extraction get a job in the same transaction
        // (when an LLM is configured; otherwise they are stored verbatim).
        // Known duplicates were extracted when first stored.
        let mut jobs: Vec<crate::jobs::NewJob> = Vec::new();
        if self.llm.is_some() {
            let mut per_item: std::collections::BTreeMap<usize, (Scope, Vec<Value>)> =
                Default::default();
            for (d, fate) in drafts.iter().zip(&fates) {
                if let (Some(i), Fate::Store) = (d.infer_item, fate) {
                    per_item
                        .entry(i)
                        .or_insert_with(|| (d.memory.scope.clone(), Vec::new()))
                        .1
                        .push(Value::String(d.memory.id.to_string()));
                }
            }
            for (scope, ids) in per_item.into_values() {
                let mut payload = Map::new();
                payload.insert("memories".into(), Value::Array(ids));
                jobs.push(crate::jobs::NewJob {
                    kind: crate::extract::EXTRACT_JOB.into(),
                    scope,
                    payload,
                    at: now,
                });
            }
        }
        let stored: Vec<&Memory> = drafts
            .iter()
            .zip(&fates)
            .filter(|(_, f)| **f == Fate::Store)
            .map(|(d, _)| &d.memory)
            .collect();
        jobs.extend(self.consolidation_jobs(&stored));
        let mut batch = InsertBatch {
            jobs,
            sources,
            ..Default::default()
        };
        // Position in the batch of each draft that goes to the store.
        let mut at_position: Vec<Option<usize>> = Vec::with_capacity(drafts.len());
        for ((d, fate), vector) in drafts.iter().zip(&fates).zip(fresh_vectors) {
            match *fate {
                Fate::Store | Fate::Known => {
                    at_position.push(Some(batch.memories.len()));
                    batch.memories.push(NewMemory {
                        memory: d.memory.clone(),
                        vector,
                    });
                }
                Fate::Near(existing, similarity) => {
                    at_position.push(None);
                    batch
                        .events
                        .push(self.near_duplicate_event(&d.memory, existing, similarity));
                }
                Fate::Refused(admission) => {
                    at_position.push(None);
                    batch.rejections.push(crate::policy::Rejection {
                        seq: 0,
                        scope: d.memory.scope.clone(),
                        at: now,
                        request_id: Some(request_id),
                        kind: d.memory.kind,
                        content: d.memory.content.clone(),
                        actor: d.memory.actor.clone(),
                        event_time: d.memory.event_time,
                        admission,
                    });
                }
            }
        }
        let outcome = self.store.insert(batch)?;
        let dup_at: HashMap<usize, MemoryId> = outcome.duplicates.into_iter().collect();
        let mut out = AddOutcome::default();
        for ((d, fate), pos) in drafts.into_iter().zip(fates).zip(at_position) {
            let memory = d.memory;
            match (fate, pos.and_then(|p| dup_at.get(&p))) {
                (_, Some(&existing)) => out.duplicates.push(Duplicate {
                    memory,
                    existing,
                    similarity: None,
                }),
                (Fate::Near(existing, similarity), _) => out.duplicates.push(Duplicate {
                    memory,
                    existing,
                    similarity: Some(similarity),
                }),
                (Fate::Refused(admission), _) => out.rejected.push(Rejected { memory, admission }),
                _ => out.stored.push(memory),
            }
        }
        Ok(out)
    }

    /// Admission for a new draft with vector `v` (see [`crate::policy`]):
    /// merged into a near duplicate, refused, or stored.
    /// `earlier`: memories of the same write that will be stored, with
    /// their vectors.
    fn admit(&self, d: &Draft, v: &[f32], earlier: &[(&Memory, &[f32])]) -> Result<Fate> {
        let policy = self.policies.of(d.memory.kind);
        let mut near = None;
        if let Some(merge) = policy.merge_above {
            if let Some((existing, cos)) =
                self.nearest_current(&d.memory.scope, d.memory.kind, v)?
            {
                if cos >= merge
                    && crate::text::same_particulars(&existing.content, &d.memory.content)
                {
                    return Ok(Fate::Near(existing.id, cos));
                }
                near = Some((existing.id, cos));
            }
            let owner = owner_of(&d.memory.scope);
            for (m, ev) in earlier {
                if m.kind != d.memory.kind || !owner.matches(&m.scope) {
                    continue;
                }
                let cos = crate::store::vectors::dot(v, ev);
                if cos >= merge && crate::text::same_particulars(&m.content, &d.memory.content) {
                    return Ok(Fate::Near(m.id, cos));
                }
                if near.is_none_or(|(_, best)| cos > best) {
                    near = Some((m.id, cos));
                }
            }
        }
        let admission = crate::policy::admission(
            policy,
            &d.memory.content,
            near.map(|(_, c)| c),
            d.confidence,
        );
        Ok(if admission.admitted {
            Fate::Store
        } else {
            Fate::Refused(admission)
        })
    }

    /// The current memory of `kind` most similar to vector `v` among the
    /// owner's (its user or agent, across sessions), with the cosine.
    pub(crate) fn nearest_current(
        &self,
        scope: &Scope,
        kind: MemoryKind,
        v: &[f32],
    ) -> Result<Option<(Memory, f32)>> {
        let owner = owner_of(scope);
        let filter = self.resolve(&Filter {
            kinds: vec![kind],
            ..Filter::default()
        });
        let best = self.store.vector_candidates(&VectorQuery {
            scope: &owner,
            filter: &filter,
            vector: v,
            limit: 1,
        })?;
        let Some(c) = best.first() else {
            return Ok(None);
        };
        // The slot index does not know expiry: an expired memory is not
        // one to merge into.
        let score = c.score;
        Ok(self
            .store
            .get_many(&[c.id])?
            .pop()
            .filter(|m| filter.accepts_expiry(m.expires_at))
            .map(|m| (m, score)))
    }

    /// The `merged` log entry for `dup`, a near duplicate of `existing`.
    pub(crate) fn near_duplicate_event(
        &self,
        dup: &Memory,
        existing: MemoryId,
        similarity: f32,
    ) -> MemoryEvent {
        let mut detail = Map::new();
        detail.insert("duplicate".into(), serde_json::json!(dup.id));
        detail.insert("content".into(), Value::String(dup.content.clone()));
        detail.insert("similarity".into(), serde_json::json!(similarity));
        if let Ok(Value::Object(p)) = serde_json::to_value(&dup.provenance) {
            detail.insert("provenance".into(), Value::Object(p));
        }
        MemoryEvent {
            memory_id: existing,
            at: millis(self.clock.now()),
            kind: EventKind::Merged,
            origin: "dedup".into(),
            reason: Some("near duplicate".into()),
            request_id: dup.provenance.request_id,
            detail,
        }
    }

    /// Writes that were not admitted, in `scope` (all when `None`), after
    /// position `after_seq`, oldest first.
    pub fn rejections(
        &self,
        scope: Option<&Scope>,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<crate::policy::Rejection>> {
        if let Some(s) = scope {
            s.validate()?;
        }
        if limit == 0 || limit > self.limits.max_batch_items {
            return Err(Error::invalid(format!(
                "limit must be 1..={}",
                self.limits.max_batch_items
            )));
        }
        self.store.rejections(scope, after_seq, limit)
    }

    /// Stores memories exactly as given (ids, times, provenance kept), e.g.
    /// from an export; memories whose id already exists are skipped. Returns
    /// how many were stored. Vectors are recomputed with the current model.
    pub fn import(&self, memories: Vec<Memory>) -> Result<usize> {
        if memories.len() > self.limits.max_batch_items {
            return Err(Error::invalid(format!(
                "at most {} memories per import batch",
                self.limits.max_batch_items
            )));
        }
        let ids: Vec<MemoryId> = memories.iter().map(|m| m.id).collect();
        let existing: std::collections::HashSet<MemoryId> = self
            .store
            .get_many(&ids)?
            .into_iter()
            .map(|m| m.id)
            .collect();
        let mut fresh: Vec<Memory> = Vec::new();
        for m in memories {
            if existing.contains(&m.id) || fresh.iter().any(|f| f.id == m.id) {
                continue;
            }
            m.scope.validate()?;
            if m.content.trim().is_empty() || m.content.len() > self.limits.max_content_bytes {
                return Err(Error::invalid(format!(
                    "memory {}: content must be 1..={} bytes",
                    m.id, self.limits.max_content_bytes
                )));
            }
            if m.content_hash != content_hash(&m.content) {
                return Err(Error::invalid(format!(
                    "memory {}: content_hash does not match content",
                    m.id
                )));
            }
            fresh.push(m);
        }
        let texts: Vec<String> = fresh
            .iter()
            .map(|m| embed_text_of(m.actor.name.as_deref(), &m.content))
            .collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let vectors = if refs.is_empty() {
            Vec::new()
        } else {
            self.embedder.embed_batch(&refs)?
        };
        let n = fresh.len();
        let model = self.embedder.model_id().to_owned();
        let batch = InsertBatch {
            memories: fresh
                .into_iter()
                .zip(vectors)
                .map(|(mut m, v)| {
                    m.embedding_model = Some(model.clone());
                    NewMemory {
                        memory: m,
                        vector: Some(v),
                    }
                })
                .collect(),
            sources: Vec::new(),
            ..Default::default()
        };
        let outcome = self.store.insert(batch)?;
        Ok(n - outcome.duplicates.len())
    }

    fn query_vector(&self, query: &str) -> Result<(Arc<Vec<f32>>, f64)> {
        let cached = self
            .query_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(query)
            .cloned();
        if let Some(v) = cached {
            return Ok((v, 0.0));
        }
        let t = Instant::now();
        let v = Arc::new(self.embedder.embed_query(query)?);
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let mut c = self.query_cache.lock().unwrap_or_else(|e| e.into_inner());
        if c.len() >= QUERY_CACHE_CAP {
            c.clear();
        }
        c.insert(query.to_owned(), v.clone());
        Ok((v, ms))
    }

    /// Hybrid search within a scope.
    pub fn search(&self, req: &SearchRequest) -> Result<SearchResponse> {
        req.scope.validate()?;
        req.filter.validate()?;
        if req.query.trim().is_empty() {
            return Err(Error::invalid("query must not be empty"));
        }
        if !(0.0..=1.0).contains(&req.min_relevance) {
            return Err(Error::invalid("min_relevance must be between 0 and 1"));
        }
        if req.query.len() > self.limits.max_query_bytes {
            return Err(Error::invalid(format!(
                "query exceeds {} bytes",
                self.limits.max_query_bytes
            )));
        }
        if !(0.0..=1.0).contains(&req.diversity) {
            return Err(Error::invalid("diversity must be between 0 and 1"));
        }
        if req
            .budget_tokens
            .is_some_and(|b| b == 0 || b > MAX_BUDGET_TOKENS)
        {
            return Err(Error::invalid(format!(
                "budget_tokens must be 1..={MAX_BUDGET_TOKENS}"
            )));
        }
        if req.context.before.max(req.context.after) > MAX_CONTEXT_TURNS {
            return Err(Error::invalid(format!(
                "context must be 0..={MAX_CONTEXT_TURNS} messages on either side"
            )));
        }
        if req.top_k == 0 || req.top_k > self.limits.max_top_k {
            return Err(Error::invalid(format!(
                "top_k must be 1..={}",
                self.limits.max_top_k
            )));
        }
        let filter = self.resolve(&req.filter);
        let t = Instant::now();
        // Candidates per channel. A deep keyword pool matters in long
        // histories, where names and rare words of the right conversation
        // compete with thousands of other messages: with 20,000 distractor
        // turns, 100 keyword candidates lost less recall than 50 (150 or 200
        // no less than 100). A deeper vector pool did not help and costs
        // more f32 rescoring.
        let keyword_pool = (req.top_k * 10).max(100);
        let vector_pool = (req.top_k * 3).max(50);
        // Dates the query mentions ("on 21 May 2023", "last week") become
        // the same tokens stored memories carry for their dates.
        let mut terms = query_terms(&req.query);
        terms.extend(crate::temporal::mention_tokens(
            &req.query,
            req.reference_time
                .unwrap_or_else(|| self.clock.now())
                .date_naive(),
        ));
        let reader = Reader {
            scope: &req.scope,
            visible: if req.shared {
                self.visible(&req.scope)?
            } else {
                Visible::default()
            },
        };
        // Before the channels run side by side, so neither sees the indexes
        // another process changed while the other sees them reloaded.
        self.store.catch_up()?;
        // The reader's own scope, then each shared part: candidates of every
        // part compete in one ranking (raw scores are comparable: BM25 over
        // one index, cosines).
        let parts = reader.visible.parts(&req.scope);
        // One channel's candidates over every part, each part's kept to
        // what it shares.
        let gather = |channel: &(dyn Fn(&Scope) -> Result<Vec<crate::store::Candidate>> + Sync)| {
            let mut found = Vec::new();
            for (scope, only) in &parts {
                let keep =
                    |c: &crate::store::Candidate| only.as_ref().is_none_or(|o| o.contains(&c.id));
                found.extend(channel(scope)?.into_iter().filter(keep));
            }
            Ok::<_, Error>(found)
        };
        // The channels are independent, and the keyword channel does not
        // need the query's vector: it runs while the query is embedded.
        // The keyword channel runs on the rayon pool while this thread
        // embeds the query and then runs the vector channel. Embedding here
        // rather than on a pool thread (as `rayon::join` did) spreads the
        // model's parallel work over the whole pool: one client's search
        // over HTTP went from p50 23.5 to 14.5 ms here (`hippo loadtest`,
        // 2,000 LoCoMo memories), and p95 with 4 clients from 66-86 to
        // 43-46 ms.
        let mut keyword_side = None;
        let vector_side = rayon::in_place_scope(|s| {
            s.spawn(|_| {
                keyword_side = Some(timed(|| {
                    gather(&|scope| {
                        self.store.keyword_candidates(&KeywordQuery {
                            scope,
                            filter: &filter,
                            terms: &terms,
                            limit: keyword_pool,
                        })
                    })
                }))
            });
            (|| -> Result<_> {
                let (qv, embed_ms) = self.query_vector(&req.query)?;
                let (vector, vector_ms) = timed(|| {
                    gather(&|scope| {
                        self.store.vector_candidates(&VectorQuery {
                            scope,
                            filter: &filter,
                            vector: &qv,
                            limit: vector_pool,
                        })
                    })
                });
                Ok((qv, embed_ms, vector?, vector_ms))
            })()
        });
        let (keyword, keyword_ms) =
            keyword_side.expect("the scope ends after the keyword channel ran");
        let (qv, embed_ms, mut vector, vector_ms) = vector_side?;
        let mut keyword = keyword?;
        if !reader.visible.grants.is_empty() {
            crate::sharing::merge_candidates(&mut keyword, keyword_pool);
            crate::sharing::merge_candidates(&mut vector, vector_pool);
        }
        // Exact cosines for keyword-only candidates, so every candidate is
        // judged on both channels.
        let known: std::collections::HashSet<MemoryId> = vector.iter().map(|c| c.id).collect();
        let missing: Vec<MemoryId> = keyword
            .iter()
            .map(|c| c.id)
            .filter(|id| !known.contains(id))
            .collect();
        let mut cosines = vector;
        let (exact, exact_ms) = timed(|| self.store.vector_scores(&missing, &qv));
        cosines.extend(exact?);
        let channels_ms = t.elapsed().as_secs_f64() * 1e3;
        // Rank on the candidates alone; fetch rows only for the results.
        let times: HashMap<MemoryId, DateTime<Utc>> = keyword
            .iter()
            .chain(cosines.iter())
            .map(|c| (c.id, c.time))
            .collect();
        let mut fused = fuse(&keyword, &cosines, &times, &self.weights);
        self.apply_standing(&mut fused, &keyword, &cosines)?;
        if self.weights.neighbour != 0.0 {
            let ids: Vec<MemoryId> = fused.iter().map(|f| f.id).collect();
            support(&mut fused, &self.store.windows(&ids, 1, 1)?, &self.weights);
        }
        if req.min_relevance > 0.0 {
            fused.retain(|f| crate::relevance::relevance(&f.scores) >= req.min_relevance);
        }
        let fused = if req.diversity > 0.0 {
            self.diversify(fused, req)?
        } else {
            fused
        };
        let fusion_ms = t.elapsed().as_secs_f64() * 1e3 - channels_ms;
        let (hits, results_ms) = timed(|| self.results(req, &reader, &filter, &fused));
        let hits = hits?;
        tracing::debug!(
            keyword_ms,
            vector_ms,
            channels_ms,
            results_ms,
            total_ms = t.elapsed().as_secs_f64() * 1e3,
            keyword = keyword.len(),
            "search stages"
        );
        Ok(SearchResponse {
            hits,
            embed_ms,
            retrieve_ms: (t.elapsed().as_secs_f64() * 1e3 - embed_ms).max(0.0),
            timings: SearchTimings {
                embed_ms,
                keyword_ms,
                vector_ms: vector_ms + exact_ms,
                fusion_ms,
                packing_ms: results_ms,
            },
            budget_tokens: self.budget_of(req),
        })
    }

    /// Weighs each candidate by its kind's policy and its strength and
    /// reinforcement (see [`crate::policy`]).
    fn apply_standing(
        &self,
        fused: &mut [crate::retrieve::Fused],
        keyword: &[crate::store::Candidate],
        cosines: &[crate::store::Candidate],
    ) -> Result<()> {
        let known: HashMap<MemoryId, (MemoryKind, DateTime<Utc>)> = keyword
            .iter()
            .chain(cosines)
            .map(|c| (c.id, (c.kind, c.recorded_at)))
            .collect();
        let ids: Vec<MemoryId> = fused.iter().map(|f| f.id).collect();
        let usage = self.store.usage(&ids)?;
        let now = self.clock.now();
        let standing: Vec<Standing> = fused
            .iter()
            .zip(&usage)
            .map(|(f, u)| {
                let (kind, learnt) = known
                    .get(&f.id)
                    .copied()
                    .unwrap_or((MemoryKind::default(), now));
                let policy = self.policies.of(kind);
                Standing {
                    kind_weight: policy.retrieval_weight,
                    strength: crate::policy::strength(policy, u, learnt, now).value,
                    reinforcement: crate::policy::reinforcement(u),
                }
            })
            .collect();
        apply_standing(fused, &standing, &self.weights);
        Ok(())
    }

    /// Reorders the head of the ranking by maximal marginal relevance
    /// (Carbonell & Goldstein 1998): each next result maximises
    /// `(1 - d) * relevance - d * max cosine to the results already chosen`,
    /// with relevance the fused score over the best one. Chooses the first
    /// `2 * top_k` (results may still be skipped as context) from the best
    /// `5 * top_k`; the rest keep their order.
    fn diversify(
        &self,
        mut fused: Vec<crate::retrieve::Fused>,
        req: &SearchRequest,
    ) -> Result<Vec<crate::retrieve::Fused>> {
        let head = fused.len().min(req.top_k * 5);
        let ids: Vec<MemoryId> = fused[..head].iter().map(|f| f.id).collect();
        let vectors = self.store.vectors(&ids)?;
        let best = fused.first().map_or(1.0, |f| f.score.max(1e-6));
        let d = req.diversity.clamp(0.0, 1.0);
        // Highest cosine of each candidate to anything chosen so far.
        let mut redundancy = vec![0.0f32; head];
        let mut left: Vec<usize> = (0..head).collect();
        let mut chosen: Vec<usize> = Vec::with_capacity(head);
        while !left.is_empty() && chosen.len() < 2 * req.top_k {
            let (pos, _) = left
                .iter()
                .enumerate()
                .map(|(p, &i)| (p, (1.0 - d) * fused[i].score / best - d * redundancy[i]))
                .fold((0, f32::NEG_INFINITY), |a, x| if x.1 > a.1 { x } else { a });
            let c = left.remove(pos);
            chosen.push(c);
            if let Some(vc) = &vectors[c] {
                for &i in &left {
                    if let Some(vi) = &vectors[i] {
                        redundancy[i] = redundancy[i].max(crate::store::vectors::dot(vi, vc));
                    }
                }
            }
        }
        chosen.extend(left); // in their original order
        let tail = fused.split_off(head);
        let mut out: Vec<crate::retrieve::Fused> = chosen.into_iter().map(|i| fused[i]).collect();
        out.extend(tail);
        Ok(out)
    }

    /// Packs the ranking into at most `req.top_k` results within the token
    /// budget (see [`crate::pack`]): hits are offered best first, a group of
    /// `top_k` at a time, until the packer is full or `OFFER_ROUNDS` groups
    /// were offered; then context is added. A memory deleted since it was
    /// ranked is skipped.
    /// The token budget of a search: asked for, or a default per result.
    fn budget_of(&self, req: &SearchRequest) -> usize {
        req.budget_tokens
            .unwrap_or(DEFAULT_TOKENS_PER_RESULT * req.top_k)
    }

    fn results(
        &self,
        req: &SearchRequest,
        reader: &Reader<'_>,
        filter: &Filter,
        fused: &[crate::retrieve::Fused],
    ) -> Result<Vec<SearchHit>> {
        /// Most groups of `top_k` hits offered: enough to fill the excerpts
        /// when many hits merge, few enough to bound row reads.
        const OFFER_ROUNDS: usize = 4;
        let budget = self.budget_of(req);
        let Context { before, after } = req.context;
        let mut packer = Packer::new(budget, req.top_k);
        let now = self.now();
        let mut rows: HashMap<MemoryId, Memory> = HashMap::new();
        let by_id: HashMap<MemoryId, &crate::retrieve::Fused> =
            fused.iter().map(|f| (f.id, f)).collect();
        let head = &fused[..fused.len().min(OFFER_ROUNDS * req.top_k)];
        // Chunks of one long text whose best chunk is taken: the text has
        // its result (its neighbouring chunks may still come as context).
        let mut sources_taken: HashSet<Uuid> = HashSet::new();
        for part in head.chunks(req.top_k) {
            let ids: Vec<MemoryId> = part.iter().map(|f| f.id).collect();
            // One message beyond the context on each side finds gaps.
            // Without context each result is one memory: nothing merges.
            let windows = if req.context.is_none() {
                ids.iter().map(|&id| vec![id]).collect()
            } else {
                self.store.windows(&ids, before + 1, after + 1)?
            };
            // The rows this group may need, in one read (a store across
            // the network pays per round trip, not per row).
            let wanted: Vec<MemoryId> = ids
                .iter()
                .zip(&windows)
                .filter(|(id, w)| packer.may_take(**id, w))
                .flat_map(|(_, w)| w.iter().copied())
                .filter(|m| !rows.contains_key(m))
                .collect();
            self.prefetch_rows(&mut rows, &wanted, reader, filter)?;
            for (id, w) in ids.into_iter().zip(windows) {
                // Rows only for hits that could be taken (once the excerpts
                // are all there, only hits next to one can join).
                if !packer.may_take(id, &w) || !self.load_row(&mut rows, id, reader, filter)? {
                    continue; // not wanted, or deleted since ranked
                }
                let source = rows
                    .get(&id)
                    .filter(|m| m.provenance.chunk_count.is_some_and(|n| n > 1))
                    .and_then(|m| m.provenance.source_id);
                if self.retrieval.one_result_per_text
                    && source.is_some_and(|s| sources_taken.contains(&s))
                {
                    continue;
                }
                let mut cost = |m| self.message_tokens(&mut rows, m, reader, filter);
                if packer.offer(id, &w, &mut cost)? {
                    sources_taken.extend(source);
                }
            }
            if packer.is_full() {
                break;
            }
        }
        if !req.context.is_none() {
            // Context rows are read as the packer asks: only what it weighs.
            let mut cost = |m| self.message_tokens(&mut rows, m, reader, filter);
            packer.add_context((before, after), &mut cost)?;
        }
        Ok(packer
            .finish()
            .into_iter()
            .filter_map(|e| {
                let best = by_id.get(e.hits.first()?)?;
                let mut memory = rows.get(&best.id)?.clone();
                status_at(&mut memory, now);
                let window: Vec<Memory> = e
                    .members
                    .iter()
                    .filter_map(|m| rows.get(m).cloned())
                    .map(|mut m| {
                        status_at(&mut m, now);
                        m
                    })
                    .collect();
                let shared_via = if req.scope.matches(&memory.scope) {
                    None
                } else {
                    reader.visible.grant_for(&memory).map(|g| g.id)
                };
                let tokens = crate::pack::HEADER_TOKENS
                    + e.members
                        .iter()
                        .filter_map(|m| rows.get(m))
                        .map(line_tokens)
                        .sum::<usize>();
                Some(SearchHit {
                    tokens,
                    memory,
                    score: best.score,
                    relevance: crate::relevance::relevance(&best.scores),
                    scores: best.scores,
                    window: if window.len() > 1 { window } else { Vec::new() },
                    matched: e.hits,
                    shared_via,
                })
            })
            .collect())
    }

    /// Reads the rows of `ids` into `rows` in one store call, keeping those
    /// [`Self::load_row`] would keep.
    fn prefetch_rows(
        &self,
        rows: &mut HashMap<MemoryId, Memory>,
        ids: &[MemoryId],
        reader: &Reader<'_>,
        filter: &Filter,
    ) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        for m in self.store.get_many(ids)? {
            if reader.sees(&m)
                && filter.accepts_status(m.status)
                && filter.accepts_expiry(m.expires_at)
                && (filter.as_of.is_some() || filter.accepts_memory_validity(&m))
            {
                rows.insert(m.id, m);
            }
        }
        Ok(())
    }

    /// Tokens message `m` costs in a result (0 if gone or not for the
    /// reader's eyes), reading its row into `rows` if needed.
    fn message_tokens(
        &self,
        rows: &mut HashMap<MemoryId, Memory>,
        m: MemoryId,
        reader: &Reader<'_>,
        filter: &Filter,
    ) -> Result<usize> {
        self.load_row(rows, m, reader, filter)?;
        Ok(rows.get(&m).map_or(0, line_tokens))
    }

    /// Reads the row of `id` into `rows` unless it is there; false when it
    /// does not exist (any more), the reader may not see it (neither its own
    /// nor shared with it) or has a status the filter does not accept (a
    /// deleted message is not shown as context).
    fn load_row(
        &self,
        rows: &mut HashMap<MemoryId, Memory>,
        id: MemoryId,
        reader: &Reader<'_>,
        filter: &Filter,
    ) -> Result<bool> {
        if rows.contains_key(&id) {
            return Ok(true);
        }
        match self.store.get_many(&[id])?.pop() {
            Some(m)
                if reader.sees(&m)
                    && filter.accepts_status(m.status)
                    && filter.accepts_expiry(m.expires_at)
                    && (filter.as_of.is_some() || filter.accepts_memory_validity(&m)) =>
            {
                rows.insert(id, m);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// The memory `id`; with a scope, only if it lies in that scope.
    pub fn get(&self, id: MemoryId, scope: Option<&Scope>) -> Result<Memory> {
        self.store
            .get_many(&[id])?
            .into_iter()
            .find(|m| scope.is_none_or(|s| s.matches(&m.scope)))
            .ok_or_else(|| Error::not_found(format!("memory {id} not found")))
    }

    /// A page of memories in `scope` (all memories when `None`).
    pub fn list(
        &self,
        scope: Option<&Scope>,
        filter: &Filter,
        cursor: Option<&str>,
        limit: usize,
        order: Order,
    ) -> Result<Page> {
        if let Some(s) = scope {
            s.validate()?;
        }
        filter.validate()?;
        let mut page = self.store.list(&ListQuery {
            scope,
            filter: &self.resolve(filter),
            cursor,
            limit,
            order,
        })?;
        let now = self.now();
        for m in &mut page.memories {
            status_at(m, now);
        }
        Ok(page)
    }

    /// The scopes (user, agent, session triples) inside `within` holding
    /// memories that match `filter`, with their counts, the most recently
    /// recorded first: at most `limit` (1..=10,000) of them, and whether
    /// there are more.
    pub fn scopes(
        &self,
        within: Option<&Scope>,
        filter: &Filter,
        limit: usize,
    ) -> Result<(Vec<crate::store::ScopeSummary>, bool)> {
        filter.validate()?;
        if !(1..=10_000).contains(&limit) {
            return Err(Error::invalid("limit must be 1..=10000"));
        }
        // One more than asked says whether there are more.
        let mut scopes = self
            .store
            .scopes(within, &self.resolve(filter), limit + 1)?;
        let more = scopes.len() > limit;
        scopes.truncate(limit);
        Ok((scopes, more))
    }

    /// `filter` with "holds now" judged at this engine's clock.
    pub(crate) fn resolve(&self, filter: &Filter) -> Filter {
        let mut f = filter.clone();
        if f.as_of.is_none() && !f.all_versions {
            f.now = Some(self.clock.now());
        }
        f
    }

    /// The memory `id` (in `scope`, when given) for a lifecycle change:
    /// not an earlier version.
    pub(crate) fn changeable(&self, id: MemoryId, scope: Option<&Scope>) -> Result<Memory> {
        let m = self.get(id, scope)?;
        if let Some(of) = m.version_of {
            return Err(Error::invalid(format!(
                "memory {id} is an earlier version of {of}; change {of} instead"
            )));
        }
        Ok(m)
    }

    pub(crate) fn event(
        &self,
        m: &Memory,
        kind: EventKind,
        origin: &str,
        reason: Option<String>,
    ) -> MemoryEvent {
        MemoryEvent {
            memory_id: m.id,
            at: millis(self.clock.now()),
            kind,
            origin: origin.to_owned(),
            reason,
            request_id: Some(Uuid::now_v7()),
            detail: Map::new(),
        }
    }

    /// Changes a memory without losing what it said: the id keeps showing
    /// the latest version, the state it replaces is kept as an earlier
    /// version valid until the change took effect (`patch.valid_from`,
    /// default now), and the change is logged. Content changes are
    /// re-embedded and re-indexed. A patch that changes nothing changes
    /// nothing.
    pub fn update(
        &self,
        id: MemoryId,
        scope: Option<&Scope>,
        patch: MemoryPatch,
    ) -> Result<Memory> {
        self.revise(id, scope, patch, "api", Vec::new(), None)
    }

    /// [`Hippo::update`] by `origin` (`api`, `llm`, ...), the new version
    /// derived from `derived_from` (e.g. the turns that said so).
    pub(crate) fn revise(
        &self,
        id: MemoryId,
        scope: Option<&Scope>,
        patch: MemoryPatch,
        origin: &str,
        derived_from: Vec<MemoryId>,
        step: Option<crate::jobs::JobStep>,
    ) -> Result<Memory> {
        let old = self.changeable(id, scope)?;
        if old.status == Status::Deleted {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("memory {id} is deleted; restore it first"),
            ));
        }
        let mut m = old.clone();
        let mut vector = None;
        if let Some(content) = patch.content.filter(|c| *c != old.content) {
            if content.trim().is_empty() {
                return Err(Error::invalid("content must not be empty"));
            }
            if content.len() > self.limits.max_content_bytes {
                return Err(Error::too_large(format!(
                    "content exceeds {} bytes",
                    self.limits.max_content_bytes
                )));
            }
            m.content_hash = content_hash(&content);
            m.content = content;
        }
        if let Some(md) = patch.metadata {
            if Value::Object(md.clone()).to_string().len() > self.limits.max_metadata_bytes {
                return Err(Error::too_large(format!(
                    "metadata exceeds {} bytes",
                    self.limits.max_metadata_bytes
                )));
            }
            m.metadata = md;
        }
        if let Some(t) = patch.event_time {
            m.event_time = Some(millis(t));
        }
        if m.content == old.content && m.metadata == old.metadata && m.event_time == old.event_time
        {
            return Ok(old);
        }
        let now = millis(self.clock.now());
        let from = millis(patch.valid_from.unwrap_or(now));
        if from < old.valid_since() {
            return Err(Error::invalid(format!(
                "valid_from must not be before the current version's ({})",
                old.valid_since().to_rfc3339()
            )));
        }
        if m.content != old.content {
            vector = Some(
                self.embedder
                    .embed(&embed_text_of(m.actor.name.as_deref(), &m.content))?,
            );
            m.embedding_model = Some(self.embedder.model_id().to_owned());
            // New words are judged as a new memory's are: a revision cannot
            // slip instructions past the detector, and an approval was for
            // the old words only.
            if let (Some(check), Some(v)) = (&self.injection, &vector) {
                m.flags = check.judge(&m.content, Some(v));
                match (m.flags.is_empty(), m.status) {
                    (false, Status::Active) => m.status = Status::Quarantined,
                    (true, Status::Quarantined) => m.status = Status::Active,
                    _ => {}
                }
            }
        }
        let request_id = Uuid::now_v7();
        m.valid_from = Some(from);
        m.valid_to = None;
        m.updated_at = now;
        m.provenance.request_id = Some(request_id);
        m.provenance.written_by = Some(crate::audit::current_actor());
        if !derived_from.is_empty() {
            m.provenance.derived_from = derived_from;
        }
        m.dedup_key = dedup_key(&m, "");
        let jobs = self.consolidation_jobs(&[&old, &m]);
        // Applied only to the state it was computed from (see
        // `Update::expected`): a revision racing another is refused, not lost.
        let expected = Some(Box::new(old.clone()));
        let previous = Memory {
            id: MemoryId::now_v7(),
            valid_from: Some(old.valid_since()),
            valid_to: Some(from),
            version_of: Some(old.id),
            dedup_key: None,
            expires_at: None,
            usage: Default::default(),
            ..old
        };
        let mut event = self.event(&m, EventKind::Revised, origin, patch.reason);
        event.request_id = Some(request_id);
        event.detail.insert(
            "previous_version".into(),
            Value::String(previous.id.to_string()),
        );
        self.store.update(Update {
            memory: m.clone(),
            vector,
            previous: Some(previous),
            events: vec![event],
            job_step: step,
            jobs,
            expected,
        })?;
        Ok(m)
    }

    /// Sets a memory's status and logs why.
    fn set_status(
        &self,
        id: MemoryId,
        scope: Option<&Scope>,
        status: Status,
        kind: EventKind,
        origin: &str,
        reason: Option<String>,
    ) -> Result<Memory> {
        let m = self.changeable(id, scope)?;
        self.change_status(m, status, kind, origin, reason, Map::new())
    }

    /// Sets the status of `m` (as just read, not an earlier version), logs
    /// why with `detail`, and queues the rebuild of digests that quote it.
    pub(crate) fn change_status(
        &self,
        mut m: Memory,
        status: Status,
        kind: EventKind,
        origin: &str,
        reason: Option<String>,
        detail: Map<String, Value>,
    ) -> Result<Memory> {
        if m.status == status {
            return Ok(m);
        }
        let read = m.clone();
        if m.status == Status::Archived && status == Status::Active {
            // Brought back from the archive: it counts as used now, or
            // maintenance would archive a faded memory again at once.
            m.usage.reinforced_at = Some(millis(self.clock.now()));
        }
        m.status = status;
        m.updated_at = millis(self.clock.now());
        let mut event = self.event(&m, kind, origin, reason);
        event.detail = detail;
        // Applied only to the state read: a status change racing another
        // change is refused (409, retry), never overwrites it.
        self.store.update(Update {
            jobs: self.consolidation_jobs(&[&m]),
            events: vec![event],
            ..Update::in_place_of(&read, m.clone(), None)
        })?;
        Ok(m)
    }

    /// Soft-deletes a memory (in `scope`, when given): it leaves search and
    /// listings but stays restorable ([`Hippo::restore`]) and keeps its
    /// history. [`Hippo::erase`] removes it for good.
    pub fn delete(&self, id: MemoryId, scope: Option<&Scope>) -> Result<Memory> {
        self.set_status(id, scope, Status::Deleted, EventKind::Deleted, "api", None)
    }

    /// Makes a deleted or archived memory active again (a quarantined one
    /// that was never approved goes back to quarantine).
    pub fn restore(&self, id: MemoryId, scope: Option<&Scope>) -> Result<Memory> {
        let m = self.changeable(id, scope)?;
        if m.status == Status::Quarantined {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("memory {id} is quarantined; approve it instead"),
            ));
        }
        let to = if m.held_back() {
            Status::Quarantined
        } else {
            Status::Active
        };
        self.change_status(m, to, EventKind::Restored, "api", None, Map::new())
    }

    /// Lets a quarantined memory into retrieval: a person judged that what
    /// the detector flagged is not an instruction to obey. Logged with the
    /// flags; the flags stay on the memory, marked approved.
    pub fn approve(&self, id: MemoryId, scope: Option<&Scope>) -> Result<Memory> {
        let mut m = self.changeable(id, scope)?;
        if m.status != Status::Quarantined {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("memory {id} is not quarantined"),
            ));
        }
        let mut detail = Map::new();
        detail.insert("flags".into(), serde_json::json!(m.flags));
        m.flags.push(APPROVED.to_owned());
        self.change_status(m, Status::Active, EventKind::Approved, "api", None, detail)
    }

    /// Records that a memory stopped holding at `at` (default now) without
    /// a successor ("I no longer have a car"): default search stops
    /// returning it, `as_of` an earlier time still does.
    pub fn invalidate(
        &self,
        id: MemoryId,
        scope: Option<&Scope>,
        at: Option<DateTime<Utc>>,
        reason: Option<String>,
    ) -> Result<Memory> {
        self.end_validity(id, scope, at, reason, "api", None)
    }

    pub(crate) fn end_validity(
        &self,
        id: MemoryId,
        scope: Option<&Scope>,
        at: Option<DateTime<Utc>>,
        reason: Option<String>,
        origin: &str,
        step: Option<crate::jobs::JobStep>,
    ) -> Result<Memory> {
        let mut m = self.changeable(id, scope)?;
        let at = millis(at.unwrap_or_else(|| self.clock.now()));
        if at < m.valid_since() {
            return Err(Error::invalid(format!(
                "the end of validity must not be before its start ({})",
                m.valid_since().to_rfc3339()
            )));
        }
        if m.valid_to.is_some_and(|t| t <= at) {
            return Ok(m); // already ended by then
        }
        let read = m.clone();
        m.valid_to = Some(at);
        m.updated_at = millis(self.clock.now());
        let event = self.event(&m, EventKind::Invalidated, origin, reason);
        self.store.update(Update {
            events: vec![event],
            job_step: step,
            jobs: self.consolidation_jobs(&[&m]),
            ..Update::in_place_of(&read, m.clone(), None)
        })?;
        Ok(m)
    }

    /// Stores a memory derived from others (an extracted fact, a summary)
    /// as one write, optionally a job step. Returns it, or the id of the
    /// identical memory it duplicates.
    pub(crate) fn add_derived(
        &self,
        derived: Derived<'_>,
        step: Option<crate::jobs::JobStep>,
    ) -> Result<std::result::Result<Memory, MemoryId>> {
        let Derived {
            id,
            scope,
            kind,
            content,
            metadata,
            derived_from,
            event_time,
        } = derived;
        let mut item = AddItem::text(scope.clone(), content);
        item.kind = Some(kind);
        item.event_time = event_time;
        item.metadata = metadata;
        self.validate_item(&item)?;
        let (mut drafts, _) = self.draft(vec![item], Uuid::now_v7())?;
        if drafts.len() != 1 {
            return Err(Error::invalid("a derived memory must fit one chunk"));
        }
        let mut d = drafts.remove(0);
        if let Some(id) = id {
            d.memory.id = id;
        }
        d.memory.provenance.derived_from = derived_from;
        // Extraction searched for this very text just before: its vector
        // is usually in the query cache.
        let vector = self.query_vector(&d.embed_text)?.0.as_ref().clone();
        // A model can be talked into writing instructions too.
        if let Some(check) = &self.injection {
            let flags = check.judge(content, Some(&vector));
            if !flags.is_empty() {
                d.memory.status = Status::Quarantined;
                d.memory.flags = flags;
            }
        }
        if let Some(merge) = self.policies.of(kind).merge_above {
            if let Some((existing, cos)) = self.nearest_current(scope, kind, &vector)? {
                if cos >= merge && crate::text::same_particulars(&existing.content, content) {
                    self.store.insert(InsertBatch {
                        events: vec![self.near_duplicate_event(&d.memory, existing.id, cos)],
                        job_step: step,
                        ..Default::default()
                    })?;
                    return Ok(Err(existing.id));
                }
            }
        }
        let outcome = self.store.insert(InsertBatch {
            jobs: self.consolidation_jobs(&[&d.memory]),
            memories: vec![NewMemory {
                memory: d.memory.clone(),
                vector: Some(vector),
            }],
            job_step: step,
            ..Default::default()
        })?;
        Ok(match outcome.duplicates.first() {
            Some(&(_, existing)) => Err(existing),
            None => Ok(d.memory),
        })
    }

    /// Removes a memory for good, with its earlier versions and history,
    /// and everything derived from it (facts extracted from it, digests
    /// and profiles quoting it, transitively; a chunk takes its whole input
    /// with it). Digests it fed are rebuilt without it by a job. Nothing of
    /// it stays in the store's files once [`Hippo::compact`] has run (the
    /// log is checkpointed at once; compaction also rewrites free space).
    pub fn erase(&self, id: MemoryId, scope: Option<&Scope>) -> Result<()> {
        let m = self.get(id, scope)?;
        let id = m.version_of.unwrap_or(m.id);
        let current = self.get(id, None)?;
        self.erase_with_derived(vec![current])
    }

    /// The current memories of `ids`, an earlier version standing for its
    /// memory, each once.
    fn current_of(&self, ids: &[MemoryId]) -> Result<Vec<Memory>> {
        let rows = self.store.get_many(ids)?;
        let roots: std::collections::BTreeSet<MemoryId> =
            rows.iter().map(|m| m.version_of.unwrap_or(m.id)).collect();
        let (current, _): (Vec<Memory>, Vec<Memory>) =
            rows.into_iter().partition(|m| m.version_of.is_none());
        let missing: Vec<MemoryId> = roots
            .iter()
            .filter(|r| !current.iter().any(|m| m.id == **r))
            .copied()
            .collect();
        let mut out = current;
        out.extend(self.store.get_many(&missing)?);
        Ok(out)
    }

    /// Erases `roots` (current versions) and what was derived from them.
    fn erase_with_derived(&self, roots: Vec<Memory>) -> Result<()> {
        let mut seen: std::collections::HashSet<MemoryId> = roots.iter().map(|m| m.id).collect();
        let mut all = roots;
        let mut frontier: Vec<MemoryId> = all.iter().map(|m| m.id).collect();
        while !frontier.is_empty() {
            let derived = self.store.derived_from_any(&frontier)?;
            let new: Vec<Memory> = self
                .current_of(&derived)?
                .into_iter()
                .filter(|m| seen.insert(m.id))
                .collect();
            frontier = new.iter().map(|m| m.id).collect();
            all.extend(new);
        }
        let mut touched = crate::consolidate::Touched::by(&all.iter().collect::<Vec<_>>());
        for m in &all {
            touched.rebuild(m);
        }
        let ids: Vec<MemoryId> = all.iter().map(|m| m.id).collect();
        if self.store.delete(&ids)? == 0 {
            return Err(Error::not_found("memory not found"));
        }
        if self.consolidation {
            if let Some(job) = touched.job(millis(self.clock.now()) + self.consolidation_delay) {
                self.store.insert(InsertBatch {
                    jobs: vec![job],
                    ..Default::default()
                })?;
            }
        }
        Ok(())
    }

    /// Rolls back everything `actor` (an audit actor such as `key:<id>`)
    /// added: each memory it wrote is erased with what was derived from it
    /// (see [`Hippo::erase`]). Changes it made to other memories stay in
    /// their history. Returns how many memories were erased.
    pub fn rollback_actor(&self, actor: &str) -> Result<u64> {
        let mut written: Vec<MemoryId> = Vec::new();
        let mut after = 0;
        loop {
            let page = self.store.audit(after, 1000)?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            written.extend(
                page.iter()
                    .filter(|e| e.actor == actor && e.action == "add")
                    .filter_map(|e| e.target.parse::<MemoryId>().ok()),
            );
        }
        let mut n = 0;
        for id in written {
            match self.erase(id, None) {
                Ok(()) => n += 1,
                // Erased already (by hand, or as derived from another).
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    /// Rewrites the store so that erased data is in none of its files (see
    /// [`Store::compact`]).
    pub fn compact(&self) -> Result<()> {
        self.store.compact()
    }

    /// A memory's versions (oldest first, the current one last) and its
    /// event log. `id` may name the memory or any of its earlier versions.
    pub fn history(&self, id: MemoryId, scope: Option<&Scope>) -> Result<History> {
        let m = self.read(id, scope)?;
        let memory_id = m.version_of.unwrap_or(m.id);
        let (versions, events) = self.store.history(memory_id)?;
        Ok(History {
            memory_id,
            versions,
            events,
        })
    }

    /// The event log of memory `id` (the id that shows its latest
    /// version), oldest first: what export writes next to the memory.
    pub fn events(&self, id: MemoryId) -> Result<Vec<MemoryEvent>> {
        Ok(self.store.history(id)?.1)
    }

    /// Restores exported event log entries (see [`Hippo::events`]) of
    /// stored memories; entries already logged (same memory, time, kind and
    /// request) and entries of memories not stored are skipped, so an
    /// import can be repeated. Returns how many were written.
    pub fn import_events(&self, events: Vec<MemoryEvent>) -> Result<usize> {
        let mut by_memory: std::collections::BTreeMap<MemoryId, Vec<MemoryEvent>> =
            Default::default();
        for e in events {
            by_memory.entry(e.memory_id).or_default().push(e);
        }
        let mut fresh = Vec::new();
        for (id, list) in by_memory {
            let (versions, logged) = self.store.history(id)?;
            if versions.is_empty() {
                continue;
            }
            let key = |e: &MemoryEvent| (e.at, e.kind, e.request_id);
            let seen: std::collections::HashSet<_> = logged.iter().map(key).collect();
            fresh.extend(list.into_iter().filter(|e| !seen.contains(&key(e))));
        }
        let n = fresh.len();
        if n > 0 {
            self.store.insert(InsertBatch {
                events: fresh,
                ..Default::default()
            })?;
        }
        Ok(n)
    }

    /// Erases every memory in `scope` (all versions and statuses, with
    /// their history, jobs and rejection records) and what other scopes
    /// derived from them (see [`Hippo::erase`]); returns how many memories
    /// of the scope there were.
    pub fn delete_scope(&self, scope: &Scope) -> Result<u64> {
        scope.validate()?;
        // Every row: all statuses and versions, expired or not (no `now`).
        let filter = Filter {
            statuses: Status::ALL.to_vec(),
            all_versions: true,
            ..Filter::default()
        };
        let mut inside: Vec<MemoryId> = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self.store.list(&ListQuery {
                scope: Some(scope),
                filter: &filter,
                cursor: cursor.as_deref(),
                limit: 1000,
                order: Order::Ascending,
            })?;
            inside.extend(page.memories.iter().map(|m| m.id));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        // Versions share their memory's scope, so scope alone tells inside
        // from outside.
        let outside: Vec<Memory> = self
            .current_of(&self.store.derived_from_any(&inside)?)?
            .into_iter()
            .filter(|m| !scope.matches(&m.scope))
            .collect();
        let n = self.store.delete_scope(scope)?;
        if !outside.is_empty() {
            self.erase_with_derived(outside)?;
        }
        Ok(n)
    }

    /// Embeds memories that lack a vector of the active model (after a model
    /// switch or an import without vectors); returns how many were embedded.
    pub fn reembed(&self, batch: usize, mut progress: impl FnMut(usize)) -> Result<usize> {
        let mut done = 0;
        loop {
            let ms = self.store.missing_vectors(batch.max(1))?;
            if ms.is_empty() {
                return Ok(done);
            }
            let texts: Vec<String> = ms
                .iter()
                .map(|m| embed_text_of(m.actor.name.as_deref(), &m.content))
                .collect();
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let vectors = self.embedder.embed_batch(&refs)?;
            for (read, v) in ms.into_iter().zip(vectors) {
                let mut m = read.clone();
                m.embedding_model = Some(self.embedder.model_id().to_owned());
                match self.store.update(Update::in_place_of(&read, m, Some(v))) {
                    Ok(()) => done += 1,
                    // Changed meanwhile: the next round reads it again if
                    // it still lacks a vector.
                    Err(e) if e.is_concurrent_change() => {}
                    Err(e) => return Err(e),
                }
            }
            progress(done);
        }
    }

    /// The whole text of a chunked input (chunks name it in `provenance.source_id`).
    pub fn source(&self, id: MemoryId) -> Result<Option<Source>> {
        self.store.source(id)
    }

    /// Restores sources (from an export) so imported chunks keep their whole
    /// text; sources already present are left as they are.
    pub fn import_sources(&self, sources: Vec<Source>) -> Result<()> {
        for s in &sources {
            s.scope.validate()?;
            if s.content.is_empty() {
                return Err(Error::invalid(format!("source {}: empty content", s.id)));
            }
        }
        self.store.insert(InsertBatch {
            memories: Vec::new(),
            sources,
            ..Default::default()
        })?;
        Ok(())
    }

    /// Store counts.
    pub fn stats(&self) -> Result<StoreStats> {
        self.store.stats()
    }
}

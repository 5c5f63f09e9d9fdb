//! Consolidation without an LLM: a digest per conversation session and a
//! timeline per named entity, kept as `summary` memories linked to their
//! sources (`provenance.derived_from`), searchable like any memory.
//!
//! Incremental: every write (and every change that hides or alters a
//! memory, and every erase) queues, in its own transaction, a `consolidate`
//! job naming only what it touched: its exact session scope and the names
//! it mentions (`text::entities`: mid-sentence capitalised runs, minus
//! calendar words and stopwords). The job rebuilds those digests from the
//! current, active memories and leaves the rest alone. Rebuilding is
//! idempotent, so a job that runs twice (after a crash) does no harm, and a
//! digest never quotes a memory that was deleted, archived or superseded
//! once its job has run.
//!
//! Method without an LLM: extractive. A session digest names its
//! participants, dates and the names mentioned twice or more, and quotes up
//! to six central lines: the messages closest to the session's mean vector,
//! chosen by maximal marginal relevance so they do not repeat each other
//! (the centroid method of Radev et al., 2004, with MMR selection). An
//! entity timeline lists, oldest first, the latest 20 memories of an owner
//! that mention the name; there is none for a conversation participant, a
//! nickname that begins a speaker's name, or a word mostly written in lower
//! case. Digests carry `metadata.digest` (`session` / `entity`), are changed
//! in place (no versions), and have retrieval weight 0.6, so they surface
//! when clearly the best match.
//!
//! With an LLM the session digest's quoted lines are replaced by the model's
//! summary of the session, and a timeline of a name mentioned at least
//! [`MIN_TOPIC_MENTIONS`] times opens with the model's summary of what is
//! known about it. Only the summary's sentences grounded in what was said
//! are kept, and a summary mostly invented or unreadable is not used (see
//! [`crate::extract::grounded_summary`]): the extractive digest stands.
//! Each digest records a fingerprint of its sources (`metadata.fingerprint`:
//! their ids, text hashes, times, speakers), so a job that finds nothing
//! changed asks the model nothing: this makes the jobs idempotent *and*
//! cheap. `hippo serve` delays these jobs (`consolidation_delay_secs`, 30 s
//! with an LLM) so one call covers a burst of turns.
//!
//! `is_digest` keeps digests out of `Touched::by` (no job loops) and out of
//! extraction's related memories (the model never updates a profile it did
//! not write). The per-owner profile (see [`crate::profile`]) is rebuilt by
//! the same jobs.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::engine::Hippo;
use crate::error::{Error, Result};
use crate::extract::{grounded_summary, Cost};
use crate::jobs::NewJob;
use crate::llm::parse::json_value;
use crate::model::{
    content_hash, millis, Filter, Memory, MemoryId, MemoryKind, Provenance, Scope, Status,
};
use crate::store::{InsertBatch, KeywordQuery, ListQuery, NewMemory, Order, Update};

/// Job kind of consolidation.
pub const CONSOLIDATE_JOB: &str = "consolidate";

/// Metadata key naming what a digest summarises (`session` or `entity`).
pub const DIGEST_KEY: &str = "digest";

/// Most lines a session digest quotes.
const MAX_KEY_LINES: usize = 6;
/// Most entries an entity timeline lists (the latest ones).
const MAX_TIMELINE: usize = 20;
/// Most source ids a digest links (the latest ones).
const MAX_SOURCES: usize = 500;
/// Most messages of one session read for its digest.
const MAX_SESSION: usize = 5000;
/// Longest quoted line, in characters.
const MAX_LINE_CHARS: usize = 200;
/// Most conversation text shown to the model for one summary, in bytes
/// (the latest lines are kept).
const MAX_PROMPT_BYTES: usize = 12_000;
/// Longest summary used, in characters.
const MAX_SUMMARY_CHARS: usize = 2_000;
/// Least mentions of a name for an LLM topic summary of its timeline.
pub const MIN_TOPIC_MENTIONS: usize = 3;
/// Metadata key of a digest's source fingerprint.
pub const FINGERPRINT_KEY: &str = "fingerprint";

const SESSION_PROMPT: &str = "You maintain long-term memory for an assistant. Summarise the \
conversation below in at most five sentences: who took part, what happened, what they shared, decided \
or planned, keeping names, places and dates. Use only what the conversation says. Answer with JSON only: \
{\"summary\": \"...\"}.";

const TOPIC_PROMPT: &str = "You maintain long-term memory for an assistant. Summarise in at most \
three sentences what the dated lines below say about the name given, oldest first, keeping dates. Use \
only what the lines say. Answer with JSON only: {\"summary\": \"...\"}.";

/// True for memories that consolidation writes (digests, timelines, the
/// profile): they are rebuilt from their sources, never sources themselves.
pub fn is_digest(m: &Memory) -> bool {
    m.metadata.contains_key(DIGEST_KEY)
}

/// A fingerprint of the memories a digest is built from: what they say,
/// who said it and when.
pub(crate) fn fingerprint(ms: &[Memory]) -> String {
    let mut text = String::new();
    for m in ms {
        text.push_str(&format!(
            "{}|{}|{:?}|{:?}\n",
            m.id,
            m.content_hash,
            m.event_time.map(|t| t.timestamp_millis()),
            m.actor.name
        ));
    }
    content_hash(&text)
}

/// Reads `{"summary": "..."}` (or `{"profile": ...}`) from a model answer;
/// `None` when missing, empty or too long.
pub(crate) fn read_summary(answer: &str, field: &str) -> Option<String> {
    let v = json_value(answer)?;
    let text = v.get(field)?.as_str()?.trim();
    (!text.is_empty() && text.chars().count() <= MAX_SUMMARY_CHARS).then(|| text.to_owned())
}

/// What a consolidation job is to rebuild.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Touched {
    /// Exact scopes of sessions whose digest is stale.
    #[serde(default)]
    pub sessions: BTreeSet<Scope>,
    /// `(owner, name)` pairs whose timeline is stale.
    #[serde(default)]
    pub entities: BTreeSet<(Scope, String)>,
    /// Owners whose profile is stale.
    #[serde(default)]
    pub profiles: BTreeSet<Scope>,
}

impl Touched {
    /// What a change to memories `ms` makes stale. Summaries and digests
    /// touch nothing.
    pub fn by(ms: &[&Memory]) -> Touched {
        let mut t = Touched::default();
        for m in ms {
            if m.kind == MemoryKind::Summary || is_digest(m) {
                continue;
            }
            if m.kind == MemoryKind::Message && m.scope.session_id.is_some() {
                t.sessions.insert(m.scope.clone());
            }
            let owner = crate::engine::owner_of(&m.scope);
            if m.kind == MemoryKind::Profile {
                t.profiles.insert(owner.clone());
            }
            for name in crate::text::entities(&m.content) {
                t.entities.insert((owner.clone(), name));
            }
        }
        t
    }

    /// Adds what must be rebuilt when digest `m` itself goes (erased with
    /// a memory it quoted): its session, its name's timeline, its owner's
    /// profile. Not a digest: nothing.
    pub fn rebuild(&mut self, m: &Memory) {
        match m.metadata.get(DIGEST_KEY).and_then(Value::as_str) {
            Some("session") => {
                self.sessions.insert(m.scope.clone());
            }
            Some("entity") => {
                if let Some(name) = m.metadata.get("entity").and_then(Value::as_str) {
                    self.entities.insert((m.scope.clone(), name.to_owned()));
                }
            }
            Some(crate::profile::PROFILE_DIGEST) => {
                self.profiles.insert(m.scope.clone());
            }
            _ => {}
        }
    }

    /// True when there is nothing to rebuild.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty() && self.entities.is_empty() && self.profiles.is_empty()
    }

    /// The job that rebuilds it, if anything (`None` when empty).
    pub fn job(&self, at: DateTime<Utc>) -> Option<NewJob> {
        if self.is_empty() {
            return None;
        }
        let scope = self
            .sessions
            .iter()
            .next()
            .or(self.entities.iter().next().map(|(o, _)| o))
            .or(self.profiles.iter().next())
            .cloned()
            .unwrap_or_default();
        let payload = match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        Some(NewJob {
            kind: CONSOLIDATE_JOB.into(),
            scope,
            payload,
            at,
        })
    }
}

/// What a consolidation run rebuilt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ConsolidationReport {
    /// Session digests written or changed.
    pub sessions: usize,
    /// Entity timelines written or changed.
    pub entities: usize,
    /// Profiles written or changed.
    pub profiles: usize,
}

impl Hippo {
    /// Rebuilds the digests `touched` names (see the module docs).
    pub fn consolidate(&self, touched: &Touched) -> Result<ConsolidationReport> {
        self.consolidate_counting(touched, &mut Cost::default())
    }

    /// [`Hippo::consolidate`], adding what the LLM cost to `cost`.
    fn consolidate_counting(
        &self,
        touched: &Touched,
        cost: &mut Cost,
    ) -> Result<ConsolidationReport> {
        let mut report = ConsolidationReport::default();
        for scope in &touched.sessions {
            if erased_meanwhile(self.rebuild_session(scope, cost))? {
                report.sessions += 1;
            }
        }
        for (owner, name) in &touched.entities {
            if erased_meanwhile(self.rebuild_entity(owner, name, cost))? {
                report.entities += 1;
            }
        }
        for owner in &touched.profiles {
            if erased_meanwhile(self.rebuild_profile(owner, cost))? {
                report.profiles += 1;
            }
        }
        Ok(report)
    }

    /// Runs a consolidation job's payload.
    pub(crate) fn run_consolidate(
        &self,
        payload: &Map<String, Value>,
        cost: &mut Cost,
    ) -> Result<()> {
        let touched: Touched = serde_json::from_value(Value::Object(payload.clone()))
            .map_err(|e| Error::invalid(format!("bad consolidation job: {e}")))?;
        self.consolidate_counting(&touched, cost)?;
        Ok(())
    }

    /// The model's summary of `lines` (`SESSION_PROMPT` or `TOPIC_PROMPT`),
    /// when an LLM is configured and its answer is readable and grounded in
    /// `sources`.
    fn llm_summary(
        &self,
        system: &str,
        lines: String,
        sources: &[Memory],
        cost: &mut Cost,
    ) -> Result<Option<String>> {
        let Some(llm) = self.llm() else {
            return Ok(None);
        };
        let answer = self.ask(llm.as_ref(), "summary", system, lines, cost)?;
        match read_summary(&answer, "summary") {
            Some(text) => match grounded_summary(&text, sources) {
                Some(text) => Ok(Some(text)),
                None => {
                    cost.ungrounded_facts += 1;
                    self.llm_meter().unusable("summary");
                    Ok(None)
                }
            },
            None => {
                cost.unreadable_answers += 1;
                self.llm_meter().unusable("summary");
                Ok(None)
            }
        }
    }

    /// The active, currently valid memories in `scope` of `kinds`, oldest
    /// first, up to `max`.
    pub(crate) fn current(
        &self,
        scope: &Scope,
        kinds: &[MemoryKind],
        max: usize,
    ) -> Result<Vec<Memory>> {
        let filter = self.resolve(&Filter {
            kinds: kinds.to_vec(),
            ..Filter::default()
        });
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        while out.len() < max {
            let page = self.store().list(&ListQuery {
                scope: Some(scope),
                filter: &filter,
                cursor: cursor.as_deref(),
                limit: 1000.min(max - out.len()),
                order: Order::Ascending,
            })?;
            out.extend(page.memories);
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        Ok(out)
    }

    fn rebuild_session(&self, scope: &Scope, cost: &mut Cost) -> Result<bool> {
        let messages: Vec<Memory> = self
            .current(scope, &[MemoryKind::Message], MAX_SESSION)?
            .into_iter()
            .filter(|m| m.scope == *scope)
            .collect();
        let key = json!({DIGEST_KEY: "session"});
        if messages.len() < 3 {
            return self.retire_digest(scope, &key);
        }
        let print = fingerprint(&messages);
        if self.up_to_date(scope, &key, &print)? {
            return Ok(false);
        }
        let ids: Vec<MemoryId> = messages.iter().map(|m| m.id).collect();
        let mut speakers: Vec<&str> = Vec::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        for m in &messages {
            if let Some(n) = m.actor.name.as_deref().or(m.actor.role.as_deref()) {
                if !speakers.contains(&n) {
                    speakers.push(n);
                }
            }
            for e in crate::text::entities(&m.content) {
                *names.entry(e).or_default() += 1;
            }
        }
        let mut top: Vec<(String, usize)> = names
            .into_iter()
            .filter(|(n, c)| *c >= 2 && !speakers.contains(&n.as_str()))
            .collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let when = |m: &Memory| m.event_time.unwrap_or(m.recorded_at).date_naive();
        let (first, last) = (when(&messages[0]), when(&messages[messages.len() - 1]));
        let mut text = format!(
            "Conversation {} ({}{}): {} messages between {}.",
            scope.session_id.as_deref().unwrap_or(""),
            first,
            if last != first {
                format!(" to {last}")
            } else {
                String::new()
            },
            messages.len(),
            speakers.join(", ")
        );
        if !top.is_empty() {
            let named: Vec<&str> = top.iter().take(8).map(|(n, _)| n.as_str()).collect();
            text.push_str(&format!(" Mentioned: {}.", named.join(", ")));
        }
        let summary = self.llm_summary(
            SESSION_PROMPT,
            crate::extract::conversation_text(tail(&messages, MAX_PROMPT_BYTES)),
            &messages,
            cost,
        )?;
        let method = match summary {
            Some(summary) => {
                text.push(' ');
                text.push_str(&summary);
                "llm"
            }
            None => {
                let vectors = self.store().vectors(&ids)?;
                let k = MAX_KEY_LINES.min(messages.len() / 4 + 1);
                for i in central_lines(&messages, &vectors, k) {
                    text.push_str(&format!(" {}", quote(&messages[i])));
                }
                "extractive"
            }
        };
        let last_time = messages.iter().filter_map(|m| m.event_time).max();
        let meta = digest_metadata(&key, &print, method);
        self.put_digest(scope, meta, text, &ids, last_time)
    }

    /// True when the active digest of `scope` with `key` was built from
    /// sources with fingerprint `print`.
    fn up_to_date(&self, scope: &Scope, key: &Value, print: &str) -> Result<bool> {
        Ok(self.find_digest(scope, key)?.is_some_and(|m| {
            m.status == Status::Active
                && m.metadata.get(FINGERPRINT_KEY).and_then(Value::as_str) == Some(print)
        }))
    }

    fn rebuild_entity(&self, owner: &Scope, name: &str, cost: &mut Cost) -> Result<bool> {
        let key = json!({DIGEST_KEY: "entity", "entity": name});
        let filter = self.resolve(&Filter {
            kinds: vec![
                MemoryKind::Message,
                MemoryKind::Document,
                MemoryKind::Chunk,
                MemoryKind::Fact,
                MemoryKind::Procedure,
            ],
            ..Filter::default()
        });
        let terms = crate::text::query_terms(name);
        let hits = self.store().keyword_candidates(&KeywordQuery {
            scope: owner,
            filter: &filter,
            terms: &terms,
            limit: 1000,
        })?;
        let ids: Vec<MemoryId> = hits.iter().map(|c| c.id).collect();
        let rows = self.store().get_many(&ids)?;
        // A participant of the conversation is mostly addressed ("Thanks,
        // Ana!"), and what they said is the conversation itself: no timeline.
        // A name that begins a speaker's name is their nickname ("Mel").
        let participant = rows.iter().any(|m| {
            m.actor
                .name
                .as_deref()
                .is_some_and(|n| n == name || (name.len() >= 2 && n.starts_with(name)))
        });
        // A capitalised word that is mostly written in lower case is a
        // common word that opened a clause ("Home", "Even"), not a name.
        let lower = name.to_lowercase();
        let common = !name.contains(' ')
            && rows
                .iter()
                .filter(|m| crate::text::mentions(&m.content, &lower))
                .count()
                > rows
                    .iter()
                    .filter(|m| crate::text::mentions(&m.content, name))
                    .count();
        let mut mentions: Vec<Memory> = rows
            .into_iter()
            .filter(|m| owner.matches(&m.scope) && filter.accepts_status(m.status))
            .filter(|m| filter.accepts_expiry(m.expires_at))
            .filter(|m| crate::text::mentions(&m.content, name))
            .collect();
        if mentions.len() < 2 || participant || common {
            return self.retire_digest(owner, &key);
        }
        mentions.sort_by_key(|m| (m.event_time.unwrap_or(m.recorded_at), m.id));
        let print = fingerprint(&mentions);
        if self.up_to_date(owner, &key, &print)? {
            return Ok(false);
        }
        let shown = &mentions[mentions.len().saturating_sub(MAX_TIMELINE)..];
        let dated: Vec<String> = shown
            .iter()
            .map(|m| {
                let day = m.event_time.unwrap_or(m.recorded_at).date_naive();
                format!("{day}: {}", quote(m))
            })
            .collect();
        let lines: String = dated.iter().map(|l| format!(" {l}")).collect();
        let summary = if mentions.len() >= MIN_TOPIC_MENTIONS {
            let prompt = format!("Name: {name}\nLines:\n{}\n", dated.join("\n"));
            self.llm_summary(TOPIC_PROMPT, prompt, shown, cost)?
        } else {
            None
        };
        let mut text = format!("Timeline of {name} ({} mentions):", mentions.len());
        if let Some(s) = &summary {
            text.push_str(&format!(" {s}"));
        }
        text.push_str(&lines);
        let ids: Vec<MemoryId> = mentions.iter().map(|m| m.id).collect();
        let last_time = mentions.iter().filter_map(|m| m.event_time).max();
        let method = if summary.is_some() {
            "llm"
        } else {
            "extractive"
        };
        let meta = digest_metadata(&key, &print, method);
        self.put_digest(owner, meta, text, &ids, last_time)
    }

    /// The stored digest of `scope` with metadata `key`, if any.
    pub(crate) fn find_digest(&self, scope: &Scope, key: &Value) -> Result<Option<Memory>> {
        let kind = if key[DIGEST_KEY] == crate::profile::PROFILE_DIGEST {
            MemoryKind::Profile
        } else {
            MemoryKind::Summary
        };
        let mut filter = self.resolve(&Filter {
            kinds: vec![kind],
            ..Filter::default()
        });
        filter.statuses = vec![Status::Active, Status::Archived];
        filter.metadata = key.as_object().cloned().unwrap_or_default();
        filter.metadata.remove(FINGERPRINT_KEY);
        filter.metadata.remove("method");
        let page = self.store().list(&ListQuery {
            scope: Some(scope),
            filter: &filter,
            cursor: None,
            limit: 100,
            order: Order::Ascending,
        })?;
        Ok(page.memories.into_iter().find(|m| m.scope == *scope))
    }

    /// Writes a digest, or changes the stored one in place (digests are
    /// rebuilt, not revised: no versions). `key` is its metadata (the
    /// digest key with its fingerprint). Returns whether anything changed.
    fn put_digest(
        &self,
        scope: &Scope,
        key: Value,
        content: String,
        sources: &[MemoryId],
        event_time: Option<DateTime<Utc>>,
    ) -> Result<bool> {
        let derived_from = sources[sources.len().saturating_sub(MAX_SOURCES)..].to_vec();
        let existing = self.find_digest(scope, &key)?;
        let metadata: Map<String, Value> = key.as_object().cloned().unwrap_or_default();
        if let Some(mut m) = existing
            .clone()
            .filter(|m| m.content == content && m.status == Status::Active)
        {
            if m.metadata == metadata {
                return Ok(false);
            }
            let read = m.clone();
            m.metadata = metadata;
            m.updated_at = millis(self.now());
            self.store().update(Update::in_place_of(&read, m, None))?;
            return Ok(true);
        }
        let vector = self.embedder().embed(&content)?;
        let now = millis(self.now());
        match existing {
            Some(mut m) => {
                let read = m.clone();
                m.metadata = metadata;
                m.content_hash = content_hash(&content);
                m.content = content;
                m.provenance.derived_from = derived_from;
                m.event_time = event_time.map(millis);
                m.updated_at = now;
                m.status = Status::Active;
                m.embedding_model = Some(self.embedder().model_id().to_owned());
                self.store()
                    .update(Update::in_place_of(&read, m, Some(vector)))?;
            }
            None => self.insert_digest(
                scope,
                MemoryKind::Summary,
                content,
                metadata,
                derived_from,
                event_time,
                vector,
            )?,
        }
        Ok(true)
    }

    /// Stores a new digest (a summary or profile written by consolidation).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn insert_digest(
        &self,
        scope: &Scope,
        kind: MemoryKind,
        content: String,
        metadata: Map<String, Value>,
        derived_from: Vec<MemoryId>,
        event_time: Option<DateTime<Utc>>,
        vector: Vec<f32>,
    ) -> Result<()> {
        let now = millis(self.now());
        let memory = Memory {
            id: MemoryId::now_v7(),
            scope: scope.clone(),
            kind,
            content_hash: content_hash(&content),
            content,
            actor: Default::default(),
            metadata,
            event_time: event_time.map(millis),
            recorded_at: now,
            updated_at: now,
            provenance: Provenance {
                derived_from,
                ..Provenance::default()
            },
            embedding_model: Some(self.embedder().model_id().to_owned()),
            valid_from: None,
            valid_to: None,
            version_of: None,
            status: Status::Active,
            dedup_key: None,
            expires_at: None,
            usage: Default::default(),
            flags: Vec::new(),
        };
        self.store().insert(InsertBatch {
            memories: vec![NewMemory {
                memory,
                vector: Some(vector),
            }],
            ..Default::default()
        })?;
        Ok(())
    }

    /// Archives the digest of `scope` with `key` when too little is left
    /// to summarise; returns whether anything changed.
    pub(crate) fn retire_digest(&self, scope: &Scope, key: &Value) -> Result<bool> {
        match self.find_digest(scope, key)? {
            Some(mut m) if m.status == Status::Active => {
                let read = m.clone();
                m.status = Status::Archived;
                m.updated_at = millis(self.now());
                self.store().update(Update::in_place_of(&read, m, None))?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// A rebuild that found a digest (or source) erased between reading and
/// writing it counts as nothing rebuilt: the erase enqueued a rebuild of its
/// own, which will see the state after it. Retrying this one would only race
/// again (and a job that gives up looks like a failure).
fn erased_meanwhile(rebuilt: Result<bool>) -> Result<bool> {
    match rebuilt {
        Err(e) if e.kind() == crate::error::ErrorKind::NotFound => {
            tracing::debug!(error = %e, "digest rebuild skipped: erased meanwhile");
            Ok(false)
        }
        other => other,
    }
}

/// A digest's metadata: its key, source fingerprint and method.
pub(crate) fn digest_metadata(key: &Value, print: &str, method: &str) -> Value {
    let mut meta = key.clone();
    meta[FINGERPRINT_KEY] = Value::String(print.to_owned());
    meta["method"] = Value::String(method.to_owned());
    meta
}

/// The latest messages whose text fits `max_bytes` (at least one).
fn tail(messages: &[Memory], max_bytes: usize) -> &[Memory] {
    let mut total = 0;
    let mut start = messages.len();
    while start > 0 {
        total += messages[start - 1].content.len() + 20;
        if total > max_bytes && start < messages.len() {
            break;
        }
        start -= 1;
    }
    &messages[start..]
}

/// `speaker: text`, cut to [`MAX_LINE_CHARS`].
fn quote(m: &Memory) -> String {
    let mut text: String = m.content.chars().take(MAX_LINE_CHARS).collect();
    if text.len() < m.content.len() {
        text.push('…');
    }
    let text = text.trim().trim_end_matches(['.', '!', '?']).to_owned();
    match m.actor.name.as_deref().or(m.actor.role.as_deref()) {
        Some(who) => format!("{who}: \"{text}.\""),
        None => format!("\"{text}.\""),
    }
}

/// Indexes of up to `k` lines that best represent the messages: closest to
/// their mean vector, each next one penalised by its similarity to those
/// already chosen (MMR, λ = 0.7); lines with fewer than three content words
/// are not quoted. Returned in conversation order.
fn central_lines(messages: &[Memory], vectors: &[Option<Vec<f32>>], k: usize) -> Vec<usize> {
    let dim = vectors.iter().flatten().map(Vec::len).next().unwrap_or(0);
    let mut centroid = vec![0.0f32; dim];
    for v in vectors.iter().flatten() {
        for (c, x) in centroid.iter_mut().zip(v) {
            *c += x;
        }
    }
    crate::embed::normalize(&mut centroid);
    let mut left: Vec<usize> = (0..messages.len())
        .filter(|&i| {
            vectors[i].is_some() && crate::text::content_word_count(&messages[i].content) >= 3
        })
        .collect();
    let relevance: BTreeMap<usize, f32> = left
        .iter()
        .map(|&i| {
            let v = vectors[i].as_deref().unwrap_or(&[]);
            (i, crate::store::vectors::dot(v, &centroid))
        })
        .collect();
    let mut chosen: Vec<usize> = Vec::new();
    while chosen.len() < k && !left.is_empty() {
        let score = |i: usize| {
            let v = vectors[i].as_deref().unwrap_or(&[]);
            let redundancy = chosen
                .iter()
                .map(|&c| crate::store::vectors::dot(v, vectors[c].as_deref().unwrap_or(&[])))
                .fold(0.0f32, f32::max);
            0.7 * relevance[&i] - 0.3 * redundancy
        };
        let (pos, _) = left
            .iter()
            .enumerate()
            .map(|(p, &i)| (p, score(i)))
            .fold((0, f32::NEG_INFINITY), |a, x| if x.1 > a.1 { x } else { a });
        chosen.push(left.remove(pos));
    }
    chosen.sort_unstable();
    chosen
}

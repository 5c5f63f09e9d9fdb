//! LLM extraction, run as background jobs after the verbatim write is
//! acknowledged: facts are extracted from the new messages, each fact is
//! compared with related memories, and the LLM decides ADD / UPDATE
//! (supersede, keeping the old version) / DELETE (invalidate) / NOOP, with a
//! reason that is recorded.
//!
//! An add with `infer` queues one `extract` job per item in the add's
//! transaction; the add never waits for the model. A job first *plans*: one
//! extraction call over the item's messages gives facts; for each fact a
//! normal search finds the related current facts, profiles and procedures in
//! scope, and a decision call names one by its index in the shown list (the
//! model never types an id). No call is made when nothing is related (ADD)
//! or the fact is already stored word for word (NOOP). The plan is stored on
//! the job (the first plan recorded wins), then *applied* one step per
//! decision, each step's write carrying its [`JobStep`], so a job re-run
//! after a crash neither loses nor repeats a decision. UPDATE is a revision
//! with origin `llm`, `derived_from` = the source turns and `valid_from` =
//! their time; DELETE ends validity. Model output is read with
//! [`crate::llm::parse::json_value`] and validated field by field; what
//! cannot be read is dropped (and counted), never written.
//!
//! Grounding (`grounding`): before any decision, a fact whose content words
//! were mostly not said in its source turns (below `MIN_GROUNDING`, 50 %;
//! word endings may differ, speaker names count) is rejected and recorded in
//! the plan with its share, because small models continue conversations
//! instead of extracting, and invented text must not become memory. Model
//! summaries pass `grounded_summary`: a sentence is kept when at least 70 %
//! of its content words were said in its sources, and a text with fewer than
//! half its sentences kept is dropped.
//!
//! Each call is counted on its job (`cost`: calls, tokens, unreadable,
//! ungrounded) and on the engine's `LlmMeter`. Measured end to end by
//! `hippo eval-ops` (crate `hippo-tools`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::engine::{Derived, Hippo, MemoryPatch};
use crate::error::{Error, ErrorKind, Result};
use crate::jobs::{Job, JobState, JobStep, JobUpdate};
use crate::llm::parse::json_value;
use crate::llm::{ChatMessage, ChatModel};
use crate::model::{Filter, Memory, MemoryId, MemoryKind, Status};
use crate::notes::{Evolution, Note};
use crate::store::InsertBatch;

/// The job kind of an extraction.
pub const EXTRACT_JOB: &str = "extract";

/// Most facts taken from one job's messages.
const MAX_FACTS: usize = 20;
/// Longest fact kept, in bytes.
const MAX_FACT_BYTES: usize = 500;
/// Related memories shown to the decision.
const RELATED: usize = 5;
/// Most tokens asked of the model per call.
const MAX_ANSWER_TOKENS: u32 = 512;
/// Least share of a fact's content words that must appear in the turns it
/// was extracted from (see [`grounding`]); below it the fact is rejected.
pub const MIN_GROUNDING: f32 = 0.5;

const EXTRACT_PROMPT: &str = "You maintain long-term memory for an assistant. From the conversation \
below, extract the facts worth remembering about the people in it: who they are, what they did or plan, \
their preferences, relationships, possessions, places and dates. Each fact is one short, self-contained \
sentence that names the person (never \"I\" or \"you\") and keeps any date that was given. Skip greetings \
and small talk. Use kind \"profile\" for lasting traits (name, job, home, family), \"procedure\" for how \
to do something or a lesson learnt, \"fact\" otherwise. Give each fact up to five keywords, up to three \
lower-case tags (topics such as \"family\" or \"travel\"), and a short context placing it in the person's \
life. Answer with JSON only: {\"facts\": [{\"text\": \"...\", \"kind\": \"fact\", \"keywords\": [\"...\"], \
\"tags\": [\"...\"], \"context\": \"...\"}]} (an empty list when there is nothing to remember).";

const DECIDE_PROMPT: &str = "You maintain long-term memory for an assistant. Compare a new fact with \
the existing memories and decide one operation: ADD (new information), UPDATE (the new fact replaces an \
existing memory that is now outdated or less complete; give that memory's index and the updated text), \
DELETE (the new fact says an existing memory is no longer true; give its index), NOOP (the fact is already \
known). Also give \"links\": the indexes of existing memories about the same person, topic or event as the \
new fact, and \"evolve\": for linked memories whose tags or context should change in the light of the new \
fact, their index with new \"tags\" and/or \"context\". Answer with JSON only: {\"event\": \"ADD\", \
\"index\": null, \"text\": \"...\", \"reason\": \"...\", \"links\": [], \"evolve\": []}.";

/// One decided operation of an extraction plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedOp {
    /// `add`, `update`, `delete`, `noop`, `reject` (not admitted, see
    /// [`grounding`]), or `evolve` (change the note of `target`, linking it
    /// to `link_to`; see [`crate::notes`]).
    pub op: String,
    /// The fact (for `add`/`update`: the text to store).
    pub text: String,
    /// The kind to store it as.
    pub kind: MemoryKind,
    /// For `update`/`delete`/`noop`: the memory concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<MemoryId>,
    /// The model's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For `add`: the new memory's id, chosen when planning so that notes
    /// evolved by later steps can link to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<MemoryId>,
    /// For `add`/`update`: the note to store with the fact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<Note>,
    /// For `evolve`: what changes on the target's note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evolution: Option<Evolution>,
    /// For `evolve`: the memory the target is to link to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_to: Option<MemoryId>,
}

impl PlannedOp {
    fn new(op: &str, fact: &Fact, target: Option<MemoryId>, reason: impl Into<String>) -> Self {
        PlannedOp {
            op: op.into(),
            text: fact.text.clone(),
            kind: fact.kind,
            target,
            reason: Some(reason.into()),
            id: None,
            note: None,
            evolution: None,
            link_to: None,
        }
    }
}

/// Tokens and calls spent by a job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    /// LLM calls made.
    pub llm_calls: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Answer tokens.
    pub completion_tokens: u64,
    /// Answers that could not be read (dropped).
    pub unreadable_answers: u64,
    /// Extracted facts rejected as not supported by the conversation.
    #[serde(default)]
    pub ungrounded_facts: u64,
}

impl Cost {
    fn from_map(m: &Map<String, Value>) -> Self {
        serde_json::from_value(Value::Object(m.clone())).unwrap_or_default()
    }
    fn to_map(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }
    }
}

/// A fact as extracted and validated.
#[derive(Debug, Clone, PartialEq)]
struct Fact {
    text: String,
    kind: MemoryKind,
    /// Keywords, tags and context (links come with the decision).
    note: Note,
}

/// Reads the extraction answer: `{"facts": [...]}` (or a bare list), each
/// a string or `{"text", "kind"}`. Unreadable entries are dropped.
fn read_facts(answer: &str) -> Option<Vec<Fact>> {
    let v = json_value(answer)?;
    let list = match &v {
        Value::Array(a) => a,
        Value::Object(o) => o.get("facts").or_else(|| o.get("memories"))?.as_array()?,
        _ => return None,
    };
    let mut out = Vec::new();
    for item in list {
        let (text, kind, note) = match item {
            Value::String(s) => (s.as_str(), None, Note::default()),
            Value::Object(o) => (
                o.get("text")
                    .or_else(|| o.get("fact"))
                    .and_then(Value::as_str)
                    .unwrap_or(""),
                o.get("kind").and_then(Value::as_str),
                Note::read(o),
            ),
            _ => continue,
        };
        let text = text.trim();
        if text.is_empty() || text.len() > MAX_FACT_BYTES {
            continue;
        }
        let kind = match kind.map(|k| k.trim().to_lowercase()) {
            Some(k) if k == "profile" => MemoryKind::Profile,
            Some(k) if k == "procedure" => MemoryKind::Procedure,
            _ => MemoryKind::Fact,
        };
        if !out.iter().any(|f: &Fact| f.text == text) {
            out.push(Fact {
                text: text.to_owned(),
                kind,
                note,
            });
        }
        if out.len() == MAX_FACTS {
            break;
        }
    }
    Some(out)
}

/// Reads a decision about `fact` given the related memories (by index):
/// the operation, then one `evolve` step per linked memory whose note is to
/// change. The fact's note links to the memories the answer names as
/// related (indexes that name nothing are ignored). `None` when the answer
/// is unreadable or names no valid target for UPDATE/DELETE.
fn read_decision(answer: &str, fact: &Fact, related: &[Memory]) -> Option<Vec<PlannedOp>> {
    let v = json_value(answer)?;
    let o = v.as_object()?;
    let event = o
        .get("event")
        .or_else(|| o.get("operation"))
        .and_then(Value::as_str)?
        .trim()
        .to_uppercase();
    let index = o.get("index").or_else(|| o.get("id")).and_then(read_index);
    let target = index.and_then(|i| related.get(i)).map(|m| m.id);
    let text = o
        .get("text")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= MAX_FACT_BYTES)
        .unwrap_or(&fact.text)
        .to_owned();
    let reason = o
        .get("reason")
        .and_then(Value::as_str)
        .map(|r| r.chars().take(500).collect());
    let op = match (event.as_str(), target) {
        ("UPDATE", Some(_)) => "update",
        ("DELETE", Some(_)) => "delete",
        ("NOOP" | "NONE", _) => "noop",
        ("ADD", _) => "add",
        _ => return None,
    };
    let target = if op == "add" { None } else { target };
    // A new fact gets its id now, so linked notes can link back to it; an
    // update keeps the target's id.
    let id = (op == "add").then(MemoryId::now_v7);
    // Linked memories: those named in `links` and those to evolve. Each
    // gets an `evolve` step (its note links back; tags or context change
    // when the answer says so).
    let mut evolutions: Vec<(usize, Evolution)> = Vec::new();
    for i in o
        .get("links")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(read_index)
    {
        evolutions.push((i, Evolution::default()));
    }
    for e in o
        .get("evolve")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
    {
        let Some(i) = e.get("index").and_then(read_index) else {
            continue;
        };
        let tags = crate::notes::terms(e.get("tags"), true);
        let evolution = Evolution {
            tags: (!tags.is_empty()).then_some(tags),
            context: crate::notes::context(e.get("context")),
        };
        match evolutions.iter_mut().find(|(j, _)| *j == i) {
            Some((_, ev)) => *ev = evolution,
            None => evolutions.push((i, evolution)),
        }
    }
    let mut note = fact.note.clone();
    let mut evolve_ops = Vec::new();
    if matches!(op, "add" | "update") {
        for (i, evolution) in evolutions {
            let Some(m) = related.get(i).filter(|m| Some(m.id) != target) else {
                continue;
            };
            if note.links.contains(&m.id) {
                continue;
            }
            note.link(m.id);
            evolve_ops.push(PlannedOp {
                op: "evolve".into(),
                text: m.content.clone(),
                kind: m.kind,
                target: Some(m.id),
                reason: Some("linked to a new memory".into()),
                id: None,
                note: None,
                evolution: Some(evolution),
                link_to: id.or(target),
            });
        }
    }
    let mut ops = vec![PlannedOp {
        op: op.into(),
        text,
        kind: fact.kind,
        target,
        reason,
        id,
        note: Some(note),
        evolution: None,
        link_to: None,
    }];
    ops.extend(evolve_ops);
    Some(ops)
}

/// An index given as a number or a numeric string.
fn read_index(v: &Value) -> Option<usize> {
    match v {
        Value::Number(n) => n.as_u64().map(|n| n as usize),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// True when two words are the same word up to its ending ("plays" /
/// "played", "nurse" / "nursing"): one is a prefix of the other, or they
/// share a prefix of at least 3 characters covering three quarters of the
/// shorter one.
fn same_word(a: &str, b: &str) -> bool {
    let common = a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
    let shorter = a.chars().count().min(b.chars().count());
    common == shorter || (common >= 3 && common * 4 >= shorter * 3)
}

/// The share of `fact`'s content words (stopwords and single letters
/// aside) that appear in the source turns, their speakers' names included.
/// Small models invent: a "fact" mostly made of words nobody said is not
/// admitted, whatever the model claims.
pub fn grounding(fact: &str, sources: &[Memory]) -> f32 {
    let content = |t: &String| t.chars().count() > 1 || t.chars().all(|c| c.is_ascii_digit());
    let words: Vec<String> = crate::text::query_terms(fact)
        .into_iter()
        .filter(content)
        .collect();
    if words.is_empty() {
        return 0.0;
    }
    let mut said: Vec<String> = Vec::new();
    for m in sources {
        said.extend(crate::text::query_terms(&m.content));
        if let Some(n) = &m.actor.name {
            said.extend(crate::text::query_terms(n));
        }
    }
    let found = words
        .iter()
        .filter(|w| said.iter().any(|s| same_word(w, s)))
        .count();
    found as f32 / words.len() as f32
}

/// Least grounding of each sentence of a model-written summary: a summary
/// restates what was said, so it is held to more than an extracted fact.
pub const SUMMARY_GROUNDING: f32 = 0.7;

/// The sentences of model-written `text` that are grounded in `sources`
/// (each at least [`SUMMARY_GROUNDING`]), in order; `None` when fewer than
/// half of its sentences are (a text mostly invented is not used at all).
pub fn grounded_summary(text: &str, sources: &[Memory]) -> Option<String> {
    let mut sentences: Vec<&str> = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let at_end = chars.peek().is_none_or(|(_, n)| n.is_whitespace());
        if matches!(c, '.' | '!' | '?') && at_end {
            sentences.push(text[start..i + c.len_utf8()].trim());
            start = i + c.len_utf8();
        }
    }
    sentences.push(text[start..].trim());
    sentences.retain(|s| !s.is_empty());
    let kept: Vec<&str> = sentences
        .iter()
        .copied()
        .filter(|s| grounding(s, sources) >= SUMMARY_GROUNDING)
        .collect();
    (!kept.is_empty() && kept.len() * 2 >= sentences.len()).then(|| kept.join(" "))
}

/// The lines of a conversation as shown to the model: a date line, then
/// `speaker: text` per message.
pub(crate) fn conversation_text(messages: &[Memory]) -> String {
    let mut out = String::new();
    if let Some(t) = messages.iter().find_map(|m| m.event_time) {
        out.push_str(&format!("Date: {}\n", t.format("%Y-%m-%d")));
    }
    for m in messages {
        let who = m
            .actor
            .name
            .as_deref()
            .or(m.actor.role.as_deref())
            .unwrap_or("someone");
        out.push_str(&format!("{who}: {}\n", m.content));
    }
    out
}

impl Hippo {
    /// One completion for operation `op`, counted in the job's `cost` and
    /// the engine's meter.
    pub(crate) fn ask(
        &self,
        llm: &dyn ChatModel,
        op: &'static str,
        system: &str,
        user: String,
        cost: &mut Cost,
    ) -> Result<String> {
        let c = llm.complete(
            &[ChatMessage::system(system), ChatMessage::user(user)],
            MAX_ANSWER_TOKENS,
        )?;
        self.llm_meter().record(op, &c);
        cost.llm_calls += 1;
        cost.prompt_tokens += c.prompt_tokens;
        cost.completion_tokens += c.completion_tokens;
        Ok(c.text)
    }

    /// Memories of the job's scope related to `fact`: current facts,
    /// profiles and procedures, best first.
    fn related(&self, job: &Job, fact: &Fact) -> Result<Vec<Memory>> {
        let mut req = crate::engine::SearchRequest::new(job.scope.clone(), fact.text.clone());
        req.top_k = RELATED;
        req.context = crate::engine::Context::NONE;
        req.filter = Filter {
            kinds: vec![MemoryKind::Fact, MemoryKind::Profile, MemoryKind::Procedure],
            ..Default::default()
        };
        // Digests (the profile) are rebuilt from facts, never decided on.
        Ok(self
            .search(&req)?
            .hits
            .into_iter()
            .map(|h| h.memory)
            .filter(|m| !crate::consolidate::is_digest(m))
            .collect())
    }

    /// Asks the model what to do and returns the plan (no writes).
    fn plan(
        &self,
        llm: &dyn ChatModel,
        job: &Job,
        sources: &[Memory],
        cost: &mut Cost,
    ) -> Result<Vec<PlannedOp>> {
        if sources.is_empty() {
            return Ok(Vec::new());
        }
        let answer = self.ask(
            llm,
            "extract",
            EXTRACT_PROMPT,
            conversation_text(sources),
            cost,
        )?;
        let Some(facts) = read_facts(&answer) else {
            cost.unreadable_answers += 1;
            self.llm_meter().unusable("extract");
            return Err(Error::unavailable(
                "the model's extraction answer could not be read",
                answer.chars().take(200).collect::<String>(),
            ));
        };
        let mut plan = Vec::new();
        for fact in facts {
            let g = grounding(&fact.text, sources);
            if g < MIN_GROUNDING {
                cost.ungrounded_facts += 1;
                self.llm_meter().unusable("extract");
                plan.push(PlannedOp::new(
                    "reject",
                    &fact,
                    None,
                    format!(
                        "not supported by the conversation: {:.0}% of its words were said",
                        g * 100.0
                    ),
                ));
                continue;
            }
            let related = self.related(job, &fact)?;
            // Without related memories there is nothing to decide; an exact
            // repeat is known already. Neither needs a call.
            if let Some(same) = related.iter().find(|m| m.content.trim() == fact.text) {
                plan.push(PlannedOp::new(
                    "noop",
                    &fact,
                    Some(same.id),
                    "already remembered word for word",
                ));
                continue;
            }
            if related.is_empty() {
                plan.push(PlannedOp {
                    id: Some(MemoryId::now_v7()),
                    note: Some(fact.note.clone()),
                    ..PlannedOp::new("add", &fact, None, "nothing related is remembered")
                });
                continue;
            }
            let mut prompt = String::from("Existing memories:\n");
            for (i, m) in related.iter().enumerate() {
                prompt.push_str(&format!("[{i}] {}\n", m.content));
            }
            prompt.push_str(&format!("New fact: {}\n", fact.text));
            let answer = self.ask(llm, "decide", DECIDE_PROMPT, prompt, cost)?;
            match read_decision(&answer, &fact, &related) {
                Some(ops) => plan.extend(ops),
                None => {
                    cost.unreadable_answers += 1;
                    self.llm_meter().unusable("decide");
                    plan.push(PlannedOp {
                        id: Some(MemoryId::now_v7()),
                        note: Some(fact.note.clone()),
                        ..PlannedOp::new(
                            "add",
                            &fact,
                            None,
                            "the decision could not be read; kept as new",
                        )
                    });
                }
            }
        }
        Ok(plan)
    }

    /// Applies step `n` (1-based) of a plan; a step that writes nothing
    /// still advances the job's step counter.
    fn apply(
        &self,
        job: &Job,
        sources: &[MemoryId],
        when: Option<chrono::DateTime<chrono::Utc>>,
        n: u32,
        op: &PlannedOp,
    ) -> Result<()> {
        let step = Some(JobStep {
            job: job.id,
            step: n,
        });
        let note = op.note.clone().unwrap_or_default();
        let written = match (op.op.as_str(), op.target) {
            ("add", _) => {
                // The step is recorded with the insert, duplicate or not.
                let _stored_or_duplicate = self.add_derived(
                    Derived {
                        id: op.id,
                        scope: &job.scope,
                        kind: op.kind,
                        content: &op.text,
                        metadata: note.put(&Map::new()),
                        derived_from: sources.to_vec(),
                        event_time: when,
                    },
                    step,
                )?;
                true
            }
            ("update", Some(target)) => {
                let before = self.get(target, Some(&job.scope))?;
                // The new version keeps the links the old one had.
                let mut merged = Note::of(&before.metadata);
                for l in &note.links {
                    merged.link(*l);
                }
                if !note.keywords.is_empty() {
                    merged.keywords = note.keywords;
                }
                if !note.tags.is_empty() {
                    merged.tags = note.tags;
                }
                merged.context = note.context.or(merged.context);
                let patch = MemoryPatch {
                    content: Some(op.text.clone()),
                    metadata: Some(merged.put(&before.metadata)),
                    valid_from: when.filter(|w| *w >= before.valid_since()),
                    reason: op.reason.clone(),
                    ..Default::default()
                };
                let after = self.revise(
                    target,
                    Some(&job.scope),
                    patch,
                    "llm",
                    sources.to_vec(),
                    step,
                )?;
                after.content != before.content
            }
            ("delete", Some(target)) => {
                let before = self.get(target, Some(&job.scope))?;
                let at = when.filter(|w| *w >= before.valid_since());
                let after = self.end_validity(
                    target,
                    Some(&job.scope),
                    at,
                    op.reason.clone(),
                    "llm",
                    step,
                )?;
                after.valid_to != before.valid_to
            }
            ("evolve", Some(target)) => {
                let evolution = op.evolution.clone().unwrap_or_default();
                // `evolve` records the step whether or not it changed anything.
                self.evolve(&job.scope, target, &evolution, op.link_to, step)?;
                true
            }
            _ => false,
        };
        if !written {
            self.store().insert(InsertBatch {
                job_step: step,
                ..Default::default()
            })?;
        }
        Ok(())
    }

    /// Runs one claimed extraction job to the end: plans (unless a plan is
    /// stored), then applies the steps not applied yet.
    fn run_extract(&self, llm: &dyn ChatModel, job: &Job, cost: &mut Cost) -> Result<()> {
        let ids: Vec<MemoryId> = job
            .payload
            .get("memories")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str()?.parse().ok()).collect())
            .unwrap_or_default();
        let sources: Vec<Memory> = self
            .store()
            .get_many(&ids)?
            .into_iter()
            .filter(|m| m.status == Status::Active && job.scope.matches(&m.scope))
            .collect();
        let plan: Vec<PlannedOp> = match &job.plan {
            Some(p) => serde_json::from_value(p.clone()).map_err(|e| {
                Error::new(ErrorKind::Internal, format!("stored plan unreadable: {e}"))
            })?,
            None => {
                let plan = self.plan(llm, job, &sources, cost)?;
                self.store().update_job(
                    job.id,
                    JobUpdate {
                        plan: Some(serde_json::to_value(&plan).unwrap_or(Value::Null)),
                        cost: Some(cost.to_map()),
                        ..Default::default()
                    },
                    self.now(),
                )?;
                // Another run of this job (after a lapsed lease) may have
                // recorded its plan first: apply the recorded one.
                match self.store().job(job.id)?.and_then(|j| j.plan) {
                    Some(p) => serde_json::from_value(p).map_err(|e| {
                        Error::new(ErrorKind::Internal, format!("stored plan unreadable: {e}"))
                    })?,
                    None => plan,
                }
            }
        };
        let source_ids: Vec<MemoryId> = sources.iter().map(|m| m.id).collect();
        let when = sources.iter().filter_map(|m| m.event_time).max();
        for (i, op) in plan.iter().enumerate().skip(job.step as usize) {
            match self.apply(job, &source_ids, when, i as u32 + 1, op) {
                Ok(()) => {}
                // A target deleted or erased meanwhile: nothing to do.
                Err(e)
                    if e.kind() == ErrorKind::NotFound || e.kind() == ErrorKind::InvalidInput =>
                {
                    tracing::warn!(job = job.id, step = i + 1, error = %e, "extraction step skipped");
                    self.store().insert(InsertBatch {
                        job_step: Some(JobStep {
                            job: job.id,
                            step: i as u32 + 1,
                        }),
                        ..Default::default()
                    })?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Claims and runs at most one ready job; returns whether there was one.
    /// Failures are retried with backoff up to `max_attempts`, then the job
    /// is marked failed with its error.
    pub fn run_one_job(&self, lease: chrono::Duration, max_attempts: u32) -> Result<bool> {
        let Some(job) = self.store().claim_job(self.now(), lease)? else {
            return Ok(false);
        };
        let mut cost = Cost::from_map(&job.cost);
        let actor = format!("job:{}", job.id);
        let result = crate::audit::as_actor(&actor, || match (job.kind.as_str(), self.llm()) {
            (EXTRACT_JOB, Some(llm)) => self.run_extract(llm.as_ref(), &job, &mut cost),
            (EXTRACT_JOB, None) => Err(Error::unavailable("no LLM is configured", "extract job")),
            (crate::consolidate::CONSOLIDATE_JOB, _) => {
                self.run_consolidate(&job.payload, &mut cost)
            }
            (other, _) => Err(Error::new(
                ErrorKind::Internal,
                format!("unknown job kind {other:?}"),
            )),
        });
        let update = match result {
            Ok(()) => JobUpdate {
                state: Some(JobState::Done),
                cost: Some(cost.to_map()),
                // A consolidation job's payload names entities, words of
                // memories that may be erased later: a done job keeps none.
                payload: (job.kind == crate::consolidate::CONSOLIDATE_JOB).then(Map::new),
                ..Default::default()
            },
            Err(e) => {
                tracing::warn!(job = job.id, attempt = job.attempts, error = %e.detail(), "job failed");
                let give_up = job.attempts >= max_attempts;
                // Backoff: 2, 4, 8, ... seconds.
                let wait = chrono::Duration::seconds(1i64 << job.attempts.min(10));
                JobUpdate {
                    state: Some(if give_up {
                        JobState::Failed
                    } else {
                        JobState::Pending
                    }),
                    error: Some(e.message().to_owned()),
                    run_after: (!give_up).then(|| self.now() + wait),
                    cost: Some(cost.to_map()),
                    ..Default::default()
                }
            }
        };
        self.store().update_job(job.id, update, self.now())?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fact(t: &str) -> Fact {
        Fact {
            text: t.into(),
            kind: MemoryKind::Fact,
            note: Note::default(),
        }
    }

    #[test]
    fn facts_are_read_from_many_shapes_and_validated() {
        let want = |ts: &[&str]| ts.iter().map(|t| fact(t)).collect::<Vec<_>>();
        assert_eq!(
            read_facts(r#"{"facts": ["a", "b"]}"#),
            Some(want(&["a", "b"]))
        );
        assert_eq!(
            read_facts(r#"["a", {"text": "b"}, 3, {"nope": 1}, ""]"#),
            Some(want(&["a", "b"]))
        );
        assert_eq!(
            read_facts(r#"{"facts": [{"text": "x", "kind": "Profile"}]}"#).unwrap()[0].kind,
            MemoryKind::Profile
        );
        assert_eq!(read_facts(r#"{"facts": ["a", "a"]}"#), Some(want(&["a"])));
        assert_eq!(read_facts("I cannot help with that."), None);
        assert_eq!(
            read_facts(&format!(r#"{{"facts": ["{}"]}}"#, "x".repeat(600))),
            Some(vec![])
        );
    }

    fn decision_memory(c: &str) -> Memory {
        Memory {
            id: MemoryId::now_v7(),
            scope: crate::model::Scope::user("u"),
            kind: MemoryKind::Fact,
            content: c.into(),
            actor: Default::default(),
            metadata: Default::default(),
            event_time: None,
            recorded_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
            provenance: Default::default(),
            content_hash: String::new(),
            embedding_model: None,
            valid_from: None,
            valid_to: None,
            version_of: None,
            status: Status::Active,
            dedup_key: None,
            expires_at: None,
            usage: Default::default(),
            flags: Vec::new(),
        }
    }

    #[test]
    fn decisions_need_a_valid_index_to_touch_a_memory() {
        let m = decision_memory;
        let related = vec![m("Ana lives in Boston")];
        let f = fact("Ana lives in Denver");
        let one = |answer: &str| read_decision(answer, &f, &related).map(|mut ops| ops.remove(0));
        let op = one(
            r#"{"event": "UPDATE", "index": 0, "text": "Ana lives in Denver", "reason": "moved"}"#,
        )
        .unwrap();
        assert_eq!((op.op.as_str(), op.target), ("update", Some(related[0].id)));
        assert_eq!(op.reason.as_deref(), Some("moved"));
        assert_eq!(op.id, None, "an update keeps the target's id");
        let op = one(r#"{"event": "update", "index": "0"}"#).unwrap();
        assert_eq!(op.text, "Ana lives in Denver", "text defaults to the fact");
        assert!(
            one(r#"{"event": "UPDATE", "index": 7}"#).is_none(),
            "no such memory"
        );
        assert!(one(r#"{"event": "DELETE"}"#).is_none());
        let add = one(r#"{"event": "ADD", "index": 0}"#).unwrap();
        assert_eq!(add.target, None);
        assert!(add.id.is_some(), "a new fact's id is chosen when planning");
        assert_eq!(one(r#"{"event": "NOOP"}"#).unwrap().op, "noop");
        assert!(one("garbage").is_none());
        assert!(one(r#"{"event": "MERGE", "index": 0}"#).is_none());
    }

    #[test]
    fn decisions_link_and_evolve_related_notes() {
        let m = decision_memory;
        let related = vec![m("Ana plays the violin"), m("Ana joined an orchestra")];
        let mut f = fact("Ana performed her first concert");
        f.note.tags = vec!["music".into()];
        let ops = read_decision(
            r#"{"event": "ADD", "links": [0, 1, 5, "x"],
                "evolve": [{"index": 1, "tags": ["music", "performing"], "context": "Ana now performs"},
                           {"index": 9, "tags": ["x"]}, "junk"]}"#,
            &f,
            &related,
        )
        .unwrap();
        assert_eq!(ops.len(), 3, "{ops:?}");
        let add = &ops[0];
        let note = add.note.as_ref().unwrap();
        assert_eq!(note.links, vec![related[0].id, related[1].id]);
        assert_eq!(note.tags, vec!["music"], "the extraction's note is kept");
        assert_eq!(ops[1].op, "evolve");
        assert_eq!(ops[1].target, Some(related[0].id));
        assert_eq!(ops[1].evolution, Some(Evolution::default()), "link only");
        assert_eq!(ops[1].link_to, add.id);
        let e = ops[2].evolution.as_ref().unwrap();
        assert_eq!(
            e.tags.as_deref(),
            Some(&["music".to_owned(), "performing".to_owned()][..])
        );
        assert_eq!(e.context.as_deref(), Some("Ana now performs"));
        // An update never links its own target; a NOOP evolves nothing.
        let ops = read_decision(
            r#"{"event": "UPDATE", "index": 0, "links": [0, 1]}"#,
            &f,
            &related,
        )
        .unwrap();
        assert_eq!(ops[0].note.as_ref().unwrap().links, vec![related[1].id]);
        assert_eq!(ops[1].link_to, Some(related[0].id));
        let ops = read_decision(r#"{"event": "NOOP", "links": [0]}"#, &f, &related).unwrap();
        assert_eq!(ops.len(), 1);
    }

    #[test]
    fn facts_must_be_grounded_in_what_was_said() {
        let turn = |name: &str, text: &str| Memory {
            actor: crate::model::Actor {
                role: Some("user".into()),
                name: Some(name.into()),
            },
            content: text.into(),
            ..decision_memory("")
        };
        let said = [turn(
            "Ana",
            "I just moved into a small flat in Boston, near the river.",
        )];
        assert!(grounding("Ana lives in Boston.", &said) >= MIN_GROUNDING);
        assert!(
            grounding(
                "Ana is a big fan of the Boston Red Sox and loves watching them play.",
                &said
            ) < MIN_GROUNDING
        );
        let said = [turn(
            "Ben",
            "Night shifts are exhausting, nursing is hard work.",
        )];
        assert_eq!(
            grounding("Ben works nights as a nurse.", &said),
            1.0,
            "word endings"
        );
        assert_eq!(grounding("", &said), 0.0);
        assert_eq!(grounding("我喜欢猫", &[turn("Li", "我喜欢猫和狗")]), 1.0);
    }

    #[test]
    fn summaries_keep_only_grounded_sentences() {
        let turn = |name: &str, text: &str| Memory {
            actor: crate::model::Actor {
                role: Some("user".into()),
                name: Some(name.into()),
            },
            content: text.into(),
            ..decision_memory("")
        };
        let said = [
            turn(
                "Maya",
                "I planted the vegetable garden behind our house in Leeds.",
            ),
            turn("Maya", "Tomatoes and sunflowers for my daughter Iris."),
        ];
        assert_eq!(
            grounded_summary(
                "Maya planted a vegetable garden in Leeds. It was a beautiful sunny day! \
                 She grew tomatoes and sunflowers for her daughter Iris.",
                &said
            )
            .as_deref(),
            Some(
                "Maya planted a vegetable garden in Leeds. \
                 She grew tomatoes and sunflowers for her daughter Iris."
            )
        );
        assert_eq!(
            grounded_summary(
                "Zed sailed to Oslo. The banker lied. Maya planted a garden.",
                &said
            ),
            None,
            "mostly invented"
        );
        assert_eq!(grounded_summary("", &said), None);
        assert_eq!(
            grounded_summary("Maya planted sunflowers in Leeds", &said).as_deref(),
            Some("Maya planted sunflowers in Leeds"),
            "no final stop"
        );
        assert_eq!(
            grounded_summary("Iris is 3.5 years old. Iris got 2.5 m sunflowers.", &said),
            None,
            "decimals do not split sentences"
        );
    }

    #[test]
    fn cost_round_trips_through_its_map() {
        let c = Cost {
            llm_calls: 2,
            prompt_tokens: 10,
            completion_tokens: 5,
            unreadable_answers: 1,
            ungrounded_facts: 3,
        };
        assert_eq!(Cost::from_map(&c.to_map()), c);
        assert_eq!(Cost::from_map(&Map::new()), Cost::default());
    }
}

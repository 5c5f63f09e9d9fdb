//! LLM extraction, run as background jobs after the verbatim write is
//! acknowledged: facts are extracted from the new messages, each fact is
//! compared with related memories, and the LLM decides ADD / UPDATE
//! (supersede, keeping the old version) / DELETE (invalidate) / NOOP, with a
//! reason that is recorded.
//!
//! A job first *plans* (LLM calls; the plan is stored on the job), then
//! *applies* the plan one step per decision, each step's write carrying its
//! [`JobStep`] so a job re-run after a crash neither loses nor repeats a
//! decision. Model output is read with [`crate::llm::parse::json_value`]
//! and validated field by field; what cannot be read is dropped, never
//! written.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::engine::{Hippo, MemoryPatch};
use crate::error::{Error, ErrorKind, Result};
use crate::jobs::{Job, JobState, JobStep, JobUpdate};
use crate::llm::parse::json_value;
use crate::llm::{ChatMessage, ChatModel};
use crate::model::{Filter, Memory, MemoryId, MemoryKind, Status};
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
to do something or a lesson learnt, \"fact\" otherwise. Answer with JSON only: \
{\"facts\": [{\"text\": \"...\", \"kind\": \"fact\"}]} (an empty list when there is nothing to remember).";

const DECIDE_PROMPT: &str = "You maintain long-term memory for an assistant. Compare a new fact with \
the existing memories and decide one operation: ADD (new information), UPDATE (the new fact replaces an \
existing memory that is now outdated or less complete; give that memory's index and the updated text), \
DELETE (the new fact says an existing memory is no longer true; give its index), NOOP (the fact is already \
known). Answer with JSON only: {\"event\": \"ADD\", \"index\": null, \"text\": \"...\", \"reason\": \"...\"}.";

/// One decided operation of an extraction plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedOp {
    /// `add`, `update`, `delete`, `noop`, or `reject` (not admitted, see
    /// [`grounding`]).
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
        let (text, kind) = match item {
            Value::String(s) => (s.as_str(), None),
            Value::Object(o) => (
                o.get("text")
                    .or_else(|| o.get("fact"))
                    .and_then(Value::as_str)
                    .unwrap_or(""),
                o.get("kind").and_then(Value::as_str),
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
            });
        }
        if out.len() == MAX_FACTS {
            break;
        }
    }
    Some(out)
}

/// Reads a decision about `fact` given the related memories (by index).
/// An unreadable decision, or one naming no valid index, falls back to ADD
/// (the verbatim fact, kept as new information, loses nothing).
fn read_decision(answer: &str, fact: &Fact, related: &[Memory]) -> Option<PlannedOp> {
    let v = json_value(answer)?;
    let o = v.as_object()?;
    let event = o
        .get("event")
        .or_else(|| o.get("operation"))
        .and_then(Value::as_str)?
        .trim()
        .to_uppercase();
    let index = o
        .get("index")
        .or_else(|| o.get("id"))
        .and_then(|i| match i {
            Value::Number(n) => n.as_u64().map(|n| n as usize),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        });
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
    Some(PlannedOp {
        op: op.into(),
        text,
        kind: fact.kind,
        target: if op == "add" { None } else { target },
        reason,
    })
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

fn conversation_text(messages: &[Memory]) -> String {
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
    fn ask(
        &self,
        llm: &dyn ChatModel,
        system: &str,
        user: String,
        cost: &mut Cost,
    ) -> Result<String> {
        let c = llm.complete(
            &[ChatMessage::system(system), ChatMessage::user(user)],
            MAX_ANSWER_TOKENS,
        )?;
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
        Ok(self
            .search(&req)?
            .hits
            .into_iter()
            .map(|h| h.memory)
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
        let answer = self.ask(llm, EXTRACT_PROMPT, conversation_text(sources), cost)?;
        let Some(facts) = read_facts(&answer) else {
            cost.unreadable_answers += 1;
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
                plan.push(PlannedOp {
                    op: "reject".into(),
                    reason: Some(format!(
                        "not supported by the conversation: {:.0}% of its words were said",
                        g * 100.0
                    )),
                    text: fact.text,
                    kind: fact.kind,
                    target: None,
                });
                continue;
            }
            let related = self.related(job, &fact)?;
            // Without related memories there is nothing to decide; an exact
            // repeat is known already. Neither needs a call.
            if let Some(same) = related.iter().find(|m| m.content.trim() == fact.text) {
                plan.push(PlannedOp {
                    op: "noop".into(),
                    text: fact.text,
                    kind: fact.kind,
                    target: Some(same.id),
                    reason: Some("already remembered word for word".into()),
                });
                continue;
            }
            if related.is_empty() {
                plan.push(PlannedOp {
                    op: "add".into(),
                    text: fact.text,
                    kind: fact.kind,
                    target: None,
                    reason: Some("nothing related is remembered".into()),
                });
                continue;
            }
            let mut prompt = String::from("Existing memories:\n");
            for (i, m) in related.iter().enumerate() {
                prompt.push_str(&format!("[{i}] {}\n", m.content));
            }
            prompt.push_str(&format!("New fact: {}\n", fact.text));
            let answer = self.ask(llm, DECIDE_PROMPT, prompt, cost)?;
            match read_decision(&answer, &fact, &related) {
                Some(op) => plan.push(op),
                None => {
                    cost.unreadable_answers += 1;
                    plan.push(PlannedOp {
                        op: "add".into(),
                        text: fact.text,
                        kind: fact.kind,
                        target: None,
                        reason: Some("the decision could not be read; kept as new".into()),
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
        let written = match (op.op.as_str(), op.target) {
            ("add", _) => {
                // The step is recorded with the insert, duplicate or not.
                let _stored_or_duplicate =
                    self.add_derived(&job.scope, op.kind, &op.text, sources.to_vec(), when, step)?;
                true
            }
            ("update", Some(target)) => {
                let before = self.get(target, Some(&job.scope))?;
                let patch = MemoryPatch {
                    content: Some(op.text.clone()),
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
        let result = match (job.kind.as_str(), self.llm()) {
            (EXTRACT_JOB, Some(llm)) => self.run_extract(llm.as_ref(), &job, &mut cost),
            (EXTRACT_JOB, None) => Err(Error::unavailable("no LLM is configured", "extract job")),
            (crate::consolidate::CONSOLIDATE_JOB, _) => self.run_consolidate(&job.payload),
            (other, _) => Err(Error::new(
                ErrorKind::Internal,
                format!("unknown job kind {other:?}"),
            )),
        };
        let update = match result {
            Ok(()) => JobUpdate {
                state: Some(JobState::Done),
                cost: Some(cost.to_map()),
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
        }
    }

    #[test]
    fn decisions_need_a_valid_index_to_touch_a_memory() {
        let m = decision_memory;
        let related = vec![m("Ana lives in Boston")];
        let f = fact("Ana lives in Denver");
        let op = read_decision(
            r#"{"event": "UPDATE", "index": 0, "text": "Ana lives in Denver", "reason": "moved"}"#,
            &f,
            &related,
        )
        .unwrap();
        assert_eq!((op.op.as_str(), op.target), ("update", Some(related[0].id)));
        assert_eq!(op.reason.as_deref(), Some("moved"));
        let op = read_decision(r#"{"event": "update", "index": "0"}"#, &f, &related).unwrap();
        assert_eq!(op.text, "Ana lives in Denver", "text defaults to the fact");
        assert!(
            read_decision(r#"{"event": "UPDATE", "index": 7}"#, &f, &related).is_none(),
            "no such memory"
        );
        assert!(read_decision(r#"{"event": "DELETE"}"#, &f, &related).is_none());
        assert_eq!(
            read_decision(r#"{"event": "ADD", "index": 0}"#, &f, &related)
                .unwrap()
                .target,
            None
        );
        assert_eq!(
            read_decision(r#"{"event": "NOOP"}"#, &f, &related)
                .unwrap()
                .op,
            "noop"
        );
        assert!(read_decision("garbage", &f, &related).is_none());
        assert!(read_decision(r#"{"event": "MERGE", "index": 0}"#, &f, &related).is_none());
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

//! `hippo eval-ops`: the operation-level evaluation of the LLM lifecycle
//! (HaluMem-style) on a labelled set such as `eval/ops.json`: conversations
//! over time, the facts a good extractor should produce, the update
//! decisions they call for, and what must hold now and at earlier times.
//! Runs the configured LLM through the real pipeline (jobs run in order,
//! in-process) on a fresh store and scores:
//! - extraction precision / recall: extracted facts (every planned
//!   operation's text) against the labelled facts, matched by key words;
//! - decision accuracy: labelled ADD / UPDATE / DELETE decisions taken, on
//!   the right memory;
//! - state accuracy: what must (not) be current afterwards;
//! - as_of accuracy: the top fact at an earlier time holds the answer.
//!
//! The integration tests (`crates/hippo-cli/tests/it/extract.rs`) run it
//! against an oracle model over HTTP (it must score 1.0) and a nonsense one
//! (recall 0, no facts written).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use clap::Args;
use serde::Deserialize;
use serde_json::{json, Value};

use hippo::{AddItem, Content, Filter, MemoryKind, Message, Order, Scope, SearchRequest};

use hippo_server::settings::Settings;

/// Options of `hippo eval-ops`.
#[derive(Args, Clone)]
pub struct EvalOpsArgs {
    /// The labelled set (JSON, see `eval/ops.json`).
    #[arg(long)]
    pub data: PathBuf,
    /// Keep the store here instead of a temporary file.
    #[arg(long)]
    pub eval_db: Option<PathBuf>,
}

#[derive(Deserialize)]
struct Dataset {
    scenarios: Vec<Scenario>,
}

#[derive(Deserialize)]
struct Scenario {
    name: String,
    sessions: Vec<Session>,
    expect: Expect,
}

#[derive(Deserialize)]
struct Session {
    time: DateTime<Utc>,
    messages: Vec<Turn>,
    facts: Vec<LabelledFact>,
    #[serde(default)]
    decide: Vec<Decision>,
}

#[derive(Deserialize)]
struct Turn {
    name: String,
    content: String,
}

#[derive(Deserialize)]
struct LabelledFact {
    text: String,
    keys: Vec<String>,
}

#[derive(Deserialize)]
struct Decision {
    fact: String,
    event: String,
    #[serde(default)]
    target: Option<String>,
}

#[derive(Deserialize)]
struct Expect {
    current: Vec<String>,
    not_current: Vec<String>,
    as_of: Vec<AsOf>,
    #[serde(default)]
    max_current: Option<usize>,
}

#[derive(Deserialize)]
struct AsOf {
    time: DateTime<Utc>,
    query: String,
    answer: String,
}

fn has(text: &str, phrase: &str) -> bool {
    text.to_lowercase().contains(&phrase.to_lowercase())
}

fn matches(text: &str, keys: &[String]) -> bool {
    keys.iter().all(|k| has(text, k))
}

#[derive(Default)]
struct Tally {
    hit: usize,
    of: usize,
}

impl Tally {
    fn add(&mut self, ok: bool) {
        self.of += 1;
        self.hit += usize::from(ok);
    }
    fn score(&self) -> Value {
        if self.of == 0 {
            Value::Null
        } else {
            json!((self.hit as f64 / self.of as f64 * 1e4).round() / 1e4)
        }
    }
}

const FACT_KINDS: [MemoryKind; 3] = [MemoryKind::Fact, MemoryKind::Profile, MemoryKind::Procedure];

/// Runs the evaluation; prints and returns the report.
pub fn run(settings: &Settings, args: EvalOpsArgs) -> Result<Value> {
    let data: Dataset = serde_json::from_slice(
        &std::fs::read(&args.data)
            .with_context(|| format!("cannot read {}", args.data.display()))?,
    )
    .with_context(|| format!("{} is not an operation-level set", args.data.display()))?;
    let tmp = std::env::temp_dir().join(format!("hippo-eval-{}", std::process::id()));
    if args.eval_db.is_none() {
        std::fs::create_dir_all(&tmp)?;
    }
    let db = args.eval_db.clone().unwrap_or_else(|| tmp.join("eval.db"));
    let report = evaluate(settings, &data, &db);
    if args.eval_db.is_none() {
        std::fs::remove_dir_all(&tmp).ok();
    }
    let report = report?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(report)
}

fn evaluate(settings: &Settings, data: &Dataset, db: &std::path::Path) -> Result<Value> {
    let hippo = settings.open_at(db)?;
    if hippo.llm().is_none() {
        bail!("eval-ops needs an LLM: give --llm-url and --llm-model");
    }
    let (mut precision, mut recall, mut decisions, mut state, mut as_of) = (
        Tally::default(),
        Tally::default(),
        Tally::default(),
        Tally::default(),
        Tally::default(),
    );
    let mut transcripts = Vec::new();
    let mut per_scenario = serde_json::Map::new();
    let mut cost = (0u64, 0u64, 0u64);
    let mut next_job = 1i64;
    for sc in &data.scenarios {
        let scope = Scope::user(format!("eval-{}", sc.name));
        let mut ok_checks = Tally::default();
        for (si, session) in sc.sessions.iter().enumerate() {
            let item = AddItem {
                scope: scope.clone(),
                content: Content::Messages(
                    session
                        .messages
                        .iter()
                        .map(|t| Message {
                            role: if t.name == "Assistant" {
                                "assistant"
                            } else {
                                "user"
                            }
                            .into(),
                            name: Some(t.name.clone()),
                            content: t.content.clone(),
                        })
                        .collect(),
                ),
                metadata: Default::default(),
                event_time: Some(session.time),
                kind: None,
                infer: true,
                id: None,
                recorded_at: None,
                confidence: None,
                force: false,
                expires_at: None,
            };
            // The add queues the session's extraction job first (then a
            // consolidation job): its id is the next free one.
            while hippo.store().job(next_job)?.is_some() {
                next_job += 1;
            }
            hippo.add(vec![item])?;
            // Run the session's job now, retrying a failed attempt at once
            // (the server would wait out a backoff), up to 3 attempts.
            loop {
                while hippo.run_one_job(chrono::Duration::seconds(600), 3)? {}
                let waiting = hippo
                    .store()
                    .job(next_job)?
                    .is_some_and(|j| j.state == hippo::jobs::JobState::Pending);
                if !waiting {
                    break;
                }
                let due = hippo::jobs::JobUpdate {
                    run_after: Some(hippo.now()),
                    ..Default::default()
                };
                hippo.store().update_job(next_job, due, hippo.now())?;
            }
            let job = hippo
                .store()
                .job(next_job)?
                .context("the session's extraction job is missing")?;
            next_job += 1;
            let plan: Vec<hippo::extract::PlannedOp> = job
                .plan
                .clone()
                .map(serde_json::from_value)
                .transpose()?
                .unwrap_or_default();
            let c = |k: &str| job.cost.get(k).and_then(Value::as_u64).unwrap_or(0);
            cost.0 += c("llm_calls");
            cost.1 += c("prompt_tokens");
            cost.2 += c("completion_tokens");
            // Rejected facts were not admitted: they count for nothing.
            let plan: Vec<_> = plan.into_iter().filter(|op| op.op != "reject").collect();
            for op in &plan {
                let good = session.facts.iter().any(|f| matches(&op.text, &f.keys));
                precision.add(good);
                ok_checks.add(good);
            }
            for f in &session.facts {
                let found = plan.iter().any(|op| matches(&op.text, &f.keys));
                recall.add(found);
                ok_checks.add(found);
            }
            for d in &session.decide {
                let keys = session
                    .facts
                    .iter()
                    .find(|f| f.text == d.fact)
                    .map(|f| f.keys.clone())
                    .unwrap_or_default();
                let op = plan.iter().find(|op| matches(&op.text, &keys));
                let right = match (op, d.target.as_deref()) {
                    (Some(op), None) => op.op.eq_ignore_ascii_case(&d.event),
                    (Some(op), Some(target)) => {
                        let target_keys = sc.sessions[..si]
                            .iter()
                            .flat_map(|s| &s.facts)
                            .find(|f| f.text == target)
                            .map(|f| f.keys.clone())
                            .unwrap_or_default();
                        op.op.eq_ignore_ascii_case(&d.event)
                            && op.target.is_some_and(|id| {
                                hippo.history(id, Some(&scope)).is_ok_and(|h| {
                                    h.versions.iter().any(|v| matches(&v.content, &target_keys))
                                })
                            })
                    }
                    (None, _) => false,
                };
                decisions.add(right);
                ok_checks.add(right);
            }
            transcripts.push(json!({
                "scenario": sc.name, "session": si, "job": job.id,
                "plan": job.plan, "cost": job.cost, "error": job.last_error,
            }));
        }
        let current: Vec<String> = hippo
            .list(
                Some(&scope),
                &Filter {
                    kinds: FACT_KINDS.to_vec(),
                    ..Default::default()
                },
                None,
                1000,
                Order::Ascending,
            )?
            .memories
            .into_iter()
            // The profile is built from the facts; the facts are scored.
            .filter(|m| !hippo::consolidate::is_digest(m))
            .map(|m| m.content)
            .collect();
        for p in &sc.expect.current {
            let ok = current.iter().any(|c| has(c, p));
            state.add(ok);
            ok_checks.add(ok);
        }
        for p in &sc.expect.not_current {
            let ok = !current.iter().any(|c| has(c, p));
            state.add(ok);
            ok_checks.add(ok);
        }
        if let Some(max) = sc.expect.max_current {
            let ok = current.len() <= max;
            state.add(ok);
            ok_checks.add(ok);
        }
        for q in &sc.expect.as_of {
            let mut req = SearchRequest::new(scope.clone(), q.query.clone());
            req.top_k = 5;
            req.context = hippo::Context::NONE;
            req.filter = Filter {
                kinds: FACT_KINDS.to_vec(),
                as_of: Some(q.time),
                ..Default::default()
            };
            let top = hippo
                .search(&req)?
                .hits
                .into_iter()
                .find(|h| !hippo::consolidate::is_digest(&h.memory))
                .map(|h| h.memory.content);
            let ok = top.as_deref().is_some_and(|t| has(t, &q.answer));
            as_of.add(ok);
            ok_checks.add(ok);
        }
        per_scenario.insert(
            sc.name.clone(),
            json!({"checks_passed": ok_checks.score(), "current": current}),
        );
    }
    let report = json!({
        "scenarios": data.scenarios.len(),
        "llm": hippo.llm().map(|l| l.model_id().to_owned()),
        "extraction_precision": precision.score(),
        "extraction_recall": recall.score(),
        "decision_accuracy": decisions.score(),
        "state_accuracy": state.score(),
        "as_of_accuracy": as_of.score(),
        "llm_calls": cost.0,
        "prompt_tokens": cost.1,
        "completion_tokens": cost.2,
        "per_scenario": per_scenario,
        "transcripts": transcripts,
    });
    Ok(report)
}

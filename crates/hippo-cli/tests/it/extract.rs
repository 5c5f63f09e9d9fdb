//! LLM extraction jobs against a scripted OpenAI-compatible chat server:
//! a fact that changes is superseded through the LLM path (both versions
//! kept with validity and provenance), the write is acknowledged before any
//! LLM call, and a job re-run applies nothing twice.

use std::sync::{Arc, OnceLock};

use chrono::{DateTime, TimeZone, Utc};
use hippo::jobs::{JobState, JobUpdate};
use hippo::llm::{OpenAiChat, OpenAiChatConfig};
use hippo::{
    AddItem, EventKind, Filter, Hippo, MemoryKind, MiniLmEmbedder, Scope, SearchRequest,
    SqliteStore, SqliteStoreOptions,
};

use super::common::model_dir;
use super::fakes::{self, ChatScript};

fn minilm() -> Arc<MiniLmEmbedder> {
    static MODEL: OnceLock<Arc<MiniLmEmbedder>> = OnceLock::new();
    MODEL
        .get_or_init(|| Arc::new(MiniLmEmbedder::from_dir(&model_dir()).unwrap()))
        .clone()
}

fn engine(db: &std::path::Path, llm_base: &str) -> Hippo {
    let e = minilm();
    let store = SqliteStore::open(SqliteStoreOptions::new(
        db,
        hippo::Embedder::model_id(e.as_ref()),
        384,
    ))
    .unwrap();
    let chat = OpenAiChat::new(OpenAiChatConfig {
        base_url: format!("{llm_base}/v1"),
        model: "scripted".into(),
        ..Default::default()
    });
    Hippo::builder()
        .store(Arc::new(store))
        .embedder(e)
        .llm(Arc::new(chat))
        // These tests count extraction jobs; digests are tested on their own.
        .consolidation(false)
        .build()
        .unwrap()
}

fn day(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 12, 0, 0).unwrap()
}

fn said(s: &Scope, text: &str, when: DateTime<Utc>) -> AddItem {
    let mut item = AddItem::message(s.clone(), "user", Some("Ana"), text);
    item.event_time = Some(when);
    item.infer = true;
    item
}

fn run_all(h: &Hippo) -> usize {
    let mut n = 0;
    while h.run_one_job(chrono::Duration::seconds(60), 3).unwrap() {
        n += 1;
    }
    n
}

fn facts(h: &Hippo, s: &Scope, q: &str, as_of: Option<DateTime<Utc>>) -> Vec<String> {
    let mut req = SearchRequest::new(s.clone(), q);
    req.filter = Filter {
        kinds: vec![MemoryKind::Fact, MemoryKind::Profile],
        as_of,
        ..Default::default()
    };
    h.search(&req)
        .unwrap()
        .hits
        .into_iter()
        .map(|h| h.memory.content)
        .collect()
}

#[test]
fn a_fact_that_changes_is_superseded_through_the_llm() {
    let (fake, script) = fakes::openai_chat(ChatScript {
        answers: vec![
            (
                "I live in Boston".into(),
                r#"{"facts": [{"text": "Ana lives in Boston.", "kind": "profile"}]}"#.into(),
            ),
            (
                "moved to Denver".into(),
                // Small models wrap JSON in prose and fences.
                "Here you go:\n```json\n{\"facts\": [\"Ana lives in Denver.\"]}\n```".into(),
            ),
            (
                "New fact: Ana lives in Denver.".into(),
                r#"{"event": "UPDATE", "index": 0, "text": "Ana lives in Denver.", "reason": "Ana moved to Denver"}"#.into(),
            ),
        ],
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let h = engine(&dir.path().join("x.db"), &fake.base);
    let s = Scope::user("ana");
    let boston_msg = h
        .add(vec![said(
            &s,
            "I live in Boston, near the river.",
            day(2023, 1, 10),
        )])
        .unwrap()
        .remove(0);
    assert!(
        script.lock().unwrap().requests.is_empty(),
        "acknowledged before any LLM call"
    );
    assert_eq!(h.store().job_counts().unwrap().pending, 1);
    assert_eq!(run_all(&h), 1);
    assert_eq!(
        facts(&h, &s, "Where does Ana live?", None)[0],
        "Ana lives in Boston."
    );

    let denver_msg = h
        .add(vec![said(
            &s,
            "Big news: we moved to Denver last month!",
            day(2023, 6, 15),
        )])
        .unwrap()
        .remove(0);
    assert_eq!(run_all(&h), 1);
    assert_eq!(h.store().job_counts().unwrap().done, 2);

    let now = facts(&h, &s, "Where does Ana live?", None);
    assert_eq!(now[0], "Ana lives in Denver.");
    assert!(!now.iter().any(|t| t.contains("Boston")), "{now:?}");
    let then = facts(&h, &s, "Where does Ana live?", Some(day(2023, 3, 1)));
    assert_eq!(then[0], "Ana lives in Boston.");

    // History: both versions, each with the turn it came from; the
    // decision and its reason are on record.
    let profile = h
        .list(
            Some(&s),
            &Filter {
                kinds: vec![MemoryKind::Profile],
                ..Default::default()
            },
            None,
            10,
            hippo::Order::Ascending,
        )
        .unwrap()
        .memories
        .remove(0);
    let history = h.history(profile.id, None).unwrap();
    assert_eq!(history.versions.len(), 2);
    assert_eq!(history.versions[0].content, "Ana lives in Boston.");
    assert_eq!(
        history.versions[0].provenance.derived_from,
        vec![boston_msg.id]
    );
    assert_eq!(history.versions[0].valid_to, Some(day(2023, 6, 15)));
    assert_eq!(history.versions[1].content, "Ana lives in Denver.");
    assert_eq!(
        history.versions[1].provenance.derived_from,
        vec![denver_msg.id]
    );
    let e = &history.events[0];
    assert_eq!((e.kind, e.origin.as_str()), (EventKind::Revised, "llm"));
    assert_eq!(e.reason.as_deref(), Some("Ana moved to Denver"));

    // Cost: the second job made two calls (extract, decide).
    let job = h.store().job(2).unwrap().unwrap();
    assert_eq!(job.cost["llm_calls"], 2);
    assert_eq!(job.cost["prompt_tokens"], 200);
    assert_eq!(script.lock().unwrap().requests.len(), 3);

    // A re-run (as after a crash once the plan was stored) applies nothing
    // twice and asks the model nothing.
    let before = h.stats().unwrap().memories;
    for id in [1, 2] {
        h.store()
            .update_job(
                id,
                JobUpdate {
                    state: Some(JobState::Pending),
                    ..Default::default()
                },
                h.now(),
            )
            .unwrap();
    }
    assert_eq!(run_all(&h), 2);
    assert_eq!(h.stats().unwrap().memories, before);
    assert_eq!(h.history(profile.id, None).unwrap().versions.len(), 2);
    assert_eq!(script.lock().unwrap().requests.len(), 3);
}

#[test]
fn unreadable_answers_and_failures_are_retried_then_recorded_never_written() {
    let (fake, script) = fakes::openai_chat(ChatScript {
        answers: vec![("hiking".into(), "Sorry, I can't do that.".into())],
        fail_first: 1,
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let h = engine(&dir.path().join("y.db"), &fake.base);
    let s = Scope::user("ana");
    h.add(vec![said(&s, "I went hiking on Sunday.", day(2023, 5, 8))])
        .unwrap();
    let before = h.stats().unwrap().memories;
    // Attempt 1: HTTP 500; then retried later (backoff), not now.
    assert!(h.run_one_job(chrono::Duration::seconds(60), 2).unwrap());
    let job = h.store().job(1).unwrap().unwrap();
    assert_eq!(job.state, JobState::Pending);
    assert!(job.run_after > h.now());
    assert!(job.last_error.as_deref().unwrap().contains("LLM endpoint"));
    assert!(
        !h.run_one_job(chrono::Duration::seconds(60), 2).unwrap(),
        "backing off"
    );
    // Make it due; attempt 2: unreadable answer; out of attempts: failed.
    h.store()
        .update_job(
            1,
            JobUpdate {
                run_after: Some(h.now()),
                ..Default::default()
            },
            h.now(),
        )
        .unwrap();
    assert!(h.run_one_job(chrono::Duration::seconds(60), 2).unwrap());
    let job = h.store().job(1).unwrap().unwrap();
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.cost["unreadable_answers"], 1);
    assert_eq!(h.stats().unwrap().memories, before, "nothing written");
    assert_eq!(script.lock().unwrap().requests.len(), 2);
}

fn eval_ops(fake: &super::fakes::Fake, dir: &std::path::Path) -> serde_json::Value {
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/../../eval/ops.json");
    let out = super::common::hippo(&dir.join("unused.db"))
        .args([
            "--llm-url",
            &format!("{}/v1", fake.base),
            "--llm-model",
            "m",
        ])
        .args(["eval-ops", "--data", data])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The operation-level set (`eval/ops.json`) through the real pipeline and
/// binary: a model that answers as labelled scores 1 everywhere (so the
/// pipeline loses nothing between a right answer and the stored state); a
/// model that answers nonsense scores 0 recall and writes no facts.
#[test]
fn the_operation_level_set_scores_the_pipeline() {
    let data: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../eval/ops.json"))
            .unwrap(),
    )
    .unwrap();
    let (oracle, _) = fakes::openai_chat(ChatScript {
        responder: Some(fakes::ops_oracle(data)),
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let r = eval_ops(&oracle, dir.path());
    for metric in [
        "extraction_precision",
        "extraction_recall",
        "decision_accuracy",
        "state_accuracy",
        "as_of_accuracy",
    ] {
        assert_eq!(
            r[metric],
            1.0,
            "{metric}: {}",
            serde_json::to_string_pretty(&r).unwrap()
        );
    }
    assert_eq!(r["scenarios"], 10);
    assert!(r["llm_calls"].as_u64().unwrap() >= 17);

    let (nonsense, _) = fakes::openai_chat(ChatScript {
        answers: vec![("".into(), "I am a language model and cannot comply.".into())],
        ..Default::default()
    });
    let r = eval_ops(&nonsense, dir.path());
    assert_eq!(r["extraction_recall"], 0.0);
    assert!(r["per_scenario"]
        .as_object()
        .unwrap()
        .values()
        .all(|s| s["current"].as_array().unwrap().is_empty()));
}

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
    // These tests count extraction jobs; digests are tested on their own.
    engine_with(db, llm_base, false)
}

fn engine_with(db: &std::path::Path, llm_base: &str, consolidation: bool) -> Hippo {
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
        .consolidation(consolidation)
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

fn memory_with(h: &Hippo, s: &Scope, text: &str) -> hippo::Memory {
    h.list(
        Some(s),
        &Filter::default(),
        None,
        100,
        hippo::Order::Ascending,
    )
    .unwrap()
    .memories
    .into_iter()
    .find(|m| m.content == text)
    .unwrap_or_else(|| panic!("no memory {text:?}"))
}

/// A-MEM notes: extracted facts carry keywords, tags and context; the
/// decision links the new fact to related ones (both ways) and evolves the
/// older note; the older fact's words stay, its note change is logged; a
/// re-run applies nothing twice.
#[test]
fn extracted_facts_carry_notes_that_link_and_evolve() {
    let (fake, script) = fakes::openai_chat(ChatScript {
        answers: vec![
            (
                "started violin lessons".into(),
                r#"{"facts": [{"text": "Ana takes violin lessons.", "kind": "fact",
                    "keywords": ["violin", "lessons"], "tags": ["Music", "learning"],
                    "context": "Ana picked up an instrument as an adult."}]}"#
                    .into(),
            ),
            (
                "first concert".into(),
                r#"{"facts": [{"text": "Ana played her first violin concert.",
                    "keywords": ["concert"], "tags": ["music"], "context": "A milestone."}]}"#
                    .into(),
            ),
            (
                "New fact: Ana played her first violin concert.".into(),
                r#"{"event": "ADD", "reason": "new event", "links": [0],
                    "evolve": [{"index": 0, "tags": ["music", "performing"],
                                "context": "Ana's lessons led to public performances."}]}"#
                    .into(),
            ),
        ],
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let h = engine(&dir.path().join("n.db"), &fake.base);
    let s = Scope::user("ana");
    h.add(vec![said(
        &s,
        "I started violin lessons this spring!",
        day(2023, 3, 1),
    )])
    .unwrap();
    h.add(vec![said(
        &s,
        "Tonight was my first concert, on the violin.",
        day(2023, 9, 1),
    )])
    .unwrap();
    assert_eq!(run_all(&h), 2);

    let lessons = memory_with(&h, &s, "Ana takes violin lessons.");
    let concert = memory_with(&h, &s, "Ana played her first violin concert.");
    let note = |m: &hippo::Memory| hippo::notes::Note::of(&m.metadata);
    assert_eq!(note(&concert).keywords, vec!["concert"]);
    assert_eq!(note(&concert).links, vec![lessons.id]);
    let evolved = note(&lessons);
    assert_eq!(evolved.keywords, vec!["violin", "lessons"]);
    assert_eq!(evolved.tags, vec!["music", "performing"]);
    assert_eq!(
        evolved.context.as_deref(),
        Some("Ana's lessons led to public performances.")
    );
    assert_eq!(evolved.links, vec![concert.id], "links go both ways");
    assert_eq!(
        lessons.content, "Ana takes violin lessons.",
        "what was said stays"
    );
    let history = h.history(lessons.id, None).unwrap();
    assert_eq!(history.versions.len(), 1, "a note change is no new version");
    let e = history
        .events
        .iter()
        .find(|e| e.kind == EventKind::Evolved)
        .unwrap();
    assert_eq!(e.origin, "llm");
    assert_eq!(
        e.detail["before"]["tags"],
        serde_json::json!(["music", "learning"])
    );
    assert_eq!(e.detail["linked"], concert.id.to_string());
    let plan = h.store().job(2).unwrap().unwrap().plan.unwrap();
    assert_eq!(plan[1]["op"], "evolve");

    // A re-run of the second job applies nothing twice, asks nothing.
    let calls = script.lock().unwrap().requests.len();
    h.store()
        .update_job(
            2,
            JobUpdate {
                state: Some(JobState::Pending),
                ..Default::default()
            },
            h.now(),
        )
        .unwrap();
    assert_eq!(run_all(&h), 1);
    assert_eq!(
        h.history(lessons.id, None).unwrap().events.len(),
        history.events.len()
    );
    assert_eq!(script.lock().unwrap().requests.len(), calls);
    let usage = h.llm_usage();
    let calls_of = |op: &str| {
        usage
            .iter()
            .find(|(o, _)| *o == op)
            .map_or(0, |(_, t)| t.calls)
    };
    assert_eq!((calls_of("extract"), calls_of("decide")), (2, 1));
}

/// With an LLM, consolidation writes the model's session summary and the
/// profile paragraph; an answer that invents is not used (the extractive
/// digest stands); a digest whose sources did not change costs no call.
#[test]
fn the_llm_summarises_sessions_and_writes_profiles_when_grounded() {
    let (fake, script) = fakes::openai_chat(ChatScript {
        responder: Some(Arc::new(|last: &str| {
            if last.starts_with("Facts:") {
                return Some(
                    r#"{"profile": "Ana is a nurse who lives in Denver and owns a dog named Rex."}"#
                        .into(),
                );
            }
            if last.starts_with("Name:") {
                return Some("not json".into());
            }
            if last.contains("garden") {
                // Invented: nothing of this was said.
                return Some(
                    r#"{"summary": "Zed negotiated submarine contracts in Oslo with a banker."}"#
                        .into(),
                );
            }
            if last.contains("Rex") {
                return Some(
                    r#"{"summary": "Ana told Ben that her dog Rex loves the new park in Denver."}"#
                        .into(),
                );
            }
            None
        })),
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let h = engine_with(&dir.path().join("c.db"), &fake.base, true);
    let s1 = Scope {
        user_id: Some("ana".into()),
        agent_id: None,
        session_id: Some("s1".into()),
    };
    let turn = |s: &Scope, who: &str, text: &str, minute: i64| {
        let mut item = AddItem::message(s.clone(), "user", Some(who), text);
        item.event_time = Some(day(2023, 4, 2) + chrono::Duration::minutes(minute));
        item
    };
    h.add(vec![
        turn(&s1, "Ana", "My dog Rex loves the new park in Denver.", 0),
        turn(&s1, "Ben", "Rex must be so happy there!", 1),
        turn(
            &s1,
            "Ana",
            "Rex runs around the park in Denver all morning.",
            2,
        ),
    ])
    .unwrap();
    let mut nurse = AddItem::text(Scope::user("ana"), "Ana works as a nurse.");
    nurse.kind = Some(MemoryKind::Profile);
    let mut denver = AddItem::text(Scope::user("ana"), "Ana lives in Denver with her dog Rex.");
    denver.kind = Some(MemoryKind::Profile);
    h.add(vec![nurse, denver]).unwrap();
    run_all(&h);

    let digest = h
        .list(
            Some(&s1),
            &Filter {
                kinds: vec![MemoryKind::Summary],
                ..Default::default()
            },
            None,
            10,
            hippo::Order::Ascending,
        )
        .unwrap()
        .memories
        .into_iter()
        .find(|m| m.metadata["digest"] == "session")
        .unwrap();
    assert_eq!(digest.metadata["method"], "llm");
    assert!(
        digest
            .content
            .ends_with("Ana told Ben that her dog Rex loves the new park in Denver."),
        "{}",
        digest.content
    );
    assert!(digest
        .content
        .starts_with("Conversation s1 (2023-04-02): 3 messages"));
    let profile = h.profile(&Scope::user("ana")).unwrap().unwrap();
    assert_eq!(
        profile.content,
        "Ana is a nurse who lives in Denver and owns a dog named Rex."
    );
    assert_eq!(profile.metadata["method"], "llm");
    // The Rex timeline's summary was unreadable: the timeline stands alone.
    let rex = h
        .list(
            Some(&Scope::user("ana")),
            &Filter::default(),
            None,
            100,
            hippo::Order::Ascending,
        )
        .unwrap()
        .memories
        .into_iter()
        .find(|m| m.metadata.get("entity").is_some_and(|e| e == "Rex"))
        .unwrap();
    assert_eq!(rex.metadata["method"], "extractive");
    assert!(
        rex.content
            .starts_with("Timeline of Rex (3 mentions): 2023-04-02"),
        "{}",
        rex.content
    );

    // An invented summary is not used.
    let s2 = Scope {
        session_id: Some("s2".into()),
        ..s1.clone()
    };
    h.add(vec![
        turn(&s2, "Ana", "The tomatoes in my garden are finally red.", 10),
        turn(
            &s2,
            "Ben",
            "Will you make sauce from the garden tomatoes?",
            11,
        ),
        turn(&s2, "Ana", "Yes, a big pot of sauce this weekend.", 12),
    ])
    .unwrap();
    run_all(&h);
    let digest2 = h
        .list(
            Some(&s2),
            &Filter {
                kinds: vec![MemoryKind::Summary],
                ..Default::default()
            },
            None,
            10,
            hippo::Order::Ascending,
        )
        .unwrap()
        .memories
        .remove(0);
    assert_eq!(digest2.metadata["method"], "extractive");
    assert!(!digest2.content.contains("submarine"));
    let usage = h.llm_usage();
    let summary = usage.iter().find(|(o, _)| *o == "summary").unwrap().1;
    assert!(summary.unusable >= 2, "{summary:?}");

    // Nothing changed: rebuilding asks the model nothing.
    let calls = script.lock().unwrap().requests.len();
    h.consolidate(&hippo::consolidate::Touched {
        sessions: [s1.clone(), s2.clone()].into(),
        profiles: [Scope::user("ana")].into(),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(script.lock().unwrap().requests.len(), calls);
    // The jobs' cost records the calls.
    let mut id = 1;
    let mut job_calls = 0;
    while let Some(job) = h.store().job(id).unwrap() {
        job_calls += job
            .cost
            .get("llm_calls")
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        id += 1;
    }
    assert_eq!(job_calls as usize, calls);
}

/// Over REST with an LLM: the profile endpoint (400 without an owner, 404
/// before one is built, the LLM's paragraph after), LLM usage per operation
/// in `/metrics`, and the consolidation delay of `serve` (config).
#[test]
fn profiles_and_llm_usage_are_served_over_rest() {
    let (fake, _script) = fakes::openai_chat(ChatScript {
        answers: vec![("Facts:".into(), r#"{"profile": "Ana is a nurse."}"#.into())],
        echo: true,
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hippo.toml");
    std::fs::write(&config, "consolidation_delay_secs = 0\n").unwrap();
    let llm_url = format!("{}/v1", fake.base);
    let server = super::common::Server::start(
        &dir.path().join("r.db"),
        &[
            "--llm-url",
            &llm_url,
            "--llm-model",
            "scripted",
            "--config",
            config.to_str().unwrap(),
        ],
    );
    let (st, body) = server.call("GET", "/v1/profile", None);
    assert_eq!(st, 400, "{body}");
    let (st, body) = server.call("GET", "/v1/profile?user_id=ana", None);
    assert_eq!(
        (st, body["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    let (st, body) = server.call(
        "POST",
        "/v1/memories",
        Some(
            serde_json::json!({"user_id": "ana", "kind": "profile", "text": "Ana works as a nurse.",
            "infer": false}),
        ),
    );
    assert_eq!(st, 200, "{body}");
    let (st, body) = server.call(
        "POST",
        "/v1/memories",
        Some(serde_json::json!({"user_id": "ana", "infer": true,
            "messages": [{"role": "user", "name": "Ana", "content": "Ana enjoys long walks."}]})),
    );
    assert_eq!(st, 200, "{body}");
    let mut profile = serde_json::Value::Null;
    for _ in 0..100 {
        let (st, body) = server.call("GET", "/v1/profile?user_id=ana", None);
        let (_, jobs) = server.call("GET", "/v1/jobs", None);
        if st == 200 && jobs["pending"] == 0 && jobs["running"] == 0 {
            profile = body;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(profile["memory"], "Ana is a nurse.", "{profile}");
    assert_eq!(profile["kind"], "profile");
    assert_eq!(profile["metadata"]["digest"], "profile");
    // The jobs are listed, newest first, each as `GET /v1/jobs/{id}` has it.
    let (st, listed) = server.call("GET", "/v1/jobs?state=done&limit=50", None);
    assert_eq!(st, 200, "{listed}");
    let jobs = listed["jobs"].as_array().unwrap();
    assert!(!jobs.is_empty(), "{listed}");
    assert!(jobs
        .iter()
        .all(|j| j["state"] == "done" && j["user_id"] == "ana"));
    assert!(jobs
        .windows(2)
        .all(|w| w[0]["id"].as_i64() > w[1]["id"].as_i64()));
    let extract = jobs.iter().find(|j| j["kind"] == "extract").unwrap();
    let (_, one) = server.call("GET", &format!("/v1/jobs/{}", extract["id"]), None);
    assert_eq!(&one, extract);
    assert!(
        extract["cost"]["llm_calls"].as_u64().unwrap() >= 1,
        "{extract}"
    );
    let (_, none) = server.call("GET", "/v1/jobs?state=failed", None);
    assert!(none["jobs"].as_array().unwrap().is_empty());
    let (_, page) = server.call("GET", "/v1/jobs?limit=1", None);
    let next = page["next_before"].as_i64().unwrap();
    let (_, rest) = server.call("GET", &format!("/v1/jobs?limit=1&before={next}"), None);
    assert!(rest["jobs"][0]["id"].as_i64().unwrap() < next);
    for bad in ["/v1/jobs?state=stuck", "/v1/jobs?limit=500"] {
        assert_eq!(server.call("GET", bad, None).0, 400, "{bad}");
    }
    let (_, metrics) = server.call("GET", "/metrics", None);
    let metrics = metrics.as_str().unwrap();
    for line in [
        "hippo_llm_calls_total{operation=\"extract\"} 1",
        "hippo_llm_calls_total{operation=\"profile\"} 1",
        "hippo_llm_prompt_tokens_total{operation=\"profile\"} 100",
        "hippo_llm_completion_tokens_total{operation=\"extract\"} 20",
    ] {
        assert!(metrics.contains(line), "{line} missing in\n{metrics}");
    }
}

//! Export → erase → import gives back the same memory: every search answers
//! exactly as before. On the LoCoMo dev split when it is at hand
//! (`$HIPPO_DEV_DATA`, default `../shared/data/locomo/locomo_dev.json` next to
//! the repository), else on generated conversations in the same format.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hippo::{
    Embedder, Hippo, MiniLmEmbedder, Scope, SearchRequest, SqliteStore, SqliteStoreOptions,
};
use hippo_server::io;
use serde_json::{json, Value};

use crate::common::model_dir;

fn dev_data() -> Option<PathBuf> {
    let path = std::env::var_os("HIPPO_DEV_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../../shared/data/locomo/locomo_dev.json")
        });
    path.is_file().then_some(path)
}

/// Conversations in LoCoMo's format with questions, when the dev data is
/// not at hand.
fn generated(dir: &Path) -> PathBuf {
    let topics = [
        (
            "Ida",
            "Max",
            "climbing in Yosemite",
            "baking sourdough",
            "a new puppy named Biscuit",
        ),
        (
            "Noor",
            "Leo",
            "a pottery class",
            "training for a marathon",
            "moving to Rotterdam",
        ),
    ];
    let samples: Vec<Value> = topics
        .iter()
        .enumerate()
        .map(|(i, (a, b, x, y, z))| {
            let turns: Vec<Value> = (0..30)
                .map(|t| {
                    let (who, what) = match t % 3 {
                        0 => (a, format!("Yesterday I went on about {x} again, day {t}.")),
                        1 => (b, format!("I spent the evening {y}; it is going well, week {t}.")),
                        _ => (a, format!("Also, news: {z} — update number {t}.")),
                    };
                    json!({"speaker": who, "dia_id": format!("D1:{t}"), "text": what})
                })
                .collect();
            json!({
                "sample_id": format!("gen-{i}"),
                "conversation": {"speaker_a": a, "speaker_b": b,
                    "session_1_date_time": "1:56 pm on 8 May, 2023", "session_1": turns},
                "qa": [
                    {"question": format!("What does {a} do for fun?"), "answer": x, "category": 4},
                    {"question": format!("What is {b} doing in the evenings?"), "answer": y, "category": 4},
                    {"question": format!("What is {a}'s news?"), "answer": z, "category": 4},
                ]
            })
        })
        .collect();
    let path = dir.join("generated.json");
    std::fs::write(&path, Value::Array(samples).to_string()).unwrap();
    path
}

/// Every question's top 10: (id, score) in order.
fn answers(hippo: &Hippo, data: &Value) -> Vec<Vec<(String, f32)>> {
    let mut out = Vec::new();
    for sample in data.as_array().unwrap() {
        let user = sample["sample_id"].as_str().unwrap();
        for qa in sample["qa"].as_array().unwrap() {
            let mut req = SearchRequest::new(Scope::user(user), qa["question"].as_str().unwrap());
            req.top_k = 10;
            let hits = hippo.search(&req).unwrap().hits;
            out.push(
                hits.iter()
                    .map(|h| (h.memory.id.to_string(), h.score))
                    .collect(),
            );
        }
    }
    out
}

#[test]
fn export_erase_import_restores_identical_search_results() {
    let dir = tempfile::tempdir().unwrap();
    let (file, source) = match dev_data() {
        Some(f) => (f, "LoCoMo dev split"),
        None => (generated(dir.path()), "generated conversations"),
    };
    let data: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let embedder: Arc<dyn Embedder> = Arc::new(MiniLmEmbedder::from_dir(&model_dir()).unwrap());
    let store = SqliteStore::open(SqliteStoreOptions::new(
        dir.path().join("p.db"),
        embedder.model_id(),
        embedder.dimension(),
    ))
    .unwrap();
    // A frozen clock: recency is part of the score, and the two searches
    // must be compared at the same instant.
    let clock = Arc::new(hippo::clock::ManualClock::new(chrono::Utc::now()));
    let hippo = Hippo::builder()
        .store(Arc::new(store))
        .embedder(embedder)
        .clock(clock)
        .build()
        .unwrap();

    let imported = io::import(&hippo, &file, "locomo", &Scope::default()).unwrap();
    // History to carry over: a revision (an earlier version and its event)
    // and feedback (usage, strength) on the first question's best memory.
    let first = answers(&hippo, &data)[0][0].0.parse().unwrap();
    let old = hippo.get(first, None).unwrap().content;
    hippo
        .update(
            first,
            None,
            hippo::MemoryPatch {
                content: Some(format!("{old} (confirmed)")),
                reason: Some("checked with the speaker".into()),
                ..Default::default()
            },
        )
        .unwrap();
    hippo
        .feedback(
            first,
            None,
            hippo::Signal::Helpful,
            Some("answered a question".into()),
        )
        .unwrap();
    let history = |h: &Hippo| {
        let h = h.history(first, None).unwrap();
        let versions: Vec<(String, String, Option<String>)> = h
            .versions
            .iter()
            .map(|v| {
                (
                    v.id.to_string(),
                    v.content.clone(),
                    v.valid_to.map(|t| t.to_rfc3339()),
                )
            })
            .collect();
        let events: Vec<String> = h
            .events
            .iter()
            .map(|e| serde_json::to_string(e).unwrap())
            .collect();
        (versions, events)
    };
    let history_before = history(&hippo);
    assert_eq!(history_before.0.len(), 2);
    assert!(history_before.1.len() >= 2, "{:?}", history_before.1);
    let before = answers(&hippo, &data);
    let questions = before.len();
    assert!(before.iter().all(|a| !a.is_empty()));

    let export = dir.path().join("export.jsonl");
    let exported = io::export(&hippo, None, std::fs::File::create(&export).unwrap()).unwrap();
    assert!(exported >= imported, "{exported} < {imported}");

    for sample in data.as_array().unwrap() {
        hippo
            .delete_scope(&Scope::user(sample["sample_id"].as_str().unwrap()))
            .unwrap();
    }
    assert_eq!(hippo.stats().unwrap().memories, 0, "erased");
    assert!(answers(&hippo, &data).iter().all(|a| a.is_empty()));

    let restored = io::import(&hippo, &export, "jsonl", &Scope::default()).unwrap();
    assert_eq!(restored, exported);
    assert_eq!(
        history(&hippo),
        history_before,
        "history changed across export → import"
    );
    let after = answers(&hippo, &data);
    // Same memories in the same order; scores equal up to float noise (a
    // re-embedded text lands in another batch shape).
    for (q, (b, a)) in before.iter().zip(&after).enumerate() {
        let ids = |x: &Vec<(String, f32)>| x.iter().map(|(i, _)| i.clone()).collect::<Vec<_>>();
        assert_eq!(
            ids(b),
            ids(a),
            "question {q}: different results after export → erase → import"
        );
        for ((_, sb), (_, sa)) in b.iter().zip(a) {
            assert!(
                (sb - sa).abs() < 1e-4,
                "question {q}: score {sb} became {sa}"
            );
        }
    }
    eprintln!(
        "portability: {source}: {imported} turns imported, {exported} memories exported and restored, \
         {questions} questions answered identically"
    );
}

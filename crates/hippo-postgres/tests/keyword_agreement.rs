//! How closely the Postgres keyword channel (ParadeDB BM25) agrees with the
//! SQLite one (FTS5's BM25) on a LoCoMo-format file: top-10 overlap and
//! evidence found, per question. A measurement, run by hand:
//!
//! ```sh
//! HIPPO_TEST_POSTGRES=$(scripts/pg.sh) HIPPO_LOCOMO=../shared/data/locomo/locomo_dev.json \
//!   cargo test --release -p hippo-postgres --test keyword_agreement -- --ignored --nocapture
//! ```

use std::collections::HashSet;

use chrono::{NaiveDateTime, TimeZone, Utc};
use hippo::model::{content_hash, Actor, Filter, Memory, MemoryKind, Provenance};
use hippo::store::{InsertBatch, KeywordQuery, NewMemory, SqliteStore, SqliteStoreOptions, Store};
use hippo::Scope;
use hippo_postgres::{PgDatabase, PgOptions};
use serde_json::Value;

fn turn(scope: &Scope, name: &str, text: &str, dia: &str, when: chrono::DateTime<Utc>) -> Memory {
    let mut metadata = serde_json::Map::new();
    metadata.insert("dia_id".into(), Value::String(dia.into()));
    Memory {
        id: uuid::Uuid::now_v7(),
        scope: scope.clone(),
        kind: MemoryKind::Message,
        content: text.into(),
        actor: Actor {
            role: Some("user".into()),
            name: Some(name.into()),
        },
        metadata,
        event_time: Some(when),
        recorded_at: Utc::now(),
        updated_at: Utc::now(),
        provenance: Provenance::default(),
        content_hash: content_hash(text),
        embedding_model: None,
        valid_from: None,
        valid_to: None,
        version_of: None,
        status: Default::default(),
        dedup_key: None,
        expires_at: None,
        usage: Default::default(),
        flags: Vec::new(),
    }
}

#[test]
#[ignore = "a measurement: needs HIPPO_LOCOMO and HIPPO_TEST_POSTGRES"]
fn keyword_channels_agree() {
    let data: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(std::env::var("HIPPO_LOCOMO").expect("HIPPO_LOCOMO")).unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sqlite =
        SqliteStore::open(SqliteStoreOptions::new(dir.path().join("k.db"), "m", 4)).unwrap();
    let db = PgDatabase::connect(&PgOptions::new(
        std::env::var("HIPPO_TEST_POSTGRES").unwrap(),
    ))
    .unwrap();
    let pg = db
        .store(&format!("kw-{}", uuid::Uuid::new_v4().simple()), "m", 4)
        .unwrap();
    let (mut questions, mut overlap, mut found_sqlite, mut found_pg, mut evidence) =
        (0, 0usize, 0usize, 0usize, 0usize);
    for conv in &data {
        let scope = Scope::user(conv["sample_id"].as_str().unwrap());
        let c = conv["conversation"].as_object().unwrap();
        let mut batch = Vec::new();
        for i in 1.. {
            let Some(turns) = c.get(&format!("session_{i}")).and_then(Value::as_array) else {
                break;
            };
            let date = c[&format!("session_{i}_date_time")].as_str().unwrap_or("");
            let when = NaiveDateTime::parse_from_str(date, "%I:%M %p on %d %B, %Y")
                .map(|d| Utc.from_utc_datetime(&d))
                .unwrap_or_else(|_| Utc::now());
            for t in turns {
                batch.push(turn(
                    &scope,
                    t["speaker"].as_str().unwrap(),
                    t["text"].as_str().unwrap(),
                    t["dia_id"].as_str().unwrap(),
                    when,
                ));
            }
        }
        for chunk in batch.chunks(200) {
            for store in [&sqlite as &dyn Store, &pg] {
                store
                    .insert(InsertBatch {
                        memories: chunk
                            .iter()
                            .map(|m| NewMemory {
                                memory: m.clone(),
                                vector: None,
                            })
                            .collect(),
                        ..Default::default()
                    })
                    .unwrap();
            }
        }
        let dia: std::collections::HashMap<_, _> = batch
            .iter()
            .map(|m| (m.id, m.metadata["dia_id"].as_str().unwrap().to_owned()))
            .collect();
        for qa in conv["qa"].as_array().unwrap() {
            let Some(ev) = qa["evidence"].as_array().filter(|e| !e.is_empty()) else {
                continue;
            };
            if qa["category"].as_i64() == Some(5) {
                continue;
            }
            let ev: HashSet<String> = ev
                .iter()
                .filter_map(|e| e.as_str().map(Into::into))
                .collect();
            let terms = hippo::text::query_terms(qa["question"].as_str().unwrap());
            let filter = Filter::default();
            let q = KeywordQuery {
                scope: &scope,
                filter: &filter,
                terms: &terms,
                limit: 10,
            };
            let a: Vec<_> = sqlite
                .keyword_candidates(&q)
                .unwrap()
                .iter()
                .map(|c| c.id)
                .collect();
            let b: Vec<_> = pg
                .keyword_candidates(&q)
                .unwrap()
                .iter()
                .map(|c| c.id)
                .collect();
            questions += 1;
            overlap += a.iter().filter(|x| b.contains(x)).count();
            evidence += ev.len();
            found_sqlite += a.iter().filter(|x| ev.contains(&dia[x])).count();
            found_pg += b.iter().filter(|x| ev.contains(&dia[x])).count();
        }
    }
    println!(
        "questions {questions}: top-10 overlap {:.3}; evidence found@10 sqlite {:.3} postgres {:.3}",
        overlap as f64 / (questions * 10) as f64,
        found_sqlite as f64 / evidence as f64,
        found_pg as f64 / evidence as f64
    );
}

/// The keyword channel scores as the SQLite store's does (FTS5's BM25 with
/// this tenant's statistics), so a query ranks the same on both stores.
#[test]
fn keyword_scores_equal_the_sqlite_stores() {
    let url = std::env::var("HIPPO_TEST_POSTGRES")
        .ok()
        .filter(|u| !u.is_empty())
        .expect("HIPPO_TEST_POSTGRES is not set: start a Postgres with scripts/pg.sh (scripts/test.sh does)");
    let dir = tempfile::tempdir().unwrap();
    let sqlite =
        SqliteStore::open(SqliteStoreOptions::new(dir.path().join("k.db"), "m", 4)).unwrap();
    let db = PgDatabase::connect(&PgOptions::new(url)).unwrap();
    let pg = db
        .store(&format!("kw-{}", uuid::Uuid::new_v4().simple()), "m", 4)
        .unwrap();
    let when = Utc.with_ymd_and_hms(2023, 5, 8, 13, 56, 0).unwrap();
    let words = [
        "dog", "beagle", "park", "running", "marathon", "paint", "sunset", "lake", "adopted",
        "support", "group", "pottery", "camping", "guitar", "concert", "Paris", "visited", "kids",
        "school", "book",
    ];
    let mut memories = Vec::new();
    for (s, user) in ["ana", "bob"].iter().enumerate() {
        let scope = Scope::user(*user);
        for i in 0..40 {
            // Deterministic, varied texts: some words often, some rarely.
            let text: Vec<&str> = (0..(3 + i % 7))
                .map(|j| words[(i * 7 + j * j * 3 + s) % words.len()])
                .collect();
            let name = if i % 2 == 0 { "Ana" } else { "Bob" };
            memories.push(turn(
                &scope,
                name,
                &text.join(" "),
                &format!("D{s}:{i}"),
                when,
            ));
        }
    }
    for store in [&sqlite as &dyn Store, &pg] {
        store
            .insert(InsertBatch {
                memories: memories
                    .iter()
                    .map(|m| NewMemory {
                        memory: m.clone(),
                        vector: None,
                    })
                    .collect(),
                ..Default::default()
            })
            .unwrap();
    }
    // Deleting and changing documents keeps the statistics right.
    for store in [&sqlite as &dyn Store, &pg] {
        store.delete(&[memories[3].id, memories[50].id]).unwrap();
    }
    let filter = Filter::default();
    let mut compared = 0;
    for query in [
        "Where did Ana go running?",
        "beagle dog adopted",
        "Bob pottery camping guitar",
        "Paris sunset lake",
        "what book did the kids read at school",
        "Ana",
    ] {
        for user in ["ana", "bob"] {
            let scope = Scope::user(user);
            let terms = hippo::text::query_terms(query);
            let q = KeywordQuery {
                scope: &scope,
                filter: &filter,
                terms: &terms,
                limit: 10,
            };
            let a = sqlite.keyword_candidates(&q).unwrap();
            let b = pg.keyword_candidates(&q).unwrap();
            assert_eq!(a.len(), b.len(), "{query:?} for {user}");
            for (x, y) in a.iter().zip(&b) {
                assert!(
                    (x.score - y.score).abs() <= 1e-4 * x.score.abs().max(1.0),
                    "{query:?}: {x:?} vs {y:?}"
                );
            }
            let ids =
                |v: &[hippo::store::Candidate]| v.iter().map(|c| c.id).collect::<HashSet<_>>();
            // Ties may order differently at the cut; the sets above the
            // last score agree.
            let last = a.last().map_or(0.0, |c| c.score);
            let above = |v: &[hippo::store::Candidate]| {
                v.iter()
                    .filter(|c| c.score > last + 1e-4)
                    .map(|c| c.id)
                    .collect::<HashSet<_>>()
            };
            assert_eq!(above(&a), above(&b), "{query:?} for {user}");
            compared += ids(&a).len();
        }
    }
    assert!(
        compared > 50,
        "the queries must match something ({compared})"
    );
}

//! A small scope is searched by reading its rows
//! (`PgOptions::exact_scope_rows`) instead of through the table's BM25 and
//! HNSW indexes: both ways must find the same candidates with the same
//! scores, and the rows read must be the exact answer.

use std::collections::HashSet;

use chrono::{Duration, Utc};
use hippo::model::Filter;
use hippo::store::{conformance, Candidate, InsertBatch, KeywordQuery, NewMemory, VectorQuery};
use hippo::{MemoryKind, Scope, Store};
use hippo_postgres::{PgDatabase, PgOptions};

fn url() -> String {
    std::env::var("HIPPO_TEST_POSTGRES")
        .ok()
        .filter(|u| !u.is_empty())
        .expect("HIPPO_TEST_POSTGRES is not set: start a Postgres with scripts/pg.sh (scripts/test.sh does)")
}

/// A deterministic unit vector, different for every `i`.
fn vector(i: usize) -> Vec<f32> {
    let v: Vec<f32> = (0..4)
        .map(|d| (((i * 7919 + d * 104_729) % 1000) as f32 / 500.0) - 1.0)
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
    v.iter().map(|x| x / n).collect()
}

const WORDS: [&str; 12] = [
    "beagle", "park", "marathon", "sunset", "lake", "pottery", "guitar", "concert", "Paris",
    "school", "book", "camping",
];

fn ids(v: &[Candidate]) -> Vec<uuid::Uuid> {
    v.iter().map(|c| c.id).collect()
}

#[test]
fn small_scopes_read_exactly_find_what_the_indexes_find() {
    let exact_db = PgDatabase::connect(&PgOptions::new(url())).unwrap();
    let indexed_db = PgDatabase::connect(&PgOptions {
        exact_scope_rows: 0,
        ..PgOptions::new(url())
    })
    .unwrap();
    let tenant = format!("scope-{}", uuid::Uuid::new_v4().simple());
    let exact = exact_db.store(&tenant, "m", 4).unwrap();
    let indexed = indexed_db.store(&tenant, "m", 4).unwrap();

    // Ana's 40 memories among 1,000 of others: a small enough part of the
    // table that the vector channel's cost model reads her rows too (for 20
    // candidates it does past 640 rows).
    let ana = Scope::user("ana");
    let mut written = Vec::new();
    for i in 0..1040 {
        let scope = if i < 40 {
            ana.clone()
        } else {
            Scope::user(format!("u{}", i % 10))
        };
        let text: Vec<&str> = (0..(2 + i % 5))
            .map(|j| WORDS[(i * 5 + j * j * 3) % WORDS.len()])
            .collect();
        let mut m = conformance::memory(scope, &text.join(" "), Some("Ana"));
        if i % 4 == 1 {
            m.kind = MemoryKind::Fact;
        }
        if i % 9 == 2 {
            m.valid_to = Some(Utc::now() - Duration::days(1));
        }
        written.push((m.clone(), vector(i)));
    }
    exact
        .insert(InsertBatch {
            memories: written
                .iter()
                .map(|(m, v)| NewMemory {
                    memory: m.clone(),
                    vector: Some(v.clone()),
                })
                .collect(),
            ..Default::default()
        })
        .unwrap();
    // The planner's row count, which the cost model reads.
    let mut client = postgres::Client::connect(&url(), postgres::NoTls).unwrap();
    client.batch_execute("ANALYZE memories").unwrap();
    let rows: f32 = client
        .query_one(
            "SELECT reltuples FROM pg_class WHERE oid = 'memories'::regclass",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(rows >= 1040.0, "{rows}");

    let now = Utc::now();
    let filters = [
        Filter {
            now: Some(now),
            ..Filter::default()
        },
        Filter {
            now: Some(now),
            kinds: vec![MemoryKind::Fact],
            ..Filter::default()
        },
    ];
    for filter in &filters {
        for probe in [3, 17, 101, 250] {
            let query = vector(probe);
            let q = VectorQuery {
                scope: &ana,
                filter,
                vector: &query,
                limit: 20,
            };
            let a = exact.vector_candidates(&q).unwrap();
            let b = indexed.vector_candidates(&q).unwrap();
            // The exact answer, computed here.
            let mut expected: Vec<(f32, uuid::Uuid)> = written[..40]
                .iter()
                .filter(|(m, _)| filter.kinds.is_empty() || filter.kinds.contains(&m.kind))
                .filter(|(m, _)| m.valid_to.is_none_or(|t| t > now))
                .map(|(m, v)| (v.iter().zip(&query).map(|(x, y)| x * y).sum(), m.id))
                .collect();
            expected.sort_by(|x, y| y.0.total_cmp(&x.0));
            expected.truncate(20);
            assert!(!expected.is_empty());
            assert_eq!(
                ids(&a),
                expected.iter().map(|e| e.1).collect::<Vec<_>>(),
                "exact, probe {probe}, kinds {:?}",
                filter.kinds
            );
            for (c, e) in a.iter().zip(&expected) {
                assert!((c.score - e.0).abs() < 1e-4, "{c:?} vs {e:?}");
            }
            assert_eq!(ids(&a), ids(&b), "indexed, probe {probe}");
        }
        for query in ["beagle in the park", "Paris concert by the lake", "Ana"] {
            let terms = hippo::text::query_terms(query);
            let q = KeywordQuery {
                scope: &ana,
                filter,
                terms: &terms,
                limit: 10,
            };
            let a = exact.keyword_candidates(&q).unwrap();
            let b = indexed.keyword_candidates(&q).unwrap();
            assert!(!a.is_empty(), "{terms:?}");
            assert_eq!(a.len(), b.len(), "{terms:?}");
            for (x, y) in a.iter().zip(&b) {
                assert!(
                    (x.score - y.score).abs() <= 1e-4 * x.score.max(1.0),
                    "{x:?} vs {y:?}"
                );
            }
            let mine: HashSet<uuid::Uuid> = written[..40].iter().map(|(m, _)| m.id).collect();
            assert!(a.iter().all(|c| mine.contains(&c.id)), "{terms:?}");
        }
    }
}

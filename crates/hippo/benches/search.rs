//! Search hot paths: the exact vector scan at 100k vectors in one scope, and
//! store candidate queries (keyword + vector) on a 20k-memory SQLite file.

use criterion::{criterion_group, criterion_main, Criterion};

use hippo::model::{content_hash, Actor, Filter, Memory, MemoryId, MemoryKind, Provenance, Scope};
use hippo::store::keywords::{KeywordDoc, KeywordIndex};
use hippo::store::slots::SlotFields;
use hippo::store::vectors::VectorIndex;
use hippo::store::{
    InsertBatch, KeywordQuery, NewMemory, SqliteStore, SqliteStoreOptions, Store, VectorQuery,
};

const DIM: usize = 384;
const WORDS: &[&str] = &[
    "garden",
    "coffee",
    "river",
    "piano",
    "travel",
    "doctor",
    "birthday",
    "concert",
    "recipe",
    "soccer",
    "painting",
    "camping",
    "museum",
    "guitar",
    "festival",
    "library",
    "project",
    "weekend",
    "mountain",
    "friend",
    "adopted",
    "kitten",
    "marathon",
    "volunteer",
    "school",
    "career",
    "family",
    "beach",
    "holiday",
    "book",
];

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> Vec<f32> {
        let mut v: Vec<f32> = (0..DIM)
            .map(|_| (self.next() % 2000) as f32 / 1000.0 - 1.0)
            .collect();
        hippo::embed::normalize(&mut v);
        v
    }
    fn sentence(&mut self) -> String {
        (0..12)
            .map(|_| WORDS[(self.next() % WORDS.len() as u64) as usize])
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn fields(rowid: i64, scope: &Scope) -> SlotFields<'_> {
    SlotFields {
        rowid,
        id: MemoryId::from_u128(rowid as u128),
        scope,
        kind: MemoryKind::Message,
        event_time: None,
        time: 0,
        recorded: 0,
        status: hippo::Status::Active,
        valid_from: 0,
        valid_to: None,
        scheduled_from: None,
    }
}

fn vector_scan(c: &mut Criterion) {
    let mut rng = Rng(7);
    let mut index = VectorIndex::new(DIM);
    let scope = Scope::user("u0");
    for i in 0..100_000 {
        index.upsert(fields(i, &scope), &rng.unit());
    }
    let q = rng.unit();
    c.bench_function("vector_scan/100k_one_scope_top50", |b| {
        b.iter(|| index.search(&scope, &Filter::default(), None, &q, 50))
    });
    // A small scope inside the large index: only its own postings are scanned.
    let small = Scope::user("small");
    for i in 0..1000 {
        index.upsert(fields(1_000_000 + i, &small), &rng.unit());
    }
    c.bench_function("vector_scan/1k_scope_in_101k", |b| {
        b.iter(|| index.search(&small, &Filter::default(), None, &q, 50))
    });
}

/// The keyword mirror at 100k documents in one scope, Zipf-distributed words
/// from a 20k vocabulary: a query of one rare, one mid and two very common words.
fn keyword_index(c: &mut Criterion) {
    let mut rng = Rng(5);
    let mut index = KeywordIndex::new();
    let scope = Scope::user("u0");
    // Inverse-CDF sampling of a Zipf(1) law over 20k ranks.
    let zipf = |u: f64| ((20_000f64).powf(u) - 1.0) as usize;
    for i in 0..100_000 {
        let mut doc = KeywordDoc::default();
        for _ in 0..(8 + rng.next() % 16) {
            let u = (rng.next() % 1_000_000) as f64 / 1e6;
            doc.add(&format!("w{}", zipf(u)), 0);
        }
        index.upsert(fields(i, &scope), None, &doc);
    }
    let q: Vec<String> = ["w15000", "w300", "w2", "w0"].map(String::from).to_vec();
    c.bench_function("keyword_index/100k_one_scope_top50", |b| {
        b.iter(|| index.search(&scope, &Filter::default(), None, &q, 50))
    });
    // Long queries of common terms: a Chinese question is split into
    // overlapping bigrams (a hundred for a rambling one), most of them
    // frequent; the engine asks for 100 candidates.
    for n in [8, 100] {
        let mut seen = std::collections::HashSet::new();
        let mut long = Vec::new();
        while long.len() < n {
            let u = (rng.next() % 1_000_000) as f64 / 1e6;
            let t = format!("w{}", zipf(u));
            if seen.insert(t.clone()) {
                long.push(t);
            }
        }
        c.bench_function(
            &format!("keyword_index/100k_one_scope_{n}_terms_top100"),
            |b| b.iter(|| index.search(&scope, &Filter::default(), None, &long, 100)),
        );
    }
}

fn store_candidates(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(SqliteStoreOptions::new(
        dir.path().join("b.db"),
        "bench",
        DIM,
    ))
    .unwrap();
    let mut rng = Rng(11);
    let scope = Scope::user("u0");
    let now = chrono::Utc::now();
    for _ in 0..80 {
        let memories = (0..250)
            .map(|_| {
                let content = rng.sentence();
                NewMemory {
                    memory: Memory {
                        id: MemoryId::now_v7(),
                        scope: scope.clone(),
                        kind: MemoryKind::Message,
                        content_hash: content_hash(&content),
                        content,
                        actor: Actor {
                            role: Some("user".into()),
                            name: Some("Sam".into()),
                        },
                        metadata: Default::default(),
                        event_time: Some(now),
                        recorded_at: now,
                        updated_at: now,
                        provenance: Provenance::default(),
                        embedding_model: Some("bench".into()),
                        valid_from: None,
                        valid_to: None,
                        version_of: None,
                        status: Default::default(),
                        dedup_key: None,
                        expires_at: None,
                        usage: Default::default(),
                        flags: Vec::new(),
                    },
                    vector: Some(rng.unit()),
                }
            })
            .collect();
        store
            .insert(InsertBatch {
                memories,
                sources: vec![],
                ..Default::default()
            })
            .unwrap();
    }
    let terms = hippo::text::query_terms("When did Sam go camping near the mountain river?");
    let filter = Filter::default();
    c.bench_function("store/keyword_candidates_20k", |b| {
        b.iter(|| {
            store
                .keyword_candidates(&KeywordQuery {
                    scope: &scope,
                    filter: &filter,
                    terms: &terms,
                    limit: 50,
                })
                .unwrap()
        })
    });
    let q = rng.unit();
    c.bench_function("store/vector_candidates_20k", |b| {
        b.iter(|| {
            store
                .vector_candidates(&VectorQuery {
                    scope: &scope,
                    filter: &filter,
                    vector: &q,
                    limit: 50,
                })
                .unwrap()
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = vector_scan, keyword_index, store_candidates
}
criterion_main!(benches);

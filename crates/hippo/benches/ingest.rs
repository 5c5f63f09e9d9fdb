//! Ingest hot paths: the store's atomic batch insert (vectors precomputed),
//! and the MiniLM embedder's batch throughput when the model is present
//! (`HIPPO_MODEL_DIR` or the default cache directory).

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use hippo::model::{content_hash, Actor, Memory, MemoryId, MemoryKind, Provenance, Scope};
use hippo::store::{InsertBatch, NewMemory, SqliteStore, SqliteStoreOptions, Store};
use hippo::{Embedder, MiniLmEmbedder};

const DIM: usize = 384;

fn batch(n: usize, seed: usize) -> InsertBatch {
    let now = chrono::Utc::now();
    let memories = (0..n)
        .map(|i| {
            let content =
                format!("message {seed}-{i}: we talked about the garden, the trip and the new job");
            let mut v = vec![0.01f32; DIM];
            v[(seed + i) % DIM] = 1.0;
            hippo::embed::normalize(&mut v);
            NewMemory {
                memory: Memory {
                    id: MemoryId::now_v7(),
                    scope: Scope::user("u"),
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
                vector: Some(v),
            }
        })
        .collect();
    InsertBatch {
        memories,
        sources: vec![],
        ..Default::default()
    }
}

fn store_insert(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(SqliteStoreOptions::new(
        dir.path().join("i.db"),
        "bench",
        DIM,
    ))
    .unwrap();
    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(256));
    let mut seed = 0;
    group.bench_function("insert_batch_256", |b| {
        b.iter_batched(
            || {
                seed += 1;
                batch(256, seed)
            },
            |batch| store.insert(batch).unwrap(),
            criterion::BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn model_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("HIPPO_MODEL_DIR")
        .map(PathBuf::from)
        .or_else(hippo::embed::default_model_dir)?;
    dir.join("model.safetensors").is_file().then_some(dir)
}

fn minilm(c: &mut Criterion) {
    let Some(dir) = model_dir() else {
        eprintln!("minilm benches skipped: no model (run scripts/fetch-model.sh)");
        return;
    };
    let model = MiniLmEmbedder::from_dir(&dir).unwrap();
    let texts: Vec<String> = (0..32)
        .map(|i| {
            format!(
                "Sam: message {i} about the garden, the weekend trip to the lake and the new job"
            )
        })
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut group = c.benchmark_group("minilm");
    group.sample_size(10);
    group.throughput(Throughput::Elements(32));
    group.bench_function("embed_batch_32", |b| {
        b.iter(|| model.embed_batch(&refs).unwrap())
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("embed_query", |b| {
        b.iter(|| model.embed("when did Sam go camping?").unwrap())
    });
    // Four queries arriving together: one by one, or as one batch (what
    // micro-batching concurrent searches would do: 1.9x here in this bench,
    // but over HTTP with 4 clients it lost to concurrent single queries —
    // p50 43-46 vs 38-39 ms — and was not kept; see CHANGELOG).
    let queries = [
        "when did Sam go camping?",
        "what does Ana eat for breakfast on weekdays?",
        "where does Lena live now?",
        "which countries has Kate visited since she moved?",
    ];
    group.throughput(Throughput::Elements(4));
    group.bench_function("embed_4_queries_one_by_one", |b| {
        b.iter(|| {
            for q in queries {
                model.embed(q).unwrap();
            }
        })
    });
    group.bench_function("embed_4_queries_as_one_batch", |b| {
        b.iter(|| model.embed_batch(&queries).unwrap())
    });
    group.finish();
}

criterion_group!(benches, store_insert, minilm);
criterion_main!(benches);

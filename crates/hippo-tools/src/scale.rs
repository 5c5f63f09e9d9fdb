//! `hippo scale`: Hippo at a million memories, on either store.
//!
//! - `load` bulk-loads a generated corpus into the store the settings name
//!   (`--db` / `--store`), through the same path `hippo migrate` writes with
//!   (`Store::import`: records with their vectors, no embedding), and
//!   reports throughput and disk bytes per memory. Resumable.
//! - `search` measures search over HTTP against running servers (one, or
//!   two replicas given twice): distinct queries (the query embedding
//!   included), the same queries again (query vector cached), p50/p95/p99,
//!   a needle rate, and each server's resident memory.
//! - `recall` measures the vector channel's recall@10 against exact search
//!   over the same vectors, in the query's scope.
//!
//! The corpus: `synth` chat (Zipf vocabulary), conversations of 20 turns,
//! conversation `c` owned by user `u{c % users}`. Embedding a million texts
//! takes hours on a small machine, so the vectors are made, not embedded:
//! each word of the vocabulary and each speaker name is embedded once with
//! the configured model, and a turn's vector is the normalized sum of its
//! speaker's and content words' vectors plus 5 % gaussian noise. Queries
//! are real: the server embeds their text with the same model. Vectors of
//! the same seed are the same in `load` and `recall`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::{TimeZone, Utc};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use hippo::model::{content_hash, Actor, Provenance};
use hippo::store::transfer::{Progress, Record, Table};
use hippo::store::{NewMemory, VectorQuery};
use hippo::{Embedder, Filter, Memory, MemoryKind, Scope, Store};
use hippo_server::io::bar;
use hippo_server::settings::Settings;

use crate::loadtest::{concurrently, pct, resident_bytes_in};
use crate::synth::{ChatGenerator, Rng, Turn};

/// Arguments of `hippo scale`.
#[derive(Args)]
pub struct ScaleArgs {
    #[command(subcommand)]
    command: ScaleCommand,
}

#[derive(Subcommand)]
enum ScaleCommand {
    /// Bulk-load the corpus into the configured store (default tenant).
    Load {
        #[command(flatten)]
        corpus: CorpusArgs,
        /// Memories per import transaction.
        #[arg(long, default_value_t = 2_000)]
        page: usize,
    },
    /// Search latency over HTTP (give --base twice for two replicas).
    Search {
        #[command(flatten)]
        corpus: CorpusArgs,
        /// Base URL of a running `hippo serve` on the loaded store; repeat for replicas
        /// (queries alternate between them).
        #[arg(long, required = true)]
        base: Vec<String>,
        /// Distinct queries.
        #[arg(long, default_value_t = 1_000)]
        queries: usize,
        /// Concurrent clients.
        #[arg(long, default_value_t = 4)]
        clients: usize,
        /// Queries to skip first: runs against the same servers with
        /// different skips embed fresh queries (servers cache query vectors).
        #[arg(long, default_value_t = 0)]
        skip: usize,
    },
    /// Recall@10 of the vector channel against exact search, in-process.
    Recall {
        #[command(flatten)]
        corpus: CorpusArgs,
        /// Queries.
        #[arg(long, default_value_t = 200)]
        queries: usize,
    },
}

/// Which corpus: the same arguments give the same memories and vectors.
#[derive(Args, Clone, Copy)]
struct CorpusArgs {
    /// Memories.
    #[arg(long, default_value_t = 1_000_000)]
    memories: usize,
    /// Users the memories are spread over (1: all in one scope).
    #[arg(long, default_value_t = 1_000)]
    users: usize,
    /// Seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

/// Turns per conversation.
const CONVERSATION: usize = 20;
/// Made-up words after the common head of the vocabulary.
const TAIL_WORDS: usize = 30_000;
/// Results per query.
const TOP_K: usize = 10;

/// The vector candidates a search for [`TOP_K`] results asks for (the
/// engine's pool); recall@10 is counted over the first ten.
const VECTOR_POOL: usize = 50;

impl CorpusArgs {
    fn validate(&self) -> Result<()> {
        if self.memories == 0 || self.users == 0 {
            bail!("--memories and --users must be at least 1");
        }
        Ok(())
    }

    fn source(&self) -> String {
        format!("scale:{}:{}:{}", self.seed, self.memories, self.users)
    }

    fn generator(&self) -> ChatGenerator {
        ChatGenerator::new(self.seed, TAIL_WORDS)
    }

    /// The user owning turn `k`.
    fn user_of(&self, k: usize) -> String {
        format!("u{}", (k / CONVERSATION) % self.users)
    }

    /// Every turn, in order.
    fn turns(&self, gen: &mut ChatGenerator) -> Vec<Turn> {
        let mut turns = Vec::with_capacity(self.memories);
        while turns.len() < self.memories {
            let k = (self.memories - turns.len()).min(CONVERSATION);
            turns.extend(gen.conversation(k));
        }
        turns
    }
}

/// The id of turn `k`: a v7 UUID (time-ordered like every memory id) whose
/// time and random bits come from the seed and `k`.
fn turn_id(seed: u64, k: usize) -> uuid::Uuid {
    let mut rng = Rng::new(seed ^ (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut bytes = [0u8; 10];
    for b in &mut bytes {
        *b = rng.next_u64() as u8;
    }
    uuid::Builder::from_unix_timestamp_millis(1_704_067_200_000 + k as u64, &bytes).into_uuid()
}

fn memory_of(corpus: &CorpusArgs, k: usize, turn: &Turn, model: &str) -> Memory {
    let at =
        Utc.timestamp_millis_opt(1_704_067_200_000).unwrap() + chrono::Duration::minutes(k as i64);
    let mut metadata = serde_json::Map::new();
    metadata.insert("turn".into(), json!(k));
    Memory {
        id: turn_id(corpus.seed, k),
        scope: Scope::user(corpus.user_of(k)),
        kind: MemoryKind::Message,
        content: turn.text.clone(),
        actor: Actor {
            role: Some("user".into()),
            name: Some(turn.speaker.clone()),
        },
        metadata,
        event_time: Some(at),
        recorded_at: at,
        updated_at: at,
        provenance: Provenance {
            written_by: Some("scale".into()),
            ..Provenance::default()
        },
        content_hash: content_hash(&turn.text),
        embedding_model: Some(model.to_owned()),
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

/// The model's vector of every vocabulary word and speaker name.
struct WordVectors {
    words: Vec<Vec<f32>>,
    names: HashMap<String, Vec<f32>>,
    dim: usize,
}

impl WordVectors {
    /// The word vectors of `gen`'s vocabulary and names: from a cache file
    /// in the temporary directory (keyed by seed, model and dimension),
    /// else embedded and cached.
    fn embed(gen: &ChatGenerator, embedder: &dyn Embedder, seed: u64) -> Result<Self> {
        let dim = embedder.dimension();
        let model: String = embedder
            .model_id()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let cache =
            std::env::temp_dir().join(format!("hippo-scale-words-{seed}-{model}-{dim}.f32"));
        let count = gen.vocab().len() + gen.names().len();
        if let Ok(bytes) = std::fs::read(&cache) {
            if bytes.len() == count * dim * 4 {
                let all: Vec<Vec<f32>> = bytes
                    .chunks_exact(dim * 4)
                    .map(|v| {
                        v.chunks_exact(4)
                            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                            .collect()
                    })
                    .collect();
                return Ok(Self::from_vectors(gen, all, dim));
            }
        }
        let words = Self::embed_all(gen, embedder)?;
        let bytes: Vec<u8> = words
            .iter()
            .flatten()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        if let Err(e) = std::fs::write(&cache, bytes) {
            eprintln!("cannot cache the word vectors in {}: {e}", cache.display());
        }
        Ok(Self::from_vectors(gen, words, dim))
    }

    fn from_vectors(gen: &ChatGenerator, mut all: Vec<Vec<f32>>, dim: usize) -> Self {
        let names = all.split_off(gen.vocab().len());
        WordVectors {
            words: all,
            names: gen.names().iter().cloned().zip(names).collect(),
            dim,
        }
    }

    /// Vocabulary then names, embedded.
    fn embed_all(gen: &ChatGenerator, embedder: &dyn Embedder) -> Result<Vec<Vec<f32>>> {
        let bar = bar(
            (gen.vocab().len() + gen.names().len()) as u64,
            "embedding words",
        );
        let embed_all = |texts: &[String]| -> Result<Vec<Vec<f32>>> {
            let mut out = Vec::with_capacity(texts.len());
            for chunk in texts.chunks(256) {
                let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
                out.extend(embedder.embed_batch(&refs)?);
                bar.inc(chunk.len() as u64);
            }
            Ok(out)
        };
        let mut all = embed_all(gen.vocab())?;
        all.extend(embed_all(gen.names())?);
        bar.finish_and_clear();
        Ok(all)
    }

    /// Turn `k`'s vector (see the module docs).
    fn turn(&self, seed: u64, k: usize, turn: &Turn) -> Vec<f32> {
        let mut v = vec![0f32; self.dim];
        let mut add = |w: &[f32]| v.iter_mut().zip(w).for_each(|(a, b)| *a += b);
        if let Some(n) = self.names.get(&turn.speaker) {
            add(n);
        }
        for &w in &turn.words {
            add(&self.words[w]);
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
        let sigma = 0.05 * norm / (self.dim as f32).sqrt();
        let mut rng = Rng::new(
            seed.wrapping_add(k as u64)
                .wrapping_mul(0xD1B5_4A32_D192_ED03),
        );
        for x in &mut v {
            // Box–Muller.
            let (u1, u2) = (rng.unit().max(1e-12), rng.unit());
            let g = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            *x += sigma * g as f32;
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
        v.iter_mut().for_each(|x| *x /= norm);
        v
    }
}

/// Runs `hippo scale` and prints a JSON report.
pub fn run(settings: &Settings, args: ScaleArgs) -> Result<()> {
    let report = match args.command {
        ScaleCommand::Load { corpus, page } => load(settings, corpus, page)?,
        ScaleCommand::Search {
            corpus,
            base,
            queries,
            clients,
            skip,
        } => search(corpus, &base, skip, queries, clients)?,
        ScaleCommand::Recall { corpus, queries } => recall(settings, corpus, queries)?,
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

fn load(settings: &Settings, corpus: CorpusArgs, page: usize) -> Result<Value> {
    corpus.validate()?;
    let store = settings.tenant_store(hippo_server::auth::DEFAULT_TENANT)?;
    let embedder = settings.embedder()?;
    let source = corpus.source();
    let done = store.import_progress(&source, Table::Memories)? as usize;
    if done == 0 && store.stats()?.memories > 0 {
        bail!("the store holds memories already: load into an empty store");
    }
    let mut gen = corpus.generator();
    let t0 = Instant::now();
    let words = WordVectors::embed(&gen, embedder.as_ref(), corpus.seed)?;
    let embed_s = t0.elapsed().as_secs_f64();
    let turns = corpus.turns(&mut gen);
    let bar = bar(corpus.memories as u64, "loading");
    bar.set_position(done as u64);
    let t1 = Instant::now();
    // The vector index is built once after the rows on Postgres; its build is
    // part of the load's time.
    settings.bulk_load(|| {
        let mut k = done;
        while k < corpus.memories {
            let end = (k + page.max(1)).min(corpus.memories);
            let records = (k..end)
                .map(|i| {
                    Record::Memory(Box::new(NewMemory {
                        memory: memory_of(&corpus, i, &turns[i], embedder.model_id()),
                        vector: Some(words.turn(corpus.seed, i, &turns[i])),
                    }))
                })
                .collect();
            store.import(
                records,
                &Progress {
                    source: source.clone(),
                    table: Table::Memories,
                    cursor: end as i64,
                },
            )?;
            bar.set_position(end as u64);
            k = end;
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    let load_s = t1.elapsed().as_secs_f64();
    let loaded = corpus.memories - done;
    let stats = store.stats()?;
    let disk = match settings.postgres()? {
        Some(pg) => Some(pg.disk_bytes()?),
        None => stats.disk_bytes,
    };
    Ok(json!({
        "store": if settings.uses_postgres() { "postgres" } else { "sqlite" },
        "memories": stats.memories,
        "users": corpus.users,
        "loaded_now": loaded,
        "word_embedding_s": (embed_s * 10.0).round() / 10.0,
        "load_s": (load_s * 10.0).round() / 10.0,
        "memories_per_s": (loaded as f64 / load_s.max(1e-9)).round(),
        "disk_bytes": disk,
        "disk_bytes_per_memory": disk.map(|d| d / stats.memories.max(1)),
    }))
}

/// A query about a random turn: (turn, user, text).
/// Queries `skip..skip + n` of the corpus's query sequence.
fn queries(corpus: &CorpusArgs, skip: usize, n: usize) -> Vec<(usize, String, String)> {
    let mut gen = corpus.generator();
    let turns = corpus.turns(&mut gen);
    let mut rng = Rng::new(corpus.seed ^ 0x5EA2C4);
    (0..skip + n)
        .map(|_| {
            let k = rng.below(turns.len());
            (k, corpus.user_of(k), gen.query_about(&turns[k]))
        })
        .skip(skip)
        .collect()
}

struct Timed {
    client_ms: f64,
    server_ms: f64,
    /// The server's time embedding the query (0 when it had the vector).
    embed_ms: f64,
    needle: bool,
}

fn search_pass(
    bases: &[String],
    queries: &[(usize, String, String)],
    clients: usize,
) -> Result<(Vec<Timed>, f64)> {
    concurrently(queries.len(), clients, |agent, i| {
        let (k, user, text) = &queries[i];
        let base = &bases[i % bases.len()];
        let t = Instant::now();
        let resp: Value = agent
            .post(&format!("{base}/v1/search"))
            .send_json(json!({"user_id": user, "query": text, "top_k": TOP_K}))
            .context("search failed")?
            .into_json()?;
        let client_ms = t.elapsed().as_secs_f64() * 1e3;
        let turn = |v: &Value| v["metadata"]["turn"].as_u64() == Some(*k as u64);
        let needle = resp["results"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| turn(r) || r["sources"].as_array().into_iter().flatten().any(turn));
        Ok(Timed {
            client_ms,
            server_ms: resp["took_ms"].as_f64().unwrap_or(f64::NAN),
            embed_ms: resp["embed_ms"].as_f64().unwrap_or(f64::NAN),
            needle,
        })
    })
}

fn latency(results: &[Timed], wall: f64) -> Value {
    let mut client: Vec<f64> = results.iter().map(|r| r.client_ms).collect();
    let mut server: Vec<f64> = results.iter().map(|r| r.server_ms).collect();
    let mut embed: Vec<f64> = results.iter().map(|r| r.embed_ms).collect();
    client.sort_by(f64::total_cmp);
    server.sort_by(f64::total_cmp);
    embed.sort_by(f64::total_cmp);
    let needles = results.iter().filter(|r| r.needle).count();
    json!({
        "queries": results.len(),
        "client_ms_p50": pct(&client, 0.5),
        "client_ms_p95": pct(&client, 0.95),
        "client_ms_p99": pct(&client, 0.99),
        "server_ms_p50": pct(&server, 0.5),
        "server_ms_p95": pct(&server, 0.95),
        "server_ms_p99": pct(&server, 0.99),
        "embed_ms_p50": pct(&embed, 0.5),
        "embed_ms_p95": pct(&embed, 0.95),
        "queries_per_s": (results.len() as f64 / wall * 10.0).round() / 10.0,
        "needle_rate": (needles as f64 / results.len().max(1) as f64 * 1000.0).round() / 1000.0,
    })
}

fn search(
    corpus: CorpusArgs,
    bases: &[String],
    skip: usize,
    n: usize,
    clients: usize,
) -> Result<Value> {
    corpus.validate()?;
    let bases: Vec<String> = bases
        .iter()
        .map(|b| b.trim_end_matches('/').to_owned())
        .collect();
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    for b in &bases {
        agent
            .get(&format!("{b}/healthz"))
            .call()
            .with_context(|| format!("no server at {b}"))?;
    }
    let qs = queries(&corpus, skip, n);
    // Distinct queries first (each embedded by the server), then the same
    // again (query vectors cached by each server that saw them).
    let (first, wall1) = search_pass(&bases, &qs, clients)?;
    let (again, wall2) = search_pass(&bases, &qs, clients)?;
    let rss: Vec<Option<u64>> = bases
        .iter()
        .map(|b| {
            let text = agent
                .get(&format!("{b}/metrics"))
                .call()
                .ok()?
                .into_string()
                .ok()?;
            resident_bytes_in(&text)
        })
        .collect();
    Ok(json!({
        "replicas": bases.len(),
        "clients": clients,
        "users": corpus.users,
        "memories": corpus.memories,
        "with_query_embedding": latency(&first, wall1),
        "query_vector_cached": latency(&again, wall2),
        // Queries whose needle was not in the top 10 (the first few).
        "missed": qs
            .iter()
            .zip(&first)
            .filter(|(_, r)| !r.needle)
            .take(10)
            .map(|((k, user, text), _)| json!({"turn": k, "user": user, "query": text}))
            .collect::<Vec<_>>(),
        "resident_bytes": rss,
    }))
}

fn recall(settings: &Settings, corpus: CorpusArgs, n: usize) -> Result<Value> {
    corpus.validate()?;
    let store = settings.tenant_store(hippo_server::auth::DEFAULT_TENANT)?;
    let embedder = settings.embedder()?;
    let mut gen = corpus.generator();
    let words = WordVectors::embed(&gen, embedder.as_ref(), corpus.seed)?;
    let turns = corpus.turns(&mut gen);
    let qs = queries(&corpus, 0, n);
    // Exact top 10 within the query's user, over the generated vectors.
    let mut by_user: HashMap<String, Vec<usize>> = HashMap::new();
    for k in 0..corpus.memories {
        by_user.entry(corpus.user_of(k)).or_default().push(k);
    }
    // On Postgres a small scope is searched by reading its rows (exact by
    // construction); the HNSW index's own recall is measured through a
    // store that always uses it.
    let indexed: Option<Arc<dyn Store>> = match settings.postgres_url() {
        Some(url) => {
            use hippo_server::hippo_postgres::{PgDatabase, PgOptions};
            let db = PgDatabase::connect(&PgOptions {
                exact_scope_rows: 0,
                ..PgOptions::new(url)
            })?;
            Some(Arc::new(db.store(
                hippo_server::auth::DEFAULT_TENANT,
                embedder.model_id(),
                embedder.dimension(),
            )?))
        }
        None => None,
    };
    let mut vectors: HashMap<usize, Vec<f32>> = HashMap::new();
    let bar = bar(qs.len() as u64, "recall");
    let mut served = Channel::default();
    let mut index = Channel::default();
    // Each way gets its own half of the queries (and so, mostly, other
    // users' pages): neither reads pages the other just brought in.
    for (i, (_, user, text)) in qs.iter().enumerate() {
        let (channel, store): (&mut Channel, &dyn Store) = match &indexed {
            Some(indexed) if i % 2 == 1 => (&mut index, indexed.as_ref()),
            _ => (&mut served, store.as_ref()),
        };
        let q = embedder.embed(text)?;
        let mut scored: Vec<(f32, uuid::Uuid)> = by_user[user]
            .iter()
            .map(|&k| {
                let v = vectors
                    .entry(k)
                    .or_insert_with(|| words.turn(corpus.seed, k, &turns[k]));
                let s: f32 = v.iter().zip(&q).map(|(a, b)| a * b).sum();
                (s, turn_id(corpus.seed, k))
            })
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        let exact: Vec<uuid::Uuid> = scored.iter().take(TOP_K).map(|(_, id)| *id).collect();
        let scope = Scope::user(user);
        channel.measure(
            store,
            &VectorQuery {
                scope: &scope,
                filter: &Filter::default(),
                vector: &q,
                limit: VECTOR_POOL,
            },
            &exact,
        )?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let mut report = json!({
        "store": if settings.uses_postgres() { "postgres" } else { "sqlite" },
        "memories": corpus.memories,
        "users": corpus.users,
        "queries": qs.len(),
    });
    served.report(&mut report, "");
    if indexed.is_some() {
        index.report(&mut report, "hnsw_");
    }
    Ok(report)
}

/// Recall@10 and time of one way of running the vector channel.
#[derive(Default)]
struct Channel {
    hits: usize,
    queries: usize,
    ms: Vec<f64>,
}

impl Channel {
    fn measure(
        &mut self,
        store: &dyn Store,
        q: &VectorQuery<'_>,
        exact: &[uuid::Uuid],
    ) -> Result<()> {
        let t = Instant::now();
        let found = store.vector_candidates(q)?;
        self.ms.push(t.elapsed().as_secs_f64() * 1e3);
        self.hits += found
            .iter()
            .take(TOP_K)
            .filter(|c| exact.contains(&c.id))
            .count();
        self.queries += 1;
        Ok(())
    }

    fn report(mut self, report: &mut Value, prefix: &str) {
        self.ms.sort_by(f64::total_cmp);
        let recall = self.hits as f64 / (self.queries * TOP_K).max(1) as f64;
        report[format!("{prefix}recall_at_10")] = json!((recall * 10_000.0).round() / 10_000.0);
        report[format!("{prefix}vector_channel_ms_p50")] = json!(pct(&self.ms, 0.5));
        report[format!("{prefix}vector_channel_ms_p95")] = json!(pct(&self.ms, 0.95));
    }
}

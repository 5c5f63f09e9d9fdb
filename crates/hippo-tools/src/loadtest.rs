//! `hippo loadtest`: a bounded load test of a running server over loopback
//! HTTP, on generated English chat (see `synth`) or, with `--texts`, on
//! sentences of a LoCoMo-format file recombined to any size (so Chinese, or
//! long messages, can be loaded to 100k too). It measures, in one run:
//! - the embedder's own batch throughput (in this process, same texts and
//!   batch size as the ingest) and verbatim ingest through
//!   `/v1/memories/batch`, and their ratio;
//! - search latency with distinct queries (query embedding included), the same
//!   queries again (query vector cached: retrieval alone), and under
//!   concurrent clients;
//! - a needle rate (the queried turn is in the top-k), as a sanity check that
//!   fast answers are also right answers (generated chat only: a file's
//!   questions are about its own conversations, not the recombined corpus);
//! - the server's resident memory, from `/metrics`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};

use crate::synth::{ChatGenerator, Turn};
use hippo_server::settings::Settings;

/// Arguments of `hippo loadtest`.
#[derive(Args)]
pub struct LoadtestArgs {
    /// Base URL of a running `hippo serve`.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    base: String,
    /// Memories to write into one scope.
    #[arg(long, default_value_t = 100_000)]
    memories: usize,
    /// Distinct search queries per phase.
    #[arg(long, default_value_t = 1_000)]
    queries: usize,
    /// The scope's user id.
    #[arg(long, default_value = "loadtest")]
    user: String,
    /// Items per `/v1/memories/batch` request (and per embedder batch in the baseline).
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Concurrent ingest clients.
    #[arg(long, default_value_t = 2)]
    ingest_clients: usize,
    /// Concurrent clients in the concurrent search phase.
    #[arg(long, default_value_t = 4)]
    search_clients: usize,
    /// Texts embedded in-process for the embedder baseline.
    #[arg(long, default_value_t = 2_048)]
    embed_sample: usize,
    /// The scope already holds this corpus (same seed and size): only search.
    #[arg(long)]
    skip_ingest: bool,
    /// Corpus seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Results per search.
    #[arg(long, default_value_t = 10)]
    top_k: usize,
    /// A LoCoMo-format file to load instead of generated English chat: each
    /// memory joins one to three of its sentences drawn at random (seeded),
    /// so any size is reached in the file's own language and message
    /// lengths; the queries are the file's questions.
    #[arg(long)]
    texts: Option<PathBuf>,
}

/// The `p` quantile of sorted milliseconds, to a microsecond (also `soak`).
pub(crate) fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let v = sorted[((p * (sorted.len() - 1) as f64).round() as usize).min(sorted.len() - 1)];
    (v * 1000.0).round() / 1000.0
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(300))
        .max_idle_connections_per_host(64)
        .build()
}

fn embed_text(t: &Turn) -> String {
    format!("{}: {}", t.speaker, t.text)
}

/// Where the queries come from: the generator (each about one turn, so
/// its needle can be checked) or a file's questions, shuffled.
enum Queries {
    Generated(ChatGenerator),
    Questions(Vec<String>),
}

impl Queries {
    /// `n` new queries, each with the index of the turn it is about when
    /// known. A file's questions are each asked once (an asked one would
    /// find its vector cached): fewer than `n` when they run out.
    fn make(&mut self, turns: &[Turn], seed: u64, n: usize) -> Vec<(Option<usize>, String)> {
        match self {
            Queries::Generated(gen) => {
                let mut rng = crate::synth::Rng::new(seed ^ n as u64 ^ 0x5eed);
                (0..n)
                    .map(|_| {
                        let i = rng.below(turns.len());
                        (Some(i), gen.query_about(&turns[i]))
                    })
                    .collect()
            }
            Queries::Questions(left) => {
                let take = n.min(left.len());
                left.drain(..take).map(|q| (None, q)).collect()
            }
        }
    }
}

/// The generated corpus: conversations of 20 turns until `n` turns.
fn corpus(seed: u64, n: usize) -> (Queries, Vec<Turn>) {
    let mut gen = ChatGenerator::new(seed, 30_000);
    let mut turns = Vec::with_capacity(n);
    while turns.len() < n {
        let k = (n - turns.len()).min(20);
        turns.extend(gen.conversation(k));
    }
    (Queries::Generated(gen), turns)
}

/// Splits `text` into sentences after `.`, `!`, `?` followed by white space,
/// and after `。`, `！`, `？` (which need none); the ends are kept.
fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let end = match c {
            '。' | '！' | '？' => true,
            '.' | '!' | '?' => chars.peek().is_none_or(|(_, n)| n.is_whitespace()),
            _ => false,
        };
        if end {
            let e = i + c.len_utf8();
            out.push(text[start..e].trim());
            start = e;
        }
    }
    out.push(text[start..].trim());
    out.retain(|s| !s.is_empty());
    out
}

/// A corpus of `n` memories from a LoCoMo-format file (see `--texts`).
fn file_corpus(path: &std::path::Path, seed: u64, n: usize) -> Result<(Queries, Vec<Turn>)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let data: Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: invalid LoCoMo JSON", path.display()))?;
    let mut pool: Vec<(String, String)> = Vec::new();
    let mut questions = Vec::new();
    for s in data.as_array().into_iter().flatten() {
        let Some(conv) = s.get("conversation") else {
            continue;
        };
        for t in hippo_server::io::locomo_turns(conv)? {
            for sentence in sentences(&t.text) {
                pool.push((t.speaker.clone(), sentence.to_owned()));
            }
        }
        questions.extend(
            s.get("qa")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|q| q.get("question").and_then(Value::as_str))
                .map(str::to_owned),
        );
    }
    if pool.is_empty() || questions.is_empty() {
        bail!("{}: no turns or no questions to load", path.display());
    }
    let mut rng = crate::synth::Rng::new(seed);
    questions.sort();
    questions.dedup();
    for i in (1..questions.len()).rev() {
        questions.swap(i, rng.below(i + 1));
    }
    let turns = (0..n)
        .map(|_| {
            let (speaker, first) = &pool[rng.below(pool.len())];
            let mut text = first.clone();
            for _ in 0..rng.below(3) {
                let next = &pool[rng.below(pool.len())].1;
                // CJK sentences run on without a space.
                if !text.ends_with(['。', '！', '？']) {
                    text.push(' ');
                }
                text.push_str(next);
            }
            Turn {
                speaker: speaker.clone(),
                text,
                words: Vec::new(),
            }
        })
        .collect();
    Ok((Queries::Questions(questions), turns))
}

struct Searched {
    client_ms: f64,
    server_ms: f64,
    retrieve_ms: f64,
    /// Whether the queried turn came back (when the query is about one).
    needle: Option<bool>,
}

fn search(
    agent: &ureq::Agent,
    base: &str,
    user: &str,
    q: &(Option<usize>, String),
    k: usize,
) -> Result<Searched> {
    let t = Instant::now();
    let resp: Value = agent
        .post(&format!("{base}/v1/search"))
        .send_json(json!({"user_id": user, "query": q.1, "top_k": k}))
        .context("search failed")?
        .into_json()?;
    let client_ms = t.elapsed().as_secs_f64() * 1e3;
    let needle = q.0.map(|turn| {
        resp["results"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["metadata"]["turn"].as_u64() == Some(turn as u64))
    });
    Ok(Searched {
        client_ms,
        server_ms: resp["took_ms"].as_f64().unwrap_or(f64::NAN),
        retrieve_ms: resp["retrieve_ms"].as_f64().unwrap_or(f64::NAN),
        needle,
    })
}

/// Runs `queries` over `clients` threads; returns per-query results and wall seconds.
fn search_phase(
    base: &str,
    user: &str,
    queries: &[(Option<usize>, String)],
    k: usize,
    clients: usize,
) -> Result<(Vec<Searched>, f64)> {
    concurrently(queries.len(), clients, |agent, i| {
        search(agent, base, user, &queries[i], k)
    })
}

/// Runs `f` for items `0..n` over `clients` threads, each with its own HTTP
/// agent, each thread taking the next item as it finishes one; returns the
/// results (in completion order) and the wall seconds (also `scale`).
pub(crate) fn concurrently<T: Send>(
    n: usize,
    clients: usize,
    f: impl Fn(&ureq::Agent, usize) -> Result<T> + Sync,
) -> Result<(Vec<T>, f64)> {
    let next = AtomicUsize::new(0);
    let out = Mutex::new(Vec::with_capacity(n));
    let t0 = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = (0..clients.max(1))
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    let agent = agent();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return Ok(());
                        }
                        let r = f(&agent, i)?;
                        out.lock().unwrap_or_else(|e| e.into_inner()).push(r);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
        }
        Ok(())
    })?;
    let wall = t0.elapsed().as_secs_f64();
    Ok((out.into_inner().unwrap_or_else(|e| e.into_inner()), wall))
}

fn summary(results: &[Searched], wall: f64) -> Value {
    let mut client: Vec<f64> = results.iter().map(|r| r.client_ms).collect();
    let mut server: Vec<f64> = results.iter().map(|r| r.server_ms).collect();
    let mut retrieve: Vec<f64> = results.iter().map(|r| r.retrieve_ms).collect();
    client.sort_by(f64::total_cmp);
    server.sort_by(f64::total_cmp);
    retrieve.sort_by(f64::total_cmp);
    let checked = results.iter().filter(|r| r.needle.is_some()).count();
    let needles = results.iter().filter(|r| r.needle == Some(true)).count();
    let needle_rate =
        (checked > 0).then(|| (needles as f64 / checked as f64 * 1000.0).round() / 1000.0);
    json!({
        "queries": results.len(),
        "client_ms_p50": pct(&client, 0.5),
        "client_ms_p95": pct(&client, 0.95),
        "client_ms_p99": pct(&client, 0.99),
        "server_ms_p50": pct(&server, 0.5),
        "server_ms_p95": pct(&server, 0.95),
        "server_retrieve_ms_p50": pct(&retrieve, 0.5),
        "server_retrieve_ms_p95": pct(&retrieve, 0.95),
        "queries_per_s": (results.len() as f64 / wall * 10.0).round() / 10.0,
        "needle_rate": needle_rate,
    })
}

fn resident_bytes(agent: &ureq::Agent, base: &str) -> Option<u64> {
    let text = agent
        .get(&format!("{base}/metrics"))
        .call()
        .ok()?
        .into_string()
        .ok()?;
    resident_bytes_in(&text)
}

/// The server's resident memory from the text of its `/metrics`.
pub(crate) fn resident_bytes_in(metrics: &str) -> Option<u64> {
    metrics
        .lines()
        .find(|l| l.starts_with("hippo_process_resident_memory_bytes "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
}

/// Runs the load test and prints a JSON summary.
pub fn run(settings: &Settings, args: LoadtestArgs) -> Result<()> {
    let base = args.base.trim_end_matches('/').to_owned();
    let http = agent();
    http.get(&format!("{base}/healthz"))
        .call()
        .with_context(|| format!("no hippo server at {base}"))?;
    let (mut queries, turns) = match &args.texts {
        Some(path) => file_corpus(path, args.seed, args.memories)?,
        None => corpus(args.seed, args.memories),
    };
    let mut report = serde_json::Map::new();
    report.insert("memories".into(), json!(turns.len()));
    if !args.skip_ingest {
        // Embedder baseline: the same texts, batch size and process-local model.
        let embedder = settings.embedder()?;
        let sample: Vec<String> = turns
            .iter()
            .take(args.embed_sample)
            .map(embed_text)
            .collect();
        let t = Instant::now();
        for chunk in sample.chunks(args.batch.max(1)) {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            embedder.embed_batch(&refs)?;
        }
        let embed_rate = sample.len() as f64 / t.elapsed().as_secs_f64();
        drop(embedder);

        let batches: Vec<&[Turn]> = turns.chunks(args.batch.max(1)).collect();
        let next = AtomicUsize::new(0);
        let bar = indicatif::ProgressBar::new(turns.len() as u64);
        let t0 = Instant::now();
        std::thread::scope(|s| -> Result<()> {
            let handles: Vec<_> = (0..args.ingest_clients.max(1))
                .map(|_| {
                    s.spawn(|| -> Result<()> {
                        let agent = agent();
                        loop {
                            let b = next.fetch_add(1, Ordering::Relaxed);
                            let Some(chunk) = batches.get(b) else {
                                return Ok(());
                            };
                            let first = b * args.batch.max(1);
                            let items: Vec<Value> = chunk
                                .iter()
                                .enumerate()
                                .map(|(j, t)| {
                                    let i = first + j;
                                    json!({
                                        "user_id": args.user,
                                        "session_id": format!("c{}", i / 20),
                                        "messages": [{"role": "user", "name": t.speaker, "content": t.text}],
                                        "metadata": {"turn": i},
                                    })
                                })
                                .collect();
                            let resp = agent
                                .post(&format!("{base}/v1/memories/batch"))
                                .send_json(json!({ "items": items }));
                            if let Err(e) = resp {
                                bail!("batch {b} failed: {e}");
                            }
                            bar.inc(chunk.len() as u64);
                        }
                    })
                })
                .collect();
            for h in handles {
                h.join()
                    .map_err(|_| anyhow::anyhow!("ingest client panicked"))??;
            }
            Ok(())
        })?;
        bar.finish_and_clear();
        let ingest_rate = turns.len() as f64 / t0.elapsed().as_secs_f64();
        report.insert(
            "ingest".into(),
            json!({
                "embedder_texts_per_s": (embed_rate * 10.0).round() / 10.0,
                "http_batch_memories_per_s": (ingest_rate * 10.0).round() / 10.0,
                "ratio": (ingest_rate / embed_rate * 1000.0).round() / 1000.0,
                "batch": args.batch,
                "clients": args.ingest_clients,
            }),
        );
    }
    let cold = queries.make(&turns, args.seed, args.queries);
    let (r, wall) = search_phase(&base, &args.user, &cold, args.top_k, 1)?;
    report.insert("search_cold_1_client".into(), summary(&r, wall));
    let (r, wall) = search_phase(&base, &args.user, &cold, args.top_k, 1)?;
    report.insert("search_cached_vector_1_client".into(), summary(&r, wall));
    let fresh = queries.make(&turns, args.seed, args.queries + 1);
    let (r, wall) = search_phase(&base, &args.user, &fresh, args.top_k, args.search_clients)?;
    report.insert(
        format!("search_cold_{}_clients", args.search_clients),
        summary(&r, wall),
    );
    if let Some(rss) = resident_bytes(&http, &base) {
        report.insert(
            "server_rss_mb".into(),
            json!((rss as f64 / 1048576.0).round()),
        );
    }
    println!("{}", serde_json::to_string_pretty(&Value::Object(report))?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::sentences;

    #[test]
    fn sentences_split_at_their_ends_in_either_script() {
        assert_eq!(
            sentences("I went to Rome. It was 3.5 hours away! Why?"),
            ["I went to Rome.", "It was 3.5 hours away!", "Why?"]
        );
        assert_eq!(
            sentences("我用的手机是小米12。拍照也厉害！续航呢"),
            ["我用的手机是小米12。", "拍照也厉害！", "续航呢"]
        );
        assert!(sentences("  ").is_empty());
    }
}

//! `hippo bench`: evidence recall and latency on a LoCoMo-format file,
//! through the library (no HTTP). Same metric as `shared/bench/locomo_recall.py`:
//! frac = mean fraction of evidence turns in the top-k, any/all = at least
//! one / every evidence turn found, sess = fraction of evidence sessions touched;
//! also NDCG (each evidence turn relevant, ideally all in the first result) and
//! the results' size (characters, and tokens as the search budget counts them).
//! Overall and per category.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::{json, Value};

use hippo::{Filter, Scope, SearchRequest};

use hippo_server::io::{locomo_items, locomo_turns, InputError};
use hippo_server::settings::Settings;

/// Arguments of `hippo bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// LoCoMo-format JSON file.
    #[arg(long)]
    data: PathBuf,
    /// Cut-offs to report.
    #[arg(long, num_args = 1.., default_values_t = vec![5, 10])]
    k: Vec<usize>,
    /// Database to load into (default: a fresh temporary file).
    #[arg(long)]
    bench_db: Option<PathBuf>,
    /// Messages of context before each hit (they count as found, and as cost).
    #[arg(long, default_value_t = hippo::Context::default().before)]
    context_before: usize,
    /// Messages of context after each hit.
    #[arg(long, default_value_t = hippo::Context::default().after)]
    context_after: usize,
    /// Long-history variant: this many generated chat turns (other
    /// conversations, dated within the target's time range) join each
    /// conversation's scope before its questions are asked.
    #[arg(long, default_value_t = 0)]
    distractors: usize,
    /// Diversity of the results (0: relevance alone).
    #[arg(long, default_value_t = hippo::DEFAULT_DIVERSITY)]
    diversity: f32,
    /// Weight of conversation support in fusion (0 turns it off).
    #[arg(long, default_value_t = hippo::FusionWeights::default().neighbour)]
    neighbour_weight: f32,
    /// Token budget of the results (default: the search default).
    #[arg(long)]
    budget_tokens: Option<usize>,
    /// Ask the questions against what an earlier run left in `--bench-db`
    /// (same `--data`, `--convs` and `--distractors`) instead of loading.
    #[arg(long, requires = "bench_db")]
    skip_load: bool,
    /// Only these conversations (comma-separated indices).
    #[arg(long, value_delimiter = ',')]
    convs: Option<Vec<usize>>,
    /// Build the consolidation digests (session digests, entity timelines)
    /// after loading each conversation, so they compete in search.
    #[arg(long)]
    consolidate: bool,
}

const CATEGORIES: [(u64, &str); 4] = [
    (1, "multi-hop"),
    (2, "temporal"),
    (3, "open-domain"),
    (4, "single-hop"),
];

/// Reported per cut-off: evidence recall (mean fraction, at least one, all),
/// session recall, NDCG, and the results' size in characters and tokens.
const METRICS: [&str; 7] = ["frac", "any", "all", "sess", "ndcg", "chars", "tokens"];

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((p * (sorted.len() - 1) as f64).round() as usize).min(sorted.len() - 1)]
}

/// Runs the benchmark and prints a JSON summary.
pub fn run(settings: &Settings, args: BenchArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.data)
        .with_context(|| format!("cannot read {}", args.data.display()))?;
    let data: Value =
        serde_json::from_str(&text).map_err(|e| InputError(format!("invalid LoCoMo JSON: {e}")))?;
    let samples = data
        .as_array()
        .ok_or_else(|| InputError("a LoCoMo file is a JSON list".into()))?;
    let tmp = tempfile_dir()?;
    let db = args
        .bench_db
        .clone()
        .unwrap_or_else(|| tmp.join("bench.db"));
    let weights = hippo::FusionWeights {
        neighbour: args.neighbour_weight,
        ..Default::default()
    };
    let hippo = settings.open_with(&db, weights)?;
    let kmax = *args.k.iter().max().unwrap_or(&10);
    let mut rows: Vec<(u64, BTreeMap<String, f64>)> = Vec::new();
    let (mut lat, mut embed_free) = (Vec::new(), Vec::new());
    let (mut turns_loaded, mut load_s) = (0usize, 0.0f64);
    for (index, s) in samples.iter().enumerate() {
        if args.convs.as_ref().is_some_and(|c| !c.contains(&index)) {
            continue;
        }
        let uid = s
            .get("sample_id")
            .and_then(Value::as_str)
            .context("sample lacks sample_id")?;
        let turns = locomo_turns(s.get("conversation").context("sample lacks conversation")?)?;
        let known: HashSet<&str> = turns.iter().map(|t| t.dia_id.as_str()).collect();
        let items = locomo_items(uid, &turns);
        if !args.skip_load {
            hippo.delete_scope(&Scope::user(uid))?;
            let t0 = Instant::now();
            for chunk in items.chunks(256) {
                hippo.add(chunk.to_vec())?;
            }
            load_s += t0.elapsed().as_secs_f64();
            if args.distractors > 0 {
                add_distractors(&hippo, uid, &turns, args.distractors, index as u64)?;
            }
            if args.consolidate {
                while hippo.run_one_job(chrono::Duration::seconds(600), 1)? {}
            }
            turns_loaded += items.len();
        }
        for q in s.get("qa").and_then(Value::as_array).into_iter().flatten() {
            let cat = q.get("category").and_then(Value::as_u64).unwrap_or(0);
            let ev: HashSet<&str> = q
                .get("evidence")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .filter(|e| known.contains(e))
                .collect();
            if cat == 5 || ev.is_empty() {
                continue;
            }
            let question = q
                .get("question")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let req = SearchRequest {
                scope: Scope::user(uid),
                query: question,
                top_k: kmax,
                filter: Filter::default(),
                context: hippo::Context {
                    before: args.context_before,
                    after: args.context_after,
                },
                diversity: args.diversity,
                budget_tokens: args.budget_tokens,
                shared: false,
                min_relevance: 0.0,
            };
            let t = Instant::now();
            let resp = hippo.search(&req)?;
            lat.push(t.elapsed().as_secs_f64() * 1e3);
            // Again with the query vector cached: retrieval alone.
            embed_free.push(hippo.search(&req)?.retrieve_ms);
            let mut rec = BTreeMap::new();
            // Per result: the evidence ids it shows (a result covers its
            // whole excerpt) and its text.
            let shown: Vec<HashSet<&str>> = resp
                .hits
                .iter()
                .map(|h| {
                    h.messages()
                        .iter()
                        .filter_map(|m| m.metadata.get("dia_id").and_then(Value::as_str))
                        .collect()
                })
                .collect();
            let texts: Vec<String> = resp.hits.iter().map(hippo::SearchHit::text).collect();
            for &k in &args.k {
                let n = resp.hits.len().min(k);
                let got: HashSet<&str> = shown[..n].iter().flatten().copied().collect();
                let hit = ev.intersection(&got).count();
                let session = |d: &str| d.split(':').next().unwrap_or(d).to_owned();
                let ev_s: HashSet<String> = ev.iter().map(|d| session(d)).collect();
                let got_s: HashSet<String> = got.iter().map(|d| session(d)).collect();
                let chars: usize = texts[..n].iter().map(String::len).sum();
                let tokens: usize = texts[..n]
                    .iter()
                    .map(|t| hippo::text::approx_tokens(t))
                    .sum();
                // NDCG: each evidence message is a relevant item at the rank
                // of the result that shows it; ideally every one is shown by
                // the first result (an excerpt can hold several).
                let dcg: f64 = ev
                    .iter()
                    .filter_map(|e| shown[..n].iter().position(|s| s.contains(e)))
                    .map(|rank| 1.0 / (rank as f64 + 2.0).log2())
                    .sum();
                rec.insert(format!("frac@{k}"), hit as f64 / ev.len() as f64);
                rec.insert(format!("any@{k}"), f64::from(u8::from(hit > 0)));
                rec.insert(format!("all@{k}"), f64::from(u8::from(hit == ev.len())));
                rec.insert(
                    format!("sess@{k}"),
                    ev_s.intersection(&got_s).count() as f64 / ev_s.len() as f64,
                );
                rec.insert(format!("chars@{k}"), chars as f64);
                rec.insert(format!("tokens@{k}"), tokens as f64);
                rec.insert(format!("ndcg@{k}"), dcg / ev.len() as f64);
            }
            rows.push((cat, rec));
        }
    }
    let mean = |rows: &[&BTreeMap<String, f64>], key: &str| {
        if rows.is_empty() {
            return Value::Null;
        }
        let v = rows.iter().map(|r| r[key]).sum::<f64>() / rows.len() as f64;
        json!((v * 10_000.0).round() / 10_000.0)
    };
    let all: Vec<&BTreeMap<String, f64>> = rows.iter().map(|r| &r.1).collect();
    let mut overall = serde_json::Map::new();
    for &k in &args.k {
        for m in METRICS {
            overall.insert(format!("{m}@{k}"), mean(&all, &format!("{m}@{k}")));
        }
    }
    let mut by_cat = serde_json::Map::new();
    for (c, name) in CATEGORIES {
        let sub: Vec<&BTreeMap<String, f64>> =
            rows.iter().filter(|r| r.0 == c).map(|r| &r.1).collect();
        let mut entry = serde_json::Map::new();
        entry.insert("n".into(), json!(sub.len()));
        for &k in &args.k {
            for m in METRICS {
                entry.insert(format!("{m}@{k}"), mean(&sub, &format!("{m}@{k}")));
            }
        }
        by_cat.insert(name.into(), Value::Object(entry));
    }
    lat.sort_by(f64::total_cmp);
    embed_free.sort_by(f64::total_cmp);
    let out = json!({
        "questions": rows.len(),
        "distractors_per_conversation": args.distractors,
        "context_before": args.context_before,
        "context_after": args.context_after,
        "budget_tokens": args.budget_tokens,
        "neighbour_weight": args.neighbour_weight,
        "turns_loaded": turns_loaded,
        "ingest_turns_per_s": if load_s > 0.0 { (turns_loaded as f64 / load_s * 10.0).round() / 10.0 } else { 0.0 },
        "search_ms_p50": pct(&lat, 0.5),
        "search_ms_p95": pct(&lat, 0.95),
        "retrieval_cached_ms_p50": pct(&embed_free, 0.5),
        "retrieval_cached_ms_p95": pct(&embed_free, 0.95),
        "overall": overall,
        "by_category": by_cat,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    drop(hippo);
    if args.bench_db.is_none() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(())
}

/// Adds `n` generated chat turns to `uid`'s scope, in their own sessions,
/// dated evenly across the target conversation's time range.
fn add_distractors(
    hippo: &hippo::Hippo,
    uid: &str,
    turns: &[hippo_server::io::Turn],
    n: usize,
    seed: u64,
) -> Result<()> {
    use hippo::{AddItem, Content, Message};
    let times: Vec<_> = turns.iter().filter_map(|t| t.when).collect();
    let (first, last) = match (times.iter().min(), times.iter().max()) {
        (Some(a), Some(b)) => (*a, *b),
        _ => (chrono::Utc::now(), chrono::Utc::now()),
    };
    let mut generator = crate::synth::ChatGenerator::new(0xd157 ^ seed, 30_000);
    let mut items = Vec::with_capacity(n);
    let mut conversation = 0usize;
    while items.len() < n {
        let k = (n - items.len()).min(20);
        let when = first + (last - first) * (conversation as i32 % 97) / 97;
        for t in generator.conversation(k) {
            items.push(AddItem {
                scope: hippo::Scope {
                    user_id: Some(uid.to_owned()),
                    agent_id: None,
                    session_id: Some(format!("distractor-{conversation}")),
                },
                content: Content::Messages(vec![Message {
                    role: "user".into(),
                    name: Some(t.speaker),
                    content: t.text,
                }]),
                metadata: Default::default(),
                event_time: Some(when),
                kind: None,
                infer: false,
                id: None,
                recorded_at: None,
                confidence: None,
                force: false,
                expires_at: None,
            });
        }
        conversation += 1;
    }
    let bar = indicatif::ProgressBar::new(n as u64);
    for chunk in items.chunks(256) {
        hippo.add(chunk.to_vec())?;
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(())
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("hippo-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

//! `hippo bench`: evidence recall and latency on LoCoMo-format data sets,
//! through the library (no HTTP). `--data` names one file or a folder: every
//! `*.json` under it is a data set, each loaded into its own fresh store, and
//! one table reports them all (`--json` for every figure).
//!
//! Same metric as `shared/bench/locomo_recall.py`: frac = mean fraction of
//! evidence turns in the top-k, any/all = at least one / every evidence turn
//! found, sess = fraction of evidence sessions touched; also NDCG (each
//! evidence turn relevant, ideally all in the first result) and the results'
//! size (characters, and tokens as the search budget counts them). Overall
//! and per category: a file's own labels, LoCoMo's numbers by their names;
//! LoCoMo's category 5 (adversarial, no evidence) and questions without
//! evidence are skipped, as the driver skips them.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};

use hippo::{Filter, Scope, SearchRequest};

use hippo_server::io::{locomo_items, locomo_turns, InputError};
use hippo_server::settings::Settings;

/// Arguments of `hippo bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// A LoCoMo-format JSON file, or a folder: every `*.json` under it is a data set.
    #[arg(long)]
    data: PathBuf,
    /// Cut-offs to report (the table shows the largest).
    #[arg(long, num_args = 1.., default_values_t = vec![5, 10])]
    k: Vec<usize>,
    /// Print every figure as JSON (one object per data set) instead of the table.
    #[arg(long)]
    json: bool,
    /// Keep each data set's store in this folder (`<name>.db`), to ask again
    /// with `--reuse` (default: fresh temporary stores, removed afterwards).
    #[arg(long)]
    keep: Option<PathBuf>,
    /// Ask the questions against the stores an earlier run left in `--keep`
    /// (same data, `--convs` and `--distractors`) instead of loading.
    #[arg(long, requires = "keep")]
    reuse: bool,
    /// Write every question not fully answered to this file (JSON lines: the
    /// question, its evidence with their texts, and what the top-k showed).
    #[arg(long)]
    misses: Option<PathBuf>,
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
    /// Only these conversations of each file (comma-separated indices).
    #[arg(long, value_delimiter = ',')]
    convs: Option<Vec<usize>>,
    /// Ablation: chunks of one long text may be results of their own.
    #[arg(long)]
    no_one_result_per_text: bool,
    /// Build the consolidation digests (session digests, entity timelines)
    /// after loading each conversation, so they compete in search.
    #[arg(long)]
    consolidate: bool,
}

/// LoCoMo's numbered categories (REALTALK uses the same numbers).
const LOCOMO_CATEGORIES: [(u64, &str); 4] = [
    (1, "multi-hop"),
    (2, "temporal"),
    (3, "open-domain"),
    (4, "single-hop"),
];

/// LoCoMo's adversarial category: questions without evidence.
const ADVERSARIAL: u64 = 5;

/// Reported per cut-off: evidence recall (mean fraction, at least one, all),
/// session recall, NDCG, and the results' size in characters and tokens.
const METRICS: [&str; 7] = ["frac", "any", "all", "sess", "ndcg", "chars", "tokens"];

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let v = sorted[((p * (sorted.len() - 1) as f64).round() as usize).min(sorted.len() - 1)];
    (v * 100.0).round() / 100.0
}

/// A question's category label.
fn category(q: &Value) -> Option<String> {
    match q.get("category")? {
        Value::Number(n) => {
            let n = n.as_u64()?;
            if n == ADVERSARIAL {
                return None;
            }
            Some(
                LOCOMO_CATEGORIES
                    .iter()
                    .find(|c| c.0 == n)
                    .map_or_else(|| n.to_string(), |c| c.1.to_owned()),
            )
        }
        Value::String(s) => Some(s.replace('_', " ")),
        _ => None,
    }
}

/// The data sets `--data` names: the file, or every `*.json` under the
/// folder, sorted; each named by its file stem.
fn data_sets(path: &Path) -> Result<Vec<(String, PathBuf)>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        for entry in
            std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?
        {
            let p = entry?.path();
            if p.is_dir() {
                walk(&p, out)?;
            } else if p.extension().is_some_and(|e| e == "json") {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    if path.is_dir() {
        walk(path, &mut files)?;
        files.sort();
        if files.is_empty() {
            return Err(InputError(format!("no *.json data set under {}", path.display())).into());
        }
    } else {
        files.push(path.to_owned());
    }
    Ok(files
        .into_iter()
        .map(|f| {
            let name = f
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, f)
        })
        .collect())
}

/// One data set's answers.
#[derive(Default)]
struct Run {
    /// Per question: its category and its metrics.
    rows: Vec<(String, BTreeMap<String, f64>)>,
    /// Search latency with the query embedding, ms.
    lat: Vec<f64>,
    /// The same searches again (query vector cached): retrieval alone, ms.
    embed_free: Vec<f64>,
    turns_loaded: usize,
    load_s: f64,
}

/// Runs the benchmark on every data set and prints the table (or JSON).
pub fn run(settings: &Settings, args: BenchArgs) -> Result<()> {
    let sets = data_sets(&args.data)?;
    let tmp = tempfile_dir()?;
    let folder = args.keep.clone().unwrap_or_else(|| tmp.clone());
    std::fs::create_dir_all(&folder)?;
    let mut misses = match &args.misses {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot write {}", p.display()))?,
        )),
        None => None,
    };
    let mut reports = serde_json::Map::new();
    for (name, file) in &sets {
        let db = folder.join(format!("{name}.db"));
        if args.reuse && !db.exists() {
            bail!(InputError(format!(
                "--reuse: {} was not kept",
                db.display()
            )));
        }
        if !args.reuse {
            remove_store(&db);
        }
        eprintln!("bench: {name}");
        let result = run_one(settings, &args, name, file, &db, misses.as_mut());
        if args.keep.is_none() {
            remove_store(&db);
        }
        reports.insert(name.clone(), report(&args, &result?));
    }
    if let Some(m) = misses.as_mut() {
        m.flush()?;
    }
    let _ = std::fs::remove_dir_all(&tmp);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&Value::Object(reports))?);
    } else {
        print!("{}", table(&reports, *args.k.iter().max().unwrap_or(&10)));
    }
    Ok(())
}

fn remove_store(db: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

/// Loads one data set (unless reusing) and asks its questions.
fn run_one(
    settings: &Settings,
    args: &BenchArgs,
    name: &str,
    file: &Path,
    db: &Path,
    mut misses: Option<&mut std::io::BufWriter<std::fs::File>>,
) -> Result<Run> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let data: Value = serde_json::from_str(&text)
        .map_err(|e| InputError(format!("{}: invalid LoCoMo JSON: {e}", file.display())))?;
    let samples = data
        .as_array()
        .ok_or_else(|| InputError(format!("{}: a LoCoMo file is a JSON list", file.display())))?;
    let weights = hippo::FusionWeights {
        neighbour: args.neighbour_weight,
        ..Default::default()
    };
    let retrieval = hippo::RetrievalOptions {
        one_result_per_text: !args.no_one_result_per_text,
    };
    let hippo = settings.open_with(db, weights, retrieval)?;
    let kmax = *args.k.iter().max().unwrap_or(&10);
    let mut run = Run::default();
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
        let text_of: std::collections::HashMap<&str, &str> = turns
            .iter()
            .map(|t| (t.dia_id.as_str(), t.text.as_str()))
            .collect();
        let items = locomo_items(uid, &turns);
        if !args.reuse {
            hippo.delete_scope(&Scope::user(uid))?;
            let t0 = Instant::now();
            for chunk in items.chunks(256) {
                hippo.add(chunk.to_vec())?;
            }
            run.load_s += t0.elapsed().as_secs_f64();
            if args.distractors > 0 {
                add_distractors(&hippo, uid, &turns, args.distractors, index as u64)?;
            }
            if args.consolidate {
                while hippo.run_one_job(chrono::Duration::seconds(600), 1)? {}
            }
            run.turns_loaded += items.len();
        }
        for q in s.get("qa").and_then(Value::as_array).into_iter().flatten() {
            let Some(cat) = category(q) else { continue };
            let ev: HashSet<&str> = q
                .get("evidence")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .filter(|e| known.contains(e))
                .collect();
            if ev.is_empty() {
                continue;
            }
            let question = q
                .get("question")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let req = SearchRequest {
                scope: Scope::user(uid),
                query: question.clone(),
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
                reference_time: None,
            };
            let t = Instant::now();
            let resp = hippo.search(&req)?;
            run.lat.push(t.elapsed().as_secs_f64() * 1e3);
            // Again with the query vector cached: retrieval alone.
            run.embed_free.push(hippo.search(&req)?.retrieve_ms);
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
            let mut rec = BTreeMap::new();
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
            if let Some(out) = misses.as_deref_mut() {
                let n = resp.hits.len().min(kmax);
                let got: HashSet<&str> = shown[..n].iter().flatten().copied().collect();
                if !ev.iter().all(|e| got.contains(e)) {
                    let mut evidence: Vec<&str> = ev.iter().copied().collect();
                    evidence.sort_unstable();
                    let line = json!({
                        "data": name,
                        "conversation": uid,
                        "category": cat,
                        "question": question,
                        "answer": q.get("answer"),
                        "evidence": evidence.iter().map(|e| json!({
                            "id": e, "found": got.contains(e), "text": text_of.get(e),
                        })).collect::<Vec<_>>(),
                        "shown": resp.hits[..n].iter().zip(&shown).map(|(h, s)| json!({
                            "ids": s, "score": h.score, "text": h.text(),
                        })).collect::<Vec<_>>(),
                    });
                    writeln!(out, "{line}")?;
                }
            }
            run.rows.push((cat, rec));
        }
    }
    Ok(run)
}

/// One data set's figures: overall and per category.
fn report(args: &BenchArgs, run: &Run) -> Value {
    let mean = |rows: &[&BTreeMap<String, f64>], key: &str| {
        if rows.is_empty() {
            return Value::Null;
        }
        let v = rows.iter().map(|r| r[key]).sum::<f64>() / rows.len() as f64;
        json!((v * 10_000.0).round() / 10_000.0)
    };
    let figures = |rows: &[&BTreeMap<String, f64>]| {
        let mut m = serde_json::Map::new();
        for &k in &args.k {
            for metric in METRICS {
                m.insert(
                    format!("{metric}@{k}"),
                    mean(rows, &format!("{metric}@{k}")),
                );
            }
        }
        m
    };
    let all: Vec<&BTreeMap<String, f64>> = run.rows.iter().map(|r| &r.1).collect();
    let mut cats: Vec<&str> = run.rows.iter().map(|r| r.0.as_str()).collect();
    cats.sort_unstable();
    cats.dedup();
    let mut by_cat = serde_json::Map::new();
    for c in cats {
        let sub: Vec<&BTreeMap<String, f64>> =
            run.rows.iter().filter(|r| r.0 == c).map(|r| &r.1).collect();
        let mut entry = figures(&sub);
        entry.insert("n".into(), json!(sub.len()));
        by_cat.insert(c.to_owned(), Value::Object(entry));
    }
    let (mut lat, mut embed_free) = (run.lat.clone(), run.embed_free.clone());
    lat.sort_by(f64::total_cmp);
    embed_free.sort_by(f64::total_cmp);
    json!({
        "questions": run.rows.len(),
        "distractors_per_conversation": args.distractors,
        "context_before": args.context_before,
        "context_after": args.context_after,
        "budget_tokens": args.budget_tokens,
        "neighbour_weight": args.neighbour_weight,
        "one_result_per_text": !args.no_one_result_per_text,
        "turns_loaded": run.turns_loaded,
        "ingest_turns_per_s": if run.load_s > 0.0 { (run.turns_loaded as f64 / run.load_s * 10.0).round() / 10.0 } else { 0.0 },
        "search_ms_p50": pct(&lat, 0.5),
        "search_ms_p95": pct(&lat, 0.95),
        "retrieval_cached_ms_p50": pct(&embed_free, 0.5),
        "retrieval_cached_ms_p95": pct(&embed_free, 0.95),
        "overall": figures(&all),
        "by_category": by_cat,
    })
}

/// The one table: a row per data set, its categories indented beneath.
fn table(reports: &serde_json::Map<String, Value>, k: usize) -> String {
    let num = |v: &Value, key: &str| v.get(key).and_then(Value::as_f64);
    let f4 = |x: Option<f64>| x.map_or_else(|| "-".to_owned(), |x| format!("{x:.4}"));
    let f0 = |x: Option<f64>| x.map_or_else(|| "-".to_owned(), |x| format!("{x:.0}"));
    let f1 = |x: Option<f64>| x.map_or_else(|| "-".to_owned(), |x| format!("{x:.1}"));
    let mut lines = vec![[
        "data set".to_owned(),
        "n".into(),
        format!("frac@{k}"),
        format!("all@{k}"),
        format!("any@{k}"),
        format!("ndcg@{k}"),
        format!("tokens@{k}"),
        "p50 ms".into(),
        "p95 ms".into(),
        "ingest/s".into(),
    ]];
    let row = |label: String, n: Option<f64>, fig: &Value| {
        [
            label,
            f0(n),
            f4(num(fig, &format!("frac@{k}"))),
            f4(num(fig, &format!("all@{k}"))),
            f4(num(fig, &format!("any@{k}"))),
            f4(num(fig, &format!("ndcg@{k}"))),
            f0(num(fig, &format!("tokens@{k}"))),
            String::new(),
            String::new(),
            String::new(),
        ]
    };
    for (name, r) in reports {
        let mut top = row(name.clone(), num(r, "questions"), &r["overall"]);
        top[7] = f1(num(r, "search_ms_p50"));
        top[8] = f1(num(r, "search_ms_p95"));
        top[9] = f1(num(r, "ingest_turns_per_s"));
        lines.push(top);
        if let Some(cats) = r["by_category"].as_object() {
            for (c, fig) in cats {
                lines.push(row(format!("  {c}"), num(fig, "n"), fig));
            }
        }
    }
    let widths: Vec<usize> = (0..lines[0].len())
        .map(|i| {
            lines
                .iter()
                .map(|l| l[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (n, l) in lines.iter().enumerate() {
        let cells: Vec<String> = l
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == 0 {
                    format!("{c:<w$}", w = widths[i])
                } else {
                    format!("{c:>w$}", w = widths[i])
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
        if n == 0 {
            out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1)));
            out.push('\n');
        }
    }
    out
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

//! `hippo eval-injection`: the injection detector ([`hippo::injection`]) on
//! an attack set (detection rate, per family, the misses) and on benign chat
//! in LoCoMo format (false-positive rate, the flagged turns).
//!
//! Three attack sets, by when they were written: `eval/injection.json` (with
//! the rules), `eval/injection-heldout.json` (after the rules; seen while
//! choosing the semantic thresholds) and `eval/injection-fresh.json` (after
//! everything was frozen: the honest estimate).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use serde::Deserialize;
use serde_json::{json, Value};

use hippo_server::io::{locomo_turns, InputError};

/// Options of `hippo eval-injection`.
#[derive(Args, Clone)]
pub struct EvalInjectionArgs {
    /// The attack set (JSON, see `eval/injection.json`).
    #[arg(long)]
    pub attacks: PathBuf,
    /// Benign chat in LoCoMo format (a list of samples with `conversation`).
    #[arg(long)]
    pub benign: Option<PathBuf>,
    /// Also judge with the semantic detector, as the engine does (embeds every text).
    #[arg(long)]
    pub semantic: bool,
}

#[derive(Deserialize)]
struct AttackSet {
    attacks: Vec<Attack>,
    /// Hard negatives: benign texts phrased close to the attacks (none
    /// should be flagged).
    #[serde(default)]
    benign: Vec<String>,
}

#[derive(Deserialize)]
struct Attack {
    family: String,
    text: String,
}

fn read_json(path: &PathBuf) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text)
        .map_err(|e| InputError(format!("{}: invalid JSON: {e}", path.display())).into())
}

/// Detection and false-positive rates of the engine's full judgement
/// (phrasing rules and the semantic detector).
fn semantic_report(
    settings: &hippo_server::settings::Settings,
    attacks: &[&str],
    benign: &[String],
) -> Result<Value> {
    let embedder = settings.embedder()?;
    let detector = hippo::injection::SemanticDetector::new(embedder.as_ref())?;
    let judge = |texts: Vec<&str>| -> Result<Vec<Vec<&'static str>>> {
        let mut out = Vec::new();
        for chunk in texts.chunks(64) {
            for (t, v) in chunk.iter().zip(embedder.embed_batch(chunk)?) {
                out.push(detector.judge(t, &v));
            }
        }
        Ok(out)
    };
    let a = judge(attacks.to_vec())?;
    let b = judge(benign.iter().map(String::as_str).collect())?;
    let hit = a.iter().filter(|f| !f.is_empty()).count();
    let fps: Vec<Value> = b
        .iter()
        .zip(benign)
        .filter(|(f, _)| !f.is_empty())
        .map(|(f, t)| json!({"families": f, "text": t}))
        .collect();
    let missed: Vec<&str> = a
        .iter()
        .zip(attacks)
        .filter(|(f, _)| f.is_empty())
        .map(|(_, t)| *t)
        .collect();
    Ok(json!({
        "detection_rate": round(hit as f64 / a.len().max(1) as f64),
        "false_positive_rate": round(fps.len() as f64 / b.len().max(1) as f64),
        "false_positives": fps,
        "missed": missed,
    }))
}

/// Runs the evaluation and prints its report (JSON).
pub fn run(settings: &hippo_server::settings::Settings, args: EvalInjectionArgs) -> Result<Value> {
    let set: AttackSet = serde_json::from_value(read_json(&args.attacks)?)
        .map_err(|e| InputError(format!("{}: {e}", args.attacks.display())))?;
    let mut by_family: serde_json::Map<String, Value> = serde_json::Map::new();
    let mut missed = Vec::new();
    let mut flagged = 0usize;
    for a in &set.attacks {
        let found = hippo::injection::scan(&a.text);
        let hit = !found.is_empty();
        flagged += usize::from(hit);
        let e = by_family
            .entry(a.family.clone())
            .or_insert_with(|| json!({"n": 0, "flagged": 0}));
        e["n"] = json!(e["n"].as_u64().unwrap_or(0) + 1);
        e["flagged"] = json!(e["flagged"].as_u64().unwrap_or(0) + u64::from(hit));
        if !hit {
            missed.push(json!({"family": a.family, "text": a.text}));
        }
    }
    let n = set.attacks.len().max(1);
    let mut report = json!({
        "attacks": set.attacks.len(),
        "attacks_flagged": flagged,
        "detection_rate": round(flagged as f64 / n as f64),
        "by_family": by_family,
        "missed": missed,
    });
    if !set.benign.is_empty() {
        let flagged: Vec<&str> = set
            .benign
            .iter()
            .filter(|t| !hippo::injection::scan(t).is_empty())
            .map(String::as_str)
            .collect();
        report["hard_negatives"] = json!(set.benign.len());
        report["hard_negatives_flagged"] = json!(flagged);
    }
    let mut benign_texts: Vec<String> = Vec::new();
    if let Some(path) = &args.benign {
        let data = read_json(path)?;
        let samples = data
            .as_array()
            .ok_or_else(|| InputError(format!("{}: expected a list of samples", path.display())))?;
        let (mut turns, mut flagged_turns) = (0usize, Vec::new());
        for s in samples {
            let conv = s
                .get("conversation")
                .context("a sample lacks conversation")?;
            for t in locomo_turns(conv)? {
                turns += 1;
                benign_texts.push(t.text.clone());
                let found = hippo::injection::scan(&t.text);
                if !found.is_empty() {
                    flagged_turns
                        .push(json!({"dia_id": t.dia_id, "families": found, "text": t.text}));
                }
            }
        }
        report["benign_turns"] = json!(turns);
        report["benign_flagged"] = json!(flagged_turns.len());
        report["false_positive_rate"] =
            json!(round(flagged_turns.len() as f64 / turns.max(1) as f64));
        report["benign_flagged_examples"] = json!(flagged_turns);
    }
    if args.semantic {
        let attacks: Vec<&str> = set.attacks.iter().map(|a| a.text.as_str()).collect();
        report["semantic"] = semantic_report(settings, &attacks, &benign_texts)?;
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(report)
}

fn round(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

//! Import and export: JSONL (exported memories, or add items one per line)
//! and LoCoMo-format conversation files.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use chrono::{DateTime, NaiveDateTime, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use hippo::{AddItem, Content, Filter, Hippo, Memory, Message, Order, Scope, Source};

use hippo_cli::api::AddItemBody;

/// Bad input in an imported file (exit code 2).
#[derive(Debug)]
pub struct InputError(pub String);

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InputError {}

const BATCH: usize = 256;

fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(what.to_owned());
    pb
}

/// Imports `file`; returns how many memories were stored.
pub fn import(hippo: &Hippo, file: &Path, format: &str) -> Result<usize> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let format = match format {
        "auto" if text.trim_start().starts_with('[') => "locomo",
        "auto" => "jsonl",
        f => f,
    };
    match format {
        "jsonl" => import_jsonl(hippo, &text),
        "locomo" => import_locomo(hippo, &text),
        other => Err(InputError(format!(
            "unknown format {other:?}: use jsonl, locomo or auto"
        ))
        .into()),
    }
}

enum Line {
    Memory(Box<Memory>),
    Source(Source),
    Item(AddItem),
}

fn parse_line(n: usize, line: &str) -> Result<Line> {
    let v: Value = serde_json::from_str(line)
        .map_err(|e| InputError(format!("line {n}: invalid JSON: {e}")))?;
    // An exported memory has an id and a record time; an exported source is
    // `{"source": {...}}`; anything else is an add item.
    if let Some(src) = v.get("source") {
        let s: Source = serde_json::from_value(src.clone())
            .map_err(|e| InputError(format!("line {n}: invalid source: {e}")))?;
        return Ok(Line::Source(s));
    }
    if v.get("id").is_some() && v.get("recorded_at").is_some() {
        let m: Memory = serde_json::from_value(v)
            .map_err(|e| InputError(format!("line {n}: invalid memory: {e}")))?;
        Ok(Line::Memory(Box::new(m)))
    } else {
        let body: AddItemBody = serde_json::from_value(v)
            .map_err(|e| InputError(format!("line {n}: invalid item: {e}")))?;
        Ok(Line::Item(
            body.into_item(chrono::Utc::now())
                .map_err(|e| InputError(format!("line {n}: {e}")))?,
        ))
    }
}

fn import_jsonl(hippo: &Hippo, text: &str) -> Result<usize> {
    // Parse everything first: a bad line rejects the file before anything is written.
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if !line.trim().is_empty() {
            lines.push(parse_line(i + 1, line)?);
        }
    }
    let pb = bar(lines.len() as u64, "importing");
    let mut stored = 0;
    let mut memories = Vec::new();
    let mut items = Vec::new();
    for line in lines {
        match line {
            Line::Memory(m) => memories.push(*m),
            Line::Item(i) => items.push(i),
            // Sources precede their chunks in an export; store them at once.
            Line::Source(s) => {
                hippo.import_sources(vec![s])?;
                pb.inc(1);
            }
        }
        if memories.len() >= BATCH {
            let n = memories.len();
            stored += hippo.import(std::mem::take(&mut memories))?;
            pb.inc(n as u64);
        }
        if items.len() >= BATCH {
            let n = items.len();
            stored += hippo.add(std::mem::take(&mut items))?.len();
            pb.inc(n as u64);
        }
    }
    if !memories.is_empty() {
        pb.inc(memories.len() as u64);
        stored += hippo.import(memories)?;
    }
    if !items.is_empty() {
        pb.inc(items.len() as u64);
        stored += hippo.add(items)?.len();
    }
    pb.finish_and_clear();
    Ok(stored)
}

/// Parses LoCoMo's "1:56 pm on 8 May, 2023" (or RFC 3339) as UTC.
pub fn parse_locomo_date(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    let s = s.trim().to_uppercase();
    NaiveDateTime::parse_from_str(&s, "%I:%M %p ON %d %B, %Y")
        .ok()
        .map(|t| t.and_utc())
}

/// One LoCoMo turn.
pub struct Turn {
    /// Session number.
    pub session: u64,
    /// Session date.
    pub when: Option<DateTime<Utc>>,
    /// Speaker name.
    pub speaker: String,
    /// Dialog id, e.g. `D1:3`.
    pub dia_id: String,
    /// Text (with an image caption appended, as the benchmark does).
    pub text: String,
}

/// The turns of one LoCoMo conversation, in session order.
pub fn locomo_turns(conversation: &Value) -> Result<Vec<Turn>> {
    let obj = conversation
        .as_object()
        .ok_or_else(|| InputError("conversation must be an object".into()))?;
    let mut sessions: Vec<(u64, &Vec<Value>)> = obj
        .iter()
        .filter_map(|(k, v)| {
            let n = k.strip_prefix("session_")?.parse().ok()?;
            Some((n, v.as_array()?))
        })
        .collect();
    sessions.sort_by_key(|s| s.0);
    let mut turns = Vec::new();
    for (n, list) in sessions {
        let when = obj
            .get(&format!("session_{n}_date_time"))
            .and_then(Value::as_str)
            .and_then(parse_locomo_date);
        for t in list {
            let field = |k: &str| t.get(k).and_then(Value::as_str).map(str::to_owned);
            let mut text = field("text").unwrap_or_default();
            if let Some(c) = field("blip_caption") {
                text.push_str(&format!(" [shares an image: {c}]"));
            }
            turns.push(Turn {
                session: n,
                when,
                speaker: field("speaker")
                    .ok_or_else(|| InputError(format!("session {n}: a turn lacks speaker")))?,
                dia_id: field("dia_id")
                    .ok_or_else(|| InputError(format!("session {n}: a turn lacks dia_id")))?,
                text,
            });
        }
    }
    Ok(turns)
}

/// The add items of a LoCoMo conversation under `user_id`.
pub fn locomo_items(user_id: &str, turns: &[Turn]) -> Vec<AddItem> {
    turns
        .iter()
        .filter(|t| !t.text.trim().is_empty())
        .map(|t| AddItem {
            scope: Scope::user(user_id),
            content: Content::Messages(vec![Message {
                role: "user".into(),
                name: Some(t.speaker.clone()),
                content: t.text.clone(),
            }]),
            metadata: json!({"dia_id": t.dia_id, "session": t.session, "speaker": t.speaker})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            event_time: t.when,
            kind: None,
            infer: false,
            id: None,
            recorded_at: None,
            confidence: None,
            force: false,
            expires_at: None,
        })
        .collect()
}

fn import_locomo(hippo: &Hippo, text: &str) -> Result<usize> {
    let data: Value =
        serde_json::from_str(text).map_err(|e| InputError(format!("invalid LoCoMo JSON: {e}")))?;
    let samples = data
        .as_array()
        .ok_or_else(|| InputError("a LoCoMo file is a JSON list of samples".into()))?;
    let mut all = Vec::new();
    for (i, s) in samples.iter().enumerate() {
        let id = s
            .get("sample_id")
            .and_then(Value::as_str)
            .ok_or_else(|| InputError(format!("sample {i} lacks sample_id")))?;
        let conv = s
            .get("conversation")
            .ok_or_else(|| InputError(format!("sample {id} lacks conversation")))?;
        all.extend(locomo_items(id, &locomo_turns(conv)?));
    }
    let pb = bar(all.len() as u64, "importing");
    let mut stored = 0;
    while !all.is_empty() {
        let rest = all.split_off(all.len().min(BATCH));
        let n = all.len();
        stored += hippo.add(std::mem::replace(&mut all, rest))?.len();
        pb.inc(n as u64);
    }
    pb.finish_and_clear();
    Ok(stored)
}

/// Writes every memory (of `scope`, when given) as one JSON line, oldest
/// first, whatever its status or validity (earlier versions, deleted and
/// archived memories too); the whole text of chunked inputs goes as a
/// `{"source": ...}` line before its first chunk.
pub fn export(hippo: &Hippo, scope: Option<&Scope>, mut out: impl Write) -> Result<usize> {
    let mut cursor: Option<String> = None;
    let mut n = 0;
    let mut written = std::collections::HashSet::new();
    let everything = Filter {
        all_versions: true,
        statuses: hippo::Status::ALL.to_vec(),
        ..Default::default()
    };
    loop {
        let page = hippo.list(
            scope,
            &everything,
            cursor.as_deref(),
            1000,
            Order::Ascending,
        )?;
        for m in &page.memories {
            if let Some(sid) = m.provenance.source_id {
                if written.insert(sid) {
                    if let Some(source) = hippo.source(sid)? {
                        serde_json::to_writer(&mut out, &json!({ "source": source }))?;
                        out.write_all(b"\n")?;
                    }
                }
            }
            serde_json::to_writer(&mut out, m)?;
            out.write_all(b"\n")?;
            n += 1;
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    out.flush()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locomo_dates_parse() {
        let t = parse_locomo_date("1:56 pm on 8 May, 2023").unwrap();
        assert_eq!(t.to_rfc3339(), "2023-05-08T13:56:00+00:00");
        assert!(parse_locomo_date("yesterday").is_none());
        assert!(parse_locomo_date("2023-05-08T13:56:00Z").is_some());
    }
}

//! Import and export: JSONL (exported memories, or add items one per line),
//! LoCoMo-format conversation files, Mem0 exports and OpenAI-style chat logs.
//!
//! Export is lossless: every row (all versions and statuses), each chunked
//! input's source and each memory's event log, as JSON lines. Importing an
//! export restores them by id, and is repeatable: existing ids and logged
//! events are skipped. The other formats become add items.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use chrono::{DateTime, NaiveDateTime, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use hippo::{AddItem, Content, Filter, Hippo, Memory, MemoryEvent, Message, Order, Scope, Source};

use crate::api::AddItemBody;

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

/// A progress bar of `len` steps labelled `what` (on standard error; also
/// the measuring tools).
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(what.to_owned());
    pb
}

/// Imports `file`; returns how many memories were stored. `owner` is the
/// scope for formats that carry none (chat logs) and fills in what a Mem0
/// export leaves out.
pub fn import(hippo: &Hippo, file: &Path, format: &str, owner: &Scope) -> Result<usize> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let format = match format {
        "auto" => detect(&text),
        f => f,
    };
    match format {
        "jsonl" => import_jsonl(hippo, &text),
        "locomo" => import_locomo(hippo, &text),
        "mem0" => store_items(hippo, mem0_items(&text, owner)?),
        "chat" => {
            let stem = file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "chat".into());
            store_items(hippo, chat_items(&text, owner, &stem)?)
        }
        other => Err(InputError(format!(
            "unknown format {other:?}: use jsonl, locomo, mem0, chat or auto"
        ))
        .into()),
    }
}

/// The format of a file by its shape: a JSON list of LoCoMo samples, of
/// chat conversations or messages, or of Mem0 memories; a JSON object with
/// `messages` (one chat) or `results`/`memories` (a Mem0 listing); else
/// JSON lines (Hippo's export, add items, or Mem0 memories).
fn detect(text: &str) -> &'static str {
    let first = match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(a)) => a.into_iter().next().unwrap_or(Value::Null),
        Ok(Value::Object(o)) if o.contains_key("messages") => return "chat",
        Ok(Value::Object(o)) if o.contains_key("results") || o.contains_key("memories") => {
            return "mem0"
        }
        _ => {
            let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            return match serde_json::from_str::<Value>(line) {
                Ok(v) if is_mem0_memory(&v) => "mem0",
                _ => "jsonl",
            };
        }
    };
    if first.get("conversation").is_some() {
        "locomo"
    } else if first.get("messages").is_some() || first.get("role").is_some() {
        "chat"
    } else {
        "mem0"
    }
}

/// A Mem0 memory has `memory` text and no Hippo `recorded_at`.
fn is_mem0_memory(v: &Value) -> bool {
    v.get("memory").is_some_and(Value::is_string) && v.get("recorded_at").is_none()
}

/// Adds items in batches with a progress bar.
fn store_items(hippo: &Hippo, mut all: Vec<AddItem>) -> Result<usize> {
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

/// The items of a Mem0 export: a JSON list of memories, an object with
/// `results` (what `get_all` answers) or `memories`, or JSON lines. Each
/// memory keeps its id (when a UUID), owner, metadata and creation time;
/// its categories go to `metadata.mem0_categories`. Mem0 memories are
/// extracted facts, so they become `fact` memories.
pub fn mem0_items(text: &str, owner: &Scope) -> Result<Vec<AddItem>> {
    let list: Vec<Value> = match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(a)) => a,
        Ok(Value::Object(mut o)) => match o.remove("results").or_else(|| o.remove("memories")) {
            Some(Value::Array(a)) => a,
            _ => {
                return Err(InputError("a Mem0 export object needs a `results` list".into()).into())
            }
        },
        _ => text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .map_err(|e| InputError(format!("line {}: invalid JSON: {e}", i + 1)))
            })
            .collect::<std::result::Result<_, _>>()?,
    };
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            mem0_item(m, owner).map_err(|e| InputError(format!("memory {i}: {e}")).into())
        })
        .collect()
}

fn mem0_item(m: &Value, owner: &Scope) -> std::result::Result<AddItem, String> {
    let text = m
        .get("memory")
        .or_else(|| m.get("text"))
        .and_then(Value::as_str)
        .filter(|t| !t.trim().is_empty())
        .ok_or("a Mem0 memory needs its `memory` text")?;
    let field = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_owned);
    let scope = Scope {
        user_id: field("user_id").or_else(|| owner.user_id.clone()),
        agent_id: field("agent_id").or_else(|| owner.agent_id.clone()),
        session_id: field("run_id").or_else(|| owner.session_id.clone()),
    };
    if scope == Scope::default() {
        return Err(
            "no owner: the memory has no user_id/agent_id/run_id; give --user or --agent".into(),
        );
    }
    let mut metadata = m
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if let Some(c) = m
        .get("categories")
        .filter(|c| c.as_array().is_some_and(|a| !a.is_empty()))
    {
        metadata.insert("mem0_categories".into(), c.clone());
    }
    let time = |k: &str| {
        field(k).and_then(|t| {
            DateTime::parse_from_rfc3339(&t)
                .ok()
                .map(|t| t.with_timezone(&Utc))
        })
    };
    let mut item = AddItem::text(scope, text);
    item.kind = Some(hippo::MemoryKind::Fact);
    item.metadata = metadata;
    item.id = field("id").and_then(|i| i.parse().ok());
    item.recorded_at = time("created_at");
    // Imported facts were admitted once already.
    item.force = true;
    Ok(item)
}

/// The items of OpenAI-style chat logs: `{"messages": [...]}`, a list of
/// such conversations, or one list of messages. Each conversation is a
/// session of `owner` (its `id`/`session_id`, else `<file stem>-<n>`);
/// `system` messages are instructions to a model, not events: skipped.
/// Content may be a string or a list of parts (text parts are joined).
pub fn chat_items(text: &str, owner: &Scope, stem: &str) -> Result<Vec<AddItem>> {
    if owner.user_id.is_none() && owner.agent_id.is_none() {
        return Err(InputError("chat logs carry no owner: give --user or --agent".into()).into());
    }
    let data: Value =
        serde_json::from_str(text).map_err(|e| InputError(format!("invalid chat JSON: {e}")))?;
    let conversations: Vec<Value> = match data {
        Value::Object(_) => vec![data],
        Value::Array(a) if a.first().is_some_and(|v| v.get("role").is_some()) => {
            vec![json!({ "messages": a })]
        }
        Value::Array(a) => a,
        _ => return Err(InputError("a chat log is a JSON object or list".into()).into()),
    };
    let mut items = Vec::new();
    for (n, conv) in conversations.iter().enumerate() {
        let messages = conv
            .get("messages")
            .and_then(Value::as_array)
            .ok_or_else(|| InputError(format!("conversation {n}: no `messages` list")))?;
        let session = owner.session_id.clone().unwrap_or_else(|| {
            conv.get("session_id")
                .or_else(|| conv.get("id"))
                .and_then(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .or_else(|| v.as_i64().map(|i| i.to_string()))
                })
                .unwrap_or_else(|| format!("{stem}-{}", n + 1))
        });
        let mut turns = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            let role = m
                .get("role")
                .and_then(Value::as_str)
                .ok_or_else(|| InputError(format!("conversation {n}, message {i}: no role")))?;
            if role == "system" || role == "developer" {
                continue;
            }
            let content = match m.get("content") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join("\n"),
                _ => String::new(),
            };
            if content.trim().is_empty() {
                continue; // tool calls without text, images
            }
            turns.push(Message {
                role: role.to_owned(),
                name: m.get("name").and_then(Value::as_str).map(str::to_owned),
                content,
            });
        }
        if turns.is_empty() {
            continue;
        }
        let mut item = AddItem::text(
            Scope {
                session_id: Some(session),
                ..owner.clone()
            },
            String::new(),
        );
        item.content = Content::Messages(turns);
        items.push(item);
    }
    Ok(items)
}

enum Line {
    Memory(Box<Memory>),
    Source(Source),
    Event(MemoryEvent),
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
    if let Some(ev) = v.get("event") {
        let e: MemoryEvent = serde_json::from_value(ev.clone())
            .map_err(|e| InputError(format!("line {n}: invalid event: {e}")))?;
        return Ok(Line::Event(e));
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
    // Events follow their memory in an export; they are restored once
    // every memory is in.
    let mut events = Vec::new();
    for line in lines {
        match line {
            Line::Memory(m) => memories.push(*m),
            Line::Item(i) => items.push(i),
            Line::Event(e) => {
                events.push(e);
                pb.inc(1);
            }
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
    for chunk in events.chunks(BATCH * 4) {
        hippo.import_events(chunk.to_vec())?;
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
    store_items(hippo, all)
}

/// Writes every memory (of `scope`, when given) as one JSON line, oldest
/// first, whatever its status or validity (earlier versions, deleted and
/// archived memories too); the whole text of chunked inputs goes as a
/// `{"source": ...}` line before its first chunk, and each memory's event
/// log as `{"event": ...}` lines after it (lossless: `import` restores
/// versions, provenance and history).
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
            // The log hangs on the memory's id (not its earlier versions).
            if m.version_of.is_none() {
                for e in hippo.events(m.id)? {
                    serde_json::to_writer(&mut out, &json!({ "event": e }))?;
                    out.write_all(b"\n")?;
                }
            }
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
    fn formats_are_detected_by_shape() {
        assert_eq!(
            detect(r#"[{"sample_id": "a", "conversation": {}}]"#),
            "locomo"
        );
        assert_eq!(
            detect(r#"{"messages": [{"role": "user", "content": "hi"}]}"#),
            "chat"
        );
        assert_eq!(detect(r#"[{"role": "user", "content": "hi"}]"#), "chat");
        assert_eq!(detect(r#"{"results": [{"memory": "likes tea"}]}"#), "mem0");
        assert_eq!(
            detect(r#"[{"id": "x", "memory": "likes tea", "user_id": "a"}]"#),
            "mem0"
        );
        assert_eq!(
            detect("{\"memory\": \"likes tea\", \"user_id\": \"a\"}\n"),
            "mem0"
        );
        assert_eq!(detect("{\"user_id\": \"a\", \"text\": \"x\"}\n"), "jsonl");
    }

    #[test]
    fn mem0_memories_keep_owner_id_time_and_categories() {
        let items = mem0_items(
            r#"{"results": [{"id": "0190a000-0000-7000-8000-000000000001", "memory": "Likes tea",
                "user_id": "alex", "run_id": "r1", "categories": ["food"], "metadata": {"k": 1},
                "created_at": "2024-05-01T10:00:00Z"}]}"#,
            &Scope::default(),
        )
        .unwrap();
        let i = &items[0];
        assert_eq!(i.scope.user_id.as_deref(), Some("alex"));
        assert_eq!(i.scope.session_id.as_deref(), Some("r1"));
        assert_eq!(i.kind, Some(hippo::MemoryKind::Fact));
        assert_eq!(i.metadata["mem0_categories"], json!(["food"]));
        assert_eq!(
            i.id.unwrap().to_string(),
            "0190a000-0000-7000-8000-000000000001"
        );
        assert_eq!(
            i.recorded_at.unwrap().to_rfc3339(),
            "2024-05-01T10:00:00+00:00"
        );
        assert!(mem0_items(r#"[{"memory": "orphan"}]"#, &Scope::default()).is_err());
        assert!(mem0_items(r#"[{"memory": "x"}]"#, &Scope::user("u")).is_ok());
    }

    #[test]
    fn chat_logs_become_sessions_without_system_messages() {
        let text = r#"[{"id": "c1", "messages": [
            {"role": "system", "content": "You are helpful"},
            {"role": "user", "content": [{"type": "text", "text": "I keep bees"}]},
            {"role": "assistant", "content": "How many hives?"}]},
            {"messages": [{"role": "user", "content": "Three hives"}]}]"#;
        let items = chat_items(text, &Scope::user("ana"), "log").unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].scope.session_id.as_deref(), Some("c1"));
        assert_eq!(items[1].scope.session_id.as_deref(), Some("log-2"));
        match &items[0].content {
            Content::Messages(ms) => {
                assert_eq!(ms.len(), 2);
                assert_eq!(ms[0].content, "I keep bees");
            }
            other => panic!("{other:?}"),
        }
        assert!(chat_items(text, &Scope::default(), "log").is_err());
    }

    #[test]
    fn locomo_dates_parse() {
        let t = parse_locomo_date("1:56 pm on 8 May, 2023").unwrap();
        assert_eq!(t.to_rfc3339(), "2023-05-08T13:56:00+00:00");
        assert!(parse_locomo_date("yesterday").is_none());
        assert!(parse_locomo_date("2023-05-08T13:56:00Z").is_some());
    }
}

//! A-MEM-style notes on LLM-extracted memories (Xu et al., 2025): each
//! extracted fact carries keywords, tags and a one-line context, and links
//! to the related memories it was compared with. When a new note links to
//! an older one, the model may *evolve* the older note (new tags, a new
//! context) in the light of the new fact: the older memory's content is
//! untouched (it is what was said), only its note changes, in place and
//! logged as an `evolved` event (before and after).
//!
//! Notes cost no extra calls: keywords, tags and context come with the
//! extraction answer, links and evolutions with the update decision. A note
//! lives in the memory's metadata under [`NOTE_KEY`]. Planning assigns the
//! new fact's id, so the plan can hold `evolve` steps that link each related
//! memory back; each is one step of the job, in one transaction with its
//! step counter, like every other step.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::engine::Hippo;
use crate::error::Result;
use crate::jobs::JobStep;
use crate::model::{millis, EventKind, MemoryId, Scope, Status};
use crate::store::{InsertBatch, Update};

/// Metadata key of a memory's note.
pub const NOTE_KEY: &str = "note";

/// Most keywords or tags kept.
const MAX_TERMS: usize = 8;
/// Longest keyword or tag, in characters.
const MAX_TERM_CHARS: usize = 40;
/// Longest context, in characters.
const MAX_CONTEXT_CHARS: usize = 300;
/// Most links kept on one note.
pub const MAX_LINKS: usize = 20;

/// A memory's note.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    /// Salient words of the memory.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keywords: Vec<String>,
    /// Categories (lower case), e.g. `travel`, `family`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// One line placing the memory in its wider situation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Related memories (both ways: a link is recorded on both notes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<MemoryId>,
}

impl Note {
    /// True when the note says nothing.
    pub fn is_empty(&self) -> bool {
        self.keywords.is_empty()
            && self.tags.is_empty()
            && self.context.is_none()
            && self.links.is_empty()
    }

    /// The note stored in `metadata`, if any (an unreadable one counts as
    /// none).
    pub fn of(metadata: &Map<String, Value>) -> Note {
        metadata
            .get(NOTE_KEY)
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default()
    }

    /// `metadata` with this note in it (or without one, when empty).
    pub fn put(&self, metadata: &Map<String, Value>) -> Map<String, Value> {
        let mut out = metadata.clone();
        match serde_json::to_value(self) {
            Ok(v) if !self.is_empty() => {
                out.insert(NOTE_KEY.into(), v);
            }
            _ => {
                out.remove(NOTE_KEY);
            }
        }
        out
    }

    /// Adds a link (once; the oldest is dropped past [`MAX_LINKS`]).
    pub fn link(&mut self, id: MemoryId) {
        if !self.links.contains(&id) {
            self.links.push(id);
            if self.links.len() > MAX_LINKS {
                self.links.remove(0);
            }
        }
    }

    /// Reads keywords, tags and context from a model's object (missing or
    /// malformed fields are left empty).
    pub fn read(o: &Map<String, Value>) -> Note {
        Note {
            keywords: terms(o.get("keywords"), false),
            tags: terms(o.get("tags"), true),
            context: context(o.get("context")),
            links: Vec::new(),
        }
    }
}

/// A list of short strings (or one comma-separated string), trimmed,
/// deduplicated and capped; tags are lower-cased.
pub(crate) fn terms(v: Option<&Value>, lower: bool) -> Vec<String> {
    let items: Vec<String> = match v {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect(),
        Some(Value::String(s)) => s.split(',').map(str::to_owned).collect(),
        _ => Vec::new(),
    };
    let mut out: Vec<String> = Vec::new();
    for t in items {
        let t = t.trim().trim_start_matches('#').trim();
        let t = if lower {
            t.to_lowercase()
        } else {
            t.to_owned()
        };
        if t.is_empty() || t.chars().count() > MAX_TERM_CHARS || out.contains(&t) {
            continue;
        }
        out.push(t);
        if out.len() == MAX_TERMS {
            break;
        }
    }
    out
}

/// A context line, when it is a non-empty string of sensible length.
pub(crate) fn context(v: Option<&Value>) -> Option<String> {
    let c = v?.as_str()?.trim();
    (!c.is_empty() && c.chars().count() <= MAX_CONTEXT_CHARS).then(|| c.to_owned())
}

/// What an evolution changes on an older note.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evolution {
    /// New tags (replace the old ones), when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// New context, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
}

impl Evolution {
    /// Applies it to `note`; returns whether anything changed.
    pub fn apply(&self, note: &mut Note) -> bool {
        let before = note.clone();
        if let Some(t) = &self.tags {
            note.tags = t.clone();
        }
        if let Some(c) = &self.context {
            note.context = Some(c.clone());
        }
        *note != before
    }
}

impl Hippo {
    /// Evolves the note of memory `target` (in `scope`): applies
    /// `evolution` and links it to `link_to` (when that memory exists), in
    /// place, logged as an `evolved` event; as job step `step`. Returns
    /// whether the note changed (a memory no longer current is left alone).
    pub(crate) fn evolve(
        &self,
        scope: &Scope,
        target: MemoryId,
        evolution: &Evolution,
        link_to: Option<MemoryId>,
        step: Option<JobStep>,
    ) -> Result<bool> {
        let mut m = self.get(target, Some(scope))?;
        let read = m.clone();
        let before = Note::of(&m.metadata);
        let mut note = before.clone();
        if m.status == Status::Active && m.valid_to.is_none() {
            evolution.apply(&mut note);
            // The new memory may have merged into an older one instead.
            if let Some(l) = link_to.filter(|l| *l != m.id) {
                if !self.store().get_many(&[l])?.is_empty() {
                    note.link(l);
                }
            }
        }
        if note == before {
            if step.is_some() {
                self.store().insert(InsertBatch {
                    job_step: step,
                    ..Default::default()
                })?;
            }
            return Ok(false);
        }
        m.metadata = note.put(&m.metadata);
        m.updated_at = millis(self.now());
        let mut event = self.event(&m, EventKind::Evolved, "llm", None);
        let as_value = |n: &Note| serde_json::to_value(n).unwrap_or(Value::Null);
        event.detail.insert("before".into(), as_value(&before));
        event.detail.insert("after".into(), as_value(&note));
        if let Some(l) = link_to {
            event
                .detail
                .insert("linked".into(), Value::String(l.to_string()));
        }
        self.store().update(Update {
            events: vec![event],
            job_step: step,
            // A change made meanwhile fails the step; the job runs it again.
            ..Update::in_place_of(&read, m, None)
        })?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn notes_are_read_tolerantly_and_capped() {
        let o = json!({
            "keywords": ["Denver", " Denver ", "", "x".repeat(50)],
            "tags": "#Home, Moving ,home",
            "context": "  Ana relocated for work. ",
        });
        let n = Note::read(o.as_object().unwrap());
        assert_eq!(n.keywords, vec!["Denver"]);
        assert_eq!(n.tags, vec!["home", "moving"]);
        assert_eq!(n.context.as_deref(), Some("Ana relocated for work."));
        let n = Note::read(
            json!({"keywords": 3, "context": ["no"]})
                .as_object()
                .unwrap(),
        );
        assert!(n.is_empty());
        let many: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
        assert_eq!(terms(Some(&json!(many)), false).len(), MAX_TERMS);
    }

    #[test]
    fn notes_round_trip_through_metadata_and_links_are_capped() {
        let mut n = Note {
            tags: vec!["home".into()],
            ..Default::default()
        };
        let first = MemoryId::now_v7();
        n.link(first);
        n.link(first);
        assert_eq!(n.links.len(), 1);
        for _ in 0..MAX_LINKS {
            n.link(MemoryId::now_v7());
        }
        assert_eq!(n.links.len(), MAX_LINKS);
        assert!(!n.links.contains(&first), "oldest dropped");
        let mut md = Map::new();
        md.insert("source".into(), json!("chat"));
        let with = n.put(&md);
        assert_eq!(Note::of(&with), n);
        assert_eq!(with["source"], "chat");
        assert!(!Note::default().put(&with).contains_key(NOTE_KEY));
    }

    #[test]
    fn evolution_replaces_only_what_it_names() {
        let mut n = Note {
            tags: vec!["home".into()],
            context: Some("old".into()),
            ..Default::default()
        };
        assert!(Evolution {
            context: Some("new".into()),
            tags: None
        }
        .apply(&mut n));
        assert_eq!(n.tags, vec!["home"]);
        assert_eq!(n.context.as_deref(), Some("new"));
        assert!(!Evolution::default().apply(&mut n));
    }
}

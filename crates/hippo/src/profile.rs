//! The profile: one small, human-readable, always-current description per
//! owner (a user or an agent), built from the owner's current `profile`
//! memories (lasting traits: name, job, home, family — stated through the
//! API or extracted by the LLM).
//!
//! It is a `profile` memory with metadata `digest: profile`, linked to the
//! memories it was built from, rebuilt by consolidation jobs whenever one
//! of them changes. Unlike session digests it is *revised*, not rewritten:
//! every change keeps the previous text as an earlier version, so the
//! profile's history shows how the picture of the person changed.
//!
//! Without an LLM the profile lists the traits, oldest first; with one, the
//! model writes a short paragraph from them (newer traits winning over
//! older ones); its sentences that the traits do not support are dropped,
//! and a paragraph mostly unsupported is not used.

use serde_json::json;

use crate::consolidate::{digest_metadata, fingerprint, is_digest, read_summary, DIGEST_KEY};
use crate::engine::{Hippo, MemoryPatch};
use crate::error::Result;
use crate::extract::{grounded_summary, Cost};
use crate::model::{millis, Memory, MemoryId, MemoryKind, Scope, Status};
use crate::store::Update;

/// The `digest` metadata value of a profile.
pub const PROFILE_DIGEST: &str = "profile";

/// Most traits a profile is built from (the latest ones).
const MAX_TRAITS: usize = 40;
/// Longest profile written without an LLM, in bytes (latest traits kept).
const MAX_PROFILE_BYTES: usize = 2_000;

const PROFILE_PROMPT: &str = "You maintain long-term memory for an assistant. Write a short profile \
(at most 120 words) of the person described by the dated facts below: plain third-person sentences, \
newer facts replacing older ones when they conflict, only what the facts say. Answer with JSON only: \
{\"profile\": \"...\"}.";

impl Hippo {
    /// The profile of `owner` (a user or agent scope, no session), if one
    /// has been built.
    pub fn profile(&self, owner: &Scope) -> Result<Option<Memory>> {
        owner.validate()?;
        let owner = crate::engine::owner_of(owner);
        Ok(self
            .find_digest(&owner, &json!({DIGEST_KEY: PROFILE_DIGEST}))?
            .filter(|m| m.status == Status::Active))
    }

    /// Rebuilds the profile of `owner`; returns whether it changed.
    pub(crate) fn rebuild_profile(&self, owner: &Scope, cost: &mut Cost) -> Result<bool> {
        let key = json!({DIGEST_KEY: PROFILE_DIGEST});
        let mut traits: Vec<Memory> = self
            .current(owner, &[MemoryKind::Profile], 10_000)?
            .into_iter()
            .filter(|m| owner.matches(&m.scope) && !is_digest(m))
            .collect();
        traits.sort_by_key(|m| (m.event_time.unwrap_or(m.recorded_at), m.id));
        let traits = &traits[traits.len().saturating_sub(MAX_TRAITS)..];
        if traits.is_empty() {
            return self.retire_digest(owner, &key);
        }
        let existing = self.find_digest(owner, &key)?;
        let print = fingerprint(traits);
        if existing.as_ref().is_some_and(|m| {
            m.status == Status::Active
                && m.metadata.get(crate::consolidate::FINGERPRINT_KEY) == Some(&json!(print))
        }) {
            return Ok(false);
        }
        let dated: Vec<String> = traits
            .iter()
            .map(|m| {
                let day = m.event_time.unwrap_or(m.recorded_at).date_naive();
                format!("({day}) {}", m.content.trim())
            })
            .collect();
        let (text, method) = match self.llm_profile(&dated, traits, cost)? {
            Some(text) => (text, "llm"),
            None => (listed(traits), "extractive"),
        };
        let metadata = digest_metadata(&key, &print, method)
            .as_object()
            .cloned()
            .unwrap_or_default();
        let sources: Vec<MemoryId> = traits.iter().map(|m| m.id).collect();
        let event_time = traits.iter().filter_map(|m| m.event_time).max();
        match existing {
            Some(m) if m.content == text => {
                // Same words from changed sources: record the new sources
                // in place, no new version.
                let read = m.clone();
                let mut m = m;
                m.metadata = metadata;
                m.provenance.derived_from = sources;
                m.status = Status::Active;
                m.updated_at = millis(self.now());
                self.store().update(Update::in_place_of(&read, m, None))?;
            }
            Some(m) => {
                if m.status != Status::Active {
                    self.change_status(
                        m.clone(),
                        Status::Active,
                        crate::model::EventKind::Restored,
                        "consolidation",
                        Some("new profile traits".into()),
                        Default::default(),
                    )?;
                }
                let patch = MemoryPatch {
                    content: Some(text),
                    metadata: Some(metadata),
                    event_time,
                    reason: Some("profile traits changed".into()),
                    ..Default::default()
                };
                self.revise(m.id, Some(owner), patch, "consolidation", sources, None)?;
            }
            None => {
                let vector = self.embedder().embed(&text)?;
                self.insert_digest(
                    owner,
                    MemoryKind::Profile,
                    text,
                    metadata,
                    sources,
                    event_time,
                    vector,
                )?;
            }
        }
        Ok(true)
    }

    /// The model's profile paragraph, when an LLM is configured and its
    /// answer is readable and grounded in the traits.
    fn llm_profile(
        &self,
        dated: &[String],
        traits: &[Memory],
        cost: &mut Cost,
    ) -> Result<Option<String>> {
        let Some(llm) = self.llm() else {
            return Ok(None);
        };
        let prompt = format!("Facts:\n{}\n", dated.join("\n"));
        let answer = self.ask(llm.as_ref(), "profile", PROFILE_PROMPT, prompt, cost)?;
        let usable = read_summary(&answer, "profile")
            .or_else(|| read_summary(&answer, "summary"))
            .and_then(|t| grounded_summary(&t, traits));
        if usable.is_none() {
            cost.unreadable_answers += 1;
            self.llm_meter().unusable("profile");
        }
        Ok(usable)
    }
}

/// The traits as one text, oldest first, each a sentence; the oldest are
/// left out past [`MAX_PROFILE_BYTES`].
fn listed(traits: &[Memory]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut total = 0;
    for m in traits.iter().rev() {
        let mut t = m.content.trim().to_owned();
        if !t.ends_with(['.', '!', '?']) {
            t.push('.');
        }
        total += t.len() + 1;
        if total > MAX_PROFILE_BYTES && !parts.is_empty() {
            break;
        }
        parts.push(t);
    }
    parts.reverse();
    parts.join(" ")
}

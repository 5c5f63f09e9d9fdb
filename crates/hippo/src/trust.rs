//! Where a memory came from, and how far it is trusted for that: what a user
//! stated outranks what an assistant said, which outranks tool output, web
//! pages and documents (anyone can write those). Results carry both, so an
//! agent (or its prompt formatter) can weigh them; the levels are
//! configurable.
//!
//! `SourceKind::of` decides: digests are consolidation, documents and chunks
//! are documents, memories derived from others are LLM extraction, anything
//! else goes by its role; a message claiming the `system` role counts as a
//! tool, so it gains no authority by the claim. `crate::prompt` renders the
//! source and trust with each memory.

use serde::{Deserialize, Serialize};

use crate::model::{Memory, MemoryKind};

/// The kind of source a memory came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// Said by the user (role `user`).
    UserStated,
    /// Said by an assistant (role `assistant`).
    Assistant,
    /// Output of a tool, or a message claiming a system role.
    Tool,
    /// A document or a chunk of one.
    Document,
    /// Extracted by the LLM from other memories.
    LlmExtraction,
    /// Written by consolidation (digests, timelines, profiles).
    Consolidation,
    /// Written through the API without a role.
    Unattributed,
}

impl SourceKind {
    /// The stable lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::UserStated => "user_stated",
            SourceKind::Assistant => "assistant",
            SourceKind::Tool => "tool",
            SourceKind::Document => "document",
            SourceKind::LlmExtraction => "llm_extraction",
            SourceKind::Consolidation => "consolidation",
            SourceKind::Unattributed => "unattributed",
        }
    }

    /// The source of `m`.
    pub fn of(m: &Memory) -> SourceKind {
        if crate::consolidate::is_digest(m) || m.kind == MemoryKind::Summary {
            return SourceKind::Consolidation;
        }
        if matches!(m.kind, MemoryKind::Document | MemoryKind::Chunk) {
            return SourceKind::Document;
        }
        if !m.provenance.derived_from.is_empty() {
            return SourceKind::LlmExtraction;
        }
        match m
            .actor
            .role
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("user" | "human") => SourceKind::UserStated,
            Some("assistant" | "ai" | "agent") => SourceKind::Assistant,
            Some(_) => SourceKind::Tool,
            None => SourceKind::Unattributed,
        }
    }
}

/// Trust per source, 0..=1 (config `[trust]` with these keys).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Trust {
    /// What the user stated.
    pub user_stated: f32,
    /// What an assistant said.
    pub assistant: f32,
    /// Tool output (and system-role claims).
    pub tool: f32,
    /// Documents.
    pub document: f32,
    /// LLM extractions.
    pub llm_extraction: f32,
    /// Consolidation.
    pub consolidation: f32,
    /// API writes without a role.
    pub unattributed: f32,
}

impl Default for Trust {
    fn default() -> Self {
        Trust {
            user_stated: 1.0,
            assistant: 0.8,
            llm_extraction: 0.7,
            consolidation: 0.7,
            unattributed: 0.6,
            tool: 0.5,
            document: 0.5,
        }
    }
}

impl Trust {
    /// The trust of a source.
    pub fn of(&self, s: SourceKind) -> f32 {
        match s {
            SourceKind::UserStated => self.user_stated,
            SourceKind::Assistant => self.assistant,
            SourceKind::Tool => self.tool,
            SourceKind::Document => self.document,
            SourceKind::LlmExtraction => self.llm_extraction,
            SourceKind::Consolidation => self.consolidation,
            SourceKind::Unattributed => self.unattributed,
        }
    }

    /// Rejects levels outside 0..=1.
    pub fn validate(&self) -> crate::Result<()> {
        let all = [
            self.user_stated,
            self.assistant,
            self.tool,
            self.document,
            self.llm_extraction,
            self.consolidation,
            self.unattributed,
        ];
        if all.iter().all(|t| (0.0..=1.0).contains(t)) {
            Ok(())
        } else {
            Err(crate::Error::invalid(
                "trust levels must be between 0 and 1",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Actor;

    fn m(kind: MemoryKind, role: Option<&str>, derived: bool) -> Memory {
        let mut m: Memory = serde_json::from_value(serde_json::json!({
            "id": crate::model::MemoryId::now_v7(), "kind": kind, "content": "x",
            "recorded_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-01T00:00:00Z",
            "content_hash": "", "status": "active",
        }))
        .unwrap();
        m.actor = Actor {
            role: role.map(Into::into),
            name: None,
        };
        if derived {
            m.provenance.derived_from = vec![crate::model::MemoryId::now_v7()];
        }
        m
    }

    #[test]
    fn users_outrank_assistants_outrank_tools_and_documents() {
        let t = Trust::default();
        let of = |m: &Memory| t.of(SourceKind::of(m));
        let user = m(MemoryKind::Message, Some("user"), false);
        let assistant = m(MemoryKind::Message, Some("Assistant"), false);
        let tool = m(MemoryKind::Message, Some("tool"), false);
        let system = m(MemoryKind::Message, Some("system"), false);
        let doc = m(MemoryKind::Chunk, None, false);
        let fact = m(MemoryKind::Fact, None, true);
        assert_eq!(SourceKind::of(&user), SourceKind::UserStated);
        assert_eq!(
            SourceKind::of(&system),
            SourceKind::Tool,
            "claims are not authority"
        );
        assert_eq!(SourceKind::of(&fact), SourceKind::LlmExtraction);
        assert!(of(&user) > of(&assistant) && of(&assistant) > of(&tool));
        assert_eq!(of(&doc), of(&tool));
        assert!(Trust::default().validate().is_ok());
        assert!(Trust {
            tool: 1.5,
            ..Trust::default()
        }
        .validate()
        .is_err());
    }
}

//! The LLM boundary: chat completions from any OpenAI-compatible endpoint
//! (OpenAI, vLLM, llama.cpp server, Ollama, ...). Hippo works without one;
//! with one it adds extraction and update decisions in background jobs.
//! Model output is parsed tolerantly ([`parse`]): small local models break
//! JSON, and a broken answer must never crash or write garbage.
//!
//! `ChatModel` is the trait; `OpenAiChat` calls `/v1/chat/completions` in
//! JSON mode and returns token usage for cost records. `LlmMeter` totals
//! calls and tokens per operation (`extract`, `decide`, `summary`,
//! `profile`), which `/metrics` exposes.

pub mod parse;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{Error, Result};

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        ChatMessage {
            role: "system".into(),
            content: content.into(),
        }
    }
    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        ChatMessage {
            role: "user".into(),
            content: content.into(),
        }
    }
}

/// A completion and what it cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The model's answer.
    pub text: String,
    /// Tokens of the prompt, as the endpoint reports them (estimated when
    /// it does not).
    pub prompt_tokens: u64,
    /// Tokens of the answer (likewise).
    pub completion_tokens: u64,
}

/// Calls and tokens spent on one kind of LLM operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LlmTotals {
    /// Completions asked for.
    pub calls: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Answer tokens.
    pub completion_tokens: u64,
    /// Answers that could not be used (unreadable or not grounded).
    pub unusable: u64,
}

/// Running totals per operation (`extract`, `decide`, `summary`,
/// `profile`) since the engine was built; read by `/metrics`.
#[derive(Debug, Default)]
pub struct LlmMeter(Mutex<BTreeMap<&'static str, LlmTotals>>);

impl LlmMeter {
    fn with(&self, op: &'static str, f: impl FnOnce(&mut LlmTotals)) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(m.entry(op).or_default());
    }

    /// Counts a completion made for `op`.
    pub fn record(&self, op: &'static str, c: &Completion) {
        self.with(op, |t| {
            t.calls += 1;
            t.prompt_tokens += c.prompt_tokens;
            t.completion_tokens += c.completion_tokens;
        });
    }

    /// Counts an answer for `op` that could not be used.
    pub fn unusable(&self, op: &'static str) {
        self.with(op, |t| t.unusable += 1);
    }

    /// The totals, by operation name.
    pub fn totals(&self) -> Vec<(&'static str, LlmTotals)> {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.iter().map(|(k, v)| (*k, *v)).collect()
    }
}

/// A chat model. Implementations must be safe to call from several
/// threads.
pub trait ChatModel: Send + Sync {
    /// Names the endpoint and model (for cost records and logs).
    fn model_id(&self) -> &str;
    /// One completion of `messages`, at most `max_tokens` long, asking for a
    /// JSON answer.
    fn complete(&self, messages: &[ChatMessage], max_tokens: u32) -> Result<Completion>;
}

/// Settings of an [`OpenAiChat`].
#[derive(Debug, Clone)]
pub struct OpenAiChatConfig {
    /// Base URL up to and including `/v1`, e.g. `http://127.0.0.1:8080/v1`.
    pub base_url: String,
    /// Model name sent with each request.
    pub model: String,
    /// Bearer token, if the endpoint needs one.
    pub api_key: Option<String>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Ask for `response_format: {"type": "json_object"}` (most servers
    /// support it; turn off for those that reject it).
    pub json_mode: bool,
}

impl Default for OpenAiChatConfig {
    fn default() -> Self {
        OpenAiChatConfig {
            base_url: "http://127.0.0.1:8080/v1".into(),
            model: "gpt-4o-mini".into(),
            api_key: None,
            timeout: Duration::from_secs(120),
            json_mode: true,
        }
    }
}

/// A [`ChatModel`] over HTTP.
pub struct OpenAiChat {
    config: OpenAiChatConfig,
    agent: ureq::Agent,
    model_id: String,
}

#[derive(Deserialize)]
struct ChatResponse {
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: ChoiceMessage,
}

#[derive(Deserialize)]
struct ChoiceMessage {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

impl OpenAiChat {
    /// A client for `config` (no request is made until used).
    pub fn new(config: OpenAiChatConfig) -> Self {
        let agent = ureq::AgentBuilder::new().timeout(config.timeout).build();
        let model_id = format!("openai:{}", config.model);
        OpenAiChat {
            config,
            agent,
            model_id,
        }
    }
}

impl ChatModel for OpenAiChat {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn complete(&self, messages: &[ChatMessage], max_tokens: u32) -> Result<Completion> {
        let url = format!(
            "{}/chat/completions",
            self.config.base_url.trim_end_matches('/')
        );
        let mut body = json!({
            "model": self.config.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0,
        });
        if self.config.json_mode {
            body["response_format"] = json!({"type": "json_object"});
        }
        let mut req = self.agent.post(&url);
        if let Some(key) = &self.config.api_key {
            req = req.set("Authorization", &format!("Bearer {key}"));
        }
        let resp = req
            .send_json(body)
            .map_err(|e| Error::unavailable("LLM endpoint request failed", e))?;
        let body: ChatResponse = resp
            .into_json()
            .map_err(|e| Error::unavailable("LLM endpoint returned invalid JSON", e))?;
        let text = body
            .choices
            .into_iter()
            .next()
            .and_then(|c| c.message.content)
            .unwrap_or_default();
        let prompt: usize = messages
            .iter()
            .map(|m| crate::text::approx_tokens(&m.content))
            .sum();
        let (prompt_tokens, completion_tokens) = match body.usage {
            Some(u) => (u.prompt_tokens, u.completion_tokens),
            None => (prompt as u64, crate::text::approx_tokens(&text) as u64),
        };
        Ok(Completion {
            text,
            prompt_tokens,
            completion_tokens,
        })
    }
}

//! Embeddings from any OpenAI-compatible `/v1/embeddings` endpoint
//! (OpenAI, vLLM, llama.cpp server, Ollama, LocalAI, ...).

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use super::{normalize, Embedder};
use crate::error::{Error, Result};

/// Settings of an [`OpenAiEmbedder`].
#[derive(Debug, Clone)]
pub struct OpenAiEmbedderConfig {
    /// Base URL up to and including `/v1`, e.g. `http://127.0.0.1:8000/v1`.
    pub base_url: String,
    /// Model name sent with each request.
    pub model: String,
    /// Bearer token, if the endpoint needs one.
    pub api_key: Option<String>,
    /// Vector length; discovered with one probe request when `None`.
    pub dimension: Option<usize>,
    /// The model's input window in tokens (used for chunking).
    pub max_tokens: usize,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Inputs per request.
    pub batch_size: usize,
}

impl Default for OpenAiEmbedderConfig {
    fn default() -> Self {
        OpenAiEmbedderConfig {
            base_url: "http://127.0.0.1:8000/v1".into(),
            model: "text-embedding-3-small".into(),
            api_key: None,
            dimension: None,
            max_tokens: 8191,
            timeout: Duration::from_secs(60),
            batch_size: 128,
        }
    }
}

/// An embedder that calls an OpenAI-compatible HTTP endpoint.
pub struct OpenAiEmbedder {
    config: OpenAiEmbedderConfig,
    agent: ureq::Agent,
    model_id: String,
    dimension: usize,
}

#[derive(Deserialize)]
struct EmbeddingsResponse {
    data: Vec<EmbeddingItem>,
}

#[derive(Deserialize)]
struct EmbeddingItem {
    embedding: Vec<f32>,
    #[serde(default)]
    index: Option<usize>,
}

impl OpenAiEmbedder {
    /// Connects (probing the dimension when it is not configured).
    pub fn new(config: OpenAiEmbedderConfig) -> Result<Self> {
        if config.batch_size == 0 {
            return Err(Error::invalid("embedding batch_size must be at least 1"));
        }
        let agent = ureq::AgentBuilder::new().timeout(config.timeout).build();
        // Vectors of different endpoints/models must never mix: the id names both.
        let model_id = format!("openai:{}", config.model);
        let mut e = OpenAiEmbedder {
            agent,
            model_id,
            dimension: config.dimension.unwrap_or(0),
            config,
        };
        if e.dimension == 0 {
            e.dimension = e.request(&["dimension probe"])?.first().map_or(0, Vec::len);
            if e.dimension == 0 {
                return Err(Error::unavailable(
                    "embedding endpoint returned an empty vector",
                    "empty vector",
                ));
            }
        }
        Ok(e)
    }

    fn request(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let url = format!("{}/embeddings", self.config.base_url.trim_end_matches('/'));
        let mut req = self.agent.post(&url);
        if let Some(key) = &self.config.api_key {
            req = req.set("Authorization", &format!("Bearer {key}"));
        }
        let resp = req
            .send_json(json!({"model": self.config.model, "input": texts}))
            .map_err(|e| Error::unavailable("embedding endpoint request failed", e))?;
        let body: EmbeddingsResponse = resp
            .into_json()
            .map_err(|e| Error::unavailable("embedding endpoint returned invalid JSON", e))?;
        if body.data.len() != texts.len() {
            return Err(Error::unavailable(
                "embedding endpoint returned a wrong number of vectors",
                format!("{} for {} inputs", body.data.len(), texts.len()),
            ));
        }
        let mut out = vec![Vec::new(); texts.len()];
        for (pos, item) in body.data.into_iter().enumerate() {
            let i = item.index.unwrap_or(pos);
            if i >= out.len() || (self.dimension != 0 && item.embedding.len() != self.dimension) {
                return Err(Error::unavailable(
                    "embedding endpoint returned a malformed vector",
                    "bad index or length",
                ));
            }
            let mut v = item.embedding;
            normalize(&mut v);
            out[i] = v;
        }
        Ok(out)
    }
}

impl Embedder for OpenAiEmbedder {
    fn model_id(&self) -> &str {
        &self.model_id
    }
    fn dimension(&self) -> usize {
        self.dimension
    }
    fn max_tokens(&self) -> usize {
        self.config.max_tokens
    }
    fn count_tokens(&self, text: &str) -> usize {
        crate::text::approx_tokens(text)
    }
    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(self.config.batch_size) {
            out.extend(self.request(chunk)?);
        }
        Ok(out)
    }
}

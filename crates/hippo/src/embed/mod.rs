//! Embedders turn text into unit vectors. Three implementations: the local
//! MiniLM model run in-process ([`MiniLmEmbedder`], English, the default),
//! the local multilingual e5-small ([`E5Embedder`], 4-bit weights), and any
//! OpenAI-compatible `/v1/embeddings` endpoint ([`OpenAiEmbedder`]).
//!
//! Invariant: every vector an embedder returns has `dimension()` components
//! and unit L2 norm, so cosine similarity is a dot product; vectors of
//! different `model_id()`s are never compared. A store loads only its active
//! model's vectors and keeps one vector per memory, of the model that
//! embedded it last: after a model switch, `reembed` replaces vectors (and
//! fills gaps) rather than keeping both.

mod e5;
mod minilm;
mod openai;

pub use e5::{E5Embedder, E5_FILE, E5_MODEL_ID};
pub use minilm::{default_model_dir, MiniLmEmbedder, MINILM_HUB_REPO, MINILM_MODEL_ID};
pub use openai::{OpenAiEmbedder, OpenAiEmbedderConfig};

use crate::error::Result;

/// Text → vector model.
pub trait Embedder: Send + Sync {
    /// Identifier stored with every vector (e.g. `sentence-transformers/all-MiniLM-L6-v2`).
    fn model_id(&self) -> &str;
    /// Vector length.
    fn dimension(&self) -> usize;
    /// The longest input, in tokens, the model sees; longer inputs are truncated.
    fn max_tokens(&self) -> usize;
    /// Number of model tokens in `text` (without special tokens).
    fn count_tokens(&self, text: &str) -> usize;
    /// Embeds a batch; the output has one unit vector per input, in order.
    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>>;
    /// Embeds a search query. Models trained with distinct query and
    /// passage inputs (e5's `query: ` prefix) override it; by default a
    /// query is embedded like any text.
    fn embed_query(&self, text: &str) -> Result<Vec<f32>> {
        self.embed(text)
    }
    /// Embeds one text.
    fn embed(&self, text: &str) -> Result<Vec<f32>> {
        let mut v = self.embed_batch(&[text])?;
        v.pop().ok_or_else(|| {
            crate::Error::new(crate::ErrorKind::Internal, "embedder returned no vector")
        })
    }
}

/// Scales `v` to unit L2 norm in place (a zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

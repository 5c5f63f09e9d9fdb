//! all-MiniLM-L6-v2 (BERT, 384 dimensions) run in-process with candle, f32:
//! mean pooling over the attention mask, then L2 normalisation — the same
//! computation as sentence-transformers. Texts are sorted by length and each
//! sub-batch is padded to its longest, truncated at 256 tokens, so little
//! compute goes to padding.
//!
//! candle asks for the core count on every matrix multiply and, unless
//! `RAYON_NUM_THREADS` is set, re-reads `/proc/cpuinfo` each time: the `hippo`
//! binary sets it once at start-up, and library users should do the same.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use super::Embedder;
use crate::error::{Error, Result};

/// Model id stored with MiniLM vectors.
pub const MINILM_MODEL_ID: &str = "sentence-transformers/all-MiniLM-L6-v2";
/// Hugging Face Hub repository the weights are downloaded from when no directory is given.
pub const MINILM_HUB_REPO: &str = "sentence-transformers/all-MiniLM-L6-v2";
/// Files the model directory must contain.
const FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];
/// sentence-transformers' `max_seq_length` for this model.
const MAX_TOKENS: usize = 256;
/// Sub-batch size: texts are sorted by length and embedded this many at a time
/// so padding stays small.
const SUB_BATCH: usize = 32;

/// Where `scripts/fetch-model.sh` puts the model and where hippo looks first:
/// `$XDG_CACHE_HOME/hippo/models/all-MiniLM-L6-v2` (default `~/.cache/...`).
pub fn default_model_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })
        .map(|d| d.join("hippo").join("models").join("all-MiniLM-L6-v2"))
}

/// The local MiniLM embedder.
pub struct MiniLmEmbedder {
    model: BertModel,
    /// Pads to the longest in the batch, truncates at 256 tokens.
    tokenizer: Tokenizer,
    /// Neither pads nor truncates; used to count tokens for chunking.
    counter: Tokenizer,
    model_id: String,
    dimension: usize,
}

fn load_err(what: &str, e: impl Into<crate::error::BoxError>) -> Error {
    Error::internal(format!("cannot load embedding model: {what}"), e)
}

impl MiniLmEmbedder {
    /// Loads the model from a directory holding `config.json`,
    /// `tokenizer.json` and `model.safetensors`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        for f in FILES {
            if !dir.join(f).is_file() {
                return Err(Error::invalid(format!(
                    "model directory {} lacks {f}",
                    dir.display()
                )));
            }
        }
        let config: Config = serde_json::from_slice(
            &std::fs::read(dir.join("config.json")).map_err(|e| load_err("config.json", e))?,
        )
        .map_err(|e| load_err("config.json", e))?;
        let device = Device::Cpu;
        // SAFETY: the weights file is memory-mapped read-only; it must not be
        // modified while the model is loaded (documented for model directories).
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(
                &[dir.join("model.safetensors")],
                DType::F32,
                &device,
            )?
        };
        let model = BertModel::load(vb, &config)?;
        let mut counter = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| load_err("tokenizer.json", e))?;
        counter.with_padding(None);
        counter
            .with_truncation(None)
            .map_err(|e| load_err("tokenizer.json", e))?;
        let mut tokenizer = counter.clone();
        // The shipped tokenizer.json pads and truncates to a fixed 128: override both.
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..Default::default()
        }));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| load_err("tokenizer.json", e))?;
        Ok(MiniLmEmbedder {
            model,
            tokenizer,
            counter,
            model_id: MINILM_MODEL_ID.to_owned(),
            dimension: config.hidden_size,
        })
    }

    /// Downloads the model from the Hugging Face Hub into its cache (once)
    /// and loads it. Needs network access to the Hub.
    pub fn from_hub() -> Result<Self> {
        let dir = Self::download_from_hub()?;
        Self::from_dir(&dir)
    }

    /// Downloads the model files into the Hub cache and returns their
    /// directory. Honours `HF_ENDPOINT` (a mirror) and `HF_HOME` (the cache).
    pub fn download_from_hub() -> Result<PathBuf> {
        let api = hf_hub::api::sync::ApiBuilder::from_env()
            .with_progress(false)
            .build()
            .map_err(|e| Error::unavailable("cannot reach the model hub", e))?;
        let repo = api.model(MINILM_HUB_REPO.to_owned());
        let mut dir = None;
        for f in FILES {
            let path = repo.get(f).map_err(|e| {
                Error::unavailable(format!("cannot download {f} from the model hub"), e)
            })?;
            dir = path.parent().map(Path::to_path_buf);
        }
        dir.ok_or_else(|| Error::new(crate::ErrorKind::Internal, "hub returned no file"))
    }

    fn embed_sorted_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let enc = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| Error::internal("tokenizer failed", e))?;
        let rows = enc.len();
        let len = enc.first().map_or(0, |e| e.get_ids().len());
        let mut ids = Vec::with_capacity(rows * len);
        let mut mask = Vec::with_capacity(rows * len);
        for e in &enc {
            ids.extend_from_slice(e.get_ids());
            mask.extend_from_slice(e.get_attention_mask());
        }
        let device = &self.model.device;
        let ids = Tensor::from_vec(ids, (rows, len), device)?;
        let mask = Tensor::from_vec(mask, (rows, len), device)?;
        let type_ids = ids.zeros_like()?;
        let hidden = self.model.forward(&ids, &type_ids, Some(&mask))?; // [rows, len, dim]
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // [rows, len, 1]
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?; // [rows, dim]
        let counts = mask.sum(1)?; // [rows, 1]
        let mean = summed.broadcast_div(&counts)?;
        let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?;
        let unit = mean.broadcast_div(&norms)?;
        Ok(unit.to_vec2::<f32>()?)
    }
}

impl Embedder for MiniLmEmbedder {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    fn max_tokens(&self) -> usize {
        MAX_TOKENS
    }

    fn count_tokens(&self, text: &str) -> usize {
        self.counter
            .encode(text, false)
            .map(|e| e.get_ids().len())
            .unwrap_or_else(|_| crate::text::approx_tokens(text))
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        // Sort by length so each sub-batch pads to a similar length; restore order after.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].len());
        let mut out = vec![Vec::new(); texts.len()];
        for chunk in order.chunks(SUB_BATCH) {
            let batch: Vec<&str> = chunk.iter().map(|&i| texts[i]).collect();
            for (&i, v) in chunk.iter().zip(self.embed_sorted_batch(&batch)?) {
                out[i] = v;
            }
        }
        Ok(out)
    }
}

//! Shared helpers: the real model's directory, a cheap deterministic embedder
//! for property tests, and engine constructors.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use hippo::{Embedder, Hippo, MiniLmEmbedder, SqliteStore, SqliteStoreOptions};

/// The model directory: `$HIPPO_MODEL_DIR`, else where `scripts/fetch-model.sh` puts it.
pub fn model_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("HIPPO_MODEL_DIR") {
        return PathBuf::from(d);
    }
    let dir = hippo::embed::default_model_dir().expect("HOME or XDG_CACHE_HOME is set");
    assert!(
        dir.join("model.safetensors").is_file(),
        "the MiniLM model is missing at {}: run scripts/fetch-model.sh",
        dir.display()
    );
    dir
}

/// The multilingual e5 model: `HIPPO_E5_DIR`, or where `scripts/fetch-e5.sh` puts it.
pub fn e5() -> Arc<hippo::E5Embedder> {
    static MODEL: OnceLock<Arc<hippo::E5Embedder>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let dir = std::env::var_os("HIPPO_E5_DIR")
                .map(PathBuf::from)
                .or_else(|| {
                    hippo::embed::default_model_dir()
                        .and_then(|d| d.parent().map(|p| p.join("multilingual-e5-small-q4")))
                })
                .expect("HOME or XDG_CACHE_HOME is set");
            assert!(
                dir.join(hippo::embed::E5_FILE).is_file(),
                "the e5 model is missing at {}: run scripts/fetch-e5.sh",
                dir.display()
            );
            Arc::new(hippo::E5Embedder::from_path(&dir).expect("load e5"))
        })
        .clone()
}

/// The real MiniLM model, loaded once per test binary.
pub fn minilm() -> Arc<MiniLmEmbedder> {
    static MODEL: OnceLock<Arc<MiniLmEmbedder>> = OnceLock::new();
    MODEL
        .get_or_init(|| Arc::new(MiniLmEmbedder::from_dir(&model_dir()).expect("load MiniLM")))
        .clone()
}

/// Feature-hashing bag of words: deterministic and fast, for property tests
/// where embedding quality does not matter.
pub struct HashEmbedder;

impl Embedder for HashEmbedder {
    fn model_id(&self) -> &str {
        "test:hash-bow-32"
    }
    fn dimension(&self) -> usize {
        32
    }
    fn max_tokens(&self) -> usize {
        512
    }
    fn count_tokens(&self, text: &str) -> usize {
        text.split_whitespace().count()
    }
    fn embed_batch(&self, texts: &[&str]) -> hippo::Result<Vec<Vec<f32>>> {
        Ok(texts
            .iter()
            .map(|t| {
                let mut v = vec![0.0f32; 32];
                for w in t
                    .to_lowercase()
                    .split(|c: char| !c.is_alphanumeric())
                    .filter(|w| !w.is_empty())
                {
                    let h = w.bytes().fold(2166136261u32, |h, b| {
                        (h ^ u32::from(b)).wrapping_mul(16777619)
                    });
                    v[(h % 32) as usize] += 1.0;
                }
                v[0] += 0.01; // never the zero vector
                hippo::embed::normalize(&mut v);
                v
            })
            .collect())
    }
}

/// An engine over a fresh database in `dir` with `embedder`.
pub fn engine(dir: &std::path::Path, embedder: Arc<dyn Embedder>) -> Hippo {
    engine_with(dir, embedder, hippo::FusionWeights::default())
}

/// [`engine`] with these fusion weights (the database is shared).
pub fn engine_with(
    dir: &std::path::Path,
    embedder: Arc<dyn Embedder>,
    weights: hippo::FusionWeights,
) -> Hippo {
    let opts = SqliteStoreOptions::new(
        dir.join("hippo.db"),
        embedder.model_id(),
        embedder.dimension(),
    );
    let store = SqliteStore::open(opts).expect("open store");
    Hippo::builder()
        .store(Arc::new(store))
        .embedder(embedder)
        .weights(weights)
        .build()
        .expect("build engine")
}

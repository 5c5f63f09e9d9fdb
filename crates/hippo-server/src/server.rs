//! The REST API v1 over [`hippo::Hippo`]: routing, JSON (de)serialisation,
//! error mapping and metrics. Handlers run engine calls on the blocking pool.
//!
//! Layers, outside in: host guard (`guard_host`) → request tracking
//! (`track`) → load shedding (`shed_load`) → routing → authentication,
//! access and rate limit → handler. The host guard makes a loopback server
//! answer only to loopback host names and refuse a foreign `Origin` (DNS
//! rebinding, cross-site requests; `allowed_hosts` configures it). `track`
//! gives each request an id (the client's `X-Request-Id` when it is a plain
//! token, else a UUIDv7), returns it, opens a tracing span with it that every
//! log line of the request carries, and counts and times the route.
//!
//! Authentication binds the request to its key's tenant before any handler
//! runs; a handler receives a `Bound` (that tenant's engine) and has no way
//! to name another tenant. `required_access` says what each route needs:
//! reads and search need read; erasing, maintenance and metrics need admin;
//! other writes need write (MCP tools and Mem0 routes mirror it). For a key
//! bound to a user or agent, `Bound::confine` turns every scope a handler
//! takes (body, query, by-id scope parameters, add items, grant scopes) into
//! one inside that user or agent: filled in when left out, 403 when another
//! is named. `Bound::blocking` runs the engine call on the blocking pool as
//! the key's actor (`hippo::audit::as_actor`), inside the request's span,
//! and checks the deadline (see `crate::limits`) before it starts.
//!
//! Also here: the job workers (`JobWorkers`), the control-database watch
//! (`watch_control`, polling `data_version` every 250 ms to close the engines
//! of erased tenants), and the allocator settings of a server (see
//! `crate::serving`).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use utoipa::OpenApi;
use uuid::Uuid;

use chrono::Utc;
use hippo::{Error, ErrorKind, Filter, Hippo, MemoryPatch, Scope, SearchRequest};

use crate::api::*;
use crate::auth::{Access, Control, DEFAULT_TENANT};
use crate::limits::RateLimiter;
use crate::metrics::{Metrics, RequestLabels, RouteLabels, ShedLabels};
use crate::tenants::Tenants;

/// Shared state of the server.
#[derive(Clone)]
pub struct AppState {
    /// The tenants' engines.
    pub tenants: Arc<Tenants>,
    /// Tenants and keys; `None` (in-process use, as the Python package's
    /// `Memory`) serves the default tenant without keys. With a control
    /// database, keys are required once one exists
    /// ([`Control::keys_required`]).
    pub control: Option<Arc<Control>>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Context around each search hit when a request does not say.
    pub context: hippo::Context,
    /// The embedding model (reported by `/healthz`).
    pub model: String,
    /// Host names requests may address (`Host` header, port aside) and
    /// browser origins may come from; `None` allows any.
    pub allowed_hosts: Option<Arc<Vec<String>>>,
    /// Per-key rate limits (with keys only).
    pub rate_limiter: Arc<RateLimiter>,
    /// Permits for requests in flight.
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// Deadline of a request.
    pub request_timeout: std::time::Duration,
    /// Cancelled at shutdown: ends open MCP streams.
    pub shutdown: tokio_util::sync::CancellationToken,
}

/// Answers 503 at once when `max_in_flight` requests are being served, and
/// 503 when a request passes its deadline (`/healthz` is exempt: a busy
/// server is alive).
async fn shed_load(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    if req.uri().path() == "/healthz" {
        return next.run(req).await;
    }
    let Ok(_permit) = state.in_flight.clone().try_acquire_owned() else {
        state
            .metrics
            .shed
            .get_or_create(&ShedLabels {
                reason: "overload".into(),
            })
            .inc();
        return retry_after(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the server is at its limit of requests in flight; retry shortly",
            1,
        );
    };
    // A request that changes nothing may be cut off at its deadline. One that
    // may change something is not: its engine work is refused if it has not
    // started by the deadline (`Bound::blocking`), else it runs to its end, so
    // an answer is never "failed" for a write that commits.
    req.extensions_mut()
        .insert(Deadline(Instant::now() + state.request_timeout));
    if may_change_state(req.method()) {
        return next.run(req).await;
    }
    match tokio::time::timeout(state.request_timeout, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => {
            state
                .metrics
                .shed
                .get_or_create(&ShedLabels {
                    reason: "timeout".into(),
                })
                .inc();
            retry_after(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                "the request did not finish in time",
                1,
            )
        }
    }
}

/// When a request's engine work must have started (see [`Bound::deadline`]).
#[derive(Debug, Clone, Copy)]
pub struct Deadline(pub Instant);

/// Whether a request of this method may change state (everything but
/// `GET`, `HEAD`, `OPTIONS`: a `POST` search is treated as a write here, it
/// only loses the option of being cut off midway).
fn may_change_state(method: &axum::http::Method) -> bool {
    use axum::http::Method;
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// An error response with `Retry-After` (whole seconds, at least 1).
fn retry_after(status: StatusCode, code: &'static str, message: &str, secs: u64) -> Response {
    let mut resp = ApiError::new(status, code, message).into_response();
    resp.headers_mut().insert(
        header::RETRY_AFTER,
        axum::http::HeaderValue::from(secs.max(1)),
    );
    resp
}

/// The hosts a loopback server answers to by default: a page on another
/// site that rebinds its name to 127.0.0.1 still sends its own name.
pub const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// The host of a `Host` header or origin, without port or brackets,
/// lower-cased.
fn host_part(authority: &str) -> String {
    let a = authority.trim().to_ascii_lowercase();
    let a = a.rsplit('@').next().unwrap_or(&a).to_owned();
    if let Some(rest) = a.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("").to_owned();
    }
    a.split(':').next().unwrap_or("").to_owned()
}

/// Refuses requests whose `Host` is not an allowed name (DNS rebinding)
/// and browser requests whose `Origin` is not one (cross-site use).
async fn guard_host(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(allowed) = &state.allowed_hosts {
        let ok = |h: &str| allowed.iter().any(|a| a == h);
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(host_part);
        if !host.as_deref().is_some_and(ok) {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden_host",
                "this server does not answer to that host name",
            )
            .into_response();
        }
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            let origin_host = origin
                .to_str()
                .ok()
                .and_then(|o| o.split_once("://"))
                .map(|(_, rest)| host_part(rest.split('/').next().unwrap_or("")));
            if !origin_host.as_deref().is_some_and(ok) {
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden_origin",
                    "cross-origin requests are not allowed",
                )
                .into_response();
            }
        }
    }
    next.run(req).await
}

/// What a request is bound to once authenticated: its tenant's engine and
/// the key's access. Handlers get it from the request, never choose it.
#[derive(Clone)]
pub struct Bound {
    /// The tenant's engine.
    pub hippo: Arc<Hippo>,
    /// The tenant's name.
    pub tenant: Arc<str>,
    /// Who writes (the key id; `local` without keys), for the audit log.
    pub actor: Arc<str>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Context around each search hit when a request does not say.
    pub context: hippo::Context,
    /// The user/agent the key acts for (none: a tenant-wide key).
    pub acts_for: crate::auth::ActsFor,
    /// What the key may do (`admin` without keys).
    pub access: Access,
    /// The request's `Idempotency-Key`, scoped and with its fingerprint:
    /// its writes record their commit (see [`hippo::audit::in_request`]).
    pub request: Option<hippo::audit::RequestMark>,
    /// Engine work not started by then is refused (nothing changed); work
    /// started runs to its end and is answered with the truth.
    pub deadline: Option<Instant>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Bound {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Bound>().cloned().ok_or_else(|| {
            tracing::error!("a handler ran without authentication");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
        })
    }
}

/// Background threads running jobs (LLM extraction) until dropped.
pub struct JobWorkers {
    stop: Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// Attempts before a job is marked failed.
const JOB_ATTEMPTS: u32 = 5;

impl JobWorkers {
    /// Starts `n` workers (none when `n` is 0), each holding a job for at
    /// most `lease` before another may take it over.
    pub fn start(
        tenants: Arc<Tenants>,
        n: usize,
        lease: chrono::Duration,
        metrics: Arc<Metrics>,
    ) -> JobWorkers {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..n)
            .map(|i| {
                let (tenants, stop, metrics) = (tenants.clone(), stop.clone(), metrics.clone());
                std::thread::Builder::new()
                    .name(format!("hippo-job-{i}"))
                    .spawn(move || {
                        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                            // One job per open tenant per round, so a busy
                            // tenant cannot starve the others.
                            let mut ran = false;
                            let mut failed = false;
                            for (tenant, hippo) in tenants.open() {
                                let t = Instant::now();
                                let outcome = match hippo.run_one_job(lease, JOB_ATTEMPTS) {
                                    Ok(false) => continue,
                                    Ok(true) => {
                                        ran = true;
                                        "ran"
                                    }
                                    Err(e) => {
                                        tracing::error!(tenant, error = %e.detail(), "job worker");
                                        failed = true;
                                        "error"
                                    }
                                };
                                metrics.job_seconds.observe(t.elapsed().as_secs_f64());
                                metrics
                                    .job_runs
                                    .get_or_create(&crate::metrics::JobLabels {
                                        outcome: outcome.into(),
                                    })
                                    .inc();
                            }
                            if failed {
                                std::thread::sleep(std::time::Duration::from_secs(1));
                            } else if !ran {
                                std::thread::sleep(std::time::Duration::from_millis(200));
                            }
                        }
                    })
                    .expect("spawn a job worker")
            })
            .collect();
        if n > 0 {
            tracing::info!(workers = n, "LLM job workers started");
        }
        JobWorkers { stop, threads }
    }
}

/// A thread that runs a task every interval until dropped (the first run
/// after one interval).
pub struct Periodic {
    stop: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Periodic {
    /// Starts thread `name` running `task` every `interval`.
    pub fn start(
        name: &str,
        interval: std::time::Duration,
        mut task: impl FnMut() + Send + 'static,
    ) -> Periodic {
        let stop = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || loop {
                let (lock, cvar) = &*flag;
                let stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
                let (stopped, _) = cvar
                    .wait_timeout_while(stopped, interval, |s| !*s)
                    .unwrap_or_else(|e| e.into_inner());
                if *stopped {
                    return;
                }
                drop(stopped);
                task();
            })
            .expect("spawn a periodic thread");
        Periodic {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Periodic {
    fn drop(&mut self) {
        let (lock, cvar) = &*self.stop;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cvar.notify_all();
        if let Some(t) = self.thread.take() {
            t.join().ok();
        }
    }
}

/// Runs the maintenance pass ([`Hippo::maintain`]) over every open tenant
/// every `interval`, metered into `metrics`.
pub fn start_maintenance(
    tenants: Arc<Tenants>,
    interval: std::time::Duration,
    metrics: Arc<Metrics>,
) -> Periodic {
    Periodic::start("hippo-maintenance", interval, move || {
        for (tenant, hippo) in tenants.open() {
            // Replicas sharing a store take turns: whoever claims the pass
            // runs it; the lease lapses before the next round.
            let lease = chrono::Duration::from_std(interval.mul_f64(0.9))
                .unwrap_or(chrono::Duration::minutes(1));
            match hippo.store().claim_maintenance(chrono::Utc::now(), lease) {
                Ok(true) => {}
                Ok(false) => {
                    metrics
                        .maintenance_passes
                        .get_or_create(&crate::metrics::JobLabels {
                            outcome: "skipped".into(),
                        })
                        .inc();
                    continue;
                }
                Err(e) => {
                    tracing::error!(tenant, error = %e.detail(), "claiming the maintenance pass");
                    continue;
                }
            }
            let outcome = match hippo::audit::as_actor("maintenance", || hippo.maintain()) {
                Ok(r) => {
                    tracing::info!(
                        tenant,
                        expired = r.expired.len(),
                        faded = r.faded.len(),
                        checked = r.checked,
                        "maintenance pass"
                    );
                    metrics
                        .maintenance_archived
                        .inc_by((r.expired.len() + r.faded.len()) as u64);
                    "ok"
                }
                Err(e) => {
                    tracing::error!(tenant, error = %e.detail(), "maintenance pass");
                    "error"
                }
            };
            metrics
                .maintenance_passes
                .get_or_create(&crate::metrics::JobLabels {
                    outcome: outcome.into(),
                })
                .inc();
        }
    })
}

/// Caps glibc's malloc arenas at the core count (at least 2; glibc's
/// default is 8 per core). A server's many threads (Tokio's blocking pool,
/// rayon) each take an arena, and memory freed in one arena is not reused by
/// another: in a 30-minute churn soak the live heap was flat while memory
/// freed but kept grew, and the periodic trim gave back only whole pages.
/// The cost is allocator contention (measured in the `serving` module docs); glibc's own
/// `MALLOC_ARENA_MAX`, when set, wins. Elsewhere nothing.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let arenas = i32::try_from(cores.max(2)).unwrap_or(i32::MAX);
        // SAFETY: mallopt only sets an allocator parameter; called at
        // start-up, before the server's threads allocate.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}

/// Returns memory the allocator holds free to the system every `interval`
/// (glibc's `malloc_trim`; elsewhere nothing). glibc keeps freed memory in
/// per-thread arenas and gives back only the top of each heap; under churn
/// (adds and erases on many threads, index compactions that free large
/// buffers) the resident size then creeps up with no growth in live data.
/// What each trim gives back is counted in `hippo_memory_trimmed_bytes`.
pub fn start_memory_trim(interval: std::time::Duration, metrics: Arc<Metrics>) -> Option<Periodic> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        Some(Periodic::start("hippo-trim", interval, move || {
            let before = crate::metrics::resident_bytes();
            // SAFETY: malloc_trim only walks the allocator's own arenas.
            unsafe {
                libc::malloc_trim(0);
            }
            if let (Some(b), Some(a)) = (before, crate::metrics::resident_bytes()) {
                metrics
                    .memory_trimmed_bytes
                    .inc_by(u64::try_from(b - a).unwrap_or(0));
            }
        }))
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = (interval, metrics);
        None
    }
}

/// How often a server looks for changes that other processes (the CLI)
/// made to the control database.
pub const CONTROL_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// Follows the control database while the server runs: when another
/// process committed to it (`data_version` changed), closes the engines of
/// erased tenants (and of tenants created again under the same name), and
/// notes when keys became required. Keys themselves (creation, revocation,
/// rotation, expiry) need no watching: every request reads its key from the
/// database.
pub fn watch_control(control: Arc<Control>, tenants: Arc<Tenants>) -> Periodic {
    let mut seen: Option<i64> = None;
    Periodic::start("hippo-control", CONTROL_POLL, move || {
        let version = match control.data_version() {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "reading the control database");
                return;
            }
        };
        if seen == Some(version) {
            return;
        }
        seen = Some(version);
        if let Err(e) = control.keys_required() {
            tracing::error!(error = %e, "reading the control database");
        }
        match control.tenant_generations() {
            Ok(live) => {
                tenants.retain(&live);
            }
            Err(e) => tracing::error!(error = %e, "reading the control database"),
        }
    })
}

impl Drop for JobWorkers {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.join().ok();
        }
    }
}

/// An API error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_input", message)
    }

    /// Status, code and message.
    pub(crate) fn parts(&self) -> (StatusCode, &'static str, &str) {
        (self.status, self.code, &self.message)
    }

    /// Whether this is a 404.
    pub(crate) fn is_not_found(&self) -> bool {
        self.status == StatusCode::NOT_FOUND
    }

    /// `code: message`, as a tool's error text (MCP).
    pub(crate) fn describe(&self) -> String {
        format!("{}: {}", self.code, self.message)
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        // Exhaustive on purpose: a new kind must choose its status here.
        let (status, code) = match e.kind() {
            ErrorKind::InvalidInput => (StatusCode::BAD_REQUEST, "invalid_input"),
            ErrorKind::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ErrorKind::Conflict => (StatusCode::CONFLICT, "conflict"),
            ErrorKind::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ErrorKind::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        if status.is_server_error() {
            tracing::error!(error = %e.detail(), "request failed");
        }
        ApiError::new(status, code, e.message())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let status = r.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "payload_too_large"
        } else {
            "invalid_input"
        };
        // Map axum's 415/422 to a plain 400 except for the size limit.
        let status = if status == StatusCode::PAYLOAD_TOO_LARGE {
            status
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(status, code, explain_time_errors(r.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::invalid(explain_time_errors(r.body_text()))
    }
}

/// chrono's time parse errors ("premature end of input") do not say what
/// was expected; the message already names the field, this adds the format.
fn explain_time_errors(message: String) -> String {
    const CHRONO_PARSE_ERRORS: [&str; 7] = [
        "premature end of input",
        "input contains invalid characters",
        "input is out of range",
        "input is not enough for unique date and time",
        "trailing input",
        "no possible date and time matching input",
        "bad or unsupported format string",
    ];
    if CHRONO_PARSE_ERRORS.iter().any(|e| message.contains(e)) {
        format!("{message} (times are RFC 3339, e.g. 2024-05-01T12:00:00Z)")
    } else {
        message
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.into(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

/// A REST request body or query built as JSON by another front end (MCP,
/// the Mem0 routes): parsed by the same types, with the same errors.
pub(crate) fn rest<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, ApiError> {
    serde_json::from_value(v).map_err(|e| ApiError::invalid(explain_time_errors(e.to_string())))
}

/// `Json` whose rejections are API errors.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Ok(ApiJson(Json::<T>::from_request(req, state).await?.0))
    }
}

/// `Query` whose rejections are API errors.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S>
    for ApiQuery<T>
{
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(ApiQuery(
            Query::<T>::from_request_parts(parts, state).await?.0,
        ))
    }
}

impl Bound {
    /// The scope a request works in: the one it names, confined to the user
    /// and agent its key acts for (filled in where the request leaves them
    /// out). A key bound to a user or agent that names another is refused.
    /// `None`: the request names no scope and its key is tenant-wide.
    fn confine(&self, asked: Option<Scope>) -> Result<Option<Scope>, ApiError> {
        let bound = &self.acts_for;
        if !bound.is_bound() {
            return Ok(asked);
        }
        let mut scope = asked.unwrap_or_default();
        for (field, own, name) in [
            (&mut scope.user_id, &bound.user_id, "user"),
            (&mut scope.agent_id, &bound.agent_id, "agent"),
        ] {
            match (field.as_ref(), own) {
                (_, None) => {}
                (None, Some(own)) => *field = Some(own.clone()),
                (Some(asked), Some(own)) if asked == own => {}
                (Some(_), Some(own)) => {
                    return Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        "forbidden",
                        format!("this key acts for {name} {own:?} only"),
                    ))
                }
            }
        }
        Ok(Some(scope))
    }

    /// Refuses (403) to show a held-back memory's content
    /// ([`hippo::Memory::held_back`]) to a key below admin: what the
    /// injection detector held back is for the people who judge it (and
    /// approve it), not for the agents it may target.
    fn reveal(&self, m: &hippo::Memory) -> Result<(), ApiError> {
        if m.held_back() {
            self.may_read_status(hippo::Status::Quarantined)
        } else {
            Ok(())
        }
    }

    /// [`Bound::reveal`] before a change whose answer shows the memory:
    /// refused before anything changes (a refused request changes nothing).
    /// Changes keep a memory held back or not (a restore returns a flagged
    /// one to quarantine), so their answers need no second check.
    async fn reveal_before_change(
        &self,
        id: hippo::MemoryId,
        scope: &Option<Scope>,
    ) -> Result<(), ApiError> {
        if self.access >= Access::Admin {
            return Ok(());
        }
        let (hippo, scope) = (self.hippo.clone(), scope.clone());
        let m = self.blocking(move || hippo.get(id, scope.as_ref())).await?;
        self.reveal(&m)
    }

    /// [`Bound::reveal`] for a filter: statuses a read asks for.
    fn may_read_statuses(&self, filter: &Filter) -> Result<(), ApiError> {
        filter
            .statuses
            .iter()
            .try_for_each(|s| self.may_read_status(*s))
    }

    fn may_read_status(&self, status: hippo::Status) -> Result<(), ApiError> {
        if status == hippo::Status::Quarantined && self.access < Access::Admin {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "quarantined memories are shown to admin keys only",
            ));
        }
        Ok(())
    }

    /// [`Bound::confine`] for requests that need a scope.
    fn confine_required(&self, asked: Scope) -> Result<Scope, ApiError> {
        Ok(self.confine(Some(asked))?.unwrap_or_default())
    }

    /// Runs an engine call on the blocking pool, its writes attributed to
    /// this request's key in the audit log.
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> hippo::Result<T> + Send + 'static,
    ) -> Result<T, ApiError> {
        let actor = self.actor.clone();
        let request = self.request.clone();
        let deadline = self.deadline;
        // Engine logs carry the request's span (its id) on the blocking pool too.
        let span = tracing::Span::current();
        blocking(move || {
            // Checked where the work starts (not by dropping it midway: a
            // write cut off by a timer would commit after a "failed" answer).
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    "the request waited past its deadline before it started; nothing was changed, retry later",
                ));
            }
            span.in_scope(|| {
                hippo::audit::in_request(request, || hippo::audit::as_actor(&actor, f))
            })
        })
        .await
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> hippo::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => {
            tracing::error!(error = %e, "engine task panicked");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            ))
        }
    }
}

/// The OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    modifiers(&CommonErrors),
    nest((path = "/mem0", api = crate::mem0::Mem0Doc)),
    info(
        title = "Hippo",
        description = "Long-term memory for LLM agents: REST API v1."
    ),
    paths(
        add_memory,
        crate::admin::stats,
        crate::admin::list_tenants,
        crate::admin::create_tenant,
        crate::admin::audit_log,
        crate::admin::verify_audit,
        crate::admin::list_keys,
        crate::admin::create_key,
        crate::admin::revoke_key,
        add_batch,
        search,
        list_memories,
        list_scopes,
        erase_scope,
        get_memory,
        patch_memory,
        delete_memory,
        restore_memory,
        approve_memory,
        rollback,
        invalidate_memory,
        memory_history,
        feedback,
        archive_memory,
        maintenance,
        rejections,
        get_profile,
        create_grant,
        list_grants,
        revoke_grant,
        job_counts,
        get_job,
        whoami,
        healthz,
        metrics
    ),
    components(schemas(
        MessageBody,
        crate::admin::StatsView,
        crate::admin::TenantView,
        crate::admin::TenantList,
        crate::admin::NewTenantBody,
        crate::admin::AuditEntryView,
        crate::admin::AuditPage,
        crate::admin::AuditVerification,
        crate::admin::KeyView,
        crate::admin::KeyList,
        crate::admin::NewKeyBody,
        crate::admin::CreatedKey,
        AddItemBody,
        BatchBody,
        ProvenanceView,
        MemoryView,
        AddResponse,
        DuplicateView,
        RejectedView,
        AdmissionView,
        RejectionView,
        RejectionsResponse,
        RollbackBody,
        RollbackView,
        UsageView,
        StrengthView,
        FeedbackBody,
        ArchiveBody,
        MaintenanceView,
        InvalidateBody,
        EventView,
        HistoryView,
        JobCountsView,
        JobView,
        FiltersBody,
        SearchBody,
        ScoresView,
        SourceView,
        SearchResultView,
        SearchResponseView,
        ListResponse,
        ScopesResponse,
        SearchTimingsView,
        ScopeView,
        PatchBody,
        DeletedResponse,
        GranteeBody,
        ScopeBody,
        GrantBody,
        GrantView,
        GrantsResponse,
        ErrorBody,
        ErrorDetail,
        WhoAmI,
        Health
    ))
)]
pub struct ApiDoc;

/// Builds the router. `max_body_bytes` bounds every request body (413 beyond).
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    Router::new()
        .route(
            "/v1/memories",
            post(add_memory).get(list_memories).delete(erase_scope),
        )
        .route("/v1/memories/batch", post(add_batch))
        .route("/v1/scopes", get(list_scopes))
        .route(
            "/v1/memories/{id}",
            get(get_memory).patch(patch_memory).delete(delete_memory),
        )
        .route("/v1/memories/{id}/history", get(memory_history))
        .route("/v1/memories/{id}/restore", post(restore_memory))
        .route("/v1/memories/{id}/approve", post(approve_memory))
        .route("/v1/rollback", post(rollback))
        .route("/v1/memories/{id}/invalidate", post(invalidate_memory))
        .route("/v1/memories/{id}/feedback", post(feedback))
        .route("/v1/memories/{id}/archive", post(archive_memory))
        .route("/v1/maintenance", post(maintenance))
        .route("/v1/rejections", get(rejections))
        .route("/v1/profile", get(get_profile))
        .route("/v1/grants", post(create_grant).get(list_grants))
        .route("/v1/grants/{id}", axum::routing::delete(revoke_grant))
        .route("/v1/jobs", get(job_counts))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/search", post(search))
        .route("/v1/whoami", get(whoami))
        .route("/v1/stats", get(crate::admin::stats))
        .route(
            "/v1/tenants",
            get(crate::admin::list_tenants).post(crate::admin::create_tenant),
        )
        .route("/v1/audit", get(crate::admin::audit_log))
        .route("/v1/audit/verify", get(crate::admin::verify_audit))
        .route(
            "/v1/keys",
            get(crate::admin::list_keys).post(crate::admin::create_key),
        )
        .route(
            "/v1/keys/{id}",
            axum::routing::delete(crate::admin::revoke_key),
        )
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route_service("/mcp", crate::mcp::http_service(state.shutdown.clone()))
        .nest("/mem0", crate::mem0::routes())
        // Inside authentication (later layers wrap earlier ones).
        .route_layer(middleware::from_fn_with_state(
            crate::call_order::Sessions::new(max_body_bytes),
            crate::call_order::stamp_http,
        ))
        .route_layer(middleware::from_fn_with_state(
            crate::idempotency::Idempotency::new(max_body_bytes),
            crate::idempotency::idempotent,
        ))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate))
        // Public like /healthz: the page holds no data, it calls the API above.
        .merge(crate::ui::routes())
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .layer(middleware::map_response(method_not_allowed_as_json))
        .layer(middleware::from_fn_with_state(state.clone(), shed_load))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .layer(middleware::from_fn_with_state(state.clone(), guard_host))
        .layer(middleware::from_fn_with_state(
            max_body_bytes,
            refuse_declared_oversize,
        ))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

/// Most bytes of a refused body read (and dropped) before answering.
const OVERSIZE_DRAIN_BYTES: u64 = 64 << 20;

/// A body whose declared length exceeds the limit is refused with 413 before
/// anything else runs, after reading it (up to a bound, for at most 10 s):
/// HTTP clients that send the whole body before reading the answer would
/// otherwise see the connection reset under them instead of the 413.
async fn refuse_declared_oversize(State(max): State<usize>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let Some(len) = declared.filter(|&n| n > max as u64) else {
        return next.run(req).await;
    };
    let mem0 = req.uri().path().starts_with("/mem0/");
    if len <= OVERSIZE_DRAIN_BYTES.max(2 * max as u64) {
        use futures_util::StreamExt;
        let mut body = req.into_body().into_data_stream();
        let drain = async { while let Some(Ok(_)) = body.next().await {} };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), drain).await;
    }
    let refusal = ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the request body exceeds {max} bytes"),
    );
    if mem0 {
        crate::mem0::Mem0Error::from(refusal).into_response()
    } else {
        refusal.into_response()
    }
}

/// Gives axum's bare 405 (a route that exists, another method) the JSON
/// error body every other refusal has, keeping its `Allow` header.
async fn method_not_allowed_as_json(resp: Response) -> Response {
    if resp.status() != StatusCode::METHOD_NOT_ALLOWED
        || resp.headers().contains_key(header::CONTENT_TYPE)
    {
        return resp;
    }
    let allow = resp.headers().get(header::ALLOW).cloned();
    let message = match allow.as_ref().and_then(|a| a.to_str().ok()) {
        Some(a) => format!("method not allowed on this route; allowed: {a}"),
        None => "method not allowed on this route".to_owned(),
    };
    let mut json = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        message,
    )
    .into_response();
    if let Some(a) = allow {
        json.headers_mut().insert(header::ALLOW, a);
    }
    json
}

/// The request id a client sent (`X-Request-Id`: 1-64 of letters, digits,
/// `-`, `_`, `.`), or a new one.
fn request_id(req: &Request) -> String {
    req.headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=64).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        })
        .map_or_else(|| Uuid::now_v7().to_string(), str::to_owned)
}

/// The header that carries a request's id, both ways.
const REQUEST_ID: &str = "x-request-id";

/// Counts and times every request by route, and gives it an id: answered
/// in `X-Request-Id` and carried by every log line of the request (a
/// tracing span), so a client's report can be found in the logs.
async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    use tracing::Instrument;
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let method = req.method().to_string();
    let id = request_id(&req);
    let span = tracing::info_span!("request", id = %id, method = %method, route = %route);
    let t = Instant::now();
    let mut resp = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::debug!(
            status = resp.status().as_u16(),
            ms = t.elapsed().as_secs_f64() * 1e3,
            "answered"
        )
    });
    if let Ok(v) = axum::http::HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    state
        .metrics
        .latency
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(t.elapsed().as_secs_f64());
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            method,
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}

fn scope_of(
    user_id: Option<String>,
    agent_id: Option<String>,
    session_id: Option<String>,
) -> Scope {
    Scope {
        user_id,
        agent_id,
        session_id,
    }
}

async fn add_items(state: Bound, items: Vec<AddItemBody>) -> Result<Json<AddResponse>, ApiError> {
    let items = items
        .into_iter()
        .enumerate()
        .map(|(i, b)| {
            let mut item = b
                .into_item(state.hippo.now())
                .map_err(|e| ApiError::invalid(format!("item {i}: {e}")))?;
            item.scope = state.confine_required(item.scope)?;
            Ok(item)
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let hippo = state.hippo.clone();
    let outcome = state.blocking(move || hippo.add_reporting(items)).await?;
    state
        .metrics
        .memories_written
        .inc_by(outcome.stored.len() as u64);
    Ok(Json(AddResponse {
        results: outcome.stored.into_iter().map(Into::into).collect(),
        duplicates: outcome
            .duplicates
            .into_iter()
            .map(|d| DuplicateView {
                memory: d.memory.content,
                existing_id: d.existing,
                similarity: d.similarity,
            })
            .collect(),
        rejected: outcome
            .rejected
            .into_iter()
            .map(|r| RejectedView {
                kind: r.memory.kind.as_str().to_owned(),
                memory: r.memory.content,
                admission: r.admission.into(),
            })
            .collect(),
    }))
}

/// Remember one item (durable and searchable when the response is sent).
#[utoipa::path(post, path = "/v1/memories", request_body = AddItemBody,
    responses((status = 200, body = AddResponse), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub(crate) async fn add_memory(
    state: Bound,
    ApiJson(body): ApiJson<AddItemBody>,
) -> Result<Json<AddResponse>, ApiError> {
    add_items(state, vec![body]).await
}

/// Remember a batch of items atomically (all or nothing).
#[utoipa::path(post, path = "/v1/memories/batch", request_body = BatchBody,
    responses((status = 200, body = AddResponse), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn add_batch(
    state: Bound,
    ApiJson(body): ApiJson<BatchBody>,
) -> Result<Json<AddResponse>, ApiError> {
    add_items(state, body.items).await
}

/// Hybrid (keyword + vector + recency) search within a scope.
#[utoipa::path(post, path = "/v1/search", request_body = SearchBody,
    responses((status = 200, body = SearchResponseView), (status = 400, body = ErrorBody)))]
pub(crate) async fn search(
    state: Bound,
    ApiJson(body): ApiJson<SearchBody>,
) -> Result<Json<SearchResponseView>, ApiError> {
    let context = body.context(state.context);
    let mut filter = body.filters.map(Filter::from).unwrap_or_default();
    filter.as_of = body.as_of;
    filter.all_versions = body.all_versions.unwrap_or(false);
    state.may_read_statuses(&filter)?;
    let req = SearchRequest {
        scope: state.confine_required(scope_of(body.user_id, body.agent_id, body.session_id))?,
        query: body.query,
        top_k: body.top_k.unwrap_or(10),
        filter,
        context,
        diversity: body.diversity.unwrap_or(hippo::DEFAULT_DIVERSITY),
        budget_tokens: body.budget_tokens,
        shared: body.include_shared.unwrap_or(true),
        min_relevance: body.min_relevance.unwrap_or(0.0),
        reference_time: body.reference_time,
    };
    let hippo = state.hippo.clone();
    let t = Instant::now();
    let prompt = match body.format.as_deref() {
        None | Some("json") => false,
        Some("prompt") => true,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "format must be \"json\" or \"prompt\", not {other:?}"
            )))
        }
    };
    let mut resp = state.blocking(move || hippo.search(&req)).await?;
    if state.access < Access::Admin {
        // Held-back memories outside quarantine (flagged, then deleted or
        // archived) are found by status filters a key below admin may use.
        resp.hits.retain(|h| !h.memory.held_back());
        for h in &mut resp.hits {
            h.window.retain(|m| !m.held_back());
        }
    }
    let prompt = prompt.then(|| hippo::prompt::render(&state.hippo, &resp.hits));
    let tokens = resp.hits.iter().map(|h| h.tokens).sum();
    Ok(Json(SearchResponseView {
        prompt,
        results: resp
            .hits
            .into_iter()
            .map(|h| {
                let trust = state.hippo.trust_of(&h.memory).1;
                let mut v = SearchResultView::from(h);
                v.memory.trust = trust;
                v
            })
            .collect(),
        took_ms: t.elapsed().as_secs_f64() * 1e3,
        embed_ms: resp.embed_ms,
        retrieve_ms: resp.retrieve_ms,
        timings: resp.timings.into(),
        budget_tokens: resp.budget_tokens,
        tokens,
    }))
}

/// List memories of a scope, oldest first, with a cursor.
#[utoipa::path(get, path = "/v1/memories", params(ListParams),
    responses((status = 200, body = ListResponse), (status = 400, body = ErrorBody)))]
pub(crate) async fn list_memories(
    state: Bound,
    ApiQuery(p): ApiQuery<ListParams>,
) -> Result<Json<ListResponse>, ApiError> {
    let (filter, order, limit) = p.listing().map_err(ApiError::from)?;
    state.may_read_statuses(&filter)?;
    let scope = state.confine_required(scope_of(p.user_id, p.agent_id, p.session_id))?;
    let hippo = state.hippo.clone();
    let page = state
        .blocking(move || hippo.list(Some(&scope), &filter, p.cursor.as_deref(), limit, order))
        .await?;
    Ok(Json(ListResponse {
        results: page
            .memories
            .into_iter()
            // As in search: no held-back text below admin, whatever the status.
            .filter(|m| state.access >= Access::Admin || !m.held_back())
            .map(|m| {
                let trust = state.hippo.trust_of(&m).1;
                let mut v = MemoryView::from(m);
                v.trust = trust;
                v
            })
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

/// The scopes (user, agent, session triples) that hold memories, with how
/// many each holds, the most recently written first. A key bound to a user
/// or agent sees only its own.
#[utoipa::path(get, path = "/v1/scopes", params(ScopesParams),
    responses((status = 200, body = ScopesResponse), (status = 400, body = ErrorBody)))]
pub(crate) async fn list_scopes(
    state: Bound,
    ApiQuery(p): ApiQuery<ScopesParams>,
) -> Result<Json<ScopesResponse>, ApiError> {
    let (filter, limit) = p.counting().map_err(ApiError::from)?;
    state.may_read_statuses(&filter)?;
    let within = state
        .confine(Some(scope_of(p.user_id, p.agent_id, p.session_id)))?
        .unwrap_or_default();
    let hippo = state.hippo.clone();
    let (scopes, truncated) = state
        .blocking(move || hippo.scopes(Some(&within), &filter, limit))
        .await?;
    Ok(Json(ScopesResponse {
        scopes: scopes.into_iter().map(ScopeView::from).collect(),
        truncated,
    }))
}

/// Scope parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ScopeParams {
    /// Scope user.
    user_id: Option<String>,
    /// Scope agent.
    agent_id: Option<String>,
    /// Scope session (`run_id` accepted).
    #[serde(alias = "run_id")]
    session_id: Option<String>,
}

impl ScopeParams {
    fn scope(self) -> Option<Scope> {
        let s = scope_of(self.user_id, self.agent_id, self.session_id);
        (s != Scope::default()).then_some(s)
    }
}

/// Erase every memory of a scope (at least one scope parameter is required).
#[utoipa::path(delete, path = "/v1/memories", params(ScopeParams),
    responses((status = 200, body = DeletedResponse), (status = 400, body = ErrorBody)))]
pub(crate) async fn erase_scope(
    state: Bound,
    ApiQuery(p): ApiQuery<ScopeParams>,
) -> Result<Json<DeletedResponse>, ApiError> {
    let scope = state.confine(p.scope())?.ok_or_else(|| {
        ApiError::invalid("at least one of user_id, agent_id or session_id is required")
    })?;
    let hippo = state.hippo.clone();
    let deleted = state.blocking(move || hippo.delete_scope(&scope)).await?;
    Ok(Json(DeletedResponse { deleted }))
}

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::invalid(format!("{id:?} is not a memory id")))
}

/// Get a memory by id (scope parameters, when given, must match).
#[utoipa::path(get, path = "/v1/memories/{id}", params(("id" = Uuid, Path, description = "Memory id"), ScopeParams),
    responses((status = 200, body = MemoryView), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_memory(
    state: Bound,
    Path(id): Path<String>,
    ApiQuery(p): ApiQuery<ScopeParams>,
) -> Result<Json<MemoryView>, ApiError> {
    let id = parse_id(&id)?;
    let scope = state.confine(p.scope())?;
    let hippo = state.hippo.clone();
    let m = state
        .blocking(move || hippo.read(id, scope.as_ref()))
        .await?;
    state.reveal(&m)?;
    Ok(Json(MemoryView::with_strength(m, &state.hippo)))
}

/// Change a memory's text, metadata or event time. The id keeps showing the
/// latest version; the previous one is kept (see history), valid until
/// `valid_from` (default now). A change that changes nothing is a no-op.
#[utoipa::path(patch, path = "/v1/memories/{id}", params(("id" = Uuid, Path, description = "Memory id"), ScopeParams), request_body = PatchBody,
    responses((status = 200, body = MemoryView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn patch_memory(
    state: Bound,
    Path(id): Path<String>,
    ApiQuery(p): ApiQuery<ScopeParams>,
    ApiJson(body): ApiJson<PatchBody>,
) -> Result<Json<MemoryView>, ApiError> {
    let id = parse_id(&id)?;
    let revises = body.content.is_some() || body.metadata.is_some() || body.event_time.is_some();
    if !revises && body.expires_at.is_none() {
        return Err(ApiError::invalid(
            "nothing to change: give content, metadata, event_time or expires_at",
        ));
    }
    let patch = MemoryPatch {
        content: body.content,
        metadata: body.metadata,
        event_time: body.event_time,
        valid_from: body.valid_from,
        reason: body.reason,
    };
    let scope = state.confine(p.scope())?;
    state.reveal_before_change(id, &scope).await?;
    let hippo = state.hippo.clone();
    let expiry = body.expires_at;
    let m = state
        .blocking(move || {
            let mut m = if revises {
                hippo.update(id, scope.as_ref(), patch)?
            } else {
                hippo.get(id, scope.as_ref())?
            };
            if let Some(expires_at) = expiry {
                m = hippo.set_expiry(id, scope.as_ref(), expires_at)?;
            }
            Ok(m)
        })
        .await?;
    Ok(Json(m.into()))
}

/// Scope parameters of a delete, and whether it is for good.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeleteParams {
    /// Scope user.
    user_id: Option<String>,
    /// Scope agent.
    agent_id: Option<String>,
    /// Scope session (`run_id` accepted).
    #[serde(alias = "run_id")]
    session_id: Option<String>,
    /// `true`: erase it for good, with its versions and history. Default:
    /// soft delete (restorable).
    hard: Option<bool>,
}

/// Delete a memory: soft by default (it leaves search and listings, keeps
/// its history and can be restored); `hard=true` erases it for good.
#[utoipa::path(delete, path = "/v1/memories/{id}", params(("id" = Uuid, Path, description = "Memory id"), DeleteParams),
    responses((status = 200, body = DeletedResponse), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_memory(
    state: Bound,
    Path(id): Path<String>,
    ApiQuery(p): ApiQuery<DeleteParams>,
) -> Result<Json<DeletedResponse>, ApiError> {
    let id = parse_id(&id)?;
    let scope = ScopeParams {
        user_id: p.user_id,
        agent_id: p.agent_id,
        session_id: p.session_id,
    }
    .scope();
    let scope = state.confine(scope)?;
    let hippo = state.hippo.clone();
    if p.hard.unwrap_or(false) {
        state
            .blocking(move || hippo.erase(id, scope.as_ref()))
            .await?;
    } else {
        state
            .blocking(move || hippo.delete(id, scope.as_ref()))
            .await?;
    }
    Ok(Json(DeletedResponse { deleted: 1 }))
}

/// Let a quarantined memory into retrieval (admin): a person judged that
/// what the injection detector flagged is not an instruction to obey. The
/// flags stay, marked `approved`; the event log records it.
#[utoipa::path(post, path = "/v1/memories/{id}/approve", params(("id" = Uuid, Path, description = "Memory id"), ScopeParams),
    responses((status = 200, body = MemoryView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn approve_memory(
    state: Bound,
    Path(id): Path<String>,
    ApiQuery(p): ApiQuery<ScopeParams>,
) -> Result<Json<MemoryView>, ApiError> {
    let id = parse_id(&id)?;
    let scope = state.confine(p.scope())?;
    let hippo = state.hippo.clone();
    let m = state
        .blocking(move || hippo.approve(id, scope.as_ref()))
        .await?;
    Ok(Json(m.into()))
}

/// Erase everything one API key wrote in this tenant (admin): every memory
/// it added, with what was derived from it. For a poisoned source: a
/// session or user goes with `DELETE /v1/memories?…`, a document with a hard
/// delete of any of its chunks.
#[utoipa::path(post, path = "/v1/rollback", request_body = RollbackBody,
    responses((status = 200, body = RollbackView), (status = 400, body = ErrorBody)))]
async fn rollback(
    state: Bound,
    ApiJson(body): ApiJson<RollbackBody>,
) -> Result<Json<RollbackView>, ApiError> {
    if body.key_id.is_empty() || !body.key_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::invalid("key_id must be a key's hexadecimal id"));
    }
    let actor = format!("key:{}", body.key_id);
    let hippo = state.hippo.clone();
    let erased = state.blocking(move || hippo.rollback_actor(&actor)).await?;
    Ok(Json(RollbackView { erased }))
}

/// Undo a soft delete (or an archive).
#[utoipa::path(post, path = "/v1/memories/{id}/restore", params(("id" = Uuid, Path, description = "Memory id"), ScopeParams),
    responses((status = 200, body = MemoryView), (status = 404, body = ErrorBody)))]
async fn restore_memory(
    state: Bound,
    Path(id): Path<String>,
    ApiQuery(p): ApiQuery<ScopeParams>,
) -> Result<Json<MemoryView>, ApiError> {
    let id = parse_id(&id)?;
    let scope = state.confine(p.scope())?;
    state.reveal_before_change(id, &scope).await?;
    let hippo = state.hippo.clone();
    let m = state
        .blocking(move || hippo.restore(id, scope.as_ref()))
        .await?;
    Ok(Json(m.into()))
}

/// Record that a memory stopped holding (default now) without a successor:
/// search stops returning it, `as_of` an earlier time still does. The body
/// may be `{}`.
#[utoipa::path(post, path = "/v1/memories/{id}/invalidate", params(("id" = Uuid, Path, description = "Memory id"), ScopeParams),
    request_body = InvalidateBody,
    responses((status = 200, body = MemoryView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn invalidate_memory(
    state: Bound,
    Path(id): Path<String>,
    ApiQuery(p): ApiQuery<ScopeParams>,
    ApiJson(body): ApiJson<InvalidateBody>,
) -> Result<Json<MemoryView>, ApiError> {
    let id = parse_id(&id)?;
    let scope = state.confine(p.scope())?;
    state.reveal_before_change(id, &scope).await?;
    let hippo = state.hippo.clone();
    let m = state
        .blocking(move || hippo.invalidate(id, scope.as_ref(), body.valid_to, body.reason))
        .await?;
    Ok(Json(m.into()))
}

/// A memory's versions (oldest first, the current one last, each with its
/// validity and provenance) and its event log. The id may name the memory
/// or any earlier version of it.
#[utoipa::path(get, path = "/v1/memories/{id}/history", params(("id" = Uuid, Path, description = "Memory id"), ScopeParams),
    responses((status = 200, body = HistoryView), (status = 404, body = ErrorBody)))]
pub(crate) async fn memory_history(
    state: Bound,
    Path(id): Path<String>,
    ApiQuery(p): ApiQuery<ScopeParams>,
) -> Result<Json<HistoryView>, ApiError> {
    let id = parse_id(&id)?;
    let scope = state.confine(p.scope())?;
    let hippo = state.hippo.clone();
    let h = state
        .blocking(move || hippo.history(id, scope.as_ref()))
        .await?;
    for v in &h.versions {
        state.reveal(v)?;
    }
    Ok(Json(h.into()))
}

/// Report how a retrieved memory served: `used` and `helpful` reinforce it
/// (its strength restarts and decays more slowly; search ranks it a little
/// higher), `wrong` halves its strength. Logged in its history.
#[utoipa::path(post, path = "/v1/memories/{id}/feedback", params(("id" = Uuid, Path, description = "Memory id"), ScopeParams),
    request_body = FeedbackBody,
    responses((status = 200, body = MemoryView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn feedback(
    state: Bound,
    Path(id): Path<String>,
    ApiQuery(p): ApiQuery<ScopeParams>,
    ApiJson(body): ApiJson<FeedbackBody>,
) -> Result<Json<MemoryView>, ApiError> {
    let id = parse_id(&id)?;
    let scope = state.confine(p.scope())?;
    state.reveal_before_change(id, &scope).await?;
    let hippo = state.hippo.clone();
    let m = state
        .blocking(move || hippo.feedback(id, scope.as_ref(), body.signal, body.note))
        .await?;
    Ok(Json(MemoryView::with_strength(m, &state.hippo)))
}

/// Archive a memory: it leaves default search and listings (list with
/// `status=archived` to see it), keeps its history, and `restore` brings it
/// back. The body may be `{}`.
#[utoipa::path(post, path = "/v1/memories/{id}/archive", params(("id" = Uuid, Path, description = "Memory id"), ScopeParams),
    request_body = ArchiveBody,
    responses((status = 200, body = MemoryView), (status = 404, body = ErrorBody)))]
async fn archive_memory(
    state: Bound,
    Path(id): Path<String>,
    ApiQuery(p): ApiQuery<ScopeParams>,
    ApiJson(body): ApiJson<ArchiveBody>,
) -> Result<Json<MemoryView>, ApiError> {
    let id = parse_id(&id)?;
    let scope = state.confine(p.scope())?;
    state.reveal_before_change(id, &scope).await?;
    let hippo = state.hippo.clone();
    let m = state
        .blocking(move || hippo.archive(id, scope.as_ref(), body.reason))
        .await?;
    Ok(Json(m.into()))
}

/// Run a maintenance pass now (the server also runs one periodically):
/// archives memories that expired, and memories of decaying kinds whose
/// strength fell below their kind's threshold. Each archive is logged with
/// its numbers in the memory's history.
#[utoipa::path(post, path = "/v1/maintenance", responses((status = 200, body = MaintenanceView)))]
async fn maintenance(state: Bound) -> Result<Json<MaintenanceView>, ApiError> {
    let hippo = state.hippo.clone();
    let report = state.blocking(move || hippo.maintain()).await?;
    Ok(Json(report.into()))
}

/// Paging through the rejection record.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RejectionParams {
    /// Scope user.
    user_id: Option<String>,
    /// Scope agent.
    agent_id: Option<String>,
    /// Scope session (`run_id` accepted).
    #[serde(alias = "run_id")]
    session_id: Option<String>,
    /// Only entries after this `seq` (default 0: from the start).
    after: Option<i64>,
    /// Page size (1..=1000, default 100).
    limit: Option<usize>,
}

/// Writes that were not admitted, with the factors of each decision,
/// oldest first (write one again with `force: true` to store it anyway).
#[utoipa::path(get, path = "/v1/rejections", params(RejectionParams),
    responses((status = 200, body = RejectionsResponse), (status = 400, body = ErrorBody)))]
async fn rejections(
    state: Bound,
    ApiQuery(p): ApiQuery<RejectionParams>,
) -> Result<Json<RejectionsResponse>, ApiError> {
    let scope = scope_of(p.user_id, p.agent_id, p.session_id);
    let scope = state.confine((scope != Scope::default()).then_some(scope))?;
    let hippo = state.hippo.clone();
    let page = state
        .blocking(move || {
            hippo.rejections(scope.as_ref(), p.after.unwrap_or(0), p.limit.unwrap_or(100))
        })
        .await?;
    Ok(Json(RejectionsResponse {
        results: page.into_iter().map(Into::into).collect(),
    }))
}

/// Owner parameters of a profile.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ProfileParams {
    /// The user.
    user_id: Option<String>,
    /// The agent.
    agent_id: Option<String>,
}

/// The profile of a user or agent: one short description built from their
/// current `profile` memories (by the LLM when one is configured),
/// revised with versions as they change (see its history). 404 until one
/// has been built.
#[utoipa::path(get, path = "/v1/profile", params(ProfileParams),
    responses((status = 200, body = MemoryView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_profile(
    state: Bound,
    ApiQuery(p): ApiQuery<ProfileParams>,
) -> Result<Json<MemoryView>, ApiError> {
    let owner = state.confine_required(scope_of(p.user_id, p.agent_id, None))?;
    if owner == Scope::default() {
        return Err(ApiError::invalid("user_id or agent_id is required"));
    }
    let hippo = state.hippo.clone();
    let profile = state.blocking(move || hippo.profile(&owner)).await?;
    let m = profile.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no profile has been built yet",
        )
    })?;
    Ok(Json(MemoryView::with_strength(m, &state.hippo)))
}

/// Share a memory (all its versions) or a scope with another user or agent
/// of the tenant, read only, until revoked or `expires_at`. A key bound to a
/// user or agent shares only its own memories; a tenant-wide key any.
#[utoipa::path(post, path = "/v1/grants", request_body = GrantBody,
    responses((status = 200, body = GrantView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn create_grant(
    state: Bound,
    ApiJson(body): ApiJson<GrantBody>,
) -> Result<Json<GrantView>, ApiError> {
    let owner = state.confine(None)?;
    let new = hippo::sharing::NewGrant {
        memory_id: body.memory_id,
        scope: body
            .scope
            .map(|s| state.confine_required(scope_of(s.user_id, s.agent_id, s.session_id)))
            .transpose()?,
        grantee: hippo::sharing::Grantee {
            user_id: body.grantee.user_id,
            agent_id: body.grantee.agent_id,
        },
        expires_at: body.expires_at,
    };
    let hippo = state.hippo.clone();
    let grant = state
        .blocking(move || hippo.grant(new, owner.as_ref()))
        .await?;
    Ok(Json(grant.into()))
}

/// Which grants to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct GrantParams {
    /// Owner (given) or grantee (received) user.
    user_id: Option<String>,
    /// Owner (given) or grantee (received) agent.
    agent_id: Option<String>,
    /// Owner session (given only).
    #[serde(alias = "run_id")]
    session_id: Option<String>,
    /// `given` (default): grants of what lies in the scope; `received`:
    /// grants to the user or agent.
    direction: Option<String>,
    /// Revoked grants too (default false). Expired ones are always listed.
    include_revoked: Option<bool>,
}

/// List grants given (of a scope's memories) or received (by a user or agent).
#[utoipa::path(get, path = "/v1/grants", params(GrantParams),
    responses((status = 200, body = GrantsResponse), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_grants(
    state: Bound,
    ApiQuery(p): ApiQuery<GrantParams>,
) -> Result<Json<GrantsResponse>, ApiError> {
    let scope = scope_of(p.user_id, p.agent_id, p.session_id);
    let scope = state.confine((scope != Scope::default()).then_some(scope))?;
    let received = match p.direction.as_deref() {
        None | Some("given") => false,
        Some("received") => true,
        Some(d) => {
            return Err(ApiError::invalid(format!(
                "direction must be given or received, not {d:?}"
            )))
        }
    };
    if received
        && scope
            .as_ref()
            .is_none_or(|s| s.user_id.is_none() && s.agent_id.is_none())
    {
        return Err(ApiError::invalid(
            "received grants need user_id or agent_id",
        ));
    }
    let include_revoked = p.include_revoked.unwrap_or(false);
    let hippo = state.hippo.clone();
    let grants = state
        .blocking(move || {
            if received {
                hippo.grants(None, scope.as_ref(), include_revoked)
            } else {
                hippo.grants(scope.as_ref(), None, include_revoked)
            }
        })
        .await?;
    Ok(Json(GrantsResponse {
        results: grants.into_iter().map(Into::into).collect(),
    }))
}

/// Revoke a grant, at once (reads check grants as they run). Only the owner
/// of what it shares (or a tenant-wide key) may.
#[utoipa::path(delete, path = "/v1/grants/{id}", params(("id" = Uuid, Path, description = "Grant id")),
    responses((status = 200, body = GrantView), (status = 404, body = ErrorBody)))]
async fn revoke_grant(state: Bound, Path(id): Path<String>) -> Result<Json<GrantView>, ApiError> {
    let id =
        Uuid::parse_str(&id).map_err(|_| ApiError::invalid(format!("{id:?} is not a grant id")))?;
    let owner = state.confine(None)?;
    let hippo = state.hippo.clone();
    let grant = state
        .blocking(move || hippo.revoke_grant(id, owner.as_ref()))
        .await?;
    Ok(Json(grant.into()))
}

/// Background jobs per state (LLM extraction runs after the write is
/// acknowledged), and the latest jobs with their plans, errors and cost.
#[utoipa::path(get, path = "/v1/jobs", params(JobsParams),
    responses((status = 200, body = JobCountsView), (status = 400, body = ErrorBody)))]
async fn job_counts(
    state: Bound,
    ApiQuery(p): ApiQuery<JobsParams>,
) -> Result<Json<JobCountsView>, ApiError> {
    let job_state = p
        .state
        .as_deref()
        .map(hippo::jobs::JobState::parse)
        .transpose()
        .map_err(ApiError::from)?;
    let limit = p.limit.unwrap_or(20);
    if limit > 200 {
        return Err(ApiError::invalid("limit must be 0..=200"));
    }
    let scope = state
        .confine(Some(scope_of(p.user_id, p.agent_id, p.session_id)))?
        .unwrap_or_default();
    let hippo = state.hippo.clone();
    let (c, mut jobs) = state
        .blocking(move || {
            let store = hippo.store();
            let jobs = if limit == 0 {
                Vec::new()
            } else {
                // One more than asked says whether there is a next page.
                store.jobs(&hippo::store::JobQuery {
                    state: job_state,
                    scope: Some(&scope),
                    before: p.before,
                    limit: limit + 1,
                })?
            };
            Ok((store.job_counts()?, jobs))
        })
        .await?;
    let more = jobs.len() > limit;
    jobs.truncate(limit);
    Ok(Json(JobCountsView {
        pending: c.pending,
        running: c.running,
        done: c.done,
        failed: c.failed,
        llm: state.hippo.llm().map(|l| l.model_id().to_owned()),
        next_before: more.then(|| jobs.last().map(|j| j.id)).flatten(),
        jobs: jobs.into_iter().map(JobView::from).collect(),
    }))
}

/// One background job: its state, attempts, last error, decided plan and
/// cost. A key bound to a user or agent sees its own scope's jobs only.
#[utoipa::path(get, path = "/v1/jobs/{id}", params(("id" = i64, Path, description = "Job id")),
    responses((status = 200, body = JobView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_job(state: Bound, Path(id): Path<String>) -> Result<Json<JobView>, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::invalid(format!("{id:?} is not a job id")))?;
    let hippo = state.hippo.clone();
    let not_found = || ApiError::from(Error::not_found(format!("job {id} not found")));
    let job = state
        .blocking(move || hippo.store().job(id))
        .await?
        .ok_or_else(not_found)?;
    // A key bound to a user or agent sees the jobs of its own scope only
    // (a plan holds memory text).
    match state.confine(Some(job.scope.clone())) {
        Ok(Some(own)) if own == job.scope => {}
        Ok(None) => {}
        _ => return Err(not_found()),
    }
    Ok(Json(job.into()))
}

/// The request's key: its access and what it is bound to.
#[utoipa::path(get, path = "/v1/whoami",
    responses((status = 200, body = WhoAmI), (status = 401, body = ErrorBody)))]
async fn whoami(state: Bound) -> Json<WhoAmI> {
    Json(WhoAmI {
        access: state.access.as_str().to_owned(),
        // The audit log's actor is `key:<id>`.
        key: state
            .actor
            .strip_prefix("key:")
            .unwrap_or(&state.actor)
            .to_owned(),
        tenant: state.tenant.to_string(),
        user_id: state.acts_for.user_id.clone(),
        agent_id: state.acts_for.agent_id.clone(),
    })
}

/// Liveness and the model in use.
#[utoipa::path(get, path = "/healthz", responses((status = 200, body = Health)))]
async fn healthz(State(state): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        model: state.model.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

/// Prometheus metrics (text format).
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let tenants = state.tenants.clone();
    // Counting jobs reads each store (one indexed query per tenant).
    let jobs = tokio::task::spawn_blocking(move || job_counts_of(&tenants))
        .await
        .ok()
        .flatten();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.encode(&llm_usage(&state.tenants), jobs),
    )
}

/// Jobs by state summed over the open tenants (`None` if a store fails).
fn job_counts_of(tenants: &Tenants) -> Option<hippo::jobs::JobCounts> {
    let mut sum = hippo::jobs::JobCounts::default();
    for (_, hippo) in tenants.open() {
        let c = hippo.store().job_counts().ok()?;
        sum.pending += c.pending;
        sum.running += c.running;
        sum.done += c.done;
        sum.failed += c.failed;
    }
    Some(sum)
}

/// LLM usage summed over the open tenants.
fn llm_usage(tenants: &Tenants) -> Vec<(&'static str, hippo::llm::LlmTotals)> {
    let mut sum: std::collections::BTreeMap<&'static str, hippo::llm::LlmTotals> =
        Default::default();
    for (_, h) in tenants.open() {
        for (op, t) in h.llm_usage() {
            let s = sum.entry(op).or_default();
            s.calls += t.calls;
            s.prompt_tokens += t.prompt_tokens;
            s.completion_tokens += t.completion_tokens;
            s.unusable += t.unusable;
        }
    }
    sum.into_iter().collect()
}

/// The access a request needs: reads (and search) need `read`; erasing
/// (a scope, or a memory with `hard=true`) and maintenance need `admin`;
/// other writes need `write`; metrics need `admin` (they span tenants).
pub fn required_access(method: &axum::http::Method, route: &str, query: Option<&str>) -> Access {
    use axum::http::Method;
    let hard = query.is_some_and(|q| {
        q.split('&')
            .any(|kv| kv.eq_ignore_ascii_case("hard=true") || kv == "hard=1")
    });
    match (method, route) {
        (_, "/metrics") => Access::Admin,
        (_, "/v1/audit" | "/v1/audit/verify" | "/v1/keys" | "/v1/keys/{id}")
        | (_, "/v1/stats" | "/v1/tenants") => Access::Admin,
        // MCP checks each tool against the route it stands for.
        (_, "/mcp") => Access::Read,
        (&Method::GET | &Method::HEAD, _) => Access::Read,
        (&Method::POST, "/v1/search") => Access::Read,
        (&Method::POST, "/mem0/v3/memories/search/" | "/mem0/v3/memories/") => Access::Read,
        (&Method::DELETE, "/mem0/v1/memories/") => Access::Admin,
        (&Method::DELETE, "/v1/memories") => Access::Admin,
        (&Method::DELETE, "/v1/memories/{id}") if hard => Access::Admin,
        (&Method::POST, "/v1/maintenance") => Access::Admin,
        (&Method::POST, "/v1/memories/{id}/approve") => Access::Admin,
        (&Method::POST, "/v1/rollback") => Access::Admin,
        _ => Access::Write,
    }
}

/// Binds a request to a tenant: with keys required, by its API key
/// (`Authorization: Bearer hk_…` or `X-API-Key`), refusing a missing or
/// invalid key (401) and too little access (403); without, to the default
/// tenant. `/healthz` and `/openapi.json` need no key.
async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("", |p| p.as_str())
        .to_owned();
    if route == "/healthz" || route == "/openapi.json" {
        return next.run(req).await;
    }
    // Keys become required the moment the first one is created, by this
    // process or another (the CLI while the server runs): asked of the
    // control database on every request until it is so.
    let required = match &state.control {
        None => Ok(false),
        Some(c) if c.keys_required_known() => Ok(true),
        Some(c) => {
            let c = c.clone();
            match tokio::task::spawn_blocking(move || c.keys_required()).await {
                Ok(r) => r,
                Err(e) => Err(anyhow::anyhow!("{e}")),
            }
        }
    };
    let required = match required {
        Ok(r) => r,
        Err(e) => {
            // Fail closed: without knowing, nothing is served.
            tracing::error!(error = %e, "reading the control database");
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the control database cannot be read; retry later",
            )
            .into_response();
        }
    };
    let (tenant, generation, actor, acts_for, access) = match &state.control {
        Some(control) if required => {
            let presented = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                // `Token` is how Mem0 clients send theirs.
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("Token "))
                })
                .or_else(|| req.headers().get("x-api-key").and_then(|v| v.to_str().ok()))
                .map(|k| k.trim().to_owned());
            let Some(presented) = presented else {
                return unauthorized(
                    &state,
                    "missing",
                    "an API key is required (Authorization: Bearer hk_…)",
                );
            };
            let control = control.clone();
            let now = Utc::now();
            let key =
                tokio::task::spawn_blocking(move || control.authenticate(&presented, now)).await;
            match key {
                Ok(Ok(crate::auth::Authenticated {
                    key,
                    tenant_generation,
                })) => {
                    let needed = required_access(req.method(), &route, req.uri().query());
                    if key.access < needed {
                        record_refusal(&state, "forbidden", Some(&key.id));
                        state
                            .metrics
                            .auth_failures
                            .get_or_create(&crate::metrics::AuthLabels {
                                reason: "forbidden".into(),
                            })
                            .inc();
                        tracing::warn!(key = key.id, tenant = key.tenant, %route, "access denied");
                        return ApiError::new(
                            StatusCode::FORBIDDEN,
                            "forbidden",
                            format!(
                                "this key has {} access; {} needs {}",
                                key.access.as_str(),
                                route,
                                needed.as_str()
                            ),
                        )
                        .into_response();
                    }
                    if let Err(wait) = state.rate_limiter.take(&key.id, Instant::now()) {
                        state
                            .metrics
                            .shed
                            .get_or_create(&ShedLabels {
                                reason: "rate_limited".into(),
                            })
                            .inc();
                        return retry_after(
                            StatusCode::TOO_MANY_REQUESTS,
                            "rate_limited",
                            "too many requests with this key; retry after the time given",
                            wait.as_secs_f64().ceil() as u64,
                        );
                    }
                    let actor = format!("key:{}", key.id);
                    (
                        key.tenant,
                        tenant_generation,
                        actor,
                        key.acts_for,
                        key.access,
                    )
                }
                Ok(Err(crate::auth::Refusal::Unavailable)) => {
                    return ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        crate::auth::Refusal::Unavailable.message(),
                    )
                    .into_response();
                }
                Ok(Err(refusal)) => {
                    return unauthorized(&state, refusal.reason(), refusal.message());
                }
                Err(_) => {
                    return ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        "internal error",
                    )
                    .into_response();
                }
            }
        }
        _ => (
            DEFAULT_TENANT.to_owned(),
            crate::tenants::DEFAULT_GENERATION,
            "local".to_owned(),
            crate::auth::ActsFor::default(),
            Access::Admin,
        ),
    };
    // Opening a store touches the disk; an open one is a map lookup.
    let open = state.tenants.get_open(&tenant, generation);
    let tenants = state.tenants.clone();
    let t = tenant.clone();
    let hippo = match open {
        Some(h) => Ok(Ok(h)),
        None => tokio::task::spawn_blocking(move || tenants.get(&t, generation)).await,
    };
    let hippo = match hippo {
        Ok(Ok(h)) => h,
        other => {
            if let Ok(Err(e)) = other {
                tracing::error!(tenant, error = %e, "opening a tenant store");
            }
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the tenant's store cannot be opened",
            )
            .into_response();
        }
    };
    let deadline = req.extensions().get::<Deadline>().map(|d| d.0);
    req.extensions_mut().insert(Bound {
        hippo,
        tenant: tenant.into(),
        actor: actor.into(),
        metrics: state.metrics.clone(),
        context: state.context,
        acts_for,
        access,
        request: None,
        deadline,
    });
    next.run(req).await
}

/// Most refused requests written to the audit log per second; beyond it a
/// flood is only counted (in metrics, and as `suppressed` on the next entry)
/// so that bad keys cannot make the server write without bound.
const REFUSALS_AUDITED_PER_SEC: u64 = 10;

/// Records a refused request in the control plane's audit log, off the
/// request path.
fn record_refusal(state: &AppState, reason: &str, key: Option<&str>) {
    static GATE: std::sync::Mutex<(u64, u64, u64)> = std::sync::Mutex::new((0, 0, 0));
    let Some(control) = state.control.clone() else {
        return;
    };
    let suppressed = {
        let mut g = GATE.lock().unwrap_or_else(|e| e.into_inner());
        let second = Utc::now().timestamp() as u64;
        if g.0 != second {
            *g = (second, 0, g.2);
        }
        if g.1 >= REFUSALS_AUDITED_PER_SEC {
            g.2 += 1;
            return;
        }
        g.1 += 1;
        std::mem::take(&mut g.2)
    };
    let reason = reason.to_owned();
    let actor = key.map_or("anonymous".to_owned(), |k| format!("key:{k}"));
    tokio::task::spawn_blocking(move || {
        hippo::audit::as_actor(&actor, || {
            let detail = serde_json::json!({"reason": reason, "suppressed_before": suppressed});
            if let Err(e) = control.audit("auth_failure", "", detail) {
                tracing::warn!(error = %e, "auditing a refused request");
            }
        })
    });
}

fn unauthorized(state: &AppState, reason: &str, message: &str) -> Response {
    record_refusal(state, reason, None);
    state
        .metrics
        .auth_failures
        .get_or_create(&crate::metrics::AuthLabels {
            reason: reason.into(),
        })
        .inc();
    tracing::warn!(reason, "authentication failed");
    let mut resp = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer"),
    );
    resp
}

/// Adds to every operation the error answers any request may get from the
/// guards in front of the handlers (authentication, access, body size,
/// rate limit, overload), and the API key security scheme.
struct CommonErrors;

impl utoipa::Modify for CommonErrors {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::content::ContentBuilder;
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        use utoipa::openapi::{Ref, RefOr, ResponseBuilder};
        const ERRORS: [(&str, &str); 6] = [
            ("400", "Invalid input: the message says what"),
            ("401", "An API key is required, and was missing, unknown, revoked or expired"),
            ("403", "The key may not do this, or not for this user or agent; or a foreign Host/Origin"),
            ("413", "The request body is too large"),
            ("429", "Too many requests with this key: retry after `Retry-After` seconds"),
            ("503", "Overloaded, past the deadline, or storage unavailable: nothing changed, retry later"),
        ];
        for item in doc.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                for (code, what) in ERRORS {
                    op.responses
                        .responses
                        .entry(code.into())
                        .or_insert_with(|| {
                            RefOr::T(
                                ResponseBuilder::new()
                                    .description(what)
                                    .content(
                                        "application/json",
                                        ContentBuilder::new()
                                            .schema(Some(Ref::from_schema_name("ErrorBody")))
                                            .build(),
                                    )
                                    .build(),
                            )
                        });
                }
            }
        }
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "hk_… key from `hippo key create` (or the X-API-Key header)",
                    ))
                    .build(),
            ),
        );
    }
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_parts_drop_ports_brackets_and_case() {
        assert_eq!(host_part("LocalHost:8080"), "localhost");
        assert_eq!(host_part("127.0.0.1"), "127.0.0.1");
        assert_eq!(host_part("[::1]:80"), "::1");
        assert_eq!(host_part("evil.example:80"), "evil.example");
        assert_eq!(host_part("user@127.0.0.1:1"), "127.0.0.1");
    }

    #[test]
    fn erasing_and_maintenance_need_admin_reads_need_read() {
        use axum::http::Method;
        let a = |m: Method, r: &str, q: Option<&str>| required_access(&m, r, q);
        assert_eq!(a(Method::GET, "/v1/memories/{id}", None), Access::Read);
        assert_eq!(a(Method::POST, "/v1/search", None), Access::Read);
        assert_eq!(a(Method::POST, "/v1/memories", None), Access::Write);
        assert_eq!(a(Method::DELETE, "/v1/memories/{id}", None), Access::Write);
        assert_eq!(
            a(
                Method::DELETE,
                "/v1/memories/{id}",
                Some("user_id=a&hard=true")
            ),
            Access::Admin
        );
        assert_eq!(
            a(Method::DELETE, "/v1/memories", Some("user_id=a")),
            Access::Admin
        );
        assert_eq!(a(Method::POST, "/v1/maintenance", None), Access::Admin);
        assert_eq!(a(Method::GET, "/metrics", None), Access::Admin);
    }
}

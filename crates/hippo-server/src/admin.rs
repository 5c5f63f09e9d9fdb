//! A tenant admin's routes: its audit log (with the chain's verification),
//! its API keys (list, create, revoke) and its store's statistics. Each
//! route needs a tenant-wide admin key: a key bound to a user or agent
//! cannot read the whole tenant's log nor make a key wider than itself.
//! Keys are those of the request's tenant only; a key's secret is shown
//! once, in the answer that creates it.
//!
//! The server's *operator* is a tenant-wide admin key of the `default`
//! tenant (or anyone on loopback while the server runs without keys): it
//! also lists and creates tenants and manages the keys of any tenant (so a
//! new tenant gets its first admin key). Erasing a tenant stays with the CLI
//! on the server's machine (`hippo tenant erase`): it deletes a whole store.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::ErrorBody;
use crate::auth::{Access, ActsFor, Control, KeyInfo, NewKey, DEFAULT_TENANT};
use crate::server::{ApiError, ApiJson, ApiQuery, AppState, Bound};

/// Paging of the audit log.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// Entries after this position (default 0: from the first).
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// Most entries (1..=1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// One entry of the audit log: who did what to which memory (or scope),
/// never the memory's text.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditEntryView {
    /// Position, from 1, without gaps.
    pub seq: i64,
    /// When.
    pub at: chrono::DateTime<Utc>,
    /// Who: `key:<id>`, `job:<id>`, `local`.
    pub actor: String,
    /// What: `add`, an event kind (`revised`, `deleted`, …), `erase`, `reject`, …
    pub action: String,
    /// The memory id or scope concerned.
    pub target: String,
    /// Non-content facts (kind, scope, origin, request id).
    #[schema(value_type = Object)]
    pub detail: serde_json::Map<String, serde_json::Value>,
    /// The previous entry's hash.
    pub prev_hash: String,
    /// This entry's hash.
    pub hash: String,
}

/// A page of the audit log.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    /// The entries, in order.
    pub entries: Vec<AuditEntryView>,
    /// Pass as `after` for the next page; absent on the last.
    pub next_after: Option<i64>,
}

/// Whether the audit chain is intact.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditVerification {
    /// Entries read.
    pub entries: u64,
    /// True when every entry links to the one before and the head kept
    /// apart matches the last.
    pub ok: bool,
    /// The first entry found wrong (or where one is missing).
    pub first_bad: Option<i64>,
    /// What is wrong.
    pub problem: Option<String>,
}

/// An API key as stored: never its secret.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeyView {
    /// Public id (the part after `hk_`).
    pub id: String,
    /// `read`, `write` or `admin`.
    pub access: String,
    /// A label for people.
    pub name: Option<String>,
    /// When created.
    pub created_at: chrono::DateTime<Utc>,
    /// Not valid from this time on.
    pub expires_at: Option<chrono::DateTime<Utc>>,
    /// Revoked at this time.
    pub revoked_at: Option<chrono::DateTime<Utc>>,
    /// The user the key acts for, if bound to one.
    pub user_id: Option<String>,
    /// The agent the key acts for, if bound to one.
    pub agent_id: Option<String>,
}

impl From<KeyInfo> for KeyView {
    fn from(k: KeyInfo) -> Self {
        KeyView {
            id: k.id,
            access: k.access.as_str().to_owned(),
            name: k.name,
            created_at: k.created_at,
            expires_at: k.expires_at,
            revoked_at: k.revoked_at,
            user_id: k.acts_for.user_id,
            agent_id: k.acts_for.agent_id,
        }
    }
}

/// The keys of the request's tenant.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeyList {
    /// Oldest first, revoked ones included.
    pub keys: Vec<KeyView>,
}

/// A key to create in the request's tenant.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKeyBody {
    /// `read`, `write` or `admin`.
    pub access: String,
    /// A label for people.
    #[serde(default)]
    pub name: Option<String>,
    /// Bind the key to this user: its requests see that user's memories only.
    #[serde(default)]
    pub user_id: Option<String>,
    /// Bind the key to this agent.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// Valid for this many days (1..=3650); without it, until revoked.
    #[serde(default)]
    pub expires_in_days: Option<u32>,
    /// The tenant it opens (operator only; default: the request's).
    #[serde(default)]
    pub tenant: Option<String>,
}

/// Which tenant's keys `GET /v1/keys` lists.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct KeysParams {
    /// Another tenant (operator only; default: the request's).
    pub tenant: Option<String>,
}

/// One tenant.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TenantView {
    /// Its id.
    pub id: String,
    /// Its keys not revoked.
    pub active_keys: u64,
}

/// The server's tenants.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TenantList {
    /// `default` first.
    pub tenants: Vec<TenantView>,
}

/// A tenant to create.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTenantBody {
    /// Its id: letters, digits, `-`, `_` (see `hippo tenant create`).
    pub id: String,
}

/// A created key, with its text: shown this once, only its hash is kept.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedKey {
    /// The key as stored.
    pub key: KeyView,
    /// The key text (`hk_<id>_<secret>`) to give the client.
    pub secret: String,
}

fn forbidden(message: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message.to_owned())
}

/// Refuses a key bound to a user or agent: these routes see the whole tenant.
fn tenant_wide(state: &Bound) -> Result<(), ApiError> {
    if state.acts_for.is_bound() {
        return Err(forbidden(
            "a key bound to a user or agent cannot manage the tenant; use a tenant-wide admin key",
        ));
    }
    Ok(())
}

/// Whether the request's key is the server's operator (see the module docs).
fn is_operator(state: &Bound) -> bool {
    state.access >= Access::Admin && !state.acts_for.is_bound() && &*state.tenant == DEFAULT_TENANT
}

/// The tenant a key route works on: the request's, or for the operator the
/// one it names.
fn target_tenant(state: &Bound, asked: Option<String>) -> Result<Arc<str>, ApiError> {
    match asked {
        Some(t) if *t != *state.tenant => {
            if !is_operator(state) {
                return Err(forbidden(
                    "only the operator (an admin key of the default tenant) manages other tenants' keys",
                ));
            }
            Ok(t.into())
        }
        _ => Ok(state.tenant.clone()),
    }
}

fn control(app: &AppState) -> Result<Arc<Control>, ApiError> {
    app.control.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "this server keeps no API keys (it runs in-process, without a control database)",
        )
    })
}

/// Runs a control-database call on the blocking pool as the request's key.
async fn on_control<T: Send + 'static>(
    state: &Bound,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    let actor = state.actor.clone();
    match tokio::task::spawn_blocking(move || hippo::audit::as_actor(&actor, f)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "control database");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the key store cannot be read or written now",
            ))
        }
        Err(_) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )),
    }
}

/// A tenant's store in numbers.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StatsView {
    /// Memories, every version and status.
    pub memories: u64,
    /// Memories by kind.
    pub by_kind: std::collections::BTreeMap<String, u64>,
    /// Vectors by embedding model (the active one is searched).
    pub vectors_by_model: std::collections::BTreeMap<String, u64>,
    /// Entries in the keyword index.
    pub keyword_entries: u64,
    /// Distinct users.
    pub users: u64,
    /// Bytes on disk (SQLite: the database file and its WAL; absent on Postgres).
    pub disk_bytes: Option<u64>,
    /// Background jobs per state.
    pub jobs: std::collections::BTreeMap<String, u64>,
}

/// The tenant's store in numbers: memories by kind, vectors by model,
/// keyword entries, users, bytes on disk, jobs (admin, tenant-wide key).
#[utoipa::path(get, path = "/v1/stats",
    responses((status = 200, body = StatsView), (status = 403, body = ErrorBody)))]
pub(crate) async fn stats(state: Bound) -> Result<Json<StatsView>, ApiError> {
    tenant_wide(&state)?;
    let hippo = state.hippo.clone();
    let (s, jobs) = state
        .blocking(move || Ok((hippo.stats()?, hippo.store().job_counts()?)))
        .await?;
    Ok(Json(StatsView {
        memories: s.memories,
        by_kind: s.by_kind,
        vectors_by_model: s.vectors_by_model,
        keyword_entries: s.keyword_entries,
        users: s.users,
        disk_bytes: s.disk_bytes,
        jobs: [
            ("pending", jobs.pending),
            ("running", jobs.running),
            ("done", jobs.done),
            ("failed", jobs.failed),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
    }))
}

/// The tenant's audit log, oldest first: every write, change, delete and
/// erase, hash-chained (admin, tenant-wide key).
#[utoipa::path(get, path = "/v1/audit", params(AuditParams),
    responses((status = 200, body = AuditPage), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn audit_log(
    state: Bound,
    ApiQuery(p): ApiQuery<AuditParams>,
) -> Result<Json<AuditPage>, ApiError> {
    tenant_wide(&state)?;
    let after = p.after.unwrap_or(0);
    let limit = p.limit.unwrap_or(100);
    if after < 0 || !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("after must be ≥ 0 and limit 1..=1000"));
    }
    let hippo = state.hippo.clone();
    // One more than asked says whether there is a next page.
    let mut entries = state
        .blocking(move || hippo.store().audit(after, limit + 1))
        .await?;
    let more = entries.len() > limit;
    entries.truncate(limit);
    Ok(Json(AuditPage {
        next_after: more.then(|| entries.last().map(|e| e.seq)).flatten(),
        entries: entries
            .into_iter()
            .map(|e| AuditEntryView {
                seq: e.seq,
                at: e.at,
                actor: e.actor,
                action: e.action,
                target: e.target,
                detail: e.detail,
                prev_hash: e.prev_hash,
                hash: e.hash,
            })
            .collect(),
    }))
}

/// Verifies the tenant's audit chain: each entry's hash, its link to the
/// one before, and the head kept apart (admin, tenant-wide key).
#[utoipa::path(get, path = "/v1/audit/verify",
    responses((status = 200, body = AuditVerification), (status = 403, body = ErrorBody)))]
pub(crate) async fn verify_audit(state: Bound) -> Result<Json<AuditVerification>, ApiError> {
    tenant_wide(&state)?;
    let hippo = state.hippo.clone();
    let check = state.blocking(move || hippo.store().verify_audit()).await?;
    Ok(Json(AuditVerification {
        entries: check.entries,
        ok: check.ok,
        first_bad: check.first_bad,
        problem: check.problem,
    }))
}

/// The API keys of the request's tenant, revoked ones included; never a
/// secret (admin, tenant-wide key).
#[utoipa::path(get, path = "/v1/keys", params(KeysParams),
    responses((status = 200, body = KeyList), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn list_keys(
    State(app): State<AppState>,
    state: Bound,
    ApiQuery(p): ApiQuery<KeysParams>,
) -> Result<Json<KeyList>, ApiError> {
    tenant_wide(&state)?;
    let control = control(&app)?;
    let tenant = target_tenant(&state, p.tenant)?;
    let keys = on_control(&state, move || control.keys(Some(&tenant))).await?;
    Ok(Json(KeyList {
        keys: keys.into_iter().map(KeyView::from).collect(),
    }))
}

/// Creates a key in the request's tenant; its text is in this answer only
/// (admin, tenant-wide key). On a server running without keys, the first
/// key makes every later request need one.
#[utoipa::path(post, path = "/v1/keys", request_body = NewKeyBody,
    responses((status = 200, body = CreatedKey), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn create_key(
    State(app): State<AppState>,
    state: Bound,
    ApiJson(body): ApiJson<NewKeyBody>,
) -> Result<Json<CreatedKey>, ApiError> {
    tenant_wide(&state)?;
    let control = control(&app)?;
    let access = Access::parse(&body.access).map_err(|e| ApiError::invalid(e.to_string()))?;
    let expires_at = match body.expires_in_days {
        None => None,
        Some(d @ 1..=3650) => Some(Utc::now() + chrono::Duration::days(i64::from(d))),
        Some(_) => return Err(ApiError::invalid("expires_in_days must be 1..=3650")),
    };
    let acts_for = ActsFor {
        user_id: body.user_id,
        agent_id: body.agent_id,
    };
    if acts_for.is_bound() {
        hippo::Scope {
            user_id: acts_for.user_id.clone(),
            agent_id: acts_for.agent_id.clone(),
            session_id: None,
        }
        .validate()
        .map_err(ApiError::from)?;
    }
    if body.name.as_ref().is_some_and(|n| n.chars().count() > 200) {
        return Err(ApiError::invalid("name must be at most 200 characters"));
    }
    let tenant = target_tenant(&state, body.tenant)?;
    let new = NewKey {
        tenant: tenant.to_string(),
        access,
        name: body.name,
        expires_at,
        acts_for,
    };
    let (info, secret) = on_control(&state, move || {
        if !control.tenant_exists(&new.tenant)? {
            return Ok(None);
        }
        control.create_key(new, Utc::now()).map(Some)
    })
    .await?
    .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such tenant"))?;
    Ok(Json(CreatedKey {
        key: info.into(),
        secret,
    }))
}

/// Revokes a key of the request's tenant at once (admin, tenant-wide key).
/// Revoking twice keeps the first time.
#[utoipa::path(delete, path = "/v1/keys/{id}", params(("id" = String, Path, description = "Key id")),
    responses((status = 200, body = KeyView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn revoke_key(
    State(app): State<AppState>,
    state: Bound,
    Path(id): Path<String>,
) -> Result<Json<KeyView>, ApiError> {
    tenant_wide(&state)?;
    let control = control(&app)?;
    // The operator revokes any tenant's keys; others only their own.
    let tenant = (!is_operator(&state)).then(|| state.tenant.clone());
    let revoked = on_control(&state, move || {
        // Another tenant's key is as absent as a key that never existed.
        if !control.keys(tenant.as_deref())?.iter().any(|k| k.id == id) {
            return Ok(None);
        }
        control.revoke(&id, Utc::now())?;
        Ok(control.keys(None)?.into_iter().find(|k| k.id == id))
    })
    .await?;
    revoked.map(|k| Json(k.into())).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such key in this tenant",
        )
    })
}

/// The server's tenants with their active keys (operator only).
#[utoipa::path(get, path = "/v1/tenants",
    responses((status = 200, body = TenantList), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn list_tenants(
    State(app): State<AppState>,
    state: Bound,
) -> Result<Json<TenantList>, ApiError> {
    operator(&state)?;
    let control = control(&app)?;
    let tenants = on_control(&state, move || {
        let keys = control.keys(None)?;
        Ok(control
            .tenants()?
            .into_iter()
            .map(|id| TenantView {
                active_keys: keys
                    .iter()
                    .filter(|k| k.tenant == id && k.revoked_at.is_none())
                    .count() as u64,
                id,
            })
            .collect())
    })
    .await?;
    Ok(Json(TenantList { tenants }))
}

/// Creates a tenant (operator only): its store is made on first use; give
/// it a key with `POST /v1/keys` and `tenant`.
#[utoipa::path(post, path = "/v1/tenants", request_body = NewTenantBody,
    responses((status = 200, body = TenantView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn create_tenant(
    State(app): State<AppState>,
    state: Bound,
    ApiJson(body): ApiJson<NewTenantBody>,
) -> Result<Json<TenantView>, ApiError> {
    operator(&state)?;
    let control = control(&app)?;
    crate::auth::validate_tenant(&body.id).map_err(|e| ApiError::invalid(e.to_string()))?;
    let id = body.id.clone();
    let created = on_control(&state, move || {
        if control.tenant_exists(&id)? {
            return Ok(false);
        }
        control.create_tenant(&id, Utc::now())?;
        Ok(true)
    })
    .await?;
    if !created {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("tenant {:?} exists already", body.id),
        ));
    }
    Ok(Json(TenantView {
        id: body.id,
        active_keys: 0,
    }))
}

fn operator(state: &Bound) -> Result<(), ApiError> {
    if !is_operator(state) {
        return Err(forbidden(
            "only the operator (a tenant-wide admin key of the default tenant) manages tenants",
        ));
    }
    Ok(())
}

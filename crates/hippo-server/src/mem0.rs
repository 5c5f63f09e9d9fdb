//! Mem0-compatible REST endpoints under `/mem0`, so that code written for
//! the `mem0ai` Python package's `MemoryClient` works against Hippo by
//! changing its host: `MemoryClient(host="http://127.0.0.1:8080/mem0",
//! api_key=<a hippo key>)`.
//!
//! Each route translates the Mem0 request into the Hippo REST request and
//! runs the Hippo handler (same authentication, scope confinement, audit
//! and validation), then shapes the answer the way the Mem0 client reads
//! it. What maps and what does not is listed in README ("Mem0
//! compatibility"); options that have no Hippo meaning are accepted and
//! ignored only where the client sends them by default, anything else is
//! refused with 400.

use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::api::{HistoryView, MemoryView};
use crate::server::{self, rest, ApiError, ApiJson, ApiQuery, AppState, Bound};

/// The routes, relative to `/mem0`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/ping/", get(ping))
        .route("/v3/memories/add/", post(add))
        .route("/v3/memories/", post(get_all))
        .route("/v3/memories/search/", post(search))
        .route(
            "/v1/memories/{id}/",
            get(get_one).put(update).delete(delete_one),
        )
        .route("/v1/memories/", axum::routing::delete(delete_all))
        .route("/v1/memories/{id}/history/", get(history))
}

/// The OpenAPI document of these routes (nested under `/mem0` in
/// [`server::ApiDoc`]).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(ping, add, get_all, search, get_one, update, delete_one, delete_all, history),
    components(schemas(AddBody, SearchBody, ListBody, UpdateBody, Mem0ErrorBody)),
    tags((name = "mem0", description = "Mem0-compatible routes for `mem0ai`'s `MemoryClient`"))
)]
pub struct Mem0Doc;

/// An error as Mem0 clients read it: `detail`, and Hippo's `error`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Mem0ErrorBody)]
pub struct Mem0ErrorBody {
    /// What is wrong (Mem0 clients read this). Absent when the request was
    /// refused before its route read it (a body or query that does not
    /// parse): then `error` alone, as on every Hippo route.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Hippo's error code and message.
    pub error: crate::api::ErrorDetail,
}

/// An error as Mem0 clients read it (`detail`), with Hippo's code too.
#[derive(Debug)]
pub struct Mem0Error(ApiError);

impl From<ApiError> for Mem0Error {
    fn from(e: ApiError) -> Self {
        Mem0Error(e)
    }
}

impl IntoResponse for Mem0Error {
    fn into_response(self) -> Response {
        let (status, code, message) = self.0.parts();
        (
            status,
            Json(json!({ "detail": message, "error": { "code": code, "message": message } })),
        )
            .into_response()
    }
}

type Answer = Result<Json<Value>, Mem0Error>;

/// A JSON body whose rejections are Mem0-shaped errors (as every answer of
/// these routes is).
struct Mem0Json<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for Mem0Json<T> {
    type Rejection = Mem0Error;
    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Mem0Error> {
        Ok(Mem0Json(ApiJson::<T>::from_request(req, state).await?.0))
    }
}

/// A query string whose rejections are Mem0-shaped errors.
struct Mem0Query<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S>
    for Mem0Query<T>
{
    type Rejection = Mem0Error;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Mem0Error> {
        Ok(Mem0Query(
            ApiQuery::<T>::from_request_parts(parts, state).await?.0,
        ))
    }
}

/// The kinds Mem0 clients see: what was written and what an LLM extracted
/// from it. Hippo's digests (session summaries, entity timelines,
/// profiles) are derived views that Mem0 has no place for.
const MEM0_KINDS: [&str; 5] = ["message", "document", "chunk", "fact", "procedure"];

fn invalid(message: impl Into<String>) -> Mem0Error {
    Mem0Error(ApiError::invalid(message))
}

/// A memory the way Mem0 returns one.
fn memory(m: &MemoryView) -> Value {
    json!({
        "id": m.id,
        "memory": m.memory,
        "user_id": m.user_id,
        "agent_id": m.agent_id,
        "run_id": m.session_id,
        "metadata": m.metadata,
        "categories": [],
        "created_at": m.recorded_at,
        "updated_at": m.updated_at,
        "expiration_date": m.expires_at.map(|t| t.date_naive().to_string()),
        // Hippo's own fields, for clients that want them.
        "kind": m.kind,
        "event_time": m.event_time,
        "status": m.status,
    })
}

/// Who a request is about: Mem0 sends `user_id`/`agent_id`/`run_id`
/// (`app_id` has no Hippo meaning) at the top level or inside `filters`,
/// where `AND` lists of them are allowed. Also returns the metadata
/// equalities found in `filters`.
#[derive(Debug, Default, PartialEq)]
struct Owner {
    user_id: Option<String>,
    agent_id: Option<String>,
    session_id: Option<String>,
    metadata: Map<String, Value>,
}

impl Owner {
    fn set(&mut self, key: &str, value: &Value) -> Result<(), Mem0Error> {
        let slot = match key {
            "user_id" => &mut self.user_id,
            "agent_id" => &mut self.agent_id,
            "run_id" | "session_id" => &mut self.session_id,
            "app_id" => {
                return Err(invalid(
                    "app_id has no equivalent in Hippo: use user_id, agent_id or run_id",
                ))
            }
            "metadata" => {
                let Some(m) = value.as_object() else {
                    return Err(invalid("filters.metadata must be an object"));
                };
                self.metadata.extend(m.clone());
                return Ok(());
            }
            other => {
                return Err(invalid(format!(
                    "filter {other:?} is not supported (Hippo maps user_id, agent_id, run_id, \
                     metadata and AND of them)"
                )))
            }
        };
        let Some(v) = value.as_str() else {
            return Err(invalid(format!("{key} must be a string")));
        };
        if slot.as_deref().is_some_and(|s| s != v) {
            return Err(invalid(format!(
                "{key} is given twice with different values"
            )));
        }
        *slot = Some(v.to_owned());
        Ok(())
    }

    /// Reads a Mem0 `filters` object.
    fn read_filters(&mut self, filters: &Value) -> Result<(), Mem0Error> {
        let Some(f) = filters.as_object() else {
            return Err(invalid("filters must be an object"));
        };
        for (k, v) in f {
            match k.as_str() {
                "AND" => {
                    let Some(parts) = v.as_array() else {
                        return Err(invalid("filters.AND must be a list"));
                    };
                    for p in parts {
                        self.read_filters(p)?;
                    }
                }
                "OR" | "NOT" => {
                    return Err(invalid(format!("filters.{k} is not supported by Hippo")))
                }
                _ => self.set(k, v)?,
            }
        }
        Ok(())
    }

    /// The owner a request names by `user_id`, `agent_id`, `run_id` (top
    /// level) and in `filters`.
    fn of(top: [&Option<String>; 3], filters: Option<&Value>) -> Result<Self, Mem0Error> {
        let mut owner = Owner::default();
        for (key, value) in ["user_id", "agent_id", "run_id"].into_iter().zip(top) {
            if let Some(v) = value {
                owner.set(key, &Value::String(v.clone()))?;
            }
        }
        if let Some(f) = filters {
            owner.read_filters(f)?;
        }
        Ok(owner)
    }

    fn scope_json(&self) -> Value {
        json!({
            "user_id": self.user_id,
            "agent_id": self.agent_id,
            "session_id": self.session_id,
        })
    }
}

/// `GET /v1/ping/`: the client checks its key with it (authentication has
/// run), and wants an organisation and project to exist (they have no
/// Hippo meaning: the key's tenant is the whole store).
#[utoipa::path(get, path = "/v1/ping/", tag = "mem0", operation_id = "mem0_ping",
    responses((status = 200, description = "The key works", body = serde_json::Value)))]
async fn ping(_bound: Bound) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "message": "hippo",
        "org_id": "hippo",
        "project_id": "hippo",
        "user_email": null,
    }))
}

/// The body of `POST /v3/memories/add/`: `messages` is a list of
/// `{role, content}` turns or a string; at least one of `user_id`,
/// `agent_id`, `run_id` (or the same in `filters`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = Mem0AddBody)]
#[serde(deny_unknown_fields)]
// Some fields are read only to accept them (Mem0 options Hippo ignores).
#[allow(dead_code)]
struct AddBody {
    messages: Value,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    agent_id: Option<String>,
    #[serde(default)]
    run_id: Option<String>,
    #[serde(default)]
    filters: Option<Value>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    metadata: Option<Map<String, Value>>,
    #[serde(default)]
    infer: Option<bool>,
    /// Unix seconds.
    #[serde(default)]
    timestamp: Option<i64>,
    /// `YYYY-MM-DD`.
    #[serde(default)]
    expiration_date: Option<String>,
    // Mem0 platform options with no Hippo meaning: accepted, ignored.
    #[serde(default)]
    custom_categories: Option<Value>,
    #[serde(default)]
    custom_instructions: Option<Value>,
    #[serde(default)]
    agent_custom_instructions: Option<Value>,
    #[serde(default)]
    structured_data_schema: Option<Value>,
    #[serde(default)]
    version: Option<Value>,
    #[serde(default)]
    output_format: Option<Value>,
    #[serde(default)]
    async_mode: Option<Value>,
}

/// Midnight UTC of a Mem0 `YYYY-MM-DD` expiration date.
fn expiration(date: &str) -> Result<DateTime<Utc>, Mem0Error> {
    let d = NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .map_err(|_| invalid(format!("expiration_date must be YYYY-MM-DD, not {date:?}")))?;
    Ok(Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default()))
}

fn unix_time(secs: i64) -> Result<DateTime<Utc>, Mem0Error> {
    DateTime::from_timestamp(secs, 0)
        .ok_or_else(|| invalid(format!("timestamp {secs} is out of range")))
}

#[utoipa::path(post, path = "/v3/memories/add/", tag = "mem0", operation_id = "mem0_add",
    request_body = AddBody,
    responses((status = 200, description = "`{results: [memory with event]}`", body = serde_json::Value),
        (status = 400, body = Mem0ErrorBody)))]
async fn add(bound: Bound, Mem0Json(body): Mem0Json<AddBody>) -> Answer {
    let owner = Owner::of(
        [&body.user_id, &body.agent_id, &body.run_id],
        body.filters.as_ref(),
    )?;
    let messages = match body.messages {
        Value::String(s) => json!([{ "role": "user", "content": s }]),
        Value::Object(m) => Value::Array(vec![Value::Object(m)]),
        Value::Array(a) => Value::Array(a),
        _ => {
            return Err(invalid(
                "messages must be a string, a message or a list of messages",
            ))
        }
    };
    let mut item = owner.scope_json();
    item["messages"] = messages;
    item["metadata"] = json!(body.metadata);
    // Mem0 infers (extracts facts) unless told not to; so does Hippo
    // when an LLM is configured (turns are stored verbatim either way).
    item["infer"] = json!(body.infer.unwrap_or(true));
    if let Some(t) = body.timestamp {
        item["event_time"] = json!(unix_time(t)?);
    }
    if let Some(d) = &body.expiration_date {
        item["expires_at"] = json!(expiration(d)?);
    }
    let resp = server::add_memory(bound, ApiJson(rest(item)?)).await?.0;
    let results: Vec<Value> = resp
        .results
        .iter()
        .map(|m| {
            let mut v = memory(m);
            v["event"] = json!("ADD");
            v
        })
        .collect();
    Ok(Json(json!({ "results": results })))
}

/// The body of `POST /v3/memories/search/`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = Mem0SearchBody)]
#[serde(deny_unknown_fields)]
// Some fields are read only to accept them (Mem0 options Hippo ignores).
#[allow(dead_code)]
struct SearchBody {
    query: String,
    #[serde(default)]
    filters: Option<Value>,
    #[serde(default)]
    top_k: Option<usize>,
    /// Results whose score (Hippo's calibrated `relevance`, 0..=1) is below
    /// this are left out.
    #[serde(default)]
    threshold: Option<f32>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    agent_id: Option<String>,
    #[serde(default)]
    run_id: Option<String>,
    // Accepted, ignored: Hippo always reranks, has no categories, returns
    // every field and searches keywords and vectors together.
    #[serde(default)]
    rerank: Option<Value>,
    #[serde(default)]
    fields: Option<Value>,
    #[serde(default)]
    keyword_search: Option<Value>,
    #[serde(default)]
    latest_only: Option<Value>,
    #[serde(default)]
    version: Option<Value>,
    #[serde(default)]
    output_format: Option<Value>,
}

#[utoipa::path(post, path = "/v3/memories/search/", tag = "mem0", operation_id = "mem0_search",
    request_body = SearchBody,
    responses((status = 200, description = "`{results: [memory with score]}`", body = serde_json::Value),
        (status = 400, body = Mem0ErrorBody)))]
async fn search(bound: Bound, Mem0Json(body): Mem0Json<SearchBody>) -> Answer {
    let owner = Owner::of(
        [&body.user_id, &body.agent_id, &body.run_id],
        body.filters.as_ref(),
    )?;
    let mut req = owner.scope_json();
    req["query"] = json!(body.query);
    req["top_k"] = json!(body.top_k.unwrap_or(10));
    // Mem0 results are single memories, not conversation excerpts.
    req["context_turns"] = json!(0);
    req["filters"] = json!({ "kind": MEM0_KINDS });
    if let Some(t) = body.threshold {
        req["min_relevance"] = json!(t);
    }
    if !owner.metadata.is_empty() {
        req["filters"]["metadata"] = json!(owner.metadata);
    }
    let resp = server::search(bound, ApiJson(rest(req)?)).await?.0;
    let results: Vec<Value> = resp
        .results
        .iter()
        .map(|r| {
            let mut v = memory(&r.memory);
            // Mem0 clients compare scores across queries (`threshold`):
            // the calibrated relevance is the score that means that.
            v["score"] = json!(r.relevance);
            v
        })
        .collect();
    Ok(Json(json!({ "results": results })))
}

/// The body of `POST /v3/memories/` (list).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[schema(as = Mem0ListBody)]
#[serde(deny_unknown_fields)]
// Some fields are read only to accept them (Mem0 options Hippo ignores).
#[allow(dead_code)]
struct ListBody {
    #[serde(default)]
    filters: Option<Value>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    agent_id: Option<String>,
    #[serde(default)]
    run_id: Option<String>,
    #[serde(default)]
    latest_only: Option<Value>,
    #[serde(default)]
    version: Option<Value>,
    #[serde(default)]
    output_format: Option<Value>,
}

/// Page parameters of a list.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct PageParams {
    /// Page number, from 1.
    page: Option<usize>,
    /// Memories per page (1..=1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    page_size: Option<usize>,
}

/// Most memories one list request walks to count and page.
const MAX_LISTED: usize = 100_000;

#[utoipa::path(post, path = "/v3/memories/", tag = "mem0", operation_id = "mem0_get_all",
    params(PageParams), request_body = ListBody,
    responses((status = 200, description = "`{count, next, previous, results}`", body = serde_json::Value),
        (status = 400, body = Mem0ErrorBody)))]
async fn get_all(
    bound: Bound,
    Mem0Query(page): Mem0Query<PageParams>,
    Mem0Json(body): Mem0Json<ListBody>,
) -> Answer {
    let owner = Owner::of(
        [&body.user_id, &body.agent_id, &body.run_id],
        body.filters.as_ref(),
    )?;
    if !owner.metadata.is_empty() {
        return Err(invalid("listing by metadata is not supported; use search"));
    }
    let page_no = page.page.unwrap_or(1).max(1);
    let size = page.page_size.unwrap_or(100);
    if !(1..=1000).contains(&size) {
        return Err(invalid("page_size must be 1..=1000"));
    }
    // Walk the listing (newest first) to count it and cut the page.
    // Saturating: a page beyond any count is empty, not an overflow.
    let skip = (page_no - 1).saturating_mul(size);
    let mut out = Vec::new();
    let mut count = 0usize;
    let mut cursor: Option<String> = None;
    loop {
        let mut q = owner.scope_json();
        q["limit"] = json!(1000);
        q["order"] = json!("desc");
        q["cursor"] = json!(cursor);
        let listing = server::list_memories(bound.clone(), ApiQuery(rest(strip_nulls(q))?))
            .await?
            .0;
        for m in listing
            .results
            .iter()
            .filter(|m| MEM0_KINDS.contains(&m.kind.as_str()))
        {
            if count >= skip && out.len() < size {
                out.push(memory(m));
            }
            count += 1;
        }
        cursor = listing.next_cursor;
        if cursor.is_none() || count >= MAX_LISTED {
            break;
        }
    }
    let link = |p: usize| format!("/mem0/v3/memories/?page={p}&page_size={size}");
    Ok(Json(json!({
        "count": count,
        "next": (skip.saturating_add(size) < count).then(|| link(page_no + 1)),
        "previous": (page_no > 1).then(|| link(page_no - 1)),
        "results": out,
    })))
}

/// A query object without its null fields (query strings have no null).
fn strip_nulls(mut v: Value) -> Value {
    if let Some(m) = v.as_object_mut() {
        m.retain(|_, x| !x.is_null());
    }
    v
}

/// Query parameters Mem0 sends with by-id calls (none that matter here).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
// Some fields are read only to accept them (Mem0 options Hippo ignores).
#[allow(dead_code)]
struct ByIdParams {
    /// Mem0: also delete older memories this one superseded. Hippo keeps
    /// versions inside one memory, so a delete covers them anyway.
    #[serde(default)]
    delete_linked: Option<bool>,
}

#[utoipa::path(get, path = "/v1/memories/{id}/", tag = "mem0", operation_id = "mem0_get",
    params(("id" = Uuid, Path, description = "Memory id"), ByIdParams),
    responses((status = 200, description = "The memory", body = serde_json::Value),
        (status = 400, body = Mem0ErrorBody), (status = 404, body = Mem0ErrorBody)))]
async fn get_one(
    bound: Bound,
    Path(id): Path<String>,
    Mem0Query(_): Mem0Query<ByIdParams>,
) -> Answer {
    let m = server::get_memory(bound, Path(id), ApiQuery(rest(json!({}))?))
        .await?
        .0;
    Ok(Json(memory(&m)))
}

/// The body of `PUT /v1/memories/{id}/`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = Mem0UpdateBody)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    metadata: Option<Map<String, Value>>,
    /// Unix seconds, or RFC 3339.
    #[serde(default)]
    timestamp: Option<Value>,
    /// `YYYY-MM-DD`; `null` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, nullable)]
    expiration_date: Option<Option<String>>,
}

/// Tells a field given as `null` from an absent one.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[utoipa::path(put, path = "/v1/memories/{id}/", tag = "mem0", operation_id = "mem0_update",
    params(("id" = Uuid, Path, description = "Memory id"), ByIdParams), request_body = UpdateBody,
    responses((status = 200, description = "The memory, changed", body = serde_json::Value),
        (status = 400, body = Mem0ErrorBody), (status = 404, body = Mem0ErrorBody)))]
async fn update(
    bound: Bound,
    Path(id): Path<String>,
    Mem0Query(_): Mem0Query<ByIdParams>,
    Mem0Json(body): Mem0Json<UpdateBody>,
) -> Answer {
    let mut patch = json!({ "content": body.text, "metadata": body.metadata });
    match &body.timestamp {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) => {
            let secs = n
                .as_f64()
                .ok_or_else(|| invalid("timestamp must be a number or RFC 3339"))?;
            patch["event_time"] = json!(unix_time(secs as i64)?);
        }
        Some(Value::String(s)) => patch["event_time"] = json!(s),
        Some(_) => return Err(invalid("timestamp must be unix seconds or RFC 3339")),
    }
    let mut patch = strip_nulls(patch);
    match &body.expiration_date {
        None => {}
        Some(None) => patch["expires_at"] = Value::Null,
        Some(Some(d)) => patch["expires_at"] = json!(expiration(d)?),
    }
    let m = server::patch_memory(
        bound,
        Path(id),
        ApiQuery(rest(json!({}))?),
        ApiJson(rest(patch)?),
    )
    .await?
    .0;
    let mut v = memory(&m);
    v["message"] = json!("Memory updated successfully!");
    Ok(Json(v))
}

#[utoipa::path(delete, path = "/v1/memories/{id}/", tag = "mem0", operation_id = "mem0_delete",
    params(("id" = Uuid, Path, description = "Memory id"), ByIdParams),
    responses((status = 200, description = "`{message}`", body = serde_json::Value),
        (status = 400, body = Mem0ErrorBody), (status = 404, body = Mem0ErrorBody)))]
async fn delete_one(
    bound: Bound,
    Path(id): Path<String>,
    Mem0Query(_): Mem0Query<ByIdParams>,
) -> Answer {
    let _deleted = server::delete_memory(bound, Path(id), ApiQuery(rest(json!({}))?)).await?;
    Ok(Json(json!({ "message": "Memory deleted successfully!" })))
}

/// Query parameters of `DELETE /v1/memories/`: at least one of
/// `user_id`, `agent_id`, `run_id`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct DeleteAllParams {
    user_id: Option<String>,
    agent_id: Option<String>,
    run_id: Option<String>,
    app_id: Option<String>,
}

#[utoipa::path(delete, path = "/v1/memories/", tag = "mem0", operation_id = "mem0_delete_all",
    params(DeleteAllParams),
    responses((status = 200, description = "`{message, deleted}`", body = serde_json::Value),
        (status = 400, body = Mem0ErrorBody)))]
async fn delete_all(bound: Bound, Mem0Query(p): Mem0Query<DeleteAllParams>) -> Answer {
    if p.app_id.is_some() {
        return Err(invalid(
            "app_id has no equivalent in Hippo: use user_id, agent_id or run_id",
        ));
    }
    let q = strip_nulls(json!({
        "user_id": p.user_id, "agent_id": p.agent_id, "session_id": p.run_id,
    }));
    let deleted = server::erase_scope(bound, ApiQuery(rest(q)?)).await?.0;
    Ok(Json(json!({
        "message": "Memories deleted successfully!",
        "deleted": deleted.deleted,
    })))
}

/// Mem0's history: one entry per version (`ADD`, then `UPDATE`s), and a
/// `DELETE` when the memory is deleted.
fn history_entries(h: &HistoryView) -> Vec<Value> {
    let mut out = Vec::new();
    let mut previous: Option<&MemoryView> = None;
    for v in &h.versions {
        out.push(json!({
            "id": v.id,
            "memory_id": h.memory_id,
            "old_memory": previous.map(|p| p.memory.clone()),
            "new_memory": v.memory,
            "event": if previous.is_some() { "UPDATE" } else { "ADD" },
            "user_id": v.user_id,
            "metadata": v.metadata,
            "categories": [],
            "created_at": v.valid_from,
            "updated_at": v.updated_at,
            "is_deleted": false,
        }));
        previous = Some(v);
    }
    if let Some(last) = h.versions.last().filter(|m| m.status == "deleted") {
        out.push(json!({
            "id": last.id,
            "memory_id": h.memory_id,
            "old_memory": last.memory,
            "new_memory": null,
            "event": "DELETE",
            "user_id": last.user_id,
            "metadata": last.metadata,
            "categories": [],
            "created_at": last.updated_at,
            "updated_at": last.updated_at,
            "is_deleted": true,
        }));
    }
    out
}

#[utoipa::path(get, path = "/v1/memories/{id}/history/", tag = "mem0", operation_id = "mem0_history",
    params(("id" = Uuid, Path, description = "Memory id"), ByIdParams),
    responses((status = 200, description = "The memory's changes, oldest first", body = serde_json::Value),
        (status = 400, body = Mem0ErrorBody), (status = 404, body = Mem0ErrorBody)))]
async fn history(
    bound: Bound,
    Path(id): Path<String>,
    Mem0Query(_): Mem0Query<ByIdParams>,
) -> Answer {
    let h = server::memory_history(bound, Path(id), ApiQuery(rest(json!({}))?))
        .await?
        .0;
    Ok(Json(Value::Array(history_entries(&h))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_map_owner_fields_and_metadata() {
        let mut o = Owner::default();
        o.read_filters(
            &json!({"AND": [{"user_id": "ana"}, {"run_id": "s1"}], "metadata": {"topic": "food"}}),
        )
        .unwrap();
        assert_eq!(o.user_id.as_deref(), Some("ana"));
        assert_eq!(o.session_id.as_deref(), Some("s1"));
        assert_eq!(o.metadata["topic"], "food");
    }

    #[test]
    fn unsupported_filters_are_refused_not_ignored() {
        for f in [
            json!({"OR": [{"user_id": "a"}, {"user_id": "b"}]}),
            json!({"app_id": "x"}),
            json!({"created_at": {"gte": "2024-01-01"}}),
            json!({"user_id": 7}),
            json!({"AND": [{"user_id": "a"}, {"user_id": "b"}]}),
        ] {
            assert!(Owner::default().read_filters(&f).is_err(), "{f}");
        }
    }

    #[test]
    fn expiration_dates_are_days() {
        assert_eq!(
            expiration("2030-02-01").unwrap().to_rfc3339(),
            "2030-02-01T00:00:00+00:00"
        );
        assert!(expiration("tomorrow").is_err());
    }
}

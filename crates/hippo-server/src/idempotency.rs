//! `Idempotency-Key` on write routes: a client that got no answer (a
//! timeout, a dropped connection, a crash of the server) retries with the
//! same key and gets the first answer, and nothing is written twice.
//!
//! How: the key (scoped to the caller's identity) and a fingerprint of the
//! request (method, path, body) ride along as [`hippo::audit::RequestMark`];
//! every store write of the request records in its own transaction (where
//! its audit entry is appended, so it is exact) that the request committed
//! (table `requests`, schema v10). After the handler answers, a 2xx answer
//! is stored with the key. A retry then finds either the answer (replayed,
//! `Idempotent-Replayed: true`), or a commit without an answer (the server
//! stopped in between: 409 `idempotent_answer_lost`, nothing is written
//! again), or nothing (the first attempt changed nothing: it runs again).
//! The handler runs in a task of its own, so a client hanging up does not
//! cut a write off midway nor lose its answer; one attempt per key runs at a
//! time in a process. Servers sharing a store may run two attempts at once:
//! each attempt has an id, the store refuses a write of a request another
//! attempt committed (checked under the store's write serialization), and
//! the refused attempt answers with the first one's answer or 409 in
//! progress. Keys are kept 24 hours (maintenance prunes them).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hippo::audit::RequestMark;
use sha2::{Digest, Sha256};

use crate::auth::Access;
use crate::server::{required_access, ApiError, Bound};

/// The request header.
pub const HEADER: &str = "idempotency-key";
/// The answer header on a replayed answer.
pub const REPLAYED: &str = "idempotent-replayed";
/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 255;

/// What the middleware needs: the body limit (the body is read to
/// fingerprint it) and the keys whose request is being served right now.
#[derive(Clone)]
pub struct Idempotency {
    max_body_bytes: usize,
    in_flight: Arc<Mutex<HashSet<String>>>,
}

impl Idempotency {
    /// For a router whose bodies are at most `max_body_bytes`.
    pub fn new(max_body_bytes: usize) -> Self {
        Idempotency {
            max_body_bytes,
            in_flight: Arc::default(),
        }
    }
}

/// Removes a key from the in-flight set when the request's task ends.
struct InFlight {
    set: Arc<Mutex<HashSet<String>>>,
    key: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The middleware (inside authentication: it needs the request's [`Bound`]).
pub async fn idempotent(State(idem): State<Idempotency>, req: Request, next: Next) -> Response {
    let Some(given) = req.headers().get(HEADER) else {
        return next.run(req).await;
    };
    let given = match given.to_str() {
        Ok(k) if (1..=MAX_KEY_LEN).contains(&k.len()) => k.to_owned(),
        _ => {
            return ApiError::invalid(format!(
                "Idempotency-Key must be 1..={MAX_KEY_LEN} visible ASCII characters"
            ))
            .into_response()
        }
    };
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("", |p| p.as_str())
        .to_owned();
    // Reads are repeatable as they are; MCP answers are streams and its
    // tool calls carry no headers of their own.
    if route == "/mcp" || required_access(req.method(), &route, req.uri().query()) == Access::Read {
        return next.run(req).await;
    }
    let Some(bound) = req.extensions().get::<Bound>().cloned() else {
        return next.run(req).await;
    };
    let (mut parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, idem.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the request body exceeds {} bytes", idem.max_body_bytes),
            )
            .into_response()
        }
    };
    // Scoped to the caller: two keys (or tenants) may use the same value.
    let key = hex(&Sha256::digest(format!("{}\n{given}", bound.actor)));
    let mut h = Sha256::new();
    h.update(parts.method.as_str());
    h.update(b"\n");
    h.update(parts.uri.path_and_query().map_or("", |p| p.as_str()));
    h.update(b"\n");
    h.update(&body);
    let mark = RequestMark {
        key: key.clone(),
        fingerprint: hex(&h.finalize()),
        attempt: uuid::Uuid::new_v4().simple().to_string(),
    };
    // One attempt at a time per key.
    if !idem
        .in_flight
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key.clone())
    {
        return in_progress();
    }
    let in_flight = InFlight {
        set: idem.in_flight.clone(),
        key: key.clone(),
    };
    let store = bound.hippo.clone();
    let k = key.clone();
    let known = match tokio::task::spawn_blocking(move || store.store().request(&k)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return ApiError::from(e).into_response(),
        Err(_) => {
            return ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
            .into_response()
        }
    };
    if let Some(known) = known {
        if known.fingerprint != mark.fingerprint {
            return ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used for another request (method, path or body differ)",
            )
            .into_response();
        }
        if let Some((status, answer)) = known.answer {
            return replay(status, answer);
        }
        if known.committed {
            return ApiError::new(
                StatusCode::CONFLICT,
                "idempotent_answer_lost",
                "a request with this Idempotency-Key was committed, but the server stopped before \
                 answering it; nothing was written again: read the current state to see its result",
            )
            .into_response();
        }
    }
    parts.extensions.insert(Bound {
        request: Some(mark.clone()),
        ..bound.clone()
    });
    let req = Request::from_parts(parts, Body::from(body));
    // Its own task: a client that hangs up does not cut the write off, and
    // its answer is still recorded for the retry.
    let task = tokio::spawn(async move {
        let _in_flight = in_flight;
        let resp = next.run(req).await;
        if !resp.status().is_success() {
            return committed_elsewhere(&bound, &mark).await.unwrap_or(resp);
        }
        let (parts, body) = resp.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
            return ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
            .into_response();
        };
        let status = parts.status.as_u16();
        let store = bound.hippo.clone();
        let answer = bytes.clone();
        let recorded = tokio::task::spawn_blocking(move || {
            store.store().record_answer(&mark, status, &answer)
        })
        .await;
        if !matches!(recorded, Ok(Ok(()))) {
            // The write stands; a retry is told it committed.
            tracing::error!("recording the answer to an idempotent request failed");
        }
        Response::from_parts(parts, Body::from(bytes))
    });
    match task.await {
        Ok(resp) => resp,
        Err(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
        .into_response(),
    }
}

/// The answer for an attempt that failed because another attempt with the
/// same key (on another server sharing the store) committed first: that
/// attempt's answer once recorded, else 409 in progress. `None` when no
/// other attempt committed (the failure stands).
async fn committed_elsewhere(bound: &Bound, mark: &RequestMark) -> Option<Response> {
    let store = bound.hippo.clone();
    let key = mark.key.clone();
    let known = tokio::task::spawn_blocking(move || store.store().request(&key))
        .await
        .ok()?
        .ok()??;
    if !known.committed || known.attempt.as_deref() == Some(mark.attempt.as_str()) {
        return None;
    }
    if let Some((status, answer)) = known.answer {
        return Some(replay(status, answer));
    }
    Some(in_progress())
}

fn in_progress() -> Response {
    ApiError::new(
        StatusCode::CONFLICT,
        "idempotent_request_in_progress",
        "a request with this Idempotency-Key is being served; retry when it has answered",
    )
    .into_response()
}

fn replay(status: u16, answer: Vec<u8>) -> Response {
    let mut resp = Response::new(Body::from(answer));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    resp
}

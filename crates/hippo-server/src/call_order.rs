//! One MCP session's tool calls run one after another, in the order they
//! arrived, so an agent that sends `search_memory` right after
//! `add_memory` (without waiting, as parallel tool calls do) finds what it
//! added.
//!
//! The MCP SDK runs each request as its own task, so two calls sent back to
//! back raced. Each call is given a [`Turn`] where its arrival order is
//! still known — the HTTP request entering `/mcp` (the [`stamp_http`]
//! middleware), or the message read from stdin ([`InOrder`]) — and waits
//! for the turns before it to end before it runs ([`wait_for_turn`]). A
//! turn ends when the last copy of it is dropped, so a call that fails or
//! is cancelled never holds up the rest.
//!
//! Over HTTP a "session" is the MCP session when the client keeps one
//! (`Mcp-Session-Id`); stateless clients (the 2026 protocol) have none, so
//! there it is one caller (key, tenant) acting for one owner (`user_id`,
//! `agent_id`): calls about different owners, or from different keys, still
//! run side by side.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, Weak};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use rmcp::model::{ClientRequest, GetExtensions, JsonRpcMessage};
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use rmcp::RoleServer;
use tokio::sync::watch;

/// The calls of one session that have not ended, by arrival number.
#[derive(Default)]
struct Pending {
    next: u64,
    open: BTreeSet<u64>,
}

/// The order of one session's calls.
#[derive(Default)]
pub struct CallOrder {
    pending: watch::Sender<Pending>,
}

impl CallOrder {
    /// The turn of a call arriving now.
    pub fn arrive(self: &Arc<Self>) -> Arc<Turn> {
        let mut n = 0;
        // One critical section: numbers are taken in the order they are
        // registered, so no call can see itself first while an earlier
        // number is still unregistered.
        self.pending.send_modify(|p| {
            n = p.next;
            p.next += 1;
            p.open.insert(n);
        });
        Arc::new(Turn {
            n,
            order: self.clone(),
        })
    }
}

/// A call's place in its session; the call's turn ends when this drops.
pub struct Turn {
    n: u64,
    order: Arc<CallOrder>,
}

impl Turn {
    /// Waits until every call that arrived before this one has ended.
    pub async fn wait(&self) {
        let mut rx = self.order.pending.subscribe();
        // The sender lives in `order`, which this turn keeps alive.
        let _ = rx.wait_for(|p| p.open.first() == Some(&self.n)).await;
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.order.pending.send_modify(|p| {
            p.open.remove(&self.n);
        });
    }
}

/// Whether a JSON-RPC method runs memory operations that must keep their
/// order (tools and resources; not discovery or pings).
fn is_ordered(method: &str) -> bool {
    matches!(method, "tools/call" | "resources/read")
}

/// The turn a call was given on arrival, if any: set by [`InOrder`]
/// (stdio) on the message, or by [`stamp_http`] on its HTTP request.
pub fn turn_of(ext: &rmcp::model::Extensions) -> Option<Arc<Turn>> {
    ext.get::<Arc<Turn>>().cloned().or_else(|| {
        ext.get::<axum::http::request::Parts>()
            .and_then(|p| p.extensions.get::<Arc<Turn>>())
            .cloned()
    })
}

/// Waits for the call's turn; the call keeps the returned turn until it
/// ends.
pub async fn wait_for_turn(ext: &rmcp::model::Extensions) -> Option<Arc<Turn>> {
    let turn = turn_of(ext)?;
    turn.wait().await;
    Some(turn)
}

/// Each HTTP MCP session's order (see the module documentation). Entries hold the order
/// weakly: it lives as long as one of its calls does, and an order with no
/// call left has nothing to keep, so a later call may start a new one.
pub struct Sessions {
    orders: Mutex<HashMap<String, Weak<CallOrder>>>,
    max_body_bytes: usize,
}

impl Sessions {
    /// Sessions whose request bodies are at most `max_body_bytes`.
    pub fn new(max_body_bytes: usize) -> Arc<Self> {
        Arc::new(Sessions {
            orders: Mutex::new(HashMap::new()),
            max_body_bytes,
        })
    }

    fn arrive(&self, session: &str) -> Arc<Turn> {
        let mut orders = self.orders.lock().unwrap_or_else(|e| e.into_inner());
        let order = match orders.get(session).and_then(Weak::upgrade) {
            Some(o) => o,
            None => {
                if orders.len() >= 64 {
                    orders.retain(|_, o| o.strong_count() > 0);
                }
                let o = Arc::new(CallOrder::default());
                orders.insert(session.to_owned(), Arc::downgrade(&o));
                o
            }
        };
        order.arrive()
    }
}

/// Middleware: gives each tool call or resource read `POST`ed to `/mcp`
/// within a session its turn, in the order the requests arrive.
pub async fn stamp_http(
    State(sessions): State<Arc<Sessions>>,
    req: Request,
    next: Next,
) -> Response {
    if req.method() != axum::http::Method::POST || req.uri().path() != "/mcp" {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, sessions.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => {
            use axum::response::IntoResponse;
            return crate::server::ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "request body unreadable or over {} bytes: {e}",
                    sessions.max_body_bytes
                ),
            )
            .into_response();
        }
    };
    #[derive(serde::Deserialize)]
    struct Envelope {
        method: Option<String>,
        #[serde(default)]
        params: serde_json::Value,
    }
    if let Some(call) = serde_json::from_slice::<Envelope>(&bytes)
        .ok()
        .filter(|e| e.method.as_deref().is_some_and(is_ordered))
    {
        let session = match parts.headers.get("mcp-session-id") {
            Some(id) => format!("session {}", String::from_utf8_lossy(id.as_bytes())),
            None => {
                let caller = parts
                    .extensions
                    .get::<crate::server::Bound>()
                    .map(|b| format!("{:p} {}", Arc::as_ptr(&b.hippo), b.actor))
                    .unwrap_or_default();
                format!("caller {caller} {}", owner_of(&call.params))
            }
        };
        parts.extensions.insert(sessions.arrive(&session));
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// The owner a call is about: `user_id` and `agent_id` of a tool's
/// arguments, or the user or agent of a resource URI (empty otherwise).
fn owner_of(params: &serde_json::Value) -> String {
    let args = &params["arguments"];
    if let Some(uri) = params["uri"].as_str() {
        let id = |rest: &str| rest.split('/').next().unwrap_or_default().to_owned();
        if let Some(rest) = uri.strip_prefix("hippo://users/") {
            return format!("user={} agent=", id(rest));
        }
        if let Some(rest) = uri.strip_prefix("hippo://agents/") {
            return format!("user= agent={}", id(rest));
        }
        return String::new();
    }
    format!(
        "user={} agent={}",
        args["user_id"].as_str().unwrap_or_default(),
        args["agent_id"].as_str().unwrap_or_default()
    )
}

/// A transport that gives each tool call or resource read its turn as it
/// is read (stdio: one session).
pub struct InOrder<T> {
    inner: T,
    order: Arc<CallOrder>,
}

impl<T> InOrder<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> Self {
        InOrder {
            inner,
            order: Arc::new(CallOrder::default()),
        }
    }
}

impl<T: Transport<RoleServer>> Transport<RoleServer> for InOrder<T> {
    type Error = T::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl std::future::Future<Output = Result<(), Self::Error>> + Send + 'static {
        self.inner.send(item)
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        let mut message = self.inner.receive().await?;
        if let JsonRpcMessage::Request(r) = &mut message {
            let request: &mut ClientRequest = &mut r.request;
            if is_ordered(request.method()) {
                let turn = self.order.arrive();
                request.extensions_mut().insert(turn);
            }
        }
        Some(message)
    }

    fn close(&mut self) -> impl std::future::Future<Output = Result<(), Self::Error>> + Send {
        self.inner.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Turns run in arrival order whatever order their tasks start in, and
    /// a dropped turn (a failed or cancelled call) releases the next.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_run_in_arrival_order_and_dropped_turns_release_the_rest() {
        let order = Arc::new(CallOrder::default());
        let turns: Vec<Arc<Turn>> = (0..8).map(|_| order.arrive()).collect();
        let ran = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        // Started last to first; turn 3 is abandoned without running.
        for (i, turn) in turns.into_iter().enumerate().rev() {
            let ran = ran.clone();
            tasks.push(tokio::spawn(async move {
                if i == 3 {
                    drop(turn);
                    return;
                }
                turn.wait().await;
                ran.lock().unwrap().push(i);
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*ran.lock().unwrap(), [0, 1, 2, 4, 5, 6, 7]);
    }
}

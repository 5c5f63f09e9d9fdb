//! Loopback fakes of the external services Hippo talks to, speaking their
//! real wire protocols: an OpenAI-compatible `/v1/embeddings` endpoint and
//! the Hugging Face Hub's file-resolve endpoint. Each runs an axum server on
//! its own thread and stops when dropped.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// A server on a background thread.
pub struct Fake {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Fake {
    fn start(app: Router) -> Fake {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        stop_rx.await.ok();
                    })
                    .await
                    .unwrap();
            });
        });
        let addr = addr_rx.recv().unwrap();
        Fake {
            base: format!("http://{addr}"),
            shutdown: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            tx.send(()).ok();
        }
        if let Some(t) = self.thread.take() {
            t.join().ok();
        }
    }
}

/// What the embeddings fake has seen.
#[derive(Default)]
pub struct EmbeddingsLog {
    /// `Authorization` headers received.
    pub auth: Vec<String>,
    /// Inputs embedded.
    pub inputs: usize,
}

/// Deterministic 16-dimensional bag-of-words vectors.
fn hash_vector(text: &str) -> Vec<f32> {
    let mut v = vec![0.0f32; 16];
    for w in text
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let h = w.bytes().fold(2166136261u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(16777619)
        });
        v[(h % 16) as usize] += 1.0;
    }
    v[0] += 0.01;
    v
}

async fn embeddings(
    State(log): State<Arc<Mutex<EmbeddingsLog>>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let inputs: Vec<String> = match &body["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        _ => return (StatusCode::BAD_REQUEST, "input must be a string or a list").into_response(),
    };
    {
        let mut log = log.lock().unwrap();
        if let Some(a) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
            log.auth.push(a.to_owned());
        }
        log.inputs += inputs.len();
    }
    // Real servers may answer out of order; `index` says where each belongs.
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .rev()
        .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": hash_vector(t)}))
        .collect();
    Json(json!({"object": "list", "model": body["model"], "data": data})).into_response()
}

/// An OpenAI-compatible embeddings server; `/bad/v1/embeddings` answers with
/// one vector too few.
pub fn openai_embeddings() -> (Fake, Arc<Mutex<EmbeddingsLog>>) {
    let log = Arc::new(Mutex::new(EmbeddingsLog::default()));
    let app = Router::new()
        .route("/v1/embeddings", post(embeddings))
        .route(
            "/bad/v1/embeddings",
            post(|| async { Json(json!({"object": "list", "data": []})) }),
        )
        .with_state(log.clone());
    (Fake::start(app), log)
}

async fn resolve(
    State(dir): State<Arc<PathBuf>>,
    Path((_org, _name, _rev, file)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let Ok(bytes) = std::fs::read(dir.join(&file)) else {
        return (StatusCode::NOT_FOUND, "Entry not found").into_response();
    };
    let size = bytes.len();
    // `Range: bytes=START-` or `bytes=START-END`, as the hub client sends.
    let (start, end) = headers
        .get("range")
        .and_then(|r| r.to_str().ok())
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| {
            let (a, b) = r.split_once('-')?;
            let a: usize = a.parse().ok()?;
            let b: usize = if b.is_empty() {
                size - 1
            } else {
                b.parse().ok()?
            };
            Some((a, b.min(size - 1)))
        })
        .unwrap_or((0, size - 1));
    let etag = format!("\"{:x}-{}\"", size, file.len());
    (
        StatusCode::PARTIAL_CONTENT,
        [
            ("etag", etag),
            (
                "x-repo-commit",
                "0123456789abcdef0123456789abcdef01234567".to_owned(),
            ),
            ("content-range", format!("bytes {start}-{end}/{size}")),
        ],
        bytes[start..=end].to_vec(),
    )
        .into_response()
}

/// A Hugging Face Hub serving the files of `dir` for any model repository.
pub fn hub(dir: PathBuf) -> Fake {
    let app = Router::new()
        .route("/{org}/{name}/resolve/{rev}/{file}", get(resolve))
        .with_state(Arc::new(dir));
    Fake::start(app)
}

/// What the chat fake has seen and will answer.
#[derive(Default)]
pub struct ChatScript {
    /// Answers in order: `(substring of the last message, answer text)`; the
    /// first whose substring occurs is used (and stays, so retries see it).
    pub answers: Vec<(String, String)>,
    /// Request bodies received.
    pub requests: Vec<Value>,
    /// `Authorization` headers received.
    pub auth: Vec<String>,
    /// Answer this many requests with HTTP 500 first.
    pub fail_first: usize,
    /// Leave `usage` out of responses (some servers do).
    pub no_usage: bool,
    /// When no scripted answer matches: answer an extraction with one fact
    /// per conversation line (its text), and a decision with ADD.
    pub echo: bool,
    /// Wait this long before answering (a slow model).
    pub delay_ms: u64,
    /// Answers computed from the last message (tried after `answers`).
    pub responder: Option<Responder>,
}

/// Computes an answer from the last message, if it has one.
pub type Responder = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The oracle of an operation-level set (`eval/ops.json`): answers an
/// extraction with the labelled facts of the session the conversation
/// comes from, and a decision with the labelled one, naming the target by
/// its index in the list the prompt shows (ADD when nothing is labelled).
pub fn ops_oracle(dataset: Value) -> Responder {
    Arc::new(move |last: &str| {
        let sessions = dataset["scenarios"]
            .as_array()?
            .iter()
            .flat_map(|sc| sc["sessions"].as_array().cloned().unwrap_or_default());
        if let Some(rest) = last.strip_prefix("Existing memories:\n") {
            let (list, fact) = rest.split_once("New fact: ")?;
            let fact = fact.trim();
            let lines: Vec<&str> = list
                .lines()
                .filter_map(|l| l.split_once("] ").map(|(_, t)| t))
                .collect();
            for s in sessions {
                for d in s["decide"].as_array().into_iter().flatten() {
                    if d["fact"] != fact {
                        continue;
                    }
                    let index = d["target"]
                        .as_str()
                        .and_then(|t| lines.iter().position(|l| *l == t));
                    return Some(
                        json!({"event": d["event"], "index": index, "text": fact,
                        "reason": d["reason"]})
                        .to_string(),
                    );
                }
            }
            return Some(json!({"event": "ADD", "reason": "new information"}).to_string());
        }
        for s in sessions {
            let first = s["messages"][0]["content"].as_str().unwrap_or("\u{0}");
            if last.contains(first) {
                let facts: Vec<Value> = s["facts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|f| json!({"text": f["text"], "kind": f["kind"]}))
                    .collect();
                return Some(json!({ "facts": facts }).to_string());
            }
        }
        None
    })
}

fn echo_answer(last: &str) -> String {
    if last.starts_with("Existing memories:") {
        return r#"{"event": "ADD", "reason": "new"}"#.into();
    }
    let facts: Vec<&str> = last
        .lines()
        .filter(|l| !l.starts_with("Date:"))
        .filter_map(|l| l.split_once(": ").map(|(_, t)| t.trim()))
        .filter(|t| !t.is_empty())
        .collect();
    json!({ "facts": facts }).to_string()
}

async fn chat(
    State(script): State<Arc<Mutex<ChatScript>>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let delay = script.lock().unwrap().delay_ms;
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    let mut s = script.lock().unwrap();
    s.requests.push(body.clone());
    if let Some(a) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        s.auth.push(a.to_owned());
    }
    if s.fail_first > 0 {
        s.fail_first -= 1;
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": {"message": "overloaded"}})),
        )
            .into_response();
    }
    let Some(messages) = body["messages"].as_array().filter(|m| !m.is_empty()) else {
        return (StatusCode::BAD_REQUEST, "messages are required").into_response();
    };
    let last = messages
        .last()
        .and_then(|m| m["content"].as_str())
        .unwrap_or("");
    let answer = s
        .answers
        .iter()
        .find(|(k, _)| last.contains(k.as_str()))
        .map(|(_, a)| a.clone())
        .or_else(|| s.responder.as_ref().and_then(|r| r(last)))
        .unwrap_or_else(|| {
            if s.echo {
                echo_answer(last)
            } else {
                "{}".into()
            }
        });
    let mut out = json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "model": body["model"],
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": answer}}],
    });
    if !s.no_usage {
        out["usage"] = json!({"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120});
    }
    Json(out).into_response()
}

/// A scripted OpenAI-compatible chat-completions server at `/v1`.
pub fn openai_chat(script: ChatScript) -> (Fake, Arc<Mutex<ChatScript>>) {
    let script = Arc::new(Mutex::new(script));
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .with_state(script.clone());
    (Fake::start(app), script)
}

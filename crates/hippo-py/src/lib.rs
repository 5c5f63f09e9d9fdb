//! `hippo._native`: the engine in a Python process. `Engine` opens a
//! store file (with the local embedding model) and answers REST requests
//! in-process: each call goes through the very router `hippo serve` runs
//! (`hippo_server::server::router`), without a socket. So `hippo.Memory`
//! (embedded) and `hippo.Client` (HTTP) share one Python API and one
//! behaviour — validation, errors and answers are those of the REST API.
//! The GIL is released while the engine works.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use tower::ServiceExt;

use hippo::{Embedder, Hippo, MiniLmEmbedder, SqliteStore, SqliteStoreOptions};
use hippo_server::server::{self, AppState, JobWorkers};
use hippo_server::tenants::Tenants;

/// Largest request body accepted in-process (as the server's default).
const MAX_BODY_BYTES: usize = 16 << 20;

/// The embedding model directory: the one given, else `$HIPPO_MODEL_DIR`,
/// else the default cache directory when it holds the model, else a
/// download from the Hugging Face Hub.
fn model_dir(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(d) = given.or_else(|| std::env::var_os("HIPPO_MODEL_DIR").map(PathBuf::from)) {
        return Ok(d);
    }
    match hippo::embed::default_model_dir().filter(|d| d.join("model.safetensors").is_file()) {
        Some(d) => Ok(d),
        None => Ok(MiniLmEmbedder::download_from_hub()?),
    }
}

/// An open store and the REST router over it.
#[pyclass(module = "hippo._native", frozen)]
struct Engine {
    runtime: tokio::runtime::Runtime,
    app: axum::Router,
    /// Background jobs (consolidation, LLM extraction) until closed.
    workers: std::sync::Mutex<Option<JobWorkers>>,
}

#[pymethods]
impl Engine {
    /// Opens (or creates) the store at `path`.
    #[new]
    #[pyo3(signature = (path, model_dir=None))]
    fn new(py: Python<'_>, path: PathBuf, model_dir: Option<PathBuf>) -> PyResult<Self> {
        py.detach(|| open(path, model_dir))
            .map_err(|e| PyOSError::new_err(format!("{e:#}")))
    }

    /// Answers one REST request: `method` (`GET`, `POST`, ...), `path`
    /// with its query string, and a JSON body. Returns the status and the
    /// JSON answer.
    #[pyo3(signature = (method, path, body=None))]
    fn request(
        &self,
        py: Python<'_>,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> PyResult<(u16, String)> {
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| PyValueError::new_err(format!("bad HTTP method {method:?}")))?;
        let mut req = Request::builder().method(method).uri(path);
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(body.map(Body::from).unwrap_or_else(Body::empty))
            .map_err(|e| PyValueError::new_err(format!("bad request: {e}")))?;
        let app = self.app.clone();
        py.detach(|| {
            self.runtime.block_on(async move {
                let resp = app.oneshot(req).await.map_err(|e| e.to_string())?;
                let status = resp.status().as_u16();
                let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
            })
        })
        .map_err(|e: String| PyRuntimeError::new_err(e))
    }

    /// Stops the background job workers (they stop anyway when the engine
    /// is dropped). Idempotent.
    fn close(&self, py: Python<'_>) {
        let workers = self.workers.lock().ok().and_then(|mut w| w.take());
        py.detach(|| drop(workers));
    }
}

fn open(path: PathBuf, model: Option<PathBuf>) -> anyhow::Result<Engine> {
    let dir = model_dir(model)?;
    let embedder: Arc<dyn Embedder> = Arc::new(MiniLmEmbedder::from_dir(&dir)?);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let opener = {
        let embedder = embedder.clone();
        move |_tenant: &str, db: &std::path::Path| -> anyhow::Result<Hippo> {
            let store = SqliteStore::open(SqliteStoreOptions::new(
                db,
                embedder.model_id(),
                embedder.dimension(),
            ))?;
            Ok(Hippo::builder()
                .store(Arc::new(store))
                .embedder(embedder.clone())
                .build()?)
        }
    };
    let tenants = Arc::new(Tenants::new(path, Box::new(opener)));
    let default = tenants.get(
        hippo_server::auth::DEFAULT_TENANT,
        hippo_server::tenants::DEFAULT_GENERATION,
    )?;
    let metrics = Arc::new(hippo_server::metrics::Metrics::new());
    let workers = JobWorkers::start(
        tenants.clone(),
        usize::from(default.consolidates()),
        chrono::Duration::minutes(10),
        metrics.clone(),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let state = AppState {
        tenants,
        control: None,
        metrics,
        context: hippo::Context::default(),
        model: embedder.model_id().to_owned(),
        // In-process: there is no Host to check and no browser.
        allowed_hosts: None,
        rate_limiter: Arc::new(hippo_server::limits::RateLimiter::new(f64::MAX, f64::MAX)),
        in_flight: Arc::new(tokio::sync::Semaphore::new(1024)),
        request_timeout: std::time::Duration::from_secs(300),
        shutdown: Default::default(),
    };
    let app = server::router(state, MAX_BODY_BYTES);
    Ok(Engine {
        runtime,
        app,
        workers: std::sync::Mutex::new(Some(workers)),
    })
}

/// The native module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Engine>()?;
    Ok(())
}

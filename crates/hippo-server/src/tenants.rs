//! The engines of a server's tenants: one [`Hippo`] per tenant (its store
//! file, see [`crate::auth::tenant_db`], or its rows in Postgres), opened on
//! first use and kept open, all sharing one embedder.
//!
//! Tenants are created and erased by other processes (the CLI) while a
//! server runs, so each open engine remembers its tenant's *generation*
//! (see [`crate::auth::Authenticated::tenant_generation`]): a request for a
//! newer generation reopens the store, and [`Tenants::retain`] closes the
//! engines of tenants that are gone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::Result;
use hippo::Hippo;

/// Opens the engine of a tenant: its name and its store file (used when the
/// memories live in SQLite files).
pub type Opener = Box<dyn Fn(&str, &Path) -> Result<Hippo> + Send + Sync>;

/// The generation of the default tenant (it is never created or erased).
pub const DEFAULT_GENERATION: i64 = 0;

/// The open tenants of a server.
pub struct Tenants {
    db: PathBuf,
    open: Opener,
    engines: RwLock<BTreeMap<String, (i64, Arc<Hippo>)>>,
}

impl Tenants {
    /// Tenants of the `--db` file `db` (the default tenant's store), opened
    /// with `open`.
    pub fn new(db: PathBuf, open: Opener) -> Self {
        Tenants {
            db,
            open,
            engines: RwLock::new(BTreeMap::new()),
        }
    }

    /// The engine of `tenant` at `generation`, opening its store (created
    /// if absent) on first use, or again when the open one is of another
    /// generation. The caller has checked that the tenant exists.
    pub fn get(&self, tenant: &str, generation: i64) -> Result<Arc<Hippo>> {
        if let Some(h) = self.get_open(tenant, generation) {
            return Ok(h);
        }
        let mut engines = self.engines.write().unwrap_or_else(|e| e.into_inner());
        if let Some((g, h)) = engines.get(tenant) {
            if *g == generation {
                return Ok(h.clone());
            }
        }
        crate::auth::validate_tenant(tenant)?;
        let db = crate::auth::tenant_db(&self.db, tenant);
        if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let hippo = Arc::new((self.open)(tenant, &db)?);
        if engines
            .insert(tenant.to_owned(), (generation, hippo.clone()))
            .is_some()
        {
            tracing::info!(tenant, generation, "tenant created again: store reopened");
        } else {
            tracing::info!(tenant, "tenant store opened");
        }
        Ok(hippo)
    }

    /// The engine of `tenant` at `generation` if it is open (no disk
    /// access).
    pub fn get_open(&self, tenant: &str, generation: i64) -> Option<Arc<Hippo>> {
        self.engines
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(tenant)
            .filter(|(g, _)| *g == generation)
            .map(|(_, h)| h.clone())
    }

    /// The open engines, by tenant.
    pub fn open(&self) -> Vec<(String, Arc<Hippo>)> {
        self.engines
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(t, (_, h))| (t.clone(), h.clone()))
            .collect()
    }

    /// Closes the engines of tenants not in `live` (tenant → generation) or
    /// open at another generation; returns the tenants closed. Work in
    /// flight keeps its engine until it finishes.
    pub fn retain(&self, live: &BTreeMap<String, i64>) -> Vec<String> {
        let mut engines = self.engines.write().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<String> = engines
            .iter()
            .filter(|(t, (g, _))| live.get(*t) != Some(g))
            .map(|(t, _)| t.clone())
            .collect();
        for t in &gone {
            engines.remove(t);
            tracing::info!(tenant = t, "tenant erased: store closed");
        }
        gone
    }
}

//! The engines of a server's tenants: one [`Hippo`] per tenant store file
//! (see [`crate::auth::tenant_db`]), opened on first use and kept open,
//! all sharing one embedder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::Result;
use hippo::Hippo;

/// Opens the engine of a store file.
pub type Opener = Box<dyn Fn(&Path) -> Result<Hippo> + Send + Sync>;

/// The open tenants of a server.
pub struct Tenants {
    db: PathBuf,
    open: Opener,
    engines: RwLock<BTreeMap<String, Arc<Hippo>>>,
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

    /// The engine of `tenant`, opening its store (created if absent) on
    /// first use. The caller has checked that the tenant exists.
    pub fn get(&self, tenant: &str) -> Result<Arc<Hippo>> {
        if let Some(h) = self.get_open(tenant) {
            return Ok(h);
        }
        let mut engines = self.engines.write().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = engines.get(tenant) {
            return Ok(h.clone());
        }
        crate::auth::validate_tenant(tenant)?;
        let db = crate::auth::tenant_db(&self.db, tenant);
        if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let hippo = Arc::new((self.open)(&db)?);
        engines.insert(tenant.to_owned(), hippo.clone());
        tracing::info!(tenant, "tenant store opened");
        Ok(hippo)
    }

    /// The engine of `tenant` if it is open (no disk access).
    pub fn get_open(&self, tenant: &str) -> Option<Arc<Hippo>> {
        self.engines
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(tenant)
            .cloned()
    }

    /// The open engines, by tenant.
    pub fn open(&self) -> Vec<(String, Arc<Hippo>)> {
        self.engines
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(t, h)| (t.clone(), h.clone()))
            .collect()
    }
}

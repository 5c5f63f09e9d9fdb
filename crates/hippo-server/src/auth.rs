//! Tenants and API keys: the control plane of `hippo serve`.
//!
//! A tenant (an organisation) is a store of its own: the `default` tenant is
//! the `--db` file, every other tenant a file of its own next to it (see
//! [`tenant_db`]; `<db stem>.tenants/<name>.db`). Isolation is therefore
//! physical: a request is bound to one tenant's engine before any handler
//! runs, and no query, by id or otherwise, can reach another tenant's file.
//! Erasing a tenant deletes its files. Users, agents and sessions are scopes
//! inside a tenant.
//!
//! Keys live in the control database (`<db stem>.control.db`): each has an
//! id, a tenant, an access level (read < write < admin), an optional expiry
//! and revocation time, optionally a user or agent it acts for (`ActsFor`),
//! and the SHA-256 of its secret (never the secret), compared in constant
//! time. A key reads `hk_<id>_<secret>` (16 + 64 hex digits); it is shown
//! once, when created. Keys are random (244 bits), so a fast hash is enough:
//! there is nothing to brute-force. Rotation makes a new key and keeps the
//! old one valid for a grace period.
//!
//! The database is read on every request, with no cache to go stale, so
//! revocation and expiry take effect at once, also when another process (the
//! CLI) made them. Keys become mandatory the moment the first one is created,
//! by any process: `create_key` writes the `keys_required_since` marker in
//! its transaction (audited as `keys_required`), and the marker is never
//! removed, so revoking every key never reopens a server. A key's tenant
//! comes with its *generation* (creation time), so a tenant erased and
//! created again is never served from the old store (see `crate::tenants`).
//! Refusals are 401 (with `WWW-Authenticate`) or 403, counted in
//! `hippo_auth_failures_total{reason}`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Duration, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The tenant of the `--db` file.
pub const DEFAULT_TENANT: &str = "default";

/// What a key may do; each level includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Search, list, get, history, profile, jobs.
    Read,
    /// Read, and add, update, delete, restore, invalidate, feedback, archive.
    Write,
    /// Write, and erase (memories, scopes), maintenance.
    Admin,
}

impl Access {
    /// The stable lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::Admin => "admin",
        }
    }

    /// Parses `read`, `write` or `admin`.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "read" => Access::Read,
            "write" => Access::Write,
            "admin" => Access::Admin,
            other => bail!("unknown access {other:?}: use read, write or admin"),
        })
    }
}

/// A key as stored (without its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    /// Public id (the part after `hk_`).
    pub id: String,
    /// The tenant it opens.
    pub tenant: String,
    /// What it may do.
    pub access: Access,
    /// A label for people.
    pub name: Option<String>,
    /// When created.
    pub created_at: DateTime<Utc>,
    /// Not valid from this time on.
    pub expires_at: Option<DateTime<Utc>>,
    /// Revoked at this time.
    pub revoked_at: Option<DateTime<Utc>>,
    /// The user (and/or agent) the key acts for: its requests are confined
    /// to that user's (agent's) memories and what is shared with them.
    /// Neither: a service key for the whole tenant.
    #[serde(flatten)]
    pub acts_for: ActsFor,
}

/// Whom a key acts for (see [`KeyInfo::acts_for`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ActsFor {
    /// The user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
}

impl ActsFor {
    /// Whether the key is bound to a user or agent.
    pub fn is_bound(&self) -> bool {
        self.user_id.is_some() || self.agent_id.is_some()
    }
}

/// What to create a key with.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// The tenant it opens.
    pub tenant: String,
    /// What it may do.
    pub access: Access,
    /// A label for people.
    pub name: Option<String>,
    /// Not valid from this time on.
    pub expires_at: Option<DateTime<Utc>>,
    /// Whom it acts for.
    pub acts_for: ActsFor,
}

impl NewKey {
    /// A tenant-wide key without a name or expiry.
    #[cfg(test)]
    pub fn new(tenant: &str, access: Access) -> Self {
        NewKey {
            tenant: tenant.to_owned(),
            access,
            name: None,
            expires_at: None,
            acts_for: ActsFor::default(),
        }
    }
}

/// Why a presented key was refused (all map to HTTP 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not of the form `hk_<id>_<secret>`.
    Malformed,
    /// No such key, or the secret does not match.
    Unknown,
    /// Revoked.
    Revoked,
    /// Past its expiry.
    Expired,
}

impl Refusal {
    /// A short label (metrics).
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::Unknown => "invalid",
            Refusal::Revoked => "revoked",
            Refusal::Expired => "expired",
        }
    }

    /// A message that says what is wrong without saying what exists.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed API key",
            Refusal::Unknown => "invalid API key",
            Refusal::Revoked => "API key revoked",
            Refusal::Expired => "API key expired",
        }
    }
}

/// The store file of `tenant`, given the `--db` file.
pub fn tenant_db(db: &Path, tenant: &str) -> PathBuf {
    if tenant == DEFAULT_TENANT {
        return db.to_path_buf();
    }
    sibling(db, "tenants").join(format!("{tenant}.db"))
}

/// The control database, given the `--db` file.
pub fn control_db(db: &Path) -> PathBuf {
    sibling(db, "control.db")
}

/// `<dir>/<db stem>.<suffix>`.
fn sibling(db: &Path, suffix: &str) -> PathBuf {
    let stem = db
        .file_stem()
        .map_or_else(|| "hippo".into(), |s| s.to_string_lossy().into_owned());
    db.with_file_name(format!("{stem}.{suffix}"))
}

/// Checks a tenant id: 1 to 64 of `a-z 0-9 _ -`, starting with a letter or
/// digit (it names a file).
pub fn validate_tenant(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !ok {
        bail!("invalid tenant id {id:?}: use 1-64 of a-z, 0-9, '_' and '-', starting with a letter or digit");
    }
    Ok(())
}

fn hash(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Equal strings, in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn time(ms: Option<i64>) -> Option<DateTime<Utc>> {
    ms.and_then(DateTime::from_timestamp_millis)
}

/// The control database: tenants and keys.
pub struct Control {
    conn: Mutex<Connection>,
    /// Keys are required (see [`Control::keys_required`]); once true it
    /// stays true, so it is cached.
    required: std::sync::atomic::AtomicBool,
}

/// A key that authenticated, with the generation of its tenant (see
/// [`Control::tenant_generations`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// The key.
    pub key: KeyInfo,
    /// When its tenant was created, in epoch ms (0 for the default tenant):
    /// a tenant erased and created again under the same name is another
    /// generation, and must not be served from the old store.
    pub tenant_generation: i64,
}

/// The `control_meta` entry that says keys are required: written with the
/// first key and never removed, so that revoking or erasing every key never
/// opens a server that once required them.
const KEYS_REQUIRED: &str = "keys_required_since";

impl Control {
    /// Opens (creating if needed) the control database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let conn = Connection::open(path)
            .with_context(|| format!("cannot open the control database {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS tenants (
                 id         TEXT PRIMARY KEY,
                 created_at INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS api_keys (
                 id          TEXT PRIMARY KEY,
                 tenant      TEXT NOT NULL,
                 access      TEXT NOT NULL,
                 name        TEXT,
                 secret_hash TEXT NOT NULL,
                 created_at  INTEGER NOT NULL,
                 expires_at  INTEGER,
                 revoked_at  INTEGER
             );
             CREATE INDEX IF NOT EXISTS api_keys_tenant ON api_keys(tenant);
             CREATE TABLE IF NOT EXISTS audit_log (
                 seq       INTEGER PRIMARY KEY,
                 at        INTEGER NOT NULL,
                 actor     TEXT NOT NULL,
                 action    TEXT NOT NULL,
                 target    TEXT NOT NULL,
                 detail    TEXT NOT NULL,
                 prev_hash TEXT NOT NULL,
                 hash      TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS control_meta (
                 key   TEXT PRIMARY KEY,
                 value TEXT NOT NULL
             );",
        )?;
        // Keys bound to a user or agent came later: add the columns to an
        // older control database.
        let bound: bool = conn
            .query_row(
                "SELECT COUNT(*) FROM pragma_table_info('api_keys') WHERE name = 'user_id'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)?;
        if !bound {
            conn.execute_batch(
                "ALTER TABLE api_keys ADD COLUMN user_id TEXT;
                 ALTER TABLE api_keys ADD COLUMN agent_id TEXT;",
            )?;
        }
        // Control databases from before the marker: keys already exist.
        conn.execute(
            "INSERT OR IGNORE INTO control_meta (key, value)
             SELECT ?1, CAST(MIN(created_at) AS TEXT) FROM api_keys HAVING COUNT(*) > 0",
            [KEYS_REQUIRED],
        )?;
        Ok(Control {
            conn: Mutex::new(conn),
            required: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Whether every request needs a key: true from the moment the first key
    /// is created (by this process or any other, such as the CLI while
    /// `serve` runs) and for ever after. Asks the database until it is true,
    /// then answers from memory.
    pub fn keys_required(&self) -> Result<bool> {
        use std::sync::atomic::Ordering;
        if self.required.load(Ordering::Acquire) {
            return Ok(true);
        }
        let required = self
            .conn()
            .query_row(
                "SELECT 1 FROM control_meta WHERE key = ?1",
                [KEYS_REQUIRED],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if required && !self.required.swap(true, Ordering::AcqRel) {
            tracing::info!("API keys are required from now on");
        }
        Ok(required)
    }

    /// Whether keys are known to be required, without asking the database
    /// (once true, [`Control::keys_required`] stays true).
    pub fn keys_required_known(&self) -> bool {
        self.required.load(std::sync::atomic::Ordering::Acquire)
    }

    /// A number that changes whenever another connection (another process,
    /// such as the CLI) commits to the control database (SQLite's
    /// `data_version`).
    pub fn data_version(&self) -> Result<i64> {
        Ok(self
            .conn()
            .query_row("PRAGMA data_version", [], |r| r.get(0))?)
    }

    /// Every tenant with its generation (creation time in epoch ms; 0 for
    /// the default tenant).
    pub fn tenant_generations(&self) -> Result<BTreeMap<String, i64>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT id, created_at FROM tenants")?;
        let mut out = BTreeMap::from([(
            DEFAULT_TENANT.to_owned(),
            crate::tenants::DEFAULT_GENERATION,
        )]);
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
            let (id, at) = row?;
            out.insert(id, at);
        }
        Ok(out)
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends an entry to the control plane's audit log (tenant and key
    /// operations, authentication failures), hash-chained like the stores'
    /// (see [`hippo::audit`]). The actor is the ambient one
    /// ([`hippo::audit::as_actor`]).
    pub fn audit(&self, action: &str, target: &str, detail: serde_json::Value) -> Result<()> {
        let detail = match detail {
            serde_json::Value::Object(m) => m,
            _ => serde_json::Map::new(),
        };
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        hippo::audit::sql::append(
            &tx,
            "control_meta",
            vec![(action.into(), target.into(), detail)],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Checks the control plane's audit chain.
    pub fn verify_audit(&self) -> Result<hippo::audit::AuditCheck> {
        Ok(hippo::audit::sql::check(&self.conn(), "control_meta")?)
    }

    /// The control plane's audit entries after `after`, oldest first.
    pub fn audit_entries(&self, after: i64, limit: usize) -> Result<Vec<hippo::audit::AuditEntry>> {
        Ok(hippo::audit::sql::entries(&self.conn(), after, limit)?)
    }

    /// Registers a tenant (the default tenant always exists).
    pub fn create_tenant(&self, id: &str, now: DateTime<Utc>) -> Result<()> {
        validate_tenant(id)?;
        if id == DEFAULT_TENANT || self.tenant_exists(id)? {
            bail!("tenant {id:?} exists already");
        }
        self.conn().execute(
            "INSERT INTO tenants (id, created_at) VALUES (?1, ?2)",
            params![id, ms(now)],
        )?;
        self.audit("tenant_create", id, serde_json::json!({}))?;
        Ok(())
    }

    /// Whether `id` is a tenant.
    pub fn tenant_exists(&self, id: &str) -> Result<bool> {
        if id == DEFAULT_TENANT {
            return Ok(true);
        }
        Ok(self
            .conn()
            .query_row("SELECT 1 FROM tenants WHERE id = ?1", [id], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Every tenant, the default one first.
    pub fn tenants(&self) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT id FROM tenants ORDER BY id")?;
        let mut out = vec![DEFAULT_TENANT.to_owned()];
        for id in stmt.query_map([], |r| r.get::<_, String>(0))? {
            out.push(id?);
        }
        Ok(out)
    }

    /// Forgets a tenant and deletes its keys (the caller removes its
    /// files). The default tenant cannot be removed.
    pub fn remove_tenant(&self, id: &str) -> Result<()> {
        if id == DEFAULT_TENANT {
            bail!("the default tenant cannot be removed; erase its memories instead");
        }
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let n = tx.execute("DELETE FROM tenants WHERE id = ?1", [id])?;
        if n == 0 {
            bail!("no tenant {id:?}");
        }
        tx.execute("DELETE FROM api_keys WHERE tenant = ?1", [id])?;
        tx.commit()?;
        drop(conn);
        self.audit("tenant_erase", id, serde_json::json!({}))?;
        Ok(())
    }

    /// Creates a key; returns it with the full key text (shown only now).
    pub fn create_key(&self, new: NewKey, now: DateTime<Utc>) -> Result<(KeyInfo, String)> {
        let NewKey {
            tenant,
            access,
            name,
            expires_at,
            acts_for,
        } = new;
        if !self.tenant_exists(&tenant)? {
            bail!("no tenant {tenant:?}: create it first (hippo tenant create)");
        }
        if acts_for.is_bound() {
            let scope = hippo::Scope {
                user_id: acts_for.user_id.clone(),
                agent_id: acts_for.agent_id.clone(),
                session_id: None,
            };
            scope.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        let id = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
        let secret = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO api_keys (id, tenant, access, name, secret_hash, created_at, expires_at, user_id, agent_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                id,
                tenant,
                access.as_str(),
                name,
                hash(&secret),
                ms(now),
                expires_at.map(ms),
                acts_for.user_id,
                acts_for.agent_id,
            ],
        )?;
        // The first key closes every server of this database to requests
        // without one; the moment is audited in the same transaction.
        let first = tx.execute(
            "INSERT OR IGNORE INTO control_meta (key, value) VALUES (?1, ?2)",
            params![KEYS_REQUIRED, ms(now).to_string()],
        )? == 1;
        if first {
            hippo::audit::sql::append(
                &tx,
                "control_meta",
                vec![(
                    "keys_required".into(),
                    String::new(),
                    serde_json::Map::from_iter([("first_key".to_owned(), id.clone().into())]),
                )],
            )?;
        }
        tx.commit()?;
        drop(conn);
        self.audit(
            "key_create",
            &id,
            serde_json::json!({"tenant": tenant, "access": access.as_str(),
                "user_id": acts_for.user_id, "agent_id": acts_for.agent_id}),
        )?;
        let info = KeyInfo {
            id: id.clone(),
            tenant,
            access,
            name,
            created_at: DateTime::from_timestamp_millis(ms(now)).unwrap_or(now),
            expires_at,
            revoked_at: None,
            acts_for,
        };
        Ok((info, format!("hk_{id}_{secret}")))
    }

    fn read_key(r: &rusqlite::Row<'_>) -> rusqlite::Result<(KeyInfo, String)> {
        let access: String = r.get(2)?;
        Ok((
            KeyInfo {
                id: r.get(0)?,
                tenant: r.get(1)?,
                access: Access::parse(&access).unwrap_or(Access::Read),
                name: r.get(3)?,
                created_at: time(Some(r.get(5)?)).unwrap_or_default(),
                expires_at: time(r.get(6)?),
                revoked_at: time(r.get(7)?),
                acts_for: ActsFor {
                    user_id: r.get(8)?,
                    agent_id: r.get(9)?,
                },
            },
            r.get(4)?,
        ))
    }

    /// Keys (of one tenant, when given), oldest first.
    pub fn keys(&self, tenant: Option<&str>) -> Result<Vec<KeyInfo>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, tenant, access, name, secret_hash, created_at, expires_at, revoked_at, user_id, agent_id
             FROM api_keys WHERE ?1 IS NULL OR tenant = ?1 ORDER BY created_at, id",
        )?;
        let rows = stmt.query_map([tenant], Self::read_key)?;
        Ok(rows.map(|r| r.map(|(k, _)| k)).collect::<Result<_, _>>()?)
    }

    /// Revokes key `id` from `now` on.
    pub fn revoke(&self, id: &str, now: DateTime<Utc>) -> Result<()> {
        let n = self.conn().execute(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
            params![id, ms(now)],
        )?;
        if n == 0 {
            bail!("no key {id:?}");
        }
        self.audit("key_revoke", id, serde_json::json!({}))?;
        Ok(())
    }

    /// Rotates key `id`: a new key with the same tenant, access and name,
    /// while the old one stays valid for `grace` (so clients can switch).
    pub fn rotate(
        &self,
        id: &str,
        grace: Duration,
        now: DateTime<Utc>,
    ) -> Result<(KeyInfo, String)> {
        let old = self
            .keys(None)?
            .into_iter()
            .find(|k| k.id == id)
            .with_context(|| format!("no key {id:?}"))?;
        if old.revoked_at.is_some() {
            bail!("key {id:?} is revoked");
        }
        let created = self.create_key(
            NewKey {
                tenant: old.tenant.clone(),
                access: old.access,
                name: old.name.clone(),
                expires_at: old.expires_at,
                acts_for: old.acts_for.clone(),
            },
            now,
        )?;
        self.audit(
            "key_rotate",
            id,
            serde_json::json!({"replaced_by": created.0.id}),
        )?;
        let until = now + grace;
        self.conn().execute(
            "UPDATE api_keys SET expires_at = MIN(COALESCE(expires_at, ?2), ?2) WHERE id = ?1",
            params![id, ms(until)],
        )?;
        Ok(created)
    }

    /// The key `presented` names, if it is valid at `now`, with its tenant's
    /// generation. A key whose tenant is gone is unknown.
    pub fn authenticate(
        &self,
        presented: &str,
        now: DateTime<Utc>,
    ) -> Result<Authenticated, Refusal> {
        let rest = presented.strip_prefix("hk_").ok_or(Refusal::Malformed)?;
        let (id, secret) = rest.split_once('_').ok_or(Refusal::Malformed)?;
        if id.len() != 16 || secret.len() != 64 {
            return Err(Refusal::Malformed);
        }
        let row = self
            .conn()
            .query_row(
                "SELECT k.id, k.tenant, k.access, k.name, k.secret_hash, k.created_at, k.expires_at,
                        k.revoked_at, k.user_id, k.agent_id, t.created_at
                 FROM api_keys k LEFT JOIN tenants t ON t.id = k.tenant WHERE k.id = ?1",
                [id],
                |r| Ok((Self::read_key(r)?, r.get::<_, Option<i64>>(10)?)),
            )
            .optional()
            .map_err(|e| {
                tracing::error!(error = %e, "reading API keys");
                Refusal::Unknown
            })?;
        let ((key, stored), created) = row.ok_or(Refusal::Unknown)?;
        let tenant_generation = match created {
            _ if key.tenant == DEFAULT_TENANT => crate::tenants::DEFAULT_GENERATION,
            Some(at) => at,
            None => return Err(Refusal::Unknown),
        };
        if !same(&hash(secret), &stored) {
            return Err(Refusal::Unknown);
        }
        if key.revoked_at.is_some_and(|t| t <= now) {
            return Err(Refusal::Revoked);
        }
        if key.expires_at.is_some_and(|t| t <= now) {
            return Err(Refusal::Expired);
        }
        Ok(Authenticated {
            key,
            tenant_generation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control() -> (tempfile::TempDir, Control) {
        let dir = tempfile::tempdir().unwrap();
        let c = Control::open(&control_db(&dir.path().join("h.db"))).unwrap();
        (dir, c)
    }

    #[test]
    fn paths_sit_next_to_the_db_file() {
        let db = Path::new("/data/h.db");
        assert_eq!(tenant_db(db, DEFAULT_TENANT), db);
        assert_eq!(tenant_db(db, "acme"), Path::new("/data/h.tenants/acme.db"));
        assert_eq!(control_db(db), Path::new("/data/h.control.db"));
    }

    #[test]
    fn tenant_ids_name_files_safely() {
        for ok in ["acme", "a", "team-7_x", &"a".repeat(64)] {
            validate_tenant(ok).unwrap();
        }
        for bad in ["", "Acme", "-x", "../x", "a/b", "a.b", &"a".repeat(65), "é"] {
            assert!(validate_tenant(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn keys_authenticate_until_revoked_or_expired() {
        let (_d, c) = control();
        let now = Utc::now();
        assert!(!c.keys_required().unwrap());
        assert!(
            c.create_key(NewKey::new("acme", Access::Read), now)
                .is_err(),
            "no tenant"
        );
        c.create_tenant("acme", now).unwrap();
        assert!(c.create_tenant("acme", now).is_err());
        assert!(c.create_tenant(DEFAULT_TENANT, now).is_err());
        let (info, key) = c
            .create_key(
                NewKey {
                    name: Some("ci".into()),
                    ..NewKey::new("acme", Access::Write)
                },
                now,
            )
            .unwrap();
        assert!(c.keys_required().unwrap());
        assert_eq!(c.authenticate(&key, now).unwrap().key, info);
        // A wrong secret of the right shape, a malformed key, an unknown id.
        let mut wrong = key.clone();
        wrong.replace_range(key.len() - 1.., if key.ends_with('0') { "1" } else { "0" });
        assert_eq!(c.authenticate(&wrong, now), Err(Refusal::Unknown));
        assert_eq!(c.authenticate("Bearer x", now), Err(Refusal::Malformed));
        assert_eq!(
            c.authenticate(&format!("hk_{}_{}", "0".repeat(16), "0".repeat(64)), now),
            Err(Refusal::Unknown)
        );
        // Rotation: both work during the grace period, then only the new.
        let (_, new) = c.rotate(&info.id, Duration::hours(1), now).unwrap();
        assert!(c.authenticate(&key, now).is_ok());
        assert!(c.authenticate(&new, now).is_ok());
        let later = now + Duration::hours(2);
        assert_eq!(c.authenticate(&key, later), Err(Refusal::Expired));
        assert!(c.authenticate(&new, later).is_ok());
        c.revoke(&info.id, now).unwrap();
        assert_eq!(c.authenticate(&key, now), Err(Refusal::Revoked));
        assert!(c.revoke("nope", now).is_err());
        assert_eq!(c.keys(Some("acme")).unwrap().len(), 2);
        assert_eq!(c.tenants().unwrap(), vec!["default", "acme"]);
        // Removing a tenant removes its keys.
        c.remove_tenant("acme").unwrap();
        assert_eq!(c.authenticate(&new, now), Err(Refusal::Unknown));
        assert!(c.remove_tenant(DEFAULT_TENANT).is_err());
        // Keys stay required with no key left.
        assert!(c.keys(None).unwrap().is_empty());
        assert!(c.keys_required().unwrap());
    }

    #[test]
    fn another_connection_sees_keys_required_and_new_tenant_generations() {
        let (dir, served) = control();
        assert!(!served.keys_required().unwrap());
        let v0 = served.data_version().unwrap();
        // The CLI is another process: another connection to the same file.
        let cli = Control::open(&control_db(&dir.path().join("h.db"))).unwrap();
        let now = Utc::now();
        cli.create_tenant("acme", now).unwrap();
        let (_, key) = cli
            .create_key(NewKey::new("acme", Access::Read), now)
            .unwrap();
        assert_ne!(served.data_version().unwrap(), v0);
        assert!(served.keys_required().unwrap());
        let first = served.authenticate(&key, now).unwrap().tenant_generation;
        assert_eq!(served.tenant_generations().unwrap()["acme"], first);
        // Erased and created again: another generation, and old keys fail.
        cli.remove_tenant("acme").unwrap();
        cli.create_tenant("acme", now + Duration::seconds(1))
            .unwrap();
        assert_eq!(served.authenticate(&key, now), Err(Refusal::Unknown));
        let (_, key) = cli
            .create_key(NewKey::new("acme", Access::Read), now)
            .unwrap();
        assert_ne!(
            served.authenticate(&key, now).unwrap().tenant_generation,
            first
        );
        // The marker is audited once, with the first key.
        let marks = served
            .audit_entries(0, 100)
            .unwrap()
            .into_iter()
            .filter(|e| e.action == "keys_required")
            .count();
        assert_eq!(marks, 1);
    }

    #[test]
    fn access_levels_are_ordered() {
        assert!(Access::Read < Access::Write && Access::Write < Access::Admin);
        for a in [Access::Read, Access::Write, Access::Admin] {
            assert_eq!(Access::parse(a.as_str()).unwrap(), a);
        }
        assert!(Access::parse("root").is_err());
    }
}

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
//! With memories in Postgres a tenant is its rows there (row-level security
//! keyed on the tenant), and the control plane lives in Postgres too
//! (`hippo_postgres::PgControl`), so every replica reads the same keys;
//! erasing a tenant deletes its keys and rows in one transaction.
//!
//! Keys live in the control database (`<db stem>.control.db`, or Postgres): each has an
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
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Duration, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use sha2::{Digest, Sha256};

use hippo::audit::entries::Item;
use hippo_postgres::{KeyRecord, PgControl, PgDatabase};

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

/// Why a presented key was refused (HTTP 401, except
/// [`Refusal::Unavailable`]: 503).
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
    /// The control plane could not be read (answered 503: the key may be
    /// fine).
    Unavailable,
}

impl Refusal {
    /// A short label (metrics).
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::Unknown => "invalid",
            Refusal::Revoked => "revoked",
            Refusal::Expired => "expired",
            Refusal::Unavailable => "unavailable",
        }
    }

    /// A message that says what is wrong without saying what exists.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed API key",
            Refusal::Unknown => "invalid API key",
            Refusal::Revoked => "API key revoked",
            Refusal::Expired => "API key expired",
            Refusal::Unavailable => "the control database cannot be read; retry later",
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

fn lock(c: &Mutex<Connection>) -> std::sync::MutexGuard<'_, Connection> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}

fn time(ms: Option<i64>) -> Option<DateTime<Utc>> {
    ms.and_then(DateTime::from_timestamp_millis)
}

/// The control plane: tenants and keys, in a SQLite file next to the
/// `--db` file, or in Postgres tables when memories live there (so every
/// replica reads the same keys).
pub struct Control {
    db: ControlDb,
    /// Keys are required (see [`Control::keys_required`]); once true it
    /// stays true, so it is cached.
    required: std::sync::atomic::AtomicBool,
}

enum ControlDb {
    Sqlite(Mutex<Connection>),
    Postgres(PgControl),
}

/// A control plane's contents (see [`Control::dump`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ControlDump {
    /// Created tenants with their creation times (the default one is not
    /// stored).
    pub tenants: Vec<(String, i64)>,
    /// Every key, as stored (secrets only as hashes).
    pub keys: Vec<KeyRecord>,
    /// Since when keys are required, if they are.
    pub keys_required: Option<String>,
    /// The control plane's audit chain.
    pub audit: Vec<hippo::audit::AuditEntry>,
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

/// The SQLite control database's schema.
const SQLITE_SCHEMA: &str = "PRAGMA journal_mode = WAL;
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
     );";

const SQLITE_KEY_COLUMNS: &str =
    "k.id, k.tenant, k.access, k.name, k.secret_hash, k.created_at, k.expires_at, k.revoked_at, k.user_id, k.agent_id";

fn sqlite_key(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyRecord> {
    Ok(KeyRecord {
        id: r.get(0)?,
        tenant: r.get(1)?,
        access: r.get(2)?,
        name: r.get(3)?,
        secret_hash: r.get(4)?,
        created_at: r.get(5)?,
        expires_at: r.get(6)?,
        revoked_at: r.get(7)?,
        user_id: r.get(8)?,
        agent_id: r.get(9)?,
    })
}

/// Inserts key `k` (every column) in `tx`.
fn sqlite_insert_key(tx: &rusqlite::Transaction<'_>, k: &KeyRecord) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO api_keys (id, tenant, access, name, secret_hash, created_at, expires_at,
         revoked_at, user_id, agent_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            k.id,
            k.tenant,
            k.access,
            k.name,
            k.secret_hash,
            k.created_at,
            k.expires_at,
            k.revoked_at,
            k.user_id,
            k.agent_id
        ],
    )?;
    Ok(())
}

/// Runs `sql` with `params` in one transaction of `c`, appending `audit` to
/// the control chain in it when the statement changed a row; whether it did.
fn sqlite_audited(
    c: &Mutex<Connection>,
    sql: &str,
    params: impl rusqlite::Params,
    audit: Vec<Item>,
) -> Result<bool> {
    let mut conn = lock(c);
    let tx = conn.transaction()?;
    let changed = tx.execute(sql, params)? == 1;
    if changed {
        hippo::audit::sql::append(&tx, "control_meta", audit)?;
    }
    tx.commit()?;
    Ok(changed)
}

/// A stored key as the server's, with its secret's hash.
fn key_info(k: KeyRecord) -> (KeyInfo, String) {
    (
        KeyInfo {
            id: k.id,
            tenant: k.tenant,
            access: Access::parse(&k.access).unwrap_or(Access::Read),
            name: k.name,
            created_at: time(Some(k.created_at)).unwrap_or_default(),
            expires_at: time(k.expires_at),
            revoked_at: time(k.revoked_at),
            acts_for: ActsFor {
                user_id: k.user_id,
                agent_id: k.agent_id,
            },
        },
        k.secret_hash,
    )
}

/// One control audit entry: action, target and an object's fields.
fn item(action: &str, target: &str, detail: serde_json::Value) -> Item {
    let detail = match detail {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    (action.into(), target.into(), detail)
}

impl Control {
    /// Opens (creating if needed) the SQLite control database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let conn = Connection::open(path)
            .with_context(|| format!("cannot open the control database {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SQLITE_SCHEMA)?;
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
        Ok(Self::with(ControlDb::Sqlite(Mutex::new(conn))))
    }

    /// The control plane in Postgres database `db` (its tables are made by
    /// the store's schema).
    pub fn postgres(db: Arc<PgDatabase>) -> Self {
        Self::with(ControlDb::Postgres(PgControl::new(db)))
    }

    fn with(db: ControlDb) -> Self {
        Control {
            db,
            required: std::sync::atomic::AtomicBool::new(false),
        }
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
        let required = self.keys_required_since()?.is_some();
        if required && !self.required.swap(true, Ordering::AcqRel) {
            tracing::info!("API keys are required from now on");
        }
        Ok(required)
    }

    /// The [`KEYS_REQUIRED`] marker's value (epoch ms of the first key), if set.
    fn keys_required_since(&self) -> Result<Option<String>> {
        Ok(match &self.db {
            ControlDb::Sqlite(c) => lock(c)
                .query_row(
                    "SELECT value FROM control_meta WHERE key = ?1",
                    [KEYS_REQUIRED],
                    |r| r.get(0),
                )
                .optional()?,
            ControlDb::Postgres(pg) => pg.marker(KEYS_REQUIRED)?,
        })
    }

    /// Whether keys are known to be required, without asking the database
    /// (once true, [`Control::keys_required`] stays true).
    pub fn keys_required_known(&self) -> bool {
        self.required.load(std::sync::atomic::Ordering::Acquire)
    }

    /// A number that changes whenever another connection (another process,
    /// such as the CLI, or another replica) changed the control plane
    /// (SQLite's `data_version`; in Postgres the length of the control
    /// plane's audit chain, since every change is audited).
    pub fn data_version(&self) -> Result<i64> {
        Ok(match &self.db {
            ControlDb::Sqlite(c) => lock(c).query_row("PRAGMA data_version", [], |r| r.get(0))?,
            ControlDb::Postgres(pg) => pg.version()?,
        })
    }

    /// Every tenant with its generation (creation time in epoch ms; 0 for
    /// the default tenant).
    pub fn tenant_generations(&self) -> Result<BTreeMap<String, i64>> {
        let mut out = BTreeMap::from([(
            DEFAULT_TENANT.to_owned(),
            crate::tenants::DEFAULT_GENERATION,
        )]);
        out.extend(self.stored_tenants()?);
        Ok(out)
    }

    /// The created tenants (not the default one) with their creation times,
    /// by name.
    fn stored_tenants(&self) -> Result<Vec<(String, i64)>> {
        match &self.db {
            ControlDb::Sqlite(c) => {
                let conn = lock(c);
                let mut stmt = conn.prepare("SELECT id, created_at FROM tenants ORDER BY id")?;
                let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                Ok(rows.collect::<Result<_, _>>()?)
            }
            ControlDb::Postgres(pg) => Ok(pg.tenants()?),
        }
    }

    /// Appends an entry to the control plane's audit log (tenant and key
    /// operations, authentication failures), hash-chained like the stores'
    /// (see [`hippo::audit`]). The actor is the ambient one
    /// ([`hippo::audit::as_actor`]).
    pub fn audit(&self, action: &str, target: &str, detail: serde_json::Value) -> Result<()> {
        let items = vec![item(action, target, detail)];
        match &self.db {
            ControlDb::Sqlite(c) => {
                let mut conn = lock(c);
                let tx = conn.transaction()?;
                hippo::audit::sql::append(&tx, "control_meta", items)?;
                tx.commit()?;
            }
            ControlDb::Postgres(pg) => pg.audit(items)?,
        }
        Ok(())
    }

    /// Checks the control plane's audit chain.
    pub fn verify_audit(&self) -> Result<hippo::audit::AuditCheck> {
        Ok(match &self.db {
            ControlDb::Sqlite(c) => hippo::audit::sql::check(&lock(c), "control_meta")?,
            ControlDb::Postgres(pg) => pg.verify_audit()?,
        })
    }

    /// The control plane's audit entries after `after`, oldest first.
    pub fn audit_entries(&self, after: i64, limit: usize) -> Result<Vec<hippo::audit::AuditEntry>> {
        Ok(match &self.db {
            ControlDb::Sqlite(c) => hippo::audit::sql::entries(&lock(c), after, limit)?,
            ControlDb::Postgres(pg) => pg.audit_entries(after, limit)?,
        })
    }

    /// Registers a tenant (the default tenant always exists).
    pub fn create_tenant(&self, id: &str, now: DateTime<Utc>) -> Result<()> {
        validate_tenant(id)?;
        let exists = || anyhow::anyhow!("tenant {id:?} exists already");
        if id == DEFAULT_TENANT {
            return Err(exists());
        }
        let audit = vec![item("tenant_create", id, serde_json::json!({}))];
        let created = match &self.db {
            ControlDb::Sqlite(c) => sqlite_audited(
                c,
                "INSERT OR IGNORE INTO tenants (id, created_at) VALUES (?1, ?2)",
                params![id, ms(now)],
                audit,
            )?,
            ControlDb::Postgres(pg) => pg.insert_tenant(id, ms(now), audit)?,
        };
        if !created {
            return Err(exists());
        }
        Ok(())
    }

    /// Whether `id` is a tenant.
    pub fn tenant_exists(&self, id: &str) -> Result<bool> {
        if id == DEFAULT_TENANT {
            return Ok(true);
        }
        Ok(self.stored_tenants()?.iter().any(|(t, _)| t == id))
    }

    /// Every tenant, the default one first.
    pub fn tenants(&self) -> Result<Vec<String>> {
        let mut out = vec![DEFAULT_TENANT.to_owned()];
        out.extend(self.stored_tenants()?.into_iter().map(|(t, _)| t));
        Ok(out)
    }

    /// Forgets a tenant and deletes its keys. In Postgres its rows go in
    /// the same transaction (returned: how many); with SQLite files the
    /// caller removes its files (`None`). The default tenant cannot be
    /// removed.
    pub fn remove_tenant(&self, id: &str) -> Result<Option<u64>> {
        if id == DEFAULT_TENANT {
            bail!("the default tenant cannot be removed; erase its memories instead");
        }
        let audit = vec![item("tenant_erase", id, serde_json::json!({}))];
        match &self.db {
            ControlDb::Sqlite(c) => {
                let mut conn = lock(c);
                let tx = conn.transaction()?;
                let n = tx.execute("DELETE FROM tenants WHERE id = ?1", [id])?;
                if n == 0 {
                    bail!("no tenant {id:?}");
                }
                tx.execute("DELETE FROM api_keys WHERE tenant = ?1", [id])?;
                hippo::audit::sql::append(&tx, "control_meta", audit)?;
                tx.commit()?;
                Ok(None)
            }
            ControlDb::Postgres(pg) => match pg.remove_tenant(id, audit)? {
                Some(rows) => Ok(Some(rows)),
                None => bail!("no tenant {id:?}"),
            },
        }
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
        let record = KeyRecord {
            id: id.clone(),
            tenant: tenant.clone(),
            access: access.as_str().to_owned(),
            name,
            secret_hash: hash(&secret),
            created_at: ms(now),
            expires_at: expires_at.map(ms),
            revoked_at: None,
            user_id: acts_for.user_id.clone(),
            agent_id: acts_for.agent_id.clone(),
        };
        // The first key closes every server of this database to requests
        // without one; the moment is audited in the same transaction.
        let first = item(
            "keys_required",
            "",
            serde_json::json!({"first_key": id.clone()}),
        );
        let audit = vec![item(
            "key_create",
            &id,
            serde_json::json!({"tenant": tenant, "access": access.as_str(),
                "user_id": acts_for.user_id, "agent_id": acts_for.agent_id}),
        )];
        match &self.db {
            ControlDb::Sqlite(c) => {
                let mut conn = lock(c);
                let tx = conn.transaction()?;
                sqlite_insert_key(&tx, &record)?;
                let is_first = tx.execute(
                    "INSERT OR IGNORE INTO control_meta (key, value) VALUES (?1, ?2)",
                    params![KEYS_REQUIRED, record.created_at.to_string()],
                )? == 1;
                let items = is_first.then_some(first).into_iter().chain(audit);
                hippo::audit::sql::append(&tx, "control_meta", items.collect())?;
                tx.commit()?;
            }
            ControlDb::Postgres(pg) => pg.insert_key(&record, KEYS_REQUIRED, first, audit)?,
        }
        let (info, _) = key_info(record);
        Ok((info, format!("hk_{id}_{secret}")))
    }

    /// Keys (of one tenant, when given), oldest first.
    pub fn keys(&self, tenant: Option<&str>) -> Result<Vec<KeyInfo>> {
        Ok(self
            .stored_keys(tenant)?
            .into_iter()
            .map(|k| key_info(k).0)
            .collect())
    }

    /// Keys as stored (of one tenant, when given), oldest first.
    fn stored_keys(&self, tenant: Option<&str>) -> Result<Vec<KeyRecord>> {
        Ok(match &self.db {
            ControlDb::Sqlite(c) => {
                let conn = lock(c);
                let mut stmt = conn.prepare(&format!(
                    "SELECT {SQLITE_KEY_COLUMNS} FROM api_keys k
                     WHERE ?1 IS NULL OR k.tenant = ?1 ORDER BY k.created_at, k.id"
                ))?;
                let rows = stmt.query_map([tenant], sqlite_key)?;
                rows.collect::<Result<Vec<_>, _>>()?
            }
            ControlDb::Postgres(pg) => pg.keys(tenant)?,
        })
    }

    /// Revokes key `id` from `now` on.
    pub fn revoke(&self, id: &str, now: DateTime<Utc>) -> Result<()> {
        let audit = vec![item("key_revoke", id, serde_json::json!({}))];
        let found = match &self.db {
            ControlDb::Sqlite(c) => sqlite_audited(
                c,
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
                params![id, ms(now)],
                audit,
            )?,
            ControlDb::Postgres(pg) => pg.revoke(id, ms(now), audit)?,
        };
        if !found {
            bail!("no key {id:?}");
        }
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
        let (old, _) = self
            .stored_key(id)?
            .with_context(|| format!("no key {id:?}"))?;
        let (old, _) = key_info(old);
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
        let until = ms(now + grace);
        match &self.db {
            ControlDb::Sqlite(c) => {
                lock(c).execute(
                    "UPDATE api_keys SET expires_at = MIN(COALESCE(expires_at, ?2), ?2) WHERE id = ?1",
                    params![id, until],
                )?;
            }
            ControlDb::Postgres(pg) => {
                pg.cap_expiry(id, until)?;
            }
        }
        Ok(created)
    }

    /// Everything the control plane holds, for copying it elsewhere
    /// (`hippo migrate`).
    pub fn dump(&self) -> Result<ControlDump> {
        Ok(ControlDump {
            tenants: self.stored_tenants()?,
            keys: self.stored_keys(None)?,
            keys_required: self.keys_required_since()?,
            audit: self.audit_entries(0, usize::MAX / 2)?,
        })
    }

    /// Writes a control plane copied from elsewhere (see [`Control::dump`])
    /// in one transaction. Returns false, writing nothing, when this one
    /// already holds exactly that copy (a resumed migration); refuses when
    /// it holds anything else.
    pub fn load(&self, dump: &ControlDump) -> Result<bool> {
        let mine = self.audit_entries(0, usize::MAX / 2)?;
        let tenants = self.stored_tenants()?;
        if !mine.is_empty() || !tenants.is_empty() {
            if mine == dump.audit && tenants == dump.tenants {
                return Ok(false);
            }
            bail!("the destination's control plane already holds tenants, keys or audit entries");
        }
        match &self.db {
            ControlDb::Sqlite(c) => {
                let mut conn = lock(c);
                let tx = conn.transaction()?;
                if tx.query_row("SELECT count(*) FROM api_keys", [], |r| r.get::<_, i64>(0))? > 0 {
                    bail!("the destination's control plane already holds keys");
                }
                for (id, at) in &dump.tenants {
                    tx.execute(
                        "INSERT INTO tenants (id, created_at) VALUES (?1, ?2)",
                        params![id, at],
                    )?;
                }
                for k in &dump.keys {
                    sqlite_insert_key(&tx, k)?;
                }
                if let Some(v) = &dump.keys_required {
                    tx.execute(
                        "INSERT INTO control_meta (key, value) VALUES (?1, ?2)",
                        params![KEYS_REQUIRED, v],
                    )?;
                }
                hippo::audit::sql::import(&tx, "control_meta", &dump.audit)?;
                tx.commit()?;
            }
            ControlDb::Postgres(pg) => pg.load(
                &dump.tenants,
                &dump.keys,
                dump.keys_required.as_deref().map(|v| (KEYS_REQUIRED, v)),
                &dump.audit,
            )?,
        }
        Ok(true)
    }

    /// Key `id` as stored, with its tenant's creation time (`None` when the
    /// tenant is not registered).
    fn stored_key(&self, id: &str) -> Result<Option<(KeyRecord, Option<i64>)>> {
        Ok(match &self.db {
            ControlDb::Sqlite(c) => lock(c)
                .query_row(
                    &format!(
                        "SELECT {SQLITE_KEY_COLUMNS}, t.created_at
                         FROM api_keys k LEFT JOIN tenants t ON t.id = k.tenant WHERE k.id = ?1"
                    ),
                    [id],
                    |r| Ok((sqlite_key(r)?, r.get::<_, Option<i64>>(10)?)),
                )
                .optional()?,
            ControlDb::Postgres(pg) => pg.key(id)?,
        })
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
        let row = self.stored_key(id).map_err(|e| {
            tracing::error!(error = %e, "reading API keys");
            Refusal::Unavailable
        })?;
        let (record, created) = row.ok_or(Refusal::Unknown)?;
        let (key, stored) = key_info(record);
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

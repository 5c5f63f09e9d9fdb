//! The control plane in Postgres: tenants, API keys and the keys-required
//! marker, in tables every replica reads, so a key created, revoked or
//! rotated by any process (the CLI, another replica) counts everywhere on
//! the next request. What the rows mean (key format, hashing, checks) is
//! the server's business (`hippo_server::auth`); this module only keeps
//! them.
//!
//! The control plane's audit chain is an ordinary chain in `audit_log`,
//! under the reserved tenant [`CONTROL_TENANT`] (not a valid tenant name),
//! and each change is audited in its own transaction. Control writes are
//! serialized by that tenant's write lock, so the chain stays linear across
//! replicas.

use std::sync::Arc;

use hippo::audit::entries::Item;
use hippo::audit::{AuditCheck, AuditEntry};
use hippo::Result;

use crate::conn::Tx;
use crate::store::{PostgresStore, TxResult};
use crate::{bind_tenant, schema, PgDatabase};

/// The tenant whose audit chain is the control plane's: `*` cannot start a
/// tenant name, so no tenant can read or erase it.
pub const CONTROL_TENANT: &str = "*control";

/// An API key's row, as stored (times in epoch ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// Its id (the public part of the key).
    pub id: String,
    /// The tenant it opens.
    pub tenant: String,
    /// Its access level, as the server names it.
    pub access: String,
    /// A label.
    pub name: Option<String>,
    /// The SHA-256 of its secret, in hex.
    pub secret_hash: String,
    /// Created, in epoch ms.
    pub created_at: i64,
    /// Expires, in epoch ms.
    pub expires_at: Option<i64>,
    /// Revoked, in epoch ms.
    pub revoked_at: Option<i64>,
    /// The user it acts for.
    pub user_id: Option<String>,
    /// The agent it acts for.
    pub agent_id: Option<String>,
}

const KEY_COLUMNS: &str = "k.id, k.tenant, k.access, k.name, k.secret_hash, k.created_at, \
                           k.expires_at, k.revoked_at, k.user_id, k.agent_id";

fn key(r: &postgres::Row) -> KeyRecord {
    KeyRecord {
        id: r.get(0),
        tenant: r.get(1),
        access: r.get(2),
        name: r.get(3),
        secret_hash: r.get(4),
        created_at: r.get(5),
        expires_at: r.get(6),
        revoked_at: r.get(7),
        user_id: r.get(8),
        agent_id: r.get(9),
    }
}

/// Inserts key `k` (every column) in `tx`.
fn insert_key_row(tx: &mut Tx<'_>, k: &KeyRecord) -> TxResult<()> {
    tx.execute(
        "INSERT INTO control_keys (id, tenant, access, name, secret_hash, created_at, expires_at,
         revoked_at, user_id, agent_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[
            &k.id,
            &k.tenant,
            &k.access,
            &k.name,
            &k.secret_hash,
            &k.created_at,
            &k.expires_at,
            &k.revoked_at,
            &k.user_id,
            &k.agent_id,
        ],
    )?;
    Ok(())
}

/// The control plane of a [`PgDatabase`].
#[derive(Clone)]
pub struct PgControl {
    db: Arc<PgDatabase>,
}

impl std::fmt::Debug for PgControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgControl").finish_non_exhaustive()
    }
}

impl PgControl {
    /// The control plane of `db`.
    pub fn new(db: Arc<PgDatabase>) -> Self {
        PgControl { db }
    }

    fn read<T>(&self, f: impl FnMut(&mut Tx<'_>) -> TxResult<T>) -> Result<T> {
        self.db.run(CONTROL_TENANT, false, f)
    }

    fn write<T>(&self, f: impl FnMut(&mut Tx<'_>) -> TxResult<T>) -> Result<T> {
        self.db.run(CONTROL_TENANT, true, f)
    }

    /// Runs `sql` in a control write, appending `audit` to the control chain
    /// in the same transaction when it changed a row; whether it did.
    fn write_audited(
        &self,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
        audit: Vec<Item>,
    ) -> Result<bool> {
        self.write(|tx| {
            let changed = tx.execute(sql, params)? == 1;
            if changed {
                PostgresStore::append_audit(tx, audit.clone())?;
            }
            Ok(changed)
        })
    }

    /// The value of marker `key`, if set.
    pub fn marker(&self, key: &str) -> Result<Option<String>> {
        self.read(|tx| {
            Ok(tx
                .query_opt("SELECT value FROM control_meta WHERE key = $1", &[&key])?
                .map(|r| r.get(0)))
        })
    }

    /// A number that grows with every audited control change (the length
    /// of the control plane's audit chain): replicas poll it to notice
    /// tenants erased or created by another process.
    pub fn version(&self) -> Result<i64> {
        self.read(|tx| {
            Ok(tx
                .query_one(
                    "SELECT COALESCE(MAX(seq), 0) FROM audit_log WHERE tenant = current_setting('hippo.tenant')",
                    &[],
                )?
                .get(0))
        })
    }

    /// Every tenant with its creation time (epoch ms), by name.
    pub fn tenants(&self) -> Result<Vec<(String, i64)>> {
        self.read(|tx| {
            Ok(tx
                .query(
                    "SELECT id, created_at FROM control_tenants ORDER BY id",
                    &[],
                )?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect())
        })
    }

    /// Adds tenant `id` created at `at`, with its audit entries; false (and
    /// nothing written) when it exists.
    pub fn insert_tenant(&self, id: &str, at: i64, audit: Vec<Item>) -> Result<bool> {
        self.write_audited(
            "INSERT INTO control_tenants (id, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&id, &at],
            audit,
        )
    }

    /// Removes tenant `id`, its keys and every row of its memories, logs,
    /// jobs and grants, in one transaction (a crash cannot leave a tenant's
    /// data behind for a later tenant of the same name); returns the number
    /// of data rows deleted, or `None` when there is no such tenant.
    pub fn remove_tenant(&self, id: &str, audit: Vec<Item>) -> Result<Option<u64>> {
        self.write(|tx| {
            let n = tx.execute("DELETE FROM control_tenants WHERE id = $1", &[&id])?;
            if n == 0 {
                return Ok(None);
            }
            tx.execute("DELETE FROM control_keys WHERE tenant = $1", &[&id])?;
            PostgresStore::append_audit(tx, audit.clone())?;
            // The tenant's rows are visible (and deletable) only bound to it.
            bind_tenant(tx, id, true)?;
            let mut rows = 0;
            for table in schema::TENANT_TABLES {
                rows += tx.execute(
                    &format!("DELETE FROM {table} WHERE tenant = current_setting('hippo.tenant')"),
                    &[],
                )?;
            }
            Ok(Some(rows))
        })
    }

    /// Stores key `k` with its audit entries. When no key was ever created
    /// before, marker `first_marker` is set to `k`'s creation time and
    /// `first_audit` is appended first, in the same transaction.
    pub fn insert_key(
        &self,
        k: &KeyRecord,
        first_marker: &str,
        first_audit: Item,
        audit: Vec<Item>,
    ) -> Result<()> {
        self.write(|tx| {
            insert_key_row(tx, k)?;
            let first = tx.execute(
                "INSERT INTO control_meta (key, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&first_marker, &k.created_at.to_string()],
            )? == 1;
            let mut items = Vec::new();
            if first {
                items.push(first_audit.clone());
            }
            items.extend(audit.iter().cloned());
            PostgresStore::append_audit(tx, items)?;
            Ok(())
        })
    }

    /// Keys (of one tenant, when given), oldest first.
    pub fn keys(&self, tenant: Option<&str>) -> Result<Vec<KeyRecord>> {
        self.read(|tx| {
            Ok(tx
                .query(
                    &format!(
                        "SELECT {KEY_COLUMNS} FROM control_keys k
                         WHERE $1::text IS NULL OR k.tenant = $1 ORDER BY k.created_at, k.id"
                    ),
                    &[&tenant],
                )?
                .iter()
                .map(key)
                .collect())
        })
    }

    /// Key `id`, with its tenant's creation time (`None` when the tenant is
    /// not in `control_tenants`).
    pub fn key(&self, id: &str) -> Result<Option<(KeyRecord, Option<i64>)>> {
        self.read(|tx| {
            Ok(tx
                .query_opt(
                    &format!(
                        "SELECT {KEY_COLUMNS}, t.created_at FROM control_keys k
                         LEFT JOIN control_tenants t ON t.id = k.tenant WHERE k.id = $1"
                    ),
                    &[&id],
                )?
                .map(|r| (key(&r), r.get(10))))
        })
    }

    /// Revokes key `id` from `at` (an earlier revocation stands), with its
    /// audit entries; false when there is no such key.
    pub fn revoke(&self, id: &str, at: i64, audit: Vec<Item>) -> Result<bool> {
        self.write_audited(
            "UPDATE control_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1",
            &[&id, &at],
            audit,
        )
    }

    /// Makes key `id` expire by `until` at the latest; false when there is
    /// no such key.
    pub fn cap_expiry(&self, id: &str, until: i64) -> Result<bool> {
        self.write(|tx| {
            Ok(tx.execute(
                "UPDATE control_keys SET expires_at = LEAST(COALESCE(expires_at, $2), $2) WHERE id = $1",
                &[&id, &until],
            )? == 1)
        })
    }

    /// Writes a control plane copied from elsewhere (`hippo migrate`): its
    /// tenants, keys, keys-required marker (`marker` = key and value) and
    /// audit chain entry for entry, in one transaction. Refuses when this
    /// control plane holds anything already.
    pub fn load(
        &self,
        tenants: &[(String, i64)],
        keys: &[KeyRecord],
        marker: Option<(&str, &str)>,
        audit: &[AuditEntry],
    ) -> Result<()> {
        self.write(|tx| {
            let used: i64 = tx
                .query_one(
                    "SELECT (SELECT count(*) FROM control_tenants) + (SELECT count(*) FROM control_keys)
                     + (SELECT count(*) FROM audit_log WHERE tenant = current_setting('hippo.tenant'))",
                    &[],
                )?
                .get(0);
            if used > 0 {
                return Err(crate::store::Fail::Engine(hippo::Error::new(
                    hippo::ErrorKind::Conflict,
                    "the destination's control plane is not empty",
                )));
            }
            for (id, at) in tenants {
                tx.execute(
                    "INSERT INTO control_tenants (id, created_at) VALUES ($1, $2)",
                    &[id, at],
                )?;
            }
            for k in keys {
                insert_key_row(tx, k)?;
            }
            if let Some((key, value)) = marker {
                tx.execute(
                    "INSERT INTO control_meta (key, value) VALUES ($1, $2)",
                    &[&key, &value],
                )?;
            }
            let entries: Vec<&AuditEntry> = audit.iter().collect();
            crate::transfer::import_audit(tx, &entries)?;
            Ok(())
        })
    }

    /// Appends entries to the control plane's audit chain.
    pub fn audit(&self, items: Vec<Item>) -> Result<()> {
        self.write(|tx| {
            PostgresStore::append_audit(tx, items.clone())?;
            Ok(())
        })
    }

    /// Checks the control plane's audit chain.
    pub fn verify_audit(&self) -> Result<AuditCheck> {
        self.read(PostgresStore::verify)
    }

    /// The control plane's audit entries after `after`, oldest first.
    pub fn audit_entries(&self, after: i64, limit: usize) -> Result<Vec<AuditEntry>> {
        self.read(|tx| {
            PostgresStore::audit_rows(tx, after, Some(limit))?
                .into_iter()
                .map(crate::store::audit_entry)
                .collect::<Result<Vec<_>>>()
                .map_err(crate::store::Fail::Engine)
        })
    }
}

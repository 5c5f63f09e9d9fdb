//! `hippo migrate`: moves a whole deployment — every tenant's store and the
//! control plane (tenants, API keys, their audit chain) — from where the
//! settings point (SQLite files or Postgres) to another place, through
//! [`hippo::store::transfer`]: records, vectors carried (no re-embedding),
//! audit chains entry for entry. Stores first, the control plane last, so a
//! destination with a control plane is a finished copy. An interrupted
//! migration resumes where it stopped when run again; the source is only
//! read. Run it with servers stopped: writes made during a copy may be
//! missed.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use hippo::store::transfer::{copy, CopyReport, Table};

use crate::settings::Settings;

/// Records per page (one destination transaction each).
pub const PAGE: usize = 500;

/// What a migration copied.
#[derive(Debug, Clone, Serialize)]
pub struct MigrationReport {
    /// Per tenant: what was copied, and the memories in source and
    /// destination afterwards.
    pub tenants: BTreeMap<String, TenantReport>,
    /// Whether the control plane was written (false: it was copied before,
    /// by the run this one resumed).
    pub control_copied: bool,
    /// Keys carried.
    pub keys: usize,
}

/// One tenant's copy.
#[derive(Debug, Clone, Serialize)]
pub struct TenantReport {
    /// Records written by this run.
    #[serde(flatten)]
    pub copy: CopyReport,
    /// Memories in the source.
    pub source_memories: u64,
    /// Memories in the destination after the copy.
    pub destination_memories: u64,
    /// The destination's audit chain verifies.
    pub audit_ok: bool,
}

/// Copies everything from `from` to `to`; `show` draws progress bars on
/// standard error.
pub fn migrate(from: &Settings, to: &Settings, show: bool) -> Result<MigrationReport> {
    if from.same_place(to) {
        bail!("the source and the destination are the same place");
    }
    let source_control = from
        .control()
        .context("reading the source's control plane")?;
    let dump = source_control.dump()?;
    let mut tenants = vec![crate::auth::DEFAULT_TENANT.to_owned()];
    tenants.extend(dump.tenants.iter().map(|(t, _)| t.clone()));
    let mut report = MigrationReport {
        tenants: BTreeMap::new(),
        control_copied: false,
        keys: dump.keys.len(),
    };
    // Every tenant's rows in one bulk load (on Postgres, the vector index
    // is built once at the end).
    report.tenants = to.bulk_load(|| copy_tenants(from, to, &tenants, show))?;
    let destination_control = to
        .control()
        .context("opening the destination's control plane")?;
    report.control_copied = destination_control.load(&dump)?;
    if !destination_control.verify_audit()?.ok {
        bail!("the destination's control plane audit chain does not verify");
    }
    Ok(report)
}

/// Copies each tenant's store, checking each copy: as many memories as the
/// source holds, and an audit chain that verifies.
fn copy_tenants(
    from: &Settings,
    to: &Settings,
    tenants: &[String],
    show: bool,
) -> Result<BTreeMap<String, TenantReport>> {
    let mut reports = BTreeMap::new();
    for tenant in tenants {
        let src = from.tenant_store(tenant)?;
        let dst = to.tenant_store(tenant)?;
        let total = src.stats()?.memories;
        let bar = if show {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} {msg:>10} [{bar:30}] {pos}/{len} ({per_sec}, eta {eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(format!("tenant {tenant}"));
            bar
        } else {
            ProgressBar::hidden()
        };
        let copied = copy(src.as_ref(), dst.as_ref(), PAGE, |table, n| {
            bar.set_message(table.name());
            if table == Table::Memories {
                bar.set_position(n.min(total));
            }
        })
        .with_context(|| format!("copying tenant {tenant}"))?;
        bar.finish();
        let audit_ok = dst.verify_audit()?.ok;
        let destination_memories = dst.stats()?.memories;
        if destination_memories != total || !audit_ok {
            bail!(
                "tenant {tenant}: the copy does not check out ({destination_memories} of {total} memories, audit chain {})",
                if audit_ok { "verifies" } else { "broken" }
            );
        }
        reports.insert(
            tenant.clone(),
            TenantReport {
                copy: copied,
                source_memories: total,
                destination_memories,
                audit_ok,
            },
        );
    }
    Ok(reports)
}

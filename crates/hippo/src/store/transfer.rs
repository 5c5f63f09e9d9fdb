//! Copying everything a store holds into another store, table by table
//! (`hippo migrate`: SQLite ↔ Postgres). What crosses is the engine's
//! records, not rows, so each store writes them its own way (keyword
//! documents, conversation chains and vector indexes are rebuilt by the
//! destination as it writes).
//!
//! The copy is lossless for what a store's contents mean: memories with
//! every version, status, validity, usage counters, flags and provenance,
//! and their vectors of the active embedding model (no re-embedding);
//! sources; event logs; rejections; jobs in their state (numbered anew by
//! the destination: job ids are a store's own sequence); grants; and the
//! audit chain entry for entry, so it still verifies. Idempotency records
//! (kept a day, for retries of requests in flight) are not carried.
//!
//! Each [`Store::import`](super::Store::import) writes a page of records and
//! the source cursor it reached in one transaction, so a copy that stops
//! (a crash, ^C) resumes where it stopped without writing anything twice
//! ([`Store::import_progress`](super::Store::import_progress)).

use crate::audit::AuditEntry;
use crate::jobs::Job;
use crate::model::MemoryEvent;
use crate::policy::Rejection;
use crate::sharing::Grant;

use super::{NewMemory, Source};

/// A table of a store, in the order a copy writes them: sources before the
/// memories that name them, memories (in conversation order) before their
/// events, the audit chain last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    /// Whole texts of chunked inputs.
    Sources,
    /// Memories, every version, with their vectors.
    Memories,
    /// Memory event logs.
    Events,
    /// Writes that were not admitted.
    Rejections,
    /// Background jobs.
    Jobs,
    /// Read grants.
    Grants,
    /// The audit chain.
    Audit,
}

impl Table {
    /// Every table, in copy order.
    pub const ALL: [Table; 7] = [
        Table::Sources,
        Table::Memories,
        Table::Events,
        Table::Rejections,
        Table::Jobs,
        Table::Grants,
        Table::Audit,
    ];

    /// Its name (progress keys, messages).
    pub fn name(self) -> &'static str {
        match self {
            Table::Sources => "sources",
            Table::Memories => "memories",
            Table::Events => "events",
            Table::Rejections => "rejections",
            Table::Jobs => "jobs",
            Table::Grants => "grants",
            Table::Audit => "audit",
        }
    }

    /// The store-meta key where a destination records how far the copy of
    /// this table from store `source` got.
    pub fn progress_key(self, source: &str) -> String {
        format!("import.{source}.{}", self.name())
    }
}

/// How far a copy got: the source store (its id), the table and the
/// source cursor reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The source's [`Store::store_id`](super::Store::store_id).
    pub source: String,
    /// The table.
    pub table: Table,
    /// The source cursor of the last record written.
    pub cursor: i64,
}

/// The store-meta key of a store's id.
pub const STORE_ID_KEY: &str = "store_id";

/// One record of a table.
#[derive(Debug, Clone)]
pub enum Record {
    /// A source.
    Source(Source),
    /// A memory and its vector of the active model.
    Memory(Box<NewMemory>),
    /// An event of a memory's log.
    Event(MemoryEvent),
    /// A rejected write.
    Rejection(Rejection),
    /// A job (its id is the source's; the destination numbers it anew).
    Job(Job),
    /// A grant.
    Grant(Grant),
    /// An audit entry, copied as it is (seq, time, actor, hashes).
    Audit(AuditEntry),
}

/// A page of an export: records in the table's order, and the cursor to
/// ask for the next page with (the same as the one given once the table is
/// exhausted).
#[derive(Debug, Clone, Default)]
pub struct ExportPage {
    /// The records.
    pub records: Vec<Record>,
    /// Where the next page starts.
    pub next: i64,
}

/// What [`copy`] wrote, per table.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CopyReport {
    /// Records written by this run, by table name (a resumed copy counts
    /// only what it wrote).
    pub copied: std::collections::BTreeMap<&'static str, u64>,
    /// Whether an earlier, interrupted copy was resumed.
    pub resumed: bool,
}

/// Copies everything `from` holds into `to`, table by table in pages of
/// `page` records, calling `progress` with each table and the records
/// written so far. Resumes an interrupted copy into `to`; refuses a
/// destination that holds memories it did not get from a copy.
pub fn copy(
    from: &dyn super::Store,
    to: &dyn super::Store,
    page: usize,
    mut progress: impl FnMut(Table, u64),
) -> crate::Result<CopyReport> {
    let source = from.store_id()?;
    if source == to.store_id()? {
        return Err(crate::Error::invalid(
            "a store cannot be copied into itself",
        ));
    }
    let mut started = Vec::with_capacity(Table::ALL.len());
    for table in Table::ALL {
        started.push(to.import_progress(&source, table)?);
    }
    let resumed = started.iter().any(|&c| c > 0);
    if !resumed && to.stats()?.memories > 0 {
        return Err(crate::Error::new(
            crate::ErrorKind::Conflict,
            "the destination already holds memories: copy into an empty store",
        ));
    }
    let mut report = CopyReport {
        resumed,
        ..Default::default()
    };
    for (table, mut cursor) in Table::ALL.into_iter().zip(started) {
        let mut copied = 0u64;
        loop {
            let ExportPage { records, next } = from.export(table, cursor, page)?;
            if records.is_empty() {
                break;
            }
            copied += records.len() as u64;
            to.import(
                records,
                &Progress {
                    source: source.clone(),
                    table,
                    cursor: next,
                },
            )?;
            cursor = next;
            progress(table, copied);
        }
        report.copied.insert(table.name(), copied);
    }
    Ok(report)
}

//! [`Store::export`] and [`Store::import`] of the SQLite store (see
//! [`crate::store::transfer`]). Cursors are rowids (sequence numbers), so a
//! page is a keyed range scan whatever the table's size.

use rusqlite::{params, OptionalExtension};

use super::*;
use crate::store::transfer::{ExportPage, Progress, Record, Table, STORE_ID_KEY};
use crate::store::NewMemory;

impl SqliteStore {
    pub(super) fn export_page(&self, table: Table, after: i64, limit: usize) -> Result<ExportPage> {
        let limit = limit.clamp(1, 100_000) as i64;
        let conn = self.reader();
        let mut page = ExportPage {
            records: Vec::new(),
            next: after,
        };
        match table {
            Table::Sources => {
                let mut stmt = conn.prepare_cached(
                    "SELECT rowid, id, user_id, agent_id, session_id, content FROM sources
                     WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![after, limit], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        Source {
                            id: parse_uuid(&r.get::<_, String>(1)?)?,
                            scope: Scope {
                                user_id: r.get(2)?,
                                agent_id: r.get(3)?,
                                session_id: r.get(4)?,
                            },
                            content: r.get(5)?,
                        },
                    ))
                })?;
                for row in rows {
                    let (at, s) = row?;
                    page.next = at;
                    page.records.push(Record::Source(s));
                }
            }
            Table::Memories => {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {MEMORY_COLUMNS}, m.rowid FROM memories m
                     WHERE m.rowid > ?1 ORDER BY m.rowid LIMIT ?2"
                ))?;
                let rows = stmt.query_map(params![after, limit], |r| {
                    Ok((r.get::<_, i64>(MEMORY_COUNT)?, row_to_memory(r)?))
                })?;
                let memories = rows.collect::<rusqlite::Result<Vec<_>>>()?;
                let ids: Vec<MemoryId> = memories.iter().map(|(_, m)| m.id).collect();
                let vectors = self.vectors_read().vectors(&ids);
                for ((at, memory), vector) in memories.into_iter().zip(vectors) {
                    page.next = at;
                    page.records
                        .push(Record::Memory(Box::new(NewMemory { memory, vector })));
                }
            }
            Table::Events => {
                let mut stmt = conn.prepare_cached(
                    "SELECT memory_id, at, kind, origin, reason, request_id, detail, seq FROM memory_events
                     WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![after, limit], |r| {
                    Ok((r.get::<_, i64>(7)?, event_row(r)?))
                })?;
                for row in rows {
                    let (at, e) = row?;
                    page.next = at;
                    page.records.push(Record::Event(e));
                }
            }
            Table::Rejections => {
                drop(conn);
                for r in self.rejections(None, after, limit as usize)? {
                    page.next = r.seq;
                    page.records.push(Record::Rejection(r));
                }
            }
            Table::Jobs => {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE id > ?1 ORDER BY id LIMIT ?2"
                ))?;
                for job in stmt.query_map(params![after, limit], job_row)? {
                    let job = job?;
                    page.next = job.id;
                    page.records.push(Record::Job(job));
                }
            }
            Table::Grants => {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {GRANT_COLUMNS}, m.rowid FROM grants m
                     WHERE m.rowid > ?1 ORDER BY m.rowid LIMIT ?2"
                ))?;
                let rows = stmt.query_map(params![after, limit], |r| {
                    Ok((r.get::<_, i64>(11)?, grant_row(r)?))
                })?;
                for row in rows {
                    let (at, g) = row?;
                    page.next = at;
                    page.records.push(Record::Grant(g));
                }
            }
            Table::Audit => {
                for e in crate::audit::sql::entries(&conn, after, limit as usize)? {
                    page.next = e.seq;
                    page.records.push(Record::Audit(e));
                }
            }
        }
        Ok(page)
    }

    pub(super) fn import_records(&self, records: Vec<Record>, progress: &Progress) -> Result<()> {
        let mut batch = InsertBatch::default();
        let (mut jobs, mut grants, mut audit) = (Vec::new(), Vec::new(), Vec::new());
        for r in records {
            match r {
                Record::Source(s) => batch.sources.push(s),
                Record::Memory(m) => batch.memories.push(*m),
                Record::Event(e) => batch.events.push(e),
                Record::Rejection(r) => batch.rejections.push(r),
                Record::Job(j) => jobs.push(j),
                Record::Grant(g) => grants.push(g),
                Record::Audit(a) => audit.push(a),
            }
        }
        self.write_batch(batch, false, |tx| {
            for j in &jobs {
                tx.prepare_cached(
                    "INSERT INTO jobs (kind, user_id, agent_id, session_id, payload, state, attempts,
                     run_after, lease_until, step, plan, last_error, cost, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                )?
                .execute(params![
                    j.kind,
                    j.scope.user_id,
                    j.scope.agent_id,
                    j.scope.session_id,
                    Value::Object(j.payload.clone()).to_string(),
                    j.state.as_str(),
                    j.attempts,
                    ms(j.run_after),
                    j.lease_until.map(ms),
                    j.step,
                    j.plan.as_ref().map(Value::to_string),
                    j.last_error,
                    Value::Object(j.cost.clone()).to_string(),
                    ms(j.created_at),
                    ms(j.updated_at),
                ])?;
            }
            for g in &grants {
                insert_grant(tx, g)?;
            }
            crate::audit::sql::import(tx, "store_meta", &audit)?;
            tx.prepare_cached(
                "INSERT INTO store_meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![
                progress.table.progress_key(&progress.source),
                progress.cursor.to_string()
            ])?;
            Ok(())
        })?;
        Ok(())
    }

    /// The value of store-meta `key`.
    pub(super) fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .reader()
            .prepare_cached("SELECT value FROM store_meta WHERE key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()?)
    }

    pub(super) fn store_identity(&self) -> Result<String> {
        if let Some(id) = self.meta(STORE_ID_KEY)? {
            return Ok(id);
        }
        self.writer()?.execute(
            "INSERT OR IGNORE INTO store_meta (key, value) VALUES (?1, ?2)",
            params![STORE_ID_KEY, uuid::Uuid::new_v4().to_string()],
        )?;
        self.meta(STORE_ID_KEY)?
            .ok_or_else(|| Error::new(ErrorKind::Internal, "the store id was not kept"))
    }
}

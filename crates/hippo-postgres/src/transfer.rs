//! [`hippo::Store::export`] and [`hippo::Store::import`] of the Postgres
//! store (see [`hippo::store::transfer`]). Cursors are the tables' sequence
//! numbers where they have one; sources and grants (keyed by id) page by
//! position, which is stable because a copy reads a store nothing else
//! writes.

use pgvector::Vector;
use serde_json::Value;

use hippo::store::transfer::{ExportPage, Progress, Record, Table};
use hippo::store::NewMemory;
use hippo::{Error, ErrorKind, Result};

use crate::conn::Tx;
use crate::rows::{self, ms, MEMORY_COLUMNS, MEMORY_COUNT};
use crate::store::{
    get_meta, insert_events, insert_grant, insert_rejections, set_meta, Fail, PostgresStore,
    TxResult,
};

impl PostgresStore {
    pub(crate) fn export_page(&self, table: Table, after: i64, limit: usize) -> Result<ExportPage> {
        let limit = limit.clamp(1, 100_000) as i64;
        let model = self.model.clone();
        self.read(|tx| {
            let mut page = ExportPage {
                records: Vec::new(),
                next: after,
            };
            match table {
                Table::Sources => {
                    let rows = tx.query(
                        "SELECT id, user_id, agent_id, session_id, content FROM sources
                         WHERE tenant = current_setting('hippo.tenant') ORDER BY id OFFSET $1 LIMIT $2",
                        &[&after, &limit],
                    )?;
                    for r in &rows {
                        page.next += 1;
                        page.records.push(Record::Source(hippo::Source {
                            id: r.get(0),
                            scope: hippo::Scope {
                                user_id: r.get(1),
                                agent_id: r.get(2),
                                session_id: r.get(3),
                            },
                            content: r.get(4),
                        }));
                    }
                }
                Table::Memories => {
                    let rows = tx.query(
                        &format!(
                            "SELECT {MEMORY_COLUMNS}, m.seq,
                                    CASE WHEN m.vector_model = $3 THEN m.embedding END
                             FROM memories m WHERE m.tenant = current_setting('hippo.tenant')
                             AND m.seq > $1 ORDER BY m.seq LIMIT $2"
                        ),
                        &[&after, &limit, &model],
                    )?;
                    for r in &rows {
                        page.next = r.get(MEMORY_COUNT);
                        let vector: Option<Vector> = r.get(MEMORY_COUNT + 1);
                        page.records.push(Record::Memory(Box::new(NewMemory {
                            memory: rows::memory(r)?,
                            vector: vector.map(|v| v.to_vec()),
                        })));
                    }
                }
                Table::Events => {
                    let rows = tx.query(
                        &format!(
                            "SELECT {}, seq FROM memory_events WHERE tenant = current_setting('hippo.tenant')
                             AND seq > $1 ORDER BY seq LIMIT $2",
                            rows::EVENT_COLUMNS
                        ),
                        &[&after, &limit],
                    )?;
                    for r in &rows {
                        page.next = r.get(7);
                        page.records.push(Record::Event(rows::event(r)?));
                    }
                }
                Table::Rejections => {
                    let rows = tx.query(
                        &format!(
                            "SELECT {} FROM rejections m WHERE m.tenant = current_setting('hippo.tenant')
                             AND m.seq > $1 ORDER BY m.seq LIMIT $2",
                            rows::REJECTION_COLUMNS
                        ),
                        &[&after, &limit],
                    )?;
                    for r in &rows {
                        let rejection = rows::rejection(r)?;
                        page.next = rejection.seq;
                        page.records.push(Record::Rejection(rejection));
                    }
                }
                Table::Jobs => {
                    let rows = tx.query(
                        &format!(
                            "SELECT {} FROM jobs WHERE tenant = current_setting('hippo.tenant')
                             AND id > $1 ORDER BY id LIMIT $2",
                            rows::JOB_COLUMNS
                        ),
                        &[&after, &limit],
                    )?;
                    for r in &rows {
                        let job = rows::job(r)?;
                        page.next = job.id;
                        page.records.push(Record::Job(job));
                    }
                }
                Table::Grants => {
                    let rows = tx.query(
                        &format!(
                            "SELECT {} FROM grants m WHERE m.tenant = current_setting('hippo.tenant')
                             ORDER BY m.created_at, m.id OFFSET $1 LIMIT $2",
                            rows::GRANT_COLUMNS
                        ),
                        &[&after, &limit],
                    )?;
                    for r in &rows {
                        page.next += 1;
                        page.records.push(Record::Grant(rows::grant(r)?));
                    }
                }
                Table::Audit => {
                    for row in PostgresStore::audit_rows(tx, after, Some(limit as usize))? {
                        let entry = crate::store::audit_entry(row)?;
                        page.next = entry.seq;
                        page.records.push(Record::Audit(entry));
                    }
                }
            }
            Ok(page)
        })
    }

    pub(crate) fn import_records(&self, records: Vec<Record>, progress: &Progress) -> Result<()> {
        for r in &records {
            if let Record::Memory(m) = r {
                if let Some(v) = &m.vector {
                    self.check_dim(v)?;
                }
            }
        }
        self.write(|tx| {
            let memories: Vec<&NewMemory> = records
                .iter()
                .filter_map(|r| match r {
                    Record::Memory(m) => Some(m.as_ref()),
                    _ => None,
                })
                .collect();
            for nm in &memories {
                if PostgresStore::duplicate_of(tx, &nm.memory)?.is_some() {
                    // A copy never merges: the source held each key once.
                    return Err(Fail::Engine(Error::new(
                        ErrorKind::Conflict,
                        format!("memory {} duplicates a stored memory's key", nm.memory.id),
                    )));
                }
            }
            self.insert_copied(tx, &memories)?;
            for r in &records {
                match r {
                    Record::Source(s) => {
                        tx.execute(
                            "INSERT INTO sources (tenant, id, user_id, agent_id, session_id, content)
                             VALUES (current_setting('hippo.tenant'), $1, $2, $3, $4, $5)",
                            &[&s.id, &s.scope.user_id, &s.scope.agent_id, &s.scope.session_id, &s.content],
                        )?;
                    }
                    Record::Memory(_) => {}
                    Record::Event(e) => insert_events(tx, std::slice::from_ref(e))?,
                    Record::Rejection(r) => insert_rejections(tx, std::slice::from_ref(r))?,
                    Record::Job(j) => {
                        tx.execute(
                            "INSERT INTO jobs (tenant, kind, user_id, agent_id, session_id, payload, state,
                             attempts, run_after, lease_until, step, plan, last_error, cost, created_at, updated_at)
                             VALUES (current_setting('hippo.tenant'), $1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
                             $11, $12, $13, $14, $15)",
                            &[
                                &j.kind,
                                &j.scope.user_id,
                                &j.scope.agent_id,
                                &j.scope.session_id,
                                &Value::Object(j.payload.clone()).to_string(),
                                &j.state.as_str(),
                                &(j.attempts as i32),
                                &ms(j.run_after),
                                &j.lease_until.map(ms),
                                &(j.step as i32),
                                &j.plan.as_ref().map(Value::to_string),
                                &j.last_error,
                                &Value::Object(j.cost.clone()).to_string(),
                                &ms(j.created_at),
                                &ms(j.updated_at),
                            ],
                        )?;
                    }
                    Record::Grant(g) => insert_grant(tx, g)?,
                    Record::Audit(_) => {}
                }
            }
            let audit: Vec<&hippo::audit::AuditEntry> = records
                .iter()
                .filter_map(|r| match r {
                    Record::Audit(a) => Some(a),
                    _ => None,
                })
                .collect();
            import_audit(tx, &audit)?;
            set_meta(
                tx,
                &progress.table.progress_key(&progress.source),
                &progress.cursor.to_string(),
            )?;
            Ok(())
        })
    }
}

/// Writes audit entries copied from another log as they are, continuing
/// this log's head (refused otherwise), and moves the head to the last.
pub(crate) fn import_audit(tx: &mut Tx<'_>, entries: &[&hippo::audit::AuditEntry]) -> TxResult<()> {
    let Some(last) = entries.last() else {
        return Ok(());
    };
    let (mut seq, mut prev) = get_meta(tx, "audit_head")?
        .and_then(|h| {
            let (s, h) = h.split_once(':')?;
            Some((s.parse::<i64>().ok()?, h.to_owned()))
        })
        .unwrap_or((0, String::new()));
    for e in entries {
        if e.seq != seq + 1 || e.prev_hash != prev {
            return Err(Fail::Engine(Error::invalid(format!(
                "audit entry {} does not continue the chain at {seq}",
                e.seq
            ))));
        }
        tx.execute(
            "INSERT INTO audit_log (tenant, seq, at, actor, action, target, detail, prev_hash, hash)
             VALUES (current_setting('hippo.tenant'), $1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &e.seq,
                &ms(e.at),
                &e.actor,
                &e.action,
                &e.target,
                &Value::Object(e.detail.clone()).to_string(),
                &e.prev_hash,
                &e.hash,
            ],
        )?;
        seq = e.seq;
        prev = e.hash.clone();
    }
    set_meta(tx, "audit_head", &format!("{}:{}", last.seq, last.hash))?;
    Ok(())
}

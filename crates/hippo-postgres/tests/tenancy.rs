//! Row-level security and concurrent replicas on a real Postgres (URL in
//! `HIPPO_TEST_POSTGRES`, started by `scripts/pg.sh`).

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use hippo::jobs::{JobState, JobUpdate, NewJob};
use hippo::model::{content_hash, Actor, Memory, MemoryKind, Provenance};
use hippo::store::{InsertBatch, NewMemory, Store};
use hippo::Scope;
use hippo_postgres::{PgDatabase, PgOptions, PostgresStore};

fn url() -> String {
    std::env::var("HIPPO_TEST_POSTGRES")
        .ok()
        .filter(|u| !u.is_empty())
        .expect("HIPPO_TEST_POSTGRES is not set: start a Postgres with scripts/pg.sh (scripts/test.sh does)")
}

fn tenant(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

fn message(scope: &Scope, content: &str) -> Memory {
    let now = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
    Memory {
        id: uuid::Uuid::now_v7(),
        scope: scope.clone(),
        kind: MemoryKind::Message,
        content: content.into(),
        actor: Actor {
            role: Some("user".into()),
            name: Some("Ana".into()),
        },
        metadata: Default::default(),
        event_time: Some(now),
        recorded_at: now,
        updated_at: now,
        provenance: Provenance::default(),
        content_hash: content_hash(content),
        embedding_model: None,
        valid_from: None,
        valid_to: None,
        version_of: None,
        status: Default::default(),
        dedup_key: None,
        expires_at: None,
        usage: Default::default(),
        flags: Vec::new(),
    }
}

fn unit(i: usize) -> Vec<f32> {
    let mut v = [0.1f32; 4];
    v[i % 4] = 1.0;
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

/// Fills every tenant table of `store` with at least one row.
fn fill(store: &PostgresStore) {
    let scope = Scope::user("ana");
    let m = message(&scope, "the secret plan is in the blue folder");
    let mut dup = message(&scope, "a second note");
    dup.dedup_key = Some("k1".into());
    let rejection = hippo::Rejection {
        seq: 0,
        scope: scope.clone(),
        at: Utc::now(),
        request_id: None,
        kind: MemoryKind::Message,
        content: "refused".into(),
        actor: Actor::default(),
        event_time: None,
        admission: hippo::Admission {
            score: 0.1,
            utility: 0.1,
            novelty: 1.0,
            confidence: 1.0,
            threshold: 0.3,
            admitted: false,
        },
    };
    store
        .insert(InsertBatch {
            memories: vec![
                NewMemory {
                    memory: m.clone(),
                    vector: Some(unit(0)),
                },
                NewMemory {
                    memory: dup,
                    vector: None,
                },
            ],
            sources: vec![hippo::Source {
                id: uuid::Uuid::now_v7(),
                scope: scope.clone(),
                content: "whole text".into(),
            }],
            jobs: vec![NewJob {
                kind: "extract".into(),
                scope: scope.clone(),
                payload: Default::default(),
                at: Utc::now(),
            }],
            rejections: vec![rejection],
            ..Default::default()
        })
        .unwrap();
    // The same words again: merged into the first, with an event.
    let mut again = message(&scope, "a second note");
    again.dedup_key = Some("k1".into());
    let outcome = store
        .insert(InsertBatch {
            memories: vec![NewMemory {
                memory: again,
                vector: None,
            }],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(outcome.duplicates.len(), 1);
    store
        .put_grant(&hippo::sharing::Grant {
            id: uuid::Uuid::now_v7(),
            memory_id: Some(m.id),
            scope: scope.clone(),
            grantee: hippo::sharing::Grantee {
                user_id: Some("bob".into()),
                agent_id: None,
            },
            created_at: Utc::now(),
            created_by: "test".into(),
            expires_at: None,
            revoked_at: None,
        })
        .unwrap();
    let mark = hippo::audit::RequestMark {
        key: "req-1".into(),
        fingerprint: "f".into(),
        attempt: "a1".into(),
    };
    store.record_answer(&mark, 200, b"{}").unwrap();
}

const TABLES: &[&str] = &[
    "memories",
    "memory_events",
    "sources",
    "jobs",
    "rejections",
    "audit_log",
    "grants",
    "requests",
    "store_meta",
    "keyword_totals",
    "keyword_terms",
];

#[test]
fn with_the_wrong_tenant_setting_every_table_reads_empty_and_writes_fail() {
    let db = PgDatabase::connect(&PgOptions::new(url())).unwrap();
    let owner = tenant("rls-owner");
    fill(&db.store(&owner, "test-model", 4).unwrap());

    let mut client = postgres::Client::connect(&url(), postgres::NoTls).unwrap();
    // The rows are there, seen with the right setting.
    let mut tx = client.transaction().unwrap();
    tx.execute("SELECT set_config('hippo.tenant', $1, true)", &[&owner])
        .unwrap();
    for table in TABLES {
        let n: i64 = tx
            .query_one(
                &format!("SELECT count(*) FROM {table} WHERE tenant = $1"),
                &[&owner],
            )
            .unwrap()
            .get(0);
        assert!(n > 0, "{table} should hold the owner's rows");
    }
    tx.commit().unwrap();

    for setting in [Some("someone-else"), None] {
        let mut tx = client.transaction().unwrap();
        if let Some(s) = setting {
            tx.execute("SELECT set_config('hippo.tenant', $1, true)", &[&s])
                .unwrap();
        }
        for table in TABLES {
            let n: i64 = tx
                .query_one(&format!("SELECT count(*) FROM {table}"), &[])
                .unwrap()
                .get(0);
            assert_eq!(n, 0, "{table} read with tenant setting {setting:?}");
            let changed = tx
                .execute(
                    &format!("UPDATE {table} SET tenant = tenant WHERE tenant = $1"),
                    &[&owner],
                )
                .unwrap();
            assert_eq!(
                changed, 0,
                "{table} updated with tenant setting {setting:?}"
            );
            let deleted = tx
                .execute(&format!("DELETE FROM {table} WHERE tenant = $1"), &[&owner])
                .unwrap();
            assert_eq!(
                deleted, 0,
                "{table} deleted with tenant setting {setting:?}"
            );
        }
        // Writing a row of the owner fails (the policy's check).
        let err = tx
            .execute(
                "INSERT INTO store_meta (tenant, key, value) VALUES ($1, 'x', 'y')",
                &[&owner],
            )
            .unwrap_err();
        assert!(
            err.to_string().contains("row-level security")
                || format!("{err:?}").contains("row-level security"),
            "{err:?}"
        );
        tx.rollback().unwrap();
    }

    // And through the store API: another tenant's store sees none of it.
    let other = db.store(&tenant("rls-other"), "test-model", 4).unwrap();
    assert_eq!(other.stats().unwrap().memories, 0);
    assert!(other.audit(0, 100).unwrap().is_empty());
    let owner_store = db.store(&owner, "test-model", 4).unwrap();
    assert_eq!(owner_store.stats().unwrap().memories, 2);
    assert!(owner_store.verify_audit().unwrap().ok);
}

#[test]
fn two_replicas_writing_one_tenant_lose_nothing_duplicate_nothing_and_keep_the_audit_chain() {
    // Two databases = two processes' pools on one Postgres.
    let replicas = [
        PgDatabase::connect(&PgOptions::new(url())).unwrap(),
        PgDatabase::connect(&PgOptions::new(url())).unwrap(),
    ];
    let t = tenant("replicas");
    let stores: Vec<Arc<PostgresStore>> = replicas
        .iter()
        .map(|db| Arc::new(db.store(&t, "test-model", 4).unwrap()))
        .collect();
    let scope = Scope::user("ana");
    const PER_THREAD: usize = 40;
    // Four writers (two per replica): unique writes, one identical write
    // each (the same dedup key), and jobs.
    let handles: Vec<_> = (0..4)
        .map(|w| {
            let store = stores[w % 2].clone();
            let scope = scope.clone();
            std::thread::spawn(move || {
                let mut ids = Vec::new();
                for i in 0..PER_THREAD {
                    let m = message(&scope, &format!("writer {w} turn {i}"));
                    ids.push(m.id);
                    let mut same = message(&scope, "the very same words");
                    same.dedup_key = Some("same-words".into());
                    store
                        .insert(InsertBatch {
                            memories: vec![
                                NewMemory {
                                    memory: m,
                                    vector: Some(unit(i)),
                                },
                                NewMemory {
                                    memory: same,
                                    vector: Some(unit(i + 1)),
                                },
                            ],
                            jobs: vec![NewJob {
                                kind: "extract".into(),
                                scope: scope.clone(),
                                payload: Default::default(),
                                at: Utc::now() - chrono::Duration::seconds(1),
                            }],
                            ..Default::default()
                        })
                        .unwrap();
                }
                ids
            })
        })
        .collect();
    let written: Vec<uuid::Uuid> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();

    // Every acknowledged write is there, once; the identical write once.
    let store = &stores[0];
    let found = store.get_many(&written).unwrap();
    assert_eq!(found.len(), written.len());
    assert_eq!(store.stats().unwrap().memories as usize, written.len() + 1);
    assert!(store.find_keys(&["same-words".into()]).unwrap()[0].is_some());
    // The conversation is one chain: every message but the first has a
    // previous one, so windows see neighbours across writers.
    let windows = store.windows(&written, 1, 1).unwrap();
    assert!(windows.iter().all(|w| w.len() >= 2));

    // Jobs: claimed exactly once by workers on both replicas.
    let claimers: Vec<_> = (0..4)
        .map(|w| {
            let store = stores[w % 2].clone();
            std::thread::spawn(move || {
                let mut claimed = Vec::new();
                while let Some(job) = store
                    .claim_job(Utc::now(), chrono::Duration::minutes(10))
                    .unwrap()
                {
                    store
                        .update_job(
                            job.id,
                            JobUpdate {
                                state: Some(JobState::Done),
                                ..Default::default()
                            },
                            Utc::now(),
                        )
                        .unwrap();
                    claimed.push(job.id);
                }
                claimed
            })
        })
        .collect();
    let claimed: Vec<i64> = claimers
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let distinct: HashSet<i64> = claimed.iter().copied().collect();
    assert_eq!(claimed.len(), 4 * PER_THREAD, "every job claimed");
    assert_eq!(distinct.len(), claimed.len(), "no job claimed twice");
    assert_eq!(store.job_counts().unwrap().done as usize, 4 * PER_THREAD);

    // The audit chain is linear and verifies.
    let check = store.verify_audit().unwrap();
    assert!(check.ok, "{check:?}");
    assert!(check.entries as usize >= written.len());
    assert!(store.check().unwrap().is_empty());
}

#[test]
fn one_replica_at_a_time_runs_a_tenants_maintenance() {
    let first = PgDatabase::connect(&PgOptions::new(url())).unwrap();
    let second = PgDatabase::connect(&PgOptions::new(url())).unwrap();
    let t = tenant("maintenance");
    let (a, b) = (
        first.store(&t, "test-model", 4).unwrap(),
        second.store(&t, "test-model", 4).unwrap(),
    );
    let now = Utc::now();
    let lease = chrono::Duration::minutes(5);
    assert!(
        a.claim_maintenance(now, lease).unwrap(),
        "the first claim wins"
    );
    assert!(
        !b.claim_maintenance(now, lease).unwrap(),
        "the other replica waits"
    );
    assert!(!a
        .claim_maintenance(now + chrono::Duration::minutes(1), lease)
        .unwrap());
    let other = first
        .store(&tenant("maintenance"), "test-model", 4)
        .unwrap();
    assert!(
        other.claim_maintenance(now, lease).unwrap(),
        "another tenant's pass is its own"
    );
    // Once the lease lapses (a replica died mid-pass), another takes over.
    let later = now + lease + chrono::Duration::seconds(1);
    assert!(b.claim_maintenance(later, lease).unwrap());
    assert!(!a.claim_maintenance(later, lease).unwrap());
}

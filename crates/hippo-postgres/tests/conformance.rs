//! The store conformance suite on a real Postgres (started by `scripts/pg.sh`;
//! its URL in `HIPPO_TEST_POSTGRES`). Each check gets a fresh tenant of one
//! shared database: an empty store, beside every other check's data.

use std::sync::{Arc, OnceLock};

use hippo::store::conformance;
use hippo::Store;
use hippo_postgres::{PgDatabase, PgOptions};

fn database() -> Arc<PgDatabase> {
    static DB: OnceLock<Arc<PgDatabase>> = OnceLock::new();
    DB.get_or_init(|| {
        let url = std::env::var("HIPPO_TEST_POSTGRES").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| {
            panic!(
                "HIPPO_TEST_POSTGRES is not set: start a Postgres with scripts/pg.sh and export its URL \
                 (scripts/test.sh does both)"
            )
        });
        PgDatabase::connect(&PgOptions::new(url)).expect("connect to the test Postgres")
    })
    .clone()
}

fn fresh() -> Box<dyn Store> {
    let tenant = format!("conformance-{}", uuid::Uuid::new_v4());
    Box::new(database().store(&tenant, "test-model", 4).unwrap())
}

macro_rules! conformance_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                conformance::$name(fresh().as_ref());
            }
        )*
    };
}

conformance_tests!(
    round_trip,
    scope_isolation,
    names_and_neighbours,
    windows,
    filters,
    listing_and_delete_scope,
    scope_counts,
    update,
    lifecycle,
    jobs,
    job_listing,
    forgetting,
    erasure,
    grants,
    concurrent_changes,
    idempotent_attempts,
);

/// A SQLite file copied to Postgres and back to another file is the same
/// store (issue 17's round trip), audit chain included.
#[test]
fn sqlite_to_postgres_to_sqlite_is_lossless() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = |name: &str| {
        hippo::store::SqliteStore::open(hippo::store::SqliteStoreOptions::new(
            dir.path().join(name),
            "test-model",
            4,
        ))
        .unwrap()
    };
    let (from, back) = (sqlite("from.db"), sqlite("back.db"));
    conformance::copy_round_trip(&from, fresh().as_ref(), &back);
}

/// And the other way: Postgres to SQLite and back to Postgres.
#[test]
fn postgres_to_sqlite_to_postgres_is_lossless() {
    let dir = tempfile::tempdir().unwrap();
    let via = hippo::store::SqliteStore::open(hippo::store::SqliteStoreOptions::new(
        dir.path().join("via.db"),
        "test-model",
        4,
    ))
    .unwrap();
    conformance::copy_round_trip(fresh().as_ref(), &via, fresh().as_ref());
}

/// A copy writes each message's keyword context from its neighbours in the
/// page instead of row by row: the documents it indexes are exactly those
/// that inserting the same memories one by one gives, across page
/// boundaries and interleaved conversations.
#[test]
fn copied_keyword_documents_equal_inserted_ones() {
    use hippo::store::transfer::{Progress, Record, Table};
    use hippo::store::{InsertBatch, NewMemory};
    let tenant = |what: &str| format!("{what}-{}", uuid::Uuid::new_v4());
    let (a, b) = (tenant("one-by-one"), tenant("copied"));
    let one_by_one = database().store(&a, "test-model", 4).unwrap();
    let copied = database().store(&b, "test-model", 4).unwrap();
    let t0 = chrono::Utc::now();
    let memories: Vec<NewMemory> = (0..23)
        .map(|i| {
            let content = format!("turn {i} mentions word{i} and the weather");
            NewMemory {
                memory: hippo::Memory {
                    id: uuid::Uuid::now_v7(),
                    scope: hippo::Scope::user(if i % 3 == 0 { "bob" } else { "ana" }),
                    kind: if i % 7 == 6 {
                        hippo::MemoryKind::Fact
                    } else {
                        hippo::MemoryKind::Message
                    },
                    content_hash: hippo::model::content_hash(&content),
                    content,
                    actor: hippo::model::Actor {
                        role: Some("user".into()),
                        name: Some(if i % 2 == 0 { "Ana" } else { "Bob" }.into()),
                    },
                    metadata: Default::default(),
                    event_time: Some(t0 + chrono::Duration::minutes(i)),
                    recorded_at: t0,
                    updated_at: t0,
                    provenance: Default::default(),
                    embedding_model: None,
                    valid_from: None,
                    valid_to: None,
                    version_of: None,
                    status: Default::default(),
                    dedup_key: None,
                    expires_at: None,
                    usage: Default::default(),
                    flags: Vec::new(),
                },
                vector: None,
            }
        })
        .collect();
    for nm in &memories {
        one_by_one
            .insert(InsertBatch {
                memories: vec![nm.clone()],
                ..Default::default()
            })
            .unwrap();
    }
    for (n, page) in memories.chunks(5).enumerate() {
        copied
            .import(
                page.iter()
                    .map(|nm| Record::Memory(Box::new(nm.clone())))
                    .collect(),
                &Progress {
                    source: "test".into(),
                    table: Table::Memories,
                    cursor: n as i64 + 1,
                },
            )
            .unwrap();
    }
    let url = std::env::var("HIPPO_TEST_POSTGRES").unwrap();
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let mut documents = |tenant: &str| -> Vec<(uuid::Uuid, String, String, String)> {
        let mut tx = client.transaction().unwrap();
        tx.execute("SELECT set_config('hippo.tenant', $1, true)", &[&tenant])
            .unwrap();
        let rows = tx
            .query(
                "SELECT id, kw_body, kw_speaker, kw_context FROM memories ORDER BY seq",
                &[],
            )
            .unwrap();
        tx.commit().unwrap();
        rows.iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect()
    };
    let expected = documents(&a);
    assert_eq!(expected.len(), 23);
    assert!(expected.iter().any(|d| !d.3.is_empty()), "contexts exist");
    assert_eq!(documents(&b), expected);
    // The copy counts its rows' terms in one statement per page; BM25's
    // statistics must come out as the row-at-a-time trigger counts them.
    // (documents, tokens) and each term's documents.
    type Stats = (Vec<(i64, i64)>, Vec<(String, i64)>);
    let mut stats = |tenant: &str| -> Stats {
        let mut tx = client.transaction().unwrap();
        tx.execute("SELECT set_config('hippo.tenant', $1, true)", &[&tenant])
            .unwrap();
        let totals = tx
            .query(
                "SELECT docs, tokens FROM keyword_totals WHERE tenant = $1",
                &[&tenant],
            )
            .unwrap();
        let terms = tx
            .query(
                "SELECT term, docs FROM keyword_terms WHERE tenant = $1 AND docs > 0 ORDER BY term",
                &[&tenant],
            )
            .unwrap();
        tx.commit().unwrap();
        (
            totals.iter().map(|r| (r.get(0), r.get(1))).collect(),
            terms.iter().map(|r| (r.get(0), r.get(1))).collect(),
        )
    };
    let expected = stats(&a);
    assert_eq!(expected.0.len(), 1);
    assert_eq!(expected.0[0].0, 23);
    assert!(expected.1.iter().any(|(t, d)| t == "weather" && *d == 23));
    assert_eq!(stats(&b), expected);
}

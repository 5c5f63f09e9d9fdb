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
    update,
    lifecycle,
    jobs,
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

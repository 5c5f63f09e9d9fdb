//! `PgDatabase::bulk_load` on a database of its own (created on the
//! Postgres of `HIPPO_TEST_POSTGRES`, dropped after): the vector index is
//! absent during the load and built after it, the keyword index ends in one
//! segment, and search reads what was loaded.

use hippo::store::transfer::{Progress, Record, Table};
use hippo::store::{conformance, NewMemory, VectorQuery};
use hippo::{Filter, Scope, Store};
use hippo_postgres::{PgDatabase, PgOptions};

const MODEL: &str = "bulk-model";

fn memory(i: usize) -> NewMemory {
    let content = format!("turn {i} about topic{} and the harbour", i % 7);
    NewMemory {
        memory: conformance::memory(Scope::user("ana"), &content, Some("Ana")),
        // Unit vectors around the circle in the first two dimensions.
        vector: Some({
            let a = i as f32 * 0.01;
            vec![a.cos(), a.sin(), 0.0, 0.0]
        }),
    }
}

fn count(client: &mut postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).unwrap().get(0)
}

#[test]
fn a_bulk_load_builds_its_indexes_once_after_the_rows() {
    let url = std::env::var("HIPPO_TEST_POSTGRES").expect("HIPPO_TEST_POSTGRES (scripts/pg.sh)");
    let name = format!("bulk_{}", uuid::Uuid::new_v4().simple());
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    let (base, _) = url.rsplit_once('/').unwrap();
    let db_url = format!("{base}/{name}");
    {
        let db = PgDatabase::connect(&PgOptions::new(db_url.clone())).unwrap();
        let store = db.store("default", MODEL, 4).unwrap();
        let mut client = postgres::Client::connect(&db_url, postgres::NoTls).unwrap();
        let vector_indexes =
            "SELECT count(*) FROM pg_indexes WHERE indexname LIKE 'memories_vectors_%'";
        assert_eq!(count(&mut client, vector_indexes), 1);
        let memories: Vec<NewMemory> = (0..600).map(memory).collect();
        db.bulk_load(MODEL, 4, || -> hippo::Result<()> {
            assert_eq!(
                count(&mut client, vector_indexes),
                0,
                "no vector index during the load"
            );
            for (n, page) in memories.chunks(50).enumerate() {
                store.import(
                    page.iter()
                        .map(|m| Record::Memory(Box::new(m.clone())))
                        .collect(),
                    &Progress {
                        source: "test".into(),
                        table: Table::Memories,
                        cursor: (n + 1) as i64,
                    },
                )?;
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(count(&mut client, vector_indexes), 1, "built after");
        assert_eq!(
            count(
                &mut client,
                "SELECT count(*) FROM paradedb.index_info('memories_keywords')"
            ),
            1,
            "the keyword index in one segment"
        );
        // A second load into a store holding vectors keeps the index.
        db.bulk_load(MODEL, 4, || -> hippo::Result<()> {
            assert_eq!(count(&mut client, vector_indexes), 1);
            Ok(())
        })
        .unwrap();
        // Search reads the loaded rows: the nearest to memory 300's vector is
        // memory 300.
        let q = memories[300].vector.clone().unwrap();
        let found = store
            .vector_candidates(&VectorQuery {
                scope: &Scope::user("ana"),
                filter: &Filter::default(),
                vector: &q,
                limit: 3,
            })
            .unwrap();
        assert_eq!(found[0].id, memories[300].memory.id);
        assert_eq!(store.stats().unwrap().memories, 600);
        // Few segments: nothing to optimize.
        assert!(!store.optimize_indexes().unwrap());
    }
    admin
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .unwrap();
}

//! Files written by released schema versions open, migrate and answer
//! queries. Each `tests/data/golden-vN.db` was written by the hippo that
//! introduced schema vN and is never regenerated.

use hippo::store::{KeywordQuery, Store};
use hippo::{Filter, Scope, SearchRequest, SqliteStore, SqliteStoreOptions};

use crate::common::minilm;

fn open_copy(name: &str) -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    std::fs::copy(&src, &path).unwrap();
    let store = SqliteStore::open(SqliteStoreOptions::new(
        &path,
        "sentence-transformers/all-MiniLM-L6-v2",
        384,
    ))
    .unwrap();
    (dir, store)
}

#[test]
fn schema_v2_file_opens_and_answers() {
    let (_dir, store) = open_copy("golden-v2.db");
    let stats = store.stats().unwrap();
    assert_eq!(stats.memories, 8);
    assert_eq!(stats.keyword_entries, 8);
    assert_eq!(
        stats.vectors_by_model["sentence-transformers/all-MiniLM-L6-v2"],
        8
    );
    let scope = Scope::user("golden");
    let keyword = |q: &str| {
        let terms = hippo::text::query_terms(q);
        store
            .keyword_candidates(&KeywordQuery {
                scope: &scope,
                filter: &Filter::default(),
                terms: &terms,
                limit: 3,
            })
            .unwrap()
    };
    let bees = store.get_many(&[keyword("bee keeping")[0].id]).unwrap();
    assert_eq!(bees[0].content, "I keep bees on my roof in Lisbon");
    assert_eq!(bees[0].actor.name.as_deref(), Some("Ana"));
    let cats = store.get_many(&[keyword("猫カフェ")[0].id]).unwrap();
    assert_eq!(cats[0].scope.session_id.as_deref(), Some("s1"));
    // Keyword documents of the older format were re-indexed at open: they
    // now carry the date tokens of the day they were recorded.
    let dated = store
        .keyword_candidates(&KeywordQuery {
            scope: &scope,
            filter: &Filter::default(),
            terms: &["d20261121".to_string()],
            limit: 20,
        })
        .unwrap();
    assert_eq!(dated.len(), 8);
    // Chunks still reach their whole text.
    let chunk = store.get_many(&[keyword("token399")[0].id]).unwrap();
    let source = store
        .source(chunk[0].provenance.source_id.unwrap())
        .unwrap()
        .unwrap();
    assert!(source.content.starts_with("token0 token1") && source.content.ends_with("token399"));
    // Stored vectors are searchable by the current model.
    let hippo = hippo::Hippo::builder()
        .store(std::sync::Arc::new(store))
        .embedder(minilm())
        .build()
        .unwrap();
    let hits = hippo
        .search(&SearchRequest::new(scope, "honey insects on the roof"))
        .unwrap()
        .hits;
    assert_eq!(hits[0].memory.content, "I keep bees on my roof in Lisbon");
}

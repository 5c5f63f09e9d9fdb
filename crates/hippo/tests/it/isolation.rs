//! Property test: no search, list or get ever returns a memory from another scope.

use std::sync::Arc;

use proptest::prelude::*;

use hippo::{AddItem, Filter, Order, Scope, SearchRequest};

use super::common::{engine, HashEmbedder};

const WORDS: [&str; 8] = [
    "apple", "river", "secret", "piano", "garden", "rocket", "coffee", "winter",
];

fn scope_strategy() -> impl Strategy<Value = Scope> {
    let id = |p: &'static str| proptest::option::of((0u8..3).prop_map(move |i| format!("{p}{i}")));
    (id("u"), id("a"), id("s"))
        .prop_map(|(user_id, agent_id, session_id)| Scope {
            user_id,
            agent_id,
            session_id,
        })
        .prop_filter("a scope needs one field", |s| s.validate().is_ok())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn reads_never_cross_scopes(
        writes in proptest::collection::vec((scope_strategy(), proptest::collection::vec(0usize..8, 1..5)), 1..25),
        reads in proptest::collection::vec((scope_strategy(), proptest::collection::vec(0usize..8, 1..3)), 1..10),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let h = engine(dir.path(), Arc::new(HashEmbedder));
        let mut ids = Vec::new();
        for (scope, words) in &writes {
            let text: Vec<&str> = words.iter().map(|&w| WORDS[w]).collect();
            let m = h.add(vec![AddItem::message(scope.clone(), "user", Some("Sam"), text.join(" "))]).unwrap();
            ids.extend(m.into_iter().map(|m| (m.id, m.scope)));
        }
        for (scope, words) in &reads {
            let q: Vec<&str> = words.iter().map(|&w| WORDS[w]).collect();
            let mut req = SearchRequest::new(scope.clone(), q.join(" "));
            req.top_k = 100;
            for hit in h.search(&req).unwrap().hits {
                prop_assert!(scope.matches(&hit.memory.scope), "search in {scope:?} returned {:?}", hit.memory.scope);
            }
            let page = h.list(Some(scope), &Filter::default(), None, 1000, Order::Ascending).unwrap();
            let expected = ids.iter().filter(|(_, s)| scope.matches(s)).count();
            prop_assert_eq!(page.memories.len(), expected);
            for m in page.memories {
                prop_assert!(scope.matches(&m.scope));
            }
            for (id, owner) in &ids {
                let got = h.get(*id, Some(scope));
                prop_assert_eq!(got.is_ok(), scope.matches(owner));
            }
        }
    }
}

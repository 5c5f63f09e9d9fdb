//! Entry points for fuzzing the server's request parsers: each takes
//! arbitrary bytes and must return (never panic) whatever they hold. The
//! request types live in this library (`crate::api`), so the fuzz targets
//! parse bodies and the list filter syntax exactly as the server does. The
//! cargo-fuzz targets in `fuzz/` call them (nightly); the unit tests below
//! run them on generated inputs too, so every CI run exercises them on
//! stable Rust.

use chrono::Utc;

use crate::api::{
    AddItemBody, BatchBody, FiltersBody, GrantBody, ListParams, PatchBody, SearchBody,
};

/// A request body as JSON, parsed as every body type the server takes and,
/// where it parses, turned into what the engine receives and validated.
pub fn request_json(data: &[u8]) {
    let now = Utc::now();
    if let Ok(b) = serde_json::from_slice::<AddItemBody>(data) {
        if let Ok(item) = b.into_item(now) {
            let _ = item.scope.validate();
        }
    }
    if let Ok(b) = serde_json::from_slice::<BatchBody>(data) {
        for item in b.items {
            let _ = item.into_item(now);
        }
    }
    if let Ok(b) = serde_json::from_slice::<SearchBody>(data) {
        let _ = b.context(hippo::Context::default());
        if let Some(f) = b.filters {
            let _ = hippo::Filter::from(f).validate();
        }
    }
    let _ = serde_json::from_slice::<PatchBody>(data);
    if let Ok(g) = serde_json::from_slice::<GrantBody>(data) {
        let grantee = hippo::sharing::Grantee {
            user_id: g.grantee.user_id,
            agent_id: g.grantee.agent_id,
        };
        let _ = grantee.validate();
    }
}

/// The filter syntax: a list query string (`kind=fact&status=active,deleted
/// &as_of=...&order=desc&limit=5`) as the server decodes it, and a search's
/// `filters` object as JSON.
pub fn filter_syntax(data: &[u8]) {
    if let Ok(p) = serde_urlencoded::from_bytes::<ListParams>(data) {
        let _ = p.listing();
    }
    if let Ok(f) = serde_json::from_slice::<FiltersBody>(data) {
        let _ = hippo::Filter::from(f).validate();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// JSON-ish fragments so generated inputs reach past the first byte.
    fn jsonish() -> impl Strategy<Value = String> {
        let atom = prop_oneof![
            Just("\"user_id\":\"u\"".to_owned()),
            Just("\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]".to_owned()),
            Just("\"text\":\"x\"".to_owned()),
            Just("\"query\":\"q\"".to_owned()),
            Just("\"top_k\":99999999999".to_owned()),
            Just("\"filters\":{\"kind\":[\"fact\"],\"status\":[\"deleted\"]}".to_owned()),
            Just("\"event_time\":\"2024-02-30T00:00:00Z\"".to_owned()),
            Just("\"ttl_seconds\":-1".to_owned()),
            Just("\"grantee\":{\"user_id\":\"\"}".to_owned()),
            Just("\"items\":[{}]".to_owned()),
            "\"[a-z_]{1,12}\":(null|true|-?[0-9]{1,20}|\"[^\"]{0,8}\")",
        ];
        proptest::collection::vec(atom, 0..6).prop_map(|a| format!("{{{}}}", a.join(",")))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn request_json_never_panics(s in jsonish(), raw in proptest::collection::vec(any::<u8>(), 0..64)) {
            request_json(s.as_bytes());
            request_json(&raw);
        }

        #[test]
        fn filter_syntax_never_panics(
            q in "((kind|status|as_of|order|limit|all_versions|user_id|cursor)=[a-z0-9,:%+.-]{0,12}&?){0,5}",
            raw in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            filter_syntax(q.as_bytes());
            filter_syntax(&raw);
        }
    }

    #[test]
    fn the_filter_syntax_parses_what_the_server_documents() {
        let p: ListParams =
            serde_urlencoded::from_bytes(b"kind=fact&status=active,%20deleted&order=desc&limit=5")
                .unwrap();
        let (f, order, limit) = p.listing().unwrap();
        assert_eq!(f.kinds, vec![hippo::MemoryKind::Fact]);
        assert_eq!(
            f.statuses,
            vec![hippo::Status::Active, hippo::Status::Deleted]
        );
        assert_eq!((order, limit), (hippo::Order::Descending, 5));
        for bad in ["status=gone", "limit=0", "order=sideways", "kind=thing"] {
            let p: ListParams = serde_urlencoded::from_bytes(bad.as_bytes()).unwrap();
            assert!(p.listing().is_err(), "{bad}");
        }
    }
}

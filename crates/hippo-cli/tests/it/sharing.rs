//! Sharing over a real socket: keys bound to a user see only that user's
//! memories; a grant lets another user read one memory or a whole scope
//! (get, search, history — never change); revocation and expiry take effect
//! at once; grants are audited and go with an erased user; every memory
//! says which key wrote it.

use serde_json::{json, Value};

use super::common::{run, Server};

fn user_key(db: &std::path::Path, user: &str) -> String {
    run(db, &["key", "create", "--access", "write", "--user", user])
}

fn key_id(key: &str) -> String {
    key[3..19].to_owned()
}

fn add(s: &Server, key: &str, session: &str, text: &str) -> Value {
    let (st, body) = s.call_as(
        Some(key),
        "POST",
        "/v1/memories",
        Some(json!({"session_id": session, "messages": [{"role": "user", "content": text}]})),
    );
    assert_eq!(st, 200, "{body}");
    body["results"][0].clone()
}

fn search(s: &Server, key: &str, query: &str) -> Vec<Value> {
    let (st, body) = s.call_as(
        Some(key),
        "POST",
        "/v1/search",
        Some(json!({"query": query, "top_k": 20})),
    );
    assert_eq!(st, 200, "{body}");
    body["results"].as_array().unwrap().clone()
}

/// The messages the results show (each excerpt's messages, or the memory).
fn texts(hits: &[Value]) -> Vec<String> {
    hits.iter()
        .flat_map(|h| match h["sources"].as_array() {
            Some(sources) => sources
                .iter()
                .map(|m| m["memory"].as_str().unwrap().to_owned())
                .collect(),
            None => vec![h["memory"].as_str().unwrap().to_owned()],
        })
        .collect()
}

#[test]
fn grants_share_memories_and_scopes_until_revoked_or_expired() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let alice = user_key(&db, "alice");
    let bob = user_key(&db, "bob");
    let admin = run(&db, &["key", "create", "--access", "admin"]);
    let s = Server::start(&db, &[]);

    // Bound keys fill in their user and refuse another.
    let trip = add(&s, &alice, "s1", "Alice booked the ferry to Naxos for June");
    assert_eq!(trip["user_id"], "alice");
    assert_eq!(
        trip["provenance"]["written_by"],
        format!("key:{}", key_id(&alice)),
        "provenance names the writing key"
    );
    let passport = add(
        &s,
        &alice,
        "s1",
        "Her passport for the ferry trip expires in March",
    );
    let diary = add(
        &s,
        &alice,
        "s2",
        "Alice keeps her diary password in a blue notebook",
    );
    let trip_id = trip["id"].as_str().unwrap().to_owned();
    let diary_id = diary["id"].as_str().unwrap().to_owned();
    let (st, body) = s.call_as(
        Some(&bob),
        "POST",
        "/v1/search",
        Some(json!({"user_id": "alice", "query": "ferry"})),
    );
    assert_eq!(
        (st, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    assert_eq!(
        s.call_as(Some(&bob), "GET", &format!("/v1/memories/{trip_id}"), None)
            .0,
        404,
        "private by default"
    );
    assert!(search(&s, &bob, "ferry Naxos").is_empty());

    // A grant of one memory: bob reads it (get, search, history), nothing else.
    let (st, grant) = s.call_as(
        Some(&alice),
        "POST",
        "/v1/grants",
        Some(json!({"memory_id": trip_id, "grantee": {"user_id": "bob"}})),
    );
    assert_eq!(st, 200, "{grant}");
    let grant_id = grant["id"].as_str().unwrap().to_owned();
    assert_eq!(grant["scope"]["user_id"], "alice");
    let (st, got) = s.call_as(Some(&bob), "GET", &format!("/v1/memories/{trip_id}"), None);
    assert_eq!((st, got["memory"].as_str()), (200, trip["memory"].as_str()));
    let hits = search(&s, &bob, "ferry Naxos diary password passport");
    assert_eq!(
        texts(&hits),
        vec![trip["memory"].as_str().unwrap()],
        "the memory alone: not its neighbour in the conversation"
    );
    assert_eq!(hits[0]["shared_via"], grant_id.as_str());
    assert_eq!(
        s.call_as(
            Some(&bob),
            "GET",
            &format!("/v1/memories/{trip_id}/history"),
            None
        )
        .0,
        200
    );
    assert_eq!(
        s.call_as(Some(&bob), "GET", &format!("/v1/memories/{diary_id}"), None)
            .0,
        404
    );
    // Read only: bob cannot change, delete or re-share it.
    for (method, path, body) in [
        (
            "PATCH",
            format!("/v1/memories/{trip_id}"),
            Some(json!({"content": "x"})),
        ),
        ("DELETE", format!("/v1/memories/{trip_id}"), None),
        (
            "POST",
            format!("/v1/memories/{trip_id}/feedback"),
            Some(json!({"signal": "wrong"})),
        ),
        (
            "POST",
            "/v1/grants".to_owned(),
            Some(json!({"memory_id": trip_id, "grantee": {"user_id": "eve"}})),
        ),
        ("DELETE", format!("/v1/grants/{grant_id}"), None),
    ] {
        let (st, b) = s.call_as(Some(&bob), method, &path, body);
        assert_eq!(st, 404, "{method} {path}: {b}");
    }
    // Alice's own search is unchanged and says nothing about sharing.
    let own = search(&s, &alice, "ferry");
    assert!(own.iter().all(|h| h.get("shared_via").is_none()));

    // Revocation works at once.
    let (st, revoked) = s.call_as(
        Some(&alice),
        "DELETE",
        &format!("/v1/grants/{grant_id}"),
        None,
    );
    assert_eq!(st, 200);
    assert!(revoked["revoked_at"].is_string());
    assert_eq!(
        s.call_as(Some(&bob), "GET", &format!("/v1/memories/{trip_id}"), None)
            .0,
        404
    );
    assert!(search(&s, &bob, "ferry Naxos").is_empty());

    // A scope grant covers the session, including what is written later,
    // and not the other session; it expires on its own.
    let expires = chrono::Utc::now() + chrono::Duration::seconds(3);
    let (st, g) = s.call_as(
        Some(&alice),
        "POST",
        "/v1/grants",
        Some(json!({"scope": {"user_id": "alice", "session_id": "s1"},
                    "grantee": {"user_id": "bob"}, "expires_at": expires.to_rfc3339()})),
    );
    assert_eq!(st, 200, "{g}");
    let later = add(
        &s,
        &alice,
        "s1",
        "Alice will take the night boat back from Naxos",
    );
    let hits = search(
        &s,
        &bob,
        "Naxos ferry boat passport diary password notebook",
    );
    let mut got = texts(&hits);
    got.sort();
    let mut want = vec![
        trip["memory"].as_str().unwrap().to_owned(),
        passport["memory"].as_str().unwrap().to_owned(),
        later["memory"].as_str().unwrap().to_owned(),
    ];
    want.sort();
    assert_eq!(got, want, "the session, not the diary");
    // Sharing someone else's scope, or as nobody: refused.
    let (st, _) = s.call_as(
        Some(&bob),
        "POST",
        "/v1/grants",
        Some(json!({"scope": {"user_id": "alice"}, "grantee": {"user_id": "bob"}})),
    );
    assert_eq!(st, 403);
    let (st, b) = s.call_as(
        Some(&alice),
        "POST",
        "/v1/grants",
        Some(json!({"memory_id": trip_id, "grantee": {}})),
    );
    assert_eq!(
        (st, b["error"]["code"].as_str()),
        (400, Some("invalid_input"))
    );
    // Listing: given by alice, received by bob.
    let (_, given) = s.call_as(Some(&alice), "GET", "/v1/grants?include_revoked=true", None);
    assert_eq!(given["results"].as_array().unwrap().len(), 2);
    let (_, received) = s.call_as(Some(&bob), "GET", "/v1/grants?direction=received", None);
    assert_eq!(received["results"].as_array().unwrap().len(), 1);
    std::thread::sleep(std::time::Duration::from_millis(3200));
    assert!(search(&s, &bob, "Naxos").is_empty(), "expired");

    // Every grant and revocation is in the audit log.
    let audit = run(&db, &["audit", "list"]);
    assert_eq!(audit.matches("\"grant\"").count(), 2, "{audit}");
    assert_eq!(audit.matches("\"revoke_grant\"").count(), 1);

    // Erasing alice erases her grants.
    let (st, _) = s.call_as(Some(&admin), "DELETE", "/v1/memories?user_id=alice", None);
    assert_eq!(st, 200);
    let (_, given) = s.call_as(
        Some(&admin),
        "GET",
        "/v1/grants?user_id=alice&include_revoked=true",
        None,
    );
    assert_eq!(given["results"], json!([]));
}

//! `hippo` with its memories in Postgres (`--store postgres://…`): the real
//! binary against a real Postgres from `scripts/pg.sh` (URL in
//! `HIPPO_TEST_POSTGRES`). Each test gets a database of its own.

use serde_json::json;

use crate::common::{hippo, key_id, run, Server};

/// A fresh database on the test Postgres; its URL.
fn fresh_database() -> String {
    let url = std::env::var("HIPPO_TEST_POSTGRES")
        .ok()
        .filter(|u| !u.is_empty())
        .expect("HIPPO_TEST_POSTGRES is not set: start a Postgres with scripts/pg.sh (scripts/test.sh does)");
    let name = format!("it_{}", uuid::Uuid::new_v4().simple());
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    let (base, _) = url.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

#[test]
fn two_servers_on_one_postgres_database_serve_the_same_memories() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.db");
    let store = fresh_database();
    // The store named on the command line, and in the environment.
    let a = Server::start(&db, &["--store", &store]);
    let mut second = hippo(&db);
    second
        .env("HIPPO_STORE", &store)
        .args(["serve", "--listen", "127.0.0.1:0"]);
    let b = Server::spawn(second);

    let (status, added) = a.call(
        "POST",
        "/v1/memories",
        Some(json!({"user_id": "ana", "messages": [
            {"role": "user", "name": "Ana", "content": "I adopted a beagle named Pixel"},
            {"role": "assistant", "content": "Pixel is a great name"}
        ]})),
    );
    assert_eq!(status, 200, "{added}");
    let id = added["results"][0]["id"].as_str().unwrap().to_owned();

    // The other replica sees it at once: no cache to catch up.
    let (status, found) = b.call(
        "POST",
        "/v1/search",
        Some(json!({"user_id": "ana", "query": "what dog does Ana have", "top_k": 3})),
    );
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["results"][0]["id"], id.as_str(), "{found}");

    // A change through one is what the other answers.
    let (status, body) = b.call(
        "PATCH",
        &format!("/v1/memories/{id}"),
        Some(json!({"memory": "I adopted a corgi named Pixel"})),
    );
    assert_eq!(status, 200, "{body}");
    let (_, got) = a.call("GET", &format!("/v1/memories/{id}"), None);
    assert_eq!(got["memory"], "I adopted a corgi named Pixel", "{got}");
    let (_, found) = a.call(
        "POST",
        "/v1/search",
        Some(json!({"user_id": "ana", "query": "corgi", "top_k": 1})),
    );
    assert_eq!(found["results"][0]["id"], id.as_str(), "{found}");

    let (status, _) = a.call("DELETE", &format!("/v1/memories/{id}?hard=true"), None);
    assert!(status == 200 || status == 204, "{status}");
    let (status, _) = b.call("GET", &format!("/v1/memories/{id}"), None);
    assert_eq!(status, 404);

    // The audit chain, written by both, verifies (the CLI on the same store,
    // named in its config file).
    let config = dir.path().join("hippo.toml");
    std::fs::write(&config, format!("store = \"{store}\"\n")).unwrap();
    let verify = hippo(&db)
        .args(["--config", config.to_str().unwrap(), "audit", "verify"])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&verify.stdout).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert!(report["entries"].as_u64().unwrap() >= 3, "{report}");
}

#[test]
fn erasing_a_tenant_removes_its_rows_from_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.db");
    let store = fresh_database();
    run(&db, &["--store", &store, "tenant", "create", "acme"]);
    let key = run(
        &db,
        &["--store", &store, "key", "create", "--tenant", "acme"],
    );
    run(
        &db,
        &[
            "--store",
            &store,
            "--tenant",
            "acme",
            "add",
            "--user",
            "ana",
            "Acme's launch is on May 3",
        ],
    );
    let count = |tenant: &str| -> i64 {
        let mut client = postgres::Client::connect(&store, postgres::NoTls).unwrap();
        let mut tx = client.transaction().unwrap();
        tx.execute("SELECT set_config('hippo.tenant', $1, true)", &[&tenant])
            .unwrap();
        let n = tx
            .query_one("SELECT count(*) FROM memories", &[])
            .unwrap()
            .get(0);
        tx.commit().unwrap();
        n
    };
    assert_eq!(count("acme"), 1);
    let out = run(&db, &["--store", &store, "tenant", "erase", "acme"]);
    assert!(out.contains("erased tenant acme"), "{out}");
    assert_eq!(count("acme"), 0);
    // Its keys went with it, in the same transaction.
    let keys = run(&db, &["--store", &store, "key", "list"]);
    assert!(!keys.contains(key_id(&key)), "{keys}");
    // A tenant created again under the name starts empty.
    run(&db, &["--store", &store, "tenant", "create", "acme"]);
    assert_eq!(count("acme"), 0);
}

/// The control plane lives in Postgres with the memories: keys created,
/// revoked or rotated by the CLI count at once on every replica, and a
/// SQLite control file next to `--db` plays no part.
#[test]
fn every_replica_follows_keys_kept_in_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.db");
    let store = fresh_database();
    let a = Server::start(&db, &["--store", &store]);
    let b = Server::start(&db, &["--store", &store]);
    let (status, _) = a.call("GET", "/v1/memories?user_id=ana", None);
    assert_eq!(status, 200, "open until the first key exists");

    run(&db, &["--store", &store, "tenant", "create", "acme"]);
    let key = run(
        &db,
        &[
            "--store", &store, "key", "create", "--tenant", "acme", "--access", "write",
        ],
    );
    // Both replicas now require a key, and accept this one for acme.
    for server in [&a, &b] {
        let (status, body) = server.call("GET", "/v1/memories?user_id=ana", None);
        assert_eq!(status, 401, "{body}");
    }
    let (status, body) = a.call_as(
        Some(&key),
        "POST",
        "/v1/memories",
        Some(json!({"user_id": "ana", "messages": [
            {"role": "user", "content": "Acme ships the beta on June 9"}
        ], "infer": false})),
    );
    assert_eq!(status, 200, "{body}");
    let (status, found) = b.call_as(
        Some(&key),
        "POST",
        "/v1/search",
        Some(json!({"user_id": "ana", "query": "when does the beta ship", "top_k": 1})),
    );
    assert_eq!(status, 200, "{found}");
    assert!(
        found["results"][0]["memory"]
            .as_str()
            .is_some_and(|m| m.contains("June 9")),
        "{found}"
    );
    // No control file was written next to the database.
    assert!(!dir.path().join("h.control.db").exists());

    // Rotation: the new key works on both; revocation of the old one counts
    // on both at once.
    let rotated = run(
        &db,
        &[
            "--store",
            &store,
            "key",
            "rotate",
            key_id(&key),
            "--grace-secs",
            "600",
        ],
    );
    for server in [&a, &b] {
        let (status, body) =
            server.call_as(Some(&rotated), "GET", "/v1/memories?user_id=ana", None);
        assert_eq!(status, 200, "{body}");
    }
    run(&db, &["--store", &store, "key", "revoke", key_id(&key)]);
    for server in [&a, &b] {
        let (status, body) = server.call_as(Some(&key), "GET", "/v1/memories?user_id=ana", None);
        assert_eq!(status, 401, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("revoked")),
            "{body}"
        );
    }

    // The control plane's audit chain verifies, and holds the key events.
    let out = run(&db, &["--store", &store, "audit", "verify", "--control"]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    let log = run(&db, &["--store", &store, "audit", "list", "--control"]);
    for action in [
        "tenant_create",
        "keys_required",
        "key_create",
        "key_rotate",
        "key_revoke",
    ] {
        assert!(
            log.contains(&format!("\"action\":\"{action}\"")),
            "{action}: {log}"
        );
    }
}

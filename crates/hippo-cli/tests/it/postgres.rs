//! `hippo` with its memories in Postgres (`--store postgres://…`): the real
//! binary against a real Postgres from `scripts/pg.sh` (URL in
//! `HIPPO_TEST_POSTGRES`). Each test gets a database of its own.

use serde_json::json;

use crate::common::{hippo, run, Server};

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
    run(&db, &["tenant", "create", "acme"]);
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
}

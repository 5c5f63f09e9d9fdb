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
    // The maintenance pass after an erasure compacts, and the keyword index
    // is written anew: no segment keeps the erased document's terms.
    let (status, report) = a.call("POST", "/v1/maintenance", None);
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["compacted"], true, "{report}");
    let mut client = postgres::Client::connect(&store, postgres::NoTls).unwrap();
    let deleted: i64 = client
        .query_one(
            "SELECT coalesce(sum(num_deleted), 0)::bigint FROM paradedb.index_info('memories_keywords')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(deleted, 0, "erased documents left in the keyword index");

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

/// What one client of [`two_replicas_under_concurrent_load_lose_and_duplicate_nothing`]
/// was told: memories acknowledged, their final text, and what it erased.
#[derive(Default)]
struct Acknowledged {
    /// Added with extraction (`infer`): id and the token in its text.
    inferred: Vec<(String, String)>,
    /// Added without extraction: id → the text last acknowledged.
    plain: std::collections::BTreeMap<String, String>,
    /// Erased (acknowledged).
    erased: Vec<String>,
    /// Retried on both replicas at once with one `Idempotency-Key`.
    retried: Vec<String>,
}

/// Issue 17's acceptance: two replicas on one database under concurrent
/// writes, updates, erases, searches and LLM jobs (a scripted fake), with
/// idempotent retries sent to both replicas at once. Afterwards nothing
/// acknowledged is lost or doubled, every job ran once, and the audit chain
/// verifies.
#[test]
fn two_replicas_under_concurrent_load_lose_and_duplicate_nothing() {
    let (fake, script) = super::fakes::openai_chat(super::fakes::ChatScript {
        echo: true,
        delay_ms: 10,
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.db");
    let store = fresh_database();
    let llm = format!("{}/v1", fake.base);
    let args = [
        "--store",
        store.as_str(),
        "--llm-url",
        llm.as_str(),
        "--llm-model",
        "scripted",
        "--maintenance-interval-secs",
        "1",
    ];
    let servers = std::sync::Arc::new([Server::start(&db, &args), Server::start(&db, &args)]);
    const CLIENTS: usize = 4;
    const OPS: usize = 24;

    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let servers = servers.clone();
            std::thread::spawn(move || {
                let user = format!("u{c}");
                let mut ack = Acknowledged::default();
                for i in 0..OPS {
                    let here = &servers[(c + i) % 2];
                    let there = &servers[(c + i + 1) % 2];
                    let token = format!("tok{c}x{i}z");
                    if i % 2 == 0 {
                        // A write that makes an LLM job; every fourth one is
                        // retried on both replicas at the same moment.
                        let body = json!({"user_id": user, "infer": true, "messages": [
                            {"role": "user", "name": "Ana", "content": format!("Ana keeps item {token} in the attic.")}
                        ]});
                        let key = format!("add-{token}");
                        let headers = [("Idempotency-Key", key.as_str())];
                        let answers: Vec<(u16, Option<String>, serde_json::Value)> = if i % 4 == 0 {
                            std::thread::scope(|s| {
                                let a = s.spawn(|| here.post_with("/v1/memories", &headers, &body));
                                let b = s.spawn(|| there.post_with("/v1/memories", &headers, &body));
                                vec![a.join().unwrap(), b.join().unwrap()]
                            })
                        } else {
                            vec![here.post_with("/v1/memories", &headers, &body)]
                        };
                        let ok: Vec<_> = answers.iter().filter(|a| a.0 == 200).collect();
                        for (status, _, answer) in &answers {
                            assert!(
                                *status == 200
                                    || (*status == 409
                                        && answer["error"]["code"] == "idempotent_request_in_progress"),
                                "{status} {answer}"
                            );
                        }
                        assert!(!ok.is_empty(), "{answers:?}");
                        let id = ok[0].2["results"][0]["id"].as_str().unwrap().to_owned();
                        for other in &ok[1..] {
                            assert_eq!(other.2["results"][0]["id"], id.as_str(), "one write, one answer");
                        }
                        if answers.len() > 1 {
                            ack.retried.push(token.clone());
                        }
                        ack.inferred.push((id, token.clone()));
                    } else {
                        let text = format!("Plain note {token}, first draft.");
                        let (status, added) = here.call(
                            "POST",
                            "/v1/memories",
                            Some(json!({"user_id": user, "infer": false, "messages": [
                                {"role": "user", "content": text}
                            ]})),
                        );
                        assert_eq!(status, 200, "{added}");
                        let id = added["results"][0]["id"].as_str().unwrap().to_owned();
                        ack.plain.insert(id.clone(), text);
                        // Updates and erases through the other replica.
                        if i % 3 == 0 {
                            let text = format!("Plain note {token}, revised.");
                            let (status, body) = there.call(
                                "PATCH",
                                &format!("/v1/memories/{id}"),
                                Some(json!({"memory": text})),
                            );
                            assert_eq!(status, 200, "{body}");
                            ack.plain.insert(id, text);
                        } else if i % 5 == 0 {
                            let (status, body) =
                                there.call("DELETE", &format!("/v1/memories/{id}?hard=true"), None);
                            assert!(status == 200 || status == 204, "{status} {body}");
                            ack.plain.remove(&id);
                            ack.erased.push(id);
                        }
                    }
                    let (status, found) = there.call(
                        "POST",
                        "/v1/search",
                        Some(json!({"user_id": user, "query": format!("where is item {token}"), "top_k": 5})),
                    );
                    assert_eq!(status, 200, "{found}");
                }
                ack
            })
        })
        .collect();
    let acks: Vec<Acknowledged> = clients.into_iter().map(|c| c.join().unwrap()).collect();

    // Every job finishes, none fails.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    let jobs = loop {
        let (status, jobs) = servers[0].call("GET", "/v1/jobs", None);
        assert_eq!(status, 200, "{jobs}");
        if jobs["pending"] == 0 && jobs["running"] == 0 {
            break jobs;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "jobs did not drain: {jobs}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(jobs["failed"], 0, "{jobs}");
    let inferred: usize = acks.iter().map(|a| a.inferred.len()).sum();
    assert_eq!(
        jobs["done"], inferred as u64,
        "one job per acknowledged write: {jobs}"
    );

    for (c, ack) in acks.iter().enumerate() {
        let (status, listed) = servers[c % 2].call(
            "GET",
            &format!("/v1/memories?user_id=u{c}&limit=1000"),
            None,
        );
        assert_eq!(status, 200, "{listed}");
        let rows = listed["results"].as_array().unwrap();
        let with = |needle: &str, message: bool| {
            rows.iter()
                .filter(|m| m["memory"].as_str().is_some_and(|t| t.contains(needle)))
                .filter(|m| (m["kind"] == "message") == message)
                .count()
        };
        for (id, token) in &ack.inferred {
            assert_eq!(with(token, true), 1, "message {token} stored once");
            assert_eq!(with(token, false), 1, "fact of {token} extracted once");
            let (status, _) = servers[1 - c % 2].call("GET", &format!("/v1/memories/{id}"), None);
            assert_eq!(status, 200);
        }
        for (id, text) in &ack.plain {
            let (status, got) = servers[1 - c % 2].call("GET", &format!("/v1/memories/{id}"), None);
            assert_eq!(status, 200, "{got}");
            assert_eq!(got["memory"], text.as_str(), "the last acknowledged text");
        }
        for id in &ack.erased {
            let (status, _) = servers[c % 2].call("GET", &format!("/v1/memories/{id}"), None);
            assert_eq!(status, 404, "erased {id}");
        }
        assert!(!ack.retried.is_empty());
    }
    // Each extraction ran once: one extraction request per message.
    let script = script.lock().unwrap();
    for ack in &acks {
        for (_, token) in &ack.inferred {
            let asked = script
                .requests
                .iter()
                .filter_map(|r| r["messages"].as_array()?.last()?["content"].as_str())
                .filter(|last| {
                    !last.starts_with("Existing memories:") && last.contains(token.as_str())
                })
                .count();
            assert_eq!(asked, 1, "extraction of {token} requested {asked} times");
        }
    }
    drop(script);

    // The audit chain, written by both replicas, verifies.
    let out = run(&db, &["--store", &store, "audit", "verify"]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["ok"], true, "{report}");
}

/// `hippo migrate` moves a whole deployment — tenants, keys, memories,
/// audit chains — from SQLite files to Postgres and back, losslessly; a
/// second run finds nothing left to copy; the keys open the migrated
/// stores.
#[test]
fn a_deployment_migrates_to_postgres_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.db");
    let back = dir.path().join("back").join("h.db");
    let store = fresh_database();
    run(&db, &["tenant", "create", "acme"]);
    let key = run(
        &db,
        &["key", "create", "--tenant", "acme", "--access", "write"],
    );
    for (tenant, text) in [
        ("default", "The default tenant's note about the fire drill"),
        ("acme", "Acme's launch is on May 3"),
        ("acme", "Acme's office moved to Leeds"),
    ] {
        run(
            &db,
            &[
                "--tenant", tenant, "add", "--user", "ana", "--role", "user", text,
            ],
        );
    }
    let exported = |args: &[&str]| run(&db, &[args, &["export"]].concat());

    let out = run(&db, &["migrate", "--to", &store]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        report["tenants"]["acme"]["destination_memories"], 2,
        "{report}"
    );
    assert_eq!(
        report["tenants"]["default"]["destination_memories"], 1,
        "{report}"
    );
    assert_eq!(report["control_copied"], true, "{report}");
    assert_eq!(report["keys"], 1, "{report}");
    // Run again: nothing left to copy.
    let again: serde_json::Value =
        serde_json::from_str(&run(&db, &["migrate", "--to", &store])).unwrap();
    assert_eq!(again["tenants"]["acme"]["copied"]["memories"], 0, "{again}");
    assert_eq!(again["control_copied"], false, "{again}");

    // The key opens the Postgres deployment.
    let server = Server::start(&db, &["--store", &store]);
    let (status, found) = server.call_as(
        Some(&key),
        "POST",
        "/v1/search",
        Some(json!({"user_id": "ana", "query": "when is the launch", "top_k": 1})),
    );
    assert_eq!(status, 200, "{found}");
    assert!(
        found["results"][0]["memory"]
            .as_str()
            .unwrap()
            .contains("May 3"),
        "{found}"
    );
    drop(server);

    // And back to SQLite files: the same memories, chains that verify.
    let out = run(
        &db,
        &["--store", &store, "migrate", "--to", back.to_str().unwrap()],
    );
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        report["tenants"]["acme"]["destination_memories"], 2,
        "{report}"
    );
    for tenant in ["default", "acme"] {
        assert_eq!(
            exported(&["--tenant", tenant]),
            run(&back, &["--tenant", tenant, "export"]),
            "tenant {tenant}"
        );
        assert_eq!(
            run(&db, &["--tenant", tenant, "audit", "list"]),
            run(&back, &["--tenant", tenant, "audit", "list"]),
            "tenant {tenant}'s audit chain"
        );
        let check: serde_json::Value =
            serde_json::from_str(&run(&back, &["--tenant", tenant, "audit", "verify"])).unwrap();
        assert_eq!(check["ok"], true, "{check}");
    }
    assert_eq!(
        run(&db, &["audit", "list", "--control"]),
        run(&back, &["audit", "list", "--control"])
    );
    // `--store sqlite` names the SQLite files over a config file's Postgres URL.
    let config = dir.path().join("pg.toml");
    std::fs::write(&config, format!("store = \"{store}\"\n")).unwrap();
    let stats: serde_json::Value = serde_json::from_str(&run(
        &back,
        &[
            "--config",
            config.to_str().unwrap(),
            "--store",
            "sqlite",
            "--tenant",
            "acme",
            "stats",
        ],
    ))
    .unwrap();
    assert_eq!(stats["memories"], 2, "{stats}");
    let server = Server::start(&back, &[]);
    let (status, found) = server.call_as(
        Some(&key),
        "POST",
        "/v1/search",
        Some(json!({"user_id": "ana", "query": "where is the office", "top_k": 1})),
    );
    assert_eq!(status, 200, "{found}");
    assert!(
        found["results"][0]["memory"]
            .as_str()
            .unwrap()
            .contains("Leeds"),
        "{found}"
    );

    // A destination that holds memories of its own is refused.
    let refused = hippo(&db)
        .args(["migrate", "--to", back.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!refused.status.success());
}

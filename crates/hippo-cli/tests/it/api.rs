//! Every REST endpoint over a real socket, including errors.

use serde_json::{json, Value};

use super::common::Server;

#[test]
fn rest_api_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("api.db"), &["--max-body-bytes", "200000"]);

    let (st, body) = s.call("GET", "/healthz", None);
    assert_eq!(st, 200);
    assert_eq!(body["status"], "ok");

    // Add one item, then a batch.
    let (st, body) = s.call("POST", "/v1/memories", Some(json!({
        "user_id": "ana", "messages": [{"role": "user", "name": "Ana", "content": "I adopted a kitten named Miso"}],
        "metadata": {"topic": "pets"}, "event_time": "2024-05-01T10:00:00Z"
    })));
    assert_eq!(st, 200, "{body}");
    let miso = body["results"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(body["results"][0]["name"], "Ana");
    let items: Vec<Value> = (0..5)
        .map(|i| json!({"user_id": "ana", "text": format!("note number {i} about gardening")}))
        .collect();
    let (st, body) = s.call("POST", "/v1/memories/batch", Some(json!({"items": items})));
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["results"].as_array().unwrap().len(), 5);
    s.call(
        "POST",
        "/v1/memories",
        Some(json!({"user_id": "bob", "text": "Bob's kitten is called Pixel"})),
    );

    // A conversation: a result carries its neighbouring turns as context.
    let turns = [
        ("Bob", "Where are you going on holiday?"),
        ("Ana", "Lisbon, with my sister."),
    ];
    let items: Vec<Value> = turns
        .iter()
        .map(|(who, text)| json!({"user_id": "ana", "session_id": "trip", "messages": [{"role": "user", "name": who, "content": text}]}))
        .collect();
    let (st, _) = s.call("POST", "/v1/memories/batch", Some(json!({"items": items})));
    assert_eq!(st, 200);
    let (st, body) = s.call(
        "POST",
        "/v1/search",
        Some(json!({"session_id": "trip", "query": "holiday destination", "top_k": 1})),
    );
    assert_eq!(st, 200, "{body}");
    let r = &body["results"][0];
    assert_eq!(
        r["memory"],
        "Bob: Where are you going on holiday?\nAna: Lisbon, with my sister."
    );
    let sources = r["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 2);
    // Both turns match; the better one is the result's own memory, and the
    // other is flagged as a hit of the same excerpt rather than a second result.
    assert!(sources
        .iter()
        .any(|s| s["id"] == r["id"] && s["hit"] == true));
    assert!(sources.iter().all(|s| s["hit"].is_boolean()));
    let (_, body) = s.call(
        "POST",
        "/v1/search",
        Some(json!({"session_id": "trip", "query": "holiday destination", "top_k": 1, "context_turns": 0})),
    );
    assert!(body["results"][0].get("sources").is_none());
    let (st, body) = s.call(
        "POST",
        "/v1/search",
        Some(json!({"session_id": "trip", "query": "holiday", "context_turns": 9})),
    );
    assert_eq!(st, 400, "{body}");
    // A token budget caps the results, hits included; 0 is refused.
    let (st, body) = s.call(
        "POST",
        "/v1/search",
        Some(json!({"user_id": "ana", "query": "holiday gardening", "budget_tokens": 12})),
    );
    assert_eq!(st, 200, "{body}");
    let total: usize = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["memory"].as_str().unwrap().len())
        .sum();
    assert!(
        total <= 4 * 12 || body["results"].as_array().unwrap().len() == 1,
        "{body}"
    );
    let (st, body) = s.call(
        "POST",
        "/v1/search",
        Some(json!({"user_id": "ana", "query": "holiday", "budget_tokens": 0})),
    );
    assert_eq!(st, 400, "{body}");
    s.call("DELETE", "/v1/memories?session_id=trip", None);

    // Search: scoped, explained, filterable.
    let (st, body) = s.call(
        "POST",
        "/v1/search",
        Some(json!({"user_id": "ana", "query": "what is the cat called?", "top_k": 3})),
    );
    assert_eq!(st, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results[0]["id"], miso.as_str());
    assert!(results[0]["scores"]["vector"].is_number());
    assert!(body["took_ms"].is_number());
    assert!(body["retrieve_ms"].as_f64().unwrap() <= body["took_ms"].as_f64().unwrap());
    assert!(body["embed_ms"].is_number());
    assert!(results.iter().all(|r| r["user_id"] == "ana"));
    // Why, stage by stage: each result's rank in each channel, its share of
    // the token budget, and where the time went.
    for stage in [
        "embed_ms",
        "keyword_ms",
        "vector_ms",
        "fusion_ms",
        "packing_ms",
    ] {
        assert!(
            body["timings"][stage].as_f64().unwrap() >= 0.0,
            "{stage}: {body}"
        );
    }
    assert_eq!(
        results[0]["scores"]["vector_rank"].as_u64().map(|r| r >= 1),
        Some(true)
    );
    let tokens: u64 = results.iter().map(|r| r["tokens"].as_u64().unwrap()).sum();
    assert_eq!(body["tokens"].as_u64(), Some(tokens));
    assert!(
        tokens > 0 && tokens <= body["budget_tokens"].as_u64().unwrap(),
        "{body}"
    );
    let (_, body) = s.call("POST", "/v1/search", Some(json!({"user_id": "ana", "query": "kitten", "filters": {"metadata": {"topic": "garden"}}})));
    assert!(body["results"].as_array().unwrap().is_empty());
    let (_, body) = s.call(
        "POST",
        "/v1/search",
        Some(json!({"user_id": "ana", "query": "Ana"})),
    );
    assert_eq!(
        body["results"][0]["id"],
        miso.as_str(),
        "speaker name is searchable"
    );

    // List with a cursor.
    let (st, page1) = s.call("GET", "/v1/memories?user_id=ana&limit=4", None);
    assert_eq!(st, 200);
    assert_eq!(page1["results"].as_array().unwrap().len(), 4);
    let cursor = page1["next_cursor"].as_str().unwrap();
    let (_, page2) = s.call(
        "GET",
        &format!("/v1/memories?user_id=ana&limit=4&cursor={cursor}"),
        None,
    );
    assert_eq!(page2["results"].as_array().unwrap().len(), 2);
    assert!(page2["next_cursor"].is_null());

    // Get, patch, delete by id.
    let (st, m) = s.call("GET", &format!("/v1/memories/{miso}"), None);
    assert_eq!(
        (st, m["memory"].as_str().unwrap()),
        (200, "I adopted a kitten named Miso")
    );
    let (st, _) = s.call("GET", &format!("/v1/memories/{miso}?user_id=bob"), None);
    assert_eq!(st, 404, "by-id reads honour the scope");
    let (st, m) = s.call(
        "PATCH",
        &format!("/v1/memories/{miso}"),
        Some(json!({"content": "I adopted a puppy named Miso"})),
    );
    assert_eq!(
        (st, m["memory"].as_str().unwrap()),
        (200, "I adopted a puppy named Miso")
    );
    let (st, h) = s.call("GET", &format!("/v1/memories/{miso}/history"), None);
    assert_eq!(st, 200);
    assert_eq!(h["versions"][0]["memory"], "I adopted a kitten named Miso");
    assert_eq!(h["versions"][0]["version_of"], miso.as_str());
    assert_eq!(h["versions"][1]["memory"], "I adopted a puppy named Miso");
    assert_eq!(h["events"][0]["kind"], "revised");
    // Delete is soft: the memory leaves search, stays readable, comes back.
    let (st, _) = s.call("DELETE", &format!("/v1/memories/{miso}"), None);
    assert_eq!(st, 200);
    let (st, body) = s.call("GET", &format!("/v1/memories/{miso}"), None);
    assert_eq!((st, body["status"].as_str().unwrap()), (200, "deleted"));
    let found = |s: &super::common::Server| {
        let (_, body) = s.call(
            "POST",
            "/v1/search",
            Some(json!({"user_id": "ana", "query": "puppy Miso"})),
        );
        body["results"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == miso.as_str())
    };
    assert!(!found(&s));
    let (st, body) = s.call("POST", &format!("/v1/memories/{miso}/restore"), None);
    assert_eq!((st, body["status"].as_str().unwrap()), (200, "active"));
    assert!(found(&s));
    // `hard=true` erases it, with its versions and history.
    let (st, _) = s.call("DELETE", &format!("/v1/memories/{miso}?hard=true"), None);
    assert_eq!(st, 200);
    let (st, body) = s.call("GET", &format!("/v1/memories/{miso}"), None);
    assert_eq!(
        (st, body["error"]["code"].as_str().unwrap()),
        (404, "not_found")
    );
    let (st, _) = s.call("GET", &format!("/v1/memories/{miso}/history"), None);
    assert_eq!(st, 404);

    // Erase a scope.
    let (st, body) = s.call("DELETE", "/v1/memories?user_id=ana", None);
    assert_eq!((st, body["deleted"].as_u64().unwrap()), (200, 5));
    let (_, body) = s.call("GET", "/v1/memories?user_id=bob", None);
    assert_eq!(
        body["results"].as_array().unwrap().len(),
        1,
        "other scopes untouched"
    );

    // Docs and metrics.
    let (st, doc) = s.call("GET", "/openapi.json", None);
    assert_eq!(st, 200);
    for path in [
        "/v1/memories",
        "/v1/memories/batch",
        "/v1/search",
        "/v1/memories/{id}",
        "/v1/memories/{id}/history",
        "/v1/memories/{id}/restore",
        "/v1/memories/{id}/invalidate",
        "/healthz",
        "/metrics",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} documented");
    }
    let (st, metrics) = s.call("GET", "/metrics", None);
    assert_eq!(st, 200);
    let metrics = metrics.as_str().unwrap();
    assert!(metrics.contains("hippo_http_requests_total"));
    assert!(metrics.contains("hippo_process_resident_memory_bytes "));
    // The allocator's view, to tell a leak (in use grows) from retention
    // (free grows), and what the periodic trim gave back.
    let gauge = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing"))
            .parse()
            .unwrap()
    };
    assert!(gauge("hippo_heap_in_use_bytes") > 1e6);
    assert!(gauge("hippo_heap_free_bytes") >= 0.0);
    assert!(gauge("hippo_memory_trimmed_bytes_total") >= 0.0);
}

/// The lifecycle acceptance over REST: a fact that changes keeps both
/// versions with their validity, `as_of` answers from the past, history
/// has both with provenance, and re-importing a conversation stores nothing.
#[test]
fn a_changing_fact_and_a_reimport_over_rest() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("life.db"), &[]);
    let (st, body) = s.call("POST", "/v1/memories/batch", Some(json!({"items": [
        {"user_id": "ana", "kind": "fact", "text": "Ana lives in Boston.", "event_time": "2023-01-10T12:00:00Z"},
        {"user_id": "ana", "kind": "fact", "text": "Ana works as a nurse.", "event_time": "2023-01-10T12:00:00Z"}
    ]})));
    assert_eq!(st, 200, "{body}");
    let id = body["results"][0]["id"].as_str().unwrap().to_owned();
    let (st, body) = s.call(
        "PATCH",
        &format!("/v1/memories/{id}"),
        Some(json!({"content": "Ana lives in Denver.", "valid_from": "2023-06-01T00:00:00Z", "reason": "moved"})),
    );
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["valid_from"], "2023-06-01T00:00:00Z");
    let top = |extra: Value| {
        let mut q = json!({"user_id": "ana", "query": "Where does Ana live?"});
        q.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (st, body) = s.call("POST", "/v1/search", Some(q));
        assert_eq!(st, 200, "{body}");
        body["results"][0]["memory"].as_str().unwrap().to_owned()
    };
    assert_eq!(top(json!({})), "Ana lives in Denver.");
    assert_eq!(
        top(json!({"as_of": "2023-03-01T00:00:00Z"})),
        "Ana lives in Boston."
    );
    let (_, h) = s.call("GET", &format!("/v1/memories/{id}/history"), None);
    let versions = h["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0]["valid_to"], "2023-06-01T00:00:00Z");
    assert!(versions[0]["provenance"]["request_id"].is_string());
    assert_ne!(
        versions[0]["provenance"]["request_id"],
        versions[1]["provenance"]["request_id"]
    );
    assert_eq!(h["events"][0]["reason"], "moved");
    let (_, listed) = s.call("GET", "/v1/memories?user_id=ana&all_versions=true", None);
    assert_eq!(listed["results"].as_array().unwrap().len(), 3);
    let (st, _) = s.call(
        "POST",
        &format!("/v1/memories/{id}/invalidate"),
        Some(json!({"valid_to": "2024-01-01T00:00:00Z", "reason": "moved away"})),
    );
    assert_eq!(st, 200);
    assert_ne!(top(json!({})), "Ana lives in Denver.");
    let (st, body) = s.call(
        "POST",
        &format!("/v1/memories/{id}/invalidate"),
        Some(json!({"valid_to": "2020-01-01T00:00:00Z"})),
    );
    assert_eq!(st, 400, "{body}");

    // Re-importing the same conversation stores nothing new.
    let conv: Vec<Value> = ["Hi Ben!", "Hey Ana, how was the trip?", "ok", "ok"]
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"user_id": "ana", "session_id": "s1", "event_time": "2023-05-08T13:56:00Z",
            "messages": [{"role": "user", "name": if i % 2 == 0 { "Ana" } else { "Ben" }, "content": t}]}))
        .collect();
    let (_, first) = s.call("POST", "/v1/memories/batch", Some(json!({"items": conv})));
    assert_eq!(first["results"].as_array().unwrap().len(), 4);
    let (st, again) = s.call("POST", "/v1/memories/batch", Some(json!({"items": conv})));
    assert_eq!(st, 200);
    assert_eq!(again["results"].as_array().unwrap().len(), 0);
    assert_eq!(again["duplicates"].as_array().unwrap().len(), 4);
    assert_eq!(
        again["duplicates"][0]["existing_id"],
        first["results"][0]["id"]
    );
    let (_, listed) = s.call("GET", "/v1/memories?session_id=s1", None);
    assert_eq!(listed["results"].as_array().unwrap().len(), 4);
}

#[test]
fn forgetting_and_admission_are_explained_over_rest() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("forget.db"), &[]);
    let (st, body) = s.call("POST", "/v1/memories/batch", Some(json!({"items": [
        {"user_id": "ana", "kind": "fact", "text": "Ana's locker code is 7781.", "ttl_seconds": 3600},
        {"user_id": "ana", "kind": "fact", "text": "Ana plays the cello."},
        {"user_id": "ana", "kind": "fact", "text": "ok thanks"},
        {"user_id": "ana", "kind": "fact", "text": "Ana might have a boat.", "confidence": 0.1},
        {"user_id": "ana", "kind": "fact", "text": "Ana plays the cello", "session_id": "s2"}
    ]})));
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["results"].as_array().unwrap().len(), 2);
    let locker = body["results"][0]["id"].as_str().unwrap().to_owned();
    let cello = body["results"][1]["id"].as_str().unwrap().to_owned();
    assert!(body["results"][0]["expires_at"].is_string());
    let rejected = body["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 2);
    assert_eq!(rejected[0]["memory"], "ok thanks");
    assert_eq!(rejected[0]["admission"]["utility"], 0.0);
    assert!(rejected[1]["admission"]["score"].as_f64().unwrap() < 0.3);
    assert_eq!(body["duplicates"][0]["existing_id"], cello.as_str());
    assert!(body["duplicates"][0]["similarity"].as_f64().unwrap() >= 0.95);
    let (_, record) = s.call("GET", "/v1/rejections?user_id=ana", None);
    assert_eq!(record["results"].as_array().unwrap().len(), 2);
    let after = record["results"][0]["seq"].as_i64().unwrap();
    let (_, rest) = s.call(
        "GET",
        &format!("/v1/rejections?user_id=ana&after={after}"),
        None,
    );
    assert_eq!(rest["results"].as_array().unwrap().len(), 1);
    let (_, none) = s.call("GET", "/v1/rejections?user_id=bob", None);
    assert!(none["results"].as_array().unwrap().is_empty());

    // Feedback reinforces; the memory explains its strength.
    let (st, m) = s.call(
        "POST",
        &format!("/v1/memories/{cello}/feedback"),
        Some(json!({"signal": "helpful", "note": "answered"})),
    );
    assert_eq!(st, 200, "{m}");
    assert_eq!(m["usage"]["helpful"], 1);
    assert_eq!(m["strength"]["value"], 1.0);
    assert_eq!(
        m["strength"]["archive_below"].as_f64().unwrap() as f32,
        0.05
    );
    let (_, got) = s.call("GET", &format!("/v1/memories/{cello}"), None);
    assert!(got["strength"]["stability_days"].as_f64().unwrap() > 365.0);
    let (_, found) = s.call(
        "POST",
        "/v1/search",
        Some(json!({"user_id": "ana", "query": "What instrument does Ana play?"})),
    );
    assert_eq!(found["results"][0]["id"], cello.as_str());
    assert_eq!(found["results"][0]["scores"]["reinforcement"], 0.5);
    let (st, e) = s.call(
        "POST",
        &format!("/v1/memories/{cello}/feedback"),
        Some(json!({"signal": "great"})),
    );
    assert_eq!(st, 400, "{e}");

    // Expiry: cleared by PATCH with null (no new version), archive and
    // restore, a maintenance pass.
    let (st, m) = s.call(
        "PATCH",
        &format!("/v1/memories/{locker}"),
        Some(json!({"expires_at": null})),
    );
    assert_eq!(st, 200, "{m}");
    assert!(m.get("expires_at").is_none());
    let (_, h) = s.call("GET", &format!("/v1/memories/{locker}/history"), None);
    assert_eq!(h["versions"].as_array().unwrap().len(), 1);
    assert_eq!(h["events"][0]["kind"], "expiry");
    let (st, m) = s.call(
        "POST",
        &format!("/v1/memories/{locker}/archive"),
        Some(json!({"reason": "changed weekly"})),
    );
    assert_eq!(st, 200, "{m}");
    assert_eq!(m["status"], "archived");
    let (_, listed) = s.call("GET", "/v1/memories?user_id=ana&status=archived", None);
    assert_eq!(listed["results"][0]["id"], locker.as_str());
    let (st, report) = s.call("POST", "/v1/maintenance", None);
    assert_eq!(st, 200, "{report}");
    assert_eq!(report["checked"], 1);
    assert!(report["faded"].as_array().unwrap().is_empty());
    let (st, spec) = s.call("GET", "/openapi.json", None);
    assert_eq!(st, 200);
    for path in [
        "/v1/memories/{id}/feedback",
        "/v1/memories/{id}/archive",
        "/v1/maintenance",
        "/v1/rejections",
    ] {
        assert!(spec["paths"].get(path).is_some(), "{path} documented");
    }
}

#[test]
fn bad_requests_get_clear_errors_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("err.db"), &["--max-body-bytes", "20000"]);
    let cases = [
        ("POST", "/v1/memories", json!({"text": "no scope"}), 400),
        ("POST", "/v1/memories", json!({"user_id": "u"}), 400),
        (
            "POST",
            "/v1/memories",
            json!({"user_id": "u", "text": "x", "messages": []}),
            400,
        ),
        (
            "POST",
            "/v1/memories",
            json!({"user_id": "u", "text": "x", "bogus": 1}),
            400,
        ),
        (
            "POST",
            "/v1/memories",
            json!({"user_id": "u", "text": "x", "event_time": "yesterday"}),
            400,
        ),
        (
            "POST",
            "/v1/memories/batch",
            json!({"items": [{"user_id": "u", "text": "ok"}, {"user_id": "u", "text": ""}]}),
            400,
        ),
        (
            "POST",
            "/v1/search",
            json!({"user_id": "u", "query": "x", "top_k": 1000}),
            400,
        ),
        ("POST", "/v1/search", json!({"query": "x"}), 400),
        (
            "POST",
            "/v1/search",
            json!({"user_id": "u", "query": "x", "filters": {"metadata": {"a": [1]}}}),
            400,
        ),
        (
            "POST",
            "/v1/memories",
            json!({"user_id": "u", "text": "y".repeat(30000)}),
            413,
        ),
    ];
    for (method, path, body, want) in cases {
        let (st, resp) = s.call(method, path, Some(body.clone()));
        assert_eq!(st, want, "{method} {path} {body}: {resp}");
        assert!(
            resp["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{resp}"
        );
        assert!(resp["error"]["code"].is_string());
    }
    for (method, path, want) in [
        ("GET", "/v1/memories/not-a-uuid", 400),
        (
            "GET",
            "/v1/memories/0190a000-0000-7000-8000-000000000001",
            404,
        ),
        ("DELETE", "/v1/memories", 400),
        ("GET", "/v1/memories?limit=0&user_id=u", 400),
        ("GET", "/nope", 404),
    ] {
        let (st, resp) = s.call(method, path, None);
        assert_eq!(st, want, "{method} {path}: {resp}");
    }
    let (_, body) = s.call("GET", "/v1/memories?user_id=u", None);
    assert!(
        body["results"].as_array().unwrap().is_empty(),
        "rejected requests stored nothing"
    );
}

#[test]
fn requests_carry_an_id_into_the_answer_and_the_json_logs() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ids.db");
    let mut child = crate::common::hippo(&db)
        .env("HIPPO_LOG_FORMAT", "json")
        .env("HIPPO_LOG", "info,hippo_server=debug")
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();
    let agent = ureq::AgentBuilder::new().build();
    // A client's id comes back; a request without one gets a fresh one.
    let given = agent
        .get(&format!("{base}/v1/memories?user_id=ana"))
        .set("X-Request-Id", "trace-42.a_b")
        .call()
        .unwrap();
    assert_eq!(given.header("x-request-id"), Some("trace-42.a_b"));
    let fresh = agent.get(&format!("{base}/healthz")).call().unwrap();
    let id = fresh.header("x-request-id").unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    // One that is not a plain token is replaced, not echoed into logs.
    let odd = agent
        .get(&format!("{base}/healthz"))
        .set("X-Request-Id", "a b;c")
        .call()
        .unwrap();
    assert_ne!(odd.header("x-request-id"), Some("a b;c"));
    child.kill().ok();
    let out = child.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["span"]["id"] == "trace-42.a_b"
            && l["span"]["route"] == "/v1/memories"
            && l["fields"]["status"] == 200),
        "{logs}"
    );
}

#[test]
fn relative_time_in_a_query_resolves_against_its_reference_time() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("when.db"), &[]);
    // Other days, other doings: BM25 and the vector scale need a corpus.
    let filler: Vec<Value> = (1..=28)
        .map(|d| json!({"user_id": "ana", "text": format!("Day {d} of the project: wrote report section {d}."),
            "event_time": format!("2023-04-{d:02}T10:00:00Z")}))
        .collect();
    let (st, body) = s.call("POST", "/v1/memories/batch", Some(json!({"items": filler})));
    assert_eq!(st, 200, "{body}");
    // The same outing on two Sundays; only the day tells them apart.
    for (day, who) in [("2023-05-21", "Bo"), ("2023-06-11", "Cy")] {
        let (st, body) = s.call("POST", "/v1/memories", Some(json!({
            "user_id": "ana", "messages": [{"role": "user", "name": "Ana", "content": format!("Went sailing on the lake with {who}.")}],
            "event_time": format!("{day}T15:00:00Z")
        })));
        assert_eq!(st, 200, "{body}");
    }
    let ask = |reference: Option<&str>| {
        let mut q = json!({"user_id": "ana", "query": "Who went sailing with me last Sunday?",
            "top_k": 1, "context_turns": 0});
        if let Some(r) = reference {
            q["reference_time"] = json!(r);
        }
        let (st, body) = s.call("POST", "/v1/search", Some(q));
        assert_eq!(st, 200, "{body}");
        body["results"][0]["memory"].as_str().unwrap().to_owned()
    };
    // Asked on Thursday 25 May 2023, "last Sunday" is the 21st; on 14 June, the 11th.
    assert!(ask(Some("2023-05-25T09:00:00Z")).contains("Bo"));
    assert!(ask(Some("2023-06-14T09:00:00+02:00")).contains("Cy"));
    // Not a time: a clear 400, nothing searched.
    let (st, body) = s.call(
        "POST",
        "/v1/search",
        Some(json!({"user_id": "ana", "query": "sailing", "reference_time": "last week"})),
    );
    assert_eq!(st, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("reference_time")
            || body.to_string().contains("reference_time"),
        "{body}"
    );
}

#[test]
fn scopes_are_counted_and_listing_filters_by_event_time_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("scopes.db");
    let s = Server::start(&db, &[]);
    let add = |user: &str, session: Option<&str>, text: &str, when: &str, topic: &str| {
        let mut body = json!({"user_id": user, "text": text, "event_time": when, "metadata": {"topic": topic}});
        if let Some(session) = session {
            body["session_id"] = json!(session);
        }
        let (st, resp) = s.call("POST", "/v1/memories", Some(body));
        assert_eq!(st, 200, "{resp}");
    };
    add(
        "ana",
        Some("s1"),
        "Ana flew to Lisbon",
        "2024-03-01T00:00:00Z",
        "travel",
    );
    add(
        "ana",
        Some("s1"),
        "Ana bought a kite",
        "2024-04-01T00:00:00Z",
        "shopping",
    );
    add(
        "ana",
        Some("s2"),
        "Ana flew to Oslo",
        "2024-05-01T00:00:00Z",
        "travel",
    );
    add("bob", None, "Bob likes tea", "2024-06-01T00:00:00Z", "food");

    let (st, body) = s.call("GET", "/v1/scopes", None);
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["truncated"], false);
    let scopes = body["scopes"].as_array().unwrap();
    let counted: Vec<(Value, Value, u64)> = scopes
        .iter()
        .map(|s| {
            (
                s["user_id"].clone(),
                s["session_id"].clone(),
                s["memories"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        counted,
        vec![
            (json!("bob"), Value::Null, 1),
            (json!("ana"), json!("s2"), 1),
            (json!("ana"), json!("s1"), 2),
        ],
        "{body}"
    );
    let (_, body) = s.call("GET", "/v1/scopes?user_id=ana&limit=1", None);
    assert_eq!(body["scopes"].as_array().unwrap().len(), 1);
    assert_eq!(body["truncated"], true);
    for bad in [
        "/v1/scopes?limit=0",
        "/v1/scopes?status=gone",
        "/v1/scopes?colour=red",
    ] {
        let (st, body) = s.call("GET", bad, None);
        assert_eq!(st, 400, "{bad}: {body}");
    }

    // Listing by event time range and by metadata.
    let ids = |path: &str| -> Vec<String> {
        let (st, body) = s.call("GET", path, None);
        assert_eq!(st, 200, "{path}: {body}");
        body["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["memory"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        ids("/v1/memories?user_id=ana&event_time_from=2024-03-15T00:00:00Z&event_time_to=2024-05-01T00:00:00Z"),
        vec!["Ana bought a kite"]
    );
    assert_eq!(
        ids("/v1/memories?user_id=ana&metadata=%7B%22topic%22%3A%22travel%22%7D"),
        vec!["Ana flew to Lisbon", "Ana flew to Oslo"]
    );
    let (st, body) = s.call("GET", "/v1/memories?user_id=ana&metadata=travel", None);
    assert_eq!(st, 400, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("JSON object"));

    // A key bound to a user counts only that user's scopes.
    let ana_key = super::common::run(&db, &["key", "create", "--access", "read", "--user", "ana"]);
    let (st, body) = s.call_as(Some(&ana_key), "GET", "/v1/scopes", None);
    assert_eq!(st, 200, "{body}");
    let scopes = body["scopes"].as_array().unwrap();
    assert_eq!(scopes.len(), 2);
    assert!(scopes.iter().all(|s| s["user_id"] == "ana"), "{body}");
    let (st, _) = s.call_as(Some(&ana_key), "GET", "/v1/scopes?user_id=bob", None);
    assert_eq!(st, 403);
}

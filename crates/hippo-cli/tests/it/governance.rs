//! Governance over HTTP against `hippo serve`: a tenant's admin reads its
//! audit log (and whether the chain holds) and manages its own keys — and
//! nothing of another tenant's; lesser or user-bound keys are refused.

use serde_json::{json, Value};

use super::common::{key, key_id, run, Server};

#[test]
fn an_admin_manages_the_tenants_keys_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("g.db");
    let admin = key(&db, "default", "admin");
    let writer = key(&db, "default", "write");
    run(&db, &["tenant", "create", "acme"]);
    let acme_admin = key(&db, "acme", "admin");
    let bound_admin = run(
        &db,
        &["key", "create", "--access", "admin", "--user", "ana"],
    );
    let s = Server::start(&db, &[]);

    // Listed: this tenant's keys, no secret, not acme's.
    let (st, body) = s.call_as(Some(&admin), "GET", "/v1/keys", None);
    assert_eq!(st, 200, "{body}");
    let ids: Vec<&str> = body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [key_id(&admin), key_id(&writer), key_id(&bound_admin)]);
    assert!(!body.to_string().contains(admin.rsplit('_').next().unwrap()));

    // Created over HTTP: usable at once by the running server, shown once.
    let (st, created) = s.call_as(
        Some(&admin),
        "POST",
        "/v1/keys",
        Some(
            json!({"access": "read", "name": "dashboard", "user_id": "ana", "expires_in_days": 30}),
        ),
    );
    assert_eq!(st, 200, "{created}");
    let secret = created["secret"].as_str().unwrap().to_owned();
    let (st, me) = s.call_as(Some(&secret), "GET", "/v1/whoami", None);
    assert_eq!(st, 200, "{me}");
    assert_eq!(
        (me["access"].as_str(), me["user_id"].as_str()),
        (Some("read"), Some("ana"))
    );
    let new_id = created["key"]["id"].as_str().unwrap().to_owned();
    let (_, listed) = s.call_as(Some(&admin), "GET", "/v1/keys", None);
    let row = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == new_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(row["name"], "dashboard");
    assert!(row["expires_at"].is_string());
    assert!(!listed.to_string().contains(&secret[secret.len() - 20..]));
    // The CLI sees it too: one control database.
    assert!(run(&db, &["key", "list"]).contains(&new_id));

    // Revoked over HTTP: refused from the next request.
    let (st, revoked) = s.call_as(Some(&admin), "DELETE", &format!("/v1/keys/{new_id}"), None);
    assert_eq!(st, 200, "{revoked}");
    assert!(revoked["revoked_at"].is_string());
    assert_eq!(s.call_as(Some(&secret), "GET", "/v1/whoami", None).0, 401);

    // Another tenant's admin cannot see or revoke these keys.
    let (_, theirs) = s.call_as(Some(&acme_admin), "GET", "/v1/keys", None);
    let theirs: Vec<&str> = theirs["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(theirs, [key_id(&acme_admin)]);
    let (st, _) = s.call_as(
        Some(&acme_admin),
        "DELETE",
        &format!("/v1/keys/{}", key_id(&writer)),
        None,
    );
    assert_eq!(st, 404);
    assert_eq!(s.call_as(Some(&writer), "GET", "/v1/whoami", None).0, 200);

    // Too little access, or a key bound to a user: refused, nothing made.
    for (k, path) in [
        (&writer, "/v1/keys"),
        (&writer, "/v1/audit"),
        (&bound_admin, "/v1/keys"),
        (&bound_admin, "/v1/audit"),
        (&bound_admin, "/v1/audit/verify"),
    ] {
        let (st, body) = s.call_as(Some(k), "GET", path, None);
        assert_eq!(st, 403, "{path}: {body}");
    }
    let (st, _) = s.call_as(
        Some(&bound_admin),
        "POST",
        "/v1/keys",
        Some(json!({"access": "admin"})),
    );
    assert_eq!(st, 403, "a bound key makes no wider key");
    for bad in [
        json!({"access": "root"}),
        json!({"access": "read", "expires_in_days": 0}),
        json!({"access": "read", "colour": "red"}),
        json!({"access": "read", "user_id": ""}),
    ] {
        let (st, body) = s.call_as(Some(&admin), "POST", "/v1/keys", Some(bad.clone()));
        assert_eq!(st, 400, "{bad}: {body}");
        assert!(body["error"]["message"].is_string());
    }
    let (_, after) = s.call_as(Some(&admin), "GET", "/v1/keys", None);
    assert_eq!(
        after["keys"].as_array().unwrap().len(),
        4,
        "refusals made no key"
    );
}

#[test]
fn an_admin_reads_the_audit_log_and_sees_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    let admin = key(&db, "default", "admin");
    let s = Server::start(&db, &[]);
    for text in [
        "The boiler is serviced every October.",
        "The gate code is 1234.",
    ] {
        let (st, _) = s.call_as(
            Some(&admin),
            "POST",
            "/v1/memories",
            Some(json!({"user_id": "ana", "text": text})),
        );
        assert_eq!(st, 200);
    }
    let (st, page) = s.call_as(Some(&admin), "GET", "/v1/audit?limit=1", None);
    assert_eq!(st, 200, "{page}");
    let first: &Value = &page["entries"][0];
    assert_eq!(first["seq"], 1);
    assert_eq!(first["action"], "add");
    assert_eq!(first["actor"], format!("key:{}", key_id(&admin)));
    let next = page["next_after"].as_i64().unwrap();
    let (_, rest) = s.call_as(
        Some(&admin),
        "GET",
        &format!("/v1/audit?after={next}"),
        None,
    );
    assert_eq!(rest["entries"][0]["seq"], 2);
    assert_eq!(rest["entries"][0]["prev_hash"], first["hash"]);
    assert!(rest["next_after"].is_null());
    assert!(
        !rest.to_string().contains("gate code"),
        "the log holds no content"
    );
    let (st, check) = s.call_as(Some(&admin), "GET", "/v1/audit/verify", None);
    assert_eq!(st, 200);
    assert_eq!(
        (check["ok"].as_bool(), check["entries"].as_u64()),
        (Some(true), Some(2))
    );
    assert_eq!(
        s.call_as(Some(&admin), "GET", "/v1/audit?limit=0", None).0,
        400
    );

    // Changed underneath the running server: the answer says where.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("UPDATE audit_log SET actor = 'someone-else' WHERE seq = 2")
        .unwrap();
    drop(conn);
    let (_, check) = s.call_as(Some(&admin), "GET", "/v1/audit/verify", None);
    assert_eq!(check["ok"], false, "{check}");
    assert_eq!(check["first_bad"], 2, "{check}");
    assert!(check["problem"].is_string());
}

/// Jobs hold memory text in their plans: a key bound to a user lists and
/// reads its own scope's jobs only. The store's numbers are for admins.
#[test]
fn a_user_bound_key_sees_its_own_jobs_only_and_admins_see_the_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("j.db");
    let admin = key(&db, "default", "admin");
    let ana = run(&db, &["key", "create", "--access", "read", "--user", "ana"]);
    let s = Server::start(&db, &[]);
    for user in ["ana", "bob"] {
        let (st, _) = s.call_as(
            Some(&admin),
            "POST",
            "/v1/memories",
            Some(json!({"user_id": user, "session_id": "s", "messages": [{"role": "user", "content": format!("{user} notes")}]})),
        );
        assert_eq!(st, 200);
    }
    let (_, all) = s.call_as(Some(&admin), "GET", "/v1/jobs", None);
    let jobs = all["jobs"].as_array().unwrap();
    let bobs: Vec<i64> = jobs
        .iter()
        .filter(|j| j["user_id"] == "bob")
        .map(|j| j["id"].as_i64().unwrap())
        .collect();
    assert!(!bobs.is_empty(), "a write queues consolidation: {all}");
    let (st, own) = s.call_as(Some(&ana), "GET", "/v1/jobs", None);
    assert_eq!(st, 200, "{own}");
    let own = own["jobs"].as_array().unwrap();
    assert!(!own.is_empty());
    assert!(own.iter().all(|j| j["user_id"] == "ana"), "{own:?}");
    let (st, _) = s.call_as(Some(&ana), "GET", &format!("/v1/jobs/{}", bobs[0]), None);
    assert_eq!(st, 404, "another user's job is as absent as none");
    let (st, _) = s.call_as(Some(&ana), "GET", "/v1/jobs?user_id=bob", None);
    assert_eq!(st, 403);
    let (st, _) = s.call_as(Some(&admin), "GET", &format!("/v1/jobs/{}", bobs[0]), None);
    assert_eq!(st, 200);

    // The store in numbers, for tenant-wide admins.
    let (st, stats) = s.call_as(Some(&admin), "GET", "/v1/stats", None);
    assert_eq!(st, 200, "{stats}");
    assert_eq!(stats["memories"], 2);
    assert_eq!(stats["users"], 2);
    assert_eq!(stats["by_kind"]["message"], 2);
    assert!(stats["disk_bytes"].as_u64().unwrap() > 0);
    let queued: u64 = ["pending", "running", "done", "failed"]
        .iter()
        .map(|k| stats["jobs"][k].as_u64().unwrap())
        .sum();
    assert_eq!(queued as usize, jobs.len());
    assert_eq!(s.call_as(Some(&ana), "GET", "/v1/stats", None).0, 403);
}

/// The operator (a tenant-wide admin key of the default tenant) creates a
/// tenant and its first key over HTTP; that key works at once and sees
/// only its tenant. Other tenants' admins cannot do either.
#[test]
fn the_operator_creates_a_tenant_and_its_first_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("o.db");
    let operator = key(&db, "default", "admin");
    run(&db, &["tenant", "create", "acme"]);
    let acme_admin = key(&db, "acme", "admin");
    let s = Server::start(&db, &[]);

    let (st, made) = s.call_as(
        Some(&operator),
        "POST",
        "/v1/tenants",
        Some(json!({"id": "beta"})),
    );
    assert_eq!(st, 200, "{made}");
    let (st, _) = s.call_as(
        Some(&operator),
        "POST",
        "/v1/tenants",
        Some(json!({"id": "beta"})),
    );
    assert_eq!(st, 409);
    let (st, _) = s.call_as(
        Some(&operator),
        "POST",
        "/v1/tenants",
        Some(json!({"id": "../etc"})),
    );
    assert_eq!(st, 400);
    assert!(run(&db, &["tenant", "list"]).lines().any(|t| t == "beta"));

    let (st, created) = s.call_as(
        Some(&operator),
        "POST",
        "/v1/keys",
        Some(json!({"access": "admin", "tenant": "beta", "name": "beta's first"})),
    );
    assert_eq!(st, 200, "{created}");
    let beta = created["secret"].as_str().unwrap().to_owned();
    let (st, _) = s.call_as(
        Some(&beta),
        "POST",
        "/v1/memories",
        Some(json!({"user_id": "u", "text": "Beta's own note."})),
    );
    assert_eq!(st, 200);
    let (_, theirs) = s.call_as(Some(&operator), "GET", "/v1/memories?user_id=u", None);
    assert!(
        theirs["results"].as_array().unwrap().is_empty(),
        "tenants stay apart"
    );
    let (_, listed) = s.call_as(Some(&operator), "GET", "/v1/tenants", None);
    let beta_row = listed["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "beta")
        .unwrap()
        .clone();
    assert_eq!(beta_row["active_keys"], 1);
    assert_eq!(listed["tenants"][0]["id"], "default");
    let (_, keys) = s.call_as(Some(&operator), "GET", "/v1/keys?tenant=beta", None);
    assert_eq!(keys["keys"][0]["name"], "beta's first");
    let (st, _) = s.call_as(
        Some(&operator),
        "POST",
        "/v1/keys",
        Some(json!({"access": "read", "tenant": "nope"})),
    );
    assert_eq!(st, 404);

    // Another tenant's admin is no operator.
    assert_eq!(
        s.call_as(Some(&acme_admin), "GET", "/v1/tenants", None).0,
        403
    );
    let (st, _) = s.call_as(
        Some(&acme_admin),
        "POST",
        "/v1/tenants",
        Some(json!({"id": "gamma"})),
    );
    assert_eq!(st, 403);
    let (st, _) = s.call_as(
        Some(&acme_admin),
        "POST",
        "/v1/keys",
        Some(json!({"access": "admin", "tenant": "default"})),
    );
    assert_eq!(st, 403);
    assert_eq!(
        s.call_as(Some(&acme_admin), "GET", "/v1/keys?tenant=beta", None)
            .0,
        403
    );
    let beta_id = created["key"]["id"].as_str().unwrap();
    assert_eq!(
        s.call_as(
            Some(&acme_admin),
            "DELETE",
            &format!("/v1/keys/{beta_id}"),
            None
        )
        .0,
        404
    );

    // The operator revokes beta's key: refused from the next request.
    let (st, _) = s.call_as(
        Some(&operator),
        "DELETE",
        &format!("/v1/keys/{beta_id}"),
        None,
    );
    assert_eq!(st, 200);
    assert_eq!(s.call_as(Some(&beta), "GET", "/v1/whoami", None).0, 401);
}

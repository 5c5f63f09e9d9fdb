//! I/O faults on the write path. The server runs with a limit on how large
//! any of its files may grow (RLIMIT_FSIZE, SIGXFSZ ignored), a little above
//! their size now, so the kernel refuses its writes with EFBIG part-way
//! through — in the write-ahead log, at a checkpoint, wherever the limit
//! bites — as a full disk would. Invariants:
//!
//! - a write the disk refuses is answered 503 `unavailable` with a message
//!   that names no internals, never a hang or a crash;
//! - reads keep working while writes fail;
//! - after `kill -9` and a restart without the limit, every acknowledged
//!   memory is there with its text, the store checks sound (`hippo check`:
//!   database and keyword-index integrity, every row with its keyword entry
//!   and vector, the audit chain), and writes work again.
//!
//! Cycles: `HIPPO_FAULT_CYCLES` (default 3), each with a different headroom.

use serde_json::json;

use super::common::{hippo, Server};

fn largest_file_kib(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len().div_ceil(1024))
        .max()
        .unwrap_or(0)
}

#[test]
fn a_refusing_disk_fails_writes_cleanly_and_loses_nothing_acknowledged() {
    let cycles: usize = std::env::var("HIPPO_FAULT_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("faults.db");
    // A store with some data first, written without a limit.
    let server = Server::start(&db, &[]);
    let mut acked: Vec<(String, String)> = Vec::new();
    for i in 0..20 {
        let text = format!("baseline note {i} about the garden");
        let (st, body) = server.call(
            "POST",
            "/v1/memories",
            Some(json!({"user_id": "f", "messages": [{"role": "user", "content": text}]})),
        );
        assert_eq!(st, 200, "{body}");
        acked.push((body["results"][0]["id"].as_str().unwrap().into(), text));
    }
    server.kill9();
    let (mut refused, mut reads_while_refused) = (0usize, 0usize);
    for cycle in 0..cycles {
        let headroom = [64, 256, 1024][cycle % 3];
        let limit = largest_file_kib(dir.path()) + headroom;
        let server = Server::start_with_file_limit(&db, limit);
        let mut failures_in_a_row = 0;
        for n in 0..1500 {
            let text = format!("cycle {cycle} write {n}: the heron came back to the pond");
            let (path, body) = if n % 4 == 3 {
                let items: Vec<_> = (0..8)
                    .map(|j| json!({"user_id": "f", "text": format!("{text} (batch item {j})")}))
                    .collect();
                ("/v1/memories/batch", json!({ "items": items }))
            } else {
                (
                    "/v1/memories",
                    json!({"user_id": "f", "messages": [{"role": "user", "content": text}]}),
                )
            };
            let (st, resp) = server.call("POST", path, Some(body));
            match st {
                200 => {
                    failures_in_a_row = 0;
                    for r in resp["results"].as_array().unwrap() {
                        acked.push((
                            r["id"].as_str().unwrap().into(),
                            r["memory"].as_str().unwrap().into(),
                        ));
                    }
                }
                503 => {
                    refused += 1;
                    failures_in_a_row += 1;
                    assert_eq!(resp["error"]["code"], "unavailable", "{resp}");
                    let message = resp["error"]["message"].as_str().unwrap().to_lowercase();
                    for internal in ["sqlite", "errno", "efbig", ".db", "/tmp", "panick"] {
                        assert!(!message.contains(internal), "internals in {message:?}");
                    }
                    // Reads go on while the disk refuses writes.
                    let (st, hits) = server.call(
                        "POST",
                        "/v1/search",
                        Some(json!({"user_id": "f", "query": "heron pond garden"})),
                    );
                    assert_eq!(st, 200, "{hits}");
                    let (id, text) = &acked[n % acked.len()];
                    let (st, got) = server.call("GET", &format!("/v1/memories/{id}"), None);
                    assert_eq!((st, got["memory"].as_str()), (200, Some(text.as_str())));
                    reads_while_refused += 1;
                    if failures_in_a_row >= 5 {
                        break;
                    }
                }
                other => panic!("a refused write must be 503, got {other}: {resp}"),
            }
        }
        server.kill9();
    }
    assert!(refused > 0, "the file limit never bit");
    // Restart without the limit: everything acknowledged is there, whole.
    let check = hippo(&db).arg("check").output().unwrap();
    assert!(
        check.status.success(),
        "hippo check: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let server = Server::start(&db, &[]);
    for (id, text) in &acked {
        let (st, got) = server.call("GET", &format!("/v1/memories/{id}"), None);
        assert_eq!(st, 200, "acknowledged memory {id} lost");
        assert_eq!(got["memory"].as_str(), Some(text.as_str()));
    }
    let (st, _) = server.call(
        "POST",
        "/v1/memories",
        Some(json!({"user_id": "f", "text": "writes work again"})),
    );
    assert_eq!(st, 200);
    eprintln!(
        "faults: {cycles} cycles, {} acknowledged, {refused} writes refused cleanly (503), \
         {reads_while_refused} reads served while refusing, 0 lost, store checks sound",
        acked.len()
    );
}

//! Durability: concurrent writers, updaters and erasers, `kill -9` at random
//! moments, restart, verify. Every acknowledged write must survive (an
//! acknowledged update shows its new text, an acknowledged erase stays
//! erased), and every memory must be whole (row, keyword entry and vector
//! together). Cycles: `HIPPO_CRASH_CYCLES` (default 100).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use super::common::{hippo, Server};

#[test]
fn acknowledged_writes_survive_kill_9() {
    let cycles: usize = std::env::var("HIPPO_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    // The last acknowledged state of each memory (`None`: erased), and the
    // memories whose last change was cut off (either state may hold).
    let expect: Arc<Mutex<HashMap<String, Option<String>>>> = Arc::default();
    let unsure: Arc<Mutex<HashSet<String>>> = Arc::default();
    let (mut edits, mut erases) = (0usize, 0usize);
    let mut seed = 0x9e3779b97f4a7c15u64;
    for cycle in 0..cycles {
        let server = Server::start(&db, &[]);
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let (base, stop, acked) = (server.base.clone(), stop.clone(), acked.clone());
                let expect = expect.clone();
                std::thread::spawn(move || {
                    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build();
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let token = format!("tok{cycle}x{w}x{n}");
                        n += 1;
                        let batch = n % 3 == 0;
                        let body = if batch {
                            json!({"items": [{"user_id": format!("w{w}"), "text": format!("{token} first")},
                                             {"user_id": format!("w{w}"), "text": format!("{token} second")}]})
                        } else {
                            json!({"user_id": format!("w{w}"), "messages": [{"role": "user", "content": format!("{token} note")}]})
                        };
                        let path = if batch { "/v1/memories/batch" } else { "/v1/memories" };
                        let Ok(resp) = agent.post(&format!("{base}{path}")).send_json(body) else { break };
                        let Ok(v) = resp.into_json::<serde_json::Value>() else { break };
                        let mut acked = acked.lock().unwrap();
                        let mut expect = expect.lock().unwrap();
                        for r in v["results"].as_array().into_iter().flatten() {
                            let id = r["id"].as_str().unwrap().to_owned();
                            expect.insert(id.clone(), Some(r["memory"].as_str().unwrap().to_owned()));
                            acked.push((id, format!("w{w}")));
                        }
                    }
                })
            })
            .collect();
        // One thread revises and erases acknowledged memories meanwhile.
        let mutator = {
            let (base, stop, acked) = (server.base.clone(), stop.clone(), acked.clone());
            let (expect, unsure) = (expect.clone(), unsure.clone());
            let mut pick = seed | 1;
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(10))
                    .build();
                let (mut edits, mut erases) = (0usize, 0usize);
                for n in 0usize.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    pick ^= pick << 13;
                    pick ^= pick >> 7;
                    pick ^= pick << 17;
                    let target = {
                        let acked = acked.lock().unwrap();
                        let expect = expect.lock().unwrap();
                        let live: Vec<&(String, String)> = acked
                            .iter()
                            .filter(|(id, _)| expect.get(id).is_some_and(Option::is_some))
                            .collect();
                        if live.is_empty() {
                            None
                        } else {
                            Some(live[(pick as usize) % live.len()].clone())
                        }
                    };
                    let Some((id, user)) = target else {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    let erase = n % 3 == 2;
                    let text = format!("edited {n} of {id}");
                    unsure.lock().unwrap().insert(id.clone());
                    let result = if erase {
                        agent
                            .delete(&format!("{base}/v1/memories/{id}?user_id={user}&hard=true"))
                            .call()
                    } else {
                        agent
                            .request("PATCH", &format!("{base}/v1/memories/{id}?user_id={user}"))
                            .send_json(json!({"content": text}))
                    };
                    match result {
                        Ok(_) => {
                            expect
                                .lock()
                                .unwrap()
                                .insert(id.clone(), (!erase).then_some(text));
                            unsure.lock().unwrap().remove(&id);
                            if erase {
                                erases += 1;
                            } else {
                                edits += 1;
                            }
                        }
                        // Killed mid-request: left unsure.
                        Err(_) => break,
                    }
                }
                (edits, erases)
            })
        };
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(50 + seed % 400));
        server.kill9();
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
        let (e, x) = mutator.join().unwrap();
        edits += e;
        erases += x;
    }
    // Restart and verify everything acknowledged is there, whole and searchable.
    let stats = hippo(&db).arg("stats").output().unwrap();
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    let memories = stats["memories"].as_u64().unwrap();
    assert_eq!(
        stats["keyword_entries"].as_u64().unwrap(),
        memories,
        "every row has its keyword entry"
    );
    assert_eq!(
        stats["vectors_by_model"]["sentence-transformers/all-MiniLM-L6-v2"]
            .as_u64()
            .unwrap(),
        memories,
        "every row has its vector"
    );
    let acked = acked.lock().unwrap();
    assert!(
        acked.len() >= cycles,
        "writers made progress: {} acks",
        acked.len()
    );
    assert!(memories >= acked.len() as u64);
    let server = Server::start(&db, &[]);
    let expect = expect.lock().unwrap();
    let unsure = unsure.lock().unwrap();
    for (id, user) in acked.iter() {
        let (st, body) = server.call("GET", &format!("/v1/memories/{id}?user_id={user}"), None);
        if unsure.contains(id) {
            assert!(st == 200 || st == 404, "{id}: {st} {body}");
            continue;
        }
        match &expect[id] {
            Some(text) => {
                assert_eq!(st, 200, "acknowledged memory {id} lost: {body}");
                assert_eq!(
                    body["memory"].as_str(),
                    Some(text.as_str()),
                    "acknowledged update of {id} lost"
                );
            }
            None => assert_eq!(st, 404, "acknowledged erase of {id} undone: {body}"),
        }
    }
    assert!(
        edits > 0 && erases > 0,
        "the mutator made progress: {edits} edits, {erases} erases"
    );
    eprintln!(
        "crash test: {cycles} kill -9 cycles, {} acknowledged writes, {edits} updates, {erases} erases, \
         {memories} rows stored, 0 lost, 0 partial",
        acked.len()
    );
}

/// LLM jobs under `kill -9`: writes that ask for extraction are
/// acknowledged at once; the server is killed repeatedly while its workers
/// call a slow model; after restarts every job finishes exactly once: one
/// fact per message, none lost, none duplicated.
#[test]
fn llm_jobs_survive_kill_9_exactly_once() {
    let (fake, script) = super::fakes::openai_chat(super::fakes::ChatScript {
        echo: true,
        delay_ms: 40,
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jobs.db");
    let llm_url = format!("{}/v1", fake.base);
    let args = [
        "--llm-url",
        llm_url.as_str(),
        "--llm-model",
        "scripted",
        "--job-lease-secs",
        "1",
    ];
    let n = 24;
    let server = Server::start(&db, &args);
    for i in 0..n {
        let (st, body) = server.call(
            "POST",
            "/v1/memories",
            Some(json!({"user_id": "ana", "infer": true, "event_time": "2023-05-08T10:00:00Z",
                "messages": [{"role": "user", "name": "Ana", "content": format!("Ana collects stamp number {i}.")}]})),
        );
        assert_eq!(st, 200, "{body}");
    }
    let mut seed = 0x2545f4914f6cdd1du64;
    let mut server = Some(server);
    for _ in 0..6 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(100 + seed % 300));
        server.take().unwrap().kill9();
        server = Some(Server::start(&db, &args));
    }
    let server = server.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (_, c) = server.call("GET", "/v1/jobs", None);
        assert_eq!(c["failed"], 0, "{c}");
        // Extraction jobs and the consolidation jobs writes queue.
        if c["pending"] == 0 && c["running"] == 0 && c["done"].as_u64() >= Some(n) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "jobs did not finish: {c}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, facts) = server.call("GET", "/v1/memories?user_id=ana&kind=fact&limit=1000", None);
    let mut texts: Vec<String> = facts["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["memory"].as_str().unwrap().to_owned())
        .collect();
    texts.sort();
    let mut want: Vec<String> = (0..n)
        .map(|i| format!("Ana collects stamp number {i}."))
        .collect();
    want.sort();
    assert_eq!(
        texts, want,
        "one fact per message: none lost, none duplicated"
    );
    let (_, job) = server.call("GET", "/v1/jobs/1", None);
    assert_eq!(job["state"], "done");
    assert!(job["cost"]["llm_calls"].as_u64().unwrap() >= 1);
    assert!(!script.lock().unwrap().requests.is_empty());
}

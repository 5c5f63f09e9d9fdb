//! The CLI commands against a real database file.

use std::process::Output;

use super::common::{hippo, Server};

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn add_search_export_import_stats() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cli.db");
    ok(hippo(&db)
        .args([
            "add",
            "--user",
            "ana",
            "--role",
            "user",
            "--name",
            "Ana",
            "I keep bees on my roof",
        ])
        .output()
        .unwrap());
    ok(hippo(&db)
        .args(["add", "--user", "ana", "The meeting moved to Thursday"])
        .output()
        .unwrap());
    // A long document is chunked; its whole text must survive export/import.
    let long: Vec<String> = (0..500).map(|i| format!("word{i}")).collect();
    ok(hippo(&db)
        .args(["add", "--user", "ana"])
        .arg(long.join(" "))
        .output()
        .unwrap());
    let found = ok(hippo(&db)
        .args(["search", "--user", "ana", "-k", "1", "honey insects"])
        .output()
        .unwrap());
    assert!(found.contains("bees"), "{found}");
    let json_line = ok(hippo(&db)
        .args(["search", "--user", "ana", "--json", "Thursday"])
        .output()
        .unwrap());
    let first: serde_json::Value = serde_json::from_str(json_line.lines().next().unwrap()).unwrap();
    assert_eq!(first["memory"], "The meeting moved to Thursday");

    // Export, import into a fresh store: identical memories.
    let export = dir.path().join("out.jsonl");
    ok(hippo(&db)
        .args(["export", "--out"])
        .arg(&export)
        .output()
        .unwrap());
    let db2 = dir.path().join("copy.db");
    ok(hippo(&db2).arg("import").arg(&export).output().unwrap());
    let again = dir.path().join("again.jsonl");
    ok(hippo(&db2)
        .args(["export", "--out"])
        .arg(&again)
        .output()
        .unwrap());
    let exported = std::fs::read_to_string(&export).unwrap();
    assert_eq!(exported, std::fs::read_to_string(&again).unwrap());
    let source_lines: Vec<&str> = exported
        .lines()
        .filter(|l| l.starts_with("{\"source\""))
        .collect();
    assert_eq!(source_lines.len(), 1, "{exported}");
    assert!(source_lines[0].contains("word499"));
    let chunks = exported.lines().count() - 3;
    assert!(chunks >= 2, "the long text is chunked: {exported}");
    // Importing the same export again adds nothing.
    ok(hippo(&db2).arg("import").arg(&export).output().unwrap());
    let stats: serde_json::Value =
        serde_json::from_str(&ok(hippo(&db2).arg("stats").output().unwrap())).unwrap();
    assert_eq!(stats["memories"], 2 + chunks);
    assert_eq!(stats["keyword_entries"], 2 + chunks);
}

#[test]
fn import_locomo_format_and_bench() {
    let dir = tempfile::tempdir().unwrap();
    let data = serde_json::json!([{
        "sample_id": "c1",
        "conversation": {
            "speaker_a": "Ida", "speaker_b": "Max",
            "session_1_date_time": "1:56 pm on 8 May, 2023",
            "session_1": [
                {"speaker": "Ida", "dia_id": "D1:1", "text": "I just got back from climbing in Yosemite!"},
                {"speaker": "Max", "dia_id": "D1:2", "text": "Amazing. I spent the weekend baking sourdough."},
                {"speaker": "Ida", "dia_id": "D1:3", "text": "Save me a slice.", "blip_caption": "a loaf of bread"}
            ]
        },
        "qa": [
            {"question": "Where did Ida go climbing?", "answer": "Yosemite", "category": 4, "evidence": ["D1:1"]},
            {"question": "What did Max bake?", "answer": "sourdough", "category": 4, "evidence": ["D1:2"]}
        ]
    }]);
    let file = dir.path().join("conv.json");
    std::fs::write(&file, data.to_string()).unwrap();
    let db = dir.path().join("l.db");
    ok(hippo(&db).arg("import").arg(&file).output().unwrap());
    let listed = ok(hippo(&db)
        .args(["search", "--user", "c1", "--json", "-k", "1", "bread photo"])
        .output()
        .unwrap());
    let hit: serde_json::Value = serde_json::from_str(listed.lines().next().unwrap()).unwrap();
    assert_eq!(hit["metadata"]["dia_id"], "D1:3");
    assert_eq!(hit["event_time"], "2023-05-08T13:56:00Z");
    let bench = |args: &[&str]| -> serde_json::Value {
        let out = ok(hippo(&db)
            .args(["bench", "--json", "--data"])
            .arg(&file)
            .args(args)
            .output()
            .unwrap());
        let all: serde_json::Value = serde_json::from_str(&out).unwrap();
        all["conv"].clone()
    };
    let report = bench(&["--k", "1", "3"]);
    assert_eq!(report["questions"], 2);
    assert_eq!(report["overall"]["frac@3"], 1.0);
    // With one excerpt of the whole conversation, every evidence turn is in
    // the first result: NDCG 1. Tokens are counted as the budget counts them.
    assert_eq!(report["overall"]["ndcg@3"], 1.0, "{report}");
    let with_context = report["overall"]["tokens@3"].as_f64().unwrap();
    assert_eq!(report["by_category"]["single-hop"]["all@3"], 1.0);
    // Without context the results are bare turns: fewer tokens.
    let report = bench(&["--k", "3", "--context-before", "0", "--context-after", "0"]);
    assert_eq!(report["context_after"], 0);
    assert!(report["overall"]["tokens@3"].as_f64().unwrap() < with_context);
    // Long-history variant: generated distractors share the scope.
    let report = bench(&["--k", "3", "--distractors", "60", "--convs", "0"]);
    assert_eq!(report["distractors_per_conversation"], 60);
    assert_eq!(report["questions"], 2);
    assert_eq!(report["overall"]["frac@3"], 1.0, "{report}");

    // A folder: every *.json under it is a data set, in one table; the
    // file's own category labels; kept stores are asked again unchanged.
    let sets = dir.path().join("sets");
    std::fs::create_dir_all(sets.join("zh")).unwrap();
    std::fs::copy(&file, sets.join("one.json")).unwrap();
    let mut other = data.clone();
    other[0]["sample_id"] = "c2".into();
    other[0]["qa"] = serde_json::json!([
        {"question": "我去了哪里攀岩？", "category": "simple", "evidence": ["D1:1"]},
        {"question": "Who climbed and who baked?", "category": "aggregative", "evidence": ["D1:1", "D1:2"]},
        {"question": "No evidence here", "category": "abstention", "evidence": []}
    ]);
    std::fs::write(sets.join("zh/two.json"), other.to_string()).unwrap();
    let keep = dir.path().join("kept");
    let misses = dir.path().join("misses.jsonl");
    // One turn per result, no context, on every file under `sets`.
    let bench_sets = |extra: &[&str]| {
        ok(hippo(&db)
            .args([
                "bench",
                "--k",
                "1",
                "--context-before",
                "0",
                "--context-after",
                "0",
            ])
            .args(extra)
            .arg("--data")
            .arg(&sets)
            .arg("--keep")
            .arg(&keep)
            .output()
            .unwrap())
    };
    let table = bench_sets(&["--misses", misses.to_str().unwrap()]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("data set") && lines[0].contains("frac@1"),
        "{table}"
    );
    let row = |name: &str| {
        lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row {name}: {table}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(row("one")[1], "2", "{table}");
    assert_eq!(row("two")[1], "2", "abstention has no evidence: {table}");
    assert_eq!(row("aggregative")[1], "1", "{table}");
    assert_eq!(row("single-hop")[1], "2", "{table}");
    // One turn per result cannot show both turns of the aggregative question.
    let missed: Vec<serde_json::Value> = std::fs::read_to_string(&misses)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        missed.iter().any(|m| m["data"] == "two"
            && m["category"] == "aggregative"
            && m["evidence"].as_array().unwrap().len() == 2
            && m["shown"].as_array().unwrap().len() == 1),
        "{missed:?}"
    );
    assert!(keep.join("two.db").exists());
    let again = bench_sets(&["--reuse"]);
    let recall = |t: &str| -> Vec<String> {
        t.lines()
            .map(|l| l.split_whitespace().take(6).collect::<Vec<_>>().join(" "))
            .collect()
    };
    assert_eq!(recall(&again), recall(&table));
    let out = hippo(&db)
        .args(["bench", "--reuse", "--data"])
        .arg(&sets)
        .arg("--keep")
        .arg(dir.path().join("nothing-kept"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "reusing what was not kept is bad input"
    );
}

#[test]
fn bad_input_exits_2_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bad.db");
    let out = hippo(&db).args(["add", "   "]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least one of user_id"));
    let file = dir.path().join("bad.jsonl");
    std::fs::write(
        &file,
        "{\"user_id\": \"u\", \"text\": \"fine\"}\nnot json\n",
    )
    .unwrap();
    let out = hippo(&db).arg("import").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2"));
    let stats: serde_json::Value =
        serde_json::from_str(&ok(hippo(&db).arg("stats").output().unwrap())).unwrap();
    assert_eq!(stats["memories"], 0, "a bad file imports nothing");
    let out = hippo(&db)
        .args(["serve", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "no auth yet: refuses non-loopback");
}

#[test]
fn loadtest_measures_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("load.db");
    let server = Server::start(&db, &[]);
    let out = ok(hippo(&dir.path().join("client.db"))
        .args(["loadtest", "--base", &server.base])
        .args(["--memories", "300", "--queries", "20", "--batch", "64"])
        .args(["--embed-sample", "64", "--search-clients", "2"])
        .output()
        .unwrap());
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["memories"], 300);
    assert!(report["ingest"]["embedder_texts_per_s"].as_f64().unwrap() > 0.0);
    assert!(report["ingest"]["ratio"].as_f64().unwrap() > 0.0);
    for phase in [
        "search_cold_1_client",
        "search_cached_vector_1_client",
        "search_cold_2_clients",
    ] {
        assert!(report[phase]["queries"].as_u64().unwrap() >= 20, "{report}");
        // The queried turn is found: fast answers are also right answers.
        assert!(
            report[phase]["needle_rate"].as_f64().unwrap() >= 0.5,
            "{report}"
        );
    }
    assert!(report["server_rss_mb"].as_f64().unwrap() > 10.0);
    let (_, stats) = server.call(
        "GET",
        "/v1/memories?user_id=loadtest&kind=message&limit=1000",
        None,
    );
    assert_eq!(stats["results"].as_array().unwrap().len(), 300);

    // No server: a clear error, non-zero exit.
    let out = hippo(&db)
        .args([
            "loadtest",
            "--base",
            "http://127.0.0.1:9",
            "--memories",
            "10",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no hippo server"));
}

/// `--texts`: the corpus is recombined from a file's sentences (Chinese
/// here) to the size asked, and its questions are the queries, each asked
/// once per phase (no needle: they are not about the recombined corpus).
#[test]
fn loadtest_loads_a_files_sentences_to_any_size() {
    let dir = tempfile::tempdir().unwrap();
    let data = serde_json::json!([{
        "sample_id": "z1",
        "conversation": {
            "speaker_a": "user", "speaker_b": "assistant",
            "session_1_date_time": "1:56 pm on 8 May, 2023",
            "session_1": [
                {"speaker": "user", "dia_id": "D1:1", "text": "我用的手机是小米12。拍照也厉害！"},
                {"speaker": "user", "dia_id": "D1:2", "text": "我住的小区叫金色家园。环境很好。"}
            ]
        },
        "qa": [
            {"question": "我的手机是什么？", "answer": "小米12", "category": "simple", "evidence": ["D1:1"]},
            {"question": "我住在哪个小区？", "answer": "金色家园", "category": "simple", "evidence": ["D1:2"]},
            {"question": "我住在哪个小区？", "answer": "金色家园", "category": "simple", "evidence": ["D1:2"]}
        ]
    }]);
    let file = dir.path().join("zh.json");
    std::fs::write(&file, data.to_string()).unwrap();
    let server = Server::start(&dir.path().join("load.db"), &[]);
    let out = ok(hippo(&dir.path().join("client.db"))
        .args(["loadtest", "--base", &server.base, "--texts"])
        .arg(&file)
        .args(["--memories", "50", "--queries", "1", "--batch", "16"])
        .args(["--embed-sample", "16", "--search-clients", "2"])
        .output()
        .unwrap());
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["memories"], 50);
    // Two distinct questions: one for the cold phase (asked again with its
    // vector cached), the other for the concurrent phase.
    for phase in [
        "search_cold_1_client",
        "search_cached_vector_1_client",
        "search_cold_2_clients",
    ] {
        assert_eq!(report[phase]["queries"], 1, "{report}");
        assert!(report[phase]["needle_rate"].is_null(), "{report}");
    }
    let (_, listed) = server.call(
        "GET",
        "/v1/memories?user_id=loadtest&kind=message&limit=1000",
        None,
    );
    let listed = listed["results"].as_array().unwrap();
    assert_eq!(listed.len(), 50);
    let sentences = [
        "我用的手机是小米12。",
        "拍照也厉害！",
        "我住的小区叫金色家园。",
        "环境很好。",
    ];
    for m in listed {
        let mut rest = m["memory"].as_str().unwrap();
        // Every memory is one to three of the file's sentences.
        let mut n = 0;
        while !rest.is_empty() {
            let s = sentences
                .iter()
                .find(|s| rest.starts_with(**s))
                .unwrap_or_else(|| panic!("not the file's sentences: {rest}"));
            rest = &rest[s.len()..];
            n += 1;
        }
        assert!((1..=3).contains(&n), "{m}");
    }

    // A file without questions: a clear error.
    let empty = dir.path().join("empty.json");
    std::fs::write(&empty, "[]").unwrap();
    let out = hippo(&dir.path().join("client.db"))
        .args(["loadtest", "--base", &server.base, "--texts"])
        .arg(&empty)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no turns or no questions"));
}

/// The lifecycle commands: a fact changes (both versions kept), `--as-of`
/// answers from the past, delete is soft until `--hard`, bad ids exit 2.
#[test]
fn update_history_as_of_delete_restore() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("life.db");
    let id = ok(hippo(&db)
        .args([
            "add",
            "--user",
            "ana",
            "--kind",
            "fact",
            "--event-time",
            "2023-01-10T12:00:00Z",
            "Ana lives in Boston.",
        ])
        .output()
        .unwrap())
    .trim()
    .to_owned();
    let again = ok(hippo(&db)
        .args([
            "add",
            "--user",
            "ana",
            "--kind",
            "fact",
            "--event-time",
            "2023-01-10T12:00:00Z",
            "Ana lives in Boston.",
        ])
        .output()
        .unwrap());
    assert_eq!(again.trim(), id, "a duplicate names the stored memory");
    ok(hippo(&db)
        .args([
            "update",
            &id,
            "--content",
            "Ana lives in Denver.",
            "--valid-from",
            "2023-06-01T00:00:00Z",
            "--reason",
            "moved",
        ])
        .output()
        .unwrap());
    let search = |extra: &[&str]| {
        ok(hippo(&db)
            .args(["search", "--user", "ana", "-k", "1"])
            .args(extra)
            .arg("Where does Ana live?")
            .output()
            .unwrap())
    };
    assert!(search(&[]).contains("Denver"));
    assert!(search(&["--as-of", "2023-03-01T00:00:00Z"]).contains("Boston"));
    let history: serde_json::Value =
        serde_json::from_str(&ok(hippo(&db).args(["history", &id]).output().unwrap())).unwrap();
    assert_eq!(history["versions"].as_array().unwrap().len(), 2);
    assert_eq!(history["events"][0]["kind"], "merged");
    assert_eq!(history["events"][1]["kind"], "revised");
    assert_eq!(history["events"][1]["reason"], "moved");

    ok(hippo(&db).args(["delete", &id]).output().unwrap());
    assert!(!search(&[]).contains("Denver"));
    let got: serde_json::Value =
        serde_json::from_str(&ok(hippo(&db).args(["get", &id]).output().unwrap())).unwrap();
    assert_eq!(got["status"], "deleted");
    ok(hippo(&db).args(["restore", &id]).output().unwrap());
    assert!(search(&[]).contains("Denver"));
    ok(hippo(&db).args(["delete", "--hard", &id]).output().unwrap());
    let gone = hippo(&db).args(["get", &id]).output().unwrap();
    assert_eq!(gone.status.code(), Some(1), "not found");
    let bad = hippo(&db).args(["get", "not-a-uuid"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    // No LLM configured: adds queue only consolidation jobs, which
    // `maintain` runs (with its pass) when no server does.
    let jobs: serde_json::Value =
        serde_json::from_str(&ok(hippo(&db).args(["jobs"]).output().unwrap())).unwrap();
    let queued = jobs["pending"].as_u64().unwrap();
    assert!(queued > 0, "{jobs}");
    let report: serde_json::Value =
        serde_json::from_str(&ok(hippo(&db).arg("maintain").output().unwrap())).unwrap();
    assert!(report["checked"].as_u64().is_some(), "{report}");
    let jobs: serde_json::Value =
        serde_json::from_str(&ok(hippo(&db).args(["jobs"]).output().unwrap())).unwrap();
    assert_eq!(
        (jobs["pending"].as_u64(), jobs["failed"].as_u64()),
        (Some(0), Some(0))
    );
    let job: serde_json::Value =
        serde_json::from_str(&ok(hippo(&db).args(["jobs", "1"]).output().unwrap())).unwrap();
    assert_eq!(
        (job["kind"].as_str(), job["state"].as_str()),
        (Some("consolidate"), Some("done"))
    );
    assert_eq!(
        hippo(&db)
            .args(["jobs", "700"])
            .output()
            .unwrap()
            .status
            .code(),
        Some(1)
    );
}

#[test]
fn profile_command_builds_and_shows_the_profile() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("p.db");
    let out = hippo(&db).args(["profile"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "an owner is required");
    let out = hippo(&db)
        .args(["profile", "--user", "ana"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no profile"));
    for text in ["Ana lives in Lisbon", "Ana is a beekeeper"] {
        ok(hippo(&db)
            .args(["add", "--user", "ana", "--kind", "profile", text])
            .output()
            .unwrap());
    }
    let p: serde_json::Value = serde_json::from_str(&ok(hippo(&db)
        .args(["profile", "--user", "ana"])
        .output()
        .unwrap()))
    .unwrap();
    assert_eq!(p["memory"], "Ana lives in Lisbon. Ana is a beekeeper.");
    assert_eq!(p["kind"], "profile");
}

/// The injection detector's rates on the repository's attack sets stay
/// where they were measured (a regression guard, not a tuning target).
#[test]
fn eval_injection_reports_detection_rates() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("e.db");
    let set = |f: &str| format!("{}/../../eval/{f}", env!("CARGO_MANIFEST_DIR"));
    let report = |f: &str| -> serde_json::Value {
        serde_json::from_str(&ok(hippo(&db)
            .args(["eval-injection", "--attacks", &set(f), "--semantic"])
            .output()
            .unwrap()))
        .unwrap()
    };
    let r = report("injection.json");
    assert_eq!(r["attacks"], 60);
    assert!(r["detection_rate"].as_f64().unwrap() >= 0.9, "{r}");
    assert!(
        r["semantic"]["detection_rate"].as_f64().unwrap() >= 0.9,
        "{r}"
    );
    let r = report("injection-heldout.json");
    assert!(
        r["semantic"]["detection_rate"].as_f64().unwrap() >= 0.85,
        "{r}"
    );
    let out = hippo(&db)
        .args(["eval-injection", "--attacks", "/nonexistent.json"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

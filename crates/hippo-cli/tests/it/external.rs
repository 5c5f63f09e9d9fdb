//! The `hippo` binary against fakes of its external services (see `fakes`):
//! an OpenAI-compatible embeddings endpoint, switching models and `reembed`,
//! and downloading the model with `fetch-model`.

use std::process::{Command, Output};

use serde_json::Value;

use super::common::{e5_dir, hippo, model_dir, Server};
use super::fakes;

fn ok(out: Output) -> (String, String) {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    (stdout, stderr)
}

fn first_hit(stdout: &str) -> Value {
    serde_json::from_str(stdout.lines().next().expect("a result")).unwrap()
}

#[test]
fn the_e5_model_directory_selects_it_and_reembed_moves_a_store_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("e5.db");
    // Written with the default model (MiniLM).
    for text in [
        "我妹妹上个月在杭州买了一辆新的电动车。",
        "I keep bees on my roof",
        "The meeting moved to Thursday",
    ] {
        ok(hippo(&db)
            .args(["add", "--user", "ana", text])
            .output()
            .unwrap());
    }
    let e5 = e5_dir();
    let e5 = e5.to_str().unwrap();
    let (_, err) = ok(hippo(&db)
        .args(["--model-dir", e5, "reembed"])
        .output()
        .unwrap());
    assert!(err.contains("re-embedded 3 memories"), "{err}");
    let (stats, _) = ok(hippo(&db)
        .args(["--model-dir", e5, "stats"])
        .output()
        .unwrap());
    let stats: Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(
        stats["vectors_by_model"][hippo::embed::E5_MODEL_ID],
        3,
        "{stats}"
    );
    // The server on that directory: an English question finds the Chinese
    // memory by meaning alone (no keyword in common).
    let s = Server::start(&db, &["--model-dir", e5]);
    let (st, body) = s.call(
        "POST",
        "/v1/search",
        Some(serde_json::json!({"user_id": "ana", "query": "What did my sister buy?", "top_k": 1})),
    );
    assert_eq!(st, 200, "{body}");
    let hit = &body["results"][0];
    assert!(hit["memory"].as_str().unwrap().contains("电动车"), "{body}");
    assert!(hit["scores"]["keyword"].is_null(), "{hit}");
    drop(s);
    // The weights file itself selects the model too.
    let file = format!("{e5}/{}", hippo::embed::E5_FILE);
    let (out, _) = ok(hippo(&db)
        .args([
            "--model-dir",
            &file,
            "search",
            "--user",
            "ana",
            "--json",
            "杭州的电动车",
        ])
        .output()
        .unwrap());
    assert!(
        first_hit(&out)["scores"]["vector"].as_f64().unwrap() > 0.5,
        "{out}"
    );
}

#[test]
fn openai_compatible_embedder_and_reembed_after_a_model_switch() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("switch.db");
    // Written with the local model.
    for text in [
        "I keep bees on my roof",
        "The meeting moved to Thursday",
        "My sister plays the cello",
    ] {
        ok(hippo(&db)
            .args(["add", "--user", "ana", text])
            .output()
            .unwrap());
    }
    let (fake, log) = fakes::openai_embeddings();
    let url = format!("{}/v1", fake.base);
    // `hippo` configured for the remote embedder, running `args`.
    let remote = |args: &[&str]| -> Output {
        hippo(&db)
            .args(["--embedder-url", &url, "--embedder-model", "fake-embed"])
            .env("HIPPO_EMBEDDER_API_KEY", "sk-test")
            .args(args)
            .output()
            .unwrap()
    };
    // Vectors of the new model do not exist yet: keyword evidence only.
    let (out, _) = ok(remote(&["search", "--user", "ana", "--json", "cello"]));
    let hit = first_hit(&out);
    assert_eq!(hit["memory"], "My sister plays the cello");
    assert!(hit["scores"]["vector"].is_null(), "{hit}");

    let (_, err) = ok(remote(&["reembed"]));
    assert!(err.contains("re-embedded 3 memories"), "{err}");
    let (stats, _) = ok(remote(&["stats"]));
    let stats: Value = serde_json::from_str(&stats).unwrap();
    // One vector per memory, of the model that embedded it last.
    assert_eq!(stats["vectors_by_model"]["openai:fake-embed"], 3, "{stats}");
    assert!(stats["vectors_by_model"]["sentence-transformers/all-MiniLM-L6-v2"].is_null());
    let (out, _) = ok(remote(&["search", "--user", "ana", "--json", "cello"]));
    let hit = first_hit(&out);
    assert_eq!(hit["memory"], "My sister plays the cello");
    assert!(hit["scores"]["vector"].as_f64().unwrap() > 0.3, "{hit}");
    let (_, err) = ok(remote(&["reembed"]));
    assert!(err.contains("re-embedded 0 memories"), "{err}");
    {
        let log = log.lock().unwrap();
        assert!(!log.auth.is_empty() && log.auth.iter().all(|a| a == "Bearer sk-test"));
        assert!(log.inputs >= 3);
    }

    // A malformed endpoint is a clear error, and nothing is written.
    let out = hippo(&db)
        .args(["--embedder-url", &format!("{}/bad/v1", fake.base)])
        .args([
            "--embedder-model",
            "fake-embed",
            "add",
            "--user",
            "ana",
            "lost",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("embedding endpoint"), "{err}");
    let (stats, _) = ok(hippo(&db).arg("stats").output().unwrap());
    assert_eq!(
        serde_json::from_str::<Value>(&stats).unwrap()["memories"],
        3
    );
}

#[test]
fn fetch_model_downloads_through_the_hub_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let hub = fakes::hub(model_dir());
    let hf_home = dir.path().join("hf");
    let out = Command::new(super::common::BIN)
        .arg("fetch-model")
        .env("HF_ENDPOINT", &hub.base)
        .env("HF_HOME", &hf_home)
        .env("HIPPO_LOG", "warn")
        .output()
        .unwrap();
    let (stdout, _) = ok(out);
    let fetched = std::path::PathBuf::from(stdout.trim());
    assert!(fetched.starts_with(&hf_home), "{fetched:?}");
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        assert_eq!(
            std::fs::read(fetched.join(f)).unwrap(),
            std::fs::read(model_dir().join(f)).unwrap(),
            "{f} arrives intact"
        );
    }
    // The downloaded model serves.
    let db = dir.path().join("fetched.db");
    ok(hippo(&db)
        .env("HIPPO_MODEL_DIR", &fetched)
        .args(["add", "--user", "u", "downloaded models work"])
        .output()
        .unwrap());

    // An unreachable hub: exit 1 with a message.
    let out = Command::new(super::common::BIN)
        .arg("fetch-model")
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .env("HF_HOME", dir.path().join("hf2"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("model hub"));
}

/// The chat client speaks chat completions: model, messages, JSON mode,
/// bearer token, usage read back (estimated when absent), server errors
/// reported as `Unavailable`.
#[test]
fn openai_compatible_chat_client() {
    use hippo::llm::{ChatMessage, ChatModel, OpenAiChat, OpenAiChatConfig};
    let (fake, script) = fakes::openai_chat(fakes::ChatScript {
        answers: vec![(
            "Boston".into(),
            r#"{"facts": ["Ana lives in Boston"]}"#.into(),
        )],
        fail_first: 1,
        ..Default::default()
    });
    let chat = OpenAiChat::new(OpenAiChatConfig {
        base_url: format!("{}/v1", fake.base),
        model: "small-model".into(),
        api_key: Some("sekret".into()),
        ..Default::default()
    });
    let messages = [
        ChatMessage::system("Extract facts as JSON."),
        ChatMessage::user("Ana: I live in Boston."),
    ];
    let err = chat.complete(&messages, 256).unwrap_err();
    assert_eq!(err.kind(), hippo::ErrorKind::Unavailable);
    let c = chat.complete(&messages, 256).unwrap();
    assert_eq!(c.text, r#"{"facts": ["Ana lives in Boston"]}"#);
    assert_eq!((c.prompt_tokens, c.completion_tokens), (100, 20));
    {
        let s = script.lock().unwrap();
        let body = &s.requests[1];
        assert_eq!(body["model"], "small-model");
        assert_eq!(body["max_tokens"], 256);
        assert_eq!(body["response_format"]["type"], "json_object");
        assert_eq!(body["messages"][1]["content"], "Ana: I live in Boston.");
        assert_eq!(s.auth[1], "Bearer sekret");
    }
    script.lock().unwrap().no_usage = true;
    let c = chat.complete(&messages, 256).unwrap();
    assert!(c.prompt_tokens > 0 && c.completion_tokens > 0, "estimated");
    assert_eq!(chat.model_id(), "openai:small-model");
}

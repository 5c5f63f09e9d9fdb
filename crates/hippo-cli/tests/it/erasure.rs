//! Real erasure: a canary string written before an erase is found 0 times
//! in any file of the store afterwards (database, write-ahead log, shared
//! memory), for one memory (with the facts, digests and chunks derived from
//! it), for a user, and for a tenant.

use std::path::Path;
use std::sync::Arc;

use hippo::llm::{OpenAiChat, OpenAiChatConfig};
use hippo::{
    AddItem, Hippo, MiniLmEmbedder, Scope, SearchRequest, SqliteStore, SqliteStoreOptions,
};

use super::common::{hippo, model_dir};
use super::fakes::{self, ChatScript};

/// Occurrences of `needle` in every file under `dir`.
fn occurrences(dir: &Path, needle: &str) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            n += occurrences(&path, needle);
        } else {
            let bytes = std::fs::read(&path).unwrap();
            n += bytes
                .windows(needle.len())
                .filter(|w| *w == needle.as_bytes())
                .count();
        }
    }
    n
}

/// Prints the rows of `db` that contain `needle` (to see what an erase
/// missed when a test fails).
fn show_rows_with(db: &Path, needle: &str) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    for t in tables {
        let mut stmt = conn.prepare(&format!("SELECT * FROM \"{t}\"")).unwrap();
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                Ok((0..n)
                    .map(|i| match r.get_ref(i).unwrap() {
                        rusqlite::types::ValueRef::Text(b) | rusqlite::types::ValueRef::Blob(b) => {
                            String::from_utf8_lossy(b).into_owned()
                        }
                        _ => String::new(),
                    })
                    .collect::<Vec<_>>()
                    .join(" | "))
            })
            .unwrap();
        for r in rows.map(|r| r.unwrap()).filter(|r| r.contains(needle)) {
            eprintln!("{t}: {}", r.chars().take(300).collect::<String>());
        }
    }
}

fn engine(db: &Path, llm_base: &str) -> Hippo {
    let e = Arc::new(MiniLmEmbedder::from_dir(&model_dir()).unwrap());
    let store = SqliteStore::open(SqliteStoreOptions::new(
        db,
        hippo::Embedder::model_id(e.as_ref()),
        384,
    ))
    .unwrap();
    Hippo::builder()
        .store(Arc::new(store))
        .embedder(e)
        .llm(Arc::new(OpenAiChat::new(OpenAiChatConfig {
            base_url: format!("{llm_base}/v1"),
            model: "echo".into(),
            ..Default::default()
        })))
        .build()
        .unwrap()
}

fn drain(h: &Hippo) {
    while h.run_one_job(chrono::Duration::seconds(60), 3).unwrap() {}
}

fn turn(scope: &Scope, who: &str, text: &str, minute: i64) -> AddItem {
    let mut item = AddItem::message(scope.clone(), "user", Some(who), text);
    item.event_time =
        Some(chrono::DateTime::from_timestamp(1_700_000_000 + minute * 60, 0).unwrap());
    item.infer = true;
    item
}

#[test]
fn erased_memories_users_and_tenants_leave_no_trace_in_the_files() {
    // The fake model echoes every line as a fact, so each turn has facts
    // derived from it.
    let (fake, _script) = fakes::openai_chat(ChatScript {
        echo: true,
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let h = engine(&dir.path().join("e.db"), &fake.base);
    let s1 = Scope {
        user_id: Some("ana".into()),
        agent_id: None,
        session_id: Some("s1".into()),
    };
    let canary = "zqxcanary41";
    let lines = [
        (
            "Ana",
            "We planned the garden party for Saturday afternoon.".to_owned(),
        ),
        (
            "Ben",
            format!("My locker code is {canary} and nobody else knows it."),
        ),
        (
            "Ana",
            "Remember to bring the folding chairs and the lemonade.".to_owned(),
        ),
        (
            "Ben",
            "I will also bring the speakers for the music.".to_owned(),
        ),
    ];
    let ids: Vec<_> = lines
        .iter()
        .enumerate()
        .map(|(i, (who, text))| h.add(vec![turn(&s1, who, text, i as i64)]).unwrap()[0].id)
        .collect();
    // A document long enough to be chunked, the canary in one chunk.
    let doc_canary = "zqxdoccanary77";
    let mut doc = (0..400)
        .map(|i| format!("filler{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    doc.push_str(&format!(" the vault phrase is {doc_canary} "));
    doc.push_str(
        &(0..400)
            .map(|i| format!("more{i}"))
            .collect::<Vec<_>>()
            .join(" "),
    );
    let chunks = h
        .add(vec![AddItem::text(Scope::user("ana"), &doc)])
        .unwrap();
    assert!(chunks.len() > 1);
    drain(&h);
    let data = dir.path();
    assert!(
        occurrences(data, canary) > 1,
        "written, extracted and indexed"
    );
    assert!(occurrences(data, doc_canary) > 0);

    // Erase the canary turn and one (other) chunk of the document.
    h.erase(ids[1], None).unwrap();
    h.erase(chunks[0].id, None).unwrap();
    drain(&h);
    // Maintenance compacts after an erase (older keyword-index segments of
    // neighbours' context may still hold the words until then).
    assert!(h.maintain().unwrap().compacted);
    assert!(!h.maintain().unwrap().compacted, "once");
    show_rows_with(&dir.path().join("e.db"), canary);
    assert_eq!(occurrences(data, canary), 0, "memory erase");
    assert_eq!(occurrences(data, doc_canary), 0, "document erase");
    // The rest stays, with its derived facts.
    let hits = h
        .search(&SearchRequest::new(s1.clone(), "folding chairs"))
        .unwrap()
        .hits;
    assert!(hits
        .iter()
        .any(|x| x.memory.content.contains("folding chairs")));
    assert!(h.get(ids[2], None).is_ok());

    // Erase a user: their memories and what other scopes derived from them.
    let ben = Scope::user("ben");
    let user_canary = "zqxusercanary99";
    h.add(vec![turn(
        &ben,
        "Ben",
        &format!("My bank PIN hint is {user_canary}."),
        10,
    )])
    .unwrap();
    drain(&h);
    assert!(occurrences(data, user_canary) > 0);
    h.delete_scope(&ben).unwrap();
    drain(&h);
    h.compact().unwrap();
    show_rows_with(&dir.path().join("e.db"), user_canary);
    assert_eq!(occurrences(data, user_canary), 0, "user erase");
    drop(h);

    // Erase a tenant (through the binary): its store files go.
    let db = dir.path().join("t.db");
    let ok = |args: &[&str]| {
        let out = hippo(&db).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let tenant_canary = "zqxtenantcanary13";
    ok(&["tenant", "create", "acme"]);
    ok(&[
        "--tenant",
        "acme",
        "add",
        "--user",
        "ana",
        &format!("secret {tenant_canary}"),
    ]);
    assert!(occurrences(data, tenant_canary) > 0);
    ok(&["tenant", "erase", "acme"]);
    assert_eq!(occurrences(data, tenant_canary), 0, "tenant erase");
}

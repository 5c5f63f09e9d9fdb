//! Forgetting, reinforcement and admission end to end (real model, real
//! SQLite file, a manual clock): feedback moves ranking, facts fade and are
//! archived with their numbers, expiry hides at once, contentless or
//! unsure writes are refused and recorded, near-duplicate facts merge.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use hippo::clock::ManualClock;
use hippo::{
    AddItem, Context, EventKind, Hippo, MemoryKind, Scope, SearchRequest, Signal, SqliteStore,
    SqliteStoreOptions, Status,
};

use super::common::minilm;

fn day(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 12, 0, 0).unwrap()
}

fn engine_at(dir: &std::path::Path, start: DateTime<Utc>) -> (Hippo, Arc<ManualClock>) {
    let embedder = minilm();
    let store = SqliteStore::open(SqliteStoreOptions::new(
        dir.join("hippo.db"),
        hippo::Embedder::model_id(embedder.as_ref()),
        hippo::Embedder::dimension(embedder.as_ref()),
    ))
    .unwrap();
    let clock = Arc::new(ManualClock::new(start));
    let h = Hippo::builder()
        .store(Arc::new(store))
        .embedder(embedder)
        .clock(clock.clone())
        .build()
        .unwrap();
    (h, clock)
}

fn fact(scope: &Scope, text: &str, when: DateTime<Utc>) -> AddItem {
    let mut item = AddItem::text(scope.clone(), text);
    item.kind = Some(MemoryKind::Fact);
    item.event_time = Some(when);
    item
}

fn search(h: &Hippo, scope: &Scope, q: &str) -> Vec<hippo::SearchHit> {
    let mut req = SearchRequest::new(scope.clone(), q);
    req.context = Context::NONE;
    h.search(&req).unwrap().hits
}

#[test]
fn feedback_moves_ranking_and_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _clock) = engine_at(dir.path(), day(2024, 3, 1));
    let s = Scope::user("ana");
    // The same words in two sessions: a tie that only feedback can break.
    let mut items = Vec::new();
    for session in ["s1", "s2"] {
        let mut scope = s.clone();
        scope.session_id = Some(session.into());
        items.push(AddItem::message(
            scope,
            "user",
            Some("Ana"),
            "My favourite hiking trail is the one above the lake.",
        ));
    }
    items.push(AddItem::message(
        s.clone(),
        "user",
        Some("Ana"),
        "I bought new boots for the mountains.",
    ));
    let added = h.add(items).unwrap();
    let (first, second) = (added[0].id, added[1].id);
    let q = "Which trail does Ana like?";
    let hits = search(&h, &s, q);
    let pos = |hits: &[hippo::SearchHit], id| hits.iter().position(|x| x.memory.id == id).unwrap();
    assert!(
        pos(&hits, first) < pos(&hits, second),
        "ties go to the older id"
    );
    let tied = hits[pos(&hits, first)].score;

    h.feedback(
        second,
        Some(&s),
        Signal::Helpful,
        Some("answered the question".into()),
    )
    .unwrap();
    let hits = search(&h, &s, q);
    assert_eq!(hits[0].memory.id, second);
    assert_eq!(hits[0].scores.reinforcement, 0.5);
    assert!((hits[0].score - tied - 0.1 * 0.5).abs() < 1e-4);

    h.feedback(second, Some(&s), Signal::Wrong, None).unwrap();
    h.feedback(second, Some(&s), Signal::Wrong, None).unwrap();
    let hits = search(&h, &s, q);
    assert_eq!(hits[0].memory.id, first);
    let weak = &hits[pos(&hits, second)];
    assert_eq!(weak.scores.strength, 0.25);

    let m = h.get(second, None).unwrap();
    assert_eq!((m.usage.helpful, m.usage.wrong), (1, 2));
    assert_eq!(m.usage.reinforced_at, Some(day(2024, 3, 1)));
    let events = h.history(second, None).unwrap().events;
    assert_eq!(events.len(), 3);
    assert!(events.iter().all(|e| e.kind == EventKind::Feedback));
    assert_eq!(events[0].detail["signal"], "helpful");
    assert_eq!(events[0].reason.as_deref(), Some("answered the question"));
    assert_eq!(events[2].detail["strength_after"], 0.25);
    // Feedback survives reopening (it is read back into the ranking map).
    drop(h);
    let (h, _clock) = engine_at(dir.path(), day(2024, 3, 1));
    let hits = search(&h, &s, q);
    assert_eq!(hits[pos(&hits, second)].scores.strength, 0.25);
    // Bad input changes nothing.
    assert!(h
        .feedback(second, Some(&Scope::user("bob")), Signal::Used, None)
        .is_err());
    assert_eq!(h.get(second, None).unwrap().usage.used, 0);
}

#[test]
fn facts_fade_unless_used_and_maintenance_archives_them_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = day(2020, 1, 1);
    let (h, clock) = engine_at(dir.path(), t0);
    let s = Scope::user("ana");
    let added = h
        .add(vec![
            fact(&s, "Ana plays the violin.", t0),
            fact(&s, "Ana's sister is called Mia.", t0),
            AddItem::message(s.clone(), "user", Some("Ana"), "I practised scales today."),
        ])
        .unwrap();
    let (violin, sister, message) = (added[0].id, added[1].id, added[2].id);
    clock.set(t0 + Duration::days(4 * 365));
    h.feedback(sister, None, Signal::Used, None).unwrap();
    clock.set(t0 + Duration::days(5 * 365));
    // Five half-lives unused: 0.5^5 ≈ 0.031 < 0.05.
    let faded = h.get(violin, None).unwrap();
    assert!((h.strength(&faded).value - 0.03125).abs() < 1e-3);
    let report = h.maintain().unwrap();
    assert_eq!(report.faded, vec![violin]);
    assert!(report.expired.is_empty());
    assert_eq!(report.checked, 2, "messages do not decay");
    let m = h.get(violin, None).unwrap();
    assert_eq!(m.status, Status::Archived);
    let archived = h.history(violin, None).unwrap().events;
    let e = archived.last().unwrap();
    assert_eq!(
        (e.kind, e.origin.as_str()),
        (EventKind::Archived, "maintenance")
    );
    assert_eq!(e.reason.as_deref(), Some("faded"));
    assert_eq!(e.detail["threshold"], 0.05);
    assert!(e.detail["strength"].as_f64().unwrap() < 0.05);
    // Used a year ago with doubled stability: 0.5^(365/730) ≈ 0.71.
    assert_eq!(h.get(sister, None).unwrap().status, Status::Active);
    assert_eq!(h.get(message, None).unwrap().status, Status::Active);
    // Archived: out of default search, there on request.
    assert!(search(&h, &s, "What instrument does Ana play?")
        .iter()
        .all(|x| x.memory.id != violin));
    let mut req = SearchRequest::new(s.clone(), "What instrument does Ana play?");
    req.filter.statuses = vec![Status::Archived];
    assert_eq!(h.search(&req).unwrap().hits[0].memory.id, violin);
    // Restored, it counts as used now and is not archived again.
    h.restore(violin, None).unwrap();
    assert!(h.maintain().unwrap().faded.is_empty());
    assert_eq!(h.get(violin, None).unwrap().status, Status::Active);
}

#[test]
fn expiry_hides_at_once_and_maintenance_archives() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = day(2024, 5, 1);
    let (h, clock) = engine_at(dir.path(), t0);
    let s = Scope::user("ana");
    let mut item = AddItem::text(s.clone(), "The office door code is 4512 this week.");
    item.expires_at = Some(t0 + Duration::days(7));
    let id = h.add(vec![item]).unwrap()[0].id;
    let q = "What is the door code?";
    assert_eq!(search(&h, &s, q)[0].memory.id, id);
    clock.set(t0 + Duration::days(8));
    assert!(search(&h, &s, q).iter().all(|x| x.memory.id != id));
    let listed = h
        .list(Some(&s), &Default::default(), None, 10, Default::default())
        .unwrap();
    assert!(listed.memories.is_empty());
    assert_eq!(h.get(id, None).unwrap().status, Status::Active);
    let report = h.maintain().unwrap();
    assert_eq!(report.expired, vec![id]);
    let events = h.history(id, None).unwrap().events;
    assert_eq!(events.last().unwrap().reason.as_deref(), Some("expired"));
    assert_eq!(h.get(id, None).unwrap().status, Status::Archived);
    // Clearing the expiry and restoring brings it back.
    h.set_expiry(id, None, None).unwrap();
    h.restore(id, None).unwrap();
    assert_eq!(search(&h, &s, q)[0].memory.id, id);
    let kinds: Vec<EventKind> = h
        .history(id, None)
        .unwrap()
        .events
        .iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        vec![EventKind::Archived, EventKind::Expiry, EventKind::Restored]
    );
}

#[test]
fn admission_refuses_and_records_contentless_or_unsure_facts_and_near_duplicates_merge() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = day(2024, 5, 1);
    let (h, _clock) = engine_at(dir.path(), t0);
    let s = Scope::user("ana");
    let denver = h.add(vec![fact(&s, "Ana lives in Denver.", t0)]).unwrap()[0].id;
    let mut unsure = fact(&s, "Ana might own a boat.", t0);
    unsure.confidence = Some(0.2);
    let mut restated = fact(&s, "Ana lives in Denver", t0 + Duration::days(3));
    restated.scope.session_id = Some("later".into());
    let out = h
        .add_reporting(vec![
            fact(&s, "ok thanks!", t0),
            unsure,
            restated,
            AddItem::message(s.clone(), "user", Some("Ana"), "ok thanks!"),
        ])
        .unwrap();
    // The message is kept: the conversation record is never refused.
    assert_eq!(out.stored.len(), 1);
    assert_eq!(out.stored[0].kind, MemoryKind::Message);
    assert_eq!(out.rejected.len(), 2);
    assert_eq!(out.rejected[0].admission.utility, 0.0);
    assert!((out.rejected[1].admission.confidence - 0.2).abs() < 1e-6);
    assert!(out.rejected.iter().all(|r| !r.admission.admitted));
    assert_eq!(out.duplicates.len(), 1);
    assert_eq!(out.duplicates[0].existing, denver);
    assert!(out.duplicates[0].similarity.unwrap() >= 0.95);
    // The merge keeps the duplicate's provenance on the stored fact.
    let events = h.history(denver, None).unwrap().events;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventKind::Merged);
    assert_eq!(events[0].reason.as_deref(), Some("near duplicate"));
    assert_eq!(events[0].detail["content"], "Ana lives in Denver");
    assert!(events[0].detail["provenance"]["request_id"].is_string());
    // The record explains the refusals.
    let record = h.rejections(Some(&s), 0, 10).unwrap();
    assert_eq!(record.len(), 2);
    assert_eq!(record[0].content, "ok thanks!");
    assert_eq!(record[1].admission, out.rejected[1].admission);
    assert!(h
        .rejections(Some(&Scope::user("bob")), 0, 10)
        .unwrap()
        .is_empty());
    // A different fact is admitted; `force` stores a refused one.
    let mut forced = fact(&s, "Ana might own a boat.", t0);
    forced.confidence = Some(0.2);
    forced.force = true;
    let out = h
        .add_reporting(vec![fact(&s, "Ana works as a nurse.", t0), forced])
        .unwrap();
    assert_eq!(out.stored.len(), 2);
    // Erasing the scope erases its record too.
    h.delete_scope(&s).unwrap();
    assert!(h.rejections(Some(&s), 0, 10).unwrap().is_empty());
    // Out-of-range confidence is bad input.
    let mut bad = fact(&s, "Ana likes tea.", t0);
    bad.confidence = Some(1.5);
    assert_eq!(
        h.add(vec![bad]).unwrap_err().kind(),
        hippo::ErrorKind::InvalidInput
    );
}

/// Two engines on one store (two processes, or two replicas) counting
/// feedback on one memory at the same time: every report counts once.
#[test]
fn concurrent_feedback_reports_all_count() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = engine_at(dir.path(), Utc::now());
    let (b, _) = engine_at(dir.path(), Utc::now());
    let s = Scope::user("ana");
    let id = a
        .add(vec![AddItem::text(
            s.clone(),
            "Ana keeps her passport in the blue drawer.",
        )])
        .unwrap()[0]
        .id;
    const EACH: u32 = 25;
    std::thread::scope(|t| {
        for h in [&a, &b] {
            let s = s.clone();
            t.spawn(move || {
                for _ in 0..EACH {
                    h.feedback(id, Some(&s), Signal::Used, None).unwrap();
                }
            });
        }
    });
    assert_eq!(a.get(id, None).unwrap().usage.used, 2 * EACH);
    let (_, events) = b.store().history(id).unwrap();
    let reports = events
        .iter()
        .filter(|e| e.kind == hippo::model::EventKind::Feedback)
        .count();
    assert_eq!(reports, 2 * EACH as usize, "one event per report");
}

/// Two engines on one store, one revising a memory while the other archives
/// and restores it: a status change never writes back the text it read
/// (undoing a revision made meanwhile); it is refused as a concurrent
/// change instead, and the memory ends with the last revision acknowledged.
#[test]
fn status_changes_racing_revisions_never_undo_them() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = engine_at(dir.path(), Utc::now());
    let (b, _) = engine_at(dir.path(), Utc::now());
    let s = Scope::user("ana");
    let id = a
        .add(vec![AddItem::text(
            s.clone(),
            "The spare key is in drawer 0.",
        )])
        .unwrap()[0]
        .id;
    let last = std::sync::Mutex::new(String::from("The spare key is in drawer 0."));
    let refused = std::sync::atomic::AtomicUsize::new(0);
    let revising = std::sync::atomic::AtomicBool::new(true);
    std::thread::scope(|t| {
        t.spawn(|| {
            for i in 1..=40 {
                let text = format!("The spare key is in drawer {i}.");
                let patch = hippo::MemoryPatch {
                    content: Some(text.clone()),
                    ..Default::default()
                };
                match a.update(id, Some(&s), patch) {
                    Ok(_) => *last.lock().unwrap() = text,
                    Err(e) if e.is_concurrent_change() => {
                        refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(e) => {
                        revising.store(false, std::sync::atomic::Ordering::Relaxed);
                        panic!("{e}")
                    }
                }
            }
            revising.store(false, std::sync::atomic::Ordering::Relaxed);
        });
        t.spawn(|| {
            let mut i = 0;
            // As many status changes as fit while the revisions run.
            while revising.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let r = if i % 2 == 0 {
                    b.archive(id, Some(&s), None)
                } else {
                    b.restore(id, Some(&s))
                };
                match r {
                    Ok(_) => {}
                    Err(e) if e.is_concurrent_change() => {
                        refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(e) => panic!("{e}"),
                }
                // Leave the other engine room to take the write lock.
                std::thread::sleep(std::time::Duration::from_millis(3));
            }
        });
    });
    let stored = a.get(id, None).unwrap();
    assert_ne!(*last.lock().unwrap(), "The spare key is in drawer 0.");
    assert_eq!(stored.content, *last.lock().unwrap(), "no revision undone");
    eprintln!(
        "{} changes refused as concurrent",
        refused.load(std::sync::atomic::Ordering::Relaxed)
    );
}

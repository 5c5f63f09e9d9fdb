//! The memory lifecycle end to end (real model, real SQLite file): versions
//! with validity, `as_of`, history, soft delete and restore, invalidation,
//! exact deduplication.

use chrono::{DateTime, TimeZone, Utc};
use hippo::{
    AddItem, ErrorKind, EventKind, Filter, Memory, MemoryKind, MemoryPatch, Order, Scope,
    SearchRequest, Status,
};

use super::common::{engine, minilm, HashEmbedder};

fn day(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 12, 0, 0).unwrap()
}

fn fact(scope: &Scope, text: &str, when: DateTime<Utc>) -> AddItem {
    let mut item = AddItem::text(scope.clone(), text);
    item.kind = Some(MemoryKind::Fact);
    item.event_time = Some(when);
    item
}

fn texts(h: &hippo::Hippo, req: &SearchRequest) -> Vec<String> {
    h.search(req)
        .unwrap()
        .hits
        .into_iter()
        .map(|h| h.memory.content)
        .collect()
}

fn search_as_of(scope: &Scope, q: &str, t: Option<DateTime<Utc>>) -> SearchRequest {
    let mut req = SearchRequest::new(scope.clone(), q);
    req.filter.as_of = t;
    req
}

#[test]
fn a_fact_that_changes_keeps_both_versions_with_their_validity() {
    let dir = tempfile::tempdir().unwrap();
    let h = engine(dir.path(), minilm());
    let s = Scope::user("ana");
    let added = h
        .add(vec![
            fact(&s, "Ana lives in Boston.", day(2023, 1, 10)),
            fact(&s, "Ana works as a nurse.", day(2023, 1, 10)),
            fact(&s, "Ana has a dog named Rex.", day(2023, 2, 3)),
        ])
        .unwrap();
    let boston = &added[0];
    let denver = h
        .update(
            boston.id,
            Some(&s),
            MemoryPatch {
                content: Some("Ana lives in Denver.".into()),
                valid_from: Some(day(2023, 6, 1)),
                reason: Some("said they moved to Denver".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(denver.id, boston.id, "the id shows the latest version");
    assert_eq!(denver.recorded_at, boston.recorded_at);
    assert_eq!(denver.valid_from, Some(day(2023, 6, 1)));

    let q = "Where does Ana live?";
    let now = texts(&h, &search_as_of(&s, q, None));
    assert_eq!(now[0], "Ana lives in Denver.");
    assert!(!now.iter().any(|t| t.contains("Boston")), "{now:?}");
    let before = texts(&h, &search_as_of(&s, q, Some(day(2023, 3, 1))));
    assert_eq!(before[0], "Ana lives in Boston.");
    assert!(!before.iter().any(|t| t.contains("Denver")), "{before:?}");
    // A fact is part of what held only from its own start.
    let dog = "What is the name of Ana's dog?";
    assert_eq!(
        texts(&h, &search_as_of(&s, dog, Some(day(2023, 3, 1))))[0],
        "Ana has a dog named Rex."
    );
    assert!(!texts(&h, &search_as_of(&s, dog, Some(day(2023, 1, 20))))
        .iter()
        .any(|t| t.contains("Rex")));
    let after = texts(&h, &search_as_of(&s, q, Some(day(2023, 7, 1))));
    assert_eq!(after[0], "Ana lives in Denver.");
    // Before anything was known, nothing held.
    assert!(texts(&h, &search_as_of(&s, q, Some(day(2022, 1, 1)))).is_empty());

    let history = h.history(boston.id, Some(&s)).unwrap();
    assert_eq!(history.memory_id, boston.id);
    let [old, new] = &history.versions[..] else {
        panic!("two versions: {:?}", history.versions)
    };
    assert_eq!(old.content, "Ana lives in Boston.");
    assert_eq!(old.version_of, Some(boston.id));
    assert_eq!(old.valid_since(), day(2023, 1, 10));
    assert_eq!(old.valid_to, Some(day(2023, 6, 1)));
    assert_eq!(
        old.provenance, boston.provenance,
        "the old version keeps its provenance"
    );
    assert_eq!(new.content, "Ana lives in Denver.");
    assert_ne!(new.provenance.request_id, old.provenance.request_id);
    let [event] = &history.events[..] else {
        panic!("one event: {:?}", history.events)
    };
    assert_eq!(event.kind, EventKind::Revised);
    assert_eq!(event.origin, "api");
    assert_eq!(event.reason.as_deref(), Some("said they moved to Denver"));
    assert_eq!(event.detail["previous_version"], old.id.to_string());
    assert_eq!(event.request_id, new.provenance.request_id);
    // Any version's id leads to the same history.
    assert_eq!(h.history(old.id, None).unwrap(), history);

    let list = |f: Filter| -> Vec<String> {
        h.list(Some(&s), &f, None, 100, Order::Ascending)
            .unwrap()
            .memories
            .into_iter()
            .map(|m| m.content)
            .collect()
    };
    assert_eq!(list(Filter::default()).len(), 3);
    assert_eq!(
        list(Filter {
            all_versions: true,
            ..Default::default()
        })
        .len(),
        4
    );
    assert!(list(Filter {
        as_of: Some(day(2023, 3, 1)),
        ..Default::default()
    })
    .contains(&"Ana lives in Boston.".to_owned()));

    // Versions are history: they cannot be changed, and a change cannot
    // take effect before the version it replaces.
    let err = h
        .update(
            old.id,
            None,
            MemoryPatch {
                content: Some("x".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let err = h
        .update(
            boston.id,
            None,
            MemoryPatch {
                content: Some("Ana lives in Austin.".into()),
                valid_from: Some(day(2023, 5, 1)),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    // A patch that changes nothing keeps no version.
    h.update(
        boston.id,
        None,
        MemoryPatch {
            content: Some("Ana lives in Denver.".into()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(h.history(boston.id, None).unwrap().versions.len(), 2);

    // Everything survives reopening the file (the indexes are rebuilt).
    drop(h);
    let h = engine(dir.path(), minilm());
    assert_eq!(
        texts(&h, &search_as_of(&s, q, Some(day(2023, 3, 1))))[0],
        "Ana lives in Boston."
    );
    assert_eq!(
        texts(&h, &search_as_of(&s, q, None))[0],
        "Ana lives in Denver."
    );
}

#[test]
fn soft_delete_restore_invalidate_and_erase() {
    let dir = tempfile::tempdir().unwrap();
    let h = engine(dir.path(), minilm());
    let s = Scope::user("u");
    let added = h
        .add(vec![
            fact(&s, "The user drives a red Toyota.", day(2024, 1, 1)),
            fact(&s, "The user plays the cello.", day(2024, 1, 1)),
        ])
        .unwrap();
    let (car, cello) = (&added[0], &added[1]);
    let q = "What car does the user drive?";
    let found =
        |h: &hippo::Hippo, req: &SearchRequest| texts(h, req).iter().any(|t| t.contains("Toyota"));

    let deleted = h.delete(car.id, Some(&s)).unwrap();
    assert_eq!(deleted.status, Status::Deleted);
    assert!(!found(&h, &search_as_of(&s, q, None)));
    assert_eq!(h.get(car.id, None).unwrap().status, Status::Deleted);
    let trash = h
        .list(
            Some(&s),
            &Filter {
                statuses: vec![Status::Deleted],
                ..Default::default()
            },
            None,
            10,
            Order::Ascending,
        )
        .unwrap();
    assert_eq!(trash.memories.len(), 1);
    assert_eq!(
        h.update(
            car.id,
            None,
            MemoryPatch {
                content: Some("x".into()),
                ..Default::default()
            }
        )
        .unwrap_err()
        .kind(),
        ErrorKind::Conflict,
        "a deleted memory must be restored before it changes"
    );
    h.restore(car.id, Some(&s)).unwrap();
    assert!(found(&h, &search_as_of(&s, q, None)));

    h.invalidate(
        car.id,
        Some(&s),
        Some(day(2024, 6, 1)),
        Some("sold it".into()),
    )
    .unwrap();
    assert!(!found(&h, &search_as_of(&s, q, None)));
    assert!(found(&h, &search_as_of(&s, q, Some(day(2024, 3, 1)))));
    assert!(!found(&h, &search_as_of(&s, q, Some(day(2024, 7, 1)))));
    let kinds: Vec<EventKind> = h
        .history(car.id, None)
        .unwrap()
        .events
        .iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            EventKind::Deleted,
            EventKind::Restored,
            EventKind::Invalidated
        ]
    );

    h.erase(car.id, Some(&s)).unwrap();
    assert_eq!(h.get(car.id, None).unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(
        h.history(car.id, None).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(h.get(cello.id, None).unwrap().status, Status::Active);
    assert_eq!(
        h.delete(car.id, None).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

fn conversation(s: &Scope) -> Vec<AddItem> {
    let turns = [
        ("Ana", "I went hiking near the lake yesterday."),
        ("Ben", "Nice! Which trail?"),
        ("Ana", "The north loop, about twelve miles."),
        ("Ben", "ok"),
        ("Ana", "ok"),
    ];
    turns
        .iter()
        .map(|(who, text)| {
            let mut item = AddItem::message(s.clone(), "user", Some(who), *text);
            item.event_time = Some(day(2023, 5, 8));
            item
        })
        .collect()
}

#[test]
fn reimporting_a_conversation_creates_no_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let h = engine(dir.path(), std::sync::Arc::new(HashEmbedder));
    let s = Scope::user("ana");
    let first = h.add_reporting(conversation(&s)).unwrap();
    assert_eq!(first.stored.len(), 5);
    assert!(first.duplicates.is_empty());
    // A conversation that repeats a line keeps both lines.
    let oks: Vec<&Memory> = first.stored.iter().filter(|m| m.content == "ok").collect();
    assert_eq!(oks.len(), 2);
    assert_ne!(oks[0].dedup_key, oks[1].dedup_key);

    let again = h.add_reporting(conversation(&s)).unwrap();
    assert!(again.stored.is_empty(), "{:?}", again.stored);
    let existing: Vec<_> = again.duplicates.iter().map(|d| d.existing).collect();
    let ids: Vec<_> = first.stored.iter().map(|m| m.id).collect();
    assert_eq!(existing, ids);
    // Turn by turn, too.
    for item in conversation(&s) {
        assert!(h.add(vec![item]).unwrap().is_empty());
    }
    let all = h
        .list(Some(&s), &Filter::default(), None, 100, Order::Ascending)
        .unwrap();
    assert_eq!(all.memories.len(), 5);
    // The merge is on record, with the duplicate's provenance.
    let events = h.history(ids[0], None).unwrap().events;
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e.kind == EventKind::Merged));
    assert_ne!(events[0].request_id, first.stored[0].provenance.request_id);
    // The conversation chain is untouched by the skipped copies.
    let windows = h.store().windows(&ids, 1, 1).unwrap();
    assert_eq!(windows[4], vec![ids[3], ids[4]]);

    // Live chat without event times repeats itself for real.
    let live = || AddItem::message(Scope::user("live"), "user", None, "thanks");
    assert_eq!(h.add(vec![live()]).unwrap().len(), 1);
    assert_eq!(h.add(vec![live()]).unwrap().len(), 1);
    // Documents and facts are deduplicated by content.
    let doc = || AddItem::text(s.clone(), "Ana's favourite tea is genmaicha.");
    assert_eq!(h.add(vec![doc()]).unwrap().len(), 1);
    assert_eq!(h.add_reporting(vec![doc()]).unwrap().duplicates.len(), 1);
    // The same text in another scope is not a duplicate.
    assert_eq!(
        h.add(vec![AddItem::text(
            Scope::user("ben"),
            "Ana's favourite tea is genmaicha."
        )])
        .unwrap()
        .len(),
        1
    );
}

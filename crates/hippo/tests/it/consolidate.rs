//! Consolidation without an LLM (real model, real SQLite file): session
//! digests and entity timelines are built by jobs queued with the writes,
//! linked to their sources, rebuilt only where a write touched, and never
//! quote a memory that was deleted since.

use chrono::{DateTime, Duration, TimeZone, Utc};
use hippo::{AddItem, Filter, Hippo, Memory, MemoryKind, Order, Scope, SearchRequest, Status};

use super::common::{engine, minilm};

fn at(d: u32, minute: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2023, 5, d, 10, 0, 0).unwrap() + Duration::minutes(minute)
}

fn session(user: &str, id: &str, day: u32, lines: &[(&str, &str)]) -> Vec<AddItem> {
    lines
        .iter()
        .enumerate()
        .map(|(i, (who, text))| {
            let scope = Scope {
                user_id: Some(user.into()),
                agent_id: None,
                session_id: Some(id.into()),
            };
            let mut item = AddItem::message(scope, "user", Some(who), *text);
            item.event_time = Some(at(day, i as i64));
            item
        })
        .collect()
}

fn drain(h: &Hippo) -> usize {
    let mut n = 0;
    while h.run_one_job(chrono::Duration::seconds(60), 3).unwrap() {
        n += 1;
    }
    n
}

fn digests(h: &Hippo, scope: &Scope) -> Vec<Memory> {
    let filter = Filter {
        kinds: vec![MemoryKind::Summary],
        ..Filter::default()
    };
    h.list(Some(scope), &filter, None, 100, Order::Ascending)
        .unwrap()
        .memories
}

fn entity(m: &Memory, name: &str) -> bool {
    m.metadata.get("entity").is_some_and(|e| e == name)
}

const TRIP: &[(&str, &str)] = &[
    (
        "Ana",
        "Hi Ben! We just got back from the trip to Lisbon with Marta.",
    ),
    ("Ben", "Welcome back! How was the food in Lisbon?"),
    (
        "Ana",
        "Amazing, Marta found a tiny place that grills sardines every night.",
    ),
    ("Ben", "I am jealous. Did you visit the tile museum there?"),
    (
        "Ana",
        "Yes, and Marta bought two blue tiles for her kitchen.",
    ),
    ("Ben", "ok"),
    ("Ana", "Next year we want to see Porto as well."),
];

#[test]
fn session_digests_and_entity_timelines_are_built_incrementally_and_stay_truthful() {
    let dir = tempfile::tempdir().unwrap();
    let h = engine(dir.path(), minilm());
    let ana = Scope::user("ana");
    let trip = h.add(session("ana", "s1", 8, TRIP)).unwrap();
    assert!(drain(&h) >= 1, "the write queued a consolidation job");

    let all = digests(&h, &ana);
    let digest = all
        .iter()
        .find(|m| m.metadata.get("digest").is_some_and(|d| d == "session"))
        .expect("a session digest");
    assert_eq!(digest.scope.session_id.as_deref(), Some("s1"));
    assert!(
        digest.content.contains("7 messages between Ana, Ben"),
        "{}",
        digest.content
    );
    assert!(
        digest.content.contains("Mentioned: Lisbon, Marta")
            || digest.content.contains("Mentioned: Marta, Lisbon"),
        "{}",
        digest.content
    );
    assert!(
        !digest.content.contains("\"ok.\""),
        "contentless lines are not quoted"
    );
    let ids: Vec<_> = trip.iter().map(|m| m.id).collect();
    assert_eq!(digest.provenance.derived_from, ids, "linked to every turn");
    assert_eq!(digest.event_time, Some(at(8, 6)));
    let marta = all
        .iter()
        .find(|m| entity(m, "Marta"))
        .expect("a timeline for Marta");
    assert!(
        marta
            .content
            .starts_with("Timeline of Marta (3 mentions): 2023-05-08: Ana:"),
        "{}",
        marta.content
    );
    assert_eq!(
        marta.scope, ana,
        "timelines belong to the owner, across sessions"
    );
    assert!(
        all.iter()
            .all(|m| m.metadata.get("entity").is_none_or(|e| e != "Porto")),
        "one mention makes no timeline"
    );

    // A later session touches only its own digest and the names it mentions.
    let before: Vec<(String, DateTime<Utc>)> = digests(&h, &ana)
        .into_iter()
        .map(|m| (m.content, m.updated_at))
        .collect();
    h.add(session(
        "ana",
        "s2",
        20,
        &[
            (
                "Ana",
                "Marta called, she starts a new job in Porto next month.",
            ),
            ("Ben", "Good for Marta! Porto is lovely in summer."),
            ("Ana", "We will visit her there in August."),
        ],
    ))
    .unwrap();
    drain(&h);
    let after = digests(&h, &ana);
    let s1 = after
        .iter()
        .find(|m| m.scope.session_id.as_deref() == Some("s1"))
        .unwrap();
    assert!(
        before.contains(&(s1.content.clone(), s1.updated_at)),
        "s1's digest untouched"
    );
    assert!(after
        .iter()
        .any(|m| m.scope.session_id.as_deref() == Some("s2")));
    let marta = after.iter().find(|m| entity(m, "Marta")).unwrap();
    assert!(
        marta.content.starts_with("Timeline of Marta (5 mentions)"),
        "{}",
        marta.content
    );
    assert!(
        after.iter().any(|m| entity(m, "Porto")),
        "now mentioned twice"
    );
    // The timeline is in time order: the May 20 call comes after the trip.
    let trip_at = marta.content.find("2023-05-08").unwrap();
    let call_at = marta.content.find("2023-05-20").unwrap();
    assert!(trip_at < call_at);

    // A deleted turn leaves the digests once their job has run.
    let sardines = &trip[2];
    h.delete(sardines.id, None).unwrap();
    drain(&h);
    let now = digests(&h, &ana);
    assert!(
        now.iter().all(|m| !m.content.contains("sardines")),
        "{now:#?}"
    );
    let s1 = now
        .iter()
        .find(|m| m.scope.session_id.as_deref() == Some("s1"))
        .unwrap();
    assert!(!s1.provenance.derived_from.contains(&sardines.id));
    let marta = now.iter().find(|m| entity(m, "Marta")).unwrap();
    assert!(
        marta.content.starts_with("Timeline of Marta (4 mentions)"),
        "{}",
        marta.content
    );

    // Rebuilding what is current changes nothing (jobs may run twice).
    let report = h
        .consolidate(&hippo::consolidate::Touched::by(
            &trip.iter().collect::<Vec<_>>(),
        ))
        .unwrap();
    assert_eq!(report, Default::default());

    // Digests are searchable, and ask for it by kind.
    let mut req = SearchRequest::new(
        ana.clone(),
        "What did Ana and Ben talk about in the Lisbon conversation?",
    );
    req.filter.kinds = vec![MemoryKind::Summary];
    let hits = h.search(&req).unwrap().hits;
    assert_eq!(hits[0].memory.scope.session_id.as_deref(), Some("s1"));
    assert_eq!(hits[0].memory.status, Status::Active);

    // Another user's digests are theirs alone.
    assert!(digests(&h, &Scope::user("ben")).is_empty());
}

#[test]
fn consolidation_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let embedder = minilm();
    let store = hippo::SqliteStore::open(hippo::SqliteStoreOptions::new(
        dir.path().join("h.db"),
        hippo::Embedder::model_id(embedder.as_ref()),
        hippo::Embedder::dimension(embedder.as_ref()),
    ))
    .unwrap();
    let h = Hippo::builder()
        .store(std::sync::Arc::new(store))
        .embedder(embedder)
        .consolidation(false)
        .build()
        .unwrap();
    h.add(session("ana", "s1", 8, TRIP)).unwrap();
    assert_eq!(drain(&h), 0);
    assert!(digests(&h, &Scope::user("ana")).is_empty());
}

fn trait_of(scope: &Scope, text: &str, day: u32) -> AddItem {
    let mut item = AddItem::text(scope.clone(), text);
    item.kind = Some(MemoryKind::Profile);
    item.event_time = Some(at(day, 0));
    item
}

/// Without an LLM the profile lists the owner's current traits; it is
/// revised (keeping versions) when a trait changes, reflects only current
/// traits, is isolated per owner, and is archived when no trait is left.
#[test]
fn the_profile_follows_the_current_traits_with_versions() {
    let dir = tempfile::tempdir().unwrap();
    let h = engine(dir.path(), minilm());
    let ana = Scope::user("ana");
    assert!(h.profile(&ana).unwrap().is_none());
    let home = h
        .add(vec![trait_of(&ana, "Ana lives in Boston", 1)])
        .unwrap()
        .remove(0);
    let job_trait = trait_of(&ana, "Ana works as a nurse at the city hospital.", 2);
    // A trait stated within a session counts for its user's profile.
    let mut in_session = job_trait.clone();
    in_session.scope.session_id = Some("s1".into());
    h.add(vec![in_session]).unwrap();
    h.add(vec![trait_of(&Scope::user("ben"), "Ben is a pilot.", 2)])
        .unwrap();
    drain(&h);
    let p = h.profile(&ana).unwrap().expect("built");
    assert_eq!(
        p.content,
        "Ana lives in Boston. Ana works as a nurse at the city hospital."
    );
    assert_eq!(p.kind, MemoryKind::Profile);
    assert_eq!(p.scope, ana);
    assert_eq!(p.metadata["method"], "extractive");
    assert_eq!(p.provenance.derived_from.len(), 2);
    assert!(p.provenance.derived_from.contains(&home.id));
    assert_eq!(
        h.profile(&Scope::user("ben")).unwrap().unwrap().content,
        "Ben is a pilot."
    );
    // A session scope names its user's profile.
    let mut s1 = ana.clone();
    s1.session_id = Some("s1".into());
    assert_eq!(h.profile(&s1).unwrap().unwrap().id, p.id);
    assert_eq!(drain(&h), 0, "building the profile queued nothing more");

    // A trait changes: the profile is revised, the old text kept.
    h.update(
        home.id,
        None,
        hippo::MemoryPatch {
            content: Some("Ana lives in Denver".into()),
            ..Default::default()
        },
    )
    .unwrap();
    drain(&h);
    let p2 = h.profile(&ana).unwrap().unwrap();
    assert_eq!(p2.id, p.id);
    assert!(p2.content.contains("Denver") && !p2.content.contains("Boston"));
    let history = h.history(p.id, None).unwrap();
    assert_eq!(history.versions.len(), 2);
    assert!(history.versions[0].content.contains("Boston"));
    assert_eq!(history.events[0].origin, "consolidation");

    // The profile is found by search like any memory, and is not itself a
    // source: a re-run changes nothing.
    let mut req = SearchRequest::new(ana.clone(), "What does Ana do for a living?");
    req.filter.kinds = vec![MemoryKind::Profile];
    let hits = h.search(&req).unwrap().hits;
    assert!(hits.iter().any(|x| x.memory.id == p.id));
    h.consolidate(&hippo::consolidate::Touched {
        profiles: [ana.clone()].into(),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(h.history(p.id, None).unwrap().versions.len(), 2);

    // No traits left: the profile is archived.
    for m in h
        .list(
            Some(&ana),
            &Filter {
                kinds: vec![MemoryKind::Profile],
                ..Filter::default()
            },
            None,
            100,
            Order::Ascending,
        )
        .unwrap()
        .memories
        .into_iter()
        .filter(|m| !hippo::consolidate::is_digest(m))
    {
        h.delete(m.id, None).unwrap();
    }
    drain(&h);
    assert!(h.profile(&ana).unwrap().is_none());
    assert_eq!(h.get(p.id, None).unwrap().status, Status::Archived);
}

//! The conformance suite every [`Store`] implementation must pass. Each check
//! takes a fresh, empty store whose active model has dimension 4.
//! Run all with [`run_all`].

use chrono::{TimeZone, Utc};
use serde_json::json;

use super::{
    InsertBatch, KeywordQuery, ListQuery, NewMemory, Order, Source, Store, Update, VectorQuery,
};
use crate::model::{content_hash, Actor, Filter, Memory, MemoryId, MemoryKind, Provenance, Scope};
use crate::text::query_terms;

/// A message of `scope` with `content` (spoken by `name`), dated
/// 2024-01-01, for tests of stores.
pub fn memory(scope: Scope, content: &str, name: Option<&str>) -> Memory {
    let now = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
    Memory {
        id: MemoryId::now_v7(),
        scope,
        kind: MemoryKind::Message,
        content: content.into(),
        actor: Actor {
            role: Some("user".into()),
            name: name.map(Into::into),
        },
        metadata: Default::default(),
        event_time: Some(now),
        recorded_at: now,
        updated_at: now,
        provenance: Provenance {
            written_by: Some("key:conformance".into()),
            ..Provenance::default()
        },
        content_hash: content_hash(content),
        embedding_model: None,
        valid_from: None,
        valid_to: None,
        version_of: None,
        status: Default::default(),
        dedup_key: None,
        expires_at: None,
        usage: Default::default(),
        flags: Vec::new(),
    }
}

fn vector(i: usize) -> Vec<f32> {
    let mut v = vec![0.1f32; 4];
    v[i % 4] = 1.0;
    crate::embed::normalize(&mut v);
    v
}

pub(crate) fn insert(store: &dyn Store, memories: Vec<(Memory, Option<Vec<f32>>)>) {
    let batch = InsertBatch {
        memories: memories
            .into_iter()
            .map(|(memory, vector)| NewMemory { memory, vector })
            .collect(),
        sources: vec![],
        ..Default::default()
    };
    store.insert(batch).expect("insert");
}

fn keyword(store: &dyn Store, scope: &Scope, q: &str) -> Vec<MemoryId> {
    let terms = query_terms(q);
    let query = KeywordQuery {
        scope,
        filter: &Filter::default(),
        terms: &terms,
        limit: 10,
    };
    store
        .keyword_candidates(&query)
        .expect("keyword")
        .into_iter()
        .map(|c| c.id)
        .collect()
}

/// Inserted memories round-trip exactly through `get_many`.
pub fn round_trip(store: &dyn Store) {
    let mut m = memory(Scope::user("u1"), "I adopted a cat named Miso", Some("Ana"));
    m.metadata = json!({"k": "v", "n": 3}).as_object().unwrap().clone();
    m.embedding_model = Some(store.active_model().to_owned());
    let mut plain = memory(Scope::user("u1"), "no vector here", None);
    plain.provenance.written_by = None;
    crate::audit::as_actor("job:7", || {
        insert(
            store,
            vec![(m.clone(), Some(vector(0))), (plain.clone(), None)],
        )
    });
    assert_eq!(store.get_many(&[m.id]).unwrap(), vec![m.clone()]);
    // A writer left unsaid is the one in force (provenance.written_by).
    assert_eq!(
        store.get_many(&[plain.id]).unwrap()[0]
            .provenance
            .written_by
            .as_deref(),
        Some("job:7")
    );
    // Vectors come back as stored (unit length already), none for the rest.
    let got = store
        .vectors(&[m.id, plain.id, MemoryId::now_v7()])
        .unwrap();
    let v = got[0].as_ref().expect("a vector");
    assert!(v.iter().zip(vector(0)).all(|(a, b)| (a - b).abs() < 1e-6));
    assert!(got[1].is_none() && got[2].is_none());
    let dup = InsertBatch {
        memories: vec![NewMemory {
            memory: m,
            vector: None,
        }],
        sources: vec![],
        ..Default::default()
    };
    assert_eq!(
        store.insert(dup).unwrap_err().kind(),
        crate::ErrorKind::Conflict
    );
}

/// Candidate queries never leave the scope.
pub fn scope_isolation(store: &dyn Store) {
    let a = memory(
        Scope::user("alice"),
        "the secret password is swordfish",
        None,
    );
    let b = memory(Scope::user("bob"), "the secret password is swordfish", None);
    insert(
        store,
        vec![(a.clone(), Some(vector(1))), (b.clone(), Some(vector(1)))],
    );
    assert_eq!(
        keyword(store, &Scope::user("alice"), "password swordfish"),
        vec![a.id]
    );
    let v = vector(1);
    let got: Vec<MemoryId> = store
        .vector_candidates(&VectorQuery {
            scope: &Scope::user("bob"),
            filter: &Filter::default(),
            vector: &v,
            limit: 10,
        })
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(got, vec![b.id]);
    assert!(keyword(store, &Scope::user("carol"), "password").is_empty());
}

/// The speaker's name and the neighbouring turns are keyword-searchable, and
/// neighbour context follows deletes.
pub fn names_and_neighbours(store: &dyn Store) {
    let s = Scope::user("n");
    let q = memory(s.clone(), "Where should we go hiking?", Some("Maya"));
    let r = memory(s.clone(), "The Dolomites, definitely", Some("Jon"));
    let t = memory(s.clone(), "Sounds good", Some("Maya"));
    insert(
        store,
        vec![(q.clone(), None), (r.clone(), None), (t.clone(), None)],
    );
    assert!(keyword(store, &s, "Jon").contains(&r.id));
    // "hiking" is only in q's text, but r is q's neighbour.
    let hits = keyword(store, &s, "hiking");
    assert_eq!(hits.first(), Some(&q.id));
    assert!(hits.contains(&r.id));
    // "Dolomites" reaches t through r; after deleting r, it no longer does.
    assert!(keyword(store, &s, "Dolomites").contains(&t.id));
    assert_eq!(store.delete(&[r.id]).unwrap(), 1);
    assert!(keyword(store, &s, "Dolomites").is_empty());
    // q and t are now neighbours.
    assert!(keyword(store, &s, "hiking").contains(&t.id));
}

/// Conversation windows follow the message chain of one exact scope, stop at
/// its ends, and follow deletes.
pub fn windows(store: &dyn Store) {
    let s = Scope::user("w");
    let other = Scope {
        user_id: Some("w".into()),
        agent_id: None,
        session_id: Some("other".into()),
    };
    let m: Vec<Memory> = (0..5)
        .map(|i| memory(s.clone(), &format!("turn {i}"), Some("Ana")))
        .collect();
    let x = memory(other.clone(), "elsewhere", Some("Bo"));
    let mut doc = memory(s.clone(), "a document", None);
    doc.kind = MemoryKind::Document;
    let mut rows: Vec<(Memory, Option<Vec<f32>>)> =
        vec![(m[0].clone(), None), (m[1].clone(), None)];
    rows.push((x.clone(), None)); // interleaved writes of another exact scope
    rows.push((doc.clone(), None));
    rows.extend(m[2..].iter().map(|t| (t.clone(), None)));
    insert(store, rows);
    let ids = |w: &Vec<MemoryId>| w.clone();
    let got = store
        .windows(
            &[m[2].id, m[0].id, m[4].id, doc.id, x.id, MemoryId::now_v7()],
            1,
            1,
        )
        .unwrap();
    assert_eq!(ids(&got[0]), [m[1].id, m[2].id, m[3].id]);
    assert_eq!(ids(&got[1]), [m[0].id, m[1].id]);
    assert_eq!(ids(&got[2]), [m[3].id, m[4].id]);
    assert_eq!(ids(&got[3]), [doc.id]);
    assert_eq!(ids(&got[4]), [x.id]);
    assert!(got[5].is_empty());
    let wide = store.windows(&[m[2].id], 5, 0).unwrap();
    assert_eq!(ids(&wide[0]), [m[0].id, m[1].id, m[2].id]);
    store.delete(&[m[3].id]).unwrap();
    let after = store.windows(&[m[2].id], 0, 1).unwrap();
    assert_eq!(ids(&after[0]), [m[2].id, m[4].id]);
}

/// Filters on kind, metadata and event time apply to every channel.
pub fn filters(store: &dyn Store) {
    let s = Scope::user("f");
    let mut a = memory(s.clone(), "blue bicycle", None);
    a.metadata = json!({"topic": "bikes", "n": 1})
        .as_object()
        .unwrap()
        .clone();
    let mut b = memory(s.clone(), "blue boat", None);
    b.kind = MemoryKind::Document;
    b.event_time = Some(Utc.with_ymd_and_hms(2025, 6, 1, 0, 0, 0).unwrap());
    insert(
        store,
        vec![(a.clone(), Some(vector(2))), (b.clone(), Some(vector(2)))],
    );
    let terms = query_terms("blue");
    let run = |filter: Filter| {
        let kw: Vec<MemoryId> = store
            .keyword_candidates(&KeywordQuery {
                scope: &s,
                filter: &filter,
                terms: &terms,
                limit: 10,
            })
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        let v = vector(2);
        let mut vs: Vec<MemoryId> = store
            .vector_candidates(&VectorQuery {
                scope: &s,
                filter: &filter,
                vector: &v,
                limit: 10,
            })
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        let mut k2 = kw.clone();
        k2.sort();
        vs.sort();
        assert_eq!(k2, vs, "channels disagree on filter {filter:?}");
        kw
    };
    assert_eq!(
        run(Filter {
            kinds: vec![MemoryKind::Document],
            ..Default::default()
        }),
        vec![b.id]
    );
    let meta = json!({"topic": "bikes"}).as_object().unwrap().clone();
    assert_eq!(
        run(Filter {
            metadata: meta,
            ..Default::default()
        }),
        vec![a.id]
    );
    let meta = json!({"n": 1}).as_object().unwrap().clone();
    assert_eq!(
        run(Filter {
            metadata: meta,
            ..Default::default()
        }),
        vec![a.id]
    );
    let meta = json!({"n": "1"}).as_object().unwrap().clone();
    assert!(run(Filter {
        metadata: meta,
        ..Default::default()
    })
    .is_empty());
    let from = Some(Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap());
    assert_eq!(
        run(Filter {
            event_time_from: from,
            ..Default::default()
        }),
        vec![b.id]
    );
}

/// Listing pages through everything exactly once, in both orders.
pub fn listing_and_delete_scope(store: &dyn Store) {
    let s = Scope::user("l");
    let ms: Vec<Memory> = (0..7)
        .map(|i| memory(s.clone(), &format!("note {i}"), None))
        .collect();
    insert(
        store,
        ms.iter().cloned().map(|m| (m, Some(vector(3)))).collect(),
    );
    insert(store, vec![(memory(Scope::user("other"), "x", None), None)]);
    for order in [Order::Ascending, Order::Descending] {
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let filter = Filter::default();
            let page = store
                .list(&ListQuery {
                    scope: Some(&s),
                    filter: &filter,
                    cursor: cursor.as_deref(),
                    limit: 3,
                    order,
                })
                .unwrap();
            seen.extend(page.memories.iter().map(|m| m.id));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        let mut want: Vec<MemoryId> = ms.iter().map(|m| m.id).collect();
        if order == Order::Descending {
            want.reverse();
        }
        assert_eq!(seen, want);
    }
    assert_eq!(store.delete_scope(&s).unwrap(), 7);
    assert!(store.get_many(&[ms[0].id]).unwrap().is_empty());
    assert!(keyword(store, &s, "note").is_empty());
    assert_eq!(store.stats().unwrap().memories, 1);
}

/// Scopes are counted by triple, only what the filter admits, latest
/// first, inside the scope asked for, up to the limit.
pub fn scope_counts(store: &dyn Store) {
    use crate::model::Status;
    let at = |day: u32| Utc.with_ymd_and_hms(2024, 1, day, 0, 0, 0).unwrap();
    let dated = |scope: Scope, text: &str, day: u32| {
        let mut m = memory(scope, text, None);
        m.recorded_at = at(day);
        m
    };
    let s1 = Scope {
        session_id: Some("s1".into()),
        ..Scope::user("ann")
    };
    let s2 = Scope {
        session_id: Some("s2".into()),
        ..Scope::user("ann")
    };
    let bob = Scope::user("bob");
    let robot = Scope {
        agent_id: Some("robot".into()),
        ..Default::default()
    };
    let mut archived = dated(s2.clone(), "archived", 9);
    archived.status = Status::Archived;
    insert(
        store,
        vec![
            (dated(s1.clone(), "a", 2), None),
            (dated(s1.clone(), "b", 5), None),
            (dated(s2.clone(), "c", 3), None),
            (archived, None),
            (dated(bob.clone(), "d", 7), None),
            (dated(robot.clone(), "e", 1), None),
        ],
    );
    let all = Filter::default();
    let got = store.scopes(None, &all, 100).unwrap();
    let triples: Vec<(&Scope, u64)> = got.iter().map(|s| (&s.scope, s.memories)).collect();
    assert_eq!(
        triples,
        vec![(&bob, 1), (&s1, 2), (&s2, 1), (&robot, 1)],
        "active only, latest first"
    );
    assert_eq!(got[1].first_recorded, at(2));
    assert_eq!(got[1].last_recorded, at(5));
    let ann = store.scopes(Some(&Scope::user("ann")), &all, 100).unwrap();
    assert_eq!(ann.len(), 2);
    assert!(ann
        .iter()
        .all(|s| s.scope.user_id.as_deref() == Some("ann")));
    let archived_only = Filter {
        statuses: vec![Status::Archived],
        ..Default::default()
    };
    let got = store.scopes(None, &archived_only, 100).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((&got[0].scope, got[0].memories), (&s2, 1));
    assert_eq!(store.scopes(None, &all, 2).unwrap().len(), 2);
}

/// Jobs are listed newest first, by state and scope, paged by id.
pub fn job_listing(store: &dyn Store) {
    use crate::jobs::{JobState, NewJob};
    use crate::store::JobQuery;
    let t0 = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
    let job = |user: &str| NewJob {
        kind: "extract".into(),
        scope: Scope::user(user),
        payload: Default::default(),
        at: t0,
    };
    store
        .insert(InsertBatch {
            jobs: vec![job("ann"), job("bob"), job("ann")],
            ..Default::default()
        })
        .unwrap();
    let claimed = store
        .claim_job(t0, chrono::Duration::seconds(30))
        .unwrap()
        .unwrap();
    let ids =
        |q: JobQuery<'_>| -> Vec<i64> { store.jobs(&q).unwrap().iter().map(|j| j.id).collect() };
    let all = ids(JobQuery {
        limit: 10,
        ..Default::default()
    });
    assert_eq!(all.len(), 3);
    assert!(all.windows(2).all(|w| w[0] > w[1]), "newest first: {all:?}");
    assert_eq!(claimed.id, all[2], "the oldest was claimed");
    let ann = Scope::user("ann");
    assert_eq!(
        ids(JobQuery {
            scope: Some(&ann),
            limit: 10,
            ..Default::default()
        }),
        vec![all[0], all[2]]
    );
    assert_eq!(
        ids(JobQuery {
            state: Some(JobState::Running),
            limit: 10,
            ..Default::default()
        }),
        vec![claimed.id]
    );
    assert_eq!(
        ids(JobQuery {
            before: Some(all[0]),
            limit: 1,
            ..Default::default()
        }),
        vec![all[1]]
    );
}

/// Updates change content, keyword entry and vector together.
pub fn update(store: &dyn Store) {
    let s = Scope::user("up");
    let m = memory(s.clone(), "I live in Boston", None);
    insert(store, vec![(m.clone(), Some(vector(0)))]);
    let mut changed = m.clone();
    changed.content = "I live in Denver".into();
    changed.content_hash = content_hash(&changed.content);
    changed.embedding_model = Some(store.active_model().to_owned());
    store
        .update(Update::in_place(changed.clone(), Some(vector(1))))
        .unwrap();
    assert_eq!(
        store.get_many(&[m.id]).unwrap()[0].content,
        "I live in Denver"
    );
    assert!(keyword(store, &s, "Boston").is_empty());
    assert_eq!(keyword(store, &s, "Denver"), vec![m.id]);
    let v = vector(1);
    let best = store
        .vector_candidates(&VectorQuery {
            scope: &s,
            filter: &Filter::default(),
            vector: &v,
            limit: 1,
        })
        .unwrap();
    assert!((best[0].score - 1.0).abs() < 1e-5);
    let mut ghost = changed.clone();
    ghost.id = MemoryId::now_v7();
    assert_eq!(
        store
            .update(Update::in_place(ghost, None))
            .unwrap_err()
            .kind(),
        crate::ErrorKind::NotFound
    );
}

/// Versions, validity, status and exact duplicates: an update that keeps
/// its previous state leaves a version searchable only `as_of` its time
/// (by keyword and by vector, with the stored vector); status hides from
/// candidates and default listings; a taken dedup key is reported as a
/// duplicate; a delete takes versions and events with it.
pub fn lifecycle(store: &dyn Store) {
    use crate::model::{EventKind, MemoryEvent, Status};
    let s = Scope::user("u");
    let t = |m: u32| Utc.with_ymd_and_hms(2023, m, 1, 0, 0, 0).unwrap();
    let mut m = memory(s.clone(), "lives in boston", None);
    m.kind = MemoryKind::Fact;
    m.event_time = Some(t(1));
    m.dedup_key = Some("k-boston".into());
    insert(store, vec![(m.clone(), Some(vector(0)))]);
    let mut new = m.clone();
    new.content = "lives in denver".into();
    new.content_hash = content_hash(&new.content);
    new.valid_from = Some(t(6));
    new.dedup_key = Some("k-denver".into());
    let old = Memory {
        id: MemoryId::now_v7(),
        version_of: Some(m.id),
        valid_to: Some(t(6)),
        dedup_key: None,
        expires_at: None,
        usage: Default::default(),
        ..m.clone()
    };
    let event = MemoryEvent {
        memory_id: m.id,
        at: t(6),
        kind: EventKind::Revised,
        origin: "api".into(),
        reason: Some("moved".into()),
        request_id: None,
        detail: Default::default(),
    };
    store
        .update(Update {
            memory: new.clone(),
            vector: Some(vector(1)),
            previous: Some(old.clone()),
            events: vec![event.clone()],
            job_step: None,
            jobs: Vec::new(),
            expected: None,
        })
        .unwrap();
    let search = |filter: &Filter, q: &str, v: usize| {
        let terms = query_terms(q);
        let k: Vec<MemoryId> = store
            .keyword_candidates(&KeywordQuery {
                scope: &s,
                filter,
                terms: &terms,
                limit: 10,
            })
            .unwrap()
            .iter()
            .map(|c| c.id)
            .collect();
        let vq = vector(v);
        let vs: Vec<MemoryId> = store
            .vector_candidates(&VectorQuery {
                scope: &s,
                filter,
                vector: &vq,
                limit: 10,
            })
            .unwrap()
            .iter()
            .map(|c| c.id)
            .collect();
        (k, vs)
    };
    let now = Filter::default();
    assert_eq!(
        search(&now, "lives boston denver", 0),
        (vec![m.id], vec![m.id])
    );
    let then = Filter {
        as_of: Some(t(3)),
        ..Default::default()
    };
    assert_eq!(
        search(&then, "lives boston denver", 0),
        (vec![old.id], vec![old.id]),
        "the version keeps its text and its vector"
    );
    let before = Filter {
        as_of: Some(t(1) - chrono::Duration::days(1)),
        ..Default::default()
    };
    assert_eq!(search(&before, "lives", 0), (vec![], vec![]));
    let every = Filter {
        all_versions: true,
        ..Default::default()
    };
    assert_eq!(search(&every, "lives", 0).0.len(), 2);
    let (versions, events) = store.history(m.id).unwrap();
    let ids: Vec<MemoryId> = versions.iter().map(|v| v.id).collect();
    assert_eq!(ids, vec![old.id, m.id]);
    assert_eq!(
        versions[0],
        Memory {
            embedding_model: Some(store.active_model().to_owned()),
            ..old.clone()
        },
        "the version is stored as given, with the vector it had"
    );
    assert_eq!(events, vec![event]);

    // Status hides from candidates and default listings.
    let mut gone = new.clone();
    gone.status = Status::Deleted;
    store.update(Update::in_place(gone, None)).unwrap();
    assert_eq!(search(&now, "lives", 0), (vec![], vec![]));
    let list = |filter: &Filter| {
        store
            .list(&ListQuery {
                scope: Some(&s),
                filter,
                cursor: None,
                limit: 10,
                order: Order::Ascending,
            })
            .unwrap()
            .memories
            .len()
    };
    assert_eq!(list(&now), 0);
    let deleted = Filter {
        statuses: vec![Status::Deleted],
        ..Default::default()
    };
    assert_eq!(list(&deleted), 1);
    assert_eq!(search(&deleted, "lives denver", 1).1, vec![m.id]);

    // Exact duplicates.
    let mut dup = memory(s.clone(), "lives in denver", None);
    dup.dedup_key = Some("k-denver".into());
    let outcome = store
        .insert(InsertBatch {
            memories: vec![NewMemory {
                memory: dup,
                vector: Some(vector(1)),
            }],
            sources: vec![],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(outcome.duplicates, vec![(0, m.id)]);
    assert_eq!(
        store
            .find_keys(&["k-denver".into(), "k-boston".into()])
            .unwrap(),
        vec![Some(m.id), None]
    );
    assert_eq!(
        store.history(m.id).unwrap().1.len(),
        2,
        "the merge is logged"
    );

    // A delete takes the versions and the log along.
    assert_eq!(store.delete(&[m.id]).unwrap(), 1);
    assert_eq!(store.history(m.id).unwrap(), (vec![], vec![]));
    assert!(store.get_many(&[old.id]).unwrap().is_empty());
    assert_eq!(search(&every, "lives", 0), (vec![], vec![]));
}

/// The job queue: a job enqueued with a write is claimed once ready, not
/// while leased, again once its lease lapses (its worker died); a job step
/// is applied once (a repeat fails and writes nothing); erasing a scope
/// cancels its jobs.
pub fn jobs(store: &dyn Store) {
    use crate::jobs::{JobState, JobStep, JobUpdate, NewJob};
    let s = Scope::user("u");
    let t0 = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
    let secs = chrono::Duration::seconds;
    let mut payload = serde_json::Map::new();
    payload.insert("memories".into(), json!(["a"]));
    store
        .insert(InsertBatch {
            memories: vec![NewMemory {
                memory: memory(s.clone(), "turn one", None),
                vector: Some(vector(0)),
            }],
            jobs: vec![NewJob {
                kind: "extract".into(),
                scope: s.clone(),
                payload: payload.clone(),
                at: t0,
            }],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(store.job_counts().unwrap().pending, 1);
    assert!(
        store.claim_job(t0 - secs(1), secs(30)).unwrap().is_none(),
        "not ready"
    );
    let job = store.claim_job(t0, secs(30)).unwrap().expect("ready");
    assert_eq!(
        (
            job.state,
            job.attempts,
            job.kind.as_str(),
            &job.payload,
            &job.scope
        ),
        (JobState::Running, 1, "extract", &payload, &s)
    );
    assert!(
        store.claim_job(t0 + secs(10), secs(30)).unwrap().is_none(),
        "leased"
    );
    let again = store
        .claim_job(t0 + secs(31), secs(30))
        .unwrap()
        .expect("lease lapsed");
    assert_eq!((again.id, again.attempts), (job.id, 2));

    // Steps apply once.
    let step = |n| {
        store.insert(InsertBatch {
            memories: vec![NewMemory {
                memory: memory(s.clone(), &format!("fact from step {n}"), None),
                vector: Some(vector(1)),
            }],
            job_step: Some(JobStep {
                job: job.id,
                step: n,
            }),
            ..Default::default()
        })
    };
    step(1).unwrap();
    assert_eq!(step(1).unwrap_err().kind(), crate::ErrorKind::Conflict);
    assert_eq!(
        step(3).unwrap_err().kind(),
        crate::ErrorKind::Conflict,
        "no skipping"
    );
    step(2).unwrap();
    assert_eq!(
        store.stats().unwrap().memories,
        3,
        "the repeat wrote nothing"
    );
    assert_eq!(store.job(job.id).unwrap().unwrap().step, 2);

    let mut cost = serde_json::Map::new();
    cost.insert("llm_calls".into(), json!(2));
    store
        .update_job(
            job.id,
            JobUpdate {
                state: Some(JobState::Done),
                plan: Some(json!([{"op": "add"}])),
                cost: Some(cost.clone()),
                ..Default::default()
            },
            t0 + secs(40),
        )
        .unwrap();
    let done = store.job(job.id).unwrap().unwrap();
    assert_eq!(
        (done.state, done.lease_until, &done.cost),
        (JobState::Done, None, &cost)
    );
    assert_eq!(done.plan, Some(json!([{"op": "add"}])));
    assert!(store.claim_job(t0 + secs(100), secs(30)).unwrap().is_none());
    assert_eq!(store.job_counts().unwrap().done, 1);
    // Pruning takes finished jobs last changed before the cut-off only.
    assert_eq!(store.prune_jobs(done.updated_at).unwrap(), 0);
    let later = done.updated_at + chrono::Duration::milliseconds(1);
    assert_eq!(store.prune_jobs(later).unwrap(), 1);
    assert!(store.job(job.id).unwrap().is_none());

    // Erasing the scope cancels its pending jobs.
    store
        .insert(InsertBatch {
            jobs: vec![NewJob {
                kind: "extract".into(),
                scope: s.clone(),
                payload,
                at: t0,
            }],
            ..Default::default()
        })
        .unwrap();
    store.delete_scope(&s).unwrap();
    assert_eq!(store.job_counts().unwrap(), Default::default());
    assert!(store.job(job.id).unwrap().is_none());
}

/// Feedback, expiry and the rejection record: usage is written by an update
/// and served to ranking from memory; `expired` finds active memories past
/// their expiry, soonest first; rejections are listed by scope and erased
/// with it; merge events in a batch are logged.
pub fn forgetting(store: &dyn Store) {
    use crate::model::{EventKind, MemoryEvent, Status, Usage};
    use crate::policy::{Admission, Rejection};
    let s = Scope::user("u");
    let t = |d: u32| Utc.with_ymd_and_hms(2024, 1, d, 0, 0, 0).unwrap();
    let mut a = memory(s.clone(), "alpha", None);
    a.expires_at = Some(t(3));
    let mut b = memory(s.clone(), "beta", None);
    b.expires_at = Some(t(2));
    let c = memory(s.clone(), "gamma", None);
    let mut d = memory(Scope::user("other"), "delta", None);
    d.expires_at = Some(t(1));
    d.status = Status::Archived;
    insert(
        store,
        vec![
            (a.clone(), Some(vector(0))),
            (b.clone(), Some(vector(1))),
            (c.clone(), Some(vector(2))),
            (d.clone(), Some(vector(3))),
        ],
    );
    let ids = |ms: Vec<Memory>| ms.into_iter().map(|m| m.id).collect::<Vec<_>>();
    assert_eq!(ids(store.expired(t(2), 10).unwrap()), vec![b.id]);
    assert_eq!(ids(store.expired(t(9), 10).unwrap()), vec![b.id, a.id]);
    assert_eq!(ids(store.expired(t(9), 1).unwrap()), vec![b.id]);
    // A default listing at t(9) skips the expired ones before any archive.
    let filter = Filter {
        now: Some(t(9)),
        ..Filter::default()
    };
    let page = store
        .list(&ListQuery {
            scope: Some(&s),
            filter: &filter,
            cursor: None,
            limit: 10,
            order: Order::Ascending,
        })
        .unwrap();
    assert_eq!(ids(page.memories), vec![c.id]);

    assert_eq!(store.usage(&[c.id]).unwrap(), vec![Usage::default()]);
    let usage = Usage {
        used: 2,
        helpful: 1,
        wrong: 0,
        reinforced_at: Some(t(5)),
    };
    let mut c2 = c.clone();
    c2.usage = usage;
    store.update(Update::in_place(c2, None)).unwrap();
    assert_eq!(
        store.usage(&[a.id, c.id]).unwrap(),
        vec![Usage::default(), usage]
    );
    assert_eq!(store.get_many(&[c.id]).unwrap()[0].usage, usage);

    let admission = Admission {
        score: 0.1,
        utility: 0.2,
        novelty: 1.0,
        confidence: 0.5,
        threshold: 0.3,
        admitted: false,
    };
    let refused = |scope: &Scope, text: &str| Rejection {
        seq: 0,
        scope: scope.clone(),
        at: t(4),
        request_id: None,
        kind: MemoryKind::Fact,
        content: text.into(),
        actor: Actor::default(),
        event_time: None,
        admission,
    };
    let merged = MemoryEvent {
        memory_id: c.id,
        at: t(4),
        kind: EventKind::Merged,
        origin: "dedup".into(),
        reason: Some("near duplicate".into()),
        request_id: None,
        detail: Default::default(),
    };
    store
        .insert(InsertBatch {
            rejections: vec![refused(&s, "meh"), refused(&Scope::user("other"), "hmm")],
            events: vec![merged.clone()],
            ..Default::default()
        })
        .unwrap();
    let mine = store.rejections(Some(&s), 0, 10).unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].content, "meh");
    assert_eq!(mine[0].admission, admission);
    let all = store.rejections(None, 0, 10).unwrap();
    assert_eq!(all.len(), 2);
    assert!(store.rejections(None, all[0].seq, 10).unwrap().len() == 1);
    assert_eq!(store.history(c.id).unwrap().1, vec![merged]);
    store.delete_scope(&s).unwrap();
    assert!(store.rejections(Some(&s), 0, 10).unwrap().is_empty());
    assert_eq!(store.rejections(None, 0, 10).unwrap().len(), 1);
    assert_eq!(store.usage(&[c.id]).unwrap(), vec![Usage::default()]);
}

/// Erasure: `derived_from_any` finds what was derived (versions too);
/// deleting a chunk deletes its whole input and stored text; `compact`
/// leaves the store readable.
pub fn erasure(store: &dyn Store) {
    let s = Scope::user("u");
    let turn = memory(s.clone(), "a turn", None);
    let mut fact = memory(s.clone(), "a fact", None);
    fact.kind = MemoryKind::Fact;
    fact.provenance.derived_from = vec![turn.id];
    let other = memory(s.clone(), "unrelated", None);
    let source = Source {
        id: MemoryId::now_v7(),
        scope: s.clone(),
        content: "part one part two".into(),
    };
    let chunks: Vec<Memory> = ["part one", "part two"]
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut c = memory(s.clone(), t, None);
            c.kind = MemoryKind::Chunk;
            c.provenance.source_id = Some(source.id);
            c.provenance.chunk_index = Some(i as u32);
            c.provenance.chunk_count = Some(2);
            c
        })
        .collect();
    store
        .insert(InsertBatch {
            memories: [&turn, &fact, &other, &chunks[0], &chunks[1]]
                .into_iter()
                .map(|m| NewMemory {
                    memory: m.clone(),
                    vector: Some(vector(0)),
                })
                .collect(),
            sources: vec![source.clone()],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(store.derived_from_any(&[turn.id]).unwrap(), vec![fact.id]);
    assert!(store.derived_from_any(&[other.id]).unwrap().is_empty());
    assert_eq!(store.delete(&[chunks[1].id]).unwrap(), 2, "the whole input");
    assert!(store.source(source.id).unwrap().is_none());
    assert!(store.get_many(&[chunks[0].id]).unwrap().is_empty());
    assert_eq!(store.delete(&[turn.id, fact.id]).unwrap(), 2);
    store.compact().unwrap();
    // Every write was audited, by id, and the chain holds.
    let log = store.audit(0, 100).unwrap();
    let actions: Vec<(&str, String)> = log
        .iter()
        .map(|e| (e.action.as_str(), e.target.clone()))
        .collect();
    assert!(actions.contains(&("add", turn.id.to_string())));
    assert!(actions.contains(&("erase", chunks[0].id.to_string())));
    assert!(actions.contains(&("erase", fact.id.to_string())));
    assert!(log
        .windows(2)
        .all(|w| w[1].seq == w[0].seq + 1 && w[1].prev_hash == w[0].hash));
    assert!(store.verify_audit().unwrap().ok);
    assert_eq!(store.audit(log.len() as i64, 10).unwrap().len(), 0);
    assert_eq!(store.get_many(&[other.id]).unwrap().len(), 1);
    assert_eq!(keyword(store, &s, "unrelated"), vec![other.id]);
    assert!(keyword(store, &s, "part").is_empty());
}

/// Grants: stored and listed to their grantee (user or agent) and of their
/// owner scope; revocation is recorded once; erasing a memory or a user
/// takes their grants with it.
pub fn grants(store: &dyn Store) {
    use crate::sharing::{Grant, Grantee};
    use crate::store::GrantQuery;
    let m = memory(Scope::user("ana"), "shared note", None);
    insert(store, vec![(m.clone(), None)]);
    let now = Utc.with_ymd_and_hms(2024, 1, 2, 0, 0, 0).unwrap();
    let grant = |memory_id, scope: Scope, user: Option<&str>, agent: Option<&str>| Grant {
        id: uuid::Uuid::now_v7(),
        memory_id,
        scope,
        grantee: Grantee {
            user_id: user.map(Into::into),
            agent_id: agent.map(Into::into),
        },
        created_at: now,
        created_by: "local".into(),
        expires_at: Some(now + chrono::Duration::days(1)),
        revoked_at: None,
    };
    let one = grant(Some(m.id), m.scope.clone(), Some("bo"), None);
    let all = grant(None, Scope::user("ana"), None, Some("helper"));
    store.put_grant(&one).unwrap();
    store.put_grant(&all).unwrap();
    let q = |to: Option<&Scope>, of: Option<&Scope>, include_revoked| {
        store
            .grants(&GrantQuery {
                id: None,
                to,
                of,
                include_revoked,
                limit: 100,
            })
            .unwrap()
    };
    assert_eq!(q(Some(&Scope::user("bo")), None, false), vec![one.clone()]);
    let helper_for_bo = Scope {
        user_id: Some("bo".into()),
        agent_id: Some("helper".into()),
        session_id: None,
    };
    assert_eq!(
        q(Some(&helper_for_bo), None, false),
        vec![one.clone(), all.clone()],
        "a reader is the grantee through its user or its agent"
    );
    assert_eq!(q(None, Some(&Scope::user("ana")), false).len(), 2);
    assert!(q(None, Some(&Scope::user("bo")), false).is_empty());
    let revoked = store.revoke_grant(one.id, now).unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(now));
    let later = now + chrono::Duration::hours(1);
    assert_eq!(
        store
            .revoke_grant(one.id, later)
            .unwrap()
            .unwrap()
            .revoked_at,
        Some(now),
        "revoking twice keeps the first time"
    );
    assert!(store
        .revoke_grant(uuid::Uuid::now_v7(), now)
        .unwrap()
        .is_none());
    assert!(q(Some(&Scope::user("bo")), None, false).is_empty());
    assert_eq!(q(Some(&Scope::user("bo")), None, true), vec![revoked]);
    store.delete(&[m.id]).unwrap();
    assert_eq!(
        q(None, None, true),
        vec![all],
        "the memory's grant went with it"
    );
    store.delete_scope(&Scope::user("ana")).unwrap();
    assert!(q(None, None, true).is_empty(), "the user's grants went too");
}

/// A change computed from a state that another change replaced is refused
/// (see `Update::expected`), and changes nothing.
pub fn concurrent_changes(store: &dyn Store) {
    let s = Scope::user("ana");
    let m = memory(s.clone(), "the spare key is under the mat", None);
    insert(store, vec![(m.clone(), Some(vector(0)))]);
    let read = store.get_many(&[m.id]).unwrap().remove(0);
    let mut first = read.clone();
    first.usage.used += 1;
    store
        .update(Update {
            expected: Some(Box::new(read.clone())),
            ..Update::in_place(first.clone(), None)
        })
        .unwrap();
    let mut second = read.clone();
    second.usage.helpful += 1;
    let err = store
        .update(Update {
            expected: Some(Box::new(read)),
            ..Update::in_place(second, None)
        })
        .unwrap_err();
    assert!(err.is_concurrent_change(), "{err:?}");
    let stored = store.get_many(&[m.id]).unwrap().remove(0);
    assert_eq!(
        stored.usage, first.usage,
        "the refused change left no trace"
    );
    // From the state now stored, it applies.
    let mut third = stored.clone();
    third.usage.helpful += 1;
    store
        .update(Update {
            expected: Some(Box::new(stored)),
            ..Update::in_place(third.clone(), None)
        })
        .unwrap();
    assert_eq!(store.get_many(&[m.id]).unwrap()[0].usage, third.usage);
}

/// An idempotent request commits once: a second attempt with the same key
/// (another server retrying it at the same time) is refused once the first
/// committed, and its answer does not replace the first's.
pub fn idempotent_attempts(store: &dyn Store) {
    let s = Scope::user("ana");
    let mark = |attempt: &str| crate::audit::RequestMark {
        key: "retried".into(),
        fingerprint: "f".into(),
        attempt: attempt.into(),
    };
    let first = memory(s.clone(), "the boiler was serviced in May", None);
    crate::audit::in_request(Some(mark("a1")), || {
        insert(store, vec![(first.clone(), Some(vector(0)))]);
        // More writes of the same attempt are fine.
        let mut m = store.get_many(&[first.id]).unwrap().remove(0);
        m.usage.used += 1;
        store.update(Update::in_place(m, None)).unwrap();
    });
    let second = memory(s.clone(), "the boiler was serviced in May", None);
    let err = crate::audit::in_request(Some(mark("a2")), || {
        store
            .insert(InsertBatch {
                memories: vec![NewMemory {
                    memory: second.clone(),
                    vector: Some(vector(0)),
                }],
                ..Default::default()
            })
            .unwrap_err()
    });
    assert!(err.is_request_committed_elsewhere(), "{err:?}");
    assert!(store.get_many(&[second.id]).unwrap().is_empty());
    store.record_answer(&mark("a1"), 200, b"first").unwrap();
    store.record_answer(&mark("a2"), 409, b"second").unwrap();
    let record = store.request("retried").unwrap().unwrap();
    assert!(record.committed);
    assert_eq!(record.attempt.as_deref(), Some("a1"));
    assert_eq!(record.answer, Some((200, b"first".to_vec())));
}

/// Fills `store` with one of everything a store keeps: a conversation, a
/// chunked input and its source, a fact derived from a turn, a revised
/// memory with its earlier version, usage and flags, expiry, an event, a
/// rejection, a finished and a pending job, a live and a revoked grant, and
/// the audit entries all of that wrote.
pub fn fill_for_copy(store: &dyn Store) {
    use crate::jobs::{JobState, JobUpdate, NewJob};
    use crate::model::{EventKind, MemoryEvent};
    use crate::policy::{Admission, Rejection};
    use crate::sharing::{Grant, Grantee};
    let s = Scope::user("ana");
    let t = |d: u32| Utc.with_ymd_and_hms(2024, 3, d, 9, 0, 0).unwrap();
    let turns: Vec<Memory> = [
        "I adopted a beagle",
        "What is its name?",
        "Pixel, after the phone",
    ]
    .iter()
    .enumerate()
    .map(|(i, text)| {
        let mut m = memory(
            s.clone(),
            text,
            Some(if i % 2 == 0 { "Ana" } else { "Bot" }),
        );
        m.event_time = Some(t(i as u32 + 1));
        m
    })
    .collect();
    let source = Source {
        id: MemoryId::now_v7(),
        scope: s.clone(),
        content: "Chapter one. Chapter two.".into(),
    };
    let chunks: Vec<Memory> = ["Chapter one.", "Chapter two."]
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let mut m = memory(s.clone(), text, None);
            m.kind = MemoryKind::Document;
            m.provenance.source_id = Some(source.id);
            m.provenance.chunk_index = Some(i as u32);
            m.provenance.chunk_count = Some(2);
            m
        })
        .collect();
    let mut fact = memory(s.clone(), "Ana has a beagle named Pixel", None);
    fact.kind = MemoryKind::Fact;
    fact.provenance.derived_from = vec![turns[0].id, turns[2].id];
    fact.dedup_key = Some("beagle-pixel".into());
    fact.flags = vec!["instruction".into()];
    fact.expires_at = Some(t(28));
    fact.metadata = json!({"confidence": 0.9}).as_object().unwrap().clone();
    let mut payload = serde_json::Map::new();
    payload.insert("memories".into(), json!([turns[0].id.to_string()]));
    let job = |at| NewJob {
        kind: "extract".into(),
        scope: s.clone(),
        payload: payload.clone(),
        at,
    };
    let mut memories: Vec<(Memory, Option<Vec<f32>>)> = turns
        .iter()
        .chain(&chunks)
        .enumerate()
        .map(|(i, m)| (m.clone(), (i != 3).then(|| vector(i))))
        .collect();
    memories.push((fact.clone(), Some(vector(2))));
    crate::audit::as_actor("key:abc", || {
        store
            .insert(InsertBatch {
                memories: memories
                    .into_iter()
                    .map(|(memory, vector)| NewMemory { memory, vector })
                    .collect(),
                sources: vec![source.clone()],
                jobs: vec![job(t(1)), job(t(2))],
                rejections: vec![Rejection {
                    seq: 0,
                    scope: s.clone(),
                    at: t(3),
                    request_id: None,
                    kind: MemoryKind::Fact,
                    content: "meh".into(),
                    actor: Actor::default(),
                    event_time: None,
                    admission: Admission {
                        score: 0.1,
                        utility: 0.2,
                        novelty: 1.0,
                        confidence: 0.5,
                        threshold: 0.3,
                        admitted: false,
                    },
                }],
                ..Default::default()
            })
            .unwrap()
    });
    // A revision keeps the earlier version; feedback counts.
    let mut revised = store.get_many(&[fact.id]).unwrap().remove(0);
    let previous = Memory {
        id: MemoryId::now_v7(),
        version_of: Some(fact.id),
        valid_to: Some(t(10)),
        dedup_key: None,
        expires_at: None,
        usage: Default::default(),
        ..revised.clone()
    };
    revised.content = "Ana has a beagle named Pixel, two years old".into();
    revised.content_hash = content_hash(&revised.content);
    revised.valid_from = Some(t(10));
    revised.updated_at = t(10);
    revised.usage.used = 3;
    revised.usage.helpful = 1;
    revised.usage.reinforced_at = Some(t(11));
    store
        .update(Update {
            memory: revised,
            vector: Some(vector(3)),
            previous: Some(previous),
            events: vec![MemoryEvent {
                memory_id: fact.id,
                at: t(10),
                kind: EventKind::Revised,
                origin: "api".into(),
                reason: Some("more detail".into()),
                request_id: None,
                detail: json!({"by": "test"}).as_object().unwrap().clone(),
            }],
            job_step: None,
            jobs: Vec::new(),
            expected: None,
        })
        .unwrap();
    // One job done, one left pending.
    let claimed = store
        .claim_job(t(5), chrono::Duration::seconds(30))
        .unwrap()
        .expect("a ready job");
    store
        .update_job(
            claimed.id,
            JobUpdate {
                state: Some(JobState::Done),
                plan: Some(json!({"facts": 1})),
                cost: Some(json!({"llm_calls": 2}).as_object().unwrap().clone()),
                ..Default::default()
            },
            t(5),
        )
        .unwrap();
    let grant = |user: &str| Grant {
        id: uuid::Uuid::now_v7(),
        memory_id: None,
        scope: s.clone(),
        grantee: Grantee {
            user_id: Some(user.into()),
            agent_id: None,
        },
        created_at: t(6),
        created_by: "key:abc".into(),
        expires_at: None,
        revoked_at: None,
    };
    store.put_grant(&grant("bob")).unwrap();
    let revoked = grant("eve");
    store.put_grant(&revoked).unwrap();
    store.revoke_grant(revoked.id, t(7)).unwrap();
}

/// Everything `store` holds, as [`super::transfer::Store::export`] pages it,
/// with what a copy numbers anew (job ids, rejection sequence numbers)
/// blanked.
pub fn exported(store: &dyn Store) -> Vec<String> {
    use super::transfer::{Record, Table};
    let mut out = Vec::new();
    for table in Table::ALL {
        let mut after = 0;
        loop {
            let page = store.export(table, after, 2).unwrap();
            if page.records.is_empty() {
                break;
            }
            assert!(page.next != after, "{table:?}: the cursor moves");
            after = page.next;
            for r in page.records {
                out.push(match r {
                    Record::Source(s) => format!("source {s:?}"),
                    Record::Memory(m) => format!("memory {:?} {:?}", m.memory, m.vector),
                    Record::Event(e) => format!("event {e:?}"),
                    Record::Rejection(mut r) => {
                        r.seq = 0;
                        format!("rejection {r:?}")
                    }
                    Record::Job(mut j) => {
                        j.id = 0;
                        format!("job {j:?}")
                    }
                    Record::Grant(g) => format!("grant {g:?}"),
                    Record::Audit(a) => format!("audit {a:?}"),
                });
            }
        }
    }
    out
}

/// A copy is lossless: `from` (filled by [`fill_for_copy`]) copied to `via`
/// and back to `back` exports the same records, and every audit chain
/// verifies. A copy resumes after an interruption without writing twice,
/// and refuses a destination holding other memories.
pub fn copy_round_trip(from: &dyn Store, via: &dyn Store, back: &dyn Store) {
    use super::transfer::{copy, Progress, Table};
    fill_for_copy(from);
    let original = exported(from);
    assert!(original.iter().any(|r| r.starts_with("audit ")));
    // Interrupted after the memories' first page: resumes from there.
    let source = from.store_id().unwrap();
    assert_eq!(from.store_id().unwrap(), source, "a store keeps its id");
    assert_ne!(via.store_id().unwrap(), source);
    let progress = |table, cursor| Progress {
        source: source.clone(),
        table,
        cursor,
    };
    let first = from.export(Table::Sources, 0, 100).unwrap();
    via.import(first.records, &progress(Table::Sources, first.next))
        .unwrap();
    let page = from.export(Table::Memories, 0, 2).unwrap();
    via.import(page.records, &progress(Table::Memories, page.next))
        .unwrap();
    let report = copy(from, via, 3, |_, _| {}).unwrap();
    assert!(report.resumed);
    assert_eq!(exported(via), original, "copied once, nothing twice");
    assert!(via.verify_audit().unwrap().ok);
    let report = copy(via, back, 1000, |_, _| {}).unwrap();
    assert!(!report.resumed);
    assert_eq!(report.copied["memories"], 7);
    assert_eq!(exported(back), original);
    assert!(back.verify_audit().unwrap().ok);
    // Search works on the copy: its indexes were built as it wrote.
    let s = Scope::user("ana");
    let found = keyword(back, &s, "beagle Pixel");
    assert!(!found.is_empty());
    // A store with memories of its own is not a copy's destination, even
    // one that holds a copy from another source.
    let err = copy(back, via, 10, |_, _| {}).unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::Conflict);
    assert_eq!(
        copy(from, from, 10, |_, _| {}).unwrap_err().kind(),
        crate::ErrorKind::InvalidInput
    );
}

/// Runs every check, each on a fresh store from `make`.
pub fn run_all(make: &dyn Fn() -> Box<dyn Store>) {
    round_trip(make().as_ref());
    scope_isolation(make().as_ref());
    names_and_neighbours(make().as_ref());
    windows(make().as_ref());
    filters(make().as_ref());
    listing_and_delete_scope(make().as_ref());
    scope_counts(make().as_ref());
    update(make().as_ref());
    lifecycle(make().as_ref());
    jobs(make().as_ref());
    job_listing(make().as_ref());
    forgetting(make().as_ref());
    erasure(make().as_ref());
    grants(make().as_ref());
    concurrent_changes(make().as_ref());
    idempotent_attempts(make().as_ref());
    copy_round_trip(make().as_ref(), make().as_ref(), make().as_ref());
}

#[cfg(test)]
mod tests {
    use crate::store::{SqliteStore, SqliteStoreOptions, Store};

    #[test]
    fn sqlite_store_conforms() {
        let dir = tempfile::tempdir().unwrap();
        let n = std::sync::atomic::AtomicUsize::new(0);
        super::run_all(&|| {
            let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = dir.path().join(format!("c{i}.db"));
            Box::new(SqliteStore::open(SqliteStoreOptions::new(path, "test-model", 4)).unwrap())
                as Box<dyn Store>
        });
    }
}

//! The engine end to end with the real model and a real SQLite file.

use hippo::{
    AddItem, Context, ErrorKind, Filter, MemoryKind, MemoryPatch, Order, Scope, SearchRequest,
};

use super::common::{engine, engine_with, minilm};

#[test]
fn add_then_search_by_meaning_keyword_and_speaker() {
    let dir = tempfile::tempdir().unwrap();
    let h = engine(dir.path(), minilm());
    let s = Scope::user("ana");
    h.add(vec![
        AddItem::message(
            s.clone(),
            "user",
            Some("Ana"),
            "I adopted a kitten last month, her name is Miso.",
        ),
        AddItem::message(
            s.clone(),
            "assistant",
            Some("Bot"),
            "That's lovely! How is she settling in?",
        ),
        AddItem::message(
            s.clone(),
            "user",
            Some("Ana"),
            "My brother Tom is visiting from Lisbon next week.",
        ),
        AddItem::message(
            s.clone(),
            "user",
            Some("Ana"),
            "I started training for a half marathon.",
        ),
    ])
    .unwrap();
    let top = |q: &str| {
        h.search(&SearchRequest::new(s.clone(), q)).unwrap().hits[0]
            .memory
            .content
            .clone()
    };
    assert!(
        top("what pet does she have?").contains("Miso"),
        "semantic match"
    );
    assert!(top("Lisbon").contains("Lisbon"), "keyword match");
    assert!(top("running race preparation").contains("marathon"));
    let by_bot = h.search(&SearchRequest::new(s.clone(), "Bot")).unwrap();
    assert_eq!(
        by_bot.hits[0].memory.actor.name.as_deref(),
        Some("Bot"),
        "speaker name is searchable"
    );
    let hit = &h.search(&SearchRequest::new(s, "Miso")).unwrap().hits[0];
    assert!(
        hit.scores.keyword.is_some() && hit.scores.vector.is_some(),
        "per-channel scores are returned"
    );
}

#[test]
fn long_documents_are_chunked_with_a_source() {
    let dir = tempfile::tempdir().unwrap();
    let h = engine(dir.path(), minilm());
    let s = Scope::user("doc");
    let text: String = (0..120)
        .map(|i| format!("Sentence number {i} talks about topic {i}. "))
        .collect();
    let ms = h.add(vec![AddItem::text(s.clone(), text.clone())]).unwrap();
    assert!(ms.len() > 1, "a ~1500-token text needs several chunks");
    let source = ms[0]
        .provenance
        .source_id
        .expect("chunks name their source");
    for (i, m) in ms.iter().enumerate() {
        assert_eq!(m.kind, MemoryKind::Chunk);
        assert_eq!(m.provenance.source_id, Some(source));
        assert_eq!(m.provenance.chunk_index, Some(i as u32));
        assert!(hippo::Embedder::count_tokens(minilm().as_ref(), &m.content) <= 256);
    }
    assert_eq!(h.store().source(source).unwrap().unwrap().content, text);
    let hits = h.search(&SearchRequest::new(s, "topic 97")).unwrap();
    assert!(hits.hits[0].memory.content.contains("topic 97"));
}

#[test]
fn a_long_text_is_one_result_however_many_of_its_chunks_match() {
    let dir = tempfile::tempdir().unwrap();
    let h = engine(dir.path(), minilm());
    let s = Scope::user("doc");
    // Every chunk of the long text is about gardening; so are the notes.
    let text: String = (0..150)
        .map(|i| format!("Gardening tip {i}: water the tomato plants early. "))
        .collect();
    let chunks = h.add(vec![AddItem::text(s.clone(), text)]).unwrap();
    assert!(chunks.len() >= 4, "{}", chunks.len());
    let notes: Vec<AddItem> = [
        "Ana started gardening this spring; her tomato plants are knee high.",
        "The community garden lends tools for tomato gardening on Saturdays.",
        "Bo asked which fertiliser suits tomato plants in clay soil.",
        "We bought six tomato plants at the market for the balcony garden.",
        "Gardening club meets Tuesday to swap seedlings, tomatoes included.",
        "Cherry tomato plants need staking before the summer storms.",
        "My neighbour's gardening blog covers blight on tomato leaves.",
        "Grandpa's tomato plants won a prize for gardening in 1998.",
    ]
    .iter()
    .map(|t| AddItem::text(s.clone(), *t))
    .collect();
    h.add(notes).unwrap();
    let mut req = SearchRequest::new(s, "gardening tips for tomato plants");
    req.context = hippo::Context::NONE;
    let hits = h.search(&req).unwrap().hits;
    let from_text = hits
        .iter()
        .filter(|hit| hit.memory.provenance.source_id.is_some())
        .count();
    assert_eq!(
        from_text, 1,
        "one result for the text, the rest for other memories"
    );
    assert_eq!(hits.len(), 9, "the text and the eight notes");
}

#[test]
fn update_delete_and_erase() {
    let dir = tempfile::tempdir().unwrap();
    let h = engine(dir.path(), minilm());
    let s = Scope::user("u");
    let m = h
        .add(vec![AddItem::text(s.clone(), "I live in Boston")])
        .unwrap()
        .remove(0);
    let patched = h
        .update(
            m.id,
            Some(&s),
            MemoryPatch {
                content: Some("I live in Denver".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(patched.recorded_at, m.recorded_at);
    let hits = h
        .search(&SearchRequest::new(s.clone(), "Which city do I live in?"))
        .unwrap()
        .hits;
    assert_eq!(hits[0].memory.content, "I live in Denver");
    assert_eq!(
        h.get(m.id, Some(&Scope::user("other"))).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    h.delete(m.id, Some(&s)).unwrap();
    assert_eq!(h.get(m.id, None).unwrap().status, hippo::Status::Deleted);
    h.erase(m.id, Some(&s)).unwrap();
    assert_eq!(h.get(m.id, None).unwrap_err().kind(), ErrorKind::NotFound);
    h.add(vec![
        AddItem::text(s.clone(), "a"),
        AddItem::text(s.clone(), "b"),
    ])
    .unwrap();
    assert_eq!(h.delete_scope(&s).unwrap(), 2);
    assert!(h
        .list(Some(&s), &Filter::default(), None, 10, Order::Ascending)
        .unwrap()
        .memories
        .is_empty());
}

#[test]
fn bad_input_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let h = engine(dir.path(), minilm());
    let s = Scope::user("v");
    let good = AddItem::text(s.clone(), "fine");
    let empty = AddItem::text(s.clone(), "   ");
    let err = h.add(vec![good.clone(), empty]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.message().starts_with("item 1"));
    let no_scope = AddItem::text(Scope::default(), "x");
    assert_eq!(
        h.add(vec![no_scope]).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    let mut req = SearchRequest::new(s.clone(), "x");
    req.top_k = 101;
    assert_eq!(h.search(&req).unwrap_err().kind(), ErrorKind::InvalidInput);
    assert_eq!(
        h.stats().unwrap().memories,
        0,
        "a rejected batch stores nothing"
    );
}

#[test]
fn reopening_restores_the_vector_index_from_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let h = engine(dir.path(), minilm());
        h.add(vec![AddItem::text(
            Scope::user("r"),
            "The spare key is under the blue flowerpot",
        )])
        .unwrap()[0]
            .id
    };
    let h = engine(dir.path(), minilm());
    let hits = h
        .search(&SearchRequest::new(
            Scope::user("r"),
            "where can I find a house key?",
        ))
        .unwrap()
        .hits;
    assert_eq!(hits[0].memory.id, id);
    assert!(hits[0].scores.vector.unwrap() > 0.3);
}

#[test]
fn results_carry_their_conversation_context_once() {
    let dir = tempfile::tempdir().unwrap();
    let h = engine(dir.path(), minilm());
    let s = Scope {
        user_id: Some("ana".into()),
        agent_id: None,
        session_id: Some("s1".into()),
    };
    let other = Scope {
        user_id: Some("ana".into()),
        agent_id: None,
        session_id: Some("s2".into()),
    };
    let turns = [
        ("Ana", "I finally booked the trip."),
        ("Bob", "Where are you going on holiday?"),
        ("Ana", "Lisbon, with my sister."),
        ("Bob", "Nice, enjoy the pastries."),
        (
            "Ana",
            "My sister also wants to visit Porto on this holiday.",
        ),
        ("Bob", "Porto is lovely in spring."),
    ];
    let mut items = Vec::new();
    for (i, (who, text)) in turns.iter().enumerate() {
        items.push(AddItem::message(s.clone(), "user", Some(who), *text));
        // Another conversation of the same user, written in between.
        items.push(AddItem::message(
            other.clone(),
            "user",
            Some("Cy"),
            format!("unrelated holiday chatter number {i}"),
        ));
    }
    h.add(items).unwrap();

    // Without context: the bare memory.
    let mut req = SearchRequest::new(Scope::user("ana"), "Where is Ana going on holiday?");
    req.context = Context::NONE;
    req.top_k = 1;
    let bare = h.search(&req).unwrap().hits;
    assert!(bare[0].window.is_empty());
    assert_eq!(bare[0].text(), bare[0].memory.content);

    // With one turn of context, the question's reply comes along.
    req.context = Context::around(1);
    req.scope = s.clone();
    let hit = &h.search(&req).unwrap().hits[0];
    let text = hit.text();
    assert!(
        text.contains("Bob: Where are you going on holiday?"),
        "{text}"
    );
    assert!(text.contains("Ana: Lisbon, with my sister."), "{text}");
    assert!(hit.window.iter().any(|m| m.id == hit.memory.id));
    assert!(hit
        .window
        .windows(2)
        .all(|w| w[0].recorded_at <= w[1].recorded_at));

    // Across results: every message is shown once, context stays in the hit's
    // conversation, and a hit already shown as context is not repeated.
    req.scope = Scope::user("ana");
    req.top_k = 6;
    let hits = h.search(&req).unwrap().hits;
    let mut seen = std::collections::HashSet::new();
    for hit in &hits {
        for m in &hit.window {
            assert!(seen.insert(m.id), "{} shown twice", m.content);
            assert_eq!(m.scope, hit.memory.scope);
        }
    }
    // Out-of-range context is refused.
    req.context = Context::around(hippo::MAX_CONTEXT_TURNS + 1);
    assert_eq!(h.search(&req).unwrap_err().kind(), ErrorKind::InvalidInput);
}

#[test]
fn relative_dates_are_resolved_and_searchable_by_date() {
    use chrono::TimeZone;
    let dir = tempfile::tempdir().unwrap();
    let h = engine(dir.path(), minilm());
    let s = Scope::user("mel");
    let at = |d: u32| chrono::Utc.with_ymd_and_hms(2023, 5, d, 14, 0, 0).unwrap();
    let said = |d: u32, text: &str| {
        let mut item = AddItem::message(s.clone(), "user", Some("Melanie"), text);
        item.event_time = Some(at(d));
        item
    };
    h.add(vec![
        said(
            25,
            "I ran a charity race last Sunday, it was for a good cause.",
        ),
        said(25, "We also painted the fence in the garden."),
        said(12, "I went to a pottery class."),
        said(29, "Yesterday I baked bread with the kids."),
    ])
    .unwrap();
    let top = |q: &str| {
        let mut req = SearchRequest::new(s.clone(), q);
        req.context = Context::NONE;
        h.search(&req).unwrap().hits[0].memory.content.clone()
    };
    // "last Sunday" said on Thursday 2023-05-25 is 2023-05-21.
    assert!(top("What did Melanie do on 21 May 2023?").contains("charity race"));
    assert!(top("What happened on May 21st, 2023?").contains("charity race"));
    // "Yesterday" said on 2023-05-29 is 2023-05-28.
    assert!(top("What did Melanie do on 2023-05-28?").contains("baked bread"));
    // The day a memory happened is searchable too.
    assert!(top("What did Melanie do on 12 May 2023?").contains("pottery"));
}

#[test]
fn diversity_makes_room_for_a_different_answer() {
    let dir = tempfile::tempdir().unwrap();
    let h = engine(dir.path(), minilm());
    let s = Scope::user("div");
    let mut items: Vec<AddItem> = [
        "My favourite hobby is hiking in the mountains.",
        "My favorite hobby is hiking in the mountains!",
        "Hiking in the mountains is my favourite hobby.",
        "Another hobby of mine: I paint watercolours on weekends.",
    ]
    .iter()
    .map(|t| AddItem::text(s.clone(), *t))
    .collect();
    items.push(AddItem::text(
        s.clone(),
        "The train was late again this morning.",
    ));
    h.add(items).unwrap();
    let top2 = |diversity: f32| {
        let mut req = SearchRequest::new(s.clone(), "What are my hobbies?");
        req.top_k = 2;
        req.context = Context::NONE;
        req.diversity = diversity;
        h.search(&req)
            .unwrap()
            .hits
            .into_iter()
            .map(|hit| hit.memory.content)
            .collect::<Vec<_>>()
    };
    let plain = top2(0.0);
    assert!(plain.iter().all(|t| t.contains("iking")), "{plain:?}");
    let varied = top2(0.3);
    assert!(varied[0].contains("iking"), "{varied:?}");
    assert!(varied[1].contains("watercolours"), "{varied:?}");
    let mut bad = SearchRequest::new(s.clone(), "x");
    bad.diversity = 1.5;
    assert_eq!(h.search(&bad).unwrap_err().kind(), ErrorKind::InvalidInput);
}

#[test]
fn a_reply_is_lifted_by_the_question_it_answers() {
    let dir = tempfile::tempdir().unwrap();
    let talk = |session: &str| Scope {
        user_id: Some("ana".into()),
        agent_id: None,
        session_id: Some(session.into()),
    };
    let h = engine(dir.path(), minilm());
    let mut items = vec![
        AddItem::message(
            talk("a"),
            "user",
            Some("Bob"),
            "What did you cook for the street party?",
        ),
        AddItem::message(
            talk("a"),
            "user",
            Some("Ana"),
            "A huge pot of seafood paella, gone in minutes.",
        ),
    ];
    for (i, text) in [
        "I want to cook at home more often this year.",
        "The cooking class starts next week.",
        "The street party is on Saturday.",
        "We bought new pans for the kitchen.",
    ]
    .iter()
    .enumerate()
    {
        items.push(AddItem::message(
            talk(&format!("b{i}")),
            "user",
            Some("Ana"),
            *text,
        ));
    }
    h.add(items).unwrap();
    drop(h);
    let rank_of_reply = |neighbour: f32| {
        let weights = hippo::FusionWeights {
            neighbour,
            ..Default::default()
        };
        let h = engine_with(dir.path(), minilm(), weights);
        let mut req =
            SearchRequest::new(Scope::user("ana"), "What dish did Ana make for the party?");
        req.context = Context::NONE;
        let hits = h.search(&req).unwrap().hits;
        hits.iter()
            .position(|hit| hit.memory.content.contains("paella"))
            .unwrap()
    };
    let (without, with) = (rank_of_reply(0.0), rank_of_reply(0.3));
    assert!(with < without, "without {without}, with {with}");
}

#[test]
fn nearby_hits_become_one_excerpt_within_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let h = engine(dir.path(), minilm());
    let s = Scope::user("ex");
    let turns = [
        "Morning! Did you sleep well?",
        "Not really, the neighbours were loud.",
        "I adopted a greyhound called Pepper last week.",
        "Oh wow, how is she?",
        "Pepper the greyhound already sleeps on the sofa.",
        "Ha, typical.",
        "Anyway, the tax forms are due on Friday.",
        "Ugh, do not remind me.",
        "I need to renew my passport too.",
        "The office moves to the new building in June.",
    ];
    let items: Vec<AddItem> = turns
        .iter()
        .enumerate()
        .map(|(i, t)| AddItem::message(s.clone(), "user", Some(["Ana", "Bob"][i % 2]), *t))
        .collect();
    let ids: Vec<_> = h.add(items).unwrap().into_iter().map(|m| m.id).collect();
    let mut req = SearchRequest::new(s.clone(), "Pepper the greyhound");
    req.top_k = 3;
    let hits = h.search(&req).unwrap().hits;
    // Turns 2 and 4 both match; with one turn of context each, their
    // windows (1..=3 and 3..=5) overlap, so they form one excerpt (which
    // lower-ranked neighbours may extend while the budget lasts).
    let first = &hits[0];
    let members: Vec<_> = first.window.iter().map(|m| m.id).collect();
    let at = members.iter().position(|m| *m == ids[1]).unwrap();
    assert_eq!(members[at..at + 5], ids[1..=5]);
    let order: Vec<usize> = members
        .iter()
        .map(|m| ids.iter().position(|i| i == m).unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[1] == w[0] + 1), "{order:?}");
    assert!(first.matched.contains(&ids[2]) && first.matched.contains(&ids[4]));
    assert_eq!(first.matched[0], first.memory.id);
    let mut seen = std::collections::HashSet::new();
    for hit in &hits {
        for m in &hit.window {
            assert!(seen.insert(m.id), "{} shown twice", m.content);
        }
    }
    // A hard budget holds, the best hit included when it fits.
    for budget in [15, 40, 80] {
        req.budget_tokens = Some(budget);
        let hits = h.search(&req).unwrap().hits;
        let cost: usize = hits
            .iter()
            .map(|h| hippo::text::approx_tokens(&h.text()))
            .sum();
        assert!(cost <= budget, "budget {budget}: cost {cost}");
        assert!(hits[0].matched.contains(&ids[2]) || hits[0].matched.contains(&ids[4]));
    }
    req.budget_tokens = Some(0);
    assert_eq!(h.search(&req).unwrap_err().kind(), ErrorKind::InvalidInput);
}

/// Concurrent searches share the model and its rayon pool with other work
/// that embeds on it — writes, and searches run from inside the pool as a
/// benchmark's `par_iter` would: all finish, each with the hits a lone
/// search gets. (A search that blocked a pool thread while the model needed
/// the pool deadlocked a server in a trial of query batching.)
#[test]
fn concurrent_searches_share_the_model_without_deadlock() {
    use rayon::prelude::*;
    let dir = tempfile::tempdir().unwrap();
    let h = std::sync::Arc::new(engine(dir.path(), minilm()));
    let s = Scope::user("ana");
    let facts = [
        "Ana adopted a cat named Miso.",
        "Ana's sister Lena lives in Lisbon.",
        "Ana runs a marathon every spring.",
        "Ana is allergic to peanuts.",
        "Ana works night shifts as a nurse.",
        "Ana's favourite film is Spirited Away.",
    ];
    h.add(facts.iter().map(|f| AddItem::text(s.clone(), *f)).collect())
        .unwrap();
    let questions = [
        "what pet does Ana have",
        "where does Ana's sister live",
        "what sport does Ana do",
        "what is Ana allergic to",
        "what is Ana's job",
        "which film does Ana like",
    ];
    let alone: Vec<String> = questions
        .iter()
        .map(|q| {
            h.search(&SearchRequest::new(s.clone(), *q)).unwrap().hits[0]
                .memory
                .content
                .clone()
        })
        .collect();
    let (tx, rx) = std::sync::mpsc::channel();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (h, s, tx) = (h.clone(), s.clone(), tx.clone());
            std::thread::spawn(move || {
                for round in 0..6 {
                    let i = (t + round) % questions.len();
                    // Distinct texts each time, so the query cache does not answer.
                    let q = format!("{}{}", questions[i], "?".repeat(1 + t * 6 + round));
                    let top = if t % 3 == 0 {
                        // Searched from inside the rayon pool.
                        [q.clone()]
                            .par_iter()
                            .map(|q| h.search(&SearchRequest::new(s.clone(), q.clone())).unwrap())
                            .collect::<Vec<_>>()
                            .remove(0)
                    } else if t % 3 == 1 {
                        // Writes embed on the pool meanwhile.
                        h.add(vec![AddItem::text(
                            s.clone(),
                            format!("Note {t}-{round}: nothing new."),
                        )])
                        .unwrap();
                        h.search(&SearchRequest::new(s.clone(), q)).unwrap()
                    } else {
                        h.search(&SearchRequest::new(s.clone(), q)).unwrap()
                    };
                    tx.send((i, top.hits[0].memory.content.clone())).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let mut got = 0;
    while got < 48 {
        let (i, content) = rx
            .recv_timeout(std::time::Duration::from_secs(120))
            .expect("concurrent searches stalled");
        assert_eq!(content, alone[i], "question {i}");
        got += 1;
    }
    for t in threads {
        t.join().unwrap();
    }
}

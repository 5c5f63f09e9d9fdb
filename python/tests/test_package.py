"""The `hippo` Python package, installed from its wheel: the embedded
`Memory` and the HTTP `Client` answer the same calls the same way."""

from __future__ import annotations

from pathlib import Path

import pytest

import hippo
from hippo import Client, Forbidden, InvalidInput, Memory, NotFound, Unauthorized


def test_the_package_is_the_installed_wheel():
    # Not the source tree: the native module must have been built into it.
    assert Path(hippo.__file__).parent.joinpath("py.typed").exists()
    from hippo import _native

    assert hasattr(_native, "Engine")


def exercise(m) -> dict:
    """The same calls for both transports; returns what the answers say."""
    fact = m.add("Ana moved to Lisbon in March to work at the aquarium", user_id="ana", kind="fact")
    fact_id = fact["results"][0]["id"]
    m.add(
        messages=[
            {"role": "user", "name": "Ana", "content": "My sister Marta visits in June."},
            {"role": "assistant", "content": "Lovely, enjoy the visit!"},
        ],
        user_id="ana",
        session_id="s1",
        event_time="2026-05-01T10:00:00Z",
    )
    hits = m.search("Where does Ana live?", user_id="ana", top_k=3)["results"]
    assert "Lisbon" in hits[0]["memory"]
    prompt = m.search("Ana's sister", user_id="ana", format="prompt")["prompt"]
    assert prompt.startswith("<memories>") and "Marta" in prompt
    assert m.search("Lisbon", user_id="ana", kinds=["message"])["results"][0]["kind"] == "message"
    # Relevance is comparable across queries: a threshold keeps the answer
    # and drops everything for a question nothing stored is about.
    kept = m.search("Where does Ana live?", user_id="ana", min_relevance=0.03)["results"]
    assert any("Lisbon" in h["memory"] and 0.03 <= h["relevance"] <= 1 for h in kept)
    assert m.search("quantum chromodynamics of gluon plasma", user_id="ana", min_relevance=0.03)["results"] == []
    assert m.get(fact_id)["memory"].startswith("Ana moved to Lisbon")
    m.update(fact_id, content="Ana moved to Porto in October", reason="she moved again")
    versions = [v["memory"] for v in m.history(fact_id)["versions"]]
    assert len(versions) == 2 and "Porto" in versions[-1]
    listed = m.list(user_id="ana", order="desc", limit=10)["results"]
    assert len(listed) == 3 and listed[0]["recorded_at"] >= listed[-1]["recorded_at"]
    m.feedback(fact_id, "helpful")

    # Errors are exceptions of the REST error's kind.
    with pytest.raises(InvalidInput) as bad:
        m.add(user_id="ana")
    assert bad.value.status == 400 and bad.value.code == "invalid_input"
    with pytest.raises(NotFound):
        m.get("00000000-0000-7000-8000-000000000000")
    with pytest.raises(InvalidInput):
        m.search("x", user_id="ana", top_k=0)

    m.delete(fact_id)
    assert all(h["id"] != fact_id for h in m.search("Porto", user_id="ana")["results"])
    erased = m.delete_all(user_id="ana")
    assert erased["deleted"] >= 2
    assert m.list(user_id="ana")["results"] == []
    return {"hits": len(hits), "versions": len(versions)}


def test_embedded_memory(tmp_path: Path):
    with Memory(str(tmp_path / "m.db")) as m:
        summary = exercise(m)
    assert summary["versions"] == 2
    # The store is a real file that outlives the object.
    assert (tmp_path / "m.db").stat().st_size > 0
    again = Memory(tmp_path / "m.db")
    assert again.list(user_id="ana")["results"] == []
    again.close()


def test_embedded_memory_persists(tmp_path: Path):
    m = Memory(str(tmp_path / "p.db"))
    mid = m.add("Bo keeps bees", user_id="bo")["results"][0]["id"]
    m.close()
    del m
    m2 = Memory(str(tmp_path / "p.db"))
    assert m2.get(mid)["memory"] == "Bo keeps bees"
    assert "bees" in m2.search("what does Bo keep?", user_id="bo")["results"][0]["memory"]
    m2.close()


def test_client_against_a_server(keyed_server):
    c = Client(keyed_server.url, api_key=keyed_server.admin_key)
    assert c.health()["status"] == "ok"
    summary = exercise(c)
    assert summary["versions"] == 2
    with pytest.raises(Unauthorized):
        Client(keyed_server.url).search("x", user_id="ana")
    with pytest.raises(Forbidden):
        Client(keyed_server.url, api_key=keyed_server.read_key).add("x", user_id="ana")


def test_embedded_and_client_answer_alike(tmp_path: Path, open_server):
    """The same writes give the same search answers (ids and times aside)."""
    local = Memory(str(tmp_path / "same.db"))
    remote = Client(open_server.url)
    texts = [
        "The team standup moved to 9:30 on Mondays",
        "Priya prefers async updates over meetings",
        "The Q3 roadmap review is on September 14",
    ]
    for t in texts:
        local.add(t, user_id="team")
        remote.add(t, user_id="team")

    def shape(answer):
        return [(r["memory"], round(r["score"], 4)) for r in answer["results"]]

    for q in ["when is standup", "how does Priya like updates", "roadmap review date"]:
        assert shape(local.search(q, user_id="team")) == shape(remote.search(q, user_id="team"))
    local.close()


def test_search_resolves_relative_time_against_reference_time(tmp_path: Path):
    """"last Sunday" means the Sunday before `reference_time`, not before today."""
    from datetime import datetime, timezone

    with Memory(str(tmp_path / "when.db")) as m:
        for d in range(1, 29):
            m.add(f"Day {d} of the project: wrote report section {d}.", user_id="cy",
                  event_time=f"2023-04-{d:02}T10:00:00Z")
        m.add("Went sailing on the lake with Bo.", user_id="cy", event_time="2023-05-21T15:00:00Z")
        m.add("Went sailing on the lake with Cy.", user_id="cy", event_time="2023-06-11T15:00:00Z")

        def first(when):
            found = m.search("Who went sailing with me last Sunday?", user_id="cy", top_k=1,
                             context_turns=0, reference_time=when)
            return found["results"][0]["memory"]

        assert "Bo" in first(datetime(2023, 5, 25, 9, tzinfo=timezone.utc))
        assert "Cy" in first("2023-06-14T09:00:00Z")
        with pytest.raises(InvalidInput):
            m.search("sailing", user_id="cy", reference_time="last week")

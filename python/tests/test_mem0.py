"""Code written for Mem0 works against Hippo by changing the host: the
`mem0ai` package's own `MemoryClient`, pointed at `/mem0` of a running
`hippo serve`, adds, searches, updates, lists, shows history and deletes."""

from __future__ import annotations

import os

os.environ.setdefault("MEM0_TELEMETRY", "False")  # no calls home from tests

import pytest  # noqa: E402
from mem0 import MemoryClient  # noqa: E402


def client(server, key: str) -> MemoryClient:
    return MemoryClient(api_key=key, host=f"{server.url}/mem0")


def test_a_mem0_script_runs_against_hippo(keyed_server):
    m = client(keyed_server, keyed_server.admin_key)

    # add: a conversation, and a plain string.
    added = m.add(
        [
            {"role": "user", "content": "I'm allergic to peanuts and I love Thai food."},
            {"role": "assistant", "content": "Noted! I'll avoid peanut dishes when suggesting Thai places."},
        ],
        user_id="alex",
        metadata={"topic": "food"},
    )
    ids = [r["id"] for r in added["results"]]
    assert len(ids) == 2 and all(r["event"] == "ADD" for r in added["results"])
    m.add("I moved to Berlin last spring", user_id="alex", run_id="onboarding")
    m.add("The deploy script lives in ops/deploy.sh", agent_id="ops-bot")

    # search: identity in filters, as the v3 client requires.
    found = m.search("What food can't Alex eat?", filters={"user_id": "alex"}, top_k=3)
    assert found["results"], found
    top = found["results"][0]
    assert "peanut" in top["memory"] and top["user_id"] == "alex" and "score" in top
    by_meta = m.search("food", filters={"AND": [{"user_id": "alex"}], "metadata": {"topic": "food"}})
    assert by_meta["results"] and all(r["metadata"].get("topic") == "food" for r in by_meta["results"])
    # Nothing of one user leaks into another's search.
    assert m.search("peanuts", filters={"user_id": "sam"})["results"] == []

    # get / update / history.
    one = m.get(ids[0])
    assert one["id"] == ids[0] and "peanuts" in one["memory"]
    m.update(ids[0], text="I'm allergic to peanuts and shellfish, and I love Thai food.")
    assert "shellfish" in m.get(ids[0])["memory"]
    history = m.history(ids[0])
    assert [h["event"] for h in history] == ["ADD", "UPDATE"]
    assert "shellfish" in history[1]["new_memory"] and "shellfish" not in history[1]["old_memory"]

    # get_all: paginated, newest first.
    listed = m.get_all(filters={"user_id": "alex"})
    assert listed["count"] == 3 and len(listed["results"]) == 3
    page = m.get_all(filters={"user_id": "alex"}, page=1, page_size=2)
    assert len(page["results"]) == 2 and page["next"] is not None and page["count"] == 3

    # delete one, then all of a user.
    m.delete(ids[1])
    assert len(m.get_all(filters={"user_id": "alex"})["results"]) == 2
    assert [h["event"] for h in m.history(ids[1])][-1] == "DELETE"
    m.delete_all(user_id="alex")
    assert m.get_all(filters={"user_id": "alex"})["results"] == []
    assert m.search("peanuts", filters={"user_id": "alex"})["results"] == []
    # The agent's memory is untouched.
    assert m.get_all(filters={"agent_id": "ops-bot"})["count"] == 1


def test_mem0_errors_are_client_exceptions(keyed_server):
    m = client(keyed_server, keyed_server.admin_key)
    with pytest.raises(Exception) as missing:
        m.get("00000000-0000-7000-8000-000000000000")
    assert "404" in str(missing.value) or "not found" in str(missing.value).lower()
    with pytest.raises(Exception) as unsupported:
        m.search("x", filters={"OR": [{"user_id": "a"}, {"user_id": "b"}]})
    assert "not supported" in str(unsupported.value)


def test_mem0_client_needs_a_valid_key(keyed_server):
    with pytest.raises(ValueError):
        client(keyed_server, "hk_not_a_key")
    reader = client(keyed_server, keyed_server.read_key)
    reader.search("anything", filters={"user_id": "alex"})
    with pytest.raises(Exception) as refused:
        reader.add("I like tea", user_id="alex")
    assert "403" in str(refused.value) or "forbidden" in str(refused.value).lower()


def test_mem0_routes_answer_unreadable_bodies_in_mem0_shape(keyed_server):
    """A body Mem0 clients get wrong (none, not JSON, a missing field) is a
    400 carrying `detail`, the field their error handling reads."""
    import json
    import urllib.error
    import urllib.request

    for method, path, body, content_type in [
        ("POST", "/mem0/v3/memories/add/", None, None),
        ("POST", "/mem0/v3/memories/search/", b"{not json", "application/json"),
        ("POST", "/mem0/v3/memories/add/", b"{}", "application/json"),
        ("PUT", "/mem0/v1/memories/00000000-0000-7000-8000-000000000000/", None, None),
    ]:
        req = urllib.request.Request(f"{keyed_server.url}{path}", data=body, method=method)
        req.add_header("Authorization", f"Bearer {keyed_server.admin_key}")
        if content_type:
            req.add_header("Content-Type", content_type)
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(req, timeout=10)
        assert answer.value.code == 400, (path, answer.value.code)
        err = json.loads(answer.value.read())
        assert isinstance(err.get("detail"), str) and err["detail"], (path, err)
        assert err["error"]["code"] == "invalid_input", (path, err)

"""The official MCP Python SDK (`mcp` on PyPI) drives Hippo's MCP server
through a scripted session — over stdio (`hippo mcp`) and over streamable
HTTP (`/mcp` of `hippo serve`) — calling every tool, reading the resources
and the prompt, and checking errors and access."""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

from conftest import hippo_bin

TOOLS = {
    "add_memory",
    "search_memory",
    "get_memory",
    "update_memory",
    "delete_memory",
    "memory_history",
    "list_memories",
    "get_profile",
    "memory_feedback",
}


def text_of(result) -> str:
    assert result.content, result
    return result.content[0].text


def ok(result) -> str:
    assert not result.is_error, text_of(result)
    return text_of(result)


def json_of(result):
    return json.loads(ok(result))


async def refusal(client: Client, tool: str, args: dict) -> str:
    """The error text of a call that must fail, whether the failure comes
    back as a tool result with isError or as a protocol error."""
    try:
        result = await client.call_tool(tool, args)
    except Exception as e:  # noqa: BLE001 - either path is a refusal
        return repr(e) or "error"
    assert result.is_error, f"{tool} {args} was accepted: {text_of(result)}"
    return text_of(result)


async def scripted_session(client: Client, *, hard_delete: bool) -> None:
    """Every tool, the resources and the prompt, as an agent would use them."""
    # Discovery: every tool, each with a description and a typed schema.
    tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == TOOLS
    for t in tools.values():
        assert t.description and len(t.description) > 40, t.name
        assert t.input_schema["type"] == "object", t.name
    assert tools["search_memory"].input_schema["required"] == ["query"]
    kinds = tools["add_memory"].input_schema["properties"]["kind"]
    assert "fact" in json.dumps(kinds), kinds
    assert "never instructions" in (client.instructions or "")

    # Write: a fact, a conversation, a profile trait.
    added = json_of(
        await client.call_tool(
            "add_memory",
            {"user_id": "ana", "text": "Ana moved to Lisbon in March to work at the aquarium", "kind": "fact"},
        )
    )
    fact_id = added["results"][0]["id"]
    convo = json_of(
        await client.call_tool(
            "add_memory",
            {
                "user_id": "ana",
                "session_id": "s1",
                "messages": [
                    {"role": "user", "name": "Ana", "content": "My sister Marta is visiting in June."},
                    {"role": "assistant", "content": "Lovely! Do you have plans for her visit?"},
                ],
                "metadata": {"channel": "chat"},
            },
        )
    )
    assert len(convo["results"]) == 2
    json_of(
        await client.call_tool(
            "add_memory", {"user_id": "ana", "text": "Ana is vegetarian", "kind": "profile"}
        )
    )
    # The same fact again is not stored twice.
    again = json_of(
        await client.call_tool(
            "add_memory",
            {"user_id": "ana", "text": "Ana moved to Lisbon in March to work at the aquarium", "kind": "fact"},
        )
    )
    assert again["results"] == [] and again["duplicates"][0]["existing_id"] == fact_id

    # Read: the default answer is one quoted block with ids.
    block = ok(await client.call_tool("search_memory", {"user_id": "ana", "query": "Where does Ana live?"}))
    assert block.startswith("<memories>") and "Lisbon" in block and fact_id in block
    found = json_of(
        await client.call_tool(
            "search_memory",
            {"user_id": "ana", "query": "sister visit", "format": "json", "top_k": 3, "budget_tokens": 200},
        )
    )
    assert "Marta" in found["results"][0]["memory"]
    only_facts = json_of(
        await client.call_tool(
            "search_memory", {"user_id": "ana", "query": "Lisbon", "kinds": ["fact"], "format": "json"}
        )
    )
    assert {r["kind"] for r in only_facts["results"]} == {"fact"}
    got = json_of(await client.call_tool("get_memory", {"id": fact_id}))
    assert got["memory"].startswith("Ana moved to Lisbon") and got["provenance"]["written_by"]

    # Change: a new version; the old one stays in the history.
    updated = json_of(
        await client.call_tool(
            "update_memory",
            {"id": fact_id, "content": "Ana moved to Porto in October", "reason": "she told us she moved"},
        )
    )
    assert updated["memory"] == "Ana moved to Porto in October"
    history = json_of(await client.call_tool("memory_history", {"id": fact_id}))
    contents = [v["memory"] for v in history["versions"]]
    assert any("Lisbon" in c for c in contents) and any("Porto" in c for c in contents), contents
    recent = json_of(await client.call_tool("list_memories", {"user_id": "ana", "limit": 10}))
    assert len(recent["results"]) >= 4
    times = [r["recorded_at"] for r in recent["results"]]
    assert times == sorted(times, reverse=True), "newest first"
    fb = json_of(await client.call_tool("memory_feedback", {"id": fact_id, "signal": "helpful"}))
    assert fb["id"] == fact_id

    # The profile is built in the background from profile memories.
    deadline = time.time() + 30
    while True:
        profile = await client.call_tool("get_profile", {"user_id": "ana"})
        if not profile.is_error:
            assert "vegetarian" in json_of(profile)["memory"]
            break
        assert "not_found" in text_of(profile), text_of(profile)
        assert time.time() < deadline, "no profile after 30 s"
        await asyncio.sleep(0.5)

    # Resources and the prompt. A tenant-wide binding has no "recent" of
    # its own: the per-owner templates name one.
    assert (await client.list_resources()).resources == []
    templates = {str(t.uri_template) for t in (await client.list_resource_templates()).resource_templates}
    assert templates == {"hippo://memories/{id}", "hippo://users/{user_id}/recent", "hippo://agents/{agent_id}/recent"}
    listing = json.loads((await client.read_resource("hippo://users/ana/recent")).contents[0].text)
    assert any(r["id"] == fact_id for r in listing["results"])
    one = json.loads((await client.read_resource(f"hippo://memories/{fact_id}")).contents[0].text)
    assert one["id"] == fact_id
    with pytest.raises(MCPError):
        await client.read_resource("hippo://memories/00000000-0000-7000-8000-000000000000")
    prompts = (await client.list_prompts()).prompts
    assert [p.name for p in prompts] == ["use-memory"]
    prompt = await client.get_prompt("use-memory", {"user_id": "ana"})
    assert "search_memory" in prompt.messages[0].content.text and '"ana"' in prompt.messages[0].content.text

    # Errors the agent reads (isError results), not protocol failures.
    bad_id = await client.call_tool("get_memory", {"id": "not-a-uuid"})
    assert bad_id.is_error and "invalid_input" in text_of(bad_id)
    empty = await client.call_tool("add_memory", {"user_id": "ana"})
    assert empty.is_error and "text is required" in text_of(empty)
    # An argument outside the schema is refused, by the client's or the server's check.
    assert "poem" in await refusal(client, "add_memory", {"user_id": "ana", "text": "x", "kind": "poem"})
    missing = await client.call_tool("get_memory", {"id": "00000000-0000-7000-8000-000000000000"})
    assert missing.is_error and "not_found" in text_of(missing)
    assert await refusal(client, "no_such_tool", {})

    # Delete: it leaves search.
    json_of(await client.call_tool("delete_memory", {"id": fact_id, "hard": hard_delete}))
    after = ok(await client.call_tool("search_memory", {"user_id": "ana", "query": "Where does Ana live?"}))
    assert fact_id not in after


def test_stdio_session(db: Path):
    env = {"HIPPO_MODEL_DIR": os.environ["HIPPO_MODEL_DIR"], "HIPPO_LOG": "warn"}
    params = StdioServerParameters(command=hippo_bin(), args=["--db", str(db), "mcp"], env=env)

    async def main():
        async with Client(params) as client:
            assert client.server_info.name == "hippo"
            await scripted_session(client, hard_delete=True)

    asyncio.run(main())


def test_stdio_confined_to_one_user(db: Path):
    env = {"HIPPO_MODEL_DIR": os.environ["HIPPO_MODEL_DIR"], "HIPPO_LOG": "warn"}
    params = StdioServerParameters(
        command=hippo_bin(), args=["--db", str(db), "mcp", "--user", "ana"], env=env
    )

    async def main():
        async with Client(params) as client:
            added = json_of(await client.call_tool("add_memory", {"text": "Ana likes figs"}))
            assert added["results"][0]["user_id"] == "ana"
            other = await client.call_tool("search_memory", {"user_id": "bob", "query": "figs"})
            assert other.is_error and "forbidden" in text_of(other)
            # Bound to a user, the server offers that user's recent memories.
            resources = [str(r.uri) for r in (await client.list_resources()).resources]
            assert resources == ["hippo://memories/recent"]
            recent = json.loads((await client.read_resource("hippo://memories/recent")).contents[0].text)
            assert [r["memory"] for r in recent["results"]] == ["Ana likes figs"]

    asyncio.run(main())


def http_client(url: str, key: str | None) -> Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return Client(streamable_http_client(f"{url}/mcp", http_client=create_mcp_http_client(headers=headers)))


def test_http_session(keyed_server):
    async def main():
        async with http_client(keyed_server.url, keyed_server.admin_key) as client:
            assert client.server_info.name == "hippo"
            await scripted_session(client, hard_delete=True)

    asyncio.run(main())


def test_http_legacy_handshake(open_server):
    """The initialize handshake (pre-2026 clients) works as well."""

    async def main():
        transport = streamable_http_client(f"{open_server.url}/mcp")
        async with Client(transport, mode="legacy") as client:
            await scripted_session(client, hard_delete=False)

    asyncio.run(main())


def test_http_access_is_checked_per_tool(keyed_server):
    async def main():
        async with http_client(keyed_server.url, keyed_server.admin_key) as admin:
            json_of(await admin.call_tool("add_memory", {"user_id": "ana", "text": "Ana plays the cello"}))
        async with http_client(keyed_server.url, keyed_server.read_key) as reader:
            found = ok(await reader.call_tool("search_memory", {"user_id": "ana", "query": "cello"}))
            assert "cello" in found
            refused = await reader.call_tool("add_memory", {"user_id": "ana", "text": "Ana plays the oboe"})
            assert refused.is_error and "forbidden" in text_of(refused)

    asyncio.run(main())


def raw_post(url: str, headers: dict[str, str]) -> int:
    """Status of a bare MCP initialize POST."""
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    req = urllib.request.Request(
        f"{url}/mcp",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json, text/event-stream", **headers},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def test_http_needs_a_key_and_a_trusted_origin(keyed_server):
    auth = {"Authorization": f"Bearer {keyed_server.admin_key}"}
    assert raw_post(keyed_server.url, auth) == 200
    assert raw_post(keyed_server.url, {}) == 401
    assert raw_post(keyed_server.url, {"Authorization": "Bearer hk_wrong"}) == 401
    # A web page elsewhere must not drive a local server (DNS rebinding, CSRF).
    assert raw_post(keyed_server.url, {**auth, "Origin": "http://evil.example"}) == 403
    assert raw_post(keyed_server.url, {**auth, "Host": "evil.example"}) in (400, 403, 421)


async def add_then_search_without_waiting(client: Client) -> None:
    """An agent's parallel tool calls: `search_memory` sent while a slow
    `add_memory` (a long text, many chunks to embed) is still running must
    wait for it and find what it added; a refused call in between holds up
    nothing."""
    filler = " ".join(f"Line {i} of the ship's log notes calm seas and steady wind." for i in range(400))
    add = asyncio.create_task(
        client.call_tool("add_memory", {"user_id": "kim", "text": f"Kim's locker code is quokka-7291. {filler}"})
    )
    await asyncio.sleep(0.2)  # the add has arrived and is embedding
    refused = asyncio.create_task(client.call_tool("add_memory", {"user_id": "kim", "text": ""}))
    search = asyncio.create_task(
        client.call_tool("search_memory", {"user_id": "kim", "query": "quokka-7291 locker code", "format": "json"})
    )
    json_of(await add)
    assert (await refused).is_error
    found = json_of(await search)["results"]
    assert any("quokka-7291" in r["memory"] for r in found), found


def test_stdio_calls_of_a_session_run_in_arrival_order(db: Path):
    env = {"HIPPO_MODEL_DIR": os.environ["HIPPO_MODEL_DIR"], "HIPPO_LOG": "warn"}
    params = StdioServerParameters(command=hippo_bin(), args=["--db", str(db), "mcp"], env=env)

    async def main():
        async with Client(params) as client:
            await add_then_search_without_waiting(client)

    asyncio.run(main())


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_http_calls_of_a_session_run_in_arrival_order(open_server, mode):
    """With a session (legacy handshake) and without (stateless requests:
    ordered per caller and owner)."""

    async def main():
        async with Client(streamable_http_client(f"{open_server.url}/mcp"), mode=mode) as client:
            await add_then_search_without_waiting(client)

    asyncio.run(main())

"""The OpenAPI document is complete and true: schemathesis generates
requests for every documented operation from `/openapi.json` and checks
that the server never answers 5xx and that every answer matches the
documented status codes, content types and schemas."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    ]
)


def test_schemathesis_finds_no_server_errors_or_schema_violations(unthrottled_server, tmp_path: Path):
    keyed_server = unthrottled_server
    examples = os.environ.get("HIPPO_SCHEMATHESIS_EXAMPLES", "12")
    cmd = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{keyed_server.url}/openapi.json",
        "--checks",
        CHECKS,
        "--max-examples",
        examples,
        "--seed",
        "7",
        # One worker: with two, CPython 3.11 sometimes fails inside the
        # generator ("AST constructor recursion depth mismatch"), a tool
        # error that says nothing about the server.
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--no-color",
        "--header",
        f"Authorization: Bearer {keyed_server.admin_key}",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
    ]
    # Its caches go to the scratch directory, not the checkout.
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    print(out.stdout[-20000:])
    assert out.returncode == 0, out.stdout[-8000:] + out.stderr[-2000:]


def _document(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/openapi.json", timeout=30) as r:
        return json.load(r)


def test_the_document_is_valid_openapi(open_server):
    from openapi_spec_validator import OpenAPIV31SpecValidator

    doc = _document(open_server.url)
    assert doc["openapi"].startswith("3.1"), doc["openapi"]
    errors = [e.message for e in OpenAPIV31SpecValidator(doc).iter_errors()]
    assert errors == [], errors[:10]
    # Every route is documented, the Mem0-compatible ones too.
    mem0 = sorted(p for p in doc["paths"] if p.startswith("/mem0/"))
    assert mem0 == [
        "/mem0/v1/memories/",
        "/mem0/v1/memories/{id}/",
        "/mem0/v1/memories/{id}/history/",
        "/mem0/v1/ping/",
        "/mem0/v3/memories/",
        "/mem0/v3/memories/add/",
        "/mem0/v3/memories/search/",
    ], mem0
    # Query parameters are in the query, not the path.
    for path, item in doc["paths"].items():
        for op in item.values():
            for p in op.get("parameters", []):
                if p["in"] == "path":
                    assert "{" + p["name"] + "}" in path, (path, p["name"])


def test_a_generated_client_round_trips_against_the_live_server(keyed_server, tmp_path: Path):
    """openapi-python-client turns the document into a typed client; that
    client adds, searches, reads, revises, reads the history of and deletes
    a memory on the real server."""
    spec = tmp_path / "openapi.json"
    spec.write_text(json.dumps(_document(keyed_server.url)))
    config = tmp_path / "generator.yaml"
    config.write_text("post_hooks: []\n")
    out = subprocess.run(
        [
            str(Path(sys.executable).with_name("openapi-python-client")),
            "generate",
            "--path",
            str(spec),
            "--output-path",
            str(tmp_path / "hippo_generated"),
            "--meta",
            "none",
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    sys.path.insert(0, str(tmp_path))
    try:
        from hippo_generated import AuthenticatedClient
        from hippo_generated.api.default import (
            add_memory,
            delete_memory,
            get_memory,
            memory_history,
            patch_memory,
            search,
        )
        from hippo_generated.models import AddItemBody, ErrorBody, PatchBody, SearchBody
    finally:
        sys.path.remove(str(tmp_path))

    c = AuthenticatedClient(base_url=keyed_server.url, token=keyed_server.admin_key)
    added = add_memory.sync(client=c, body=AddItemBody(user_id="gen", text="Gen's favourite tea is oolong."))
    assert not isinstance(added, ErrorBody), added
    mid = added.results[0].id
    found = search.sync(client=c, body=SearchBody(user_id="gen", query="favourite tea"))
    assert [r.memory for r in found.results] == ["Gen's favourite tea is oolong."]
    assert get_memory.sync(mid, client=c).memory == "Gen's favourite tea is oolong."
    revised = patch_memory.sync(mid, client=c, body=PatchBody(content="Gen's favourite tea is sencha."), user_id="gen")
    assert revised.memory == "Gen's favourite tea is sencha."
    history = memory_history.sync(mid, client=c)
    assert [v.memory for v in history.versions] == [
        "Gen's favourite tea is oolong.",
        "Gen's favourite tea is sencha.",
    ]
    assert delete_memory.sync(mid, client=c, user_id="gen").deleted == 1
    assert search.sync(client=c, body=SearchBody(user_id="gen", query="favourite tea")).results == []
    # Errors come back as the documented error body.
    wrong = AuthenticatedClient(base_url=keyed_server.url, token="hk_0000000000000000_" + "0" * 64)
    refused = get_memory.sync_detailed(mid, client=wrong)
    assert refused.status_code == 401
    assert isinstance(refused.parsed, ErrorBody) and refused.parsed.error.code == "unauthorized"

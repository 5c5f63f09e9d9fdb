"""The OpenAPI document is complete and true: schemathesis generates
requests for every documented operation from `/openapi.json` and checks
that the server never answers 5xx and that every answer matches the
documented status codes, content types and schemas."""

from __future__ import annotations

import os
import subprocess
import sys
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
        "--workers",
        "2",
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

"""Fixtures shared by the Python tests: the `hippo` binary, a scratch
database, and a running `hippo serve` with an API key.

The binary is `$HIPPO_BIN` (default: `target/debug/hippo` of this
workspace); the embedding model is `$HIPPO_MODEL_DIR` (scripts/test.sh sets
it, see scripts/fetch-model.sh)."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def hippo_bin() -> str:
    path = os.environ.get("HIPPO_BIN") or str(ROOT / "target" / "debug" / "hippo")
    if not Path(path).is_file():
        pytest.fail(f"no hippo binary at {path}: build it (cargo build -p hippo-cli) or set HIPPO_BIN")
    return path


def run_hippo(db: Path, *args: str) -> str:
    """Runs a `hippo` command on `db` and returns its stdout (fails the test on error)."""
    out = subprocess.run(
        [hippo_bin(), "--db", str(db), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if out.returncode != 0:
        pytest.fail(f"hippo {' '.join(args)} failed ({out.returncode}): {out.stderr}")
    return out.stdout


@dataclass
class Server:
    """A running `hippo serve`."""

    url: str
    db: Path
    process: subprocess.Popen


def start_server(db: Path, config: str | None = None) -> Server:
    env = dict(os.environ)
    if config is not None:
        path = db.with_suffix(".toml")
        path.write_text(config)
        env["HIPPO_CONFIG"] = str(path)
    proc = subprocess.Popen(
        [hippo_bin(), "--db", str(db), "serve", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    deadline = time.time() + 120
    assert proc.stdout is not None
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("listening on "):
            return Server(url=line.removeprefix("listening on ").strip(), db=db, process=proc)
    proc.kill()
    pytest.fail("hippo serve did not start")


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        pytest.fail("hippo serve did not stop within 20 s of SIGTERM")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "hippo.db"


@dataclass
class KeyedServer:
    """A server that requires keys, with an admin key and a read-only key."""

    server: Server
    admin_key: str
    read_key: str

    @property
    def url(self) -> str:
        return self.server.url


def keyed(db: Path, config: str | None = None):
    admin = run_hippo(db, "key", "create", "--access", "admin").strip()
    read = run_hippo(db, "key", "create", "--access", "read").strip()
    server = start_server(db, config)
    return KeyedServer(server=server, admin_key=admin, read_key=read)


@pytest.fixture
def keyed_server(db: Path):
    s = keyed(db)
    yield s
    stop_server(s.server)


@pytest.fixture
def unthrottled_server(db: Path):
    """A keyed server whose per-key rate limit no test reaches."""
    s = keyed(db, "rate_limit_per_sec = 100000.0\nrate_limit_burst = 100000.0\n")
    yield s
    stop_server(s.server)


@pytest.fixture
def open_server(db: Path):
    """A loopback server without keys (none created)."""
    server = start_server(db)
    yield server
    stop_server(server)

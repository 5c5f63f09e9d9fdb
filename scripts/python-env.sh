#!/usr/bin/env bash
# Makes the Python environment the tests use (target/py, a virtualenv) and
# installs python/requirements-test.txt into it once; prints its python.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=target/py
REQ=python/requirements-test.txt
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
fi
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV" >&2
# Reinstall only when the requirements changed.
stamp="$VENV/.requirements.sha256"
want=$(sha256sum "$REQ" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ" >&2
  echo "$want" > "$stamp"
fi
echo "$PWD/$VENV/bin/python"

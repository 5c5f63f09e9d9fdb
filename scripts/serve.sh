#!/usr/bin/env bash
# One command to a working server: fetches the model if absent, builds the
# release binary and serves on 127.0.0.1:8080 (override with HIPPO_LISTEN or
# flags, e.g. `scripts/serve.sh --listen 127.0.0.1:9000`). The database is
# ${XDG_DATA_HOME:-~/.local/share}/hippo/hippo.db unless HIPPO_DB is set.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "serve: cargo (Rust) is required: https://rustup.rs" >&2; exit 1; }
export HIPPO_MODEL_DIR="${HIPPO_MODEL_DIR:-$(scripts/fetch-model.sh)}"
cargo build --release --locked -p hippo-cli >&2
exec target/release/hippo serve "$@"

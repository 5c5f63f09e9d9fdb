#!/usr/bin/env bash
# The scale benchmark on both stores (issue 17): bulk load, search over HTTP
# with one and two replicas, vector recall@10 against exact search.
#
#   scripts/scale.sh [MEMORIES] [USERS] [QUERIES]     # defaults: 1000000 1000 1000
#   KEEP_DB=1 scripts/scale.sh ...                     # keep the Postgres database afterwards
#   STORES=postgres scripts/scale.sh ...               # one store only (sqlite or postgres)
#
# Builds the release binary, uses a throwaway Postgres (scripts/pg.sh) and a
# scratch directory; writes one JSON report per step under target/scale/.
# Word vectors are cached in the temporary directory (see `hippo scale`).
set -euo pipefail
cd "$(dirname "$0")/.."
MEMORIES=${1:-1000000}
USERS=${2:-1000}
QUERIES=${3:-1000}
STORES=${STORES:-sqlite postgres}
CORPUS=(--memories "$MEMORIES" --users "$USERS")
OUT=target/scale/$MEMORIES-$USERS
rm -rf "$OUT" && mkdir -p "$OUT"
export HIPPO_MODEL_DIR=${HIPPO_MODEL_DIR:-$(scripts/fetch-model.sh)}
export HIPPO_LOG=${HIPPO_LOG:-warn}
cargo build --release --locked -q -p hippo-cli
BIN=$PWD/target/release/hippo

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# Starts `hippo serve` with the given store arguments, logging to $LOG (in
# this shell, so cleanup can stop it).
serve() {
  "$BIN" "$@" serve --listen 127.0.0.1:0 --maintenance-interval-secs 0 >"$LOG" 2>&1 &
  PIDS+=($!)
}

# The base URL of the server logging to $1, once it listens.
url_of() {
  for _ in $(seq 1200); do
    if grep -q "listening on" "$1"; then
      sed -n 's/^listening on //p' "$1" | head -1
      return
    fi
    sleep 0.5
  done
  echo "server did not start: $(cat "$1")" >&2
  exit 1
}

bench_store() { # name, store arguments...
  local name=$1
  shift
  echo "== $name: load"
  "$BIN" "$@" scale load "${CORPUS[@]}" >"$OUT/$name-load.json"
  cat "$OUT/$name-load.json"
  echo "== $name: search, one replica (1 and 2 clients)"
  local a b
  LOG=$OUT/$name-serve-a.log
  serve "$@"
  a=$(url_of "$LOG")
  # One client: latency alone; two: the machine's two cores shared with the database.
  # Each run skips the queries runs before it sent, so its first pass embeds
  # fresh queries (a server caches query vectors).
  for clients in 1 2; do
    "$BIN" "$@" scale search "${CORPUS[@]}" --base "$a" --queries "$QUERIES" --clients $clients \
      --skip $(((clients - 1) * QUERIES)) \
      >"$OUT/$name-search-1-c$clients.json"
    cat "$OUT/$name-search-1-c$clients.json"
  done
  echo "== $name: search, two replicas"
  LOG=$OUT/$name-serve-b.log
  serve "$@"
  b=$(url_of "$LOG")
  "$BIN" "$@" scale search "${CORPUS[@]}" --base "$a" --base "$b" --queries "$QUERIES" --clients 4 \
    --skip $((2 * QUERIES)) \
    >"$OUT/$name-search-2.json"
  cat "$OUT/$name-search-2.json"
  cleanup
  PIDS=()
  echo "== $name: recall"
  "$BIN" "$@" scale recall "${CORPUS[@]}" --queries 400 >"$OUT/$name-recall.json"
  cat "$OUT/$name-recall.json"
}

if [[ " $STORES " == *" sqlite "* ]]; then
  SCRATCH=$(mktemp -d)
  bench_store sqlite --db "$SCRATCH/hippo.db"
  rm -rf "$SCRATCH"
fi
[[ " $STORES " == *" postgres "* ]] || exit 0

URL=$(scripts/pg.sh)
DB="scale_$$"
psql "$URL" -qc "CREATE DATABASE $DB"
bench_store postgres --store "${URL%/*}/$DB"
if [ -n "${KEEP_DB:-}" ]; then
  echo "kept the Postgres database: ${URL%/*}/$DB"
else
  psql "$URL" -qc "DROP DATABASE $DB"
fi
echo "reports in $OUT"

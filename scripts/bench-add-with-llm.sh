#!/usr/bin/env bash
# Single-add latency with and without an LLM configured: writes must not wait
# for the model. Starts a slow (2 s per answer) OpenAI-compatible chat
# endpoint, then alternates servers without / with it, 300 adds each.
# Usage: scripts/bench-add-with-llm.sh [path/to/hippo]
set -euo pipefail
H=${1:-target/release/hippo}
dir=$(mktemp -d)
python3 scripts/slow_llm.py & llm=$!
trap 'kill $llm 2>/dev/null; pkill -f "hippo --db $dir" 2>/dev/null || true; rm -rf "$dir"' EXIT
sleep 1
run() { # name port [llm]
  if [ -n "${3:-}" ]; then
    HIPPO_LLM_URL=http://127.0.0.1:8391/v1 HIPPO_LLM_MODEL=slow "$H" --db "$dir/$1.db" serve --listen 127.0.0.1:$2 >/dev/null 2>&1 &
  else
    "$H" --db "$dir/$1.db" serve --listen 127.0.0.1:$2 >/dev/null 2>&1 &
  fi
  local pid=$!; sleep 4
  echo "$1: $(python3 scripts/add_latency.py http://127.0.0.1:$2 300)"
  kill $pid; wait $pid 2>/dev/null || true
}
run no-llm-1 8392; run llm-1 8393 y; run no-llm-2 8394; run llm-2 8395 y

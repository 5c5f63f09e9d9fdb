#!/usr/bin/env bash
# The test command: installs what is missing, fetches the model, then runs
# formatting, lints and every test (unit, integration, property, end-to-end
# against the real binary, and the kill -9 durability test).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
if ! command -v cargo >/dev/null; then
  echo "test: cargo (Rust) is required: https://rustup.rs" >&2; exit 1
fi
if ! command -v python3 >/dev/null; then
  apt-get update -qq && apt-get install -y -qq python3 python3-pip >/dev/null
fi
# A real browser for the inspector's tests (headless Chromium over WebDriver).
if ! command -v chromedriver >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
export HIPPO_REQUIRE_BROWSER=1
rustup component add rustfmt clippy >/dev/null 2>&1 || true
export HIPPO_MODEL_DIR="${HIPPO_MODEL_DIR:-$(scripts/fetch-model.sh)}"
export HIPPO_E5_DIR="${HIPPO_E5_DIR:-$(scripts/fetch-e5.sh)}"
echo "== cargo fmt"; cargo fmt --all --check
echo "== cargo clippy"; cargo clippy --locked --all-targets -- -D warnings
echo "== postgres (for the Postgres store's tests)"
HIPPO_TEST_POSTGRES="$(scripts/pg.sh)"; export HIPPO_TEST_POSTGRES
trap 'scripts/pg.sh stop >/dev/null 2>&1 || true' EXIT
echo "== cargo test"; cargo test --locked --workspace 2>&1 | tee /tmp/hippo-test.log
echo "== the inspector's first paint at 100k memories (alone: it measures)"
cargo test --locked -p hippo-cli --test it -- --ignored --exact --nocapture \
  ui::each_view_paints_within_300_ms_at_100k_memories 2>&1 | tee -a /tmp/hippo-test.log
echo "== python: the wheel, MCP and Mem0 clients, schemathesis"
PY=$(scripts/python-env.sh)
rm -rf target/wheels
# The dev profile shares the workspace's compiled dependencies (already built above).
(cd python && "$(dirname "$PY")/maturin" build --quiet --profile dev --locked -o ../target/wheels)
"$PY" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps target/wheels/hippo_memory-*.whl
HIPPO_BIN="$PWD/target/debug/hippo" "$PY" -m pytest -q python/tests
echo "== doc"; RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps --workspace -q

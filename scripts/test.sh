#!/usr/bin/env bash
# Runs every test of the project against real parts: native unit tests, the
# gateway against the running Redis, the wasm SDK in headless Chromium against
# a real gateway, and the React app end to end with Playwright.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

step() { printf '\n=== %s\n' "$*"; }

step "setup"
bash scripts/setup.sh

step "format and lints"
cargo fmt --all -- --check
cargo clippy -q --workspace --all-targets -- -D warnings
cargo clippy -q -p liveline --target wasm32-unknown-unknown --all-targets -- -D warnings

step "a local Redis Cluster (3 masters, 3 replicas) for the gateway's cluster suite"
cluster_dir=$root/target/redis-cluster
cleanup() {
  if [ -n "${gw_pid:-}" ]; then
    kill "$gw_pid" 2>/dev/null || true
    wait "$gw_pid" 2>/dev/null || true
  fi
  bash scripts/redis-cluster.sh stop "$cluster_dir"
}
trap cleanup EXIT
bash scripts/redis-cluster.sh start "$cluster_dir"

step "native tests (SDK core, gateway against Redis at 127.0.0.1:6379 and the cluster)"
cargo test -q --workspace

step "build: npm package (wasm) and the app"
bash scripts/build-pkg.sh
bash scripts/size.sh
npm run -s typecheck:www
npm run -s build:www

step "start a gateway (embedded broker, demo worker)"
cargo build -q -p liveline-gateway
gw=target/debug/liveline-gateway
port=${LIVELINE_TEST_PORT:-18080}
mkdir -p .tmp test-results
"$gw" serve --port "$port" --static-dir www/dist --demo-worker --dev-tokens \
  >.tmp/gateway-test.log 2>&1 &
gw_pid=$!
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  kill -0 $gw_pid 2>/dev/null || { cat .tmp/gateway-test.log; exit 1; }
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null

step "browser tests: wasm SDK in headless Chromium against the gateway"
LIVELINE_TEST_URL="http://127.0.0.1:$port" \
LIVELINE_TEST_TOKEN="$("$gw" mint-token --sub browser-test)" \
CHROMEDRIVER=/usr/bin/chromedriver \
WASM_BINDGEN_TEST_TIMEOUT=60 \
  cargo test -p liveline --target wasm32-unknown-unknown --test browser

step "the npm package in Chromium: own gateways on Redis, the official socket.io server; packaging; the layer with a Python worker"
node --test tests/browser-pkg/ tests/packaging/ tests/layer/

step "end to end: the React app with Playwright"
# The e2e suite also rewrites the screenshots in docs/screenshots/.
LIVELINE_UPDATE_SCREENSHOTS=1 LIVELINE_URL="http://127.0.0.1:$port" node --test tests/e2e/

#!/usr/bin/env bash
# Builds everything and runs the demo: the gateway on its embedded in-memory
# broker with the demo worker in-process, serving the React app. One URL.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build-pkg.sh
npm run -s build:www
cargo build -q --release -p liveline-gateway
port=${LIVELINE_PORT:-8080}
echo
echo "Liveline demo: open http://localhost:$port"
echo
exec target/release/liveline-gateway serve --port "$port" --static-dir www/dist --demo-worker --dev-tokens

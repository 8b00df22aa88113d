#!/usr/bin/env bash
# Prints the gzip size (gzip -9) of what a browser downloads for the
# package's main entry: the wasm and the minified entry bundle (the driver
# plus the wasm-bindgen glue). Exits 1 above the budget, in bytes (40 KB).
# The optional `liveline-client/react` subpath is printed too, outside the budget.
set -euo pipefail
cd "$(dirname "$0")/.."
budget=${LIVELINE_SIZE_BUDGET:-40960}
total=0
gz() { gzip -9c "$1" | wc -c; }
for f in pkg/wasm/liveline_bg.wasm pkg/wasm/index.js; do
  n=$(gz "$f")
  printf '%-28s %7d bytes gzip\n' "$f" "$n"
  total=$((total + n))
done
printf '%-28s %7d bytes gzip (budget %d)\n' total "$total" "$budget"
for f in pkg/wasm/react.js pkg/wasm/jobs.js; do
  printf '%-28s %7d bytes gzip (optional subpath, not in the total)\n' "$f" "$(gz "$f")"
done
if [ "$total" -gt "$budget" ]; then
  echo "size: over budget by $((total - budget)) bytes" >&2
  exit 1
fi

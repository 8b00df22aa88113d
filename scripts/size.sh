#!/usr/bin/env bash
# Prints the gzip size of what a browser downloads from the package:
# the wasm, its JS glue and the entry. Exits 1 above the budget (bytes).
set -euo pipefail
cd "$(dirname "$0")/.."
budget=${LIVELINE_SIZE_BUDGET:-40960}
total=0
for f in pkg/wasm/liveline_bg.wasm pkg/wasm/liveline.js pkg/index.js; do
  n=$(gzip -9c "$f" | wc -c)
  printf '%-28s %7d bytes gzip\n' "$f" "$n"
  total=$((total + n))
done
printf '%-28s %7d bytes gzip (budget %d)\n' total "$total" "$budget"
[ "$total" -le "$budget" ]

#!/usr/bin/env bash
# Builds the npm package's wasm part into pkg/wasm: release profile `wasm`
# (size first), wasm-bindgen --target web, wasm-opt -Oz.
# wasm-opt comes from npm's binaryen (version pinned in package-lock.json):
# Debian's binaryen 108 rewrites the externref table export that
# wasm-bindgen 0.2.130 emits, and the module then fails to instantiate.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --profile wasm --target wasm32-unknown-unknown -p liveline
wasm-bindgen --target web --out-dir pkg/wasm --out-name liveline \
  target/wasm32-unknown-unknown/wasm/liveline.wasm
node_modules/.bin/wasm-opt -Oz --enable-bulk-memory --enable-nontrapping-float-to-int \
  --enable-sign-ext --enable-mutable-globals --enable-reference-types --enable-multivalue \
  pkg/wasm/liveline_bg.wasm -o pkg/wasm/liveline_bg.wasm

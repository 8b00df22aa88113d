#!/usr/bin/env bash
# Builds what the npm package ships into pkg/wasm (generated, not committed):
#   liveline_bg.wasm  the SDK core: release profile `wasm` (opt-level z, LTO,
#                     panic=abort), wasm-bindgen --target web, wasm-opt -Oz;
#   index.js          pkg/index.js (the browser driver) bundled with the
#                     wasm-bindgen glue and minified by rolldown (from Vite),
#                     plus its source map;
#   react.js          pkg/react.js (the `react` subpath) minified, with its map.
# wasm-opt comes from npm's binaryen (version pinned in package-lock.json):
# Debian's binaryen 108 rewrites the externref table export that
# wasm-bindgen 0.2.130 emits, and the module then fails to instantiate.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --profile wasm --target wasm32-unknown-unknown -p liveline
rm -rf pkg/wasm .tmp/wasm-bindgen
mkdir -p .tmp pkg/wasm
wasm-bindgen --target web --out-dir .tmp/wasm-bindgen --out-name liveline \
  target/wasm32-unknown-unknown/wasm/liveline.wasm
# --zero-filled-memory holds: the module defines its memory (not imported),
# so every byte no data segment sets starts as zero.
node_modules/.bin/wasm-opt -Oz --converge --zero-filled-memory \
  --strip-producers --strip-target-features \
  --enable-bulk-memory --enable-nontrapping-float-to-int \
  --enable-sign-ext --enable-mutable-globals --enable-reference-types --enable-multivalue \
  .tmp/wasm-bindgen/liveline_bg.wasm -o pkg/wasm/liveline_bg.wasm
# The driver imports the glue as ./wasm/liveline.js; bundle from a copy laid
# out that way, so the glue's `new URL('liveline_bg.wasm', import.meta.url)`
# resolves next to the bundle.
rm -rf .tmp/pkg-src && mkdir -p .tmp/pkg-src/wasm
cp pkg/index.js .tmp/pkg-src/index.js
cp .tmp/wasm-bindgen/liveline.js .tmp/pkg-src/wasm/liveline.js
node_modules/.bin/rolldown ./.tmp/pkg-src/index.js --format esm --minify --sourcemap \
  --file pkg/wasm/index.js >/dev/null
# The React subpath, minified with its source map; React stays the app's.
node_modules/.bin/rolldown ./pkg/react.js --format esm --minify --sourcemap --external react \
  --file pkg/wasm/react.js >/dev/null
node_modules/.bin/rolldown ./pkg/jobs.js --format esm --minify --sourcemap \
  --file pkg/wasm/jobs.js >/dev/null
# The tarball carries the licenses the `license` field names.
cp LICENSE-MIT LICENSE-APACHE pkg/

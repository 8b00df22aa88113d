#!/usr/bin/env bash
# Makes a fresh machine ready to build, run and test Liveline. Idempotent: a
# second run only checks. Needs root (or sudo) for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*"; }
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

apt_updated=0
apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$apt_updated" = 0 ]; then
    log "apt-get update"
    $SUDO apt-get update -qq
    apt_updated=1
  fi
  log "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
}

# 1. Debian packages: browser + driver for tests, Redis, Node. (wasm-opt comes
# from npm's binaryen: Debian's is too old for wasm-bindgen's output.)
apt_install chromium chromium-driver redis-server redis-tools curl
command -v node >/dev/null && command -v npm >/dev/null || apt_install nodejs npm

# 2. Rust: the wasm target and wasm-bindgen-cli at the crate's exact version.
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  log "rustup target add wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown
fi
wb_version=$(sed -n 's/^wasm-bindgen = "=\([0-9.]*\)".*/\1/p' Cargo.toml)
[ -n "$wb_version" ] || { echo "setup: wasm-bindgen is not pinned with = in Cargo.toml" >&2; exit 1; }
if ! wasm-bindgen --version 2>/dev/null | grep -q " $wb_version\$"; then
  # Without --locked: the CLI's lock file names a version this registry lacks.
  log "cargo install wasm-bindgen-cli --version $wb_version"
  cargo install -q wasm-bindgen-cli --version "$wb_version" --force
fi

# 3. Redis on 127.0.0.1:6379, only where none answers there.
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  log "starting redis-server on 127.0.0.1:6379"
  mkdir -p .tmp
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir "$PWD/.tmp" --logfile "$PWD/.tmp/redis.log"
  for _ in $(seq 50); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.1; done
  redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null
fi

# 4. npm packages from the lock file.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log "npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi
# 5. The official Node socket.io server of the interop tests: its own npm project.
if [ ! -d tests/interop/node_modules ] ||
  [ tests/interop/package-lock.json -nt tests/interop/node_modules/.package-lock.json ]; then
  log "npm ci (tests/interop)"
  (cd tests/interop && npm ci --no-audit --no-fund --loglevel=error)
fi
# 6. The official socket.io-client of the gateway's interop test: its own npm project.
if [ ! -d gateway/tests/node/node_modules ] ||
  [ gateway/tests/node/package-lock.json -nt gateway/tests/node/node_modules/.package-lock.json ]; then
  log "npm ci (gateway/tests/node)"
  npm ci --prefix gateway/tests/node --no-audit --no-fund --loglevel=error
fi
# 7. The packaging matrix: one npm project per bundler, each pinned by its lock file.
for dir in tests/packaging/bundlers/*/; do
  [ -f "$dir/package-lock.json" ] || continue
  if [ ! -d "$dir/node_modules" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    log "npm ci ($dir)"
    npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
  fi
done
# 8. The publishing examples of docs/: ioredis (npm) and redis-py (PyPI), pinned.
if [ ! -d docs/examples/node_modules ] ||
  [ docs/examples/package-lock.json -nt docs/examples/node_modules/.package-lock.json ]; then
  log "npm ci (docs/examples)"
  npm ci --prefix docs/examples --no-audit --no-fund --loglevel=error
fi
# Installed unless the pinned version already imports (the check exits 0 then).
redis_py=$(sed -n 's/^redis==//p' docs/examples/requirements.txt)
if ! python3 -c "import redis, sys; sys.exit(redis.__version__ != '$redis_py')" 2>/dev/null; then
  log "pip install redis==$redis_py"
  python3 -m pip install -q --root-user-action=ignore -r docs/examples/requirements.txt
fi
log "ready"

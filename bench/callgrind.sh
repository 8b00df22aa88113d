#!/usr/bin/env bash
# Instructions the gateway executes per handshake and per delivered event,
# counted by valgrind's callgrind: unlike CPU time, the same binary and load
# give the same count on this noisy box, so two builds compare exactly
# (docs/benchmarks.md).
#
#   bash bench/callgrind.sh                        # target/release/liveline-gateway
#   bash bench/callgrind.sh OLD-BINARY NEW-BINARY   # two builds, side by side
#
# For each binary it runs the gateway (Redis broker, a private key prefix)
# under callgrind four times while `liveline-load` drives it: A and B
# connections held only (`--events 0`: no job, nothing published), A
# connections with one job and one event each, and A connections with E
# events each. Per handshake = (B held - A held) / (B - A); per event =
# (E events - 1 event) / (A x (E - 1)); per job start = (1 event - A held) / A
# - per event. Each count covers the whole process (start, handshakes, closes,
# shutdown), so the differences isolate the part that grows.
set -euo pipefail
cd "$(dirname "$0")/.."

a=${A:-100}
b=${B:-300}
e=${E:-201}
redis=${REDIS_URL:-redis://127.0.0.1:6379}
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
bash scripts/setup.sh >/dev/null
cargo build -q --release -p liveline-gateway -p liveline-load
[ "$#" -gt 0 ] || set -- target/release/liveline-gateway
source scripts/ports.sh
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

count() { # BIN CONNECTIONS EVENTS -> instructions
  local bin=$1 conns=$2 events=$3 port prefix pid
  port=$(free_port)
  prefix="ll-callgrind:$RANDOM$RANDOM:"
  valgrind --tool=callgrind --callgrind-out-file="$dir/out" "$bin" serve \
    --bind 127.0.0.1 --port "$port" --redis-url "$redis" --key-prefix "$prefix" \
    --max-connections-per-user 5 >/dev/null 2>"$dir/valgrind.log" &
  pid=$!
  # Wait for the server (valgrind starts it slowly), at most 60 s.
  for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  target/release/liveline-load --url "http://127.0.0.1:$port" --key-prefix "$prefix" \
    --redis-url "$redis" --connections "$conns" --events "$events" --rate 2000 \
    --drain-secs 30 >"$dir/load.log" 2>&1 || {
    echo "load run failed:" >&2
    tail -5 "$dir/load.log" >&2
  }
  kill -INT "$pid"
  wait "$pid" || true
  sed -n 's/^summary: //p' "$dir/out"
  redis-cli -u "$redis" --scan --pattern "$prefix*" | xargs -r redis-cli -u "$redis" unlink >/dev/null
}

printf '%-48s %16s %16s %16s\n' "binary" "Ir / handshake" "Ir / job start" "Ir / event"
for bin in "$@"; do
  held=$(count "$bin" "$a" 0)
  more=$(count "$bin" "$b" 0)
  one=$(count "$bin" "$a" 1)
  events=$(count "$bin" "$a" "$e")
  per_event=$(((events - one) / (a * (e - 1))))
  printf '%-48s %16d %16d %16d\n' "$bin" $(((more - held) / (b - a))) $(((one - held) / a - per_event)) "$per_event"
done

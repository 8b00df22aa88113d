#!/usr/bin/env bash
# The gateway's memory and CPU with glibc's malloc, mimalloc and jemalloc,
# side by side (docs/benchmarks.md).
#
#   bash bench/allocators.sh              # 5000 connections, 2 runs each
#   CONNECTIONS=10000 REPEATS=3 bash bench/allocators.sh
#
# Builds the gateway three times (the `mimalloc` and `jemalloc` features of
# liveline-gateway pick the global allocator; neither is the default), then
# runs `liveline-load` against each in turn, the gateway on CPU 0 and the
# load client on CPU 1, and prints medians: RSS per idle connection, RSS per
# connection after the events, RSS left per connection once every client
# closed, server CPU per handshake and per event, p99.
set -euo pipefail
cd "$(dirname "$0")/.."

connections=${CONNECTIONS:-5000}
repeats=${REPEATS:-2}
redis=${REDIS_URL:-redis://127.0.0.1:6379}

bash scripts/setup.sh >/dev/null
dir=target/allocators
mkdir -p "$dir"
for alloc in glibc mimalloc jemalloc; do
  if [ "$alloc" = glibc ]; then
    cargo build -q --release -p liveline-gateway
  else
    cargo build -q --release -p liveline-gateway --features "$alloc"
  fi
  cp target/release/liveline-gateway "$dir/$alloc"
done
# Leave target/release as the default build.
cargo build -q --release -p liveline-gateway -p liveline-load

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for i in $(seq "$repeats"); do
  for alloc in glibc mimalloc jemalloc; do
    taskset -c 1 target/release/liveline-load --gateway-bin "$dir/$alloc" --server-cpus 0 \
      --connections "$connections" --events 10 --rate 10000 --redis-url "$redis" \
      --rss-after-close-secs 8 2>/dev/null |
      sed -n 's/^RESULT //p' >>"$out/$alloc.jsonl" || true
  done
  echo "  run $i of $repeats done" >&2
done

python3 - "$out" "$connections" <<'EOF'
import json, statistics, sys
out, n = sys.argv[1], int(sys.argv[2])
keys = [
    ("gateway_rss_idle_per_conn_kb", "RSS/idle conn KiB", ".1f"),
    ("gateway_rss_per_conn_kb", "RSS/conn after KiB", ".1f"),
    ("gateway_rss_after_close_per_conn_kb", "closed: RSS/conn KiB", ".1f"),
    ("server_cpu_us_per_handshake", "CPU/handshake µs", ".0f"),
    ("server_cpu_us_per_event", "CPU/event µs", ".1f"),
    ("latency_p99_ms", "p99 ms", ".2f"),
]
print(f"{n:,} connections, 10 events each at 10,000/s; medians")
print(f"{'allocator':<10}" + "".join(f"{label:>22}" for _, label, _ in keys) + "  result")
for alloc in ["glibc", "mimalloc", "jemalloc"]:
    rows = [json.loads(l) for l in open(f"{out}/{alloc}.jsonl") if l.strip()]
    if not rows:
        print(f"{alloc:<10} (no run finished)")
        continue
    cells = "".join(f"{format(statistics.median(r[k] for r in rows), spec):>22}" for k, _, spec in keys)
    ok = "PASS" if all(r["ok"] for r in rows) else "FAIL"
    print(f"{alloc:<10}{cells}  {ok}")
EOF

#!/usr/bin/env bash
# Publish throughput and latency on one Redis and on a local 3-master Redis
# Cluster, same load, side by side (docs/benchmarks.md).
#
#   bash bench/cluster.sh            # 3 repeats of each run; medians
#   REPEATS=5 CONNECTIONS=2000 bash bench/cluster.sh
#
# Each run is `liveline-load` (release build): one gateway process, SDK
# connections, one job per user, events published through the Lua publish
# script (SPUBLISH on the cluster), and every event checked for loss,
# duplication and order. Two loads: a fixed 5,000 events/s (latency), and
# as fast as the publishers go (throughput). The single Redis is the one on
# 127.0.0.1:6379; the cluster is started here and stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

repeats=${REPEATS:-3}
connections=${CONNECTIONS:-1000}
single=${REDIS_URL:-redis://127.0.0.1:6379}

bash scripts/setup.sh >/dev/null
cargo build -q --release -p liveline-gateway -p liveline-load

dir=$PWD/target/bench-cluster
trap 'bash scripts/redis-cluster.sh stop "$dir"' EXIT
cluster=$(bash scripts/redis-cluster.sh start "$dir")

out=$(mktemp -d)
run() { # NAME URL RATE EVENTS
  local name=$1 url=$2 rate=$3 events=$4 i
  for i in $(seq "$repeats"); do
    target/release/liveline-load --connections "$connections" --events "$events" \
      --rate "$rate" --redis-url "$url" --duration-limit 120 2>/dev/null |
      sed -n 's/^RESULT //p' >>"$out/$name.jsonl"
    echo "  $name: run $i of $repeats done" >&2
  done
}

echo "== $connections connections, $repeats runs each" >&2
run single-5k "$single" 5000 20
run cluster-5k "$cluster" 5000 20
run single-max "$single" 1000000 50
run cluster-max "$cluster" 1000000 50

python3 - "$out" <<'EOF'
import json, statistics, sys
out = sys.argv[1]
def load(name):
    with open(f"{out}/{name}.jsonl") as f:
        return [json.loads(l) for l in f if l.strip()]
def med(rows, key):
    return statistics.median(r[key] for r in rows)
print(f"{'load':<22}{'broker':<16}{'events/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'lost':>6}{'dup':>5}{'reord':>6}  result")
for load_name, label in [("5k", "5,000 events/s"), ("max", "as fast as it goes")]:
    base = None
    for broker in ["single", "cluster"]:
        rows = load(f"{broker}-{load_name}")
        rate, p50, p99 = med(rows, "publish_rate"), med(rows, "latency_p50_ms"), med(rows, "latency_p99_ms")
        lost = sum(r["lost"] for r in rows)
        dup = sum(r["duplicated"] for r in rows)
        reord = sum(r["reordered"] for r in rows)
        ok = "PASS" if all(r["ok"] for r in rows) else "FAIL"
        name = "one Redis" if broker == "single" else "3-master cluster"
        ratio = ""
        if base:
            ratio = f"  (x{rate / base[0]:.2f} events/s, x{p99 / base[1]:.2f} p99)"
        else:
            base = (rate, p99)
        print(f"{label:<22}{name:<16}{rate:>10.0f}{p50:>9.2f}{p99:>9.2f}{lost:>6}{dup:>5}{reord:>6}  {ok}{ratio}")
print(f"(medians of {len(rows)} runs; lost/dup/reord summed over them)")
EOF
rm -rf "$out"

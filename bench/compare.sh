#!/usr/bin/env bash
# The gateway side by side with the Node reference stack (docs/benchmarks.md):
# socket.io 4.8 + @socket.io/redis-adapter, events from a worker through
# @socket.io/redis-emitter (bench/node, pinned in its package-lock.json).
#
#   bash bench/compare.sh                 # 3 repeats of each run; medians
#   REPEATS=1 SIZES="1000 5000" SECS=5 bash bench/compare.sh
#
# Both stacks are driven by the same client, `liveline-load` (the SDK's
# native driver, every event checked for loss, duplication and order), on a
# private redis-server started here. Servers run on CPU 0 (`taskset`), the
# load client and the publishers on CPU 1; Redis is left to the scheduler.
# Runs of the two stacks alternate, back to back. Runs:
#   - latency, RSS and CPU at SIZES connections (one user each), RATE
#     events/s in total for about SECS seconds, PROCS server processes, and
#     the servers' RSS in the 8 s after every client closed;
#   - the highest rate from LADDER with p99 under 50 ms, nothing lost, and
#     the publishers at 90 % of the rate or more, at 5,000 connections (stops
#     at the first rate that fails);
#   - kill -9 of the server 2 s into a 10 s publish, 2,000 connections, one
#     process: restart time, time until every connection is back, events lost.
# Not part of `scripts/test.sh`; it prints the table and exits 0 even when a
# stack loses events (the table says so).
set -euo pipefail
cd "$(dirname "$0")/.."

repeats=${REPEATS:-3}
sizes=${SIZES:-1000 5000 10000}
rate=${RATE:-10000}
procs=${PROCS:-2}
secs=${SECS:-10}
ladder=${LADDER:-5000 10000 20000 30000 40000 50000 60000}
[ "$(nproc)" -ge 2 ] || { echo "needs 2 CPUs (servers on one, clients on the other)" >&2; exit 1; }

bash scripts/setup.sh >/dev/null
if [ ! -d bench/node/node_modules ] ||
  [ bench/node/package-lock.json -nt bench/node/node_modules/.package-lock.json ]; then
  (cd bench/node && npm ci --no-audit --no-fund --loglevel=error) >&2
fi
cargo build -q --release -p liveline-gateway -p liveline-load

source scripts/ports.sh
dir=$(mktemp -d)
trap 'kill "$(cat "$dir/redis.pid" 2>/dev/null)" 2>/dev/null || true; rm -rf "$dir"' EXIT
redis="redis://127.0.0.1:$(private_redis "$dir")"

run() { # NAME SERVER CONNECTIONS RATE EVENTS PROCS [EXTRA...]
  local name=$1 server=$2 conns=$3 r=$4 events=$5 p=$6
  shift 6
  taskset -c 1 target/release/liveline-load --server "$server" --server-cpus 0 \
    --connections "$conns" --events "$events" --rate "$r" --gateways "$p" \
    --redis-url "$redis" --duration-limit 150 "$@" 2>>"$dir/load.log" |
    sed -n 's/^RESULT //p' >>"$dir/$name.jsonl" || true
}

for size in $sizes; do
  # About SECS of publishing, at least 3 events per user.
  events=$(((rate * secs + size - 1) / size))
  [ "$events" -ge 3 ] || events=3
  for i in $(seq "$repeats"); do
    for server in gateway node; do
      run "$server-$size" "$server" "$size" "$rate" "$events" "$procs" --rss-after-close-secs 8
    done
    echo "  $size connections: run $i of $repeats done" >&2
  done
done

for server in gateway node; do
  for r in $ladder; do
    run "$server-ladder-$r" "$server" 5000 "$r" $(((r * 4 + 4999) / 5000)) "$procs"
    # "ok" or "over", then what decided it. The publishers must reach 90 %
    # of the rate: latency is counted from each publish, so a rate they
    # cannot reach would pass at whatever rate they do reach.
    verdict=$(python3 -c '
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rate = float(sys.argv[2])
ok = bool(rows) and all(r["latency_p99_ms"] < 50 and r["lost"] == 0 and r["connections_held"] == r["connections_asked"] and r["publish_rate"] >= 0.9 * rate for r in rows)
why = "; ".join("published %.0f/s, p99 %.1f ms, %d lost, %d of %d held" % (r["publish_rate"], r["latency_p99_ms"], r["lost"], r["connections_held"], r["connections_asked"]) for r in rows) or "no result"
print(("ok" if ok else "over") + " (" + why + ")")
' "$dir/$server-ladder-$r.jsonl" "$r")
    echo "  $server at $r events/s: $verdict" >&2
    [ "${verdict%% *}" = ok ] || break
  done
done

for server in gateway node; do
  run "$server-kill" "$server" 2000 4000 20 1 --kill-after-secs 2
done

python3 - "$dir" "$sizes" "$rate" "$procs" "$ladder" <<'EOF'
import json, os, statistics, sys
out, sizes, rate, procs, ladder = sys.argv[1], sys.argv[2].split(), int(sys.argv[3]), sys.argv[4], sys.argv[5].split()
def rows(name):
    path = f"{out}/{name}.jsonl"
    if not os.path.exists(path):
        return []
    return [json.loads(l) for l in open(path) if l.strip()]
def med(rs, key):
    vals = [r[key] for r in rs if r.get(key) is not None]
    return statistics.median(vals) if vals else None
def fmt(v, spec):
    return "n/a" if v is None else format(v, spec)
def ratio(g, n):
    return "n/a" if g is None or n in (None, 0) else f"x{g / n:.2f}"
def line(label, g, n, spec):
    print(f"{label:<44}{fmt(g, spec):>12}{fmt(n, spec):>12}{ratio(g, n):>10}")

print(f"{'':<44}{'gateway':>12}{'node':>12}{'ratio':>10}")
for size in sizes:
    g, n = rows(f"gateway-{size}"), rows(f"node-{size}")
    head = f"{int(size):,} conns, {rate:,} ev/s, {procs} procs"
    print(f"-- {head} (runs: {len(g)} / {len(n)})")
    line("  p50 latency, ms", med(g, "latency_p50_ms"), med(n, "latency_p50_ms"), ".2f")
    line("  p99 latency, ms", med(g, "latency_p99_ms"), med(n, "latency_p99_ms"), ".2f")
    line("  events delivered/s", med(g, "publish_rate"), med(n, "publish_rate"), ",.0f")
    line("  lost + duplicated + reordered (sum)",
         sum(r["lost"] + r["duplicated"] + r["reordered"] for r in g) if g else None,
         sum(r["lost"] + r["duplicated"] + r["reordered"] for r in n) if n else None, "d")
    line("  RSS per idle connection, KiB", med(g, "gateway_rss_idle_per_conn_kb"), med(n, "gateway_rss_idle_per_conn_kb"), ".1f")
    line("  RSS per connection after events, KiB", med(g, "gateway_rss_per_conn_kb"), med(n, "gateway_rss_per_conn_kb"), ".1f")
    line("  RSS once all closed, per conn held, KiB", med(g, "gateway_rss_after_close_per_conn_kb"), med(n, "gateway_rss_after_close_per_conn_kb"), ".1f")
    gs, ns = med(g, "server_cpu_us_per_event"), med(n, "server_cpu_us_per_event")
    gr, nr = med(g, "redis_cpu_us_per_event"), med(n, "redis_cpu_us_per_event")
    line("  server CPU per event, µs", gs, ns, ".1f")
    line("    of which in the kernel, µs", med(g, "server_kernel_us_per_event"), med(n, "server_kernel_us_per_event"), ".1f")
    line("  Redis CPU per event, µs", gr, nr, ".1f")
    line("  server + Redis CPU per event, µs",
         None if gs is None or gr is None else gs + gr,
         None if ns is None or nr is None else ns + nr, ".1f")
    line("  handshakes/s (whole box)", med(g, "handshakes_per_sec"), med(n, "handshakes_per_sec"), ",.0f")
    line("  server CPU per handshake, µs", med(g, "server_cpu_us_per_handshake"), med(n, "server_cpu_us_per_handshake"), ".0f")
    line("    of which in the kernel, µs", med(g, "server_kernel_us_per_handshake"), med(n, "server_kernel_us_per_handshake"), ".0f")
    line("  Redis CPU per handshake, µs", med(g, "redis_cpu_us_per_handshake"), med(n, "redis_cpu_us_per_handshake"), ".1f")

def best(server):
    top = None
    for r in ladder:
        rs = rows(f"{server}-ladder-{r}")
        if rs and all(x["latency_p99_ms"] < 50 and x["lost"] == 0 and x["connections_held"] == x["connections_asked"] and x["publish_rate"] >= 0.9 * int(r) for x in rs):
            top = (int(r), rs[0]["latency_p99_ms"])
        else:
            break
    return top
print(f"-- highest rate with p99 < 50 ms, nothing lost, 90 % published, 5,000 conns, {procs} procs (tried: {' '.join(ladder)})")
bg, bn = best("gateway"), best("node")
line("  events/s", bg and bg[0], bn and bn[0], ",d")
line("  p99 at that rate, ms", bg and bg[1], bn and bn[1], ".2f")

print("-- kill -9 of the server 2 s into publishing (2,000 conns, 4,000 ev/s, 1 proc)")
g, n = rows("gateway-kill"), rows("node-kill")
line("  restarted (answers /healthz), ms", med(g, "restart_ms"), med(n, "restart_ms"), ".0f")
line("  every connection back, ms after the kill", med(g, "reconnect_all_ms"), med(n, "reconnect_all_ms"), ".0f")
line("  events lost", med(g, "lost"), med(n, "lost"), ",.0f")
line("  events expected", med(g, "events_expected"), med(n, "events_expected"), ",.0f")
print(f"(medians of the runs; servers on CPU 0, clients and publishers on CPU 1; Redis CPU from INFO cpu)")
EOF

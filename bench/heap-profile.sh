#!/usr/bin/env bash
# Where a connection's memory goes: the gateway (debug build, memory broker)
# under valgrind's DHAT while `liveline-load` holds N idle connections (one
# user each, no job, nothing published: `--events 0`), then the heap at its
# peak, split by the code that allocated it, in bytes per connection.
#
#   bash bench/heap-profile.sh          # N=1000; takes a few minutes (valgrind)
#   N=500 bash bench/heap-profile.sh
set -euo pipefail
cd "$(dirname "$0")/.."

n=${N:-1000}
bash scripts/setup.sh >/dev/null
cargo build -q -p liveline-gateway
cargo build -q --release -p liveline-load

dir=$(mktemp -d)
source scripts/ports.sh
port=$(free_port)
valgrind --tool=dhat --dhat-out-file="$dir/dhat.json" \
  target/debug/liveline-gateway serve --port "$port" >"$dir/gateway.log" 2>&1 &
vg=$!
trap 'kill $vg 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 240); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.5 # the gateway is starting under valgrind
done
target/release/liveline-load --url "http://127.0.0.1:$port" --connections "$n" --events 0 \
  --connect-concurrency 32 --duration-limit 600 | grep -E '^(connections held|result)'
kill -TERM $vg
wait $vg 2>/dev/null || true
grep -E 'At t-gmax' "$dir/gateway.log"

python3 - "$dir/dhat.json" "$n" <<'EOF'
import collections, json, re, sys
d = json.load(open(sys.argv[1]))
n = int(sys.argv[2])
ftbl = d["ftbl"]
noise = re.compile(r"^(alloc::|core::|std::|__rust|<alloc|<core|hashbrown|malloc|realloc|calloc|memalign|posix_memalign|aligned_malloc|alloc$|alloc_impl|allocate|with_capacity_in|new<|pin<|\?\?\?)")
def name(f):
    f = f.split(": ", 1)[-1]
    return re.sub(r" \(.*?\)$", "", f)
owners = re.compile(r"(liveline_gateway|socketioxide|engineioxide|hyper::|tungstenite|axum|tower)")
sites = collections.Counter()
for p in d["pps"]:
    if not p["gb"]:
        continue
    frames = [name(ftbl[i]) for i in p["fs"]]
    useful = [f for f in frames if not noise.match(f)] or frames[:1]
    # The allocating call, and the first frame of a crate that owns it.
    owner = next((f for f in useful[1:] if owners.search(f)), None)
    site = useful[0][:70] + (" <- " + owner[:90] if owner else "")
    sites[site] += p["gb"]
total = sum(sites.values())
print(f"heap at its peak: {total / n / 1024:.1f} KiB per connection ({n} connections)")
print(f"{'B/conn':>8}  allocated by")
for site, b in sites.most_common(20):
    print(f"{b / n:8.0f}  {site}")
EOF

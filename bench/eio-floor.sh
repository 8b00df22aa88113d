#!/usr/bin/env bash
# The memory floor of a lean Engine.IO / Socket.IO server on the gateway's own
# stack (tokio, tokio-tungstenite): load/examples/eio_floor.rs, one task per
# connection and nothing else, holding idle connections from its own client.
# Prints its RSS per connection, to set beside the gateway's
# (docs/benchmarks.md, "Where the 8 KiB target is").
#
#   bash bench/eio-floor.sh                  # CONNECTIONS=10000 REPEATS=3
#
# The server runs on CPU 0, the client on CPU 1. RSS is the server's VmRSS
# before the first connection and once the client holds them all (every
# CONNECT answered).
set -euo pipefail
cd "$(dirname "$0")/.."

connections=${CONNECTIONS:-10000}
repeats=${REPEATS:-3}
cargo build -q --release -p liveline-load --example eio_floor

python3 - target/release/examples/eio_floor "$connections" "$repeats" <<'PY'
import statistics, subprocess, sys
binary, n, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def line(p):
    text = p.stdout.readline()
    if not text:
        raise RuntimeError(f"{binary} closed its output before answering")
    return text.split()
per = []
for i in range(repeats):
    server = subprocess.Popen(["taskset", "-c", "0", binary, "server", "0"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    def rss():
        server.stdin.write("rss\n"); server.stdin.flush()
        words = line(server)
        assert words[0] == "rss_kb", words
        return int(words[1])
    listening, port = line(server)
    assert listening == "listening", listening
    before = rss()
    client = subprocess.Popen(["taskset", "-c", "1", binary, "client", port, str(n)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert line(client) == ["held", str(n)]
    after = rss()
    client.stdin.close(); client.wait()
    server.kill(); server.wait()
    per.append((after - before) / n)
    print(f"run {i + 1}: {n:,} idle connections, server RSS {before:,} -> {after:,} KiB: {per[-1]:.2f} KiB each")
print(f"median {statistics.median(per):.2f} KiB per idle connection")
PY

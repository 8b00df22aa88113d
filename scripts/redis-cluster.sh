#!/usr/bin/env bash
# A local Redis Cluster for tests and benchmarks: six redis-server processes
# on free ports (three masters, three replicas), no persistence, in DIR.
#
#   bash scripts/redis-cluster.sh start DIR    start one; prints its seed URL
#   bash scripts/redis-cluster.sh ensure DIR   the one in DIR if it answers, else start one
#   bash scripts/redis-cluster.sh stop DIR     kill its processes (by PID) and remove DIR
#
# The seed URL (`redis-cluster://127.0.0.1:P1,127.0.0.1:P2,...`) is what the
# gateway's --redis-url takes; it is also written to DIR/url. It is ready once
# every replica has synced; a killed master's replica takes over within about
# two seconds (cluster-node-timeout 1000 ms).
set -euo pipefail
source "$(dirname "$0")/ports.sh"

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || {
  echo "usage: $0 start|ensure|stop DIR" >&2
  exit 2
}
command -v redis-server >/dev/null && command -v redis-cli >/dev/null || {
  echo "redis-cluster: redis-server and redis-cli are needed (bash scripts/setup.sh installs them)" >&2
  exit 1
}

stop() {
  [ -d "$dir" ] || return 0
  for pidfile in "$dir"/*.pid; do
    [ -f "$pidfile" ] || continue
    kill -9 "$(cat "$pidfile")" 2>/dev/null || true
  done
  rm -rf "$dir"
}

# Whether every node in DIR answers and the cluster says it is ok.
healthy() {
  [ -f "$dir/url" ] || return 1
  local port
  for port in $(cat "$dir/ports"); do
    redis-cli -p "$port" cluster info 2>/dev/null | grep -q '^cluster_state:ok' || return 1
  done
}


start() {
  stop
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  local ports=() base port tries=0
  while [ ${#ports[@]} -lt 6 ]; do
    tries=$((tries + 1))
    [ $tries -le 50 ] || { echo "redis-cluster: no six free ports found" >&2; exit 1; }
    # Below the ephemeral range (32768+), bus ports (+10000) included.
    base=$((20000 + RANDOM % 2700))
    ports=()
    for port in $(seq "$base" $((base + 5))); do
      # A node also listens on its port + 10000 (the cluster bus).
      port_free "$port" && port_free $((port + 10000)) && ports+=("$port")
    done
    [ ${#ports[@]} -eq 6 ] || ports=()
  done
  for port in "${ports[@]}"; do
    redis-server --port "$port" --bind 127.0.0.1 --daemonize yes \
      --cluster-enabled yes --cluster-config-file "nodes-$port.conf" \
      --cluster-node-timeout 1000 --save "" --appendonly no --repl-diskless-sync-delay 0 \
      --dir "$dir" --pidfile "$dir/$port.pid" --logfile "$dir/$port.log" 9>&-
  done
  for port in "${ports[@]}"; do
    for _ in $(seq 100); do
      redis-cli -p "$port" ping >/dev/null 2>&1 && break
      sleep 0.05 # polling a process that is starting; nothing to wait on
    done
    redis-cli -p "$port" ping >/dev/null
  done
  local nodes=() url=""
  for port in "${ports[@]}"; do
    nodes+=("127.0.0.1:$port")
    url="$url${url:+,}127.0.0.1:$port"
  done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$dir/create.log"
  echo "${ports[*]}" >"$dir/ports"
  # Ready when every node says the cluster is ok and every replica has
  # synced with its master (a replica that never synced cannot take over).
  for _ in $(seq 200); do
    ready=0
    for port in "${ports[@]}"; do
      info=$(redis-cli -p "$port" info replication)
      redis-cli -p "$port" cluster info | grep -q '^cluster_state:ok' || continue
      if grep -q '^role:slave' <<<"$info"; then
        grep -q '^master_link_status:up' <<<"$info" || continue
      fi
      ready=$((ready + 1))
    done
    [ $ready -eq 6 ] && echo "redis-cluster://$url" >"$dir/url" && break
    sleep 0.05 # polling the cluster's own state until every node agrees
  done
  [ -f "$dir/url" ] || { echo "redis-cluster: not ok within 10 s (see $dir)" >&2; exit 1; }
  cat "$dir/url"
}

case "$cmd" in
start) start ;;
stop) stop ;;
ensure)
  mkdir -p "$(dirname "$dir")"
  exec 9>"$dir.lock"
  flock 9
  if healthy; then cat "$dir/url"; else start; fi
  ;;
*)
  echo "usage: $0 start|ensure|stop DIR" >&2
  exit 2
  ;;
esac

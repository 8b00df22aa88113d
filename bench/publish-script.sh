#!/usr/bin/env bash
# What one publish costs Redis: the publish script (gateway/src/broker/publish.lua)
# run by redis-benchmark against a private redis-server, then Redis's own
# account of it (INFO commandstats: usec_per_call of EVALSHA).
#
#   bash bench/publish-script.sh                 # 30,000 calls per case, 3 runs
#   SCRIPT=old.lua CASES=job bash bench/publish-script.sh  # another version, one case
#   CHECKED=1 bash bench/publish-script.sh       # calls say "checked": true, as the gateway's
#   INSTRUCTIONS=1 bash bench/publish-script.sh  # instructions Redis executes per event
#                                                # (under callgrind: stable on a noisy box)
#
# Cases: an event on a user's private stream, a job:chunk:v1 on a job's
# stream (its record is read in the same step), a batch of 16 chunks on a
# job's stream in one call (cost divided by 16), and a group of 16 calls,
# one chunk each on 16 jobs' streams, in one call (what the gateway's group
# commit sends under load; cost divided by 16). Each run starts from an
# empty Redis.
set -euo pipefail
cd "$(dirname "$0")/.."

script=${SCRIPT:-gateway/src/broker/publish.lua}
instructions=${INSTRUCTIONS:-0}
if [ "$instructions" = 1 ]; then
  # Counted, not timed: the same calls give the same count, one run is enough.
  calls=${CALLS:-2000}
  runs=${RUNS:-1}
  unit=instructions
  what="instructions of Redis"
  command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
else
  calls=${CALLS:-30000}
  runs=${RUNS:-3}
  unit=us
  what="usec_per_call of EVALSHA"
fi
cases=${CASES:-private job batch group}
ev='"event":"job:chunk:v1"'
[ "${CHECKED:-0}" = 1 ] && ev="$ev,\"checked\":true"
command -v redis-benchmark >/dev/null || { echo "redis-benchmark is needed (bash scripts/setup.sh)" >&2; exit 1; }

source scripts/ports.sh
dir=$(mktemp -d)
trap 'kill "$(cat "$dir/redis.pid" 2>/dev/null)" 2>/dev/null || true; rm -rf "$dir"' EXIT
if [ "$instructions" = 1 ]; then
  port=$(free_port)
  valgrind --tool=callgrind --callgrind-out-file="$dir/cg.%p" redis-server --port "$port" \
    --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" >"$dir/valgrind.log" 2>&1 &
  echo $! >"$dir/redis.pid"
  # valgrind starts it slowly: at most 60 s.
  redis_answers "$port" 1200 || {
    echo "redis-server under valgrind did not answer:" >&2
    tail -5 "$dir/valgrind.log" >&2
    exit 1
  }
else
  port=$(private_redis "$dir")
fi
cli() { redis-cli -p "$port" "$@"; }

# Instructions Redis executed while `redis-benchmark ARGS...` ran (one client).
count_instructions() {
  local pid f=
  pid=$(cat "$dir/redis.pid")
  redis-benchmark -p "$port" -n 200 -c 1 -q "$@" >/dev/null # warm up
  rm -f "$dir"/cg.*
  callgrind_control -z "$pid" >/dev/null 2>&1
  redis-benchmark -p "$port" -c 1 -q "$@" >/dev/null
  callgrind_control -d "$pid" >/dev/null 2>&1
  for _ in $(seq 300); do # until the dump is written whole
    f=$(ls "$dir"/cg.* 2>/dev/null | head -1 || true)
    [ -n "$f" ] && grep -q '^summary:' "$f" && break
    sleep 0.1
  done
  [ -n "$f" ] || { echo "callgrind wrote no counts:" >&2; tail -5 "$dir/valgrind.log" >&2; return 1; }
  grep -m1 '^summary:' "$f" | awk '{ print $2 }'
}

sha=$(cli script load "$(cat "$script")")
data='{"jobId":"j1","index":12,"text":"a few tokens of an answer, streamed"}'

run_case() { # NAME CALL EVENTS-PER-CALL STREAM-KEY-BASE...
  local name=$1 call=$2 per=$3 i j out=() items=() keys=()
  shift 3
  for i in $(seq "$per"); do items+=("$data"); done
  for j in "$@"; do keys+=("${j}seq" "${j}epoch" "${j}hist" "${j}rec"); done
  for i in $(seq "$runs"); do
    cli flushall >/dev/null
    for j in "$@"; do
      case $j in *'{job:'*) cli hset "${j}rec" owner alice kind research status running >/dev/null ;; esac
    done
    if [ "$instructions" = 1 ]; then
      local ir
      ir=$(count_instructions -n "$calls" EVALSHA "$sha" "${#keys[@]}" "${keys[@]}" "$call" "${items[@]}")
      out+=("$((ir / calls / per))")
      continue
    fi
    cli config resetstat >/dev/null
    redis-benchmark -p "$port" -n "$calls" -c 4 -q EVALSHA "$sha" "${#keys[@]}" \
      "${keys[@]}" "$call" "${items[@]}" >/dev/null
    local call_us
    call_us=$(cli info commandstats | sed -n 's/^cmdstat_evalsha:.*usec_per_call=\([0-9.]*\).*/\1/p')
    out+=("$(awk -v u="$call_us" -v n="$per" 'BEGIN { printf "%.2f", u / n }')")
  done
  local sorted
  sorted=$(printf '%s\n' "${out[@]}" | sort -n)
  printf '%-10s runs: %-30s median %s %s per event\n' "$name" "${out[*]}" \
    "$(sed -n "$(((runs + 1) / 2))p" <<<"$sorted")" "$unit"
}

echo "$script, $calls calls per run$([ "${CHECKED:-0}" = 1 ] && echo ", checked"), $what per event:"
for c in $cases; do
  case $c in
  private) run_case private "{\"stream\":\"notes\",$ev,\"user\":\"alice\"}" 1 'll:{u:5:alice}:s:notes:' ;;
  job) run_case job "{\"stream\":\"job:j1\",$ev}" 1 'll:{job:j1}:' ;;
  batch) run_case batch "{\"stream\":\"job:j1\",$ev}" 16 'll:{job:j1}:' ;;
  group)
    group=() bases=()
    for j in $(seq 16); do
      group+=("{\"stream\":\"job:j$j\",$ev}")
      bases+=("ll:{job:j$j}:")
    done
    run_case group "[$(IFS=,; echo "${group[*]}")]" 16 "${bases[@]}"
    ;;
  *) echo "unknown case $c (private, job, batch, group)" >&2; exit 2 ;;
  esac
done

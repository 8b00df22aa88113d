# Sourced by scripts that start servers of their own: local TCP ports below
# the ephemeral range (32768 and up), so no outgoing connection takes them.

# Whether nothing listens on port $1.
port_free() { [ -z "$(ss -Htln "sport = :$1" 2>/dev/null)" ]; }

# Prints a free port in 20000..31999.
free_port() {
  local p
  for _ in $(seq 50); do
    p=$((20000 + RANDOM % 12000))
    port_free "$p" && echo "$p" && return 0
  done
  echo "no free port found" >&2
  return 1
}

# Starts a private redis-server (no persistence, loopback) with its files in
# directory $1 and prints its port once it answers. Stop it with
# `kill "$(cat "$1/redis.pid")"`.
private_redis() {
  local dir=$1 port
  port=$(free_port) || return 1
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
    --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --dir "$dir" >/dev/null
  redis_answers "$port" 100 && echo "$port" && return 0
  echo "redis-server on port $port did not answer; see $dir/redis.log" >&2
  return 1
}

# Whether a redis-server answers on port $1 within $2 tries, 0.05 s apart.
redis_answers() {
  for _ in $(seq "$2"); do
    redis-cli -p "$1" ping >/dev/null 2>&1 && return 0
    sleep 0.05 # the server is starting
  done
  return 1
}

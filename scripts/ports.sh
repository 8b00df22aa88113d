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

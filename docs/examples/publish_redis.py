"""Publish one job:status:v1 event straight into Redis with Liveline's publish
script (SCRIPT LOAD once, then EVALSHA), with a minimal RESP client over a
socket: Python 3 standard library only. With redis-py the calls are the same:
r.script_load(script) and r.evalsha(sha, 4, *keys, *argv).

    python3 publish_redis.py <redis-host:port> <key-prefix> <user> <job-id> [publish.lua]
"""
import json
import os
import secrets
import socket
import sys
import time


class Resp:
    """Just enough RESP2 for SCRIPT LOAD and EVALSHA."""

    def __init__(self, host: str, port: int):
        self.sock = socket.create_connection((host, port), timeout=10)
        self.file = self.sock.makefile("rb")

    def command(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        return self.read()

    def read(self):
        line = self.file.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.file.read(n + 2)[:-2]
            return data.decode()
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise ValueError(f"unexpected RESP reply {line!r}")


def main() -> int:
    if len(sys.argv) not in (5, 6):
        print(__doc__, file=sys.stderr)
        return 2
    host_port, prefix, user, job_id = sys.argv[1:5]
    lua_path = sys.argv[5] if len(sys.argv) == 6 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "../../gateway/src/broker/publish.lua"
    )
    with open(lua_path, encoding="utf-8") as f:
        script = f.read()
    host, port = host_port.rsplit(":", 1)
    redis = Resp(host, int(port))

    stream = f"job:{job_id}"

    def key(suffix: str) -> str:
        return f"{prefix}{{{stream}}}:{suffix}"  # {hash tag}: one Cluster slot

    keys = [key("seq"), key("epoch"), key("hist"), key("job")]
    data = {
        "jobId": job_id,
        "status": "running",
        "progress": 0.5,
        "message": "halfway (from Python over Redis)",
    }
    argv = [
        f"{prefix}user:{user}",  # 1 channel
        user,  # 2 owner
        "job:status:v1",  # 3 event
        stream,  # 4 stream
        json.dumps(data, separators=(",", ":")),  # 5 data
        str(int(time.time() * 1000)),  # 6 ts
        "1000",  # 7 history kept
        secrets.token_hex(8),  # 8 candidate epoch
        "1",  # 9 guard: the job must exist and not have ended
        data["status"],  # 10 new status (job:status:v1 only; "" otherwise)
        str(data["progress"]),  # 11 progress
        data["message"],  # 12 message
        str(7 * 24 * 3600),  # 13 TTL of the stream's keys
    ]
    sha = redis.command("SCRIPT", "LOAD", script)  # once per process
    env = redis.command("EVALSHA", sha, len(keys), *keys, *argv)
    if isinstance(env, RuntimeError) and str(env).startswith("NOSCRIPT"):
        # Redis restarted and lost its script cache: load again and retry.
        redis.command("SCRIPT", "LOAD", script)
        env = redis.command("EVALSHA", sha, len(keys), *keys, *argv)
    if isinstance(env, RuntimeError):
        print(f"publish failed: {env}", file=sys.stderr)
        return 1
    if env is None:
        print("refused: the job does not exist or already ended", file=sys.stderr)
        return 1
    print(env)  # the envelope JSON: {stream, epoch, seq, ts, data}
    return 0


if __name__ == "__main__":
    # The exit status is main()'s: 0 published, 1 refused, 2 usage.
    sys.exit(main())

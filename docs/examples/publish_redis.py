"""Publish one job:status:v1 event straight into Redis with Liveline's publish
script, using redis-py. register_script runs it by EVALSHA and loads it when
Redis does not have it (after a restart), so nothing else is needed.

    python3 publish_redis.py <redis-host:port> <key-prefix> <user> <job-id> <publish.lua>
"""
import json
import sys

import redis

# Exit status: 2 on a usage error, 1 when the script refuses (gateway/tests/publishing.rs checks it).
if len(sys.argv) != 6:
    print(__doc__, file=sys.stderr)
    sys.exit(2)
addr, prefix, user, job_id, script_path = sys.argv[1:]
host, port = addr.split(":")
r = redis.Redis(host=host, port=int(port))
with open(script_path, encoding="utf-8") as f:
    publish = r.register_script(f.read())

# The stream's four keys share the hash tag {job:ID}: one Redis Cluster slot.
stream = f"job:{job_id}"
keys = [f"{prefix}{{{stream}}}:{k}" for k in ("seq", "epoch", "hist", "rec")]
call = {"stream": stream, "event": "job:status:v1", "user": user}
data = {"jobId": job_id, "status": "running", "progress": 0.5,
        "message": "halfway (from Python over Redis)"}
try:
    envelope = publish(keys=keys, args=[json.dumps(call), json.dumps(data)])
except redis.ResponseError as e:
    # NOTFOUND (no such job of this user), ENDED (the job ended), INVALID (a wrong field)
    print(f"publish failed: {e}", file=sys.stderr)
    sys.exit(1)
print(envelope.decode())

"""A worker in Python for a job kind the gateway knows nothing about.

It takes `job:start:v1` actions of kind `summarize-pdf` from the actions queue
and publishes, on the job's stream, `pdf:page:v1` events (one per page, an
event of this app's own), a `job:result:v1` and the job's statuses, with
redis-py and Liveline's publish script. No gateway change is needed.

    python3 worker_summarize_pdf.py <redis-host:port> <key-prefix> <publish.lua> [step-ms]

It prints one line per published event, `published <event> seq <n>`.
"""
import json
import socket
import sys
import time

import redis

# Exit status 2: a usage error (the arguments above).
if len(sys.argv) not in (4, 5):
    print(__doc__, file=sys.stderr)
    sys.exit(2)
addr, prefix, script_path = sys.argv[1:4]
step = (int(sys.argv[4]) if len(sys.argv) == 5 else 200) / 1000
host, port = addr.split(":")
r = redis.Redis(host=host, port=int(port))
with open(script_path, encoding="utf-8") as f:
    script = r.register_script(f.read())

ACTIONS = f"{prefix}actions"
# Each worker type reads the actions queue in a consumer group of its own, so
# every type sees every action and takes those of its kinds; several
# processes of one type share the group, and each action goes to one of them.
GROUP = "summarize-pdf"
CONSUMER = f"py-{socket.gethostname()}"


class Ended(Exception):
    """The job ended elsewhere (cancelled): stop working on it."""


def publish(stream, event, data):
    keys = [f"{prefix}{{{stream}}}:{k}" for k in ("seq", "epoch", "hist", "rec")]
    call = {"stream": stream, "event": event}
    try:
        envelope = json.loads(script(keys=keys, args=[json.dumps(call), json.dumps(data)]))
    except redis.ResponseError as e:
        if str(e).startswith(("ENDED", "NOTFOUND")):
            raise Ended(str(e)) from e
        raise
    print(f"published {event} seq {envelope['seq']}", flush=True)
    return envelope


def summarize(job):
    job_id, stream = job["id"], f"job:{job['id']}"
    pages = int(job["params"].get("pages", 5))
    status = lambda state, progress, message: publish(  # noqa: E731
        stream, "job:status:v1",
        {"jobId": job_id, "status": state, "progress": progress, "message": message})
    status("running", 0.0, f"reading {pages} pages")
    words = 0
    for page in range(1, pages + 1):
        time.sleep(step)
        text = f"page {page} of {job['params'].get('url', 'the document')}"
        words += len(text.split())
        publish(stream, "pdf:page:v1", {"jobId": job_id, "page": page, "text": text})
        status("running", page / pages * 0.99, f"read page {page} of {pages}")
    publish(stream, "job:result:v1",
            {"jobId": job_id, "result": {"pages": pages, "words": words}})
    status("completed", 1.0, "summarized")


try:
    # A new group starts at the queue's end: the actions enqueued from now on.
    r.xgroup_create(ACTIONS, GROUP, id="$", mkstream=True)
except redis.ResponseError as e:
    if "BUSYGROUP" not in str(e):
        raise
while True:
    for _, entries in r.xreadgroup(GROUP, CONSUMER, {ACTIONS: ">"}, count=16, block=1000) or []:
        for entry_id, fields in entries:
            action = json.loads(fields[b"action"])
            job = action["data"]
            if action["action"] == "job:start:v1" and job.get("kind") == "summarize-pdf":
                try:
                    summarize(job)
                except Ended as e:
                    print(f"stopped: {e}", flush=True)
            # Actions of other kinds belong to other worker types (their groups).
            r.xack(ACTIONS, GROUP, entry_id)

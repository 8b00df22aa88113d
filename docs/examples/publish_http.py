"""Publish one job:status:v1 event through the gateway's HTTP endpoint.

Python 3 standard library only:

    python3 publish_http.py <gateway-url> <service-token> <user> <job-id>

The token must carry role "service" (or "admin").
"""
import json
import sys
import urllib.error
import urllib.request


def main() -> int:
    if len(sys.argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    gateway, token, user, job_id = sys.argv[1:]
    body = {
        "user": user,
        "stream": f"job:{job_id}",
        "event": "job:status:v1",
        "data": {
            "jobId": job_id,
            "status": "running",
            "progress": 0.5,
            "message": "halfway (from Python over HTTP)",
        },
    }
    req = urllib.request.Request(
        gateway.rstrip("/") + "/api/v1/publish",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            print(resp.read().decode())  # the envelope {stream, epoch, seq, ts, data}
            return 0
    except urllib.error.HTTPError as e:
        # {"error": {"code": ..., "message": ...}}: see docs/errors.md
        print(f"publish failed: {e.code} {e.read().decode()}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    # The exit status is main()'s: 0 published, 1 refused, 2 usage.
    sys.exit(main())

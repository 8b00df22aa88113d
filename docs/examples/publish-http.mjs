// Publish one job:status:v1 event through the gateway's HTTP endpoint.
// Node 18+ (global fetch), no dependencies.
//
//   node publish-http.mjs <gateway-url> <service-token> <user> <job-id>
//
// The token must carry `role: "service"` (or "admin"), e.g.
//   liveline-gateway mint-token --sub worker-1 --role service
const [gateway, token, user, jobId] = process.argv.slice(2);
// Exit status: 2 on a usage error, 1 when the gateway refuses (gateway/tests/publishing.rs checks it).
if (!jobId) {
  console.error('usage: node publish-http.mjs <gateway-url> <service-token> <user> <job-id>');
  process.exit(2);
}

const res = await fetch(new URL('/api/v1/publish', gateway), {
  method: 'POST',
  headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
  body: JSON.stringify({
    user,
    stream: `job:${jobId}`,
    event: 'job:status:v1',
    data: { jobId, status: 'running', progress: 0.5, message: 'halfway (from Node over HTTP)' },
  }),
});
const body = await res.json();
if (!res.ok) {
  // {"error": {"code": "...", "message": "..."}}: see docs/errors.md
  console.error(`publish failed: ${res.status} ${JSON.stringify(body)}`);
  process.exit(1);
}
// The envelope the gateway assigned: {stream, epoch, seq, ts, data}
console.log(JSON.stringify(body));

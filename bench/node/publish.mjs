// The worker side of the Node reference stack (bench/compare.sh): publishes
// job chunks to users' rooms through @socket.io/redis-emitter, as a Node
// worker beside a socket.io + Redis adapter deployment does.
//
//   REDIS_URL=redis://127.0.0.1:6379 KEY=socket.io node bench/node/publish.mjs < plan.json
//
// The plan on stdin: {"jobs": [[user, jobId], ...], "events": N, "rate": R}.
// Event i of every job goes out in the order liveline-load
// publishes the gateway's: index by index, user by user, at R events/s in
// total, each an envelope shaped like the gateway's `job:chunk:v1` (seq =
// index + 1, `text` = the publish time in microseconds since the Unix
// epoch, which the load client turns into latency). One Node process
// publishes them in order on its event loop.
// Prints one JSON line: {"published", "failed", "secs", "maxLagMs"}.
import { Emitter } from "@socket.io/redis-emitter";
import { createClient } from "redis";

const chunks = [];
for await (const c of process.stdin) chunks.push(c);
const plan = JSON.parse(Buffer.concat(chunks).toString("utf8"));

const redis = createClient({ url: process.env.REDIS_URL ?? "redis://127.0.0.1:6379" });
redis.on("error", (e) => console.error("redis:", e.message));
await redis.connect();
const emitter = new Emitter(redis, { key: process.env.KEY ?? "socket.io" });

const micros = () => Math.round((performance.timeOrigin + performance.now()) * 1000);
const n = plan.jobs.length;
const perEventMs = 1000 / plan.rate;
const t0 = performance.now() + 50;
let published = 0;
let maxLagMs = 0;
for (let index = 0; index < plan.events; index++) {
  for (let r = 0; r < n; r++) {
    const at = t0 + (index * n + r) * perEventMs;
    const wait = at - performance.now();
    // Pacing to the schedule: the event is due at `at`.
    if (wait > 1) await new Promise((ok) => setTimeout(ok, wait));
    maxLagMs = Math.max(maxLagMs, performance.now() - at);
    const [user, jobId] = plan.jobs[r];
    emitter.to(`user:${user}`).emit("job:chunk:v1", {
      stream: `job:${jobId}`,
      epoch: "node",
      seq: index + 1,
      ts: Date.now(),
      data: { jobId, index, text: String(micros()) },
    });
    published++;
  }
}
// Every PUBLISH has been written once the client answers a PING after them.
await redis.ping();
const secs = (performance.now() - t0) / 1000;
console.log(JSON.stringify({ published, failed: 0, secs, maxLagMs }));
await redis.quit();

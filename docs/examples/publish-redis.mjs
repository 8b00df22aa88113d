// Publish one job:status:v1 event straight into Redis with Liveline's publish
// script, using ioredis. defineCommand runs the script by EVALSHA and loads it
// when Redis does not have it (after a restart), so nothing else is needed.
//
//   node publish-redis.mjs <redis-host:port> <key-prefix> <user> <job-id> <publish.lua>
import { readFileSync } from 'node:fs';
import Redis from 'ioredis';

const [addr, prefix, user, jobId, scriptPath] = process.argv.slice(2);
// Exit status: 2 on a usage error, 1 when the script refuses (gateway/tests/publishing.rs checks it).
if (!scriptPath) {
  console.error('usage: node publish-redis.mjs <redis-host:port> <key-prefix> <user> <job-id> <publish.lua>');
  process.exit(2);
}
const [host, port] = addr.split(':');
const redis = new Redis({ host, port: Number(port), lazyConnect: true });
redis.defineCommand('livelinePublish', { numberOfKeys: 4, lua: readFileSync(scriptPath, 'utf8') });

// The stream's four keys share the hash tag {job:ID}: one Redis Cluster slot.
const stream = `job:${jobId}`;
const keys = ['seq', 'epoch', 'hist', 'rec'].map((k) => `${prefix}{${stream}}:${k}`);
const call = { stream, event: 'job:status:v1', user };
const data = { jobId, status: 'running', progress: 0.5, message: 'halfway (from Node over Redis)' };
try {
  const envelope = await redis.livelinePublish(...keys, JSON.stringify(call), JSON.stringify(data));
  console.log(envelope);
} catch (e) {
  // NOTFOUND (no such job of this user), ENDED (the job ended), INVALID (a wrong field)
  console.error(`publish failed: ${e.message}`);
  process.exitCode = 1;
} finally {
  redis.disconnect();
}

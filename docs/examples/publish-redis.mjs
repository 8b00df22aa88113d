// Publish one job:status:v1 event straight into Redis with Liveline's publish
// script (SCRIPT LOAD once, then EVALSHA), speaking RESP over node:net: no
// dependencies. With a Redis client library (ioredis, node-redis) the calls are
// the same: scriptLoad / evalsha with the KEYS and ARGV below.
//
//   node publish-redis.mjs <redis-host:port> <key-prefix> <user> <job-id> [publish.lua]
import net from 'node:net';
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';

const [hostPort, prefix, user, jobId, luaPath] = process.argv.slice(2);
// Exit status: 2 on a usage error, 1 when Redis or the publish script refuses.
if (!jobId) {
  console.error('usage: node publish-redis.mjs <host:port> <key-prefix> <user> <job-id> [publish.lua]');
  process.exit(2);
}
const script = readFileSync(
  luaPath ?? fileURLToPath(new URL('../../gateway/src/broker/publish.lua', import.meta.url)),
  'utf8',
);

// --- a minimal RESP client ------------------------------------------------
const [host, port] = hostPort.split(':');
const sock = net.createConnection({ host, port: Number(port) });
await new Promise((ok, fail) => sock.once('connect', ok).once('error', fail));
let buf = Buffer.alloc(0);
const waiting = [];
sock.on('data', (chunk) => {
  buf = Buffer.concat([buf, chunk]);
  for (;;) {
    const parsed = parse(buf, 0);
    if (!parsed) return;
    buf = buf.subarray(parsed.end);
    waiting.shift()(parsed.value);
  }
});
function parse(b, i) {
  const eol = b.indexOf('\r\n', i);
  if (eol < 0) return null;
  const type = String.fromCharCode(b[i]);
  const line = b.toString('utf8', i + 1, eol);
  if (type === '+') return { value: line, end: eol + 2 };
  if (type === '-') return { value: new Error(line), end: eol + 2 };
  if (type === ':') return { value: Number(line), end: eol + 2 };
  if (type === '$') {
    const n = Number(line);
    if (n < 0) return { value: null, end: eol + 2 };
    if (b.length < eol + 2 + n + 2) return null;
    return { value: b.toString('utf8', eol + 2, eol + 2 + n), end: eol + 2 + n + 2 };
  }
  if (type === '*') {
    const n = Number(line);
    const items = [];
    let at = eol + 2;
    for (let k = 0; k < n; k++) {
      const item = parse(b, at);
      if (!item) return null;
      items.push(item.value);
      at = item.end;
    }
    return { value: n < 0 ? null : items, end: at };
  }
  throw new Error(`unexpected RESP type ${type}`);
}
function command(...args) {
  const parts = [`*${args.length}\r\n`];
  for (const a of args) parts.push(`$${Buffer.byteLength(String(a))}\r\n${a}\r\n`);
  sock.write(parts.join(''));
  return new Promise((ok) => waiting.push(ok));
}

// --- publish ----------------------------------------------------------------
const stream = `job:${jobId}`;
const key = (suffix) => `${prefix}{${stream}}:${suffix}`; // {hash tag}: one Cluster slot
const keys = [key('seq'), key('epoch'), key('hist'), key('job')];
const data = { jobId, status: 'running', progress: 0.5, message: 'halfway (from Node over Redis)' };
const argv = [
  `${prefix}user:${user}`, // 1 channel
  user, // 2 owner
  'job:status:v1', // 3 event
  stream, // 4 stream
  JSON.stringify(data), // 5 data
  String(Date.now()), // 6 ts
  '1000', // 7 history kept
  randomBytes(8).toString('hex'), // 8 candidate epoch
  '1', // 9 guard: the job must exist and not have ended
  data.status, // 10 new status (job:status:v1 only; '' otherwise)
  String(data.progress), // 11 progress
  data.message, // 12 message
  String(7 * 24 * 3600), // 13 TTL of the stream's keys
];

const sha = await command('SCRIPT', 'LOAD', script); // once per process
let env = await command('EVALSHA', sha, keys.length, ...keys, ...argv);
if (env instanceof Error && env.message.startsWith('NOSCRIPT')) {
  // Redis restarted and lost its script cache: load again and retry.
  await command('SCRIPT', 'LOAD', script);
  env = await command('EVALSHA', sha, keys.length, ...keys, ...argv);
}
sock.end();
if (env instanceof Error) {
  console.error(`publish failed: ${env.message}`);
  process.exit(1);
}
if (env === null) {
  console.error('refused: the job does not exist or already ended');
  process.exit(1);
}
console.log(env); // the envelope JSON: {stream, epoch, seq, ts, data}

// The package in plain Node ESM (Node 20: no global WebSocket), as the docs
// show it: imported by name, no init() call (the client loads its wasm from
// the package on first use), `ws` as the WebSocket. Against a real gateway
// on Redis, killed (SIGKILL) and restarted mid-job: the client reconnects and
// resumes with every event exactly once, in order.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { WebSocket } from 'ws';
import { Liveline } from 'liveline-client';
import { startGateway, jobPublisher, randomPrefix, cleanRedis, checkContiguous, waitFor } from '../browser-pkg/lib.mjs';
import { mintToken } from '../support/node.mjs';

const prefix = randomPrefix();
let gw;
after(async () => {
  await gw?.kill('SIGKILL');
  await cleanRedis(prefix);
});

test('without a WebSocket (Node 20) connect() ends in failed with a clear reason, not a reconnect loop, and send() rejects with failed', async () => {
  const saved = globalThis.WebSocket;
  delete globalThis.WebSocket;
  try {
    const client = new Liveline({ url: 'http://127.0.0.1:1', getToken: () => 't', storage: 'memory' });
    client.connect();
    const s = client.getSnapshot();
    assert.equal(s.current, 'failed');
    assert.match(s.reason, /options\.WebSocket/);
    // send() while failed rejects at once with the failure's code, queueing nothing.
    await assert.rejects(client.send('job:start:v1', { kind: 'llm' }), (e) => e.code === 'failed' && /options\.WebSocket/.test(e.message));
    assert.equal(client.getSnapshot().queued, 0);
    client.dispose();
  } finally {
    if (saved !== undefined) globalThis.WebSocket = saved;
  }
});

test('Node with ws: connects with no init(), runs a job, resumes after a gateway kill and restart', { timeout: 90_000 }, async () => {
  gw = await startGateway({ prefix });
  const user = 'node-ws-user';
  const token = await mintToken(user);
  const client = new Liveline({
    url: gw.url,
    getToken: () => token,
    WebSocket,
    storage: 'memory',
    backoff: { initialMs: 100, maxMs: 500 },
  });
  const states = [];
  client.subscribe(() => states.push(client.getSnapshot().current));
  const events = [];
  client.on('*', (env, name) => {
    if (name !== 'stream:recovered:v1' && env && typeof env.stream === 'string') events.push({ name, seq: env.seq, epoch: env.epoch, stream: env.stream, payload: env });
  });
  client.connect();
  await waitFor('connected', () => client.getSnapshot().current === 'connected');

  const { jobId } = await client.send('job:start:v1', { kind: 'llm', params: { prompt: 'p' } });
  const stream = `job:${jobId}`;
  const ofJob = () => events.filter((e) => e.stream === stream);
  await waitFor('the queued status (seq 1)', () => ofJob().length >= 1);

  const pub = jobPublisher({ prefix, user, jobId });
  const received = (n) => waitFor(`seq ${n}`, () => ofJob().length >= n, { timeout: 20_000 });

  for (let i = 0; i < 5; i++) await pub.chunk();
  await received(pub.seq);

  await gw.kill('SIGKILL');
  await waitFor('reconnecting', () => client.getSnapshot().current === 'reconnecting');
  for (let i = 0; i < 5; i++) await pub.chunk(); // only in Redis history while the gateway is down
  await gw.restart();
  await waitFor('connected again', () => client.getSnapshot().current === 'connected', { timeout: 20_000 });
  await received(pub.seq);

  for (let i = 0; i < 5; i++) await pub.chunk();
  await pub.complete();
  await received(pub.seq);

  const bad = checkContiguous(ofJob(), pub.seq);
  assert.equal(bad, null, `events of ${stream}: ${bad}`);
  const text = ofJob().filter((e) => e.name === 'job:chunk:v1').map((e) => e.payload.data.text).join('');
  assert.equal(text, Array.from({ length: 15 }, (_, i) => `t${i} `).join(''));
  assert.ok(states.includes('reconnecting') && states.at(-1) === 'connected', states.join(' -> '));
  client.dispose();
});

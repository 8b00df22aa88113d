// Every kind of stream resumes after a gateway SIGKILL with nothing lost or
// repeated: a user's private stream and a topic (a job's stream: the
// custom-kind and packaging/node-ws tests). The SDK client (npm package in
// Node, with ws) holds both; events are published straight to Redis before,
// during and after the outage.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { WebSocket } from 'ws';
import { Liveline } from 'liveline-client';
import { startGateway, randomPrefix, cleanRedis, checkContiguous, waitFor } from '../browser-pkg/lib.mjs';
import { mintToken, publishRedis } from '../support/node.mjs';

const prefix = randomPrefix();
let gw;
after(async () => {
  await gw?.kill('SIGKILL');
  await cleanRedis(prefix);
});

test('a private stream and a topic resume across a gateway kill -9 with every event exactly once, in order', { timeout: 90_000 }, async () => {
  gw = await startGateway({ prefix, args: ['--public-topic-prefix', 'room:'] });
  const user = 'resumer';
  const token = await mintToken(user);
  const client = new Liveline({ url: gw.url, getToken: () => token, WebSocket, storage: 'memory', backoff: { initialMs: 100, maxMs: 500 } });
  const events = [];
  client.on('*', (env, name) => {
    if (name !== 'stream:recovered:v1' && env && typeof env.stream === 'string') events.push({ name, seq: env.seq, stream: env.stream, n: env.data?.n });
  });
  client.connect();
  await waitFor('connected', () => client.getSnapshot().current === 'connected');
  const ack = await client.send('topic:subscribe:v1', { topic: 'room:lobby' });
  assert.equal(ack.topic, 'room:lobby');

  let sent = 0;
  const publishBoth = async () => {
    sent += 1;
    await publishRedis({ prefix, user, stream: 'notes', event: 'note:added:v1', data: { n: sent } });
    await publishRedis({ prefix, stream: 'room:lobby', event: 'chat:message:v1', data: { n: sent }, topicPrefix: 'room:' });
  };
  const of = (stream) => events.filter((e) => e.stream === stream);
  const both = (n) => waitFor(`${n} events on each stream`, () => of('notes').length >= n && of('room:lobby').length >= n, { timeout: 20_000 });

  for (let i = 0; i < 3; i++) await publishBoth();
  await both(3);
  await gw.kill('SIGKILL');
  await waitFor('reconnecting', () => client.getSnapshot().current === 'reconnecting');
  for (let i = 0; i < 3; i++) await publishBoth(); // only in Redis history while the gateway is down
  await gw.restart();
  await waitFor('connected again', () => client.getSnapshot().current === 'connected', { timeout: 20_000 });
  await both(6);
  for (let i = 0; i < 3; i++) await publishBoth();
  await both(9);

  for (const stream of ['notes', 'room:lobby']) {
    const bad = checkContiguous(of(stream), 9);
    assert.equal(bad, null, `events of ${stream}: ${bad}`);
    assert.deepEqual(of(stream).map((e) => e.n), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
  }
  client.dispose();
});

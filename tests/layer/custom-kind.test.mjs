// The layer as a team would use it: a job kind and an event nobody built in.
// A Python worker (docs/examples/worker_summarize_pdf.py, redis-py) runs
// `summarize-pdf` jobs and publishes `pdf:page:v1` events; a client started
// through the SDK (the npm package in Node, with ws) receives them in order.
// The gateway is killed (SIGKILL) mid-job and restarted: the client resumes
// with nothing lost or repeated. No gateway code knows the kind or the event.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { WebSocket } from 'ws';
import { Liveline } from 'liveline-client';
import { startGateway, randomPrefix, cleanRedis, checkContiguous, waitFor } from '../browser-pkg/lib.mjs';
import { mintToken, run, ROOT, REDIS_URL } from '../support/node.mjs';

const prefix = randomPrefix();
let gw;
let worker;
after(async () => {
  worker?.kill('SIGKILL');
  await gw?.kill('SIGKILL');
  await cleanRedis(prefix);
});

/** Starts the Python worker; `published()` counts the events it reported publishing. */
function startWorker() {
  const proc = spawn(
    'python3',
    [
      join(ROOT, 'docs/examples/worker_summarize_pdf.py'),
      new URL(REDIS_URL).host,
      prefix,
      join(ROOT, 'gateway/src/broker/publish.lua'),
      '120',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  proc.stdout.on('data', (d) => (out += d));
  proc.stderr.on('data', (d) => (out += d));
  return { proc, log: () => out, published: () => out.split('\n').filter((l) => l.startsWith('published ')).length, kill: (s) => proc.kill(s) };
}

test('a Python worker publishes pdf:page:v1 for a summarize-pdf job; the SDK client resumes across a gateway kill with nothing lost or repeated', { timeout: 90_000 }, async () => {
  gw = await startGateway({ prefix });
  worker = startWorker();
  const user = 'pdf-reader';
  const token = await mintToken(user);
  const client = new Liveline({ url: gw.url, getToken: () => token, WebSocket, storage: 'memory', backoff: { initialMs: 100, maxMs: 500 } });
  const events = [];
  client.on('*', (env, name) => {
    if (name !== 'stream:recovered:v1' && env && typeof env.stream === 'string') events.push({ name, seq: env.seq, stream: env.stream, data: env.data });
  });
  const pages = [];
  client.on('pdf:page:v1', (env) => pages.push(env.data.page));
  client.connect();
  await waitFor('connected', () => client.getSnapshot().current === 'connected');
  // The worker takes actions enqueued after its consumer group exists: wait for the group.
  await waitFor('the worker reads the actions queue', async () => {
    const { stdout } = await run('redis-cli', ['-u', REDIS_URL, 'XINFO', 'GROUPS', `${prefix}actions`]);
    return stdout.includes('summarize-pdf');
  });

  const total = 20;
  const { jobId } = await client.send('job:start:v1', { kind: 'summarize-pdf', params: { url: 'report.pdf', pages: total } });
  const stream = `job:${jobId}`;
  const ofJob = () => events.filter((e) => e.stream === stream);
  await waitFor('page 3', () => pages.includes(3), { timeout: 20_000 });

  await gw.kill('SIGKILL');
  await waitFor('reconnecting', () => client.getSnapshot().current === 'reconnecting');
  const before = worker.published();
  await waitFor('three more pages published while the gateway is down', () => worker.published() >= before + 6, { timeout: 20_000 });
  await gw.restart();
  await waitFor('connected again', () => client.getSnapshot().current === 'connected', { timeout: 20_000 });
  await waitFor('the job completes', () => ofJob().some((e) => e.name === 'job:status:v1' && e.data.status === 'completed'), { timeout: 30_000 });

  // queued + running + 20 × (page + status) + result + completed
  const n = 1 + 1 + total * 2 + 1 + 1;
  const bad = checkContiguous(ofJob(), n);
  assert.equal(bad, null, `events of ${stream}: ${bad}\n${worker.log()}`);
  assert.deepEqual(pages, Array.from({ length: total }, (_, i) => i + 1));
  const result = ofJob().find((e) => e.name === 'job:result:v1');
  assert.equal(result.data.result.pages, total);
  client.dispose();
});

// The npm package in Chromium against the official Node `socket.io` v4
// server (tests/interop/server.mjs, socket.io 4.8.4), with and without
// connection-state recovery. The harness comes from our own static server
// (cross-origin WebSocket).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, startStaticServer, launchBrowser, openHarness, waitState, waitFor } from './lib.mjs';

const SERVER = join(ROOT, 'tests/interop/server.mjs');
let browser, web;

before(async () => {
  assert.ok(existsSync(join(ROOT, 'tests/interop/node_modules/socket.io')), 'run `npm ci --prefix tests/interop` first');
  [browser, web] = await Promise.all([launchBrowser(), startStaticServer()]);
});

after(async () => {
  await browser?.close();
  await web?.close();
});

/** Starts server.mjs on a free port; resolves {url, stop}. */
async function startSocketIo(recovery) {
  // stdin stays a pipe: the server exits when it ends.
  const proc = spawn(process.execPath, [SERVER, '0', ...(recovery ? ['--recovery'] : [])], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  proc.stderr.on('data', (d) => (out += d));
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`socket.io server did not start\n${out}`)), 15_000);
    proc.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening (\d+)/);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    proc.on('exit', (code) => reject(new Error(`socket.io server exited (${code})\n${out}`)));
  });
  return {
    url: `http://127.0.0.1:${port}`,
    stop: async () => {
      proc.stdin.end();
      proc.kill('SIGTERM');
      await new Promise((r) => (proc.exitCode !== null ? r() : proc.on('exit', r)));
    },
  };
}

for (const recovery of [false, true]) {
  test(`against the official socket.io 4.8 server${recovery ? ' with connection-state recovery' : ''}: auth, events, acks`, { timeout: 60_000 }, async () => {
    const server = await startSocketIo(recovery);
    const { context, page, problems } = await openHarness(browser, web.url);
    try {
      await page.evaluate((url) => window.harness.create('c', { url, token: 'good', storage: 'memory' }), server.url);
      await page.evaluate(() => window.harness.connect('c'));
      await waitState(page, 'c', 'connected');

      // Events right after CONNECT: an unknown name and a contract event.
      const first = await waitFor('welcome and job:status:v1', async () => {
        const ev = await page.evaluate(() => window.harness.events('c'));
        return ev.some((e) => e.name === 'welcome') && ev.some((e) => e.name === 'job:status:v1') && ev;
      });
      // An unknown event arrives by name (its payload under recovery: see the TODO test below).
      if (!recovery) assert.deepEqual(Object.keys(first.find((e) => e.name === 'welcome').payload).sort(), ['recovery', 'sid']);
      const status = first.find((e) => e.name === 'job:status:v1');
      assert.equal(status.seq, 1);
      assert.equal(status.payload.data.status, 'running');
      assert.equal(status.payload.data.progress, 0.5);

      // Acks: data comes back; a refusal rejects with the server's code.
      const echo = await page.evaluate(() => window.harness.sendAndWait('c', 'echo:v1', { a: 1, b: [true, 'x'] }));
      assert.deepEqual(echo, { done: true, ok: true, data: { a: 1, b: [true, 'x'] }, error: null });
      const refused = await page.evaluate(() => window.harness.sendAndWait('c', 'refuse:v1', {}));
      assert.equal(refused.ok, false);
      assert.equal(refused.error.isError, true);
      assert.equal(refused.error.code, 'not_allowed');

      // Contract events on a stream (with recovery on: a trailing offset argument each).
      const ticks = await page.evaluate(() => window.harness.sendAndWait('c', 'ticks:v1', { n: 5 }));
      assert.deepEqual(ticks.data, { sent: 5 });
      const got = await waitFor('5 market ticks', async () => {
        const ev = (await page.evaluate(() => window.harness.events('c'))).filter((e) => e.name === 'market:tick:v1');
        return ev.length >= 5 && ev;
      });
      assert.deepEqual(got.map((e) => e.seq), [1, 2, 3, 4, 5]);
      assert.ok(got.every((e) => e.stream === 'market:BTC-USD' && e.epoch === 'e1'), JSON.stringify(got[0]));
      assert.deepEqual(got.map((e) => e.payload.data.price), [101, 102, 103, 104, 105]);
      assert.deepEqual(got[0].payload.data, { symbol: 'BTC-USD', price: 101 });
      // The unknown event after the ticks arrives too, by name.
      await waitFor('mystery:event:v7', async () => (await page.evaluate(() => window.harness.events('c'))).some((e) => e.name === 'mystery:event:v7'));

      // Server-to-client acks: the server emits `ask` with an ack callback;
      // the listener's `reply` answers it (once), and the server reports
      // what it got as `answer`.
      await page.evaluate(() => window.harness.answer('c', 'ask', 'pong'));
      const asked = await page.evaluate(() => window.harness.sendAndWait('c', 'ask:v1', { q: 42 }));
      assert.equal(asked.ok, true);
      const answer = await waitFor('answer', async () => (await page.evaluate(() => window.harness.events('c'))).find((e) => e.name === 'answer'));
      assert.deepEqual(answer.payload, ['pong', { q: 42 }]);
      assert.deepEqual(await page.evaluate(() => window.harness.answers('c')), { withReply: 1, without: 0 });

      // Binary attachments arrive as Uint8Array, nested ones too.
      await page.evaluate(() => window.harness.sendAndWait('c', 'bin:v1', {}));
      const bin = await waitFor('bin', async () => (await page.evaluate(() => window.harness.events('c'))).find((e) => e.name === 'bin'));
      assert.deepEqual(bin.payload, [{ bytes: [1, 2, 3] }, { nested: { bytes: [4, 5] } }]);

      assert.deepEqual(problems, []);
      await page.evaluate(() => window.harness.close('c'));
      assert.equal(await page.evaluate(() => window.harness.snapshot('c').current), 'closed');
    } finally {
      await context.close();
      await server.stop();
    }
  });
}

test('against the official socket.io server: a refused token ends in failed after one fresh-token retry', { timeout: 60_000 }, async () => {
  const server = await startSocketIo(false);
  const { context, page } = await openHarness(browser, web.url);
  try {
    await page.evaluate((url) => window.harness.create('c', { url, token: 'bad', storage: 'memory', backoff: { initialMs: 50, maxMs: 100 } }), server.url);
    await page.evaluate(() => window.harness.connect('c'));
    const snap = await waitState(page, 'c', 'failed');
    assert.match(snap.error ?? snap.reason, /unauthorized/);
    assert.equal((await page.evaluate(() => window.harness.tokenInfo('c'))).calls, 2, 'asked for a token twice');
    assert.deepEqual(await page.evaluate(() => window.harness.stats('c')).then((s) => [s.timers, s.sockets]), [0, 0]);
  } finally {
    await context.close();
    await server.stop();
  }
});

// With connection-state recovery on, the server appends an offset argument to
// every event without an ack; the CONNECT reply's `pid` says so. The SDK
// strips it, so a plain event looks the same whatever the server's setting.
test('against the official socket.io server with recovery: a plain (non-contract) event reaches the app without the offset', { timeout: 60_000 }, async () => {
  const server = await startSocketIo(true);
  const { context, page } = await openHarness(browser, web.url);
  try {
    await page.evaluate((url) => window.harness.create('c', { url, token: 'good', storage: 'memory' }), server.url);
    await page.evaluate(() => window.harness.connect('c'));
    await waitState(page, 'c', 'connected');
    const welcome = await waitFor('welcome', async () => (await page.evaluate(() => window.harness.events('c'))).find((e) => e.name === 'welcome'));
    assert.equal(typeof welcome.payload?.sid, 'string', `welcome payload: ${JSON.stringify(welcome.payload)}`);
    assert.equal(welcome.payload.recovery, true);
  } finally {
    await context.close();
    await server.stop();
  }
});

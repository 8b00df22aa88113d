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
      // A plain event arrives by name with its one argument: with recovery
      // on, the offset the server appends is not passed on.
      const welcome = first.find((e) => e.name === 'welcome').payload;
      assert.deepEqual(Object.keys(welcome).sort(), ['recovered', 'recovery', 'sid'], JSON.stringify(welcome));
      assert.equal(welcome.recovery, recovery);
      const status = first.find((e) => e.name === 'job:status:v1');
      assert.equal(status.seq, 1);
      assert.equal(status.payload.data.status, 'running');
      assert.equal(status.payload.data.progress, 0.5);

      // Raw emits and acks, as socket.io-client users write them: every
      // argument goes out and comes back unchanged, an ok-shaped value too.
      const echoed = await page.evaluate(async () => {
        const c = window.harness.client('c');
        const one = await c.emitWithAck('echo', { a: 1, b: [true, 'x'] });
        const shaped = await c.emitWithAck('echo', { ok: true, data: 1, more: 2 });
        const all = await new Promise((resolve) => c.emit('echo', 1, 'two', [3], (...args) => resolve(args)));
        const timed = await c.timeout(5000).emitWithAck('echo', 'in time');
        return { one, shaped, all, timed, server: c.server };
      });
      assert.deepEqual(echoed, { one: { a: 1, b: [true, 'x'] }, shaped: { ok: true, data: 1, more: 2 }, all: [1, 'two', [3]], timed: 'in time', server: 'socket.io' });
      // A durable action reaches a plain server as `{key, data}`, and its ack
      // resolves send() as it is (at least once: see docs/sdk.md).
      const order = await page.evaluate(() => window.harness.sendAndWait('c', 'order:v1', { qty: 2 }));
      assert.equal(order.ok, true, JSON.stringify(order));
      assert.deepEqual(order.data.received.data, { qty: 2 });
      assert.equal(order.data.received.key.length, 32);

      // 1,000 plain events from one emit, whole and in order, without the
      // recovery offset.
      const burst = await page.evaluate(
        () =>
          new Promise((resolve) => {
            const c = window.harness.client('c');
            const got = [];
            const off = c.on('tick', (...args) => {
              got.push(args);
              if (got.length === 1000) {
                off();
                resolve(got);
              }
            });
            c.emit('burst', { n: 1000 });
          }),
      );
      assert.deepEqual(burst, Array.from({ length: 1000 }, (_, i) => [i + 1]));

      // Enveloped events on a stream (with recovery on: a trailing offset argument each).
      const ticks = await page.evaluate(() => window.harness.client('c').emitWithAck('ticks', { n: 5 }));
      assert.deepEqual(ticks, { sent: 5 });
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
      await page.evaluate(() => window.harness.client('c').emitWithAck('ask', { q: 42 }));
      const answer = await waitFor('answer', async () => (await page.evaluate(() => window.harness.events('c'))).find((e) => e.name === 'answer'));
      assert.deepEqual(answer.payload, ['pong', { q: 42 }]);
      assert.deepEqual(await page.evaluate(() => window.harness.answers('c')), { withReply: 1, without: 0 });

      // Binary both ways: attachments arrive as Uint8Array, nested ones too,
      // and binary arguments go out as attachments and come back in the ack.
      await page.evaluate(() => window.harness.client('c').emitWithAck('bin'));
      const bin = await waitFor('bin', async () => (await page.evaluate(() => window.harness.events('c'))).find((e) => e.name === 'bin'));
      assert.deepEqual(bin.payload, [{ bytes: [1, 2, 3] }, { nested: { bytes: [4, 5] } }]);
      const binEcho = await page.evaluate(async () => {
        const args = await new Promise((resolve) =>
          window.harness.client('c').emit('echo', new Uint8Array([7, 8, 9]).buffer, { deep: [new Uint8Array([10])] }, (...a) => resolve(a)),
        );
        return args.map((a) => JSON.parse(JSON.stringify(a, (_k, v) => (v instanceof Uint8Array ? { bytes: [...v] } : v))));
      });
      assert.deepEqual(binEcho, [{ bytes: [7, 8, 9] }, { deep: [{ bytes: [10] }] }]);

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

// Connection-state recovery with the official server: the SDK keeps the
// session's `pid` and the last event's offset, sends both on reconnect, and
// the server replays what it emitted while the client was away.
test('against the official socket.io server with recovery: 50 events emitted while away come back in order, recovered', { timeout: 60_000 }, async () => {
  const server = await startSocketIo(true);
  const { context, page, problems } = await openHarness(browser, web.url);
  try {
    await page.evaluate((url) => window.harness.create('c', { url, token: 'good', storage: 'memory' }), server.url);
    await page.evaluate(() => window.harness.connect('c'));
    const first = await waitState(page, 'c', 'connected');
    assert.equal(first.recovered, false, 'a first connection recovers nothing');
    await waitFor('welcome', async () => (await page.evaluate(() => window.harness.events('c'))).some((e) => e.name === 'welcome'));
    // The server closes the transport, then emits 50 `missed` events to the gone socket.
    await page.evaluate(() => window.harness.client('c').emit('away', 50));
    await waitFor('reconnected, recovered', async () => {
      const states = await page.evaluate(() => window.harness.states('c'));
      return states.some((s) => s.current === 'reconnecting') && states.at(-1).current === 'connected' && states.at(-1);
    });
    const back = await page.evaluate(() => ({ snap: window.harness.snapshot('c'), recovered: window.harness.client('c').recovered }));
    assert.equal(back.snap.recovered, true, JSON.stringify(back.snap));
    assert.equal(back.recovered, true);
    const missed = await waitFor('50 missed events', async () => {
      const ev = (await page.evaluate(() => window.harness.events('c'))).filter((e) => e.name === 'missed');
      return ev.length >= 50 && ev;
    });
    assert.deepEqual(missed.map((e) => e.payload), Array.from({ length: 50 }, (_, i) => i + 1));
    // The server agrees: the same session, recovered.
    const welcomes = (await page.evaluate(() => window.harness.events('c'))).filter((e) => e.name === 'welcome');
    assert.equal(welcomes.length, 2);
    assert.equal(welcomes[1].payload.sid, welcomes[0].payload.sid);
    assert.equal(welcomes[1].payload.recovered, true);
    assert.deepEqual(problems, []);
  } finally {
    await context.close();
    await server.stop();
  }
});

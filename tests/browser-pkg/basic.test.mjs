// The npm package in Chromium against a real gateway (in-memory broker):
// connect, receive events, acks.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startStaticServer, startGateway, launchBrowser, openHarness, waitState, waitFor, streamEvents } from './lib.mjs';

let browser, web, gw;

before(async () => {
  [browser, web, gw] = await Promise.all([launchBrowser(), startStaticServer(), startGateway({ args: ['--demo-worker', '--demo-step-ms', '50'] })]);
});

after(async () => {
  await browser?.close();
  await web?.close();
  await gw?.stop();
});

test('connects, receives a job\'s events, and acks resolve or reject with codes', { timeout: 60_000 }, async () => {
  const { context, page, problems } = await openHarness(browser, web.url);
  try {
    const info = await page.evaluate((url) => window.harness.create('c', { url, sub: 'basic-user', backoff: { initialMs: 100, maxMs: 1000 } }), gw.url);
    assert.equal(info.storage, 'indexeddb');
    await page.evaluate(() => window.harness.connect('c'));
    const snap = await waitState(page, 'c', 'connected');
    assert.equal(snap.previous, 'connecting');
    assert.equal(snap.queued, 0);

    // An action with an ack: resolves with the gateway's result.
    const started = await page.evaluate(() => window.harness.sendAndWait('c', 'job:start:v1', { kind: 'research', params: { query: 'q' } }));
    assert.equal(started.ok, true, JSON.stringify(started));
    assert.equal(typeof started.data.jobId, 'string');
    const jobId = started.data.jobId;

    // The demo worker runs the job: its events arrive, contiguous, ending in completed.
    const stream = `job:${jobId}`;
    const events = await waitFor(
      'the job to complete',
      async () => {
        const ev = await streamEvents(page, 'c', stream);
        return ev.some((e) => e.name === 'job:status:v1' && e.payload.data.status === 'completed') && ev;
      },
      { timeout: 30_000 },
    );
    assert.deepEqual(events.map((e) => e.seq), events.map((_, i) => i + 1), 'contiguous seq from 1');
    assert.ok(events.every((e) => e.payload.data.jobId === jobId && typeof e.epoch === 'string' && e.epoch.length > 0));
    assert.equal(events[0].name, 'job:status:v1');
    assert.equal(events[0].payload.data.status, 'queued');

    // Invalid payloads reject with an Error whose code is invalid_payload.
    for (const bad of [{ kind: 'Not a kind!' }, { kind: 'research', params: 5 }, 'text']) {
      const r = await page.evaluate((bad) => window.harness.sendAndWait('c', 'job:start:v1', bad), bad);
      assert.equal(r.ok, false, `expected rejection for ${JSON.stringify(bad)}`);
      assert.equal(r.error.isError, true, 'rejects with an Error');
      assert.equal(r.error.code, 'invalid_payload', JSON.stringify(r.error));
    }
    // Cancelling someone else's (or no) job: not_found.
    const r = await page.evaluate(() => window.harness.sendAndWait('c', 'job:cancel:v1', { jobId: 'no-such-job' }));
    assert.equal(r.ok, false);
    assert.equal(r.error.code, 'not_found');

    assert.deepEqual(problems, []);
    await page.evaluate(() => window.harness.close('c'));
    assert.equal(await page.evaluate(() => window.harness.snapshot('c').current), 'closed');
  } finally {
    await context.close();
  }
});

test('an action over the gateway\'s limit (100 KiB) is refused at once, nothing queued, and the action behind it is delivered', { timeout: 60_000 }, async () => {
  const { context, page, problems } = await openHarness(browser, web.url);
  try {
    await page.evaluate((url) => window.harness.create('big', { url, sub: 'big-user', storage: 'memory' }), gw.url);
    await page.evaluate(() => window.harness.connect('big'));
    await waitState(page, 'big', 'connected');
    const started = Date.now();
    const refused = await page.evaluate(() =>
      window.harness.sendAndWait('big', 'job:start:v1', { kind: 'research', params: { blob: 'x'.repeat(100 * 1024) } }),
    );
    assert.ok(Date.now() - started < 1000, 'refused at once');
    assert.equal(refused.ok, false);
    assert.equal(refused.error.code, 'payload_too_large', JSON.stringify(refused.error));
    assert.equal((await page.evaluate(() => window.harness.snapshot('big'))).queued, 0, 'nothing queued');
    const next = await page.evaluate(() => window.harness.sendAndWait('big', 'job:start:v1', { kind: 'research', params: { query: 'q' } }));
    assert.equal(next.ok, true, JSON.stringify(next));
    const snap = await page.evaluate(() => window.harness.snapshot('big'));
    assert.equal(snap.current, 'connected', 'no reconnect loop');
    assert.equal(snap.previous, 'connecting', 'the connection never dropped');
    assert.deepEqual(problems, []);
  } finally {
    await context.close();
  }
});

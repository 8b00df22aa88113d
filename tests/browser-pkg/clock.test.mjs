// Two clocks: the SDK's timers run on `performance.now()`, and the wall clock
// (`Date.now()`) only stores expiries across reloads. In Chromium against a
// real gateway, the page's wall clock is stepped an hour forward (as NTP or a
// waking laptop can): no action expires and no heartbeat times out.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startStaticServer, startGateway, launchBrowser, openHarness, waitState, waitFor } from './lib.mjs';

let browser, web, gw;

before(async () => {
  [browser, web, gw] = await Promise.all([launchBrowser(), startStaticServer(), startGateway({ args: ['--demo-worker'] })]);
});

after(async () => {
  await browser?.close();
  await web?.close();
  await gw?.stop();
});

test('a wall clock stepped an hour forward expires no queued action and fires no timeout', { timeout: 60_000 }, async () => {
  const { context, page, problems } = await openHarness(browser, web.url);
  try {
    await page.evaluate((url) => window.harness.create('c', { url, sub: 'clock-user', storage: 'memory' }), gw.url);
    await page.evaluate(() => window.harness.connect('c'));
    await waitState(page, 'c', 'connected');

    // Offline, an action waits in the outbox (it expires after 5 minutes).
    await context.setOffline(true);
    await waitState(page, 'c', 'offline');
    const ticket = await page.evaluate(() => window.harness.send('c', 'job:start:v1', { kind: 'llm' }));
    assert.equal((await page.evaluate(() => window.harness.snapshot('c'))).queued, 1);

    // The wall clock steps an hour forward.
    await page.evaluate(() => {
      const real = Date.now;
      Date.now = () => real() + 3_600_000;
    });
    const stepped = await page.evaluate(() => window.harness.states('c').length);

    // Back online: the action is delivered, not expired.
    await context.setOffline(false);
    const result = await waitFor('the queued action settles', async () => {
      const r = await page.evaluate((t) => window.harness.result(t), ticket);
      return r.done && r;
    });
    assert.equal(result.ok, true, JSON.stringify(result));
    assert.equal(typeof result.data.jobId, 'string');

    // Connected again, an action's round trip re-arms the timer: with the wall
    // clock driving it, the heartbeat deadline would lie an hour in the past.
    const second = await page.evaluate(() => window.harness.sendAndWait('c', 'job:cancel:v1', { jobId: 'no-such-job' }));
    assert.equal(second.error?.code, 'not_found');
    // The reconnect going online caused is expected; after it, nothing may drop the link.
    const since = (await page.evaluate(() => window.harness.states('c'))).slice(stepped);
    const after = since.slice(since.findIndex((s) => s.current === 'connected'));
    assert.deepEqual(
      after.filter((s) => s.current === 'reconnecting' || s.current === 'failed').map((s) => s.reason),
      [],
      `states after the step: ${after.map((s) => `${s.current}(${s.reason})`).join(' -> ')}`,
    );
    assert.equal((await page.evaluate(() => window.harness.snapshot('c'))).current, 'connected');
    assert.deepEqual(problems, []);
  } finally {
    await context.close();
  }
});

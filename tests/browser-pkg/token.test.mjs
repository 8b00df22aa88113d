// Tokens: getToken is asked before every connect. A token that expires on a
// live connection gets the socket closed by the gateway
// (`session:expired:v1`, then DISCONNECT); the package reconnects with a
// fresh token from getToken.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startStaticServer, startGateway, launchBrowser, openHarness, waitState, waitFor } from './lib.mjs';

let browser, web;

before(async () => {
  [browser, web] = await Promise.all([launchBrowser(), startStaticServer()]);
});

after(async () => {
  await browser?.close();
  await web?.close();
});

test('an expiring token: the gateway closes the socket, the package reconnects with a fresh token from getToken', { timeout: 60_000 }, async () => {
  const gw = await startGateway({ args: ['--jwt-leeway-secs', '0'] });
  const tokenLog = [];
  const { context, page, problems } = await openHarness(browser, web.url, { tokenLog });
  try {
    // Every getToken() mints a 3 s token.
    await page.evaluate((url) => window.harness.create('c', { url, sub: 'expiry-user', ttl: 3, storage: 'memory', backoff: { initialMs: 100, maxMs: 500 } }), gw.url);
    await page.evaluate(() => window.harness.connect('c'));
    await waitState(page, 'c', 'connected');
    assert.equal((await page.evaluate(() => window.harness.tokenInfo('c'))).calls, 1);

    // Past the first expiry (3 s, at most 1 s of rounding): a new session with a second token.
    const info = await waitFor(
      'a reconnect with a second token',
      async () => {
        const i = await page.evaluate(() => window.harness.tokenInfo('c'));
        const s = await page.evaluate(() => window.harness.snapshot('c'));
        return i.calls >= 2 && s.current === 'connected' && i;
      },
      { timeout: 10_000 },
    );
    assert.notEqual(info.tokens[1], info.tokens[0], 'a fresh token');
    const events = await page.evaluate(() => window.harness.events('c'));
    const expired = events.filter((e) => e.name === 'session:expired:v1');
    assert.ok(expired.length >= 1, `session:expired:v1 seen; events: ${events.map((e) => e.name).join(',')}`);
    assert.equal(expired[0].payload.reason, 'token_expired');

    const states = await page.evaluate(() => window.harness.states('c'));
    const names = states.map((s) => s.current);
    assert.ok(!names.includes('failed'), `states: ${names.join(' -> ')}`);
    const i = names.indexOf('connected');
    assert.ok(names.indexOf('connected', i + 1) > i, `connected twice: ${names.join(' -> ')}`);
    // The new session works: an action is acked.
    const r = await page.evaluate(() => window.harness.sendAndWait('c', 'job:start:v1', { kind: 'research' }));
    assert.equal(r.ok, true, JSON.stringify(r));
    assert.deepEqual(problems.filter((p) => !p.includes('WebSocket')), []);
  } finally {
    await context.close();
    await gw.stop();
  }
});

test('a reconnect forced by a gateway restart asks getToken again', { timeout: 60_000 }, async () => {
  const gw = await startGateway();
  const { context, page } = await openHarness(browser, web.url);
  try {
    await page.evaluate((url) => window.harness.create('c', { url, sub: 'restart-token-user', storage: 'memory', backoff: { initialMs: 100, maxMs: 300 } }), gw.url);
    await page.evaluate(() => window.harness.connect('c'));
    await waitState(page, 'c', 'connected');
    assert.equal((await page.evaluate(() => window.harness.tokenInfo('c'))).calls, 1);
    await gw.kill('SIGKILL');
    await waitState(page, 'c', 'reconnecting');
    await gw.restart();
    await waitState(page, 'c', 'connected', 20_000);
    const calls = (await page.evaluate(() => window.harness.tokenInfo('c'))).calls;
    const attempts = (await page.evaluate(() => window.harness.states('c'))).filter((s) => s.current === 'connecting' || s.current === 'reconnecting').length;
    assert.ok(calls >= 2, `getToken called ${calls} times`);
    assert.ok(calls <= attempts + 1, `getToken called ${calls} times for ${attempts} attempts`);
  } finally {
    await context.close();
    await gw.kill('SIGKILL');
  }
});

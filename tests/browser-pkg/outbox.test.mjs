// The offline outbox of the npm package in Chromium against a Redis-backed
// gateway: offline/online transitions, and actions that survive a page
// reload and take effect exactly once.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startStaticServer, startGateway, launchBrowser, openHarness, gotoHarness, waitState, waitFor,
  randomPrefix, cleanRedis, mintToken, api, REDIS_URL, sleep, run,
} from './lib.mjs';

let browser, web, gw;
const prefix = randomPrefix();

before(async () => {
  [browser, web, gw] = await Promise.all([launchBrowser(), startStaticServer(), startGateway({ prefix })]);
});

after(async () => {
  await browser?.close();
  await web?.close();
  gw?.signal('SIGCONT');
  await gw?.stop();
  await cleanRedis(prefix);
});

async function jobsOf(user) {
  const token = await mintToken(user, { ttl: 600 });
  const r = await api(gw, token, '/api/v1/jobs?limit=100');
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.jobs;
}

/** The user's idempotency records: `{prefix}idem:{len(user)}:{user}:…` (docs/deployment.md). */
async function idempotencyKeys(user) {
  const pattern = `${prefix}idem:${Buffer.byteLength(user)}:${user}:*`;
  const { stdout } = await run('redis-cli', ['-u', REDIS_URL, '--scan', '--pattern', pattern]);
  return stdout.split('\n').filter(Boolean);
}

const options = (url, sub, storageKey) => ({ url, sub, storageKey, backoff: { initialMs: 100, maxMs: 500 }, ackTimeoutMs: 2000, connectTimeoutMs: 2000 });

test('setOffline(true) -> offline; setOffline(false) -> connected and the outbox drains', { timeout: 60_000 }, async () => {
  const user = 'offline-user';
  const { context, page, problems } = await openHarness(browser, web.url);
  try {
    await page.evaluate(([o]) => window.harness.create('c', o), [options(gw.url, user, `t4:${prefix}`)]);
    await page.evaluate(() => window.harness.connect('c'));
    await waitState(page, 'c', 'connected');

    const sawOffline = page.evaluate(() => new Promise((r) => window.addEventListener('offline', () => r(true), { once: true })));
    await context.setOffline(true);
    assert.equal(await sawOffline, true, 'the browser fires offline');
    const off = await waitState(page, 'c', 'offline');
    assert.equal(off.previous, 'connected');

    const tickets = await page.evaluate(() => [1, 2, 3].map((i) => window.harness.send('c', 'job:start:v1', { kind: 'research', params: { i } })));
    await page.waitForFunction(() => window.harness.snapshot('c').queued === 3, null, { timeout: 5000 });
    assert.equal(await page.evaluate(() => window.harness.snapshot('c').current), 'offline', 'still offline with actions queued');
    await sleep(300);
    assert.equal((await jobsOf(user)).length, 0, 'nothing reached the gateway while offline');

    await context.setOffline(false);
    await waitState(page, 'c', 'connected');
    await page.waitForFunction(() => window.harness.snapshot('c').queued === 0, null, { timeout: 10_000 });
    const results = await waitFor('every action settled', () =>
      page.evaluate((ts) => {
        const r = ts.map((t) => window.harness.result(t));
        return r.every((x) => x.done) && r;
      }, tickets),
    );
    assert.ok(results.every((r) => r.ok && typeof r.data.jobId === 'string'), JSON.stringify(results));
    assert.equal(new Set(results.map((r) => r.data.jobId)).size, 3);
    const states = (await page.evaluate(() => window.harness.states('c'))).map((s) => s.current);
    assert.deepEqual(states.slice(states.indexOf('offline') - 1, states.indexOf('offline') + 1), ['connected', 'offline']);
    // The queued count in the snapshot went 1, 2, 3 while offline and back to 0.
    const queued = (await page.evaluate(() => window.harness.states('c'))).map((s) => s.queued);
    assert.ok(queued.includes(3) && queued.at(-1) === 0, `queued: ${queued.join(',')}`);
    assert.equal((await jobsOf(user)).length, 3);
    assert.deepEqual(problems, []);
  } finally {
    await context.setOffline(false).catch(() => {});
    await context.close();
  }
});

test('actions queued offline survive a reload (IndexedDB) and are applied exactly once; action:settled fires', { timeout: 60_000 }, async () => {
  const user = 'reload-user';
  const key = `t3:${prefix}`;
  const { context, page, problems } = await openHarness(browser, web.url);
  try {
    const info = await page.evaluate(([o]) => window.harness.create('c', o), [options(gw.url, user, key)]);
    assert.equal(info.storage, 'indexeddb');
    await page.evaluate(() => window.harness.connect('c'));
    await waitState(page, 'c', 'connected');
    await context.setOffline(true);
    await waitState(page, 'c', 'offline');
    await page.evaluate(() => [1, 2, 3].forEach((i) => window.harness.send('c', 'job:start:v1', { kind: 'llm', params: { i } })));
    await page.waitForFunction(() => window.harness.snapshot('c').queued === 3, null, { timeout: 5000 });
    // The outbox reaches IndexedDB.
    const saved = await waitFor('3 actions in IndexedDB', async () => {
      const text = await page.evaluate((k) => window.harness.idbOutbox(k), key);
      return text && JSON.parse(text).length === 3 && JSON.parse(text);
    });
    assert.equal(saved.length, 3);
    // Close (the outbox stays), come back online, reload: the old page never sent them.
    await page.evaluate(() => window.harness.close('c'));
    await context.setOffline(false);
    await gotoHarness(page, web.url);

    const info2 = await page.evaluate(([o]) => window.harness.create('c', o), [options(gw.url, user, key)]);
    assert.equal(info2.storage, 'indexeddb');
    await page.evaluate(() => window.harness.connect('c'));
    await waitState(page, 'c', 'connected');
    const settled = await waitFor('3 action:settled', () => page.evaluate(() => window.harness.settled('c').length >= 3 && window.harness.settled('c')));
    assert.equal(settled.length, 3);
    assert.ok(settled.every((s) => s.action === 'job:start:v1' && s.ok === true && typeof s.data.jobId === 'string'), JSON.stringify(settled));
    assert.equal(new Set(settled.map((s) => s.data.jobId)).size, 3);
    await page.waitForFunction(() => window.harness.snapshot('c').queued === 0, null, { timeout: 5000 });
    await sleep(500);
    const jobs = await jobsOf(user);
    assert.deepEqual(jobs.map((j) => j.id ?? j.jobId).sort(), settled.map((s) => s.data.jobId).sort(), 'exactly these 3 jobs exist');
    assert.equal((await idempotencyKeys(user)).length, 3, 'three idempotency records');
    assert.equal(JSON.parse((await page.evaluate((k) => window.harness.idbOutbox(k), key)) ?? '[]').length, 0, 'outbox in IndexedDB empty');
    assert.deepEqual(problems, []);
  } finally {
    await context.setOffline(false).catch(() => {});
    await context.close();
  }
});

/** `liveline_actions_total{action="job:start:v1",outcome="ok"}` on this gateway process. */
async function startsHandled() {
  const text = await (await fetch(`${gw.url}/metrics`, { signal: AbortSignal.timeout(5000) })).text();
  const m = text.match(/liveline_actions_total\{action="job:start:v1",outcome="ok"\} (\d+)/);
  return m ? Number(m[1]) : 0;
}

test('actions in flight when the page reloads (gateway frozen with SIGSTOP) are applied exactly once', { timeout: 60_000 }, async (t) => {
  const user = 'inflight-user';
  const handledBefore = await startsHandled();
  const key = `t3b:${prefix}`;
  const { context, page, problems } = await openHarness(browser, web.url);
  try {
    await page.evaluate(([o]) => window.harness.create('c', o), [options(gw.url, user, key)]);
    await page.evaluate(() => window.harness.connect('c'));
    await waitState(page, 'c', 'connected');
    // Frozen: the frames reach the gateway's kernel buffer, no ack comes back.
    gw.signal('SIGSTOP');
    try {
      await page.evaluate(() => [1, 2, 3].forEach((i) => window.harness.send('c', 'job:start:v1', { kind: 'research', params: { i } })));
      await waitFor('3 actions in IndexedDB', async () => {
        const text = await page.evaluate((k) => window.harness.idbOutbox(k), key);
        return text && JSON.parse(text).length === 3;
      });
      await gotoHarness(page, web.url);
      await page.evaluate(([o]) => window.harness.create('c', o), [options(gw.url, user, key)]);
      await page.evaluate(() => window.harness.connect('c'));
      await sleep(300);
    } finally {
      gw.signal('SIGCONT');
    }
    await waitState(page, 'c', 'connected', 20_000);
    const settled = await waitFor('3 action:settled', () => page.evaluate(() => window.harness.settled('c').length >= 3 && window.harness.settled('c')), { timeout: 20_000 })
      .catch(async (e) => {
        // What the page and the gateway saw, for a failure that does not reproduce alone.
        const seen = await page.evaluate(() => ({ settled: window.harness.settled('c'), snapshot: window.harness.snapshot('c') }));
        throw new Error(`${e.message}\npage: ${JSON.stringify(seen)}\ngateway log (tail):\n${gw.log().slice(-4000)}`);
      });
    assert.ok(settled.every((s) => s.ok === true && typeof s.data.jobId === 'string'), JSON.stringify(settled));
    assert.equal(new Set(settled.map((s) => s.data.jobId)).size, 3);
    await sleep(1000); // the old socket's frames, if the gateway reads them late
    const jobs = await jobsOf(user);
    assert.equal(jobs.length, 3, `jobs: ${JSON.stringify(jobs.map((j) => j.id))}`);
    assert.deepEqual(jobs.map((j) => j.id ?? j.jobId).sort(), settled.map((s) => s.data.jobId).sort());
    assert.equal(settled.length, 3, 'each restored action settles once');
    // How many job:start:v1 the gateway answered: above 3 means the old page's
    // frames were read after the freeze too, and the idempotency keys held.
    t.diagnostic(`job:start:v1 handled by the gateway: ${(await startsHandled()) - handledBefore} (3 jobs created)`);
    assert.deepEqual(problems.filter((p) => !p.includes('WebSocket')), []);
  } finally {
    await context.close();
  }
});

// A Redis-backed gateway killed (SIGKILL) and restarted mid-job: the package
// shows reconnecting then connected and resumes with every event exactly
// once, in order. The job's events are published from the test straight to
// Redis (the gateway binary's `publish`), also while the gateway is down.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startStaticServer, startGateway, launchBrowser, openHarness, waitState, waitFor, streamEvents,
  publish, jobPublisher, randomPrefix, cleanRedis, checkContiguous,
} from './lib.mjs';

let browser, web, gw;
const prefix = randomPrefix();

before(async () => {
  [browser, web, gw] = await Promise.all([launchBrowser(), startStaticServer(), startGateway({ prefix })]);
});

after(async () => {
  await browser?.close();
  await web?.close();
  await gw?.kill('SIGKILL');
  await cleanRedis(prefix);
});

test('gateway SIGKILLed and restarted mid-job: reconnecting -> connected, every event exactly once, in order', { timeout: 90_000 }, async () => {
  const user = 'restart-user';
  const { context, page, problems } = await openHarness(browser, web.url);
  try {
    await page.evaluate((url) => window.harness.create('c', { url, sub: 'restart-user', storage: 'memory', backoff: { initialMs: 100, maxMs: 500 } }), gw.url);
    await page.evaluate(() => window.harness.connect('c'));
    await waitState(page, 'c', 'connected');

    // The job belongs to the user (the gateway resumes only owned streams).
    const started = await page.evaluate(() => window.harness.sendAndWait('c', 'job:start:v1', { kind: 'llm', params: { prompt: 'p' } }));
    assert.equal(started.ok, true, JSON.stringify(started));
    const jobId = started.data.jobId;
    const stream = `job:${jobId}`;
    await waitFor('the queued status (seq 1)', async () => (await streamEvents(page, 'c', stream)).length >= 1);

    const pub = jobPublisher({ prefix, user, jobId });
    const received = (n) => waitFor(`seq ${n} in the page`, async () => (await streamEvents(page, 'c', stream)).length >= n, { timeout: 20_000 });

    // Live, before the kill.
    for (let i = 0; i < 5; i++) await pub.chunk();
    await received(pub.seq);

    await gw.kill('SIGKILL');
    await waitState(page, 'c', 'reconnecting');

    // While the gateway is down: these exist only in Redis history.
    for (let i = 0; i < 5; i++) await pub.chunk();
    // Let the client fail a few attempts against the closed port.
    await page.waitForFunction(() => window.harness.snapshot('c').attempt >= 2, null, { timeout: 10_000 });

    await gw.restart();
    await waitState(page, 'c', 'connected', 20_000);
    await received(pub.seq);

    // Live again, after the restart, then the end of the job.
    for (let i = 0; i < 5; i++) await pub.chunk();
    await pub.complete();
    await received(pub.seq);
    await new Promise((r) => setTimeout(r, 500)); // any late duplicate would show up here

    const events = await streamEvents(page, 'c', stream);
    const bad = checkContiguous(events, pub.seq);
    assert.equal(bad, null, `events of ${stream}: ${bad}`);
    assert.equal(new Set(events.map((e) => e.epoch)).size, 1, 'one epoch');
    // The chunks' text arrives whole, in order.
    const text = events.filter((e) => e.name === 'job:chunk:v1').map((e) => e.payload.data.text).join('');
    assert.equal(text, Array.from({ length: 15 }, (_, i) => `t${i} `).join(''));

    const all = await page.evaluate(() => window.harness.events('c'));
    const recovered = all.filter((e) => e.name === 'stream:recovered:v1');
    assert.ok(recovered.length >= 1, 'a stream:recovered:v1 after the reconnect');
    assert.ok(recovered.every((e) => e.payload.recovered === true && e.payload.stream === stream), JSON.stringify(recovered));

    const states = (await page.evaluate(() => window.harness.states('c'))).map((s) => s.current);
    const iConn = states.indexOf('connected');
    const iRec = states.indexOf('reconnecting', iConn);
    assert.ok(iConn >= 0 && iRec > iConn && states.indexOf('connected', iRec) > iRec, `states: ${states.join(' -> ')}`);
    assert.ok(!states.includes('failed'), `states: ${states.join(' -> ')}`);
    assert.deepEqual(problems.filter((p) => !p.includes('WebSocket connection')), []);
  } finally {
    await context.close();
  }
});

test('events published continuously across a SIGKILL and restart: nothing lost, nothing twice, in order', { timeout: 120_000 }, async () => {
  const user = 'restart-user-2';
  const { context, page, problems } = await openHarness(browser, web.url);
  let publishing = true;
  let publisher;
  try {
    await page.evaluate((url) => window.harness.create('c', { url, sub: 'restart-user-2', storage: 'memory', backoff: { initialMs: 50, maxMs: 300 } }), gw.url);
    await page.evaluate(() => window.harness.connect('c'));
    await waitState(page, 'c', 'connected');
    const started = await page.evaluate(() => window.harness.sendAndWait('c', 'job:start:v1', { kind: 'llm' }));
    assert.equal(started.ok, true, JSON.stringify(started));
    const jobId = started.data.jobId;
    const stream = `job:${jobId}`;

    // A worker that never stops while the gateway dies and comes back.
    let last = 1;
    let index = 0;
    publisher = (async () => {
      while (publishing) {
        const env = await publish({ prefix, user, stream, event: 'job:chunk:v1', data: { jobId, index, text: `${index},` } });
        index += 1;
        last = env.seq;
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    const received = (n, timeout = 20_000) => waitFor(`seq ${n} in the page`, async () => (await streamEvents(page, 'c', stream)).length >= n, { timeout });

    await received(8);
    await gw.kill('SIGKILL');
    await waitState(page, 'c', 'reconnecting');
    await new Promise((r) => setTimeout(r, 700));
    await gw.restart();
    await waitState(page, 'c', 'connected', 20_000);
    const mark = last;
    await received(mark + 8);
    // Once more, to cross a restart with the client mid-resume history.
    await gw.kill('SIGKILL');
    await new Promise((r) => setTimeout(r, 300));
    await gw.restart();
    await waitState(page, 'c', 'connected', 20_000);
    await received(last + 5);
    publishing = false;
    await publisher;
    await received(last);
    await new Promise((r) => setTimeout(r, 500));

    const events = await streamEvents(page, 'c', stream);
    const bad = checkContiguous(events, last);
    assert.equal(bad, null, `events of ${stream}: ${bad}`);
    const text = events.filter((e) => e.name === 'job:chunk:v1').map((e) => e.payload.data.text).join('');
    assert.equal(text, Array.from({ length: index }, (_, i) => `${i},`).join(''));
    assert.ok(last > 20, `published ${last} events`);
    assert.deepEqual(problems.filter((p) => !p.includes('WebSocket connection')), []);
  } finally {
    publishing = false;
    await publisher?.catch(() => {});
    await context.close();
  }
});

// Jobs that survive reloads and races, in Chromium against a real gateway
// (in-memory broker, the demo worker streaming an answer chunk by chunk):
// `jobOf(client, id)` rebuilds a job's whole state from the gateway's history
// and then goes live, with nothing missed or repeated, and shows no text out
// of order while the history read is under way.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startStaticServer, startGateway, launchBrowser, openHarness, gotoHarness, waitState, waitFor } from './lib.mjs';

let browser, web, gw;

before(async () => {
  // Slow steps (600 ms, chunks every 200 ms), so a reload lands mid-answer.
  [browser, web, gw] = await Promise.all([launchBrowser(), startStaticServer(), startGateway({ args: ['--demo-worker', '--demo-step-ms', '600'] })]);
});

after(async () => {
  await browser?.close();
  await web?.close();
  await gw?.stop();
});

/** Records every state `watchJob` reports, in the page, as `window.__views`. */
function watch(page, jobId) {
  return page.evaluate((jobId) => {
    window.__views = [];
    window.harness.jobs.watchJob(window.harness.client('c'), jobId, (v) => window.__views.push(v));
  }, jobId);
}

/** The job's chunks as the gateway's history has them, joined in index order. */
function historyText(page, jobId) {
  return page.evaluate(
    async ([url, jobId]) => {
      const token = await window.__mintToken('jobs-user', 3600);
      const res = await fetch(`${url}/api/v1/jobs/${jobId}/events`, { headers: { authorization: `Bearer ${token}` } });
      const body = await res.json();
      return body.events
        .filter((e) => e.event === 'job:chunk:v1')
        .sort((a, b) => a.envelope.data.index - b.envelope.data.index)
        .map((e) => e.envelope.data.text)
        .join('');
    },
    [gw.url, jobId],
  );
}

test('a reload in the middle of a streamed answer shows the whole answer so far, then the rest, nothing repeated', { timeout: 60_000 }, async () => {
  const { context, page, problems } = await openHarness(browser, web.url);
  try {
    await page.evaluate((url) => window.harness.create('c', { url, sub: 'jobs-user', storage: 'memory' }), gw.url);
    await page.evaluate(() => window.harness.connect('c'));
    await waitState(page, 'c', 'connected');
    const jobId = await page.evaluate(async () => (await window.harness.jobs.startJob(window.harness.client('c'), 'llm', { prompt: 'why push?' })).jobId);
    await watch(page, jobId);
    // Two chunks in: the answer is being streamed.
    const before = await waitFor('two chunks', async () => {
      const v = await page.evaluate(() => window.__views.at(-1));
      return v.text.split(' ').length >= 3 && v;
    }, { timeout: 20_000 });
    assert.notEqual(before.status, 'completed', 'reloaded mid-answer');

    // Reload: a new page, a new client, no memory of the job but its id.
    await gotoHarness(page, web.url);
    await page.evaluate((url) => window.harness.create('c', { url, sub: 'jobs-user', storage: 'memory' }), gw.url);
    await page.evaluate(() => window.harness.connect('c'));
    await waitState(page, 'c', 'connected');
    // The history read waits until a live event of the job came first: the
    // race a reload mid-answer meets when the read is slow. What is shown
    // meanwhile must still be a prefix of the answer.
    let release;
    const held = new Promise((resolve) => (release = resolve));
    await page.route('**/api/v1/jobs/*/events*', async (route) => {
      await held;
      await route.continue();
    });
    await page.evaluate(() => {
      window.__live = 0;
      window.harness.client('c').on('job:chunk:v1', () => window.__live++);
    });
    await watch(page, jobId);
    await waitFor('live chunks while the history read waits', () => page.evaluate(() => window.__live >= 2));
    release();
    const first = await waitFor('the history read', async () => {
      const v = await page.evaluate(() => window.__views.find((v) => !v.loading && v.seq > 0));
      return v;
    });
    assert.ok(first.text.startsWith(before.text), `after the reload "${first.text}" starts with what was shown before, "${before.text}"`);
    assert.equal(first.status, 'running');
    assert.ok(first.progress >= before.progress);
    const done = await waitFor('the job to complete', async () => {
      const v = await page.evaluate(() => window.__views.at(-1));
      return v.status === 'completed' && v.result !== null && v;
    }, { timeout: 30_000 });
    const whole = await historyText(page, jobId);
    assert.equal(done.text, whole, 'the whole answer, nothing repeated');
    assert.ok(done.text.split(' ').length >= 40, `a streamed answer of some length: ${done.text}`);
    assert.equal(done.result.text, whole);
    assert.equal(done.progress, 1);
    assert.equal(done.complete, true);
    assert.equal(done.gone, false);
    // Every state on the way was a prefix of the next: the text never jumped back or doubled.
    const views = await page.evaluate(() => window.__views);
    for (let i = 1; i < views.length; i++) {
      assert.ok(views[i].text.startsWith(views[i - 1].text), `view ${i}: "${views[i - 1].text}" then "${views[i].text}"`);
      assert.ok(views[i].seq >= views[i - 1].seq);
    }
    assert.deepEqual(problems, []);
  } finally {
    await context.close();
  }
});

test('a job handle sees every event from seq 1 whenever it is read, and an unknown job is marked gone', { timeout: 60_000 }, async () => {
  const { context, page, problems } = await openHarness(browser, web.url);
  try {
    await page.evaluate((url) => window.harness.create('c', { url, sub: 'jobs-user', storage: 'memory' }), gw.url);
    await page.evaluate(() => window.harness.connect('c'));
    await waitState(page, 'c', 'connected');
    // Started with send, watched only once it has ended: nothing is missing.
    const jobId = await page.evaluate(async () => (await window.harness.client('c').send('job:start:v1', { kind: 'llm' })).jobId);
    await waitFor('the job to end', async () => {
      const ev = await page.evaluate(() => window.harness.events('c'));
      return ev.some((e) => e.name === 'job:status:v1' && e.payload.data.jobId === jobId && e.payload.data.status === 'completed');
    }, { timeout: 30_000 });
    await watch(page, jobId);
    const view = await waitFor('the history read', async () => {
      const v = await page.evaluate(() => window.__views.at(-1));
      return !v.loading && v.complete && v;
    });
    assert.equal(view.text, await historyText(page, jobId));
    assert.equal(view.status, 'completed');

    // The user's job list: read over REST (the job above is in it), then live;
    // a job started with startJob joins at once and follows its statuses.
    const listed = await page.evaluate(async (first) => {
      const c = window.harness.client('c');
      const list = window.harness.jobs.jobsOf(c, { kinds: ['llm'] });
      const seen = [];
      const off = list.subscribe(() => seen.push(list.get()));
      await new Promise((resolve) => {
        const check = () => list.get().loaded && list.get().jobs.some((j) => j.id === first) && resolve();
        list.subscribe(check);
        check();
      });
      const job = await window.harness.jobs.startJob(c, 'llm', { prompt: 'listed' });
      const atOnce = list.get().jobs[0].id === job.jobId;
      await new Promise((resolve) => {
        const check = () => list.get().jobs.find((j) => j.id === job.jobId)?.status === 'completed' && resolve();
        list.subscribe(check);
        check();
      });
      off();
      return { atOnce, ids: list.get().jobs.map((j) => j.id), first, second: job.jobId, states: seen.length };
    }, jobId);
    assert.equal(listed.atOnce, true, 'a started job is listed at once, newest first');
    assert.deepEqual(listed.ids.slice(0, 2), [listed.second, listed.first]);

    const gone = await page.evaluate(async () => {
      const h = window.harness.jobs.jobOf(window.harness.client('c'), 'no-such-job');
      await new Promise((resolve) => {
        const off = h.subscribe(() => {
          if (h.get().gone) {
            off();
            resolve();
          }
        });
      });
      return h.get();
    });
    assert.equal(gone.gone, true);
    assert.equal(gone.status, null);
    // Chromium itself logs the one 404 of the gone job's history; nothing else went wrong.
    assert.deepEqual(problems, ['console.error: Failed to load resource: the server responded with a status of 404 (Not Found)']);
  } finally {
    await context.close();
  }
});

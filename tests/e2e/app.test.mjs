// The React app end to end against a running gateway with the demo worker:
//   LIVELINE_URL=http://127.0.0.1:18080 node --test tests/e2e/
// Each test uses a user of its own (`?user=`), so job lists do not mix.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  APP_URL, api, describeRequests, devToken, jobHistory, launchBrowser, openApp, rand,
  recordAnswers, screenshot, sleep, testIdText, waitFor, waitPage, waitTestIdText,
} from './lib.mjs';

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

const appUrl = (user, mode = 'research') => `${APP_URL}/?user=${encodeURIComponent(user)}#${mode}`;

async function startJob(page, kind, query) {
  await page.selectOption('[data-testid="job-kind"]', kind);
  await page.fill('[data-testid="query"]', query);
  await page.click('[data-testid="start-research"]');
}

/** The id of the job shown, once it is there. */
async function shownJobId(page) {
  await page.waitForSelector('[data-testid="job-id"]', { timeout: 15_000 });
  return testIdText(page, 'job-id');
}

function assertChunksContiguous(chunks, what) {
  const indexes = chunks.map((c) => c.index);
  assert.deepEqual(indexes, indexes.map((_, i) => i), `${what}: chunk indexes 0..n-1, each once: ${indexes}`);
}

test('research: live status, progress, sources found, summary answer; no HTTP while it runs', { timeout: 60_000 }, async (t) => {
  const user = `e2e-research-${rand()}`;
  const { context, page, rec } = await openApp(browser, appUrl(user));
  try {
    await waitTestIdText(page, 'connection-state', 'connected', 15_000, rec);
    await page.waitForSelector('[data-testid="job-list"][data-settled="true"]', { state: 'attached' });
    rec.phase = 'job';
    await startJob(page, 'research', 'event-driven architectures');
    const jobId = await shownJobId(page);
    await waitPage(page, 'a sources count', () => Number(document.querySelector('[data-testid="job-sources"]')?.dataset.value) > 0, null, { timeout: 15_000 });
    await waitTestIdText(page, 'job-status', 'completed', 20_000, rec);
    rec.phase = 'done';
    assert.equal(Number(await page.getAttribute('[data-testid="job-progress"]', 'data-value')), 1);
    await screenshot(page, 'research.png');

    const token = await devToken(APP_URL, user);
    const h = await jobHistory(APP_URL, token, jobId);
    assert.ok(h.result, 'job:result:v1 in history');
    // Sources arrived one by one; the count and the titles match the result.
    assert.equal(await testIdText(page, 'job-sources'), `${h.result.sources} sources found`);
    assert.deepEqual(await page.$$eval('[data-testid="job-source-list"] li', (li) => li.map((l) => l.textContent)), h.result.titles);
    const found = h.events.filter((e) => e.event === 'job:status:v1' && /sources found/.test(e.envelope.data.message)).length;
    assert.equal(found, h.result.sources, `a status per source: ${JSON.stringify(h.statuses)}`);
    const answer = await testIdText(page, 'job-answer');
    const summary = h.result.summary ?? h.result.answer ?? h.result.text;
    assert.equal(answer, summary, 'the answer shown is the worker\'s summary');
    const { body: snap } = await api(APP_URL, token, `/api/v1/jobs/${jobId}`);
    assert.equal(snap.status, 'completed');

    await t.test('the summary was streamed as job:chunk:v1, each chunk once', () => {
      assert.ok(h.chunks.length > 1, 'the summary came in several chunks');
      assertChunksContiguous(h.chunks, 'research');
      assert.equal(h.chunks.map((c) => c.text).join(''), summary);
    });

    // While the job ran: one read of its history when its view mounted (useJob,
    // so a reload shows the whole job), and nothing else: no polling.
    const during = rec.requests.filter((r) => r.phase === 'job').map((r) => `${r.method} ${new URL(r.url).pathname}${new URL(r.url).search}`);
    assert.deepEqual(during, [`GET /api/v1/jobs/${jobId}/events?after=0`], `HTTP requests while the job ran\n${describeRequests(rec.requests)}`);
    const polling = rec.requests.filter((r) => r.url.includes('/socket.io') && r.type !== 'websocket');
    assert.deepEqual(polling, [], 'no Socket.IO long-polling');
    assert.equal(rec.sockets.length, 1, 'one websocket');
    assert.deepEqual(rec.problems, []);
  } finally {
    await context.close();
  }
});

test('streamed answer: shown token by token, equal to the worker\'s full answer, no chunk missing or repeated', { timeout: 60_000 }, async () => {
  const user = `e2e-stream-${rand()}`;
  const { context, page, rec } = await openApp(browser, appUrl(user));
  try {
    await waitTestIdText(page, 'connection-state', 'connected', 15_000, rec);
    await recordAnswers(page);
    await startJob(page, 'llm', 'why push beats polling');
    const jobId = await shownJobId(page);
    await waitTestIdText(page, 'job-status', 'completed', 20_000, rec);
    const token = await devToken(APP_URL, user);
    const h = await jobHistory(APP_URL, token, jobId);
    assert.ok(h.chunks.length >= 2, `the worker streamed chunks: ${JSON.stringify(h.chunks)}`);
    assertChunksContiguous(h.chunks, 'llm');
    const full = h.chunks.map((c) => c.text).join('');
    assert.equal(full, h.result.text ?? h.result.answer ?? h.result.summary, 'chunks add up to the result');
    assert.equal(await testIdText(page, 'job-answer'), full, 'the answer shown is the full answer');
    assert.equal(await page.getAttribute('[data-testid="job-answer"]', 'data-chunks'), String(h.chunks.length));
    // It grew piece by piece: every text seen was a prefix of the final one, several of them.
    const seen = await page.evaluate(() => window.__answers);
    assert.ok(seen.length >= 2, `the answer was shown growing, saw ${JSON.stringify(seen)}`);
    for (const s of seen) assert.ok(full.startsWith(s), `${JSON.stringify(s)} is a prefix of the answer`);
    assert.deepEqual(rec.problems, []);
  } finally {
    await context.close();
  }
});

test('reload mid-job: the job list shows the running job continuing from the REST snapshot, then complete', { timeout: 60_000 }, async () => {
  const user = `e2e-reload-${rand()}`;
  const { context, page, rec } = await openApp(browser, appUrl(user));
  try {
    await waitTestIdText(page, 'connection-state', 'connected', 15_000, rec);
    await startJob(page, 'llm', 'resume after reload');
    const jobId = await shownJobId(page);
    await waitPage(page, 'progress > 0', () => Number(document.querySelector('[data-testid="job-progress"]')?.dataset.value) > 0, null, { timeout: 15_000 });
    rec.phase = 'reload';
    await page.reload({ waitUntil: 'load' });
    await waitPage(
      page,
      'the job in the list after the reload',
      (id) => document.querySelector(`[data-testid="job-list-item"][data-job-id="${id}"]`),
      jobId,
      { timeout: 15_000 },
    );
    const statusAfterReload = await page.getAttribute(`[data-testid="job-list-item"][data-job-id="${jobId}"]`, 'data-status');
    assert.ok(['queued', 'running', 'completed'].includes(statusAfterReload), statusAfterReload);
    await waitTestIdText(page, 'job-status', 'completed', 20_000, rec);
    const token = await devToken(APP_URL, user);
    const h = await jobHistory(APP_URL, token, jobId);
    assertChunksContiguous(h.chunks, 'llm');
    const full = h.chunks.map((c) => c.text).join('');
    assert.equal(await testIdText(page, 'job-answer'), full, 'complete and unrepeated after the reload');
    // The reload read the list and the running job's history over REST, then nothing more.
    const rest = rec.requests.filter((r) => r.phase === 'reload' && (r.type === 'fetch' || r.type === 'xhr'));
    const paths = rest.map((r) => `${r.method} ${new URL(r.url).pathname}`);
    assert.ok(paths.includes('GET /api/v1/jobs'), paths.join('\n'));
    assert.deepEqual(rec.problems, []);
  } finally {
    await context.close();
  }
});

test('steady state: connected for 10 s, the page sends no HTTP request', { timeout: 60_000 }, async () => {
  const user = `e2e-steady-${rand()}`;
  const { context, page, rec } = await openApp(browser, appUrl(user));
  try {
    await waitTestIdText(page, 'connection-state', 'connected', 15_000, rec);
    await page.waitForSelector('[data-testid="job-list"][data-settled="true"]', { state: 'attached' });
    rec.phase = 'steady';
    // The measurement window: 10 s connected and idle.
    await sleep(10_000);
    assert.equal(await testIdText(page, 'connection-state'), 'connected');
    const steady = rec.requests.filter((r) => r.phase === 'steady');
    assert.deepEqual(steady, [], `requests in steady state\n${describeRequests(rec.requests)}`);
    assert.equal(rec.sockets.length, 1);
  } finally {
    await context.close();
  }
});

test('offline: a job started offline is queued, shown as such, and runs exactly once when the network returns', { timeout: 60_000 }, async () => {
  const user = `e2e-offline-${rand()}`;
  const { context, page, rec } = await openApp(browser, appUrl(user));
  try {
    await waitTestIdText(page, 'connection-state', 'connected', 15_000, rec);
    await context.setOffline(true);
    await waitTestIdText(page, 'connection-state', 'offline', 15_000, rec);
    const query = `offline ${rand()}`;
    await startJob(page, 'research', query);
    await waitPage(page, 'queued count 1', () => document.querySelector('[data-testid="queued-count"]')?.dataset.value === '1', null, { timeout: 5000 });
    await page.waitForSelector('[data-testid="start-queued"]');
    await context.setOffline(false);
    await waitTestIdText(page, 'connection-state', 'connected', 20_000, rec);
    await waitTestIdText(page, 'job-status', 'completed', 20_000, rec);
    await waitPage(page, 'queued count 0', () => document.querySelector('[data-testid="queued-count"]')?.dataset.value === '0', null, { timeout: 5000 });
    const token = await devToken(APP_URL, user);
    const { body } = await api(APP_URL, token, '/api/v1/jobs');
    const mine = body.jobs.filter((j) => j.params?.query === query);
    assert.equal(mine.length, 1, `exactly one job started: ${JSON.stringify(body.jobs)}`);
    assert.deepEqual(rec.problems.filter((p) => !/ERR_INTERNET_DISCONNECTED|net::/.test(p)), []);
  } finally {
    await context.close();
  }
});

/** True when the gateway acks topic:subscribe:v1 (the trade side exists). */
async function tradeSupported(page) {
  try {
    await page.waitForFunction(
      () => document.querySelectorAll('[data-testid="ticker"][data-subscribed="true"]').length === 3,
      null,
      { timeout: 6000, polling: 100 },
    );
    return true;
  } catch {
    return false;
  }
}

const NO_TRADE = 'the gateway does not handle topic:subscribe:v1 / trade:place:v1 yet (trade side pending)';

test('trade: live ticks for BTC, ETH, SOL; place and cancel; live order status', { timeout: 90_000 }, async (t) => {
  const user = `e2e-trade-${rand()}`;
  const { context, page, rec } = await openApp(browser, appUrl(user, 'trade'));
  try {
    await waitTestIdText(page, 'connection-state', 'connected', 15_000, rec);
    if (!(await tradeSupported(page))) {
      await screenshot(page, 'trade.png');
      t.skip(NO_TRADE);
      return;
    }
    for (const s of ['BTC-USD', 'ETH-USD', 'SOL-USD']) {
      await waitPage(page, `ticks on ${s}`, (s) => Number(document.querySelector(`[data-testid="ticker"][data-symbol="${s}"]`)?.dataset.seq) > 0, s, { timeout: 15_000 });
    }
    // A market order fills.
    await page.selectOption('[data-testid="order-symbol"]', 'ETH-USD');
    await page.fill('[data-testid="order-qty"]', '2');
    await page.fill('[data-testid="order-price"]', '');
    await page.click('[data-testid="place-order"]');
    await waitPage(page, 'a filled order', () => document.querySelector('[data-testid="order"][data-status="filled"]'), null, { timeout: 20_000 });
    // A limit order far from the market stays open and can be cancelled.
    await page.selectOption('[data-testid="order-side"]', 'buy');
    await page.fill('[data-testid="order-qty"]', '1');
    await page.fill('[data-testid="order-price"]', '1');
    await page.click('[data-testid="place-order"]');
    await page.waitForSelector('[data-testid="cancel-order"]', { timeout: 15_000 });
    // The market moves three more times; a buy at $1 is never crossed, so it stays open, unfilled.
    const tickSeq = () => Number(document.querySelector('[data-testid="ticker"][data-symbol="ETH-USD"]')?.dataset.seq);
    const seqNow = await page.evaluate(tickSeq);
    await waitPage(page, 'three more ETH ticks', (n) => Number(document.querySelector('[data-testid="ticker"][data-symbol="ETH-USD"]')?.dataset.seq) >= n, seqNow + 3, { timeout: 20_000 });
    const open = await page.$$eval('[data-testid="order"]', (els) => els.filter((e) => e.querySelector('[data-testid="cancel-order"]')).map((e) => e.dataset.status));
    assert.deepEqual(open, ['accepted'], 'the limit buy far below the market is still open');
    await screenshot(page, 'trade.png');
    await page.click('[data-testid="cancel-order"]');
    await waitPage(page, 'a cancelled order', () => document.querySelector('[data-testid="order"][data-status="cancelled"]'), null, { timeout: 15_000 });
    assert.deepEqual(rec.problems, []);
  } finally {
    await context.close();
  }
});

test('trade offline: an order placed offline is queued and filled exactly once when the network returns', { timeout: 90_000 }, async (t) => {
  const user = `e2e-trade-offline-${rand()}`;
  const { context, page, rec } = await openApp(browser, appUrl(user, 'trade'));
  try {
    await waitTestIdText(page, 'connection-state', 'connected', 15_000, rec);
    if (!(await tradeSupported(page))) {
      t.skip(NO_TRADE);
      return;
    }
    await context.setOffline(true);
    await waitTestIdText(page, 'connection-state', 'offline', 15_000, rec);
    await page.fill('[data-testid="order-qty"]', '3');
    await page.fill('[data-testid="order-price"]', '');
    await page.click('[data-testid="place-order"]');
    await waitPage(page, 'queued count 1', () => document.querySelector('[data-testid="queued-count"]')?.dataset.value === '1', null, { timeout: 5000 });
    assert.equal(await page.getAttribute('[data-testid="order"]', 'data-status'), 'queued');
    await context.setOffline(false);
    await waitTestIdText(page, 'connection-state', 'connected', 20_000, rec);
    const orderRows = () =>
      page.$$eval('[data-testid="order"]', (els) => els.map((e) => ({ id: e.dataset.orderId, status: e.dataset.status, fills: e.dataset.filledEvents, text: e.textContent })));
    await waitPage(page, 'the order filled', () => document.querySelector('[data-testid="order"][data-status="filled"]'), null, {
      timeout: 20_000,
      detail: async () => `orders: ${JSON.stringify(await orderRows())}; queued: ${await testIdText(page, 'queued-count')}\n${rec.problems.join('\n')}`,
    });
    await sleep(2000); // a duplicate would show up here
    const rows = await page.$$eval('[data-testid="order"]', (els) => els.map((e) => ({ id: e.dataset.orderId, status: e.dataset.status, fills: e.dataset.filledEvents })));
    assert.equal(rows.length, 1, `one order: ${JSON.stringify(rows)}`);
    assert.equal(rows[0].fills, '1', `one filled event: ${JSON.stringify(rows)}`);
    assert.equal(await page.getAttribute('[data-testid="queued-count"]', 'data-value'), '0');
  } finally {
    await context.close();
  }
});

test('analytics: an analytics-role token from the dev login; charts of DAU, sessions (a session counted once it ends), job outcomes and latency on a log scale', { timeout: 60_000 }, async () => {
  const user = `e2e-analytics-${rand()}`;
  const viewer = await devToken(APP_URL, user, 'analytics');
  const sessionsToday = async () => (await api(APP_URL, viewer, '/api/v1/analytics/summary')).body.sessions;
  const before = await sessionsToday();
  // A session: the app open, connected, then closed.
  const first = await openApp(browser, appUrl(user, 'research'));
  await waitTestIdText(first.page, 'connection-state', 'connected', 15_000, first.rec);
  await first.context.close();
  // Recorded when the gateway sees the socket go, which it tells no one
  // outside: wait on the count itself.
  await waitFor('the ended session counted', async () => (await sessionsToday()) >= before + 1, { timeout: 10_000 });

  const { context, page, rec } = await openApp(browser, appUrl(user, 'analytics'));
  try {
    await waitTestIdText(page, 'connection-state', 'connected', 15_000, rec);
    // No token to paste: the page asked the dev login for one with the analytics role.
    await page.waitForSelector('[data-testid="charts"]', { timeout: 10_000 });
    assert.equal(await page.$('[data-testid="analytics-token"]'), null);
    for (const id of ['chart-dau', 'chart-sessions', 'chart-jobs', 'chart-latency']) {
      assert.ok(await page.$(`[data-testid="${id}"] svg`), `${id} drawn`);
    }
    const bars = await page.$$eval('[data-testid="chart-dau"] rect', (r) => r.length);
    assert.equal(bars, 7, 'a bar per day of the last 7');
    const shown = Number(await page.getAttribute('[data-testid="chart-sessions"]', 'data-today'));
    assert.ok(shown >= before + 1, `today's sessions shown ${shown}, before the session ${before}`);
    // Latency quantiles on a log scale: p50 <= p95 <= p99, the bars in that order.
    const lat = await page.$$eval('[data-testid^="latency-p"]', (gs) =>
      gs.map((g) => ({ q: g.dataset.testid, ms: g.dataset.ms === '' ? null : Number(g.dataset.ms), w: Number(g.querySelector('rect').getAttribute('width')) })),
    );
    assert.deepEqual(lat.map((l) => l.q), ['latency-p50', 'latency-p95', 'latency-p99']);
    const measured = lat.filter((l) => l.ms !== null);
    for (let i = 1; i < measured.length; i++) {
      assert.ok(measured[i].ms >= measured[i - 1].ms && measured[i].w >= measured[i - 1].w, JSON.stringify(lat));
    }
    await screenshot(page, 'analytics.png');
    assert.deepEqual(rec.problems, []);
  } finally {
    await context.close();
  }
});

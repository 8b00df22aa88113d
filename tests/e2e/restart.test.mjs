// The gateway killed (SIGKILL) and restarted mid-answer, with a gateway of this
// test's own on Redis (so the job's history survives the kill).
//
// The demo worker runs inside the gateway and takes jobs from the Redis actions
// stream with XREADGROUP `>` (new entries only): a job whose worker died with the
// killed process is not picked up again by the restarted one. So this test plays
// the worker for the rest of the job: while the gateway is down it publishes one
// event straight to Redis (`liveline-gateway publish`), which the page can only
// get by resuming; after the restart it publishes the remaining chunks, the
// result and the final status over `POST /api/v1/publish` with a service token.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  cleanRedis, devToken, jobHistory, launchBrowser, mintToken, openApp, ownGateway, publishRedis, publishRest,
  rand, screenshot, sleep, testIdText, waitPage, waitTestIdText,
} from './lib.mjs';

let browser;
let gw;
const prefix = `lle2e:${rand()}:`;

before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await gw?.stop();
  await cleanRedis(prefix).catch(() => {});
});

test('gateway killed and restarted mid-answer: reconnecting, then connected; the answer is complete and unrepeated', { timeout: 120_000 }, async () => {
  // Slow steps so the kill lands between two chunks: statuses every 1.5 s, then a chunk every 0.5 s.
  gw = await ownGateway({ prefix, args: ['--demo-worker', '--demo-step-ms', '1500'] });
  const user = `e2e-restart-${rand()}`;
  const { context, page, rec } = await openApp(browser, `${gw.url}/?user=${user}#research`);
  try {
    await waitTestIdText(page, 'connection-state', 'connected', 15_000, rec);
    await page.evaluate(() => {
      // Every notice and connection state the page showed, in order.
      window.__seen = { notices: [], states: [] };
      const read = () => {
        for (const li of document.querySelectorAll('[data-testid="notices"] li')) {
          const k = `${li.dataset.kind}: ${li.textContent}`;
          if (!window.__seen.notices.includes(k)) window.__seen.notices.push(k);
        }
        const s = document.querySelector('[data-testid="connection-state"]')?.textContent;
        const st = window.__seen.states;
        if (s && st[st.length - 1] !== s) st.push(s);
      };
      new MutationObserver(read).observe(document.body, { subtree: true, childList: true, characterData: true });
    });
    await page.selectOption('[data-testid="job-kind"]', 'llm');
    await page.fill('[data-testid="query"]', 'survive a restart');
    await page.click('[data-testid="start-research"]');
    await page.waitForSelector('[data-testid="job-id"]');
    const jobId = await testIdText(page, 'job-id');
    await waitPage(page, 'two chunks shown', () => Number(document.querySelector('[data-testid="job-answer"]')?.dataset.chunks) >= 2, null, { timeout: 30_000 });

    await gw.kill('SIGKILL');
    await waitTestIdText(page, 'connection-state', 'reconnecting', 15_000, rec);
    await waitPage(page, 'attempt and countdown shown', () => /attempt \d+/.test(document.querySelector('[data-testid="connection-detail"]')?.textContent ?? ''), null, { timeout: 10_000 });
    await screenshot(page, 'connection-reconnecting.png');

    // Missed while down: only a resume can bring it to the page.
    const missed = await publishRedis({
      prefix, user, stream: `job:${jobId}`, event: 'job:status:v1',
      data: { jobId, status: 'running', progress: 0.9, message: 'worker restarted, resuming the answer' },
    });
    await gw.start();
    await waitTestIdText(page, 'connection-state', 'connected', 30_000, rec);
    await waitTestIdText(page, 'job-message', 'worker restarted, resuming the answer', 10_000, rec);

    // Finish the job as its worker would have.
    const token = await devToken(gw.url, user);
    const before = await jobHistory(gw.url, token, jobId);
    assert.equal(before.seq, missed.seq, 'the event published while down is the head');
    const have = before.chunks.map((c) => c.text).join('');
    const rest = ['after ', 'a ', 'gateway ', 'restart.'];
    const service = await mintToken('e2e-worker', { extra: ['--role', 'service'] });
    let index = before.chunks.length;
    for (const text of rest) {
      await publishRest(gw.url, service, { user, stream: `job:${jobId}`, event: 'job:chunk:v1', data: { jobId, index: index++, text } });
      await sleep(100);
    }
    const full = have + rest.join('');
    await publishRest(gw.url, service, { user, stream: `job:${jobId}`, event: 'job:result:v1', data: { jobId, result: { text: full } } });
    await publishRest(gw.url, service, { user, stream: `job:${jobId}`, event: 'job:status:v1', data: { jobId, status: 'completed', progress: 1, message: 'completed' } });

    await waitTestIdText(page, 'job-status', 'completed', 15_000, rec);
    const h = await jobHistory(gw.url, token, jobId);
    const indexes = h.chunks.map((c) => c.index);
    assert.deepEqual(indexes, indexes.map((_, i) => i), `each chunk index once: ${indexes}`);
    assert.equal(h.chunks.map((c) => c.text).join(''), full);
    assert.equal(await testIdText(page, 'job-answer'), full, 'the answer shown is complete and unrepeated');
    assert.equal(await page.getAttribute('[data-testid="job-answer"]', 'data-chunks'), String(h.chunks.length));

    const seen = await page.evaluate(() => window.__seen);
    const states = seen.states.join(' > ');
    assert.match(states, /connected > reconnecting.*> connected$/, states);
    // One outage, one notice, in words a user understands (history was kept in Redis).
    assert.deepEqual(seen.notices, ['recovered: Reconnected, nothing missed'], `notices: ${JSON.stringify(seen.notices)}`);
    await screenshot(page, 'research-after-restart.png', { keep: false });
    assert.deepEqual(rec.problems.filter((p) => !/WebSocket|net::ERR_CONNECTION_REFUSED/.test(p)), []);
  } finally {
    await context.close();
  }
});

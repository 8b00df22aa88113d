// The app as a product: it fits a phone (390 × 844) and a wide screen
// (1440 × 900) in every mode with no horizontal overflow, and switching modes
// shows no notice (nothing happened to the connection).
//   LIVELINE_URL=http://127.0.0.1:18080 node --test tests/e2e/
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { APP_URL, launchBrowser, openApp, rand, screenshot, waitPage, waitTestIdText } from './lib.mjs';

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

/** Every element wider than the viewport, for the failure message. */
function overflow(page) {
  return page.evaluate(() => {
    const doc = document.documentElement;
    const wide = [...document.querySelectorAll('body *')]
      .filter((el) => el.getBoundingClientRect().right > doc.clientWidth + 0.5)
      .slice(0, 8)
      .map((el) => `${el.tagName.toLowerCase()}.${el.className} (${Math.round(el.getBoundingClientRect().right)} px)`);
    return { scrollWidth: doc.scrollWidth, clientWidth: doc.clientWidth, wide };
  });
}

for (const [width, height, name] of [[390, 844, 'phone'], [1440, 900, 'wide']]) {
  test(`${width} × ${height}: every mode fits with no horizontal overflow, and switching modes shows no notice`, { timeout: 60_000 }, async () => {
    const user = `e2e-layout-${rand()}`;
    const { context, page, rec } = await openApp(browser, `${APP_URL}/?user=${user}#research`);
    try {
      await page.setViewportSize({ width, height });
      await waitTestIdText(page, 'connection-state', 'connected', 15_000, rec);
      await page.evaluate(() => {
        window.__notices = [];
        new MutationObserver(() => {
          for (const li of document.querySelectorAll('[data-testid="notices"] li')) window.__notices.push(li.textContent);
        }).observe(document.body, { subtree: true, childList: true, characterData: true });
      });
      // A long question, so the job view has to wrap it.
      await page.fill('[data-testid="query"]', 'how do realtime layers keep streamed answers whole across reloads and restarts');
      await page.click('[data-testid="start-research"]');
      await waitTestIdText(page, 'job-status', 'completed', 30_000, rec);
      for (const mode of ['research', 'trade', 'analytics', 'trade', 'research']) {
        await page.click(`[data-testid="tab-${mode}"]`);
        if (mode === 'trade') {
          await waitPage(page, 'live tickers', () => [...document.querySelectorAll('[data-testid="ticker"]')].every((t) => t.dataset.subscribed === 'true' && Number(t.dataset.seq) > 0), null, { timeout: 15_000 });
        } else if (mode === 'analytics') {
          await page.waitForSelector('[data-testid="analytics"]', { timeout: 15_000 });
        } else {
          await page.waitForSelector('[data-testid="job-status"]', { timeout: 15_000 });
        }
        const o = await overflow(page);
        assert.ok(o.scrollWidth <= o.clientWidth, `${mode} at ${width} px: scrollWidth ${o.scrollWidth} > clientWidth ${o.clientWidth}; too wide: ${o.wide.join(', ')}`);
        await screenshot(page, `${mode}-${name}.png`);
      }
      assert.deepEqual(await page.evaluate(() => window.__notices), [], 'no notice: nothing happened to the connection');
      assert.deepEqual(rec.problems, []);
    } finally {
      await context.close();
    }
  });
}

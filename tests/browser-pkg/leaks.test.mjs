// 200 connect/close cycles leave nothing behind: stats() all zero after
// each close, no growth in window/document event listeners (CDP
// DOMDebugger.getEventListeners), every WebSocket closed, bounded JS heap.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startStaticServer, startGateway, launchBrowser, openHarness, sleep, waitFor } from './lib.mjs';

let browser, web, gw;

before(async () => {
  [browser, web, gw] = await Promise.all([launchBrowser(), startStaticServer(), startGateway()]);
});

after(async () => {
  await browser?.close();
  await web?.close();
  await gw?.stop();
});

async function listenerCounts(cdp) {
  const counts = {};
  for (const target of ['window', 'document']) {
    const { result } = await cdp.send('Runtime.evaluate', { expression: target });
    const { listeners } = await cdp.send('DOMDebugger.getEventListeners', { objectId: result.objectId });
    counts[target] = listeners.length;
    counts[`${target}Types`] = listeners.map((l) => l.type).sort().join(',');
    await cdp.send('Runtime.releaseObject', { objectId: result.objectId });
  }
  return counts;
}

async function heapUsed(cdp) {
  await cdp.send('HeapProfiler.collectGarbage');
  await sleep(50);
  await cdp.send('HeapProfiler.collectGarbage');
  return (await cdp.send('Runtime.getHeapUsage')).usedSize;
}

test('200 connect/close cycles: stats() zero after close, no listener growth, every socket closed', { timeout: 180_000 }, async (t) => {
  const { context, page, problems } = await openHarness(browser, web.url);
  const sockets = [];
  page.on('websocket', (ws) => {
    const s = { url: ws.url(), closed: false };
    sockets.push(s);
    ws.on('close', () => (s.closed = true));
  });
  try {
    const cdp = await context.newCDPSession(page);
    const opts = { url: gw.url, sub: 'leak-user', storage: 'memory', record: false };
    const baseline = await listenerCounts(cdp);
    await page.evaluate((o) => window.harness.create('c', o), opts);
    assert.deepEqual(await page.evaluate(() => window.harness.stats('c')), { listeners: 0, subscribers: 0, pending: 0, timers: 0, sockets: 0, pageListeners: 0 });

    // Warm up, then measure.
    assert.deepEqual(await page.evaluate(() => window.harness.cycles('c', 20)), []);
    const heap0 = await heapUsed(cdp);
    const dirty = await page.evaluate(() => window.harness.cycles('c', 200));
    assert.deepEqual(dirty.slice(0, 5), [], `cycles with stats() not all zero after close: ${dirty.length}`);
    assert.deepEqual(await listenerCounts(cdp), baseline, 'window/document listeners after 220 cycles');

    // Connected, the client holds its page listeners; after close, none.
    await page.evaluate(() => window.harness.connect('c'));
    await page.waitForFunction(() => window.harness.snapshot('c').current === 'connected');
    const during = await listenerCounts(cdp);
    assert.ok(during.window > baseline.window, `the connected client listens on window (online/offline): ${JSON.stringify(during)}`);
    await page.evaluate(() => window.harness.close('c'));
    assert.deepEqual(await listenerCounts(cdp), baseline);

    const heap1 = await heapUsed(cdp);
    t.diagnostic(`JS heap used: ${heap0} -> ${heap1} bytes after 200 more cycles (${((heap1 - heap0) / 1024) | 0} KB)`);
    assert.ok(heap1 - heap0 < 256 * 1024, `JS heap grew by ${heap1 - heap0} bytes over 200 cycles`);

    // Fresh clients each cycle.
    assert.deepEqual(await page.evaluate((o) => window.harness.freshCycles(o, 50), opts), []);
    assert.deepEqual(await listenerCounts(cdp), baseline, 'window/document listeners after 50 fresh clients');

    await waitFor('every WebSocket closed', () => sockets.every((s) => s.closed), { timeout: 10_000 });
    assert.equal(sockets.length, 20 + 200 + 1 + 50);
    assert.deepEqual(problems, []);
  } finally {
    await context.close();
  }
});

// A client whose callbacks (getToken, listeners) reach it again is held by
// the wasm side, which keeps those callbacks: dropping it frees nothing.
// dispose() frees it at once; this checks that nothing stays.
test('disposed clients leave nothing behind', { timeout: 120_000 }, async (t) => {
  const { context, page } = await openHarness(browser, web.url);
  try {
    const cdp = await context.newCDPSession(page);
    const opts = { url: gw.url, sub: 'gc-user', storage: 'memory' };
    const free = { free: true };
    assert.deepEqual(await page.evaluate(([o, f]) => window.harness.freshCycles(o, 30, 10_000, f), [opts, free]), []);
    // The first rounds settle one-time allocations (compiled code, caches);
    // what must not happen is growth from one round of 150 to the next.
    const round = async () => {
      assert.deepEqual(await page.evaluate(([o, f]) => window.harness.freshCycles(o, 150, 10_000, f), [opts, free]), []);
      await page.evaluate(() => new Promise((r) => setTimeout(r, 500)));
      return heapUsed(cdp);
    };
    const h0 = await round();
    await round();
    const h1 = await round();
    await round();
    const h2 = await round();
    t.diagnostic(`JS heap after rounds of 150 disposed clients: ${h0}, ${h1}, ${h2} bytes`);
    assert.ok(h2 - h1 < 40 * 1024, `JS heap grew by ${h2 - h1} bytes over 150 more disposed clients`);
  } finally {
    await context.close();
  }
});

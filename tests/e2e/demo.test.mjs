// End-to-end test of the demo app against a running gateway (demo mode).
// The gateway is started by the caller; this test only drives the browser.
//   LIVELINE_URL=http://127.0.0.1:8080 node --test tests/e2e/
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { APP_URL, RESULTS_DIR, launchBrowser, waitFor } from './lib.mjs';

const CONNECT_TIMEOUT_MS = 15_000;
const JOB_TIMEOUT_MS = 20_000;

let browser;

before(async () => {
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
});

/** Text of a data-testid element, or null when it is not on the page. */
function testIdText(page, id) {
  return page.evaluate(
    (id) => document.querySelector(`[data-testid="${id}"]`)?.textContent ?? null,
    id,
  );
}

async function waitForTestIdText(page, id, want, timeout, problems = []) {
  try {
    await page.waitForFunction(
      ([id, want]) => document.querySelector(`[data-testid="${id}"]`)?.textContent === want,
      [id, want],
      { timeout, polling: 100 },
    );
  } catch (err) {
    const got = await testIdText(page, id).catch(() => '(page gone)');
    const seen = problems.length ? `\n${problems.join('\n')}` : '';
    throw new Error(`[data-testid=${id}] never read "${want}" within ${timeout} ms; last: ${JSON.stringify(got)}${seen}`, {
      cause: err,
    });
  }
}

test('research job runs to completion over the websocket, with no HTTP polling', { timeout: 90_000 }, async () => {
  const context = await browser.newContext({ reducedMotion: 'reduce' });
  const page = await context.newPage();

  // Everything the page asks for, tagged with the phase it happened in.
  let phase = 'load';
  const requests = [];
  const sockets = [];
  const problems = [];
  page.on('request', (r) =>
    requests.push({ phase, method: r.method(), url: r.url(), type: r.resourceType() }),
  );
  page.on('websocket', (ws) => sockets.push({ phase, url: ws.url() }));
  page.on('pageerror', (err) => problems.push(`pageerror: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push(`console.error: ${msg.text()}`);
  });

  mkdirSync(RESULTS_DIR, { recursive: true });
  let jobId;
  try {
    await page.goto(APP_URL + '/', { waitUntil: 'load' });
    await waitForTestIdText(page, 'connection-state', 'connected', CONNECT_TIMEOUT_MS, problems);
    // The load-time read of the user's job list goes out once connected: it
    // belongs to the load, however late it comes.
    await waitFor('the job list read', () => requests.some((r) => new URL(r.url).pathname === '/api/v1/jobs'));

    phase = 'job';
    await page.fill('[data-testid="query"]', 'event-driven architectures');
    await page.click('[data-testid="start-research"]');
    await page.waitForSelector('[data-testid="job-status"]', { timeout: 10_000 });
    await waitForTestIdText(page, 'job-status', 'completed', JOB_TIMEOUT_MS, problems);
    phase = 'done';

    const progress = await page.getAttribute('[data-testid="job-progress"]', 'data-value');
    assert.equal(Number(progress), 1, 'progress bar full when the job completed');
    assert.equal(await testIdText(page, 'connection-state'), 'connected');

    // The job's REST state agrees with what the events said (fetched from Node,
    // outside the page, so it is not counted among the page's requests).
    jobId = await testIdText(page, 'job-id');
    assert.ok(jobId, 'job id shown');
    await assertJobCompletedOverRest(jobId);
  } finally {
    await page.screenshot({ path: `${RESULTS_DIR}/demo.png`, fullPage: true }).catch(() => {});
    await context.close();
  }

  const describe = (list) => list.map((r) => `  [${r.phase}] ${r.method ?? 'WS'} ${r.url} (${r.type ?? 'websocket'})`).join('\n');
  const all = `requests:\n${describe(requests)}\nwebsockets:\n${describe(sockets)}\n${problems.join('\n')}`;

  // No Socket.IO long-polling, ever: the transport is the websocket alone.
  const polling = requests.filter((r) => r.url.includes('/socket.io') && r.type !== 'websocket');
  assert.deepEqual(polling, [], `Socket.IO HTTP polling requests seen\n${all}`);

  // Script-issued HTTP requests: the dev-token POST and the load-time reads of
  // the user's jobs (list, and recent jobs' history), the wasm module fetch aside.
  const scripted = requests.filter(
    (r) => (r.type === 'fetch' || r.type === 'xhr') && !new URL(r.url).pathname.endsWith('.wasm'),
  );
  const allowed = /^(POST \/api\/v1\/dev\/token|GET \/api\/v1\/jobs|GET \/api\/v1\/jobs\/[^/]+\/events)$/;
  const unexpected = scripted.map((r) => `${r.method} ${new URL(r.url).pathname}`).filter((p) => !allowed.test(p));
  assert.deepEqual(unexpected, [], `unexpected fetch/xhr requests\n${all}`);

  // While the job ran, the page made one HTTP request, the read of the job's
  // history when its view mounted (useJob); every update came as an event.
  const duringJob = requests.filter((r) => r.phase !== 'load').map((r) => `${r.method} ${new URL(r.url).pathname}`);
  assert.deepEqual(duringJob, [`GET /api/v1/jobs/${jobId}/events`], `HTTP requests after load (polling?)\n${all}`);

  // One websocket, opened during load and kept.
  assert.equal(sockets.length, 1, `expected exactly one websocket\n${all}`);
  assert.equal(sockets[0].phase, 'load');
  assert.match(sockets[0].url, /^wss?:\/\//);

  assert.deepEqual(problems, [], `errors on the page\n${all}`);
});

async function assertJobCompletedOverRest(jobId) {
  const tokenRes = await fetch(`${APP_URL}/api/v1/dev/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ sub: 'alice' }),
  });
  assert.equal(tokenRes.status, 200, 'dev token endpoint');
  const { token } = await tokenRes.json();
  const res = await fetch(`${APP_URL}/api/v1/jobs/${encodeURIComponent(jobId)}`, {
    headers: { authorization: `Bearer ${token}` },
  });
  const body = await res.text();
  assert.equal(res.status, 200, `GET /api/v1/jobs/${jobId}: ${body}`);
  const job = JSON.parse(body);
  const status = job.status ?? job.job?.status ?? job.data?.status;
  assert.equal(status, 'completed', `REST job state: ${body}`);
}

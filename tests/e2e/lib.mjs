// Helpers of the app's end-to-end tests: Chromium, pages that record their
// requests, data-testid waits, tokens, REST, and gateway processes of a test's own.
import { spawn } from 'node:child_process';
import { copyFileSync, mkdirSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { ROOT, GATEWAY, REDIS_URL, freePort, sleep, api } from '../support/node.mjs';

export {
  ROOT, GATEWAY, REDIS_URL, CHROMIUM, sleep, waitFor, freePort, launchBrowser, mintToken, cleanRedis, publishRedis, api,
} from '../support/node.mjs';

export const APP_URL = (process.env.LIVELINE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
export const RESULTS_DIR = join(ROOT, 'test-results');
export const SCREENSHOTS_DIR = join(ROOT, 'docs/screenshots');

export const rand = () => randomBytes(5).toString('hex');

/**
 * A new context and page at `url` that record every request (with the phase
 * set through `rec.phase`) and every page error. Returns {context, page, rec}.
 */
export async function openApp(browser, url) {
  const context = await browser.newContext({ reducedMotion: 'reduce', viewport: { width: 900, height: 900 } });
  const page = await context.newPage();
  const rec = { phase: 'load', requests: [], sockets: [], problems: [] };
  page.on('request', (r) =>
    rec.requests.push({ phase: rec.phase, method: r.method(), url: r.url(), type: r.resourceType() }),
  );
  page.on('websocket', (ws) => rec.sockets.push({ phase: rec.phase, url: ws.url() }));
  page.on('pageerror', (err) => rec.problems.push(`pageerror: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') rec.problems.push(`console.error: ${msg.text()}`);
  });
  await page.goto(url, { waitUntil: 'load' });
  return { context, page, rec };
}

export function describeRequests(list) {
  return list.map((r) => `  [${r.phase}] ${r.method} ${r.url} (${r.type})`).join('\n');
}

/** Text of a data-testid element, or null. */
export function testIdText(page, id) {
  return page.evaluate((id) => document.querySelector(`[data-testid="${id}"]`)?.textContent ?? null, id);
}

/** Waits until `fn(arg)` is truthy in the page; on timeout says what and shows `detail()`. */
export async function waitPage(page, what, fn, arg, { timeout = 20_000, detail } = {}) {
  try {
    return await page.waitForFunction(fn, arg, { timeout, polling: 100 });
  } catch (err) {
    const extra = detail ? await detail().catch((e) => `(detail failed: ${e.message})`) : '';
    throw new Error(`timed out after ${timeout} ms waiting for ${what}\n${extra}`, { cause: err });
  }
}

export function waitTestIdText(page, id, want, timeout = 20_000, rec) {
  return waitPage(
    page,
    `[data-testid=${id}] to read ${JSON.stringify(want)}`,
    ([id, want]) => document.querySelector(`[data-testid="${id}"]`)?.textContent === want,
    [id, want],
    {
      timeout,
      detail: async () =>
        `last: ${JSON.stringify(await testIdText(page, id))}\n${rec ? rec.problems.join('\n') : ''}`,
    },
  );
}

/** Saves test-results/<name>; with LIVELINE_UPDATE_SCREENSHOTS=1 also docs/screenshots/<name>. */
export async function screenshot(page, name, { keep = true } = {}) {
  mkdirSync(RESULTS_DIR, { recursive: true });
  const path = join(RESULTS_DIR, name);
  await page.screenshot({ path, fullPage: true });
  if (keep && process.env.LIVELINE_UPDATE_SCREENSHOTS === '1') {
    mkdirSync(SCREENSHOTS_DIR, { recursive: true });
    copyFileSync(path, join(SCREENSHOTS_DIR, name));
  }
}

/** A token from the gateway's dev route: a user's, or with `role` (e.g. `analytics`). */
export async function devToken(base, sub, role) {
  const res = await fetch(`${base}/api/v1/dev/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(role ? { sub, role } : { sub }),
  });
  if (!res.ok) throw new Error(`dev token: HTTP ${res.status}`);
  return (await res.json()).token;
}


/** The job's events from its history: {chunks: [{index, text, seq}], result, statuses}. */
export async function jobHistory(base, token, jobId) {
  const { status, body } = await api(base, token, `/api/v1/jobs/${encodeURIComponent(jobId)}/events?after=0`);
  if (status !== 200) throw new Error(`events of ${jobId}: ${status} ${JSON.stringify(body)}`);
  const chunks = [];
  let result = null;
  const statuses = [];
  for (const { event, envelope } of body.events) {
    if (event === 'job:chunk:v1') chunks.push({ index: envelope.data.index, text: envelope.data.text, seq: envelope.seq });
    if (event === 'job:result:v1') result = envelope.data.result;
    if (event === 'job:status:v1') statuses.push(envelope.data.status);
  }
  return { ...body, chunks, result, statuses };
}

/** Publishes over REST with a service token (a job event also updates the job). */
export async function publishRest(base, serviceToken, { user, stream, event, data }) {
  const { status, body } = await api(base, serviceToken, '/api/v1/publish', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ user, stream, event, data }),
  });
  if (status !== 200) throw new Error(`publish ${event} on ${stream}: ${status} ${JSON.stringify(body)}`);
  return body;
}

/**
 * A gateway of the test's own on a free port, serving www/dist, with the Redis
 * broker under `prefix`. Returns {url, port, start(), kill(), stop(), log()}.
 */
export async function ownGateway({ prefix, args = [] }) {
  const port = await freePort();
  const argv = [
    'serve', '--port', String(port), '--bind', '127.0.0.1', '--dev-tokens',
    '--static-dir', join(ROOT, 'www/dist'), '--redis-url', REDIS_URL, '--key-prefix', prefix, ...args,
  ];
  let out = '';
  const gw = { port, url: `http://127.0.0.1:${port}`, proc: null, log: () => out };
  gw.start = async () => {
    const proc = spawn(GATEWAY, argv, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: 'info' } });
    gw.proc = proc;
    proc.stdout.on('data', (d) => (out += d));
    proc.stderr.on('data', (d) => (out += d));
    proc.exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`gateway exited during start\n${out}`);
      try {
        const res = await fetch(`${gw.url}/healthz`, { signal: AbortSignal.timeout(1000) });
        if (res.ok) return;
      } catch {
        // not up yet
      }
      if (Date.now() > deadline) {
        proc.kill('SIGKILL');
        throw new Error(`gateway did not answer /healthz within 20 s\n${out}`);
      }
      await sleep(50);
    }
  };
  gw.kill = async (signal = 'SIGKILL') => {
    const p = gw.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    p.kill(signal);
    await Promise.race([p.exited, sleep(10_000)]);
  };
  gw.stop = () => gw.kill('SIGTERM').then(() => gw.kill('SIGKILL'));
  await gw.start();
  return gw;
}

/** Records every distinct text of [data-testid=job-answer] as it changes (proves streaming). */
export async function recordAnswers(page) {
  await page.evaluate(() => {
    window.__answers = [];
    const read = () => {
      const t = document.querySelector('[data-testid="job-answer"]')?.textContent ?? '';
      const a = window.__answers;
      if (t && a[a.length - 1] !== t) a.push(t);
    };
    new MutationObserver(read).observe(document.body, { subtree: true, childList: true, characterData: true });
    read();
  });
}

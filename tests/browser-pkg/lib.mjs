// Shared helpers of the package's browser tests: a static server for the
// harness and the package, gateway processes, tokens, publishing, Redis
// clean-up, Chromium.
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { readFile, stat } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join, normalize, extname, sep } from 'node:path';
import { ROOT, GATEWAY, REDIS_URL, freePort, mintToken, sleep, api as restApi, publishRedis } from '../support/node.mjs';

export {
  ROOT, GATEWAY, REDIS_URL, CHROMIUM, run, sleep, waitFor, freePort, launchBrowser, mintToken, cleanRedis,
  publishRedis as publish,
} from '../support/node.mjs';

export const HARNESS_DIR = join(ROOT, 'tests/browser-pkg/harness');
export const PKG_DIR = join(ROOT, 'pkg');


export function randomPrefix() {
  return `llbrowser:${randomBytes(6).toString('hex')}:`;
}

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.ts': 'text/plain; charset=utf-8',
};

/**
 * Serves the harness at `/` and the package (pkg/: index.js, wasm/) at
 * `/liveline/` on a free port. Returns {url, close}.
 */
export async function startStaticServer() {
  const mounts = [
    ['/liveline/', PKG_DIR],
    ['/', HARNESS_DIR],
  ];
  const server = createServer(async (req, res) => {
    try {
      let path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
      if (path === '/') path = '/index.html';
      const [prefix, dir] = mounts.find(([p]) => path.startsWith(p));
      const file = normalize(join(dir, path.slice(prefix.length)));
      if (!file.startsWith(dir + sep) && file !== dir) throw Object.assign(new Error('outside'), { status: 403 });
      const info = await stat(file);
      if (!info.isFile()) throw Object.assign(new Error('not a file'), { status: 404 });
      const body = await readFile(file);
      res.writeHead(200, {
        'content-type': TYPES[extname(file)] ?? 'application/octet-stream',
        'cache-control': 'no-store',
      });
      res.end(body);
    } catch (err) {
      res.writeHead(err.status ?? 404, { 'content-type': 'text/plain' });
      res.end(String(err.message));
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${server.address().port}`;
  return {
    url,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections?.();
        server.close(() => resolve());
      }),
  };
}

/**
 * A gateway process on `port` (free by default). `opts.redis` with
 * `opts.prefix` selects the Redis broker; `opts.args` adds flags.
 * Returns {port, url, proc, log(), signal(sig), kill(signal), stop(), restart()}:
 * kill() waits for the exit, signal() does not.
 */
export async function startGateway(opts = {}) {
  const port = opts.port ?? (await freePort());
  const args = ['serve', '--port', String(port), '--bind', '127.0.0.1', '--dev-tokens'];
  if (opts.prefix) args.push('--redis-url', REDIS_URL, '--key-prefix', opts.prefix);
  args.push(...(opts.args ?? []));
  let out = '';
  const gw = { port, url: `http://127.0.0.1:${port}`, proc: null };
  const launch = async () => {
    const proc = spawn(GATEWAY, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'info' } });
    gw.proc = proc;
    proc.stdout.on('data', (d) => (out += d));
    proc.stderr.on('data', (d) => (out += d));
    proc.exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (proc.exitCode !== null || proc.signalCode !== null) {
        throw new Error(`gateway exited during start (${proc.exitCode ?? proc.signalCode})\n${out}`);
      }
      try {
        const res = await fetch(`${gw.url}/healthz`, { signal: AbortSignal.timeout(1000) });
        if (res.ok) break;
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
  gw.log = () => out;
  /** Sends a signal that does not end the process (SIGSTOP, SIGCONT). */
  gw.signal = (signal) => {
    const p = gw.proc;
    if (p && p.exitCode === null && p.signalCode === null) p.kill(signal);
  };
  gw.kill = async (signal = 'SIGKILL') => {
    const p = gw.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    p.kill(signal);
    await Promise.race([p.exited, sleep(10_000)]);
  };
  gw.stop = async () => {
    const p = gw.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    p.kill('SIGTERM');
    const done = await Promise.race([p.exited.then(() => true), sleep(5_000).then(() => false)]);
    if (!done) await gw.kill('SIGKILL');
  };
  gw.restart = launch;
  await launch();
  return gw;
}

/** A user's REST call to gateway process `gw`. */
export const api = (gw, token, path, init) => restApi(gw.url, token, path, init);

/**
 * Opens the harness in a new context: exposes `__mintToken`, collects page
 * errors, waits for `init()`. Returns {context, page, problems}.
 */
export async function openHarness(browser, staticUrl, { tokenLog } = {}) {
  const context = await browser.newContext();
  context.setDefaultTimeout(15_000);
  const problems = [];
  const cache = new Map();
  await context.exposeFunction('__mintToken', async (sub, ttl) => {
    // Long-lived tokens are minted once per user; short ones every time.
    const key = `${sub}/${ttl}`;
    if (ttl >= 3600 && cache.has(key)) return cache.get(key);
    const t = await mintToken(sub, { ttl });
    tokenLog?.push({ sub, ttl, at: Date.now(), token: t });
    if (ttl >= 3600) cache.set(key, t);
    return t;
  });
  const page = await context.newPage();
  page.on('pageerror', (err) => problems.push(`pageerror: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error' || msg.type() === 'warning') problems.push(`console.${msg.type()}: ${msg.text()}`);
  });
  await gotoHarness(page, staticUrl);
  return { context, page, problems };
}

export async function gotoHarness(page, staticUrl) {
  await page.goto(`${staticUrl}/`, { waitUntil: 'load', timeout: 15_000 });
  await page.waitForFunction(() => window.harness && (window.harness.ready || window.harness.error), null, { timeout: 15_000 });
  const error = await page.evaluate(() => window.harness.error);
  if (error) throw new Error(`init() failed in the page: ${error}`);
}

/** Waits until client `id`'s snapshot is `state`; returns the snapshot. */
export async function waitState(page, id, state, timeout = 15_000) {
  try {
    await page.waitForFunction(([id, s]) => window.harness.snapshot(id).current === s, [id, state], { timeout, polling: 25 });
  } catch (err) {
    const states = await page.evaluate((id) => window.harness.states(id).map((s) => `${s.current}(${s.reason})`), id).catch(() => []);
    throw new Error(`client ${id} never reached "${state}" within ${timeout} ms; states: ${states.join(' -> ')}`, { cause: err });
  }
  return page.evaluate((id) => window.harness.snapshot(id), id);
}

/** Enveloped events of client `id` on `stream` (in arrival order; `stream:recovered:v1` notices excluded). */
export function streamEvents(page, id, stream) {
  return page.evaluate(
    ([id, stream]) => window.harness.events(id).filter((e) => e.stream === stream && e.name !== 'stream:recovered:v1'),
    [id, stream],
  );
}

/**
 * Publishes a job's events straight to Redis, checking each gets the next seq
 * after `seq` (1: the job's `queued` status): `chunk()` sends `t0 `, `t1 `, …,
 * `complete()` the final status. `seq` is the stream's head after the last.
 */
export function jobPublisher({ prefix, user, jobId, seq = 1 }) {
  const stream = `job:${jobId}`;
  const p = {
    seq,
    chunks: 0,
    async send(event, data) {
      const env = await publishRedis({ prefix, user, stream, event, data });
      p.seq += 1;
      if (env.seq !== p.seq) throw new Error(`publish assigned seq ${env.seq}, expected ${p.seq}`);
    },
    async chunk() {
      const index = p.chunks++;
      await p.send('job:chunk:v1', { jobId, index, text: `t${index} ` });
    },
    complete: () => p.send('job:status:v1', { jobId, status: 'completed', progress: 1, message: 'done' }),
  };
  return p;
}

/** Asserts seqs are exactly 1..n in order; returns a message or null. */
export function checkContiguous(events, n) {
  const seqs = events.map((e) => e.seq);
  const want = Array.from({ length: n }, (_, i) => i + 1);
  if (JSON.stringify(seqs) === JSON.stringify(want)) return null;
  const seen = new Map();
  for (const s of seqs) seen.set(s, (seen.get(s) ?? 0) + 1);
  const dup = [...seen].filter(([, c]) => c > 1).map(([s]) => s);
  const lost = want.filter((s) => !seen.has(s));
  return `seqs ${JSON.stringify(seqs)}; duplicated ${JSON.stringify(dup)}; lost ${JSON.stringify(lost)}`;
}

// The package as a Vite user gets it: tests/packaging/vite-app imports
// `liveline-client` and `liveline-client/react` by name through the npm workspace
// (node_modules/liveline -> pkg/), with no liveline-specific Vite config.
// `vite build` must emit the .wasm the package loads with
// `new URL(..., import.meta.url)`; the built app, served from its own origin,
// then connects in Chromium to a real gateway (Redis broker, demo worker),
// starts a job and shows its events.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT, GATEWAY, run, launchBrowser, mintToken, cleanRedis, startDistServer } from '../support/node.mjs';
import { startGateway, waitFor } from '../browser-pkg/lib.mjs';

const APP_DIR = join(ROOT, 'tests/packaging/vite-app');
const VITE = join(ROOT, 'node_modules/.bin/vite');
const PKG_WASM = join(ROOT, 'pkg/wasm/liveline_bg.wasm');

let outDir, web, gw, browser;
const prefix = `llpackaging:vite:${randomBytes(6).toString('hex')}:`;

before(async () => {
  for (const [file, how] of [
    [PKG_WASM, 'bash scripts/build-pkg.sh'],
    [GATEWAY, 'cargo build -p liveline-gateway'],
    [VITE, 'npm ci'],
  ]) {
    if (!existsSync(file)) throw new Error(`${file} is missing: run \`${how}\` first`);
  }
  outDir = await mkdtemp(join(tmpdir(), 'liveline-vite-app-'));
});

after(async () => {
  await browser?.close();
  await web?.close();
  await gw?.stop();
  if (gw) await cleanRedis(prefix);
  if (outDir) await rm(outDir, { recursive: true, force: true });
});

test('vite build emits the package\'s wasm as an asset the bundle points at', { timeout: 60_000 }, async () => {
  await run(VITE, ['build', APP_DIR, '--outDir', outDir, '--emptyOutDir', '--logLevel', 'warn'], {
    cwd: ROOT,
    timeout: 60_000,
    env: { ...process.env, NO_COLOR: '1' },
  });
  const assets = await readdir(join(outDir, 'assets'));
  const wasm = assets.filter((f) => f.endsWith('.wasm'));
  assert.equal(wasm.length, 1, `one .wasm asset, got ${JSON.stringify(assets)}`);
  assert.match(wasm[0], /^liveline_bg-.+\.wasm$/);
  assert.deepEqual(
    await readFile(join(outDir, 'assets', wasm[0])),
    await readFile(PKG_WASM),
    'the emitted asset is the package\'s wasm, byte for byte',
  );
  const js = assets.filter((f) => f.endsWith('.js'));
  assert.ok(js.length > 0, 'a JS bundle');
  const bundles = await Promise.all(js.map((f) => readFile(join(outDir, 'assets', f), 'utf8')));
  assert.ok(bundles.some((src) => src.includes(wasm[0])), 'the bundle references the hashed wasm file');
});

test('the built app connects, starts a job and receives its events', { timeout: 60_000 }, async () => {
  assert.ok(existsSync(join(outDir, 'index.html')), 'the build test ran first');
  web = await startDistServer(outDir);
  // The page is on its own origin; the gateway allows exactly that one.
  [gw, browser] = await Promise.all([
    startGateway({ prefix, args: ['--demo-worker', '--demo-step-ms', '50', '--allowed-origins', web.url] }),
    launchBrowser(),
  ]);
  const token = await mintToken('vite-app-user');

  const context = await browser.newContext();
  context.setDefaultTimeout(15_000);
  const problems = [];
  const gatewayHttp = [];
  const sockets = [];
  const wasmResponses = [];
  try {
    const page = await context.newPage();
    page.on('pageerror', (err) => problems.push(`pageerror: ${err.message}`));
    page.on('console', (msg) => {
      if (msg.type() === 'error' || msg.type() === 'warning') problems.push(`console.${msg.type()}: ${msg.text()}`);
    });
    page.on('request', (req) => {
      if (req.url().startsWith(gw.url)) gatewayHttp.push(`${req.method()} ${req.url()}`);
    });
    page.on('websocket', (ws) => sockets.push(ws.url()));
    page.on('response', (res) => {
      if (res.url().endsWith('.wasm')) wasmResponses.push({ url: res.url(), status: res.status(), type: res.headers()['content-type'] });
    });

    const query = new URLSearchParams({ gw: gw.url, token });
    await page.goto(`${web.url}/?${query}`, { waitUntil: 'load', timeout: 15_000 });

    const text = (id) => page.textContent(`[data-testid="${id}"]`, { timeout: 15_000 }).then((t) => t ?? '');
    const progress = async () =>
      `state=${await text('state').catch(() => '?')} job=${await text('job-id').catch(() => '?')} ` +
      `statuses=${await text('statuses').catch(() => '?')} error=${await text('error').catch(() => '?')} ` +
      `problems=${JSON.stringify(problems)}\ngateway log:\n${gw.log().slice(-2000)}`;
    const waitText = async (what, id, ok, timeout = 20_000) => {
      try {
        return await waitFor(what, async () => {
          const t = await text(id);
          return ok(t) && t;
        }, { timeout });
      } catch (err) {
        throw new Error(`${err.message}\n${await progress()}`, { cause: err });
      }
    };

    await waitText('state "connected"', 'state', (t) => t === 'connected');

    // job:start:v1 was sent on connect; its ack carries the job id.
    const jobId = await waitText('the job:start:v1 ack', 'job-id', (t) => t.length > 0);
    assert.match(jobId, /\S/);
    assert.equal(await text('error'), '');

    // The demo worker runs the job: job:status:v1 events arrive, and useJob follows them.
    const statuses = await waitText('a job:status:v1 event', 'statuses', (t) => t.length > 0);
    assert.equal(statuses.split(' ')[0], 'queued', `the first status is queued: ${statuses}`);
    await waitText('the job to complete', 'job-status', (t) => t === 'completed', 30_000);
    assert.match(await text('statuses'), /\bcompleted$/);
    assert.equal(await text('state'), 'connected');

    // The wasm came from Vite's asset, served as application/wasm (no MIME fallback warning).
    assert.equal(wasmResponses.length, 1, JSON.stringify(wasmResponses));
    assert.ok(wasmResponses[0].url.startsWith(`${web.url}/assets/liveline_bg-`), wasmResponses[0].url);
    assert.equal(wasmResponses[0].status, 200);
    assert.equal(wasmResponses[0].type, 'application/wasm');

    // Everything went over one WebSocket but the one read of the job's history
    // useJob makes on first use (so a reload shows the whole job): nothing polled.
    assert.deepEqual(gatewayHttp, [`GET ${gw.url}/api/v1/jobs/${jobId}/events?after=0`]);
    assert.equal(sockets.length, 1, JSON.stringify(sockets));
    assert.ok(sockets[0].startsWith(gw.url.replace(/^http/, 'ws') + '/socket.io/'), sockets[0]);
    assert.deepEqual(problems, []);
  } finally {
    await context.close();
  }
});

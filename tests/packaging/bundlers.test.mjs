// The packaging matrix: the `npm pack` tarball installed into a fresh app per
// bundler or framework (Vite 5, 6 and 7, webpack 5, esbuild, Next.js) (each with its tools pinned in its own lock file, installed by
// scripts/setup.sh), the same app source (tests/packaging/bundlers/app) built
// with no liveline-specific config, served as a static host would, loaded in
// headless Chromium, connected to a real gateway: it starts a job and sees it
// complete. esbuild needs one line, the one docs/sdk.md gives: copy the
// package's .wasm next to the bundle.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { ROOT, GATEWAY, run, launchBrowser, mintToken, startDistServer, freePort } from '../support/node.mjs';
import { startGateway, waitFor } from '../browser-pkg/lib.mjs';

const DIR = join(ROOT, 'tests/packaging/bundlers');
const PACK_DIR = join(ROOT, '.tmp/pack');
const page = (script, type = 'module') =>
  `<!doctype html><html><head><meta charset="utf-8"></head><body><div id="root"></div>` +
  `<script${type ? ` type="${type}"` : ''} src="./${script}"></script></body></html>`;

/** Each case: its folder, how it builds, and the folder a static host serves. */
const CASES = [
  { name: 'vite5', build: ['node_modules/.bin/vite', ['build', '--logLevel', 'warn']], out: 'dist', dev: true, entry: page('src/index.js') },
  { name: 'vite6', build: ['node_modules/.bin/vite', ['build', '--logLevel', 'warn']], out: 'dist', dev: true, entry: page('src/index.js') },
  { name: 'vite7', build: ['node_modules/.bin/vite', ['build', '--logLevel', 'warn']], out: 'dist', dev: true, entry: page('src/index.js') },
  {
    name: 'webpack5',
    build: ['node_modules/.bin/webpack', ['--mode', 'production']],
    out: 'dist',
    html: page('main.js', null),
  },
  {
    name: 'esbuild',
    build: ['node_modules/.bin/esbuild', ['src/index.js', '--bundle', '--format=esm', '--minify', '--outdir=dist']],
    out: 'dist',
    html: page('index.js'),
    // The one line of config esbuild needs (docs/sdk.md).
    after: (dir) => copyFile(join(dir, 'node_modules/liveline-client/wasm/liveline_bg.wasm'), join(dir, 'dist/liveline_bg.wasm')),
  },
  {
    // The app router: a server page renders a client component that creates
    // the client in an effect. Server rendering imports the package.
    name: 'nextjs',
    ownSource: true,
    build: ['node_modules/.bin/next', ['build']],
    out: '.next',
    serve: startNext,
  },
];

/** `next start` on a free port, once it answers. */
async function startNext(dir) {
  const port = await freePort();
  const proc = spawn(join(dir, 'node_modules/.bin/next'), ['start', '-p', String(port), '-H', '127.0.0.1'], {
    cwd: dir,
    stdio: 'ignore',
    env: { ...process.env, NEXT_TELEMETRY_DISABLED: '1' },
  });
  const url = `http://127.0.0.1:${port}`;
  await waitFor('next start', async () => {
    if (proc.exitCode !== null) throw new Error(`next start exited with ${proc.exitCode}`);
    return fetch(url, { signal: AbortSignal.timeout(2_000) }).then((r) => r.ok, () => false);
  }, { timeout: 30_000 });
  return {
    url,
    close: () =>
      new Promise((resolve) => {
        proc.on('exit', resolve);
        proc.kill('SIGTERM');
      }),
  };
}

let tarball, gw, browser;

before(async () => {
  for (const [file, how] of [
    [join(ROOT, 'pkg/wasm/liveline_bg.wasm'), 'bash scripts/build-pkg.sh'],
    [GATEWAY, 'cargo build -p liveline-gateway'],
    ...CASES.map((c) => [join(DIR, c.name, 'node_modules'), 'bash scripts/setup.sh']),
  ]) {
    if (!existsSync(file)) throw new Error(`${file} is missing: run \`${how}\` first`);
  }
  await rm(PACK_DIR, { recursive: true, force: true });
  await mkdir(PACK_DIR, { recursive: true });
  const { stdout } = await run('npm', ['pack', '--ignore-scripts', '--pack-destination', PACK_DIR, '--json'], {
    cwd: join(ROOT, 'pkg'),
  });
  tarball = join(PACK_DIR, JSON.parse(stdout)[0].filename);
  [gw, browser] = await Promise.all([
    startGateway({ args: ['--demo-worker', '--demo-step-ms', '50'] }),
    launchBrowser(),
  ]);
});

after(async () => {
  await browser?.close();
  await gw?.stop();
});

/** Opens `url` with the gateway and a token in its query; waits for the job to complete. */
async function completesAJob(url, who) {
  const context = await browser.newContext();
  const problems = [];
  try {
    const p = await context.newPage();
    p.on('pageerror', (err) => problems.push(`pageerror: ${err.message}`));
    p.on('console', (msg) => {
      // Failed requests are checked below, by URL (the browser's own favicon request is not the app's).
      if (msg.type() === 'error' && !msg.text().startsWith('Failed to load resource')) problems.push(`console.error: ${msg.text()}`);
    });
    p.on('response', (res) => {
      if (res.status() >= 400 && !res.url().endsWith('/favicon.ico')) problems.push(`${res.status()} ${res.url()}`);
    });
    const token = await mintToken(`bundler-${who}`);
    await p.goto(`${url}/?${new URLSearchParams({ gw: gw.url, token })}`, { waitUntil: 'load' });
    const text = () => p.textContent('#out', { timeout: 5_000 }).catch(() => '');
    try {
      await waitFor('"connected completed"', async () => (await text()) === 'connected completed', { timeout: 30_000 });
    } catch (err) {
      throw new Error(`${err.message}\nshown: ${await text()}\nproblems: ${problems.join('\n')}`, { cause: err });
    }
    assert.deepEqual(problems, []);
  } finally {
    await context.close();
  }
}

/** Installs the tarball into a case's app, as a user does (not saved: the lock pins the tools only). */
async function installTarball(dir, c) {
  await run('npm', ['install', '--no-save', '--no-audit', '--no-fund', '--loglevel=error', tarball], { cwd: dir, timeout: 60_000 });
  if (!c.ownSource) {
    await mkdir(join(dir, 'src'), { recursive: true });
    await copyFile(join(DIR, 'app/index.js'), join(dir, 'src/index.js'));
  }
  // Vite's entry is an index.html at the project's root.
  if (c.entry) await writeFile(join(dir, 'index.html'), c.entry);
}

for (const c of CASES.filter((c) => c.dev)) {
  test(`${c.name} dev server: with the documented optimizeDeps line the app completes a job`, { timeout: 120_000 }, async () => {
    const dir = join(DIR, c.name);
    await installTarball(dir, c);
    const port = await freePort();
    const vite = spawn(join(dir, 'node_modules/.bin/vite'), ['--config', 'vite.dev.config.js', '--port', String(port), '--strictPort', '--host', '127.0.0.1'], {
      cwd: dir,
      stdio: 'ignore',
      env: { ...process.env, NO_COLOR: '1' },
    });
    const url = `http://127.0.0.1:${port}`;
    try {
      await waitFor('vite dev', async () => {
        if (vite.exitCode !== null) throw new Error(`vite exited with ${vite.exitCode}`);
        return fetch(url, { signal: AbortSignal.timeout(2_000) }).then((r) => r.ok, () => false);
      }, { timeout: 30_000 });
      await completesAJob(url, `${c.name}-dev`);
    } finally {
      vite.kill('SIGTERM');
    }
  });
}

for (const c of CASES) {
  test(`${c.name}: the tarball builds with no config and the app completes a job in Chromium`, { timeout: 300_000 }, async () => {
    const dir = join(DIR, c.name);
    await installTarball(dir, c);
    const out = join(dir, c.out);
    await rm(out, { recursive: true, force: true });
    const [bin, args] = c.build;
    await run(join(dir, bin), args, {
      cwd: dir,
      timeout: 180_000,
      env: { ...process.env, NO_COLOR: '1', NEXT_TELEMETRY_DISABLED: '1' },
    });
    if (c.html) await writeFile(join(out, 'index.html'), c.html);
    await c.after?.(dir);
    const files = await readdir(out, { recursive: true });
    assert.ok(files.some((f) => f.endsWith('.wasm')), `a .wasm next to the bundle: ${files.join(', ')}`);

    const web = c.serve ? await c.serve(dir) : await startDistServer(out);
    try {
      await completesAJob(web.url, c.name);
    } finally {
      await web.close();
    }
  });
}

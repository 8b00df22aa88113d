// The package as a Node ESM user gets it: imported by name through the npm
// workspace (node_modules/liveline-client -> pkg/), never by a path into target/.
// Node 20 has no global WebSocket, so this checks loading, the API surface
// and its errors; the browser tests cover the connection itself.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { ROOT, run } from '../support/node.mjs';

const require = createRequire(import.meta.url);
const PKG = join(ROOT, 'pkg');

test('the package resolves by name to the workspace pkg/', () => {
  const manifest = require.resolve('liveline-client/package.json');
  assert.match(manifest, /\/pkg\/package\.json$/);
  const pkg = require('liveline-client/package.json');
  assert.equal(pkg.name, 'liveline-client');
  assert.ok(pkg.exports['.'].types && pkg.exports['./react'].default, 'exports . and ./react with types');
});

test('the packed tarball holds every file the exports map and the types point to', async () => {
  // What `npm publish` would upload: `npm pack --dry-run --json` lists it.
  const { stdout } = await run('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: PKG });
  const packed = new Set(JSON.parse(stdout)[0].files.map((f) => f.path));
  const pkg = require('liveline-client/package.json');
  const targets = [pkg.main, pkg.types];
  const walk = (v) => (typeof v === 'string' ? targets.push(v) : Object.values(v).forEach(walk));
  walk(pkg.exports);
  for (const t of targets) assert.ok(packed.has(t.replace(/^\.\//, '')), `${t} is not in the tarball: ${[...packed].join(', ')}`);
  // index.d.ts re-exports the generated contracts.
  assert.ok(packed.has('contracts.d.ts'));
  // What a registry page and a legal review need.
  for (const f of ['README.md', 'LICENSE-MIT', 'LICENSE-APACHE', 'wasm/index.js.map', 'wasm/react.js.map', 'wasm/jobs.js.map']) {
    assert.ok(packed.has(f), `${f} is not in the tarball`);
  }
  assert.ok(pkg.engines?.node && pkg.keywords?.length > 0, 'engines and keywords');
  // The subpaths ship minified: one line of code and a source map comment.
  for (const sub of ['./react', './jobs']) {
    const code = await readFile(join(PKG, pkg.exports[sub].default), 'utf8');
    assert.ok(code.split('\n').length <= 3 && code.includes('sourceMappingURL'), `${sub} is minified`);
  }
});

test('npm publish --dry-run accepts the package', async () => {
  const { stdout, stderr } = await run('npm', ['publish', '--dry-run', '--ignore-scripts'], { cwd: PKG });
  assert.match(stdout + stderr, /liveline-client@\d+\.\d+\.\d+/);
});

test('importing loads nothing and a client can be created before init()', async () => {
  const { Liveline } = await import('liveline-client');
  const client = new Liveline({ url: 'ws://127.0.0.1:1', getToken: () => 't', storage: 'memory' });
  assert.equal(client.getSnapshot().current, 'idle');
  const off = client.on('job:status:v1', () => {});
  off();
  client.dispose();
  assert.throws(() => client.getSnapshot(), (e) => e.code === 'disposed');
});

test('after init() the client starts idle and rejects bad options with stable codes', async () => {
  const { init, Liveline } = await import('liveline-client');
  const wasm = await readFile(new URL(import.meta.resolve('liveline-client/wasm/liveline_bg.wasm')));
  await init(wasm);
  await init(wasm); // idempotent

  const client = new Liveline({ url: 'ws://127.0.0.1:1', getToken: () => 't' });
  const snap = client.getSnapshot();
  assert.equal(snap.current, 'idle');
  assert.equal(snap.queued, 0);
  assert.equal(client.getSnapshot(), snap, 'the snapshot is the same object until the state changes');

  assert.throws(() => new Liveline({ getToken: () => 't' }), (e) => e.code === 'invalid_argument');
  assert.throws(() => new Liveline({ url: 'ws://x' }), (e) => e.code === 'invalid_argument');

  // An action sent while not connected waits in the outbox.
  const pending = client.send('job:start:v1', { kind: 'research', params: {} });
  assert.equal(client.getSnapshot().queued, 1);
  await assert.rejects(client.send('job:start:v1', { big: 1n }), (e) => e.code === 'invalid_argument');
  pending.catch(() => {});
  // The queued action's expiry is a timer: dispose() releases it.
  client.dispose();
  assert.throws(() => client.getSnapshot(), (e) => e.code === 'disposed');
});

test('the react subpath exports the hooks', async () => {
  const react = await import('liveline-client/react');
  for (const name of ['LivelineProvider', 'useConnectionState', 'useJob', 'useSend']) {
    assert.equal(typeof react[name], 'function', name);
  }
});

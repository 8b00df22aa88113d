// What the Node test suites (tests/browser-pkg, tests/e2e, tests/packaging)
// share: paths, the Chromium launch, free ports, and driving the gateway
// binary and Redis from outside the page.
import { execFile } from 'node:child_process';
import { createServer } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import { readFile, stat } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { extname, join, normalize, sep } from 'node:path';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';

export const run = promisify(execFile);

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const GATEWAY = process.env.LIVELINE_GATEWAY_BIN || join(ROOT, 'target/debug/liveline-gateway');
export const REDIS_URL = process.env.LIVELINE_TEST_REDIS_URL || 'redis://127.0.0.1:6379';
export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` until it returns a truthy value; throws `what` (and the last value) after `timeout`. */
export async function waitFor(what, fn, { timeout = 15_000, interval = 50 } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what}; last: ${JSON.stringify(last)}`);
    }
    await sleep(interval);
  }
}

/** Headless Chromium as this machine needs it (root, no GPU, no outside network). */
export function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    timeout: 30_000,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-dev-shm-usage',
      '--disable-background-networking',
      '--disable-component-update',
      '--no-first-run',
    ],
  });
}

/** A TCP port free on 127.0.0.1 right now. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createNetServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Mints an HS256 token with the gateway binary (`extra`: e.g. `['--role', 'service']`). */
export async function mintToken(sub, { ttl = 3600, extra = [] } = {}) {
  const { stdout } = await run(GATEWAY, ['mint-token', '--sub', sub, '--ttl', String(ttl), ...extra], { timeout: 10_000 });
  return stdout.trim();
}

/**
 * Publishes one event straight to Redis with the gateway binary (works while no
 * gateway runs). Returns the envelope. Without `user` the stream is a topic
 * (`topicPrefix` names its prefix, as the gateway's `--topic-prefix` does).
 */
export async function publishRedis({ prefix, user, stream, event, data, topicPrefix }) {
  const who = user ? ['--user', user] : ['--topic-prefix', topicPrefix];
  const { stdout } = await run(
    GATEWAY,
    ['publish', '--redis-url', REDIS_URL, '--key-prefix', prefix, ...who, '--stream', stream, '--event', event, '--data', JSON.stringify(data)],
    { timeout: 10_000 },
  );
  return JSON.parse(stdout.trim());
}

/** Deletes every Redis key under `prefix`; returns how many. */
export async function cleanRedis(prefix) {
  const { stdout } = await run('redis-cli', ['-u', REDIS_URL, '--scan', '--pattern', `${prefix}*`], { timeout: 10_000 });
  const keys = stdout.split('\n').filter(Boolean);
  for (let i = 0; i < keys.length; i += 200) {
    await run('redis-cli', ['-u', REDIS_URL, 'DEL', ...keys.slice(i, i + 200)], { timeout: 10_000 });
  }
  return keys.length;
}

/** A REST call to the gateway at `base` with a bearer token: {status, body (JSON, else text)}. */
export async function api(base, token, path, init = {}) {
  const res = await fetch(`${base}${path}`, {
    ...init,
    headers: { authorization: `Bearer ${token}`, ...(init.headers ?? {}) },
    signal: AbortSignal.timeout(10_000),
  });
  const text = await res.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = text;
  }
  return { status: res.status, body };
}

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.wasm': 'application/wasm',
};

/** Serves the built app from `dir` on a free port, as any static host would. */
export async function startDistServer(dir) {
  const server = createServer(async (req, res) => {
    try {
      let path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
      if (path === '/') path = '/index.html';
      const file = normalize(join(dir, path));
      if (!file.startsWith(dir + sep)) throw Object.assign(new Error('outside'), { status: 403 });
      if (!(await stat(file)).isFile()) throw new Error('not a file');
      const body = await readFile(file);
      res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream' });
      res.end(body);
    } catch (err) {
      res.writeHead(err.status ?? 404, { 'content-type': 'text/plain' });
      res.end(String(err.message));
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections?.();
        server.close(() => resolve());
      }),
  };
}

// Test harness: imports the npm package by name (import map) and exposes a
// small API on `window.harness` for Playwright to drive.
//
// Tokens come from `window.__mintToken(sub, ttl)` (a Playwright
// `exposeFunction` that runs the gateway's `mint-token`), or from a fixed
// `token` option.
import { init, Liveline } from 'liveline-client';
import { jobOf, jobsOf, startJob, watchJob } from 'liveline-client/jobs';

const clients = new Map();
const tickets = new Map();
let nextTicket = 0;

function errorInfo(err) {
  return { name: err?.name ?? null, message: String(err?.message ?? err), code: err?.code ?? null, isError: err instanceof Error };
}

const harness = {
  ready: false,
  error: null,

  /**
   * Creates a client. `opts`: the Liveline options except `getToken` and
   * `url`-less extras: {url, sub, ttl, token, record = true, storage,
   * storageKey, backoff, ackTimeoutMs, connectTimeoutMs, outboxCapacity}.
   */
  create(id, opts) {
    const { sub, ttl, token, record = true, ...rest } = opts;
    const rec = { events: [], states: [], settled: [], tokenCalls: 0, tokens: [], unsubs: [] };
    const getToken = async () => {
      rec.tokenCalls += 1;
      const t = token !== undefined ? token : await window.__mintToken(sub, ttl ?? 3600);
      rec.tokens.push(t);
      return t;
    };
    const client = new Liveline({ ...rest, getToken });
    rec.client = client;
    if (record) {
      rec.unsubs.push(
        client.on('*', (payload, name) => {
          rec.events.push({
            name,
            stream: payload?.stream ?? null,
            epoch: payload?.epoch ?? null,
            seq: typeof payload?.seq === 'number' ? payload.seq : null,
            at: Date.now(),
            // Binary attachments arrive as Uint8Array: recorded as {bytes: [...]}.
            payload: JSON.parse(JSON.stringify(payload ?? null, (_k, v) => (v instanceof Uint8Array ? { bytes: [...v] } : v))),
          });
        }),
      );
      rec.unsubs.push(
        client.on('action:settled', (s) => {
          rec.settled.push({ action: s.action, ok: s.ok, data: s.data ?? null, error: s.error ? errorInfo(s.error) : null });
        }),
      );
      const pushState = () => rec.states.push({ ...client.getSnapshot(), at: Date.now() });
      pushState();
      rec.unsubs.push(client.subscribe(pushState));
    }
    clients.set(id, rec);
    return { storage: client.storage };
  },

  connect(id) {
    clients.get(id).client.connect();
  },

  close(id) {
    clients.get(id).client.close();
  },

  /** Removes the harness's own listeners (so stats() can reach zero). */
  unlisten(id) {
    const rec = clients.get(id);
    for (const u of rec.unsubs.splice(0)) u();
  },

  /**
   * Answers every `event` that asks for an ack with `(value, payload)`;
   * counts the events that came with a `reply` and those without.
   */
  answer(id, event, value) {
    const rec = clients.get(id);
    rec.answers = { withReply: 0, without: 0 };
    rec.unsubs.push(
      rec.client.on(event, (payload, reply) => {
        if (typeof reply !== 'function') return void (rec.answers.without += 1);
        rec.answers.withReply += 1;
        reply(value, payload);
        reply('a second reply is ignored');
      }),
    );
  },
  answers(id) {
    return clients.get(id).answers;
  },

  /** Sends without waiting; returns a ticket for `result(ticket)`. */
  send(id, action, data) {
    const ticket = ++nextTicket;
    const entry = { done: false, ok: null, data: null, error: null };
    tickets.set(ticket, entry);
    let p;
    try {
      p = clients.get(id).client.send(action, data);
    } catch (err) {
      p = Promise.reject(err);
    }
    p.then(
      (v) => Object.assign(entry, { done: true, ok: true, data: v ?? null }),
      (e) => Object.assign(entry, { done: true, ok: false, error: errorInfo(e) }),
    );
    return ticket;
  },

  result(ticket) {
    return tickets.get(ticket);
  },

  /** Sends and waits for the outcome. */
  async sendAndWait(id, action, data) {
    const t = harness.send(id, action, data);
    const entry = tickets.get(t);
    while (!entry.done) await new Promise((r) => setTimeout(r, 10));
    return entry;
  },

  /** `liveline-client/jobs`, for tests that call it directly. */
  jobs: { jobOf, jobsOf, startJob, watchJob },

  /** The `Liveline` object itself, for tests that call its API directly. */
  client(id) {
    return clients.get(id).client;
  },

  snapshot(id) {
    return clients.get(id).client.getSnapshot();
  },
  stats(id) {
    return clients.get(id).client.stats();
  },
  storage(id) {
    return clients.get(id).client.storage;
  },
  events(id) {
    return clients.get(id).events;
  },
  states(id) {
    return clients.get(id).states;
  },
  settled(id) {
    return clients.get(id).settled;
  },
  tokenInfo(id) {
    const rec = clients.get(id);
    return { calls: rec.tokenCalls, tokens: rec.tokens.slice() };
  },
  drop(id) {
    clients.delete(id);
  },

  /**
   * `n` connect / wait for connected / close cycles on client `id`; returns
   * the cycles whose stats() after close were not all zero.
   */
  async cycles(id, n, timeoutMs = 10_000) {
    const client = clients.get(id).client;
    const dirty = [];
    for (let i = 0; i < n; i++) {
      client.connect();
      const deadline = Date.now() + timeoutMs;
      while (client.getSnapshot().current !== 'connected') {
        if (Date.now() > deadline) throw new Error(`cycle ${i}: not connected within ${timeoutMs} ms: ${JSON.stringify(client.getSnapshot())}`);
        await new Promise((r) => setTimeout(r, 2));
      }
      client.close();
      const stats = client.stats();
      if (Object.values(stats).some((v) => v !== 0) || client.getSnapshot().current !== 'closed') dirty.push({ i, stats, state: client.getSnapshot().current });
    }
    return dirty;
  },

  /** `n` cycles, each with a new client (`opts` as in create, nothing recorded). */
  async freshCycles(opts, n, timeoutMs = 10_000, { free = false } = {}) {
    const dirty = [];
    for (let i = 0; i < n; i++) {
      harness.create('__fresh', { ...opts, record: false });
      const r = await harness.cycles('__fresh', 1, timeoutMs);
      if (r.length) dirty.push({ ...r[0], i });
      // `free` disposes the client: the wasm side holds the app's callbacks,
      // which reach the client, so a dropped client is not collected by itself.
      if (free) clients.get('__fresh').client.dispose();
      clients.delete('__fresh');
    }
    return dirty;
  },

  /** The text the outbox left in IndexedDB under `key` (or null). */
  async idbOutbox(key) {
    // Never create the database here: the package's open() would then skip
    // its upgrade and find no object store.
    const dbs = await indexedDB.databases();
    if (!dbs.some((d) => d.name === 'liveline')) return null;
    return new Promise((resolve, reject) => {
      const req = indexedDB.open('liveline');
      req.onerror = () => reject(req.error);
      req.onsuccess = () => {
        const db = req.result;
        if (!db.objectStoreNames.contains('outbox')) {
          db.close();
          resolve(null);
          return;
        }
        const get = db.transaction('outbox', 'readonly').objectStore('outbox').get(key);
        get.onsuccess = () => {
          db.close();
          resolve(get.result ?? null);
        };
        get.onerror = () => reject(get.error);
      };
    });
  },
};

window.harness = harness;
init().then(
  () => {
    harness.ready = true;
  },
  (err) => {
    harness.error = String(err?.stack ?? err);
  },
);

// The public entry of the `liveline-client` package: `init()` (optional: the
// client loads the wasm itself on first use) and the `Liveline` class, the browser driver of the sans-IO core compiled to
// WebAssembly (`Core`, src/wasm.rs). The core decides everything (protocol,
// state, backoff, outbox, resume); this file owns what belongs to the page:
// the WebSocket, one timer, the online/offline/visibility listeners, the
// app's callbacks and where the outbox is stored.
import wasmInit, { Core } from './wasm/liveline.js';

let ready = null;
let initialized = false;

/** Creates an `Error` with a stable `code`. */
function livelineError(code, message) {
  const err = new Error(message);
  err.code = code;
  return err;
}

/** Whether this runs in Node (or Deno, Bun) rather than a page. */
const inNode = () => typeof document === 'undefined' && typeof process !== 'undefined' && !!process.versions?.node;

/**
 * The wasm bytes in Node, read next to this file: Node's fetch() takes no
 * file: URLs. `process.getBuiltinModule` (Node 20.16+) rather than an import,
 * so no bundler sees a Node module in the browser build.
 */
async function nodeWasm() {
  const fs = process.getBuiltinModule?.('node:fs/promises');
  if (!fs) throw new Error('this Node has no process.getBuiltinModule: pass the wasm bytes to init()');
  return fs.readFile(new URL('./liveline_bg.wasm', import.meta.url));
}

/**
 * Loads the WebAssembly module. Optional: a client loads it on first
 * `connect()` or `send()`. Call it to load earlier, or to pass the module
 * yourself; later calls return the same promise. Importing the package loads
 * nothing (safe during server-side rendering).
 * @param {string | URL | Response | BufferSource | WebAssembly.Module} [input]
 */
export function init(input) {
  if (!ready) {
    const source = input !== undefined ? Promise.resolve(input) : inNode() ? nodeWasm() : Promise.resolve(undefined);
    ready = source
      .then((s) => wasmInit(s === undefined ? undefined : { module_or_path: s }))
      .then(() => {
        initialized = true;
      });
    // A failed load may be retried.
    ready.catch(() => {
      ready = null;
    });
  }
  return ready;
}

const DB_NAME = 'liveline';
const DB_STORE = 'outbox';

/** The outbox in IndexedDB: survives reloads, holds a lot, async. */
function indexedDbStorage(key) {
  let db = null;
  const open = () =>
    (db ??= new Promise((resolve, reject) => {
      const req = indexedDB.open(DB_NAME, 1);
      req.onupgradeneeded = () => req.result.createObjectStore(DB_STORE);
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    }));
  const run = (mode, op) =>
    open().then(
      (d) =>
        new Promise((resolve, reject) => {
          const tx = d.transaction(DB_STORE, mode);
          const req = op(tx.objectStore(DB_STORE));
          tx.oncomplete = () => resolve(req.result);
          tx.onerror = tx.onabort = () => reject(tx.error);
        }),
    );
  // Writes are chained so the last snapshot is the one that stays.
  let last = Promise.resolve();
  return {
    kind: 'indexeddb',
    load: () => run('readonly', (s) => s.get(key)).then((v) => (typeof v === 'string' ? v : null)),
    save: (text) => (last = last.then(() => run('readwrite', (s) => s.put(text, key))).catch(() => {})),
  };
}

/** The outbox in localStorage: synchronous, small, everywhere. */
function localStorageStorage(key) {
  return {
    kind: 'localstorage',
    load: () => Promise.resolve(localStorage.getItem(key)),
    save: (text) => {
      try {
        localStorage.setItem(key, text);
      } catch {
        // Quota exceeded: the outbox still works in memory.
      }
    },
  };
}

function localStorageWorks() {
  try {
    const k = '__liveline_probe__';
    localStorage.setItem(k, '1');
    localStorage.removeItem(k);
    return true;
  } catch {
    return false;
  }
}

/** Chooses where the outbox lives: IndexedDB, then localStorage, then memory. */
function pickStorage(choice, key) {
  if (choice && typeof choice === 'object') return { kind: 'custom', ...choice };
  const want = choice || 'auto';
  if ((want === 'auto' || want === 'indexeddb') && typeof indexedDB !== 'undefined') {
    return indexedDbStorage(key);
  }
  if ((want === 'auto' || want === 'localstorage') && typeof localStorage !== 'undefined' && localStorageWorks()) {
    return localStorageStorage(key);
  }
  return { kind: 'memory' };
}

// What happened, for Core.input (src/wasm.rs).
const CONNECT = 0;
const CLOSE = 1;
const OPENED = 2;
const TEXT = 3;
const CLOSED = 4;
const TIMEOUT = 5;
const TOKEN = 6;
const TOKEN_FAILED = 7;
const ONLINE = 8;
const OFFLINE = 9;
const VISIBLE = 10;
const HIDDEN = 11;

/** The key of `onAny` listeners (no event name can collide with it). */
const ANY = Symbol('any');
/** The key of listeners told when the server said what it is (`liveline-client/jobs` uses it). */
const SERVER = Symbol.for('liveline.server');

const IDLE = Object.freeze({
  current: 'idle',
  previous: 'idle',
  reason: '',
  queued: 0,
  attempt: 0,
  retryIn: null,
  retryAt: null,
  error: null,
  recovered: false,
});

/**
 * The monotonic clock every timer of the core runs on: a wall clock that
 * steps (NTP, a sleeping laptop) fires no heartbeat timeout and expires no
 * action. `Date.now()` is used only where a time is stored across reloads
 * (the outbox's expiries) or shown (`retryAt`).
 */
const mono = () => performance.now();

/**
 * The core throws `"<code> <message>"`; anything else thrown on the way (a
 * value JSON cannot serialize) is an `invalid_argument`.
 */
function coreError(e) {
  if (typeof e !== 'string') return livelineError('invalid_argument', `liveline: ${messageOf(e)}`);
  const at = e.indexOf(' ');
  return livelineError(e.slice(0, at), e.slice(at + 1));
}

const messageOf = (e) => (e instanceof Error ? e.message : typeof e === 'string' ? e : 'unknown error');

/**
 * Takes binary values (ArrayBuffer, typed arrays, Node Buffers) out of `v`
 * into `out`, leaving `{_placeholder: true, num}` where each was, as the
 * Socket.IO protocol sends them.
 */
function takeBinary(v, out) {
  if (v instanceof ArrayBuffer) {
    out.push(new Uint8Array(v));
    return { _placeholder: true, num: out.length - 1 };
  }
  if (ArrayBuffer.isView(v)) {
    out.push(new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
    return { _placeholder: true, num: out.length - 1 };
  }
  if (Array.isArray(v)) return v.map((x) => takeBinary(x, out));
  if (v === null || typeof v !== 'object' || typeof v.toJSON === 'function') return v;
  const copy = {};
  for (const k of Object.keys(v)) copy[k] = takeBinary(v[k], out);
  return copy;
}

/** Replaces `{_placeholder: true, num}` with binary attachment `num`. */
function fillPlaceholders(v, take) {
  if (Array.isArray(v)) return v.map((x) => fillPlaceholders(x, take));
  if (v === null || typeof v !== 'object') return v;
  if (v._placeholder === true && typeof v.num === 'number') return take(v.num);
  for (const k of Object.keys(v)) v[k] = fillPlaceholders(v[k], take);
  return v;
}

/** The Liveline client. See index.d.ts for the API. */
export class Liveline {
  constructor(options) {
    const opts = options ?? {};
    if (typeof opts.url !== 'string') throw livelineError('invalid_argument', 'options.url must be a string');
    if (typeof opts.getToken !== 'function') {
      throw livelineError('invalid_argument', 'options.getToken must be a function');
    }
    const storage = pickStorage(opts.storage, opts.storageKey ?? `liveline:outbox:${opts.url}`);
    /** Where queued actions survive a reload: 'indexeddb', 'localstorage', 'memory' or 'custom'. */
    this.storage = storage.kind;
    if (opts.WebSocket !== undefined && typeof opts.WebSocket !== 'function') {
      throw livelineError('invalid_argument', 'options.WebSocket must be a WebSocket constructor');
    }
    this._opts = opts;
    this._core = null;
    this._disposed = false;
    this._WebSocket = opts.WebSocket;
    this._getToken = opts.getToken;
    this._store = storage.load ? storage : null;
    this._loaded = !this._store;
    this._wantConnect = false;
    this._snapshot = IDLE;
    this._listeners = new Map(); // event name -> Map(id -> fn)
    this._subscribers = new Map(); // id -> fn
    this._nextId = 0;
    this._pending = new Map(); // action id -> [resolve, reject]
    this._acks = new Map(); // raw emit id -> callback(err, args)
    this._server = null; // 'liveline' | 'socket.io' once the server said
    this._restored = new Map(); // action id -> name, for actions a previous page queued
    this._ws = null;
    this._timer = null;
    this._page = null;
    // Bound so they can be passed straight to useSyncExternalStore.
    this.subscribe = this.subscribe.bind(this);
    this.getSnapshot = this.getSnapshot.bind(this);
    if (initialized) this._makeCore();
  }

  /** Creates the core (the wasm is loaded), then reads the saved outbox. */
  _makeCore() {
    const opts = this._opts;
    const num = (v) => (typeof v === 'number' ? v : NaN);
    const seed = new Uint32Array(2);
    globalThis.crypto.getRandomValues(seed);
    this._core = new Core(
      opts.url,
      seed[0],
      seed[1],
      new Float64Array([
        num(opts.backoff?.initialMs),
        num(opts.backoff?.maxMs),
        num(opts.ackTimeoutMs),
        num(opts.outboxCapacity),
        num(opts.connectTimeoutMs),
        num(opts.probeTimeoutMs),
        opts.livenessProbe === false ? 0 : NaN,
        num(opts.emitBuffer),
      ]),
    );
    if (this._store) this._loadOutbox();
    else if (this._wantConnect) {
      this._wantConnect = false;
      this._input(CONNECT);
    }
  }

  /** Resolves once the core exists, loading the wasm first if need be. */
  _ready() {
    if (this._core) return Promise.resolve();
    return (this._loading ??= init().then(
      () => {
        if (!this._disposed && !this._core) this._makeCore();
      },
      (e) => {
        this._loading = null;
        const message = `the WebAssembly module did not load: ${messageOf(e)}`;
        if (!this._disposed) {
          this._setSnapshot({ ...this._snapshot, current: 'failed', previous: this._snapshot.current, reason: message, error: message });
        }
        throw livelineError('not_initialized', `liveline: ${message}`);
      },
    ));
  }

  /** The wasm object (null until loaded), or a `disposed` error after `dispose()`. */
  _live() {
    if (this._disposed) throw livelineError('disposed', 'liveline: this client was disposed');
    return this._core;
  }

  /** Tells the core what happened, then does what it asks. */
  _input(kind, text = '') {
    if (!this._core) return;
    this._core.input(kind, text, mono());
    this._pump();
  }

  connect() {
    const core = this._live();
    if (typeof (this._WebSocket ?? globalThis.WebSocket) !== 'function') {
      // Node 20 has none: retrying would not help.
      const message = 'no WebSocket here: pass a constructor as options.WebSocket (e.g. from the ws package)';
      this._noSocket = message;
      this._setSnapshot({ ...this._snapshot, current: 'failed', previous: this._snapshot.current, reason: message, error: message });
      return;
    }
    this._attachPage();
    if (core && this._loaded) this._input(CONNECT);
    else this._wantConnect = true;
    if (!core) this._ready().catch(() => {});
  }

  close() {
    this._live();
    this._wantConnect = false;
    this._input(CLOSE);
    clearTimeout(this._timer);
    this._timer = null;
    this._dropSocket();
    this._detachPage();
  }

  /**
   * Closes the client and frees its WebAssembly memory at once; later calls
   * throw `disposed`. Queued actions stay stored.
   */
  dispose() {
    if (this._disposed) return;
    this.close();
    this._disposed = true;
    this._core?.free();
    this._core = null;
    this._listeners.clear();
    this._subscribers.clear();
  }

  send(action, data) {
    let id;
    try {
      const core = this._live();
      const text = data === undefined ? 'null' : JSON.stringify(data);
      if (typeof text !== 'string') throw livelineError('invalid_argument', 'data must be JSON-serializable');
      // Failed for good (the core refuses too once it failed): nothing is queued.
      if (this._noSocket) throw livelineError('failed', `liveline: the client has failed (${this._noSocket}); nothing is queued`);
      if (!core) return this._ready().then(() => this.send(action, data));
      try {
        id = core.send(String(action), text, mono());
      } catch (e) {
        throw coreError(e);
      }
    } catch (err) {
      if (!err.code) err = livelineError('invalid_argument', messageOf(err));
      return Promise.reject(err);
    }
    const promise = new Promise((resolve, reject) => this._pending.set(id, [resolve, reject]));
    this._pump();
    return promise;
  }

  /**
   * Emits `[name, ...args]` as a `socket.io-client` does: the arguments go
   * out unchanged (binary ones as attachments). When the last argument is a
   * function, it is called with the server's ack arguments. Sent at once
   * when connected, else when the connection comes (not kept across
   * reloads). Returns this client.
   */
  emit(name, ...args) {
    const fn = typeof args[args.length - 1] === 'function' ? args.pop() : null;
    // Like socket.io-client, the callback hears only of an ack.
    this._emit1(name, args, fn && ((err, ackArgs) => err || fn(...ackArgs)));
    return this;
  }

  /** Emits and resolves with the server's first ack argument, as `socket.io-client` does. */
  emitWithAck(name, ...args) {
    return new Promise((resolve, reject) => this._emit1(name, args, (err, ackArgs) => (err ? reject(err) : resolve(ackArgs[0]))));
  }

  /**
   * `timeout(ms).emit(name, ...args, (err, ...ackArgs) => …)` and
   * `timeout(ms).emitWithAck(name, ...args)`: the ack, or an error with code
   * `timeout` after `ms`.
   */
  timeout(ms) {
    // `cb(err, ackArgs)` once: the ack, or a `timeout` error after `ms`.
    const within = (cb) => {
      let timer = setTimeout(() => {
        timer = 0;
        cb(livelineError('timeout', `liveline: no ack within ${ms} ms`));
      }, ms);
      return (err, ackArgs) => timer && (clearTimeout(timer), (timer = 0), cb(err, ackArgs));
    };
    return {
      emit: (name, ...args) => {
        const fn = typeof args.at(-1) === 'function' ? args.pop() : null;
        this._emit1(name, args, fn && within((err, ackArgs) => (err ? fn(err) : fn(null, ...ackArgs))));
      },
      emitWithAck: (name, ...args) =>
        new Promise((resolve, reject) => this._emit1(name, args, within((err, ackArgs) => (err ? reject(err) : resolve(ackArgs[0]))))),
    };
  }

  /** Emits once the core exists; `done(err, ackArgs)` gets the ack when given. */
  _emit1(name, args, done) {
    const fail = (err) => {
      if (done) done(err);
      else throw err;
    };
    const core = this._live();
    if (this._noSocket) return fail(livelineError('failed', `liveline: the client has failed (${this._noSocket})`));
    if (!core) {
      this._ready().then(
        () => this._emit1(name, args, done),
        (e) => done?.(e),
      );
      return;
    }
    const attachments = [];
    let id;
    try {
      const text = JSON.stringify(takeBinary(args, attachments));
      for (const a of attachments) core.attach(a);
      id = core.emit(String(name), text, done !== null);
    } catch (e) {
      return fail(coreError(e));
    }
    if (done) this._acks.set(id, done);
    this._pump();
  }

  /** What the server said it is: `'liveline'`, `'socket.io'`, or `null` until its first event. */
  get server() {
    return this._server;
  }

  /** Whether the last connect recovered an official server's session (connection-state recovery). */
  get recovered() {
    return this._snapshot.recovered === true;
  }

  /** Adds `fn` to `map` under a new id; returns the function that removes it. */
  _add(map, fn) {
    const id = ++this._nextId;
    map.set(id, fn);
    return () => map.delete(id);
  }

  on(event, fn) {
    this._live();
    let map = this._listeners.get(event);
    if (!map) this._listeners.set(event, (map = new Map()));
    return this._add(map, fn);
  }

  /** Every event: `fn(name, ...args)`, as `socket.io-client`'s `onAny`; returns the remover. */
  onAny(fn) {
    return this.on(ANY, fn);
  }

  subscribe(fn) {
    this._live();
    return this._add(this._subscribers, fn);
  }

  getSnapshot() {
    this._live();
    return this._snapshot;
  }

  stats() {
    this._live();
    let listeners = 0;
    for (const m of this._listeners.values()) listeners += m.size;
    return {
      listeners,
      subscribers: this._subscribers.size,
      pending: this._pending.size + this._acks.size,
      timers: this._timer ? 1 : 0,
      sockets: this._ws ? 1 : 0,
      pageListeners: this._page ? 1 : 0,
    };
  }

  /** Calls the listeners of `event` with `args`. */
  _emit(event, ...args) {
    const map = this._listeners.get(event);
    if (map) for (const fn of [...map.values()]) fn(...args);
  }

  _setSnapshot(snapshot) {
    this._snapshot = Object.freeze(snapshot);
    for (const fn of [...this._subscribers.values()]) fn();
  }

  /** Runs the core's outputs until there are none, then re-arms the timer. */
  _pump() {
    let out;
    while (this._core && (out = this._core.poll()) !== undefined) {
      const rest = out.slice(1);
      switch (out[0]) {
        case 't':
          this._fetchToken();
          break;
        case 'o':
          this._open(rest);
          break;
        case 's':
          this._ws?.send(rest);
          break;
        case 'b':
          this._ws?.send(this._core.bytes());
          break;
        case 'c':
          this._dropSocket();
          break;
        case 'z': {
          const s = JSON.parse(rest);
          if (s.current !== 'connected') this._server = null;
          s.retryAt = s.retryIn == null ? null : Date.now() + s.retryIn;
          this._setSnapshot(s);
          break;
        }
        case 'w':
          this._server = rest;
          this._emit(SERVER, rest);
          break;
        case 'q':
          this._saveOutbox();
          this._setSnapshot({ ...this._snapshot, queued: Number(rest) });
          break;
        case 'e':
          this._event(JSON.parse(rest));
          break;
        case 'a':
          this._settle(JSON.parse(rest));
          break;
        case 'r':
          this._replied(JSON.parse(rest));
          break;
        case 'i':
          console.warn(`liveline: dropped event: ${rest}`);
          break;
      }
    }
    this._armTimer();
  }

  /** The binary attachments of the last `e` or `r` output, put back into `args`. */
  _withBinary(args, attachments) {
    if (attachments === 0) return args;
    const parts = [];
    for (let i = 0; i < attachments; i++) parts.push(this._core.attachment(i));
    return fillPlaceholders(args, (n) => parts[n]);
  }

  /** A raw emit's ack came (or cannot come). */
  _replied([id, ok, a, b]) {
    const done = this._acks.get(id);
    this._acks.delete(id);
    const args = ok ? this._withBinary(b, a) : null;
    if (done) done(ok ? null : livelineError(a, b), args);
  }

  /**
   * An event: named listeners get `(...args, reply)`, `*` ones `(payload,
   * name, reply)` (payload: the one argument, or all as an array), `onAny`
   * ones `(name, ...args)`. `reply` is there when the server asked for an ack.
   */
  _event([ackId, attachments, name, args]) {
    args = this._withBinary(args, attachments);
    const payload = args.length === 1 ? args[0] : args.length === 0 ? null : args;
    let reply;
    if (ackId !== null) {
      let done = false;
      reply = (...args) => {
        if (done || !this._core) return;
        done = true;
        this._core.reply(ackId, JSON.stringify(args));
        this._pump();
      };
    }
    if (reply) this._emit(name, ...args, reply);
    else this._emit(name, ...args);
    this._emit('*', payload, name, reply);
    this._emit(ANY, name, ...args);
  }

  /** An action ended: settle its promise, or tell `action:settled` after a reload. */
  _settle([id, ok, a, b]) {
    const error = ok ? undefined : livelineError(a, b);
    const name = this._restored.get(id);
    if (name !== undefined) {
      this._restored.delete(id);
      this._emit('action:settled', ok ? { action: name, ok, data: a } : { action: name, ok, error });
      return;
    }
    const p = this._pending.get(id);
    if (!p) return;
    this._pending.delete(id);
    if (ok) p[0](a);
    else p[1](error);
  }

  _armTimer() {
    clearTimeout(this._timer);
    this._timer = null;
    const at = this._core ? this._core.deadline() : -1;
    if (at < 0) return;
    const delay = Math.min(Math.max(at - mono(), 0), 0x3fffffff);
    this._timer = setTimeout(() => {
      this._timer = null;
      this._input(TIMEOUT);
    }, delay);
  }

  _fetchToken() {
    let token;
    try {
      token = Promise.resolve(this._getToken());
    } catch (e) {
      token = Promise.reject(e);
    }
    token.then(
      (t) =>
        typeof t === 'string' ? this._input(TOKEN, t) : this._input(TOKEN_FAILED, 'getToken must return a string'),
      (e) => this._input(TOKEN_FAILED, messageOf(e)),
    );
  }

  _open(url) {
    this._dropSocket();
    let ws;
    try {
      ws = new (this._WebSocket ?? globalThis.WebSocket)(url);
    } catch (e) {
      this._input(CLOSED, messageOf(e));
      return;
    }
    ws.binaryType = 'arraybuffer';
    // The close event that follows says what happened; an unhandled error
    // event would throw in Node's `ws`.
    ws.onerror = () => {};
    ws.onopen = () => this._input(OPENED);
    ws.onmessage = (e) => {
      if (typeof e.data === 'string') this._input(TEXT, e.data);
      else if (this._core) {
        this._core.binary(new Uint8Array(e.data), mono());
        this._pump();
      }
    };
    ws.onclose = (e) => {
      this._dropSocket();
      this._input(CLOSED, `socket closed (${e.code})`);
    };
    this._ws = ws;
  }

  /** Closes the socket, if any, and forgets its handlers. */
  _dropSocket() {
    const ws = this._ws;
    if (!ws) return;
    this._ws = null;
    ws.onopen = ws.onmessage = ws.onclose = null;
    try {
      ws.close();
    } catch {
      // Already closing.
    }
  }

  _attachPage() {
    if (this._page || typeof window === 'undefined') return;
    const page = {
      online: () => this._input(ONLINE),
      offline: () => this._input(OFFLINE),
      visibility: () => this._input(document.hidden ? HIDDEN : VISIBLE),
    };
    window.addEventListener('online', page.online);
    window.addEventListener('offline', page.offline);
    globalThis.document?.addEventListener('visibilitychange', page.visibility);
    this._page = page;
  }

  _detachPage() {
    const page = this._page;
    if (!page) return;
    this._page = null;
    window.removeEventListener('online', page.online);
    window.removeEventListener('offline', page.offline);
    globalThis.document?.removeEventListener('visibilitychange', page.visibility);
  }

  /** Reads the outbox a previous page saved and puts it back in front. */
  _loadOutbox() {
    const done = (text) => {
      if (!this._core) return;
      if (typeof text === 'string') {
        try {
          for (const [id, name] of JSON.parse(this._core.restore(text, Date.now(), mono()))) this._restored.set(id, name);
        } catch (e) {
          console.warn(`liveline: saved outbox unreadable, ignored: ${messageOf(e)}`);
        }
      }
      this._loaded = true;
      this._saveOutbox();
      if (this._wantConnect) {
        this._wantConnect = false;
        this._input(CONNECT);
      } else {
        this._pump();
      }
    };
    Promise.resolve()
      .then(() => this._store.load())
      .then(done, () => done(null));
  }

  /**
   * Writes the outbox to storage, once the saved one has been read (so an
   * early save never overwrites what the last page left).
   */
  _saveOutbox() {
    if (this._store && this._loaded && this._core) this._store.save(this._core.outbox(Date.now(), mono()));
  }
}

// The public entry of the `liveline` package: an explicit async `init()` and
// the `Liveline` class over the wasm core (`LivelineCore`).
import wasmInit, { LivelineCore } from './wasm/liveline.js';

let ready = null;
let initialized = false;

/** Creates an `Error` with a stable `code`. */
function livelineError(code, message) {
  const err = new Error(message);
  err.code = code;
  return err;
}

/**
 * Loads the WebAssembly module. Call once, before `new Liveline()`; later
 * calls return the same promise.
 * @param {string | URL | Response | BufferSource | WebAssembly.Module} [input]
 */
export function init(input) {
  if (!ready) {
    ready = wasmInit(input === undefined ? undefined : { module_or_path: input }).then(() => {
      initialized = true;
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

/** The Liveline client. See index.d.ts for the API. */
export class Liveline {
  constructor(options) {
    if (!initialized) {
      throw livelineError('not_initialized', 'liveline: call `await init()` before `new Liveline()`');
    }
    const opts = options ?? {};
    const storage = pickStorage(opts.storage, opts.storageKey ?? `liveline:outbox:${opts.url}`);
    /** Where queued actions survive a reload: 'indexeddb', 'localstorage', 'memory' or 'custom'. */
    this.storage = storage.kind;
    this._core = new LivelineCore({ ...opts, storage: storage.load ? storage : undefined });
    // Bound so they can be passed straight to useSyncExternalStore.
    this.subscribe = this.subscribe.bind(this);
    this.getSnapshot = this.getSnapshot.bind(this);
  }

  /** The wasm object, or a `disposed` error after `dispose()`. */
  _live() {
    if (!this._core) throw livelineError('disposed', 'liveline: this client was disposed');
    return this._core;
  }

  connect() {
    this._live().connect();
  }

  close() {
    this._live().close();
  }

  /**
   * Closes the client and frees its WebAssembly memory at once. The wasm side
   * holds the app's callbacks (getToken, listeners), which often reach the
   * client again, so a dropped client is not garbage-collected by itself:
   * call dispose() when you are done with one. Queued actions stay stored.
   */
  dispose() {
    if (!this._core) return;
    const core = this._core;
    this._core = null;
    core.close();
    core.free();
  }

  send(action, data) {
    try {
      return this._live().send(action, data);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** A function that removes listener `id` (a no-op once disposed). */
  _off(id) {
    return () => this._core?.off(id);
  }

  on(event, fn) {
    return this._off(this._live().on(event, fn));
  }

  watchJob(jobId, fn) {
    return this.on('*', (payload, name) => {
      if (payload && payload.data && payload.data.jobId === jobId) fn(payload, name);
    });
  }

  subscribe(fn) {
    return this._off(this._live().subscribe(fn));
  }

  getSnapshot() {
    return this._live().getSnapshot();
  }

  stats() {
    return this._live().stats();
  }
}

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

/** The Liveline client. See index.d.ts for the API. */
export class Liveline {
  constructor(options) {
    if (!initialized) {
      throw livelineError('not_initialized', 'liveline: call `await init()` before `new Liveline()`');
    }
    this._core = new LivelineCore(options);
    // Bound so they can be passed straight to useSyncExternalStore.
    this.subscribe = this.subscribe.bind(this);
    this.getSnapshot = this.getSnapshot.bind(this);
  }

  connect() {
    this._core.connect();
  }

  close() {
    this._core.close();
  }

  send(action, data) {
    return this._core.send(action, data);
  }

  on(event, fn) {
    return this._core.on(event, fn);
  }

  watchJob(jobId, fn) {
    return this._core.on('*', (payload, name) => {
      if (payload && payload.data && payload.data.jobId === jobId) fn(payload, name);
    });
  }

  subscribe(fn) {
    return this._core.subscribe(fn);
  }

  getSnapshot() {
    return this._core.getSnapshot();
  }

  stats() {
    return this._core.stats();
  }
}

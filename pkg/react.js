// React bindings for Liveline: `import { LivelineProvider, useJob } from 'liveline/react'`.
//
// Every subscription to the client happens inside an effect (or through
// useSyncExternalStore, which subscribes in an effect), and every effect returns
// its cleanup, so StrictMode's mount -> unmount -> mount leaves exactly one
// listener of each kind attached.
import {
  createContext,
  createElement,
  useCallback,
  useContext,
  useEffect,
  useRef,
  useSyncExternalStore,
} from 'react';

const LivelineContext = createContext(null);

/** Makes `client` available to the hooks below. */
export function LivelineProvider({ client, children }) {
  // Job events are recorded from the moment the provider mounts, not from the
  // moment a `useJob` mounts: the first events of a job can arrive before the
  // component that learned the job id (from `send`) has rendered.
  useEffect(() => jobStoreFor(client).attach(), [client]);
  return createElement(LivelineContext.Provider, { value: client }, children);
}

/** The client given to the nearest `LivelineProvider`. */
export function useLiveline() {
  const client = useContext(LivelineContext);
  if (client == null) {
    const err = new Error('liveline/react: hook used outside <LivelineProvider client={...}>');
    err.code = 'no_provider';
    throw err;
  }
  return client;
}

/** The connection state snapshot; re-renders on every change. */
export function useConnectionState() {
  const client = useLiveline();
  const subscribe = useCallback((onChange) => client.subscribe(onChange), [client]);
  const getSnapshot = useCallback(() => client.getSnapshot(), [client]);
  return useSyncExternalStore(subscribe, getSnapshot, getSnapshot);
}

/** A stable `send(action, data) => Promise` bound to the client. */
export function useSend() {
  const client = useLiveline();
  return useCallback((action, data) => client.send(action, data), [client]);
}

/**
 * Calls `handler(envelope)` for every `event` (e.g. 'job:status:v1'). The latest
 * handler is used without re-subscribing when it changes identity.
 */
export function useEvent(event, handler) {
  const client = useLiveline();
  const ref = useLatest(handler);
  useEffect(() => {
    if (!event) return undefined;
    return client.on(event, (envelope) => ref.current?.(envelope));
  }, [client, event, ref]);
}

/**
 * The live state of one job, built from job events only (no polling):
 * `{ jobId, status, progress, message, text, result, error }`.
 * `status` is null until the first status event; `text` is the streamed
 * chunks joined in index order; `error` is `{ code, message }` or null.
 */
export function useJob(jobId) {
  const client = useLiveline();
  const store = jobStoreFor(client);
  const subscribe = useCallback(
    (onChange) => (jobId == null ? noopUnsubscribe : store.listen(jobId, onChange)),
    [store, jobId],
  );
  const getSnapshot = useCallback(
    () => (jobId == null ? EMPTY_JOB : store.get(jobId)),
    [store, jobId],
  );
  return useSyncExternalStore(subscribe, getSnapshot, getSnapshot);
}

// --- internals -------------------------------------------------------------

const noopUnsubscribe = () => {};

function useLatest(value) {
  // A box updated after each commit; read by long-lived listeners.
  const ref = useRef(value);
  useEffect(() => {
    ref.current = value;
  });
  return ref;
}

const TERMINAL = new Set(['completed', 'failed', 'cancelled']);
const MAX_JOBS = 200;

const EMPTY_JOB = Object.freeze({
  jobId: null,
  status: null,
  progress: 0,
  message: null,
  text: '',
  result: null,
  error: null,
});

const stores = new WeakMap();

function jobStoreFor(client) {
  let store = stores.get(client);
  if (!store) {
    store = new JobStore(client);
    stores.set(client, store);
  }
  return store;
}

class JobStore {
  constructor(client) {
    this.client = client;
    this.jobs = new Map(); // jobId -> { state, chunks: [index, text][] }
    this.listeners = new Map(); // jobId -> Set<fn>
    this.attached = 0;
    this.offs = [];
  }

  /** Starts listening to the client's job events; returns the matching detach. */
  attach() {
    if (this.attached++ === 0) {
      const on = (event, apply) =>
        this.client.on(event, (envelope) => {
          const data = envelope?.data;
          if (data == null || data.jobId == null) return;
          this.update(String(data.jobId), (entry) => apply(entry, data));
        });
      this.offs = [
        on('job:status:v1', applyStatus),
        on('job:chunk:v1', applyChunk),
        on('job:result:v1', applyResult),
        on('job:error:v1', applyError),
      ];
    }
    let detached = false;
    return () => {
      if (detached) return;
      detached = true;
      if (--this.attached === 0) {
        for (const off of this.offs) off?.();
        this.offs = [];
      }
    };
  }

  get(jobId) {
    const entry = this.jobs.get(String(jobId));
    return entry ? entry.state : emptyFor(jobId);
  }

  listen(jobId, fn) {
    const key = String(jobId);
    let set = this.listeners.get(key);
    if (!set) this.listeners.set(key, (set = new Set()));
    set.add(fn);
    return () => {
      set.delete(fn);
      if (set.size === 0) this.listeners.delete(key);
    };
  }

  update(jobId, apply) {
    let entry = this.jobs.get(jobId);
    if (!entry) {
      entry = { state: { ...EMPTY_JOB, jobId }, chunks: [] };
      this.jobs.set(jobId, entry);
      this.evict();
    }
    const next = apply(entry);
    if (next === entry.state) return;
    entry.state = next;
    const set = this.listeners.get(jobId);
    if (set) for (const fn of [...set]) fn();
  }

  evict() {
    if (this.jobs.size <= MAX_JOBS) return;
    for (const key of this.jobs.keys()) {
      if (this.jobs.size <= MAX_JOBS) break;
      if (!this.listeners.has(key)) this.jobs.delete(key);
    }
  }
}

const emptyCache = new Map();
function emptyFor(jobId) {
  // Stable per id so useSyncExternalStore sees the same object between renders.
  const key = String(jobId);
  let empty = emptyCache.get(key);
  if (!empty) {
    if (emptyCache.size > MAX_JOBS) emptyCache.clear();
    empty = Object.freeze({ ...EMPTY_JOB, jobId: key });
    emptyCache.set(key, empty);
  }
  return empty;
}

function applyStatus(entry, data) {
  const s = entry.state;
  // Once a job has ended, a late non-terminal status cannot bring it back.
  if (TERMINAL.has(s.status) && !TERMINAL.has(data.status)) return s;
  let progress = typeof data.progress === 'number' ? clamp01(data.progress) : s.progress;
  if (data.status === 'completed') progress = 1;
  return {
    ...s,
    status: data.status ?? s.status,
    progress,
    message: data.message ?? s.message,
  };
}

function applyChunk(entry, data) {
  const index = Number(data.index);
  const text = data.text == null ? '' : String(data.text);
  const chunks = entry.chunks;
  const last = chunks.length ? chunks[chunks.length - 1][0] : -Infinity;
  if (index > last) {
    chunks.push([index, text]);
    return { ...entry.state, text: entry.state.text + text };
  }
  if (chunks.some(([i]) => i === index)) return entry.state; // already have it
  chunks.push([index, text]);
  chunks.sort((a, b) => a[0] - b[0]);
  return { ...entry.state, text: chunks.map(([, t]) => t).join('') };
}

function applyResult(entry, data) {
  return { ...entry.state, result: data.result ?? null };
}

function applyError(entry, data) {
  return {
    ...entry.state,
    error: { code: data.code ?? 'unknown', message: data.message ?? '' },
  };
}

function clamp01(x) {
  return x < 0 ? 0 : x > 1 ? 1 : x;
}

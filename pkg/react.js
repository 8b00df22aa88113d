// React bindings for Liveline: `import { LivelineProvider, useJob } from 'liveline-client/react'`.
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
    const err = new Error('liveline-client/react: hook used outside <LivelineProvider client={...}>');
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

/**
 * A public topic (e.g. 'market:BTC-USD'): sends `topic:subscribe:v1` while at
 * least one component uses it and `topic:unsubscribe:v1` when the last one
 * unmounts. Returns `{ topic, data, envelope, subscribed, error }` where `data`
 * is the latest event's payload on the topic's stream. StrictMode's
 * mount -> unmount -> mount sends one subscribe, not subscribe/unsubscribe/subscribe.
 */
export function useTopic(name) {
  const client = useLiveline();
  const store = topicStoreFor(client);
  const subscribe = useCallback(
    (onChange) => (name ? store.acquire(String(name), onChange) : noopUnsubscribe),
    [store, name],
  );
  const getSnapshot = useCallback(() => (name ? store.get(String(name)) : EMPTY_TOPIC), [store, name]);
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

// --- topics ----------------------------------------------------------------

const EMPTY_TOPIC = Object.freeze({ topic: null, data: null, envelope: null, subscribed: false, error: null });

const topicStores = new WeakMap();

function topicStoreFor(client) {
  let store = topicStores.get(client);
  if (!store) {
    store = new TopicStore(client);
    topicStores.set(client, store);
  }
  return store;
}

class TopicStore {
  constructor(client) {
    this.client = client;
    this.topics = new Map(); // topic -> { refs, listeners, state, release }
    this.offEvents = null;
    this.offState = null;
    this.wasConnected = false;
  }

  acquire(topic, fn) {
    let t = this.topics.get(topic);
    if (!t) {
      t = {
        refs: 0,
        listeners: new Set(),
        state: Object.freeze({ ...EMPTY_TOPIC, topic }),
        release: null,
        acked: false,
      };
      this.topics.set(topic, t);
      this.start();
      this.sendSubscribe(topic, t);
    }
    if (t.release) {
      // Re-acquired before the deferred release ran (StrictMode remount).
      clearTimeout(t.release);
      t.release = null;
    }
    t.refs++;
    t.listeners.add(fn);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      t.listeners.delete(fn);
      if (--t.refs > 0) return;
      t.release = setTimeout(() => {
        t.release = null;
        if (t.refs > 0 || this.topics.get(topic) !== t) return;
        this.topics.delete(topic);
        this.client.send('topic:unsubscribe:v1', { topic }).catch(() => {});
        if (this.topics.size === 0) this.stop();
      }, 0);
    };
  }

  get(topic) {
    return this.topics.get(topic)?.state ?? EMPTY_TOPIC;
  }

  sendSubscribe(topic, t) {
    this.client.send('topic:subscribe:v1', { topic }).then(
      () => {
        t.acked = true;
        this.set(t, { subscribed: true, error: null });
      },
      (err) => this.set(t, { error: { code: err?.code ?? 'unknown', message: err?.message ?? String(err) } }),
    );
  }

  set(t, patch) {
    t.state = Object.freeze({ ...t.state, ...patch });
    for (const fn of [...t.listeners]) fn();
  }

  start() {
    if (this.offEvents) return;
    this.offEvents = this.client.on('*', (payload) => {
      const stream = payload?.stream;
      if (typeof stream !== 'string' || payload.data === undefined) return;
      const t = this.topics.get(stream);
      if (t) this.set(t, { data: payload.data, envelope: payload });
    });
    // A subscription belongs to a socket: after a reconnect, subscribe again
    // (the gateway treats a repeat as a no-op).
    this.wasConnected = this.client.getSnapshot().current === 'connected';
    this.offState = this.client.subscribe(() => {
      const connected = this.client.getSnapshot().current === 'connected';
      const reconnected = connected && !this.wasConnected;
      // Updated before sending: a send changes the state (its queued count)
      // and calls this listener again, synchronously.
      this.wasConnected = connected;
      if (reconnected) {
        queueMicrotask(() => {
          for (const [topic, t] of this.topics) if (t.acked) this.sendSubscribe(topic, t);
        });
      }
    });
  }

  stop() {
    this.offEvents?.();
    this.offState?.();
    this.offEvents = this.offState = null;
  }
}

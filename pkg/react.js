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
  useMemo,
  useRef,
  useSyncExternalStore,
} from 'react';
import { jobOf, jobsOf } from './jobs.js';

const LivelineContext = createContext(null);

/** Makes `client` available to the hooks below. */
export function LivelineProvider({ client, children }) {
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
 * The whole state of one job (`jobOf(client, jobId)` from liveline-client/jobs): `{ jobId, status, progress,
 * message, text, result, error, seq, loading, gone, complete }`, rebuilt from the
 * gateway's history on first use and after a reload, then live, with nothing
 * missed or repeated. A null/undefined id gives an empty state.
 */
export function useJob(jobId) {
  const client = useLiveline();
  const handle = useMemo(() => (jobId == null ? null : jobOf(client, jobId)), [client, jobId]);
  const subscribe = useCallback((onChange) => (handle ? handle.subscribe(onChange) : noopUnsubscribe), [handle]);
  const getSnapshot = useCallback(() => (handle ? handle.get() : EMPTY_JOB), [handle]);
  return useSyncExternalStore(subscribe, getSnapshot, getSnapshot);
}

/**
 * The user's jobs of `kinds` (every kind when left out), newest first:
 * `{ jobs, loaded, error }`, read over REST on mount and after every
 * connect, then kept live by status events (`jobsOf` from liveline-client/jobs).
 */
export function useJobs(kinds) {
  const list = jobsOf(useLiveline(), { kinds });
  return useSyncExternalStore(list.subscribe, list.get, list.get);
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

const EMPTY_JOB = Object.freeze({
  jobId: null,
  status: null,
  progress: 0,
  message: null,
  text: '',
  result: null,
  error: null,
  chunks: 0,
  seq: 0,
  loading: false,
  gone: false,
  complete: false,
  partial: false,
});

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

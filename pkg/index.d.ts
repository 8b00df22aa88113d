// The contract types (event payloads and their envelope, action payloads and ack results,
// EventMap, ActionMap, ConnectionStateName, LivelineErrorCode) are generated from the Rust
// definitions in src/contract.rs into contracts.d.ts, and so is CoreOptions (the core's
// tunables, with their docs and defaults, from src/client.rs); all are re-exported from here.
import type {
  ActionMap,
  ConnectionStateName,
  CoreOptions,
  Envelope,
  EventMap as ContractEventMap,
  LivelineErrorCode,
} from './contracts.js';

export * from './contracts.js';

/** A state snapshot: the same object until the state changes. */
export interface ConnectionSnapshot {
  readonly current: ConnectionStateName;
  readonly previous: ConnectionStateName;
  readonly reason: string;
  /** Actions waiting in the outbox. */
  readonly queued: number;
  /** Reconnect attempt under way or next (reconnecting only, else 0). */
  readonly attempt: number;
  /** Milliseconds until the next attempt, when one is scheduled. */
  readonly retryIn: number | null;
  /** `Date.now()` of the next attempt, when one is scheduled. */
  readonly retryAt: number | null;
  /** The last error (reconnecting) or the reason (failed). */
  readonly error: string | null;
}

/**
 * The options of `new Liveline()`: the core's tunables (`CoreOptions`, generated from Rust
 * with their defaults) plus what the JavaScript driver itself uses.
 */
export interface LivelineOptions extends CoreOptions {
  /** The gateway's base URL, e.g. `https://rt.example.com` or `ws://localhost:8080`. */
  url: string;
  /** Called before every connect; returns a JWT. */
  getToken: () => string | Promise<string>;
  /**
   * Where queued actions survive a reload. `'auto'` (default) picks IndexedDB, then
   * localStorage, then memory (lost on reload); an object supplies your own.
   */
  storage?: 'auto' | 'indexeddb' | 'localstorage' | 'memory' | OutboxStorage;
  /** The storage key of the outbox; default `liveline:outbox:<url>`. Use one per user. */
  storageKey?: string;
  /**
   * The WebSocket constructor; default `globalThis.WebSocket`. Node 20 has none: pass
   * one, e.g. `import { WebSocket } from 'ws'`. Without any, `connect()` ends in `failed`.
   */
  WebSocket?: new (url: string) => WebSocket;
}

/** A place for the outbox: `load` returns what `save` stored last (or null). */
export interface OutboxStorage {
  load(): Promise<string | null>;
  save(text: string): void | Promise<void>;
}

/** An action restored after a reload ended (its promise died with the old page). */
export interface ActionSettled {
  action: string;
  ok: boolean;
  data?: unknown;
  error?: LivelineError;
}

/**
 * Server-to-client events by contract name (generated), plus the SDK's local events.
 * This declaration is the one `liveline-client` exports as `EventMap`.
 */
export interface EventMap extends ContractEventMap {
  /** Local: an action restored from storage after a reload was acked, refused or expired. */
  'action:settled': ActionSettled;
}

export interface LivelineError extends Error {
  code: LivelineErrorCode;
}

/**
 * Loads the WebAssembly module. Optional: a client loads it itself on its first
 * `connect()` or `send()` (in Node, from the file next to the package's entry). Call it
 * to load earlier or to pass the module yourself; later calls return the same promise.
 * Importing the package loads nothing, so it is safe during server-side rendering.
 */
export function init(input?: string | URL | Response | BufferSource | WebAssembly.Module): Promise<void>;

/** Answers a server event that asked for an acknowledgement; the arguments must be JSON-serializable. */
export type Reply = (...args: unknown[]) => void;

export class Liveline {
  constructor(options: LivelineOptions);
  /** Where queued actions survive a reload. */
  readonly storage: 'indexeddb' | 'localstorage' | 'memory' | 'custom';
  /** Starts connecting, and reconnecting until `close()`. */
  connect(): void;
  /** Closes the connection and releases listeners and timers; queued actions stay queued. */
  close(): void;
  /**
   * Closes and frees the client's WebAssembly memory at once; later calls throw `disposed`.
   * (A closed client holds no timer, socket or page listener and is garbage-collected
   * like any object; dispose() only frees its WebAssembly memory sooner.)
   */
  dispose(): void;
  /** Sends an action through the outbox; resolves with the gateway's result. */
  send<K extends keyof ActionMap>(action: K, data: ActionMap[K][0]): Promise<ActionMap[K][1]>;
  /** Any other action (a known one must match its contract). */
  send<A extends string>(action: A extends keyof ActionMap ? never : A, data: unknown): Promise<unknown>;
  /**
   * Listens to one event; returns a function that removes the listener.
   * When the server asked for an acknowledgement, `reply` is a function that
   * sends it (the first call counts); otherwise it is `undefined`.
   */
  on<K extends keyof EventMap>(event: K, fn: (payload: EventMap[K], reply?: Reply) => void): () => void;
  on(event: '*', fn: (payload: unknown, name: string, reply?: Reply) => void): () => void;
  on(event: string, fn: (payload: unknown, reply?: Reply) => void): () => void;
  /** Every event whose `data.jobId` is this job. */
  watchJob(jobId: string, fn: (payload: Envelope<{ jobId: string }>, name: string) => void): () => void;
  /** For useSyncExternalStore: called on every state change. */
  subscribe(fn: () => void): () => void;
  /** For useSyncExternalStore: the same object until the state changes. */
  getSnapshot(): ConnectionSnapshot;
  /** Listener and timer counts, for leak checks. */
  stats(): { listeners: number; subscribers: number; pending: number; timers: number; sockets: number; pageListeners: number };
}

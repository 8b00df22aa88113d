// The contract types (event payloads and their envelope, action payloads and ack results,
// EventMap, ActionMap, ConnectionStateName, LivelineErrorCode) are generated from the Rust
// definitions in src/contract.rs into contracts.d.ts, and so is CoreOptions (the core's
// tunables, with their docs and defaults, from src/client.rs); all are re-exported from here.
import type {
  ActionMap,
  ConnectionStateName,
  CoreOptions,
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
  /**
   * Connected, and an official server with connection-state recovery restored the
   * session: what it emitted meanwhile follows, in order.
   */
  readonly recovered: boolean;
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

declare const UNTYPED: unique symbol;
/**
 * The default of `Liveline`'s type parameters: the app declared no map, so any event or
 * action name is accepted (the built-in contracts stay typed).
 */
export interface Untyped {
  readonly [UNTYPED]: true;
}

/** The built-in server events as listener signatures (`socket.io`'s `ServerToClientEvents` style). */
export type ContractListeners = { [K in keyof EventMap]: (payload: EventMap[K], reply?: Reply) => void };

/** The built-in actions as `(data) => result` signatures. */
export type ContractActions = { [K in keyof ActionMap]: (data: ActionMap[K][0]) => ActionMap[K][1] };

/** The server events a client knows: the built-in ones, merged with the app's. */
export type ServerListeners<S> = S extends Untyped ? ContractListeners : ContractListeners & S;
/** The actions a client knows: the built-in ones, merged with the app's. */
export type ActionSignatures<A> = A extends Untyped ? ContractActions : ContractActions & A;

/** The event names `on` takes: any string until the app declares its server events. */
export type EventName<S> = S extends Untyped ? keyof EventMap | (string & {}) : keyof ServerListeners<S> & string;
/** The action names `send` takes: any string until the app declares its actions. */
export type ActionName<A> = A extends Untyped ? keyof ActionMap | (string & {}) : keyof ActionSignatures<A> & string;

/** Not distributed over a union of names: `on(name)` for several contract names gets a union payload. */
type ListenerOf<S, K> = [K] extends [keyof EventMap]
  ? (payload: EventMap[K], reply?: Reply) => void
  : [K] extends [keyof ServerListeners<S>]
    ? ServerListeners<S>[K]
    : (...args: unknown[]) => void;
type DataOf<A, K> = K extends keyof ActionSignatures<A> ? (ActionSignatures<A>[K] extends (data: infer D) => unknown ? D : never) : unknown;
type ResultOf<A, K> = K extends keyof ActionSignatures<A> ? (ActionSignatures<A>[K] extends (data: never) => infer R ? R : never) : unknown;

/** `client.timeout(ms)`: `emit` and `emitWithAck` with a deadline for the ack. */
export interface WithTimeout {
  /** The last argument, a function, gets `(err, ...ackArgs)`; `err.code` is `timeout` without an ack in time. */
  emit(event: string, ...args: unknown[]): void;
  emitWithAck(event: string, ...args: unknown[]): Promise<any>;
}

/**
 * The client. Its type parameters work like `socket.io-client`'s `Socket<S2C, C2S>`:
 *
 * - `ServerEvents`: the app's server-to-client events, name to listener signature, e.g.
 *   `{'doc:annotated:v1': (env: Envelope<{jobId: string; note: string}>) => void}`;
 * - `ClientActions`: the app's actions for `send`, name to `(data) => result`, e.g.
 *   `{'doc:annotate:v1': (data: {jobId: string; note: string}) => {actionId: string}}`.
 *
 * Both are merged with the built-in contracts. Once an app declares a map, a name it
 * does not list (nor the contracts) does not compile: `on('job:stauts:v1')` is an error.
 * Left out, any name is accepted and unknown payloads are `unknown`.
 */
export class Liveline<ServerEvents extends object = Untyped, ClientActions extends object = Untyped> {
  constructor(options: LivelineOptions);
  /** Where queued actions survive a reload. */
  readonly storage: 'indexeddb' | 'localstorage' | 'memory' | 'custom';
  /** What the server said it is: `'liveline'`, `'socket.io'`, or `null` until its first event. */
  readonly server: 'liveline' | 'socket.io' | null;
  /** Whether the last connect recovered an official server's session (connection-state recovery). */
  readonly recovered: boolean;
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
  /**
   * Sends a durable action through the outbox; resolves with the result. A Liveline
   * gateway applies it exactly once; another Socket.IO server receives `[action, {key,
   * data}]`, at least once, and its ack's first argument is the result as it is.
   */
  send<K extends ActionName<ClientActions>>(action: K, data: DataOf<ClientActions, K>): Promise<ResultOf<ClientActions, K>>;
  /**
   * A plain Socket.IO emit: the arguments go out unchanged (binary ones as attachments);
   * a last function argument gets the ack's arguments. Buffered while disconnected (at
   * most `emitBuffer`), never stored, never sent twice.
   */
  emit(event: string, ...args: unknown[]): this;
  /** Emits and resolves with the server's first ack argument; rejects with `disconnected` if the link went first. */
  emitWithAck(event: string, ...args: unknown[]): Promise<any>;
  /** `emit` and `emitWithAck` whose ack must come within `ms` (else `err.code === 'timeout'`). */
  timeout(ms: number): WithTimeout;
  /** Every event as `fn(payload, name, reply)`: `payload` is the one argument, several as an array. */
  on(event: '*', fn: (payload: unknown, name: string, reply?: Reply) => void): () => void;
  /**
   * Listens to one event; returns a function that removes the listener. The listener
   * gets the event's arguments as sent, then `reply` when the server asked for an
   * acknowledgement (the first call counts).
   */
  on<K extends EventName<ServerEvents>>(event: K, fn: ListenerOf<ServerEvents, K>): () => void;
  /** Every event as `fn(name, ...args)`, like `socket.io-client`'s `onAny`; returns the remover. */
  onAny(fn: (name: string, ...args: unknown[]) => void): () => void;
  /** For useSyncExternalStore: called on every state change. */
  subscribe(fn: () => void): () => void;
  /** For useSyncExternalStore: the same object until the state changes. */
  getSnapshot(): ConnectionSnapshot;
  /** Listener and timer counts, for leak checks. */
  stats(): { listeners: number; subscribers: number; pending: number; timers: number; sockets: number; pageListeners: number };
}

// `liveline-client/jobs`: one job's whole state, rebuilt from the gateway's history on
// first use and after a reload, then followed live. `useJob` (liveline-client/react) is
// built on it.
import type { JobState, Liveline } from './index.js';

/** One job's whole state, folded from its stream's events in seq order. */
export interface JobView {
  jobId: string | null;
  /** null until the first `job:status:v1` (or the snapshot) says. */
  status: JobState | null;
  /** 0..1; 1 once the job completed. */
  progress: number;
  message: string | null;
  /** Every `job:chunk:v1` text, joined in index order. */
  text: string;
  /** The `job:result:v1` payload, or null. */
  result: unknown;
  /** The `job:error:v1` payload, or null. */
  error: { code: string; message: string } | null;
  /** How many distinct chunks make up `text`. */
  chunks: number;
  /** The highest seq applied. */
  seq: number;
  /** The gateway's history is being read. */
  loading: boolean;
  /** The gateway has no such job for this user (any more): nothing to read. */
  gone: boolean;
  /** The history was read from seq 1: `text` is whole. False before it was read, or when the gateway's history no longer reached seq 1 (then status and progress come from its snapshot). */
  complete: boolean;
  /** The gateway's history no longer reached seq 1: `text` may start mid-way. */
  partial: boolean;
}

/** `jobOf(client, id)`: `get` and `subscribe` in the shape `useSyncExternalStore` takes. */
export interface JobHandle {
  readonly jobId: string;
  /** The current state: the same object until it changes. */
  get(): JobView;
  /** Calls `fn` on every change; the first subscription reads the job's history. Returns the remover. */
  subscribe(fn: () => void): () => void;
}

/** One job's whole state: `get()` and `subscribe()` in the shape `useSyncExternalStore` takes; the same store per client. */
export function jobOf(client: Liveline<any, any>, jobId: string): JobHandle;

/** `fn(state)` now and on every change of the job's state; returns the remover. */
export function watchJob(client: Liveline<any, any>, jobId: string, fn: (state: JobView) => void): () => void;

/**
 * Starts a job (`job:start:v1`) and resolves with its handle, which sees every event from
 * seq 1, however soon the job's first events came.
 */
export function startJob(client: Liveline<any, any>, kind: string, params?: unknown): Promise<JobHandle>;

/** One row of a job list. */
export interface JobSummary {
  id: string;
  kind: string;
  /** The parameters the job was started with. */
  params: unknown;
  status: JobState | null;
  progress: number;
  message: string | null;
  /** ms since the Unix epoch. */
  createdAt: number;
}

/** What a job list holds: the same object until it changes. */
export interface JobListState {
  /** Newest first, at most 100. */
  jobs: readonly JobSummary[];
  /** The REST read came back (with the jobs, or an `error`). */
  loaded: boolean;
  error: string | null;
}

/**
 * The user's jobs of `kinds` (every kind when left out), newest first: read over REST
 * (`GET /api/v1/jobs`) when first watched and after every connect, then kept live by
 * `job:status:v1` events; jobs started with `startJob` join at once. The same list per
 * client and set of kinds.
 */
export function jobsOf(
  client: Liveline<any, any>,
  options?: { kinds?: readonly string[] },
): { get(): JobListState; subscribe(fn: () => void): () => void };

import type { ReactNode, JSX } from 'react';
import type { ConnectionSnapshot, Envelope, EventMap, Liveline, LivelineError, Untyped } from './index.js';
import type { JobListState, JobView } from './jobs.js';

/** What `useJob(jobId)` returns: the job's whole state (`jobOf(client, jobId).get()`). */
export type UseJobResult = JobView;

export interface LivelineProviderProps {
  /** Any client, typed with the app's maps or not. */
  client: Liveline<any, any>;
  children?: ReactNode;
}

/** Makes `client` available to the hooks. */
export function LivelineProvider(props: LivelineProviderProps): JSX.Element;

/**
 * The client given to the nearest provider; throws (code `no_provider`) outside one.
 * Name the app's maps to get its typed client: `useLiveline<ServerEvents, ClientActions>()`.
 */
export function useLiveline<S extends object = Untyped, A extends object = Untyped>(): Liveline<S, A>;

/** The connection state; re-renders on every state change. */
export function useConnectionState(): ConnectionSnapshot;

/** A stable function bound to `client.send` (typed with the app's actions when named). */
export function useSend<A extends object = Untyped>(): Liveline<Untyped, A>['send'];

/** Calls `handler` for every payload of `event`; a null/undefined event pauses. */
export function useEvent<K extends keyof EventMap>(
  event: K | null | undefined,
  handler: (payload: EventMap[K]) => void,
): void;
export function useEvent(event: string | null | undefined, handler: (payload: unknown) => void): void;

/**
 * The whole state of one job, rebuilt from the gateway's history on first use and after
 * a reload, then live; `jobId` null gives an empty state.
 */
export function useJob(jobId: string | null | undefined): UseJobResult;

/**
 * The user's jobs of `kinds` (every kind when left out), newest first, read over REST on
 * mount and after every connect and kept live by status events.
 */
export function useJobs(kinds?: readonly string[]): JobListState;

/** What `useTopic(name)` returns. */
export interface UseTopicResult<T = unknown> {
  topic: string | null;
  /** The latest event's `data` on the topic's stream, or null before the first. */
  data: T | null;
  envelope: Envelope<T> | null;
  /** True once `topic:subscribe:v1` was acked. */
  subscribed: boolean;
  /** The refusal of `topic:subscribe:v1`, if any. */
  error: { code: LivelineError['code']; message: string } | null;
}

/**
 * Subscribes to a public topic (e.g. `market:BTC-USD`) with `topic:subscribe:v1`
 * while mounted (once however many components use it; again after a reconnect),
 * unsubscribes when the last user unmounts; null/undefined pauses.
 */
export function useTopic<T = EventMap['market:tick:v1']['data']>(name: string | null | undefined): UseTopicResult<T>;

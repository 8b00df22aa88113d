// Type-level use of the package: what an app writes must compile, and each
// `@ts-expect-error` marks a payload shape the types must refuse. Checked by
// tests/packaging/types.test.mjs (tsc --noEmit); never run.
import { init, Liveline } from 'liveline-client';
import type {
  ActionMap,
  ActionSettled,
  ConnectionSnapshot,
  ConnectionStateName,
  CoreOptions,
  Envelope,
  EventMap,
  JobState,
  JobStatus,
  LivelineError,
  LivelineErrorCode,
  LivelineOptions,
  MarketTick,
  OrderState,
  Side,
  StreamRecovered,
  TradeOrder,
} from 'liveline-client';
import {
  LivelineProvider,
  useConnectionState,
  useEvent,
  useJob,
  useLiveline,
  useSend,
  useTopic,
} from 'liveline-client/react';
import type { UseJobResult, UseTopicResult } from 'liveline-client/react';

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
declare function expectType<T extends true>(): void;

// The generated contract types are the ones the package exports.
expectType<Equal<EventMap['job:status:v1'], Envelope<JobStatus>>>();
expectType<Equal<EventMap['market:tick:v1']['data'], MarketTick>>();
expectType<Equal<EventMap['stream:recovered:v1'], StreamRecovered>>();
expectType<Equal<EventMap['action:settled'], ActionSettled>>();
expectType<Equal<ActionMap['job:start:v1'][0]['kind'], string>>();
expectType<Equal<JobState, 'queued' | 'running' | 'completed' | 'failed' | 'cancelled'>>();
expectType<Equal<OrderState, 'accepted' | 'partially_filled' | 'filled' | 'rejected' | 'cancelled'>>();
expectType<Equal<TradeOrder['side'], Side>>();
expectType<Equal<Side, 'buy' | 'sell'>>();
expectType<Equal<ActionMap['job:cancel:v1'][1]['status'], JobState>>();
expectType<Equal<ConnectionSnapshot['current'], ConnectionStateName>>();
expectType<Equal<LivelineError['code'], LivelineErrorCode>>();

// Options: the core's tunables are generated (CoreOptions) and part of LivelineOptions.
expectType<Equal<LivelineOptions['ackTimeoutMs'], CoreOptions['ackTimeoutMs']>>();
expectType<Equal<CoreOptions['livenessProbe'], boolean | undefined>>();
const options: LivelineOptions = {
  url: 'wss://rt.example.com',
  getToken: () => 'jwt',
  backoff: { initialMs: 500, maxMs: 30_000 },
  ackTimeoutMs: 5_000,
  connectTimeoutMs: 8_000,
  livenessProbe: false,
  probeTimeoutMs: 2_000,
  outboxCapacity: 64,
  storage: 'auto',
  storageKey: 'liveline:outbox:user-1',
};
const tunedOnly: CoreOptions = { backoff: { maxMs: 1_000 } };
// @ts-expect-error backoff delays are numbers
const textBackoff: LivelineOptions = { url: 'ws://x', getToken: () => 'jwt', backoff: { initialMs: 'x' } };
// @ts-expect-error livenessProbe is a boolean
const numericProbe: CoreOptions = { livenessProbe: 0 };
// @ts-expect-error getToken is required
const noToken: LivelineOptions = { url: 'ws://x' };
// @ts-expect-error no such tunable
const typo: CoreOptions = { ackTimeout: 5_000 };
void [options, tunedOnly, textBackoff, numericProbe, noToken, typo];

export async function app(): Promise<void> {
  await init();
  const client = new Liveline({ url: 'ws://localhost:8080', getToken: async () => 'jwt', storage: 'memory' });
  client.connect();

  // Events: the listener gets the contract's payload.
  client.on('job:chunk:v1', (env) => {
    const text: string = env.data.text;
    const seq: number = env.seq;
    void [text, seq];
  });
  client.on('job:status:v1', (env) => {
    const status: JobState = env.data.status;
    const progress: number = env.data.progress ?? 0;
    void [status, progress];
  });
  client.on('trade:order:v1', (env) => {
    const side: 'buy' | 'sell' = env.data.side;
    void side;
  });
  client.on('stream:recovered:v1', (r) => {
    const recovered: boolean = r.recovered;
    void recovered;
  });
  client.on('action:settled', (s) => {
    const code: LivelineErrorCode | undefined = s.error?.code;
    void code;
  });
  client.on('*', (payload, name) => void [payload, name.length]);
  client.on('some:future:v2', (payload) => void payload);
  // @ts-expect-error a chunk's text is a string
  client.on('job:chunk:v1', (env) => { const n: number = env.data.text; void n; });
  // @ts-expect-error a market tick has no jobId
  client.on('market:tick:v1', (env) => void env.data.jobId);

  // Actions: the payload is checked and the promise carries the ack's result.
  const { jobId } = await client.send('job:start:v1', { kind: 'research', params: { query: 'rust' } });
  await client.send('job:start:v1', { kind: 'llm' });
  const cancelled = await client.send('job:cancel:v1', { jobId });
  const jobState: JobState = cancelled.status;
  // An order is the demo's job kind; its trade:order:v1 events are typed.
  const order = await client.send('job:start:v1', { kind: 'order', params: { symbol: 'BTC-USD', side: 'buy', qty: 1, price: 100 } });
  const orderCancelled = await client.send('job:cancel:v1', { jobId: order.jobId });
  const orderState: JobState = orderCancelled.status;
  const head = await client.send('topic:subscribe:v1', { topic: 'market:BTC-USD' });
  const headSeq: number = head.seq;
  await client.send('topic:unsubscribe:v1', { topic: head.topic });
  void [jobState, orderState, headSeq];
  // Wrong payload shapes, against the action map (`send` itself also has an
  // untyped `send(action: string, data: unknown)` overload that accepts them).
  // Any kind the app's workers handle: the layer has no list of its own.
  const pdf: ActionMap['job:start:v1'][0] = { kind: 'summarize-pdf', params: { url: 'x.pdf' } };
  void pdf;
  // @ts-expect-error kind is required
  const noKind: ActionMap['job:start:v1'][0] = { params: {} };
  // @ts-expect-error kind is a string
  const numericKind: ActionMap['job:start:v1'][0] = { kind: 7 };
  // @ts-expect-error jobId is required
  const noJob: ActionMap['job:cancel:v1'][0] = {};
  void [noKind, numericKind, noJob];
  // @ts-expect-error the job:start ack has no orderId
  void (await client.send('job:start:v1', { kind: 'llm' })).orderId;

  // States and error codes.
  const snapshot = client.getSnapshot();
  const current: ConnectionStateName = snapshot.current;
  // @ts-expect-error not a connection state
  const asleep: ConnectionStateName = 'sleeping';
  const known: LivelineErrorCode = 'outbox_full';
  const newer: LivelineErrorCode = 'a_code_from_a_newer_gateway';
  void [current, asleep, known, newer];

  client.close();
  client.dispose();
}

// React hooks (called outside a component: only their types matter here).
export function hooks(client: Liveline): void {
  const provider = LivelineProvider({ client, children: null });
  const same: Liveline = useLiveline();
  const state: ConnectionStateName = useConnectionState().current;
  const job: UseJobResult = useJob('42');
  const status: JobState | null = job.status;
  const send = useSend();
  void send('job:cancel:v1', { jobId: '42' });
  const sent: Promise<{ jobId: string; status: JobState }> = send('job:cancel:v1', { jobId: '42' });
  // @ts-expect-error the job:cancel ack has no orderId
  void sent.then((r) => r.orderId);
  const tick: UseTopicResult<MarketTick> = useTopic('market:BTC-USD');
  const price: number | undefined = tick.data?.price;
  useEvent('trade:order:v1', (env) => {
    const filled: number | undefined = env.data.filledQty;
    void filled;
  });
  // @ts-expect-error a status event's data has no text
  useEvent('job:status:v1', (env) => void env.data.text);
  void [provider, same, state, status, price];
}

// An app's own events and actions, in the style of socket.io's `Socket<S2C, C2S>`:
// declared once, merged with the built-in contracts.
interface DocEvents {
  'doc:annotated:v1': (env: Envelope<{ jobId: string; note: string }>) => void;
  'doc:ping': (n: number, reply: (pong: string) => void) => void;
}
interface DocActions {
  'doc:annotate:v1': (data: { jobId: string; note: string }) => { actionId: string };
}

export async function typedApp(): Promise<void> {
  const client = new Liveline<DocEvents, DocActions>({ url: 'ws://localhost:8080', getToken: () => 'jwt' });
  client.on('doc:annotated:v1', (env) => {
    const note: string = env.data.note;
    void note;
  });
  client.on('doc:ping', (n, reply) => reply(`pong ${n + 1}`));
  // The built-in contracts stay typed beside the app's.
  client.on('job:chunk:v1', (env) => void env.data.text.length);
  // @ts-expect-error a misspelled event name does not compile once the app declared its events
  client.on('job:stauts:v1', () => {});
  // @ts-expect-error nor an event the app did not declare
  client.on('doc:deleted:v1', () => {});
  // @ts-expect-error a note is a string
  client.on('doc:annotated:v1', (env) => { const n: number = env.data.note; void n; });
  client.on('*', (payload, name) => void [payload, name.length]);

  const { actionId } = await client.send('doc:annotate:v1', { jobId: 'j1', note: 'see p. 3' });
  const id: string = actionId;
  // A custom job kind type-checks: the layer keeps no list of kinds.
  const { jobId } = await client.send('job:start:v1', { kind: 'summarize-pdf', params: { url: 'x.pdf' } });
  void [id, jobId];
  // @ts-expect-error the annotate action needs a note
  void client.send('doc:annotate:v1', { jobId: 'j1' });
  // @ts-expect-error an action the app did not declare
  void client.send('doc:delete:v1', { jobId: 'j1' });
  // @ts-expect-error a misspelled built-in action
  void client.send('job:strat:v1', { kind: 'llm' });

  // Plain Socket.IO emits, acks and recovery, as with socket.io-client.
  client.emit('burst', { n: 1000 }).emit('bin', new Uint8Array([1, 2]));
  client.emit('sum', 1, 2, (total: unknown) => void total);
  const echoed: unknown = await client.emitWithAck('echo', 'x');
  const timed: unknown = await client.timeout(500).emitWithAck('echo', 'y');
  client.timeout(500).emit('echo', 'z', (err: Error | null, ...args: unknown[]) => void [err, args]);
  const offAny = client.onAny((name, ...args) => void [name.length, args.length]);
  offAny();
  const server: 'liveline' | 'socket.io' | null = client.server;
  const recovered: boolean = client.recovered && client.getSnapshot().recovered;
  void [echoed, timed, server, recovered];

  // Hooks take the same maps.
  const typedClient = useLiveline<DocEvents, DocActions>();
  void typedClient.send('doc:annotate:v1', { jobId: 'j1', note: 'n' });
  const typedSend = useSend<DocActions>();
  void typedSend('doc:annotate:v1', { jobId: 'j1', note: 'n' });
  // @ts-expect-error the hook's send knows the app's actions
  void typedSend('doc:annotate:v1', { note: 'n' });
  LivelineProvider({ client, children: null });
}

// Jobs without React, and the job list.
import { jobOf, jobsOf, startJob, watchJob } from 'liveline-client/jobs';
import type { JobListState, JobView } from 'liveline-client/jobs';
import { useJobs } from 'liveline-client/react';

export async function jobsApi(client: Liveline): Promise<void> {
  const handle = await startJob(client, 'summarize-pdf', { url: 'x.pdf' });
  const view: JobView = jobOf(client, handle.jobId).get();
  const text: string = view.text;
  const off = watchJob(client, handle.jobId, (s) => void [s.status, s.progress, s.complete, s.gone]);
  off();
  const list = jobsOf(client, { kinds: ['summarize-pdf'] });
  const state: JobListState = list.get();
  const first: string | undefined = state.jobs[0]?.kind;
  // @ts-expect-error a job list is read-only
  state.jobs.push(state.jobs[0]);
  const hooked: JobListState = useJobs(['llm']);
  void [text, first, hooked];
}

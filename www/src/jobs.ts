// The user's jobs: seeded from the REST snapshot on load, then kept live by job
// events. Events are merged by stream position (epoch, seq): an event already
// applied (from REST or live) is skipped, a hole is filled from the job's
// history over REST once, and a lost history (`stream:recovered:v1` with
// recovered:false, or a new epoch) reloads the job from its snapshot.
import type { Envelope, Liveline, StreamRecovered } from 'liveline-client';
import { useCallback, useSyncExternalStore } from 'react';
import { getJob, getJobEvents, listJobs, type JobRecord, type JobStateName } from './api';
import { notify } from './notices';

export interface JobView {
  id: string;
  kind: string;
  query: string;
  status: JobStateName | null;
  progress: number;
  message: string;
  /** Streamed `job:chunk:v1` texts in index order. */
  text: string;
  chunks: number;
  result: Record<string, unknown> | null;
  error: { code: string; message: string } | null;
  sources: number | null;
  createdAt: number;
  /** False until its history was read (jobs listed but not opened). */
  loaded: boolean;
  /** True when history no longer reached back to the start (text may be partial). */
  partial: boolean;
}

interface Entry {
  view: JobView;
  chunks: Map<number, string>;
  epoch: string | null;
  seq: number;
  pending: Map<number, [string, Envelope<unknown>]>;
  fetching: Promise<void> | null;
}

const TERMINAL = new Set(['completed', 'failed', 'cancelled']);
/** The job kinds this panel shows; other kinds (the trade page's orders) are not its jobs. */
const KINDS = new Set(['research', 'llm']);
const JOB_EVENTS = ['job:status:v1', 'job:chunk:v1', 'job:result:v1', 'job:error:v1'] as const;

export function answerOf(job: JobView): { text: string; streamed: boolean } {
  if (job.text) return { text: job.text, streamed: true };
  const r = job.result;
  const v = r && (r.summary ?? r.answer ?? r.text);
  return { text: typeof v === 'string' ? v : '', streamed: false };
}

export class JobsStore {
  private jobs = new Map<string, Entry>();
  /** Jobs of other kinds: their events are not this store's. */
  private others = new Set<string>();
  private listeners = new Set<() => void>();
  private list: JobView[] = [];
  listError: string | null = null;
  listLoaded = false;
  /** True once the load-time REST reads (the list, then the history of running and recent jobs) are done. */
  loadSettled = false;

  constructor(private client: Liveline) {}

  /** Listens to job events and resume notices; returns the detach. */
  attach(): () => void {
    const offs = JOB_EVENTS.map((name) =>
      this.client.on(name, (env) => this.onEvent(name, env as Envelope<unknown>)),
    );
    offs.push(this.client.on('stream:recovered:v1', (r) => this.onRecovered(r)));
    return () => offs.forEach((off) => off());
  }

  /** On load: the user's jobs, and the history of those still running. */
  async load(): Promise<void> {
    try {
      const records = (await listJobs()).filter((r) => {
        if (KINDS.has(r.kind)) return true;
        this.forget(r.id);
        return false;
      });
      for (const r of records) this.seed(r);
      this.listLoaded = true;
      this.emit();
      const running = records.filter((r) => !TERMINAL.has(r.status));
      const recent = records.slice(0, 3);
      const want = new Set([...running, ...recent].map((r) => r.id));
      await Promise.all([...want].map((id) => this.catchUp(id)));
    } catch (err) {
      this.listError = err instanceof Error ? err.message : String(err);
      this.listLoaded = true;
    }
    this.loadSettled = true;
    this.emit();
  }

  /** A job this page just started (its events may already be arriving). */
  started(id: string, kind: string, query: string) {
    const e = this.ensure(id);
    this.patch(e, { kind, query, loaded: true });
    this.emit();
  }

  /** A job of another kind (an order): dropped, and its events ignored. */
  forget(id: string) {
    this.others.add(id);
    if (this.jobs.delete(id)) this.emit();
  }

  /** Reads the job's history if it was only listed (explicit user action). */
  open(id: string) {
    const e = this.jobs.get(id);
    if (e && !e.view.loaded) void this.catchUp(id);
  }

  subscribe = (fn: () => void) => {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  };
  getList = () => this.list;
  get(id: string): JobView | null {
    return this.jobs.get(id)?.view ?? null;
  }

  // --- internals ---------------------------------------------------------

  private emit() {
    this.list = [...this.jobs.values()].map((e) => e.view).sort((a, b) => b.createdAt - a.createdAt);
    for (const fn of [...this.listeners]) fn();
  }

  private ensure(id: string): Entry {
    let e = this.jobs.get(id);
    if (!e) {
      e = {
        view: {
          id,
          kind: 'research',
          query: '',
          status: null,
          progress: 0,
          message: '',
          text: '',
          chunks: 0,
          result: null,
          error: null,
          sources: null,
          createdAt: Date.now(),
          loaded: false,
          partial: false,
        },
        chunks: new Map(),
        epoch: null,
        seq: 0,
        pending: new Map(),
        fetching: null,
      };
      this.jobs.set(id, e);
    }
    return e;
  }

  private patch(e: Entry, p: Partial<JobView>) {
    e.view = { ...e.view, ...p };
  }

  private seed(r: JobRecord) {
    const e = this.ensure(r.id);
    const query = typeof r.params?.query === 'string' ? r.params.query : e.view.query;
    this.patch(e, { kind: r.kind, query, createdAt: r.createdAt });
    // The record's status counts only until events say more.
    if (e.seq === 0) {
      this.patch(e, {
        status: r.status,
        progress: r.status === 'completed' ? 1 : r.progress,
        message: r.message,
        sources: sourcesIn(r.message) ?? e.view.sources,
      });
    }
  }

  private onEvent(name: string, env: Envelope<unknown>) {
    const data = env?.data as { jobId?: unknown } | undefined;
    if (!data || data.jobId == null || typeof env.seq !== 'number') return;
    const id = String(data.jobId);
    if (this.others.has(id)) return;
    const e = this.ensure(id);
    if (e.epoch != null && env.epoch !== e.epoch) {
      // The history was lost and restarted: this job's state comes from REST again.
      void this.reload(id, `new epoch on ${env.stream}`);
      return;
    }
    if (env.seq <= e.seq) return; // already applied
    e.pending.set(env.seq, [name, env]);
    this.drain(e);
    if (e.pending.size > 0 && !e.fetching) void this.catchUp(id);
    this.emit();
  }

  private drain(e: Entry) {
    if (e.fetching) return;
    for (const s of [...e.pending.keys()]) if (s <= e.seq) e.pending.delete(s);
    for (;;) {
      const next = e.pending.get(e.seq + 1);
      if (!next) break;
      e.pending.delete(e.seq + 1);
      this.apply(e, next[0], next[1]);
    }
  }

  private apply(e: Entry, name: string, env: Envelope<unknown>) {
    e.epoch = env.epoch;
    e.seq = env.seq;
    const d = env.data as Record<string, unknown>;
    const v = e.view;
    switch (name) {
      case 'job:status:v1': {
        const status = d.status as JobStateName;
        if (v.status && TERMINAL.has(v.status) && !TERMINAL.has(status)) break;
        const message = typeof d.message === 'string' ? d.message : v.message;
        this.patch(e, {
          status,
          progress: status === 'completed' ? 1 : clamp01(Number(d.progress ?? v.progress)),
          message,
          sources: sourcesIn(message) ?? v.sources,
        });
        break;
      }
      case 'job:chunk:v1': {
        const index = Number(d.index);
        if (e.chunks.has(index)) break; // never twice
        e.chunks.set(index, String(d.text ?? ''));
        const text = [...e.chunks.entries()]
          .sort((a, b) => a[0] - b[0])
          .map(([, t]) => t)
          .join('');
        this.patch(e, { text, chunks: e.chunks.size });
        break;
      }
      case 'job:result:v1': {
        const result = (d.result ?? null) as Record<string, unknown> | null;
        const n = result && typeof result.sources === 'number' ? result.sources : v.sources;
        this.patch(e, { result, sources: n });
        break;
      }
      case 'job:error:v1':
        this.patch(e, { error: { code: String(d.code ?? 'unknown'), message: String(d.message ?? '') } });
        break;
    }
  }

  /** Reads what follows the job's position from its history; once at a time. */
  private catchUp(id: string): Promise<void> {
    const e = this.ensure(id);
    if (e.fetching) return e.fetching;
    const run = async () => {
      for (let round = 0; round < 3; round++) {
        const r = await getJobEvents(id, e.epoch == null ? 0 : e.seq);
        if (e.epoch != null && r.epoch !== e.epoch) {
          this.reset(e);
          continue;
        }
        if (!r.complete && r.seq > e.seq) {
          // History does not reach back to our position: take the snapshot's state.
          const snap = await getJob(id);
          this.seed(snap);
          this.patch(e, { partial: true });
          e.chunks.clear();
          e.epoch = r.epoch;
          const first = r.events[0]?.envelope.seq ?? r.seq + 1;
          e.seq = first - 1;
        }
        for (const { event, envelope } of r.events) {
          if (envelope.seq === e.seq + 1) this.apply(e, event, envelope);
        }
        if (e.epoch == null && r.epoch) e.epoch = r.epoch;
        if (e.seq < r.seq && r.events.length === 0) e.seq = r.seq;
        this.patch(e, { loaded: true });
        for (const s of [...e.pending.keys()]) if (s <= e.seq) e.pending.delete(s);
        const next = Math.min(...e.pending.keys());
        // Live events beyond a hole that history did not fill yet: read again.
        if (e.pending.size === 0 || next === e.seq + 1) break;
      }
    };
    e.fetching = run()
      .catch((err: unknown) => {
        console.warn('liveline app: reading job history failed', err);
      })
      .finally(() => {
        e.fetching = null;
        this.drain(e);
        this.emit();
      });
    this.emit();
    return e.fetching;
  }

  private reset(e: Entry) {
    e.chunks.clear();
    e.epoch = null;
    e.seq = 0;
    this.patch(e, { text: '', chunks: 0, result: null, error: null, partial: false });
  }

  /** History was lost: start over from the snapshot (REST). */
  private async reload(id: string, why: string) {
    const e = this.ensure(id);
    if (e.fetching) await e.fetching;
    this.reset(e);
    notify('reloaded', `Missed events on job ${short(id)} (${why}): reloaded from the snapshot`);
    try {
      this.seed(await getJob(id));
    } catch (err) {
      console.warn('liveline app: snapshot reload failed', err);
    }
    await this.catchUp(id);
  }

  private onRecovered(r: StreamRecovered) {
    if (!r || typeof r.stream !== 'string' || !r.stream.startsWith('job:')) return;
    if (r.recovered) return; // the notice is the connection bar's
    void this.reload(r.stream.slice(4), 'history gap');
  }
}

function sourcesIn(message: string | undefined): number | null {
  const m = message && /(\d+)\s+sources?\s+found/i.exec(message);
  return m ? Number(m[1]) : null;
}

function clamp01(x: number) {
  return Number.isFinite(x) ? Math.min(1, Math.max(0, x)) : 0;
}

export function short(id: string) {
  return id.length > 10 ? `${id.slice(0, 8)}…` : id;
}

export function useJobList(store: JobsStore): JobView[] {
  return useSyncExternalStore(store.subscribe, store.getList, store.getList);
}

export function useJobView(store: JobsStore, id: string | null): JobView | null {
  const get = useCallback(() => (id ? store.get(id) : null), [store, id]);
  return useSyncExternalStore(store.subscribe, get, get);
}

// The user's research and LLM jobs as a list: seeded from the REST list on load,
// kept live by status events. A job's whole state (status, text, result) is the
// SDK's: `useJob(id)` from liveline-client/react rebuilds it from the gateway's
// history after a reload and then follows it live.
import type { Liveline } from 'liveline-client';
import { useSyncExternalStore } from 'react';
import { listJobs, type JobStateName } from './api';

/** One row of the job list. */
export interface JobItem {
  id: string;
  kind: string;
  query: string;
  status: JobStateName | null;
  progress: number;
  createdAt: number;
}

/** The job kinds this panel shows; other kinds (the trade page's orders) are not its jobs. */
const KINDS = new Set(['research', 'llm']);

export class JobsStore {
  private items = new Map<string, JobItem>();
  /** Jobs of other kinds: their events are not this list's. */
  private others = new Set<string>();
  private listeners = new Set<() => void>();
  private list: JobItem[] = [];
  listError: string | null = null;
  listLoaded = false;
  /** True once the load-time REST read of the list is done. */
  loadSettled = false;

  constructor(private client: Liveline) {}

  /** Follows status events for the list's rows; returns the detach. */
  attach(): () => void {
    return this.client.on('job:status:v1', (env) => {
      const d = env?.data;
      const item = d && this.items.get(d.jobId);
      if (!item) return;
      this.set(item.id, {
        status: d.status,
        progress: d.status === 'completed' ? 1 : Math.min(1, Math.max(0, d.progress ?? item.progress)),
      });
    });
  }

  /** On load: the user's jobs of this panel's kinds. */
  async load(): Promise<void> {
    try {
      for (const r of await listJobs()) {
        if (!KINDS.has(r.kind)) {
          this.forget(r.id);
          continue;
        }
        const query = typeof r.params?.query === 'string' ? r.params.query : '';
        const known = this.items.get(r.id);
        this.items.set(r.id, {
          id: r.id,
          kind: r.kind,
          query,
          // Live events seen before the list came count over the record.
          status: known?.status ?? r.status,
          progress: known?.status ? known.progress : r.status === 'completed' ? 1 : r.progress,
          createdAt: r.createdAt,
        });
      }
      this.listLoaded = true;
    } catch (err) {
      this.listError = err instanceof Error ? err.message : String(err);
      this.listLoaded = true;
    }
    this.loadSettled = true;
    this.emit();
  }

  /** A job this page just started. */
  started(id: string, kind: string, query: string) {
    const known = this.items.get(id);
    this.items.set(id, { id, kind, query, status: known?.status ?? null, progress: known?.progress ?? 0, createdAt: Date.now() });
    this.emit();
  }

  /** A job of another kind (an order): dropped, and its events ignored. */
  forget(id: string) {
    this.others.add(id);
    if (this.items.delete(id)) this.emit();
  }

  get(id: string): JobItem | null {
    return this.items.get(id) ?? null;
  }

  subscribe = (fn: () => void) => {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  };
  getList = () => this.list;

  private set(id: string, patch: Partial<JobItem>) {
    const item = this.items.get(id);
    if (!item || this.others.has(id)) return;
    this.items.set(id, { ...item, ...patch });
    this.emit();
  }

  private emit() {
    this.list = [...this.items.values()].sort((a, b) => b.createdAt - a.createdAt);
    for (const fn of [...this.listeners]) fn();
  }
}

/** The answer to show: the streamed text, else the result's text. */
export function answerOf(text: string, result: unknown): { text: string; streamed: boolean } {
  if (text) return { text, streamed: true };
  const r = result as Record<string, unknown> | null;
  const v = r && (r.summary ?? r.answer ?? r.text);
  return { text: typeof v === 'string' ? v : '', streamed: false };
}

/** "N sources found" in a research job's status message. */
export function sourcesIn(message: string | null): number | null {
  const m = message && /(\d+)\s+sources?\s+found/i.exec(message);
  return m ? Number(m[1]) : null;
}

export function short(id: string) {
  return id.length > 10 ? `${id.slice(0, 8)}…` : id;
}

export function useJobList(store: JobsStore): JobItem[] {
  return useSyncExternalStore(store.subscribe, store.getList, store.getList);
}

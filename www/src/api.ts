// REST calls to the gateway, made only on load, when a stream must be reloaded
// from its snapshot, and on explicit user actions. Never from a timer.
import { getDevToken } from './token';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** GET `path` with a Bearer token (the demo user's unless `token` is given). */
export async function apiGet<T>(path: string, token?: string): Promise<T> {
  const bearer = token ?? (await getDevToken());
  const res = await fetch(path, { headers: { authorization: `Bearer ${bearer}` } });
  const text = await res.text();
  let body: unknown = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = text;
  }
  if (!res.ok) {
    const err = (body as { error?: { code?: string; message?: string } } | null)?.error;
    throw new ApiError(res.status, err?.code ?? `http_${res.status}`, err?.message ?? `HTTP ${res.status}`);
  }
  return body as T;
}

export type JobStateName = 'queued' | 'running' | 'completed' | 'failed' | 'cancelled';

/** A job as `GET /api/v1/jobs` and `GET /api/v1/jobs/{id}` return it. */
export interface JobRecord {
  id: string;
  owner: string;
  kind: string;
  params: Record<string, unknown> | null;
  status: JobStateName;
  progress: number;
  message: string;
  createdAt: number;
  updatedAt: number;
  /** Only on `GET /api/v1/jobs/{id}`. */
  stream?: string;
  epoch?: string;
  seq?: number;
}

export interface StoredEvent {
  event: string;
  envelope: { stream: string; epoch: string; seq: number; ts: number; data: unknown };
}

/** `GET /api/v1/jobs/{id}/events?after=N`. */
export interface JobEvents {
  stream: string;
  epoch: string;
  seq: number;
  complete: boolean;
  events: StoredEvent[];
}

export const listJobs = () => apiGet<{ jobs: JobRecord[] }>('/api/v1/jobs?limit=20').then((r) => r.jobs ?? []);
export const getJob = (id: string) => apiGet<JobRecord>(`/api/v1/jobs/${encodeURIComponent(id)}`);
export const getJobEvents = (id: string, after: number) =>
  apiGet<JobEvents>(`/api/v1/jobs/${encodeURIComponent(id)}/events?after=${after}`);

// REST calls the app makes itself (the analytics page); the SDK reads jobs.
// Never from a timer.
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

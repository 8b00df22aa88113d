// Dev-only token source: the gateway in demo mode mints tokens at
// POST /api/v1/dev/token. A production app would get its token from its own
// backend instead.

const REFRESH_MARGIN_MS = 30_000;

let cached: { token: string; expiresAt: number } | null = null;
let inflight: Promise<string> | null = null;

/** The demo user: `?user=bob` in the page URL, else alice. */
export function demoUser(): string {
  return new URLSearchParams(window.location.search).get('user') || 'alice';
}

/**
 * Returns a token for the demo user, reusing the last one until shortly
 * before it expires, so reconnects don't each cost an HTTP request.
 */
export function getDevToken(): Promise<string> {
  if (cached && cached.expiresAt - REFRESH_MARGIN_MS > Date.now()) {
    return Promise.resolve(cached.token);
  }
  inflight ??= fetchToken().finally(() => {
    inflight = null;
  });
  return inflight;
}

async function fetchToken(): Promise<string> {
  const res = await fetch('/api/v1/dev/token', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ sub: demoUser() }),
  });
  if (!res.ok) throw new Error(`dev token request failed: HTTP ${res.status}`);
  const { token } = (await res.json()) as { token: string };
  cached = { token, expiresAt: jwtExpiry(token) };
  return token;
}

/** The JWT `exp` claim in ms; 0 (never reuse) when the token has none. */
function jwtExpiry(token: string): number {
  try {
    const payload = token.split('.')[1];
    const json = atob(payload.replace(/-/g, '+').replace(/_/g, '/'));
    const exp = (JSON.parse(json) as { exp?: unknown }).exp;
    return typeof exp === 'number' ? exp * 1000 : 0;
  } catch {
    return 0;
  }
}

// Analytics from GET /api/v1/analytics/summary (service or admin token), read
// when the page opens and on "Refresh" only. Hand-rolled SVG charts.
import { useCallback, useEffect, useState, type FormEvent } from 'react';
import { ApiError, apiGet } from './api';
import { demoUser } from './token';

interface JobStats {
  count: number;
  seconds: number;
}
interface Summary {
  day: string;
  dau: number;
  sessions: number;
  session_seconds: number;
  jobs: Record<string, Record<string, JobStats>>;
  latency?: { p50: number | null; p95: number | null; p99: number | null; count: number };
  connections?: number;
}

const DAYS = 7;
const TOKEN_KEY = 'liveline:analytics-token';

function lastDays(n: number): string[] {
  const out: string[] = [];
  const now = Date.now();
  for (let i = n - 1; i >= 0; i--) out.push(new Date(now - i * 86_400_000).toISOString().slice(0, 10));
  return out;
}

/**
 * A token with the `analytics` role (it reads analytics and can do nothing
 * else): pasted (kept for the tab), else the demo user's from the dev login,
 * the way a real app's own login would hand one to the people who read its
 * dashboard (docs/deployment.md).
 */
async function analyticsToken(): Promise<string | null> {
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) return saved;
  try {
    const res = await fetch('/api/v1/dev/token', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ sub: demoUser(), role: 'analytics' }),
    });
    if (!res.ok) return null;
    return ((await res.json()) as { token?: string }).token ?? null;
  } catch {
    return null;
  }
}

export function AnalyticsPanel() {
  const [days, setDays] = useState<Summary[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [needToken, setNeedToken] = useState(false);
  const [tokenInput, setTokenInput] = useState('');
  const [loading, setLoading] = useState(false);

  const load = useCallback(async () => {
    setLoading(true);
    setError(null);
    try {
      const token = await analyticsToken();
      if (!token) {
        setNeedToken(true);
        return;
      }
      const all = await Promise.all(
        lastDays(DAYS).map((d) => apiGet<Summary>(`/api/v1/analytics/summary?day=${d}`, token)),
      );
      setDays(all);
      setNeedToken(false);
    } catch (err) {
      if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
        sessionStorage.removeItem(TOKEN_KEY);
        setNeedToken(true);
      } else {
        setError(err instanceof Error ? err.message : String(err));
      }
    } finally {
      setLoading(false);
    }
  }, []);

  useEffect(() => {
    void load();
  }, [load]);

  function submitToken(e: FormEvent) {
    e.preventDefault();
    if (!tokenInput.trim()) return;
    sessionStorage.setItem(TOKEN_KEY, tokenInput.trim());
    setTokenInput('');
    void load();
  }

  const today = days?.[days.length - 1];
  return (
    <section className="panel" data-testid="analytics">
      <div className="panel-head">
        <h2>Analytics</h2>
        <button type="button" className="small" onClick={() => void load()} disabled={loading} data-testid="analytics-refresh">
          {loading ? 'Loading…' : 'Refresh'}
        </button>
      </div>
      {needToken && (
        <form className="start-form" onSubmit={submitToken} data-testid="analytics-token-form">
          <input
            aria-label="Analytics token"
            data-testid="analytics-token"
            placeholder="Analytics token (liveline-gateway mint-token --role analytics --sub me)"
            value={tokenInput}
            onChange={(e) => setTokenInput(e.target.value)}
          />
          <button type="submit">Use token</button>
        </form>
      )}
      {error && <p className="error">{error}</p>}
      {days && today && (
        <div className="charts" data-testid="charts">
          <Chart title="Daily active users" testId="chart-dau" bars={days.map((d) => ({ label: d.day.slice(5), value: d.dau }))} />
          <Chart
            title="Sessions per day"
            testId="chart-sessions"
            today={today.sessions}
            bars={days.map((d) => ({ label: d.day.slice(5), value: d.sessions }))}
            note={`today: ${today.sessions} sessions, ${avg(today.session_seconds, today.sessions)} s average`}
          />
          <Stacked title="Job outcomes per day" testId="chart-jobs" days={days} />
          <Latency latency={today.latency} connections={today.connections} />
        </div>
      )}
    </section>
  );
}

function avg(total: number, n: number) {
  return n ? (total / n).toFixed(1) : '0';
}

const W = 320;
const H = 140;
const PAD = 22;

function Chart({
  title,
  bars,
  testId,
  note,
  today,
}: {
  title: string;
  bars: { label: string; value: number }[];
  testId: string;
  note?: string;
  today?: number;
}) {
  const max = Math.max(1, ...bars.map((b) => b.value));
  const bw = (W - PAD) / bars.length;
  return (
    <figure className="chart" data-testid={testId} data-today={today}>
      <figcaption>{title}</figcaption>
      <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-label={title}>
        {bars.map((b, i) => {
          const h = ((H - 2 * PAD) * b.value) / max;
          const x = PAD + i * bw + 4;
          return (
            <g key={b.label}>
              <rect x={x} y={H - PAD - h} width={bw - 8} height={h} className="bar" />
              <text x={x + (bw - 8) / 2} y={H - PAD - h - 4} className="val">
                {b.value}
              </text>
              <text x={x + (bw - 8) / 2} y={H - 6} className="lbl">
                {b.label}
              </text>
            </g>
          );
        })}
        <line x1={PAD} x2={W} y1={H - PAD} y2={H - PAD} className="axis" />
      </svg>
      {note && <div className="chart-note">{note}</div>}
    </figure>
  );
}

const OUTCOMES = ['completed', 'failed', 'cancelled'] as const;

function Stacked({ title, days, testId }: { title: string; days: Summary[]; testId: string }) {
  const rows = days.map((d) => {
    const sum = (o: string) => Object.values(d.jobs ?? {}).reduce((n, k) => n + (k[o]?.count ?? 0), 0);
    return { label: d.day.slice(5), started: sum('started'), ...Object.fromEntries(OUTCOMES.map((o) => [o, sum(o)])) } as Record<string, number | string>;
  });
  const max = Math.max(1, ...rows.map((r) => OUTCOMES.reduce((n, o) => n + Number(r[o]), 0)));
  const bw = (W - PAD) / rows.length;
  return (
    <figure className="chart" data-testid={testId}>
      <figcaption>{title}</figcaption>
      <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-label={title}>
        {rows.map((r, i) => {
          let y = H - PAD;
          const x = PAD + i * bw + 4;
          return (
            <g key={String(r.label)}>
              {OUTCOMES.map((o) => {
                const h = ((H - 2 * PAD) * Number(r[o])) / max;
                y -= h;
                return <rect key={o} x={x} y={y} width={bw - 8} height={h} className={`bar bar-${o}`} />;
              })}
              <text x={x + (bw - 8) / 2} y={y - 4} className="val">
                {OUTCOMES.reduce((n, o) => n + Number(r[o]), 0)}
              </text>
              <text x={x + (bw - 8) / 2} y={H - 6} className="lbl">
                {String(r.label)}
              </text>
            </g>
          );
        })}
        <line x1={PAD} x2={W} y1={H - PAD} y2={H - PAD} className="axis" />
      </svg>
      <div className="legend">
        {OUTCOMES.map((o) => (
          <span key={o} className={`key key-${o}`}>
            {o}
          </span>
        ))}
      </div>
    </figure>
  );
}

/** Milliseconds on a log scale from 0.1 ms to 10 s: sub-millisecond and slow deliveries both show. */
const LOG_MIN = -1;
const LOG_MAX = 4;
const TICKS = [0.1, 1, 10, 100, 1000, 10000];
function logX(ms: number, width: number) {
  const v = Math.min(LOG_MAX, Math.max(LOG_MIN, Math.log10(Math.max(ms, 1e-6))));
  return ((v - LOG_MIN) / (LOG_MAX - LOG_MIN)) * width;
}

function Latency({ latency, connections }: { latency: Summary['latency']; connections?: number }) {
  const qs = (['p50', 'p95', 'p99'] as const).map((q) => ({ q, ms: latency?.[q] == null ? null : Number(latency[q]) * 1000 }));
  const left = 40;
  const width = W - left - 8;
  return (
    <figure className="chart" data-testid="chart-latency">
      <figcaption>Delivery latency, publish to emit (this node, log scale)</figcaption>
      <svg viewBox={`0 0 ${W} 120`} role="img" aria-label="Delivery latency quantiles on a log scale">
        {TICKS.map((t) => (
          <g key={t}>
            <line x1={left + logX(t, width)} x2={left + logX(t, width)} y1={8} y2={96} className="axis" />
            <text x={left + logX(t, width)} y={110} className="lbl">
              {t < 1 ? `${t} ms` : t < 1000 ? `${t} ms` : `${t / 1000} s`}
            </text>
          </g>
        ))}
        {qs.map(({ q, ms }, i) => {
          const w = ms == null ? 0 : Math.max(2, logX(ms, width));
          return (
            <g key={q} data-testid={`latency-${q}`} data-ms={ms ?? ''}>
              <text x={4} y={24 + i * 28} className="lbl-left">
                {q}
              </text>
              <rect x={left} y={12 + i * 28} width={w} height={16} className={`bar bar-${q}`} />
              <text x={Math.min(left + w + 6, W - 60)} y={24 + i * 28} className="lbl-left">
                {ms == null ? 'no data' : `≤ ${fmtMs(ms)}`}
              </text>
            </g>
          );
        })}
      </svg>
      <div className="chart-note">
        {latency?.count ?? 0} deliveries measured{connections != null ? ` · ${connections} connections now` : ''}. Each bar ends at the
        upper bound of the histogram bucket that holds the quantile.
      </div>
    </figure>
  );
}

function fmtMs(ms: number) {
  return ms < 1 ? `${ms.toFixed(2)} ms` : ms < 10 ? `${ms.toFixed(1)} ms` : `${Math.round(ms)} ms`;
}

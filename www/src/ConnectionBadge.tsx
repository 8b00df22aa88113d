import { useEffect, useState } from 'react';
import type { ConnectionSnapshot, StreamRecovered } from 'liveline-client';
import { useConnectionState, useEvent } from 'liveline-client/react';
import { notify, useNotices } from './notices';

/**
 * The connection status, bound to the SDK's state: connected, connecting,
 * reconnecting (attempt and a countdown to the next try), offline, suspended,
 * failed (with the reason), and the number of queued actions; plus short
 * notices when a resume recovered missed events or a gap forced a reload.
 */
export function ConnectionBadge() {
  const state = useConnectionState();
  const now = useCountdownClock(state.retryAt);
  const notices = useNotices();

  useEvent('stream:recovered:v1', (r: StreamRecovered) => {
    if (!r || typeof r.stream !== 'string') return;
    if (r.recovered) notify('recovered', `Resumed ${r.stream}: missed events recovered, nothing lost`);
    else if (!r.stream.startsWith('job:')) notify('reloaded', `Gap on ${r.stream}: continuing from the latest state`);
    // job streams: the jobs store reloads the snapshot and says so.
  });

  const detail = describe(state, now);
  return (
    <div className="status-wrap">
      <div className="badge-wrap" aria-live="polite">
        <span className={`badge badge-${state.current}`} data-testid="connection-state">
          {state.current}
        </span>
        {detail && (
          <span className="badge-detail" data-testid="connection-detail">
            {detail}
          </span>
        )}
        <span
          className={`queued${state.queued ? ' queued-some' : ''}`}
          data-testid="queued-count"
          data-value={state.queued}
          title="Actions waiting to be sent"
        >
          {state.queued} queued
        </span>
      </div>
      {notices.length > 0 && (
        <ul className="notices" data-testid="notices">
          {notices.map((n) => (
            <li key={n.id} className={`notice notice-${n.kind}`} data-kind={n.kind}>
              {n.text}
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

/** `Date.now()`, refreshed 4 times a second while a retry is scheduled (a UI clock, no I/O). */
function useCountdownClock(retryAt: number | null): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    if (retryAt == null) return undefined;
    setNow(Date.now());
    const t = setInterval(() => setNow(Date.now()), 250);
    return () => clearInterval(t);
  }, [retryAt]);
  return now;
}

function describe(s: ConnectionSnapshot, now: number): string | null {
  const parts: string[] = [];
  if (s.current === 'reconnecting' || s.current === 'suspended') {
    if (s.attempt) parts.push(`attempt ${s.attempt}`);
    if (s.retryAt != null) {
      const secs = Math.max(0, Math.ceil((s.retryAt - now) / 1000));
      parts.push(secs > 0 ? `retry in ${secs} s` : 'retrying now');
    } else if (s.retryIn != null) {
      parts.push(`retry in ${Math.ceil(s.retryIn / 1000)} s`);
    }
  }
  if (s.current === 'offline') parts.push('waiting for the network');
  if (s.current === 'failed' || s.current === 'reconnecting' || s.current === 'suspended') {
    const why = s.error || s.reason;
    if (why) parts.push(why);
  }
  return parts.length ? parts.join(' · ') : null;
}

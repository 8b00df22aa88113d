import { useEffect, useRef, useState } from 'react';
import type { ConnectionSnapshot, StreamRecovered } from 'liveline-client';
import { useConnectionState, useEvent, useJobs } from 'liveline-client/react';
import { RESEARCH_KINDS, queryOf } from './format';
import { notify, update, useNotices } from './notices';

/**
 * The connection status in a plain sentence ("Reconnecting in 7 s · 1 action
 * waiting"), the technical reason on hover, and notices only for what
 * happened: one "Reconnected, nothing missed" per outage, or the job or symbol
 * whose missed events could not be replayed.
 */
export function ConnectionBadge() {
  const state = useConnectionState();
  const now = useCountdownClock(state.retryAt);
  const notices = useNotices();
  const { jobs } = useJobs(RESEARCH_KINDS);
  // The notice of the outage that ended last, until the next outage.
  const outage = useRef<{ down: boolean; notice: number | null }>({ down: false, notice: null });

  useEffect(() => {
    const o = outage.current;
    if (state.current === 'reconnecting' || state.current === 'suspended' || state.current === 'offline') {
      o.down = true;
    } else if (state.current === 'connected' && o.down) {
      o.down = false;
      o.notice = notify('recovered', 'Reconnected, nothing missed');
    }
  }, [state.current]);

  useEvent('stream:recovered:v1', (r: StreamRecovered) => {
    // Only a gap in a job an outage caused is news: a topic (a price) just
    // goes on from its latest value, and subscribing to one when switching to
    // Trade replays from nothing and means nothing.
    const o = outage.current;
    if (!r || r.recovered || o.notice === null || typeof r.stream !== 'string' || !r.stream.startsWith('job:')) return;
    const query = queryOf(jobs.find((j) => j.id === r.stream.slice(4))?.params);
    const name = query ? `“${query}”` : 'a job';
    update(o.notice, 'reloaded', `Reconnected; some updates of ${name} were no longer kept, so it shows its latest state`);
  });

  const { text, why } = describe(state, now);
  return (
    <div className="status-wrap">
      <div className="badge-wrap" aria-live="polite">
        <span className={`badge badge-${state.current}`} data-testid="connection-state" title={why}>
          {state.current}
        </span>
        <span className="badge-detail" data-testid="connection-detail" title={why}>
          {text}
        </span>
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

/** The state as a sentence for users, and the technical reason for a tooltip. */
function describe(s: ConnectionSnapshot, now: number): { text: string; why: string } {
  const waiting = s.queued === 1 ? ' · 1 action waiting' : s.queued > 1 ? ` · ${s.queued} actions waiting` : '';
  const inSecs = s.retryAt != null ? Math.max(0, Math.ceil((s.retryAt - now) / 1000)) : s.retryIn != null ? Math.ceil(s.retryIn / 1000) : 0;
  const when = inSecs > 0 ? `in ${inSecs} s` : 'now';
  const why = [s.error, s.reason].filter(Boolean).join(' · ') || s.current;
  switch (s.current) {
    case 'connected':
      return { text: `Live${waiting}`, why };
    case 'connecting':
      return { text: `Connecting…${waiting}`, why };
    case 'reconnecting':
      return { text: `Connection lost. Reconnecting ${when} (attempt ${s.attempt})${waiting}`, why };
    case 'suspended':
      return { text: `Still no connection. Trying again ${when}${waiting}`, why };
    case 'offline':
      return { text: `You are offline. Waiting for the network${waiting}`, why };
    case 'failed':
      return { text: /unauthorized/.test(why) ? 'Signed out: sign in again to reconnect' : 'Cannot connect. Reload the page to try again', why };
    case 'closed':
      return { text: 'Disconnected', why };
    default:
      return { text: '', why };
  }
}

import type { ConnectionSnapshot } from 'liveline';
import { useConnectionState } from 'liveline/react';

export function ConnectionBadge() {
  const state = useConnectionState();
  const detail = describe(state);
  return (
    <div className="badge-wrap" aria-live="polite">
      <span className={`badge badge-${state.current}`} data-testid="connection-state">
        {state.current}
      </span>
      {detail && <span className="badge-detail">{detail}</span>}
    </div>
  );
}

function describe(s: ConnectionSnapshot): string | null {
  const parts: string[] = [];
  if (s.current === 'reconnecting' || s.current === 'suspended') {
    if (s.attempt) parts.push(`attempt ${s.attempt}`);
    if (s.retryIn != null) parts.push(`retry in ${Math.ceil(s.retryIn / 1000)} s`);
  }
  if (s.current === 'failed' || s.current === 'reconnecting') {
    const why = s.error || s.reason;
    if (why) parts.push(why);
  }
  if (s.queued) parts.push(`${s.queued} queued`);
  return parts.length ? parts.join(' · ') : null;
}

import { useState, type FormEvent } from 'react';
import { useConnectionState, useSend } from 'liveline-client/react';
import { JobView } from './JobView';
import { short, useJobList } from './jobs';
import { useStores } from './stores';

type Kind = 'research' | 'llm';

export function ResearchPanel() {
  const send = useSend();
  const { jobs } = useStores();
  const list = useJobList(jobs);
  const conn = useConnectionState();
  const [query, setQuery] = useState('');
  const [kind, setKind] = useState<Kind>('research');
  const [selected, setSelected] = useState<string | null>(null);
  const [queuedStarts, setQueuedStarts] = useState(0);
  const [error, setError] = useState<string | null>(null);

  async function start(e: FormEvent) {
    e.preventDefault();
    const q = query.trim();
    if (!q) return;
    setError(null);
    // The action goes through the outbox: offline it waits, and goes out once.
    setQueuedStarts((n) => n + 1);
    try {
      const { jobId } = await send('job:start:v1', { kind, params: { query: q } });
      jobs.started(jobId, kind, q);
      setSelected(jobId);
    } catch (err) {
      const code = (err as { code?: string }).code;
      const message = err instanceof Error ? err.message : String(err);
      setError(code ? `${code}: ${message}` : message);
    } finally {
      setQueuedStarts((n) => n - 1);
    }
  }

  const current = selected ?? list[0]?.id ?? null;
  return (
    <section className="panel">
      <h2>Research</h2>
      <form className="start-form" onSubmit={start}>
        <select
          aria-label="Kind"
          data-testid="job-kind"
          value={kind}
          onChange={(e) => setKind(e.target.value as Kind)}
        >
          <option value="research">Search sources</option>
          <option value="llm">Ask (LLM)</option>
        </select>
        <input
          data-testid="query"
          aria-label="Research query"
          placeholder="What should we research?"
          value={query}
          onChange={(e) => setQuery(e.target.value)}
        />
        <button type="submit" data-testid="start-research" disabled={!query.trim()}>
          Start
        </button>
      </form>
      {queuedStarts > 0 && conn.current !== 'connected' && (
        <p className="hint" data-testid="start-queued">
          Queued: the search starts when the connection returns.
        </p>
      )}
      {error && (
        <p className="error" role="alert" data-testid="start-error">
          {error}
        </p>
      )}
      {current && <JobView key={current} jobId={current} />}
      <h3>Your jobs</h3>
      {!jobs.listLoaded && <p className="hint">Loading…</p>}
      {jobs.listError && <p className="error">Could not load jobs: {jobs.listError}</p>}
      {jobs.listLoaded && list.length === 0 && <p className="hint">No jobs yet.</p>}
      <ul className="job-list" data-testid="job-list" data-settled={jobs.loadSettled ? 'true' : 'false'}>
        {list.map((j) => (
          <li key={j.id} className={j.id === current ? 'selected' : ''}>
            <button
              type="button"
              data-testid="job-list-item"
              data-job-id={j.id}
              data-status={j.status ?? ''}
              onClick={() => setSelected(j.id)}
            >
              <span className={`status status-${j.status ?? 'pending'}`}>{j.status ?? 'pending'}</span>
              <span className="job-list-query">{j.query || j.kind}</span>
              <span className="job-list-progress">{Math.round(j.progress * 100)}%</span>
              <code className="job-id">{short(j.id)}</code>
            </button>
          </li>
        ))}
      </ul>
    </section>
  );
}

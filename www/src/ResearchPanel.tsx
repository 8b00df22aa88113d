import { useState, type FormEvent } from 'react';
import { startJob } from 'liveline-client/jobs';
import { useConnectionState, useJobs, useLiveline } from 'liveline-client/react';
import { JobView } from './JobView';
import { RESEARCH_KINDS, queryOf, short } from './format';

type Kind = 'research' | 'llm';

export function ResearchPanel() {
  const client = useLiveline();
  const jobs = useJobs(RESEARCH_KINDS);
  const list = jobs.jobs;
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
      const job = await startJob(client, kind, { query: q });
      setSelected(job.jobId);
    } catch (err) {
      const code = (err as { code?: string }).code;
      const message = err instanceof Error ? err.message : String(err);
      setError(code ? `${code}: ${message}` : message);
    } finally {
      setQueuedStarts((n) => n - 1);
    }
  }

  const current = selected ?? list[0]?.id ?? null;
  const row = list.find((j) => j.id === current);
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
      <p className="hint">
        The demo answers from a small built-in corpus, generated locally: no network and no model, so an answer depends
        on the question and streams at about 20 tokens a second.
      </p>
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
      {current && <JobView key={current} jobId={current} kind={row?.kind} query={row ? queryOf(row.params) : undefined} />}
      <h3>Your jobs</h3>
      {!jobs.loaded && <p className="hint">Loading…</p>}
      {jobs.error && <p className="error">Could not load jobs: {jobs.error}</p>}
      {jobs.loaded && list.length === 0 && <p className="hint">No jobs yet.</p>}
      <ul className="job-list" data-testid="job-list" data-settled={jobs.loaded ? 'true' : 'false'}>
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
              <span className="job-list-query">{queryOf(j.params) || j.kind}</span>
              <span className="job-list-progress">{Math.round(j.progress * 100)}%</span>
              <code className="job-id">{short(j.id)}</code>
            </button>
          </li>
        ))}
      </ul>
    </section>
  );
}

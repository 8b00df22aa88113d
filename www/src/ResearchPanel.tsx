import { useState, type FormEvent } from 'react';
import { useSend } from 'liveline/react';
import { JobView } from './JobView';

export function ResearchPanel() {
  const send = useSend();
  const [query, setQuery] = useState('');
  const [jobId, setJobId] = useState<string | null>(null);
  const [sending, setSending] = useState(false);
  const [error, setError] = useState<string | null>(null);

  async function start(e: FormEvent) {
    e.preventDefault();
    const q = query.trim();
    if (!q) return;
    setSending(true);
    setError(null);
    try {
      const { jobId } = await send('job:start:v1', { kind: 'research', params: { query: q } });
      setJobId(jobId);
    } catch (err) {
      const code = (err as { code?: string }).code;
      const message = err instanceof Error ? err.message : String(err);
      setError(code ? `${code}: ${message}` : message);
    } finally {
      setSending(false);
    }
  }

  return (
    <section className="panel">
      <h2>Research</h2>
      <form className="start-form" onSubmit={start}>
        <input
          data-testid="query"
          aria-label="Research query"
          placeholder="What should we research?"
          value={query}
          onChange={(e) => setQuery(e.target.value)}
        />
        <button type="submit" data-testid="start-research" disabled={sending || !query.trim()}>
          {sending ? 'Starting…' : 'Start research'}
        </button>
      </form>
      {error && (
        <p className="error" role="alert" data-testid="start-error">
          {error}
        </p>
      )}
      {jobId && <JobView jobId={jobId} />}
    </section>
  );
}

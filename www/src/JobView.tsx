import { useRef } from 'react';
import { useJob } from 'liveline-client/react';
import { answerOf, sourcesIn } from './format';

/**
 * A job's live state: status, progress, sources found, the answer as it streams.
 * The state is the SDK's (`useJob`): after a reload it is rebuilt from the
 * gateway's history, then followed live.
 */
export function JobView({ jobId, kind, query }: { jobId: string; kind?: string; query?: string }) {
  const job = useJob(jobId);
  // The count stays once a status message or the result said it.
  const sources = useRef<number | null>(null);
  const said = (job.result as { sources?: unknown } | null)?.sources;
  const now = typeof said === 'number' ? said : sourcesIn(job.message);
  if (now != null) sources.current = now;
  const percent = Math.round(job.progress * 100);
  const status = job.status ?? 'pending';
  const answer = answerOf(job.text, job.result);
  const done = job.status === 'completed';
  return (
    <article className="job" aria-live="polite" data-testid="job" data-job-id={jobId}>
      <div className="job-head">
        <span className={`status status-${status}`} data-testid="job-status">
          {status}
        </span>
        {kind && <span className="job-kind">{kind}</span>}
        {query && <span className="job-query">“{query}”</span>}
        <code className="job-id" data-testid="job-id">
          {jobId}
        </code>
      </div>
      <div
        className="progress"
        role="progressbar"
        aria-valuemin={0}
        aria-valuemax={100}
        aria-valuenow={percent}
        data-testid="job-progress"
        data-value={job.progress}
      >
        <div className="progress-fill" style={{ width: `${percent}%` }} />
      </div>
      <p className="job-message">
        <span data-testid="job-message">{job.message}</span>
        {sources.current != null && (
          <span className="sources" data-testid="job-sources" data-value={sources.current}>
            {sources.current} sources found
          </span>
        )}
      </p>
      {(answer.text || job.status === 'running') && (
        <div className="answer">
          <div className="answer-label">
            Answer {answer.streamed && !done && <span className="streaming">streaming…</span>}
          </div>
          <p
            className="job-text"
            data-testid="job-answer"
            data-streamed={answer.streamed}
            data-chunks={job.chunks}
            data-complete={done && job.result != null}
          >
            {answer.text}
            {!done && job.status === 'running' && <span className="caret" aria-hidden="true" />}
          </p>
        </div>
      )}
      {done && titlesOf(job.result).length > 0 && (
        <ol className="source-list" data-testid="job-source-list">
          {titlesOf(job.result).map((t) => (
            <li key={t}>{t}</li>
          ))}
        </ol>
      )}
      {job.partial && <p className="hint">Older events were no longer in history; the text may start mid-way.</p>}
      {job.gone && <p className="hint">This job is no longer kept by the gateway.</p>}
      {job.error && (
        <p className="error" role="alert" data-testid="job-error">
          {job.error.code}: {job.error.message}
        </p>
      )}
    </article>
  );
}

/** The titles of the sources a finished job's result names. */
function titlesOf(result: unknown): string[] {
  const t = (result as { titles?: unknown } | null)?.titles;
  return Array.isArray(t) ? t.filter((x): x is string => typeof x === 'string') : [];
}

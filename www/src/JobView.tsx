import { useJob } from 'liveline/react';

/** A job's live state, driven by job events only (no polling). */
export function JobView({ jobId }: { jobId: string }) {
  const job = useJob(jobId);
  const percent = Math.round(job.progress * 100);
  const status = job.status ?? 'pending';
  return (
    <article className="job" aria-live="polite">
      <div className="job-head">
        <span className={`status status-${status}`} data-testid="job-status">
          {status}
        </span>
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
      <p className="job-message" data-testid="job-message">
        {job.message ?? ''}
      </p>
      {job.text && (
        <pre className="job-text" data-testid="job-text">
          {job.text}
        </pre>
      )}
      {job.result != null && (
        <pre className="job-result" data-testid="job-result">
          {JSON.stringify(job.result, null, 2)}
        </pre>
      )}
      {job.error && (
        <p className="error" role="alert" data-testid="job-error">
          {job.error.code}: {job.error.message}
        </p>
      )}
    </article>
  );
}

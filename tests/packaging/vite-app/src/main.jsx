// What a new user writes after reading docs/sdk.md: the package imported by
// name, one client per page, the React hooks. The gateway URL and the token
// come from the query string: ?gw=http://127.0.0.1:8080&token=...
import { StrictMode, useEffect, useRef, useState } from 'react';
import { createRoot } from 'react-dom/client';
import { Liveline } from 'liveline-client';
import { LivelineProvider, useConnectionState, useEvent, useJob, useSend } from 'liveline-client/react';

const query = new URLSearchParams(window.location.search);

const client = new Liveline({ url: query.get('gw'), getToken: () => query.get('token') });
client.connect();

function App() {
  const state = useConnectionState();
  const send = useSend();
  const [jobId, setJobId] = useState(null);
  const [error, setError] = useState(null);
  const [statuses, setStatuses] = useState([]);
  const job = useJob(jobId);
  const started = useRef(false);

  useEvent('job:status:v1', (event) => setStatuses((s) => [...s, event.data.status]));

  useEffect(() => {
    if (state.current !== 'connected' || started.current) return;
    started.current = true;
    send('job:start:v1', { kind: 'research', params: { query: 'vite' } }).then(
      (ack) => setJobId(ack.jobId),
      (err) => setError(`${err.code}: ${err.message}`),
    );
  }, [state, send]);

  return (
    <main>
      <p>connection: <span data-testid="state">{state.current}</span></p>
      <p>job: <span data-testid="job-id">{jobId ?? ''}</span></p>
      <p>status: <span data-testid="job-status">{job.status ?? ''}</span></p>
      <p>job:status:v1 events: <span data-testid="statuses">{statuses.join(' ')}</span></p>
      <p>error: <span data-testid="error">{error ?? ''}</span></p>
    </main>
  );
}

createRoot(document.getElementById('root')).render(
  <StrictMode>
    <LivelineProvider client={client}>
      <App />
    </LivelineProvider>
  </StrictMode>,
);

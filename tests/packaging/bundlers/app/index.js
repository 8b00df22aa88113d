// The app every bundler case builds: what a new user writes after reading
// docs/sdk.md, in plain JavaScript (no JSX, so no bundler needs a plugin).
// No init() call and no top-level await: the client loads its wasm itself.
// The gateway URL and the token come from the query string.
import { createElement as h, useEffect, useState } from 'react';
import { createRoot } from 'react-dom/client';
import { Liveline } from 'liveline-client';
import { LivelineProvider, useConnectionState, useJob, useSend } from 'liveline-client/react';

const query = new URLSearchParams(window.location.search);
const client = new Liveline({ url: query.get('gw'), getToken: () => query.get('token'), storage: 'memory' });
client.connect();

function App() {
  const state = useConnectionState();
  const send = useSend();
  const [jobId, setJobId] = useState(null);
  const [error, setError] = useState('');
  const job = useJob(jobId);
  useEffect(() => {
    if (state.current !== 'connected' || jobId) return;
    send('job:start:v1', { kind: 'research', params: { query: 'bundlers' } }).then(
      (ack) => setJobId(ack.jobId),
      (e) => setError(`${e.code}: ${e.message}`),
    );
  }, [state.current, jobId, send]);
  return h('p', { id: 'out' }, `${state.current} ${job.status ?? 'none'} ${error}`.trim());
}

createRoot(document.getElementById('root')).render(h(LivelineProvider, { client }, h(App)));

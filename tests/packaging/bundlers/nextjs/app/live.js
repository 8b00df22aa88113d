'use client';
// The client is created in a client component, once, and connects in an
// effect (so only in the browser). The gateway URL and the token come from
// the query string.
import { useEffect, useState } from 'react';
import { Liveline } from 'liveline-client';
import { LivelineProvider, useConnectionState, useJob, useSend } from 'liveline-client/react';

function Status() {
  const state = useConnectionState();
  const send = useSend();
  const [jobId, setJobId] = useState(null);
  const [error, setError] = useState('');
  const job = useJob(jobId);
  useEffect(() => {
    if (state.current !== 'connected' || jobId) return;
    send('job:start:v1', { kind: 'research', params: { query: 'next' } }).then(
      (ack) => setJobId(ack.jobId),
      (e) => setError(`${e.code}: ${e.message}`),
    );
  }, [state.current, jobId, send]);
  return <p id="out">{`${state.current} ${job.status ?? 'none'} ${error}`.trim()}</p>;
}

export default function Live() {
  const [client, setClient] = useState(null);
  useEffect(() => {
    const query = new URLSearchParams(window.location.search);
    const c = new Liveline({ url: query.get('gw'), getToken: () => query.get('token'), storage: 'memory' });
    c.connect();
    setClient(c);
    return () => c.dispose();
  }, []);
  if (!client) return <p id="out">loading</p>;
  return (
    <LivelineProvider client={client}>
      <Status />
    </LivelineProvider>
  );
}

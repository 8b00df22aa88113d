import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { init, Liveline } from 'liveline';
import { LivelineProvider } from 'liveline/react';
import { App } from './App';
import { getDevToken } from './token';
import './styles.css';

const root = createRoot(document.getElementById('root')!);

async function start() {
  await init();
  // Same origin as the page: the gateway serves this app (and `vite dev` proxies to it).
  const url = import.meta.env.VITE_LIVELINE_URL || window.location.origin;
  const client = new Liveline({ url, getToken: getDevToken });
  // One client for the page's lifetime; connecting here rather than in an effect
  // keeps StrictMode's double mount from opening and closing a socket.
  client.connect();
  root.render(
    <StrictMode>
      <LivelineProvider client={client}>
        <App />
      </LivelineProvider>
    </StrictMode>,
  );
}

start().catch((err: unknown) => {
  console.error(err);
  const message = err instanceof Error ? err.message : String(err);
  root.render(
    <main className="page">
      <p className="error" role="alert">Liveline failed to start: {message}</p>
    </main>,
  );
});

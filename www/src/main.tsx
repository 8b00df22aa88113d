import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { init, Liveline } from 'liveline-client';
import { LivelineProvider } from 'liveline-client/react';
import { App } from './App';
import { StoresContext } from './stores';
import { demoUser, getDevToken } from './token';
import { TradeStore } from './trade';
import './styles.css';

const root = createRoot(document.getElementById('root')!);

async function start() {
  await init();
  // Same origin as the page: the gateway serves this app (and `vite dev` proxies to it).
  const url = import.meta.env.VITE_LIVELINE_URL || window.location.origin;
  const client = new Liveline({
    url,
    getToken: getDevToken,
    // One outbox per user, so a queued action never goes out under another user.
    storageKey: `liveline:outbox:${url}:${demoUser()}`,
  });
  // The trade store listens for the page's lifetime, before the socket opens,
  // so no order event is missed between connect and the first render. Jobs
  // are the SDK's (useJobs, useJob).
  const stores = { trade: new TradeStore(client) };
  stores.trade.attach();
  // One client for the page's lifetime; connecting here rather than in an effect
  // keeps StrictMode's double mount from opening and closing a socket.
  client.connect();
  root.render(
    <StrictMode>
      <LivelineProvider client={client}>
        <StoresContext.Provider value={stores}>
          <App />
        </StoresContext.Provider>
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

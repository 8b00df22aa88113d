import { useEffect, useSyncExternalStore } from 'react';
import { AnalyticsPanel } from './AnalyticsPanel';
import { ConnectionBadge } from './ConnectionBadge';
import { ResearchPanel } from './ResearchPanel';
import { TradePanel } from './TradePanel';
import { demoUser } from './token';

const MODES = ['research', 'trade', 'analytics'] as const;
type Mode = (typeof MODES)[number];

function currentMode(): Mode {
  const h = window.location.hash.replace(/^#\/?/, '');
  return (MODES as readonly string[]).includes(h) ? (h as Mode) : 'research';
}
const subscribeHash = (fn: () => void) => {
  window.addEventListener('hashchange', fn);
  return () => window.removeEventListener('hashchange', fn);
};

export function App() {
  const mode = useSyncExternalStore(subscribeHash, currentMode, currentMode);
  useEffect(() => {
    document.title = `Liveline · ${mode}`;
  }, [mode]);
  return (
    <main className="page">
      <header className="header">
        <h1>Liveline</h1>
        <nav className="tabs" aria-label="Mode">
          {MODES.map((m) => (
            <a key={m} href={`#${m}`} className={m === mode ? 'tab active' : 'tab'} data-testid={`tab-${m}`} aria-current={m === mode ? 'page' : undefined}>
              {m[0].toUpperCase() + m.slice(1)}
            </a>
          ))}
        </nav>
        <span className="user">{demoUser()}</span>
      </header>
      <ConnectionBadge />
      {mode === 'research' && <ResearchPanel />}
      {mode === 'trade' && <TradePanel />}
      {mode === 'analytics' && <AnalyticsPanel />}
    </main>
  );
}

import { ConnectionBadge } from './ConnectionBadge';
import { ResearchPanel } from './ResearchPanel';

export function App() {
  return (
    <main className="page">
      <header className="header">
        <h1>Liveline</h1>
        <ConnectionBadge />
      </header>
      <ResearchPanel />
    </main>
  );
}

// A server component: it renders the client component, which imports
// liveline-client. Importing the package during server rendering must
// neither throw nor fetch.
import Live from './live';

export default function Page() {
  return <Live />;
}

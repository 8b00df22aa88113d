import { createContext, useContext } from 'react';
import type { TradeStore } from './trade';

export interface Stores {
  trade: TradeStore;
}

export const StoresContext = createContext<Stores | null>(null);

export function useStores(): Stores {
  const s = useContext(StoresContext);
  if (!s) throw new Error('StoresContext missing');
  return s;
}

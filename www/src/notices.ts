// Short notices under the connection status: a resume recovered missed events,
// or a gap forced a reload from the snapshot. Dismissed by a local timer (no I/O).
import { useSyncExternalStore } from 'react';

export type NoticeKind = 'recovered' | 'reloaded' | 'info';
export interface Notice {
  id: number;
  kind: NoticeKind;
  text: string;
}

const SHOW_MS = 8000;
let notices: Notice[] = [];
let nextId = 1;
const listeners = new Set<() => void>();

function emit() {
  for (const fn of [...listeners]) fn();
}

export function notify(kind: NoticeKind, text: string) {
  const id = nextId++;
  // The same text again refreshes the existing notice instead of stacking.
  notices = [...notices.filter((n) => n.text !== text), { id, kind, text }].slice(-4);
  emit();
  setTimeout(() => {
    notices = notices.filter((n) => n.id !== id);
    emit();
  }, SHOW_MS);
}

const subscribe = (fn: () => void) => {
  listeners.add(fn);
  return () => listeners.delete(fn);
};
const get = () => notices;

export function useNotices(): Notice[] {
  return useSyncExternalStore(subscribe, get, get);
}

// Notices under the connection status: what happened to the connection, in
// words a user understands. Dismissed by a local timer (no I/O); the list
// scrolls rather than dropping any.
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

/** Shows a notice for a few seconds; returns its id (for `update`). */
export function notify(kind: NoticeKind, text: string): number {
  const id = nextId++;
  notices = [...notices, { id, kind, text }];
  emit();
  setTimeout(() => {
    notices = notices.filter((n) => n.id !== id);
    emit();
  }, SHOW_MS);
  return id;
}

/** Rewrites a notice still shown (a gap found after "Reconnected"); false once it is gone. */
export function update(id: number, kind: NoticeKind, text: string): boolean {
  if (!notices.some((n) => n.id === id)) return false;
  notices = notices.map((n) => (n.id === id ? { id, kind, text } : n));
  emit();
  return true;
}

const subscribe = (fn: () => void) => {
  listeners.add(fn);
  return () => listeners.delete(fn);
};
const get = () => notices;

export function useNotices(): Notice[] {
  return useSyncExternalStore(subscribe, get, get);
}

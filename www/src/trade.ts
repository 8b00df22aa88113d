// Orders placed from this page: each is a job of the demo's kind `order`,
// kept live by the `trade:order:v1` events on its stream `job:{orderId}`. An
// order placed offline waits in the SDK's outbox (shown as queued) and goes
// out once when the connection returns.
import type { Envelope, JobState, Liveline, OrderState, TradeOrder } from 'liveline-client';
import { useSyncExternalStore } from 'react';

export type Side = 'buy' | 'sell';
export interface OrderView {
  key: string;
  orderId: string | null;
  symbol: string;
  side: Side;
  qty: number;
  price: number | null;
  filledQty: number;
  status: 'queued' | 'sending' | OrderState | 'error';
  error: string | null;
  /** `trade:order:v1` events seen with status filled (exactly one expected). */
  filledEvents: number;
  events: number;
  placedAt: number;
  cancelling: boolean;
}

const FINAL = new Set(['filled', 'rejected', 'cancelled']);
let localSeq = 0;

export class TradeStore {
  private orders = new Map<string, OrderView>(); // key -> order
  private byId = new Map<string, string>(); // orderId -> key
  private seen = new Map<string, [string, number]>(); // stream -> (epoch, seq)
  private listeners = new Set<() => void>();
  private list: OrderView[] = [];

  constructor(private client: Liveline) {}

  attach(): () => void {
    const offs = [
      this.client.on('trade:order:v1', (env) => this.onOrder(env)),
      this.client.on('job:status:v1', (env) => this.onJobStatus(env)),
    ];
    return () => offs.forEach((off) => off());
  }

  place(order: { symbol: string; side: Side; qty: number; price?: number }) {
    const key = `local-${Date.now()}-${localSeq++}`;
    const connected = this.client.getSnapshot().current === 'connected';
    this.put({
      key,
      orderId: null,
      symbol: order.symbol,
      side: order.side,
      qty: order.qty,
      price: order.price ?? null,
      filledQty: 0,
      status: connected ? 'sending' : 'queued',
      error: null,
      filledEvents: 0,
      events: 0,
      placedAt: Date.now(),
      cancelling: false,
    });
    this.client.send('job:start:v1', { kind: 'order', params: order }).then(
      ({ jobId }) => this.bind(key, String(jobId)),
      (err: unknown) => this.update(key, { status: 'error', error: errText(err) }),
    );
  }

  cancel(orderId: string) {
    const key = this.byId.get(orderId);
    if (!key) return;
    this.update(key, { cancelling: true });
    this.client.send('job:cancel:v1', { jobId: orderId }).then(
      ({ status }) => {
        const o = this.orders.get(key);
        if (o && !FINAL.has(o.status) && status === 'cancelled') this.update(key, { status, cancelling: false });
        else this.update(key, { cancelling: false });
      },
      (err: unknown) => this.update(key, { cancelling: false, error: errText(err) }),
    );
  }

  subscribe = (fn: () => void) => {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  };
  getList = () => this.list;

  // --- internals ---------------------------------------------------------

  private emit() {
    this.list = [...this.orders.values()].sort((a, b) => b.placedAt - a.placedAt);
    for (const fn of [...this.listeners]) fn();
  }

  private put(o: OrderView) {
    this.orders.set(o.key, o);
    if (o.orderId) this.byId.set(o.orderId, o.key);
    this.emit();
  }

  private update(key: string, p: Partial<OrderView>) {
    const o = this.orders.get(key);
    if (o) this.put({ ...o, ...p });
  }

  /** The ack named the order: merge with events that may have come first. */
  private bind(key: string, orderId: string) {
    const mine = this.orders.get(key);
    if (!mine) return;
    const earlier = this.byId.get(orderId);
    if (earlier && earlier !== key) {
      const ev = this.orders.get(earlier)!;
      this.orders.delete(earlier);
      this.put({ ...ev, key, placedAt: mine.placedAt, price: mine.price ?? ev.price });
      return;
    }
    const status = mine.status === 'queued' || mine.status === 'sending' ? 'accepted' : mine.status;
    this.put({ ...mine, orderId, status });
  }

  private onOrder(env: Envelope<TradeOrder>) {
    const d = env?.data;
    if (!d || d.orderId == null) return;
    const last = this.seen.get(env.stream);
    if (last && last[0] === env.epoch && env.seq <= last[1]) return; // already applied
    this.seen.set(env.stream, [env.epoch, env.seq]);
    const orderId = String(d.orderId);
    let key = this.byId.get(orderId);
    if (!key) {
      // An order this page did not place (another tab, or one restored from
      // the outbox after a reload): listed from its events.
      key = `order-${orderId}`;
      this.put({
        key,
        orderId,
        symbol: d.symbol,
        side: d.side,
        qty: d.qty,
        price: d.price ?? null,
        filledQty: 0,
        status: 'accepted',
        error: null,
        filledEvents: 0,
        events: 0,
        placedAt: Date.now(),
        cancelling: false,
      });
    }
    const o = this.orders.get(key)!;
    this.put({
      ...o,
      symbol: d.symbol ?? o.symbol,
      side: d.side ?? o.side,
      qty: typeof d.qty === 'number' ? d.qty : o.qty,
      status: FINAL.has(o.status) && !FINAL.has(d.status) ? o.status : d.status,
      filledQty: Math.max(o.filledQty, Number(d.filledQty ?? 0)),
      price: typeof d.price === 'number' ? d.price : o.price,
      events: o.events + 1,
      filledEvents: o.filledEvents + (d.status === 'filled' ? 1 : 0),
    });
  }

  /** A cancel (or the order's end) shows in its job status: `cancelled` is the order's state too. */
  private onJobStatus(env: Envelope<{ jobId?: unknown; status?: JobState }>) {
    const key = this.byId.get(String(env?.data?.jobId));
    const o = key ? this.orders.get(key) : undefined;
    if (key && o && env.data.status === 'cancelled' && !FINAL.has(o.status)) {
      this.update(key, { status: 'cancelled', cancelling: false });
    }
  }
}

function errText(err: unknown): string {
  const code = (err as { code?: string })?.code;
  const message = err instanceof Error ? err.message : String(err);
  return code ? `${code}: ${message}` : message;
}

export function useOrders(store: TradeStore): OrderView[] {
  return useSyncExternalStore(store.subscribe, store.getList, store.getList);
}

import { useState, type FormEvent } from 'react';
import type { MarketTick } from 'liveline-client';
import { useConnectionState, useTopic } from 'liveline-client/react';
import { useOrders, type Side } from './trade';
import { useStores } from './stores';

export const SYMBOLS = ['BTC-USD', 'ETH-USD', 'SOL-USD'] as const;

export function TradePanel() {
  return (
    <section className="panel">
      <h2>Trade</h2>
      <div className="tickers" data-testid="tickers">
        {SYMBOLS.map((s) => (
          <Ticker key={s} symbol={s} />
        ))}
      </div>
      <OrderForm />
      <Orders />
    </section>
  );
}

function Ticker({ symbol }: { symbol: string }) {
  const topic = useTopic<MarketTick>(`market:${symbol}`);
  const price = topic.data?.price;
  const [prev, setPrev] = useState<{ price: number | undefined; dir: 'up' | 'down' | '' }>({ price, dir: '' });
  if (price !== prev.price) {
    // Derived during render (no effect): the direction of the last move.
    setPrev({ price, dir: prev.price == null || price == null ? '' : price >= prev.price ? 'up' : 'down' });
  }
  return (
    <div
      className={`ticker ticker-${prev.dir}`}
      data-testid="ticker"
      data-symbol={symbol}
      data-subscribed={topic.subscribed}
      data-seq={topic.envelope?.seq ?? 0}
    >
      <div className="ticker-symbol">{symbol}</div>
      <div className="ticker-price" data-testid="ticker-price">
        {price != null ? formatPrice(price) : '—'}
      </div>
      <div className="ticker-state">
        {topic.error ? `${topic.error.code}` : topic.subscribed ? (price != null ? 'live' : 'waiting for ticks') : 'subscribing…'}
      </div>
    </div>
  );
}

function OrderForm() {
  const { trade } = useStores();
  const conn = useConnectionState();
  const [symbol, setSymbol] = useState<string>(SYMBOLS[0]);
  const [side, setSide] = useState<Side>('buy');
  const [qty, setQty] = useState('1');
  const [price, setPrice] = useState('');

  function submit(e: FormEvent) {
    e.preventDefault();
    const q = Number(qty);
    if (!(q > 0)) return;
    const p = price.trim() === '' ? undefined : Number(price);
    trade.place({ symbol, side, qty: q, ...(p != null && p > 0 ? { price: p } : {}) });
  }

  return (
    <form className="order-form" onSubmit={submit} data-testid="order-form">
      <select aria-label="Symbol" data-testid="order-symbol" value={symbol} onChange={(e) => setSymbol(e.target.value)}>
        {SYMBOLS.map((s) => (
          <option key={s}>{s}</option>
        ))}
      </select>
      <select aria-label="Side" data-testid="order-side" value={side} onChange={(e) => setSide(e.target.value as Side)}>
        <option value="buy">Buy</option>
        <option value="sell">Sell</option>
      </select>
      <input aria-label="Quantity" data-testid="order-qty" inputMode="decimal" value={qty} onChange={(e) => setQty(e.target.value)} />
      <input
        aria-label="Limit price (empty for market)"
        data-testid="order-price"
        placeholder="market"
        inputMode="decimal"
        value={price}
        onChange={(e) => setPrice(e.target.value)}
      />
      <button type="submit" data-testid="place-order">
        {conn.current === 'connected' ? 'Place order' : 'Queue order'}
      </button>
    </form>
  );
}

const LABEL: Record<string, string> = {
  queued: 'queued (offline)',
  sending: 'sending…',
  accepted: 'accepted',
  partially_filled: 'partially filled',
  filled: 'filled',
  rejected: 'rejected',
  cancelled: 'cancelled',
  error: 'error',
};

function Orders() {
  const { trade } = useStores();
  const orders = useOrders(trade);
  if (orders.length === 0) return <p className="hint">No orders yet.</p>;
  return (
    <div className="orders-wrap">
      <table className="orders" data-testid="orders">
        <colgroup>
          <col className="col-order" />
          <col />
          <col />
          <col />
          <col />
          <col />
          <col className="col-action" />
        </colgroup>
        <thead>
          <tr>
            <th>Order</th>
            <th>Side</th>
            <th>Qty</th>
            <th>Filled</th>
            <th>Price</th>
            <th>Status</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {orders.map((o) => (
            <tr
              key={o.key}
              data-testid="order"
              data-order-id={o.orderId ?? ''}
              data-status={o.status}
              data-filled-events={o.filledEvents}
              data-events={o.events}
            >
              <td>
                {o.symbol} <code className="job-id">{o.orderId ? o.orderId.slice(0, 8) : '—'}</code>
              </td>
              <td className={`side-${o.side}`}>{o.side}</td>
              <td>{o.qty}</td>
              <td>{o.filledQty}</td>
              <td>{o.price != null ? formatPrice(o.price) : 'market'}</td>
              <td>
                <span className={`order-status order-${o.status}`} data-testid="order-status">
                  {LABEL[o.status] ?? o.status}
                </span>
                {o.error && <span className="error"> {o.error}</span>}
              </td>
              <td>
                {o.orderId && (o.status === 'accepted' || o.status === 'partially_filled') && (
                  <button type="button" data-testid="cancel-order" disabled={o.cancelling} onClick={() => trade.cancel(o.orderId!)}>
                    Cancel
                  </button>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function formatPrice(p: number) {
  return p.toLocaleString('en-US', { minimumFractionDigits: 2, maximumFractionDigits: p < 10 ? 4 : 2 });
}

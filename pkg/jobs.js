// `liveline-client/jobs`: one job's whole state, rebuilt from the gateway's
// history on first use and after a reload, then followed live, with nothing
// missed or applied twice. `useJob` (liveline-client/react) is built on it.
// A module of its own so the main entry stays within its size budget; the
// store lives on the client object, so this module and the React subpath
// share it even when a bundler includes both.

const JOB_EVENTS = new Set(['job:status:v1', 'job:chunk:v1', 'job:result:v1', 'job:error:v1']);
/** Jobs kept at most; past it, those nobody watches are forgotten (oldest first). */
const MAX_JOBS = 200;

const clamp01 = (x) => (x < 0 ? 0 : x > 1 ? 1 : x);

/** The gateway's REST base for a client URL (`ws(s)://` becomes `http(s)://`). */
const httpBase = (url) => url.replace(/^ws(s?):\/\//, 'http$1://').replace(/\/+$/, '');

/**
 * One job's state, folded from its stream's events in seq order: every
 * event is kept by seq, so a duplicate changes nothing and a late one (the
 * history read after a reload, a replay) is put in its place. Only the run
 * of events without a hole is folded: an event after a hole (a live one that
 * came before the history read) waits until the hole is filled, so the state
 * shown never skips text it shows later.
 */
class JobEntry {
  constructor(id) {
    this.id = id;
    this.epoch = null;
    this.events = new Map(); // seq -> [name, data]
    this.from = 1; // the first seq folded: 1, or the first one the history still has
    this.seq = 0; // the last seq folded
    this.base = null; // the REST snapshot, when the history no longer reaches seq 1
    this.listeners = new Set();
    this.loading = false;
    this.loaded = false;
    this.gone = false;
    this.state = null;
    this.chunks = new Map(); // index -> text
    this.maxIndex = -1;
    this.refold();
  }

  /** Adds one event; false when its seq was there already. */
  add(seq, name, data) {
    if (this.events.has(seq)) return false;
    this.events.set(seq, [name, data]);
    if (seq < this.seq) this.refold();
    else this.advance();
    return true;
  }

  /** Folds the events that continue the folded run. */
  advance() {
    while (this.events.has(this.seq + 1)) this.apply(...this.events.get(++this.seq));
  }

  /** Starts over from the snapshot (or nothing) and folds from `from` on. */
  refold() {
    const b = this.base;
    this.state = { status: b?.status ?? null, progress: b?.progress ?? 0, message: b?.message ?? null, text: '', result: null, error: null };
    this.chunks = new Map();
    this.maxIndex = -1;
    this.seq = this.from - 1;
    this.advance();
  }

  apply(name, d) {
    const s = this.state;
    if (name === 'job:status:v1') {
      s.status = d.status ?? s.status;
      s.progress = d.status === 'completed' ? 1 : typeof d.progress === 'number' ? clamp01(d.progress) : s.progress;
      s.message = d.message ?? s.message;
    } else if (name === 'job:chunk:v1') {
      const index = Number(d.index);
      if (this.chunks.has(index)) return;
      const text = d.text == null ? '' : String(d.text);
      this.chunks.set(index, text);
      if (index > this.maxIndex) {
        this.maxIndex = index;
        s.text += text;
      } else {
        s.text = [...this.chunks.keys()].sort((x, y) => x - y).map((i) => this.chunks.get(i)).join('');
      }
    } else if (name === 'job:result:v1') {
      s.result = d.result ?? null;
    } else if (name === 'job:error:v1') {
      s.error = { code: d.code ?? 'unknown', message: d.message ?? '' };
    }
  }

  /** What `job(id).get()` returns: the same object until something changes. */
  view() {
    if (!this.frozen) {
      this.frozen = Object.freeze({
        jobId: this.id,
        ...this.state,
        chunks: this.chunks.size,
        seq: this.seq,
        loading: this.loading,
        gone: this.gone,
        complete: this.base === null && this.loaded,
        partial: this.base !== null,
      });
    }
    return this.frozen;
  }

  changed() {
    this.frozen = null;
    for (const fn of [...this.listeners]) fn();
  }
}

/**
 * Every watched job's state for one client. Each job event from a Liveline
 * gateway is recorded while any job is watched; a watched job reads its
 * history over REST (`GET /api/v1/jobs/{id}/events`) on first use, after a
 * reload, when its stream's history was lost, and after being unwatched.
 */
class Jobs {
  constructor(client) {
    this.client = client;
    this.jobs = new Map(); // id -> JobEntry
    this.watched = 0;
    this.offs = [];
  }

  entry(id) {
    let e = this.jobs.get(id);
    if (e) return e;
    e = new JobEntry(id);
    this.jobs.set(id, e);
    if (this.jobs.size > MAX_JOBS) {
      for (const [key, old] of this.jobs) {
        if (this.jobs.size <= MAX_JOBS) break;
        if (old.listeners.size === 0 && key !== id) this.jobs.delete(key);
      }
    }
    return e;
  }

  /** Listens to the client while any job is watched. */
  watch() {
    if (this.watched++ > 0) return;
    const c = this.client;
    this.offs = [
      ...[...JOB_EVENTS].map((name) => c.on(name, (env) => this.record(name, env))),
      c.on('stream:recovered:v1', (r) => this.recovered(r)),
      // The gateway said who it is (after every connect): read what watched jobs miss.
      c.on(Symbol.for('liveline.server'), () => {
        for (const e of this.jobs.values()) if (e.listeners.size > 0) this.load(e);
      }),
    ];
  }

  unwatch() {
    if (--this.watched > 0) return;
    for (const off of this.offs.splice(0)) off();
    // Unwatched, a job may miss events: read its history again when watched again.
    for (const e of this.jobs.values()) e.loaded = false;
  }

  /** A job event from the gateway. */
  record(name, env) {
    const id = env?.data?.jobId;
    if (this.client.server !== 'liveline' || typeof id !== 'string' || typeof env.seq !== 'number') return;
    const e = this.entry(id);
    if (e.epoch !== null && env.epoch !== e.epoch) {
      // Another epoch: the history we hold is from a stream that was lost.
      this.reset(e);
    }
    e.epoch = env.epoch;
    if (e.add(env.seq, name, env.data)) e.changed();
  }

  /** `stream:recovered:v1`: history lost for a job we follow means reading it again. */
  recovered(r) {
    const id = typeof r?.stream === 'string' && r.stream.startsWith('job:') ? r.stream.slice(4) : null;
    const e = id && this.jobs.get(id);
    if (e && r.recovered === false && r.epoch !== e.epoch) {
      this.reset(e);
      e.changed();
    }
  }

  reset(e) {
    e.events.clear();
    e.from = 1;
    e.base = null;
    e.loaded = false;
    e.refold();
    if (e.listeners.size > 0) this.load(e);
  }

  handle(id) {
    const key = String(id);
    const live = () => this.jobs.get(key) ?? this.entry(key);
    return {
      jobId: key,
      get: () => live().view(),
      subscribe: (fn) => {
        const e = live();
        e.listeners.add(fn);
        this.watch();
        this.load(e);
        let done = false;
        return () => {
          if (done) return;
          done = true;
          e.listeners.delete(fn);
          this.unwatch();
        };
      },
    };
  }

  /** Reads the job's history (and, when it no longer starts at seq 1, its snapshot) once. */
  async load(e) {
    if (e.loading || e.loaded || e.gone || this.client.server !== 'liveline') return;
    e.loading = true;
    e.changed();
    try {
      const path = `/api/v1/jobs/${encodeURIComponent(e.id)}`;
      const history = await rest(this.client, `${path}/events?after=0`);
      const snapshot = history && !history.complete ? await rest(this.client, path) : null;
      if (!history || (!history.complete && !snapshot)) {
        e.gone = true;
        return;
      }
      if (e.epoch !== null && e.epoch !== history.epoch) {
        // What we recorded belongs to an older epoch.
        e.events.clear();
      }
      e.epoch = history.epoch;
      e.base = snapshot ? { status: snapshot.status, progress: snapshot.progress, message: snapshot.message } : null;
      for (const { event, envelope } of history.events) {
        if (JOB_EVENTS.has(event) && envelope?.epoch === e.epoch) e.events.set(envelope.seq, [event, envelope.data]);
      }
      // A history that no longer reaches seq 1 is folded from its first event.
      e.from = snapshot ? Math.min(...e.events.keys(), (snapshot.seq ?? 0) + 1) : 1;
      e.refold();
      e.loaded = true;
    } catch {
      // The gateway is unreachable or refused: tried again on the next connect.
    } finally {
      e.loading = false;
      e.changed();
    }
  }
}

/** The REST answer of `path` with a token from the client, or null on 404. */
async function rest(client, path) {
  const headers = { authorization: `Bearer ${await client._getToken()}` };
  const res = await fetch(`${httpBase(client._opts.url)}${path}`, { headers });
  if (res.status === 404) return null;
  if (!res.ok) throw new Error(`${path}: ${res.status}`);
  return res.json();
}

/** Jobs a list keeps at most (the newest first). */
const MAX_LISTED = 100;

/**
 * The user's jobs of some kinds, newest first: read over REST
 * (`GET /api/v1/jobs`) when first watched and after every connect, then kept
 * live by `job:status:v1` events. A status event names no kind, so a job the
 * list has not seen yet waits for `startJob` to add it (its latest status is
 * kept for that moment), or for the next read (a job started in another tab).
 */
class JobList {
  constructor(client, kinds) {
    this.client = client;
    this.kinds = kinds; // null: every kind
    this.rows = new Map(); // id -> row
    this.others = new Set(); // ids of jobs of other kinds
    this.early = new Map(); // id -> the latest status of a job not listed yet
    this.listeners = new Set();
    this.offs = [];
    this.state = Object.freeze({ jobs: Object.freeze([]), loaded: false, error: null });
    // What `jobsOf` hands out: the same object every time, so React's
    // useSyncExternalStore never resubscribes.
    this.handle = Object.freeze({ get: () => this.state, subscribe: (fn) => this.subscribe(fn) });
  }

  wants(kind) {
    return this.kinds === null || this.kinds.includes(kind);
  }

  subscribe(fn) {
    this.listeners.add(fn);
    if (this.listeners.size === 1) {
      const c = this.client;
      this.offs = [
        c.on('job:status:v1', (env) => this.status(env?.data)),
        c.on(Symbol.for('liveline.server'), () => this.load()),
      ];
      this.load();
    }
    return () => {
      this.listeners.delete(fn);
      if (this.listeners.size === 0) for (const off of this.offs.splice(0)) off();
    };
  }

  /** Adds or updates a job from its record. */
  put(r) {
    if (!this.wants(r.kind)) {
      this.others.add(r.id);
      return;
    }
    const old = this.rows.get(r.id) ?? this.early.get(r.id);
    this.early.delete(r.id);
    this.rows.set(r.id, {
      id: r.id,
      kind: r.kind,
      params: r.params ?? null,
      // Live events seen before the record came count over it.
      status: old?.status ?? r.status ?? null,
      progress: old?.status ? old.progress : r.status === 'completed' ? 1 : (r.progress ?? 0),
      message: old?.message ?? r.message ?? null,
      createdAt: r.createdAt ?? old?.createdAt ?? Date.now(),
    });
  }

  status(d) {
    const id = d?.jobId;
    if (typeof id !== 'string' || this.others.has(id) || this.client.server !== 'liveline') return;
    const row = this.rows.get(id);
    if (!row) {
      // Not listed (yet): kept for `startJob` or the next read, a few at most.
      this.early.delete(id);
      this.early.set(id, { status: d.status ?? null, progress: d.progress ?? 0, message: d.message ?? null });
      if (this.early.size > MAX_LISTED) this.early.delete(this.early.keys().next().value);
      return;
    }
    this.rows.set(id, {
      ...row,
      status: d.status ?? row.status,
      progress: d.status === 'completed' ? 1 : typeof d.progress === 'number' ? clamp01(d.progress) : row.progress,
      message: d.message ?? row.message,
    });
    this.changed();
  }

  async load() {
    if (this.client.server !== 'liveline') return;
    try {
      const body = await rest(this.client, `/api/v1/jobs?limit=${MAX_LISTED}`);
      for (const r of body?.jobs ?? []) this.put(r);
      this.changed({ loaded: true, error: null });
    } catch (e) {
      this.changed({ loaded: true, error: e instanceof Error ? e.message : String(e) });
    }
  }

  changed(patch) {
    const sorted = [...this.rows.values()].sort((a, b) => b.createdAt - a.createdAt);
    for (const r of sorted.slice(MAX_LISTED)) this.rows.delete(r.id);
    const jobs = sorted.slice(0, MAX_LISTED);
    this.state = Object.freeze({ ...this.state, ...patch, jobs: Object.freeze(jobs.map((r) => Object.freeze(r))) });
    for (const fn of [...this.listeners]) fn();
  }
}

/**
 * The user's jobs (of `kinds`, every kind when left out), newest first:
 * `get()` returns `{jobs, loaded, error}` (the same object until it
 * changes); `subscribe(fn)` reads the list over REST the first time and after
 * every connect, and keeps it live from status events. The same handle per
 * client and set of kinds.
 */
export function jobsOf(client, { kinds } = {}) {
  const key = kinds ? [...kinds].sort().join(',') : '*';
  const lists = (client[Symbol.for('liveline.jobLists')] ??= new Map());
  let list = lists.get(key);
  if (!list) lists.set(key, (list = new JobList(client, kinds ? [...kinds] : null)));
  return list.handle;
}

/** The client's job store, shared by every copy of this module. */
function storeOf(client) {
  const key = Symbol.for('liveline.jobs');
  return (client[key] ??= new Jobs(client));
}

/**
 * One job's whole state: `get()` returns `{jobId, status, progress, message,
 * text, chunks, result, error, seq, loading, gone, complete, partial}` (the
 * same object until it changes); `subscribe(fn)` calls `fn` on every change
 * and, the first time, reads the job's history.
 */
export function jobOf(client, jobId) {
  return storeOf(client).handle(jobId);
}

/** `fn(state)` now and on every change of the job's state; returns the remover. */
export function watchJob(client, jobId, fn) {
  const h = jobOf(client, jobId);
  const off = h.subscribe(() => fn(h.get()));
  fn(h.get());
  return off;
}

/**
 * Starts a job (`job:start:v1`) and resolves with its handle, which sees
 * every event from seq 1; the job joins the client's job lists of its kind.
 */
export async function startJob(client, kind, params) {
  const { jobId } = await client.send('job:start:v1', params === undefined ? { kind } : { kind, params });
  for (const list of client[Symbol.for('liveline.jobLists')]?.values() ?? []) {
    if (!list.rows.has(jobId)) {
      list.put({ id: jobId, kind, params: params ?? null, createdAt: Date.now() });
      list.changed();
    }
  }
  return jobOf(client, jobId);
}

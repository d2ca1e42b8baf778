// Watch API checker (issue #4): a seeded concurrent workload against one server, then a check
// of every watcher's stream against the MVCC history read back from the same server.
//
//   const report = await runWatchCheck(endpoint, { seed });
//   report.violations   // [] when every guarantee held
//
// The same code runs against real etcd (to validate the checker) and against concord.
//
// Workload (each loop draws from its own Prng, derived from the seed):
//  - writers: puts (small and 4-6 KB values, some empty), single-key deletes, range deletes
//    (ranges, prefixes, from-key), txns of several puts/deletes on one revision (overlapping
//    deletes included), on a small key space (40 keys) so every key changes many times; one
//    burst of 40 ~12 KB puts at 35% of the run;
//  - a compactor: from half the run on, Compact to a revision a little behind the head, now and
//    then (never past what the historian has read);
//  - watchers on several streams: single key, prefix, range, from-key, all keys; start revision
//    0, past (valid or compacted), 1, or future; prev_kv, NOPUT/NODELETE filters, fragment,
//    explicit or server-chosen watch_id; 30% created before the writes, the rest during them;
//    ~15% canceled midway; three "bulk" watchers (all keys from 1, prev_kv, fragment) created
//    after the burst, whose catch-up is big enough to be fragmented;
//  - WatchProgressRequests on random streams during the writes, and one per stream at the end
//    (which must be answered with a revision >= the final head).
//
// History: a "historian" reads Range(all keys, revision = r) for every revision r as it
// appears (compaction never passes what it has read), so the state at every revision is known
// from KV reads alone, independently of Watch. The writes' own log (every response's revision,
// the ops of the branch that ran) must agree with it: exactly one mutating write per revision,
// and the state at r is the state at r-1 with that write's ops applied. The events of revision
// r (in sub-revision order: op order, range deletes in key order) come from that replay, their
// kvs from the snapshots.
//
// Per watcher (see checkWatcher): created response; order (by revision and sub-order);
// duplicates; events never split across responses unless fragmented; kv and prev_kv equal to
// the history; filters and range respected; nothing before the start revision (for start 0:
// nothing at or before the created response's header revision); no gaps (all events up to the
// final head for a live watcher, a gapless prefix for a canceled one); nothing after a cancel;
// compaction: a start below a compaction acknowledged before the create is canceled with
// compact_revision and gets no events, and any compaction cancel names an issued compaction
// above the start and above every delivered event; progress: a WatchProgressRequest answer with
// header revision R on a stream means every event <= R of that stream's watchers (created
// before it, not being canceled) had been delivered before it.
//
// Also: created responses come in create order (explicit watch_ids must match); a start-0
// watcher's created header is not below a revision acknowledged before the create was sent;
// a response's header revision is not below its events'; fragment=true only for fragment
// watchers, and fragments complete; no unknown watch_ids; cancel requests answered; no server
// cancel without compact_revision; no stream error; no failed write or compaction.
//
// One allowance, and it is etcd 3.4's behavior: etcd fills prev_kv by reading revision
// mod_revision - 1 when it sends the event, so prev_kv is absent when that revision was
// compacted by then. An absent prev_kv is accepted only if a compaction above
// mod_revision - 1 had been sent before the event was received (counted in
// prevKvOmittedCompacted).

import * as grpc from '@grpc/grpc-js';
import { Prng } from '../../src/util/prng';
import { connect, num, openStream, unary, type ServiceClient } from './grpc_client';

// ------------------------------------------------------------------ options and report

export interface WatchCheckOptions {
  seed: number;
  /** How long the writers run (ms). */
  writeMs?: number;
  /** Total number of watchers (the reference all-keys watcher included). */
  watchers?: number;
  /** Watch streams (spread over `watchChannels` channels). */
  streams?: number;
  watchChannels?: number;
  /** Concurrent writer loops (spread over 3 KV channels). */
  writers?: number;
  /** Fraction of watchers created before the writes start. */
  preFraction?: number;
  /** Fraction of watchers canceled by the client midway. */
  cancelFraction?: number;
  /** How long to wait at the end for watchers to catch up (ms). */
  settleMs?: number;
  /** Progress line sink (t.diagnostic). */
  log?: (line: string) => void;
  /**
   * Fault injection, to test the checker itself: sees every response of stream `stream` before
   * the checker does and passes on what the checker should see (`deliver`, any number of times).
   */
  inject?: (stream: number, response: any, deliver: (response: any) => void) => void;
}

export interface Violation {
  kind: string;
  detail: string;
  /**
   * 'late' on a progress violation: every event the progress response came too early for was
   * delivered afterwards (or the watcher was canceled by compaction afterwards): the
   * progress answer overtook events, nothing was lost (etcd 3.4.23's known bug etcd-io/etcd#15220).
   */
  tag?: string;
}

export interface WatchCheckReport {
  seed: number;
  counts: Record<string, number>;
  violations: Violation[];
  byKind: Record<string, number>;
  /** Human-readable summary lines (counts, then the first violations of each kind). */
  summary(maxPerKind?: number): string[];
}

// ------------------------------------------------------------------ small utilities

class Rng {
  private readonly p: Prng;
  constructor(seed: number) {
    this.p = new Prng(seed);
  }
  int(n: number): number {
    return this.p.int(n);
  }
  /** Uniform integer in [lo, hi]. */
  between(lo: number, hi: number): number {
    return lo + this.p.int(hi - lo + 1);
  }
  chance(p: number): boolean {
    return this.p.nextU32() / 4294967296 < p;
  }
  pick<T>(a: readonly T[]): T {
    return a[this.p.int(a.length)] as T;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Keys are handled as latin1 strings: one char per byte, so `<` is etcd's byte order. */
const B = (s: string): Buffer => Buffer.from(s, 'latin1');
const S = (v: Uint8Array | null | undefined): string =>
  v ? Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('latin1') : '';
const show = (k: string): string => JSON.stringify(k);

/** Prefix range end as etcd computes it; '\0' (from-key) when the prefix is all 0xff. */
function prefixEndOf(p: string): string {
  const b = B(p);
  for (let i = b.length - 1; i >= 0; i--) {
    if ((b[i] as number) < 0xff) {
      b[i] = (b[i] as number) + 1;
      return b.subarray(0, i + 1).toString('latin1');
    }
  }
  return '\0';
}

/** [key, end): end null = the single key; end '\0' = every key >= key. */
interface KeyRange {
  key: string;
  end: string | null;
}

function inRange(r: KeyRange, k: string): boolean {
  if (r.end === null) return k === r.key;
  if (r.end === '\0') return k >= r.key;
  return k >= r.key && k < r.end;
}

function showRange(r: KeyRange): string {
  if (r.end === null) return show(r.key);
  if (r.end === '\0') return `[${show(r.key)}, +inf)`;
  return `[${show(r.key)}, ${show(r.end)})`;
}

// Key space: 3 groups of 12 plus 4 keys under 0xff (prefix end = from-key).
const GROUPS = ['a', 'b', 'c'];
const KEYS: string[] = [
  ...GROUPS.flatMap((g) => Array.from({ length: 12 }, (_, i) => g + String(i).padStart(2, '0'))),
  ...Array.from({ length: 4 }, (_, i) => '\xff' + String(i)),
].sort();
/** Watched but never written. */
const COLD_KEYS = ['a99', 'b', 'z', '\xff'];

const PUT = 0;
const DELETE = 1;
const NOPUT = 0;
const NODELETE = 1;

interface KV {
  key: string;
  create: number;
  mod: number;
  version: number;
  value: string;
  lease: number;
}

function kvOf(kv: { key: Uint8Array; create_revision: unknown; mod_revision: unknown; version: unknown; value: Uint8Array; lease: unknown }): KV {
  const n = (v: unknown): number => num(v as number);
  return { key: S(kv.key), create: n(kv.create_revision), mod: n(kv.mod_revision), version: n(kv.version), value: S(kv.value), lease: n(kv.lease) };
}

function kvEqual(a: KV, b: KV): boolean {
  return a.key === b.key && a.create === b.create && a.mod === b.mod && a.version === b.version && a.value === b.value && a.lease === b.lease;
}

function showKv(kv: KV | null | undefined): string {
  if (!kv) return 'none';
  const v = kv.value.length > 24 ? `${JSON.stringify(kv.value.slice(0, 24))}..(${kv.value.length} B)` : JSON.stringify(kv.value);
  return `{key ${show(kv.key)} create ${kv.create} mod ${kv.mod} ver ${kv.version} value ${v} lease ${kv.lease}}`;
}

// ------------------------------------------------------------------ records

type Op = { t: 'put'; key: string; value: string } | { t: 'del'; key: string; end: string | null };

interface WriteRec {
  kind: 'put' | 'del' | 'txn';
  ops: Op[]; // the ops that ran (for a txn: the branch taken)
  rev: number;
  mutating: boolean;
  error?: string;
}

interface CompactRec {
  rev: number;
  sentAt: number;
  ackAt: number; // Infinity until acknowledged (or if it failed)
  error?: string;
}

interface RecvEvent {
  rev: number;
  key: string;
  type: number;
  kv: KV;
  prev: KV | null;
  at: number;
  resp: number; // logical response number on the watcher
  afterCancel: boolean;
}

interface ProgressRec {
  at: number;
  rev: number;
  /** watch_id of the response (-1: the whole stream). */
  watchId: number;
  /** Watchers it speaks for, with how many events each had received before it. */
  watchers: { w: Watcher; count: number }[];
}

interface StreamRec {
  idx: number;
  call: grpc.ClientDuplexStream<any, any>;
  pending: Watcher[]; // create requests sent, created response not yet received (FIFO)
  byId: Map<number, Watcher>;
  frags: Map<number, { events: any[]; header: number }>; // fragments being assembled, by watch id
  progressSent: number;
  progress: ProgressRec[];
  end?: string;
  closing: boolean;
}

interface Watcher {
  n: number;
  stream: StreamRec;
  range: KeyRange;
  rangeKind: string;
  startReq: number;
  startKind: string;
  prevKv: boolean;
  filters: number[];
  fragment: boolean;
  explicitId?: number;
  pre: boolean;
  sentAt: number;
  /** Highest write revision acknowledged before the create was sent. */
  ackedAtSend: number;
  /** Highest compaction revision acknowledged before the create was sent. */
  compactAtSend: number;
  created?: { at: number; id: number; header: number; canceled: boolean; reason: string };
  events: RecvEvent[];
  responses: number;
  lastRespLastRev: number;
  cancelSentAt?: number;
  cancelResp?: { at: number; header: number };
  compactCancel?: { at: number; rev: number; header: number; events: number };
  otherCancel?: { at: number; reason: string };
  extraCancels: number;
  fragmentsSeen: number;
  /** Set by checkWatcher: events missing with etcd-io/etcd#17529's signature (ids rev:key). */
  skipped?: Set<string>;
}

function describeWatcher(w: Watcher): string {
  const parts = [
    `w${w.n}`,
    `stream ${w.stream.idx}`,
    `id ${w.created ? w.created.id : '?'}`,
    `${w.rangeKind} ${showRange(w.range)}`,
    `start ${w.startReq} (${w.startKind}${w.created && w.startReq === 0 ? `, created header ${w.created.header}` : ''})`,
  ];
  if (w.prevKv) parts.push('prev_kv');
  if (w.filters.includes(NOPUT)) parts.push('NOPUT');
  if (w.filters.includes(NODELETE)) parts.push('NODELETE');
  if (w.fragment) parts.push('fragment');
  if (w.pre) parts.push('pre-write');
  return parts.join(' ');
}

// ------------------------------------------------------------------ the run

export async function runWatchCheck(endpoint: string, opts: WatchCheckOptions): Promise<WatchCheckReport> {
  const seed = opts.seed >>> 0;
  const writeMs = opts.writeMs ?? 4000;
  const totalWatchers = opts.watchers ?? 200;
  const nStreams = opts.streams ?? 6;
  const nWatchChannels = opts.watchChannels ?? 3;
  const nWriters = opts.writers ?? 6;
  const preFraction = opts.preFraction ?? 0.3;
  const cancelFraction = opts.cancelFraction ?? 0.15;
  const settleMs = opts.settleMs ?? 5_000;
  const log = opts.log ?? ((): void => undefined);

  const violations: Violation[] = [];
  const violate = (kind: string, detail: string, tag?: string): void => {
    violations.push(tag === undefined ? { kind, detail } : { kind, detail, tag });
  };
  const counts: Record<string, number> = {};
  const count = (k: string, by = 1): void => {
    counts[k] = (counts[k] ?? 0) + by;
  };

  let tick = 0;
  const now = (): number => ++tick;

  const kvs = [0, 1, 2].map(() => connect('etcdserverpb.KV', endpoint));
  const watchClients = Array.from({ length: nWatchChannels }, () => connect('etcdserverpb.Watch', endpoint));
  const histKv = connect('etcdserverpb.KV', endpoint);

  // Shared run state.
  let head = 1; // highest write revision acknowledged
  let writersDone = false;
  const writes: WriteRec[] = [];
  const compactions: CompactRec[] = [];
  const snapshots = new Map<number, Map<string, KV>>();
  let historianDone = 0; // every revision <= this has been read
  let fatal: string | undefined;

  const maxCompactAckedBefore = (at: number): number => {
    let m = 0;
    for (const c of compactions) if (c.ackAt < at && c.rev > m) m = c.rev;
    return m;
  };
  const maxCompactSentBefore = (at: number): number => {
    let m = 0;
    for (const c of compactions) if (c.sentAt < at && c.rev > m) m = c.rev;
    return m;
  };

  // ---------------------------------------------------------------- watch streams

  const streams: StreamRec[] = [];
  const watchers: Watcher[] = [];

  const handleResponse = (st: StreamRec, m: any): void => {
    const at = now();
    const id = num(m.watch_id);
    const header = num(m.header?.revision);
    count('responses');
    if (m.created) {
      count('createdResponses');
      const w = st.pending.shift();
      if (!w) {
        violate('created', `stream ${st.idx}: created response (id ${id}) with no create request pending`);
        return;
      }
      w.created = { at, id, header, canceled: !!m.canceled, reason: String(m.cancel_reason ?? '') };
      if (w.explicitId !== undefined && id !== w.explicitId) {
        violate('created', `${describeWatcher(w)}: asked for watch_id ${w.explicitId}, created response says ${id} (responses out of order?)`);
      }
      if (m.canceled) {
        violate('created', `${describeWatcher(w)}: created and canceled at once: ${JSON.stringify(m.cancel_reason)}`);
        return;
      }
      if ((m.events?.length ?? 0) > 0) violate('created', `${describeWatcher(w)}: created response carries ${m.events.length} events`);
      const prev = st.byId.get(id);
      if (prev && !prev.cancelResp && !prev.compactCancel && !prev.otherCancel) {
        violate('created', `${describeWatcher(w)}: watch_id ${id} already belongs to live ${describeWatcher(prev)}`);
      }
      st.byId.set(id, w);
      if (w.startReq === 0 && header < w.ackedAtSend) {
        violate('created', `${describeWatcher(w)}: created header revision ${header} is below revision ${w.ackedAtSend}, acknowledged before the create was sent`);
      }
      return;
    }

    const evs: any[] = m.events ?? [];
    if (m.fragment || st.frags.has(id)) {
      // Assemble fragments: a response with fragment=true is continued by the next for this id.
      const w = st.byId.get(id);
      if (m.fragment) {
        count('fragments');
        if (w) w.fragmentsSeen++;
        if (w && !w.fragment) violate('fragment', `${describeWatcher(w)}: fragment=true on a watcher created without fragment`);
        if (m.canceled || m.compact_revision && num(m.compact_revision) !== 0) {
          violate('fragment', `stream ${st.idx} id ${id}: fragment=true on a cancel response`);
        }
        const f = st.frags.get(id) ?? { events: [], header };
        f.events.push(...evs);
        f.header = header;
        st.frags.set(id, f);
        return;
      }
      const f = st.frags.get(id)!;
      st.frags.delete(id);
      f.events.push(...evs);
      return handleLogical(st, m, id, header, f.events, at);
    }
    return handleLogical(st, m, id, header, evs, at);
  };

  const handleLogical = (st: StreamRec, m: any, id: number, header: number, evs: any[], at: number): void => {
    if (evs.length === 0 && !m.canceled) {
      // Progress notification (watch_id -1: every watcher of the stream).
      count('progressResponses');
      if (num(m.compact_revision) !== 0) violate('stream', `stream ${st.idx}: response id ${id} with compact_revision but not canceled`);
      const targets: Watcher[] = [];
      if (id === -1) {
        for (const w of st.byId.values()) targets.push(w);
      } else {
        const w = st.byId.get(id);
        if (!w) {
          violate('unknown_watch', `stream ${st.idx}: progress response for unknown watch_id ${id}`);
          return;
        }
        targets.push(w);
      }
      const rec: ProgressRec = { at, rev: header, watchId: id, watchers: [] };
      for (const w of targets) {
        if (w.cancelSentAt !== undefined || w.cancelResp || w.compactCancel || w.otherCancel) continue;
        rec.watchers.push({ w, count: w.events.length });
      }
      st.progress.push(rec);
      return;
    }
    const w = st.byId.get(id);
    if (!w) {
      violate('unknown_watch', `stream ${st.idx}: response (${evs.length} events, canceled ${!!m.canceled}) for watch_id ${id} with no created response before it`);
      return;
    }
    const closed = !!(w.cancelResp || w.compactCancel || w.otherCancel);
    if (evs.length > 0) {
      w.responses++;
      count('eventResponses');
      let maxRev = 0;
      const resp = w.responses;
      const first = num(evs[0].kv?.mod_revision);
      if (first === w.lastRespLastRev && first !== 0) {
        violate('split', `${describeWatcher(w)}: revision ${first} split across two responses`);
      }
      for (const e of evs) {
        const kv = e.kv ? kvOf(e.kv) : { key: '', create: 0, mod: 0, version: 0, value: '', lease: 0 };
        const ev: RecvEvent = {
          rev: kv.mod, key: kv.key, type: Number(e.type ?? 0), kv,
          prev: e.prev_kv ? kvOf(e.prev_kv) : null, at, resp, afterCancel: closed,
        };
        if (!e.kv) violate('kv', `${describeWatcher(w)}: event without kv`);
        w.events.push(ev);
        if (ev.rev > maxRev) maxRev = ev.rev;
      }
      w.lastRespLastRev = num(evs[evs.length - 1].kv?.mod_revision);
      count('events', evs.length);
      let bytes = 0;
      for (let i = w.events.length - evs.length; i < w.events.length; i++) {
        const e = w.events[i]!;
        bytes += 40 + e.key.length + e.kv.value.length + (e.prev ? 40 + e.prev.key.length + e.prev.value.length : 0);
      }
      counts.maxResponseEvents = Math.max(counts.maxResponseEvents ?? 0, evs.length);
      counts.maxResponseBytes = Math.max(counts.maxResponseBytes ?? 0, bytes);
      if (header < maxRev) violate('header', `${describeWatcher(w)}: response header revision ${header} below its event revision ${maxRev}`);
    }
    if (m.canceled) {
      const crev = num(m.compact_revision);
      if (crev !== 0) {
        if (w.compactCancel) {
          w.extraCancels++;
        } else {
          w.compactCancel = { at, rev: crev, header, events: w.events.length };
          count('compactionCanceled');
        }
      } else if (w.cancelSentAt !== undefined) {
        if (w.cancelResp) violate('cancel', `${describeWatcher(w)}: two cancel responses`);
        else w.cancelResp = { at, header };
      } else if (w.compactCancel) {
        w.extraCancels++;
      } else {
        w.otherCancel = { at, reason: String(m.cancel_reason ?? '') };
        violate('cancel', `${describeWatcher(w)}: canceled by the server without compact_revision and without a cancel request (reason ${JSON.stringify(m.cancel_reason)})`);
      }
    }
  };

  for (let i = 0; i < nStreams; i++) {
    const { call, reader } = openStream(watchClients[i % nWatchChannels]!, 'Watch');
    const st: StreamRec = {
      idx: i, call: call as any, pending: [], byId: new Map(), frags: new Map(), progressSent: 0, progress: [], closing: false,
    };
    streams.push(st);
    void (async () => {
      for (;;) {
        let m: any;
        try {
          m = await reader.next(3_600_000);
        } catch (err) {
          const e = reader.end;
          st.end = e?.kind === 'error' ? `${e.error.code} ${e.error.details}` : e?.kind ?? String(err);
          if (!st.closing) violate('stream', `stream ${i} ended during the run: ${st.end}`);
          return;
        }
        try {
          if (opts.inject) opts.inject(i, m, (x) => handleResponse(st, x));
          else handleResponse(st, m);
        } catch (err) {
          violate('checker', `stream ${i}: handler threw ${(err as Error).stack}`);
        }
      }
    })();
  }

  // ---------------------------------------------------------------- watcher specs

  const specRng = new Rng(seed ^ 0x5eed0001);
  let explicitNext = 1_000_000;

  const randomRange = (rng: Rng): { range: KeyRange; kind: string } => {
    const x = rng.int(100);
    if (x < 30) return { range: { key: rng.chance(0.08) ? rng.pick(COLD_KEYS) : rng.pick(KEYS), end: null }, kind: 'key' };
    if (x < 55) {
      const p = rng.pick(['a', 'b', 'c', 'a0', 'b1', 'c0', '\xff', 'a1', 'c11', 'z', '']);
      if (p === '') return { range: { key: '\0', end: '\0' }, kind: 'all' };
      return { range: { key: p, end: prefixEndOf(p) }, kind: 'prefix' };
    }
    if (x < 80) {
      let k1 = rng.pick(KEYS);
      let k2 = rng.chance(0.1) ? rng.pick(COLD_KEYS) : rng.pick(KEYS);
      if (k1 > k2) [k1, k2] = [k2, k1];
      if (k1 === k2) k2 = k1 + '\0';
      return { range: { key: k1, end: k2 }, kind: 'range' };
    }
    if (x < 92) return { range: { key: rng.pick(KEYS), end: '\0' }, kind: 'fromkey' };
    return { range: { key: '\0', end: '\0' }, kind: 'all' };
  };

  const makeWatcher = (rng: Rng, pre: boolean): Watcher => {
    const { range, kind } = randomRange(rng);
    let startReq = 0;
    let startKind = 'now';
    const compacted = maxCompactAckedBefore(tick + 1);
    const x = rng.int(100);
    if (pre) {
      if (x < 55) { startReq = 0; startKind = 'now'; } else { startReq = 1; startKind = 'from 1'; }
    } else if (x < 25) {
      startReq = 0; startKind = 'now';
    } else if (x < 60) {
      startReq = rng.between(Math.max(1, compacted), Math.max(1, head)); startKind = 'past';
    } else if (x < 72 && compacted > 1) {
      startReq = rng.between(1, compacted - 1); startKind = 'compacted';
    } else if (x < 80) {
      startReq = 1; startKind = 'from 1';
    } else if (x < 90) {
      startReq = head + rng.between(1, 60); startKind = 'future';
    } else {
      startReq = Math.max(1, head - rng.between(0, 5)); startKind = 'recent';
    }
    const filters: number[] = [];
    const f = rng.int(100);
    if (f < 12) filters.push(NOPUT);
    else if (f < 24) filters.push(NODELETE);
    else if (f < 27) filters.push(NOPUT, NODELETE);
    const w: Watcher = {
      n: watchers.length, stream: streams[rng.int(streams.length)]!, range, rangeKind: kind, startReq, startKind,
      prevKv: rng.chance(0.5), filters, fragment: rng.chance(0.3),
      explicitId: rng.chance(0.3) ? explicitNext++ : undefined,
      pre, sentAt: 0, ackedAtSend: 0, compactAtSend: 0, events: [], responses: 0, lastRespLastRev: -1,
      extraCancels: 0, fragmentsSeen: 0,
    };
    watchers.push(w);
    return w;
  };

  const sendCreate = (w: Watcher): void => {
    w.sentAt = now();
    w.ackedAtSend = head;
    w.compactAtSend = maxCompactAckedBefore(w.sentAt);
    w.stream.pending.push(w);
    const req: any = {
      key: B(w.range.key),
      start_revision: w.startReq,
      prev_kv: w.prevKv,
      filters: w.filters,
      fragment: w.fragment,
    };
    if (w.range.end !== null) req.range_end = B(w.range.end);
    if (w.explicitId !== undefined) req.watch_id = w.explicitId;
    w.stream.call.write({ create_request: req });
  };

  const sendCancel = (w: Watcher): void => {
    w.cancelSentAt = now();
    w.stream.call.write({ cancel_request: { watch_id: w.created!.id } });
    count('cancelRequests');
  };

  const sendProgress = (st: StreamRec): void => {
    st.progressSent++;
    count('progressRequests');
    st.call.write({ progress_request: {} });
  };

  try {
    // The reference watcher: every key, from revision 1, prev_kv, on stream 0.
    const reference: Watcher = {
      n: 0, stream: streams[0]!, range: { key: '\0', end: '\0' }, rangeKind: 'all (reference)', startReq: 1, startKind: 'from 1',
      prevKv: true, filters: [], fragment: false, pre: true, sentAt: 0, ackedAtSend: 0, compactAtSend: 0, events: [],
      responses: 0, lastRespLastRev: -1, extraCancels: 0, fragmentsSeen: 0,
    };
    watchers.push(reference);
    sendCreate(reference);
    const nPre = Math.max(1, Math.round(totalWatchers * preFraction));
    for (let i = 1; i < nPre; i++) sendCreate(makeWatcher(specRng, true));
    const createDeadline = Date.now() + 10_000;
    while (streams.some((s) => s.pending.length > 0 && !s.end) && Date.now() < createDeadline) await sleep(5);
    for (const s of streams) {
      for (const w of s.pending) violate('created', `${describeWatcher(w)}: no created response within 10 s (before the writes)`);
    }
    log(`seed ${seed}: ${nPre} watchers created before the writes`);

    // ---------------------------------------------------------------- writers

    const writeOne = async (rng: Rng, kv: ServiceClient<'etcdserverpb.KV'>, wid: number, seq: number): Promise<void> => {
      const value = (): string => {
        const x = rng.int(100);
        if (x < 3) return '';
        const base = `w${wid}.${seq}.${rng.int(1000)}`;
        if (x < 13) return base + '#'.repeat(rng.between(4000, 6000));
        return base + 'x'.repeat(rng.int(40));
      };
      const smallValue = (): string => `w${wid}.${seq}.${rng.int(1000)}` + 'y'.repeat(rng.int(20));
      const x = rng.int(100);
      const rec: WriteRec = { kind: 'put', ops: [], rev: 0, mutating: false };
      try {
        if (x < 58) {
          const op: Op = { t: 'put', key: rng.pick(KEYS), value: value() };
          const res = await unary(kv, 'Put', { key: B(op.key), value: B(op.value), prev_kv: rng.chance(0.3) });
          rec.ops = [op];
          rec.rev = num(res.header?.revision);
          rec.mutating = true;
        } else if (x < 72) {
          let op: Op;
          const y = rng.int(100);
          if (y < 60) op = { t: 'del', key: rng.pick(KEYS), end: null };
          else if (y < 80) {
            let k1 = rng.pick(KEYS);
            let k2 = rng.pick(KEYS);
            if (k1 > k2) [k1, k2] = [k2, k1];
            if (k1 === k2) k2 = k1 + '\0';
            op = { t: 'del', key: k1, end: k2 };
          } else if (y < 96) {
            const p = rng.pick(['a0', 'b1', 'c', 'a1', '\xff', 'b0']);
            op = { t: 'del', key: p, end: prefixEndOf(p) };
          } else {
            op = { t: 'del', key: rng.pick(KEYS.slice(-8)), end: '\0' };
          }
          rec.kind = 'del';
          const req: any = { key: B(op.key), prev_kv: rng.chance(0.3) };
          if (op.end !== null) req.range_end = B(op.end);
          const res = await unary(kv, 'DeleteRange', req);
          rec.ops = [op];
          rec.rev = num(res.header?.revision);
          rec.mutating = num(res.deleted) > 0;
        } else {
          rec.kind = 'txn';
          const branch = (): Op[] => {
            const ops: Op[] = [];
            const n = rng.between(0, 4);
            if (rng.chance(0.2)) {
              // A range delete of one group, puts outside it, maybe an overlapping single delete.
              const g = rng.pick(['a0', 'b', 'c1', '\xff']);
              const del: Op = { t: 'del', key: g, end: prefixEndOf(g) };
              const outside = KEYS.filter((k) => !k.startsWith(g));
              const used = new Set<string>();
              const inside = KEYS.filter((k) => k.startsWith(g));
              const extra: Op | undefined = rng.chance(0.5) ? { t: 'del', key: rng.pick(inside), end: null } : undefined;
              if (extra && rng.chance(0.5)) ops.push(extra);
              ops.push(del);
              if (extra && !ops.includes(extra)) ops.push(extra);
              for (let i = 0; i < n; i++) {
                const k = rng.pick(outside);
                if (used.has(k)) continue;
                used.add(k);
                ops.push({ t: 'put', key: k, value: smallValue() });
              }
              return ops;
            }
            const used = new Set<string>();
            for (let i = 0; i < Math.max(1, n); i++) {
              const k = rng.pick(KEYS);
              if (used.has(k)) continue;
              used.add(k);
              ops.push(rng.chance(0.7) ? { t: 'put', key: k, value: smallValue() } : { t: 'del', key: k, end: null });
            }
            return ops;
          };
          const success = branch();
          const failure = rng.chance(0.7) ? branch() : [];
          const ck = rng.pick(KEYS);
          const c = rng.int(3);
          const compare: any = c === 0
            ? { key: B(ck), target: 0 /* VERSION */, result: 1 /* GREATER */, version: 0 }
            : c === 1
              ? { key: B(ck), target: 2 /* MOD */, result: 2 /* LESS */, mod_revision: Math.max(2, head - rng.int(50)) }
              : { key: B(ck), target: 1 /* CREATE */, result: 0 /* EQUAL */, create_revision: 0 };
          const toReq = (op: Op): any => op.t === 'put'
            ? { request_put: { key: B(op.key), value: B(op.value) } }
            : { request_delete_range: op.end === null ? { key: B(op.key) } : { key: B(op.key), range_end: B(op.end) } };
          const res = await unary(kv, 'Txn', { compare: [compare], success: success.map(toReq), failure: failure.map(toReq) });
          rec.ops = res.succeeded ? success : failure;
          rec.rev = num(res.header?.revision);
          rec.mutating = (res.responses ?? []).some((r: any) => r.response_put || (r.response_delete_range && num(r.response_delete_range.deleted) > 0));
        }
      } catch (err) {
        const e = err as grpc.ServiceError;
        rec.error = `${e.code} ${e.details ?? e.message}`;
        violate('write_error', `${rec.kind} failed: ${rec.error}`);
      }
      writes.push(rec);
      if (rec.rev > head) head = rec.rev;
    };

    const writer = async (wid: number): Promise<void> => {
      const rng = new Rng(seed ^ (0x1000 + wid * 7919));
      const kv = kvs[wid % kvs.length]!;
      let seq = 0;
      while (!writersDone && !fatal) {
        await writeOne(rng, kv, wid, seq++);
        if (rng.chance(0.3)) await sleep(rng.int(3));
      }
    };

    // A burst of 40 ~12 KB puts on the 0xff keys (then deleted again, so later snapshots stay
    // small): the catch-up of the bulk watchers below exceeds etcd's fragmenting threshold.
    const burst = async (): Promise<void> => {
      await sleep(Math.round(writeMs * 0.35));
      const kv = kvs[1]!;
      const ops: Op[] = [];
      for (let i = 0; i < 40; i++) ops.push({ t: 'put', key: '\xff' + String(i % 4), value: `burst${i}` + '%'.repeat(12_000) });
      ops.push({ t: 'del', key: '\xff', end: '\0' });
      for (const op of ops) {
        if (fatal) return;
        const rec: WriteRec = { kind: op.t === 'put' ? 'put' : 'del', ops: [op], rev: 0, mutating: false };
        try {
          if (op.t === 'put') {
            const res = await unary(kv, 'Put', { key: B(op.key), value: B(op.value) });
            rec.rev = num(res.header?.revision);
            rec.mutating = true;
          } else {
            const res = await unary(kv, 'DeleteRange', { key: B(op.key), range_end: B(op.end!) });
            rec.rev = num(res.header?.revision);
            rec.mutating = num(res.deleted) > 0;
          }
        } catch (err) {
          const e = err as grpc.ServiceError;
          rec.error = `${e.code} ${e.details ?? e.message}`;
          violate('write_error', `burst ${rec.kind} failed: ${rec.error}`);
        }
        writes.push(rec);
        if (rec.rev > head) head = rec.rev;
      }
    };

    // ---------------------------------------------------------------- historian

    const readAt = async (rev: number): Promise<Map<string, KV>> => {
      let lastErr = '';
      for (let attempt = 0; attempt < 3; attempt++) {
        try {
          const res = await unary(histKv, 'Range', { key: B('\0'), range_end: B('\0'), revision: rev });
          const m = new Map<string, KV>();
          for (const kv of res.kvs ?? []) {
            const k = kvOf(kv as any);
            m.set(k.key, k);
          }
          if (res.more) throw new Error('Range says more');
          return m;
        } catch (err) {
          const e = err as grpc.ServiceError;
          lastErr = `${e.code ?? ''} ${e.details ?? e.message}`;
        }
      }
      throw new Error(`Range at revision ${rev} failed: ${lastErr}`);
    };

    let nextRead = 1;
    let writersSettled = false;
    const historianWorker = async (): Promise<void> => {
      for (;;) {
        if (fatal) return;
        if (nextRead > head) {
          if (writersDone && writersSettled) return;
          await sleep(2);
          continue;
        }
        const r = nextRead++;
        try {
          snapshots.set(r, await readAt(r));
        } catch (err) {
          fatal = (err as Error).message;
          return;
        }
        while (snapshots.has(historianDone + 1)) historianDone++;
      }
    };

    // ---------------------------------------------------------------- compactor

    const compactor = async (): Promise<void> => {
      const rng = new Rng(seed ^ 0xc0c0c0c0);
      const kv = kvs[0]!;
      // No compaction in the first half: watchers created then from old revisions catch up over
      // many revisions (big responses, fragments).
      await sleep(Math.round(writeMs * 0.5));
      while (!writersDone && !fatal) {
        await sleep(rng.between(250, 600));
        if (writersDone) return;
        const last = compactions.length ? compactions[compactions.length - 1]!.rev : 0;
        const target = Math.min(historianDone, head - rng.between(2, 40));
        if (target <= last || target < 2) continue;
        const rec: CompactRec = { rev: target, sentAt: now(), ackAt: Infinity };
        compactions.push(rec);
        try {
          await unary(kv, 'Compact', { revision: target, physical: rng.chance(0.3) });
          rec.ackAt = now();
        } catch (err) {
          const e = err as grpc.ServiceError;
          rec.error = `${e.code} ${e.details}`;
          violate('compact_error', `Compact(${target}) failed: ${rec.error}`);
        }
      }
    };

    // ---------------------------------------------------------------- watcher churn

    // Three bulk watchers (every key from revision 1, prev_kv, fragment) created just before the
    // first compaction: their catch-up responses are big enough for etcd to fragment.
    const bulk = async (): Promise<void> => {
      await sleep(Math.round(writeMs * 0.45));
      for (let i = 0; i < 3 && !fatal; i++) {
        const w = makeWatcher(specRng, false);
        Object.assign(w, { range: { key: '\0', end: '\0' }, rangeKind: 'all (bulk)', startReq: 1, startKind: 'from 1', prevKv: true, filters: [], fragment: true });
        sendCreate(w);
      }
    };

    const creator = async (): Promise<void> => {
      const rng = new Rng(seed ^ 0xc4ea7e00);
      const nDuring = totalWatchers - watchers.length - 3;
      const gap = writeMs / Math.max(1, nDuring);
      for (let i = 0; i < nDuring && !fatal; i++) {
        await sleep(rng.int(Math.max(1, Math.round(2 * gap))));
        sendCreate(makeWatcher(specRng, false));
      }
    };

    const canceler = async (): Promise<void> => {
      const rng = new Rng(seed ^ 0xca9ce100);
      const nCancel = Math.round(totalWatchers * cancelFraction);
      const gap = writeMs / Math.max(1, nCancel);
      for (let i = 0; i < nCancel && !writersDone && !fatal; i++) {
        await sleep(rng.int(Math.max(1, Math.round(2 * gap))));
        const live = watchers.filter((w) => w !== reference && w.created && !w.created.canceled && w.cancelSentAt === undefined
          && !w.compactCancel && !w.otherCancel);
        if (live.length === 0) continue;
        sendCancel(rng.pick(live));
      }
    };

    const progresser = async (): Promise<void> => {
      const rng = new Rng(seed ^ 0x9a09e55);
      while (!writersDone && !fatal) {
        await sleep(rng.between(40, 200));
        sendProgress(rng.pick(streams));
      }
    };

    const t0 = Date.now();
    const historian = Promise.all(Array.from({ length: 8 }, historianWorker));
    const writerLoops = Promise.all([...Array.from({ length: nWriters }, (_, i) => writer(i)), burst()]);
    const side = Promise.all([compactor(), creator(), bulk(), canceler(), progresser()]);
    await sleep(writeMs);
    writersDone = true;
    await writerLoops;
    writersSettled = true;
    await side;
    await historian;
    if (fatal) throw new Error(fatal);
    const H = head;
    log(`seed ${seed}: writes done in ${Date.now() - t0} ms: head ${H}, ${writes.length} writes, ${compactions.length} compactions, ${watchers.length} watchers`);

    // ---------------------------------------------------------------- history

    const history = buildHistory(H, writes, snapshots, violate);
    count('revisions', H - 1);
    count('historyEvents', history.events.length);

    // ---------------------------------------------------------------- settle

    for (const st of streams) sendProgress(st);
    const finalProgressFrom = new Map(streams.map((s) => [s, s.progress.length] as const));
    const expectedOf = new Map<Watcher, HEvent[]>();
    const done = (w: Watcher): boolean => {
      if (!w.created) return false;
      if (w.created.canceled || w.compactCancel || w.otherCancel) return true;
      if (w.cancelSentAt !== undefined) return !!w.cancelResp;
      if (w.startReq !== 0 && w.startReq < w.compactAtSend) return false; // waiting for the compaction cancel
      let exp = expectedOf.get(w);
      if (!exp) {
        exp = expectedEvents(w, history, H);
        expectedOf.set(w, exp);
      }
      return new Set(w.events.map((e) => `${e.rev}:${e.key}`)).size >= exp.length;
    };
    const settleStart = Date.now();
    for (;;) {
      const allDone = watchers.every(done)
        && streams.every((s) => s.end !== undefined || s.progress.slice(finalProgressFrom.get(s)!).some((p) => p.rev >= H));
      if (allDone || Date.now() - settleStart > settleMs) break;
      if (streams.every((s) => s.end !== undefined)) break;
      await sleep(25);
    }
    await sleep(300); // anything extra (duplicates, late events) shows up here
    log(`seed ${seed}: settled in ${Date.now() - settleStart} ms`);
    for (const st of streams) {
      if (!st.end && !st.progress.slice(finalProgressFrom.get(st)!).some((p) => p.rev >= H)) {
        violate('progress', `stream ${st.idx}: no progress response with revision >= ${H} (the final head) within ${settleMs} ms of a final WatchProgressRequest`);
      }
      for (const w of st.pending) violate('created', `${describeWatcher(w)}: no created response by the end`);
      for (const [id, f] of st.frags) violate('fragment', `stream ${st.idx} id ${id}: ${f.events.length} events in fragments never completed`);
    }

    // ---------------------------------------------------------------- check

    const endAt = now();
    for (const w of watchers) checkWatcher(w, history, H, expectedOf.get(w) ?? expectedEvents(w, history, H), compactions, violate, count, maxCompactSentBefore, endAt);
    for (const st of streams) checkProgress(st, history, H, violate, count);

    count('watchers', watchers.length);
    count('watchersPreWrite', watchers.filter((w) => w.pre).length);
    count('writes', writes.length);
    count('writesMutating', writes.filter((w) => w.mutating).length);
    count('txns', writes.filter((w) => w.kind === 'txn').length);
    count('deletes', writes.filter((w) => w.kind === 'del').length);
    count('compactions', compactions.length);
    count('lastCompaction', compactions.length ? compactions[compactions.length - 1]!.rev : 0);
  } finally {
    writersDone = true;
    for (const st of streams) {
      st.closing = true;
      try {
        st.call.end();
        st.call.cancel();
      } catch {
        /* already gone */
      }
    }
    for (const c of [...kvs, ...watchClients, histKv]) c.close();
  }

  const byKind: Record<string, number> = {};
  for (const v of violations) byKind[v.kind] = (byKind[v.kind] ?? 0) + 1;
  return {
    seed,
    counts,
    violations,
    byKind,
    summary(maxPerKind = 5): string[] {
      const lines = [`seed ${seed}`, `counts ${JSON.stringify(counts)}`, `violations ${violations.length} ${JSON.stringify(byKind)}`];
      const shown: Record<string, number> = {};
      for (const v of violations) {
        shown[v.kind] = (shown[v.kind] ?? 0) + 1;
        if (shown[v.kind]! <= maxPerKind) lines.push(`  [${v.kind}] ${v.detail}`);
      }
      return lines;
    },
  };
}

// ------------------------------------------------------------------ history

interface HEvent {
  rev: number;
  /** Position in the whole history (revision, then sub-revision). */
  idx: number;
  key: string;
  type: number;
  kv: KV;
  prev: KV | null;
}

interface History {
  events: HEvent[];
  byId: Map<string, HEvent>;
}

function buildHistory(H: number, writes: WriteRec[], snapshots: Map<number, Map<string, KV>>,
  violate: (kind: string, detail: string) => void): History {
  const byRev = new Map<number, WriteRec[]>();
  for (const w of writes) {
    if (w.error || !w.mutating) continue;
    const l = byRev.get(w.rev) ?? [];
    l.push(w);
    byRev.set(w.rev, l);
  }
  const events: HEvent[] = [];
  const byId = new Map<string, HEvent>();
  const empty = new Map<string, KV>();
  for (let r = 2; r <= H; r++) {
    const prev = snapshots.get(r - 1) ?? empty;
    const cur = snapshots.get(r) ?? empty;
    const ws = byRev.get(r) ?? [];
    if (ws.length !== 1) {
      violate('history', `revision ${r}: ${ws.length} mutating writes answered with this revision (expected exactly 1)`);
      if (ws.length === 0) continue;
    }
    const w = ws[0]!;
    // Replay the ops on the state at r-1.
    const state = new Map(prev);
    const changes: { key: string; type: number; value?: string }[] = [];
    for (const op of w.ops) {
      if (op.t === 'put') {
        state.set(op.key, { key: op.key, create: 0, mod: r, version: 0, value: op.value, lease: 0 });
        changes.push({ key: op.key, type: PUT, value: op.value });
      } else {
        const range: KeyRange = { key: op.key, end: op.end };
        const gone = [...state.keys()].filter((k) => inRange(range, k)).sort();
        for (const k of gone) {
          state.delete(k);
          changes.push({ key: k, type: DELETE });
        }
      }
    }
    // The snapshot at r must be exactly the replayed state.
    const keys = new Set([...state.keys(), ...cur.keys()]);
    for (const k of keys) {
      const want = state.get(k);
      const got = cur.get(k);
      if (!want || !got) {
        violate('history', `revision ${r} (${w.kind}): key ${show(k)} ${want ? 'missing from' : 'unexpected in'} Range at ${r}: ${showKv(got ?? want)}`);
        continue;
      }
      const before = prev.get(k);
      if (want.mod === r) {
        const exp: KV = { key: k, create: before ? before.create : r, mod: r, version: before ? before.version + 1 : 1, value: want.value, lease: 0 };
        if (!kvEqual(exp, got)) violate('history', `revision ${r}: put of ${show(k)} reads back as ${showKv(got)}, expected ${showKv(exp)}`);
      } else if (!kvEqual(want, got)) {
        violate('history', `revision ${r}: untouched key ${show(k)} changed from ${showKv(want)} to ${showKv(got)}`);
      }
    }
    for (const c of changes) {
      const kv: KV = c.type === PUT
        ? (cur.get(c.key) ?? { key: c.key, create: 0, mod: r, version: 0, value: c.value ?? '', lease: 0 })
        : { key: c.key, create: 0, mod: r, version: 0, value: '', lease: 0 };
      const e: HEvent = { rev: r, idx: events.length, key: c.key, type: c.type, kv, prev: prev.get(c.key) ?? null };
      const id = `${r}:${c.key}`;
      if (byId.has(id)) violate('history', `revision ${r}: key ${show(c.key)} changes twice in one revision (workload bug)`);
      byId.set(id, e);
      events.push(e);
    }
  }
  return { events, byId };
}

function passes(w: Watcher, type: number): boolean {
  if (type === PUT && w.filters.includes(NOPUT)) return false;
  if (type === DELETE && w.filters.includes(NODELETE)) return false;
  return true;
}

function effectiveStart(w: Watcher): number {
  if (w.startReq !== 0) return w.startReq;
  return w.created ? w.created.header + 1 : Infinity;
}

function expectedEvents(w: Watcher, h: History, H: number): HEvent[] {
  const start = effectiveStart(w);
  return h.events.filter((e) => e.rev >= start && e.rev <= H && inRange(w.range, e.key) && passes(w, e.type));
}

// ------------------------------------------------------------------ per-watcher check

function checkWatcher(
  w: Watcher, h: History, H: number, expected: HEvent[], compactions: CompactRec[],
  violate: (kind: string, detail: string, tag?: string) => void, count: (k: string, by?: number) => void,
  maxCompactSentBefore: (at: number) => number, endAt: number,
): void {
  const who = describeWatcher(w);
  if (!w.created || w.created.canceled) {
    if (w.events.length > 0) violate('spurious', `${who}: ${w.events.length} events though never created`);
    return;
  }
  const start = effectiveStart(w);
  const expIdx = new Map<string, number>();
  expected.forEach((e, i) => expIdx.set(`${e.rev}:${e.key}`, i));
  const seen = new Set<string>();
  let lastIdx = -1;
  let maxExp = -1;
  const report = (kind: string, detail: string): void => violate(kind, `${who}: ${detail}`);
  for (const ev of w.events) {
    const id = `${ev.rev}:${ev.key}`;
    if (ev.afterCancel) report('after_cancel', `event rev ${ev.rev} key ${show(ev.key)} after the watcher's cancel response`);
    if (seen.has(id)) {
      report('duplicate', `event rev ${ev.rev} key ${show(ev.key)} delivered twice`);
      continue;
    }
    seen.add(id);
    const he = h.byId.get(id);
    if (!he) {
      report('spurious', `event rev ${ev.rev} key ${show(ev.key)} type ${ev.type} is no change in the history (head ${H})`);
      continue;
    }
    if (he.idx < lastIdx) {
      report('order', `event rev ${ev.rev} key ${show(ev.key)} (history position ${he.idx}) after position ${lastIdx}`);
    }
    lastIdx = Math.max(lastIdx, he.idx);
    if (!expIdx.has(id)) {
      const why = ev.rev < start
        ? (w.startReq === 0
          ? `at or before the created response's header revision ${w.created.header} (revision ${w.ackedAtSend} was the last acknowledged when the create was sent)`
          : `before start revision ${start}`)
        : !inRange(w.range, ev.key) ? 'outside the watched range'
          : !passes(w, he.type) ? 'of a filtered-out type' : 'unexpected';
      report('spurious', `event rev ${ev.rev} key ${show(ev.key)} ${why}`);
      continue;
    }
    maxExp = Math.max(maxExp, expIdx.get(id)!);
    if (ev.type !== he.type) report('kv', `event rev ${ev.rev} key ${show(ev.key)}: type ${ev.type}, history says ${he.type}`);
    if (!kvEqual(ev.kv, he.kv)) report('kv', `event rev ${ev.rev} key ${show(ev.key)}: kv ${showKv(ev.kv)}, history ${showKv(he.kv)}`);
    if (w.prevKv) {
      if (he.prev === null) {
        if (ev.prev) report('prev_kv', `event rev ${ev.rev} key ${show(ev.key)}: prev_kv ${showKv(ev.prev)} but the key did not exist at ${ev.rev - 1}`);
      } else if (!ev.prev) {
        if (ev.rev - 1 < maxCompactSentBefore(ev.at)) count('prevKvOmittedCompacted');
        else {
          const inResp = w.events.filter((e) => e.resp === ev.resp);
          // etcd 3.4.23 registers a watcher before it records that the watcher wants prev_kv
          // (v3rpc/watch.go), so a first response taken off the channel in between has none; it
          // was also seen to send other whole responses without any prev_kv.
          const raceTag = inResp.every((e) => !e.prev) ? 'prevkv-response' : undefined;
          violate('prev_kv', `${who}: ` + `event rev ${ev.rev} key ${show(ev.key)}: prev_kv missing, history ${showKv(he.prev)} (revision ${ev.rev - 1} not compacted: compactions sent before receipt ${compactions.filter((c) => c.sentAt < ev.at).map((c) => c.rev).join(',') || 'none'}, later ${compactions.filter((c) => c.sentAt >= ev.at).map((c) => c.rev).join(',') || 'none'}); response #${ev.resp} of the watcher: ${inResp.length} events, revs ${inResp[0]!.rev}..${inResp[inResp.length - 1]!.rev}, ${inResp.filter((e) => e.prev).length} with prev_kv`, raceTag);
        }
      } else if (!kvEqual(ev.prev, he.prev)) {
        report('prev_kv', `event rev ${ev.rev} key ${show(ev.key)}: prev_kv ${showKv(ev.prev)}, history ${showKv(he.prev)}`);
      }
    } else if (ev.prev) {
      report('prev_kv', `event rev ${ev.rev} key ${show(ev.key)}: prev_kv sent though not asked for`);
    }
  }

  const closed = w.cancelSentAt !== undefined || !!w.compactCancel || !!w.otherCancel;
  const missing = expected.filter((e, i) => !seen.has(`${e.rev}:${e.key}`) && (!closed || i < maxExp));
  // etcd-io/etcd#17529's signature (etcd 3.4.23): a watcher that needs a compacted revision while
  // its stream's channel is full is neither canceled nor caught up: it skips to the batch the
  // others get. Every run of missing events then starts (at the revision after the last event
  // delivered before it) below a compaction sent before delivery resumed (or before the end).
  let skipTag: string | undefined;
  if (missing.length > 0) {
    const got = new Map<number, RecvEvent>();
    for (const ev of w.events) {
      const i = expIdx.get(`${ev.rev}:${ev.key}`);
      if (i !== undefined && !got.has(i)) got.set(i, ev);
    }
    const runs: [number, number][] = [];
    for (const e of missing) {
      const i = expIdx.get(`${e.rev}:${e.key}`)!;
      const last = runs[runs.length - 1];
      if (last && last[1] === i) last[1] = i + 1;
      else runs.push([i, i + 1]);
    }
    const explained = runs.every(([i, j]) => {
      let low = start;
      for (let k = i - 1; k >= 0; k--) {
        const ev = got.get(k);
        if (ev) {
          low = ev.rev + 1;
          break;
        }
      }
      const resume = got.get(j);
      return low < maxCompactSentBefore(resume ? resume.at : endAt);
    });
    if (explained) skipTag = 'compacted-skip';
    if (skipTag) w.skipped = new Set(missing.map((e) => `${e.rev}:${e.key}`));
    const m0 = missing[0]!;
    const before = w.events.filter((e) => e.rev < m0.rev).slice(-2).map((e) => `${e.rev}@${e.at}/r${e.resp}`);
    const after = w.events.filter((e) => e.rev > m0.rev).slice(0, 2).map((e) => `${e.rev}@${e.at}/r${e.resp}`);
    const how = [
      w.cancelSentAt !== undefined ? `cancel sent @${w.cancelSentAt}${w.cancelResp ? `, answered @${w.cancelResp.at}` : ''}` : '',
      w.compactCancel ? `compaction cancel ${w.compactCancel.rev} @${w.compactCancel.at}` : '',
      `compactions ${compactions.map((c) => `${c.rev}@${c.sentAt}`).join(',') || 'none'}`,
    ].filter((x) => x).join('; ');
    violate('gap', `${who}: ${missing.length} of ${expected.length} expected events missing${closed ? ' inside the delivered prefix' : ''}; first: rev ${m0.rev} key ${show(m0.key)} type ${m0.type}, last: rev ${missing[missing.length - 1]!.rev}; delivered ${seen.size} (around the first: ${before.join(' ')} | ${after.join(' ')}; ${how})${skipTag ? ' (one run, from below a compaction)' : ''}`, skipTag);
  }
  const compactTag = missing.length === 0 || skipTag ? 'compacted-skip' : undefined;

  // Compaction.
  const compactBefore = w.compactAtSend;
  if (w.compactCancel) {
    const C = w.compactCancel.rev;
    const issued = compactions.filter((c) => c.sentAt < w.compactCancel!.at).map((c) => c.rev);
    if (!issued.includes(C)) report('compaction', `canceled with compact_revision ${C}, not a compaction sent before (${issued.join(',') || 'none'})`);
    if (start >= C) report('compaction', `canceled with compact_revision ${C} though its start revision ${start} is not below it`);
    if (C < compactBefore) report('compaction', `canceled with compact_revision ${C}, below ${compactBefore}, acknowledged before the create`);
    const over = w.events.filter((e) => e.rev >= C);
    if (over.length > 0) report('compaction', `canceled with compact_revision ${C} after receiving events at revisions >= it (first ${over[0]!.rev})`);
    if (w.events.length > w.compactCancel.events) report('compaction', `events after the compaction cancel`);
  } else if (w.startReq !== 0 && start < compactBefore) {
    if (w.events.length > 0) violate('compaction', `${who}: start revision ${start} below compaction ${compactBefore} (acknowledged before the create), yet ${w.events.length} events delivered (first rev ${w.events[0]!.rev})`, compactTag);
    if (!(w.cancelSentAt !== undefined && w.cancelResp)) {
      violate('compaction', `${who}: start revision ${start} below compaction ${compactBefore} (acknowledged before the create), never canceled with compact_revision`, compactTag);
    }
  }
  if (w.cancelSentAt !== undefined && !w.cancelResp && !w.compactCancel && !w.otherCancel) {
    report('cancel', `no cancel response to the cancel request`);
  }
  count('eventsChecked', w.events.length);
  count('eventsExpected', expected.length);
  if (w.fragmentsSeen > 0) count('watchersFragmented');
  if (w.cancelSentAt !== undefined) count('watchersClientCanceled');
  if (w.startKind === 'compacted') count('watchersStartCompacted');
}

// ------------------------------------------------------------------ progress check

function checkProgress(st: StreamRec, h: History, H: number,
  violate: (kind: string, detail: string, tag?: string) => void, count: (k: string, by?: number) => void): void {
  const expCache = new Map<Watcher, HEvent[]>();
  for (const p of st.progress) {
    if (p.rev > H) violate('progress', `stream ${st.idx}: progress response with header revision ${p.rev}, above the final head ${H}`);
    for (const { w, count: got } of p.watchers) {
      if (!w.created || w.created.canceled) continue;
      let exp = expCache.get(w);
      if (!exp) {
        exp = expectedEvents(w, h, H);
        expCache.set(w, exp);
      }
      count('progressWatcherChecks');
      // Every expected event <= p.rev must be among the first `got` received events.
      const due = exp.filter((e) => e.rev <= p.rev);
      if (due.length === 0) continue;
      const have = new Set(w.events.slice(0, got).map((e) => `${e.rev}:${e.key}`));
      const missing = due.filter((e) => !have.has(`${e.rev}:${e.key}`));
      if (missing.length === 0) continue;
      const later = new Set(w.events.slice(got).map((e) => `${e.rev}:${e.key}`));
      const cc = w.compactCancel;
      // Overtaken, not lost: delivered after it, lost to etcd-io/etcd#17529 (tagged there), or
      // not delivered because the client canceled the watcher after it.
      const canceledAfter = w.cancelSentAt !== undefined && w.cancelSentAt > p.at;
      const late = (cc !== undefined && cc.at > p.at)
        || missing.every((e) => later.has(`${e.rev}:${e.key}`) || w.skipped?.has(`${e.rev}:${e.key}`) === true || canceledAfter);
      const m0 = missing[0]!;
      const what = cc !== undefined && cc.at > p.at && m0.rev < cc.rev
        ? `before the watcher's compaction cancel (compact_revision ${cc.rev}), with ${missing.length} events <= ${p.rev} from its start never delivered`
        : `before ${missing.length} events <= ${p.rev}${late ? ' (delivered after it)' : ''}`;
      violate('progress', `stream ${st.idx}: progress response (watch_id ${p.watchId}) with header revision ${p.rev} came ${what} of ${describeWatcher(w)} (first: rev ${m0.rev} key ${show(m0.key)}; it had received ${got} events)`,
        late ? 'late' : undefined);
    }
  }
}

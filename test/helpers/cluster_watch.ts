// Watch guarantees across a cluster (issue #12): a recorded writer load on every member,
// watchers that resume on another member when theirs fails (as clientv3 does: start_revision =
// last revision seen + 1), and a checker of what every watcher received against the history.
//
//   const w = new ClusterWriter(endpoints, { seed, prefix: 'w/' }); w.start(); ... await w.stop();
//   const rw = new ResumingWatcher(spec, endpoints); rw.start(); ... rw.stop();
//   const oracle = await readOracle(endpoint, prefix, head, w.ops);   // Range at every revision
//   const violations = checkWatchRecords(oracle, records);            // [] when all held
//
// The history (the oracle) comes from KV reads only: Range(prefix, revision = r) for every r up
// to the final head gives the state at each revision; the events of revision r are the keys
// whose mod_revision is r (puts) and the keys present at r - 1 and gone at r (deletes). Their
// order inside a revision (sub-revision) is the op order of the request that made it, found by
// the unique value of one of its puts (every txn branch has a put); a revision with deletes only
// is a single delete or a range delete, whose events come in key order (etcd deleteRange).
//
// The checker (pure; checkWatchRecords) takes each watcher's segments (one per member it was
// connected to) and checks the concatenation:
//  - duplicate: an event (revision, key) delivered twice;
//  - order: an event not after the previous one in (revision, sub-revision) order;
//  - spurious: an event that is no change in the history, outside the range, or before the start;
//  - kv / prev_kv: an event's kv (key, value, create, mod, version, lease) or prev_kv (when asked
//    for; absent otherwise) not the history's;
//  - gap: an event of the history in the watcher's range, from its start to the end it must have
//    reached, never delivered;
//  - resume: a segment that did not resume at the revision after the last event seen (a client
//    bug, checked so the concatenation means what it says);
//  - header: a response whose header revision is below one of its events;
//  - divergent: the same (revision, key) delivered with different contents by two members.
import * as grpc from '@grpc/grpc-js';
import { Prng } from '../../src/util/prng';
import { connect, num, unary, type ServiceClient } from './grpc_client';

// ------------------------------------------------------------------ records

export interface Kv {
  key: string;
  value: string;
  create: number;
  mod: number;
  version: number;
  lease: number;
}

export const PUT = 0;
export const DELETE = 1;

/** One event of the history, in (revision, sub-revision) order. */
export interface OracleEvent {
  rev: number;
  /** Position in the whole history. */
  idx: number;
  key: string;
  type: number;
  /** For a delete: key and mod = rev, the rest 0 (as etcd sends it). */
  kv: Kv;
  /** The key at rev - 1, or null. */
  prev: Kv | null;
}

export interface Oracle {
  head: number;
  events: OracleEvent[];
  byId: Map<string, OracleEvent>;
  /** Problems of the history itself (a revision no request explains): a bug or a workload bug. */
  problems: string[];
}

/** [key, end) with end null for a single key. */
export interface KeyRange {
  key: string;
  end: string | null;
}

export interface WatchSpec {
  name: string;
  /** Member the watcher is first opened on. */
  home: number;
  range: KeyRange;
  /** 0: from now (the created header revision + 1). */
  startRev: number;
  prevKv: boolean;
  /** clientv3.WithRequireLeader: metadata hasleader=true. */
  requireLeader: boolean;
}

export interface WatchEvent {
  rev: number;
  key: string;
  type: number;
  kv: Kv;
  prev: Kv | null;
  /** Header revision of the response that carried it. */
  header: number;
}

export interface Segment {
  member: number;
  startRev: number;
  /** Header revision of the created response (undefined: never created). */
  created?: number;
  events: WatchEvent[];
  /** How it ended (error details), undefined while open or when stopped by the test. */
  end?: string;
}

export interface WatchRecord {
  spec: WatchSpec;
  segments: Segment[];
}

export interface WatchViolation {
  kind: 'duplicate' | 'order' | 'spurious' | 'kv' | 'prev_kv' | 'gap' | 'resume' | 'header' | 'divergent' | 'history';
  detail: string;
}

export const showKv = (kv: Kv | null | undefined): string => kv == null ? 'none'
  : `{${kv.key}=${JSON.stringify(kv.value)} create ${kv.create} mod ${kv.mod} ver ${kv.version} lease ${kv.lease}}`;

const kvEqual = (a: Kv | null, b: Kv | null): boolean => (a === null || b === null) ? a === b
  : a.key === b.key && a.value === b.value && a.create === b.create && a.mod === b.mod && a.version === b.version && a.lease === b.lease;

export function inRange(r: KeyRange, key: string): boolean {
  return r.end === null ? key === r.key : key >= r.key && key < r.end;
}

/** The revision from which a watcher must have every event: its start, or created header + 1. */
export function effectiveStart(rec: WatchRecord): number {
  if (rec.spec.startRev > 0) return rec.spec.startRev;
  const first = rec.segments.find((s) => s.created !== undefined);
  return first === undefined ? Infinity : first.created! + 1;
}

// ------------------------------------------------------------------ the checker

/**
 * Checks every watcher against the history (see the top of the file). `upTo`: the revision each
 * watcher must have reached (default the oracle's head).
 */
export function checkWatchRecords(oracle: Oracle, records: WatchRecord[], upTo = oracle.head): WatchViolation[] {
  const out: WatchViolation[] = oracle.problems.map((detail) => ({ kind: 'history' as const, detail }));
  const seenAcross = new Map<string, { member: number; text: string; watcher: string }>();
  for (const rec of records) {
    const who = `${rec.spec.name} (home m${rec.spec.home}, ${rec.spec.range.key}..${rec.spec.range.end ?? ''}, start ${rec.spec.startRev}${rec.spec.prevKv ? ', prev_kv' : ''})`;
    const v = (kind: WatchViolation['kind'], detail: string): void => {
      out.push({ kind, detail: `${who}: ${detail}` });
    };
    const start = effectiveStart(rec);
    const seen = new Set<string>();
    let lastIdx = -1;
    let lastRev = 0;
    for (let s = 0; s < rec.segments.length; s++) {
      const seg = rec.segments[s]!;
      if (s > 0 && seg.startRev !== 0) {
        const want = lastRev > 0 ? lastRev + 1 : start;
        if (seg.startRev !== want) v('resume', `segment ${s} on m${seg.member} resumed at ${seg.startRev}, the revision after the last event seen is ${want}`);
      }
      for (const ev of seg.events) {
        const id = `${ev.rev}:${ev.key}`;
        if (ev.header < ev.rev) v('header', `event ${id} from m${seg.member} in a response with header revision ${ev.header}`);
        const text = `${ev.type} ${showKv(ev.kv)}`;
        const other = seenAcross.get(id);
        if (other === undefined) seenAcross.set(id, { member: seg.member, text, watcher: rec.spec.name });
        else if (other.text !== text) v('divergent', `event ${id} from m${seg.member} is ${text}; ${other.watcher} got ${other.text} from m${other.member}`);
        if (seen.has(id)) {
          v('duplicate', `event ${id} delivered again by m${seg.member} (segment ${s})`);
          continue;
        }
        seen.add(id);
        const he = oracle.byId.get(id);
        if (he === undefined) {
          v('spurious', `event ${id} (type ${ev.type}, from m${seg.member}) is no change in the history`);
          continue;
        }
        if (he.idx <= lastIdx) v('order', `event ${id} from m${seg.member} (history position ${he.idx}) after position ${lastIdx}`);
        lastIdx = Math.max(lastIdx, he.idx);
        lastRev = Math.max(lastRev, ev.rev);
        if (!inRange(rec.spec.range, ev.key)) v('spurious', `event ${id} outside the watched range`);
        if (ev.rev < start) v('spurious', `event ${id} before the start revision ${start}`);
        if (ev.type !== he.type || !kvEqual(ev.kv, he.kv)) v('kv', `event ${id} from m${seg.member}: type ${ev.type} ${showKv(ev.kv)}, history type ${he.type} ${showKv(he.kv)}`);
        const wantPrev = rec.spec.prevKv ? he.prev : null;
        if (!kvEqual(ev.prev, wantPrev)) v('prev_kv', `event ${id} from m${seg.member}: prev_kv ${showKv(ev.prev)}, history ${showKv(wantPrev)}`);
      }
    }
    const expected = oracle.events.filter((e) => e.rev >= start && e.rev <= upTo && inRange(rec.spec.range, e.key));
    const missing = expected.filter((e) => !seen.has(`${e.rev}:${e.key}`));
    if (missing.length > 0) {
      const around = rec.segments.map((s) => `m${s.member} from ${s.startRev}${s.created !== undefined ? ` (created @${s.created})` : ' (never created)'}: ${s.events.length} events${s.events.length > 0 ? ` ${s.events[0]!.rev}..${s.events[s.events.length - 1]!.rev}` : ''}${s.end !== undefined ? `, ended: ${s.end}` : ''}`);
      v('gap', `${missing.length} of ${expected.length} events missing, revisions ${missing.slice(0, 8).map((e) => `${e.rev}:${e.key}`).join(' ')}${missing.length > 8 ? ' ...' : ''}; segments: ${around.join(' | ')}`);
    }
  }
  return out;
}

// ------------------------------------------------------------------ the history

export type Op = { t: 'put'; key: string; value: string } | { t: 'del'; key: string; end: string | null };

/** Every put value is unique: value -> the ops of the request (branch) it was part of. */
export type OpsByValue = Map<string, Op[]>;

/**
 * Builds the history from the states at each revision (state(r): the watched keys at r, r from
 * 1 to head) and the requests the writers sent (to order the events of a multi-op revision).
 */
export function buildOracle(head: number, state: (rev: number) => Map<string, Kv>, opsByValue: OpsByValue): Oracle {
  const events: OracleEvent[] = [];
  const byId = new Map<string, OracleEvent>();
  const problems: string[] = [];
  for (let r = 2; r <= head; r++) {
    const before = state(r - 1);
    const after = state(r);
    const changed: { key: string; type: number; kv: Kv }[] = [];
    for (const [k, kv] of after) if (kv.mod === r) changed.push({ key: k, type: PUT, kv });
    for (const [k] of before) {
      if (!after.has(k)) changed.push({ key: k, type: DELETE, kv: { key: k, value: '', create: 0, mod: r, version: 0, lease: 0 } });
    }
    for (const [k, kv] of after) {
      const b = before.get(k);
      if (kv.mod !== r && (b === undefined || !kvEqual(b, kv))) problems.push(`revision ${r}: ${k} changed to ${showKv(kv)} without a put at ${r} (was ${showKv(b)})`);
    }
    if (changed.length === 0) continue;
    let order: string[];
    const put = changed.find((c) => c.type === PUT);
    const ops = put === undefined ? undefined : opsByValue.get(put.kv.value);
    if (put !== undefined && ops === undefined) problems.push(`revision ${r}: value ${JSON.stringify(put.kv.value)} of ${put.key} was never written`);
    if (ops === undefined) {
      order = changed.map((c) => c.key).sort();
    } else {
      order = [];
      for (const op of ops) {
        if (op.t === 'put') order.push(op.key);
        else order.push(...changed.filter((c) => c.type === DELETE && inRange(op, c.key)).map((c) => c.key).sort());
      }
      const known = new Set(order);
      for (const c of changed) {
        if (!known.has(c.key)) problems.push(`revision ${r}: ${c.type === PUT ? 'put' : 'delete'} of ${c.key} is not in the request that wrote ${JSON.stringify(put!.kv.value)}`);
      }
      for (const op of ops) {
        if (op.t === 'put' && !changed.some((c) => c.key === op.key && c.type === PUT && c.kv.value === op.value)) {
          problems.push(`revision ${r}: the request that wrote ${JSON.stringify(put!.kv.value)} also put ${op.key}=${JSON.stringify(op.value)}, not at ${r}`);
        }
      }
      order = order.filter((k) => changed.some((c) => c.key === k));
    }
    for (const key of order) {
      const c = changed.find((x) => x.key === key)!;
      const e: OracleEvent = { rev: r, idx: events.length, key, type: c.type, kv: c.kv, prev: before.get(key) ?? null };
      events.push(e);
      byId.set(`${r}:${key}`, e);
    }
  }
  return { head, events, byId, problems };
}

export function kvOf(x: { key?: Uint8Array | null; value?: Uint8Array | null; create_revision?: unknown; mod_revision?: unknown; version?: unknown; lease?: unknown }): Kv {
  const n = (v: unknown): number => num(v as number);
  return {
    key: Buffer.from(x.key ?? []).toString('latin1'), value: Buffer.from(x.value ?? []).toString('latin1'),
    create: n(x.create_revision), mod: n(x.mod_revision), version: n(x.version), lease: n(x.lease),
  };
}

/** Reads the state of `range` at every revision 1..head from `endpoint` (serializable). */
export async function readOracle(endpoint: string, range: KeyRange, head: number, opsByValue: OpsByValue): Promise<Oracle> {
  const kv = connect('etcdserverpb.KV', endpoint);
  const states = new Map<number, Map<string, Kv>>();
  try {
    let next = 1;
    const worker = async (): Promise<void> => {
      while (next <= head) {
        const r = next++;
        const res = await unary(kv, 'Range', {
          key: Buffer.from(range.key, 'latin1'), range_end: range.end === null ? undefined : Buffer.from(range.end, 'latin1'),
          revision: r, serializable: true,
        }, { timeoutMs: 10_000 });
        states.set(r, new Map(res.kvs.map((x) => { const k = kvOf(x); return [k.key, k]; })));
      }
    };
    await Promise.all(Array.from({ length: 16 }, worker));
  } finally {
    kv.close();
  }
  return buildOracle(head, (r) => states.get(r)!, opsByValue);
}

// ------------------------------------------------------------------ the writers

export interface WriterOptions {
  seed: number;
  /** Writer loops; writer i talks to endpoints[i % n]. */
  writers?: number;
  /** Watched keys: prefix + 'k0'.. */
  prefix: string;
  keys?: number;
  /** Keys outside the prefix, written too (no watcher may see them). */
  outside?: string;
  timeoutMs?: number;
}

/**
 * Puts, single deletes, range deletes and txns (two branches, each with a put) on a few keys,
 * through every member. Every put value is unique, so a revision's events name their request.
 */
export class ClusterWriter {
  readonly opsByValue: OpsByValue = new Map();
  readonly counts = { ok: 0, failed: 0 };
  /** Highest revision acknowledged. */
  acked = 0;
  private running = false;
  private loops: Promise<void>[] = [];

  constructor(private readonly endpoints: string[], private readonly opts: WriterOptions) {}

  start(): void {
    this.running = true;
    const n = this.opts.writers ?? 4;
    for (let i = 0; i < n; i++) this.loops.push(this.loop(i));
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
  }

  private async loop(i: number): Promise<void> {
    const kv = connect('etcdserverpb.KV', this.endpoints[i % this.endpoints.length]!);
    const p = new Prng(this.opts.seed * 7919 + i + 1);
    const nKeys = this.opts.keys ?? 8;
    const key = (): string => this.opts.prefix + 'k' + p.int(nKeys);
    let n = 0;
    const value = (): string => `w${i}-${n++}`;
    try {
      while (this.running) {
        const roll = p.int(20);
        try {
          if (roll < 9) {
            const op: Op = { t: 'put', key: key(), value: value() };
            this.opsByValue.set(op.value, [op]);
            await this.put(kv, op);
          } else if (roll < 12) {
            await unary(kv, 'DeleteRange', { key: Buffer.from(key(), 'latin1') }, { timeoutMs: this.opts.timeoutMs ?? 3000 }).then((r) => this.ack(r));
          } else if (roll < 13) {
            const a = p.int(nKeys - 2);
            await unary(kv, 'DeleteRange', {
              key: Buffer.from(`${this.opts.prefix}k${a}`, 'latin1'), range_end: Buffer.from(`${this.opts.prefix}k${a + 3}`, 'latin1'),
            }, { timeoutMs: this.opts.timeoutMs ?? 3000 }).then((r) => this.ack(r));
          } else if (roll < 14 && this.opts.outside !== undefined) {
            const op: Op = { t: 'put', key: this.opts.outside + 'k' + p.int(2), value: value() };
            this.opsByValue.set(op.value, [op]);
            await this.put(kv, op);
          } else {
            await this.txn(kv, p, nKeys, value);
          }
          this.counts.ok++;
        } catch {
          this.counts.failed++;
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    } finally {
      kv.close();
    }
  }

  private ack(r: { header?: { revision?: unknown } | null }): void {
    this.acked = Math.max(this.acked, num(r.header?.revision as number));
  }

  private async put(kv: ServiceClient<'etcdserverpb.KV'>, op: Op & { t: 'put' }): Promise<void> {
    const r = await unary(kv, 'Put', { key: Buffer.from(op.key, 'latin1'), value: Buffer.from(op.value, 'latin1') }, { timeoutMs: this.opts.timeoutMs ?? 3000 });
    this.ack(r);
  }

  /** A txn: compare a key's value (often false); each branch puts 1-3 keys and may delete one. */
  private async txn(kv: ServiceClient<'etcdserverpb.KV'>, p: Prng, nKeys: number, value: () => string): Promise<void> {
    const branch = (): Op[] => {
      const keys = Array.from({ length: nKeys }, (_, k) => `${this.opts.prefix}k${k}`);
      for (let k = keys.length - 1; k > 0; k--) {
        const j = p.int(k + 1);
        [keys[k], keys[j]] = [keys[j]!, keys[k]!];
      }
      const puts = 1 + p.int(3);
      const ops: Op[] = keys.slice(0, puts).map((k) => ({ t: 'put', key: k, value: value() }));
      if (p.int(2) === 0) ops.splice(p.int(ops.length + 1), 0, { t: 'del', key: keys[puts]!, end: null });
      for (const op of ops) if (op.t === 'put') this.opsByValue.set(op.value, ops);
      return ops;
    };
    const toReq = (ops: Op[]): object[] => ops.map((op) => op.t === 'put'
      ? { request_put: { key: Buffer.from(op.key, 'latin1'), value: Buffer.from(op.value, 'latin1') } }
      : { request_delete_range: { key: Buffer.from(op.key, 'latin1') } });
    const success = branch();
    const failure = branch();
    const r = await unary(kv, 'Txn', {
      compare: [{ key: Buffer.from(`${this.opts.prefix}k${p.int(nKeys)}`, 'latin1'), target: 3 /* VALUE */, result: 0 /* EQUAL */, value: Buffer.from(`w${p.int(4)}-${p.int(50)}`, 'latin1') }],
      success: toReq(success) as never, failure: toReq(failure) as never,
    }, { timeoutMs: this.opts.timeoutMs ?? 3000 });
    this.ack(r);
  }
}

// ------------------------------------------------------------------ the watchers

/**
 * One watcher that lives across member failures: opened on its home member; when its stream
 * ends (member killed, "no leader" for a require-leader stream, any error) it is opened again on
 * the next member with start_revision = last revision seen + 1, as clientv3 resumes.
 */
export class ResumingWatcher {
  readonly record: WatchRecord;
  private stopped = false;
  private current: { client: ServiceClient<'etcdserverpb.Watch'>; call: grpc.ClientDuplexStream<any, any> } | null = null;
  private timer: NodeJS.Timeout | null = null;

  constructor(readonly spec: WatchSpec, private readonly endpoints: string[]) {
    this.record = { spec, segments: [] };
  }

  start(): void {
    this.open(this.spec.home, this.spec.startRev);
  }

  /** Revision after the last event seen, or the start (null: start-0 watcher never created). */
  private resumeRev(): number | null {
    for (let s = this.record.segments.length - 1; s >= 0; s--) {
      const ev = this.record.segments[s]!.events;
      if (ev.length > 0) return ev[ev.length - 1]!.rev + 1;
    }
    const start = effectiveStart(this.record);
    return start === Infinity ? null : start;
  }

  /** Events received, over every segment. */
  get count(): number {
    return this.record.segments.reduce((a, s) => a + s.events.length, 0);
  }

  /** Has the watcher delivered every event of `oracle` in its range (from its start)? */
  complete(oracle: Oracle): boolean {
    const start = effectiveStart(this.record);
    const have = new Set(this.record.segments.flatMap((s) => s.events.map((e) => `${e.rev}:${e.key}`)));
    return oracle.events.every((e) => e.rev < start || !inRange(this.spec.range, e.key) || have.has(`${e.rev}:${e.key}`));
  }

  private open(member: number, startRev: number): void {
    if (this.stopped) return;
    const seg: Segment = { member, startRev, events: [] };
    this.record.segments.push(seg);
    const client = connect('etcdserverpb.Watch', this.endpoints[member]!);
    const md = new grpc.Metadata();
    if (this.spec.requireLeader) md.set('hasleader', 'true');
    const call = (client as unknown as { Watch(md: grpc.Metadata): grpc.ClientDuplexStream<any, any> }).Watch(md);
    this.current = { client, call };
    let ended = false;
    const end = (why: string): void => {
      if (ended) return;
      ended = true;
      if (!this.stopped) seg.end = why;
      call.removeAllListeners();
      call.on('error', () => undefined);
      call.cancel();
      client.close();
      if (this.stopped) return;
      const next = this.resumeRev();
      // Next member in turn; a start-0 watcher never created starts again from now.
      this.timer = setTimeout(() => this.open((member + 1) % this.endpoints.length, next ?? 0), 200);
    };
    call.on('data', (m: any) => {
      const header = num(m.header?.revision);
      if (m.created === true) {
        seg.created = header;
        if (m.canceled === true) end(`created canceled: ${m.cancel_reason ?? ''}`);
        return;
      }
      if (m.canceled === true) {
        end(`canceled (compact_revision ${num(m.compact_revision)}): ${m.cancel_reason ?? ''}`);
        return;
      }
      for (const e of m.events ?? []) {
        const kv = kvOf(e.kv ?? {});
        seg.events.push({ rev: kv.mod, key: kv.key, type: e.type === 1 || e.type === 'DELETE' ? DELETE : PUT, kv, prev: e.prev_kv ? kvOf(e.prev_kv) : null, header });
      }
    });
    call.on('error', (e: grpc.ServiceError) => end(`error ${e.code}: ${e.details}`));
    call.on('end', () => end('stream ended'));
    call.write({
      create_request: {
        key: Buffer.from(this.spec.range.key, 'latin1'),
        range_end: this.spec.range.end === null ? undefined : Buffer.from(this.spec.range.end, 'latin1'),
        start_revision: startRev, prev_kv: this.spec.prevKv,
      },
    });
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    const cur = this.current;
    if (cur !== null) {
      cur.call.removeAllListeners();
      cur.call.on('error', () => undefined);
      cur.call.cancel();
      cur.client.close();
    }
  }
}

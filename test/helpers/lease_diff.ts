// Differential testing of the Lease API against real etcd: one real etcd and one concord, the same
// requests sent to both (KV, Lease, Watch, LeaseKeepAlive streams), the answers compared.
//
//   const d = await LeasePair.start();
//   after(() => d.stop());
//   await d.lease('LeaseGrant', { ID: 7, TTL: 10 });           // asserts both answers are equal
//   await d.lease('LeaseGrant', { TTL: 10 }, { save: 'auto' }); // server-chosen ID: shape only
//   await d.lease('LeaseTimeToLive', (s) => ({ ID: s.id('auto'), keys: true }));
//
// Normal form (as test/helpers/differential.ts): proto3 defaults filled in, 64-bit integers as
// decimal strings, bytes as latin1 strings, enums by name. Header cluster_id, member_id and
// raft_term are each server's own: they are replaced by 'set' / '0' (so a server that sends an
// empty header where etcd fills one in is caught), the revision is compared exactly. Lease IDs
// chosen by a server (LeaseGrant with ID 0, saved under an alias) are replaced by '<alias>' on each
// side. What etcd answers in Go map order is sorted: LeaseTimeToLive keys, LeaseLeases leases.
// Remaining TTLs (LeaseTimeToLive TTL >= 0) are equal within `ttlTolerance` seconds (default 1):
// the two servers granted at slightly different instants and truncate to whole seconds.
//
// LEASE_DIFF_AGAINST=etcd runs a second real etcd in place of concord (to check the harness).

import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import { etcdserverpb } from '../../src/gen/proto';
import type { RequestInit } from '../../src/api/grpc/services';
import { startConcord } from './concord';
import { b, firstDifference } from './differential';

export { b };
import { startEtcd } from './etcd';
import type Long from 'long';
import { connect, long, openStream, type ServiceClient, type StreamReader } from './grpc_client';

export type LeaseMethod = 'LeaseGrant' | 'LeaseRevoke' | 'LeaseTimeToLive' | 'LeaseLeases';
export type KvMethod = 'Range' | 'Put' | 'DeleteRange' | 'Txn';

export type Outcome =
  | { ok: Record<string, unknown> }
  | { error: { code: number; details: string } };

interface Converter { toObject(m: never, o: object): Record<string, unknown> }

const types: Record<LeaseMethod | KvMethod | 'Watch' | 'LeaseKeepAlive', Converter> = {
  LeaseGrant: etcdserverpb.LeaseGrantResponse,
  LeaseRevoke: etcdserverpb.LeaseRevokeResponse,
  LeaseTimeToLive: etcdserverpb.LeaseTimeToLiveResponse,
  LeaseLeases: etcdserverpb.LeaseLeasesResponse,
  LeaseKeepAlive: etcdserverpb.LeaseKeepAliveResponse,
  Range: etcdserverpb.RangeResponse,
  Put: etcdserverpb.PutResponse,
  DeleteRange: etcdserverpb.DeleteRangeResponse,
  Txn: etcdserverpb.TxnResponse,
  Watch: etcdserverpb.WatchResponse,
};

const conversion = { longs: String, enums: String, defaults: true, arrays: true, oneofs: true };

function plain(v: unknown): unknown {
  if (v instanceof Uint8Array) return Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('latin1');
  if (Array.isArray(v)) return v.map(plain);
  if (v !== null && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) {
      if (x === undefined) continue;
      out[k] = plain(x);
    }
    if (out.header !== null && typeof out.header === 'object') {
      const h = out.header as Record<string, unknown>;
      for (const f of ['cluster_id', 'member_id', 'raft_term']) h[f] = h[f] === '0' || h[f] === undefined ? '0' : 'set';
    }
    return out;
  }
  return v;
}

/** Replaces every string equal to a saved lease ID by '<alias>'. */
function aliased(v: unknown, names: Map<string, string>): unknown {
  if (typeof v === 'string') return names.get(v) ?? v;
  if (Array.isArray(v)) return v.map((x) => aliased(x, names));
  if (v !== null && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) out[k] = aliased(x, names);
    return out;
  }
  return v;
}

/** Decimal IDs in numeric order, then aliases ('<name>') by name. */
function byId(x: string, y: string): number {
  const ax = x.startsWith('<');
  const ay = y.startsWith('<');
  if (ax || ay) return ax && ay ? (x < y ? -1 : x > y ? 1 : 0) : ax ? 1 : -1;
  return BigInt(x) < BigInt(y) ? -1 : BigInt(x) > BigInt(y) ? 1 : 0;
}

/** What etcd answers in Go map order, sorted (after aliasing: aliases sort by name). */
function canon<T>(v: T): T {
  const o = (v as { ok?: Record<string, unknown> }).ok ?? (v as Record<string, unknown>);
  if (o !== null && typeof o === 'object') {
    if (Array.isArray(o.leases)) (o.leases as { ID: string }[]).sort((x, y) => byId(x.ID, y.ID));
    if (Array.isArray(o.keys)) (o.keys as string[]).sort();
  }
  return v;
}

/** A decoded response in the comparable form (before aliasing). */
export function normalizeResponse(method: keyof typeof types, res: unknown): Record<string, unknown> {
  return plain(types[method].toObject(res as never, conversion)) as Record<string, unknown>;
}

function isServiceError(err: unknown): err is grpc.ServiceError {
  return err instanceof Error && typeof (err as Partial<grpc.ServiceError>).code === 'number';
}

function show(o: unknown): string {
  return JSON.stringify(o, null, 1);
}

interface Server {
  endpoint: string;
  stop(): Promise<void>;
}

/** One server's clients and the lease IDs it chose. */
export class Side {
  readonly kv: ServiceClient<'etcdserverpb.KV'>;
  readonly lease: ServiceClient<'etcdserverpb.Lease'>;
  readonly watch: ServiceClient<'etcdserverpb.Watch'>;
  /** alias -> the decimal lease ID this server chose. */
  readonly ids = new Map<string, string>();

  constructor(readonly name: 'etcd' | 'concord', readonly server: Server) {
    this.kv = connect('etcdserverpb.KV', server.endpoint);
    this.lease = connect('etcdserverpb.Lease', server.endpoint);
    this.watch = connect('etcdserverpb.Watch', server.endpoint);
  }

  /** The lease ID this server chose for `alias` (for the int64 request fields). */
  id(alias: string): Long {
    const id = this.ids.get(alias);
    assert.ok(id !== undefined, `no lease saved as ${alias} on ${this.name}`);
    return long(id);
  }

  /** decimal ID -> '<alias>' */
  names(): Map<string, string> {
    return new Map([...this.ids].map(([alias, id]) => [id, `<${alias}>`]));
  }

  call(service: 'kv' | 'lease', method: string, req: unknown, normalizeAs: keyof typeof types): Promise<Outcome> {
    const client = this[service];
    const fn = (client as unknown as Record<string, Function>)[method] as Function;
    return new Promise((resolve, reject) => {
      fn.call(client, req, new grpc.Metadata(), { deadline: Date.now() + 20_000 },
        (err: grpc.ServiceError | null, res?: unknown) => {
          if (err) {
            if (isServiceError(err)) resolve({ error: { code: err.code, details: err.details } });
            else reject(err);
          } else {
            resolve({ ok: normalizeResponse(normalizeAs, res) });
          }
        });
    });
  }

  close(): void {
    this.kv.close();
    this.lease.close();
    this.watch.close();
  }
}

export type Req<T> = T | ((s: Side) => T);
const resolveReq = <T>(r: Req<T>, s: Side): T => (typeof r === 'function' ? (r as (s: Side) => T)(s) : r);

export interface LeaseCallOpts {
  label?: string;
  /** LeaseGrant: save the (server-chosen) ID of each side under this alias; checks its shape. */
  save?: string;
  /** LeaseTimeToLive: allowed |etcd TTL - concord TTL| when both are >= 0 (default 1 s). */
  ttlTolerance?: number;
}

/** Two streams (one per side) read in step. */
export class PairStream<Q> {
  constructor(
    private readonly pair: LeasePair,
    readonly what: 'Watch' | 'LeaseKeepAlive',
    readonly calls: [grpc.ClientDuplexStream<Q, unknown>, grpc.ClientDuplexStream<Q, unknown>],
    readonly readers: [StreamReader<unknown>, StreamReader<unknown>],
  ) {}

  /** Writes `req` to both streams (nothing read). */
  write(req: Req<Q>): void {
    this.calls.forEach((c, i) => c.write(resolveReq(req, this.pair.sides[i]!)));
  }

  /** The next response of each side, compared; returns etcd's (normalized, aliased). */
  async next(label = '', timeoutMs = 5000): Promise<Record<string, unknown>> {
    const step = ++this.pair.steps;
    const got = await Promise.all(this.readers.map(async (r, i) => {
      try {
        return { ok: this.pair.alias(i, normalizeResponse(this.what, await r.next(timeoutMs))) };
      } catch (err) {
        return { failed: String((err as Error).message) };
      }
    }));
    assert.deepStrictEqual(got[1], got[0],
      `step ${step} ${this.what} ${label}: concord differs from etcd at ${firstDifference(got[0], got[1])}\n--- etcd:\n${show(got[0])}\n--- concord:\n${show(got[1])}`);
    const want = got[0] as { ok?: Record<string, unknown> };
    assert.ok(want.ok !== undefined, `step ${step} ${this.what} ${label}: etcd sent nothing (${show(want)})`);
    return want.ok;
  }

  /** Writes `req` to both and compares the next response of each. */
  async send(req: Req<Q>, label = ''): Promise<Record<string, unknown>> {
    this.write(req);
    return this.next(label || JSON.stringify(req));
  }

  /** Everything that arrives until each stream is quiet for `quietMs`, compared. */
  async drain(label = '', quietMs = 300): Promise<Record<string, unknown>[]> {
    const step = ++this.pair.steps;
    const got = await Promise.all(this.readers.map(async (r, i) =>
      (await r.drain(quietMs)).map((m) => this.pair.alias(i, normalizeResponse(this.what, m)))));
    assert.deepStrictEqual(got[1], got[0],
      `step ${step} ${this.what} drain ${label}: concord differs from etcd at ${firstDifference(got[0], got[1])}\n--- etcd:\n${show(got[0])}\n--- concord:\n${show(got[1])}`);
    return got[0]!;
  }

  /** Client half-close; both streams must then end the same way (normally, for etcd). */
  async halfClose(label = ''): Promise<string> {
    for (const c of this.calls) c.end();
    const ends = await Promise.all(this.readers.map(async (r) => {
      const extra = await r.drain(1000);
      const end = r.end;
      return { extra: extra.length, end: end === undefined ? 'open' : end.kind === 'end' ? 'end' : `error ${end.error.code} ${end.error.details}` };
    }));
    assert.deepStrictEqual(ends[1], ends[0], `${this.what} half-close ${label}`);
    return ends[0]!.end;
  }

  cancel(): void {
    for (const c of this.calls) c.cancel();
  }
}

export class LeasePair {
  readonly sides: [Side, Side];
  private readonly streams: PairStream<unknown>[] = [];
  /** Steps sent so far (for failure messages). */
  steps = 0;

  private constructor(etcd: Server, other: Server, readonly selfTest: boolean) {
    this.sides = [new Side('etcd', etcd), new Side('concord', other)];
  }

  /** The real etcd and concord (or, with LEASE_DIFF_AGAINST=etcd, a second etcd). */
  get etcd(): Server { return this.sides[0].server; }
  get concord(): Server { return this.sides[1].server; }

  /** Starts a fresh real etcd and a fresh concord with the same extra flags. */
  static async start(opts: { args?: string[] } = {}): Promise<LeasePair> {
    const selfTest = process.env.LEASE_DIFF_AGAINST === 'etcd';
    const args = opts.args ?? [];
    const [e, c] = await Promise.allSettled([
      startEtcd({ extraArgs: args }),
      selfTest ? startEtcd({ extraArgs: args }) : startConcord({ extraArgs: args }),
    ]);
    if (e.status === 'rejected' || c.status === 'rejected') {
      if (e.status === 'fulfilled') await e.value.stop();
      if (c.status === 'fulfilled') await c.value.stop();
      throw e.status === 'rejected' ? e.reason : (c as PromiseRejectedResult).reason;
    }
    return new LeasePair(e.value, c.value, selfTest);
  }

  async stop(): Promise<void> {
    for (const s of this.streams) s.cancel();
    for (const s of this.sides) s.close();
    await Promise.all(this.sides.map((s) => s.server.stop()));
  }

  /** Side i's normalized answer with its saved IDs replaced by their aliases. */
  alias<T>(i: number, v: T): T {
    return canon(aliased(v, this.sides[i]!.names()) as T);
  }

  private compare(step: number, what: string, want: unknown, got: unknown): void {
    assert.deepStrictEqual(got, want,
      `step ${step} ${what}: concord differs from etcd at ${firstDifference(want, got)}\n--- etcd:\n${show(want)}\n--- concord:\n${show(got)}`);
  }

  /** A Lease unary call on both; asserts equal outcomes (see the top of the file); returns etcd's. */
  async lease<M extends LeaseMethod>(method: M, req: Req<RequestInit<'etcdserverpb.Lease', M>>, opts: LeaseCallOpts = {}): Promise<Outcome> {
    const step = ++this.steps;
    const label = `${method} ${opts.label ?? ''}`;
    const outs = await Promise.all(this.sides.map((s) => s.call('lease', method, resolveReq(req, s), method)));
    if (opts.save !== undefined) {
      outs.forEach((o, i) => {
        const side = this.sides[i]!;
        assert.ok('ok' in o, `step ${step} ${label}: ${side.name} failed: ${show(o)}`);
        const id = o.ok.ID as string;
        // etcd: a server-chosen ID is a request-id masked to 63 bits: positive, never 0.
        assert.ok(BigInt(id) > 0n && BigInt(id) < 2n ** 63n, `step ${step} ${label}: ${side.name} chose lease ID ${id}`);
        assert.ok(![...side.ids.values()].includes(id), `step ${step} ${label}: ${side.name} chose an ID it chose before`);
        side.ids.set(opts.save!, id);
      });
    }
    const [want, got] = outs.map((o, i) => this.alias(i, o)) as [Outcome, Outcome];
    let cmp = got;
    if (method === 'LeaseTimeToLive' && 'ok' in want && 'ok' in got) {
      const e = Number(want.ok.TTL);
      const c = Number(got.ok.TTL);
      if (e >= 0 && c >= 0 && Math.abs(e - c) <= (opts.ttlTolerance ?? 1)) cmp = { ok: { ...got.ok, TTL: want.ok.TTL } };
    }
    if (cmp !== got) {
      assert.deepStrictEqual(cmp, want,
        `step ${step} ${label}: concord differs from etcd at ${firstDifference(want, got)}\n--- etcd:\n${show(want)}\n--- concord:\n${show(got)}`);
    } else {
      this.compare(step, label, want, got);
    }
    return want;
  }

  /** A KV unary call on both; asserts equal outcomes; returns etcd's. */
  async kv<M extends KvMethod>(method: M, req: Req<RequestInit<'etcdserverpb.KV', M>>, label = ''): Promise<Outcome> {
    const step = ++this.steps;
    const outs = await Promise.all(this.sides.map((s, i) => s.call('kv', method, resolveReq(req, s), method).then((o) => this.alias(i, o))));
    this.compare(step, `${method} ${label}`, outs[0], outs[1]);
    return outs[0]!;
  }

  /** Opens a Watch stream on both, sends `create` and compares the created responses. */
  async watch(create: Record<string, unknown>, label = 'create'): Promise<PairStream<unknown>> {
    const opened = this.sides.map((s) => openStream(s.watch, 'Watch'));
    const ps = new PairStream<unknown>(this, 'Watch',
      opened.map((o) => o.call) as [grpc.ClientDuplexStream<unknown, unknown>, grpc.ClientDuplexStream<unknown, unknown>],
      opened.map((o) => o.reader) as [StreamReader<unknown>, StreamReader<unknown>]);
    this.streams.push(ps);
    await ps.send({ create_request: create }, label);
    return ps;
  }

  /** Opens a LeaseKeepAlive stream on both. */
  keepAlive(): PairStream<RequestInit<'etcdserverpb.Lease', 'LeaseKeepAlive'>> {
    const opened = this.sides.map((s) => openStream(s.lease, 'LeaseKeepAlive'));
    const ps = new PairStream<RequestInit<'etcdserverpb.Lease', 'LeaseKeepAlive'>>(this, 'LeaseKeepAlive',
      opened.map((o) => o.call) as never, opened.map((o) => o.reader) as [StreamReader<unknown>, StreamReader<unknown>]);
    this.streams.push(ps as PairStream<unknown>);
    return ps;
  }
}

/** The successful answer of an outcome (fails the test on an error). */
export function okOf(o: Outcome, label = ''): Record<string, unknown> {
  assert.ok('ok' in o, `${label}: expected success, got ${show(o)}`);
  return o.ok;
}

/** Checks what etcd itself answered, so a test cannot silently stop testing what it claims. */
export function expectError(o: Outcome, code: grpc.status, details: string): void {
  assert.ok('error' in o, `expected error ${code} ${details}, got ${show(o)}`);
  assert.equal(o.error.code, code, `code (details: ${o.error.details})`);
  assert.equal(o.error.details, details);
}

/** header.revision of a successful outcome or of a normalized response. */
export function revOf(o: Outcome | Record<string, unknown>): number {
  // (LeaseGrantResponse has a string field named error: an Outcome's error is an object)
  assert.ok(!('error' in o && typeof o.error === 'object'), `expected success, got ${show(o)}`);
  const ok = 'ok' in o ? (o.ok as Record<string, unknown>) : (o as Record<string, unknown>);
  const h = ok.header as { revision: string } | null;
  assert.ok(h, 'header present');
  return Number(h.revision);
}

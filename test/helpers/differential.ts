// Differential testing against real etcd: one real etcd and one concord, the same requests sent
// to both, the answers compared field by field.
//
//   const d = await DiffPair.start();
//   after(() => d.stop());
//   await d.kv('Put', { key: b('a'), value: b('1') });      // asserts both answers are equal
//   const out = await d.kv('Range', { key: b('a') });       // -> etcd's normalized outcome
//
// An answer is normalized to plain JSON: every field present (proto3 defaults filled in, so the
// choice to send or omit a default value on the wire does not matter), 64-bit integers as
// decimal strings, bytes as latin1 strings, the oneof case named. Header cluster_id, member_id
// and raft_term differ between two independent servers by nature and are removed; the revision
// is kept: both servers start at revision 1, so revisions must match exactly. An error is
// compared by gRPC status code and details string.

import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import { etcdserverpb } from '../../src/gen/proto';
import type { RequestInit } from '../../src/api/grpc/services';
import { startConcord, type ConcordHandle } from './concord';
import { startEtcd, type EtcdHandle } from './etcd';
import { connect, toAddress, type ServiceClient } from './grpc_client';

export type KvMethod = 'Range' | 'Put' | 'DeleteRange' | 'Txn' | 'Compact';

export type Outcome =
  | { ok: Record<string, unknown> }
  | { error: { code: number; details: string } };

/** Decoded-response converters, per method. */
const responseType: Record<KvMethod, { toObject(m: never, o: object): Record<string, unknown> }> = {
  Range: etcdserverpb.RangeResponse,
  Put: etcdserverpb.PutResponse,
  DeleteRange: etcdserverpb.DeleteRangeResponse,
  Txn: etcdserverpb.TxnResponse,
  Compact: etcdserverpb.CompactionResponse,
};

const conversion = { longs: String, defaults: true, arrays: true, oneofs: true };

/** latin1 keeps every byte distinct and readable for ASCII keys. */
export function b(s: string): Buffer {
  return Buffer.from(s, 'latin1');
}

function plain(v: unknown): unknown {
  if (v instanceof Uint8Array) return Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('latin1');
  if (Array.isArray(v)) return v.map(plain);
  if (v !== null && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) {
      if (x === undefined) continue;
      out[k] = plain(x);
      if (k === 'header' && out[k] !== null && typeof out[k] === 'object') {
        const h = out[k] as Record<string, unknown>;
        delete h.cluster_id;
        delete h.member_id;
        delete h.raft_term;
      }
    }
    return out;
  }
  return v;
}

/** A decoded response (or a grpc error) in the comparable form. */
export function normalize(method: KvMethod, res: unknown): Record<string, unknown> {
  const obj = responseType[method].toObject(res as never, conversion);
  return plain(obj) as Record<string, unknown>;
}

function isServiceError(err: unknown): err is grpc.ServiceError {
  return err instanceof Error && typeof (err as Partial<grpc.ServiceError>).code === 'number';
}

function callKv(client: ServiceClient<'etcdserverpb.KV'>, method: KvMethod, req: unknown): Promise<Outcome> {
  const fn = (client as unknown as Record<string, Function>)[method] as Function;
  return new Promise((resolve, reject) => {
    fn.call(client, req, new grpc.Metadata(), { deadline: Date.now() + 20_000 },
      (err: grpc.ServiceError | null, res?: unknown) => {
        if (err) {
          if (isServiceError(err)) resolve({ error: { code: err.code, details: err.details } });
          else reject(err);
        } else {
          resolve({ ok: normalize(method, res) });
        }
      });
  });
}

const decoders: Record<KvMethod, { decode(b: Uint8Array): unknown }> = {
  Range: etcdserverpb.RangeResponse,
  Put: etcdserverpb.PutResponse,
  DeleteRange: etcdserverpb.DeleteRangeResponse,
  Txn: etcdserverpb.TxnResponse,
  Compact: etcdserverpb.CompactionResponse,
};

/** A raw KV answer decoded and normalized like kv() answers. */
function decodeRaw(path: string, res: Buffer): Record<string, unknown> {
  const method = path.replace('/etcdserverpb.KV/', '') as KvMethod;
  const dec = decoders[method];
  if (dec === undefined) return { raw: res.toString('hex') };
  return normalize(method, dec.decode(res));
}

function callRaw(client: grpc.Client, path: string, payload: Buffer): Promise<Outcome> {
  return new Promise((resolve) => {
    client.makeUnaryRequest<Buffer, Buffer>(path, (x) => x, (x) => x, payload, new grpc.Metadata(),
      { deadline: Date.now() + 20_000 }, (err, res) => {
        if (err) resolve({ error: { code: err.code, details: err.details } });
        else resolve({ ok: decodeRaw(path, res ?? Buffer.alloc(0)) });
      });
  });
}

/** Path and values of the first difference between two plain JSON values, or null. */
export function firstDifference(a: unknown, b: unknown, path = '$'): string | null {
  if (Object.is(a, b)) return null;
  if (a === null || b === null || typeof a !== 'object' || typeof b !== 'object' || Array.isArray(a) !== Array.isArray(b)) {
    return `${path}: etcd ${JSON.stringify(a)} / concord ${JSON.stringify(b)}`;
  }
  const ra = a as Record<string, unknown>;
  const rb = b as Record<string, unknown>;
  const keys = new Set([...Object.keys(ra), ...Object.keys(rb)]);
  for (const k of keys) {
    const d = firstDifference(ra[k], rb[k], Array.isArray(a) ? `${path}[${k}]` : `${path}.${k}`);
    if (d !== null) return d;
  }
  return null;
}

function show(o: Outcome): string {
  return JSON.stringify(o, (_k, v: unknown) => (typeof v === 'string' && v.length > 200 ? `${v.slice(0, 40)}…(${v.length})` : v), 1);
}

export class DiffPair {
  readonly etcd: EtcdHandle;
  readonly concord: ConcordHandle;
  private readonly kvs: [ServiceClient<'etcdserverpb.KV'>, ServiceClient<'etcdserverpb.KV'>];
  private readonly raws: [grpc.Client, grpc.Client];
  /** Steps sent so far (for failure messages). */
  steps = 0;

  private constructor(etcd: EtcdHandle, concord: ConcordHandle) {
    this.etcd = etcd;
    this.concord = concord;
    // Both sides get the same channel options: grpc-js' own default receive limit (4 MiB) is
    // above every answer here, and sends are unlimited.
    this.kvs = [connect('etcdserverpb.KV', etcd.endpoint), connect('etcdserverpb.KV', concord.endpoint)];
    this.raws = [
      new grpc.Client(toAddress(etcd.endpoint), grpc.credentials.createInsecure()),
      new grpc.Client(toAddress(concord.endpoint), grpc.credentials.createInsecure()),
    ];
  }

  /** Starts a fresh real etcd and a fresh concord. */
  static async start(opts: { etcdArgs?: string[]; concordArgs?: string[] } = {}): Promise<DiffPair> {
    const [etcd, concord] = await Promise.allSettled([
      startEtcd({ extraArgs: opts.etcdArgs ?? [] }),
      startConcord({ extraArgs: opts.concordArgs ?? [] }),
    ]);
    if (etcd.status === 'rejected' || concord.status === 'rejected') {
      if (etcd.status === 'fulfilled') await etcd.value.stop();
      if (concord.status === 'fulfilled') await concord.value.stop();
      throw etcd.status === 'rejected' ? etcd.reason : (concord as PromiseRejectedResult).reason;
    }
    return new DiffPair(etcd.value, concord.value);
  }

  async stop(): Promise<void> {
    for (const c of this.kvs) c.close();
    for (const c of this.raws) c.close();
    await Promise.all([this.etcd.stop(), this.concord.stop()]);
  }

  /**
   * Sends `req` to both servers (concurrently: they are independent), asserts the normalized
   * outcomes are deep-equal, and returns etcd's.
   */
  async kv<M extends KvMethod>(method: M, req: RequestInit<'etcdserverpb.KV', M>, label = ''): Promise<Outcome> {
    const step = ++this.steps;
    const [want, got] = await Promise.all([callKv(this.kvs[0], method, req), callKv(this.kvs[1], method, req)]);
    assert.deepStrictEqual(got, want,
      `step ${step} ${method} ${label}: concord differs from etcd at ${firstDifference(want, got)}\n--- etcd:\n${show(want)}\n--- concord:\n${show(got)}`);
    return want;
  }

  /**
   * Sends `req` to concord only. For the few requests real etcd 3.4 cannot answer (it crashes);
   * every use must say why in a comment.
   */
  concordOnly<M extends KvMethod>(method: M, req: RequestInit<'etcdserverpb.KV', M>): Promise<Outcome> {
    this.steps++;
    return callKv(this.kvs[1], method, req);
  }

  /** raw() to concord only; the same rule as concordOnly(). */
  concordOnlyRaw(path: string, payload: Buffer): Promise<Outcome> {
    this.steps++;
    return callRaw(this.raws[1], path, payload);
  }

  /** Sends raw request bytes to `path` on both (no encoding), compares the outcomes. */
  async raw(path: string, payload: Buffer, label = ''): Promise<Outcome> {
    const step = ++this.steps;
    const [want, got] = await Promise.all([callRaw(this.raws[0], path, payload), callRaw(this.raws[1], path, payload)]);
    assert.deepStrictEqual(got, want,
      `step ${step} raw ${path} ${label}: concord differs from etcd at ${firstDifference(want, got)}\n--- etcd:\n${show(want)}\n--- concord:\n${show(got)}`);
    return want;
  }
}

/** The successful answer of an outcome (fails the test on an error). */
export function okOf(o: Outcome, label = ''): Record<string, unknown> {
  assert.ok('ok' in o, `${label}: expected success, got ${show(o)}`);
  return o.ok;
}

/** Checks what etcd itself answered, so a test cannot silently stop testing what it claims. */
export function expectError(o: Outcome, code: grpc.status, details: string | RegExp): void {
  assert.ok('error' in o, `expected error ${code} ${String(details)}, got ${show(o)}`);
  assert.equal(o.error.code, code, `code (details: ${o.error.details})`);
  if (typeof details === 'string') assert.equal(o.error.details, details);
  else assert.match(o.error.details, details);
}

/** header.revision of a successful outcome. */
export function revOf(o: Outcome): number {
  const h = okOf(o).header as { revision: string } | null;
  assert.ok(h, 'header present');
  return Number(h.revision);
}

// Differential testing of the Watch API against real etcd: a scripted scenario (KV writes, watch
// streams, creates, cancels, progress requests) runs against a fresh real etcd and a fresh
// concord, and the full sequence of WatchResponses of every stream must be equal.
//
//   const r = await runWatchScenario([
//     { open: 's' },
//     { create: { key: 'a' } },                       // on the last opened stream
//     { put: 'a', value: '1' },
//   ]);
//   r.etcd.streams.s   // etcd's segments, for assertions on what etcd itself did
//
// How it runs. Each server gets the steps in order (both servers run concurrently, each one
// sequentially). After every step that can make a server send something (every step but
// `open`), the runner waits until no stream of that server received anything for `quietMs`
// (default 200 ms; at least 400 ms after a create with a start_revision: etcd moves unsynced
// watchers, those replaying history, every 100 ms; no wait while no stream is open), and
// files what arrived as one segment of each stream, labelled by the step. KV answers are
// compared as well (both servers get the same writes, so revisions match exactly).
//
// What is compared, per stream: the list of segments; in each segment the WatchResponses with
// every field (header.revision, watch_id, created, canceled, compact_revision, cancel_reason,
// fragment, events with type, kv with all fields, prev_kv), normalized as in differential.ts
// (proto3 defaults filled in, int64 as decimal strings, bytes as latin1). Header cluster_id,
// member_id and raft_term are removed. Inside one segment the responses are ordered stably by
// watch_id: etcd itself delivers the responses of different watchers in Go map order (random),
// while the order of one watcher's responses is kept. How a stream ended (if it did) is part of
// the record.
//
// WATCH_DIFF_AGAINST=etcd runs the scenario against two real etcds (checks that a scenario is
// deterministic, i.e. that a failure is concord's and not the harness's).

import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import { etcdserverpb } from '../../src/gen/proto';
import { startConcord } from './concord';
import { firstDifference, normalize as normalizeKv } from './differential';
import { startEtcd } from './etcd';
import { connect, type ServiceClient } from './grpc_client';

// ------------------------------------------------------------------ steps

/** A key or value: a string is taken as latin1 bytes. */
export type Bytes = string | Buffer;

export interface CreateSpec {
  key?: Bytes;
  range_end?: Bytes;
  start_revision?: number;
  progress_notify?: boolean;
  filters?: ('NOPUT' | 'NODELETE')[];
  prev_kv?: boolean;
  watch_id?: number;
  fragment?: boolean;
}

export type TxnOp = { put: Bytes; value: Bytes } | { del: Bytes; range_end?: Bytes };

/** Common step options. */
interface StepOpts {
  /** Quiet period after this step (ms); false: do not wait (the next step's segment gets what arrives). */
  wait?: number | false;
}

export type Step = StepOpts & (
  | { put: Bytes; value: Bytes; prev_kv?: boolean }
  | { del: Bytes; range_end?: Bytes }
  /** A Txn with no compares: `ops` run in the success branch, all at one revision. */
  | { txn: TxnOp[] }
  | { compact: number; physical?: boolean }
  /** Opens a Watch stream named `open`; later watch steps use the last opened one unless `on` says. */
  | { open: string }
  | { create: CreateSpec; on?: string }
  | { cancel: number; on?: string }
  | { progress: true; on?: string }
  /** Client half-close of the stream (call.end()). */
  | { halfClose: string }
  /** Client cancels the stream call. */
  | { abort: string }
  /** Does nothing but wait (`sleep` ms) and then collect like every step. */
  | { sleep: number }
);

/** One normalized WatchResponse. */
export type Resp = Record<string, unknown>;

export interface Segment {
  /** Index and short description of the step after which these arrived. */
  step: string;
  responses: Resp[];
}

export interface StreamRecord {
  segments: Segment[];
  /** How the stream ended, if it did: 'end' or 'error <code> <details>'. */
  end?: string;
}

export interface SideResult {
  streams: Record<string, StreamRecord>;
  /** Normalized KV answers (or errors), in step order. */
  kv: unknown[];
}

export interface ScenarioResult {
  etcd: SideResult;
  concord: SideResult;
}

export interface ScenarioOpts {
  /** Default quiet period after each step (ms; default 200). */
  quietMs?: number;
  /** Extra flags for both servers (etcd's flag names; concord takes the same). */
  serverArgs?: string[];
  /** Applied to both sides' records before comparing (for timing-dependent scenarios). Default: identity. */
  shape?: (side: SideResult) => unknown;
  label?: string;
}

// ------------------------------------------------------------------ normalization

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
    if ('header' in out && out.header !== null && typeof out.header === 'object') {
      const h = out.header as Record<string, unknown>;
      delete h.cluster_id;
      delete h.member_id;
      delete h.raft_term;
    }
    return out;
  }
  return v;
}

/** A decoded WatchResponse in the comparable form. */
export function normalizeWatch(res: unknown): Resp {
  return plain(etcdserverpb.WatchResponse.toObject(res as etcdserverpb.WatchResponse, conversion)) as Resp;
}

function bytesOf(v: Bytes | undefined): Buffer | undefined {
  if (v === undefined) return undefined;
  return typeof v === 'string' ? Buffer.from(v, 'latin1') : v;
}

/** Least quiet period after a create with a start_revision (etcd syncs such watchers every 100 ms). */
export const HISTORY_QUIET_MS = 400;

const FILTER = { NOPUT: 0, NODELETE: 1 } as const;

function createRequest(c: CreateSpec): Record<string, unknown> {
  return {
    key: bytesOf(c.key),
    range_end: bytesOf(c.range_end),
    start_revision: c.start_revision,
    progress_notify: c.progress_notify,
    filters: c.filters?.map((f) => FILTER[f]),
    prev_kv: c.prev_kv,
    watch_id: c.watch_id,
    fragment: c.fragment,
  };
}

/** Short text of a step for labels. */
export function describeStep(s: Step): string {
  const v = (x: unknown): string => (Buffer.isBuffer(x) ? `0x${x.toString('hex')}` : JSON.stringify(x));
  return JSON.stringify(s, (k, x: unknown) => {
    if (k === '' || typeof x !== 'object' || x === null) return typeof x === 'string' && x.length > 24 ? `${x.slice(0, 12)}…(${x.length})` : x;
    if ((x as { type?: string }).type === 'Buffer') return v(Buffer.from((x as { data: number[] }).data));
    return x;
  });
}

// ------------------------------------------------------------------ one side

type Endpoint = { endpoint: string };

class Side {
  private readonly kv: ServiceClient<'etcdserverpb.KV'>;
  private readonly watchClient: ServiceClient<'etcdserverpb.Watch'>;
  private readonly calls = new Map<string, grpc.ClientDuplexStream<unknown, unknown>>();
  private readonly inbox = new Map<string, Resp[]>();
  private lastOpened: string | undefined;
  private lastArrival = 0;
  readonly result: SideResult = { streams: {}, kv: [] };

  constructor(server: Endpoint) {
    this.kv = connect('etcdserverpb.KV', server.endpoint);
    // Responses are big in the fragment scenarios: no receive limit on the client side.
    this.watchClient = connect('etcdserverpb.Watch', server.endpoint, { 'grpc.max_receive_message_length': -1 });
  }

  close(): void {
    for (const call of this.calls.values()) call.cancel();
    this.kv.close();
    this.watchClient.close();
  }

  private stream(on: string | undefined): grpc.ClientDuplexStream<unknown, unknown> {
    const name = on ?? this.lastOpened;
    assert.ok(name !== undefined, 'watch step before any { open }');
    const call = this.calls.get(name);
    assert.ok(call, `no stream named ${name}`);
    return call;
  }

  private open(name: string): void {
    assert.ok(!this.calls.has(name), `stream ${name} opened twice`);
    const fn = (this.watchClient as unknown as Record<string, Function>).Watch as Function;
    const call = fn.call(this.watchClient, new grpc.Metadata()) as grpc.ClientDuplexStream<unknown, unknown>;
    this.calls.set(name, call);
    this.inbox.set(name, []);
    const rec: StreamRecord = { segments: [] };
    this.result.streams[name] = rec;
    this.lastOpened = name;
    call.on('data', (msg: unknown) => {
      this.lastArrival = Date.now();
      this.inbox.get(name)!.push(normalizeWatch(msg));
    });
    call.on('error', (err: grpc.ServiceError) => {
      this.lastArrival = Date.now();
      rec.end ??= `error ${err.code} ${err.details}`;
    });
    call.on('end', () => {
      this.lastArrival = Date.now();
      rec.end ??= 'end';
    });
  }

  private unary(method: 'Put' | 'DeleteRange' | 'Txn' | 'Compact', req: unknown): Promise<void> {
    const fn = (this.kv as unknown as Record<string, Function>)[method] as Function;
    return new Promise((resolve) => {
      fn.call(this.kv, req, new grpc.Metadata(), { deadline: Date.now() + 10_000 }, (err: grpc.ServiceError | null, res?: unknown) => {
        this.result.kv.push(err ? { method, error: { code: err.code, details: err.details } } : { method, ok: normalizeKv(method, res) });
        resolve();
      });
    });
  }

  async run(step: Step, label: string, defaultQuiet: number): Promise<void> {
    const s = step as unknown as Record<string, unknown>;
    if ('put' in step) {
      await this.unary('Put', { key: bytesOf(step.put), value: bytesOf(step.value), prev_kv: step.prev_kv });
    } else if ('del' in step) {
      await this.unary('DeleteRange', { key: bytesOf(step.del), range_end: bytesOf(step.range_end) });
    } else if ('txn' in step) {
      await this.unary('Txn', {
        success: step.txn.map((op) => ('put' in op
          ? { request_put: { key: bytesOf(op.put), value: bytesOf(op.value) } }
          : { request_delete_range: { key: bytesOf(op.del), range_end: bytesOf(op.range_end) } })),
      });
    } else if ('compact' in step) {
      await this.unary('Compact', { revision: step.compact, physical: step.physical ?? true });
    } else if ('open' in step) {
      this.open(step.open);
      return; // nothing can arrive before a request is sent
    } else if ('create' in step) {
      this.stream(step.on).write({ create_request: createRequest(step.create) });
    } else if ('cancel' in step) {
      this.stream(step.on).write({ cancel_request: { watch_id: step.cancel } });
    } else if ('progress' in step) {
      this.stream(step.on).write({ progress_request: {} });
    } else if ('halfClose' in step) {
      this.stream(step.halfClose).end();
    } else if ('abort' in step) {
      this.stream(step.abort).cancel();
    } else if ('sleep' in step) {
      await new Promise((r) => setTimeout(r, step.sleep));
    } else {
      throw new Error(`unknown step ${JSON.stringify(s)}`);
    }
    let quiet = step.wait === false ? 0 : step.wait ?? defaultQuiet;
    // A watcher replaying history is moved by etcd's 100 ms sync loop: give it time.
    if ('create' in step && step.wait === undefined && (step.create.start_revision ?? 0) !== 0) quiet = Math.max(quiet, HISTORY_QUIET_MS);
    if (this.calls.size === 0) quiet = 0; // no stream: nothing to wait for
    if (quiet > 0) await this.quiet(quiet);
    // wait: false -> what arrives is filed with the next step that waits (no timing-dependent split).
    if (step.wait !== false) this.file(label);
  }

  /** Waits until nothing arrived on any stream for `ms`. */
  private async quiet(ms: number): Promise<void> {
    const start = Date.now();
    for (;;) {
      const since = Date.now() - Math.max(this.lastArrival, start);
      if (since >= ms) return;
      await new Promise((r) => setTimeout(r, ms - since));
    }
  }

  /** Moves what arrived into a new segment of each stream (empty segments are kept: silence is compared too). */
  private file(label: string): void {
    for (const [name, box] of this.inbox) {
      const rec = this.result.streams[name]!;
      rec.segments.push({ step: label, responses: box.splice(0) });
    }
  }
}

// ------------------------------------------------------------------ comparison

function sortedSegment(rs: Resp[]): Resp[] {
  return rs
    .map((r, i) => ({ r, i }))
    .sort((a, b) => {
      const x = BigInt(a.r.watch_id as string);
      const y = BigInt(b.r.watch_id as string);
      return x < y ? -1 : x > y ? 1 : a.i - b.i;
    })
    .map((e) => e.r);
}

/** The record in the compared form: segments ordered by watch_id (stable). */
export function canonical(side: SideResult): SideResult {
  const streams: Record<string, StreamRecord> = {};
  for (const [name, rec] of Object.entries(side.streams)) {
    streams[name] = { ...rec, segments: rec.segments.map((s) => ({ step: s.step, responses: sortedSegment(s.responses) })) };
  }
  return { streams, kv: side.kv };
}

/** A response in one short line, default-valued fields left out (for failure messages). */
export function brief(r: Resp): string {
  const drop = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.length === 0 ? undefined : v.map(drop);
    if (v !== null && typeof v === 'object') {
      const out: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v)) {
        const d = drop(x);
        if (d !== undefined) out[k] = d;
      }
      return Object.keys(out).length === 0 ? undefined : out;
    }
    if (v === false || v === '' || v === '0' || v === null) return undefined;
    if (typeof v === 'string' && v.length > 64) return `${v.slice(0, 8)}…(${v.length})`;
    return v;
  };
  const events = r.events as unknown[];
  if (events.length > 6) {
    // Long event lists: the first two, a count, the last one.
    const shown = drop({ ...r, events: [] }) as Record<string, unknown> | undefined;
    const ev = (e: unknown): string => JSON.stringify(drop(e));
    return `${JSON.stringify(shown ?? {})} events(${events.length}): ${ev(events[0])}, ${ev(events[1])}, …, ${ev(events.at(-1))}`;
  }
  return JSON.stringify(drop(r) ?? {});
}

export function render(side: SideResult): string {
  const lines: string[] = [];
  for (const [name, rec] of Object.entries(side.streams)) {
    lines.push(`stream ${name}${rec.end !== undefined ? ` (ended: ${rec.end})` : ''}`);
    for (const seg of rec.segments) {
      if (seg.responses.length === 0) continue;
      lines.push(`  after ${seg.step}:`);
      for (const r of seg.responses) lines.push(`    ${brief(r)}`);
    }
  }
  return lines.join('\n');
}

/** Long JSON string literals in a firstDifference() line cut to their start and length. */
function shorten(diff: string | null): string | null {
  return diff?.replace(/"((?:[^"\\]|\\.){64,})"/g, (_m, body: string) => `"${body.slice(0, 16)}…(${body.length})"`) ?? null;
}

// ------------------------------------------------------------------ runner

async function startPair(args: string[]): Promise<{ a: Endpoint & { stop(): Promise<void> }; b: Endpoint & { stop(): Promise<void> } }> {
  const selfTest = process.env.WATCH_DIFF_AGAINST === 'etcd';
  const [a, b] = await Promise.allSettled([
    startEtcd({ extraArgs: args }),
    selfTest ? startEtcd({ extraArgs: args }) : startConcord({ extraArgs: args }),
  ]);
  if (a.status === 'rejected' || b.status === 'rejected') {
    if (a.status === 'fulfilled') await a.value.stop();
    if (b.status === 'fulfilled') await b.value.stop();
    throw a.status === 'rejected' ? a.reason : (b as PromiseRejectedResult).reason;
  }
  return { a: a.value, b: b.value };
}

/**
 * Runs `steps` against a fresh real etcd and a fresh concord (both stopped whatever happens),
 * asserts the records are equal (after `opts.shape`), and returns both raw records.
 */
export async function runWatchScenario(steps: Step[], opts: ScenarioOpts = {}): Promise<ScenarioResult> {
  const quietMs = opts.quietMs ?? 200;
  const { a, b } = await startPair(opts.serverArgs ?? []);
  const sides = [new Side(a), new Side(b)] as const;
  try {
    const labels = steps.map((s, i) => `#${i} ${describeStep(s)}`);
    await Promise.all(sides.map(async (side) => {
      for (let i = 0; i < steps.length; i++) await side.run(steps[i]!, labels[i]!, quietMs);
    }));
    const [want, got] = sides.map((s) => canonical(s.result)) as [SideResult, SideResult];
    const shape = opts.shape ?? ((x: SideResult) => x);
    const sw = shape(want);
    const sg = shape(got);
    if (process.env.WATCH_DIFF_VERBOSE) console.log(`--- ${opts.label ?? 'scenario'} (etcd)\n${render(want)}`);
    const diff = shorten(firstDifference(sw, sg));
    assert.ok(diff === null,
      `${opts.label ?? 'watch scenario'}: concord differs from etcd at ${diff}\n` +
      `--- etcd:\n${render(want)}\n--- concord:\n${render(got)}\n` +
      `--- etcd KV answers / concord KV answers differ: ${firstDifference(want.kv, got.kv) ?? 'no'}`);
    return { etcd: want, concord: got };
  } finally {
    for (const s of sides) s.close();
    await Promise.all([a.stop(), b.stop()]);
  }
}

/** Every response of `stream` in a record, segments flattened. */
export function responsesOf(side: SideResult, stream: string): Resp[] {
  const rec = side.streams[stream];
  assert.ok(rec, `no stream ${stream}`);
  return rec.segments.flatMap((s) => s.responses);
}

/** The responses of `stream` that arrived after step number `index`. */
export function segmentOf(side: SideResult, stream: string, index: number): Resp[] {
  const rec = side.streams[stream];
  assert.ok(rec, `no stream ${stream}`);
  const seg = rec.segments.find((s) => s.step.startsWith(`#${index} `));
  assert.ok(seg, `no segment for step #${index} on ${stream}`);
  return seg.responses;
}

// Put latency while the server does maintenance (issue #13 items 2 and 7), measured by
// perf/run.ts on fresh members started with --quota-backend-bytes 8 GiB (both servers' default
// quota, 2 GiB, is too close to a 1 GiB fill):
//
// defrag, S MiB (--defrag-mib, default 1024; --quick 64): fill S MiB of 8,000-byte values (Txns of
// 64 puts, 4 in flight, from this process), every other key under a prefix of its own; delete
// that prefix (DeleteRange in chunks of 4,096 keys) and compact physically at the current
// revision, so half of the database is free pages. Status gives `db size` / `db size in use`.
// Then a putter process (perf/leasegen.ts: 16 closed-loop clients, 256-byte values, random keys)
// runs: a baseline window (--duration s after --warmup s), then one Defragment call, then an
// after window of --duration s. Status again right after the Defragment.
//
// maintenance, S MiB (--maint-mib, default 256; --quick 32): fill S MiB the same way (nothing
// deleted); the putter runs a baseline window, then HashKV (revision 0) back to back for
// --duration s (at least one call), Snapshot (read to the end and dropped) likewise, then Hash,
// with half a second of put load between the phases.
//
// Phases of the put load: the baseline and after windows take the puts sent in them; a
// maintenance phase (from the first call sent to the last answer) takes every put whose flight
// overlaps it, so a put held up by a call counts there even if it was sent just before
// (perf/pause.ts). Per phase: puts/s, latency percentiles, the "pause" (the longest stretch with
// no put completing), and server CPU in cores. A call answered UNIMPLEMENTED (concord before
// online defragmentation) is reported "n/a", not as an error; any other failure is an error.
import http2 from 'node:http2';
import * as hdr from 'hdr-histogram-js';
import { etcdserverpb } from '../src/gen/proto';
import { prefixEnd } from '../src/util/prefix_end';
import { nowUs, putRequest, type Phase, type PutterConfig, type PutterResult, type TimelinePoint } from './leasegen';
import { processCpuUs } from './procstat';
import { align, failedSample, median, type Cell, type Options, type PerfReport, type Sample, type Target } from './run';
import { Child } from './watch';
import type { Workload } from './workloads';

export const MAINT = {
  /**
   * A few KiB, and not a multiple of the page size: a record of exactly 8 KiB of value plus its key
   * and headers takes three 4 KiB overflow pages in both LMDB and bbolt (50% waste); 8,000 bytes
   * with its overhead fits in two.
   */
  valueBytes: 8000,
  /**
   * Puts per fill Txn (~500 KB, under both servers' 1.5 MiB request limit and 128 txn ops):
   * per-request costs (raft entry, WAL record, apply) shared by 64 values make the fill 1.5-2x
   * faster than single puts on both servers.
   */
  fillPerTxn: 64,
  /** Fill Txns in flight. */
  fillInflight: 4,
  fillConns: 4,
  deleteChunk: 4096,
  putClients: 16,
  putConns: 2,
  /** Both servers' quota (and so concord's map size, 2 x quota) for these workloads. */
  quotaBytes: 8 * 2 ** 30,
  callTimeoutMs: 10 * 60_000,
};

export const FILL_PREFIX = 'bench/fill/';
const PUT_PREFIX = 'bench/mp/';

/** Server flags of the maintenance workloads. */
export function maintServerArgs(target: Target): string[] {
  return target === 'concord' ? ['--quota-backend-bytes', String(MAINT.quotaBytes)] : [`--quota-backend-bytes=${MAINT.quotaBytes}`];
}

type Lat = Sample['latencyUs'];

export type MaintOpName = 'defrag' | 'hashkv' | 'snapshot' | 'hash';

export interface MaintOp {
  name: MaintOpName;
  /** ok; n/a = the server answered UNIMPLEMENTED; error = any other failure. */
  status: 'ok' | 'n/a' | 'error';
  calls: number;
  /** Call durations, ms (calls answered OK). */
  meanMs: number;
  maxMs: number;
  /** Snapshot: bytes streamed per call (gRPC framing included). */
  bytes?: number;
  message?: string;
}

export interface MaintPhase {
  name: 'baseline' | 'defrag' | 'after' | 'hashkv' | 'snapshot' | 'hash';
  /** Seconds from the start of the baseline window. */
  fromS: number;
  toS: number;
  puts: number;
  putsPerSec: number;
  latencyUs: Lat;
  /** The longest stretch of the phase with no put completing (ms), and its start (s from the baseline start). */
  pauseMs: number;
  pauseAtS: number;
  /** Server CPU seconds per second. */
  serverCores: number;
}

export interface DbSizes { size: number; inUse: number }

export interface MaintExtra {
  kind: 'defrag' | 'maintenance';
  fillMiB: number;
  fillKeys: number;
  valueBytes: number;
  fillS: number;
  /** defrag: keys deleted, and the DeleteRange + physical compaction time. */
  deletedKeys?: number;
  deleteCompactS?: number;
  dbBefore: DbSizes;
  dbAfter: DbSizes;
  ops: MaintOp[];
  phases: MaintPhase[];
  timeline: TimelinePoint[];
  timelineBucketS: number;
  notes: string[];
}

// ---- gRPC control calls (node:http2: a handful of calls, never on the load's hot path) --------------

export interface CallResult {
  /** grpc-status (-1: no status: the connection failed or the call timed out). */
  status: number;
  message: string;
  /** The whole response body (unary calls), or null when only counted. */
  body: Buffer | null;
  bytes: number;
  ms: number;
}

/**
 * One gRPC call on a connection of its own (closed after: an idle one delays concord's shutdown).
 * keep = false: a server stream (Snapshot) whose bytes are counted and dropped.
 */
export function grpcCall(address: string, method: string, body: Uint8Array, timeoutMs: number, keep = true): Promise<CallResult> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    // A wide receive window: a snapshot of hundreds of MiB must not crawl at 64 KiB per round trip.
    const session = http2.connect(`http://${address}`, { settings: { initialWindowSize: 16 << 20 } });
    session.on('connect', () => session.setLocalWindowSize(64 << 20));
    const chunks: Buffer[] = [];
    let bytes = 0;
    let status = -1;
    let message = '';
    let settled = false;
    const finish = (err: string | null): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      session.destroy();
      const data = keep ? Buffer.concat(chunks) : null;
      resolve({
        status: err !== null ? -1 : status, message: err ?? message,
        body: data !== null && data.length >= 5 ? data.subarray(5, 5 + data.readUInt32BE(1)) : null,
        bytes, ms: performance.now() - t0,
      });
    };
    const timer = setTimeout(() => finish(`no answer in ${timeoutMs} ms`), timeoutMs);
    session.on('error', (err) => finish(err.message));
    const frame = Buffer.alloc(5 + body.length);
    frame.writeUInt32BE(body.length, 1);
    frame.set(body, 5);
    const s = session.request({ ':method': 'POST', ':path': method, 'content-type': 'application/grpc', te: 'trailers' });
    const onHeaders = (h: http2.IncomingHttpHeaders): void => {
      if (h['grpc-status'] !== undefined) status = Number(h['grpc-status']);
      if (typeof h['grpc-message'] === 'string') message = decodeURIComponent(h['grpc-message']);
    };
    s.on('response', onHeaders);
    s.on('trailers', onHeaders);
    s.on('data', (d: Buffer) => { bytes += d.length; if (keep) chunks.push(d); });
    s.on('error', (err) => finish(err.message));
    s.on('close', () => finish(null));
    s.end(frame);
  });
}

const M = '/etcdserverpb.Maintenance/';
const GRPC_UNIMPLEMENTED = 12;

async function status(address: string): Promise<{ sizes: DbSizes; revision: number }> {
  const r = await grpcCall(address, M + 'Status', etcdserverpb.StatusRequest.encode({}).finish(), 30_000);
  if (r.status !== 0 || r.body === null) throw new Error(`Status: grpc-status ${r.status} ${r.message}`);
  const s = etcdserverpb.StatusResponse.decode(r.body);
  return { sizes: { size: Number(s.dbSize ?? 0), inUse: Number(s.dbSizeInUse ?? 0) }, revision: Number(s.header?.revision ?? 0) };
}

async function unaryOk(address: string, method: string, body: Uint8Array, timeoutMs: number): Promise<void> {
  const r = await grpcCall(address, method, body, timeoutMs);
  if (r.status !== 0) throw new Error(`${method}: grpc-status ${r.status} ${r.message}`);
}

const OP_CALLS: Record<MaintOpName, { method: string; body: Uint8Array; stream: boolean }> = {
  defrag: { method: M + 'Defragment', body: etcdserverpb.DefragmentRequest.encode({}).finish(), stream: false },
  hashkv: { method: M + 'HashKV', body: etcdserverpb.HashKVRequest.encode({ revision: 0 }).finish(), stream: false },
  snapshot: { method: M + 'Snapshot', body: etcdserverpb.SnapshotRequest.encode({}).finish(), stream: true },
  hash: { method: M + 'Hash', body: etcdserverpb.HashRequest.encode({}).finish(), stream: false },
};

/** Calls op back to back until minMs has passed since the first (at least once); stops at the first failure. */
async function runOp(address: string, name: MaintOpName, minMs: number): Promise<{ op: MaintOp; fromUs: number; toUs: number }> {
  const c = OP_CALLS[name];
  const fromUs = nowUs();
  const ms: number[] = [];
  let bytes = 0;
  let op: MaintOp | null = null;
  do {
    const r = await grpcCall(address, c.method, c.body, MAINT.callTimeoutMs, !c.stream);
    if (r.status === GRPC_UNIMPLEMENTED) { op = { name, status: 'n/a', calls: 0, meanMs: 0, maxMs: 0, message: r.message }; break; }
    if (r.status !== 0 || (c.stream && r.bytes === 0)) {
      op = { name, status: 'error', calls: ms.length, meanMs: 0, maxMs: 0, message: `grpc-status ${r.status} ${r.message}`.trim() };
      break;
    }
    ms.push(r.ms);
    bytes = r.bytes;
  } while ((nowUs() - fromUs) / 1000 < minMs);
  const toUs = nowUs();
  op ??= { name, status: 'ok', calls: 0, meanMs: 0, maxMs: 0 };
  op.calls = ms.length;
  if (ms.length > 0) {
    op.meanMs = ms.reduce((a, b) => a + b, 0) / ms.length;
    op.maxMs = Math.max(...ms);
  }
  if (c.stream && bytes > 0) op.bytes = bytes;
  return { op, fromUs, toUs };
}

// ---- fill -------------------------------------------------------------------------------------------

export function fillKey(i: number, deletable: boolean): string {
  return `${FILL_PREFIX}${deletable && i % 2 === 1 ? 'd' : 'k'}/${String(i).padStart(8, '0')}`;
}

/**
 * Sends requests 0..n-1 (bodyOf(i)) to `path`, `inflight` at a time over `connCount` HTTP/2
 * connections. node:http2, not perf/h2client.ts: fill Txns are ~128 KB, beyond h2client's one
 * DATA frame per message, and a few thousand calls make node:http2's per-call cost irrelevant.
 */
async function callAll(address: string, n: number, bodyOf: (i: number) => Uint8Array, path: string,
  inflight: number, connCount: number): Promise<{ ok: number; failed: number; errorSamples: string[] }> {
  let next = 0;
  let ok = 0;
  let failed = 0;
  const errorSamples: string[] = [];
  const sessions: http2.ClientHttp2Session[] = [];
  for (let k = 0; k < connCount; k++) {
    const session = http2.connect(`http://${address}`);
    session.on('error', () => {}); // each stream reports its own failure
    sessions.push(session);
  }
  const one = (session: http2.ClientHttp2Session, i: number): Promise<void> => new Promise((resolve) => {
    const body = bodyOf(i);
    const frame = Buffer.allocUnsafe(5 + body.length);
    frame[0] = 0;
    frame.writeUInt32BE(body.length, 1);
    frame.set(body, 5);
    let status = '';
    let done = false;
    const finish = (err: string | null): void => {
      if (done) return;
      done = true;
      if (err === null && status === '0') ok++;
      else {
        failed++;
        if (errorSamples.length < 5) errorSamples.push(`${path}: ${err ?? `grpc-status ${status}`}`);
      }
      resolve();
    };
    const s = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers' });
    s.on('response', (h) => { if (h['grpc-status'] !== undefined) status = String(h['grpc-status']); });
    s.on('trailers', (h) => (status = String(h['grpc-status'])));
    s.on('data', () => {});
    s.on('error', (err) => finish(err.message));
    s.on('close', () => finish(null));
    s.end(frame);
  });
  const worker = async (k: number): Promise<void> => {
    const session = sessions[k % sessions.length]!;
    while (next < n && failed === 0) await one(session, next++);
  };
  try {
    await Promise.all(Array.from({ length: Math.min(inflight, n) }, (_, k) => worker(k)));
  } finally {
    for (const s of sessions) s.destroy();
  }
  return { ok, failed, errorSamples };
}

function fillValue(): Uint8Array {
  // Incompressible bytes (neither server compresses, but a snapshot reader might).
  const v = new Uint8Array(MAINT.valueBytes);
  let x = 0x9e3779b9;
  for (let i = 0; i < v.length; i++) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    v[i] = x & 0xff;
  }
  return v;
}

// ---- the measurement --------------------------------------------------------------------------------

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function latOf(h: hdr.Histogram): Lat {
  return { p50: h.getValueAtPercentile(50), p90: h.getValueAtPercentile(90), p99: h.getValueAtPercentile(99),
    p999: h.getValueAtPercentile(99.9), max: h.maxValue, mean: h.mean };
}

const CURVE_POINTS: number[] = [];
for (let k = 0; k <= 50; k++) CURVE_POINTS.push(100 * (1 - Math.pow(10, -k / 10)));

export async function measureMaint(address: string, serverPid: number, w: Workload, mib: number, o: Options, target: Target,
  round: number): Promise<Sample> {
  try {
    return await measure(address, serverPid, w.maint!.kind, mib, o, target, round);
  } catch (err) {
    return failedSample(target, round, mib, [err instanceof Error ? err.message : String(err)]);
  }
}

async function measure(address: string, serverPid: number, kind: 'defrag' | 'maintenance', mib: number, o: Options,
  target: Target, round: number): Promise<Sample> {
  const notes: string[] = [];
  const errorSamples: string[] = [];
  let errors = 0;
  const fail = (msg: string): void => {
    errors++;
    if (errorSamples.length < 5) errorSamples.push(msg);
  };
  const deletable = kind === 'defrag';

  // 1. Fill (and for defrag, free half of it).
  const keys = Math.ceil((mib * 2 ** 20) / MAINT.valueBytes);
  const value = fillValue();
  const f0 = nowUs();
  const per = MAINT.fillPerTxn;
  const txns = Math.ceil(keys / per);
  const enc = new TextEncoder();
  const filled = await callAll(address, txns, (t) => {
    const success = [];
    for (let i = t * per; i < Math.min(keys, (t + 1) * per); i++) success.push({ request_put: { key: enc.encode(fillKey(i, deletable)), value } });
    return etcdserverpb.TxnRequest.encode({ success }).finish();
  }, '/etcdserverpb.KV/Txn', MAINT.fillInflight, MAINT.fillConns);
  const fillS = (nowUs() - f0) / 1e6;
  if (filled.failed > 0) {
    errors += filled.failed;
    errorSamples.push(...filled.errorSamples.slice(0, 5 - errorSamples.length));
    return { ...failedSample(target, round, mib, errorSamples), errors };
  }
  let deletedKeys: number | undefined;
  let deleteCompactS: number | undefined;
  if (deletable) {
    const d0 = nowUs();
    const chunks = Math.ceil(keys / MAINT.deleteChunk);
    const del = await callAll(address, chunks, (c) => etcdserverpb.DeleteRangeRequest.encode({
      key: enc.encode(fillKey(c * MAINT.deleteChunk + 1, true)),
      range_end: c + 1 < chunks ? enc.encode(fillKey((c + 1) * MAINT.deleteChunk + 1, true)) : prefixEnd(enc.encode(`${FILL_PREFIX}d/`)),
    }).finish(), '/etcdserverpb.KV/DeleteRange', 4, 1);
    if (del.failed > 0) throw new Error(`DeleteRange failed: ${del.errorSamples.join('; ')}`);
    const rev = (await status(address)).revision;
    await unaryOk(address, '/etcdserverpb.KV/Compact', etcdserverpb.CompactionRequest.encode({ revision: rev, physical: true }).finish(),
      MAINT.callTimeoutMs);
    deleteCompactS = (nowUs() - d0) / 1e6;
    deletedKeys = Math.floor(keys / 2);
  }
  // A write after the compaction and a moment: both servers refresh the sizes Status reports on commits.
  await unaryOk(address, '/etcdserverpb.KV/Put', putRequest(`${FILL_PREFIX}marker`, value.subarray(0, 16), null), 30_000);
  await sleep(1000);
  const dbBefore = (await status(address)).sizes;

  // 2. The put load, and the maintenance calls in it.
  const putter = new Child({ role: 'putter', address, clients: MAINT.putClients, conns: MAINT.putConns, seed: 7 + round,
    keyPrefix: PUT_PREFIX } satisfies PutterConfig, 'leasegen.js');
  try {
    const ready = await putter.next(30_000);
    if (ready.ready !== true) throw new Error('putter not ready');
    const t0 = nowUs() + 100_000;
    putter.send({ startUs: t0 });
    const windowMs = o.durationS * 1000;
    const settleMs = o.quick ? 200 : 500;
    const base0 = t0 + o.warmupS * 1e6;
    const phases: (Phase & { name: MaintPhase['name'] })[] = [];
    const cpu: number[] = [];
    const ops: MaintOp[] = [];
    await sleep((base0 - nowUs()) / 1000);
    cpu.push(processCpuUs(serverPid));
    await sleep(windowMs);
    phases.push({ name: 'baseline', fromUs: base0, toUs: nowUs() });
    cpu.push(processCpuUs(serverPid));
    let dbAfter = dbBefore;
    if (kind === 'defrag') {
      const r = await runOp(address, 'defrag', 0);
      ops.push(r.op);
      phases.push({ name: 'defrag', fromUs: r.fromUs, toUs: r.toUs, claimsOverlapping: true });
      cpu.push(processCpuUs(serverPid));
      if (r.op.status === 'error') fail(`Defragment: ${r.op.message}`);
      dbAfter = (await status(address)).sizes;
      if (r.op.status === 'ok' && dbAfter.size >= dbBefore.size) notes.push(`Defragment answered OK but db size stayed ${dbBefore.size} -> ${dbAfter.size} bytes`);
      const a0 = nowUs();
      await sleep(windowMs);
      phases.push({ name: 'after', fromUs: a0, toUs: nowUs() });
      cpu.push(processCpuUs(serverPid));
    } else {
      for (const name of ['hashkv', 'snapshot', 'hash'] as const) {
        await sleep(settleMs);
        const c0 = processCpuUs(serverPid);
        const r = await runOp(address, name, windowMs);
        ops.push(r.op);
        if (r.op.status !== 'ok') fail(`${name}: ${r.op.status === 'n/a' ? 'UNIMPLEMENTED' : r.op.message}`);
        phases.push({ name, fromUs: r.fromUs, toUs: r.toUs, claimsOverlapping: true });
        cpu.push(c0, processCpuUs(serverPid));
      }
      dbAfter = (await status(address)).sizes;
    }
    const bucketUs = o.quick ? 100_000 : 250_000;
    putter.send({ stop: true, phases, originUs: base0, bucketUs });
    const put = (await putter.next(60_000)) as unknown as PutterResult;
    if (put.failed > 0) { errors += put.failed; errorSamples.push(...put.errorSamples.slice(0, Math.max(0, 5 - errorSamples.length))); }
    // CPU readings: defrag = one per phase boundary; maintenance = baseline pair, then a pair per phase.
    const cpuOf = (k: number): number => (kind === 'defrag' ? cpu[k + 1]! - cpu[k]! : k === 0 ? cpu[1]! - cpu[0]! : cpu[2 * k + 1]! - cpu[2 * k]!);
    const hs: hdr.Histogram[] = [];
    const out: MaintPhase[] = put.phases.map((p, k) => {
      const span = phases[k]!;
      const secs = Math.max(1e-6, (span.toUs - span.fromUs) / 1e6);
      const h = hdr.decodeFromCompressedBase64(p.histogram, 32, false);
      hs.push(h);
      return {
        name: span.name, fromS: (span.fromUs - base0) / 1e6, toS: (span.toUs - base0) / 1e6, puts: p.ok, putsPerSec: p.ok / secs,
        latencyUs: latOf(h), pauseMs: p.pauseUs / 1000, pauseAtS: (p.pauseAtUs - base0) / 1e6, serverCores: cpuOf(k) / 1e6 / secs,
      };
    });
    // The sample's own figures: the put load during the maintenance phases (all of them merged).
    const opPhases = out.map((p, k) => ({ p, k })).filter(({ p }) => p.name !== 'baseline' && p.name !== 'after');
    const na = ops.length > 0 && ops.every((x) => x.status === 'n/a');
    const merged = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: 3, useWebAssembly: false });
    let ok = 0;
    let secs = 0;
    let cpuUs = 0;
    for (const { p, k } of opPhases) {
      merged.add(hs[k]!);
      ok += p.puts;
      secs += p.toS - p.fromS;
      cpuUs += cpuOf(k);
    }
    if (na) ok = 0; // no maintenance ran: nothing to compare
    const sample: Sample = {
      target, round, clients: mib, ok, errors, errorSamples: errorSamples.slice(0, 5),
      throughput: ok / Math.max(1e-6, secs), latencyUs: ok > 0 ? latOf(merged) : { p50: 0, p90: 0, p99: 0, p999: 0, max: 0, mean: 0 },
      curve: ok > 0 ? CURVE_POINTS.map((q) => [q, merged.getValueAtPercentile(q)] as [number, number]) : [],
      serverCpuUsPerOp: cpuUs / Math.max(1, ok), clientCpuUsPerOp: (put.cpuUserUs + put.cpuSystemUs) / Math.max(1, put.acked),
      maint: {
        kind, fillMiB: mib, fillKeys: keys, valueBytes: MAINT.valueBytes, fillS, deletedKeys, deleteCompactS, dbBefore, dbAfter,
        ops, phases: out, timeline: put.timeline, timelineBucketS: bucketUs / 1e6, notes,
      },
    };
    merged.destroy();
    for (const h of hs) h.destroy();
    return sample;
  } finally {
    putter.kill();
  }
}

// ---- tables -----------------------------------------------------------------------------------------

/** concord/etcd per round of f (undefined or a zero denominator: no ratio). */
function pairRatios(cell: Cell, f: (s: Sample) => number | undefined): number[] {
  const out: number[] = [];
  for (const r of new Set(cell.samples.map((s) => s.round))) {
    const c = cell.samples.find((s) => s.round === r && s.target === 'concord');
    const e = cell.samples.find((s) => s.round === r && s.target === 'etcd');
    const fc = c ? f(c) : undefined;
    const fe = e ? f(e) : undefined;
    if (fc !== undefined && fe !== undefined && fe > 0 && Number.isFinite(fc)) out.push(fc / fe);
  }
  return out;
}

function fmtRatios(rs: number[]): string {
  if (rs.length === 0) return '-';
  const m = median(rs).toFixed(2);
  return rs.length === 1 ? m : `${m} (${Math.min(...rs).toFixed(2)}-${Math.max(...rs).toFixed(2)})`;
}

const mibOf = (bytes: number): string => (bytes / 2 ** 20).toFixed(0);
const ms = (us: number): string => (us / 1000).toFixed(us < 10_000 ? 2 : 1);

/** The terminal tables of the defrag and maintenance cells ('' if none). */
export function maintTables(report: PerfReport): string {
  const db: string[][] = [['workload', 'MiB', 'target', 'keys', 'fill s', 'fill MiB/s', 'delete+compact s',
    'db before MiB (in use)', 'db after MiB (in use)', 'errors']];
  const calls: string[][] = [['workload', 'MiB', 'call', 'target', 'status', 'calls', 'mean ms', 'max ms', 'MiB/call', 'mean ratio']];
  const ph: string[][] = [['workload', 'MiB', 'phase', 'target', 'puts/s', 'p50 ms', 'p99 ms', 'p99.9 ms', 'max ms', 'pause ms',
    'srv cores', 'puts/s ratio', 'p99 ratio', 'pause ratio']];
  const notes: string[] = [];
  for (const cell of report.cells) {
    if (!cell.samples.some((s) => s.maint !== undefined) && !['defrag', 'maintenance'].includes(cell.workload)) continue;
    const opNames: MaintOpName[] = [];
    const phaseNames: MaintPhase['name'][] = [];
    for (const target of ['concord', 'etcd'] as Target[]) {
      const all = cell.samples.filter((s) => s.target === target);
      const ss = all.filter((s) => s.maint !== undefined);
      if (all.length === 0) continue;
      const errors = String(all.reduce((a, s) => a + s.errors, 0));
      if (ss.length === 0) {
        db.push([cell.workload, String(cell.clients), target, 'failed', '-', '-', '-', '-', '-', errors]);
        continue;
      }
      const m = (f: (x: MaintExtra) => number): number => median(ss.map((s) => f(s.maint!)));
      const sizes = (f: (x: MaintExtra) => DbSizes): string => `${mibOf(m((x) => f(x).size))} (${mibOf(m((x) => f(x).inUse))})`;
      db.push([
        cell.workload, String(cell.clients), target, m((x) => x.fillKeys).toFixed(0), m((x) => x.fillS).toFixed(1),
        m((x) => x.fillMiB / x.fillS).toFixed(0), ss[0]!.maint!.deleteCompactS !== undefined ? m((x) => x.deleteCompactS ?? 0).toFixed(1) : '-',
        sizes((x) => x.dbBefore), sizes((x) => x.dbAfter), errors,
      ]);
      for (const s of ss) {
        for (const op of s.maint!.ops) if (!opNames.includes(op.name)) opNames.push(op.name);
        for (const p of s.maint!.phases) if (!phaseNames.includes(p.name)) phaseNames.push(p.name);
        for (const n of s.maint!.notes) notes.push(`${cell.workload} ${cell.clients} MiB ${target} round ${s.round + 1}: ${n}`);
      }
    }
    const opOf = (s: Sample, name: MaintOpName): MaintOp | undefined => s.maint?.ops.find((x) => x.name === name);
    for (const name of opNames) {
      for (const target of ['concord', 'etcd'] as Target[]) {
        const os = cell.samples.filter((s) => s.target === target).map((s) => opOf(s, name)).filter((x): x is MaintOp => x !== undefined);
        if (os.length === 0) continue;
        const okOs = os.filter((x) => x.status === 'ok');
        const st = okOs.length === os.length ? 'ok' : os.some((x) => x.status === 'error') ? 'error' : 'n/a';
        const m = (f: (x: MaintOp) => number): number => median(okOs.map(f));
        const dash = okOs.length === 0;
        calls.push([
          cell.workload, String(cell.clients), name, target, st, dash ? '-' : m((x) => x.calls).toFixed(0),
          dash ? 'n/a' : m((x) => x.meanMs).toFixed(0), dash ? 'n/a' : m((x) => x.maxMs).toFixed(0),
          dash || okOs[0]!.bytes === undefined ? '-' : mibOf(m((x) => x.bytes ?? 0)),
          target === 'concord' ? fmtRatios(pairRatios(cell, (s) => { const x = opOf(s, name); return x?.status === 'ok' ? x.meanMs : undefined; })) : '',
        ]);
      }
    }
    const phOf = (s: Sample, name: string): MaintPhase | undefined => {
      if (s.maint === undefined) return undefined;
      // A phase of a call the server did not run (UNIMPLEMENTED) has nothing to report.
      const op = s.maint.ops.find((x) => x.name === name);
      if (op !== undefined && op.status !== 'ok') return undefined;
      return s.maint.phases.find((p) => p.name === name);
    };
    for (const name of phaseNames) {
      for (const target of ['concord', 'etcd'] as Target[]) {
        const all = cell.samples.filter((s) => s.target === target && s.maint !== undefined);
        if (all.length === 0) continue;
        const ps = all.map((s) => phOf(s, name)).filter((p): p is MaintPhase => p !== undefined);
        if (ps.length === 0) {
          ph.push([cell.workload, String(cell.clients), name, target, 'n/a', ...Array(9).fill('-')]);
          continue;
        }
        const m = (f: (p: MaintPhase) => number): number => median(ps.map(f));
        const r = (f: (p: MaintPhase) => number): string =>
          (target === 'concord' ? fmtRatios(pairRatios(cell, (s) => { const p = phOf(s, name); return p ? f(p) : undefined; })) : '');
        ph.push([
          cell.workload, String(cell.clients), name, target, m((p) => p.putsPerSec).toFixed(0),
          ms(m((p) => p.latencyUs.p50)), ms(m((p) => p.latencyUs.p99)), ms(m((p) => p.latencyUs.p999)), ms(m((p) => p.latencyUs.max)),
          m((p) => p.pauseMs).toFixed(0), m((p) => p.serverCores).toFixed(2),
          r((p) => p.putsPerSec), r((p) => p.latencyUs.p99), r((p) => p.pauseMs),
        ]);
      }
    }
  }
  if (db.length === 1) return '';
  const parts = [
    `maintenance workloads: fill = S MiB of ${MAINT.valueBytes}-byte values (defrag: half deleted, compacted); ` +
      'db = Status dbSize (dbSizeInUse) before the put load and after the calls\n' + align(db),
    'maintenance calls (n/a = the server answered UNIMPLEMENTED): duration of each call, back to back in a phase; ' +
      'MiB/call = bytes streamed by one Snapshot\n' + align(calls),
    `put latency around the calls (${MAINT.putClients} closed-loop put clients, 256-byte values): baseline/after = puts sent in the window; ` +
      'a call phase = puts in flight during the calls; pause = longest stretch with no put completing; srv cores = server CPU s/s\n' + align(ph),
  ];
  if (notes.length > 0) parts.push(notes.map((n) => `note: ${n}`).join('\n'));
  return parts.join('\n\n');
}

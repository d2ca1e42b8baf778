// Lease benchmark load generator processes (issues #3, #5). perf/lease.ts starts them and drives
// them over stdin/stdout with one JSON line per message, like perf/watchgen.ts:
//
//   keepalive  grants its leases, says {"ready":…}; gets {"startUs","fromUs","toUs"}; keeps the
//              leases alive over LeaseKeepAlive streams (several requests in flight per stream)
//              from startUs to toUs, latencies of the responses read in [fromUs, toUs); then
//              revokes its leases and sends its KeepAliveResult.
//   granter    says ready; on {"startUs","deadlineUs"} grants `leases` leases from startUs on, as
//              fast as `inflight` concurrent calls go, each with the TTL that makes it expire at
//              the common deadline (whole seconds rounded up, so all expire within ~1 s of it),
//              attaches a key to `keys` of them (a put with the lease right after its grant) and
//              sends its GrantResult.
//   putter     says ready; on {"startUs"} runs a closed-loop put load (`clients` puts in flight,
//              random keys, 256-byte values) and records every put's send time and latency; on
//              {"stop":true,"phases":[…],"originUs","bucketUs"} finishes and sends a PutterResult:
//              a latency histogram per phase (by send time, or by overlap for a phase that claims
//              the puts it holds up: perf/pause.ts), the longest stretch of each phase with no put
//              completing, and a per-bucket timeline. perf/maintenance.ts uses it too.
//
// Unary calls whose answer we need (grants, LeaseLeases, count-only ranges) go over
// perf/h2client.ts streaming calls (HEADERS, one DATA, END_STREAM) so the response message comes
// back; the put load uses its plain unary calls. Responses are read with small protobuf walkers.
// Lease ids are 63-bit: they are kept as the bytes of their varint, never as JS numbers.
import * as hdr from 'hdr-histogram-js';
import { grpcHeaderBlock, H2Connection } from './h2client';
import { buildHistogram } from './loadgen';
import { completionTimes, longestPause, phaseOf, type PhaseWindow } from './pause';
import { prefixEnd } from '../src/util/prefix_end';
import { assert } from '../src/util/assert';
import {
  fieldTag, varintBytes, varintSize, WireCursor, WireType, writeVarint,
} from '../src/util/protobuf_wire';

/** The protobuf walkers below share one cursor (one thread, one message at a time). */
const cur = new WireCursor();

export const LEASE_KEY_PREFIX = 'bench/lease/';
const PUT_KEY_PREFIX = 'bench/lp/';
const PUT_KEY_SPACE = 100_000;
const PUT_VALUE_BYTES = 256;

export const PATHS = {
  grant: '/etcdserverpb.Lease/LeaseGrant',
  revoke: '/etcdserverpb.Lease/LeaseRevoke',
  keepAlive: '/etcdserverpb.Lease/LeaseKeepAlive',
  leases: '/etcdserverpb.Lease/LeaseLeases',
  put: '/etcdserverpb.KV/Put',
  range: '/etcdserverpb.KV/Range',
};

export function nowUs(): number {
  return Number(process.hrtime.bigint()) / 1000;
}

// ---- protobuf, by hand ------------------------------------------------------------------------

/** Bytes of a length-delimited field. */
function bytesFieldSize(value: Uint8Array): number {
  return 1 + varintSize(value.length) + value.length;
}

/** Writes field `field` = `value` (length-delimited) at out[pos]; returns the position after it. */
function writeBytesField(out: Buffer, pos: number, field: number, value: Uint8Array): number {
  out[pos++] = fieldTag(field, WireType.Bytes);
  pos = writeVarint(out, pos, value.length);
  out.set(value, pos);
  return pos + value.length;
}

/** LeaseGrantRequest{TTL}. */
export function grantRequest(ttl: number): Buffer {
  return Buffer.concat([Buffer.from([fieldTag(1, WireType.Varint)]), varintBytes(ttl)]);
}

/** A message whose only field is field 1 = the lease id (LeaseKeepAlive/Revoke/TimeToLive requests). */
export function idRequest(idVarint: Buffer): Buffer {
  return Buffer.concat([Buffer.from([fieldTag(1, WireType.Varint)]), idVarint]);
}

const enc = new TextEncoder();

/** PutRequest{key, value, lease}. */
export function putRequest(key: string, value: Uint8Array, leaseVarint: Buffer | null): Buffer {
  const k = enc.encode(key);
  const size = bytesFieldSize(k) + bytesFieldSize(value) + (leaseVarint === null ? 0 : 1 + leaseVarint.length);
  const out = Buffer.allocUnsafe(size);
  let pos = writeBytesField(out, 0, 1, k);
  pos = writeBytesField(out, pos, 2, value);
  if (leaseVarint !== null) {
    out[pos++] = fieldTag(3, WireType.Varint);
    out.set(leaseVarint, pos);
    pos += leaseVarint.length;
  }
  assert(pos === size, 'PutRequest size');
  return out;
}

/** RangeRequest{key: prefix, range_end: prefix end, count_only: true}. */
export function countRequest(prefix: string): Buffer {
  const p = enc.encode(prefix);
  const end = prefixEnd(p);
  const out = Buffer.allocUnsafe(bytesFieldSize(p) + bytesFieldSize(end) + 2);
  let pos = writeBytesField(out, 0, 1, p);
  pos = writeBytesField(out, pos, 2, end);
  out[pos++] = fieldTag(9, WireType.Varint); // count_only
  out[pos++] = 1;
  assert(pos === out.length, 'RangeRequest size');
  return out;
}

/** What walkLease found: field 2 (ID) as its varint bytes b[idStart, idEnd), field 3 (TTL), field 4 (error). */
export interface LeaseFields { idStart: number; idEnd: number; ttl: number; error: boolean }

/** Walks a LeaseGrantResponse or LeaseKeepAliveResponse in b[start, end). */
export function walkLease(b: Buffer, start: number, end: number, out: LeaseFields): void {
  out.idStart = out.idEnd = -1;
  out.ttl = 0;
  out.error = false;
  cur.reset(b, start, end);
  while (cur.pos < end) {
    const tag = cur.varint();
    if (tag === 0x10) {
      out.idStart = cur.pos;
      cur.varint();
      out.idEnd = cur.pos;
    } else if (tag === 0x18) {
      const at = cur.pos;
      out.ttl = cur.varint();
      if (cur.pos - at >= 10) out.ttl = -1; // a negative int64 (10-byte varint)
    } else if (tag === 0x22) {
      const n = cur.length();
      if (n > 0) out.error = true;
      cur.pos += n;
    } else cur.skip(tag & 7);
  }
}

/** RangeResponse.count. */
export function rangeCount(b: Buffer): number {
  cur.reset(b);
  let count = 0;
  while (cur.pos < b.length) {
    const tag = cur.varint();
    if (tag === 0x20) count = cur.varint();
    else cur.skip(tag & 7);
  }
  return count;
}

/** Number of LeaseStatus entries in a LeaseLeasesResponse. */
export function leasesCount(b: Buffer): number {
  cur.reset(b);
  let n = 0;
  while (cur.pos < b.length) {
    const tag = cur.varint();
    if (tag === 0x12) n++;
    cur.skip(tag & 7);
  }
  return n;
}

// ---- calls ------------------------------------------------------------------------------------

/** A unary call over a streaming call so the response comes back; reply(null, reason) on a gRPC error. */
export function call(conn: H2Connection, block: Buffer, body: Uint8Array, reply: (resp: Buffer | null, reason: string) => void): void {
  let got: Buffer | null = null;
  const id = conn.openStream(block, {
    onMessage(buf, s, e) {
      got = Buffer.from(buf.subarray(s, e));
    },
    onEnd(reason, messages) {
      reply(messages === 1 ? got : null, messages === 0 ? `gRPC error status (${reason})` : reason);
    },
  });
  if (id < 0) return;
  conn.sendMessage(id, body);
  conn.endStream(id);
}

export function callP(conn: H2Connection, block: Buffer, body: Uint8Array, timeoutMs = 60_000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no answer in ${timeoutMs} ms`)), timeoutMs);
    call(conn, block, body, (resp, reason) => {
      clearTimeout(timer);
      if (resp === null) reject(new Error(reason));
      else resolve(resp);
    });
  });
}

/**
 * Runs op(0..total-1) with at most `inflight` outstanding; op calls done() when it is over. The
 * next op starts from a microtask: calls on a dead connection fail synchronously, and must not
 * recurse N deep.
 */
function pool(total: number, inflight: number, op: (i: number, done: () => void) => void): Promise<void> {
  return new Promise((resolve) => {
    if (total === 0) return resolve();
    let next = 0;
    let finished = 0;
    const done = (): void => {
      if (++finished === total) resolve();
      else if (next < total) {
        const i = next++;
        queueMicrotask(() => op(i, done));
      }
    };
    for (let k = 0; k < Math.min(inflight, total); k++) op(next++, done);
  });
}

export function clampUs(us: number): number {
  return Math.min(59_000_000, Math.max(1, Math.round(us)));
}

class Errors {
  count = 0;
  readonly samples: string[] = [];
  add(msg: string): void {
    this.count++;
    if (this.samples.length < 5 && !this.samples.includes(msg)) this.samples.push(msg);
  }
}

export interface GrantResult {
  granted: number;
  failed: number;
  /** Keys put with a lease attached. */
  keys: number;
  keysFailed: number;
  /** Grant latency (µs, compressed HDR). */
  histogram: string;
  startUs: number;
  endUs: number;
  /** Expiry of the first and last lease, ack time + granted TTL (µs). */
  minExpiryUs: number;
  maxExpiryUs: number;
  /** Grants answered with a TTL other than the one asked for (e.g. raised to the minimum TTL). */
  ttlRaised: number;
  errors: number;
  errorSamples: string[];
  cpuUserUs: number;
  cpuSystemUs: number;
}

/**
 * Grants n leases over conns, `inflight` at a time. ttlAt(now) = the TTL to ask for; keyOf(i) =
 * the key to attach to lease i, or null. Returns the granted ids' varint bytes (null = failed).
 */
async function grantLeases(conns: H2Connection[], n: number, inflight: number, ttlAt: (nowUs: number) => number,
  keyOf: (i: number) => string | null, errors: Errors): Promise<{ ids: (Buffer | null)[]; ttls: Int32Array; result: GrantResult }> {
  const grantBlock = grpcHeaderBlock(conns[0]!.authority, PATHS.grant);
  const putBlock = grpcHeaderBlock(conns[0]!.authority, PATHS.put);
  const h = buildHistogram();
  const ids: (Buffer | null)[] = new Array(n).fill(null);
  const ttls = new Int32Array(n);
  const f: LeaseFields = { idStart: 0, idEnd: 0, ttl: 0, error: false };
  const value = new Uint8Array(16).fill(0x6c);
  let granted = 0;
  let failed = 0;
  let keys = 0;
  let keysFailed = 0;
  let ttlRaised = 0;
  let minExpiryUs = Infinity;
  let maxExpiryUs = -Infinity;
  const cpu0 = process.cpuUsage();
  const startUs = nowUs();
  await pool(n, inflight, (i, done) => {
    const conn = conns[i % conns.length]!;
    const t0 = nowUs();
    const ttl = ttlAt(t0);
    call(conn, grantBlock, grantRequest(ttl), (resp, reason) => {
      const t1 = nowUs();
      if (resp === null) {
        failed++;
        errors.add(`LeaseGrant: ${reason}`);
        return done();
      }
      walkLease(resp, 0, resp.length, f);
      if (f.error || f.idStart < 0 || f.ttl <= 0) {
        failed++;
        errors.add(`LeaseGrant answered ${f.error ? 'with an error' : `ID ${f.idStart < 0 ? 'missing' : 'ok'}, TTL ${f.ttl}`}`);
        return done();
      }
      granted++;
      h.recordValue(clampUs(t1 - t0));
      if (f.ttl !== ttl) ttlRaised++;
      const id = Buffer.from(resp.subarray(f.idStart, f.idEnd));
      ids[i] = id;
      ttls[i] = f.ttl;
      minExpiryUs = Math.min(minExpiryUs, t1 + f.ttl * 1e6);
      maxExpiryUs = Math.max(maxExpiryUs, t1 + f.ttl * 1e6);
      const key = keyOf(i);
      if (key === null) return done();
      call(conn, putBlock, putRequest(key, value, id), (presp, preason) => {
        if (presp === null) {
          keysFailed++;
          errors.add(`Put with lease: ${preason}`);
        } else keys++;
        done();
      });
    });
  });
  const endUs = nowUs();
  const cpu = process.cpuUsage(cpu0);
  const result: GrantResult = {
    granted, failed, keys, keysFailed, histogram: hdr.encodeIntoCompressedBase64(h), startUs, endUs,
    minExpiryUs: Number.isFinite(minExpiryUs) ? minExpiryUs : 0, maxExpiryUs: Number.isFinite(maxExpiryUs) ? maxExpiryUs : 0,
    ttlRaised, errors: 0, errorSamples: [], cpuUserUs: cpu.user, cpuSystemUs: cpu.system,
  };
  h.destroy();
  return { ids, ttls, result };
}

async function revokeLeases(conns: H2Connection[], ids: (Buffer | null)[], inflight: number, errors: Errors): Promise<number> {
  const block = grpcHeaderBlock(conns[0]!.authority, PATHS.revoke);
  const live = ids.filter((x): x is Buffer => x !== null);
  let revoked = 0;
  await pool(live.length, inflight, (i, done) => {
    call(conns[i % conns.length]!, block, idRequest(live[i]!), (resp, reason) => {
      if (resp === null) errors.add(`LeaseRevoke: ${reason}`);
      else revoked++;
      done();
    });
  });
  return revoked;
}

// ---- stdin/stdout ------------------------------------------------------------------------------

function lines(onLine: (msg: Record<string, unknown>) => void): void {
  let buf = '';
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (d: string) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (line.trim() !== '') onLine(JSON.parse(line) as Record<string, unknown>);
    }
  });
  process.stdin.on('end', () => process.exit(0)); // the parent is gone
}

function send(msg: unknown): void {
  process.stdout.write(JSON.stringify(msg) + '\n');
}

function at(atUs: number, fn: () => void): void {
  setTimeout(fn, Math.max(0, (atUs - nowUs()) / 1000));
}

async function connectAll(address: string, n: number, onRead?: () => void): Promise<H2Connection[]> {
  const conns: H2Connection[] = [];
  for (let i = 0; i < n; i++) {
    const c = new H2Connection(address, () => {});
    if (onRead) c.onRead = onRead;
    conns.push(c);
  }
  await Promise.all(conns.map((c) => c.connect()));
  return conns;
}

// ---- keepalive ---------------------------------------------------------------------------------

export interface KeepAliveConfig {
  role: 'keepalive';
  address: string;
  /** Leases granted and kept alive by this process. */
  leases: number;
  ttl: number;
  streams: number;
  streamsPerConn: number;
  /** Keep-alive requests outstanding per stream. */
  inflight: number;
  /** Concurrent grants and revokes. */
  grantInflight: number;
  drainTimeoutMs: number;
}

export interface KeepAliveResult {
  granted: number;
  grantUs: number;
  /** Responses read in [fromUs, toUs), their latency (µs, compressed HDR). */
  windowResponses: number;
  histogram: string;
  /** All keep-alive responses, and requests sent. */
  responses: number;
  sent: number;
  revoked: number;
  revokeUs: number;
  errors: number;
  errorSamples: string[];
  /** CPU of this process in [fromUs, toUs). */
  cpuUserUs: number;
  cpuSystemUs: number;
}

async function runKeepAlive(cfg: KeepAliveConfig): Promise<void> {
  const errors = new Errors();
  let readAt = 0;
  let inWindow = false;
  let win = { startUs: Infinity, fromUs: Infinity, toUs: Infinity };
  const conns = await connectAll(cfg.address, Math.ceil(cfg.streams / cfg.streamsPerConn), () => {
    readAt = nowUs();
    inWindow = readAt >= win.fromUs && readAt < win.toUs;
  });
  const g = await grantLeases(conns, cfg.leases, cfg.grantInflight, () => cfg.ttl, () => null, errors);
  const ids = g.ids;
  const N = cfg.leases;
  const byId = new Map<string, number>();
  const bodies: Buffer[] = [];
  for (let i = 0; i < N; i++) {
    const id = ids[i];
    bodies.push(id ? idRequest(id) : Buffer.alloc(0));
    if (id) byId.set(id.toString('latin1'), i);
  }

  const histogram = buildHistogram();
  const sentAt = new Float64Array(N); // 0 = no request outstanding
  let responses = 0;
  let sent = 0;
  let windowResponses = 0;
  let stopping = false;
  let outstanding = 0;
  const block = grpcHeaderBlock(cfg.address, PATHS.keepAlive);
  const f: LeaseFields = { idStart: 0, idEnd: 0, ttl: 0, error: false };
  interface KaStream { conn: H2Connection; id: number; first: number; n: number; cursor: number; open: boolean }
  const streams: KaStream[] = [];
  const sendNext = (s: KaStream): void => {
    for (let k = 0; k < s.n; k++) {
      s.cursor = s.cursor + 1 === s.n ? 0 : s.cursor + 1;
      const i = s.first + s.cursor;
      if (sentAt[i] === 0 && ids[i] !== null) {
        sentAt[i] = nowUs();
        outstanding++;
        sent++;
        s.conn.sendMessage(s.id, bodies[i]!);
        return;
      }
    }
  };
  const per = Math.ceil(N / cfg.streams);
  for (let k = 0; k < cfg.streams; k++) {
    const first = k * per;
    const n = Math.max(0, Math.min(per, N - first));
    if (n === 0) break;
    const s: KaStream = { conn: conns[Math.floor(k / cfg.streamsPerConn)]!, id: -1, first, n, cursor: n - 1, open: true };
    s.id = s.conn.openStream(block, {
      onMessage(buf, start, end) {
        responses++;
        walkLease(buf, start, end, f);
        const i = f.idStart < 0 ? undefined : byId.get(buf.toString('latin1', f.idStart, f.idEnd));
        if (i === undefined || sentAt[i] === 0) {
          errors.add(`keep-alive response for a lease with no request outstanding (${i === undefined ? 'unknown id' : 'repeated'})`);
          return;
        }
        if (inWindow) {
          windowResponses++;
          histogram.recordValue(clampUs(readAt - sentAt[i]!));
        }
        sentAt[i] = 0;
        outstanding--;
        if (f.ttl <= 0) errors.add(`keep-alive of a live lease answered TTL ${f.ttl}`);
        else if (f.ttl !== g.ttls[i]) errors.add(`keep-alive answered TTL ${f.ttl}, granted ${g.ttls[i]}`);
        if (!stopping) sendNext(s);
      },
      onEnd(reason, messages) {
        s.open = false;
        if (!stopping) errors.add(messages === 0 ? `keep-alive stream ended before any response (${reason})` : `keep-alive stream ended early: ${reason}`);
      },
    });
    streams.push(s);
  }
  send({ ready: true, granted: g.result.granted, errorSamples: errors.samples });

  let cpu0 = process.cpuUsage();
  let cpu = { user: 0, system: 0 };
  lines((msg) => {
    if (typeof msg.fromUs !== 'number') return;
    win = msg as unknown as typeof win;
    at(win.fromUs, () => (cpu0 = process.cpuUsage()));
    at(win.startUs, () => {
      for (const s of streams) for (let k = 0; k < Math.min(cfg.inflight, s.n); k++) sendNext(s);
    });
    at(win.toUs, async () => {
      cpu = process.cpuUsage(cpu0);
      stopping = true;
      const t0 = nowUs();
      while (outstanding > 0 && nowUs() - t0 < cfg.drainTimeoutMs * 1000 && streams.some((s) => s.open)) {
        await new Promise((r) => setTimeout(r, 5));
      }
      if (outstanding > 0) errors.add(`${outstanding} keep-alives unanswered ${cfg.drainTimeoutMs} ms after the end`);
      for (const s of streams) if (s.open) s.conn.endStream(s.id);
      const r0 = nowUs();
      const revoked = await revokeLeases(conns, ids, cfg.grantInflight, errors);
      const revokeUs = nowUs() - r0;
      const res: KeepAliveResult = {
        granted: g.result.granted, grantUs: g.result.endUs - g.result.startUs, windowResponses,
        histogram: hdr.encodeIntoCompressedBase64(histogram), responses, sent, revoked, revokeUs,
        errors: errors.count, errorSamples: errors.samples, cpuUserUs: cpu.user, cpuSystemUs: cpu.system,
      };
      send(res);
      for (const c of conns) c.close();
      setTimeout(() => process.exit(0), 50);
    });
  });
}

// ---- granter (mass expiry) -----------------------------------------------------------------------

export interface GranterConfig {
  role: 'granter';
  address: string;
  leases: number;
  /** Leases that get a key attached (spread evenly; the last lease always has one). */
  keys: number;
  inflight: number;
  conns: number;
}

export function leaseKeyOf(leases: number, keys: number): (i: number) => string | null {
  if (keys <= 0) return () => null;
  const every = leases / keys;
  // Lease i has a key when it is the last of its share: i = ceil((j+1)·every) - 1 for j < keys.
  return (i) => (Math.floor((i + 1) / every) > Math.floor(i / every) ? `${LEASE_KEY_PREFIX}${String(i).padStart(7, '0')}` : null);
}

async function runGranter(cfg: GranterConfig): Promise<void> {
  const errors = new Errors();
  const conns = await connectAll(cfg.address, cfg.conns);
  send({ ready: true });
  lines((msg) => {
    if (typeof msg.deadlineUs !== 'number' || typeof msg.startUs !== 'number') return;
    const deadlineUs = msg.deadlineUs;
    at(msg.startUs, async () => {
      const g = await grantLeases(conns, cfg.leases, cfg.inflight, (t) => Math.max(1, Math.ceil((deadlineUs - t) / 1e6)),
        leaseKeyOf(cfg.leases, cfg.keys), errors);
      g.result.errors = errors.count;
      g.result.errorSamples = errors.samples;
      send(g.result);
      for (const c of conns) c.close();
      setTimeout(() => process.exit(0), 50);
    });
  });
}

// ---- putter (mass expiry) ------------------------------------------------------------------------

export interface PutterConfig {
  role: 'putter';
  address: string;
  clients: number;
  conns: number;
  seed: number;
  /** Where the random keys go (default bench/lp/). */
  keyPrefix?: string;
}

/** A phase of the put load; see perf/pause.ts for which puts belong to it. */
export type Phase = PhaseWindow;

export interface TimelinePoint {
  /** Bucket start, seconds from originUs. */
  t: number;
  puts: number;
  p50: number;
  p99: number;
  max: number;
}

export interface PutterResult {
  /** Per phase: puts that belong to it, their latency, and the longest stretch of it with no put completing (µs; at = its start). */
  phases: { name: string; ok: number; histogram: string; pauseUs: number; pauseAtUs: number }[];
  timeline: TimelinePoint[];
  acked: number;
  failed: number;
  errorSamples: string[];
  cpuUserUs: number;
  cpuSystemUs: number;
}

async function runPutter(cfg: PutterConfig): Promise<void> {
  const errors = new Errors();
  const block = grpcHeaderBlock(cfg.address, PATHS.put);
  const keyPrefix = cfg.keyPrefix ?? PUT_KEY_PREFIX;
  let sentT = new Float64Array(1 << 16);
  let latT = new Float32Array(1 << 16);
  let n = 0;
  let acked = 0;
  let stopping = false;
  let inFlight = 0;
  let rng = (cfg.seed * 2654435761) >>> 0 || 1;
  const value = new Uint8Array(PUT_VALUE_BYTES).fill(0x70);
  const startedAt = new Float64Array(cfg.clients);
  const conns: H2Connection[] = [];
  let allDone: () => void = () => {};
  const finished = new Promise<void>((resolve) => (allDone = resolve));
  const issue = (client: number): void => {
    rng ^= rng << 13; rng >>>= 0;
    rng ^= rng >>> 17;
    rng ^= rng << 5; rng >>>= 0;
    inFlight++;
    startedAt[client] = nowUs();
    conns[client % conns.length]!.request(block, putRequest(`${keyPrefix}${rng % PUT_KEY_SPACE}`, value, null), client);
  };
  const onDone = (client: number, ok: boolean): void => {
    inFlight--;
    const t0 = startedAt[client]!;
    if (ok) {
      acked++;
      if (n === sentT.length) {
        const s2 = new Float64Array(n * 2); s2.set(sentT); sentT = s2;
        const l2 = new Float32Array(n * 2); l2.set(latT); latT = l2;
      }
      sentT[n] = t0;
      latT[n] = nowUs() - t0;
      n++;
    } else {
      const conn = conns[client % conns.length]!;
      errors.add(conn.error ? `put: ${conn.error.message}` : 'put: gRPC error status');
    }
    if (!stopping && !conns[client % conns.length]!.error) issue(client);
    else if (stopping && inFlight === 0) allDone();
  };
  for (let i = 0; i < cfg.conns; i++) conns.push(new H2Connection(cfg.address, onDone));
  await Promise.all(conns.map((c) => c.connect()));
  send({ ready: true });
  let cpu0 = process.cpuUsage();
  lines((msg) => {
    if (typeof msg.startUs === 'number') {
      at(msg.startUs, () => {
        cpu0 = process.cpuUsage();
        for (let c = 0; c < cfg.clients; c++) issue(c);
      });
      return;
    }
    if (msg.stop !== true) return;
    void (async () => {
      const c = process.cpuUsage(cpu0);
      stopping = true;
      if (inFlight > 0) await Promise.race([finished, new Promise((r) => setTimeout(r, 10_000))]);
      if (inFlight > 0) errors.add(`${inFlight} puts unanswered 10 s after the end`);
      const phases = msg.phases as Phase[];
      const originUs = msg.originUs as number;
      const bucketUs = msg.bucketUs as number;
      const hs = phases.map(() => buildHistogram());
      const oks = phases.map(() => 0);
      for (let i = 0; i < n; i++) {
        const k = phaseOf(sentT[i]!, sentT[i]! + latT[i]!, phases);
        if (k >= 0) { hs[k]!.recordValue(clampUs(latT[i]!)); oks[k]!++; }
      }
      const done = completionTimes(sentT, latT, n);
      const out: PutterResult['phases'] = phases.map((p, k) => {
        const pause = longestPause(done, p.fromUs, p.toUs);
        const r = { name: p.name, ok: oks[k]!, histogram: hdr.encodeIntoCompressedBase64(hs[k]!), pauseUs: pause.us, pauseAtUs: pause.atUs };
        hs[k]!.destroy();
        return r;
      });
      // Timeline: puts by send time in the whole buckets between the first phase's start and the last one's end.
      const from = Math.min(...phases.map((p) => p.fromUs));
      const to = Math.max(...phases.map((p) => p.toUs));
      const first = Math.ceil((from - originUs) / bucketUs);
      const last = Math.floor((to - originUs) / bucketUs);
      const buckets: number[][] = [];
      for (let b = first; b < last; b++) buckets.push([]);
      for (let i = 0; i < n; i++) {
        const b = Math.floor((sentT[i]! - originUs) / bucketUs) - first;
        if (b >= 0 && b < buckets.length) buckets[b]!.push(latT[i]!);
      }
      const timeline: TimelinePoint[] = buckets.map((xs, k) => {
        const s = Float64Array.from(xs).sort();
        const q = (p: number): number => (s.length === 0 ? 0 : s[Math.min(s.length - 1, Math.floor(p * s.length))]!);
        return { t: ((first + k) * bucketUs) / 1e6, puts: s.length, p50: Math.round(q(0.5)), p99: Math.round(q(0.99)), max: Math.round(s.length ? s[s.length - 1]! : 0) };
      });
      const res: PutterResult = {
        phases: out, timeline, acked, failed: errors.count, errorSamples: errors.samples,
        cpuUserUs: c.user, cpuSystemUs: c.system,
      };
      send(res);
      for (const conn of conns) conn.close();
      setTimeout(() => process.exit(0), 50);
    })();
  });
}

if (require.main === module) {
  const cfg = JSON.parse(process.argv[2] ?? '{}') as KeepAliveConfig | GranterConfig | PutterConfig;
  const run = cfg.role === 'keepalive' ? runKeepAlive(cfg) : cfg.role === 'granter' ? runGranter(cfg) : runPutter(cfg);
  run.catch((err: unknown) => {
    process.stderr.write(`leasegen: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  });
}

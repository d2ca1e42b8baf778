// Watch fan-out load generator process (issue #4): either a set of watchers or the writer.
// perf/watch.ts starts one writer and a few watcher processes and drives them over stdin/stdout
// with one JSON line per message:
//
//   child → parent   {"ready":true}                      watches created / writer connected
//   parent → child   {"startUs":…,"fromUs":…,"toUs":…}    writer starts at startUs; [fromUs, toUs) is measured
//   child → parent   writer: its WriterResult when done
//   parent → child   watchers: {"expect":n,"failed":m}    n puts were acknowledged (m more may have applied)
//   child → parent   watchers: their WatchersResult once every watcher has n events, or at the drain timeout
//
// Times are CLOCK_MONOTONIC microseconds (process.hrtime), one clock for every process on the
// machine: the writer stores the send time of each put in its value (first 8 bytes, float64 LE)
// and a watcher's delivery latency is its receive time minus that. A socket read is stamped once
// and every message of that read gets the same receive time.
//
// Watchers use perf/h2client.ts streams: W watchers spread over streams of `perStream` watches,
// streams over connections of `streamsPerConn` streams. WatchResponses are not decoded into
// objects: decodeWatchResponse walks the protobuf for watch_id, created/canceled and, per event,
// mod_revision and the value's timestamp (~0.2 µs per event), so the client's CPU per delivered
// event stays well below the servers'.
//
// Correctness, counted cheaply: every watcher watches the whole written range from before the
// first put, so it must see every put exactly once, in revision order. Out-of-order or repeated
// revisions, and a count other than the number of acknowledged puts, are reported as errors.
import * as hdr from 'hdr-histogram-js';
import { etcdserverpb } from '../src/gen/proto';
import { grpcHeaderBlock, H2Connection, type StreamHandler } from './h2client';
import { buildHistogram } from './loadgen';
import { prefixEnd } from '../src/util/prefix_end';
import { WireCursor } from '../src/util/protobuf_wire';

/** The protobuf walkers below share one cursor (one thread, one message at a time). */
const cur = new WireCursor();

export const WATCH_PREFIX = 'bench/w/';
/** Distinct keys the writer cycles over (all under WATCH_PREFIX). */
export const WATCH_KEYS = 100;
/** Value size of the writer's puts: an 8-byte timestamp, an 8-byte sequence number, filler. */
export const WATCH_VALUE_BYTES = 32;

export interface WatchersConfig {
  role: 'watchers';
  address: string;
  /** Watchers in this process. */
  watchers: number;
  perStream: number;
  streamsPerConn: number;
  /** Give up creating the watches after this long. */
  createTimeoutMs: number;
  /** After the expectation arrives, wait at most this long for the stragglers. */
  drainTimeoutMs: number;
}

export interface WriterConfig {
  role: 'writer';
  address: string;
  /** Puts per second, paced open loop; 0 = as fast as `inflight` concurrent puts go. */
  rate: number;
  /** Concurrent puts in the closed-loop mode; in paced mode, the cap on puts in flight. */
  inflight: number;
}

export interface WriterResult {
  /** Acknowledged puts, whole run. */
  acked: number;
  /** Failed puts (may or may not have been applied). */
  failed: number;
  /** Puts sent in [fromUs, toUs) and acknowledged. */
  windowAcked: number;
  /** Put latency of those (µs, compressed HDR). */
  histogram: string;
  /** Sends skipped in paced mode because `inflight` puts were outstanding. */
  skipped: number;
  errorSamples: string[];
  cpuUserUs: number;
  cpuSystemUs: number;
}

export interface WatchersResult {
  /** Watches created (should equal `watchers`). */
  created: number;
  /** Events received in [fromUs, toUs). */
  windowEvents: number;
  /** Delivery latency of those (µs, compressed HDR). */
  histogram: string;
  /** Events received in total. */
  events: number;
  errors: number;
  errorSamples: string[];
  /** CPU of this process in [fromUs, toUs). */
  cpuUserUs: number;
  cpuSystemUs: number;
  /** Time from the expectation to the last watcher complete (µs), or -1 at the drain timeout. */
  drainUs: number;
}

export function nowUs(): number {
  return Number(process.hrtime.bigint()) / 1000;
}

const enc = new TextEncoder();

const prefixBytes = enc.encode(WATCH_PREFIX);
/** WatchRequest{create_request: the whole WATCH_PREFIX range, from the next revision}. */
export const WATCH_CREATE = etcdserverpb.WatchRequest.encode({
  create_request: { key: prefixBytes, range_end: prefixEnd(prefixBytes) },
}).finish();

/** PutRequest templates, one per key; the value is the last field, so it ends the message. */
const putTemplates: Buffer[] = [];
for (let k = 0; k < WATCH_KEYS; k++) {
  const value = new Uint8Array(WATCH_VALUE_BYTES).fill(0x76);
  const key = enc.encode(`${WATCH_PREFIX}${String(k).padStart(3, '0')}`);
  putTemplates.push(Buffer.from(etcdserverpb.PutRequest.encode({ key, value }).finish()));
}

/** Put number `seq`, its value stamped with `sentUs`. */
export function putBody(seq: number, sentUs: number): Buffer {
  const b = Buffer.from(putTemplates[seq % WATCH_KEYS]!);
  const v = b.length - WATCH_VALUE_BYTES;
  b.writeDoubleLE(sentUs, v);
  b.writeDoubleLE(seq, v + 8);
  return b;
}

// ---- WatchResponse walker -------------------------------------------------------------------

/** What decodeWatchResponse found besides the events. */
export interface WatchResponseInfo {
  watchId: number;
  created: boolean;
  canceled: boolean;
  compactRevision: number;
  events: number;
}

/**
 * Walks a WatchResponse in b[start, end). For each event calls onEvent(watchId, type,
 * modRevision, stamp), stamp being the first 8 bytes of the value as float64 LE (NaN if the value
 * is shorter). Fills `info`. Assumes fields in number order (as Go and protobufjs write them),
 * so watch_id is known before the events; a response with watch_id after its events is rejected.
 */
export function decodeWatchResponse(b: Buffer, start: number, end: number, info: WatchResponseInfo,
  onEvent: (watchId: number, type: number, modRevision: number, stamp: number) => void): void {
  info.watchId = 0;
  info.created = false;
  info.canceled = false;
  info.compactRevision = 0;
  info.events = 0;
  cur.reset(b, start, end);
  while (cur.pos < end) {
    const tag = cur.varint();
    const field = tag >>> 3;
    const wt = tag & 7;
    if (field === 2 && wt === 0) {
      if (info.events > 0) throw new Error('WatchResponse: watch_id after events');
      info.watchId = cur.varint();
    } else if (field === 3 && wt === 0) info.created = cur.varint() !== 0;
    else if (field === 4 && wt === 0) info.canceled = cur.varint() !== 0;
    else if (field === 5 && wt === 0) info.compactRevision = cur.varint();
    else if (field === 11 && wt === 2) {
      const evEnd = cur.length() + cur.pos;
      let type = 0;
      let rev = -1;
      let stamp = NaN;
      while (cur.pos < evEnd) {
        const t = cur.varint();
        if (t === 0x08) type = cur.varint(); // type
        else if (t === 0x12) { // kv
          const kvEnd = cur.length() + cur.pos;
          while (cur.pos < kvEnd) {
            const k = cur.varint();
            if (k === 0x18) rev = cur.varint(); // mod_revision
            else if (k === 0x2a) { // value
              const n = cur.length();
              if (n >= 8) stamp = b.readDoubleLE(cur.pos);
              cur.pos += n;
            } else cur.skip(k & 7);
          }
        } else cur.skip(t & 7);
      }
      info.events++;
      onEvent(info.watchId, type, rev, stamp);
    } else cur.skip(wt);
  }
  if (cur.pos !== end) throw new Error('WatchResponse: truncated');
}

// ---- the two roles ----------------------------------------------------------------------------

interface Window { startUs: number; fromUs: number; toUs: number }

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

/** Histogram value for a latency in µs (the histogram tracks 1 µs .. 60 s). */
function clampUs(us: number): number {
  return Math.min(59_000_000, Math.max(1, Math.round(us)));
}

function send(msg: unknown): void {
  process.stdout.write(JSON.stringify(msg) + '\n');
}

/** Runs `fn` at monotonic time `atUs` (timer precision). */
function at(atUs: number, fn: () => void): void {
  setTimeout(fn, Math.max(0, (atUs - nowUs()) / 1000));
}

async function runWatchers(cfg: WatchersConfig): Promise<void> {
  const block = grpcHeaderBlock(cfg.address, '/etcdserverpb.Watch/Watch');
  const W = cfg.watchers;
  const count = new Float64Array(W);
  const lastRev = new Float64Array(W);
  const histogram = buildHistogram();
  let created = 0;
  let events = 0;
  let windowEvents = 0;
  let outOfOrder = 0;
  let unknownWatch = 0;
  let noStamp = 0;
  let errors = 0;
  const errorSamples: string[] = [];
  const fail = (msg: string): void => {
    errors++;
    if (errorSamples.length < 5) errorSamples.push(msg);
  };
  let win: Window = { startUs: Infinity, fromUs: Infinity, toUs: Infinity };
  let readAt = 0;
  let inWindow = false;

  const streamCount = Math.ceil(W / cfg.perStream);
  const conns: H2Connection[] = [];
  for (let i = 0; i < Math.ceil(streamCount / cfg.streamsPerConn); i++) {
    const c = new H2Connection(cfg.address, () => {});
    c.onRead = () => {
      readAt = nowUs();
      inWindow = readAt >= win.fromUs && readAt < win.toUs;
    };
    conns.push(c);
  }
  await Promise.all(conns.map((c) => c.connect()));

  let done = false;
  let allCreated: () => void = () => {};
  const createdP = new Promise<void>((resolve) => (allCreated = resolve));
  let ended = 0;
  const info: WatchResponseInfo = { watchId: 0, created: false, canceled: false, compactRevision: 0, events: 0 };
  for (let s = 0; s < streamCount; s++) {
    const first = s * cfg.perStream;
    const n = Math.min(cfg.perStream, W - first);
    let next = 0; // the next created response belongs to watcher first + next
    const byId = new Map<number, number>();
    const onEvent = (watchId: number, _type: number, rev: number, stamp: number): void => {
      const w = byId.get(watchId);
      if (w === undefined) {
        if (unknownWatch++ === 0) fail(`event for unknown watch id ${watchId}`);
        return;
      }
      events++;
      count[w]!++;
      if (rev <= lastRev[w]!) {
        if (outOfOrder++ === 0) fail(`watcher ${w}: revision ${rev} after ${lastRev[w]} (repeated or out of order)`);
      }
      lastRev[w] = rev;
      if (inWindow) {
        windowEvents++;
        if (Number.isNaN(stamp)) {
          if (noStamp++ === 0) fail(`watcher ${w}: event at revision ${rev} without a send time in its value`);
        } else histogram.recordValue(clampUs(readAt - stamp));
      }
    };
    const handler: StreamHandler = {
      onMessage(buf, start, end) {
        decodeWatchResponse(buf, start, end, info, onEvent);
        if (info.created) {
          if (next < n) {
            byId.set(info.watchId, first + next++);
            if (++created === W) allCreated();
          } else fail(`stream ${s}: more created responses than watch requests`);
        }
        if (info.canceled) fail(`watch ${info.watchId} canceled (compact_revision ${info.compactRevision})`);
      },
      onEnd(reason, messages) {
        ended++;
        if (!done) fail(messages === 0 ? `watch stream ended before any response (${reason}; a gRPC error status such as UNIMPLEMENTED)` : `watch stream ended early: ${reason}`);
        if (created < W) allCreated(); // unblock: it will never complete
      },
    };
    const conn = conns[Math.floor(s / cfg.streamsPerConn)]!;
    const id = conn.openStream(block, handler);
    for (let i = 0; i < n; i++) conn.sendMessage(id, WATCH_CREATE);
  }
  const timeout = new Promise<void>((resolve) => setTimeout(resolve, cfg.createTimeoutMs).unref());
  await Promise.race([createdP, timeout]);
  if (created < W) {
    if (errors === 0) fail(`only ${created} of ${W} watches created in ${cfg.createTimeoutMs} ms`);
    done = true;
    send({ ready: false, created, errorSamples });
    for (const c of conns) c.close();
    return;
  }
  send({ ready: true, created });

  let cpu0 = process.cpuUsage();
  let cpu = { user: 0, system: 0 };
  lines((msg) => {
    if (typeof msg.fromUs === 'number') {
      win = msg as unknown as Window;
      at(win.fromUs, () => (cpu0 = process.cpuUsage()));
      at(win.toUs, () => (cpu = process.cpuUsage(cpu0)));
    } else if (typeof msg.expect === 'number') {
      const expect = msg.expect;
      const slack = Number(msg.failed ?? 0);
      const t0 = nowUs();
      const check = (): void => {
        let complete = true;
        for (let w = 0; complete && w < W; w++) if (count[w]! < expect) complete = false;
        const late = nowUs() - t0 > cfg.drainTimeoutMs * 1000;
        if (!complete && !late && ended === 0) {
          setTimeout(check, 5);
          return;
        }
        done = true;
        let short = 0;
        let extra = 0;
        let worst = expect;
        for (let w = 0; w < W; w++) {
          if (count[w]! < expect) { short++; worst = Math.min(worst, count[w]!); }
          else if (count[w]! > expect + slack) extra++;
        }
        if (short > 0) fail(`${short} of ${W} watchers missed events (fewest: ${worst} of ${expect}; ${late ? 'drain timeout' : 'stream ended'})`);
        if (extra > 0) fail(`${extra} of ${W} watchers got more events than puts (${expect}, +${slack} failed puts)`);
        const res: WatchersResult = {
          created, windowEvents, histogram: hdr.encodeIntoCompressedBase64(histogram), events,
          errors: errors + Math.max(0, outOfOrder - 1) + Math.max(0, unknownWatch - 1) + Math.max(0, noStamp - 1), errorSamples,
          cpuUserUs: cpu.user, cpuSystemUs: cpu.system, drainUs: late ? -1 : nowUs() - t0,
        };
        send(res);
        for (const c of conns) c.close();
        setTimeout(() => process.exit(0), 50);
      };
      check();
    }
  });
}

async function runWriter(cfg: WriterConfig): Promise<void> {
  const block = grpcHeaderBlock(cfg.address, '/etcdserverpb.KV/Put');
  const histogram = buildHistogram();
  let acked = 0;
  let failed = 0;
  let windowAcked = 0;
  let skipped = 0;
  let inFlight = 0;
  let seq = 0;
  let stopping = false;
  const errorSamples: string[] = [];
  let win: Window = { startUs: Infinity, fromUs: Infinity, toUs: Infinity };
  const sentAt = new Map<number, number>(); // tag (seq) → send time
  let conn!: H2Connection;
  let allDone: () => void = () => {};
  const finished = new Promise<void>((resolve) => (allDone = resolve));

  const issue = (): void => {
    const n = seq++;
    const t = nowUs();
    sentAt.set(n, t);
    inFlight++;
    conn.request(block, putBody(n, t), n);
  };
  const onDone = (tag: number, ok: boolean): void => {
    inFlight--;
    const t0 = sentAt.get(tag)!;
    sentAt.delete(tag);
    if (ok) {
      acked++;
      if (t0 >= win.fromUs && t0 < win.toUs) {
        windowAcked++;
        histogram.recordValue(clampUs(nowUs() - t0));
      }
    } else {
      failed++;
      if (errorSamples.length < 5) errorSamples.push(conn.error ? `put: ${conn.error.message}` : 'put: gRPC error status');
    }
    if (cfg.rate === 0 && !stopping && !conn.error) issue();
    else if (stopping && inFlight === 0) allDone();
  };
  conn = new H2Connection(cfg.address, onDone);
  await conn.connect();
  send({ ready: true });

  let cpu0 = process.cpuUsage();
  let cpu = { user: 0, system: 0 };
  lines((msg) => {
    if (typeof msg.fromUs !== 'number') return;
    win = msg as unknown as Window;
    at(win.fromUs, () => (cpu0 = process.cpuUsage()));
    at(win.startUs, () => {
      if (cfg.rate === 0) {
        for (let i = 0; i < cfg.inflight; i++) issue();
      } else {
        // Open loop: every tick, send the puts that are due (timer ticks are ~1 ms apart).
        const tick = (): void => {
          const now = nowUs();
          if (now >= win.toUs) return;
          const due = Math.floor(((now - win.startUs) * cfg.rate) / 1e6) + 1;
          while (seq < due) {
            if (inFlight >= cfg.inflight) { skipped += due - seq; seq = due; break; }
            issue();
          }
          setTimeout(tick, Math.min(1000 / cfg.rate, 1000));
        };
        tick();
      }
    });
    at(win.toUs, async () => {
      cpu = process.cpuUsage(cpu0);
      stopping = true;
      if (inFlight > 0) await Promise.race([finished, new Promise((r) => setTimeout(r, 10_000))]);
      conn.close();
      if (inFlight > 0) errorSamples.push(`${inFlight} puts unanswered after 10 s`);
      const res: WriterResult = {
        acked, failed: failed + inFlight, windowAcked, histogram: hdr.encodeIntoCompressedBase64(histogram), skipped,
        errorSamples, cpuUserUs: cpu.user, cpuSystemUs: cpu.system,
      };
      send(res);
      setTimeout(() => process.exit(0), 50);
    });
  });
}

if (require.main === module) {
  const cfg = JSON.parse(process.argv[2] ?? '{}') as WatchersConfig | WriterConfig;
  (cfg.role === 'watchers' ? runWatchers(cfg) : runWriter(cfg)).catch((err: unknown) => {
    process.stderr.write(`watchgen: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  });
}

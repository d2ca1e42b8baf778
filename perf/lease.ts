// The lease measurements (issues #3, #5), with perf/leasegen.ts processes:
//
// lease-keepalive, N leases: a few keepalive processes (N and 8 streams spread over them) each
// grant their leases (TTL 60 s), open their LeaseKeepAlive streams and say ready; the window is
// picked on the machine-wide monotonic clock as for watch (start, warmup, [fromUs, toUs)); each
// stream keeps 16 keep-alives in flight, cycling over its leases, until toUs; then the leases are
// revoked. Sample: throughput = keep-alive responses/s in the window, latency = request sent →
// response read, server and client CPU per keep-alive; `lease` adds grant and revoke rates and
// the server's resident memory before and after. Errors: a response for a lease with no request
// outstanding, a TTL other than the granted one (0 = the server thinks a live lease is gone),
// a stream that ends early, a request unanswered.
//
// lease-mass-expiry, N leases: a putter process (16 closed-loop put clients) runs from the start;
// a granter process grants N leases, 64 in flight, each with the TTL that makes it expire at a
// common deadline D (within ~1 s of it, TTLs are whole seconds), and attaches a key to N/10 of
// them. Then LeaseLeases must list N leases and a count-only range must find the keys. From D
// on this process polls the key count (every 250 ms; 100 ms in --quick) and, once the keys are
// gone, LeaseLeases until it is empty: that is "all gone" (LeaseLeases is not polled while many
// leases remain, it would cost the server more than the expiry). Phases, by put send time:
// before = [grants done + 0.5 s, D), during = [D, all gone), after = 5 s (1 s in --quick).
// Sample: throughput and latency = the put load during the expiry, server CPU per op = server CPU
// during the expiry (revokes included) per put then; `lease` has all three phases,
// the grant rate, how long until the first key, all keys and all leases were gone, the server's
// CPU in each phase and a per-second timeline of put latency and keys remaining.
//
// Both servers revoke at most 500 expired leases per 500 ms tick (etcd 3.4 leaseRevokeRate 1000/s),
// so all gone takes at least N/1000 s after D.
import fs from 'node:fs';
import * as hdr from 'hdr-histogram-js';
import { grpcHeaderBlock, H2Connection } from './h2client';
import {
  callP, countRequest, leasesCount, LEASE_KEY_PREFIX, nowUs, PATHS, rangeCount,
  type GranterConfig, type GrantResult, type KeepAliveConfig, type KeepAliveResult, type Phase, type PutterConfig,
  type PutterResult, type TimelinePoint,
} from './leasegen';
import { buildHistogram } from './loadgen';
import { processCpuUs, threadBusy } from './procstat';
import { failedSample, type Options, type Sample, type Target } from './run';
import { Child } from './watch';
import type { Workload } from './workloads';

export const KEEPALIVE = { ttl: 60, streams: 8, streamsPerConn: 2, inflight: 16, grantInflight: 64 };
export const EXPIRY = { grantInflight: 64, grantConns: 2, putConns: 2 };

type Lat = Sample['latencyUs'];

export interface ExpiryPhase {
  name: 'before' | 'during' | 'after';
  /** Seconds from the deadline D. */
  fromS: number;
  toS: number;
  puts: number;
  putsPerSec: number;
  latencyUs: Lat;
  /** Server CPU in the phase, in cores (CPU seconds per second). */
  serverCores: number;
}

export interface LeaseExtra {
  kind: 'keepalive' | 'expiry';
  leases: number;
  granted: number;
  grantPerSec: number;
  /**
   * Server resident memory (MiB) before the leases were granted and at the end of the window /
   * after the expiry: all of it, and the anonymous part (heaps, without mapped database files).
   */
  rssMiB: { before: number; after: number; anonBefore: number; anonAfter: number };
  // keepalive
  streams?: number;
  inflightPerStream?: number;
  revokePerSec?: number;
  // expiry
  keys?: number;
  putClients?: number;
  grantLatencyUs?: Lat;
  /** Grants answered with a higher TTL than asked (the minimum TTL): they expire later than D. */
  ttlRaised?: number;
  /** When the leases expire, from the grants' acks + TTL, seconds from D. */
  expiryFromS?: number;
  expiryToS?: number;
  /** One LeaseLeases with all N leases alive (ms) and what it listed. */
  leaseLeasesMs?: number;
  listed?: number;
  /** Seconds from D: first key gone, all keys gone, LeaseLeases empty (-1 = not within the timeout). */
  firstKeyGoneS?: number;
  keysGoneS?: number;
  allGoneS?: number;
  /** Leases revoked per second from D to all gone. */
  revokePerSecEff?: number;
  phases?: ExpiryPhase[];
  /** Put latency by send time in buckets of timelineBucketS seconds (t = bucket start, seconds from D). */
  timeline?: TimelinePoint[];
  timelineBucketS?: number;
  /** [seconds from D, keys remaining]. */
  keysTimeline?: [number, number][];
  notes?: string[];
}

function latOf(h: hdr.Histogram): Lat {
  return { p50: h.getValueAtPercentile(50), p90: h.getValueAtPercentile(90), p99: h.getValueAtPercentile(99),
    p999: h.getValueAtPercentile(99.9), max: h.maxValue, mean: h.mean };
}

const CURVE_POINTS: number[] = [];
for (let k = 0; k <= 50; k++) CURVE_POINTS.push(100 * (1 - Math.pow(10, -k / 10)));

function curveOf(h: hdr.Histogram, n: number): [number, number][] {
  return n > 0 ? CURVE_POINTS.map((p) => [p, h.getValueAtPercentile(p)] as [number, number]) : [];
}

/** Resident memory of a process, MiB: all of it, and the anonymous part (heaps; not the mapped database files). */
function rssMiB(pid: number): { rss: number; anon: number } {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (name: string): number => Number(new RegExp(`${name}:\\s+(\\d+) kB`).exec(status)?.[1] ?? NaN) / 1024;
    return { rss: kb('VmRSS'), anon: kb('RssAnon') };
  } catch {
    return { rss: NaN, anon: NaN };
  }
}

function at(atUs: number, fn: () => void): Promise<void> {
  return new Promise((resolve) => setTimeout(() => { fn(); resolve(); }, Math.max(0, (atUs - nowUs()) / 1000)));
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function measureLease(address: string, serverPid: number, w: Workload, size: number, o: Options, target: Target,
  round: number): Promise<Sample> {
  try {
    return w.lease!.kind === 'keepalive'
      ? await measureKeepAlive(address, serverPid, size, o, target, round)
      : await measureExpiry(address, serverPid, size, o, target, round);
  } catch (err) {
    return failedSample(target, round, size, [err instanceof Error ? err.message : String(err)]);
  }
}

// ---- keep-alive ----------------------------------------------------------------------------------

async function measureKeepAlive(address: string, serverPid: number, leases: number, o: Options, target: Target,
  round: number): Promise<Sample> {
  const procs = Math.max(1, Math.min(o.procs, KEEPALIVE.streams, leases));
  const rss0 = rssMiB(serverPid);
  const children: Child[] = [];
  for (let p = 0; p < procs; p++) {
    const n = Math.floor(leases / procs) + (p < leases % procs ? 1 : 0);
    const streams = Math.floor(KEEPALIVE.streams / procs) + (p < KEEPALIVE.streams % procs ? 1 : 0);
    const cfg: KeepAliveConfig = {
      role: 'keepalive', address, leases: n, ttl: KEEPALIVE.ttl, streams, streamsPerConn: KEEPALIVE.streamsPerConn,
      inflight: KEEPALIVE.inflight, grantInflight: KEEPALIVE.grantInflight, drainTimeoutMs: 10_000,
    };
    children.push(new Child(cfg, 'leasegen.js'));
  }
  try {
    const ready = await Promise.all(children.map((c) => c.next(120_000).catch((e: Error) => ({ ready: false, errorSamples: [e.message] }))));
    const notReady = ready.filter((r) => r.ready !== true);
    if (notReady.length > 0) return failedSample(target, round, leases, notReady.flatMap((r) => (r.errorSamples as string[] | undefined) ?? ['not ready']));
    const startUs = nowUs() + 200_000;
    const fromUs = startUs + o.warmupS * 1e6;
    const toUs = fromUs + o.durationS * 1e6;
    for (const c of children) c.send({ startUs, fromUs, toUs });
    let cpu0 = 0;
    let cpu1 = 0;
    let rss1 = { rss: NaN, anon: NaN };
    let busy0: Promise<{ main: number; storage: number } | null> = Promise.resolve(null);
    let busy1: Promise<{ main: number; storage: number } | null> = Promise.resolve(null);
    await Promise.all([
      at(fromUs, () => { cpu0 = processCpuUs(serverPid); if (target === 'concord') busy0 = threadBusy(address); }),
      at(toUs, () => { cpu1 = processCpuUs(serverPid); rss1 = rssMiB(serverPid); if (target === 'concord') busy1 = threadBusy(address); }),
    ]);
    const results = (await Promise.all(children.map((c) => c.next(120_000)))) as unknown as KeepAliveResult[];
    const h = buildHistogram();
    let ok = 0;
    let errors = 0;
    let clientCpu = 0;
    let granted = 0;
    let grantUs = 0;
    let revoked = 0;
    let revokeUs = 0;
    const errorSamples: string[] = [];
    for (const r of results) {
      const part = hdr.decodeFromCompressedBase64(r.histogram, 32, false);
      h.add(part);
      part.destroy();
      ok += r.windowResponses;
      errors += r.errors;
      clientCpu += r.cpuUserUs + r.cpuSystemUs;
      granted += r.granted;
      grantUs = Math.max(grantUs, r.grantUs);
      revoked += r.revoked;
      revokeUs = Math.max(revokeUs, r.revokeUs);
      errorSamples.push(...r.errorSamples);
    }
    if (granted < leases) errorSamples.unshift(`only ${granted} of ${leases} leases granted`);
    if (revoked < granted) errorSamples.push(`only ${revoked} of ${granted} leases revoked`);
    const [b0, b1] = await Promise.all([busy0, busy1]);
    const per = Math.max(1, ok);
    const sample: Sample = {
      target, round, clients: leases, ok, errors, errorSamples: errorSamples.slice(0, 5), throughput: ok / o.durationS,
      latencyUs: latOf(h), curve: curveOf(h, ok), serverCpuUsPerOp: (cpu1 - cpu0) / per, clientCpuUsPerOp: clientCpu / per,
      lease: {
        kind: 'keepalive', leases, granted, grantPerSec: granted / Math.max(1e-6, grantUs / 1e6),
        rssMiB: { before: rss0.rss, after: rss1.rss, anonBefore: rss0.anon, anonAfter: rss1.anon }, streams: KEEPALIVE.streams, inflightPerStream: KEEPALIVE.inflight,
        revokePerSec: revoked / Math.max(1e-6, revokeUs / 1e6),
      },
    };
    if (b0 && b1) sample.threadBusyUsPerOp = { main: ((b1.main - b0.main) * 1e6) / per, storage: ((b1.storage - b0.storage) * 1e6) / per };
    h.destroy();
    return sample;
  } finally {
    for (const c of children) c.kill();
  }
}

// ---- mass expiry ---------------------------------------------------------------------------------

/** Default seconds from the start of the grants to the common deadline: the grants at >= 3,000/s, then a before window. */
export function defaultDeadlineS(leases: number, quick: boolean): number {
  return quick ? Math.max(1.5, leases / 3000 + 1.2) : Math.ceil(leases / 3000) + 8;
}

async function measureExpiry(address: string, serverPid: number, leases: number, o: Options, target: Target,
  round: number): Promise<Sample> {
  const keys = Math.min(leases, o.expiryKeys ?? Math.round(leases / 10));
  const clients = o.expiryClients;
  const pollMs = o.quick ? 100 : 250;
  const bucketUs = o.quick ? 250_000 : 1_000_000;
  const afterS = o.quick ? 0.5 : 5;
  const deadlineS = o.expiryDeadlineS ?? defaultDeadlineS(leases, o.quick);
  // All gone takes N/1000 s at etcd's revoke rate; give it three times that and 30 s.
  const goneTimeoutS = deadlineS + (3 * leases) / 1000 + 30;
  const notes: string[] = [];
  const errorSamples: string[] = [];
  let errors = 0;
  const fail = (msg: string): void => {
    errors++;
    if (errorSamples.length < 5) errorSamples.push(msg);
  };

  const rss0 = rssMiB(serverPid);
  const putter = new Child({ role: 'putter', address, clients, conns: EXPIRY.putConns, seed: 1 + round } satisfies PutterConfig, 'leasegen.js');
  const granter = new Child({ role: 'granter', address, leases, keys, inflight: EXPIRY.grantInflight,
    conns: EXPIRY.grantConns } satisfies GranterConfig, 'leasegen.js');
  const poll = new H2Connection(address, () => {});
  try {
    await poll.connect();
    const countBlock = grpcHeaderBlock(address, PATHS.range);
    const leasesBlock = grpcHeaderBlock(address, PATHS.leases);
    const countKeys = async (): Promise<number> => rangeCount(await callP(poll, countBlock, countRequest(LEASE_KEY_PREFIX)));
    const listLeases = async (): Promise<number> => leasesCount(await callP(poll, leasesBlock, new Uint8Array(0)));

    const ready = await Promise.all([putter.next(30_000), granter.next(30_000)]);
    if (ready.some((r) => r.ready !== true)) return failedSample(target, round, leases, ['putter or granter not ready']);
    const t0 = nowUs() + 100_000;
    const D = t0 + deadlineS * 1e6;
    putter.send({ startUs: t0 });
    granter.send({ startUs: t0, deadlineUs: D });
    const g = (await granter.next(goneTimeoutS * 1000)) as unknown as GrantResult;
    if (g.errors > 0) { errors += g.errors; errorSamples.push(...g.errorSamples.slice(0, 5 - errorSamples.length)); }
    if (g.granted < leases) notes.push(`only ${g.granted} of ${leases} leases granted`);
    if (g.ttlRaised > 0) notes.push(`${g.ttlRaised} grants came back with a higher TTL than asked (the minimum TTL)`);

    // Everything is there?
    const l0 = nowUs();
    const listed = await listLeases();
    const leaseLeasesMs = (nowUs() - l0) / 1000;
    const keyCount = await countKeys();
    if (nowUs() < D) {
      if (listed !== g.granted) fail(`LeaseLeases listed ${listed} leases after ${g.granted} grants`);
      if (keyCount !== g.keys) fail(`${keyCount} lease keys found after ${g.keys} puts with a lease`);
    } else notes.push('the deadline passed before the grants and checks were done: no before window, counts not checked');

    const beforeFrom = Math.min(D, nowUs() + 500_000);
    if (D - beforeFrom < (o.quick ? 0.5e6 : 1e6)) notes.push(`before window only ${((D - beforeFrom) / 1e6).toFixed(2)} s (grants took ${((g.endUs - g.startUs) / 1e6).toFixed(1)} s; raise --expiry-deadline)`);
    const cpu: Record<string, number> = {};
    await at(beforeFrom, () => (cpu.before = processCpuUs(serverPid)));
    const duringCpu = at(D, () => (cpu.during = processCpuUs(serverPid)));
    await at(D - pollMs * 1000, () => {});

    // Poll until all gone.
    const keysTimeline: [number, number][] = [];
    let firstKeyGone = -1;
    let keysGone = -1;
    let allGone = -1;
    const timeoutAt = t0 + goneTimeoutS * 1e6;
    let lastLeases = -1;
    for (;;) {
      const tick = nowUs();
      if (keysGone < 0) {
        const k = await countKeys();
        const t = nowUs();
        keysTimeline.push([(t - D) / 1e6, k]);
        if (k < g.keys && firstKeyGone < 0) firstKeyGone = t;
        if (k === 0) keysGone = t;
      }
      if (keysGone >= 0) {
        lastLeases = await listLeases();
        if (lastLeases === 0) { allGone = nowUs(); break; }
      }
      if (nowUs() > timeoutAt) break;
      await sleep(Math.max(0, pollMs - (nowUs() - tick) / 1000));
    }
    await duringCpu;
    if (allGone < 0) {
      fail(keysGone < 0 ? `lease keys still there ${goneTimeoutS.toFixed(0)} s after the start (${keysTimeline.at(-1)?.[1]} left)`
        : `${lastLeases} leases still listed ${goneTimeoutS.toFixed(0)} s after the start`);
      allGone = nowUs();
    }
    if (allGone < D) notes.push('all gone before the deadline: leases expired early');
    cpu.after = processCpuUs(serverPid);
    const afterTo = allGone + afterS * 1e6;
    await at(afterTo, () => (cpu.end = processCpuUs(serverPid)));
    const rss1 = rssMiB(serverPid);
    // Still gone?
    const [keysAfter, leasesAfter] = [await countKeys(), await listLeases()];
    if (keysAfter !== 0) fail(`${keysAfter} lease keys back after the expiry`);
    if (leasesAfter !== 0) fail(`${leasesAfter} leases listed after the expiry`);

    const phaseList: Phase[] = [
      { name: 'before', fromUs: beforeFrom, toUs: D },
      { name: 'during', fromUs: D, toUs: Math.max(D, allGone) },
      { name: 'after', fromUs: allGone, toUs: afterTo },
    ];
    putter.send({ stop: true, phases: phaseList, originUs: D, bucketUs });
    const put = (await putter.next(60_000)) as unknown as PutterResult;
    if (put.failed > 0) { errors += put.failed; errorSamples.push(...put.errorSamples.slice(0, Math.max(0, 5 - errorSamples.length))); }
    const cpuKeys = ['before', 'during', 'after', 'end'];
    const phases: ExpiryPhase[] = [];
    let duringH: hdr.Histogram | null = null;
    let duringOk = 0;
    put.phases.forEach((p, i) => {
      const span = phaseList[i]!;
      const secs = Math.max(1e-6, (span.toUs - span.fromUs) / 1e6);
      const h = hdr.decodeFromCompressedBase64(p.histogram, 32, false);
      phases.push({
        name: p.name as ExpiryPhase['name'], fromS: (span.fromUs - D) / 1e6, toS: (span.toUs - D) / 1e6, puts: p.ok, putsPerSec: p.ok / secs,
        latencyUs: latOf(h), serverCores: (cpu[cpuKeys[i + 1]!]! - cpu[cpuKeys[i]!]!) / 1e6 / secs,
      });
      if (p.name === 'during') { duringH = h; duringOk = p.ok; } else h.destroy();
    });
    const gh = hdr.decodeFromCompressedBase64(g.histogram, 32, false);
    const during = phases[1]!;
    const sec = (t: number): number => (t < 0 ? -1 : (t - D) / 1e6);
    const sample: Sample = {
      target, round, clients: leases, ok: duringOk, errors, errorSamples: errorSamples.slice(0, 5),
      throughput: during.putsPerSec, latencyUs: during.latencyUs, curve: duringH ? curveOf(duringH, duringOk) : [],
      serverCpuUsPerOp: ((cpu.after! - cpu.during!) / Math.max(1, duringOk)),
      clientCpuUsPerOp: (put.cpuUserUs + put.cpuSystemUs) / Math.max(1, put.acked),
      lease: {
        kind: 'expiry', leases, granted: g.granted, grantPerSec: g.granted / Math.max(1e-6, (g.endUs - g.startUs) / 1e6),
        rssMiB: { before: rss0.rss, after: rss1.rss, anonBefore: rss0.anon, anonAfter: rss1.anon }, keys: g.keys, putClients: clients, grantLatencyUs: latOf(gh), ttlRaised: g.ttlRaised,
        expiryFromS: (g.minExpiryUs - D) / 1e6, expiryToS: (g.maxExpiryUs - D) / 1e6, leaseLeasesMs, listed,
        firstKeyGoneS: sec(firstKeyGone), keysGoneS: sec(keysGone), allGoneS: sec(allGone),
        revokePerSecEff: allGone > D ? g.granted / ((allGone - D) / 1e6) : 0,
        phases, timeline: put.timeline, timelineBucketS: bucketUs / 1e6, keysTimeline, notes,
      },
    };
    gh.destroy();
    (duringH as hdr.Histogram | null)?.destroy();
    return sample;
  } finally {
    poll.close();
    putter.kill();
    granter.kill();
  }
}

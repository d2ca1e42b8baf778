// One watch fan-out measurement (issue #4): W watchers in a few perf/watchgen.ts processes, one
// writer process, a measured window in the middle of the writes.
//
//   1. start the watcher processes (streams spread over them) and the writer; each says ready
//      once its watches are created / its connection is up;
//   2. pick the window on the machine-wide monotonic clock: writes start at startUs, the
//      measurement is [fromUs, toUs) (warmup before it), writes stop at toUs;
//   3. read the server's CPU at fromUs and toUs;
//   4. when the writer is done, tell the watchers how many puts were acknowledged; each waits
//      until all its watchers have that many events (or the drain timeout) and reports.
//
// In the Sample: throughput = events received by all watchers per second in the window,
// latencyUs = delivery latency (put sent → event received) of those events, server and client
// CPU per delivered event; `watch` adds the put rate and put latency while watched. Events that
// are missing, repeated or out of order are errors.
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import * as hdr from 'hdr-histogram-js';
import { buildHistogram } from './loadgen';
import { processCpuUs, threadBusy } from './procstat';
import { failedSample, type Options, type Sample, type Target } from './run';
import { nowUs, type WatchersConfig, type WatchersResult, type WriterConfig, type WriterResult } from './watchgen';
import type { Workload } from './workloads';

export interface WatchExtra {
  watchers: number;
  streams: number;
  conns: number;
  procs: number;
  /** Target put rate (0 = closed loop). */
  rate: number;
  /** Acknowledged puts per second in the window. */
  putsPerSec: number;
  putLatencyUs: { p50: number; p90: number; p99: number; p999: number; max: number; mean: number };
  /** Whole run: acknowledged puts, events delivered, and the events that should have been. */
  puts: number;
  events: number;
  expectedEvents: number;
  /** Time from the last put acknowledged to the last watcher complete (ms), -1 = drain timeout. */
  drainMs: number;
  /** Paced writer: sends skipped because too many puts were outstanding. */
  skippedPuts: number;
  /** Server CPU in the window per acknowledged put (the put and its W deliveries). */
  serverCpuUsPerPut: number;
}

const CREATE_TIMEOUT_MS = 60_000;

const CURVE_POINTS: number[] = [];
for (let k = 0; k <= 50; k++) CURVE_POINTS.push(100 * (1 - Math.pow(10, -k / 10)));

/** A load generator child (watchgen.js, leasegen.js) speaking one JSON line per message. */
export class Child {
  private readonly proc: ChildProcess;
  private buf = '';
  private readonly inbox: Record<string, unknown>[] = [];
  private waiter: ((m: Record<string, unknown> | Error) => void) | null = null;
  private stderr = '';
  private exited: Error | null = null;

  private readonly name: string;

  constructor(cfg: WatchersConfig | WriterConfig | object, script = 'watchgen.js') {
    this.name = script.replace(/\.js$/, '');
    this.proc = spawn(process.execPath, [path.join(__dirname, script), JSON.stringify(cfg)], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.proc.stdout!.setEncoding('utf8');
    this.proc.stdout!.on('data', (d: string) => {
      this.buf += d;
      let i;
      while ((i = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, i);
        this.buf = this.buf.slice(i + 1);
        if (line.trim() === '') continue;
        const msg = JSON.parse(line) as Record<string, unknown>;
        if (this.waiter) { const w = this.waiter; this.waiter = null; w(msg); } else this.inbox.push(msg);
      }
    });
    this.proc.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.proc.stdin!.on('error', () => {});
    this.proc.on('exit', (code, signal) => {
      this.exited = new Error(`${this.name} exited ${code ?? signal}: ${this.stderr.trim().slice(-500)}`);
      if (this.waiter) { const w = this.waiter; this.waiter = null; w(this.exited); }
    });
  }

  next(timeoutMs: number): Promise<Record<string, unknown>> {
    const m = this.inbox.shift();
    if (m !== undefined) return Promise.resolve(m);
    if (this.exited) return Promise.reject(this.exited);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { this.waiter = null; reject(new Error(`${this.name}: no answer in ${timeoutMs} ms`)); }, timeoutMs);
      this.waiter = (x) => { clearTimeout(timer); if (x instanceof Error) reject(x); else resolve(x); };
    });
  }

  send(msg: unknown): void {
    if (!this.exited) this.proc.stdin!.write(JSON.stringify(msg) + '\n');
  }

  kill(): void {
    if (!this.exited) this.proc.kill('SIGKILL');
  }
}

function at(atUs: number, fn: () => void): Promise<void> {
  return new Promise((resolve) => setTimeout(() => { fn(); resolve(); }, Math.max(0, (atUs - nowUs()) / 1000)));
}

export async function measureWatch(address: string, serverPid: number, w: Workload, watchers: number, o: Options, target: Target,
  round: number): Promise<Sample> {
  const spec = w.watch!;
  const streams = Math.ceil(watchers / spec.perStream);
  const procs = Math.max(1, Math.min(o.procs, streams));
  const rate = spec.rate(watchers);
  // How long watchers may take to catch up once writes stop (a lagging server's backlog).
  const DRAIN_TIMEOUT_MS = o.quick ? 5_000 : 20_000;
  // Whole streams per process, as even as they go.
  const cfgs: WatchersConfig[] = [];
  let conns = 0;
  for (let p = 0, first = 0; p < procs; p++) {
    const s = Math.floor(streams / procs) + (p < streams % procs ? 1 : 0);
    const n = Math.min(watchers - first, s * spec.perStream);
    first += n;
    conns += Math.ceil(s / spec.streamsPerConn);
    cfgs.push({ role: 'watchers', address, watchers: n, perStream: spec.perStream, streamsPerConn: spec.streamsPerConn,
      createTimeoutMs: CREATE_TIMEOUT_MS, drainTimeoutMs: DRAIN_TIMEOUT_MS });
  }
  const watcherProcs = cfgs.map((c) => new Child(c));
  const writer = new Child({ role: 'writer', address, rate, inflight: spec.inflight });
  const all = [...watcherProcs, writer];
  try {
    const ready = await Promise.all(all.map((c) => c.next(CREATE_TIMEOUT_MS + 10_000).catch((e: Error) => ({ ready: false, errorSamples: [e.message] }))));
    const notReady = ready.filter((r) => r.ready !== true);
    if (notReady.length > 0) return failedSample(target, round, watchers, notReady.flatMap((r) => (r.errorSamples as string[] | undefined) ?? ['not ready']));

    const startUs = nowUs() + 200_000;
    const fromUs = startUs + o.warmupS * 1e6;
    const toUs = fromUs + o.durationS * 1e6;
    for (const c of all) c.send({ startUs, fromUs, toUs });
    let cpu0 = 0;
    let cpu1 = 0;
    let busy0: Promise<{ main: number; storage: number } | null> = Promise.resolve(null);
    let busy1: Promise<{ main: number; storage: number } | null> = Promise.resolve(null);
    const windowDone = Promise.all([
      at(fromUs, () => { cpu0 = processCpuUs(serverPid); if (target === 'concord') busy0 = threadBusy(address); }),
      at(toUs, () => { cpu1 = processCpuUs(serverPid); if (target === 'concord') busy1 = threadBusy(address); }),
    ]);
    const wr = (await writer.next(o.warmupS * 1000 + o.durationS * 1000 + 30_000)) as unknown as WriterResult;
    await windowDone;
    for (const c of watcherProcs) c.send({ expect: wr.acked, failed: wr.failed });
    const results = (await Promise.all(watcherProcs.map((c) => c.next(DRAIN_TIMEOUT_MS + 30_000)))) as unknown as WatchersResult[];

    const h = buildHistogram();
    let windowEvents = 0;
    let events = 0;
    let errors = wr.failed;
    let clientCpu = 0;
    let drainUs = 0;
    const errorSamples: string[] = [...wr.errorSamples];
    for (const r of results) {
      const part = hdr.decodeFromCompressedBase64(r.histogram, 32, false);
      h.add(part);
      part.destroy();
      windowEvents += r.windowEvents;
      events += r.events;
      errors += r.errors;
      clientCpu += r.cpuUserUs + r.cpuSystemUs;
      drainUs = r.drainUs < 0 || drainUs < 0 ? -1 : Math.max(drainUs, r.drainUs);
      errorSamples.push(...r.errorSamples);
    }
    const ph = hdr.decodeFromCompressedBase64(wr.histogram, 32, false);
    const [b0, b1] = await Promise.all([busy0, busy1]);
    const per = Math.max(1, windowEvents);
    const sample: Sample = {
      target, round, clients: watchers, ok: windowEvents, errors, errorSamples: errorSamples.slice(0, 5),
      throughput: windowEvents / o.durationS,
      latencyUs: { p50: h.getValueAtPercentile(50), p90: h.getValueAtPercentile(90), p99: h.getValueAtPercentile(99),
        p999: h.getValueAtPercentile(99.9), max: h.maxValue, mean: h.mean },
      curve: windowEvents > 0 ? CURVE_POINTS.map((p) => [p, h.getValueAtPercentile(p)] as [number, number]) : [],
      serverCpuUsPerOp: (cpu1 - cpu0) / per,
      clientCpuUsPerOp: clientCpu / per,
      watch: {
        watchers, streams, conns, procs, rate,
        putsPerSec: wr.windowAcked / o.durationS,
        putLatencyUs: { p50: ph.getValueAtPercentile(50), p90: ph.getValueAtPercentile(90), p99: ph.getValueAtPercentile(99),
          p999: ph.getValueAtPercentile(99.9), max: ph.maxValue, mean: ph.mean },
        puts: wr.acked, events, expectedEvents: wr.acked * watchers,
        drainMs: drainUs < 0 ? -1 : drainUs / 1000,
        skippedPuts: wr.skipped,
        serverCpuUsPerPut: (cpu1 - cpu0) / Math.max(1, wr.windowAcked),
      },
    };
    if (wr.skipped > 0) sample.errorSamples.push(`writer fell behind its rate: ${wr.skipped} puts skipped`);
    if (b0 && b1) sample.threadBusyUsPerOp = { main: ((b1.main - b0.main) * 1e6) / per, storage: ((b1.storage - b0.storage) * 1e6) / per };
    h.destroy();
    ph.destroy();
    return sample;
  } catch (err) {
    return failedSample(target, round, watchers, [err instanceof Error ? err.message : String(err)]);
  } finally {
    for (const c of all) c.kill();
  }
}

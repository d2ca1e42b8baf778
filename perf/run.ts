// `npm run perf`: the benchmark suite. Runs each workload at each client count against a fresh
// concord and, when real etcd is installed, a fresh etcd, interleaved (A B, then B A) so machine
// drift cancels out in the concord/etcd ratio, which is the figure we steer by.
//
//   npm run perf                         full run (all workloads, sweep 1..1024 clients, 2 rounds)
//   npm run perf -- --quick              smoke run, under two minutes (CI runs it, never gates)
//   npm run perf -- --workloads put-seq,range-ser --clients 1,64,256 --duration 5 --rounds 3
//   npm run perf -- --no-etcd            concord only
//   npm run perf -- --workloads watch-fanout --watchers 1,100,1000   watch fan-out (perf/watch.ts)
//   npm run perf -- --etcd-only          etcd only (e.g. to develop a workload before concord has it)
//   npm run perf -- --cluster 3          3-member concord against 3-member etcd (perf/cluster.ts): put-seq,
//                                        range-lin, range-ser sent to the leader, then to the followers;
//                                        --target leader|followers|all picks which (default all)
//   npm run perf -- --workloads lease-keepalive,lease-mass-expiry --keepalive-leases 1000 --expiry-leases 20000
//                                        leases (perf/lease.ts); also --expiry-keys N, --expiry-clients C,
//                                        --expiry-deadline S (grants start -> all expire; default from N)
//   npm run perf -- --workloads put-seq,range-ser --auth --tls       what auth and TLS cost (perf/security.ts):
//                                        every server also runs with auth on (a token on every request) and
//                                        with TLS, interleaved with a plain one; --mtls adds client certificates,
//                                        --modes plain,auth,tls,mtls,auth+tls,auth+mtls picks any set
//   npm run perf -- --workloads defrag,maintenance --defrag-mib 1024 --maint-mib 256 --rounds 1
//                                        maintenance (perf/maintenance.ts), servers with an 8 GiB quota:
//                                        defrag = fill S MiB (8,000-byte values), delete half, compact, then
//                                        16 put clients: baseline window, one Defragment, after window;
//                                        its duration, db size/in use before and after, put latency and
//                                        the longest pause with no put completing, per phase.
//                                        maintenance = fill S MiB, then HashKV, Snapshot (read to the end)
//                                        and Hash back to back for --duration s each under the same put
//                                        load. UNIMPLEMENTED (concord's Defragment until it lands) = n/a.
//                                        --quick: 64 and 32 MiB.
//
// Output: a table on the terminal, perf/results/<stamp>.json and perf/results/<stamp>.html
// (latency percentile curves and throughput-vs-latency from the sweep). Latencies are recorded
// by the load generator processes (perf/loadgen.ts) into HDR histograms, in microseconds.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http2 from 'node:http2';
import os from 'node:os';
import path from 'node:path';
import * as hdr from 'hdr-histogram-js';
import { startConcord } from '../test/helpers/concord';
import { etcdAvailable, freePort, startEtcd } from '../test/helpers/etcd';
import { buildHistogram, READY_LINE, type LoadgenConfig, type LoadgenResult } from './loadgen';
import { processCpuUs, threadBusy } from './procstat';
import { renderHtml } from './report';
import { clusterTables, runClusterSuite, CLUSTER_WORKLOADS, type ClusterExtra, type Role } from './cluster';
import { measureLease, type LeaseExtra } from './lease';
import { maintServerArgs, maintTables, measureMaint, type MaintExtra } from './maintenance';
import { measureWatch, type WatchExtra } from './watch';
import {
  clientSecurity, enableAuth, makeRunPki, modeSchedule, modesFromArgs, securityCostRows, serverTlsArgs, sessionTarget,
  type ClientSecurity, type RunPki, type SecMode,
} from './security';
import { workloadByName, workloads, type Workload } from './workloads';

export type Target = 'concord' | 'etcd';

/**
 * A cell that could not be measured (a server or load generator failed): no throughput, the
 * errors kept. `clients` is the cell's size (clients, watchers, leases or MiB).
 */
export function failedSample(target: Target, round: number, clients: number, errors: string[]): Sample {
  return {
    target, round, clients, ok: 0, errors: Math.max(1, errors.length), errorSamples: errors.slice(0, 5), throughput: 0,
    latencyUs: { p50: 0, p90: 0, p99: 0, p999: 0, max: 0, mean: 0 }, curve: [], serverCpuUsPerOp: 0, clientCpuUsPerOp: 0,
  };
}


export interface Sample {
  target: Target;
  /** Security mode (perf/security.ts) when not plain: 'auth', 'tls', 'mtls', 'auth+tls', 'auth+mtls'. */
  mode?: string;
  round: number;
  clients: number;
  ok: number;
  errors: number;
  errorSamples: string[];
  throughput: number; // ok responses per second
  latencyUs: { p50: number; p90: number; p99: number; p999: number; max: number; mean: number };
  /** Percentile curve points [percentile, µs] for the HTML plot. */
  curve: [number, number][];
  serverCpuUsPerOp: number;
  clientCpuUsPerOp: number;
  /** concord only: event-loop busy time per operation on each thread (from /metrics). */
  threadBusyUsPerOp?: { main: number; storage: number };
  /**
   * Watch fan-out workloads: `clients` is the number of watchers, an "op" is an event delivered
   * to one watcher (throughput = events/s, latency = put sent → event received); this has the rest.
   */
  watch?: WatchExtra;
  /**
   * Lease workloads (perf/lease.ts): `clients` is the number of leases. lease-keepalive: an op is
   * a keep-alive answered; lease-mass-expiry: an op is a put during the expiry (throughput and
   * latency of the put load from the deadline until all leases are gone); this has the rest.
   */
  lease?: LeaseExtra;
  /** Cluster workloads (perf/cluster.ts): who led, whether that held, CPU of every member. */
  cluster?: ClusterExtra;
  /**
   * Maintenance workloads (perf/maintenance.ts): `clients` is the database size in MiB; throughput
   * and latency are the put load during the maintenance calls; this has the calls and every phase.
   */
  maint?: MaintExtra;
}

export interface Cell {
  workload: string;
  description: string;
  clients: number;
  /** Cluster runs: the members the clients sent to (a cell per workload, role and client count). */
  role?: Role;
  samples: Sample[];
}

export interface PerfReport {
  startedAt: string;
  machine: { cpus: number; model: string; memGiB: number; node: string; platform: string };
  options: Options;
  etcdVersion: string | null;
  cells: Cell[];
}

export interface Options {
  quick: boolean;
  workloads: string[];
  clients: number[];
  /** Watcher counts for the watch workloads (default: each workload's own sweep). */
  watchers: number[] | null;
  /** Lease counts of lease-keepalive and lease-mass-expiry (default: each workload's own sweep). */
  keepaliveLeases: number[] | null;
  expiryLeases: number[] | null;
  /** lease-mass-expiry: leases with a key attached (default N/10), put clients, seconds from the start of the grants to expiry. */
  expiryKeys: number | null;
  expiryClients: number;
  expiryDeadlineS: number | null;
  /** --clients was given (else --quick uses a workload's quickClients). */
  clientsGiven: boolean;
  durationS: number;
  warmupS: number;
  rounds: number;
  procs: number;
  etcd: boolean;
  concord: boolean;
  outDir: string;
  /** Members per cluster (--cluster N); 0 = the single-member suite. */
  cluster: number;
  /** --target: cluster runs send to the leader, to the followers, or both in turn. */
  roles: Role[];
  /** --cpu-prof DIR: concord cluster members write V8 CPU profiles (every thread) there when they stop. */
  cpuProfDir: string | null;
  /** Database sizes (MiB) of the defrag and maintenance workloads. */
  defragMiB: number;
  maintMiB: number;
  /** Security modes (--auth, --tls, --mtls, --modes); just plain unless given. */
  modes: SecMode[];
}

function parseArgs(argv: string[]): Options {
  const get = (name: string): string | undefined => {
    const i = argv.indexOf('--' + name);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const quick = argv.includes('--quick');
  const cluster = Number(get('cluster') ?? 0);
  const defaultWorkloads = cluster > 0 ? CLUSTER_WORKLOADS : workloads.filter((w) => !quick || w.inQuick !== false).map((w) => w.name);
  const target = get('target') ?? 'all';
  const o: Options = {
    quick,
    workloads: (get('workloads') ?? defaultWorkloads.join(',')).split(','),
    clients: (get('clients') ?? (quick ? '1,64' : '1,16,64,256,1024')).split(',').map(Number),
    watchers: get('watchers')?.split(',').map(Number) ?? null,
    keepaliveLeases: get('keepalive-leases')?.split(',').map(Number) ?? null,
    expiryLeases: get('expiry-leases')?.split(',').map(Number) ?? null,
    expiryKeys: get('expiry-keys') !== undefined ? Number(get('expiry-keys')) : null,
    expiryClients: Number(get('expiry-clients') ?? 16),
    expiryDeadlineS: get('expiry-deadline') !== undefined ? Number(get('expiry-deadline')) : null,
    clientsGiven: get('clients') !== undefined,
    durationS: Number(get('duration') ?? (quick ? 1 : 5)),
    warmupS: Number(get('warmup') ?? (quick ? 0.2 : 1)),
    rounds: Number(get('rounds') ?? (quick ? 1 : 2)),
    procs: Number(get('procs') ?? Math.max(1, os.cpus().length)),
    etcd: !argv.includes('--no-etcd') && etcdAvailable(),
    concord: !argv.includes('--etcd-only'),
    outDir: get('out') ?? path.resolve(__dirname, '../../perf/results'),
    cluster,
    roles: target === 'all' ? ['leader', 'followers'] : [target as Role],
    cpuProfDir: get('cpu-prof') !== undefined ? path.resolve(get('cpu-prof')!) : null,
    defragMiB: Number(get('defrag-mib') ?? (quick ? 64 : 1024)),
    maintMiB: Number(get('maint-mib') ?? (quick ? 32 : 256)),
    modes: modesFromArgs({ auth: argv.includes('--auth'), tls: argv.includes('--tls'), mtls: argv.includes('--mtls'), modes: get('modes') }),
  };
  for (const w of o.workloads) workloadByName(w); // fail early on typos
  if (!(Number.isInteger(cluster) && (cluster === 0 || cluster >= 2))) throw new Error('--cluster takes a member count >= 2');
  if (!['leader', 'followers', 'all'].includes(target)) throw new Error('--target takes leader, followers or all');
  if (get('target') !== undefined && cluster === 0) throw new Error('--target needs --cluster N');
  if (o.cpuProfDir !== null && cluster === 0) throw new Error('--cpu-prof needs --cluster N');
  if (cluster > 0) {
    const other = o.workloads.map(workloadByName).filter((w) => w.http || w.watch || w.lease || w.maint);
    if (other.length > 0) throw new Error(`--cluster runs unary gRPC workloads only, not ${other.map((w) => w.name).join(', ')}`);
  }
  if (o.modes.length > 1) {
    if (cluster > 0) throw new Error('--auth/--tls/--mtls/--modes: single-member runs only, not --cluster');
    const other = o.workloads.map(workloadByName).filter((w) => w.http || w.watch || w.lease || w.maint);
    if (other.length > 0) throw new Error(`--auth/--tls/--mtls/--modes: unary gRPC workloads only, not ${other.map((w) => w.name).join(', ')}`);
  }
  if (o.clients.some((c) => !Number.isInteger(c) || c < 1)) throw new Error('--clients takes positive integers');
  if (o.watchers?.some((c) => !Number.isInteger(c) || c < 1)) throw new Error('--watchers takes positive integers');
  for (const [flag, v] of [['keepalive-leases', o.keepaliveLeases], ['expiry-leases', o.expiryLeases]] as const) {
    if (v?.some((c) => !Number.isInteger(c) || c < 1)) throw new Error(`--${flag} takes positive integers`);
  }
  for (const [flag, v] of [['defrag-mib', o.defragMiB], ['maint-mib', o.maintMiB]] as const) {
    if (!(Number.isInteger(v) && v >= 1)) throw new Error(`--${flag} takes a positive integer (MiB)`);
  }
  if (o.expiryKeys !== null && !(Number.isInteger(o.expiryKeys) && o.expiryKeys >= 0)) throw new Error('--expiry-keys takes an integer >= 0');
  if (!(Number.isInteger(o.expiryClients) && o.expiryClients >= 1)) throw new Error('--expiry-clients takes a positive integer');
  if (o.expiryDeadlineS !== null && !(o.expiryDeadlineS >= 3)) throw new Error('--expiry-deadline takes seconds >= 3');
  if (!o.concord && !o.etcd) throw new Error('--etcd-only but etcd is not installed (or --no-etcd given)');
  return o;
}

function grpcFrame(msg: Uint8Array): Buffer {
  const b = Buffer.alloc(5 + msg.length);
  b.writeUInt32BE(msg.length, 1);
  b.set(msg, 5);
  return b;
}

/**
 * Sends the workload's setup requests one by one over one HTTP/2 connection (over TLS and with
 * an auth token when the server is in such a mode).
 */
export async function setup(address: string, w: Workload, sec?: ClientSecurity, token?: string): Promise<void> {
  const reqs = w.setup();
  if (reqs.length === 0) return;
  const { url, options } = sessionTarget(address, sec);
  const session = http2.connect(url, options);
  try {
    for (const r of reqs) {
      await new Promise<void>((resolve, reject) => {
        const s = session.request({
          ':method': 'POST', ':path': r.path, 'content-type': 'application/grpc', te: 'trailers', ...(token !== undefined ? { token } : {}),
        });
        let status = '';
        s.on('trailers', (h) => (status = String(h['grpc-status'])));
        s.on('response', (h) => { if (h['grpc-status'] !== undefined) status = String(h['grpc-status']); });
        s.on('data', () => {});
        s.on('error', reject);
        s.on('close', () => (status === '0' ? resolve() : reject(new Error(`setup ${r.path}: grpc-status ${status}`))));
        s.end(grpcFrame(r.body));
      });
    }
  } finally {
    session.close();
  }
}

/** Load generator processes running; killed if this process exits before they do. */
const loadgens = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of loadgens) child.kill('SIGKILL');
});

/**
 * Runs load generator processes together: each connects (and logs in), says ready; when all
 * have, `onStart` runs (the caller's "before" readings) and they are told to go. One failing
 * kills the others.
 */
function runLoadgens(cfgs: LoadgenConfig[], onStart: () => Promise<void> | void): Promise<LoadgenResult[]> {
  const children = cfgs.map((cfg) => {
    const child = spawn(process.execPath, [path.join(__dirname, 'loadgen.js'), JSON.stringify(cfg)], { stdio: ['pipe', 'pipe', 'pipe'] });
    loadgens.add(child);
    return child;
  });
  let readyCount = 0;
  let failed = false;
  let startError: unknown = null;
  const killAll = (): void => {
    failed = true;
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  };
  const go = async (): Promise<void> => {
    try {
      await onStart();
    } catch (err) {
      startError = err;
      killAll();
      throw err;
    }
    for (const c of children) c.stdin.end('go\n');
  };
  let started: Promise<void> | null = null;
  const results = children.map((child) => new Promise<LoadgenResult>((resolve, reject) => {
    let out = '';
    let err = '';
    let ready = false;
    child.stdin.on('error', () => {}); // a child that died: its exit reports it
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (!ready && out.startsWith(READY_LINE + '\n')) {
        ready = true;
        out = out.slice(READY_LINE.length + 1);
        if (++readyCount === children.length) {
          started = go();
          started.catch(() => {}); // its error kills the children: their exits reject
        }
      }
    });
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('exit', (code) => {
      loadgens.delete(child);
      if (code === 0) {
        resolve(JSON.parse(out) as LoadgenResult);
        return;
      }
      if (!failed) killAll();
      reject(new Error(`loadgen exited ${code}: ${err}`));
    });
  }));
  return Promise.all(results).then(async (rs) => {
    await started;
    return rs;
  }, async (err: unknown) => {
    await Promise.allSettled(results);
    throw startError ?? err;
  });
}

const CURVE_POINTS: number[] = [];
for (let k = 0; k <= 50; k++) CURVE_POINTS.push(100 * (1 - Math.pow(10, -k / 10)));

/** HTTP gateway workloads: autocannon, in this process (its CPU is this process's CPU). */
async function measureHttp(address: string, serverPid: number, w: Workload, clients: number, o: Options, target: Target,
  round: number): Promise<Sample> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const autocannon = require('autocannon') as (opts: Record<string, unknown>) => Promise<AutocannonResult>;
  const url = `http://${address}${w.http!.path}`;
  const common = { url, method: 'POST', body: w.http!.body, headers: { 'content-type': 'application/json' }, connections: clients, pipelining: 1 };
  await autocannon({ ...common, duration: o.warmupS });
  const cpu0 = processCpuUs(serverPid);
  const self0 = process.cpuUsage();
  const r = await autocannon({ ...common, duration: o.durationS });
  const self = process.cpuUsage(self0);
  const cpu1 = processCpuUs(serverPid);
  const l = r.latency;
  const us = (ms: number): number => Math.round(ms * 1000);
  const ok = r['2xx'];
  return {
    target, round, clients, ok, errors: r.errors + r.non2xx + r.timeouts,
    errorSamples: r.non2xx > 0 ? [`${r.non2xx} non-2xx responses`] : [],
    throughput: ok / o.durationS,
    latencyUs: { p50: us(l.p50), p90: us(l.p90), p99: us(l.p99), p999: us(l.p99_9), max: us(l.max), mean: us(l.mean) },
    curve: [[50, us(l.p50)], [75, us(l.p75)], [90, us(l.p90)], [97.5, us(l.p97_5)], [99, us(l.p99)], [99.9, us(l.p99_9)], [99.99, us(l.p99_99)], [99.999, us(l.p99_999)]],
    serverCpuUsPerOp: (cpu1 - cpu0) / Math.max(1, ok),
    clientCpuUsPerOp: (self.user + self.system) / Math.max(1, ok),
  };
}

interface AutocannonResult {
  '2xx': number; non2xx: number; errors: number; timeouts: number;
  latency: Record<'p50' | 'p75' | 'p90' | 'p97_5' | 'p99' | 'p99_9' | 'p99_99' | 'p99_999' | 'max' | 'mean', number>;
}

/** The sweep of a workload: client counts, or watcher counts for the watch workloads. */
export function sweepOf(w: Workload, o: Options): number[] {
  if (w.maint) return [w.maint.kind === 'defrag' ? o.defragMiB : o.maintMiB];
  if (w.lease) {
    const given = w.lease.kind === 'keepalive' ? o.keepaliveLeases : o.expiryLeases;
    return given ?? (o.quick ? w.lease.quickSizes : w.lease.sizes);
  }
  if (!w.watch) return o.quick && !o.clientsGiven && w.quickClients ? w.quickClients : o.clients;
  return o.watchers ?? (o.quick ? w.watch.quickWatchers : w.watch.watchers);
}

/** How the table and progress name a workload's sweep variable. */
function sweepLetter(w: Workload): string {
  return w.watch ? 'W' : w.lease ? 'N' : w.maint ? 'MiB' : 'c';
}

/** How a measurement reaches its server beyond its client address (security runs). */
export interface ServerEnv {
  /** Plain-HTTP /metrics (concord's thread busy times); the client address unless TLS. */
  metricsAddress: string;
  security?: ClientSecurity;
  mode?: SecMode;
}

export async function measure(address: string, serverPid: number, w: Workload, clients: number, o: Options, target: Target,
  round: number, env?: ServerEnv): Promise<Sample> {
  if (w.http) return measureHttp(address, serverPid, w, clients, o, target, round);
  if (w.watch) return measureWatch(address, serverPid, w, clients, o, target, round);
  if (w.lease) return measureLease(address, serverPid, w, clients, o, target, round);
  if (w.maint) return measureMaint(address, serverPid, w, clients, o, target, round);
  // Server CPU is read across the whole run, warmup included, then scaled to the window;
  // loadgen processes run their windows at the same time. The run starts when every load
  // generator is connected (and logged in: a login's bcrypt is not a request's cost).
  const metrics = env?.metricsAddress ?? address;
  const before: { busy: { main: number; storage: number } | null; cpu: number } = { busy: null, cpu: NaN };
  const load = await runUnaryLoad([address], w, clients, o, round, {
    security: env?.security,
    onStart: async () => {
      before.busy = target === 'concord' ? await threadBusy(metrics) : null;
      before.cpu = processCpuUs(serverPid);
    },
  });
  const cpu1 = processCpuUs(serverPid);
  const busy0 = before.busy;
  const busy1 = busy0 !== null ? await threadBusy(metrics) : null;
  const ops = opsInWall(load);
  const sample = unarySample(load, target, round, clients, (cpu1 - before.cpu) / ops);
  if (env?.mode !== undefined && env.mode.name !== 'plain') sample.mode = env.mode.name;
  if (busy0 !== null && busy1 !== null) {
    sample.threadBusyUsPerOp = { main: ((busy1.main - busy0.main) * 1e6) / ops, storage: ((busy1.storage - busy0.storage) * 1e6) / ops };
  }
  return sample;
}

/** What the load generator processes of one unary measurement report, merged. */
export interface UnaryLoad {
  ok: number;
  errors: number;
  errorSamples: string[];
  /** Latencies of the window, µs (owned by the caller: unarySample destroys it). */
  histogram: hdr.Histogram;
  clientCpuUs: number;
  /** The measured window (the longest of the processes'). */
  elapsedMs: number;
  /** From the processes' start signal (all connected) to their end: warmup, window and drain. */
  wallMs: number;
  /** Clients that sent to each of the addresses (by index). */
  clientsPerAddress: number[];
}

/**
 * Runs a unary workload's closed-loop clients in load generator processes (one per core, at
 * least one per address): process p sends to addresses[p % addresses.length], clients spread
 * evenly over the processes.
 */
export async function runUnaryLoad(addresses: string[], w: Workload, clients: number, o: Options, round: number,
  opts: { security?: ClientSecurity; onStart?: () => Promise<void> | void } = {}): Promise<UnaryLoad> {
  const procs = Math.min(Math.max(o.procs, addresses.length), clients);
  const totalConns = clients === 1 ? 1 : Math.min(64, Math.max(procs, Math.ceil(clients / 8)));
  const cfgs: LoadgenConfig[] = [];
  const clientsPerAddress = addresses.map(() => 0);
  for (let p = 0; p < procs; p++) {
    const c = Math.floor(clients / procs) + (p < clients % procs ? 1 : 0);
    const conns = Math.max(1, Math.min(c, Math.floor(totalConns / procs) + (p < totalConns % procs ? 1 : 0)));
    clientsPerAddress[p % addresses.length]! += c;
    cfgs.push({
      address: addresses[p % addresses.length]!, workload: w.name, clients: c, conns, warmupMs: o.warmupS * 1000,
      durationMs: o.durationS * 1000, seed: 1 + p + 1000 * round, ...(opts.security !== undefined ? { security: opts.security } : {}),
    });
  }
  let t0 = NaN;
  const results = await runLoadgens(cfgs, async () => {
    await opts.onStart?.();
    t0 = performance.now();
  });
  const wallMs = performance.now() - t0;
  const load: UnaryLoad = {
    ok: 0, errors: 0, errorSamples: [], histogram: buildHistogram(), clientCpuUs: 0, elapsedMs: 0, wallMs, clientsPerAddress,
  };
  for (const r of results) {
    const part = hdr.decodeFromCompressedBase64(r.histogram, 32, false);
    load.histogram.add(part);
    part.destroy();
    load.ok += r.ok;
    load.errors += r.errors;
    load.clientCpuUs += r.cpuUserUs + r.cpuSystemUs;
    load.elapsedMs = Math.max(load.elapsedMs, r.elapsedMs);
    load.errorSamples.push(...r.errorSamples);
  }
  return load;
}

/** Requests completed in the whole wall time (warmup and drain too) ≈ throughput × wall. */
export function opsInWall(load: UnaryLoad): number {
  return (load.ok / (load.elapsedMs / 1000)) * (load.wallMs / 1000);
}

/** The Sample of a unary load (destroys its histogram); server CPU per operation from the caller. */
export function unarySample(load: UnaryLoad, target: Target, round: number, clients: number, serverCpuUsPerOp: number): Sample {
  const h = load.histogram;
  const sample: Sample = {
    target, round, clients, ok: load.ok, errors: load.errors, errorSamples: load.errorSamples.slice(0, 5),
    throughput: load.ok / (load.elapsedMs / 1000),
    latencyUs: {
      p50: h.getValueAtPercentile(50), p90: h.getValueAtPercentile(90), p99: h.getValueAtPercentile(99),
      p999: h.getValueAtPercentile(99.9), max: h.maxValue, mean: h.mean,
    },
    curve: load.ok > 0 ? CURVE_POINTS.map((p) => [p, h.getValueAtPercentile(p)] as [number, number]) : [],
    serverCpuUsPerOp,
    clientCpuUsPerOp: load.clientCpuUs / Math.max(1, load.ok),
  };
  h.destroy();
  return sample;
}

export async function withServer<T>(target: Target, fn: (address: string, pid: number, env: ServerEnv) => Promise<T>, extraArgs: string[] = [],
  mode?: SecMode, pki: RunPki | null = null): Promise<T> {
  const tlsArgs = mode !== undefined ? serverTlsArgs(mode, pki) : [];
  const scheme = tlsArgs.length > 0 ? 'https' : 'http';
  const security = mode !== undefined ? clientSecurity(mode, pki) : undefined;
  const run = async (address: string, pid: number, metricsAddress: string): Promise<T> => {
    const env: ServerEnv = { metricsAddress, security, mode };
    return fn(address, pid, env);
  };
  if (target === 'concord') {
    // Behind TLS the client port's /metrics is https: a plain listener for threadBusy.
    const metricsPort = scheme === 'https' ? await freePort() : 0;
    const metricsArgs = scheme === 'https' ? ['--listen-metrics-urls', `http://127.0.0.1:${metricsPort}`] : [];
    const c = await startConcord({ extraArgs: [...extraArgs, ...tlsArgs, ...metricsArgs], scheme });
    try { return await run(c.address, c.proc.pid!, scheme === 'https' ? `127.0.0.1:${metricsPort}` : c.address); } finally { await c.stop(); }
  }
  const e = await startEtcd({ extraArgs: [...extraArgs, ...tlsArgs], scheme });
  try { return await run(e.address, e.proc.pid!, e.metricsAddress); } finally { await e.stop(); }
}

export class Progress {
  private done = 0;
  constructor(private readonly total: number) {}
  step(label: string): void {
    this.done++;
    const width = 30;
    const filled = Math.round((this.done / this.total) * width);
    const line = `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${this.done}/${this.total} ${label}`;
    if (process.stderr.isTTY) process.stderr.write(`\r${line.padEnd(100)}`);
    else process.stderr.write(line + '\n');
  }
  end(): void {
    if (process.stderr.isTTY) process.stderr.write('\n');
  }
}

export function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = xs.slice().sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Per-round concord/etcd ratios of a metric (rounds pair A and B measured back to back). */
export function ratios(cell: Cell, metric: (s: Sample) => number): number[] {
  const out: number[] = [];
  const rounds = new Set(cell.samples.map((s) => s.round));
  for (const r of rounds) {
    const c = cell.samples.find((s) => s.round === r && s.target === 'concord' && s.mode === undefined);
    const e = cell.samples.find((s) => s.round === r && s.target === 'etcd' && s.mode === undefined);
    // A failed measurement (nothing succeeded, e.g. UNIMPLEMENTED) has no ratio.
    if (c && e && c.ok > 0 && e.ok > 0 && metric(e) > 0) out.push(metric(c) / metric(e));
  }
  return out;
}

export function fmtRatio(rs: number[]): string {
  if (rs.length === 0) return '-';
  const m = median(rs).toFixed(2);
  if (rs.length === 1) return m;
  return `${m} (${Math.min(...rs).toFixed(2)}-${Math.max(...rs).toFixed(2)})`;
}

function table(report: PerfReport): string {
  const ms = (us: number): string => (us / 1000).toFixed(us < 10_000 ? 2 : 1);
  const rows: string[][] = [[
    'workload', 'clients', 'target', 'ops/s', 'p50 ms', 'p90 ms', 'p99 ms', 'p99.9 ms', 'max ms', 'errors',
    'srv cpu µs/op', 'cli cpu µs/op', 'ops/s ratio', 'p99 ratio',
  ]];
  for (const cell of report.cells) {
    if (cell.role !== undefined) continue; // clusterTables
    const w = workloadByName(cell.workload);
    if (cell.samples.some((s) => s.watch !== undefined) || w.watch || w.lease || w.maint) continue;
    for (const target of ['concord', 'etcd'] as Target[]) {
      const ss = cell.samples.filter((s) => s.target === target && s.mode === undefined);
      if (ss.length === 0) continue;
      const m = (f: (s: Sample) => number): number => median(ss.map(f));
      rows.push([
        cell.workload, String(cell.clients), target, m((s) => s.throughput).toFixed(0),
        ms(m((s) => s.latencyUs.p50)), ms(m((s) => s.latencyUs.p90)), ms(m((s) => s.latencyUs.p99)),
        ms(m((s) => s.latencyUs.p999)), ms(m((s) => s.latencyUs.max)), String(ss.reduce((a, s) => a + s.errors, 0)),
        m((s) => s.serverCpuUsPerOp).toFixed(0), m((s) => s.clientCpuUsPerOp).toFixed(0),
        target === 'concord' ? fmtRatio(ratios(cell, (s) => s.throughput)) : '',
        target === 'concord' ? fmtRatio(ratios(cell, (s) => s.latencyUs.p99)) : '',
      ]);
    }
  }
  const parts = rows.length > 1 ? [align(rows)] : [];
  if (report.options.modes.length > 1) {
    const targets = (['concord', 'etcd'] as Target[]).filter((t) => report.cells.some((c) => c.samples.some((s) => s.target === t)));
    parts.push('security cost: each mode on its own fresh server next to a plain one, interleaved; extra srv µs/op = server CPU per ' +
      'request beyond plain; cli = load generator CPU per request; x plain = mode/plain; per round, median (min..max over rounds)\n' +
      align(securityCostRows(report.cells.filter((c) => c.role === undefined), report.options.modes, targets)));
  }
  const cluster = clusterTables(report);
  if (cluster !== '') parts.push(cluster);
  const watch = watchTable(report);
  if (watch !== '') parts.push(watch);
  const lease = leaseTables(report);
  if (lease !== '') parts.push(lease);
  const maint = maintTables(report);
  if (maint !== '') parts.push(maint);
  return parts.join('\n\n');
}

export function align(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => (i < 3 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ')).join('\n');
}

/** The watch fan-out cells: events delivered to all watchers, delivery and put latency. */
function watchTable(report: PerfReport): string {
  const ms = (us: number): string => (us / 1000).toFixed(us < 10_000 ? 2 : 1);
  const rows: string[][] = [[
    'workload', 'watchers', 'target', 'puts/s', 'events/s', 'deliv p50', 'p90', 'p99', 'p99.9', 'max ms', 'put p50', 'put p99',
    'errors', 'srv µs/ev', 'srv µs/put', 'cli µs/ev', 'events/s ratio', 'deliv p99 ratio', 'put p99 ratio',
  ]];
  for (const cell of report.cells) {
    if (!workloadByName(cell.workload).watch) continue;
    for (const target of ['concord', 'etcd'] as Target[]) {
      const ss = cell.samples.filter((s) => s.target === target);
      if (ss.length === 0) continue;
      const m = (f: (s: Sample) => number): number => median(ss.map(f));
      const put = (f: (w: WatchExtra) => number) => (s: Sample): number => (s.watch ? f(s.watch) : 0);
      rows.push([
        cell.workload, String(cell.clients), target, m(put((w) => w.putsPerSec)).toFixed(0), m((s) => s.throughput).toFixed(0),
        ms(m((s) => s.latencyUs.p50)), ms(m((s) => s.latencyUs.p90)), ms(m((s) => s.latencyUs.p99)),
        ms(m((s) => s.latencyUs.p999)), ms(m((s) => s.latencyUs.max)),
        ms(m(put((w) => w.putLatencyUs.p50))), ms(m(put((w) => w.putLatencyUs.p99))),
        String(ss.reduce((a, s) => a + s.errors, 0)),
        m((s) => s.serverCpuUsPerOp).toFixed(1), m(put((w) => w.serverCpuUsPerPut)).toFixed(0), m((s) => s.clientCpuUsPerOp).toFixed(1),
        target === 'concord' ? fmtRatio(ratios(cell, (s) => s.throughput)) : '',
        target === 'concord' ? fmtRatio(ratios(cell, (s) => s.latencyUs.p99)) : '',
        target === 'concord' ? fmtRatio(ratios(cell, put((w) => w.putLatencyUs.p99))) : '',
      ]);
    }
  }
  if (rows.length === 1) return '';
  return 'watch fan-out: events/s = events received by all watchers; deliv = put sent -> event received (ms); ' +
    'put = put latency while watched (ms); µs/ev = CPU per delivered event; srv µs/put = server CPU per put and its W deliveries\n' + align(rows);
}

/** The lease cells: keep-alive rates, and the mass expiry (its grants, how long until gone, put latency by phase). */
function leaseTables(report: PerfReport): string {
  const ms = (us: number): string => (us / 1000).toFixed(us < 10_000 ? 2 : 1);
  const ka: string[][] = [[
    'workload', 'leases', 'target', 'keepalives/s', 'p50 ms', 'p90 ms', 'p99 ms', 'p99.9 ms', 'max ms', 'errors',
    'srv µs/ka', 'cli µs/ka', 'grants/s', 'revokes/s', 'srv anon MiB', 'ka/s ratio', 'p99 ratio',
  ]];
  const ex: string[][] = [[
    'workload', 'leases', 'target', 'keys', 'grants/s', 'grant p99', 'LeaseLeases ms', '1st key gone s', 'keys gone s',
    'all gone s', 'revokes/s', 'errors', 'all gone ratio',
  ]];
  const ph: string[][] = [['workload', 'leases', 'phase', 'target', 'puts/s', 'p50 ms', 'p99 ms', 'p99.9 ms', 'max ms', 'srv cores',
    'puts/s ratio', 'p99 ratio', 'p99.9 ratio']];
  const notes: string[] = [];
  for (const cell of report.cells) {
    const w = workloadByName(cell.workload);
    if (!w.lease) continue;
    for (const target of ['concord', 'etcd'] as Target[]) {
      const ss = cell.samples.filter((s) => s.target === target && s.lease !== undefined);
      const all = cell.samples.filter((s) => s.target === target);
      if (all.length === 0) continue;
      const m = (f: (s: Sample) => number): number => median(ss.map(f));
      const L = (f: (l: LeaseExtra) => number) => (s: Sample): number => f(s.lease!);
      const errors = String(all.reduce((a, s) => a + s.errors, 0));
      const rss = `${m(L((l) => l.rssMiB.anonBefore)).toFixed(0)}->${m(L((l) => l.rssMiB.anonAfter)).toFixed(0)}`;
      const mine = target === 'concord';
      for (const s of ss) for (const n of s.lease!.notes ?? []) notes.push(`${cell.workload} N=${cell.clients} ${target} round ${s.round + 1}: ${n}`);
      if (ss.length === 0) {
        (w.lease.kind === 'keepalive' ? ka : ex).push([cell.workload, String(cell.clients), target, 'failed', ...Array(w.lease.kind === 'keepalive' ? 5 : 6).fill('-'), errors]);
        continue;
      }
      if (w.lease.kind === 'keepalive') {
        ka.push([
          cell.workload, String(cell.clients), target, m((s) => s.throughput).toFixed(0),
          ms(m((s) => s.latencyUs.p50)), ms(m((s) => s.latencyUs.p90)), ms(m((s) => s.latencyUs.p99)),
          ms(m((s) => s.latencyUs.p999)), ms(m((s) => s.latencyUs.max)), errors,
          m((s) => s.serverCpuUsPerOp).toFixed(1), m((s) => s.clientCpuUsPerOp).toFixed(1),
          m(L((l) => l.grantPerSec)).toFixed(0), m(L((l) => l.revokePerSec ?? 0)).toFixed(0), rss,
          mine ? fmtRatio(ratios(cell, (s) => s.throughput)) : '', mine ? fmtRatio(ratios(cell, (s) => s.latencyUs.p99)) : '',
        ]);
        continue;
      }
      const secs = (x: number): string => (x < 0 ? 'timeout' : x.toFixed(1));
      ex.push([
        cell.workload, String(cell.clients), target, m(L((l) => l.keys ?? 0)).toFixed(0), m(L((l) => l.grantPerSec)).toFixed(0),
        ms(m(L((l) => l.grantLatencyUs?.p99 ?? 0))), m(L((l) => l.leaseLeasesMs ?? 0)).toFixed(0),
        secs(m(L((l) => l.firstKeyGoneS ?? -1))), secs(m(L((l) => l.keysGoneS ?? -1))), secs(m(L((l) => l.allGoneS ?? -1))),
        m(L((l) => l.revokePerSecEff ?? 0)).toFixed(0), errors,
        mine ? fmtRatio(ratios(cell, (s) => s.lease?.allGoneS ?? 0)) : '',
      ]);
    }
    if (w.lease.kind !== 'expiry') continue;
    for (const phase of ['before', 'during', 'after'] as const) {
      for (const target of ['concord', 'etcd'] as Target[]) {
        const ps = cell.samples.filter((s) => s.target === target).map((s) => s.lease?.phases?.find((p) => p.name === phase))
          .filter((p): p is NonNullable<typeof p> => p !== undefined);
        if (ps.length === 0) continue;
        const m = (f: (p: (typeof ps)[number]) => number): number => median(ps.map(f));
        const pr = (f: (p: (typeof ps)[number]) => number): string => {
          if (target !== 'concord') return '';
          return fmtRatio(ratios(cell, (s) => { const p = s.lease?.phases?.find((x) => x.name === phase); return p ? f(p) : 0; }));
        };
        ph.push([
          cell.workload, String(cell.clients), phase, target, m((p) => p.putsPerSec).toFixed(0),
          ms(m((p) => p.latencyUs.p50)), ms(m((p) => p.latencyUs.p99)), ms(m((p) => p.latencyUs.p999)), ms(m((p) => p.latencyUs.max)),
          m((p) => p.serverCores).toFixed(2), pr((p) => p.putsPerSec), pr((p) => p.latencyUs.p99), pr((p) => p.latencyUs.p999),
        ]);
      }
    }
  }
  const parts: string[] = [];
  if (ka.length > 1) {
    parts.push('lease keep-alive: keepalives/s = keep-alive responses per second; latency = request sent -> response read; ' +
      'µs/ka = CPU per keep-alive; srv anon = server anonymous resident MiB (heaps) before the grants -> end of the window\n' + align(ka));
  }
  if (ex.length > 1) {
    parts.push('lease mass expiry: leases granted to expire together at a deadline D, a key on N/10 of them; gone = seconds from D ' +
      'until the first key, all keys, all leases (LeaseLeases empty) were gone; revokes/s = N / all gone\n' + align(ex));
    parts.push('put latency around the mass expiry (16 closed-loop put clients): before = grants done -> D, during = D -> all gone, ' +
      'after = the next seconds; srv cores = server CPU seconds per second\n' + align(ph));
  }
  if (notes.length > 0) parts.push(notes.map((n) => `note: ${n}`).join('\n'));
  return parts.join('\n\n');
}

/** The single-member suite: a fresh server per workload and target, every client count on it. */
async function runSingleSuite(o: Options, targets: Target[], report: PerfReport): Promise<void> {
  for (const name of o.workloads) {
    const w = workloadByName(name);
    for (const clients of sweepOf(w, o)) report.cells.push({ workload: w.name, description: w.description, clients, samples: [] });
  }
  const progress = new Progress(report.cells.length * o.rounds * targets.length * o.modes.length);
  const secure = o.modes.length > 1;
  const pki = o.modes.some((m) => m.tls !== 'none') ? makeRunPki() : null;
  try {
    for (let round = 0; round < o.rounds; round++) {
      for (const name of o.workloads) {
        const w = workloadByName(name);
        // A B in even rounds, B A in odd rounds: neither target always runs on a warmer machine
        // (with security modes: each target's modes back to back, the whole order reversed).
        for (const { target, mode } of modeSchedule(targets, o.modes, round)) {
          await withServer(target, async (address, pid, env) => {
            const token = mode.auth ? await enableAuth(address, env.security!) : undefined;
            await setup(address, w, env.security, token);
            for (const clients of sweepOf(w, o)) {
              progress.step(`${w.name} ${sweepLetter(w)}=${clients} ${target}${secure ? ` ${mode.name}` : ''} round ${round + 1}`);
              const s = await measure(address, pid, w, clients, o, target, round, env);
              report.cells.find((c) => c.workload === w.name && c.clients === clients)!.samples.push(s);
            }
          }, w.maint ? maintServerArgs(target) : [], mode, pki);
        }
      }
    }
  } finally {
    pki?.pki.cleanup();
  }
  progress.end();
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const targets: Target[] = [...(o.concord ? ['concord' as const] : []), ...(o.etcd ? ['etcd' as const] : [])];
  const report: PerfReport = {
    startedAt: new Date().toISOString(),
    machine: {
      cpus: os.cpus().length, model: os.cpus()[0]?.model ?? 'unknown', memGiB: Math.round(os.totalmem() / 2 ** 30),
      node: process.version, platform: `${os.platform()} ${os.release()}`,
    },
    options: o,
    etcdVersion: o.etcd ? 'etcd 3.4 (/usr/bin/etcd)' : null,
    cells: [],
  };
  if (o.cluster > 0) {
    await runClusterSuite(o, targets, report);
  } else {
    await runSingleSuite(o, targets, report);
  }
  const text = table(report);
  console.log(`machine: ${report.machine.cpus} x ${report.machine.model}, ${report.machine.memGiB} GiB, node ${report.machine.node}`);
  console.log(`${o.durationS}s per measurement after ${o.warmupS}s warmup, ${o.rounds} round(s), ${o.procs} load generator process(es); medians; ratio = concord/etcd (min-max over rounds)`);
  console.log(text);
  fs.mkdirSync(o.outDir, { recursive: true });
  const stamp = report.startedAt.replace(/[:.]/g, '-');
  const base = path.join(o.outDir, `${o.quick ? 'quick-' : ''}${o.cluster > 0 ? `cluster${o.cluster}-` : ''}${o.modes.length > 1 ? 'security-' : ''}${stamp}`);
  fs.writeFileSync(`${base}.json`, JSON.stringify(report, null, 1));
  // The plots compare concord and etcd: plain samples only (the security modes are in the table).
  const plainCells = report.cells.map((c) => ({ ...c, samples: c.samples.filter((s) => s.mode === undefined) }));
  fs.writeFileSync(`${base}.html`, renderHtml({ ...report, cells: plainCells }, text));
  console.log(`\nwrote ${base}.json and ${base}.html`);
  const errors = report.cells.flatMap((c) => c.samples.filter((s) => s.errors > 0).map((s) => ({ c, s })));
  for (const { c, s } of errors.slice(0, 8)) {
    console.log(`errors (${c.workload}${c.role ? ` to ${c.role}` : ''}, ${s.target}, ${sweepLetter(workloadByName(c.workload))}=${s.clients}): ${s.errorSamples.join('; ')}`);
  }
}

if (require.main === module && process.argv[2] === 'sizing') {
  // `npm run perf -- sizing`
  require('./sizing').main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
} else if (require.main === module) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}

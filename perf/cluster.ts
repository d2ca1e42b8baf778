// Cluster benchmark (issue #12): `npm run perf -- --cluster 3`. A 3-member concord cluster
// against a 3-member etcd 3.4 cluster on the same machine, each fresh per workload and round
// (loopback ports from freePorts, never 2379/2380; data dirs under os.tmpdir(), removed after),
// every member started with the same flags. For each unary workload (default put-seq, range-lin,
// range-ser) and client count, the clients send either to the leader or to the followers (the
// load generator processes spread over the followers: process p sends to follower p mod n).
//
//   npm run perf -- --cluster 3                                  all of it, 1..1024 clients, 2 rounds
//   npm run perf -- --cluster 3 --target followers --clients 1,64 --rounds 1
//   npm run perf -- --cluster 3 --no-etcd --cpu-prof /tmp/prof   concord only, V8 CPU profiles of
//                                                               every member thread (the .cpuprofile
//                                                               files appear when the members stop)
//
// Before each measurement every member is asked for Status until all of them name the same
// leader in the same term; after it they are asked again. A leader or term that changed during
// the measurement invalidates it: the sample says so (`cluster.leaderMoved`), the table marks it.
//
// CPU: per member, /proc utime+stime over the load generators' whole run (warmup and drain
// included, scaled to the operations done in it, as perf/run.ts does for one server). For concord
// also the main thread's own CPU (/proc task = pid), the storage worker's busy time (its event
// loop, from /metrics) and the busiest other threads (Node names none of its threads: they are
// the watch worker, LMDB's writer, libuv's pool where fdatasync runs, and V8's GC helpers).
import fs from 'node:fs';
import http2 from 'node:http2';
import path from 'node:path';
import { etcdserverpb } from '../src/gen/proto';
import { startCluster } from '../test/helpers/cluster';
import { startEtcdCluster } from '../test/helpers/etcd_cluster';
import { processCpuUs, threadBusy, threadsCpuUs } from './procstat';
import {
  align, fmtRatio, median, opsInWall, Progress, ratios, runUnaryLoad, setup, unarySample,
  type Cell, type Options, type PerfReport, type Sample, type Target,
} from './run';
import { workloadByName, type Workload } from './workloads';

export type Role = 'leader' | 'followers';

/** What `--cluster N` runs when --workloads is not given. */
export const CLUSTER_WORKLOADS = ['put-seq', 'range-lin', 'range-ser'];

/**
 * Flags given to every member of both clusters (besides the membership flags of
 * test/helpers/cluster.ts and etcd_cluster.ts): etcd's default raft timing written out, and
 * pre-vote on for both (concord's default and etcd 3.5's; etcd 3.4's is off), so that a member
 * starved of CPU on a busy machine disturbs the two leaders alike. No flag touches durability:
 * every member fdatasyncs its WAL, a write is answered once a quorum has it on disk.
 */
export const CLUSTER_FLAGS = ['--heartbeat-interval=100', '--election-timeout=1000', '--pre-vote=true'];

/** Thread counts of the per-thread CPU breakdown: the busiest non-main threads kept. */
const OTHER_THREADS_KEPT = 4;
const STATUS_TIMEOUT_MS = 2000;
const LEADER_WAIT_MS = 30_000;

export interface ClusterMember {
  name: string;
  /** host:port of its client URL. */
  address: string;
  pid: number;
}

/** Who leads, as every member agrees (Status): member index and raft term. */
export interface LeaderView {
  index: number;
  name: string;
  term: number;
}

export interface MemberCpu {
  name: string;
  /** Its process (the --cpu-prof files are named by pid). */
  pid: number;
  leader: boolean;
  /** Clients that sent to this member (with 1 client to the followers, one of them gets it). */
  clients: number;
  /** CPU seconds per second of wall time. */
  cores: number;
  usPerOp: number;
  /** concord: the main thread's CPU (gRPC, HTTP/2, raft, peer transport). */
  mainUsPerOp?: number;
  /** concord: the storage worker's event-loop busy time (WAL, apply, reads), not CPU. */
  storageBusyUsPerOp?: number;
  /** concord: the busiest other threads' CPU, largest first. */
  otherThreadsUsPerOp?: number[];
}

export interface ClusterExtra {
  size: number;
  role: Role;
  leader: string;
  term: number;
  /** Leader and term after the measurement (null: the members did not agree on one). */
  leaderAfter: string | null;
  termAfter: number | null;
  /** The leader or the term changed during the measurement: the numbers are not the cluster's steady state. */
  leaderMoved: boolean;
  members: MemberCpu[];
}

// ---- processes ----------------------------------------------------------------------------

/** Synchronous last resorts (SIGKILL members, remove data dirs) of the clusters now running. */
const emergencyStops = new Set<() => void>();
let signalGuardInstalled = false;

/**
 * On SIGINT/SIGTERM/SIGHUP: kill every member of every running cluster, remove their data dirs,
 * exit. (The test helpers' own exit hooks kill their processes on a normal exit but leave the
 * data dirs, and on a signal concord's members would be left running.)
 */
function installSignalGuard(): void {
  if (signalGuardInstalled) return;
  signalGuardInstalled = true;
  for (const [sig, code] of [['SIGINT', 130], ['SIGTERM', 143], ['SIGHUP', 129]] as const) {
    process.on(sig, () => {
      for (const stop of emergencyStops) stop();
      process.exit(code);
    });
  }
}

function killNow(pids: number[], root: string): () => void {
  return () => {
    for (const pid of pids) {
      try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
    }
    fs.rmSync(root, { recursive: true, force: true });
  };
}

/** Starts a fresh `size`-member cluster of `target`, runs fn, stops every member whatever happens. */
export async function withCluster<T>(target: Target, size: number, fn: (members: ClusterMember[]) => Promise<T>,
  cpuProfDir: string | null = null): Promise<T> {
  installSignalGuard();
  const token = 'concord-perf';
  let members: ClusterMember[];
  let stop: () => Promise<void>;
  let root: string;
  if (target === 'concord') {
    if (cpuProfDir !== null) fs.mkdirSync(cpuProfDir, { recursive: true });
    const nodeArgs = cpuProfDir !== null ? ['--cpu-prof', `--cpu-prof-dir=${cpuProfDir}`] : [];
    const c = await startCluster({ size, token, extraArgs: CLUSTER_FLAGS, nodeArgs });
    members = c.members.map((m, i) => ({ name: m.name, address: `127.0.0.1:${m.clientPort}`, pid: c.procs[i]!.proc.pid! }));
    root = path.dirname(c.members[0]!.dataDir);
    stop = () => c.stop();
  } else {
    const e = await startEtcdCluster({ size, token, extraArgs: CLUSTER_FLAGS });
    members = e.members.map((m, i) => ({ name: m.name, address: `127.0.0.1:${m.clientPort}`, pid: e.procs[i]!.pid! }));
    root = path.dirname(e.members[0]!.dataDir);
    stop = () => e.stop();
  }
  const emergency = killNow(members.map((m) => m.pid), root);
  emergencyStops.add(emergency);
  try {
    return await fn(members);
  } finally {
    await stop();
    emergencyStops.delete(emergency);
  }
}

// ---- leadership ---------------------------------------------------------------------------

/** One gRPC unary call on a connection of its own (closed after: an idle one delays concord's shutdown). */
function grpcUnary(address: string, method: string, body: Uint8Array, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://${address}`);
    const chunks: Buffer[] = [];
    let status = '';
    let settled = false;
    const finish = (err: Error | null): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      session.destroy();
      if (err !== null) return reject(err);
      const data = Buffer.concat(chunks);
      if (status !== '0' || data.length < 5) return reject(new Error(`${method} on ${address}: grpc-status ${status}`));
      resolve(data.subarray(5, 5 + data.readUInt32BE(1)));
    };
    const timer = setTimeout(() => finish(new Error(`${method} on ${address}: no answer in ${timeoutMs} ms`)), timeoutMs);
    session.on('error', (err) => finish(err));
    const frame = Buffer.alloc(5 + body.length);
    frame.writeUInt32BE(body.length, 1);
    frame.set(body, 5);
    const s = session.request({ ':method': 'POST', ':path': method, 'content-type': 'application/grpc', te: 'trailers' });
    s.on('response', (h) => { if (h['grpc-status'] !== undefined) status = String(h['grpc-status']); });
    s.on('trailers', (h) => (status = String(h['grpc-status'])));
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('error', (err) => finish(err));
    s.on('close', () => finish(null));
    s.end(frame);
  });
}

const statusRequest = etcdserverpb.StatusRequest.encode({}).finish();

/** The leader every member names in one round of Status calls, or null if they do not all agree. */
export async function leaderView(members: ClusterMember[]): Promise<LeaderView | null> {
  const answers = await Promise.all(members.map(async (m) => {
    try {
      const r = etcdserverpb.StatusResponse.decode(await grpcUnary(m.address, '/etcdserverpb.Maintenance/Status', statusRequest, STATUS_TIMEOUT_MS));
      return { id: String(r.header?.member_id ?? 0), leader: String(r.leader ?? 0), term: Number(r.raftTerm ?? 0) };
    } catch {
      return null;
    }
  }));
  const first = answers[0];
  if (first === null || first === undefined || first.leader === '0') return null;
  if (answers.some((a) => a === null || a.leader !== first.leader || a.term !== first.term)) return null;
  const index = answers.findIndex((a) => a!.id === first.leader);
  if (index < 0) return null;
  return { index, name: members[index]!.name, term: first.term };
}

/** Asks every member until they agree on a leader (a new cluster elects one within a second or two). */
export async function waitLeader(members: ClusterMember[], timeoutMs = LEADER_WAIT_MS): Promise<LeaderView> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await leaderView(members);
    if (v !== null) return v;
    if (Date.now() > deadline) throw new Error(`cluster: the members did not agree on a leader within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** After a measurement: the leader, asking again for a few seconds while loaded members answer slowly. */
async function leaderAfter(members: ClusterMember[]): Promise<LeaderView | null> {
  try {
    return await waitLeader(members, 5000);
  } catch {
    return null;
  }
}

// ---- one measurement ----------------------------------------------------------------------

interface MemberReading {
  cpuUs: number;
  threads: Map<number, number>;
  storageBusyS: number;
}

async function readMember(m: ClusterMember, target: Target): Promise<MemberReading> {
  if (target !== 'concord') return { cpuUs: processCpuUs(m.pid), threads: new Map(), storageBusyS: NaN };
  const busy = await threadBusy(m.address);
  return { cpuUs: processCpuUs(m.pid), threads: threadsCpuUs(m.pid), storageBusyS: busy?.storage ?? NaN };
}

function memberCpu(m: ClusterMember, r0: MemberReading, r1: MemberReading, ops: number, wallS: number, isLeader: boolean,
  clients: number, target: Target): MemberCpu {
  const cpu: MemberCpu = {
    name: m.name, pid: m.pid, leader: isLeader, clients, cores: (r1.cpuUs - r0.cpuUs) / 1e6 / wallS, usPerOp: (r1.cpuUs - r0.cpuUs) / ops,
  };
  if (target !== 'concord') return cpu;
  const deltas: number[] = [];
  for (const [tid, us] of r1.threads) {
    const before = r0.threads.get(tid) ?? 0;
    if (tid === m.pid) cpu.mainUsPerOp = (us - before) / ops;
    else deltas.push((us - before) / ops);
  }
  cpu.otherThreadsUsPerOp = deltas.sort((a, b) => b - a).slice(0, OTHER_THREADS_KEPT);
  cpu.storageBusyUsPerOp = ((r1.storageBusyS - r0.storageBusyS) * 1e6) / ops;
  return cpu;
}

/** One workload at one client count, clients sent to the leader `view` names or to the others. */
export async function measureCluster(members: ClusterMember[], view: LeaderView, w: Workload, clients: number, role: Role,
  o: Options, target: Target, round: number): Promise<Sample> {
  const sentTo = role === 'leader' ? [view.index] : members.map((_, i) => i).filter((i) => i !== view.index);
  const r0 = await Promise.all(members.map((m) => readMember(m, target)));
  const load = await runUnaryLoad(sentTo.map((i) => members[i]!.address), w, clients, o, round);
  const r1 = await Promise.all(members.map((m) => readMember(m, target)));
  const after = await leaderAfter(members);
  const ops = opsInWall(load);
  const cpus = members.map((m, i) => {
    const at = sentTo.indexOf(i);
    return memberCpu(m, r0[i]!, r1[i]!, ops, load.wallMs / 1000, i === view.index, at >= 0 ? load.clientsPerAddress[at]! : 0, target);
  });
  const sample = unarySample(load, target, round, clients, cpus.reduce((a, c) => a + c.usPerOp, 0));
  sample.cluster = {
    size: members.length, role, leader: view.name, term: view.term, leaderAfter: after?.name ?? null, termAfter: after?.term ?? null,
    leaderMoved: after === null || after.index !== view.index || after.term !== view.term, members: cpus,
  };
  return sample;
}

// ---- the suite ----------------------------------------------------------------------------

function cellOf(report: PerfReport, workload: string, role: Role, clients: number): Cell {
  return report.cells.find((c) => c.workload === workload && c.role === role && c.clients === clients)!;
}

/** `--cluster N`: every workload, role and client count against each target, interleaved as the single-member suite is. */
export async function runClusterSuite(o: Options, targets: Target[], report: PerfReport): Promise<void> {
  for (const name of o.workloads) {
    const w = workloadByName(name);
    for (const role of o.roles) {
      for (const clients of o.clients) {
        report.cells.push({ workload: w.name, description: `${w.description}; ${o.cluster}-member cluster, clients to the ${role}`, clients, role, samples: [] });
      }
    }
  }
  const progress = new Progress(report.cells.length * o.rounds * targets.length);
  for (let round = 0; round < o.rounds; round++) {
    for (const name of o.workloads) {
      const w = workloadByName(name);
      const order = round % 2 === 0 ? targets : targets.slice().reverse();
      for (const target of order) {
        await withCluster(target, o.cluster, async (members) => {
          await setup(members[(await waitLeader(members)).index]!.address, w);
          for (const role of o.roles) {
            for (const clients of o.clients) {
              const view = await waitLeader(members);
              progress.step(`${w.name} to ${role} c=${clients} ${target} round ${round + 1} (leader ${view.name})`);
              const s = await measureCluster(members, view, w, clients, role, o, target, round);
              if (s.cluster!.leaderMoved) {
                process.stderr.write(`\nleadership moved during ${w.name} to ${role} c=${clients} ${target} round ${round + 1}: ` +
                  `${view.name} term ${view.term} -> ${s.cluster!.leaderAfter ?? 'no agreed leader'} term ${s.cluster!.termAfter ?? '-'}\n`);
              }
              cellOf(report, w.name, role, clients).samples.push(s);
            }
          }
        }, o.cpuProfDir);
      }
    }
  }
  progress.end();
}

// ---- tables -------------------------------------------------------------------------------

/** The cluster cells: throughput, latency and ratios; then where each target's CPU went. */
export function clusterTables(report: PerfReport): string {
  const cells = report.cells.filter((c) => c.role !== undefined);
  if (cells.length === 0) return '';
  const ms = (us: number): string => (us / 1000).toFixed(us < 10_000 ? 2 : 1);
  const perf: string[][] = [[
    'workload', 'to', 'target', 'clients', 'ops/s', 'p50 ms', 'p90 ms', 'p99 ms', 'p99.9 ms', 'max ms', 'errors',
    'srv cpu µs/op', 'ops/s ratio', 'p50 ratio', 'p99 ratio', 'p99.9 ratio', 'leader',
  ]];
  const cpu: string[][] = [[
    'workload', 'to', 'target', 'clients', 'leader cores', 'leader µs/op', 'main', 'storage', 'other threads',
    'followers cores', 'followers µs/op', 'main', 'storage', 'other threads',
  ]];
  const notes: string[] = [];
  for (const cell of cells) {
    for (const target of ['concord', 'etcd'] as Target[]) {
      const ss = cell.samples.filter((s) => s.target === target);
      if (ss.length === 0) continue;
      const m = (f: (s: Sample) => number): number => median(ss.map(f));
      const mine = target === 'concord';
      const moved = ss.filter((s) => s.cluster?.leaderMoved).map((s) => `r${s.round + 1}`);
      for (const s of ss) {
        if (s.cluster?.leaderMoved) {
          notes.push(`${cell.workload} to ${cell.role} c=${cell.clients} ${target} round ${s.round + 1}: leader ${s.cluster.leader} term ` +
            `${s.cluster.term} -> ${s.cluster.leaderAfter ?? 'none agreed'} term ${s.cluster.termAfter ?? '-'} (the numbers of that run are not steady state)`);
        }
      }
      perf.push([
        cell.workload, cell.role!, target, String(cell.clients), m((s) => s.throughput).toFixed(0),
        ms(m((s) => s.latencyUs.p50)), ms(m((s) => s.latencyUs.p90)), ms(m((s) => s.latencyUs.p99)),
        ms(m((s) => s.latencyUs.p999)), ms(m((s) => s.latencyUs.max)), String(ss.reduce((a, s) => a + s.errors, 0)),
        m((s) => s.serverCpuUsPerOp).toFixed(0),
        mine ? fmtRatio(ratios(cell, (s) => s.throughput)) : '', mine ? fmtRatio(ratios(cell, (s) => s.latencyUs.p50)) : '',
        mine ? fmtRatio(ratios(cell, (s) => s.latencyUs.p99)) : '', mine ? fmtRatio(ratios(cell, (s) => s.latencyUs.p999)) : '',
        moved.length === 0 ? 'stable' : `MOVED ${moved.join(',')}`,
      ]);
      // Followers summed: their cores and their CPU per operation of the whole cluster.
      const side = (leader: boolean, f: (c: MemberCpu) => number | undefined): number =>
        m((s) => (s.cluster?.members ?? []).filter((c) => c.leader === leader).reduce((a, c) => a + (f(c) ?? NaN), 0));
      const threads = (leader: boolean): string => {
        if (!mine) return '-';
        // The busiest other threads of the leader, or of the busiest follower.
        const lists = ss.map((s) => {
          const ms_ = (s.cluster?.members ?? []).filter((c) => c.leader === leader).sort((a, b) => b.usPerOp - a.usPerOp);
          return ms_[0]?.otherThreadsUsPerOp ?? [];
        });
        const n = Math.max(0, ...lists.map((l) => l.length));
        const out: string[] = [];
        for (let i = 0; i < n; i++) out.push(median(lists.map((l) => l[i] ?? 0)).toFixed(0));
        return out.join(' ');
      };
      const num = (x: number, digits = 0): string => (Number.isFinite(x) ? x.toFixed(digits) : '-');
      cpu.push([
        cell.workload, cell.role!, target, String(cell.clients),
        num(side(true, (c) => c.cores), 2), num(side(true, (c) => c.usPerOp)),
        mine ? num(side(true, (c) => c.mainUsPerOp)) : '-', mine ? num(side(true, (c) => c.storageBusyUsPerOp)) : '-', threads(true),
        num(side(false, (c) => c.cores), 2), num(side(false, (c) => c.usPerOp)),
        mine ? num(side(false, (c) => c.mainUsPerOp)) : '-', mine ? num(side(false, (c) => c.storageBusyUsPerOp)) : '-', threads(false),
      ]);
    }
  }
  const size = cells[0]!.samples.find((s) => s.cluster)?.cluster?.size ?? report.options.cluster;
  const parts = [
    `${size}-member clusters: to = the members the clients sent to (followers: load generator processes spread over them); ` +
    'srv cpu = CPU of all members per operation; leader = whether the leader and term held through every round (else the rounds it moved in)\n' +
    align(perf),
    'CPU per member role (µs per operation of the whole cluster; followers summed; cores = CPU seconds per second). concord: ' +
    'main = main thread CPU (gRPC, HTTP/2, raft, peer transport), storage = storage worker busy time (WAL, apply, reads; ' +
    'event-loop time, not CPU), other threads = the busiest remaining threads\' CPU (watch worker, LMDB writer, libuv pool ' +
    'fdatasync, V8 GC; of the leader / of the busiest follower)\n' + align(cpu),
  ];
  if (notes.length > 0) parts.push(notes.map((n) => `note: ${n}`).join('\n'));
  return parts.join('\n\n');
}

// Test helpers: a throw-away cluster of concord member processes on free loopback ports, started
// with etcd's cluster flags (--initial-cluster, --initial-advertise-peer-urls, ...).
//
//   const c = await startCluster({ size: 3 });
//   t.after(() => c.stop());                       // every member stopped, data dirs removed
//   await c.kill(1); await c.restart(1);           // kill -9 a member, start it again
//   const leader = await c.leader();               // index of the member that leads
//
// Members: name m0..m{n-1}; client URL http://127.0.0.1:<c>; peer URL http://127.0.0.1:<p>
// (https with peerScheme 'https').
// `faults: true` puts a fault proxy between every two members (c.partitioner: isolate, partition,
// oneWay, heal; link(i, j) for delays), through the transport's test-only dial table.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ConcordHandle, startConcord } from './concord';
import { freePort } from './etcd';
import { connect, unary } from './grpc_client';
import { Partitioner } from './fault_proxy';
import { formatDialTable } from '../../src/transport/dial';

export interface ClusterOptions {
  size: number;
  token?: string;
  extraArgs?: string[];
  env?: Record<string, string>;
  /** Options for node itself, given to every member (test/helpers/concord.ts nodeArgs). */
  nodeArgs?: string[];
  /**
   * Put a fault proxy on every ordered pair of members (test/helpers/fault_proxy.ts): member i
   * dials member j through partitioner.link(i, j) (CONCORD_TEST_PEER_DIAL).
   */
  faults?: boolean;
  /** Scheme of the peer URLs (default http; https needs peer TLS flags, e.g. in memberArgs). */
  peerScheme?: 'http' | 'https';
  /** Extra flags of member i (after extraArgs), e.g. its own peer certificate. */
  memberArgs?: (i: number) => string[];
}

export interface MemberInfo {
  name: string;
  clientPort: number;
  peerPort: number;
  clientUrl: string;
  peerUrl: string;
  dataDir: string;
}

export interface ClusterHandle {
  members: MemberInfo[];
  /** Running processes, null where a member is stopped or killed. */
  procs: (ConcordHandle | null)[];
  /** The proxies between members (with `faults: true`), else null. */
  partitioner: Partitioner | null;
  endpoints(): string[];
  kill(i: number): Promise<void>;
  stopMember(i: number): Promise<void>;
  restart(i: number): Promise<void>;
  /** The index of the member that says it leads (Status), waiting up to `timeoutMs`. */
  leader(timeoutMs?: number): Promise<number>;
  logs(i: number): string;
  /**
   * Adds a member as etcd's docs do: MemberAdd through `via` (a member index), then starts it
   * with --initial-cluster-state existing. Returns its index and id (decimal).
   * With `add`, the caller adds the member itself (e.g. `etcdctl member add`) given the new
   * member's name and peer URL, and returns the id and the values to start it with (etcdctl's
   * ETCD_NAME, ETCD_INITIAL_CLUSTER, ETCD_INITIAL_CLUSTER_STATE); `via` is then unused.
   */
  join(via: number, opts?: { learner?: boolean; add?: (m: MemberInfo) => Promise<JoinValues> }): Promise<{ index: number; id: string }>;
  stop(): Promise<void>;
}

/** What a member added from outside the helper is started with. */
export interface JoinValues {
  id: string;
  name: string;
  initialCluster: string;
  state: 'new' | 'existing';
}

export async function startCluster(opts: ClusterOptions): Promise<ClusterHandle> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'concord-cluster-'));
  const peerScheme = opts.peerScheme ?? 'http';
  const members: MemberInfo[] = [];
  for (let i = 0; i < opts.size; i++) {
    const clientPort = await freePort();
    const peerPort = await freePort();
    members.push({
      name: `m${i}`, clientPort, peerPort,
      clientUrl: `http://127.0.0.1:${clientPort}`, peerUrl: `${peerScheme}://127.0.0.1:${peerPort}`,
      dataDir: path.join(root, `m${i}`),
    });
  }
  const initialCluster = members.map((m) => `${m.name}=${m.peerUrl}`).join(',');
  const partitioner = opts.faults === true
    ? await Partitioner.start(members.map((m) => ({ port: m.peerPort, host: '127.0.0.1' })), { seed: 1 })
    : null;
  const procs: (ConcordHandle | null)[] = members.map(() => null);
  const logsOf: string[] = members.map(() => '');
  const states: string[] = members.map(() => 'new');
  let clusterFlag = initialCluster;
  const clusterFlags: string[] = members.map(() => initialCluster);
  const launch = (i: number): Promise<ConcordHandle> => {
    const m = members[i]!;
    return startConcord({
      dataDir: m.dataDir,
      name: m.name,
      keepDataDir: true,
      fixedPort: m.clientPort,
      readyTimeoutMs: 30_000,
      nodeArgs: opts.nodeArgs,
      extraArgs: [
        '--listen-peer-urls', m.peerUrl,
        '--initial-advertise-peer-urls', m.peerUrl,
        '--initial-cluster', clusterFlags[i]!,
        '--initial-cluster-state', states[i]!,
        '--initial-cluster-token', opts.token ?? 'concord-test',
        ...(opts.extraArgs ?? []),
        ...(opts.memberArgs?.(i) ?? []),
      ],
      env: { ...(opts.env ?? {}), ...(partitioner !== null ? { CONCORD_TEST_PEER_DIAL: formatDialTable(partitioner.routes(i)) } : {}) },
    });
  };
  const handle: ClusterHandle = {
    members,
    procs,
    partitioner,
    endpoints: () => members.map((m) => m.clientUrl),
    async kill(i) {
      const p = procs[i];
      if (p === null || p === undefined) return;
      logsOf[i] += p.logs() + '\n';
      await p.kill();
      procs[i] = null;
    },
    async stopMember(i) {
      const p = procs[i];
      if (p === null || p === undefined) return;
      logsOf[i] += p.logs() + '\n';
      await p.stop();
      procs[i] = null;
    },
    async restart(i) {
      if (procs[i] !== null) await handle.kill(i);
      procs[i] = await launch(i);
    },
    async leader(timeoutMs = 15_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        for (let i = 0; i < members.length; i++) {
          if (procs[i] === null) continue;
          const c = connect('etcdserverpb.Maintenance', members[i]!.clientUrl);
          try {
            const st = await unary(c, 'Status', {}, { timeoutMs: 1000 });
            if (String(st.leader) === String(st.header?.member_id) && String(st.leader) !== '0') return i;
          } catch {
            // not up, or no answer: try the next
          } finally {
            c.close();
          }
        }
        if (Date.now() > deadline) throw new Error('no leader');
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    logs: (i) => logsOf[i] + (procs[i]?.logs() ?? ''),
    async join(via, opts = {}) {
      const clientPort = await freePort();
      const peerPort = await freePort();
      const i = members.length;
      const m: MemberInfo = {
        name: `m${i}`, clientPort, peerPort,
        clientUrl: `http://127.0.0.1:${clientPort}`, peerUrl: `${peerScheme}://127.0.0.1:${peerPort}`,
        dataDir: path.join(root, `m${i}`),
      };
      let id: string;
      let flag = `${clusterFlag},${m.name}=${m.peerUrl}`;
      let state = 'existing';
      if (opts.add !== undefined) {
        // The caller adds the member (e.g. through etcdctl) and owns any retry on
        // 'unhealthy cluster', since it checks that command's output.
        const v = await opts.add(m);
        id = v.id;
        m.name = v.name;
        flag = v.initialCluster;
        state = v.state;
      } else {
        const cl = connect('etcdserverpb.Cluster', members[via]!.clientUrl);
        try {
          // etcd refuses a member add until every voter has been connected for 5 s ("unhealthy
          // cluster"): right after a start or a restart, retry as an operator would.
          for (let attempt = 0; ; attempt++) {
            try {
              const r = await unary(cl, 'MemberAdd', { peerURLs: [m.peerUrl], isLearner: opts.learner === true });
              id = String(r.member!.ID);
              break;
            } catch (err) {
              if ((err as { details?: string }).details !== 'etcdserver: unhealthy cluster' || attempt >= 100) throw err;
              await new Promise((r) => setTimeout(r, 100));
            }
          }
        } finally {
          cl.close();
        }
      }
      members.push(m);
      procs.push(null);
      logsOf.push('');
      clusterFlag = flag;
      clusterFlags.push(clusterFlag);
      states.push(state);
      procs[i] = await launch(i);
      return { index: i, id };
    },
    async stop() {
      await Promise.all(procs.map(async (p, i) => {
        if (p !== null) {
          logsOf[i] += p.logs();
          await p.stop();
        }
      }));
      await partitioner?.stop();
      fs.rmSync(root, { recursive: true, force: true });
    },
  };
  // All at once: a new cluster's members wait for each other to elect a leader.
  const started = await Promise.allSettled(members.map((_, i) => launch(i)));
  let failure: unknown = null;
  for (let i = 0; i < started.length; i++) {
    const r = started[i]!;
    if (r.status === 'fulfilled') procs[i] = r.value;
    else failure ??= r.reason;
  }
  if (failure !== null) {
    await handle.stop();
    throw failure;
  }
  return handle;
}

// Test helpers: a throw-away 3-member (or n-member) real etcd 3.4 cluster on free loopback ports,
// started with the same flag shape as test/helpers/cluster.ts gives concord's members:
//
//   --name m<i> --listen-peer-urls P --initial-advertise-peer-urls P
//   --initial-cluster m0=P0,m1=P1,m2=P2 --initial-cluster-state new --initial-cluster-token T
//   --listen-client-urls C --advertise-client-urls C
//
//   const e = await startEtcdCluster({ size: 3, token: 'diff' });
//   t.after(() => e.stop());          // every member killed, the data dirs removed
//   const l = await e.leader();       // index of the member that leads
//   await e.kill(l);                  // kill -9, keeps the data dir
//
// Never uses 2379/2380 (freePorts skips them). Every process started here is killed when the
// test process exits, whatever happens (exit hook), and a failed start stops what did start.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';

import { ETCD_BIN, freePorts } from './etcd';
import { connect, unary } from './grpc_client';

export interface EtcdMemberInfo {
  name: string;
  clientPort: number;
  peerPort: number;
  clientUrl: string;
  peerUrl: string;
  dataDir: string;
}

export interface EtcdClusterOptions {
  size: number;
  token?: string;
  extraArgs?: string[];
  /** How long to wait for every member's /health (default 30 s). */
  readyTimeoutMs?: number;
}

export interface EtcdClusterHandle {
  members: EtcdMemberInfo[];
  token: string;
  /** Running processes, null where a member was killed. */
  procs: (ChildProcess | null)[];
  endpoints(): string[];
  /** kill -9 member i (its data dir is kept until stop()). */
  kill(i: number): Promise<void>;
  /** The index of the member that says it leads (Status), waiting up to `timeoutMs`. */
  leader(timeoutMs?: number): Promise<number>;
  logs(i: number): string;
  /** Kills every member and removes the data dirs. Idempotent. */
  stop(): Promise<void>;
}

const live = new Set<ChildProcess>();
let hookInstalled = false;

function installExitHook(): void {
  if (hookInstalled) return;
  hookInstalled = true;
  const killAll = (): void => {
    for (const p of live) {
      try {
        p.kill('SIGKILL');
      } catch {
        /* gone */
      }
    }
  };
  process.on('exit', killAll);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      killAll();
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
    });
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function exited(p: ChildProcess): boolean {
  return p.exitCode !== null || p.signalCode !== null;
}

function waitExit(p: ChildProcess, ms: number): Promise<boolean> {
  if (exited(p)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      p.off('exit', onExit);
      resolve(false);
    }, ms);
    const onExit = (): void => {
      clearTimeout(timer);
      resolve(true);
    };
    p.once('exit', onExit);
  });
}

/** GET /health: true when the member reports {"health":"true"} (it has a leader and commits). */
function healthy(url: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.get(`${url}/health`, { timeout: 1000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve(res.statusCode === 200 && /"health"\s*:\s*"true"/.test(body)));
      res.on('error', () => resolve(false));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
  });
}

async function launchCluster(opts: EtcdClusterOptions): Promise<EtcdClusterHandle> {
  installExitHook();
  const token = opts.token ?? 'concord-test';
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'concord-etcd-cluster-'));
  const ports = await freePorts(2 * opts.size);
  const members: EtcdMemberInfo[] = [];
  for (let i = 0; i < opts.size; i++) {
    const clientPort = ports[2 * i]!;
    const peerPort = ports[2 * i + 1]!;
    members.push({
      name: `m${i}`, clientPort, peerPort,
      clientUrl: `http://127.0.0.1:${clientPort}`, peerUrl: `http://127.0.0.1:${peerPort}`,
      dataDir: path.join(root, `m${i}`),
    });
  }
  const initialCluster = members.map((m) => `${m.name}=${m.peerUrl}`).join(',');
  const logLines: string[][] = members.map(() => []);
  const procs: (ChildProcess | null)[] = members.map((m, i) => {
    const args = [
      '--name', m.name,
      '--data-dir', m.dataDir,
      '--listen-client-urls', m.clientUrl,
      '--advertise-client-urls', m.clientUrl,
      '--listen-peer-urls', m.peerUrl,
      '--initial-advertise-peer-urls', m.peerUrl,
      '--initial-cluster', initialCluster,
      '--initial-cluster-state', 'new',
      '--initial-cluster-token', token,
      ...(opts.extraArgs ?? []),
    ];
    const p = spawn(ETCD_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    live.add(p);
    p.on('exit', () => live.delete(p));
    p.on('error', () => undefined); // seen as an early exit below
    const keep = (chunk: Buffer): void => {
      const lines = logLines[i]!;
      for (const line of chunk.toString('utf8').split('\n')) if (line) lines.push(line);
      if (lines.length > 300) lines.splice(0, lines.length - 300);
    };
    p.stdout?.on('data', keep);
    p.stderr?.on('data', keep);
    return p;
  });
  const all = [...procs];

  let stopped: Promise<void> | undefined;
  const handle: EtcdClusterHandle = {
    members,
    token,
    procs,
    endpoints: () => members.map((m) => m.clientUrl),
    async kill(i) {
      const p = procs[i];
      if (p === null || p === undefined) return;
      p.kill('SIGKILL');
      await waitExit(p, 5000);
      procs[i] = null;
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
        if (Date.now() > deadline) throw new Error('etcd cluster: no leader');
        await sleep(100);
      }
    },
    logs: (i) => logLines[i]!.join('\n'),
    stop() {
      stopped ??= (async () => {
        await Promise.all(all.map(async (p) => {
          if (p === null) return;
          if (!exited(p)) p.kill('SIGKILL');
          await waitExit(p, 5000);
          live.delete(p);
        }));
        for (let i = 0; i < procs.length; i++) procs[i] = null;
        fs.rmSync(root, { recursive: true, force: true });
      })();
      return stopped;
    },
  };

  const timeoutMs = opts.readyTimeoutMs ?? 30_000;
  const deadline = Date.now() + timeoutMs;
  try {
    const ready = members.map(() => false);
    while (ready.includes(false)) {
      for (let i = 0; i < members.length; i++) {
        const p = procs[i]!;
        if (exited(p)) throw new Error(`etcd member m${i} exited early (code ${p.exitCode}, signal ${p.signalCode})\n${handle.logs(i).split('\n').slice(-20).join('\n')}`);
        if (!ready[i]) ready[i] = await healthy(members[i]!.clientUrl);
      }
      if (!ready.includes(false)) break;
      if (Date.now() > deadline) throw new Error(`etcd cluster not healthy after ${timeoutMs} ms (ready: ${ready.join(',')})`);
      await sleep(100);
    }
  } catch (err) {
    await handle.stop();
    throw err;
  }
  return handle;
}

/**
 * Starts a fresh `size`-member real etcd cluster on loopback and resolves once every member's
 * /health is true. Retries on other ports if a member exits early (a port taken in between).
 */
export async function startEtcdCluster(opts: EtcdClusterOptions): Promise<EtcdClusterHandle> {
  let lastErr: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      return await launchCluster(opts);
    } catch (err) {
      lastErr = err;
      if (!(err instanceof Error && err.message.includes('exited early'))) break;
    }
  }
  throw lastErr;
}

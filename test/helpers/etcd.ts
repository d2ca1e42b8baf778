// Test helpers: free ports and a throw-away real etcd (for differential tests).
//
//   const etcd = await startEtcd();      // single member on 127.0.0.1, fresh data dir
//   t.after(() => etcd.stop());          // kills etcd and removes the data dir
//   makeClient('etcdserverpb.KV', etcd.endpoint) ...
//
// Never uses the default ports 2379/2380.

import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

/** Path of the real etcd binary (override with ETCD_BIN). */
export const ETCD_BIN = process.env.ETCD_BIN ?? '/usr/bin/etcd';

/** True when the real etcd binary is installed. */
export function etcdAvailable(): boolean {
  try {
    fs.accessSync(ETCD_BIN, fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Skip message for tests that need real etcd (pass to `t.skip` / `{ skip }`). */
export function etcdSkipReason(): string | false {
  if (etcdAvailable()) return false;
  // CI installs etcd (.ci/run) and sets this: there, a missing oracle must fail, not skip.
  if (process.env.CONCORD_REQUIRE_ETCD === '1') throw new Error(`CONCORD_REQUIRE_ETCD=1 but real etcd is not installed at ${ETCD_BIN}`);
  return `real etcd not installed at ${ETCD_BIN}`;
}

const RESERVED_PORTS = new Set([2379, 2380]);

/** Reserves `count` distinct free TCP ports on `host` (held open together, then released). */
export async function freePorts(count: number, host = '127.0.0.1'): Promise<number[]> {
  const servers: net.Server[] = [];
  const ports: number[] = [];
  try {
    while (ports.length < count) {
      const srv = net.createServer();
      servers.push(srv);
      await new Promise<void>((resolve, reject) => {
        srv.once('error', reject);
        srv.listen(0, host, () => resolve());
      });
      const addr = srv.address();
      if (addr === null || typeof addr === 'string') throw new Error('unexpected server address');
      if (!RESERVED_PORTS.has(addr.port)) ports.push(addr.port);
    }
    return ports;
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }
}

/** One free TCP port on `host`. */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  const [port] = await freePorts(1, host);
  return port as number;
}

export interface StartEtcdOptions {
  /** Member name (default 'default'). */
  name?: string;
  /** Extra command-line flags, e.g. ['--auto-compaction-retention=1']. */
  extraArgs?: string[];
  /** How long to wait for /health to report healthy (default 20 s). */
  readyTimeoutMs?: number;
  /**
   * The client URL's scheme (default http). https needs the TLS flags in extraArgs; /health is
   * then polled on an extra plain-HTTP metrics listener (--listen-metrics-urls, `metricsAddress`).
   */
  scheme?: 'http' | 'https';
}

export interface EtcdHandle {
  /** Client URL, e.g. 'http://127.0.0.1:41234'. */
  endpoint: string;
  /** Client host (always '127.0.0.1'). */
  host: string;
  /** Client port. */
  port: number;
  /** 'host:port', the address form grpc-js clients take. */
  address: string;
  /** 'host:port' serving /health and /metrics over plain HTTP (the client port unless scheme https). */
  metricsAddress: string;
  /** Peer URL port. */
  peerPort: number;
  /** Member name. */
  name: string;
  /** The temporary data directory (removed by stop()). */
  dataDir: string;
  /** The etcd child process. */
  proc: ChildProcess;
  /** Last lines etcd wrote to stdout/stderr (for diagnostics). */
  logs(): string;
  /** Stops etcd (SIGTERM, then SIGKILL after 5 s) and removes the data dir. Idempotent. */
  stop(): Promise<void>;
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Last resort if a test process dies without calling stop(): kill every
  // etcd still running (data dirs of killed runs are left in os.tmpdir()).
  const killAll = (): void => {
    for (const p of live) {
      try {
        p.kill('SIGKILL');
      } catch {
        /* already gone */
      }
    }
  };
  process.on('exit', killAll);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      killAll();
      // Re-raise for the default action unless someone else handles it.
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
    });
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** GET http://host:port/health; true when etcd reports {"health":"true"}. */
function healthy(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.get({ host, port, path: '/health', timeout: 1000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve(res.statusCode === 200 && /"health"\s*:\s*"true"/.test(body)));
      res.on('error', () => resolve(false));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
  });
}

function waitExit(proc: ChildProcess, ms: number): Promise<boolean> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      proc.off('exit', onExit);
      resolve(false);
    }, ms);
    const onExit = (): void => {
      clearTimeout(timer);
      resolve(true);
    };
    proc.once('exit', onExit);
  });
}

async function launch(opts: StartEtcdOptions): Promise<EtcdHandle> {
  const host = '127.0.0.1';
  const name = opts.name ?? 'default';
  const https = opts.scheme === 'https';
  const [port, peerPort, metricsPort] = (await freePorts(https ? 3 : 2, host)) as [number, number, number | undefined];
  const endpoint = `${https ? 'https' : 'http'}://${host}:${port}`;
  const healthPort = metricsPort ?? port;
  const peerUrl = `http://${host}:${peerPort}`;
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'concord-etcd-'));
  const args = [
    '--name', name,
    '--data-dir', dataDir,
    '--listen-client-urls', endpoint,
    '--advertise-client-urls', endpoint,
    '--listen-peer-urls', peerUrl,
    '--initial-advertise-peer-urls', peerUrl,
    '--initial-cluster', `${name}=${peerUrl}`,
    '--initial-cluster-state', 'new',
    ...(metricsPort !== undefined ? ['--listen-metrics-urls', `http://${host}:${metricsPort}`] : []),
    ...(opts.extraArgs ?? []),
  ];
  const proc = spawn(ETCD_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(proc);
  installExitHook();

  const logLines: string[] = [];
  const keep = (chunk: Buffer): void => {
    for (const line of chunk.toString('utf8').split('\n')) {
      if (line) logLines.push(line);
    }
    if (logLines.length > 200) logLines.splice(0, logLines.length - 200);
  };
  proc.stdout?.on('data', keep);
  proc.stderr?.on('data', keep);
  let spawnError: Error | undefined;
  proc.on('error', (err) => (spawnError = err));
  proc.on('exit', () => live.delete(proc));

  let stopped: Promise<void> | undefined;
  const handle: EtcdHandle = {
    endpoint,
    host,
    port,
    address: `${host}:${port}`,
    metricsAddress: `${host}:${healthPort}`,
    peerPort,
    name,
    dataDir,
    proc,
    logs: () => logLines.join('\n'),
    stop: () => {
      stopped ??= (async () => {
        if (proc.exitCode === null && proc.signalCode === null) {
          proc.kill('SIGTERM');
          if (!(await waitExit(proc, 5000))) {
            proc.kill('SIGKILL');
            await waitExit(proc, 5000);
          }
        }
        live.delete(proc);
        fs.rmSync(dataDir, { recursive: true, force: true });
      })();
      return stopped;
    },
  };

  const deadline = Date.now() + (opts.readyTimeoutMs ?? 20_000);
  try {
    for (;;) {
      if (spawnError) throw spawnError;
      if (proc.exitCode !== null || proc.signalCode !== null) {
        throw new Error(`etcd exited early (code ${proc.exitCode}, signal ${proc.signalCode})`);
      }
      if (await healthy(host, healthPort)) return handle;
      if (Date.now() > deadline) throw new Error(`etcd not healthy after ${opts.readyTimeoutMs ?? 20_000} ms`);
      await sleep(100);
    }
  } catch (err) {
    await handle.stop();
    const e = err instanceof Error ? err : new Error(String(err));
    e.message += `\n--- etcd output (last lines) ---\n${logLines.slice(-30).join('\n')}`;
    throw e;
  }
}

/**
 * Starts a fresh single-member real etcd on free loopback ports with a new
 * temporary data dir, and resolves once /health reports healthy. Retries with
 * other ports if etcd exits early (e.g. a port was taken in between).
 */
export async function startEtcd(opts: StartEtcdOptions = {}): Promise<EtcdHandle> {
  let lastErr: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      return await launch(opts);
    } catch (err) {
      lastErr = err;
      if (!(err instanceof Error && err.message.startsWith('etcd exited early'))) break;
    }
  }
  throw lastErr;
}

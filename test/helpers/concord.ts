// Test helpers: a throw-away concord server process on free loopback ports.
//
//   const c = await startConcord();          // fresh data dir, random free port
//   t.after(() => c.stop());                 // SIGTERM (SIGKILL after 5 s), removes the data dir
//   await c.kill();                          // SIGKILL, keeps the data dir (crash tests)
//   const c2 = await startConcord({ dataDir: c.dataDir });   // restart on the same data
//
// Ready = the server logged "ready to serve client requests" (it listens only after its raft
// log is replayed and applied).
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort } from './etcd';

export const CONCORD_MAIN = path.resolve(__dirname, '../../src/main.js');

export interface StartConcordOptions {
  dataDir?: string;
  name?: string;
  extraArgs?: string[];
  /** Extra environment variables for the server process. */
  env?: Record<string, string>;
  readyTimeoutMs?: number;
  /** Keep the data dir when stop() is called (default: remove it unless it was given). */
  keepDataDir?: boolean;
  /**
   * RLIMIT_FSIZE for the server (ulimit -f, SIGXFSZ ignored): a write past this many bytes in
   * any file fails as on a full disk (EFBIG, or EIO through LMDB's short-write check).
   */
  fileSizeLimitBytes?: number;
  /** The client port to listen on (a cluster's members know each other's URLs in advance). */
  fixedPort?: number;
  /** Options for node itself, before the script (e.g. ['--cpu-prof']: not allowed in NODE_OPTIONS). */
  nodeArgs?: string[];
  /** The client URL's scheme (default http; https needs TLS flags in extraArgs). */
  scheme?: 'http' | 'https';
}

export interface ConcordHandle {
  endpoint: string;
  host: string;
  port: number;
  address: string;
  dataDir: string;
  proc: ChildProcess;
  logs(): string;
  /** SIGTERM, SIGKILL after 5 s; removes the data dir unless it was passed in. Idempotent. */
  stop(): Promise<void>;
  /** SIGKILL now; keeps the data dir. */
  kill(): Promise<void>;
}

const live = new Set<ChildProcess>();
let hookInstalled = false;

function installExitHook(): void {
  if (hookInstalled) return;
  hookInstalled = true;
  process.on('exit', () => {
    for (const p of live) {
      try { p.kill('SIGKILL'); } catch { /* gone */ }
    }
  });
}

function waitExit(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => proc.once('exit', () => resolve()));
}

export async function startConcord(opts: StartConcordOptions = {}): Promise<ConcordHandle> {
  installExitHook();
  const ownDir = opts.dataDir === undefined;
  const dataDir = opts.dataDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'concord-test-'));
  let lastErr: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = opts.fixedPort ?? await freePort();
    try {
      return await launch(port, dataDir, ownDir && !opts.keepDataDir, opts);
    } catch (err) {
      lastErr = err;
      if (!(err instanceof Error && /EADDRINUSE|address already in use/i.test(err.message))) break;
    }
  }
  if (ownDir && !opts.keepDataDir) fs.rmSync(dataDir, { recursive: true, force: true });
  throw lastErr;
}

async function launch(port: number, dataDir: string, removeDir: boolean,
  opts: StartConcordOptions): Promise<ConcordHandle> {
  const endpoint = `${opts.scheme ?? 'http'}://127.0.0.1:${port}`;
  const args = [
    ...(opts.nodeArgs ?? []),
    CONCORD_MAIN,
    '--name', opts.name ?? 'default',
    '--data-dir', dataDir,
    '--listen-client-urls', endpoint,
    '--advertise-client-urls', endpoint,
    ...(opts.extraArgs ?? []),
  ];
  const env = { ...process.env, ...(opts.env ?? {}) };
  const proc = opts.fileSizeLimitBytes === undefined
    ? spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env })
    // bash (ulimit -f counts KiB there) sets the limit and ignores SIGXFSZ (ignored signals stay ignored across exec),
    // then becomes node: the pid is the server's.
    : spawn('/bin/bash', ['-c', `trap '' XFSZ; ulimit -f ${Math.ceil(opts.fileSizeLimitBytes / 1024)}; exec "$0" "$@"`, process.execPath, ...args],
      { stdio: ['ignore', 'pipe', 'pipe'], env });
  live.add(proc);
  proc.once('exit', () => live.delete(proc));
  const lines: string[] = [];
  let ready = false;
  const readyPromise = new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer): void => {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (line.length === 0) continue;
        lines.push(line);
        if (lines.length > 200) lines.shift();
        if (!ready && line.includes('ready to serve client requests')) {
          ready = true;
          resolve();
        }
      }
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', onData);
    proc.once('exit', (code, signal) => {
      if (!ready) reject(new Error(`concord exited early (code ${code}, signal ${signal})\n${lines.join('\n')}`));
    });
  });
  const timeoutMs = opts.readyTimeoutMs ?? 20000;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`concord not ready after ${timeoutMs} ms\n${lines.join('\n')}`)), timeoutMs);
  });
  let stopped = false;
  const handle: ConcordHandle = {
    endpoint,
    host: '127.0.0.1',
    port,
    address: `127.0.0.1:${port}`,
    dataDir,
    proc,
    logs: () => lines.join('\n'),
    async stop() {
      if (stopped) return;
      stopped = true;
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGTERM');
        const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
        await waitExit(proc);
        clearTimeout(t);
      }
      if (removeDir) fs.rmSync(dataDir, { recursive: true, force: true });
    },
    async kill() {
      stopped = true;
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      await waitExit(proc);
    },
  };
  try {
    await Promise.race([readyPromise, timeout]);
  } catch (err) {
    proc.kill('SIGKILL');
    await waitExit(proc);
    throw err;
  } finally {
    clearTimeout(timer);
  }
  return handle;
}

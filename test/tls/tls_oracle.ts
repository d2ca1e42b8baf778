// Shared by the TLS tests: a real etcd started with TLS flags (the oracle), and etcdctl with TLS
// options. (test/helpers/etcd.ts waits on plain-HTTP /health, which a TLS-only etcd has not.)
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ETCD_BIN, freePort } from '../helpers/etcd';
import { runEtcdctl, type CtlRun } from '../helpers/etcdctl';

export interface TlsEtcd { endpoint: string; logs(): string; stop(): Promise<void> }

/** A one-member etcd on an https:// client URL with `tlsArgs`; resolves when it is ready. */
export async function startTlsEtcd(tlsArgs: string[]): Promise<TlsEtcd> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'etcd-tls-'));
  const clientPort = await freePort();
  const peerPort = await freePort();
  const endpoint = `https://127.0.0.1:${clientPort}`;
  const proc: ChildProcess = spawn(ETCD_BIN, [
    '--data-dir', dataDir, '--listen-client-urls', endpoint, '--advertise-client-urls', endpoint,
    '--listen-peer-urls', `http://127.0.0.1:${peerPort}`, '--initial-advertise-peer-urls', `http://127.0.0.1:${peerPort}`,
    '--initial-cluster', `default=http://127.0.0.1:${peerPort}`, '--logger', 'zap', ...tlsArgs,
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const stop = async (): Promise<void> => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGKILL');
      await new Promise((r) => proc.once('exit', r));
    }
    fs.rmSync(dataDir, { recursive: true, force: true });
  };
  const ready = new Promise<void>((resolve, reject) => {
    const onData = (c: Buffer): void => {
      out += c.toString('utf8');
      if (out.includes('serving client traffic securely')) resolve();
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', onData);
    proc.once('exit', (code) => reject(new Error(`etcd exited (${code})\n${out}`)));
  });
  const timer = setTimeout(() => proc.kill('SIGKILL'), 20_000);
  try {
    await ready;
  } catch (err) {
    await stop();
    throw err;
  } finally {
    clearTimeout(timer);
  }
  // etcd logs this as it starts serving; a moment for the listener to be up.
  await new Promise((r) => setTimeout(r, 300));
  return { endpoint, logs: () => out, stop };
}

/** etcdctl against `endpoint` with TLS options (`tls`: --cacert, --cert, ...) and a short timeout. */
export function ctl(endpoint: string, tls: string[], args: string[]): Promise<CtlRun> {
  return runEtcdctl([endpoint], ['--dial-timeout=3s', '--command-timeout=5s', ...tls, ...args]);
}

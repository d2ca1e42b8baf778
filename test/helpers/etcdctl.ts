// Test helpers for running the real etcdctl (3.4) against etcd and concord.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { etcdSkipReason } from './etcd';

export const ETCDCTL_BIN = process.env.ETCDCTL_BIN ?? '/usr/bin/etcdctl';

/**
 * Why etcdctl tests cannot run here, or false. As etcdSkipReason(): with CONCORD_REQUIRE_ETCD=1
 * (CI) a missing etcd or etcdctl is an error, not a skip.
 */
export function etcdctlSkipReason(): string | false {
  const etcd = etcdSkipReason();
  if (etcd) return etcd;
  try {
    fs.accessSync(ETCDCTL_BIN, fs.constants.X_OK);
    return false;
  } catch {
    if (process.env.CONCORD_REQUIRE_ETCD === '1') throw new Error(`CONCORD_REQUIRE_ETCD=1 but etcdctl is not installed at ${ETCDCTL_BIN}`);
    return `etcdctl not installed at ${ETCDCTL_BIN}`;
  }
}

/** The environment etcdctl runs with: v3 API, no ETCDCTL_* or ETCD_LOCK_* settings from the caller. */
export function ctlEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('ETCDCTL_') && !k.startsWith('ETCD_LOCK_')) env[k] = v;
  env.ETCDCTL_API = '3';
  return env;
}

/** What an etcdctl run printed and its exit code (null: killed). */
export interface CtlRun { stdout: string; stderr: string; code: number | null }

/** Runs etcdctl with `--endpoints` and `args` (killed after 20 s). */
export function runEtcdctl(endpoints: string[], args: string[]): Promise<CtlRun> {
  return new Promise((resolve, reject) => {
    const proc = spawn(ETCDCTL_BIN, [`--endpoints=${endpoints.join(',')}`, ...args], { env: ctlEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
    proc.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    const timer = setTimeout(() => proc.kill('SIGKILL'), 20_000);
    proc.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    proc.on('close', (code) => {
      clearTimeout(timer);
      resolve({ stdout, stderr, code });
    });
  });
}

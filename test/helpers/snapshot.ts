// Test helpers for `concord snapshot save | status | restore` (src/cli/snapshot.ts): run the
// command as an operator would (bin/concord, its own process), and compare what two members
// serve at every revision of a range (the restore tests' check that nothing was lost).
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { connect, num, unary } from './grpc_client';

export const CONCORD_BIN = path.resolve(__dirname, '../../../bin/concord');

export interface CliRun { stdout: string; stderr: string; code: number | null; signal: NodeJS.Signals | null }

/** Runs `concord snapshot <args>` (killed after `timeoutMs`); `onStart` gets the process. */
export function runSnapshotCli(args: string[], opts: { env?: Record<string, string>; timeoutMs?: number;
  onStart?: (p: ChildProcess) => void } = {}): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [CONCORD_BIN, 'snapshot', ...args], {
      env: { ...process.env, ...(opts.env ?? {}) }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    opts.onStart?.(proc);
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
    proc.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    const timer = setTimeout(() => proc.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
    proc.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    proc.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ stdout, stderr, code, signal });
    });
  });
}

/** What a Range of every key answers at `rev`, as comparable text (or the error). */
async function rangeAt(endpoint: string, rev: number): Promise<string> {
  const kv = connect('etcdserverpb.KV', endpoint);
  try {
    const r = await unary(kv, 'Range', { key: Buffer.from([0]), range_end: Buffer.from([0]), revision: rev });
    return JSON.stringify(r.kvs.map((x) => [Buffer.from(x.key ?? []).toString('hex'), Buffer.from(x.value ?? []).toString('hex'),
      num(x.create_revision), num(x.mod_revision), num(x.version), String(x.lease)]));
  } catch (err) {
    return `error: ${(err as { details?: string }).details ?? String(err)}`;
  } finally {
    kv.close();
  }
}

/**
 * The revisions in [from, to] at which `a` and `b` answer a Range of every key differently
 * (every field of every KeyValue), with both answers: empty when they agree everywhere.
 */
export async function historyDiff(a: string, b: string, from: number, to: number): Promise<{ rev: number; a: string; b: string }[]> {
  const out: { rev: number; a: string; b: string }[] = [];
  for (let rev = from; rev <= to; rev++) {
    const [x, y] = await Promise.all([rangeAt(a, rev), rangeAt(b, rev)]);
    if (x !== y) out.push({ rev, a: x, b: y });
  }
  return out;
}

export async function hashKvAt(endpoint: string, rev: number): Promise<{ hash: number; compactRevision: number }> {
  const m = connect('etcdserverpb.Maintenance', endpoint);
  try {
    const r = await unary(m, 'HashKV', { revision: rev }, { timeoutMs: 20_000 });
    return { hash: num(r.hash), compactRevision: num(r.compact_revision) };
  } finally {
    m.close();
  }
}

/** Every lease with its granted TTL and attached keys (sorted), as comparable text. */
export async function leasesOf(endpoint: string): Promise<string> {
  const l = connect('etcdserverpb.Lease', endpoint);
  try {
    const list = await unary(l, 'LeaseLeases', {});
    const out: string[] = [];
    for (const x of list.leases) {
      const ttl = await unary(l, 'LeaseTimeToLive', { ID: x.ID, keys: true });
      out.push(`${String(x.ID)} granted=${num(ttl.grantedTTL)} keys=${ttl.keys.map((k) => Buffer.from(k).toString()).sort().join(',')}`);
    }
    return out.sort().join('\n');
  } finally {
    l.close();
  }
}

// The server command: flags and their errors (compared with /usr/bin/etcd where etcd answers
// without starting), limits set by flags, ETCD_* variables, --config-file, the default data
// dir, log level and log format, and how fast it is ready.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';

import { ConfigError, parseArgs } from '../../src/config/config';
import { CONCORD_MAIN, startConcord, type ConcordHandle } from '../helpers/concord';
import { ETCD_BIN, etcdSkipReason, freePort, freePorts, startEtcd, type EtcdHandle } from '../helpers/etcd';
import { bytes, connect, str, unary } from '../helpers/grpc_client';

const procs = new Set<ChildProcess>();
const tmpDirs: string[] = [];

function tmpDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'concord-cli-'));
  tmpDirs.push(d);
  return d;
}

/** The environment without ETCD_* variables (so the caller's cannot leak into a test). */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('ETCD_')) env[k] = v;
  return { ...env, ...extra };
}

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs a command that is expected to exit by itself (killed after `timeoutMs`). */
function runToExit(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number } = {}): Promise<Exit> {
  return new Promise((resolve, reject) => {
    const proc = spawn(cmd, args, { env: opts.env ?? cleanEnv(), cwd: opts.cwd ?? tmpDir(), stdio: ['ignore', 'pipe', 'pipe'] });
    procs.add(proc);
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
    proc.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    const timer = setTimeout(() => proc.kill('SIGKILL'), opts.timeoutMs ?? 10_000);
    proc.on('error', reject);
    proc.on('close', (code, signal) => {
      clearTimeout(timer);
      procs.delete(proc);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

function concordToExit(args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<Exit> {
  return runToExit(process.execPath, [CONCORD_MAIN, ...args], opts);
}

interface Server {
  proc: ChildProcess;
  endpoint: string;
  stdout(): string;
  stderr(): string;
  /** ms from spawn to serving. */
  readyMs: number;
  /** SIGTERM; resolves with the exit code. */
  stop(): Promise<number | null>;
}

function waitExit(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => proc.once('exit', () => resolve()));
}

/** True once a Status call on `endpoint` answers. */
async function serving(endpoint: string): Promise<boolean> {
  const m = connect('etcdserverpb.Maintenance', endpoint);
  try {
    await unary(m, 'Status', {}, { timeoutMs: 500 });
    return true;
  } catch {
    return false;
  } finally {
    m.close();
  }
}

/**
 * Starts concord with exactly `args` (the caller gives listen URLs and data dir, or not) and
 * waits until it answers on `endpoint` (by the log line, or by polling when logs are quiet).
 */
async function launch(args: string[], endpoint: string, opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<Server> {
  const t0 = Date.now();
  const proc = spawn(process.execPath, [CONCORD_MAIN, ...args], { env: opts.env ?? cleanEnv(), cwd: opts.cwd ?? tmpDir(), stdio: ['ignore', 'pipe', 'pipe'] });
  procs.add(proc);
  proc.once('exit', () => procs.delete(proc));
  let out = '';
  let err = '';
  let sawReady = false;
  proc.stdout!.on('data', (c: Buffer) => (out += c.toString('utf8')));
  proc.stderr!.on('data', (c: Buffer) => {
    err += c.toString('utf8');
    if (err.includes('ready to serve client requests')) sawReady = true;
  });
  const deadline = t0 + 15_000;
  let readyMs = -1;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null || proc.signalCode !== null) {
      throw new Error(`concord exited early (code ${proc.exitCode})\n${err}`);
    }
    if (sawReady || await serving(endpoint)) {
      readyMs = Date.now() - t0;
      break;
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  if (readyMs < 0) {
    proc.kill('SIGKILL');
    throw new Error(`concord not serving ${endpoint} after 15 s\n${err}`);
  }
  return {
    proc, endpoint, readyMs,
    stdout: () => out,
    stderr: () => err,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGTERM');
        const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
        await waitExit(proc);
        clearTimeout(t);
      }
      return proc.exitCode;
    },
  };
}

async function endpointAndArgs(dataDir: string): Promise<{ endpoint: string; args: string[] }> {
  const endpoint = `http://127.0.0.1:${await freePort()}`;
  return { endpoint, args: ['--data-dir', dataDir, '--listen-client-urls', endpoint, '--advertise-client-urls', endpoint] };
}

/** A Txn of `n` puts; resolves to 'ok' or the gRPC error details. */
async function txnOf(endpoint: string, n: number): Promise<string> {
  const kv = connect('etcdserverpb.KV', endpoint);
  try {
    const success = Array.from({ length: n }, (_, i) => ({ request_put: { key: bytes(`txn-${n}-${i}`), value: bytes('v') } }));
    await unary(kv, 'Txn', { success });
    return 'ok';
  } catch (err) {
    const e = err as grpc.ServiceError;
    return `${grpc.status[e.code]}: ${e.details}`;
  } finally {
    kv.close();
  }
}

async function putOf(endpoint: string, valueBytes: number): Promise<string> {
  const kv = connect('etcdserverpb.KV', endpoint);
  try {
    await unary(kv, 'Put', { key: bytes('big'), value: Buffer.alloc(valueBytes, 0x61) });
    return 'ok';
  } catch (err) {
    const e = err as grpc.ServiceError;
    return `${grpc.status[e.code]}: ${e.details}`;
  } finally {
    kv.close();
  }
}

async function memberName(endpoint: string): Promise<string> {
  const c = connect('etcdserverpb.Cluster', endpoint);
  try {
    return (await unary(c, 'MemberList', {})).members[0]?.name ?? '';
  } finally {
    c.close();
  }
}

/** Every non-empty stderr line parsed as a log record (fails on a line that is not JSON). */
function logRecords(stderr: string): Record<string, unknown>[] {
  return stderr.split('\n').filter((l) => l.length > 0).map((l) => {
    let rec: unknown;
    try {
      rec = JSON.parse(l);
    } catch {
      assert.fail(`log line is not JSON: ${l}`);
    }
    assert.ok(rec !== null && typeof rec === 'object');
    return rec as Record<string, unknown>;
  });
}

/**
 * The error etcd gave for a refused start: the "error" of its 'failed to verify flags' or
 * 'failed to start etcd' log line (zap), or of its capnslog 'error verifying flags, <error>. See
 * 'etcd --help'.' line (ETCD_* variables are read before the logger exists).
 */
function etcdError(stderr: string): string | null {
  for (const line of stderr.split('\n')) {
    if (line.startsWith('{')) {
      const rec = JSON.parse(line) as { msg?: string; error?: string };
      if ((rec.msg === 'failed to verify flags' || rec.msg === 'failed to start etcd') && typeof rec.error === 'string') return rec.error;
    }
    const m = /error verifying flags, (.*)\. See 'etcd --help'\.$/.exec(line);
    if (m) return m[1]!;
  }
  return null;
}

/** Loopback URLs on free ports, for an etcd that gets as far as binding its listeners. */
async function etcdListenArgs(): Promise<string[]> {
  const [c, p] = await freePorts(2);
  const client = `http://127.0.0.1:${c}`;
  return ['--data-dir', path.join(tmpDir(), 'etcd'), '--listen-client-urls', client, '--advertise-client-urls', client,
    '--listen-peer-urls', `http://127.0.0.1:${p}`];
}

const TOO_MANY_OPS = 'INVALID_ARGUMENT: etcdserver: too many operations in txn request';

describe('concord command line', () => {
  after(async () => {
    for (const p of procs) {
      try { p.kill('SIGKILL'); } catch { /* gone */ }
    }
    await Promise.all([...procs].map(waitExit));
    for (const d of tmpDirs) fs.rmSync(d, { recursive: true, force: true });
  });

  test('flags that do not parse: exit 2, Go flag-package messages as etcd, then the usage', async () => {
    const cases: [string[], string][] = [
      [['--bogus'], 'flag provided but not defined: -bogus'],
      [['-bogus=1'], 'flag provided but not defined: -bogus'],
      [['--max-txn-ops'], 'flag needs an argument: -max-txn-ops'],
      [['--max-txn-ops', 'abc'], 'invalid value "abc" for flag -max-txn-ops: parse error'],
      [['--max-request-bytes=1.5'], 'invalid value "1.5" for flag -max-request-bytes: parse error'],
    ];
    for (const [args, first] of cases) {
      const c = await concordToExit(args);
      assert.equal(c.code, 2, `concord ${args.join(' ')}: ${c.stderr}`);
      assert.equal(c.stderr.split('\n')[0], first);
      assert.match(c.stderr, /Usage: concord \[flags\]/);
      assert.equal(c.stdout, '');
      if (!etcdSkipReason()) {
        const e = await runToExit(ETCD_BIN, args);
        assert.equal(e.code, 2, `etcd ${args.join(' ')}`);
        assert.equal(e.stderr.split('\n')[0], first, `etcd ${args.join(' ')}`);
      }
    }
  });

  test('values refused once parsed: exit 1, "failed to verify flags" (as etcd --logger zap)', async () => {
    const cases: { args: string[]; env?: Record<string, string>; error: RegExp; etcd?: boolean }[] = [
      { args: ['extra'], error: /^'extra' is not a valid flag$/, etcd: true },
      { args: ['--name', 'x', 'extra', '--bogus'], error: /^'extra' is not a valid flag$/, etcd: true },
      { args: ['--heartbeat-interval', '100', '--election-timeout', '200'], error: /^--election-timeout\[200ms\] should be at least as 5 times as --heartbeat-interval\[100ms\]$/, etcd: true },
      { args: [], env: { ETCD_MAX_TXN_OPS: 'abc' }, error: /^invalid value "abc" for ETCD_MAX_TXN_OPS: parse error$/, etcd: true },
      { args: ['--config-file', '/nonexistent/concord.yml'], error: /nonexistent\/concord\.yml/, etcd: true },
      // etcd 3.4 panics here (exit 2); concord refuses the value.
      { args: ['--log-level', 'bogus'], error: /unknown log level "bogus"/ },
    ];
    for (const c of cases) {
      const r = await concordToExit(c.args, { env: cleanEnv(c.env) });
      assert.equal(r.code, 1, `concord ${c.args.join(' ')}: ${r.stderr}`);
      const recs = logRecords(r.stderr);
      assert.equal(recs.length, 1, r.stderr);
      assert.equal(recs[0]!.msg, 'failed to verify flags');
      assert.match(String(recs[0]!.error), c.error);
      if (c.etcd && !etcdSkipReason()) {
        const e = await runToExit(ETCD_BIN, ['--logger', 'zap', ...c.args], { env: cleanEnv(c.env), timeoutMs: 5000 });
        assert.equal(e.code, 1, `etcd ${c.args.join(' ')}: ${e.stderr}`);
        assert.match(e.stderr, /failed to verify flags|error verifying flags/, `etcd ${c.args.join(' ')}`);
      }
    }
  });

  test('cluster flags that do not parse: exit 2 and the Go flag-package message, as etcd', async () => {
    const cases: [string[], string][] = [
      [['--initial-cluster-state', 'bogus'], 'invalid value "bogus" for flag -initial-cluster-state: invalid value'],
      [['--pre-vote=maybe'], 'invalid boolean value "maybe" for -pre-vote: parse error'],
      [['--strict-reconfig-check=2'], 'invalid boolean value "2" for -strict-reconfig-check: parse error'],
      [['--snapshot-count', '-1'], 'invalid value "-1" for flag -snapshot-count: parse error'],
      [['--snapshot-count', '99999999999999999999'], 'invalid value "99999999999999999999" for flag -snapshot-count: value out of range'],
      [['--heartbeat-interval', '-1'], 'invalid value "-1" for flag -heartbeat-interval: parse error'],
      [['--election-timeout', '1.5'], 'invalid value "1.5" for flag -election-timeout: parse error'],
      [['--initial-advertise-peer-urls', 'foo'], 'invalid value "foo" for flag -initial-advertise-peer-urls: URL scheme must be http, https, unix, or unixs: foo'],
      [['--initial-advertise-peer-urls', 'http://127.0.0.1:7,'], 'invalid value "http://127.0.0.1:7," for flag -initial-advertise-peer-urls: URL scheme must be http, https, unix, or unixs: '],
      [['--initial-advertise-peer-urls', 'http://127.0.0.1:7/x'], 'invalid value "http://127.0.0.1:7/x" for flag -initial-advertise-peer-urls: URL must not contain a path: http://127.0.0.1:7/x'],
      [['--listen-peer-urls', 'http://127.0.0.1'], 'invalid value "http://127.0.0.1" for flag -listen-peer-urls: URL address does not have the form "host:port": http://127.0.0.1'],
      [['--listen-peer-urls', 'http://127.0.0.1:%zz'], 'invalid value "http://127.0.0.1:%zz" for flag -listen-peer-urls: parse "http://127.0.0.1:%zz": invalid port ":%zz" after host'],
      [['--initial-cluster-token'], 'flag needs an argument: -initial-cluster-token'],
    ];
    for (const [args, first] of cases) {
      const c = await concordToExit(args);
      assert.equal(c.code, 2, `concord ${args.join(' ')}: ${c.stderr}`);
      assert.equal(c.stderr.split('\n')[0], first);
      if (!etcdSkipReason()) {
        const e = await runToExit(ETCD_BIN, args);
        assert.equal(e.code, 2, `etcd ${args.join(' ')}`);
        assert.equal(e.stderr.split('\n')[0], first, `etcd ${args.join(' ')}`);
      }
    }
  });

  test('cluster values refused once parsed, and --initial-cluster refused at bootstrap: exit 1 with etcd\'s error text', async () => {
    const [p1, p2] = (await freePorts(2)).map((p) => `http://127.0.0.1:${p}`) as [string, string];
    // etcd checks these while verifying the flags ('failed to verify flags')...
    const verify: { args: string[]; env?: Record<string, string>; error: string }[] = [
      { args: ['--heartbeat-interval', '0'], error: '--heartbeat-interval must be >0 (set to 0ms)' },
      { args: ['--election-timeout', '0'], error: '--election-timeout must be >0 (set to 0ms)' },
      { args: ['--election-timeout', '50001'], error: '--election-timeout[50001ms] is too long, and should be set less than 50000ms' },
      { args: ['--initial-advertise-peer-urls', 'http://:7'], error: '--initial-advertise-peer-urls "http://:7" must be "host:port" (unexpected empty host (http://:7))' },
      { args: ['--listen-peer-urls', 'http://example.com:7'], error: 'expected IP in URL for binding (http://example.com:7)' },
      { args: [], env: { ETCD_INITIAL_CLUSTER_STATE: 'bogus' }, error: 'invalid value "bogus" for ETCD_INITIAL_CLUSTER_STATE: invalid value' },
      { args: [], env: { ETCD_PRE_VOTE: 'maybe' }, error: 'invalid value "maybe" for ETCD_PRE_VOTE: parse error' },
      { args: [], env: { ETCD_INITIAL_ADVERTISE_PEER_URLS: 'foo' }, error: 'invalid value "foo" for ETCD_INITIAL_ADVERTISE_PEER_URLS: URL scheme must be http, https, unix, or unixs: foo' },
    ];
    // ...and these only when it bootstraps a member without data ('discovery failed').
    const bootstrap: { args: string[]; env?: Record<string, string>; error: string }[] = [
      { args: ['--initial-cluster', 'a', '--initial-advertise-peer-urls', p1], error: 'error setting up initial cluster: URL scheme must be http, https, unix, or unixs: ' },
      { args: ['--initial-cluster', 'default=%zz'], error: 'error setting up initial cluster: parse "%zz": invalid URL escape "%zz"' },
      { args: ['--name', 'x', '--initial-cluster', `default=${p1},y=${p2}`, '--initial-advertise-peer-urls', p1], error: 'couldn\'t find local name "x" in the initial cluster configuration' },
      { args: ['--initial-cluster', `default=${p1}`, '--initial-advertise-peer-urls', p2], error: `--initial-cluster has default=${p1} but missing from --initial-advertise-peer-urls=${p2} (resolved urls: "${p2}" != "${p1}")` },
      // --initial-cluster given, --initial-advertise-peer-urls left at http://localhost:2380.
      { args: ['--initial-cluster', `default=${p1}`], error: `--initial-cluster has default=${p1} but missing from --initial-advertise-peer-urls=http://localhost:2380 (resolved urls: "http://localhost:2380" != "${p1}")` },
      { args: ['--initial-cluster', `default=${p1}`, '--initial-advertise-peer-urls', `${p2},${p1}`], error: `--initial-advertise-peer-urls has ${p2} but missing from --initial-cluster=${[`default=${p1}`, `default=${p2}`].sort().join(',')}` },
      { args: ['--initial-cluster', `default=${p1},b=${p1}`, '--initial-advertise-peer-urls', p1], error: `initial cluster b=${p1},default=${p1} has duplicate url` },
      { args: ['--initial-cluster-state', 'existing', '--initial-cluster', `default=${p1},b=${p1}`], error: `initial cluster b=${p1},default=${p1} has duplicate url` },
    ];
    for (const c of [...verify, ...bootstrap]) {
      const r = await concordToExit(c.args, { env: cleanEnv(c.env) });
      assert.equal(r.code, 1, `concord ${c.args.join(' ')}: ${r.stderr}`);
      const recs = logRecords(r.stderr);
      assert.equal(recs.length, 1, r.stderr);
      // etcd logs bootstrap refusals as 'discovery failed'; concord's ConfigError.logMsg says so.
      assert.ok(recs[0]!.msg === 'failed to verify flags' || recs[0]!.msg === 'discovery failed', String(recs[0]!.msg));
      assert.equal(recs[0]!.error, c.error, `concord ${c.args.join(' ')}`);
      if (!etcdSkipReason()) {
        const e = await runToExit(ETCD_BIN, ['--logger', 'zap', ...await etcdListenArgs(), ...c.args], { env: cleanEnv(c.env), timeoutMs: 10_000 });
        assert.equal(e.code, 1, `etcd ${c.args.join(' ')}: ${e.stderr}`);
        assert.equal(etcdError(e.stderr), c.error, `etcd ${c.args.join(' ')}`);
      }
    }
  });

  test('cluster keys of a --config-file refused with etcd\'s words', async () => {
    const dir = tmpDir();
    const cases: [string, string][] = [
      ['initial-cluster-state: bogus', 'unexpected clusterState "bogus"'],
      ['initial-advertise-peer-urls: foo', 'unexpected error setting up initial-advertise-peer-urls: URL scheme must be http, https, unix, or unixs: foo'],
    ];
    for (const [line, error] of cases) {
      const file = path.join(dir, 'c.yml');
      const listen = await etcdListenArgs();
      fs.writeFileSync(file, [`data-dir: ${listen[1]}`, `listen-client-urls: ${listen[3]}`, `advertise-client-urls: ${listen[5]}`,
        `listen-peer-urls: ${listen[7]}`, line, ''].join('\n'));
      const r = await concordToExit(['--config-file', file]);
      assert.equal(r.code, 1, r.stderr);
      assert.equal(logRecords(r.stderr)[0]!.error, error);
      if (!etcdSkipReason()) {
        const e = await runToExit(ETCD_BIN, ['--config-file', file], { timeoutMs: 10_000 });
        assert.equal(e.code, 1, e.stderr);
        assert.ok(etcdError(e.stderr) === error || e.stderr.split('\n').includes(error), e.stderr);
      }
    }
  });

  test('integer cluster flags take Go\'s integer syntax, as etcd reads them (values checked in etcd\'s start-up log)', () => {
    const env = cleanEnv();
    const read = (v: string): number => parseArgs(['--data-dir', path.join(tmpDir(), 'd'), '--snapshot-count', v], env).config.snapshotCount;
    for (const [v, n] of [['010', 8], ['0x10', 16], ['1_000', 1000], ['0b11', 3], ['0o17', 15], ['0', 100_000]] as const) assert.equal(read(v), n, v);
    for (const v of ['+5', '_1', '0x', '1__0', '1_', '08', '']) {
      assert.throws(() => read(v), (err: unknown) => err instanceof ConfigError && err.exitCode === 2 &&
        err.message === `invalid value "${v}" for flag -snapshot-count: parse error`, v);
    }
    const learners = (v: string): number => parseArgs(['--data-dir', path.join(tmpDir(), 'd'), '--experimental-max-learners', v], env).config.maxLearners;
    assert.equal(learners('+2'), 2);
    assert.throws(() => learners('-1'), /--experimental-max-learners must be >=0 \(set to -1\)/);
  });

  test('cluster flags in the usage, with their defaults (--pre-vote true as etcd 3.5)', async () => {
    const r = await concordToExit(['--help']);
    assert.equal(r.code, 0);
    const defaults: [string, string | null][] = [
      ['--listen-peer-urls', '"http://localhost:2380"'], ['--initial-advertise-peer-urls', '"http://localhost:2380"'],
      ['--initial-cluster', '"default=http://localhost:2380"'], ['--initial-cluster-state', '"new"'],
      ['--initial-cluster-token', '"etcd-cluster"'], ['--heartbeat-interval', '"100"'], ['--election-timeout', '"1000"'],
      ['--snapshot-count', '"100000"'], ['--pre-vote', '"true"'], ['--strict-reconfig-check', '"true"'],
      ['--experimental-max-learners', '"1"'], ['--experimental-auto-promote-learners', '"false"'],
    ];
    const lines = r.stdout.split('\n');
    for (const [flag, def] of defaults) {
      const i = lines.findIndex((l) => l === `  ${flag}` || l.startsWith(`  ${flag} `));
      assert.ok(i >= 0, `${flag} in usage`);
      assert.ok(lines[i + 1]!.endsWith(`(default ${def})`), `${flag}: ${lines[i + 1]}`);
    }
    assert.match(r.stdout, /--experimental-auto-promote-learners\n.*caught up/);
  });

  test('--initial-* flags are ignored once the data dir holds a member (as etcd); the advertised URLs alone make a one-member cluster (etcd refuses)', async () => {
    const dataDir = path.join(tmpDir(), 'data');
    const [peer] = (await freePorts(1)).map((p) => `http://127.0.0.1:${p}`) as [string];
    const a = await endpointAndArgs(dataDir);
    // First start: --initial-advertise-peer-urls without --initial-cluster (etcd: "--initial-cluster
    // has default=http://localhost:2380 but missing from --initial-advertise-peer-urls=...").
    const s1 = await launch([...a.args, '--initial-advertise-peer-urls', peer], a.endpoint);
    const c1 = connect('etcdserverpb.Cluster', a.endpoint);
    const before = (await unary(c1, 'MemberList', {})) as { header: { cluster_id: { toString(): string } }; members: { ID: { toString(): string } }[] };
    c1.close();
    assert.equal(await s1.stop(), 0);
    if (!etcdSkipReason()) {
      const e = await runToExit(ETCD_BIN, ['--logger', 'zap', ...await etcdListenArgs(), '--initial-advertise-peer-urls', peer], { timeoutMs: 10_000 });
      assert.equal(e.code, 1);
      assert.match(String(etcdError(e.stderr)), /^--initial-cluster has default=http:\/\/localhost:2380 but missing from --initial-advertise-peer-urls=/);
    }
    // Restart with flags that would not even parse on a new member: ignored.
    const s2 = await launch([...a.args, '--initial-cluster', 'garbage', '--initial-cluster-token', 'other', '--initial-cluster-state', 'existing',
      '--initial-advertise-peer-urls', 'http://127.0.0.1:1'], a.endpoint);
    try {
      const c2 = connect('etcdserverpb.Cluster', a.endpoint);
      const after2 = (await unary(c2, 'MemberList', {})) as typeof before;
      c2.close();
      assert.equal(after2.header.cluster_id.toString(), before.header.cluster_id.toString());
      assert.equal(after2.members[0]!.ID.toString(), before.members[0]!.ID.toString());
    } finally {
      assert.equal(await s2.stop(), 0);
    }
  });

  test('--help and --version', async () => {
    for (const flag of ['--help', '-h', '-help']) {
      const r = await concordToExit([flag]);
      assert.equal(r.code, 0);
      assert.equal(r.stderr, '');
      assert.match(r.stdout, /^Usage: concord \[flags\]/);
      for (const f of ['--name', '--data-dir', '--listen-client-urls', '--max-txn-ops', '--max-request-bytes', '--log-level', '--config-file']) {
        assert.ok(r.stdout.includes(`  ${f} `) || r.stdout.includes(`  ${f}\n`), `${f} in usage`);
      }
    }
    const v = await concordToExit(['--version']);
    assert.equal(v.code, 0);
    assert.match(v.stdout, /^concord Version: \S+\netcd API Version: 3\.4\.\d+\n$/);
  });

  describe('limits set by flags, against etcd with the same flags', { skip: etcdSkipReason() }, () => {
    let etcd: EtcdHandle | undefined;
    let concord: ConcordHandle | undefined;
    const flags = ['--max-txn-ops', '2', '--max-request-bytes', '1024'];

    after(async () => {
      await Promise.all([etcd?.stop(), concord?.stop()]);
    });

    test('--max-txn-ops 2: a 3-op txn fails; --max-request-bytes 1024: a larger put fails', async () => {
      const [e, c] = await Promise.all([startEtcd({ extraArgs: flags }), startConcord({ extraArgs: flags })]);
      etcd = e;
      concord = c;
      for (const n of [1, 2, 3, 5]) {
        const fromEtcd = await txnOf(e.endpoint, n);
        const fromConcord = await txnOf(c.endpoint, n);
        assert.equal(fromConcord, fromEtcd, `txn of ${n} ops`);
        assert.equal(fromConcord, n <= 2 ? 'ok' : TOO_MANY_OPS);
      }
      // Small, over --max-request-bytes, and over the gRPC limit (max-request-bytes + 512 KiB).
      for (const size of [100, 2000, 600 * 1024]) {
        const fromEtcd = await putOf(e.endpoint, size);
        const fromConcord = await putOf(c.endpoint, size);
        assert.equal(fromConcord, fromEtcd, `put of ${size} bytes`);
      }
      assert.equal(await putOf(c.endpoint, 2000), 'INVALID_ARGUMENT: etcdserver: request is too large');
      assert.match(await putOf(c.endpoint, 600 * 1024), /^RESOURCE_EXHAUSTED: grpc: received message larger than max \(\d+ vs\. 525312\)$/);
    });
  });

  test('ETCD_* variables are used; a flag wins over its variable (warned); unknown ones warned', async () => {
    const { endpoint, args } = await endpointAndArgs(path.join(tmpDir(), 'd1'));
    const s1 = await launch(args, endpoint, { env: cleanEnv({ ETCD_MAX_TXN_OPS: '2', ETCD_NAME: 'from-env', ETCD_BOGUS_THING: '1' }) });
    try {
      assert.equal(await txnOf(endpoint, 2), 'ok');
      assert.equal(await txnOf(endpoint, 3), TOO_MANY_OPS);
      const recs = logRecords(s1.stderr());
      assert.ok(recs.some((r) => r.msg === 'recognized and used environment variable' && r['variable-name'] === 'ETCD_MAX_TXN_OPS'), s1.stderr());
      assert.ok(recs.some((r) => r.msg === 'unrecognized environment variable' && r.level === 'warn' &&
        String(r['environment-variable']).startsWith('ETCD_BOGUS_THING=')), s1.stderr());
      assert.equal(await memberName(endpoint), 'from-env');
    } finally {
      assert.equal(await s1.stop(), 0);
    }

    const b = await endpointAndArgs(path.join(tmpDir(), 'd2'));
    const s2 = await launch([...b.args, '--max-txn-ops', '3'], b.endpoint, { env: cleanEnv({ ETCD_MAX_TXN_OPS: '2' }) });
    try {
      assert.equal(await txnOf(b.endpoint, 3), 'ok', 'the flag wins');
      assert.equal(await txnOf(b.endpoint, 4), TOO_MANY_OPS);
      // etcd 3.4 refuses to start here ("conflicting environment variable ... is shadowed by
      // corresponding command-line flag"); concord lets the flag win (README) and warns.
      const recs = logRecords(s2.stderr());
      assert.ok(recs.some((r) => r.level === 'warn' && /conflicting environment variable/.test(String(r.msg)) &&
        r['environment-variable'] === 'ETCD_MAX_TXN_OPS'), s2.stderr());
    } finally {
      assert.equal(await s2.stop(), 0);
    }
  });

  test('--config-file (YAML, etcd keys) is used alone; also from ETCD_CONFIG_FILE', async () => {
    const dir = tmpDir();
    const dataDir = path.join(dir, 'from-yaml');
    const port = await freePort();
    const endpoint = `http://127.0.0.1:${port}`;
    const file = path.join(dir, 'concord.yml');
    fs.writeFileSync(file, [
      '# etcd configuration file keys',
      'name: yaml-member',
      `data-dir: ${dataDir}`,
      `listen-client-urls: ${endpoint}`,
      `advertise-client-urls: ${endpoint}`,
      'max-txn-ops: 2',
      'max-request-bytes: 4096',
      'log-level: info',
      'enable-v2: false',
      'log-outputs: [default]',
      'auto-compaction-retention: "1"   # etcd key concord does not have: ignored, as etcd ignores unknown keys',
      '',
    ].join('\n'));
    const ignoredDir = path.join(dir, 'from-flag');
    const other = `http://127.0.0.1:${await freePort()}`;
    const cwd = tmpDir();
    const s = await launch(['--config-file', file, '--data-dir', ignoredDir, '--max-txn-ops', '100', '--listen-client-urls', other],
      endpoint, { env: cleanEnv({ ETCD_MAX_TXN_OPS: '50', ETCD_NAME: 'from-env' }), cwd });
    try {
      assert.equal(await txnOf(endpoint, 2), 'ok');
      assert.equal(await txnOf(endpoint, 3), TOO_MANY_OPS, 'max-txn-ops from the file');
      assert.equal(await putOf(endpoint, 5000), 'INVALID_ARGUMENT: etcdserver: request is too large');
      assert.ok(!(await serving(other)), 'the --listen-client-urls flag is ignored');
      assert.equal(await memberName(endpoint), 'yaml-member');
      assert.ok(fs.existsSync(path.join(dataDir, 'member')), 'data in the data-dir of the file');
      assert.ok(!fs.existsSync(ignoredDir), 'the --data-dir flag is ignored');
      assert.deepEqual(fs.readdirSync(cwd), [], 'nothing in the working directory');
      assert.ok(logRecords(s.stderr()).some((r) => /loaded server configuration/.test(String(r.msg))));
    } finally {
      assert.equal(await s.stop(), 0);
    }

    // The same file named by ETCD_CONFIG_FILE; restarted on the same data.
    const s2 = await launch([], endpoint, { env: cleanEnv({ ETCD_CONFIG_FILE: file }) });
    try {
      assert.equal(await txnOf(endpoint, 3), TOO_MANY_OPS);
      const kv = connect('etcdserverpb.KV', endpoint);
      const r = await unary(kv, 'Range', { key: bytes('txn-2-0') });
      kv.close();
      assert.equal(str(r.kvs[0]?.value), 'v', 'the data written before the restart');
    } finally {
      assert.equal(await s2.stop(), 0);
    }
  });

  test('without --data-dir: <name>.concord in the working directory', async () => {
    const cwd = tmpDir();
    const port = await freePort();
    const endpoint = `http://127.0.0.1:${port}`;
    const s = await launch(['--name', 'n1', '--listen-client-urls', endpoint, '--advertise-client-urls', endpoint], endpoint, { cwd });
    try {
      const kv = connect('etcdserverpb.KV', endpoint);
      await unary(kv, 'Put', { key: bytes('k'), value: bytes('v') });
      kv.close();
      assert.deepEqual(fs.readdirSync(cwd), ['n1.concord']);
      assert.ok(fs.readdirSync(path.join(cwd, 'n1.concord')).includes('member'));
    } finally {
      assert.equal(await s.stop(), 0);
    }
    const dflt = tmpDir();
    const s2 = await launch(['--listen-client-urls', endpoint, '--advertise-client-urls', endpoint], endpoint, { cwd: dflt });
    try {
      assert.deepEqual(fs.readdirSync(dflt), ['default.concord']);
    } finally {
      assert.equal(await s2.stop(), 0);
    }
  });

  test('--log-level and structured JSON log lines; time to ready', async (t) => {
    const dir = tmpDir();
    // info (default): JSON lines on stderr, nothing on stdout.
    const a = await endpointAndArgs(path.join(dir, 'data'));
    const info = await launch(a.args, a.endpoint);
    const firstStartMs = info.readyMs;
    assert.equal(await info.stop(), 0);
    assert.equal(info.stdout(), '');
    const recs = logRecords(info.stderr());
    for (const r of recs) {
      assert.equal(typeof r.ts, 'string');
      assert.ok(!Number.isNaN(Date.parse(String(r.ts))), `ts: ${String(r.ts)}`);
      assert.ok(['info', 'warn'].includes(String(r.level)), `level ${String(r.level)} at info`);
      assert.equal(typeof r.msg, 'string');
      assert.equal(typeof r.caller, 'string');
    }
    const msgs = recs.map((r) => r.msg);
    for (const m of ['starting concord', 'ready to serve client requests', 'received signal, shutting down', 'stopped']) {
      assert.ok(msgs.includes(m), `"${m}" logged: ${msgs.join(' | ')}`);
    }
    assert.ok(!recs.some((r) => r.level === 'debug'));

    // debug: the configuration is logged at debug level.
    const dbg = await launch([...a.args, '--log-level', 'debug'], a.endpoint);
    const restartMs = dbg.readyMs;
    assert.equal(await dbg.stop(), 0);
    const drecs = logRecords(dbg.stderr());
    const conf = drecs.find((r) => r.level === 'debug' && r.msg === 'configuration');
    assert.ok(conf, dbg.stderr());
    assert.equal(conf.maxTxnOps, 128);

    // warn: no info lines at all, and it still serves.
    const warn = await launch([...a.args, '--log-level', 'warn'], a.endpoint);
    assert.equal(await txnOf(a.endpoint, 1), 'ok');
    assert.equal(await warn.stop(), 0);
    assert.ok(logRecords(warn.stderr()).every((r) => r.level !== 'info' && r.level !== 'debug'), warn.stderr());
    assert.equal(warn.stdout(), '');

    t.diagnostic(`time to ready: fresh data dir ${firstStartMs} ms, restart ${restartMs} ms`);
    assert.ok(firstStartMs < 10_000 && restartMs < 10_000);
  });
});

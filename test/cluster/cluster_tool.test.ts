// `npm run cluster` (tools/cluster.ts): the tool started as a user starts it, on a free port
// range (never etcd's 2379/2380 or the Procfile ports). It prints the members' ports and pids
// and an etcdctl line; a put on one member is read on another; a member killed with SIGKILL is
// reported and the others keep serving; SIGINT stops every member (exit code 0, no process
// left, the ports free again); a second run without --fresh restarts the same cluster from its
// data (the killed member too, caught up), and --fresh starts an empty one. Whatever happens,
// every process the test or the tool started is killed at the end.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import { formatId, memberIdOf } from '../../src/membership/ids';
import { formatLogLine, memberLayout, parseClusterArgs } from '../../tools/cluster';
import { connect, str, unary } from '../helpers/grpc_client';

const TOOL = path.resolve(__dirname, '../../tools/cluster.js');

test('cluster tool: arguments, port layout, log lines', () => {
  // etcd's Procfile ports and ids by default (etcd's docs show these member ids for it).
  const procfile = memberLayout(3, null);
  assert.deepEqual(procfile.map((m) => [m.name, m.clientPort, m.peerPort]),
    [['infra1', 2379, 12380], ['infra2', 22379, 22380], ['infra3', 32379, 32380]]);
  assert.deepEqual(procfile.map((m) => formatId(memberIdOf([m.peerUrl], 'etcd-cluster-1'))),
    ['8211f1d0f64f3269', '91bc3c398fb3c146', 'fd422379fda50e48']);
  assert.deepEqual(memberLayout(7, 30000).map((m) => [m.clientPort, m.peerPort]).at(-1), [30012, 30013]);
  assert.throws(() => memberLayout(7, null), /--base-port/);
  assert.throws(() => memberLayout(3, 65532), /no room/);

  const a = parseClusterArgs(['--size', '5', '--base-port=30000', '--fresh', '--', '--heartbeat-interval', '50']);
  assert.equal(a.size, 5);
  assert.equal(a.basePort, 30000);
  assert.equal(a.fresh, true);
  assert.deepEqual(a.memberArgs, ['--heartbeat-interval', '50']);
  assert.throws(() => parseClusterArgs(['--size', '8']), /1\.\.7/);
  assert.throws(() => parseClusterArgs(['--size', '0']), /1\.\.7/);
  assert.throws(() => parseClusterArgs(['--bogus']), /not defined/);
  assert.throws(() => parseClusterArgs(['--', '--name', 'x']), /set by the tool/);

  const line = JSON.stringify({
    level: 'warn', ts: '2026-01-02T03:04:05.678Z', caller: 'concord', msg: 'lost peer connection',
    'remote-peer-id': '91bc3c398fb3c146', reason: 'connection closed (eof)', ports: [2379], error: 'E: x\n    at f',
  });
  const [first, ...rest] = formatLogLine(line, false);
  assert.match(first!, /^\d\d:\d\d:\d\d\.678 warn  lost peer connection remote-peer-id=91bc3c398fb3c146 reason="connection closed \(eof\)" ports=2379$/);
  assert.deepEqual(rest, ['  error:', '    E: x', '        at f']);
  assert.deepEqual(formatLogLine('not json', false), ['not json']);
});

/** Every port of [base, base+count) can be listened on now. */
async function rangeFree(base: number, count: number): Promise<boolean> {
  for (let p = base; p < base + count; p++) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.createServer();
      s.once('error', () => resolve(false));
      s.listen(p, '127.0.0.1', () => s.close(() => resolve(true)));
    });
    if (!ok) return false;
  }
  return true;
}

/**
 * A base port for `count` ports, in 23000..31999: under Linux's ephemeral range (32768+, where
 * the kernel picks other tests' ports) and clear of etcd's (2379/2380) and the Procfile's.
 */
async function freeRange(count: number): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 23000 + 2 * Math.floor(Math.random() * ((31999 - 23000 - count) / 2));
    if (await rangeFree(base, count)) return base;
  }
  throw new Error('no free port range');
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Everything the test started, killed whatever happens (test end, failure, or exit). */
const started = { tools: new Set<ChildProcess>(), pids: new Set<number>() };
function killEverything(): void {
  for (const p of started.tools) {
    if (p.exitCode === null && p.signalCode === null) {
      try { p.kill('SIGKILL'); } catch { /* gone */ }
    }
  }
  for (const pid of started.pids) {
    if (alive(pid)) {
      try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
    }
  }
}
process.on('exit', killEverything);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.once(sig, () => {
    killEverything();
    process.kill(process.pid, sig);
  });
}

interface ToolRun {
  proc: ChildProcess;
  output(): string;
  /** The first output line matching `re` (waits for it; fails if the tool exits first). */
  line(re: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Member name -> pid, from the lines the tool prints at start. */
  pids: Map<string, number>;
}

function runTool(args: string[]): ToolRun {
  const proc = spawn(process.execPath, [TOOL, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' } });
  started.tools.add(proc);
  let out = '';
  const waiters = new Set<() => void>();
  const pids = new Map<string, number>();
  const onData = (chunk: Buffer): void => {
    out += chunk.toString('utf8');
    for (const m of out.matchAll(/^cluster \|\s+(infra\d+)\s+pid (\d+)/gm)) {
      const pid = Number(m[2]);
      pids.set(m[1]!, pid);
      started.pids.add(pid);
    }
    for (const w of waiters) w();
  };
  proc.stdout!.on('data', onData);
  proc.stderr!.on('data', onData);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    proc.once('exit', (code, signal) => {
      resolve({ code, signal });
      for (const w of waiters) w();
    });
  });
  return {
    proc, pids, exited,
    output: () => out,
    line(re, timeoutMs = 60_000) {
      const flags = re.flags.includes('m') ? re.flags : re.flags + 'm';
      const rm = new RegExp(re.source, flags);
      return new Promise((resolve, reject) => {
        const check = (): void => {
          const m = rm.exec(out);
          if (m !== null) finish(() => resolve(m));
          else if (proc.exitCode !== null || proc.signalCode !== null) {
            finish(() => reject(new Error(`the tool exited (${proc.exitCode ?? proc.signalCode}) before printing ${re}:\n${out}`)));
          }
        };
        const timer = setTimeout(() => finish(() => reject(new Error(`no ${re} after ${timeoutMs} ms:\n${out}`))), timeoutMs);
        const finish = (f: () => void): void => {
          clearTimeout(timer);
          waiters.delete(check);
          f();
        };
        waiters.add(check);
        check();
      });
    },
  };
}

const LEADER_LINE = /^cluster \| leader(?:: | changed: infra\d → )(infra\d) /gm;

/** The member the tool said leads last, waiting for a line naming one other than `not`. */
async function toolLeader(run: ToolRun, not?: string): Promise<string> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const all = [...run.output().matchAll(LEADER_LINE)];
    const last = all.at(-1)?.[1];
    if (last !== undefined && last !== not) return last;
    if (Date.now() > deadline) throw new Error(`no leader line (other than ${not}):\n${run.output()}`);
    if (run.proc.exitCode !== null) throw new Error(`the tool exited:\n${run.output()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A call that may meet a member that does not know the leader yet: retried on UNAVAILABLE. */
async function retrying<T>(f: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      return await f();
    } catch (err) {
      if ((err as { code?: number }).code !== 14 || Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

/** Starts the tool and waits for its etcdctl line; retries on another range if ports were taken. */
async function startTool(dataDir: string, extra: string[], base: number | null): Promise<{ run: ToolRun; endpoints: string[]; base: number }> {
  for (let attempt = 0; ; attempt++) {
    const b = base ?? await freeRange(6);
    const run = runTool(['--size', '3', '--base-port', String(b), '--data-dir', dataDir, '--exit-with-parent', ...extra]);
    try {
      const m = await run.line(/^cluster \|\s+etcdctl --endpoints=(\S+)/);
      return { run, endpoints: m[1]!.split(',').map((e) => `http://${e}`), base: b };
    } catch (err) {
      if (base === null && attempt < 3 && /ports? in use/.test(run.output())) continue;
      throw err;
    }
  }
}

/** SIGINT; the tool exits 0, every member process is gone and the ports are free again. */
async function interruptAndCheck(run: ToolRun, base: number): Promise<void> {
  assert.equal(run.pids.size, 3, run.output());
  run.proc.kill('SIGINT');
  let timer: NodeJS.Timeout | undefined;
  const exit = await Promise.race([
    run.exited,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`the tool did not exit 20 s after SIGINT:\n${run.output()}`)), 20_000);
    }),
  ]).finally(() => clearTimeout(timer));
  assert.deepEqual(exit, { code: 0, signal: null }, run.output());
  assert.match(run.output(), /^cluster \| every member stopped$/m);
  for (const [name, pid] of run.pids) assert.equal(alive(pid), false, `${name} (pid ${pid}) still runs`);
  assert.equal(await rangeFree(base, 6), true, 'the ports are free again');
}

test('cluster tool: 3 members, a put on one read on another, a member lost, SIGINT, restart, --fresh', async (t) => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'concord-cluster-tool-'));
  const clients: { close(): void }[] = [];
  t.after(() => {
    for (const c of clients) c.close();
    killEverything();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });
  const kvOf = (endpoint: string) => {
    const c = connect('etcdserverpb.KV', endpoint);
    clients.push(c);
    return c;
  };

  // First run: a new cluster.
  const first = await startTool(dataDir, [], null);
  const { run, endpoints, base } = first;
  assert.deepEqual(endpoints, [0, 2, 4].map((d) => `http://127.0.0.1:${base + d}`));
  assert.match(run.output(), /^cluster \| starting a new 3-member cluster/m);
  for (const n of ['infra1', 'infra2', 'infra3']) {
    assert.match(run.output(), new RegExp(`^${n}\\s+\\| \\d\\d:\\d\\d:\\d\\d\\.\\d{3} info  ready to serve client requests `, 'm'), 'readable, prefixed log lines');
  }
  for (const n of ['infra1', 'infra2', 'infra3']) assert.ok(fs.existsSync(path.join(dataDir, n, 'member')), `${n}'s data dir`);
  const kv = endpoints.map(kvOf);
  await toolLeader(run);
  await retrying(() => unary(kv[0]!, 'Put', { key: Buffer.from('foo'), value: Buffer.from('bar') }));
  assert.equal(str((await retrying(() => unary(kv[2]!, 'Range', { key: Buffer.from('foo') }))).kvs[0]?.value), 'bar', 'put on infra1, read on infra3');

  // A member killed behind the tool's back is reported; the other two go on (with a new leader
  // when it led, which the tool reports).
  process.kill(run.pids.get('infra2')!, 'SIGKILL');
  await run.line(/^cluster \| infra2 \(pid \d+\) exited unexpectedly \(signal SIGKILL\); 2 of 3 members still running/);
  await toolLeader(run, 'infra2');
  await retrying(() => unary(kv[2]!, 'Put', { key: Buffer.from('after'), value: Buffer.from('loss') }));
  assert.equal(str((await retrying(() => unary(kv[0]!, 'Range', { key: Buffer.from('after') }))).kvs[0]?.value), 'loss');
  assert.equal(run.proc.exitCode, null, 'the tool still runs');
  await interruptAndCheck(run, base);

  // Second run, no --fresh: the same cluster from its data dirs; infra2 catches up.
  const second = await startTool(dataDir, [], base);
  assert.match(second.run.output(), /^cluster \| restarting the 3-member cluster/m);
  const kv2 = second.endpoints.map(kvOf);
  await toolLeader(second.run);
  for (const k of ['foo', 'after']) {
    const r = await retrying(() => unary(kv2[1]!, 'Range', { key: Buffer.from(k) }));
    assert.equal(str(r.kvs[0]?.value), k === 'foo' ? 'bar' : 'loss', `${k} on the restarted infra2`);
  }
  await interruptAndCheck(second.run, base);

  // --fresh: a new, empty cluster.
  const third = await startTool(dataDir, ['--fresh'], base);
  assert.match(third.run.output(), /^cluster \| starting a new 3-member cluster/m);
  const kv3 = third.endpoints.map(kvOf);
  await toolLeader(third.run);
  assert.equal((await retrying(() => unary(kv3[1]!, 'Range', { key: Buffer.from('foo') }))).kvs.length, 0);
  await interruptAndCheck(third.run, base);
});

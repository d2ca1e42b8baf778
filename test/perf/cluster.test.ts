// Keeps `npm run perf -- --cluster 3` (perf/cluster.ts) from rotting: the command runs against a
// 3-member concord cluster only (--no-etcd), 1 client for 1 s to the leader and 1 s to the
// followers, and its JSON must hold both cells with requests answered, the leader found, CPU for
// every member, and no member left running; a run stopped by SIGTERM must stop its members too.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import type { PerfReport } from '../../perf/run';

const RUN = path.resolve(__dirname, '../../perf/run.js');

/** Running (a zombie waiting for its reaper is not). */
function alive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** The --data-dir of a concord member process, or null (a load generator). */
function dataDirOf(pid: number): string | null {
  const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  const i = argv.indexOf('--data-dir');
  return i >= 0 ? argv[i + 1]! : null;
}

/** The pids of a process's children (Linux /proc: every thread's children list). */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    const text = fs.readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim();
    if (text !== '') out.push(...text.split(' ').map(Number));
  }
  return out;
}

/** Waits up to `timeoutMs` for a process to be gone: SIGKILL takes effect when the process next runs. */
async function goneWithin(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (alive(pid)) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  return true;
}

function exitOf(child: ReturnType<typeof spawn>): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
}

test('--cluster 3 --no-etcd: put-seq, 1 client, to the leader and to the followers', { timeout: 120_000 }, async () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'concord-perf-cluster-'));
  try {
    const child = spawn(process.execPath, [
      RUN, '--cluster', '3', '--no-etcd', '--workloads', 'put-seq', '--clients', '1',
      '--duration', '1', '--warmup', '0.2', '--rounds', '1', '--out', out,
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const { code } = await exitOf(child);
    assert.equal(code, 0, `perf run failed:\n${stdout}\n${stderr}`);
    assert.match(stdout, /3-member clusters/);
    assert.match(stdout, /CPU per member role/);

    const files = fs.readdirSync(out);
    const json = files.find((f) => f.startsWith('cluster3-') && f.endsWith('.json'));
    assert.ok(json !== undefined, `no cluster3-*.json in ${files.join(', ')}`);
    assert.ok(files.includes(json.replace(/\.json$/, '.html')));
    const report = JSON.parse(fs.readFileSync(path.join(out, json), 'utf8')) as PerfReport;
    assert.equal(report.options.cluster, 3);
    assert.deepEqual(report.cells.map((c) => c.role), ['leader', 'followers']);
    for (const cell of report.cells) {
      assert.equal(cell.samples.length, 1);
      const s = cell.samples[0]!;
      assert.equal(s.target, 'concord');
      assert.ok(s.ok > 0, `${cell.role}: nothing answered`);
      assert.equal(s.errors, 0, `${cell.role}: ${s.errorSamples.join('; ')}`);
      assert.ok(s.latencyUs.p50 > 0 && s.latencyUs.p50 <= s.latencyUs.p99 && s.latencyUs.p99 <= s.latencyUs.p999);
      const c = s.cluster!;
      assert.equal(c.size, 3);
      assert.equal(c.members.length, 3);
      const leaders = c.members.filter((m) => m.leader);
      assert.equal(leaders.length, 1);
      assert.equal(leaders[0]!.name, c.leader);
      // One client: one load generator process, so one member gets it.
      const sentTo = c.members.filter((m) => m.clients > 0);
      assert.equal(sentTo.length, 1);
      assert.equal(sentTo[0]!.clients, 1);
      assert.equal(sentTo[0]!.leader, cell.role === 'leader');
      for (const m of c.members) {
        assert.ok(Number.isFinite(m.usPerOp) && m.usPerOp > 0, `${m.name}: CPU per op ${m.usPerOp}`);
        assert.ok(Number.isFinite(m.mainUsPerOp!), `${m.name}: main thread CPU`);
        assert.ok(Array.isArray(m.otherThreadsUsPerOp) && m.otherThreadsUsPerOp.length > 0);
        assert.equal(alive(m.pid), false, `member ${m.name} (pid ${m.pid}) still running after the run`);
      }
    }
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
});

test('--cluster 3: SIGTERM during a measurement stops every member and load generator', { timeout: 120_000 }, async () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'concord-perf-cluster-'));
  try {
    const child = spawn(process.execPath, [
      RUN, '--cluster', '3', '--no-etcd', '--workloads', 'put-seq', '--clients', '1',
      '--duration', '30', '--warmup', '0.2', '--rounds', '1', '--out', out,
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = exitOf(child);
    // The progress line is printed once the cluster serves and the load generator is being started.
    await new Promise<void>((resolve, reject) => {
      let stderr = '';
      child.stderr!.on('data', (d: Buffer) => {
        stderr += d.toString();
        if (stderr.includes('put-seq to leader')) resolve();
      });
      void exited.then(() => reject(new Error(`perf run exited before measuring:\n${stderr}`)));
    });
    // The load generator starts once every member has been read (Status, /metrics, /proc): on a
    // busy machine that can take a while, so wait for it rather than for a fixed time.
    const deadline = Date.now() + 15_000;
    let children = childrenOf(child.pid!).filter(alive);
    while (children.length < 4 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      children = childrenOf(child.pid!).filter(alive);
    }
    const dataDirs = children.map(dataDirOf).filter((d): d is string => d !== null);
    assert.equal(dataDirs.length, 3, 'three members');
    assert.ok(children.length >= 4, `expected 3 members and a load generator, found ${children.length} children`);
    child.kill('SIGTERM');
    const { code } = await exited;
    assert.equal(code, 143);
    for (const pid of children) assert.ok(await goneWithin(pid, 5000), `child ${pid} still running 5 s after SIGTERM`);
    for (const dir of dataDirs) assert.equal(fs.existsSync(dir), false, `${dir} left behind`);
    assert.deepEqual(fs.readdirSync(out), [], 'a stopped run writes no report');
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
});

// Keeps `npm run perf -- --workloads defrag,maintenance` (perf/maintenance.ts) from rotting: a tiny
// run (8 MiB, half-second windows) against concord and, when installed, real etcd; its JSON must
// hold every call and phase with puts answered and no errors. etcd's Defragment must have run and
// shrunk the file; concord's is "ok" with the same shape, or "n/a" (UNIMPLEMENTED) until online
// defragmentation lands — never an error.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import type { MaintExtra } from '../../perf/maintenance';
import type { PerfReport, Sample } from '../../perf/run';
import { etcdAvailable } from '../helpers/etcd';

const RUN = path.resolve(__dirname, '../../perf/run.js');

function run(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [RUN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => child.once('exit', (code) => resolve({ code, stdout, stderr })));
}

test('defrag and maintenance workloads, 8 MiB: every call and phase measured, n/a only for UNIMPLEMENTED', { timeout: 180_000 }, async () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'concord-perf-maint-'));
  const withEtcd = etcdAvailable();
  try {
    const r = await run([
      '--workloads', 'defrag,maintenance', '--defrag-mib', '8', '--maint-mib', '8', '--duration', '0.5', '--warmup', '0.1',
      '--rounds', '1', '--out', out, ...(withEtcd ? [] : ['--no-etcd']),
    ]);
    assert.equal(r.code, 0, `perf run failed:\n${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, /maintenance calls/);
    assert.match(r.stdout, /put latency around the calls/);
    const json = fs.readdirSync(out).find((f) => f.endsWith('.json'));
    assert.ok(json !== undefined);
    const report = JSON.parse(fs.readFileSync(path.join(out, json), 'utf8')) as PerfReport;
    assert.deepEqual(report.cells.map((c) => [c.workload, c.clients]), [['defrag', 8], ['maintenance', 8]]);
    const html = fs.readFileSync(path.join(out, json.replace(/\.json$/, '.html')), 'utf8');
    assert.match(html, /put p99 over time, 8 MiB/);

    for (const cell of report.cells) {
      assert.equal(cell.samples.length, withEtcd ? 2 : 1);
      for (const s of cell.samples) {
        const where = `${cell.workload} ${s.target}`;
        assert.equal(s.errors, 0, `${where}: ${s.errorSamples.join('; ')}`);
        const m = s.maint as MaintExtra;
        assert.ok(m !== undefined, `${where}: no maint`);
        assert.equal(m.kind, cell.workload);
        assert.equal(m.fillMiB, 8);
        assert.equal(m.fillKeys, Math.ceil((8 * 2 ** 20) / m.valueBytes));
        assert.ok(m.dbBefore.size >= 8 * 2 ** 20, `${where}: db ${m.dbBefore.size} bytes after an 8 MiB fill`);
        assert.ok(m.dbBefore.inUse > 0 && m.dbBefore.inUse <= m.dbBefore.size);
        const expectOps = cell.workload === 'defrag' ? ['defrag'] : ['hashkv', 'snapshot', 'hash'];
        assert.deepEqual(m.ops.map((o) => o.name), expectOps);
        assert.deepEqual(m.phases.map((p) => p.name), cell.workload === 'defrag' ? ['baseline', 'defrag', 'after'] : ['baseline', ...expectOps]);
        for (const p of m.phases) {
          assert.ok(p.toS >= p.fromS, `${where} ${p.name}: window ${p.fromS}..${p.toS}`);
          assert.ok(p.pauseMs >= 0 && p.pauseMs <= (p.toS - p.fromS) * 1000 + 1e-6, `${where} ${p.name}: pause ${p.pauseMs} ms`);
        }
        // The windows with put load and no call must see puts answered.
        for (const p of m.phases.filter((x) => x.name === 'baseline' || x.name === 'after')) assert.ok(p.puts > 0, `${where} ${p.name}: no puts`);
        for (const op of m.ops) {
          if (op.status === 'n/a') {
            // Only concord's Defragment may be missing (UNIMPLEMENTED until online defragmentation).
            assert.equal(`${s.target} ${op.name}`, 'concord defrag');
            assert.equal(s.ok, 0, 'no call ran: the sample has nothing to compare');
            continue;
          }
          assert.equal(op.status, 'ok', `${where} ${op.name}: ${op.message}`);
          assert.ok(op.calls >= 1 && op.meanMs > 0 && op.maxMs >= op.meanMs);
          // A snapshot holds at least the values put (8 MiB).
          if (op.name === 'snapshot') assert.ok((op.bytes ?? 0) >= 8 * 2 ** 20, `${where}: snapshot of ${op.bytes} bytes`);
        }
        if (cell.workload === 'defrag') {
          assert.equal(m.deletedKeys, Math.floor(m.fillKeys / 2));
          const defrag = m.ops[0]!;
          // Half the values were deleted and compacted away: a defragmented file is smaller.
          if (defrag.status === 'ok') assert.ok(m.dbAfter.size < m.dbBefore.size, `${where}: ${m.dbBefore.size} -> ${m.dbAfter.size} bytes`);
          else assert.equal(defrag.status, 'n/a');
        }
        const sample: Sample = s;
        if (m.ops.every((o) => o.status === 'ok')) assert.ok(sample.ok > 0 && sample.latencyUs.p50 > 0, `${where}: no puts during the calls`);
      }
    }
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
});

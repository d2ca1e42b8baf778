// Keeps `npm run perf -- --auth --tls` (perf/security.ts) from rotting: a --quick run of one
// workload, 2 clients, half a second per measurement, must give plain, auth and tls samples for
// both concord and etcd with requests answered and no errors, and the cost table. (The run itself
// checks that auth is on: bench is refused a write outside its prefix, else the run fails.)
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import type { PerfReport } from '../../perf/run';
import { etcdSkipReason } from '../helpers/etcd';

const RUN = path.resolve(__dirname, '../../perf/run.js');

test('perf --quick --auth --tls: plain, auth and tls results for concord and etcd', { skip: etcdSkipReason(), timeout: 120_000 }, async () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'perf-security-'));
  try {
    const child = spawn(process.execPath, [RUN, '--quick', '--workloads', 'range-ser', '--clients', '2', '--duration', '0.5',
      '--warmup', '0.1', '--auth', '--tls', '--out', out], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGTERM'), 100_000);
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    clearTimeout(timer);
    assert.equal(code, 0, `perf run failed:\n${stdout}\n${stderr}`);

    const file = fs.readdirSync(out).find((f) => f.startsWith('quick-security-') && f.endsWith('.json'));
    assert.ok(file !== undefined, `no JSON report in ${out}`);
    const report = JSON.parse(fs.readFileSync(path.join(out, file), 'utf8')) as PerfReport;
    assert.deepEqual(report.options.modes.map((m) => m.name), ['plain', 'auth', 'tls']);
    assert.equal(report.cells.length, 1);
    const cell = report.cells[0]!;
    for (const target of ['concord', 'etcd'] as const) {
      for (const mode of [undefined, 'auth', 'tls']) {
        const ss = cell.samples.filter((s) => s.target === target && s.mode === mode);
        assert.equal(ss.length, 1, `${target} ${mode ?? 'plain'}`);
        const s = ss[0]!;
        assert.ok(s.ok > 0, `${target} ${mode ?? 'plain'}: nothing answered`);
        assert.equal(s.errors, 0, `${target} ${mode ?? 'plain'}: ${s.errorSamples.join('; ')}`);
        assert.ok(Number.isFinite(s.serverCpuUsPerOp) && s.serverCpuUsPerOp > 0, `${target} ${mode ?? 'plain'}: server CPU`);
      }
    }
    // concord's thread busy times come from its plain metrics listener when its client port is TLS.
    assert.ok(cell.samples.find((s) => s.target === 'concord' && s.mode === 'tls')!.threadBusyUsPerOp !== undefined);
    assert.match(stdout, /security cost/);
    assert.match(stdout, /range-ser\s+2\s+etcd\s+tls/);
    assert.match(stdout, /range-ser\s+2\s+concord\s+auth/);
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
});

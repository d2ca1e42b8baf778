// perf/security.ts, its pure parts: which modes a run has, the order servers run in, the flags
// and client settings of a mode, and the cost table's per-round arithmetic.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import type { Cell, Sample } from '../../perf/run';
import {
  BENCH_PREFIX, clientSecurity, fmtSpread, modeCost, modeSchedule, modesFromArgs, parseMode, securityCostRows, serverTlsArgs, type RunPki,
} from '../../perf/security';
import { workloads } from '../../perf/workloads';

test('modesFromArgs: plain first, one mode per flag, or --modes as given', () => {
  const names = (f: Parameters<typeof modesFromArgs>[0]): string[] => modesFromArgs(f).map((m) => m.name);
  assert.deepEqual(names({ auth: false, tls: false, mtls: false }), ['plain']);
  assert.deepEqual(names({ auth: true, tls: true, mtls: false }), ['plain', 'auth', 'tls']);
  assert.deepEqual(names({ auth: true, tls: true, mtls: true }), ['plain', 'auth', 'tls', 'mtls']);
  assert.deepEqual(names({ auth: false, tls: false, mtls: false, modes: 'auth+tls,plain,tls' }), ['plain', 'auth+tls', 'tls']);
  assert.throws(() => modesFromArgs({ auth: false, tls: false, mtls: false, modes: 'tls,ssl' }), /unknown security mode ssl/);
});

test('parseMode: auth and the transport of each name', () => {
  assert.deepEqual(parseMode('plain'), { name: 'plain', auth: false, tls: 'none' });
  assert.deepEqual(parseMode('auth'), { name: 'auth', auth: true, tls: 'none' });
  assert.deepEqual(parseMode('tls'), { name: 'tls', auth: false, tls: 'tls' });
  assert.deepEqual(parseMode('mtls'), { name: 'mtls', auth: false, tls: 'mtls' });
  assert.deepEqual(parseMode('auth+tls'), { name: 'auth+tls', auth: true, tls: 'tls' });
  assert.deepEqual(parseMode('auth+mtls'), { name: 'auth+mtls', auth: true, tls: 'mtls' });
});

test('modeSchedule: a target\'s modes back to back, the whole order reversed in odd rounds', () => {
  const modes = modesFromArgs({ auth: true, tls: true, mtls: false });
  const order = (round: number): string[] => modeSchedule(['concord', 'etcd'], modes, round).map((x) => `${x.target}/${x.mode.name}`);
  assert.deepEqual(order(0), ['concord/plain', 'concord/auth', 'concord/tls', 'etcd/plain', 'etcd/auth', 'etcd/tls']);
  assert.deepEqual(order(1), ['etcd/tls', 'etcd/auth', 'etcd/plain', 'concord/tls', 'concord/auth', 'concord/plain']);
  assert.deepEqual(order(2), order(0));
  // Over two rounds every (target, mode) runs once in each half: no one always goes first.
  const pos = (round: number, key: string): number => order(round).indexOf(key);
  for (const key of order(0)) assert.equal(pos(0, key) + pos(1, key), order(0).length - 1);
});

test('server flags and client settings of a mode: the same certificates for both servers', () => {
  const pki = {
    pki: { ca: { cert: '/p/ca.crt', key: '/p/ca.key' } }, server: { cert: '/p/server.crt', key: '/p/server.key' },
    client: { cert: '/p/client.crt', key: '/p/client.key' },
  } as unknown as RunPki;
  assert.deepEqual(serverTlsArgs(parseMode('auth'), null), []);
  assert.deepEqual(serverTlsArgs(parseMode('tls'), pki), ['--cert-file', '/p/server.crt', '--key-file', '/p/server.key']);
  assert.deepEqual(serverTlsArgs(parseMode('auth+mtls'), pki),
    ['--cert-file', '/p/server.crt', '--key-file', '/p/server.key', '--trusted-ca-file', '/p/ca.crt', '--client-cert-auth']);
  assert.throws(() => serverTlsArgs(parseMode('tls'), null), /needs certificates/);
  assert.deepEqual(clientSecurity(parseMode('plain'), null), {});
  assert.deepEqual(clientSecurity(parseMode('auth'), null), { auth: { user: 'bench', password: 'bench-pw' } });
  assert.deepEqual(clientSecurity(parseMode('tls'), pki), { tls: { caFile: '/p/ca.crt' } });
  assert.deepEqual(clientSecurity(parseMode('auth+mtls'), pki), {
    tls: { caFile: '/p/ca.crt', certFile: '/p/client.crt', keyFile: '/p/client.key' }, auth: { user: 'bench', password: 'bench-pw' },
  });
});

test('every unary workload keeps its keys under the prefix bench may use', () => {
  const dec = new TextDecoder();
  for (const w of workloads.filter((x) => !x.http && !x.watch && !x.lease && !x.maint)) {
    for (const r of w.setup()) assert.ok(dec.decode(r.body).includes(BENCH_PREFIX), `${w.name} setup`);
    if (w.path.startsWith('/etcdserverpb.KV/')) {
      const body = w.makeGenerator(1)(0);
      // field 1 (key) of Put/Range, or the compare key inside a Txn: the prefix shows up in the bytes.
      assert.ok(Buffer.from(body).includes(Buffer.from(BENCH_PREFIX)), `${w.name} request`);
    }
  }
});

function sample(target: 'concord' | 'etcd', mode: string | undefined, round: number, throughput: number, p99: number, cpu: number): Sample {
  return {
    target, round, clients: 8, ok: throughput, errors: 0, errorSamples: [], throughput,
    latencyUs: { p50: p99 / 4, p90: p99 / 2, p99, p999: p99, max: p99, mean: p99 / 3 }, curve: [],
    serverCpuUsPerOp: cpu, clientCpuUsPerOp: 10, ...(mode !== undefined ? { mode } : {}),
  };
}

test('modeCost: per round, against the plain sample of the same target and round', () => {
  const cell: Cell = {
    workload: 'put-seq', description: '', clients: 8, samples: [
      sample('concord', undefined, 0, 1000, 4000, 100), sample('concord', 'auth', 0, 800, 5000, 130),
      sample('etcd', undefined, 0, 2000, 2000, 50), sample('etcd', 'auth', 0, 1900, 2200, 55),
      sample('concord', 'auth', 1, 900, 4400, 120), sample('concord', undefined, 1, 1000, 4000, 110),
      // A failed measurement (nothing succeeded) pairs with nothing.
      { ...sample('concord', 'auth', 2, 0, 0, 0), ok: 0 }, sample('concord', undefined, 2, 1000, 4000, 100),
    ],
  };
  const c = modeCost(cell, 'concord', 'auth');
  assert.deepEqual(c.extraCpuUs, [30, 10]);
  assert.deepEqual(c.throughput, [0.8, 0.9]);
  assert.deepEqual(c.p99, [1.25, 1.1]);
  const e = modeCost(cell, 'etcd', 'auth');
  assert.deepEqual(e.extraCpuUs, [5]);
  assert.deepEqual(e.throughput, [0.95]);
  assert.deepEqual(modeCost(cell, 'etcd', 'tls'), { extraCpuUs: [], throughput: [], p50: [], p99: [] });

  assert.equal(fmtSpread([30, 10], 1, true), '+20.0 (+10.0..+30.0)');
  assert.equal(fmtSpread([-5], 1, true), '-5.0');
  assert.equal(fmtSpread([], 2), '-');

  const rows = securityCostRows([cell], modesFromArgs({ auth: true, tls: false, mtls: false }), ['concord', 'etcd']);
  assert.deepEqual(rows.map((r) => r.slice(0, 4).join(' ')), [
    'workload clients target mode', 'put-seq 8 concord plain', 'put-seq 8 concord auth', 'put-seq 8 etcd plain', 'put-seq 8 etcd auth',
  ]);
  assert.deepEqual(rows[2]!.slice(9), ['+20.0 (+10.0..+30.0)', '0.85 (0.80..0.90)', '1.18 (1.10..1.25)', '1.18 (1.10..1.25)']);
  assert.deepEqual(rows[1]!.slice(9), ['', '', '', '']);
});

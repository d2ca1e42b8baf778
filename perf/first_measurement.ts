// First throughput measurement (issue #2): put and get, 1 and 64 clients, concord vs real etcd
// on the same machine, driven by h2load (nghttp2-client) so that the load generator is C and
// costs far less per call than any Node gRPC client would (shared/reference/node-stack.md §3c).
//
// Each workload sends one fixed, pre-encoded gRPC request body over and over:
//   put   /etcdserverpb.KV/Put   key "bench/key", 256-byte value
//   get   /etcdserverpb.KV/Range key "bench/key" (linearizable), and serializable
// Servers are fresh, on free loopback ports, run one after the other per workload and round
// (A B A B) to cancel machine drift. Throughput is h2load's req/s; latency its mean. The full
// suite with percentiles (hdr-histogram) is `npm run perf` (issue #3).
//
// Usage: node dist/perf/first_measurement.js [--seconds 5] [--rounds 2]
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { etcdserverpb } from '../src/gen/proto';
import { startConcord } from '../test/helpers/concord';
import { etcdAvailable, startEtcd } from '../test/helpers/etcd';

interface Workload { name: string; path: string; body: Uint8Array; clients: number }

function grpcFrame(msg: Uint8Array): Buffer {
  const b = Buffer.alloc(5 + msg.length);
  b.writeUInt32BE(msg.length, 1);
  b.set(msg, 5);
  return b;
}

function arg(name: string, def: number): number {
  const i = process.argv.indexOf('--' + name);
  return i >= 0 ? Number(process.argv[i + 1]) : def;
}

const value = Buffer.alloc(256, 'v');
const key = Buffer.from('bench/key');
const put = etcdserverpb.PutRequest.encode({ key, value }).finish();
const getL = etcdserverpb.RangeRequest.encode({ key }).finish();
const getS = etcdserverpb.RangeRequest.encode({ key, serializable: true }).finish();

function workloads(): Workload[] {
  const out: Workload[] = [];
  for (const clients of [1, 64]) {
    out.push({ name: `put c=${clients}`, path: '/etcdserverpb.KV/Put', body: put, clients });
    out.push({ name: `get(linearizable) c=${clients}`, path: '/etcdserverpb.KV/Range', body: getL, clients });
    out.push({ name: `get(serializable) c=${clients}`, path: '/etcdserverpb.KV/Range', body: getS, clients });
  }
  return out;
}

interface Result { rps: number; meanMs: number }

function h2load(address: string, w: Workload, seconds: number, tmp: string): Result {
  const bodyFile = path.join(tmp, 'body.bin');
  fs.writeFileSync(bodyFile, grpcFrame(w.body));
  const out = execFileSync('h2load', [
    '-c', String(w.clients), '-m', '1', '-t', '1', '-D', String(seconds),
    '-H', 'content-type: application/grpc', '-H', 'te: trailers',
    '-d', bodyFile, `http://${address}${w.path}`,
  ], { encoding: 'utf8' });
  const rps = Number(/finished in [^,]+, ([\d.]+) req\/s/.exec(out)?.[1] ?? NaN);
  const mean = /time for request:\s+\S+\s+\S+\s+(\S+)/.exec(out)?.[1] ?? 'NaN';
  const meanMs = mean.endsWith('us') ? parseFloat(mean) / 1000 : mean.endsWith('ms') ? parseFloat(mean) : parseFloat(mean) * 1000;
  const failed = Number(/(\d+) failed/.exec(out)?.[1] ?? 0);
  if (failed > 0) throw new Error(`${w.name}: ${failed} requests failed\n${out}`);
  return { rps, meanMs };
}

async function main(): Promise<void> {
  const seconds = arg('seconds', 5);
  const rounds = arg('rounds', 2);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'concord-perf-'));
  const withEtcd = etcdAvailable();
  const rows: { name: string; concord: Result[]; etcd: Result[] }[] = [];
  for (const w of workloads()) rows.push({ name: w.name, concord: [], etcd: [] });
  try {
    for (let round = 0; round < rounds; round++) {
      const ws = workloads();
      for (let i = 0; i < ws.length; i++) {
        const w = ws[i]!;
        const c = await startConcord();
        try { rows[i]!.concord.push(h2load(c.address, w, seconds, tmp)); } finally { await c.stop(); }
        if (withEtcd) {
          const e = await startEtcd();
          try { rows[i]!.etcd.push(h2load(e.address, w, seconds, tmp)); } finally { await e.stop(); }
        }
      }
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  const med = (xs: number[]): number => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
  console.log(`machine: ${os.cpus().length} x ${os.cpus()[0]?.model}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.version}`);
  console.log(`h2load ${seconds}s per run, ${rounds} rounds, median shown`);
  console.log('| workload | concord req/s | concord mean ms | etcd req/s | etcd mean ms | concord/etcd |');
  console.log('|---|---|---|---|---|---|');
  for (const r of rows) {
    const cr = med(r.concord.map((x) => x.rps));
    const cm = med(r.concord.map((x) => x.meanMs));
    const er = med(r.etcd.map((x) => x.rps));
    const em = med(r.etcd.map((x) => x.meanMs));
    console.log(`| ${r.name} | ${cr.toFixed(0)} | ${cm.toFixed(3)} | ${er.toFixed(0)} | ${em.toFixed(3)} | ${(cr / er).toFixed(2)} |`);
  }
}

void main();

// The benchmark workloads: what each one sends, and what it needs stored first.
//
// A workload is a gRPC method plus a request generator. The generator runs in the load
// generator processes (perf/loadgen.ts) and must be cheap: it encodes one small protobuf per
// call (~1 µs), which is far below what the HTTP/2 client costs per request.
import { etcdserverpb } from '../src/gen/proto';
import { Prng } from '../src/util/prng';
import { prefixEnd } from '../src/util/prefix_end';

export interface Workload {
  name: string;
  /** What the table says about it. */
  description: string;
  /** gRPC method path, e.g. '/etcdserverpb.KV/Put'. */
  path: string;
  /** Request bodies: `next(seq)` returns the protobuf bytes of request number `seq`. */
  makeGenerator(seed: number): (seq: number) => Uint8Array;
  /** Requests to send once (sequentially) before measuring. */
  setup(): { path: string; body: Uint8Array }[];
  /** HTTP/JSON gateway workloads: driven by autocannon instead of the gRPC load generator. */
  http?: { path: string; body: string };
  /** Mixed workloads: some requests go to another method. */
  mixed?: { path: string; fraction: number; makeGenerator(seed: number): (seq: number) => Uint8Array };
  /** Watch fan-out workloads (perf/watch.ts); their sweep is over watcher counts, not clients. */
  watch?: WatchSpec;
  /** Lease workloads measured by perf/lease.ts; their sweep is over lease counts, not clients. */
  lease?: LeaseSpec;
  /**
   * Maintenance workloads measured by perf/maintenance.ts (put latency around Defragment, or
   * HashKV/Snapshot/Hash); their sweep is one database size in MiB (--defrag-mib, --maint-mib).
   */
  maint?: { kind: 'defrag' | 'maintenance' };
  /** --quick: the client counts of this workload (when --clients is not given). */
  quickClients?: number[];
  /** false: left out of --quick unless named with --workloads (keeps the CI smoke run short). */
  inQuick?: boolean;
}

export interface LeaseSpec {
  kind: 'keepalive' | 'expiry';
  /** Lease counts swept (full run, and --quick); --keepalive-leases / --expiry-leases override. */
  sizes: number[];
  quickSizes: number[];
}

export interface WatchSpec {
  /** Watcher counts swept (full run, and --quick). */
  watchers: number[];
  quickWatchers: number[];
  /** The writer's puts per second at W watchers; 0 = closed loop with `inflight` puts outstanding. */
  rate(watchers: number): number;
  /** Closed loop: concurrent puts. Paced: cap on outstanding puts (beyond it sends are skipped and counted). */
  inflight: number;
  /** Watches per Watch stream, streams per HTTP/2 connection. */
  perStream: number;
  streamsPerConn: number;
}

export const VALUE_BYTES = 256;
const value = new Uint8Array(VALUE_BYTES).fill(0x76);
const enc = new TextEncoder();
/** Keys of the random-key workloads are drawn from this many distinct keys. */
export const KEY_SPACE = 100_000;

function putBody(key: string): Uint8Array {
  return etcdserverpb.PutRequest.encode({ key: enc.encode(key), value }).finish();
}

const hot = 'bench/key';
const prefix100 = enc.encode('bench/p/');
const rangeL = etcdserverpb.RangeRequest.encode({ key: enc.encode(hot) }).finish();
const rangeS = etcdserverpb.RangeRequest.encode({ key: enc.encode(hot), serializable: true }).finish();
const range100 = etcdserverpb.RangeRequest.encode({ key: prefix100, range_end: prefixEnd(prefix100) }).finish();
const range100S = etcdserverpb.RangeRequest.encode({ key: prefix100, range_end: prefixEnd(prefix100), serializable: true }).finish();

const seedHot = (): { path: string; body: Uint8Array }[] => [{ path: '/etcdserverpb.KV/Put', body: putBody(hot) }];
const seed100 = (): { path: string; body: Uint8Array }[] => {
  const out = [];
  for (let i = 0; i < 100; i++) out.push({ path: '/etcdserverpb.KV/Put', body: putBody(`bench/p/${String(i).padStart(3, '0')}`) });
  return out;
};

/** Compare-and-swap on one of 1,000 keys: if value == current then put new value. */
function casGenerator(seed: number): (seq: number) => Uint8Array {
  const prng = new Prng(seed);
  return () => {
    const key = enc.encode(`bench/cas/${prng.int(1000)}`);
    return etcdserverpb.TxnRequest.encode({
      compare: [{ key, target: etcdserverpb.Compare.CompareTarget.VALUE, result: etcdserverpb.Compare.CompareResult.EQUAL, value }],
      success: [{ request_put: { key, value } }],
      failure: [{ request_range: { key } }],
    }).finish();
  };
}

export const workloads: Workload[] = [
  {
    name: 'put-seq',
    description: 'Put, sequential keys, 256-byte values',
    path: '/etcdserverpb.KV/Put',
    makeGenerator: (seed) => (seq) => putBody(`bench/seq/${seed}/${seq}`),
    setup: () => [],
  },
  {
    name: 'put-rand',
    description: `Put, random keys (${KEY_SPACE} key space), 256-byte values`,
    path: '/etcdserverpb.KV/Put',
    makeGenerator: (seed) => {
      const prng = new Prng(seed);
      return () => putBody(`bench/rand/${prng.int(KEY_SPACE)}`);
    },
    setup: () => [],
  },
  {
    name: 'range-lin',
    description: 'Range one key, linearizable',
    path: '/etcdserverpb.KV/Range',
    makeGenerator: () => () => rangeL,
    setup: seedHot,
  },
  {
    name: 'range-ser',
    description: 'Range one key, serializable',
    path: '/etcdserverpb.KV/Range',
    makeGenerator: () => () => rangeS,
    setup: seedHot,
  },
  {
    name: 'range-100-lin',
    description: 'Range a 100-key prefix, linearizable',
    path: '/etcdserverpb.KV/Range',
    makeGenerator: () => () => range100,
    setup: seed100,
  },
  {
    name: 'range-100-ser',
    description: 'Range a 100-key prefix, serializable',
    path: '/etcdserverpb.KV/Range',
    makeGenerator: () => () => range100S,
    setup: seed100,
  },
  {
    name: 'txn-cas',
    description: 'Txn compare-and-swap (value == v ? put : range) on 1,000 keys',
    path: '/etcdserverpb.KV/Txn',
    makeGenerator: casGenerator,
    setup: () => {
      const out = [];
      for (let i = 0; i < 1000; i++) out.push({ path: '/etcdserverpb.KV/Put', body: putBody(`bench/cas/${i}`) });
      return out;
    },
  },
  {
    name: 'mixed-read-heavy',
    description: '90% serializable+linearizable Range of one key, 10% Put random keys',
    path: '/etcdserverpb.KV/Range',
    makeGenerator: (seed) => {
      const prng = new Prng(seed);
      return () => (prng.int(2) === 0 ? rangeL : rangeS);
    },
    setup: seedHot,
    mixed: {
      path: '/etcdserverpb.KV/Put',
      fraction: 0.1,
      makeGenerator: (seed) => {
        const prng = new Prng(seed ^ 0x5bd1e995);
        return () => putBody(`bench/rand/${prng.int(KEY_SPACE)}`);
      },
    },
  },
];

const b64 = (s: string): string => Buffer.from(s).toString('base64');
workloads.push(
  {
    name: 'http-range',
    description: 'HTTP/JSON gateway: POST /v3/kv/range one key (autocannon)',
    path: '/etcdserverpb.KV/Range',
    makeGenerator: () => () => rangeL,
    setup: seedHot,
    http: { path: '/v3/kv/range', body: JSON.stringify({ key: b64(hot) }) },
  },
  {
    name: 'http-put',
    description: 'HTTP/JSON gateway: POST /v3/kv/put one key, 256-byte value (autocannon)',
    path: '/etcdserverpb.KV/Put',
    makeGenerator: () => () => putBody(hot),
    setup: () => [],
    http: { path: '/v3/kv/put', body: JSON.stringify({ key: b64(hot), value: Buffer.from(value).toString('base64') }) },
  },
);

// Watch fan-out (issue #4). Every watcher watches the whole bench/w/ prefix, so one put is W
// events; perf/watchgen.ts has the protocol and the checks.
const watchPlumbing = (): [] => [];
workloads.push(
  {
    name: 'watch-fanout',
    description: 'Watch fan-out: W watchers on one prefix (100 per stream, 10 streams per connection), one writer paced at ' +
      'min(1,000, 100,000/W) puts/s, 32-byte values: ~100k events/s at W >= 100; latency = put sent -> event received',
    path: '/etcdserverpb.Watch/Watch',
    makeGenerator: () => () => new Uint8Array(0),
    setup: watchPlumbing,
    watch: {
      watchers: [1, 100, 1000, 10000], quickWatchers: [100],
      rate: (w) => Math.min(1000, 100_000 / w), inflight: 1000, perStream: 100, streamsPerConn: 10,
    },
  },
  {
    name: 'watch-max',
    description: 'Watch fan-out, writer as fast as it goes (16 puts in flight): W watchers on one prefix; events/s delivered, ' +
      'put latency while watched',
    path: '/etcdserverpb.Watch/Watch',
    makeGenerator: () => () => new Uint8Array(0),
    setup: watchPlumbing,
    watch: { watchers: [1, 10, 100], quickWatchers: [10], rate: () => 0, inflight: 16, perStream: 100, streamsPerConn: 10 },
  },
);

// Leases (issues #3, #5). lease-grant is a plain unary workload; the other two are measured by
// perf/lease.ts with perf/leasegen.ts processes.
/** TTL of lease-grant's leases: none expires during a sweep (and none gets checkpoints: <= 5 min). */
export const GRANT_TTL_S = 120;
const grantBody = etcdserverpb.LeaseGrantRequest.encode({ TTL: GRANT_TTL_S }).finish();
workloads.push(
  {
    name: 'lease-grant',
    description: `LeaseGrant, TTL ${GRANT_TTL_S} s, server-chosen IDs (the leases stay alive for the rest of the sweep)`,
    path: '/etcdserverpb.Lease/LeaseGrant',
    makeGenerator: () => () => grantBody,
    setup: () => [],
    // The quick run has LeaseGrant at 64 in flight already: lease-mass-expiry's grant phase.
    quickClients: [64],
    inQuick: false,
  },
  {
    name: 'lease-keepalive',
    description: 'LeaseKeepAlive: N leases (TTL 60 s) kept alive as fast as they go over 8 bidi streams (2 per connection), ' +
      '16 requests in flight per stream; latency = request sent -> response read',
    path: '/etcdserverpb.Lease/LeaseKeepAlive',
    makeGenerator: () => () => new Uint8Array(0),
    setup: () => [],
    lease: { kind: 'keepalive', sizes: [1000, 10000], quickSizes: [1000] },
  },
  {
    name: 'lease-mass-expiry',
    description: 'N leases granted (64 in flight) to expire together, a key attached to N/10 of them, 16 put clients ' +
      'meanwhile: put latency before, during and after the mass expiry, and the time until all leases are gone',
    path: '/etcdserverpb.Lease/LeaseGrant',
    makeGenerator: () => () => new Uint8Array(0),
    setup: () => [],
    lease: { kind: 'expiry', sizes: [100_000], quickSizes: [500] },
  },
);

// Maintenance (issue #13): put latency while the server defragments, hashes or streams a snapshot.
workloads.push(
  {
    name: 'defrag',
    description: 'S MiB of 8,000-byte values, half deleted and compacted; 16 put clients; one Defragment after a baseline window: ' +
      'its duration, db size before/after, put latency and the longest pause before, during and after it',
    path: '/etcdserverpb.Maintenance/Defragment',
    makeGenerator: () => () => new Uint8Array(0),
    setup: () => [],
    maint: { kind: 'defrag' },
  },
  {
    name: 'maintenance',
    description: 'S MiB of 8,000-byte values; 16 put clients; a baseline window, then HashKV, Snapshot (streamed to the end) and Hash ' +
      'back to back for a window each: put latency and the longest pause in each phase',
    path: '/etcdserverpb.Maintenance/HashKV',
    makeGenerator: () => () => new Uint8Array(0),
    setup: () => [],
    maint: { kind: 'maintenance' },
  },
);

export function workloadByName(name: string): Workload {
  const w = workloads.find((x) => x.name === name);
  if (w === undefined) throw new Error(`unknown workload ${name} (known: ${workloads.map((x) => x.name).join(', ')})`);
  return w;
}

// Both ways a unary call can be served answer the same: the fast path (node:http2 stream
// handled by concord, the default) and grpc-js's own call handling (CONCORD_GRPC_FAST_PATH=0).
// Streaming methods always go to grpc-js on the same connection.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { startConcord, type ConcordHandle } from '../helpers/concord';
import { bytes, collect, connect, num, openStream, str, unary } from '../helpers/grpc_client';

interface Outcome { ok?: unknown; code?: number; details?: string }

async function scenario(endpoint: string): Promise<Outcome[]> {
  const kv = connect('etcdserverpb.KV', endpoint);
  const out: Outcome[] = [];
  const run = async (p: Promise<unknown>, pick: (r: never) => unknown): Promise<void> => {
    try {
      out.push({ ok: pick((await p) as never) });
    } catch (err) {
      const e = err as grpc.ServiceError;
      out.push({ code: e.code, details: e.details });
    }
  };
  try {
    await run(unary(kv, 'Put', { key: bytes('a'), value: bytes('1') }), (r: { header: { revision: number } }) => num(r.header.revision));
    await run(unary(kv, 'Range', { key: bytes('a') }), (r: { kvs: { value: Uint8Array }[] }) => str(r.kvs[0]!.value));
    await run(unary(kv, 'Range', { key: bytes('') }), () => 'unexpected');
    await run(unary(kv, 'Range', { key: bytes('a'), revision: 99 }), () => 'unexpected');
    await run(unary(kv, 'Put', { key: bytes('big'), value: new Uint8Array(2 * 1024 * 1024) }), () => 'unexpected');
    // A unary method not built yet, and a streaming one (grpc-js on the same connection).
    const maintenance = connect('etcdserverpb.Maintenance', endpoint);
    await run(unary(maintenance, 'Downgrade', { action: 0, version: '3.5.0' }), () => 'unexpected');
    maintenance.close();
    // Raw bytes that do not parse.
    const raw = new grpc.Client(endpoint.replace('http://', ''), grpc.credentials.createInsecure());
    await run(new Promise((resolve, reject) => {
      raw.makeUnaryRequest('/etcdserverpb.KV/Range', (x: Buffer) => x, (x: Buffer) => x, Buffer.from([0x0a, 0x05, 0x61]),
        (err, v) => (err ? reject(err) : resolve(v)));
    }), () => 'unexpected');
    raw.close();
  } finally {
    kv.close();
  }
  return out;
}

describe('unary calls: fast path and grpc-js path agree', () => {
  let fast: ConcordHandle | undefined;
  let slow: ConcordHandle | undefined;
  before(async () => {
    [fast, slow] = await Promise.all([startConcord(), startConcord({ env: { CONCORD_GRPC_FAST_PATH: '0' } })]);
  });
  after(async () => {
    await Promise.all([fast?.stop(), slow?.stop()]);
  });

  test('same answers and errors', async () => {
    const a = await scenario(fast!.endpoint);
    const b = await scenario(slow!.endpoint);
    assert.deepEqual(a, b);
    assert.deepEqual(a[0], { ok: 2 });
    assert.deepEqual(a[1], { ok: '1' });
    assert.deepEqual(a[2], { code: grpc.status.INVALID_ARGUMENT, details: 'etcdserver: key is not provided' });
    assert.deepEqual(a[3], { code: grpc.status.OUT_OF_RANGE, details: 'etcdserver: mvcc: required revision is a future revision' });
    assert.equal(a[4]!.code, grpc.status.RESOURCE_EXHAUSTED);
    assert.equal(a[5]!.code, grpc.status.UNIMPLEMENTED);
    assert.equal(a[6]!.code, grpc.status.INTERNAL);
  });

  test('a streaming method the fast path does not serve reaches grpc-js on the same connection', async () => {
    const maintenance = connect('etcdserverpb.Maintenance', fast!.endpoint);
    try {
      // Maintenance.Snapshot is server-streaming: grpc-js serves it (a body, then its SHA-256).
      const rs = await collect(maintenance, 'Snapshot', {});
      assert.ok(rs.length >= 2);
      assert.equal(rs[rs.length - 1]!.blob.length, 32);
    } finally {
      maintenance.close();
    }
  });

  test('Watch and LeaseKeepAlive streams agree on both paths (fast path framing, grpc-js framing)', async () => {
    for (const server of [fast!, slow!]) {
      const watch = connect('etcdserverpb.Watch', server.endpoint);
      const lease = connect('etcdserverpb.Lease', server.endpoint);
      const kv = connect('etcdserverpb.KV', server.endpoint);
      try {
        const { call, reader } = openStream(watch, 'Watch');
        call.write({ create_request: { key: bytes('w'), prev_kv: true } });
        assert.equal((await reader.next()).created, true);
        await unary(kv, 'Put', { key: bytes('w'), value: bytes('1') });
        await unary(kv, 'Put', { key: bytes('w'), value: bytes('2') });
        const got: string[] = [];
        while (got.length < 2) {
          for (const e of (await reader.next()).events) got.push(`${str(e.kv!.value)}<-${e.prev_kv ? str(e.prev_kv.value) : ''}`);
        }
        assert.deepEqual(got, ['1<-', '2<-1']);
        call.end();
        const g = await unary(lease, 'LeaseGrant', { ID: 77, TTL: 30 });
        assert.equal(num(g.TTL), 30);
        const ka = openStream(lease, 'LeaseKeepAlive');
        ka.call.write({ ID: 77 });
        ka.call.write({ ID: 78 });
        assert.deepEqual([num((await ka.reader.next()).TTL), num((await ka.reader.next()).TTL)], [30, 0]);
        ka.call.end();
        await new Promise<void>((resolve) => ka.call.on('status', () => resolve()));
      } finally {
        watch.close();
        lease.close();
        kv.close();
      }
    }
  });
});

// 64-bit fields of watch and lease requests at their extremes, against real etcd: they must be
// answered as etcd answers them, and never stop the server (an int64 watch_id or start_revision
// once tripped an assertion on the main thread).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { etcdSkipReason, startEtcd, type EtcdHandle } from '../helpers/etcd';
import { startConcord, type ConcordHandle } from '../helpers/concord';
import { bytes, connect, long, openStream, unary } from '../helpers/grpc_client';

type Shape = Record<string, unknown>;

/** The answers of one scenario on one server, with ids and terms left out. */
async function scenario(endpoint: string): Promise<Shape[]> {
  const out: Shape[] = [];
  const watch = connect('etcdserverpb.Watch', endpoint);
  const kv = connect('etcdserverpb.KV', endpoint);
  const lease = connect('etcdserverpb.Lease', endpoint);
  try {
    const { call, reader } = openStream(watch, 'Watch');
    const shape = (r: { watch_id: unknown; created: boolean; canceled: boolean; compact_revision: unknown; cancel_reason: string; events: unknown[]; header?: { revision?: unknown } | null }): Shape => ({
      watch_id: String(r.watch_id), created: r.created, canceled: r.canceled, compact_revision: String(r.compact_revision),
      cancel_reason: r.cancel_reason, events: r.events.length, revision: String(r.header?.revision ?? 0),
    });
    const requests = [
      { create_request: { key: bytes('a'), start_revision: long('9223372036854775807') } },
      { create_request: { key: bytes('b'), watch_id: long('9223372036854775807') } },
      { create_request: { key: bytes('c'), watch_id: long('-9223372036854775808') } },
      { create_request: { key: bytes('d'), watch_id: long('9007199254740993') } },
      { create_request: { key: bytes('e'), start_revision: long('-9223372036854775808') } },
    ];
    for (const r of requests) {
      call.write(r);
      out.push(shape(await reader.next()));
    }
    out.push(...(await reader.drain(400)).map(shape)); // the start below every compaction is cancelled
    await unary(kv, 'Put', { key: bytes('b'), value: bytes('1') });
    await unary(kv, 'Put', { key: bytes('d'), value: bytes('1') });
    out.push(...(await reader.drain(300)).map(shape).sort((x, y) => String(x.watch_id).localeCompare(String(y.watch_id))));
    call.write({ cancel_request: { watch_id: long('9223372036854775807') } });
    call.write({ cancel_request: { watch_id: long('-9223372036854775808') } });
    out.push(...(await reader.drain(300)).map(shape));
    call.end();
    for (const req of [{ ID: long('9223372036854775807'), TTL: 10 }, { ID: long('7'), TTL: long('9223372036854775807') }]) {
      out.push(await unary(lease, 'LeaseGrant', req).then((g) => ({ ID: String(g.ID), TTL: String(g.TTL) }), (e: { code: number; details: string }) => ({ code: e.code, details: e.details })));
    }
    const ttl = await unary(lease, 'LeaseTimeToLive', { ID: long('-9223372036854775808') });
    out.push({ TTL: String(ttl.TTL) });
    out.push({ alive: String((await unary(kv, 'Range', { key: bytes('b') })).count) });
  } finally {
    watch.close();
    kv.close();
    lease.close();
  }
  return out;
}

describe('int64 extremes in watch and lease requests', { skip: etcdSkipReason() }, () => {
  let etcd: EtcdHandle | undefined;
  let concord: ConcordHandle | undefined;
  before(async () => {
    // Both are kept even if one fails to start, so after() stops whichever did.
    const [e, c] = await Promise.allSettled([startEtcd(), startConcord()]);
    if (e.status === 'fulfilled') etcd = e.value;
    if (c.status === 'fulfilled') concord = c.value;
    if (e.status === 'rejected') throw e.reason;
    if (c.status === 'rejected') throw c.reason;
  });
  after(async () => {
    await Promise.all([etcd?.stop(), concord?.stop()]);
  });

  test('same answers as etcd, and the server stays up', async () => {
    const [want, got] = await Promise.all([scenario(etcd!.endpoint), scenario(concord!.endpoint)]);
    assert.deepEqual(got, want);
  });
});

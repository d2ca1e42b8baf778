// The watch paths that only run under overload, forced here:
//  - the event ring overflows (a tiny ring, CONCORD_WATCH_RING_BYTES): the storage worker drops
//    records, the watch worker sees the gap and catches up from LMDB;
//  - a client stops reading: its stream exceeds limits.watchStreamBytesMax, its watchers fall
//    back to history (etcd's victims) while writers and other streams go on, and it gets every
//    event, in order, once it reads again.
// Both check the delivered sequence against what the writes returned: every revision once, in
// order, with the right value.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { startConcord } from '../helpers/concord';
import { bytes, connect, num, openStream, prefixEnd, str, unary } from '../helpers/grpc_client';

interface Written { rev: number; key: string; value: string }

async function writeMany(kv: ReturnType<typeof connect<'etcdserverpb.KV'>>, prefix: string, count: number,
  valueBytes: number, parallel: number): Promise<Written[]> {
  const out: Written[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) {
      const i = next++;
      const key = `${prefix}${i % 50}`;
      const value = `${i}:`.padEnd(valueBytes, 'x');
      const r = await unary(kv, 'Put', { key: bytes(key), value: bytes(value) });
      out.push({ rev: num(r.header!.revision), key, value });
    }
  };
  await Promise.all(Array.from({ length: parallel }, worker));
  return out.sort((a, b) => a.rev - b.rev);
}

type Event = { rev: number; key: string; value: string };

function eventsOf(resp: { events?: { kv?: { mod_revision?: unknown; key?: Uint8Array | null; value?: Uint8Array | null } | null }[] | null }): Event[] {
  return (resp.events ?? []).map((e) => ({
    rev: num(e.kv!.mod_revision as number), key: str(e.kv!.key), value: str(e.kv!.value),
  }));
}

describe('watch under overload', () => {
  test('event ring overflow: the watch worker catches up from LMDB, nothing lost', async (t) => {
    const c = await startConcord({ env: { CONCORD_WATCH_RING_BYTES: '4096' } });
    t.after(() => c.stop());
    const kv = connect('etcdserverpb.KV', c.endpoint);
    const watch = connect('etcdserverpb.Watch', c.endpoint);
    t.after(() => { kv.close(); watch.close(); });
    const { call, reader } = openStream(watch, 'Watch');
    t.after(() => call.cancel());
    call.write({ create_request: { key: bytes('ring/'), range_end: prefixEnd('ring/') } });
    const created = await reader.next();
    assert.equal(created.created, true);
    // 1 KiB values, 8 writers: a 4 KiB ring holds at most one revision record at a time.
    const written = await writeMany(kv, 'ring/', 600, 1024, 8);
    const got: Event[] = [];
    while (got.length < written.length) got.push(...eventsOf(await reader.next(5000)));
    assert.deepEqual(got, written.map((w) => ({ rev: w.rev, key: w.key, value: w.value })));
    assert.deepEqual(await reader.drain(300), [], 'nothing after the last write');
    // The overflow did happen (otherwise this test proves nothing).
    const metrics = await (await fetch(`${c.endpoint}/metrics`)).text();
    const gaps = /concord_watch_ring_gaps_total (\d+)/.exec(metrics);
    assert.ok(gaps !== null && Number(gaps[1]) > 0, `ring gaps expected, metrics say ${gaps?.[0]}`);
  });

  test('a client that stops reading falls back to history; writers and other streams go on', async (t) => {
    const c = await startConcord();
    t.after(() => c.stop());
    const kv = connect('etcdserverpb.KV', c.endpoint);
    // Separate channels: a paused HTTP/2 connection must not hold up the other stream.
    // History responses carry up to 1,000 revisions (etcd's watchBatchMaxRevs), here ~8 MB: no
    // receive limit, as etcd's Go client sets (math.MaxInt32).
    const unlimited = { 'grpc.max_receive_message_length': -1 };
    const slowClient = connect('etcdserverpb.Watch', c.endpoint, unlimited);
    const fastClient = connect('etcdserverpb.Watch', c.endpoint, unlimited);
    t.after(() => { kv.close(); slowClient.close(); fastClient.close(); });
    const slow = openStream(slowClient, 'Watch');
    const fast = openStream(fastClient, 'Watch');
    t.after(() => { slow.call.cancel(); fast.call.cancel(); });
    for (const s of [slow, fast]) {
      s.call.write({ create_request: { key: bytes('slow/'), range_end: prefixEnd('slow/') } });
      assert.equal((await s.reader.next()).created, true);
    }
    slow.call.pause(); // stop reading: HTTP/2 flow control stops the server's writes
    // 12 MiB of events: three times limits.watchStreamBytesMax.
    const written = await writeMany(kv, 'slow/', 1500, 8192, 16);
    const fastGot: Event[] = [];
    while (fastGot.length < written.length) fastGot.push(...eventsOf(await fast.reader.next(5000)));
    const want = written.map((w) => ({ rev: w.rev, key: w.key, value: w.value }));
    assert.deepEqual(fastGot, want);
    const metrics = await (await fetch(`${c.endpoint}/metrics`)).text();
    const slowWatchers = /etcd_debugging_mvcc_slow_watcher_total (\d+)/.exec(metrics);
    assert.ok(slowWatchers !== null && Number(slowWatchers[1]) >= 1, `a slow watcher expected: ${slowWatchers?.[0]}`);
    slow.call.resume();
    const slowGot: Event[] = [];
    while (slowGot.length < written.length) slowGot.push(...eventsOf(await slow.reader.next(10_000)));
    assert.deepEqual(slowGot, want);
  });
});

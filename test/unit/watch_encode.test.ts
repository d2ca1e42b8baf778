// watch/encode.ts writes WatchResponses by hand (stored KeyValue bytes spliced in); protobufjs
// must read back exactly what was meant, and size() must be the encoded length (fragmenting
// depends on it).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { etcdserverpb, mvccpb } from '../../src/gen/proto';
import { FrameBuffer, WatchResponseEncoder, type OutEvent, type ResponseFields } from '../../src/watch/encode';
import { keyOfKeyValue } from '../../src/watch/events';

const kv = (key: string, value: string, rev: number): Uint8Array => mvccpb.KeyValue.encode({
  key: Buffer.from(key, 'latin1'), value: Buffer.from(value), create_revision: 2, mod_revision: rev, version: 3, lease: 0x1234,
}).finish();

test('encoded WatchResponses decode to the fields given', () => {
  const enc = new WatchResponseEncoder('18446744073709551615', '9223372036854775807', 7);
  const events: OutEvent[] = [
    { kv: kv('a', 'x'.repeat(300), 5), tombstone: false, prevKv: kv('a', 'old', 4) },
    { kv: mvccpb.KeyValue.encode({ key: Buffer.from('b'), mod_revision: 5 }).finish(), tombstone: true, prevKv: null },
  ];
  const cases: ResponseFields[] = [
    { revision: 5, watchId: 0 },
    { revision: 5, watchId: 3, created: true },
    { revision: 1, watchId: -1, created: true, canceled: true, cancelReason: 'mvcc: duplicate watch ID provided on the WatchStream' },
    { revision: 0, watchId: 12, canceled: true, compactRevision: 1 << 40 },
    { revision: 2 ** 50, watchId: 2 ** 40, fragment: true },
  ];
  for (const f of cases) {
    for (const evs of [[], events]) {
      const bytes = enc.encode(f, evs);
      assert.equal(bytes.length, enc.size(f, evs));
      const r = etcdserverpb.WatchResponse.decode(bytes);
      assert.equal(String(r.header!.cluster_id), '18446744073709551615');
      assert.equal(String(r.header!.member_id), '9223372036854775807');
      assert.equal(Number(r.header!.revision), f.revision);
      assert.equal(Number(r.header!.raft_term), 7);
      assert.equal(Number(String(r.watch_id)), f.watchId);
      assert.equal(r.created, f.created ?? false);
      assert.equal(r.canceled, f.canceled ?? false);
      assert.equal(Number(r.compact_revision), f.compactRevision ?? 0);
      assert.equal(r.cancel_reason, f.cancelReason ?? '');
      assert.equal(r.fragment, f.fragment ?? false);
      assert.equal(r.events.length, evs.length);
      for (let i = 0; i < evs.length; i++) {
        const e = r.events[i]!;
        assert.equal(e.type, evs[i]!.tombstone ? mvccpb.Event.EventType.DELETE : mvccpb.Event.EventType.PUT);
        assert.deepEqual(mvccpb.KeyValue.encode(e.kv!).finish(), evs[i]!.kv);
        if (evs[i]!.prevKv === null) assert.equal(e.prev_kv, null);
        else assert.deepEqual(mvccpb.KeyValue.encode(e.prev_kv!).finish(), evs[i]!.prevKv);
      }
    }
  }
  // A slice of the events: [from, to).
  const f = { revision: 9, watchId: 1 };
  const part = etcdserverpb.WatchResponse.decode(enc.encode(f, events, 1, 2));
  assert.equal(part.events.length, 1);
  assert.equal(part.events[0]!.type, mvccpb.Event.EventType.DELETE);
});

test('keyOfKeyValue reads field 1 whatever the field order', () => {
  assert.equal(keyOfKeyValue(kv('\u00ff\u0000k', 'v', 3)), '\u00ff\u0000k');
  // lease (field 6) and value (field 5) first, key last
  const w = mvccpb.KeyValue.encode({ lease: 99, value: Buffer.from('zz') }).finish();
  const keyField = Buffer.from([0x0a, 2, 0x6b, 0x31]);
  assert.equal(keyOfKeyValue(Buffer.concat([w, keyField])), 'k1');
  assert.equal(keyOfKeyValue(new Uint8Array(0)), '');
});

test('framed responses in a FrameBuffer: gRPC prefix, same bytes as encode()', () => {
  const enc = new WatchResponseEncoder('1', '2', 3);
  const out = new FrameBuffer(8); // grows
  const events: OutEvent[] = [{ kv: kv('a', 'v'.repeat(100), 5), tombstone: false, prevKv: null }];
  const f = { revision: 5, watchId: 7 };
  const n1 = enc.frame(out, f, events);
  const n2 = enc.frameWithEvents(out, { revision: 6, watchId: 8 }, enc.eventsSegment(events));
  assert.equal(out.count, 2);
  assert.equal(out.pos, n1 + n2);
  const first = enc.encode(f, events);
  assert.equal(out.buf[0], 0);
  assert.equal(out.buf.readUInt32BE(1), first.length);
  assert.deepEqual(out.buf.subarray(5, 5 + first.length), first);
  const second = etcdserverpb.WatchResponse.decode(out.buf.subarray(n1 + 5, n1 + n2));
  assert.equal(Number(String(second.watch_id)), 8);
  assert.equal(second.events.length, 1);
});

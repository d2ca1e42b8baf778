// mvcc/hash.ts without a server. Goal: etcd's HashKV values for a known history, whatever the
// progress of a compaction sweep, and etcd's record bytes. Method: records encoded as concord's
// kvstore.ts stores them, in an in-memory source; expected values from etcd 3.4.23 for the same
// history (etcdctl put a 1; put b 2; put a 3; del b; put c ""; compact 3; endpoint hashkv).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { mvccpb } from '../../src/gen/proto';
import { etcdValueBytes, hashKv, type RevisionSource } from '../../src/mvcc/hash';
import * as schema from '../../src/storage/schema';
import { crc32c } from '../../src/util/crc32c';

interface Rec { key: Buffer; value: Uint8Array }

function put(main: number, sub: number, key: string, value: string, create: number, version: number, lease = 0): Rec {
  const v = mvccpb.KeyValue.encode({ key: Buffer.from(key), create_revision: create, mod_revision: main, version, value: Buffer.from(value), lease }).finish();
  return { key: schema.revKey(main, sub, false), value: v };
}

function del(main: number, sub: number, key: string): Rec {
  return { key: schema.revKey(main, sub, true), value: mvccpb.KeyValue.encode({ key: Buffer.from(key), mod_revision: main }).finish() };
}

function source(recs: Rec[]): RevisionSource {
  return {
    forEach(from, to, visit) {
      for (const r of recs) {
        const main = schema.revKeyMain(r.key);
        if (main >= from && main <= to) visit(r.key, r.value);
      }
    },
  };
}

const history = [
  put(2, 0, 'a', '1', 2, 1),
  put(3, 0, 'b', '2', 3, 1),
  put(4, 0, 'a', '3', 2, 2),
  del(5, 0, 'b'),
  put(6, 0, 'c', '', 6, 1),
];
// A compaction at 3 removes nothing here: a@2 and b@3 are each the newest of their key at 3.
const swept = history;
// etcd 3.4.23's answers for that history compacted at 3.
const etcdAt = new Map([[6, 323977103], [5, 1468967122], [4, 1107643163]]);

test('hashKv: etcd 3.4 values, before and after the sweep', () => {
  for (const [rev, want] of etcdAt) {
    assert.equal(hashKv(source(history), rev, 3).hash, want, `rev ${rev}, unswept`);
    assert.equal(hashKv(source(swept), rev, 3).hash, want, `rev ${rev}, swept`);
  }
  // An empty store: the bucket name only.
  assert.equal(hashKv(source([]), 1, -1).hash, crc32c(Buffer.from('key')));
});

test('hashKv: a sweep half done gives the value of the finished one', () => {
  // k: 2, 3, 4 (tombstone), 5; j: 6, 7; compaction at 6 keeps k@5 and j@6.
  const all = [put(2, 0, 'k', 'a', 2, 1), put(3, 0, 'k', 'b', 2, 2), del(4, 0, 'k'), put(5, 0, 'k', 'c', 5, 1),
    put(6, 0, 'j', 'x', 6, 1), put(7, 0, 'j', 'y', 6, 2), put(8, 0, 'z', 'q', 8, 1, 99)];
  const done = all.filter((r) => [5, 6, 7, 8].includes(schema.revKeyMain(r.key)));
  for (const rev of [6, 7, 8]) {
    assert.equal(hashKv(source(all), rev, 6).hash, hashKv(source(done), rev, 6).hash, `rev ${rev}`);
  }
  // At 7 j@6 is superseded by j@7: only k@5 of the compacted part counts.
  const at7 = hashKv(source(done), 7, 6);
  assert.equal(at7.records, 2);
});

test('etcdValueBytes: gogo bytes (zero fields out, tombstone = key only)', () => {
  const out = new Uint8Array(64);
  const p = put(6, 0, 'c', '', 6, 1);
  const n = etcdValueBytes(p.value, false, out);
  // gogo: key, create_revision, mod_revision, version; no value, no lease.
  assert.deepEqual(Buffer.from(out.subarray(0, n)), Buffer.from([0x0a, 1, 0x63, 0x10, 6, 0x18, 6, 0x20, 1]));
  const d = del(5, 0, 'b');
  const m = etcdValueBytes(d.value, true, out);
  assert.deepEqual(Buffer.from(out.subarray(0, m)), Buffer.from([0x0a, 1, 0x62]));
  const neg = mvccpb.KeyValue.encode({ key: Buffer.from('n'), lease: -1 }).finish();
  const k = etcdValueBytes(neg, false, out);
  assert.deepEqual(Buffer.from(out.subarray(0, k)), Buffer.from(neg), 'negative int64: 10-byte varint as gogo');
});

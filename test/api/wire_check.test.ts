// wire_check.ts without a real etcd: a few requests and the answers etcd 3.4 gives them
// (recorded from /usr/bin/etcd; test/kv/differential_compact.test.ts compares many more live).

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { etcdserverpb } from '../../src/gen/proto';
import {
  canonical, CompactionRequestSpec, PutRequestSpec, RangeRequestSpec, TxnRequestSpec, WireChecker,
} from '../../src/api/grpc/wire_check';

const c = new WireChecker();

function error(spec: Parameters<WireChecker['check']>[0], bytes: number[]): string | null {
  return c.check(spec, Uint8Array.from(bytes), 129) ? null : c.error;
}

describe('wire_check: gogo/protobuf Unmarshal errors', () => {
  test('etcd 3.4 answers', () => {
    assert.equal(error(RangeRequestSpec, [0xff, 0xff, 0xff]), 'unexpected EOF');
    assert.equal(error(RangeRequestSpec, [0x0a, 0x05, 0x61]), 'unexpected EOF');
    assert.equal(error(RangeRequestSpec, [0x08, 0x01]), 'proto: wrong wireType = 0 for field Key');
    assert.equal(error(RangeRequestSpec, [0x0c]), 'proto: RangeRequest: wiretype end group for non-group');
    assert.equal(error(RangeRequestSpec, [0x00]), 'proto: RangeRequest: illegal tag 0 (wire type 0)');
    assert.equal(error(RangeRequestSpec, [0x0a, 0x01, 0x61, 0x1f]), 'proto: wrong wireType = 7 for field Limit');
    assert.equal(error(RangeRequestSpec, [0x52, 0x01]), 'proto: wrong wireType = 2 for field MinModRevision');
    assert.equal(error(RangeRequestSpec, [0x0a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]),
      'proto: negative length found during unmarshaling');
    assert.equal(error(RangeRequestSpec, [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]),
      'proto: integer overflow');
    assert.equal(error(RangeRequestSpec, [0x0a, 0x01, 0x61, 0xa6, 0x06]), 'proto: illegal wireType 6');
    assert.equal(error(RangeRequestSpec, [0x0a, 0x01, 0x61, 0xa4, 0x06]), 'proto: RangeRequest: wiretype end group for non-group');
    assert.equal(error(TxnRequestSpec, [0x0a, 0x02, 0x00, 0x00]), 'proto: Compare: illegal tag 0 (wire type 0)');
    assert.equal(error(TxnRequestSpec, [0x12, 0x04, 0x0a, 0x02, 0x08, 0x01]), 'proto: wrong wireType = 0 for field Key');
    assert.equal(error(CompactionRequestSpec, [0x0a, 0x00]), 'proto: wrong wireType = 2 for field Revision');
    assert.equal(error(PutRequestSpec, [0x0a, 0x01, 0x61, 0x1a, 0x00]), 'proto: wrong wireType = 2 for field Lease');
  });

  test('accepted requests, unknown fields and groups', () => {
    assert.equal(error(RangeRequestSpec, []), null);
    assert.equal(error(RangeRequestSpec, [0x0a, 0x01, 0x61, 0xa0, 0x06, 0x01]), null);
    assert.equal(c.irregular, false);
    // a group of field 100 closed by the end tag of field 1: gogo only counts depth
    assert.equal(error(RangeRequestSpec, [0x0a, 0x01, 0x61, 0xa3, 0x06, 0x0c]), null);
    assert.equal(c.irregular, true);
    const plain = canonical(RangeRequestSpec, Uint8Array.from([0x0a, 0x01, 0x61, 0xa3, 0x06, 0x0c]), 129);
    assert.deepEqual([...plain], [0x0a, 0x01, 0x61]);
    const txn = etcdserverpb.TxnRequest.encode({ success: [{ request_range: { key: Buffer.from('a') } }] }).finish();
    assert.equal(c.check(TxnRequestSpec, txn, 129), true);
    assert.equal(c.tooDeep, false);
  });

  test('a RequestOp with its oneof set twice keeps the last member, whole', () => {
    const bytes = Uint8Array.from([0x12, 0x0a, 0x0a, 0x04, 0x0a, 0x02, 0x6b, 0x31, 0x0a, 0x02, 0x18, 0x01]);
    assert.equal(c.check(TxnRequestSpec, bytes, 129), true);
    assert.equal(c.irregular, true);
    const op = etcdserverpb.TxnRequest.decode(canonical(TxnRequestSpec, bytes, 129)).success[0]!;
    assert.equal(op.request_range?.key?.length ?? 0, 0, 'no key: the first member is gone');
    assert.equal(Number(op.request_range?.limit), 1);
  });

  test('txns nested deeper than kept are cut to an empty txn', () => {
    let t: etcdserverpb.TxnRequest.$Properties = { success: [{ request_range: { key: Buffer.from('a') } }] };
    for (let i = 1; i < 5; i++) t = { success: [{ request_txn: t }] };
    const bytes = etcdserverpb.TxnRequest.encode(t).finish();
    assert.equal(c.check(TxnRequestSpec, bytes, 3), true);
    assert.equal(c.tooDeep, true);
    const cut = etcdserverpb.TxnRequest.decode(canonical(TxnRequestSpec, bytes, 3));
    const level3 = cut.success[0]!.request_txn!.success![0]!.request_txn!;
    assert.deepEqual(level3.success![0]!.request_txn!.success, [], 'level 4 is empty');
  });

  test('overlong tags and lengths: read as gogo reads them, rewritten for protobufjs (5 bytes at most)', () => {
    const range = (bytes: number[]): etcdserverpb.RangeRequest => {
      const d = Uint8Array.from(bytes);
      assert.equal(c.check(RangeRequestSpec, d, 129), true, Buffer.from(d).toString('hex'));
      assert.equal(c.irregular, true, Buffer.from(d).toString('hex'));
      return etcdserverpb.RangeRequest.decode(canonical(RangeRequestSpec, d, 129));
    };
    const key = (r: etcdserverpb.RangeRequest): string => Buffer.from(r.key).toString();
    assert.equal(key(range([0x8a, 0x80, 0x80, 0x80, 0x80, 0x00, 0x02, 0x6b, 0x31])), 'k1', '6-byte tag');
    assert.equal(key(range([0x0a, 0x82, 0x80, 0x80, 0x80, 0x80, 0x00, 0x6b, 0x31])), 'k1', '6-byte length');
    assert.equal(key(range([0x0a, 0x82, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00, 0x6b, 0x31])), 'k1');
    // the 10th byte's bits past 64 are dropped: a length of 2
    assert.equal(key(range([0x0a, 0x82, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02, 0x6b, 0x31])), 'k1');
    // an unknown field with an overlong length, and one numbered 2^28 (its tag is 2^31)
    assert.equal(key(range([0x0a, 0x02, 0x6b, 0x31, 0xa2, 0x06, 0x81, 0x80, 0x80, 0x80, 0x80, 0x00, 0x01])), 'k1');
    assert.equal(key(range([0x0a, 0x02, 0x6b, 0x31, 0x80, 0x80, 0x80, 0x80, 0x08, 0x01])), 'k1');
    // up to 5 bytes protobufjs reads itself
    const five = Uint8Array.from([0x0a, 0x82, 0x80, 0x80, 0x80, 0x00, 0x6b, 0x31]);
    assert.equal(c.check(RangeRequestSpec, five, 129), true);
    assert.equal(c.irregular, false);
    assert.equal(key(etcdserverpb.RangeRequest.decode(five)), 'k1');
  });
});

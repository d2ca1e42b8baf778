// Request checks before raft (etcd 3.4 v3rpc/key.go): check*Request error codes and
// checkIntervals' duplicate-key rules. Cases marked "etcd 3.4" were run against etcd 3.4.23.
// Requests are decoded from protobuf (as grpc-js hands them over) unless a plain object is
// the point.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import Long from 'long';

import { etcdserverpb } from '../../src/gen/proto';
import {
  checkDeleteRequest, checkIntervals, checkPutRequest, checkRangeRequest, checkTxnRequest,
} from '../../src/api/grpc/validate';
import { ErrorCode } from '../../src/util/errors';

type OpInit = etcdserverpb.RequestOp.$Properties;

const b = (s: string): Buffer => Buffer.from(s, 'latin1');

function txnReq(t: etcdserverpb.TxnRequest.$Properties): etcdserverpb.TxnRequest {
  return etcdserverpb.TxnRequest.decode(etcdserverpb.TxnRequest.encode(t).finish());
}

const put = (k: string): OpInit => ({ request_put: { key: b(k), value: b('v') } });
const del = (k: string, end?: string | Buffer): OpInit =>
  ({ request_delete_range: { key: b(k), range_end: end === undefined ? null : typeof end === 'string' ? b(end) : end } });
const range = (k: string): OpInit => ({ request_range: { key: b(k) } });
const nested = (success: OpInit[], failure: OpInit[] = []): OpInit => ({ request_txn: { success, failure } });

/** What the KV service does: checkIntervals on each branch; true = accepted. */
function intervalsOk(success: OpInit[], failure: OpInit[] = []): boolean {
  const t = txnReq({ success, failure });
  return checkIntervals(t.success) !== null && checkIntervals(t.failure) !== null;
}

describe('checkRangeRequest / checkPutRequest / checkDeleteRequest', () => {
  test('empty key', () => {
    assert.equal(checkRangeRequest(etcdserverpb.RangeRequest.decode(new Uint8Array(0))), ErrorCode.EmptyKey);
    assert.equal(checkRangeRequest({}), ErrorCode.EmptyKey);
    assert.equal(checkRangeRequest({ key: new Uint8Array(0), range_end: b('z') }), ErrorCode.EmptyKey);
    assert.equal(checkRangeRequest({ key: b('a') }), 0);
    assert.equal(checkRangeRequest({ key: Buffer.from([0]), range_end: Buffer.from([0]) }), 0);
    assert.equal(checkPutRequest({ value: b('v') }), ErrorCode.EmptyKey);
    assert.equal(checkPutRequest({ key: b('k'), value: b('v') }), 0);
    assert.equal(checkDeleteRequest({ range_end: b('z') }), ErrorCode.EmptyKey);
    assert.equal(checkDeleteRequest({ key: b('k') }), 0);
  });

  test('sort options are not checked (etcd 3.4 accepts an unknown sort order)', () => {
    assert.equal(checkRangeRequest({ key: b('a'), sort_order: 7 as never }), 0);
  });

  test('ignore_value with a value, ignore_lease with a lease', () => {
    assert.equal(checkPutRequest({ key: b('k'), ignore_value: true, value: b('v') }), ErrorCode.ValueProvided);
    assert.equal(checkPutRequest({ key: b('k'), ignore_value: true }), 0);
    assert.equal(checkPutRequest({ key: b('k'), ignore_value: true, value: new Uint8Array(0) }), 0);
    assert.equal(checkPutRequest({ key: b('k'), ignore_lease: true, lease: 5 }), ErrorCode.LeaseProvided);
    assert.equal(checkPutRequest({ key: b('k'), ignore_lease: true, lease: Long.fromNumber(-1) }), ErrorCode.LeaseProvided);
    assert.equal(checkPutRequest({ key: b('k'), ignore_lease: true, lease: Long.ZERO }), 0);
    assert.equal(checkPutRequest({ key: b('k'), lease: 5 }), 0);
    // order of the checks: key, value, lease
    assert.equal(checkPutRequest({ ignore_value: true, value: b('v') }), ErrorCode.EmptyKey);
    assert.equal(checkPutRequest({ key: b('k'), ignore_value: true, value: b('v'), ignore_lease: true, lease: 1 }),
      ErrorCode.ValueProvided);
    // decoded from the wire
    const decoded = etcdserverpb.PutRequest.decode(etcdserverpb.PutRequest.encode({ key: b('k'), ignore_lease: true, lease: 3 }).finish());
    assert.equal(checkPutRequest(decoded), ErrorCode.LeaseProvided);
  });
});

describe('checkTxnRequest', () => {
  const max = 4;
  const ops = (n: number): OpInit[] => Array.from({ length: n }, (_, i) => put('k' + i));

  test('too many ops: compare, success and failure counted separately (max of them)', () => {
    const cmps = (n: number): etcdserverpb.Compare.$Properties[] => Array.from({ length: n }, () => ({ key: b('a') }));
    assert.equal(checkTxnRequest(txnReq({ compare: cmps(4), success: ops(4), failure: ops(4) }), max), 0);
    assert.equal(checkTxnRequest(txnReq({ compare: cmps(5) }), max), ErrorCode.TooManyOps);
    assert.equal(checkTxnRequest(txnReq({ success: ops(5) }), max), ErrorCode.TooManyOps);
    assert.equal(checkTxnRequest(txnReq({ failure: ops(5) }), max), ErrorCode.TooManyOps);
    // checked before anything else
    assert.equal(checkTxnRequest(txnReq({ compare: [{}], success: ops(5) }), max), ErrorCode.TooManyOps);
  });

  test('nested txns get what is left of the limit (etcd 3.4: 128 - 2 = 126 nested ops)', () => {
    assert.equal(checkTxnRequest(txnReq({ success: [put('a'), nested(ops(127))] }), 128), ErrorCode.TooManyOps);
    assert.equal(checkTxnRequest(txnReq({ success: [put('a'), nested(ops(126))] }), 128), 0);
    assert.equal(checkTxnRequest(txnReq({ success: [nested(ops(2)), put('x')] }), 4), 0);
    assert.equal(checkTxnRequest(txnReq({ success: [nested(ops(3)), put('x')] }), 4), ErrorCode.TooManyOps);
    // two levels: 4 - 1 = 3 for the first nested txn, 3 - 1 = 2 for the second
    assert.equal(checkTxnRequest(txnReq({ failure: [nested([nested(ops(3))])] }), 4), ErrorCode.TooManyOps);
    assert.equal(checkTxnRequest(txnReq({ failure: [nested([nested(ops(2))])] }), 4), 0);
  });

  test('empty keys in compares and ops, at any depth', () => {
    assert.equal(checkTxnRequest(txnReq({ compare: [{ key: b('a') }, { result: 0 }] }), max), ErrorCode.EmptyKey);
    assert.equal(checkTxnRequest(txnReq({ success: [{ request_range: {} }] }), max), ErrorCode.EmptyKey);
    assert.equal(checkTxnRequest(txnReq({ failure: [{ request_delete_range: {} }] }), max), ErrorCode.EmptyKey);
    assert.equal(checkTxnRequest(txnReq({ success: [nested([], [{ request_put: { value: b('v') } }])] }), max),
      ErrorCode.EmptyKey);
    assert.equal(checkTxnRequest(txnReq({ success: [nested([], [{ request_put: { key: b('k'), ignore_value: true, value: b('v') } }])] }), max),
      ErrorCode.ValueProvided);
    assert.equal(checkTxnRequest(txnReq({ success: [{ request_put: { key: b('k'), ignore_lease: true, lease: 1 } }] }), max),
      ErrorCode.LeaseProvided);
    assert.equal(checkTxnRequest(txnReq({ compare: [{ key: b('a') }], success: [range('a'), put('b'), del('c')], failure: [nested([range('x')])] }), max), 0);
  });

  test('an empty op is "key not found" (etcd 3.4)', () => {
    assert.equal(checkTxnRequest(txnReq({ success: [{}] }), max), ErrorCode.KeyNotFound);
    assert.equal(checkTxnRequest(txnReq({ success: [put('a')], failure: [nested([{}])] }), max), ErrorCode.KeyNotFound);
  });

  test('success is checked before failure', () => {
    assert.equal(checkTxnRequest(txnReq({ success: [{ request_range: {} }], failure: [{}] }), max), ErrorCode.EmptyKey);
    assert.equal(checkTxnRequest(txnReq({ success: [{}], failure: [{ request_range: {} }] }), max), ErrorCode.KeyNotFound);
  });
});

describe('checkIntervals (duplicate keys)', () => {
  test('a key written twice in one branch', () => {
    assert.equal(intervalsOk([put('a'), put('b')]), true);
    assert.equal(intervalsOk([put('a'), put('a')]), false);
    assert.equal(intervalsOk([put('a'), range('a'), range('a')]), true);
    // success and failure are separate (etcd 3.4)
    assert.equal(intervalsOk([put('k')], [put('k')]), true);
    assert.equal(intervalsOk([put('k')], [put('k'), put('k')]), false);
  });

  test('puts against deleted keys and ranges (etcd 3.4)', () => {
    assert.equal(intervalsOk([del('a'), put('a')]), false);
    assert.equal(intervalsOk([put('a'), del('a')]), false, 'order does not matter');
    assert.equal(intervalsOk([del('a', 'k'), put('c')]), false);
    assert.equal(intervalsOk([del('a', 'k'), put('a')]), false, 'range start included');
    assert.equal(intervalsOk([del('a', 'k'), put('k')]), true, 'range end excluded');
    assert.equal(intervalsOk([del('b', 'k'), put('a')]), true);
    assert.equal(intervalsOk([del('a'), { request_put: { key: b('a\0'), value: b('') } }]), true);
    assert.equal(intervalsOk([del('a', 'm'), del('c', 'z')]), true, 'overlapping deletes are fine');
    // range_end "\0" is not special here: [a, "\0") contains no key (etcd 3.4 accepts)
    assert.equal(intervalsOk([del('a', Buffer.from([0])), put('b')]), true);
    // byte order, not UTF-16 order
    assert.equal(intervalsOk([del('\x7f', '\x81'), { request_put: { key: Buffer.from([0x80]), value: b('') } }]), false);
    assert.equal(intervalsOk([del('\x7f', '\x80'), { request_put: { key: Buffer.from([0x80]), value: b('') } }]), true);
  });

  test('nested txns: then and else may write the same key (only one runs) (etcd 3.4)', () => {
    assert.equal(intervalsOk([nested([put('k')], [put('k')])]), true);
    assert.equal(intervalsOk([nested([put('k'), put('k')])]), false);
    assert.equal(intervalsOk([nested([put('k'), del('k')])]), false);
    assert.equal(intervalsOk([nested([del('k')], [put('k')])]), true);
  });

  test('nested txns against the outer level and their siblings (etcd 3.4)', () => {
    assert.equal(intervalsOk([nested([put('k')]), put('k')]), false, 'nested put + outer put');
    assert.equal(intervalsOk([put('k'), nested([], [put('k')])]), false, 'outer put + nested else put');
    assert.equal(intervalsOk([del('k'), nested([put('k')])]), false, 'outer delete + nested put');
    assert.equal(intervalsOk([nested([], [del('a', 'z')]), put('k')]), false, 'nested delete + outer put');
    assert.equal(intervalsOk([nested([put('k')]), nested([], [put('k')])]), false, 'then of one, else of another');
    assert.equal(intervalsOk([nested([], [put('k')]), nested([put('k')])]), false, 'else of one, then of another');
    assert.equal(intervalsOk([nested([put('k')], [put('k')]), nested([put('k')])]), false);
    assert.equal(intervalsOk([nested([del('a', 'z')]), nested([put('k')])]), false, 'earlier sibling deletes');
    // a later sibling's delete is not checked against an earlier sibling's put (etcd 3.4 accepts)
    assert.equal(intervalsOk([nested([put('k')]), nested([del('a', 'z')])]), true);
    assert.equal(intervalsOk([nested([nested([put('k')])]), put('k')]), false, 'two levels down');
    assert.equal(intervalsOk([nested([nested([put('k')], [put('k')])], [put('k')])]), true);
  });

  test('returns the puts and deletes of the level for the caller', () => {
    const t = txnReq({ success: [put('a'), del('x', 'z'), nested([put('b')], [put('c'), del('q')])] });
    const r = checkIntervals(t.success);
    assert.ok(r !== null);
    assert.deepEqual([...r.puts].sort(), ['a', 'b', 'c']);
    assert.deepEqual(r.dels, [{ start: 'x', end: 'z' }, { start: 'q', end: null }]);
  });
});

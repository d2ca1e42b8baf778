// Differential tests of Txn against real etcd 3.4: compares (every target x every result, over
// single keys, missing keys and ranges), branches, mixed and nested operations, the
// duplicate-key rule, limits and errors. See test/helpers/differential.ts.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { etcdserverpb } from '../../src/gen/proto';
import { etcdSkipReason } from '../helpers/etcd';
import { prefixEnd } from '../helpers/grpc_client';
import { b, DiffPair, expectError, okOf, revOf } from '../helpers/differential';
import { protoDepthMax } from '../../src/config/limits';
import { setProtoDepthMax } from '../../src/util/proto_depth';
import { varintBytes } from '../../src/util/protobuf_wire';

// This process encodes and decodes txns nested deeper than protobufjs' default limit.
setProtoDepthMax(protoDepthMax);

type Compare = etcdserverpb.Compare.$Properties;
type RequestOp = etcdserverpb.RequestOp.$Properties;

const Target = etcdserverpb.Compare.CompareTarget;
const Result = etcdserverpb.Compare.CompareResult;
const ZERO = Buffer.from([0]);

const unionOf: Record<number, 'version' | 'create_revision' | 'mod_revision' | 'value' | 'lease'> = {
  [Target.VERSION]: 'version',
  [Target.CREATE]: 'create_revision',
  [Target.MOD]: 'mod_revision',
  [Target.VALUE]: 'value',
  [Target.LEASE]: 'lease',
};

/** A compare; `operand` goes into the union member of `target` unless `union` names another. */
function cmp(key: string | Buffer, target: number, result: number, operand: number | string,
  opts: { range_end?: Buffer; union?: string } = {}): Compare {
  const c: Record<string, unknown> = {
    key: typeof key === 'string' ? b(key) : key,
    target,
    result,
  };
  if (opts.range_end) c.range_end = opts.range_end;
  const member = opts.union ?? unionOf[target] ?? 'version';
  c[member] = member === 'value' ? b(String(operand)) : operand;
  return c as Compare;
}

const put = (k: string, v: string, extra: Partial<etcdserverpb.PutRequest.$Properties> = {}): RequestOp =>
  ({ request_put: { key: b(k), value: b(v), ...extra } });
const get = (k: string | Buffer, extra: Partial<etcdserverpb.RangeRequest.$Properties> = {}): RequestOp =>
  ({ request_range: { key: typeof k === 'string' ? b(k) : k, ...extra } });
const del = (k: string | Buffer, end?: Buffer | string, extra: Partial<etcdserverpb.DeleteRangeRequest.$Properties> = {}): RequestOp =>
  ({ request_delete_range: { key: typeof k === 'string' ? b(k) : k, ...(end === undefined ? {} : { range_end: typeof end === 'string' ? b(end) : end }), ...extra } });
const txn = (compare: Compare[], success: RequestOp[] = [], failure: RequestOp[] = []): RequestOp =>
  ({ request_txn: { compare, success, failure } });
const all = (extra: Partial<etcdserverpb.RangeRequest.$Properties> = {}): RequestOp => get(ZERO, { range_end: ZERO, ...extra });

describe('differential vs etcd: Txn compares', { skip: etcdSkipReason() }, () => {
  let d: DiffPair;
  before(async () => {
    d = await DiffPair.start();
    for (const [k, v] of [['k1', 'a'], ['k2', 'b'], ['k1', 'm'], ['r/1', 'x'], ['r/2', 'y'], ['k1', 'm'],
      ['r/3', 'b'], ['k3', 'z'], ['r/2', 'q'], ['gone', 'g']] as const) {
      await d.kv('Put', { key: b(k), value: b(v) });
    }
    await d.kv('DeleteRange', { key: b('gone') });
  });
  after(async () => {
    await d?.stop();
  });

  // Key sets a compare looks at: one key, a missing key, a deleted key, ranges (one with a
  // missing end, one from-key, one empty).
  const keySets: { key: string | Buffer; range_end?: Buffer; label: string }[] = [
    { key: 'k1', label: 'k1' },
    { key: 'nokey', label: 'missing' },
    { key: 'gone', label: 'deleted' },
    { key: 'r/', range_end: prefixEnd('r/'), label: 'prefix r/' },
    { key: 'k2', range_end: ZERO, label: 'from k2' },
    { key: 'x', range_end: b('y'), label: 'empty range' },
    { key: ZERO, range_end: ZERO, label: 'all' },
  ];
  const targets = [Target.VERSION, Target.CREATE, Target.MOD, Target.VALUE, Target.LEASE];
  const results = [Result.EQUAL, Result.GREATER, Result.LESS, Result.NOT_EQUAL];
  const numbers = [0, 1, 2, 3, 4, 7, 11, 100, -1];
  const values = ['', 'a', 'm', 'n', 'b', 'q', 'zz'];

  test('every target x every result x operands, top-level', async () => {
    // One top-level txn per compare on a few operands (each answer's header and branch compared).
    for (const ks of [keySets[0]!, keySets[1]!, keySets[3]!]) {
      for (const target of targets) {
        for (const result of results) {
          for (const operand of target === Target.VALUE ? ['', 'm', 'zz'] : [0, 3, 100]) {
            await d.kv('Txn', {
              compare: [cmp(ks.key, target, result, operand, { range_end: ks.range_end })],
              success: [get('k1', { keys_only: true })],
              failure: [get('k2', { count_only: true })],
            }, `${ks.label} target ${target} result ${result} operand ${operand}`);
          }
        }
      }
    }
  });

  test('every target x every result x operands x key sets, as nested txns', async () => {
    // Many compares per request: each nested txn reports its own `succeeded`.
    const nested: RequestOp[] = [];
    const flush = async (): Promise<void> => {
      if (nested.length === 0) return;
      await d.kv('Txn', { success: nested.splice(0) }, 'batch of nested compares');
    };
    for (const ks of keySets) {
      for (const target of targets) {
        for (const result of results) {
          for (const operand of target === Target.VALUE ? values : numbers) {
            nested.push(txn([cmp(ks.key, target, result, operand, { range_end: ks.range_end })]));
            if (nested.length === 100) await flush();
          }
        }
      }
    }
    await flush();
  });

  test('the union member does not match the target, targets and results outside the enums', async () => {
    const nested: RequestOp[] = [];
    for (const ks of keySets) {
      for (const target of [...targets, 5, 99]) {
        for (const result of [...results, 4, 99]) {
          for (const union of ['version', 'create_revision', 'mod_revision', 'value', 'lease']) {
            nested.push(txn([cmp(ks.key, target, result, union === 'value' ? 'm' : 2, { range_end: ks.range_end, union })]));
          }
        }
      }
    }
    while (nested.length > 0) await d.kv('Txn', { success: nested.splice(0, 100) }, 'odd compares');
    // no union member at all
    for (const target of targets) {
      for (const result of results) {
        await d.kv('Txn', { compare: [{ key: b('k1'), target, result }], success: [get('k1')] });
        await d.kv('Txn', { compare: [{ key: b('nokey'), target, result }], success: [get('k1')] });
      }
    }
  });

  test('several compares: all must hold', async () => {
    await d.kv('Txn', {
      compare: [cmp('k1', Target.VALUE, Result.EQUAL, 'm'), cmp('k2', Target.VERSION, Result.EQUAL, 1)],
      success: [get('k1')], failure: [get('k2')],
    });
    await d.kv('Txn', {
      compare: [cmp('k1', Target.VALUE, Result.EQUAL, 'm'), cmp('k2', Target.VERSION, Result.EQUAL, 2)],
      success: [get('k1')], failure: [get('k2')],
    });
    await d.kv('Txn', { compare: [], success: [get('k1')], failure: [get('k2')] }, 'no compare: success');
  });

  test('compare errors', async () => {
    expectError(await d.kv('Txn', { compare: [cmp('', Target.VERSION, Result.EQUAL, 0)] }),
      grpc.status.INVALID_ARGUMENT, 'etcdserver: key is not provided');
    expectError(await d.kv('Txn', { compare: [cmp('k1', Target.VERSION, Result.EQUAL, 0), { target: Target.MOD }] }),
      grpc.status.INVALID_ARGUMENT, 'etcdserver: key is not provided');
  });
});

describe('differential vs etcd: Txn operations', { skip: etcdSkipReason() }, () => {
  let d: DiffPair;
  before(async () => {
    d = await DiffPair.start();
    for (const k of ['a', 'b', 'c', 'p/1', 'p/2', 'z']) await d.kv('Put', { key: b(k), value: b(`v-${k}`) });
  });
  after(async () => {
    await d?.stop();
  });

  test('empty and read-only txns do not bump the revision', async () => {
    const rev = revOf(await d.kv('Txn', {}));
    assert.equal(revOf(await d.kv('Txn', { success: [get('a'), all({ count_only: true })] })), rev);
    assert.equal(revOf(await d.kv('Txn', { compare: [cmp('a', Target.VERSION, Result.EQUAL, 9)], failure: [get('b')] })), rev);
    await d.kv('Txn', { success: [del('nothing')] }, 'a delete that deletes nothing');
    await d.kv('Txn', { success: [del('nothing', 'nothinz', { prev_kv: true }), get('a')] });
    assert.equal(revOf(await d.kv('Range', { key: b('a') })), rev);
    await d.kv('Txn', { success: [txn([], [txn([], [get('a')])])] }, 'nested read-only');
  });

  test('success and failure branches', async () => {
    await d.kv('Txn', {
      compare: [cmp('a', Target.VALUE, Result.EQUAL, 'v-a')],
      success: [put('a', 'then')], failure: [put('a', 'else')],
    });
    await d.kv('Txn', {
      compare: [cmp('a', Target.VALUE, Result.EQUAL, 'v-a')],
      success: [put('a', 'then')], failure: [put('a', 'else', { prev_kv: true }), get('a')],
    });
    await d.kv('Range', { key: b('a') });
  });

  test('mixed operations and what later operations of the same txn see', async () => {
    await d.kv('Txn', {
      compare: [cmp('x', Target.VERSION, Result.EQUAL, 0)],
      success: [
        get('x'),
        put('x', '1'),
        get('x'),
        put('y', '2', { prev_kv: true }),
        all(),
        del('b', undefined, { prev_kv: true }),
        all({ count_only: true }),
        del('p/', prefixEnd('p/'), { prev_kv: true }),
        get('p/', { range_end: prefixEnd('p/') }),
        get('x', { revision: 2 }),
        txn([cmp('x', Target.VERSION, Result.EQUAL, 0)], [put('n', '3'), get('n'), get('x')], [put('n', 'no')]),
        get('n'),
        del('nothing'),
        put('c', 'c2', { prev_kv: true }),
        all({ sort_order: etcdserverpb.RangeRequest.SortOrder.DESCEND, sort_target: etcdserverpb.RangeRequest.SortTarget.MOD }),
      ],
    });
    const now = revOf(await d.kv('Range', { key: ZERO, range_end: ZERO }));
    await d.kv('Range', { key: ZERO, range_end: ZERO, revision: now - 1 });
    await d.kv('Txn', { success: [put('x', 'again', { prev_kv: true }), del('y', undefined, { prev_kv: true }), get('y'), get('x')] });
    await d.kv('Txn', { success: [del('x'), get('x'), del('x'), get('x', { revision: now })] }, 'delete twice');
    await d.kv('Range', { key: ZERO, range_end: ZERO });
  });

  test('nested txns on both branches, compares see the state before the txn', async () => {
    await d.kv('Put', { key: b('k'), value: b('old') });
    await d.kv('Txn', {
      compare: [cmp('k', Target.VALUE, Result.EQUAL, 'old')],
      success: [
        put('k', 'new'),
        txn([cmp('k', Target.VALUE, Result.EQUAL, 'old')], [put('k1', 'saw old'), get('k')], [put('k1', 'saw new')]),
        txn([cmp('k', Target.VALUE, Result.EQUAL, 'new')], [put('k2', 'saw new')], [
          put('k2', 'saw old'),
          txn([cmp('k2', Target.VERSION, Result.EQUAL, 0)], [put('k3', 'deep'), get('k2'),
            txn([], [get('k3'), del('k3', undefined, { prev_kv: true })])], [put('k3', 'no')]),
          get('k3'),
        ]),
        get('k', { range_end: prefixEnd('k') }),
      ],
      failure: [put('f', 'failure'), txn([], [put('g', 'never')])],
    });
    await d.kv('Range', { key: b('k'), range_end: prefixEnd('k') });
    await d.kv('Txn', {
      compare: [cmp('k', Target.VALUE, Result.EQUAL, 'old')],
      success: [put('never', '1')],
      failure: [txn([cmp('k1', Target.VERSION, Result.GREATER, 0)], [txn([], [put('deep', 'd')]), txn([], [])]), get('deep')],
    });
    await d.kv('Range', { key: ZERO, range_end: ZERO });
  });

  test('the duplicate-key rule', async () => {
    const dup = 'etcdserver: duplicate key given in txn request';
    const refused = async (req: etcdserverpb.TxnRequest.$Properties, label: string): Promise<void> => {
      expectError(await d.kv('Txn', req, label), grpc.status.INVALID_ARGUMENT, dup);
    };
    const allowed = async (req: etcdserverpb.TxnRequest.$Properties, label: string): Promise<void> => {
      okOf(await d.kv('Txn', req, label), label);
    };
    await refused({ success: [put('a', '1'), put('a', '2')] }, 'put + put');
    await refused({ failure: [put('a', '1'), put('a', '2')] }, 'put + put in the branch not taken');
    await refused({ success: [put('a', '1'), del('a')] }, 'put + delete');
    await refused({ success: [del('a'), put('a', '1')] }, 'delete + put');
    await refused({ success: [del('a', 'c'), put('b', '1')] }, 'put inside a deleted range');
    await refused({ success: [del(ZERO, 'b'), put('a', '1')] }, 'put inside [\\0, b)');
    await allowed({ success: [del('a', 'c'), put('c', '1')] }, 'put at the deleted range end');
    await allowed({ success: [del('b', 'a'), put('a', '1'), put('ab', '1')] }, 'inverted delete range');
    await allowed({ success: [del('a', ZERO), put('b', '1')] }, 'from-key delete + put (etcd: no interval)');
    await allowed({ success: [del(ZERO, ZERO), put('b', '2')] }, 'delete everything + put');
    await allowed({ success: [del('a'), del('a')] }, 'delete + delete');
    await allowed({ success: [del('a', 'c'), del('b')] }, 'overlapping deletes');
    await allowed({ success: [get('a'), put('a', '3'), get('a')] }, 'range + put');
    await allowed({ success: [put('a', '4')], failure: [put('a', '5')] }, 'put in both branches');
    await allowed({ success: [put('a', '6')], failure: [del('a')] }, 'put and delete in different branches');
    // across nesting levels
    await refused({ success: [put('a', '1'), txn([], [put('a', '2')])] }, 'outer put + nested put');
    await refused({ success: [txn([], [put('a', '2')]), put('a', '1')] }, 'nested put + outer put');
    await refused({ success: [put('a', '1'), txn([], [], [put('a', '2')])] }, 'outer put + nested else put');
    await refused({ success: [del('a'), txn([], [put('a', '2')])] }, 'outer delete + nested put');
    await refused({ success: [txn([], [del('a')]), put('a', '1')] }, 'nested delete + outer put');
    await refused({ success: [txn([], [del('a')]), txn([], [put('a', '1')])] }, 'nested delete, then nested put');
    await allowed({ success: [txn([], [put('a', '1')]), txn([], [del('a')])] }, 'nested put, then nested delete');
    await allowed({ success: [txn([], [put('a', '7')], [put('a', '8')])] }, 'then and else of one nested txn');
    await refused({ success: [txn([], [put('a', '1')]), txn([], [put('a', '2')])] }, 'two nested thens');
    await refused({ success: [txn([], [put('a', '1')]), txn([], [], [put('a', '2')])] }, 'nested then + other nested else');
    await refused({ success: [txn([], [], [put('a', '1')]), txn([], [put('a', '2')])] }, 'nested else + other nested then');
    await refused({ success: [txn([], [txn([], [put('a', '1')]), put('a', '2')])] }, 'two levels down');
    await refused({ success: [txn([], [txn([], [put('a', '1'), put('a', '2')])])] }, 'deep put + put');
    await allowed({ success: [txn([], [txn([], [del('a')])]), del('a')] }, 'deep delete + delete');
    await refused({ success: [txn([], [txn([], [del('a', 'c')])]), put('b', '1')] }, 'deep range delete + put');
    await d.kv('Range', { key: ZERO, range_end: ZERO });
  });

  test('request checks inside txns', async () => {
    expectError(await d.kv('Txn', { success: [{}] }), grpc.status.INVALID_ARGUMENT, 'etcdserver: key not found');
    expectError(await d.kv('Txn', { failure: [{}] }), grpc.status.INVALID_ARGUMENT, 'etcdserver: key not found');
    expectError(await d.kv('Txn', { success: [txn([], [{}])] }), grpc.status.INVALID_ARGUMENT, 'etcdserver: key not found');
    expectError(await d.kv('Txn', { success: [put('', 'x')] }), grpc.status.INVALID_ARGUMENT, 'etcdserver: key is not provided');
    expectError(await d.kv('Txn', { success: [get('')] }), grpc.status.INVALID_ARGUMENT, 'etcdserver: key is not provided');
    expectError(await d.kv('Txn', { failure: [del('')] }), grpc.status.INVALID_ARGUMENT, 'etcdserver: key is not provided');
    expectError(await d.kv('Txn', { success: [put('a', 'x', { ignore_value: true })] }), grpc.status.INVALID_ARGUMENT,
      'etcdserver: value is provided');
    expectError(await d.kv('Txn', { success: [put('a', 'x', { ignore_lease: true, lease: 3 })] }),
      grpc.status.INVALID_ARGUMENT, 'etcdserver: lease is provided');
    // checked against the store only on the branch taken
    expectError(await d.kv('Txn', { success: [put('missing', '', { ignore_value: true })] }),
      grpc.status.INVALID_ARGUMENT, 'etcdserver: key not found');
    expectError(await d.kv('Txn', { success: [put('missing', 'x', { ignore_lease: true })] }),
      grpc.status.INVALID_ARGUMENT, 'etcdserver: key not found');
    await d.kv('Txn', { failure: [put('missing', '', { ignore_value: true })] }, 'branch not taken');
    await d.kv('Txn', { success: [put('c', '', { ignore_value: true, prev_kv: true }), get('c')] });
    await d.kv('Txn', { success: [put('c', 'c3', { ignore_lease: true, prev_kv: true })] });
    // Leases: none exist (concord has no lessor yet, issue #5; etcd has none granted here).
    expectError(await d.kv('Txn', { success: [put('l', 'x', { lease: 77 })] }), grpc.status.NOT_FOUND,
      'etcdserver: requested lease not found');
    expectError(await d.kv('Txn', { success: [get('a'), txn([], [put('l', 'x', { lease: 77 })])] }), grpc.status.NOT_FOUND,
      'etcdserver: requested lease not found');
    // Inside a txn the key is checked before the lease (etcd checkRequestPut), unlike a plain Put.
    expectError(await d.kv('Txn', { success: [put('missing', '', { ignore_value: true, lease: 77 })] }),
      grpc.status.INVALID_ARGUMENT, 'etcdserver: key not found');
    // Ops are checked in order: the first failing one decides.
    expectError(await d.kv('Txn', { success: [put('l', 'x', { lease: 77 }), put('missing', '', { ignore_value: true })] }),
      grpc.status.NOT_FOUND, 'etcdserver: requested lease not found');
    expectError(await d.kv('Txn', { success: [put('missing', '', { ignore_value: true }), put('l', 'x', { lease: 77 })] }),
      grpc.status.INVALID_ARGUMENT, 'etcdserver: key not found');
    // ignore_value / ignore_lease after a from-key delete of the key: the duplicate-key rule lets
    // it through, then etcd 3.4's Put fails in the middle of the txn and the process panics
    // ("unexpected error during txn"). Not sent to etcd; concord refuses the whole txn with the
    // error that Put met, and nothing of it is applied.
    await d.kv('Put', { key: b('c'), value: b('c4') });
    await d.kv('Put', { key: b('z'), value: b('z4') });
    const beforeCrashCases = await d.kv('Range', { key: ZERO, range_end: ZERO });
    const never = cmp('c', Target.VERSION, Result.EQUAL, 12345);
    for (const req of [
      { success: [del('a', ZERO), put('c', '', { ignore_value: true })] },
      { success: [del(ZERO, ZERO, { prev_kv: true }), put('c', 'x', { ignore_lease: true })] },
      { success: [txn([], [del('b', ZERO)]), txn([], [put('c', '', { ignore_value: true })])] },
      { success: [put('new', '1'), txn([never], [], [del('a', ZERO)]), put('z', '', { ignore_value: true })] },
    ] as etcdserverpb.TxnRequest.$Properties[]) {
      expectError(await d.concordOnly('Txn', req), grpc.status.INVALID_ARGUMENT, 'etcdserver: key not found');
    }
    assert.deepEqual(await d.kv('Range', { key: ZERO, range_end: ZERO }), beforeCrashCases, 'nothing applied');
    // ... while a from-key delete on a branch that does not run, or after the put, is fine for both.
    await d.kv('Txn', { success: [put('new', '1'), txn([never], [del('a', ZERO)]), put('z', '', { ignore_value: true })] });
    await d.kv('Txn', { success: [put('c', '', { ignore_value: true, prev_kv: true }), del('b', ZERO, { prev_kv: true })] });
    await d.kv('Range', { key: ZERO, range_end: ZERO });
    // future revision in a range of the branch taken
    const now = revOf(await d.kv('Range', { key: b('a') }));
    expectError(await d.kv('Txn', { success: [get('a', { revision: now + 1 })] }), grpc.status.OUT_OF_RANGE,
      'etcdserver: mvcc: required revision is a future revision');
    expectError(await d.kv('Txn', { success: [put('a', 'x'), get('a', { revision: now + 1 })] }), grpc.status.OUT_OF_RANGE,
      'etcdserver: mvcc: required revision is a future revision');
    await d.kv('Txn', { failure: [get('a', { revision: now + 1 })] }, 'future revision on the branch not taken');
    await d.kv('Txn', { success: [get('a', { revision: -3 })] }, 'negative revision in a txn');
    // Validation order: the op checks run on success before failure.
    expectError(await d.kv('Txn', { success: [put('', 'x')], failure: [{}] }), grpc.status.INVALID_ARGUMENT,
      'etcdserver: key is not provided');
    expectError(await d.kv('Txn', { success: [{}], failure: [put('', 'x')] }), grpc.status.INVALID_ARGUMENT,
      'etcdserver: key not found');
    // The request checks come before the duplicate-key check.
    expectError(await d.kv('Txn', { success: [put('a', '1'), put('a', '2'), get('')] }), grpc.status.INVALID_ARGUMENT,
      'etcdserver: key is not provided');
    assert.equal(revOf(await d.kv('Range', { key: b('a') })), now, 'refused txns changed nothing');
  });

  test('deeply nested txns', async () => {
    const tooMany = 'etcdserver: too many operations in txn request';
    // One op per level: each level leaves one operation less to the next (128, 127, ...).
    const chain = (levels: number, leaf: RequestOp): etcdserverpb.TxnRequest.$Properties => {
      let t: etcdserverpb.TxnRequest.$Properties = { success: [leaf] };
      for (let i = 1; i < levels; i++) t = { compare: [cmp(`c${i}`, Target.VERSION, Result.EQUAL, 0)], success: [{ request_txn: t }] };
      return t;
    };
    for (const levels of [50, 51, 60, 100, 127, 128]) {
      okOf(await d.kv('Txn', chain(levels, get('a')), `${levels} levels`), `${levels} levels`);
    }
    okOf(await d.kv('Txn', chain(128, put('deep', 'x'))), 'a put 128 levels down');
    for (const levels of [129, 130, 200, 1000]) {
      expectError(await d.kv('Txn', chain(levels, get('a')), `${levels} levels`), grpc.status.INVALID_ARGUMENT, tooMany);
    }
    // Two ops per level: the remaining count goes down by two.
    const wide = (levels: number): etcdserverpb.TxnRequest.$Properties => {
      let t: etcdserverpb.TxnRequest.$Properties = { success: [put(`w/${levels}`, 'leaf')] };
      for (let i = levels - 1; i >= 1; i--) t = { success: [put(`w/${i}`, 'v'), { request_txn: t }], failure: [get('a')] };
      return t;
    };
    okOf(await d.kv('Txn', wide(64)), '64 wide levels');
    expectError(await d.kv('Txn', wide(65)), grpc.status.INVALID_ARGUMENT, tooMany);
    // A check on a shallow level decides before the depth does.
    const shallowBad = chain(900, get('a'));
    shallowBad.success = [get(''), ...(shallowBad.success ?? [])];
    expectError(await d.kv('Txn', shallowBad), grpc.status.INVALID_ARGUMENT, 'etcdserver: key is not provided');
    // Deeper than any encoder here goes (protobufjs limits recursion): built by hand.
    const ld = (tag: number, body: Buffer): Buffer => Buffer.concat([Buffer.from([tag]), varintBytes(body.length), body]);
    const leafOp = ld(0x0a, ld(0x0a, b('a'))); // RequestOp{request_range{key: 'a'}}
    for (const levels of [20_000, 100_000]) {
      // TxnRequest{success: [RequestOp{request_txn: ...}]}: tag and length prefixes, innermost first.
      const txnLeaf = ld(0x12, leafOp);
      const heads: Buffer[] = [];
      let size = txnLeaf.length;
      for (let i = 1; i < levels; i++) {
        for (const tag of [0x22, 0x12]) {
          const head = Buffer.from([tag, ...varintBytes(size)]);
          heads.push(head);
          size += head.length;
        }
      }
      const t = Buffer.concat([...heads.reverse(), txnLeaf]);
      expectError(await d.raw('/etcdserverpb.KV/Txn', t, `${levels} levels`), grpc.status.INVALID_ARGUMENT, tooMany);
    }
    await d.kv('Range', { key: ZERO, range_end: ZERO, count_only: true });
  });

  test('--max-txn-ops (128)', async () => {
    const puts = (n: number, prefix: string): RequestOp[] => Array.from({ length: n }, (_, i) => put(`${prefix}${i}`, 'v'));
    const tooMany = 'etcdserver: too many operations in txn request';
    okOf(await d.kv('Txn', { success: puts(128, 'm/') }, '128 ops'));
    expectError(await d.kv('Txn', { success: puts(129, 'm/') }), grpc.status.INVALID_ARGUMENT, tooMany);
    expectError(await d.kv('Txn', { failure: puts(129, 'm/') }), grpc.status.INVALID_ARGUMENT, tooMany);
    const compares = Array.from({ length: 129 }, () => cmp('a', Target.VERSION, Result.GREATER, 0));
    expectError(await d.kv('Txn', { compare: compares }), grpc.status.INVALID_ARGUMENT, tooMany);
    okOf(await d.kv('Txn', { compare: compares.slice(1), success: [get('a')] }));
    // A nested txn gets what its parent left: 128 - (the parent's widest list).
    expectError(await d.kv('Txn', { success: [...puts(99, 'n/'), txn([], puts(29, 'o/'))] }),
      grpc.status.INVALID_ARGUMENT, tooMany);
    okOf(await d.kv('Txn', { success: [...puts(99, 'n/'), txn([], puts(28, 'o/'))] }));
    expectError(await d.kv('Txn', { success: [txn([], puts(128, 'q/'))] }), grpc.status.INVALID_ARGUMENT, tooMany);
    okOf(await d.kv('Txn', { success: [txn([], [txn([], puts(126, 'q/'))])] }));
    expectError(await d.kv('Txn', { success: [txn([], [txn([], puts(127, 'q/'))])] }), grpc.status.INVALID_ARGUMENT, tooMany);
    await d.kv('Range', { key: ZERO, range_end: ZERO, count_only: true });
  });
});

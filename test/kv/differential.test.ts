// Differential tests of Put, Range and DeleteRange: the same requests go to a real etcd 3.4 and
// to concord, and every answer (header revision included, errors by code and message) must be
// equal. See test/helpers/differential.ts for what is compared.
//
// The tests of one describe block share one pair of servers and run in order: each builds on the
// state the previous ones left (revisions must keep matching from one test to the next).

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import Long from 'long';
import { etcdserverpb } from '../../src/gen/proto';
import { etcdSkipReason } from '../helpers/etcd';
import { prefixEnd } from '../helpers/grpc_client';
import { b, DiffPair, expectError, okOf, revOf } from '../helpers/differential';

const SortOrder = etcdserverpb.RangeRequest.SortOrder;
const SortTarget = etcdserverpb.RangeRequest.SortTarget;
const ZERO = Buffer.from([0]);

describe('differential vs etcd: Put', { skip: etcdSkipReason() }, () => {
  let d: DiffPair;
  before(async () => {
    d = await DiffPair.start();
  });
  after(async () => {
    await d?.stop();
  });

  test('versions and revisions across put / delete / put (a tombstone resets the version)', async () => {
    assert.equal(revOf(await d.kv('Range', { key: b('a') })), 1, 'both start at revision 1');
    assert.equal(revOf(await d.kv('Put', { key: b('a'), value: b('1') })), 2);
    await d.kv('Put', { key: b('a'), value: b('2'), prev_kv: true });
    await d.kv('Put', { key: b('b'), value: b('x'), prev_kv: true }, 'prev_kv of a new key');
    await d.kv('Put', { key: b('a'), value: b(''), prev_kv: true }, 'empty value');
    await d.kv('Range', { key: b('a') });
    await d.kv('DeleteRange', { key: b('a'), prev_kv: true });
    await d.kv('Range', { key: b('a') });
    await d.kv('Put', { key: b('a'), value: b('3'), prev_kv: true }, 'recreated: no prev_kv');
    await d.kv('Put', { key: b('a'), value: b('4'), prev_kv: true });
    await d.kv('Range', { key: b('a') }, 'version 2 of the second generation');
    for (let rev = 1; rev <= revOf(await d.kv('Range', { key: b('a') })) + 1; rev++) {
      await d.kv('Range', { key: b('a'), revision: rev }, `history at ${rev}`);
    }
  });

  test('binary keys and values', async () => {
    await d.kv('Put', { key: Buffer.from([0]), value: Buffer.from([0, 1, 2]) });
    await d.kv('Put', { key: Buffer.from([0xff, 0xfe]), value: Buffer.from([0xff]) });
    await d.kv('Put', { key: Buffer.from([0, 0]), value: b('nul nul') });
    await d.kv('Range', { key: Buffer.from([0]) });
    await d.kv('Range', { key: ZERO, range_end: ZERO }, 'everything');
    await d.kv('Range', { key: Buffer.from([0xff]), range_end: ZERO });
  });

  test('ignore_value, ignore_lease and their errors', async () => {
    await d.kv('Put', { key: b('iv'), value: b('orig') });
    await d.kv('Put', { key: b('iv'), ignore_value: true, prev_kv: true }, 'keeps the value');
    await d.kv('Range', { key: b('iv') });
    expectError(await d.kv('Put', { key: b('iv-missing'), ignore_value: true }),
      grpc.status.INVALID_ARGUMENT, 'etcdserver: key not found');
    expectError(await d.kv('Put', { key: b('iv'), value: b('x'), ignore_value: true }),
      grpc.status.INVALID_ARGUMENT, 'etcdserver: value is provided');
    expectError(await d.kv('Put', { key: b('iv-missing'), value: b('x'), ignore_value: true }),
      grpc.status.INVALID_ARGUMENT, 'etcdserver: value is provided');
    await d.kv('Put', { key: b('iv'), value: b('new'), ignore_lease: true, prev_kv: true });
    await d.kv('Put', { key: b('iv'), ignore_lease: true, ignore_value: true, prev_kv: true });
    expectError(await d.kv('Put', { key: b('il-missing'), value: b('x'), ignore_lease: true }),
      grpc.status.INVALID_ARGUMENT, 'etcdserver: key not found');
    expectError(await d.kv('Put', { key: b('iv'), value: b('x'), ignore_lease: true, lease: 5 }),
      grpc.status.INVALID_ARGUMENT, 'etcdserver: lease is provided');
    await d.kv('Range', { key: b('iv') }, 'nothing changed by the refused puts');
  });

  test('lease that does not exist', async () => {
    // Concord has no lessor yet (issue #5): no lease exists, exactly like an etcd on which none
    // was granted, so these answers must already match.
    expectError(await d.kv('Put', { key: b('l'), value: b('x'), lease: 0x1234 }),
      grpc.status.NOT_FOUND, 'etcdserver: requested lease not found');
    expectError(await d.kv('Put', { key: b('iv'), ignore_value: true, lease: 0x1234 }),
      grpc.status.NOT_FOUND, 'etcdserver: requested lease not found');
    // Plain Put checks the lease before the key (etcd apply.go Put, txn == nil).
    expectError(await d.kv('Put', { key: b('iv-missing'), ignore_value: true, lease: 0x1234 }),
      grpc.status.NOT_FOUND, 'etcdserver: requested lease not found');
    await d.kv('Range', { key: b('l') });
  });

  test('empty key', async () => {
    expectError(await d.kv('Put', { key: b(''), value: b('x') }), grpc.status.INVALID_ARGUMENT,
      'etcdserver: key is not provided');
    expectError(await d.kv('Put', { value: b('x') }), grpc.status.INVALID_ARGUMENT, 'etcdserver: key is not provided');
    // checks run in etcd's order: the key first
    expectError(await d.kv('Put', { key: b(''), value: b('x'), ignore_value: true }),
      grpc.status.INVALID_ARGUMENT, 'etcdserver: key is not provided');
    await d.kv('Range', { key: ZERO, range_end: ZERO, count_only: true });
  });
});

describe('differential vs etcd: Range', { skip: etcdSkipReason() }, () => {
  let d: DiffPair;
  let last = 0;
  before(async () => {
    d = await DiffPair.start();
    // Keys written out of key order, with values out of key order, some updated several times,
    // so that every sort target orders them differently.
    const writes: [string, string][] = [
      ['a/3', 'm'], ['b', 'c'], ['a/1', 'z'], ['a/2', 'a'], ['a/3', 'b'], ['c', 'y'],
      ['a/1', 'k'], ['a', 'q'], ['a/4', 'k'], ['b/1', 'd'], ['a/2', 'e'], ['a/2', 'f'], ['ab', 'p'],
    ];
    for (const [k, v] of writes) last = revOf(await d.kv('Put', { key: b(k), value: b(v) }));
    await d.kv('DeleteRange', { key: b('c') });
    last = revOf(await d.kv('Put', { key: b('c'), value: b('again') }));
  });
  after(async () => {
    await d?.stop();
  });

  test('single keys, ranges, prefixes, from-key', async () => {
    await d.kv('Range', { key: b('a/1') });
    await d.kv('Range', { key: b('nope') });
    await d.kv('Range', { key: b('a'), range_end: b('b') });
    await d.kv('Range', { key: b('a/'), range_end: prefixEnd('a/') });
    await d.kv('Range', { key: b('a'), range_end: prefixEnd('a') });
    await d.kv('Range', { key: b('b'), range_end: b('a') }, 'range_end before key');
    await d.kv('Range', { key: b('b'), range_end: b('b') }, 'range_end equal to key');
    await d.kv('Range', { key: ZERO, range_end: ZERO }, 'all keys');
    await d.kv('Range', { key: b('a/3'), range_end: ZERO }, 'from key');
    await d.kv('Range', { key: b('zzz'), range_end: ZERO }, 'from a key past the end');
    await d.kv('Range', { key: ZERO }, 'the single key \\0');
    await d.kv('Range', { key: b('a'), range_end: Buffer.from([0, 0]) }, 'range_end \\0\\0 is not from-key');
    await d.kv('Range', { key: b('a'), range_end: Buffer.from([0xff]) });
  });

  test('limit, more and count', async () => {
    for (const limit of [-1, 0, 1, 2, 5, 6, 7, 100]) {
      await d.kv('Range', { key: b('a'), range_end: prefixEnd('a'), limit }, `limit ${limit}`);
      await d.kv('Range', { key: ZERO, range_end: ZERO, limit }, `all, limit ${limit}`);
      await d.kv('Range', { key: ZERO, range_end: ZERO, limit, keys_only: true });
      await d.kv('Range', { key: ZERO, range_end: ZERO, limit, count_only: true });
    }
    await d.kv('Range', { key: b('a/1'), limit: 1 });
    await d.kv('Range', { key: b('nope'), limit: 1 });
  });

  test('keys_only, count_only, serializable', async () => {
    await d.kv('Range', { key: b('a'), range_end: prefixEnd('a'), keys_only: true });
    await d.kv('Range', { key: b('a'), range_end: prefixEnd('a'), count_only: true });
    await d.kv('Range', { key: b('a'), range_end: prefixEnd('a'), count_only: true, keys_only: true });
    await d.kv('Range', { key: b('a/1'), keys_only: true });
    await d.kv('Range', { key: b('a/1'), count_only: true });
    await d.kv('Range', { key: b('a'), range_end: prefixEnd('a'), serializable: true });
    await d.kv('Range', { key: b('a/2'), serializable: true, revision: 3 });
  });

  test('every revision of history', async () => {
    for (let rev = -1; rev <= last + 2; rev++) {
      await d.kv('Range', { key: ZERO, range_end: ZERO, revision: rev }, `all at ${rev}`);
      await d.kv('Range', { key: b('c'), revision: rev }, `c at ${rev}`);
      await d.kv('Range', { key: b('a/'), range_end: prefixEnd('a/'), revision: rev, limit: 2 });
      await d.kv('Range', { key: b('a/'), range_end: prefixEnd('a/'), revision: rev, count_only: true });
    }
  });

  test('sort order x sort target, with and without limit', async () => {
    const orders = [SortOrder.NONE, SortOrder.ASCEND, SortOrder.DESCEND];
    const targets = [SortTarget.KEY, SortTarget.VERSION, SortTarget.CREATE, SortTarget.MOD, SortTarget.VALUE];
    for (const sort_order of orders) {
      for (const sort_target of targets) {
        for (const limit of [0, 1, 3]) {
          const label = `order ${sort_order} target ${sort_target} limit ${limit}`;
          await d.kv('Range', { key: ZERO, range_end: ZERO, sort_order, sort_target, limit }, label);
          await d.kv('Range', { key: b('a/'), range_end: prefixEnd('a/'), sort_order, sort_target, limit,
            keys_only: true }, label);
          await d.kv('Range', { key: ZERO, range_end: ZERO, sort_order, sort_target, limit, revision: 8 }, label);
          await d.kv('Range', { key: b('a/2'), sort_order, sort_target, limit }, label);
        }
      }
    }
  });

  test('sort order outside the enum', async () => {
    // etcd 3.4 sorts only for ASCEND and DESCEND; any other order leaves key order (and, being
    // != NONE, still turns the limit into fetch-all-then-truncate).
    for (const sort_order of [3, 7, 1000] as unknown as etcdserverpb.RangeRequest.SortOrder[]) {
      for (const sort_target of [SortTarget.KEY, SortTarget.VERSION, SortTarget.VALUE, 9 as unknown as etcdserverpb.RangeRequest.SortTarget]) {
        await d.kv('Range', { key: ZERO, range_end: ZERO, sort_order, sort_target }, `order ${sort_order}`);
        await d.kv('Range', { key: ZERO, range_end: ZERO, sort_order, sort_target, limit: 2 });
      }
    }
  });

  test('sort target outside the enum', async () => {
    // With the order NONE, ASCEND or DESCEND, etcd 3.4 sorts with a nil sorter and the whole
    // process panics (apply.go Range), so these are not sent to etcd. Concord answers as etcd 3.5
    // does (v3rpc/key.go checkRangeRequest).
    const bad = 9 as unknown as etcdserverpb.RangeRequest.SortTarget;
    for (const sort_order of [SortOrder.NONE, SortOrder.ASCEND, SortOrder.DESCEND]) {
      expectError(await d.concordOnly('Range', { key: ZERO, range_end: ZERO, sort_order, sort_target: bad }),
        grpc.status.INVALID_ARGUMENT, 'etcdserver: invalid sort option');
    }
    // With an order outside the enum etcd 3.4 does not sort at all and answers (compared above,
    // in 'sort order outside the enum'); the server is still up:
    await d.kv('Range', { key: ZERO, range_end: ZERO, sort_order: 7 as unknown as etcdserverpb.RangeRequest.SortOrder,
      sort_target: bad });
  });

  test('min/max mod and create revision filters and their combinations', async () => {
    const revs = [0, 2, 4, 5, 8, 11, last, last + 5];
    for (const min_mod_revision of revs) {
      for (const max_mod_revision of revs) {
        await d.kv('Range', { key: ZERO, range_end: ZERO, min_mod_revision, max_mod_revision },
          `mod in [${min_mod_revision}, ${max_mod_revision}]`);
      }
    }
    for (const min_create_revision of revs) {
      for (const max_create_revision of revs) {
        await d.kv('Range', { key: ZERO, range_end: ZERO, min_create_revision, max_create_revision });
      }
    }
    await d.kv('Range', { key: ZERO, range_end: ZERO, min_mod_revision: 5, max_create_revision: 10, limit: 2 });
    await d.kv('Range', { key: ZERO, range_end: ZERO, min_mod_revision: 5, limit: 1, count_only: true });
    await d.kv('Range', { key: ZERO, range_end: ZERO, max_mod_revision: 9, revision: 9, limit: 3,
      sort_order: SortOrder.DESCEND, sort_target: SortTarget.VALUE });
    await d.kv('Range', { key: ZERO, range_end: ZERO, min_create_revision: 3, keys_only: true,
      sort_order: SortOrder.ASCEND, sort_target: SortTarget.MOD, limit: 4 });
    await d.kv('Range', { key: b('a/'), range_end: prefixEnd('a/'), min_mod_revision: 1000 });
    await d.kv('Range', { key: b('a/'), range_end: prefixEnd('a/'), max_create_revision: -1 });
    await d.kv('Range', { key: b('a/'), range_end: prefixEnd('a/'), min_mod_revision: -5, max_mod_revision: -1 });
  });

  test('64-bit extremes', async () => {
    const max = Long.MAX_VALUE;
    const min = Long.MIN_VALUE;
    for (const v of [max, min, Long.fromNumber(2 ** 53 + 1), Long.fromNumber(-(2 ** 53) - 1)]) {
      await d.kv('Range', { key: ZERO, range_end: ZERO, limit: v }, `limit ${v.toString()}`);
      await d.kv('Range', { key: ZERO, range_end: ZERO, revision: v }, `revision ${v.toString()}`);
      await d.kv('Range', { key: ZERO, range_end: ZERO, min_mod_revision: v, max_create_revision: v });
      await d.kv('Range', { key: ZERO, range_end: ZERO, max_mod_revision: v, min_create_revision: v });
      await d.kv('Txn', {
        compare: [{ key: b('a/1'), target: etcdserverpb.Compare.CompareTarget.MOD, result: etcdserverpb.Compare.CompareResult.LESS, mod_revision: v }],
        success: [{ request_range: { key: b('a/1'), revision: v } }],
      });
      await d.kv('Put', { key: b('l64'), value: b('x'), lease: v });
    }
  });

  test('empty key', async () => {
    expectError(await d.kv('Range', { key: b('') }), grpc.status.INVALID_ARGUMENT, 'etcdserver: key is not provided');
    expectError(await d.kv('Range', { range_end: ZERO }), grpc.status.INVALID_ARGUMENT, 'etcdserver: key is not provided');
    expectError(await d.kv('Range', { key: b(''), revision: 1000 }), grpc.status.INVALID_ARGUMENT,
      'etcdserver: key is not provided');
  });

  test('future revision', async () => {
    expectError(await d.kv('Range', { key: b('a'), revision: last + 1 }), grpc.status.OUT_OF_RANGE,
      'etcdserver: mvcc: required revision is a future revision');
    expectError(await d.kv('Range', { key: b('a'), revision: last + 1, count_only: true }), grpc.status.OUT_OF_RANGE,
      'etcdserver: mvcc: required revision is a future revision');
  });
});

describe('differential vs etcd: DeleteRange', { skip: etcdSkipReason() }, () => {
  let d: DiffPair;
  const fill = async (keys: string[]): Promise<void> => {
    for (const k of keys) await d.kv('Put', { key: b(k), value: b(`v-${k}`) });
  };
  before(async () => {
    d = await DiffPair.start();
  });
  after(async () => {
    await d?.stop();
  });

  test('single key, with and without prev_kv', async () => {
    await fill(['a', 'b', 'c']);
    await d.kv('DeleteRange', { key: b('a') });
    await d.kv('DeleteRange', { key: b('b'), prev_kv: true });
    await d.kv('Range', { key: ZERO, range_end: ZERO });
  });

  test('deleting nothing does not bump the revision', async () => {
    const before = revOf(await d.kv('Range', { key: b('c') }));
    const del = await d.kv('DeleteRange', { key: b('a') });
    assert.equal(revOf(del), before);
    await d.kv('DeleteRange', { key: b('zz'), range_end: b('zzz'), prev_kv: true });
    await d.kv('DeleteRange', { key: b('x'), range_end: b('a') }, 'inverted range');
    await d.kv('DeleteRange', { key: b('x'), range_end: ZERO, prev_kv: true }, 'from key, nothing there');
    assert.equal(revOf(await d.kv('Range', { key: b('c') })), before);
  });

  test('range, prefix and from-key', async () => {
    await fill(['p/1', 'p/2', 'p/3', 'q', 'r/1', 'r/2', 's', 't']);
    await d.kv('DeleteRange', { key: b('p/2'), range_end: b('q'), prev_kv: true });
    await d.kv('DeleteRange', { key: b('r/'), range_end: prefixEnd('r/') });
    await d.kv('Range', { key: ZERO, range_end: ZERO });
    await d.kv('DeleteRange', { key: b('s'), range_end: ZERO, prev_kv: true });
    await d.kv('Range', { key: ZERO, range_end: ZERO });
    await fill(['p/2', 's']);
    await d.kv('DeleteRange', { key: ZERO, range_end: ZERO, prev_kv: true }, 'everything');
    await d.kv('Range', { key: ZERO, range_end: ZERO, count_only: true });
  });

  test('history after deletes', async () => {
    const now = revOf(await d.kv('Range', { key: b('a') }));
    for (let rev = 1; rev <= now; rev++) {
      await d.kv('Range', { key: ZERO, range_end: ZERO, revision: rev }, `at ${rev}`);
    }
    await fill(['a']);
    await d.kv('Range', { key: b('a') }, 'recreated after delete');
  });

  test('empty key', async () => {
    expectError(await d.kv('DeleteRange', { key: b('') }), grpc.status.INVALID_ARGUMENT, 'etcdserver: key is not provided');
    expectError(await d.kv('DeleteRange', { range_end: ZERO }), grpc.status.INVALID_ARGUMENT,
      'etcdserver: key is not provided');
    okOf(await d.kv('Range', { key: b('a') }));
  });
});

describe('differential vs etcd: sorting many keys with ties', { skip: etcdSkipReason() }, () => {
  // etcd sorts with Go's sort.Sort, which is not stable beyond 12 elements: the order of keys
  // with equal versions, values or revisions is whatever Go's pdqsort leaves, and must match.
  let d: DiffPair;
  const key = (i: number): Buffer => b(`k${String(i).padStart(3, '0')}`);
  before(async () => {
    d = await DiffPair.start();
    // Value patterns per block of 100 keys: alternating, descending runs, five values scattered,
    // nearly all equal (these make pdqsort break patterns and partition equal elements).
    const value = (i: number): string => {
      if (i < 100) return 'ab'[i % 2]!;
      if (i < 200) return String.fromCharCode(97 + Math.floor((200 - i) / 7));
      if (i < 300) return String.fromCharCode(97 + ((i * 7919) % 5));
      return i % 17 === 0 ? 'z' : 'a';
    };
    const ops: etcdserverpb.RequestOp.$Properties[] = [];
    for (let i = 0; i < 400; i++) {
      ops.push({ request_put: { key: key(i), value: b(value(i)) } });
      if (ops.length === 100) await d.kv('Txn', { success: ops.splice(0) });
    }
    // different versions, and mod revisions shared by many keys
    for (let i = 0; i < 400; i += 3) ops.push({ request_put: { key: key(i), value: b(value(i)) } });
    while (ops.length > 0) await d.kv('Txn', { success: ops.splice(0, 50) });
    for (let i = 5; i < 400; i += 37) await d.kv('Put', { key: key(i), value: b('m') });
  });
  after(async () => {
    await d?.stop();
  });

  test('sort targets and orders over ranges of 13 to 400 keys', async () => {
    const spans = [[0, 13], [0, 100], [100, 200], [200, 300], [300, 400], [0, 400], [50, 250], [150, 400], [290, 330]];
    for (const [lo, hi] of spans as [number, number][]) {
      for (const sort_target of [SortTarget.VERSION, SortTarget.CREATE, SortTarget.MOD, SortTarget.VALUE]) {
        for (const sort_order of [SortOrder.ASCEND, SortOrder.DESCEND]) {
          await d.kv('Range', { key: key(lo), range_end: key(hi), sort_order, sort_target, keys_only: true },
            `[${lo}, ${hi}) target ${sort_target} order ${sort_order}`);
        }
      }
      await d.kv('Range', { key: key(lo), range_end: key(hi), sort_target: SortTarget.VALUE, limit: 20, keys_only: true });
      await d.kv('Range', { key: key(lo), range_end: key(hi), sort_order: SortOrder.DESCEND, sort_target: SortTarget.KEY,
        limit: 5, keys_only: true });
    }
  });
});

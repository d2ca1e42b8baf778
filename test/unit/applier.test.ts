// Applier: etcd 3.4's apply semantics (etcdserver/apply.go) on a real KVStore. Requests go
// through protobuf encode/decode first, as they do when they come out of the raft log, so
// oneof fields (Compare.target_union, RequestOp.request) look exactly as in production.
// Expectations marked "etcd 3.4" were checked against a real etcd 3.4.23.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';
import Long from 'long';

import { etcdserverpb, mvccpb } from '../../src/gen/proto';
import { Applier } from '../../src/apply/applier';
import { KVStore, toNumber } from '../../src/mvcc/kvstore';
import { Backend } from '../../src/storage/backend';
import { errCompacted, errFutureRev, errKeyNotFound, errLeaseNotFound } from '../../src/util/errors';

const Target = etcdserverpb.Compare.CompareTarget;
const Result = etcdserverpb.Compare.CompareResult;
const Order = etcdserverpb.RangeRequest.SortOrder;
const SortBy = etcdserverpb.RangeRequest.SortTarget;

type TxnInit = etcdserverpb.TxnRequest.$Properties;
type CompareInit = etcdserverpb.Compare.$Properties;
type OpInit = etcdserverpb.RequestOp.$Properties;

const b = (s: string): Buffer => Buffer.from(s, 'latin1');
const s = (u: Uint8Array | null | undefined): string => (u ? Buffer.from(u).toString('latin1') : '');

function txnReq(t: TxnInit): etcdserverpb.TxnRequest {
  return etcdserverpb.TxnRequest.decode(etcdserverpb.TxnRequest.encode(t).finish());
}
function rangeReq(r: etcdserverpb.RangeRequest.$Properties): etcdserverpb.RangeRequest {
  return etcdserverpb.RangeRequest.decode(etcdserverpb.RangeRequest.encode(r).finish());
}
function putReq(p: etcdserverpb.PutRequest.$Properties): etcdserverpb.PutRequest {
  return etcdserverpb.PutRequest.decode(etcdserverpb.PutRequest.encode(p).finish());
}
function delReq(d: etcdserverpb.DeleteRangeRequest.$Properties): etcdserverpb.DeleteRangeRequest {
  return etcdserverpb.DeleteRangeRequest.decode(etcdserverpb.DeleteRangeRequest.encode(d).finish());
}

interface Kv { key: string; value: string; create: number; mod: number; version: number; lease: number }

function kv(x: mvccpb.KeyValue.$Properties | Uint8Array): Kv {
  const k = x instanceof Uint8Array ? mvccpb.KeyValue.decode(x) : x;
  return {
    key: s(k.key), value: s(k.value), create: toNumber(k.create_revision), mod: toNumber(k.mod_revision),
    version: toNumber(k.version), lease: toNumber(k.lease),
  };
}

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'concord-applier-'));
let seq = 0;
let backend: Backend;
let store: KVStore;
let ap: Applier;

after(async () => {
  if (backend !== undefined) await backend.close();
  fs.rmSync(tmpRoot, { recursive: true, force: true });
});

async function freshStore(): Promise<void> {
  if (backend !== undefined) await backend.close();
  const dir = path.join(tmpRoot, 'db' + seq++);
  fs.mkdirSync(dir);
  backend = new Backend({ path: dir, mapSizeBytes: 32 * 1024 * 1024, batchIntervalMs: 10, batchLimit: 1000 });
  store = new KVStore(backend);
  store.restore();
  ap = new Applier(store);
  ap.leases = { exists: (id) => toNumber(id) === 7 || toNumber(id) === 8 };
}

function put(key: string, value: string, lease = 0): number {
  return toNumber(ap.put(null, putReq({ key: b(key), value: b(value), lease })).header!.revision);
}

function get(key: string, end?: string): Kv[] {
  return ap.range(null, rangeReq({ key: b(key), range_end: end === undefined ? null : b(end) })).kvs.map(kv);
}

function txn(t: TxnInit): etcdserverpb.TxnResponse.$Properties {
  return ap.txn(txnReq(t));
}

function cmp(c: CompareInit): boolean {
  return txn({ compare: [c] }).succeeded === true;
}

describe('Txn compares', () => {
  before(async () => {
    await freshStore();
    put('k', 'a'); // rev 2
    put('k', 'm', 7); // rev 3: create 2, mod 3, version 2, value "m", lease 7
  });

  // actual values of "k" per target, with operands below, equal and above
  const targets: { target: number; field: keyof CompareInit; operands: [unknown, unknown, unknown] }[] = [
    { target: Target.VERSION, field: 'version', operands: [1, 2, 3] },
    { target: Target.CREATE, field: 'create_revision', operands: [1, 2, 3] },
    { target: Target.MOD, field: 'mod_revision', operands: [2, 3, 4] },
    { target: Target.VALUE, field: 'value', operands: [b('l'), b('m'), b('mm')] },
    { target: Target.LEASE, field: 'lease', operands: [6, 7, 8] },
  ];
  // [EQUAL, NOT_EQUAL, GREATER, LESS] for operand below / equal / above the actual value
  const expect: Record<string, [boolean, boolean, boolean]> = {
    [Result.EQUAL]: [false, true, false],
    [Result.NOT_EQUAL]: [true, false, true],
    [Result.GREATER]: [true, false, false], // actual > operand
    [Result.LESS]: [false, false, true], // actual < operand
  };

  test('every target x result on an existing key', () => {
    for (const t of targets) {
      for (const result of [Result.EQUAL, Result.NOT_EQUAL, Result.GREATER, Result.LESS]) {
        for (let i = 0; i < 3; i++) {
          const c: CompareInit = { key: b('k'), target: t.target, result, [t.field]: t.operands[i] };
          assert.equal(cmp(c), expect[result]![i], `target ${t.target} result ${result} operand #${i}`);
        }
      }
    }
  });

  test('a missing key compares as a zero KeyValue, except VALUE which always fails', () => {
    const missing = b('nokey');
    assert.equal(cmp({ key: missing, target: Target.VERSION, result: Result.EQUAL, version: 0 }), true);
    assert.equal(cmp({ key: missing, target: Target.VERSION, result: Result.LESS, version: 1 }), true);
    assert.equal(cmp({ key: missing, target: Target.CREATE, result: Result.EQUAL, create_revision: 0 }), true);
    assert.equal(cmp({ key: missing, target: Target.MOD, result: Result.GREATER, mod_revision: 0 }), false);
    assert.equal(cmp({ key: missing, target: Target.LEASE, result: Result.EQUAL, lease: 0 }), true);
    assert.equal(cmp({ key: missing, target: Target.VALUE, result: Result.EQUAL, value: b('') }), false);
    assert.equal(cmp({ key: missing, target: Target.VALUE, result: Result.NOT_EQUAL, value: b('x') }), false);
    assert.equal(cmp({ key: missing, target: Target.VALUE, result: Result.LESS, value: b('x') }), false);
  });

  test('the operand comes from the oneof member of the target; another member counts as 0', () => {
    // target VERSION with create_revision set: compared against 0
    assert.equal(cmp({ key: b('k'), target: Target.VERSION, result: Result.GREATER, create_revision: 100 }), true);
    assert.equal(cmp({ key: b('k'), target: Target.VALUE, result: Result.GREATER, version: 5 }), true);
    // no operand at all: 0 / empty
    assert.equal(cmp({ key: b('k'), target: Target.MOD, result: Result.GREATER }), true);
    assert.equal(cmp({ key: b('k'), target: Target.MOD, result: Result.EQUAL }), false);
  });

  test('int64 operands as Long, including values beyond 2^53', () => {
    assert.equal(cmp({ key: b('k'), target: Target.MOD, result: Result.EQUAL, mod_revision: Long.fromNumber(3) }), true);
    assert.equal(cmp({ key: b('k'), target: Target.MOD, result: Result.LESS, mod_revision: Long.fromString('9007199254740993') }), true);
    assert.equal(cmp({ key: b('k'), target: Target.LEASE, result: Result.GREATER, lease: Long.fromString('-9223372036854775808') }), true);
  });

  test('unknown target or result values behave as in etcd 3.4', () => {
    // etcd 3.4: an unknown target leaves the comparison result at 0; an unknown result is true.
    assert.equal(cmp({ key: b('k'), target: 99 as never, result: Result.EQUAL }), true);
    assert.equal(cmp({ key: b('k'), target: 99 as never, result: Result.NOT_EQUAL }), false);
    assert.equal(cmp({ key: b('k'), target: 99 as never, result: Result.GREATER }), false);
    assert.equal(cmp({ key: b('k'), target: Target.VERSION, result: 9 as never, version: 1 }), true);
    assert.equal(cmp({ key: b('nokey'), target: Target.VERSION, result: 9 as never, version: 1 }), true);
    assert.equal(cmp({ key: b('nokey'), target: Target.VALUE, result: 9 as never, value: b('x') }), false);
  });

  test('all compares must hold', () => {
    const ok: CompareInit = { key: b('k'), target: Target.VERSION, result: Result.EQUAL, version: 2 };
    const bad: CompareInit = { key: b('k'), target: Target.VERSION, result: Result.EQUAL, version: 1 };
    assert.equal(txn({ compare: [ok, ok] }).succeeded, true);
    assert.equal(txn({ compare: [ok, bad] }).succeeded, false);
    assert.equal(txn({ compare: [bad, ok] }).succeeded, false);
    assert.equal(txn({ compare: [] }).succeeded, true);
  });
});

describe('Txn range compares', () => {
  before(async () => {
    await freshStore();
    put('r1', 'x'); // 2
    put('r2', 'x'); // 3
    put('r2', 'y'); // 4: version 2
    put('r3', 'x'); // 5
  });

  test('every key in the range must satisfy the compare', () => {
    const v = (key: string, end: Buffer, result: number, version: number): boolean =>
      cmp({ key: b(key), range_end: end, target: Target.VERSION, result, version });
    assert.equal(v('r1', b('r4'), Result.EQUAL, 1), false); // r2 has version 2
    assert.equal(v('r1', b('r4'), Result.GREATER, 0), true);
    assert.equal(v('r1', b('r4'), Result.LESS, 3), true);
    assert.equal(v('r1', b('r4'), Result.LESS, 2), false);
    assert.equal(v('r1', b('r2'), Result.EQUAL, 1), true); // end excluded
    assert.equal(v('r3', Buffer.from([0]), Result.EQUAL, 1), true); // from r3 to the end
    assert.equal(v('r2', Buffer.from([0]), Result.EQUAL, 1), false);
    assert.equal(cmp({ key: b('r1'), range_end: b('r4'), target: Target.VALUE, result: Result.EQUAL, value: b('x') }), false);
    assert.equal(cmp({ key: b('r1'), range_end: b('r2\0'), target: Target.VALUE, result: Result.EQUAL, value: b('x') }), false);
    assert.equal(cmp({ key: b('r1'), range_end: b('r1\0'), target: Target.VALUE, result: Result.EQUAL, value: b('x') }), true);
  });

  test('an empty range compares like a missing key', () => {
    assert.equal(cmp({ key: b('s'), range_end: b('t'), target: Target.VERSION, result: Result.EQUAL, version: 0 }), true);
    assert.equal(cmp({ key: b('s'), range_end: b('t'), target: Target.CREATE, result: Result.GREATER, create_revision: 0 }), false);
    assert.equal(cmp({ key: b('s'), range_end: b('t'), target: Target.VALUE, result: Result.NOT_EQUAL, value: b('q') }), false);
    // inverted range: empty too
    assert.equal(cmp({ key: b('r3'), range_end: b('r1'), target: Target.VERSION, result: Result.EQUAL, version: 0 }), true);
  });
});

describe('Txn execution', () => {
  beforeEach(freshStore);

  test('success and failure branches, header revisions, responses in order', () => {
    put('a', '1'); // 2
    const yes = txn({
      compare: [{ key: b('a'), target: Target.VALUE, result: Result.EQUAL, value: b('1') }],
      success: [
        { request_put: { key: b('a'), value: b('2'), prev_kv: true } },
        { request_range: { key: b('a') } },
        { request_put: { key: b('b'), value: b('3') } },
        { request_delete_range: { key: b('zz') } },
      ],
      failure: [{ request_put: { key: b('f'), value: b('x') } }],
    });
    assert.equal(yes.succeeded, true);
    assert.equal(toNumber(yes.header!.revision), 3);
    const r = yes.responses!;
    assert.equal(r.length, 4);
    assert.equal(toNumber(r[0]!.response_put!.header!.revision), 3);
    assert.deepEqual(kv(r[0]!.response_put!.prev_kv!), { key: 'a', value: '1', create: 2, mod: 2, version: 1, lease: 0 });
    // a read inside the txn sees the txn's earlier writes and reports the txn's revision
    assert.equal(toNumber(r[1]!.response_range!.header!.revision), 3);
    assert.deepEqual(r[1]!.response_range!.kvs!.map(kv), [{ key: 'a', value: '2', create: 2, mod: 3, version: 2, lease: 0 }]);
    assert.equal(toNumber(r[1]!.response_range!.count), 1);
    assert.equal(toNumber(r[2]!.response_put!.header!.revision), 3);
    assert.equal(toNumber(r[3]!.response_delete_range!.deleted), 0);
    assert.equal(toNumber(r[3]!.response_delete_range!.header!.revision), 3, 'deleting nothing after a write');
    assert.equal(store.currentRev, 3);
    assert.deepEqual(store.index.get('b')!.subs, [1]);
    assert.equal(store.index.get('f'), undefined);

    const no = txn({
      compare: [{ key: b('a'), target: Target.VALUE, result: Result.EQUAL, value: b('1') }],
      success: [{ request_put: { key: b('s'), value: b('x') } }],
      failure: [{ request_put: { key: b('f'), value: b('x') } }, { request_range: { key: b('a') } }],
    });
    assert.equal(no.succeeded, false);
    assert.equal(toNumber(no.header!.revision), 4);
    assert.equal(no.responses!.length, 2);
    assert.equal(get('f')[0]!.mod, 4);
    assert.deepEqual(get('s'), []);
  });

  test('a read-only txn does not move the revision', () => {
    put('a', '1');
    const r = txn({ success: [{ request_range: { key: b('a') } }, { request_delete_range: { key: b('none') } }] });
    assert.equal(toNumber(r.header!.revision), 2);
    assert.equal(toNumber(r.responses![1]!.response_delete_range!.header!.revision), 2);
    assert.equal(store.currentRev, 2);
    const empty = txn({});
    assert.equal(empty.succeeded, true);
    assert.deepEqual(empty.responses, []);
    assert.equal(toNumber(empty.header!.revision), 2);
  });

  test('the same key written twice in one txn: two sub revisions, version + 2', () => {
    put('k', '0'); // 2
    const r = txn({ success: [
      { request_put: { key: b('k'), value: b('1') } },
      { request_put: { key: b('k'), value: b('2'), prev_kv: true } },
    ] });
    assert.equal(toNumber(r.header!.revision), 3);
    assert.equal(kv(r.responses![1]!.response_put!.prev_kv!).value, '1', 'prev_kv sees the first put');
    assert.deepEqual(get('k'), [{ key: 'k', value: '2', create: 2, mod: 3, version: 3, lease: 0 }]);
    assert.deepEqual([store.index.get('k')!.mains, store.index.get('k')!.subs], [[2, 3, 3], [0, 0, 1]]);
  });

  test('nested txns: all compares are evaluated before any write', () => {
    const r = txn({ success: [
      { request_put: { key: b('a'), value: b('1') } },
      { request_txn: {
        // "a" does not exist before the outer txn: version 0 holds although the put ran first
        compare: [{ key: b('a'), target: Target.VERSION, result: Result.EQUAL, version: 0 }],
        success: [{ request_range: { key: b('a') } }, { request_put: { key: b('b'), value: b('2') } }],
        failure: [{ request_put: { key: b('c'), value: b('x') } }],
      } },
    ] });
    assert.equal(toNumber(r.header!.revision), 2);
    const nested = r.responses![1]!.response_txn!;
    assert.equal(nested.succeeded, true);
    assert.equal(toNumber(nested.header?.revision), 0, 'nested txn headers carry no revision (etcd)');
    assert.deepEqual(nested.responses![0]!.response_range!.kvs!.map((x) => kv(x).value), ['1']);
    assert.equal(toNumber(nested.responses![1]!.response_put!.header!.revision), 2);
    assert.deepEqual(get('b').map((x) => x.mod), [2]);
    assert.deepEqual(get('c'), []);
  });

  test('nested txn paths: siblings after a nested-nested txn take their own compare result', () => {
    put('x', '1'); // 2
    const t = (v: string): CompareInit => ({ key: b('x'), target: Target.VALUE, result: Result.EQUAL, value: b(v) });
    // path: outer T, n1 F, n1a F, n2 T, n3 F
    const r = txn({
      compare: [t('1')],
      success: [
        { request_txn: {
          compare: [t('2')],
          success: [{ request_put: { key: b('n1-then'), value: b('') } }],
          failure: [{ request_txn: {
            compare: [t('3')],
            success: [{ request_put: { key: b('n1a-then'), value: b('') } }],
            failure: [{ request_put: { key: b('n1a-else'), value: b('') } }],
          } }],
        } },
        { request_txn: {
          compare: [t('1')],
          success: [{ request_put: { key: b('n2-then'), value: b('') } }],
          // would fail its check (key not found) if this branch were taken
          failure: [{ request_put: { key: b('n2-else'), ignore_value: true } }],
        } },
        { request_txn: {
          compare: [t('4')],
          success: [{ request_put: { key: b('n3-then'), value: b('') } }],
          failure: [{ request_put: { key: b('n3-else'), value: b('') } }],
        } },
      ],
    });
    assert.equal(r.succeeded, true);
    const [n1, n2, n3] = r.responses!.map((x) => x.response_txn!);
    assert.equal(n1!.succeeded, false);
    assert.equal(n1!.responses![0]!.response_txn!.succeeded, false);
    assert.equal(n2!.succeeded, true);
    assert.equal(n3!.succeeded, false);
    assert.deepEqual(get('n', 'o').map((x) => x.key), ['n1a-else', 'n2-then', 'n3-else']);
  });

  test('checks run on the taken branches before anything is written', () => {
    put('a', '1'); // 2
    const missingIgnore: OpInit = { request_put: { key: b('missing'), ignore_value: true } };
    assert.throws(() => txn({ success: [{ request_put: { key: b('w'), value: b('1') } }, missingIgnore] }),
      (e) => e === errKeyNotFound);
    assert.throws(() => txn({ success: [{ request_txn: { success: [missingIgnore] } }] }),
      (e) => e === errKeyNotFound);
    assert.throws(() => txn({ success: [{ request_put: { key: b('w'), value: b('1'), lease: 5 } }] }),
      (e) => e === errLeaseNotFound);
    assert.equal(store.currentRev, 2, 'nothing written');
    assert.deepEqual(get('w'), []);
    // in a branch not taken, the same ops are not checked
    const r = txn({ success: [{ request_txn: {
      compare: [{ key: b('a'), target: Target.VERSION, result: Result.EQUAL, version: 9 }],
      success: [missingIgnore],
      failure: [{ request_put: { key: b('w'), value: b('1') } }],
    } }] });
    assert.equal(toNumber(r.header!.revision), 3);
  });

  test('ignore_value on a missing key in a txn fails with key-not-found before the lease check (etcd 3.4)', () => {
    const op: OpInit = { request_put: { key: b('missing'), ignore_value: true, lease: 5 } };
    assert.throws(() => txn({ success: [op] }), (e) => e === errKeyNotFound);
    // a plain Put checks the lease first
    assert.throws(() => ap.put(null, putReq({ key: b('missing'), ignore_value: true, lease: 5 })),
      (e) => e === errLeaseNotFound);
  });

  test('a txn whose put would fail after an earlier delete of its key is refused whole', () => {
    // [delete k, put k ignore_value] passes etcd's duplicate-key rule when the delete is a
    // from-key delete (etcd 3.4 then panics mid-txn). Concord's checks see the put would find no
    // previous value and refuse the txn before anything is written.
    put('k', 'v'); // 2
    assert.throws(() => txn({ success: [
      { request_delete_range: { key: b('k'), range_end: Buffer.from([0]) } },
      { request_put: { key: b('k'), ignore_value: true } },
    ] }), (e) => e === errKeyNotFound);
    const still = txn({ success: [{ request_range: { key: b('k') } }] });
    assert.equal(toNumber(still.header!.revision), 2, 'nothing written');
    assert.deepEqual(still.responses![0]!.response_range!.kvs!.map(kv), [{ key: 'k', value: 'v', create: 2, mod: 2, version: 1, lease: 0 }]);
    // failing before any write is an ordinary error and leaves the store as it was
    assert.throws(() => txn({ success: [
      { request_put: { key: b('gone'), ignore_value: true } },
    ] }), (e) => e === errKeyNotFound);
  });

  test('range revisions inside a txn: future, compacted, negative (etcd 3.4)', () => {
    put('a', '1'); // 2
    put('a', '2'); // 3
    put('a', '3'); // 4
    const at = (rev: number): OpInit => ({ request_range: { key: b('a'), revision: rev } });
    assert.throws(() => txn({ success: [at(5)] }), (e) => e === errFutureRev);
    // etcd checks against the revision before the txn, even if the txn writes first
    assert.throws(() => txn({ success: [{ request_put: { key: b('z'), value: b('') } }, at(5)] }),
      (e) => e === errFutureRev);
    // never compacted: compactMainRev is -1, so a negative revision is "compacted" (etcd 3.4)
    assert.throws(() => txn({ success: [at(-5)] }), (e) => e === errCompacted);
    assert.equal(store.currentRev, 4);
    ap.compaction({ revision: 3 });
    assert.throws(() => txn({ success: [at(2)] }), (e) => e === errCompacted);
    const ok = txn({ success: [at(3), at(0)] });
    assert.deepEqual(ok.responses!.map((x) => kv(x.response_range!.kvs![0]!).value), ['2', '3']);
    // in a branch not taken: no check
    assert.equal(toNumber(txn({ compare: [{ key: b('a'), target: Target.VERSION, result: Result.EQUAL, version: 0 }],
      success: [at(99)] }).header!.revision), 4);
  });
});

describe('Put', () => {
  beforeEach(freshStore);

  test('revisions, prev_kv, lease existence', () => {
    const p1 = ap.put(null, putReq({ key: b('k'), value: b('v1'), prev_kv: true }));
    assert.equal(toNumber(p1.header!.revision), 2);
    assert.equal(p1.prev_kv, undefined, 'no previous key');
    const p2 = ap.put(null, putReq({ key: b('k'), value: b('v2'), prev_kv: true, lease: 7 }));
    assert.deepEqual(kv(p2.prev_kv!), { key: 'k', value: 'v1', create: 2, mod: 2, version: 1, lease: 0 });
    assert.deepEqual(get('k'), [{ key: 'k', value: 'v2', create: 2, mod: 3, version: 2, lease: 7 }]);
    const p3 = ap.put(null, putReq({ key: b('k'), value: b('v3') }));
    assert.equal(p3.prev_kv, undefined, 'prev_kv only when asked');
    assert.throws(() => ap.put(null, putReq({ key: b('k'), value: b('v4'), lease: 5 })), (e) => e === errLeaseNotFound);
    assert.equal(store.currentRev, 4, 'a refused put does not move the revision');
  });

  test('ignore_value and ignore_lease keep the previous value / lease', () => {
    put('k', 'orig', 7); // 2
    ap.put(null, putReq({ key: b('k'), ignore_value: true, lease: 8 }));
    assert.deepEqual(get('k'), [{ key: 'k', value: 'orig', create: 2, mod: 3, version: 2, lease: 8 }]);
    ap.put(null, putReq({ key: b('k'), value: b('new'), ignore_lease: true }));
    assert.deepEqual(get('k'), [{ key: 'k', value: 'new', create: 2, mod: 4, version: 3, lease: 8 }]);
    const both = ap.put(null, putReq({ key: b('k'), ignore_value: true, ignore_lease: true, prev_kv: true }));
    assert.equal(kv(both.prev_kv!).value, 'new');
    assert.deepEqual(get('k'), [{ key: 'k', value: 'new', create: 2, mod: 5, version: 4, lease: 8 }]);
  });

  test('ignore_value / ignore_lease on a missing or deleted key: key not found, nothing written', () => {
    assert.throws(() => ap.put(null, putReq({ key: b('k'), ignore_value: true })), (e) => e === errKeyNotFound);
    assert.throws(() => ap.put(null, putReq({ key: b('k'), value: b('x'), ignore_lease: true })), (e) => e === errKeyNotFound);
    put('k', 'v'); // 2
    ap.deleteRange(null, delReq({ key: b('k') })); // 3
    assert.throws(() => ap.put(null, putReq({ key: b('k'), ignore_value: true })), (e) => e === errKeyNotFound);
    assert.equal(store.currentRev, 3);
  });

  test('an empty value is stored as empty', () => {
    put('k', '');
    assert.deepEqual(get('k'), [{ key: 'k', value: '', create: 2, mod: 2, version: 1, lease: 0 }]);
  });
});

describe('DeleteRange', () => {
  beforeEach(freshStore);

  test('prev_kvs in key order, deleted count, header revision', () => {
    put('a', '1'); // 2
    put('b', '2'); // 3
    put('c', '3'); // 4
    const r = ap.deleteRange(null, delReq({ key: b('a'), range_end: b('c'), prev_kv: true }));
    assert.equal(toNumber(r.deleted), 2);
    assert.equal(toNumber(r.header!.revision), 5);
    assert.deepEqual(r.prev_kvs!.map(kv), [
      { key: 'a', value: '1', create: 2, mod: 2, version: 1, lease: 0 },
      { key: 'b', value: '2', create: 3, mod: 3, version: 1, lease: 0 },
    ]);
    assert.deepEqual(get('a', 'z').map((x) => x.key), ['c']);
    assert.deepEqual(store.index.get('b')!.tombs, [false, true]);
    assert.deepEqual(store.index.get('b')!.subs, [0, 1], 'second delete of the txn: sub revision 1');
  });

  test('deleting nothing: revision unchanged, no prev_kvs unless asked', () => {
    put('a', '1');
    const r = ap.deleteRange(null, delReq({ key: b('x'), range_end: b('z'), prev_kv: true }));
    assert.equal(toNumber(r.deleted), 0);
    assert.equal(toNumber(r.header!.revision), 2);
    assert.deepEqual(r.prev_kvs, []);
    const r2 = ap.deleteRange(null, delReq({ key: b('a') }));
    assert.equal(r2.prev_kvs, undefined);
    assert.equal(toNumber(r2.deleted), 1);
    assert.equal(toNumber(r2.header!.revision), 3);
    // a deleted key is not deleted again
    assert.equal(toNumber(ap.deleteRange(null, delReq({ key: b('a') })).deleted), 0);
    assert.equal(store.currentRev, 3);
  });

  test('range_end "\\0" deletes from the key to the end', () => {
    for (const k of ['a', 'b', 'c']) put(k, k);
    const r = ap.deleteRange(null, delReq({ key: b('b'), range_end: Buffer.from([0]) }));
    assert.equal(toNumber(r.deleted), 2);
    assert.deepEqual(get('\0', '\0').map((x) => x.key), ['a']);
  });
});

describe('Range', () => {
  before(async () => {
    await freshStore();
    put('d', 'v1'); // 2
    put('b', 'v4'); // 3
    put('a', 'v3'); // 4
    put('c', 'v2'); // 5
    put('a', 'v0'); // 6: a version 2, create 4
    put('b', 'v5'); // 7
    put('b', 'v6'); // 8: b version 3, create 3
  });
  const keys = (r: etcdserverpb.RangeRequest.$Properties): string[] => ap.range(null, rangeReq(r)).kvs.map((x) => kv(x).key);

  test('limit, more and count', () => {
    const a = ap.range(null, rangeReq({ key: b('a'), range_end: b('z'), limit: 2 }));
    assert.deepEqual(a.kvs.map((x) => kv(x).key), ['a', 'b']);
    assert.equal(a.more, true);
    assert.equal(a.count, 4);
    assert.equal(a.revision, 8);
    const exact = ap.range(null, rangeReq({ key: b('a'), range_end: b('z'), limit: 4 }));
    assert.deepEqual([exact.kvs.length, exact.more], [4, false]);
    const single = ap.range(null, rangeReq({ key: b('c') }));
    assert.deepEqual(single.kvs.map(kv), [{ key: 'c', value: 'v2', create: 5, mod: 5, version: 1, lease: 0 }]);
  });

  test('sort by every target, both orders; a non-key target defaults to ascending', () => {
    const all = { key: b('a'), range_end: b('z') };
    assert.deepEqual(keys({ ...all, sort_order: Order.DESCEND }), ['d', 'c', 'b', 'a']);
    assert.deepEqual(keys({ ...all, sort_order: Order.ASCEND, sort_target: SortBy.KEY }), ['a', 'b', 'c', 'd']);
    assert.deepEqual(keys({ ...all, sort_order: Order.ASCEND, sort_target: SortBy.VERSION }), ['c', 'd', 'a', 'b']);
    assert.deepEqual(keys({ ...all, sort_order: Order.DESCEND, sort_target: SortBy.VERSION }), ['b', 'a', 'c', 'd']);
    assert.deepEqual(keys({ ...all, sort_order: Order.ASCEND, sort_target: SortBy.CREATE }), ['d', 'b', 'a', 'c']);
    assert.deepEqual(keys({ ...all, sort_order: Order.DESCEND, sort_target: SortBy.MOD }), ['b', 'a', 'c', 'd']);
    assert.deepEqual(keys({ ...all, sort_order: Order.ASCEND, sort_target: SortBy.VALUE }), ['a', 'd', 'c', 'b']);
    assert.deepEqual(keys({ ...all, sort_target: SortBy.MOD }), ['d', 'c', 'a', 'b'], 'NONE + MOD = ascending');
    // sort happens before the limit
    const top = ap.range(null, rangeReq({ ...all, sort_order: Order.DESCEND, sort_target: SortBy.MOD, limit: 2 }));
    assert.deepEqual(top.kvs.map((x) => kv(x).key), ['b', 'a']);
    assert.equal(top.more, true);
    assert.equal(top.count, 4);
    // etcd 3.4 accepts an unknown sort order and does not sort
    assert.deepEqual(keys({ ...all, sort_order: 7 as never }), ['a', 'b', 'c', 'd']);
  });

  test('min/max mod and create revision filters (count is before filtering, as in etcd)', () => {
    const all = { key: b('a'), range_end: b('z') };
    assert.deepEqual(keys({ ...all, min_mod_revision: 6 }), ['a', 'b']);
    assert.deepEqual(keys({ ...all, max_mod_revision: 5 }), ['c', 'd']);
    assert.deepEqual(keys({ ...all, min_create_revision: 4 }), ['a', 'c']);
    assert.deepEqual(keys({ ...all, max_create_revision: 3 }), ['b', 'd']);
    assert.deepEqual(keys({ ...all, min_mod_revision: 5, max_mod_revision: 6 }), ['a', 'c']);
    const f = ap.range(null, rangeReq({ ...all, min_mod_revision: 6, limit: 1 }));
    assert.deepEqual(f.kvs.map((x) => kv(x).key), ['a']);
    assert.equal(f.more, true);
    assert.equal(f.count, 4);
  });

  test('keys_only, count_only, historical revision, errors', () => {
    const ko = ap.range(null, rangeReq({ key: b('a'), keys_only: true }));
    assert.deepEqual(ko.kvs.map(kv), [{ key: 'a', value: '', create: 4, mod: 6, version: 2, lease: 0 }]);
    const co = ap.range(null, rangeReq({ key: b('a'), range_end: b('z'), count_only: true, limit: 1 }));
    assert.deepEqual([co.kvs.length, co.count, co.more], [0, 4, false]);
    const past = ap.range(null, rangeReq({ key: b('a'), range_end: b('z'), revision: 4 }));
    assert.deepEqual(past.kvs.map((x) => [kv(x).key, kv(x).value]), [['a', 'v3'], ['b', 'v4'], ['d', 'v1']]);
    assert.equal(past.revision, 8, 'the header carries the current revision');
    assert.throws(() => ap.range(null, rangeReq({ key: b('a'), revision: 9 })), (e) => e === errFutureRev);
    assert.deepEqual(ap.range(null, rangeReq({ key: b('a'), revision: -3 })).kvs.map((x) => kv(x).value), ['v0']);
  });
});

describe('Compaction', () => {
  before(freshStore);

  test('schedules, answers the current revision, refuses old and future revisions', () => {
    put('a', '1'); // 2
    put('a', '2'); // 3
    assert.equal(ap.compaction({ revision: 2 }), 3);
    assert.equal(store.compactMainRev, 2);
    assert.throws(() => ap.compaction({ revision: 2 }), (e) => e === errCompacted);
    assert.throws(() => ap.compaction({ revision: 4 }), (e) => e === errFutureRev);
    assert.equal(ap.compaction({ revision: Long.fromNumber(3) }), 3);
    assert.throws(() => ap.range(null, rangeReq({ key: b('a'), revision: 2 })), (e) => e === errCompacted);
  });
});

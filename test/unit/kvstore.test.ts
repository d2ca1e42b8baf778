// KVStore: a seeded model test against a plain reference model (key -> list of revisions), plus
// deterministic cases for sub revisions, limits, compaction sweeps and restore.
//
// The model test runs random write transactions (several puts/deletes/reads per transaction, so
// sub revisions), reads at random current and historical revisions, compactions, then closes the
// backend and restores the store from the same LMDB files, including the case where records
// above the persisted meta currentRev (a partial apply batch) must be dropped and the same
// transactions applied again. Rerun one seed with KVSTORE_SEED=<n>.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';

import { mvccpb } from '../../src/gen/proto';
import { RangeEnd } from '../../src/mvcc/index';
import { KVStore, RangeResult, toNumber } from '../../src/mvcc/kvstore';
import { Backend } from '../../src/storage/backend';
import * as schema from '../../src/storage/schema';
import { errCompacted, errFutureRev } from '../../src/util/errors';
import { StoreCorruptError } from '../../src/mvcc/kvstore';
import { Prng } from '../../src/util/prng';

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'concord-kvstore-'));
after(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));
let dirSeq = 0;

function openBackend(dir: string, batchLimit = 64): Backend {
  return new Backend({ path: dir, mapSizeBytes: 64 * 1024 * 1024, batchIntervalMs: 10, batchLimit });
}

function newDir(): string {
  const dir = path.join(tmpRoot, 'db' + dirSeq++);
  fs.mkdirSync(dir);
  return dir;
}

const latin = (s: string): Buffer => Buffer.from(s, 'latin1');

// ---- the reference model ----

interface MRec { main: number; sub: number; tomb: boolean; value: string; create: number; version: number }

interface Kv { key: string; value: string; create: number; mod: number; version: number; lease: number }

type Outcome = { kvs: Kv[]; count: number; rev: number } | 'future' | 'compacted';

function inRange(k: string, key: string, end: RangeEnd): boolean {
  if (end === null) return k === key;
  return k >= key && (end === '' || k < end);
}

class Model {
  readonly hist = new Map<string, MRec[]>();
  cur = 1;
  compacted = -1;

  visible(key: string, rev: number): MRec | null {
    const recs = this.hist.get(key);
    if (recs === undefined) return null;
    let found: MRec | null = null;
    for (const r of recs) {
      if (r.main > rev) break;
      found = r;
    }
    return found !== null && !found.tomb ? found : null;
  }

  keysIn(key: string, end: RangeEnd): string[] {
    return [...this.hist.keys()].filter((k) => inRange(k, key, end)).sort();
  }

  range(key: string, end: RangeEnd, rev: number, limit: number, countOnly: boolean, cur = this.cur): Outcome {
    if (rev > cur) return 'future';
    if (rev <= 0) rev = cur;
    if (rev < this.compacted) return 'compacted';
    const kvs: Kv[] = [];
    let count = 0;
    for (const k of this.keysIn(key, end)) {
      const r = this.visible(k, rev);
      if (r === null) continue;
      count++;
      if (!countOnly && (limit <= 0 || kvs.length < limit)) {
        kvs.push({ key: k, value: r.value, create: r.create, mod: r.main, version: r.version, lease: 0 });
      }
    }
    return { kvs, count, rev: cur };
  }

  /** Revisions left after compaction at `this.compacted` (etcd keyIndex.compact). */
  survivors(key: string): MRec[] {
    const recs = this.hist.get(key) ?? [];
    let i = -1;
    for (let j = 0; j < recs.length; j++) if (recs[j]!.main <= this.compacted) i = j;
    if (i < 0) return recs.slice();
    return recs.slice(recs[i]!.tomb ? i + 1 : i);
  }
}

class ModelTxn {
  private readonly m: Model;
  readonly begin: number;
  changes = 0;

  constructor(m: Model) {
    this.m = m;
    this.begin = m.cur;
  }

  readRev(): number {
    return this.changes > 0 ? this.begin + 1 : this.begin;
  }

  put(key: string, value: string): void {
    const rev = this.begin + 1;
    const recs = this.m.hist.get(key) ?? [];
    this.m.hist.set(key, recs);
    const last = recs[recs.length - 1];
    const live = last !== undefined && !last.tomb ? last : null;
    recs.push({
      main: rev, sub: this.changes++, tomb: false, value,
      create: live ? live.create : rev, version: live ? live.version + 1 : 1,
    });
  }

  del(key: string, end: RangeEnd): number {
    const readRev = this.readRev();
    const doomed = this.m.keysIn(key, end).filter((k) => this.m.visible(k, readRev) !== null);
    for (const k of doomed) {
      this.m.hist.get(k)!.push({ main: this.begin + 1, sub: this.changes++, tomb: true, value: '', create: 0, version: 0 });
    }
    return doomed.length;
  }

  end(): void {
    if (this.changes > 0) this.m.cur = this.begin + 1;
  }
}

// ---- comparing the store with the model ----

function decodeKvs(rr: RangeResult): Kv[] {
  return rr.kvs.map((b) => {
    const kv = mvccpb.KeyValue.decode(b);
    return {
      key: Buffer.from(kv.key).toString('latin1'),
      value: Buffer.from(kv.value).toString('latin1'),
      create: toNumber(kv.create_revision),
      mod: toNumber(kv.mod_revision),
      version: toNumber(kv.version),
      lease: toNumber(kv.lease),
    };
  });
}

function actual(fn: () => RangeResult): Outcome {
  try {
    const rr = fn();
    return { kvs: decodeKvs(rr), count: rr.count, rev: rr.rev };
  } catch (err) {
    if (err === errFutureRev) return 'future';
    if (err === errCompacted) return 'compacted';
    throw err;
  }
}

interface Query { key: string; end: RangeEnd; rev: number; limit: number; countOnly: boolean }

const keyPool = ['a', 'ab', 'b', 'ba', 'c', 'd', 'e', 'a\x00', '\x00', '\x7f', '\x80', '\xff', '\xffz'];

class Gen {
  readonly p: Prng;
  constructor(seed: number) {
    this.p = new Prng(seed);
  }

  pick<T>(xs: readonly T[]): T {
    return xs[this.p.int(xs.length)]!;
  }

  key(): string {
    return this.pick(keyPool);
  }

  end(key: string): RangeEnd {
    const r = this.p.int(20);
    if (r < 8) return null;
    if (r < 11) return '';
    if (r < 13) return key + '\x00';
    return this.key(); // may be <= key: an empty range
  }

  query(m: Model, cur: number): Query {
    const key = this.key();
    const end = this.end(key);
    const r = this.p.int(20);
    let rev: number;
    if (r < 5) rev = 0;
    else if (r < 6) rev = -1 - this.p.int(3);
    else if (r < 7) rev = cur + 1 + this.p.int(3);
    else if (r < 8 && m.compacted > 1) rev = 1 + this.p.int(m.compacted - 1);
    else {
      const lo = Math.max(1, m.compacted);
      rev = lo + this.p.int(cur - lo + 1);
    }
    const limit = this.p.int(4) === 0 ? 1 + this.p.int(3) : 0;
    return { key, end, rev, limit, countOnly: this.p.int(10) === 0 };
  }
}

type Op =
  | { kind: 'put'; key: string; value: string }
  | { kind: 'del'; key: string; end: RangeEnd }
  | { kind: 'range'; q: Query };

function genTxn(g: Gen, m: Model, step: number): Op[] {
  const n = 1 + g.p.int(4);
  const ops: Op[] = [];
  for (let i = 0; i < n; i++) {
    const r = g.p.int(10);
    if (r < 6) {
      ops.push({ kind: 'put', key: g.key(), value: g.p.int(8) === 0 ? '' : `v${step}.${i}` });
    } else if (r < 8) {
      const key = g.key();
      ops.push({ kind: 'del', key, end: g.end(key) });
    } else {
      ops.push({ kind: 'range', q: g.query(m, m.cur + 1) });
    }
  }
  return ops;
}

/** Runs one transaction on the store and the model, checking every answer. */
function runTxn(store: KVStore, m: Model, ops: Op[], where: string): void {
  const w = store.write();
  const mt = new ModelTxn(m);
  assert.equal(w.beginRev, mt.begin, `${where}: begin revision`);
  for (const op of ops) {
    if (op.kind === 'put') {
      const rev = w.put(latin(op.key), op.key, latin(op.value), 0);
      mt.put(op.key, op.value);
      assert.equal(rev, mt.begin + 1, `${where}: put revision`);
    } else if (op.kind === 'del') {
      const n = w.deleteRange(op.key, op.end);
      assert.equal(n, mt.del(op.key, op.end), `${where}: deleted count of [${JSON.stringify(op.key)}, ${JSON.stringify(op.end)})`);
    } else {
      const q = op.q;
      const want = m.range(q.key, q.end, q.rev, q.limit, q.countOnly, mt.readRev());
      const got = actual(() => w.range(q.key, q.end, q.rev, q.limit, q.countOnly));
      assert.deepEqual(got, want, `${where}: range in txn ${JSON.stringify(q)}`);
    }
  }
  assert.equal(w.changes.length, mt.changes, `${where}: change count`);
  const rev = w.end();
  mt.end();
  assert.equal(rev, m.cur, `${where}: revision after txn`);
  assert.equal(store.currentRev, m.cur, `${where}: store revision`);
}

function checkQuery(store: KVStore, m: Model, q: Query, where: string): void {
  const want = m.range(q.key, q.end, q.rev, q.limit, q.countOnly);
  const got = actual(() => store.range(q.key, q.end, q.rev, q.limit, q.countOnly));
  assert.deepEqual(got, want, `${where}: range ${JSON.stringify(q)}`);
}

/** Every key and a few ranges at every readable revision, plus the error edges. */
function checkAll(store: KVStore, m: Model, where: string): void {
  assert.equal(store.currentRev, m.cur, `${where}: current revision`);
  const lo = Math.max(1, m.compacted);
  const ranges: [string, RangeEnd][] = [['\x00', ''], ['a', 'c'], ['b', null], ['\x7f', '']];
  for (const k of keyPool) ranges.push([k, null]);
  for (let rev = lo; rev <= m.cur; rev++) {
    for (const [key, end] of ranges) checkQuery(store, m, { key, end, rev, limit: 0, countOnly: false }, where);
  }
  checkQuery(store, m, { key: '\x00', end: '', rev: 0, limit: 2, countOnly: false }, where);
  checkQuery(store, m, { key: '\x00', end: '', rev: m.cur + 1, limit: 0, countOnly: false }, where);
  if (m.compacted > 1) checkQuery(store, m, { key: '\x00', end: '', rev: m.compacted - 1, limit: 0, countOnly: false }, where);
}

/** The index holds exactly the surviving revisions of each key. */
function checkIndex(store: KVStore, m: Model, where: string): void {
  let live = 0;
  for (const key of [...m.hist.keys()].sort()) {
    const want = m.survivors(key);
    const ki = store.index.get(key);
    if (want.length === 0) {
      assert.equal(ki, undefined, `${where}: ${JSON.stringify(key)} should be gone from the index`);
      continue;
    }
    live++;
    assert.ok(ki !== undefined, `${where}: ${JSON.stringify(key)} missing from the index`);
    assert.deepEqual(
      ki.mains.map((x, i) => [x, ki.subs[i], ki.tombs[i]]),
      want.map((r) => [r.main, r.sub, r.tomb]),
      `${where}: revisions of ${JSON.stringify(key)}`,
    );
    const last = want[want.length - 1]!;
    assert.equal(ki.version, last.tomb ? 0 : last.version, `${where}: version of ${JSON.stringify(key)}`);
    assert.equal(ki.createdMain, last.tomb ? 0 : last.create, `${where}: created of ${JSON.stringify(key)}`);
  }
  assert.equal(store.index.size, live, `${where}: index size`);
}

/** LMDB holds exactly the surviving revisions (call after backend.flushed()). */
function checkBackendRecords(backend: Backend, m: Model, where: string): void {
  const got: string[] = [];
  for (const { key } of backend.kvRecords()) {
    const k = key as Buffer;
    got.push(`${schema.revKeyMain(k)}.${schema.revKeySub(k)}${schema.revKeyIsTombstone(k) ? 't' : ''}`);
  }
  const want: [number, number, string][] = [];
  for (const key of m.hist.keys()) {
    for (const r of m.survivors(key)) want.push([r.main, r.sub, `${r.main}.${r.sub}${r.tomb ? 't' : ''}`]);
  }
  want.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  assert.deepEqual(got, want.map((x) => x[2]), `${where}: records in the key db`);
}

function compactAll(store: KVStore, m: Model, rev: number, keysPerStep: number): number {
  store.scheduleCompaction(rev);
  m.compacted = rev;
  let from: string | null = '';
  let steps = 0;
  while (from !== null) {
    from = store.compactStep(rev, from, keysPerStep);
    steps++;
  }
  return steps;
}

async function runModel(seed: number): Promise<void> {
  const dir = newDir();
  const g = new Gen(seed);
  const m = new Model();
  let backend = openBackend(dir);
  let store = new KVStore(backend);
  store.restore();
  // Each transaction is one raft entry, as the storage worker applies them: the backend commits
  // whole entries with their applied index (storage/backend.ts).
  let nextIndex = 1;
  const asEntry = (fn: () => void): void => {
    backend.beginEntry();
    fn();
    backend.endEntry(nextIndex++, store.currentRev);
  };
  const reopen = (): void => {
    backend = openBackend(dir);
    store = new KVStore(backend);
    store.restore();
    const applied = backend.getMetaU64(schema.metaConsistentIndex);
    backend.restoreApplied(applied, store.currentRev);
    nextIndex = applied + 1;
  };

  for (let step = 0; step < 240; step++) {
    const where = `seed ${seed} step ${step}`;
    if (step % 60 === 59 && m.cur > 1) {
      // compaction: errors first, then a real one swept in small steps
      assert.throws(() => store.scheduleCompaction(m.cur + 1), (e) => e === errFutureRev, where);
      if (m.compacted > 0) {
        assert.throws(() => store.scheduleCompaction(m.compacted), (e) => e === errCompacted, where);
      }
      const lo = Math.max(1, m.compacted + 1);
      const rev = lo + g.p.int(m.cur - lo + 1);
      compactAll(store, m, rev, 1 + g.p.int(4));
      assert.equal(store.compactMainRev, rev);
      checkIndex(store, m, where + ' after compaction');
      await backend.flushed();
      checkBackendRecords(backend, m, where + ' after compaction');
      assert.equal(backend.getMetaU64(schema.metaScheduledCompact), rev);
      assert.equal(backend.getMetaU64(schema.metaFinishedCompact), rev);
    }
    const ops = genTxn(g, m, step);
    asEntry(() => runTxn(store, m, ops, where));
    for (let i = 0; i < 4; i++) checkQuery(store, m, g.query(m, m.cur), where);
  }
  checkAll(store, m, `seed ${seed} end`);
  checkIndex(store, m, `seed ${seed} end`);

  // Restore from the same storage: identical answers.
  await backend.close();
  reopen();
  assert.equal(store.compactMainRev, m.compacted, `seed ${seed}: compact revision after restore`);
  checkAll(store, m, `seed ${seed} restored`);
  checkIndex(store, m, `seed ${seed} restored`);

  // A crash with applied entries not yet committed: restore finds the state of the last
  // committed entry, and applying the same transactions again gives the same revisions.
  await backend.flushed();
  const metaRev = store.currentRev;
  const tail: Op[][] = [];
  for (let step = 0; step < 30; step++) {
    const ops = genTxn(g, m, 1000 + step);
    tail.push(ops);
    asEntry(() => runTxn(store, m, ops, `seed ${seed} tail ${step}`));
  }
  assert.ok(m.cur > metaRev, 'the tail wrote something');
  backend.discardUncommitted();
  reopen();
  assert.equal(store.currentRev, metaRev, `seed ${seed}: restored revision is meta currentRev`);
  const full = m.cur;
  const truncated = new Model();
  truncated.compacted = m.compacted;
  truncated.cur = metaRev;
  for (const [k, recs] of m.hist) {
    const kept = recs.filter((r) => r.main <= metaRev);
    if (kept.length > 0) truncated.hist.set(k, kept);
  }
  checkAll(store, truncated, `seed ${seed} restored before the tail`);
  checkIndex(store, truncated, `seed ${seed} restored before the tail`);
  await backend.flushed();
  checkBackendRecords(backend, truncated, `seed ${seed} dropped tail`);
  // Apply the tail again, on the truncated model, which must end where the full one did.
  for (const [i, ops] of tail.entries()) asEntry(() => runTxn(store, truncated, ops, `seed ${seed} replayed tail ${i}`));
  assert.equal(truncated.cur, full);
  assert.deepEqual(truncated.hist, m.hist, `seed ${seed}: replayed history`);
  checkAll(store, m, `seed ${seed} replayed`);
  checkIndex(store, m, `seed ${seed} replayed`);
  await backend.flushed();
  checkBackendRecords(backend, m, `seed ${seed} replayed`);
  await backend.close();
}

describe('KVStore model test', () => {
  const envSeed = process.env['KVSTORE_SEED'];
  const seeds = envSeed !== undefined ? [Number(envSeed)] : [1, 2, 3, 0xc0ffee, 20261124];
  for (const seed of seeds) {
    test(`seed ${seed}`, async () => {
      try {
        await runModel(seed);
      } catch (err) {
        console.error(`kvstore model test failed with seed ${seed} (rerun: KVSTORE_SEED=${seed})`);
        throw err;
      }
    });
  }
});

describe('KVStore', () => {
  const stores: Backend[] = [];
  after(async () => {
    for (const b of stores) await b.close();
  });
  function fresh(batchLimit = 64): { store: KVStore; backend: Backend; dir: string } {
    const dir = newDir();
    const backend = openBackend(dir, batchLimit);
    stores.push(backend);
    const store = new KVStore(backend);
    store.restore();
    return { store, backend, dir };
  }
  function put(store: KVStore, key: string, value: string): number {
    const w = store.write();
    w.put(latin(key), key, latin(value), 0);
    return w.end();
  }
  function get(store: KVStore, key: string, rev = 0): Kv[] {
    return decodeKvs(store.range(key, null, rev, 0, false));
  }

  test('a fresh store is at revision 1, never compacted', () => {
    const { store } = fresh();
    assert.equal(store.currentRev, 1);
    assert.equal(store.compactMainRev, -1);
    assert.deepEqual(store.range('\x00', '', 0, 0, false), { kvs: [], count: 0, rev: 1 });
  });

  test('one transaction: one main revision, sub revisions in order, reads see its writes', () => {
    const { store } = fresh();
    put(store, 'a', '1');
    const w = store.write();
    assert.equal(w.beginRev, 2);
    assert.equal(w.readRev(), 2);
    w.put(latin('a'), 'a', latin('2'), 0);
    assert.equal(w.readRev(), 3);
    w.put(latin('b'), 'b', latin('x'), 7);
    assert.deepEqual(decodeKvs(w.range('a', 'c', 0, 0, false)).map((k) => [k.key, k.value, k.mod, k.version]),
      [['a', '2', 3, 2], ['b', 'x', 3, 1]]);
    assert.equal(w.deleteRange('a', null), 1);
    w.put(latin('a'), 'a', latin('3'), 0);
    assert.equal(store.currentRev, 2, 'the store revision moves at end()');
    assert.equal(w.end(), 3);
    const a = store.index.get('a')!;
    assert.deepEqual([a.mains, a.subs, a.tombs], [[2, 3, 3, 3], [0, 0, 2, 3], [false, false, true, false]]);
    assert.deepEqual(get(store, 'a'), [{ key: 'a', value: '3', create: 3, mod: 3, version: 1, lease: 0 }]);
    assert.deepEqual(get(store, 'b'), [{ key: 'b', value: 'x', create: 3, mod: 3, version: 1, lease: 7 }]);
    assert.deepEqual(get(store, 'a', 2), [{ key: 'a', value: '1', create: 2, mod: 2, version: 1, lease: 0 }]);
  });

  test('a transaction without changes does not move the revision', () => {
    const { store } = fresh();
    put(store, 'a', '1');
    const w = store.write();
    assert.equal(w.deleteRange('b', 'z'), 0);
    assert.equal(w.range('a', null, 0, 0, false).count, 1);
    assert.equal(w.end(), 2);
    assert.equal(store.currentRev, 2);
  });

  test('limit, count and count_only; result revision is the current one', () => {
    const { store } = fresh();
    for (const k of ['a', 'b', 'c', 'd']) put(store, k, k);
    const rr = store.range('a', '', 3, 1, false);
    assert.equal(rr.count, 2);
    assert.equal(rr.rev, 5);
    assert.deepEqual(decodeKvs(rr).map((k) => k.key), ['a']);
    const co = store.range('a', '', 0, 0, true);
    assert.deepEqual([co.kvs.length, co.count], [0, 4]);
    assert.equal(store.range('a', '', 0, 10, false).kvs.length, 4);
  });

  test('tombstone records carry the key and the mod revision', () => {
    const { store, backend } = fresh();
    put(store, 'k', 'v');
    const w = store.write();
    w.deleteRange('k', null);
    assert.equal(w.changes.length, 1);
    assert.equal(w.changes[0]!.tombstone, true);
    w.end();
    const rec = backend.getKv(schema.revKey(3, 0, true));
    assert.ok(rec !== undefined);
    const kv = mvccpb.KeyValue.decode(rec);
    assert.equal(Buffer.from(kv.key).toString(), 'k');
    assert.equal(toNumber(kv.mod_revision), 3);
    assert.equal(toNumber(kv.create_revision), 0);
    assert.equal(backend.getKv(schema.revKey(3, 0, false)), undefined);
  });

  test('compaction errors and bounds (etcd updateCompactRev)', () => {
    const { store } = fresh();
    put(store, 'a', '1'); // 2
    put(store, 'a', '2'); // 3
    put(store, 'a', '3'); // 4
    assert.throws(() => store.scheduleCompaction(5), (e) => e === errFutureRev);
    store.scheduleCompaction(3);
    assert.throws(() => store.scheduleCompaction(3), (e) => e === errCompacted);
    assert.throws(() => store.scheduleCompaction(2), (e) => e === errCompacted);
    assert.throws(() => store.range('a', null, 2, 0, false), (e) => e === errCompacted);
    assert.throws(() => store.range('a', null, 5, 0, false), (e) => e === errFutureRev);
    // At the compaction revision itself the read is allowed.
    assert.deepEqual(get(store, 'a', 3).map((k) => k.value), ['2']);
    store.scheduleCompaction(4); // compacting at the current revision is allowed
    assert.equal(store.compactMainRev, 4);
  });

  test('a compaction at revision 0 is remembered across a restore (etcd 3.4: compact 0 twice fails)', async () => {
    const { store, backend, dir } = fresh();
    assert.throws(() => store.scheduleCompaction(-1), (e) => e === errCompacted);
    store.scheduleCompaction(0);
    assert.equal(store.compactMainRev, 0);
    assert.throws(() => store.scheduleCompaction(0), (e) => e === errCompacted);
    await backend.close();
    stores.splice(stores.indexOf(backend), 1);
    const b2 = openBackend(dir);
    stores.push(b2);
    const s2 = new KVStore(b2);
    s2.restore();
    assert.equal(s2.compactMainRev, 0);
    assert.throws(() => s2.scheduleCompaction(0), (e) => e === errCompacted);
    s2.scheduleCompaction(1);
    assert.equal(s2.compactMainRev, 1);
  });

  test('compaction sweeps in steps, resumes at the returned key, drops emptied keys', async () => {
    const { store, backend } = fresh();
    for (const k of ['a', 'b', 'c', 'd', 'e']) put(store, k, '1'); // 2..6
    const w = store.write();
    w.deleteRange('b', 'd'); // b, c deleted at 7
    w.end();
    put(store, 'a', '2'); // 8
    store.scheduleCompaction(7);
    assert.equal(store.compactStep(7, '', 2), 'c');
    assert.equal(backend.getMetaU64(schema.metaFinishedCompact), 0, 'not finished yet');
    assert.equal(store.index.get('b'), undefined, 'b emptied in the first step');
    assert.ok(store.index.get('c') !== undefined, 'c not visited yet');
    assert.equal(store.compactStep(7, 'c', 2), 'e');
    assert.equal(store.compactStep(7, 'e', 2), null);
    assert.equal(backend.getMetaU64(schema.metaFinishedCompact), 7);
    assert.deepEqual(['a', 'b', 'c', 'd', 'e'].map((k) => store.index.get(k)?.mains ?? null),
      [[2, 8], null, null, [5], [6]]);
    await backend.flushed();
    assert.equal(backend.getKv(schema.revKey(3, 0, false)), undefined);
    assert.equal(backend.getKv(schema.revKey(7, 0, true)), undefined);
    assert.ok(backend.getKv(schema.revKey(2, 0, false)) !== undefined, 'a@2 still visible at 7');
    assert.deepEqual(decodeKvs(store.range('a', '', 7, 0, false)).map((k) => [k.key, k.value]),
      [['a', '1'], ['d', '1'], ['e', '1']]);
  });

  test('restore: compact revision from meta; a record above meta currentRev is damage', async () => {
    const { store, backend, dir } = fresh();
    backend.beginEntry();
    put(store, 'a', '1');
    backend.endEntry(1, store.currentRev);
    backend.beginEntry();
    put(store, 'b', '1');
    store.scheduleCompaction(2);
    backend.endEntry(2, store.currentRev);
    await backend.close();
    stores.splice(stores.indexOf(backend), 1);
    const b2 = openBackend(dir);
    stores.push(b2);
    const s2 = new KVStore(b2);
    s2.restore();
    assert.equal(s2.currentRev, 3);
    assert.equal(s2.compactMainRev, 2);
    assert.deepEqual(get(s2, 'a').map((k) => [k.value, k.mod, k.version]), [['1', 2, 1]]);
    // A record of revision 4 without the currentRev that covers it: the store was damaged (the
    // backend never commits part of an entry), and restore refuses to guess.
    b2.putKv(schema.revKey(4, 0, false), Buffer.from('x'));
    await b2.flushed();
    await b2.close();
    stores.splice(stores.indexOf(b2), 1);
    const b3 = openBackend(dir);
    stores.push(b3);
    assert.throws(() => new KVStore(b3).restore(), StoreCorruptError);
  });
});

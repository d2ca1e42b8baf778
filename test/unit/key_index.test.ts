// KeyIndex: the revision history of one key, checked against etcd's keyIndex semantics
// (mvcc/key_index_test.go: get, tombstone, compact keeping the right revisions, restore).
// Concord keeps one flat list of revisions with tombstone bits instead of etcd's generations;
// every expectation below is what etcd's generations give for the same history.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { KeyIndex } from '../../src/mvcc/key_index';
import { AssertionError } from '../../src/util/assert';

type Rev = [main: number, sub: number, tomb?: 't'];

function revs(ki: KeyIndex): Rev[] {
  return ki.mains.map((m, i) => (ki.tombs[i] ? [m, ki.subs[i]!, 't'] : [m, ki.subs[i]!]) as Rev);
}

/** The revision visible at `rev`, or null when the key does not exist at `rev`. */
function at(ki: KeyIndex, rev: number): [number, number] | null {
  const i = ki.visibleAt(rev);
  return i < 0 ? null : [ki.mains[i]!, ki.subs[i]!];
}

/**
 * etcd's newTestKeyIndex:
 *   put 2, put 4, del 6, put 8, put 10, del 12, put 14.0, put 14.1, del 16
 */
function testKeyIndex(): KeyIndex {
  const ki = new KeyIndex('foo');
  ki.put(2, 0);
  ki.put(4, 0);
  ki.tombstone(6, 0);
  ki.put(8, 0);
  ki.put(10, 0);
  ki.tombstone(12, 0);
  ki.put(14, 0);
  ki.put(14, 1);
  ki.tombstone(16, 0);
  return ki;
}

function compact(ki: KeyIndex, atRev: number): { removed: Rev[]; empty: boolean } {
  const removed: Rev[] = [];
  const empty = ki.compact(atRev, function (this: Rev[], main, sub, tomb) {
    this.push(tomb ? [main, sub, 't'] : [main, sub]);
  }, removed);
  return { removed, empty };
}

const all: Rev[] = [[2, 0], [4, 0], [6, 0, 't'], [8, 0], [10, 0], [12, 0, 't'], [14, 0], [14, 1], [16, 0, 't']];

describe('KeyIndex put/tombstone', () => {
  test('versions and create revision follow generations', () => {
    const ki = new KeyIndex('k');
    assert.equal(ki.isLive(), false);
    assert.equal(ki.version, 0);
    assert.equal(ki.createdMain, 0);
    ki.put(5, 0);
    assert.equal(ki.isLive(), true);
    assert.equal(ki.createdMain, 5);
    assert.equal(ki.version, 1);
    ki.put(5, 1); // same transaction, next sub revision
    assert.equal(ki.createdMain, 5);
    assert.equal(ki.version, 2);
    ki.put(7, 0);
    assert.equal(ki.version, 3);
    ki.tombstone(9, 2);
    assert.equal(ki.isLive(), false);
    assert.equal(ki.version, 0);
    assert.equal(ki.createdMain, 0);
    ki.put(11, 0); // new generation
    assert.equal(ki.createdMain, 11);
    assert.equal(ki.version, 1);
    assert.deepEqual(revs(ki), [[5, 0], [5, 1], [7, 0], [9, 2, 't'], [11, 0]]);
  });

  test('revisions must strictly increase (etcd panics on a smaller revision)', () => {
    const ki = new KeyIndex('k');
    ki.put(5, 1);
    assert.throws(() => ki.put(5, 1), AssertionError);
    assert.throws(() => ki.put(5, 0), AssertionError);
    assert.throws(() => ki.put(4, 9), AssertionError);
    assert.throws(() => ki.tombstone(5, 1), AssertionError);
    ki.put(5, 2);
    ki.put(6, 0);
    assert.deepEqual(revs(ki), [[5, 1], [5, 2], [6, 0]]);
  });

  test('tombstone of a key that is not live is a bug (etcd: ErrRevisionNotFound/panic)', () => {
    const ki = new KeyIndex('k');
    assert.throws(() => ki.tombstone(2, 0), AssertionError);
    ki.put(2, 0);
    ki.tombstone(3, 0);
    assert.throws(() => ki.tombstone(4, 0), AssertionError);
    assert.deepEqual(revs(ki), [[2, 0], [3, 0, 't']]);
  });

  test('restore sets create revision and version from the stored record', () => {
    const ki = new KeyIndex('k');
    ki.restore(3, 0, false, 3, 1);
    ki.restore(4, 2, false, 3, 2);
    assert.equal(ki.createdMain, 3);
    assert.equal(ki.version, 2);
    ki.restore(6, 0, true, 0, 0);
    assert.equal(ki.isLive(), false);
    assert.equal(ki.createdMain, 0);
    ki.restore(8, 0, false, 8, 1);
    assert.equal(ki.createdMain, 8);
    assert.equal(ki.version, 1);
    // A restored history continues with the right version.
    ki.put(9, 0);
    assert.equal(ki.version, 2);
    assert.equal(ki.createdMain, 8);
    assert.throws(() => ki.restore(9, 0, false, 8, 3), AssertionError);
  });

  test('a history compacted down to its newest put restores mid-generation', () => {
    // After compact(10) on put@8 put@10, only 10 is left: restore gives version 2, created 8.
    const ki = new KeyIndex('k');
    ki.restore(10, 0, false, 8, 2);
    assert.equal(ki.version, 2);
    assert.equal(ki.createdMain, 8);
    ki.tombstone(11, 0);
    assert.deepEqual(revs(ki), [[10, 0], [11, 0, 't']]);
  });
});

describe('KeyIndex get (etcd TestKeyIndexGet)', () => {
  test('after compact(4), reads at every revision', () => {
    const ki = testKeyIndex();
    compact(ki, 4);
    const want: [number, [number, number] | null][] = [
      [17, null], [16, null],
      [15, [14, 1]], [14, [14, 1]],
      [13, null], [12, null],
      [11, [10, 0]], [10, [10, 0]], [9, [8, 0]], [8, [8, 0]],
      [7, null], [6, null],
      [5, [4, 0]], [4, [4, 0]],
      // below the compaction point nothing is left (etcd: ErrRevisionNotFound)
      [3, null], [2, null], [1, null], [0, null],
    ];
    for (const [rev, w] of want) assert.deepEqual(at(ki, rev), w, `get at ${rev}`);
  });

  test('uncompacted history', () => {
    const ki = testKeyIndex();
    const got = [];
    for (let rev = 0; rev <= 17; rev++) got.push(at(ki, rev));
    assert.deepEqual(got, [
      null, null, [2, 0], [2, 0], [4, 0], [4, 0], null, null, [8, 0], [8, 0],
      [10, 0], [10, 0], null, null, [14, 1], [14, 1], null, null,
    ]);
  });

  test('empty key index has nothing at any revision', () => {
    const ki = new KeyIndex('k');
    assert.equal(ki.visibleAt(0), -1);
    assert.equal(ki.visibleAt(100), -1);
  });
});

/**
 * Expected state after compact(atRev) on testKeyIndex (etcd TestKeyIndexCompactAndKeep): the
 * revisions left, and which of them is <= atRev (etcd's `available`/keep set).
 */
const compactCases: { atRev: number; left: Rev[]; kept: Rev | null }[] = [
  { atRev: 1, left: all, kept: null },
  { atRev: 2, left: all, kept: [2, 0] },
  { atRev: 3, left: all, kept: [2, 0] },
  { atRev: 4, left: all.slice(1), kept: [4, 0] },
  { atRev: 5, left: all.slice(1), kept: [4, 0] },
  { atRev: 6, left: all.slice(3), kept: null },
  { atRev: 7, left: all.slice(3), kept: null },
  { atRev: 8, left: all.slice(3), kept: [8, 0] },
  { atRev: 9, left: all.slice(3), kept: [8, 0] },
  { atRev: 10, left: all.slice(4), kept: [10, 0] },
  { atRev: 11, left: all.slice(4), kept: [10, 0] },
  { atRev: 12, left: all.slice(6), kept: null },
  { atRev: 13, left: all.slice(6), kept: null },
  { atRev: 14, left: all.slice(7), kept: [14, 1] },
  { atRev: 15, left: all.slice(7), kept: [14, 1] },
  { atRev: 16, left: [], kept: null },
  { atRev: 17, left: [], kept: null },
];

function keptAtOrBelow(ki: KeyIndex, atRev: number): Rev | null {
  if (ki.mains.length === 0 || ki.mains[0]! > atRev) return null;
  assert.equal(ki.tombs[0], false, 'a tombstone <= atRev never survives compaction');
  return [ki.mains[0]!, ki.subs[0]!];
}

describe('KeyIndex compact (etcd TestKeyIndexCompactAndKeep)', () => {
  test('fresh compaction at every revision', () => {
    for (const c of compactCases) {
      const ki = testKeyIndex();
      const before: ([number, number] | null)[] = [];
      for (let rev = c.atRev; rev <= 17; rev++) before.push(at(ki, rev));
      const { removed, empty } = compact(ki, c.atRev);
      assert.deepEqual(revs(ki), c.left, `left after compact(${c.atRev})`);
      assert.deepEqual(removed, all.slice(0, all.length - c.left.length), `removed by compact(${c.atRev})`);
      assert.equal(empty, c.left.length === 0, `empty after compact(${c.atRev})`);
      assert.deepEqual(keptAtOrBelow(ki, c.atRev), c.kept, `kept by compact(${c.atRev})`);
      // Reads at or after the compaction point are unchanged.
      const after: ([number, number] | null)[] = [];
      for (let rev = c.atRev; rev <= 17; rev++) after.push(at(ki, rev));
      assert.deepEqual(after, before, `reads >= ${c.atRev} after compact(${c.atRev})`);
    }
  });

  test('incremental compaction 1, 2, ..., 17 gives the same states', () => {
    const ki = testKeyIndex();
    let removedSoFar: Rev[] = [];
    for (const c of compactCases) {
      const { removed, empty } = compact(ki, c.atRev);
      removedSoFar = removedSoFar.concat(removed);
      assert.deepEqual(revs(ki), c.left, `left after compact(${c.atRev})`);
      assert.deepEqual(removedSoFar, all.slice(0, all.length - c.left.length));
      assert.equal(empty, c.left.length === 0);
    }
  });

  test('compacting twice at the same revision removes nothing more', () => {
    const ki = testKeyIndex();
    compact(ki, 10);
    const second = compact(ki, 10);
    assert.deepEqual(second.removed, []);
    assert.equal(second.empty, false);
    assert.deepEqual(revs(ki), all.slice(4));
  });

  test('tombstone at exactly the compaction revision is removed with its generation', () => {
    const ki = new KeyIndex('k');
    ki.put(2, 0);
    ki.tombstone(3, 0);
    const c2 = compact(ki, 2);
    assert.deepEqual(c2.removed, []);
    assert.deepEqual(revs(ki), [[2, 0], [3, 0, 't']]);
    const c3 = compact(ki, 3);
    assert.deepEqual(c3.removed, [[2, 0], [3, 0, 't']]);
    assert.equal(c3.empty, true);
  });

  test('tombstone at a sub revision of the compaction revision', () => {
    // put and delete in one transaction (rev 5), then a new put at 7
    const ki = new KeyIndex('k');
    ki.put(5, 0);
    ki.tombstone(5, 1);
    ki.put(7, 0);
    const c = compact(ki, 5);
    assert.deepEqual(c.removed, [[5, 0], [5, 1, 't']]);
    assert.equal(c.empty, false);
    assert.deepEqual(revs(ki), [[7, 0]]);
    assert.equal(ki.createdMain, 7);
    assert.equal(ki.version, 1);
  });

  test('compaction before the first revision keeps everything', () => {
    const ki = new KeyIndex('k');
    ki.put(5, 0);
    ki.put(6, 0);
    const c = compact(ki, 4);
    assert.deepEqual(c.removed, []);
    assert.equal(c.empty, false);
    assert.deepEqual(revs(ki), [[5, 0], [6, 0]]);
  });

  test('live key compacted past its last put keeps that put and the live state', () => {
    const ki = new KeyIndex('k');
    ki.put(2, 0);
    ki.put(3, 0);
    ki.put(4, 0);
    const c = compact(ki, 100);
    assert.deepEqual(c.removed, [[2, 0], [3, 0]]);
    assert.deepEqual(revs(ki), [[4, 0]]);
    assert.equal(ki.version, 3);
    assert.equal(ki.createdMain, 2);
    assert.deepEqual(at(ki, 100), [4, 0]);
  });

  test('a restored history that starts with a tombstone compacts it away', () => {
    // e.g. the put before it was removed by an earlier compaction whose sweep was interrupted
    const ki = new KeyIndex('k');
    ki.restore(5, 0, true, 0, 0);
    ki.restore(7, 0, false, 7, 1);
    assert.equal(at(ki, 5), null);
    assert.equal(at(ki, 6), null);
    const c = compact(ki, 6);
    assert.deepEqual(c.removed, [[5, 0, 't']]);
    assert.deepEqual(revs(ki), [[7, 0]]);
  });

  test('empty key index compacts to empty', () => {
    const ki = new KeyIndex('k');
    const c = compact(ki, 3);
    assert.deepEqual(c.removed, []);
    assert.equal(c.empty, true);
  });
});

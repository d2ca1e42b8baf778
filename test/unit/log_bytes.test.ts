// LogBytes (src/server/etcd_server.ts): the byte accounting behind the raft log's memory bounds
// (issue #10, finding 5): bytes proposed and not applied, bytes of applied entries kept for
// catching up, the trim point that keeps both bounds, truncation by a rewritten index.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { LogBytes } from '../../src/server/log_bytes';
import { AssertionError } from '../../src/util/assert';

describe('LogBytes', () => {
  test('unapplied and retained bytes follow pushes, applies and compaction', () => {
    const b = new LogBytes(1);
    for (let i = 1; i <= 10; i++) b.push(i, i * 100);
    assert.equal(b.unappliedBytes, 5500);
    assert.equal(b.retainedBytes, 0);
    b.appliedTo(4);
    assert.equal(b.unappliedBytes, 5500 - 1000);
    assert.equal(b.retainedBytes, 1000);
    b.compactTo(2);
    assert.equal(b.retainedBytes, 700);
    b.appliedTo(10);
    assert.deepEqual([b.unappliedBytes, b.retainedBytes], [0, 5500 - 300]);
    b.push(11, 7);
    assert.equal(b.unappliedBytes, 7);
  });

  test('the trim point keeps at most entriesMax applied entries and bytesMax bytes of them', () => {
    const b = new LogBytes(1);
    for (let i = 1; i <= 100; i++) b.push(i, 1000);
    b.appliedTo(100);
    assert.equal(b.trimPoint(100, 10, 1_000_000), 90, 'bounded by entries');
    assert.equal(b.trimPoint(100, 50, 5_500), 95, 'bounded by bytes: 5 entries of 1000 kept');
    assert.equal(b.trimPoint(100, 50, 0), 100, 'nothing kept');
    const big = new LogBytes(1);
    big.push(1, 10);
    big.push(2, 5_000_000);
    big.push(3, 10);
    big.appliedTo(3);
    assert.equal(big.trimPoint(3, 5000, 1_000_000), 2, 'a huge entry goes even if it is recent');
  });

  test('a rewritten index replaces the tail (raft truncation); an index out of order is a bug', () => {
    const b = new LogBytes(5);
    b.push(5, 10);
    b.push(6, 20);
    b.push(7, 30);
    b.push(6, 1);
    assert.equal(b.unappliedBytes, 11);
    assert.throws(() => b.push(9, 1), AssertionError);
    b.appliedTo(6);
    assert.throws(() => b.push(6, 1), AssertionError, 'an applied index is never rewritten');
  });
});

// TreeIndex: user key -> KeyIndex in byte order (etcd treeIndex). Ranges: a single key
// (end null), [key, end), and from key to the end (end '', etcd's "\0").

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { RangeEnd, TreeIndex } from '../../src/mvcc/index';
import { KeyIndex } from '../../src/mvcc/key_index';

function keys(ti: TreeIndex, key: string, end: RangeEnd, stopAfter = Infinity): string[] {
  const out: string[] = [];
  ti.visit(key, end, (ki) => {
    out.push(ki.key);
    return out.length < stopAfter;
  });
  return out;
}

/** Keys of [key, end) that exist at `rev`, and how many, at most `limit` listed (etcd Range). */
function rangeAt(ti: TreeIndex, key: string, end: RangeEnd, rev: number, limit: number): { keys: string[]; count: number } {
  const out: string[] = [];
  let count = 0;
  ti.visit(key, end, (ki: KeyIndex) => {
    if (ki.visibleAt(rev) >= 0) {
      count++;
      if (limit <= 0 || out.length < limit) out.push(ki.key);
    }
    return true;
  });
  return { keys: out, count };
}

function build(list: string[]): TreeIndex {
  const ti = new TreeIndex();
  let rev = 2;
  for (const k of list) ti.getOrCreate(k).put(rev++, 0);
  return ti;
}

describe('TreeIndex', () => {
  const latin = (bytes: number[]): string => Buffer.from(bytes).toString('latin1');

  test('getOrCreate returns the same KeyIndex; get, remove, size', () => {
    const ti = new TreeIndex();
    assert.equal(ti.size, 0);
    assert.equal(ti.get('a'), undefined);
    const a = ti.getOrCreate('a');
    assert.equal(a.key, 'a');
    assert.equal(ti.getOrCreate('a'), a);
    assert.equal(ti.get('a'), a);
    ti.getOrCreate('b');
    assert.equal(ti.size, 2);
    ti.remove('a');
    assert.equal(ti.get('a'), undefined);
    assert.equal(ti.size, 1);
    ti.remove('zzz'); // absent: no-op
    assert.equal(ti.size, 1);
  });

  test('keys are ordered as bytes (latin1), prefixes first', () => {
    const list = [
      latin([0xff]), 'b', latin([0x80, 0x61]), 'a', 'ab', latin([0x61, 0x00]), latin([0x7f]), latin([0x00]),
      latin([0x61, 0xff]),
    ];
    const ti = build(list);
    const want = [
      latin([0x00]), 'a', latin([0x61, 0x00]), 'ab', latin([0x61, 0xff]), 'b', latin([0x7f]),
      latin([0x80, 0x61]), latin([0xff]),
    ];
    assert.deepEqual(keys(ti, latin([0x00]), ''), want);
    // The order is Buffer.compare's order of the raw bytes.
    const sortedBytes = list.map((k) => Buffer.from(k, 'latin1')).sort(Buffer.compare).map((b) => b.toString('latin1'));
    assert.deepEqual(want, sortedBytes);
  });

  test('single key, half-open ranges, from-key, empty and inverted ranges', () => {
    const ti = build(['a', 'b', 'ba', 'c', 'd']);
    assert.deepEqual(keys(ti, 'b', null), ['b']);
    assert.deepEqual(keys(ti, 'bb', null), []);
    assert.deepEqual(keys(ti, 'b', 'c'), ['b', 'ba']); // end excluded
    assert.deepEqual(keys(ti, 'b', 'ca'), ['b', 'ba', 'c']);
    assert.deepEqual(keys(ti, 'bb', 'd'), ['c']); // start need not exist
    assert.deepEqual(keys(ti, 'b', ''), ['b', 'ba', 'c', 'd']);
    assert.deepEqual(keys(ti, 'e', ''), []);
    assert.deepEqual(keys(ti, 'c', 'c'), []); // end == key: empty
    assert.deepEqual(keys(ti, 'd', 'a'), []); // end < key: empty
    assert.deepEqual(keys(ti, '\0', ''), ['a', 'b', 'ba', 'c', 'd']);
  });

  test('visit stops when fn returns false; visitFrom walks to the end', () => {
    const ti = build(['a', 'b', 'c', 'd']);
    assert.deepEqual(keys(ti, 'a', '', 2), ['a', 'b']);
    assert.deepEqual(keys(ti, 'b', null, 1), ['b']);
    const from: string[] = [];
    ti.visitFrom('b', (ki) => {
      from.push(ki.key);
      return true;
    });
    assert.deepEqual(from, ['b', 'c', 'd']);
    const stopped: string[] = [];
    ti.visitFrom('', (ki) => {
      stopped.push(ki.key);
      return ki.key !== 'c';
    });
    assert.deepEqual(stopped, ['a', 'b', 'c']);
  });

  test('range at a revision: deleted keys and keys created later are skipped, count ignores limit', () => {
    const ti = new TreeIndex();
    ti.getOrCreate('a').put(2, 0);
    ti.getOrCreate('b').put(3, 0);
    ti.getOrCreate('c').put(4, 0);
    ti.get('b')!.tombstone(5, 0);
    ti.getOrCreate('d').put(6, 0);
    ti.get('b')!.put(7, 0);
    assert.deepEqual(rangeAt(ti, 'a', '', 4, 0), { keys: ['a', 'b', 'c'], count: 3 });
    assert.deepEqual(rangeAt(ti, 'a', '', 5, 0), { keys: ['a', 'c'], count: 2 });
    assert.deepEqual(rangeAt(ti, 'a', '', 6, 0), { keys: ['a', 'c', 'd'], count: 3 });
    assert.deepEqual(rangeAt(ti, 'a', '', 7, 0), { keys: ['a', 'b', 'c', 'd'], count: 4 });
    assert.deepEqual(rangeAt(ti, 'a', '', 7, 2), { keys: ['a', 'b'], count: 4 });
    assert.deepEqual(rangeAt(ti, 'b', 'd', 5, 1), { keys: ['c'], count: 1 });
    assert.deepEqual(rangeAt(ti, 'a', '', 1, 0), { keys: [], count: 0 });
  });

  test('a key removed after compaction is gone from ranges; re-created starts fresh', () => {
    const ti = new TreeIndex();
    ti.getOrCreate('a').put(2, 0);
    ti.getOrCreate('b').put(3, 0);
    ti.get('a')!.tombstone(4, 0);
    const emptied: string[] = [];
    ti.visitFrom('', (ki) => {
      if (ki.compact(4, () => undefined, null)) emptied.push(ki.key);
      return true;
    });
    assert.deepEqual(emptied, ['a']);
    for (const k of emptied) ti.remove(k);
    assert.deepEqual(keys(ti, 'a', ''), ['b']);
    const a = ti.getOrCreate('a');
    assert.deepEqual(a.mains, []);
    a.put(5, 0);
    assert.equal(a.createdMain, 5);
    assert.deepEqual(keys(ti, 'a', ''), ['a', 'b']);
  });

  test('many keys: ranges match a sorted array (B+ tree splits)', () => {
    const ti = new TreeIndex();
    const all: string[] = [];
    for (let i = 0; i < 3000; i++) {
      const k = 'k' + ((i * 7919) % 3000).toString().padStart(4, '0');
      all.push(k);
      ti.getOrCreate(k).put(i + 2, 0);
    }
    all.sort();
    assert.equal(ti.size, 3000);
    assert.deepEqual(keys(ti, 'k1000', 'k1010'), all.slice(1000, 1010));
    assert.deepEqual(keys(ti, 'k2995', ''), all.slice(2995));
    assert.deepEqual(keys(ti, 'k', ''), all);
  });
});

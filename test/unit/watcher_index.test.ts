// WatcherIndex: which watchers an event key concerns, against a brute-force model.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { WatcherIndex } from '../../src/watch/watcher_index';
import { Prng } from '../../src/util/prng';
import type { RangeEnd } from '../../src/mvcc/index';

function matches(idx: WatcherIndex<string>, key: string): string[] {
  const out: string[] = [];
  idx.visit(key, (v) => out.push(v));
  return out.sort();
}

describe('WatcherIndex', () => {
  test('single keys, ranges, open ranges', () => {
    const idx = new WatcherIndex<string>();
    idx.add(1, 'a', null, 'a-only');
    idx.add(2, 'a', 'c', '[a,c)');
    idx.add(3, 'b', '', 'b..');
    idx.add(4, '\0', '', 'all');
    idx.add(5, 'a', 'a\0', '[a,a\\0)');
    assert.deepEqual(matches(idx, 'a'), ['[a,a\\0)', '[a,c)', 'a-only', 'all']);
    assert.deepEqual(matches(idx, 'a\0'), ['[a,c)', 'all']);
    assert.deepEqual(matches(idx, 'b'), ['[a,c)', 'all', 'b..']);
    assert.deepEqual(matches(idx, 'c'), ['all', 'b..'], 'end is excluded');
    assert.deepEqual(matches(idx, '\xff\xff'), ['all', 'b..']);
    assert.deepEqual(matches(idx, ''), []);
    assert.equal(idx.size, 5);
    assert.equal(idx.remove(2), true);
    assert.equal(idx.remove(2), false);
    assert.equal(idx.remove(1), true);
    assert.deepEqual(matches(idx, 'a'), ['[a,a\\0)', 'all']);
    assert.equal(idx.size, 3);
  });

  test('many watchers on one key and on one range', () => {
    const idx = new WatcherIndex<string>();
    for (let i = 0; i < 100; i++) idx.add(i, 'k', i % 2 === 0 ? null : 'l', `w${i}`);
    assert.equal(matches(idx, 'k').length, 100);
    assert.equal(matches(idx, 'k1').length, 50);
    for (let i = 0; i < 100; i += 3) idx.remove(i);
    assert.equal(matches(idx, 'k').length, 66);
    assert.equal(matches(idx, 'k1').length, 33);
  });

  test('a registered id cannot be added twice', () => {
    const idx = new WatcherIndex<string>();
    idx.add(7, 'a', null, 'x');
    assert.throws(() => idx.add(7, 'b', 'c', 'y'));
  });

  for (const seed of [1, 2, 3]) {
    test(`random watchers and churn agree with a scan (seed ${seed})`, () => {
      const prng = new Prng(seed);
      const idx = new WatcherIndex<string>(seed);
      const model = new Map<number, { key: string; end: RangeEnd }>();
      const letters = 'abcdefgh';
      const rkey = (): string => {
        let s = '';
        const n = 1 + prng.int(3);
        for (let i = 0; i < n; i++) s += letters[prng.int(letters.length)];
        return s;
      };
      const contains = (w: { key: string; end: RangeEnd }, k: string): boolean =>
        w.end === null ? k === w.key : k >= w.key && (w.end === '' || k < w.end);
      let nextId = 1;
      for (let step = 0; step < 4000; step++) {
        const r = prng.int(10);
        if (r < 4 || model.size === 0) {
          const key = rkey();
          const kind = prng.int(3);
          const end: RangeEnd = kind === 0 ? null : kind === 1 ? '' : rkey();
          const id = nextId++;
          idx.add(id, key, end, String(id));
          model.set(id, { key, end });
        } else if (r < 6) {
          const ids = [...model.keys()];
          const id = ids[prng.int(ids.length)]!;
          assert.equal(idx.remove(id), true);
          model.delete(id);
        } else {
          const k = rkey();
          const want = [...model].filter(([, w]) => contains(w, k)).map(([id]) => String(id)).sort();
          assert.deepEqual(matches(idx, k), want, `seed ${seed} step ${step} key ${k}`);
        }
      }
      assert.equal(idx.size, model.size);
    });
  }
});

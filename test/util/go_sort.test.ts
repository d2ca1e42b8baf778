// util/go_sort.ts: it sorts (test/kv/differential.test.ts checks the order of ties against etcd).

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { goSort, goSortReverse } from '../../src/util/go_sort';
import { Prng } from '../../src/util/prng';

function sortWith(xs: number[], reverse: boolean): number[] {
  const d = [...xs];
  const data = {
    length: d.length,
    less: (i: number, j: number) => d[i]! < d[j]!,
    swap: (i: number, j: number) => {
      [d[i], d[j]] = [d[j]!, d[i]!];
    },
  };
  if (reverse) goSortReverse(data);
  else goSort(data);
  return d;
}

describe('go_sort', () => {
  test('sorts arrays of many shapes and sizes, both ways', () => {
    const rng = new Prng(12345);
    const shapes: ((n: number) => number[])[] = [
      (n) => Array.from({ length: n }, () => rng.int(1000)),
      (n) => Array.from({ length: n }, () => rng.int(3)),
      (n) => Array.from({ length: n }, (_, i) => i),
      (n) => Array.from({ length: n }, (_, i) => n - i),
      (n) => Array.from({ length: n }, (_, i) => (i < n / 2 ? i : n - i)),
      (n) => Array.from({ length: n }, (_, i) => (i % 17 === 0 ? 5 : 1)),
    ];
    for (const n of [0, 1, 2, 12, 13, 49, 50, 51, 100, 1000, 5000]) {
      for (const shape of shapes) {
        const xs = shape(n);
        assert.deepEqual(sortWith(xs, false), [...xs].sort((a, b) => a - b));
        assert.deepEqual(sortWith(xs, true), [...xs].sort((a, b) => b - a));
      }
    }
  });
});

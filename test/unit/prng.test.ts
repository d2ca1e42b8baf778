// Prng (xorshift32): the seeded randomness of the raft core and the model tests.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { AssertionError } from '../../src/util/assert';
import { Prng } from '../../src/util/prng';

test('xorshift32 sequence from seed 1 (Marsaglia 13/17/5)', () => {
  const p = new Prng(1);
  assert.deepEqual([p.nextU32(), p.nextU32(), p.nextU32()], [270369, 67634689, 2647435461]);
});

test('same seed, same sequence; seeds are taken modulo 2^32; 0 is replaced by a fixed seed', () => {
  const a = new Prng(42);
  const b = new Prng(42);
  const c = new Prng(42 + 2 ** 32);
  for (let i = 0; i < 100; i++) {
    const x = a.nextU32();
    assert.equal(b.nextU32(), x);
    assert.equal(c.nextU32(), x);
  }
  const z = new Prng(0);
  const fixed = new Prng(0x9e3779b9);
  assert.equal(z.nextU32(), fixed.nextU32());
  assert.notEqual(new Prng(0).nextU32(), 0, 'never stuck at zero');
});

test('int(n) stays in [0, n) and reaches both ends', () => {
  const p = new Prng(3);
  const seen = new Set<number>();
  for (let i = 0; i < 2000; i++) {
    const v = p.int(7);
    assert.ok(Number.isInteger(v) && v >= 0 && v < 7, `value ${v}`);
    seen.add(v);
  }
  assert.equal(seen.size, 7);
  assert.equal(new Prng(9).int(1), 0);
});

test('bad arguments are bugs', () => {
  assert.throws(() => new Prng(1.5), AssertionError);
  assert.throws(() => new Prng(1).int(0), AssertionError);
});

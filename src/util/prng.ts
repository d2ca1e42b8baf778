// Seeded PRNG (xorshift32): deterministic randomness for the raft core and simulations.
import { assert } from './assert';

export class Prng {
  private state: number;

  constructor(seed: number) {
    assert(Number.isInteger(seed), 'seed');
    this.state = (seed >>> 0) || 0x9e3779b9;
  }

  nextU32(): number {
    let x = this.state;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.state = x >>> 0;
    return this.state;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    assert(n > 0, 'prng range');
    return this.nextU32() % n;
  }
}

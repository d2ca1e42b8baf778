// The simulator's one source of randomness: every choice of a run is drawn from it, so a seed
// replays the run exactly (TigerBeetle VOPR, FoundationDB simulation).
import { Prng } from '../../src/util/prng';

export class SimRandom {
  private readonly prng: Prng;

  constructor(seed: number) {
    this.prng = new Prng(scramble(seed));
  }

  u32(): number {
    return this.prng.nextU32();
  }

  /** Uniform in [0, 1). */
  float(): number {
    return this.prng.nextU32() / 4294967296;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    return this.prng.int(n);
  }

  /** Uniform integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.prng.int(hi - lo + 1);
  }

  chance(p: number): boolean {
    return p > 0 && this.float() < p;
  }

  pick<T>(xs: readonly T[]): T {
    return xs[this.prng.int(xs.length)]!;
  }

  /** A probability that is zero with chance `pZero`, else uniform in [0, max]. */
  rate(max: number, pZero = 0.25): number {
    return this.chance(pZero) ? 0 : this.float() * max;
  }

  /**
   * A Prng for a component (e.g. a raft node's election jitter). Its seed is scrambled: a raw
   * draw would start the child inside our own xorshift stream, and two children forked one draw
   * apart would then produce the same sequence shifted by one — in lockstep once they have drawn
   * a different number of values (two nodes campaigning at the same tick forever).
   */
  fork(): Prng {
    return new Prng(scramble(this.u32()));
  }
}

/** murmur3's 32-bit finalizer: neighbouring inputs give unrelated outputs. */
function scramble(seed: number): number {
  let z = (seed + 0x9e3779b9) >>> 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
  return (z ^ (z >>> 16)) >>> 0 || 1;
}

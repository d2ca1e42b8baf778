// An in-memory StoreEngine (src/storage/engine.ts) for the storage simulator, with LMDB's
// guarantees and the faults the simulator injects: a commit is atomic and, once `done(null)`
// ran, durable; a commit in flight at a power cut either landed whole or not at all (seeded);
// a commit may fail (a full disk, as lmdb-js reports it: EIO from a short write) and then
// changed nothing. The committed state lives in a SimStore that outlives engine instances, as
// the data file outlives the process.
import { Db, EngineWrites, StoreEngine } from '../../src/storage/engine';
import { Prng } from '../../src/util/prng';
import { SimScheduler } from './sim_scheduler';

/** The "data file": committed records per database, keys as strings ('b' + latin1 bytes, or
 * 's' + a meta name). */
export class SimStore {
  readonly dbs: Map<string, Uint8Array>[] = [new Map(), new Map(), new Map()];
  commits = 0;

  /** Told after every commit that landed (tests look at each state a crash could leave). */
  onCommit: ((store: SimStore) => void) | null = null;

  apply(w: EngineWrites): void {
    for (let i = 0; i < w.keys.length; i++) {
      const m = this.dbs[w.dbs[i]!]!;
      const k = keyString(w.keys[i]!);
      const v = w.values[i]!;
      if (v === null) m.delete(k);
      else m.set(k, Buffer.from(v));
    }
    this.commits++;
    if (this.onCommit !== null) this.onCommit(this);
  }

  /** A copy of the data file as it is now. */
  clone(): SimStore {
    const c = new SimStore();
    for (let i = 0; i < this.dbs.length; i++) for (const [k, v] of this.dbs[i]!) c.dbs[i]!.set(k, v);
    c.commits = this.commits;
    return c;
  }

  /** Bytes held, for sizes(). */
  bytes(): number {
    let n = 0;
    for (const m of this.dbs) for (const [k, v] of m) n += k.length + v.length + 16;
    return n;
  }
}

export interface EngineFaults {
  /** Probability that one commit fails (EIO, as a full disk reports through lmdb-js). */
  commitFail: number;
  commitMsMin: number;
  commitMsMax: number;
}

export const noEngineFaults: EngineFaults = { commitFail: 0, commitMsMin: 0, commitMsMax: 2 };

function keyString(k: Buffer | string): string {
  return typeof k === 'string' ? 's' + k : 'b' + k.toString('latin1');
}

export class SimEngine implements StoreEngine {
  private inFlight: { w: EngineWrites; cancelled: boolean }[] = [];
  faults: EngineFaults;
  readonly fired: string[] = [];

  constructor(readonly store: SimStore, private readonly sched: SimScheduler, private readonly prng: Prng,
    faults: EngineFaults = noEngineFaults) {
    this.faults = faults;
  }

  get(db: Db, key: Buffer | string): Uint8Array | undefined {
    return this.store.dbs[db]!.get(keyString(key));
  }

  *records(db: Db): Iterable<{ key: Buffer; value: Uint8Array }> {
    const keys = [...this.store.dbs[db]!.keys()].sort();
    for (const k of keys) yield { key: Buffer.from(k.slice(1), 'latin1'), value: this.store.dbs[db]!.get(k)! };
  }

  commit(writes: EngineWrites, done: (err: Error | null) => void): void {
    const fail = this.faults.commitFail > 0 && this.prng.int(1_000_000) < this.faults.commitFail * 1_000_000;
    // The writes are the caller's arrays: copy the values now, as LMDB copies them on put.
    const w: EngineWrites = { dbs: writes.dbs.slice(), keys: writes.keys.slice(), values: writes.values.map((v) => (v === null ? null : Buffer.from(v))) };
    const entry = { w, cancelled: false };
    this.inFlight.push(entry);
    const { commitMsMin, commitMsMax } = this.faults;
    this.sched.at(commitMsMin + this.prng.int(Math.max(1, commitMsMax - commitMsMin + 1)), () => {
      if (entry.cancelled) return;
      this.inFlight.splice(this.inFlight.indexOf(entry), 1);
      if (fail) {
        this.fired.push('commit EIO');
        const err: NodeJS.ErrnoException = new Error('Input/output error (simulated commit failure)');
        err.code = 'EIO';
        done(err);
        return;
      }
      this.store.apply(w);
      done(null);
    });
  }

  /**
   * The power goes (or the process is killed): commits in flight land whole or not at all,
   * in order (a later one never without an earlier one), as LMDB's meta page decides.
   */
  crash(): void {
    let landing = true;
    for (const c of this.inFlight) {
      c.cancelled = true;
      landing = landing && this.prng.int(2) === 0;
      if (landing) this.store.apply(c.w);
    }
    this.inFlight = [];
  }

  sizes(): { dbSize: number; dbSizeInUse: number } {
    const used = this.store.bytes();
    return { dbSize: 4096 * (2 + Math.ceil(used / 4096)), dbSizeInUse: 4096 * (2 + Math.ceil(used / 4096)) };
  }

  async close(): Promise<void> {}
}

// The ordered key-value store under the backend (storage/backend.ts), reduced to what the
// backend needs, so that the simulator can substitute an in-memory store that crashes on a
// seeded schedule (test/helpers/sim_engine.ts). The real one is LMDB (storage/lmdb_engine.ts).
//
// Contract: a commit is atomic (all of its writes or none, also across a crash) and durable
// once `done(null)` ran; commits take effect in the order they were started; reads see
// committed data only. A failed commit (`done(err)`) changed nothing.

/** The databases of the MVCC environment (names in storage/schema.ts). */
export const enum Db {
  Key = 0,
  Meta = 1,
  Lease = 2,
}

/** Writes of one commit, in order; a null value removes the key. Meta keys are strings. */
export interface EngineWrites {
  dbs: Db[];
  keys: (Buffer | string)[];
  values: (Uint8Array | null)[];
}

export interface StoreEngine {
  /** The committed value of `key`, or undefined. */
  get(db: Db, key: Buffer | string): Uint8Array | undefined;
  /** Every committed record of `db` in key order (start-up only). */
  records(db: Db): Iterable<{ key: Buffer; value: Uint8Array }>;
  /** Starts one atomic transaction; `done` runs once it is durable, or with why it failed. */
  commit(writes: EngineWrites, done: (err: Error | null) => void): void;
  /** File bytes up to the last allocated page, and pages holding live data (etcd's dbSize,
   * dbSizeInUse). */
  sizes(): { dbSize: number; dbSizeInUse: number };
  close(): Promise<void>;
}

// The backend of the replicated state (etcd: server/storage/backend, batch_tx.go): MVCC records,
// leases and meta records, batched into transactions of the store engine (LMDB in production,
// storage/lmdb_engine.ts).
//
// The WAL is the durability point of the write path, so this state need not reach disk per
// request: like etcd's backend (batch interval 100 ms, batch limit 10,000), writes collect in
// memory and go to the engine as one transaction every `batchIntervalMs` or `batchLimit` writes
// (or `batchBytesMax` bytes), whichever comes first. Until that transaction has committed,
// readers find the records here (`pending`, `metaQueue`: etcd's txReadBuffer). One LMDB commit
// costs two fsyncs, so per-request commits would triple the syncs of a put (measured: put c=1
// mean 1.06 ms with per-turn commits).
//
// One applied index for everything (issue #10, finding 1). Every transaction carries the raft
// index of the last entry it holds whole (consistentIndex), that entry's term (consistentTerm:
// a copy of the environment is a raft snapshot at (index, term)) and the MVCC revision after
// it, and no
// change of a later entry: the applier brackets each entry with beginEntry()/endEntry(), and a
// transaction is cut only between entries (flush() asserts it). After a crash the engine holds
// the state of exactly one applied index, whatever the moment, for every piece of replicated
// state kept here (MVCC, leases, and what comes next), and the WAL replays from there.
//
// One transaction in flight at a time: a failed transaction changed nothing, and the next one
// must not commit without it (it would record an applied index whose changes are missing). A
// failure (a full disk reports as ENOSPC, EFBIG or, through LMDB's short-write check, EIO) puts
// the writes back in front of the queue, raises `noSpace` (the server refuses writes that grow
// the database, reads go on), and the batch is tried again every `retryIntervalMs`; the first
// success clears it.
import { assert } from '../util/assert';
import { realTimers, Timers } from '../util/timers';
import { Db, EngineWrites, StoreEngine } from './engine';
import { LmdbEngine } from './lmdb_engine';
import * as schema from './schema';

export interface BackendOptions {
  path: string;
  mapSizeBytes: number;
  batchIntervalMs: number;
  batchLimit: number;
  /** Bytes of queued values that cut a batch early (memory bound for large values). */
  batchBytesMax?: number;
  /** How often a failed transaction is tried again. */
  retryIntervalMs?: number;
  /** The store; LMDB at `path` unless a test simulates it. */
  engine?: StoreEngine;
  timers?: Timers;
}

/** Default for BackendOptions.batchBytesMax. */
const batchBytesMaxDefault = 64 * 1024 * 1024;
const retryIntervalMsDefault = 1000;

export class Backend {
  /** Replaced only by an online defragmentation's switch (replaceEngine). */
  engine: StoreEngine;
  /** revision key (latin1) -> KeyValue bytes not yet committed to the engine. */
  private readonly pending: Map<string, Uint8Array>;
  /** Writes not yet handed to the engine, in order: value null = remove. */
  private queue: EngineWrites;
  private queueBytes: number;
  /** Lease records to write with the next batch (null = remove), last write wins. */
  private readonly leaseQueue: Map<string, Buffer | null>;
  private readonly metaQueue: Map<string, Buffer>;
  /** Meta values in the transaction in flight (read like pending). */
  private readonly metaCommitting: Map<string, Buffer>;
  private readonly batchIntervalMs: number;
  private readonly batchLimit: number;
  private readonly batchBytesMax: number;
  private readonly retryIntervalMs: number;
  private readonly timers: Timers;
  private timer: unknown;
  /** The transaction in flight, if any; one at a time. */
  private inFlight: EngineWrites | null;
  /** A flush was asked for while a transaction was in flight: run it when that one is done. */
  private flushWanted: boolean;
  /** Between beginEntry() and endEntry(): no transaction may be cut here. */
  private inEntry: boolean;
  /** Set by endEntry(): recorded as consistentIndex / consistentTerm / currentRev by the next
   * transaction. */
  private appliedIndex: number;
  private appliedTerm: number;
  private appliedRev: number;
  /** The consistentTerm the store holds or the queue will write: written again only when the
   * applied term differs (meta is last-write-wins, so the stored one is still right). */
  private termWritten: number;
  private appliedDirty: boolean;
  /** Numbers of transactions: the last one started, the last one durable. */
  private commitsStarted: number;
  private commitsDurable: number;
  private durableWaiters: { commit: number; resolve: () => void }[];
  /** The last transaction failed (disk full or I/O error); writes that grow the db are refused. */
  noSpace: boolean;
  /** Told the error when a transaction fails and null when one succeeds again after that. */
  failureObserver: ((err: Error | null) => void) | null = null;
  /** Told how long each batch took to commit, in seconds, and how many writes it held. */
  commitObserver: ((seconds: number, writes: number) => void) | null = null;
  /** Told each meta record once the transaction holding it has committed. */
  metaCommitObserver: ((name: string, value: Buffer) => void) | null = null;
  private readonly flushBound: () => void;
  /**
   * While a defragmentation copies the store (StorageCore.defragment, workers/storage_core.ts): every transaction that
   * commits from journalStart() on, in commit order, to be written again into the copy. Null
   * otherwise.
   */
  private journal: EngineWrites[] | null = null;
  private journalBytes = 0;
  /** suspendCommits(): no transaction starts; flush() only notes that one is wanted. */
  private suspended = false;

  constructor(options: BackendOptions) {
    this.engine = options.engine ?? new LmdbEngine(options.path, options.mapSizeBytes);
    this.pending = new Map();
    this.queue = emptyWrites();
    this.queueBytes = 0;
    this.leaseQueue = new Map();
    this.metaQueue = new Map();
    this.metaCommitting = new Map();
    this.batchIntervalMs = options.batchIntervalMs;
    this.batchLimit = options.batchLimit;
    this.batchBytesMax = options.batchBytesMax ?? batchBytesMaxDefault;
    this.retryIntervalMs = options.retryIntervalMs ?? retryIntervalMsDefault;
    this.timers = options.timers ?? realTimers;
    this.timer = null;
    this.inFlight = null;
    this.flushWanted = false;
    this.inEntry = false;
    this.appliedIndex = 0;
    this.appliedTerm = 0;
    this.appliedRev = 0;
    this.termWritten = 0;
    this.appliedDirty = false;
    this.commitsStarted = 0;
    this.commitsDurable = 0;
    this.durableWaiters = [];
    this.noSpace = false;
    this.flushBound = this.flush.bind(this);
  }

  // ---- entries: the unit of atomicity ----

  /** The changes that follow belong to one raft entry, until endEntry(). */
  beginEntry(): void {
    assert(!this.inEntry, 'backend entry not ended');
    this.inEntry = true;
  }

  /**
   * The entry at `index` (of raft term `term`) is applied whole; the store revision is `rev`. A
   * transaction may be cut here, and one is when the batch is full. `term` omitted (unit tests
   * of the backend alone): the last one stands.
   */
  endEntry(index: number, rev: number, term: number = this.appliedTerm): void {
    assert(this.inEntry, 'backend entry not begun');
    assert(index > this.appliedIndex, 'applied index must grow');
    // Not asserted to grow: after `concordutl wal repair` cut the log behind the state, a lone
    // member's new entries may carry a lower term than those applied before (wal.ts restartAfter).
    assert(Number.isSafeInteger(term) && term >= 0, 'applied term');
    this.inEntry = false;
    this.appliedIndex = index;
    this.appliedTerm = term;
    this.appliedRev = rev;
    this.appliedDirty = true;
    if (this.queue.keys.length >= this.batchLimit || this.queueBytes >= this.batchBytesMax) this.flush();
    else this.armTimer();
  }

  /**
   * The applied index restored at start (consistentIndex, currentRev, consistentTerm), so
   * endEntry can check order. `term` 0: unknown (a data dir written before consistentTerm was
   * kept).
   */
  restoreApplied(index: number, rev: number, term = 0): void {
    this.appliedIndex = index;
    this.appliedTerm = term;
    this.appliedRev = rev;
    this.termWritten = this.getMetaU64(schema.metaConsistentTerm);
  }

  // ---- MVCC records ----

  getKv(revKey: Buffer): Uint8Array | undefined {
    if (this.pending.size > 0) {
      const p = this.pending.get(revKey.toString('latin1'));
      if (p !== undefined) return p;
    }
    return this.engine.get(Db.Key, revKey);
  }

  /** Committed MVCC records in revision order (start-up: nothing is pending then). */
  kvRecords(): Iterable<{ key: Buffer; value: Uint8Array }> {
    assert(this.pending.size === 0, 'kv records read with writes pending');
    return this.engine.records(Db.Key);
  }

  putKv(revKey: Buffer, value: Uint8Array): void {
    this.pending.set(revKey.toString('latin1'), value);
    this.enqueue(Db.Key, revKey, value);
  }

  removeKv(revKey: Buffer): void {
    this.enqueue(Db.Key, revKey, null);
  }

  private enqueue(db: Db, key: Buffer, value: Uint8Array | null): void {
    const q = this.queue;
    q.dbs.push(db);
    q.keys.push(key);
    q.values.push(value);
    this.queueBytes += key.length + (value === null ? 0 : value.length);
    // Cut at the next endEntry() when full; the timer covers writes made outside entries
    // (compaction sweeps, start-up).
    this.armTimer();
  }

  private armTimer(): void {
    if (this.timer === null) this.timer = this.timers.setTimeout(this.flushBound, this.batchIntervalMs);
  }

  private disarmTimer(): void {
    if (this.timer !== null) {
      this.timers.clearTimeout(this.timer);
      this.timer = null;
    }
  }

  /** Hands everything queued to the engine as one transaction. Only between entries. */
  flush(): void {
    assert(!this.inEntry, 'backend transaction cut inside an entry');
    this.disarmTimer();
    if (this.inFlight !== null || this.suspended) {
      this.flushWanted = true;
      return;
    }
    this.flushWanted = false;
    if (this.appliedDirty) {
      this.metaQueue.set(schema.metaConsistentIndex, schema.u64Bytes(this.appliedIndex));
      if (this.appliedTerm !== this.termWritten) {
        this.metaQueue.set(schema.metaConsistentTerm, schema.u64Bytes(this.appliedTerm));
        this.termWritten = this.appliedTerm;
      }
      this.metaQueue.set(schema.metaCurrentRev, schema.u64Bytes(this.appliedRev));
      this.appliedDirty = false;
    }
    if (this.queue.keys.length === 0 && this.metaQueue.size === 0 && this.leaseQueue.size === 0) return;
    const w = this.queue;
    this.queue = emptyWrites();
    this.queueBytes = 0;
    for (const [k, v] of this.leaseQueue) {
      w.dbs.push(Db.Lease);
      w.keys.push(Buffer.from(k, 'latin1'));
      w.values.push(v);
    }
    this.leaseQueue.clear();
    // Meta last: a reader of the engine (the watch worker) sees the revisions before the
    // currentRev that covers them within the same transaction anyway.
    for (const [name, v] of this.metaQueue) {
      w.dbs.push(Db.Meta);
      w.keys.push(name);
      w.values.push(v);
      this.metaCommitting.set(name, v);
    }
    this.metaQueue.clear();
    this.inFlight = w;
    const commit = ++this.commitsStarted;
    const startedAt = performance.now();
    this.engine.commit(w, (err) => this.committed(w, commit, startedAt, err));
  }

  private committed(w: EngineWrites, commit: number, startedAt: number, err: Error | null): void {
    assert(this.inFlight === w, 'backend commits out of order');
    this.inFlight = null;
    if (err !== null) {
      this.failed(w, err);
      return;
    }
    this.commitsDurable = commit;
    if (this.journal !== null) {
      this.journal.push(w);
      this.journalBytes += writesBytes(w);
    }
    if (this.commitObserver !== null) this.commitObserver((performance.now() - startedAt) / 1000, w.keys.length);
    const { dbs, keys, values } = w;
    for (let i = 0; i < keys.length; i++) {
      const v = values[i]!;
      if (dbs[i] === Db.Key) {
        if (v === null) continue;
        const k = (keys[i] as Buffer).toString('latin1');
        if (this.pending.get(k) === v) this.pending.delete(k); // unless written again since
      } else if (dbs[i] === Db.Meta) {
        const name = keys[i] as string;
        if (this.metaCommitting.get(name) === v) this.metaCommitting.delete(name);
        if (this.metaCommitObserver !== null) this.metaCommitObserver(name, v as Buffer);
      }
    }
    if (this.noSpace) {
      this.noSpace = false;
      if (this.failureObserver !== null) this.failureObserver(null);
    }
    const waiters = this.durableWaiters;
    let n = 0;
    while (n < waiters.length && waiters[n]!.commit <= commit) waiters[n++]!.resolve();
    if (n > 0) waiters.splice(0, n);
    if (this.flushWanted) this.flush();
  }

  /** The transaction changed nothing: its writes go back in front, to be tried again. */
  private failed(w: EngineWrites, err: Error): void {
    const retry = emptyWrites();
    for (let i = 0; i < w.keys.length; i++) {
      const db = w.dbs[i]!;
      if (db === Db.Lease) {
        const k = (w.keys[i] as Buffer).toString('latin1');
        if (!this.leaseQueue.has(k)) this.leaseQueue.set(k, w.values[i] as Buffer | null);
      } else if (db === Db.Meta) {
        const name = w.keys[i] as string;
        if (this.metaCommitting.get(name) === w.values[i]) this.metaCommitting.delete(name);
        if (!this.metaQueue.has(name)) this.metaQueue.set(name, w.values[i] as Buffer);
      } else {
        retry.dbs.push(db);
        retry.keys.push(w.keys[i]!);
        retry.values.push(w.values[i]!);
        this.queueBytes += w.keys[i]!.length + (w.values[i]?.length ?? 0);
      }
    }
    const q = this.queue;
    for (let i = 0; i < q.keys.length; i++) {
      retry.dbs.push(q.dbs[i]!);
      retry.keys.push(q.keys[i]!);
      retry.values.push(q.values[i]!);
    }
    this.queue = retry;
    const first = !this.noSpace;
    this.noSpace = true;
    if (first && this.failureObserver !== null) this.failureObserver(err);
    this.flushWanted = false;
    this.disarmTimer();
    this.timer = this.timers.setTimeout(this.flushBound, this.retryIntervalMs);
  }

  // ---- leases (read from the engine only at start: the lease store keeps them in memory) ----

  putLease(id: Buffer, record: Buffer | null): void {
    this.leaseQueue.set(id.toString('latin1'), record);
    this.armTimer();
  }

  *leaseRecords(): Generator<{ id: Buffer; record: Buffer }> {
    for (const { key, value } of this.engine.records(Db.Lease)) yield { id: Buffer.from(key), record: Buffer.from(value) };
  }

  // ---- meta ----

  getMetaU64(name: string): number {
    const b = this.getMetaBytes(name);
    if (b === undefined) return 0;
    assert(b.length === 8, 'meta u64 length');
    return schema.readU64(b, 0);
  }

  putMetaU64(name: string, value: number): void {
    this.putMetaBytes(name, schema.u64Bytes(value));
  }

  getMetaBytes(name: string): Buffer | undefined {
    // Engine reads see committed transactions only: queued and committing values come first.
    const v = this.metaQueue.get(name) ?? this.metaCommitting.get(name) ?? this.engine.get(Db.Meta, name);
    return v === undefined ? undefined : Buffer.from(v.buffer, v.byteOffset, v.length);
  }

  /** Meta records go with the next batch: the last value written wins. */
  putMetaBytes(name: string, value: Buffer): void {
    assert(name !== schema.metaConsistentIndex && name !== schema.metaConsistentTerm &&
      name !== schema.metaCurrentRev, 'applied index is set by endEntry');
    this.metaQueue.set(name, value);
    this.armTimer();
  }

  // ---- online defragmentation (StorageCore.defragment, workers/storage_core.ts) ----

  /**
   * From now on every transaction that commits is also kept, in commit order, until
   * journalTake() hands it over or journalStop(). The one in flight now counts: it commits after
   * this call. Every write is a blind put or remove of a whole record, so writing a journal again
   * over a copy that already holds some of its transactions leaves the same state as the store.
   */
  journalStart(): void {
    assert(this.journal === null, 'a journal is running already');
    this.journal = [];
    this.journalBytes = 0;
  }

  /** The journaled transactions so far, merged into one in commit order; the journal goes on. */
  journalTake(): { writes: EngineWrites; bytes: number } {
    assert(this.journal !== null, 'no journal');
    const out = emptyWrites();
    for (const w of this.journal) {
      for (let i = 0; i < w.keys.length; i++) {
        out.dbs.push(w.dbs[i]!);
        out.keys.push(w.keys[i]!);
        out.values.push(w.values[i]!);
      }
    }
    const bytes = this.journalBytes;
    this.journal = [];
    this.journalBytes = 0;
    return { writes: out, bytes };
  }

  /** Bytes journaled and not yet taken (a defragmentation's memory bound). */
  get journalPendingBytes(): number {
    return this.journalBytes;
  }

  journalStop(): void {
    this.journal = null;
    this.journalBytes = 0;
  }

  /**
   * No transaction starts until resumeCommits(); resolves once the one in flight has finished
   * (committed or failed). Applies go on into the queue meanwhile, and reads find them there.
   */
  async suspendCommits(): Promise<void> {
    this.suspended = true;
    this.disarmTimer();
    while (this.inFlight !== null) await new Promise((r) => setImmediate(r));
  }

  /** Commits start again (and one now when one was wanted or anything waits). */
  resumeCommits(): void {
    this.suspended = false;
    if (this.flushWanted || this.queue.keys.length > 0 || this.metaQueue.size > 0 || this.leaseQueue.size > 0 || this.appliedDirty) {
      if (!this.inEntry) this.flush();
      else this.armTimer();
    }
  }

  /**
   * The defragmentation's switch: `engine` holds everything the old one committed (it was
   * suspended meanwhile); reads and commits go to it from now on. Returns the old engine, which
   * the caller closes.
   */
  replaceEngine(engine: StoreEngine): StoreEngine {
    assert(this.suspended && this.inFlight === null, 'engine replaced while commits run');
    const old = this.engine;
    this.engine = engine;
    return old;
  }

  // ---- durability ----

  /** Commits what is queued now; resolves when it (and everything before it) is durable. */
  flushed(): Promise<void> {
    this.flush();
    // Still queued (a transaction was in flight): the next one takes it.
    const target = this.queue.keys.length > 0 || this.metaQueue.size > 0 || this.leaseQueue.size > 0 ||
      this.appliedDirty ? this.commitsStarted + 1 : this.commitsStarted;
    if (target <= this.commitsDurable) return Promise.resolve();
    return new Promise((resolve) => this.durableWaiters.push({ commit: target, resolve }));
  }

  sizes(): { dbSize: number; dbSizeInUse: number } {
    return this.engine.sizes();
  }

  /**
   * Forgets everything not yet handed to the engine, as a crash would (tests of recovery: the
   * engine keeps what it committed). The backend must not be used afterwards.
   */
  discardUncommitted(): void {
    this.disarmTimer();
    this.queue = emptyWrites();
    this.queueBytes = 0;
    this.leaseQueue.clear();
    this.metaQueue.clear();
    this.appliedDirty = false;
    this.inEntry = false;
  }

  /**
   * Closes the engine without committing what is queued (a raft snapshot replaces the whole
   * state: nothing of the old one needs to reach the store, the WAL has all of it until the
   * snapshot's WAL restart). Waits for the transaction in flight, which cannot be called back.
   * Waiters of flushed() are released: the state they waited on is gone. The backend must not be
   * used afterwards.
   */
  async abandon(): Promise<void> {
    this.discardUncommitted();
    this.pending.clear();
    this.metaCommitting.clear();
    this.flushWanted = false;
    while (this.inFlight !== null) await new Promise((r) => setImmediate(r));
    this.disarmTimer(); // a failed commit re-arms its retry
    const waiters = this.durableWaiters;
    this.durableWaiters = [];
    for (const w of waiters) w.resolve();
    await this.engine.close();
  }

  /** Commits what is queued and closes the engine; gives up on a failing store (the WAL has it). */
  async close(): Promise<void> {
    if (!this.noSpace) await this.flushed();
    this.disarmTimer();
    while (this.inFlight !== null) await new Promise((r) => setImmediate(r));
    await this.engine.close();
  }
}

function writesBytes(w: EngineWrites): number {
  let n = 0;
  for (let i = 0; i < w.keys.length; i++) n += w.keys[i]!.length + (w.values[i]?.length ?? 0);
  return n;
}

function emptyWrites(): EngineWrites {
  return { dbs: [], keys: [], values: [] };
}

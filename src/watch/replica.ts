// The watch worker's read-only copy of the MVCC state: the key index (which revision of a key
// is visible at a revision, for prev_kv), the revisions LMDB has not committed yet (the window),
// and read access to LMDB for older history.
//
// Why a replica: the storage worker owns the MVCC index and must not be asked for history or
// prev_kv on its hot path. The replica is fed by the event ring in revision order, so at any
// moment it is the MVCC state at `rev`, which may trail the storage worker by a ring's worth.
//
// Where a revision's records are: LMDB holds every revision <= committedRev; the window holds
// every revision in (committedRev, rev]. The window's entries go once a Committed record says
// LMDB has them (and the read transaction is renewed so that LMDB reads see them).
//
// A raft snapshot install replaces the storage worker's environment (a new data file and lock
// file under the same path, watch/events.ts): reopen() opens the path again, under the kv
// environment lock, and rebuilds everything from the new store; until then this replica keeps
// reading its old environment, whose file stays mapped, so it stays the state at `rev`.
// An online defragmentation replaces the file the same way but keeps the state: reopenFile()
// only opens the path again (the Reopened record, watch/events.ts).
import { open, RootDatabase, Database } from 'lmdb';
import { TreeIndex } from '../mvcc/index';
import * as schema from '../storage/schema';
import { assert } from '../util/assert';
import { keyOfKeyValue, type EventChange, type KvEnvSlots } from './events';

export class MvccReplica {
  index: TreeIndex;
  /** Last revision applied to the index. */
  rev: number;
  /** Revisions below it are compacted away (etcd compactMainRev); -1 when never compacted. */
  compactRev: number;
  /** LMDB holds every revision <= committedRev. */
  committedRev: number;
  /** The kv environment generation this replica reads (KvEnvSlots; 0 without them). */
  generation: number;
  /** The contents generation of the state it was built from (KvEnvSlots.contents). */
  contents: number;
  private readonly window: Map<number, EventChange[]>;
  private readonly kvPath: string;
  private readonly mapSizeBytes: number;
  private readonly kvEnv: KvEnvSlots | null;
  private env: RootDatabase;
  private kv: Database<Buffer, Buffer>;
  private meta: Database<Buffer, string>;

  /** `kvEnv`: the lock shared with the storage worker (null in tests without one). */
  constructor(kvPath: string, mapSizeBytes: number, kvEnv: KvEnvSlots | null = null) {
    this.index = new TreeIndex();
    this.rev = 1;
    this.compactRev = -1;
    this.committedRev = 0;
    this.generation = 0;
    this.contents = 0;
    this.window = new Map();
    this.kvPath = kvPath;
    this.mapSizeBytes = mapSizeBytes;
    this.kvEnv = kvEnv;
    this.env = null as unknown as RootDatabase; // set by openEnv
    this.kv = null as unknown as Database<Buffer, Buffer>;
    this.meta = null as unknown as Database<Buffer, string>;
    this.openEnv();
  }

  /** Opens the kv path (under the kv environment lock) and notes its generation. */
  private openEnv(): void {
    if (this.kvEnv !== null) this.kvEnv.lock();
    try {
      // Same options as the storage worker's Backend: lmdb-js shares one environment per
      // process between threads; this side only reads.
      this.env = open({ path: this.kvPath, maxDbs: 8, mapSize: this.mapSizeBytes });
      this.generation = this.kvEnv !== null ? this.kvEnv.generation : 0;
      this.contents = this.kvEnv !== null ? this.kvEnv.contents : 0;
    } finally {
      if (this.kvEnv !== null) this.kvEnv.unlock();
    }
    this.kv = this.env.openDB<Buffer, Buffer>({ name: schema.dbKey, keyEncoding: 'binary', encoding: 'binary' });
    this.meta = this.env.openDB<Buffer, string>({ name: schema.dbMeta, encoding: 'binary' });
  }

  /** The kv data file was replaced (an install or a defragmentation) since this replica opened it. */
  get stale(): boolean {
    return this.kvEnv !== null && this.kvEnv.generation !== this.generation;
  }

  /** The state was replaced (a raft snapshot install): the index must be rebuilt, not only the file reopened. */
  get contentsStale(): boolean {
    return this.kvEnv !== null && this.kvEnv.contents !== this.contents;
  }

  /**
   * A defragmentation replaced the file by a copy of the same state: opens the path again and
   * keeps the index, the window and the revisions (the new file holds every committed record
   * the old one did). The old environment is closed after the new one is open.
   */
  reopenFile(): void {
    const old = this.env;
    const contents = this.contents;
    this.openEnv();
    assert(this.contents === contents, 'reopened a file of other contents without a restore');
    void old.close();
  }

  /**
   * Opens the replaced store and rebuilds the replica from it (etcd watchableStore.Restore:
   * the store is restored from the new backend). The old environment is closed after the new
   * one is open. Returns the new revision.
   */
  reopen(): number {
    const old = this.env;
    this.openEnv();
    void old.close();
    this.index = new TreeIndex();
    this.window.clear();
    this.rev = 1;
    this.compactRev = -1;
    this.committedRev = 0;
    this.restore();
    return this.rev;
  }

  /** Builds the index from what LMDB has committed (the storage worker's restore, read-only). */
  restore(): void {
    this.env.resetReadTxn();
    const c = this.metaU64(schema.metaCurrentRev);
    const scheduled = this.meta.getBinary(schema.metaScheduledCompact);
    this.compactRev = scheduled !== undefined ? schema.readU64(scheduled, 0) : -1;
    this.readRecords(0, c);
    this.rev = Math.max(1, c);
    this.committedRev = c;
  }

  /**
   * Catches up from LMDB after the ring dropped records: applies committed revisions after
   * `rev` to the index. Returns the revision LMDB has reached.
   */
  resyncFromLmdb(): number {
    this.env.resetReadTxn();
    const c = this.metaU64(schema.metaCurrentRev);
    const scheduled = this.meta.getBinary(schema.metaScheduledCompact);
    if (c > this.rev) {
      this.readRecords(this.rev + 1, c);
      this.rev = c;
    }
    this.markCommitted(c);
    if (scheduled !== undefined) {
      const at = schema.readU64(scheduled, 0);
      if (at > this.compactRev) this.compact(at);
    }
    return c;
  }

  private metaU64(name: string): number {
    const b = this.meta.getBinary(name);
    return b === undefined ? 0 : schema.readU64(b, 0);
  }

  private readRecords(from: number, to: number): void {
    if (to < from) return;
    for (const { key, value } of this.kv.getRange({ start: schema.revKey(from, 0, false), end: schema.revKey(to + 1, 0, false) })) {
      const main = schema.revKeyMain(key);
      if (main > to) break;
      const ki = this.index.getOrCreate(keyOfKeyValue(value));
      ki.restore(main, schema.revKeySub(key), schema.revKeyIsTombstone(key), 0, 1);
    }
  }

  applyRevision(rev: number, changes: EventChange[]): void {
    assert(rev === this.rev + 1, 'replica revision gap');
    for (let sub = 0; sub < changes.length; sub++) {
      const c = changes[sub]!;
      this.index.getOrCreate(c.key).restore(rev, sub, c.tombstone, 0, 1);
    }
    this.window.set(rev, changes);
    this.rev = rev;
  }

  /** Drops history below `at` from the index, as the storage worker's sweep does on disk. */
  compact(at: number): void {
    this.compactRev = at;
    const emptied: string[] = [];
    this.index.visitFrom('', (ki) => {
      if (ki.compact(at, noop, null)) emptied.push(ki.key);
      return true;
    });
    for (const key of emptied) this.index.remove(key);
  }

  /** LMDB has committed every revision <= rev: the window no longer needs them. */
  markCommitted(rev: number): void {
    if (rev <= this.committedRev) return;
    this.env.resetReadTxn();
    for (let r = this.committedRev + 1; r <= rev; r++) this.window.delete(r);
    this.committedRev = rev;
  }

  /** Starts a fresh LMDB read snapshot (call before checking the shared compaction revision). */
  beginRead(): void {
    this.env.resetReadTxn();
    this.meta.getBinary(schema.metaCurrentRev);
  }

  get windowRevisions(): number {
    return this.window.size;
  }

  private record(main: number, sub: number, tombstone: boolean): Uint8Array | undefined {
    const w = this.window.get(main);
    if (w !== undefined) return w[sub]?.kv;
    return this.kv.getBinary(schema.revKey(main, sub, tombstone)) ?? undefined;
  }

  /** The KeyValue of `key` visible at `rev`, or null (etcd: Range(key, rev)). */
  valueAt(key: string, rev: number): Uint8Array | null {
    const ki = this.index.get(key);
    if (ki === undefined) return null;
    const i = ki.visibleAt(rev);
    if (i < 0) return null;
    return this.record(ki.mains[i]!, ki.subs[i]!, false) ?? null;
  }

  /**
   * Calls visit for every change with revision in [from, to], in revision order: LMDB for the
   * committed part, then the window.
   */
  history(from: number, to: number, visit: (rev: number, change: EventChange) => void): void {
    if (from < 1) from = 1;
    const lmdbTo = Math.min(to, this.committedRev);
    if (from <= lmdbTo) {
      for (const { key, value } of this.kv.getRange({ start: schema.revKey(from, 0, false), end: schema.revKey(lmdbTo + 1, 0, false) })) {
        const main = schema.revKeyMain(key);
        if (main > lmdbTo) break;
        const kv = Uint8Array.prototype.slice.call(value) as Uint8Array;
        visit(main, { key: keyOfKeyValue(kv), kv, tombstone: schema.revKeyIsTombstone(key) });
      }
    }
    for (let r = Math.max(from, this.committedRev + 1); r <= to; r++) {
      const changes = this.window.get(r);
      if (changes === undefined) continue;
      for (const c of changes) visit(r, c);
    }
  }

  close(): Promise<void> {
    return this.env.close();
  }
}

function noop(): void {
  /* the storage worker removes the records; the replica only forgets them */
}

// The LMDB backend: one environment, three named dbs (schema.ts), group commit.
//
// Writes are lmdb-js asynchronous puts: every put issued in one event turn lands in one LMDB
// transaction, committed and fsynced by lmdb-js's native write thread, so N writes cost one
// fsync (group commit). `flushed()` resolves when everything issued so far is durable.
//
// Between issuing a write and its commit, LMDB readers cannot see it; MVCC applies must be
// readable at once, so MVCC records also sit in `pending` (etcd's txReadBuffer) until the
// transaction that carries them has committed.
import { open, RootDatabase, Database } from 'lmdb';
import { assert } from '../util/assert';
import * as schema from './schema';

export interface BackendOptions {
  path: string;
  mapSizeBytes: number;
}

export class Backend {
  readonly env: RootDatabase;
  readonly log: Database<Buffer, Buffer>;
  readonly kv: Database<Buffer, Buffer>;
  readonly meta: Database<Buffer, string>;
  /** revision key (latin1) -> KeyValue bytes written but maybe not yet committed. */
  private readonly pending: Map<string, Uint8Array>;
  /** Keys of `pending` by commit generation, cleared when that generation has committed. */
  private pendingKeys: string[];
  private commitWaitArmed: boolean;
  private readonly onCommittedBound: (keys: string[]) => void;

  constructor(options: BackendOptions) {
    this.env = open({
      path: options.path,
      maxDbs: 8,
      mapSize: options.mapSizeBytes,
      // Durability: no noSync/noMetaSync. overlappingSync stays on (lmdb-js default on Linux):
      // we wait for `flushed`, not for the put promise, before anything is acknowledged.
    });
    this.log = this.env.openDB<Buffer, Buffer>({ name: schema.dbLog, keyEncoding: 'binary', encoding: 'binary' });
    this.kv = this.env.openDB<Buffer, Buffer>({ name: schema.dbKey, keyEncoding: 'binary', encoding: 'binary' });
    this.meta = this.env.openDB<Buffer, string>({ name: schema.dbMeta, encoding: 'binary' });
    this.pending = new Map();
    this.pendingKeys = [];
    this.commitWaitArmed = false;
    this.onCommittedBound = this.onCommitted.bind(this);
  }

  // ---- MVCC records ----

  getKv(revKey: Buffer): Uint8Array | undefined {
    if (this.pending.size > 0) {
      const p = this.pending.get(revKey.toString('latin1'));
      if (p !== undefined) return p;
    }
    return this.kv.getBinary(revKey);
  }

  putKv(revKey: Buffer, value: Uint8Array): void {
    const k = revKey.toString('latin1');
    this.pending.set(k, value);
    this.pendingKeys.push(k);
    void this.kv.put(revKey, value as Buffer);
    this.armCommitWait();
  }

  removeKv(revKey: Buffer): void {
    void this.kv.remove(revKey);
  }

  private armCommitWait(): void {
    if (this.commitWaitArmed) return;
    this.commitWaitArmed = true;
    // Runs after this event turn's writes are queued: they all belong to the transaction that
    // `committed` waits for.
    queueMicrotask(() => {
      const keys = this.pendingKeys;
      this.pendingKeys = [];
      this.commitWaitArmed = false;
      void this.env.committed.then(() => this.onCommittedBound(keys));
    });
  }

  private onCommitted(keys: string[]): void {
    for (let i = 0; i < keys.length; i++) this.pending.delete(keys[i]!);
  }

  // ---- meta ----

  getMetaU64(name: string): number {
    const b = this.meta.getBinary(name);
    if (b === undefined) return 0;
    assert(b.length === 8, 'meta u64 length');
    return schema.readU64(b, 0);
  }

  putMetaU64(name: string, value: number): void {
    void this.meta.put(name, schema.u64Bytes(value));
  }

  getMetaBytes(name: string): Buffer | undefined {
    return this.meta.getBinary(name);
  }

  putMetaBytes(name: string, value: Buffer): void {
    void this.meta.put(name, value);
  }

  // ---- durability ----

  /** Resolves when every write issued so far is committed and fsynced. */
  flushed(): Promise<boolean> {
    return this.env.flushed;
  }

  /**
   * dbSize: bytes of the data file up to LMDB's last allocated page (etcd: bbolt file size).
   * dbSizeInUse: pages holding live data in our dbs, the rest being LMDB's free list.
   */
  sizes(): { dbSize: number; dbSizeInUse: number } {
    const stats = this.env.getStats() as Record<string, number>;
    const pageSize = stats['pageSize']!;
    const dbSize = (stats['lastPageNumber']! + 1) * pageSize;
    let pages = 2 + pagesOf(stats); // two LMDB meta pages + the root (names) db
    pages += pagesOf(this.log.getStats() as Record<string, number>);
    pages += pagesOf(this.kv.getStats() as Record<string, number>);
    pages += pagesOf(this.meta.getStats() as Record<string, number>);
    return { dbSize, dbSizeInUse: Math.min(dbSize, pages * pageSize) };
  }

  async close(): Promise<void> {
    await this.env.flushed;
    await this.env.close();
  }
}

function pagesOf(stats: Record<string, number>): number {
  return (stats['treeBranchPageCount'] ?? 0) + (stats['treeLeafPageCount'] ?? 0) +
    (stats['overflowPages'] ?? 0);
}

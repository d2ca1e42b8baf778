// The StoreEngine of production: one LMDB environment with the `key`, `meta` and `lease`
// databases (storage/schema.ts), through lmdb-js.
//
// Atomicity: lmdb-js puts every asynchronous write issued in one event turn into one LMDB
// transaction (its `eventTurnBatching`, on by default), and `commit` issues all of a commit's
// writes synchronously, so a commit is one transaction. We never call transactionSync, the one
// thing that splits such a batch (lmdb-js README, "ordering").
// Durability: overlappingSync is off, so the commit promise resolves once the transaction is
// on disk (two fsyncs: data, then meta page); a commit is then both visible and durable, and one
// promise tells both. Commits run on lmdb-js's own write thread.
// Failure: a failed transaction changes nothing (LMDB aborts it). lmdb-js reports a short
// write, as a full disk gives, as EIO; the backend treats every commit failure alike.
import { open, RootDatabase, Database } from 'lmdb';
import * as schema from './schema';
import { Db, EngineWrites, StoreEngine } from './engine';

type AnyDb = Database<Buffer, Buffer | string>;

export class LmdbEngine implements StoreEngine {
  readonly env: RootDatabase;
  private readonly dbs: AnyDb[];

  constructor(path: string, mapSizeBytes: number) {
    this.env = open({ path, noSubdir: false, maxDbs: 8, mapSize: mapSizeBytes, overlappingSync: false });
    const key = this.env.openDB<Buffer, Buffer>({ name: schema.dbKey, keyEncoding: 'binary', encoding: 'binary' });
    const meta = this.env.openDB<Buffer, string>({ name: schema.dbMeta, encoding: 'binary' });
    const lease = this.env.openDB<Buffer, Buffer>({ name: schema.dbLease, keyEncoding: 'binary', encoding: 'binary' });
    this.dbs = [key as AnyDb, meta as AnyDb, lease as AnyDb];
  }

  get(db: Db, key: Buffer | string): Uint8Array | undefined {
    return this.dbs[db]!.getBinary(key);
  }

  *records(db: Db): Iterable<{ key: Buffer; value: Uint8Array }> {
    for (const { key, value } of this.dbs[db]!.getRange({})) yield { key: key as Buffer, value: value as Uint8Array };
  }

  commit(writes: EngineWrites, done: (err: Error | null) => void): void {
    const { dbs, keys, values } = writes;
    // lmdb-js hands back one promise per transaction, except for the first write of a batch:
    // every distinct promise must be caught, or a failed commit is an unhandled rejection.
    let last: Promise<boolean> | null = null;
    for (let i = 0; i < keys.length; i++) {
      const store = this.dbs[dbs[i]!]!;
      const v = values[i]!;
      const p = v === null ? store.remove(keys[i]!) : store.put(keys[i]!, v as Buffer);
      if (p !== last) {
        if (last !== null) last.then(undefined, ignoreFailure);
        last = p;
      }
    }
    if (last === null) {
      queueMicrotask(() => done(null));
      return;
    }
    last.then(() => done(null), (err: Error & { commitError?: Promise<unknown> }) => {
      // The put's error only says "Commit failed"; lmdb-js rejects `commitError` with the cause.
      const cause = err.commitError;
      if (cause !== undefined && typeof cause.then === 'function') {
        cause.then(() => done(err), (real: Error) => done(real));
      } else {
        done(err);
      }
    });
  }

  sizes(): { dbSize: number; dbSizeInUse: number } {
    const stats = this.env.getStats() as Record<string, number>;
    const pageSize = stats['pageSize']!;
    const dbSize = (stats['lastPageNumber']! + 1) * pageSize;
    let pages = 2 + pagesOf(stats); // two LMDB meta pages + the root (names) db
    for (const d of this.dbs) pages += pagesOf(d.getStats() as Record<string, number>);
    return { dbSize, dbSizeInUse: Math.min(dbSize, pages * pageSize) };
  }

  async close(): Promise<void> {
    await this.env.close();
  }
}

/**
 * lmdb-js also rejects a promise of its own on a failed commit, one no caller holds: the one
 * it makes for the write that starts an event-turn batch (write.js, writeBatchStart, where
 * lmdb-js's own comment says these should not be reset for the batch start). The engine learns of the
 * failure through the promises its puts return; the thread that uses the engine passes this
 * duplicate over in its unhandled-rejection handler. Told by lmdb-js's `commitError` property.
 */
export function isUnclaimedCommitFailure(reason: unknown): boolean {
  return reason instanceof Error && 'commitError' in reason;
}

/** The failure reaches `done` through the commit's last promise; earlier ones only need a catch. */
function ignoreFailure(err: Error & { commitError?: Promise<unknown> }): void {
  const cause = err.commitError;
  if (cause !== undefined && typeof cause.then === 'function') cause.then(undefined, ignoreCause);
}

function ignoreCause(): void {}

function pagesOf(stats: Record<string, number>): number {
  return (stats['treeBranchPageCount'] ?? 0) + (stats['treeLeafPageCount'] ?? 0) +
    (stats['overflowPages'] ?? 0);
}

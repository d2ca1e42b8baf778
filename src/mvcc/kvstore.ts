// The MVCC key-value store (etcd: server/storage/mvcc/kvstore.go, kvstore_txn.go).
//
// Every write transaction gets one main revision (currentRev + 1) and numbers its changes with
// sub revisions 0, 1, 2, ...; a transaction without changes does not move the revision. Values
// live in the backend `key` db under their revision; the in-memory TreeIndex maps a user key to
// its revisions. Reads at revision R see, for each key, the newest revision <= R.
import { mvccpb } from '../gen/proto';
import { Backend } from '../storage/backend';
import * as schema from '../storage/schema';
import { assert } from '../util/assert';
import { errCompacted, errFutureRev } from '../util/errors';
import { RangeEnd, TreeIndex } from './index';
import { KeyIndex } from './key_index';
import Long from 'long';

export interface RangeResult {
  /** Encoded mvccpb.KeyValue records, in key order, at most `limit` of them. */
  kvs: Uint8Array[];
  /** Keys in the range at the read revision, whatever the limit. */
  count: number;
  /** The store revision the read was served at (etcd: RangeResult.Rev). */
  rev: number;
}

/** One change of a write transaction: what watchers will see as an event. */
export interface Change {
  kv: Uint8Array;
  tombstone: boolean;
}

export type LeaseId = Long | number;

/** Who keeps which key is attached to which lease (lease/lease_store.ts). */
export interface LeaseAttachments {
  attach(key: string, lease: LeaseId): void;
  detach(key: string): void;
}

const emptyBytes = new Uint8Array(0);

export class KVStore {
  readonly index: TreeIndex;
  readonly backend: Backend;
  /** Invariant: currentRev >= 1 and never decreases. */
  currentRev: number;
  /** Revisions < compactMainRev are gone; -1 when never compacted (etcd). */
  compactMainRev: number;
  private readonly rangeScratch: KeyIndex[];
  /**
   * Told the changes of every write transaction that changed something, as it ends (the watch
   * event ring). The Change objects and bytes are the caller's after the call returns.
   */
  changeObserver: ((rev: number, changes: readonly Change[]) => void) | null;
  /** Told every put's lease and every delete, to keep lease attachments. */
  leaseAttachments: LeaseAttachments | null;

  constructor(backend: Backend) {
    this.index = new TreeIndex();
    this.backend = backend;
    this.currentRev = 1;
    this.compactMainRev = -1;
    this.rangeScratch = [];
    this.changeObserver = null;
    this.leaseAttachments = null;
  }

  /**
   * Rebuilds the index from the `key` db (etcd: kvstore.go restore). The backend commits whole
   * entries only, with the current revision they end at (storage/backend.ts), so no record can
   * be newer than the persisted currentRev: one would mean the store was damaged.
   */
  restore(): Map<string, Long> {
    /** Live keys with a lease, as the last record of each key says. */
    const keyLeases = new Map<string, Long>();
    const metaRev = this.backend.getMetaU64(schema.metaCurrentRev);
    this.currentRev = Math.max(1, metaRev);
    // A compaction at revision 0 is a compaction too (etcd: compacting at 0 again is refused).
    const scheduled = this.backend.getMetaBytes(schema.metaScheduledCompact);
    this.compactMainRev = scheduled !== undefined ? schema.readU64(scheduled, 0) : -1;
    for (const { key, value } of this.backend.kvRecords()) {
      const main = schema.revKeyMain(key);
      if (main > this.currentRev) throw new StoreCorruptError(`revision ${main} is stored but the recorded current revision is ${this.currentRev}`);
      const sub = schema.revKeySub(key);
      const tomb = schema.revKeyIsTombstone(key);
      const kv = mvccpb.KeyValue.decode(value);
      const keyStr = Buffer.from(kv.key).toString('latin1');
      const ki = this.index.getOrCreate(keyStr);
      ki.restore(main, sub, tomb, toNumber(kv.create_revision), toNumber(kv.version));
      const lease = kv.lease;
      if (tomb || lease === null || lease === undefined || (typeof lease === 'number' ? lease === 0 : lease.isZero())) {
        keyLeases.delete(keyStr);
      } else {
        keyLeases.set(keyStr, typeof lease === 'number' ? Long.fromNumber(lease) : Long.fromValue(lease));
      }
    }
    return keyLeases;
  }

  /** Reads [key, end) at `rev` (0 = latest), etcd storeTxnRead.rangeKeys. */
  range(key: string, end: RangeEnd, rev: number, limit: number, countOnly: boolean): RangeResult {
    return this.rangeAt(key, end, rev, this.currentRev, limit, countOnly);
  }

  rangeAt(key: string, end: RangeEnd, rev: number, curRev: number, limit: number,
    countOnly: boolean): RangeResult {
    if (rev > curRev) throw errFutureRev;
    if (rev <= 0) rev = curRev;
    if (rev < this.compactMainRev) throw errCompacted;
    const hits = this.rangeScratch;
    hits.length = 0;
    let count = 0;
    this.index.visit(key, end, (ki) => {
      if (ki.visibleAt(rev) >= 0) {
        count++;
        if (!countOnly && (limit <= 0 || hits.length < limit)) hits.push(ki);
      }
      return true;
    });
    const kvs: Uint8Array[] = new Array(hits.length);
    for (let i = 0; i < hits.length; i++) {
      const ki = hits[i]!;
      const at = ki.visibleAt(rev);
      const record = this.backend.getKv(schema.revKey(ki.mains[at]!, ki.subs[at]!, false));
      assert(record !== undefined, 'indexed revision missing from backend');
      kvs[i] = record;
    }
    hits.length = 0;
    return { kvs, count, rev: curRev };
  }

  write(): TxnWrite {
    return new TxnWrite(this);
  }

  /** Validates and records a compaction target (etcd: updateCompactRev). */
  scheduleCompaction(rev: number): void {
    if (rev <= this.compactMainRev) throw errCompacted;
    if (rev > this.currentRev) throw errFutureRev;
    this.compactMainRev = rev;
    this.backend.putMetaU64(schema.metaScheduledCompact, rev);
  }

  /**
   * Compacts up to `keysMax` keys starting at `fromKey` (etcd: kvstore_compaction.go, in
   * batches so apply is never stalled for long). Returns the key to resume from, or null when
   * the sweep is done.
   */
  compactStep(atRev: number, fromKey: string, keysMax: number): string | null {
    const emptied: string[] = [];
    let visited = 0;
    let next: string | null = null;
    const backend = this.backend;
    this.index.visitFrom(fromKey, (ki) => {
      if (visited === keysMax) {
        next = ki.key;
        return false;
      }
      visited++;
      if (ki.compact(atRev, removeRecord, backend)) emptied.push(ki.key);
      return true;
    });
    for (const key of emptied) this.index.remove(key);
    if (next === null) backend.putMetaU64(schema.metaFinishedCompact, atRev);
    return next;
  }
}

function removeRecord(this: Backend, main: number, sub: number, tomb: boolean): void {
  this.removeKv(schema.revKey(main, sub, tomb));
}

/** A write transaction (etcd: storeTxnWrite). All changes share main revision beginRev + 1. */
export class TxnWrite {
  private readonly store: KVStore;
  readonly beginRev: number;
  readonly changes: Change[];

  constructor(store: KVStore) {
    this.store = store;
    this.beginRev = store.currentRev;
    this.changes = [];
  }

  /** The revision reads inside this transaction see. */
  readRev(): number {
    return this.changes.length > 0 ? this.beginRev + 1 : this.beginRev;
  }

  range(key: string, end: RangeEnd, rev: number, limit: number, countOnly: boolean): RangeResult {
    const cur = this.readRev();
    return this.store.rangeAt(key, end, rev, cur, limit, countOnly);
  }

  /** etcd storeTxnWrite.put. Returns the revision of the write. */
  put(key: Uint8Array, keyStr: string, value: Uint8Array, lease: LeaseId): number {
    const rev = this.beginRev + 1;
    const sub = this.changes.length;
    const ki = this.store.index.getOrCreate(keyStr);
    const created = ki.isLive() ? ki.createdMain : rev;
    const version = ki.isLive() ? ki.version + 1 : 1;
    const record = mvccpb.KeyValue.encode({
      key,
      create_revision: created,
      mod_revision: rev,
      version,
      value: value.length === 0 ? emptyBytes : value,
      lease,
    }).finish();
    this.store.backend.putKv(schema.revKey(rev, sub, false), record);
    ki.put(rev, sub);
    if (this.store.leaseAttachments !== null) this.store.leaseAttachments.attach(keyStr, lease);
    this.changes.push({ kv: record, tombstone: false });
    return rev;
  }

  /** etcd storeTxnWrite.deleteRange. Returns the number of keys deleted. */
  deleteRange(key: string, end: RangeEnd): number {
    const readRev = this.readRev();
    const doomed: KeyIndex[] = [];
    this.store.index.visit(key, end, (ki) => {
      if (ki.visibleAt(readRev) >= 0) doomed.push(ki);
      return true;
    });
    const rev = this.beginRev + 1;
    for (const ki of doomed) {
      const sub = this.changes.length;
      const record = mvccpb.KeyValue.encode({
        key: Buffer.from(ki.key, 'latin1'),
        mod_revision: rev,
      }).finish();
      this.store.backend.putKv(schema.revKey(rev, sub, true), record);
      ki.tombstone(rev, sub);
      if (this.store.leaseAttachments !== null) this.store.leaseAttachments.detach(ki.key);
      this.changes.push({ kv: record, tombstone: true });
    }
    return doomed.length;
  }

  /** Ends the transaction; the store revision moves only when something changed. */
  end(): number {
    if (this.changes.length > 0) {
      assert(this.store.currentRev === this.beginRev, 'concurrent write transactions');
      this.store.currentRev = this.beginRev + 1;
      if (this.store.changeObserver !== null) this.store.changeObserver(this.store.currentRev, this.changes);
    }
    return this.store.currentRev;
  }
}

/** The backend's records contradict each other: the data directory was damaged. */
export class StoreCorruptError extends Error {
  readonly code = 'STORE_CORRUPT';
  constructor(detail: string) {
    super(`mvcc: the backend is inconsistent: ${detail}. Refusing to start`);
    this.name = 'StoreCorruptError';
  }
}

export function toNumber(v: number | Long | null | undefined): number {
  if (v === null || v === undefined) return 0;
  if (typeof v === 'number') return v;
  return v.toNumber();
}

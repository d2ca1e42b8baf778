// The revision history of one key (etcd: server/storage/mvcc/key_index.go).
//
// A key lives through generations: a generation starts with a put that creates the key and ends
// with a tombstone (delete). Example, key "foo":
//   put@2 put@5 del@7 put@9      ->   revs   [2.0, 5.0, 7.0, 9.0]
//                                     tomb   [  0,   0,   1,   0]
//   get(6) = 5.0; get(7) = none (deleted at 7); get(8) = none; get(9) = 9.0.
// Revisions are kept in two parallel arrays (main, sub) plus a tombstone bit, oldest first.
// Invariant: (mains[i], subs[i]) strictly increase with i.
import { assert } from '../util/assert';

export class KeyIndex {
  readonly key: string; // latin1: one char per byte, so string order == byte order
  mains: number[];
  subs: number[];
  tombs: boolean[];
  /** create_revision of the live generation, 0 when the key is deleted. */
  createdMain: number;
  /** version of the latest revision in the live generation, 0 when deleted. */
  version: number;

  constructor(key: string) {
    this.key = key;
    this.mains = [];
    this.subs = [];
    this.tombs = [];
    this.createdMain = 0;
    this.version = 0;
  }

  isLive(): boolean {
    return this.version > 0;
  }

  /** Records a put at (main, sub); `createdMain`/`version` describe the record written. */
  put(main: number, sub: number): void {
    this.checkOrder(main, sub);
    if (this.version === 0) this.createdMain = main;
    this.version++;
    this.mains.push(main);
    this.subs.push(sub);
    this.tombs.push(false);
  }

  /** Records a delete at (main, sub). Precondition: the key is live. */
  tombstone(main: number, sub: number): void {
    assert(this.version > 0, 'tombstone of a deleted key');
    this.checkOrder(main, sub);
    this.mains.push(main);
    this.subs.push(sub);
    this.tombs.push(true);
    this.createdMain = 0;
    this.version = 0;
  }

  /** Restores a record read back from disk at startup (oldest first). */
  restore(main: number, sub: number, tomb: boolean, createdMain: number, version: number): void {
    this.checkOrder(main, sub);
    this.mains.push(main);
    this.subs.push(sub);
    this.tombs.push(tomb);
    this.createdMain = tomb ? 0 : createdMain;
    this.version = tomb ? 0 : version;
  }

  /** Position of the newest revision with main <= rev, or -1. */
  private lastAtOrBefore(rev: number): number {
    const mains = this.mains;
    let lo = 0;
    let hi = mains.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (mains[mid]! <= rev) {
        found = mid;
        lo = mid + 1;
      } else {
        hi = mid - 1;
      }
    }
    return found;
  }

  /**
   * Position of the revision visible at `rev` (main <= rev and not a tombstone), or -1 when the
   * key does not exist at `rev`.
   */
  visibleAt(rev: number): number {
    const i = this.lastAtOrBefore(rev);
    if (i < 0 || this.tombs[i]) return -1;
    return i;
  }

  /**
   * Drops history older than `atRev` (etcd keyIndex.compact): the newest revision <= atRev is
   * kept when it is a put, so reads at >= atRev are unchanged. Calls `removed` for each dropped
   * revision. Returns true when the key has no revisions left.
   */
  compact<T>(atRev: number, removed: (this: T, main: number, sub: number, tomb: boolean) => void,
    ctx: T): boolean {
    const i = this.lastAtOrBefore(atRev);
    if (i < 0) return this.mains.length === 0;
    const keepFrom = this.tombs[i] ? i + 1 : i;
    for (let j = 0; j < keepFrom; j++) removed.call(ctx, this.mains[j]!, this.subs[j]!, this.tombs[j]!);
    if (keepFrom > 0) {
      this.mains.splice(0, keepFrom);
      this.subs.splice(0, keepFrom);
      this.tombs.splice(0, keepFrom);
    }
    return this.mains.length === 0;
  }

  private checkOrder(main: number, sub: number): void {
    const n = this.mains.length;
    if (n === 0) return;
    const lastMain = this.mains[n - 1]!;
    assert(main > lastMain || (main === lastMain && sub > this.subs[n - 1]!), 'revision order');
  }
}

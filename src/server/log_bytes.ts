// The byte accounting behind the raft log's memory bounds (issue #10, finding 5), for the
// driver: bytes proposed and not applied, bytes of applied entries kept for catching up.
import { assert } from '../util/assert';

/**
 * Sizes of the entries in the in-memory raft log, in index order, for the byte bounds: bytes
 * proposed but not applied (limits.unappliedBytesMax) and bytes of applied entries kept for
 * catching up (limits.logRetainBytesMax). Invariant: base <= applied + 1 <= base + count.
 */
export class LogBytes {
  /** Index of sizes[head]. */
  private base: number;
  private sizes: number[];
  private head: number;
  private applied: number;
  unappliedBytes: number;
  retainedBytes: number;

  constructor(firstIndex: number) {
    this.base = firstIndex;
    this.sizes = [];
    this.head = 0;
    this.applied = firstIndex - 1;
    this.unappliedBytes = 0;
    this.retainedBytes = 0;
  }

  /** The log was replaced by a snapshot: it starts empty at `firstIndex`. */
  reset(firstIndex: number): void {
    this.base = firstIndex;
    this.sizes = [];
    this.head = 0;
    this.applied = firstIndex - 1;
    this.unappliedBytes = 0;
    this.retainedBytes = 0;
  }

  /** The entry at `index` holds `bytes`; an index already known replaces it and what follows. */
  push(index: number, bytes: number): void {
    const next = this.base + this.sizes.length - this.head;
    assert(index <= next && index > this.applied, 'log bytes: index out of order');
    while (this.base + this.sizes.length - this.head > index) this.unappliedBytes -= this.sizes.pop()!;
    this.sizes.push(bytes);
    if (index > this.applied) this.unappliedBytes += bytes;
    else this.retainedBytes += bytes;
  }

  appliedTo(index: number): void {
    const last = this.base + this.sizes.length - this.head - 1;
    const to = Math.min(index, last);
    for (let i = this.applied + 1; i <= to; i++) {
      const b = this.sizes[this.head + i - this.base]!;
      this.unappliedBytes -= b;
      this.retainedBytes += b;
    }
    if (index > this.applied) this.applied = index;
  }

  /**
   * The index to compact the log to so that at most `entriesMax` applied entries and
   * `bytesMax` bytes of them stay (never beyond `applied`).
   */
  trimPoint(applied: number, entriesMax: number, bytesMax: number): number {
    let to = Math.max(this.base - 1, applied - entriesMax);
    let bytes = 0;
    for (let i = this.base; i <= to; i++) bytes += this.sizes[this.head + i - this.base]!;
    let kept = this.retainedBytes - bytes;
    while (kept > bytesMax && to < applied) {
      to++;
      kept -= this.sizes[this.head + to - this.base]!;
    }
    return to;
  }

  /** Entries up to `index` left the log. */
  compactTo(index: number): void {
    while (this.base <= index && this.head < this.sizes.length) {
      const b = this.sizes[this.head++]!;
      if (this.base <= this.applied) this.retainedBytes -= b;
      else this.unappliedBytes -= b;
      this.base++;
    }
    if (this.head > 1024 && this.head * 2 > this.sizes.length) {
      this.sizes = this.sizes.slice(this.head);
      this.head = 0;
    }
  }
}

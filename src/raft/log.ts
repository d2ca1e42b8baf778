// The raft log held in memory (etcd-io/raft log.go + log_unstable.go + MemoryStorage): the
// entries after the last compaction point, a prefix of which is stable (on disk).
//
//   firstIndex-1 = snapshot point (index, term known)
//   [firstIndex .. stableIndex]      on disk
//   (stableIndex .. lastIndex]       unstable: handed to the driver to persist
// Invariant: applied <= committed <= lastIndex; stableIndex <= lastIndex.
import { assert } from '../util/assert';
import { Entry } from './types';

export class RaftLog {
  /** entries[i] has index offset + i. */
  private entries: Entry[];
  private offset: number;
  private snapshotTerm: number;
  /** Last index known to be on stable storage. */
  stableIndex: number;
  /** Last index handed out in a Ready for persisting (not yet acknowledged). */
  persistingIndex: number;
  committed: number;
  /** Last index handed out in a Ready for applying. */
  applying: number;
  applied: number;

  constructor(snapshotIndex: number, snapshotTerm: number, stable: Entry[], applied: number) {
    this.offset = snapshotIndex + 1;
    this.snapshotTerm = snapshotTerm;
    this.entries = [];
    for (const e of stable) this.appendOne(e);
    this.stableIndex = this.lastIndex();
    this.persistingIndex = this.stableIndex;
    assert(applied >= snapshotIndex, 'applied before snapshot');
    assert(applied <= this.lastIndex(), 'applied beyond log');
    this.committed = applied;
    this.applying = applied;
    this.applied = applied;
  }

  firstIndex(): number {
    return this.offset;
  }

  lastIndex(): number {
    return this.offset + this.entries.length - 1;
  }

  lastTerm(): number {
    return this.term(this.lastIndex());
  }

  term(index: number): number {
    if (index === this.offset - 1) return this.snapshotTerm;
    assert(index >= this.offset && index <= this.lastIndex(), 'term of unavailable index');
    return this.entries[index - this.offset]!.term;
  }

  append(e: Entry): void {
    assert(e.index === this.lastIndex() + 1, 'log gap');
    this.appendOne(e);
  }

  private appendOne(e: Entry): void {
    if (this.entries.length > 0) assert(e.index === this.lastIndex() + 1, 'log gap');
    else assert(e.index === this.offset, 'first entry index');
    this.entries.push(e);
  }

  /** Entries in (from, to], to <= lastIndex. */
  slice(from: number, to: number): Entry[] {
    if (to <= from) return [];
    assert(from + 1 >= this.offset && to <= this.lastIndex(), 'slice bounds');
    return this.entries.slice(from + 1 - this.offset, to + 1 - this.offset);
  }

  unstableToPersist(): Entry[] {
    const out = this.slice(this.persistingIndex, this.lastIndex());
    this.persistingIndex = this.lastIndex();
    return out;
  }

  /** Storage acknowledged entries up to `index` with `term` (etcd stableTo). */
  stableTo(index: number, term: number): boolean {
    if (index <= this.stableIndex || index > this.lastIndex()) return false;
    if (this.term(index) !== term) return false;
    this.stableIndex = index;
    return true;
  }

  commitTo(index: number): boolean {
    if (index <= this.committed) return false;
    assert(index <= this.lastIndex(), 'commit beyond log');
    this.committed = index;
    return true;
  }

  /** Committed entries not yet handed out for applying. */
  nextCommitted(maxEntries: number): Entry[] {
    const to = Math.min(this.committed, this.applying + maxEntries);
    const out = this.slice(this.applying, to);
    this.applying = to;
    return out;
  }

  appliedTo(index: number): void {
    assert(index <= this.applying, 'applied beyond applying');
    if (index > this.applied) this.applied = index;
  }

  /** Drops entries up to `index` (they are covered by the state machine on disk). */
  compactTo(index: number): void {
    if (index < this.offset) return;
    assert(index <= this.applied, 'compact beyond applied');
    const term = this.term(index);
    this.entries = this.entries.slice(index + 1 - this.offset);
    this.offset = index + 1;
    this.snapshotTerm = term;
  }
}

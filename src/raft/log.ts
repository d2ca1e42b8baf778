// The raft log as the core holds it (etcd-io/raft log.go + log_unstable.go + MemoryStorage in one):
// every entry after the compaction point is in memory; the driver persists them through
// PersistBatches and trims the log with compact() behind what its state machine holds.
//
//   snapshotIndex                   the log starts after it (compaction point or installed
//                                   snapshot); its term is kept for the consistency check
//   (snapshotIndex .. stableIndex]  durable: every write that carried them has completed
//   (stableIndex .. persistingIndex] handed out in a write that has not completed yet
//   (persistingIndex .. lastIndex]  not handed out yet (the next PersistBatch takes them)
//
// Invariant: applied <= applying <= committed <= lastIndex; snapshotIndex <= applied unless a
// snapshot is pending; stableIndex <= persistingIndex <= lastIndex.
//
// Writes complete in order, so when write k completes the disk holds every entry that was handed
// out up to k. A later truncation (a new leader overwriting a conflicting tail at index i) makes
// the entries >= i of earlier writes worthless: each write in flight records the last index it
// makes durable, and a truncation lowers it to i-1. Comparing terms instead (etcd's stableTo) is
// not enough on its own: the same (index, term) can be written, truncated and written again.
import { assert } from '../util/assert';
import { Entry, EntryType, Snapshot, entryBytes } from './types';

interface WriteInFlight {
  seq: number;
  /** When the write completes, entries up to here are durable (lowered by truncations). */
  lastIndex: number;
  /** The snapshot the write installs, 0 for none. */
  snapshotIndex: number;
}

export class RaftLog {
  /** entries[k].index === offset + k. */
  private entries: Entry[];
  private offset: number;
  snapshotIndex: number;
  snapshotTerm: number;
  /** A snapshot restored from the leader and not durable yet (etcd unstable.snapshot). */
  pendingSnapshot: Snapshot | null;
  /** pendingSnapshot has been handed out in a write. */
  snapshotInProgress: boolean;
  stableIndex: number;
  persistingIndex: number;
  /** Highest index known durable on a quorum (raft's commit index). */
  committed: number;
  /** Highest index handed out for applying. */
  applying: number;
  /** Highest index the driver reported applied. */
  applied: number;
  /** Writes handed out and not completed, oldest first from writesHead. */
  private writes: WriteInFlight[];
  private writesHead: number;

  constructor(snapshotIndex: number, snapshotTerm: number, stable: Entry[], commit: number,
    applied: number) {
    assert(Number.isSafeInteger(snapshotIndex) && snapshotIndex >= 0, 'snapshot index');
    assert(snapshotIndex > 0 || snapshotTerm === 0, 'snapshot term without index');
    this.entries = [];
    this.offset = snapshotIndex + 1;
    this.snapshotIndex = snapshotIndex;
    this.snapshotTerm = snapshotTerm;
    this.pendingSnapshot = null;
    this.snapshotInProgress = false;
    for (const e of stable) this.push(e);
    this.stableIndex = this.lastIndex();
    this.persistingIndex = this.stableIndex;
    assert(applied >= snapshotIndex, 'applied before the snapshot point');
    assert(applied <= this.lastIndex(), 'applied beyond the log');
    // The state machine only holds committed entries, so commit >= applied even when the hard
    // state's commit was not durable yet when applied moved (writes and applies overlap).
    this.committed = Math.max(commit, applied);
    assert(this.committed <= this.lastIndex(), 'commit beyond the restored log');
    this.applying = applied;
    this.applied = applied;
    this.writes = [];
    this.writesHead = 0;
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

  /** The term of index i is known: i is the snapshot point or in the log. */
  hasTerm(i: number): boolean {
    return i >= this.snapshotIndex && i <= this.lastIndex();
  }

  term(i: number): number {
    assert(this.hasTerm(i), 'term of an unavailable index');
    if (i === this.snapshotIndex) return this.snapshotTerm;
    return this.entries[i - this.offset]!.term;
  }

  /** 0 for an index compacted away or beyond the log (etcd zeroTermOnOutOfBounds). */
  termOrZero(i: number): number {
    return this.hasTerm(i) ? this.term(i) : 0;
  }

  matchTerm(i: number, term: number): boolean {
    return this.hasTerm(i) && this.term(i) === term;
  }

  entry(i: number): Entry {
    assert(i >= this.offset && i <= this.lastIndex(), 'entry not in the log');
    return this.entries[i - this.offset]!;
  }

  /** A candidate whose last entry is (index, term) is at least as up to date as us (§5.4.1). */
  isUpToDate(index: number, term: number): boolean {
    const lastTerm = this.lastTerm();
    return term > lastTerm || (term === lastTerm && index >= this.lastIndex());
  }

  /** Entries [lo, hi). */
  slice(lo: number, hi: number): Entry[] {
    if (hi <= lo) return [];
    assert(lo >= this.offset && hi <= this.lastIndex() + 1, 'slice out of the log');
    return this.entries.slice(lo - this.offset, hi - this.offset);
  }

  /** Entries [lo, hi], at least one when lo <= hi, at most countMax and bytesMax in total. */
  entriesBetween(lo: number, hi: number, bytesMax: number, countMax: number): Entry[] {
    assert(hi <= this.lastIndex(), 'entries beyond the log');
    if (lo > hi) return [];
    assert(lo >= this.offset, 'entries compacted away');
    let end = lo;
    let bytes = 0;
    while (end <= hi && end - lo < countMax) {
      bytes += entryBytes(this.entries[end - this.offset]!);
      if (bytes > bytesMax && end > lo) break;
      end++;
    }
    return this.slice(lo, end);
  }

  /**
   * The first index at which `ents` conflicts with the log (same index, other term), or the
   * first new index, or 0 when the log already holds them all (etcd findConflict).
   */
  findConflict(ents: Entry[]): number {
    for (const e of ents) {
      if (!this.matchTerm(e.index, e.term)) return e.index;
    }
    return 0;
  }

  /**
   * Our best guess at where our log stops matching another log of which we only know the entry
   * (index, term): the largest i <= index whose term is <= term or unknown (etcd
   * findConflictByTerm). Returns [i, term(i) or 0 when unknown].
   */
  findConflictByTerm(index: number, term: number): [number, number] {
    for (let i = index; i > 0; i--) {
      if (!this.hasTerm(i)) return [i, 0];
      const t = this.term(i);
      if (t <= term) return [i, t];
    }
    return [0, 0];
  }

  /**
   * Appends `ents` following (prevIndex, prevTerm) if our log holds that entry, commits up to
   * min(commit, last new index), and returns the last new index; -1 on a mismatch.
   */
  maybeAppend(prevIndex: number, prevTerm: number, commit: number, ents: Entry[]): number {
    if (!this.matchTerm(prevIndex, prevTerm)) return -1;
    const lastNew = prevIndex + ents.length;
    const ci = this.findConflict(ents);
    if (ci !== 0) {
      assert(ci > this.committed, 'conflict with a committed entry');
      this.append(ents.slice(ci - (prevIndex + 1)));
    }
    this.commitTo(Math.min(commit, lastNew));
    return lastNew;
  }

  /** Appends, truncating a conflicting tail first (never a committed entry). */
  append(ents: Entry[]): void {
    if (ents.length === 0) return;
    const from = ents[0]!.index;
    assert(from - 1 >= this.committed, 'append would overwrite committed entries');
    assert(from > this.snapshotIndex, 'append below the snapshot point');
    assert(from <= this.lastIndex() + 1, 'append leaves a gap');
    if (from <= this.lastIndex()) this.truncateFrom(from);
    for (const e of ents) this.push(e);
  }

  private push(e: Entry): void {
    const last = this.lastIndex();
    assert(e.index === last + 1, 'log entries must be contiguous');
    assert(Number.isSafeInteger(e.term) && e.term >= this.termOrZero(last), 'terms decrease');
    this.entries.push(e);
  }

  private truncateFrom(from: number): void {
    this.entries.length = from - this.offset;
    this.stableIndex = Math.min(this.stableIndex, from - 1);
    this.persistingIndex = Math.min(this.persistingIndex, from - 1);
    for (let k = this.writesHead; k < this.writes.length; k++) {
      const w = this.writes[k]!;
      w.lastIndex = Math.min(w.lastIndex, from - 1);
    }
  }

  commitTo(i: number): void {
    if (i <= this.committed) return;
    assert(i <= this.lastIndex(), 'commit beyond the log');
    this.committed = i;
  }

  /** Replaces the log with a snapshot from the leader (etcd raftLog.restore). */
  restore(s: Snapshot): void {
    const index = s.metadata.index;
    assert(index > this.committed, 'restore of an old snapshot');
    this.entries = [];
    this.offset = index + 1;
    this.snapshotIndex = index;
    this.snapshotTerm = s.metadata.term;
    this.pendingSnapshot = s;
    this.snapshotInProgress = false;
    this.committed = index;
    this.stableIndex = index;
    this.persistingIndex = index;
    for (let k = this.writesHead; k < this.writes.length; k++) {
      const w = this.writes[k]!;
      w.lastIndex = Math.min(w.lastIndex, index);
    }
  }

  hasUnstable(): boolean {
    return this.persistingIndex < this.lastIndex() ||
      (this.pendingSnapshot !== null && !this.snapshotInProgress);
  }

  writesInFlight(): number {
    return this.writes.length - this.writesHead;
  }

  /** The last seq handed out and not completed, 0 for none. */
  lastWriteSeq(): number {
    return this.writesInFlight() === 0 ? 0 : this.writes[this.writes.length - 1]!.seq;
  }

  /** Hands out the unstable entries and snapshot as write `seq`. */
  takeUnstable(seq: number): { entries: Entry[]; snapshot: Snapshot | null } {
    assert(seq > this.lastWriteSeq(), 'write seqs increase');
    const snapshot = this.snapshotInProgress ? null : this.pendingSnapshot;
    const entries = this.slice(this.persistingIndex + 1, this.lastIndex() + 1);
    this.persistingIndex = this.lastIndex();
    if (snapshot !== null) this.snapshotInProgress = true;
    this.writes.push({
      seq,
      lastIndex: this.persistingIndex,
      snapshotIndex: snapshot === null ? 0 : snapshot.metadata.index,
    });
    return { entries, snapshot };
  }

  /** Write `seq` (the oldest in flight) is durable. Returns the index of its snapshot, or 0. */
  persisted(seq: number): number {
    assert(this.writesInFlight() > 0, 'persisted without a write in flight');
    const w = this.writes[this.writesHead]!;
    assert(w.seq === seq, 'writes must complete in order');
    this.writesHead++;
    if (this.writesHead === this.writes.length) {
      this.writes.length = 0;
      this.writesHead = 0;
    }
    if (w.snapshotIndex > 0) this.snapshotPersisted(w.snapshotIndex);
    this.stableIndex = Math.max(this.stableIndex, w.lastIndex);
    assert(this.stableIndex <= this.persistingIndex, 'stable beyond what was handed out');
    return w.snapshotIndex;
  }

  private snapshotPersisted(index: number): void {
    const p = this.pendingSnapshot;
    if (p !== null && p.metadata.index === index) {
      this.pendingSnapshot = null;
      this.snapshotInProgress = false;
    }
    // The write installed the snapshot's state in the state machine (etcd appliedSnap).
    if (index > this.applied) {
      this.applied = index;
      this.applying = Math.max(this.applying, index);
    }
  }

  /** Highest committed index that is durable here: what may be applied. */
  appliableIndex(): number {
    return Math.min(this.committed, this.stableIndex);
  }

  hasNextCommitted(): boolean {
    return this.pendingSnapshot === null && this.applying < this.appliableIndex();
  }

  /**
   * Hands out the next committed entries to apply, at most countMax and about bytesMax (at least
   * one). Only durable entries (etcd async storage writes: no applying from the unstable log),
   * and none while a snapshot is pending, so the snapshot is installed before what follows it.
   */
  nextCommitted(countMax: number, bytesMax: number): Entry[] {
    if (!this.hasNextCommitted()) return [];
    assert(this.applying >= this.snapshotIndex, 'applying before the snapshot point');
    const out = this.entriesBetween(this.applying + 1, this.appliableIndex(), bytesMax, countMax);
    this.applying += out.length;
    return out;
  }

  appliedTo(i: number): void {
    assert(i <= this.applying, 'applied beyond what was handed out');
    if (i > this.applied) this.applied = i;
  }

  /** Unapplied committed entries include a configuration change (etcd hasUnappliedConfChanges). */
  hasUnappliedConfChange(): boolean {
    for (let i = Math.max(this.applied + 1, this.offset); i <= this.committed; i++) {
      if (this.entries[i - this.offset]!.type === EntryType.ConfChange) return true;
    }
    return false;
  }

  /** Drops entries up to `index`: the driver's state machine holds them durably. */
  compact(index: number): void {
    assert(this.pendingSnapshot === null, 'compact while a snapshot is pending');
    assert(index <= this.applied, 'compact beyond applied');
    if (index <= this.snapshotIndex) return;
    assert(index <= this.stableIndex, 'compact beyond the durable log');
    this.snapshotTerm = this.term(index);
    this.entries = this.entries.slice(index + 1 - this.offset);
    this.offset = index + 1;
    this.snapshotIndex = index;
  }
}

// A simulated disk per node: what survives a crash. A write (PersistBatch) becomes durable only
// when the simulator completes it, in order; a crash loses every write not completed, and, as a
// separate fault, may keep a torn prefix of the first one (some of its entries, never its hard
// state: entries are written before the hard state, as etcd's raft README prescribes).
//
// The state machine is durable as soon as it applies (a simplification of concord's LMDB + WAL
// replay): so `sm.index` is the applied index a restart resumes from.
import { Entry, HardState, PersistBatch } from '../../src/raft/types';
import { StateMachine } from './state_machine';

export interface PendingWrite {
  batch: PersistBatch;
  /** commitIndexIfLocalDurable() when the write was handed out (0 when early apply is off). */
  earlyApplyIndex: number;
  /** The voters the leader counted for earlyApplyIndex (to check the claim when it lands). */
  earlyVoters: number[];
  earlyTerm: number;
}

export class SimDisk {
  hardState: HardState = { term: 0, vote: 0, commit: 0 };
  /** The log starts after (logStartIndex, logStartTerm): compaction point or installed snapshot. */
  logStartIndex = 0;
  logStartTerm = 0;
  entries: Entry[] = [];
  sm = new StateMachine();
  /** Writes handed out and not durable yet, oldest first. */
  pending: PendingWrite[] = [];
  /** The highest commit index ever durable here. */
  durableCommitMax = 0;

  lastIndex(): number {
    return this.logStartIndex + this.entries.length;
  }

  /** The term of a durable entry, 0 if not held; -1 for an index covered by the log start. */
  termAt(i: number): number {
    if (i === 0) return -1;
    if (i <= this.logStartIndex) return i === this.logStartIndex ? this.logStartTerm : -1;
    const e = this.entries[i - this.logStartIndex - 1];
    return e === undefined ? 0 : e.term;
  }

  /** Holds entry (i, term) durably, or state covering it (a snapshot or compaction). */
  holds(i: number, term: number): boolean {
    const t = this.termAt(i);
    return t === -1 || t === term;
  }

  enqueue(w: PendingWrite): void {
    this.pending.push(w);
  }

  /** Makes the oldest pending write durable; returns it. */
  completeOldest(seq: number): PendingWrite {
    const w = this.pending.shift();
    if (w === undefined || w.batch.seq !== seq) throw new Error('disk writes out of order');
    this.applyBatch(w.batch, w.batch.entries.length, true);
    return w;
  }

  private applyBatch(b: PersistBatch, entryCount: number, withHardState: boolean): void {
    if (b.snapshot !== null) {
      const md = b.snapshot.metadata;
      this.logStartIndex = md.index;
      this.logStartTerm = md.term;
      this.entries = [];
      this.sm = StateMachine.decode(b.snapshot.data);
      this.sm.confState = md.confState;
    }
    if (entryCount > 0) {
      const first = b.entries[0]!.index;
      if (first <= this.logStartIndex) throw new Error('disk: write below the log start');
      if (first > this.lastIndex() + 1) throw new Error('disk: write leaves a gap');
      this.entries.length = first - this.logStartIndex - 1;
      for (let k = 0; k < entryCount; k++) this.entries.push(b.entries[k]!);
    }
    if (withHardState && b.hardState !== null) {
      this.hardState = b.hardState;
      this.durableCommitMax = Math.max(this.durableCommitMax, b.hardState.commit);
    }
  }

  /** A crash: pending writes are lost; with tornEntries >= 0 the first keeps that many entries. */
  crash(tornEntries: number, keepSnapshot: boolean): void {
    const first = this.pending[0];
    this.pending = [];
    if (first === undefined || tornEntries < 0) return;
    const b = first.batch;
    if (b.snapshot !== null && !keepSnapshot) return; // entries follow the snapshot: none kept
    const partial: PersistBatch = { ...b, snapshot: keepSnapshot ? b.snapshot : null };
    this.applyBatch(partial, Math.min(tornEntries, b.entries.length), false);
  }

  /** Drops entries up to `index` (the state machine holds them). */
  compact(index: number): void {
    if (index <= this.logStartIndex) return;
    const t = this.termAt(index);
    if (t <= 0) throw new Error('disk: compact beyond the durable log');
    this.entries = this.entries.slice(index - this.logStartIndex);
    this.logStartIndex = index;
    this.logStartTerm = t;
  }
}

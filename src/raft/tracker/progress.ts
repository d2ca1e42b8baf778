// A follower's replication progress as the leader sees it (etcd-io/raft tracker/progress.go).
//
//   Probe      the leader does not know where the follower's log ends: at most one MsgApp per
//              heartbeat interval (the flow pauses after each send and resumes on a heartbeat
//              response or a rejection), backtracking with the rejection hints.
//   Replicate  the follower's log matches up to `match`: MsgApps are pipelined optimistically
//              (next advances on send), bounded by the Inflights window. With a full window only
//              an empty MsgApp goes out after a heartbeat response, so lost messages cannot stall
//              replication for good.
//   Snapshot   the follower needs a snapshot: no MsgApp until it reports the snapshot applied
//              (an MsgAppResp reaching the log) or the driver reports the transfer's outcome.
//
// Invariant: 0 <= match < next.
import { assert } from '../../util/assert';
import { Inflights } from './inflights';

export const enum ProgressState {
  Probe = 0,
  Replicate = 1,
  Snapshot = 2,
}

export class Progress {
  /** Highest index known to be durable in the follower's log and matching ours. */
  match: number;
  /** Next index to send. Entries in (match, next) are in flight. */
  next: number;
  state: ProgressState;
  /** In Snapshot state: the index of the snapshot sent (etcd PendingSnapshot). */
  pendingSnapshot: number;
  /** Heard from since the last check-quorum round (the leader's own entry is always true). */
  recentActive: boolean;
  /** Set after each MsgApp; a heartbeat response clears it (see file comment). */
  msgAppFlowPaused: boolean;
  readonly inflights: Inflights;
  isLearner: boolean;

  constructor(next: number, inflights: Inflights, isLearner: boolean) {
    assert(next >= 1, 'progress next');
    this.match = 0;
    this.next = next;
    this.state = ProgressState.Probe;
    this.pendingSnapshot = 0;
    this.recentActive = false;
    this.msgAppFlowPaused = false;
    this.inflights = inflights;
    this.isLearner = isLearner;
  }

  private resetState(state: ProgressState): void {
    this.msgAppFlowPaused = false;
    this.pendingSnapshot = 0;
    this.state = state;
    this.inflights.reset();
  }

  /** Back to probing from match+1 or, after a snapshot was sent, from the snapshot's index+1. */
  becomeProbe(): void {
    if (this.state === ProgressState.Snapshot) {
      const pending = this.pendingSnapshot;
      this.resetState(ProgressState.Probe);
      this.next = Math.max(this.match + 1, pending + 1);
    } else {
      this.resetState(ProgressState.Probe);
      this.next = this.match + 1;
    }
    this.checkInvariant();
  }

  becomeReplicate(): void {
    this.resetState(ProgressState.Replicate);
    this.next = this.match + 1;
  }

  becomeSnapshot(snapshotIndex: number): void {
    assert(snapshotIndex > 0, 'snapshot index');
    this.resetState(ProgressState.Snapshot);
    this.pendingSnapshot = snapshotIndex;
  }

  /** A MsgApp with `count` entries of `bytes` went out, starting at next. */
  sentEntries(count: number, bytes: number): void {
    assert(this.state !== ProgressState.Snapshot, 'MsgApp while sending a snapshot');
    if (this.state === ProgressState.Replicate && count > 0) {
      this.next += count;
      this.inflights.add(this.next - 1, bytes);
    }
    this.msgAppFlowPaused = true;
  }

  /** An MsgAppResp acknowledged `index`; false if it is stale (etcd MaybeUpdate). */
  maybeUpdate(index: number): boolean {
    if (index <= this.match) return false;
    this.match = index;
    this.next = Math.max(this.next, index + 1);
    return true;
  }

  /**
   * A rejection of the MsgApp at `rejected` with the follower's hint `matchHint` (etcd
   * MaybeDecrTo). False when the rejection is stale (reordered or duplicated); otherwise next is
   * lowered and sending resumes.
   */
  maybeDecrTo(rejected: number, matchHint: number): boolean {
    if (this.state === ProgressState.Replicate) {
      // Stale if it rejects something already matched; else restart right after match.
      if (rejected <= this.match) return false;
      this.next = this.match + 1;
      return true;
    }
    // Probing sends one message at a time, at next-1: anything else is stale.
    if (this.next - 1 !== rejected) return false;
    this.next = Math.max(Math.min(rejected, matchHint + 1), this.match + 1);
    this.msgAppFlowPaused = false;
    this.checkInvariant();
    return true;
  }

  /** No MsgApp may be sent now (etcd IsPaused). */
  isPaused(): boolean {
    switch (this.state) {
      case ProgressState.Probe: return this.msgAppFlowPaused;
      case ProgressState.Replicate: return this.msgAppFlowPaused && this.inflights.full();
      case ProgressState.Snapshot: return true;
    }
  }

  private checkInvariant(): void {
    assert(this.match < this.next, 'progress: match < next');
  }
}

export function progressStateName(s: ProgressState): string {
  if (s === ProgressState.Probe) return 'probe';
  return s === ProgressState.Replicate ? 'replicate' : 'snapshot';
}

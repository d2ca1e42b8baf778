// Expected conditions the raft core reports to its driver (STYLE §3 errors, kind 2). Each is a
// preallocated ConcordError: returned, never thrown, on the proposal path.
//
// etcd's raft returns one ErrProposalDropped for all of them; concord keeps the reason so that the
// server can answer as etcd's server does: NoLeader -> "etcdserver: no leader"
// (ErrorCode.NoLeader), the others -> ErrorCode.ProposalDropped ("raft proposal dropped"), or a
// retry by the server.
import { ConcordError, ErrorCode } from '../util/errors';

export const enum DropReason {
  /** No known leader (a follower or candidate cannot forward). */
  NoLeader = 1,
  /** A leadership transfer is in progress (thesis §3.10: the old leader stops taking requests). */
  LeaderTransferring,
  /** The uncommitted tail would exceed uncommittedBytesMax (etcd MaxUncommittedEntriesSize). */
  UncommittedBytesMax,
  /** This node is leader but no longer in the configuration (removed while leading). */
  NotInConfig,
  /** A configuration change is still unapplied (one at a time, etcd pendingConfIndex). */
  ConfChangePending,
  /** The leader has not committed an entry of its term yet (the 2015 single-server change fix). */
  ConfChangeTooEarly,
  /** The change would leave no voter. */
  ConfChangeInvalid,
  /** Reads queued at the leader reached readIndexPendingMax. */
  ReadIndexPendingMax,
  /** The operation needs the leader (a transfer asked of a follower that knows no leader). */
  NotLeader,
}

const reasonText: Record<DropReason, string> = {
  [DropReason.NoLeader]: 'raft: no leader',
  [DropReason.LeaderTransferring]: 'raft proposal dropped: leader transfer in progress',
  [DropReason.UncommittedBytesMax]: 'raft proposal dropped: uncommitted log too large',
  [DropReason.NotInConfig]: 'raft proposal dropped: leader removed from the configuration',
  [DropReason.ConfChangePending]: 'raft proposal dropped: a configuration change is pending',
  [DropReason.ConfChangeTooEarly]: 'raft proposal dropped: no entry of this term committed yet',
  [DropReason.ConfChangeInvalid]: 'raft proposal dropped: the change would leave no voter',
  [DropReason.ReadIndexPendingMax]: 'raft proposal dropped: too many pending reads',
  [DropReason.NotLeader]: 'raft proposal dropped: not leader',
};

export class ProposalDroppedError extends ConcordError {
  readonly reason: DropReason;
  constructor(reason: DropReason) {
    super(reason === DropReason.NoLeader ? ErrorCode.NoLeader : ErrorCode.ProposalDropped,
      reasonText[reason]);
    this.name = 'ProposalDroppedError';
    this.reason = reason;
    this.stack = undefined;
  }
}

const singletons = new Map<DropReason, ProposalDroppedError>();

/** The preallocated error for `reason` (no allocation, no stack capture per proposal). */
export function dropped(reason: DropReason): ProposalDroppedError {
  let e = singletons.get(reason);
  if (e === undefined) {
    e = new ProposalDroppedError(reason);
    singletons.set(reason, e);
  }
  return e;
}

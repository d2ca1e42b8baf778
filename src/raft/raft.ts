// The raft consensus core (after etcd-io/raft raft.go + rawnode.go), pure and deterministic:
// no I/O, no clocks, no timers, no Promises. Inputs: tick(), campaign(), propose(),
// storageAppended(), appliedTo();
// output: ready() with entries to persist, committed entries to apply and (once peers exist)
// messages to send; then advance(). Randomness comes from the injected Prng.
//
// This is the single-voter subset of raft: one voter is its own quorum, so it elects itself on
// its first election timeout. Peers, messages and membership changes plug into the same stages
// in the replication issue.
//
// Durability contract with the driver (etcd 3.4's raft: a leader counts its own append at once,
// "the leader can write to its disk in parallel with replicating", raft thesis §10.2.1): a Ready
// may list an entry both in `entries` (to persist) and in `committedEntries`. The driver must not
// apply a committed entry before every entry up to it is durable on this member. Concord's
// storage worker enforces this (it applies an entry only after the WAL fsync that covers it), so
// nothing is acknowledged before it is on disk, while a lone voter needs one hand-off per write
// instead of two (persist, then apply).
import { assert } from '../util/assert';
import { Prng } from '../util/prng';
import { RaftLog } from './log';
import { Entry, EntryType, HardState, Ready, StateType, emptyBytes } from './types';

export interface RaftConfig {
  id: number;
  voters: number[];
  electionTicks: number;
  heartbeatTicks: number;
  prng: Prng;
  /** Restored state. */
  hardState: HardState;
  snapshotIndex: number;
  snapshotTerm: number;
  entries: Entry[];
  applied: number;
  /** Committed entries handed out per Ready at most. */
  applyBatchMax: number;
}

export class ProposalDroppedError extends Error {
  constructor() {
    super('raft proposal dropped');
    this.name = 'ProposalDroppedError';
  }
}

export class Raft {
  readonly id: number;
  readonly voters: number[];
  readonly log: RaftLog;
  state: StateType;
  term: number;
  vote: number;
  lead: number;
  private readonly electionTicks: number;
  private readonly prng: Prng;
  private readonly applyBatchMax: number;
  private electionElapsed: number;
  private randomizedElectionTimeout: number;
  /** Highest index each voter holds durably; for us, what our storage acknowledged. */
  private readonly match: Map<number, number>;
  private prevHardState: HardState;

  constructor(cfg: RaftConfig) {
    assert(cfg.voters.includes(cfg.id), 'self must be a voter');
    assert(cfg.voters.length === 1, 'multi-voter raft arrives with replication');
    assert(cfg.electionTicks > cfg.heartbeatTicks, 'election ticks > heartbeat ticks');
    this.id = cfg.id;
    this.voters = cfg.voters.slice();
    this.log = new RaftLog(cfg.snapshotIndex, cfg.snapshotTerm, cfg.entries, cfg.applied);
    this.state = StateType.Follower;
    this.term = cfg.hardState.term;
    this.vote = cfg.hardState.vote;
    this.lead = 0;
    this.electionTicks = cfg.electionTicks;
    this.prng = cfg.prng;
    this.applyBatchMax = cfg.applyBatchMax;
    this.electionElapsed = 0;
    this.randomizedElectionTimeout = 0;
    this.resetRandomizedElectionTimeout();
    this.match = new Map();
    for (const v of this.voters) this.match.set(v, 0);
    this.match.set(this.id, this.log.stableIndex);
    if (cfg.hardState.commit > this.log.committed) {
      assert(cfg.hardState.commit <= this.log.lastIndex(), 'commit beyond restored log');
      this.log.commitTo(cfg.hardState.commit);
    }
    this.prevHardState = this.hardState();
  }

  hardState(): HardState {
    return { term: this.term, vote: this.vote, commit: this.log.committed };
  }

  isLeader(): boolean {
    return this.state === StateType.Leader;
  }

  /** One logical clock tick (the driver ticks every heartbeat interval). */
  tick(): void {
    if (this.state === StateType.Leader) return;
    this.electionElapsed++;
    if (this.electionElapsed >= this.randomizedElectionTimeout) {
      this.electionElapsed = 0;
      this.campaign();
    }
  }

  /** Starts an election now (etcd: MsgHup). */
  campaign(): void {
    if (this.state === StateType.Leader) return;
    this.becomeCandidate();
    // A single voter is a quorum of itself.
    if (this.voters.length === 1) this.becomeLeader();
  }

  /** Appends a normal entry; returns its index. Only a leader accepts proposals. */
  propose(data: Uint8Array): number {
    if (this.state !== StateType.Leader) throw new ProposalDroppedError();
    return this.appendEntry(data);
  }

  /** etcd raft appendEntry: the leader's own log counts toward the quorum at once. */
  private appendEntry(data: Uint8Array): number {
    const e: Entry = { term: this.term, index: this.log.lastIndex() + 1, type: EntryType.Normal, data };
    this.log.append(e);
    this.match.set(this.id, e.index);
    this.maybeCommit();
    return e.index;
  }

  /** Storage made entries up to `index` (of `term`) durable (etcd: MsgStorageAppendResp). */
  storageAppended(index: number, term: number): void {
    this.log.stableTo(index, term);
  }

  /** The driver applied entries up to `index`. */
  appliedTo(index: number): void {
    this.log.appliedTo(index);
  }

  hasReady(): boolean {
    return this.log.persistingIndex < this.log.lastIndex() ||
      this.log.applying < this.log.committed || !sameHardState(this.prevHardState, this.hardState());
  }

  /** Collects the work for the driver. Entries handed out are not handed out again. */
  ready(): Ready {
    const prev = this.prevHardState;
    const hs = this.hardState();
    const hsChanged = !sameHardState(prev, hs);
    const termOrVoteChanged = prev.term !== hs.term || prev.vote !== hs.vote;
    const entries = this.log.unstableToPersist();
    const committedEntries = this.log.nextCommitted(this.applyBatchMax);
    this.prevHardState = hs;
    return {
      hardState: hsChanged ? hs : null,
      entries,
      committedEntries,
      // etcd MustSync: a new term or vote, or new entries, must be on disk before we go on.
      mustSync: entries.length > 0 || termOrVoteChanged,
    };
  }

  private becomeCandidate(): void {
    this.term++;
    this.vote = this.id;
    this.lead = 0;
    this.state = StateType.Candidate;
    this.resetRandomizedElectionTimeout();
  }

  private becomeLeader(): void {
    assert(this.state === StateType.Candidate, 'leader from candidate only');
    this.state = StateType.Leader;
    this.lead = this.id;
    // An empty entry of the new term lets the leader commit entries of earlier terms (raft §5.4.2).
    this.appendEntry(emptyBytes);
  }

  private maybeCommit(): void {
    const matches: number[] = [];
    for (const v of this.voters) matches.push(this.match.get(v) ?? 0);
    matches.sort((a, b) => b - a);
    const quorumIndex = matches[Math.floor(this.voters.length / 2)]!;
    // Only entries of the current term commit by counting (raft §5.4.2).
    if (quorumIndex > this.log.committed && this.log.term(quorumIndex) === this.term) {
      this.log.commitTo(quorumIndex);
    }
  }

  private resetRandomizedElectionTimeout(): void {
    this.randomizedElectionTimeout = this.electionTicks + this.prng.int(this.electionTicks);
  }
}

function sameHardState(a: HardState, b: HardState): boolean {
  return a.term === b.term && a.vote === b.vote && a.commit === b.commit;
}
